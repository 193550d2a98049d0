/*  =========================================================================
    sales - ingest completed sales from registers, exactly once

    A register uploads each completed sale (request "sale.upload") until it
    is acknowledged. The sale is checked for internal consistency with
    libpos (amounts, tax, tenders add up: a sale that does not add up is
    corrupt and refused, and the register keeps it in its journal), then
    committed by one Lua script that refuses a known sale id, appends the
    sale to the `sales` stream and tracks the register's sequence, all
    atomically; only then is the register acknowledged. A repeated upload
    is acknowledged as a duplicate and changes nothing. A sale that
    happened is never refused for business reasons: an unknown SKU or a
    price that differs from the catalog is committed and flagged for review.

    Everything else (inventory, reporting, analytics) follows the stream;
    sale.completed is also published on the bus, carrying the stream id, so
    a subscriber that missed events catches up with "sale.replay".
    =========================================================================
*/
#include <bus/bus.h>
#include "svc_main.h"
#include <pos/tax.h>
#include <pos/ticket.h>
#include <time.h>
#include "close_day_lua.h"
#include "commit_lua.h"
#include "recall_lua.h"

#define S_PROGRAM          "sales"
#define S_ID_MAX           16 /* store and register ids */
#define S_SKU_MAX          32
#define S_TEXT_MAX         128
#define S_LINES_MAX        1000
#define S_TENDERS_MAX      16
#define S_REPLAY_MAX       1000
#define S_FLAGS_MAX        1024
#define S_KEY_MAX          256
#define S_ORIGINALS_MAX    32
#define S_CATALOG_CHECK_MS 1000
#define S_STREAM           "sales:stream"

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "sales", 0, 0, "name this service registers under"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    bus_service_t *svc;
    bus_redis_t *redis;
    bus_pub_t *pub;
    int commit, recall, close_day;
    zhashx_t *catalog; /* sku -> s_price_t, cleared when catalog:version changes */
    int64_t catalog_version;
    int64_t next_catalog_check;
    zhashx_t *stores; /* known store ids */
    bus_stats_t *stats;
    int64_t *c_committed, *c_dups, *c_refused, *c_flagged, *c_gaps, *c_redis_errors;
} s_sales_t;

typedef struct {
    bool known;
    int64_t price, member_price;
} s_price_t;

/* ---- validation -------------------------------------------------------- */

static bool s_id_ok(const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > S_ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    return true;
}

/*  Required text of at most max bytes without control characters (they have no place in an
    id or a name, and downstream keys use one as a separator). */
