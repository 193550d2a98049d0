/*  =========================================================================
    service.c - service instance: registration by heartbeat, dispatch, replies

    Requests are handled one at a time in arrival order on the owner's
    thread; a service scales by running more instances, not threads, so
    handlers can use a plain hiredis context and need no locks.
    =========================================================================
*/
#include "bus/service.h"
#include "bus/proto.h"
#include "bus/redis.h"

#define S_DEFAULT_HEARTBEAT_MS 1000
#define S_BATCH_MAX            256 /* requests handled before the loop looks at heartbeats */
#define S_ERRSTR_MAX           256
#define S_REQ_PARTS            5 /* BUS1W REQ client corr payload */
#define S_HOST_MAX             64

typedef struct {
    bus_handler_fn *fn;
    void *arg;
    bool read_only;
} s_handler_t;

struct bus_service {
    zsock_t *sock;
    char *name;
    char instance[BUS_INSTANCE_MAX];
    zhashx_t *handlers; /* method -> s_handler_t */
    bus_health_fn *health_fn;
    void *health_arg;
    bus_redis_t *redis;
    int heartbeat_ms;
    int64_t next_heartbeat;
    int64_t started_mono;
    int64_t seq;
    char err_code[BUS_SERVICE_NAME_MAX];
    char err_text[S_ERRSTR_MAX];
    int err_retry_ms;
    bus_stats_t *stats;
    int64_t *c_requests, *c_errors, *c_rejected, *c_bad_frames, *c_unknown;
    bus_codec_stats_t codec;
    bus_buf_t buf;
};

static int s_health(bus_service_t *self, const bus_msg_t *req, bus_val_t *reply, void *arg);
static int s_stats(bus_service_t *self, const bus_msg_t *req, bus_val_t *reply, void *arg);

static bool s_name_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > BUS_SERVICE_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static void s_send_heartbeat(bus_service_t *self, const char *cmd)
{
    zstr_sendx(self->sock, BUS_PROTO_WORKER, cmd, self->name, self->instance, NULL);
    self->next_heartbeat = bus_mono_ms() + self->heartbeat_ms;
}

bus_service_t *bus_service_new(const bus_conn_cfg_t *cfg, const char *name, const char **err)
{
    const char *dummy;
    if (!err)
        err = &dummy;
    if (!s_name_ok(name)) {
        *err = "invalid service name (letters, digits, '-', '_', '.'; at most 64)";
        return NULL;
    }
    bus_service_t *self = calloc(1, sizeof(*self));
    if (!self) {
        *err = "out of memory";
        return NULL;
    }
    self->name = strdup(name);
    self->sock = zsock_new(ZMQ_DEALER);
    self->handlers = zhashx_new();
    self->stats = bus_stats_new();
    if (!self->name || !self->sock || !self->handlers || !self->stats) {
        *err = "cannot create socket";
        goto out_destroy;
    }
    zhashx_set_destructor(self->handlers, (zhashx_destructor_fn *)zstr_free);
    char host[S_HOST_MAX] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    char id[BUS_MSG_ID_LEN + 1];
    bus_new_id(id);
    snprintf(self->instance, sizeof(self->instance), "%s-%s-%d-%.4s", name, host, (int)getpid(),
             id);
    self->heartbeat_ms = cfg->heartbeat_ms > 0 ? cfg->heartbeat_ms : S_DEFAULT_HEARTBEAT_MS;
    self->started_mono = bus_mono_ms();
    self->c_requests = bus_stats_counter(self->stats, "requests");
    self->c_errors = bus_stats_counter(self->stats, "error_replies");
    self->c_unknown = bus_stats_counter(self->stats, "unknown_methods");
    self->c_rejected = bus_stats_counter(self->stats, "rejected_requests");
    self->c_bad_frames = bus_stats_counter(self->stats, "bad_frames");
    if (bus_conn_connect(self->sock, cfg->req_endpoint, cfg, err) != 0)
        goto out_destroy;
    bus_service_on_read(self, "health", s_health, NULL);
    bus_service_on_read(self, "stats", s_stats, NULL);
    s_send_heartbeat(self, BUS_CMD_HB);
    return self;

out_destroy:
    bus_service_destroy(&self);
    return NULL;
}

void bus_service_destroy(bus_service_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_service_t *self = *self_p;
    if (self->sock && self->name)
        s_send_heartbeat(self, BUS_CMD_BYE);
    zsock_destroy(&self->sock);
    zhashx_destroy(&self->handlers);
    bus_stats_destroy(&self->stats);
    bus_buf_free(&self->buf);
    free(self->name);
    free(self);
    *self_p = NULL;
}

