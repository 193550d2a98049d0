/*  =========================================================================
    pos/barcode.h - EAN/UPC check digits and in-store weighed-item labels

    A scale-printed label is an EAN-13 whose first digits (20-29) mark it as
    in-store. Which digits are the item code and which the embedded price or
    weight differs between stores and scale vendors, so the layout is a
    pattern per store, one letter per digit of the 13:
        P  prefix digit (the label's first digits, matched against prefixes)
        I  item code digit        V  value digit (price in fen or weight in grams)
        X  ignored digit (e.g. a price check digit some scales insert)
        C  the EAN-13 check digit (last position)
    e.g. "PPIIIIIVVVVVC": 2 prefix digits, 5 item digits, 5 value digits.
    =========================================================================
*/
#ifndef POS_BARCODE_H_INCLUDED
#define POS_BARCODE_H_INCLUDED

#include "pos/money.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POS_EAN13_LEN     13
#define POS_EAN8_LEN      8
#define POS_UPCA_LEN      12
#define POS_ITEM_CODE_MAX 12

/* The check digit for the given data digits (all but the last): 0..9, or -1 if the text is not
   all digits. Works for EAN-13 (12 data digits), EAN-8 (7) and UPC-A (11). */
int pos_gtin_check_digit(const char *digits, size_t len);
/* Validate a whole EAN-13, EAN-8 or UPC-A code: POS_OK, POS_ELENGTH, POS_ESYNTAX (not digits)
   or POS_ECHECKDIGIT. */
pos_err_t pos_ean13_check(const char *code);
pos_err_t pos_ean8_check(const char *code);
pos_err_t pos_upca_check(const char *code);
/* Any of the three by length. */
pos_err_t pos_gtin_check(const char *code);

typedef enum { POS_LABEL_PRICE, POS_LABEL_WEIGHT } pos_label_kind_t;

typedef struct {
    char pattern[POS_EAN13_LEN + 1];
    char prefixes[10][3]; /* accepted prefixes, e.g. "20".."29"; empty list = 20..29 */
    int nprefixes;
    pos_label_kind_t kind;
} pos_label_layout_t;

/* Set up a layout from a pattern ("PPIIIIIVVVVVC"), a comma-separated list of prefixes ("22,23",
   or NULL for 20-29) and a kind. POS_ESYNTAX on a bad pattern. */
pos_err_t pos_label_layout_init(pos_label_layout_t *layout, const char *pattern,
                                const char *prefixes, pos_label_kind_t kind);

typedef struct {
    char item[POS_ITEM_CODE_MAX + 1]; /* item code digits as printed */
    int64_t value;                    /* fen (price labels) or grams (weight labels) */
    pos_label_kind_t kind;
} pos_label_t;

/* True if code is an EAN-13 whose prefix marks it as an in-store label for this layout. */
bool pos_label_matches(const pos_label_layout_t *layout, const char *code);
/* Parse an in-store label: checks the EAN-13 check digit and the prefix. */
pos_err_t pos_label_parse(const pos_label_layout_t *layout, const char *code, pos_label_t *label);

#ifdef __cplusplus
}
#endif
#endif
