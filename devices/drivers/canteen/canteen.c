/*  =========================================================================
    canteen.c - the canteen consumption terminal driver (node/device.h)

    Why it looks like this. A canteen line is a multi-drop bus: one host,
    up to 32 terminals, and only the host may start a conversation. So
    the driver is a poller: idle polls every terminal in turn (a round
    every poll_ms, for most of the second between idle calls, returning
    early once it has published a tap so that the answer job runs at
    once), and every other exchange is a job. One frame out, one reply
    back within reply_ms; nothing else on the line is believed. A
    terminal that stops answering is marked down after S_DOWN_MISSES
    polls in a row and then asked only every S_DOWN_POLL_MS, so that a
    dead terminal costs the others little and never blocks them.

    Every command of the protocol is idempotent (docs/canteen-protocol.md),
    so a reply lost to a bad checksum or a receive error (0xAA) is
    recovered by sending the same frame again, at most S_TRIES times.

    What the host must push is kept here and pushed again to a terminal
    that restarts or comes back: the time (always), the fee rules and
    meal periods (the last fees job) and the blocklist (the segments of
    the blocklist jobs, each taking version BASE to VERSION; a terminal
    that reports an older version gets the chain of segments from its
    version, and one older than any segment kept is reported stale for
    the caller to send a full list).

    Bytes that are not a reply from the terminal asked are counted and
    skipped; a frame cut by a gap longer than S_GAP_MS is dropped. None
    of it is ever fatal. Money and card numbers are integers.
    =========================================================================
*/
#include <errno.h>
#include <iconv.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bus/msg.h>
#include "canteen.h"

#define S_ADDR_MAX      32
#define S_LEN_MAX       200 /* data bytes in a frame */
#define S_FRAME_MAX     (S_LEN_MAX + 5)
#define S_GAP_MS        50 /* a longer silence inside a frame ends it */
#define S_POLL_MS       200
#define S_REPLY_MS      300
#define S_WRITE_MS      500
#define S_WINDOW_MS     850  /* idle polls this long (device.c calls it about every second) */
#define S_DOWN_MISSES   3    /* polls in a row without an answer: the terminal is down */
#define S_DOWN_POLL_MS  2000 /* how often a down terminal is asked */
#define S_TRIES         3    /* a frame sent at most this often after garbled replies */
#define S_TEXT_MAX      32   /* GB18030 bytes of an answer's text */
#define S_OPS_PER_FRAME 38   /* (200 - 6) / 5 */
#define S_SEGMENTS_MAX  64   /* blocklist segments kept */
#define S_OPS_MAX       65536
#define S_COLLECT_MAX   1000 /* frames one collect job reads at most */
#define S_MEALS_MAX     16
#define S_FEES_MAX      33 /* (200 - 1) / 6 */

#define S_CMD_POLL      0x10
#define S_CMD_TIME      0x20
#define S_CMD_PARAMS    0x21
#define S_CMD_MEALS     0x22
#define S_CMD_FEES      0x23
#define S_CMD_BLOCKLIST 0x30
#define S_CMD_ANSWER    0x40
#define S_CMD_COLLECT   0x50
#define S_CMD_ACK       0x51

#define S_REP_STATUS     0x11
#define S_REP_TAP        0x12
#define S_REP_TXS        0x13
#define S_REP_OK         0x88
#define S_REP_FAILED     0x99
#define S_REP_RECV_ERROR 0xAA

#define S_ST_STARTED 0x01

#define S_FAIL_NOT_PENDING 3
#define S_FAIL_SETTLED     4

typedef struct {
    uint8_t addr;
    bool up, ever;   /* answering now; answered since attach */
    int misses;      /* polls in a row without an answer */
    int64_t next_ms; /* a down terminal: when to ask again */
    bool synced;     /* time and configuration pushed since it (re)started */
    bool have_status;
    uint32_t bl_version, last_seq;
    uint16_t offline;
    bool reported;  /* the terminal event was published with these values */
    bool tap_known; /* tap_seq was published */
    uint32_t tap_seq;
    bool stale_reported; /* blocklist_stale published for bl_version */
} s_term_t;

typedef struct {
    uint32_t base, version; /* base 0: applies on any version */
    uint8_t *ops;           /* 5 bytes each: op, card (big-endian) */
    size_t nops;
} s_segment_t;

typedef struct {
    s_term_t terms[S_ADDR_MAX];
    int nterms;
    int poll_ms, reply_ms;
    /* the line's counters */
    uint64_t frames, polls, no_answer, bad_checksums, recv_errors, resyncs, stray_bytes, gaps, taps;
    /* what is pushed to every terminal */
    uint8_t params[6];
    bool have_params;
    uint8_t meals[1 + 5 * S_MEALS_MAX], fees[1 + 6 * S_FEES_MAX];
    size_t meals_len, fees_len;
    s_segment_t segs[S_SEGMENTS_MAX];
    int nsegs;
    size_t total_ops;
    uint32_t bl_latest;
    /* the receiver */
    uint8_t rx[S_FRAME_MAX];
    size_t rxlen;
    bool skipping;
    bool tap_seen; /* a round published a tap */
} s_canteen_t;

