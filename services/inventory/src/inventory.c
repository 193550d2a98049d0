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

    Redis does not roll back a script that fails halfway, so every argument
    is checked twice before the first write: here (the payload decodes, ids
    are well formed, quantities are whole numbers within S_QTY_MAX) and again
    in the script (numbers are exact integers, no balance leaves
    S_BALANCE_MAX, the range where Lua's doubles are exact). A sale that can
    never apply is handed back to the stream reader as rejected and parked
    in the dead-letter stream; the rest of its batch applies.

    Stores may hold 100k SKUs, so nothing here makes one round trip per SKU:
    per-SKU reads are pipelined a page at a time, and every reply that lists
    things is a page bounded in bytes (S_PAGE_BYTES, well under the 1 MiB
    payload limit) with a cursor to continue.
    =========================================================================
*/
#include <bus/bus.h>
#include "svc_main.h"
#include <errno.h>
#include <pos/barcode.h>
#include <pos/money.h>
#include <pos/tax.h>
#include <pos/text.h>
#include <pos/ticket.h>
#include <time.h>
#include "apply_lua.h"
#include "import_lua.h"
#include "move_lua.h"

#define S_PROGRAM         "inventory"
#define S_GROUP           "inventory"
#define S_ID_MAX          16 /* store ids */
#define S_SKU_MAX         POS_SKU_MAX
#define S_REF_MAX         64 /* move ids (bytes) */
#define S_REF_CHARS       64 /* supplier references (characters) */
#define S_DAY_LEN         10 /* YYYY-MM-DD */
#define S_NUM_MAX         24 /* an int64 as text */
#define S_WHY_MAX         160
#define S_IMPORT_ROWS_MAX 5000
#define S_SNAPSHOT_MAX    1000
#define S_HISTORY_MAX     1000
#define S_HISTORY_DEFAULT 100
#define S_MOVE_ID_TTL_S   "2592000" /* 30 days: resends come within seconds, not months */
#define S_DAY_MS          86400000LL
#define S_WINDOW_MAX      365
#define S_RETRY_MS        300 /* retry hint when Redis is down or refusing writes */

/* One line or one movement moves at most 10^9 pieces or grams; a SKU's stock stays within
   10^12. Both far below 2^53, where Lua numbers stop being exact integers. */
#define S_QTY_MAX     1000000000LL
#define S_BALANCE_MAX 1000000000000LL

/* Paged replies stop before S_PAGE_BYTES (a client may ask for less with max_bytes, down to
   S_PAGE_BYTES_MIN); with the largest single item on top they stay far below the 1 MiB payload
   limit. stock.get and stock.reorder walk the stock hash S_SCAN_STEP SKUs at a time. */
#define S_PAGE_BYTES     (512 * 1024)
#define S_PAGE_BYTES_MIN (16 * 1024)
#define S_SCAN_STEP      1000
#define S_INT_BYTES      9 /* the longest MessagePack integer */

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "inventory", 0, 0, "name this service registers under"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* The fields of a catalog item, in the order stored and imported: the one list of them (the
   import script gets the names from here). The first two must stay sku and barcode. */
typedef enum { S_TEXT, S_INT, S_BOOL } s_field_type_t;
#define S_ITEM_FIELDS(X)                                                                           \
    X(SKU, "sku", S_TEXT)                                                                          \
    X(BARCODE, "barcode", S_TEXT)                                                                  \
    X(NAME, "name", S_TEXT)                                                                        \
    X(PRICE, "price", S_INT)                                                                       \
    X(TAX_RATE, "tax_rate_bp", S_INT)                                                              \
    X(UNIT, "unit", S_TEXT)                                                                        \
    X(CATEGORY, "category", S_TEXT)                                                                \
    X(SUPPLIER, "supplier", S_TEXT)                                                                \
    X(THRESHOLD, "threshold", S_INT)                                                               \
    X(MEMBER_PRICE, "member_price", S_INT)                                                         \
    X(ACTIVE, "active", S_BOOL)

#define S_FIELD_ENUM(id, name, type) S_F_##id,
enum { S_ITEM_FIELDS(S_FIELD_ENUM) S_F_COUNT };
#define S_FIELD_NAME(id, name, type) name,
static const char *const s_field_names[S_F_COUNT] = {S_ITEM_FIELDS(S_FIELD_NAME)};
#define S_FIELD_TYPE(id, name, type) type,
static const s_field_type_t s_field_types[S_F_COUNT] = {S_ITEM_FIELDS(S_FIELD_TYPE)};
_Static_assert(S_F_SKU == 0 && S_F_BARCODE == 1, "import.lua expects sku and barcode first");

typedef struct {
    bus_service_t *svc;
    bus_redis_t *redis, *wredis;
    bus_pub_t *pub;  /* main thread */
    bus_pub_t *wpub; /* worker thread */
    int import, move, wapply;
    bus_stream_worker_t *worker;
    /* worker thread: why each entry of the current batch was rejected */
    char (*why)[S_WHY_MAX];
    int why_cap;
    int64_t *c_rows_ok, *c_rows_bad, *c_moves, *c_applied, *c_low, *c_bad_entries;
} s_inv_t;

/* ---- checks -------------------------------------------------------------- */

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

/*  Why text s is not a valid field of at most max_chars characters (written into buf), or NULL
    when it is. Limits are in characters: 120 Chinese characters are as good as 120 letters. */
static const char *s_text_why(char *buf, size_t size, const char *field, const char *s,
                              size_t max_chars, bool required)
{
    if (!s || !*s) {
        if (!required)
            return NULL;
        snprintf(buf, size, "%s: required (at most %zu characters)", field, max_chars);
        return buf;
    }
    int chars = pos_text_chars(s, SIZE_MAX);
    if (chars < 0)
        snprintf(buf, size, "%s: not valid UTF-8 text, or has control characters", field);
    else if ((size_t)chars > max_chars)
        snprintf(buf, size, "%s: %d characters, at most %zu", field, chars, max_chars);
    else
        return NULL;
    return buf;
}

/*  Answer a failed Redis call and free r: no reply (connection lost, in backoff) or an error
    that passes by itself (out of memory, read-only replica, failed save) is unavailable with a
    retry hint; any other error reply is internal. Returns -1. */
static int s_fail(s_inv_t *self, bus_service_t *svc, redisReply *r, const char *what)
{
    int rc;
    if (!r)
        rc = bus_service_unavailable(svc, S_RETRY_MS, "%s: storage unavailable, retry: %s", what,
                                     bus_redis_errstr(self->redis));
    else if (bus_redis_reply_transient(r))
        rc = bus_service_unavailable(svc, S_RETRY_MS, "%s: storage refusing writes, retry: %s",
                                     what, r->str);
    else
        rc = bus_service_error(svc, BUS_ERR_INTERNAL, "%s failed: %s", what,
                               r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r)
        freeReplyObject(r);
    return rc;
}

/* ---- paged replies --------------------------------------------------------- */

/*  The byte budget of one page: max_bytes from the request within [S_PAGE_BYTES_MIN,
    S_PAGE_BYTES], S_PAGE_BYTES when absent. */
static size_t s_page_budget(const bus_val_t *body)
{
    int64_t want = S_PAGE_BYTES;
    bus_val_map_get_int(body, "max_bytes", &want);
    if (want < S_PAGE_BYTES_MIN)
        want = S_PAGE_BYTES_MIN;
    if (want > S_PAGE_BYTES)
        want = S_PAGE_BYTES;
    return (size_t)want;
}

/*  Encoded size of a MessagePack string of len bytes. */
static size_t s_str_bytes(size_t len)
{
    return len + (len < 32 ? 1 : len < 256 ? 2 : len < 65536 ? 3 : 5);
}

/*  Encoded size of v (scratch is reused between calls); SIZE_MAX on allocation failure, which
    ends the page. */
static size_t s_val_bytes(const bus_val_t *v, bus_buf_t *scratch)
{
    bus_buf_reset(scratch);
    return bus_val_encode(v, scratch) == 0 ? scratch->len : SIZE_MAX;
}

/*  A cursor of the stock hash walk: "0" to start, else the decimal cursor Redis gave. */
static bool s_cursor_ok(const char *cursor)
{
    size_t len = strlen(cursor);
    return len > 0 && len < S_NUM_MAX && strspn(cursor, "0123456789") == len;
}

/* ---- stores -------------------------------------------------------------- */

/*  0 if store is registered; otherwise -1 with the error set (unknown_store, or unavailable
    when Redis could not say). field names the request key in the message. */
static int s_store_check(s_inv_t *self, bus_service_t *svc, const char *store, const char *field)
{
    redisReply *r = bus_redis_command(self->redis, "SISMEMBER %s %s", BUS_KEY_STORES, store);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_fail(self, svc, r, "store lookup");
    bool known = r->integer == 1;
    freeReplyObject(r);
    return known ? 0
                 : bus_service_error(svc, "unknown_store", "%s: store '%s' is not registered",
                                     field, store);
}

/*  store.add: register a store (idempotent: adding it again only sets its name). */
static int s_store_add(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *name = bus_val_map_get_str(bus_msg_body(req), "name");
    char why[S_WHY_MAX], key[BUS_KEY_MAX];
    if (!s_store_ok(store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store: 1-%d letters, digits or _",
                                 S_ID_MAX);
    if (s_text_why(why, sizeof(why), "name", name, POS_NAME_CHARS, false))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", why);
    redisReply *r = bus_redis_command(self->redis, "SADD %s %s", BUS_KEY_STORES, store);
    if (!bus_redis_reply_ok(r))
        return s_fail(self, svc, r, "store.add");
    freeReplyObject(r);
    r = bus_redis_command(self->redis, "HSET %s name %s", bus_key_store(key, store),
                          name && *name ? name : store);
    if (!bus_redis_reply_ok(r))
        return s_fail(self, svc, r, "store.add");
    freeReplyObject(r);
    bus_val_map_set_str(reply, "store", store);
    return 0;
}

/* ---- catalog ------------------------------------------------------------- */

/* One import row as the script gets it: values point into the request or into num. */
typedef struct {
    const char *v[S_F_COUNT];
    char num[S_F_COUNT][S_NUM_MAX];
    char key[BUS_KEY_MAX];
} s_row_t;

/*  Parse a whole number 0..S_QTY_MAX; false if it is anything else. */
static bool s_count_parse(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < 0 || v > S_QTY_MAX)
        return false;
    *out = v;
    return true;
}

/*  Validate one import row into out. Returns NULL when valid, else the reason (in why). */
static const char *s_check_row(const bus_val_t *row, s_row_t *out, char *why, size_t size)
{
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
    if (!s_sku_ok(sku)) {
        snprintf(why, size, "sku: 1-%d letters, digits, '_', '-' or '.'", S_SKU_MAX);
        return why;
    }
    if (barcode && *barcode && (err = pos_gtin_check(barcode)) != POS_OK) {
        snprintf(why, size, "barcode %.20s: %s", barcode, pos_strerror(err));
        return why;
    }
    if (s_text_why(why, size, "name", name, POS_NAME_CHARS, true))
        return why;
    if ((err = pos_money_parse(price, false, &fen)) != POS_OK) {
        snprintf(why, size, "price '%.20s': %s", price ? price : "", pos_strerror(err));
        return why;
    }
    char rate_text[S_NUM_MAX];
    snprintf(rate_text, sizeof(rate_text), "%s", rate ? rate : "");
    size_t rl = strlen(rate_text);
    if (rl && rate_text[rl - 1] == '%')
        rate_text[rl - 1] = '\0';
    /* a percentage with up to 2 decimals is exactly basis points */
    if (pos_money_parse(rate_text, false, &bp) != POS_OK || bp > POS_BP_100PCT) {
        snprintf(why, size, "tax_rate: a percentage 0-100 with at most 2 decimals (13, 13%%, 5.5)");
        return why;
    }
    if (!unit || (strcmp(unit, "pcs") && strcmp(unit, "kg"))) {
        snprintf(why, size, "unit: pcs or kg");
        return why;
    }
    if (s_text_why(why, size, "category", category, POS_CATEGORY_CHARS, true) ||
        s_text_why(why, size, "supplier", supplier, POS_SUPPLIER_CHARS, false))
        return why;
    if (threshold && *threshold && !s_count_parse(threshold, &thr)) {
        snprintf(why, size, "threshold: a whole number 0-%lld", (long long)S_QTY_MAX);
        return why;
    }
    if (member && *member && pos_money_parse(member, false, &member_fen) != POS_OK) {
        snprintf(why, size, "member_price: a price like 12.50");
        return why;
    }
    bool on = !active || !*active || !strcmp(active, "1") || !strcmp(active, "true") ||
              !strcmp(active, "yes");
    if (active && *active && !on && strcmp(active, "0") && strcmp(active, "false") &&
        strcmp(active, "no")) {
        snprintf(why, size, "active: 1/0, true/false or yes/no");
        return why;
    }
    const int64_t numbers[S_F_COUNT] = {[S_F_PRICE] = fen,
                                        [S_F_TAX_RATE] = bp,
                                        [S_F_THRESHOLD] = thr,
                                        [S_F_MEMBER_PRICE] = member_fen};
    for (int f = 0; f < S_F_COUNT; f++)
        if (s_field_types[f] == S_INT) {
            snprintf(out->num[f], S_NUM_MAX, "%" PRId64, numbers[f]);
            out->v[f] = out->num[f];
        }
    out->v[S_F_SKU] = sku;
    out->v[S_F_BARCODE] = barcode ? barcode : "";
    out->v[S_F_NAME] = name;
    out->v[S_F_UNIT] = unit;
    out->v[S_F_CATEGORY] = category;
    out->v[S_F_SUPPLIER] = supplier ? supplier : "";
    out->v[S_F_ACTIVE] = on ? "1" : "0";
    bus_key_catalog_item(out->key, sku);
    return NULL;
}

/*  catalog.import: validate every row, apply the valid ones in one script call, report the
    others by line. Idempotent: rows equal to what is stored change nothing. */
static int s_import(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    bus_val_t *rows = bus_val_map_get(bus_msg_body(req), "rows");
    size_t n = bus_val_size(rows);
    if (bus_val_type(rows) != BUS_VAL_ARR || n > S_IMPORT_ROWS_MAX)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "rows: an array of at most %d",
                                 S_IMPORT_ROWS_MAX);
    const size_t head = 5 + S_F_COUNT; /* 3 keys, row count, field count, field names */
    s_row_t *parsed = calloc(n ? n : 1, sizeof(*parsed));
    const char **argv = calloc(head + n * (S_F_COUNT + 1), sizeof(*argv));
    bus_val_t *rejected = bus_val_new_arr();
    int rc = -1;
    if (!parsed || !argv || !rejected) {
        rc = bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
        goto out_free;
    }
    char count[S_NUM_MAX], nfields[S_NUM_MAX], why[S_WHY_MAX];
    argv[0] = BUS_KEY_CATALOG_VERSION;
    argv[1] = BUS_KEY_CATALOG_BARCODE;
    argv[2] = BUS_KEY_CATALOG_INDEX;
    argv[3] = count;
    argv[4] = nfields;
    for (int f = 0; f < S_F_COUNT; f++)
        argv[5 + f] = s_field_names[f];
    size_t good = 0, argc = head;
    for (size_t i = 0; i < n; i++) {
        bus_val_t *row = bus_val_arr_get(rows, i);
        int64_t line = (int64_t)i + 1;
        bus_val_map_get_int(row, "line", &line);
        if (s_check_row(row, &parsed[good], why, sizeof(why))) {
            bus_val_t *bad = bus_val_new_map();
            bus_val_map_set_int(bad, "line", line);
            bus_val_map_set_str(bad, "reason", why);
            bus_val_arr_push(rejected, &bad);
            (*self->c_rows_bad)++;
            continue;
        }
        argv[argc++] = parsed[good].key;
        for (int f = 0; f < S_F_COUNT; f++)
            argv[argc++] = parsed[good].v[f];
        good++;
    }
    snprintf(count, sizeof(count), "%zu", good);
    snprintf(nfields, sizeof(nfields), "%d", S_F_COUNT);
    redisReply *r = bus_redis_evalsha(self->redis, self->import, 3, (int)argc, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        rc = s_fail(self, svc, r, "catalog.import");
        goto out_free;
    }
    int64_t changed = r->element[0]->integer, version = r->element[1]->integer;
    freeReplyObject(r);
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
    rc = 0;
out_free:
    bus_val_destroy(&rejected);
    free(parsed);
    free(argv);
    return rc;
}

