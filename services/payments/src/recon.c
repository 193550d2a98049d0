/*  recon.c - a day's intents and the day's reconciliation result (part of payments; recon.h) */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bus/keys.h>
#include <pos/sale.h>

#include "recon.h"

#define S_RETRY_MS    500
#define S_PAGE_MAX    200               /* intents of one payment.list page */
#define S_RESULT_MAX  (512 * 1024)      /* bytes of a kept result read back */
#define S_RESULT_KEEP (256 * 1024)      /* bytes a result is cut to: two fit one bus reply */
#define S_PROVIDER_RE "wechat or alipay"
#define S_REFUNDS_MAX 200               /* refund numbers of one payment.recon.refunds */
#define S_REFUND_MAX  64                /* bytes of a refund number */

typedef struct {
    bus_redis_t *redis;
    int64_t *c_bad, *c_redis_errors;
    int64_t day_ttl_s; /* a kept result expires like the day's index; 0 never */
} s_recon_t;

static s_recon_t s_self; /* one per process, like the service */

void pay_recon_day(int64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000) + 8 * 3600;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%d", &tm);
}

static bool s_day_ok(const char *day)
{
    if (!day || strlen(day) != 10)
        return false;
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? day[i] != '-' : !isdigit((unsigned char)day[i]))
            return false;
    return true;
}

static int s_bad(bus_service_t *svc, const char *what)
{
    bus_stats_inc(s_self.c_bad, 1);
    return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", what);
}

static int s_failed(bus_service_t *svc, redisReply *r, const char *what)
{
    bus_stats_inc(s_self.c_redis_errors, 1);
    return bus_service_redis_failed(svc, s_self.redis, r, S_RETRY_MS, what);
}

/*  store and day from a request body: 0, or -1 (answered). */
static int s_store_day(bus_service_t *svc, const bus_val_t *body, const char **store,
                       const char **day)
{
    *store = bus_val_map_get_str(body, "store");
    *day = bus_val_map_get_str(body, "day");
    if (!*store || !bus_identity_id_ok(*store))
        return s_bad(svc, "store: a store id");
    if (!s_day_ok(*day))
        return s_bad(svc, "day: YYYY-MM-DD (the provider's day, Beijing time)");
    return 0;
}

/*  payment.list {store, day, after?: offset, count?}: the intents created on day, oldest
    first: {intents [{intent, register, sale_id, attempt, provider, amount, state, reason,
    transaction_id, created_ms, updated_ms, paid_ms (when it succeeded; intents written before
    it was kept have none)}], next (offset of the next page, -1 at the end)}. */
static int s_list(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store, *day;
    if (s_store_day(svc, body, &store, &day) != 0)
        return -1;
    int64_t after = 0, count = S_PAGE_MAX;
    const bus_val_t *v = bus_val_map_get(body, "after");
    if (v && (!bus_val_get_int(v, &after) || after < 0 || after > 1000000000))
        return s_bad(svc, "after: the next of the previous page");
    v = bus_val_map_get(body, "count");
    if (v && (!bus_val_get_int(v, &count) || count < 1 || count > S_PAGE_MAX))
        return s_bad(svc, "count: 1 to 200");
    char key[BUS_KEY_MAX];
    redisReply *ids = bus_redis_command(s_self.redis, "ZRANGE %s %" PRId64 " %" PRId64,
                                        bus_key_payday(key, store, day), after,
                                        after + count);
    if (!bus_redis_reply_ok(ids) || ids->type != REDIS_REPLY_ARRAY)
        return s_failed(svc, ids, "day index");
    static const char *const fields[] = {"register",   "sale_id",    "attempt", "provider",
                                         "amount",     "state",      "reason",  "transaction_id",
                                         "created_ms", "updated_ms", "paid_ms"};
    static const bool ints[] = {false, false, true, false, true, false,
                                false, false, true, true,  true};
    const size_t nf = sizeof(fields) / sizeof(fields[0]);
    bus_val_t *list = bus_val_new_arr();
    size_t n = ids->elements > (size_t)count ? (size_t)count : ids->elements;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *id = ids->element[i]->str;
        if (!id)
            continue;
        const char *argv[2 + sizeof(fields) / sizeof(fields[0])] = {"HMGET",
                                                                     bus_key_pay(key, store, id)};
        for (size_t k = 0; k < nf; k++)
            argv[2 + k] = fields[k];
        redisReply *r = bus_redis_commandargv(s_self.redis, (int)(2 + nf), argv, NULL);
        if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != nf) {
            rc = s_failed(svc, r, "intent");
            break;
        }
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_str(m, "intent", id);
        for (size_t k = 0; k < nf; k++) {
            const char *val = r->element[k]->str;
            if (!val)
                continue;
            if (ints[k])
                bus_val_map_set_int(m, fields[k], strtoll(val, NULL, 10));
            else
                bus_val_map_set_str(m, fields[k], val);
        }
        freeReplyObject(r);
        bus_val_arr_push(list, &m);
    }
    bool more = ids->elements > (size_t)count;
    freeReplyObject(ids);
    if (rc != 0) {
        bus_val_destroy(&list);
        return rc;
    }
    bus_val_map_set(reply, "intents", &list);
    bus_val_map_set_int(reply, "next", more ? after + count : -1);
    return 0;
}

