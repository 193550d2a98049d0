/*  =========================================================================
    retail.c - posctl's back-office commands: stores, catalog, stock, reports

    Each command is a thin request to a service; everything is validated and
    applied by the service, so these commands and any other client behave
    alike. Movement commands send an idempotency key (printed, and settable
    with --move-id) so a command repeated after a timeout cannot move stock
    twice.

    Inventory's read-only listings come in pages of at most 512 KiB (the bus
    carries at most 1 MiB), so a large store's stock or a long history never
    fits one reply. posctl follows the pages itself and prints one combined
    reply, shaped like the single page a small store gets: an operator or a
    script reading the output never sees the paging.
    =========================================================================
*/
#include <unistd.h>

#include <pos/money.h>

#include "csv.h"
#include "posctl.h"

#define S_BATCH_ROWS       1000
#define S_LINE_MAX         65536
#define S_FIELDS_MAX       32
#define S_Z_WAIT_MS        30000
#define S_BAR_WIDTH        40
#define S_CELL_MAX         256
#define S_REQUIRED_COLUMNS "sku", "barcode", "name", "price", "tax_rate", "unit", "category"
#define S_OPTIONAL_COLUMNS "supplier", "threshold", "member_price", "active"
#define S_INPUT_MAX        (4 * S_LINE_MAX)
#define S_BOM              "\xef\xbb\xbf" /* UTF-8 byte order mark, which spreadsheets write */
#define S_CURSOR_MAX       32   /* a Redis SCAN cursor (an unsigned 64-bit number) as text */
#define S_HISTORY_DEFAULT  100  /* moves stock history shows when --count is 0 */
#define S_HISTORY_PAGE_MAX 1000 /* the most moves stock.history returns in one page */

const bus_opt_t posctl_retail_opts[] = {
    {"store", BUS_OPT_STR, NULL, 0, 0, "store id for stock, report and sim commands"},
    {"to", BUS_OPT_STR, NULL, 0, 0, "stock transfer: destination store"},
    {"ref", BUS_OPT_STR, NULL, 0, 0, "stock receive: supplier reference (delivery note)"},
    {"reason", BUS_OPT_STR, NULL, 0, 0, "stock adjust: damaged, lost, expired, found, other"},
    {"move-id", BUS_OPT_STR, NULL, 0, 0,
     "stock movements: idempotency key (default: a new one; reuse it to retry safely)"},
    {"date", BUS_OPT_STR, NULL, 0, 0, "report: business day YYYY-MM-DD (default: current)"},
    {"register", BUS_OPT_STR, NULL, 0, 0, "report x: the register"},
    {"top", BUS_OPT_INT, "10", 1, 1000, "report items/baskets: rows"},
    {"format", BUS_OPT_STR, "table", 0, 0, "report output: table, csv or json"},
    {"from", BUS_OPT_STR, NULL, 0, 0, "tail: replay committed sales after this stream id first"},
    {"after", BUS_OPT_STR, NULL, 0, 0, "dead: list dead letters after this id (next page)"},
    {"registers", BUS_OPT_INT, "3", 1, 999, "sim: registers to simulate"},
    {"sales", BUS_OPT_INT, "100", 0, 100000000, "sim: tickets to ring up"},
    {"seed", BUS_OPT_INT, "1", 0, INT64_MAX, "sim: random seed"},
    {"returns-pct", BUS_OPT_INT, "5", 0, 100, "sim: share of tickets that are returns"},
    {"first-seq", BUS_OPT_INT, "1", 1, INT64_MAX, "sim: first sequence number per register"},
    {"repeat", BUS_OPT_INT, "1", 1, 10, "sim: upload every sale this many times"},
    {"register-base", BUS_OPT_INT, "0", 0, 9000, "sim: number registers from base+1"},
    {"lines", BUS_OPT_INT, "0", 0, 100, "sim: lines per sale ticket (0 = random 1-5)"},
    {"deadline-ms", BUS_OPT_INT, "300000", 0, INT64_MAX,
     "sim: keep resending a sale that is not acknowledged this long (0 = until stopped)"},
    {NULL, 0, NULL, 0, 0, NULL}};

bus_client_t *posctl_client(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    const char *err = NULL;
    bus_client_t *client = bus_client_new(cfg, "posctl", &err);
    if (!client) {
        fprintf(stderr, "posctl: cannot reach busd: %s\n", err);
        return NULL;
    }
    bus_client_set_timeout(client, (int)bus_config_int(config, "timeout-ms"));
    bus_client_set_retries(client, (int)bus_config_int(config, "retries"));
    return client;
}

