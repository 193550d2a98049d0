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

    Nothing partial, nothing lost, poison parked. Every entry is validated
    here before it is added up (a sale with the keys and types of the sale
    document, every amount and quantity within S_AMOUNT_MAX), and every sum
    is overflow-checked and kept within S_TOTAL_MAX, the range in which the
    Lua script (whose numbers are doubles) is exact. An entry that fails is
    rejected with its reason: the stream library parks it in the dead-letter
    stream and acknowledges it, and the rest of the batch is applied. The
    script checks all its arguments and every total it touches before its
    first write; when it refuses a batch, the sales are applied one by one
    so only the sale that cannot apply is parked.

    Thread safety: the worker thread increments the counters sales_applied,
    bad_stream_entries and sales_refused (bus_stats_inc) and the lag
    histogram (__atomic); the main thread reads them (the stats method, the
    lag gauges, the log line at exit). The gauges apply_lag_p50_ms and
    apply_lag_p99_ms are written by the main thread only. Everything else
    the worker touches (wredis, the script handle, the rejection reasons)
    is its own.
    =========================================================================
*/
#include <bus/bus.h>
#include <pos/money.h>
#include <pos/ticket.h>
#include "svc_main.h"
#include <time.h>
#include "apply_lua.h"

#define S_PROGRAM     "reporting"
#define S_GROUP       "reporting"
#define S_ID_MAX      16   /* store and register ids */
#define S_SALE_ID_MAX 64   /* sale ids: letters, digits, '_', '-', '.' */
#define S_SKU_MAX     64   /* bytes of a SKU (two make a basket pair's field) */
#define S_TEXT_MAX    200  /* bytes of a category or cashier: they become field names */
#define S_FIELD_MAX   256  /* a hash field: S_TEXT_MAX plus a suffix */
#define S_REASON_MAX  256  /* why an entry was rejected */
#define S_LINES_MAX   1000 /* as the sales service accepts */
#define S_TENDERS_MAX 16
#define S_TAX_BP_MAX  10000
#define S_PAIRS_MAX   20 /* distinct SKUs of one sale counted for basket pairs */
#define S_TOP_DEFAULT 10
#define S_TOP_MAX     1000
#define S_LAG_BUCKETS 10001 /* apply lag histogram, one bucket per ms; the last is ">= 10 s" */
#define S_PERCENT     100
#define S_RETRY_MS    1000                    /* retry hint when Redis is unavailable */
#define S_TS_MAX      INT64_C(32503680000000) /* 3000-01-01 in ms: ts beyond is garbage */
#define S_NUM_MAX     24                      /* text of an int64 with sign and NUL */
/* |amount| and |qty| of one line, tender or sale: 10^12 fen is 10 billion yuan */
#define S_AMOUNT_MAX INT64_C(1000000000000)
/* |aggregate|: 2^53 - 1, the largest integer the Lua script handles exactly */
#define S_TOTAL_MAX INT64_C(9007199254740991)

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "reporting", 0, 0, "name this service registers under"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    bus_service_t *svc;
    bus_redis_t *redis;  /* main thread: queries */
    bus_redis_t *wredis; /* worker thread: applying */
    int apply;           /* script handle on wredis */
    bus_stream_worker_t *worker;
    int64_t *c_applied, *c_bad, *c_refused; /* written by the worker, atomically */
    int64_t *lag; /* histogram of (applied - rung up at the register), ms; atomic */
    int64_t *g_lag_p50, *g_lag_p99; /* main thread */
    bus_stream_entry_t *entries;    /* worker: the batch being applied */
    struct s_reason *why;           /* worker: rejection reasons, one per entry of the batch */
    int why_cap;
    bool transient;         /* main thread: the last failed query may pass by itself */
    char err[S_REASON_MAX]; /* main thread: why it failed */
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

/*  A sale id as keys.h accepts it: letters, digits, '_', '-', '.'. */
static bool s_sale_id_ok(const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > S_SALE_ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_-.", *p))
            return false;
    return true;
}

static bool s_day_ok(const char *day)
{
    if (!day || strlen(day) != 10 || day[4] != '-' || day[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)day[i]))
            return false;
    return true;
}

/*  Text that may become part of a hash field: 1..max bytes, no control characters. */
static bool s_text_ok(const char *s, size_t max)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > max)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* ---- checking sales (worker thread) ------------------------------------ */

/*  Rejection reason of one entry, kept until the apply function returns. */
typedef struct s_reason {
    char text[S_REASON_MAX];
} s_reason_t;

