/*  =========================================================================
    uplink.c - the register's link to the back office (its own thread)

    Why it looks like this. Exactly once comes from two facts, not from
    this code being clever: the journal holds every sale durably before the
    till answers, and sales commits a sale id once and answers a repeat as
    a duplicate. So the uplink may resend anything at any time; what it
    must never do is skip a sale. It uploads strictly in sale order and
    only moves its mark past a sale that sales acknowledged (or reported,
    in a heartbeat's committed_seq, as committed without a hole).

    A sale sales refuses outright (bad_sale, forbidden...) is not skipped
    either: uploads wait on it, resent every backoff_max_ms, and the till
    shows why, because dropping it would lose a sale and leave a hole that
    the Z report would show for ever. Such a refusal means the register and
    the back office disagree on a rule and needs a person.

    The machine's serial ports (with their USB ids, and which device uses
    each) go to the back office with hello and with a heartbeat only when
    the list changed: it is the same list for days. They are listed again
    every S_PORTS_EVERY_MS, not every heartbeat: listing is cheap here
    (about 0.5 ms) but on a machine with legacy 8250 UARTs libserialport
    opens each of them to see whether it exists, which is not something to
    do to a register's ports every two seconds. After each listing the list
    is sent once more even if unchanged, so a back office whose Redis came
    back from an older copy is right again within a minute.
    =========================================================================
*/
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <bus/client.h>
#include <bus/log.h>
#include <bus/proto.h>
#include <bus/pubsub.h>

#include "node/config.h"
#include "node/file.h"
#include "node/journal.h"
#include "node/segment.h"
#include "node/transport.h"
#include "node/uplink.h"

#define S_QUEUE_MAX      1000 /* events waiting to be published */
#define S_MARK_EVERY_MS  500  /* the uploaded mark is written at most this often */
#define S_UPLOADS_A_TURN 200  /* uploads between two looks at events and heartbeats */
#define S_WINDOW         16   /* uploads in flight to one sales instance */
#define S_BACKOFF_MIN_MS 100
#define S_BACKOFF_ANSWERED_MS 1000
#define S_PORTS_EVERY_MS 60000 /* serial ports listed again (a USB adapter plugged in) */
#define S_PATH_MAX       4096

typedef struct s_event {
    struct s_event *next;
    char what[64];
    char type[64];
    bus_val_t *body;
} s_event_t;

struct node_uplink_t {
    node_uplink_cfg_t cfg;
    char *store, *reg, *version, *journal_path, *state_dir;
    char *cert, *server_cert, *pub_ep, *sub_ep, *req_ep;
    char mark_path[S_PATH_MAX], catalog_path[S_PATH_MAX], config_path[S_PATH_MAX];
    pthread_t thread;
    bool started;
    int efd;

    pthread_mutex_t lock; /* guards everything below */
    bool stop;
    uint64_t last_record;
    int64_t last_sale;
    uint64_t segment; /* the till's rotations: on a change the reader is opened again */
    int64_t running_config;
    s_event_t *head, *tail;
    int nevents;
    node_catalog_t *new_catalog;
    bus_val_t *new_config;
    bus_val_t *commands; /* device commands for the till (array), taken by it */
    bus_val_t *devices;  /* the devices' health rows for hello and heartbeats (array) */
    bus_val_t *results;  /* the till's answers, to send with device.result (array) */
    node_uplink_status_t status;

    /* the thread's own */
    bus_client_t *client;
    bus_sub_t *sub;
    bus_pub_t *pub;
    node_journal_reader_t *reader;
    uint64_t reader_segment;
    uint64_t indexed;   /* records looked at for the sale index */
    uint64_t *sale_rec; /* sale_rec[k]: the record of sale k; 0: in an archived segment */
    size_t sale_cap;
    int64_t sales_indexed;
    int64_t acked;
    int64_t resend_from, resend_to;                       /* a range to send again; 0 = none */
    char pinned[BUS_SERVICE_NAME_MAX + BUS_INSTANCE_MAX]; /* the sales instance uploads go to */
    int64_t mark_written, mark_at_ms;
    bool hello_done, want_catalog, want_config, want_commands;
    int64_t catalog_version, config_version, config_asked;
    int64_t next_hb_ms, next_try_ms, backoff_ms;
    bool hb_unanswered; /* the last heartbeat had no answer: the back office was away */
    bool refused;       /* the last failed upload was refused (its long wait needs a person) */
    bool answered;      /* the last failed request had an answer ("not now"), not a timeout */
    bus_val_t *ports;      /* the serial ports as last listed (array); NULL: not known */
    bus_val_t *ports_sent; /* what devices last took (with the devices using them) */
    int64_t next_ports_ms;
    bool ports_refused; /* devices refused a list as bad_request: not sent again */
};

static char *s_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void s_signal(node_uplink_t *self)
{
    uint64_t one = 1;
    ssize_t n = write(self->efd, &one, sizeof(one));
    (void)n;
}

static void s_set_error(node_uplink_t *self, bool online, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_set_error(node_uplink_t *self, bool online, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&self->lock);
    self->status.online = online;
    va_start(ap, fmt);
    vsnprintf(self->status.last_error, sizeof(self->status.last_error), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&self->lock);
}

static void s_online(node_uplink_t *self)
{
    pthread_mutex_lock(&self->lock);
    self->status.online = true;
    pthread_mutex_unlock(&self->lock);
}

/* ---- the uploaded mark ---------------------------------------------------------- */

static int64_t s_mark_read(node_uplink_t *self)
{
    uint8_t *data;
    size_t len;
    char why[256];
    if (node_file_read(self->mark_path, 64, &data, &len, why, sizeof(why)) != 0)
        return 0;
    char *end;
    long long v = strtoll((char *)data, &end, 10);
    bool ok = end != (char *)data && (*end == '\n' || *end == '\0') && v >= 0;
    free(data);
    return ok ? v : 0;
}

