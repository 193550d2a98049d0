/*  test_ticket - pricing: member price, every promotion kind, stacking order, ticket discount
    allocation, tax, returns, voids, cash rounding, tenders and change; then 10,000 random
    tickets checked against the invariants that make reports add up to the fen.

    Expected tax is never asked of libpos: it is a hand-computed table, or the test's own
    integer formula (s_tax), written without pos_tax_* or pos_muldiv. */
#include <pos/receipt.h>
#include <pos/ticket.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static pos_item_t s_item(const char *sku, int64_t price, int rate, const char *category)
{
    pos_item_t item;
    memset(&item, 0, sizeof(item));
    snprintf(item.sku, sizeof(item.sku), "%s", sku);
    snprintf(item.name, sizeof(item.name), "item %s", sku);
    snprintf(item.category, sizeof(item.category), "%s", category);
    item.price = price;
    item.tax_rate_bp = rate;
    return item;
}

static pos_promo_t s_promo(const char *id, const char *sku, pos_promo_kind_t kind)
{
    pos_promo_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.id, sizeof(p.id), "%s", id);
    snprintf(p.sku, sizeof(p.sku), "%s", sku);
    p.kind = kind;
    return p;
}

/*  Price a single-SKU ticket of qty under one promotion; returns the total. */
static int64_t s_single(pos_item_t item, int64_t qty, const pos_promo_t *promo, int64_t now)
{
    pos_ticket_t *t = pos_ticket_new();
    pos_ticket_set_time(t, now);
    if (promo)
        pos_ticket_add_promo(t, promo);
    pos_ticket_add_line(t, &item, qty, NULL);
    pos_ticket_compute(t);
    int64_t total = pos_ticket_totals(t)->total;
    pos_ticket_destroy(&t);
    return total;
}

/*  Tax inside a tax-inclusive amount, round(amount x rate / (10000 + rate)) half away from
    zero, by the test's own arithmetic (amounts here are far from overflowing). */
static int64_t s_tax(int64_t amount, int rate_bp)
{
    int64_t abs_amount = amount < 0 ? -amount : amount;
    int64_t den = 10000 + rate_bp;
    int64_t tax = (2 * abs_amount * rate_bp + den) / (2 * den);
    return amount < 0 ? -tax : tax;
}

/*  Line tax against values worked out by hand (amount x rate / (10000 + rate), rounded). */
static void s_test_tax_table(void)
{
    static const struct {
        int64_t price;
        int rate_bp;
        int64_t tax; /* hand-computed */
    } table[] = {
        {1000, 1300, 115}, /* 115.04 */
        {1000, 900, 83},   /* 82.57 */
        {1000, 600, 57},   /* 56.60 */
        {1000, 300, 29},   /* 29.13 */
        {1000, 0, 0},      /*  */
        {1130, 1300, 130}, /* exactly 130 */
        {5, 1300, 1},      /* 0.575 */
        {4, 1300, 0},      /* 0.460 */
        {9, 600, 1},       /* 0.509 */
        {3980, 900, 329},  /* 328.62 */
    };
    int right = 0;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        pos_ticket_t *t = pos_ticket_new();
        pos_item_t item = s_item("T", table[i].price, table[i].rate_bp, "x");
        pos_ticket_add_line(t, &item, 1, NULL);
        pos_ticket_compute(t);
        int64_t got = pos_ticket_line(t, 0)->tax;
        if (got == table[i].tax && s_tax(table[i].price, table[i].rate_bp) == table[i].tax)
            right++;
        else
            printf("     %lld fen at %d bp: expected tax %lld, libpos %lld, s_tax %lld\n",
                   (long long)table[i].price, table[i].rate_bp, (long long)table[i].tax,
                   (long long)got, (long long)s_tax(table[i].price, table[i].rate_bp));
        pos_ticket_destroy(&t);
    }
    CHECK(right == (int)(sizeof(table) / sizeof(table[0])),
          "line tax matches the hand-computed table (%d of %zu)", right,
          sizeof(table) / sizeof(table[0]));

    pos_ticket_t *t = pos_ticket_new();
    pos_item_t a = s_item("A", 1000, 1300, "x");
    pos_ticket_add_return(t, &a, 1, 1000, "S001-R01-000001", NULL);
    pos_ticket_compute(t);
    CHECK(pos_ticket_line(t, 0)->tax == -115, "a returned 10.00 at 13%% carries -1.15 tax (got %lld)",
          (long long)pos_ticket_line(t, 0)->tax);
    pos_ticket_destroy(&t);
}

