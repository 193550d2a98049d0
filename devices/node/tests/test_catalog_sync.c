/*  test_catalog_sync - the catalog replica against a real back office: redis-server, busd and
    inventory started from $POSBUS_BIN (defaults to this program's directory), the sample
    catalog imported by an operator, and the replica synced with a register's key (posctl node
    enroll). A price change is announced by catalog.changed, the replica is stale for that
    version and a resync picks the new price up. Then inventory stops: a sync fails cleanly and
    the replica keeps selling; with busd stopped too, a register that starts from the saved
    file prices at the last known prices. Prints node.catalog_sync_sample_ms and, for a 100k
    catalog, node.catalog_sync_100k_ms. */
#include "../../../tests/integration/harness.h"

#include <libgen.h>

#include <pos/money.h>

#include "node/catalog.h"

#define T_PASSWORD  "catalog-sync-test" /* in a 0600 config file, see h_start_redis */
#define T_FIELDS    16
#define T_ROWS_MAX  64
#define T_BIG       100000
#define T_BATCH     2000 /* import rows per request: well under the 1 MiB payload limit */
#define T_WAIT_MS   15000
#define T_IMPORT_MS 60000 /* an import of T_BATCH rows under the sanitizers */

/*  One row of the sample catalog, as text. */
typedef struct {
    char *f[T_FIELDS];
} t_row_t;

static char *t_header[T_FIELDS];
static int t_ncols;

/*  Split one CSV line in place into fields (quotes around a field, "" inside quotes). */
static int t_csv_split(char *line, char **fields, int max)
{
    int n = 0;
    char *p = line;
    while (n < max) {
        char *out = p;
        fields[n++] = p;
        if (*p == '"') {
            char *in = p + 1;
            while (*in && !(*in == '"' && in[1] != '"')) {
                if (*in == '"')
                    in++;
                *out++ = *in++;
            }
            p = *in == '"' ? in + 1 : in;
        } else {
            while (*p && *p != ',' && *p != '\n' && *p != '\r')
                *out++ = *p++;
        }
        char end = *p;
        *out = '\0';
        if (end != ',')
            break;
        p++;
    }
    return n;
}

static const char *t_col(const t_row_t *row, const char *name)
{
    for (int i = 0; i < t_ncols; i++)
        if (streq(t_header[i], name))
            return row->f[i];
    return "";
}

/*  The sample catalog (POSBUS_SRC/scripts/sample/catalog.csv) into rows; their number. */
static int t_read_sample(t_row_t *rows, int max)
{
    const char *src = getenv("POSBUS_SRC");
    char path[PATH_MAX], here[PATH_MAX];
    if (!src) {
        snprintf(here, sizeof(here), "%s", __FILE__);
        snprintf(path, sizeof(path), "%s/../../../scripts/sample/catalog.csv", dirname(here));
    } else
        snprintf(path, sizeof(path), "%s/scripts/sample/catalog.csv", src);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("     cannot read %s\n", path);
        return 0;
    }
    char line[1024];
    int n = 0;
    if (fgets(line, sizeof(line), f))
        t_ncols = t_csv_split(strdup(line), t_header, T_FIELDS);
    while (n < max && fgets(line, sizeof(line), f)) {
        char *copy = strdup(line); /* rows[n].f[0] points at it: freed by t_free_sample */
        if (line[0] != '\n' && t_csv_split(copy, rows[n].f, T_FIELDS) == t_ncols)
            n++;
        else
            free(copy);
    }
    fclose(f);
    return n;
}

static void t_free_sample(t_row_t *rows, int n)
{
    for (int i = 0; i < n; i++)
        free(rows[i].f[0]);
    if (t_ncols > 0)
        free(t_header[0]);
}

/*  catalog.import of rows through client; the version it answers (-1 on failure). */
static int64_t t_import(bus_client_t *client, bus_val_t **rows_p, int64_t *applied)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set(body, "rows", rows_p);
    bus_msg_t *rep = h_request(client, "inventory", "catalog.import", &body, "import");
    int64_t version = -1;
    if (rep) {
        bus_val_map_get_int(bus_msg_body(rep), "version", &version);
        bus_val_map_get_int(bus_msg_body(rep), "applied", applied);
        bus_val_t *rejected = bus_val_map_get(bus_msg_body(rep), "rejected");
        if (bus_val_size(rejected) > 0)
            printf("     first rejection: %s\n",
                   bus_val_map_get_str(bus_val_arr_get(rejected, 0), "reason"));
    }
    bus_msg_destroy(&rep);
    return version;
}

