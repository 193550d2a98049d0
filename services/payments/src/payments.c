/*  =========================================================================
    payments - payment intents: a register's wallet payment as a persistent,
    idempotent state machine (docs/payments.md)

    A register asks payment.pay for one attempt of one sale with the
    customer's payment code. The intent id is derived from the sale id and
    the attempt and is also the provider's out_trade_no, so the same request
    asked again, by a retry or after a crash of either side, is the same
    intent: it is created once (pay_create.lua) and never charged twice. The
    answer comes at once with the intent's state; the register asks
    payment.get until the state is final (succeeded, failed, reversed).

    Why the work is not done in the request: a provider call takes up to
    seconds and the customer's confirmation on the phone up to half a
    minute, and one service thread answers every register. Worker threads
    (--workers) each hold a Redis connection and an HTTPS connection and
    take intents one step at a time: an intent that is due is claimed with a
    lease (pay_claim.lua: only one worker of any instance holds it), one
    provider call is made, and the outcome is recorded (pay_move.lua) with
    when the intent is due next. A worker or an instance that dies leaves
    its intents to the others when the lease runs out, so unknown intents
    are resolved by the service itself, after a restart or on another
    instance. Before the pay call is made the intent is marked sent: a pay
    call is made at most once per intent, whatever crashes; after it only
    queries and the reversal follow (protocols.md section 1).

    The states: created (not sent yet), pending (the customer is
    confirming, or the call is on its way), unknown (no usable answer: it is
    queried every --query-interval-ms), reversing (cancelled after it was
    paid), and the final succeeded, failed (nothing was charged), reversed
    (reversed at the provider: not charged, or the money went back). An
    intent not succeeded --reverse-after-ms after it was created is
    reversed, and the reversal's answer decides. Every transition is kept
    with its time and reason (payhist).

    Refunds move the same way (R:<refund number> in the due set). WeChat
    also tells a refund's end by a notification to --notify-url; with
    --notify-listen this process serves it (notify.c, its own thread and
    Redis connection) and records it through the very path a refund
    query's answer takes (s_refund_record, pay_move.lua), so a notification
    and a query that tell the same end record it once. A refund's end is
    written to its paid intent by the same script (its amount given back
    when it failed; the intent 'refunded' once its refunds succeeded in
    full), so no crash can leave one half done. Every refund ends: one the
    provider refused and then says it does not have is failed, and one
    still unresolved --refund-deadline-s after it was made is left to an
    operator ('manual', its amount still reserved: money may have left).

    Nothing is swept: the script that makes an intent or a refund final
    gives its keys an EXPIRE of --retention-days (docs/payments.md
    "Retention"), and the scripts that reopen one (a refund, a cancel after
    payment) take it away.
    =========================================================================
*/
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <bus/bus.h>
#include <bus/keys.h>
#include <pos/sale.h>

#include "alipay.h"
#include "http.h"
#include "notify.h"
#include "recon.h"
#include "stored.h"
#include "svc_caller.h"
#include "svc_main.h"
#include "wechat.h"

#include "pay_cancel_lua.h"
#include "pay_claim_lua.h"
#include "pay_create_lua.h"
#include "pay_move_lua.h"
#include "refund_create_lua.h"

#define S_PROGRAM     "payments"
#define S_RETRY_MS    500   /* hint sent with `unavailable` */
#define S_WORKERS_MAX 32
#define S_QUEUE_MAX   1024  /* intents handed from requests to workers (a hint: the due set is
                               the truth, so a full queue loses nothing) */
#define S_INTENT_MAX  32    /* bytes of an intent id: the provider's out_trade_no limit */
#define S_REFUND_MAX  64    /* bytes of a refund number: the providers' out_refund_no limit */
#define S_MEMBER_MAX  (S_REFUND_MAX + 2) /* a due entry: an intent, or R:<refund number> */
#define S_CODE_MAX    24    /* digits of a payment code */
#define S_DESC_MAX    127   /* characters of the description the customer sees */
#define S_ATTEMPT_MAX 99
#define S_SCAN_BATCH  16    /* due intents taken from one store per scan */
#define S_ERR_NOT_FOUND "not_found"
#define S_DAY_S       86400
#define S_DAY_MARGIN  2     /* days a day index outlives the retention of its intents */
/* tests: this environment variable set to "refund_failed" kills the process right after a
   failed refund is recorded (test_payments.py reproduces a crash there) */
#define S_CRASH_ENV "PAYMENTS_TEST_CRASH"

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "payments", 0, 0, "name this service registers under"},
    {"workers", BUS_OPT_INT, "4", 1, S_WORKERS_MAX, "threads that call the providers"},
    {"query-interval-ms", BUS_OPT_INT, "4000", 100, 60000,
     "an intent paying or unknown is queried this often (WeChat: every 3-5 s)"},
    {"reverse-after-ms", BUS_OPT_INT, "30000", 1000, 600000,
     "an intent not succeeded this long after it was created is reversed"},
    {"lease-ms", BUS_OPT_INT, "60000", 1000, 3600000,
     "a worker holds an intent this long for one step (more than a provider call takes)"},
    {"scan-ms", BUS_OPT_INT, "500", 50, 60000, "how often idle workers look for due intents"},
    {"refund-deadline-s", BUS_OPT_INT, "259200", 1, 2592000,
     "a refund still unresolved this long after it was made is left to an operator (state "
     "manual: its amount stays reserved) instead of being asked about for ever"},
    {"retention-days", BUS_OPT_INT, "400", 0, 36500,
     "an intent that is over is kept this many days with its history and refunds, then expires "
     "(0: kept forever; a year of reconciliation and a margin)"},
    {"retention-s", BUS_OPT_INT, "0", 0, 3153600000,
     "tests: the retention in seconds instead (0: retention-days decides)"},
    {"meals", BUS_OPT_STR, PAYMENTS_MEALS_DEFAULT, 0, 0,
     "stored-value cards: meal windows in local time, name=HH:MM-HH:MM[,...]"},
    {"wechat-base-url", BUS_OPT_STR, "https://api.mch.weixin.qq.com", 0, 0,
     "WeChat Pay API v3 address"},
    {"wechat-mchid", BUS_OPT_STR, NULL, 0, 0, "WeChat Pay merchant id (unset: WeChat is off)"},
    {"wechat-appid", BUS_OPT_STR, NULL, 0, 0, "WeChat Pay appid bound to the merchant"},
    {"wechat-serial", BUS_OPT_STR, NULL, 0, 0, "serial number of the merchant's API certificate"},
    {"wechat-key-file", BUS_OPT_STR, NULL, 0, 0, "the merchant's API private key (PEM file)"},
    {"wechat-platform-keys", BUS_OPT_STR, NULL, 0, 0,
     "platform keys that sign answers: SERIAL=FILE[,SERIAL=FILE] (public key or certificate "
     "PEM; two during a key change)"},
    {"wechat-apiv3-key-file", BUS_OPT_STR, NULL, 0, 0,
     "the 32-byte API v3 key (refund notifications)"},
    {"wechat-ca-file", BUS_OPT_STR, NULL, 0, 0, "CA certificates to trust (default: the system's)"},
    {"wechat-timeout-ms", BUS_OPT_INT, "10000", 500, 120000, "one WeChat call's deadline"},
    {"notify-listen", BUS_OPT_STR, NULL, 0, 0,
     "HOST:PORT of the HTTPS endpoint for WeChat refund notifications (unset: none)"},
    {"notify-url", BUS_OPT_STR, NULL, 0, 0,
     "the https:// URL WeChat posts refund notifications to, sent with every refund (its path "
     "is the one served)"},
    {"notify-cert", BUS_OPT_STR, NULL, 0, 0, "the notify endpoint's certificate chain (PEM file)"},
    {"notify-key", BUS_OPT_STR, NULL, 0, 0, "the notify endpoint's private key (PEM file)"},
    {"alipay-gateway", BUS_OPT_STR, "https://openapi.alipay.com/gateway.do", 0, 0,
     "Alipay open platform gateway"},
    {"alipay-app-id", BUS_OPT_STR, NULL, 0, 0, "Alipay app id (unset: Alipay is off)"},
    {"alipay-key-file", BUS_OPT_STR, NULL, 0, 0, "the app's RSA private key (PEM file)"},
    {"alipay-public-key-file", BUS_OPT_STR, NULL, 0, 0,
     "Alipay's public key that signs answers (PEM: public key or certificate)"},
    {"alipay-ca-file", BUS_OPT_STR, NULL, 0, 0, "CA certificates to trust (default: the system's)"},
    {"alipay-timeout-ms", BUS_OPT_INT, "10000", 500, 120000, "one Alipay call's deadline"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct s_app s_app_t;

typedef struct {
    s_app_t *app;
    int index;
    pthread_t thread;
    bool started;
    bus_redis_t *redis;
    int claim, move;
    pay_wechat_t *wx;
    pay_alipay_t *ali;
    pay_provider_t providers[2];
    int nproviders;
    char owner[128];
} s_worker_t;

typedef struct {
    char store[BUS_ID_PART_MAX + 1];
    char intent[S_MEMBER_MAX + 1];
} s_item_t;

struct s_app {
    bus_config_t *config;
    bus_redis_t *redis; /* the main thread's */
    int create, cancel, refund, move;
    pay_wechat_cfg_t *wx;
    pay_alipay_cfg_t *ali;
    int64_t interval_ms, reverse_ms, lease_ms, scan_ms;
    int64_t refund_deadline_ms; /* a refund unresolved this long after it was made: manual */
    bool crash_after_refund_failed; /* tests (S_CRASH_ENV) */
    int64_t settle_ms; /* after this long a pay call that the provider has not seen never will */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    s_item_t queue[S_QUEUE_MAX];
    int head, count;
    atomic_bool stop;
    s_worker_t workers[S_WORKERS_MAX];
    int nworkers;
    s_worker_t notifier; /* the notify endpoint's thread: not started here, no provider */
    pay_notify_t *notify;
    int64_t retention_s; /* EXPIRE of an intent's keys once it is over; 0 none */
    int64_t day_ttl_s;   /* EXPIRE of a day index (payday, payrec); 0 none */
    bus_stats_t *stats;
    int64_t *c_requests, *c_created, *c_conflicts, *c_bad, *c_redis_errors, *c_steps,
        *c_succeeded, *c_failed, *c_reversed, *c_unknown, *c_provider_calls, *c_unverified,
        *c_lost_leases, *c_notified, *c_notify_unverified, *c_notify_unreadable,
        *c_notify_ignored, *c_refunds_manual;
};

/* One intent as a worker claimed it. */
typedef struct {
    char store[BUS_ID_PART_MAX + 1], reg[BUS_ID_PART_MAX + 1];
    char intent[S_INTENT_MAX + 1], sale_id[POS_SALE_ID_MAX + 1];
    char provider[16], state[16], code[S_CODE_MAX + 1];
    int64_t amount, created_ms, deadline_ms, sent_ms;
    bool sent, cancel;
    /* a refund (refund_no set): the intent is the paid one it refunds; its hash is payref */
    char refund_no[72];
    int64_t total;
    char refused[64]; /* the code of a verified refusal of the last refund call, "" none */
} s_intent_t;

static bool s_final(const char *state)
{
    return strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
           strcmp(state, "reversed") == 0 || strcmp(state, "refunded") == 0 ||
           strcmp(state, "manual") == 0;
}

/* ---- payment codes and intent ids -------------------------------------------------- */

/*  The provider a payment code belongs to (protocols.md): WeChat 18 digits from 10-15, Alipay
    16-24 digits from 25-30; NULL for anything else. */
static const char *s_route(const char *code)
{
    size_t n = strlen(code);
    for (size_t i = 0; i < n; i++)
        if (code[i] < '0' || code[i] > '9')
            return NULL;
    int lead = n >= 2 ? (code[0] - '0') * 10 + (code[1] - '0') : -1;
    if (n == 18 && lead >= 10 && lead <= 15)
        return "wechat";
    if (n >= 16 && n <= 24 && lead >= 25 && lead <= 30)
        return "alipay";
    return NULL;
}

/*  The intent id (= out_trade_no, 6-32 of [0-9A-Za-z_-*]) of a sale's attempt: the sale id and
    the attempt when that fits, else "H" + 24 hex digits of the sale id's SHA-256 + attempt. */
static void s_intent_id(const char *sale_id, int64_t attempt, char *out, size_t size)
{
    int n = snprintf(out, size, "%s-%" PRId64, sale_id, attempt);
    if (n > 0 && (size_t)n < size && n <= S_INTENT_MAX)
        return;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)sale_id, strlen(sale_id), md);
    char hex[25];
    for (int i = 0; i < 12; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(out, size, "H%s-%" PRId64, hex, attempt);
}

