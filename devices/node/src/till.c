/*  =========================================================================
    till.c - the register's till: the open ticket, the cashier, the journal

    Why it looks like this. The till runs on the register's main thread,
    between a person and the disk: every command is a few microseconds of
    libpos arithmetic and at most one journal append, so it answers at the
    cashier's pace whatever the network does. The only commands that reach
    the back office (park, recall, the original of a return) go through a
    hook with a short timeout and say "offline" instead of waiting.

    A permissioned action is journaled (its audit record fdatasync()ed)
    before it takes effect; if the journal cannot take the record, the
    action does not happen. The ticket itself is not journaled until it is
    paid: an open ticket lost in a crash is a ticket nobody paid for.
    =========================================================================
*/
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include <pos/receipt.h>
#include <pos/sale.h>

#include "node/journal.h"
#include "node/sale_doc.h"
#include "node/segment.h"
#include "node/till.h"

#define S_ARGS_MAX        12
#define S_RECEIPT_W       42
#define S_RECEIPT_MAX     16384
#define S_REASON_MAX      120  /* characters of a cash-in/out or no-sale reason */
#define S_OFFICE_TEXT_MAX 200  /* characters of a text the back office shows at the till */
#define S_COMMAND_KEY_MAX 64   /* bytes of a device command's idempotency key */
#define S_DONE_MAX        1000 /* device command keys remembered */
#define S_CARD_KEY_MAX    48   /* bytes of a card payment's key ("card-<sale>-<ms>") */
#define S_CARD_ASK_MS     5000 /* how often an unresolved card payment is asked about */
#define S_CARD_KEYS       64   /* card keys remembered as resolved, and as given up */
#define S_LOST_MAX        8    /* charges without a sale waiting to be taken back */
#define S_WALLET_ASK_MS   1000 /* how often the payments service is asked about a code payment */
#define S_WALLET_CODE_MAX 24   /* digits of a wallet payment code */
#define S_WALLET_GIVEN_UP "given up: cancelled when payments answers"
#define S_LOST_ASK_MS     5000 /* how often a charge without a sale is taken back */
#define S_SV_PENDING_MAX  256  /* offline card deductions waiting for their upload */
#define S_TAP_KEY_MAX     64   /* bytes of a canteen tap's key ("tap:<device>:<terminal>:<seq>") */
#define S_TAP_KEYS        1024 /* canteen taps sold, remembered (a tap comes again only soon) */
#define S_TAP_LINES       256  /* canteen terminals (device and address) with a collect cursor:
                                  8 lines of 32, node/canteen.h's bound */
#define S_SV_RETRY_MS     3000 /* payments unreachable: when the uploads and the pull try again */

/* An offline stored-value deduction waiting for its upload (card.offline), or an attempt to
   give up (card.void: gave_up), e.g. a card.pay that timed out and may still arrive. */
typedef struct {
    char card[NODE_SVCARD_ID_MAX + 1];
    int64_t sale_seq, attempt, amount, ts;
    bool gave_up;
} s_sv_pending_t;

#define S_SV_ONLINE_MAX 16 /* online card deductions remembered while the journal is read */
#define S_SV_GIVEUP_ROOM 16 /* pending slots offline deductions leave free for give-ups */

#define S_REFUND_PLAN_MAX  16 /* wallet refunds one return sale sends */
#define S_REFUND_QUEUE_MAX 64 /* wallet refunds journaled and not yet taken by payments */
#define S_RET_SALES_MAX    16 /* sales one return ticket returns from */
#define S_REFUND_RETRY_MS  3000

/* A refund of a return sale to a wallet payment of the sale it returns (payment.refund), or to
   a stored-value deduction of it (provider "sv": card.refund of card, of_sale and attempt). */
typedef struct {
    int64_t sale_seq; /* the return sale */
    char intent[48];
    char provider[8];
    char refund_no[POS_SALE_ID_MAX + 8];
    int64_t amount;
    char card[NODE_SVCARD_ID_MAX + 1];
    char of_sale[POS_SALE_ID_MAX + 1];
    int64_t attempt;
} s_refund_t;

/* The shift: what the X report shows, from the last Z report (or the first record) on. */
typedef struct {
    int64_t sales, returns, nosales;
    int64_t total, change, cash_rounding, cash_in, cash_out, voided_lines;
    int64_t tenders[POS_TENDER__COUNT];
    int64_t first_sale, last_sale; /* sale numbers in the shift; 0 = none */
    int64_t opened_ms;
    int64_t z_count; /* Z reports in this journal */
} s_shift_t;

struct node_till_t {
    char store[NODE_JOURNAL_ID_MAX + 1];
    char reg[NODE_JOURNAL_ID_MAX + 1];
    char *path;
    const node_key_t *key;
    node_journal_t *journal;
    node_session_t *session;
    node_till_hooks_t hooks;
    const node_catalog_t *catalog;
    node_config_t cfg; /* without cashiers: those live in the session */
    pos_ticket_t *ticket;
    bool member;
    int64_t next_qty;    /* `qty N`: the quantity of the next scan; 0 = 1 */
    int64_t discount_bp; /* the ticket discount as entered, re-applied on recompute */
    int64_t discount_amount;
    bool discount_approved; /* discount_over_cap was granted for the discount entered */
    bool pending; /* paid, but the journal refused the sale: `pay` retries */
    int64_t sale_seq;
    s_shift_t shift;
    bool stopped;
    char stopped_why[NODE_TILL_WHY_MAX];
    int64_t base;       /* the last sale before this journal segment (its continue mark) */
    uint64_t segment;   /* rotations in this process: the uplink reopens on a change */
    int retention_days; /* archives older than this (and acknowledged) are deleted */
    char **done_keys;   /* device commands carried out (journaled), oldest first: never twice */
    size_t ndone, capdone;
    char office_text[S_OFFICE_TEXT_MAX * 4 + 1]; /* the last text the back office showed */
    char office_key[S_COMMAND_KEY_MAX + 1];
    bus_val_t *last_doc; /* the last sale journaled, for its receipt */
    char last_hash[2 * NODE_JOURNAL_HASH_SIZE + 1];
    /* the card payment at the terminal (one at a time; key "" none): journaled as card_request
       before the terminal gets it, closed by a journaled card_result */
    struct {
        char key[S_CARD_KEY_MAX + 1];
        int64_t amount;     /* as the tender: negative for a refund paid out */
        int64_t sale_seq;   /* the sale it pays */
        int64_t trace_before;
        bool unknown;       /* the terminal's answer was lost: asked until it says */
        bool orphan;        /* its ticket is gone (a restart, given up): an approval is reversed */
        int64_t ask_ms;     /* when it is asked about next */
        char status[120];   /* the terminal's last intermediate status */
    } card;
    int64_t card_trace; /* the terminal's last trace number journaled, -1 unknown */
    int64_t card_since_eod; /* card tenders of the sales journaled since the terminal's last
                               end of day (card_eod record): what its totals must say */
    /* card keys whose result is journaled (a later result for one is the driver telling the
       same thing again: ignored) and keys given up (a later approval for one is reversed), the
       last S_CARD_KEYS of each, read back from the journal at start */
    char card_done[S_CARD_KEYS][S_CARD_KEY_MAX + 1];
    char card_given_up[S_CARD_KEYS][S_CARD_KEY_MAX + 1];
    int card_done_next, card_given_up_next;
    bool card_offline; /* the terminal's health is offline: its payment may be given up */
    /* charges whose ticket never became a sale (the till stopped after a tender was approved,
       or a code payment given up while payments could not be reached): each is reversed
       (card) or cancelled (code) until the journal says so; read back at start */
    struct {
        char kind; /* 'c' a card key, 'w' a code payment */
        char key[S_CARD_KEY_MAX + 1];
        int64_t sale_seq, attempt, amount, receipt;
        char provider[8];
        int64_t ask_ms;
    } lost[S_LOST_MAX];
    int nlost;
    /* the wallet payment code being paid through the payments service (one at a time;
       sale_seq 0 none): journaled as wallet_request before payment.pay, closed by a journaled
       wallet_result; the code itself is only kept in memory, to ask again after a timeout */
    struct {
        int64_t sale_seq, attempt, amount;
        char provider[8];
        char code[S_WALLET_CODE_MAX + 1];
        char intent[48];
        char state[16];
        bool asked;  /* payments answered payment.pay: from then on payment.get */
        bool orphan; /* its ticket is gone (a restart): a payment that succeeded is cancelled */
        bool cancel; /* the cashier gave it up: payment.cancel asked */
        int64_t ask_ms;
    } wallet;
    int64_t wallet_attempt_seq, wallet_attempt; /* the last attempt for that sale number */
    /* stored-value cards: card.pay online; offline, the register's own copy (svcards, borrowed;
       NULL: no offline use) decides and the deduction waits here, journaled as sv_offline,
       until card.offline took it (sv_uploaded); rebuilt from the journal at start */
    node_svcard_t *svcards;
    int64_t sv_blocklist_ms, sv_pull_ms, sv_upload_ms;
    bool sv_down; /* payments did not answer lately: `pay sv` decides offline at once until a
                     tick reaches it again (the cashier does not wait for a timeout per card) */
    int64_t sv_attempt_seq, sv_attempt; /* the last attempt for that sale number */
    s_sv_pending_t sv[S_SV_PENDING_MAX];
    s_sv_pending_t sv_online[S_SV_ONLINE_MAX]; /* replay only: online deductions taken */
    int nsv_online;
    s_sv_pending_t sv_asked; /* replay only: the last card.pay journaled with no result yet */
    int nsv;
    /* canteen terminals' taps sold (their keys, the last S_TAP_KEYS, carried into the next
       segment) and per terminal the last offline transaction sold (everything up to it is held
       here: the terminal may forget it); a tap's sale is sold once, however often it comes */
    char tap_done[S_TAP_KEYS][S_TAP_KEY_MAX + 1];
    int tap_done_next;
    struct {
        char line[S_TAP_KEY_MAX + 1]; /* "<device>:<terminal>" */
        int64_t held;
    } tap_cursor[S_TAP_LINES];
    int ntap_cursor;
    struct {                          /* replay: the tap whose sale comes next */
        char key[S_TAP_KEY_MAX + 1];
        int64_t sale_seq, held;       /* held: its offline seq, 0 online */
    } tap_replay;
    /* a tap charged (or deducted offline) whose sale the journal refused: given up before any
       other sale takes its number (sale_seq 0: none) */
    s_sv_pending_t tap_unsold;
    /* returns: refunds to the wallet payments the returned sales were paid with, planned on
       the open ticket (`pay refund`), journaled (refund_plan) before its sale and sent to
       payments (payment.refund) after it until payments answers (refund_done); read back
       from the journal at start */
    s_refund_t plan[S_REFUND_PLAN_MAX];
    int nplan;
    s_refund_t refunds[S_REFUND_QUEUE_MAX];
    int nrefunds;
    int64_t refund_ms;
    /* the open ticket's returned sales (sale.get): the cash each took net of change, and
       what it took by card; a payout in cash or by card beyond them (each capped at what the
       ticket returns of that sale) needs refund_cash. Offline returns (a supervisor approved
       them) are not capped. */
    struct {
        char id[POS_SALE_ID_MAX + 1];
        int64_t cash, card;
    } ret[S_RET_SALES_MAX];
    int nret;
    bool plan_commit;       /* s_commit writes the plan into the sale it journals */
    int64_t refunds_refused; /* refunds payments refused for good (journal): for an operator */
};

/* One command being answered. */
typedef struct {
    node_till_t *till;
    bus_val_t *reply;
    const char *cmd;
    char *argv[S_ARGS_MAX];
    int argc;
    const char *approver_id, *approver_pin;
} s_cmd_t;

/* ---- helpers ------------------------------------------------------------- */

