/*  test_money - exact parsing, formatting, rounding and tax */
#include <pos/money.h>
#include <pos/tax.h>
#include <string.h>
#include "testutil.h"

static void s_parse(const char *text, bool neg, pos_err_t want_err, int64_t want)
{
    int64_t fen = -999;
    pos_err_t err = pos_money_parse(text, neg, &fen);
    CHECK(err == want_err && (err != POS_OK || fen == want), "parse \"%s\" -> %s %lld", text,
          pos_strerror(err), (long long)(err == POS_OK ? fen : 0));
}

int main(void)
{
    s_parse("12.5", false, POS_OK, 1250);
    s_parse("12.50", false, POS_OK, 1250);
    s_parse("12", false, POS_OK, 1200);
    s_parse("0.05", false, POS_OK, 5);
    s_parse("12.500", false, POS_OK, 1250);
    s_parse("-3.10", true, POS_OK, -310);
    s_parse("92233720368547758.07", false, POS_OK, INT64_MAX);
    s_parse("12.505", false, POS_EPRECISION, 0);
    s_parse("1e3", false, POS_ESYNTAX, 0);
    s_parse("", false, POS_EEMPTY, 0);
    s_parse("12.", false, POS_ESYNTAX, 0);
    s_parse(".5", false, POS_ESYNTAX, 0);
    s_parse("1,000", false, POS_ESYNTAX, 0);
    s_parse(" 1", false, POS_ESYNTAX, 0);
    s_parse("+1", false, POS_ESYNTAX, 0);
    s_parse("-3.10", false, POS_ENEGATIVE, 0);
    s_parse("92233720368547758.08", false, POS_EOVERFLOW, 0);
    s_parse("99999999999999999999999", false, POS_EOVERFLOW, 0);

    char buf[32];
    CHECK(strcmp(pos_money_format(1250, buf, sizeof(buf)), "12.50") == 0, "format 12.50");
    CHECK(strcmp(pos_money_format(-5, buf, sizeof(buf)), "-0.05") == 0, "format -0.05");
    CHECK(strcmp(pos_money_format(0, buf, sizeof(buf)), "0.00") == 0, "format 0.00");
    char yuan[POS_MONEY_YUAN_MAX];
    CHECK(strcmp(pos_money_format_yuan(1953039, yuan, sizeof(yuan)), "¥19,530.39") == 0,
          "yuan: ¥19,530.39");
    CHECK(strcmp(pos_money_format_yuan(-5, yuan, sizeof(yuan)), "-¥0.05") == 0, "yuan: -¥0.05");
    CHECK(strcmp(pos_money_format_yuan(99999, yuan, sizeof(yuan)), "¥999.99") == 0,
          "yuan: no separator under 1000");
    CHECK(strcmp(pos_money_format_yuan(100000, yuan, sizeof(yuan)), "¥1,000.00") == 0,
          "yuan: ¥1,000.00");
    CHECK(strcmp(pos_money_format_yuan(123456789012, yuan, sizeof(yuan)), "¥1,234,567,890.12") ==
              0,
          "yuan: ¥1,234,567,890.12");
    CHECK(strcmp(pos_money_format_yuan(INT64_MIN, yuan, sizeof(yuan)),
                 "-¥92,233,720,368,547,758.08") == 0,
          "yuan: INT64_MIN");
    CHECK(strcmp(pos_money_format(INT64_MIN, buf, sizeof(buf)), "-92233720368547758.08") == 0,
          "format INT64_MIN");

    static const struct {
        int64_t a, b, c, want;
    } md[] = {{5, 1, 10, 1},    {-5, 1, 10, -1},          {4, 1, 10, 0},
              {15, 1, 10, 2},   {-15, 1, 10, -2},         {25, 1, 10, 3},
              {-25, 1, 10, -3}, {3980, 1234, 1000, 4911}, {7, 1, -2, -4}};
    int ok = 0;
    for (size_t i = 0; i < sizeof(md) / sizeof(md[0]); i++) {
        int64_t out;
        if (pos_muldiv(md[i].a, md[i].b, md[i].c, &out) == POS_OK && out == md[i].want)
            ok++;
        else
            printf("     muldiv(%lld,%lld,%lld) wrong\n", (long long)md[i].a, (long long)md[i].b,
                   (long long)md[i].c);
    }
    CHECK(ok == (int)(sizeof(md) / sizeof(md[0])), "half-away-from-zero rounding table");
    int64_t out;
    CHECK(pos_muldiv(INT64_MAX, 3, 2, &out) == POS_EOVERFLOW, "muldiv overflow detected");
    CHECK(pos_muldiv(INT64_MAX, 3, 3, &out) == POS_OK && out == INT64_MAX,
          "128-bit intermediate: INT64_MAX * 3 / 3");
    CHECK(pos_add(INT64_MAX, 1, &out) == POS_EOVERFLOW &&
              pos_mul(INT64_MAX / 2, 3, &out) == POS_EOVERFLOW,
          "checked add and mul");

    int64_t tax;
    CHECK(pos_tax_included(1130, 1300, &tax) == POS_OK && tax == 130, "13%% in 11.30 is 1.30");
    CHECK(pos_tax_included(1000, 1300, &tax) == POS_OK && tax == 115, "13%% in 10.00 is 1.15");
    CHECK(pos_tax_included(100, 900, &tax) == POS_OK && tax == 8, "9%% in 1.00 is 0.08");
    CHECK(pos_tax_included(6, 1300, &tax) == POS_OK && tax == 1, "13%% in 0.06 rounds to 0.01");
    CHECK(pos_tax_included(-1000, 1300, &tax) == POS_OK && tax == -115, "a return mirrors");
    CHECK(pos_tax_included(1000, 0, &tax) == POS_OK && tax == 0, "0%% is no tax");
    CHECK(pos_tax_included(1000, 10001, &tax) == POS_ERANGE, "rate above 100%% refused");

    pos_tax_summary_t s;
    pos_tax_summary_init(&s);
    pos_tax_summary_add(&s, 1300, 1000, 115);
    pos_tax_summary_add(&s, 900, 100, 8);
    pos_tax_summary_add(&s, 1300, 1130, 130);
    CHECK(s.count == 2 && s.rows[0].rate_bp == 900 && s.rows[1].gross == 2130 &&
              s.rows[1].tax == 245 && s.rows[1].net == 1885,
          "summary groups by rate, ascending, net = gross - tax");
    return FINISH("test_money");
}
