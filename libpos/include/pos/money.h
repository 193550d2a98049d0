/*  =========================================================================
    pos/money.h - amounts of money as int64 minor units (fen)

    No floating point anywhere: amounts are parsed from decimal text exactly,
    multiplied and divided in 128-bit integers, and rounded by one rule,
    half away from zero (0.5 fen -> 1 fen, -0.5 fen -> -1 fen), the rule of
    Chinese retail practice (四舍五入) applied symmetrically so a return
    mirrors its sale to the fen.
    =========================================================================
*/
#ifndef POS_MONEY_H_INCLUDED
#define POS_MONEY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    POS_OK = 0,
    POS_EEMPTY,      /* empty text */
    POS_ESYNTAX,     /* not a plain decimal: "1e3", "1,000", " 1", "12.", ".5", "+1" */
    POS_EPRECISION,  /* more decimals than the currency has: "12.505" */
    POS_EOVERFLOW,   /* does not fit int64 */
    POS_ENEGATIVE,   /* a negative amount where none is allowed */
    POS_ERANGE,      /* out of the allowed range (rate, quantity, ...) */
    POS_ECHECKDIGIT, /* barcode check digit wrong */
    POS_ELENGTH,     /* barcode or field of the wrong length */
    POS_ENOTFOUND,   /* line, SKU or tender not on the ticket */
    POS_ESTATE,      /* not allowed in the ticket's state (voided line, paid ticket...) */
    POS_EOVERPAY,    /* a non-cash tender larger than what is due */
    POS_ELIMIT,      /* too many lines, promotions or tenders */
    POS_ECASHREST    /* a non-cash tender that leaves cash 0.01-0.04, which cash rounding
                        cannot settle (it would round to nothing with no cash tendered) */
} pos_err_t;

const char *pos_strerror(pos_err_t err);

#define POS_FEN_PER_YUAN 100

/* Parse "12.5", "12.50", "12", "-3.10" (negative only if allow_negative) into fen.
   Digits, at most one '.', which must have digits on both sides, at most 2 decimals. */
pos_err_t pos_money_parse(const char *text, bool allow_negative, int64_t *fen);

/* Write fen as "12.50", "-0.05" into buf (at least 24 bytes); returns buf. */
char *pos_money_format(int64_t fen, char *buf, size_t size);

/* Write fen for people, as yuan with thousands separators: "¥19,530.39", "-¥0.05" into buf
   (at least POS_MONEY_YUAN_MAX bytes; UTF-8); returns buf. */
#define POS_MONEY_YUAN_MAX 40
char *pos_money_format_yuan(int64_t fen, char *buf, size_t size);

/* round(a * b / c) half away from zero, in 128-bit arithmetic. c must not be 0.
   POS_EOVERFLOW when the result does not fit int64. */
pos_err_t pos_muldiv(int64_t a, int64_t b, int64_t c, int64_t *out);

/* Checked a + b and a * b. */
pos_err_t pos_add(int64_t a, int64_t b, int64_t *out);
pos_err_t pos_mul(int64_t a, int64_t b, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