/*  Queue the read of catalog item sku on redis (pipelined). 0, or -1 if it could not be queued. */
static int s_item_append(bus_redis_t *redis, const char *sku)
{
    char key[BUS_KEY_MAX];
    const char *argv[2 + S_F_COUNT] = {"HMGET", bus_key_catalog_item(key, sku)};
    for (int f = 0; f < S_F_COUNT; f++)
        argv[2 + f] = s_field_names[f];
    return argv[1] ? bus_redis_appendargv(redis, 2 + S_F_COUNT, argv, NULL) : -1;
}

/*  The item in an HMGET reply of s_item_append, as a map (numbers as ints, active as bool), or
    NULL when there is no such item. */
static bus_val_t *s_item_from(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != S_F_COUNT ||
        r->element[S_F_SKU]->type != REDIS_REPLY_STRING)
        return NULL;
    bus_val_t *item = bus_val_new_map();
    for (size_t f = 0; f < S_F_COUNT; f++) {
        const char *v = r->element[f]->type == REDIS_REPLY_STRING ? r->element[f]->str : "";
        if (s_field_types[f] == S_INT)
            bus_val_map_set_int(item, s_field_names[f], strtoll(v, NULL, 10));
        else if (s_field_types[f] == S_BOOL)
            bus_val_map_set_bool(item, s_field_names[f], strcmp(v, "1") == 0);
        else
            bus_val_map_set_str(item, s_field_names[f], v);
    }
    return item;
}