static bool s_text_ok(const char *s, size_t max)
{
    if (!s || !*s || strlen(s) > max)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/*  Check one line; adds its amount to *total. -1 with the error set on the service. */
static int s_check_line(bus_service_t *svc, const bus_val_t *l, size_t i, bool is_return_sale,
                        int64_t *total, int *originals)
{
    const char *sku = bus_val_map_get_str(l, "sku");
    const char *unit = bus_val_map_get_str(l, "unit");
    const char *return_of = bus_val_map_get_str(l, "return_of");
    int64_t qty, price, gross, promo, tdisc, amount, tax, rate, want;
    bool voided = false;
    bus_val_map_get_bool(l, "voided", &voided);
    const char *category = bus_val_map_get_str(l, "category");
    if (category && *category && !s_text_ok(category, S_TEXT_MAX))
        return bus_service_error(svc, "bad_sale", "line %zu: category not printable text", i);
    if (!s_text_ok(sku, S_SKU_MAX))
        return bus_service_error(svc, "bad_sale", "line %zu: sku missing or longer than %d", i,
                                 S_SKU_MAX);
    if (!bus_val_map_get_int(l, "qty", &qty) || !bus_val_map_get_int(l, "unit_price", &price) ||
        !bus_val_map_get_int(l, "gross", &gross) ||
        !bus_val_map_get_int(l, "promo_discount", &promo) ||
        !bus_val_map_get_int(l, "ticket_discount", &tdisc) ||
        !bus_val_map_get_int(l, "amount", &amount) || !bus_val_map_get_int(l, "tax", &tax) ||
        !bus_val_map_get_int(l, "tax_rate_bp", &rate) || !unit)
        return bus_service_error(svc, "bad_sale",
                                 "line %zu: needs qty, unit, unit_price, gross, promo_discount, "
                                 "ticket_discount, amount, tax, tax_rate_bp",
                                 i);
    bool kg = strcmp(unit, "kg") == 0;
    if (!kg && strcmp(unit, "pcs") != 0)
        return bus_service_error(svc, "bad_sale", "line %zu: unit must be pcs or kg", i);
    if (qty == 0 || (qty < 0) != (return_of != NULL))
        return bus_service_error(svc, "bad_sale",
                                 "line %zu: quantity %" PRId64 " (negative only on a return line "
                                 "with return_of, never zero)",
                                 i, qty);
    if (return_of && (!is_return_sale || !s_text_ok(return_of, POS_SALE_ID_MAX)))
        return bus_service_error(svc, "bad_sale", "line %zu: return_of only on a return sale", i);
    if (price < 0 || promo < 0 || tdisc < 0 || rate < 0 || rate > POS_BP_100PCT)
        return bus_service_error(svc, "bad_sale",
                                 "line %zu: negative price or discount, or "
                                 "tax rate outside 0..10000",
                                 i);
    if (voided) {
        if (gross != 0 || amount != 0 || tax != 0)
            return bus_service_error(svc, "bad_sale", "line %zu: a voided line has no amount", i);
        return 0;
    }
    pos_err_t err =
        kg ? pos_muldiv(price, qty, POS_GRAMS_PER_KG, &want) : pos_mul(price, qty, &want);
    if (err != POS_OK || want != gross)
        return bus_service_error(svc, "bad_sale",
                                 "line %zu: gross %" PRId64 " is not unit_price x "
                                 "qty (%" PRId64 ")",
                                 i, gross, want);
    if (amount != gross - promo - tdisc)
        return bus_service_error(svc, "bad_sale", "line %zu: amount is not gross - discounts", i);
    if (pos_tax_included(amount, (int)rate, &want) != POS_OK || want != tax)
        return bus_service_error(svc, "bad_sale", "line %zu: tax %" PRId64 " should be %" PRId64, i,
                                 tax, want);
    if (return_of)
        (*originals)++;
    return pos_add(*total, amount, total) == POS_OK
               ? 0
               : bus_service_error(svc, "bad_sale", "line %zu: total overflows", i);
}

/*  Whole-sale checks: ids, lines, totals and tenders add up. -1 with the error set. */
static int s_check_sale(bus_service_t *svc, const bus_val_t *sale, int *originals)
{
    const char *id = bus_val_map_get_str(sale, "sale_id");
    const char *store = bus_val_map_get_str(sale, "store");
    const char *reg = bus_val_map_get_str(sale, "register");
    const char *cashier = bus_val_map_get_str(sale, "cashier");
    const char *kind = bus_val_map_get_str(sale, "kind");
    int64_t seq, ts, total, change = 0, rounding = 0;
    if (!s_id_ok(store) || !s_id_ok(reg))
        return bus_service_error(svc, "bad_sale",
                                 "store and register must be 1-16 letters, digits or _");
    if (!bus_val_map_get_int(sale, "seq", &seq) || seq < 1 || !bus_val_map_get_int(sale, "ts", &ts))
        return bus_service_error(svc, "bad_sale", "seq (>= 1) and ts are required");
    char want[S_TEXT_MAX];
    snprintf(want, sizeof(want), "%s-%s-%06" PRId64, store, reg, seq);
    if (!id || strcmp(id, want) != 0)
        return bus_service_error(svc, "bad_sale", "sale_id must be %s", want);
    if (!s_text_ok(cashier, S_ID_MAX * 2))
        return bus_service_error(svc, "bad_sale", "cashier missing or too long");
    if (!kind || (strcmp(kind, "sale") && strcmp(kind, "return") && strcmp(kind, "nosale")))
        return bus_service_error(svc, "bad_sale", "kind must be sale, return or nosale");
    if (!bus_val_map_get_int(sale, "total", &total))
        return bus_service_error(svc, "bad_sale", "total is required");
    bus_val_map_get_int(sale, "change", &change);
    bus_val_map_get_int(sale, "cash_rounding", &rounding);
    bus_val_t *lines = bus_val_map_get(sale, "lines");
    bus_val_t *tenders = bus_val_map_get(sale, "tenders");
    if (bus_val_type(lines) != BUS_VAL_ARR || bus_val_size(lines) > S_LINES_MAX ||
        bus_val_type(tenders) != BUS_VAL_ARR || bus_val_size(tenders) > S_TENDERS_MAX)
        return bus_service_error(svc, "bad_sale", "lines (<= %d) and tenders (<= %d) arrays",
                                 S_LINES_MAX, S_TENDERS_MAX);
    if (strcmp(kind, "nosale") == 0 && (bus_val_size(lines) || total))
        return bus_service_error(svc, "bad_sale", "a no-sale has no lines");
    int64_t sum = 0;
    *originals = 0;
    for (size_t i = 0; i < bus_val_size(lines); i++)
        if (s_check_line(svc, bus_val_arr_get(lines, i), i, strcmp(kind, "return") == 0, &sum,
                         originals) != 0)
            return -1;
    if (sum != total)
        return bus_service_error(svc, "bad_sale",
                                 "total %" PRId64 " is not the sum of lines %" PRId64, total, sum);
    int64_t paid = 0;
    for (size_t i = 0; i < bus_val_size(tenders); i++) {
        bus_val_t *t = bus_val_arr_get(tenders, i);
        int64_t amount;
        if (pos_tender_parse(bus_val_map_get_str(t, "kind")) < 0 ||
            !bus_val_map_get_int(t, "amount", &amount) || pos_add(paid, amount, &paid) != POS_OK)
            return bus_service_error(svc, "bad_sale",
                                     "tender %zu: kind (cash, card, wechat, "
                                     "alipay, stored_value, other) and amount",
                                     i);
    }
    if (change < 0 || paid - change != total + rounding)
        return bus_service_error(svc, "bad_sale",
                                 "tenders %" PRId64 " - change %" PRId64 " != total %" PRId64
                                 " + cash rounding %" PRId64,
                                 paid, change, total, rounding);
    return 0;
}

/* ---- catalog check (flags for review, never refusal) ------------------------ */

static void s_catalog_refresh(s_sales_t *self)
{
    if (bus_mono_ms() < self->next_catalog_check)
        return;
    self->next_catalog_check = bus_mono_ms() + S_CATALOG_CHECK_MS;
    redisReply *r = bus_redis_command(self->redis, "GET catalog:version");
    int64_t v = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    if (r)
        freeReplyObject(r);
    if (v != self->catalog_version) {
        zhashx_purge(self->catalog);
        self->catalog_version = v;
    }
}

static const s_price_t *s_catalog_price(s_sales_t *self, const char *sku)
{
    s_price_t *p = zhashx_lookup(self->catalog, sku);
    if (p)
        return p;
    redisReply *r = bus_redis_command(self->redis, "HMGET catalog:item:%s price member_price", sku);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        if (r)
            freeReplyObject(r);
        return NULL; /* Redis trouble: no flag rather than a wrong one */
    }
    p = calloc(1, sizeof(*p));
    if (p) {
        p->known = r->element[0]->type == REDIS_REPLY_STRING;
        p->price = p->known ? atoll(r->element[0]->str) : 0;
        p->member_price = r->element[1]->type == REDIS_REPLY_STRING ? atoll(r->element[1]->str) : 0;
        zhashx_insert(self->catalog, sku, p);
    }
    freeReplyObject(r);
    return p;
}

