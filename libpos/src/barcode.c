/*  =========================================================================
    barcode.c - GTIN check digits and weighed-item labels

    EAN-13, EAN-8 and UPC-A share one check digit rule (GS1 mod 10): from the
    rightmost data digit leftwards, weights 3, 1, 3, 1...; the check digit
    brings the weighted sum to a multiple of ten.
    =========================================================================
*/
#include <string.h>
#include "pos/barcode.h"

#define S_GS1_MOD 10

int pos_gtin_check_digit(const char *digits, size_t len)
{
    int sum = 0;
    for (size_t i = 0; i < len; i++) {
        char c = digits[len - 1 - i];
        if (c < '0' || c > '9')
            return -1;
        sum += (c - '0') * (i % 2 == 0 ? 3 : 1);
    }
    return (S_GS1_MOD - sum % S_GS1_MOD) % S_GS1_MOD;
}

static pos_err_t s_check(const char *code, size_t want)
{
    if (!code)
        return POS_EEMPTY;
    size_t len = strlen(code);
    if (len != want)
        return POS_ELENGTH;
    int check = pos_gtin_check_digit(code, len - 1);
    if (check < 0 || code[len - 1] < '0' || code[len - 1] > '9')
        return POS_ESYNTAX;
    return check == code[len - 1] - '0' ? POS_OK : POS_ECHECKDIGIT;
}

pos_err_t pos_ean13_check(const char *code)
{
    return s_check(code, POS_EAN13_LEN);
}

pos_err_t pos_ean8_check(const char *code)
{
    return s_check(code, POS_EAN8_LEN);
}

pos_err_t pos_upca_check(const char *code)
{
    return s_check(code, POS_UPCA_LEN);
}

pos_err_t pos_gtin_check(const char *code)
{
    size_t len = code ? strlen(code) : 0;
    if (len == POS_EAN13_LEN || len == POS_EAN8_LEN || len == POS_UPCA_LEN)
        return s_check(code, len);
    return len ? POS_ELENGTH : POS_EEMPTY;
}

pos_err_t pos_label_layout_init(pos_label_layout_t *layout, const char *pattern,
                                const char *prefixes, pos_label_kind_t kind)
{
    memset(layout, 0, sizeof(*layout));
    if (!pattern || strlen(pattern) != POS_EAN13_LEN || pattern[POS_EAN13_LEN - 1] != 'C')
        return POS_ESYNTAX;
    int items = 0, values = 0, ps = 0;
    for (int i = 0; i < POS_EAN13_LEN - 1; i++) {
        char c = pattern[i];
        if (c == 'P' && i == ps)
            ps++;
        else if (c == 'I')
            items++;
        else if (c == 'V')
            values++;
        else if (c != 'X')
            return POS_ESYNTAX; /* P only at the start, C only at the end */
    }
    if (ps < 1 || ps > 2 || items < 1 || items > POS_ITEM_CODE_MAX || values < 1 || values > 9)
        return POS_ESYNTAX;
    memcpy(layout->pattern, pattern, POS_EAN13_LEN + 1);
    layout->kind = kind;
    if (prefixes && *prefixes) {
        const char *p = prefixes;
        while (*p) {
            size_t n = strcspn(p, ",");
            if (n != (size_t)ps || layout->nprefixes == 10)
                return POS_ESYNTAX;
            memcpy(layout->prefixes[layout->nprefixes], p, n);
            layout->prefixes[layout->nprefixes++][n] = '\0';
            p += n;
            if (*p == ',')
                p++;
        }
    }
    return POS_OK;
}

bool pos_label_matches(const pos_label_layout_t *layout, const char *code)
{
    if (!code || strlen(code) != POS_EAN13_LEN)
        return false;
    int ps = (int)strspn(layout->pattern, "P");
    if (layout->nprefixes == 0)
        return code[0] == '2';
    for (int i = 0; i < layout->nprefixes; i++)
        if (strncmp(code, layout->prefixes[i], (size_t)ps) == 0)
            return true;
    return false;
}

pos_err_t pos_label_parse(const pos_label_layout_t *layout, const char *code, pos_label_t *label)
{
    pos_err_t err = pos_ean13_check(code);
    if (err != POS_OK)
        return err;
    if (!pos_label_matches(layout, code))
        return POS_ERANGE;
    memset(label, 0, sizeof(*label));
    int items = 0;
    for (int i = 0; i < POS_EAN13_LEN - 1; i++) {
        if (layout->pattern[i] == 'I')
            label->item[items++] = code[i];
        else if (layout->pattern[i] == 'V')
            label->value = label->value * 10 + (code[i] - '0');
    }
    label->item[items] = '\0';
    label->kind = layout->kind;
    return POS_OK;
}