static void s_test_basics(void)
{
    pos_ticket_t *t = pos_ticket_new();
    pos_item_t a = s_item("A", 1000, 1300, "food");
    CHECK(pos_ticket_add_line(t, &a, 3, NULL) == POS_OK, "add 3 x 10.00");
    pos_ticket_compute(t);
    const pos_totals_t *tot = pos_ticket_totals(t);
    CHECK(tot->total == 3000 && pos_ticket_line(t, 0)->tax == 345 && tot->tax.rows[0].tax == 345,
          "3 x 10.00 = 30.00 with 3.45 tax at 13%%");
    CHECK(pos_ticket_add_line(t, &a, 0, NULL) == POS_ERANGE &&
              pos_ticket_add_line(t, &a, -1, NULL) == POS_ENEGATIVE,
          "zero and negative quantities refused");
    pos_item_t bad = s_item("B", 100, 20000, "x");
    CHECK(pos_ticket_add_line(t, &bad, 1, NULL) == POS_ERANGE, "a tax rate above 100%% refused");
    pos_ticket_destroy(&t);

    pos_item_t m = s_item("M", 1000, 1300, "food");
    m.member_price = 900;
    t = pos_ticket_new();
    pos_ticket_add_line(t, &m, 2, NULL);
    pos_ticket_compute(t);
    int64_t plain = pos_ticket_totals(t)->total;
    pos_ticket_set_member(t, true);
    pos_ticket_compute(t);
    CHECK(plain == 2000 && pos_ticket_totals(t)->total == 1800,
          "member price applies only with a member (20.00 -> 18.00)");
    pos_ticket_destroy(&t);

    pos_item_t kg = s_item("K", 3980, 900, "fruit");
    kg.unit = POS_UNIT_KG;
    CHECK(s_single(kg, 1234, NULL, 0) == 4911, "1.234 kg at 39.80/kg = 49.11");
}