static void s_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void s_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t s_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*  A decimal number of at most max from text (whole word); -1 when it is not one. */
static int64_t s_number(const char *text, int64_t max)
{
    if (!text || !*text)
        return -1;
    int64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v > max)
            return -1;
    }
    return v;
}

/* ---- options ------------------------------------------------------------------------------ */

static int s_terminals(s_canteen_t *self, const char *list, size_t len, char *why, size_t size)
{
    self->nterms = 0;
    char buf[200];
    if (len >= sizeof(buf))
        goto bad;
    memcpy(buf, list, len);
    buf[len] = '\0';
    for (char *save = NULL, *tok = strtok_r(buf, ":/ ", &save); tok;
         tok = strtok_r(NULL, ":/ ", &save)) {
        int64_t a = s_number(tok, S_ADDR_MAX);
        if (a < 1)
            goto bad;
        for (int i = 0; i < self->nterms; i++)
            if (self->terms[i].addr == a)
                goto bad;
        self->terms[self->nterms++].addr = (uint8_t)a;
    }
    if (self->nterms > 0)
        return 0;
bad:
    snprintf(why, size, "terminals: distinct addresses 1-32 like terminals=1:2 or 1,2");
    return -1;
}

static void s_destroy(void *state)
{
    s_canteen_t *self = state;
    if (!self)
        return;
    for (int i = 0; i < self->nsegs; i++)
        free(self->segs[i].ops);
    free(self);
}

/*  Options are comma-separated; the terminal list may use commas too (terminals=1,2,5): an item
    that is a bare number continues the list before it. */
static void *s_create(const char *options, char *why, size_t size)
{
    s_canteen_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->poll_ms = S_POLL_MS;
    self->reply_ms = S_REPLY_MS;
    self->nterms = 1;
    self->terms[0].addr = 1;
    const char *p = options ? options : "";
    char list[200] = "";
    bool in_list = false;
    while (*p) {
        size_t len = strcspn(p, ",");
        int rc = 0;
        if (len > 10 && !strncmp(p, "terminals=", 10)) {
            snprintf(list, sizeof(list), "%.*s", (int)(len - 10), p + 10);
            in_list = true;
        } else if (in_list && len > 0 && p[0] >= '0' && p[0] <= '9') {
            size_t n = strlen(list);
            snprintf(list + n, sizeof(list) - n, ":%.*s", (int)len, p);
        } else if (len > 8 && !strncmp(p, "poll_ms=", 8)) {
            in_list = false;
            rc = node_device_option_int(p, len, "poll_ms", 20, 5000, &self->poll_ms, why, size);
        } else if (len > 9 && !strncmp(p, "reply_ms=", 9)) {
            in_list = false;
            rc = node_device_option_int(p, len, "reply_ms", 20, 5000, &self->reply_ms, why, size);
        } else if (len > 0) {
            snprintf(why, size, "unknown option \"%.*s\" (terminals=1,2, poll_ms=N, reply_ms=N)",
                     (int)len, p);
            rc = -1;
        }
        if (rc != 0)
            goto fail;
        p += len + (p[len] == ',');
    }
    if (list[0] && s_terminals(self, list, strlen(list), why, size) != 0)
        goto fail;
    return self;
fail:
    s_destroy(self);
    return NULL;
}

/* ---- frames ------------------------------------------------------------------------------- */

static void s_checksums(const uint8_t *p, size_t n, uint8_t *sum, uint8_t *x)
{
    uint8_t s = 0, xr = 0;
    for (size_t i = 0; i < n; i++) {
        s = (uint8_t)(s + p[i]);
        xr ^= p[i];
    }
    *sum = s;
    *x = xr;
}

static bool s_reply_cmd(uint8_t c)
{
    return c == S_REP_STATUS || c == S_REP_TAP || c == S_REP_TXS || c == S_REP_OK ||
           c == S_REP_FAILED || c == S_REP_RECV_ERROR;
}

static void s_stray(s_canteen_t *self, size_t n)
{
    if (n == 0)
        return;
    if (!self->skipping)
        self->resyncs++;
    self->skipping = true;
    self->stray_bytes += n;
}

/*  Input nobody asked for (a late reply, noise): read what is there and count it. -1 when the
    transport went away. */
static int s_flush_input(s_canteen_t *self, node_device_t *dev)
{
    node_transport_t *t = node_device_transport(dev);
    char why[120];
    for (;;) {
        uint8_t buf[256];
        ssize_t n = node_transport_read(t, buf, sizeof(buf), 0, why, sizeof(why));
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        s_stray(self, (size_t)n);
    }
    self->skipping = false;
    self->rxlen = 0;
    return 0;
}

typedef enum {
    S_EX_GONE = -1,   /* the transport failed (closed) */
    S_EX_NONE = 0,    /* no reply in time */
    S_EX_GARBLED = 1, /* a reply with a bad checksum, or 0xAA: ours was garbled */
    S_EX_REPLY = 2,
} s_ex_t;

