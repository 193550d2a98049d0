/*  =========================================================================
    stored - stored-value cards (canteen, campus and member cards, 消费机)
    in the payments service (docs/payments.md "Stored-value cards")

    A card is a balance in fen with a status and limits, kept in Redis under
    its own hash tag (svc:{<card>}...), so that every change to a card is
    one script on one card: a deduction checks the status, the balance, the
    day's and the meal's limits and takes the money in the same atomic step,
    and two registers deducting from one card at the same instant are put in
    a row by Redis, never both against the same balance. An online deduction
    (card.pay) that breaks a rule is refused and changes nothing, so a card
    is never overdrawn online. An offline deduction (card.offline) was made
    at the till already, under the card's offline cap, while the till could
    not ask: it is always applied and recorded, and flagged with what it
    broke (the balance may go below zero), never dropped.

    Exactly once without the reply cache: every deduction is keyed by its
    sale id and attempt, every top-up by the caller's op id, and the script
    keeps the result under that key (svc:{<card>}:ops) in the same step as
    the change; the same request again answers the same result. The ops are
    forgotten with the card's log entries (the last S_LOG_MAX operations of
    that card), which bounds a card's memory: a till retries within
    minutes, not after a thousand more operations on the same card.

    The blocklist registers pull ({svcblock}) is another hash tag, so
    blocking is two scripts: the card first (online payments are refused
    from that instant: the card is the authority), then the list. Before
    the card changes, the change is noted as pending in the list's tag; the
    card says listed = 0 until the list has its status. A crash between the
    two is finished by whoever sees either mark: the next card.blocklist
    (registers pull it all day) finishes pending changes older than a few
    seconds, and any read of a card with listed = 0 (card.get, card.pay,
    card.offline, a retried block) writes the list. The list only ever
    takes a newer card version, so a late repair never puts an old status
    back.

    Day and meal are the service's local time (TZ); the scripts get the
    day's and the meal's field names from here, since a script has no
    trustworthy clock of its own. One service thread runs every handler,
    so the state is one static struct (no threads touch it).
    =========================================================================
*/
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bus/bus.h>
#include <bus/keys.h>
#include <pos/sale.h>
#include <pos/ticket.h>

#include "stored.h"
#include "svc_caller.h"

#include "svc_blocklist_lua.h"
#include "svc_blockread_lua.h"
#include "svc_create_lua.h"
#include "svc_deduct_lua.h"
#include "svc_refund_lua.h"
#include "svc_listed_lua.h"
#include "svc_status_lua.h"
#include "svc_topup_lua.h"
#include "svc_unpend_lua.h"

#define S_RETRY_MS         500 /* hint sent with `unavailable` */
#define S_CARD_MAX         32  /* bytes of a card id: [0-9A-Za-z_-] */
#define S_OPID_MAX         32  /* bytes of a top-up's op id, same characters */
#define S_HOLDER_MAX       64  /* bytes of a holder's name */
#define S_REASON_MAX       200 /* bytes of a block reason */
#define S_ATTEMPT_MAX      99
#define S_MEALS_MAX        8
#define S_MEAL_NAME_MAX    16
#define S_LOG_MAX          "1000"   /* operations kept per card (log and ops together) */
#define S_SALE_INDEX_TTL_S "34560000" /* a sale's deductions noted for returns: 400 days */
#define S_SALE_FIELD_MAX 48    /* "<card> <attempt>" of the sale index */
#define S_SPENT_TTL_S      "259200" /* spent counters live 3 days after their last write */
#define S_SPENT_DAYS       2        /* spent fields of days older than today - 2 are dropped */
#define S_PAGE_MAX         500      /* blocklist changes per page */
#define S_OFFLINE_AHEAD    86400000 /* an offline record may be this far ahead of our clock */
#define S_RESULT_FIELDS    7
#define S_PENDING_GRACE_MS 5000 /* a status change pending this long was cut by a crash */
#define S_ERR_NOT_FOUND    "not_found"
#define S_EVERYONE         (BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE)

typedef struct {
    char name[S_MEAL_NAME_MAX + 1];
    int from, to; /* minutes of the local day, [from, to) */
} s_meal_t;

/* One deduction's or top-up's result as the scripts keep it (see svc_deduct.lua). */
typedef struct {
    char outcome[16], flags[96], mode[16], who[BUS_ID_NAME_MAX + 1];
    int64_t amount, balance, ms;
} s_result_t;

static struct {
    bus_redis_t *redis;
    int create, topup, deduct, status, blocklist, listed, blockread, unpend, refund;
    s_meal_t meals[S_MEALS_MAX];
    int nmeals;
    int64_t *c_created, *c_topups, *c_deductions, *c_refused_blocked, *c_refused_balance,
        *c_refused_daily, *c_refused_meal, *c_offline, *c_offline_flagged, *c_duplicates, *c_voids,
        *c_refunds,
        *c_conflicts, *c_blocks, *c_unblocks, *c_repairs, *c_bad, *c_redis_errors;
} s_st;

/* ---- input ------------------------------------------------------------------------ */

static bool s_id_ok(const char *id, size_t max)
{
    size_t n = id ? strlen(id) : 0;
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '_' && id[i] != '-')
            return false;
    return true;
}

/*  Printable text of 1..max bytes (UTF-8 allowed), no control characters. */
static bool s_text_ok(const char *text, size_t max)
{
    size_t n = text ? strlen(text) : 0;
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return false;
    return true;
}

static int s_bad(bus_service_t *svc, const char *what)
{
    bus_stats_inc(s_st.c_bad, 1);
    return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", what);
}

static int s_redis_failed(bus_service_t *svc, redisReply *r, const char *what)
{
    bus_stats_inc(s_st.c_redis_errors, 1);
    return bus_service_redis_failed(svc, s_st.redis, r, S_RETRY_MS, what);
}

/*  The card id of a body; NULL after answering bad_request. */
static const char *s_card(bus_service_t *svc, const bus_val_t *body)
{
    const char *card = bus_val_map_get_str(body, "card");
    if (!s_id_ok(card, S_CARD_MAX)) {
        s_bad(svc, "card: a card id, 1-32 letters, digits, '_' or '-'");
        return NULL;
    }
    return card;
}

