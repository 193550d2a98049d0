/*  test_sale - the rules of a completed sale: a hand-priced sale and return pass, each broken
    rule is refused with a reason naming where, and a sale built from a ticket passes the same
    check. Every expected amount below was worked out by hand (in the comments), never by the
    functions under test. */
#include <pos/sale.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static pos_line_t s_line(const char *sku, pos_unit_t unit, int64_t qty, int64_t unit_price,
                         int64_t gross, int64_t tdisc, int64_t amount, int64_t tax, int rate)
{
    pos_line_t l;
    memset(&l, 0, sizeof(l));
    snprintf(l.item.sku, sizeof(l.item.sku), "%s", sku);
    snprintf(l.item.name, sizeof(l.item.name), "%s", "可口可乐 330ml");
    l.item.unit = unit;
    l.item.tax_rate_bp = rate;
    l.qty = qty;
    l.unit_price = unit_price;
    l.gross = gross;
    l.ticket_discount = tdisc;
    l.amount = amount;
    l.tax = tax;
    return l;
}

/*  (Re)fill an initialised sale with: 3 x 3.50 COLA with 0.50 ticket discount: gross 1050, amount
   1000, tax 1000*13/113 = 115.04
    -> 115. 333 g of APPLE at 12.99/kg: 1299*333/1000 = 432.567 -> 433, tax 433*9/109 = 35.75
    -> 36. A voided line. Total 1433; card 4.00, cash 11.00: cash part 10.33 rounds to 10.30
    (rounding -3), due 14.30, change 0.70. */
static void s_good_sale(pos_sale_t *s)
{
    pos_sale_clear(s);
    snprintf(s->store, sizeof(s->store), "S001");
    snprintf(s->reg, sizeof(s->reg), "R01");
    snprintf(s->sale_id, sizeof(s->sale_id), "S001-R01-000042");
    snprintf(s->cashier, sizeof(s->cashier), "王芳");
    s->seq = 42;
    s->ts = 1700000000000;
    s->kind = POS_SALE_SALE;
    pos_sale_set_lines(s, 3);
    s->lines[0] = s_line("COLA", POS_UNIT_PCS, 3, 350, 1050, 50, 1000, 115, 1300);
    s->lines[1] = s_line("APPLE", POS_UNIT_KG, 333, 1299, 433, 0, 433, 36, 900);
    s->lines[2] = s_line("GUM", POS_UNIT_PCS, 1, 500, 0, 0, 0, 0, 1300);
    s->lines[2].voided = true;
    s->tenders[0] = (pos_tender_t){POS_TENDER_CARD, 400};
    s->tenders[1] = (pos_tender_t){POS_TENDER_CASH, 1100};
    s->ntenders = 2;
    s->total = 1433;
    s->change = 70;
    s->cash_rounding = -3;
}

/*  Return of 2 COLA paid 3.33 each on S001-R01-000001: gross -666, tax -666*13/113 = -76.62 ->
    -77. Refunded in cash: -6.66 rounds half away from zero to -6.70 (rounding -4). */
static void s_good_return(pos_sale_t *s)
{
    s_good_sale(s);
    snprintf(s->sale_id, sizeof(s->sale_id), "S001-R01-000043");
    s->seq = 43;
    s->kind = POS_SALE_RETURN;
    pos_sale_set_lines(s, 1);
    s->lines[0] = s_line("COLA", POS_UNIT_PCS, -2, 333, -666, 0, -666, -77, 1300);
    s->lines[0].is_return = true;
    snprintf(s->lines[0].return_of, sizeof(s->lines[0].return_of), "S001-R01-000001");
    s->tenders[0] = (pos_tender_t){POS_TENDER_CASH, -670};
    s->ntenders = 1;
    s->total = -666;
    s->change = 0;
    s->cash_rounding = -4;
}

