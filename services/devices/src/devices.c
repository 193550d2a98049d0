/*  =========================================================================
    devices - the back office's registry of registers (nodes) and their devices

    Every register's node says hello when it starts (its version, its devices
    and their health, the configuration version it runs) and then heartbeats
    every few seconds with its last journal sequence and how many sales it
    has not uploaded yet. `node.list` shows the fleet: online or not, last
    heartbeat, unsynced sales, configuration version, device health, and
    the serial ports each register's machine has (with USB ids and the
    device using each), which a node sends with hello and then only when
    they changed, so the stored list is kept until a heartbeat brings one.

    Who a node is comes only from the caller's certificate (busd hands it
    over with every request): a register can describe itself and no other.
    A body that names another store or register is refused, before Redis is
    touched.

    Gap healing: a heartbeat whose last sequence is ahead of what sales has
    committed for that register (regseq:{S}, kept by sales' commit script)
    means sales lost or never got some uploads, e.g. after Redis came back
    from a copy a few seconds old. The node is then asked to resend them on
    register.<S>.<R>.resend, the same event sales publishes on an upload
    gap, so both paths end in the same resend. Asking is rate-limited per
    register (--resend-interval-ms) inside the heartbeat script, so that
    the nodes' uploads have time to arrive and several instances of this
    service never ask twice. A resend of a sale sales already has is
    answered as a duplicate: asking too much is harmless, asking too little
    is not, so the range is everything above the committed sequence.

    The registers' configuration (receipt settings, cashiers, promotions:
    config.get and the operators' changes, one version per change) is in
    config.c, and device commands (an operator's command routed to one
    register's device, answered with its result) in commands.c; both share
    this service's Redis connection, publisher and counters. A heartbeat's
    reply says how many commands wait for the register.

    Load: one small script per heartbeat (two hashes and a set of one
    store's hash tag); a chain of a few thousand registers heartbeating
    every few seconds is a few thousand calls a second at most. The listing
    reads every node of the stores asked for; it is an operator's command.
    =========================================================================
*/
#include <bus/bus.h>
#include <bus/keys.h>
#include <pos/sale.h>
#include "commands.h"
#include "svc_caller.h"
#include "config.h"
#include "svc_main.h"
#include "heartbeat_lua.h"
#include "hello_lua.h"

#define S_PROGRAM        "devices"
#define S_RETRY_MS       500 /* hint sent with `unavailable` */
#define S_VERSION_MAX    32  /* bytes of a node's software version */
#define S_DEVICES_MAX    32  /* devices of one node */
#define S_DEV_NAME_MAX   32  /* bytes of a device name */
#define S_DEV_KIND_MAX   32  /* bytes of a device kind */
#define S_DEV_DETAIL_MAX 120 /* characters (UTF-8) of a device's health detail */
#define S_PORTS_MAX      64  /* serial ports of one node (node/transport.h sends no more) */
#define S_PORT_TEXT_MAX  64  /* characters (UTF-8) of a port's name and of each string */

/* the largest usb_vid, usb_pid, usb_bus, usb_address of a port */
#define S_USB_ID_MAX 0xffff
/* 2^53 - 1: the largest integer the heartbeat script (Lua numbers are doubles) holds exactly */
#define S_INT_MAX    9007199254740991LL
#define S_WHY_MAX    160
#define S_NUM_MAX    24
#define S_LIST_MAX   1000         /* rows of one node.list page */
#define S_LIST_BYTES (512 * 1024) /* encoded rows of one page: well under the 1 MiB limit */

static const bus_opt_t s_options[] = {
    {"service-name", BUS_OPT_STR, "devices", 0, 0, "name this service registers under"},
    {"node-offline-ms", BUS_OPT_INT, "10000", 100, 86400000,
     "node list: a node without a heartbeat for this long is shown offline"},
    {"resend-interval-ms", BUS_OPT_INT, "5000", 100, 3600000,
     "gap healing: ask one register to resend missing sales at most once per this long"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    bus_redis_t *redis;
    bus_pub_t *pub;
    int hello, heartbeat;
    int64_t offline_ms, resend_ms;
    bus_stats_t *stats;
    int64_t *c_hellos, *c_heartbeats, *c_bad, *c_other_register, *c_resends, *c_resends_limited,
        *c_redis_errors;
} s_devices_t;

/*  Who a node is: its store and register, from the caller's certificate. */
typedef svc_node_id_t s_node_id_t;

/* ---- Redis failures (as in sales) ------------------------------------------------ */

/*  bus_service_redis_failed, counted. */
static int s_redis_failed(s_devices_t *self, bus_service_t *svc, redisReply *r, const char *what)
{
    bus_stats_inc(self->c_redis_errors, 1);
    return bus_service_redis_failed(svc, self->redis, r, S_RETRY_MS, what);
}

static int s_bad(s_devices_t *self, bus_service_t *svc, const char *why)
{
    bus_stats_inc(self->c_bad, 1);
    return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", why);
}

/* ---- validation ---------------------------------------------------------------- */

/*  Bytes of the UTF-8 sequence that starts with lead, 0 if lead cannot start one. */
static size_t s_utf8_len(unsigned char lead)
{
    if (lead < 0x80)
        return 1;
    if ((lead >> 5) == 0x6)
        return 2;
    if ((lead >> 4) == 0xe)
        return 3;
    return (lead >> 3) == 0x1e ? 4 : 0;
}

/*  Is text at most max UTF-8 characters, without control characters? A MessagePack string is
    any bytes, so malformed UTF-8 is refused here: the listing is printed as JSON. */
static bool s_text_ok(const char *text, size_t len, size_t max)
{
    size_t chars = 0;
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char)text[i];
        size_t n = s_utf8_len(ch);
        if (n == 0 || i + n > len || (n == 1 && (ch < 0x20 || ch == 0x7f)))
            return false;
        for (size_t k = 1; k < n; k++)
            if (((unsigned char)text[i + k] & 0xc0) != 0x80)
                return false;
        i += n;
        chars++;
    }
    return chars <= max;
}

