/*  =========================================================================
    inventory - the catalog and the stock of every store

    The catalog (items, barcodes, prices, tax rates, thresholds) is imported
    in batches of validated rows; a row equal to what is stored changes
    nothing, so re-importing a file is harmless, and every real change bumps
    the catalog version and publishes catalog.changed so replicas converge
    (catalog.snapshot serves them in pages).

    Stock moves only through Lua scripts that claim a movement id in the same
    atomic step as the change, so a resent request or a redelivered sale
    never moves stock twice, and concurrent instances never lose an update.
    A worker thread follows the `sales` stream (consumer group "inventory")
    and moves stock for every committed sale and return.
    =========================================================================
*/
#include <bus/bus.h>
#include "svc_main.h"
#include <pos/barcode.h>
#include <pos/money.h>
#include <pos/tax.h>
#include <time.h>
#include "apply_lua.h"
#include "import_lua.h"
#include "move_lua.h"

#define S_PROGRAM         "inventory"
#define S_STREAM          "sales:stream"
#define S_GROUP           "inventory"
#define S_KEY_MAX         256
#define S_ID_MAX          16
#define S_SKU_MAX         32
#define S_NAME_MAX        96
#define S_CATEGORY_MAX    32
#define S_SUPPLIER_MAX    64
#define S_REF_MAX         64
#define S_IMPORT_ROWS_MAX 5000
#define S_IMPORT_FIELDS   11
#define S_SNAPSHOT_MAX    1000
#define S_HISTORY_MAX     1000
#define S_MOVE_ID_TTL_S   "2592000" /* 30 days: resends come within seconds, not months */
#define S_DAY_MS          86400000LL
#define S_WINDOW_MAX      365

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "inventory", 0, 0, "name this service registers under"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    bus_service_t *svc;
    bus_redis_t *redis, *wredis;
    bus_pub_t *pub;  /* main thread */
    bus_pub_t *wpub; /* worker thread */
    int import, move, wapply;
    bus_stream_worker_t *worker;
    int64_t *c_rows_ok, *c_rows_bad, *c_moves, *c_applied, *c_low, *c_bad_entries;
} s_inv_t;

static bool s_id_ok(const char *id, size_t max, const char *extra)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > max)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && !strchr(extra, *p))
            return false;
    return true;
}

static bool s_store_ok(const char *s)
{
    return s_id_ok(s, S_ID_MAX, "");
}

static bool s_sku_ok(const char *s)
{
    return s_id_ok(s, S_SKU_MAX, "-.");
}

/*  Printable UTF-8 text of at most max bytes, no control characters. */
static bool s_text_ok(const char *s, size_t max, bool required)
{
    if (!s || !*s)
        return !required;
    if (strlen(s) > max)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static int s_redis_down(s_inv_t *self, bus_service_t *svc)
{
    return bus_service_error(svc, BUS_ERR_UNAVAILABLE, "storage unavailable, retry: %s",
                             bus_redis_errstr(self->redis));
}

static bool s_store_known(s_inv_t *self, const char *store)
{
    redisReply *r = bus_redis_command(self->redis, "SISMEMBER stores %s", store);
    bool known = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r)
        freeReplyObject(r);
    return known;
}

/* ---- stores -------------------------------------------------------------- */

static int s_store_add(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *name = bus_val_map_get_str(bus_msg_body(req), "name");
    if (!s_store_ok(store) || !s_text_ok(name, S_NAME_MAX, false))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "store: 1-16 letters, digits or _; name: printable, <= 96 bytes");
    redisReply *r = bus_redis_command(self->redis, "SADD stores %s", store);
    if (!r)
        return s_redis_down(self, svc);
    freeReplyObject(r);
    r = bus_redis_command(self->redis, "HSET store:{%s} name %s", store, name ? name : store);
    if (!r)
        return s_redis_down(self, svc);
    freeReplyObject(r);
    bus_val_map_set_str(reply, "store", store);
    return 0;
}

/* ---- catalog ------------------------------------------------------------- */