/*  Write why an entry cannot apply; returns false, for "return s_refuse(...)". */
static bool s_refuse(s_reason_t *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool s_refuse(s_reason_t *why, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(why->text, sizeof(why->text), fmt, args);
    va_end(args);
    return false;
}

/*  Is map[key] an int within -max..max? Sets *out. */
static bool s_bounded(const bus_val_t *map, const char *key, int64_t max, int64_t *out)
{
    return bus_val_map_get_int(map, key, out) && *out >= -max && *out <= max;
}

/*  The int fields every non-voided line carries, each |v| <= S_AMOUNT_MAX. */
static const char *const s_line_ints[] = {
    "amount", "qty", "unit_price", "gross", "promo_discount", "ticket_discount", "tax", NULL};

/*  Does line i have what the aggregation reads, with sane types and bounds? */
static bool s_line_ok(const bus_val_t *l, size_t i, s_reason_t *why)
{
    if (bus_val_type(l) != BUS_VAL_MAP)
        return s_refuse(why, "line %zu is not a map", i);
    bus_val_t *voided = bus_val_map_get(l, "voided");
    bool is_voided = false;
    if (voided && !bus_val_get_bool(voided, &is_voided))
        return s_refuse(why, "line %zu: voided is not a bool", i);
    if (is_voided)
        return true;
    int64_t v;
    for (int k = 0; s_line_ints[k]; k++)
        if (!s_bounded(l, s_line_ints[k], S_AMOUNT_MAX, &v))
            return s_refuse(why, "line %zu: %s missing, not an integer, or beyond +-%" PRId64, i,
                            s_line_ints[k], S_AMOUNT_MAX);
    if (!bus_val_map_get_int(l, "tax_rate_bp", &v) || v < 0 || v > S_TAX_BP_MAX)
        return s_refuse(why, "line %zu: tax_rate_bp missing or outside 0..%d", i, S_TAX_BP_MAX);
    if (!s_text_ok(bus_val_map_get_str(l, "sku"), S_SKU_MAX))
        return s_refuse(why, "line %zu: sku missing, longer than %d bytes or not text", i,
                        S_SKU_MAX);
    bus_val_t *category = bus_val_map_get(l, "category");
    const char *cat = bus_val_get_str(category, NULL);
    if (category && (!cat || (*cat && !s_text_ok(cat, S_TEXT_MAX))))
        return s_refuse(why, "line %zu: category is not text of at most %d bytes", i, S_TEXT_MAX);
    bus_val_t *return_of = bus_val_map_get(l, "return_of");
    if (return_of && !bus_val_get_str(return_of, NULL))
        return s_refuse(why, "line %zu: return_of is not a string", i);
    return true;
}

static bool s_tender_ok(const bus_val_t *t, size_t i, s_reason_t *why)
{
    int64_t amount;
    if (pos_tender_parse(bus_val_map_get_str(t, "kind")) < 0)
        return s_refuse(why, "tender %zu: kind missing or unknown", i);
    if (!s_bounded(t, "amount", S_AMOUNT_MAX, &amount))
        return s_refuse(why, "tender %zu: amount missing, not an integer, or beyond +-%" PRId64, i,
                        S_AMOUNT_MAX);
    return true;
}

/*  Is the decoded payload a sale the aggregation can add up without guessing? The sales service
    has checked that it adds up; this checks what reporting relies on: keys, types and bounds. */
static bool s_sale_ok(const bus_val_t *s, s_reason_t *why)
{
    int64_t v;
    const char *kind = bus_val_map_get_str(s, "kind");
    if (bus_val_type(s) != BUS_VAL_MAP)
        return s_refuse(why, "payload is not a map");
    if (!bus_val_map_get_int(s, "ts", &v) || v < 0 || v > S_TS_MAX)
        return s_refuse(why, "ts missing or not a time in ms");
    if (!bus_val_map_get_int(s, "seq", &v) || v < 1 || v > S_TOTAL_MAX)
        return s_refuse(why, "seq missing or not a positive integer");
    if (!s_id_ok(bus_val_map_get_str(s, "register")))
        return s_refuse(why, "register missing or not an id of 1-%d letters, digits or _",
                        S_ID_MAX);
    if (!s_text_ok(bus_val_map_get_str(s, "cashier"), S_TEXT_MAX))
        return s_refuse(why, "cashier missing or not text of at most %d bytes", S_TEXT_MAX);
    if (!kind || (strcmp(kind, "sale") && strcmp(kind, "return") && strcmp(kind, "nosale")))
        return s_refuse(why, "kind is not sale, return or nosale");
    if (strcmp(kind, "nosale") == 0)
        return true; /* only counted: nothing else is read */
    bus_val_t *lines = bus_val_map_get(s, "lines");
    bus_val_t *tenders = bus_val_map_get(s, "tenders");
    if (bus_val_type(lines) != BUS_VAL_ARR || bus_val_size(lines) > S_LINES_MAX)
        return s_refuse(why, "lines is not an array of at most %d", S_LINES_MAX);
    if (bus_val_type(tenders) != BUS_VAL_ARR || bus_val_size(tenders) > S_TENDERS_MAX)
        return s_refuse(why, "tenders is not an array of at most %d", S_TENDERS_MAX);
    for (size_t i = 0; i < bus_val_size(lines); i++)
        if (!s_line_ok(bus_val_arr_get(lines, i), i, why))
            return false;
    for (size_t i = 0; i < bus_val_size(tenders); i++)
        if (!s_tender_ok(bus_val_arr_get(tenders, i), i, why))
            return false;
    static const char *const totals[] = {"total", "change", "cash_rounding", NULL};
    for (int k = 0; totals[k]; k++)
        if (!s_bounded(s, totals[k], S_AMOUNT_MAX, &v))
            return s_refuse(why, "%s missing, not an integer, or beyond +-%" PRId64, totals[k],
                            S_AMOUNT_MAX);
    return true;
}

/* ---- adding sales up (worker thread) ----------------------------------- */

/*  Increments summed per Redis key and field: of one sale, then of the batch. */
typedef struct {
    zhashx_t *inc;  /* "key\x1ffield" -> int64 delta */
    zhashx_t *seqs; /* "key\x1freg" -> int64[2] min, max */
    zhashx_t *days; /* days set key -> day (string) */
} s_agg_t;

#define S_SEP "\x1f" /* never in a key (validated ids) nor a field (no control characters) */

static int s_agg_init(s_agg_t *agg)
{
    agg->inc = zhashx_new();
    agg->seqs = zhashx_new();
    agg->days = zhashx_new();
    if (!agg->inc || !agg->seqs || !agg->days)
        return -1;
    zhashx_set_destructor(agg->inc, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(agg->seqs, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(agg->days, (zhashx_destructor_fn *)zstr_free);
    return 0;
}

static void s_agg_destroy(s_agg_t *agg)
{
    zhashx_destroy(&agg->inc);
    zhashx_destroy(&agg->seqs);
    zhashx_destroy(&agg->days);
}

/*  Add v to the cell kf ("key\x1ffield"). 1 (nothing added) when the sum would leave
    +-S_TOTAL_MAX, -1 when memory ran out, else 0. Results of several calls combine with |:
    -1 wins, then 1. */
static int s_cell_add(s_agg_t *agg, const char *kf, int64_t v)
{
    if (v == 0)
        return 0;
    int64_t *cell = zhashx_lookup(agg->inc, kf);
    if (!cell) {
        cell = calloc(1, sizeof(*cell));
        if (!cell || zhashx_insert(agg->inc, kf, cell) != 0) {
            free(cell);
            return -1;
        }
    }
    int64_t sum;
    if (pos_add(*cell, v, &sum) != POS_OK || sum > S_TOTAL_MAX || sum < -S_TOTAL_MAX)
        return 1;
    *cell = sum;
    return 0;
}

/*  Add v to key's field, as s_cell_add. */
static int s_add(s_agg_t *agg, const char *key, const char *field, int64_t v)
{
    char kf[BUS_KEY_MAX + S_FIELD_MAX];
    snprintf(kf, sizeof(kf), "%s" S_SEP "%s", key, field);
    return s_cell_add(agg, kf, v);
}

static int s_seq(s_agg_t *agg, const char *kr, int64_t lo, int64_t hi)
{
    int64_t *mm = zhashx_lookup(agg->seqs, kr);
    if (!mm) {
        mm = malloc(2 * sizeof(*mm));
        if (!mm || zhashx_insert(agg->seqs, kr, mm) != 0) {
            free(mm);
            return -1;
        }
        mm[0] = lo;
        mm[1] = hi;
    }
    if (lo < mm[0])
        mm[0] = lo;
    if (hi > mm[1])
        mm[1] = hi;
    return 0;
}

static int s_day_set(s_agg_t *agg, const char *key, const char *day)
{
    if (zhashx_lookup(agg->days, key))
        return 0;
    char *copy = strdup(day);
    if (!copy || zhashx_insert(agg->days, key, copy) != 0) {
        free(copy);
        return -1;
    }
    return 0;
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

/*  Add one line's increments. */
static int s_add_line(s_agg_t *agg, const char *P, const bus_val_t *l, const char **skus,
                      int *nskus)
{
    char items[BUS_KEY_MAX], cats[BUS_KEY_MAX], tax[BUS_KEY_MAX], field[S_FIELD_MAX];
    snprintf(items, sizeof(items), "%s:items", P);
    snprintf(cats, sizeof(cats), "%s:cats", P);
    snprintf(tax, sizeof(tax), "%s:tax", P);
    const char *sku = bus_val_map_get_str(l, "sku");
    const char *category = bus_val_map_get_str(l, "category");
    int64_t amount = s_int(l, "amount"), rate = s_int(l, "tax_rate_bp");
    int rc = 0;
    if (bus_val_map_get(l, "return_of"))
        rc |= s_add(agg, P, "returns", amount);
    else {
        rc |= s_add(agg, P, "gross", s_int(l, "gross"));
        rc |= s_add(agg, P, "discounts", s_int(l, "promo_discount"));
        rc |= s_add(agg, P, "discounts", s_int(l, "ticket_discount"));
        bool seen = false;
        for (int k = 0; k < *nskus; k++)
            seen = seen || strcmp(skus[k], sku) == 0;
        if (!seen && *nskus < S_PAIRS_MAX)
            skus[(*nskus)++] = sku;
    }
    rc |= s_add(agg, P, "total", amount);
    snprintf(field, sizeof(field), "%s:qty", sku);
    rc |= s_add(agg, items, field, s_int(l, "qty"));
    snprintf(field, sizeof(field), "%s:amount", sku);
    rc |= s_add(agg, items, field, amount);
    snprintf(field, sizeof(field), "%s:amount", category ? category : "");
    rc |= s_add(agg, cats, field, amount);
    snprintf(field, sizeof(field), "%" PRId64 ":gross", rate);
    rc |= s_add(agg, tax, field, amount);
    snprintf(field, sizeof(field), "%" PRId64 ":tax", rate);
    rc |= s_add(agg, tax, field, s_int(l, "tax"));
    return rc;
}

/*  Add one validated sale's increments (the same aggregates report.day reads). As s_add: 1 when
    an aggregate would leave +-S_TOTAL_MAX, -1 when memory ran out. */
static int s_aggregate(s_agg_t *agg, const bus_val_t *s, const char *store, const char *day,
                       const char *hour)
{
    char P[BUS_KEY_MAX], R[BUS_KEY_MAX], key[BUS_KEY_MAX], field[S_FIELD_MAX];
    bus_key_rep(P, store, day, NULL);
    bus_key_rep(R, store, day, ":regs");
    const char *reg = bus_val_map_get_str(s, "register");
    const char *cashier = bus_val_map_get_str(s, "cashier");
    const char *kind = bus_val_map_get_str(s, "kind");
    int64_t seq = s_int(s, "seq");
    int rc = s_day_set(agg, bus_key_rep_days(key, store), day);
    snprintf(field, sizeof(field), "%s" S_SEP "%s", R, reg);
    rc |= s_seq(agg, field, seq, seq);
    snprintf(field, sizeof(field), "%s:records", reg);
    rc |= s_add(agg, R, field, 1);
    if (strcmp(kind, "nosale") == 0) {
        rc |= s_add(agg, P, "nosale", 1);
        snprintf(field, sizeof(field), "%s:nosale", reg);
        return rc | s_add(agg, R, field, 1);
    }
    rc |= s_add(agg, P, "tickets", 1);
    rc |= s_add(agg, P, strcmp(kind, "return") == 0 ? "return_tickets" : "sale_tickets", 1);
    const char *skus[S_PAIRS_MAX];
    int nskus = 0;
    bus_val_t *lines = bus_val_map_get(s, "lines");
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        const bus_val_t *l = bus_val_arr_get(lines, i);
        bool voided = false;
        bus_val_map_get_bool(l, "voided", &voided);
        rc |= voided ? s_add(agg, P, "voided_lines", 1) : s_add_line(agg, P, l, skus, &nskus);
    }
    bus_val_t *tenders = bus_val_map_get(s, "tenders");
    bus_key_rep(key, store, day, ":tenders");
    for (size_t i = 0; i < bus_val_size(tenders); i++) {
        const bus_val_t *t = bus_val_arr_get(tenders, i);
        const char *tk = bus_val_map_get_str(t, "kind");
        rc |= s_add(agg, key, tk, s_int(t, "amount"));
        snprintf(field, sizeof(field), "%s:tender:%s", reg, tk);
        rc |= s_add(agg, R, field, s_int(t, "amount"));
    }
    int64_t total = s_int(s, "total"), change = s_int(s, "change");
    rc |= s_add(agg, P, "change", change);
    rc |= s_add(agg, P, "cash_rounding", s_int(s, "cash_rounding"));
    snprintf(field, sizeof(field), "%s:change", reg);
    rc |= s_add(agg, R, field, change);
    snprintf(field, sizeof(field), "%s:tickets", reg);
    rc |= s_add(agg, R, field, 1);
    snprintf(field, sizeof(field), "%s:total", reg);
    rc |= s_add(agg, R, field, total);
    bus_key_rep(key, store, day, ":cashiers");
    snprintf(field, sizeof(field), "%s:tickets", cashier);
    rc |= s_add(agg, key, field, 1);
    snprintf(field, sizeof(field), "%s:total", cashier);
    rc |= s_add(agg, key, field, total);
    bus_key_rep(key, store, day, ":hours");
    rc |= s_add(agg, key, hour, total);
    qsort(skus, (size_t)nskus, sizeof(skus[0]), s_cmp_names);
    bus_key_rep(key, store, day, ":pairs");
    for (int x = 0; x < nskus; x++)
        for (int y = x + 1; y < nskus; y++) {
            snprintf(field, sizeof(field), "%s|%s", skus[x], skus[y]);
            rc |= s_add(agg, key, field, 1);
        }
    return rc;
}

/*  Merge one sale's increments into the batch's, all or nothing: 1 (batch unchanged) when a
    batch total would leave +-S_TOTAL_MAX, -1 when memory ran out, else 0. */
static int s_merge(s_agg_t *batch, s_agg_t *sale)
{
    int64_t sum;
    for (int64_t *v = zhashx_first(sale->inc); v; v = zhashx_next(sale->inc)) {
        int64_t *cell = zhashx_lookup(batch->inc, zhashx_cursor(sale->inc));
        if (cell && (pos_add(*cell, *v, &sum) != POS_OK || sum > S_TOTAL_MAX || sum < -S_TOTAL_MAX))
            return 1;
    }
    int rc = 0;
    for (int64_t *v = zhashx_first(sale->inc); v && rc == 0; v = zhashx_next(sale->inc))
        rc = s_cell_add(batch, zhashx_cursor(sale->inc), *v); /* checked above: never 1 */
    for (int64_t *mm = zhashx_first(sale->seqs); mm && rc == 0; mm = zhashx_next(sale->seqs))
        rc = s_seq(batch, zhashx_cursor(sale->seqs), mm[0], mm[1]);
    for (char *day = zhashx_first(sale->days); day && rc == 0; day = zhashx_next(sale->days))
        rc = s_day_set(batch, zhashx_cursor(sale->days), day);
    return rc == 0 ? 0 : -1;
}

/* ---- applying sales (worker thread) ------------------------------------ */

typedef enum { S_LIVE = 0, S_APPLIED, S_REJECTED } s_state_t;

/*  One entry of the batch being applied. */
typedef struct {
    bus_stream_entry_t *entry;
    s_state_t state;
    char key[BUS_KEY_MAX]; /* the sale hash that carries the applied marker */
    bus_val_t *sale;       /* decoded payload */
    const char *store, *day;
    int64_t ts;
    char hour[4];
} s_pending_t;

/*  What s_run_once makes of the script's answer. */
enum { S_RUN_OK = 0, S_RUN_REFUSED = 1, S_RUN_AGAIN = 2, S_RUN_FAILED = -1 };

/*  Park p's entry with reason: the stream library writes it to the dead-letter stream and
    acknowledges it. The reason lives in self->why until the next batch. */
static void s_reject(s_reporting_t *self, s_pending_t *p, int64_t *counter, const char *reason)
{
    size_t i = (size_t)(p->entry - self->entries);
    snprintf(self->why[i].text, sizeof(self->why[i].text), "%s", reason);
    p->entry->rejected = self->why[i].text;
    p->state = S_REJECTED;
    bus_stats_inc(counter, 1);
    bus_error("reporting.parked", "stream entry %s parked: %s", p->entry->id, reason);
}

/*  Read and validate one entry; a bad one is rejected (S_REJECTED), a good one left S_LIVE. */
static void s_prepare(s_reporting_t *self, bus_stream_entry_t *e, s_pending_t *p)
{
    size_t plen = 0;
    const char *sale_id = bus_stream_field(e, "sale_id", NULL);
    const char *payload = bus_stream_field(e, "payload", &plen);
    bus_reject_t rej = BUS_REJ_NONE;
    s_reason_t why;
    p->entry = e;
    p->store = bus_stream_field(e, "store", NULL);
    p->day = bus_stream_field(e, "bday", NULL);
    if (!s_sale_id_ok(sale_id) || !s_id_ok(p->store) || !s_day_ok(p->day))
        s_refuse(&why, "sale_id, store or bday field missing or malformed");
    else if (!payload)
        s_refuse(&why, "no payload field");
    else if (!(p->sale = bus_val_decode(payload, plen, NULL, &rej)))
        s_refuse(&why, "payload is not a MessagePack document: %s", bus_reject_name(rej));
    else if (s_sale_ok(p->sale, &why)) {
        bus_val_map_get_int(p->sale, "ts", &p->ts);
        time_t secs = (time_t)(p->ts / 1000);
        struct tm tm;
        localtime_r(&secs, &tm);
        snprintf(p->hour, sizeof(p->hour), "%02d", tm.tm_hour);
        bus_key_sale(p->key, p->store, sale_id);
        return;
    }
    s_reject(self, p, self->c_bad, why.text);
}

/*  Add up the live sales of p (only p[only] when only >= 0) into agg; a sale whose increments
    would take a batch total beyond S_TOTAL_MAX is rejected. Fills index with the positions of
    the sales added. Returns how many, or -1 when memory ran out. */
static int s_collect(s_reporting_t *self, s_pending_t *p, int n, int only, s_agg_t *agg, int *index)
{
    int live = 0;
    for (int i = 0; i < n; i++) {
        if (p[i].state != S_LIVE || (only >= 0 && i != only))
            continue;
        s_agg_t one;
        int rc = s_agg_init(&one);
        if (rc == 0)
            rc = s_aggregate(&one, p[i].sale, p[i].store, p[i].day, p[i].hour);
        if (rc == 0)
            rc = s_merge(agg, &one);
        s_agg_destroy(&one);
        if (rc < 0)
            return -1;
        if (rc > 0) {
            char reason[S_REASON_MAX];
            snprintf(reason, sizeof(reason), "a day total would pass +-%" PRId64, S_TOTAL_MAX);
            s_reject(self, &p[i], self->c_refused, reason);
            continue;
        }
        index[live++] = i;
    }
    return live;
}

/*  The script's arguments for the sales index[0..live) summed up in agg. The strings live in
    agg, p and the returned numbers buffer (free it and *argv_p, *alen_p). Returns argc, -1 when
    memory ran out. */
static int s_build_args(s_pending_t *p, const int *index, int live, s_agg_t *agg,
                        const char ***argv_p, size_t **alen_p, char **numbers_p)
{
    size_t m = zhashx_size(agg->inc), k = zhashx_size(agg->seqs), d = zhashx_size(agg->days);
    size_t cap = 4 + (size_t)live + 3 * m + 4 * k + 2 * d;
    const char **argv = calloc(cap, sizeof(*argv));
    size_t *alen = calloc(cap, sizeof(*alen));
    char *numbers = calloc(cap, S_NUM_MAX); /* text of every number argument */
    if (!argv || !alen || !numbers) {
        free(argv);
        free(alen);
        free(numbers);
        return -1;
    }
    int argc = 0;
    size_t num = 0;
    /* a "key\x1fsecond" string is sent as its key: the validated key ends at the separator */
#define S_ARG(s) (argv[argc] = (s), alen[argc] = strlen(argv[argc]), argc++)
#define S_KEY(s) (argv[argc] = (s), alen[argc] = strcspn(argv[argc], S_SEP), argc++)
#define S_NUM(v)                                                                                   \
    (snprintf(numbers + S_NUM_MAX * num, S_NUM_MAX, "%" PRId64, (int64_t)(v)),                     \
     S_ARG(numbers + S_NUM_MAX * num++))
    S_NUM(live);
    for (int j = 0; j < live; j++)
        S_ARG(p[index[j]].key);
    S_NUM(m);
    for (int64_t *v = zhashx_first(agg->inc); v; v = zhashx_next(agg->inc)) {
        const char *kf = zhashx_cursor(agg->inc);
        S_KEY(kf);
        S_ARG(strchr(kf, S_SEP[0]) + 1);
        S_NUM(*v);
    }
    S_NUM(k);
    for (int64_t *mm = zhashx_first(agg->seqs); mm; mm = zhashx_next(agg->seqs)) {
        const char *kr = zhashx_cursor(agg->seqs);
        S_KEY(kr);
        S_ARG(strchr(kr, S_SEP[0]) + 1);
        S_NUM(mm[0]);
        S_NUM(mm[1]);
    }
    S_NUM(d);
    for (char *day = zhashx_first(agg->days); day; day = zhashx_next(agg->days)) {
        S_ARG(zhashx_cursor(agg->days));
        S_ARG(day);
    }
#undef S_NUM
#undef S_KEY
#undef S_ARG
    *argv_p = argv;
    *alen_p = alen;
    *numbers_p = numbers;
    return argc;
}

/*  What the script answered for the sales index[0..live): S_RUN_OK (all applied), S_RUN_AGAIN
    (some were applied before: now S_APPLIED, try the rest), S_RUN_REFUSED (nothing written,
    reason in why), S_RUN_FAILED (may pass: Redis down or refusing writes). */
static int s_answer(s_reporting_t *self, redisReply *r, s_pending_t *p, const int *index, int live,
                    s_reason_t *why)
{
    if (!r) {
        bus_warn("reporting.apply_failed", "batch of %d: %s", live, bus_redis_errstr(self->wredis));
        return S_RUN_FAILED;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* The script checks every sale before writing and answers "refused" for one that can
           never apply; an error reply is about Redis or the script (refusing writes, a wrong
           key type, a bug, a permission), not about a sale: parking would drop good sales
           for good, so they stay pending and the worker backs off (stream_errors counts it). */
        if (bus_redis_reply_transient(r))
            bus_warn("reporting.apply_failed", "batch of %d: %s", live, r->str);
        else
            bus_error("reporting.apply_failed", "batch of %d: %s", live, r->str);
        (void)why;
        return S_RUN_FAILED;
    }
    const char *verdict = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                                  r->element[0]->type == REDIS_REPLY_STRING
                              ? r->element[0]->str
                              : "";
    redisReply *detail = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1] : NULL;
    if (strcmp(verdict, "ok") == 0) {
        int64_t now = bus_now_ms();
        for (int j = 0; j < live; j++) {
            int64_t lag = now - p[index[j]].ts;
            p[index[j]].state = S_APPLIED;
            if (lag >= 0)
                __atomic_add_fetch(&self->lag[lag < S_LAG_BUCKETS ? lag : S_LAG_BUCKETS - 1], 1,
                                   __ATOMIC_RELAXED);
        }
        bus_stats_inc(self->c_applied, live);
        return S_RUN_OK;
    }
    if (strcmp(verdict, "refused") == 0 && detail->type == REDIS_REPLY_STRING) {
        s_refuse(why, "%s", detail->str);
        return S_RUN_REFUSED;
    }
    int marked = 0;
    for (size_t i = 0; strcmp(verdict, "applied") == 0 && detail->type == REDIS_REPLY_ARRAY &&
                       i < detail->elements;
         i++) {
        long long j = detail->element[i]->integer;
        if (j >= 0 && j < live && p[index[j]].state == S_LIVE) {
            p[index[j]].state = S_APPLIED; /* a redelivery: applied before, acknowledge it */
            marked++;
        }
    }
    if (marked > 0)
        return S_RUN_AGAIN;
    bus_error("reporting.apply_failed", "batch of %d: unexpected reply from the apply script",
              live);
    return S_RUN_FAILED;
}

/*  One script call for the live sales of p (only p[only] when only >= 0); see s_answer. */
static int s_run_once(s_reporting_t *self, s_pending_t *p, int n, int only, s_reason_t *why)
{
    s_agg_t agg;
    const char **argv = NULL;
    size_t *alen = NULL;
    char *numbers = NULL;
    int rc = S_RUN_FAILED;
    int *index = calloc((size_t)n, sizeof(*index));
    if (!index || s_agg_init(&agg) != 0)
        goto out_free_agg;
    int live = s_collect(self, p, n, only, &agg, index);
    if (live <= 0) {
        rc = live == 0 ? S_RUN_OK : S_RUN_FAILED;
        goto out_free_agg;
    }
    int argc = s_build_args(p, index, live, &agg, &argv, &alen, &numbers);
    if (argc < 0)
        goto out_free_agg;
    redisReply *r = bus_redis_evalsha(self->wredis, self->apply, 0, argc, argv, alen);
    rc = s_answer(self, r, p, index, live, why);
    if (r)
        freeReplyObject(r);
    free(argv);
    free(alen);
    free(numbers);
out_free_agg:
    s_agg_destroy(&agg);
    free(index);
    return rc;
}

/*  Apply the live sales of p (only p[only] when only >= 0) until none is left: S_RUN_OK,
    S_RUN_REFUSED or S_RUN_FAILED as s_answer. Every round marks at least one sale, so it ends. */
static int s_run(s_reporting_t *self, s_pending_t *p, int n, int only, s_reason_t *why)
{
    int rc;
    while ((rc = s_run_once(self, p, n, only, why)) == S_RUN_AGAIN)
        ;
    return rc;
}

/*  The stream worker's apply function (see bus/stream.h): validate every entry, park the bad
    ones, apply the rest in one script call; if the script refuses the batch, apply the sales one
    at a time and park only those it refuses alone. -1 (all stays pending) only when Redis fails
    in a way that may pass. */
static int s_apply(bus_stream_entry_t *entries, int n, void *arg)
{
    s_reporting_t *self = arg;
    if (n > self->why_cap) {
        s_reason_t *why = realloc(self->why, (size_t)n * sizeof(*why));
        if (!why)
            return -1;
        self->why = why;
        self->why_cap = n;
    }
    s_pending_t *p = calloc((size_t)n, sizeof(*p));
    if (!p)
        return -1;
    self->entries = entries;
    for (int i = 0; i < n; i++)
        s_prepare(self, &entries[i], &p[i]);
    s_reason_t why;
    int rc = s_run(self, p, n, -1, &why);
    for (int i = 0; rc == S_RUN_REFUSED && i < n; i++) {
        if (p[i].state != S_LIVE)
            continue;
        int alone = s_run(self, p, n, i, &why);
        if (alone == S_RUN_FAILED)
            break; /* the sales not yet tried stay live: the batch is retried */
        if (alone == S_RUN_REFUSED)
            s_reject(self, &p[i], self->c_refused, why.text);
    }
    for (int i = 0; i < n; i++) {
        if (p[i].state == S_LIVE)
            rc = S_RUN_FAILED;
        bus_val_destroy(&p[i].sale);
    }
    free(p);
    return rc == S_RUN_FAILED ? -1 : 0;
}

/* ---- reading reports (main thread) ------------------------------------- */

/*  Every key of report.day's totals, in the documented order: always present, 0 when nothing
    happened. */
static const char *const s_total_keys[] = {"tickets", "sale_tickets",  "return_tickets", "nosale",
                                           "gross",   "discounts",     "returns",        "total",
                                           "change",  "cash_rounding", "voided_lines",   NULL};
/*  Every counter of a register's row (then complete and tender:<kind> for every kind). */
static const char *const s_register_keys[] = {"first", "last",   "records", "tickets",
                                              "total", "change", "nosale",  NULL};
static const char *const s_tax_keys[] = {"gross", "tax", NULL};
static const char *const s_cashier_keys[] = {"tickets", "total", NULL};
static const char *const s_category_keys[] = {"amount", NULL};

/*  Is r a usable reply? If not, remember why (for s_redis_down) and free it. */
static bool s_reply_ok(s_reporting_t *self, redisReply *r)
{
    if (r && r->type != REDIS_REPLY_ERROR)
        return true;
    self->transient = !r || bus_redis_reply_transient(r);
    snprintf(self->err, sizeof(self->err), "%s", r ? r->str : bus_redis_errstr(self->redis));
    if (r)
        freeReplyObject(r);
    return false;
}

/*  Answer a request whose query failed: unavailable with a retry hint when the failure may pass
    (Redis down, loading, out of memory...), internal otherwise. Returns -1. */
static int s_redis_down(s_reporting_t *self, bus_service_t *svc)
{
    if (self->transient)
        return bus_service_unavailable(svc, S_RETRY_MS, "storage unavailable, retry: %s",
                                       self->err);
    return bus_service_error(svc, BUS_ERR_INTERNAL, "storage error: %s", self->err);
}

/*  How s_hash names a field's row: not at all, or by what comes before its first colon
    (registers: "R01:tender:cash") or its last (names that may hold colons: "a:b:amount"). */
typedef enum { S_FLAT = 0, S_SPLIT_FIRST, S_SPLIT_LAST } s_split_t;

/*  HGETALL key as a map of ints; split, "a:b" fields become {a: {b: n}}. Linear in the fields:
    rows are found through a hash index, not by scanning the map. NULL on error (see
    s_reply_ok). */
static bus_val_t *s_hash(s_reporting_t *self, const char *key, s_split_t split)
{
    redisReply *r = bus_redis_command(self->redis, "HGETALL %s", key);
    if (!s_reply_ok(self, r))
        return NULL;
    bus_val_t *map = bus_val_new_map();
    zhashx_t *rows = zhashx_new(); /* row name -> its map inside map (borrowed) */
    for (size_t i = 0; map && rows && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str;
        int64_t v = strtoll(r->element[i + 1]->str, NULL, 10);
        const char *colon = split == S_FLAT         ? NULL
                            : split == S_SPLIT_LAST ? strrchr(field, ':')
                                                    : strchr(field, ':');
        if (!colon) {
            bus_val_map_set_int(map, field, v);
            continue;
        }
        char outer[S_FIELD_MAX];
        snprintf(outer, sizeof(outer), "%.*s", (int)(colon - field), field);
        bus_val_t *inner = zhashx_lookup(rows, outer);
        if (!inner) {
            bus_val_t *fresh = bus_val_new_map();
            inner = fresh;
            if (bus_val_map_set(map, outer, &fresh) != 0 || zhashx_insert(rows, outer, inner))
                continue;
        }
        bus_val_map_set_int(inner, colon + 1, v);
    }
    zhashx_destroy(&rows);
    freeReplyObject(r);
    return map;
}

/*  Store and day from a request; day defaults to the store's current business day. */
static int s_store_day(s_reporting_t *self, bus_service_t *svc, const bus_msg_t *req,
                       const char **store, char *day, size_t size)
{
    char key[BUS_KEY_MAX];
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
    redisReply *r = bus_redis_command(self->redis, "GET %s", bus_key_bday(key, *store));
    if (!s_reply_ok(self, r))
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

/*  A new map of from's keys (0 when absent), in the order given. */
static bus_val_t *s_complete(const bus_val_t *from, const char *const *keys)
{
    bus_val_t *row = bus_val_new_map();
    for (int k = 0; row && keys[k]; k++)
        bus_val_map_set_int(row, keys[k], s_get(from, keys[k]));
    return row;
}

/*  Replace every row of rows (a map of maps) by s_complete(row, keys). */
static void s_complete_rows(bus_val_t *rows, const char *const *keys)
{
    for (size_t i = 0; i < bus_val_size(rows); i++) {
        bus_val_t *full = s_complete(bus_val_map_value(rows, i), keys);
        bus_val_map_set(rows, bus_val_map_key(rows, i), &full);
    }
}

/*  A register's row with every key: counters, complete (do the records cover first..last
    without a hole?), and tender:<kind> for every tender kind. */
static bus_val_t *s_register_row(const bus_val_t *from)
{
    bus_val_t *row = s_complete(from, s_register_keys);
    int64_t first = s_get(from, "first"), last = s_get(from, "last"), n = s_get(from, "records");
    bus_val_map_set_bool(row, "complete", first > 0 && last - first + 1 == n);
    for (int k = 0; k < POS_TENDER__COUNT; k++) {
        char field[S_FIELD_MAX];
        snprintf(field, sizeof(field), "tender:%s", pos_tender_name((pos_tender_kind_t)k));
        bus_val_map_set_int(row, field, s_get(from, field));
    }
    return row;
}

/*  Every tender kind with its amount, 0 when unused: from a map {kind: n} or a register's row
    {tender:<kind>: n} (prefix "tender:"). */
static bus_val_t *s_tenders(const bus_val_t *from, const char *prefix)
{
    bus_val_t *tenders = bus_val_new_map();
    for (int k = 0; tenders && k < POS_TENDER__COUNT; k++) {
        char field[S_FIELD_MAX];
        const char *kind = pos_tender_name((pos_tender_kind_t)k);
        snprintf(field, sizeof(field), "%s%s", prefix, kind);
        bus_val_map_set_int(tenders, kind, s_get(from, field));
    }
    return tenders;
}

/*  The whole day: totals, tenders, tax by rate, registers, cashiers, categories, expected cash;
    every documented key present, 0 when nothing happened. */
static int s_fill_day(s_reporting_t *self, bus_service_t *svc, const char *store, const char *day,
                      bus_val_t *reply)
{
    char key[BUS_KEY_MAX];
    static const struct {
        const char *suffix, *name;
        s_split_t split;
    } parts[] = {{"", "totals", S_FLAT},
                 {":tenders", "tenders", S_FLAT},
                 {":tax", "tax", S_SPLIT_FIRST},
                 {":regs", "registers", S_SPLIT_FIRST},
                 {":cashiers", "cashiers", S_SPLIT_LAST},
                 {":cats", "categories", S_SPLIT_LAST}};
    bus_val_t *got[sizeof(parts) / sizeof(parts[0])] = {NULL};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(parts) / sizeof(parts[0]); i++) {
        got[i] = s_hash(self, bus_key_rep(key, store, day, parts[i].suffix), parts[i].split);
        if (!got[i])
            rc = s_redis_down(self, svc);
    }
    if (rc == 0) {
        bus_val_t *totals = s_complete(got[0], s_total_keys);
        bus_val_t *tenders = s_tenders(got[1], "");
        int64_t cash = s_get(tenders, "cash"), change = s_get(totals, "change");
        bus_val_t *tax = got[2], *regs = got[3];
        s_complete_rows(tax, s_tax_keys);
        for (size_t i = 0; i < bus_val_size(tax); i++) {
            bus_val_t *row = bus_val_map_value(tax, i);
            bus_val_map_set_int(row, "net", s_get(row, "gross") - s_get(row, "tax"));
        }
        for (size_t i = 0; i < bus_val_size(regs); i++) {
            bus_val_t *full = s_register_row(bus_val_map_value(regs, i));
            bus_val_map_set(regs, bus_val_map_key(regs, i), &full);
        }
        s_complete_rows(got[4], s_cashier_keys);
        s_complete_rows(got[5], s_category_keys);
        bus_val_map_set_str(reply, "store", store);
        bus_val_map_set_str(reply, "day", day);
        bus_val_map_set(reply, "totals", &totals);
        bus_val_map_set(reply, "tenders", &tenders);
        for (size_t i = 2; i < sizeof(parts) / sizeof(parts[0]); i++)
            bus_val_map_set(reply, parts[i].name, &got[i]);
        /* both within +-S_TOTAL_MAX: the difference fits */
        bus_val_map_set_int(reply, "expected_cash", cash - change);
    }
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        bus_val_destroy(&got[i]);
    return rc;
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
    char day[16], key[BUS_KEY_MAX];
    const char *reg = bus_val_map_get_str(bus_msg_body(req), "register");
    if (s_store_day(self, svc, req, &store, day, sizeof(day)) != 0)
        return -1;
    if (!s_id_ok(reg))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "register required");
    bus_val_t *regs = s_hash(self, bus_key_rep(key, store, day, ":regs"), S_SPLIT_FIRST);
    if (!regs)
        return s_redis_down(self, svc);
    bus_val_t *shift = s_register_row(bus_val_map_get(regs, reg));
    bus_val_t *tenders = s_tenders(shift, "tender:");
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_str(reply, "day", day);
    bus_val_map_set_str(reply, "register", reg);
    bus_val_map_set_int(reply, "expected_cash", s_get(tenders, "cash") - s_get(shift, "change"));
    bus_val_map_set(reply, "tenders", &tenders);
    bus_val_map_set(reply, "shift", &shift);
    bus_val_destroy(&regs);
    return 0;
}

/*  Has the group applied every entry up to upto? 0 with *ready, -1 on error (see s_reply_ok). */
static int s_caught_up(s_reporting_t *self, const char *upto, bool *ready)
{
    *ready = false;
    redisReply *r = bus_redis_command(self->redis, "XINFO GROUPS %s", BUS_KEY_SALES_STREAM);
    if (!s_reply_ok(self, r))
        return -1;
    const char *delivered = NULL;
    for (size_t g = 0; r->type == REDIS_REPLY_ARRAY && g < r->elements; g++) {
        redisReply *grp = r->element[g];
        bool mine = false;
        const char *last = NULL;
        for (size_t k = 0; grp->type == REDIS_REPLY_ARRAY && k + 1 < grp->elements; k += 2) {
            if (grp->element[k]->type != REDIS_REPLY_STRING ||
                grp->element[k + 1]->type != REDIS_REPLY_STRING)
                continue;
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
    r = bus_redis_command(self->redis, "XPENDING %s %s - %s 1", BUS_KEY_SALES_STREAM, S_GROUP,
                          upto);
    if (!s_reply_ok(self, r))
        return -1;
    *ready = r->type == REDIS_REPLY_ARRAY && r->elements == 0;
    freeReplyObject(r);
    return 0;
}

static int s_z(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_reporting_t *self = arg;
    char key[BUS_KEY_MAX];
    const char *store = bus_val_map_get_str(bus_msg_body(req), "store");
    const char *day = bus_val_map_get_str(bus_msg_body(req), "day");
    if (!s_id_ok(store) || !s_day_ok(day))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "store and closed day required");
    redisReply *r = bus_redis_command(self->redis, "HGET %s %s", bus_key_dayclose(key, store), day);
    if (!s_reply_ok(self, r))
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

/* ---- top lists: linear in the rows, whatever their number -------------- */

#define S_COLS_MAX 2

/*  One row of a top list: its name and up to S_COLS_MAX counters (the first orders). */
typedef struct {
    const char *name; /* the index's key */
    int64_t col[S_COLS_MAX];
} s_row_t;

/*  Does a come before b: larger first counter, then name? */
static bool s_row_before(const s_row_t *a, const s_row_t *b)
{
    if (a->col[0] != b->col[0])
        return a->col[0] > b->col[0];
    return strcmp(a->name, b->name) < 0;
}

static int s_cmp_rows(const void *a, const void *b)
{
    const s_row_t *x = *(const s_row_t *const *)a, *y = *(const s_row_t *const *)b;
    return s_row_before(x, y) ? -1 : s_row_before(y, x) ? 1 : 0;
}

/*  Keep in heap (a min-heap of *n rows by s_row_before, root = the last of the best) the top
    rows seen so far: O(log top) per row. */
static void s_heap_offer(s_row_t **heap, size_t *n, size_t top, s_row_t *row)
{
    size_t i;
    if (*n < top) {
        for (i = (*n)++; i > 0 && s_row_before(heap[(i - 1) / 2], row); i = (i - 1) / 2)
            heap[i] = heap[(i - 1) / 2];
        heap[i] = row;
        return;
    }
    if (!s_row_before(row, heap[0]))
        return;
    for (i = 0;;) { /* sift row down from the root */
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && s_row_before(heap[c], heap[c + 1]))
            c++;
        if (!s_row_before(row, heap[c]))
            break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = row;
}

/*  Read key's hash and put its top rows in reply's "rows": with cols[1] (nested), fields
    "<name>:<col>" make one row per name (split at the last colon: names may hold colons);
    without, every field is a row whose cols[0] is its value. Ordered by cols[0], then name. */
static int s_top(s_reporting_t *self, bus_service_t *svc, const char *key, size_t top,
                 const char *const cols[S_COLS_MAX], bus_val_t *reply)
{
    redisReply *r = bus_redis_command(self->redis, "HGETALL %s", key);
    if (!s_reply_ok(self, r))
        return s_redis_down(self, svc);
    zhashx_t *index = zhashx_new(); /* name -> s_row_t */
    s_row_t **heap = calloc(top, sizeof(*heap));
    size_t n = 0;
    int rc = index && heap ? 0 : bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    if (index)
        zhashx_set_destructor(index, (zhashx_destructor_fn *)zstr_free);
    for (size_t i = 0; rc == 0 && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str;
        const char *colon = cols[1] ? strrchr(field, ':') : NULL;
        int c = cols[1] ? -1 : 0;
        for (int k = 0; colon && k < S_COLS_MAX; k++)
            if (strcmp(colon + 1, cols[k]) == 0)
                c = k;
        if (c < 0)
            continue; /* not a column of this list */
        char name[S_FIELD_MAX];
        snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - field) : (int)strlen(field),
                 field);
        s_row_t *row = zhashx_lookup(index, name);
        if (!row) {
            row = calloc(1, sizeof(*row));
            if (!row || zhashx_insert(index, name, row) != 0) {
                free(row);
                rc = bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
                break;
            }
        }
        row->col[c] = strtoll(r->element[i + 1]->str, NULL, 10);
    }
    for (s_row_t *row = rc == 0 ? zhashx_first(index) : NULL; row; row = zhashx_next(index)) {
        row->name = zhashx_cursor(index);
        s_heap_offer(heap, &n, top, row);
    }
    qsort(heap, n, sizeof(*heap), s_cmp_rows);
    bus_val_t *list = bus_val_new_arr();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "key", heap[i]->name);
        for (int k = 0; k < S_COLS_MAX && cols[k]; k++)
            bus_val_map_set_int(row, cols[k], heap[i]->col[k]);
        bus_val_arr_push(list, &row);
    }
    bus_val_map_set(reply, "rows", &list);
    free(heap);
    zhashx_destroy(&index);
    freeReplyObject(r);
    return rc;
}

