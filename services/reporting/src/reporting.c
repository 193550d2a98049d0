/*  =========================================================================
    reporting - sales aggregates, X and Z reports, exact to the fen

    A worker thread follows the `sales` stream through the consumer group
    "reporting" and adds each committed sale to per store and business day
    aggregates with one Lua script that also marks the sale as applied, so
    every sale is counted exactly once however many instances run and
    whichever of them dies. Reports are read from those aggregates, so they
    always equal the sum of the committed sales that have been applied; a Z
    report first waits until every sale committed before the day closed has
    been applied, and records per register the first and last sequence and
    the number of records, which proves the day has no holes.
    =========================================================================
*/
#include <bus/bus.h>
#include "svc_main.h"
#include <time.h>
#include "apply_lua.h"

#define S_PROGRAM       "reporting"
#define S_STREAM        "sales:stream"
#define S_GROUP         "reporting"
#define S_KEY_MAX       256
#define S_ID_MAX        16
#define S_PAIR_SKUS_MAX "20" /* distinct SKUs of one sale counted for basket pairs */
#define S_TOP_DEFAULT   10
#define S_TOP_MAX       1000
#define S_LAG_BUCKETS   10001 /* apply lag histogram, one bucket per ms; the last is ">= 10 s" */
#define S_PERCENT       100

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "reporting", 0, 0, "name this service registers under"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    bus_service_t *svc;
    bus_redis_t *redis;  /* main thread: queries */
    bus_redis_t *wredis; /* worker thread: applying */
    int apply;           /* script handle on wredis */
    bus_stream_worker_t *worker;
    int64_t *c_applied, *c_bad;
    int64_t *lag; /* histogram of (applied - rung up at the register), ms */
    int64_t *g_lag_p50, *g_lag_p99;
} s_reporting_t;

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

static bool s_day_ok(const char *day)
{
    int y, m, d;
    return day && strlen(day) == 10 && sscanf(day, "%4d-%2d-%2d", &y, &m, &d) == 3;
}

/* ---- applying sales (worker thread) ------------------------------------ */

/*  One batch's increments, summed per Redis key and field before anything is sent. */
typedef struct {
    zhashx_t *inc;  /* "key\x1ffield" -> int64 delta */
    zhashx_t *seqs; /* "key\x1freg" -> int64[2] min, max */
    zhashx_t *days; /* days set key -> day (string) */
} s_agg_t;

#define S_SEP       "\x1f"
#define S_PAIRS_MAX 20 /* distinct SKUs of one sale counted for basket pairs */
#define S_FIELD_MAX 256

static void s_add(s_agg_t *agg, const char *key, const char *field, int64_t v)
{
    if (v == 0)
        return;
    char k[S_KEY_MAX + S_FIELD_MAX];
    snprintf(k, sizeof(k), "%s" S_SEP "%s", key, field);
    int64_t *cell = zhashx_lookup(agg->inc, k);
    if (!cell) {
        cell = calloc(1, sizeof(*cell));
        if (!cell)
            return;
        zhashx_insert(agg->inc, k, cell);
    }
    *cell += v;
}

static void s_seq(s_agg_t *agg, const char *key, const char *reg, int64_t seq)
{
    char k[S_KEY_MAX + S_FIELD_MAX];
    snprintf(k, sizeof(k), "%s" S_SEP "%s", key, reg);
    int64_t *mm = zhashx_lookup(agg->seqs, k);
    if (!mm) {
        mm = malloc(2 * sizeof(*mm));
        if (!mm)
            return;
        mm[0] = mm[1] = seq;
        zhashx_insert(agg->seqs, k, mm);
    }
    if (seq < mm[0])
        mm[0] = seq;
    if (seq > mm[1])
        mm[1] = seq;
}

static int64_t s_int(const bus_val_t *map, const char *key)
{
    int64_t v = 0;
    bus_val_map_get_int(map, key, &v);
    return v;
}

