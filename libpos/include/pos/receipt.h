/*  =========================================================================
    pos/receipt.h - the receipt of a finished ticket

    A snapshot of everything a receipt shows (header, lines with discounts,
    tax summary, totals, tenders, change, sale id), independent of the
    ticket it came from, so the register can print it, reprint it from the
    journal, or send it to a customer display. pos_receipt_render lays it
    out as monospaced text of a given width (UTF-8; CJK characters count as
    two columns), which is what ESC/POS printers are fed line by line.
    =========================================================================
*/
#ifndef POS_RECEIPT_H_INCLUDED
#define POS_RECEIPT_H_INCLUDED

#include "pos/ticket.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char store_name[64];
    char store_address[128];
    char register_id[16];
    char cashier[32];
    char sale_id[POS_SALE_ID_MAX + 1]; /* <store>-<register>-<sequence> */
    char business_day[16];             /* YYYY-MM-DD */
    char time[24];                     /* local time as printed */
    char footer[128];
} pos_receipt_header_t;

typedef struct pos_receipt pos_receipt_t;

/* Snapshot a computed ticket. NULL on allocation failure. */
pos_receipt_t *pos_receipt_new(const pos_receipt_header_t *header, pos_ticket_t *ticket);
void pos_receipt_destroy(pos_receipt_t **self_p);

const pos_receipt_header_t *pos_receipt_header(const pos_receipt_t *self);
int pos_receipt_line_count(const pos_receipt_t *self);
const pos_line_t *pos_receipt_line(const pos_receipt_t *self, int index);
const pos_totals_t *pos_receipt_totals(const pos_receipt_t *self);
int pos_receipt_tender_count(const pos_receipt_t *self);
const pos_tender_t *pos_receipt_tender(const pos_receipt_t *self, int index);

/* Render as text lines of at most width columns (24..80) into buf. Returns the length written
   (NUL-terminated), or -1 if buf is too small or width out of range. */
int pos_receipt_render(const pos_receipt_t *self, int width, char *buf, size_t size);

/* Display columns of a UTF-8 string (CJK and other wide characters count 2). */
int pos_text_width(const char *utf8);

#ifdef __cplusplus
}
#endif
#endif
