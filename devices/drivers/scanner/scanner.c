/*  =========================================================================
    scanner.c - the serial / TCP barcode scanner driver (node/device.h)

    Why it looks like this. A scanner talks only when a code is scanned,
    so the driver has no jobs: the device layer calls input when bytes
    arrive and the driver cuts them into codes. Reads do not follow codes:
    one read may hold many codes (a scanner with a buffer, a batch
    upload) or part of one (USB-CDC packets, a slow RS-232 line), so the
    line in progress is kept between reads, terminators too (under
    suffix=crlf a CR at the end of one read waits for its LF). Under
    suffix=any a CR ends the code at once, without waiting for an LF that
    may never come, and an LF right after it is swallowed, so CR LF is one
    terminator.

    Bytes on a serial line can be garbage (a wrong baud rate, noise when
    a cable is plugged in). A line that is not a code is never guessed
    at: one longer than DRV_SCANNER_CODE_MAX or with a byte that is not
    printable ASCII is dropped whole up to the next terminator (nothing
    of it is kept beyond the limit, so no input makes it grow or block),
    counted and published as "bad_read"; the next line starts clean. A
    line cut by a disconnect is dropped the same way when the transport
    opens again, never joined with what the new connection sends.

    The check digit is checked here (libpos) but a wrong one is published,
    valid false, not dropped: the cashier must hear that the scan was
    refused and scan again or key the code in.
    =========================================================================
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pos/barcode.h>

#include "scanner.h"

#define S_READ_MAX 512 /* bytes taken from the transport per input call */

typedef enum { S_SUFFIX_ANY, S_SUFFIX_CR, S_SUFFIX_LF, S_SUFFIX_CRLF } s_suffix_t;

static const char *const s_suffix_names[] = {"any", "cr", "lf", "crlf"};

typedef struct {
    s_suffix_t suffix;
    char code[DRV_SCANNER_CODE_MAX + 1]; /* the line in progress, while it may be a code */
    size_t len;                          /* bytes in code */
    size_t seen;                         /* bytes of the line in progress, kept or not */
    const char *bad;                     /* why the line is not a code; NULL while it may be */
    bool after_cr;                       /* the last byte was a CR */
    uint64_t bad_reads;
} s_scanner_t;

/*  Options "suffix=any|cr|lf|crlf", separated by commas or blanks. */
static void *s_create(const char *options, char *why, size_t size)
{
    s_scanner_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    char text[256];
    snprintf(text, sizeof(text), "%s", options ? options : "");
    char *save = NULL;
    for (char *opt = strtok_r(text, ", \t", &save); opt; opt = strtok_r(NULL, ", \t", &save)) {
        bool known = false;
        if (strncmp(opt, "suffix=", 7) == 0) {
            for (int i = 0; i < 4 && !known; i++)
                if (strcmp(opt + 7, s_suffix_names[i]) == 0) {
                    self->suffix = (s_suffix_t)i;
                    known = true;
                }
        }
        if (!known) {
            snprintf(why, size, "option %.60s: the options are suffix=any|cr|lf|crlf", opt);
            free(self);
            return NULL;
        }
    }
    return self;
}

static void s_destroy(void *state)
{
    free(state);
}

/*  The symbology a code's digits say, and whether its check digit is right (true where there
    is none to check). */
static const char *s_symbology(const char *code, size_t len, bool *valid)
{
    *valid = true;
    if (strspn(code, "0123456789") != len)
        return "other";
    if (len == POS_EAN13_LEN) {
        *valid = pos_ean13_check(code) == POS_OK;
        return "ean13";
    }
    if (len == POS_EAN8_LEN) {
        *valid = pos_ean8_check(code) == POS_OK;
        return "ean8";
    }
    if (len == POS_UPCA_LEN) {
        *valid = pos_upca_check(code) == POS_OK;
        return "upca";
    }
    return "other";
}