/*  Take one byte for the reply from addr; true when rx holds a whole frame. */
static bool s_feed(s_canteen_t *self, uint8_t addr, uint8_t b)
{
    if ((self->rxlen == 0 && b != addr) || (self->rxlen == 1 && !s_reply_cmd(b)) ||
        (self->rxlen == 2 && b > S_LEN_MAX)) {
        /* not the frame expected: what came before it in rx was not one either */
        size_t n = self->rxlen;
        self->rxlen = 0;
        if (b == addr)
            self->rx[self->rxlen++] = b; /* may be the start of the real reply */
        else
            n++;
        s_stray(self, n);
        return false;
    }
    self->rx[self->rxlen++] = b;
    self->skipping = false;
    return self->rxlen >= 3 && self->rxlen == (size_t)self->rx[2] + 5;
}

/*  One try: send the frame, wait for addr's reply. */
static s_ex_t s_try(s_canteen_t *self, node_device_t *dev, const uint8_t *out, size_t outlen,
                    uint8_t addr)
{
    node_transport_t *t = node_device_transport(dev);
    char why[120];
    if (s_flush_input(self, dev) < 0)
        return S_EX_GONE;
    if (node_transport_write(t, out, outlen, S_WRITE_MS, why, sizeof(why)) != 0)
        return node_transport_is_open(t) ? S_EX_NONE : S_EX_GONE;
    int64_t deadline = bus_mono_ms() + self->reply_ms;
    for (;;) {
        int64_t left = deadline - bus_mono_ms();
        if (left <= 0)
            break;
        if (self->rxlen > 0 && left > S_GAP_MS)
            left = S_GAP_MS;
        uint8_t buf[64];
        ssize_t n =
            node_transport_read(t, buf, self->rxlen ? 1 : sizeof(buf), (int)left, why, sizeof(why));
        if (n < 0)
            return S_EX_GONE;
        if (n == 0) {
            if (self->rxlen > 0) {
                self->gaps++; /* a frame cut off by silence */
                s_stray(self, self->rxlen);
                self->rxlen = 0;
            }
            continue;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (!s_feed(self, addr, buf[i]))
                continue;
            /* whole frame: bytes after it in buf are stray */
            s_stray(self, (size_t)(n - i - 1));
            self->skipping = false;
            uint8_t sum, x;
            size_t body = self->rxlen - 2;
            s_checksums(self->rx, body, &sum, &x);
            if (sum != self->rx[body] || x != self->rx[body + 1]) {
                self->bad_checksums++;
                self->rxlen = 0;
                return S_EX_GARBLED;
            }
            self->frames++;
            if (self->rx[1] == S_REP_RECV_ERROR) {
                self->recv_errors++;
                self->rxlen = 0;
                return S_EX_GARBLED;
            }
            return S_EX_REPLY;
        }
    }
    if (self->rxlen > 0) {
        s_stray(self, self->rxlen);
        self->rxlen = 0;
    }
    self->skipping = false;
    return S_EX_NONE;
}

/*  Send cmd with data to addr and take its reply: *rcmd, the data in rdata (S_LEN_MAX bytes),
    *rlen. A garbled exchange is tried again up to S_TRIES times in all; tries 1 for a poll (the
    next round asks again). */
static s_ex_t s_exchange(s_canteen_t *self, node_device_t *dev, uint8_t addr, uint8_t cmd,
                         const uint8_t *data, size_t len, int tries, uint8_t *rcmd, uint8_t *rdata,
                         size_t *rlen)
{
    uint8_t out[S_FRAME_MAX];
    if (len > S_LEN_MAX)
        return S_EX_NONE;
    out[0] = addr;
    out[1] = cmd;
    out[2] = (uint8_t)len;
    if (len)
        memcpy(out + 3, data, len);
    s_checksums(out, len + 3, &out[len + 3], &out[len + 4]);
    s_ex_t r = S_EX_NONE;
    for (int i = 0; i < tries; i++) {
        r = s_try(self, dev, out, len + 5, addr);
        if (r == S_EX_REPLY) {
            *rcmd = self->rx[1];
            *rlen = self->rx[2];
            memcpy(rdata, self->rx + 3, *rlen);
            self->rxlen = 0;
            return r;
        }
        if (r != S_EX_GARBLED)
            break;
    }
    return r;
}

/* ---- terminals ---------------------------------------------------------------------------- */

static s_term_t *s_term(s_canteen_t *self, int64_t addr)
{
    for (int i = 0; i < self->nterms; i++)
        if (self->terms[i].addr == addr)
            return &self->terms[i];
    return NULL;
}

static void s_health(s_canteen_t *self, node_device_t *dev)
{
    char down[100] = "";
    int ndown = 0;
    for (int i = 0; i < self->nterms; i++) {
        if (self->terms[i].up)
            continue;
        size_t n = strlen(down);
        snprintf(down + n, sizeof(down) - n, "%s%d", ndown ? "," : "", self->terms[i].addr);
        ndown++;
    }
    char detail[NODE_DEVICE_DETAIL_MAX + 1];
    node_health_t h;
    if (ndown == self->nterms) {
        h = NODE_HEALTH_OFFLINE;
        snprintf(detail, sizeof(detail), "no terminal answers");
    } else if (ndown) {
        h = NODE_HEALTH_WARN;
        snprintf(detail, sizeof(detail), "terminal %s not answering", down);
    } else {
        h = NODE_HEALTH_OK;
        detail[0] = '\0';
        if (self->bad_checksums || self->resyncs)
            snprintf(detail, sizeof(detail), "%" PRIu64 " bad checksums, %" PRIu64 " resyncs",
                     self->bad_checksums, self->resyncs);
    }
    node_device_set_health(dev, h, detail);
}

