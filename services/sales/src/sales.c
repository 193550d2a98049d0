/*  =========================================================================
    sales - ingest completed sales from registers, exactly once

    A register uploads each completed sale (request "sale.upload") until it
    is acknowledged. The sale document is decoded once into a typed libpos
    sale (sale_doc.c) and checked by libpos (pos_sale_check: amounts, tax,
    tenders, change and cash rounding add up, every value within bounds): a
    sale that does not add up is corrupt and refused, and the register keeps
    it in its journal. It is then committed by one Lua script that refuses a
    known sale id, checks return lines against their original sales
    (quantity, and what is refunded per unit against what was paid), appends
    the sale to the `sales` stream and tracks the register's sequence, all
    atomically and validating everything before its first write; only then
    is the register acknowledged. A repeated upload is acknowledged as a
    duplicate and changes nothing. A sale that happened is never refused for
    catalog reasons, nor a return for going beyond its original (the money
    left the drawer): an unknown SKU, a price that differs from the catalog,
    a return of more than is left or at more than was paid is committed and
    flagged for review.

    Redis down, or refusing writes (out of memory, disk error, a replica),
    is answered `unavailable` with a retry hint, never as a refusal: the
    register resends the same sale later and nothing was half done.

    Everything else (inventory, reporting, analytics) follows the stream;
    sale.completed is also published on the bus, carrying the stream id, so
    a subscriber that missed events catches up with "sale.replay", whose
    pages are bounded by count and by encoded bytes.
    =========================================================================
*/
#include <bus/bus.h>
#include <bus/keys.h>
#include "svc_main.h"
#include <pos/sale.h>
#include <time.h>
#include "sale_doc.h"
#include "close_day_lua.h"
#include "commit_lua.h"
#include "park_lua.h"
#include "recall_lua.h"

#define S_PROGRAM           "sales"
#define S_TEXT_MAX          128
#define S_REPLAY_MAX        1000
#define S_REPLAY_DEFAULT    100
#define S_REPLAY_BYTES      (512 * 1024) /* a page stays well under the 1 MiB payload limit */
#define S_FLAGS_MAX         1024
#define S_REVIEW_PAGE       100 /* SSCAN COUNT of a sale.review page */
#define S_CATALOG_CHECK_MS  1000
#define S_RETRY_MS          500  /* hint sent with `unavailable` */
#define S_ORIGINAL_RETRY_MS 5000 /* hint for a return whose original is not uploaded yet */
#define S_RECALL_MEMO_MS    (24 * 3600 * 1000LL) /* a retried recall gets its ticket this long */
#define S_DAY_MAX           16                   /* YYYY-MM-DD */

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "sales", 0, 0, "name this service registers under"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    bus_service_t *svc;
    bus_redis_t *redis;
    bus_pub_t *pub;
    int commit, park, recall, close_day;
    zhashx_t *catalog; /* sku -> s_price_t, cleared when catalog:version changes */
    int64_t catalog_version;
    int64_t next_catalog_check;
    zhashx_t *stores; /* known store ids */
    zhashx_t *members; /* store -> s_members_t: its member-price promotions */
    bus_stats_t *stats;
    int64_t *c_committed, *c_retried, *c_waiting, *c_dups, *c_refused, *c_flagged, *c_gaps,
        *c_redis_errors, *c_other_register;
} s_sales_t;

typedef struct {
    bool known;
    int64_t price, member_price;
} s_price_t;

/* ---- Redis failures ------------------------------------------------------ */

/*  bus_service_redis_failed, counted. */
static int s_redis_failed(s_sales_t *self, bus_service_t *svc, redisReply *r, const char *what)
{
    bus_stats_inc(self->c_redis_errors, 1);
    return bus_service_redis_failed(svc, self->redis, r, S_RETRY_MS, what);
}

/*  Element i of an array reply as a string, or NULL if it is not one. */
static const char *s_elem_str(const redisReply *r, size_t i)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
        r->element[i]->type != REDIS_REPLY_STRING)
        return NULL;
    return r->element[i]->str;
}

/* ---- validation of request fields ----------------------------------------- */

static bool s_store_id_ok(const char *id)
{
    return pos_sale_id_ok(id, POS_STORE_ID_MAX, NULL);
}

/*  Is store registered? 1 yes, 0 no, -1 Redis trouble (replied on svc already). */
static int s_store_known(s_sales_t *self, bus_service_t *svc, const char *store)
{
    if (zhashx_lookup(self->stores, store))
        return 1;
    redisReply *r = bus_redis_command(self->redis, "SISMEMBER %s %s", BUS_KEY_STORES, store);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "store lookup");
    bool known = r->integer == 1;
    freeReplyObject(r);
    if (known)
        zhashx_insert(self->stores, store, (void *)1);
    return known ? 1 : 0;
}

/* ---- catalog check (flags for review, never refusal) ------------------------ */

