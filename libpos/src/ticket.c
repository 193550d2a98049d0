/*  =========================================================================
    ticket.c - pricing a ticket

    Every amount is recomputed from scratch on pos_ticket_compute: lines keep
    only what the cashier entered, so voiding, adding or re-ordering can
    never leave a stale discount behind. Tickets are small (tens of lines),
    so the per-SKU grouping is a simple quadratic scan.
    =========================================================================
*/
#include <stdlib.h>
#include <string.h>
#include "pos/ticket.h"

static const char *const s_tender_names[POS_TENDER__COUNT] = {"cash",   "card",         "wechat",
                                                              "alipay", "stored_value", "other"};

struct pos_ticket {
    pos_line_t *lines;
    int nlines, cap;
    pos_promo_t promos[POS_PROMOS_MAX];
    int npromos;
    pos_tender_t tenders[POS_TENDERS_MAX];
    int ntenders;
    bool member;
    bool cash_rounding;
    int64_t now_ms;
    int discount_bp;
    int64_t discount_amount;
    pos_totals_t totals;
};

const char *pos_tender_name(pos_tender_kind_t kind)
{
    return (int)kind >= 0 && kind < POS_TENDER__COUNT ? s_tender_names[kind] : "unknown";
}

int pos_tender_parse(const char *name)
{
    for (int i = 0; name && i < POS_TENDER__COUNT; i++)
        if (strcmp(name, s_tender_names[i]) == 0)
            return i;
    return -1;
}

int64_t pos_cash_round(int64_t fen)
{
    int64_t out = fen;
    pos_muldiv(fen, 1, POS_CASH_STEP, &out);
    return out * POS_CASH_STEP;
}

pos_ticket_t *pos_ticket_new(void)
{
    return calloc(1, sizeof(pos_ticket_t));
}

void pos_ticket_destroy(pos_ticket_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->lines);
    free(*self_p);
    *self_p = NULL;
}

void pos_ticket_set_member(pos_ticket_t *self, bool member)
{
    self->member = member;
}

void pos_ticket_set_time(pos_ticket_t *self, int64_t now_ms)
{
    self->now_ms = now_ms;
}

void pos_ticket_set_cash_rounding(pos_ticket_t *self, bool on)
{
    self->cash_rounding = on;
}

pos_err_t pos_ticket_add_promo(pos_ticket_t *self, const pos_promo_t *promo)
{
    if (self->npromos == POS_PROMOS_MAX)
        return POS_ELIMIT;
    bool ok = true;
    switch (promo->kind) {
    case POS_PROMO_PERCENT:
        ok = promo->percent_bp > 0 && promo->percent_bp <= POS_BP_100PCT;
        break;
    case POS_PROMO_AMOUNT:
        ok = promo->amount > 0;
        break;
    case POS_PROMO_QTY_BREAK:
        ok = promo->qty > 1 && promo->amount >= 0;
        break;
    case POS_PROMO_BUY_X_GET_Y:
        ok = promo->qty > 0 && promo->free_qty > 0;
        break;
    default:
        ok = false;
    }
    if (!ok || (!promo->sku[0] && !promo->category[0]))
        return POS_ERANGE;
    self->promos[self->npromos++] = *promo;
    return POS_OK;
}

static pos_err_t s_check_item(const pos_item_t *item)
{
    if (!item->sku[0])
        return POS_EEMPTY;
    if (item->price < 0 || item->member_price < 0)
        return POS_ENEGATIVE;
    if (item->tax_rate_bp < 0 || item->tax_rate_bp > POS_BP_100PCT)
        return POS_ERANGE;
    return POS_OK;
}

static pos_line_t *s_new_line(pos_ticket_t *self, int *index)
{
    if (self->nlines == POS_LINES_MAX)
        return NULL;
    if (self->nlines == self->cap) {
        int cap = self->cap ? self->cap * 2 : 16;
        pos_line_t *grown = realloc(self->lines, (size_t)cap * sizeof(*grown));
        if (!grown)
            return NULL;
        self->lines = grown;
        self->cap = cap;
    }
    pos_line_t *line = &self->lines[self->nlines];
    memset(line, 0, sizeof(*line));
    if (index)
        *index = self->nlines;
    self->nlines++;
    return line;
}