static void s_report(node_device_t *dev, s_term_t *t)
{
    bus_val_t *b = bus_val_new_map();
    bus_val_map_set_int(b, "terminal", t->addr);
    bus_val_map_set_bool(b, "up", t->up);
    if (t->have_status) {
        bus_val_map_set_int(b, "blocklist_version", t->bl_version);
        bus_val_map_set_int(b, "last_seq", t->last_seq);
        bus_val_map_set_int(b, "offline", t->offline);
    }
    node_device_event(dev, "terminal", &b);
    t->reported = true;
}

static void s_missed(s_canteen_t *self, node_device_t *dev, s_term_t *t)
{
    self->no_answer++;
    if (++t->misses >= S_DOWN_MISSES && t->up) {
        t->up = false;
        t->synced = false;
        s_report(dev, t);
    }
    if (!t->up)
        t->next_ms = bus_mono_ms() + S_DOWN_POLL_MS;
}

static void s_answered(s_term_t *t)
{
    t->misses = 0;
    t->next_ms = 0;
    t->ever = true;
    if (!t->up) {
        t->up = true;
        t->reported = false;
        t->synced = false; /* it may have restarted meanwhile: push everything again */
    }
}

/*  A simple command whose reply is 0x88: 1 ok, 0 refused or no answer, -1 transport gone. */
static int s_command(s_canteen_t *self, node_device_t *dev, s_term_t *t, uint8_t cmd,
                     const uint8_t *data, size_t len)
{
    uint8_t rcmd, rdata[S_LEN_MAX];
    size_t rlen;
    s_ex_t r = s_exchange(self, dev, t->addr, cmd, data, len, S_TRIES, &rcmd, rdata, &rlen);
    if (r == S_EX_GONE)
        return -1;
    if (r != S_EX_REPLY)
        return 0;
    return rcmd == S_REP_OK;
}

static int s_push_time(s_canteen_t *self, node_device_t *dev, s_term_t *t)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    uint8_t d[7] = {(uint8_t)((tm.tm_year + 1900) >> 8),
                    (uint8_t)(tm.tm_year + 1900),
                    (uint8_t)(tm.tm_mon + 1),
                    (uint8_t)tm.tm_mday,
                    (uint8_t)tm.tm_hour,
                    (uint8_t)tm.tm_min,
                    (uint8_t)tm.tm_sec};
    return s_command(self, dev, t, S_CMD_TIME, d, sizeof(d));
}

/*  Push the fee configuration to t: 1 all taken, 0 a part refused or unanswered, -1 gone. */
static int s_push_config(s_canteen_t *self, node_device_t *dev, s_term_t *t)
{
    int ok = 1, r;
    if (self->have_params &&
        (r = s_command(self, dev, t, S_CMD_PARAMS, self->params, sizeof(self->params))) < 1)
        ok = r;
    if (ok >= 0 && self->meals_len &&
        (r = s_command(self, dev, t, S_CMD_MEALS, self->meals, self->meals_len)) < 1)
        ok = r < ok ? r : 0;
    if (ok >= 0 && self->fees_len &&
        (r = s_command(self, dev, t, S_CMD_FEES, self->fees, self->fees_len)) < 1)
        ok = r < ok ? r : 0;
    return ok;
}

/*  Bring t's blocklist to the latest version through the chain of segments from its version.
    -1 transport gone, else 0. */
static int s_push_blocklist(s_canteen_t *self, node_device_t *dev, s_term_t *t)
{
    while (self->nsegs && t->bl_version < self->bl_latest) {
        const s_segment_t *seg = NULL;
        for (int i = self->nsegs - 1; i >= 0 && !seg; i--)
            if (self->segs[i].base == t->bl_version ||
                (self->segs[i].base == 0 && self->segs[i].version > t->bl_version))
                seg = &self->segs[i];
        if (!seg) {
            if (!t->stale_reported) {
                bus_val_t *b = bus_val_new_map();
                bus_val_map_set_int(b, "terminal", t->addr);
                bus_val_map_set_int(b, "version", t->bl_version);
                node_device_event(dev, "blocklist_stale", &b);
                t->stale_reported = true;
            }
            return 0;
        }
        size_t done = 0;
        uint32_t got = t->bl_version;
        do {
            size_t n = seg->nops - done > S_OPS_PER_FRAME ? S_OPS_PER_FRAME : seg->nops - done;
            uint8_t d[6 + 5 * S_OPS_PER_FRAME], rcmd, rdata[S_LEN_MAX];
            size_t rlen;
            s_put32(d, seg->version);
            d[4] = done + n == seg->nops ? 0x01 : 0x00;
            d[5] = (uint8_t)n;
            memcpy(d + 6, seg->ops + 5 * done, 5 * n);
            s_ex_t r = s_exchange(self, dev, t->addr, S_CMD_BLOCKLIST, d, 6 + 5 * n, S_TRIES, &rcmd,
                                  rdata, &rlen);
            if (r == S_EX_GONE)
                return -1;
            if (r != S_EX_REPLY || rcmd != S_REP_OK || rlen != 4)
                return 0; /* tried again at its next status */
            got = s_get32(rdata);
            done += n;
        } while (done < seg->nops);
        if (got == t->bl_version)
            return 0; /* it would not take it: do not loop */
        t->bl_version = got;
        t->stale_reported = false;
        bus_val_t *b = bus_val_new_map();
        bus_val_map_set_int(b, "terminal", t->addr);
        bus_val_map_set_int(b, "version", got);
        node_device_event(dev, "blocklist", &b);
    }
    return 0;
}

