/*  =========================================================================
    test_reply_cache - a state-changing request runs once per request id

    Two instances of a small counter service (in this process, on their own
    threads, exactly as a real service is built on libbus) share a real
    redis-server behind a real busd over CURVE. The handler "inc" is not
    idempotent by itself (INCR), so every extra run shows in the counter.
    The same envelope is sent again and again: to the same instance, to the
    other one, to a restarted one, while the first attempt still runs; a
    refusal is repeated as it was; a transient failure is not kept, so the
    retry runs; read-only methods are never cached; with Redis gone nothing
    runs unclaimed.
    =========================================================================
*/
#include <pthread.h>
#include "harness.h"

#define T_SERVICE  "counter"
#define T_KEY      "t:{counter}:n"
#define T_PASSWORD "reply-cache-test" /* in a 0600 config file, see h_start_redis */

typedef struct {
    bus_conn_cfg_t cfg;
    int redis_port;
    bus_service_t *svc;
    bus_redis_t *redis;
    pthread_t thread;
    volatile int stop;
    char instance[BUS_INSTANCE_MAX];
    volatile int ready;
} t_instance_t;

static volatile int s_flaky_left; /* "inc" with flaky: true fails this many times first */

/*  INCR the counter (optionally after sleeping); with flaky, answer unavailable while
    s_flaky_left > 0. */
static int s_inc(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    t_instance_t *self = arg;
    int64_t sleep_ms = 0;
    bool flaky = false;
    bus_val_map_get_int(bus_msg_body(req), "sleep_ms", &sleep_ms);
    bus_val_map_get_bool(bus_msg_body(req), "flaky", &flaky);
    if (flaky && __atomic_fetch_sub(&s_flaky_left, 1, __ATOMIC_SEQ_CST) > 0)
        return bus_service_unavailable(svc, 50, "flaky on purpose");
    bool broken = false;
    bus_val_map_get_bool(bus_msg_body(req), "internal", &broken);
    if (broken && __atomic_fetch_sub(&s_flaky_left, 1, __ATOMIC_SEQ_CST) > 0)
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory, on purpose");
    if (sleep_ms > 0)
        zclock_sleep((int)sleep_ms);
    redisReply *r = bus_redis_command(self->redis, "INCR %s", T_KEY);
    if (!r)
        return bus_service_unavailable(svc, 100, "redis: %s", bus_redis_errstr(self->redis));
    bus_val_map_set_int(reply, "value", r->integer);
    bus_val_map_set_str(reply, "by", self->instance);
    freeReplyObject(r);
    return 0;
}

static int s_refuse(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)req;
    (void)reply;
    t_instance_t *self = arg;
    redisReply *r = bus_redis_command(self->redis, "INCR t:{counter}:refused");
    if (r)
        freeReplyObject(r);
    return bus_service_error(svc, "not_allowed", "refused on purpose");
}

static int s_peek(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)svc;
    (void)req;
    t_instance_t *self = arg;
    redisReply *r = bus_redis_command(self->redis, "GET %s", T_KEY);
    if (!r)
        return bus_service_unavailable(svc, 100, "redis down");
    bus_val_map_set_int(reply, "value", r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0);
    freeReplyObject(r);
    return 0;
}

static void *s_instance_main(void *arg)
{
    t_instance_t *self = arg;
    while (!self->stop)
        bus_service_poll(self->svc, 50);
    return NULL;
}

static int s_instance_start(t_instance_t *self)
{
    const char *err = "";
    bus_redis_cfg_t rcfg = {.port = self->redis_port,
                            .password = T_PASSWORD,
                            .command_timeout_ms = 500,
                            .backoff_max_ms = 200};
    self->redis = bus_redis_new(&rcfg);
    self->svc = bus_service_new(&self->cfg, T_SERVICE, &err);
    if (!self->redis || !self->svc || bus_service_set_reply_cache(self->svc, self->redis, 60))
        return -1;
    snprintf(self->instance, sizeof(self->instance), "%s", bus_service_instance(self->svc));
    bus_service_on(self->svc, "inc", s_inc, self);
    bus_service_on(self->svc, "refuse", s_refuse, self);
    bus_service_on_read(self->svc, "peek", s_peek, self);
    self->stop = 0;
    return pthread_create(&self->thread, NULL, s_instance_main, self);
}