static void s_test_promotions(void)
{
    pos_item_t a = s_item("A", 1000, 1300, "food");
    pos_promo_t pct = s_promo("P10", "A", POS_PROMO_PERCENT);
    pct.percent_bp = 1000;
    CHECK(s_single(a, 3, &pct, 0) == 2700, "10%% off 30.00 = 27.00");

    pos_promo_t amt = s_promo("A150", "A", POS_PROMO_AMOUNT);
    amt.amount = 150;
    CHECK(s_single(a, 3, &amt, 0) == 2550, "1.50 off each of 3 = 25.50");

    pos_promo_t brk = s_promo("3FOR25", "A", POS_PROMO_QTY_BREAK);
    brk.qty = 3;
    brk.amount = 2500;
    CHECK(s_single(a, 7, &brk, 0) == 6000, "3 for 25.00, 7 bought: 2 sets + 1 = 60.00");
    CHECK(s_single(a, 2, &brk, 0) == 2000, "3 for 25.00, 2 bought: no set, 20.00");

    pos_promo_t bxgy = s_promo("B2G1", "A", POS_PROMO_BUY_X_GET_Y);
    bxgy.qty = 2;
    bxgy.free_qty = 1;
    CHECK(s_single(a, 7, &bxgy, 0) == 5000, "buy 2 get 1, 7 taken: 2 free = 50.00");

    pos_item_t kg = s_item("K", 3980, 900, "fruit");
    kg.unit = POS_UNIT_KG;
    pos_promo_t perkg = s_promo("K5", "K", POS_PROMO_AMOUNT);
    perkg.amount = 500;
    CHECK(s_single(kg, 1234, &perkg, 0) == 4911 - 617, "5.00/kg off 1.234 kg = 6.17 off");
    pos_promo_t kgbrk = s_promo("KB", "K", POS_PROMO_QTY_BREAK);
    kgbrk.qty = 2;
    kgbrk.amount = 1;
    CHECK(s_single(kg, 5000, &kgbrk, 0) == 19900, "piece promotions do not apply to weighed items");

    pos_promo_t window = pct;
    window.start_ms = 9 * 3600000LL;
    window.end_ms = 10 * 3600000LL;
    CHECK(s_single(a, 1, &window, 8 * 3600000LL) == 1000 &&
              s_single(a, 1, &window, 9 * 3600000LL) == 900 &&
              s_single(a, 1, &window, 10 * 3600000LL) == 1000,
          "time-window promotion: before no, at start yes, at end no");

    pos_promo_t cat = s_promo("FRUIT20", "", POS_PROMO_PERCENT);
    snprintf(cat.category, sizeof(cat.category), "fruit");
    cat.percent_bp = 2000;
    pos_item_t apple = s_item("APPLE", 500, 900, "fruit");
    CHECK(s_single(apple, 2, &cat, 0) == 800 && s_single(a, 2, &cat, 0) == 2000,
          "category promotion applies to its category only");

    /* best deal wins, no stacking of item promotions; lines of one SKU are priced together */
    pos_ticket_t *t = pos_ticket_new();
    pos_ticket_add_promo(t, &pct);
    pos_ticket_add_promo(t, &bxgy);
    pos_ticket_add_line(t, &a, 1, NULL);
    pos_ticket_add_line(t, &a, 2, NULL);
    pos_ticket_compute(t);
    const pos_line_t *l0 = pos_ticket_line(t, 0), *l1 = pos_ticket_line(t, 1);
    CHECK(pos_ticket_totals(t)->total == 2000 && pos_ticket_totals(t)->promo_discounts == 1000 &&
              strcmp(l0->promo_id, "B2G1") == 0,
          "10%% (3.00) vs buy 2 get 1 (10.00) over two lines: the better one only");
    CHECK(l0->promo_discount == 333 && l1->promo_discount == 667,
          "the group discount is shared 1:2 by line gross (3.33 + 6.67)");
    pos_ticket_destroy(&t);
}

static void s_test_ticket_discount(void)
{
    pos_ticket_t *t = pos_ticket_new();
    pos_item_t a = s_item("A", 1000, 1300, "x"), b = s_item("B", 2000, 900, "x"),
               c = s_item("C", 333, 600, "x");
    pos_ticket_add_line(t, &a, 1, NULL);
    pos_ticket_add_line(t, &b, 1, NULL);
    pos_ticket_add_line(t, &c, 1, NULL);
    pos_ticket_set_discount_percent(t, 1000);
    pos_ticket_compute(t);
    const pos_totals_t *tot = pos_ticket_totals(t);
    CHECK(tot->ticket_discount == 333 && tot->total == 3000,
          "10%% of 33.33 = 3.33 off, total 30.00");
    CHECK(pos_ticket_line(t, 0)->ticket_discount == 100 &&
              pos_ticket_line(t, 1)->ticket_discount == 200 &&
              pos_ticket_line(t, 2)->ticket_discount == 33,
          "allocated 1.00 / 2.00 / 0.33 by largest remainder");
    CHECK(pos_ticket_line(t, 0)->tax == 104 && pos_ticket_line(t, 1)->tax == 149 &&
              pos_ticket_line(t, 2)->tax == 17,
          "tax follows each line's discounted amount (9.00@13%%, 18.00@9%%, 3.00@6%%)");
    int64_t gross = 0;
    for (int i = 0; i < tot->tax.count; i++)
        gross += tot->tax.rows[i].gross;
    CHECK(gross == tot->total && tot->tax.count == 3, "tax summary gross adds up to the total");

    pos_ticket_set_discount_amount(t, 5000);
    pos_ticket_compute(t);
    CHECK(pos_ticket_totals(t)->total == 0 && pos_ticket_totals(t)->ticket_discount == 3333,
          "an amount discount above the subtotal is capped at it");

    /* promotions first, then the ticket discount on what is left */
    pos_ticket_t *s = pos_ticket_new();
    pos_promo_t pct = s_promo("P10", "A", POS_PROMO_PERCENT);
    pct.percent_bp = 1000;
    pos_ticket_add_promo(s, &pct);
    pos_ticket_add_line(s, &a, 10, NULL);
    pos_ticket_set_discount_amount(s, 500);
    pos_ticket_compute(s);
    CHECK(pos_ticket_totals(s)->promo_discounts == 1000 &&
              pos_ticket_totals(s)->ticket_discount == 500 && pos_ticket_totals(s)->total == 8500,
          "stacking: 100.00 - 10%% promotion - 5.00 ticket discount = 85.00");
    pos_ticket_destroy(&s);
    pos_ticket_destroy(&t);
}