/*  Read one catalog item. Returns the reply (caller frees; NULL or an error reply on failure:
    hand it to s_fail) and the item in *item (NULL when absent). */
static redisReply *s_item(s_inv_t *self, const char *sku, bus_val_t **item)
{
    *item = NULL;
    if (s_item_append(self->redis, sku) != 0)
        return NULL;
    redisReply *r = bus_redis_get_reply(self->redis);
    if (bus_redis_reply_ok(r))
        *item = s_item_from(r);
    return r;
}

/*  catalog.get: one item by SKU or barcode. */
static int s_catalog_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const char *code = bus_val_map_get_str(bus_msg_body(req), "code");
    if (!s_sku_ok(code))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "code (SKU or barcode) required");
    bus_val_t *item;
    redisReply *r = s_item(self, code, &item);
    if (!bus_redis_reply_ok(r))
        return s_fail(self, svc, r, "catalog.get");
    freeReplyObject(r);
    if (!item) {
        r = bus_redis_command(self->redis, "HGET %s %s", BUS_KEY_CATALOG_BARCODE, code);
        if (!bus_redis_reply_ok(r))
            return s_fail(self, svc, r, "catalog.get");
        if (r->type == REDIS_REPLY_STRING && s_sku_ok(r->str)) {
            redisReply *ri = s_item(self, r->str, &item);
            freeReplyObject(r);
            if (!bus_redis_reply_ok(ri))
                return s_fail(self, svc, ri, "catalog.get");
            r = ri;
        }
        freeReplyObject(r);
    }
    if (!item)
        return bus_service_error(svc, "not_found", "no item with SKU or barcode %s", code);
    bus_val_map_set(reply, "item", &item);
    return 0;
}

/*  catalog.snapshot: the catalog in SKU order, after the SKU `after`, at most count items and
    S_PAGE_BYTES per page; `more` says whether to ask again with after = `last`. */
