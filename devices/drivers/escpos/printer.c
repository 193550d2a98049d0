/*  =========================================================================
    printer.c - the ESC/POS printer driver (node/device.h)

    Why it looks like this. A receipt must come out once and whole. A
    printer that runs out of paper stops printing but keeps what it has
    been sent and prints it once paper is loaded. So the driver asks the
    real-time status (DLE EOT, answered even while the printer is offline)
    before a job, does not start one while the paper is out or the cover
    open, sends it whole (a write that stalls is resumed from the first
    unsent byte, never from the start), and calls it done only when the
    printer is ready again after the last byte. Nothing sent is sent
    again, so nothing prints twice. Status is never asked in the middle
    of a job: inside a command's data it would be taken as data.

    The one exception is a connection lost in the middle of a job (a TCP
    reset, a printer switched off, a cable pulled). What the driver wrote
    then may or may not have reached the printer: bytes in flight are
    lost with the connection, a printer that restarted has lost its
    buffer, and no status byte can say how much came out. Sending the
    rest would leave a hole in the receipt, so after the reconnect the
    driver ends whatever piece is on the paper with a line saying the
    printing was interrupted and a cut, then prints the whole job again
    headed "REPRINT" (the marking of posnode's reprints): the customer
    always gets one whole receipt, and a piece that may be partial or
    complete is never taken for a second original. The event
    "interrupted" {key, sent} says so.
    =========================================================================
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bus/msg.h>
#include "escpos.h"

#define S_CHUNK     256  /* bytes sent between two status checks */
#define S_STATUS_MS 800  /* how long a status answer may take */
#define S_WRITE_MS  5000 /* a chunk must be taken within this */

/*  Ends the piece of a receipt cut short by a lost connection: init (clears a half-received
    line and the modes), Chinese mode, "*** PRINTING INTERRUPTED / 打印中断 ***", 3 lines fed,
    a partial cut. */
static const char s_interrupted[] = "\x1b@\x1c&\n*** PRINTING INTERRUPTED / "
                                    "\xb4\xf2\xd3\xa1\xd6\xd0\xb6\xcf ***\n\x1b"
                                    "d\x03\x1dV\x01";
/*  Heads the job printed again after it: init, Chinese mode, centred "*** REPRINT / 重印 ***"
    (the job's own init follows). */
static const char s_reprint[] = "\x1b@\x1c&\x1b"
                                "a\x01*** REPRINT / \xd6\xd8\xd3\xa1 ***\n";

typedef struct {
    char key[NODE_DEVICE_KEY_MAX + 1]; /* the job in progress */
    const uint8_t *data;               /* its bytes (the queue keeps them until it ends) */
    bus_buf_t again;                   /* s_reprint and its bytes, after an interruption */
    const uint8_t *out;                /* what goes out: data, or again's */
    size_t len, sent;                  /* of out */
    uint64_t opens;                    /* the transport's opens when the job (re)started */
    bool paper_out;
    int width;         /* width=58|80: the paper (posnode lays receipts out for it) */
    int drawer_sensor; /* 0 none; 1 the drawer is open when pin 3 reads high; -1 when low */
    int drawer_open;   /* the last state reported: -1 not yet */
} s_printer_t;