static void s_bad_read(s_scanner_t *self, node_device_t *dev, const char *reason)
{
    self->bad_reads++;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "reason", reason);
    bus_val_map_set_int(body, "length", (int64_t)self->seen);
    bus_val_map_set_int(body, "bad_reads", (int64_t)self->bad_reads);
    node_device_event(dev, "bad_read", &body);
}

static void s_reset(s_scanner_t *self)
{
    self->len = 0;
    self->seen = 0;
    self->bad = NULL;
}

/*  A terminator: publish the line as a code, or as a bad read; an empty line is nothing. */
static void s_end(s_scanner_t *self, node_device_t *dev)
{
    if (self->bad) {
        s_bad_read(self, dev, self->bad);
    } else if (self->len > 0) {
        self->code[self->len] = '\0';
        bool valid;
        const char *symbology = s_symbology(self->code, self->len, &valid);
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "code", self->code);
        bus_val_map_set_str(body, "symbology", symbology);
        bus_val_map_set_bool(body, "valid", valid);
        node_device_event(dev, "scan", &body);
    }
    s_reset(self);
}

static void s_spoil(s_scanner_t *self, const char *reason)
{
    if (!self->bad)
        self->bad = reason;
}

static void s_byte(s_scanner_t *self, node_device_t *dev, uint8_t b)
{
    bool after_cr = self->after_cr;
    bool cr_ends = self->suffix == S_SUFFIX_ANY || self->suffix == S_SUFFIX_CR;
    self->after_cr = b == '\r';
    if (after_cr && !cr_ends && b != '\n') {
        self->seen++; /* the CR waiting for its LF was a byte of the line */
        s_spoil(self, "not_printable");
    }
    if (b == '\r') {
        if (cr_ends)
            s_end(self, dev);
        return; /* else it waits for the next byte */
    }
    if (b == '\n') {
        if (after_cr && cr_ends)
            return; /* the LF of a CR LF whose CR ended the code */
        if (self->suffix == S_SUFFIX_CR || (self->suffix == S_SUFFIX_CRLF && !after_cr)) {
            self->seen++;
            s_spoil(self, "not_printable");
            return;
        }
        s_end(self, dev);
        return;
    }
    self->seen++;
    if (b < 0x20 || b > 0x7E)
        s_spoil(self, "not_printable");
    else if (self->len == DRV_SCANNER_CODE_MAX)
        s_spoil(self, "too_long");
    else if (!self->bad)
        self->code[self->len++] = (char)b;
}

/*  A new connection: what was left of the old one's line is dropped. */
static int s_attach(void *state, node_device_t *dev)
{
    s_scanner_t *self = state;
    if (self->seen > 0 || self->after_cr) {
        s_spoil(self, "cut_off");
        s_bad_read(self, dev, self->bad);
    }
    s_reset(self);
    self->after_cr = false;
    node_device_set_health(dev, NODE_HEALTH_OK, "");
    return 0;
}

static int s_run(void *state, node_device_t *dev, const node_job_t *job)
{
    (void)state;
    (void)dev;
    (void)job;
    return -1; /* a scanner takes no jobs */
}

static void s_idle(void *state, node_device_t *dev)
{
    (void)state;
    (void)dev; /* a scanner only speaks when scanned; a broken line shows in input */
}

static int s_input(void *state, node_device_t *dev)
{
    s_scanner_t *self = state;
    uint8_t buf[S_READ_MAX];
    char why[NODE_DEVICE_DETAIL_MAX + 1];
    ssize_t n =
        node_transport_read(node_device_transport(dev), buf, sizeof(buf), 0, why, sizeof(why));
    if (n < 0) {
        node_device_set_health(dev, NODE_HEALTH_OFFLINE, why);
        return -1;
    }
    for (ssize_t i = 0; i < n; i++)
        s_byte(self, dev, buf[i]);
    return 0;
}

const node_driver_t serial_scanner_driver = {
    .name = "scanner",
    .kind = "scanner",
    .create = s_create,
    .destroy = s_destroy,
    .attach = s_attach,
    .run = s_run,
    .idle = s_idle,
    .input = s_input,
};
