/*  =========================================================================
    canteen.c - canteen terminals on a register (node/canteen.h)

    Why it looks like this. The money rules (a tap sold once, the sale
    number the cashier's ticket holds never taken, offline deductions
    uploaded) live in the till, next to `pay sv`; this module only keeps the
    line's bookkeeping: which tap waits, which terminal has offline
    transactions to collect and how far the journal holds them, and which
    blocklist version each line has been sent. A line has at most 32
    terminals; a register drives a few lines at most (S_LINES).
    =========================================================================
*/
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bus/log.h>

#include "node/canteen.h"

#define S_LINES          8     /* canteen devices on one register */
#define S_TERMS          32    /* addresses 1-32 */
#define S_FRESH_MS       2000  /* a tap older than this is left to the terminal's own rule */
#define S_COLLECT_RETRY  5000  /* ms before a collect that failed or left some is sent again */
#define S_BLOCKLIST_MAX  60000 /* cards one full list carries at most (the driver keeps 65536
                                   operations) */

typedef struct {
    bool tap;           /* a tap the till was busy for, asked again while fresh */
    int64_t tap_seq, tap_card, tap_amount, tap_at_ms;
    bool collecting;    /* a collect job is out */
    bool stop;          /* an offline transaction of this collect was not sold: the rest wait */
    int64_t collect_ms; /* when to collect (0: nothing known to collect) */
} s_term_t;

typedef struct {
    char name[40];
    s_term_t terms[S_TERMS + 1];
    int64_t pushed;     /* blocklist version sent (0: none) */
    uint32_t *cards;    /* the blocked cards sent, sorted */
    size_t ncards;
    bool full_due;      /* a terminal is older than every update kept: send the whole list */
} s_line_t;

struct node_canteen_t {
    node_till_t *till;
    node_svcard_t *svcards;
    char sku[40];
    char *fees; /* the `fees` job text, or NULL */
    node_canteen_submit_fn submit;
    void *arg;
    s_line_t lines[S_LINES];
    int nlines;
    uint64_t jobs; /* job keys made unique */
    int64_t taps, approved, declined, left, offline_sold, duplicates, conflicts, pushes;
};

node_canteen_t *node_canteen_new(node_till_t *till, node_svcard_t *svcards, const char *sku,
                                 const char *fees, node_canteen_submit_fn submit, void *arg)
{
    node_canteen_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    if (fees && *fees && !(self->fees = strdup(fees))) {
        free(self);
        return NULL;
    }
    self->till = till;
    self->svcards = svcards;
    snprintf(self->sku, sizeof(self->sku), "%s", sku && *sku ? sku : "CANTEEN");
    self->submit = submit;
    self->arg = arg;
    return self;
}

void node_canteen_destroy(node_canteen_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    for (int i = 0; i < (*self_p)->nlines; i++)
        free((*self_p)->lines[i].cards);
    free((*self_p)->fees);
    free(*self_p);
    *self_p = NULL;
}

static int s_submit(node_canteen_t *self, const s_line_t *l, const char *what, const char *verb,
                    const char *data);

static s_line_t *s_line(node_canteen_t *self, const char *device)
{
    for (int i = 0; i < self->nlines; i++)
        if (strcmp(self->lines[i].name, device) == 0)
            return &self->lines[i];
    if (self->nlines == S_LINES || strlen(device) >= sizeof(self->lines[0].name))
        return NULL;
    s_line_t *l = &self->lines[self->nlines++];
    memset(l, 0, sizeof(*l));
    snprintf(l->name, sizeof(l->name), "%s", device);
    if (self->fees && s_submit(self, l, "fees", "fees", self->fees) < 0)
        bus_warn("posnode.canteen", "%s: the fee rules were not queued", l->name);
    return l;
}

static int s_submit(node_canteen_t *self, const s_line_t *l, const char *what, const char *verb,
                    const char *data)
{
    char key[96];
    snprintf(key, sizeof(key), "%s-%" PRIu64, what, ++self->jobs);
    return self->submit(self->arg, l->name, key, verb, data);
}

/*  Collect terminal t's offline transactions after what the journal holds (acking those). */
static void s_collect(node_canteen_t *self, s_line_t *l, int t, int64_t now)
{
    s_term_t *term = &l->terms[t];
    char data[48];
    snprintf(data, sizeof(data), "%d %" PRId64, t, node_till_tap_held(self->till, l->name, t));
    if (s_submit(self, l, "collect", "collect", data) >= 0) {
        term->collecting = true;
        term->stop = false;
        term->collect_ms = 0;
    } else {
        term->collect_ms = now + S_COLLECT_RETRY;
    }
}

