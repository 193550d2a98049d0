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
    script checks all its arguments before its first write, and undoes the
    totals it wrote when a stored total turns out not to take its increment
    exactly (see lua/apply.lua); when it refuses a batch, the sales are
    applied one by one so only the sale that cannot apply is parked.

    Cost: at 2,000 sales a second everything shares two cores, so each sale
    is read once (one pass over each map of the decoded payload into
    s_sale_t) and added straight into the batch's sums, which keeps a
    sale's changes apart only long enough to take them out again if they
    would pass S_TOTAL_MAX.

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

/*  What the aggregation reads of one line, read once (strings borrowed from the decoded sale). */
typedef struct {
    const char *sku;
    const char *category; /* "" when absent */
    int64_t amount, qty, gross, discount, tax, tax_rate_bp;
    bool voided, is_return;
} s_line_t;

typedef struct {
    const char *kind;
    int64_t amount;
} s_tender_t;

typedef enum { S_KIND_SALE = 0, S_KIND_RETURN, S_KIND_NOSALE } s_kind_t;

/*  A checked sale as the aggregation reads it. */
typedef struct {
    const char *reg, *cashier;
    s_kind_t kind;
    int64_t ts, seq, total, change, cash_rounding;
    s_line_t *lines; /* nlines, heap */
    size_t nlines, ntenders;
    s_tender_t tenders[S_TENDERS_MAX];
} s_sale_t;

/*  Is v an int within -max..max? Sets *out. */
static bool s_bounded(const bus_val_t *v, int64_t max, int64_t *out)
{
    return bus_val_get_int(v, out) && *out >= -max && *out <= max;
}

/*  The keys of a line that reporting reads; the first S_LINE_INTS are the ints every non-voided
    line carries, each |v| <= S_AMOUNT_MAX. */
enum {
    S_L_AMOUNT,
    S_L_QTY,
    S_L_UNIT_PRICE,
    S_L_GROSS,
    S_L_PROMO,
    S_L_TICKET,
    S_L_TAX,
    S_LINE_INTS,
    S_L_RATE = S_LINE_INTS,
    S_L_SKU,
    S_L_CATEGORY,
    S_L_RETURN_OF,
    S_L_VOIDED,
    S_L_COUNT
};
static const char *const s_line_keys[S_L_COUNT] = {
    "amount", "qty",         "unit_price", "gross",    "promo_discount", "ticket_discount",
    "tax",    "tax_rate_bp", "sku",        "category", "return_of",      "voided"};

/*  Does line i have what the aggregation reads, with sane types and bounds? Fills out. */
static bool s_line_ok(const bus_val_t *l, size_t i, s_line_t *out, s_reason_t *why)
{
    if (bus_val_type(l) != BUS_VAL_MAP)
        return s_refuse(why, "line %zu is not a map", i);
    const bus_val_t *v[S_L_COUNT];
    bus_val_map_pick(l, s_line_keys, S_L_COUNT, v);
    out->voided = false;
    if (v[S_L_VOIDED] && !bus_val_get_bool(v[S_L_VOIDED], &out->voided))
        return s_refuse(why, "line %zu: voided is not a bool", i);
    if (out->voided)
        return true;
    int64_t n[S_LINE_INTS];
    for (int k = 0; k < S_LINE_INTS; k++)
        if (!s_bounded(v[k], S_AMOUNT_MAX, &n[k]))
            return s_refuse(why, "line %zu: %s missing, not an integer, or beyond +-%" PRId64, i,
                            s_line_keys[k], S_AMOUNT_MAX);
    if (!bus_val_get_int(v[S_L_RATE], &out->tax_rate_bp) || out->tax_rate_bp < 0 ||
        out->tax_rate_bp > S_TAX_BP_MAX)
        return s_refuse(why, "line %zu: tax_rate_bp missing or outside 0..%d", i, S_TAX_BP_MAX);
    out->sku = bus_val_get_str(v[S_L_SKU], NULL);
    if (!s_text_ok(out->sku, S_SKU_MAX))
        return s_refuse(why, "line %zu: sku missing, longer than %d bytes or not text", i,
                        S_SKU_MAX);
    out->category = v[S_L_CATEGORY] ? bus_val_get_str(v[S_L_CATEGORY], NULL) : "";
    if (!out->category || (*out->category && !s_text_ok(out->category, S_TEXT_MAX)))
        return s_refuse(why, "line %zu: category is not text of at most %d bytes", i, S_TEXT_MAX);
    if (v[S_L_RETURN_OF] && !bus_val_get_str(v[S_L_RETURN_OF], NULL))
        return s_refuse(why, "line %zu: return_of is not a string", i);
    out->is_return = v[S_L_RETURN_OF] != NULL;
    out->amount = n[S_L_AMOUNT];
    out->qty = n[S_L_QTY];
    out->gross = n[S_L_GROSS];
    out->discount = n[S_L_PROMO] + n[S_L_TICKET]; /* both within +-S_AMOUNT_MAX: no overflow */
    out->tax = n[S_L_TAX];
    return true;
}