pos_err_t pos_ticket_add_line(pos_ticket_t *self, const pos_item_t *item, int64_t qty, int *index)
{
    pos_err_t err = s_check_item(item);
    if (err != POS_OK)
        return err;
    if (qty <= 0)
        return qty == 0 ? POS_ERANGE : POS_ENEGATIVE;
    pos_line_t *line = s_new_line(self, index);
    if (!line)
        return POS_ELIMIT;
    line->item = *item;
    line->qty = qty;
    return POS_OK;
}

pos_err_t pos_ticket_add_return(pos_ticket_t *self, const pos_item_t *item, int64_t qty,
                                int64_t paid_per_unit, const char *original_sale_id, int *index)
{
    pos_err_t err = s_check_item(item);
    if (err != POS_OK)
        return err;
    if (qty <= 0 || paid_per_unit < 0)
        return POS_ERANGE;
    if (!original_sale_id || !*original_sale_id || strlen(original_sale_id) > POS_SALE_ID_MAX)
        return POS_EEMPTY;
    pos_line_t *line = s_new_line(self, index);
    if (!line)
        return POS_ELIMIT;
    line->item = *item;
    line->qty = -qty;
    line->is_return = true;
    line->unit_price = paid_per_unit;
    strcpy(line->return_of, original_sale_id);
    return POS_OK;
}

pos_err_t pos_ticket_void_line(pos_ticket_t *self, int index)
{
    if (index < 0 || index >= self->nlines)
        return POS_ENOTFOUND;
    if (self->lines[index].voided || self->ntenders > 0)
        return POS_ESTATE;
    self->lines[index].voided = true;
    return POS_OK;
}

pos_err_t pos_ticket_set_discount_percent(pos_ticket_t *self, int bp)
{
    if (bp < 0 || bp > POS_BP_100PCT)
        return POS_ERANGE;
    self->discount_bp = bp;
    self->discount_amount = 0;
    return POS_OK;
}

pos_err_t pos_ticket_set_discount_amount(pos_ticket_t *self, int64_t fen)
{
    if (fen < 0)
        return POS_ENEGATIVE;
    self->discount_amount = fen;
    self->discount_bp = 0;
    return POS_OK;
}

/*  Gross of a quantity at a unit price: pieces multiply, grams scale per kg with rounding. */
static pos_err_t s_extend(const pos_item_t *item, int64_t unit_price, int64_t qty, int64_t *out)
{
    if (item->unit == POS_UNIT_KG)
        return pos_muldiv(unit_price, qty, POS_GRAMS_PER_KG, out);
    return pos_mul(unit_price, qty, out);
}

static bool s_promo_applies(const pos_ticket_t *self, const pos_promo_t *p, const pos_line_t *l)
{
    if (p->start_ms || p->end_ms)
        if (self->now_ms < p->start_ms || (p->end_ms && self->now_ms >= p->end_ms))
            return false;
    if (p->sku[0])
        return strcmp(p->sku, l->item.sku) == 0;
    return strcmp(p->category, l->item.category) == 0;
}

/*  Discount a promotion gives to one SKU group (qty pieces or grams, gross fen, unit price). */
static int64_t s_promo_value(const pos_promo_t *p, const pos_item_t *item, int64_t qty,
                             int64_t gross, int64_t unit_price)
{
    int64_t d = 0;
    bool pieces = item->unit == POS_UNIT_PCS;
    switch (p->kind) {
    case POS_PROMO_PERCENT:
        pos_muldiv(gross, p->percent_bp, POS_BP_100PCT, &d);
        break;
    case POS_PROMO_AMOUNT:
        if (s_extend(item, p->amount, qty, &d) != POS_OK)
            d = gross;
        break;
    case POS_PROMO_QTY_BREAK:
        if (pieces) {
            int64_t sets = qty / p->qty, regular;
            if (pos_mul(unit_price, p->qty, &regular) == POS_OK && regular > p->amount &&
                pos_mul(sets, regular - p->amount, &d) != POS_OK)
                d = gross;
        }
        break;
    case POS_PROMO_BUY_X_GET_Y:
        if (pieces) {
            int64_t sets = qty / (p->qty + p->free_qty);
            if (pos_mul(sets * p->free_qty, unit_price, &d) != POS_OK)
                d = gross;
        }
        break;
    }
    if (d < 0)
        d = 0;
    return d > gross ? gross : d;
}