static int s_on(bus_service_t *self, const char *method, bus_handler_fn *fn, void *arg,
                bool read_only)
{
    s_handler_t *h = malloc(sizeof(*h));
    if (!h)
        return -1;
    h->fn = fn;
    h->arg = arg;
    h->read_only = read_only;
    zhashx_update(self->handlers, method, h);
    return 0;
}

int bus_service_on(bus_service_t *self, const char *method, bus_handler_fn *fn, void *arg)
{
    return s_on(self, method, fn, arg, false);
}

int bus_service_on_read(bus_service_t *self, const char *method, bus_handler_fn *fn, void *arg)
{
    return s_on(self, method, fn, arg, true);
}

void bus_service_set_health(bus_service_t *self, bus_health_fn *fn, void *arg)
{
    self->health_fn = fn;
    self->health_arg = arg;
}

void bus_service_watch_redis(bus_service_t *self, struct bus_redis *redis)
{
    self->redis = redis;
}

int bus_service_error(bus_service_t *self, const char *code, const char *fmt, ...)
{
    snprintf(self->err_code, sizeof(self->err_code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->err_text, sizeof(self->err_text), fmt, ap);
    va_end(ap);
    self->err_retry_ms = 0;
    return -1;
}

int bus_service_unavailable(bus_service_t *self, int retry_ms, const char *fmt, ...)
{
    snprintf(self->err_code, sizeof(self->err_code), "%s", BUS_ERR_UNAVAILABLE);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->err_text, sizeof(self->err_text), fmt, ap);
    va_end(ap);
    self->err_retry_ms = retry_ms > 0 ? retry_ms : 1;
    return -1;
}

static int s_health(bus_service_t *self, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)req;
    (void)arg;
    bool healthy = true;
    bus_val_map_set_str(reply, "name", self->name);
    bus_val_map_set_str(reply, "version", BUS_VERSION);
    bus_val_map_set_str(reply, "instance", self->instance);
    bus_val_map_set_int(reply, "pid", getpid());
    bus_val_map_set_int(reply, "uptime_ms", bus_mono_ms() - self->started_mono);
    if (self->redis) {
        bool up = bus_redis_ping(self->redis) == 0;
        bus_val_map_set_bool(reply, "redis", up);
        if (!up) {
            bus_val_map_set_str(reply, "redis_error", bus_redis_errstr(self->redis));
            healthy = false;
        }
    }
    if (self->health_fn && !self->health_fn(self, reply, self->health_arg))
        healthy = false;
    bus_val_map_set_bool(reply, "healthy", healthy);
    return 0;
}

static int s_stats(bus_service_t *self, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)req;
    (void)arg;
    bus_val_map_set_str(reply, "instance", self->instance);
    bus_val_t *counters = bus_stats_to_val(self->stats);
    bus_val_t *codec = bus_val_new_map();
    if (codec) {
        bus_val_map_set_int(codec, "accepted", (int64_t)self->codec.accepted);
        for (int r = 1; r < BUS_REJ__COUNT; r++)
            bus_val_map_set_int(codec, bus_reject_name((bus_reject_t)r),
                                (int64_t)self->codec.rejected[r]);
    }
    bus_val_map_set(reply, "counters", &counters);
    bus_val_map_set(reply, "codec", &codec);
    return 0;
}

/*  Build and send the reply (or error reply) for one request. */
static void s_reply(bus_service_t *self, zframe_t *client, zframe_t *corr, const char *type,
                    bus_val_t **body_p)
{
    bus_msg_t *rep = bus_msg_new(type, self->instance, ++self->seq);
    if (!rep) {
        bus_val_destroy(body_p);
        return;
    }
    bus_msg_set_body(rep, body_p);
    bus_buf_reset(&self->buf);
    int rc = bus_msg_encode(rep, &self->buf);
    bus_msg_destroy(&rep);
    if (rc != 0)
        return;
    void *h = zsock_resolve(self->sock);
    zmq_send(h, BUS_PROTO_WORKER, strlen(BUS_PROTO_WORKER), ZMQ_SNDMORE);
    zmq_send(h, BUS_CMD_REP, strlen(BUS_CMD_REP), ZMQ_SNDMORE);
    zmq_send(h, zframe_data(client), zframe_size(client), ZMQ_SNDMORE);
    zmq_send(h, zframe_data(corr), zframe_size(corr), ZMQ_SNDMORE);
    zmq_send(h, self->buf.data, self->buf.len, 0);
}