static bool s_tender_ok(const bus_val_t *t, size_t i, s_tender_t *out, s_reason_t *why)
{
    static const char *const keys[] = {"kind", "amount"};
    const bus_val_t *v[2];
    bus_val_map_pick(t, keys, 2, v);
    out->kind = bus_val_get_str(v[0], NULL);
    if (pos_tender_parse(out->kind) < 0)
        return s_refuse(why, "tender %zu: kind missing or unknown", i);
    if (!s_bounded(v[1], S_AMOUNT_MAX, &out->amount))
        return s_refuse(why, "tender %zu: amount missing, not an integer, or beyond +-%" PRId64, i,
                        S_AMOUNT_MAX);
    return true;
}

/*  The keys of a sale that reporting reads. */
enum {
    S_S_KIND,
    S_S_TS,
    S_S_SEQ,
    S_S_REGISTER,
    S_S_CASHIER,
    S_S_LINES,
    S_S_TENDERS,
    S_S_TOTAL,
    S_S_CHANGE,
    S_S_ROUNDING,
    S_S_COUNT
};
static const char *const s_sale_keys[S_S_COUNT] = {"kind",    "ts",           "seq",     "register",
                                                   "cashier", "lines",        "tenders", "total",
                                                   "change",  "cash_rounding"};

/*  Is the decoded payload a sale the aggregation can add up without guessing? The sales service
    has checked that it adds up; this checks what reporting relies on: keys, types and bounds.
    Fills out (its lines array is the caller's to free, also on failure). */
