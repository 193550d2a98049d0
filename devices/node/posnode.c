/*  =========================================================================
    posnode - the register (收银机): sells offline-first, journals every sale,
    forwards it exactly once

    posnode [--config FILE] --store S --register R --cert FILE --server-cert FILE [options]

    The till (node/till.h) answers cashier commands from stdin and from a
    local socket (--socket PATH), one line in, one JSON line out
    (docs/posnode.md). The uplink (node/uplink.h) runs on its own thread and
    talks to the back office: uploads, heartbeats, the catalog replica and
    the configuration. Started with no back office reachable, posnode sells
    from the catalog and configuration it saved last time.

    Files in --state-dir: journal (the register's journal), journal.key
    (its Ed25519 key, made on first start; journal.pub beside it for
    auditors), uploaded (how far uploads got), catalog.replica, config.mp,
    and posnode.log when --tui runs with stderr on the terminal.

    --tui puts a screen for the cashier on the terminal instead of the
    JSON lines on stdin (devices/node/tui.h, docs/posnode-tui.md).
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <bus/bus.h>
#include <bus/metrics.h>
#include <node/cashier.h>
#include <node/canteen.h>
#include <node/catalog.h>
#include <node/config.h>
#include <node/key.h>
#include <node/till.h>
#include <node/uplink.h>
#include <pos/sale.h>

#include <drivers.h>
#include <escpos.h>
#include <node/device.h>
#include <node/file.h>

#include "tui.h"

#define S_PROGRAM        "posnode"
#define S_CLIENTS        8 /* local socket connections at once */
#define S_PATH_MAX       4096
#define S_IN_MAX         (NODE_TILL_LINE_MAX + 2)
#define S_TUI_REFRESH_MS 1000 /* the screen asks the till for its state this often */
#define S_DEVICES_MAX    16   /* peripherals of one register */
#define S_INBOX_MAX      64   /* scans and weights waiting for the till's thread */
#define S_WEIGH_MS       7000 /* a weight asked for is taken only this long */
#define S_SV_PULL_BEATS  15   /* the card blocklist is pulled every this many heartbeats */

