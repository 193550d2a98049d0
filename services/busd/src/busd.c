/*  =========================================================================
    busd - the posbus bus daemon

    Two jobs, no business state:
    1. An XSUB/XPUB proxy for events. Publishers connect to the XSUB side,
       subscribers to the XPUB side; subscriptions flow upstream so a
       publisher only sends what somebody wants.
    2. A request router. Clients and service instances connect DEALER
       sockets to one ROUTER (bus/proto.h has the frames). Instances
       register by heartbeating; busd spreads requests over the live
       instances of a service round-robin, drops an instance that misses
       heartbeats or whose connection is gone (ROUTER_MANDATORY tells at
       once), and answers "no_service" when none is left.

    Identity: busd reads the role and name of every enrolled key from the
    certificates in --clients-dir (bus/identity.h) and looks up the
    authenticated key (ZAP User-Id) of every message it forwards in that
    table, re-read within a second of the directory changing, so a revoked
    key is refused on connections that are already open too. It enforces
    what each role may do on the bus (register service instances, reply,
    publish which topics) and hands the caller's identity to the service
    with each request, in a frame no client can set; services check their
    methods' roles themselves.

    Everything runs on one thread around one zmq_poll: busd's work per
    message is a hash lookup and a few frame moves, so one core forwards
    hundreds of thousands of messages a second, and there are no locks.
    Restarting busd loses only in-flight messages: clients resend requests
    after their timeout, instances re-register with their next heartbeat,
    subscribers reconnect and re-send subscriptions by themselves.
    =========================================================================
*/
#include <dirent.h>
#include <sys/stat.h>
#include <bus/bus.h>
#include <bus/metrics.h>

#define S_PROGRAM         "busd"
#define S_PROXY_BURST     1000 /* messages moved per socket per poll, as zmq_proxy does */
#define S_PURGE_EVERY_MS  250
#define S_ID_HEX_MAX      (2 * 256 + 1)
#define S_FRAMES_MAX      8
#define S_KEY_TXT         41   /* Z85 public key, 40 characters, as ZAP's User-Id */
#define S_KEYS_SETTLE_MS  2000 /* re-read the clients directory until it is this old */
#define S_REFUSAL_LOG_MS  1000 /* at most one log line per refusal reason this often */
#define S_ZAP_ENDPOINT    "inproc://zeromq.zap.01" /* where libzmq asks (RFC 27) */
#define S_REBIND_ATTEMPTS 50                       /* reopening the subscriber endpoint: tries, */
#define S_REBIND_PAUSE_MS 10                       /* and the pause between two */
#define S_KEYS_RELOAD_MS  100 /* while the directory settles, re-read it at most this often */

static const bus_opt_t s_options[] = {
    {"pub-bind", BUS_OPT_STR, BUS_DEFAULT_PUB_ENDPOINT, 0, 0,
     "endpoint publishers connect to (XSUB); comma-separated for several"},
    {"sub-bind", BUS_OPT_STR, BUS_DEFAULT_SUB_ENDPOINT, 0, 0,
     "endpoint subscribers connect to (XPUB); comma-separated for several"},
    {"req-bind", BUS_OPT_STR, BUS_DEFAULT_REQ_ENDPOINT, 0, 0,
     "endpoint clients and service instances connect to (ROUTER); comma-separated"},
    {"cert", BUS_OPT_STR, NULL, 0, 0, "busd's secret CURVE certificate (for tcp:// endpoints)"},
    {"clients-dir", BUS_OPT_STR, NULL, 0, 0,
     "directory of allowed client public certificates; remove a file to revoke"},
    {"insecure", BUS_OPT_BOOL, "false", 0, 0,
     "plaintext tcp:// (development only; logs a warning; no identities: every role check "
     "passes)"},
    {"unsafe-any-client-key", BUS_OPT_BOOL, "false", 0, 0,
     "CURVE without --clients-dir: accept any client key, no identities, every role check "
     "passes (development only; logs a warning)"},
    {"heartbeat-ms", BUS_OPT_INT, "1000", 50, 60000, "ZMTP heartbeat interval"},
    {"heartbeat-timeout-ms", BUS_OPT_INT, "3000", 100, 600000,
     "a service instance or peer silent this long is dropped"},
    {"hwm", BUS_OPT_INT, "100000", 100, 10000000,
     "per-peer high-water mark; a subscriber further behind loses events"},
    {"linger-ms", BUS_OPT_INT, "1000", 0, 60000, "on shutdown, time to flush queued messages"},
    {"log-stdout", BUS_OPT_BOOL, "false", 0, 0,
     "write log lines to standard output instead of standard error"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* The stats that are levels, not counts (exposed as gauges on the metrics page). */
static const char *const s_gauges[] = {"keys_enrolled", "instances", "services", NULL};

typedef struct s_service s_service_t;

/*  One enrolled key: its identity and what busd derives from it once, not per message. */
typedef struct {
    bus_identity_t id;
    char user[S_KEY_TXT];       /* the Z85 public key (ZAP User-Id) */
    char file[BUS_ID_FILE_MAX]; /* certificate file name in the clients directory */
    char frame[BUS_ID_FRAME_MAX + 1];
    size_t frame_len;
    char topics[2][BUS_ID_NAME_MAX + 16]; /* a register's own "device.S.R." and "node.S.R." */
} s_key_t;

/*  Why busd refused a message; each has a counter "refused_<name>". */
typedef enum {
    S_REF_UNKNOWN_KEY = 0, /* no identity: not enrolled, revoked, or no CURVE */
    S_REF_NOT_SERVICE,     /* registration or reply from a key whose role is not service */
    S_REF_SERVICE_NAME,    /* a service key registering under another service's name */
    S_REF_PUBLISH_TOPIC,   /* a topic the publisher's role may not publish */
    S_REF_PUBLISH_SRC,     /* a service event whose src is not the publishing service */
    S_REF__COUNT
} s_refusal_t;

static const char *const s_refusal_names[S_REF__COUNT] = {
    "refused_unknown_key", "refused_not_service", "refused_service_name", "refused_publish_topic",
    "refused_publish_src"};

typedef struct {
    zframe_t *identity;
    char user[S_KEY_TXT]; /* the key it registered with ("" when unchecked) */
    char key[S_ID_HEX_MAX];
    char instance[BUS_INSTANCE_MAX + 1];
    s_service_t *service;
    int64_t expiry;
    int64_t last_seen;
} s_worker_t;

struct s_service {
    char name[BUS_SERVICE_NAME_MAX + 1];
    zlistx_t *workers; /* s_worker_t*, rotated for round-robin */
};

typedef struct {
    zsock_t *xsub, *xpub, *router;
    zsock_t *zap;         /* the ZAP handler (REP), NULL when unchecked */
    bus_config_t *config; /* borrowed from main: the endpoints to (re)bind */
    bus_conn_cfg_t policy;
    bool unchecked;    /* no identities (--insecure, --unsafe-any-client-key) */
    char *clients_dir; /* NULL when unchecked */
    zhashx_t *keys;    /* Z85 public key -> s_key_t */
    struct timespec keys_mtime;
    int64_t keys_loaded; /* when the clients directory was last read (monotonic ms) */
    s_key_t unchecked_key;
    int64_t *c_refused[S_REF__COUNT];
    int64_t refusal_logged[S_REF__COUNT];
    zhashx_t *services; /* name -> s_service_t */
    zhashx_t *workers;  /* identity hex -> s_worker_t */
    int heartbeat_timeout_ms;
    int64_t started;
    char instance[BUS_INSTANCE_MAX];
    int64_t seq;
    bus_stats_t *stats;
    int64_t *c_events, *c_subs, *c_unsubs, *c_requests, *c_replies, *c_no_service;
    int64_t *c_bad_frames, *c_expired, *c_lost_replies, *c_registered, *c_byes;
    bus_codec_stats_t codec;
    bus_buf_t buf;
    bus_metrics_t *metrics; /* --metrics-listen; NULL when off */
} s_busd_t;

static void s_service_free(void **item)
{
    s_service_t *svc = *item;
    if (svc) {
        zlistx_destroy(&svc->workers);
        free(svc);
        *item = NULL;
    }
}

static void s_worker_free(void **item)
{
    s_worker_t *w = *item;
    if (w) {
        zframe_destroy(&w->identity);
        free(w);
        *item = NULL;
    }
}

static void s_hex(const zframe_t *frame, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = zframe_size((zframe_t *)frame);
    const byte *d = zframe_data((zframe_t *)frame);
    if (n > (S_ID_HEX_MAX - 1) / 2)
        n = (S_ID_HEX_MAX - 1) / 2;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 0xf];
    }
    out[2 * n] = '\0';
}