/*  Split total over n weights (>= 0) in proportion, largest remainder first (ties: lower index),
    so the shares add up to total exactly. weights and shares index the same lines. */
static void s_allocate(int64_t total, const int64_t *weights, int64_t *shares, int n)
{
    __int128 sum = 0;
    for (int i = 0; i < n; i++)
        sum += weights[i];
    if (sum <= 0 || total == 0) {
        for (int i = 0; i < n; i++)
            shares[i] = 0;
        return;
    }
    int64_t given = 0;
    __int128 *rem = calloc((size_t)n, sizeof(*rem));
    for (int i = 0; i < n; i++) {
        __int128 p = (__int128)total * weights[i];
        shares[i] = (int64_t)(p / sum);
        if (rem)
            rem[i] = p % sum;
        given += shares[i];
    }
    for (int64_t left = total - given; left > 0; left--) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (weights[i] > 0 && (best < 0 || (rem && rem[i] > rem[best])))
                best = i;
        if (best < 0)
            break;
        shares[best]++;
        if (rem)
            rem[best] = -1;
    }
    free(rem);
}

/*  Step 3: best item promotion per SKU group, shared over the group's lines in proportion to
    their gross. grouped marks lines already handled as part of an earlier line's group. */
static void s_apply_promotions(pos_ticket_t *self, int64_t *weights, int64_t *shares, int *members,
                               bool *grouped)
{
    for (int i = 0; i < self->nlines; i++) {
        pos_line_t *l = &self->lines[i];
        if (l->voided || l->is_return || grouped[i])
            continue;
        int n = 0;
        int64_t qty = 0, gross = 0;
        for (int k = i; k < self->nlines; k++) {
            pos_line_t *m = &self->lines[k];
            if (m->voided || m->is_return || strcmp(m->item.sku, l->item.sku) != 0)
                continue;
            grouped[k] = true;
            members[n] = k;
            weights[n++] = m->gross;
            qty += m->qty;
            gross += m->gross;
        }
        const pos_promo_t *best = NULL;
        int64_t best_value = 0;
        for (int p = 0; p < self->npromos; p++) {
            if (!s_promo_applies(self, &self->promos[p], l))
                continue;
            int64_t v = s_promo_value(&self->promos[p], &l->item, qty, gross, l->unit_price);
            if (v > best_value) {
                best_value = v;
                best = &self->promos[p];
            }
        }
        s_allocate(best_value, weights, shares, n);
        for (int k = 0; k < n; k++) {
            pos_line_t *m = &self->lines[members[k]];
            m->promo_discount = shares[k];
            if (best && shares[k] > 0)
                strcpy(m->promo_id, best->id);
            m->amount = m->gross - m->promo_discount;
        }
    }
}