static void s_review_flags(s_sales_t *self, const bus_val_t *sale, char *flags, size_t size)
{
    flags[0] = '\0';
    s_catalog_refresh(self);
    bus_val_t *lines = bus_val_map_get(sale, "lines");
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        bus_val_t *l = bus_val_arr_get(lines, i);
        bool voided = false;
        bus_val_map_get_bool(l, "voided", &voided);
        if (voided || bus_val_map_get(l, "return_of"))
            continue;
        const char *sku = bus_val_map_get_str(l, "sku");
        int64_t price = 0;
        bus_val_map_get_int(l, "unit_price", &price);
        const s_price_t *p = s_catalog_price(self, sku);
        const char *flag = NULL;
        if (p && !p->known)
            flag = "unknown_sku";
        else if (p && price != p->price && price != p->member_price)
            flag = "price_mismatch";
        if (flag && strlen(flags) + strlen(flag) + strlen(sku) + 3 < size)
            snprintf(flags + strlen(flags), size - strlen(flags), "%s%s:%s", flags[0] ? "," : "",
                     flag, sku);
    }
}

/* ---- handlers ---------------------------------------------------------- */

static bool s_store_known(s_sales_t *self, const char *store)
{
    if (zhashx_lookup(self->stores, store))
        return true;
    redisReply *r = bus_redis_command(self->redis, "SISMEMBER stores %s", store);
    bool known = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r)
        freeReplyObject(r);
    if (known)
        zhashx_insert(self->stores, store, (void *)1);
    return known;
}