static void s_mark_write(node_uplink_t *self, bool now)
{
    int64_t t = bus_mono_ms();
    if (self->acked == self->mark_written || (!now && t - self->mark_at_ms < S_MARK_EVERY_MS))
        return;
    char text[32], why[256];
    int n = snprintf(text, sizeof(text), "%" PRId64 "\n", self->acked);
    if (node_file_write(self->mark_path, text, (size_t)n, 0, why, sizeof(why)) == 0) {
        self->mark_written = self->acked;
        self->mark_at_ms = t;
    } else {
        bus_warn("posnode.uplink", "cannot keep the upload mark: %s", why);
    }
}

static void s_set_acked(node_uplink_t *self, int64_t acked)
{
    self->acked = acked;
    pthread_mutex_lock(&self->lock);
    self->status.acked = acked;
    self->status.unsynced = self->last_sale > acked ? self->last_sale - acked : 0;
    pthread_mutex_unlock(&self->lock);
    s_mark_write(self, false);
}

/* ---- the sale index ---------------------------------------------------------------- */

/*  Look at journal records up to what the till announced; note where each sale is. */
/*  Grow the sale index to hold sale k (new entries 0). */
static int s_index_reserve(node_uplink_t *self, int64_t k)
{
    if ((size_t)k + 2 <= self->sale_cap)
        return 0;
    size_t cap = self->sale_cap ? self->sale_cap : 4096;
    while (cap < (size_t)k + 2)
        cap *= 2;
    uint64_t *p = realloc(self->sale_rec, cap * sizeof(*p));
    if (!p)
        return -1;
    memset(p + self->sale_cap, 0, (cap - self->sale_cap) * sizeof(*p));
    self->sale_rec = p;
    self->sale_cap = cap;
    return 0;
}

static int s_index(node_uplink_t *self)
{
    pthread_mutex_lock(&self->lock);
    uint64_t last = self->last_record, segment = self->segment;
    pthread_mutex_unlock(&self->lock);
    if (segment != self->reader_segment) {
        /* the till archived the journal: what was indexed now lives in the archive */
        node_journal_reader_t *r = node_journal_reader_open(self->journal_path, self->cfg.key);
        if (!r) {
            s_set_error(self, false, "journal: cannot open %s again: %s", self->journal_path,
                        strerror(errno));
            return -1;
        }
        node_journal_reader_destroy(&self->reader);
        self->reader = r;
        self->reader_segment = segment;
        self->indexed = 0;
        for (int64_t k = 1; k <= self->sales_indexed; k++)
            self->sale_rec[k] = 0;
    }
    while (self->indexed < last) {
        node_journal_entry_t e;
        if (node_journal_reader_read(self->reader, self->indexed + 1, &e) != 0) {
            s_set_error(self, false, "journal: %s", node_journal_reader_errstr(self->reader));
            return -1;
        }
        if (e.kind == NODE_JOURNAL_SALE) {
            if (s_index_reserve(self, self->sales_indexed + 1) != 0) {
                node_journal_entry_clear(&e);
                return -1;
            }
            self->sale_rec[++self->sales_indexed] = e.seq;
        } else if (e.kind == NODE_JOURNAL_MARK) {
            bus_limits_t limits = {.max_size = NODE_JOURNAL_PAYLOAD_MAX};
            bus_reject_t reason;
            bus_val_t *doc = bus_val_decode(e.payload, e.size, &limits, &reason);
            int64_t before = 0;
            if (doc && node_segment_is_continue(doc, &before, NULL) &&
                before > self->sales_indexed) {
                /* sales up to `before` are in archives (a restart after a rotation) */
                if (s_index_reserve(self, before) != 0) {
                    bus_val_destroy(&doc);
                    node_journal_entry_clear(&e);
                    return -1;
                }
                self->sales_indexed = before;
            }
            bus_val_destroy(&doc);
        }
        node_journal_entry_clear(&e);
        self->indexed++;
    }
    return 0;
}

/* ---- requests ------------------------------------------------------------------------ */

/*  A request; the reply body (caller destroys) or NULL. *code gets the remote error code
    ("" when the back office did not answer at all). */
static bus_val_t *s_call(node_uplink_t *self, const char *service, const char *method,
                         bus_val_t *body, char *code, size_t code_size)
{
    code[0] = '\0';
    bus_msg_t *rep = bus_client_request(self->client, service, method, &body);
    if (!rep) {
        bus_client_err_t err = bus_client_errcode(self->client);
        self->answered = err == BUS_CLIENT_REMOTE || err == BUS_CLIENT_UNAVAILABLE ||
                         err == BUS_CLIENT_NO_SERVICE;
        if (err == BUS_CLIENT_REMOTE || err == BUS_CLIENT_UNAVAILABLE)
            snprintf(code, code_size, "%s",
                     err == BUS_CLIENT_UNAVAILABLE ? "unavailable"
                                                   : bus_client_remote_code(self->client));
        s_set_error(self, err == BUS_CLIENT_REMOTE, "%s %s: %s", service, method,
                    bus_client_errstr(self->client));
        return NULL;
    }
    s_online(self);
    bus_val_t *out = bus_msg_take_body(rep);
    bus_msg_destroy(&rep);
    return out ? out : bus_val_new_map();
}

/*  Wait before the next try, twice as long as the last up to backoff_max_ms; up to
    S_BACKOFF_ANSWERED_MS only while someone answers "not now" at once (busd with no sales
    instance, a service without Redis): a cheap question, and the backlog goes as soon as the
    service is back. After a refusal the wait is long (it needs a person). */