static void s_instance_stop(t_instance_t *self)
{
    self->stop = 1;
    pthread_join(self->thread, NULL);
    bus_service_destroy(&self->svc);
    bus_redis_destroy(&self->redis);
}

/*  A raw request client: sends exactly the bytes it is given, as a retrying client does. */
typedef struct {
    zsock_t *sock;
    uint64_t corr;
} t_raw_t;

static bus_buf_t s_envelope(const char *method, const char *id, bus_val_t *body)
{
    bus_msg_t *msg = bus_msg_new(method, "test", 1);
    if (id)
        bus_msg_set_id(msg, id);
    if (body)
        bus_msg_set_body(msg, &body);
    bus_buf_t buf = {0};
    bus_msg_encode(msg, &buf);
    bus_msg_destroy(&msg);
    return buf;
}

/*  Send envelope to service, wait up to timeout_ms; returns the decoded reply or NULL. */
static bus_msg_t *s_send(t_raw_t *raw, const char *service, const bus_buf_t *env, int timeout_ms)
{
    uint64_t corr = ++raw->corr;
    void *h = zsock_resolve(raw->sock);
    zmq_send(h, BUS_PROTO_CLIENT, strlen(BUS_PROTO_CLIENT), ZMQ_SNDMORE);
    zmq_send(h, BUS_CMD_REQ, strlen(BUS_CMD_REQ), ZMQ_SNDMORE);
    zmq_send(h, service, strlen(service), ZMQ_SNDMORE);
    zmq_send(h, &corr, sizeof(corr), ZMQ_SNDMORE);
    zmq_send(h, env->data, env->len, 0);
    int64_t deadline = bus_mono_ms() + timeout_ms;
    while (bus_mono_ms() < deadline) {
        zmq_pollitem_t item = {h, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, (long)(deadline - bus_mono_ms())) <= 0)
            continue;
        zmsg_t *m = zmsg_recv(raw->sock);
        if (!m)
            break;
        zframe_t *c = zmsg_first(m);
        c = zmsg_next(m);
        c = zmsg_next(m);
        zframe_t *payload = zmsg_next(m);
        bus_msg_t *rep = NULL;
        if (c && payload && zframe_size(c) == sizeof(corr) &&
            memcmp(zframe_data(c), &corr, sizeof(corr)) == 0)
            rep = bus_msg_decode(zframe_data(payload), zframe_size(payload), NULL, NULL, NULL);
        zmsg_destroy(&m);
        if (rep)
            return rep;
    }
    return NULL;
}

/*  value of a reply, -1 for no reply or an error reply */
static int64_t s_value(bus_msg_t *rep)
{
    int64_t v = -1;
    if (rep && streq(bus_msg_type(rep), "reply"))
        bus_val_map_get_int(bus_msg_body(rep), "value", &v);
    return v;
}

static const char *s_code(bus_msg_t *rep)
{
    const char *code = rep && streq(bus_msg_type(rep), "error")
                           ? bus_val_map_get_str(bus_msg_body(rep), "code")
                           : NULL;
    return code ? code : "(none)";
}

static int64_t s_counter(int port, const char *key)
{
    bus_redis_cfg_t rcfg = {.port = port, .password = T_PASSWORD};
    bus_redis_t *redis = bus_redis_new(&rcfg);
    redisReply *r = bus_redis_command(redis, "GET %s", key);
    int64_t v = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    if (r)
        freeReplyObject(r);
    bus_redis_destroy(&redis);
    return v;
}