static bus_val_t *t_row_val(const t_row_t *row, int line)
{
    bus_val_t *map = bus_val_new_map();
    bus_val_map_set_int(map, "line", line);
    for (int i = 0; i < t_ncols; i++)
        bus_val_map_set_str(map, t_header[i], row->f[i]);
    return map;
}

/*  Every sample row is in cat as imported; the number that are not. */
static int t_compare(const node_catalog_t *cat, const t_row_t *rows, int n, const char *what)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const t_row_t *row = &rows[i];
        int64_t price = -1, member = 0;
        pos_money_parse(t_col(row, "price"), false, &price);
        if (*t_col(row, "member_price"))
            pos_money_parse(t_col(row, "member_price"), false, &member);
        const node_catalog_item_t *item = node_catalog_lookup(cat, t_col(row, "sku"), NULL);
        const char *barcode = t_col(row, "barcode");
        bool ok = item && item->price == price && item->member_price == member &&
                  item->tax_rate_bp == atoi(t_col(row, "tax_rate")) * 100 &&
                  streq(item->name, t_col(row, "name")) && streq(item->unit, t_col(row, "unit")) &&
                  streq(item->category, t_col(row, "category")) && item->active &&
                  (!*barcode || node_catalog_lookup(cat, barcode, NULL) == item);
        if (!ok) {
            printf("     %s: %s differs (price %" PRId64 ", want %" PRId64 ")\n", what,
                   t_col(row, "sku"), item ? item->price : -1, price);
            bad++;
        }
    }
    return bad;
}

/*  Import T_BIG generated items (SKU BIGnnnnnn) in batches; true if every row was applied. */
static bool t_import_big(bus_client_t *op)
{
    int64_t total = 0;
    for (int from = 0; from < T_BIG; from += T_BATCH) {
        bus_val_t *rows = bus_val_new_arr();
        for (int n = from; n < from + T_BATCH && n < T_BIG; n++) {
            char sku[16], barcode[16], name[32], price[24];
            snprintf(sku, sizeof(sku), "BIG%06d", n);
            snprintf(barcode, sizeof(barcode), "691%09d", n);
            barcode[12] = (char)('0' + pos_gtin_check_digit(barcode, 12));
            barcode[13] = '\0';
            snprintf(name, sizeof(name), "商品 %d", n);
            pos_money_format(100 + n % 5000, price, sizeof(price));
            bus_val_t *row = bus_val_new_map();
            bus_val_map_set_int(row, "line", n + 2);
            bus_val_map_set_str(row, "sku", sku);
            bus_val_map_set_str(row, "barcode", barcode);
            bus_val_map_set_str(row, "name", name);
            bus_val_map_set_str(row, "price", price);
            bus_val_map_set_str(row, "tax_rate", "13");
            bus_val_map_set_str(row, "unit", "pcs");
            bus_val_map_set_str(row, "category", "bulk");
            bus_val_arr_push(rows, &row);
        }
        int64_t applied = 0;
        if (t_import(op, &rows, &applied) < 0)
            return false;
        total += applied;
    }
    CHECK_EQ(total, T_BIG, "100k generated items imported");
    return total == T_BIG;
}

/*  Wait for a catalog.changed event on sub announcing version at least least (an earlier
    import's event may still be queued); its version, or the last one seen (-1: none). */
static int64_t t_changed_event(bus_sub_t *sub, int64_t least)
{
    int64_t deadline = bus_mono_ms() + T_WAIT_MS, version = -1;
    while (version < least && bus_mono_ms() < deadline) {
        char topic[BUS_TOPIC_MAX + 1];
        bus_msg_t *ev = bus_sub_recv(sub, 200, topic, sizeof(topic));
        if (ev && streq(topic, "catalog.changed"))
            bus_val_map_get_int(bus_msg_body(ev), "version", &version);
        bus_msg_destroy(&ev);
    }
    return version;
}

static pid_t t_start_inventory(h_bus_t *bus, int redis_port, const char *password_file)
{
    char cert[PATH_MAX], port[16];
    h_cert_path(bus, "service-inventory", cert, sizeof(cert));
    snprintf(port, sizeof(port), "%d", redis_port);
    char *argv[] = {"inventory",
                    "--pub-endpoint",
                    bus->pub,
                    "--sub-endpoint",
                    bus->sub,
                    "--req-endpoint",
                    bus->req,
                    "--cert",
                    cert,
                    "--server-cert",
                    bus->server_public,
                    "--redis-port",
                    port,
                    "--redis-password-file",
                    (char *)password_file,
                    "--heartbeat-ms",
                    "250",
                    "--heartbeat-timeout-ms",
                    "1500",
                    NULL};
    return h_spawn("inventory", argv);
}