/*  An integer field from 0 to 2^53-1. Absent: false with why "... required". */
static bool s_count_field(const bus_val_t *body, const char *key, int64_t *out, char *why,
                          size_t size)
{
    const bus_val_t *v = bus_val_map_get(body, key);
    if (!v || !bus_val_get_int(v, out) || *out < 0 || *out > S_INT_MAX) {
        snprintf(why, size, "%s: an integer from 0 to %lld required", key, S_INT_MAX);
        return false;
    }
    return true;
}

/*  Is name the name of a device already in list? */
static bool s_name_taken(const bus_val_t *list, const char *name)
{
    for (size_t i = 0; i < bus_val_size(list); i++) {
        const char *other = bus_val_map_get_str(bus_val_arr_get(list, i), "name");
        if (other && strcmp(other, name) == 0)
            return true;
    }
    return false;
}

/*  Check a devices list and encode it, normalised ({name, kind, health, detail} each, nothing
    else), as MessagePack into out. 0, or -1 with why. */
/*  A device's statistics as kept: the known counters that are integers 0..2^53-1, others
    dropped; NULL when none. */
static bus_val_t *s_device_stats(const bus_val_t *in)
{
    static const char *const names[] = {"bytes_in", "bytes_out",  "jobs",   "jobs_failed",
                                        "errors",   "reconnects", "queued", NULL};
    if (bus_val_type(in) != BUS_VAL_MAP)
        return NULL;
    bus_val_t *out = bus_val_new_map();
    for (int i = 0; out && names[i]; i++) {
        int64_t v;
        if (bus_val_map_get_int(in, names[i], &v) && v >= 0 && v <= S_INT_MAX)
            bus_val_map_set_int(out, names[i], v);
    }
    if (out && bus_val_size(out) == 0)
        bus_val_destroy(&out);
    return out;
}

static int s_devices_encode(const bus_val_t *list, bus_buf_t *out, char *why, size_t size)
{
    static const char *const health[] = {"ok", "warn", "error", "offline", NULL};
    if (bus_val_type(list) != BUS_VAL_ARR || bus_val_size(list) > S_DEVICES_MAX) {
        snprintf(why, size, "devices: an array of at most %d devices", S_DEVICES_MAX);
        return -1;
    }
    bus_val_t *norm = bus_val_new_arr();
    int rc = norm ? 0 : -1;
    if (!norm)
        snprintf(why, size, "out of memory");
    for (size_t i = 0; rc == 0 && i < bus_val_size(list); i++) {
        const bus_val_t *d = bus_val_arr_get(list, i);
        const char *name = bus_val_map_get_str(d, "name");
        const char *kind = bus_val_map_get_str(d, "kind");
        const char *h = bus_val_map_get_str(d, "health");
        const bus_val_t *dv = bus_val_map_get(d, "detail");
        size_t dlen = 0;
        const char *detail = dv ? bus_val_get_str(dv, &dlen) : "";
        bool health_ok = false;
        for (int k = 0; h && health[k]; k++)
            health_ok = health_ok || strcmp(h, health[k]) == 0;
        if (bus_val_type(d) != BUS_VAL_MAP || !pos_sale_id_ok(name, S_DEV_NAME_MAX, "_-.") ||
            !pos_sale_id_ok(kind, S_DEV_KIND_MAX, "_-")) {
            snprintf(why, size,
                     "devices[%zu]: name (1-%d letters, digits, '_', '-', '.') and kind (1-%d "
                     "letters, digits, '_', '-') required",
                     i, S_DEV_NAME_MAX, S_DEV_KIND_MAX);
            rc = -1;
        } else if (s_name_taken(norm, name)) {
            snprintf(why, size, "devices[%zu]: name '%s' given twice", i, name);
            rc = -1;
        } else if (!health_ok) {
            snprintf(why, size, "devices[%zu]: health must be ok, warn, error or offline", i);
            rc = -1;
        } else if (!detail || !s_text_ok(detail, dlen, S_DEV_DETAIL_MAX)) {
            snprintf(why, size, "devices[%zu]: detail: text of at most %d characters", i,
                     S_DEV_DETAIL_MAX);
            rc = -1;
        } else {
            bus_val_t *m = bus_val_new_map();
            bus_val_t *stats = s_device_stats(bus_val_map_get(d, "stats"));
            if (!m || bus_val_map_set_str(m, "name", name) ||
                bus_val_map_set_str(m, "kind", kind) || bus_val_map_set_str(m, "health", h) ||
                bus_val_map_set_str(m, "detail", detail) ||
                (stats && bus_val_map_set(m, "stats", &stats)) || bus_val_arr_push(norm, &m)) {
                bus_val_destroy(&m);
                snprintf(why, size, "out of memory");
                rc = -1;
            }
        }
    }
    if (rc == 0 && bus_val_encode(norm, out) != 0) {
        snprintf(why, size, "out of memory");
        rc = -1;
    }
    bus_val_destroy(&norm);
    return rc;
}