static int s_cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*  Add one sale's increments (the same aggregates report.day reads). */
static void s_aggregate(s_agg_t *agg, const bus_val_t *s, const char *store, const char *day,
                        const char *hour)
{
    char P[S_KEY_MAX], R[S_KEY_MAX], key[S_KEY_MAX], field[S_FIELD_MAX];
    snprintf(P, sizeof(P), "rep:{%s}:%s", store, day);
    snprintf(R, sizeof(R), "%s:regs", P);
    const char *reg = bus_val_map_get_str(s, "register");
    const char *cashier = bus_val_map_get_str(s, "cashier");
    const char *kind = bus_val_map_get_str(s, "kind");
    snprintf(key, sizeof(key), "rep:{%s}:days", store);
    if (!zhashx_lookup(agg->days, key))
        zhashx_insert(agg->days, key, strdup(day));
    s_seq(agg, R, reg, s_int(s, "seq"));
    snprintf(field, sizeof(field), "%s:records", reg);
    s_add(agg, R, field, 1);
    if (strcmp(kind, "nosale") == 0) {
        s_add(agg, P, "nosale", 1);
        snprintf(field, sizeof(field), "%s:nosale", reg);
        s_add(agg, R, field, 1);
        return;
    }
    s_add(agg, P, "tickets", 1);
    s_add(agg, P, strcmp(kind, "return") == 0 ? "return_tickets" : "sale_tickets", 1);
    const char *skus[S_PAIRS_MAX];
    int nskus = 0;
    bus_val_t *lines = bus_val_map_get(s, "lines");
    char items[S_KEY_MAX], cats[S_KEY_MAX], tax[S_KEY_MAX];
    snprintf(items, sizeof(items), "%s:items", P);
    snprintf(cats, sizeof(cats), "%s:cats", P);
    snprintf(tax, sizeof(tax), "%s:tax", P);
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        const bus_val_t *l = bus_val_arr_get(lines, i);
        bool voided = false;
        bus_val_map_get_bool(l, "voided", &voided);
        if (voided) {
            s_add(agg, P, "voided_lines", 1);
            continue;
        }
        const char *sku = bus_val_map_get_str(l, "sku");
        const char *category = bus_val_map_get_str(l, "category");
        int64_t amount = s_int(l, "amount"), qty = s_int(l, "qty");
        if (bus_val_map_get(l, "return_of"))
            s_add(agg, P, "returns", amount);
        else {
            s_add(agg, P, "gross", s_int(l, "gross"));
            s_add(agg, P, "discounts", s_int(l, "promo_discount") + s_int(l, "ticket_discount"));
            bool seen = false;
            for (int k = 0; k < nskus; k++)
                seen = seen || strcmp(skus[k], sku) == 0;
            if (!seen && nskus < S_PAIRS_MAX)
                skus[nskus++] = sku;
        }
        s_add(agg, P, "total", amount);
        snprintf(field, sizeof(field), "%s:qty", sku);
        s_add(agg, items, field, qty);
        snprintf(field, sizeof(field), "%s:amount", sku);
        s_add(agg, items, field, amount);
        snprintf(field, sizeof(field), "%s:amount", category ? category : "");
        s_add(agg, cats, field, amount);
        snprintf(field, sizeof(field), "%" PRId64 ":gross", s_int(l, "tax_rate_bp"));
        s_add(agg, tax, field, amount);
        snprintf(field, sizeof(field), "%" PRId64 ":tax", s_int(l, "tax_rate_bp"));
        s_add(agg, tax, field, s_int(l, "tax"));
    }
    bus_val_t *tenders = bus_val_map_get(s, "tenders");
    snprintf(key, sizeof(key), "%s:tenders", P);
    for (size_t i = 0; i < bus_val_size(tenders); i++) {
        const bus_val_t *t = bus_val_arr_get(tenders, i);
        const char *tk = bus_val_map_get_str(t, "kind");
        s_add(agg, key, tk, s_int(t, "amount"));
        snprintf(field, sizeof(field), "%s:tender:%s", reg, tk);
        s_add(agg, R, field, s_int(t, "amount"));
    }
    int64_t total = s_int(s, "total"), change = s_int(s, "change");
    s_add(agg, P, "change", change);
    s_add(agg, P, "cash_rounding", s_int(s, "cash_rounding"));
    snprintf(field, sizeof(field), "%s:change", reg);
    s_add(agg, R, field, change);
    snprintf(field, sizeof(field), "%s:tickets", reg);
    s_add(agg, R, field, 1);
    snprintf(field, sizeof(field), "%s:total", reg);
    s_add(agg, R, field, total);
    snprintf(key, sizeof(key), "%s:cashiers", P);
    snprintf(field, sizeof(field), "%s:tickets", cashier);
    s_add(agg, key, field, 1);
    snprintf(field, sizeof(field), "%s:total", cashier);
    s_add(agg, key, field, total);
    snprintf(key, sizeof(key), "%s:hours", P);
    s_add(agg, key, hour, total);
    qsort(skus, (size_t)nskus, sizeof(skus[0]), s_cmp_names);
    snprintf(key, sizeof(key), "%s:pairs", P);
    for (int x = 0; x < nskus; x++)
        for (int y = x + 1; y < nskus; y++) {
            snprintf(field, sizeof(field), "%s|%s", skus[x], skus[y]);
            s_add(agg, key, field, 1);
        }
}