static int64_t s_now(node_till_t *self)
{
    if (self->hooks.now_ms)
        return self->hooks.now_ms(self->hooks.arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int s_err(s_cmd_t *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_err(s_cmd_t *c, const char *code, const char *fmt, ...)
{
    char msg[NODE_TILL_WHY_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bus_val_map_set_bool(c->reply, "ok", false);
    bus_val_map_set_str(c->reply, "error", code);
    bus_val_map_set_str(c->reply, "message", msg);
    return -1;
}

static bool s_money(const char *text, bool negative_ok, int64_t *fen)
{
    return text && pos_money_parse(text, negative_ok, fen) == POS_OK && *fen <= POS_AMOUNT_MAX &&
           *fen >= -POS_AMOUNT_MAX;
}

static bool s_count(const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || v < lo || v > hi || text[0] == '+' || text[0] == ' ')
        return false;
    *out = v;
    return true;
}

/* The remaining words from argv[from] joined by spaces (a reason), into buf. */
static const char *s_rest(s_cmd_t *c, int from, char *buf, size_t size)
{
    buf[0] = '\0';
    size_t len = 0;
    for (int i = from; i < c->argc; i++) {
        int n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", c->argv[i]);
        if (n < 0 || (size_t)n >= size - len)
            break;
        len += (size_t)n;
    }
    return buf;
}

/* ---- the journal ----------------------------------------------------------- */

static int s_stop(node_till_t *self, const char *what)
{
    self->stopped = true;
    snprintf(self->stopped_why, sizeof(self->stopped_why),
             "selling stopped: %s: %s (free disk space or fix the disk; nothing was lost)", what,
             self->journal ? node_journal_errstr(self->journal) : "journal closed");
    return -1;
}

static void s_done_carry(const node_till_t *self, bus_val_t *mark);

/*  Open the journal; a new one (no record yet) that follows an archive gets its continue mark
    first, so sale numbers and the hash chain run on (also after a crash inside a rotation). */
static int s_open_journal(node_till_t *self, node_journal_status_t *st, char *why, size_t size)
{
    self->journal = node_journal_open(self->path, self->key, self->store, self->reg, st);
    if (!self->journal) {
        snprintf(why, size, "journal %s: %s", self->path, st->reason);
        return -1;
    }
    if (node_journal_last_seq(self->journal) > 0)
        return 0;
    char file[4096];
    int64_t first, last;
    int found = node_segment_newest(self->path, file, sizeof(file), &first, &last, why, size);
    if (found <= 0)
        return found;
    bus_val_t *mark =
        node_segment_continue(file, self->key, first, last, self->shift.z_count, why, size);
    if (mark)
        s_done_carry(self, mark);
    bus_buf_t buf = {0};
    int64_t rec = -1;
    if (mark && bus_val_encode(mark, &buf) == 0)
        rec = node_journal_append(self->journal, NODE_JOURNAL_MARK, buf.data, buf.len, s_now(self));
    bus_buf_free(&buf);
    bus_val_destroy(&mark);
    if (rec < 0) {
        if (!why[0])
            snprintf(why, size, "cannot start the journal after %s: %s", file,
                     node_journal_errstr(self->journal));
        node_journal_destroy(&self->journal);
        return -1;
    }
    self->base = self->sale_seq = last;
    return 0;
}

/*  Append one record; on a failure stop selling. After a failure that leaves the journal
    refusing appends (a failed sync), open it again: it re-reads and re-checks the file. */
static int64_t s_append(node_till_t *self, uint8_t kind, const bus_val_t *doc)
{
    bus_buf_t buf = {0};
    if (bus_val_encode(doc, &buf) != 0) {
        bus_buf_free(&buf);
        snprintf(self->stopped_why, sizeof(self->stopped_why), "out of memory");
        return -1;
    }
    if (!self->journal) {
        node_journal_status_t st;
        char why[NODE_TILL_WHY_MAX] = "";
        if (s_open_journal(self, &st, why, sizeof(why)) != 0) {
            bus_buf_free(&buf);
            self->stopped = true;
            snprintf(self->stopped_why, sizeof(self->stopped_why),
                     "selling stopped: the journal cannot be opened again: %s", why);
            return -1;
        }
        /* a sync that failed and a cut that failed too may have left the record whole on the
           disk: then it is in the journal now, and writing it again would number two records
           alike. The journal is the truth. */
        node_journal_entry_t e;
        uint64_t last = node_journal_last_seq(self->journal);
        if (kind == NODE_JOURNAL_SALE && last > 0 &&
            node_journal_read(self->journal, last, &e) == 0) {
            bus_limits_t limits = {.max_size = NODE_JOURNAL_PAYLOAD_MAX};
            bus_reject_t reason;
            bus_val_t *last_doc =
                e.kind == kind ? bus_val_decode(e.payload, e.size, &limits, &reason) : NULL;
            const char *a = bus_val_map_get_str(last_doc, "sale_id");
            const char *b = bus_val_map_get_str(doc, "sale_id");
            bool same = a && b && strcmp(a, b) == 0; /* the same sale (its time may differ) */
            bus_val_destroy(&last_doc);
            node_journal_entry_clear(&e);
            if (same) {
                bus_buf_free(&buf);
                self->stopped = false;
                self->stopped_why[0] = '\0';
                return (int64_t)last;
            }
        }
    }
    int64_t seq = node_journal_append(self->journal, kind, buf.data, buf.len, s_now(self));
    bus_buf_free(&buf);
    if (seq < 0) {
        s_stop(self, "the journal refused a record");
        if (node_journal_broken(self->journal))
            node_journal_destroy(&self->journal); /* opened again (and re-read) next time */
        return -1;
    }
    self->stopped = false;
    self->stopped_why[0] = '\0';
    return seq;
}

static void s_publish(node_till_t *self, const char *what, const char *type, bus_val_t **body_p)
{
    if (self->hooks.publish)
        self->hooks.publish(self->hooks.arg, what, type, body_p);
    bus_val_destroy(body_p);
}

/*  Journal an audit map (adding store, register, time), then publish it. 0 or -1 (not
    journaled: the caller must not go ahead). */
static int s_audit_record(node_till_t *self, bus_val_t **doc_p)
{
    bus_val_t *doc = *doc_p;
    bus_val_map_set_str(doc, "store", self->store);
    bus_val_map_set_str(doc, "register", self->reg);
    bus_val_map_set_int(doc, "ts", s_now(self));
    int64_t seq = s_append(self, NODE_JOURNAL_AUDIT, doc);
    if (seq < 0) {
        bus_val_destroy(doc_p);
        return -1;
    }
    bus_val_map_set_int(doc, "record", seq);
    s_publish(self, "audit", "node.audit", doc_p);
    return 0;
}

/* ---- the shift --------------------------------------------------------------- */

static void s_shift_sale(s_shift_t *sh, const bus_val_t *doc)
{
    const char *kind = bus_val_map_get_str(doc, "kind");
    int64_t seq = 0, v = 0;
    bus_val_map_get_int(doc, "seq", &seq);
    if (kind && strcmp(kind, "nosale") == 0)
        sh->nosales++;
    else if (kind && strcmp(kind, "return") == 0)
        sh->returns++;
    else
        sh->sales++;
    if (bus_val_map_get_int(doc, "total", &v))
        sh->total += v;
    if (bus_val_map_get_int(doc, "change", &v))
        sh->change += v;
    if (bus_val_map_get_int(doc, "cash_rounding", &v))
        sh->cash_rounding += v;
    bus_val_t *tenders = bus_val_map_get(doc, "tenders");
    for (size_t i = 0; i < bus_val_size(tenders); i++) {
        bus_val_t *t = bus_val_arr_get(tenders, i);
        int k = pos_tender_parse(bus_val_map_get_str(t, "kind"));
        if (k >= 0 && bus_val_map_get_int(t, "amount", &v))
            sh->tenders[k] += v;
    }
    bus_val_t *lines = bus_val_map_get(doc, "lines");
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        bool voided = false;
        if (bus_val_map_get_bool(bus_val_arr_get(lines, i), "voided", &voided) && voided)
            sh->voided_lines++;
    }
    if (!sh->first_sale)
        sh->first_sale = seq;
    sh->last_sale = seq;
}

/*  The card tenders of a sale document (fen; a refund's are negative). */
static int64_t s_card_tenders(const bus_val_t *doc)
{
    int64_t sum = 0, v = 0;
    bus_val_t *tenders = bus_val_map_get(doc, "tenders");
    for (size_t i = 0; i < bus_val_size(tenders); i++) {
        const bus_val_t *t = bus_val_arr_get(tenders, i);
        const char *kind = bus_val_map_get_str(t, "kind");
        if (kind && strcmp(kind, "card") == 0 && bus_val_map_get_int(t, "amount", &v))
            sum += v;
    }
    return sum;
}

static void s_shift_audit(s_shift_t *sh, const bus_val_t *doc)
{
    const char *type = bus_val_map_get_str(doc, "type");
    int64_t amount = 0;
    if (!type || !bus_val_map_get_int(doc, "amount", &amount))
        return;
    if (strcmp(type, "cash_in") == 0)
        sh->cash_in += amount;
    else if (strcmp(type, "cash_out") == 0)
        sh->cash_out += amount;
}

static bus_val_t *s_shift_val(const node_till_t *self)
{
    const s_shift_t *sh = &self->shift;
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_str(m, "store", self->store);
    bus_val_map_set_str(m, "register", self->reg);
    bus_val_map_set_int(m, "sales", sh->sales);
    bus_val_map_set_int(m, "returns", sh->returns);
    bus_val_map_set_int(m, "nosales", sh->nosales);
    bus_val_map_set_int(m, "total", sh->total);
    bus_val_map_set_int(m, "change", sh->change);
    bus_val_map_set_int(m, "cash_rounding", sh->cash_rounding);
    bus_val_map_set_int(m, "cash_in", sh->cash_in);
    bus_val_map_set_int(m, "cash_out", sh->cash_out);
    bus_val_map_set_int(m, "voided_lines", sh->voided_lines);
    bus_val_t *t = bus_val_new_map();
    for (int k = 0; k < POS_TENDER__COUNT; k++)
        if (sh->tenders[k])
            bus_val_map_set_int(t, pos_tender_name((pos_tender_kind_t)k), sh->tenders[k]);
    bus_val_map_set(m, "tenders", &t);
    /* what the drawer should hold: cash taken - change given + cash in - cash out */
    bus_val_map_set_int(m, "expected_cash",
                        sh->tenders[POS_TENDER_CASH] - sh->change + sh->cash_in - sh->cash_out);
    bus_val_map_set_int(m, "first_sale", sh->first_sale);
    bus_val_map_set_int(m, "last_sale", sh->last_sale);
    bus_val_map_set_int(m, "opened_ms", sh->opened_ms);
    bus_val_map_set_int(m, "z_count", sh->z_count);
    return m;
}

/* ---- device commands carried out ---------------------------------------------------------- */

static bool s_done(const node_till_t *self, const char *key)
{
    for (size_t i = 0; i < self->ndone; i++)
        if (strcmp(self->done_keys[i], key) == 0)
            return true;
    return false;
}

/*  Remember key (in the order carried out); past S_DONE_MAX keys the oldest is forgotten: the
    devices service keeps a done command's answer for 7 days, so only a command still pending
    there can come again, and that is a recent one. */
static int s_done_add(node_till_t *self, const char *key)
{
    if (s_done(self, key))
        return 0;
    char *copy = strdup(key);
    if (!copy)
        return -1;
    if (self->ndone == S_DONE_MAX) {
        free(self->done_keys[0]);
        memmove(self->done_keys, self->done_keys + 1, (S_DONE_MAX - 1) * sizeof(char *));
        self->ndone--;
    }
    if (self->ndone == self->capdone) {
        size_t cap = self->capdone ? self->capdone * 2 : 64;
        char **p = realloc(self->done_keys, cap * sizeof(*p));
        if (!p) {
            free(copy);
            return -1;
        }
        self->done_keys = p;
        self->capdone = cap;
    }
    self->done_keys[self->ndone++] = copy;
    return 0;
}

/*  The continue mark carries the keys into the next segment, so an archived journal does not
    make the till forget what it carried out. */
static void s_done_carry(const node_till_t *self, bus_val_t *mark)
{
    bus_val_t *keys = bus_val_new_arr();
    for (size_t i = 0; keys && i < self->ndone; i++) {
        bus_val_t *k = bus_val_new_str(self->done_keys[i]);
        bus_val_arr_push(keys, &k);
    }
    if (keys)
        bus_val_map_set(mark, "command_keys", &keys);
    bus_val_t *taps = bus_val_new_arr();
    for (int i = 0; taps && i < S_TAP_KEYS; i++) { /* oldest first */
        const char *k = self->tap_done[(self->tap_done_next + i) % S_TAP_KEYS];
        bus_val_t *v = k[0] ? bus_val_new_str(k) : NULL;
        if (v)
            bus_val_arr_push(taps, &v);
    }
    if (taps)
        bus_val_map_set(mark, "tap_keys", &taps);
    bus_val_t *held = bus_val_new_map();
    for (int i = 0; held && i < self->ntap_cursor; i++)
        bus_val_map_set_int(held, self->tap_cursor[i].line, self->tap_cursor[i].held);
    if (held)
        bus_val_map_set(mark, "tap_held", &held);
    bus_val_map_set_int(mark, "card_trace", self->card_trace);
    bus_val_map_set_int(mark, "card_since_eod", self->card_since_eod);
    /* the attempts made for the next sale number: a payment attempt is never made twice
       under one sale id and attempt, also across a Z */
    bus_val_map_set_int(mark, "sv_attempt_seq", self->sv_attempt_seq);
    bus_val_map_set_int(mark, "sv_attempt", self->sv_attempt);
    bus_val_map_set_int(mark, "wallet_attempt_seq", self->wallet_attempt_seq);
    bus_val_map_set_int(mark, "wallet_attempt", self->wallet_attempt);
}

static void s_tap_sold(node_till_t *self, const char *key, int64_t held);
static bool s_tap_sale_of(const char *key, const bus_val_t *doc);

static int s_done_load(node_till_t *self, const bus_val_t *mark)
{
    bus_val_t *taps = bus_val_map_get(mark, "tap_keys");
    for (size_t i = 0; i < bus_val_size(taps); i++) {
        const char *k = bus_val_get_str(bus_val_arr_get(taps, i), NULL);
        if (k && strlen(k) <= S_TAP_KEY_MAX)
            s_tap_sold(self, k, 0);
    }
    bus_val_t *held = bus_val_map_get(mark, "tap_held");
    for (size_t i = 0; i < bus_val_size(held); i++) {
        const char *line = bus_val_map_key(held, i);
        int64_t v = 0;
        if (line && bus_val_get_int(bus_val_map_value(held, i), &v)) {
            char key[S_TAP_KEY_MAX + 1];
            if (snprintf(key, sizeof(key), "tap:%s:%" PRId64, line, v) < (int)sizeof(key))
                s_tap_sold(self, key, v);
        }
    }
    bus_val_map_get_int(mark, "card_trace", &self->card_trace);
    bus_val_map_get_int(mark, "card_since_eod", &self->card_since_eod);
    bus_val_map_get_int(mark, "sv_attempt_seq", &self->sv_attempt_seq);
    bus_val_map_get_int(mark, "sv_attempt", &self->sv_attempt);
    bus_val_map_get_int(mark, "wallet_attempt_seq", &self->wallet_attempt_seq);
    bus_val_map_get_int(mark, "wallet_attempt", &self->wallet_attempt);
    bus_val_t *keys = bus_val_map_get(mark, "command_keys");
    for (size_t i = 0; i < bus_val_size(keys); i++) {
        const char *k = bus_val_get_str(bus_val_arr_get(keys, i), NULL);
        if (k && s_done_add(self, k) != 0)
            return -1;
    }
    return 0;
}

static void s_lost_add(node_till_t *self, char kind, const char *key, int64_t sale_seq,
                       int64_t attempt, int64_t amount, int64_t receipt, const char *provider)
{
    if (self->nlost == S_LOST_MAX)
        memmove(self->lost, self->lost + 1, (S_LOST_MAX - 1) * sizeof(self->lost[0]));
    int i = self->nlost < S_LOST_MAX ? self->nlost++ : S_LOST_MAX - 1;
    memset(&self->lost[i], 0, sizeof(self->lost[i]));
    self->lost[i].kind = kind;
    snprintf(self->lost[i].key, sizeof(self->lost[i].key), "%s", key ? key : "");
    self->lost[i].sale_seq = sale_seq;
    self->lost[i].attempt = attempt;
    self->lost[i].amount = amount;
    self->lost[i].receipt = receipt;
    snprintf(self->lost[i].provider, sizeof(self->lost[i].provider), "%s",
             provider ? provider : "");
}

/*  Drop the lost entries that match: kind 'c' by key, 'w' by sale and attempt, 0 every one of
    sale_seq (the sale was journaled: its tenders are in it). */
static void s_lost_drop(node_till_t *self, char kind, const char *key, int64_t sale_seq,
                        int64_t attempt)
{
    int k = 0;
    for (int i = 0; i < self->nlost; i++) {
        bool match = kind == 0   ? self->lost[i].sale_seq == sale_seq
                     : kind == 'c' ? self->lost[i].kind == 'c' && key &&
                                         strcmp(self->lost[i].key, key) == 0
                                   : self->lost[i].kind == 'w' &&
                                         self->lost[i].sale_seq == sale_seq &&
                                         self->lost[i].attempt == attempt;
        if (!match)
            self->lost[k++] = self->lost[i];
    }
    self->nlost = k;
}

static void s_card_remember(char (*ring)[S_CARD_KEY_MAX + 1], int *next, const char *key)
{
    snprintf(ring[*next], S_CARD_KEY_MAX + 1, "%s", key);
    *next = (*next + 1) % S_CARD_KEYS;
}

static bool s_card_in(char (*ring)[S_CARD_KEY_MAX + 1], const char *key)
{
    for (int i = 0; key && *key && i < S_CARD_KEYS; i++)
        if (strcmp(ring[i], key) == 0)
            return true;
    return false;
}

static void s_card_forget(char (*ring)[S_CARD_KEY_MAX + 1], const char *key)
{
    for (int i = 0; key && *key && i < S_CARD_KEYS; i++)
        if (strcmp(ring[i], key) == 0)
            ring[i][0] = '\0';
}

/*  A card_request or card_result read back: a request without its result is a payment whose
    answer never reached the till before it stopped. Its ticket is gone (open tickets are not
    journaled), so it is resolved by asking the terminal and reversed if it was charged. */
static void s_card_replay(node_till_t *self, const char *type, const bus_val_t *doc)
{
    const char *key = bus_val_map_get_str(doc, "key");
    int64_t v;
    if (!type || !key)
        return;
    if (strcmp(type, "card_request") == 0 && strlen(key) <= S_CARD_KEY_MAX) {
        memset(&self->card, 0, sizeof(self->card));
        snprintf(self->card.key, sizeof(self->card.key), "%s", key);
        bus_val_map_get_int(doc, "amount", &self->card.amount);
        bus_val_map_get_int(doc, "sale_seq", &self->card.sale_seq);
        self->card.trace_before = -1;
        bus_val_map_get_int(doc, "trace_before", &self->card.trace_before);
        self->card.unknown = self->card.orphan = true;
    } else if (strcmp(type, "card_result") == 0) {
        if (bus_val_map_get_int(doc, "trace", &v) && v >= 0)
            self->card_trace = v;
        const char *note = bus_val_map_get_str(doc, "note");
        bool ok = false;
        int64_t receipt = -1, amount = 0;
        bus_val_map_get_bool(doc, "ok", &ok);
        bus_val_map_get_int(doc, "receipt", &receipt);
        bus_val_map_get_int(doc, "amount", &amount);
        if (strcmp(key, self->card.key) == 0) {
            if (ok && !note && self->card.amount > 0) /* a tender, until its sale is journaled */
                s_lost_add(self, 'c', key, self->card.sale_seq, 0, amount, receipt, "card");
            memset(&self->card, 0, sizeof(self->card));
        }
        if (note && strcmp(note, "given up") == 0)
            s_card_remember(self->card_given_up, &self->card_given_up_next, key);
        else
            s_card_forget(self->card_given_up, key);
        s_card_remember(self->card_done, &self->card_done_next, key);
    } else if (strcmp(type, "card_eod") == 0) {
        self->card_since_eod = 0;
    } else if (strcmp(type, "card_reversal") == 0) {
        const char *of = bus_val_map_get_str(doc, "of");
        s_card_forget(self->card_given_up, of);
        s_lost_drop(self, 'c', of, 0, 0);
    }
}

/*  A wallet_request or wallet_result read back: the attempts made for a sale number, and a
    request without its result (the till stopped while it was paid: its ticket is gone). */
static void s_wallet_replay(node_till_t *self, const char *type, const bus_val_t *doc)
{
    int64_t seq = 0, attempt = 0;
    if (!type || !bus_val_map_get_int(doc, "sale_seq", &seq) ||
        !bus_val_map_get_int(doc, "attempt", &attempt))
        return;
    if (strcmp(type, "wallet_request") == 0) {
        memset(&self->wallet, 0, sizeof(self->wallet));
        self->wallet.sale_seq = seq;
        self->wallet.attempt = attempt;
        bus_val_map_get_int(doc, "amount", &self->wallet.amount);
        const char *p = bus_val_map_get_str(doc, "provider");
        snprintf(self->wallet.provider, sizeof(self->wallet.provider), "%s", p ? p : "wechat");
        snprintf(self->wallet.state, sizeof(self->wallet.state), "unknown");
        self->wallet.asked = self->wallet.orphan = true;
        self->wallet_attempt_seq = seq;
        self->wallet_attempt = attempt;
    } else if (strcmp(type, "wallet_result") == 0) {
        const char *state = bus_val_map_get_str(doc, "state");
        const char *note = bus_val_map_get_str(doc, "note");
        const char *provider = bus_val_map_get_str(doc, "provider");
        int64_t amount = 0;
        bus_val_map_get_int(doc, "amount", &amount);
        if (seq == self->wallet.sale_seq && attempt == self->wallet.attempt)
            memset(&self->wallet, 0, sizeof(self->wallet));
        s_lost_drop(self, 'w', NULL, seq, attempt);
        if ((state && strcmp(state, "succeeded") == 0 && !note) ||
            (note && strcmp(note, S_WALLET_GIVEN_UP) == 0))
            s_lost_add(self, 'w', NULL, seq, attempt, amount, -1, provider); /* until its sale,
                                                                         or its cancel */
    }
}

/*  Read the journal through: the last sale number, and the shift since the last Z. */
static void s_sv_replay(node_till_t *self, const char *type, const bus_val_t *doc);
static void s_sv_lost_tickets(node_till_t *self);
static void s_refund_replay(node_till_t *self, const char *type, const bus_val_t *doc);

static int s_replay(node_till_t *self, char *why, size_t size)
{
    uint64_t last = node_journal_last_seq(self->journal);
    bus_limits_t limits = {.max_size = NODE_JOURNAL_PAYLOAD_MAX};
    for (uint64_t seq = 1; seq <= last; seq++) {
        node_journal_entry_t e;
        if (node_journal_read(self->journal, seq, &e) != 0) {
            snprintf(why, size, "%s", node_journal_errstr(self->journal));
            return -1;
        }
        bus_reject_t reason;
        bus_val_t *doc = bus_val_decode(e.payload, e.size, &limits, &reason);
        if (!self->shift.opened_ms)
            self->shift.opened_ms = e.ts_ms;
        int64_t n = 0;
        if (e.kind == NODE_JOURNAL_SALE) {
            if (!doc || !bus_val_map_get_int(doc, "seq", &n) || n != self->sale_seq + 1) {
                snprintf(why, size, "journal record %" PRIu64 " is not sale %" PRId64, seq,
                         self->sale_seq + 1);
                bus_val_destroy(&doc);
                node_journal_entry_clear(&e);
                return -1;
            }
            self->sale_seq = n;
            s_shift_sale(&self->shift, doc);
            self->card_since_eod += s_card_tenders(doc);
            s_lost_drop(self, 0, NULL, n, 0);
            s_refund_replay(self, "sale", doc);
            if (self->tap_replay.key[0] && self->tap_replay.sale_seq == n &&
                s_tap_sale_of(self->tap_replay.key, doc))
                s_tap_sold(self, self->tap_replay.key, self->tap_replay.held);
            self->tap_replay.key[0] = '\0';
        } else if (e.kind == NODE_JOURNAL_AUDIT && doc) {
            s_shift_audit(&self->shift, doc);
            const char *type = bus_val_map_get_str(doc, "type");
            const char *key = bus_val_map_get_str(doc, "key");
            s_card_replay(self, type, doc);
            s_wallet_replay(self, type, doc);
            s_sv_replay(self, type, doc);
            s_refund_replay(self, type, doc);
            const char *tap = bus_val_map_get_str(doc, "tap");
            bool refused = false;
            if (type && (strcmp(type, "sv_voidreq") == 0 ||
                         (strcmp(type, "sv_result") == 0 &&
                          bus_val_map_get_bool(doc, "ok", &refused) && !refused)))
                self->tap_replay.key[0] = '\0'; /* that tap is not sold */
            if (tap && strlen(tap) <= S_TAP_KEY_MAX && type &&
                (strcmp(type, "sv_request") == 0 || strcmp(type, "sv_offline") == 0)) {
                snprintf(self->tap_replay.key, sizeof(self->tap_replay.key), "%s", tap);
                self->tap_replay.sale_seq = 0;
                self->tap_replay.held = 0;
                bus_val_map_get_int(doc, "sale_seq", &self->tap_replay.sale_seq);
                if (strcmp(type, "sv_offline") == 0)
                    bus_val_map_get_int(doc, "tap_seq", &self->tap_replay.held);
            }
            if (type && key && strcmp(type, "device_command") == 0 && s_done_add(self, key) != 0) {
                snprintf(why, size, "out of memory");
                bus_val_destroy(&doc);
                node_journal_entry_clear(&e);
                return -1;
            }
        } else if (e.kind == NODE_JOURNAL_MARK && doc &&
                   node_segment_is_continue(doc, &n, &self->shift.z_count)) {
            self->base = self->sale_seq = n;
            if (s_done_load(self, doc) != 0) {
                snprintf(why, size, "out of memory");
                bus_val_destroy(&doc);
                node_journal_entry_clear(&e);
                return -1;
            }
        } else if (e.kind == NODE_JOURNAL_MARK && doc) {
            const char *type = bus_val_map_get_str(doc, "type");
            if (type && strcmp(type, "z") == 0) {
                int64_t z = self->shift.z_count + 1;
                memset(&self->shift, 0, sizeof(self->shift));
                self->shift.z_count = z;
                self->shift.opened_ms = e.ts_ms;
            }
        }
        bus_val_destroy(&doc);
        node_journal_entry_clear(&e);
    }
    return 0;
}

/* ---- life cycle -------------------------------------------------------------- */

node_till_t *node_till_open(const char *journal_path, const node_key_t *key, const char *store,
                            const char *reg, node_session_t *session,
                            const node_till_hooks_t *hooks, char *why, size_t size)
{
    why[0] = '\0';
    node_till_t *self = calloc(1, sizeof(*self));
    if (!self || !(self->path = strdup(journal_path))) {
        free(self);
        snprintf(why, size, "out of memory");
        return NULL;
    }
    snprintf(self->store, sizeof(self->store), "%s", store);
    snprintf(self->reg, sizeof(self->reg), "%s", reg);
    self->key = key;
    self->session = session;
    if (hooks)
        self->hooks = *hooks;
    node_config_init(&self->cfg);
    node_journal_status_t st;
    if (s_open_journal(self, &st, why, size) != 0) {
        node_till_destroy(&self);
        return NULL;
    }
    self->sale_seq = self->base = 0; /* the replay sets them, continue mark included */
    self->card_trace = -1;
    char replay[NODE_TILL_WHY_MAX];
    if (s_replay(self, replay, sizeof(replay)) == 0) {
        int k = 0; /* a charge for a sale number already sold was in that sale */
        for (int i = 0; i < self->nlost; i++)
            if (self->lost[i].sale_seq > self->sale_seq)
                self->lost[k++] = self->lost[i];
        self->nlost = k;
        k = 0; /* refunds planned for a return whose sale was never written: never sent */
        for (int i = 0; i < self->nrefunds; i++)
            if (self->refunds[i].sale_seq <= self->sale_seq)
                self->refunds[k++] = self->refunds[i];
        self->nrefunds = k;
        s_sv_lost_tickets(self);
    } else {
        snprintf(why, size, "journal %s: %s", journal_path, replay);
        node_till_destroy(&self);
        return NULL;
    }
    if (st.torn_bytes)
        snprintf(why, size,
                 "journal %s: cut a torn last record (%" PRIu64 " bytes, kept in %s.torn): %s",
                 journal_path, st.torn_bytes, journal_path, st.reason);
    return self;
}

void node_till_destroy(node_till_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_till_t *self = *self_p;
    node_journal_destroy(&self->journal);
    pos_ticket_destroy(&self->ticket);
    bus_val_destroy(&self->last_doc);
    for (size_t i = 0; i < self->ndone; i++)
        free(self->done_keys[i]);
    free(self->done_keys);
    free(self->path);
    free(self);
    *self_p = NULL;
}

void node_till_set_catalog(node_till_t *self, const node_catalog_t *catalog)
{
    self->catalog = catalog;
}

int node_till_set_config(node_till_t *self, const node_config_t *cfg, char *why, size_t size)
{
    if (node_session_load(self->session, cfg->cashiers, cfg->ncashiers) != 0) {
        snprintf(why, size, "cashiers refused: %s", node_session_errstr(self->session));
        return -1;
    }
    self->cfg = *cfg;
    self->cfg.cashiers = NULL;
    self->cfg.ncashiers = 0;
    return 0;
}

void node_till_set_retention(node_till_t *self, int days)
{
    self->retention_days = days;
}

uint64_t node_till_segment(const node_till_t *self)
{
    return self->segment;
}

bus_val_t *node_till_sale_doc(node_till_t *self, int64_t k)
{
    if (k < 1 || k > self->sale_seq)
        return NULL;
    node_journal_entry_t e = {0};
    bus_limits_t limits = {.max_size = NODE_JOURNAL_PAYLOAD_MAX};
    bus_reject_t reason;
    if (k <= self->base) { /* in an archive */
        char why[200];
        if (node_segment_read_sale(self->path, self->key, k, &e, why, sizeof(why)) != 0)
            return NULL;
        bus_val_t *doc = bus_val_decode(e.payload, e.size, &limits, &reason);
        node_journal_entry_clear(&e);
        return doc;
    }
    /* the current segment: sale k is the (k - base)th sale record */
    int64_t n = self->base;
    for (uint64_t seq = 1; self->journal && seq <= node_journal_last_seq(self->journal); seq++) {
        if (node_journal_read(self->journal, seq, &e) != 0)
            return NULL;
        if (e.kind == NODE_JOURNAL_SALE && ++n == k) {
            bus_val_t *doc = bus_val_decode(e.payload, e.size, &limits, &reason);
            node_journal_entry_clear(&e);
            return doc;
        }
        node_journal_entry_clear(&e);
    }
    return NULL;
}

const bus_val_t *node_till_last_sale_doc(const node_till_t *self)
{
    return self->last_doc;
}

const char *node_till_last_sale_hash(const node_till_t *self)
{
    return self->last_doc ? self->last_hash : "";
}

const node_config_t *node_till_config(const node_till_t *self)
{
    return &self->cfg;
}

int64_t node_till_config_version(const node_till_t *self)
{
    return self->cfg.version;
}

uint64_t node_till_last_record(const node_till_t *self)
{
    return self->journal ? node_journal_last_seq(self->journal) : 0;
}

int64_t node_till_last_sale(const node_till_t *self)
{
    return self->sale_seq;
}

bool node_till_stopped(const node_till_t *self)
{
    return self->stopped;
}

const char *node_till_stopped_why(const node_till_t *self)
{
    return self->stopped_why;
}

/* ---- the ticket -------------------------------------------------------------- */

static pos_ticket_t *s_ticket(node_till_t *self)
{
    if (self->ticket)
        return self->ticket;
    pos_ticket_t *t = pos_ticket_new();
    if (!t)
        return NULL;
    pos_ticket_set_cash_rounding(t, self->cfg.cash_rounding);
    for (int i = 0; i < self->cfg.npromos; i++)
        pos_ticket_add_promo(t, &self->cfg.promos[i]);
    pos_ticket_set_member(t, self->member);
    self->ticket = t;
    return t;
}

static void s_ticket_close(node_till_t *self)
{
    pos_ticket_destroy(&self->ticket);
    self->member = false;
    self->next_qty = 0;
    self->discount_bp = self->discount_amount = 0;
    self->discount_approved = false;
    self->pending = false;
    self->nplan = 0;
    self->nret = 0;
}

static bool s_has_lines(node_till_t *self)
{
    return self->ticket && pos_ticket_line_count(self->ticket) > 0;
}

static pos_err_t s_compute(node_till_t *self)
{
    pos_ticket_set_time(self->ticket, s_now(self));
    pos_ticket_set_member(self->ticket, self->member);
    return pos_ticket_compute(self->ticket);
}

static bus_val_t *s_line_val(const pos_line_t *l, int n)
{
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_int(m, "n", n);
    bus_val_map_set_str(m, "sku", l->item.sku);
    bus_val_map_set_str(m, "name", l->item.name);
    bus_val_map_set_int(m, "qty", l->qty);
    bus_val_map_set_str(m, "unit", l->item.unit == POS_UNIT_KG ? "kg" : "pcs");
    bus_val_map_set_int(m, "unit_price", l->unit_price);
    bus_val_map_set_int(m, "gross", l->gross);
    bus_val_map_set_int(m, "promo_discount", l->promo_discount);
    if (l->promo_id[0])
        bus_val_map_set_str(m, "promo_id", l->promo_id);
    bus_val_map_set_int(m, "ticket_discount", l->ticket_discount);
    bus_val_map_set_int(m, "amount", l->amount);
    bus_val_map_set_int(m, "tax", l->tax);
    bus_val_map_set_bool(m, "voided", l->voided);
    if (l->is_return)
        bus_val_map_set_str(m, "return_of", l->return_of);
    return m;
}

static bus_val_t *s_ticket_val(node_till_t *self)
{
    pos_ticket_t *t = self->ticket;
    bus_val_t *m = bus_val_new_map();
    bus_val_t *lines = bus_val_new_arr();
    for (int i = 0; i < pos_ticket_line_count(t); i++) {
        bus_val_t *l = s_line_val(pos_ticket_line(t, i), i + 1);
        bus_val_arr_push(lines, &l);
    }
    bus_val_map_set(m, "lines", &lines);
    const pos_totals_t *tot = pos_ticket_totals(t);
    bus_val_map_set_int(m, "gross", tot->gross);
    bus_val_map_set_int(m, "promo_discounts", tot->promo_discounts);
    bus_val_map_set_int(m, "ticket_discount", tot->ticket_discount);
    bus_val_map_set_int(m, "returns", tot->returns);
    bus_val_map_set_int(m, "total", tot->total);
    bus_val_map_set_int(m, "cash_rounding", tot->cash_rounding);
    bus_val_map_set_int(m, "due", tot->due);
    bus_val_map_set_int(m, "paid", tot->paid);
    bus_val_map_set_int(m, "change", tot->change);
    bus_val_map_set_int(m, "items", tot->items);
    int64_t tax = 0;
    for (int i = 0; i < tot->tax.count; i++)
        tax += tot->tax.rows[i].tax;
    bus_val_map_set_int(m, "tax", tax);
    bus_val_map_set_int(m, "remaining", pos_ticket_remaining(t));
    bus_val_map_set_bool(m, "member", self->member);
    bus_val_t *tenders = bus_val_new_arr();
    for (int i = 0; i < pos_ticket_tender_count(t); i++) {
        bus_val_t *tv = bus_val_new_map();
        bus_val_map_set_str(tv, "kind", pos_tender_name(pos_ticket_tender(t, i)->kind));
        bus_val_map_set_int(tv, "amount", pos_ticket_tender(t, i)->amount);
        bus_val_arr_push(tenders, &tv);
    }
    bus_val_map_set(m, "tenders", &tenders);
    return m;
}

/*  The item of a catalog entry as the ticket sells it now: the configuration's member price
    for its SKU, when one is active, replaces the catalog's. */
static void s_item(node_till_t *self, const node_catalog_item_t *ci, pos_item_t *out)
{
    node_catalog_to_pos(ci, out);
    int64_t member = node_config_member_price(&self->cfg, ci->sku, s_now(self));
    if (member > 0)
        out->member_price = member;
}

static bool s_need_cashier(s_cmd_t *c)
{
    if (node_session_cashier(c->till->session))
        return true;
    s_err(c, "login_required", "log in first: login ID PIN");
    return false;
}

static bool s_can_sell(s_cmd_t *c)
{
    if (!s_need_cashier(c))
        return false;
    if (c->till->stopped) {
        s_err(c, "stopped", "%s", c->till->stopped_why);
        return false;
    }
    if (c->till->ticket && pos_ticket_tender_count(c->till->ticket) > 0) {
        s_err(c, "tendering", "payment has started: finish it with pay");
        return false;
    }
    if (c->till->card.key[0] && !c->till->card.orphan) {
        s_err(c, "card_waiting", "the card terminal has the payment: wait for its answer");
        return false;
    }
    if (c->till->wallet.sale_seq && !c->till->wallet.orphan) {
        s_err(c, "wallet_waiting", "the payment code is being paid: wait for the answer");
        return false;
    }
    return true;
}

/*  Ask for action's permission (with the command's approver, if any); journal the decision.
    true: go ahead. ctx (taken, may be NULL) adds keys to the audit record. */
static bool s_authorize(s_cmd_t *c, node_action_t action, bus_val_t *ctx)
{
    node_till_t *self = c->till;
    node_audit_t audit;
    int rc = node_session_authorize(self->session, action, c->approver_id, c->approver_pin, &audit);
    int e = errno;
    bus_val_t *doc = node_audit_val(&audit);
    for (size_t i = 0; doc && ctx && i < bus_val_size(ctx); i++) {
        bus_val_t *v = bus_val_dup(bus_val_map_value(ctx, i));
        bus_val_map_set(doc, bus_val_map_key(ctx, i), &v);
    }
    bus_val_destroy(&ctx);
    if (!doc || s_audit_record(self, &doc) != 0) {
        s_err(c, "stopped", "%s", self->stopped_why);
        return false;
    }
    if (audit.approver_id[0]) {
        bus_val_map_set_str(c->reply, "approved_by", audit.approver_id);
    }
    if (rc != 0) {
        s_err(c, e == EAGAIN ? "locked" : "not_permitted", "%s: %s", node_action_name(action),
              audit.reason[0] ? audit.reason : node_session_errstr(self->session));
        return false;
    }
    return true;
}

/* ---- commands ---------------------------------------------------------------- */

static int s_cmd_login(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc != 2)
        return s_err(c, "usage", "login ID PIN");
    int rc = node_session_login(self->session, c->argv[0], c->argv[1]);
    int e = errno;
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "login");
    /* an id that is no cashier's is not recorded: it may be a PIN typed in the wrong place */
    bus_val_map_set_str(doc, "cashier", rc != 0 && e == ENOENT ? "?" : c->argv[0]);
    bus_val_map_set_bool(doc, "ok", rc == 0);
    if (rc != 0)
        bus_val_map_set_str(doc, "reason", node_session_errstr(self->session));
    if (s_audit_record(self, &doc) != 0) {
        if (rc == 0)
            node_session_logout(self->session);
        return s_err(c, "stopped", "%s", self->stopped_why);
    }
    if (rc != 0)
        return s_err(c, e == EAGAIN ? "locked" : "login_failed", "%s",
                     node_session_errstr(self->session));
    return 0;
}