static void s_catalog_refresh(s_sales_t *self)
{
    if (bus_mono_ms() < self->next_catalog_check)
        return;
    self->next_catalog_check = bus_mono_ms() + S_CATALOG_CHECK_MS;
    redisReply *r = bus_redis_command(self->redis, "GET %s", BUS_KEY_CATALOG_VERSION);
    int64_t v = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    if (r)
        freeReplyObject(r);
    if (v != self->catalog_version) {
        zhashx_purge(self->catalog);
        self->catalog_version = v;
    }
}

/*  A store's member-price promotions (the devices service's cfg:{S}:promos, ended ones too: a
    sale rung before one ended may upload later), read again when cfg:{S}'s version moves:
    "<sku> <price>" of each, so a register's promotional member price is not taken for a price
    the catalog does not know. */
typedef struct {
    int64_t version, next_check_ms;
    zhashx_t *prices; /* "<sku> <price>" -> (void *)1 */
} s_members_t;

static void s_members_free(s_members_t **m_p)
{
    if (*m_p) {
        zhashx_destroy(&(*m_p)->prices);
        free(*m_p);
        *m_p = NULL;
    }
}

static void s_members_read(s_sales_t *self, s_members_t *m, const char *store)
{
    char key[BUS_KEY_MAX];
    if (!bus_key_cfg(key, store, ""))
        return;
    redisReply *r = bus_redis_command(self->redis, "HGET %s version", key);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        return; /* Redis trouble: keep what is known */
    }
    int64_t v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    freeReplyObject(r);
    if (v == m->version || !bus_key_cfg(key, store, ":promos"))
        return;
    r = bus_redis_command(self->redis, "HVALS %s", key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return;
    }
    zhashx_purge(m->prices);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        bus_val_t *p = e->type == REDIS_REPLY_STRING ? bus_val_decode(e->str, e->len, NULL, NULL)
                                                     : NULL;
        const char *kind = bus_val_map_get_str(p, "kind"), *sku = bus_val_map_get_str(p, "sku");
        int64_t price = 0;
        char k[POS_SKU_MAX + 32];
        if (kind && sku && strcmp(kind, "member_price") == 0 &&
            bus_val_map_get_int(p, "price", &price) && price > 0 &&
            snprintf(k, sizeof(k), "%s %" PRId64, sku, price) < (int)sizeof(k))
            zhashx_update(m->prices, k, (void *)1);
        bus_val_destroy(&p);
    }
    freeReplyObject(r);
    m->version = v;
}

/*  Is price a member price a promotion of the store gives sku? */
static bool s_member_promo(s_sales_t *self, const char *store, const char *sku, int64_t price)
{
    s_members_t *m = zhashx_lookup(self->members, store);
    if (!m) {
        m = calloc(1, sizeof(*m));
        if (!m || !(m->prices = zhashx_new())) {
            s_members_free(&m);
            return false;
        }
        m->version = -1;
        zhashx_insert(self->members, store, m);
    }
    if (bus_mono_ms() >= m->next_check_ms) {
        m->next_check_ms = bus_mono_ms() + S_CATALOG_CHECK_MS;
        s_members_read(self, m, store);
    }
    char k[POS_SKU_MAX + 32];
    snprintf(k, sizeof(k), "%s %" PRId64, sku, price);
    return zhashx_lookup(m->prices, k) != NULL;
}