/*  Count a refusal and log it, at most once a second per reason (a misbehaving peer repeats). */
static void s_refuse(s_busd_t *self, s_refusal_t why, const s_key_t *who, const char *what)
{
    (*self->c_refused[why])++;
    int64_t now = bus_mono_ms();
    if (now - self->refusal_logged[why] < S_REFUSAL_LOG_MS)
        return;
    self->refusal_logged[why] = now;
    bus_warn("busd.refused", "reason=%s caller=%s %s what=%s", s_refusal_names[why] + 8,
             who ? bus_role_name(who->id.role) : "none", who ? who->id.name : "-", what);
}

static s_key_t *s_key_new(const bus_identity_t *id, const char *file)
{
    s_key_t *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->id = *id;
    snprintf(k->file, sizeof(k->file), "%s", file);
    k->frame_len = bus_identity_encode(id, k->frame, sizeof(k->frame));
    if (id->role == BUS_ROLE_REGISTER) {
        snprintf(k->topics[0], sizeof(k->topics[0]), "device.%s.%s.", id->store, id->reg);
        snprintf(k->topics[1], sizeof(k->topics[1]), "node.%s.%s.", id->store, id->reg);
    }
    return k;
}

/*  Read every certificate in the clients directory into a new table. A certificate without a
    valid role is left out, and a key enrolled in two files is refused (which file should win is
    a guess): both logged. A directory that cannot be read gives an empty table, so busd fails
    closed. NULL only when memory ran out. */
static zhashx_t *s_keys_read(s_busd_t *self)
{
    zhashx_t *keys = zhashx_new();
    if (!keys)
        return NULL;
    zhashx_set_destructor(keys, (zhashx_destructor_fn *)zstr_free);
    DIR *dir = opendir(self->clients_dir);
    if (!dir) {
        bus_error("busd.keys", "cannot read %s (%s): every key is refused until it can be read",
                  self->clients_dir, strerror(errno));
        return keys;
    }
    zhashx_t *twice = zhashx_new(); /* keys found in more than one file */
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || n < 6 || strcmp(e->d_name + n - 5, ".cert") != 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", self->clients_dir, e->d_name);
        zcert_t *cert = zcert_load(path);
        bus_identity_t id;
        const char *err = "not a certificate";
        if (!cert || bus_identity_from_cert(cert, &id, &err) != 0) {
            bus_warn("busd.key.invalid", "file=%s reason=%s: the key is refused", path, err);
            zcert_destroy(&cert);
            continue;
        }
        s_key_t *k = s_key_new(&id, e->d_name);
        if (k)
            snprintf(k->user, sizeof(k->user), "%s", zcert_public_txt(cert));
        if (k && zhashx_insert(keys, zcert_public_txt(cert), k) != 0) {
            s_key_t *first = zhashx_lookup(keys, zcert_public_txt(cert));
            bus_warn("busd.key.invalid", "file=%s reason=the same key as %s: both are refused",
                     path, first ? first->file : "?");
            if (twice)
                zhashx_insert(twice, zcert_public_txt(cert), "");
            free(k);
        }
        zcert_destroy(&cert);
    }
    closedir(dir);
    for (void *v = twice ? zhashx_first(twice) : NULL; v; v = zhashx_next(twice))
        zhashx_delete(keys, zhashx_cursor(twice));
    zhashx_destroy(&twice);
    return keys;
}

static void s_worker_remove(s_busd_t *self, s_worker_t *w, const char *why);
static int s_xpub_open(s_busd_t *self);

/*  Re-read the clients directory when it changed (and for a while after, because a change
    within the same timestamp tick as the last read would otherwise go unseen). Instances that
    registered with a key no longer enrolled are dropped at once. */