static void s_test_returns_voids(void)
{
    pos_ticket_t *t = pos_ticket_new();
    pos_item_t a = s_item("A", 1000, 1300, "x");
    int idx;
    pos_ticket_add_line(t, &a, 2, &idx);
    pos_ticket_add_line(t, &a, 1, NULL);
    CHECK(pos_ticket_void_line(t, idx) == POS_OK && pos_ticket_void_line(t, idx) == POS_ESTATE,
          "void a line once");
    pos_ticket_compute(t);
    CHECK(pos_ticket_totals(t)->total == 1000 && pos_ticket_totals(t)->items == 1 &&
              pos_ticket_line_count(t) == 2,
          "a voided line stays on the ticket at zero");
    CHECK(pos_ticket_void_line(t, 9) == POS_ENOTFOUND, "void of a missing line refused");
    pos_ticket_destroy(&t);

    t = pos_ticket_new();
    CHECK(pos_ticket_add_return(t, &a, 2, 850, "S001-R01-000042", NULL) == POS_OK,
          "return 2 paid 8.50 each");
    pos_ticket_set_discount_percent(t, 5000);
    pos_ticket_compute(t);
    const pos_totals_t *tot = pos_ticket_totals(t);
    CHECK(tot->total == -1700 && tot->returns == -1700 && pos_ticket_line(t, 0)->tax == -196 &&
              strcmp(pos_ticket_line(t, 0)->return_of, "S001-R01-000042") == 0,
          "refund -17.00 with -1.96 tax, never discounted again");
    CHECK(pos_ticket_add_tender(t, POS_TENDER_CASH, -2000) == POS_EOVERPAY,
          "refunding more than due refused");
    CHECK(pos_ticket_add_tender(t, POS_TENDER_CASH, -1700) == POS_OK && pos_ticket_is_paid(t),
          "refund settled in cash");
    CHECK(pos_ticket_add_return(t, &a, 1, 100, "", NULL) == POS_EEMPTY,
          "a return needs the original sale id");
    pos_ticket_destroy(&t);
}