static const s_price_t *s_catalog_price(s_sales_t *self, const char *sku)
{
    s_price_t *p = zhashx_lookup(self->catalog, sku);
    if (p)
        return p;
    char key[BUS_KEY_MAX];
    if (!bus_key_catalog_item(key, sku))
        return NULL;
    redisReply *r = bus_redis_command(self->redis, "HMGET %s price member_price", key);
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

/*  "flag:sku,..." for the live sale lines whose SKU or price the catalog does not know. Return
    lines are checked against their original sale by the commit script instead. */
static void s_review_flags(s_sales_t *self, const pos_sale_t *sale, char *flags, size_t size)
{
    flags[0] = '\0';
    s_catalog_refresh(self);
    size_t used = 0;
    for (int i = 0; i < sale->nlines; i++) {
        const pos_line_t *l = &sale->lines[i];
        if (l->voided || l->is_return)
            continue;
        const s_price_t *p = s_catalog_price(self, l->item.sku);
        const char *flag = NULL;
        if (p && !p->known)
            flag = "unknown_sku";
        else if (p && l->unit_price != p->price && l->unit_price != p->member_price &&
                 !s_member_promo(self, sale->store, l->item.sku, l->unit_price))
            flag = "price_mismatch";
        if (flag && used + strlen(flag) + strlen(l->item.sku) + 3 < size)
            used += (size_t)snprintf(flags + used, size - used, "%s%s:%s", used ? "," : "", flag,
                                     l->item.sku);
    }
}

/* ---- handlers ---------------------------------------------------------- */

static void s_today(char *out, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(out, size, "%Y-%m-%d", &tm);
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

/*  Announce a hole in a register's sequence, to subscribers and to the register itself. */
static void s_announce_gap(s_sales_t *self, const pos_sale_t *sale, int64_t from, int64_t to)
{
    bus_stats_inc(self->c_gaps, 1);
    bus_val_t *gap = bus_val_new_map();
    bus_val_map_set_str(gap, "store", sale->store);
    bus_val_map_set_str(gap, "register", sale->reg);
    bus_val_map_set_int(gap, "missing_from", from);
    bus_val_map_set_int(gap, "missing_to", to);
    bus_val_t *resend = bus_val_dup(gap);
    bus_pub_publish(self->pub, "sale.gap", "sale.gap", &gap);
    char topic[BUS_TOPIC_MAX];
    snprintf(topic, sizeof(topic), "register.%s.%s.resend", sale->store, sale->reg);
    bus_pub_publish(self->pub, topic, "register.resend", &resend);
    bus_info("sales.gap", "store=%s register=%s missing=%" PRId64 "..%" PRId64, sale->store,
             sale->reg, from, to);
}

static void s_arg(const char **argv, size_t *lens, int *argc, const char *arg, size_t len)
{
    argv[*argc] = arg;
    lens[(*argc)++] = len;
}

/*  Run the commit script for a checked sale. Returns its reply (the caller frees it) or NULL
    after answering on svc (Redis trouble, or a sale whose keys cannot be built). */
static redisReply *s_commit(s_sales_t *self, bus_service_t *svc, const bus_val_t *doc,
                            const pos_sale_t *sale, const char *flags, const char *request_id)
{
    sales_commit_keys_t *keys = calloc(1, sizeof(*keys));
    bus_buf_t payload = {0}, returns = {0};
    redisReply *r = NULL;
    char why[POS_WHY_MAX];
    if (!keys || bus_val_encode(doc, &payload) != 0) {
        bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
        goto out_free;
    }
    if (sales_doc_commit_keys(sale, keys, why, sizeof(why)) != 0) {
        bus_stats_inc(self->c_refused, 1);
        bus_service_error(svc, "bad_sale", "%s", why);
        goto out_free;
    }
    if (sales_doc_returns(sale, keys, &returns) != 0) {
        bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
        goto out_free;
    }
    char seq[24], today[S_DAY_MAX], norig[8];
    snprintf(seq, sizeof(seq), "%" PRId64, sale->seq);
    snprintf(norig, sizeof(norig), "%d", keys->noriginals);
    s_today(today, sizeof(today));
    const char *argv[SALES_COMMIT_KEYS_MAX + 10 + POS_SALE_ORIGINALS_MAX];
    size_t lens[sizeof(argv) / sizeof(argv[0])];
    int argc = 0;
    for (int k = 0; k < keys->nkeys; k++)
        s_arg(argv, lens, &argc, keys->keys[k], strlen(keys->keys[k]));
    s_arg(argv, lens, &argc, sale->sale_id, strlen(sale->sale_id));
    s_arg(argv, lens, &argc, (const char *)payload.data, payload.len);
    s_arg(argv, lens, &argc, sale->reg, strlen(sale->reg));
    s_arg(argv, lens, &argc, seq, strlen(seq));
    s_arg(argv, lens, &argc, sale->store, strlen(sale->store));
    s_arg(argv, lens, &argc, flags, strlen(flags));
    s_arg(argv, lens, &argc, today, strlen(today));
    s_arg(argv, lens, &argc, norig, strlen(norig));
    s_arg(argv, lens, &argc, (const char *)returns.data, returns.len);
    s_arg(argv, lens, &argc, request_id, strlen(request_id));
    for (int k = 0; k < keys->noriginals; k++)
        s_arg(argv, lens, &argc, keys->originals[k], strlen(keys->originals[k]));
    r = bus_redis_evalsha(self->redis, self->commit, keys->nkeys, argc, argv, lens);
    if (!bus_redis_reply_ok(r)) {
        s_redis_failed(self, svc, r, "commit");
        r = NULL;
    }
out_free:
    bus_buf_free(&returns);
    bus_buf_free(&payload);
    free(keys);
    return r;
}

/*  Answer the commit script's reply: {'ok', stream id, day, gap from, gap to},
    {'dup', stream id, day} or {'err', code, message}. Takes r. */
static int s_upload_reply(s_sales_t *self, bus_service_t *svc, const bus_val_t *doc,
                          const pos_sale_t *sale, const char *flags, redisReply *r,
                          bus_val_t *reply)
{
    const char *status = s_elem_str(r, 0);
    const char *a = s_elem_str(r, 1), *b = s_elem_str(r, 2);
    if (status && strcmp(status, "err") == 0 && a && b && strcmp(a, "original_pending") == 0) {
        /* a return that came before its original (uploads from two registers cross): not a
           refusal, the register resends it after the hint and it commits once the original did */
        bus_stats_inc(self->c_waiting, 1);
        bus_service_unavailable(svc, S_ORIGINAL_RETRY_MS, "%s", b);
        freeReplyObject(r);
        return -1;
    }
    if (status && strcmp(status, "err") == 0 && a && b) {
        bus_stats_inc(self->c_refused, 1);
        bus_service_error(svc, a, "%s", b);
        freeReplyObject(r);
        return -1;
    }
    if (!status || !a || !b || (strcmp(status, "ok") && strcmp(status, "dup")))
        return s_redis_failed(self, svc, r, "commit reply");
    bool dup = strcmp(status, "dup") == 0;
    /* a retry of the very request that committed the sale gets that request's reply again */
    bool retry = dup && r->elements >= 7 && r->element[5]->type == REDIS_REPLY_INTEGER &&
                 r->element[5]->integer == 1;
    const char *first_flags = retry ? s_elem_str(r, 6) : NULL;
    bus_val_map_set_str(reply, "sale_id", sale->sale_id);
    bus_val_map_set_str(reply, "stream_id", a);
    bus_val_map_set_str(reply, "business_day", b);
    bus_val_map_set_bool(reply, "duplicate", dup && !retry);
    if (retry) {
        bus_stats_inc(self->c_retried, 1);
        if (first_flags && first_flags[0])
            bus_val_map_set_str(reply, "review", first_flags);
        freeReplyObject(r);
        return 0;
    }
    if (dup) {
        bus_stats_inc(self->c_dups, 1);
        freeReplyObject(r);
        return 0;
    }
    bus_stats_inc(self->c_committed, 1);
    /* the script's flags: the catalog's and those of a return beyond what its original allows */
    const char *committed_flags = r->elements >= 6 ? s_elem_str(r, 5) : NULL;
    if (committed_flags)
        flags = committed_flags;
    if (flags[0]) {
        bus_stats_inc(self->c_flagged, 1);
        bus_val_map_set_str(reply, "review", flags);
    }
    bus_val_t *event = s_sale_event(doc, a, b, flags);
    bus_pub_publish(self->pub, "sale.completed", "sale.completed", &event);
    bool has_gap = r->elements >= 5 && r->element[3]->type == REDIS_REPLY_INTEGER &&
                   r->element[4]->type == REDIS_REPLY_INTEGER;
    int64_t gap_from = has_gap ? r->element[3]->integer : 0;
    int64_t gap_to = has_gap ? r->element[4]->integer : 0;
    if (gap_from > 0 && gap_to >= gap_from)
        s_announce_gap(self, sale, gap_from, gap_to);
    freeReplyObject(r);
    return 0;
}

static int s_upload(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    bus_val_t *doc = bus_msg_body(req);
    pos_sale_t sale;
    pos_sale_init(&sale);
    char why[POS_WHY_MAX], flags[S_FLAGS_MAX];
    int rc = -1;
    if (sales_doc_decode(doc, &sale, why, sizeof(why)) != 0 ||
        pos_sale_check(&sale, why, sizeof(why)) != POS_OK) {
        bus_stats_inc(self->c_refused, 1);
        bus_service_error(svc, "bad_sale", "%s", why);
        goto out_clear_sale;
    }
    if (!bus_service_caller_is(svc, sale.store, sale.reg)) {
        /* before Redis is touched: a forged id must never shadow the real register's sale */
        bus_stats_inc(self->c_other_register, 1);
        bus_service_error(svc, BUS_ERR_FORBIDDEN,
                          "register %s may upload only its own sales, not %s/%s",
                          bus_service_caller(svc)->name, sale.store, sale.reg);
        goto out_clear_sale;
    }
    int known = s_store_known(self, svc, sale.store);
    if (known <= 0) {
        if (known == 0) {
            bus_stats_inc(self->c_refused, 1);
            bus_service_error(svc, "unknown_store", "store '%s' is not registered", sale.store);
        }
        goto out_clear_sale;
    }
    s_review_flags(self, &sale, flags, sizeof(flags));
    redisReply *r = s_commit(self, svc, doc, &sale, flags, bus_msg_id(req));
    if (r)
        rc = s_upload_reply(self, svc, doc, &sale, flags, r, reply);
out_clear_sale:
    pos_sale_clear(&sale);
    return rc;
}

/*  The "payload" and "bday" fields of a stream entry reply ({id, {field, value, ...}}). */
static const char *s_entry_field(const redisReply *e, const char *name, size_t *len)
{
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    const redisReply *f = e->element[1];
    for (size_t k = 0; k + 1 < f->elements; k += 2)
        if (f->element[k]->type == REDIS_REPLY_STRING &&
            f->element[k + 1]->type == REDIS_REPLY_STRING &&
            strcmp(f->element[k]->str, name) == 0) {
            if (len)
                *len = f->element[k + 1]->len;
            return f->element[k + 1]->str;
        }
    return NULL;
}

/*  What the returns committed so far took back of a sale, per SKU: reply.returned {sku: qty}
    (pieces or grams) and reply.refunded {sku: fen} (the commit script keeps both in the
    returned hash), so that a register checks a new return against what is left, not against
    what was sold. */
static int s_returned_so_far(s_sales_t *self, bus_service_t *svc, const char *store,
                             const char *id, bus_val_t *reply)
{
    char key[BUS_KEY_MAX];
    if (!bus_key_returned(key, store, id))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "sale id too long");
    redisReply *h = bus_redis_command(self->redis, "HGETALL %s", key);
    if (!bus_redis_reply_ok(h) || h->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(self, svc, h, "returns lookup");
    bus_val_t *returned = bus_val_new_map(), *refunded = bus_val_new_map();
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const char *field = s_elem_str(h, i), *value = s_elem_str(h, i + 1);
        char *end = NULL;
        long long v = value ? strtoll(value, &end, 10) : 0;
        if (!field || !end || end == value || *end != '\0' || v <= 0)
            continue;
        /* <sku>: the quantity returned; fen:<sku>: the fen refunded (':' is never in a SKU) */
        if (strncmp(field, "fen:", 4) == 0)
            bus_val_map_set_int(refunded, field + 4, v);
        else if (!strchr(field, ':'))
            bus_val_map_set_int(returned, field, v);
    }
    freeReplyObject(h);
    bus_val_map_set(reply, "returned", &returned);
    bus_val_map_set(reply, "refunded", &refunded);
    return 0;
}

static int s_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *id = bus_val_map_get_str(bus_msg_body(req), "sale_id");
    char key[BUS_KEY_MAX];
    if (!s_store_id_ok(store) || !pos_sale_id_ok(id, POS_SALE_ID_MAX, "-") ||
        !bus_key_sale(key, store, id))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and sale_id required");
    redisReply *r = bus_redis_command(self->redis, "HMGET %s stream_id bday flags", key);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return s_redis_failed(self, svc, r, "sale lookup");
    const char *sid = s_elem_str(r, 0);
    if (!sid) {
        freeReplyObject(r);
        return bus_service_error(svc, "not_found", "no sale %s in store %s", id, store);
    }
    redisReply *e =
        bus_redis_command(self->redis, "XRANGE %s %s %s", BUS_KEY_SALES_STREAM, sid, sid);
    if (!bus_redis_reply_ok(e)) {
        freeReplyObject(r);
        return s_redis_failed(self, svc, e, "sale read");
    }
    size_t plen = 0;
    const char *payload = e->type == REDIS_REPLY_ARRAY && e->elements == 1
                              ? s_entry_field(e->element[0], "payload", &plen)
                              : NULL;
    bus_val_t *sale = payload ? bus_val_decode(payload, plen, NULL, NULL) : NULL;
    const char *bday = s_elem_str(r, 1), *flags = s_elem_str(r, 2);
    bus_val_t *event = sale ? s_sale_event(sale, sid, bday ? bday : "", flags ? flags : "") : NULL;
    int rc = 0;
    if (event) {
        bus_val_map_set(reply, "sale", &event);
        rc = s_returned_so_far(self, svc, store, id, reply);
    } else {
        rc = bus_service_error(svc, BUS_ERR_INTERNAL, "sale %s has no stream entry", id);
    }
    bus_val_destroy(&sale);
    freeReplyObject(e);
    freeReplyObject(r);
    return rc;
}

