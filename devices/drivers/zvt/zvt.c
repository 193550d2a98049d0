/*  =========================================================================
    zvt.c - the ZVT card terminal driver (node/device.h)

    Why it looks like this. Money moves here, so the one rule above all
    others is that an authorization is sent to the terminal at most once
    per job key, whatever the line does. A frame the terminal never
    acknowledged (ACK 06) may be sent again: the terminal did not take it.
    Once it is acknowledged, the driver never sends it again; if the answer
    then does not come within T4 the outcome is unknown, published as such,
    and the key stays unresolved until the terminal's repeat receipt (06 20,
    the last transaction's 04 0F again) tells whether it was booked. Every
    path that could send a new command (the next job, the next attach, the
    same key submitted again) resolves first, because the terminal only
    remembers its last transaction.

    Two layers. The link layer moves one APDU: on a serial line inside a
    DLE frame (10 02 ... 10 03 CRC-lo CRC-hi, DLE doubled, CRC-16/KERMIT
    over the unstuffed APDU and the 03), acknowledged with 06 or refused
    with 15 (resent, at most twice); over TCP the bare APDU. Bytes are
    assembled by a state machine that survives short read timeouts, so the
    long wait of a dialogue can check every half second whether the device
    is being stopped without losing half a frame. The dialogue layer sends
    a command, takes the terminal's 80 00 00, then answers each of the
    terminal's messages (04 FF, 04 0F, 06 D1/D3, 06 0F, 06 1E) with
    80 00 00 until the completion or the abort.
    =========================================================================
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bus/msg.h>
#include "zvt.h"

#define S_DLE 0x10
#define S_STX 0x02
#define S_ETX 0x03
#define S_ACK 0x06
#define S_NAK 0x15

#define S_APDU_MAX    2048   /* longest APDU taken; a longer one is noise */
#define S_RETRIES     2      /* resends of a frame after a NAK or a missing ACK */
#define S_UNSENT_TRIES 3     /* reopens for a command the line took away before it left */
#define S_T3_MS       5000   /* an ACK or the terminal's 80 00 00 */
#define S_T4_MS       180000 /* a whole dialogue */
#define S_WRITE_MS    1000   /* a frame must be taken by the line within this */
#define S_SLICE_MS    500    /* a long wait looks at node_device_stopping this often */
#define S_BAD_MAX     10     /* bad frames in one wait before the line is taken for broken */
#define S_LINES_MAX   64     /* receipt lines kept from one dialogue */
#define S_RESOLVED    64     /* approved keys resolved late, remembered (a ring) */
#define S_AMOUNT_MAX  999999999999LL /* 12 BCD digits */
#define S_RECEIPT_MAX 9999           /* 4 BCD digits */

typedef enum {
    S_UNIT_GONE = -2, /* the transport failed (closed) */
    S_UNIT_NONE = -1, /* nothing complete in time */
    S_UNIT_ACK = 0,
    S_UNIT_NAK,
    S_UNIT_FRAME, /* an APDU with a good CRC (TCP: any APDU) */
    S_UNIT_BAD,   /* a frame with a wrong CRC */
} s_unit_t;

typedef enum {
    S_DLG_DONE = 0, /* 06 0F */
    S_DLG_ABORTED,  /* 06 1E, or 84 xx 00 refusing the command */
    S_DLG_NOT_SENT, /* the terminal never took the command */
    S_DLG_UNKNOWN,  /* taken, then no final answer */
} s_dlg_t;

typedef struct {
    int result_code;                /* -1 none */
    int64_t amount, trace, receipt; /* -1 none */
    int abort_code;                 /* 06 1E or 84 xx: -1 none */
    bus_val_t *lines;
} s_outcome_t;

typedef struct {
    char key[NODE_DEVICE_KEY_MAX + 1];
    int64_t amount, trace, receipt;
} s_resolved_t;

typedef struct {
    int t3_ms, t4_ms;
    uint8_t password[3];
    bool registers;
    bool tcp;
    /* the receiver */
    uint8_t rbuf[512];
    size_t rpos, rlen;
    int rstate;
    uint8_t frame[S_APDU_MAX + 8];
    size_t flen, fneed;
    bool fdone; /* TCP: frame holds a whole APDU, the next byte starts another */
    bool held;  /* frame holds an APDU that came instead of the ACK, not yet taken */
    uint8_t crc[2];
    /* the authorization whose answer was lost */
    bool pending;
    char pending_key[NODE_DEVICE_KEY_MAX + 1];
    int64_t pending_amount, pending_trace_before;
    int64_t last_trace; /* the last trace number seen, -1 none */
    s_resolved_t resolved[S_RESOLVED];
    int next_resolved;
    uint64_t naks_sent, naks_received, resends, bad_frames;
    int unsent_tries; /* times the job unsent_key found the line gone before it was sent */
    char unsent_key[NODE_DEVICE_KEY_MAX + 1];
} s_zvt_t;