/*  Copy the optional text field key of port p into m when it is text of at most
    S_PORT_TEXT_MAX characters; false when present and not. */
static bool s_port_text(const bus_val_t *p, const char *key, bool required, bus_val_t *m)
{
    const bus_val_t *v = bus_val_map_get(p, key);
    size_t len = 0;
    const char *text = v ? bus_val_get_str(v, &len) : NULL;
    if (!v)
        return !required;
    if (!text || len == 0 || !s_text_ok(text, len, S_PORT_TEXT_MAX))
        return false;
    return bus_val_map_set_str(m, key, text) == 0;
}

/*  Copy the optional integer field key (0..S_USB_ID_MAX) of port p into m; false when present
    and not such an integer. */
static bool s_port_id(const bus_val_t *p, const char *key, bus_val_t *m)
{
    const bus_val_t *v = bus_val_map_get(p, key);
    int64_t id;
    if (!v)
        return true;
    return bus_val_get_int(v, &id) && id >= 0 && id <= S_USB_ID_MAX &&
           bus_val_map_set_int(m, key, id) == 0;
}

/*  One serial port normalised (known fields only, in one order), or NULL when it is not one. */
static bus_val_t *s_port_norm(const bus_val_t *p)
{
    static const char *const texts[] = {"description", "manufacturer", "product", "serial", NULL};
    static const char *const ids[] = {"usb_vid", "usb_pid", "usb_bus", "usb_address", NULL};
    const char *transport = bus_val_map_get_str(p, "transport");
    const bus_val_t *dv = bus_val_map_get(p, "device");
    const char *device = dv ? bus_val_get_str(dv, NULL) : NULL;
    if (bus_val_type(p) != BUS_VAL_MAP || !transport ||
        (strcmp(transport, "native") && strcmp(transport, "usb") &&
         strcmp(transport, "bluetooth")) ||
        (dv && !pos_sale_id_ok(device, S_DEV_NAME_MAX, "_-.")))
        return NULL;
    bus_val_t *m = bus_val_new_map();
    bool ok =
        m && s_port_text(p, "name", true, m) && bus_val_map_set_str(m, "transport", transport) == 0;
    for (int k = 0; ok && ids[k]; k++)
        ok = s_port_id(p, ids[k], m);
    for (int k = 0; ok && texts[k]; k++)
        ok = s_port_text(p, texts[k], false, m);
    if (ok && device)
        ok = bus_val_map_set_str(m, "device", device) == 0;
    if (!ok)
        bus_val_destroy(&m);
    return m;
}

/*  Check a node's serial ports list and encode it, normalised, as MessagePack into out. 0, or
    -1 with why. */
static int s_ports_encode(const bus_val_t *list, bus_buf_t *out, char *why, size_t size)
{
    if (bus_val_type(list) != BUS_VAL_ARR || bus_val_size(list) > S_PORTS_MAX) {
        snprintf(why, size, "ports: an array of at most %d ports", S_PORTS_MAX);
        return -1;
    }
    bus_val_t *norm = bus_val_new_arr();
    int rc = norm ? 0 : -1;
    if (!norm)
        snprintf(why, size, "out of memory");
    for (size_t i = 0; rc == 0 && i < bus_val_size(list); i++) {
        bus_val_t *m = s_port_norm(bus_val_arr_get(list, i));
        if (!m) {
            snprintf(why, size,
                     "ports[%zu]: name (text of 1-%d characters), transport (native, usb or "
                     "bluetooth) required; usb_vid, usb_pid, usb_bus, usb_address 0-%d; "
                     "description, manufacturer, product, serial text of 1-%d characters; "
                     "device a device name",
                     i, S_PORT_TEXT_MAX, S_USB_ID_MAX, S_PORT_TEXT_MAX);
            rc = -1;
        } else if (s_name_taken(norm, bus_val_map_get_str(m, "name"))) {
            snprintf(why, size, "ports[%zu]: port '%s' given twice", i,
                     bus_val_map_get_str(m, "name"));
            bus_val_destroy(&m);
            rc = -1;
        } else if (bus_val_arr_push(norm, &m) != 0) {
            snprintf(why, size, "out of memory");
            rc = -1;
        }
    }
    if (rc == 0 && bus_val_encode(norm, out) != 0) {
        snprintf(why, size, "out of memory");
        rc = -1;
    }
    bus_val_destroy(&norm);
    return rc;
}

static int s_caller_node(s_devices_t *self, bus_service_t *svc, const bus_val_t *body,
                         s_node_id_t *node)
{
    return svc_caller_node(svc, body, node, self->c_bad, self->c_other_register);
}

/* ---- node.hello ------------------------------------------------------------------ */