/*  Validate one import row into its 11 stored fields (text). NULL reason = valid. */
static const char *s_check_row(const bus_val_t *row, char fields[S_IMPORT_FIELDS][S_NAME_MAX + 1])
{
    static char reason[160];
    const char *sku = bus_val_map_get_str(row, "sku");
    const char *barcode = bus_val_map_get_str(row, "barcode");
    const char *name = bus_val_map_get_str(row, "name");
    const char *price = bus_val_map_get_str(row, "price");
    const char *rate = bus_val_map_get_str(row, "tax_rate");
    const char *unit = bus_val_map_get_str(row, "unit");
    const char *category = bus_val_map_get_str(row, "category");
    const char *supplier = bus_val_map_get_str(row, "supplier");
    const char *threshold = bus_val_map_get_str(row, "threshold");
    const char *member = bus_val_map_get_str(row, "member_price");
    const char *active = bus_val_map_get_str(row, "active");
    int64_t fen, bp, member_fen = 0, thr = 0;
    pos_err_t err;
    if (!s_sku_ok(sku))
        return "sku: 1-32 letters, digits, '_', '-' or '.'";
    if (barcode && *barcode && (err = pos_gtin_check(barcode)) != POS_OK) {
        snprintf(reason, sizeof(reason), "barcode %.20s: %s", barcode, pos_strerror(err));
        return reason;
    }
    if (!s_text_ok(name, S_NAME_MAX, true))
        return "name: required, printable, at most 96 bytes";
    if ((err = pos_money_parse(price, false, &fen)) != POS_OK) {
        snprintf(reason, sizeof(reason), "price '%.20s': %s", price ? price : "",
                 pos_strerror(err));
        return reason;
    }
    char rate_text[32];
    snprintf(rate_text, sizeof(rate_text), "%s", rate ? rate : "");
    size_t rl = strlen(rate_text);
    if (rl && rate_text[rl - 1] == '%')
        rate_text[rl - 1] = '\0';
    /* a percentage with up to 2 decimals is exactly basis points */
    if (pos_money_parse(rate_text, false, &bp) != POS_OK || bp > POS_BP_100PCT)
        return "tax_rate: a percentage 0-100 with at most 2 decimals (13, 13%, 5.5)";
    if (!unit || (strcmp(unit, "pcs") && strcmp(unit, "kg")))
        return "unit: pcs or kg";
    if (!s_text_ok(category, S_CATEGORY_MAX, true))
        return "category: required, printable, at most 32 bytes";
    if (!s_text_ok(supplier, S_SUPPLIER_MAX, false))
        return "supplier: printable, at most 64 bytes";
    if (threshold && *threshold) {
        char *end;
        thr = strtoll(threshold, &end, 10);
        if (*end || thr < 0)
            return "threshold: a whole number >= 0";
    }
    if (member && *member && pos_money_parse(member, false, &member_fen) != POS_OK)
        return "member_price: a price like 12.50";
    bool on = !active || !*active || !strcmp(active, "1") || !strcmp(active, "true") ||
              !strcmp(active, "yes");
    if (active && *active && !on && strcmp(active, "0") && strcmp(active, "false") &&
        strcmp(active, "no"))
        return "active: 1/0, true/false or yes/no";
    snprintf(fields[0], S_NAME_MAX + 1, "%s", sku);
    snprintf(fields[1], S_NAME_MAX + 1, "%s", barcode ? barcode : "");
    snprintf(fields[2], S_NAME_MAX + 1, "%s", name);
    snprintf(fields[3], S_NAME_MAX + 1, "%" PRId64, fen);
    snprintf(fields[4], S_NAME_MAX + 1, "%" PRId64, bp);
    snprintf(fields[5], S_NAME_MAX + 1, "%s", unit);
    snprintf(fields[6], S_NAME_MAX + 1, "%s", category);
    snprintf(fields[7], S_NAME_MAX + 1, "%s", supplier ? supplier : "");
    snprintf(fields[8], S_NAME_MAX + 1, "%" PRId64, thr);
    snprintf(fields[9], S_NAME_MAX + 1, "%" PRId64, member_fen);
    snprintf(fields[10], S_NAME_MAX + 1, "%d", on ? 1 : 0);
    return NULL;
}