static int s_cmd_logout(s_cmd_t *c)
{
    node_till_t *self = c->till;
    const node_cashier_t *who = node_session_cashier(self->session);
    if (!who)
        return s_err(c, "login_required", "nobody is logged in");
    if (s_has_lines(self))
        return s_err(c, "ticket_open", "finish, park or cancel the ticket first");
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "logout");
    bus_val_map_set_str(doc, "cashier", who->id);
    if (s_audit_record(self, &doc) != 0)
        return s_err(c, "stopped", "%s", self->stopped_why);
    node_session_logout(self->session);
    return 0;
}

static int s_add_line(s_cmd_t *c, const pos_item_t *item, int64_t qty)
{
    node_till_t *self = c->till;
    pos_ticket_t *t = s_ticket(self);
    int index = -1;
    pos_err_t e = t ? pos_ticket_add_line(t, item, qty, &index) : POS_ELIMIT;
    if (e == POS_OK)
        e = s_compute(self);
    if (e != POS_OK) {
        if (index >= 0) {
            pos_ticket_void_line(t, index);
            s_compute(self);
        }
        return s_err(c, "refused", "cannot add %s: %s", item->sku, pos_strerror(e));
    }
    self->next_qty = 0;
    bus_val_map_set_int(c->reply, "line", index + 1);
    return 0;
}

static const node_catalog_item_t *s_lookup(s_cmd_t *c, const char *code, node_catalog_code_t *what)
{
    const node_catalog_item_t *ci =
        c->till->catalog ? node_catalog_lookup(c->till->catalog, code, what) : NULL;
    if (!ci) {
        s_err(c, "unknown_code", "no item with code %s", code);
        return NULL;
    }
    if (!ci->active) {
        s_err(c, "not_for_sale", "%s (%s) is delisted", ci->sku, ci->name);
        return NULL;
    }
    return ci;
}

static int s_cmd_scan(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc < 1 || c->argc > 2)
        return s_err(c, "usage", "scan CODE [QTY]");
    if (!s_can_sell(c))
        return -1;
    int64_t qty = self->next_qty ? self->next_qty : 1;
    if (c->argc == 2 && !s_count(c->argv[1], 1, POS_QTY_MAX, &qty))
        return s_err(c, "bad_quantity", "quantity: a whole number 1..%d", POS_QTY_MAX);
    node_catalog_code_t what;
    const node_catalog_item_t *ci = s_lookup(c, c->argv[0], &what);
    if (!ci)
        return -1;
    pos_item_t item;
    s_item(self, ci, &item);
    if (what.kind == NODE_CATALOG_LABEL_WEIGHT) {
        if (item.unit != POS_UNIT_KG)
            return s_err(c, "bad_label", "%s is sold by the piece, not by weight", ci->sku);
        qty = what.value; /* grams */
        if (qty < 1 || qty > POS_QTY_MAX)
            return s_err(c, "bad_label", "label weight %" PRId64 " g out of range", qty);
    } else if (what.kind == NODE_CATALOG_LABEL_PRICE) {
        /* a price label: one line at the printed price (sales flags it if it differs) */
        item.unit = POS_UNIT_PCS;
        item.price = what.value;
        item.member_price = 0;
        qty = 1;
    } else if (item.unit == POS_UNIT_KG) {
        return s_err(c, "weigh_required", "%s is sold by weight: weigh %s GRAMS", ci->sku,
                     c->argv[0]);
    }
    return s_add_line(c, &item, qty);
}

static int s_cmd_qty(s_cmd_t *c)
{
    int64_t qty;
    if (c->argc != 1 || !s_count(c->argv[0], 1, POS_QTY_MAX, &qty))
        return s_err(c, "usage", "qty N (1..%d): the quantity of the next scan", POS_QTY_MAX);
    if (!s_can_sell(c))
        return -1;
    c->till->next_qty = qty;
    bus_val_map_set_int(c->reply, "next_qty", qty);
    return 0;
}

static int s_cmd_weigh(s_cmd_t *c)
{
    int64_t grams;
    if (c->argc != 2 || !s_count(c->argv[1], 1, POS_QTY_MAX, &grams))
        return s_err(c, "usage", "weigh CODE GRAMS (1..%d)", POS_QTY_MAX);
    if (!s_can_sell(c))
        return -1;
    node_catalog_code_t what;
    const node_catalog_item_t *ci = s_lookup(c, c->argv[0], &what);
    if (!ci)
        return -1;
    pos_item_t item;
    s_item(c->till, ci, &item);
    if (item.unit != POS_UNIT_KG || what.kind != NODE_CATALOG_PLAIN)
        return s_err(c, "not_weighed", "%s is not sold by weight", ci->sku);
    return s_add_line(c, &item, grams);
}

/* A line number from the command (1-based), or -1 with the error set. */
static int s_line_arg(s_cmd_t *c, const char *text)
{
    int64_t n;
    int count = c->till->ticket ? pos_ticket_line_count(c->till->ticket) : 0;
    if (!s_count(text, 1, count, &n)) {
        s_err(c, "bad_line", "no line %s on the ticket", text);
        return -1;
    }
    const pos_line_t *l = pos_ticket_line(c->till->ticket, (int)n - 1);
    if (l->voided) {
        s_err(c, "bad_line", "line %s is voided already", text);
        return -1;
    }
    return (int)n - 1;
}

static bus_val_t *s_ctx_line(node_till_t *self, int index)
{
    const pos_line_t *l = pos_ticket_line(self->ticket, index);
    bus_val_t *ctx = bus_val_new_map();
    bus_val_map_set_int(ctx, "line", index + 1);
    bus_val_map_set_str(ctx, "sku", l->item.sku);
    bus_val_map_set_int(ctx, "qty", l->qty);
    bus_val_map_set_int(ctx, "amount", l->amount);
    bus_val_map_set_int(ctx, "sale_seq", self->sale_seq + 1);
    return ctx;
}

static int s_cmd_void(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc != 1)
        return s_err(c, "usage", "void LINE [approve ID PIN]");
    if (!s_can_sell(c))
        return -1;
    int index = s_line_arg(c, c->argv[0]);
    if (index < 0 || !s_authorize(c, NODE_ACTION_VOID_LINE, s_ctx_line(self, index)))
        return -1;
    pos_ticket_void_line(self->ticket, index);
    s_compute(self);
    return 0;
}

static int s_cmd_cancel(s_cmd_t *c)
{
    node_till_t *self = c->till;
    bool planned_only = self->ticket && self->nplan &&
                        pos_ticket_tender_count(self->ticket) == self->nplan;
    if (planned_only && !s_need_cashier(c)) /* planned refunds only: nothing was sent yet */
        return -1;
    if (!planned_only && !s_can_sell(c))
        return -1;
    if (!self->ticket)
        return s_err(c, "no_ticket", "no ticket is open");
    if (pos_ticket_totals(self->ticket)->items > 0) {
        bus_val_t *ctx = bus_val_new_map();
        bus_val_map_set_str(ctx, "what", "cancel_ticket");
        bus_val_map_set_int(ctx, "total", pos_ticket_totals(self->ticket)->total);
        bus_val_map_set_int(ctx, "sale_seq", self->sale_seq + 1);
        if (!s_authorize(c, NODE_ACTION_VOID_LINE, ctx))
            return -1;
    }
    s_ticket_close(self);
    return 0;
}

static int s_apply_discount(node_till_t *self)
{
    pos_err_t e = self->discount_amount
                      ? pos_ticket_set_discount_amount(self->ticket, self->discount_amount)
                      : pos_ticket_set_discount_percent(self->ticket, (int)self->discount_bp);
    return e == POS_OK ? s_compute(self) : e;
}

/*  What a ticket discount applies to: the items after their promotions. */
static int64_t s_discount_base(const node_till_t *self)
{
    const pos_totals_t *tot = pos_ticket_totals(self->ticket);
    return tot->gross - tot->promo_discounts;
}

/*  Whether a discount of bp basis points, or of amount fen on base, is above the store's cap. */
static bool s_over_cap(const node_till_t *self, int64_t bp, int64_t amount, int64_t base)
{
    return bp > self->cfg.discount_cap_bp ||
           (amount > 0 && (__int128)amount * 10000 > (__int128)self->cfg.discount_cap_bp * base);
}

static bus_val_t *s_ctx_discount(const node_till_t *self, int64_t bp, int64_t amount)
{
    bus_val_t *ctx = bus_val_new_map();
    bus_val_map_set_int(ctx, "percent_bp", bp);
    bus_val_map_set_int(ctx, "amount", amount);
    bus_val_map_set_int(ctx, "base", s_discount_base(self));
    bus_val_map_set_int(ctx, "cap_bp", self->cfg.discount_cap_bp);
    bus_val_map_set_int(ctx, "sale_seq", self->sale_seq + 1);
    return ctx;
}

static int s_cmd_discount(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc != 1)
        return s_err(c, "usage", "discount PERCENT%% | AMOUNT [approve ID PIN]");
    if (!s_can_sell(c))
        return -1;
    if (!s_has_lines(self))
        return s_err(c, "no_ticket", "no ticket is open");
    char *arg = c->argv[0];
    size_t len = strlen(arg);
    int64_t bp = 0, amount = 0;
    int64_t base = s_discount_base(self);
    if (len > 1 && arg[len - 1] == '%') {
        arg[len - 1] = '\0';
        /* percent with up to two decimals is basis points: parse it as money */
        if (!s_money(arg, false, &bp) || bp > 10000)
            return s_err(c, "bad_discount", "percent: 0..100 with at most two decimals");
    } else if (!s_money(arg, false, &amount) || amount > base) {
        char most[32];
        return s_err(c, "bad_discount", "amount: 0.00 to %s yuan (what the items come to)",
                     pos_money_format(base, most, sizeof(most)));
    }
    bool over = s_over_cap(self, bp, amount, base);
    if (over && !s_authorize(c, NODE_ACTION_DISCOUNT_OVER_CAP, s_ctx_discount(self, bp, amount)))
        return -1;
    int64_t old_bp = self->discount_bp, old_amount = self->discount_amount;
    self->discount_bp = bp;
    self->discount_amount = amount;
    if (s_apply_discount(self) != POS_OK) {
        self->discount_bp = old_bp;
        self->discount_amount = old_amount;
        s_apply_discount(self);
        return s_err(c, "bad_discount", "the ticket refuses that discount");
    }
    self->discount_approved = over;
    return 0;
}

static int s_cmd_price(s_cmd_t *c)
{
    node_till_t *self = c->till;
    int64_t price;
    if (c->argc != 2)
        return s_err(c, "usage", "price LINE AMOUNT [approve ID PIN]");
    if (!s_can_sell(c))
        return -1;
    int index = s_line_arg(c, c->argv[0]);
    if (index < 0)
        return -1;
    if (!s_money(c->argv[1], false, &price))
        return s_err(c, "bad_price", "price: an amount in yuan");
    const pos_line_t *l = pos_ticket_line(self->ticket, index);
    if (l->is_return)
        return s_err(c, "bad_line", "a return line keeps its refund price");
    bus_val_t *ctx = s_ctx_line(self, index);
    bus_val_map_set_int(ctx, "old_price", l->item.price);
    bus_val_map_set_int(ctx, "new_price", price);
    if (!s_authorize(c, NODE_ACTION_PRICE_OVERRIDE, ctx))
        return -1;
    pos_item_t item = l->item;
    int64_t qty = l->qty;
    item.price = price;
    item.member_price = 0;
    if (s_add_line(c, &item, qty) != 0)
        return -1; /* the old line stays as it was */
    pos_ticket_void_line(self->ticket, index);
    s_compute(self);
    return 0;
}

static int s_cmd_member(s_cmd_t *c)
{
    node_till_t *self = c->till;
    /* anything but on or off is refused: a typo must not switch member prices on */
    if (c->argc > 1 ||
        (c->argc == 1 && strcmp(c->argv[0], "on") != 0 && strcmp(c->argv[0], "off") != 0))
        return s_err(c, "usage", "member [on|off]");
    if (!s_can_sell(c))
        return -1;
    bool was = self->member;
    self->member = !(c->argc == 1 && strcmp(c->argv[0], "off") == 0);
    if (!self->ticket)
        return 0;
    s_compute(self);
    /* member prices lower what the items come to: a discount amount within the cap before may
       be above it now, which is the cap's permission again */
    if (self->discount_amount > 0 && !self->discount_approved &&
        s_over_cap(self, 0, self->discount_amount, s_discount_base(self))) {
        if (!s_authorize(c, NODE_ACTION_DISCOUNT_OVER_CAP,
                         s_ctx_discount(self, 0, self->discount_amount))) {
            self->member = was;
            s_compute(self);
            return -1;
        }
        self->discount_approved = true;
    }
    return 0;
}

/* ---- completing a sale --------------------------------------------------------- */

static void s_receipt(node_till_t *self, const char *sale_id, const node_cashier_t *who,
                      bus_val_t *reply)
{
    pos_receipt_header_t h;
    memset(&h, 0, sizeof(h));
    snprintf(h.store_name, sizeof(h.store_name), "%s",
             self->cfg.nheader ? self->cfg.header[0] : self->store);
    if (self->cfg.nheader > 1)
        snprintf(h.store_address, sizeof(h.store_address), "%s", self->cfg.header[1]);
    snprintf(h.register_id, sizeof(h.register_id), "%s", self->reg);
    snprintf(h.cashier, sizeof(h.cashier), "%s", who ? who->name : "");
    snprintf(h.sale_id, sizeof(h.sale_id), "%s", sale_id);
    time_t now = (time_t)(s_now(self) / 1000);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(h.business_day, sizeof(h.business_day), "%Y-%m-%d", &tm);
    strftime(h.time, sizeof(h.time), "%Y-%m-%d %H:%M:%S", &tm);
    if (self->cfg.nfooter)
        snprintf(h.footer, sizeof(h.footer), "%s", self->cfg.footer[0]);
    pos_receipt_t *r = pos_receipt_new(&h, self->ticket);
    char *buf = malloc(S_RECEIPT_MAX);
    if (r && buf && pos_receipt_render(r, S_RECEIPT_W, buf, S_RECEIPT_MAX) >= 0)
        bus_val_map_set_str(reply, "receipt", buf);
    free(buf);
    pos_receipt_destroy(&r);
}

/*  Journal a finished sale (ticket paid, or a no-sale) as sale number sale_seq + 1. */
static int s_tap_give_up_unsold(node_till_t *self);
static bus_val_t *s_refund_val(node_till_t *self, int64_t sale_seq);

static int s_commit(s_cmd_t *c, pos_sale_t *sale)
{
    node_till_t *self = c->till;
    char why[POS_WHY_MAX];
    if (s_tap_give_up_unsold(self) != 0) /* a tap's charge must not count as this sale */
        return s_err(c, "stopped", "%s", self->stopped_why);
    if (pos_sale_check(sale, why, sizeof(why)) != POS_OK)
        return s_err(c, "bad_sale", "the sale does not add up: %s", why);
    bus_val_t *doc = node_sale_doc(sale);
    if (!doc)
        return s_err(c, "internal", "out of memory");
    if (self->plan_commit && self->nplan) { /* one record: the refunds exist iff the sale does */
        bus_val_t *refunds = s_refund_val(self, sale->seq);
        if (!refunds || bus_val_map_set(doc, "refunds", &refunds) != 0) {
            bus_val_destroy(&doc);
            return s_err(c, "internal", "out of memory");
        }
    }
    int64_t rec = s_append(self, NODE_JOURNAL_SALE, doc);
    if (rec < 0) {
        bus_val_destroy(&doc);
        return s_err(c, "stopped", "%s", self->stopped_why);
    }
    self->sale_seq = sale->seq;
    s_shift_sale(&self->shift, doc);
    self->card_since_eod += s_card_tenders(doc);
    bus_val_destroy(&self->last_doc);
    self->last_doc = doc;
    const uint8_t *h = node_journal_last_hash(self->journal);
    for (int i = 0; i < NODE_JOURNAL_HASH_SIZE; i++)
        snprintf(self->last_hash + 2 * i, 3, "%02x", h[i]);
    bus_val_map_set_str(c->reply, "sale_id", sale->sale_id);
    bus_val_map_set_int(c->reply, "sale_seq", sale->seq);
    bus_val_map_set_int(c->reply, "record", rec);
    return 0;
}

static void s_refund_queue(node_till_t *self);
static int s_refund_send(node_till_t *self);
static bus_val_t *s_request(s_cmd_t *c, const char *service, const char *method, bus_val_t *body,
                            bool *offline, bool quiet_offline);

static int s_complete(s_cmd_t *c)
{
    node_till_t *self = c->till;
    const node_cashier_t *who = node_session_cashier(self->session);
    pos_sale_t sale;
    pos_sale_init(&sale);
    if (pos_sale_from_ticket(&sale, self->ticket, self->store, self->reg, self->sale_seq + 1,
                             who->id, s_now(self)) != POS_OK) {
        pos_sale_clear(&sale);
        return s_err(c, "internal", "cannot build the sale");
    }
    self->plan_commit = true; /* the planned refunds go into the sale's own record */
    int rc = s_commit(c, &sale);
    self->plan_commit = false;
    if (rc == 0) {
        s_refund_queue(self); /* sent to payments from the next tick */
        bus_val_map_set_int(c->reply, "change", pos_ticket_totals(self->ticket)->change);
        for (int i = 0; i < pos_ticket_tender_count(self->ticket); i++)
            if (pos_ticket_tender(self->ticket, i)->kind == POS_TENDER_CASH)
                bus_val_map_set_bool(c->reply, "drawer_open", true); /* cash goes in (or out) */
        s_receipt(self, sale.sale_id, who, c->reply);
        s_ticket_close(self);
    } else {
        self->pending = true;
    }
    pos_sale_clear(&sale);
    return rc;
}

/* ---- card payments at the terminal -------------------------------------------------- */

static void s_state(node_till_t *self, bus_val_t *reply);

/*  Whether the register has a card terminal (the card hook says so). */
static bool s_card_terminal(node_till_t *self)
{
    return self->hooks.card && self->hooks.card(self->hooks.arg, NULL, NULL, NULL, NULL, 0) > 0;
}

/*  The job data for the terminal: the amount (unsigned) and the last trace number known. */
static void s_card_data(int64_t amount, int64_t trace, char *data, size_t size)
{
    if (trace >= 0)
        snprintf(data, size, "%" PRId64 " %" PRId64, amount < 0 ? -amount : amount, trace);
    else
        snprintf(data, size, "%" PRId64, amount < 0 ? -amount : amount);
}

/*  Journal a terminal's outcome for key (a card_result audit record). 0 or -1 (not journaled:
    the payment stays unresolved and is asked about again). */
static int s_card_record(node_till_t *self, const char *key, const bus_val_t *result,
                         const char *note)
{
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "card_result");
    bus_val_map_set_str(doc, "key", key);
    static const char *const copy[] = {"verb", "ok", "amount", "trace", "receipt",
                                       "result_code", "text", "resolved"};
    for (size_t i = 0; result && i < sizeof(copy) / sizeof(copy[0]); i++) {
        const bus_val_t *v = bus_val_map_get(result, copy[i]);
        if (v) {
            bus_val_t *d = bus_val_dup(v);
            bus_val_map_set(doc, copy[i], &d);
        }
    }
    if (!result)
        bus_val_map_set_bool(doc, "ok", false);
    if (note)
        bus_val_map_set_str(doc, "note", note);
    if (s_audit_record(self, &doc) != 0)
        return -1;
    if (note && strcmp(note, "given up") == 0)
        s_card_remember(self->card_given_up, &self->card_given_up_next, key);
    else
        s_card_forget(self->card_given_up, key);
    s_card_remember(self->card_done, &self->card_done_next, key);
    return 0;
}

/*  A charge whose ticket is gone: reverse it (06 30 with the terminal's receipt number),
    journaled first as a card_reversal record. Says what happened in reply's message; 0 when the
    reversal went to the terminal. */
static int s_card_reverse(node_till_t *self, const char *key, const bus_val_t *result,
                           bus_val_t *reply)
{
    int64_t receipt = -1, amount = 0;
    bus_val_map_get_int(result, "receipt", &receipt);
    bus_val_map_get_int(result, "amount", &amount);
    char msg[NODE_TILL_WHY_MAX], rkey[NODE_TILL_WHY_MAX], data[24], err[NODE_TILL_WHY_MAX] = "";
    snprintf(rkey, sizeof(rkey), "%s-rev", key);
    snprintf(data, sizeof(data), "%" PRId64, receipt);
    bool sent = false;
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "card_reversal");
    bus_val_map_set_str(doc, "key", rkey);
    bus_val_map_set_str(doc, "of", key);
    bus_val_map_set_int(doc, "amount", amount);
    bus_val_map_set_int(doc, "receipt", receipt);
    if (receipt < 0) {
        snprintf(msg, sizeof(msg),
                 "card payment %s (%" PRId64 " fen) was charged but has no sale and no receipt "
                 "number: reverse it at the terminal",
                 key, amount);
    } else if (s_audit_record(self, &doc) != 0) {
        snprintf(msg, sizeof(msg), "card payment %s was charged but has no sale; %s", key,
                 self->stopped_why);
    } else {
        s_card_forget(self->card_given_up, key); /* its reversal is journaled: once */
        if (!self->hooks.card ||
            self->hooks.card(self->hooks.arg, "reversal", rkey, data, err, sizeof(err)) <= 0)
            snprintf(msg, sizeof(msg),
                     "card payment %s was charged but has no sale; the reversal was not sent "
                     "(%s): reverse receipt %" PRId64 " at the terminal",
                     key, err, receipt);
        else {
            sent = true;
            snprintf(msg, sizeof(msg),
                     "card payment %s (%" PRId64 " fen) was charged but its ticket is gone: "
                     "reversing it",
                     key, amount);
        }
    }
    bus_val_destroy(&doc);
    bus_val_map_set_str(reply, "message", msg);
    return sent ? 0 : -1;
}

/*  An approved card payment or refund becomes the ticket's tender: of the amount the terminal
    says it approved (its status information), which is not always the amount asked. Less than
    asked (a partial approval) is booked as it is and the rest stays due; more than asked, none,
    or an amount the ticket cannot take is reversed when it was a payment, and left to a manager
    when it was a refund (the terminal's end of day shows the difference). */
static void s_card_book(s_cmd_t *c, const char *key, const bus_val_t *body, int64_t asked)
{
    node_till_t *self = c->till;
    int64_t told = 0, booked = asked;
    if (bus_val_map_get_int(body, "amount", &told) && told >= 0)
        booked = asked < 0 ? -told : told;
    bool fits = booked != 0 && (asked < 0 ? booked >= asked : booked <= asked);
    char a[32], b[32], msg[NODE_TILL_WHY_MAX];
    pos_money_format(booked < 0 ? -booked : booked, a, sizeof(a));
    pos_money_format(asked < 0 ? -asked : asked, b, sizeof(b));
    if (!self->ticket || !fits ||
        pos_ticket_add_tender(self->ticket, POS_TENDER_CARD, booked) != POS_OK) {
        if (asked > 0) {
            bus_val_t *scratch = bus_val_new_map();
            if (s_card_reverse(self, key, body, scratch) == 0)
                snprintf(msg, sizeof(msg), "the terminal approved %s of the %s asked, which the "
                         "ticket cannot take: reversing it; take the tender again", a, b);
            else
                snprintf(msg, sizeof(msg), "the terminal approved %s of the %s asked, which the "
                         "ticket cannot take: %s", a, b,
                         bus_val_map_get_str(scratch, "message"));
            bus_val_destroy(&scratch);
            s_err(c, "card_amount", "%s", msg);
        } else {
            snprintf(msg, sizeof(msg), "the terminal refunded %s of the %s asked and the ticket "
                     "cannot take it: tell a manager", a, b);
            s_err(c, "card_amount", "%s", msg);
        }
        return;
    }
    if (booked != asked)
        snprintf(msg, sizeof(msg), "card %s only %s of %s: the rest is still due",
                 asked > 0 ? "approved" : "refunded", a, b);
    else
        snprintf(msg, sizeof(msg), "card approved");
    bus_val_map_set_str(c->reply, "message", msg);
    if (pos_ticket_is_paid(self->ticket) && node_session_cashier(self->session))
        s_complete(c);
}