static int s_snapshot(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *after = bus_val_map_get_str(body, "after");
    int64_t count = S_SNAPSHOT_MAX;
    bus_val_map_get_int(body, "count", &count);
    if (count < 1 || count > S_SNAPSHOT_MAX)
        count = S_SNAPSHOT_MAX;
    if (after && *after && !s_sku_ok(after))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "after: a SKU (or empty to start)");
    size_t budget = s_page_budget(body);
    redisReply *v = bus_redis_command(self->redis, "GET %s", BUS_KEY_CATALOG_VERSION);
    if (!bus_redis_reply_ok(v))
        return s_fail(self, svc, v, "catalog.snapshot");
    int64_t version = v->type == REDIS_REPLY_STRING ? atoll(v->str) : 0;
    freeReplyObject(v);
    char start[S_SKU_MAX + 2];
    snprintf(start, sizeof(start), "%s%s", after && *after ? "(" : "-",
             after && *after ? after : "");
    /* one more than asked for tells whether there is more */
    redisReply *r = bus_redis_command(self->redis, "ZRANGEBYLEX %s %s + LIMIT 0 %lld",
                                      BUS_KEY_CATALOG_INDEX, start, (long long)count + 1);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_fail(self, svc, r, "catalog.snapshot");
    size_t want = r->elements < (size_t)count ? r->elements : (size_t)count, queued = 0;
    while (queued < want && s_item_append(self->redis, r->element[queued]->str) == 0)
        queued++;
    bus_val_t *items = bus_val_new_arr();
    bus_buf_t scratch = {0};
    const char *last = after ? after : "";
    size_t bytes = 0, i = 0;
    bool full = false, down = queued < want;
    redisReply *failed = NULL;
    for (i = 0; i < queued; i++) {
        redisReply *ri = bus_redis_get_reply(self->redis);
        if (!bus_redis_reply_ok(ri)) {
            if (!failed)
                failed = ri;
            else if (ri)
                freeReplyObject(ri);
            down = true;
            if (!ri)
                break; /* the connection is gone and the other replies with it */
            continue;
        }
        bus_val_t *item = full || down ? NULL : s_item_from(ri);
        freeReplyObject(ri);
        size_t size = item ? s_val_bytes(item, &scratch) : 0;
        if (item && bytes > 0 && (size == SIZE_MAX || bytes + size > budget)) {
            full = true; /* read the remaining replies, keep none */
            bus_val_destroy(&item);
        }
        if (full || down)
            continue;
        if (item) {
            bytes += size;
            bus_val_arr_push(items, &item);
        }
        last = r->element[i]->str;
    }
    bus_buf_free(&scratch);
    if (down) {
        bus_val_destroy(&items);
        freeReplyObject(r);
        return s_fail(self, svc, failed, "catalog.snapshot");
    }
    bus_val_map_set_int(reply, "version", version);
    bus_val_map_set_str(reply, "last", last);
    bus_val_map_set_bool(reply, "more", full || r->elements > (size_t)count);
    bus_val_map_set(reply, "items", &items);
    freeReplyObject(r);
    return 0;
}

/* ---- stock --------------------------------------------------------------- */

/*  Run one movement script for store/sku. Fills reply with balance; publishes stock.low. */
static int s_move(s_inv_t *self, bus_service_t *svc, const char *store, const char *sku,
                  const char *kind, int64_t qty, const char *reason, const char *ref,
                  const char *move_id, bus_val_t *reply)
{
    bus_val_t *item;
    redisReply *r = s_item(self, sku, &item);
    if (!bus_redis_reply_ok(r))
        return s_fail(self, svc, r, "stock movement");
    freeReplyObject(r);
    if (!item)
        return bus_service_error(svc, "unknown_sku", "SKU %s is not in the catalog", sku);
    int64_t threshold = 0;
    bus_val_map_get_int(item, s_field_names[S_F_THRESHOLD], &threshold);
    bus_val_destroy(&item);
    char k_stock[BUS_KEY_MAX], k_moves[BUS_KEY_MAX], k_id[BUS_KEY_MAX];
    char q[S_NUM_MAX], ts[S_NUM_MAX], thr[S_NUM_MAX], qmax[S_NUM_MAX], bmax[S_NUM_MAX];
    if (!bus_key_stock(k_stock, store) || !bus_key_moves(k_moves, store, sku) ||
        !bus_key_move_id(k_id, store, move_id, kind))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store, sku or move_id too long");
    snprintf(q, sizeof(q), "%" PRId64, qty);
    snprintf(ts, sizeof(ts), "%" PRId64, bus_now_ms());
    snprintf(thr, sizeof(thr), "%" PRId64, threshold);
    snprintf(qmax, sizeof(qmax), "%lld", (long long)S_QTY_MAX);
    snprintf(bmax, sizeof(bmax), "%lld", (long long)S_BALANCE_MAX);
    const char *argv[] = {k_stock, k_moves,         k_id, sku, kind, q, reason, ref, ts,
                          thr,     S_MOVE_ID_TTL_S, qmax, bmax};
    r = bus_redis_evalsha(self->redis, self->move, 3, (int)(sizeof(argv) / sizeof(argv[0])), argv,
                          NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return s_fail(self, svc, r, "stock movement");
    if (strcmp(r->element[0]->str, "bad") == 0) {
        int rc = bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s",
                                   r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str
                                                                             : "refused");
        freeReplyObject(r);
        return rc;
    }
    if (r->elements != 4)
        return s_fail(self, svc, r, "stock movement");
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
                                 "%s, sku and move_id (idempotency key, 1-%d letters, digits or "
                                 "_-.:) required",
                                 store_key, S_REF_MAX);
    return s_store_check(self, svc, *store, store_key);
}

/*  A quantity of a movement request: present, whole, within [min, S_QTY_MAX], not 0 unless
    zero_ok. -1 with the error set otherwise. */
static int s_qty_arg(bus_service_t *svc, const bus_val_t *body, const char *field, int64_t min,
                     bool zero_ok, int64_t *qty)
{
    if (!bus_val_map_get_int(body, field, qty) || *qty < min || *qty > S_QTY_MAX ||
        (*qty == 0 && !zero_ok))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "%s: a whole number from %" PRId64 " to %lld%s", field, min,
                                 (long long)S_QTY_MAX, zero_ok ? "" : ", not 0");
    return 0;
}

/*  stock.receive: goods in from a supplier. */
static int s_receive(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store, *sku, *move_id, *ref = bus_val_map_get_str(b, "supplier_ref");
    int64_t qty = 0;
    char why[S_WHY_MAX];
    if (s_move_args(self, svc, b, "store", &store, &sku, &move_id) != 0 ||
        s_qty_arg(svc, b, "qty", 1, false, &qty) != 0)
        return -1;
    if (s_text_why(why, sizeof(why), "supplier_ref", ref, S_REF_CHARS, true))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", why);
    return s_move(self, svc, store, sku, "receive", qty, "", ref, move_id, reply);
}

/*  stock.adjust: damaged, lost, expired, found or other, by a signed delta. */
static int s_adjust(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store, *sku, *move_id, *reason = bus_val_map_get_str(b, "reason");
    int64_t delta = 0;
    if (s_move_args(self, svc, b, "store", &store, &sku, &move_id) != 0 ||
        s_qty_arg(svc, b, "delta", -S_QTY_MAX, false, &delta) != 0)
        return -1;
    if (!reason ||
        (strcmp(reason, "damaged") && strcmp(reason, "lost") && strcmp(reason, "expired") &&
         strcmp(reason, "found") && strcmp(reason, "other")))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "reason: damaged, lost, expired, found or other");
    return s_move(self, svc, store, sku, "adjust", delta, reason, "", move_id, reply);
}

/*  stock.count: the counted quantity replaces the balance; the difference is the variance. */
static int s_count(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store, *sku, *move_id;
    int64_t qty = -1;
    if (s_move_args(self, svc, b, "store", &store, &sku, &move_id) != 0 ||
        s_qty_arg(svc, b, "qty", 0, true, &qty) != 0)
        return -1;
    return s_move(self, svc, store, sku, "count", qty, "count", "", move_id, reply);
}