static int s_import(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    bus_val_t *rows = bus_val_map_get(bus_msg_body(req), "rows");
    size_t n = bus_val_size(rows);
    if (bus_val_type(rows) != BUS_VAL_ARR || n > S_IMPORT_ROWS_MAX)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "rows: an array of at most %d",
                                 S_IMPORT_ROWS_MAX);
    char(*fields)[S_IMPORT_FIELDS][S_NAME_MAX + 1] = calloc(n ? n : 1, sizeof(*fields));
    const char **argv = calloc(4 + n * S_IMPORT_FIELDS, sizeof(*argv));
    if (!fields || !argv) {
        free(fields);
        free(argv);
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    }
    bus_val_t *rejected = bus_val_new_arr();
    size_t good = 0;
    char count[16];
    argv[0] = "catalog:version";
    argv[1] = "catalog:barcode";
    argv[2] = "catalog:index";
    argv[3] = count;
    for (size_t i = 0; i < n; i++) {
        bus_val_t *row = bus_val_arr_get(rows, i);
        int64_t line = (int64_t)i + 1;
        bus_val_map_get_int(row, "line", &line);
        const char *why = s_check_row(row, fields[good]);
        if (why) {
            bus_val_t *bad = bus_val_new_map();
            bus_val_map_set_int(bad, "line", line);
            bus_val_map_set_str(bad, "reason", why);
            bus_val_arr_push(rejected, &bad);
            (*self->c_rows_bad)++;
            continue;
        }
        for (int f = 0; f < S_IMPORT_FIELDS; f++)
            argv[4 + good * S_IMPORT_FIELDS + f] = fields[good][f];
        good++;
    }
    snprintf(count, sizeof(count), "%zu", good);
    int64_t changed = 0, version = 0;
    int rc = 0;
    redisReply *r = bus_redis_evalsha(self->redis, self->import, 3,
                                      (int)(4 + good * S_IMPORT_FIELDS), argv, NULL);
    if (!r)
        rc = s_redis_down(self, svc);
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        rc = bus_service_error(svc, BUS_ERR_INTERNAL, "import failed: %s",
                               r->type == REDIS_REPLY_ERROR ? r->str : "?");
    else {
        changed = r->element[0]->integer;
        version = r->element[1]->integer;
    }
    if (r)
        freeReplyObject(r);
    free(fields);
    free(argv);
    if (rc != 0) {
        bus_val_destroy(&rejected);
        return rc;
    }
    *self->c_rows_ok += (int64_t)good;
    bus_val_map_set_int(reply, "applied", (int64_t)good);
    bus_val_map_set_int(reply, "changed", changed);
    bus_val_map_set_int(reply, "version", version);
    bus_val_map_set(reply, "rejected", &rejected);
    if (changed > 0) {
        bus_val_t *event = bus_val_new_map();
        bus_val_map_set_int(event, "version", version);
        bus_val_map_set_int(event, "changed", changed);
        bus_pub_publish(self->pub, "catalog.changed", "catalog.changed", &event);
    }
    return 0;
}

static const char *const s_item_fields[] = {"sku",         "barcode",      "name",     "price",
                                            "tax_rate_bp", "unit",         "category", "supplier",
                                            "threshold",   "member_price", "active"};
#define S_ITEM_FIELDS (sizeof(s_item_fields) / sizeof(s_item_fields[0]))