/*  An optional amount field: absent is dflt. false when present but not 0..POS_AMOUNT_MAX. */
static bool s_amount_opt(const bus_val_t *body, const char *name, int64_t dflt, int64_t *out)
{
    *out = dflt;
    if (!bus_val_map_get(body, name))
        return true;
    return bus_val_map_get_int(body, name, out) && *out >= 0 && *out <= POS_AMOUNT_MAX;
}

/*  Who asks, for the card's log: the caller's name ("-" without identities). */
static const char *s_who(bus_service_t *svc)
{
    const bus_identity_t *me = bus_service_caller(svc);
    return me->name[0] ? me->name : "-";
}

/* ---- meals and days ------------------------------------------------------------------ */

static bool s_hhmm(const char *p, int *minutes)
{
    if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]) || p[2] != ':' ||
        !isdigit((unsigned char)p[3]) || !isdigit((unsigned char)p[4]))
        return false;
    int h = (p[0] - '0') * 10 + (p[1] - '0'), m = (p[3] - '0') * 10 + (p[4] - '0');
    if (h > 24 || m > 59 || (h == 24 && m != 0))
        return false;
    *minutes = h * 60 + m;
    return true;
}

/*  "name=HH:MM-HH:MM,..." into s_st.meals. 0, or -1 with why. A meal lies within one day. */
static int s_meals_parse(const char *text, char *why, size_t size)
{
    s_st.nmeals = 0;
    const char *p = text;
    while (*p) {
        const char *eq = strchr(p, '=');
        size_t n = eq ? (size_t)(eq - p) : 0;
        s_meal_t *m = &s_st.meals[s_st.nmeals];
        if (s_st.nmeals == S_MEALS_MAX || !eq || n < 1 || n > S_MEAL_NAME_MAX) {
            snprintf(why, size,
                     "--meals: at most %d meals, each name=HH:MM-HH:MM (a name of "
                     "1-%d letters)",
                     S_MEALS_MAX, S_MEAL_NAME_MAX);
            return -1;
        }
        memcpy(m->name, p, n);
        m->name[n] = '\0';
        for (size_t i = 0; i < n; i++)
            if (!isalnum((unsigned char)m->name[i]) && m->name[i] != '_') {
                snprintf(why, size, "--meals: meal name '%s': letters, digits and '_' only",
                         m->name);
                return -1;
            }
        const char *t = eq + 1;
        if (strlen(t) < 11 || !s_hhmm(t, &m->from) || t[5] != '-' || !s_hhmm(t + 6, &m->to) ||
            m->from >= m->to || (t[11] != ',' && t[11] != '\0')) {
            snprintf(why, size, "--meals: %s: HH:MM-HH:MM, start before end, within one day",
                     m->name);
            return -1;
        }
        s_st.nmeals++;
        p = t[11] == ',' ? t + 12 : t + 11;
    }
    return 0;
}

/*  The spent fields of the local time at ms: "day:YYYYMMDD", "meal:YYYYMMDD:<meal>" (""
    outside every meal), the oldest day kept ("YYYYMMDD"), and the meal's name ("" outside). */
static void s_fields(int64_t ms, char day[24], char meal[48], char keep[12], const char **name)
{
    time_t t = (time_t)(ms / 1000), old = t - S_SPENT_DAYS * 86400;
    struct tm tm, tm_old;
    char ymd[12] = "19700101";
    localtime_r(&t, &tm);
    localtime_r(&old, &tm_old);
    strftime(ymd, sizeof(ymd), "%Y%m%d", &tm);
    strftime(keep, 12, "%Y%m%d", &tm_old);
    snprintf(day, 24, "day:%s", ymd);
    int minute = tm.tm_hour * 60 + tm.tm_min;
    meal[0] = '\0';
    *name = "";
    for (int i = 0; i < s_st.nmeals; i++)
        if (minute >= s_st.meals[i].from && minute < s_st.meals[i].to) {
            snprintf(meal, 48, "meal:%s:%s", ymd, s_st.meals[i].name);
            *name = s_st.meals[i].name;
            break;
        }
}

/* ---- results and the blocklist ---------------------------------------------------------- */

static bool s_result_parse(const char *text, s_result_t *r)
{
    memset(r, 0, sizeof(*r));
    return text &&
           sscanf(text, "%15s %" SCNd64 " %" SCNd64 " %95s %" SCNd64 " %15s %64s", r->outcome,
                  &r->amount, &r->balance, r->flags, &r->ms, r->mode, r->who) == S_RESULT_FIELDS;
}

/*  Write the card's status into the blocklist (svc_blocklist.lua), then mark the card listed
    if it did not change meanwhile. The list's version after it, or -1 when Redis failed (the
    card stays unlisted: the next touch tries again). */
static int64_t s_list(const char *card, const char *status, const char *version)
{
    const char *argv[] = {
        BUS_KEY_SVCBLOCK, BUS_KEY_SVCBLOCK_VERSION, BUS_KEY_SVCBLOCK_STATE, card, status, version};
    redisReply *r = bus_redis_evalsha(s_st.redis, s_st.blocklist, 3, 6, argv, NULL);
    bool ok = bus_redis_reply_ok(r) && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    int64_t list_version = ok ? r->element[0]->integer : -1;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        bus_stats_inc(s_st.c_redis_errors, 1);
        return -1;
    }
    char key[BUS_KEY_MAX];
    const char *largv[] = {bus_key_svc(key, card, NULL), version};
    r = bus_redis_evalsha(s_st.redis, s_st.listed, 1, 2, largv, NULL);
    if (!bus_redis_reply_ok(r))
        bus_stats_inc(s_st.c_redis_errors, 1);
    if (r)
        freeReplyObject(r);
    return list_version;
}

/*  The change of card noted pending at ms is in the list: forget it (unless a newer one of the
    same card began meanwhile). A failure leaves it to the next sweep. */
static void s_unpend(const char *card, const char *ms)
{
    const char *argv[] = {BUS_KEY_SVCBLOCK_PENDING, card, ms};
    redisReply *r = bus_redis_evalsha(s_st.redis, s_st.unpend, 1, 3, argv, NULL);
    if (!bus_redis_reply_ok(r))
        bus_stats_inc(s_st.c_redis_errors, 1);
    if (r)
        freeReplyObject(r);
}

/*  Finish the status changes a crash cut between the card and the list: every one pending
    longer than S_PENDING_GRACE_MS (younger ones are still on their way). Best effort: what
    fails stays pending for the next call. */