static void s_today(char *out, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(out, size, "%Y-%m-%d", &tm);
}

static int s_redis_down(s_sales_t *self, bus_service_t *svc)
{
    (*self->c_redis_errors)++;
    bus_warn("sales.redis", "%s", bus_redis_errstr(self->redis));
    return bus_service_error(svc, BUS_ERR_UNAVAILABLE, "storage unavailable, retry: %s",
                             bus_redis_errstr(self->redis));
}

/*  The event body and a replay entry have the same shape: the sale plus where it was committed. */
static bus_val_t *s_sale_event(const bus_val_t *sale, const char *stream_id, const char *bday,
                               const char *flags)
{
    bus_val_t *body = bus_val_dup(sale);
    if (!body)
        return NULL;
    bus_val_map_set_str(body, "stream_id", stream_id);
    bus_val_map_set_str(body, "business_day", bday);
    if (flags && *flags)
        bus_val_map_set_str(body, "review", flags);
    return body;
}

static int s_upload(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    bus_val_t *sale = bus_msg_body(req);
    int originals = 0;
    if (s_check_sale(svc, sale, &originals) != 0) {
        (*self->c_refused)++;
        return -1;
    }
    const char *id = bus_val_map_get_str(sale, "sale_id");
    const char *store = bus_val_map_get_str(sale, "store");
    const char *reg = bus_val_map_get_str(sale, "register");
    if (originals > S_ORIGINALS_MAX) {
        (*self->c_refused)++;
        return bus_service_error(svc, "bad_sale", "a return may refer to at most %d sales",
                                 S_ORIGINALS_MAX);
    }
    if (!s_store_known(self, store)) {
        (*self->c_refused)++;
        if (!bus_redis_connected(self->redis))
            return s_redis_down(self, svc);
        return bus_service_error(svc, "unknown_store", "store '%s' is not registered", store);
    }
    int64_t seq = 0;
    bus_val_map_get_int(sale, "seq", &seq);
    char flags[S_FLAGS_MAX];
    s_review_flags(self, sale, flags, sizeof(flags));

    bus_buf_t payload = {0};
    bus_val_encode(sale, &payload);
    char seq_text[24], today[16], norig[8];
    snprintf(seq_text, sizeof(seq_text), "%" PRId64, seq);
    s_today(today, sizeof(today));
    /* distinct originals of return lines */
    const char *orig_ids[S_ORIGINALS_MAX];
    int n_orig = 0;
    bus_val_t *lines = bus_val_map_get(sale, "lines");
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        const char *o = bus_val_map_get_str(bus_val_arr_get(lines, i), "return_of");
        bool seen = false;
        for (int k = 0; o && k < n_orig; k++)
            seen = seen || strcmp(orig_ids[k], o) == 0;
        if (o && !seen)
            orig_ids[n_orig++] = o;
    }
    snprintf(norig, sizeof(norig), "%d", n_orig);
    char keys[6 + 2 * S_ORIGINALS_MAX][S_KEY_MAX];
    snprintf(keys[0], S_KEY_MAX, "sale:{%s}:%s", store, id);
    snprintf(keys[1], S_KEY_MAX, "%s", S_STREAM);
    snprintf(keys[2], S_KEY_MAX, "regseq:{%s}", store);
    snprintf(keys[3], S_KEY_MAX, "regpend:{%s}:%s", store, reg);
    snprintf(keys[4], S_KEY_MAX, "bday:{%s}", store);
    snprintf(keys[5], S_KEY_MAX, "review:{%s}", store);
    for (int k = 0; k < n_orig; k++) {
        snprintf(keys[6 + 2 * k], S_KEY_MAX, "sale:{%s}:%s", store, orig_ids[k]);
        snprintf(keys[7 + 2 * k], S_KEY_MAX, "returned:{%s}:%s", store, orig_ids[k]);
    }
    int nkeys = 6 + 2 * n_orig;
    const char *argv[6 + 2 * S_ORIGINALS_MAX + 8 + S_ORIGINALS_MAX];
    size_t lens[sizeof(argv) / sizeof(argv[0])];
    int argc = 0;
    for (int k = 0; k < nkeys; k++)
        argv[argc++] = keys[k];
    argv[argc++] = id;
    argv[argc] = (const char *)payload.data;
    lens[argc++] = payload.len;
    argv[argc++] = reg;
    argv[argc++] = seq_text;
    argv[argc++] = store;
    argv[argc++] = flags;
    argv[argc++] = today;
    argv[argc++] = norig;
    for (int k = 0; k < n_orig; k++)
        argv[argc++] = orig_ids[k];
    for (int k = 0; k < argc; k++)
        if (k != nkeys + 1)
            lens[k] = strlen(argv[k]);
    redisReply *r = bus_redis_evalsha(self->redis, self->commit, nkeys, argc, argv, lens);
    bus_buf_free(&payload);
    if (!r)
        return s_redis_down(self, svc);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        bus_error("sales.commit", "unexpected script reply: %s",
                  r->type == REDIS_REPLY_ERROR ? r->str : "?");
        freeReplyObject(r);
        return bus_service_error(svc, BUS_ERR_INTERNAL, "commit failed");
    }
    const char *status = r->element[0]->str;
    if (strcmp(status, "err") == 0) {
        (*self->c_refused)++;
        bus_service_error(svc, "bad_return", "%s", r->element[1]->str);
        freeReplyObject(r);
        return -1;
    }
    const char *sid = r->element[1]->str;
    const char *bday = r->element[2]->str;
    bool dup = strcmp(status, "dup") == 0;
    bus_val_map_set_str(reply, "sale_id", id);
    bus_val_map_set_str(reply, "stream_id", sid);
    bus_val_map_set_str(reply, "business_day", bday);
    bus_val_map_set_bool(reply, "duplicate", dup);
    if (dup)
        (*self->c_dups)++;
    else {
        (*self->c_committed)++;
        if (flags[0]) {
            (*self->c_flagged)++;
            bus_val_map_set_str(reply, "review", flags);
        }
        bus_val_t *event = s_sale_event(sale, sid, bday, flags);
        bus_pub_publish(self->pub, "sale.completed", "sale.completed", &event);
        int64_t gap_from = r->elements >= 5 ? r->element[3]->integer : 0;
        int64_t gap_to = r->elements >= 5 ? r->element[4]->integer : 0;
        if (gap_from > 0 && gap_to >= gap_from) {
            (*self->c_gaps)++;
            bus_val_t *gap = bus_val_new_map();
            bus_val_map_set_str(gap, "store", store);
            bus_val_map_set_str(gap, "register", reg);
            bus_val_map_set_int(gap, "missing_from", gap_from);
            bus_val_map_set_int(gap, "missing_to", gap_to);
            bus_val_t *resend = bus_val_dup(gap);
            bus_pub_publish(self->pub, "sale.gap", "sale.gap", &gap);
            char topic[BUS_TOPIC_MAX];
            snprintf(topic, sizeof(topic), "register.%s.%s.resend", store, reg);
            bus_pub_publish(self->pub, topic, "register.resend", &resend);
            bus_info("sales.gap", "store=%s register=%s missing=%" PRId64 "..%" PRId64, store, reg,
                     gap_from, gap_to);
        }
    }
    freeReplyObject(r);
    return 0;
}