static int s_hello(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_devices_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    char why[S_WHY_MAX];
    const char *version = bus_val_map_get_str(body, "version");
    int64_t config_version;
    if (!pos_sale_id_ok(version, S_VERSION_MAX, "._-+~"))
        return s_bad(self, svc,
                     "version: 1-32 letters, digits, '.', '_', '-', '+' or '~' required");
    if (!s_count_field(body, "config_version", &config_version, why, sizeof(why)))
        return s_bad(self, svc, why);
    bus_buf_t devices = {0}, ports = {0};
    const bus_val_t *plist = bus_val_map_get(body, "ports");
    if (s_devices_encode(bus_val_map_get(body, "devices"), &devices, why, sizeof(why)) != 0 ||
        (plist && s_ports_encode(plist, &ports, why, sizeof(why)) != 0)) {
        bus_buf_free(&devices);
        bus_buf_free(&ports);
        return s_bad(self, svc, why);
    }
    s_node_id_t node;
    if (s_caller_node(self, svc, body, &node) != 0) {
        bus_buf_free(&devices);
        bus_buf_free(&ports);
        return -1;
    }
    char key[BUS_KEY_MAX], set[BUS_KEY_MAX], now[S_NUM_MAX], cv[S_NUM_MAX];
    bus_key_node(key, node.store, node.reg);
    bus_key_nodes(set, node.store);
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    snprintf(cv, sizeof(cv), "%" PRId64, config_version);
    /* a node that sends no ports (an older posnode) has none known: '' removes a stale list */
    const char *devs = (const char *)devices.data,
               *pts = ports.data ? (const char *)ports.data : "";
    const char *argv[] = {key, set, node.reg, now, version, cv, devs, pts};
    size_t lens[] = {strlen(key),     strlen(set), strlen(node.reg), strlen(now),
                     strlen(version), strlen(cv),  devices.len,      ports.len};
    redisReply *r = bus_redis_evalsha(self->redis, self->hello, 2, 8, argv, lens);
    bus_buf_free(&devices);
    bus_buf_free(&ports);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "hello");
    freeReplyObject(r);
    bus_stats_inc(self->c_hellos, 1);
    bus_info("devices.hello", "store=%s register=%s version=%s config_version=%" PRId64, node.store,
             node.reg, version, config_version);
    bus_val_map_set_bool(reply, "ok", true);
    bus_val_map_set_int(reply, "heartbeat_offline_ms", self->offline_ms);
    return 0;
}

/* ---- node.heartbeat ---------------------------------------------------------------- */

/*  Ask the register to resend from..to, on the topic and in the shape sales uses. */
static void s_ask_resend(s_devices_t *self, const s_node_id_t *node, int64_t from, int64_t to)
{
    bus_stats_inc(self->c_resends, 1);
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", node->store);
    bus_val_map_set_str(body, "register", node->reg);
    bus_val_map_set_int(body, "missing_from", from);
    bus_val_map_set_int(body, "missing_to", to);
    char topic[BUS_TOPIC_MAX];
    snprintf(topic, sizeof(topic), "register.%s.%s.resend", node->store, node->reg);
    bus_pub_publish(self->pub, topic, "register.resend", &body);
    bus_info("devices.resend", "store=%s register=%s missing=%" PRId64 "..%" PRId64, node->store,
             node->reg, from, to);
}

static int s_heartbeat(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_devices_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    char why[S_WHY_MAX];
    int64_t last_seq, unsynced, config_version;
    if (!s_count_field(body, "last_seq", &last_seq, why, sizeof(why)) ||
        !s_count_field(body, "unsynced", &unsynced, why, sizeof(why)) ||
        !s_count_field(body, "config_version", &config_version, why, sizeof(why)))
        return s_bad(self, svc, why);
    bus_buf_t devices = {0}, ports = {0};
    const bus_val_t *list = bus_val_map_get(body, "devices");
    const bus_val_t *plist = bus_val_map_get(body, "ports");
    if ((list && s_devices_encode(list, &devices, why, sizeof(why)) != 0) ||
        (plist && s_ports_encode(plist, &ports, why, sizeof(why)) != 0)) {
        bus_buf_free(&devices);
        bus_buf_free(&ports);
        return s_bad(self, svc, why);
    }
    s_node_id_t node;
    if (s_caller_node(self, svc, body, &node) != 0) {
        bus_buf_free(&devices);
        bus_buf_free(&ports);
        return -1;
    }
    char key[BUS_KEY_MAX], set[BUS_KEY_MAX], regseq[BUS_KEY_MAX], cfg[BUS_KEY_MAX];
    char cmds[BUS_KEY_MAX];
    char now[S_NUM_MAX], last[S_NUM_MAX], uns[S_NUM_MAX], cv[S_NUM_MAX], every[S_NUM_MAX];
    bus_key_node(key, node.store, node.reg);
    bus_key_nodes(set, node.store);
    bus_key_regseq(regseq, node.store);
    bus_key_cfg(cfg, node.store, NULL);
    bus_key_devcmds(cmds, node.store, node.reg);
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    snprintf(last, sizeof(last), "%" PRId64, last_seq);
    snprintf(uns, sizeof(uns), "%" PRId64, unsynced);
    snprintf(cv, sizeof(cv), "%" PRId64, config_version);
    snprintf(every, sizeof(every), "%" PRId64, self->resend_ms);
    const char *devs = devices.data ? (const char *)devices.data : "";
    const char *pts = ports.data ? (const char *)ports.data : "";
    const char *argv[] = {key,  set, regseq, cfg,  cmds,  node.reg, now,
                          last, uns, cv,     devs, every, pts};
    size_t lens[] = {strlen(key),      strlen(set),   strlen(regseq), strlen(cfg), strlen(cmds),
                     strlen(node.reg), strlen(now),   strlen(last),   strlen(uns), strlen(cv),
                     devices.len,      strlen(every), ports.len};
    redisReply *r = bus_redis_evalsha(self->redis, self->heartbeat, 5, 13, argv, lens);
    bus_buf_free(&devices);
    bus_buf_free(&ports);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 6)
        return s_redis_failed(self, svc, r, "heartbeat");
    for (size_t i = 0; i < 6; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return s_redis_failed(self, svc, r, "heartbeat reply");
    int64_t status = r->element[0]->integer, committed = r->element[1]->integer;
    int64_t from = r->element[2]->integer, to = r->element[3]->integer;
    int64_t latest = r->element[4]->integer, commands = r->element[5]->integer;
    freeReplyObject(r);
    bus_stats_inc(self->c_heartbeats, 1);
    bus_val_map_set_bool(reply, "ok", true);
    bus_val_map_set_int(reply, "committed_seq", committed);
    bus_val_map_set_int(reply, "config_version", latest);
    /* a register that missed command.<S>.<R> learns here that commands wait */
    bus_val_map_set_int(reply, "commands", commands);
    if (status == 2 && from >= 1 && to >= from) {
        s_ask_resend(self, &node, from, to);
        bus_val_t *resend = bus_val_new_map();
        bus_val_map_set_int(resend, "from", from);
        bus_val_map_set_int(resend, "to", to);
        bus_val_map_set(reply, "resend", &resend);
    } else {
        if (status == 1)
            bus_stats_inc(self->c_resends_limited, 1);
        bus_val_t *none = bus_val_new_nil();
        bus_val_map_set(reply, "resend", &none);
    }
    return 0;
}