static bool s_sale_ok(const bus_val_t *s, s_sale_t *out, s_reason_t *why)
{
    if (bus_val_type(s) != BUS_VAL_MAP)
        return s_refuse(why, "payload is not a map");
    const bus_val_t *v[S_S_COUNT];
    bus_val_map_pick(s, s_sale_keys, S_S_COUNT, v);
    const char *kind = bus_val_get_str(v[S_S_KIND], NULL);
    if (!bus_val_get_int(v[S_S_TS], &out->ts) || out->ts < 0 || out->ts > S_TS_MAX)
        return s_refuse(why, "ts missing or not a time in ms");
    if (!bus_val_get_int(v[S_S_SEQ], &out->seq) || out->seq < 1 || out->seq > S_TOTAL_MAX)
        return s_refuse(why, "seq missing or not a positive integer");
    out->reg = bus_val_get_str(v[S_S_REGISTER], NULL);
    if (!s_id_ok(out->reg))
        return s_refuse(why, "register missing or not an id of 1-%d letters, digits or _",
                        S_ID_MAX);
    out->cashier = bus_val_get_str(v[S_S_CASHIER], NULL);
    if (!s_text_ok(out->cashier, S_TEXT_MAX))
        return s_refuse(why, "cashier missing or not text of at most %d bytes", S_TEXT_MAX);
    if (kind && strcmp(kind, "sale") == 0)
        out->kind = S_KIND_SALE;
    else if (kind && strcmp(kind, "return") == 0)
        out->kind = S_KIND_RETURN;
    else if (kind && strcmp(kind, "nosale") == 0)
        out->kind = S_KIND_NOSALE;
    else
        return s_refuse(why, "kind is not sale, return or nosale");
    if (out->kind == S_KIND_NOSALE)
        return true; /* only counted: nothing else is read */
    const bus_val_t *lines = v[S_S_LINES], *tenders = v[S_S_TENDERS];
    if (bus_val_type(lines) != BUS_VAL_ARR || bus_val_size(lines) > S_LINES_MAX)
        return s_refuse(why, "lines is not an array of at most %d", S_LINES_MAX);
    if (bus_val_type(tenders) != BUS_VAL_ARR || bus_val_size(tenders) > S_TENDERS_MAX)
        return s_refuse(why, "tenders is not an array of at most %d", S_TENDERS_MAX);
    out->nlines = bus_val_size(lines);
    out->lines = out->nlines ? malloc(out->nlines * sizeof(*out->lines)) : NULL;
    if (out->nlines && !out->lines)
        return s_refuse(why, "out of memory for %zu lines", out->nlines);
    for (size_t i = 0; i < out->nlines; i++)
        if (!s_line_ok(bus_val_arr_get(lines, i), i, &out->lines[i], why))
            return false;
    out->ntenders = bus_val_size(tenders);
    for (size_t i = 0; i < out->ntenders; i++)
        if (!s_tender_ok(bus_val_arr_get(tenders, i), i, &out->tenders[i], why))
            return false;
    int64_t *totals[] = {&out->total, &out->change, &out->cash_rounding};
    for (int k = 0; k < 3; k++)
        if (!s_bounded(v[S_S_TOTAL + k], S_AMOUNT_MAX, totals[k]))
            return s_refuse(why, "%s missing, not an integer, or beyond +-%" PRId64,
                            s_sale_keys[S_S_TOTAL + k], S_AMOUNT_MAX);
    return true;
}

/* ---- adding sales up (worker thread) ----------------------------------- */

/*  A batch is summed per Redis key and field in a table of cells named "key\x1ffield" (the
    separator is never in a key, which is built from validated ids, nor in a field, which has no
    control characters). A batch of 100 five-line sales adds up some 6,000 increments into a few
    hundred cells, so the table keeps every cell and its name in two growing arrays (one
    allocation each, not one per cell) under an open-addressing index, and is never shrunk. */
#define S_SEP "\x1f"

typedef struct {
    uint64_t hash;
    size_t off;            /* name in the arena */
    uint32_t len, klen;    /* bytes of the name, and of its key (before the separator) */
    uint32_t stamp;        /* the sale that last changed it (s_agg_t.stamp) */
    bool live;             /* an added sale changed it: it goes to the script */
    int64_t value, before; /* before: the value when the sale being added first changed it */
    int64_t hi;            /* sequence cells only: the highest seq (value is the lowest) */
} s_cell_t;

typedef struct {
    s_cell_t *cells;
    size_t ncells, cap;
    uint32_t *slot; /* index + 1 of a cell, 0 when free */
    size_t nslots;  /* a power of two, at least twice ncells */
    bus_buf_t arena;
} s_table_t;

#define S_SLOTS_MIN 256

/*  FNV-1a, continued from h over len bytes of s. */
static uint64_t s_fnv(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * UINT64_C(1099511628211);
    return h;
}
#define S_HASH_SEED UINT64_C(14695981039346656037)

static void s_table_free(s_table_t *t)
{
    free(t->cells);
    free(t->slot);
    bus_buf_free(&t->arena);
    memset(t, 0, sizeof(*t));
}