static int s_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *id = bus_val_map_get_str(bus_msg_body(req), "sale_id");
    if (!s_id_ok(store) || !s_text_ok(id, POS_SALE_ID_MAX))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and sale_id required");
    redisReply *r =
        bus_redis_command(self->redis, "HMGET sale:{%s}:%s stream_id bday flags", store, id);
    if (!r)
        return s_redis_down(self, svc);
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->element[0]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return bus_service_error(svc, "not_found", "no sale %s in store %s", id, store);
    }
    redisReply *e = bus_redis_command(self->redis, "XRANGE %s %s %s", S_STREAM, r->element[0]->str,
                                      r->element[0]->str);
    if (!e) {
        freeReplyObject(r);
        return s_redis_down(self, svc);
    }
    bus_val_t *sale = NULL;
    if (e->type == REDIS_REPLY_ARRAY && e->elements == 1) {
        redisReply *f = e->element[0]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2)
            if (strcmp(f->element[k]->str, "payload") == 0)
                sale = bus_val_decode(f->element[k + 1]->str, f->element[k + 1]->len, NULL, NULL);
    }
    bus_val_t *event =
        sale ? s_sale_event(sale, r->element[0]->str,
                            r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "",
                            r->element[2]->type == REDIS_REPLY_STRING ? r->element[2]->str : "")
             : NULL;
    if (event)
        bus_val_map_set(reply, "sale", &event);
    else
        rc = bus_service_error(svc, BUS_ERR_INTERNAL, "sale %s has no stream entry", id);
    bus_val_destroy(&sale);
    freeReplyObject(e);
    freeReplyObject(r);
    return rc;
}

