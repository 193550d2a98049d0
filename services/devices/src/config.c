/*  =========================================================================
    config - versioned register configuration, per store

    A store's registers all run one configuration: receipt header and
    footer, cash rounding, tax id, the ticket discount cap, the cashier
    table (PIN hashes, roles, permissions) and the promotions. Operators
    change it piece by piece (config.set, cashier.add/disable, promo.add/
    end); every change is one Lua script on the store's own keys (cfg:{S},
    cfg:{S}:cashiers, cfg:{S}:promos, cfg:{S}:live: one hash tag) that
    bumps the store's version by exactly one, then config.<S>.changed is
    published. A register that sees the event, or whose heartbeat shows an
    older version, asks config.get and gets the whole document of one
    version (read by one script, so never a mix of two).

    Exactly once: the write methods go through the reply cache like every
    state-changing method, and the script also claims the request id
    (cfg:{S}:req:<id>) in the same atomic step as the bump, so even a retry
    whose first reply was lost before the cache kept it bumps nothing.

    Rows are kept as MessagePack maps in the shape config.get returns them
    (promotions with their ended flag added), so a read decodes and passes
    them on. A row that changes (a cashier disabled, a promotion ended) is
    read here and replaced by the script only if it is still what was read
    (compare and set), so two operators never lose each other's change.

    PINs never reach this service: posctl hashes them (node_pin_hash) and
    only the hash is sent, checked here with node_pin_hash_valid.

    Load: operators' changes are rare; config.get runs when a register
    starts or its version is behind, and answers just "unchanged" when the
    register already has the current version. A document holds at most
    1000 cashiers and 64 live promotions: well under the 1 MiB payload.
    =========================================================================
*/
#include "config.h"
#include <bus/keys.h>
#include <pos/sale.h>
#include <node/cashier.h>
#include <pos/text.h>
#include <pos/ticket.h>
#include <stdarg.h>
#include "config_change_lua.h"
#include "config_read_lua.h"

#define S_RETRY_MS          500                /* hint sent with `unavailable` */
#define S_INT_MAX           9007199254740991LL /* 2^53 - 1: exact in Lua and JSON */
#define S_NUM_MAX           24
#define S_WHY_MAX           200
#define S_LINES_MAX         8  /* receipt header or footer lines */
#define S_LINE_CHARS        48 /* characters of a receipt line */
#define S_TAX_ID_CHARS      32
#define S_CAP_DEFAULT_BP    1000 /* a ticket discount above 10% needs discount_over_cap */
#define S_BP_MAX            10000
#define S_CASHIER_ID_MAX    NODE_CASHIER_ID_MAX
#define S_CASHIER_NAME_MAX  NODE_CASHIER_NAME_MAX
#define S_CASHIERS_MAX      NODE_CASHIER_TABLE_MAX
#define S_PROMO_ID_MAX      POS_PROMO_ID_MAX
#define S_PROMOS_MAX        POS_PROMOS_MAX
#define S_PROMO_QTY_MAX     1000000 /* pieces of a qty_break or buy_x_get_y */
#define S_REQ_ID_MAX        64
#define S_CAS_TRIES         5 /* compare-and-set attempts before answering unavailable */
#define S_SET_ARGS          (8 + 2 * 6)
#define S_DEVICES_MAX       16  /* peripherals of one register */
#define S_DEVICE_TEXT_MAX   255 /* bytes of a transport spec or an options text */
#define S_ERR_NOT_FOUND     "not_found"
#define S_ERR_CONFLICT      "conflict"
#define S_ERR_TOO_MANY      "too_many"
#define S_ERR_UNKNOWN_STORE "unknown_store"

struct devices_config {
    bus_redis_t *redis;
    bus_pub_t *pub;
    int change, read;
    char req_ttl[S_NUM_MAX];
    int64_t *c_changes, *c_gets, *c_unchanged, *c_bad, *c_other_register, *c_redis_errors;
};

/*  The promotion kinds, in the order of config.get's documentation. */
static const char *const s_kinds[] = {"percent",     "amount",       "qty_break",
                                      "buy_x_get_y", "member_price", NULL};
enum { S_PERCENT, S_AMOUNT, S_QTY_BREAK, S_BUY_X_GET_Y, S_MEMBER_PRICE };

/* The integer fields of a promotion, in the order stored and returned. */
static const char *const s_promo_ints[] = {"percent_bp", "amount",   "qty",    "free_qty",
                                           "price",      "start_ms", "end_ms", NULL};

/* ---- keys: cfg:{S}<suffix>, all in the store's hash tag (docs/data.md) --------------------- */

static char *s_key(char *buf, const char *store, const char *suffix)
{
    return bus_key_cfg(buf, store, suffix);
}

/* ---- answers ------------------------------------------------------------------------------ */

static int s_redis_failed(devices_config_t *self, bus_service_t *svc, redisReply *r,
                          const char *what)
{
    bus_stats_inc(self->c_redis_errors, 1);
    return bus_service_redis_failed(svc, self->redis, r, S_RETRY_MS, what);
}