/*  Time, configuration and blocklist to a terminal that started or came back. */
static int s_sync(s_canteen_t *self, node_device_t *dev, s_term_t *t)
{
    int r = s_push_time(self, dev, t);
    if (r < 0)
        return -1;
    if (r == 0)
        return 0; /* at its next status */
    if ((r = s_push_config(self, dev, t)) < 0)
        return -1;
    bus_val_t *b = bus_val_new_map();
    bus_val_map_set_int(b, "terminal", t->addr);
    bus_val_map_set_bool(b, "ok", r == 1);
    node_device_event(dev, "configured", &b);
    t->synced = true;
    return s_push_blocklist(self, dev, t);
}

/*  Poll t once: -1 transport gone, else 0. */
static int s_poll(s_canteen_t *self, node_device_t *dev, s_term_t *t)
{
    uint8_t rcmd, rdata[S_LEN_MAX];
    size_t rlen;
    self->polls++;
    s_ex_t r = s_exchange(self, dev, t->addr, S_CMD_POLL, NULL, 0, 1, &rcmd, rdata, &rlen);
    if (r == S_EX_GONE)
        return -1;
    if (r == S_EX_NONE) {
        s_missed(self, dev, t);
        return 0;
    }
    s_answered(t);
    if (r != S_EX_REPLY)
        return 0;
    if (rcmd == S_REP_TAP && rlen == 12) {
        uint32_t seq = s_get32(rdata);
        if (!t->tap_known || t->tap_seq != seq) {
            t->tap_known = true;
            t->tap_seq = seq;
            self->taps++;
            self->tap_seen = true;
            bus_val_t *b = bus_val_new_map();
            bus_val_map_set_int(b, "terminal", t->addr);
            bus_val_map_set_int(b, "card", s_get32(rdata + 4));
            bus_val_map_set_int(b, "amount", s_get32(rdata + 8));
            bus_val_map_set_int(b, "seq", seq);
            node_device_event(dev, "tap", &b);
        }
        if (!t->reported)
            s_report(dev, t);
        return 0;
    }
    if (rcmd != S_REP_STATUS || rlen != 11)
        return 0;
    uint8_t flags = rdata[0];
    uint32_t ver = s_get32(rdata + 1), seq = s_get32(rdata + 5);
    uint16_t off = (uint16_t)(rdata[9] << 8 | rdata[10]);
    if (!t->have_status || ver != t->bl_version || off != t->offline)
        t->reported = false;
    if (ver != t->bl_version)
        t->stale_reported = false;
    t->have_status = true;
    t->bl_version = ver;
    t->last_seq = seq;
    t->offline = off;
    if (!t->reported)
        s_report(dev, t);
    if ((flags & S_ST_STARTED) || !t->synced)
        return s_sync(self, dev, t);
    return s_push_blocklist(self, dev, t);
}

/*  One round over the terminals that are due. -1 transport gone. */
static int s_round(s_canteen_t *self, node_device_t *dev)
{
    int64_t now = bus_mono_ms();
    for (int i = 0; i < self->nterms; i++) {
        s_term_t *t = &self->terms[i];
        if (!t->up && t->ever && t->misses >= S_DOWN_MISSES && now < t->next_ms)
            continue;
        if (s_poll(self, dev, t) < 0)
            return -1;
    }
    s_health(self, dev);
    return 0;
}

/* ---- the driver --------------------------------------------------------------------------- */

static int s_attach(void *state, node_device_t *dev)
{
    s_canteen_t *self = state;
    self->rxlen = 0;
    bool any = false;
    for (int i = 0; i < self->nterms; i++) {
        s_term_t *t = &self->terms[i];
        t->up = t->ever = t->synced = false;
        t->misses = 0;
        t->reported = false;
        if (s_poll(self, dev, t) < 0)
            return -1;
        if (t->ever && !t->synced && s_sync(self, dev, t) < 0)
            return -1; /* the time on attach, also when it did not say started */
        if (t->ever)
            any = true;
        else {
            t->ever = true; /* asked: from now on a miss counts towards down */
            t->misses = S_DOWN_MISSES;
            t->next_ms = bus_mono_ms() + S_DOWN_POLL_MS;
            s_report(dev, t);
        }
    }
    if (!any)
        return -1;
    s_health(self, dev);
    return 0;
}

static void s_idle(void *state, node_device_t *dev)
{
    s_canteen_t *self = state;
    int64_t end = bus_mono_ms() + S_WINDOW_MS;
    self->tap_seen = false;
    while (!node_device_stopping(dev)) {
        int64_t start = bus_mono_ms();
        if (s_round(self, dev) < 0) {
            node_device_set_health(dev, NODE_HEALTH_OFFLINE, "line lost");
            return;
        }
        if (self->tap_seen)
            return; /* the answer job may be waiting for this */
        int64_t next = start + self->poll_ms;
        if (next >= end)
            return;
        s_sleep_ms(next - bus_mono_ms());
    }
}