/*  payment.recon.refunds {store, refund_nos: [up to 200]}: the store's refunds under those
    numbers in one call (a statement may list hundreds of thousands of refund rows):
    {refunds: {refund_no: {intent, amount, provider, state}}}, a number posbus has no refund
    under (or that is no refund number) left out. */
static int s_refunds(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = bus_val_map_get_str(body, "store");
    const bus_val_t *nos = bus_val_map_get(body, "refund_nos");
    if (!store || !bus_identity_id_ok(store))
        return s_bad(svc, "store: a store id");
    if (!nos || bus_val_type(nos) != BUS_VAL_ARR || bus_val_size(nos) > S_REFUNDS_MAX)
        return s_bad(svc, "refund_nos: an array of at most 200 refund numbers");
    const char *asked[S_REFUNDS_MAX];
    int queued = 0;
    bool failed = false;
    for (size_t i = 0; i < bus_val_size(nos); i++) {
        const char *no = bus_val_get_str(bus_val_arr_get(nos, i), NULL);
        char key[BUS_KEY_MAX];
        if (!no || !pos_sale_id_ok(no, S_REFUND_MAX, "-") || !bus_key_payref(key, store, no))
            continue; /* none could be kept under it */
        if (bus_redis_append(s_self.redis, "HMGET %s intent amount provider state", key) != 0) {
            failed = true;
            break;
        }
        asked[queued++] = no;
    }
    redisReply *replies[S_REFUNDS_MAX] = {0};
    for (int i = 0; i < queued; i++) /* every reply read, so the connection stays in step */
        replies[i] = bus_redis_get_reply(s_self.redis);
    bus_val_t *found = bus_val_new_map();
    redisReply *bad = NULL;
    for (int i = 0; i < queued; i++) {
        redisReply *r = replies[i];
        if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
            if (!failed) {
                failed = true;
                bad = r; /* handed to s_failed, which frees it (NULL: no answer) */
                continue;
            }
        } else if (r->element[0]->str && r->element[1]->str) {
            bus_val_t *m = bus_val_new_map();
            bus_val_map_set_str(m, "intent", r->element[0]->str);
            bus_val_map_set_int(m, "amount", strtoll(r->element[1]->str, NULL, 10));
            bus_val_map_set_str(m, "provider", r->element[2]->str ? r->element[2]->str : "");
            bus_val_map_set_str(m, "state", r->element[3]->str ? r->element[3]->str : "");
            bus_val_map_set(found, asked[i], &m);
        }
        if (r)
            freeReplyObject(r);
    }
    if (failed) {
        bus_val_destroy(&found);
        return s_failed(svc, bad, "refunds");
    }
    bus_val_map_set(reply, "refunds", &found);
    return 0;
}

/*  result encoded into buf in at most S_RESULT_KEEP bytes: as it is, or with only the first
    entries of its diffs that fit, truncated true and listed their number (its counts, such as
    differences, stay whole). 0 whole, 1 cut, -1 when even without diffs it does not fit (or
    out of memory). */
static int s_fit(const bus_val_t *result, bus_buf_t *buf)
{
    if (bus_val_encode(result, buf) != 0)
        return -1;
    if (buf->len <= S_RESULT_KEEP)
        return 0;
    const bus_val_t *diffs = bus_val_map_get(result, "diffs");
    if (diffs && bus_val_type(diffs) != BUS_VAL_ARR)
        diffs = NULL; /* none of ours: dropped */
    bus_val_t *cut = bus_val_dup(result), *kept = bus_val_new_arr(), *empty = bus_val_new_arr();
    int rc = cut && kept && empty ? 0 : -1;
    bus_val_map_set(cut, "diffs", &empty);
    bus_val_map_set_bool(cut, "truncated", true);
    bus_val_map_set_int(cut, "listed", INT64_MAX); /* the widest it can be */
    bus_buf_reset(buf);
    rc = rc == 0 ? bus_val_encode(cut, buf) : -1;
    size_t used = buf->len + 8; /* 8: the longest head of the array */
    for (size_t i = 0; rc == 0 && i < bus_val_size(diffs); i++) {
        bus_buf_reset(buf);
        if (bus_val_encode(bus_val_arr_get(diffs, i), buf) != 0 || used + buf->len > S_RESULT_KEEP)
            break;
        used += buf->len;
        bus_val_t *d = bus_val_dup(bus_val_arr_get(diffs, i));
        bus_val_arr_push(kept, &d);
    }
    bus_buf_reset(buf);
    if (rc == 0 && used <= S_RESULT_KEEP) {
        bus_val_map_set_int(cut, "listed", (int64_t)bus_val_size(kept));
        bus_val_map_set(cut, "diffs", &kept);
        rc = bus_val_encode(cut, buf) == 0 ? 1 : -1;
    } else {
        rc = -1;
    }
    bus_val_destroy(&kept);
    bus_val_destroy(&cut);
    return rc;
}

