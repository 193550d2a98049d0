/*  =========================================================================
    display.c - customer display drivers: 2x20 VFD and LED price display

    Why it looks like this. A customer display never answers: there is no
    status to ask and no acknowledgement to wait for, so the only failure a
    driver can see is its transport failing (a write error, or the other
    end hanging up, seen when reading the nothing it should send). Health
    is therefore ok after every successful write and offline when the
    transport fails; the device layer reopens it and the driver's attach
    puts the display in a known state again: initialised, then showing
    the last frame written (which the lost line may have swallowed).

    Every job rewrites the whole display (both VFD lines, padded to 20
    columns; the LED's label and number), so a job interrupted by a
    disconnect is simply sent again whole after the reconnect: on a
    display, unlike on paper, a repetition cannot be seen. Data is
    validated completely before the first byte goes out: a refused job
    (-1) sends nothing.

    The LED display's label command takes the label number as an ASCII
    digit ('0'..'4'), as the common units document it. Negative amounts
    are refused: the protocol has digits and one '.', no sign, and a '-'
    sent to a unit that lacks it is garbage on the customer's side.
    =========================================================================
*/
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "display.h"

#define S_WRITE_MS     2000 /* a display takes a few dozen bytes at once */
#define S_VFD_LINES    2
#define S_VFD_BRIGHT   4  /* brightness 1..4; 4 is the units' power-on level */
#define S_LED_MAX      16 /* digits option bound */
#define S_LED_UNITS    100
#define S_LED_MAX_TEXT 64

static const uint8_t s_vfd_init[] = {0x1B, 0x40, 0x0C}; /* ESC @, clear */
static const uint8_t s_vfd_clear[] = {0x0C};
static const uint8_t s_led_init[] = {0x1B, 0x40};

static const char *const s_labels[] = {"none", "price", "total", "received", "change"};

/* ---- frames ------------------------------------------------------------------------------- */

/*  The length of the UTF-8 sequence at p (at most n bytes), 1 for a byte that does not start a
    valid one: either way it takes one column on the display. */
static size_t s_utf8_len(const uint8_t *p, size_t n)
{
    size_t want = p[0] >= 0xF0 && p[0] <= 0xF4   ? 4
                  : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
                  : p[0] >= 0xC2 && p[0] <= 0xDF ? 2
                                                 : 1;
    if (want > n)
        return 1;
    for (size_t i = 1; i < want; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 1;
    return want;
}

/*  One display line of exactly DISPLAY_VFD_COLUMNS bytes from the UTF-8 text p..p+n. These
    displays have only their ASCII (and a code page of accents) in ROM, no CJK font, so every
    character outside printable ASCII is shown as '?', one column each; the rest of a line
    longer than the display is cut, never wrapped into the other line. */
static void s_vfd_line(const uint8_t *p, size_t n, uint8_t *out)
{
    size_t col = 0;
    for (size_t i = 0; i < n && col < DISPLAY_VFD_COLUMNS;) {
        size_t k = s_utf8_len(p + i, n - i);
        out[col++] = k == 1 && p[i] >= 0x20 && p[i] < 0x7F ? p[i] : '?';
        i += k;
    }
    memset(out + col, ' ', DISPLAY_VFD_COLUMNS - col);
}

int display_vfd_frame(const char *text, size_t len, bus_buf_t *out, char *why, size_t size)
{
    const uint8_t *p = (const uint8_t *)text;
    if (len && p[len - 1] == '\n')
        len--;
    const uint8_t *line[S_VFD_LINES] = {p, p + len};
    size_t n[S_VFD_LINES] = {len, 0};
    const uint8_t *nl = len ? memchr(p, '\n', len) : NULL;
    if (nl) {
        n[0] = (size_t)(nl - p);
        line[1] = nl + 1;
        n[1] = len - n[0] - 1;
        if (memchr(line[1], '\n', n[1])) {
            snprintf(why, size, "a 2-line display: more than two lines");
            return -1;
        }
    }
    /* overwrite mode, then each line from its first column: the cursor is placed for each line
       rather than trusted to wrap, whatever mode the display was left in */
    uint8_t frame[3 + S_VFD_LINES * (4 + DISPLAY_VFD_COLUMNS)] = {0x1F, 0x01};
    size_t at = 2;
    for (int i = 0; i < S_VFD_LINES; i++) {
        if (n[i] && line[i][n[i] - 1] == '\r')
            n[i]--;
        uint8_t cursor[4] = {0x1F, 0x24, 1, (uint8_t)(i + 1)};
        memcpy(frame + at, cursor, sizeof(cursor));
        at += sizeof(cursor);
        s_vfd_line(line[i], n[i], frame + at);
        at += DISPLAY_VFD_COLUMNS;
    }
    if (bus_buf_append(out, frame, at) != 0) {
        snprintf(why, size, "out of memory");
        return -1;
    }
    return 0;
}

/*  Yuan with exactly two decimals ("55.90") to fen; -1 for anything else. */
static int64_t s_amount(const char *s, size_t n)
{
    if (n < 4 || n > 18 || s[n - 3] != '.')
        return -1;
    int64_t fen = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == n - 3)
            continue;
        if (s[i] < '0' || s[i] > '9')
            return -1;
        fen = fen * 10 + (s[i] - '0');
    }
    return fen;
}