typedef struct {
    char key[S_KEY_MAX];
    bus_val_t *sale;
    const char *store, *day;
    char hour[4];
} s_pending_t;

/*  Build the script's arguments for the sales not excluded and run it. Returns 1 when applied,
    0 when some sales were applied before (they are marked excluded: retry), -1 on error. */
static int s_apply_once(s_reporting_t *self, s_pending_t *p, bool *excluded, int n)
{
    s_agg_t agg = {zhashx_new(), zhashx_new(), zhashx_new()};
    zhashx_set_destructor(agg.inc, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(agg.seqs, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(agg.days, (zhashx_destructor_fn *)zstr_free);
    int live = 0;
    for (int i = 0; i < n; i++)
        if (!excluded[i]) {
            s_aggregate(&agg, p[i].sale, p[i].store, p[i].day, p[i].hour);
            live++;
        }
    size_t m = zhashx_size(agg.inc), k = zhashx_size(agg.seqs), d = zhashx_size(agg.days);
    size_t cap = 4 + (size_t)live + 3 * m + 4 * k + 2 * d;
    const char **argv = calloc(cap, sizeof(*argv));
    char *numbers = calloc(cap, 24); /* text of every number argument */
    int *index = calloc((size_t)n, sizeof(*index));
    bool *cut = calloc(cap, sizeof(*cut)); /* "key\x1fsecond" entries: send the key only */
    int argc = 0, rc = -1;
    size_t num = 0;
#define S_NUM(v) (snprintf(numbers + 24 * num, 24, "%" PRId64, (int64_t)(v)), numbers + 24 * num++)
    argv[argc++] = S_NUM(live);
    for (int i = 0, j = 0; i < n; i++)
        if (!excluded[i]) {
            index[j++] = i;
            argv[argc++] = p[i].key;
        }
    argv[argc++] = S_NUM(m);
    for (int64_t *v = zhashx_first(agg.inc); v; v = zhashx_next(agg.inc)) {
        const char *kf = zhashx_cursor(agg.inc);
        cut[argc] = true;
        argv[argc++] = kf;
        argv[argc++] = strchr(kf, S_SEP[0]) + 1;
        argv[argc++] = S_NUM(*v);
    }
    argv[argc++] = S_NUM(k);
    for (int64_t *mm = zhashx_first(agg.seqs); mm; mm = zhashx_next(agg.seqs)) {
        const char *kr = zhashx_cursor(agg.seqs);
        cut[argc] = true;
        argv[argc++] = kr;
        argv[argc++] = strchr(kr, S_SEP[0]) + 1;
        argv[argc++] = S_NUM(mm[0]);
        argv[argc++] = S_NUM(mm[1]);
    }
    argv[argc++] = S_NUM(d);
    for (char *day = zhashx_first(agg.days); day; day = zhashx_next(agg.days)) {
        argv[argc++] = zhashx_cursor(agg.days);
        argv[argc++] = day;
    }
#undef S_NUM
    /* keys are validated store and day names, so the first separator ends the key */
    size_t *alen = calloc((size_t)argc, sizeof(*alen));
    for (int i = 0; i < argc; i++)
        alen[i] = cut[i] ? (size_t)(strchr(argv[i], S_SEP[0]) - argv[i]) : strlen(argv[i]);
    redisReply *r = bus_redis_evalsha(self->wredis, self->apply, 0, argc, argv, alen);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        if (strcmp(r->element[0]->str, "ok") == 0) {
            __atomic_add_fetch(self->c_applied, live, __ATOMIC_RELAXED);
            rc = 1;
        } else {
            for (size_t i = 0; i < r->element[1]->elements; i++) {
                long long j = r->element[1]->element[i]->integer;
                if (j >= 0 && j < live)
                    excluded[index[j]] = true;
            }
            rc = 0;
        }
    } else if (r)
        bus_error("reporting.apply", "batch of %d: %s", live,
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r)
        freeReplyObject(r);
    free(alen);
    free(cut);
    free(argv);
    free(numbers);
    free(index);
    zhashx_destroy(&agg.inc);
    zhashx_destroy(&agg.seqs);
    zhashx_destroy(&agg.days);
    return rc;
}

static int s_apply(bus_stream_entry_t *entries, int n, void *arg)
{
    s_reporting_t *self = arg;
    s_pending_t *p = calloc((size_t)n, sizeof(*p));
    bool *excluded = calloc((size_t)n, sizeof(*excluded));
    int rc = -1, good = 0;
    if (!p || !excluded)
        goto out_free;
    int64_t now = bus_now_ms();
    for (int i = 0; i < n; i++) {
        size_t plen = 0;
        const char *sale_id = bus_stream_field(&entries[i], "sale_id", NULL);
        const char *store = bus_stream_field(&entries[i], "store", NULL);
        const char *bday = bus_stream_field(&entries[i], "bday", NULL);
        const char *payload = bus_stream_field(&entries[i], "payload", &plen);
        bus_val_t *sale = payload ? bus_val_decode(payload, plen, NULL, NULL) : NULL;
        int64_t ts = 0;
        if (!sale || !sale_id || !s_id_ok(store) || !s_day_ok(bday) ||
            !bus_val_map_get_int(sale, "ts", &ts) || !bus_val_map_get_str(sale, "register") ||
            !bus_val_map_get_str(sale, "cashier") || !bus_val_map_get_str(sale, "kind")) {
            /* not something sales commits: count it and move on, never block the stream */
            __atomic_add_fetch(self->c_bad, 1, __ATOMIC_RELAXED);
            bus_error("reporting.bad_entry", "stream entry %s is not a sale; skipped",
                      entries[i].id);
            bus_val_destroy(&sale);
            continue;
        }
        int64_t lag = now - ts;
        if (lag >= 0)
            __atomic_add_fetch(&self->lag[lag < S_LAG_BUCKETS ? lag : S_LAG_BUCKETS - 1], 1,
                               __ATOMIC_RELAXED);
        time_t secs = (time_t)(ts / 1000);
        struct tm tm;
        localtime_r(&secs, &tm);
        s_pending_t *q = &p[good++];
        snprintf(q->hour, sizeof(q->hour), "%02d", tm.tm_hour);
        snprintf(q->key, sizeof(q->key), "sale:{%s}:%s", store, sale_id);
        q->sale = sale;
        q->store = store;
        q->day = bday;
    }
    rc = 0;
    for (int attempt = 0; attempt <= good && good > 0; attempt++) {
        int done = s_apply_once(self, p, excluded, good);
        if (done != 0) {
            rc = done > 0 ? 0 : -1; /* -1: Redis trouble, the batch stays pending */
            break;
        }
    }
out_free:
    for (int i = 0; p && i < good; i++)
        bus_val_destroy(&p[i].sale);
    free(p);
    free(excluded);
    return rc;
}

/* ---- reading reports (main thread) ------------------------------------- */

static int s_redis_down(s_reporting_t *self, bus_service_t *svc)
{
    return bus_service_error(svc, BUS_ERR_UNAVAILABLE, "storage unavailable, retry: %s",
                             bus_redis_errstr(self->redis));
}

/*  HGETALL key as a map of ints; with nested, "a:b" fields become {a: {b: n}}. NULL on error. */
static bus_val_t *s_hash(s_reporting_t *self, const char *key, bool nested)
{
    redisReply *r = bus_redis_command(self->redis, "HGETALL %s", key);
    if (!r)
        return NULL;
    bus_val_t *map = bus_val_new_map();
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str;
        int64_t v = strtoll(r->element[i + 1]->str, NULL, 10);
        const char *colon = nested ? strchr(field, ':') : NULL;
        if (!colon) {
            bus_val_map_set_int(map, field, v);
            continue;
        }
        char outer[S_KEY_MAX];
        snprintf(outer, sizeof(outer), "%.*s", (int)(colon - field), field);
        bus_val_t *inner = bus_val_map_get(map, outer);
        if (!inner) {
            bus_val_t *fresh = bus_val_new_map();
            bus_val_map_set(map, outer, &fresh);
            inner = bus_val_map_get(map, outer);
        }
        bus_val_map_set_int(inner, colon + 1, v);
    }
    freeReplyObject(r);
    return map;
}