/*  bad_request naming the field, counted. */
static int s_bad(devices_config_t *self, bus_service_t *svc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_bad(devices_config_t *self, bus_service_t *svc, const char *fmt, ...)
{
    char why[S_WHY_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    bus_stats_inc(self->c_bad, 1);
    return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", why);
}

/* ---- checks ------------------------------------------------------------------------------- */

/*  The string under key, if it is printable UTF-8 of at most chars characters and max_bytes
    bytes without NUL; NULL otherwise. Absent: dflt. */
static const char *s_text_field(const bus_val_t *body, const char *key, size_t chars,
                                size_t max_bytes, const char *dflt)
{
    const bus_val_t *v = bus_val_map_get(body, key);
    if (!v)
        return dflt;
    size_t len = 0;
    const char *s = bus_val_get_str(v, &len);
    if (!s || len != strlen(s) || len > max_bytes || pos_text_chars(s, chars) < 0)
        return NULL;
    return s;
}

/*  An integer field within min..max (absent: 0, which must then be within too). */
static bool s_int_field(const bus_val_t *body, const char *key, int64_t min, int64_t max,
                        int64_t *out)
{
    const bus_val_t *v = bus_val_map_get(body, key);
    *out = 0;
    if (v && !bus_val_get_int(v, out))
        return false;
    return *out >= min && *out <= max;
}

/*  Is the list of receipt lines well formed (S_LINES_MAX strings of S_LINE_CHARS)? */
static bool s_lines_ok(const bus_val_t *v)
{
    if (bus_val_type(v) != BUS_VAL_ARR || bus_val_size(v) > S_LINES_MAX)
        return false;
    for (size_t i = 0; i < bus_val_size(v); i++) {
        size_t len = 0;
        const char *s = bus_val_get_str(bus_val_arr_get(v, i), &len);
        if (!s || len != strlen(s) || pos_text_chars(s, S_LINE_CHARS) < 0)
            return false;
    }
    return true;
}

/*  The store an operator's or service's request is about: body "store", an id of a registered
    store (the stores set, as inventory and sales keep it). 0, or -1 after answering. */
static int s_store_arg(devices_config_t *self, bus_service_t *svc, const bus_val_t *body,
                       const char **store)
{
    *store = bus_val_map_get_str(body, "store");
    if (!bus_identity_id_ok(*store))
        return s_bad(self, svc, "store: an id (1-%d letters, digits, '_') required",
                     BUS_ID_PART_MAX);
    redisReply *r = bus_redis_command(self->redis, "SISMEMBER %s %s", BUS_KEY_STORES, *store);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "store lookup");
    bool known = r->integer == 1;
    freeReplyObject(r);
    if (!known)
        return bus_service_error(svc, S_ERR_UNKNOWN_STORE, "store: '%s' is not registered", *store);
    return 0;
}

/* ---- one change --------------------------------------------------------------------------- */

/*  Publish config.<S>.changed {store, version}. */
static void s_publish(devices_config_t *self, const char *store, int64_t version)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_int(body, "version", version);
    char topic[BUS_TOPIC_MAX];
    snprintf(topic, sizeof(topic), "config.%s.changed", store);
    bus_pub_publish(self->pub, topic, "config.changed", &body);
}

/*  Run config_change.lua: op on store's table (suffix, NULL for none) with extra arguments
    after the fixed ones. On success (or a request already done) the reply gets {store, version}
    and the event is published. 0, 1 when a compared row changed meanwhile (read and try
    again), or -1 after answering. */
static int s_change(devices_config_t *self, bus_service_t *svc, const bus_msg_t *req,
                    const char *store, const char *suffix, const char *op, int limit, int nextra,
                    const char **extra, const size_t *extra_len, bus_val_t *reply)
{
    const char *id = bus_msg_id(req);
    if (!pos_sale_id_ok(id, S_REQ_ID_MAX, "-_"))
        return s_bad(self, svc,
                     "request id: 1-%d letters, digits, '-' or '_' (the idempotency key)",
                     S_REQ_ID_MAX);
    char cfg[BUS_KEY_MAX], table[BUS_KEY_MAX], live[BUS_KEY_MAX], rkey[BUS_KEY_MAX];
    char suffix_req[S_REQ_ID_MAX + 8], now[S_NUM_MAX], lim[S_NUM_MAX];
    snprintf(suffix_req, sizeof(suffix_req), ":req:%s", id);
    s_key(cfg, store, "");
    s_key(table, store, suffix ? suffix : "");
    s_key(live, store, ":live");
    s_key(rkey, store, suffix_req);
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *argv[S_SET_ARGS] = {cfg, table, live, rkey, op, self->req_ttl, now, lim};
    size_t lens[S_SET_ARGS];
    int argc = 8;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    for (int i = 0; i < nextra && argc < S_SET_ARGS; i++, argc++) {
        argv[argc] = extra[i];
        lens[argc] = extra_len ? extra_len[i] : strlen(extra[i]);
    }
    redisReply *r = bus_redis_evalsha(self->redis, self->change, 4, argc, argv, lens);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return s_redis_failed(self, svc, r, "config change");
    const char *status = r->element[0]->str;
    int64_t version =
        r->elements > 1 && r->element[1]->type == REDIS_REPLY_INTEGER ? r->element[1]->integer : -1;
    int rc = 0;
    if (strcmp(status, "stale") == 0)
        rc = 1;
    else if (strcmp(status, "conflict") == 0)
        rc = bus_service_error(svc, S_ERR_CONFLICT, "id: exists already in store %s", store);
    else if (strcmp(status, "too_many") == 0)
        rc = bus_service_error(svc, S_ERR_TOO_MANY, "store %s has %d already (the most)", store,
                               limit);
    else if (version < 1 || (strcmp(status, "ok") && strcmp(status, "dup"))) {
        bus_stats_inc(self->c_redis_errors, 1);
        rc = bus_service_error(svc, BUS_ERR_INTERNAL, "config change: unexpected reply");
    } else {
        if (strcmp(status, "ok") == 0)
            bus_stats_inc(self->c_changes, 1);
        bus_val_map_set_str(reply, "store", store);
        bus_val_map_set_int(reply, "version", version);
        s_publish(self, store, version);
        bus_info("devices.config", "store=%s %s=%s version=%" PRId64 " request=%s", store, status,
                 op, version, id);
    }
    freeReplyObject(r);
    return rc;
}

