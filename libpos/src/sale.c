/*  =========================================================================
    sale.c - the rules a completed sale obeys (see pos/sale.h)

    The check recomputes every line from its inputs (unit price, quantity,
    discounts, rate) with the ticket's own helpers and compares; it never
    trusts a derived field. Bounds come first on every value, so the
    arithmetic that follows cannot overflow: amounts are at most 10^12 fen
    and a sale has at most 1000 lines and 16 tenders, so no sum comes near
    INT64_MAX, yet every sum still goes through pos_add and its own bound,
    because the bounds are what Redis Lua (doubles, exact to 2^53) relies on
    when it adds the same numbers.

    Rules are checked in a fixed order and the first broken one is reported,
    so a register and the back office name the same reason for one sale.
    =========================================================================
*/
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pos/sale.h"

static const char *const s_kind_names[] = {"sale", "return", "nosale"};
#define S_KINDS ((int)(sizeof(s_kind_names) / sizeof(s_kind_names[0])))

const char *pos_sale_kind_name(pos_sale_kind_t kind)
{
    return (int)kind >= 0 && (int)kind < S_KINDS ? s_kind_names[kind] : "unknown";
}

int pos_sale_kind_parse(const char *name)
{
    for (int i = 0; name && i < S_KINDS; i++)
        if (strcmp(name, s_kind_names[i]) == 0)
            return i;
    return -1;
}

void pos_sale_init(pos_sale_t *self)
{
    memset(self, 0, sizeof(*self));
}

void pos_sale_clear(pos_sale_t *self)
{
    if (!self)
        return;
    free(self->lines);
    pos_sale_init(self);
}

pos_err_t pos_sale_set_lines(pos_sale_t *self, int count)
{
    if (count < 0 || count > POS_SALE_LINES_MAX)
        return POS_ELIMIT;
    pos_line_t *lines = count ? calloc((size_t)count, sizeof(*lines)) : NULL;
    if (count && !lines)
        return POS_ELIMIT;
    free(self->lines);
    self->lines = lines;
    self->nlines = count;
    return POS_OK;
}

pos_err_t pos_sale_make_id(char *buf, size_t size, const char *store, const char *reg, int64_t seq)
{
    int n = snprintf(buf, size, "%s-%s-%06" PRId64, store, reg, seq);
    return n >= 0 && (size_t)n < size ? POS_OK : POS_ELENGTH;
}

bool pos_sale_id_ok(const char *id, size_t max, const char *extra)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > max)
        return false;
    for (const char *p = id; *p; p++) {
        bool alnum =
            (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');
        if (!alnum && *p != '_' && !(extra && strchr(extra, *p)))
            return false;
    }
    return true;
}

/*  Copy text into a field of size bytes; false (field untouched) if it does not fit. */
static bool s_copy(char *field, size_t size, const char *text)
{
    size_t len = text ? strlen(text) : 0;
    if (len >= size)
        return false;
    memcpy(field, text ? text : "", len + 1);
    return true;
}

pos_err_t pos_sale_from_ticket(pos_sale_t *self, pos_ticket_t *ticket, const char *store,
                               const char *reg, int64_t seq, const char *cashier, int64_t ts)
{
    int nlines = pos_ticket_line_count(ticket);
    int ntenders = pos_ticket_tender_count(ticket);
    if (ntenders > POS_SALE_TENDERS_MAX)
        return POS_ELIMIT;
    if (!s_copy(self->store, sizeof(self->store), store) ||
        !s_copy(self->reg, sizeof(self->reg), reg) ||
        !s_copy(self->cashier, sizeof(self->cashier), cashier) ||
        pos_sale_make_id(self->sale_id, sizeof(self->sale_id), store, reg, seq) != POS_OK)
        return POS_ELENGTH;
    pos_err_t err = pos_sale_set_lines(self, nlines);
    if (err != POS_OK)
        return err;
    self->seq = seq;
    self->ts = ts;
    self->kind = POS_SALE_SALE;
    for (int i = 0; i < nlines; i++) {
        self->lines[i] = *pos_ticket_line(ticket, i);
        if (self->lines[i].is_return)
            self->kind = POS_SALE_RETURN;
    }
    for (int i = 0; i < ntenders; i++)
        self->tenders[i] = *pos_ticket_tender(ticket, i);
    self->ntenders = ntenders;
    const pos_totals_t *totals = pos_ticket_totals(ticket);
    self->total = totals->total;
    self->change = totals->change;
    self->cash_rounding = totals->cash_rounding;
    return POS_OK;
}

