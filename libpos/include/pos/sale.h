/*  =========================================================================
    pos/sale.h - a completed sale as a register uploads it, and its rules

    A ticket (pos/ticket.h) is what the cashier works on; a sale is what is
    left when the ticket is paid: a header, the priced lines, the tenders and
    the totals, frozen. The register builds it from its ticket
    (pos_sale_from_ticket) and the back office decodes it from the wire and
    checks it (pos_sale_check) with the same rules, so a sale either adds up
    to the fen by libpos's arithmetic or is refused with a reason:

      - header: store and register 1-16 letters, digits or '_'; seq >= 1;
        sale_id is "<store>-<register>-<seq, 6 digits or more>"; cashier
        1-32 characters; kind sale, return or nosale;
      - a line: sku 1-32 letters, digits, '_', '-' or '.'; name and category
        optional printable UTF-8 (POS_NAME_CHARS, POS_CATEGORY_CHARS);
        gross = unit_price x qty (pieces) or unit_price x grams / 1000
        rounded half away from zero (weighed); amount = gross - promotion
        discount - ticket discount, never below 0 on a sale line; tax =
        pos_tax_included(amount, rate); a return line (qty < 0, return_of
        set) only on a return sale and never discounted again; a voided line
        is all zeros;
      - totals: total = sum of the line amounts; tenders - change = total +
        cash_rounding;
      - tenders: the sign of the total (negative only when the total is,
        which only a return can be; positive otherwise, an exchange that
        nets positive included), never zero (a zero tender is a mistake,
        not a payment), none on a no-sale;
      - change only on a sale paid partly in cash, at most the cash handed
        over; cash_rounding only with a cash tender, |r| <= 5 fen, and the
        cash part (total - other tenders + r) lands on a 0.10 yuan step;
      - bounds: every amount, price, sum and tender within +-POS_AMOUNT_MAX
        (so sums never overflow, and stay exact where Redis Lua, whose
        numbers are doubles, reads them), quantities within POS_QTY_MAX, at
        most POS_SALE_ORIGINALS_MAX distinct original sales per return.

    No I/O, no allocation except the lines array. Thread-safe: no shared
    state.
    =========================================================================
*/
#ifndef POS_SALE_H_INCLUDED
#define POS_SALE_H_INCLUDED

#include "pos/ticket.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POS_STORE_ID_MAX       16                  /* store and register ids, bytes */
#define POS_CASHIER_CHARS      32                  /* characters */
#define POS_SALE_LINES_MAX     POS_LINES_MAX       /* lines per sale */
#define POS_SALE_TENDERS_MAX   16                  /* tenders per sale */
#define POS_SALE_ORIGINALS_MAX 32                  /* distinct original sales per return */
#define POS_CASH_ROUNDING_MAX  (POS_CASH_STEP / 2) /* 5 fen: 0.10 yuan rounding */
#define POS_AMOUNT_MAX         1000000000000LL     /* 10^12 fen (10 billion yuan) */
#define POS_QTY_MAX            1000000             /* pieces, or grams (a tonne) */
#define POS_SEQ_MAX            1000000000000LL     /* register sequences: 1 .. 10^12 */
#define POS_WHY_MAX            160                 /* a reason fits in this many bytes */

typedef enum { POS_SALE_SALE = 0, POS_SALE_RETURN, POS_SALE_NOSALE } pos_sale_kind_t;

/* "sale", "return", "nosale"; pos_sale_kind_parse gives -1 for anything else. */
const char *pos_sale_kind_name(pos_sale_kind_t kind);
int pos_sale_kind_parse(const char *name);

typedef struct {
    char sale_id[POS_SALE_ID_MAX + 1];
    char store[POS_STORE_ID_MAX + 1];
    char reg[POS_STORE_ID_MAX + 1];
    int64_t seq;
    int64_t ts; /* completion time at the register, ms since the epoch */
    char cashier[POS_TEXT_BYTES(POS_CASHIER_CHARS) + 1];
    pos_sale_kind_t kind;
    pos_line_t *lines; /* nlines entries, owned (pos_sale_set_lines, pos_sale_clear) */
    int nlines;
    pos_tender_t tenders[POS_SALE_TENDERS_MAX];
    int ntenders;
    int64_t total;
    int64_t change;
    int64_t cash_rounding; /* added to the total when cash settles (sign as in pos/ticket.h) */
} pos_sale_t;

/* Zero the sale (no lines). Call before first use. */
void pos_sale_init(pos_sale_t *self);
/* Free the lines and zero the sale again. NULL-safe. */
void pos_sale_clear(pos_sale_t *self);
/* Replace the lines by count zeroed lines. POS_ELIMIT (nothing allocated) when count is
   negative or above POS_SALE_LINES_MAX, or when memory runs out. */
pos_err_t pos_sale_set_lines(pos_sale_t *self, int count);

/* Write "<store>-<register>-<seq>" (seq zero-padded to 6 digits) into buf; POS_ELENGTH if it
   does not fit size bytes. */
pos_err_t pos_sale_make_id(char *buf, size_t size, const char *store, const char *reg, int64_t seq);

/* Build the sale of a computed and paid ticket (the register side): header from the arguments,
   lines, tenders and totals from the ticket. kind is POS_SALE_RETURN when the ticket has a
   return line, else POS_SALE_SALE. The result passes pos_sale_check when the ticket is
   paid and the header is valid. POS_ELENGTH if a header field does not fit, POS_ELIMIT on
   memory. self must be initialised; its old lines are replaced. */
pos_err_t pos_sale_from_ticket(pos_sale_t *self, pos_ticket_t *ticket, const char *store,
                               const char *reg, int64_t seq, const char *cashier, int64_t ts);

/* Check every rule above. POS_OK, or the first broken rule's error with a one-line reason
   (naming the line or tender index) in why (may be NULL). Never writes past why's size. */
pos_err_t pos_sale_check(const pos_sale_t *self, char *why, size_t size);

/* The distinct original sale ids of the sale's return lines, in order of first appearance,
   into ids (borrowed from the sale); voided lines count only when include_voided. Returns how
   many, or -1 (ids filled up to max) when there are more than max. */
int pos_sale_originals(const pos_sale_t *self, bool include_voided, const char **ids, int max);

/* Is id 1..max letters, digits, '_' or one of the characters of extra? (store, register,
   sku, sale ids: the characters that may appear in a Redis key, see bus/keys.h). */
bool pos_sale_id_ok(const char *id, size_t max, const char *extra);

#ifdef __cplusplus
}
#endif
#endif
