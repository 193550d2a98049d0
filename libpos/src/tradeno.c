/*  tradeno.c - a payment intent's id as Alipay's out_trade_no (pos/tradeno.h) */
#include <string.h>

#include <pos/tradeno.h>

static int s_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

pos_err_t pos_tradeno_alipay(const char *id, char *out, size_t size)
{
    if (!out || size == 0)
        return POS_ELENGTH;
    out[0] = '\0';
    if (!id || !*id)
        return POS_ESYNTAX;
    size_t n = 0;
    for (const char *p = id; *p; p++) {
        const char *put = s_alnum(*p) ? p : *p == '-' ? "__" : *p == '_' ? "_u" : NULL;
        size_t len = s_alnum(*p) ? 1 : 2;
        if (!put) {
            out[0] = '\0';
            return POS_ESYNTAX;
        }
        if (n + len > POS_ALIPAY_NO_MAX || n + len >= size) {
            out[0] = '\0';
            return POS_ELENGTH;
        }
        memcpy(out + n, put, len);
        n += len;
    }
    out[n] = '\0';
    return POS_OK;
}

pos_err_t pos_tradeno_from_alipay(const char *wire, char *out, size_t size)
{
    if (!out || size == 0)
        return POS_ELENGTH;
    out[0] = '\0';
    if (!wire || !*wire)
        return POS_ESYNTAX;
    size_t n = 0;
    for (const char *p = wire; *p; p++) {
        char c = *p;
        if (c == '_') {
            c = p[1] == '_' ? '-' : p[1] == 'u' ? '_' : '\0';
            p++;
        } else if (!s_alnum(c)) {
            c = '\0';
        }
        if (!c) {
            out[0] = '\0';
            return POS_ESYNTAX;
        }
        if (n + 1 >= size) {
            out[0] = '\0';
            return POS_ELENGTH;
        }
        out[n++] = c;
    }
    out[n] = '\0';
    return POS_OK;
}