static int s_card_start(s_cmd_t *c, int64_t amount)
{
    node_till_t *self = c->till;
    int64_t remaining = pos_ticket_remaining_for(self->ticket, POS_TENDER_CARD);
    if ((amount > 0 && amount > remaining) || (amount < 0 && amount < remaining))
        return s_err(c, "bad_amount", "a card pays at most what is still due");
    pos_err_t fit = pos_ticket_check_tender(self->ticket, POS_TENDER_CARD, amount);
    if (fit != POS_OK) /* before the terminal hears of it: no money moves for a refused amount */
        return s_err(c, "bad_amount", "%s", pos_strerror(fit));
    const char *verb = amount > 0 ? "authorize" : "refund";
    char key[S_CARD_KEY_MAX + 1], data[48], err[NODE_TILL_WHY_MAX] = "";
    snprintf(key, sizeof(key), "card-%" PRId64 "-%" PRId64, self->sale_seq + 1, s_now(self));
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "card_request");
    bus_val_map_set_str(doc, "key", key);
    bus_val_map_set_str(doc, "verb", verb);
    bus_val_map_set_int(doc, "amount", amount);
    bus_val_map_set_int(doc, "sale_seq", self->sale_seq + 1);
    bus_val_map_set_int(doc, "trace_before", self->card_trace);
    if (s_audit_record(self, &doc) != 0) /* journaled before the terminal hears of it */
        return s_err(c, "stopped", "%s", self->stopped_why);
    memset(&self->card, 0, sizeof(self->card));
    snprintf(self->card.key, sizeof(self->card.key), "%s", key);
    self->card.amount = amount;
    self->card.sale_seq = self->sale_seq + 1;
    self->card.trace_before = self->card_trace;
    s_card_data(amount, self->card_trace, data, sizeof(data));
    if (self->hooks.card(self->hooks.arg, verb, key, data, err, sizeof(err)) <= 0) {
        s_card_record(self, key, NULL, err); /* never reached the terminal */
        memset(&self->card, 0, sizeof(self->card));
        return s_err(c, "card_failed", "card terminal: %s", err);
    }
    bus_val_map_set_str(c->reply, "message", "card: follow the terminal");
    return 0;
}

bus_val_t *node_till_card_event(node_till_t *self, const char *event, const bus_val_t *body)
{
    const char *key = bus_val_map_get_str(body, "key");
    const char *verb = bus_val_map_get_str(body, "verb");
    const char *text = bus_val_map_get_str(body, "text");
    bool live = self->card.key[0] && !self->card.orphan;
    if (strcmp(event, "status") == 0) { /* the terminal's health */
        const char *health = bus_val_map_get_str(body, "health");
        self->card_offline = health && strcmp(health, "offline") == 0;
        return NULL;
    }
    if (strcmp(event, "intermediate") == 0 && !live)
        return NULL;
    if (strcmp(event, "result") == 0 && (!key || !verb))
        return NULL;
    if (strcmp(event, "intermediate") != 0 && strcmp(event, "result") != 0)
        return NULL;
    bus_val_t *reply = bus_val_new_map();
    s_cmd_t c = {.till = self, .reply = reply, .cmd = "card"};
    bus_val_map_set_bool(reply, "ok", true);
    bus_val_map_set_str(reply, "cmd", "card");
    char msg[NODE_TILL_WHY_MAX];
    bool ok = false, unknown = false;
    bus_val_map_get_bool(body, "ok", &ok);
    bus_val_map_get_bool(body, "unknown", &unknown);
    int64_t trace = -1;
    if (strcmp(event, "result") == 0 && bus_val_map_get_int(body, "trace", &trace) && trace >= 0)
        self->card_trace = trace; /* journaled with the result below, as the replay reads it */
    if (strcmp(event, "intermediate") == 0) {
        snprintf(self->card.status, sizeof(self->card.status), "%s", text ? text : "");
        snprintf(msg, sizeof(msg), "card terminal: %s", text ? text : "?");
        bus_val_map_set_str(reply, "message", msg);
    } else if (strcmp(verb, "reversal") == 0) {
        if (s_card_record(self, key, body, NULL) != 0)
            s_err(&c, "stopped", "%s", self->stopped_why);
        snprintf(msg, sizeof(msg), "card reversal %s: %s", key,
                 ok ? "done" : (text ? text : "failed: reverse it at the terminal"));
        bus_val_map_set_str(reply, "message", msg);
    } else if (strcmp(verb, "end_of_day") == 0) {
        /* the terminal's totals since its last end of day against the card tenders journaled
           since then (whoever asked for it: the cashier's card-eod or the back office) */
        int64_t total = 0;
        bool has_total = bus_val_map_get_int(body, "amount", &total);
        bus_val_t *doc = bus_val_new_map();
        bus_val_map_set_str(doc, "type", "card_eod");
        bus_val_map_set_str(doc, "key", key);
        bus_val_map_set_bool(doc, "ok", ok);
        bus_val_map_set_int(doc, "recorded_total", self->card_since_eod);
        if (has_total) {
            bus_val_map_set_int(doc, "terminal_total", total);
            bus_val_map_set_int(doc, "difference", total - self->card_since_eod);
        }
        int64_t recorded = self->card_since_eod;
        if (!ok) {
            bus_val_destroy(&doc);
            snprintf(msg, sizeof(msg), "card end of day failed: %s", text ? text : "?");
            s_err(&c, "card_eod_failed", "%s", msg);
        } else if (s_audit_record(self, &doc) != 0) {
            s_err(&c, "stopped", "%s", self->stopped_why);
        } else {
            self->card_since_eod = 0;
            char a[32], b[32];
            if (!has_total)
                snprintf(msg, sizeof(msg),
                         "card end of day done; the terminal gave no total (recorded %s)",
                         pos_money_format(recorded, a, sizeof(a)));
            else if (total == recorded)
                snprintf(msg, sizeof(msg), "card end of day: the terminal's %s matches the card "
                         "tenders", pos_money_format(total, a, sizeof(a)));
            else
                snprintf(msg, sizeof(msg), "card end of day: the terminal says %s, the card "
                         "tenders %s: tell a manager", pos_money_format(total, a, sizeof(a)),
                         pos_money_format(recorded, b, sizeof(b)));
            bus_val_map_set_str(reply, "message", msg);
            bus_val_map_set_bool(reply, "card_eod_matches", has_total && total == recorded);
        }
    } else if ((strcmp(verb, "authorize") != 0 && strcmp(verb, "refund") != 0) ||
               strncmp(key, "card-", 5) != 0) {
        bus_val_destroy(&reply); /* not the till's (an end of day from the back office) */
        return NULL;
    } else if (strcmp(key, self->card.key) != 0) {
        /* not the payment at the terminal. Only the approval of one given up (card-cancel)
           means anything: charged, it has no ticket. Any other is the driver telling a result
           the till journaled already (a status enquiry answered twice): ignored. */
        if (!ok || unknown || !s_card_in(self->card_given_up, key)) {
            bus_val_destroy(&reply);
            return NULL;
        }
        if (s_card_record(self, key, body, "approved after it was given up") != 0)
            s_err(&c, "stopped", "%s", self->stopped_why);
        else if (strcmp(verb, "authorize") == 0)
            s_card_reverse(self, key, body, reply);
    } else if (unknown) {
        self->card.unknown = true;
        self->card.ask_ms = s_now(self) + 1000;
        bus_val_map_set_str(reply, "message",
                            "card: the terminal's answer was lost; asking it (never charged twice)");
    } else if (s_card_in(self->card_done, key)) {
        bus_val_destroy(&reply); /* told again: journaled and acted on already */
        return NULL;
    } else if (s_card_record(self, key, body, self->card.orphan ? "its ticket is gone" : NULL) !=
               0) {
        self->card.unknown = true; /* asked again; the record is written then */
        self->card.ask_ms = s_now(self) + S_CARD_ASK_MS;
        s_err(&c, "stopped", "%s", self->stopped_why);
    } else {
        bool orphan = self->card.orphan;
        int64_t amount = self->card.amount, trace_before = self->card.trace_before;
        memset(&self->card, 0, sizeof(self->card));
        if (ok && orphan && amount > 0 && trace_before < 0) {
            /* with no trace number known before it, "the terminal's last transaction is of
               this amount" may be someone else's: not reversed blindly */
            snprintf(msg, sizeof(msg),
                     "card payment %s may have been charged before the restart (the terminal's "
                     "last transaction is of its amount): check the terminal's journal and "
                     "reverse it there if it was",
                     key);
            bus_val_map_set_str(reply, "message", msg);
        } else if (ok && orphan && amount > 0) {
            s_card_reverse(self, key, body, reply);
        } else if (ok && orphan) {
            snprintf(msg, sizeof(msg),
                     "card refund %s was paid out but its return is gone: tell a manager", key);
            bus_val_map_set_str(reply, "message", msg);
        } else if (orphan) {
            snprintf(msg, sizeof(msg), "card payment %s from before the restart was not charged",
                     key);
            bus_val_map_set_str(reply, "message", msg);
        } else if (!ok) {
            snprintf(msg, sizeof(msg), "card %s: %s; take another tender",
                     strcmp(verb, "refund") == 0 ? "refund failed" : "declined",
                     text ? text : "no reason");
            s_err(&c, "card_declined", "%s", msg);
        } else {
            s_card_book(&c, key, body, amount);
        }
    }
    s_state(self, reply);
    return reply;
}

void node_till_card_tick(node_till_t *self)
{
    int64_t now = s_now(self);
    if (!self->card.key[0] || !self->card.unknown || now < self->card.ask_ms || !self->hooks.card)
        return;
    self->card.ask_ms = now + S_CARD_ASK_MS;
    char data[48], err[NODE_TILL_WHY_MAX];
    s_card_data(self->card.amount, self->card.trace_before, data, sizeof(data));
    self->hooks.card(self->hooks.arg, "status", self->card.key, data, err, sizeof(err));
}

/*  card-eod: the terminal's end of day (its totals are compared when they come back). */
static int s_cmd_card_eod(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (!s_need_cashier(c))
        return -1;
    if (!s_card_terminal(self))
        return s_err(c, "no_terminal", "this register has no card terminal");
    if (self->card.key[0])
        return s_err(c, "card_waiting", "a card payment is at the terminal: finish it first");
    if (!s_authorize(c, NODE_ACTION_Z_REPORT, NULL))
        return -1;
    char key[S_CARD_KEY_MAX + 1], err[NODE_TILL_WHY_MAX] = "";
    snprintf(key, sizeof(key), "eod-%" PRId64, s_now(self));
    if (self->hooks.card(self->hooks.arg, "end_of_day", key, "", err, sizeof(err)) <= 0)
        return s_err(c, "card_failed", "card terminal: %s", err);
    bus_val_map_set_str(c->reply, "message", "card end of day: the terminal is at it");
    return 0;
}

/*  card-status: ask the terminal now about the payment it has. */
static int s_cmd_card_status(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (!self->card.key[0])
        return s_err(c, "no_card", "no card payment is at the terminal");
    if (!self->card.unknown)
        return 0; /* the terminal is still at it: its status is in the answer */
    self->card.ask_ms = 0;
    node_till_card_tick(self);
    bus_val_map_set_str(c->reply, "message", "asking the terminal");
    return 0;
}

/*  card-cancel: give up a card payment whose answer does not come (a supervisor's decision).
    If the terminal says later that it charged it, the charge is reversed. */
static int s_cmd_card_cancel(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (!s_need_cashier(c))
        return -1;
    if (!self->card.key[0])
        return s_err(c, "no_card", "no card payment is at the terminal");
    if (!self->card.unknown && !self->card_offline && s_card_terminal(self))
        return s_err(c, "card_waiting",
                     "the terminal is still at it: cancel on the terminal, or wait");
    bus_val_t *ctx = bus_val_new_map();
    bus_val_map_set_str(ctx, "what", "card_cancel");
    bus_val_map_set_str(ctx, "key", self->card.key);
    bus_val_map_set_int(ctx, "amount", self->card.amount);
    if (!s_authorize(c, NODE_ACTION_VOID_LINE, ctx))
        return -1;
    if (s_card_record(self, self->card.key, NULL, "given up") != 0)
        return s_err(c, "stopped", "%s", self->stopped_why);
    memset(&self->card, 0, sizeof(self->card));
    bus_val_map_set_str(c->reply, "message",
                        "card payment given up: if the terminal charged it, it is reversed");
    return 0;
}

/* ---- wallet payment codes through the payments service -------------------------------- */

/*  The provider of a payment code (docs/payments.md): WeChat 18 digits from 10-15, Alipay
    16-24 digits from 25-30; NULL for anything else. */
const char *node_till_code_provider(const char *code)
{
    size_t n = code ? strlen(code) : 0;
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

static void s_wallet_clear(node_till_t *self)
{
    OPENSSL_cleanse(&self->wallet, sizeof(self->wallet));
    memset(&self->wallet, 0, sizeof(self->wallet));
}

/*  Journal the end of the wallet payment (a wallet_result audit record). 0 or -1. */
static int s_wallet_record_of(node_till_t *self, int64_t sale_seq, int64_t attempt,
                              int64_t amount, const char *provider, const bus_val_t *intent,
                              const char *note)
{
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "wallet_result");
    bus_val_map_set_int(doc, "sale_seq", sale_seq);
    bus_val_map_set_int(doc, "attempt", attempt);
    bus_val_map_set_int(doc, "amount", amount);
    bus_val_map_set_str(doc, "provider", provider);
    static const char *const copy[] = {"intent", "state", "reason", "transaction_id"};
    for (size_t i = 0; intent && i < sizeof(copy) / sizeof(copy[0]); i++) {
        const char *v = bus_val_map_get_str(intent, copy[i]);
        if (v)
            bus_val_map_set_str(doc, copy[i], v);
    }
    if (note)
        bus_val_map_set_str(doc, "note", note);
    return s_audit_record(self, &doc);
}

static int s_wallet_record(node_till_t *self, const bus_val_t *intent, const char *note)
{
    return s_wallet_record_of(self, self->wallet.sale_seq, self->wallet.attempt,
                              self->wallet.amount, self->wallet.provider, intent, note);
}

/*  Ask the payments service: payment.pay until it answered once, then payment.get (or
    payment.cancel when the payment is given up). The intent, or NULL with err and *refused:
    true when payments answered with a refusal (not a timeout, not `unavailable`). */
static bus_val_t *s_wallet_ask(node_till_t *self, const char *method, char *err, size_t size,
                               bool *refused)
{
    *refused = false;
    if (!self->hooks.request) {
        snprintf(err, size, "no back office");
        return NULL;
    }
    char sale_id[POS_SALE_ID_MAX + 1];
    pos_sale_make_id(sale_id, sizeof(sale_id), self->store, self->reg, self->wallet.sale_seq);
    bus_val_t *body = bus_val_new_map();
    if (strcmp(method, "payment.pay") == 0) {
        bus_val_map_set_str(body, "sale_id", sale_id);
        bus_val_map_set_int(body, "attempt", self->wallet.attempt);
        bus_val_map_set_int(body, "amount", self->wallet.amount);
        bus_val_map_set_str(body, "code", self->wallet.code);
    } else if (self->wallet.intent[0]) {
        bus_val_map_set_str(body, "intent", self->wallet.intent);
    } else {
        bus_val_map_set_str(body, "sale_id", sale_id);
        bus_val_map_set_int(body, "attempt", self->wallet.attempt);
    }
    bool offline = false;
    bus_val_t *r = self->hooks.request(self->hooks.arg, "payments", method, &body, &offline, err,
                                       size);
    bus_val_destroy(&body);
    *refused = !r && !offline && strncmp(err, "unavailable", 11) != 0;
    if (r) {
        const char *intent = bus_val_map_get_str(r, "intent");
        const char *state = bus_val_map_get_str(r, "state");
        if (intent)
            snprintf(self->wallet.intent, sizeof(self->wallet.intent), "%s", intent);
        if (state)
            snprintf(self->wallet.state, sizeof(self->wallet.state), "%s", state);
        self->wallet.asked = true;
        OPENSSL_cleanse(self->wallet.code, sizeof(self->wallet.code)); /* taken: not needed */
    }
    return r;
}

/*  What an answer of the payments service means for the till: a final state is journaled and
    acted on (succeeded: the tender, and the sale when paid; failed or reversed: another
    tender; succeeded for a ticket that is gone: cancelled, i.e. reversed). Fills reply. */
static void s_wallet_answer(s_cmd_t *c, const bus_val_t *intent)
{
    node_till_t *self = c->till;
    bool final = false;
    bus_val_map_get_bool(intent, "final", &final);
    const char *state = bus_val_map_get_str(intent, "state");
    const char *reason = bus_val_map_get_str(intent, "reason");
    char msg[NODE_TILL_WHY_MAX];
    if (!final || !state) {
        snprintf(msg, sizeof(msg), "%s: %s", self->wallet.provider,
                 reason && *reason ? reason : "waiting for the customer");
        bus_val_map_set_str(c->reply, "message", msg);
        return;
    }
    bool paid = strcmp(state, "succeeded") == 0;
    if (paid && (self->wallet.orphan || self->wallet.cancel)) {
        /* paid for a ticket that is gone or given up: the money goes back */
        char err[NODE_TILL_WHY_MAX] = "";
        bool refused;
        self->wallet.cancel = true;
        bus_val_t *r = s_wallet_ask(self, "payment.cancel", err, sizeof(err), &refused);
        bus_val_destroy(&r);
        snprintf(msg, sizeof(msg), "%s payment %s was paid but its ticket is gone: reversing it",
                 self->wallet.provider, self->wallet.intent);
        bus_val_map_set_str(c->reply, "message", msg);
        self->wallet.ask_ms = s_now(self) + S_WALLET_ASK_MS;
        return;
    }
    if (s_wallet_record(self, intent, self->wallet.orphan ? "its ticket is gone" : NULL) != 0) {
        s_err(c, "stopped", "%s", self->stopped_why); /* asked again: written then */
        self->wallet.ask_ms = s_now(self) + S_WALLET_ASK_MS;
        return;
    }
    bool orphan = self->wallet.orphan || self->wallet.cancel;
    int kind = pos_tender_parse(self->wallet.provider);
    int64_t amount = self->wallet.amount;
    s_wallet_clear(self);
    if (orphan) {
        snprintf(msg, sizeof(msg), "the code payment given up is %s", state);
        bus_val_map_set_str(c->reply, "message", msg);
    } else if (!paid) {
        s_err(c, "wallet_declined", "not paid (%s): %s; scan the code again or take another tender",
              state, reason ? reason : "");
    } else if (kind < 0 || !self->ticket ||
               pos_ticket_add_tender(self->ticket, (pos_tender_kind_t)kind, amount) != POS_OK) {
        s_err(c, "internal", "paid but the ticket took no tender: tell a manager");
    } else {
        bus_val_map_set_str(c->reply, "message", "paid");
        if (pos_ticket_is_paid(self->ticket) && node_session_cashier(self->session))
            s_complete(c);
    }
}

/*  pay code CODE [AMOUNT]: the customer's WeChat or Alipay payment code, through payments. */
static int s_wallet_start(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc < 2 || c->argc > 3)
        return s_err(c, "usage", "pay code CODE [AMOUNT]");
    if (self->stopped)
        return s_err(c, "stopped", "%s", self->stopped_why);
    if (!s_has_lines(self))
        return s_err(c, "no_ticket", "no ticket is open");
    if (self->wallet.sale_seq || self->card.key[0])
        return s_err(c, "wallet_waiting", "a payment is already under way: wait for its answer");
    const char *code = c->argv[1];
    const char *provider = node_till_code_provider(code);
    if (!provider)
        return s_err(c, "bad_code",
                     "not a payment code: WeChat codes are 18 digits from 10-15, Alipay codes "
                     "16-24 digits from 25-30");
    /* a code pays to the fen: cash rounding is for the cash part only */
    int64_t remaining = pos_ticket_remaining_for(self->ticket, pos_tender_parse(provider));
    int64_t amount = remaining;
    if (c->argc == 3 && !s_money(c->argv[2], false, &amount))
        return s_err(c, "bad_amount", "amount: yuan with at most two decimals");
    if (amount <= 0 || amount > remaining)
        return s_err(c, "bad_amount", "a code pays from 0.01 up to what is still due");
    pos_err_t fit =
        pos_ticket_check_tender(self->ticket, (pos_tender_kind_t)pos_tender_parse(provider), amount);
    if (fit != POS_OK) /* before payments charges anything */
        return s_err(c, "bad_amount", "%s", pos_strerror(fit));
    int64_t seq = self->sale_seq + 1;
    int64_t attempt = self->wallet_attempt_seq == seq ? self->wallet_attempt + 1 : 1;
    if (attempt > 99)
        return s_err(c, "bad_amount", "99 attempts for one sale: take another tender");
    char masked[S_WALLET_CODE_MAX + 1];
    size_t n = strlen(code);
    snprintf(masked, sizeof(masked), "%.4s%.*s%s", code, (int)(n - 8), "****************",
             code + n - 4);
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "wallet_request");
    bus_val_map_set_int(doc, "sale_seq", seq);
    bus_val_map_set_int(doc, "attempt", attempt);
    bus_val_map_set_int(doc, "amount", amount);
    bus_val_map_set_str(doc, "provider", provider);
    bus_val_map_set_str(doc, "code", masked);
    if (s_audit_record(self, &doc) != 0) /* journaled before the back office hears of it */
        return s_err(c, "stopped", "%s", self->stopped_why);
    s_wallet_clear(self);
    self->wallet.sale_seq = seq;
    self->wallet.attempt = attempt;
    self->wallet.amount = amount;
    self->wallet_attempt_seq = seq;
    self->wallet_attempt = attempt;
    snprintf(self->wallet.provider, sizeof(self->wallet.provider), "%s", provider);
    snprintf(self->wallet.code, sizeof(self->wallet.code), "%s", code);
    snprintf(self->wallet.state, sizeof(self->wallet.state), "created");
    char err[NODE_TILL_WHY_MAX] = "";
    bool refused;
    bus_val_t *r = s_wallet_ask(self, "payment.pay", err, sizeof(err), &refused);
    self->wallet.ask_ms = s_now(self) + S_WALLET_ASK_MS;
    if (!r && !refused) {
        /* not reached, or no answer in time: it may have arrived; asked again (the same
           request is the same payment) */
        bus_val_map_set_str(c->reply, "message", "the payment is on its way: waiting for it");
        return 0;
    }
    if (!r) { /* refused: nothing was charged */
        s_wallet_record(self, NULL, err);
        s_wallet_clear(self);
        return s_err(c, "wallet_refused", "%s", err);
    }
    s_wallet_answer(c, r);
    bus_val_destroy(&r);
    return bus_val_map_get(c->reply, "error") ? -1 : 0;
}

/*  Take back the first due charge without a sale: a card charge is reversed at the terminal
    (journaled as card_reversal), a code payment cancelled through payments until its intent is
    final (journaled as a wallet_result). The answer to show, or NULL. */
static bus_val_t *s_lost_tick(node_till_t *self)
{
    int64_t now = s_now(self);
    for (int i = 0; i < self->nlost; i++) {
        if (now < self->lost[i].ask_ms)
            continue;
        self->lost[i].ask_ms = now + S_LOST_ASK_MS;
        bus_val_t *reply = bus_val_new_map();
        bus_val_map_set_bool(reply, "ok", true);
        bus_val_map_set_str(reply, "cmd", "pay");
        char key[S_CARD_KEY_MAX + 1];
        snprintf(key, sizeof(key), "%s", self->lost[i].key);
        if (self->lost[i].kind == 'c') {
            if (!s_card_terminal(self)) {
                bus_val_destroy(&reply);
                continue;
            }
            bus_val_t *result = bus_val_new_map();
            bus_val_map_set_int(result, "receipt", self->lost[i].receipt);
            bus_val_map_set_int(result, "amount", self->lost[i].amount);
            s_lost_drop(self, 'c', key, 0, 0);
            s_card_reverse(self, key, result, reply); /* journaled: once */
            bus_val_destroy(&result);
        } else {
            char sale_id[POS_SALE_ID_MAX + 1], err[NODE_TILL_WHY_MAX] = "", msg[NODE_TILL_WHY_MAX];
            pos_sale_make_id(sale_id, sizeof(sale_id), self->store, self->reg,
                             self->lost[i].sale_seq);
            bus_val_t *body = bus_val_new_map();
            bus_val_map_set_str(body, "sale_id", sale_id);
            bus_val_map_set_int(body, "attempt", self->lost[i].attempt);
            bool offline = false, final = false;
            bus_val_t *r = self->hooks.request
                               ? self->hooks.request(self->hooks.arg, "payments",
                                                     "payment.cancel", &body, &offline, err,
                                                     sizeof(err))
                               : NULL;
            bus_val_destroy(&body);
            bus_val_map_get_bool(r, "final", &final);
            const char *state = bus_val_map_get_str(r, "state");
            if (!r || !final || !state ||
                s_wallet_record_of(self, self->lost[i].sale_seq, self->lost[i].attempt,
                                   self->lost[i].amount, self->lost[i].provider, r,
                                   "its ticket was lost: cancelled") != 0) {
                bus_val_destroy(&r);
                bus_val_destroy(&reply);
                continue; /* asked again */
            }
            snprintf(msg, sizeof(msg), "the code payment of sale %s (attempt %" PRId64
                     ") whose ticket was lost is %s", sale_id, self->lost[i].attempt, state);
            bus_val_map_set_str(reply, "message", msg);
            s_lost_drop(self, 'w', NULL, self->lost[i].sale_seq, self->lost[i].attempt);
            bus_val_destroy(&r);
        }
        s_state(self, reply);
        return reply;
    }
    return NULL;
}