/*  Expect the check to refuse with err and a reason containing text. */
static void s_refused(const pos_sale_t *s, pos_err_t err, const char *text, const char *what)
{
    char why[POS_WHY_MAX];
    pos_err_t got = pos_sale_check(s, why, sizeof(why));
    CHECK(got == err && strstr(why, text), "%s: refused (expected %s with '%s', got %s: %s)", what,
          pos_strerror(err), text, pos_strerror(got), why);
}

static void s_test_valid(void)
{
    pos_sale_t s;
    pos_sale_init(&s);
    char why[POS_WHY_MAX];
    s_good_sale(&s);
    pos_err_t err = pos_sale_check(&s, why, sizeof(why));
    CHECK(err == POS_OK,
          "a hand-priced sale (pieces, weighed, voided, card + cash, rounding -3, "
          "change 70) passes (%s: %s)",
          pos_strerror(err), why);
    pos_sale_clear(&s);
    s_good_return(&s);
    err = pos_sale_check(&s, why, sizeof(why));
    CHECK(err == POS_OK, "a hand-priced cash refund with rounding -4 passes (%s: %s)",
          pos_strerror(err), why);
    pos_sale_clear(&s);
    s_good_sale(&s);
    pos_sale_set_lines(&s, 0);
    s.kind = POS_SALE_NOSALE;
    s.ntenders = 0;
    s.total = s.change = s.cash_rounding = 0;
    err = pos_sale_check(&s, why, sizeof(why));
    CHECK(err == POS_OK, "a no-sale passes (%s: %s)", pos_strerror(err), why);
    s.ntenders = 1;
    s.tenders[0] = (pos_tender_t){POS_TENDER_CASH, 100};
    s.change = 100;
    s_refused(&s, POS_ESTATE, "no-sale", "a no-sale with a tender");
    pos_sale_clear(&s);
    char id[POS_SALE_ID_MAX + 1];
    CHECK(pos_sale_make_id(id, sizeof(id), "S1", "R2", 7) == POS_OK &&
              strcmp(id, "S1-R2-000007") == 0,
          "sale id of S1, R2, 7 is S1-R2-000007 (got %s)", id);
    CHECK(pos_sale_kind_parse("return") == POS_SALE_RETURN && pos_sale_kind_parse("x") == -1 &&
              strcmp(pos_sale_kind_name(POS_SALE_NOSALE), "nosale") == 0,
          "kind names round-trip");
}