/*  Index every cell in nslots slots. 0, -1 when out of memory (the table is then unchanged). */
static int s_table_index(s_table_t *t, size_t nslots)
{
    uint32_t *slot = calloc(nslots, sizeof(*slot));
    if (!slot)
        return -1;
    for (size_t c = 0; c < t->ncells; c++) {
        size_t i = (size_t)t->cells[c].hash & (nslots - 1);
        while (slot[i])
            i = (i + 1) & (nslots - 1);
        slot[i] = (uint32_t)c + 1;
    }
    free(t->slot);
    t->slot = slot;
    t->nslots = nslots;
    return 0;
}

/*  The cell named name (len bytes, of which the key is the first klen; hash = s_fnv of it),
    added with everything 0 when new. Valid until the next call; NULL when out of memory. */
static s_cell_t *s_table_cell(s_table_t *t, const char *name, size_t len, size_t klen,
                              uint64_t hash)
{
    size_t i = t->nslots ? (size_t)hash & (t->nslots - 1) : 0;
    for (; t->nslots && t->slot[i]; i = (i + 1) & (t->nslots - 1)) {
        s_cell_t *c = &t->cells[t->slot[i] - 1];
        if (c->hash == hash && c->len == len && memcmp(t->arena.data + c->off, name, len) == 0)
            return c;
    }
    if ((t->ncells + 1) * 2 > t->nslots) {
        if (s_table_index(t, t->nslots ? t->nslots * 2 : S_SLOTS_MIN) != 0)
            return NULL;
        for (i = (size_t)hash & (t->nslots - 1); t->slot[i]; i = (i + 1) & (t->nslots - 1))
            ;
    }
    if (t->ncells == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : S_SLOTS_MIN / 2;
        s_cell_t *cells = realloc(t->cells, cap * sizeof(*cells));
        if (!cells)
            return NULL;
        t->cells = cells;
        t->cap = cap;
    }
    size_t off = t->arena.len;
    if (bus_buf_append(&t->arena, name, len) != 0 || bus_buf_append(&t->arena, "", 1) != 0)
        return NULL;
    s_cell_t *c = &t->cells[t->ncells];
    *c = (s_cell_t){.hash = hash, .off = off, .len = (uint32_t)len, .klen = (uint32_t)klen};
    t->slot[i] = (uint32_t)++t->ncells;
    return c;
}

/*  The name of cell c, and its parts as script arguments. */
static const char *s_cell_key(const s_table_t *t, const s_cell_t *c)
{
    return (const char *)t->arena.data + c->off;
}
static const char *s_cell_field(const s_table_t *t, const s_cell_t *c)
{
    return (const char *)t->arena.data + c->off + c->klen + 1;
}

/*  The keys of one store and day's aggregates (bus/keys.h) with the hash of "key\x1f" each,
    built again only when a sale is of another store or day than the one before. */
enum {
    S_K_DAY,
    S_K_REGS,
    S_K_ITEMS,
    S_K_CATS,
    S_K_TAX,
    S_K_TENDERS,
    S_K_CASHIERS,
    S_K_HOURS,
    S_K_PAIRS,
    S_K_DAYS, /* the store's set of days */
    S_K_COUNT
};
static const char *const s_key_suffix[S_K_DAYS] = {
    NULL, ":regs", ":items", ":cats", ":tax", ":tenders", ":cashiers", ":hours", ":pairs"};

typedef struct {
    char store[S_ID_MAX + 1], day[16];
    char key[S_K_COUNT][BUS_KEY_MAX];
    size_t len[S_K_COUNT];
    uint64_t hash[S_K_COUNT];
} s_keys_t;

/*  The increments of a batch, its sequences per register and its days. Adding a sale changes
    the cells it touches at once and remembers them (touched), so that a sale that would take a
    total beyond S_TOTAL_MAX is taken out again without copying the batch. */