static void s_test_tenders(void)
{
    pos_item_t a = s_item("A", 1000, 1300, "x");
    pos_ticket_t *t = pos_ticket_new();
    pos_ticket_add_line(t, &a, 3, NULL);
    pos_ticket_compute(t);
    CHECK(pos_ticket_add_tender(t, POS_TENDER_CARD, 3500) == POS_EOVERPAY,
          "a card cannot pay more than due");
    CHECK(pos_ticket_add_tender(t, POS_TENDER_CARD, 1000) == POS_OK && !pos_ticket_is_paid(t) &&
              pos_ticket_remaining(t) == 2000,
          "card 10.00, 20.00 remaining");
    CHECK(pos_ticket_add_tender(t, POS_TENDER_CASH, 5000) == POS_OK && pos_ticket_is_paid(t) &&
              pos_ticket_totals(t)->change == 3000,
          "cash 50.00 pays and gives 30.00 change");
    CHECK(pos_ticket_add_tender(t, POS_TENDER_CASH, 100) == POS_ESTATE,
          "no tender after the ticket is paid");
    CHECK(pos_ticket_void_line(t, 0) == POS_ESTATE, "no void after tendering");
    pos_ticket_destroy(&t);

    CHECK(pos_cash_round(1234) == 1230 && pos_cash_round(1235) == 1240 &&
              pos_cash_round(-1235) == -1240 && pos_cash_round(1230) == 1230,
          "cash rounding to 0.10, half away from zero");
    pos_item_t odd = s_item("O", 1235, 1300, "x");
    t = pos_ticket_new();
    pos_ticket_set_cash_rounding(t, true);
    pos_ticket_add_line(t, &odd, 1, NULL);
    pos_ticket_compute(t);
    CHECK(pos_ticket_remaining(t) == 1240 && pos_ticket_totals(t)->cash_rounding == 5,
          "12.35 due in cash is 12.40 (+0.05 rounding)");
    pos_ticket_add_tender(t, POS_TENDER_CARD, 1000);
    CHECK(pos_ticket_remaining(t) == 240 && pos_ticket_totals(t)->cash_rounding == 5,
          "after card 10.00 the cash part 2.35 rounds to 2.40");
    pos_ticket_add_tender(t, POS_TENDER_CASH, 300);
    CHECK(pos_ticket_is_paid(t) && pos_ticket_totals(t)->change == 60,
          "cash 3.00 gives 0.60 change");
    CHECK(pos_ticket_remaining_for(t, POS_TENDER_WECHAT) == 0 &&
              pos_ticket_remaining_for(t, POS_TENDER_CASH) == 0,
          "nothing left for any tender once paid");

    /* cash rounding is for cash only: a card or a wallet pays the exact 12.35, with no
       rounding at all, and a refund to them gives back the exact amount */
    pos_ticket_t *w = pos_ticket_new();
    pos_ticket_set_cash_rounding(w, true);
    pos_ticket_add_line(w, &odd, 1, NULL);
    pos_ticket_compute(w);
    CHECK(pos_ticket_remaining_for(w, POS_TENDER_CASH) == 1240 &&
              pos_ticket_remaining_for(w, POS_TENDER_WECHAT) == 1235 &&
              pos_ticket_remaining_for(w, POS_TENDER_CARD) == 1235,
          "12.35: 12.40 in cash, 12.35 by wallet or card");
    CHECK(pos_ticket_add_tender(w, POS_TENDER_WECHAT, 1240) == POS_EOVERPAY,
          "a wallet never pays the cash rounding");
    CHECK(pos_ticket_add_tender(w, POS_TENDER_WECHAT, 1235) == POS_OK && pos_ticket_is_paid(w) &&
              pos_ticket_totals(w)->cash_rounding == 0 && pos_ticket_totals(w)->due == 1235,
          "paid by wallet to the fen: no rounding, due 12.35");
    pos_ticket_destroy(&w);
    w = pos_ticket_new();
    pos_ticket_set_cash_rounding(w, true);
    pos_ticket_add_return(w, &odd, 1, 1003, "S001-R01-000042", NULL);
    pos_ticket_compute(w);
    CHECK(pos_ticket_remaining_for(w, POS_TENDER_CASH) == -1000 &&
              pos_ticket_remaining_for(w, POS_TENDER_ALIPAY) == -1003,
          "a 10.03 refund: 10.00 in cash, 10.03 to a wallet");
    CHECK(pos_ticket_add_tender(w, POS_TENDER_ALIPAY, -1004) == POS_EOVERPAY,
          "never more than the refund to a wallet");
    CHECK(pos_ticket_add_tender(w, POS_TENDER_ALIPAY, -1003) == POS_OK && pos_ticket_is_paid(w) &&
              pos_ticket_totals(w)->cash_rounding == 0,
          "refunded to the wallet to the fen (was short by the rounding)");
    pos_ticket_destroy(&w);
    w = pos_ticket_new();
    pos_ticket_set_cash_rounding(w, true);
    pos_ticket_add_return(w, &odd, 1, 1003, "S001-R01-000042", NULL);
    pos_ticket_compute(w);
    CHECK(pos_ticket_add_tender(w, POS_TENDER_WECHAT, -503) == POS_OK &&
              pos_ticket_remaining_for(w, POS_TENDER_CASH) == -500 &&
              pos_ticket_add_tender(w, POS_TENDER_CASH, -501) == POS_EOVERPAY &&
              pos_ticket_add_tender(w, POS_TENDER_CASH, -500) == POS_OK && pos_ticket_is_paid(w),
          "part to a wallet (5.03), the rest in cash rounded (5.00)");
    pos_ticket_destroy(&w);

    /* the rounding is cash's: a non-cash tender may not leave 0.01-0.04 with no cash tendered
       (it would round to nothing and the sale could never be written) */
    w = pos_ticket_new();
    pos_ticket_set_cash_rounding(w, true);
    pos_ticket_add_line(w, &odd, 1, NULL);
    pos_ticket_compute(w);
    CHECK(pos_ticket_check_tender(w, POS_TENDER_STORED_VALUE, 1231) == POS_ECASHREST &&
              pos_ticket_add_tender(w, POS_TENDER_WECHAT, 1231) == POS_ECASHREST &&
              pos_ticket_tender_count(w) == 0 && !pos_ticket_is_paid(w),
          "12.31 of 12.35 by card or wallet refused (was: paid, then refused by the sale check)");
    CHECK(pos_ticket_check_tender(w, POS_TENDER_CARD, 1230) == POS_OK &&
              pos_ticket_tender_count(w) == 0,
          "12.30 leaves 0.05, which cash settles with 0.10; checking adds nothing");
    CHECK(pos_ticket_add_tender(w, POS_TENDER_CASH, 1000) == POS_OK &&
              pos_ticket_add_tender(w, POS_TENDER_CARD, 231) == POS_OK && pos_ticket_is_paid(w) &&
              pos_ticket_totals(w)->cash_rounding == -4 && pos_ticket_totals(w)->due == 1231,
          "with cash tendered, card 2.31 is fine: the cash part 10.04 rounds to 10.00");
    pos_ticket_destroy(&w);
    pos_item_t tiny = s_item("T3", 3, 0, "x"); /* an exchange that nets 0.03 */
    w = pos_ticket_new();
    pos_ticket_set_cash_rounding(w, true);
    pos_ticket_add_line(w, &tiny, 1, NULL);
    pos_ticket_compute(w);
    CHECK(!pos_ticket_is_paid(w) && pos_ticket_remaining(w) == 0 &&
              pos_ticket_remaining_for(w, POS_TENDER_CARD) == 3,
          "0.03 due: cash would round it away, but it is not paid without a tender");
    CHECK(pos_ticket_add_tender(w, POS_TENDER_CASH, 10) == POS_OK && pos_ticket_is_paid(w) &&
              pos_ticket_totals(w)->change == 10 && pos_ticket_totals(w)->cash_rounding == -3,
          "cash 0.10: rounded to 0.00, 0.10 back");
    pos_ticket_destroy(&w);
    w = pos_ticket_new();
    pos_ticket_set_cash_rounding(w, true);
    pos_ticket_add_return(w, &odd, 1, 1003, "S001-R01-000042", NULL);
    pos_ticket_compute(w);
    CHECK(pos_ticket_add_tender(w, POS_TENDER_WECHAT, -1000) == POS_ECASHREST &&
              pos_ticket_add_tender(w, POS_TENDER_WECHAT, -993) == POS_OK &&
              pos_ticket_add_tender(w, POS_TENDER_CASH, -10) == POS_OK && pos_ticket_is_paid(w) &&
              pos_ticket_totals(w)->cash_rounding == 0,
          "a 10.03 refund: 10.00 to a wallet refused (0.03 left); 9.93 and 0.10 in cash");
    pos_ticket_destroy(&w);

    /* refunds planned together go on all at once or not at all; the 0.01-0.04 rule looks at
       what is left after the last */
    w = pos_ticket_new();
    pos_ticket_set_cash_rounding(w, true);
    pos_ticket_add_return(w, &odd, 1, 1235, "S001-R01-000042", NULL);
    pos_ticket_compute(w);
    pos_tender_t plan3[] = {{POS_TENDER_WECHAT, -600}, {POS_TENDER_ALIPAY, -631},
                            {POS_TENDER_STORED_VALUE, -3}};
    CHECK(pos_ticket_add_tenders(w, plan3, 3) == POS_ECASHREST && pos_ticket_tender_count(w) == 0 &&
              pos_ticket_totals(w)->paid == 0,
          "6.00 + 6.31 + 0.03 of 12.35 leaves 0.01: refused, nothing added");
    pos_tender_t plan2[] = {{POS_TENDER_WECHAT, -1231}, {POS_TENDER_STORED_VALUE, -4}};
    CHECK(pos_ticket_add_tender(w, POS_TENDER_WECHAT, -1231) == POS_ECASHREST &&
              pos_ticket_add_tenders(w, plan2, 2) == POS_OK && pos_ticket_tender_count(w) == 2 &&
              pos_ticket_is_paid(w),
          "12.31 alone would leave 0.04; with the card's 0.04 in the same plan it is whole");
    pos_ticket_destroy(&w);
    w = pos_ticket_new();
    pos_ticket_add_return(w, &odd, 1, 1235, "S001-R01-000042", NULL);
    pos_ticket_compute(w);
    pos_tender_t many[POS_TENDERS_MAX + 1];
    for (int i = 0; i < POS_TENDERS_MAX + 1; i++)
        many[i] = (pos_tender_t){POS_TENDER_WECHAT, -1};
    pos_tender_t over[] = {{POS_TENDER_WECHAT, -1000}, {POS_TENDER_ALIPAY, -300}};
    CHECK(pos_ticket_add_tenders(w, many, POS_TENDERS_MAX + 1) == POS_ELIMIT &&
              pos_ticket_add_tenders(w, over, 2) == POS_EOVERPAY &&
              pos_ticket_tender_count(w) == 0,
          "more tenders than a ticket holds, or more than is owed: refused, nothing added");
    pos_ticket_destroy(&w);

    pos_receipt_header_t h;
    memset(&h, 0, sizeof(h));
    snprintf(h.store_name, sizeof(h.store_name), "好又多超市");
    snprintf(h.sale_id, sizeof(h.sale_id), "S001-R01-000001");
    pos_receipt_t *r = pos_receipt_new(&h, t);
    char text[4096];
    int n = pos_receipt_render(r, 32, text, sizeof(text));
    CHECK(n > 0 && strstr(text, "TOTAL") && strstr(text, "12.35") &&
              strstr(text, "Cash rounding") && strstr(text, "Change") && strstr(text, "0.60") &&
              strstr(text, "S001-R01-000001"),
          "receipt renders totals, rounding, tenders, change:\n%s", text);
    CHECK(pos_text_width("好又多") == 6 && pos_text_width("abc") == 3, "CJK counts two columns");
    CHECK(pos_receipt_render(r, 32, text, 10) == -1, "too small a buffer is an error");
    pos_receipt_destroy(&r);
    pos_ticket_destroy(&t);
}