bus_msg_t *posctl_call(bus_client_t *client, const char *service, const char *method,
                       bus_val_t **body_p)
{
    bus_msg_t *reply = bus_client_request(client, service, method, body_p);
    if (!reply)
        fprintf(stderr, "posctl: %s\n", bus_client_errstr(client));
    return reply;
}

void posctl_print_csv_cell(const char *text, bool last)
{
    char small[S_CELL_MAX];
    size_t need = posctl_csv_quote(text, small, sizeof(small));
    if (need < sizeof(small))
        fputs(small, stdout);
    else {
        char *big = malloc(need + 1);
        if (big) {
            posctl_csv_quote(text, big, need + 1);
            fputs(big, stdout);
            free(big);
        }
    }
    putchar(last ? '\n' : ',');
}

/*  Whether a field (its dotted path, or a table's column) holds money in fen, by the names
    posbus gives money: tables show it as yuan for people (¥19,530.39), csv and json keep fen. */
bool posctl_money_key(const char *path)
{
    static const char *const names[] = {
        "gross",        "net",           "total",         "discounts",    "returns",
        "change",       "cash_rounding", "amount",        "tax",          "expected_cash",
        "balance",      "paid",          "due",           "cash_in",      "cash_out",
        "refunded",     "refundable",    "provider_paid", "here_paid",    "price",
        "member_price", "unit_price",    "daily_limit",   "meal_limit",   "offline_cap",
        "promo_discount", "ticket_discount", "promo_discounts", "spent", NULL};
    if (strncmp(path, "tenders.", 8) == 0 || strstr(path, ".tenders."))
        return true; /* every tender kind */
    const char *last = strrchr(path, '.');
    last = last ? last + 1 : path;
    for (int i = 0; names[i]; i++)
        if (strcmp(last, names[i]) == 0)
            return true;
    return false;
}

/*  A value as table text: money (by its path) as yuan, strings as they are, others as JSON. */
static void s_cell_text(const bus_val_t *v, const char *path, bus_buf_t *cell)
{
    int64_t fen;
    const char *s = bus_val_get_str(v, NULL);
    if (s) {
        bus_buf_append(cell, s, strlen(s));
    } else if (path && posctl_money_key(path) && bus_val_get_int(v, &fen)) {
        char yuan[POS_MONEY_YUAN_MAX];
        pos_money_format_yuan(fen, yuan, sizeof(yuan));
        bus_buf_append(cell, yuan, strlen(yuan));
    } else {
        bus_val_to_json(v, cell);
    }
}

/*  text left-aligned in width columns (UTF-8 counted by characters). */
static void s_pad(const char *text, int width)
{
    int chars = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        chars += (*p & 0xC0) != 0x80;
    printf("%s%*s", text, chars < width ? width - chars : 0, "");
}

/*  Flatten nested maps into "a.b.c" = value rows. */
static void s_flatten(const bus_val_t *v, const char *prefix, bool csv)
{
    if (bus_val_type(v) == BUS_VAL_MAP) {
        for (size_t i = 0; i < bus_val_size(v); i++) {
            char key[512];
            snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", bus_val_map_key(v, i));
            s_flatten(bus_val_map_value(v, i), key, csv);
        }
        return;
    }
    bus_buf_t out = {0};
    if (csv) {
        bus_val_to_json(v, &out);
        posctl_print_csv_cell(prefix, false);
        posctl_print_csv_cell((const char *)out.data, true);
    } else {
        int64_t fen;
        if (posctl_money_key(prefix) && bus_val_get_int(v, &fen))
            s_cell_text(v, prefix, &out); /* yuan, unquoted */
        else
            bus_val_to_json(v, &out);
        printf("%-40s %s\n", prefix, out.data ? (const char *)out.data : "");
    }
    bus_buf_free(&out);
}