/*  Encode row and run op with (id, row[, tail]). 0, or -1 after answering. */
static int s_put_row(devices_config_t *self, bus_service_t *svc, const bus_msg_t *req,
                     const char *store, const char *suffix, const char *op, int limit,
                     const char *id, const bus_val_t *row, const char *tail, bus_val_t *reply)
{
    bus_buf_t buf = {0};
    if (bus_val_encode(row, &buf) != 0) {
        bus_buf_free(&buf);
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    }
    const char *extra[] = {id, (const char *)buf.data, tail};
    size_t lens[] = {strlen(id), buf.len, tail ? strlen(tail) : 0};
    int rc = s_change(self, svc, req, store, suffix, op, limit, tail ? 3 : 2, extra, lens, reply);
    bus_buf_free(&buf);
    return rc == 1 ? bus_service_error(svc, BUS_ERR_INTERNAL, "unexpected stale row") : rc;
}

/*  The store's current version (0 when never configured), or -1 after answering. */
static int64_t s_version(devices_config_t *self, bus_service_t *svc, const char *store)
{
    char cfg[BUS_KEY_MAX];
    redisReply *r = bus_redis_command(self->redis, "HGET %s version", s_key(cfg, store, ""));
    if (!bus_redis_reply_ok(r) || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
        return s_redis_failed(self, svc, r, "config version");
    int64_t v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    return v;
}

/*  What replace does to a row: false when it is already so (nothing to change). */
typedef bool(s_mutate_fn)(bus_val_t *row, int64_t now);

/*  Change the row id of store's table (suffix) with mutate, if it is still what was read when
    the script runs (else read again). unlive: also drop it from the live promotions. Nothing to
    change: the reply has the current version, nothing is bumped. 0, or -1 after answering. */
static int s_replace(devices_config_t *self, bus_service_t *svc, const bus_msg_t *req,
                     const char *store, const char *suffix, const char *id, s_mutate_fn *mutate,
                     bool unlive, bus_val_t *reply)
{
    char table[BUS_KEY_MAX];
    s_key(table, store, suffix);
    for (int attempt = 0; attempt < S_CAS_TRIES; attempt++) {
        redisReply *r = bus_redis_command(self->redis, "HGET %s %s", table, id);
        if (!bus_redis_reply_ok(r) || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
            return s_redis_failed(self, svc, r, "config row");
        if (r->type == REDIS_REPLY_NIL) {
            freeReplyObject(r);
            return bus_service_error(svc, S_ERR_NOT_FOUND, "id: no '%s' in store %s", id, store);
        }
        bus_val_t *row = bus_val_decode(r->str, r->len, NULL, NULL);
        if (bus_val_type(row) != BUS_VAL_MAP) {
            bus_val_destroy(&row);
            freeReplyObject(r);
            return bus_service_error(svc, BUS_ERR_INTERNAL, "stored row '%s' is unreadable", id);
        }
        int rc = 0;
        bus_buf_t buf = {0};
        if (!mutate(row, bus_now_ms())) {
            int64_t v = s_version(self, svc, store);
            rc = v < 0 ? -1 : 0;
            if (rc == 0) {
                bus_val_map_set_str(reply, "store", store);
                bus_val_map_set_int(reply, "version", v);
                bus_val_map_set_bool(reply, "unchanged", true);
            }
        } else if (bus_val_encode(row, &buf) != 0)
            rc = bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
        else {
            const char *extra[] = {id, r->str, (const char *)buf.data, unlive ? "1" : "0"};
            size_t lens[] = {strlen(id), r->len, buf.len, 1};
            rc = s_change(self, svc, req, store, suffix, "replace", 0, 4, extra, lens, reply);
        }
        bus_buf_free(&buf);
        bus_val_destroy(&row);
        freeReplyObject(r);
        if (rc != 1)
            return rc;
    }
    return bus_service_unavailable(svc, S_RETRY_MS, "id: '%s' keeps changing; retry", id);
}

/* ---- a register's devices ------------------------------------------------------------------- */

static bool s_device_text_ok(const char *s, bool required)
{
    size_t n = s ? strlen(s) : 0;
    if ((required && n == 0) || n > S_DEVICE_TEXT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/*  Check a register's device list ([{name, driver, transport, options}], the --devices file's
    fields) and encode the rows as kept. 0, or -1 with why. */
static int s_devices_encode(const bus_val_t *list, bus_buf_t *out, char *why, size_t size)
{
    if (bus_val_type(list) != BUS_VAL_ARR || bus_val_size(list) > S_DEVICES_MAX) {
        snprintf(why, size, "devices: an array of at most %d devices", S_DEVICES_MAX);
        return -1;
    }
    bus_val_t *rows = bus_val_new_arr();
    int rc = rows ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < bus_val_size(list); i++) {
        const bus_val_t *d = bus_val_arr_get(list, i);
        const char *name = bus_val_map_get_str(d, "name");
        const char *driver = bus_val_map_get_str(d, "driver");
        const char *transport = bus_val_map_get_str(d, "transport");
        const char *options = bus_val_map_get_str(d, "options");
        bool dup = false;
        for (size_t k = 0; name && k < i; k++) {
            const char *other = bus_val_map_get_str(bus_val_arr_get(list, k), "name");
            dup = dup || (other && strcmp(other, name) == 0);
        }
        if (!name || !pos_sale_id_ok(name, 32, "_-") || dup || !driver ||
            !pos_sale_id_ok(driver, 32, "_") || !s_device_text_ok(transport, true) ||
            (strncmp(transport, "serial:/", 8) != 0 && strncmp(transport, "tcp:", 4) != 0) ||
            (options && !s_device_text_ok(options, false))) {
            snprintf(why, size,
                     "devices[%zu]: name (unique, 1-32 letters, digits, '_', '-'), driver, "
                     "transport (serial:/PATH,... or tcp:ADDRESS:PORT) and options (printable "
                     "ASCII, at most %d bytes)",
                     i, S_DEVICE_TEXT_MAX);
            rc = -1;
            break;
        }
        bus_val_t *row = bus_val_new_map();
        rc = !row || bus_val_map_set_str(row, "name", name) ||
             bus_val_map_set_str(row, "driver", driver) ||
             bus_val_map_set_str(row, "transport", transport) ||
             bus_val_map_set_str(row, "options", options ? options : "") ||
             bus_val_arr_push(rows, &row);
        bus_val_destroy(&row);
        if (rc)
            snprintf(why, size, "out of memory");
    }
    if (rc == 0 && bus_val_encode(rows, out) != 0) {
        snprintf(why, size, "out of memory");
        rc = -1;
    }
    bus_val_destroy(&rows);
    return rc;
}

/* ---- config.set --------------------------------------------------------------------------- */

static int s_set(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_config_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = NULL;
    const char *extra[S_SET_ARGS];
    size_t lens[S_SET_ARGS];
    int n = 0;
    bus_buf_t lines[2] = {{0}, {0}}, devbuf = {0};
    static const char *const line_keys[] = {"receipt_header", "receipt_footer"};
    char cap_text[S_NUM_MAX];
    int rc = 0;
    for (int i = 0; rc == 0 && i < 2; i++) {
        const bus_val_t *v = bus_val_map_get(body, line_keys[i]);
        if (!v)
            continue;
        if (!s_lines_ok(v))
            rc = s_bad(self, svc,
                       "%s: at most %d lines of at most %d characters (UTF-8, no control "
                       "characters)",
                       line_keys[i], S_LINES_MAX, S_LINE_CHARS);
        else if (bus_val_encode(v, &lines[i]) != 0)
            rc = bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
        else {
            extra[n] = line_keys[i];
            lens[n++] = strlen(line_keys[i]);
            extra[n] = (const char *)lines[i].data;
            lens[n++] = lines[i].len;
        }
    }
    const bus_val_t *cr = bus_val_map_get(body, "cash_rounding");
    bool rounding = false;
    if (rc == 0 && cr && !bus_val_get_bool(cr, &rounding))
        rc = s_bad(self, svc, "cash_rounding: true or false");
    else if (rc == 0 && cr) {
        extra[n] = "cash_rounding";
        lens[n++] = strlen("cash_rounding");
        extra[n] = rounding ? "1" : "0";
        lens[n++] = 1;
    }
    const char *tax_id = s_text_field(body, "tax_id", S_TAX_ID_CHARS, 4 * S_TAX_ID_CHARS, "");
    if (rc == 0 && !tax_id)
        rc = s_bad(self, svc, "tax_id: text of at most %d characters", S_TAX_ID_CHARS);
    else if (rc == 0 && bus_val_map_get(body, "tax_id")) {
        extra[n] = "tax_id";
        lens[n++] = strlen("tax_id");
        extra[n] = tax_id;
        lens[n++] = strlen(tax_id);
    }
    /* a register's peripherals: register + devices, kept as the field devices:<register> */
    const bus_val_t *devices = bus_val_map_get(body, "devices");
    const char *dreg = bus_val_map_get_str(body, "register");
    char dfield[8 + BUS_ID_PART_MAX + 1], dwhy[S_WHY_MAX];
    if (rc == 0 && (devices || bus_val_map_get(body, "register"))) {
        if (!devices || !dreg || !bus_identity_id_ok(dreg))
            rc = s_bad(self, svc, "devices need register (an id) and devices (an array)");
        else if (s_devices_encode(devices, &devbuf, dwhy, sizeof(dwhy)) != 0)
            rc = s_bad(self, svc, "%s", dwhy);
        else {
            snprintf(dfield, sizeof(dfield), "devices:%s", dreg);
            extra[n] = dfield;
            lens[n++] = strlen(dfield);
            extra[n] = (const char *)devbuf.data;
            lens[n++] = devbuf.len;
        }
    }
    int64_t cap = 0;
    if (rc == 0 && bus_val_map_get(body, "discount_cap_bp")) {
        if (!s_int_field(body, "discount_cap_bp", 0, S_BP_MAX, &cap))
            rc = s_bad(self, svc, "discount_cap_bp: an integer from 0 to %d", S_BP_MAX);
        else {
            snprintf(cap_text, sizeof(cap_text), "%" PRId64, cap);
            extra[n] = "discount_cap_bp";
            lens[n++] = strlen("discount_cap_bp");
            extra[n] = cap_text;
            lens[n++] = strlen(cap_text);
        }
    }
    if (rc == 0 && n == 0)
        rc = s_bad(self, svc,
                   "config.set: nothing to set (receipt_header, receipt_footer, cash_rounding, "
                   "tax_id, discount_cap_bp, register + devices)");
    if (rc == 0)
        rc = s_store_arg(self, svc, body, &store);
    if (rc == 0)
        rc = s_change(self, svc, req, store, NULL, "set", 0, n, extra, lens, reply);
    bus_buf_free(&lines[0]);
    bus_buf_free(&lines[1]);
    bus_buf_free(&devbuf);
    return rc == 0 ? 0 : -1;
}

/* ---- cashiers ----------------------------------------------------------------------------- */

/*  Check a permissions list (action names, each once) and copy it into row. 0 or -1. */
static int s_permissions(const bus_val_t *list, bus_val_t *row)
{
    if (bus_val_type(list) != BUS_VAL_ARR || bus_val_size(list) > NODE_ACTION__COUNT)
        return -1;
    uint32_t seen = 0;
    bus_val_t *copy = bus_val_new_arr();
    for (size_t i = 0; copy && i < bus_val_size(list); i++) {
        const char *name = bus_val_get_str(bus_val_arr_get(list, i), NULL);
        int action = name ? node_action_from_name(name) : -1;
        if (action < 0 || (seen & NODE_PERM(action))) {
            bus_val_destroy(&copy);
            return -1;
        }
        seen |= NODE_PERM(action);
        bus_val_t *s = bus_val_new_str(name);
        bus_val_arr_push(copy, &s);
    }
    return copy && bus_val_map_set(row, "permissions", &copy) == 0 ? 0 : -1;
}

static int s_cashier_add(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_config_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *id = bus_val_map_get_str(body, "id");
    const char *name = s_text_field(body, "name", S_CASHIER_NAME_MAX, S_CASHIER_NAME_MAX, NULL);
    const char *role = bus_val_map_get_str(body, "role");
    const char *pin_hash = bus_val_map_get_str(body, "pin_hash");
    const bus_val_t *perms = bus_val_map_get(body, "permissions");
    if (!pos_sale_id_ok(id, S_CASHIER_ID_MAX, "_"))
        return s_bad(self, svc, "id: 1-%d letters, digits or '_'", S_CASHIER_ID_MAX);
    if (!name || !*name)
        return s_bad(self, svc, "name: 1-%d bytes of UTF-8 text without control characters",
                     S_CASHIER_NAME_MAX);
    if (!role || node_role_from_name(role) < 0)
        return s_bad(self, svc, "role: cashier, supervisor or manager");
    if (!pin_hash || strlen(pin_hash) >= NODE_PIN_HASH_MAX || !node_pin_hash_valid(pin_hash))
        return s_bad(self, svc, "pin_hash: a PIN hash made by posctl (node_pin_hash), never a PIN");
    bus_val_t *row = bus_val_new_map();
    if (!row || bus_val_map_set_str(row, "id", id) || bus_val_map_set_str(row, "name", name) ||
        bus_val_map_set_str(row, "role", role) || bus_val_map_set_str(row, "pin_hash", pin_hash)) {
        bus_val_destroy(&row);
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    }
    if (perms && s_permissions(perms, row) != 0) {
        bus_val_destroy(&row);
        return s_bad(self, svc,
                     "permissions: action names, each once (void_line, return, price_override, "
                     "discount_over_cap, no_sale, x_report, z_report, refund_cash)");
    }
    bus_val_map_set_bool(row, "active", true);
    const char *store;
    int rc = s_store_arg(self, svc, body, &store);
    if (rc == 0)
        rc = s_put_row(self, svc, req, store, ":cashiers", "cashier", S_CASHIERS_MAX, id, row, NULL,
                       reply);
    if (rc == 0)
        bus_val_map_set_str(reply, "id", id);
    bus_val_destroy(&row);
    return rc;
}

static bool s_disable(bus_val_t *row, int64_t now)
{
    (void)now;
    bool active = false;
    bus_val_map_get_bool(row, "active", &active);
    return active && bus_val_map_set_bool(row, "active", false) == 0;
}

static int s_cashier_disable(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_config_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *id = bus_val_map_get_str(body, "id"), *store;
    if (!pos_sale_id_ok(id, S_CASHIER_ID_MAX, "_"))
        return s_bad(self, svc, "id: 1-%d letters, digits or '_'", S_CASHIER_ID_MAX);
    if (s_store_arg(self, svc, body, &store) != 0)
        return -1;
    int rc = s_replace(self, svc, req, store, ":cashiers", id, s_disable, false, reply);
    if (rc == 0)
        bus_val_map_set_str(reply, "id", id);
    return rc;
}

/* ---- promotions --------------------------------------------------------------------------- */

static int s_kind(const char *name)
{
    for (int k = 0; name && s_kinds[k]; k++)
        if (strcmp(name, s_kinds[k]) == 0)
            return k;
    return -1;
}

/*  The allowed range of each integer field of a promotion of kind (0..0 when unused). */
static void s_promo_range(int kind, const char *field, int64_t *min, int64_t *max)
{
    static const struct {
        int kind;
        const char *field;
        int64_t min, max;
    } used[] = {
        {S_PERCENT, "percent_bp", 1, S_BP_MAX},     {S_AMOUNT, "amount", 1, S_INT_MAX},
        {S_QTY_BREAK, "amount", 1, S_INT_MAX},      {S_QTY_BREAK, "qty", 2, S_PROMO_QTY_MAX},
        {S_BUY_X_GET_Y, "qty", 1, S_PROMO_QTY_MAX}, {S_BUY_X_GET_Y, "free_qty", 1, S_PROMO_QTY_MAX},
        {S_MEMBER_PRICE, "price", 1, S_INT_MAX}};
    *min = *max = 0;
    if (strcmp(field, "start_ms") == 0 || strcmp(field, "end_ms") == 0)
        *max = S_INT_MAX;
    for (size_t i = 0; i < sizeof(used) / sizeof(used[0]); i++)
        if (used[i].kind == kind && strcmp(used[i].field, field) == 0) {
            *min = used[i].min;
            *max = used[i].max;
        }
}

/*  Check a promo.add body and build the stored row. NULL after answering. */
static bus_val_t *s_promo_row(devices_config_t *self, bus_service_t *svc, const bus_val_t *body)
{
    const char *id = bus_val_map_get_str(body, "id");
    const char *kind_name = bus_val_map_get_str(body, "kind");
    int kind = s_kind(kind_name);
    const char *sku = s_text_field(body, "sku", POS_SKU_MAX, POS_SKU_MAX, "");
    const char *category = s_text_field(body, "category", POS_CATEGORY_CHARS, POS_CATEGORY_MAX, "");
    if (!pos_sale_id_ok(id, S_PROMO_ID_MAX, "_-")) {
        s_bad(self, svc, "id: 1-%d letters, digits, '_' or '-'", S_PROMO_ID_MAX);
        return NULL;
    }
    if (kind < 0) {
        s_bad(self, svc, "kind: percent, amount, qty_break, buy_x_get_y or member_price");
        return NULL;
    }
    if (!sku || (*sku && !pos_sale_id_ok(sku, POS_SKU_MAX, "_-."))) {
        s_bad(self, svc, "sku: a SKU (1-%d letters, digits, '_', '-', '.') or \"\"", POS_SKU_MAX);
        return NULL;
    }
    if (!category) {
        s_bad(self, svc, "category: text of at most %d characters", POS_CATEGORY_CHARS);
        return NULL;
    }
    if (!*sku == !*category) {
        s_bad(self, svc, "sku, category: exactly one of them");
        return NULL;
    }
    if (kind == S_MEMBER_PRICE && !*sku) {
        s_bad(self, svc, "sku: a member_price promotion is for one SKU");
        return NULL;
    }
    int64_t v[8];
    for (int i = 0; s_promo_ints[i]; i++) {
        int64_t min, max;
        s_promo_range(kind, s_promo_ints[i], &min, &max);
        if (!s_int_field(body, s_promo_ints[i], min, max, &v[i])) {
            if (max == 0)
                s_bad(self, svc, "%s: not used by kind %s (absent or 0)", s_promo_ints[i],
                      kind_name);
            else
                s_bad(self, svc, "%s: an integer from %" PRId64 " to %" PRId64 " for kind %s",
                      s_promo_ints[i], min, max, kind_name);
            return NULL;
        }
    }
    int64_t start = v[5], end = v[6];
    if ((start || end) && start >= end) {
        s_bad(self, svc, "end_ms: after start_ms (both 0: always)");
        return NULL;
    }
    bus_val_t *row = bus_val_new_map();
    int rc = row ? 0 : -1;
    rc = rc || bus_val_map_set_str(row, "id", id) || bus_val_map_set_str(row, "kind", kind_name) ||
         bus_val_map_set_str(row, "sku", sku) || bus_val_map_set_str(row, "category", category);
    for (int i = 0; rc == 0 && s_promo_ints[i]; i++)
        rc = bus_val_map_set_int(row, s_promo_ints[i], v[i]);
    rc = rc || bus_val_map_set_bool(row, "ended", false) || bus_val_map_set_int(row, "ended_ms", 0);
    if (rc != 0) {
        bus_val_destroy(&row);
        bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    }
    return row;
}

static int s_promo_add(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_config_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    bus_val_t *row = s_promo_row(self, svc, body);
    if (!row)
        return -1;
    const char *store, *id = bus_val_map_get_str(row, "id");
    int64_t end = 0;
    bus_val_map_get_int(row, "end_ms", &end);
    char end_text[S_NUM_MAX];
    snprintf(end_text, sizeof(end_text), "%" PRId64, end);
    int rc = s_store_arg(self, svc, body, &store);
    if (rc == 0)
        rc = s_put_row(self, svc, req, store, ":promos", "promo", S_PROMOS_MAX, id, row, end_text,
                       reply);
    if (rc == 0)
        bus_val_map_set_str(reply, "id", id);
    bus_val_destroy(&row);
    return rc;
}

static bool s_end(bus_val_t *row, int64_t now)
{
    bool ended = true;
    bus_val_map_get_bool(row, "ended", &ended);
    return !ended && bus_val_map_set_bool(row, "ended", true) == 0 &&
           bus_val_map_set_int(row, "ended_ms", now) == 0;
}

static int s_promo_end(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_config_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *id = bus_val_map_get_str(body, "id"), *store;
    if (!pos_sale_id_ok(id, S_PROMO_ID_MAX, "_-"))
        return s_bad(self, svc, "id: 1-%d letters, digits, '_' or '-'", S_PROMO_ID_MAX);
    if (s_store_arg(self, svc, body, &store) != 0)
        return -1;
    int rc = s_replace(self, svc, req, store, ":promos", id, s_end, true, reply);
    if (rc == 0)
        bus_val_map_set_str(reply, "id", id);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------ */

/*  A store's configuration as read by config_read.lua. */
typedef struct {
    redisReply *r;
    int64_t version;
    const redisReply *cfg, *cashiers, *promos; /* flat HGETALLs; NULL when unchanged */
} s_snapshot_t;

/*  Read store's configuration; known ("" for none) is the version the caller has. 0, or -1
    after answering. */
static int s_read(devices_config_t *self, bus_service_t *svc, const char *store, const char *known,
                  s_snapshot_t *snap)
{
    char cfg[BUS_KEY_MAX], cashiers[BUS_KEY_MAX], promos[BUS_KEY_MAX];
    const char *argv[] = {s_key(cfg, store, ""), s_key(cashiers, store, ":cashiers"),
                          s_key(promos, store, ":promos"), known};
    redisReply *r = bus_redis_evalsha(self->redis, self->read, 3, 4, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY ||
        (r->elements != 1 && r->elements != 4) || r->element[0]->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "config read");
    for (size_t i = 1; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_ARRAY || r->element[i]->elements % 2)
            return s_redis_failed(self, svc, r, "config read");
    memset(snap, 0, sizeof(*snap));
    snap->r = r;
    snap->version = r->element[0]->integer;
    if (r->elements == 4) {
        snap->cfg = r->element[1];
        snap->cashiers = r->element[2];
        snap->promos = r->element[3];
    }
    return 0;
}

/*  The value of field in a flat HGETALL, NULL when absent. */
static const redisReply *s_hash_get(const redisReply *flat, const char *field)
{
    for (size_t i = 0; i + 1 < flat->elements; i += 2)
        if (flat->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(flat->element[i]->str, field) == 0)
            return flat->element[i + 1];
    return NULL;
}

static int s_cmp_field(const void *a, const void *b)
{
    const redisReply *const *x = *(const redisReply *const *const *)a;
    const redisReply *const *y = *(const redisReply *const *const *)b;
    return strcmp((*x)->str, (*y)->str);
}

/*  The decoded rows of a flat HGETALL, sorted by field (id); rows that do not decode to a map
    are skipped (and counted by the caller through the missing count). NULL out of memory. */
static bus_val_t *s_rows(const redisReply *flat)
{
    size_t n = flat->elements / 2;
    const redisReply *const **order = calloc(n + 1, sizeof(*order));
    bus_val_t *rows = bus_val_new_arr();
    if (!order || !rows) {
        free(order);
        bus_val_destroy(&rows);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = (const redisReply *const *)&flat->element[2 * i];
    qsort(order, n, sizeof(*order), s_cmp_field);
    for (size_t i = 0; i < n; i++) {
        const redisReply *v = order[i][1];
        bus_val_t *row =
            v->type == REDIS_REPLY_STRING ? bus_val_decode(v->str, v->len, NULL, NULL) : NULL;
        if (bus_val_type(row) == BUS_VAL_MAP)
            bus_val_arr_push(rows, &row);
        bus_val_destroy(&row);
    }
    free(order);
    return rows;
}

/*  Has promotion row ended (by promo.end, or its end passed at now)? *when: since when. */
static bool s_ended(const bus_val_t *row, int64_t now, int64_t *when)
{
    bool ended = false;
    int64_t ended_ms = 0, end = 0;
    bus_val_map_get_bool(row, "ended", &ended);
    bus_val_map_get_int(row, "ended_ms", &ended_ms);
    bus_val_map_get_int(row, "end_ms", &end);
    *when = ended ? ended_ms : end != 0 && end <= now ? end : 0;
    return ended || (end != 0 && end <= now);
}

/*  The promotions of rows in config.get's shape (with_ended: also ended ones, with "ended" and
    "ended_ms"). NULL out of memory. */
static bus_val_t *s_promos(const bus_val_t *rows, int64_t now, bool with_ended)
{
    bus_val_t *out = bus_val_new_arr();
    for (size_t i = 0; out && i < bus_val_size(rows); i++) {
        const bus_val_t *row = bus_val_arr_get(rows, i);
        int64_t when = 0;
        bool ended = s_ended(row, now, &when);
        if (ended && !with_ended)
            continue;
        bus_val_t *p = bus_val_new_map();
        const char *id = bus_val_map_get_str(row, "id"), *kind = bus_val_map_get_str(row, "kind");
        const char *sku = bus_val_map_get_str(row, "sku");
        const char *category = bus_val_map_get_str(row, "category");
        bus_val_map_set_str(p, "id", id ? id : "");
        bus_val_map_set_str(p, "kind", kind ? kind : "");
        bus_val_map_set_str(p, "sku", sku ? sku : "");
        bus_val_map_set_str(p, "category", category ? category : "");
        for (int k = 0; s_promo_ints[k]; k++) {
            int64_t v = 0;
            bus_val_map_get_int(row, s_promo_ints[k], &v);
            bus_val_map_set_int(p, s_promo_ints[k], v);
        }
        if (with_ended) {
            bus_val_map_set_bool(p, "ended", ended);
            bus_val_map_set_int(p, "ended_ms", when);
        }
        if (!p || bus_val_arr_push(out, &p) != 0)
            bus_val_destroy(&out);
    }
    return out;
}

/*  The string value of a flat HGETALL's field, dflt when absent. */
static const char *s_cfg_str(const redisReply *cfg, const char *field, const char *dflt)
{
    const redisReply *v = s_hash_get(cfg, field);
    return v && v->type == REDIS_REPLY_STRING ? v->str : dflt;
}

/*  Receipt lines stored under field (a MessagePack array), [] when absent. */
static bus_val_t *s_cfg_lines(const redisReply *cfg, const char *field)
{
    const redisReply *v = s_hash_get(cfg, field);
    bus_val_t *lines =
        v && v->type == REDIS_REPLY_STRING ? bus_val_decode(v->str, v->len, NULL, NULL) : NULL;
    if (bus_val_type(lines) != BUS_VAL_ARR) {
        bus_val_destroy(&lines);
        lines = bus_val_new_arr();
    }
    return lines;
}

/*  The store a config.get is about: a register's own (a body naming another is refused), or
    body "store" for operators and services. 0, or -1 after answering. */
static int s_get_store(devices_config_t *self, bus_service_t *svc, const bus_val_t *body,
                       const char **store)
{
    const bus_identity_t *me = bus_service_caller(svc);
    if (me->role != BUS_ROLE_REGISTER)
        return s_store_arg(self, svc, body, store);
    const bus_val_t *bs = bus_val_map_get(body, "store");
    const char *named = bs ? bus_val_get_str(bs, NULL) : NULL;
    if (bs && !bus_identity_id_ok(named))
        return s_bad(self, svc, "store: if given, an id (letters, digits, '_')");
    if (named && strcmp(named, me->store) != 0) {
        bus_stats_inc(self->c_other_register, 1);
        return bus_service_error(svc, BUS_ERR_FORBIDDEN,
                                 "register %s may read only its own store's configuration, not %s",
                                 me->name, named);
    }
    *store = me->store;
    return 0;
}

/*  A register gets its own devices (devices: [...]); an operator or a service every register's
    (register_devices: {register: [...]}). */
static int s_devices_reply(bus_service_t *svc, const redisReply *cfg, bus_val_t *reply)
{
    const bus_identity_t *me = bus_service_caller(svc);
    bool reg = me->role == BUS_ROLE_REGISTER;
    bus_val_t *all = bus_val_new_map(), *mine = NULL;
    for (size_t i = 0; all && i + 1 < cfg->elements; i += 2) {
        const redisReply *f = cfg->element[i], *v = cfg->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            strncmp(f->str, "devices:", 8) != 0)
            continue;
        bus_val_t *list = bus_val_decode(v->str, v->len, NULL, NULL);
        if (!list)
            continue;
        if (reg && strcmp(f->str + 8, me->reg) == 0) {
            bus_val_destroy(&mine);
            mine = list;
            list = NULL;
        } else if (!reg) {
            bus_val_map_set(all, f->str + 8, &list);
        }
        bus_val_destroy(&list);
    }
    int rc;
    if (reg) {
        if (!mine)
            mine = bus_val_new_arr();
        rc = bus_val_map_set(reply, "devices", &mine);
        bus_val_destroy(&all);
    } else {
        rc = bus_val_map_set(reply, "register_devices", &all);
    }
    return rc;
}

static int s_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_config_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const bus_val_t *kv = bus_val_map_get(body, "known_version");
    int64_t known_version = -1;
    char known[S_NUM_MAX] = "";
    if (kv &&
        (!bus_val_get_int(kv, &known_version) || known_version < 0 || known_version > S_INT_MAX))
        return s_bad(self, svc, "known_version: an integer from 0 to %lld", S_INT_MAX);
    if (kv)
        snprintf(known, sizeof(known), "%" PRId64, known_version);
    const char *store;
    if (s_get_store(self, svc, body, &store) != 0)
        return -1;
    s_snapshot_t snap;
    if (s_read(self, svc, store, known, &snap) != 0)
        return -1;
    bus_stats_inc(self->c_gets, 1);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_int(reply, "version", snap.version);
    if (!snap.cfg) {
        bus_stats_inc(self->c_unchanged, 1);
        bus_val_map_set_bool(reply, "unchanged", true);
        freeReplyObject(snap.r);
        return 0;
    }
    bus_val_t *header = s_cfg_lines(snap.cfg, "receipt_header");
    bus_val_t *footer = s_cfg_lines(snap.cfg, "receipt_footer");
    bus_val_t *cashiers = s_rows(snap.cashiers), *rows = s_rows(snap.promos);
    bus_val_t *promos = rows ? s_promos(rows, bus_now_ms(), false) : NULL;
    const char *cap = s_cfg_str(snap.cfg, "discount_cap_bp", NULL);
    int rc = header && footer && cashiers && promos ? 0 : -1;
    rc = rc || bus_val_map_set(reply, "receipt_header", &header) ||
         bus_val_map_set(reply, "receipt_footer", &footer) ||
         bus_val_map_set_bool(reply, "cash_rounding",
                              strcmp(s_cfg_str(snap.cfg, "cash_rounding", "0"), "1") == 0) ||
         bus_val_map_set_str(reply, "tax_id", s_cfg_str(snap.cfg, "tax_id", "")) ||
         bus_val_map_set_int(reply, "discount_cap_bp",
                             cap ? strtoll(cap, NULL, 10) : S_CAP_DEFAULT_BP) ||
         bus_val_map_set(reply, "cashiers", &cashiers) ||
         bus_val_map_set(reply, "promotions", &promos) || s_devices_reply(svc, snap.cfg, reply);
    bus_val_destroy(&header);
    bus_val_destroy(&footer);
    bus_val_destroy(&cashiers);
    bus_val_destroy(&rows);
    bus_val_destroy(&promos);
    freeReplyObject(snap.r);
    return rc == 0 ? 0 : bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
}

static int s_promo_list(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_config_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const bus_val_t *av = bus_val_map_get(body, "all");
    bool all = false;
    if (av && !bus_val_get_bool(av, &all))
        return s_bad(self, svc, "all: true or false");
    const char *store;
    s_snapshot_t snap;
    if (s_store_arg(self, svc, body, &store) != 0 || s_read(self, svc, store, "", &snap) != 0)
        return -1;
    bus_val_t *rows = s_rows(snap.promos);
    bus_val_t *promos = rows ? s_promos(rows, bus_now_ms(), true) : NULL;
    bus_val_t *shown = all || !promos ? promos : bus_val_new_arr();
    for (size_t i = 0; shown && shown != promos && i < bus_val_size(promos); i++) {
        bool ended = false;
        bus_val_map_get_bool(bus_val_arr_get(promos, i), "ended", &ended);
        bus_val_t *p = ended ? NULL : bus_val_dup(bus_val_arr_get(promos, i));
        if (p)
            bus_val_arr_push(shown, &p);
    }
    if (shown == promos)
        promos = NULL; /* one list, owned by shown */
    int rc = shown ? 0 : -1;
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_int(reply, "version", snap.version);
    bus_val_map_set_int(reply, "count", (int64_t)bus_val_size(shown));
    rc = rc || bus_val_map_set(reply, "promotions", &shown);
    bus_val_destroy(&shown);
    bus_val_destroy(&promos);
    bus_val_destroy(&rows);
    freeReplyObject(snap.r);
    return rc == 0 ? 0 : bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
}

/* ---- setup -------------------------------------------------------------------------------- */

devices_config_t *devices_config_new(bus_redis_t *redis, bus_pub_t *pub, bus_stats_t *stats,
                                     int64_t req_ttl_s)
{
    devices_config_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->redis = redis;
    self->pub = pub;
    snprintf(self->req_ttl, sizeof(self->req_ttl), "%" PRId64, req_ttl_s > 0 ? req_ttl_s : 86400);
    self->change = bus_redis_script(redis, config_change_lua);
    self->read = bus_redis_script(redis, config_read_lua);
    self->c_changes = bus_stats_counter(stats, "config_changes");
    self->c_gets = bus_stats_counter(stats, "config_gets");
    self->c_unchanged = bus_stats_counter(stats, "config_gets_unchanged");
    self->c_bad = bus_stats_counter(stats, "bad_requests");
    self->c_other_register = bus_stats_counter(stats, "refused_other_register");
    self->c_redis_errors = bus_stats_counter(stats, "redis_errors");
    if (self->change < 0 || self->read < 0 || !self->c_redis_errors)
        devices_config_destroy(&self);
    return self;
}

void devices_config_destroy(devices_config_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

int devices_config_methods(devices_config_t *self, bus_service_t *svc)
{
    /* Registers read their own store's configuration; operators change it (services may read,
       e.g. a dashboard acting for operators). Every change runs once per request id. */
    enum { READERS = BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE };
    enum { OPS = BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE };
    static const bus_method_t methods[] = {
        {"config.get", s_get, BUS_METHOD_READ, READERS},
        {"config.set", s_set, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR},
        {"cashier.add", s_cashier_add, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR},
        {"cashier.disable", s_cashier_disable, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR},
        {"promo.add", s_promo_add, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR},
        {"promo.end", s_promo_end, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR},
        {"promo.list", s_promo_list, BUS_METHOD_READ, OPS},
        {NULL, NULL, 0, 0}};
    return bus_service_methods(svc, methods, self);
}