/* ---- node.list ------------------------------------------------------------------------ */

/*  A page of the listing being built: rows after `after` (store, register), at most want rows
    and S_LIST_BYTES of encoded rows. */
typedef struct {
    bus_val_t *list;
    bus_buf_t scratch;
    size_t bytes;
    int64_t want, now;
    const char *after_store, *after_reg; /* NULL: from the first */
    bool more;
    char last[2 * BUS_ID_PART_MAX + 2]; /* "<store>.<register>" of the last row */
} s_page_t;

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*  The string elements of a set reply that are ids, sorted (borrowed from r); NULL when out of
    memory. */
static const char **s_sorted(const redisReply *r, size_t *n)
{
    const char **out = calloc(r->elements + 1, sizeof(*out));
    *n = 0;
    for (size_t i = 0; out && i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && bus_identity_id_ok(r->element[i]->str))
            out[(*n)++] = r->element[i]->str;
    if (out)
        qsort(out, *n, sizeof(*out), s_cmp_str);
    return out;
}

static int64_t s_elem_int(const redisReply *r, size_t i)
{
    return r->element[i]->type == REDIS_REPLY_STRING ? strtoll(r->element[i]->str, NULL, 10) : 0;
}

/*  A MessagePack array of a node's hash field (an HMGET element), or NULL when absent or not
    an array. */
static bus_val_t *s_elem_arr(const redisReply *r, size_t i)
{
    bus_val_t *v = r->element[i]->type == REDIS_REPLY_STRING
                       ? bus_val_decode(r->element[i]->str, r->element[i]->len, NULL, NULL)
                       : NULL;
    if (bus_val_type(v) != BUS_VAL_ARR)
        bus_val_destroy(&v);
    return v;
}

/*  One row of the listing from HMGET version last_heartbeat_ms last_seq unsynced
    config_version devices ports. */
static bus_val_t *s_node_row(s_devices_t *self, const char *store, const char *reg,
                             const redisReply *h, int64_t committed, int64_t now)
{
    bus_val_t *row = bus_val_new_map();
    if (!row)
        return NULL;
    int64_t hb = s_elem_int(h, 1);
    int64_t ago = hb > 0 ? now - hb : -1;
    if (hb > 0 && ago < 0)
        ago = 0; /* the clocks of two instances a little apart */
    bus_val_map_set_str(row, "store", store);
    bus_val_map_set_str(row, "register", reg);
    bus_val_map_set_str(row, "version",
                        h->element[0]->type == REDIS_REPLY_STRING ? h->element[0]->str : "");
    bus_val_map_set_bool(row, "online", ago >= 0 && ago <= self->offline_ms);
    bus_val_map_set_int(row, "last_heartbeat_ms_ago", ago);
    bus_val_map_set_int(row, "last_seq", s_elem_int(h, 2));
    bus_val_map_set_int(row, "committed_seq", committed);
    bus_val_map_set_int(row, "unsynced", s_elem_int(h, 3));
    bus_val_map_set_int(row, "config_version", s_elem_int(h, 4));
    bus_val_t *devices = s_elem_arr(h, 5);
    if (!devices)
        devices = bus_val_new_arr();
    bus_val_map_set(row, "devices", &devices);
    /* nil: the node never said (an older posnode); [] : it has no serial port */
    bus_val_t *ports = s_elem_arr(h, 6);
    if (!ports)
        ports = bus_val_new_nil();
    bus_val_map_set(row, "ports", &ports);
    return row;
}