void posctl_print(const bus_val_t *body, const char *format)
{
    bool csv = strcmp(format, "csv") == 0;
    if (strcmp(format, "json") == 0) {
        bus_buf_t out = {0};
        bus_val_to_json(body, &out);
        printf("%s\n", (const char *)out.data);
        bus_buf_free(&out);
        return;
    }
    bus_val_t *rows = bus_val_map_get(body, "rows");
    if (bus_val_type(rows) == BUS_VAL_ARR) {
        /* a table: columns from the first row */
        bus_val_t *first = bus_val_arr_get(rows, 0);
        size_t ncols = bus_val_size(first);
        for (size_t c = 0; c < ncols; c++)
            if (csv)
                posctl_print_csv_cell(bus_val_map_key(first, c), c + 1 == ncols);
            else
                printf("%-16s", bus_val_map_key(first, c));
        if (!csv || ncols == 0)
            printf("\n");
        for (size_t r = 0; r < bus_val_size(rows); r++) {
            bus_val_t *row = bus_val_arr_get(rows, r);
            for (size_t c = 0; c < ncols; c++) {
                bus_buf_t cell = {0};
                const char *col = bus_val_map_key(first, c);
                bus_val_t *v = bus_val_map_get(row, col);
                s_cell_text(v, csv ? NULL : col, &cell); /* csv keeps fen */
                const char *text = cell.data ? (const char *)cell.data : "";
                if (csv)
                    posctl_print_csv_cell(text, c + 1 == ncols);
                else
                    s_pad(text, 16);
                bus_buf_free(&cell);
            }
            if (!csv || ncols == 0)
                printf("\n");
        }
        return;
    }
    s_flatten(body, "", csv);
}

static const char *s_arg(bus_config_t *config, int i)
{
    return bus_config_arg(config, i);
}

static const char *s_need_store(bus_config_t *config)
{
    const char *store = bus_config_str(config, "store");
    if (!store)
        fprintf(stderr, "posctl: --store is required\n");
    return store;
}