typedef struct {
    s_table_t inc;     /* "key\x1ffield": delta */
    s_table_t seqs;    /* "regs key\x1fregister": lowest (value) and highest (hi) seq */
    s_table_t days;    /* "days key\x1fday" */
    uint32_t *touched; /* cells of inc the sale being added changed */
    size_t ntouched, touched_cap;
    uint32_t stamp; /* the sale being added */
    s_keys_t keys;  /* of the last sale's store and day */
} s_agg_t;

static void s_agg_destroy(s_agg_t *agg)
{
    s_table_free(&agg->inc);
    s_table_free(&agg->seqs);
    s_table_free(&agg->days);
    free(agg->touched);
    memset(agg, 0, sizeof(*agg));
}

/*  Point agg->keys at store and day. */
static void s_agg_keys(s_agg_t *agg, const char *store, const char *day)
{
    s_keys_t *k = &agg->keys;
    if (strcmp(k->store, store) == 0 && strcmp(k->day, day) == 0)
        return;
    snprintf(k->store, sizeof(k->store), "%s", store); /* validated: they fit */
    snprintf(k->day, sizeof(k->day), "%s", day);
    for (int i = 0; i < S_K_COUNT; i++) {
        if (i == S_K_DAYS)
            bus_key_rep_days(k->key[i], store);
        else
            bus_key_rep(k->key[i], store, day, s_key_suffix[i]);
        k->len[i] = strlen(k->key[i]);
        k->hash[i] = s_fnv(s_fnv(S_HASH_SEED, k->key[i], k->len[i]), S_SEP, 1);
    }
}

/*  Copy s (may be NULL: nothing) to *p, stopping at end; returns the new end of the text. */
static char *s_put(char *p, const char *end, const char *s)
{
    while (s && *s && p < end)
        *p++ = *s++;
    return p;
}

/*  Add v to the field a b c (concatenated; b and c may be NULL) of agg->keys.key[which], and
    remember the cell for the sale being added. 0, 1 if the cell's int64 would overflow, -1 when
    out of memory. Results of several calls combine with |: -1 wins, then 1. */
static int s_add(s_agg_t *agg, int which, const char *a, const char *b, const char *c, int64_t v)
{
    if (v == 0)
        return 0;
    const s_keys_t *k = &agg->keys;
    char name[BUS_KEY_MAX + 1 + S_FIELD_MAX];
    memcpy(name, k->key[which], k->len[which]);
    name[k->len[which]] = S_SEP[0];
    char *field = name + k->len[which] + 1, *end = name + sizeof(name);
    char *p = s_put(s_put(s_put(field, end, a), end, b), end, c);
    size_t len = (size_t)(p - name);
    s_cell_t *cell = s_table_cell(&agg->inc, name, len, k->len[which],
                                  s_fnv(k->hash[which], field, (size_t)(p - field)));
    if (!cell)
        return -1;
    if (cell->stamp != agg->stamp) {
        if (agg->ntouched == agg->touched_cap) {
            size_t cap = agg->touched_cap ? agg->touched_cap * 2 : 64;
            uint32_t *touched = realloc(agg->touched, cap * sizeof(*touched));
            if (!touched)
                return -1;
            agg->touched = touched;
            agg->touched_cap = cap;
        }
        agg->touched[agg->ntouched++] = (uint32_t)(cell - agg->inc.cells);
        cell->stamp = agg->stamp;
        cell->before = cell->value;
    }
    return pos_add(cell->value, v, &cell->value) == POS_OK ? 0 : 1;
}

/*  Close the sale being added: keep its increments if rc is 0 and no total it changed left
    +-S_TOTAL_MAX, else take them out again. Returns 0 (kept) or rc (1 when the totals were
    the reason). A cell goes to the script once a kept sale changed it, even if later ones
    bring it back to 0, as a sum per sale then per batch would. */