/*  CRC-16/KERMIT (reflected 0x8408, initial 0, no final xor) of len bytes, continuing crc. */
static uint16_t s_crc(uint16_t crc, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int b = 0; b < 8; b++)
            crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0x8408) : (uint16_t)(crc >> 1);
    }
    return crc;
}

static uint16_t s_frame_crc(const uint8_t *apdu, size_t len)
{
    const uint8_t etx = S_ETX;
    return s_crc(s_crc(0, apdu, len), &etx, 1);
}

static void s_bcd(int64_t value, uint8_t *out, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        int lo = (int)(value % 10);
        value /= 10;
        int hi = (int)(value % 10);
        value /= 10;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
}

/*  A BCD number, -1 when a nibble is not a digit. */
static int64_t s_unbcd(const uint8_t *in, int bytes)
{
    int64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        int hi = in[i] >> 4, lo = in[i] & 0x0F;
        if (hi > 9 || lo > 9)
            return -1;
        v = v * 100 + hi * 10 + lo;
    }
    return v;
}

static int s_password(s_zvt_t *self, const char *item, size_t len, char *why, size_t size)
{
    if (len != 9 + 6)
        goto out_bad;
    int64_t v = 0;
    for (size_t i = 9; i < len; i++) {
        if (item[i] < '0' || item[i] > '9')
            goto out_bad;
        v = v * 10 + (item[i] - '0');
    }
    s_bcd(v, self->password, 3);
    self->registers = true;
    return 0;
out_bad:
    snprintf(why, size, "option password: six digits");
    return -1;
}

static void *s_create(const char *options, char *why, size_t size)
{
    s_zvt_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->t3_ms = S_T3_MS;
    self->t4_ms = S_T4_MS;
    self->last_trace = -1;
    const char *p = options ? options : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        int rc = 0;
        if (len > 6 && !strncmp(p, "t3_ms=", 6))
            rc = node_device_option_int(p, len, "t3_ms", 100, 60000, &self->t3_ms, why, size);
        else if (len > 6 && !strncmp(p, "t4_ms=", 6))
            rc = node_device_option_int(p, len, "t4_ms", 500, 600000, &self->t4_ms, why, size);
        else if (len >= 9 && !strncmp(p, "password=", 9))
            rc = s_password(self, p, len, why, size);
        else if (len > 0) {
            snprintf(why, size, "unknown option \"%.*s\" (password=NNNNNN, t3_ms=N, t4_ms=N)",
                     (int)len, p);
            rc = -1;
        }
        if (rc != 0) {
            free(self);
            return NULL;
        }
        p += len + (p[len] == ',');
    }
    return self;
}

static void s_destroy(void *state)
{
    free(state);
}

/* ---- the link layer ------------------------------------------------------------------ */

enum { S_RX_IDLE, S_RX_DLE, S_RX_DATA, S_RX_DATA_DLE, S_RX_CRC1, S_RX_CRC2 };

static void s_rx_reset(s_zvt_t *self)
{
    self->rpos = self->rlen = 0;
    self->rstate = S_RX_IDLE;
    self->flen = self->fneed = 0;
    self->fdone = false;
    self->held = false;
}