static uint32_t s_rng = 12345;
static uint32_t s_rand(void)
{
    s_rng = s_rng * 1103515245u + 12345u;
    return s_rng >> 8;
}

#define S_RANDOM_TICKETS 10000
#define S_RATES          4

/*  One computed ticket against sums the test makes from its lines. True if every property holds;
    *lines_checked counts the lines whose own properties were checked. */
static bool s_ticket_adds_up(pos_ticket_t *t, int *lines_checked)
{
    static const int rates[S_RATES] = {1300, 900, 600, 0};
    const pos_totals_t *tot = pos_ticket_totals(t);
    int64_t sum = 0, gross = 0, promo = 0, tdisc = 0, returns = 0;
    int64_t rate_gross[S_RATES] = {0}, rate_tax[S_RATES] = {0};
    bool ok = true;
    for (int i = 0; i < pos_ticket_line_count(t); i++) {
        const pos_line_t *l = pos_ticket_line(t, i);
        ok = ok && l->amount == l->gross - l->promo_discount - l->ticket_discount &&
             l->promo_discount >= 0 && l->ticket_discount >= 0 && (l->is_return || l->amount >= 0);
        (*lines_checked)++;
        if (l->voided)
            continue;
        ok = ok && l->tax == s_tax(l->amount, l->item.tax_rate_bp);
        for (int r = 0; r < S_RATES; r++)
            if (rates[r] == l->item.tax_rate_bp) {
                rate_gross[r] += l->amount;
                rate_tax[r] += s_tax(l->amount, rates[r]);
            }
        sum += l->amount;
        if (l->is_return)
            returns += l->amount;
        else {
            gross += l->gross;
            promo += l->promo_discount;
            tdisc += l->ticket_discount;
        }
    }
    /* every rate row equals the test's own sums for that rate; rates without lines have none */
    int rows_expected = 0;
    for (int r = 0; r < S_RATES; r++) {
        bool seen = false;
        for (int i = 0; i < tot->tax.count; i++)
            if (tot->tax.rows[i].rate_bp == rates[r]) {
                seen = true;
                ok = ok && tot->tax.rows[i].gross == rate_gross[r] &&
                     tot->tax.rows[i].tax == rate_tax[r] &&
                     tot->tax.rows[i].net == rate_gross[r] - rate_tax[r];
            }
        rows_expected += seen;
    }
    return ok && rows_expected == tot->tax.count && sum == tot->total && gross == tot->gross &&
           promo == tot->promo_discounts && tdisc == tot->ticket_discount &&
           returns == tot->returns;
}