static void s_sha256_hex(const char *text, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)text, strlen(text), md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/*  What is kept of a code once it is sent: its first and last four digits. */
static void s_mask(const char *code, char *out, size_t size)
{
    size_t n = strlen(code);
    if (n <= 8) {
        snprintf(out, size, "****");
        return;
    }
    snprintf(out, size, "%.4s%.*s%s", code, (int)(n - 8), "************************",
             code + n - 4);
}

/* ---- the queue from requests to workers -------------------------------------------- */

static void s_hand_over(s_app_t *app, const char *store, const char *intent)
{
    pthread_mutex_lock(&app->lock);
    if (app->count < S_QUEUE_MAX) {
        s_item_t *it = &app->queue[(app->head + app->count++) % S_QUEUE_MAX];
        snprintf(it->store, sizeof(it->store), "%s", store);
        snprintf(it->intent, sizeof(it->intent), "%s", intent);
    }
    pthread_cond_signal(&app->wake);
    pthread_mutex_unlock(&app->lock);
}

/*  The next handed-over intent, waiting up to ms. false when none came. */
static bool s_take(s_app_t *app, s_item_t *out, int64_t ms)
{
    pthread_mutex_lock(&app->lock);
    if (app->count == 0 && !atomic_load(&app->stop)) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&app->wake, &app->lock, &until);
    }
    bool have = app->count > 0;
    if (have) {
        *out = app->queue[app->head];
        app->head = (app->head + 1) % S_QUEUE_MAX;
        app->count--;
    }
    pthread_mutex_unlock(&app->lock);
    return have;
}

/* ---- a worker's step --------------------------------------------------------------- */

/*  Record a step's outcome. keep: the worker keeps the intent (the mark before a pay call).
    1 recorded, 0 the lease was lost, -1 cancelled meanwhile (keep only), -2 Redis failed. */
static int s_move(s_worker_t *w, const s_intent_t *in, const char *state, const char *reason,
                  int64_t next_due, bool keep, const char *const *fields)
{
    char key[BUS_KEY_MAX], due[BUS_KEY_MAX], hist[BUS_KEY_MAX], now[24], next[24];
    char paid[BUS_KEY_MAX], paidhist[BUS_KEY_MAX], ttl[24];
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    snprintf(next, sizeof(next), "%" PRId64, next_due);
    snprintf(ttl, sizeof(ttl), "%" PRId64, w->app->retention_s);
    char member[96];
    int nkeys = 3;
    if (in->refund_no[0]) { /* a refund: its own hash, due and history as R:<refund_no> */
        snprintf(member, sizeof(member), "R:%s", in->refund_no);
        bus_key_payref(key, in->store, in->refund_no);
        bus_key_pay(paid, in->store, in->intent);
        bus_key_payhist(paidhist, in->store, in->intent);
        nkeys = 5;
    } else {
        snprintf(member, sizeof(member), "%s", in->intent);
        bus_key_pay(key, in->store, in->intent);
    }
    const char *argv[40] = {key, bus_key_paydue(due, in->store),
                            bus_key_payhist(hist, in->store, member)};
    int argc = 3;
    if (nkeys == 5) {
        argv[argc++] = paid;
        argv[argc++] = paidhist;
    }
    const char *args[] = {w->owner, now, state, reason, next, member, keep ? "1" : "0", ttl};
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        argv[argc++] = args[i];
    for (int i = 0; fields && fields[i] && argc < 38; i++)
        argv[argc++] = fields[i];
    redisReply *r = bus_redis_evalsha(w->redis, w->move, nkeys, argc, argv, NULL);
    int rc = bus_redis_reply_ok(r) && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -2;
    if (r)
        freeReplyObject(r);
    s_app_t *app = w->app;
    if (rc == -2) {
        bus_stats_inc(app->c_redis_errors, 1);
        bus_warn("payments.worker", "intent %s: cannot record %s: %s", in->intent, state,
                 bus_redis_errstr(w->redis));
    } else if (rc == 0) {
        bus_stats_inc(app->c_lost_leases, 1);
    } else if (rc == 3) { /* final already: told by a notification, or by a query before it */
        bus_debug("payments.intent", "%s%s%s: %s already final: %s not recorded", in->intent,
                  in->refund_no[0] ? " refund " : "", in->refund_no, in->provider, state);
    } else if (rc == 2) { /* paid while the register gave it up: reversed next */
        bus_info("payments.intent", "%s %s: paid after it was cancelled: reversing", in->intent,
                 in->provider);
        rc = 1;
    } else if (rc == 1 && !keep) {
        if (strcmp(state, "succeeded") == 0)
            bus_stats_inc(app->c_succeeded, 1);
        else if (strcmp(state, "failed") == 0)
            bus_stats_inc(app->c_failed, 1);
        else if (strcmp(state, "reversed") == 0)
            bus_stats_inc(app->c_reversed, 1);
        else if (strcmp(state, "unknown") == 0)
            bus_stats_inc(app->c_unknown, 1);
        if (strcmp(state, "manual") == 0) {
            bus_stats_inc(app->c_refunds_manual, 1);
            bus_warn("payments.refund", "refund %s of %s %s: left to an operator (%s)",
                     in->refund_no, in->intent, in->provider, reason);
        } else if (s_final(state))
            bus_info("payments.intent", "%s %s: %s (%s)", in->intent, in->provider, state,
                     reason);
    }
    return rc;
}

/*  The fields a success writes: the provider's transaction id and, when its answer said when
    it was paid, paid_ms (else pay_move.lua writes the time it is recorded). */
static void s_paid_fields(const pay_outcome_t *o, char paid[24], const char *fields[5])
{
    snprintf(paid, 24, "%" PRId64, o->paid_ms);
    fields[0] = "transaction_id";
    fields[1] = o->transaction_id;
    fields[2] = o->paid_ms > 0 ? "paid_ms" : NULL;
    fields[3] = paid;
    fields[4] = NULL;
}