/*  Take one serial byte; a completed unit, or S_UNIT_NONE. */
static s_unit_t s_feed_serial(s_zvt_t *self, uint8_t b)
{
    switch (self->rstate) {
    case S_RX_IDLE:
        if (b == S_ACK)
            return S_UNIT_ACK;
        if (b == S_NAK)
            return S_UNIT_NAK;
        if (b == S_DLE)
            self->rstate = S_RX_DLE;
        return S_UNIT_NONE; /* anything else between frames is noise */
    case S_RX_DLE:
        self->rstate = b == S_STX ? S_RX_DATA : b == S_DLE ? S_RX_DLE : S_RX_IDLE;
        self->flen = 0;
        return S_UNIT_NONE;
    case S_RX_DATA:
        if (b == S_DLE)
            self->rstate = S_RX_DATA_DLE;
        else if (self->flen < S_APDU_MAX)
            self->frame[self->flen++] = b;
        else
            self->rstate = S_RX_IDLE; /* too long: noise */
        return S_UNIT_NONE;
    case S_RX_DATA_DLE:
        if (b == S_DLE && self->flen < S_APDU_MAX) {
            self->frame[self->flen++] = b;
            self->rstate = S_RX_DATA;
        } else if (b == S_ETX) {
            self->rstate = S_RX_CRC1;
        } else if (b == S_STX) {
            self->flen = 0; /* a frame cut short by the next one */
            self->rstate = S_RX_DATA;
        } else {
            self->rstate = S_RX_IDLE;
        }
        return S_UNIT_NONE;
    case S_RX_CRC1:
        self->crc[0] = b;
        self->rstate = S_RX_CRC2;
        return S_UNIT_NONE;
    default:
        self->crc[1] = b;
        self->rstate = S_RX_IDLE;
        uint16_t crc = s_frame_crc(self->frame, self->flen);
        if (self->flen >= 3 && self->crc[0] == (crc & 0xFF) && self->crc[1] == (crc >> 8))
            return S_UNIT_FRAME;
        return S_UNIT_BAD;
    }
}

/*  Take one TCP byte: the APDU's header tells its length. */
static s_unit_t s_feed_tcp(s_zvt_t *self, uint8_t b)
{
    if (self->fdone) {
        self->flen = 0; /* the previous APDU was taken */
        self->fdone = false;
    }
    self->frame[self->flen++] = b;
    if (self->flen == 3 && b != 0xFF)
        self->fneed = 3 + (size_t)b;
    else if (self->flen == 5 && self->frame[2] == 0xFF)
        self->fneed = 5 + (size_t)(self->frame[3] | self->frame[4] << 8);
    if (self->fneed > S_APDU_MAX) {
        self->flen = self->fneed = 0;
        return S_UNIT_GONE; /* no way to find the next APDU in a byte stream: reconnect */
    }
    if (self->fneed && self->flen == self->fneed) {
        self->fneed = 0;
        self->fdone = true;
        return S_UNIT_FRAME;
    }
    return S_UNIT_NONE;
}

/*  The next unit (ACK, NAK, frame) until deadline; the APDU stays in self->frame (flen). */
static s_unit_t s_read_unit(s_zvt_t *self, node_device_t *dev, int64_t deadline)
{
    node_transport_t *t = node_device_transport(dev);
    char why[120];
    for (;;) {
        while (self->rpos < self->rlen) {
            uint8_t b = self->rbuf[self->rpos++];
            s_unit_t u = self->tcp ? s_feed_tcp(self, b) : s_feed_serial(self, b);
            if (u == S_UNIT_GONE) {
                node_transport_close(t);
                return u;
            }
            if (u != S_UNIT_NONE)
                return u;
        }
        int64_t left = deadline - bus_mono_ms();
        if (left <= 0)
            return S_UNIT_NONE;
        ssize_t n =
            node_transport_read(t, self->rbuf, sizeof(self->rbuf), (int)left, why, sizeof(why));
        if (n < 0)
            return S_UNIT_GONE;
        self->rpos = 0;
        self->rlen = (size_t)n;
    }
}

static int s_write(node_device_t *dev, const uint8_t *data, size_t len)
{
    char why[120];
    return node_transport_write(node_device_transport(dev), data, len, S_WRITE_MS, why,
                                sizeof(why));
}

/*  Send one APDU. 0 taken (serial: ACKed), -1 not taken after the retries, -2 the line failed. */
static int s_send_apdu(s_zvt_t *self, node_device_t *dev, const uint8_t *apdu, size_t len)
{
    if (self->tcp)
        return s_write(dev, apdu, len) == 0 ? 0 : -2;
    uint8_t frame[2 * S_APDU_MAX + 8];
    size_t n = 0;
    frame[n++] = S_DLE;
    frame[n++] = S_STX;
    for (size_t i = 0; i < len && i < S_APDU_MAX; i++) {
        frame[n++] = apdu[i];
        if (apdu[i] == S_DLE)
            frame[n++] = S_DLE;
    }
    uint16_t crc = s_frame_crc(apdu, len);
    frame[n++] = S_DLE;
    frame[n++] = S_ETX;
    frame[n++] = (uint8_t)(crc & 0xFF);
    frame[n++] = (uint8_t)(crc >> 8);
    for (int attempt = 0; attempt <= S_RETRIES; attempt++) {
        if (attempt)
            self->resends++;
        if (s_write(dev, frame, n) != 0)
            return node_transport_is_open(node_device_transport(dev)) ? -1 : -2;
        int64_t deadline = bus_mono_ms() + self->t3_ms;
        for (;;) {
            s_unit_t u = s_read_unit(self, dev, deadline);
            if (u == S_UNIT_ACK)
                return 0;
            if (u == S_UNIT_GONE)
                return -2;
            if (u == S_UNIT_NAK)
                self->naks_received++;
            if (u == S_UNIT_NAK || u == S_UNIT_NONE)
                break; /* send it again */
            if (u == S_UNIT_FRAME) {
                /* the terminal answers, so it took our frame and only its ACK was lost:
                   sending it again could charge twice; the answer is kept for s_recv_apdu */
                self->held = true;
                return 0;
            }
        }
    }
    return -1;
}