/*  Sell an online tap; its answer queued unless the till is busy. The till's reply. */
static bus_val_t *s_tap(node_canteen_t *self, s_line_t *l, int t, int64_t now)
{
    s_term_t *term = &l->terms[t];
    char card[24], data[96];
    snprintf(card, sizeof(card), "%" PRId64, term->tap_card);
    node_till_tap_t tap = {.device = l->name,
                           .terminal = t,
                           .seq = term->tap_seq,
                           .card = card,
                           .amount = term->tap_amount,
                           .sku = self->sku};
    bus_val_t *r = node_till_tap(self->till, &tap);
    const char *verdict = bus_val_map_get_str(r, "verdict");
    if (verdict && strcmp(verdict, "busy") == 0) {
        if (now - term->tap_at_ms > S_FRESH_MS) {
            term->tap = false;
            self->left++;
        }
        bus_val_destroy(&r); /* asked again at the next tick while fresh */
        return NULL;
    }
    term->tap = false;
    bool approve = verdict && strcmp(verdict, "approve") == 0;
    const char *text = bus_val_map_get_str(r, "text");
    snprintf(data, sizeof(data), "%d %" PRId64 " %s%s%s", t, term->tap_seq,
             approve ? "approve" : "decline", text ? " " : "", text ? text : "");
    if (s_submit(self, l, "answer", "answer", data) < 0)
        bus_warn("posnode.canteen", "%s: terminal %d tap %" PRId64 ": the answer was not queued",
                 l->name, t, term->tap_seq);
    bool dup = false;
    bus_val_map_get_bool(r, "duplicate", &dup);
    if (dup)
        self->duplicates++;
    else if (approve)
        self->approved++;
    else
        self->declined++;
    return r;
}

static bool s_int(const bus_val_t *body, const char *name, int64_t lo, int64_t hi, int64_t *out)
{
    return bus_val_map_get_int(body, name, out) && *out >= lo && *out <= hi;
}