/*  Add a row to the page unless the page is full (then more is set and row dropped).
    Returns 1 added, 0 full, -1 out of memory. Takes row. */
static int s_page_add(s_page_t *page, bus_val_t **row_p, const char *store, const char *reg)
{
    bus_buf_reset(&page->scratch);
    if (bus_val_encode(*row_p, &page->scratch) != 0) {
        bus_val_destroy(row_p);
        return -1;
    }
    size_t n = bus_val_size(page->list);
    if (n > 0 && ((int64_t)n >= page->want || page->bytes + page->scratch.len > S_LIST_BYTES)) {
        page->more = true;
        bus_val_destroy(row_p);
        return 0;
    }
    page->bytes += page->scratch.len;
    snprintf(page->last, sizeof(page->last), "%s.%s", store, reg);
    return bus_val_arr_push(page->list, row_p) == 0 ? 1 : -1;
}

/*  Read the rows of regs (n registers of store) in one round trip: an HMGET of every node hash,
    then one HMGET of their committed sequences. Fills replies[0..n] (the caller frees them).
    0, or -1 after answering on svc. */
static int s_read_nodes(s_devices_t *self, bus_service_t *svc, const char *store, const char **regs,
                        size_t n, redisReply **replies)
{
    char key[BUS_KEY_MAX], regseq[BUS_KEY_MAX];
    bus_key_regseq(regseq, store);
    const char **argv = calloc(n + 2, sizeof(*argv));
    if (!argv)
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    size_t queued = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        bus_key_node(key, store, regs[i]);
        ok = bus_redis_append(self->redis,
                              "HMGET %s version last_heartbeat_ms last_seq unsynced "
                              "config_version devices ports",
                              key) == 0;
        queued += ok ? 1 : 0;
    }
    argv[0] = "HMGET";
    argv[1] = regseq;
    for (size_t i = 0; i < n; i++)
        argv[i + 2] = regs[i];
    if (ok) {
        ok = bus_redis_appendargv(self->redis, (int)n + 2, argv, NULL) == 0;
        queued += ok ? 1 : 0;
    }
    free(argv);
    /* read every reply queued, even after a bad one, so the connection stays in step */
    for (size_t i = 0; i < queued; i++)
        replies[i] = bus_redis_get_reply(self->redis);
    if (!ok)
        return s_redis_failed(self, svc, NULL, "node read");
    for (size_t i = 0; i <= n; i++) {
        redisReply *r = replies[i];
        size_t want = i < n ? 7 : n;
        if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != want) {
            replies[i] = NULL;
            return s_redis_failed(self, svc, r, "node read");
        }
    }
    return 0;
}

/*  Add the rows of store's nodes after page->after, sorted by register, until the page is full.
    0, or -1 after answering on svc. */