static void s_keys_refresh(s_busd_t *self)
{
    struct stat st;
    if (self->unchecked)
        return;
    if (stat(self->clients_dir, &st) != 0)
        memset(&st, 0, sizeof(st)); /* gone: read as empty, below */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t age_ms =
        (now.tv_sec - st.st_mtim.tv_sec) * 1000 + (now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
    bool changed = !self->keys || st.st_mtim.tv_sec != self->keys_mtime.tv_sec ||
                   st.st_mtim.tv_nsec != self->keys_mtime.tv_nsec;
    if (!changed &&
        (age_ms > S_KEYS_SETTLE_MS || bus_mono_ms() - self->keys_loaded < S_KEYS_RELOAD_MS))
        return;
    self->keys_loaded = bus_mono_ms();
    zhashx_t *keys = s_keys_read(self);
    if (!keys)
        return; /* out of memory: keep the table we have and try again next time */
    self->keys_mtime = st.st_mtim;
    size_t before = self->keys ? zhashx_size(self->keys) : 0;
    int revoked = 0;
    for (s_key_t *k = self->keys ? zhashx_first(self->keys) : NULL; k;
         k = zhashx_next(self->keys)) {
        const char *user = zhashx_cursor(self->keys);
        s_key_t *now_k = zhashx_lookup(keys, user);
        if (!now_k || now_k->id.role != k->id.role || strcmp(now_k->id.name, k->id.name) != 0) {
            bus_info("busd.key.revoked", "role=%s name=%s file=%s", bus_role_name(k->id.role),
                     k->id.name, k->file);
            revoked++;
        }
    }
    zhashx_destroy(&self->keys);
    self->keys = keys;
    zlistx_t *gone = zlistx_new();
    for (s_worker_t *w = zhashx_first(self->workers); w && gone; w = zhashx_next(self->workers)) {
        const s_key_t *k = w->user[0] ? zhashx_lookup(self->keys, w->user) : NULL;
        if (w->user[0] &&
            (!k || k->id.role != BUS_ROLE_SERVICE || strcmp(k->id.name, w->service->name) != 0))
            zlistx_add_end(gone, w);
    }
    for (s_worker_t *w = gone ? zlistx_first(gone) : NULL; w; w = zlistx_next(gone))
        s_worker_remove(self, w, "key revoked");
    zlistx_destroy(&gone);
    /* A subscriber's subscriptions live in the XPUB socket, out of busd's reach: to stop a
       revoked key from receiving, drop every subscriber connection. The others reconnect and
       subscribe again within a few hundred ms (events published meanwhile are missed, which
       libbus counts as gaps); the revoked key's handshake is refused. */
    if (revoked > 0 && self->xpub && s_xpub_open(self) != 0)
        bus_error("busd.xpub", "cannot reopen the subscriber endpoint after a revocation");
    bus_stats_set(self->stats, "keys_enrolled", (int64_t)zhashx_size(self->keys));
    if (before != zhashx_size(self->keys))
        bus_info("busd.keys", "enrolled=%zu dir=%s", zhashx_size(self->keys), self->clients_dir);
}

/*  The identity of the peer that sent part: the enrolled key its connection authenticated
    with, as of the last read of the clients directory; NULL when there is none (not enrolled,
    revoked, or a connection without CURVE). Everyone is "unchecked" when busd runs without
    identities. */
static const s_key_t *s_caller(s_busd_t *self, zmq_msg_t *part)
{
    if (self->unchecked)
        return &self->unchecked_key;
    const char *user = zmq_msg_gets(part, "User-Id");
    if (!user)
        return NULL;
    /* busd's own ZAP handler admitted the key from this table: not in it now means revoked */
    return zhashx_lookup(self->keys, user);
}

/*  Back-office topics and the services that alone may publish them (space-separated), so that a
    consumer can trust what arrives on them (docs/protocol.md, "Identity and roles"). A register's
    resend request comes from sales (an upload gap) or devices (a heartbeat ahead of sales). */
static const struct {
    const char *prefix;
    const char *owner;
} s_owned_topics[] = {{"sale.", "sales"},       {"register.", "sales devices"},
                      {"stock.", "inventory"},  {"catalog.", "inventory"},
                      {"report.", "reporting"}, {"payment.", "payments"},
                      {"config.", "devices"},   {"command.", "devices"},
                      {"device.", NULL},        {"node.", NULL}};

/*  The services that own topic: their names, "" for a back-office topic no service owns alone
    (device.*, node.*), NULL for any other topic. */
static const char *s_topic_owner(const char *topic, size_t tlen)
{
    for (size_t i = 0; i < sizeof(s_owned_topics) / sizeof(s_owned_topics[0]); i++) {
        size_t n = strlen(s_owned_topics[i].prefix);
        if (tlen >= n && memcmp(topic, s_owned_topics[i].prefix, n) == 0)
            return s_owned_topics[i].owner ? s_owned_topics[i].owner : "";
    }
    return NULL;
}

/*  Is word one of the space-separated words of list? */
static bool s_word_in(const char *word, const char *list)
{
    size_t n = strlen(word);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, " ");
        if (len == n && memcmp(p, word, n) == 0)
            return true;
        p += len;
        p += *p == ' ';
    }
    return false;
}

/*  May caller publish an event on topic (payload: its envelope)? Services publish anything
    whose envelope names them as src; registers only their own device and node topics. */
static bool s_publish_ok(s_busd_t *self, const s_key_t *caller, const char *topic, size_t tlen,
                         const void *payload, size_t plen)
{
    if (!caller) {
        s_refuse(self, S_REF_UNKNOWN_KEY, NULL, "publish");
        return false;
    }
    switch (caller->id.role) {
    case BUS_ROLE_UNCHECKED:
        return true;
    case BUS_ROLE_SERVICE: {
        const char *owner = s_topic_owner(topic, tlen);
        if (owner && *owner && !s_word_in(caller->id.name, owner)) {
            s_refuse(self, S_REF_PUBLISH_TOPIC, caller, "another service's topic");
            return false;
        }
        const char *src;
        size_t slen, nlen = strlen(caller->id.name);
        if (bus_msg_peek_src(payload, plen, &src, &slen) == 0 && slen >= nlen &&
            memcmp(src, caller->id.name, nlen) == 0 && (slen == nlen || src[nlen] == '-'))
            return true;
        s_refuse(self, S_REF_PUBLISH_SRC, caller, "event src is not the publishing service");
        return false;
    }
    case BUS_ROLE_REGISTER:
        for (int i = 0; i < 2; i++) {
            size_t n = strlen(caller->topics[i]);
            if (tlen > n && memcmp(topic, caller->topics[i], n) == 0)
                return true;
        }
        break;
    default:
        break;
    }
    s_refuse(self, S_REF_PUBLISH_TOPIC, caller, "publish");
    return false;
}

/*  May caller register (heartbeat) as an instance of service name? Only a service's key, and
    only under its own name: otherwise anyone enrolled could take a share of its requests. */
static bool s_may_serve(s_busd_t *self, const s_key_t *caller, const char *name)
{
    if (!caller) {
        s_refuse(self, S_REF_UNKNOWN_KEY, NULL, name);
        return false;
    }
    if (caller->id.role == BUS_ROLE_UNCHECKED)
        return true;
    if (caller->id.role != BUS_ROLE_SERVICE) {
        s_refuse(self, S_REF_NOT_SERVICE, caller, name);
        return false;
    }
    if (strcmp(caller->id.name, name) != 0) {
        s_refuse(self, S_REF_SERVICE_NAME, caller, name);
        return false;
    }
    return true;
}