/*  payment.recon.put {store, day, provider, result}: keep the day's result for provider (a
    large one cut to its counts and first differences, s_fit: the day always has its result). */
static int s_put(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store, *day;
    if (s_store_day(svc, body, &store, &day) != 0)
        return -1;
    const char *provider = bus_val_map_get_str(body, "provider");
    const bus_val_t *result = bus_val_map_get(body, "result");
    if (!provider || (strcmp(provider, "wechat") && strcmp(provider, "alipay")))
        return s_bad(svc, "provider: " S_PROVIDER_RE);
    if (!result || bus_val_type(result) != BUS_VAL_MAP)
        return s_bad(svc, "result: a map (as posctl payments reconcile makes it)");
    bus_buf_t buf = {0};
    int cut = s_fit(result, &buf);
    if (cut < 0) {
        bus_buf_free(&buf);
        return s_bad(svc, "result: at most 256 KiB without its diffs");
    }
    char key[BUS_KEY_MAX];
    const char *argv[] = {"HSET", bus_key_payrec(key, store, day), provider,
                          (const char *)buf.data};
    size_t lens[] = {4, strlen(argv[1]), strlen(provider), buf.len};
    redisReply *r = bus_redis_commandargv(s_self.redis, 4, argv, lens);
    bus_buf_free(&buf);
    if (!bus_redis_reply_ok(r))
        return s_failed(svc, r, "result");
    freeReplyObject(r);
    if (s_self.day_ttl_s > 0) {
        r = bus_redis_command(s_self.redis, "EXPIRE %s %" PRId64, key, s_self.day_ttl_s);
        if (!bus_redis_reply_ok(r))
            return s_failed(svc, r, "result's retention");
        freeReplyObject(r);
    }
    bus_val_map_set_bool(reply, "kept", true);
    bus_val_map_set_bool(reply, "truncated", cut == 1);
    return 0;
}

/*  payment.recon.get {store, day}: {results: {provider: result}} (empty when none was kept). */
static int s_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store, *day;
    if (s_store_day(svc, body, &store, &day) != 0)
        return -1;
    char key[BUS_KEY_MAX];
    redisReply *r = bus_redis_command(s_self.redis, "HGETALL %s", bus_key_payrec(key, store, day));
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_failed(svc, r, "results");
    bus_val_t *results = bus_val_new_map();
    bus_limits_t limits = {.max_size = S_RESULT_MAX};
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        bus_val_t *v = r->element[i]->str
                           ? bus_val_decode(r->element[i + 1]->str, r->element[i + 1]->len,
                                            &limits, NULL)
                           : NULL;
        if (v)
            bus_val_map_set(results, r->element[i]->str, &v);
    }
    freeReplyObject(r);
    bus_val_map_set(reply, "results", &results);
    return 0;
}

int pay_recon_methods(bus_service_t *svc, bus_redis_t *redis, bus_stats_t *stats,
                      int64_t day_ttl_s)
{
    s_self.redis = redis;
    s_self.day_ttl_s = day_ttl_s;
    s_self.c_bad = bus_stats_counter(stats, "bad_requests");
    s_self.c_redis_errors = bus_stats_counter(stats, "redis_errors");
    static const bus_method_t methods[] = {
        {"payment.list", s_list, BUS_METHOD_READ, BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE},
        {"payment.recon.put", s_put, BUS_METHOD_CHANGE, BUS_ROLE_OPERATOR},
        {"payment.recon.get", s_get, BUS_METHOD_READ, BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE},
        {"payment.recon.refunds", s_refunds, BUS_METHOD_READ,
         BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE},
        {NULL, NULL, 0, 0}};
    return s_self.c_redis_errors ? bus_service_methods(svc, methods, NULL) : -1;
}