bus_val_t *node_till_wallet_tick(node_till_t *self)
{
    int64_t now = s_now(self);
    if (self->nlost) {
        bus_val_t *lost = s_lost_tick(self);
        if (lost)
            return lost;
    }
    if (!self->wallet.sale_seq || now < self->wallet.ask_ms)
        return NULL;
    self->wallet.ask_ms = now + S_WALLET_ASK_MS;
    char err[NODE_TILL_WHY_MAX] = "";
    bool refused;
    bus_val_t *r = s_wallet_ask(self, self->wallet.asked ? "payment.get" : "payment.pay", err,
                                sizeof(err), &refused);
    if (!r && refused && strncmp(err, "not_found", 9) == 0) {
        /* payments has not seen it (yet): cancelled by its sale and attempt, which also stops
           a payment.pay still on its way from ever charging */
        self->wallet.cancel = true;
        r = s_wallet_ask(self, "payment.cancel", err, sizeof(err), &refused);
    }
    if (!r)
        return NULL; /* asked again later */
    bus_val_t *reply = bus_val_new_map();
    s_cmd_t c = {.till = self, .reply = reply, .cmd = "pay"};
    bus_val_map_set_bool(reply, "ok", true);
    bus_val_map_set_str(reply, "cmd", "pay");
    char before[16];
    snprintf(before, sizeof(before), "%s", self->wallet.state);
    bool final = false;
    bus_val_map_get_bool(r, "final", &final);
    s_wallet_answer(&c, r);
    bus_val_destroy(&r);
    if (!final && strcmp(before, self->wallet.state) == 0) {
        bus_val_destroy(&reply); /* nothing new for the cashier */
        return NULL;
    }
    s_state(self, reply);
    return reply;
}

/*  pay-status: ask the payments service now. pay-cancel: give the code payment up (it is
    reversed if it was paid; the till waits for the service to say so). */
static int s_cmd_wallet(s_cmd_t *c, bool cancel)
{
    node_till_t *self = c->till;
    if (!self->wallet.sale_seq)
        return s_err(c, "no_payment", "no code payment is under way");
    char err[NODE_TILL_WHY_MAX] = "";
    bool refused;
    if (cancel)
        self->wallet.cancel = true;
    bus_val_t *r = s_wallet_ask(self, cancel ? "payment.cancel" : self->wallet.asked
                                                                      ? "payment.get"
                                                                      : "payment.pay",
                                err, sizeof(err), &refused);
    if (!r && cancel) {
        /* payments cannot be reached: the payment is given up here and now (the ticket is
           free for another tender) and cancelled in the background until payments confirms;
           a charge that went through meanwhile is reversed then */
        if (s_wallet_record(self, NULL, S_WALLET_GIVEN_UP) != 0)
            return s_err(c, "stopped", "%s", self->stopped_why);
        s_lost_add(self, 'w', NULL, self->wallet.sale_seq, self->wallet.attempt,
                   self->wallet.amount, -1, self->wallet.provider);
        s_wallet_clear(self);
        bus_val_map_set_str(c->reply, "message",
                            "given up: payments cannot be reached now, it is cancelled as soon as "
                            "it can be (a charge is reversed)");
        return 0;
    }
    if (!r)
        return s_err(c, "offline", "%s: asked again by itself", err);
    s_wallet_answer(c, r);
    bus_val_destroy(&r);
    return bus_val_map_get(c->reply, "error") ? -1 : 0;
}

/* ---- stored-value cards through the payments service ----------------------------------- */

/*  The offline deductions not uploaded yet, by sale number and attempt. */
static int s_sv_find(const node_till_t *self, int64_t sale_seq, int64_t attempt)
{
    for (int i = 0; i < self->nsv; i++)
        if (self->sv[i].sale_seq == sale_seq && self->sv[i].attempt == attempt)
            return i;
    return -1;
}

static void s_sv_drop(node_till_t *self, int64_t sale_seq, int64_t attempt)
{
    int i = s_sv_find(self, sale_seq, attempt);
    if (i < 0)
        return;
    memmove(self->sv + i, self->sv + i + 1, (size_t)(self->nsv - i - 1) * sizeof(self->sv[0]));
    self->nsv--;
}

static void s_sv_add(node_till_t *self, const char *card, int64_t sale_seq, int64_t attempt,
                     int64_t amount, int64_t ts)
{
    if (self->nsv == S_SV_PENDING_MAX || s_sv_find(self, sale_seq, attempt) >= 0)
        return; /* the till refuses an offline deduction past the bound: never more here */
    s_sv_pending_t *p = &self->sv[self->nsv++];
    memset(p, 0, sizeof(*p));
    snprintf(p->card, sizeof(p->card), "%s", card);
    p->sale_seq = sale_seq;
    p->attempt = attempt;
    p->amount = amount;
    p->ts = ts;
}

/*  Give attempt up: journaled (sv_voidreq) and card.void sent until payments answers; an
    offline deduction waiting for its upload becomes the giving up. 0, or -1 (not journaled). */
static int s_sv_give_up(node_till_t *self, const char *card, int64_t sale_seq, int64_t attempt,
                        int64_t amount, const char *why);

/*  What the register took offline from card and has not uploaded yet. */
static int64_t s_sv_spent(const node_till_t *self, const char *card)
{
    int64_t sum = 0;
    for (int i = 0; i < self->nsv; i++)
        if (strcmp(self->sv[i].card, card) == 0 && !self->sv[i].gave_up)
            sum += self->sv[i].amount;
    return sum;
}

/*  An sv_* audit record read back: the attempts made per sale number and the offline
    deductions waiting for their upload. */
static void s_sv_replay(node_till_t *self, const char *type, const bus_val_t *doc)
{
    if (!type || strncmp(type, "sv_", 3) != 0)
        return;
    int64_t seq = 0, attempt = 0, amount = 0, ts = 0;
    bus_val_map_get_int(doc, "sale_seq", &seq);
    bus_val_map_get_int(doc, "attempt", &attempt);
    bus_val_map_get_int(doc, "amount", &amount);
    const char *card = bus_val_map_get_str(doc, "card");
    if (strcmp(type, "sv_request") == 0) {
        self->sv_attempt_seq = seq;
        self->sv_attempt = attempt;
        memset(&self->sv_asked, 0, sizeof(self->sv_asked));
        snprintf(self->sv_asked.card, sizeof(self->sv_asked.card), "%s", card ? card : "");
        self->sv_asked.sale_seq = seq;
        self->sv_asked.attempt = attempt;
        self->sv_asked.amount = amount;
    } else if (strcmp(type, "sv_offline") == 0 && card) {
        if (self->sv_asked.sale_seq == seq && self->sv_asked.attempt == attempt)
            self->sv_asked.sale_seq = 0;
        if (seq > self->sv_attempt_seq ||
            (seq == self->sv_attempt_seq && attempt > self->sv_attempt)) {
            self->sv_attempt_seq = seq; /* a tap's offline deduction has no sv_request */
            self->sv_attempt = attempt;
        }
        bus_val_map_get_int(doc, "taken_ms", &ts);
        s_sv_add(self, card, seq, attempt, amount, ts);
    } else if (strcmp(type, "sv_voidreq") == 0 && card) {
        int i = s_sv_find(self, seq, attempt);
        if (i < 0) {
            s_sv_add(self, card, seq, attempt, amount, 0);
            i = s_sv_find(self, seq, attempt);
        }
        if (i >= 0)
            self->sv[i].gave_up = true;
    } else if (strcmp(type, "sv_uploaded") == 0 || strcmp(type, "sv_void") == 0) {
        s_sv_drop(self, seq, attempt);
    } else if (strcmp(type, "sv_result") == 0 && card) {
        if (self->sv_asked.sale_seq == seq && self->sv_asked.attempt == attempt)
            self->sv_asked.sale_seq = 0; /* answered */
        bool ok = false;
        const char *mode = bus_val_map_get_str(doc, "mode");
        bus_val_map_get_bool(doc, "ok", &ok);
        if (ok && mode && strcmp(mode, "online") == 0) { /* taken: kept until its sale is read */
            if (self->nsv_online == S_SV_ONLINE_MAX)
                memmove(self->sv_online, self->sv_online + 1,
                        (S_SV_ONLINE_MAX - 1) * sizeof(self->sv_online[0]));
            else
                self->nsv_online++;
            s_sv_pending_t *p = &self->sv_online[self->nsv_online - 1];
            memset(p, 0, sizeof(*p));
            snprintf(p->card, sizeof(p->card), "%s", card);
            p->sale_seq = seq;
            p->attempt = attempt;
            p->amount = amount;
        }
    }
}

/*  Journal an sv_<what> audit record for the sale number and attempt; extra (taken, may be
    NULL) adds keys. 0, or -1 (the journal refused it: selling is stopped). */
static int s_sv_record(node_till_t *self, const char *what, const char *card, int64_t sale_seq,
                       int64_t attempt, int64_t amount, bus_val_t *extra)
{
    bus_val_t *doc = extra ? extra : bus_val_new_map();
    char type[24];
    snprintf(type, sizeof(type), "sv_%s", what);
    bus_val_map_set_str(doc, "type", type);
    bus_val_map_set_str(doc, "card", card);
    bus_val_map_set_int(doc, "sale_seq", sale_seq);
    bus_val_map_set_int(doc, "attempt", attempt);
    bus_val_map_set_int(doc, "amount", amount);
    return s_audit_record(self, &doc);
}

static void s_sv_save(node_till_t *self)
{
    char why[200];
    if (self->svcards)
        node_svcard_save(self->svcards, why, sizeof(why)); /* a cache: behind is harmless */
}

/*  Ask payments about card (card.get) and keep its offline cap, balance and status. True when
    payments answered. */
static bool s_sv_refresh(node_till_t *self, const char *card)
{
    if (!self->hooks.request)
        return false;
    char err[NODE_TILL_WHY_MAX];
    bool offline = false;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "card", card);
    bus_val_t *r = self->hooks.request(self->hooks.arg, "payments", "card.get", &body, &offline,
                                       err, sizeof(err));
    bus_val_destroy(&body);
    if (!r)
        return false;
    int64_t cap = 0, balance = 0;
    const char *status = bus_val_map_get_str(r, "status");
    if (self->svcards && bus_val_map_get_int(r, "offline_cap", &cap) &&
        bus_val_map_get_int(r, "balance", &balance)) {
        node_svcard_seen(self->svcards, card, cap, balance,
                         status ? strcmp(status, "blocked") == 0 : -1, s_now(self));
        s_sv_save(self);
    }
    bus_val_destroy(&r);
    return true;
}

/*  The tender taken: on the ticket, and the sale when paid. */
static void s_sv_tender(s_cmd_t *c, int64_t amount, const char *msg)
{
    node_till_t *self = c->till;
    if (pos_ticket_add_tender(self->ticket, POS_TENDER_STORED_VALUE, amount) != POS_OK) {
        s_err(c, "internal", "the card paid but the ticket took no tender: tell a manager");
        return;
    }
    bus_val_map_set_str(c->reply, "message", msg);
    if (pos_ticket_is_paid(self->ticket))
        s_complete(c);
}

/*  Payments cannot be reached: the card is taken here if the register's own copy allows it
    (not blocked, the amount within its offline cap and its last known balance, counting what
    was taken offline and not uploaded yet); journaled as sv_offline and uploaded later. */
/*  Why the register's own copy refuses card for amount offline (a code, msg filled), or NULL
    when it may be taken. */
static const char *s_sv_offline_refusal(node_till_t *self, const char *card, int64_t amount,
                                        const char *why, char *msg, size_t size)
{
    node_svcard_info_t info;
    node_svcard_get(self->svcards, card, &info);
    int64_t spent = s_sv_spent(self, card);
    const char *code = NULL;
    if (!self->svcards) {
        code = "no_offline";
        snprintf(msg, size,
                 "payments cannot be reached (%s) and this register keeps no card store: take "
                 "another tender",
                 why);
    } else if (info.blocked) {
        code = "card_blocked";
        snprintf(msg, size,
                 "card %s is blocked (the register's blocklist): take another tender", card);
    } else if (!info.known || info.cap <= 0) {
        code = "no_offline";
        snprintf(msg, size, "payments cannot be reached and card %s %s: take another tender",
                 card,
                 info.known ? "may not be used offline (its offline cap is 0)"
                            : "was never seen online here");
    } else if (amount + spent > info.cap) {
        code = "over_offline_cap";
        snprintf(msg, size,
                 "payments cannot be reached and card %s may take %" PRId64 ".%02" PRId64
                 " offline (%" PRId64 ".%02" PRId64 " taken already): take another tender",
                 card, info.cap / 100, info.cap % 100, spent / 100, spent % 100);
    } else if (amount + spent > info.balance) {
        code = "insufficient_balance";
        snprintf(msg, size,
                 "payments cannot be reached and card %s had %" PRId64 ".%02" PRId64
                 " when last seen (%" PRId64 ".%02" PRId64 " taken offline since)",
                 card, info.balance / 100, info.balance % 100, spent / 100, spent % 100);
    } else if (self->nsv >= S_SV_PENDING_MAX - S_SV_GIVEUP_ROOM) {
        code = "no_offline";
        snprintf(msg, size,
                 "%d card deductions wait for payments already: take another tender",
                 self->nsv);
    }
    return code;
}

static int s_sv_offline(s_cmd_t *c, const char *card, int64_t seq, int64_t attempt, int64_t amount,
                        const char *why, bool sent)
{
    node_till_t *self = c->till;
    char msg[NODE_TILL_WHY_MAX * 2];
    const char *code = s_sv_offline_refusal(self, card, amount, why, msg, sizeof(msg));
    if (code) {
        bus_val_t *extra = bus_val_new_map();
        bus_val_map_set_bool(extra, "ok", false);
        bus_val_map_set_str(extra, "mode", "offline");
        bus_val_map_set_str(extra, "code", code);
        if (s_sv_record(self, "result", card, seq, attempt, amount, extra) != 0)
            return s_err(c, "stopped", "%s", self->stopped_why);
        /* the card.pay that timed out may still arrive at payments and be taken: given up
           there (card.void) as soon as payments answers, so the customer is never charged for
           a card the till refused */
        if (sent && s_sv_give_up(self, card, seq, attempt, amount, "refused offline after the "
                                                                   "online request timed out") != 0)
            return s_err(c, "stopped", "%s", self->stopped_why);
        bus_val_map_set_str(c->reply, "reason", code);
        return s_err(c, "sv_declined", "%s", msg);
    }
    int64_t now = s_now(self);
    bus_val_t *extra = bus_val_new_map();
    bus_val_map_set_int(extra, "taken_ms", now);
    bus_val_map_set_str(extra, "why", why);
    if (s_sv_record(self, "offline", card, seq, attempt, amount, extra) != 0)
        return s_err(c, "stopped", "%s", self->stopped_why);
    s_sv_add(self, card, seq, attempt, amount, now);
    bus_val_map_set_bool(c->reply, "offline", true);
    snprintf(msg, sizeof(msg), "paid offline from card %s: uploaded when payments answers", card);
    s_sv_tender(c, amount, msg);
    return bus_val_map_get(c->reply, "error") ? -1 : 0;
}

/*  pay sv CARD [AMOUNT]: a stored-value card through payments (card.pay), or offline. */
static int s_sv_start(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc < 2 || c->argc > 3)
        return s_err(c, "usage", "pay sv CARD [AMOUNT]");
    if (self->stopped)
        return s_err(c, "stopped", "%s", self->stopped_why);
    if (!s_has_lines(self))
        return s_err(c, "no_ticket", "no ticket is open");
    if ((self->wallet.sale_seq && !self->wallet.orphan) ||
        (self->card.key[0] && !self->card.orphan))
        return s_err(c, "wallet_waiting", "a payment is already under way: wait for its answer");
    const char *card = c->argv[1];
    if (!node_svcard_id_ok(card))
        return s_err(c, "bad_card", "a card id is 1-32 letters, digits, _ or -");
    int64_t remaining = pos_ticket_remaining_for(self->ticket, POS_TENDER_STORED_VALUE);
    int64_t amount = remaining;
    if (c->argc == 3 && !s_money(c->argv[2], false, &amount))
        return s_err(c, "bad_amount", "amount: yuan with at most two decimals");
    if (amount <= 0 || amount > remaining)
        return s_err(
            c, "bad_amount",
            "a card pays from 0.01 up to what is still due (refunds to a card are not taken here)");
    pos_err_t fit = pos_ticket_check_tender(self->ticket, POS_TENDER_STORED_VALUE, amount);
    if (fit != POS_OK) /* before the card is charged */
        return s_err(c, "bad_amount", "%s", pos_strerror(fit));
    int64_t seq = self->sale_seq + 1;
    int64_t attempt = self->sv_attempt_seq == seq ? self->sv_attempt + 1 : 1;
    if (attempt > 99)
        return s_err(c, "bad_amount", "99 attempts for one sale: take another tender");
    if (s_sv_record(self, "request", card, seq, attempt, amount, NULL) != 0)
        return s_err(c, "stopped", "%s", self->stopped_why); /* journaled before it is asked */
    self->sv_attempt_seq = seq;
    self->sv_attempt = attempt;
    char sale_id[POS_SALE_ID_MAX + 1], err[NODE_TILL_WHY_MAX] = "";
    pos_sale_make_id(sale_id, sizeof(sale_id), self->store, self->reg, seq);
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "card", card);
    bus_val_map_set_int(body, "amount", amount);
    bus_val_map_set_str(body, "sale_id", sale_id);
    bus_val_map_set_int(body, "attempt", attempt);
    bool offline = true, asked = false;
    bus_val_t *r = NULL;
    if (self->sv_down && self->svcards) {
        snprintf(err, sizeof(err), "payments did not answer lately");
    } else if (self->hooks.request) {
        asked = true;
        r = self->hooks.request(self->hooks.arg, "payments", "card.pay", &body, &offline, err,
                                sizeof(err));
    }
    bus_val_destroy(&body);
    if (!r && (offline || strncmp(err, "unavailable", 11) == 0)) {
        /* not reached, or no answer in time: if card.pay did arrive, the upload of the same
           sale id and attempt is that deduction (payments takes it once) */
        if (self->svcards && !self->sv_down) {
            self->sv_down = true;
            self->sv_pull_ms = s_now(self) + S_SV_RETRY_MS;
        }
        return s_sv_offline(c, card, seq, attempt, amount, err[0] ? err : "no back office",
                            asked);
    }
    bus_val_t *extra = bus_val_new_map();
    bus_val_map_set_str(extra, "mode", "online");
    bus_val_map_set_bool(extra, "ok", r != NULL);
    int64_t balance = 0;
    char code[40] = "";
    if (r) {
        bus_val_map_get_int(r, "balance", &balance);
        bus_val_map_set_int(extra, "balance", balance);
    } else {
        snprintf(code, sizeof(code), "%.*s", (int)strcspn(err, ":"), err);
        bus_val_map_set_str(extra, "code", code);
        bus_val_map_set_str(extra, "message", err);
    }
    if (s_sv_record(self, "result", card, seq, attempt, amount, extra) != 0 && !r)
        return s_err(c, "stopped", "%s", self->stopped_why);
    /* taken but the journal refused its result: the money is gone all the same, so the tender
       is too; the sale waits for the disk like any other (`pay` writes it again) */
    if (!r) {
        if (strcmp(code, "card_blocked") == 0 && self->svcards) {
            node_svcard_block(self->svcards, card, true);
            s_sv_save(self);
        }
        s_sv_refresh(self, card); /* the cap and balance, for offline use */
        bus_val_map_set_str(c->reply, "reason", code);
        return s_err(c, "sv_declined", "card not charged (%s); take another tender", err);
    }
    bus_val_destroy(&r);
    if (self->svcards) {
        node_svcard_seen(self->svcards, card, -1, balance, -1, s_now(self));
        s_sv_save(self);
    }
    s_sv_refresh(self, card); /* its offline cap, which may have changed */
    bus_val_map_set_int(c->reply, "card_balance", balance);
    char msg[NODE_TILL_WHY_MAX];
    snprintf(msg, sizeof(msg), "paid from card %s: %" PRId64 ".%02" PRId64 " left", card,
             balance / 100, balance % 100);
    s_sv_tender(c, amount, msg);
    return bus_val_map_get(c->reply, "error") ? -1 : 0;
}

/*  sv-info CARD: what this register knows of the card (its local copy, without asking
    payments: the same answer online and offline), with what it took offline and has not
    uploaded. */
static int s_cmd_sv_info(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc != 1 || !node_svcard_id_ok(c->argv[0]))
        return s_err(c, "usage", "sv-info CARD");
    const char *card = c->argv[0];
    node_svcard_info_t info;
    node_svcard_get(self->svcards, card, &info);
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_str(m, "card", card);
    bus_val_map_set_bool(m, "known", info.known);
    bus_val_map_set_bool(m, "blocked", info.blocked);
    bus_val_map_set_int(m, "offline_cap", info.cap);
    bus_val_map_set_int(m, "balance", info.balance);
    bus_val_map_set_int(m, "seen_ms", info.seen_ms);
    bus_val_map_set_int(m, "offline_pending", s_sv_spent(self, card));
    bus_val_map_set_int(m, "blocklist_version",
                        self->svcards ? node_svcard_since(self->svcards) : 0);
    bus_val_map_set(c->reply, "sv", &m);
    return 0;
}

/*  Pull the blocklist changes since the store's version (a few pages at most per call).
    0, or -1 when payments could not be reached. */
static int s_sv_pull(node_till_t *self)
{
    for (int page = 0; page < 20; page++) {
        char err[NODE_TILL_WHY_MAX];
        bool offline = false, more = false;
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_int(body, "since", node_svcard_since(self->svcards));
        bus_val_t *r = self->hooks.request(self->hooks.arg, "payments", "card.blocklist", &body,
                                           &offline, err, sizeof(err));
        bus_val_destroy(&body);
        if (!r)
            return -1;
        bus_val_t *changes = bus_val_map_get(r, "changes");
        for (size_t i = 0; i < bus_val_size(changes); i++) {
            bus_val_t *ch = bus_val_arr_get(changes, i);
            const char *card = bus_val_map_get_str(ch, "card");
            bool blocked = false;
            if (card && bus_val_map_get_bool(ch, "blocked", &blocked))
                node_svcard_block(self->svcards, card, blocked);
        }
        int64_t last = 0;
        if (bus_val_map_get_int(r, "last", &last) && last > node_svcard_since(self->svcards))
            node_svcard_set_since(self->svcards, last);
        bus_val_map_get_bool(r, "more", &more);
        bus_val_destroy(&r);
        if (!more)
            break;
    }
    s_sv_save(self);
    return 0;
}

/*  Upload the first offline deduction of a sale that is journaled (card.offline). 1 one was
    uploaded (or refused for good: journaled for an operator), 0 nothing due, -1 payments could
    not be reached, -2 the journal refused the record. */
static int s_sv_upload(node_till_t *self)
{
    int i = 0;
    while (i < self->nsv && !self->sv[i].gave_up && self->sv[i].sale_seq > self->sale_seq)
        i++; /* its sale is still being paid (an attempt given up goes at once) */
    if (i == self->nsv)
        return 0;
    s_sv_pending_t p = self->sv[i];
    char sale_id[POS_SALE_ID_MAX + 1], err[NODE_TILL_WHY_MAX] = "";
    pos_sale_make_id(sale_id, sizeof(sale_id), self->store, self->reg, p.sale_seq);
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "card", p.card);
    bus_val_map_set_int(body, "amount", p.amount);
    bus_val_map_set_str(body, "sale_id", sale_id);
    bus_val_map_set_int(body, "attempt", p.attempt);
    if (!p.gave_up)
        bus_val_map_set_int(body, "ts", p.ts);
    bool offline = false;
    bus_val_t *r = self->hooks.request(self->hooks.arg, "payments",
                                       p.gave_up ? "card.void" : "card.offline", &body, &offline,
                                       err, sizeof(err));
    bus_val_destroy(&body);
    if (!r && (offline || strncmp(err, "unavailable", 11) == 0))
        return -1;
    bus_val_t *extra = bus_val_new_map();
    bus_val_map_set_str(extra, "sale_id", sale_id);
    if (r) {
        static const char *const copy[] = {"balance", "mode",     "flagged", "flags",
                                           "duplicate", "voided", "refunded"};
        for (size_t k = 0; k < sizeof(copy) / sizeof(copy[0]); k++) {
            bus_val_t *v = bus_val_dup(bus_val_map_get(r, copy[k]));
            if (v)
                bus_val_map_set(extra, copy[k], &v);
        }
        int64_t balance = 0;
        if (bus_val_map_get_int(r, "balance", &balance))
            node_svcard_seen(self->svcards, p.card, -1, balance, -1, s_now(self));
    } else { /* not_found, conflict, ...: it can never be taken; kept for an operator */
        bus_val_map_set_str(extra, "refused", err);
    }
    bus_val_destroy(&r);
    if (s_sv_record(self, "uploaded", p.card, p.sale_seq, p.attempt, p.amount, extra) != 0)
        return -2; /* selling stopped: uploaded again later (payments takes it once) */
    s_sv_drop(self, p.sale_seq, p.attempt);
    s_sv_save(self);
    return 1;
}