static int s_replay(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *after = bus_val_map_get_str(bus_msg_body(req), "after");
    int64_t count = 100;
    bus_val_map_get_int(bus_msg_body(req), "count", &count);
    if (count < 1 || count > S_REPLAY_MAX)
        count = S_REPLAY_MAX;
    char start[BUS_STREAM_ID_MAX + 2];
    unsigned long long ms, sq;
    if (!after || !*after || strcmp(after, "0") == 0)
        snprintf(start, sizeof(start), "-");
    else if (sscanf(after, "%llu-%llu", &ms, &sq) == 2 && strlen(after) < BUS_STREAM_ID_MAX)
        snprintf(start, sizeof(start), "(%s", after);
    else
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "after must be a stream id or 0");
    redisReply *r = bus_redis_command(self->redis, "XRANGE %s %s + COUNT %lld", S_STREAM, start,
                                      (long long)count);
    if (!r)
        return s_redis_down(self, svc);
    bus_val_t *list = bus_val_new_arr();
    const char *last = after && *after ? after : "0";
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *e = r->element[i];
        redisReply *f = e->element[1];
        const char *payload = NULL, *bday = "";
        size_t plen = 0;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            if (strcmp(f->element[k]->str, "payload") == 0) {
                payload = f->element[k + 1]->str;
                plen = f->element[k + 1]->len;
            } else if (strcmp(f->element[k]->str, "bday") == 0)
                bday = f->element[k + 1]->str;
        }
        bus_val_t *sale = payload ? bus_val_decode(payload, plen, NULL, NULL) : NULL;
        bus_val_t *event = sale ? s_sale_event(sale, e->element[0]->str, bday, NULL) : NULL;
        if (event)
            bus_val_arr_push(list, &event);
        bus_val_destroy(&sale);
        last = e->element[0]->str;
    }
    bus_val_map_set_int(reply, "count", (int64_t)bus_val_size(list));
    bus_val_map_set(reply, "sales", &list);
    bus_val_map_set_str(reply, "last", last);
    bus_val_map_set_bool(reply, "more",
                         r->type == REDIS_REPLY_ARRAY && (int64_t)r->elements == count);
    freeReplyObject(r);
    return 0;
}