/*  Receive one APDU (acknowledged; a bad CRC is NAKed and waited for again) until deadline,
    looking at node_device_stopping every S_SLICE_MS. S_UNIT_FRAME, S_UNIT_NONE or S_UNIT_GONE. */
static s_unit_t s_recv_apdu(s_zvt_t *self, node_device_t *dev, int64_t deadline)
{
    int bad = 0;
    if (self->held) {
        self->held = false;
        uint8_t ack = S_ACK;
        return s_write(dev, &ack, 1) == 0 ? S_UNIT_FRAME : S_UNIT_GONE;
    }
    for (;;) {
        int64_t now = bus_mono_ms();
        if (now >= deadline || node_device_stopping(dev))
            return S_UNIT_NONE;
        int64_t until = now + S_SLICE_MS < deadline ? now + S_SLICE_MS : deadline;
        s_unit_t u = s_read_unit(self, dev, until);
        if (u == S_UNIT_GONE)
            return u;
        if (u == S_UNIT_FRAME) {
            if (!self->tcp) {
                uint8_t ack = S_ACK;
                if (s_write(dev, &ack, 1) != 0)
                    return S_UNIT_GONE;
            }
            return u;
        }
        if (u == S_UNIT_BAD) {
            self->bad_frames++;
            self->naks_sent++;
            uint8_t nak = S_NAK;
            if (++bad > S_BAD_MAX || s_write(dev, &nak, 1) != 0)
                return S_UNIT_GONE;
        }
    }
}

/* ---- the dialogue -------------------------------------------------------------------- */

static const struct {
    int code;
    const char *text;
} s_status_texts[] = {
    {0x00, "waiting for amount confirmation"},
    {0x01, "please watch PIN pad"},
    {0x02, "please watch PIN pad"},
    {0x03, "not accepted"},
    {0x04, "waiting for the host"},
    {0x07, "card not admitted"},
    {0x08, "card unknown"},
    {0x09, "card expired"},
    {0x0A, "insert card"},
    {0x0B, "please remove card"},
    {0x0C, "card not readable"},
    {0x0D, "processing error"},
    {0x0E, "please wait"},
    {0x17, "please wait"},
};

static const char *s_status_text(int code)
{
    for (size_t i = 0; i < sizeof(s_status_texts) / sizeof(s_status_texts[0]); i++)
        if (s_status_texts[i].code == code)
            return s_status_texts[i].text;
    return "";
}

static const char *s_result_text(int code)
{
    switch (code) {
    case 0x00:
        return "approved";
    case 0x05:
        return "declined";
    case 0x64:
        return "card not readable";
    case 0x6C:
        return "aborted";
    case 0x83:
        return "function not possible";
    case 0xFF:
        return "no transaction";
    default:
        return "refused";
    }
}