static void s_step_provider(s_worker_t *w, const pay_provider_t *p, const s_intent_t *in)
{
    s_app_t *app = w->app;
    int64_t now = bus_now_ms(), next = now + app->interval_ms;
    pay_outcome_t o;
    if (!in->sent) {
        if (in->cancel) {
            s_move(w, in, "failed", "cancelled before it was sent", 0, false, NULL);
            return;
        }
        if (now >= in->deadline_ms) { /* taken too late (the service was down): not sent */
            s_move(w, in, "failed", "not sent before its deadline: nothing was charged", 0, false,
                   NULL);
            return;
        }
        char masked[S_CODE_MAX + 1], sent_ms[24];
        s_mask(in->code, masked, sizeof(masked));
        snprintf(sent_ms, sizeof(sent_ms), "%" PRId64, now);
        const char *fields[] = {"sent", "1", "sent_ms", sent_ms, "code", masked, NULL};
        /* marked sent before the call: whatever happens next, it is never sent again */
        char sent[32];
        snprintf(sent, sizeof(sent), "sent to %s", p->name);
        int rc = s_move(w, in, "pending", sent, now + app->lease_ms, true, fields);
        if (rc == -1)
            s_move(w, in, "failed", "cancelled before it was sent", 0, false, NULL);
        if (rc != 1)
            return;
        char desc[S_DESC_MAX + 1];
        snprintf(desc, sizeof(desc), "sale %s", in->sale_id);
        bus_stats_inc(app->c_provider_calls, 1);
        p->pay(p->client, in->intent, in->code, in->amount, desc, in->store, in->reg, &o);
        if (!o.verified && o.status)
            bus_stats_inc(app->c_unverified, 1);
        char paid[24];
        const char *tx[5];
        s_paid_fields(&o, paid, tx);
        switch (o.result) {
        case PAY_SUCCESS:
            s_move(w, in, "succeeded", o.why, 0, false, tx);
            break;
        case PAY_FAILED:
            s_move(w, in, "failed", o.why, 0, false, NULL);
            break;
        case PAY_PAYING:
            s_move(w, in, "pending", o.why, next, false, NULL);
            break;
        default:
            s_move(w, in, "unknown", o.why, next, false, NULL);
            break;
        }
        return;
    }
    if (in->cancel || now >= in->deadline_ms) {
        if (!in->cancel) {
            /* past the deadline: a trade paid meanwhile (or while this intent's worker was
               gone) is taken as paid; only one not paid is reversed */
            bus_stats_inc(app->c_provider_calls, 1);
            p->query(p->client, in->intent, in->amount, &o);
            char paid[24];
            const char *tx[5];
            s_paid_fields(&o, paid, tx);
            if (o.result == PAY_SUCCESS) {
                s_move(w, in, "succeeded", o.why, 0, false, tx);
                return;
            }
            if (o.result == PAY_CLOSED) {
                s_move(w, in, "failed", o.why, 0, false, NULL);
                return;
            }
        }
        bus_stats_inc(app->c_provider_calls, 1);
        p->reverse(p->client, in->intent, &o);
        if (!o.verified && o.status)
            bus_stats_inc(app->c_unverified, 1);
        char why[PAY_WHY_MAX + 40];
        snprintf(why, sizeof(why), "%s: %s", in->cancel ? "cancelled" : "not paid in time",
                 o.why);
        if (o.result == PAY_REVERSED) {
            s_move(w, in, "reversed", why, 0, false, NULL);
            return;
        }
        if (o.result == PAY_NOT_FOUND && now >= in->sent_ms + app->settle_ms) {
            /* long after the pay call could have arrived: it never did */
            s_move(w, in, "failed", "the provider has no such trade: nothing was charged", 0,
                   false, NULL);
            return;
        }
        if (o.result == PAY_PAYING || o.result == PAY_NOT_FOUND) {
            s_move(w, in, "pending", why, next, false, NULL); /* the reversal is tried again */
            return;
        }
        /* the reversal decided nothing: the trade's state may (closed or revoked already) */
        bus_stats_inc(app->c_provider_calls, 1);
        p->query(p->client, in->intent, in->amount, &o);
        if (o.result == PAY_CLOSED && strstr(o.trade_state, "REVOKED"))
            s_move(w, in, "reversed", o.why, 0, false, NULL);
        else if (o.result == PAY_CLOSED)
            s_move(w, in, "failed", o.why, 0, false, NULL);
        else
            s_move(w, in, strcmp(in->state, "reversing") == 0 ? "reversing" : "unknown", why, next,
                   false, NULL);
        return;
    }
    bus_stats_inc(app->c_provider_calls, 1);
    p->query(p->client, in->intent, in->amount, &o);
    if (!o.verified && o.status)
        bus_stats_inc(app->c_unverified, 1);
    char paid[24];
    const char *tx[5];
    s_paid_fields(&o, paid, tx);
    if (o.result == PAY_SUCCESS)
        s_move(w, in, "succeeded", o.why, 0, false, tx);
    else if (o.result == PAY_CLOSED)
        s_move(w, in, "failed", o.why, 0, false, NULL);
    else if (o.result == PAY_PAYING || o.result == PAY_NOTPAY)
        s_move(w, in, "pending", o.why, next, false, NULL);
    else /* not found yet, or no usable answer: asked again until the reversal decides */
        s_move(w, in, strcmp(in->state, "reversing") == 0 ? "reversing" : "unknown", o.why,
               next, false, NULL);
}

/*  Record what the provider said of a refund, a query's answer or a notification alike (so
    both arriving together record it once: pay_move.lua answers 3 to the second): succeeded,
    failed (pay_move.lua gives its reserved amount back to the intent in the same step), or
    still pending or unknown, asked again at next. refused: the code of a verified refusal of
    the refund call just made ("" none), kept for the next query; NULL when no call was made.
    s_move's code. */
static int s_refund_record(s_worker_t *w, const s_intent_t *in, const pay_outcome_t *o,
                           int64_t next, const char *refused)
{
    const char *tx[] = {"refund_id", o->transaction_id, NULL};
    if (o->result == PAY_SUCCESS)
        return s_move(w, in, "succeeded", o->why, 0, false, tx);
    if (o->result == PAY_FAILED) {
        int rc = s_move(w, in, "failed", o->why, 0, false, NULL);
        if (rc == 1 && w->app->crash_after_refund_failed) {
            /* tests: die where a second script once gave the amount back */
            bus_warn("payments.test", "%s set: killed after refund %s failed", S_CRASH_ENV,
                     in->refund_no);
            kill(getpid(), SIGKILL);
        }
        return rc;
    }
    const char *mark[] = {"refused", refused, NULL};
    return s_move(w, in, o->result == PAY_PAYING ? "pending" : "unknown", o->why, next, false,
                  refused ? mark : NULL);
}

/*  One step of a refund: ask for it (the providers take an out_refund_no once, so asking again
    after a lost answer or a refund they never saw is safe), then query until it is final. A
    refund call refused by a verified answer, then a query that says there is no such refund:
    nothing was refunded, it failed. One not final --refund-deadline-s after it was made is
    left to an operator (manual) instead of being asked about for ever. */
static void s_step_refund(s_worker_t *w, const pay_provider_t *p, const s_intent_t *in)
{
    s_app_t *app = w->app;
    int64_t now = bus_now_ms(), next = now + app->interval_ms;
    pay_outcome_t o;
    bool ask = !in->sent;
    const char *refused = NULL;
    if (!ask) {
        bus_stats_inc(app->c_provider_calls, 1);
        p->refund_query(p->client, in->intent, in->refund_no, in->amount, &o);
        if (o.result == PAY_NOT_FOUND && in->refused[0]) {
            o.result = PAY_FAILED;
            snprintf(o.why, sizeof(o.why), "refused (%s) and the provider has no such refund: "
                     "nothing was refunded", in->refused);
        }
        ask = o.result == PAY_NOT_FOUND;
    }
    if (ask) {
        const char *fields[] = {"sent", "1", NULL};
        if (!in->sent &&
            s_move(w, in, "pending", "refund sent", now + app->lease_ms, true, fields) != 1)
            return;
        bus_stats_inc(app->c_provider_calls, 1);
        p->refund(p->client, in->intent, in->refund_no, in->amount, in->total, &o);
        if (!o.verified && o.status)
            bus_stats_inc(app->c_unverified, 1);
        refused = o.result == PAY_UNKNOWN && o.refused ? o.code : "";
    }
    if (o.result != PAY_SUCCESS && o.result != PAY_FAILED &&
        now >= in->created_ms + app->refund_deadline_ms) {
        char why[PAY_WHY_MAX + 80];
        snprintf(why, sizeof(why), "unresolved %" PRId64 " s after it was made (last: %s): "
                 "check it at the provider", app->refund_deadline_ms / 1000, o.why);
        s_move(w, in, "manual", why, 0, false, NULL);
        return;
    }
    s_refund_record(w, in, &o, next, refused);
}