static void s_test_lines(void)
{
    pos_sale_t s;
    pos_sale_init(&s);
    s_good_sale(&s);
    s.lines[0].gross = 1051;
    s_refused(&s, POS_ERANGE, "line 0: gross 1051 is not unit_price x qty (1050)", "gross + 1");
    s_good_sale(&s);
    s.lines[1].gross = s.lines[1].amount = 432; /* truncated instead of rounded */
    s.lines[1].tax = 36;
    s.total = 1432;
    s_refused(&s, POS_ERANGE, "line 1: gross 432", "weighed gross truncated, not rounded");
    s_good_sale(&s);
    s.lines[0].amount = 1001;
    s_refused(&s, POS_ERANGE, "line 0: amount 1001", "amount not gross - discounts");
    s_good_sale(&s);
    s.lines[0].tax = 116;
    s_refused(&s, POS_ERANGE, "line 0: tax 116 should be 115", "tax off by one");
    s_good_sale(&s);
    s.lines[0].ticket_discount = 1100;
    s.lines[0].amount = -50;
    s.lines[0].tax = -6;
    s.total = 383;
    s_refused(&s, POS_ERANGE, "line 0: discounts 1100 exceed the gross 1050",
              "discounts above the gross on a sale line");
    s_good_sale(&s);
    s.total = 1432;
    s_refused(&s, POS_ERANGE, "total 1432 is not the sum of lines 1433", "total off by one");
    s_good_sale(&s);
    s.lines[2].gross = 500;
    s_refused(&s, POS_ESTATE, "line 2: a voided line", "a voided line with a gross");
    s_good_sale(&s);
    snprintf(s.lines[0].item.sku, sizeof(s.lines[0].item.sku), "CO LA");
    s_refused(&s, POS_ESYNTAX, "line 0: sku", "a sku with a space");
    s_good_sale(&s);
    memset(s.lines[0].item.name, 'x', POS_NAME_CHARS + 1);
    s.lines[0].item.name[POS_NAME_CHARS + 1] = '\0';
    s_refused(&s, POS_ELENGTH, "line 0: name", "a name of 121 characters");
    s_good_sale(&s);
    memset(s.lines[0].item.name, 0, sizeof(s.lines[0].item.name));
    for (int i = 0; i < POS_NAME_CHARS; i++)
        memcpy(s.lines[0].item.name + 3 * i, "茶", 3);
    char why[POS_WHY_MAX];
    CHECK(pos_sale_check(&s, why, sizeof(why)) == POS_OK,
          "a name of 120 Chinese characters "
          "(360 bytes) passes (%s)",
          why);
    s_good_sale(&s);
    s.lines[0].qty = POS_QTY_MAX + 1;
    s_refused(&s, POS_ERANGE, "line 0: quantity 1000001", "a quantity above the bound");
    s_good_sale(&s);
    s.lines[0].qty = 0;
    s_refused(&s, POS_ERANGE, "line 0: quantity 0", "a zero quantity");
    s_good_sale(&s);
    s.lines[0].unit_price = POS_AMOUNT_MAX;
    s.lines[0].qty = 2;
    s_refused(&s, POS_EOVERFLOW, "line 0: unit_price x qty is beyond", "price x qty beyond bound");
    s_good_sale(&s);
    s.lines[0].unit_price = INT64_MAX;
    s_refused(&s, POS_ERANGE, "line 0: unit price", "a unit price of INT64_MAX");
    /* two lines of 10^12 fen each: each within the bound, their sum is not */
    s_good_sale(&s);
    pos_sale_set_lines(&s, 2);
    for (int i = 0; i < 2; i++)
        s.lines[i] = s_line("GOLD", POS_UNIT_PCS, 1, POS_AMOUNT_MAX, POS_AMOUNT_MAX, 0,
                            POS_AMOUNT_MAX, 0, 0);
    s_refused(&s, POS_EOVERFLOW, "line 1: the line amounts add up", "line sum beyond the bound");
    pos_sale_clear(&s);
}

static void s_test_tenders(void)
{
    pos_sale_t s;
    pos_sale_init(&s);
    s_good_sale(&s);
    s.cash_rounding = -13; /* tenders still add up: 1500 - 80 = 1433 - 13 */
    s.change = 80;
    s_refused(&s, POS_ERANGE, "cash rounding -13 must be within +-5", "rounding of 13 fen");
    s_good_sale(&s);
    s.tenders[0] = (pos_tender_t){POS_TENDER_CARD, 1430};
    s.ntenders = 1;
    s.change = 0;
    s_refused(&s, POS_ERANGE, "only with a cash tender", "rounding without cash");
    s_good_sale(&s);
    s.cash_rounding = 2; /* 1500 - 65 = 1435: adds up, but 10.35 cash is not a 0.10 step */
    s.change = 65;
    s_refused(&s, POS_ERANGE, "0.10 yuan step", "rounding that lands off the cash step");
    s_good_sale(&s);
    s.tenders[0].amount = -100;
    s.tenders[1].amount = 1600;
    s_refused(&s, POS_ERANGE, "tender 0: amount -100 must be positive",
              "negative tender on a sale");
    s_good_sale(&s);
    s.tenders[0].amount = 0;
    s.tenders[1].amount = 1500;
    s_refused(&s, POS_ERANGE, "tender 0: amount 0", "a zero tender");
    s_good_sale(&s);
    s.tenders[0] = (pos_tender_t){POS_TENDER_CARD, 1500};
    s.ntenders = 1;
    s.cash_rounding = 0;
    s.change = 67;
    s_refused(&s, POS_ERANGE, "change 67", "change without cash");
    s_good_sale(&s);
    s.tenders[1].amount = 1101;
    s_refused(&s, POS_ERANGE, "tenders 1501 - change 70 != total 1433", "tenders one fen over");
    s_good_sale(&s);
    s.tenders[0].amount = POS_AMOUNT_MAX;
    s.tenders[1].amount = POS_AMOUNT_MAX;
    s_refused(&s, POS_EOVERFLOW, "tender 1: the tenders add up", "tender sum beyond the bound");
    s_good_sale(&s);
    s.tenders[0].amount = INT64_MAX;
    s_refused(&s, POS_EOVERFLOW, "tender 0", "a tender of INT64_MAX");
    s_good_sale(&s);
    s.tenders[0].kind = (pos_tender_kind_t)99;
    s_refused(&s, POS_ERANGE, "tender 0: kind", "an unknown tender kind");
    pos_sale_clear(&s);
}

