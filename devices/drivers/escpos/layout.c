/*  =========================================================================
    layout.c - a completed sale as ESC/POS receipt bytes

    Everything is laid out in columns of the printer's normal font (32 on
    58 mm paper, 48 on 80 mm); a line whose text and amount do not fit on
    one row puts the amount on the next. The receipt is built from the
    journaled sale document, not from the ticket on screen, so what prints
    is what was recorded, to the fen.
    =========================================================================
*/
#include <errno.h>
#include <iconv.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <pos/money.h>
#include <pos/receipt.h>

#include "escpos.h"

#define S_ROW_MAX 512

typedef struct {
    bus_buf_t *out;
    iconv_t cd;
    int cols;
    int rc;
} s_w_t;

static void s_bytes(s_w_t *w, const void *data, size_t len)
{
    if (w->rc == 0 && bus_buf_append(w->out, data, len) != 0)
        w->rc = -1;
}

#define S_CMD(w, ...)                                                                              \
    do {                                                                                           \
        static const uint8_t s_c_[] = {__VA_ARGS__};                                               \
        s_bytes(w, s_c_, sizeof(s_c_));                                                            \
    } while (0)

/*  UTF-8 text as GB18030 (text that does not convert is replaced by '?'). */
static void s_text(s_w_t *w, const char *utf8)
{
    char in[S_ROW_MAX * 4], outb[S_ROW_MAX * 4];
    snprintf(in, sizeof(in), "%s", utf8);
    char *ip = in, *op = outb;
    size_t il = strlen(in), ol = sizeof(outb);
    iconv(w->cd, NULL, NULL, NULL, NULL);
    while (il > 0) {
        if (iconv(w->cd, &ip, &il, &op, &ol) == (size_t)-1) {
            if (errno == E2BIG || ol < 1)
                break;
            /* skip one UTF-8 character */
            unsigned char c = (unsigned char)*ip;
            size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            n = n > il ? il : n;
            ip += n;
            il -= n;
            *op++ = '?';
            ol--;
        }
    }
    s_bytes(w, outb, (size_t)(op - outb));
}

static void s_line(s_w_t *w, const char *utf8)
{
    s_text(w, utf8);
    S_CMD(w, 0x0A);
}

/*  left ... right on one row when they fit, else left, then right aligned on its own row. */
static void s_lr(s_w_t *w, const char *left, const char *right)
{
    int lw = pos_text_width(left), rw = pos_text_width(right);
    char row[S_ROW_MAX];
    if (lw + 1 + rw > w->cols) {
        s_line(w, left);
        lw = 0;
        left = "";
    }
    int pad = w->cols - lw - rw;
    snprintf(row, sizeof(row), "%s%*s%s", left, pad > 0 ? pad : 1, "", right);
    s_line(w, row);
}

static void s_rule(s_w_t *w)
{
    char row[S_ROW_MAX];
    memset(row, '-', (size_t)w->cols);
    row[w->cols] = '\0';
    s_line(w, row);
}

static const char *s_fen(int64_t fen, char *buf, size_t size)
{
    return pos_money_format(fen, buf, size);
}

static int64_t s_i(const bus_val_t *m, const char *k)
{
    int64_t v = 0;
    bus_val_map_get_int(m, k, &v);
    return v;
}

static const char *s_s(const bus_val_t *m, const char *k)
{
    const char *v = bus_val_map_get_str(m, k);
    return v ? v : "";
}

static void s_qr(s_w_t *w, const char *text)
{
    size_t n = strlen(text) + 3;
    if (n > 7000)
        return;
    S_CMD(w, 0x1D, 0x28, 0x6B, 0x04, 0x00, 0x31, 0x41, 0x32, 0x00); /* model 2 */
    S_CMD(w, 0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x43, 0x06);       /* module size 6 */
    S_CMD(w, 0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x45, 0x31);       /* error correction M */
    uint8_t head[] = {0x1D, 0x28, 0x6B, (uint8_t)(n & 0xFF), (uint8_t)(n >> 8), 0x31, 0x50, 0x30};
    s_bytes(w, head, sizeof(head));
    s_bytes(w, text, strlen(text));
    S_CMD(w, 0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x51, 0x30); /* print */
    S_CMD(w, 0x0A);
}