/*  Claim intent of store and take one step. */
static void s_step(s_worker_t *w, const char *store, const char *intent)
{
    s_app_t *app = w->app;
    char key[BUS_KEY_MAX], due[BUS_KEY_MAX], now[24], lease[24];
    bool refund = strncmp(intent, "R:", 2) == 0;
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    snprintf(lease, sizeof(lease), "%" PRId64, app->lease_ms);
    const char *argv[] = {refund ? bus_key_payref(key, store, intent + 2)
                                 : bus_key_pay(key, store, intent),
                          bus_key_paydue(due, store), w->owner, now, lease, intent};
    redisReply *r = bus_redis_evalsha(w->redis, w->claim, 2, 6, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY) {
        if (!r || r->type == REDIS_REPLY_ERROR)
            bus_stats_inc(app->c_redis_errors, 1);
        if (r)
            freeReplyObject(r);
        return;
    }
    s_intent_t in;
    memset(&in, 0, sizeof(in));
    snprintf(in.store, sizeof(in.store), "%s", store);
    if (refund)
        snprintf(in.refund_no, sizeof(in.refund_no), "%s", intent + 2);
    else
        snprintf(in.intent, sizeof(in.intent), "%s", intent);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!f || !v)
            continue;
        if (strcmp(f, "register") == 0)
            snprintf(in.reg, sizeof(in.reg), "%s", v);
        else if (strcmp(f, "intent") == 0 && refund)
            snprintf(in.intent, sizeof(in.intent), "%s", v);
        else if (strcmp(f, "total") == 0)
            in.total = strtoll(v, NULL, 10);
        else if (strcmp(f, "sale_id") == 0)
            snprintf(in.sale_id, sizeof(in.sale_id), "%s", v);
        else if (strcmp(f, "provider") == 0)
            snprintf(in.provider, sizeof(in.provider), "%s", v);
        else if (strcmp(f, "state") == 0)
            snprintf(in.state, sizeof(in.state), "%s", v);
        else if (strcmp(f, "code") == 0)
            snprintf(in.code, sizeof(in.code), "%s", v);
        else if (strcmp(f, "amount") == 0)
            in.amount = strtoll(v, NULL, 10);
        else if (strcmp(f, "created_ms") == 0)
            in.created_ms = strtoll(v, NULL, 10);
        else if (strcmp(f, "deadline_ms") == 0)
            in.deadline_ms = strtoll(v, NULL, 10);
        else if (strcmp(f, "sent_ms") == 0)
            in.sent_ms = strtoll(v, NULL, 10);
        else if (strcmp(f, "sent") == 0)
            in.sent = strcmp(v, "1") == 0;
        else if (strcmp(f, "cancel") == 0)
            in.cancel = strcmp(v, "1") == 0;
        else if (strcmp(f, "refused") == 0 && refund)
            snprintf(in.refused, sizeof(in.refused), "%s", v);
    }
    for (size_t i = 0; i < r->elements; i++) /* the code, before the reply is freed */
        if (r->element[i]->str)
            OPENSSL_cleanse(r->element[i]->str, r->element[i]->len);
    freeReplyObject(r);
    bus_stats_inc(app->c_steps, 1);
    const pay_provider_t *p = NULL;
    for (int i = 0; i < w->nproviders && !p; i++)
        if (strcmp(w->providers[i].name, in.provider) == 0)
            p = &w->providers[i];
    if (p && refund)
        s_step_refund(w, p, &in);
    else if (p)
        s_step_provider(w, p, &in);
    else if (!in.sent)
        s_move(w, &in, "failed", "this provider is not configured: nothing was sent", 0, false,
               NULL);
    else /* sent by an instance that had it configured: resolved where it is */
        s_move(w, &in, in.state, "this instance cannot reach the provider", bus_now_ms() +
               app->interval_ms, false, NULL);
    OPENSSL_cleanse(in.code, sizeof(in.code));
}

/*  Every store's intents that are due now. */
static void s_scan(s_worker_t *w)
{
    redisReply *stores = bus_redis_command(w->redis, "SMEMBERS %s", BUS_KEY_STORES);
    if (!bus_redis_reply_ok(stores) || stores->type != REDIS_REPLY_ARRAY) {
        if (stores)
            freeReplyObject(stores);
        return;
    }
    char due[BUS_KEY_MAX];
    for (size_t i = 0; i < stores->elements && !atomic_load(&w->app->stop); i++) {
        const char *store = stores->element[i]->str;
        if (!store || !bus_identity_id_ok(store))
            continue;
        redisReply *ids =
            bus_redis_command(w->redis, "ZRANGEBYSCORE %s -inf %" PRId64 " LIMIT 0 %d",
                              bus_key_paydue(due, store), bus_now_ms(), S_SCAN_BATCH);
        for (size_t k = 0; bus_redis_reply_ok(ids) && ids->type == REDIS_REPLY_ARRAY &&
                           k < ids->elements && !atomic_load(&w->app->stop);
             k++)
            if (ids->element[k]->str && strlen(ids->element[k]->str) <= S_MEMBER_MAX)
                s_step(w, store, ids->element[k]->str);
        if (ids)
            freeReplyObject(ids);
    }
    freeReplyObject(stores);
}

static void *s_worker_run(void *arg)
{
    s_worker_t *w = arg;
    s_app_t *app = w->app;
    int64_t next_scan = 0;
    while (!atomic_load(&app->stop)) {
        s_item_t it;
        if (s_take(app, &it, app->scan_ms)) {
            s_step(w, it.store, it.intent);
            continue;
        }
        if (bus_now_ms() >= next_scan) {
            s_scan(w);
            next_scan = bus_now_ms() + app->scan_ms;
        }
    }
    return NULL;
}

/* ---- requests --------------------------------------------------------------------- */

static int s_bad(s_app_t *app, bus_service_t *svc, const char *fmt, const char *what)
{
    bus_stats_inc(app->c_bad, 1);
    return bus_service_error(svc, BUS_ERR_BAD_REQUEST, fmt, what);
}

static int s_redis_failed(s_app_t *app, bus_service_t *svc, redisReply *r, const char *what)
{
    bus_stats_inc(app->c_redis_errors, 1);
    return bus_service_redis_failed(svc, app->redis, r, S_RETRY_MS, what);
}

/*  The intent's hash as a reply: no code, no owner. 0, or -1 (answered) when there is none. */
static int s_answer(s_app_t *app, bus_service_t *svc, const char *store, const char *intent,
                    const char *reg, bus_val_t *reply)
{
    char key[BUS_KEY_MAX];
    redisReply *r = bus_redis_command(app->redis, "HGETALL %s", bus_key_pay(key, store, intent));
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(app, svc, r, "intent");
    if (r->elements == 0) {
        freeReplyObject(r);
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no payment intent %s in store %s",
                                 intent, store);
    }
    static const char *const texts[] = {"register", "sale_id", "provider", "state", "reason",
                                        "transaction_id", NULL};
    static const char *const ints[] = {"amount", "attempt", "created_ms", "updated_ms",
                                       "paid_ms", "refunded", "refunds_succeeded",
                                       "refunds_manual", NULL};
    const char *state = "", *owner_reg = "";
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (f && v && strcmp(f, "state") == 0)
            state = v;
        if (f && v && strcmp(f, "register") == 0)
            owner_reg = v;
    }
    if (reg && strcmp(reg, owner_reg) != 0) {
        freeReplyObject(r);
        return bus_service_error(svc, BUS_ERR_FORBIDDEN, "payment intent %s is another register's",
                                 intent);
    }
    bus_redis_hash_to_map(r, texts, ints, reply);
    bool final = s_final(state);
    bus_val_map_set_str(reply, "intent", intent);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_bool(reply, "final", final);
    if (!final)
        bus_val_map_set_int(reply, "retry_ms", 1000);
    freeReplyObject(r);
    return 0;
}

/*  payment.pay {sale_id, attempt, amount, code, description?}: the register's own store and
    register come from its certificate. */
