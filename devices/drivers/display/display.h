/*  =========================================================================
    display.h - customer displays: an Epson-style 2x20 VFD and the common
    Chinese LED price display

    vfd_driver ("vfd", kind "display") drives a two-line, 20-column
    vacuum fluorescent pole display (Epson DM-D command set): verb "show"
    with the two lines as UTF-8 text separated by '\n', verb "clear".
    led_price_driver ("led_price", kind "display") drives the 8-digit LED
    price display with the labels 单价 / 总计 / 收款 / 找零: verb "show" with
    "LABEL AMOUNT" ("total 55.90"), verb "clear".

    Neither display ever answers: health is ok once the bytes are written
    and offline only when the transport fails. Both are updated by
    rewriting the whole display, so a job retried after a reconnect is
    harmless. The frame builders are public so that the exact bytes can be
    checked without a device.
    =========================================================================
*/
#ifndef DISPLAY_H_INCLUDED
#define DISPLAY_H_INCLUDED

#include <stddef.h>

#include <bus/val.h>
#include <node/device.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DISPLAY_VFD_COLUMNS 20
#define DISPLAY_LED_DIGITS  8 /* the usual seven-segment display; option digits=N */

/*  Append the bytes that show text (UTF-8, at most two lines separated by '\n'; one trailing
    '\n' and a '\r' before a '\n' are ignored) on a 2x20 VFD: each line padded or cut to 20
    columns, characters outside printable ASCII as '?'. 0, or -1 with why (three lines). */
int display_vfd_frame(const char *text, size_t len, bus_buf_t *out, char *why, size_t size);

/*  Append the bytes that show "LABEL AMOUNT" (LABEL price|total|received|change|none, AMOUNT
    yuan with exactly two decimals, 0 or more, at most digits digits) on an LED price display.
    0, or -1 with why; nothing is appended on an error. */
int display_led_frame(const char *text, size_t len, int digits, bus_buf_t *out, char *why,
                      size_t size);

extern const node_driver_t vfd_driver, led_price_driver;

#ifdef __cplusplus
}
#endif
#endif