static void s_backoff(node_uplink_t *self)
{
    int64_t max = self->cfg.backoff_max_ms;
    if (self->answered && !self->refused && max > S_BACKOFF_ANSWERED_MS)
        max = S_BACKOFF_ANSWERED_MS;
    self->backoff_ms = self->backoff_ms ? self->backoff_ms * 2 : S_BACKOFF_MIN_MS;
    if (self->backoff_ms > max)
        self->backoff_ms = max;
    self->next_try_ms = bus_mono_ms() + self->backoff_ms;
}

/* ---- serial ports ------------------------------------------------------------------ */

/*  List the machine's serial ports when due: at start, then every S_PORTS_EVERY_MS. A failed
    listing keeps the last list. */
static void s_ports_scan(node_uplink_t *self)
{
    int64_t now = bus_mono_ms();
    if (now < self->next_ports_ms)
        return;
    self->next_ports_ms = now + S_PORTS_EVERY_MS;
    char why[256];
    size_t total = 0;
    bus_val_t *ports = node_transport_ports(NODE_TRANSPORT_PORTS_MAX, &total, why, sizeof(why));
    if (!ports) {
        bus_warn("posnode.uplink", "serial ports not listed: %s", why);
        return;
    }
    if (total > bus_val_size(ports) && !self->ports)
        bus_warn("posnode.uplink", "%zu serial ports; the back office is told of the first %zu",
                 total, bus_val_size(ports));
    bus_val_destroy(&self->ports);
    self->ports = ports;
    bus_val_destroy(&self->ports_sent); /* sent again once: see the file's comment */
}

/*  The serial device path a device row's transport names ("serial:/dev/ttyUSB0,baud=9600" in
    its stats), resolved through links (/dev/serial/by-id/...) to the name libserialport gives
    the port; "" for a TCP device. */
static void s_device_port(const bus_val_t *row, char *out, size_t size)
{
    const char *spec = bus_val_map_get_str(bus_val_map_get(row, "stats"), "transport");
    out[0] = '\0';
    if (!spec || strncmp(spec, "serial:", 7) != 0)
        return;
    char path[NODE_TRANSPORT_SPEC_MAX];
    snprintf(path, sizeof(path), "%s", spec + 7);
    path[strcspn(path, ",")] = '\0';
    char *real = realpath(path, NULL);
    snprintf(out, size, "%s", real ? real : path);
    free(real);
}

/*  The ports as listed, each with `device`: the first device whose transport is that port.
    NULL when the ports are not known or were refused. */
static bus_val_t *s_ports_now(node_uplink_t *self)
{
    if (!self->ports || self->ports_refused)
        return NULL;
    bus_val_t *ports = bus_val_dup(self->ports);
    pthread_mutex_lock(&self->lock);
    bus_val_t *devices = self->devices ? bus_val_dup(self->devices) : NULL;
    pthread_mutex_unlock(&self->lock);
    for (size_t i = 0; ports && i < bus_val_size(devices); i++) {
        const bus_val_t *d = bus_val_arr_get(devices, i);
        const char *name = bus_val_map_get_str(d, "name");
        char path[PATH_MAX];
        s_device_port(d, path, sizeof(path));
        for (size_t k = 0; name && path[0] && k < bus_val_size(ports); k++) {
            bus_val_t *p = bus_val_arr_get(ports, k);
            const char *port = bus_val_map_get_str(p, "name");
            if (port && strcmp(port, path) == 0 && !bus_val_map_get(p, "device"))
                bus_val_map_set_str(p, "device", name);
        }
    }
    bus_val_destroy(&devices);
    return ports;
}

/*  A hello or heartbeat that carried *ports_p (taken; NULL: none) was answered (ok) or not,
    with the remote error code. A list devices took is not sent again until it changes; one it
    refused is never sent again: a heartbeat must not fail for ever over the ports. */
static void s_ports_answered(node_uplink_t *self, bus_val_t **ports_p, bool ok, const char *code)
{
    if (*ports_p && ok) {
        bus_val_destroy(&self->ports_sent);
        self->ports_sent = *ports_p;
        *ports_p = NULL;
    } else if (*ports_p && strcmp(code, "bad_request") == 0) {
        char why[sizeof(self->status.last_error)];
        pthread_mutex_lock(&self->lock);
        snprintf(why, sizeof(why), "%s", self->status.last_error);
        pthread_mutex_unlock(&self->lock);
        bus_error("posnode.uplink",
                  "a request with the serial ports was refused (%s); they are not sent again", why);
        self->ports_refused = true;
    }
    bus_val_destroy(ports_p);
}

static void s_hello(node_uplink_t *self)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "version", self->version);
    pthread_mutex_lock(&self->lock);
    bus_val_t *devices = self->devices ? bus_val_dup(self->devices) : bus_val_new_arr();
    bus_val_map_set_int(body, "config_version", self->running_config);
    pthread_mutex_unlock(&self->lock);
    bus_val_map_set(body, "devices", &devices);
    bus_val_t *ports = s_ports_now(self);
    bus_val_t *copy = ports ? bus_val_dup(ports) : NULL;
    if (copy)
        bus_val_map_set(body, "ports", &copy);
    char code[64];
    bus_val_t *rep = s_call(self, "devices", "node.hello", body, code, sizeof(code));
    if (rep) {
        self->hello_done = true;
        bus_info("posnode.uplink", "hello answered; uploads from sale %" PRId64, self->acked + 1);
    }
    s_ports_answered(self, &ports, rep != NULL, code);
    bus_val_destroy(&rep);
}