/*  The fields of a 04 0F status (BMP tags) we use; tags we do not know end the parse. */
static void s_parse_status(const uint8_t *d, size_t len, s_outcome_t *out)
{
    size_t i = 0;
    while (i < len) {
        uint8_t tag = d[i++];
        size_t fixed = 0;
        switch (tag) {
        case 0x27:
            if (i + 1 <= len)
                out->result_code = d[i];
            fixed = 1;
            break;
        case 0x04:
            if (i + 6 <= len)
                out->amount = s_unbcd(d + i, 6);
            fixed = 6;
            break;
        case 0x0B:
            if (i + 3 <= len)
                out->trace = s_unbcd(d + i, 3);
            fixed = 3;
            break;
        case 0x87:
            if (i + 2 <= len)
                out->receipt = s_unbcd(d + i, 2);
            fixed = 2;
            break;
        case 0x0C:
            fixed = 3;
            break;
        case 0x0D:
        case 0x0E:
        case 0x17:
            fixed = 2;
            break;
        case 0x19:
        case 0x8A:
        case 0x88:
            fixed = 1;
            break;
        case 0x29:
            fixed = 4;
            break;
        case 0x2A:
            fixed = 15;
            break;
        case 0x22:
        case 0x8B: /* LLVAR: F0+tens, F0+units */
            if (i + 2 > len)
                return;
            fixed = 2 + (size_t)((d[i] & 0x0F) * 10 + (d[i + 1] & 0x0F));
            break;
        case 0x3C: /* LLLVAR */
            if (i + 3 > len)
                return;
            fixed = 3 + (size_t)((d[i] & 0x0F) * 100 + (d[i + 1] & 0x0F) * 10 + (d[i + 2] & 0x0F));
            break;
        default:
            return;
        }
        i += fixed;
    }
}

static void s_add_line(s_outcome_t *out, const uint8_t *text, size_t len)
{
    if (bus_val_size(out->lines) >= S_LINES_MAX)
        return;
    char line[256];
    size_t n = 0;
    for (size_t i = 0; i < len && n < sizeof(line) - 1; i++)
        line[n++] = text[i] >= 0x20 && text[i] < 0x7F ? (char)text[i] : '?';
    line[n] = '\0';
    bus_val_t *v = bus_val_new_str(line);
    bus_val_arr_push(out->lines, &v);
}

/*  The data of the APDU in self->frame, and its length. */
static const uint8_t *s_data(s_zvt_t *self, size_t *len)
{
    if (self->flen >= 5 && self->frame[2] == 0xFF) {
        *len = self->flen - 5;
        return self->frame + 5;
    }
    *len = self->flen - 3;
    return self->frame + 3;
}

static int s_answer(s_zvt_t *self, node_device_t *dev)
{
    static const uint8_t ok[] = {0x80, 0x00, 0x00};
    return s_send_apdu(self, dev, ok, sizeof(ok));
}

/*  Send the command apdu and follow the terminal's messages to the end. */
static s_dlg_t s_dialogue(s_zvt_t *self, node_device_t *dev, const uint8_t *apdu, size_t len,
                          s_outcome_t *out)
{
    memset(out, 0, sizeof(*out));
    out->result_code = out->abort_code = -1;
    out->amount = out->trace = out->receipt = -1;
    out->lines = bus_val_new_arr();
    node_transport_drain(node_device_transport(dev));
    s_rx_reset(self);
    if (s_send_apdu(self, dev, apdu, len) != 0)
        return S_DLG_NOT_SENT;
    int64_t end = bus_mono_ms() + self->t4_ms;
    int64_t t3 = bus_mono_ms() + self->t3_ms;
    if (s_recv_apdu(self, dev, t3 < end ? t3 : end) != S_UNIT_FRAME)
        return S_DLG_UNKNOWN;
    if (self->frame[0] == 0x84) {
        out->abort_code = self->frame[1];
        return S_DLG_ABORTED;
    }
    if (self->frame[0] != 0x80)
        return S_DLG_UNKNOWN;
    for (;;) {
        if (s_recv_apdu(self, dev, end) != S_UNIT_FRAME)
            return S_DLG_UNKNOWN;
        uint8_t cls = self->frame[0], ins = self->frame[1];
        size_t dlen;
        const uint8_t *d = s_data(self, &dlen);
        if (cls == 0x04 && ins == 0xFF && dlen >= 1) {
            bus_val_t *body = bus_val_new_map();
            bus_val_map_set_int(body, "code", d[0]);
            bus_val_map_set_str(body, "text", s_status_text(d[0]));
            node_device_event(dev, "intermediate", &body);
        } else if (cls == 0x04 && ins == 0x0F) {
            s_parse_status(d, dlen, out);
        } else if (cls == 0x06 && ins == 0xD1 && dlen >= 1) {
            s_add_line(out, d + 1, dlen - 1); /* an attribute byte, then the text */
        } else if (cls == 0x06 && ins == 0xD3) {
            size_t from = 0;
            for (size_t i = 0; i <= dlen; i++)
                if (i == dlen || d[i] == '\n') {
                    if (i > from)
                        s_add_line(out, d + from, i - from);
                    from = i + 1;
                }
        }
        bool final = cls == 0x06 && (ins == 0x0F || ins == 0x1E);
        if (final && ins == 0x1E)
            out->abort_code = dlen >= 1 ? d[0] : 0xFF;
        if (s_answer(self, dev) != 0 && !final)
            return S_DLG_UNKNOWN;
        if (final)
            return ins == 0x0F ? S_DLG_DONE : S_DLG_ABORTED;
    }
}