/*  stock.transfer: out of one store, into another, under one move id. */
static int s_transfer(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *from, *to, *sku, *move_id;
    int64_t qty = 0;
    if (s_move_args(self, svc, b, "from", &from, &sku, &move_id) != 0)
        return -1;
    to = bus_val_map_get_str(b, "to");
    if (!s_store_ok(to) || strcmp(from, to) == 0)
        return bus_service_error(svc, "unknown_store", "to: another registered store");
    if (s_store_check(self, svc, to, "to") != 0 || s_qty_arg(svc, b, "qty", 1, false, &qty) != 0)
        return -1;
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

/*  One step of a walk over a store's stock hash: HSCAN from cursor, at most about step SKUs.
    Returns the reply (an array of 2: next cursor, [sku, qty, ...]) or NULL/an error reply for
    s_fail. */
static redisReply *s_stock_scan(bus_redis_t *redis, const char *key, const char *cursor,
                                size_t step)
{
    redisReply *r =
        bus_redis_command(redis, "HSCAN %s %s COUNT %lld", key, cursor, (long long)step);
    if (bus_redis_reply_ok(r) &&
        (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
         r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY)) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/*  SKUs per step so that two steps' worth of bytes fit a quarter of the budget: a step never
    carries a page far past its budget, even if HSCAN returns a few times more than asked. */
static size_t s_scan_step(size_t budget, size_t per_sku)
{
    size_t step = budget / (4 * per_sku);
    return step < 1 ? 1 : step > S_SCAN_STEP ? S_SCAN_STEP : step;
}

/*  stock.get: one SKU's quantity, or the store's stock as {sku: qty} in pages: start without a
    cursor (or "0"), continue with the cursor of the previous page while `more`. A SKU may come
    twice across pages (Redis SCAN), with the same quantity unless it moved meanwhile. */
static int s_stock_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = bus_val_map_get_str(body, "store");
    const char *sku = bus_val_map_get_str(body, "sku");
    const char *cursor = bus_val_map_get_str(body, "cursor");
    char key[BUS_KEY_MAX], next[S_NUM_MAX];
    if (!s_store_ok(store) || (sku && !s_sku_ok(sku)))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required; sku optional");
    if (cursor && !s_cursor_ok(cursor))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "cursor: as returned by stock.get");
    bus_key_stock(key, store);
    bus_val_map_set_str(reply, "store", store);
    if (sku) {
        redisReply *r = bus_redis_command(self->redis, "HGET %s %s", key, sku);
        if (!bus_redis_reply_ok(r))
            return s_fail(self, svc, r, "stock.get");
        bus_val_map_set_str(reply, "sku", sku);
        bus_val_map_set_int(reply, "qty", r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0);
        freeReplyObject(r);
        return 0;
    }
    size_t budget = s_page_budget(body), per_sku = s_str_bytes(S_SKU_MAX) + S_INT_BYTES;
    size_t step = s_scan_step(budget, per_sku), bytes = 0;
    snprintf(next, sizeof(next), "%s", cursor ? cursor : "0");
    bus_val_t *all = bus_val_new_map();
    do {
        redisReply *r = s_stock_scan(self->redis, key, next, step);
        if (!bus_redis_reply_ok(r)) {
            bus_val_destroy(&all);
            return s_fail(self, svc, r, "stock.get");
        }
        snprintf(next, sizeof(next), "%s", r->element[0]->str);
        redisReply *pairs = r->element[1];
        for (size_t i = 0; i + 1 < pairs->elements; i += 2) {
            bus_val_map_set_int(all, pairs->element[i]->str, atoll(pairs->element[i + 1]->str));
            bytes += s_str_bytes(pairs->element[i]->len) + S_INT_BYTES;
        }
        freeReplyObject(r);
    } while (strcmp(next, "0") != 0 && bytes + 2 * step * per_sku <= budget);
    bus_val_map_set(reply, "stock", &all);
    bus_val_map_set_str(reply, "cursor", next);
    bus_val_map_set_bool(reply, "more", strcmp(next, "0") != 0);
    return 0;
}

/*  A stream id such as "1700000000000-0" (for paging stock.history). */
static bool s_stream_id_ok(const char *id)
{
    size_t len = strlen(id), digits = strspn(id, "0123456789");
    return len < BUS_STREAM_ID_MAX && digits > 0 &&
           (id[digits] == '\0' || (id[digits] == '-' && id[digits + 1] &&
                                   strspn(id + digits + 1, "0123456789") == len - digits - 1));
}

/*  stock.history: a SKU's movements, newest first, at most count and S_PAGE_BYTES per page;
    `more` says whether to ask again with before = `last`. */
static int s_history(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = bus_val_map_get_str(body, "store");
    const char *sku = bus_val_map_get_str(body, "sku");
    const char *before = bus_val_map_get_str(body, "before");
    int64_t count = S_HISTORY_DEFAULT;
    bus_val_map_get_int(body, "count", &count);
    if (count < 1 || count > S_HISTORY_MAX)
        count = S_HISTORY_MAX;
    if (!s_store_ok(store) || !s_sku_ok(sku))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and sku required");
    if (before && *before && !s_stream_id_ok(before))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "before: a move id (ms-seq)");
    size_t budget = s_page_budget(body);
    char key[BUS_KEY_MAX], end[BUS_STREAM_ID_MAX + 2];
    snprintf(end, sizeof(end), "%s%s", before && *before ? "(" : "+",
             before && *before ? before : "");
    /* one more than asked for tells whether there is more */
    redisReply *r = bus_redis_command(self->redis, "XREVRANGE %s %s - COUNT %lld",
                                      bus_key_moves(key, store, sku), end, (long long)count + 1);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_fail(self, svc, r, "stock.history");
    bus_val_t *list = bus_val_new_arr();
    bus_buf_t scratch = {0};
    size_t bytes = 0, i;
    const char *last = "";
    for (i = 0; i < r->elements && i < (size_t)count; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        redisReply *f = e->element[1];
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "id", e->element[0]->str);
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str, *v = f->element[k + 1]->str;
            if (!strcmp(name, "delta") || !strcmp(name, "balance") || !strcmp(name, "ts"))
                bus_val_map_set_int(row, name, atoll(v));
            else
                bus_val_map_set_str(row, name, v);
        }
        size_t size = s_val_bytes(row, &scratch);
        if (bytes > 0 && (size == SIZE_MAX || bytes + size > budget)) {
            bus_val_destroy(&row);
            break;
        }
        bytes += size;
        bus_val_arr_push(list, &row);
        last = e->element[0]->str;
    }
    bus_buf_free(&scratch);
    bus_val_map_set(reply, "moves", &list);
    bus_val_map_set_str(reply, "last", last);
    bus_val_map_set_bool(reply, "more", i < r->elements);
    freeReplyObject(r);
    return 0;
}

#define S_ROW_BYTES 128 /* the most one reorder row takes encoded */

/*  The suggestion for one SKU: ceil(sold * lead / window) + threshold - have, or 0 when that is
    not positive (or does not fit in 64 bits, which no real store reaches). */
static int64_t s_suggest(int64_t have, int64_t sold, int64_t threshold, int64_t window,
                         int64_t lead)
{
    int64_t need;
    if (sold < 0 || __builtin_mul_overflow(sold, lead, &need) ||
        __builtin_add_overflow(need, window - 1, &need))
        return 0;
    need /= window;
    if (__builtin_add_overflow(need, threshold, &need) || __builtin_sub_overflow(need, have, &need))
        return 0;
    return need > 0 ? need : 0;
}

