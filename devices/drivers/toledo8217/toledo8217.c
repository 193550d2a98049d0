/*  =========================================================================
    toledo8217.c - the Mettler Toledo 8217 scale driver (node/device.h)

    Why it looks like this. A sale may only take a stable weight: the
    8217 answers W with the weight (STX "01.234" CR, kg with 3 decimals)
    only when the scale is at rest, and with a status (STX '?' s CR)
    while it moves, is overloaded or under zero. So the driver takes a
    weight only from a weight reply, and weigh asks again about every
    0.5 s while the scale moves, for a bounded time: a cashier waits a
    few seconds at most, and the device's thread is never held longer.

    The line is plain 7-bit ASCII without checksums, so anything may
    arrive: noise, a reply cut short, a reply split across reads, a late
    answer to an earlier question. Every question starts with the input
    drained; the reply is assembled byte by byte by a small state
    machine that waits for STX, collects up to CR, and throws away (and
    counts: the health detail) whatever is not a well-formed frame. A
    weight is parsed as digits, never as floating point: grams are
    integers like money.

    The status byte carries bit 6 (0x40) set, as on the real scale, so it
    is a printable character and never mistaken for STX or CR; only its
    low six bits mean something (see S_ST_*).
    =========================================================================
*/
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bus/msg.h>
#include "toledo8217.h"

#define S_STX          0x02
#define S_CR           0x0D
#define S_FRAME_MAX    16   /* bytes between STX and CR; a longer run is noise */
#define S_REPLY_MS     400  /* a reply to W must come within this */
#define S_ATTACH_MS    1000 /* the first reply after opening may take a little longer */
#define S_WRITE_MS     500  /* one command byte must be taken within this */
#define S_WEIGH_MS     5000 /* weigh gives up without a stable weight after this */
#define S_POLL_MS      500  /* weigh asks this often */
#define S_GRAMS_DIGITS 5    /* integer digits of kg accepted: up to 99999.999 kg */

/* Status bits (the low six bits of the byte after '?'). */
#define S_ST_MOVING       0x01
#define S_ST_OVER         0x02
#define S_ST_NEGATIVE     0x04
#define S_ST_OUTSIDE_ZERO 0x08
#define S_ST_CENTRE_ZERO  0x10
#define S_ST_NET          0x20

typedef enum {
    S_REPLY_GONE = -1, /* the transport failed (closed) */
    S_REPLY_NONE = 0,  /* no well-formed reply in time */
    S_REPLY_WEIGHT,
    S_REPLY_STATUS,
} s_reply_kind_t;

typedef struct {
    s_reply_kind_t kind;
    int64_t grams; /* S_REPLY_WEIGHT */
    int status;    /* S_REPLY_STATUS: S_ST_* bits */
} s_reply_t;

typedef struct {
    int weigh_ms, poll_ms;
    uint8_t frame[S_FRAME_MAX];
    size_t flen;
    bool in_frame;
    bool junk;     /* stray bytes seen since the last frame or question */
    uint64_t bad;  /* malformed replies and runs of stray bytes */
    bool weighing; /* a weigh lost its transport: run again (the same job) after reopening */
    int64_t weigh_deadline;
} s_scale_t;