static void s_publish(node_device_t *dev, const char *verb, const char *key, bool ok,
                      const s_outcome_t *out, const char *text, bool unknown, bool resolved)
{
    if (out && bus_val_size(out->lines) > 0) {
        bus_val_t *body = bus_val_new_map();
        bus_val_t *lines = bus_val_dup(out->lines);
        bus_val_map_set(body, "lines", &lines);
        node_device_event(dev, "print", &body);
    }
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "verb", verb);
    bus_val_map_set_str(body, "key", key);
    bus_val_map_set_bool(body, "ok", ok);
    if (out && out->amount >= 0)
        bus_val_map_set_int(body, "amount", out->amount);
    if (out && out->receipt >= 0)
        bus_val_map_set_int(body, "receipt", out->receipt);
    if (out && out->trace >= 0)
        bus_val_map_set_int(body, "trace", out->trace);
    int code = out ? (out->result_code >= 0 ? out->result_code : out->abort_code) : -1;
    if (code >= 0)
        bus_val_map_set_int(body, "result_code", code);
    bus_val_map_set_str(body, "text", text);
    if (unknown)
        bus_val_map_set_bool(body, "unknown", true);
    if (resolved)
        bus_val_map_set_bool(body, "resolved", true);
    node_device_event(dev, "result", &body);
}

static void s_outcome_free(s_outcome_t *out)
{
    bus_val_destroy(&out->lines);
}

static size_t s_with_password(s_zvt_t *self, uint8_t *apdu, uint8_t cls, uint8_t ins)
{
    apdu[0] = cls;
    apdu[1] = ins;
    memcpy(apdu + 3, self->password, 3);
    return 6;
}

/*  Ask the terminal for its last transaction (repeat receipt 06 20) and resolve the pending
    authorization with it: it was booked when the last transaction is newer than the one before
    it and of its amount. 1 resolved (or nothing pending: the last transaction is published),
    -1 the terminal did not say. */
static int s_resolve(s_zvt_t *self, node_device_t *dev, const char *key)
{
    uint8_t apdu[8];
    size_t n = s_with_password(self, apdu, 0x06, 0x20);
    apdu[2] = (uint8_t)(n - 3);
    s_outcome_t out;
    s_dlg_t r = s_dialogue(self, dev, apdu, n, &out);
    if (r == S_DLG_NOT_SENT || r == S_DLG_UNKNOWN) {
        s_outcome_free(&out);
        return -1;
    }
    bool booked = r == S_DLG_DONE && out.result_code <= 0 && out.trace >= 0;
    if (!self->pending) {
        s_publish(dev, "status", key, booked, &out,
                  r == S_DLG_DONE ? s_result_text(out.result_code < 0 ? 0 : out.result_code)
                                  : s_result_text(out.abort_code),
                  false, false);
        s_outcome_free(&out);
        return r == S_DLG_DONE ? 1 : -1;
    }
    bool ours = r == S_DLG_DONE && out.trace >= 0 && out.trace != self->pending_trace_before &&
                out.amount == self->pending_amount;
    bool charged = ours && booked;
    if (out.trace >= 0)
        self->last_trace = out.trace;
    if (charged) {
        s_resolved_t *slot = &self->resolved[self->next_resolved];
        self->next_resolved = (self->next_resolved + 1) % S_RESOLVED;
        snprintf(slot->key, sizeof(slot->key), "%s", self->pending_key);
        slot->amount = out.amount;
        slot->trace = out.trace;
        slot->receipt = out.receipt;
    }
    self->pending = false;
    node_device_set_health(dev, NODE_HEALTH_OK, "");
    s_publish(dev, "authorize", self->pending_key, charged, ours ? &out : NULL,
              charged ? "approved" : "not charged", false, true);
    s_outcome_free(&out);
    return 1;
}

/*  A job's data "AMOUNT_FEN [TRACE_BEFORE]": the amount (1 to 12 digits) and the trace number
    of the last transaction the caller knows the terminal made (-1 when absent). 0, or -1. */