void node_till_sv_tick(node_till_t *self)
{
    if (!self->hooks.request)
        return;
    int64_t now = s_now(self);
    if (self->nrefunds && now >= self->refund_ms) { /* returns refunded to wallet payments */
        for (int n = 0; n < 10; n++) {
            int rc = s_refund_send(self);
            if (rc < 0)
                self->refund_ms = now + S_REFUND_RETRY_MS;
            if (rc <= 0)
                break;
        }
    }
    if (self->svcards && (self->sv_blocklist_ms > 0 || self->sv_down) && now >= self->sv_pull_ms) {
        /* also the probe that finds payments back after it did not answer */
        int rc = s_sv_pull(self);
        self->sv_down = rc != 0;
        self->sv_pull_ms =
            now + (rc == 0 && self->sv_blocklist_ms > 0 ? self->sv_blocklist_ms : S_SV_RETRY_MS);
    }
    if (!self->nsv || now < self->sv_upload_ms || self->sv_down)
        return;
    for (int n = 0; n < 20; n++) { /* a few per turn: the cashier's commands come first */
        int rc = s_sv_upload(self);
        if (rc < 0)
            self->sv_upload_ms = s_now(self) + S_SV_RETRY_MS;
        if (rc == -1) {
            self->sv_down = self->svcards != NULL;
            self->sv_pull_ms = self->sv_upload_ms;
        }
        if (rc <= 0)
            break;
    }
}

void node_till_set_svcards(node_till_t *self, node_svcard_t *store, int64_t blocklist_ms)
{
    self->svcards = store;
    self->sv_blocklist_ms = blocklist_ms;
    self->sv_pull_ms = 0;
}

size_t node_till_sv_pending(const node_till_t *self)
{
    return (size_t)self->nsv;
}

/*  At start: an offline deduction for a sale number never sold had its ticket lost (the till
    stopped before the sale was written): nothing was sold, so it is never uploaded. */
static void s_sv_lost_tickets(node_till_t *self)
{
    /* a card.pay that timed out may have been taken after all, with the same attempt: so
       the attempt is given up at payments (card.void), never just forgotten here */
    for (int i = self->nsv - 1; i >= 0; i--) {
        s_sv_pending_t p = self->sv[i];
        if (p.sale_seq <= self->sale_seq || p.gave_up)
            continue;
        s_sv_give_up(self, p.card, p.sale_seq, p.attempt, p.amount,
                     "its ticket was lost: nothing sold");
    }
    if (self->sv_asked.sale_seq > self->sale_seq && self->sv_asked.card[0] &&
        s_sv_find(self, self->sv_asked.sale_seq, self->sv_asked.attempt) < 0) {
        /* asked, and the till stopped before the answer was journaled: it may have been taken */
        s_sv_pending_t a = self->sv_asked;
        s_sv_give_up(self, a.card, a.sale_seq, a.attempt, a.amount,
                     "its ticket was lost while card.pay was asked");
    }
    self->sv_asked.sale_seq = 0;
    for (int i = 0; i < self->nsv_online; i++) { /* taken online for a sale never written */
        s_sv_pending_t p = self->sv_online[i];
        if (p.sale_seq > self->sale_seq && s_sv_find(self, p.sale_seq, p.attempt) < 0)
            s_sv_give_up(self, p.card, p.sale_seq, p.attempt, p.amount,
                         "its ticket was lost: the deduction is given back");
    }
    self->nsv_online = 0;
}

static int s_sv_give_up(node_till_t *self, const char *card, int64_t sale_seq, int64_t attempt,
                        int64_t amount, const char *why)
{
    bus_val_t *extra = bus_val_new_map();
    bus_val_map_set_str(extra, "why", why);
    char keep[NODE_SVCARD_ID_MAX + 1];
    snprintf(keep, sizeof(keep), "%s", card); /* card may point into the entry below */
    if (s_sv_record(self, "voidreq", keep, sale_seq, attempt, amount, extra) != 0)
        return -1;
    int i = s_sv_find(self, sale_seq, attempt);
    if (i < 0) {
        s_sv_add(self, keep, sale_seq, attempt, amount, 0);
        i = s_sv_find(self, sale_seq, attempt);
    }
    if (i >= 0)
        self->sv[i].gave_up = true;
    self->sv_upload_ms = 0; /* sent at the next tick */
    return 0;
}

/* ---- returns refunded to the tenders they were paid with --------------------------------- */

static int s_refund_find(const s_refund_t *list, int n, const char *refund_no)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].refund_no, refund_no) == 0)
            return i;
    return -1;
}

static void s_refund_drop(node_till_t *self, const char *refund_no)
{
    int i = s_refund_find(self->refunds, self->nrefunds, refund_no);
    if (i < 0)
        return;
    memmove(self->refunds + i, self->refunds + i + 1,
            (size_t)(self->nrefunds - i - 1) * sizeof(self->refunds[0]));
    self->nrefunds--;
}

static void s_refund_add(node_till_t *self, const s_refund_t *r)
{
    if (s_refund_find(self->refunds, self->nrefunds, r->refund_no) >= 0 ||
        self->nrefunds == S_REFUND_QUEUE_MAX)
        return; /* `pay refund` refuses to plan past the bound */
    self->refunds[self->nrefunds++] = *r;
}

/*  A refund as the sale record carries it. */
static bus_val_t *s_refund_entry(const s_refund_t *r)
{
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_str(m, "intent", r->intent);
    bus_val_map_set_str(m, "provider", r->provider);
    bus_val_map_set_str(m, "refund_no", r->refund_no);
    bus_val_map_set_int(m, "amount", r->amount);
    if (r->card[0]) {
        bus_val_map_set_str(m, "card", r->card);
        bus_val_map_set_str(m, "of_sale", r->of_sale);
        bus_val_map_set_int(m, "attempt", r->attempt);
    }
    return m;
}

/*  The planned refunds of sale number sale_seq, for its record. */
static bus_val_t *s_refund_val(node_till_t *self, int64_t sale_seq)
{
    bus_val_t *list = bus_val_new_arr();
    for (int i = 0; list && i < self->nplan; i++) {
        self->plan[i].sale_seq = sale_seq;
        bus_val_t *m = s_refund_entry(&self->plan[i]);
        if (!m || bus_val_arr_push(list, &m) != 0) {
            bus_val_destroy(&list);
            return NULL;
        }
    }
    return list;
}

/*  Read back: a sale record's refunds (due from then on) and refund_done records (taken, or
    refused for good). */
static void s_refund_replay(node_till_t *self, const char *type, const bus_val_t *doc)
{
    if (!type)
        return;
    if (strcmp(type, "refund_done") == 0) {
        const char *no = bus_val_map_get_str(doc, "refund_no");
        if (no)
            s_refund_drop(self, no);
        if (bus_val_map_get(doc, "refused"))
            self->refunds_refused++;
        return;
    }
    if (strcmp(type, "sale") != 0)
        return;
    int64_t seq = 0;
    bus_val_map_get_int(doc, "seq", &seq);
    bus_val_t *list = bus_val_map_get(doc, "refunds");
    for (size_t i = 0; i < bus_val_size(list); i++) {
        const bus_val_t *m = bus_val_arr_get(list, i);
        const char *intent = bus_val_map_get_str(m, "intent");
        const char *provider = bus_val_map_get_str(m, "provider");
        const char *no = bus_val_map_get_str(m, "refund_no");
        const char *card = bus_val_map_get_str(m, "card");
        const char *of = bus_val_map_get_str(m, "of_sale");
        s_refund_t r = {.sale_seq = seq};
        bus_val_map_get_int(m, "attempt", &r.attempt);
        if (!intent || !no || !bus_val_map_get_int(m, "amount", &r.amount) ||
            strlen(intent) >= sizeof(r.intent) || strlen(no) >= sizeof(r.refund_no) ||
            (card && strlen(card) >= sizeof(r.card)) || (of && strlen(of) >= sizeof(r.of_sale)))
            continue;
        snprintf(r.card, sizeof(r.card), "%s", card ? card : "");
        snprintf(r.of_sale, sizeof(r.of_sale), "%s", of ? of : "");
        snprintf(r.intent, sizeof(r.intent), "%s", intent);
        snprintf(r.provider, sizeof(r.provider), "%s", provider ? provider : "");
        snprintf(r.refund_no, sizeof(r.refund_no), "%s", no);
        s_refund_add(self, &r);
    }
}

/*  The sale is written: its planned refunds are due. */
static void s_refund_queue(node_till_t *self)
{
    for (int i = 0; i < self->nplan; i++)
        s_refund_add(self, &self->plan[i]);
    self->nplan = 0;
    self->refund_ms = 0;
}

/*  What a returned sale (sale.get's document) took in cash, net of its change, and by card. */
static void s_return_original(const bus_val_t *sale, int64_t *cash, int64_t *card)
{
    *cash = *card = 0;
    int64_t change = 0;
    bus_val_t *tenders = bus_val_map_get(sale, "tenders");
    for (size_t i = 0; i < bus_val_size(tenders); i++) {
        const bus_val_t *t = bus_val_arr_get(tenders, i);
        const char *kind = bus_val_map_get_str(t, "kind");
        int64_t amount = 0;
        bus_val_map_get_int(t, "amount", &amount);
        if (kind && strcmp(kind, "cash") == 0)
            *cash += amount;
        else if (kind && strcmp(kind, "card") == 0)
            *card += amount;
    }
    bus_val_map_get_int(sale, "change", &change);
    *cash = *cash > change ? *cash - change : 0;
}

/*  Remember a returned sale on the open ticket (once per sale). */
static void s_return_remember(node_till_t *self, const char *sale_id, int64_t cash, int64_t card)
{
    for (int i = 0; i < self->nret; i++)
        if (strcmp(self->ret[i].id, sale_id) == 0)
            return;
    if (self->nret == S_RET_SALES_MAX)
        return; /* its payouts then need refund_cash */
    int i = self->nret++;
    snprintf(self->ret[i].id, sizeof(self->ret[i].id), "%s", sale_id);
    self->ret[i].cash = cash;
    self->ret[i].card = card;
}

/*  What the open ticket returns of sale_id: its return lines not voided (fen, >= 0). */
static int64_t s_ret_value(node_till_t *self, const char *sale_id)
{
    int64_t v = 0;
    for (int i = 0; i < pos_ticket_line_count(self->ticket); i++) {
        const pos_line_t *l = pos_ticket_line(self->ticket, i);
        if (l->is_return && !l->voided && strcmp(l->return_of, sale_id) == 0)
            v += l->amount < 0 ? -l->amount : l->amount;
    }
    return v;
}

/*  A payout in cash or by card (kind) of amount (negative) on a return ticket: within what the
    returned sales took that way (each capped at what the ticket returns of it), or a supervisor
    decides (refund_cash), so a sale paid by WeChat is not turned into cash or onto another
    card. True when allowed. */
static bool s_payout_ok(s_cmd_t *c, pos_tender_kind_t kind, int64_t amount)
{
    node_till_t *self = c->till;
    int64_t out = -amount, allowed = 0;
    for (int i = 0; i < pos_ticket_tender_count(self->ticket); i++) {
        const pos_tender_t *t = pos_ticket_tender(self->ticket, i);
        if (t->kind == kind && t->amount < 0)
            out -= t->amount;
    }
    for (int i = 0; i < self->nret; i++) {
        int64_t took = kind == POS_TENDER_CASH ? self->ret[i].cash : self->ret[i].card;
        int64_t value = s_ret_value(self, self->ret[i].id);
        allowed += took < value ? took : value;
    }
    if (out <= allowed)
        return true;
    bus_val_t *ctx = bus_val_new_map();
    bus_val_map_set_str(ctx, "tender", pos_tender_name(kind));
    bus_val_map_set_int(ctx, "paid_out", out);
    bus_val_map_set_int(ctx, "returned_sales_took", allowed);
    bus_val_map_set_int(ctx, "sale_seq", self->sale_seq + 1);
    if (!s_authorize(c, NODE_ACTION_REFUND_CASH, ctx)) {
        bus_val_map_set_str(c->reply, "hint",
                            "the returned sales were paid otherwise: pay refund (back to WeChat, "
                            "Alipay or the stored-value card), or a supervisor approves");
        return false;
    }
    return true;
}

/*  What this register has planned or queued (not yet taken by payments) against one intent or
    one card deduction, so two quick returns of a sale never plan more than it holds. */
static int64_t s_refund_owed(const node_till_t *self, const s_refund_t *plan, int nplan,
                             const char *intent, const char *card, const char *of_sale,
                             int64_t attempt)
{
    int64_t sum = 0;
    for (int pass = 0; pass < 2; pass++) {
        const s_refund_t *list = pass ? self->refunds : plan;
        int n = pass ? self->nrefunds : nplan;
        for (int i = 0; i < n; i++) {
            const s_refund_t *r = &list[i];
            bool same = card ? strcmp(r->card, card) == 0 && strcmp(r->of_sale, of_sale) == 0 &&
                                   r->attempt == attempt
                             : !r->card[0] && strcmp(r->intent, intent) == 0;
            if (same)
                sum += r->amount;
        }
    }
    return sum;
}

static pos_tender_kind_t s_refund_kind(const s_refund_t *r)
{
    return r->card[0] ? POS_TENDER_STORED_VALUE : (pos_tender_kind_t)pos_tender_parse(r->provider);
}

/*  pay refund: what the open return ticket owes goes back to the WeChat and Alipay payments
    (payment.refundable) and the stored-value cards (card.sale) of the sales it returns, each
    sale up to what the ticket returns of it and each payment up to what it may still give
    back; each part becomes a (negative) tender now, written into the sale's record and sent to
    payments once the sale is written. What is left is paid out by the terminal or in cash. */
static int s_refund_start(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc != 1)
        return s_err(c, "usage", "pay refund");
    if (self->stopped)
        return s_err(c, "stopped", "%s", self->stopped_why);
    /* wallets and cards refund to the fen: cash rounding is for a cash payout only */
    if (!s_has_lines(self) || pos_ticket_remaining_for(self->ticket, POS_TENDER_WECHAT) >= 0)
        return s_err(c, "no_refund", "pay refund pays out a return: nothing is owed here");
    if ((self->wallet.sale_seq && !self->wallet.orphan) ||
        (self->card.key[0] && !self->card.orphan))
        return s_err(c, "wallet_waiting", "a payment is under way: wait for its answer");
    if (self->nplan)
        return s_err(c, "refund_planned", "the refunds are planned: pay the rest (card or cash)");
    if (self->nrefunds + S_REFUND_PLAN_MAX > S_REFUND_QUEUE_MAX)
        return s_err(c, "refund_waiting", "%d refunds wait for payments: pay card or cash",
                     self->nrefunds);
    int64_t due = -pos_ticket_remaining_for(self->ticket, POS_TENDER_WECHAT);
    int64_t seq = self->sale_seq + 1;
    char sale_id[POS_SALE_ID_MAX + 1];
    pos_sale_make_id(sale_id, sizeof(sale_id), self->store, self->reg, seq);
    s_refund_t plan[S_REFUND_PLAN_MAX];
    int n = 0;
    /* the ticket holds POS_TENDERS_MAX tenders: keep one for the card or cash rest */
    int nmax = POS_TENDERS_MAX - pos_ticket_tender_count(self->ticket) - 1;
    nmax = nmax < S_REFUND_PLAN_MAX ? nmax : S_REFUND_PLAN_MAX;
    bool cash_tendered = false;
    for (int i = 0; i < pos_ticket_tender_count(self->ticket); i++)
        cash_tendered = cash_tendered || pos_ticket_tender(self->ticket, i)->kind == POS_TENDER_CASH;
    for (int i = 0; i < pos_ticket_line_count(self->ticket) && due > 0; i++) {
        const pos_line_t *l = pos_ticket_line(self->ticket, i);
        bool seen = false;
        for (int k = 0; k < i && !seen; k++) {
            const pos_line_t *e = pos_ticket_line(self->ticket, k);
            seen = e->is_return && !e->voided && strcmp(e->return_of, l->return_of) == 0;
        }
        if (!l->is_return || l->voided || seen)
            continue;
        int64_t cap = s_ret_value(self, l->return_of); /* what this ticket returns of it */
        static const char *const methods[] = {"payment.refundable", "card.sale"};
        for (int m = 0; m < 2 && due > 0 && cap > 0; m++) {
            bool offline = false, wallet = m == 0;
            bus_val_t *body = bus_val_new_map();
            bus_val_map_set_str(body, "sale_id", l->return_of);
            bus_val_t *r = s_request(c, "payments", methods[m], body, &offline, false);
            if (!r)
                return -1; /* the error is set: nothing planned */
            bus_val_t *list = bus_val_map_get(r, wallet ? "intents" : "deductions");
            for (size_t k = 0; k < bus_val_size(list) && due > 0 && cap > 0 &&
                               n < nmax;
                 k++) {
                const bus_val_t *e = bus_val_arr_get(list, k);
                const char *intent = bus_val_map_get_str(e, "intent");
                const char *provider = bus_val_map_get_str(e, "provider");
                const char *card = bus_val_map_get_str(e, "card");
                int64_t left = 0, attempt = 0;
                bus_val_map_get_int(e, "refundable", &left);
                bus_val_map_get_int(e, "attempt", &attempt);
                int kind = wallet && provider ? pos_tender_parse(provider) : -1;
                if (wallet ? !intent || strlen(intent) >= sizeof(plan[0].intent) ||
                                 (kind != POS_TENDER_WECHAT && kind != POS_TENDER_ALIPAY)
                           : !card || !node_svcard_id_ok(card) || attempt < 1)
                    continue;
                left -= s_refund_owed(self, plan, n, wallet ? intent : NULL,
                                      wallet ? NULL : card, l->return_of, attempt);
                if (left <= 0)
                    continue;
                int64_t a = left < due ? left : due;
                a = a < cap ? a : cap;
                s_refund_t *p = &plan[n];
                memset(p, 0, sizeof(*p));
                p->sale_seq = seq;
                snprintf(p->intent, sizeof(p->intent), "%s", wallet ? intent : "sv");
                snprintf(p->provider, sizeof(p->provider), "%s", wallet ? provider : "sv");
                snprintf(p->refund_no, sizeof(p->refund_no), "%s-r%d", sale_id, n + 1);
                if (!wallet) {
                    snprintf(p->card, sizeof(p->card), "%s", card);
                    snprintf(p->of_sale, sizeof(p->of_sale), "%s", l->return_of);
                    p->attempt = attempt;
                }
                p->amount = a;
                n++;
                due -= a;
                cap -= a;
            }
            bus_val_destroy(&r);
        }
    }
    /* what is left after the plan goes out in cash: where cash is rounded and none is
       tendered yet, never leave it 0.01-0.04, which would round to nothing; leave a whole
       0.10 (taking it off the last planned refunds, as many as it needs) */
    while (self->cfg.cash_rounding && !cash_tendered && due > 0 && pos_cash_round(due) == 0 &&
           n > 0) {
        int64_t cut = POS_CASH_STEP - due;
        if (plan[n - 1].amount > cut) {
            plan[n - 1].amount -= cut;
            due += cut;
        } else {
            due += plan[--n].amount; /* all of it to cash */
        }
    }
    if (n == 0)
        return s_err(c, "no_wallet",
                     "the returned sales have no WeChat, Alipay or card payment left to refund: "
                     "pay card (the terminal) or cash");
    /* all the planned refunds become tenders at once, or none does */
    pos_tender_t tenders[S_REFUND_PLAN_MAX];
    for (int i = 0; i < n; i++)
        tenders[i] = (pos_tender_t){.kind = s_refund_kind(&plan[i]), .amount = -plan[i].amount};
    pos_err_t took = pos_ticket_add_tenders(self->ticket, tenders, n);
    if (took != POS_OK)
        return s_err(c, "refused", "the planned refunds do not fit the ticket: %s; pay card or "
                     "cash", pos_strerror(took));
    bus_val_t *list = bus_val_new_arr();
    for (int i = 0; i < n; i++) {
        self->plan[i] = plan[i];
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_str(m, "provider", plan[i].provider);
        if (plan[i].card[0])
            bus_val_map_set_str(m, "card", plan[i].card);
        else
            bus_val_map_set_str(m, "intent", plan[i].intent);
        bus_val_map_set_int(m, "amount", plan[i].amount);
        bus_val_arr_push(list, &m);
    }
    self->nplan = n;
    bus_val_map_set(c->reply, "refunds", &list);
    if (pos_ticket_is_paid(self->ticket))
        return s_complete(c);
    bus_val_map_set_str(c->reply, "message",
                        "refunded to the payments the returned sales were paid with, as far as "
                        "they go; pay the rest by card or cash");
    return 0;
}

/*  Send the first due refund (payment.refund; the same refund number is the same refund).
    1 sent and answered (or refused for good: journaled for an operator), 0 nothing due, -1
    payments could not be reached, -2 the journal refused the record. */
static int s_refund_send(node_till_t *self)
{
    if (!self->nrefunds || !self->hooks.request)
        return 0;
    s_refund_t r = self->refunds[0];
    char sale_id[POS_SALE_ID_MAX + 1], reason[64], err[NODE_TILL_WHY_MAX] = "";
    pos_sale_make_id(sale_id, sizeof(sale_id), self->store, self->reg, r.sale_seq);
    snprintf(reason, sizeof(reason), "return %s", sale_id);
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "refund_no", r.refund_no);
    bus_val_map_set_int(body, "amount", r.amount);
    if (r.card[0]) { /* back to the stored-value card that paid */
        bus_val_map_set_str(body, "card", r.card);
        bus_val_map_set_str(body, "sale_id", r.of_sale);
        bus_val_map_set_int(body, "attempt", r.attempt);
    } else {
        bus_val_map_set_str(body, "intent", r.intent);
        bus_val_map_set_str(body, "reason", reason);
    }
    bool offline = false;
    bus_val_t *rep = self->hooks.request(self->hooks.arg, "payments",
                                         r.card[0] ? "card.refund" : "payment.refund", &body,
                                         &offline, err, sizeof(err));
    bus_val_destroy(&body);
    static const char *const final_codes[] = {"too_much", "not_paid", "conflict", "not_found",
                                              "bad_request", "forbidden"};
    bool refused = false;
    for (size_t i = 0; !rep && i < sizeof(final_codes) / sizeof(final_codes[0]); i++)
        refused = refused || (strncmp(err, final_codes[i], strlen(final_codes[i])) == 0 &&
                              err[strlen(final_codes[i])] == ':');
    if (!rep && (offline || !refused))
        return -1; /* not reached, or a passing fault (unavailable, internal): asked again */
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "refund_done");
    bus_val_map_set_str(doc, "refund_no", r.refund_no);
    bus_val_map_set_str(doc, "intent", r.intent);
    bus_val_map_set_str(doc, "provider", r.provider);
    bus_val_map_set_int(doc, "amount", r.amount);
    bus_val_map_set_int(doc, "sale_seq", r.sale_seq);
    const char *state = rep ? bus_val_map_get_str(rep, "state") : NULL;
    if (state)
        bus_val_map_set_str(doc, "state", state);
    int64_t balance = 0;
    if (rep && r.card[0] && bus_val_map_get_int(rep, "balance", &balance)) {
        bus_val_map_set_str(doc, "state", "succeeded"); /* the card has it back at once */
        bus_val_map_set_str(doc, "card", r.card);
        bus_val_map_set_int(doc, "balance", balance);
        if (self->svcards) {
            node_svcard_seen(self->svcards, r.card, -1, balance, -1, s_now(self));
            s_sv_save(self);
        }
    }
    if (!rep) /* too_much, not_paid, conflict...: it can never be taken; kept for an operator */
        bus_val_map_set_str(doc, "refused", err);
    bus_val_destroy(&rep);
    bus_val_t *event = bus_val_dup(doc);
    if (s_audit_record(self, &doc) != 0) {
        bus_val_destroy(&event);
        return -2; /* sent again later: payments takes it once */
    }
    s_publish(self, "refund", "node.refund", &event);
    s_refund_drop(self, r.refund_no);
    if (refused)
        self->refunds_refused++;
    return 1;
}

size_t node_till_refunds_pending(const node_till_t *self)
{
    return (size_t)self->nrefunds;
}

/* ---- canteen terminals' taps ------------------------------------------------------------ */

/*  Whether sale doc is the sale of the tap with key "tap:DEVICE:...": a tap's sale names the
    canteen line's device as its cashier. */
static bool s_tap_sale_of(const char *key, const bus_val_t *doc)
{
    const char *cashier = bus_val_map_get_str(doc, "cashier");
    size_t n = cashier ? strlen(cashier) : 0;
    return n && strncmp(key, "tap:", 4) == 0 && strncmp(key + 4, cashier, n) == 0 &&
           key[4 + n] == ':';
}

/*  The tap whose sale the journal refused is given up (card.void) before anything else is
    sold. 0, or -1 when the journal refuses that too (nothing may be sold then). */
static int s_tap_give_up_unsold(node_till_t *self)
{
    s_sv_pending_t u = self->tap_unsold;
    if (!u.sale_seq)
        return 0;
    if (u.sale_seq <= self->sale_seq) { /* cannot happen: every commit gives it up first */
        self->tap_unsold.sale_seq = 0;
        return 0;
    }
    if (s_sv_give_up(self, u.card, u.sale_seq, u.attempt, u.amount,
                     "the tap's sale could not be written") != 0)
        return -1;
    self->tap_unsold.sale_seq = 0;
    return 0;
}