/*  An "inc" whose handler fails once because of flag (answering code), sent twice as the same
    envelope: the failure must not be kept, so the second attempt runs and counts want. */
static void s_check_rerun(t_raw_t *raw, const char *at, const char *flag, const char *code,
                          int64_t want)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_bool(body, flag, true);
    bus_buf_t env = s_envelope("inc", NULL, body);
    s_flaky_left = 1;
    bus_msg_t *first = s_send(raw, at, &env, 3000);
    bus_msg_t *again = s_send(raw, at, &env, 3000);
    CHECK(streq(s_code(first), code) && s_value(again) == want,
          "%s first (%s, want %s), then the retry ran: %" PRId64 " (want %" PRId64 ")", flag,
          s_code(first), code, s_value(again), want);
    bus_msg_destroy(&first);
    bus_msg_destroy(&again);
    bus_buf_free(&env);
}

int main(void)
{
    h_init("test_reply_cache");
    h_bus_t bus;
    h_bus_init(&bus);
    CHECK(h_keygen(&bus, "service", T_SERVICE) == 0 && h_keygen(&bus, "operator", "cli") == 0,
          "certificates created");
    h_start_busd(&bus);
    int redis_port = h_free_port();
    pid_t redis = h_start_redis("redis", redis_port, T_PASSWORD);

    char cli_cert[PATH_MAX], svc_cert[PATH_MAX];
    bus_conn_cfg_t cli_cfg;
    h_conn(&bus, "operator-cli", &cli_cfg, cli_cert, sizeof(cli_cert));
    bus_client_t *client = bus_client_new(&cli_cfg, "test", NULL);
    CHECK(client && h_wait_busd(client, 5000), "busd answers");

    t_instance_t a = {0}, b = {0};
    h_conn(&bus, "service-" T_SERVICE, &a.cfg, svc_cert, sizeof(svc_cert));
    b.cfg = a.cfg;
    a.redis_port = b.redis_port = redis_port;
    CHECK(s_instance_start(&a) == 0 && s_instance_start(&b) == 0, "two instances started");
    CHECK(h_wait_instances(client, T_SERVICE, 2, 5000), "both registered with busd");
    char at_a[BUS_INSTANCE_MAX + 80], at_b[BUS_INSTANCE_MAX + 80];
    snprintf(at_a, sizeof(at_a), "%s@%s", T_SERVICE, a.instance);
    snprintf(at_b, sizeof(at_b), "%s@%s", T_SERVICE, b.instance);

    t_raw_t raw = {zsock_new(ZMQ_DEALER), 0};
    const char *err = "";
    CHECK(bus_conn_connect(raw.sock, bus.req, &cli_cfg, &err) == 0, "raw client connected");

    /* the same envelope, again and again */
    bus_buf_t e1 = s_envelope("inc", NULL, NULL);
    bus_msg_t *r1 = s_send(&raw, at_a, &e1, 3000);
    bus_msg_t *r2 = s_send(&raw, at_a, &e1, 3000);
    bus_msg_t *r3 = s_send(&raw, at_b, &e1, 3000);
    CHECK(s_value(r1) == 1 && s_value(r2) == 1 && s_value(r3) == 1,
          "inc sent 3 times (twice to A, once to B): replies %" PRId64 ", %" PRId64 ", %" PRId64
          ", want 1, 1, 1",
          s_value(r1), s_value(r2), s_value(r3));
    CHECK(s_counter(redis_port, T_KEY) == 1, "the handler ran once: counter %" PRId64 ", want 1",
          s_counter(redis_port, T_KEY));
    const char *by1 = r1 ? bus_val_map_get_str(bus_msg_body(r1), "by") : NULL;
    const char *by3 = r3 ? bus_val_map_get_str(bus_msg_body(r3), "by") : NULL;
    CHECK(by1 && by3 && streq(by1, a.instance) && streq(by3, a.instance),
          "B answered with A's first reply (by %s)", by3 ? by3 : "?");
    bus_msg_destroy(&r1);
    bus_msg_destroy(&r2);
    bus_msg_destroy(&r3);

    /* across a restart of the instance that ran it */
    s_instance_stop(&a);
    CHECK(s_instance_start(&a) == 0, "A restarted as a new instance");
    CHECK(h_wait_instances(client, T_SERVICE, 2, 5000), "restarted A registered");
    snprintf(at_a, sizeof(at_a), "%s@%s", T_SERVICE, a.instance);
    r1 = s_send(&raw, at_a, &e1, 3000);
    CHECK(s_value(r1) == 1 && s_counter(redis_port, T_KEY) == 1,
          "after the restart the retry gets reply %" PRId64 " (want 1), counter %" PRId64
          " (want 1)",
          s_value(r1), s_counter(redis_port, T_KEY));
    bus_msg_destroy(&r1);

    /* a retry while the first attempt still runs on the other instance */
    bus_val_t *slow = bus_val_new_map();
    bus_val_map_set_int(slow, "sleep_ms", 1000);
    bus_buf_t e2 = s_envelope("inc", NULL, slow);
    uint64_t corr_first = raw.corr + 1;
    void *h = zsock_resolve(raw.sock);
    zmq_send(h, BUS_PROTO_CLIENT, 5, ZMQ_SNDMORE);
    zmq_send(h, BUS_CMD_REQ, 3, ZMQ_SNDMORE);
    zmq_send(h, at_a, strlen(at_a), ZMQ_SNDMORE);
    zmq_send(h, &corr_first, sizeof(corr_first), ZMQ_SNDMORE);
    zmq_send(h, e2.data, e2.len, 0);
    raw.corr = corr_first;
    zclock_sleep(300); /* A is inside the handler now (it sleeps 1 s before INCR) */
    r2 = s_send(&raw, at_b, &e2, 3000);
    int64_t hint = 0;
    if (r2)
        bus_val_map_get_int(bus_msg_body(r2), "retry_ms", &hint);
    CHECK(streq(s_code(r2), BUS_ERR_UNAVAILABLE) && hint > 0,
          "a retry while the first attempt runs: code %s (want unavailable), retry_ms %" PRId64,
          s_code(r2), hint);
    bus_msg_destroy(&r2);
    int64_t got = -1;
    for (int64_t deadline = bus_mono_ms() + 5000; bus_mono_ms() < deadline && got < 0;) {
        r2 = s_send(&raw, at_b, &e2, 3000);
        got = s_value(r2);
        bus_msg_destroy(&r2);
        if (got < 0)
            zclock_sleep(100);
    }
    CHECK(got == 2 && s_counter(redis_port, T_KEY) == 2,
          "once it finished the retry gets its reply: %" PRId64 " (want 2), counter %" PRId64
          " (want 2)",
          got, s_counter(redis_port, T_KEY));

    /* a definite refusal is repeated, not re-run */
    bus_buf_t e3 = s_envelope("refuse", NULL, NULL);
    r1 = s_send(&raw, at_a, &e3, 3000);
    r2 = s_send(&raw, at_b, &e3, 3000);
    CHECK(streq(s_code(r1), "not_allowed") && streq(s_code(r2), "not_allowed") &&
              s_counter(redis_port, "t:{counter}:refused") == 1,
          "a refusal sent twice: codes %s, %s (want not_allowed twice), handler runs %" PRId64
          " (want 1)",
          s_code(r1), s_code(r2), s_counter(redis_port, "t:{counter}:refused"));
    bus_msg_destroy(&r1);
    bus_msg_destroy(&r2);

    /* a transient failure is not kept: the retry runs the handler */
    s_check_rerun(&raw, at_a, "flaky", BUS_ERR_UNAVAILABLE, 3);

    /* the client library retries unavailable by itself */
    s_flaky_left = 2;
    bus_val_t *fl2 = bus_val_new_map();
    bus_val_map_set_bool(fl2, "flaky", true);
    bus_msg_t *rep = bus_client_request(client, T_SERVICE, "inc", &fl2);
    CHECK(s_value(rep) == 4,
          "bus_client_request rode out two unavailable replies: %" PRId64 " (want 4; %s)",
          s_value(rep), rep ? "" : bus_client_errstr(client));
    bus_msg_destroy(&rep);

    /* read-only methods are not cached */
    bus_buf_t e5 = s_envelope("peek", NULL, NULL);
    r1 = s_send(&raw, at_a, &e5, 3000);
    bus_val_t *none = NULL;
    rep = bus_client_request(client, T_SERVICE, "inc", &none);
    bus_msg_destroy(&rep);
    r2 = s_send(&raw, at_a, &e5, 3000);
    CHECK(s_value(r1) == 4 && s_value(r2) == 5,
          "peek (read-only) sent twice sees the change in between: %" PRId64 ", %" PRId64
          " (want 4, 5)",
          s_value(r1), s_value(r2));
    bus_msg_destroy(&r1);
    bus_msg_destroy(&r2);

    /* a request id that cannot be a key is refused for a state-changing method */
    bus_buf_t e6 = s_envelope("inc", "bad:id", NULL);
    r1 = s_send(&raw, at_a, &e6, 3000);
    CHECK(streq(s_code(r1), BUS_ERR_BAD_REQUEST) && s_counter(redis_port, T_KEY) == 5,
          "request id 'bad:id' refused: %s (want bad_request), nothing ran", s_code(r1));
    bus_msg_destroy(&r1);

    /* an internal failure (out of memory, an unexpected storage error) is not kept either */
    s_check_rerun(&raw, at_a, "internal", BUS_ERR_INTERNAL, 6);

    /* a claim whose answer was lost: its own instance takes it again, another one waits */
    bus_buf_t e9 = s_envelope("inc", "lost-claim-1", NULL);
    bus_redis_cfg_t rc9 = {.port = redis_port, .password = T_PASSWORD};
    bus_redis_t *r9 = bus_redis_new(&rc9);
    char claim[BUS_INSTANCE_MAX + 2];
    snprintf(claim, sizeof(claim), "P%s", a.instance);
    redisReply *set =
        /* kept replies are filed per caller: the raw client is operator-cli */
        bus_redis_command(r9, "SET reply:{%s}:operator-cli:lost-claim-1 %s PX 30000", T_SERVICE,
                          claim);
    if (set)
        freeReplyObject(set);
    bus_redis_destroy(&r9);
    r1 = s_send(&raw, at_b, &e9, 3000);
    r2 = s_send(&raw, at_a, &e9, 3000);
    CHECK(streq(s_code(r1), BUS_ERR_UNAVAILABLE) && s_value(r2) == 7,
          "A's lost claim: B waits (%s, want unavailable), A takes it again and runs: %" PRId64
          " (want 7)",
          s_code(r1), s_value(r2));
    bus_msg_destroy(&r1);
    bus_msg_destroy(&r2);

    /* Redis gone: nothing runs without its claim */
    h_stop(redis, SIGKILL);
    bus_buf_t e7 = s_envelope("inc", NULL, NULL);
    r1 = s_send(&raw, at_a, &e7, 5000);
    CHECK(streq(s_code(r1), BUS_ERR_UNAVAILABLE), "Redis down: %s (want unavailable)", s_code(r1));
    bus_msg_destroy(&r1);

    bus_buf_free(&e1);
    bus_buf_free(&e2);
    bus_buf_free(&e3);
    bus_buf_free(&e5);
    bus_buf_free(&e6);
    bus_buf_free(&e7);
    bus_buf_free(&e9);
    zsock_destroy(&raw.sock);
    s_instance_stop(&a);
    s_instance_stop(&b);
    bus_client_destroy(&client);
    return h_finish();
}