static int s_pay(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_app_t *app = arg;
    bus_stats_inc(app->c_requests, 1);
    const bus_val_t *body = bus_msg_body(req);
    svc_node_id_t node;
    if (svc_caller_node(svc, body, &node, app->c_bad, NULL) != 0)
        return -1;
    const char *sale_id = bus_val_map_get_str(body, "sale_id");
    const char *code = bus_val_map_get_str(body, "code");
    int64_t attempt = 0, amount = 0;
    char prefix[2 * BUS_ID_PART_MAX + 3];
    snprintf(prefix, sizeof(prefix), "%s-%s-", node.store, node.reg);
    if (!sale_id || !pos_sale_id_ok(sale_id, POS_SALE_ID_MAX, "-") ||
        strncmp(sale_id, prefix, strlen(prefix)) != 0)
        return s_bad(app, svc, "sale_id: one of this register's sale ids (%s<n>)", prefix);
    if (!bus_val_map_get_int(body, "attempt", &attempt) || attempt < 1 || attempt > S_ATTEMPT_MAX)
        return s_bad(app, svc, "attempt: %s", "an integer from 1 to 99 (a new one after a failure)");
    if (!bus_val_map_get_int(body, "amount", &amount) || amount < 1 || amount > POS_AMOUNT_MAX)
        return s_bad(app, svc, "amount: %s", "fen, from 1 to 10^12");
    if (!code || strlen(code) > S_CODE_MAX)
        return s_bad(app, svc, "code: %s", "the customer's payment code (digits)");
    const char *provider = s_route(code);
    if (!provider) {
        bus_stats_inc(app->c_bad, 1);
        return bus_service_error(svc, "bad_code",
                                 "not a payment code: WeChat codes are 18 digits from 10-15, "
                                 "Alipay codes 16-24 digits from 25-30");
    }
    if (strcmp(provider, "wechat") == 0 && !app->wx)
        return bus_service_error(svc, "not_configured", "WeChat Pay is not configured here");
    if (strcmp(provider, "alipay") == 0 && !app->ali)
        return bus_service_error(svc, "not_configured", "Alipay is not configured here");
    redisReply *known = bus_redis_command(app->redis, "SISMEMBER %s %s", BUS_KEY_STORES,
                                          node.store);
    if (!bus_redis_reply_ok(known) || known->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(app, svc, known, "store set");
    bool store_known = known->integer == 1;
    freeReplyObject(known);
    if (!store_known)
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no store %s", node.store);
    char intent[S_INTENT_MAX + 8], key[BUS_KEY_MAX], due[BUS_KEY_MAX], hist[BUS_KEY_MAX];
    char attempt_s[8], amount_s[24], hash[65], now_s[24], deadline_s[24];
    s_intent_id(sale_id, attempt, intent, sizeof(intent));
    s_sha256_hex(code, hash);
    int64_t now = bus_now_ms();
    snprintf(attempt_s, sizeof(attempt_s), "%" PRId64, attempt);
    snprintf(amount_s, sizeof(amount_s), "%" PRId64, amount);
    snprintf(now_s, sizeof(now_s), "%" PRId64, now);
    snprintf(deadline_s, sizeof(deadline_s), "%" PRId64, now + app->reverse_ms);
    char day[16], daykey[BUS_KEY_MAX], day_ttl[24];
    pay_recon_day(now, day, sizeof(day));
    snprintf(day_ttl, sizeof(day_ttl), "%" PRId64, app->day_ttl_s);
    const char *argv[] = {bus_key_pay(key, node.store, intent), bus_key_paydue(due, node.store),
                          bus_key_payhist(hist, node.store, intent),
                          bus_key_payday(daykey, node.store, day), intent, node.store, node.reg,
                          sale_id, attempt_s, provider, amount_s, code, hash, now_s, deadline_s,
                          day_ttl};
    redisReply *r = bus_redis_evalsha(app->redis, app->create, 4, 16, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(app, svc, r, "intent");
    bool conflict = strcmp(r->element[0]->str, "conflict") == 0;
    bool created = strcmp(r->element[0]->str, "created") == 0;
    freeReplyObject(r);
    if (conflict) {
        bus_stats_inc(app->c_conflicts, 1);
        return bus_service_error(svc, "conflict",
                                 "attempt %" PRId64 " of %s was made with another amount or "
                                 "code: the next attempt is a new payment",
                                 attempt, sale_id);
    }
    if (created) {
        bus_stats_inc(app->c_created, 1);
        s_hand_over(app, node.store, intent);
    }
    return s_answer(app, svc, node.store, intent, NULL, reply);
}

/*  payment.get {intent | sale_id + attempt, store?}: a register sees its own intents (and may
    name one by its sale and attempt, e.g. after a restart that lost the answer); others name
    the store. */
static int s_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_app_t *app = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *intent = bus_val_map_get_str(body, "intent");
    const char *sale_id = bus_val_map_get_str(body, "sale_id");
    char derived[S_INTENT_MAX + 8];
    int64_t attempt = 0;
    if (!intent && sale_id) {
        if (!pos_sale_id_ok(sale_id, POS_SALE_ID_MAX, "-") ||
            !bus_val_map_get_int(body, "attempt", &attempt) || attempt < 1 ||
            attempt > S_ATTEMPT_MAX)
            return s_bad(app, svc, "sale_id and attempt: %s", "as payment.pay was asked");
        s_intent_id(sale_id, attempt, derived, sizeof(derived));
        intent = derived;
    }
    if (!intent || !*intent || strlen(intent) > S_INTENT_MAX ||
        !pos_sale_id_ok(intent, S_INTENT_MAX, "-"))
        return s_bad(app, svc, "intent: %s", "an intent id (as payment.pay answered)");
    const bus_identity_t *me = bus_service_caller(svc);
    if (me->role == BUS_ROLE_REGISTER)
        return s_answer(app, svc, me->store, intent, me->reg, reply);
    const char *store = bus_val_map_get_str(body, "store");
    if (!store || !bus_identity_id_ok(store))
        return s_bad(app, svc, "store: %s", "the intent's store id");
    return s_answer(app, svc, store, intent, NULL, reply);
}

/*  payment.cancel {intent}: the register gives the payment up; it is reversed (a paid one too). */
static int s_cancel(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_app_t *app = arg;
    const bus_val_t *body = bus_msg_body(req);
    svc_node_id_t node;
    if (svc_caller_node(svc, body, &node, app->c_bad, NULL) != 0)
        return -1;
    const char *intent = bus_val_map_get_str(body, "intent");
    const char *sale_id = bus_val_map_get_str(body, "sale_id");
    char derived[S_INTENT_MAX + 8], attempt_s[8] = "";
    int64_t attempt = 0;
    if (!intent && sale_id) {
        char prefix[2 * BUS_ID_PART_MAX + 3];
        snprintf(prefix, sizeof(prefix), "%s-%s-", node.store, node.reg);
        if (!pos_sale_id_ok(sale_id, POS_SALE_ID_MAX, "-") ||
            strncmp(sale_id, prefix, strlen(prefix)) != 0 ||
            !bus_val_map_get_int(body, "attempt", &attempt) || attempt < 1 ||
            attempt > S_ATTEMPT_MAX)
            return s_bad(app, svc, "sale_id and attempt: %s", "as payment.pay was asked");
        s_intent_id(sale_id, attempt, derived, sizeof(derived));
        snprintf(attempt_s, sizeof(attempt_s), "%" PRId64, attempt);
        intent = derived;
    }
    if (!intent || !pos_sale_id_ok(intent, S_INTENT_MAX, "-"))
        return s_bad(app, svc, "intent: %s", "an intent id (as payment.pay answered)");
    char key[BUS_KEY_MAX], due[BUS_KEY_MAX], hist[BUS_KEY_MAX], now_s[24], ttl[24];
    snprintf(now_s, sizeof(now_s), "%" PRId64, bus_now_ms());
    snprintf(ttl, sizeof(ttl), "%" PRId64, app->retention_s);
    const char *argv[] = {bus_key_pay(key, node.store, intent), bus_key_paydue(due, node.store),
                          bus_key_payhist(hist, node.store, intent), intent, now_s, node.reg,
                          sale_id && attempt_s[0] ? sale_id : "", attempt_s, ttl};
    redisReply *r = bus_redis_evalsha(app->redis, app->cancel, 3, 9, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(app, svc, r, "intent");
    char what[16];
    snprintf(what, sizeof(what), "%s", r->element[0]->str);
    freeReplyObject(r);
    if (strcmp(what, "none") == 0)
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no payment intent %s", intent);
    if (strcmp(what, "other") == 0)
        return bus_service_error(svc, BUS_ERR_FORBIDDEN, "payment intent %s is another register's",
                                 intent);
    if (strcmp(what, "has_refunds") == 0)
        return bus_service_error(svc, "has_refunds",
                                 "payment intent %s has refunds: it is not reversed; refund "
                                 "what is left of it instead",
                                 intent);
    s_hand_over(app, node.store, intent);
    return s_answer(app, svc, node.store, intent, NULL, reply);
}

/* ---- refunds ------------------------------------------------------------------------- */

static bool s_refund_no_ok(const char *no)
{
    return pos_sale_id_ok(no, S_REFUND_MAX, "-"); /* letters, digits, '_' or '-' */
}

/*  The refund's hash as a reply. 0, or -1 (answered) when there is none. */
static int s_refund_answer(s_app_t *app, bus_service_t *svc, const char *store, const char *no,
                           bus_val_t *reply)
{
    char key[BUS_KEY_MAX];
    redisReply *r = bus_redis_command(app->redis, "HGETALL %s", bus_key_payref(key, store, no));
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(app, svc, r, "refund");
    if (r->elements == 0) {
        freeReplyObject(r);
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no refund %s in store %s", no, store);
    }
    static const char *const texts[] = {"intent", "provider", "state", "reason", "refund_id",
                                        "register", NULL};
    static const char *const ints[] = {"amount", "total", "created_ms", "updated_ms", NULL};
    const char *state = "";
    bus_redis_hash_to_map(r, texts, ints, reply);
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->str && r->element[i + 1]->str &&
            strcmp(r->element[i]->str, "state") == 0)
            state = r->element[i + 1]->str;
    bool final = strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                 strcmp(state, "manual") == 0;
    bus_val_map_set_str(reply, "refund_no", no);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_bool(reply, "final", final);
    if (!final)
        bus_val_map_set_int(reply, "retry_ms", 1000);
    freeReplyObject(r);
    return 0;
}

/*  payment.refund_resolve {store, refund_no, state: succeeded|failed, reason}: an operator who
    found out at the provider how a refund left to them ('manual') ended says so. Recorded as
    that end, in the same script as a worker's (pay_move.lua): succeeded counts as refunded,
    failed gives the amount back to the intent. Only a manual refund moves (`not_manual`). */
static int s_refund_resolve(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_app_t *app = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = bus_val_map_get_str(body, "store");
    const char *no = bus_val_map_get_str(body, "refund_no");
    const char *state = bus_val_map_get_str(body, "state");
    const char *why = bus_val_map_get_str(body, "reason");
    if (!store || !bus_identity_id_ok(store) || !no || !s_refund_no_ok(no) || !state ||
        (strcmp(state, "succeeded") != 0 && strcmp(state, "failed") != 0) || !why || !*why ||
        strlen(why) > 200)
        return s_bad(app, svc, "%s", "store, refund_no, state (succeeded or failed) and a "
                                     "reason (1-200 bytes) are needed");
    char key[BUS_KEY_MAX];
    redisReply *r = bus_redis_command(app->redis, "HMGET %s intent amount provider state",
                                      bus_key_payref(key, store, no));
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 4)
        return s_redis_failed(app, svc, r, "refund");
    const char *intent = r->element[0]->str, *amount = r->element[1]->str;
    const char *provider = r->element[2]->str, *now = r->element[3]->str;
    if (!intent || !amount || !provider || !now) {
        freeReplyObject(r);
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no refund %s in store %s", no, store);
    }
    if (strcmp(now, "manual") != 0) {
        int rc = bus_service_error(svc, "not_manual", "refund %s is %s, not left to an operator",
                                   no, now);
        freeReplyObject(r);
        return rc;
    }
    s_intent_t in;
    memset(&in, 0, sizeof(in));
    snprintf(in.store, sizeof(in.store), "%s", store);
    snprintf(in.refund_no, sizeof(in.refund_no), "%s", no);
    snprintf(in.intent, sizeof(in.intent), "%s", intent);
    snprintf(in.provider, sizeof(in.provider), "%s", provider);
    snprintf(in.state, sizeof(in.state), "%s", now);
    in.amount = strtoll(amount, NULL, 10);
    in.sent = true;
    freeReplyObject(r);
    s_worker_t w = {.app = app, .index = -1, .redis = app->redis, .move = app->move};
    snprintf(w.owner, sizeof(w.owner), "*"); /* told from outside, as a notification is */
    char reason[300];
    snprintf(reason, sizeof(reason), "resolved by %s: %s", bus_service_caller(svc)->name, why);
    int rc = s_move(&w, &in, state, reason, 0, false, NULL);
    if (rc == -2)
        return bus_service_unavailable(svc, S_RETRY_MS, "Redis: %s",
                                       bus_redis_errstr(app->redis));
    if (rc != 1)
        return bus_service_error(svc, "not_manual", "refund %s changed meanwhile", no);
    bus_info("payments.refund", "refund %s of %s in store %s: %s by %s", no, in.intent, store,
             state, bus_service_caller(svc)->name);
    return s_refund_answer(app, svc, store, no, reply);
}