static void s_test_random(void)
{
    static const int rates[S_RATES] = {1300, 900, 600, 0};
    int good = 0, lines = 0, returns = 0, voids = 0;
    for (int n = 0; n < S_RANDOM_TICKETS; n++) {
        pos_ticket_t *t = pos_ticket_new();
        pos_ticket_set_member(t, s_rand() % 2);
        pos_ticket_set_time(t, (int64_t)(s_rand() % 24) * 3600000LL);
        pos_promo_t p = s_promo("R", "S1", (pos_promo_kind_t)(s_rand() % 4));
        p.percent_bp = 1 + (int)(s_rand() % 5000);
        p.amount = 1 + s_rand() % 500;
        p.qty = 2 + (int)(s_rand() % 3);
        p.free_qty = 1;
        pos_ticket_add_promo(t, &p);
        int count = 1 + (int)(s_rand() % 12);
        for (int i = 0; i < count; i++) {
            char sku[8];
            snprintf(sku, sizeof(sku), "S%u", s_rand() % 4);
            pos_item_t item = s_item(sku, 1 + s_rand() % 20000, rates[s_rand() % S_RATES], "c");
            item.member_price = s_rand() % 2 ? item.price * 9 / 10 : 0;
            item.unit = s_rand() % 5 == 0 ? POS_UNIT_KG : POS_UNIT_PCS;
            int64_t qty = item.unit == POS_UNIT_KG ? 1 + s_rand() % 3000 : 1 + s_rand() % 9;
            if (s_rand() % 10 == 0)
                returns += pos_ticket_add_return(t, &item, qty, item.price, "S-R-1", NULL) ==
                           POS_OK;
            else
                pos_ticket_add_line(t, &item, qty, NULL);
            if (s_rand() % 15 == 0)
                voids += pos_ticket_void_line(t, i) == POS_OK;
        }
        if (s_rand() % 3 == 0)
            pos_ticket_set_discount_percent(t, (int)(s_rand() % 3000));
        else if (s_rand() % 3 == 0)
            pos_ticket_set_discount_amount(t, s_rand() % 5000);
        pos_ticket_compute(t);
        if (s_ticket_adds_up(t, &lines))
            good++;
        else if (n - good < 3)
            printf("     random ticket %d breaks an invariant\n", n);
        pos_ticket_destroy(&t);
    }
    CHECK(good == S_RANDOM_TICKETS,
          "random tickets whose lines, tax by rate (test's own formula) and totals add up to the "
          "fen: %d of %d (%d lines, %d returns, %d voids)",
          good, S_RANDOM_TICKETS, lines, returns, voids);
    CHECK(returns > 0 && voids > 0, "the random tickets include returns (%d) and voids (%d)",
          returns, voids);
}

int main(void)
{
    s_test_tax_table();
    s_test_basics();
    s_test_promotions();
    s_test_ticket_discount();
    s_test_returns_voids();
    s_test_tenders();
    s_test_random();
    return FINISH("test_ticket");
}