static void s_resend_range(node_uplink_t *self, int64_t from, int64_t to)
{
    if (from < 1 || to < from)
        return;
    if (from <= self->acked) {
        if (!self->resend_from || from < self->resend_from)
            self->resend_from = from;
        if (to > self->resend_to)
            self->resend_to = to > self->acked ? self->acked : to;
    }
    pthread_mutex_lock(&self->lock);
    self->status.resends++;
    pthread_mutex_unlock(&self->lock);
    bus_info("posnode.uplink", "asked to resend sales %" PRId64 "..%" PRId64, from, to);
}

static void s_heartbeat(node_uplink_t *self)
{
    bus_val_t *body = bus_val_new_map();
    pthread_mutex_lock(&self->lock);
    int64_t last_sale = self->last_sale, cfgv = self->running_config;
    pthread_mutex_unlock(&self->lock);
    bus_val_map_set_int(body, "last_seq", last_sale);
    bus_val_map_set_int(body, "unsynced", last_sale > self->acked ? last_sale - self->acked : 0);
    bus_val_map_set_int(body, "config_version", cfgv);
    pthread_mutex_lock(&self->lock);
    bus_val_t *devices = self->devices ? bus_val_dup(self->devices) : NULL;
    pthread_mutex_unlock(&self->lock);
    if (devices)
        bus_val_map_set(body, "devices", &devices);
    bus_val_t *ports = s_ports_now(self);
    if (ports && self->ports_sent && bus_val_equal(ports, self->ports_sent))
        bus_val_destroy(&ports); /* unchanged: devices keeps the list it has */
    bus_val_t *copy = ports ? bus_val_dup(ports) : NULL;
    if (copy)
        bus_val_map_set(body, "ports", &copy);
    char code[64];
    bus_val_t *rep = s_call(self, "devices", "node.heartbeat", body, code, sizeof(code));
    s_ports_answered(self, &ports, rep != NULL, code);
    pthread_mutex_lock(&self->lock);
    self->status.silent = !rep && !code[0];
    pthread_mutex_unlock(&self->lock);
    if (!rep) {
        self->hb_unanswered = !code[0];
        return;
    }
    if (self->hb_unanswered && !self->refused) {
        /* the back office answers again: the backlog goes now, not after a backoff grown
           while it was away (a refusal's long wait, which needs a person, is kept) */
        self->backoff_ms = 0;
        self->next_try_ms = bus_mono_ms();
    }
    self->hb_unanswered = false;
    int64_t committed = 0;
    if (bus_val_map_get_int(rep, "committed_seq", &committed) && committed > self->acked &&
        committed <= last_sale && committed <= self->sales_indexed)
        s_set_acked(self, committed); /* sales holds them all without a hole */
    int64_t latest = 0; /* the store's configuration: converge even if an event was missed */
    if (bus_val_map_get_int(rep, "config_version", &latest) && latest > self->config_version)
        self->want_config = true;
    int64_t waiting = 0;
    if (bus_val_map_get_int(rep, "commands", &waiting) && waiting > 0)
        self->want_commands = true;
    bus_val_t *resend = bus_val_map_get(rep, "resend");
    int64_t from = 0, to = 0;
    if (resend && bus_val_map_get_int(resend, "from", &from) &&
        bus_val_map_get_int(resend, "to", &to))
        s_resend_range(self, from, to);
    bus_val_destroy(&rep);
}

/*  The sale document of sale k from the journal or its archive. 1, or 0 not now (a read error),
    -1 unreadable (blocked), -2 its archive is gone (retention). */
static int s_sale_doc(node_uplink_t *self, int64_t k, bus_val_t **doc)
{
    node_journal_entry_t e;
    char why[256];
    *doc = NULL;
    if (self->sale_rec[k] == 0) {
        /* archived: a resend of an old sale (or the first upload after a restart) */
        if (node_segment_read_sale(self->journal_path, self->cfg.key, k, &e, why, sizeof(why)) !=
            0) {
            s_set_error(self, false, "journal: %s", why);
            return errno == ENOENT ? -2 : 0;
        }
    } else if (node_journal_reader_read(self->reader, self->sale_rec[k], &e) != 0) {
        s_set_error(self, false, "journal: %s", node_journal_reader_errstr(self->reader));
        return 0;
    }
    bus_limits_t limits = {.max_size = NODE_JOURNAL_PAYLOAD_MAX};
    bus_reject_t reason;
    *doc = bus_val_decode(e.payload, e.size, &limits, &reason);
    node_journal_entry_clear(&e);
    return *doc ? 1 : -1;
}

/*  Count sales' answer to the upload of sale k: rep (taken), or NULL with the remote code in
    code ("" when nothing answered). 1 acknowledged, 0 not now, -1 refused (uploads wait). */
static int s_upload_answer(node_uplink_t *self, int64_t k, bus_val_t *rep, const char *code)
{
    if (rep) {
        bool dup = false;
        bus_val_map_get_bool(rep, "duplicate", &dup);
        bus_val_destroy(&rep);
        self->refused = false; /* whatever blocked is through: the short waits apply again */
        pthread_mutex_lock(&self->lock);
        self->status.uploaded++;
        self->status.duplicates += dup;
        self->status.blocked[0] = '\0';
        pthread_mutex_unlock(&self->lock);
        return 1;
    }
    /* unavailable, no_service, internal: not now; anything else is about the sale itself */
    bool refused = code[0] && strcmp(code, "unavailable") != 0 && strcmp(code, "no_service") != 0 &&
                   strcmp(code, "internal") != 0;
    pthread_mutex_lock(&self->lock);
    self->status.upload_errors++;
    if (refused)
        snprintf(self->status.blocked, sizeof(self->status.blocked), "sale %" PRId64 ": %s", k,
                 self->status.last_error);
    pthread_mutex_unlock(&self->lock);
    if (refused) {
        bus_error("posnode.uplink", "sales refuses sale %" PRId64 " (%s); uploads wait on it", k,
                  code);
        return -1;
    }
    return 0;
}