/*  The store a refund request is for: a register's own, else the body's. NULL (answered). */
static const char *s_refund_store(s_app_t *app, bus_service_t *svc, const bus_val_t *body)
{
    const bus_identity_t *me = bus_service_caller(svc);
    if (me->role == BUS_ROLE_REGISTER)
        return me->store;
    const char *store = bus_val_map_get_str(body, "store");
    if (!store || !bus_identity_id_ok(store)) {
        s_bad(app, svc, "store: %s", "the store id");
        return NULL;
    }
    return store;
}

/*  payment.refund {intent, refund_no, amount, reason?, store?}: refund part or all of a paid
    intent, never more than was paid; the same refund number asked again is the same refund. */
static int s_refund(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_app_t *app = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = s_refund_store(app, svc, body);
    if (!store)
        return -1;
    const char *intent = bus_val_map_get_str(body, "intent");
    const char *no = bus_val_map_get_str(body, "refund_no");
    const char *reason = bus_val_map_get_str(body, "reason");
    int64_t amount = 0;
    if (!intent || !pos_sale_id_ok(intent, S_INTENT_MAX, "-"))
        return s_bad(app, svc, "intent: %s", "the paid intent's id");
    if (!s_refund_no_ok(no))
        return s_bad(app, svc, "refund_no: %s", "1-64 letters, digits, '_' or '-'");
    if (!bus_val_map_get_int(body, "amount", &amount) || amount < 1 || amount > POS_AMOUNT_MAX)
        return s_bad(app, svc, "amount: %s", "fen, from 1");
    if (reason && strlen(reason) > 80)
        return s_bad(app, svc, "reason: %s", "at most 80 bytes");
    char key[BUS_KEY_MAX], ref[BUS_KEY_MAX], due[BUS_KEY_MAX], hist[BUS_KEY_MAX], member[80];
    char paidhist[BUS_KEY_MAX], amount_s[24], now_s[24];
    snprintf(member, sizeof(member), "R:%s", no);
    snprintf(amount_s, sizeof(amount_s), "%" PRId64, amount);
    snprintf(now_s, sizeof(now_s), "%" PRId64, bus_now_ms());
    const char *argv[] = {bus_key_pay(key, store, intent), bus_key_payref(ref, store, no),
                          bus_key_paydue(due, store), bus_key_payhist(hist, store, member),
                          bus_key_payhist(paidhist, store, intent), no, intent, amount_s, now_s,
                          reason ? reason : ""};
    redisReply *r = bus_redis_evalsha(app->redis, app->refund, 5, 10, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(app, svc, r, "refund");
    char what[16], extra[32] = "";
    snprintf(what, sizeof(what), "%s", r->element[0]->str);
    if (r->elements > 1 && r->element[1]->str)
        snprintf(extra, sizeof(extra), "%s", r->element[1]->str);
    freeReplyObject(r);
    if (strcmp(what, "none") == 0)
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no payment intent %s", intent);
    if (strcmp(what, "conflict") == 0)
        return bus_service_error(svc, "conflict",
                                 "refund %s was made for another intent or amount", no);
    if (strcmp(what, "not_paid") == 0)
        return bus_service_error(svc, "not_paid", "intent %s is %s, not paid: nothing to refund",
                                 intent, extra);
    if (strcmp(what, "too_much") == 0) {
        bus_stats_inc(app->c_bad, 1);
        return bus_service_error(svc, "too_much",
                                 "more than was paid: at most %s fen of %s may still be refunded",
                                 extra, intent);
    }
    if (strcmp(what, "created") == 0)
        s_hand_over(app, store, member);
    return s_refund_answer(app, svc, store, no, reply);
}

/*  payment.refundable {sale_id, store?}: the paid intents of a sale (any register of the
    store: a sale is returned at any till) with what each may still give back, so a return can
    be refunded to the tenders the sale was paid with: {sale_id, store, intents: [{intent,
    attempt, provider, amount, refunded, refundable}]}. */
static int s_refundable(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_app_t *app = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = s_refund_store(app, svc, body);
    if (!store)
        return -1;
    const char *sale_id = bus_val_map_get_str(body, "sale_id");
    if (!sale_id || !pos_sale_id_ok(sale_id, POS_SALE_ID_MAX, "-"))
        return s_bad(app, svc, "sale_id: %s", "a sale id");
    /* every attempt's intent in one round trip (attempts need not be contiguous: a request
       that never reached payments leaves its number unused) */
    int queued = 0;
    bool ok = true;
    for (int64_t attempt = 1; ok && attempt <= S_ATTEMPT_MAX; attempt++) {
        char intent[S_INTENT_MAX + 8], key[BUS_KEY_MAX];
        s_intent_id(sale_id, attempt, intent, sizeof(intent));
        ok = bus_redis_append(app->redis,
                              "HMGET %s state amount refunded provider cancel refunds_manual",
                              bus_key_pay(key, store, intent)) == 0;
        queued += ok;
    }
    redisReply *replies[S_ATTEMPT_MAX] = {0};
    for (int i = 0; i < queued; i++) /* every reply read, so the connection stays in step */
        replies[i] = bus_redis_get_reply(app->redis);
    bus_val_t *list = bus_val_new_arr();
    for (int i = 0; ok && i < queued; i++) {
        redisReply *r = replies[i];
        if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 6) {
            ok = false;
            break;
        }
        const char *state = r->element[0]->str;
        int64_t amount = r->element[1]->str ? strtoll(r->element[1]->str, NULL, 10) : 0;
        int64_t refunded = r->element[2]->str ? strtoll(r->element[2]->str, NULL, 10) : 0;
        bool cancelled = r->element[4]->str && strcmp(r->element[4]->str, "1") == 0;
        int64_t manual = r->element[5]->str ? strtoll(r->element[5]->str, NULL, 10) : 0;
        /* paid: succeeded, or refunded in full since (listed with nothing left) */
        bool paid = state && (strcmp(state, "succeeded") == 0 || strcmp(state, "refunded") == 0);
        if (paid && amount > 0 && !cancelled) {
            char intent[S_INTENT_MAX + 8];
            s_intent_id(sale_id, i + 1, intent, sizeof(intent));
            bus_val_t *m = bus_val_new_map();
            bus_val_map_set_str(m, "intent", intent);
            bus_val_map_set_int(m, "attempt", i + 1);
            bus_val_map_set_str(m, "provider", r->element[3]->str ? r->element[3]->str : "");
            bus_val_map_set_int(m, "amount", amount);
            bus_val_map_set_int(m, "refunded", refunded);
            bus_val_map_set_int(m, "refunds_manual", manual);
            bus_val_map_set_int(m, "refundable", amount > refunded ? amount - refunded : 0);
            bus_val_arr_push(list, &m);
        }
    }
    redisReply *bad = NULL;
    for (int i = 0; i < queued; i++) {
        if (!ok && !bad && !bus_redis_reply_ok(replies[i]))
            bad = replies[i]; /* handed to s_redis_failed, which frees it */
        else
            freeReplyObject(replies[i]);
    }
    if (!ok) {
        bus_val_destroy(&list);
        return s_redis_failed(app, svc, bad, "intent");
    }
    bus_val_map_set_str(reply, "sale_id", sale_id);
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set(reply, "intents", &list);
    return 0;
}

/*  payment.refund_get {refund_no, store?}. */
static int s_refund_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_app_t *app = arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *store = s_refund_store(app, svc, body);
    if (!store)
        return -1;
    const char *no = bus_val_map_get_str(body, "refund_no");
    if (!s_refund_no_ok(no))
        return s_bad(app, svc, "refund_no: %s", "1-64 letters, digits, '_' or '-'");
    return s_refund_answer(app, svc, store, no, reply);
}

/* ---- refund notifications ------------------------------------------------------------ */

/*  The refund out_refund_no of trade out_trade_no, looked for in every store (a notification
    does not name the store; refund numbers are unique per merchant). 1 found (in filled), 0 none,
    -1 Redis failed. */
static int s_refund_find(s_worker_t *w, const char *no, const char *out_trade_no, s_intent_t *in)
{
    redisReply *stores = bus_redis_command(w->redis, "SMEMBERS %s", BUS_KEY_STORES);
    if (!bus_redis_reply_ok(stores) || stores->type != REDIS_REPLY_ARRAY) {
        if (stores)
            freeReplyObject(stores);
        return -1;
    }
    int found = 0;
    for (size_t i = 0; i < stores->elements && found == 0; i++) {
        const char *store = stores->element[i]->str;
        char key[BUS_KEY_MAX];
        if (!store || !bus_identity_id_ok(store))
            continue;
        redisReply *r = bus_redis_command(w->redis, "HMGET %s intent amount provider state",
                                          bus_key_payref(key, store, no));
        if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
            found = -1;
        } else if (r->element[0]->str && r->element[1]->str && r->element[2]->str &&
                   r->element[3]->str && strcmp(r->element[2]->str, "wechat") == 0 &&
                   (!out_trade_no[0] || strcmp(r->element[0]->str, out_trade_no) == 0)) {
            memset(in, 0, sizeof(*in));
            snprintf(in->store, sizeof(in->store), "%s", store);
            snprintf(in->refund_no, sizeof(in->refund_no), "%s", no);
            snprintf(in->intent, sizeof(in->intent), "%s", r->element[0]->str);
            snprintf(in->provider, sizeof(in->provider), "wechat");
            snprintf(in->state, sizeof(in->state), "%s", r->element[3]->str);
            in->amount = strtoll(r->element[1]->str, NULL, 10);
            in->sent = true;
            found = 1;
        }
        if (r)
            freeReplyObject(r);
    }
    freeReplyObject(stores);
    return found;
}