/*  Read sold quantities and thresholds of the SKUs in pairs (an HSCAN page: sku, qty, ...) with
    one pipelined round trip, and add a row to rows for each SKU to reorder. Returns the bytes
    added, or -1 on a Redis failure (*failed set to the reply to report, possibly NULL). */
static int64_t s_reorder_step(s_inv_t *self, const char *store, redisReply *pairs,
                              const char **hmget, int window, int64_t lead, bus_val_t *rows,
                              redisReply **failed)
{
    char sold_key[BUS_KEY_MAX], item_key[BUS_KEY_MAX];
    size_t n = pairs->elements / 2, sent = 0;
    redisReply **got = calloc(2 * n + 1, sizeof(*got)); /* per SKU: sold days, threshold */
    *failed = NULL;
    if (!got)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *sku = pairs->element[2 * i]->str;
        hmget[1] = bus_key_sold(sold_key, store, sku);
        if (!hmget[1] || !bus_key_catalog_item(item_key, sku) ||
            bus_redis_appendargv(self->redis, 2 + window, hmget, NULL) != 0)
            break;
        sent++;
        if (bus_redis_append(self->redis, "HGET %s %s", item_key, s_field_names[S_F_THRESHOLD]) !=
            0)
            break;
        sent++;
    }
    bool down = sent < 2 * n;
    for (size_t c = 0; c < sent; c++) {
        got[c] = bus_redis_get_reply(self->redis);
        if (!bus_redis_reply_ok(got[c]) || (c % 2 == 0 && got[c]->type != REDIS_REPLY_ARRAY)) {
            down = true;
            if (!*failed) {
                *failed = got[c];
                got[c] = NULL;
            }
            if (!*failed)
                break; /* the connection is gone and the other replies with it */
        }
    }
    int64_t bytes = 0;
    for (size_t i = 0; i < n && !down; i++) {
        redisReply *s = got[2 * i], *t = got[2 * i + 1];
        int64_t sold = 0, threshold = t->type == REDIS_REPLY_STRING ? atoll(t->str) : 0;
        for (size_t d = 0; d < s->elements; d++)
            if (s->element[d]->type == REDIS_REPLY_STRING &&
                __builtin_add_overflow(sold, atoll(s->element[d]->str), &sold))
                sold = INT64_MAX;
        const char *sku = pairs->element[2 * i]->str;
        int64_t have = atoll(pairs->element[2 * i + 1]->str);
        int64_t need = s_suggest(have, sold, threshold, window, lead);
        if (need <= 0)
            continue;
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "sku", sku);
        bus_val_map_set_int(row, "stock", have);
        bus_val_map_set_int(row, "threshold", threshold);
        bus_val_map_set_int(row, "sold_in_window", sold);
        bus_val_map_set_int(row, "suggested", need);
        bus_val_arr_push(rows, &row);
        bytes += S_ROW_BYTES;
    }
    for (size_t c = 0; c < sent; c++)
        if (got[c])
            freeReplyObject(got[c]);
    free(got);
    return down ? -1 : bytes;
}

/*  stock.reorder: suggest an order for every SKU whose stock would fall below its threshold
    within the lead time at the sales velocity of the last window days: ceil(sold * lead /
    window) + threshold - stock, when positive. Paged like stock.get (cursor, more): each step
    of SKUs costs one HSCAN and one pipelined round trip, whatever the window. */
static int s_reorder(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_inv_t *self = arg;
    const bus_val_t *b = bus_msg_body(req);
    const char *store = bus_val_map_get_str(b, "store");
    const char *cursor = bus_val_map_get_str(b, "cursor");
    int64_t window = 7, lead = 3;
    bus_val_map_get_int(b, "window_days", &window);
    bus_val_map_get_int(b, "lead_days", &lead);
    if (!s_store_ok(store) || window < 1 || window > S_WINDOW_MAX || lead < 0 ||
        lead > S_WINDOW_MAX)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "store; window_days 1-%d; lead_days 0-%d", S_WINDOW_MAX,
                                 S_WINDOW_MAX);
    if (cursor && !s_cursor_ok(cursor))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "cursor: as returned by stock.reorder");
    char days[S_WINDOW_MAX][S_DAY_LEN + 1], key[BUS_KEY_MAX], next[S_NUM_MAX];
    const char *hmget[2 + S_WINDOW_MAX] = {"HMGET"};
    time_t now = time(NULL);
    for (int64_t d = 0; d < window; d++) {
        time_t t = now - (time_t)(d * (S_DAY_MS / 1000));
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(days[d], sizeof(days[d]), "%Y-%m-%d", &tm);
        hmget[2 + d] = days[d];
    }
    size_t budget = s_page_budget(b), step = s_scan_step(budget, S_ROW_BYTES), bytes = 0;
    bus_key_stock(key, store);
    snprintf(next, sizeof(next), "%s", cursor ? cursor : "0");
    bus_val_t *rows = bus_val_new_arr();
    do {
        redisReply *r = s_stock_scan(self->redis, key, next, step), *failed = NULL;
        if (!bus_redis_reply_ok(r)) {
            bus_val_destroy(&rows);
            return s_fail(self, svc, r, "stock.reorder");
        }
        snprintf(next, sizeof(next), "%s", r->element[0]->str);
        int64_t added =
            s_reorder_step(self, store, r->element[1], hmget, (int)window, lead, rows, &failed);
        freeReplyObject(r);
        if (added < 0) {
            bus_val_destroy(&rows);
            return s_fail(self, svc, failed, "stock.reorder");
        }
        bytes += (size_t)added;
    } while (strcmp(next, "0") != 0 && bytes + 2 * step * S_ROW_BYTES <= budget);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set(reply, "rows", &rows);
    bus_val_map_set_str(reply, "cursor", next);
    bus_val_map_set_bool(reply, "more", strcmp(next, "0") != 0);
    return 0;
}

/* ---- applying sales (worker thread) ------------------------------------ */

/*  What the script reads of one live line (the sku is borrowed from the decoded sale). */
typedef struct {
    const char *sku;
    int64_t qty;
    bool is_return;
} s_line_t;

/*  A checked sale: its document and its live lines. */
typedef struct {
    bus_val_t *doc;
    s_line_t *lines; /* nlines, heap */
    size_t nlines;
} s_sale_t;

static void s_sale_clear(s_sale_t *s)
{
    bus_val_destroy(&s->doc);
    free(s->lines);
    memset(s, 0, sizeof(*s));
}

/*  Decode the sale document of a stream entry and check it line by line into out. 0 if it can
    apply; -1 with the reason in why if it never will (it is then parked, not retried). */
