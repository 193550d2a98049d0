/*  =========================================================================
    service.c - service instance: registration by heartbeat, dispatch, replies

    Requests are handled one at a time in arrival order on the owner's
    thread; a service scales by running more instances, not threads, so
    handlers can use a plain hiredis context and need no locks.

    Exactly once: clients resend the same envelope when a reply is late, and
    busd may hand the resend to another instance, possibly after this one
    was restarted. So the first reply to a state-changing request is kept in
    Redis (reply:{service}:<request id>, with a TTL): before running the
    handler, one script either returns a kept reply or claims the id with a
    short lease; the reply is stored after the handler ran. A retry that
    finds the claim still held (the first attempt is running elsewhere) is
    answered "unavailable, retry"; one that finds the reply gets it again.
    A transient failure (unavailable) is not kept, so the retry runs again.
    The window that remains (the process dies after the handler's own
    atomic write and before the reply is stored; the lease then expires and
    a retry runs the handler again) is closed by the handlers themselves:
    each keys its one atomic script on an idempotency key (sale id, move
    id, request id), so a second run finds the first one's effect.

    Roles: busd hands every request over with the identity of the key that
    sent it (a frame no client can set; bus/identity.h). Each method says
    which roles may call it; anyone else gets "forbidden" before the reply
    cache or the handler is touched. Kept replies are filed under the
    caller too, so one caller can never be answered with another's reply.
    =========================================================================
*/
#include "bus/service.h"
#include "bus/proto.h"
#include "bus/keys.h"
#include "bus/log.h"
#include "bus/metrics.h"
#include "bus/redis.h"

#define S_DEFAULT_HEARTBEAT_MS 1000
#define S_BATCH_MAX            256 /* requests handled before the loop looks at heartbeats */
#define S_ERRSTR_MAX           256
#define S_REQ_PARTS            6 /* BUS2W REQ client corr caller payload */
#define S_HOST_MAX             64
#define S_CACHE_TTL_DEFAULT_S  86400 /* retries come within minutes; a day is generous */
#define S_CACHE_LEASE_MS       30000 /* longest a handler may run before a retry may rerun it */
#define S_CACHE_BUSY_RETRY_MS  200   /* hint to a retry that found the first attempt running */
#define S_CACHE_REPLY          'R'   /* kept value: 'R', then 'r' (reply) or 'e' (error), body */

/* Return the kept reply, or claim the request id with a lease and return nil. A claim is "P" and
   the claiming instance; one held by another instance comes back as it is. This instance's own
   claim is taken again: handlers run one at a time, so it is a claim whose answer was lost, not
   a running attempt. KEYS[1] cache key; ARGV[1] lease ms, ARGV[2] this instance's claim. */
static const char s_claim_lua[] = "local v = redis.call('GET', KEYS[1])\n"
                                  "if v and v ~= ARGV[2] then return v end\n"
                                  "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])\n"
                                  "return false\n";

typedef enum {
    S_CACHED = 0, /* state-changing: runs once per request id through the reply cache */
    S_READ,       /* read-only: never cached */
    S_OWN         /* state-changing, exactly once by itself (keys its write on the request id) */
} s_kind_t;

typedef struct {
    bus_handler_fn *fn;
    void *arg;
    s_kind_t kind;
    unsigned roles;     /* bus_role_t bits allowed to call it */
    bus_hist_t latency; /* request to reply, every outcome (owner thread only) */
} s_handler_t;

struct bus_service {
    zsock_t *sock;
    char *name;
    char instance[BUS_INSTANCE_MAX];
    zhashx_t *handlers; /* method -> s_handler_t */
    bus_health_fn *health_fn;
    void *health_arg;
    bus_redis_t *redis;
    bus_redis_t *cache; /* reply cache, or NULL */
    int cache_script;
    int cache_ttl_s;
    int heartbeat_ms;
    int64_t next_heartbeat;
    int64_t started_mono;
    int64_t seq;
    char err_code[BUS_SERVICE_NAME_MAX];
    char err_text[S_ERRSTR_MAX];
    int err_retry_ms;
    bus_identity_t caller; /* of the request being handled */
    bool warned_unchecked;
    bus_stats_t *stats;
    const char *const *gauges; /* stats that are levels (metrics page), or NULL */
    int64_t *c_requests, *c_errors, *c_rejected, *c_bad_frames, *c_unknown, *c_forbidden;
    int64_t *c_cache_hits, *c_cache_busy, *c_cache_errors;
    bus_codec_stats_t codec;
    bus_buf_t buf;
};

