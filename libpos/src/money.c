/*  =========================================================================
    money.c - exact parsing, formatting and rounding of fen amounts

    Parsing is deliberately strict: what a cashier, a CSV file or a price
    list means by "12.5" is 1250 fen, and anything that could be read two
    ways ("1,000" is one thousand or one point zero) is refused rather than
    guessed.
    =========================================================================
*/
#include <stdio.h>
#include <string.h>
#include "pos/money.h"

#define S_DECIMALS 2

static const char *const s_errors[] = {"ok",
                                       "empty",
                                       "not a plain decimal number",
                                       "more than 2 decimals",
                                       "too large",
                                       "negative not allowed",
                                       "out of range",
                                       "wrong check digit",
                                       "wrong length",
                                       "not found",
                                       "not allowed in this state",
                                       "non-cash tender larger than the amount due",
                                       "too many entries",
                                       "leaves 0.01-0.04 for cash, which cash rounding cannot "
                                       "settle: pay the exact rest, or leave at least 0.05"};

const char *pos_strerror(pos_err_t err)
{
    if ((int)err < 0 || (size_t)err >= sizeof(s_errors) / sizeof(s_errors[0]))
        return "unknown error";
    return s_errors[err];
}

pos_err_t pos_money_parse(const char *text, bool allow_negative, int64_t *fen)
{
    if (!text || !*text)
        return POS_EEMPTY;
    const char *p = text;
    bool negative = false;
    if (*p == '-') {
        negative = true;
        p++;
    }
    __int128 whole = 0;
    int int_digits = 0, dec_digits = 0;
    int64_t decimals = 0;
    for (; *p >= '0' && *p <= '9'; p++, int_digits++) {
        whole = whole * 10 + (*p - '0');
        if (whole > INT64_MAX)
            return POS_EOVERFLOW;
    }
    if (int_digits == 0)
        return POS_ESYNTAX;
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++, dec_digits++) {
            if (dec_digits >= S_DECIMALS) {
                /* trailing zeros beyond the currency's decimals are still exact */
                if (*p != '0')
                    return POS_EPRECISION;
                continue;
            }
            decimals = decimals * 10 + (*p - '0');
        }
        if (dec_digits == 0)
            return POS_ESYNTAX;
    }
    if (*p != '\0')
        return POS_ESYNTAX;
    for (int i = dec_digits < S_DECIMALS ? dec_digits : S_DECIMALS; i < S_DECIMALS; i++)
        decimals *= 10;
    __int128 value = whole * POS_FEN_PER_YUAN + decimals;
    if (value > INT64_MAX)
        return POS_EOVERFLOW;
    if (negative && value != 0 && !allow_negative)
        return POS_ENEGATIVE;
    *fen = negative ? -(int64_t)value : (int64_t)value;
    return POS_OK;
}

char *pos_money_format_yuan(int64_t fen, char *buf, size_t size)
{
    unsigned long long abs = fen < 0 ? 0ULL - (unsigned long long)fen : (unsigned long long)fen;
    char digits[24], grouped[40];
    int n = snprintf(digits, sizeof(digits), "%llu", abs / POS_FEN_PER_YUAN);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            grouped[k++] = ',';
        grouped[k++] = digits[i];
    }
    grouped[k] = '\0';
    snprintf(buf, size, "%s\xc2\xa5%s.%02llu", fen < 0 ? "-" : "", grouped,
             abs % POS_FEN_PER_YUAN);
    return buf;
}

char *pos_money_format(int64_t fen, char *buf, size_t size)
{
    unsigned long long abs = fen < 0 ? 0ULL - (unsigned long long)fen : (unsigned long long)fen;
    snprintf(buf, size, "%s%llu.%02llu", fen < 0 ? "-" : "", abs / POS_FEN_PER_YUAN,
             abs % POS_FEN_PER_YUAN);
    return buf;
}

pos_err_t pos_muldiv(int64_t a, int64_t b, int64_t c, int64_t *out)
{
    if (c == 0)
        return POS_ERANGE;
    __int128 n = (__int128)a * b;
    __int128 d = c;
    if (d < 0) {
        n = -n;
        d = -d;
    }
    __int128 q = n / d, r = n % d;
    /* half away from zero: |r| * 2 >= d moves one step away from zero */
    if (r < 0 ? -r * 2 >= d : r * 2 >= d)
        q += n < 0 ? -1 : 1;
    if (q > INT64_MAX || q < INT64_MIN)
        return POS_EOVERFLOW;
    *out = (int64_t)q;
    return POS_OK;
}

pos_err_t pos_add(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_add_overflow(a, b, out) ? POS_EOVERFLOW : POS_OK;
}

pos_err_t pos_mul(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? POS_EOVERFLOW : POS_OK;
}