/*  An item as a map (numbers as ints); NULL if absent or on error (*down set). */
static bus_val_t *s_item(s_inv_t *self, const char *sku, bool *down)
{
    redisReply *r = bus_redis_command(self->redis,
                                      "HMGET catalog:item:%s sku barcode name price tax_rate_bp "
                                      "unit category supplier threshold member_price active",
                                      sku);
    *down = r == NULL;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != S_ITEM_FIELDS ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        if (r)
            freeReplyObject(r);
        return NULL;
    }
    bus_val_t *item = bus_val_new_map();
    for (size_t i = 0; i < S_ITEM_FIELDS; i++) {
        const char *v = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
        bool number = i == 3 || i == 4 || i == 8 || i == 9;
        if (number)
            bus_val_map_set_int(item, s_item_fields[i], strtoll(v, NULL, 10));
        else if (i == 10)
            bus_val_map_set_bool(item, s_item_fields[i], strcmp(v, "1") == 0);
        else
            bus_val_map_set_str(item, s_item_fields[i], v);
    }
    freeReplyObject(r);
    return item;
}

static int s_catalog_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const char *code = bus_val_map_get_str(bus_msg_body(req), "code");
    if (!s_text_ok(code, S_SKU_MAX, true))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "code (SKU or barcode) required");
    bool down = false;
    bus_val_t *item = s_item(self, code, &down);
    if (!item && !down) {
        redisReply *r = bus_redis_command(self->redis, "HGET catalog:barcode %s", code);
        down = r == NULL;
        if (r && r->type == REDIS_REPLY_STRING)
            item = s_item(self, r->str, &down);
        if (r)
            freeReplyObject(r);
    }
    if (down)
        return s_redis_down(self, svc);
    if (!item)
        return bus_service_error(svc, "not_found", "no item with SKU or barcode %s", code);
    bus_val_map_set(reply, "item", &item);
    return 0;
}

static int s_snapshot(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const char *after = bus_val_map_get_str(bus_msg_body(req), "after");
    int64_t count = S_SNAPSHOT_MAX;
    bus_val_map_get_int(bus_msg_body(req), "count", &count);
    if (count < 1 || count > S_SNAPSHOT_MAX)
        count = S_SNAPSHOT_MAX;
    redisReply *v = bus_redis_command(self->redis, "GET catalog:version");
    if (!v)
        return s_redis_down(self, svc);
    int64_t version = v->type == REDIS_REPLY_STRING ? atoll(v->str) : 0;
    freeReplyObject(v);
    char start[S_SKU_MAX + 2];
    snprintf(start, sizeof(start), "%s%s", after && *after ? "(" : "-",
             after && *after ? after : "");
    redisReply *r = bus_redis_command(self->redis, "ZRANGEBYLEX catalog:index %s + LIMIT 0 %lld",
                                      start, (long long)count);
    if (!r)
        return s_redis_down(self, svc);
    bus_val_t *items = bus_val_new_arr();
    const char *last = "";
    bool down = false;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && !down; i++) {
        bus_val_t *item = s_item(self, r->element[i]->str, &down);
        if (item)
            bus_val_arr_push(items, &item);
        last = r->element[i]->str;
    }
    bus_val_map_set_int(reply, "version", version);
    bus_val_map_set_str(reply, "last", last);
    bus_val_map_set_bool(reply, "more",
                         r->type == REDIS_REPLY_ARRAY && (int64_t)r->elements == count);
    bus_val_map_set(reply, "items", &items);
    freeReplyObject(r);
    return down ? s_redis_down(self, svc) : 0;
}

/* ---- stock --------------------------------------------------------------- */