static int s_sale_done(s_agg_t *agg, int rc)
{
    for (size_t i = 0; rc == 0 && i < agg->ntouched; i++) {
        const s_cell_t *c = &agg->inc.cells[agg->touched[i]];
        if (c->value > S_TOTAL_MAX || c->value < -S_TOTAL_MAX)
            rc = 1;
    }
    for (size_t i = 0; i < agg->ntouched; i++) {
        s_cell_t *c = &agg->inc.cells[agg->touched[i]];
        if (rc != 0)
            c->value = c->before;
        else if (c->value != c->before)
            c->live = true;
    }
    agg->ntouched = 0;
    agg->stamp++;
    return rc;
}

/*  Record reg's seq in the batch's sequences and the day in its days; -1 when out of memory. */
static int s_seq_day(s_agg_t *agg, const char *reg, int64_t seq)
{
    const s_keys_t *k = &agg->keys;
    char name[BUS_KEY_MAX + 1 + S_FIELD_MAX];
    size_t klen = k->len[S_K_REGS], rlen = strlen(reg); /* validated: <= S_ID_MAX */
    memcpy(name, k->key[S_K_REGS], klen + 1);
    name[klen] = S_SEP[0];
    memcpy(name + klen + 1, reg, rlen);
    s_cell_t *c =
        s_table_cell(&agg->seqs, name, klen + 1 + rlen, klen, s_fnv(k->hash[S_K_REGS], reg, rlen));
    if (!c)
        return -1;
    if (!c->live || seq < c->value)
        c->value = seq;
    if (!c->live || seq > c->hi)
        c->hi = seq;
    c->live = true;
    klen = k->len[S_K_DAYS];
    size_t dlen = strlen(k->day);
    memcpy(name, k->key[S_K_DAYS], klen);
    name[klen] = S_SEP[0];
    memcpy(name + klen + 1, k->day, dlen);
    c = s_table_cell(&agg->days, name, klen + 1 + dlen, klen,
                     s_fnv(k->hash[S_K_DAYS], k->day, dlen));
    if (!c)
        return -1;
    c->live = true;
    return 0;
}

static int s_cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*  Add one line's increments. */
static int s_add_line(s_agg_t *agg, const s_line_t *l, const char **skus, int *nskus)
{
    char rate[S_NUM_MAX];
    int rc = 0;
    if (l->is_return)
        rc |= s_add(agg, S_K_DAY, "returns", NULL, NULL, l->amount);
    else {
        rc |= s_add(agg, S_K_DAY, "gross", NULL, NULL, l->gross);
        rc |= s_add(agg, S_K_DAY, "discounts", NULL, NULL, l->discount);
        bool seen = false;
        for (int k = 0; k < *nskus; k++)
            seen = seen || strcmp(skus[k], l->sku) == 0;
        if (!seen && *nskus < S_PAIRS_MAX)
            skus[(*nskus)++] = l->sku;
    }
    rc |= s_add(agg, S_K_DAY, "total", NULL, NULL, l->amount);
    rc |= s_add(agg, S_K_ITEMS, l->sku, ":qty", NULL, l->qty);
    rc |= s_add(agg, S_K_ITEMS, l->sku, ":amount", NULL, l->amount);
    rc |= s_add(agg, S_K_CATS, l->category, ":amount", NULL, l->amount);
    snprintf(rate, sizeof(rate), "%" PRId64, l->tax_rate_bp);
    rc |= s_add(agg, S_K_TAX, rate, ":gross", NULL, l->amount);
    rc |= s_add(agg, S_K_TAX, rate, ":tax", NULL, l->tax);
    return rc;
}

/*  Add one checked sale's increments (the same aggregates report.day reads) to the batch, or
    nothing: 1 when a total would leave +-S_TOTAL_MAX, -1 when out of memory, else 0. */