/*  A POST to the notify endpoint (its own thread and Redis connection: app->notifier). It is
    recorded by the same path as a refund query's answer (s_refund_record) before it is
    answered 204; anything that cannot be trusted is answered 4xx (WeChat sends it again). */
static int s_notified(void *arg, const pay_notify_req_t *req)
{
    s_worker_t *w = arg;
    s_app_t *app = w->app;
    pay_wechat_notice_t n;
    char why[300];
    int rc = pay_wechat_notice_open(app->wx, req->timestamp, req->nonce, req->serial,
                                    req->signature, req->body, req->len, &n, why, sizeof(why));
    if (rc == PAY_WX_NOTICE_UNVERIFIED) {
        bus_stats_inc(app->c_notify_unverified, 1);
        bus_warn("payments.notify", "notification refused: %s", why);
        return 401;
    }
    if (rc != 0) {
        bus_stats_inc(app->c_notify_unreadable, 1);
        bus_warn("payments.notify", "notification refused: %s", why);
        return 400;
    }
    int status = 204;
    s_intent_t in;
    int found = 0;
    if (strncmp(n.event_type, "REFUND.", 7) != 0 || !s_refund_no_ok(n.out_refund_no)) {
        bus_stats_inc(app->c_notify_ignored, 1);
        bus_info("payments.notify", "%.40s notification ignored: not about a refund of ours",
                 n.event_type);
        goto out;
    }
    found = s_refund_find(w, n.out_refund_no, n.out_trade_no, &in);
    if (found < 0) {
        bus_stats_inc(app->c_redis_errors, 1);
        bus_warn("payments.notify", "refund %s: cannot read it: %s", n.out_refund_no,
                 bus_redis_errstr(w->redis));
        status = 503;
        goto out;
    }
    if (found == 0) { /* another system's refund, or one long expired: nothing to do here */
        bus_stats_inc(app->c_notify_ignored, 1);
        bus_info("payments.notify", "%.40s for refund %s: no such WeChat refund here",
                 n.event_type, n.out_refund_no);
        goto out;
    }
    pay_outcome_t o;
    pay_wechat_notice_outcome(&n, in.intent, in.amount, &o);
    char reason[PAY_WHY_MAX + 16];
    snprintf(reason, sizeof(reason), "notified: %s", o.why);
    snprintf(o.why, sizeof(o.why), "%s", reason);
    rc = s_refund_record(w, &in, &o, bus_now_ms() + app->interval_ms, NULL);
    if (rc == -2) {
        status = 503; /* not stored: WeChat sends it again */
        goto out;
    }
    bus_stats_inc(app->c_notified, 1);
    bus_info("payments.notify", "%.40s for refund %s of %s in store %s: %s", n.event_type,
             in.refund_no, in.intent, in.store, rc == 3 ? "final already" : o.why);
out:
    pay_wechat_notice_close(&n);
    return status;
}

/*  The notify endpoint, when --notify-listen is set. 0, or -1 (logged). */
static int s_notify_start(s_app_t *app)
{
    bus_config_t *c = app->config;
    const char *listen = bus_config_str(c, "notify-listen");
    const char *url = bus_config_str(c, "notify-url");
    if (url && (!app->wx || pay_wechat_cfg_set_notify_url(app->wx, url) != 0)) {
        bus_error("payments.config", "notify-url: %s", app->wx ? "an https:// URL without query "
                  "(at most 255 bytes)" : "WeChat Pay is not configured");
        return -1;
    }
    if (!listen)
        return 0;
    const char *path = url ? strchr(url + strlen("https://"), '/') : NULL;
    if (!app->wx || !pay_wechat_has_apiv3(app->wx) || !path) {
        bus_error("payments.config", "notify-listen needs WeChat Pay with its API v3 key "
                  "(wechat-apiv3-key-file) and notify-url with a path");
        return -1;
    }
    s_worker_t *w = &app->notifier;
    const char *err = "";
    w->app = app;
    w->index = -1;
    snprintf(w->owner, sizeof(w->owner), "*");
    w->redis = bus_redis_new_from_config(app->config, &err);
    w->move = w->redis ? bus_redis_script(w->redis, pay_move_lua) : -1;
    if (!w->redis || w->move < 0) {
        bus_error("payments.start", "notify: %s", *err ? err : "out of memory");
        return -1;
    }
    char why[300];
    app->notify = pay_notify_new(listen, path, bus_config_str(c, "notify-cert"),
                                 bus_config_str(c, "notify-key"), s_notified, w, why, sizeof(why));
    if (!app->notify) {
        bus_error("payments.start", "%s", why);
        return -1;
    }
    bus_info("payments.notify", "listening on port %d for WeChat notifications to %s",
             pay_notify_port(app->notify), url);
    return 0;
}

static void s_notify_stop(s_app_t *app)
{
    pay_notify_destroy(&app->notify);
    bus_redis_destroy(&app->notifier.redis);
}

/* ---- start and stop ----------------------------------------------------------------- */

static int s_workers_start(s_app_t *app, const char *instance)
{
    app->nworkers = (int)bus_config_int(app->config, "workers");
    for (int i = 0; i < app->nworkers; i++) {
        s_worker_t *w = &app->workers[i];
        const char *err = "";
        w->app = app;
        w->index = i;
        snprintf(w->owner, sizeof(w->owner), "%s/%d", instance, i);
        w->redis = bus_redis_new_from_config(app->config, &err);
        w->claim = w->redis ? bus_redis_script(w->redis, pay_claim_lua) : -1;
        w->move = w->redis ? bus_redis_script(w->redis, pay_move_lua) : -1;
        w->wx = app->wx ? pay_wechat_new(app->wx) : NULL;
        w->ali = app->ali ? pay_alipay_new(app->ali) : NULL;
        if (w->wx)
            w->providers[w->nproviders++] = pay_wechat_provider(w->wx);
        if (w->ali)
            w->providers[w->nproviders++] = pay_alipay_provider(w->ali);
        if (!w->redis || w->claim < 0 || w->move < 0 || (app->wx && !w->wx) ||
            (app->ali && !w->ali)) {
            bus_error("payments.start", "worker %d: %s", i, *err ? err : "out of memory");
            return -1;
        }
        if (pthread_create(&w->thread, NULL, s_worker_run, w) != 0) {
            bus_error("payments.start", "worker %d: cannot start its thread", i);
            return -1;
        }
        w->started = true;
    }
    return 0;
}

static void s_workers_stop(s_app_t *app)
{
    atomic_store(&app->stop, true);
    pthread_mutex_lock(&app->lock);
    pthread_cond_broadcast(&app->wake);
    pthread_mutex_unlock(&app->lock);
    for (int i = 0; i < app->nworkers; i++) {
        s_worker_t *w = &app->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        pay_wechat_destroy(&w->wx);
        pay_alipay_destroy(&w->ali);
        bus_redis_destroy(&w->redis);
    }
}

static int s_wechat_load(s_app_t *app)
{
    bus_config_t *c = app->config;
    if (!bus_config_str(c, "wechat-mchid"))
        return 0; /* off: WeChat codes are refused with a clear message */
    char why[300];
    app->wx = pay_wechat_cfg_load(
        bus_config_str(c, "wechat-base-url"), bus_config_str(c, "wechat-mchid"),
        bus_config_str(c, "wechat-appid"), bus_config_str(c, "wechat-serial"),
        bus_config_str(c, "wechat-key-file"), bus_config_str(c, "wechat-platform-keys"),
        bus_config_str(c, "wechat-apiv3-key-file"), bus_config_str(c, "wechat-ca-file"),
        (int)bus_config_int(c, "wechat-timeout-ms"), why, sizeof(why));
    if (!app->wx) {
        bus_error("payments.config", "%s", why);
        return -1;
    }
    bus_info("payments.config", "WeChat Pay merchant %s at %s", bus_config_str(c, "wechat-mchid"),
             bus_config_str(c, "wechat-base-url"));
    return 0;
}

static int s_alipay_load(s_app_t *app)
{
    bus_config_t *c = app->config;
    if (!bus_config_str(c, "alipay-app-id"))
        return 0; /* off: Alipay codes are refused with a clear message */
    char why[300];
    app->ali = pay_alipay_cfg_load(bus_config_str(c, "alipay-gateway"),
                                   bus_config_str(c, "alipay-app-id"),
                                   bus_config_str(c, "alipay-key-file"),
                                   bus_config_str(c, "alipay-public-key-file"),
                                   bus_config_str(c, "alipay-ca-file"),
                                   (int)bus_config_int(c, "alipay-timeout-ms"), why, sizeof(why));
    if (!app->ali) {
        bus_error("payments.config", "%s", why);
        return -1;
    }
    bus_info("payments.config", "Alipay app %s at %s", bus_config_str(c, "alipay-app-id"),
             bus_config_str(c, "alipay-gateway"));
    return 0;
}