/*  Committed sales after a stream id, in pages bounded by count and by encoded bytes: a page
    stops before the sale that would take it past S_REPLAY_BYTES (a page always holds at least
    one sale, and a sale fits the payload limit it was uploaded under), with `more` set. */
static int s_replay(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *after = bus_val_map_get_str(bus_msg_body(req), "after");
    int64_t count = S_REPLAY_DEFAULT;
    bus_val_map_get_int(bus_msg_body(req), "count", &count);
    if (count < 1 || count > S_REPLAY_MAX)
        count = S_REPLAY_MAX;
    char start[BUS_STREAM_ID_MAX + 2];
    unsigned long long ms, sq;
    if (!after || !*after || strcmp(after, "0") == 0)
        snprintf(start, sizeof(start), "-");
    else if (bus_stream_id_valid(after) && sscanf(after, "%llu-%llu", &ms, &sq) == 2)
        snprintf(start, sizeof(start), "(%llu-%llu", ms, sq);
    else
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "after must be a stream id or 0");
    redisReply *r = bus_redis_command(self->redis, "XRANGE %s %s + COUNT %lld",
                                      BUS_KEY_SALES_STREAM, start, (long long)count);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(self, svc, r, "replay");
    bus_val_t *list = bus_val_new_arr();
    bus_buf_t scratch = {0};
    const char *last = after && *after ? after : "0";
    size_t bytes = 0;
    bool full = false;
    for (size_t i = 0; i < r->elements && !full; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        size_t plen = 0;
        const char *payload = s_entry_field(e, "payload", &plen);
        const char *bday = s_entry_field(e, "bday", NULL);
        bus_val_t *sale = payload ? bus_val_decode(payload, plen, NULL, NULL) : NULL;
        bus_val_t *event =
            sale ? s_sale_event(sale, e->element[0]->str, bday ? bday : "", NULL) : NULL;
        bus_buf_reset(&scratch);
        if (event && bus_val_encode(event, &scratch) == 0 && bytes + scratch.len > S_REPLAY_BYTES &&
            bus_val_size(list) > 0)
            full = true; /* the next page starts with this sale */
        else {
            bytes += scratch.len;
            if (event)
                bus_val_arr_push(list, &event);
            last = e->element[0]->str;
        }
        bus_val_destroy(&event);
        bus_val_destroy(&sale);
    }
    bus_buf_free(&scratch);
    bus_val_map_set_int(reply, "count", (int64_t)bus_val_size(list));
    bus_val_map_set(reply, "sales", &list);
    bus_val_map_set_str(reply, "last", last);
    bus_val_map_set_bool(reply, "more", full || (int64_t)r->elements == count);
    freeReplyObject(r);
    return 0;
}