static int s_park(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    bus_val_t *body = bus_msg_body(req);
    const char *store = bus_val_map_get_str(body, "store");
    const char *reg = bus_val_map_get_str(body, "register");
    bus_val_t *ticket = bus_val_map_get(body, "ticket");
    if (!s_id_ok(store) || !s_id_ok(reg) || bus_val_type(ticket) != BUS_VAL_MAP)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store, register and ticket required");
    if (!s_store_known(self, store))
        return bus_service_error(svc, "unknown_store", "store '%s' is not registered", store);
    /* the park id is the request envelope's id: a resent park stores the same ticket again */
    char park_id[S_TEXT_MAX];
    snprintf(park_id, sizeof(park_id), "%s-%.12s", reg, bus_msg_id(req));
    bus_val_t *entry = bus_val_new_map();
    bus_val_map_set_str(entry, "register", reg);
    bus_val_map_set_int(entry, "parked_at", bus_now_ms());
    bus_val_t *copy = bus_val_dup(ticket);
    bus_val_map_set(entry, "ticket", &copy);
    bus_buf_t buf = {0};
    bus_val_encode(entry, &buf);
    bus_val_destroy(&entry);
    redisReply *r =
        bus_redis_command(self->redis, "HSET parked:{%s} %s %b", store, park_id, buf.data, buf.len);
    bus_buf_free(&buf);
    if (!r)
        return s_redis_down(self, svc);
    freeReplyObject(r);
    bus_val_map_set_str(reply, "park_id", park_id);
    return 0;
}

static int s_recall(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *park_id = bus_val_map_get_str(bus_msg_body(req), "park_id");
    if (!s_id_ok(store) || !s_text_ok(park_id, S_TEXT_MAX))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and park_id required");
    char key[S_KEY_MAX];
    snprintf(key, sizeof(key), "parked:{%s}", store);
    const char *argv[] = {key, park_id};
    redisReply *r = bus_redis_evalsha(self->redis, self->recall, 1, 2, argv, NULL);
    if (!r)
        return s_redis_down(self, svc);
    int rc = 0;
    bus_val_t *entry =
        r->type == REDIS_REPLY_STRING ? bus_val_decode(r->str, r->len, NULL, NULL) : NULL;
    if (!entry)
        rc = bus_service_error(svc, "not_found",
                               "no parked ticket %s in store %s (recalled "
                               "already?)",
                               park_id, store);
    else {
        bus_val_t *ticket = bus_val_dup(bus_val_map_get(entry, "ticket"));
        bus_val_map_set(reply, "ticket", &ticket);
        bus_val_map_set_str(reply, "parked_by", bus_val_map_get_str(entry, "register"));
    }
    bus_val_destroy(&entry);
    freeReplyObject(r);
    return rc;
}