static int s_input(void *state, node_device_t *dev)
{
    return s_flush_input(state, dev);
}

/* ---- jobs --------------------------------------------------------------------------------- */

/*  Job data as a NUL-terminated string in buf (size bytes); false when too long or with NUL. */
static bool s_text(const node_job_t *job, char *buf, size_t size)
{
    if (job->len >= size || (job->len && memchr(job->data, '\0', job->len)))
        return false;
    if (job->len)
        memcpy(buf, job->data, job->len);
    buf[job->len] = '\0';
    return true;
}

static void s_answered_event(node_device_t *dev, int64_t terminal, int64_t seq, const char *result)
{
    bus_val_t *b = bus_val_new_map();
    bus_val_map_set_int(b, "terminal", terminal);
    bus_val_map_set_int(b, "seq", seq);
    bus_val_map_set_str(b, "result", result);
    node_device_event(dev, "answered", &b);
}

/*  TEXT (UTF-8) as GB18030 into out (at most S_TEXT_MAX bytes): its length, -1 when it does not
    convert or fit. */
static int s_gb18030(const char *text, uint8_t *out)
{
    iconv_t cd = iconv_open("GB18030", "UTF-8");
    if (cd == (iconv_t)-1)
        return -1;
    char *ip = (char *)text, *op = (char *)out;
    size_t il = strlen(text), ol = S_TEXT_MAX;
    size_t r = iconv(cd, &ip, &il, &op, &ol);
    iconv_close(cd);
    if (r == (size_t)-1 || il != 0)
        return -1;
    return (int)(S_TEXT_MAX - ol);
}

static int s_answer(s_canteen_t *self, node_device_t *dev, const node_job_t *job)
{
    char buf[256], verdict[16] = "";
    int64_t addr = -1, seq = -1;
    int used = 0;
    if (!s_text(job, buf, sizeof(buf)))
        return -1;
    char a[16], s[16];
    if (sscanf(buf, "%15s %15s %15s %n", a, s, verdict, &used) != 3)
        return -1;
    addr = s_number(a, S_ADDR_MAX);
    seq = s_number(s, UINT32_MAX);
    s_term_t *t = s_term(self, addr);
    bool approve = strcmp(verdict, "approve") == 0;
    if (!t || seq < 0 || (!approve && strcmp(verdict, "decline") != 0))
        return -1;
    uint8_t d[5 + S_TEXT_MAX];
    s_put32(d, (uint32_t)seq);
    d[4] = approve ? 1 : 2;
    int tl = s_gb18030(buf + used, d + 5);
    if (tl < 0)
        return -1;
    uint8_t rcmd, rdata[S_LEN_MAX];
    size_t rlen;
    s_ex_t r = s_exchange(self, dev, t->addr, S_CMD_ANSWER, d, 5 + (size_t)tl, S_TRIES, &rcmd,
                          rdata, &rlen);
    if (r == S_EX_REPLY && rcmd == S_REP_OK) {
        s_answered_event(dev, addr, seq, approve ? "approved" : "declined");
        return 1;
    }
    const char *result = "no_answer";
    if (r == S_EX_REPLY && rcmd == S_REP_FAILED && rlen >= 1) {
        if (rdata[0] == S_FAIL_SETTLED && rlen >= 2)
            result = rdata[1] == 1 ? "offline_approved" : "offline_declined";
        else if (rdata[0] == S_FAIL_NOT_PENDING)
            result = "not_pending";
        else
            result = "refused";
    }
    s_answered_event(dev, addr, seq, result);
    return -1;
}