static void s_sweep(void)
{
    redisReply *p = bus_redis_command(s_st.redis, "HGETALL %s", BUS_KEY_SVCBLOCK_PENDING);
    int64_t now = bus_now_ms();
    for (size_t i = 0; bus_redis_reply_ok(p) && p->type == REDIS_REPLY_ARRAY && i + 1 < p->elements;
         i += 2) {
        const char *card = p->element[i]->str, *ms = p->element[i + 1]->str;
        if (!card || !ms || !s_id_ok(card, S_CARD_MAX) ||
            now - strtoll(ms, NULL, 10) < S_PENDING_GRACE_MS)
            continue;
        char key[BUS_KEY_MAX];
        redisReply *c = bus_redis_command(s_st.redis, "HMGET %s status version listed",
                                          bus_key_svc(key, card, NULL));
        if (bus_redis_reply_ok(c) && c->type == REDIS_REPLY_ARRAY && c->elements == 3) {
            const char *status = c->element[0]->str, *version = c->element[1]->str;
            const char *listed = c->element[2]->str;
            bool done = !status || !listed || strcmp(listed, "0") != 0;
            if (!done && version && s_list(card, status, version) >= 0) {
                bus_stats_inc(s_st.c_repairs, 1);
                bus_info("payments.card", "card %s: a cut %s finished in the blocklist", card,
                         status);
                done = true;
            }
            if (done)
                s_unpend(card, ms);
        }
        if (c)
            freeReplyObject(c);
    }
    if (p)
        freeReplyObject(p);
}

/*  A card read with listed = 0: its last status change never reached the blocklist (a crash
    or Redis failure between the two scripts). Written now. */
static void s_repair(const char *card, const char *status, const char *version, const char *listed)
{
    if (!listed || strcmp(listed, "0") != 0 || !status || !version)
        return;
    if (s_list(card, status, version) >= 0) {
        bus_stats_inc(s_st.c_repairs, 1);
        bus_info("payments.card", "card %s: blocklist repaired (%s, card version %s)", card, status,
                 version);
    }
}

/* ---- card.create and card.get ------------------------------------------------------------ */

/*  The card as card.get answers it into reply; 0, or -1 after answering. */
static int s_describe(bus_service_t *svc, const char *card, bus_val_t *reply)
{
    char key[BUS_KEY_MAX], spent[BUS_KEY_MAX], day[24], meal[48], keep[12];
    const char *meal_name;
    s_fields(bus_now_ms(), day, meal, keep, &meal_name);
    bus_key_svc(key, card, NULL);
    bus_key_svc(spent, card, ":spent");
    redisReply *r = bus_redis_command(s_st.redis, "HGETALL %s", key);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(svc, r, "card");
    if (r->elements == 0) {
        freeReplyObject(r);
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no card %s", card);
    }
    static const char *const texts[] = {"holder", "status", "reason", NULL};
    static const char *const ints[] = {"balance",    "daily_limit", "meal_limit", "offline_cap",
                                       "created_ms", "updated_ms",  "version",    NULL};
    const char *status = NULL, *version = NULL, *listed = NULL;
    bus_val_map_set_str(reply, "card", card);
    bus_redis_hash_to_map(r, texts, ints, reply);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!f || !v)
            continue;
        if (strcmp(f, "status") == 0)
            status = v;
        else if (strcmp(f, "version") == 0)
            version = v;
        else if (strcmp(f, "listed") == 0)
            listed = v;
    }
    s_repair(card, status, version, listed);
    freeReplyObject(r);
    r = bus_redis_command(s_st.redis, "HMGET %s %s %s", spent, day, *meal ? meal : day);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return s_redis_failed(svc, r, "card spent");
    bus_val_map_set_int(reply, "spent_today",
                        r->element[0]->str ? strtoll(r->element[0]->str, NULL, 10) : 0);
    bus_val_map_set_str(reply, "meal", meal_name);
    bus_val_map_set_int(reply, "spent_meal",
                        *meal && r->element[1]->str ? strtoll(r->element[1]->str, NULL, 10) : 0);
    freeReplyObject(r);
    return 0;
}