/*  Tax per rate, from the lines (the same arithmetic the sale was checked with). */
static void s_taxes(s_w_t *w, const bus_val_t *lines)
{
    int64_t rates[16], gross[16], tax[16];
    int n = 0;
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        const bus_val_t *l = bus_val_arr_get(lines, i);
        int64_t rate = s_i(l, "tax_rate_bp");
        int k = 0;
        while (k < n && rates[k] != rate)
            k++;
        if (k == n) {
            if (n == 16)
                continue;
            rates[n] = rate;
            gross[n] = tax[n] = 0;
            n++;
        }
        gross[k] += s_i(l, "amount");
        tax[k] += s_i(l, "tax");
    }
    char left[S_ROW_MAX], a[32], b[32];
    for (int k = 0; k < n; k++) {
        if (gross[k] == 0 && tax[k] == 0)
            continue;
        snprintf(left, sizeof(left), "Tax %" PRId64 ".%02" PRId64 "%% on %s", rates[k] / 100,
                 rates[k] % 100, s_fen(gross[k], a, sizeof(a)));
        s_lr(w, left, s_fen(tax[k], b, sizeof(b)));
    }
}

int escpos_receipt(const bus_val_t *sale, const escpos_layout_t *layout, bus_buf_t *out, char *why,
                   size_t size)
{
    s_w_t w = {.out = out, .cols = layout->width_mm == 58 ? 32 : 48};
    w.cd = iconv_open("GB18030", "UTF-8");
    if (w.cd == (iconv_t)-1) {
        snprintf(why, size, "no GB18030 converter: %s", strerror(errno));
        return -1;
    }
    char row[S_ROW_MAX], a[32], b[32];
    S_CMD(&w, 0x1B, 0x40);       /* init */
    S_CMD(&w, 0x1C, 0x26);       /* Chinese character mode */
    S_CMD(&w, 0x1B, 0x61, 0x01); /* centre */
    for (int i = 0; i < layout->nheader; i++) {
        if (i == 0)
            S_CMD(&w, 0x1B, 0x45, 0x01, 0x1D, 0x21, 0x11); /* bold, double size */
        s_line(&w, layout->header[i]);
        if (i == 0)
            S_CMD(&w, 0x1D, 0x21, 0x00, 0x1B, 0x45, 0x00);
    }
    if (layout->reprint) {
        S_CMD(&w, 0x1B, 0x45, 0x01);
        s_line(&w, "*** REPRINT / 重印 ***");
        S_CMD(&w, 0x1B, 0x45, 0x00);
    }
    S_CMD(&w, 0x1B, 0x61, 0x00); /* left */
    const char *kind = s_s(sale, "kind");
    snprintf(row, sizeof(row), "%s %s",
             strcmp(kind, "return") == 0   ? "REFUND"
             : strcmp(kind, "nosale") == 0 ? "NO SALE"
                                           : "SALE",
             s_s(sale, "sale_id"));
    s_line(&w, row);
    time_t t = (time_t)(s_i(sale, "ts") / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
    s_lr(&w, when, layout->cashier && *layout->cashier ? layout->cashier : s_s(sale, "cashier"));
    s_rule(&w);
    const bus_val_t *lines = bus_val_map_get(sale, "lines");
    int64_t discounts = 0;
    for (size_t i = 0; i < bus_val_size(lines); i++) {
        const bus_val_t *l = bus_val_arr_get(lines, i);
        bool voided = false;
        bus_val_map_get_bool(l, "voided", &voided);
        snprintf(row, sizeof(row), "%s%s", voided ? "[VOID] " : "",
                 s_s(l, "name")[0] ? s_s(l, "name") : s_s(l, "sku"));
        s_line(&w, row);
        int64_t qty = s_i(l, "qty");
        bool kg = strcmp(s_s(l, "unit"), "kg") == 0;
        if (kg)
            snprintf(row, sizeof(row), "  %s%" PRId64 ".%03" PRId64 " kg x %s/kg",
                     qty < 0 ? "-" : "", (qty < 0 ? -qty : qty) / 1000,
                     (qty < 0 ? -qty : qty) % 1000, s_fen(s_i(l, "unit_price"), a, sizeof(a)));
        else
            snprintf(row, sizeof(row), "  %" PRId64 " x %s", qty,
                     s_fen(s_i(l, "unit_price"), a, sizeof(a)));
        s_lr(&w, row, s_fen(voided ? 0 : s_i(l, "gross"), b, sizeof(b)));
        int64_t promo = s_i(l, "promo_discount"), tdisc = s_i(l, "ticket_discount");
        if (promo) {
            snprintf(row, sizeof(row), "  promo %s", s_s(l, "promo_id"));
            s_lr(&w, row, s_fen(-promo, b, sizeof(b)));
        }
        if (tdisc)
            s_lr(&w, "  discount", s_fen(-tdisc, b, sizeof(b)));
        discounts += promo + tdisc;
        if (s_s(l, "return_of")[0]) {
            snprintf(row, sizeof(row), "  return of %s", s_s(l, "return_of"));
            s_line(&w, row);
        }
    }
    s_rule(&w);
    if (discounts)
        s_lr(&w, "Discounts", s_fen(-discounts, b, sizeof(b)));
    S_CMD(&w, 0x1B, 0x45, 0x01, 0x1D, 0x21, 0x01); /* bold, double height: columns stay */
    s_lr(&w, "TOTAL", s_fen(s_i(sale, "total"), b, sizeof(b)));
    S_CMD(&w, 0x1D, 0x21, 0x00, 0x1B, 0x45, 0x00);
    s_taxes(&w, lines);
    const bus_val_t *tenders = bus_val_map_get(sale, "tenders");
    for (size_t i = 0; i < bus_val_size(tenders); i++) {
        const bus_val_t *t2 = bus_val_arr_get(tenders, i);
        s_lr(&w, s_s(t2, "kind"), s_fen(s_i(t2, "amount"), b, sizeof(b)));
    }
    if (s_i(sale, "cash_rounding"))
        s_lr(&w, "Rounding", s_fen(s_i(sale, "cash_rounding"), b, sizeof(b)));
    if (bus_val_size(tenders))
        s_lr(&w, "Change", s_fen(s_i(sale, "change"), b, sizeof(b)));
    s_rule(&w);
    S_CMD(&w, 0x1B, 0x61, 0x01);
    if (layout->qr && *layout->qr)
        s_qr(&w, layout->qr);
    for (int i = 0; i < layout->nfooter; i++)
        s_line(&w, layout->footer[i]);
    if (layout->tax_id && *layout->tax_id) {
        snprintf(row, sizeof(row), "Tax ID %s", layout->tax_id);
        s_line(&w, row);
    }
    S_CMD(&w, 0x1B, 0x61, 0x00);
    S_CMD(&w, 0x1C, 0x2E);       /* leave Chinese character mode */
    S_CMD(&w, 0x1B, 0x64, 0x04); /* feed 4 lines */
    S_CMD(&w, 0x1D, 0x56, 0x01); /* partial cut */
    iconv_close(w.cd);
    if (w.rc != 0)
        snprintf(why, size, "out of memory");
    return w.rc;
}

int escpos_drawer(bus_buf_t *out)
{
    /* DLE DC4 1 m t: a real-time pulse on pin 2 (m 0) for 200 ms (t 2), taken even while the
       printer is offline or out of paper, unlike ESC p */
    static const uint8_t pulse[] = {0x10, 0x14, 0x01, 0x00, 0x02};
    return bus_buf_append(out, pulse, sizeof(pulse));
}

int escpos_document(const char *text, int width_mm, bus_buf_t *out)
{
    s_w_t w = {.out = out, .cols = width_mm == 58 ? 32 : 48};
    w.cd = iconv_open("GB18030", "UTF-8");
    if (w.cd == (iconv_t)-1)
        return -1;
    S_CMD(&w, 0x1B, 0x40, 0x1C, 0x26);
    char row[S_ROW_MAX];
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        snprintf(row, sizeof(row), "%.*s", (int)(n < S_ROW_MAX - 1 ? n : S_ROW_MAX - 1), p);
        s_line(&w, row);
        p += n + (nl ? 1 : 0);
    }
    S_CMD(&w, 0x1C, 0x2E, 0x1B, 0x64, 0x04, 0x1D, 0x56, 0x01);
    iconv_close(w.cd);
    return w.rc;
}