int main(void)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (!getenv("POSBUS_BIN") && len > 0) {
        exe[len] = '\0';
        setenv("POSBUS_BIN", dirname(exe), 1);
    }
    h_init("catalog_sync");
    static t_row_t rows[T_ROWS_MAX];
    int nrows = t_read_sample(rows, T_ROWS_MAX);
    CHECK(nrows == 20, "the sample catalog has 20 items (got %d)", nrows);

    h_bus_t bus;
    h_bus_init(&bus);
    char *enroll[] = {"posctl", "--keys-dir", bus.keys, "node", "enroll", "S1", "R01", NULL};
    CHECK(h_keygen(&bus, "operator", "t1") == 0 && h_keygen(&bus, "service", "inventory") == 0 &&
              h_run(enroll, NULL, 0) == 0,
          "keys made: an operator, inventory, and register S1.R01 enrolled");
    char password_file[PATH_MAX];
    h_write_private("redis.pass", T_PASSWORD, password_file, sizeof(password_file));
    int redis_port = h_free_port();
    h_start_redis("redis", redis_port, T_PASSWORD);
    h_start_busd(&bus);
    pid_t inventory = t_start_inventory(&bus, redis_port, password_file);

    bus_conn_cfg_t ocfg, rcfg;
    char ocert[PATH_MAX], rcert[PATH_MAX];
    h_conn(&bus, "operator-t1", &ocfg, ocert, sizeof(ocert));
    h_conn(&bus, "register-S1-R01", &rcfg, rcert, sizeof(rcert));
    bus_client_t *op = bus_client_new(&ocfg, "test", NULL);
    bus_client_t *reg = bus_client_new(&rcfg, "S1-R01", NULL);
    bus_sub_t *sub = bus_sub_new(&rcfg, NULL);
    bus_sub_subscribe(sub, "catalog.");
    bus_client_set_timeout(op, T_IMPORT_MS);
    if (!op || !reg || !sub || !h_wait_busd(op, T_WAIT_MS) ||
        !h_wait_instances(op, "inventory", 1, T_WAIT_MS)) {
        CHECK(false, "busd and inventory are up");
        goto out;
    }

    /* the sample, imported by the operator, copied by the register */
    bus_val_t *batch = bus_val_new_arr();
    for (int i = 0; i < nrows; i++) {
        bus_val_t *row = t_row_val(&rows[i], i + 2);
        bus_val_arr_push(batch, &row);
    }
    int64_t applied = 0, v1 = t_import(op, &batch, &applied);
    CHECK(v1 > 0 && applied == nrows, "sample imported: %" PRId64 " rows applied, version %" PRId64,
          applied, v1);
    node_catalog_t *cat = node_catalog_new();
    int64_t changed = -1, t0 = bus_mono_ms();
    int rc = node_catalog_sync(cat, reg, &changed);
    printf("node.catalog_sync_sample_ms: %" PRId64 "\n", bus_mono_ms() - t0);
    CHECK(rc == 0, "the register syncs with its own key (%s)", node_catalog_errstr(cat));
    CHECK(node_catalog_count(cat) == (size_t)nrows && node_catalog_version(cat) == v1 &&
              changed == nrows,
          "%d items at version %" PRId64 ", all new (got %zu at %" PRId64 ", %" PRId64 " changed)",
          nrows, v1, node_catalog_count(cat), node_catalog_version(cat), changed);
    CHECK(t_compare(cat, rows, nrows, "first sync") == 0,
          "every sample item is in the replica as imported, by SKU and barcode");
    CHECK(!node_catalog_stale(cat, v1), "not stale for its own version");

    /* a price change: announced, stale, resynced */
    zclock_sleep(300); /* the subscription reaches busd */
    const node_catalog_item_t *cola = node_catalog_lookup(cat, "6901234500097", NULL);
    CHECK(cola && cola->price == 300, "COLA costs 3.00 before the change");
    t_row_t *cola_row = NULL;
    for (int i = 0; i < nrows; i++)
        if (streq(t_col(&rows[i], "sku"), "COLA"))
            cola_row = &rows[i];
    for (int i = 0; cola_row && i < t_ncols; i++)
        if (streq(t_header[i], "price"))
            cola_row->f[i] = "3.20";
    batch = bus_val_new_arr();
    bus_val_t *row = cola_row ? t_row_val(cola_row, 10) : NULL;
    bus_val_arr_push(batch, &row);
    int64_t v2 = t_import(op, &batch, &applied);
    int64_t announced = t_changed_event(sub, v2);
    CHECK(v2 > v1 && announced == v2,
          "catalog.changed announces the new version (import said %" PRId64 ", event %" PRId64 ")",
          v2, announced);
    CHECK(node_catalog_stale(cat, announced), "the replica is stale for version %" PRId64,
          announced);
    cola = node_catalog_lookup(cat, "COLA", NULL);
    CHECK(cola && cola->price == 300, "until it resyncs, the register sells COLA at 3.00");
    rc = node_catalog_sync(cat, reg, &changed);
    cola = node_catalog_lookup(cat, "6901234500097", NULL);
    CHECK(rc == 0 && changed == 1 && cola && cola->price == 320 &&
              node_catalog_version(cat) == v2 && !node_catalog_stale(cat, announced),
          "a resync takes one changed item: COLA 3.20, version %" PRId64 " (%s)", v2,
          node_catalog_errstr(cat));
    CHECK(t_compare(cat, rows, nrows, "resync") == 0, "every other item is as it was");

    /* 100k items: how long a register takes to copy a large store's catalog */
    if (t_import_big(op)) {
        t0 = bus_mono_ms();
        rc = node_catalog_sync(cat, reg, &changed);
        printf("node.catalog_sync_100k_ms: %" PRId64 "\n", bus_mono_ms() - t0);
        const node_catalog_item_t *big = node_catalog_lookup(cat, "BIG054321", NULL);
        CHECK(rc == 0 && node_catalog_count(cat) == (size_t)(T_BIG + nrows) && changed == T_BIG &&
                  big && big->price == 100 + 54321 % 5000,
              "a 100k catalog synced in pages: %zu items, %" PRId64 " new (%s)",
              node_catalog_count(cat), changed, node_catalog_errstr(cat));
    }

    /* saved, then the back office goes away */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/catalog.cat", h_tmp);
    CHECK(node_catalog_save(cat, path) == 0, "the replica is saved (%s)", node_catalog_errstr(cat));
    int64_t version = node_catalog_version(cat);
    size_t count = node_catalog_count(cat);
    h_stop(inventory, SIGTERM);
    bus_client_set_timeout(reg, 500);
    bus_client_set_retries(reg, 1);
    rc = node_catalog_sync(cat, reg, &changed);
    cola = node_catalog_lookup(cat, "COLA", NULL);
    CHECK(rc == -1 && strstr(node_catalog_errstr(cat), "catalog.snapshot"),
          "with inventory stopped a sync fails, saying so (%s)", node_catalog_errstr(cat));
    CHECK(node_catalog_count(cat) == count && node_catalog_version(cat) == version && cola &&
              cola->price == 320,
          "and the replica is unchanged: %zu items, version %" PRId64 ", COLA 3.20", count,
          version);

    h_stop(bus.busd, SIGTERM);
    node_catalog_t *restarted = node_catalog_new();
    CHECK(node_catalog_sync(restarted, reg, NULL) == -1 && node_catalog_count(restarted) == 0,
          "a register started with busd down cannot sync (%s)", node_catalog_errstr(restarted));
    CHECK(node_catalog_load(restarted, path) == 0, "it loads the saved replica (%s)",
          node_catalog_errstr(restarted));
    const node_catalog_item_t *item = node_catalog_lookup(restarted, "6901234500097", NULL);
    pos_item_t pos;
    if (item)
        node_catalog_to_pos(item, &pos);
    CHECK(item && pos.price == 320 && node_catalog_version(restarted) == version &&
              node_catalog_count(restarted) == count,
          "and prices COLA at the last known 3.20, version %" PRId64, version);
    CHECK(t_compare(restarted, rows, nrows, "offline") == 0,
          "every sample item prices offline as last synced");
    node_catalog_destroy(&restarted);
    node_catalog_destroy(&cat);
out:
    bus_sub_destroy(&sub);
    bus_client_destroy(&reg);
    bus_client_destroy(&op);
    t_free_sample(rows, nrows);
    return h_finish();
}