/*  Store and day from a request; day defaults to the store's current business day. */
static int s_store_day(s_reporting_t *self, bus_service_t *svc, const bus_msg_t *req,
                       const char **store, char *day, size_t size)
{
    *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *d = bus_val_map_get_str(bus_msg_body(req), "day");
    if (!s_id_ok(*store))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store required");
    if (d) {
        if (!s_day_ok(d))
            return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "day must be YYYY-MM-DD");
        snprintf(day, size, "%s", d);
        return 0;
    }
    redisReply *r = bus_redis_command(self->redis, "GET bday:{%s}", *store);
    if (!r)
        return s_redis_down(self, svc);
    if (r->type == REDIS_REPLY_STRING)
        snprintf(day, size, "%s", r->str);
    else {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(day, size, "%Y-%m-%d", &tm);
    }
    freeReplyObject(r);
    return 0;
}

static int64_t s_get(const bus_val_t *map, const char *key)
{
    int64_t v = 0;
    bus_val_map_get_int(map, key, &v);
    return v;
}

/*  The whole day: totals, tenders, tax by rate, registers, cashiers, expected cash. */
static int s_fill_day(s_reporting_t *self, bus_service_t *svc, const char *store, const char *day,
                      bus_val_t *reply)
{
    char key[S_KEY_MAX];
    static const struct {
        const char *suffix, *name;
        bool nested;
    } parts[] = {{"", "totals", false},           {":tenders", "tenders", false},
                 {":tax", "tax", true},           {":regs", "registers", true},
                 {":cashiers", "cashiers", true}, {":cats", "categories", true}};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        snprintf(key, sizeof(key), "rep:{%s}:%s%s", store, day, parts[i].suffix);
        bus_val_t *v = s_hash(self, key, parts[i].nested);
        if (!v)
            return s_redis_down(self, svc);
        bus_val_map_set(reply, parts[i].name, &v);
    }
    bus_val_t *totals = bus_val_map_get(reply, "totals");
    int64_t cash = s_get(bus_val_map_get(reply, "tenders"), "cash");
    bus_val_map_set_int(reply, "expected_cash", cash - s_get(totals, "change"));
    bus_val_t *tax = bus_val_map_get(reply, "tax");
    for (size_t i = 0; i < bus_val_size(tax); i++) {
        bus_val_t *row = bus_val_map_value(tax, i);
        bus_val_map_set_int(row, "net", s_get(row, "gross") - s_get(row, "tax"));
    }
    /* per register: do the records cover first..last without a hole? */
    bus_val_t *regs = bus_val_map_get(reply, "registers");
    for (size_t i = 0; i < bus_val_size(regs); i++) {
        bus_val_t *r = bus_val_map_value(regs, i);
        int64_t first = s_get(r, "first"), last = s_get(r, "last"), n = s_get(r, "records");
        bus_val_map_set_bool(r, "complete", first > 0 && last - first + 1 == n);
    }
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_str(reply, "day", day);
    return 0;
}

