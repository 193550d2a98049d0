/*  =========================================================================
    pos/text.h - text that people see: names, categories, suppliers

    Limits that users meet are in characters, not bytes: a product name of
    120 Chinese characters is as valid as one of 120 Latin letters. Text is
    strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF)
    without control characters (C0, DEL, C1), because it ends up on receipts,
    in CSV exports and in terminal tables.
    =========================================================================
*/
#ifndef POS_TEXT_H_INCLUDED
#define POS_TEXT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Character limits (documented in docs/protocol.md). A UTF-8 character takes at most 4 bytes,
   so a buffer of POS_TEXT_BYTES(chars) + 1 holds any valid text of that many characters. */
#define POS_NAME_CHARS      120
#define POS_CATEGORY_CHARS  40
#define POS_SUPPLIER_CHARS  80
#define POS_TEXT_BYTES(c)   ((c) * 4)

/* Number of characters of s if it is valid printable UTF-8 of at most max_chars characters;
   -1 otherwise. An empty (or NULL) string is 0 characters. */
int pos_text_chars(const char *s, size_t max_chars);

/* s is valid printable UTF-8 of 1..max_chars characters (0..max_chars when !required). */
bool pos_text_ok(const char *s, size_t max_chars, bool required);

#ifdef __cplusplus
}
#endif
#endif
