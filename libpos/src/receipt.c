/*  =========================================================================
    receipt.c - receipt snapshot and plain-text layout
    =========================================================================
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pos/receipt.h"

#define S_WIDTH_MIN 24
#define S_WIDTH_MAX 80

struct pos_receipt {
    pos_receipt_header_t header;
    pos_line_t *lines;
    int nlines;
    pos_tender_t tenders[POS_TENDERS_MAX];
    int ntenders;
    pos_totals_t totals;
};

pos_receipt_t *pos_receipt_new(const pos_receipt_header_t *header, pos_ticket_t *ticket)
{
    pos_receipt_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->header = *header;
    self->nlines = pos_ticket_line_count(ticket);
    self->lines = calloc((size_t)(self->nlines ? self->nlines : 1), sizeof(*self->lines));
    if (!self->lines) {
        free(self);
        return NULL;
    }
    for (int i = 0; i < self->nlines; i++)
        self->lines[i] = *pos_ticket_line(ticket, i);
    self->ntenders = pos_ticket_tender_count(ticket);
    for (int i = 0; i < self->ntenders; i++)
        self->tenders[i] = *pos_ticket_tender(ticket, i);
    pos_ticket_remaining(ticket);
    self->totals = *pos_ticket_totals(ticket);
    return self;
}

void pos_receipt_destroy(pos_receipt_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->lines);
    free(*self_p);
    *self_p = NULL;
}

const pos_receipt_header_t *pos_receipt_header(const pos_receipt_t *self)
{
    return &self->header;
}

int pos_receipt_line_count(const pos_receipt_t *self)
{
    return self->nlines;
}

const pos_line_t *pos_receipt_line(const pos_receipt_t *self, int index)
{
    return index >= 0 && index < self->nlines ? &self->lines[index] : NULL;
}

const pos_totals_t *pos_receipt_totals(const pos_receipt_t *self)
{
    return &self->totals;
}

int pos_receipt_tender_count(const pos_receipt_t *self)
{
    return self->ntenders;
}

const pos_tender_t *pos_receipt_tender(const pos_receipt_t *self, int index)
{
    return index >= 0 && index < self->ntenders ? &self->tenders[index] : NULL;
}

int pos_text_width(const char *utf8)
{
    int w = 0;
    for (const unsigned char *p = (const unsigned char *)utf8; *p;) {
        if (*p < 0x80) {
            w += 1;
            p += 1;
        } else if ((*p & 0xe0) == 0xc0) {
            w += 1;
            p += p[1] ? 2 : 1;
        } else if ((*p & 0xf0) == 0xe0) {
            w += 2; /* CJK ideographs and fullwidth forms are 3-byte sequences */
            p += (p[1] && p[2]) ? 3 : 1;
        } else {
            w += 2;
            p += (p[1] && p[2] && p[3]) ? 4 : 1;
        }
    }
    return w;
}

typedef struct {
    char *buf;
    size_t size, used;
    bool overflow;
} s_out_t;

static void s_put(s_out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->used, o->size - o->used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->size - o->used) {
        o->overflow = true;
        return;
    }
    o->used += (size_t)n;
}

/*  left text, right text, padded to width (left truncated by columns if needed). */
static void s_row(s_out_t *o, int width, const char *left, const char *right)
{
    int rw = pos_text_width(right);
    int lw = pos_text_width(left);
    int pad = width - rw - lw;
    if (pad < 1)
        pad = 1;
    s_put(o, "%s%*s%s\n", left, pad, "", right);
}

static void s_rule(s_out_t *o, int width, char c)
{
    char line[S_WIDTH_MAX + 2];
    memset(line, c, (size_t)width);
    line[width] = '\0';
    s_put(o, "%s\n", line);
}

int pos_receipt_render(const pos_receipt_t *self, int width, char *buf, size_t size)
{
    if (width < S_WIDTH_MIN || width > S_WIDTH_MAX || !buf || size == 0)
        return -1;
    s_out_t o = {buf, size, 0, false};
    char a[32], b[32], text[160];
    const pos_receipt_header_t *h = &self->header;
    s_put(&o, "%s\n", h->store_name);
    if (h->store_address[0])
        s_put(&o, "%s\n", h->store_address);
    snprintf(text, sizeof(text), "%s %s", h->business_day, h->time);
    s_row(&o, width, h->sale_id, "");
    s_row(&o, width, text, h->cashier);
    s_rule(&o, width, '-');
    for (int i = 0; i < self->nlines; i++) {
        const pos_line_t *l = &self->lines[i];
        s_put(&o, "%s%s%s\n", l->voided ? "[VOID] " : "", l->is_return ? "[RETURN] " : "",
              l->item.name[0] ? l->item.name : l->item.sku);
        if (l->item.unit == POS_UNIT_KG)
            snprintf(text, sizeof(text), "  %lld.%03lld kg x %s", (long long)(l->qty / 1000),
                     (long long)llabs(l->qty % 1000),
                     pos_money_format(l->unit_price, a, sizeof(a)));
        else
            snprintf(text, sizeof(text), "  %lld x %s", (long long)l->qty,
                     pos_money_format(l->unit_price, a, sizeof(a)));
        s_row(&o, width, text, pos_money_format(l->gross, b, sizeof(b)));
        if (l->promo_discount) {
            snprintf(text, sizeof(text), "  promo %s", l->promo_id);
            snprintf(b, sizeof(b), "-%s", pos_money_format(l->promo_discount, a, sizeof(a)));
            s_row(&o, width, text, b);
        }
        if (l->ticket_discount) {
            snprintf(b, sizeof(b), "-%s", pos_money_format(l->ticket_discount, a, sizeof(a)));
            s_row(&o, width, "  ticket discount", b);
        }
    }
    s_rule(&o, width, '-');
    const pos_totals_t *t = &self->totals;
    if (t->promo_discounts + t->ticket_discount) {
        snprintf(b, sizeof(b), "-%s",
                 pos_money_format(t->promo_discounts + t->ticket_discount, a, sizeof(a)));
        s_row(&o, width, "Discounts", b);
    }
    s_row(&o, width, "TOTAL", pos_money_format(t->total, a, sizeof(a)));
    if (t->cash_rounding)
        s_row(&o, width, "Cash rounding", pos_money_format(t->cash_rounding, a, sizeof(a)));
    for (int i = 0; i < self->ntenders; i++)
        s_row(&o, width, pos_tender_name(self->tenders[i].kind),
              pos_money_format(self->tenders[i].amount, a, sizeof(a)));
    if (t->change)
        s_row(&o, width, "Change", pos_money_format(t->change, a, sizeof(a)));
    s_rule(&o, width, '-');
    for (int i = 0; i < t->tax.count; i++) {
        const pos_tax_row_t *r = &t->tax.rows[i];
        snprintf(text, sizeof(text), "Tax %d.%02d%% on %s", r->rate_bp / 100, r->rate_bp % 100,
                 pos_money_format(r->gross, a, sizeof(a)));
        s_row(&o, width, text, pos_money_format(r->tax, b, sizeof(b)));
    }
    if (h->footer[0])
        s_put(&o, "%s\n", h->footer);
    return o.overflow ? -1 : (int)o.used;
}