bus_val_t *node_canteen_event(node_canteen_t *self, const char *device, const char *event,
                              const bus_val_t *body, int64_t at_ms, int64_t now_ms)
{
    s_line_t *l = self && device ? s_line(self, device) : NULL;
    int64_t t = 0;
    if (!l || !s_int(body, "terminal", 1, S_TERMS, &t))
        return NULL;
    s_term_t *term = &l->terms[t];
    if (strcmp(event, "tap") == 0) {
        int64_t seq, card, amount;
        if (!s_int(body, "seq", 1, UINT32_MAX, &seq) || !s_int(body, "card", 0, UINT32_MAX, &card) ||
            !s_int(body, "amount", 1, UINT32_MAX, &amount))
            return NULL;
        self->taps++;
        if (now_ms - at_ms > S_FRESH_MS) { /* too late to answer in the terminal's wait */
            self->left++;
            return NULL;
        }
        term->tap = true;
        term->tap_seq = seq;
        term->tap_card = card;
        term->tap_amount = amount;
        term->tap_at_ms = at_ms;
        return s_tap(self, l, (int)t, now_ms);
    }
    if (strcmp(event, "offline_tx") == 0) {
        int64_t seq, card, amount, ts = 0;
        if (!s_int(body, "seq", 1, UINT32_MAX, &seq) || !s_int(body, "card", 0, UINT32_MAX, &card) ||
            !s_int(body, "amount", 1, UINT32_MAX, &amount) || term->stop)
            return NULL;
        bus_val_map_get_int(body, "ts", &ts);
        char cardtext[24];
        snprintf(cardtext, sizeof(cardtext), "%" PRId64, card);
        node_till_tap_t tap = {.device = l->name,
                               .terminal = (int)t,
                               .seq = seq,
                               .card = cardtext,
                               .amount = amount,
                               .ts_ms = ts > 0 ? ts * 1000 : 0,
                               .offline = true,
                               .sku = self->sku};
        bus_val_t *r = node_till_tap(self->till, &tap);
        const char *verdict = bus_val_map_get_str(r, "verdict");
        bool dup = false;
        bus_val_map_get_bool(r, "duplicate", &dup);
        if (verdict && strcmp(verdict, "busy") == 0) {
            term->stop = true; /* this and what follows stay in the terminal until next time */
            bus_val_destroy(&r);
            return NULL;
        }
        if (dup) {
            self->duplicates++;
            bus_val_destroy(&r);
            return NULL;
        }
        self->offline_sold++;
        return r;
    }
    if (strcmp(event, "collected") == 0) {
        bool ok = false;
        int64_t after = 0, count = 0;
        bus_val_map_get_bool(body, "ok", &ok);
        bus_val_map_get_int(body, "after", &after);
        bus_val_map_get_int(body, "count", &count);
        term->collecting = false;
        int64_t held = node_till_tap_held(self->till, l->name, (int)t);
        if (ok && count > 0 && !term->stop)
            s_collect(self, l, (int)t, now_ms); /* acks what was sold, looks for more */
        else if (!ok || term->stop)
            term->collect_ms = now_ms + S_COLLECT_RETRY;
        else if (held > after)
            s_collect(self, l, (int)t, now_ms); /* nothing new, but something to ack */
        return NULL;
    }
    if (strcmp(event, "terminal") == 0) {
        bool up = false;
        int64_t offline = 0;
        bus_val_map_get_bool(body, "up", &up);
        bus_val_map_get_int(body, "offline", &offline);
        if (up && offline > 0 && !term->collecting)
            s_collect(self, l, (int)t, now_ms);
        return NULL;
    }
    if (strcmp(event, "blocklist_stale") == 0) {
        l->full_due = true;
        return NULL;
    }
    if (strcmp(event, "answered") == 0) {
        const char *result = bus_val_map_get_str(body, "result");
        int64_t seq = 0;
        bus_val_map_get_int(body, "seq", &seq);
        if (result && strcmp(result, "offline_declined") == 0) {
            /* the terminal gave up waiting and declined; if the till sold it online, the
               card was charged for a meal not given: an operator refunds it */
            self->conflicts++;
            bus_warn("posnode.canteen",
                     "%s: terminal %d declined tap %" PRId64 " offline before the answer came: "
                     "if it was charged (posctl card), refund it",
                     l->name, (int)t, seq);
        }
        return NULL;
    }
    return NULL;
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/*  The blocked cards that a terminal can hold (card numbers up to 2^32 - 1), sorted. */
static uint32_t *s_blocked(node_canteen_t *self, size_t *n)
{
    size_t cap = 64, pos = 0;
    uint32_t *v = malloc(cap * sizeof(*v));
    *n = 0;
    const char *card;
    while (v && (card = node_svcard_next_blocked(self->svcards, &pos)) && *n < S_BLOCKLIST_MAX) {
        char *end;
        unsigned long long x = strtoull(card, &end, 10);
        if (*end || card[0] < '0' || card[0] > '9' || x > UINT32_MAX || strlen(card) > 10)
            continue;
        if (*n == cap) {
            uint32_t *p = realloc(v, 2 * cap * sizeof(*v));
            if (!p) {
                free(v);
                return NULL;
            }
            v = p;
            cap *= 2;
        }
        v[(*n)++] = (uint32_t)x;
    }
    if (v)
        qsort(v, *n, sizeof(*v), s_cmp_u32);
    return v;
}

/*  Push the blocklist to line l when the register's version moved (or a full list is due). */
static void s_push_blocklist(node_canteen_t *self, s_line_t *l)
{
    int64_t version = node_svcard_since(self->svcards);
    if (version <= 0 || version > UINT32_MAX || (version == l->pushed && !l->full_due))
        return;
    size_t n = 0;
    uint32_t *now = s_blocked(self, &n);
    if (!now)
        return;
    bool full = l->full_due || l->pushed == 0;
    size_t cap = 64 + 12 * (n + (full ? 0 : l->ncards)), len = 0;
    char *data = malloc(cap);
    if (!data) {
        free(now);
        return;
    }
    len += (size_t)snprintf(data, cap, "%" PRId64 " %" PRId64 "%s", full ? 0 : l->pushed, version,
                            full ? " clear" : "");
    size_t i = 0, k = 0, ops = 0;
    while (i < n || (!full && k < l->ncards)) { /* merge: adds and removes */
        if (!full && k < l->ncards && (i == n || l->cards[k] < now[i])) {
            len += (size_t)snprintf(data + len, cap - len, " -%" PRIu32, l->cards[k++]);
            ops++;
        } else if (full || k == l->ncards || now[i] < l->cards[k]) {
            len += (size_t)snprintf(data + len, cap - len, " +%" PRIu32, now[i++]);
            ops++;
        } else {
            i++, k++; /* in both */
        }
    }
    if (full || ops > 0 || version != l->pushed) {
        if (s_submit(self, l, "blocklist", "blocklist", data) >= 0) {
            free(l->cards);
            l->cards = now;
            now = NULL;
            l->ncards = n;
            l->pushed = version;
            l->full_due = false;
            self->pushes++;
        }
    }
    free(now);
    free(data);
}

bus_val_t *node_canteen_tick(node_canteen_t *self, int64_t now_ms)
{
    bus_val_t *r = NULL;
    for (int i = 0; self && i < self->nlines; i++) {
        s_line_t *l = &self->lines[i];
        for (int t = 1; t <= S_TERMS; t++) {
            s_term_t *term = &l->terms[t];
            if (term->tap && !r)
                r = s_tap(self, l, t, now_ms);
            if (term->collect_ms && now_ms >= term->collect_ms && !term->collecting)
                s_collect(self, l, t, now_ms);
        }
        if (self->svcards)
            s_push_blocklist(self, l);
    }
    return r;
}

bus_val_t *node_canteen_stats(const node_canteen_t *self)
{
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_int(m, "taps", self->taps);
    bus_val_map_set_int(m, "approved", self->approved);
    bus_val_map_set_int(m, "declined", self->declined);
    bus_val_map_set_int(m, "left_to_terminal", self->left);
    bus_val_map_set_int(m, "offline_sold", self->offline_sold);
    bus_val_map_set_int(m, "duplicates", self->duplicates);
    bus_val_map_set_int(m, "conflicts", self->conflicts);
    bus_val_map_set_int(m, "blocklist_pushes", self->pushes);
    return m;
}