int pos_sale_originals(const pos_sale_t *self, bool include_voided, const char **ids, int max)
{
    int count = 0;
    for (int i = 0; i < self->nlines; i++) {
        const pos_line_t *l = &self->lines[i];
        if (!l->return_of[0] || (l->voided && !include_voided))
            continue;
        bool seen = false;
        for (int k = 0; k < count && !seen; k++)
            seen = strcmp(ids[k], l->return_of) == 0;
        if (seen)
            continue;
        if (count == max)
            return -1;
        ids[count++] = l->return_of;
    }
    return count;
}

/* ---- the check ---------------------------------------------------------- */

static pos_err_t s_why(pos_err_t err, char *why, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*  Write the reason (when why is given) and return err. */
static pos_err_t s_why(pos_err_t err, char *why, size_t size, const char *fmt, ...)
{
    if (why && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, size, fmt, ap);
        va_end(ap);
    }
    return err;
}

static bool s_amount_ok(int64_t fen)
{
    return fen >= -POS_AMOUNT_MAX && fen <= POS_AMOUNT_MAX;
}

/*  Checked a + b that also stays within +-POS_AMOUNT_MAX. */
static bool s_sum(int64_t a, int64_t b, int64_t *out)
{
    return pos_add(a, b, out) == POS_OK && s_amount_ok(*out);
}

/*  Everything but the arithmetic of one line: ids, text, unit, rate, quantity and sign. */
static pos_err_t s_check_line_fields(const pos_line_t *l, int i, pos_sale_kind_t kind, char *why,
                                     size_t size)
{
    bool ret = l->return_of[0] != '\0';
    if (!pos_sale_id_ok(l->item.sku, POS_SKU_MAX, "-."))
        return s_why(POS_ESYNTAX, why, size,
                     "line %d: sku must be 1-%d letters, digits, '_', '-' or '.'", i, POS_SKU_MAX);
    if (!pos_text_ok(l->item.name, POS_NAME_CHARS, false) ||
        !pos_text_ok(l->item.category, POS_CATEGORY_CHARS, false) ||
        !pos_text_ok(l->promo_id, POS_PROMO_ID_MAX, false))
        return s_why(POS_ELENGTH, why, size,
                     "line %d: name (<= %d), category (<= %d) and promo_id (<= %d) must be "
                     "printable UTF-8 of at most that many characters",
                     i, POS_NAME_CHARS, POS_CATEGORY_CHARS, POS_PROMO_ID_MAX);
    if (l->item.unit != POS_UNIT_PCS && l->item.unit != POS_UNIT_KG)
        return s_why(POS_ERANGE, why, size, "line %d: unit must be pcs or kg", i);
    if (l->item.tax_rate_bp < 0 || l->item.tax_rate_bp > POS_BP_100PCT)
        return s_why(POS_ERANGE, why, size, "line %d: tax rate %d outside 0..%d basis points", i,
                     l->item.tax_rate_bp, POS_BP_100PCT);
    if (l->qty == 0 || l->qty < -POS_QTY_MAX || l->qty > POS_QTY_MAX || (l->qty < 0) != ret ||
        l->is_return != ret)
        return s_why(POS_ERANGE, why, size,
                     "line %d: quantity %" PRId64 " (1..%d, negative exactly on a return line "
                     "with return_of, never zero)",
                     i, l->qty, POS_QTY_MAX);
    if (ret && kind != POS_SALE_RETURN)
        return s_why(POS_ESTATE, why, size, "line %d: return_of only on a return sale", i);
    if (ret && !pos_sale_id_ok(l->return_of, POS_SALE_ID_MAX, "-"))
        return s_why(POS_ESYNTAX, why, size, "line %d: return_of is not a sale id", i);
    if (l->unit_price < 0 || l->unit_price > POS_AMOUNT_MAX || l->promo_discount < 0 ||
        l->promo_discount > POS_AMOUNT_MAX || l->ticket_discount < 0 ||
        l->ticket_discount > POS_AMOUNT_MAX)
        return s_why(POS_ERANGE, why, size, "line %d: unit price and discounts must be 0..%lld fen",
                     i, POS_AMOUNT_MAX);
    return POS_OK;
}