/*  Is the request id usable in a park id (letters, digits, '-', '_')? */
static bool s_request_id_ok(const char *id)
{
    return pos_sale_id_ok(id, BUS_MSG_ID_LEN, "-");
}

static int s_park(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    bus_val_t *body = bus_msg_body(req);
    const char *store = bus_val_map_get_str(body, "store");
    const char *reg = bus_val_map_get_str(body, "register");
    bus_val_t *ticket = bus_val_map_get(body, "ticket");
    if (!s_store_id_ok(store) || !s_store_id_ok(reg) || bus_val_type(ticket) != BUS_VAL_MAP)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store, register and ticket required");
    if (!s_request_id_ok(bus_msg_id(req)))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "request id must be letters, digits, '-' or '_'");
    if (!bus_service_caller_is(svc, store, reg)) {
        bus_stats_inc(self->c_other_register, 1);
        return bus_service_error(svc, BUS_ERR_FORBIDDEN,
                                 "register %s may park only its own tickets",
                                 bus_service_caller(svc)->name);
    }
    int known = s_store_known(self, svc, store);
    if (known <= 0)
        return known < 0
                   ? -1
                   : bus_service_error(svc, "unknown_store", "store '%s' is not registered", store);
    /* the park id is the request's: a resent park stores the same ticket under the same id, and
       the script does not park it again once it was recalled */
    char park_id[S_TEXT_MAX], key[BUS_KEY_MAX];
    snprintf(park_id, sizeof(park_id), "%s-%s", reg, bus_msg_id(req));
    bus_key_parked(key, store);
    bus_val_t *entry = bus_val_new_map();
    bus_val_map_set_str(entry, "register", reg);
    bus_val_map_set_int(entry, "parked_at", bus_now_ms());
    bus_val_t *copy = bus_val_dup(ticket);
    bus_val_map_set(entry, "ticket", &copy);
    bus_buf_t buf = {0};
    int rc = bus_val_encode(entry, &buf);
    bus_val_destroy(&entry);
    if (rc != 0) {
        bus_buf_free(&buf);
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    }
    const char *argv[] = {key, park_id, (const char *)buf.data};
    size_t lens[] = {strlen(key), strlen(park_id), buf.len};
    redisReply *r = bus_redis_evalsha(self->redis, self->park, 1, 3, argv, lens);
    bus_buf_free(&buf);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "park");
    freeReplyObject(r);
    bus_val_map_set_str(reply, "park_id", park_id);
    return 0;
}