/*  Upload sale k alone (resends). As s_upload_answer, or -2 when its archive is gone. */
static int s_upload(node_uplink_t *self, int64_t k)
{
    bus_val_t *doc;
    int r = s_sale_doc(self, k, &doc);
    if (r <= 0)
        return r;
    char code[64];
    bus_val_t *rep = s_call(self, "sales", "sale.upload", doc, code, sizeof(code));
    return s_upload_answer(self, k, rep, code);
}

/*  A failed turn: wait before the next; after a refusal, wait long (it needs a person). */
static void s_upload_failed(node_uplink_t *self, int r)
{
    self->refused = r < 0;
    if (r < 0)
        self->backoff_ms = self->cfg.backoff_max_ms / 2;
    s_backoff(self);
}

/*  Upload the sales after the mark with up to S_WINDOW requests in flight, to the one sales
    instance that answered last ("sales@<instance>": it answers in the order sent, so sales
    sees them in order); one at a time until an instance has answered. The mark moves over
    the acknowledged prefix only. On any failure the window is given up (late answers are
    dropped as stale) and the next turn starts again after the mark: a resend is harmless. */
static void s_upload_window(node_uplink_t *self)
{
    uint64_t corrs[S_WINDOW];
    int64_t sales[S_WINDOW];
    bool done[S_WINDOW];
    int n = 0, acks = 0;
    int64_t next = self->acked + 1;
    while (n > 0 || (next <= self->sales_indexed && acks < S_UPLOADS_A_TURN)) {
        char target[BUS_SERVICE_NAME_MAX + BUS_INSTANCE_MAX + 2];
        snprintf(target, sizeof(target), "sales%s%s", self->pinned[0] ? "@" : "", self->pinned);
        int window = self->pinned[0] ? S_WINDOW : 1;
        while (n < window && next <= self->sales_indexed && acks + n < S_UPLOADS_A_TURN) {
            bus_val_t *doc;
            int r = s_sale_doc(self, next, &doc);
            if (r == -2 && n == 0) {
                /* retention deletes only acknowledged sales: a mark behind after a crash */
                s_set_acked(self, next++);
                continue;
            }
            if (r <= 0) {
                if (n == 0)
                    return s_upload_failed(self, r);
                break;
            }
            if (bus_client_send(self->client, target, "sale.upload", &doc, &corrs[n]) != 0) {
                s_set_error(self, false, "sales: %s", bus_client_errstr(self->client));
                self->answered = false;
                return s_upload_failed(self, 0);
            }
            sales[n] = next++;
            done[n++] = false;
        }
        if (n == 0)
            return;
        int which;
        bus_msg_t *msg =
            bus_client_recv(self->client, "sales", corrs, n, self->cfg.timeout_ms, &which);
        if (!msg) {
            bus_client_err_t err = bus_client_errcode(self->client);
            const char *code = err == BUS_CLIENT_REMOTE ? bus_client_remote_code(self->client)
                               : err == BUS_CLIENT_UNAVAILABLE ? "unavailable"
                               : err == BUS_CLIENT_NO_SERVICE  ? "no_service"
                                                               : "";
            s_set_error(self, err == BUS_CLIENT_REMOTE || err == BUS_CLIENT_UNAVAILABLE,
                        "sales sale.upload: %s", bus_client_errstr(self->client));
            self->answered = code[0] != '\0';
            self->pinned[0] = '\0';
            return s_upload_failed(
                self, which >= 0 ? s_upload_answer(self, sales[which], NULL, code) : 0);
        }
        const char *src = bus_msg_src(msg);
        if (!self->pinned[0] && src && strlen(src) < sizeof(self->pinned) && !strchr(src, '@'))
            snprintf(self->pinned, sizeof(self->pinned), "%s", src);
        s_online(self);
        s_upload_answer(self, sales[which], bus_msg_take_body(msg), "");
        bus_msg_destroy(&msg);
        done[which] = true;
        acks++;
        int k = 0;
        while (k < n && done[k])
            k++;
        if (k > 0) {
            s_set_acked(self, sales[k - 1]);
            memmove(corrs, corrs + k, (size_t)(n - k) * sizeof(corrs[0]));
            memmove(sales, sales + k, (size_t)(n - k) * sizeof(sales[0]));
            memmove(done, done + k, (size_t)(n - k) * sizeof(done[0]));
            n -= k;
        }
        self->backoff_ms = 0;
    }
}

/*  Upload what is due: a resend range first (one at a time), then the sales after the mark. */
static void s_uploads(node_uplink_t *self)
{
    if (s_index(self) != 0)
        return;
    if (self->acked > self->sales_indexed) {
        /* a mark from another journal: send everything again (sales answers duplicates) */
        bus_warn("posnode.uplink",
                 "upload mark %" PRId64 " is past the journal's last sale %" PRId64
                 "; uploading from sale 1",
                 self->acked, self->sales_indexed);
        s_set_acked(self, 0);
    }
    for (int n = 0; n < S_UPLOADS_A_TURN && self->resend_from > 0; n++) {
        int64_t k = self->resend_from;
        int r = s_upload(self, k);
        if (r == -2)
            /* an archived sale retention already deleted: it cannot be sent again; say so
               loudly and go on with the rest (sales keeps its hole until someone acts) */
            bus_error("posnode.uplink",
                      "sale %" PRId64 " was asked for again but its archive is gone; "
                      "skipping it",
                      k);
        else if (r <= 0)
            return s_upload_failed(self, r);
        self->resend_from = k + 1 > self->resend_to ? 0 : k + 1;
        if (!self->resend_from)
            self->resend_to = 0;
    }
    if (self->resend_from == 0)
        s_upload_window(self);
}