/*  Run one movement script for store/sku. Fills reply with balance; publishes stock.low. */
static int s_move(s_inv_t *self, bus_service_t *svc, const char *store, const char *sku,
                  const char *kind, int64_t qty, const char *reason, const char *ref,
                  const char *move_id, bus_val_t *reply)
{
    bool down = false;
    bus_val_t *item = s_item(self, sku, &down);
    if (down)
        return s_redis_down(self, svc);
    if (!item)
        return bus_service_error(svc, "unknown_sku", "SKU %s is not in the catalog", sku);
    int64_t threshold = 0;
    bus_val_map_get_int(item, "threshold", &threshold);
    bus_val_destroy(&item);
    char k_stock[S_KEY_MAX], k_moves[S_KEY_MAX], k_id[S_KEY_MAX], q[24], ts[24], thr[24];
    snprintf(k_stock, sizeof(k_stock), "stock:{%s}", store);
    snprintf(k_moves, sizeof(k_moves), "moves:{%s}:%s", store, sku);
    snprintf(k_id, sizeof(k_id), "mv:{%s}:%s:%s", store, move_id, kind);
    snprintf(q, sizeof(q), "%" PRId64, qty);
    snprintf(ts, sizeof(ts), "%" PRId64, bus_now_ms());
    snprintf(thr, sizeof(thr), "%" PRId64, threshold);
    const char *argv[] = {k_stock, k_moves, k_id, sku, kind,           q,
                          reason,  ref,     ts,   thr, S_MOVE_ID_TTL_S};
    redisReply *r = bus_redis_evalsha(self->redis, self->move, 3, 11, argv, NULL);
    if (!r)
        return s_redis_down(self, svc);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        freeReplyObject(r);
        return bus_service_error(svc, BUS_ERR_INTERNAL, "stock movement failed");
    }
    bool dup = strcmp(r->element[0]->str, "dup") == 0;
    int64_t balance = r->element[1]->integer, delta = r->element[2]->integer;
    bool low = r->element[3]->integer == 1;
    freeReplyObject(r);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_str(reply, "sku", sku);
    bus_val_map_set_int(reply, "balance", balance);
    bus_val_map_set_bool(reply, "duplicate", dup);
    if (!dup) {
        (*self->c_moves)++;
        bus_val_map_set_int(reply, "delta", delta);
        if (strcmp(kind, "count") == 0)
            bus_val_map_set_int(reply, "variance", delta);
    }
    if (low) {
        bus_val_t *event = bus_val_new_map();
        bus_val_map_set_str(event, "store", store);
        bus_val_map_set_str(event, "sku", sku);
        bus_val_map_set_int(event, "balance", balance);
        bus_val_map_set_int(event, "threshold", threshold);
        bus_pub_publish(self->pub, "stock.low", "stock.low", &event);
    }
    return 0;
}

/*  Common checks of a movement request: store known, sku valid, move_id present. */
static int s_move_args(s_inv_t *self, bus_service_t *svc, const bus_val_t *body,
                       const char *store_key, const char **store, const char **sku,
                       const char **move_id)
{
    *store = bus_val_map_get_str(body, store_key);
    *sku = bus_val_map_get_str(body, "sku");
    *move_id = bus_val_map_get_str(body, "move_id");
    if (!s_store_ok(*store) || !s_sku_ok(*sku) || !s_id_ok(*move_id, S_REF_MAX, "-.:"))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "%s, sku and move_id (idempotency key) required", store_key);
    if (!s_store_known(self, *store))
        return bus_redis_connected(self->redis)
                   ? bus_service_error(svc, "unknown_store", "store '%s' is not registered", *store)
                   : s_redis_down(self, svc);
    return 0;
}

static int s_receive(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store, *sku, *move_id, *ref = bus_val_map_get_str(b, "supplier_ref");
    int64_t qty = 0;
    if (s_move_args(self, svc, b, "store", &store, &sku, &move_id) != 0)
        return -1;
    if (!bus_val_map_get_int(b, "qty", &qty) || qty <= 0)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "qty must be > 0");
    if (!s_text_ok(ref, S_REF_MAX, true))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "supplier_ref required (<= 64 bytes)");
    return s_move(self, svc, store, sku, "receive", qty, "", ref, move_id, reply);
}

static int s_adjust(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store, *sku, *move_id, *reason = bus_val_map_get_str(b, "reason");
    int64_t delta = 0;
    if (s_move_args(self, svc, b, "store", &store, &sku, &move_id) != 0)
        return -1;
    if (!bus_val_map_get_int(b, "delta", &delta) || delta == 0)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "delta must be non-zero");
    if (!reason ||
        (strcmp(reason, "damaged") && strcmp(reason, "lost") && strcmp(reason, "expired") &&
         strcmp(reason, "found") && strcmp(reason, "other")))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "reason: damaged, lost, expired, found or other");
    return s_move(self, svc, store, sku, "adjust", delta, reason, "", move_id, reply);
}