static void *s_create(const char *options, char *why, size_t size)
{
    s_printer_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->width = 80;
    self->drawer_open = -1;
    const char *p = options ? options : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        int rc = 0;
        if (len > 6 && !strncmp(p, "width=", 6)) {
            rc = node_device_option_int(p, len, "width", 58, 80, &self->width, why, size);
            if (rc == 0 && self->width != 58 && self->width != 80) {
                snprintf(why, size, "option width: 58 or 80 (mm)");
                rc = -1;
            }
        } else if (len == 23 && !strncmp(p, "drawer_sensor=open_high", 23)) {
            self->drawer_sensor = 1;
        } else if (len == 22 && !strncmp(p, "drawer_sensor=open_low", 22)) {
            self->drawer_sensor = -1;
        } else if (len > 0) {
            snprintf(why, size,
                     "unknown option \"%.*s\" (width=58|80, drawer_sensor=open_high|open_low)",
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
    s_printer_t *self = state;
    bus_buf_free(&self->again);
    free(self);
}

/*  One real-time status byte for DLE EOT n; -1 when the printer does not answer. */
static int s_rt_status(node_device_t *dev, int n)
{
    node_transport_t *t = node_device_transport(dev);
    char why[120];
    uint8_t q[3] = {0x10, 0x04, (uint8_t)n}, b;
    node_transport_drain(t);
    if (node_transport_write(t, q, sizeof(q), S_STATUS_MS, why, sizeof(why)) != 0)
        return -1;
    /* a status byte has bits 1 and 4 set and bits 0 and 7 clear: anything else is noise the
       printer (or the line) sent meanwhile, skipped */
    int64_t deadline = bus_mono_ms() + S_STATUS_MS;
    for (int64_t left = S_STATUS_MS; left > 0; left = deadline - bus_mono_ms()) {
        ssize_t got = node_transport_read(t, &b, 1, (int)left, why, sizeof(why));
        if (got < 0)
            return -1;
        if (got == 1 && (b & 0x93) == 0x12)
            return b;
    }
    return -1;
}

/*  Ask the printer how it is; set health. 1 ready, 0 not ready (paper, cover), -1 no answer. */
static int s_check(s_printer_t *self, node_device_t *dev)
{
    int s1 = s_rt_status(dev, 1);
    int s4 = s1 < 0 ? -1 : s_rt_status(dev, 4);
    if (s1 < 0 || s4 < 0) {
        node_device_set_health(dev, NODE_HEALTH_OFFLINE, "no status answer");
        return -1;
    }
    if (self->drawer_sensor) {
        /* DLE EOT 1 bit 2: the drawer kick connector's pin 3, where the drawer's switch is
           wired; which level means open depends on the drawer */
        int open = ((s1 & 0x04) != 0) == (self->drawer_sensor > 0);
        if (open != self->drawer_open) {
            self->drawer_open = open;
            bus_val_t *body = bus_val_new_map();
            bus_val_map_set_bool(body, "open", open);
            node_device_event(dev, "drawer", &body);
        }
    }
    if (s4 & 0x60) {
        self->paper_out = true;
        node_device_set_health(dev, NODE_HEALTH_ERROR, "paper out");
        return 0;
    }
    if (s1 & 0x08) {
        int s2 = s_rt_status(dev, 2);
        node_device_set_health(dev, NODE_HEALTH_ERROR,
                               s2 >= 0 && (s2 & 0x04) ? "cover open" : "offline");
        return 0;
    }
    if (self->paper_out) {
        self->paper_out = false;
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "paper", "loaded");
        node_device_event(dev, "paper", &body);
    }
    if (s4 & 0x0C)
        node_device_set_health(dev, NODE_HEALTH_WARN, "paper near end");
    else
        node_device_set_health(dev, NODE_HEALTH_OK, "");
    return 1;
}

static int s_attach(void *state, node_device_t *dev)
{
    return s_check(state, dev) < 0 ? -1 : 0;
}

static int s_run(void *state, node_device_t *dev, const node_job_t *job)
{
    s_printer_t *self = state;
    if (strcmp(job->verb, "print") != 0 && strcmp(job->verb, "drawer") != 0)
        return -1;
    node_transport_t *t = node_device_transport(dev);
    char why[120];
    if (strcmp(job->verb, "drawer") == 0) {
        /* real time (DLE DC4): the printer takes it even offline or out of paper */
        if (node_transport_write(t, job->data, job->len, S_STATUS_MS, why, sizeof(why)) != 0)
            return node_transport_is_open(t) ? -1 : 0;
        return 1;
    }
    if (strcmp(self->key, job->key) != 0 || self->data != job->data) {
        /* a new job (the queue hands the same one back, same bytes, until it ends) */
        snprintf(self->key, sizeof(self->key), "%s", job->key);
        self->data = job->data;
        self->out = job->data;
        self->len = job->len;
        self->sent = 0;
        self->opens = node_transport_stats(t)->opens;
    }
    if (self->sent > 0 && node_transport_stats(t)->opens != self->opens) {
        /* reconnected mid-job: how much reached the paper is unknown (file header); end that
           piece as interrupted, then the whole job again, marked as a reprint */
        if (node_transport_write(t, s_interrupted, sizeof(s_interrupted) - 1, S_WRITE_MS, why,
                                 sizeof(why)) != 0)
            return 0;
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "key", job->key);
        bus_val_map_set_int(body, "sent", (int64_t)self->sent);
        node_device_event(dev, "interrupted", &body);
        if (self->out == job->data) {
            self->again.len = 0;
            if (bus_buf_append(&self->again, s_reprint, sizeof(s_reprint) - 1) != 0 ||
                bus_buf_append(&self->again, job->data, job->len) != 0)
                return 0; /* out of memory: tried again */
            self->out = self->again.data;
            self->len = self->again.len;
        }
        self->opens = node_transport_stats(t)->opens;
        self->sent = 0;
    }
    /* Status is asked only between jobs: a DLE EOT inside a command's bytes (a QR code's data)
       would be taken as its data by many printers. A printer that runs out of paper in the
       middle keeps what it got and prints it when paper is loaded; the job is done only when
       the printer is ready again after its last byte. */
    if (self->sent == 0 && s_check(self, dev) <= 0)
        return 0; /* not started: paper, cover, or the printer gone */
    if (self->sent == 0)
        self->opens = node_transport_stats(t)->opens; /* the connection it starts on */
    while (self->sent < self->len) {
        size_t n = self->len - self->sent < S_CHUNK ? self->len - self->sent : S_CHUNK;
        int w = node_transport_write(t, self->out + self->sent, n, S_WRITE_MS, why, sizeof(why));
        self->sent += node_transport_last_written(t); /* what went out stays sent */
        if (w != 0) {
            node_device_set_health(dev, NODE_HEALTH_OFFLINE, why);
            return 0;
        }
    }
    if (s_check(self, dev) <= 0)
        return 0; /* sent; printed once the printer is ready again */
    self->key[0] = '\0';
    self->data = self->out = NULL;
    self->len = self->sent = 0;
    return 1;
}

static void s_idle(void *state, node_device_t *dev)
{
    if (s_check(state, dev) < 0)
        node_transport_close(node_device_transport(dev)); /* reopened with backoff */
}

const node_driver_t escpos_printer_driver = {
    .name = "escpos",
    .kind = "printer",
    .create = s_create,
    .destroy = s_destroy,
    .attach = s_attach,
    .run = s_run,
    .idle = s_idle,
};