static void s_sync_catalog(node_uplink_t *self)
{
    node_catalog_t *cat = node_catalog_new();
    int64_t changed = 0;
    if (!cat || node_catalog_sync(cat, self->client, &changed) != 0) {
        s_set_error(self, false, "catalog sync: %s", cat ? node_catalog_errstr(cat) : "no memory");
        node_catalog_destroy(&cat);
        s_backoff(self);
        return;
    }
    if (node_catalog_save(cat, self->catalog_path) != 0)
        bus_warn("posnode.uplink", "catalog not saved: %s", node_catalog_errstr(cat));
    self->catalog_version = node_catalog_version(cat);
    self->want_catalog = false;
    bus_info("posnode.uplink", "catalog version %" PRId64 ", %zu items", self->catalog_version,
             node_catalog_count(cat));
    pthread_mutex_lock(&self->lock);
    node_catalog_destroy(&self->new_catalog);
    self->new_catalog = cat;
    pthread_mutex_unlock(&self->lock);
    s_signal(self);
}

static void s_fetch_config(node_uplink_t *self)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_int(body, "known_version", self->config_version);
    char code[64];
    bus_val_t *rep = s_call(self, "devices", "config.get", body, code, sizeof(code));
    if (!rep) {
        if (code[0] && strcmp(code, "unavailable") != 0)
            self->want_config = false; /* an older devices service: keep the saved one */
        else
            s_backoff(self);
        return;
    }
    self->want_config = false;
    bool unchanged = false;
    int64_t v = 0;
    bus_val_map_get_bool(rep, "unchanged", &unchanged);
    bus_val_map_get_int(rep, "version", &v);
    if (unchanged || v <= self->config_version) {
        bus_val_destroy(&rep);
        return;
    }
    char why[256];
    if (node_config_save(rep, self->config_path, why, sizeof(why)) != 0)
        bus_warn("posnode.uplink", "configuration not saved: %s", why);
    self->config_version = v;
    pthread_mutex_lock(&self->lock);
    bus_val_destroy(&self->new_config);
    self->new_config = rep;
    pthread_mutex_unlock(&self->lock);
    s_signal(self);
}

/*  Hand a device command to the till (a copy of cmd). */
static void s_command_in(node_uplink_t *self, const bus_val_t *cmd)
{
    bus_val_t *copy = bus_val_dup(cmd);
    if (!copy)
        return;
    pthread_mutex_lock(&self->lock);
    if (!self->commands)
        self->commands = bus_val_new_arr();
    if (self->commands)
        bus_val_arr_push(self->commands, &copy);
    pthread_mutex_unlock(&self->lock);
    bus_val_destroy(&copy);
    s_signal(self);
}

/*  The commands waiting at devices for this register (a missed event, or a restart). */
static void s_fetch_commands(node_uplink_t *self)
{
    char code[64];
    bus_val_t *rep =
        s_call(self, "devices", "device.pending", bus_val_new_map(), code, sizeof(code));
    if (!rep) {
        if (code[0] && strcmp(code, "unavailable") != 0)
            self->want_commands = false; /* an older devices service */
        else
            s_backoff(self);
        return;
    }
    bus_val_t *list = bus_val_map_get(rep, "commands");
    for (size_t i = 0; i < bus_val_size(list); i++)
        s_command_in(self, bus_val_arr_get(list, i));
    bool more = false;
    bus_val_map_get_bool(rep, "more", &more);
    self->want_commands = more;
    bus_val_destroy(&rep);
}

/*  Send the till's answers; an answer not delivered is kept and sent again. */
static void s_send_results(node_uplink_t *self)
{
    for (;;) {
        pthread_mutex_lock(&self->lock);
        bus_val_t *r = self->results && bus_val_size(self->results) > 0
                           ? bus_val_dup(bus_val_arr_get(self->results, 0))
                           : NULL;
        pthread_mutex_unlock(&self->lock);
        if (!r)
            return;
        char code[64];
        bus_val_t *rep = s_call(self, "devices", "device.result", r, code, sizeof(code));
        if (!rep &&
            (!code[0] || strcmp(code, "unavailable") == 0 || strcmp(code, "no_service") == 0)) {
            s_backoff(self); /* not now: kept */
            return;
        }
        if (!rep)
            bus_warn("posnode.uplink", "devices refused a command's result (%s); dropped", code);
        bus_val_destroy(&rep);
        pthread_mutex_lock(&self->lock);
        bus_val_t *rest = bus_val_new_arr();
        for (size_t i = 1; rest && i < bus_val_size(self->results); i++) {
            bus_val_t *v = bus_val_dup(bus_val_arr_get(self->results, i));
            bus_val_arr_push(rest, &v);
        }
        bus_val_destroy(&self->results);
        self->results = rest;
        pthread_mutex_unlock(&self->lock);
    }
}

static void s_event(node_uplink_t *self, const char *topic, bus_msg_t *msg)
{
    bus_val_t *body = bus_msg_body(msg);
    int64_t v = 0, from = 0, to = 0;
    if (strcmp(topic, "catalog.changed") == 0) {
        if (bus_val_map_get_int(body, "version", &v) && v > self->catalog_version)
            self->want_catalog = true;
    } else if (strncmp(topic, "command.", 8) == 0) {
        char mine[BUS_TOPIC_MAX + 1]; /* a prefix subscription also matches R010 for R01 */
        snprintf(mine, sizeof(mine), "command.%s.%s", self->store, self->reg);
        if (strcmp(topic, mine) == 0)
            s_command_in(self, body);
    } else if (strncmp(topic, "config.", 7) == 0) {
        if (bus_val_map_get_int(body, "version", &v) && v > self->config_version)
            self->want_config = true;
    } else if (bus_val_map_get_int(body, "missing_from", &from) &&
               bus_val_map_get_int(body, "missing_to", &to)) {
        s_resend_range(self, from, to);
    }
}