static int s_count(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store, *sku, *move_id;
    int64_t qty = -1;
    if (s_move_args(self, svc, b, "store", &store, &sku, &move_id) != 0)
        return -1;
    if (!bus_val_map_get_int(b, "qty", &qty) || qty < 0)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "qty (counted) must be >= 0");
    return s_move(self, svc, store, sku, "count", qty, "count", "", move_id, reply);
}

static int s_transfer(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *from, *to, *sku, *move_id;
    int64_t qty = 0;
    if (s_move_args(self, svc, b, "from", &from, &sku, &move_id) != 0)
        return -1;
    to = bus_val_map_get_str(b, "to");
    if (!s_store_ok(to) || !s_store_known(self, to) || strcmp(from, to) == 0)
        return bus_service_error(svc, "unknown_store", "to: another registered store");
    if (!bus_val_map_get_int(b, "qty", &qty) || qty <= 0)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "qty must be > 0");
    /* two stores are two hash slots: out, then in, each idempotent on the same move id, so a
       resend after a failure between them completes the transfer without doubling either side */
    bus_val_t *out = bus_val_new_map(), *in = bus_val_new_map();
    int rc = s_move(self, svc, from, sku, "transfer_out", -qty, "transfer", to, move_id, out);
    if (rc == 0)
        rc = s_move(self, svc, to, sku, "transfer_in", qty, "transfer", from, move_id, in);
    if (rc == 0) {
        bus_val_map_set(reply, "from", &out);
        bus_val_map_set(reply, "to", &in);
    }
    bus_val_destroy(&out);
    bus_val_destroy(&in);
    return rc;
}

static int s_stock_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *sku = bus_val_map_get_str(bus_msg_body(req), "sku");
    if (!s_store_ok(store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required");
    redisReply *r = sku ? bus_redis_command(self->redis, "HGET stock:{%s} %s", store, sku)
                        : bus_redis_command(self->redis, "HGETALL stock:{%s}", store);
    if (!r)
        return s_redis_down(self, svc);
    bus_val_map_set_str(reply, "store", store);
    if (sku) {
        bus_val_map_set_str(reply, "sku", sku);
        bus_val_map_set_int(reply, "qty", r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0);
    } else {
        bus_val_t *all = bus_val_new_map();
        for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
            bus_val_map_set_int(all, r->element[i]->str, atoll(r->element[i + 1]->str));
        bus_val_map_set(reply, "stock", &all);
    }
    freeReplyObject(r);
    return 0;
}

static int s_history(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *sku = bus_val_map_get_str(bus_msg_body(req), "sku");
    int64_t count = 100;
    bus_val_map_get_int(bus_msg_body(req), "count", &count);
    if (count < 1 || count > S_HISTORY_MAX)
        count = S_HISTORY_MAX;
    if (!s_store_ok(store) || !s_sku_ok(sku))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and sku required");
    redisReply *r = bus_redis_command(self->redis, "XREVRANGE moves:{%s}:%s + - COUNT %lld", store,
                                      sku, (long long)count);
    if (!r)
        return s_redis_down(self, svc);
    bus_val_t *list = bus_val_new_arr();
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *f = r->element[i]->element[1];
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "id", r->element[i]->element[0]->str);
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str, *v = f->element[k + 1]->str;
            if (!strcmp(name, "delta") || !strcmp(name, "balance") || !strcmp(name, "ts"))
                bus_val_map_set_int(row, name, atoll(v));
            else
                bus_val_map_set_str(row, name, v);
        }
        bus_val_arr_push(list, &row);
    }
    freeReplyObject(r);
    bus_val_map_set(reply, "moves", &list);
    return 0;
}

/*  Suggest an order for every SKU whose stock would fall below its threshold within the lead
    time at the sales velocity of the last window days: ceil(sold * lead / window) + threshold -
    stock, when positive. */