static int s_recall(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *park_id = bus_val_map_get_str(bus_msg_body(req), "park_id");
    if (!s_store_id_ok(store) || !pos_sale_id_ok(park_id, S_TEXT_MAX, "-"))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and park_id required");
    if (!bus_service_caller_is(svc, store, NULL)) {
        /* a ticket parked at one till may be recalled at another of the same store only */
        bus_stats_inc(self->c_other_register, 1);
        return bus_service_error(svc, BUS_ERR_FORBIDDEN,
                                 "register %s may recall only tickets of its own store",
                                 bus_service_caller(svc)->name);
    }
    char key[BUS_KEY_MAX], now[24], memo[24];
    bus_key_parked(key, store);
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    snprintf(memo, sizeof(memo), "%lld", S_RECALL_MEMO_MS);
    const char *argv[] = {key, park_id, bus_msg_id(req), now, memo};
    redisReply *r = bus_redis_evalsha(self->redis, self->recall, 1, 5, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        !s_elem_str(r, 0) || !s_elem_str(r, 1))
        return s_redis_failed(self, svc, r, "recall");
    bus_val_t *entry = strcmp(s_elem_str(r, 0), "gone") != 0
                           ? bus_val_decode(r->element[1]->str, r->element[1]->len, NULL, NULL)
                           : NULL;
    int rc = 0;
    if (!entry)
        rc = bus_service_error(svc, "not_found",
                               "no parked ticket %s in store %s (recalled already?)", park_id,
                               store);
    else {
        bus_val_t *ticket = bus_val_dup(bus_val_map_get(entry, "ticket"));
        const char *by = bus_val_map_get_str(entry, "register");
        bus_val_map_set(reply, "ticket", &ticket);
        bus_val_map_set_str(reply, "parked_by", by ? by : "");
    }
    bus_val_destroy(&entry);
    freeReplyObject(r);
    return rc;
}