/*  One line: fields, then gross, amount and tax recomputed as the ticket computes them. */
static pos_err_t s_check_line(const pos_line_t *l, int i, pos_sale_kind_t kind, char *why,
                              size_t size)
{
    pos_err_t err = s_check_line_fields(l, i, kind, why, size);
    if (err != POS_OK)
        return err;
    if (l->voided) {
        if (l->gross || l->promo_discount || l->ticket_discount || l->amount || l->tax)
            return s_why(POS_ESTATE, why, size,
                         "line %d: a voided line has no gross, discount, amount or tax", i);
        return POS_OK;
    }
    int64_t want = 0;
    err = l->item.unit == POS_UNIT_KG ? pos_muldiv(l->unit_price, l->qty, POS_GRAMS_PER_KG, &want)
                                      : pos_mul(l->unit_price, l->qty, &want);
    if (err != POS_OK || !s_amount_ok(want))
        return s_why(POS_EOVERFLOW, why, size, "line %d: unit_price x qty is beyond %lld fen", i,
                     POS_AMOUNT_MAX);
    if (l->gross != want)
        return s_why(POS_ERANGE, why, size,
                     "line %d: gross %" PRId64 " is not unit_price x qty (%" PRId64 ")", i,
                     l->gross, want);
    if (l->is_return && (l->promo_discount || l->ticket_discount))
        return s_why(POS_ESTATE, why, size,
                     "line %d: a return line refunds what was paid and is not discounted again", i);
    want = l->gross - l->promo_discount - l->ticket_discount; /* bounded: cannot overflow */
    if (l->amount != want)
        return s_why(POS_ERANGE, why, size,
                     "line %d: amount %" PRId64 " is not gross - discounts (%" PRId64 ")", i,
                     l->amount, want);
    if (!l->is_return && l->amount < 0)
        return s_why(POS_ERANGE, why, size,
                     "line %d: discounts %" PRId64 " exceed the gross %" PRId64, i,
                     l->promo_discount + l->ticket_discount, l->gross);
    if (pos_tax_included(l->amount, l->item.tax_rate_bp, &want) != POS_OK || want != l->tax)
        return s_why(POS_ERANGE, why, size,
                     "line %d: tax %" PRId64 " should be %" PRId64 " at %d basis points", i, l->tax,
                     want, l->item.tax_rate_bp);
    return POS_OK;
}

static pos_err_t s_check_header(const pos_sale_t *self, char *why, size_t size)
{
    char want[POS_SALE_ID_MAX + 1];
    if (!pos_sale_id_ok(self->store, POS_STORE_ID_MAX, NULL) ||
        !pos_sale_id_ok(self->reg, POS_STORE_ID_MAX, NULL))
        return s_why(POS_ESYNTAX, why, size, "store and register must be 1-%d letters, digits or _",
                     POS_STORE_ID_MAX);
    if (self->seq < 1 || self->seq > POS_SEQ_MAX || self->ts < 0)
        return s_why(POS_ERANGE, why, size, "seq must be 1..%lld and ts >= 0", POS_SEQ_MAX);
    if (pos_sale_make_id(want, sizeof(want), self->store, self->reg, self->seq) != POS_OK ||
        strcmp(self->sale_id, want) != 0)
        return s_why(POS_ESYNTAX, why, size, "sale_id must be %s", want);
    if (!pos_text_ok(self->cashier, POS_CASHIER_CHARS, true))
        return s_why(POS_ELENGTH, why, size, "cashier must be printable UTF-8 of 1-%d characters",
                     POS_CASHIER_CHARS);
    if ((int)self->kind < 0 || (int)self->kind >= S_KINDS)
        return s_why(POS_ERANGE, why, size, "kind must be sale, return or nosale");
    if (self->nlines < 0 || self->nlines > POS_SALE_LINES_MAX || (self->nlines && !self->lines) ||
        self->ntenders < 0 || self->ntenders > POS_SALE_TENDERS_MAX)
        return s_why(POS_ELIMIT, why, size, "at most %d lines and %d tenders", POS_SALE_LINES_MAX,
                     POS_SALE_TENDERS_MAX);
    if (self->kind == POS_SALE_NOSALE &&
        (self->nlines || self->ntenders || self->total || self->change || self->cash_rounding))
        return s_why(POS_ESTATE, why, size,
                     "a no-sale has no lines, tenders, total, change or rounding");
    return POS_OK;
}

