/*  =========================================================================
    text.c - UTF-8 validation and character counting (RFC 3629)
    =========================================================================
*/
#include "pos/text.h"
#include <stdint.h>

/*  Length of the UTF-8 sequence at p and its code point in *cp; 0 if invalid. */
static int s_decode(const unsigned char *p, uint32_t *cp)
{
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    int len;
    uint32_t min;
    if ((p[0] & 0xE0) == 0xC0) {
        len = 2;
        min = 0x80;
        *cp = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3;
        min = 0x800;
        *cp = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4;
        min = 0x10000;
        *cp = p[0] & 0x07;
    } else
        return 0;
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        *cp = (*cp << 6) | (p[i] & 0x3F);
    }
    if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF))
        return 0;
    return len;
}

int pos_text_chars(const char *s, size_t max_chars)
{
    if (!s)
        return 0;
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        int len = s_decode(p, &cp);
        if (len == 0 || cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || ++n > max_chars)
            return -1;
        p += len;
    }
    return (int)n;
}

bool pos_text_ok(const char *s, size_t max_chars, bool required)
{
    int n = pos_text_chars(s, max_chars);
    return n > 0 || (n == 0 && !required);
}