static int s_aggregate(s_agg_t *agg, const s_sale_t *s, const char *store, const char *day,
                       const char *hour)
{
    s_agg_keys(agg, store, day);
    const char *reg = s->reg;
    int rc = s_add(agg, S_K_REGS, reg, ":records", NULL, 1);
    if (s->kind == S_KIND_NOSALE) {
        rc |= s_add(agg, S_K_DAY, "nosale", NULL, NULL, 1);
        rc |= s_add(agg, S_K_REGS, reg, ":nosale", NULL, 1);
    } else {
        rc |= s_add(agg, S_K_DAY, "tickets", NULL, NULL, 1);
        rc |= s_add(agg, S_K_DAY, s->kind == S_KIND_RETURN ? "return_tickets" : "sale_tickets",
                    NULL, NULL, 1);
        const char *skus[S_PAIRS_MAX];
        int nskus = 0;
        for (size_t i = 0; i < s->nlines; i++)
            rc |= s->lines[i].voided ? s_add(agg, S_K_DAY, "voided_lines", NULL, NULL, 1)
                                     : s_add_line(agg, &s->lines[i], skus, &nskus);
        for (size_t i = 0; i < s->ntenders; i++) {
            const s_tender_t *t = &s->tenders[i];
            rc |= s_add(agg, S_K_TENDERS, t->kind, NULL, NULL, t->amount);
            rc |= s_add(agg, S_K_REGS, reg, ":tender:", t->kind, t->amount);
        }
        rc |= s_add(agg, S_K_DAY, "change", NULL, NULL, s->change);
        rc |= s_add(agg, S_K_DAY, "cash_rounding", NULL, NULL, s->cash_rounding);
        rc |= s_add(agg, S_K_REGS, reg, ":change", NULL, s->change);
        rc |= s_add(agg, S_K_REGS, reg, ":tickets", NULL, 1);
        rc |= s_add(agg, S_K_REGS, reg, ":total", NULL, s->total);
        rc |= s_add(agg, S_K_CASHIERS, s->cashier, ":tickets", NULL, 1);
        rc |= s_add(agg, S_K_CASHIERS, s->cashier, ":total", NULL, s->total);
        rc |= s_add(agg, S_K_HOURS, hour, NULL, NULL, s->total);
        qsort(skus, (size_t)nskus, sizeof(skus[0]), s_cmp_names);
        for (int x = 0; x < nskus; x++)
            for (int y = x + 1; y < nskus; y++)
                rc |= s_add(agg, S_K_PAIRS, skus[x], "|", skus[y], 1);
    }
    if (rc < 0)
        return -1;
    rc = s_sale_done(agg, rc);
    return rc == 0 ? s_seq_day(agg, reg, s->seq) : rc;
}

/* ---- applying sales (worker thread) ------------------------------------ */

typedef enum { S_LIVE = 0, S_APPLIED, S_REJECTED } s_state_t;