static int s_day(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_reporting_t *self = arg;
    const char *store;
    char day[16];
    if (s_store_day(self, svc, req, &store, day, sizeof(day)) != 0)
        return -1;
    return s_fill_day(self, svc, store, day, reply);
}

static int s_x(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_reporting_t *self = arg;
    const char *store;
    char day[16];
    const char *reg = bus_val_map_get_str(bus_msg_body(req), "register");
    if (s_store_day(self, svc, req, &store, day, sizeof(day)) != 0)
        return -1;
    if (!s_id_ok(reg))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "register required");
    bus_val_t *all = bus_val_new_map();
    int rc = s_fill_day(self, svc, store, day, all);
    if (rc == 0) {
        bus_val_t *mine = bus_val_dup(bus_val_map_get(bus_val_map_get(all, "registers"), reg));
        if (!mine)
            mine = bus_val_new_map();
        bus_val_map_set_str(reply, "store", store);
        bus_val_map_set_str(reply, "day", day);
        bus_val_map_set_str(reply, "register", reg);
        bus_val_t *tenders = bus_val_new_map();
        for (size_t i = 0; i < bus_val_size(mine); i++)
            if (strncmp(bus_val_map_key(mine, i), "tender:", 7) == 0)
                bus_val_map_set_int(tenders, bus_val_map_key(mine, i) + 7,
                                    s_get(mine, bus_val_map_key(mine, i)));
        bus_val_map_set_int(reply, "expected_cash", s_get(tenders, "cash") - s_get(mine, "change"));
        bus_val_map_set(reply, "tenders", &tenders);
        bus_val_map_set(reply, "shift", &mine);
    }
    bus_val_destroy(&all);
    return rc;
}