/*  The metrics page's gauges of payments' own (docs/metrics.md): per registered store, the
    intents and refunds not final yet (the due set the workers carry), by state (pending,
    unknown, ...), reading at most S_METRICS_OPEN_MAX of them a store (the rest counted as
    "unread"). The main thread, with its own Redis connection; a store that cannot be read is
    left out of this page. */
#define S_METRICS_OPEN_MAX 200
static void s_metrics(bus_metrics_out_t *out, void *arg)
{
    s_app_t *app = arg;
    static const char *const states[] = {"created", "pending", "unknown", "succeeded",
                                         "failed",  "reversed", "refunded", "other", "unread"};
    enum { S_NSTATES = sizeof(states) / sizeof(states[0]) };
    redisReply *stores = bus_redis_command(app->redis, "SMEMBERS %s", BUS_KEY_STORES);
    for (size_t i = 0; bus_redis_reply_ok(stores) && stores->type == REDIS_REPLY_ARRAY &&
                       i < stores->elements && i < 1000;
         i++) {
        const char *store = stores->element[i]->str;
        char due[BUS_KEY_MAX];
        if (!store || !bus_identity_id_ok(store))
            continue;
        redisReply *r = bus_redis_command(app->redis, "ZRANGE %s 0 -1",
                                          bus_key_paydue(due, store));
        if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            continue;
        }
        int64_t count[S_NSTATES] = {0};
        size_t n = r->elements < S_METRICS_OPEN_MAX ? r->elements : S_METRICS_OPEN_MAX;
        count[S_NSTATES - 1] = (int64_t)(r->elements - n); /* unread */
        size_t queued = 0;
        for (size_t k = 0; k < n; k++) { /* their states in one round trip */
            const char *member = r->element[k]->str ? r->element[k]->str : "";
            char key[BUS_KEY_MAX];
            bool refund = strncmp(member, "R:", 2) == 0;
            if (bus_redis_append(app->redis, "HGET %s state",
                                 refund ? bus_key_payref(key, store, member + 2)
                                        : bus_key_pay(key, store, member)) != 0)
                break;
            queued++;
        }
        for (size_t k = 0; k < queued; k++) {
            redisReply *q = bus_redis_get_reply(app->redis);
            int idx = S_NSTATES - 2; /* other */
            for (int st = 0; q && q->type == REDIS_REPLY_STRING && st < S_NSTATES - 2; st++)
                if (strcmp(q->str, states[st]) == 0)
                    idx = st;
            count[idx]++;
            freeReplyObject(q);
        }
        for (int st = 0; st < S_NSTATES; st++) {
            if (!count[st] && strcmp(states[st], "pending") != 0)
                continue; /* every store shows pending, 0 or not; others when there are some */
            const char *const labels[] = {"store", store, "state", states[st], NULL};
            bus_metrics_out_gauge(out, "payments_open",
                                  "payment intents and refunds not final yet (carried by the "
                                  "workers), by state",
                                  labels, count[st]);
        }
        freeReplyObject(r);
    }
    freeReplyObject(stores);
}

int main(int argc, char **argv)
{
    int exit_code;
    bus_config_t *config = svc_config_load(S_PROGRAM, s_options, false, argc, argv, &exit_code);
    svc_core_t core;
    if (!config)
        return exit_code;
    if (pay_http_global_init() != 0) {
        bus_error("payments.start", "libcurl does not start");
        return 1;
    }
    if (svc_core_start(&core, config, S_PROGRAM, false) != 0) {
        pay_http_global_cleanup();
        return 1;
    }
    static s_app_t app; /* big (the queue); one per process */
    app.config = config;
    app.redis = core.redis;
    app.interval_ms = bus_config_int(config, "query-interval-ms");
    app.reverse_ms = bus_config_int(config, "reverse-after-ms");
    app.lease_ms = bus_config_int(config, "lease-ms");
    app.scan_ms = bus_config_int(config, "scan-ms");
    app.refund_deadline_ms = bus_config_int(config, "refund-deadline-s") * 1000;
    const char *crash = getenv(S_CRASH_ENV);
    app.crash_after_refund_failed = crash && strcmp(crash, "refund_failed") == 0;
    app.retention_s = bus_config_int(config, "retention-s");
    if (app.retention_s == 0)
        app.retention_s = bus_config_int(config, "retention-days") * S_DAY_S;
    app.day_ttl_s = app.retention_s > 0 ? app.retention_s + S_DAY_MARGIN * S_DAY_S : 0;
    int64_t call_ms = 0; /* the longest call of a provider configured here */
    if (bus_config_str(config, "wechat-mchid"))
        call_ms = bus_config_int(config, "wechat-timeout-ms");
    if (bus_config_str(config, "alipay-app-id") &&
        bus_config_int(config, "alipay-timeout-ms") > call_ms)
        call_ms = bus_config_int(config, "alipay-timeout-ms");
    app.settle_ms = call_ms + 5000;
    if (app.lease_ms < app.settle_ms) {
        /* a lease that ends while a pay call may still be in flight would let another worker
           decide the intent before the call's answer */
        bus_error("payments.config", "lease-ms (%" PRId64 ") must be at least the longest provider "
                  "timeout + 5000 (%" PRId64 ")", app.lease_ms, app.settle_ms);
        svc_core_stop(&core);
        pay_http_global_cleanup();
        return 2;
    }
    pthread_mutex_init(&app.lock, NULL);
    pthread_condattr_t cattr; /* waits measured on the monotonic clock: a clock step never
                                 stalls the workers */
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&app.wake, &cattr);
    pthread_condattr_destroy(&cattr);
    app.create = bus_redis_script(app.redis, pay_create_lua);
    app.cancel = bus_redis_script(app.redis, pay_cancel_lua);
    app.refund = bus_redis_script(app.redis, refund_create_lua);
    app.move = bus_redis_script(app.redis, pay_move_lua);
    app.stats = bus_service_stats(core.svc);
    app.c_requests = bus_stats_counter(app.stats, "pay_requests");
    app.c_created = bus_stats_counter(app.stats, "intents_created");
    app.c_conflicts = bus_stats_counter(app.stats, "conflicts");
    app.c_bad = bus_stats_counter(app.stats, "bad_requests");
    app.c_redis_errors = bus_stats_counter(app.stats, "redis_errors");
    app.c_steps = bus_stats_counter(app.stats, "steps");
    app.c_succeeded = bus_stats_counter(app.stats, "succeeded");
    app.c_failed = bus_stats_counter(app.stats, "failed");
    app.c_reversed = bus_stats_counter(app.stats, "reversed");
    app.c_unknown = bus_stats_counter(app.stats, "unknown_answers");
    app.c_provider_calls = bus_stats_counter(app.stats, "provider_calls");
    app.c_unverified = bus_stats_counter(app.stats, "unverified_answers");
    app.c_lost_leases = bus_stats_counter(app.stats, "lost_leases");
    app.c_notified = bus_stats_counter(app.stats, "notifications");
    app.c_notify_unverified = bus_stats_counter(app.stats, "notifications_unverified");
    app.c_notify_unreadable = bus_stats_counter(app.stats, "notifications_undecryptable");
    app.c_notify_ignored = bus_stats_counter(app.stats, "notifications_ignored");
    app.c_refunds_manual = bus_stats_counter(app.stats, "refunds_manual");
    static const bus_method_t methods[] = {
        {"payment.pay", s_pay, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {"payment.get", s_get, BUS_METHOD_READ, BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR |
                                                    BUS_ROLE_SERVICE},
        {"payment.cancel", s_cancel, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {"payment.refund", s_refund, BUS_METHOD_IDEMPOTENT,
         BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR},
        {"payment.refund_get", s_refund_get, BUS_METHOD_READ,
         BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE},
        {"payment.refundable", s_refundable, BUS_METHOD_READ,
         BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE},
        {"payment.refund_resolve", s_refund_resolve, BUS_METHOD_IDEMPOTENT, BUS_ROLE_OPERATOR},
        {NULL, NULL, 0, 0}};
    int rc = app.create < 0 || app.cancel < 0 || app.refund < 0 || app.move < 0 ||
                     !app.c_refunds_manual ||
                     bus_service_methods(core.svc, methods, &app) != 0
                 ? -1
                 : 0;
    if (rc != 0)
        bus_error("payments.start", "cannot register methods or scripts: out of memory");
    if (rc == 0)
        rc = bus_metrics_add_collector(core.metrics, s_metrics, &app);
    if (rc == 0)
        rc = payments_stored_methods(core.svc, app.redis, config);
    if (rc == 0)
        rc = pay_recon_methods(core.svc, app.redis, app.stats, app.day_ttl_s);
    if (rc == 0)
        rc = s_wechat_load(&app);
    if (rc == 0)
        rc = s_alipay_load(&app);
    if (rc == 0)
        rc = s_notify_start(&app); /* before the workers: it sets the notify URL they send */
    if (rc == 0)
        rc = s_workers_start(&app, bus_service_instance(core.svc));
    if (rc == 0)
        svc_core_run(&core, NULL, NULL);
    s_notify_stop(&app);
    s_workers_stop(&app);
    bus_info("payments.stopping", "intents=%" PRId64 " succeeded=%" PRId64 " reversed=%" PRId64,
             bus_stats_load(app.c_created), bus_stats_load(app.c_succeeded),
             bus_stats_load(app.c_reversed));
    svc_core_stop(&core);
    pay_wechat_cfg_destroy(&app.wx);
    pay_alipay_cfg_destroy(&app.ali);
    pay_http_global_cleanup();
    pthread_cond_destroy(&app.wake);
    pthread_mutex_destroy(&app.lock);
    return rc == 0 ? 0 : 1;
}