/*  card.create {card, holder, daily_limit?, meal_limit?, offline_cap?}: operators. */
static int s_create(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *card = s_card(svc, body);
    if (!card)
        return -1;
    const char *holder = bus_val_map_get_str(body, "holder");
    if (!s_text_ok(holder, S_HOLDER_MAX))
        return s_bad(svc, "holder: the holder's name, 1-64 bytes of text");
    int64_t daily, meal, cap;
    if (!s_amount_opt(body, "daily_limit", 0, &daily) ||
        !s_amount_opt(body, "meal_limit", 0, &meal) || !s_amount_opt(body, "offline_cap", 0, &cap))
        return s_bad(svc, "daily_limit, meal_limit, offline_cap: fen, 0 (none) to 10^12");
    char key[BUS_KEY_MAX], ops[BUS_KEY_MAX], log[BUS_KEY_MAX];
    char daily_s[24], meal_s[24], cap_s[24], now_s[24];
    snprintf(daily_s, sizeof(daily_s), "%" PRId64, daily);
    snprintf(meal_s, sizeof(meal_s), "%" PRId64, meal);
    snprintf(cap_s, sizeof(cap_s), "%" PRId64, cap);
    snprintf(now_s, sizeof(now_s), "%" PRId64, bus_now_ms());
    const char *argv[] = {bus_key_svc(key, card, NULL),
                          bus_key_svc(ops, card, ":ops"),
                          bus_key_svc(log, card, ":log"),
                          holder,
                          daily_s,
                          meal_s,
                          cap_s,
                          now_s,
                          s_who(svc),
                          S_LOG_MAX};
    redisReply *r = bus_redis_evalsha(s_st.redis, s_st.create, 3, 10, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(svc, r, "card create");
    bool exists = strcmp(r->element[0]->str, "exists") == 0;
    freeReplyObject(r);
    if (exists)
        return bus_service_error(svc, "exists", "card %s exists already", card);
    bus_stats_inc(s_st.c_created, 1);
    bus_info("payments.card", "card %s created by %s", card, s_who(svc));
    return s_describe(svc, card, reply);
}

/*  card.get {card}: registers, operators and services. */
static int s_get(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const char *card = s_card(svc, bus_msg_body(req));
    return card ? s_describe(svc, card, reply) : -1;
}

/* ---- card.topup ------------------------------------------------------------------------ */

/*  card.topup {card, amount, op_id}: operators and services; once per op_id. */
static int s_topup(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *card = s_card(svc, body);
    if (!card)
        return -1;
    const char *op_id = bus_val_map_get_str(body, "op_id");
    int64_t amount = 0;
    if (!bus_val_map_get_int(body, "amount", &amount) || amount < 1 || amount > POS_AMOUNT_MAX)
        return s_bad(svc, "amount: fen, from 1 to 10^12");
    if (!s_id_ok(op_id, S_OPID_MAX))
        return s_bad(svc, "op_id: the top-up's own id (1-32 letters, digits, '_' or '-'): the "
                          "same op_id is the same top-up");
    char key[BUS_KEY_MAX], ops[BUS_KEY_MAX], log[BUS_KEY_MAX], op[S_OPID_MAX + 4];
    char amount_s[24], now_s[24], max_s[24];
    snprintf(op, sizeof(op), "t:%s", op_id);
    snprintf(amount_s, sizeof(amount_s), "%" PRId64, amount);
    snprintf(now_s, sizeof(now_s), "%" PRId64, bus_now_ms());
    snprintf(max_s, sizeof(max_s), "%" PRId64, (int64_t)POS_AMOUNT_MAX);
    const char *argv[] = {bus_key_svc(key, card, NULL),
                          bus_key_svc(ops, card, ":ops"),
                          bus_key_svc(log, card, ":log"),
                          op,
                          amount_s,
                          now_s,
                          s_who(svc),
                          S_LOG_MAX,
                          max_s};
    redisReply *r = bus_redis_evalsha(s_st.redis, s_st.topup, 3, 9, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(svc, r, "card topup");
    char kind[16];
    snprintf(kind, sizeof(kind), "%s", r->element[0]->str);
    s_result_t res;
    bool parsed = r->elements >= 2 && s_result_parse(r->element[1]->str, &res);
    int64_t balance =
        r->elements >= 2 && r->element[1]->str ? strtoll(r->element[1]->str, NULL, 10) : 0;
    freeReplyObject(r);
    if (strcmp(kind, "none") == 0)
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no card %s", card);
    if (strcmp(kind, "limit") == 0)
        return bus_service_error(svc, "balance_limit",
                                 "card %s: a balance of %" PRId64 " fen plus %" PRId64
                                 " fen passes the highest balance (10^12 fen)",
                                 card, balance, amount);
    if (strcmp(kind, "conflict") == 0) {
        bus_stats_inc(s_st.c_conflicts, 1);
        return bus_service_error(svc, "conflict",
                                 "op_id %s topped card %s up with another amount: a new "
                                 "top-up needs a new op_id",
                                 op_id, card);
    }
    if (!parsed)
        return s_redis_failed(svc, NULL, "card topup result");
    bool dup = strcmp(kind, "dup") == 0;
    bus_stats_inc(dup ? s_st.c_duplicates : s_st.c_topups, 1);
    bus_val_map_set_str(reply, "card", card);
    bus_val_map_set_str(reply, "op_id", op_id);
    bus_val_map_set_int(reply, "amount", res.amount);
    bus_val_map_set_int(reply, "balance", res.balance);
    bus_val_map_set_int(reply, "ms", res.ms);
    bus_val_map_set_bool(reply, "duplicate", dup);
    return 0;
}

/* ---- card.pay and card.offline ----------------------------------------------------------- */

/*  The answer to a deduction's result: the reply, or the refusal's error. */
static int s_deduct_answer(bus_service_t *svc, const char *card, const char *sale_id,
                           int64_t attempt, const s_result_t *res, bool dup, bool giving_up,
                           bus_val_t *reply)
{
    if (strcmp(res->outcome, "voided") == 0 && !giving_up)
        return bus_service_error(svc, "voided",
                                 "card %s: the register gave attempt %" PRId64 " of %s up: "
                                 "nothing is taken for it",
                                 card, attempt, sale_id);
    if (strcmp(res->outcome, "voided") == 0) {
        bool refunded = strcmp(res->flags, "refunded") == 0;
        bus_val_map_set_str(reply, "card", card);
        bus_val_map_set_str(reply, "sale_id", sale_id);
        bus_val_map_set_int(reply, "attempt", attempt);
        bus_val_map_set_bool(reply, "voided", true);
        bus_val_map_set_int(reply, "refunded", refunded ? res->amount : 0);
        bus_val_map_set_int(reply, "balance", res->balance);
        bus_val_map_set_bool(reply, "duplicate", dup);
        return 0;
    }
    static const struct {
        const char *outcome, *code, *text;
    } refusals[] = {
        {"blocked", "card_blocked", "card %s is blocked"},
        {"balance", "insufficient_balance", "card %s: the balance is less than the amount"},
        {"daily", "over_daily_limit", "card %s: this would pass its daily limit"},
        {"meal", "over_meal_limit", "card %s: this would pass its limit for this meal"},
    };
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
        if (strcmp(res->outcome, refusals[i].outcome) == 0) {
            char text[160];
            snprintf(text, sizeof(text), refusals[i].text, card);
            return bus_service_error(svc, refusals[i].code,
                                     "%s (asked %" PRId64 " fen, balance %" PRId64
                                     " fen): nothing was taken",
                                     text, res->amount, res->balance);
        }
    bool flagged = strcmp(res->flags, "-") != 0;
    bus_val_map_set_str(reply, "card", card);
    bus_val_map_set_str(reply, "sale_id", sale_id);
    bus_val_map_set_int(reply, "attempt", attempt);
    bus_val_map_set_int(reply, "amount", res->amount);
    bus_val_map_set_int(reply, "balance", res->balance);
    bus_val_map_set_str(reply, "mode", res->mode);
    bus_val_map_set_bool(reply, "flagged", flagged);
    bus_val_map_set_str(reply, "flags", flagged ? res->flags : "");
    bus_val_map_set_int(reply, "ms", res->ms);
    bus_val_map_set_bool(reply, "duplicate", dup);
    return 0;
}

static void s_count(const s_result_t *res)
{
    if (strcmp(res->outcome, "blocked") == 0)
        bus_stats_inc(s_st.c_refused_blocked, 1);
    else if (strcmp(res->outcome, "balance") == 0)
        bus_stats_inc(s_st.c_refused_balance, 1);
    else if (strcmp(res->outcome, "daily") == 0)
        bus_stats_inc(s_st.c_refused_daily, 1);
    else if (strcmp(res->outcome, "meal") == 0)
        bus_stats_inc(s_st.c_refused_meal, 1);
    else if (strcmp(res->outcome, "voided") == 0)
        bus_stats_inc(s_st.c_voids, 1);
    else if (strcmp(res->mode, "offline") == 0) {
        bus_stats_inc(s_st.c_offline, 1);
        if (strcmp(res->flags, "-") != 0)
            bus_stats_inc(s_st.c_offline_flagged, 1);
    } else
        bus_stats_inc(s_st.c_deductions, 1);
}

static void s_sale_index(const char *store, const char *sale_id, const char *card,
                         int64_t attempt, int64_t amount, bool add);

/*  card.pay, card.offline and card.void: one deduction of one of the register's sales, by
    mode "pay", "offline" (the till did it already at ts, ms) or "void" (the register gives the
    attempt up). */
static int s_deduct(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, const char *mode)
{
    bool offline = strcmp(mode, "offline") == 0;
    const bus_val_t *body = bus_msg_body(req);
    svc_node_id_t node;
    if (svc_caller_node(svc, body, &node, s_st.c_bad, NULL) != 0)
        return -1;
    const char *card = s_card(svc, body);
    if (!card)
        return -1;
    const char *sale_id = bus_val_map_get_str(body, "sale_id");
    int64_t attempt = 0, amount = 0, now = bus_now_ms(), ts = now;
    char prefix[2 * BUS_ID_PART_MAX + 3];
    snprintf(prefix, sizeof(prefix), "%s-%s-", node.store, node.reg);
    if (!sale_id || !pos_sale_id_ok(sale_id, POS_SALE_ID_MAX, "-") ||
        strncmp(sale_id, prefix, strlen(prefix)) != 0) {
        char why[96];
        snprintf(why, sizeof(why), "sale_id: one of this register's sale ids (%s<n>)", prefix);
        return s_bad(svc, why);
    }
    if (!bus_val_map_get_int(body, "attempt", &attempt) || attempt < 1 || attempt > S_ATTEMPT_MAX)
        return s_bad(svc, "attempt: an integer from 1 to 99 (a new one after a refusal)");
    if (!bus_val_map_get_int(body, "amount", &amount) || amount < 1 || amount > POS_AMOUNT_MAX)
        return s_bad(svc, "amount: fen, from 1 to 10^12");
    if (offline && (!bus_val_map_get_int(body, "ts", &ts) || ts < 1 || ts > now + S_OFFLINE_AHEAD))
        return s_bad(svc, "ts: when the till made the deduction, ms since the epoch (UTC)");
    char key[BUS_KEY_MAX], ops[BUS_KEY_MAX], spent[BUS_KEY_MAX], log[BUS_KEY_MAX];
    char op[POS_SALE_ID_MAX + 8], amount_s[24], now_s[24], day[24], meal[48], keep[12];
    char who[2 * BUS_ID_PART_MAX + 2];
    const char *meal_name;
    snprintf(op, sizeof(op), "d:%s:%" PRId64, sale_id, attempt);
    snprintf(amount_s, sizeof(amount_s), "%" PRId64, amount);
    snprintf(now_s, sizeof(now_s), "%" PRId64, now);
    snprintf(who, sizeof(who), "%s.%s", node.store, node.reg);
    s_fields(ts, day, meal, keep, &meal_name);
    if (offline) { /* the fields to drop are those old by our clock, not the record's */
        char unused_day[24], unused_meal[48];
        const char *unused_name;
        s_fields(now, unused_day, unused_meal, keep, &unused_name);
    }
    const char *argv[] = {bus_key_svc(key, card, NULL),
                          bus_key_svc(ops, card, ":ops"),
                          bus_key_svc(spent, card, ":spent"),
                          bus_key_svc(log, card, ":log"),
                          mode,
                          op,
                          amount_s,
                          now_s,
                          day,
                          meal,
                          keep,
                          who,
                          S_LOG_MAX,
                          S_SPENT_TTL_S};
    redisReply *r = bus_redis_evalsha(s_st.redis, s_st.deduct, 4, 14, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(svc, r, "card deduction");
    char kind[16];
    snprintf(kind, sizeof(kind), "%s", r->element[0]->str);
    s_result_t res;
    bool parsed = r->elements >= 2 && s_result_parse(r->element[1]->str, &res);
    if (r->elements >= 5)
        s_repair(card, r->element[2]->str, r->element[3]->str, r->element[4]->str);
    freeReplyObject(r);
    if (strcmp(kind, "none") == 0)
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no card %s", card);
    if (strcmp(kind, "conflict") == 0) {
        bus_stats_inc(s_st.c_conflicts, 1);
        return bus_service_error(svc, "conflict",
                                 "attempt %" PRId64 " of %s was made on card %s with another "
                                 "amount: the next attempt is a new deduction",
                                 attempt, sale_id, card);
    }
    if (!parsed)
        return s_redis_failed(svc, NULL, "card deduction result");
    bool dup = strcmp(kind, "dup") == 0;
    if (dup)
        bus_stats_inc(s_st.c_duplicates, 1);
    else
        s_count(&res);
    if (strcmp(res.outcome, "ok") == 0) /* taken: a return of the sale finds it */
        s_sale_index(node.store, sale_id, card, attempt, res.amount, true);
    else if (strcmp(res.outcome, "voided") == 0)
        s_sale_index(node.store, sale_id, card, attempt, 0, false);
    if (!dup && strcmp(res.flags, "-") != 0)
        bus_warn("payments.card",
                 "card %s: offline deduction %s flagged: %s (balance %" PRId64 " fen)", card, op,
                 res.flags, res.balance);
    return s_deduct_answer(svc, card, sale_id, attempt, &res, dup, strcmp(mode, "void") == 0,
                           reply);
}

/*  card.pay {card, amount, sale_id, attempt}: registers, for their own sales. */
static int s_pay(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    return s_deduct(svc, req, reply, "pay");
}

/*  card.offline {card, amount, sale_id, attempt, ts}: registers upload what they took offline. */
static int s_offline(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    return s_deduct(svc, req, reply, "offline");
}

/*  card.void {card, amount, sale_id, attempt}: the register gives an attempt up (its ticket was
    paid another way, or lost): a deduction taken for it is given back, and one not seen yet is
    never taken (a card.pay still on its way is refused as voided). */
static int s_void(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    return s_deduct(svc, req, reply, "void");
}

/* ---- card.block, card.unblock, card.blocklist --------------------------------------------- */

static int s_set_status(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply,
                        const char *status)
{
    const bus_val_t *body = bus_msg_body(req);
    const char *card = s_card(svc, body);
    if (!card)
        return -1;
    const char *reason = bus_val_map_get_str(body, "reason");
    if (!s_text_ok(reason, S_REASON_MAX))
        return s_bad(svc, "reason: why, 1-200 bytes of text (kept with the card)");
    char key[BUS_KEY_MAX], ops[BUS_KEY_MAX], log[BUS_KEY_MAX], now_s[24];
    snprintf(now_s, sizeof(now_s), "%" PRId64, bus_now_ms());
    /* noted first: a crash after the card changed is then finished by the next sweep */
    redisReply *r =
        bus_redis_command(s_st.redis, "HSET %s %s %s", BUS_KEY_SVCBLOCK_PENDING, card, now_s);
    if (!bus_redis_reply_ok(r))
        return s_redis_failed(svc, r, "blocklist pending");
    freeReplyObject(r);
    const char *argv[] = {bus_key_svc(key, card, NULL),
                          bus_key_svc(ops, card, ":ops"),
                          bus_key_svc(log, card, ":log"),
                          status,
                          reason,
                          now_s,
                          s_who(svc),
                          S_LOG_MAX};
    r = bus_redis_evalsha(s_st.redis, s_st.status, 3, 8, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(svc, r, "card status");
    if (strcmp(r->element[0]->str, "none") == 0) {
        freeReplyObject(r);
        s_unpend(card, now_s);
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no card %s", card);
    }
    bool changed = strcmp(r->element[0]->str, "changed") == 0;
    char version[24], listed[4];
    snprintf(version, sizeof(version), "%s",
             r->elements >= 3 && r->element[1]->str ? r->element[1]->str : "0");
    snprintf(listed, sizeof(listed), "%s",
             r->elements >= 3 && r->element[2]->str ? r->element[2]->str : "1");
    freeReplyObject(r);
    /* the card decides from now on; the list follows (again, if a crash left it behind) */
    int64_t list_version = -1;
    if (strcmp(listed, "1") != 0 && (list_version = s_list(card, status, version)) < 0)
        return bus_service_unavailable(svc, S_RETRY_MS,
                                       "card %s is %s, its blocklist entry is not written yet: "
                                       "send the same request again",
                                       card, status);
    s_unpend(card, now_s);
    if (changed) {
        bus_stats_inc(strcmp(status, "blocked") == 0 ? s_st.c_blocks : s_st.c_unblocks, 1);
        bus_info("payments.card", "card %s %s by %s", card, status, s_who(svc));
    }
    bus_val_map_set_str(reply, "card", card);
    bus_val_map_set_str(reply, "status", status);
    bus_val_map_set_bool(reply, "changed", changed);
    bus_val_map_set_int(reply, "version", strtoll(version, NULL, 10));
    if (list_version >= 0)
        bus_val_map_set_int(reply, "list_version", list_version);
    return 0;
}

/*  card.block {card, reason}, card.unblock {card, reason}: operators and services. */
static int s_block(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    return s_set_status(svc, req, reply, "blocked");
}

static int s_unblock(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    return s_set_status(svc, req, reply, "active");
}

/*  card.blocklist {since?, count?}: the changes after list version since, oldest first. */
static int s_blocklist(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    int64_t since = 0, count = S_PAGE_MAX;
    if ((bus_val_map_get(body, "since") &&
         (!bus_val_map_get_int(body, "since", &since) || since < 0)) ||
        (bus_val_map_get(body, "count") &&
         (!bus_val_map_get_int(body, "count", &count) || count < 1 || count > S_PAGE_MAX)))
        return s_bad(svc, "since: a list version (0: from the start); count: 1-500");
    s_sweep();
    char since_s[24], count_s[24];
    snprintf(since_s, sizeof(since_s), "%" PRId64, since);
    snprintf(count_s, sizeof(count_s), "%" PRId64, count);
    const char *argv[] = {BUS_KEY_SVCBLOCK, BUS_KEY_SVCBLOCK_VERSION, BUS_KEY_SVCBLOCK_STATE,
                          since_s, count_s};
    redisReply *r = bus_redis_evalsha(s_st.redis, s_st.blockread, 3, 5, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 2)
        return s_redis_failed(svc, r, "blocklist");
    bus_val_t *changes = bus_val_new_arr();
    int64_t last = since;
    for (size_t i = 2; changes && i + 2 < r->elements; i += 3) {
        const char *card = r->element[i]->str, *score = r->element[i + 1]->str;
        const char *status = r->element[i + 2]->str;
        if (!card || !score || !status)
            continue;
        bus_val_t *c = bus_val_new_map();
        bus_val_map_set_str(c, "card", card);
        bus_val_map_set_int(c, "version", strtoll(score, NULL, 10));
        bus_val_map_set_bool(c, "blocked", strcmp(status, "blocked") == 0);
        last = strtoll(score, NULL, 10);
        bus_val_arr_push(changes, &c);
    }
    bus_val_map_set_int(reply, "version", r->element[0]->integer);
    bus_val_map_set_bool(reply, "more", r->element[1]->integer == 1);
    bus_val_map_set_int(reply, "last", last);
    freeReplyObject(r);
    if (!changes || bus_val_map_set(reply, "changes", &changes) != 0) {
        bus_val_destroy(&changes);
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    }
    return 0;
}

/* ---- returns: a sale's deductions found (card.sale) and given back (card.refund) ---------- */

/*  Note (or, given back by a void, forget) a sale's deduction in svsale:{S}:<sale_id>, so a
    return of the sale finds it at any register. Another hash tag than the card's: written after
    the card's script, again by the same request asked again; a failure is logged and counted
    (the return is then paid another way). */
static void s_sale_index(const char *store, const char *sale_id, const char *card,
                         int64_t attempt, int64_t amount, bool add)
{
    char key[BUS_KEY_MAX], field[S_SALE_FIELD_MAX];
    snprintf(field, sizeof(field), "%s %" PRId64, card, attempt);
    bus_key_svsale(key, store, sale_id);
    redisReply *r = add ? bus_redis_command(s_st.redis, "HSET %s %s %" PRId64, key, field, amount)
                        : bus_redis_command(s_st.redis, "HDEL %s %s", key, field);
    bool ok = bus_redis_reply_ok(r);
    freeReplyObject(r);
    if (ok && add) {
        r = bus_redis_command(s_st.redis, "EXPIRE %s %s", key, S_SALE_INDEX_TTL_S);
        ok = bus_redis_reply_ok(r);
        freeReplyObject(r);
    }
    if (!ok) {
        bus_stats_inc(s_st.c_redis_errors, 1);
        bus_warn("payments.card", "sale %s: card %s attempt %" PRId64 " not noted for returns",
                 sale_id, card, attempt);
    }
}

/*  The store a sale id belongs to, for the caller: a register's own, others' named. */
static const char *s_sale_store(bus_service_t *svc, const bus_val_t *body, const char *sale_id,
                                char *store, size_t size)
{
    const bus_identity_t *me = bus_service_caller(svc);
    const char *want = me->role == BUS_ROLE_REGISTER ? me->store : bus_val_map_get_str(body, "store");
    if (!want || !bus_identity_id_ok(want)) {
        s_bad(svc, "store: the sale's store id");
        return NULL;
    }
    size_t n = strlen(want);
    if (!sale_id || !pos_sale_id_ok(sale_id, POS_SALE_ID_MAX, "-") ||
        strncmp(sale_id, want, n) != 0 || sale_id[n] != '-') {
        s_bad(svc, "sale_id: a sale id of the store");
        return NULL;
    }
    snprintf(store, size, "%s", want);
    return store;
}

/*  card.sale {sale_id, store?}: the stored-value deductions that paid a sale, with what each
    may still give back: {sale_id, deductions: [{card, attempt, amount, refunded, refundable}]}. */
static int s_sale(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *sale_id = bus_val_map_get_str(body, "sale_id");
    char store[BUS_ID_PART_MAX + 1], key[BUS_KEY_MAX];
    if (!s_sale_store(svc, body, sale_id, store, sizeof(store)))
        return -1;
    redisReply *r = bus_redis_command(s_st.redis, "HGETALL %s", bus_key_svsale(key, store, sale_id));
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(svc, r, "sale index");
    bus_val_t *list = bus_val_new_arr();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        char card[S_SALE_FIELD_MAX], ops[BUS_KEY_MAX], field[POS_SALE_ID_MAX + 40];
        int64_t attempt = 0, amount = 0, refunded = 0;
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!f || !v || sscanf(f, "%32s %" SCNd64, card, &attempt) != 2)
            continue;
        amount = strtoll(v, NULL, 10);
        snprintf(field, sizeof(field), "rf:d:%s:%" PRId64, sale_id, attempt);
        redisReply *q = bus_redis_command(s_st.redis, "HGET %s %s",
                                          bus_key_svc(ops, card, ":ops"), field);
        if (!bus_redis_reply_ok(q)) {
            bus_val_destroy(&list);
            freeReplyObject(r);
            return s_redis_failed(svc, q, "card refunds");
        }
        if (q->type == REDIS_REPLY_STRING)
            refunded = strtoll(q->str, NULL, 10);
        freeReplyObject(q);
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_str(m, "card", card);
        bus_val_map_set_int(m, "attempt", attempt);
        bus_val_map_set_int(m, "amount", amount);
        bus_val_map_set_int(m, "refunded", refunded);
        bus_val_map_set_int(m, "refundable", amount > refunded ? amount - refunded : 0);
        bus_val_arr_push(list, &m);
    }
    freeReplyObject(r);
    bus_val_map_set_str(reply, "sale_id", sale_id);
    bus_val_map_set(reply, "deductions", &list);
    return 0;
}

/*  card.refund {card, sale_id, attempt, amount, refund_no, store?}: give part or all of one
    deduction of a sale back to the card (a return refunded to the tender it was paid with);
    never more than the deduction took, all refunds of it together; the same refund number
    asked again is the same refund. */
static int s_refund(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const char *card = s_card(svc, body);
    if (!card)
        return -1;
    const char *sale_id = bus_val_map_get_str(body, "sale_id");
    const char *no = bus_val_map_get_str(body, "refund_no");
    char store[BUS_ID_PART_MAX + 1];
    if (!s_sale_store(svc, body, sale_id, store, sizeof(store)))
        return -1;
    int64_t attempt = 0, amount = 0;
    if (!bus_val_map_get_int(body, "attempt", &attempt) || attempt < 1 || attempt > S_ATTEMPT_MAX)
        return s_bad(svc, "attempt: the deduction's attempt, 1 to 99");
    if (!bus_val_map_get_int(body, "amount", &amount) || amount < 1 || amount > POS_AMOUNT_MAX)
        return s_bad(svc, "amount: fen, from 1 to 10^12");
    if (!pos_sale_id_ok(no, 64, "-")) /* as payment.refund's numbers */
        return s_bad(svc, "refund_no: 1-64 letters, digits, '_' or '-'");
    char key[BUS_KEY_MAX], ops[BUS_KEY_MAX], log[BUS_KEY_MAX], spent[BUS_KEY_MAX];
    char dop[POS_SALE_ID_MAX + 8], rop[72], amount_s[24], now_s[24];
    snprintf(dop, sizeof(dop), "d:%s:%" PRId64, sale_id, attempt);
    snprintf(rop, sizeof(rop), "r:%s", no);
    snprintf(amount_s, sizeof(amount_s), "%" PRId64, amount);
    snprintf(now_s, sizeof(now_s), "%" PRId64, bus_now_ms());
    const char *argv[] = {bus_key_svc(key, card, NULL), bus_key_svc(ops, card, ":ops"),
                          bus_key_svc(log, card, ":log"), bus_key_svc(spent, card, ":spent"),
                          dop, rop, amount_s, now_s, s_who(svc), S_LOG_MAX};
    redisReply *r = bus_redis_evalsha(s_st.redis, s_st.refund, 4, 10, argv, NULL);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !r->element[0]->str)
        return s_redis_failed(svc, r, "card refund");
    char kind[16], extra[160] = "";
    snprintf(kind, sizeof(kind), "%s", r->element[0]->str);
    if (r->elements > 1 && r->element[1]->str)
        snprintf(extra, sizeof(extra), "%s", r->element[1]->str);
    freeReplyObject(r);
    if (strcmp(kind, "none") == 0)
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no card %s", card);
    if (strcmp(kind, "not_found") == 0)
        return bus_service_error(svc, S_ERR_NOT_FOUND,
                                 "card %s has no deduction %s (or it is too old to be known)",
                                 card, dop);
    if (strcmp(kind, "not_paid") == 0)
        return bus_service_error(svc, "not_paid", "card %s: %s took nothing (%s)", card, dop,
                                 extra);
    if (strcmp(kind, "conflict") == 0) {
        bus_stats_inc(s_st.c_conflicts, 1);
        return bus_service_error(svc, "conflict",
                                 "refund %s was made for another deduction or amount", no);
    }
    if (strcmp(kind, "too_much") == 0) {
        bus_stats_inc(s_st.c_bad, 1);
        return bus_service_error(svc, "too_much",
                                 "more than %s took: at most %s fen may still be given back",
                                 dop, extra);
    }
    int64_t got = 0, balance = 0;
    if (sscanf(extra, "%" SCNd64 " %" SCNd64, &got, &balance) != 2)
        return s_redis_failed(svc, NULL, "card refund result");
    bool dup = strcmp(kind, "dup") == 0;
    if (!dup) {
        bus_stats_inc(s_st.c_refunds, 1);
        bus_info("payments.card", "card %s: %" PRId64 " fen of %s given back (%s) by %s", card,
                 got, dop, no, s_who(svc));
    }
    bus_val_map_set_str(reply, "card", card);
    bus_val_map_set_str(reply, "sale_id", sale_id);
    bus_val_map_set_int(reply, "attempt", attempt);
    bus_val_map_set_str(reply, "refund_no", no);
    bus_val_map_set_int(reply, "amount", got);
    bus_val_map_set_int(reply, "balance", balance);
    bus_val_map_set_bool(reply, "duplicate", dup);
    return 0;
}

/* ---- start ------------------------------------------------------------------------------ */

int payments_stored_methods(bus_service_t *svc, bus_redis_t *redis, bus_config_t *config)
{
    char why[160];
    const char *meals = bus_config_str(config, "meals");
    if (s_meals_parse(meals ? meals : "", why, sizeof(why)) != 0) {
        bus_error("payments.config", "%s", why);
        return -1;
    }
    s_st.redis = redis;
    s_st.create = bus_redis_script(redis, svc_create_lua);
    s_st.topup = bus_redis_script(redis, svc_topup_lua);
    s_st.deduct = bus_redis_script(redis, svc_deduct_lua);
    s_st.status = bus_redis_script(redis, svc_status_lua);
    s_st.blocklist = bus_redis_script(redis, svc_blocklist_lua);
    s_st.listed = bus_redis_script(redis, svc_listed_lua);
    s_st.blockread = bus_redis_script(redis, svc_blockread_lua);
    s_st.unpend = bus_redis_script(redis, svc_unpend_lua);
    s_st.refund = bus_redis_script(redis, svc_refund_lua);
    bus_stats_t *stats = bus_service_stats(svc);
    s_st.c_created = bus_stats_counter(stats, "cards_created");
    s_st.c_topups = bus_stats_counter(stats, "card_topups");
    s_st.c_deductions = bus_stats_counter(stats, "card_deductions");
    s_st.c_refused_blocked = bus_stats_counter(stats, "card_refused_blocked");
    s_st.c_refused_balance = bus_stats_counter(stats, "card_refused_balance");
    s_st.c_refused_daily = bus_stats_counter(stats, "card_refused_daily_limit");
    s_st.c_refused_meal = bus_stats_counter(stats, "card_refused_meal_limit");
    s_st.c_offline = bus_stats_counter(stats, "card_offline");
    s_st.c_offline_flagged = bus_stats_counter(stats, "card_offline_flagged");
    s_st.c_duplicates = bus_stats_counter(stats, "card_duplicates");
    s_st.c_voids = bus_stats_counter(stats, "card_voids");
    s_st.c_refunds = bus_stats_counter(stats, "card_refunds");
    s_st.c_conflicts = bus_stats_counter(stats, "card_conflicts");
    s_st.c_blocks = bus_stats_counter(stats, "card_blocks");
    s_st.c_unblocks = bus_stats_counter(stats, "card_unblocks");
    s_st.c_repairs = bus_stats_counter(stats, "blocklist_repairs");
    s_st.c_bad = bus_stats_counter(stats, "bad_requests");
    s_st.c_redis_errors = bus_stats_counter(stats, "redis_errors");
    static const bus_method_t methods[] = {
        {"card.create", s_create, BUS_METHOD_CHANGE, BUS_METHOD_CHANGE_ROLES},
        {"card.topup", s_topup, BUS_METHOD_IDEMPOTENT, BUS_METHOD_CHANGE_ROLES},
        {"card.pay", s_pay, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {"card.offline", s_offline, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {"card.void", s_void, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {"card.get", s_get, BUS_METHOD_READ, S_EVERYONE},
        {"card.block", s_block, BUS_METHOD_CHANGE, BUS_METHOD_CHANGE_ROLES},
        {"card.unblock", s_unblock, BUS_METHOD_CHANGE, BUS_METHOD_CHANGE_ROLES},
        {"card.blocklist", s_blocklist, BUS_METHOD_READ, S_EVERYONE},
        {"card.sale", s_sale, BUS_METHOD_READ, S_EVERYONE},
        {"card.refund", s_refund, BUS_METHOD_IDEMPOTENT,
         BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR},
        {NULL, NULL, 0, 0}};
    if (s_st.create < 0 || s_st.topup < 0 || s_st.deduct < 0 || s_st.status < 0 ||
        s_st.blocklist < 0 || s_st.listed < 0 || s_st.blockread < 0 || s_st.unpend < 0 ||
        s_st.refund < 0 || !s_st.c_refunds ||
        !s_st.c_redis_errors || bus_service_methods(svc, methods, NULL) != 0) {
        bus_error("payments.start", "cannot register the card methods or scripts: out of memory");
        return -1;
    }
    bus_info("payments.config", "stored-value cards: %d meals (%s)", s_st.nmeals,
             meals ? meals : "");
    return 0;
}