/*  Has the group applied every entry up to upto? */
static int s_caught_up(s_reporting_t *self, const char *upto, bool *ready)
{
    *ready = false;
    redisReply *r = bus_redis_command(self->redis, "XINFO GROUPS %s", S_STREAM);
    if (!r)
        return -1;
    const char *delivered = NULL;
    for (size_t g = 0; r->type == REDIS_REPLY_ARRAY && g < r->elements; g++) {
        redisReply *grp = r->element[g];
        bool mine = false;
        const char *last = NULL;
        for (size_t k = 0; grp->type == REDIS_REPLY_ARRAY && k + 1 < grp->elements; k += 2) {
            if (strcmp(grp->element[k]->str, "name") == 0)
                mine = strcmp(grp->element[k + 1]->str, S_GROUP) == 0;
            else if (strcmp(grp->element[k]->str, "last-delivered-id") == 0)
                last = grp->element[k + 1]->str;
        }
        if (mine)
            delivered = last;
    }
    bool delivered_ok = delivered && bus_stream_id_cmp(delivered, upto) >= 0;
    freeReplyObject(r);
    if (strcmp(upto, "0-0") == 0) {
        *ready = true;
        return 0;
    }
    if (!delivered_ok)
        return 0;
    r = bus_redis_command(self->redis, "XPENDING %s %s - %s 1", S_STREAM, S_GROUP, upto);
    if (!r)
        return -1;
    *ready = r->type == REDIS_REPLY_ARRAY && r->elements == 0;
    freeReplyObject(r);
    return 0;
}