/*  Call and print the whole reply as JSON (or the chosen format); exit code. */
static int s_call_print(bus_config_t *config, bus_client_t *client, const char *service,
                        const char *method, bus_val_t **body_p)
{
    bus_msg_t *reply = posctl_call(client, service, method, body_p);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    posctl_print(bus_msg_body(reply), bus_config_str(config, "format"));
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

int posctl_store(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    if (bus_config_argc(config) < 3 || strcmp(s_arg(config, 1), "add") != 0) {
        fprintf(stderr, "posctl: usage: store add STORE [NAME]\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", s_arg(config, 2));
    if (bus_config_argc(config) > 3)
        bus_val_map_set_str(body, "name", s_arg(config, 3));
    int rc = s_call_print(config, client, "inventory", "store.add", &body);
    bus_client_destroy(&client);
    return rc;
}

/* ---- CSV ----------------------------------------------------------------- */

/*  A catalog file read in chunks into in, split into records by csv.c into out. */
typedef struct {
    FILE *f;
    char *in; /* S_INPUT_MAX bytes: unparsed input from start to len */
    size_t start, len;
    bool eof;
    char *out; /* S_LINE_MAX bytes: the current record's fields */
    int lines; /* physical lines consumed */
} s_csv_reader_t;

#define S_CSV_EREAD -100 /* the file could not be read (errno says why) */

/*  The next record's fields (pointers into reader->out, valid until the next call): the field
    count, 0 at the end of the file, or a POSCTL_CSV_E* code (also for a read error, with errno). */
static int s_csv_next(s_csv_reader_t *r, char **fields, int max)
{
    while (true) {
        size_t used = 0;
        int n = posctl_csv_record(r->in + r->start, r->len - r->start, r->eof, &used, r->out,
                                  S_LINE_MAX, fields, max, &r->lines);
        r->start += used;
        if (n != 0 || r->eof)
            return n;
        /* no whole record in the buffer: move the partial one to the front, read more */
        memmove(r->in, r->in + r->start, r->len - r->start);
        r->len -= r->start;
        r->start = 0;
        if (r->len == S_INPUT_MAX)
            return POSCTL_CSV_ETOOLONG;
        size_t got = fread(r->in + r->len, 1, S_INPUT_MAX - r->len, r->f);
        r->len += got;
        if (got == 0) {
            if (ferror(r->f))
                return S_CSV_EREAD;
            r->eof = true;
        }
    }
}

static void s_progress(long done, long total_bytes, long at_byte, bool tty)
{
    if (!tty)
        return;
    int filled = total_bytes > 0 ? (int)((double)at_byte / (double)total_bytes * S_BAR_WIDTH) : 0;
    if (filled > S_BAR_WIDTH)
        filled = S_BAR_WIDTH;
    fprintf(stderr, "\r[%.*s%*s] %ld rows", filled, "########################################",
            S_BAR_WIDTH - filled, "", done);
    fflush(stderr);
}

static int s_send_batch(bus_client_t *client, bus_val_t **rows_p, long *applied, long *changed,
                        long *rejected, FILE *report)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set(body, "rows", rows_p);
    bus_msg_t *reply = posctl_call(client, "inventory", "catalog.import", &body);
    *rows_p = bus_val_new_arr();
    if (!reply)
        return -1;
    int64_t a = 0, c = 0;
    bus_val_map_get_int(bus_msg_body(reply), "applied", &a);
    bus_val_map_get_int(bus_msg_body(reply), "changed", &c);
    bus_val_t *bad = bus_val_map_get(bus_msg_body(reply), "rejected");
    for (size_t i = 0; i < bus_val_size(bad); i++) {
        int64_t line = 0;
        bus_val_map_get_int(bus_val_arr_get(bad, i), "line", &line);
        fprintf(report, "line %" PRId64 ": %s\n", line,
                bus_val_map_get_str(bus_val_arr_get(bad, i), "reason"));
    }
    *applied += a;
    *changed += c;
    *rejected += (long)bus_val_size(bad);
    bus_msg_destroy(&reply);
    return 0;
}

/*  Whether name is one of the n names. */
static bool s_known(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/*  The header's column names, copied (the reader reuses its buffer for every record) into one
    allocation (returned; free it) with header[i] pointing at column i. *ncols gets the count, or
    0 with NULL returned after printing why the header is unusable. */
static char *s_read_header(s_csv_reader_t *r, const char *path, char **header, int *ncols)
{
    static const char *const required[] = {S_REQUIRED_COLUMNS};
    char *fields[S_FIELDS_MAX];
    *ncols = 0;
    int n = s_csv_next(r, fields, S_FIELDS_MAX);
    if (n <= 0) {
        fprintf(stderr, "posctl: %s: no header line%s%s\n", path, n < 0 ? ": " : "",
                n < 0 ? posctl_csv_strerror(n) : "");
        return NULL;
    }
    size_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += strlen(fields[i]) + 1;
    char *names = malloc(bytes);
    if (!names)
        return NULL;
    char *p = names;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(fields[i]) + 1;
        memcpy(p, fields[i], len);
        header[i] = p;
        p += len;
    }
    for (size_t k = 0; k < sizeof(required) / sizeof(required[0]); k++)
        if (!s_known((const char *const *)header, (size_t)n, required[k])) {
            fprintf(stderr,
                    "posctl: %s: header lacks the column '%s' (needs sku,barcode,name,"
                    "price,tax_rate,unit,category)\n",
                    path, required[k]);
            free(names);
            return NULL;
        }
    *ncols = n;
    return names;
}

static int s_catalog_import(bus_client_t *client, const char *path)
{
    static const char *const columns[] = {S_REQUIRED_COLUMNS, S_OPTIONAL_COLUMNS};
    int rc = POSCTL_EXIT_FAIL;
    s_csv_reader_t r = {0};
    r.f = fopen(path, "rb");
    if (!r.f) {
        fprintf(stderr, "posctl: cannot read %s: %s\n", path, strerror(errno));
        return POSCTL_EXIT_FAIL;
    }
    fseek(r.f, 0, SEEK_END);
    long size = ftell(r.f);
    rewind(r.f);
    char bom[sizeof(S_BOM) - 1];
    if (fread(bom, 1, sizeof(bom), r.f) != sizeof(bom) || memcmp(bom, S_BOM, sizeof(bom)) != 0)
        rewind(r.f);
    r.in = malloc(S_INPUT_MAX);
    r.out = malloc(S_LINE_MAX);
    if (!r.in || !r.out) {
        fprintf(stderr, "posctl: out of memory\n");
        goto out_free_buffers;
    }
    char *fields[S_FIELDS_MAX], *header[S_FIELDS_MAX];
    int ncols = 0;
    char *names = s_read_header(&r, path, header, &ncols);
    if (!names)
        goto out_free_buffers;
    bool tty = isatty(STDERR_FILENO);
    long rows_read = 0, applied = 0, changed = 0, rejected = 0, local_bad = 0;
    bool unreadable = false;
    bus_val_t *batch = bus_val_new_arr();
    rc = POSCTL_EXIT_OK;
    while (true) {
        int record_line = r.lines + 1;
        int n = s_csv_next(&r, fields, S_FIELDS_MAX);
        if (n == 0)
            break;
        rows_read++;
        if (n < 0) {
            /* where the next record starts is unknown after this: stop, and say so */
            printf("line %d: %s\n", record_line,
                   n == S_CSV_EREAD ? strerror(errno) : posctl_csv_strerror(n));
            local_bad++;
            unreadable = true;
            break;
        }
        if (n == 1 && fields[0][0] == '\0')
            continue; /* blank line */
        if (n != ncols) {
            printf("line %d: wrong number of fields for the header\n", record_line);
            local_bad++;
            continue;
        }
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_int(row, "line", record_line);
        for (int i = 0; i < ncols; i++)
            if (s_known(columns, sizeof(columns) / sizeof(columns[0]), header[i]))
                bus_val_map_set_str(row, header[i], fields[i]);
        bus_val_arr_push(batch, &row);
        if (bus_val_size(batch) == S_BATCH_ROWS) {
            if (s_send_batch(client, &batch, &applied, &changed, &rejected, stdout) != 0) {
                rc = POSCTL_EXIT_FAIL;
                break;
            }
            s_progress(rows_read, size, ftell(r.f), tty);
        }
    }
    if (rc == POSCTL_EXIT_OK && bus_val_size(batch) > 0 &&
        s_send_batch(client, &batch, &applied, &changed, &rejected, stdout) != 0)
        rc = POSCTL_EXIT_FAIL;
    if (unreadable)
        rc = POSCTL_EXIT_FAIL; /* the rows before it are applied; the rest were never read */
    s_progress(rows_read, size, size, tty);
    if (tty)
        fprintf(stderr, "\n");
    bus_val_destroy(&batch);
    printf("imported %s: %ld rows read, %ld applied (%ld changed), %ld rejected\n", path, rows_read,
           applied, changed, rejected + local_bad);
    free(names);
out_free_buffers:
    free(r.out);
    free(r.in);
    fclose(r.f);
    return rc;
}

int posctl_catalog(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    const char *sub = s_arg(config, 1);
    if (bus_config_argc(config) != 3 || !sub || (strcmp(sub, "import") && strcmp(sub, "get"))) {
        fprintf(stderr, "posctl: usage: catalog import FILE.csv | catalog get BARCODE|SKU\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    int rc;
    if (strcmp(sub, "import") == 0)
        rc = s_catalog_import(client, s_arg(config, 2));
    else {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "code", s_arg(config, 2));
        rc = s_call_print(config, client, "inventory", "catalog.get", &body);
    }
    bus_client_destroy(&client);
    return rc;
}

/*  Parse a whole number argument. */
static bool s_int_arg(const char *text, int64_t *out)
{
    char *end;
    if (!text || !*text)
        return false;
    *out = strtoll(text, &end, 10);
    return *end == '\0';
}

/*  Add the items of one page (stock.get, stock.reorder, sale.review) to merged (id -> value):
    list is a map {id: value} or an array of rows whose field id_field names them. An id already
    in merged (Redis HSCAN and SSCAN may return it on two pages) is replaced in place by this
    page's value, the fresher one. 0 or -1 when out of memory. */
static int s_merge_page(bus_val_t *merged, const bus_val_t *list, const char *id_field)
{
    bool is_map = bus_val_type(list) == BUS_VAL_MAP;
    for (size_t i = 0; i < bus_val_size(list); i++) {
        const bus_val_t *v = is_map ? bus_val_map_value(list, i) : bus_val_arr_get(list, i);
        const char *sku = is_map ? bus_val_map_key(list, i) : bus_val_map_get_str(v, id_field);
        if (!sku)
            continue; /* a row without a SKU cannot be told apart from the others */
        bus_val_t *copy = bus_val_dup(v);
        if (!copy || bus_val_map_set(merged, sku, &copy) != 0)
            return -1;
    }
    return 0;
}

/*  The values of merged, in its order, as a new array; NULL when out of memory. */
static bus_val_t *s_map_values(const bus_val_t *merged)
{
    bus_val_t *rows = bus_val_new_arr();
    for (size_t i = 0; rows && i < bus_val_size(merged); i++) {
        bus_val_t *copy = bus_val_dup(bus_val_map_value(merged, i));
        if (!copy || bus_val_arr_push(rows, &copy) != 0)
            bus_val_destroy(&rows);
    }
    return rows;
}

/*  A whole store's stock.get (key "stock", a map), stock.reorder (key "rows", an array of rows
    named by "sku") or sale.review (key "sales", rows named by "sale_id"): send req (not
    consumed) to service with cursor "0", then with each page's cursor while it says more.
    Returns the first page's body with key holding every page's items, each once with its last
    value, and cursor "0", more false: what one page of a small store holds. The caller destroys
    it. NULL after printing why. */
static bus_val_t *s_scan_pages(bus_client_t *client, const char *service, const char *method,
                               const bus_val_t *req, const char *key, const char *id_field)
{
    bus_val_t *all = NULL, *merged = bus_val_new_map();
    char cursor[S_CURSOR_MAX] = "0";
    bool more = true, rows = false;
    int rc = merged ? 0 : -1;
    while (rc == 0 && more) {
        bus_val_t *body = bus_val_dup(req);
        bus_val_map_set_str(body, "cursor", cursor);
        bus_msg_t *reply = posctl_call(client, service, method, &body);
        if (!reply)
            goto out_destroy;
        const bus_val_t *page = bus_msg_body(reply);
        const char *next = bus_val_map_get_str(page, "cursor");
        more = false;
        bus_val_map_get_bool(page, "more", &more);
        if (more && (!next || strlen(next) >= sizeof(cursor) || strcmp(next, "0") == 0)) {
            fprintf(stderr, "posctl: %s: a page says more but gives no cursor to go on\n", method);
            bus_msg_destroy(&reply);
            goto out_destroy;
        }
        if (more)
            snprintf(cursor, sizeof(cursor), "%s", next);
        if (!all) {
            rows = bus_val_type(bus_val_map_get(page, key)) == BUS_VAL_ARR;
            all = bus_val_dup(page);
        }
        rc = all ? s_merge_page(merged, bus_val_map_get(page, key), id_field) : -1;
        bus_msg_destroy(&reply);
    }
    bus_val_t *items = rc != 0 ? NULL : rows ? s_map_values(merged) : bus_val_dup(merged);
    if (!items || bus_val_map_set(all, key, &items) != 0 ||
        bus_val_map_set_str(all, "cursor", "0") != 0 ||
        bus_val_map_set_bool(all, "more", false) != 0) {
        fprintf(stderr, "posctl: %s: out of memory\n", method);
        goto out_destroy;
    }
    bus_val_destroy(&merged);
    return all;
out_destroy:
    bus_val_destroy(&merged);
    bus_val_destroy(&all);
    return NULL;
}

bus_val_t *posctl_call_pages(bus_client_t *client, const char *service, const char *method,
                             const bus_val_t *req, const char *list_key, const char *next_key,
                             int64_t page_max, int64_t want)
{
    bus_val_t *all = NULL, *items = bus_val_new_arr();
    char last[BUS_STREAM_ID_MAX] = "";
    bool more = true;
    int64_t shown = 0;
    while (items && more && shown < want) {
        bus_val_t *body = bus_val_dup(req);
        bus_val_map_set_int(body, "count", want - shown < page_max ? want - shown : page_max);
        if (*last)
            bus_val_map_set_str(body, next_key, last);
        bus_msg_t *reply = posctl_call(client, service, method, &body);
        if (!reply)
            goto out_destroy;
        const bus_val_t *page = bus_msg_body(reply);
        const bus_val_t *list = bus_val_map_get(page, list_key);
        const char *page_last = bus_val_map_get_str(page, "last");
        more = false;
        bus_val_map_get_bool(page, "more", &more);
        if (more && (bus_val_size(list) == 0 || !page_last || !*page_last ||
                     strlen(page_last) >= sizeof(last))) {
            fprintf(stderr, "posctl: %s: a page says more but gives no id to go on from\n", method);
            bus_msg_destroy(&reply);
            goto out_destroy;
        }
        if (bus_val_size(list) > 0 && page_last)
            snprintf(last, sizeof(last), "%s", page_last); /* an empty page keeps the last one */
        if (!all)
            all = bus_val_dup(page);
        for (size_t i = 0; all && items && i < bus_val_size(list) && shown < want; i++, shown++) {
            bus_val_t *copy = bus_val_dup(bus_val_arr_get(list, i));
            if (!copy || bus_val_arr_push(items, &copy) != 0)
                bus_val_destroy(&items);
        }
        bus_msg_destroy(&reply);
        if (!all)
            break;
    }
    if (!items || !all || bus_val_map_set(all, list_key, &items) != 0 ||
        (*last && bus_val_map_set_str(all, "last", last) != 0) ||
        bus_val_map_set_bool(all, "more", more) != 0) {
        fprintf(stderr, "posctl: %s: out of memory\n", method);
        goto out_destroy;
    }
    return all;
out_destroy:
    bus_val_destroy(&items);
    bus_val_destroy(&all);
    return NULL;
}

/*  Ask inventory for a stock listing or movement, every page of a paged one, and print the
    reply; the exit code. */
static int s_stock_call(bus_config_t *config, bus_client_t *client, const char *method,
                        bus_val_t **body_p)
{
    bus_val_t *all = NULL;
    if (strcmp(method, "stock.get") == 0 && !bus_val_map_get(*body_p, "sku"))
        all = s_scan_pages(client, "inventory", method, *body_p, "stock", "sku");
    else if (strcmp(method, "stock.reorder") == 0)
        all = s_scan_pages(client, "inventory", method, *body_p, "rows", "sku");
    else if (strcmp(method, "stock.history") == 0) {
        int64_t want = bus_config_int(config, "count");
        all = posctl_call_pages(client, "inventory", method, *body_p, "moves", "before",
                                S_HISTORY_PAGE_MAX, want > 0 ? want : S_HISTORY_DEFAULT);
    } else
        return s_call_print(config, client, "inventory", method, body_p);
    bus_val_destroy(body_p);
    if (!all)
        return POSCTL_EXIT_FAIL;
    posctl_print(all, bus_config_str(config, "format"));
    bus_val_destroy(&all);
    return POSCTL_EXIT_OK;
}

int posctl_stock(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    const char *sub = s_arg(config, 1);
    const char *store = s_need_store(config);
    int argc = bus_config_argc(config);
    if (!sub || !store) {
        fprintf(stderr, "posctl: usage: stock get|receive|transfer|count|adjust|history "
                        "--store S ...\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_val_t *body = bus_val_new_map();
    const char *method = NULL;
    int64_t qty = 0;
    char move_id[BUS_MSG_ID_LEN + 1];
    if (bus_config_str(config, "move-id"))
        snprintf(move_id, sizeof(move_id), "%s", bus_config_str(config, "move-id"));
    else
        bus_new_id(move_id);
    bool movement = strcmp(sub, "get") && strcmp(sub, "history") && strcmp(sub, "reorder");
    if (movement) {
        if (argc != 4 || !s_int_arg(s_arg(config, 3), &qty)) {
            fprintf(stderr, "posctl: usage: stock %s --store S SKU QUANTITY\n", sub);
            bus_val_destroy(&body);
            return POSCTL_EXIT_USAGE;
        }
        bus_val_map_set_str(body, "sku", s_arg(config, 2));
        bus_val_map_set_str(body, "move_id", move_id);
        bus_val_map_set_str(body, strcmp(sub, "transfer") ? "store" : "from", store);
    } else {
        bus_val_map_set_str(body, "store", store);
        if (argc > 2)
            bus_val_map_set_str(body, "sku", s_arg(config, 2));
    }
    if (strcmp(sub, "get") == 0)
        method = "stock.get";
    else if (strcmp(sub, "history") == 0 && argc == 3)
        method = "stock.history";
    else if (strcmp(sub, "reorder") == 0)
        method = "stock.reorder";
    else if (strcmp(sub, "receive") == 0 && bus_config_str(config, "ref")) {
        method = "stock.receive";
        bus_val_map_set_int(body, "qty", qty);
        bus_val_map_set_str(body, "supplier_ref", bus_config_str(config, "ref"));
    } else if (strcmp(sub, "count") == 0) {
        method = "stock.count";
        bus_val_map_set_int(body, "qty", qty);
    } else if (strcmp(sub, "adjust") == 0 && bus_config_str(config, "reason")) {
        method = "stock.adjust";
        bus_val_map_set_int(body, "delta", qty);
        bus_val_map_set_str(body, "reason", bus_config_str(config, "reason"));
    } else if (strcmp(sub, "transfer") == 0 && bus_config_str(config, "to")) {
        method = "stock.transfer";
        bus_val_map_set_int(body, "qty", qty);
        bus_val_map_set_str(body, "to", bus_config_str(config, "to"));
    }
    if (!method) {
        fprintf(
            stderr,
            "posctl: usage: stock get [SKU] | history SKU [--count N] | reorder | receive SKU QTY "
            "--ref R | count SKU QTY | adjust SKU DELTA --reason R | transfer SKU QTY "
            "--to STORE   (all with --store S)\n");
        bus_val_destroy(&body);
        return POSCTL_EXIT_USAGE;
    }
    if (movement)
        fprintf(stderr, "move id %s (repeat with --move-id %s to retry safely)\n", move_id,
                move_id);
    bus_client_t *client = posctl_client(config, cfg);
    int rc = client ? s_stock_call(config, client, method, &body) : POSCTL_EXIT_FAIL;
    bus_val_destroy(&body);
    bus_client_destroy(&client);
    return rc;
}

/*  Z: close the day at sales, then wait for reporting to have applied everything up to the close.
 */
/*  The day's reconciliation with each provider (payments, docs/payments.md), when one was kept,
    as "reconciliation.<provider>" lines of the Z report. Without payments: nothing. */
static void s_z_reconciliation(bus_client_t *client, const char *store, const char *day,
                               bus_val_t *z)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_str(body, "day", day);
    bus_msg_t *rep = bus_client_request(client, "payments", "payment.recon.get", &body);
    const bus_val_t *results = rep ? bus_val_map_get(bus_msg_body(rep), "results") : NULL;
    for (size_t i = 0; i < bus_val_size(results); i++) {
        const bus_val_t *r = bus_val_map_value(results, i);
        int64_t matched = 0, diffs = 0;
        bus_val_map_get_int(r, "matched", &matched);
        bus_val_map_get_int(r, "differences", &diffs);
        char key[64], text[96];
        snprintf(key, sizeof(key), "reconciliation.%s", bus_val_map_key(results, i));
        snprintf(text, sizeof(text), "%" PRId64 " matched, %" PRId64 " differences", matched,
                 diffs);
        bus_val_map_set_str(z, key, text);
    }
    bus_msg_destroy(&rep);
}

static int s_report_z(bus_config_t *config, bus_client_t *client, const char *store)
{
    const char *day = bus_config_str(config, "date");
    char closed[16];
    if (!day) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_msg_t *rep = posctl_call(client, "sales", "day.close", &body);
        if (!rep)
            return POSCTL_EXIT_FAIL;
        snprintf(closed, sizeof(closed), "%s",
                 bus_val_map_get_str(bus_msg_body(rep), "closed_day"));
        bus_msg_destroy(&rep);
        day = closed;
    }
    int64_t deadline = bus_mono_ms() + S_Z_WAIT_MS;
    while (true) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_val_map_set_str(body, "day", day);
        bus_msg_t *rep = bus_client_request(client, "reporting", "report.z", &body);
        if (rep) {
            bus_val_t *z = bus_val_dup(bus_msg_body(rep));
            bus_msg_destroy(&rep);
            s_z_reconciliation(client, store, day, z);
            posctl_print(z, bus_config_str(config, "format"));
            bus_val_destroy(&z);
            return POSCTL_EXIT_OK;
        }
        if (strcmp(bus_client_remote_code(client), "not_ready") != 0 || bus_mono_ms() > deadline) {
            fprintf(stderr, "posctl: %s\n", bus_client_errstr(client));
            return POSCTL_EXIT_FAIL;
        }
        zclock_sleep(100);
    }
}

int posctl_report(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    static const struct {
        const char *name, *method;
    } kinds[] = {
        {"x", "report.x"},         {"day", "report.day"},         {"items", "report.items"},
        {"hours", "report.hours"}, {"baskets", "report.baskets"}, {"z", NULL}};
    const char *sub = s_arg(config, 1);
    const char *store = s_need_store(config);
    const char *format = bus_config_str(config, "format");
    if (!sub || !store ||
        (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))) {
        fprintf(stderr, "posctl: usage: report x|z|day|items|hours|baskets --store S "
                        "[--date YYYY-MM-DD] [--register R] [--format table|csv|json]\n");
        return POSCTL_EXIT_USAGE;
    }
    const char *method = NULL;
    bool known = false;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(sub, kinds[i].name) == 0) {
            known = true;
            method = kinds[i].method;
        }
    if (!known) {
        fprintf(stderr, "posctl: unknown report '%s'\n", sub);
        return POSCTL_EXIT_USAGE;
    }
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    int rc;
    if (!method)
        rc = s_report_z(config, client, store);
    else {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        if (bus_config_str(config, "date"))
            bus_val_map_set_str(body, "day", bus_config_str(config, "date"));
        if (bus_config_str(config, "register"))
            bus_val_map_set_str(body, "register", bus_config_str(config, "register"));
        bus_val_map_set_int(body, "top", bus_config_int(config, "top"));
        rc = s_call_print(config, client, "reporting", method, &body);
    }
    bus_client_destroy(&client);
    return rc;
}

/*  posctl review list --store S: the store's sales flagged for review (every page);
    posctl review done --store S SALE_ID: one looked at, off the list. */
int posctl_review(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    const char *sub = s_arg(config, 1);
    const char *store = s_need_store(config);
    bool list = sub && strcmp(sub, "list") == 0 && bus_config_argc(config) == 2;
    bool done = sub && strcmp(sub, "done") == 0 && bus_config_argc(config) == 3;
    if (!store || (!list && !done)) {
        fprintf(stderr, "posctl: usage: review list --store S | review done --store S SALE_ID\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    int rc;
    if (done) {
        bus_val_map_set_str(body, "sale_id", s_arg(config, 2));
        rc = s_call_print(config, client, "sales", "sale.reviewed", &body);
    } else {
        bus_val_t *all = s_scan_pages(client, "sales", "sale.review", body, "sales", "sale_id");
        bus_val_destroy(&body);
        rc = all ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
        if (all)
            posctl_print(all, bus_config_str(config, "format"));
        bus_val_destroy(&all);
    }
    bus_client_destroy(&client);
    return rc;
}