/*  report.items and report.baskets: store, day, top from the request, then s_top. */
static int s_top_report(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply,
                        s_reporting_t *self, const char *suffix, const char *const *cols)
{
    const char *store;
    char day[16], key[BUS_KEY_MAX];
    if (s_store_day(self, svc, req, &store, day, sizeof(day)) != 0)
        return -1;
    int64_t top = S_TOP_DEFAULT;
    bus_val_map_get_int(bus_msg_body(req), "top", &top);
    if (top < 1 || top > S_TOP_MAX)
        top = S_TOP_DEFAULT;
    bus_val_map_set_str(reply, "store", store);
    bus_val_map_set_str(reply, "day", day);
    return s_top(self, svc, bus_key_rep(key, store, day, suffix), (size_t)top, cols, reply);
}

static int s_items(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    static const char *const cols[S_COLS_MAX] = {"amount", "qty"};
    return s_top_report(svc, req, reply, arg, ":items", cols);
}

static int s_baskets(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    static const char *const cols[S_COLS_MAX] = {"count", NULL};
    return s_top_report(svc, req, reply, arg, ":pairs", cols);
}

static int s_hours(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_reporting_t *self = arg;
    const char *store;
    char day[16], key[BUS_KEY_MAX];
    if (s_store_day(self, svc, req, &store, day, sizeof(day)) != 0)
        return -1;
    bus_val_t *all = s_hash(self, bus_key_rep(key, store, day, ":hours"), S_FLAT);
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
    __atomic_store_n(self->g_lag_p50, p50, __ATOMIC_RELAXED);
    __atomic_store_n(self->g_lag_p99, p99, __ATOMIC_RELAXED);
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
    self.c_refused = bus_stats_counter(stats, "sales_refused");
    self.g_lag_p50 = bus_stats_counter(stats, "apply_lag_p50_ms");
    self.g_lag_p99 = bus_stats_counter(stats, "apply_lag_p99_ms");
    self.lag = calloc(S_LAG_BUCKETS, sizeof(*self.lag));
    bus_service_on_read(self.svc, "report.day", s_day, &self);
    bus_service_on_read(self.svc, "report.x", s_x, &self);
    bus_service_on_read(self.svc, "report.z", s_z, &self);
    bus_service_on_read(self.svc, "report.items", s_items, &self);
    bus_service_on_read(self.svc, "report.hours", s_hours, &self);
    bus_service_on_read(self.svc, "report.baskets", s_baskets, &self);
    self.worker = self.lag ? svc_consumer_start(config, self.svc, self.wredis, BUS_KEY_SALES_STREAM,
                                                S_GROUP, s_apply, &self)
                           : NULL;
    int rc = self.worker ? 0 : 1;
    if (self.worker)
        svc_core_run(&core, s_tick, &self);
    bus_stream_worker_stop(&self.worker);
    bus_info("reporting.stopping", "applied=%" PRId64, bus_stats_load(self.c_applied));
    free(self.lag);
    free(self.why);
    svc_core_stop(&core);
    return rc;
}
