/*  =========================================================================
    escpos.h - ESC/POS receipt printers: the receipt's bytes and the driver

    escpos_receipt lays out a completed sale (the sale document posnode
    journals) for a 58 mm (32 columns) or 80 mm (48 columns) printer:
    header, every line with quantity, price, promotion and discount,
    totals, tax per rate, tenders, change, the sale id and a QR code of
    the sale id and its journal record's hash, footer, feed and a partial
    cut. Chinese text goes out in GB18030 inside Chinese character mode
    (FS &); widths count a CJK character as two columns.

    escpos_printer_driver is the node_driver_t (node/device.h) of such a
    printer on a serial line or TCP port 9100: it checks real-time status
    (DLE EOT) between jobs, does not start one while the paper is out or
    the cover open (status events, health error), and calls a job done
    when the printer is ready after its last byte (a printer out of paper
    mid-receipt prints the rest once paper is loaded), so a receipt is
    never printed twice; a connection lost in the middle of a job ends the
    piece on the paper as interrupted and prints the job again marked as a
    reprint (event "interrupted"; printer.c); verb "print" prints the job's
    bytes, "drawer" pulses the cash drawer (DLE DC4), health reports paper
    near end.
    =========================================================================
*/
#ifndef ESCPOS_H_INCLUDED
#define ESCPOS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include <bus/val.h>
#include <node/device.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int width_mm;              /* 58 or 80 */
    const char *const *header; /* receipt header lines (the first one large) */
    int nheader;
    const char *const *footer;
    int nfooter;
    const char *tax_id;  /* "" for none */
    const char *cashier; /* display name */
    const char *qr;      /* the QR code's text; NULL for none */
    bool reprint;        /* a copy: marked so at the top, never taken for the original */
} escpos_layout_t;

/*  Append the receipt of sale (a sale document) to out. 0, or -1 with why. */
int escpos_receipt(const bus_val_t *sale, const escpos_layout_t *layout, bus_buf_t *out, char *why,
                   size_t size);

/*  A plain text document (lines separated by '\n', UTF-8) for a width_mm printer, with a cut. */
int escpos_document(const char *text, int width_mm, bus_buf_t *out);

/*  The drawer pulse, real time (DLE DC4 1 0 2: pin 2, 200 ms), taken even by a printer that is
    offline or out of paper. */
int escpos_drawer(bus_buf_t *out);

extern const node_driver_t escpos_printer_driver;

#ifdef __cplusplus
}
#endif
#endif