static void s_publish_queued(node_uplink_t *self)
{
    for (;;) {
        pthread_mutex_lock(&self->lock);
        s_event_t *ev = self->head;
        if (ev) {
            self->head = ev->next;
            if (!self->head)
                self->tail = NULL;
            self->nevents--;
        }
        pthread_mutex_unlock(&self->lock);
        if (!ev)
            return;
        char topic[BUS_TOPIC_MAX + 1];
        bool device = strncmp(ev->what, "device:", 7) == 0;
        snprintf(topic, sizeof(topic), "%s.%s.%s.%s", device ? "device" : "node", self->store,
                 self->reg, device ? ev->what + 7 : ev->what);
        bus_pub_publish(self->pub, topic, ev->type, &ev->body);
        bus_val_destroy(&ev->body);
        free(ev);
    }
}

static void *s_run(void *arg)
{
    node_uplink_t *self = arg;
    self->next_hb_ms = 0;
    for (;;) {
        pthread_mutex_lock(&self->lock);
        bool stop = self->stop;
        pthread_mutex_unlock(&self->lock);
        if (stop)
            break;
        char topic[BUS_TOPIC_MAX + 1];
        bus_msg_t *msg = bus_sub_recv(self->sub, 20, topic, sizeof(topic));
        if (msg) {
            s_event(self, topic, msg);
            bus_msg_destroy(&msg);
        }
        s_publish_queued(self);
        s_ports_scan(self);
        int64_t now = bus_mono_ms();
        if (now >= self->next_hb_ms) {
            self->next_hb_ms = now + self->cfg.heartbeat_ms;
            if (self->hello_done)
                s_heartbeat(self);
        }
        if (now < self->next_try_ms)
            continue;
        if (!self->hello_done) {
            s_hello(self);
            if (!self->hello_done) {
                s_backoff(self);
                continue;
            }
            s_heartbeat(self);
        }
        if (self->want_config)
            s_fetch_config(self);
        if (self->want_commands && bus_mono_ms() >= self->next_try_ms)
            s_fetch_commands(self);
        if (bus_mono_ms() >= self->next_try_ms)
            s_send_results(self);
        if (self->want_catalog && bus_mono_ms() >= self->next_try_ms)
            s_sync_catalog(self);
        if (bus_mono_ms() >= self->next_try_ms)
            s_uploads(self);
        s_mark_write(self, false);
    }
    s_mark_write(self, true);
    return NULL;
}

/* ---- the till's side -------------------------------------------------------------------- */

node_uplink_t *node_uplink_start(const node_uplink_cfg_t *cfg, char *why, size_t size)
{
    node_uplink_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    self->store = s_dup(cfg->store);
    self->reg = s_dup(cfg->reg);
    self->version = s_dup(cfg->version ? cfg->version : "0");
    self->journal_path = s_dup(cfg->journal_path);
    self->state_dir = s_dup(cfg->state_dir);
    self->cert = s_dup(cfg->conn.cert);
    self->server_cert = s_dup(cfg->conn.server_cert);
    self->pub_ep = s_dup(cfg->conn.pub_endpoint);
    self->sub_ep = s_dup(cfg->conn.sub_endpoint);
    self->req_ep = s_dup(cfg->conn.req_endpoint);
    self->cfg.conn.cert = self->cert;
    self->cfg.conn.server_cert = self->server_cert;
    self->cfg.conn.pub_endpoint = self->pub_ep;
    self->cfg.conn.sub_endpoint = self->sub_ep;
    self->cfg.conn.req_endpoint = self->req_ep;
    if (self->cfg.heartbeat_ms <= 0)
        self->cfg.heartbeat_ms = 2000;
    if (self->cfg.timeout_ms <= 0)
        self->cfg.timeout_ms = 2000;
    if (self->cfg.backoff_max_ms <= 0)
        self->cfg.backoff_max_ms = 10000;
    pthread_mutex_init(&self->lock, NULL);
    self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    snprintf(self->mark_path, sizeof(self->mark_path), "%s/uploaded", self->state_dir);
    snprintf(self->catalog_path, sizeof(self->catalog_path), "%s/catalog.replica", self->state_dir);
    snprintf(self->config_path, sizeof(self->config_path), "%s/config.mp", self->state_dir);
    const char *err = NULL;
    char src[64];
    snprintf(src, sizeof(src), "%s.%s", self->store, self->reg);
    self->client = bus_client_new(&self->cfg.conn, src, &err);
    if (self->client) {
        bus_client_set_timeout(self->client, self->cfg.timeout_ms);
        bus_client_set_retries(self->client, 0);
        self->sub = bus_sub_new(&self->cfg.conn, &err);
    }
    if (self->sub)
        self->pub = bus_pub_new(&self->cfg.conn, src, &err);
    self->reader = self->pub ? node_journal_reader_open(self->journal_path, cfg->key) : NULL;
    if (!self->reader || self->efd < 0) {
        snprintf(why, size, "uplink: %s", err ? err : strerror(errno));
        node_uplink_stop(&self);
        return NULL;
    }
    char resend[BUS_TOPIC_MAX + 1], config[BUS_TOPIC_MAX + 1];
    snprintf(resend, sizeof(resend), "register.%s.%s.resend", self->store, self->reg);
    snprintf(config, sizeof(config), "config.%s.", self->store);
    bus_sub_subscribe(self->sub, "catalog.changed");
    bus_sub_subscribe(self->sub, resend);
    bus_sub_subscribe(self->sub, config);
    char command[BUS_TOPIC_MAX + 1];
    snprintf(command, sizeof(command), "command.%s.%s", self->store, self->reg);
    bus_sub_subscribe(self->sub, command);
    self->last_record = cfg->last_record;
    self->last_sale = self->status.last_sale = cfg->last_sale;
    self->running_config = self->config_version = cfg->config_version;
    self->acked = self->mark_written = s_mark_read(self);
    self->status.acked = self->acked;
    self->want_catalog = self->want_config = true;
    if (pthread_create(&self->thread, NULL, s_run, self) != 0) {
        snprintf(why, size, "uplink: cannot start a thread");
        node_uplink_stop(&self);
        return NULL;
    }
    self->started = true;
    return self;
}