/*  BASE VERSION OP...; OP +CARD, -CARD or clear. */
static int s_blocklist(s_canteen_t *self, node_device_t *dev, const node_job_t *job)
{
    char *buf = malloc(job->len + 1);
    if (!buf)
        return -1;
    int rc = -1;
    uint8_t *ops = NULL;
    if (!s_text(job, buf, job->len + 1))
        goto out_free;
    char *save = NULL, *tok = strtok_r(buf, " \t\n;", &save);
    int64_t base = s_number(tok, UINT32_MAX);
    tok = strtok_r(NULL, " \t\n;", &save);
    int64_t version = s_number(tok, UINT32_MAX);
    if (base < 0 || version <= base)
        goto out_free;
    size_t n = 0, cap = 64;
    ops = malloc(cap * 5);
    if (!ops)
        goto out_free;
    while ((tok = strtok_r(NULL, " \t\n;", &save))) {
        uint8_t op;
        int64_t card = 0;
        if (strcmp(tok, "clear") == 0)
            op = 3;
        else if ((tok[0] == '+' || tok[0] == '-') && (card = s_number(tok + 1, UINT32_MAX)) >= 0)
            op = tok[0] == '+' ? 1 : 2;
        else
            goto out_free;
        if (n == cap) {
            uint8_t *more = cap * 2 * 5 > S_OPS_MAX * 5 ? NULL : realloc(ops, cap * 2 * 5);
            if (!more)
                goto out_free;
            ops = more;
            cap *= 2;
        }
        ops[5 * n] = op;
        s_put32(ops + 5 * n + 1, (uint32_t)card);
        n++;
    }
    bool have_full = false; /* a full list at this version kept already */
    for (int i = 0; i < self->nsegs; i++)
        have_full = have_full || (self->segs[i].base == 0 && self->segs[i].version == version);
    if (version < self->bl_latest || (version == self->bl_latest && (base != 0 || have_full))) {
        rc = 1; /* had it already (a job submitted again) */
        goto out_free;
    }
    /* else a newer update, or the full list at the latest version for a terminal older than
       every update kept (after blocklist_stale) */
    while (self->nsegs == S_SEGMENTS_MAX || (self->nsegs && self->total_ops + n > S_OPS_MAX)) {
        self->total_ops -= self->segs[0].nops;
        free(self->segs[0].ops);
        memmove(self->segs, self->segs + 1, sizeof(self->segs[0]) * (size_t)--self->nsegs);
    }
    self->segs[self->nsegs++] =
        (s_segment_t){.base = (uint32_t)base, .version = (uint32_t)version, .ops = ops, .nops = n};
    ops = NULL;
    self->total_ops += n;
    self->bl_latest = (uint32_t)version;
    rc = 1;
    for (int i = 0; i < self->nterms; i++) {
        s_term_t *t = &self->terms[i];
        t->stale_reported = false;
        if (t->up && t->have_status && s_push_blocklist(self, dev, t) < 0)
            break; /* the rest when the line is back */
    }
out_free:
    free(ops);
    free(buf);
    return rc;
}

static int s_collect(s_canteen_t *self, node_device_t *dev, const node_job_t *job)
{
    char buf[64], a[16], s[16];
    if (!s_text(job, buf, sizeof(buf)) || sscanf(buf, "%15s %15s", a, s) != 2)
        return -1;
    s_term_t *t = s_term(self, s_number(a, S_ADDR_MAX));
    int64_t after = s_number(s, UINT32_MAX);
    if (!t || after < 0)
        return -1;
    uint32_t from = (uint32_t)after, last = from;
    int64_t count = 0;
    bool ok = false;
    if (from > 0) { /* the host holds everything up to after (journaled): the terminal may
                       forget it now, and only now */
        uint8_t d[4];
        s_put32(d, from);
        if (s_command(self, dev, t, S_CMD_ACK, d, 4) != 1)
            goto out;
    }
    for (int frames = 0; frames < S_COLLECT_MAX; frames++) {
        uint8_t d[5], rcmd, rdata[S_LEN_MAX];
        size_t rlen;
        s_put32(d, last);
        d[4] = 11;
        if (s_exchange(self, dev, t->addr, S_CMD_COLLECT, d, 5, S_TRIES, &rcmd, rdata, &rlen) !=
                S_EX_REPLY ||
            rcmd != S_REP_TXS || rlen < 1 || rlen != 1 + 17 * (size_t)rdata[0])
            break;
        int n = rdata[0];
        if (n == 0) {
            ok = true;
            break;
        }
        uint32_t top = last;
        for (int i = 0; i < n; i++) {
            const uint8_t *p = rdata + 1 + 17 * i;
            uint32_t seq = s_get32(p);
            if (seq <= top)
                continue; /* out of order: not believed */
            top = seq;
            bus_val_t *b = bus_val_new_map();
            bus_val_map_set_int(b, "terminal", t->addr);
            bus_val_map_set_int(b, "card", s_get32(p + 4));
            bus_val_map_set_int(b, "amount", s_get32(p + 8));
            bus_val_map_set_int(b, "seq", seq);
            bus_val_map_set_int(b, "ts", s_get32(p + 12));
            node_device_event(dev, "offline_tx", &b);
            count++;
        }
        if (top == last)
            break;
        /* not acknowledged here: the host sends `collect T LAST` once it holds them, which
           acks them then (a host that stops before that gets them again, never loses one) */
        last = top;
    }
out:;
    bus_val_t *b = bus_val_new_map();
    bus_val_map_set_int(b, "terminal", t->addr);
    bus_val_map_set_int(b, "after", from);
    bus_val_map_set_int(b, "count", count);
    bus_val_map_set_int(b, "last", last);
    bus_val_map_set_bool(b, "ok", ok);
    node_device_event(dev, "collected", &b);
    return ok ? 1 : -1;
}