/*  One entry of the batch being applied. */
typedef struct {
    bus_stream_entry_t *entry;
    s_state_t state;
    char key[BUS_KEY_MAX]; /* the sale hash that carries the applied marker */
    bus_val_t *doc;        /* decoded payload */
    s_sale_t sale;         /* what the aggregation reads of it (strings borrowed from doc) */
    const char *store, *day;
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
    else if (!(p->doc = bus_val_decode(payload, plen, NULL, &rej)))
        s_refuse(&why, "payload is not a MessagePack document: %s", bus_reject_name(rej));
    else if (s_sale_ok(p->doc, &p->sale, &why)) {
        time_t secs = (time_t)(p->sale.ts / 1000);
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
        int rc = s_aggregate(agg, &p[i].sale, p[i].store, p[i].day, p[i].hour);
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

/*  The decimal text of v into buf (S_NUM_MAX bytes); its length. */
static size_t s_num(char *buf, int64_t v)
{
    char tmp[S_NUM_MAX];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    buf[len] = '\0';
    return len;
}

/*  How many cells of t are live. */
static size_t s_live_cells(const s_table_t *t)
{
    size_t n = 0;
    for (size_t c = 0; c < t->ncells; c++)
        n += t->cells[c].live ? 1 : 0;
    return n;
}

/*  The script's arguments for the sales index[0..live) summed up in agg. The strings live in
    agg, p and the returned numbers buffer (free it and *argv_p, *alen_p). Returns argc, -1 when
    memory ran out. */
static int s_build_args(s_pending_t *p, const int *index, int live, s_agg_t *agg,
                        const char ***argv_p, size_t **alen_p, char **numbers_p)
{
    size_t m = s_live_cells(&agg->inc), k = s_live_cells(&agg->seqs);
    size_t d = s_live_cells(&agg->days);
    size_t cap = 4 + (size_t)live + 3 * m + 4 * k + 2 * d;
    const char **argv = calloc(cap, sizeof(*argv));
    size_t *alen = calloc(cap, sizeof(*alen));
    char *numbers = malloc((4 + m + 2 * k) * S_NUM_MAX); /* text of every number argument */
    if (!argv || !alen || !numbers) {
        free(argv);
        free(alen);
        free(numbers);
        return -1;
    }
    int argc = 0;
    char *num = numbers;
#define S_ARG(s, len) (argv[argc] = (s), alen[argc] = (len), argc++)
#define S_NUM(v)      (S_ARG(num, s_num(num, (int64_t)(v))), num += S_NUM_MAX)
    /* a cell's key and field, each as an argument */
#define S_CELL(t, c)                                                                               \
    (S_ARG(s_cell_key(t, c), (c)->klen), S_ARG(s_cell_field(t, c), (c)->len - (c)->klen - 1))
    S_NUM(live);
    for (int j = 0; j < live; j++)
        S_ARG(p[index[j]].key, strlen(p[index[j]].key));
    S_NUM(m);
    for (size_t i = 0; i < agg->inc.ncells; i++) {
        const s_cell_t *c = &agg->inc.cells[i];
        if (c->live) {
            S_CELL(&agg->inc, c);
            S_NUM(c->value);
        }
    }
    S_NUM(k);
    for (size_t i = 0; i < agg->seqs.ncells; i++) {
        const s_cell_t *c = &agg->seqs.cells[i];
        if (c->live) {
            S_CELL(&agg->seqs, c);
            S_NUM(c->value);
            S_NUM(c->hi);
        }
    }
    S_NUM(d);
    for (size_t i = 0; i < agg->days.ncells; i++)
        if (agg->days.cells[i].live)
            S_CELL(&agg->days, &agg->days.cells[i]);
#undef S_CELL
#undef S_NUM
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
            int64_t lag = now - p[index[j]].sale.ts;
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
    s_agg_t agg = {.stamp = 1}; /* cells start with stamp 0: untouched by the first sale */
    const char **argv = NULL;
    size_t *alen = NULL;
    char *numbers = NULL;
    int rc = S_RUN_FAILED;
    int *index = calloc((size_t)n, sizeof(*index));
    if (!index)
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
        bus_val_destroy(&p[i].doc);
        free(p[i].sale.lines);
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
    static const char *const gauges[] = {"apply_lag_p50_ms", "apply_lag_p99_ms", NULL};
    bus_service_set_gauges(self.svc, gauges); /* levels, not counts, on the metrics page */
    self.lag = calloc(S_LAG_BUCKETS, sizeof(*self.lag));
    /* every report is read-only and open to every role (docs/protocol.md) */
    static const bus_method_t methods[] = {
        {"report.day", s_day, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"report.x", s_x, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"report.z", s_z, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"report.items", s_items, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"report.hours", s_hours, BUS_METHOD_READ, BUS_ROLES_ALL},
        {"report.baskets", s_baskets, BUS_METHOD_READ, BUS_ROLES_ALL},
        {NULL, NULL, 0, 0}};
    if (self.lag && bus_service_methods(self.svc, methods, &self) != 0) {
        bus_error("reporting.start", "cannot register methods: out of memory");
        free(self.lag);
        self.lag = NULL;
    }
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
