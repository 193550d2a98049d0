/*  =========================================================================
    pos/ticket.h - an open ticket: lines, promotions, discounts, tenders

    The ticket prices itself from the items and promotions it is given (no
    catalog lookups, no clock: the caller passes items and the time), so the
    register prices offline and a service re-prices a committed sale the
    same way to validate it.

    Pricing order (documented in docs/libpos.md; each step sees the result
    of the one before):
      1. Unit price: the member price when a member is attached and the item
         has a lower member price.
      2. Line gross: unit price x quantity (pieces), or price per kg x grams
         / 1000 rounded half away from zero (weighed items).
      3. Item promotions, best deal wins: for each SKU, every active
         promotion that applies to it (by SKU or category, inside its time
         window) is evaluated on all of that SKU's lines together; the one
         giving the largest discount is applied (first added wins a tie).
         Item promotions never stack with each other. Kinds: percent off,
         amount off per unit (per kg for weighed items), quantity break
         ("3 for 10.00") and buy X get Y free (pieces only).
      4. Ticket discount (percent or amount) on what is left, allocated to
         the sale lines in proportion to their amounts, largest remainder
         first, so the shares add up to the discount exactly.
      5. Tax per line from the line's final amount (pos/tax.h).
      6. Cash rounding (optional): what is due in cash is rounded to 0.10
         yuan, half away from zero; the difference is shown as rounding.
    Return lines carry the amount originally paid per unit and are never
    discounted again. Voided lines stay on the ticket (audit) at zero.
    =========================================================================
*/
#ifndef POS_TICKET_H_INCLUDED
#define POS_TICKET_H_INCLUDED

#include "pos/money.h"
#include "pos/tax.h"
#include "pos/text.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POS_SKU_MAX      32
#define POS_NAME_MAX     POS_TEXT_BYTES(POS_NAME_CHARS)     /* bytes of UTF-8 */
#define POS_CATEGORY_MAX POS_TEXT_BYTES(POS_CATEGORY_CHARS) /* bytes of UTF-8 */
#define POS_PROMO_ID_MAX 32
#define POS_SALE_ID_MAX  48
#define POS_LINES_MAX    1000
#define POS_PROMOS_MAX   64
#define POS_TENDERS_MAX  8
#define POS_GRAMS_PER_KG 1000
#define POS_CASH_STEP    10 /* fen: cash rounding to 0.1 yuan */

typedef enum { POS_UNIT_PCS = 0, POS_UNIT_KG } pos_unit_t;

typedef struct {
    char sku[POS_SKU_MAX + 1];
    char name[POS_NAME_MAX + 1]; /* UTF-8 */
    char category[POS_CATEGORY_MAX + 1];
    int64_t price;        /* fen per piece, or per kg for POS_UNIT_KG */
    int64_t member_price; /* 0 = no member price */
    int tax_rate_bp;      /* 1300 = 13% */
    pos_unit_t unit;
} pos_item_t;

typedef enum {
    POS_PROMO_PERCENT = 0, /* percent_bp off */
    POS_PROMO_AMOUNT,      /* amount off per piece (per kg for weighed items) */
    POS_PROMO_QTY_BREAK,   /* qty pieces for amount ("3 for 10.00") */
    POS_PROMO_BUY_X_GET_Y  /* for every qty bought, free_qty more free */
} pos_promo_kind_t;

typedef struct {
    char id[POS_PROMO_ID_MAX + 1];
    char sku[POS_SKU_MAX + 1];           /* applies to this SKU, or */
    char category[POS_CATEGORY_MAX + 1]; /* to every item of this category */
    pos_promo_kind_t kind;
    int percent_bp;
    int64_t amount;
    int qty;
    int free_qty;
    int64_t start_ms, end_ms; /* active when start <= now < end; both 0 = always */
} pos_promo_t;

typedef struct {
    pos_item_t item;
    int64_t qty; /* pieces, or grams for weighed items; negative for returns */
    bool voided;
    bool is_return;
    char return_of[POS_SALE_ID_MAX + 1];
    int64_t unit_price;     /* price used (member price applied) or amount refunded per unit */
    int64_t gross;          /* before discounts */
    int64_t promo_discount; /* item promotion share, >= 0 */
    char promo_id[POS_PROMO_ID_MAX + 1];
    int64_t ticket_discount; /* ticket discount share, >= 0 */
    int64_t amount;          /* gross - promo_discount - ticket_discount */
    int64_t tax;
} pos_line_t;

typedef enum {
    POS_TENDER_CASH = 0,
    POS_TENDER_CARD,
    POS_TENDER_WECHAT,
    POS_TENDER_ALIPAY,
    POS_TENDER_STORED_VALUE,
    POS_TENDER_OTHER,
    POS_TENDER__COUNT
} pos_tender_kind_t;