/*  params WAIT_MS OFFLINE_MAX_FEN; meal ID HH:MM-HH:MM; fee MEAL CLASS FEN (';' or newlines). */
static int s_fees(s_canteen_t *self, node_device_t *dev, const node_job_t *job)
{
    char buf[2048];
    if (!s_text(job, buf, sizeof(buf)))
        return -1;
    uint8_t params[6], meals[sizeof(self->meals)] = {0}, fees[sizeof(self->fees)] = {0};
    bool have_params = false;
    int nm = 0, nf = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ";\n", &save); item; item = strtok_r(NULL, ";\n", &save)) {
        char w[5][24];
        int k = sscanf(item, " %23s %23s %23s %23s %23s", w[0], w[1], w[2], w[3], w[4]);
        if (k <= 0)
            continue;
        if (!strcmp(w[0], "params") && k == 3) {
            int64_t wait = s_number(w[1], 60000), max = s_number(w[2], UINT32_MAX);
            if (wait < 100 || max < 0)
                return -1;
            params[0] = (uint8_t)((wait / 100) >> 8);
            params[1] = (uint8_t)(wait / 100);
            s_put32(params + 2, (uint32_t)max);
            have_params = true;
        } else if (!strcmp(w[0], "meal") && k == 3 && nm < S_MEALS_MAX) {
            int64_t id = s_number(w[1], 255);
            unsigned h1, m1, h2, m2;
            char end;
            if (id < 0 || sscanf(w[2], "%2u:%2u-%2u:%2u%c", &h1, &m1, &h2, &m2, &end) != 4 ||
                h1 > 23 || h2 > 23 || m1 > 59 || m2 > 59)
                return -1;
            uint8_t *p = meals + 1 + 5 * nm++;
            p[0] = (uint8_t)id;
            p[1] = (uint8_t)h1;
            p[2] = (uint8_t)m1;
            p[3] = (uint8_t)h2;
            p[4] = (uint8_t)m2;
        } else if (!strcmp(w[0], "fee") && k == 4 && nf < S_FEES_MAX) {
            int64_t meal = s_number(w[1], 255), cls = s_number(w[2], 255),
                    fen = s_number(w[3], UINT32_MAX);
            if (meal < 0 || cls < 0 || fen < 0)
                return -1;
            uint8_t *p = fees + 1 + 6 * nf++;
            p[0] = (uint8_t)meal;
            p[1] = (uint8_t)cls;
            s_put32(p + 2, (uint32_t)fen);
        } else {
            return -1;
        }
    }
    if (!have_params && !nm && !nf)
        return -1;
    if (have_params) {
        memcpy(self->params, params, sizeof(params));
        self->have_params = true;
    }
    if (nm) {
        meals[0] = (uint8_t)nm;
        self->meals_len = 1 + 5 * (size_t)nm;
        memcpy(self->meals, meals, self->meals_len);
    }
    if (nf) {
        fees[0] = (uint8_t)nf;
        self->fees_len = 1 + 6 * (size_t)nf;
        memcpy(self->fees, fees, self->fees_len);
    }
    for (int i = 0; i < self->nterms; i++) {
        s_term_t *t = &self->terms[i];
        if (!t->up)
            continue; /* pushed when it comes back */
        int r = s_push_config(self, dev, t);
        if (r < 0)
            break;
        bus_val_t *b = bus_val_new_map();
        bus_val_map_set_int(b, "terminal", t->addr);
        bus_val_map_set_bool(b, "ok", r == 1);
        node_device_event(dev, "configured", &b);
    }
    return 1;
}

static int s_stats(s_canteen_t *self, node_device_t *dev)
{
    bus_val_t *b = bus_val_new_map();
    bus_val_map_set_int(b, "polls", (int64_t)self->polls);
    bus_val_map_set_int(b, "frames", (int64_t)self->frames);
    bus_val_map_set_int(b, "no_answer", (int64_t)self->no_answer);
    bus_val_map_set_int(b, "bad_checksums", (int64_t)self->bad_checksums);
    bus_val_map_set_int(b, "recv_errors", (int64_t)self->recv_errors);
    bus_val_map_set_int(b, "resyncs", (int64_t)self->resyncs);
    bus_val_map_set_int(b, "stray_bytes", (int64_t)self->stray_bytes);
    bus_val_map_set_int(b, "gaps", (int64_t)self->gaps);
    bus_val_map_set_int(b, "taps", (int64_t)self->taps);
    bus_val_map_set_int(b, "blocklist_version", self->bl_latest);
    bus_val_t *terms = bus_val_new_arr();
    for (int i = 0; i < self->nterms; i++) {
        s_term_t *t = &self->terms[i];
        bus_val_t *m = bus_val_new_map();
        bus_val_map_set_int(m, "terminal", t->addr);
        bus_val_map_set_bool(m, "up", t->up);
        bus_val_map_set_int(m, "blocklist_version", t->bl_version);
        bus_val_map_set_int(m, "last_seq", t->last_seq);
        bus_val_map_set_int(m, "offline", t->offline);
        bus_val_arr_push(terms, &m);
    }
    bus_val_map_set(b, "terminals", &terms);
    node_device_event(dev, "stats", &b);
    return 1;
}

static int s_run(void *state, node_device_t *dev, const node_job_t *job)
{
    s_canteen_t *self = state;
    int r = -1;
    if (strcmp(job->verb, "answer") == 0)
        r = s_answer(self, dev, job);
    else if (strcmp(job->verb, "blocklist") == 0)
        r = s_blocklist(self, dev, job);
    else if (strcmp(job->verb, "collect") == 0)
        r = s_collect(self, dev, job);
    else if (strcmp(job->verb, "fees") == 0)
        r = s_fees(self, dev, job);
    else if (strcmp(job->verb, "stats") == 0)
        r = s_stats(self, dev);
    return r;
}

const node_driver_t canteen_driver = {
    .name = "canteen",
    .kind = "canteen",
    .create = s_create,
    .destroy = s_destroy,
    .attach = s_attach,
    .run = s_run,
    .idle = s_idle,
    .input = s_input,
};