static int s_parked(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    if (!s_id_ok(store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required");
    redisReply *r = bus_redis_command(self->redis, "HKEYS parked:{%s}", store);
    if (!r)
        return s_redis_down(self, svc);
    bus_val_t *list = bus_val_new_arr();
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        bus_val_t *id = bus_val_new_str(r->element[i]->str);
        bus_val_arr_push(list, &id);
    }
    bus_val_map_set(reply, "parked", &list);
    freeReplyObject(r);
    return 0;
}

/*  Next calendar day after day (YYYY-MM-DD), or today if that is later. */
static void s_next_day(const char *day, char *out, size_t size)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    char today[16];
    s_today(today, sizeof(today));
    if (sscanf(day, "%d-%d-%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) == 3) {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        tm.tm_mday += 1;
        tm.tm_hour = 12;
        time_t t = mktime(&tm);
        localtime_r(&t, &tm);
        strftime(out, size, "%Y-%m-%d", &tm);
    } else
        snprintf(out, size, "%s", today);
    if (strcmp(today, out) > 0)
        snprintf(out, size, "%s", today);
}

static int s_close_day(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    if (!s_id_ok(store) || !s_store_known(self, store))
        return bus_service_error(svc, "unknown_store", "store required and registered");
    char bday_key[S_KEY_MAX], close_key[S_KEY_MAX];
    snprintf(bday_key, sizeof(bday_key), "bday:{%s}", store);
    snprintf(close_key, sizeof(close_key), "dayclose:{%s}", store);
    redisReply *cur = bus_redis_command(self->redis, "GET %s", bday_key);
    if (!cur)
        return s_redis_down(self, svc);
    char day[16], next[16];
    if (cur->type == REDIS_REPLY_STRING)
        snprintf(day, sizeof(day), "%s", cur->str);
    else
        s_today(day, sizeof(day));
    freeReplyObject(cur);
    s_next_day(day, next, sizeof(next));
    const char *argv[] = {bday_key, S_STREAM, close_key, day, next};
    redisReply *r = bus_redis_evalsha(self->redis, self->close_day, 3, 5, argv, NULL);
    if (!r)
        return s_redis_down(self, svc);
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && strcmp(r->element[0]->str, "ok") == 0) {
        bus_val_map_set_str(reply, "closed_day", day);
        bus_val_map_set_str(reply, "next_day", next);
        bus_val_map_set_str(reply, "upto", r->element[1]->str);
        bus_info("sales.day_closed", "store=%s day=%s upto=%s", store, day, r->element[1]->str);
    } else
        rc = bus_service_error(svc, "busy", "the business day changed meanwhile; retry");
    freeReplyObject(r);
    return rc;
}

static int s_current_day(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    if (!s_id_ok(store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required");
    redisReply *r = bus_redis_command(self->redis, "GET bday:{%s}", store);
    if (!r)
        return s_redis_down(self, svc);
    char day[16];
    if (r->type == REDIS_REPLY_STRING)
        snprintf(day, sizeof(day), "%s", r->str);
    else
        s_today(day, sizeof(day));
    freeReplyObject(r);
    bus_val_map_set_str(reply, "business_day", day);
    return 0;
}

int main(int argc, char **argv)
{
    int exit_code;
    bus_config_t *config = svc_config_load(S_PROGRAM, s_options, false, argc, argv, &exit_code);
    svc_core_t core;
    if (!config || svc_core_start(&core, config, S_PROGRAM, false) != 0)
        return config ? 1 : exit_code;
    s_sales_t self;
    memset(&self, 0, sizeof(self));
    self.redis = core.redis;
    self.svc = core.svc;
    self.pub = core.pub;
    self.commit = bus_redis_script(self.redis, commit_lua);
    self.recall = bus_redis_script(self.redis, recall_lua);
    self.close_day = bus_redis_script(self.redis, close_day_lua);
    self.catalog = zhashx_new();
    zhashx_set_destructor(self.catalog, (zhashx_destructor_fn *)zstr_free);
    self.stores = zhashx_new();
    self.stats = bus_service_stats(self.svc);
    self.c_committed = bus_stats_counter(self.stats, "sales_committed");
    self.c_dups = bus_stats_counter(self.stats, "sales_duplicate");
    self.c_refused = bus_stats_counter(self.stats, "sales_refused");
    self.c_flagged = bus_stats_counter(self.stats, "sales_flagged_for_review");
    self.c_gaps = bus_stats_counter(self.stats, "sequence_gaps");
    self.c_redis_errors = bus_stats_counter(self.stats, "redis_errors");
    bus_service_on(self.svc, "sale.upload", s_upload, &self);
    bus_service_on(self.svc, "sale.get", s_get, &self);
    bus_service_on(self.svc, "sale.replay", s_replay, &self);
    bus_service_on(self.svc, "sale.park", s_park, &self);
    bus_service_on(self.svc, "sale.recall", s_recall, &self);
    bus_service_on(self.svc, "sale.parked", s_parked, &self);
    bus_service_on(self.svc, "day.close", s_close_day, &self);
    bus_service_on(self.svc, "day.current", s_current_day, &self);
    svc_core_run(&core, NULL, NULL);
    bus_info("sales.stopping", "committed=%" PRId64, *self.c_committed);
    zhashx_destroy(&self.catalog);
    zhashx_destroy(&self.stores);
    svc_core_stop(&core);
    return 0;
}