static int s_z(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_reporting_t *self = arg;
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *day = bus_val_map_get_str(bus_msg_body(req), "day");
    if (!s_id_ok(store) || !s_day_ok(day))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and closed day required");
    redisReply *r = bus_redis_command(self->redis, "HGET dayclose:{%s} %s", store, day);
    if (!r)
        return s_redis_down(self, svc);
    char upto[BUS_STREAM_ID_MAX] = "";
    if (r->type == REDIS_REPLY_STRING)
        snprintf(upto, sizeof(upto), "%s", r->str);
    freeReplyObject(r);
    if (!upto[0])
        return bus_service_error(svc, "not_closed",
                                 "day %s of store %s is not closed (close it "
                                 "with the sales service's day.close first)",
                                 day, store);
    bool ready;
    if (s_caught_up(self, upto, &ready) != 0)
        return s_redis_down(self, svc);
    if (!ready)
        return bus_service_error(svc, "not_ready",
                                 "sales up to %s are still being applied; "
                                 "retry in a moment",
                                 upto);
    if (s_fill_day(self, svc, store, day, reply) != 0)
        return -1;
    bus_val_map_set_str(reply, "covers_upto", upto);
    bus_val_map_set_str(reply, "report", "Z");
    return 0;
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*  Copy the int fields of from into to, in name order. */
static void s_copy_sorted(const bus_val_t *from, bus_val_t *to)
{
    size_t n = bus_val_size(from);
    const char **names = calloc(n ? n : 1, sizeof(*names));
    for (size_t i = 0; names && i < n; i++)
        names[i] = bus_val_map_key(from, i);
    if (names)
        qsort(names, n, sizeof(*names), s_cmp_str);
    for (size_t i = 0; names && i < n; i++)
        bus_val_map_set_int(to, names[i], s_get(from, names[i]));
    free(names);
}

/*  A sorted top list from a hash of "name:field" ints. */
static int s_cmp_desc(const void *a, const void *b)
{
    const int64_t *x = *(int64_t *const *)a, *y = *(int64_t *const *)b;
    return x[0] < y[0] ? 1 : x[0] > y[0] ? -1 : 0;
}

static int s_top(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg,
                 const char *suffix, const char *by, bool nested)
{
    s_reporting_t *self = arg;
    const char *store;
    char day[16], key[S_KEY_MAX];
    if (s_store_day(self, svc, req, &store, day, sizeof(day)) != 0)
        return -1;
    int64_t top = S_TOP_DEFAULT;
    bus_val_map_get_int(bus_msg_body(req), "top", &top);
    if (top < 1 || top > S_TOP_MAX)
        top = S_TOP_DEFAULT;
    snprintf(key, sizeof(key), "rep:{%s}:%s%s", store, day, suffix);
    bus_val_t *all = s_hash(self, key, nested);
    if (!all)
        return s_redis_down(self, svc);
    size_t n = bus_val_size(all);
    int64_t **order = calloc(n ? n : 1, sizeof(*order));
    int64_t *cells = calloc(n ? n * 2 : 2, sizeof(*cells));
    for (size_t i = 0; i < n; i++) {
        bus_val_t *v = bus_val_map_value(all, i);
        cells[2 * i] = nested ? s_get(v, by) : 0;
        if (!nested)
            bus_val_get_int(v, &cells[2 * i]);
        cells[2 * i + 1] = (int64_t)i;
        order[i] = &cells[2 * i];
    }
    qsort(order, n, sizeof(*order), s_cmp_desc);
    bus_val_t *list = bus_val_new_arr();
    for (size_t i = 0; i < n && (int64_t)i < top; i++) {
        size_t idx = (size_t)order[i][1];
        /* columns in a stable order: key, then the counters by name */
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "key", bus_val_map_key(all, idx));
        if (nested)
            s_copy_sorted(bus_val_map_value(all, idx), row);
        else
            bus_val_map_set_int(row, by, order[i][0]);
        bus_val_arr_push(list, &row);
    }
    free(order);
    free(cells);
    bus_val_destroy(&all);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_str(reply, "day", day);
    bus_val_map_set(reply, "rows", &list);
    return 0;
}