static int s_reorder(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store = bus_val_map_get_str(b, "store");
    int64_t window = 7, lead = 3;
    bus_val_map_get_int(b, "window_days", &window);
    bus_val_map_get_int(b, "lead_days", &lead);
    if (!s_store_ok(store) || window < 1 || window > S_WINDOW_MAX || lead < 0 ||
        lead > S_WINDOW_MAX)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "store; window_days 1-365; lead_days 0-365");
    redisReply *stock = bus_redis_command(self->redis, "HGETALL stock:{%s}", store);
    if (!stock)
        return s_redis_down(self, svc);
    bus_val_t *rows = bus_val_new_arr();
    time_t now = time(NULL);
    for (size_t i = 0; stock->type == REDIS_REPLY_ARRAY && i + 1 < stock->elements; i += 2) {
        const char *sku = stock->element[i]->str;
        int64_t have = atoll(stock->element[i + 1]->str), sold = 0, threshold = 0;
        for (int64_t d = 0; d < window; d++) {
            time_t t = now - (time_t)(d * (S_DAY_MS / 1000));
            struct tm tm;
            char day[16];
            localtime_r(&t, &tm);
            strftime(day, sizeof(day), "%Y-%m-%d", &tm);
            redisReply *s = bus_redis_command(self->redis, "HGET sold:{%s}:%s %s", store, sku, day);
            if (s && s->type == REDIS_REPLY_STRING)
                sold += atoll(s->str);
            if (s)
                freeReplyObject(s);
        }
        bool down = false;
        bus_val_t *item = s_item(self, sku, &down);
        bus_val_map_get_int(item, "threshold", &threshold);
        bus_val_destroy(&item);
        int64_t need = (sold * lead + window - 1) / window + threshold - have;
        if (need <= 0)
            continue;
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "sku", sku);
        bus_val_map_set_int(row, "stock", have);
        bus_val_map_set_int(row, "threshold", threshold);
        bus_val_map_set_int(row, "sold_in_window", sold);
        bus_val_map_set_int(row, "suggested", need);
        bus_val_arr_push(rows, &row);
    }
    freeReplyObject(stock);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set(reply, "rows", &rows);
    return 0;
}

/* ---- applying sales (worker thread) ------------------------------------ */

#define S_ARGS_PER_SALE 4