static int s_parse_amount(const node_job_t *job, int64_t *amount, int64_t *trace_before)
{
    int64_t v = 0, t = -1;
    size_t i = 0, digits = 0;
    for (; i < job->len && job->data[i] >= '0' && job->data[i] <= '9'; i++, digits++)
        v = v * 10 + (job->data[i] - '0');
    if (digits < 1 || digits > 12 || v <= 0 || v > S_AMOUNT_MAX)
        return -1;
    if (i < job->len) {
        if (job->data[i++] != ' ')
            return -1;
        size_t tdigits = 0;
        for (t = 0; i < job->len && job->data[i] >= '0' && job->data[i] <= '9'; i++, tdigits++)
            t = t * 10 + (job->data[i] - '0');
        if (tdigits < 1 || tdigits > 6 || i != job->len)
            return -1;
    }
    *amount = v;
    *trace_before = t;
    return 0;
}

static const s_resolved_t *s_find_resolved(s_zvt_t *self, const char *key)
{
    for (int i = 0; key[0] && i < S_RESOLVED; i++)
        if (strcmp(self->resolved[i].key, key) == 0)
            return &self->resolved[i];
    return NULL;
}

static void s_refuse(node_device_t *dev, const node_job_t *job, const char *why)
{
    s_publish(dev, job->verb, job->key, false, NULL, why, false, false);
}

static int s_run(void *state, node_device_t *dev, const node_job_t *job)
{
    s_zvt_t *self = state;
    int64_t amount = -1, caller_trace = -1;
    if (strcmp(job->verb, "status") == 0) {
        if (job->len == 0)
            return s_resolve(self, dev, job->key);
        /* a caller that lost its memory (a restart) asks about its own key */
        if (s_parse_amount(job, &amount, &caller_trace) != 0) {
            s_refuse(dev, job, "data: nothing, or AMOUNT_FEN [TRACE_BEFORE]");
            return -1;
        }
        const s_resolved_t *done = s_find_resolved(self, job->key);
        if (done) {
            s_outcome_t out = {.result_code = 0,
                               .abort_code = -1,
                               .amount = done->amount,
                               .trace = done->trace,
                               .receipt = done->receipt};
            s_publish(dev, "authorize", job->key, true, &out, "approved", false, true);
            return 1;
        }
        if (!self->pending) {
            self->pending = true;
            snprintf(self->pending_key, sizeof(self->pending_key), "%s", job->key);
            self->pending_amount = amount;
            self->pending_trace_before = caller_trace;
        }
        return s_resolve(self, dev, job->key);
    }
    uint8_t apdu[32];
    size_t n;
    bool moves_money = false;
    if (strcmp(job->verb, "authorize") == 0 || strcmp(job->verb, "refund") == 0) {
        if (s_parse_amount(job, &amount, &caller_trace) != 0) {
            s_refuse(dev, job, "data: AMOUNT_FEN [TRACE_BEFORE], 1 to 12 and 1 to 6 digits");
            return -1;
        }
        moves_money = true;
        if (job->verb[0] == 'a') {
            apdu[0] = 0x06;
            apdu[1] = 0x01;
            n = 3;
        } else {
            n = s_with_password(self, apdu, 0x06, 0x31);
        }
        apdu[n++] = 0x04;
        s_bcd(amount, apdu + n, 6);
        n += 6;
    } else if (strcmp(job->verb, "reversal") == 0) {
        int64_t receipt = 0;
        size_t i = 0;
        for (; i < job->len && job->data[i] >= '0' && job->data[i] <= '9' && i < 4; i++)
            receipt = receipt * 10 + (job->data[i] - '0');
        if (i == 0 || i != job->len || receipt > S_RECEIPT_MAX) {
            s_refuse(dev, job, "data: the terminal's receipt number, 1 to 4 digits");
            return -1;
        }
        n = s_with_password(self, apdu, 0x06, 0x30);
        apdu[n++] = 0x87;
        s_bcd(receipt, apdu + n, 2);
        n += 2;
    } else if (strcmp(job->verb, "end_of_day") == 0) {
        n = s_with_password(self, apdu, 0x06, 0x50);
    } else {
        s_refuse(dev, job, "unknown verb");
        return -1;
    }
    apdu[2] = (uint8_t)(n - 3);

    /* the terminal only remembers its last transaction: resolve before anything new */
    if (self->pending && s_resolve(self, dev, job->key) < 0) {
        s_refuse(dev, job,
                 "an earlier authorization is unresolved and the terminal does not "
                 "answer");
        return -1;
    }
    const s_resolved_t *done = moves_money ? s_find_resolved(self, job->key) : NULL;
    if (done) {
        s_outcome_t out = {.result_code = 0,
                           .abort_code = -1,
                           .amount = done->amount,
                           .trace = done->trace,
                           .receipt = done->receipt};
        s_publish(dev, job->verb, job->key, true, &out, "approved", false, true);
        return 1; /* charged already: never again */
    }

    s_outcome_t out;
    int64_t trace_before = self->last_trace >= 0 ? self->last_trace : caller_trace;
    s_dlg_t r = s_dialogue(self, dev, apdu, n, &out);
    if (out.trace >= 0)
        self->last_trace = out.trace;
    int rc = -1;
    switch (r) {
    case S_DLG_DONE: {
        bool ok = out.result_code <= 0;
        s_publish(dev, job->verb, job->key, ok, &out,
                  s_result_text(out.result_code < 0 ? 0 : out.result_code), false, false);
        rc = ok ? 1 : -1;
        break;
    }
    case S_DLG_ABORTED:
        s_publish(dev, job->verb, job->key, false, &out,
                  s_result_text(out.result_code > 0 ? out.result_code : out.abort_code), false,
                  false);
        break;
    case S_DLG_NOT_SENT:
        if (strcmp(self->unsent_key, job->key) != 0) {
            snprintf(self->unsent_key, sizeof(self->unsent_key), "%s", job->key);
            self->unsent_tries = 0;
        }
        if (!node_transport_is_open(node_device_transport(dev)) &&
            ++self->unsent_tries <= S_UNSENT_TRIES) {
            /* the line went away before the command left (a hang-up read by the drain, a
               write refused): nothing reached the terminal, so the device reopens the line
               and the job runs again */
            s_outcome_free(&out);
            return 0;
        }
        s_publish(dev, job->verb, job->key, false, &out, "the terminal did not take the command",
                  false, false);
        break;
    case S_DLG_UNKNOWN:
        if (moves_money) {
            self->pending = true;
            snprintf(self->pending_key, sizeof(self->pending_key), "%s", job->key);
            self->pending_amount = amount;
            self->pending_trace_before = trace_before;
        }
        s_publish(dev, job->verb, job->key, false, &out, "no answer from the terminal", true,
                  false);
        node_device_set_health(dev, NODE_HEALTH_WARN, "a transaction is unresolved");
        break;
    }
    s_outcome_free(&out);
    if (rc > 0 && !self->pending)
        node_device_set_health(dev, NODE_HEALTH_OK, "");
    return rc;
}