static int s_items(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    return s_top(svc, req, reply, arg, ":items", "amount", true);
}

static int s_baskets(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    return s_top(svc, req, reply, arg, ":pairs", "count", false);
}

static int s_hours(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_reporting_t *self = arg;
    const char *store;
    char day[16], key[S_KEY_MAX];
    if (s_store_day(self, svc, req, &store, day, sizeof(day)) != 0)
        return -1;
    snprintf(key, sizeof(key), "rep:{%s}:%s:hours", store, day);
    bus_val_t *all = s_hash(self, key, false);
    if (!all)
        return s_redis_down(self, svc);
    bus_val_t *list = bus_val_new_arr();
    for (int h = 0; h < 24; h++) {
        char hour[4];
        snprintf(hour, sizeof(hour), "%02d", h);
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "key", hour);
        bus_val_map_set_int(row, "total", s_get(all, hour));
        bus_val_arr_push(list, &row);
    }
    bus_val_destroy(&all);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_str(reply, "day", day);
    bus_val_map_set(reply, "rows", &list);
    return 0;
}

/*  Publish the apply lag percentiles (from upload at the register to applied here) as gauges. */
static void s_lag_gauges(s_reporting_t *self)
{
    int64_t total = 0;
    for (int i = 0; i < S_LAG_BUCKETS; i++)
        total += __atomic_load_n(&self->lag[i], __ATOMIC_RELAXED);
    int64_t seen = 0, p50 = -1, p99 = -1;
    for (int i = 0; i < S_LAG_BUCKETS && total > 0; i++) {
        seen += __atomic_load_n(&self->lag[i], __ATOMIC_RELAXED);
        if (p50 < 0 && seen * S_PERCENT >= total * 50)
            p50 = i;
        if (p99 < 0 && seen * S_PERCENT >= total * 99)
            p99 = i;
    }
    *self->g_lag_p50 = p50;
    *self->g_lag_p99 = p99;
}

static void s_tick(void *arg)
{
    s_lag_gauges(arg);
}

int main(int argc, char **argv)
{
    int exit_code;
    bus_config_t *config = svc_config_load(S_PROGRAM, s_options, true, argc, argv, &exit_code);
    svc_core_t core;
    if (!config || svc_core_start(&core, config, S_PROGRAM, true) != 0)
        return config ? 1 : exit_code;
    s_reporting_t self;
    memset(&self, 0, sizeof(self));
    self.svc = core.svc;
    self.redis = core.redis;
    self.wredis = core.wredis;
    self.apply = bus_redis_script(self.wredis, apply_lua);
    bus_stats_t *stats = bus_service_stats(self.svc);
    self.c_applied = bus_stats_counter(stats, "sales_applied");
    self.c_bad = bus_stats_counter(stats, "bad_stream_entries");
    self.g_lag_p50 = bus_stats_counter(stats, "apply_lag_p50_ms");
    self.g_lag_p99 = bus_stats_counter(stats, "apply_lag_p99_ms");
    self.lag = calloc(S_LAG_BUCKETS, sizeof(*self.lag));
    bus_service_on(self.svc, "report.day", s_day, &self);
    bus_service_on(self.svc, "report.x", s_x, &self);
    bus_service_on(self.svc, "report.z", s_z, &self);
    bus_service_on(self.svc, "report.items", s_items, &self);
    bus_service_on(self.svc, "report.hours", s_hours, &self);
    bus_service_on(self.svc, "report.baskets", s_baskets, &self);
    self.worker = self.lag ? svc_consumer_start(config, self.svc, self.wredis, S_STREAM, S_GROUP,
                                                s_apply, &self)
                           : NULL;
    int rc = self.worker ? 0 : 1;
    if (self.worker)
        svc_core_run(&core, s_tick, &self);
    bus_stream_worker_stop(&self.worker);
    bus_info("reporting.stopping", "applied=%" PRId64, *self.c_applied);
    free(self.lag);
    svc_core_stop(&core);
    return rc;
}