static void s_test_returns(void)
{
    pos_sale_t s;
    pos_sale_init(&s);
    s_good_return(&s);
    s.tenders[0].amount = 670;
    s_refused(&s, POS_ERANGE, "must be negative", "a positive tender on a refund");
    s_good_return(&s);
    s.lines[0].ticket_discount = 66;
    s.lines[0].amount = -732;
    s_refused(&s, POS_ESTATE, "not discounted again", "a discounted return line");
    s_good_return(&s);
    s.kind = POS_SALE_SALE;
    s_refused(&s, POS_ESTATE, "line 0: return_of only on a return sale", "return line on a sale");
    s_good_return(&s);
    s.lines[0].return_of[0] = '\0';
    s_refused(&s, POS_ERANGE, "negative exactly on a return line", "negative qty, no return_of");
    s_good_return(&s);
    s.change = 30;
    s.tenders[0].amount = -640;
    s_refused(&s, POS_ERANGE, "change 30", "change on a refund");
    /* 32 distinct originals (one live line, the rest named by voided lines) pass, 33 are
       refused: the bound the sales service sizes its key arrays by */
    for (int n = 32; n <= 33; n++) {
        s_good_return(&s);
        pos_sale_set_lines(&s, n);
        s.lines[0] = s_line("COLA", POS_UNIT_PCS, -2, 333, -666, 0, -666, -77, 1300);
        s.lines[0].is_return = true;
        snprintf(s.lines[0].return_of, sizeof(s.lines[0].return_of), "S001-R01-000001");
        for (int i = 1; i < n; i++) {
            s.lines[i] = s_line("COLA", POS_UNIT_PCS, -1, 333, 0, 0, 0, 0, 1300);
            s.lines[i].is_return = s.lines[i].voided = true;
            snprintf(s.lines[i].return_of, sizeof(s.lines[i].return_of), "S001-R09-%06d", i + 100);
        }
        const char *ids[POS_SALE_ORIGINALS_MAX];
        int live = pos_sale_originals(&s, false, ids, POS_SALE_ORIGINALS_MAX);
        char why[POS_WHY_MAX];
        pos_err_t err = pos_sale_check(&s, why, sizeof(why));
        if (n == 32)
            CHECK(err == POS_OK && live == 1 &&
                      pos_sale_originals(&s, true, ids, POS_SALE_ORIGINALS_MAX) == 32,
                  "32 originals named by voided lines pass; 1 live original (%s, %d)", why, live);
        else
            s_refused(&s, POS_ELIMIT, "at most 32 original sales", "33 originals");
    }
    pos_sale_clear(&s);
    CHECK(pos_sale_set_lines(&s, POS_SALE_LINES_MAX + 1) == POS_ELIMIT && s.nlines == 0 &&
              pos_sale_set_lines(&s, -1) == POS_ELIMIT,
          "1001 lines refused before anything is allocated");
    pos_sale_clear(&s);
}