static int s_attach(void *state, node_device_t *dev)
{
    s_zvt_t *self = state;
    self->tcp = strcmp(node_transport_kind(node_device_transport(dev)), "tcp") == 0;
    s_rx_reset(self);
    if (self->registers) {
        uint8_t apdu[16];
        size_t n = s_with_password(self, apdu, 0x06, 0x00);
        apdu[n++] = 0x8A; /* config: the ECR prints nothing itself, takes intermediate status */
        apdu[n++] = 0x09; /* currency 978 */
        apdu[n++] = 0x78;
        apdu[2] = (uint8_t)(n - 3);
        s_outcome_t out;
        s_dlg_t r = s_dialogue(self, dev, apdu, n, &out);
        s_outcome_free(&out);
        if (r != S_DLG_DONE)
            return -1;
    }
    if (self->pending)
        s_resolve(self, dev, self->pending_key);
    node_device_set_health(dev, self->pending ? NODE_HEALTH_WARN : NODE_HEALTH_OK,
                           self->pending ? "a transaction is unresolved" : "");
    return 0;
}

static void s_idle(void *state, node_device_t *dev)
{
    (void)state;
    (void)dev;
}

/*  The terminal says nothing unasked; whatever comes between dialogues is read and dropped
    (a hang-up is seen here: -1 and the transport is reopened). */
static int s_input(void *state, node_device_t *dev)
{
    s_zvt_t *self = state;
    char why[120];
    ssize_t n = node_transport_read(node_device_transport(dev), self->rbuf, sizeof(self->rbuf), 0,
                                    why, sizeof(why));
    return n < 0 ? -1 : 0;
}

const node_driver_t zvt_driver = {
    .name = "zvt",
    .kind = "card",
    .create = s_create,
    .destroy = s_destroy,
    .attach = s_attach,
    .run = s_run,
    .idle = s_idle,
    .input = s_input,
};