static void s_worker_remove(s_busd_t *self, s_worker_t *w, const char *why)
{
    bus_info("busd.instance.removed", "service=%s instance=%s reason=%s", w->service->name,
             w->instance, why);
    s_service_t *svc = w->service;
    void *handle = zlistx_find(svc->workers, w);
    if (handle)
        zlistx_delete(svc->workers, handle);
    zhashx_delete(self->workers, w->key); /* frees w */
}

/*  Send a multipart message built from frames to a ROUTER peer. Returns 0, or -1 when the peer is
    gone (EHOSTUNREACH with ROUTER_MANDATORY) or the send failed. The frames are not consumed. */
static int s_route(s_busd_t *self, zframe_t *to, const void *const *data, const size_t *len,
                   int count)
{
    void *h = zsock_resolve(self->router);
    if (zmq_send(h, zframe_data(to), zframe_size(to), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    for (int i = 0; i < count; i++)
        if (zmq_send(h, data[i], len[i], (i + 1 < count ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
            return -1;
    return 0;
}

static void s_reply_client(s_busd_t *self, zframe_t *client, zframe_t *corr, bus_msg_t *msg)
{
    bus_buf_reset(&self->buf);
    if (bus_msg_encode(msg, &self->buf) != 0)
        return;
    const void *data[] = {BUS_PROTO_CLIENT, BUS_CMD_REP, zframe_data(corr), self->buf.data};
    size_t len[] = {strlen(BUS_PROTO_CLIENT), strlen(BUS_CMD_REP), zframe_size(corr),
                    self->buf.len};
    if (s_route(self, client, data, len, 4) != 0)
        (*self->c_lost_replies)++;
}

static void s_reply_error(s_busd_t *self, zframe_t *client, zframe_t *corr, const char *code,
                          const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    bus_msg_t *msg = bus_msg_new("error", self->instance, ++self->seq);
    if (!msg)
        return;
    bus_val_map_set_str(bus_msg_body(msg), "code", code);
    bus_val_map_set_str(bus_msg_body(msg), "message", text);
    s_reply_client(self, client, corr, msg);
    bus_msg_destroy(&msg);
}

/*  busd's own methods: health, stats, services, whoami. */
static void s_self_request(s_busd_t *self, const s_key_t *caller, zframe_t *client, zframe_t *corr,
                           zframe_t *payload)
{
    bus_msg_t *req =
        bus_msg_decode(zframe_data(payload), zframe_size(payload), NULL, &self->codec, NULL);
    if (!req) {
        s_reply_error(self, client, corr, BUS_ERR_BAD_REQUEST, "request rejected");
        return;
    }
    const char *method = bus_msg_type(req);
    bus_msg_t *rep = bus_msg_new("reply", self->instance, ++self->seq);
    bus_val_t *body = rep ? bus_msg_body(rep) : NULL;
    if (!body) {
        bus_msg_destroy(&req);
        return;
    }
    if (streq(method, "health")) {
        bus_val_map_set_str(body, "name", S_PROGRAM);
        bus_val_map_set_str(body, "version", BUS_VERSION);
        bus_val_map_set_str(body, "instance", self->instance);
        bus_val_map_set_int(body, "pid", getpid());
        bus_val_map_set_int(body, "uptime_ms", bus_mono_ms() - self->started);
        bus_val_map_set_int(body, "instances", (int64_t)zhashx_size(self->workers));
        bus_val_map_set_bool(body, "healthy", true);
    } else if (streq(method, "stats")) {
        bus_stats_set(self->stats, "instances", (int64_t)zhashx_size(self->workers));
        bus_stats_set(self->stats, "services", (int64_t)zhashx_size(self->services));
        bus_val_t *counters = bus_stats_to_val(self->stats);
        bus_val_map_set_str(body, "instance", self->instance);
        bus_val_map_set(body, "counters", &counters);
    } else if (streq(method, "services")) {
        bus_val_t *list = bus_val_new_arr();
        int64_t now = bus_mono_ms();
        for (s_service_t *svc = zhashx_first(self->services); svc && list;
             svc = zhashx_next(self->services)) {
            for (s_worker_t *w = zlistx_first(svc->workers); w; w = zlistx_next(svc->workers)) {
                bus_val_t *item = bus_val_new_map();
                if (!item)
                    continue;
                bus_val_map_set_str(item, "service", svc->name);
                bus_val_map_set_str(item, "instance", w->instance);
                bus_val_map_set_int(item, "last_heartbeat_ms", now - w->last_seen);
                bus_val_arr_push(list, &item);
            }
        }
        bus_val_map_set(body, "instances", &list);
    } else if (streq(method, "whoami")) {
        bus_val_map_set_str(body, "role", bus_role_name(caller->id.role));
        bus_val_map_set_str(body, "name", caller->id.name);
        if (caller->id.role == BUS_ROLE_REGISTER) {
            bus_val_map_set_str(body, "store", caller->id.store);
            bus_val_map_set_str(body, "register", caller->id.reg);
        }
    } else {
        s_reply_error(self, client, corr, BUS_ERR_UNKNOWN_METHOD, "busd has no method '%s'",
                      method);
        bus_msg_destroy(&rep);
        bus_msg_destroy(&req);
        return;
    }
    s_reply_client(self, client, corr, rep);
    bus_msg_destroy(&rep);
    bus_msg_destroy(&req);
}

/*  Pick the instance for a request: round-robin over the service's live instances, or the one
    named after '@'. Sends to it; an instance whose connection is gone is removed and the next
    one tried. */
static void s_client_request(s_busd_t *self, const s_key_t *caller, zframe_t *client, zmsg_t *msg)
{
    zframe_t *service_f = zmsg_next(msg);
    zframe_t *corr = zmsg_next(msg);
    zframe_t *payload = zmsg_next(msg);
    char target[BUS_SERVICE_NAME_MAX + BUS_INSTANCE_MAX + 2];
    size_t tlen = zframe_size(service_f);
    if (tlen == 0 || tlen >= sizeof(target)) {
        (*self->c_bad_frames)++;
        return;
    }
    memcpy(target, zframe_data(service_f), tlen);
    target[tlen] = '\0';
    (*self->c_requests)++;
    if (!caller) {
        s_refuse(self, S_REF_UNKNOWN_KEY, NULL, "request");
        s_reply_error(self, client, corr, BUS_ERR_FORBIDDEN,
                      "this key is not enrolled (or was revoked)");
        return;
    }
    char *instance = strchr(target, '@');
    if (instance)
        *instance++ = '\0';
    if (streq(target, BUS_BROKER_SERVICE)) {
        s_self_request(self, caller, client, corr, payload);
        return;
    }
    s_service_t *svc = zhashx_lookup(self->services, target);
    const void *data[] = {BUS_PROTO_WORKER,  BUS_CMD_REQ,   zframe_data(client),
                          zframe_data(corr), caller->frame, zframe_data(payload)};
    size_t len[] = {strlen(BUS_PROTO_WORKER), strlen(BUS_CMD_REQ), zframe_size(client),
                    zframe_size(corr),        caller->frame_len,   zframe_size(payload)};
    while (svc && zlistx_size(svc->workers) > 0) {
        s_worker_t *w = NULL;
        if (instance) {
            for (w = zlistx_first(svc->workers); w && !streq(w->instance, instance);
                 w = zlistx_next(svc->workers))
                ;
            if (!w)
                break;
        } else {
            w = zlistx_first(svc->workers);
            zlistx_move_end(svc->workers, zlistx_cursor(svc->workers));
        }
        if (s_route(self, w->identity, data, len, 6) == 0)
            return;
        s_worker_remove(self, w, "disconnected");
    }
    (*self->c_no_service)++;
    s_reply_error(self, client, corr, BUS_ERR_NO_SERVICE, "no instance of '%s%s%s' is registered",
                  target, instance ? "@" : "", instance ? instance : "");
}

static void s_worker_heartbeat(s_busd_t *self, const s_key_t *caller, zframe_t *identity,
                               const char *key, zframe_t *name_f, zframe_t *instance_f)
{
    char name[BUS_SERVICE_NAME_MAX + 1];
    char instance[BUS_INSTANCE_MAX + 1];
    size_t nlen = zframe_size(name_f), ilen = zframe_size(instance_f);
    bool ok = nlen > 0 && ilen > 0 && nlen <= BUS_SERVICE_NAME_MAX && ilen <= BUS_INSTANCE_MAX;
    s_worker_t *w = NULL;
    if (!ok) {
        (*self->c_bad_frames)++;
        return;
    }
    memcpy(name, zframe_data(name_f), nlen);
    name[nlen] = '\0';
    memcpy(instance, zframe_data(instance_f), ilen);
    instance[ilen] = '\0';
    if (!s_may_serve(self, caller, name))
        return;
    w = zhashx_lookup(self->workers, key);
    if (!w) {
        s_service_t *svc = zhashx_lookup(self->services, name);
        if (!svc) {
            svc = calloc(1, sizeof(*svc));
            if (svc) {
                snprintf(svc->name, sizeof(svc->name), "%s", name);
                svc->workers = zlistx_new();
                zhashx_insert(self->services, name, svc);
            }
        }
        w = svc ? calloc(1, sizeof(*w)) : NULL;
        if (w) {
            w->identity = zframe_dup(identity);
            snprintf(w->key, sizeof(w->key), "%s", key);
            if (caller->id.role != BUS_ROLE_UNCHECKED)
                snprintf(w->user, sizeof(w->user), "%s", caller->user);
            snprintf(w->instance, sizeof(w->instance), "%s", instance);
            w->service = svc;
            zhashx_insert(self->workers, key, w);
            zlistx_add_end(svc->workers, w);
            (*self->c_registered)++;
            bus_info("busd.instance.registered", "service=%s instance=%s", name, instance);
        }
    }
    if (w) {
        w->last_seen = bus_mono_ms();
        w->expiry = w->last_seen + self->heartbeat_timeout_ms;
        const void *data[] = {BUS_PROTO_WORKER, BUS_CMD_HB};
        size_t len[] = {strlen(BUS_PROTO_WORKER), strlen(BUS_CMD_HB)};
        s_route(self, identity, data, len, 2);
    }
}

static void s_worker_message(s_busd_t *self, const s_key_t *caller, zframe_t *identity, zmsg_t *msg)
{
    char key[S_ID_HEX_MAX];
    s_hex(identity, key);
    zframe_t *cmd = zmsg_next(msg);
    /* a well-formed REP from a service never gets here: s_fast_path forwards it */
    if (zframe_streq(cmd, BUS_CMD_HB) && zmsg_size(msg) == 5) {
        zframe_t *name = zmsg_next(msg);
        zframe_t *instance = zmsg_next(msg);
        s_worker_heartbeat(self, caller, identity, key, name, instance);
    } else if (zframe_streq(cmd, BUS_CMD_BYE)) {
        s_worker_t *w = zhashx_lookup(self->workers, key);
        (*self->c_byes)++;
        if (w)
            s_worker_remove(self, w, "goodbye");
    } else if (zframe_streq(cmd, BUS_CMD_REP) && zmsg_size(msg) == 6 &&
               (!caller || caller->id.role != BUS_ROLE_SERVICE))
        s_refuse(self, caller ? S_REF_NOT_SERVICE : S_REF_UNKNOWN_KEY, caller, "reply");
    else
        (*self->c_bad_frames)++;
}

/*  Fast path for the two messages that carry traffic: a client's REQ and an instance's REP are
    forwarded by moving the received parts (zmq_msg_send), so payloads are never copied and
    nothing is allocated per request. Returns true if the message was handled here. */
static bool s_fast_path(s_busd_t *self, const s_key_t *caller, zmq_msg_t *parts, int n)
{
    if (n != 6 || zmq_msg_size(&parts[2]) != strlen(BUS_CMD_REQ) ||
        zmq_msg_size(&parts[1]) != strlen(BUS_PROTO_CLIENT) || !caller)
        return false;
    const char *proto = zmq_msg_data(&parts[1]);
    const char *cmd = zmq_msg_data(&parts[2]);
    void *h = zsock_resolve(self->router);
    if (memcmp(proto, BUS_PROTO_WORKER, 5) == 0 && memcmp(cmd, BUS_CMD_REP, 3) == 0) {
        /* only a service's key may answer: anyone else could feed clients forged replies */
        if (caller->id.role != BUS_ROLE_SERVICE && caller->id.role != BUS_ROLE_UNCHECKED)
            return false;
        /* [worker] BUS2W REP <client> <corr> <payload> -> [client] BUS1C REP <corr> <payload> */
        (*self->c_replies)++;
        if (zmq_msg_send(&parts[3], h, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            (*self->c_lost_replies)++;
            return true;
        }
        zmq_send(h, BUS_PROTO_CLIENT, strlen(BUS_PROTO_CLIENT), ZMQ_SNDMORE);
        zmq_send(h, BUS_CMD_REP, strlen(BUS_CMD_REP), ZMQ_SNDMORE);
        zmq_msg_send(&parts[4], h, ZMQ_SNDMORE);
        zmq_msg_send(&parts[5], h, 0);
        return true;
    }
    if (memcmp(proto, BUS_PROTO_CLIENT, 5) != 0 || memcmp(cmd, BUS_CMD_REQ, 3) != 0)
        return false;
    /* [client] BUS1C REQ <service> <corr> <payload>: only plain service names here; targeted
       ("name@instance") and busd's own requests take the general path */
    size_t slen = zmq_msg_size(&parts[3]);
    const char *sname = zmq_msg_data(&parts[3]);
    char name[BUS_SERVICE_NAME_MAX + 1];
    if (slen == 0 || slen > BUS_SERVICE_NAME_MAX || memchr(sname, '@', slen))
        return false;
    memcpy(name, sname, slen);
    name[slen] = '\0';
    s_service_t *svc = zhashx_lookup(self->services, name);
    if (!svc || zlistx_size(svc->workers) == 0)
        return false;
    (*self->c_requests)++;
    while (zlistx_size(svc->workers) > 0) {
        s_worker_t *w = zlistx_first(svc->workers);
        zlistx_move_end(svc->workers, zlistx_cursor(svc->workers));
        /* with ROUTER_MANDATORY a gone peer fails on the first frame, before anything is sent */
        if (zmq_send(h, zframe_data(w->identity), zframe_size(w->identity),
                     ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            s_worker_remove(self, w, "disconnected");
            continue;
        }
        zmq_send(h, BUS_PROTO_WORKER, strlen(BUS_PROTO_WORKER), ZMQ_SNDMORE);
        zmq_send(h, BUS_CMD_REQ, strlen(BUS_CMD_REQ), ZMQ_SNDMORE);
        zmq_msg_send(&parts[0], h, ZMQ_SNDMORE);
        zmq_msg_send(&parts[4], h, ZMQ_SNDMORE);
        zmq_send(h, caller->frame, caller->frame_len, ZMQ_SNDMORE);
        zmq_msg_send(&parts[5], h, 0);
        return true;
    }
    (*self->c_requests)--; /* counted again on the general path, which answers no_service */
    return false;
}

static void s_router_input(s_busd_t *self)
{
    void *h = zsock_resolve(self->router);
    for (int burst = 0; burst < S_PROXY_BURST; burst++) {
        zmq_msg_t parts[S_FRAMES_MAX];
        int n = 0, more = 1;
        bool too_many = false;
        while (more) {
            zmq_msg_t scratch;
            zmq_msg_t *part = n < S_FRAMES_MAX ? &parts[n] : &scratch;
            zmq_msg_init(part);
            if (zmq_msg_recv(part, h, n == 0 && !too_many ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(part);
                for (int i = 0; i < n; i++)
                    zmq_msg_close(&parts[i]);
                return;
            }
            more = zmq_msg_more(part);
            if (part == &scratch) {
                zmq_msg_close(part);
                too_many = true;
            } else
                n++;
        }
        /* the metadata is read from a part that came off the wire: the routing id part that
           ROUTER makes up after a poll carries none */
        const s_key_t *caller = n > 1 ? s_caller(self, &parts[1]) : NULL;
        if (too_many || n < 3)
            (*self->c_bad_frames)++;
        else if (!s_fast_path(self, caller, parts, n)) {
            zmsg_t *msg = zmsg_new();
            for (int i = 0; i < n; i++)
                zmsg_addmem(msg, zmq_msg_data(&parts[i]), zmq_msg_size(&parts[i]));
            zframe_t *identity = zmsg_first(msg);
            zframe_t *proto = zmsg_next(msg);
            if (zframe_streq(proto, BUS_PROTO_CLIENT) && zmsg_size(msg) == 6 &&
                zframe_streq(zmsg_next(msg), BUS_CMD_REQ))
                s_client_request(self, caller, identity, msg);
            else if (zframe_streq(proto, BUS_PROTO_WORKER))
                s_worker_message(self, caller, identity, msg);
            else
                (*self->c_bad_frames)++;
            zmsg_destroy(&msg);
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
    }
}

/*  Answer ZAP requests (RFC 27): admit a CURVE key found in the table, with its Z85 text as
    User-Id (what s_caller looks up); refuse everything else. */
static void s_zap_input(s_busd_t *self)
{
    for (int burst = 0; burst < S_PROXY_BURST; burst++) {
        zmsg_t *req = zmsg_recv_nowait(self->zap);
        if (!req)
            return;
        /* version, request id, domain, address, routing id, mechanism, credentials... */
        zframe_t *f[7] = {NULL};
        for (int i = 0; i < 7; i++)
            f[i] = i == 0 ? zmsg_first(req) : zmsg_next(req);
        char user[S_KEY_TXT] = "";
        const char *status = "400", *text = "key not enrolled";
        if (!f[6] || !zframe_streq(f[0], "1.0") || !zframe_streq(f[5], "CURVE") ||
            zframe_size(f[6]) != 32)
            text = "CURVE with one 32-byte key only";
        else if (zmq_z85_encode(user, zframe_data(f[6]), 32)) {
            if (!zhashx_lookup(self->keys, user))
                s_keys_refresh(self);
            if (zhashx_lookup(self->keys, user))
                status = "200", text = "OK";
            else
                s_refuse(self, S_REF_UNKNOWN_KEY, NULL, "handshake");
        }
        zmsg_t *rep = zmsg_new();
        zmsg_addstr(rep, "1.0");
        zframe_t *request_id = f[1] ? zframe_dup(f[1]) : zframe_new(NULL, 0);
        zmsg_append(rep, &request_id);
        zmsg_addstr(rep, status);
        zmsg_addstr(rep, text);
        zmsg_addstr(rep, strcmp(status, "200") == 0 ? user : "");
        zmsg_addmem(rep, NULL, 0); /* no metadata: the identity comes from the table */
        zmsg_send(&rep, self->zap);
        zmsg_destroy(&req);
    }
}

/*  Move up to a burst of events from publishers to subscribers without copying, each only if
    its publisher may publish it (s_publish_ok). An event is two parts, topic and envelope;
    anything else is a bad frame. */
static void s_forward_events(s_busd_t *self)
{
    void *from = zsock_resolve(self->xsub), *to = zsock_resolve(self->xpub);
    for (int burst = 0; burst < S_PROXY_BURST; burst++) {
        zmq_msg_t parts[2];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t scratch;
            zmq_msg_t *part = n < 2 ? &parts[n] : &scratch;
            zmq_msg_init(part);
            if (zmq_msg_recv(part, from, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(part);
                for (int i = 0; i < n && i < 2; i++)
                    zmq_msg_close(&parts[i]);
                return;
            }
            more = zmq_msg_more(part);
            if (part == &scratch)
                zmq_msg_close(part);
            n++;
        }
        bool ok = n == 2;
        if (!ok)
            (*self->c_bad_frames)++;
        else
            ok = s_publish_ok(self, s_caller(self, &parts[0]), zmq_msg_data(&parts[0]),
                              zmq_msg_size(&parts[0]), zmq_msg_data(&parts[1]),
                              zmq_msg_size(&parts[1]));
        if (ok && zmq_msg_send(&parts[0], to, ZMQ_SNDMORE) >= 0) {
            if (zmq_msg_send(&parts[1], to, 0) < 0)
                zmq_msg_close(&parts[1]);
            (*self->c_events)++;
            continue;
        }
        for (int i = 0; i < n && i < 2; i++)
            zmq_msg_close(&parts[i]);
    }
}

/*  Subscriptions flow XPUB -> XSUB; count them on the way (first byte 1 subscribe, 0 cancel). */
static void s_forward_subscriptions(s_busd_t *self)
{
    void *from = zsock_resolve(self->xpub);
    void *to = zsock_resolve(self->xsub);
    zmq_msg_t part;
    for (int n = 0; n < S_PROXY_BURST; n++) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, from, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            return;
        }
        if (!s_caller(self, &part)) {
            /* a revoked or unknown key's subscriptions go no further */
            s_refuse(self, S_REF_UNKNOWN_KEY, NULL, "subscribe");
            zmq_msg_close(&part);
            continue;
        }
        if (zmq_msg_size(&part) > 0) {
            if (((const byte *)zmq_msg_data(&part))[0] == 1)
                (*self->c_subs)++;
            else
                (*self->c_unsubs)++;
        }
        if (zmq_msg_send(&part, to, 0) < 0)
            zmq_msg_close(&part);
    }
}

static void s_purge(s_busd_t *self)
{
    s_keys_refresh(self);
    int64_t now = bus_mono_ms();
    zlistx_t *expired = zlistx_new();
    for (s_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers))
        if (now > w->expiry)
            zlistx_add_end(expired, w);
    for (s_worker_t *w = zlistx_first(expired); w; w = zlistx_next(expired)) {
        (*self->c_expired)++;
        s_worker_remove(self, w, "heartbeat timeout");
    }
    zlistx_destroy(&expired);
}

/*  Bind sock to each comma-separated endpoint; tcp:// and ipc:// get CURVE unless insecure
    (without CURVE a peer has no key, hence no identity). */
static int s_bind(zsock_t *sock, const char *endpoints, bus_config_t *config)
{
    char *copy = strdup(endpoints);
    int rc = 0;
    char *save = NULL;
    for (char *ep = strtok_r(copy, ",", &save); ep && rc == 0; ep = strtok_r(NULL, ",", &save)) {
        bool curve = bus_endpoint_is_tcp(ep) || strncmp(ep, "ipc://", 6) == 0;
        if (curve && !bus_config_bool(config, "insecure")) {
            const char *cert = bus_config_str(config, "cert");
            if (!cert || bus_curve_server(sock, cert) != 0) {
                bus_error("busd.cert", "cannot use server certificate '%s' for %s",
                          cert ? cert : "(none: set --cert)", ep);
                rc = -1;
                break;
            }
        }
        if (zsock_bind(sock, "%s", ep) < 0) {
            bus_error("busd.bind", "cannot bind %s: %s", ep, zmq_strerror(zmq_errno()));
            rc = -1;
        } else
            bus_info("busd.listening", "endpoint=%s", ep);
    }
    free(copy);
    return rc;
}

static void s_busd_destroy(s_busd_t **self_p)
{
    s_busd_t *self = *self_p;
    if (!self)
        return;
    zsock_destroy(&self->router);
    zsock_destroy(&self->xpub);
    zsock_destroy(&self->xsub);
    zsock_destroy(&self->zap);
    zhashx_destroy(&self->workers);
    zhashx_destroy(&self->keys);
    free(self->clients_dir);
    zhashx_destroy(&self->services);
    bus_stats_destroy(&self->stats);
    bus_buf_free(&self->buf);
    free(self);
    *self_p = NULL;
}

/*  (Re)open the subscriber endpoint: a fresh XPUB socket bound to sub-bind. The old socket, if
    any, is closed first, which drops every subscriber connection. */
static int s_xpub_open(s_busd_t *self)
{
    if (self->xpub) {
        zsock_set_linger(self->xpub, 0);
        zsock_destroy(&self->xpub);
    }
    /* libzmq closes the old listener in its I/O thread: the port may be busy for a moment */
    for (int attempt = 0; attempt < S_REBIND_ATTEMPTS; attempt++) {
        self->xpub = zsock_new(ZMQ_XPUB);
        if (!self->xpub)
            return -1;
        bus__socket_policy(self->xpub, &self->policy);
        if (s_bind(self->xpub, bus_config_str(self->config, "sub-bind"), self->config) == 0)
            return 0;
        zsock_destroy(&self->xpub);
        zclock_sleep(S_REBIND_PAUSE_MS);
    }
    return -1;
}

static s_busd_t *s_busd_new(bus_config_t *config)
{
    s_busd_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->config = config;
    bus_conn_cfg_t policy;
    bus_conn_cfg_defaults(&policy);
    policy.heartbeat_ms = (int)bus_config_int(config, "heartbeat-ms");
    policy.heartbeat_timeout_ms = (int)bus_config_int(config, "heartbeat-timeout-ms");
    policy.hwm = (int)bus_config_int(config, "hwm");
    policy.linger_ms = (int)bus_config_int(config, "linger-ms");
    self->heartbeat_timeout_ms = policy.heartbeat_timeout_ms;
    self->policy = policy;
    self->started = bus_mono_ms();
    char id[BUS_MSG_ID_LEN + 1];
    bus_new_id(id);
    snprintf(self->instance, sizeof(self->instance), "busd-%d-%.4s", (int)getpid(), id);
    self->services = zhashx_new();
    self->workers = zhashx_new();
    self->stats = bus_stats_new();
    self->xsub = zsock_new(ZMQ_XSUB);
    self->router = zsock_new(ZMQ_ROUTER);
    if (!self->services || !self->workers || !self->stats || !self->xsub || !self->router)
        goto out_destroy;
    zhashx_set_destructor(self->services, s_service_free);
    zhashx_set_destructor(self->workers, s_worker_free);
    self->c_events = bus_stats_counter(self->stats, "events_forwarded");
    self->c_subs = bus_stats_counter(self->stats, "subscriptions");
    self->c_unsubs = bus_stats_counter(self->stats, "unsubscriptions");
    self->c_requests = bus_stats_counter(self->stats, "requests");
    self->c_replies = bus_stats_counter(self->stats, "replies");
    self->c_no_service = bus_stats_counter(self->stats, "no_service");
    self->c_bad_frames = bus_stats_counter(self->stats, "bad_frames");
    self->c_expired = bus_stats_counter(self->stats, "instances_expired");
    self->c_lost_replies = bus_stats_counter(self->stats, "replies_undeliverable");
    self->c_registered = bus_stats_counter(self->stats, "instances_registered");
    self->c_byes = bus_stats_counter(self->stats, "instances_goodbye");
    for (int r = 0; r < S_REF__COUNT; r++)
        self->c_refused[r] = bus_stats_counter(self->stats, s_refusal_names[r]);
    bus_identity_set(&self->unchecked_key.id, BUS_ROLE_UNCHECKED, "-", NULL, NULL);
    self->unchecked_key.frame_len = bus_identity_encode(
        &self->unchecked_key.id, self->unchecked_key.frame, sizeof(self->unchecked_key.frame));

    const char *clients = bus_config_str(config, "clients-dir");
    bool any_key = bus_config_bool(config, "unsafe-any-client-key");
    if (bus_config_bool(config, "insecure")) {
        self->unchecked = true;
        bus_warn("busd.insecure", "plaintext tcp:// enabled: anyone who reaches these ports can "
                                  "publish and call services; no identities, no role checks");
    } else if (!clients && any_key) {
        self->unchecked = true;
        bus_warn("busd.unsafe", "--unsafe-any-client-key: any CURVE key is accepted; no "
                                "identities, no role checks (development only)");
    } else if (!clients) {
        bus_error("busd.auth", "CURVE needs --clients-dir (the enrolled keys); refusing to start "
                               "without it (--unsafe-any-client-key accepts any key, development "
                               "only)");
        goto out_destroy;
    } else {
        if (any_key)
            bus_warn("busd.unsafe", "--unsafe-any-client-key is ignored: --clients-dir is set, "
                                    "so only enrolled keys are accepted");
        /* busd answers the handshakes itself, from the same table it checks messages with: one
           reader of the directory, and a malformed or duplicated file is logged, never fatal */
        self->zap = zsock_new(ZMQ_REP);
        self->clients_dir = strdup(clients);
        if (!self->zap || !self->clients_dir || zsock_bind(self->zap, S_ZAP_ENDPOINT) != 0) {
            bus_error("busd.auth", "cannot start authentication over %s", clients);
            goto out_destroy;
        }
        s_keys_refresh(self);
        if (!self->keys)
            goto out_destroy;
    }
    bus__socket_policy(self->xsub, &policy);
    bus__socket_policy(self->router, &policy);
    zsock_set_router_mandatory(self->router, 1);
    if (s_bind(self->xsub, bus_config_str(config, "pub-bind"), config) != 0 ||
        s_xpub_open(self) != 0 ||
        s_bind(self->router, bus_config_str(config, "req-bind"), config) != 0)
        goto out_destroy;
    return self;

out_destroy:
    s_busd_destroy(&self);
    return NULL;
}

static void s_busd_run(s_busd_t *self)
{
    zmq_pollitem_t items[] = {{zsock_resolve(self->xsub), 0, ZMQ_POLLIN, 0},
                              {zsock_resolve(self->xpub), 0, ZMQ_POLLIN, 0},
                              {zsock_resolve(self->router), 0, ZMQ_POLLIN, 0},
                              {self->zap ? zsock_resolve(self->zap) : NULL, 0, ZMQ_POLLIN, 0}};
    int64_t next_purge = bus_mono_ms() + S_PURGE_EVERY_MS;
    while (!bus_program_stopping()) {
        items[1].socket = zsock_resolve(self->xpub); /* reopened after a revocation */
        int rc = zmq_poll(items, self->zap ? 4 : 3, S_PURGE_EVERY_MS);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            bus_error("busd.poll", "poll failed: %s", zmq_strerror(errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            s_forward_events(self);
        if (items[1].revents & ZMQ_POLLIN)
            s_forward_subscriptions(self);
        if (items[2].revents & ZMQ_POLLIN)
            s_router_input(self);
        if (self->zap && (items[3].revents & ZMQ_POLLIN))
            s_zap_input(self);
        if (bus_mono_ms() >= next_purge) {
            s_purge(self);
            next_purge = bus_mono_ms() + S_PURGE_EVERY_MS;
        }
        bus_metrics_tick(self->metrics);
    }
}

/*  The metrics page: every stats value, the levels refreshed first (as "stats" does). */
static void s_metrics(bus_metrics_out_t *out, void *arg)
{
    s_busd_t *self = arg;
    bus_stats_set(self->stats, "instances", (int64_t)zhashx_size(self->workers));
    bus_stats_set(self->stats, "services", (int64_t)zhashx_size(self->services));
    bus_metrics_out_stats(out, self->stats, s_gauges);
    bus_metrics_out_gauge(out, "uptime_seconds", "seconds since busd started", NULL,
                          (bus_mono_ms() - self->started) / 1000);
}

int main(int argc, char **argv)
{
    bus_config_t *config = bus_config_new(S_PROGRAM, s_options);
    if (!config || bus_config_add(config, bus_program_opts) != 0 ||
        bus_config_add(config, bus_metrics_opts) != 0)
        return 2;
    int rc = bus_config_load(config, argc, argv);
    if (rc == 1) {
        printf("usage: busd [--config FILE] [options]\n");
        bus_config_usage(config, stdout);
        bus_config_destroy(&config);
        return 0;
    }
    if (rc != 0 || bus_program_log_init(config, S_PROGRAM) != 0) {
        fprintf(stderr, "busd: %s\n", rc != 0 ? bus_config_error(config) : "bad --log-level");
        bus_config_destroy(&config);
        return 2;
    }
    if (bus_config_bool(config, "example-config")) {
        bus_config_write_example(config, stdout);
        bus_config_destroy(&config);
        return 0;
    }
    if (bus_config_bool(config, "log-stdout"))
        bus_log_set_stream(stdout);
    bus_program_signals();
    s_busd_t *busd = s_busd_new(config);
    if (!busd) {
        bus_config_destroy(&config);
        return 1;
    }
    const char *err = NULL;
    busd->metrics = bus_metrics_new_from_config(config, S_PROGRAM, &err);
    if (err || bus_metrics_add_collector(busd->metrics, s_metrics, busd) != 0) {
        bus_error("busd.metrics", "cannot serve metrics: %s", err ? err : "out of memory");
        s_busd_destroy(&busd);
        bus_config_destroy(&config);
        return 1;
    }
    bus_info("busd.started", "version=%s instance=%s", BUS_VERSION, busd->instance);
    s_busd_run(busd);
    bus_info("busd.stopping", "events=%" PRId64 " requests=%" PRId64, *busd->c_events,
             *busd->c_requests);
    bus_metrics_destroy(&busd->metrics);
    s_busd_destroy(&busd);
    bus_config_destroy(&config);
    return 0;
}