static int s_sale_of(const bus_stream_entry_t *e, s_sale_t *out, char *why, size_t size)
{
    static const char *const names[] = {"voided", "sku", "qty", "return_of"};
    size_t plen = 0;
    const char *sale_id = bus_stream_field(e, "sale_id", NULL);
    const char *store = bus_stream_field(e, "store", NULL);
    const char *bday = bus_stream_field(e, "bday", NULL);
    const char *payload = bus_stream_field(e, "payload", &plen);
    bus_reject_t rej = BUS_REJ_NONE;
    if (!s_id_ok(sale_id, POS_SALE_ID_MAX, "-.") || !s_store_ok(store) ||
        !s_id_ok(bday, S_DAY_LEN, "-") || !payload) {
        snprintf(why, size, "not a sale entry: needs sale_id, store, bday (YYYY-MM-DD), payload");
        return -1;
    }
    out->doc = bus_val_decode(payload, plen, NULL, &rej);
    if (!out->doc || bus_val_type(out->doc) != BUS_VAL_MAP) {
        snprintf(why, size, "payload: not a sale document (%s)",
                 out->doc ? "not a map" : bus_reject_name(rej));
        return -1;
    }
    bus_val_t *lines = bus_val_map_get(out->doc, "lines");
    if (lines && (bus_val_type(lines) != BUS_VAL_ARR || bus_val_size(lines) > POS_LINES_MAX)) {
        snprintf(why, size, "lines: an array of at most %d", POS_LINES_MAX);
        return -1;
    }
    size_t n = bus_val_size(lines);
    out->lines = n ? malloc(n * sizeof(*out->lines)) : NULL;
    if (n && !out->lines) {
        snprintf(why, size, "out of memory for %zu lines", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        bus_val_t *l = bus_val_arr_get(lines, i);
        const bus_val_t *v[4];
        bool voided = false;
        bus_val_map_pick(l, names, 4, v);
        bus_val_get_bool(v[0], &voided);
        if (bus_val_type(l) == BUS_VAL_MAP && voided)
            continue;
        s_line_t *line = &out->lines[out->nlines];
        line->sku = bus_val_get_str(v[1], NULL);
        if (bus_val_type(l) != BUS_VAL_MAP || !s_sku_ok(line->sku))
            snprintf(why, size, "line %zu: no valid sku", i + 1);
        else if (!bus_val_get_int(v[2], &line->qty) || line->qty == 0 || line->qty < -S_QTY_MAX ||
                 line->qty > S_QTY_MAX)
            snprintf(why, size, "line %zu: qty must be a whole number within +-%lld, not 0", i + 1,
                     (long long)S_QTY_MAX);
        else {
            line->is_return = v[3] != NULL;
            out->nlines++;
            continue;
        }
        return -1;
    }
    return 0;
}

/*  Script arguments gathered in one arena: each is recorded as an offset and turned into a
    pointer only once the arena stops growing (appending may move it). */
typedef struct {
    bus_buf_t arena;
    size_t *off, *len;
    const char **argv;
    int argc, cap;
} s_args_t;

/*  Append len bytes of s as the next argument. 0, or -1 on allocation failure. */
static int s_args_add(s_args_t *a, const char *s, size_t len)
{
    if (a->argc == a->cap) {
        int cap = a->cap ? a->cap * 2 : 256;
        size_t *off = realloc(a->off, (size_t)cap * sizeof(*off));
        if (off)
            a->off = off;
        size_t *lens = off ? realloc(a->len, (size_t)cap * sizeof(*lens)) : NULL;
        if (!lens)
            return -1;
        a->len = lens;
        a->cap = cap;
    }
    a->off[a->argc] = a->arena.len;
    a->len[a->argc] = len;
    if (bus_buf_append(&a->arena, s, len) != 0 || bus_buf_append(&a->arena, "", 1) != 0)
        return -1;
    a->argc++;
    return 0;
}

/*  Append a C string (-1 for NULL, e.g. a key that did not fit). */
static int s_args_str(s_args_t *a, const char *s)
{
    return s ? s_args_add(a, s, strlen(s)) : -1;
}

/*  Append an integer in decimal. */
static int s_args_int(s_args_t *a, int64_t v)
{
    char text[S_NUM_MAX];
    int len = snprintf(text, sizeof(text), "%" PRId64, v);
    return s_args_add(a, text, (size_t)len);
}

/*  The arguments as pointers (valid until the next add); NULL on allocation failure. */
static const char **s_args_argv(s_args_t *a)
{
    const char **argv = realloc(a->argv, (size_t)(a->argc ? a->argc : 1) * sizeof(*argv));
    if (!argv)
        return NULL;
    a->argv = argv;
    for (int i = 0; i < a->argc; i++)
        argv[i] = (const char *)a->arena.data + a->off[i];
    return argv;
}

static void s_args_free(s_args_t *a)
{
    bus_buf_free(&a->arena);
    free(a->off);
    free(a->len);
    free(a->argv);
    memset(a, 0, sizeof(*a));
}

/*  Append the keys of every store and SKU the checked sales idx[0..k) move, each once (see
    apply.lua), and note in place[] (one per live line, in order) where each line's SKU is in
    that list (1-based). 0, -1 on allocation failure. */
static int s_sku_args(s_args_t *a, bus_stream_entry_t *entries, s_sale_t *sales, const int *idx,
                      int k, int *place)
{
    zhashx_t *seen = zhashx_new(); /* "store\x1fsku" -> place */
    s_args_t list = {0};
    int rc = seen ? 0 : -1, count = 0;
    for (int j = 0; j < k && rc == 0; j++) {
        const char *store = bus_stream_field(&entries[idx[j]], "store", NULL);
        size_t slen = strlen(store); /* checked: at most S_ID_MAX */
        const s_sale_t *s = &sales[idx[j]];
        for (size_t i = 0; i < s->nlines && rc == 0; i++) {
            char name[S_ID_MAX + 1 + S_SKU_MAX + 1], key[BUS_KEY_MAX];
            const char *sku = s->lines[i].sku;
            memcpy(name, store, slen);
            name[slen] = '\x1f'; /* in neither a store id nor a SKU */
            snprintf(name + slen + 1, sizeof(name) - slen - 1, "%s", sku);
            uintptr_t at = (uintptr_t)zhashx_lookup(seen, name);
            if (!at) {
                at = (uintptr_t)++count;
                rc = zhashx_insert(seen, name, (void *)at) || s_args_str(&list, store) ||
                             s_args_str(&list, bus_key_stock(key, store)) ||
                             s_args_str(&list, sku) ||
                             s_args_str(&list, bus_key_moves(key, store, sku)) ||
                             s_args_str(&list, bus_key_sold(key, store, sku)) ||
                             s_args_str(&list, bus_key_catalog_item(key, sku))
                         ? -1
                         : 0;
            }
            *place++ = (int)at;
        }
    }
    if (rc == 0)
        rc = s_args_int(a, count);
    for (int i = 0; i < list.argc && rc == 0; i++)
        rc = s_args_add(a, (const char *)list.arena.data + list.off[i], list.len[i]);
    s_args_free(&list);
    zhashx_destroy(&seen);
    return rc;
}

/*  Append the script arguments of one checked sale (see apply.lua), its lines' SKUs at place.
    -1 on allocation failure. */
static int s_sale_args(s_args_t *a, const bus_stream_entry_t *e, const s_sale_t *sale,
                       const int *place)
{
    const char *sale_id = bus_stream_field(e, "sale_id", NULL);
    const char *store = bus_stream_field(e, "store", NULL);
    char key[BUS_KEY_MAX];
    int rc = s_args_str(a, bus_key_sale(key, store, sale_id)) || s_args_str(a, sale_id) ||
             s_args_str(a, bus_stream_field(e, "bday", NULL)) ||
             s_args_int(a, (int64_t)sale->nlines);
    for (size_t i = 0; i < sale->nlines && rc == 0; i++)
        rc = s_args_int(a, place[i]) || s_args_int(a, sale->lines[i].qty) ||
             s_args_str(a, sale->lines[i].is_return ? "return" : "sale");
    return rc ? -1 : 0;
}

/*  Park entry e: it will never apply (why must live until the stream library has parked it). */
static void s_reject(s_inv_t *self, bus_stream_entry_t *e, const char *why)
{
    e->rejected = why;
    __atomic_add_fetch(self->c_bad_entries, 1, __ATOMIC_RELAXED);
    bus_warn("inventory.rejected", "stream entry %s will never apply, parked: %s", e->id, why);
}

/*  Apply the checked sales idx[0..k) of entries in one script call; the script's refusals are
    rejected. Returns 0, or -1 when the script did not answer (Redis down or refusing writes, or
    an error reply, its text in err): all stay pending. */
static int s_apply_some(s_inv_t *self, bus_stream_entry_t *entries, s_sale_t *sales, const int *idx,
                        int k, char *err, size_t size)
{
    s_args_t a = {0};
    int rc = -1;
    size_t nlines = 0;
    for (int j = 0; j < k; j++)
        nlines += sales[idx[j]].nlines;
    int *place = malloc((nlines ? nlines : 1) * sizeof(*place));
    if (!place || s_args_int(&a, k) || s_args_int(&a, bus_now_ms()) || s_args_int(&a, S_QTY_MAX) ||
        s_args_int(&a, S_BALANCE_MAX) || s_args_str(&a, s_field_names[S_F_THRESHOLD]) ||
        s_sku_args(&a, entries, sales, idx, k, place))
        goto out_free_args;
    for (int j = 0, at = 0; j < k; at += (int)sales[idx[j]].nlines, j++)
        if (s_sale_args(&a, &entries[idx[j]], &sales[idx[j]], place + at) != 0)
            goto out_free_args;
    const char **argv = s_args_argv(&a);
    if (!argv)
        goto out_free_args;
    redisReply *r = bus_redis_evalsha(self->wredis, self->wapply, 0, a.argc, argv, a.len);
    if (!r || bus_redis_reply_transient(r)) {
        bus_warn("inventory.apply", "batch of %d stays pending: %s", k,
                 r ? r->str : bus_redis_errstr(self->wredis));
        goto out_free_reply;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[1]->type != REDIS_REPLY_ARRAY) {
        /* the script refuses a sale that can never apply in its answer; an error reply is about
           Redis or the script (a wrong key type, a bug, a permission), not about a sale: parking
           would drop good sales for good, so the batch stays pending and the worker backs off */
        snprintf(err, size, "script: %s", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        bus_error("inventory.apply", "batch of %d stays pending: %s", k, err);
        goto out_free_reply;
    }
    redisReply *refused = r->element[0], *low = r->element[1];
    for (size_t i = 0; i + 1 < refused->elements; i += 2) {
        long long at = refused->element[i]->integer;
        if (at < 0 || at >= k)
            continue;
        bus_stream_entry_t *e = &entries[idx[at]];
        snprintf(self->why[idx[at]], S_WHY_MAX, "%s",
                 refused->element[i + 1]->type == REDIS_REPLY_STRING ? refused->element[i + 1]->str
                                                                     : "refused");
        s_reject(self, e, self->why[idx[at]]);
    }
    __atomic_add_fetch(self->c_applied, k - (int)(refused->elements / 2), __ATOMIC_RELAXED);
    for (size_t i = 0; i + 3 < low->elements; i += 4) {
        bus_val_t *event = bus_val_new_map();
        bus_val_map_set_str(event, "store", low->element[i]->str);
        bus_val_map_set_str(event, "sku", low->element[i + 1]->str);
        bus_val_map_set_int(event, "balance", low->element[i + 2]->integer);
        bus_val_map_set_int(event, "threshold", low->element[i + 3]->integer);
        bus_pub_publish(self->wpub, "stock.low", "stock.low", &event);
        __atomic_add_fetch(self->c_low, 1, __ATOMIC_RELAXED);
    }
    rc = 0;
out_free_reply:
    if (r)
        freeReplyObject(r);
out_free_args:
    s_args_free(&a);
    free(place);
    return rc;
}

/*  The stream worker's apply function (see bus/stream.h): check every entry, reject those that
    can never apply, apply the others in one script call. A script error that is not transient
    should not happen (the checks come first); if it does, the sales are tried one by one so
    that only the one that fails is parked. */
static int s_apply(bus_stream_entry_t *entries, int n, void *arg)
{
    s_inv_t *self = arg;
    if (n > self->why_cap) {
        char(*why)[S_WHY_MAX] = realloc(self->why, (size_t)n * sizeof(*why));
        if (!why)
            return -1;
        self->why = why;
        self->why_cap = n;
    }
    s_sale_t *sales = calloc((size_t)n, sizeof(*sales));
    int *idx = calloc((size_t)n, sizeof(*idx));
    int rc = -1, k = 0;
    if (!sales || !idx)
        goto out_free;
    for (int i = 0; i < n; i++) {
        if (s_sale_of(&entries[i], &sales[i], self->why[i], S_WHY_MAX) == 0)
            idx[k++] = i;
        else
            s_reject(self, &entries[i], self->why[i]);
    }
    rc = k ? s_apply_some(self, entries, sales, idx, k, self->why[idx[0]], S_WHY_MAX) : 0;
out_free:
    for (int i = 0; sales && i < n; i++)
        s_sale_clear(&sales[i]);
    free(sales);
    free(idx);
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
    /* Who may call what (docs/protocol.md): store setup, catalog and stock movements are the
       back office's (operators, and services acting for them); reads are open to every role. */
    enum { OPS = BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE };
    static const bus_method_t methods[] = {
        {"store.add", s_store_add, BUS_METHOD_CHANGE, OPS},
        {"catalog.import", s_import, BUS_METHOD_CHANGE, OPS},
        {"catalog.get", s_catalog_get, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"catalog.snapshot", s_snapshot, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"stock.get", s_stock_get, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"stock.receive", s_receive, BUS_METHOD_CHANGE, OPS},
        {"stock.adjust", s_adjust, BUS_METHOD_CHANGE, OPS},
        {"stock.count", s_count, BUS_METHOD_CHANGE, OPS},
        {"stock.transfer", s_transfer, BUS_METHOD_CHANGE, OPS},
        {"stock.history", s_history, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"stock.reorder", s_reorder, BUS_METHOD_READ, BUS_ROLES_ALL},
        {NULL, NULL, 0, 0}};
    if (bus_service_methods(self.svc, methods, &self) != 0)
        bus_error("inventory.start", "cannot register methods: out of memory");
    else
        self.worker = svc_consumer_start(config, self.svc, self.wredis, BUS_KEY_SALES_STREAM,
                                         S_GROUP, s_apply, &self);
    int rc = self.worker ? 0 : 1;
    if (self.worker)
        svc_core_run(&core, NULL, NULL);
    bus_stream_worker_stop(&self.worker);
    bus_info("inventory.stopping", "applied=%" PRId64, *self.c_applied);
    free(self.why);
    svc_core_stop(&core);
    return rc;
}