/*  A tap charged (sale_seq, attempt) whose sale was not written: given up now, or before the
    next sale if the journal refuses even that. */
static void s_tap_unsold(node_till_t *self, const char *card, int64_t sale_seq, int64_t attempt,
                         int64_t amount)
{
    memset(&self->tap_unsold, 0, sizeof(self->tap_unsold));
    snprintf(self->tap_unsold.card, sizeof(self->tap_unsold.card), "%s", card);
    self->tap_unsold.sale_seq = sale_seq;
    self->tap_unsold.attempt = attempt;
    self->tap_unsold.amount = amount;
    s_tap_give_up_unsold(self);
}

static bool s_tap_is_sold(const node_till_t *self, const char *key)
{
    for (int i = 0; i < S_TAP_KEYS; i++)
        if (self->tap_done[i][0] && strcmp(self->tap_done[i], key) == 0)
            return true;
    return false;
}

/*  The collect cursor of a terminal ("<device>:<terminal>", len bytes at line), created when
    asked: its index, or -1. */
static int s_tap_line(node_till_t *self, const char *line, size_t len, bool create)
{
    for (int i = 0; i < self->ntap_cursor; i++)
        if (strlen(self->tap_cursor[i].line) == len &&
            strncmp(self->tap_cursor[i].line, line, len) == 0)
            return i;
    if (!create || self->ntap_cursor == S_TAP_LINES || len > S_TAP_KEY_MAX)
        return -1;
    int i = self->ntap_cursor++;
    memcpy(self->tap_cursor[i].line, line, len);
    self->tap_cursor[i].line[len] = '\0';
    self->tap_cursor[i].held = 0;
    return i;
}

/*  Remember key ("tap:<device>:<terminal>:<seq>") as sold; held > 0: it was that terminal's
    offline transaction held, so the terminal may forget everything up to it. */
static void s_tap_sold(node_till_t *self, const char *key, int64_t held)
{
    if (!s_tap_is_sold(self, key)) {
        snprintf(self->tap_done[self->tap_done_next], S_TAP_KEY_MAX + 1, "%s", key);
        self->tap_done_next = (self->tap_done_next + 1) % S_TAP_KEYS;
    }
    const char *end = strrchr(key, ':');
    if (held <= 0 || strncmp(key, "tap:", 4) != 0 || !end || end <= key + 4)
        return;
    int i = s_tap_line(self, key + 4, (size_t)(end - key - 4), true);
    if (i >= 0 && held > self->tap_cursor[i].held)
        self->tap_cursor[i].held = held;
}

int64_t node_till_tap_held(node_till_t *self, const char *device, int terminal)
{
    char line[S_TAP_KEY_MAX + 1];
    int n = snprintf(line, sizeof(line), "%s:%d", device, terminal);
    int i = n > 0 && n < (int)sizeof(line) ? s_tap_line(self, line, (size_t)n, false) : -1;
    return i < 0 ? 0 : self->tap_cursor[i].held;
}

/*  Whether the next sale number belongs to the cashier's ticket already: a tender on it, a
    payment under way, a pending write, or a charge being taken back that was made for it. A
    tap's sale must not take that number (the charge would count as sold). */
static bool s_next_sale_held(const node_till_t *self)
{
    int64_t next = self->sale_seq + 1;
    if (self->pending || (self->ticket && pos_ticket_tender_count(self->ticket) > 0) ||
        self->tap_unsold.sale_seq)
        return true;
    if ((self->card.key[0] && self->card.sale_seq == next) || self->wallet.sale_seq == next)
        return true;
    for (int i = 0; i < self->nlost; i++)
        if (self->lost[i].sale_seq == next)
            return true;
    return false;
}

/*  The tap as a sale of its own (sale number sale_seq + 1): one line (the catalog's item sku
    at the tap's amount, or a plain canteen line), paid by the card; the cashier's ticket is
    left as it is. 0, or -1 with the error in c. */
static int s_tap_sale(s_cmd_t *c, const node_till_tap_t *tap)
{
    node_till_t *self = c->till;
    const char *sku = tap->sku && *tap->sku ? tap->sku : "CANTEEN";
    const node_catalog_item_t *ci =
        self->catalog ? node_catalog_lookup(self->catalog, sku, NULL) : NULL;
    pos_item_t item;
    memset(&item, 0, sizeof(item));
    if (ci && strcmp(ci->sku, sku) == 0) {
        node_catalog_to_pos(ci, &item);
    } else {
        snprintf(item.sku, sizeof(item.sku), "%s", sku);
        snprintf(item.name, sizeof(item.name), "Canteen");
    }
    item.price = tap->amount;
    item.member_price = 0;
    item.unit = POS_UNIT_PCS;
    int64_t now = s_now(self);
    pos_ticket_t *t = pos_ticket_new();
    pos_sale_t sale;
    pos_sale_init(&sale);
    int index = -1, rc = -1;
    if (!t) {
        s_err(c, "internal", "out of memory");
    } else {
        pos_ticket_set_time(t, now);
        if (pos_ticket_add_line(t, &item, 1, &index) != POS_OK ||
            pos_ticket_compute(t) != POS_OK ||
            pos_ticket_add_tender(t, POS_TENDER_STORED_VALUE, tap->amount) != POS_OK ||
            !pos_ticket_is_paid(t) ||
            pos_sale_from_ticket(&sale, t, self->store, self->reg, self->sale_seq + 1,
                                 tap->device, now) != POS_OK)
            s_err(c, "internal", "the tap's sale cannot be built");
        else
            rc = s_commit(c, &sale);
    }
    pos_sale_clear(&sale);
    pos_ticket_destroy(&t);
    return rc;
}

/*  The terminal's display text for a decline code (at most 32 bytes in GB18030). */
static const char *s_tap_text(const char *code)
{
    if (!code)
        return "\xe6\x8b\x92\xe7\xbb\x9d"; /* 拒绝 */
    if (strcmp(code, "insufficient_balance") == 0 || strcmp(code, "over_offline_cap") == 0)
        return "\xe4\xbd\x99\xe9\xa2\x9d\xe4\xb8\x8d\xe8\xb6\xb3"; /* 余额不足 */
    if (strcmp(code, "card_blocked") == 0)
        return "\xe5\x8d\xa1\xe5\xb7\xb2\xe6\x8c\x82\xe5\xa4\xb1"; /* 卡已挂失 */
    if (strncmp(code, "limit", 5) == 0 || strstr(code, "limit"))
        return "\xe8\xb6\x85\xe5\x87\xba\xe9\x99\x90\xe9\xa2\x9d"; /* 超出限额 */
    if (strcmp(code, "stopped") == 0)
        return "\xe6\x9a\x82\xe5\x81\x9c\xe6\x9c\x8d\xe5\x8a\xa1"; /* 暂停服务 */
    if (strcmp(code, "unknown_card") == 0 || strcmp(code, "not_found") == 0 ||
        strcmp(code, "no_offline") == 0)
        return "\xe6\x97\xa0\xe6\x95\x88\xe5\x8d\xa1"; /* 无效卡 */
    return "\xe6\x8b\x92\xe7\xbb\x9d";
}

static void s_tap_verdict(bus_val_t *reply, const char *verdict, const char *code)
{
    bus_val_map_set_str(reply, "verdict", verdict);
    if (strcmp(verdict, "decline") == 0)
        bus_val_map_set_str(reply, "text", s_tap_text(code));
}

/*  An offline transaction the terminal took: recorded as it happened (sv_offline, flagged
    with what the register's own copy says of it, never refused: the meal was given), uploaded
    with card.offline like every offline deduction, and sold. */
static void s_tap_offline(s_cmd_t *c, const node_till_tap_t *tap, const char *key, int64_t seq,
                          int64_t attempt)
{
    node_till_t *self = c->till;
    char msg[NODE_TILL_WHY_MAX * 2];
    const char *flag = s_sv_offline_refusal(self, tap->card, tap->amount, "offline", msg,
                                            sizeof(msg));
    int64_t now = s_now(self);
    /* the terminal's clock: never later than the register's (payments refuses a deduction
       from the future, and this one happened) */
    int64_t taken = tap->ts_ms > 0 && tap->ts_ms < now ? tap->ts_ms : now;
    bus_val_t *extra = bus_val_new_map();
    bus_val_map_set_int(extra, "taken_ms", taken);
    bus_val_map_set_str(extra, "why", "taken by the canteen terminal offline");
    bus_val_map_set_str(extra, "tap", key);
    bus_val_map_set_int(extra, "tap_seq", tap->seq);
    if (flag && strcmp(flag, "no_offline") != 0) /* the register's cap says no: flagged */
        bus_val_map_set_str(extra, "flag", flag);
    if (s_sv_record(self, "offline", tap->card, seq, attempt, tap->amount, extra) != 0) {
        s_err(c, "stopped", "%s", self->stopped_why);
        return;
    }
    self->sv_attempt_seq = seq;
    self->sv_attempt = attempt;
    s_sv_add(self, tap->card, seq, attempt, tap->amount, taken);
    if (s_tap_sale(c, tap) == 0) {
        s_tap_sold(self, key, tap->seq);
        s_tap_verdict(c->reply, "approve", NULL);
        if (flag)
            bus_val_map_set_str(c->reply, "flag", flag);
    } else { /* not sold: its deduction is given up; the terminal gives the tap again */
        s_tap_unsold(self, tap->card, seq, attempt, tap->amount);
    }
}

bus_val_t *node_till_tap(node_till_t *self, const node_till_tap_t *tap)
{
    bus_val_t *reply = bus_val_new_map();
    s_cmd_t c = {.till = self, .reply = reply, .cmd = "tap"};
    bus_val_map_set_bool(reply, "ok", true);
    bus_val_map_set_str(reply, "cmd", "tap");
    char key[S_TAP_KEY_MAX + 1];
    int n = snprintf(key, sizeof(key), "tap:%s:%d:%" PRId64, tap->device ? tap->device : "",
                     tap->terminal, tap->seq);
    if (!tap->device || !*tap->device || n <= 0 || n >= (int)sizeof(key) || tap->terminal < 1 ||
        tap->terminal > 32 || tap->seq < 1 || tap->amount < 1 ||
        !node_svcard_id_ok(tap->card)) {
        s_err(&c, "bad_tap", "a tap needs a device, terminal 1-32, seq >= 1, an amount and a card");
        s_tap_verdict(reply, "decline", NULL);
        return reply;
    }
    bus_val_map_set_str(reply, "key", key);
    bus_val_map_set_str(reply, "card", tap->card);
    bus_val_map_set_int(reply, "amount", tap->amount);
    if (s_tap_is_sold(self, key) ||
        (tap->offline && tap->seq <= node_till_tap_held(self, tap->device, tap->terminal))) {
        bus_val_map_set_bool(reply, "duplicate", true); /* sold already: the same verdict */
        if (tap->offline) /* sold online, then taken offline too (the answer came late): the
                             terminal may forget it (in memory: a restart finds it sold again) */
            s_tap_sold(self, key, tap->seq);
        s_tap_verdict(reply, "approve", NULL);
        return reply;
    }
    if (self->stopped) {
        s_err(&c, "stopped", "%s", self->stopped_why);
        s_tap_verdict(reply, tap->offline ? "busy" : "decline", "stopped");
        return reply;
    }
    int64_t seq = self->sale_seq + 1;
    int64_t attempt = self->sv_attempt_seq == seq ? self->sv_attempt + 1 : 1;
    if (s_next_sale_held(self) || attempt > 99 ||
        (tap->offline && self->nsv >= S_SV_PENDING_MAX - S_SV_GIVEUP_ROOM)) {
        /* later: online, the terminal decides alone meanwhile; offline, it keeps it */
        s_tap_verdict(reply, "busy", NULL);
        return reply;
    }
    if (tap->offline) {
        s_tap_offline(&c, tap, key, seq, attempt);
        if (bus_val_map_get(reply, "error"))
            s_tap_verdict(reply, "busy", NULL);
        return reply;
    }
    bus_val_t *req = bus_val_new_map();
    bus_val_map_set_str(req, "tap", key);
    if (s_sv_record(self, "request", tap->card, seq, attempt, tap->amount, req) != 0) {
        s_err(&c, "stopped", "%s", self->stopped_why);
        s_tap_verdict(reply, "decline", "stopped");
        return reply;
    }
    self->sv_attempt_seq = seq;
    self->sv_attempt = attempt;
    char sale_id[POS_SALE_ID_MAX + 1], err[NODE_TILL_WHY_MAX] = "";
    pos_sale_make_id(sale_id, sizeof(sale_id), self->store, self->reg, seq);
    bool offline = true, asked = false;
    bus_val_t *r = NULL;
    if (self->sv_down && self->svcards) {
        snprintf(err, sizeof(err), "payments did not answer lately");
    } else if (self->hooks.request) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "card", tap->card);
        bus_val_map_set_int(body, "amount", tap->amount);
        bus_val_map_set_str(body, "sale_id", sale_id);
        bus_val_map_set_int(body, "attempt", attempt);
        asked = true;
        r = self->hooks.request(self->hooks.arg, "payments", "card.pay", &body, &offline, err,
                                sizeof(err));
        bus_val_destroy(&body);
    }
    bus_val_t *extra = bus_val_new_map();
    const char *code = NULL;
    char codebuf[40] = "", msg[NODE_TILL_WHY_MAX * 2];
    int64_t balance = 0;
    if (!r && (offline || strncmp(err, "unavailable", 11) == 0)) {
        if (self->svcards && !self->sv_down) {
            self->sv_down = true;
            self->sv_pull_ms = s_now(self) + S_SV_RETRY_MS;
        }
        code = s_sv_offline_refusal(self, tap->card, tap->amount, err, msg, sizeof(msg));
        if (!code) { /* taken here, within the card's offline cap */
            bus_val_map_set_int(extra, "taken_ms", s_now(self));
            bus_val_map_set_str(extra, "why", err[0] ? err : "no back office");
            if (s_sv_record(self, "offline", tap->card, seq, attempt, tap->amount, extra) != 0) {
                s_err(&c, "stopped", "%s", self->stopped_why);
                s_tap_verdict(reply, "decline", "stopped");
                return reply;
            }
            s_sv_add(self, tap->card, seq, attempt, tap->amount, s_now(self));
            bus_val_map_set_bool(reply, "offline", true);
        } else {
            bus_val_map_set_bool(extra, "ok", false);
            bus_val_map_set_str(extra, "mode", "offline");
            bus_val_map_set_str(extra, "code", code);
            if (s_sv_record(self, "result", tap->card, seq, attempt, tap->amount, extra) == 0 &&
                asked)
                s_sv_give_up(self, tap->card, seq, attempt, tap->amount,
                             "refused offline after the online request timed out");
            bus_val_map_set_str(reply, "reason", code);
            s_err(&c, "sv_declined", "%s", msg);
            s_tap_verdict(reply, "decline", code);
            return reply;
        }
    } else {
        bus_val_map_set_str(extra, "mode", "online");
        bus_val_map_set_bool(extra, "ok", r != NULL);
        if (r) {
            bus_val_map_get_int(r, "balance", &balance);
            bus_val_map_set_int(extra, "balance", balance);
        } else {
            snprintf(codebuf, sizeof(codebuf), "%.*s", (int)strcspn(err, ":"), err);
            bus_val_map_set_str(extra, "code", codebuf);
            bus_val_map_set_str(extra, "message", err);
        }
        int rec = s_sv_record(self, "result", tap->card, seq, attempt, tap->amount, extra);
        if (!r) {
            if (strcmp(codebuf, "card_blocked") == 0 && self->svcards) {
                node_svcard_block(self->svcards, tap->card, true);
                s_sv_save(self);
            }
            s_sv_refresh(self, tap->card); /* its cap and balance, for offline use */
            bus_val_map_set_str(reply, "reason", codebuf);
            s_err(&c, rec == 0 ? "sv_declined" : "stopped", "card not charged (%s)", err);
            s_tap_verdict(reply, "decline", codebuf);
            return reply;
        }
        bus_val_destroy(&r);
        if (self->svcards) {
            node_svcard_seen(self->svcards, tap->card, -1, balance, -1, s_now(self));
            s_sv_save(self);
        }
        bus_val_map_set_int(reply, "card_balance", balance);
    }
    if (s_tap_sale(&c, tap) != 0) {
        /* charged, not sold (the journal refused the sale): given back (card.void) before any
           other sale takes the number, or at the next start */
        s_tap_unsold(self, tap->card, seq, attempt, tap->amount);
        s_tap_verdict(reply, "decline", "stopped");
        return reply;
    }
    s_tap_sold(self, key, 0);
    s_tap_verdict(reply, "approve", NULL);
    if (!bus_val_map_get(reply, "offline"))
        s_sv_refresh(self, tap->card); /* its offline cap, which may have changed */
    if (!bus_val_map_get(reply, "offline")) {
        char text[40];
        int64_t a = balance < 0 ? -balance : balance;
        snprintf(text, sizeof(text), "\xe4\xbd\x99\xe9\xa2\x9d %s%" PRId64 ".%02" PRId64, /* 余额 */
                 balance < 0 ? "-" : "", a / 100, a % 100);
        bus_val_map_set_str(reply, "text", text);
    }
    return reply;
}

static int s_cmd_pay(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (!s_need_cashier(c))
        return -1;
    if (self->pending) /* the journal refused the sale: write it again */
        return s_complete(c);
    if (c->argc >= 1 && strcmp(c->argv[0], "code") == 0)
        return s_wallet_start(c);
    if (c->argc >= 1 && strcmp(c->argv[0], "sv") == 0)
        return s_sv_start(c);
    if (c->argc >= 1 && strcmp(c->argv[0], "refund") == 0)
        return s_refund_start(c);
    if (c->argc < 1 || c->argc > 2)
        return s_err(c, "usage",
                     "pay cash|card|wechat|alipay|stored_value|other [AMOUNT], pay code CODE, "
                     "pay sv CARD, pay refund");
    if (self->stopped)
        return s_err(c, "stopped", "%s", self->stopped_why);
    if (!s_has_lines(self))
        return s_err(c, "no_ticket", "no ticket is open");
    if (self->wallet.sale_seq && !self->wallet.orphan)
        return s_err(c, "wallet_waiting", "the payment code is being paid: wait for the answer");
    int kind = pos_tender_parse(c->argv[0]);
    if (kind < 0)
        return s_err(c, "bad_tender", "unknown tender %s", c->argv[0]);
    bool terminal = kind == POS_TENDER_CARD && s_card_terminal(self);
    if (self->card.key[0] && (!self->card.orphan || terminal))
        return s_err(c, "card_waiting", "the card terminal has %s: wait for its answer",
                     self->card.orphan ? "an unresolved payment" : "the payment");
    /* without an amount: what is still due for this tender (cash rounded, any other exact) */
    int64_t amount = pos_ticket_remaining_for(self->ticket, (pos_tender_kind_t)kind);
    if (c->argc == 2 && !s_money(c->argv[1], true, &amount))
        return s_err(c, "bad_amount", "amount: yuan with at most two decimals%s",
                     kind == POS_TENDER_STORED_VALUE ? " (a card through payments: pay sv CARD)"
                                                     : "");
    if (pos_ticket_totals(self->ticket)->total < 0 && amount > 0)
        amount = -amount; /* a refund is paid out */
    if (amount == 0 && !pos_ticket_is_paid(self->ticket)) {
        int64_t rest = pos_ticket_remaining_for(self->ticket, POS_TENDER_CARD);
        if (kind == POS_TENDER_CASH && rest > 0) /* 0.01-0.04 left: cash rounds it away */
            return s_err(c, "bad_amount",
                         "%" PRId64 " fen left, which cash rounds to nothing: pay it by card or "
                         "wallet, or hand over cash with an amount (pay cash 0.10)",
                         rest);
        if (kind == POS_TENDER_CASH && rest < 0)
            return s_err(c, "bad_amount",
                         "%" PRId64 " fen to give back, which cash rounds to nothing: refund it "
                         "by card or wallet, or cancel the ticket",
                         -rest);
        return s_err(c, "bad_amount", "a tender of 0");
    }
    if ((kind == POS_TENDER_CASH || kind == POS_TENDER_CARD) && amount < 0 &&
        !s_payout_ok(c, (pos_tender_kind_t)kind, amount))
        return -1; /* more out than the returned sales took that way */
    if (terminal && amount != 0)
        return s_card_start(c, amount);
    if (amount != 0) {
        pos_err_t e = pos_ticket_add_tender(self->ticket, (pos_tender_kind_t)kind, amount);
        if (e != POS_OK)
            return s_err(c, "bad_amount", "%s", pos_strerror(e));
    }
    if (!pos_ticket_is_paid(self->ticket))
        return 0;
    return s_complete(c);
}

static int s_cmd_nosale(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (!s_can_sell(c))
        return -1;
    if (s_has_lines(self))
        return s_err(c, "ticket_open", "finish, park or cancel the ticket first");
    char reason[S_REASON_MAX * 4];
    s_rest(c, 0, reason, sizeof(reason));
    bus_val_t *ctx = bus_val_new_map();
    bus_val_map_set_str(ctx, "why", reason);
    bus_val_map_set_int(ctx, "sale_seq", self->sale_seq + 1);
    if (!s_authorize(c, NODE_ACTION_NO_SALE, ctx))
        return -1;
    const node_cashier_t *who = node_session_cashier(self->session);
    pos_sale_t sale;
    pos_sale_init(&sale);
    pos_sale_make_id(sale.sale_id, sizeof(sale.sale_id), self->store, self->reg,
                     self->sale_seq + 1);
    snprintf(sale.store, sizeof(sale.store), "%s", self->store);
    snprintf(sale.reg, sizeof(sale.reg), "%s", self->reg);
    snprintf(sale.cashier, sizeof(sale.cashier), "%s", who->id);
    sale.seq = self->sale_seq + 1;
    sale.ts = s_now(self);
    sale.kind = POS_SALE_NOSALE;
    int rc = s_commit(c, &sale);
    pos_sale_clear(&sale);
    if (rc == 0)
        bus_val_map_set_bool(c->reply, "drawer_open", true);
    return rc;
}

static int s_cmd_cash(s_cmd_t *c, bool in)
{
    node_till_t *self = c->till;
    int64_t amount;
    if (c->argc < 1)
        return s_err(c, "usage", "%s AMOUNT [REASON]", in ? "cash-in" : "cash-out");
    if (!s_can_sell(c))
        return -1;
    if (!s_money(c->argv[0], false, &amount) || amount == 0)
        return s_err(c, "bad_amount", "amount: yuan above 0");
    char reason[S_REASON_MAX * 4];
    /* it opens the drawer: the same permission as a no-sale */
    bus_val_t *ctx = bus_val_new_map();
    bus_val_map_set_str(ctx, "what", in ? "cash_in" : "cash_out");
    bus_val_map_set_int(ctx, "amount", amount);
    if (!s_authorize(c, NODE_ACTION_NO_SALE, ctx))
        return -1;
    const node_cashier_t *who = node_session_cashier(self->session);
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", in ? "cash_in" : "cash_out");
    bus_val_map_set_str(doc, "cashier", who->id);
    bus_val_map_set_int(doc, "amount", amount);
    bus_val_map_set_str(doc, "why", s_rest(c, 1, reason, sizeof(reason)));
    if (s_audit_record(self, &doc) != 0)
        return s_err(c, "stopped", "%s", self->stopped_why);
    if (in)
        self->shift.cash_in += amount;
    else
        self->shift.cash_out += amount;
    bus_val_map_set_bool(c->reply, "drawer_open", true);
    return 0;
}

/*  After a Z report: archive the journal segment if every sale in it is acknowledged (else the
    next Z tries again), start the next one, delete archives past retention. */
static void s_rotate(node_till_t *self, bus_val_t *reply)
{
    int64_t acked = self->hooks.acked ? self->hooks.acked(self->hooks.arg) : -1;
    char why[NODE_TILL_WHY_MAX] = "";
    if (self->sale_seq == self->base)
        return; /* no sale in this segment */
    if (acked < self->sale_seq) {
        bus_val_map_set_str(reply, "journal",
                            "kept open: not every sale is acknowledged yet (next Z archives it)");
        return;
    }
    if (self->nrefunds) { /* their refund_plan records are read back from this segment */
        bus_val_map_set_str(reply, "journal",
                            "kept open: refunds wait for payments (next Z archives it)");
        return;
    }
    if (self->nsv) { /* their sv_offline records are read back from this segment at start */
        bus_val_map_set_str(reply, "journal",
                            "kept open: offline card deductions wait for their upload (next Z archives it)");
        return;
    }
    node_journal_destroy(&self->journal);
    if (node_segment_archive(self->path, self->base + 1, self->sale_seq, why, sizeof(why)) != 0) {
        bus_val_map_set_str(reply, "journal", why); /* the old one is opened again: nothing lost */
        return;
    }
    self->segment++;
    node_journal_status_t st;
    if (s_open_journal(self, &st, why, sizeof(why)) != 0) {
        self->stopped = true;
        snprintf(self->stopped_why, sizeof(self->stopped_why),
                 "selling stopped: cannot start the next journal: %s", why);
        return;
    }
    bus_val_map_set_str(reply, "journal", "archived; a new segment starts");
    if (node_segment_prune(self->path, acked, self->retention_days, why, sizeof(why)) > 0)
        bus_val_map_set_bool(reply, "pruned", true);
}