static void s_reply_error(bus_service_t *self, zframe_t *client, zframe_t *corr)
{
    bus_val_t *body = bus_val_new_map();
    if (body) {
        bus_val_map_set_str(body, "code", self->err_code[0] ? self->err_code : BUS_ERR_INTERNAL);
        bus_val_map_set_str(body, "message", self->err_text);
        if (self->err_retry_ms > 0)
            bus_val_map_set_int(body, "retry_ms", self->err_retry_ms);
    }
    (*self->c_errors)++;
    s_reply(self, client, corr, "error", &body);
}

static void s_dispatch(bus_service_t *self, zframe_t *client, zframe_t *corr, zframe_t *payload)
{
    bus_reject_t reason;
    bus_msg_t *req =
        bus_msg_decode(zframe_data(payload), zframe_size(payload), NULL, &self->codec, &reason);
    self->err_code[0] = '\0';
    self->err_text[0] = '\0';
    self->err_retry_ms = 0;
    if (!req) {
        (*self->c_rejected)++;
        bus_service_error(self, BUS_ERR_BAD_REQUEST, "request rejected: %s",
                          bus_reject_name(reason));
        s_reply_error(self, client, corr);
        return;
    }
    (*self->c_requests)++;
    s_handler_t *h = zhashx_lookup(self->handlers, bus_msg_type(req));
    if (!h) {
        (*self->c_unknown)++;
        bus_service_error(self, BUS_ERR_UNKNOWN_METHOD, "%s has no method '%s'", self->name,
                          bus_msg_type(req));
        s_reply_error(self, client, corr);
        bus_msg_destroy(&req);
        return;
    }
    bus_val_t *reply = bus_val_new_map();
    if (reply && h->fn(self, req, reply, h->arg) == 0)
        s_reply(self, client, corr, "reply", &reply);
    else {
        bus_val_destroy(&reply);
        if (!self->err_code[0])
            bus_service_error(self, BUS_ERR_INTERNAL, "handler failed");
        s_reply_error(self, client, corr);
    }
    bus_msg_destroy(&req);
}

int bus_service_handle(bus_service_t *self)
{
    int handled = 0;
    while (handled < S_BATCH_MAX) {
        zmsg_t *msg = zmsg_recv_nowait(self->sock);
        if (!msg)
            return errno == EAGAIN ? handled : (zsys_interrupted ? -1 : handled);
        zframe_t *proto = zmsg_first(msg);
        zframe_t *cmd = zmsg_next(msg);
        if (zmsg_size(msg) == S_REQ_PARTS && zframe_streq(proto, BUS_PROTO_WORKER) &&
            zframe_streq(cmd, BUS_CMD_REQ)) {
            zframe_t *client = zmsg_next(msg);
            zframe_t *corr = zmsg_next(msg);
            zframe_t *payload = zmsg_next(msg);
            s_dispatch(self, client, corr, payload);
            handled++;
        } else if (!(zmsg_size(msg) == 2 && zframe_streq(proto, BUS_PROTO_WORKER) &&
                     zframe_streq(cmd, BUS_CMD_HB)))
            (*self->c_bad_frames)++;
        zmsg_destroy(&msg);
    }
    return handled;
}

void bus_service_tick(bus_service_t *self)
{
    if (bus_mono_ms() >= self->next_heartbeat)
        s_send_heartbeat(self, BUS_CMD_HB);
}

int bus_service_poll(bus_service_t *self, int timeout_ms)
{
    int64_t deadline = bus_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    void *h = zsock_resolve(self->sock);
    while (true) {
        bus_service_tick(self);
        int64_t now = bus_mono_ms();
        int64_t wait = self->next_heartbeat - now;
        if (deadline - now < wait)
            wait = deadline - now;
        if (wait < 0)
            wait = 0;
        zmq_pollitem_t item = {h, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, (long)wait);
        if (rc < 0)
            return -1;
        if (rc > 0) {
            int handled = bus_service_handle(self);
            if (handled != 0)
                return handled;
        }
        if (bus_mono_ms() >= deadline)
            return 0;
    }
}

zsock_t *bus_service_sock(bus_service_t *self)
{
    return self->sock;
}

const char *bus_service_name(bus_service_t *self)
{
    return self->name;
}

const char *bus_service_instance(bus_service_t *self)
{
    return self->instance;
}

bus_stats_t *bus_service_stats(bus_service_t *self)
{
    return self->stats;
}