static int s_list_store(s_devices_t *self, bus_service_t *svc, const char *store, s_page_t *page)
{
    char set[BUS_KEY_MAX];
    bus_key_nodes(set, store);
    redisReply *m = bus_redis_command(self->redis, "SMEMBERS %s", set);
    if (!bus_redis_reply_ok(m) || m->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(self, svc, m, "node set");
    size_t n = 0, skip = 0;
    const char **regs = s_sorted(m, &n);
    redisReply **replies = calloc(n + 1, sizeof(*replies));
    int rc = regs && replies ? 0 : bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    bool same = page->after_store && strcmp(store, page->after_store) == 0;
    while (rc == 0 && same && skip < n && strcmp(regs[skip], page->after_reg) <= 0)
        skip++;
    if (rc == 0 && skip < n)
        rc = s_read_nodes(self, svc, store, regs + skip, n - skip, replies);
    for (size_t i = skip; rc == 0 && i < n && !page->more; i++) {
        const redisReply *seq = replies[n - skip];
        const redisReply *c = seq->element[i - skip];
        int64_t committed = c->type == REDIS_REPLY_STRING ? strtoll(c->str, NULL, 10) : 0;
        bus_val_t *row = s_node_row(self, store, regs[i], replies[i - skip], committed, page->now);
        if (!row || s_page_add(page, &row, store, regs[i]) < 0)
            rc = bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    }
    for (size_t i = 0; replies && i <= n; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
    free(replies);
    free(regs);
    freeReplyObject(m);
    return rc;
}

/*  Parse "after" ("<store>.<register>") into buf: *store and *reg point into it. */
static bool s_after_ok(const char *after, char *buf, size_t size, const char **store,
                       const char **reg)
{
    if (!after || strlen(after) >= size)
        return false;
    snprintf(buf, size, "%s", after);
    char *dot = strchr(buf, '.');
    if (!dot)
        return false;
    *dot = '\0';
    *store = buf;
    *reg = dot + 1;
    return bus_identity_id_ok(*store) && bus_identity_id_ok(*reg);
}

static int s_list(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    s_devices_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const bus_val_t *sv = bus_val_map_get(body, "store"), *av = bus_val_map_get(body, "after");
    const bus_val_t *cv = bus_val_map_get(body, "count");
    const char *store = sv ? bus_val_get_str(sv, NULL) : NULL;
    s_page_t page = {.want = S_LIST_MAX, .now = bus_now_ms()};
    char after[2 * BUS_ID_PART_MAX + 2];
    if (sv && !bus_identity_id_ok(store))
        return s_bad(self, svc, "store: an id (letters, digits, '_')");
    if (av && !s_after_ok(bus_val_get_str(av, NULL), after, sizeof(after), &page.after_store,
                          &page.after_reg))
        return s_bad(self, svc, "after: the \"last\" of the previous page (STORE.REGISTER)");
    if (cv && (!bus_val_get_int(cv, &page.want) || page.want < 1 || page.want > S_LIST_MAX))
        return s_bad(self, svc, "count: an integer from 1 to 1000");
    redisReply *stores = NULL;
    const char **ids = NULL;
    size_t n = 0;
    if (store) {
        ids = calloc(1, sizeof(*ids));
        if (ids)
            ids[n++] = store;
    } else {
        stores = bus_redis_command(self->redis, "SMEMBERS %s", BUS_KEY_STORES);
        if (!bus_redis_reply_ok(stores) || stores->type != REDIS_REPLY_ARRAY)
            return s_redis_failed(self, svc, stores, "store set");
        ids = s_sorted(stores, &n);
    }
    page.list = bus_val_new_arr();
    int rc = ids && page.list ? 0 : bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; rc == 0 && i < n && !page.more; i++)
        if (!page.after_store || strcmp(ids[i], page.after_store) >= 0)
            rc = s_list_store(self, svc, ids[i], &page);
    if (rc == 0) {
        bus_val_map_set_int(reply, "count", (int64_t)bus_val_size(page.list));
        bus_val_map_set_int(reply, "offline_after_ms", self->offline_ms);
        bus_val_map_set(reply, "nodes", &page.list);
        bus_val_map_set_str(reply, "last", page.last[0] ? page.last : (av ? after : ""));
        bus_val_map_set_bool(reply, "more", page.more);
    }
    bus_val_destroy(&page.list);
    bus_buf_free(&page.scratch);
    free(ids);
    if (stores)
        freeReplyObject(stores);
    return rc;
}

/* ---- metrics --------------------------------------------------------------------------- */

#define S_METRICS_NODES_MAX 500 /* registers on one page (~26 series each, ~1.7 MB at most) */

/*  The gauges of one node from HMGET last_heartbeat_ms unsynced devices. */
static void s_metrics_node(s_devices_t *self, bus_metrics_out_t *out, const char *store,
                           const char *reg, const redisReply *h, int64_t now)
{
    if (!h || h->type != REDIS_REPLY_ARRAY || h->elements != 3)
        return;
    int64_t hb = s_elem_int(h, 0);
    const char *const labels[] = {"store", store, "register", reg, NULL};
    bus_metrics_out_gauge(out, "node_online",
                          "1 when the register's last hello or heartbeat is recent "
                          "(node-offline-ms)",
                          labels, hb > 0 && now - hb <= self->offline_ms);
    bus_metrics_out_gauge(out, "node_unsynced_sales",
                          "sales the register journaled and has not uploaded yet (its last "
                          "heartbeat)",
                          labels, s_elem_int(h, 1));
}

/*  One series per peripheral and health state, 1 for the state it is in. */
static void s_metrics_devices(bus_metrics_out_t *out, const char *store, const char *reg,
                              const redisReply *h)
{
    static const char *const states[] = {"ok", "warn", "error", "offline", NULL};
    bus_val_t *devices =
        h && h->type == REDIS_REPLY_ARRAY && h->elements == 3 ? s_elem_arr(h, 2) : NULL;
    for (size_t i = 0; i < bus_val_size(devices); i++) {
        const bus_val_t *d = bus_val_arr_get(devices, i);
        const char *name = bus_val_get_str(bus_val_map_get(d, "name"), NULL);
        const char *kind = bus_val_get_str(bus_val_map_get(d, "kind"), NULL);
        const char *health = bus_val_get_str(bus_val_map_get(d, "health"), NULL);
        if (!name || !kind || !health)
            continue;
        for (int k = 0; states[k]; k++) {
            const char *const labels[] = {"store", store, "register", reg,       "device", name,
                                          "kind",  kind,  "health",   states[k], NULL};
            bus_metrics_out_gauge(out, "device_health",
                                  "1 for the health a register's peripheral last reported", labels,
                                  strcmp(health, states[k]) == 0);
        }
    }
    bus_val_destroy(&devices);
}

/*  The node registry as gauges: every register's online state and unsynced sales, and every
    peripheral's health, up to S_METRICS_NODES_MAX registers (node_metrics_truncated says when
    there were more). Two pipelined rounds per store; nothing when Redis cannot be asked. */
static void s_metrics(bus_metrics_out_t *out, void *arg)
{
    s_devices_t *self = arg;
    redisReply *stores = bus_redis_command(self->redis, "SMEMBERS %s", BUS_KEY_STORES);
    size_t nstores = 0, total = 0;
    const char **ids =
        stores && stores->type == REDIS_REPLY_ARRAY ? s_sorted(stores, &nstores) : NULL;
    /* per store: its registers, then their hashes, kept to write the two families in turn */
    size_t cap = S_METRICS_NODES_MAX;
    const char **regs = calloc(cap, sizeof(*regs)), **regstore = calloc(cap, sizeof(*regstore));
    redisReply **sets = calloc(nstores + 1, sizeof(*sets)), **rows = calloc(cap, sizeof(*rows));
    bool truncated = false;
    for (size_t i = 0; regs && regstore && sets && rows && i < nstores; i++) {
        char key[BUS_KEY_MAX];
        bus_key_nodes(key, ids[i]);
        sets[i] = bus_redis_command(self->redis, "SMEMBERS %s", key);
        size_t n = 0;
        const char **members =
            sets[i] && sets[i]->type == REDIS_REPLY_ARRAY ? s_sorted(sets[i], &n) : NULL;
        size_t first = total, queued = 0;
        for (size_t j = 0; members && j < n; j++) {
            if (total >= cap) {
                truncated = true;
                break;
            }
            bus_key_node(key, ids[i], members[j]);
            if (bus_redis_append(self->redis, "HMGET %s last_heartbeat_ms unsynced devices", key) !=
                0)
                break;
            regs[total] = members[j];
            regstore[total++] = ids[i];
            queued++;
        }
        for (size_t j = 0; j < queued; j++) /* every reply read: the connection stays in step */
            rows[first + j] = bus_redis_get_reply(self->redis);
        free(members);
    }
    int64_t now = bus_now_ms();
    for (size_t i = 0; i < total; i++)
        s_metrics_node(self, out, regstore[i], regs[i], rows[i], now);
    for (size_t i = 0; i < total; i++)
        s_metrics_devices(out, regstore[i], regs[i], rows[i]);
    bus_metrics_out_gauge(out, "node_metrics_truncated",
                          "1 when there are more registers than the page shows", NULL, truncated);
    for (size_t i = 0; rows && i < total; i++)
        if (rows[i])
            freeReplyObject(rows[i]);
    for (size_t i = 0; sets && i < nstores; i++)
        if (sets[i])
            freeReplyObject(sets[i]);
    free(rows);
    free(sets);
    free(regstore);
    free(regs);
    free(ids);
    if (stores)
        freeReplyObject(stores);
}

int main(int argc, char **argv)
{
    int exit_code;
    bus_config_t *config = svc_config_load(S_PROGRAM, s_options, false, argc, argv, &exit_code);
    svc_core_t core;
    if (!config || svc_core_start(&core, config, S_PROGRAM, false) != 0)
        return config ? 1 : exit_code;
    s_devices_t self;
    memset(&self, 0, sizeof(self));
    self.redis = core.redis;
    self.pub = core.pub;
    self.offline_ms = bus_config_int(config, "node-offline-ms");
    self.resend_ms = bus_config_int(config, "resend-interval-ms");
    self.hello = bus_redis_script(self.redis, hello_lua);
    self.heartbeat = bus_redis_script(self.redis, heartbeat_lua);
    self.stats = bus_service_stats(core.svc);
    self.c_hellos = bus_stats_counter(self.stats, "hellos");
    self.c_heartbeats = bus_stats_counter(self.stats, "heartbeats");
    self.c_bad = bus_stats_counter(self.stats, "bad_requests");
    self.c_other_register = bus_stats_counter(self.stats, "refused_other_register");
    self.c_resends = bus_stats_counter(self.stats, "resends_asked");
    self.c_resends_limited = bus_stats_counter(self.stats, "resends_limited");
    self.c_redis_errors = bus_stats_counter(self.stats, "redis_errors");
    /* Who may call what (docs/protocol.md). A node speaks only for itself: its store and
       register come from its certificate. hello and heartbeat overwrite the node's row with
       what it says now, so a retry is harmless and skips the reply cache (heartbeats are the
       most frequent request here). */
    static const bus_method_t methods[] = {
        {"node.hello", s_hello, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {"node.heartbeat", s_heartbeat, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {"node.list", s_list, BUS_METHOD_READ, BUS_ROLES_ALL},
        {NULL, NULL, 0, 0}};
    int rc = bus_service_methods(core.svc, methods, &self);
    devices_config_t *cfg = devices_config_new(self.redis, self.pub, self.stats,
                                               bus_config_int(config, "reply-cache-ttl-s"));
    if (rc == 0)
        rc = cfg ? devices_config_methods(cfg, core.svc) : -1;
    devices_commands_t *cmds = devices_commands_new(self.redis, self.pub, self.stats);
    if (rc == 0)
        rc = cmds ? devices_commands_methods(cmds, core.svc) : -1;
    if (rc == 0)
        rc = bus_metrics_add_collector(core.metrics, s_metrics, &self);
    if (rc != 0 || self.hello < 0 || self.heartbeat < 0 || !self.c_redis_errors) {
        bus_error("devices.start", "cannot register methods or scripts: out of memory");
        rc = -1;
    } else
        svc_core_run(&core, NULL, NULL);
    bus_info("devices.stopping", "heartbeats=%" PRId64 " resends_asked=%" PRId64,
             self.c_heartbeats ? bus_stats_load(self.c_heartbeats) : 0,
             self.c_resends ? bus_stats_load(self.c_resends) : 0);
    svc_core_stop(&core);
    devices_commands_destroy(&cmds);
    devices_config_destroy(&cfg);
    return rc == 0 ? 0 : 1;
}