static int s_parked(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    char key[BUS_KEY_MAX];
    if (!s_store_id_ok(store) || !bus_key_parked(key, store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required");
    redisReply *r = bus_redis_command(self->redis, "HKEYS %s", key);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(self, svc, r, "parked list");
    bus_val_t *list = bus_val_new_arr();
    for (size_t i = 0; i < r->elements; i++) {
        const char *id = s_elem_str(r, i);
        if (!id || id[0] == '~') /* '~': the memo of a recalled ticket (see recall.lua) */
            continue;
        bus_val_t *v = bus_val_new_str(id);
        bus_val_arr_push(list, &v);
    }
    bus_val_map_set(reply, "parked", &list);
    freeReplyObject(r);
    return 0;
}

/*  sale.review {store, cursor?}: the store's sales flagged for review, a page (SSCAN) at a time:
    {sales: [{sale_id, business_day, flags}], cursor, more}. */
static int s_review(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *cursor = bus_val_map_get_str(bus_msg_body(req), "cursor");
    char key[BUS_KEY_MAX], skey[BUS_KEY_MAX];
    size_t n = cursor ? strlen(cursor) : 1;
    bool digits = n > 0 && n <= 20;
    for (size_t i = 0; cursor && i < n; i++)
        digits = digits && cursor[i] >= '0' && cursor[i] <= '9';
    if (!s_store_id_ok(store) || !digits || !bus_key_review(key, store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required; cursor digits");
    redisReply *r = bus_redis_command(self->redis, "SSCAN %s %s COUNT %d", key,
                                      cursor ? cursor : "0", S_REVIEW_PAGE);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(self, svc, r, "review list");
    bus_val_t *list = bus_val_new_arr();
    const redisReply *ids = r->element[1];
    for (size_t i = 0; i < ids->elements; i++) {
        const char *id = ids->element[i]->type == REDIS_REPLY_STRING ? ids->element[i]->str : NULL;
        if (!id || !bus_key_sale(skey, store, id))
            continue;
        redisReply *h = bus_redis_command(self->redis, "HMGET %s bday flags", skey);
        if (!bus_redis_reply_ok(h) || h->type != REDIS_REPLY_ARRAY || h->elements != 2) {
            bus_val_destroy(&list);
            freeReplyObject(r);
            return s_redis_failed(self, svc, h, "review read");
        }
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "sale_id", id);
        bus_val_map_set_str(row, "business_day", s_elem_str(h, 0) ? s_elem_str(h, 0) : "");
        bus_val_map_set_str(row, "flags", s_elem_str(h, 1) ? s_elem_str(h, 1) : "");
        bus_val_arr_push(list, &row);
        freeReplyObject(h);
    }
    bus_val_map_set(reply, "sales", &list);
    bus_val_map_set_str(reply, "cursor", r->element[0]->str);
    bus_val_map_set_bool(reply, "more", strcmp(r->element[0]->str, "0") != 0);
    freeReplyObject(r);
    return 0;
}

/*  sale.reviewed {store, sale_id}: someone looked at a flagged sale: it leaves the review list
    (its flags stay on the sale). {sale_id, removed} (false: it was not on the list). */
static int s_reviewed(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *id = bus_val_map_get_str(bus_msg_body(req), "sale_id");
    char key[BUS_KEY_MAX];
    if (!s_store_id_ok(store) || !pos_sale_id_ok(id, POS_SALE_ID_MAX, "-") ||
        !bus_key_review(key, store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and sale_id required");
    redisReply *r = bus_redis_command(self->redis, "SREM %s %s", key, id);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "review done");
    bus_val_map_set_str(reply, "sale_id", id);
    bus_val_map_set_bool(reply, "removed", r->integer == 1);
    freeReplyObject(r);
    return 0;
}

/*  Next calendar day after day (YYYY-MM-DD), or today if that is later. */
static void s_next_day(const char *day, char *out, size_t size)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    char today[S_DAY_MAX];
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
    if (!s_store_id_ok(store))
        return bus_service_error(svc, "unknown_store", "store required and registered");
    int known = s_store_known(self, svc, store);
    if (known <= 0)
        return known < 0 ? -1
                         : bus_service_error(svc, "unknown_store", "store required and registered");
    char bday_key[BUS_KEY_MAX], close_key[BUS_KEY_MAX];
    bus_key_bday(bday_key, store);
    bus_key_dayclose(close_key, store);
    redisReply *cur = bus_redis_command(self->redis, "GET %s", bday_key);
    if (!bus_redis_reply_ok(cur))
        return s_redis_failed(self, svc, cur, "business day");
    char day[S_DAY_MAX], next[S_DAY_MAX];
    if (cur->type == REDIS_REPLY_STRING)
        snprintf(day, sizeof(day), "%s", cur->str);
    else
        s_today(day, sizeof(day));
    freeReplyObject(cur);
    s_next_day(day, next, sizeof(next));
    /* the request id makes a retried close answer the first close, not close the next day */
    const char *argv[] = {bday_key, BUS_KEY_SALES_STREAM, close_key, day, next, bus_msg_id(req)};
    redisReply *r = bus_redis_evalsha(self->redis, self->close_day, 3, 6, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(self, svc, r, "day close");
    const char *status = s_elem_str(r, 0), *upto = s_elem_str(r, 1);
    const char *closed = s_elem_str(r, 2), *opened = s_elem_str(r, 3);
    int rc = 0;
    if (status && strcmp(status, "ok") == 0 && upto && closed && opened) {
        bus_val_map_set_str(reply, "closed_day", closed);
        bus_val_map_set_str(reply, "next_day", opened);
        bus_val_map_set_str(reply, "upto", upto);
        bus_info("sales.day_closed", "store=%s day=%s upto=%s", store, closed, upto);
    } else
        rc = bus_service_unavailable(svc, S_RETRY_MS, "the business day changed meanwhile; retry");
    freeReplyObject(r);
    return rc;
}

static int s_current_day(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_sales_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    char key[BUS_KEY_MAX];
    if (!s_store_id_ok(store) || !bus_key_bday(key, store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required");
    redisReply *r = bus_redis_command(self->redis, "GET %s", key);
    if (!bus_redis_reply_ok(r))
        return s_redis_failed(self, svc, r, "business day");
    char day[S_DAY_MAX];
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
    self.park = bus_redis_script(self.redis, park_lua);
    self.recall = bus_redis_script(self.redis, recall_lua);
    self.close_day = bus_redis_script(self.redis, close_day_lua);
    self.catalog = zhashx_new();
    zhashx_set_destructor(self.catalog, (zhashx_destructor_fn *)zstr_free);
    self.stores = zhashx_new();
    self.members = zhashx_new();
    zhashx_set_destructor(self.members, (zhashx_destructor_fn *)s_members_free);
    self.stats = bus_service_stats(self.svc);
    self.c_committed = bus_stats_counter(self.stats, "sales_committed");
    self.c_retried = bus_stats_counter(self.stats, "uploads_retried");
    self.c_waiting = bus_stats_counter(self.stats, "returns_waiting_for_original");
    self.c_dups = bus_stats_counter(self.stats, "sales_duplicate");
    self.c_refused = bus_stats_counter(self.stats, "sales_refused");
    self.c_flagged = bus_stats_counter(self.stats, "sales_flagged_for_review");
    self.c_gaps = bus_stats_counter(self.stats, "sequence_gaps");
    self.c_redis_errors = bus_stats_counter(self.stats, "redis_errors");
    self.c_other_register = bus_stats_counter(self.stats, "refused_other_register");
    /* Who may call what (docs/protocol.md). Registers act only for themselves (checked in the
       handlers); operators may upload for any register, to recover a register's journal by
       hand. sale.upload is exactly once by itself: the commit script keys the sale on its id
       and the request id. */
    enum { REG_OP = BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR };
    static const bus_method_t methods[] = {
        {"sale.upload", s_upload, BUS_METHOD_IDEMPOTENT, REG_OP},
        {"sale.get", s_get, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"sale.replay", s_replay, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"sale.park", s_park, BUS_METHOD_CHANGE, REG_OP},
        {"sale.recall", s_recall, BUS_METHOD_CHANGE, REG_OP},
        {"sale.parked", s_parked, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"day.close", s_close_day, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE},
        {"day.current", s_current_day, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"sale.review", s_review, BUS_METHOD_READ, BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE},
        {"sale.reviewed", s_reviewed, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR},
        {NULL, NULL, 0, 0}};
    int rc = bus_service_methods(self.svc, methods, &self);
    if (rc != 0)
        bus_error("sales.start", "cannot register methods: out of memory");
    else
        svc_core_run(&core, NULL, NULL);
    bus_info("sales.stopping", "committed=%" PRId64, bus_stats_load(self.c_committed));
    zhashx_destroy(&self.catalog);
    zhashx_destroy(&self.stores);
    zhashx_destroy(&self.members);
    svc_core_stop(&core);
    return rc == 0 ? 0 : 1;
}