static void s_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void *s_create(const char *options, char *why, size_t size)
{
    s_scale_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->weigh_ms = S_WEIGH_MS;
    self->poll_ms = S_POLL_MS;
    const char *p = options ? options : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        int rc = 0;
        if (len > 9 && !strncmp(p, "weigh_ms=", 9))
            rc = node_device_option_int(p, len, "weigh_ms", 500, 60000, &self->weigh_ms, why, size);
        else if (len > 8 && !strncmp(p, "poll_ms=", 8))
            rc = node_device_option_int(p, len, "poll_ms", 100, 5000, &self->poll_ms, why, size);
        else if (len > 0) {
            snprintf(why, size, "unknown option \"%.*s\" (weigh_ms=N, poll_ms=N)", (int)len, p);
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

/*  A frame's body (between STX and CR) as a reply; false when it is malformed. */
static bool s_parse(const uint8_t *body, size_t len, s_reply_t *reply)
{
    if (len >= 1 && body[0] == '?') {
        if (len != 2)
            return false;
        reply->kind = S_REPLY_STATUS;
        reply->status = body[1] & 0x3F;
        return true;
    }
    size_t i = 0;
    while (i < len && body[i] == ' ')
        i++;
    int64_t kg = 0, g = 0;
    size_t digits = 0;
    for (; i < len && body[i] >= '0' && body[i] <= '9'; i++, digits++)
        kg = kg * 10 + (body[i] - '0');
    if (digits < 1 || digits > S_GRAMS_DIGITS || i + 4 != len || body[i] != '.')
        return false;
    for (i++; i < len; i++) {
        if (body[i] < '0' || body[i] > '9')
            return false;
        g = g * 10 + (body[i] - '0');
    }
    reply->kind = S_REPLY_WEIGHT;
    reply->grams = kg * 1000 + g;
    return true;
}

static void s_junk_end(s_scale_t *self)
{
    if (self->junk) {
        self->bad++;
        self->junk = false;
    }
}

/*  Take one byte; true when it completes a well-formed reply (then in reply). */
static bool s_feed(s_scale_t *self, uint8_t b, s_reply_t *reply)
{
    if (b == S_STX) {
        if (self->in_frame)
            self->bad++; /* a frame cut short by the next one */
        s_junk_end(self);
        self->in_frame = true;
        self->flen = 0;
        return false;
    }
    if (!self->in_frame) {
        self->junk = true;
        return false;
    }
    if (b == S_CR) {
        self->in_frame = false;
        if (s_parse(self->frame, self->flen, reply))
            return true;
        self->bad++;
        return false;
    }
    if (self->flen == sizeof(self->frame)) {
        self->bad++;
        self->in_frame = false;
        self->junk = true;
        return false;
    }
    self->frame[self->flen++] = b;
    return false;
}

/*  Send the one-byte command cmd and wait up to timeout_ms for a well-formed reply. The kind of
    reply (S_REPLY_GONE when the transport failed and was closed). */
static s_reply_kind_t s_ask(s_scale_t *self, node_device_t *dev, char cmd, int timeout_ms,
                            s_reply_t *reply)
{
    node_transport_t *t = node_device_transport(dev);
    char why[120];
    node_transport_drain(t);
    self->in_frame = false;
    self->flen = 0;
    memset(reply, 0, sizeof(*reply));
    if (node_transport_write(t, &cmd, 1, S_WRITE_MS, why, sizeof(why)) != 0)
        return node_transport_is_open(t) ? S_REPLY_NONE : S_REPLY_GONE;
    int64_t deadline = bus_mono_ms() + timeout_ms;
    for (int64_t left = timeout_ms; left > 0; left = deadline - bus_mono_ms()) {
        uint8_t buf[64];
        ssize_t n = node_transport_read(t, buf, sizeof(buf), (int)left, why, sizeof(why));
        if (n < 0)
            return S_REPLY_GONE;
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (s_feed(self, buf[i], reply))
                return reply->kind; /* bytes after it are drained before the next question */
    }
    if (self->in_frame)
        self->bad++; /* a reply cut short */
    self->in_frame = false;
    s_junk_end(self);
    return S_REPLY_NONE;
}

/*  Health from a well-formed reply. */
static void s_health(s_scale_t *self, node_device_t *dev, const s_reply_t *reply)
{
    if (reply->kind == S_REPLY_STATUS && (reply->status & S_ST_OVER)) {
        node_device_set_health(dev, NODE_HEALTH_WARN, "over capacity");
        return;
    }
    char detail[64] = "";
    if (self->bad)
        snprintf(detail, sizeof(detail), "%" PRIu64 " malformed replies", self->bad);
    node_device_set_health(dev, NODE_HEALTH_OK, detail);
}

static void s_offline(node_device_t *dev)
{
    node_device_set_health(dev, NODE_HEALTH_OFFLINE, "no answer");
    node_transport_close(node_device_transport(dev)); /* reopened with backoff */
}

static int s_attach(void *state, node_device_t *dev)
{
    s_scale_t *self = state;
    s_reply_t reply;
    if (s_ask(self, dev, 'W', S_ATTACH_MS, &reply) <= S_REPLY_NONE)
        return -1;
    s_health(self, dev, &reply);
    return 0;
}

static void s_publish(node_device_t *dev, int64_t grams, const char *reason)
{
    bus_val_t *body = bus_val_new_map();
    if (!reason)
        bus_val_map_set_int(body, "grams", grams);
    bus_val_map_set_bool(body, "stable", reason == NULL);
    if (reason)
        bus_val_map_set_str(body, "reason", reason);
    node_device_event(dev, "weight", &body);
}

/*  Poll W until a stable positive weight (1) or a reason not to take one (-1). A weigh whose
    transport fails (the scale unplugged and plugged in again) is not done yet (0): the device
    layer reopens the transport and runs the same job again, which carries on within the time
    the job had from its start. */
static int s_weigh(s_scale_t *self, node_device_t *dev)
{
    if (!self->weighing)
        self->weigh_deadline = bus_mono_ms() + self->weigh_ms;
    self->weighing = false;
    int64_t deadline = self->weigh_deadline;
    const char *reason = "no answer";
    bool answered = false;
    while (!node_device_stopping(dev)) {
        int64_t asked = bus_mono_ms();
        s_reply_t reply;
        s_reply_kind_t kind = s_ask(self, dev, 'W', S_REPLY_MS, &reply);
        if (kind == S_REPLY_GONE) {
            node_device_set_health(dev, NODE_HEALTH_OFFLINE, "no answer");
            if (bus_mono_ms() < deadline && !node_device_stopping(dev)) {
                self->weighing = true;
                return 0;
            }
            answered = false;
            reason = "no answer";
            break;
        }
        if (kind != S_REPLY_NONE) {
            answered = true;
            s_health(self, dev, &reply);
        }
        if (kind == S_REPLY_WEIGHT) {
            if (reply.grams > 0) {
                s_publish(dev, reply.grams, NULL);
                return 1;
            }
            reason = "no stable weight"; /* nothing on the scale yet */
        } else if (kind == S_REPLY_STATUS) {
            if (reply.status & S_ST_OVER) {
                reason = "overload";
                break;
            }
            if (reply.status & S_ST_NEGATIVE) {
                reason = "negative";
                break;
            }
            reason = reply.status & S_ST_MOVING ? "moving" : "no stable weight";
        }
        int64_t next = asked + self->poll_ms;
        if (next >= deadline)
            break;
        s_sleep_ms(next - bus_mono_ms());
    }
    if (!answered)
        s_offline(dev); /* attach asks again once it is reopened */
    s_publish(dev, 0, reason);
    return -1;
}

static int s_run(void *state, node_device_t *dev, const node_job_t *job)
{
    s_scale_t *self = state;
    char cmd;
    if (strcmp(job->verb, "weigh") == 0)
        return s_weigh(self, dev);
    else if (strcmp(job->verb, "zero") == 0)
        cmd = 'Z';
    else if (strcmp(job->verb, "tare") == 0)
        cmd = 'T';
    else if (strcmp(job->verb, "clear_tare") == 0)
        cmd = 'C';
    else
        return -1;
    char why[120];
    node_transport_t *t = node_device_transport(dev);
    /* Z, T and C have no reply: a TCP connection the scale closed still takes the byte (the
       reset comes after) and it would be lost. Draining first sees the end (the transport
       closes itself); the job then waits for the reopen. */
    node_transport_drain(t);
    if (!node_transport_is_open(t)) {
        node_device_set_health(dev, NODE_HEALTH_OFFLINE, "no answer");
        return 0;
    }
    if (node_transport_write(t, &cmd, 1, S_WRITE_MS, why, sizeof(why)) != 0) {
        node_device_set_health(dev, NODE_HEALTH_OFFLINE, why);
        return 0; /* tried again once the scale is back */
    }
    return 1;
}

static void s_idle(void *state, node_device_t *dev)
{
    s_scale_t *self = state;
    s_reply_t reply;
    s_reply_kind_t kind = s_ask(self, dev, 'W', S_REPLY_MS, &reply);
    if (kind > S_REPLY_NONE)
        s_health(self, dev, &reply);
    else
        s_offline(dev);
}

const node_driver_t toledo8217_driver = {
    .name = "toledo8217",
    .kind = "scale",
    .create = s_create,
    .destroy = s_destroy,
    .attach = s_attach,
    .run = s_run,
    .idle = s_idle,
};