const char *pos_tender_name(pos_tender_kind_t kind);
/* "cash" -> POS_TENDER_CASH etc.; -1 if unknown. */
int pos_tender_parse(const char *name);

typedef struct {
    pos_tender_kind_t kind;
    int64_t amount;
} pos_tender_t;

typedef struct {
    int64_t gross;           /* sale lines before discounts */
    int64_t promo_discounts; /* item promotions */
    int64_t ticket_discount;
    int64_t returns;       /* return lines (<= 0) */
    int64_t total;         /* sum of line amounts */
    int64_t cash_rounding; /* added to total when the remainder is paid in cash */
    int64_t due;           /* total + cash_rounding */
    int64_t paid;
    int64_t change;
    int items; /* sale lines not voided */
    pos_tax_summary_t tax;
} pos_totals_t;

typedef struct pos_ticket pos_ticket_t;

pos_ticket_t *pos_ticket_new(void);
void pos_ticket_destroy(pos_ticket_t **self_p);

void pos_ticket_set_member(pos_ticket_t *self, bool member);
void pos_ticket_set_time(pos_ticket_t *self, int64_t now_ms);
void pos_ticket_set_cash_rounding(pos_ticket_t *self, bool on);
pos_err_t pos_ticket_add_promo(pos_ticket_t *self, const pos_promo_t *promo);

/* Add a sale line of qty pieces (or grams); qty must be > 0. Returns the line index in *index. */
pos_err_t pos_ticket_add_line(pos_ticket_t *self, const pos_item_t *item, int64_t qty, int *index);
/* Add a return of qty (> 0) pieces or grams, refunding paid_per_unit each (what the customer paid
   per piece, or per kg, on the original sale) against original sale id. */
pos_err_t pos_ticket_add_return(pos_ticket_t *self, const pos_item_t *item, int64_t qty,
                                int64_t paid_per_unit, const char *original_sale_id, int *index);
pos_err_t pos_ticket_void_line(pos_ticket_t *self, int index);
/* Ticket discount: percent (basis points) or a fixed amount; setting one clears the other. */
pos_err_t pos_ticket_set_discount_percent(pos_ticket_t *self, int bp);
pos_err_t pos_ticket_set_discount_amount(pos_ticket_t *self, int64_t fen);

/* Price everything; call after any change. Tenders already added are kept. */
pos_err_t pos_ticket_compute(pos_ticket_t *self);

/* Add a tender after compute. Non-cash tenders may not exceed what is still due without cash
   rounding (POS_EOVERPAY); cash may, and the excess is change. Cash rounding (when on) applies
   to the part cash settles only. For a refund (negative total) tenders are negative and may not
   exceed the refund: cash its rounded remainder, other tenders the exact one. */
pos_err_t pos_ticket_add_tender(pos_ticket_t *self, pos_tender_kind_t kind, int64_t amount);
/* Whether add_tender would take it (the same answer, nothing added): a register asks before
   money moves (a card terminal, a wallet, a stored-value card). With cash rounding on and no
   cash tendered, a non-cash tender that leaves 0.01-0.04 is POS_ECASHREST. */
pos_err_t pos_ticket_check_tender(pos_ticket_t *self, pos_tender_kind_t kind, int64_t amount);
/* Add n tenders at once, all or nothing: each is checked like add_tender in turn, the
   0.01-0.04 rule once on what is left after the last (several refunds planned together). */
pos_err_t pos_ticket_add_tenders(pos_ticket_t *self, const pos_tender_t *list, int n);
/* Amount still to pay (>= 0 for sales, <= 0 for refunds), counting cash rounding if the rest
   would be cash. */
int64_t pos_ticket_remaining(pos_ticket_t *self);
/* What a tender of KIND settles of the rest: pos_ticket_remaining for cash; for any other
   tender the exact rest without cash rounding (a card or a wallet pays, or refunds, to the
   fen). */
int64_t pos_ticket_remaining_for(pos_ticket_t *self, pos_tender_kind_t kind);
bool pos_ticket_is_paid(pos_ticket_t *self);

const pos_totals_t *pos_ticket_totals(pos_ticket_t *self);
int pos_ticket_line_count(pos_ticket_t *self);
const pos_line_t *pos_ticket_line(pos_ticket_t *self, int index);
int pos_ticket_tender_count(pos_ticket_t *self);
const pos_tender_t *pos_ticket_tender(pos_ticket_t *self, int index);

/* Round an amount to the cash step (0.10 yuan), half away from zero. */
int64_t pos_cash_round(int64_t fen);

#ifdef __cplusplus
}
#endif
#endif