void node_uplink_stop(node_uplink_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_uplink_t *self = *self_p;
    if (self->started) {
        pthread_mutex_lock(&self->lock);
        self->stop = true;
        pthread_mutex_unlock(&self->lock);
        pthread_join(self->thread, NULL);
    }
    bus_client_destroy(&self->client);
    bus_sub_destroy(&self->sub);
    bus_pub_destroy(&self->pub);
    node_journal_reader_destroy(&self->reader);
    while (self->head) {
        s_event_t *ev = self->head;
        self->head = ev->next;
        bus_val_destroy(&ev->body);
        free(ev);
    }
    node_catalog_destroy(&self->new_catalog);
    bus_val_destroy(&self->new_config);
    bus_val_destroy(&self->commands);
    bus_val_destroy(&self->results);
    bus_val_destroy(&self->devices);
    bus_val_destroy(&self->ports);
    bus_val_destroy(&self->ports_sent);
    if (self->efd >= 0)
        close(self->efd);
    pthread_mutex_destroy(&self->lock);
    free(self->sale_rec);
    free(self->store);
    free(self->reg);
    free(self->version);
    free(self->journal_path);
    free(self->state_dir);
    free(self->cert);
    free(self->server_cert);
    free(self->pub_ep);
    free(self->sub_ep);
    free(self->req_ep);
    free(self);
    *self_p = NULL;
}

void node_uplink_segment(node_uplink_t *self, uint64_t segment)
{
    pthread_mutex_lock(&self->lock);
    self->segment = segment;
    pthread_mutex_unlock(&self->lock);
}

void node_uplink_journaled(node_uplink_t *self, uint64_t last_record, int64_t last_sale)
{
    pthread_mutex_lock(&self->lock);
    self->last_record = last_record;
    self->last_sale = last_sale;
    self->status.last_sale = last_sale;
    self->status.unsynced = last_sale > self->status.acked ? last_sale - self->status.acked : 0;
    pthread_mutex_unlock(&self->lock);
}

void node_uplink_running_config(node_uplink_t *self, int64_t version)
{
    pthread_mutex_lock(&self->lock);
    self->running_config = version;
    pthread_mutex_unlock(&self->lock);
}

void node_uplink_publish(node_uplink_t *self, const char *what, const char *type,
                         bus_val_t **body_p)
{
    s_event_t *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        bus_val_destroy(body_p);
        return;
    }
    snprintf(ev->what, sizeof(ev->what), "%s", what);
    snprintf(ev->type, sizeof(ev->type), "%s", type);
    ev->body = *body_p;
    *body_p = NULL;
    pthread_mutex_lock(&self->lock);
    if (self->nevents >= S_QUEUE_MAX) { /* events are best effort: the journal has them */
        s_event_t *old = self->head;
        self->head = old->next;
        self->nevents--;
        bus_val_destroy(&old->body);
        free(old);
        if (!self->head)
            self->tail = NULL;
    }
    if (self->tail)
        self->tail->next = ev;
    else
        self->head = ev;
    self->tail = ev;
    self->nevents++;
    pthread_mutex_unlock(&self->lock);
}

node_catalog_t *node_uplink_take_catalog(node_uplink_t *self)
{
    pthread_mutex_lock(&self->lock);
    node_catalog_t *cat = self->new_catalog;
    self->new_catalog = NULL;
    pthread_mutex_unlock(&self->lock);
    return cat;
}

bus_val_t *node_uplink_take_config(node_uplink_t *self)
{
    pthread_mutex_lock(&self->lock);
    bus_val_t *doc = self->new_config;
    self->new_config = NULL;
    pthread_mutex_unlock(&self->lock);
    return doc;
}

int node_uplink_signal_fd(node_uplink_t *self)
{
    return self->efd;
}

void node_uplink_clear_signal(node_uplink_t *self)
{
    uint64_t v;
    ssize_t n = read(self->efd, &v, sizeof(v));
    (void)n;
}

void node_uplink_status(node_uplink_t *self, node_uplink_status_t *out)
{
    pthread_mutex_lock(&self->lock);
    *out = self->status;
    pthread_mutex_unlock(&self->lock);
}

bus_val_t *node_uplink_take_commands(node_uplink_t *self)
{
    pthread_mutex_lock(&self->lock);
    bus_val_t *list = self->commands;
    self->commands = NULL;
    pthread_mutex_unlock(&self->lock);
    return list;
}

void node_uplink_command_result(node_uplink_t *self, bus_val_t **result_p)
{
    pthread_mutex_lock(&self->lock);
    if (!self->results)
        self->results = bus_val_new_arr();
    if (self->results)
        bus_val_arr_push(self->results, result_p);
    pthread_mutex_unlock(&self->lock);
    bus_val_destroy(result_p);
}

void node_uplink_set_devices(node_uplink_t *self, bus_val_t **rows_p)
{
    pthread_mutex_lock(&self->lock);
    bus_val_destroy(&self->devices);
    self->devices = *rows_p;
    *rows_p = NULL;
    pthread_mutex_unlock(&self->lock);
}