static int s_apply(bus_stream_entry_t *entries, int n, void *arg)
{
    s_inv_t *self = arg;
    const char **argv = calloc((size_t)(2 + n * S_ARGS_PER_SALE), sizeof(*argv));
    size_t *alen = calloc((size_t)(2 + n * S_ARGS_PER_SALE), sizeof(*alen));
    char(*keys)[S_KEY_MAX] = calloc((size_t)n, sizeof(*keys));
    char count[16], ts[24];
    int rc = -1, argc = 2, good = 0;
    if (!argv || !alen || !keys)
        goto out_free;
    for (int i = 0; i < n; i++) {
        size_t plen = 0;
        const char *sale_id = bus_stream_field(&entries[i], "sale_id", NULL);
        const char *store = bus_stream_field(&entries[i], "store", NULL);
        const char *bday = bus_stream_field(&entries[i], "bday", NULL);
        const char *payload = bus_stream_field(&entries[i], "payload", &plen);
        if (!sale_id || !s_store_ok(store) || !bday || !payload) {
            __atomic_add_fetch(self->c_bad_entries, 1, __ATOMIC_RELAXED);
            bus_error("inventory.bad_entry", "stream entry %s is not a sale; skipped",
                      entries[i].id);
            continue;
        }
        snprintf(keys[good], S_KEY_MAX, "sale:{%s}:%s", store, sale_id);
        const char *args[S_ARGS_PER_SALE] = {keys[good], payload, store, bday};
        for (int k = 0; k < S_ARGS_PER_SALE; k++) {
            argv[argc] = args[k];
            alen[argc++] = k == 1 ? plen : strlen(args[k]);
        }
        good++;
    }
    if (good == 0) {
        rc = 0;
        goto out_free;
    }
    snprintf(count, sizeof(count), "%d", good);
    snprintf(ts, sizeof(ts), "%" PRId64, bus_now_ms());
    argv[0] = count;
    alen[0] = strlen(count);
    argv[1] = ts;
    alen[1] = strlen(ts);
    redisReply *r = bus_redis_evalsha(self->wredis, self->wapply, 0, argc, argv, alen);
    if (!r)
        goto out_free; /* Redis trouble: stays pending, retried */
    if (r->type == REDIS_REPLY_ARRAY) {
        rc = 0;
        __atomic_add_fetch(self->c_applied, good, __ATOMIC_RELAXED);
        for (size_t i = 0; i + 3 < r->elements; i += 4) {
            bus_val_t *event = bus_val_new_map();
            bus_val_map_set_str(event, "store", r->element[i]->str);
            bus_val_map_set_str(event, "sku", r->element[i + 1]->str);
            bus_val_map_set_int(event, "balance", r->element[i + 2]->integer);
            bus_val_map_set_int(event, "threshold", r->element[i + 3]->integer);
            bus_pub_publish(self->wpub, "stock.low", "stock.low", &event);
            __atomic_add_fetch(self->c_low, 1, __ATOMIC_RELAXED);
        }
    } else
        bus_error("inventory.apply", "batch of %d: %s", good,
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
out_free:
    free(argv);
    free(alen);
    free(keys);
    return rc;
}

int main(int argc, char **argv)
{
    int exit_code;
    bus_config_t *config = svc_config_load(S_PROGRAM, s_options, true, argc, argv, &exit_code);
    svc_core_t core;
    if (!config || svc_core_start(&core, config, S_PROGRAM, true) != 0)
        return config ? 1 : exit_code;
    s_inv_t self;
    memset(&self, 0, sizeof(self));
    self.svc = core.svc;
    self.redis = core.redis;
    self.wredis = core.wredis;
    self.pub = core.pub;
    self.wpub = core.wpub;
    self.import = bus_redis_script(self.redis, import_lua);
    self.move = bus_redis_script(self.redis, move_lua);
    self.wapply = bus_redis_script(self.wredis, apply_lua);
    bus_stats_t *stats = bus_service_stats(self.svc);
    self.c_rows_ok = bus_stats_counter(stats, "catalog_rows_applied");
    self.c_rows_bad = bus_stats_counter(stats, "catalog_rows_rejected");
    self.c_moves = bus_stats_counter(stats, "stock_movements");
    self.c_applied = bus_stats_counter(stats, "sales_applied");
    self.c_low = bus_stats_counter(stats, "low_stock_events");
    self.c_bad_entries = bus_stats_counter(stats, "bad_stream_entries");
    bus_service_on(self.svc, "store.add", s_store_add, &self);
    bus_service_on(self.svc, "catalog.import", s_import, &self);
    bus_service_on(self.svc, "catalog.get", s_catalog_get, &self);
    bus_service_on(self.svc, "catalog.snapshot", s_snapshot, &self);
    bus_service_on(self.svc, "stock.get", s_stock_get, &self);
    bus_service_on(self.svc, "stock.receive", s_receive, &self);
    bus_service_on(self.svc, "stock.adjust", s_adjust, &self);
    bus_service_on(self.svc, "stock.count", s_count, &self);
    bus_service_on(self.svc, "stock.transfer", s_transfer, &self);
    bus_service_on(self.svc, "stock.history", s_history, &self);
    bus_service_on(self.svc, "stock.reorder", s_reorder, &self);
    self.worker =
        svc_consumer_start(config, self.svc, self.wredis, S_STREAM, S_GROUP, s_apply, &self);
    int rc = self.worker ? 0 : 1;
    if (self.worker)
        svc_core_run(&core, NULL, NULL);
    bus_stream_worker_stop(&self.worker);
    bus_info("inventory.stopping", "applied=%" PRId64, *self.c_applied);
    svc_core_stop(&core);
    return rc;
}