pos_err_t pos_ticket_compute(pos_ticket_t *self)
{
    pos_totals_t *t = &self->totals;
    memset(t, 0, sizeof(*t));
    pos_tax_summary_init(&t->tax);
    int n = self->nlines > 0 ? self->nlines : 1;
    int64_t *weights = calloc((size_t)n, sizeof(*weights));
    int64_t *shares = calloc((size_t)n, sizeof(*shares));
    int *members = calloc((size_t)n, sizeof(*members));
    bool *grouped = calloc((size_t)n, sizeof(*grouped));
    pos_err_t err = POS_OK;
    if (!weights || !shares || !members || !grouped) {
        err = POS_ELIMIT;
        goto out_free;
    }
    /* steps 1-2: unit price and gross */
    for (int i = 0; i < self->nlines && err == POS_OK; i++) {
        pos_line_t *l = &self->lines[i];
        l->promo_discount = l->ticket_discount = l->tax = 0;
        l->promo_id[0] = '\0';
        if (l->voided) {
            l->gross = l->amount = 0;
            continue;
        }
        if (!l->is_return) {
            l->unit_price = l->item.price;
            if (self->member && l->item.member_price > 0 && l->item.member_price < l->item.price)
                l->unit_price = l->item.member_price;
        }
        err = s_extend(&l->item, l->unit_price, l->qty, &l->gross);
        l->amount = l->gross;
    }
    if (err != POS_OK)
        goto out_free;
    /* step 3 */
    s_apply_promotions(self, weights, shares, members, grouped);
    /* step 4: ticket discount over sale lines */
    int64_t subtotal = 0;
    int count = 0;
    for (int i = 0; i < self->nlines; i++) {
        pos_line_t *l = &self->lines[i];
        if (l->voided || l->is_return)
            continue;
        members[count] = i;
        weights[count++] = l->amount;
        subtotal += l->amount;
    }
    int64_t discount = self->discount_amount;
    if (self->discount_bp)
        pos_muldiv(subtotal, self->discount_bp, POS_BP_100PCT, &discount);
    if (discount > subtotal)
        discount = subtotal;
    s_allocate(discount, weights, shares, count);
    for (int k = 0; k < count; k++) {
        pos_line_t *l = &self->lines[members[k]];
        l->ticket_discount = shares[k];
        l->amount -= shares[k];
    }
    /* step 5: tax and totals */
    for (int i = 0; i < self->nlines && err == POS_OK; i++) {
        pos_line_t *l = &self->lines[i];
        if (l->voided)
            continue;
        err = pos_tax_included(l->amount, l->item.tax_rate_bp, &l->tax);
        if (err == POS_OK)
            err = pos_tax_summary_add(&t->tax, l->item.tax_rate_bp, l->amount, l->tax);
        if (l->is_return)
            t->returns += l->amount;
        else {
            t->gross += l->gross;
            t->promo_discounts += l->promo_discount;
            t->ticket_discount += l->ticket_discount;
            t->items++;
        }
        t->total += l->amount;
    }
    t->due = t->total;
    /* tenders are re-applied against the new total */
    for (int i = 0; i < self->ntenders; i++)
        t->paid += self->tenders[i].amount;
    pos_ticket_remaining(self);

out_free:
    free(weights);
    free(shares);
    free(members);
    free(grouped);
    return err;
}

/*  Cash rounding applies to the part of the total that cash settles: the total minus the
    non-cash tenders. Updates due, cash_rounding and change; returns what is still to pay. */
int64_t pos_ticket_remaining(pos_ticket_t *self)
{
    pos_totals_t *t = &self->totals;
    int64_t noncash = 0, cash = 0;
    for (int i = 0; i < self->ntenders; i++) {
        if (self->tenders[i].kind == POS_TENDER_CASH)
            cash += self->tenders[i].amount;
        else
            noncash += self->tenders[i].amount;
    }
    int64_t cash_part = t->total - noncash;
    t->cash_rounding = self->cash_rounding ? pos_cash_round(cash_part) - cash_part : 0;
    t->due = t->total + t->cash_rounding;
    t->paid = noncash + cash;
    t->change = 0;
    int64_t left = t->due - t->paid;
    if (t->total >= 0 && left < 0) {
        t->change = -left; /* only cash can overpay (add_tender refuses the rest) */
        left = 0;
    }
    if (t->total < 0 && left > 0)
        left = 0; /* refunds: over-refunding is refused by add_tender */
    return left;
}

int64_t pos_ticket_remaining_for(pos_ticket_t *self, pos_tender_kind_t kind)
{
    int64_t left = pos_ticket_remaining(self);
    if (kind == POS_TENDER_CASH)
        return left;
    const pos_totals_t *t = &self->totals;
    int64_t exact = t->total - t->paid;
    return t->total >= 0 ? (exact > 0 ? exact : 0) : (exact < 0 ? exact : 0);
}

static bool s_has_cash(const pos_ticket_t *self)
{
    for (int i = 0; i < self->ntenders; i++)
        if (self->tenders[i].kind == POS_TENDER_CASH)
            return true;
    return false;
}

/*  The rest after the tenders so far, when cash rounding cannot settle it: 0.01-0.04 left
    with no cash tendered (a rounding needs a cash tender, and this one rounds to nothing). */