int bus_service_redis_failed(bus_service_t *self, struct bus_redis *redis, redisReply *r,
                             int retry_ms, const char *what)
{
    int rc;
    if (!r || bus_redis_reply_transient(r)) {
        const char *err = r ? r->str : bus_redis_errstr(redis);
        bus_warn("service.redis", "service=%s %s: %s", self->name, what, err);
        rc = bus_service_unavailable(self, retry_ms, "storage unavailable, retry: %s", err);
    } else {
        bus_error("service.redis", "service=%s %s: unexpected reply: %s", self->name, what,
                  r->type == REDIS_REPLY_ERROR ? r->str : "?");
        rc = bus_service_error(self, BUS_ERR_INTERNAL, "%s failed", what);
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

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
    self->c_forbidden = bus_stats_counter(self->stats, "forbidden");
    self->c_cache_hits = bus_stats_counter(self->stats, "replies_repeated");
    self->c_cache_busy = bus_stats_counter(self->stats, "retries_while_running");
    self->c_cache_errors = bus_stats_counter(self->stats, "reply_cache_errors");
    if (bus_conn_connect(self->sock, cfg->req_endpoint, cfg, err) != 0)
        goto out_destroy;
    static const bus_method_t methods[] = {{"health", s_health, BUS_METHOD_READ, BUS_ROLES_ALL},
                                           {"stats", s_stats, BUS_METHOD_READ, BUS_ROLES_ALL},
                                           {NULL, NULL, 0, 0}};
    bus_service_methods(self, methods, NULL);
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
                s_kind_t kind, unsigned roles)
{
    s_handler_t *h = calloc(1, sizeof(*h));
    if (!h)
        return -1;
    h->fn = fn;
    h->arg = arg;
    h->kind = kind;
    h->roles = roles;
    zhashx_update(self->handlers, method, h);
    return 0;
}

int bus_service_on(bus_service_t *self, const char *method, bus_handler_fn *fn, void *arg)
{
    return s_on(self, method, fn, arg, S_CACHED, BUS_METHOD_CHANGE_ROLES);
}

int bus_service_on_read(bus_service_t *self, const char *method, bus_handler_fn *fn, void *arg)
{
    return s_on(self, method, fn, arg, S_READ, BUS_ROLES_ALL);
}

int bus_service_on_idempotent(bus_service_t *self, const char *method, bus_handler_fn *fn,
                              void *arg)
{
    return s_on(self, method, fn, arg, S_OWN, BUS_METHOD_CHANGE_ROLES);
}

int bus_service_methods(bus_service_t *self, const bus_method_t *table, void *arg)
{
    static const s_kind_t kinds[] = {[BUS_METHOD_CHANGE] = S_CACHED,
                                     [BUS_METHOD_READ] = S_READ,
                                     [BUS_METHOD_IDEMPOTENT] = S_OWN};
    for (const bus_method_t *m = table; m->name; m++) {
        if ((unsigned)m->kind > BUS_METHOD_IDEMPOTENT || !m->fn)
            return -1;
        if (s_on(self, m->name, m->fn, arg, kinds[m->kind], m->roles) != 0)
            return -1;
    }
    return 0;
}

const bus_identity_t *bus_service_caller(bus_service_t *self)
{
    return &self->caller;
}

bool bus_service_caller_is(bus_service_t *self, const char *store, const char *reg)
{
    const bus_identity_t *c = &self->caller;
    if (c->role == BUS_ROLE_UNCHECKED || c->role == BUS_ROLE_OPERATOR ||
        c->role == BUS_ROLE_SERVICE)
        return true;
    return c->role == BUS_ROLE_REGISTER && store && strcmp(c->store, store) == 0 &&
           (!reg || strcmp(c->reg, reg) == 0);
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

int bus_service_set_reply_cache(bus_service_t *self, struct bus_redis *redis, int ttl_s)
{
    int script = redis ? bus_redis_script(redis, s_claim_lua) : -1;
    if (redis && script < 0)
        return -1;
    self->cache = redis;
    self->cache_script = script;
    self->cache_ttl_s = ttl_s > 0 ? ttl_s : S_CACHE_TTL_DEFAULT_S;
    return 0;
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

/*  The body of an error reply from the error set on the service. */
static bus_val_t *s_error_body(bus_service_t *self)
{
    bus_val_t *body = bus_val_new_map();
    if (body) {
        bus_val_map_set_str(body, "code", self->err_code[0] ? self->err_code : BUS_ERR_INTERNAL);
        bus_val_map_set_str(body, "message", self->err_text);
        if (self->err_retry_ms > 0)
            bus_val_map_set_int(body, "retry_ms", self->err_retry_ms);
    }
    return body;
}

static void s_reply_error(bus_service_t *self, zframe_t *client, zframe_t *corr)
{
    bus_val_t *body = s_error_body(self);
    (*self->c_errors)++;
    s_reply(self, client, corr, "error", &body);
}

/*  Request ids become part of a Redis key: letters, digits, '-' and '_' only. */
static bool s_request_id_ok(const char *id)
{
    if (!id || !*id)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return false;
    return true;
}

/*  Look the request up in the reply cache before its handler runs. Returns 0 when the handler
    should run (the id is now claimed; key holds the cache key), 1 when the request was answered
    here: with the kept reply of an earlier attempt, "unavailable" while an earlier attempt still
    runs or while Redis cannot be asked (running without the claim could run it twice). */
static int s_cache_claim(bus_service_t *self, const bus_msg_t *req, char *key, zframe_t *client,
                         zframe_t *corr)
{
    if (!s_request_id_ok(bus_msg_id(req))) {
        bus_service_error(self, BUS_ERR_BAD_REQUEST,
                          "request id must be letters, digits, '-' or '_' (it is the "
                          "idempotency key of a state-changing request)");
        s_reply_error(self, client, corr);
        return 1;
    }
    char caller[BUS_ID_FILE_MAX];
    bus_identity_file(&self->caller, caller, sizeof(caller));
    bus_key_reply(key, self->name, caller, bus_msg_id(req));
    char lease[16], claim[BUS_INSTANCE_MAX + 2];
    snprintf(lease, sizeof(lease), "%d", S_CACHE_LEASE_MS);
    snprintf(claim, sizeof(claim), "P%s", self->instance);
    const char *argv[] = {key, lease, claim};
    redisReply *r = bus_redis_evalsha(self->cache, self->cache_script, 1, 3, argv, NULL);
    if (r && r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return 0;
    }
    if (r && r->type == REDIS_REPLY_STRING && r->len > 2 && r->str[0] == S_CACHE_REPLY) {
        bus_val_t *body = bus_val_decode(r->str + 2, r->len - 2, NULL, NULL);
        bool error = r->str[1] == 'e';
        freeReplyObject(r);
        if (body) {
            (*self->c_cache_hits)++;
            if (error)
                (*self->c_errors)++;
            s_reply(self, client, corr, error ? "error" : "reply", &body);
            return 1;
        }
        (*self->c_cache_errors)++;
        bus_service_error(self, BUS_ERR_INTERNAL, "kept reply of request %s is unreadable",
                          bus_msg_id(req));
        s_reply_error(self, client, corr);
        return 1;
    }
    if (r && r->type == REDIS_REPLY_STRING) {
        (*self->c_cache_busy)++;
        bus_service_unavailable(self, S_CACHE_BUSY_RETRY_MS,
                                "request %s is still being handled; retry", bus_msg_id(req));
    } else {
        (*self->c_cache_errors)++;
        bus_service_unavailable(self, S_CACHE_BUSY_RETRY_MS, "storage unavailable, retry: %s",
                                r && r->type == REDIS_REPLY_ERROR ? r->str
                                                                  : bus_redis_errstr(self->cache));
    }
    if (r)
        freeReplyObject(r);
    s_reply_error(self, client, corr);
    return 1;
}

/*  Keep a reply body under key. A failure is counted, not fatal: the handler's own idempotency
    key still makes a rerun harmless. */
static void s_cache_put(bus_service_t *self, const char *key, char kind, const bus_val_t *body)
{
    bus_buf_reset(&self->buf);
    char head[2] = {S_CACHE_REPLY, kind};
    if (bus_buf_append(&self->buf, head, sizeof(head)) != 0 || bus_val_encode(body, &self->buf)) {
        (*self->c_cache_errors)++;
        return;
    }
    redisReply *r = bus_redis_command(self->cache, "SET %s %b EX %d", key, self->buf.data,
                                      self->buf.len, self->cache_ttl_s);
    if (!r || r->type == REDIS_REPLY_ERROR)
        (*self->c_cache_errors)++;
    if (r)
        freeReplyObject(r);
}

/*  After a failed handler: keep a definite refusal (the retry gets the same answer), drop the
    claim after a failure that may pass (unavailable, or internal: out of memory, an unexpected
    storage error) so that the retry runs the handler again. */
static void s_cache_store_error(bus_service_t *self, const char *key)
{
    if (strcmp(self->err_code, BUS_ERR_UNAVAILABLE) == 0 ||
        strcmp(self->err_code, BUS_ERR_INTERNAL) == 0 || !self->err_code[0]) {
        redisReply *r = bus_redis_command(self->cache, "DEL %s", key);
        if (!r)
            (*self->c_cache_errors)++;
        else
            freeReplyObject(r);
        return;
    }
    bus_val_t *body = s_error_body(self);
    if (body)
        s_cache_put(self, key, 'e', body);
    bus_val_destroy(&body);
}

/*  May the caller of the request being handled call h? Answers "forbidden" when not. */
static bool s_allowed(bus_service_t *self, const s_handler_t *h, const char *method,
                      zframe_t *client, zframe_t *corr)
{
    if (self->caller.role == BUS_ROLE_UNCHECKED && !self->warned_unchecked) {
        self->warned_unchecked = true;
        bus_warn("service.unchecked",
                 "service=%s requests arrive without identities (busd runs "
                 "--insecure or --unsafe-any-client-key): every role check passes",
                 self->name);
    }
    if (bus_identity_may(&self->caller, h->roles))
        return true;
    (*self->c_forbidden)++;
    bus_debug("service.forbidden", "service=%s method=%s caller=%s %s", self->name, method,
              bus_role_name(self->caller.role), self->caller.name);
    bus_service_error(
        self, BUS_ERR_FORBIDDEN, "%s %s may not call %s.%s", bus_role_name(self->caller.role),
        self->caller.name[0] ? self->caller.name : "(unidentified)", self->name, method);
    s_reply_error(self, client, corr);
    return false;
}

static int64_t s_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void s_run(bus_service_t *self, s_handler_t *h, const bus_msg_t *req, zframe_t *client,
                  zframe_t *corr);

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
    int64_t started = s_mono_us();
    s_run(self, h, req, client, corr);
    bus_hist_observe(&h->latency, s_mono_us() - started);
    bus_msg_destroy(&req);
}

/*  Run the handler of a request whose method is known (role check, reply cache, handler) and
    answer it. */
static void s_run(bus_service_t *self, s_handler_t *h, const bus_msg_t *req, zframe_t *client,
                  zframe_t *corr)
{
    if (!s_allowed(self, h, bus_msg_type(req), client, corr))
        return;
    char key[BUS_KEY_MAX];
    bool cached = self->cache && h->kind == S_CACHED;
    if (cached && s_cache_claim(self, req, key, client, corr) != 0)
        return; /* answered from the cache, or refused */
    bus_val_t *reply = bus_val_new_map();
    if (reply && h->fn(self, req, reply, h->arg) == 0) {
        if (cached)
            s_cache_put(self, key, 'r', reply);
        s_reply(self, client, corr, "reply", &reply);
    } else {
        bus_val_destroy(&reply);
        if (!self->err_code[0])
            bus_service_error(self, BUS_ERR_INTERNAL, "handler failed");
        if (cached)
            s_cache_store_error(self, key);
        s_reply_error(self, client, corr);
    }
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
            zframe_t *caller = zmsg_next(msg);
            zframe_t *payload = zmsg_next(msg);
            /* a malformed caller frame leaves no role: every method answers "forbidden" */
            if (bus_identity_decode(zframe_data(caller), zframe_size(caller), &self->caller) != 0)
                (*self->c_bad_frames)++;
            s_dispatch(self, client, corr, payload);
            memset(&self->caller, 0, sizeof(self->caller));
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

void bus_service_set_gauges(bus_service_t *self, const char *const *names)
{
    self->gauges = names;
}

void bus_service_metrics(bus_metrics_out_t *out, void *arg)
{
    bus_service_t *self = arg;
    bus_metrics_out_stats(out, self->stats, self->gauges);
    const char *accepted[] = {"outcome", "accepted", NULL};
    bus_metrics_out_counter(out, "codec_messages", "messages decoded, by outcome", accepted,
                            (int64_t)self->codec.accepted);
    for (int r = 1; r < BUS_REJ__COUNT; r++) {
        const char *labels[] = {"outcome", bus_reject_name((bus_reject_t)r), NULL};
        bus_metrics_out_counter(out, "codec_messages", NULL, labels,
                                (int64_t)self->codec.rejected[r]);
    }
    bus_metrics_out_gauge(out, "uptime_seconds", "seconds since the instance started", NULL,
                          (bus_mono_ms() - self->started_mono) / 1000);
    for (s_handler_t *h = zhashx_first(self->handlers); h; h = zhashx_next(self->handlers)) {
        const char *labels[] = {"method", zhashx_cursor(self->handlers), NULL};
        bus_metrics_out_histogram(out, "request_duration_seconds",
                                  "time from a request's arrival to its reply, by method", labels,
                                  &h->latency);
    }
}