/*  Lines one by one, then their sum against the total. */
static pos_err_t s_check_lines(const pos_sale_t *self, char *why, size_t size)
{
    int64_t sold = 0, returned = 0;
    for (int i = 0; i < self->nlines; i++) {
        const pos_line_t *l = &self->lines[i];
        pos_err_t err = s_check_line(l, i, self->kind, why, size);
        if (err != POS_OK)
            return err;
        if (!s_sum(l->is_return ? returned : sold, l->amount, l->is_return ? &returned : &sold))
            return s_why(POS_EOVERFLOW, why, size,
                         "line %d: the line amounts add up to more than %lld fen", i,
                         POS_AMOUNT_MAX);
    }
    const char *ids[POS_SALE_ORIGINALS_MAX];
    if (pos_sale_originals(self, true, ids, POS_SALE_ORIGINALS_MAX) < 0)
        return s_why(POS_ELIMIT, why, size, "a return may refer to at most %d original sales",
                     POS_SALE_ORIGINALS_MAX);
    int64_t sum = sold + returned; /* both bounded */
    if (sum != self->total)
        return s_why(POS_ERANGE, why, size, "total %" PRId64 " is not the sum of lines %" PRId64,
                     self->total, sum);
    return POS_OK;
}

/*  Tenders, change and cash rounding against the total. */
static pos_err_t s_check_tenders(const pos_sale_t *self, char *why, size_t size)
{
    int64_t cash = 0, other = 0, paid = 0;
    for (int i = 0; i < self->ntenders; i++) {
        const pos_tender_t *t = &self->tenders[i];
        if ((int)t->kind < 0 || t->kind >= POS_TENDER__COUNT)
            return s_why(POS_ERANGE, why, size,
                         "tender %d: kind must be cash, card, wechat, alipay, stored_value or "
                         "other",
                         i);
        bool refund = self->total < 0;
        if (t->amount == 0 || (refund ? t->amount > 0 : t->amount < 0))
            return s_why(POS_ERANGE, why, size,
                         "tender %d: amount %" PRId64 " must be %s (the sign of the total %" PRId64
                         ")",
                         i, t->amount, refund ? "negative" : "positive", self->total);
        bool is_cash = t->kind == POS_TENDER_CASH;
        if (!s_sum(is_cash ? cash : other, t->amount, is_cash ? &cash : &other) ||
            !s_sum(paid, t->amount, &paid))
            return s_why(POS_EOVERFLOW, why, size,
                         "tender %d: the tenders add up to more than %lld fen", i, POS_AMOUNT_MAX);
    }
    if (self->change < 0 || self->change > POS_AMOUNT_MAX ||
        (self->change > 0 && (self->total < 0 || self->change > cash)))
        return s_why(POS_ERANGE, why, size,
                     "change %" PRId64 " must be 0..the cash handed over (%" PRId64
                     "), and 0 on a refund",
                     self->change, cash);
    int64_t r = self->cash_rounding;
    if (r < -POS_CASH_ROUNDING_MAX || r > POS_CASH_ROUNDING_MAX || (r != 0 && cash == 0))
        return s_why(POS_ERANGE, why, size,
                     "cash rounding %" PRId64 " must be within +-%d fen and only with a cash "
                     "tender",
                     r, POS_CASH_ROUNDING_MAX);
    int64_t due = self->total + r; /* bounded */
    if (r != 0 && (due - other) % POS_CASH_STEP != 0)
        return s_why(POS_ERANGE, why, size,
                     "cash rounding %" PRId64 " does not bring the cash part %" PRId64
                     " to a 0.10 yuan step",
                     r, self->total - other);
    if (paid - self->change != due)
        return s_why(POS_ERANGE, why, size,
                     "tenders %" PRId64 " - change %" PRId64 " != total %" PRId64
                     " + cash rounding %" PRId64,
                     paid, self->change, self->total, r);
    return POS_OK;
}

pos_err_t pos_sale_check(const pos_sale_t *self, char *why, size_t size)
{
    pos_err_t err = s_check_header(self, why, size);
    if (err == POS_OK)
        err = s_check_lines(self, why, size);
    if (err == POS_OK)
        err = s_check_tenders(self, why, size);
    if (err == POS_OK && why && size)
        why[0] = '\0';
    return err;
}