static int s_cmd_report(s_cmd_t *c, bool z)
{
    node_till_t *self = c->till;
    if (!s_need_cashier(c))
        return -1;
    if (z && s_has_lines(self))
        return s_err(c, "ticket_open", "finish, park or cancel the ticket first");
    if (z && self->wallet.sale_seq)
        return s_err(c, "wallet_open", "a code payment is unresolved: pay-status, or pay-cancel");
    if (z && self->card.key[0])
        return s_err(c, "card_open", "a card payment is unresolved: card-status, or card-cancel");
    if (!s_authorize(c, z ? NODE_ACTION_Z_REPORT : NODE_ACTION_X_REPORT, NULL))
        return -1;
    bus_val_t *report = s_shift_val(self);
    if (z) {
        bus_val_map_set_str(report, "type", "z");
        bus_val_map_set_str(report, "cashier", node_session_cashier(self->session)->id);
        bus_val_map_set_int(report, "ts", s_now(self));
        int64_t rec = s_append(self, NODE_JOURNAL_MARK, report);
        if (rec < 0) {
            bus_val_destroy(&report);
            return s_err(c, "stopped", "%s", self->stopped_why);
        }
        bus_val_map_set_int(report, "record", rec);
        bus_val_t *event = bus_val_dup(report);
        s_publish(self, "z", "node.z", &event);
        int64_t zc = self->shift.z_count + 1;
        memset(&self->shift, 0, sizeof(self->shift));
        self->shift.z_count = zc;
        self->shift.opened_ms = s_now(self);
        s_rotate(self, c->reply);
    }
    bus_val_map_set(c->reply, "report", &report);
    return 0;
}

/* ---- park, recall and returns (need the back office) --------------------------------- */

static bus_val_t *s_request(s_cmd_t *c, const char *service, const char *method, bus_val_t *body,
                            bool *offline, bool quiet_offline)
{
    char err[NODE_TILL_WHY_MAX] = "";
    *offline = true;
    if (!c->till->hooks.request) {
        bus_val_destroy(&body);
        if (!quiet_offline)
            s_err(c, "offline", "no back office");
        return NULL;
    }
    *offline = false;
    bus_val_t *rep = c->till->hooks.request(c->till->hooks.arg, service, method, &body, offline,
                                            err, sizeof(err));
    bus_val_destroy(&body);
    if (!rep && !(quiet_offline && *offline))
        s_err(c, *offline ? "offline" : "refused", "%s %s: %s", service, method, err);
    return rep;
}

static bus_val_t *s_parked_line(const pos_line_t *l)
{
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_str(m, "sku", l->item.sku);
    bus_val_map_set_str(m, "name", l->item.name);
    bus_val_map_set_str(m, "category", l->item.category);
    bus_val_map_set_str(m, "unit", l->item.unit == POS_UNIT_KG ? "kg" : "pcs");
    bus_val_map_set_int(m, "price", l->item.price);
    bus_val_map_set_int(m, "member_price", l->item.member_price);
    bus_val_map_set_int(m, "tax_rate_bp", l->item.tax_rate_bp);
    bus_val_map_set_int(m, "qty", l->qty);
    return m;
}

static int s_cmd_park(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (!s_can_sell(c))
        return -1;
    if (!s_has_lines(self))
        return s_err(c, "no_ticket", "no ticket is open");
    bus_val_t *lines = bus_val_new_arr();
    for (int i = 0; i < pos_ticket_line_count(self->ticket); i++) {
        const pos_line_t *l = pos_ticket_line(self->ticket, i);
        if (l->is_return)
            return bus_val_destroy(&lines), s_err(c, "has_return", "a return cannot be parked");
        if (!l->voided) {
            bus_val_t *m = s_parked_line(l);
            bus_val_arr_push(lines, &m);
        }
    }
    bus_val_t *ticket = bus_val_new_map();
    bus_val_map_set(ticket, "lines", &lines);
    bus_val_map_set_bool(ticket, "member", self->member);
    bus_val_map_set_int(ticket, "discount_bp", self->discount_bp);
    bus_val_map_set_int(ticket, "discount_amount", self->discount_amount);
    bus_val_map_set_str(ticket, "cashier", node_session_cashier(self->session)->id);
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", self->store);
    bus_val_map_set_str(body, "register", self->reg);
    bus_val_map_set(body, "ticket", &ticket);
    bool offline;
    bus_val_t *rep = s_request(c, "sales", "sale.park", body, &offline, false);
    if (!rep)
        return -1;
    const char *id = bus_val_map_get_str(rep, "park_id");
    bus_val_map_set_str(c->reply, "park_id", id ? id : "");
    bus_val_destroy(&rep);
    s_ticket_close(self);
    return 0;
}

static bool s_parked_item(const bus_val_t *m, pos_item_t *item, int64_t *qty)
{
    const char *sku = bus_val_map_get_str(m, "sku");
    const char *name = bus_val_map_get_str(m, "name");
    const char *cat = bus_val_map_get_str(m, "category");
    const char *unit = bus_val_map_get_str(m, "unit");
    int64_t tax = 0;
    memset(item, 0, sizeof(*item));
    if (!sku || !pos_sale_id_ok(sku, POS_SKU_MAX, "-.") || !unit ||
        !bus_val_map_get_int(m, "price", &item->price) ||
        !bus_val_map_get_int(m, "member_price", &item->member_price) ||
        !bus_val_map_get_int(m, "tax_rate_bp", &tax) || !bus_val_map_get_int(m, "qty", qty) ||
        tax < 0 || tax > 10000 || item->price < 0 || item->price > POS_AMOUNT_MAX ||
        item->member_price < 0 || item->member_price > POS_AMOUNT_MAX || *qty < 1 ||
        *qty > POS_QTY_MAX || (name && !pos_text_ok(name, POS_NAME_CHARS, false)) ||
        (cat && !pos_text_ok(cat, POS_CATEGORY_CHARS, false)))
        return false;
    snprintf(item->sku, sizeof(item->sku), "%s", sku);
    snprintf(item->name, sizeof(item->name), "%s", name ? name : "");
    snprintf(item->category, sizeof(item->category), "%s", cat ? cat : "");
    item->tax_rate_bp = (int)tax;
    item->unit = strcmp(unit, "kg") == 0 ? POS_UNIT_KG : POS_UNIT_PCS;
    return true;
}

static int s_cmd_recall(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc != 1)
        return s_err(c, "usage", "recall PARK_ID");
    if (!s_can_sell(c))
        return -1;
    if (s_has_lines(self))
        return s_err(c, "ticket_open", "finish, park or cancel the open ticket first");
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", self->store);
    bus_val_map_set_str(body, "park_id", c->argv[0]);
    bool offline;
    bus_val_t *rep = s_request(c, "sales", "sale.recall", body, &offline, false);
    if (!rep)
        return -1;
    bus_val_t *ticket = bus_val_map_get(rep, "ticket");
    bus_val_t *lines = bus_val_map_get(ticket, "lines");
    s_ticket_close(self);
    bool member = false;
    int64_t bp = 0, amount = 0;
    bus_val_map_get_bool(ticket, "member", &member);
    bus_val_map_get_int(ticket, "discount_bp", &bp);
    bus_val_map_get_int(ticket, "discount_amount", &amount);
    self->member = member;
    int added = 0;
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        pos_item_t item;
        int64_t qty;
        int index;
        if (s_parked_item(bus_val_arr_get(lines, i), &item, &qty) && s_ticket(self) &&
            pos_ticket_add_line(self->ticket, &item, qty, &index) == POS_OK)
            added++;
    }
    bus_val_destroy(&rep);
    if (!self->ticket)
        return s_err(c, "bad_ticket", "the parked ticket has no line this register can sell");
    if (bp >= 0 && bp <= 10000 && amount >= 0 && amount <= POS_AMOUNT_MAX) {
        self->discount_bp = bp;
        self->discount_amount = amount;
    }
    if (s_apply_discount(self) != POS_OK) {
        self->discount_bp = self->discount_amount = 0;
        s_apply_discount(self);
    }
    bus_val_map_set_int(c->reply, "recalled_lines", added);
    return 0;
}

/*  What the customer paid per unit for sku on the original sale doc (the amount after
    discounts over the quantity, rounded down so that refunds never exceed it), its item, and
    the quantity sold. false if the sale has no live line of sku. */
static bool s_original_line(const bus_val_t *sale, const char *sku, pos_item_t *item,
                            int64_t *per_unit, int64_t *sold, int64_t *paid)
{
    bus_val_t *lines = bus_val_map_get(sale, "lines");
    int64_t qty = 0, amount = 0;
    bool found = false;
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        bus_val_t *l = bus_val_arr_get(lines, i);
        const char *s = bus_val_map_get_str(l, "sku");
        bool voided = false;
        int64_t q = 0, a = 0, tax = 0;
        bus_val_map_get_bool(l, "voided", &voided);
        if (!s || strcmp(s, sku) != 0 || voided || !bus_val_map_get_int(l, "qty", &q) || q <= 0 ||
            !bus_val_map_get_int(l, "amount", &a))
            continue;
        if (!found) {
            memset(item, 0, sizeof(*item));
            snprintf(item->sku, sizeof(item->sku), "%s", sku);
            const char *name = bus_val_map_get_str(l, "name");
            const char *cat = bus_val_map_get_str(l, "category");
            const char *unit = bus_val_map_get_str(l, "unit");
            snprintf(item->name, sizeof(item->name), "%s", name ? name : "");
            snprintf(item->category, sizeof(item->category), "%s", cat ? cat : "");
            bus_val_map_get_int(l, "tax_rate_bp", &tax);
            item->tax_rate_bp = (int)tax;
            item->unit = unit && strcmp(unit, "kg") == 0 ? POS_UNIT_KG : POS_UNIT_PCS;
            bus_val_map_get_int(l, "unit_price", &item->price);
            found = true;
        }
        qty += q;
        amount += a;
    }
    if (!found || qty <= 0)
        return false;
    int64_t scale = item->unit == POS_UNIT_KG ? POS_GRAMS_PER_KG : 1;
    *per_unit = (int64_t)((__int128)amount * scale / qty);
    *sold = qty;
    *paid = amount;
    return true;
}

static int s_cmd_return(s_cmd_t *c)
{
    node_till_t *self = c->till;
    if (c->argc < 3 || c->argc > 4)
        return s_err(c, "usage", "return SALE_ID SKU QTY [PRICE_PER_UNIT] [approve ID PIN]");
    if (!s_can_sell(c))
        return -1;
    const char *sale_id = c->argv[0], *sku = c->argv[1];
    int64_t qty, per_unit = 0, sold = 0;
    if (!pos_sale_id_ok(sale_id, POS_SALE_ID_MAX, "-"))
        return s_err(c, "bad_sale_id", "no such sale id: %s", sale_id);
    if (!s_count(c->argv[2], 1, POS_QTY_MAX, &qty))
        return s_err(c, "bad_quantity", "quantity: 1..%d pieces or grams", POS_QTY_MAX);
    pos_item_t item;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", self->store);
    bus_val_map_set_str(body, "sale_id", sale_id);
    bool offline = false;
    bus_val_t *rep = s_request(c, "sales", "sale.get", body, &offline, true);
    int64_t ret_cash = 0, ret_card = 0;
    if (rep) {
        int64_t paid = 0;
        bool ok =
            s_original_line(bus_val_map_get(rep, "sale"), sku, &item, &per_unit, &sold, &paid);
        s_return_original(bus_val_map_get(rep, "sale"), &ret_cash, &ret_card);
        /* what earlier returns took back and refunded (sales keeps both), and this ticket's own
           return lines of it: sales refuses a return beyond what is left of either, and a
           refused sale would stop this register's uploads */
        int64_t before = 0, refunded = 0, here = 0, here_fen = 0;
        bus_val_map_get_int(bus_val_map_get(rep, "returned"), sku, &before);
        bus_val_map_get_int(bus_val_map_get(rep, "refunded"), sku, &refunded);
        bus_val_destroy(&rep);
        for (int i = 0; self->ticket && i < pos_ticket_line_count(self->ticket); i++) {
            const pos_line_t *l = pos_ticket_line(self->ticket, i);
            if (l->is_return && !l->voided && strcmp(l->return_of, sale_id) == 0 &&
                strcmp(l->item.sku, sku) == 0) {
                here -= l->qty;
                here_fen -= l->amount;
            }
        }
        if (!ok)
            return s_err(c, "not_on_sale", "%s sold no %s", sale_id, sku);
        if (qty > sold - before - here)
            return s_err(c, "too_many",
                         "%s sold %" PRId64 " of %s; %" PRId64 " returned already, %" PRId64
                         " on this ticket",
                         sale_id, sold, sku, before, here);
        /* the refund never exceeds what is left of what was paid for it: a weighed item's
           amount is rounded per return, so partial returns at the price per kg could add up
           to a fen more; the last one is refunded at the highest price that fits */
        int64_t left = paid - refunded - here_fen;
        int64_t cap = item.unit == POS_UNIT_KG
                          ? (int64_t)(((__int128)left * POS_GRAMS_PER_KG + POS_GRAMS_PER_KG / 2 - 1) /
                                      qty)
                          : left / qty;
        if (left <= 0 || cap <= 0)
            return s_err(c, "too_many", "%s: what was paid for %s is refunded already", sale_id,
                         sku);
        if (per_unit > cap)
            per_unit = cap;
    } else if (offline) {
        /* offline with the receipt: the refund per unit as printed, and a supervisor */
        if (c->argc != 4 || !s_money(c->argv[3], false, &per_unit))
            return s_err(c, "offline",
                         "the back office cannot be reached: return SALE_ID SKU "
                         "QTY PRICE approve SUPERVISOR PIN, from the receipt");
        if (!c->approver_id)
            return s_err(c, "not_permitted", "an offline return needs a supervisor's approval");
        const node_catalog_item_t *ci =
            self->catalog ? node_catalog_lookup(self->catalog, sku, NULL) : NULL;
        if (!ci)
            return s_err(c, "unknown_code", "no item %s in the catalog", sku);
        node_catalog_to_pos(ci, &item);
    } else {
        return -1; /* refused: the error is set */
    }
    bus_val_t *ctx = bus_val_new_map();
    bus_val_map_set_str(ctx, "return_of", sale_id);
    bus_val_map_set_str(ctx, "sku", sku);
    bus_val_map_set_int(ctx, "qty", qty);
    bus_val_map_set_int(ctx, "per_unit", per_unit);
    bus_val_map_set_bool(ctx, "offline", offline);
    bus_val_map_set_int(ctx, "sale_seq", self->sale_seq + 1);
    if (!s_authorize(c, NODE_ACTION_RETURN, ctx))
        return -1;
    /* an offline approval with a cashier who has the permission still needs a supervisor */
    if (offline && !bus_val_map_get(c->reply, "approved_by") &&
        node_session_cashier(self->session)->role < NODE_ROLE_SUPERVISOR)
        return s_err(c, "not_permitted", "an offline return needs a supervisor's approval");
    pos_ticket_t *t = s_ticket(self);
    int index;
    pos_err_t e = t ? pos_ticket_add_return(t, &item, qty, per_unit, sale_id, &index) : POS_ELIMIT;
    if (e == POS_OK)
        e = s_compute(self);
    if (e != POS_OK)
        return s_err(c, "refused", "cannot add the return: %s", pos_strerror(e));
    if (offline) /* the supervisor who approved it decides how it is paid out too */
        s_return_remember(self, sale_id, INT64_MAX / 4, INT64_MAX / 4);
    else
        s_return_remember(self, sale_id, ret_cash, ret_card);
    bus_val_map_set_int(c->reply, "line", index + 1);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------ */

static void s_state(node_till_t *self, bus_val_t *reply)
{
    const node_cashier_t *who = node_session_cashier(self->session);
    if (who) {
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_str(m, "id", who->id);
        bus_val_map_set_str(m, "name", who->name);
        bus_val_map_set_str(m, "role", node_role_name(who->role));
        bus_val_map_set(reply, "cashier", &m);
    } else {
        bus_val_t *nil = bus_val_new_nil();
        bus_val_map_set(reply, "cashier", &nil);
    }
    if (self->ticket) {
        bus_val_t *t = s_ticket_val(self);
        bus_val_map_set(reply, "ticket", &t);
    } else {
        bus_val_t *nil = bus_val_new_nil();
        bus_val_map_set(reply, "ticket", &nil);
    }
    if (self->wallet.sale_seq) {
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_str(m, "provider", self->wallet.provider);
        bus_val_map_set_int(m, "amount", self->wallet.amount);
        bus_val_map_set_int(m, "attempt", self->wallet.attempt);
        bus_val_map_set_str(m, "intent", self->wallet.intent);
        bus_val_map_set_str(m, "state", self->wallet.orphan ? "before_restart" : self->wallet.state);
        bus_val_map_set(reply, "wallet", &m);
    }
    if (self->card.key[0]) {
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_str(m, "key", self->card.key);
        bus_val_map_set_int(m, "amount", self->card.amount);
        bus_val_map_set_str(m, "state", self->card.orphan    ? "before_restart"
                                        : self->card.unknown ? "unknown"
                                                             : "at_terminal");
        if (self->card.status[0])
            bus_val_map_set_str(m, "status", self->card.status);
        bus_val_map_set(reply, "card", &m);
    }
    bus_val_map_set_int(reply, "last_sale", self->sale_seq);
    bus_val_map_set_bool(reply, "stopped", self->stopped);
    if (self->stopped)
        bus_val_map_set_str(reply, "stopped_why", self->stopped_why);
    if (self->office_text[0]) {
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_str(m, "text", self->office_text);
        bus_val_map_set_str(m, "key", self->office_key);
        bus_val_map_set(reply, "office_message", &m);
    }
    bus_val_map_set_int(reply, "config_version", self->cfg.version);
    bus_val_map_set_int(reply, "catalog_version",
                        self->catalog ? node_catalog_version(self->catalog) : 0);
    if (self->nsv) /* offline card deductions not uploaded yet */
        bus_val_map_set_int(reply, "sv_unsent", self->nsv);
    if (self->nrefunds) /* refunds of returns not taken by payments yet */
        bus_val_map_set_int(reply, "refunds_pending", self->nrefunds);
    if (self->refunds_refused) /* refused by payments for good: an operator refunds by hand */
        bus_val_map_set_int(reply, "refunds_refused", self->refunds_refused);
}

static int s_dispatch(s_cmd_t *c)
{
    static const struct {
        const char *name;
        int (*fn)(s_cmd_t *c);
    } table[] = {
        {"login", s_cmd_login},   {"logout", s_cmd_logout},     {"scan", s_cmd_scan},
        {"qty", s_cmd_qty},       {"weigh", s_cmd_weigh},       {"void", s_cmd_void},
        {"cancel", s_cmd_cancel}, {"discount", s_cmd_discount}, {"price", s_cmd_price},
        {"member", s_cmd_member}, {"park", s_cmd_park},         {"recall", s_cmd_recall},
        {"pay", s_cmd_pay},       {"return", s_cmd_return},     {"no-sale", s_cmd_nosale},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(c->cmd, table[i].name) == 0)
            return table[i].fn(c);
    if (strcmp(c->cmd, "cash-in") == 0 || strcmp(c->cmd, "cash-out") == 0)
        return s_cmd_cash(c, strcmp(c->cmd, "cash-in") == 0);
    if (strcmp(c->cmd, "x") == 0 || strcmp(c->cmd, "z") == 0)
        return s_cmd_report(c, strcmp(c->cmd, "z") == 0);
    if (strcmp(c->cmd, "pay-status") == 0 || strcmp(c->cmd, "pay-cancel") == 0)
        return s_cmd_wallet(c, strcmp(c->cmd, "pay-cancel") == 0);
    if (strcmp(c->cmd, "card-status") == 0)
        return s_cmd_card_status(c);
    if (strcmp(c->cmd, "sv-info") == 0)
        return s_cmd_sv_info(c);
    if (strcmp(c->cmd, "card-cancel") == 0)
        return s_cmd_card_cancel(c);
    if (strcmp(c->cmd, "card-eod") == 0)
        return s_cmd_card_eod(c);
    if (strcmp(c->cmd, "state") == 0)
        return 0;
    c->cmd = "?"; /* not echoed: a PIN typed in the wrong place must not come back */
    bus_val_map_set_str(c->reply, "cmd", "?");
    return s_err(c, "unknown_command", "unknown command (docs/posnode.md lists them)");
}

bus_val_t *node_till_command(node_till_t *self, const char *line)
{
    bus_val_t *reply = bus_val_new_map();
    if (!reply)
        return NULL;
    char buf[NODE_TILL_LINE_MAX + 1];
    s_cmd_t c = {.till = self, .reply = reply, .cmd = ""};
    size_t len = strlen(line);
    bus_val_map_set_bool(reply, "ok", true);
    if (len > NODE_TILL_LINE_MAX) {
        s_err(&c, "too_long", "a command is at most %d bytes", NODE_TILL_LINE_MAX);
    } else {
        memcpy(buf, line, len + 1);
        char *save = NULL, *word = strtok_r(buf, " \t\r\n", &save);
        c.cmd = word ? word : "";
        while (word && (word = strtok_r(NULL, " \t\r\n", &save)) && c.argc < S_ARGS_MAX)
            c.argv[c.argc++] = word;
        if (word && strtok_r(NULL, " \t\r\n", &save))
            s_err(&c, "usage", "too many words");
        /* a supervisor's approval comes last: ... approve ID PIN */
        if (c.argc >= 3 && strcmp(c.argv[c.argc - 3], "approve") == 0) {
            c.approver_id = c.argv[c.argc - 2];
            c.approver_pin = c.argv[c.argc - 1];
            c.argc -= 3;
        }
        bus_val_map_set_str(reply, "cmd", c.cmd);
        if (!*c.cmd)
            s_err(&c, "usage", "empty command");
        else if (!bus_val_map_get(reply, "error"))
            s_dispatch(&c);
        OPENSSL_cleanse(buf, sizeof(buf)); /* PINs */
    }
    s_state(self, reply);
    return reply;
}

/* ---- device commands from the back office ------------------------------------------------- */

static bus_val_t *s_command_result(const char *key, bool ok, const char *error)
{
    bus_val_t *r = bus_val_new_map();
    bus_val_map_set_str(r, "key", key);
    bus_val_map_set_bool(r, "ok", ok);
    bus_val_t *result = bus_val_new_map();
    bus_val_map_set(r, "result", &result);
    if (error)
        bus_val_map_set_str(r, "error", error);
    return r;
}

bus_val_t *node_till_device_command(node_till_t *self, const bus_val_t *cmd)
{
    const char *key = bus_val_map_get_str(cmd, "key");
    const char *device = bus_val_map_get_str(cmd, "device");
    const char *command = bus_val_map_get_str(cmd, "command");
    bus_val_t *args = bus_val_map_get(cmd, "args");
    if (!key || !*key || strlen(key) > S_COMMAND_KEY_MAX)
        return NULL; /* nothing to answer to */
    if (s_done(self, key)) {
        bus_val_t *r = s_command_result(key, true, NULL);
        bus_val_map_set_bool(bus_val_map_get(r, "result"), "already_done", true);
        return r;
    }
    if (!device || !command)
        return s_command_result(key, false, "bad_command: device and command required");
    if (strcmp(device, "till") != 0) {
        /* a peripheral: ask first whether it takes this (nothing is journaled for a refusal,
           so a command for a device configured later still runs then) */
        char err[NODE_TILL_WHY_MAX] = "";
        int known = self->hooks.device
                        ? self->hooks.device(self->hooks.arg, device, command, args, NULL, 0)
                        : 0;
        if (known == 0)
            return s_command_result(key, false, "no_device: this register has no such device");
        if (known < 0)
            return s_command_result(key, false, "bad_command: the device does not take that");
        bus_val_t *doc = bus_val_new_map();
        bus_val_map_set_str(doc, "type", "device_command");
        bus_val_map_set_str(doc, "key", key);
        bus_val_map_set_str(doc, "device", device);
        bus_val_map_set_str(doc, "command", command);
        if (s_audit_record(self, &doc) != 0 || s_done_add(self, key) != 0)
            return NULL;
        int r = self->hooks.device(self->hooks.arg, device, command, args, err, sizeof(err));
        bus_val_t *res = s_command_result(key, r > 0, r > 0 ? NULL : err);
        if (r > 0)
            bus_val_map_set_bool(bus_val_map_get(res, "result"), "queued", true);
        return res;
    }
    if (strcmp(command, "display") != 0)
        return s_command_result(key, false, "bad_command: the till only takes display");
    const char *text = bus_val_map_get_str(args, "text");
    if (!text || !pos_text_ok(text, S_OFFICE_TEXT_MAX, true))
        return s_command_result(key, false, "bad_args: display needs text, 1-200 characters");
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "device_command");
    bus_val_map_set_str(doc, "key", key);
    bus_val_map_set_str(doc, "device", device);
    bus_val_map_set_str(doc, "command", command);
    bus_val_map_set_str(doc, "text", text);
    if (s_audit_record(self, &doc) != 0 || s_done_add(self, key) != 0)
        return NULL; /* not carried out: left pending at devices, tried again later */
    snprintf(self->office_text, sizeof(self->office_text), "%s", text);
    snprintf(self->office_key, sizeof(self->office_key), "%s", key);
    bus_val_t *r = s_command_result(key, true, NULL);
    bus_val_map_set_bool(bus_val_map_get(r, "result"), "shown", true);
    return r;
}