/*  The register side: a ticket priced by libpos becomes a sale that passes the check. Same
    goods as s_good_sale with a 0.50 ticket discount shared by amount: 50 x 1050/1483 = 35.40
    and 50 x 433/1483 = 14.60, the remainder fen goes to the larger fraction (APPLE): 35 and 15,
    amounts 1015 and 418 (total 1433), taxes 1015*13/113 = 116.77 -> 117 and 418*9/109 =
    34.51 -> 35. */
static void s_test_from_ticket(void)
{
    pos_ticket_t *t = pos_ticket_new();
    pos_ticket_set_cash_rounding(t, true);
    pos_item_t cola = {.sku = "COLA", .price = 350, .tax_rate_bp = 1300};
    pos_item_t apple = {.sku = "APPLE", .price = 1299, .tax_rate_bp = 900, .unit = POS_UNIT_KG};
    pos_ticket_add_line(t, &cola, 3, NULL);
    pos_ticket_add_line(t, &apple, 333, NULL);
    pos_ticket_set_discount_amount(t, 50);
    pos_ticket_compute(t);
    pos_ticket_add_tender(t, POS_TENDER_CARD, 400);
    pos_ticket_add_tender(t, POS_TENDER_CASH, 1100);
    pos_sale_t s;
    pos_sale_init(&s);
    char why[POS_WHY_MAX];
    pos_err_t err = pos_sale_from_ticket(&s, t, "S001", "R01", 7, "C1", 1);
    CHECK(err == POS_OK && strcmp(s.sale_id, "S001-R01-000007") == 0 && s.kind == POS_SALE_SALE,
          "sale built from a ticket (%s, %s)", pos_strerror(err), s.sale_id);
    CHECK(s.total == 1433 && s.lines[0].amount == 1015 && s.lines[1].amount == 418 &&
              s.lines[0].tax == 117 && s.lines[1].tax == 35,
          "ticket amounts as computed by hand: total 1433 (got %lld), 1015/418 (got %lld/%lld), "
          "tax 117/35 (got %lld/%lld)",
          (long long)s.total, (long long)s.lines[0].amount, (long long)s.lines[1].amount,
          (long long)s.lines[0].tax, (long long)s.lines[1].tax);
    CHECK(s.cash_rounding == -3 && s.change == 70,
          "cash 10.33 rounds to 10.30: rounding -3 (got %lld), change 70 (got %lld)",
          (long long)s.cash_rounding, (long long)s.change);
    err = pos_sale_check(&s, why, sizeof(why));
    CHECK(err == POS_OK, "the ticket's sale passes the check (%s: %s)", pos_strerror(err), why);
    pos_ticket_destroy(&t);

    t = pos_ticket_new();
    pos_ticket_set_cash_rounding(t, true);
    pos_ticket_add_return(t, &cola, 2, 333, "S001-R01-000001", NULL);
    pos_ticket_compute(t);
    pos_ticket_add_tender(t, POS_TENDER_CASH, pos_ticket_totals(t)->due);
    err = pos_sale_from_ticket(&s, t, "S001", "R01", 8, "C1", 1);
    pos_err_t check = pos_sale_check(&s, why, sizeof(why));
    CHECK(err == POS_OK && s.kind == POS_SALE_RETURN && s.total == -666 && s.cash_rounding == -4 &&
              s.tenders[0].amount == -670 && check == POS_OK,
          "a refund ticket: return, total -666, rounding -4, cash -670, passes (%s: %s)",
          pos_strerror(check), why);
    CHECK(pos_sale_from_ticket(&s, t, "S001-TOO-LONG-FOR-AN-ID-X", "R01", 8, "C1", 1) ==
              POS_ELENGTH,
          "a store id that does not fit is refused");
    pos_ticket_destroy(&t);
    pos_sale_clear(&s);
}

int main(void)
{
    s_test_valid();
    s_test_lines();
    s_test_tenders();
    s_test_returns();
    s_test_from_ticket();
    return FINISH("test_sale");
}