/*  The label (ESC s, the label's number as an ASCII digit), then the number (ESC Q A digits
    CR): the label first, so that a new amount never shows under the old amount's label. */
static int s_led_bytes(int label, const char *number, bus_buf_t *out)
{
    uint8_t frame[3 + 3 + S_LED_MAX_TEXT + 1] = {0x1B, 0x73, (uint8_t)('0' + label),
                                                 0x1B, 0x51, 0x41};
    size_t n = strlen(number), at = 6;
    memcpy(frame + at, number, n);
    at += n;
    frame[at++] = 0x0D;
    return bus_buf_append(out, frame, at);
}

int display_led_frame(const char *text, size_t len, int digits, bus_buf_t *out, char *why,
                      size_t size)
{
    char buf[S_LED_MAX_TEXT + 1];
    if (len > S_LED_MAX_TEXT || memchr(text, '\0', len)) {
        snprintf(why, size, "not \"LABEL AMOUNT\"");
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *amount = strchr(buf, ' ');
    if (!amount) {
        snprintf(why, size, "not \"LABEL AMOUNT\"");
        return -1;
    }
    *amount++ = '\0';
    int label = -1;
    for (int i = 0; i < (int)(sizeof(s_labels) / sizeof(s_labels[0])); i++)
        if (strcmp(buf, s_labels[i]) == 0)
            label = i;
    if (label < 0) {
        snprintf(why, size, "label: price, total, received, change or none");
        return -1;
    }
    if (amount[0] == '-') {
        snprintf(why, size, "a negative amount: the display has no minus sign");
        return -1;
    }
    int64_t fen = s_amount(amount, strlen(amount));
    if (fen < 0) {
        snprintf(why, size, "amount: yuan with two decimals (55.90)");
        return -1;
    }
    char number[32];
    int len_number = snprintf(number, sizeof(number), "%lld.%02lld", (long long)(fen / S_LED_UNITS),
                              (long long)(fen % S_LED_UNITS));
    if (len_number - 1 > digits) {
        snprintf(why, size, "amount: more than %d digits", digits);
        return -1;
    }
    if (s_led_bytes(label, number, out) != 0) {
        snprintf(why, size, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- the drivers --------------------------------------------------------------------------- */

typedef struct {
    bool led;
    int brightness; /* vfd: 1..4 */
    int digits;     /* led */
    bus_buf_t frame;
    bus_buf_t shown; /* the last frame written: what the display shows */
} s_display_t;

/*  options: "brightness=N" (VFD, 1..4) or "digits=N" (LED, 1..16), or "". */
static void *s_create(bool led, const char *options, char *why, size_t size)
{
    s_display_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->led = led;
    self->brightness = S_VFD_BRIGHT;
    self->digits = DISPLAY_LED_DIGITS;
    int v = 0;
    char extra;
    if (!options[0]) {
        /* defaults */
    } else if (!led && sscanf(options, "brightness=%d%c", &v, &extra) == 1 && v >= 1 &&
               v <= S_VFD_BRIGHT) {
        self->brightness = v;
    } else if (led && sscanf(options, "digits=%d%c", &v, &extra) == 1 && v >= 1 && v <= S_LED_MAX) {
        self->digits = v;
    } else {
        snprintf(why, size, "options: %s", led ? "digits=1..16" : "brightness=1..4");
        free(self);
        return NULL;
    }
    return self;
}

static void *s_vfd_create(const char *options, char *why, size_t size)
{
    return s_create(false, options, why, size);
}

static void *s_led_create(const char *options, char *why, size_t size)
{
    return s_create(true, options, why, size);
}

static void s_destroy(void *state)
{
    s_display_t *self = state;
    bus_buf_free(&self->frame);
    bus_buf_free(&self->shown);
    free(self);
}

/*  Write frame to the display; health follows. 0, or -1 (offline; the device layer reopens the
    transport, a write timeout leaves it open and the job is tried again). */
static int s_send(node_device_t *dev, const uint8_t *frame, size_t len)
{
    node_transport_t *t = node_device_transport(dev);
    char why[NODE_DEVICE_DETAIL_MAX];
    if (node_transport_write(t, frame, len, S_WRITE_MS, why, sizeof(why)) != 0) {
        node_device_set_health(dev, NODE_HEALTH_OFFLINE, why);
        return -1;
    }
    node_device_set_health(dev, NODE_HEALTH_OK, "");
    return 0;
}

/*  A display sends nothing, so anything readable is noise (thrown away) or the end of the
    connection (the transport closes itself). True while the transport is open. */
static bool s_still_there(node_device_t *dev)
{
    node_transport_t *t = node_device_transport(dev);
    node_transport_drain(t);
    if (node_transport_is_open(t))
        return true;
    node_device_set_health(dev, NODE_HEALTH_OFFLINE, "the display went away");
    return false;
}

/*  Init, then (after a reconnect) the last frame again: a line lost after a job's bytes were
    written took them with it, unseen by the driver (a display never acknowledges), and a
    display that restarted is blank; either way it shows again what the till last showed. */
static int s_attach(void *state, node_device_t *dev)
{
    s_display_t *self = state;
    int rc;
    if (self->led) {
        rc = s_send(dev, s_led_init, sizeof(s_led_init));
    } else {
        uint8_t init[sizeof(s_vfd_init) + 3];
        memcpy(init, s_vfd_init, sizeof(s_vfd_init));
        init[sizeof(s_vfd_init)] = 0x1F;
        init[sizeof(s_vfd_init) + 1] = 0x58;
        init[sizeof(s_vfd_init) + 2] = (uint8_t)self->brightness;
        rc = s_send(dev, init, sizeof(init));
    }
    if (rc == 0 && self->shown.len > 0)
        rc = s_send(dev, self->shown.data, self->shown.len);
    return rc;
}

static int s_run(void *state, node_device_t *dev, const node_job_t *job)
{
    s_display_t *self = state;
    char why[NODE_DEVICE_DETAIL_MAX] = "out of memory";
    bus_buf_reset(&self->frame);
    int rc = 0;
    if (strcmp(job->verb, "clear") == 0) {
        if (self->led)
            rc = s_led_bytes(0, "0", &self->frame);
        else
            rc = bus_buf_append(&self->frame, s_vfd_clear, sizeof(s_vfd_clear));
    } else if (strcmp(job->verb, "show") == 0) {
        rc = self->led ? display_led_frame((const char *)job->data, job->len, self->digits,
                                           &self->frame, why, sizeof(why))
                       : display_vfd_frame((const char *)job->data, job->len, &self->frame, why,
                                           sizeof(why));
    } else {
        snprintf(why, sizeof(why), "verb: show or clear");
        rc = -1;
    }
    if (rc != 0) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "key", job->key);
        bus_val_map_set_str(body, "why", why);
        node_device_event(dev, "refused", &body);
        return -1;
    }
    if (!s_still_there(dev))
        return 0;
    if (s_send(dev, self->frame.data, self->frame.len) != 0)
        return 0;
    bus_buf_reset(&self->shown);
    if (bus_buf_append(&self->shown, self->frame.data, self->frame.len) != 0)
        bus_buf_reset(&self->shown); /* out of memory: a reconnect leaves it blank */
    return 1;
}

static void s_idle(void *state, node_device_t *dev)
{
    (void)state;
    s_still_there(dev);
}

const node_driver_t vfd_driver = {
    .name = "vfd",
    .kind = "display",
    .create = s_vfd_create,
    .destroy = s_destroy,
    .attach = s_attach,
    .run = s_run,
    .idle = s_idle,
};

const node_driver_t led_price_driver = {
    .name = "led_price",
    .kind = "display",
    .create = s_led_create,
    .destroy = s_destroy,
    .attach = s_attach,
    .run = s_run,
    .idle = s_idle,
};