static const bus_opt_t s_options[] = {
    {"store", BUS_OPT_STR, NULL, 0, 0, "store id (must match the register's certificate)"},
    {"register", BUS_OPT_STR, NULL, 0, 0, "register id (must match the register's certificate)"},
    {"state-dir", BUS_OPT_STR, "var/posnode", 0, 0,
     "journal, journal key, upload mark, catalog replica and configuration live here"},
    {"socket", BUS_OPT_STR, "", 0, 0, "a local (unix) socket for the line interface; empty: none"},
    {"stdin", BUS_OPT_BOOL, "true", 0, 0, "read cashier commands from stdin (answers on stdout)"},
    {"tui", BUS_OPT_BOOL, "false", 0, 0,
     "a screen for the cashier on the terminal instead of --stdin (docs/posnode-tui.md)"},
    {"node-heartbeat-ms", BUS_OPT_INT, "2000", 100, 600000, "node.heartbeat interval"},
    {"request-timeout-ms", BUS_OPT_INT, "1500", 100, 600000,
     "per request to the back office (uploads, park, recall, returns)"},
    {"backoff-max-ms", BUS_OPT_INT, "10000", 100, 3600000,
     "longest wait between two upload attempts while the back office is away"},
    {"devices", BUS_OPT_STR, "", 0, 0,
     "a file naming the register's peripherals, one per line: NAME DRIVER TRANSPORT [OPTIONS] "
     "(docs/posnode.md); empty: none"},
    {"canteen-sku", BUS_OPT_STR, "CANTEEN", 0, 0,
     "the catalog item a canteen terminal's tap sells (at the tap's amount; a plain "
     "\"Canteen\" line when the catalog has no such item)"},
    {"canteen-fees", BUS_OPT_STR, "", 0, 0,
     "a file with the canteen terminals' settings, meal periods and fee rules, one per line: "
     "params WAIT_MS OFFLINE_MAX_FEN; meal ID HH:MM-HH:MM; fee MEAL CARD_CLASS FEN "
     "(docs/posnode.md); empty: none"},
    {"journal-retention-days", BUS_OPT_INT, "90", 0, 36500,
     "archived journal segments (closed by a Z report, every sale acknowledged) are deleted "
     "after this many days; 0: kept for ever"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    int fd;
    char buf[S_IN_MAX];
    size_t len;
    bool overflow;
} s_input_t;

typedef struct {
    bus_config_t *config;
    bus_conn_cfg_t conn;
    const char *store, *reg;
    char dir[S_PATH_MAX];
    node_key_t *key;
    node_session_t *session;
    node_catalog_t *catalog;
    node_svcard_t *svcards; /* stored-value cards: blocklist, offline caps (svcards.mp) */
    node_till_t *till;
    node_canteen_t *canteen; /* canteen terminals' taps, collects and blocklist */
    bus_metrics_t *metrics;  /* --metrics-listen: Prometheus text on GET /metrics */
    node_uplink_t *uplink;
    bus_client_t *client; /* the till's own, for park, recall and returns */
    int listen_fd;
    s_input_t in[S_CLIENTS + 1];           /* [0]: stdin */
    node_tui_t *tui;                       /* --tui */
    node_device_t *devices[S_DEVICES_MAX]; /* running: --devices and the configuration's */
    node_device_cfg_t device_cfgs[S_DEVICES_MAX];
    int ndevices;
    node_device_cfg_t file_devices[S_DEVICES_MAX];
    int nfile_devices;
    int64_t devices_told_ms; /* when the uplink last got their health */
    int dev_efd;             /* devices -> the till's thread: scans and weights to act on */
    pthread_mutex_t dev_lock;
    bus_val_t *dev_inbox;                       /* [{device, event, body}] */
    char weigh_code[NODE_CATALOG_CODE_MAX + 1]; /* a weighed item waiting for the scale */
    int64_t weigh_until_ms;                     /* after this a weight is stale: ignored */
    int64_t inbox_dropped;                      /* scans past the inbox's bound */
    int64_t printed;      /* the last sale whose receipt is printed (file "printed") */
    int64_t tui_shown_ms; /* when the screen last got an answer (zclock_mono) */
} s_node_t;

/* ---- hooks for the till --------------------------------------------------------- */

static bus_val_t *s_request(void *arg, const char *service, const char *method, bus_val_t **body,
                            bool *offline, char *err, size_t size)
{
    s_node_t *self = arg;
    *offline = false;
    if (self->uplink) {
        /* heartbeats go unanswered: asking would block the till for a whole request timeout
           to learn the same; the first answered heartbeat opens the way again */
        node_uplink_status_t st;
        node_uplink_status(self->uplink, &st);
        if (st.silent) {
            *offline = true;
            bus_val_destroy(body);
            snprintf(err, size, "the back office cannot be reached (its heartbeats go "
                                "unanswered)");
            return NULL;
        }
    }
    bus_msg_t *rep = bus_client_request(self->client, service, method, body);
    if (!rep) {
        bus_client_err_t e = bus_client_errcode(self->client);
        *offline = e != BUS_CLIENT_REMOTE;
        if (e == BUS_CLIENT_REMOTE)
            snprintf(err, size, "%s: %s", bus_client_remote_code(self->client),
                     bus_client_errstr(self->client));
        else
            snprintf(err, size, "the back office cannot be reached (%s)",
                     bus_client_errstr(self->client));
        return NULL;
    }
    bus_val_t *out = bus_msg_take_body(rep);
    bus_msg_destroy(&rep);
    return out ? out : bus_val_new_map();
}

static int64_t s_acked(void *arg)
{
    s_node_t *self = arg;
    node_uplink_status_t st;
    if (!self->uplink)
        return -1;
    node_uplink_status(self->uplink, &st);
    return st.acked;
}

static void s_publish(void *arg, const char *what, const char *type, bus_val_t **body)
{
    s_node_t *self = arg;
    if (self->uplink)
        node_uplink_publish(self->uplink, what, type, body);
}

/* ---- configuration and catalog -------------------------------------------------- */

static void s_devices_apply(s_node_t *self, const node_config_t *cfg);

static void s_apply_config(s_node_t *self, bus_val_t *doc, const char *from)
{
    node_config_t cfg;
    char why[256];
    node_config_init(&cfg);
    if (node_config_parse(doc, &cfg, why, sizeof(why)) != 0) {
        bus_warn("posnode.config", "refused the configuration from %s: %s", from, why);
    } else if (cfg.version < node_till_config_version(self->till)) {
        bus_info("posnode.config", "ignored version %" PRId64 " from %s: running %" PRId64,
                 cfg.version, from, node_till_config_version(self->till));
    } else if (node_till_set_config(self->till, &cfg, why, sizeof(why)) != 0) {
        bus_warn("posnode.config", "refused the configuration from %s: %s", from, why);
    } else {
        bus_info("posnode.config",
                 "running configuration version %" PRId64 " (%s): %zu cashiers, "
                 "%d promotions",
                 cfg.version, from, cfg.ncashiers, cfg.npromos + cfg.nmember_prices);
        if (self->uplink)
            node_uplink_running_config(self->uplink, cfg.version);
        if (self->dev_efd > 0) /* devices started: apply their settings now */
            s_devices_apply(self, &cfg);
    }
    node_config_clear(&cfg);
}

static void s_take_updates(s_node_t *self)
{
    node_uplink_clear_signal(self->uplink);
    node_catalog_t *cat = node_uplink_take_catalog(self->uplink);
    if (cat) {
        node_till_set_catalog(self->till, cat);
        node_catalog_destroy(&self->catalog);
        self->catalog = cat;
    }
    bus_val_t *doc = node_uplink_take_config(self->uplink);
    if (doc) {
        s_apply_config(self, doc, "the devices service");
        bus_val_destroy(&doc);
    }
    bus_val_t *commands = node_uplink_take_commands(self->uplink);
    for (size_t i = 0; i < bus_val_size(commands); i++) {
        bus_val_t *result = node_till_device_command(self->till, bus_val_arr_get(commands, i));
        if (result)
            node_uplink_command_result(self->uplink, &result);
    }
    bus_val_destroy(&commands);
}

/* ---- the line interface ----------------------------------------------------------- */

static void s_write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

/* ---- peripherals ----------------------------------------------------------------------- */

static void s_displays(s_node_t *self, const bus_val_t *reply);

static void s_printed(s_node_t *self, const bus_val_t *body);

/*  A canteen line's event (docs/canteen-protocol.md): the canteen module's business. */
static bool s_canteen_event(const char *event)
{
    static const char *const names[] = {"tap",      "offline_tx",      "collected",
                                        "terminal", "blocklist_stale", "answered"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(event, names[i]) == 0)
            return true;
    return false;
}

static void s_device_event(void *arg, const char *device, const char *event, bus_val_t **body)
{
    s_node_t *self = arg;
    if (strcmp(event, "done") == 0)
        s_printed(self, *body);
    bool canteen = s_canteen_event(event);
    if (strcmp(event, "scan") == 0 || strcmp(event, "weight") == 0 ||
        strcmp(event, "intermediate") == 0 || strcmp(event, "result") == 0 ||
        strcmp(event, "status") == 0 || canteen) {
        /* for the till: handed to its thread (this is the device's); a card terminal's
           results and a canteen line's taps are never dropped for a flooding scanner (the
           bound is for scans) */
        bus_val_t *item = bus_val_new_map();
        bus_val_map_set_str(item, "device", device);
        bus_val_map_set_str(item, "event", event);
        bus_val_map_set_int(item, "at_ms", bus_mono_ms());
        bus_val_t *copy = *body ? bus_val_dup(*body) : bus_val_new_map();
        bus_val_map_set(item, "body", &copy);
        pthread_mutex_lock(&self->dev_lock);
        if (!self->dev_inbox)
            self->dev_inbox = bus_val_new_arr();
        if (bus_val_size(self->dev_inbox) < S_INBOX_MAX || strcmp(event, "result") == 0 ||
            canteen)
            bus_val_arr_push(self->dev_inbox, &item);
        else
            self->inbox_dropped++;
        pthread_mutex_unlock(&self->dev_lock);
        bus_val_destroy(&item);
        uint64_t one = 1;
        ssize_t w = write(self->dev_efd, &one, sizeof(one));
        (void)w;
    }
    char what[128];
    snprintf(what, sizeof(what), "device:%s.%s", device, event);
    if (self->uplink)
        node_uplink_publish(self->uplink, what, "device.event", body);
    bus_val_destroy(body);
}

/*  Read the --devices file into self->file_devices. 0, or -1 (logged). */
static int s_devices_file(s_node_t *self)
{
    const char *path = bus_config_str(self->config, "devices");
    if (!path || !*path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        bus_error("posnode.devices", "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int n = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        n++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        node_device_cfg_t d = {0};
        int got =
            sscanf(line, "%32s %32s %255s %255[^\n]", d.name, d.driver, d.transport, d.options);
        if (got <= 0)
            continue;
        if (got < 3 || !drivers_find(d.driver) || self->nfile_devices == S_DEVICES_MAX) {
            bus_error("posnode.devices",
                      "%s:%d: NAME DRIVER TRANSPORT [OPTIONS] with a known "
                      "driver, at most %d devices",
                      path, n, S_DEVICES_MAX);
            rc = -1;
        } else {
            self->file_devices[self->nfile_devices++] = d;
        }
    }
    fclose(f);
    return rc;
}

static bool s_same_device(const node_device_cfg_t *a, const node_device_cfg_t *b)
{
    return !strcmp(a->name, b->name) && !strcmp(a->driver, b->driver) &&
           !strcmp(a->transport, b->transport) && !strcmp(a->options, b->options);
}

/*  Run the devices of the --devices file and of the configuration (which wins for a name both
    give): a device whose settings did not change keeps running; a changed one is stopped and
    started with its new settings; one no longer named is stopped. No restart of posnode. */
static void s_devices_apply(s_node_t *self, const node_config_t *cfg)
{
    node_device_cfg_t want[2 * S_DEVICES_MAX];
    int nwant = 0;
    for (int i = 0; i < self->nfile_devices; i++)
        want[nwant++] = self->file_devices[i];
    for (int i = 0; cfg && i < cfg->ndevices; i++) {
        int k = 0;
        while (k < nwant && strcmp(want[k].name, cfg->devices[i].name) != 0)
            k++;
        if (k == nwant && nwant == S_DEVICES_MAX)
            continue;
        want[k] = cfg->devices[i];
        if (k == nwant)
            nwant++;
    }
    for (int i = 0; i < self->ndevices;) { /* stop what is gone or changed */
        int k = 0;
        while (k < nwant && !s_same_device(&want[k], &self->device_cfgs[i]))
            k++;
        if (k < nwant) {
            i++;
            continue;
        }
        bus_info("posnode.devices", "%s: stopped (its settings changed or it was removed)",
                 self->device_cfgs[i].name);
        node_device_stop(&self->devices[i]);
        self->ndevices--;
        self->devices[i] = self->devices[self->ndevices];
        self->device_cfgs[i] = self->device_cfgs[self->ndevices];
    }
    for (int k = 0; k < nwant && self->ndevices < S_DEVICES_MAX; k++) { /* start what is new */
        bool running = false;
        for (int i = 0; i < self->ndevices; i++)
            running = running || s_same_device(&want[k], &self->device_cfgs[i]);
        const node_driver_t *d = drivers_find(want[k].driver);
        char why[300];
        if (running)
            continue;
        node_device_t *dev =
            d ? node_device_start(want[k].name, d, want[k].transport, want[k].options,
                                  s_device_event, self, why, sizeof(why))
              : NULL;
        if (!dev) {
            bus_error("posnode.devices", "%s: %s", want[k].name, d ? why : "no such driver");
            continue;
        }
        self->devices[self->ndevices] = dev;
        self->device_cfgs[self->ndevices++] = want[k];
        bus_info("posnode.devices", "%s: %s on %s", want[k].name, want[k].driver,
                 want[k].transport);
    }
}

static node_device_t *s_device_of_kind(s_node_t *self, const char *kind)
{
    for (int i = 0; i < self->ndevices; i++) {
        bus_val_t *h = node_device_health(self->devices[i]);
        const char *k = bus_val_map_get_str(h, "kind");
        bool match = k && strcmp(k, kind) == 0;
        bus_val_destroy(&h);
        if (match)
            return self->devices[i];
    }
    return NULL;
}

/*  After a till answer: a completed sale prints its receipt (keyed by the sale id, so it never
    prints twice), a drawer the answer opened is pulsed through the printer. */
/*  The paper width of a printer: its option width=58 or width=80 (default 80). */
static int s_printer_width(s_node_t *self, node_device_t *printer)
{
    int width = 80;
    for (int i = 0; i < self->ndevices; i++) {
        if (self->devices[i] != printer)
            continue;
        const char *o = self->device_cfgs[i].options;
        while (*o) {
            size_t len = strcspn(o, ",");
            char why[80];
            int w;
            if (node_device_option_int(o, len, "width", 58, 80, &w, why, sizeof(why)) == 0 &&
                (w == 58 || w == 80))
                width = w;
            o += len + (o[len] == ',');
        }
    }
    return width;
}

/*  Queue the receipt of sale doc on printer, keyed key (a sale prints once per key). */
static void s_print_receipt(s_node_t *self, node_device_t *printer, const bus_val_t *doc,
                            const char *key, const char *qr, const char *cashier, bool reprint)
{
    const node_config_t *cfg = node_till_config(self->till);
    const char *header[NODE_CONFIG_LINES_MAX], *footer[NODE_CONFIG_LINES_MAX];
    char store_line[64];
    for (int i = 0; i < cfg->nheader; i++)
        header[i] = cfg->header[i];
    for (int i = 0; i < cfg->nfooter; i++)
        footer[i] = cfg->footer[i];
    if (cfg->nheader == 0) {
        snprintf(store_line, sizeof(store_line), "%s %s", self->store, self->reg);
        header[0] = store_line;
    }
    escpos_layout_t layout = {.width_mm = s_printer_width(self, printer),
                              .header = header,
                              .nheader = cfg->nheader ? cfg->nheader : 1,
                              .footer = footer,
                              .nfooter = cfg->nfooter,
                              .tax_id = cfg->tax_id,
                              .cashier = cashier,
                              .qr = qr,
                              .reprint = reprint};
    bus_buf_t buf = {0};
    char why[200];
    if (escpos_receipt(doc, &layout, &buf, why, sizeof(why)) != 0)
        bus_warn("posnode.devices", "receipt %s: %s", key, why);
    else if (node_device_submit(printer, key, "print", buf.data, buf.len) < 0)
        bus_warn("posnode.devices", "receipt %s: the printer's queue is full", key);
    bus_buf_free(&buf);
}

/*  The sale number of one of this register's sale ids, or 0. */
static int64_t s_sale_number(s_node_t *self, const char *sale_id)
{
    char prefix[64];
    int n = snprintf(prefix, sizeof(prefix), "%s-%s-", self->store, self->reg);
    if (!sale_id || strncmp(sale_id, prefix, (size_t)n) != 0)
        return 0;
    char *end;
    long long k = strtoll(sale_id + n, &end, 10);
    return *end || k < 1 ? 0 : k;
}

/*  The line command "reprint SALE_ID": a copy of a past receipt, marked as one. */
static bus_val_t *s_reprint(s_node_t *self, const char *sale_id)
{
    bus_val_t *reply = bus_val_new_map();
    bus_val_map_set_str(reply, "cmd", "reprint");
    node_device_t *printer = s_device_of_kind(self, "printer");
    int64_t k = s_sale_number(self, sale_id);
    bus_val_t *doc = printer && k ? node_till_sale_doc(self->till, k) : NULL;
    if (!doc) {
        bus_val_map_set_bool(reply, "ok", false);
        bus_val_map_set_str(reply, "error", printer ? "not_found" : "no_printer");
        bus_val_map_set_str(reply, "message",
                            printer ? "no such sale of this register" : "no printer");
        return reply;
    }
    char key[96];
    snprintf(key, sizeof(key), "reprint-%s-%" PRId64, sale_id, bus_now_ms());
    s_print_receipt(self, printer, doc, key, sale_id, NULL, true);
    bus_val_destroy(&doc);
    bus_val_map_set_bool(reply, "ok", true);
    bus_val_map_set_str(reply, "sale_id", sale_id);
    return reply;
}

static node_device_t *s_device_named(s_node_t *self, const char *name);

/*  Receipts of sales journaled but not printed when posnode last stopped (the printer was out
    of paper, or posnode was killed): printed now, marked as copies (part of one may have
    reached the printer before), keyed by their sale ids (at most the last 20; older ones by
    reprint). */
static void s_print_missed(s_node_t *self)
{
    node_device_t *printer = s_device_of_kind(self, "printer");
    int64_t last = node_till_last_sale(self->till);
    if (!printer || self->printed >= last)
        return;
    int64_t from = self->printed + 1 > last - 19 ? self->printed + 1 : last - 19;
    for (int64_t k = from; k <= last; k++) {
        bus_val_t *doc = node_till_sale_doc(self->till, k);
        const char *id = bus_val_map_get_str(doc, "sale_id");
        const char *cashier = bus_val_map_get_str(doc, "cashier");
        node_device_t *dev = cashier ? s_device_named(self, cashier) : NULL;
        bus_val_t *h = dev ? node_device_health(dev) : NULL;
        const char *kind = bus_val_map_get_str(h, "kind");
        if (kind && strcmp(kind, "canteen") == 0)
            id = NULL; /* a canteen tap's sale: the terminal showed it, nothing to print */
        bus_val_destroy(&h);
        if (id) {
            bus_info("posnode.devices", "printing %s: its receipt was not printed before", id);
            /* marked as a copy: a part may have reached the printer before the stop */
            s_print_receipt(self, printer, doc, id, id, NULL, true);
        }
        bus_val_destroy(&doc);
    }
}

/*  A receipt printed: move the printed mark (a small file beside the journal). */
static void s_printed(s_node_t *self, const bus_val_t *body)
{
    bool ok = false;
    bus_val_map_get_bool(body, "ok", &ok);
    int64_t k = s_sale_number(self, bus_val_map_get_str(body, "key"));
    if (!ok || !k)
        return;
    pthread_mutex_lock(&self->dev_lock);
    if (k > self->printed) {
        self->printed = k;
        char path[S_PATH_MAX + 16], text[32], why[200];
        snprintf(path, sizeof(path), "%s/printed", self->dir);
        int n = snprintf(text, sizeof(text), "%" PRId64 "\n", k);
        node_file_write(path, text, (size_t)n, 0, why, sizeof(why));
    }
    pthread_mutex_unlock(&self->dev_lock);
}

static void s_devices_after(s_node_t *self, const bus_val_t *reply)
{
    s_displays(self, reply);
    node_device_t *printer = s_device_of_kind(self, "printer");
    if (!printer)
        return;
    const char *sale_id = bus_val_map_get_str(reply, "sale_id");
    const bus_val_t *doc = node_till_last_sale_doc(self->till);
    const char *doc_id = doc ? bus_val_map_get_str(doc, "sale_id") : NULL;
    if (sale_id && doc_id && strcmp(sale_id, doc_id) == 0) {
        char qr[160];
        snprintf(qr, sizeof(qr), "%s %.16s", sale_id, node_till_last_sale_hash(self->till));
        s_print_receipt(self, printer, doc, sale_id, qr,
                        bus_val_map_get_str(bus_val_map_get(reply, "cashier"), "name"), false);
    }
    bool drawer = false;
    int64_t record = 0;
    if (bus_val_map_get_bool(reply, "drawer_open", &drawer) && drawer) {
        bus_buf_t buf = {0};
        char key[64];
        bus_val_map_get_int(reply, "record", &record);
        snprintf(key, sizeof(key), "drawer-%" PRId64 "-%" PRId64, record, bus_now_ms());
        if (escpos_drawer(&buf) == 0)
            node_device_submit_first(printer, key, "drawer", buf.data, buf.len);
        bus_buf_free(&buf);
    }
}

/*  What the customer sees: the last line and the total while scanning, the change after a
    sale (Epson-style 2x20 "vfd" and the LED price display "led_price"). */
static void s_displays(s_node_t *self, const bus_val_t *reply)
{
    const char *cmd = bus_val_map_get_str(reply, "cmd");
    if (!cmd || strcmp(cmd, "state") == 0 || strcmp(cmd, "devices") == 0)
        return;
    const bus_val_t *ticket = bus_val_map_get(reply, "ticket");
    const bus_val_t *doc = node_till_last_sale_doc(self->till);
    const char *sale_id = bus_val_map_get_str(reply, "sale_id");
    char a[32], b[32], vfd[128], led[64];
    int64_t v = 0;
    if (sale_id && doc) {
        bus_val_map_get_int(reply, "change", &v);
        int64_t total = 0;
        bus_val_map_get_int(doc, "total", &total);
        snprintf(vfd, sizeof(vfd), "TOTAL %14s\nCHANGE %13s", pos_money_format(total, a, 32),
                 pos_money_format(v, b, 32));
        snprintf(led, sizeof(led), "change %s", pos_money_format(v, a, 32));
    } else if (ticket && bus_val_type(ticket) == BUS_VAL_MAP) {
        const bus_val_t *lines = bus_val_map_get(ticket, "lines");
        const bus_val_t *last =
            bus_val_arr_get(lines, bus_val_size(lines) ? bus_val_size(lines) - 1 : 0);
        int64_t amount = 0, total = 0;
        bus_val_map_get_int(last, "amount", &amount);
        bus_val_map_get_int(ticket, "total", &total);
        const char *sku = bus_val_map_get_str(last, "sku");
        snprintf(vfd, sizeof(vfd), "%-12.12s%8s\nTOTAL %14s", sku ? sku : "",
                 pos_money_format(amount, a, 32), pos_money_format(total, b, 32));
        snprintf(led, sizeof(led), "total %s", pos_money_format(total, a, 32));
    } else {
        return;
    }
    for (int i = 0; i < self->ndevices; i++) {
        bus_val_t *h = node_device_health(self->devices[i]);
        const char *kind = bus_val_map_get_str(h, "kind");
        bool display = kind && strcmp(kind, "display") == 0;
        bus_val_destroy(&h);
        if (!display)
            continue;
        bus_val_t *st = node_device_stats(self->devices[i]);
        const char *driver = bus_val_map_get_str(st, "driver");
        const char *text = driver && strcmp(driver, "led_price") == 0 ? led : vfd;
        bus_val_destroy(&st);
        node_device_submit(self->devices[i], "", "show", text, strlen(text));
    }
}

static node_device_t *s_device_named(s_node_t *self, const char *name)
{
    for (int i = 0; i < self->ndevices; i++)
        if (strcmp(node_device_name(self->devices[i]), name) == 0)
            return self->devices[i];
    return NULL;
}

/*  The canteen module's jobs for a canteen line. */
static int s_canteen_submit(void *arg, const char *device, const char *key, const char *verb,
                            const char *data)
{
    node_device_t *dev = s_device_named(arg, device);
    return dev ? node_device_submit(dev, key, verb, data, strlen(data)) : -1;
}

/*  The till's device hook: printers take "print" {text} (lines separated by \n) and "drawer". */
static int s_device_command(void *arg, const char *device, const char *command,
                            const bus_val_t *args, char *err, size_t size)
{
    s_node_t *self = arg;
    node_device_t *dev = s_device_named(self, device);
    if (!dev)
        return 0;
    bus_val_t *h = node_device_health(dev);
    const char *kind = bus_val_map_get_str(h, "kind");
    bool printer = kind && strcmp(kind, "printer") == 0;
    bool card = kind && strcmp(kind, "card") == 0;
    bus_val_destroy(&h);
    if (card) { /* the terminal's end of day (its totals come as the event result) */
        if (strcmp(command, "end_of_day") != 0) {
            if (err)
                snprintf(err, size, "bad_command: %s takes end_of_day", device);
            return -1;
        }
        if (!err)
            return 1;
        char key[80];
        snprintf(key, sizeof(key), "end_of_day-%" PRId64, bus_now_ms());
        if (node_device_submit(dev, key, "end_of_day", NULL, 0) < 0) {
            snprintf(err, size, "device %s: its queue is full", device);
            return -1;
        }
        return 1;
    }
    const char *text = bus_val_map_get_str(args, "text");
    bool print = printer && strcmp(command, "print") == 0 && text && *text;
    bool drawer = printer && strcmp(command, "drawer") == 0;
    if (!print && !drawer) {
        if (err)
            snprintf(err, size, "bad_command: %s takes print {text} and drawer", device);
        return -1;
    }
    if (!err)
        return 1;
    bus_buf_t buf = {0};
    int rc = drawer ? escpos_drawer(&buf) : escpos_document(text, s_printer_width(self, dev), &buf);
    char key[80];
    snprintf(key, sizeof(key), "%s-%" PRId64, command, bus_now_ms());
    if (rc != 0 || (drawer ? node_device_submit_first(dev, key, command, buf.data, buf.len)
                           : node_device_submit(dev, key, command, buf.data, buf.len)) < 0) {
        snprintf(err, size, "device %s: its queue is full", device);
        rc = -1;
    }
    bus_buf_free(&buf);
    return rc == 0 ? 1 : -1;
}

/*  The till's card hook: jobs for the register's card terminal (the device of kind card). */
static int s_card(void *arg, const char *verb, const char *key, const char *data, char *err,
                  size_t size)
{
    s_node_t *self = arg;
    node_device_t *dev = s_device_of_kind(self, "card");
    if (!verb)
        return dev ? 1 : 0;
    if (!dev) {
        snprintf(err, size, "no card terminal is configured");
        return -1;
    }
    if (node_device_submit(dev, key, verb, data, strlen(data)) < 0) {
        snprintf(err, size, "the terminal's queue is full");
        return -1;
    }
    return 1;
}

/*  The devices' health for the uplink (heartbeats), at most once a second. */
static void s_devices_tell(s_node_t *self)
{
    int64_t now = bus_mono_ms();
    if (!self->uplink || now - self->devices_told_ms < 1000)
        return;
    self->devices_told_ms = now;
    bus_val_t *rows = bus_val_new_arr();
    for (int i = 0; rows && i < self->ndevices; i++) {
        bus_val_t *h = node_device_health(self->devices[i]);
        bus_val_t *st = node_device_stats(self->devices[i]);
        bus_val_map_set(h, "stats", &st); /* the devices service keeps the counters */
        bus_val_arr_push(rows, &h);
    }
    node_uplink_set_devices(self->uplink, &rows);
}

/*  The line command "devices": every device's health and statistics. */
static bus_val_t *s_devices_answer(s_node_t *self)
{
    bus_val_t *reply = bus_val_new_map();
    bus_val_t *list = bus_val_new_arr();
    bus_val_map_set_bool(reply, "ok", true);
    bus_val_map_set_str(reply, "cmd", "devices");
    for (int i = 0; i < self->ndevices; i++) {
        bus_val_t *row = node_device_health(self->devices[i]);
        bus_val_t *stats = node_device_stats(self->devices[i]);
        bus_val_map_set(row, "stats", &stats);
        bus_val_arr_push(list, &row);
    }
    bus_val_map_set(reply, "devices", &list);
    return reply;
}

/*  Tell the uplink how far the journal got (and that it was archived, when it was). */
static void s_journaled(s_node_t *self)
{
    node_uplink_segment(self->uplink, node_till_segment(self->till));
    node_uplink_journaled(self->uplink, node_till_last_record(self->till),
                          node_till_last_sale(self->till));
}

/*  Add to a till answer what every answer carries beside the till's own fields: online,
    unsynced and (when set) upload_blocked. */
static void s_status(s_node_t *self, bus_val_t *reply)
{
    node_uplink_status_t st;
    node_uplink_status(self->uplink, &st);
    s_journaled(self);
    s_devices_after(self, reply);
    int64_t last = node_till_last_sale(self->till);
    bus_val_map_set_bool(reply, "online", st.online);
    bus_val_map_set_int(reply, "unsynced", last > st.acked ? last - st.acked : 0);
    if (st.blocked[0])
        bus_val_map_set_str(reply, "upload_blocked", st.blocked);
}

static void s_answer(s_node_t *self, int fd, const char *line)
{
    bool devices = strcmp(line, "devices") == 0;
    bool reprint = strncmp(line, "reprint ", 8) == 0;
    bus_val_t *reply = devices   ? s_devices_answer(self)
                       : reprint ? s_reprint(self, line + 8)
                                 : node_till_command(self->till, line);
    if (!reply)
        return;
    if (!devices && !reprint)
        s_status(self, reply);
    if (self->tui) /* a socket client changed the till: the screen shows it at once */
        node_tui_status(self->tui, reply);
    bus_buf_t buf = {0};
    if (bus_val_to_json(reply, &buf) == 0) {
        size_t len = strlen((char *)buf.data);
        s_write_all(fd == 0 ? 1 : fd, (char *)buf.data, len);
        s_write_all(fd == 0 ? 1 : fd, "\n", 1);
    }
    bus_buf_free(&buf);
    bus_val_destroy(&reply);
}

/*  Read what fd has; answer every whole line. false at EOF or error. */
static bool s_read_input(s_node_t *self, s_input_t *in)
{
    char chunk[4096];
    ssize_t n = read(in->fd, chunk, sizeof(chunk));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0)
        return false;
    for (ssize_t i = 0; i < n; i++) {
        char ch = chunk[i];
        if (ch == '\n') {
            in->buf[in->len] = '\0';
            if (in->overflow) {
                s_answer(self, in->fd, "too-long-line-refused");
            } else if (in->len > 0) {
                s_answer(self, in->fd, in->buf);
            }
            OPENSSL_cleanse(in->buf, sizeof(in->buf)); /* a line may hold a PIN */
            in->len = 0;
            in->overflow = false;
        } else if (in->len + 1 < sizeof(in->buf)) {
            in->buf[in->len++] = ch;
        } else {
            in->overflow = true;
        }
    }
    OPENSSL_cleanse(chunk, sizeof(chunk));
    return true;
}

/*  Run a line on the till and show the answer on the screen: typed, the cashier's own line
    (its result goes on the message line); otherwise the periodic "state". */
/*  An answer to something a device started (a scan, a weight): on the screen, or as a JSON line
    on stdout when the line interface is stdin. */
static void s_device_answer(s_node_t *self, bus_val_t *reply)
{
    if (self->tui) {
        node_tui_show(self->tui, reply);
        return;
    }
    bus_buf_t buf = {0};
    if (self->in[0].fd == 0 && bus_val_to_json(reply, &buf) == 0) {
        s_write_all(1, (char *)buf.data, strlen((char *)buf.data));
        s_write_all(1, "\n", 1);
    }
    bus_buf_free(&buf);
}

static void s_device_line(s_node_t *self, const char *line, const char *code)
{
    bus_val_t *reply = node_till_command(self->till, line);
    if (!reply)
        return;
    s_status(self, reply);
    const char *error = bus_val_map_get_str(reply, "error");
    node_device_t *scale = s_device_of_kind(self, "scale");
    int64_t now = bus_mono_ms();
    if (code && error && strcmp(error, "weigh_required") == 0 && scale && self->weigh_code[0] &&
        now < self->weigh_until_ms) {
        bus_val_map_set_str(reply, "message", "the scale is weighing the last item: wait");
    } else if (code && error && strcmp(error, "weigh_required") == 0 && scale) {
        /* a weighed item: the scale gives a stable weight, then it is sold (within
           S_WEIGH_MS: a weight that comes later is not this customer's) */
        snprintf(self->weigh_code, sizeof(self->weigh_code), "%s", code);
        self->weigh_until_ms = now + S_WEIGH_MS;
        char key[64];
        snprintf(key, sizeof(key), "weigh-%" PRId64, bus_now_ms());
        node_device_submit(scale, key, "weigh", NULL, 0);
        bus_val_map_set_str(reply, "message", "on the scale: waiting for a stable weight");
    }
    s_device_answer(self, reply);
    bus_val_destroy(&reply);
}

/*  Scans and weights the devices sent: acted on in the till's thread. */
static void s_device_inbox(s_node_t *self)
{
    uint64_t v;
    ssize_t r = read(self->dev_efd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&self->dev_lock);
    bus_val_t *inbox = self->dev_inbox;
    self->dev_inbox = NULL;
    pthread_mutex_unlock(&self->dev_lock);
    for (size_t i = 0; i < bus_val_size(inbox); i++) {
        const bus_val_t *item = bus_val_arr_get(inbox, i);
        const char *event = bus_val_map_get_str(item, "event");
        const bus_val_t *body = bus_val_map_get(item, "body");
        char line[NODE_TILL_LINE_MAX];
        bool valid = false, stable = false;
        int64_t grams = 0;
        const char *code = bus_val_map_get_str(body, "code");
        if (s_canteen_event(event)) {
            int64_t at = 0;
            bus_val_map_get_int(item, "at_ms", &at);
            bus_val_t *reply =
                node_canteen_event(self->canteen, bus_val_map_get_str(item, "device"), event, body,
                                   at, bus_mono_ms());
            if (reply) { /* a tap sold or refused: journaled; shown, never printed here */
                s_journaled(self);
                s_device_answer(self, reply);
                bus_val_destroy(&reply);
            }
            continue;
        }
        if (strcmp(event, "status") == 0) { /* a card terminal's health: the till's business */
            const char *name = bus_val_map_get_str(item, "device");
            node_device_t *dev = name ? s_device_named(self, name) : NULL;
            if (dev && dev == s_device_of_kind(self, "card")) {
                bus_val_t *none = node_till_card_event(self->till, event, body);
                bus_val_destroy(&none);
            }
            continue;
        }
        if (strcmp(event, "intermediate") == 0 || strcmp(event, "result") == 0) {
            bus_val_t *reply = node_till_card_event(self->till, event, body);
            if (reply) {
                s_status(self, reply);
                s_devices_after(self, reply); /* a sale the card completed prints */
                s_device_answer(self, reply);
                bus_val_destroy(&reply);
            }
            continue;
        }
        if (strcmp(event, "scan") == 0 && code && strlen(code) <= NODE_CATALOG_CODE_MAX &&
            !strpbrk(code, " \t")) {
            bus_val_map_get_bool(body, "valid", &valid);
            if (!valid) {
                bus_val_t *reply = node_till_command(self->till, "state");
                bus_val_map_set_bool(reply, "ok", false);
                bus_val_map_set_str(reply, "cmd", "scan");
                bus_val_map_set_str(reply, "error", "bad_barcode");
                bus_val_map_set_str(reply, "message",
                                    "the barcode's check digit is wrong: scan again");
                s_status(self, reply);
                s_device_answer(self, reply);
                bus_val_destroy(&reply);
                continue;
            }
            if (node_till_code_provider(code)) {
                /* a customer's WeChat or Alipay payment code: the scan pays the ticket */
                snprintf(line, sizeof(line), "pay code %s", code);
                s_device_line(self, line, NULL);
                OPENSSL_cleanse(line, sizeof(line));
                continue;
            }
            snprintf(line, sizeof(line), "scan %s", code);
            s_device_line(self, line, code);
        } else if (strcmp(event, "weight") == 0 && self->weigh_code[0] &&
                   bus_mono_ms() > self->weigh_until_ms) {
            self->weigh_code[0] = '\0'; /* stale: the cashier was told to weigh again */
        } else if (strcmp(event, "weight") == 0 && self->weigh_code[0]) {
            bus_val_map_get_bool(body, "stable", &stable);
            bus_val_map_get_int(body, "grams", &grams);
            if (stable && grams > 0) {
                snprintf(line, sizeof(line), "weigh %s %" PRId64, self->weigh_code, grams);
                s_device_line(self, line, NULL);
            } else {
                bus_val_t *reply = node_till_command(self->till, "state");
                const char *why = bus_val_map_get_str(body, "reason");
                char msg[160];
                snprintf(msg, sizeof(msg), "the scale gave no stable weight (%s): weigh again",
                         why ? why : "?");
                bus_val_map_set_bool(reply, "ok", false);
                bus_val_map_set_str(reply, "cmd", "weigh");
                bus_val_map_set_str(reply, "error", "no_weight");
                bus_val_map_set_str(reply, "message", msg);
                s_status(self, reply);
                s_device_answer(self, reply);
                bus_val_destroy(&reply);
            }
            self->weigh_code[0] = '\0';
        }
    }
    bus_val_destroy(&inbox);
}

static void s_tui_command(s_node_t *self, const char *line, bool typed)
{
    bus_val_t *reply = node_till_command(self->till, line);
    if (!reply)
        return;
    s_status(self, reply);
    if (typed)
        node_tui_show(self->tui, reply);
    else
        node_tui_status(self->tui, reply);
    bus_val_destroy(&reply);
    self->tui_shown_ms = zclock_mono();
}

/*  Run every line typed on the screen, stop when the terminal is gone, refresh the screen
    once a second. */
static void s_tui_input(s_node_t *self)
{
    char line[S_IN_MAX];
    int rc;
    while ((rc = node_tui_input(self->tui, line, sizeof(line))) == 1) {
        s_tui_command(self, line, true);
        OPENSSL_cleanse(line, sizeof(line)); /* a line may hold a PIN */
    }
    if (rc < 0) {
        bus_info("posnode.tui", "the terminal is gone: stopping");
        bus_program_stop();
    } else if (zclock_mono() - self->tui_shown_ms >= S_TUI_REFRESH_MS) {
        s_tui_command(self, "state", false);
    }
}

/* This process's socket appears at PATH only once it listens: it is bound under a temporary
   name (PATH.<pid>.new, so PATH may be up to 12 bytes shorter than sun_path allows) and
   renamed into place over whatever was there (a stale socket of a crashed run included). */
static int s_listen(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int len = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s.%ld.new", path, (long)getpid());
    if (len < 0 || (size_t)len >= sizeof(addr.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    unlink(addr.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    mode_t old = umask(0077); /* the till's socket is the cashier's: owner only */
    int rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    umask(old);
    if (rc != 0 || listen(fd, 4) != 0 || rename(addr.sun_path, path) != 0) {
        int e = errno;
        if (rc == 0)
            unlink(addr.sun_path);
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void s_run(s_node_t *self)
{
    while (!bus_program_stopping()) {
        struct pollfd fds[S_CLIENTS + 5];
        int map[S_CLIENTS + 5];
        int n = 0;
        fds[n] = (struct pollfd){.fd = node_uplink_signal_fd(self->uplink), .events = POLLIN};
        map[n++] = -1;
        if (self->listen_fd >= 0) {
            fds[n] = (struct pollfd){.fd = self->listen_fd, .events = POLLIN};
            map[n++] = -2;
        }
        for (int i = 0; i <= S_CLIENTS; i++)
            if (self->in[i].fd >= 0) {
                fds[n] = (struct pollfd){.fd = self->in[i].fd, .events = POLLIN};
                map[n++] = i;
            }
        if (self->tui) {
            fds[n] = (struct pollfd){.fd = node_tui_fd(self->tui), .events = POLLIN};
            map[n++] = -3; /* read below, on every turn (ncurses reads ahead) */
        }
        fds[n] = (struct pollfd){.fd = self->dev_efd, .events = POLLIN};
        map[n++] = -4;
        int rc = poll(fds, (nfds_t)n, 200);
        if (rc < 0 && errno != EINTR)
            break;
        for (int k = 0; rc > 0 && k < n; k++) {
            if (!fds[k].revents || map[k] == -3)
                continue;
            if (map[k] == -4) {
                s_device_inbox(self);
            } else if (map[k] == -1) {
                s_take_updates(self);
            } else if (map[k] == -2) {
                int fd = accept4(self->listen_fd, NULL, NULL, SOCK_CLOEXEC);
                int slot = -1;
                for (int i = 1; fd >= 0 && i <= S_CLIENTS && slot < 0; i++)
                    if (self->in[i].fd < 0)
                        slot = i;
                if (fd >= 0 && slot < 0) {
                    s_write_all(fd, "{\"ok\":false,\"error\":\"busy\"}\n", 28);
                    close(fd);
                } else if (fd >= 0) {
                    self->in[slot] = (s_input_t){.fd = fd};
                }
            } else if (!s_read_input(self, &self->in[map[k]])) {
                s_input_t *in = &self->in[map[k]];
                if (in->fd > 0)
                    close(in->fd);
                OPENSSL_cleanse(in->buf, sizeof(in->buf));
                *in = (s_input_t){.fd = -1};
            }
        }
        if (self->tui)
            s_tui_input(self);
        s_journaled(self);
        s_devices_tell(self);
        bus_metrics_tick(self->metrics);
        node_till_card_tick(self->till);
        node_till_sv_tick(self->till); /* card blocklist, offline card deductions uploaded */
        bus_val_t *tapped;
        while ((tapped = node_canteen_tick(self->canteen, bus_mono_ms()))) {
            s_journaled(self);
            s_device_answer(self, tapped);
            bus_val_destroy(&tapped);
        }
        bus_val_t *paid = node_till_wallet_tick(self->till); /* a code payment's answer */
        if (paid) {
            s_status(self, paid);
            s_devices_after(self, paid);
            s_device_answer(self, paid);
            bus_val_destroy(&paid);
        }
    }
}

/* ---- metrics --------------------------------------------------------------------------- */

/*  What a register shows a scraper (docs/metrics.md "posnode"): its sales and uploads, what
    waits for the back office, its peripherals' health, its canteen lines. The till's thread
    (bus_metrics_tick is called from the main loop). */
static void s_metrics(bus_metrics_out_t *out, void *arg)
{
    s_node_t *self = arg;
    node_uplink_status_t st = {0};
    if (self->uplink)
        node_uplink_status(self->uplink, &st);
    int64_t last = node_till_last_sale(self->till);
    const char *const reg[] = {"store", self->store, "register", self->reg, NULL};
    bus_metrics_out_gauge(out, "last_sale", "the last sale number journaled", reg, last);
    bus_metrics_out_gauge(out, "unsynced_sales",
                          "sales journaled and not yet acknowledged by the back office", reg,
                          last > st.acked ? last - st.acked : 0);
    bus_metrics_out_gauge(out, "online", "1 when the last request to the back office was answered",
                          reg, st.online);
    bus_metrics_out_gauge(out, "upload_blocked",
                          "1 when the back office refuses a sale and the uploads wait on it", reg,
                          st.blocked[0] != '\0');
    bus_metrics_out_gauge(out, "selling_stopped",
                          "1 when the journal refused a write and selling stopped", reg,
                          node_till_stopped(self->till));
    bus_metrics_out_counter(out, "uploads", "sales uploaded and acknowledged since start", reg,
                            st.uploaded);
    bus_metrics_out_counter(out, "upload_errors", "upload attempts that failed since start", reg,
                            st.upload_errors);
    bus_metrics_out_gauge(out, "card_deductions_pending",
                          "stored-value deductions taken offline, not yet uploaded", reg,
                          (int64_t)node_till_sv_pending(self->till));
    bus_metrics_out_gauge(out, "refunds_pending",
                          "refunds of returns journaled, not yet taken by payments", reg,
                          (int64_t)node_till_refunds_pending(self->till));
    bus_metrics_out_counter(out, "scans_dropped",
                            "scans and weights dropped past the inbox's bound since start", reg,
                            self->inbox_dropped);
    for (int i = 0; i < self->ndevices; i++) {
        bus_val_t *h = node_device_health(self->devices[i]);
        const char *name = bus_val_map_get_str(h, "name");
        const char *kind = bus_val_map_get_str(h, "kind");
        const char *health = bus_val_map_get_str(h, "health");
        const char *const labels[] = {"device", name ? name : "?", "kind", kind ? kind : "?",
                                      NULL};
        int64_t state = !health || !strcmp(health, "ok") ? 0 : !strcmp(health, "warn") ? 1 : 2;
        bus_metrics_out_gauge(out, "device_health",
                              "a peripheral's health: 0 ok, 1 warn, 2 offline or failed", labels,
                              state);
        bus_val_destroy(&h);
    }
    bus_val_t *c = node_canteen_stats(self->canteen);
    static const char *const taps[] = {"taps", "approved", "declined", "left_to_terminal",
                                       "offline_sold", "duplicates", "conflicts", NULL};
    for (int i = 0; c && taps[i]; i++) {
        int64_t v = 0;
        bus_val_map_get_int(c, taps[i], &v);
        const char *const labels[] = {"what", taps[i], NULL};
        bus_metrics_out_counter(out, "canteen_taps", "canteen terminals' taps since start, by what "
                                "became of them", labels, v);
    }
    bus_val_destroy(&c);
}

/* ---- start and stop ------------------------------------------------------------------ */

static int s_key(s_node_t *self)
{
    char path[S_PATH_MAX + 32], pub[S_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/journal.key", self->dir);
    snprintf(pub, sizeof(pub), "%s/journal.pub", self->dir);
    if (access(path, F_OK) != 0) {
        if (node_key_generate(path) != 0) {
            bus_error("posnode.key", "cannot create the journal key %s: %s", path, strerror(errno));
            return -1;
        }
        bus_info("posnode.key", "created the register's journal key %s", path);
    }
    self->key = node_key_load(path);
    if (!self->key || !node_key_has_private(self->key)) {
        bus_error("posnode.key", "cannot load the journal key %s: %s", path, strerror(errno));
        return -1;
    }
    if (node_key_write_public(self->key, pub) != 0)
        bus_warn("posnode.key", "cannot write %s: %s", pub, strerror(errno));
    return 0;
}

/*  The certificate's identity must be this register's: a node acts only as itself. */
static int s_check_identity(s_node_t *self)
{
    if (!self->conn.cert || !*self->conn.cert)
        return 0; /* no identities (development, insecure) */
    zcert_t *cert = zcert_load(self->conn.cert);
    bus_identity_t id;
    const char *err = "cannot read it";
    int rc = cert ? bus_identity_from_cert(cert, &id, &err) : -1;
    zcert_destroy(&cert);
    if (rc != 0) {
        bus_error("posnode.identity", "certificate %s: %s", self->conn.cert, err);
        return -1;
    }
    if (id.role != BUS_ROLE_REGISTER || strcmp(id.store, self->store) != 0 ||
        strcmp(id.reg, self->reg) != 0) {
        bus_error("posnode.identity", "certificate %s is %s %s, not register %s.%s",
                  self->conn.cert, bus_role_name(id.role), id.name, self->store, self->reg);
        return -1;
    }
    return 0;
}

static void s_on_hangup(int sig)
{
    (void)sig;
    bus_program_stop(); /* the cashier's terminal closed: stop as on SIGTERM */
}

/*  The screen on the terminal. Log lines must not land on it: with stderr on the terminal
    they go to STATE_DIR/posnode.log from here on. */
static int s_tui_start(s_node_t *self)
{
    char why[256];
    self->tui = node_tui_new(self->store, self->reg, why, sizeof(why));
    if (!self->tui) {
        bus_error("posnode.tui", "cannot start the screen: %s", why);
        return -1;
    }
    if (isatty(STDERR_FILENO)) {
        char path[S_PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/posnode.log", self->dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
            int e = errno;
            node_tui_destroy(&self->tui);
            bus_error("posnode.tui", "cannot log to %s: %s", path, strerror(e));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
    }
    signal(SIGHUP, s_on_hangup);
    s_tui_command(self, "state", false);
    return 0;
}

static int s_start(s_node_t *self)
{
    if (bus_config_bool(self->config, "tui"))
        node_tui_locale(); /* before any thread starts */
    self->listen_fd = -1;
    for (int i = 0; i <= S_CLIENTS; i++)
        self->in[i].fd = -1;
    self->store = bus_config_str(self->config, "store");
    self->reg = bus_config_str(self->config, "register");
    if (!self->store || !self->reg || !pos_sale_id_ok(self->store, POS_STORE_ID_MAX, "") ||
        !pos_sale_id_ok(self->reg, POS_STORE_ID_MAX, "")) {
        bus_error("posnode.config", "--store and --register: 1-16 letters, digits or _");
        return -1;
    }
    bus_conn_cfg_from_config(&self->conn, self->config);
    snprintf(self->dir, sizeof(self->dir), "%s", bus_config_str(self->config, "state-dir"));
    if (mkdir(self->dir, 0700) != 0 && errno != EEXIST) {
        bus_error("posnode.state", "cannot create %s: %s", self->dir, strerror(errno));
        return -1;
    }
    if (s_check_identity(self) != 0 || s_key(self) != 0)
        return -1;
    self->session = node_session_new(NULL, NULL);
    self->catalog = node_catalog_new();
    if (!self->session || !self->catalog)
        return -1;
    char path[S_PATH_MAX + 32], why[512];
    node_till_hooks_t hooks = {.arg = self,
                               .request = s_request,
                               .publish = s_publish,
                               .acked = s_acked,
                               .device = s_device_command,
                               .card = s_card};
    snprintf(path, sizeof(path), "%s/journal", self->dir);
    self->till = node_till_open(path, self->key, self->store, self->reg, self->session, &hooks, why,
                                sizeof(why));
    if (!self->till) {
        bus_error("posnode.journal", "%s", why);
        return -1;
    }
    if (why[0])
        bus_warn("posnode.journal", "%s", why);
    node_till_set_retention(self->till,
                            (int)bus_config_int(self->config, "journal-retention-days"));
    bus_info("posnode.journal", "%s: last record %" PRIu64 ", last sale %" PRId64, path,
             node_till_last_record(self->till), node_till_last_sale(self->till));
    snprintf(path, sizeof(path), "%s/catalog.replica", self->dir);
    if (node_catalog_load(self->catalog, path) == 0)
        bus_info("posnode.catalog", "saved catalog version %" PRId64 ": %zu items",
                 node_catalog_version(self->catalog), node_catalog_count(self->catalog));
    else if (errno != ENOENT)
        bus_warn("posnode.catalog", "saved catalog refused: %s",
                 node_catalog_errstr(self->catalog));
    node_till_set_catalog(self->till, self->catalog);
    snprintf(path, sizeof(path), "%s/svcards.mp", self->dir);
    self->svcards = node_svcard_open(path, why, sizeof(why));
    if (!self->svcards)
        return -1;
    if (why[0])
        bus_warn("posnode.svcard", "%s", why);
    size_t nblocked = 0, ncards = node_svcard_count(self->svcards, &nblocked);
    bus_info("posnode.svcard",
             "card store: %zu cards known, %zu blocked, blocklist version %" PRId64
             ", %zu offline deductions to upload",
             ncards, nblocked, node_svcard_since(self->svcards), node_till_sv_pending(self->till));
    node_till_set_svcards(self->till, self->svcards,
                          S_SV_PULL_BEATS * bus_config_int(self->config, "node-heartbeat-ms"));
    char fees[2048] = "";
    const char *fees_path = bus_config_str(self->config, "canteen-fees");
    if (fees_path && *fees_path) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (node_file_read(fees_path, sizeof(fees) - 1, &data, &len, why, sizeof(why)) != 0) {
            bus_error("posnode.canteen", "--canteen-fees %s: %s", fees_path, why);
            return -1;
        }
        memcpy(fees, data, len);
        fees[len] = '\0';
        free(data);
    }
    self->canteen = node_canteen_new(self->till, self->svcards,
                                     bus_config_str(self->config, "canteen-sku"), fees,
                                     s_canteen_submit, self);
    if (!self->canteen)
        return -1;
    const char *merr = NULL;
    self->metrics = bus_metrics_new_from_config(self->config, S_PROGRAM, &merr);
    if (!self->metrics && merr) {
        bus_error("posnode.metrics", "--metrics-listen: %s", merr);
        return -1;
    }
    if (self->metrics && bus_metrics_add_collector(self->metrics, s_metrics, self) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/config.mp", self->dir);
    bus_val_t *doc = node_config_load(path, why, sizeof(why));
    if (doc)
        s_apply_config(self, doc, "the saved file");
    bus_val_destroy(&doc);

    const char *err = NULL;
    char src[64];
    snprintf(src, sizeof(src), "%s.%s", self->store, self->reg);
    self->client = bus_client_new(&self->conn, src, &err);
    if (!self->client) {
        bus_error("posnode.bus", "%s", err ? err : "cannot create a client");
        return -1;
    }
    int timeout = (int)bus_config_int(self->config, "request-timeout-ms");
    bus_client_set_timeout(self->client, timeout);
    bus_client_set_retries(self->client, 0);
    node_uplink_cfg_t ucfg = {
        .conn = self->conn,
        .store = self->store,
        .reg = self->reg,
        .version = BUS_VERSION,
        .key = self->key,
        .state_dir = self->dir,
        .heartbeat_ms = (int)bus_config_int(self->config, "node-heartbeat-ms"),
        .timeout_ms = timeout,
        .backoff_max_ms = (int)bus_config_int(self->config, "backoff-max-ms"),
        .last_record = node_till_last_record(self->till),
        .last_sale = node_till_last_sale(self->till),
        .config_version = node_till_config_version(self->till),
    };
    snprintf(path, sizeof(path), "%s/journal", self->dir);
    ucfg.journal_path = path;
    self->uplink = node_uplink_start(&ucfg, why, sizeof(why));
    if (!self->uplink) {
        bus_error("posnode.bus", "%s", why);
        return -1;
    }
    self->dev_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&self->dev_lock, NULL);
    if (self->dev_efd < 0 || s_devices_file(self) != 0)
        return -1;
    uint8_t *mark;
    size_t mlen;
    char mwhy[200], mpath[S_PATH_MAX + 16];
    snprintf(mpath, sizeof(mpath), "%s/printed", self->dir);
    self->printed = node_till_last_sale(self->till); /* no mark yet: nothing is owed */
    if (node_file_read(mpath, 64, &mark, &mlen, mwhy, sizeof(mwhy)) == 0) {
        self->printed = strtoll((char *)mark, NULL, 10);
        free(mark);
    }
    s_devices_apply(self, node_till_config(self->till));
    s_print_missed(self);
    const char *sock = bus_config_str(self->config, "socket");
    if (sock && *sock) {
        self->listen_fd = s_listen(sock);
        if (self->listen_fd < 0) {
            bus_error("posnode.socket", "cannot listen on %s: %s", sock, strerror(errno));
            return -1;
        }
    }
    if (bus_config_bool(self->config, "tui"))
        return s_tui_start(self);
    if (bus_config_bool(self->config, "stdin"))
        self->in[0].fd = 0;
    return 0;
}

static void s_stop(s_node_t *self)
{
    node_tui_destroy(&self->tui); /* the terminal back first */
    node_uplink_status_t st = {0};
    if (self->uplink)
        node_uplink_status(self->uplink, &st);
    for (int i = 0; i < self->ndevices; i++)
        node_device_stop(&self->devices[i]); /* before the uplink: their last events */
    if (self->dev_efd > 0) {
        close(self->dev_efd);
        pthread_mutex_destroy(&self->dev_lock);
    }
    bus_val_destroy(&self->dev_inbox);
    bus_metrics_destroy(&self->metrics);
    node_canteen_destroy(&self->canteen);
    node_uplink_stop(&self->uplink);
    bus_info("posnode.stopping",
             "last_sale=%" PRId64 " acked=%" PRId64 " uploaded=%" PRId64 " duplicates=%" PRId64,
             self->till ? node_till_last_sale(self->till) : 0, st.acked, st.uploaded,
             st.duplicates);
    for (int i = 1; i <= S_CLIENTS; i++)
        if (self->in[i].fd >= 0)
            close(self->in[i].fd);
    if (self->listen_fd >= 0) {
        close(self->listen_fd);
        const char *sock = bus_config_str(self->config, "socket");
        if (sock && *sock)
            unlink(sock);
    }
    bus_client_destroy(&self->client);
    node_till_destroy(&self->till);
    node_svcard_destroy(&self->svcards);
    node_catalog_destroy(&self->catalog);
    node_session_destroy(&self->session);
    node_key_destroy(&self->key);
}

int main(int argc, char **argv)
{
    bus_config_t *config = bus_config_new(S_PROGRAM, s_options);
    if (!config || bus_config_add(config, bus_conn_opts) != 0 ||
        bus_config_add(config, bus_metrics_opts) != 0 ||
        bus_config_add(config, bus_program_opts) != 0) {
        fprintf(stderr, "posnode: %s\n", config ? bus_config_error(config) : "out of memory");
        bus_config_destroy(&config);
        return 2;
    }
    int rc = bus_config_load(config, argc, argv);
    if (rc == 1) {
        printf("usage: posnode [--config FILE] --store S --register R [options]\n");
        bus_config_usage(config, stdout);
        bus_config_destroy(&config);
        return 0;
    }
    if (rc != 0 || bus_program_log_init(config, S_PROGRAM) != 0) {
        fprintf(stderr, "posnode: %s\n", rc != 0 ? bus_config_error(config) : "bad --log-level");
        bus_config_destroy(&config);
        return 2;
    }
    if (bus_config_bool(config, "example-config")) {
        bus_config_write_example(config, stdout);
        bus_config_destroy(&config);
        return 0;
    }
    bus_program_signals();
    /* a file-size limit must make the journal's write fail (EFBIG: selling stops with a
       message), not kill the register */
    signal(SIGXFSZ, SIG_IGN);
    s_node_t node = {.config = config};
    rc = s_start(&node);
    if (rc == 0) {
        bus_info("posnode.started", "store=%s register=%s version=%s", node.store, node.reg,
                 BUS_VERSION);
        s_run(&node);
    }
    s_stop(&node);
    bus_config_destroy(&config);
    return rc == 0 ? 0 : 1;
}