static bool s_cash_rest_stranded(pos_ticket_t *self, int64_t rest)
{
    return self->cash_rounding && rest != 0 && pos_cash_round(rest) == 0 && !s_has_cash(self);
}

static pos_err_t s_check(pos_ticket_t *self, pos_tender_kind_t kind, int64_t amount,
                         bool rest_rule)
{
    if ((int)kind < 0 || kind >= POS_TENDER__COUNT)
        return POS_ERANGE;
    if (self->ntenders == POS_TENDERS_MAX)
        return POS_ELIMIT;
    pos_totals_t *t = &self->totals;
    bool refund = t->total < 0, cash = kind == POS_TENDER_CASH;
    if (amount == 0 || (refund ? amount > 0 : amount < 0))
        return POS_ERANGE;
    pos_ticket_remaining(self);
    int64_t exact = t->total - t->paid; /* what is left without cash rounding */
    if (refund) {
        /* what is still to hand back: due - paid in cash (rounded), the exact rest by any
           other tender */
        if (amount < (cash ? t->due - t->paid : exact))
            return POS_EOVERPAY;
    } else if (pos_ticket_is_paid(self)) {
        return POS_ESTATE; /* already paid */
    } else if (!cash && amount > exact) {
        return POS_EOVERPAY; /* a non-cash tender settles at most the exact rest */
    }
    if (rest_rule && !cash && s_cash_rest_stranded(self, exact - amount))
        return POS_ECASHREST;
    return POS_OK;
}

pos_err_t pos_ticket_check_tender(pos_ticket_t *self, pos_tender_kind_t kind, int64_t amount)
{
    return s_check(self, kind, amount, true);
}

pos_err_t pos_ticket_add_tender(pos_ticket_t *self, pos_tender_kind_t kind, int64_t amount)
{
    return pos_ticket_add_tenders(self, &(pos_tender_t){.kind = kind, .amount = amount}, 1);
}

pos_err_t pos_ticket_add_tenders(pos_ticket_t *self, const pos_tender_t *list, int n)
{
    int saved = self->ntenders;
    if (n < 1 || n > POS_TENDERS_MAX - saved)
        return n < 1 ? POS_ERANGE : POS_ELIMIT;
    pos_err_t err = POS_OK;
    bool noncash = false;
    for (int i = 0; i < n && err == POS_OK; i++) {
        err = s_check(self, list[i].kind, list[i].amount, false);
        if (err == POS_OK) {
            self->tenders[self->ntenders++] = list[i];
            noncash = noncash || list[i].kind != POS_TENDER_CASH;
            pos_ticket_remaining(self);
        }
    }
    /* the 0.01-0.04 rule looks at what is left after all of them */
    if (err == POS_OK && noncash &&
        s_cash_rest_stranded(self, self->totals.total - self->totals.paid))
        err = POS_ECASHREST;
    if (err != POS_OK) {
        self->ntenders = saved; /* all or nothing */
        pos_ticket_remaining(self);
    }
    return err;
}

/*  Paid when the tenders reach what is due; a due that cash rounding changed counts only with
    a cash tender (the rounding is cash's: without one the exact total must be reached). */
bool pos_ticket_is_paid(pos_ticket_t *self)
{
    pos_ticket_remaining(self);
    const pos_totals_t *t = &self->totals;
    int64_t due = t->cash_rounding != 0 && !s_has_cash(self) ? t->total : t->due;
    return t->total >= 0 ? t->paid >= due : t->paid == due;
}

const pos_totals_t *pos_ticket_totals(pos_ticket_t *self)
{
    return &self->totals;
}

int pos_ticket_line_count(pos_ticket_t *self)
{
    return self->nlines;
}

const pos_line_t *pos_ticket_line(pos_ticket_t *self, int index)
{
    return index >= 0 && index < self->nlines ? &self->lines[index] : NULL;
}

int pos_ticket_tender_count(pos_ticket_t *self)
{
    return self->ntenders;
}

const pos_tender_t *pos_ticket_tender(pos_ticket_t *self, int index)
{
    return index >= 0 && index < self->ntenders ? &self->tenders[index] : NULL;
}
