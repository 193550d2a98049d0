/*  =========================================================================
    bench_bus - libbus + busd against raw libzmq + zmq_proxy, same topology

    Both sides run the same processes over 127.0.0.1 TCP with CURVE on:
      pub/sub:  publisher -> proxy (XSUB/XPUB) -> subscriber, 300-byte events
      req/rep:  client -> router -> worker, sequential round trips
    Raw: PUB/SUB/REQ/REP sockets and zmq_proxy in a child process.
    libbus: bus_pub/bus_sub/bus_client/bus_service and the real busd binary,
    with envelopes encoded and decoded on every message, each side with the
    key of its role, as in production: the publisher and the worker a
    service key ("service-sales": the publisher sends sale.completed as the
    sales service does, so busd checks topic owner and src on every event),
    the subscriber a consumer key, the client an operator key.
    Prints `name: value` lines. Throughput = events the subscriber received
    divided by the time from its first to its last event.
    =========================================================================
*/
#include <bus/bus.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define S_EVENT_BYTES  300
#define S_DEFAULT_MSGS 300000
#define S_DEFAULT_RTTS 20000
#define S_IDLE_MS      1500
#define S_SETTLE_MS    1000
#define S_TOPIC        "sale.completed"

static int s_msgs = S_DEFAULT_MSGS;
static int s_rtts = S_DEFAULT_RTTS;
static char s_tmp[PATH_MAX];
static char s_bin[PATH_MAX];

typedef struct {
    char pub[64], sub[64], req[64], back[64];
    char server_public[41], server_secret[41];
} s_topo_t;

/*  libbus connection settings per role (all on one busd). */
typedef struct {
    bus_conn_cfg_t service;  /* the publisher and the req/rep worker, registered as "sales" */
    bus_conn_cfg_t operator; /* the req/rep client */
    bus_conn_cfg_t consumer; /* the subscriber */
} s_roles_t;

static int s_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    close(fd);
    return ntohs(addr.sin_port);
}

static void s_curve_server(void *sock, const s_topo_t *t)
{
    int one = 1;
    zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof(one));
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, t->server_secret, 40);
}

static void s_curve_client(void *sock, const s_topo_t *t)
{
    char pub[41], sec[41];
    zmq_curve_keypair(pub, sec);
    zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, t->server_public, 40);
    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40);
}

/*  High-water marks above the event count, on both sides, so nothing is dropped and the figure
    is the rate the pipeline sustains, not how much of a burst survived. */
#define S_BENCH_HWM 1000000

static void s_set_hwm(void *sock)
{
    int hwm = S_BENCH_HWM;
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof(hwm));
}

/*  Child: zmq_proxy between two bound sockets until killed. */
static pid_t s_raw_proxy(const s_topo_t *t, int front_type, const char *front, int back_type,
                         const char *back)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    void *ctx = zmq_ctx_new();
    void *f = zmq_socket(ctx, front_type);
    void *b = zmq_socket(ctx, back_type);
    s_set_hwm(f);
    s_set_hwm(b);
    s_curve_server(f, t);
    s_curve_server(b, t);
    if (zmq_bind(f, front) != 0 || zmq_bind(b, back) != 0)
        _exit(1);
    zmq_proxy(f, b, NULL);
    _exit(0);
}

/*  Subscriber side, shared shape for both: count events, report (count, first->last ms). */
typedef struct {
    int64_t count;
    int64_t elapsed_us;
} s_result_t;

static pid_t s_subscriber_run(int fd_out, int fd_ready, const s_topo_t *t, bool libbus,
                              const bus_conn_cfg_t *cfg);

static pid_t s_subscriber(int fd_out, int fd_ready, const s_topo_t *t, bool libbus,
                          const bus_conn_cfg_t *cfg)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (libbus) {
        /* a fresh process image: czmq's context must not be inherited through fork */
        char fd1[16], fd2[16], msgs[16];
        snprintf(fd1, sizeof(fd1), "%d", fd_out);
        snprintf(fd2, sizeof(fd2), "%d", fd_ready);
        snprintf(msgs, sizeof(msgs), "%d", s_msgs);
        execl("/proc/self/exe", "bench_bus", "--role-sub", fd1, fd2, msgs, cfg->sub_endpoint,
              cfg->cert, cfg->server_cert, (char *)NULL);
        _exit(127);
    }
    return s_subscriber_run(fd_out, fd_ready, t, libbus, cfg);
}

static pid_t s_subscriber_run(int fd_out, int fd_ready, const s_topo_t *t, bool libbus,
                              const bus_conn_cfg_t *cfg)
{
    s_result_t r = {0, 0};
    int64_t first = 0, last = 0;
    if (libbus) {
        bus_sub_t *sub = bus_sub_new(cfg, NULL);
        bus_sub_subscribe(sub, "sale.");
        if (write(fd_ready, "r", 1) != 1)
            _exit(1);
        while (r.count < s_msgs) {
            bus_msg_t *msg = bus_sub_recv(sub, r.count ? S_IDLE_MS : 20000, NULL, 0);
            if (!msg)
                break;
            last = zclock_usecs();
            if (!first)
                first = last;
            r.count++;
            bus_msg_destroy(&msg);
        }
        bus_sub_destroy(&sub);
    } else {
        void *ctx = zmq_ctx_new();
        void *sub = zmq_socket(ctx, ZMQ_SUB);
        s_set_hwm(sub);
        s_curve_client(sub, t);
        zmq_connect(sub, t->sub);
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "sale.", 5);
        if (write(fd_ready, "r", 1) != 1)
            _exit(1);
        char topic[256], payload[4096];
        while (r.count < s_msgs) {
            zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&item, 1, r.count ? S_IDLE_MS : 20000) <= 0)
                break;
            zmq_recv(sub, topic, sizeof(topic), 0);
            zmq_recv(sub, payload, sizeof(payload), 0);
            last = zclock_usecs();
            if (!first)
                first = last;
            r.count++;
        }
        zmq_close(sub);
        zmq_ctx_term(ctx);
    }
    r.elapsed_us = last - first;
    if (write(fd_out, &r, sizeof(r)) != sizeof(r))
        _exit(1);
    _exit(0);
}

static double s_pubsub(const s_topo_t *t, const s_roles_t *roles, int64_t *received)
{
    bool libbus = roles != NULL;
    int out[2], ready[2];
    if (pipe(out) != 0 || pipe(ready) != 0)
        return 0;
    pid_t sub = s_subscriber(out[1], ready[1], t, libbus, libbus ? &roles->consumer : NULL);
    char c;
    if (read(ready[0], &c, 1) != 1)
        return 0;
    byte payload[S_EVENT_BYTES];
    memset(payload, 'x', sizeof(payload));
    if (libbus) {
        bus_pub_t *pub = bus_pub_new(&roles->service, "sales-bench-pub", NULL);
        zclock_sleep(S_SETTLE_MS);
        /* a body that makes the encoded envelope S_EVENT_BYTES long */
        bus_val_t *proto = bus_val_new_map();
        bus_val_map_set_str(proto, "store", "S001");
        bus_val_map_set_int(proto, "total_fen", 123456);
        bus_msg_t *probe = bus_msg_new("sale.completed", "sales-bench-pub", 1000000);
        bus_val_t *copy = bus_val_dup(proto);
        bus_msg_set_body(probe, &copy);
        bus_buf_t buf = {0};
        bus_msg_encode(probe, &buf);
        size_t pad = buf.len < S_EVENT_BYTES - 8 ? S_EVENT_BYTES - 8 - buf.len : 1;
        char *filler = calloc(1, pad + 1);
        memset(filler, 'x', pad);
        bus_val_map_set_str(proto, "note", filler);
        free(filler);
        bus_buf_free(&buf);
        bus_msg_destroy(&probe);
        for (int i = 0; i < s_msgs; i++) {
            bus_val_t *body = bus_val_dup(proto);
            while (bus_pub_publish(pub, S_TOPIC, "sale.completed", &body) < 0) {
                body = bus_val_dup(proto);
                zclock_sleep(1);
            }
        }
        bus_val_destroy(&proto);
        bus_pub_destroy(&pub);
    } else {
        void *ctx = zmq_ctx_new();
        void *pub = zmq_socket(ctx, ZMQ_PUB);
        s_set_hwm(pub);
        s_curve_client(pub, t);
        zmq_connect(pub, t->pub);
        zclock_sleep(S_SETTLE_MS);
        for (int i = 0; i < s_msgs; i++) {
            zmq_send(pub, S_TOPIC, strlen(S_TOPIC), ZMQ_SNDMORE);
            zmq_send(pub, payload, sizeof(payload), 0);
        }
        int linger = 5000;
        zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof(linger));
        zmq_close(pub);
        zmq_ctx_term(ctx);
    }
    s_result_t r = {0, 0};
    if (read(out[0], &r, sizeof(r)) != sizeof(r))
        r.count = 0;
    waitpid(sub, NULL, 0);
    close(out[0]);
    close(out[1]);
    close(ready[0]);
    close(ready[1]);
    *received = r.count;
    return r.elapsed_us > 0 ? (double)r.count * 1e6 / (double)r.elapsed_us : 0;
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static pid_t s_raw_worker(const s_topo_t *t)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    void *ctx = zmq_ctx_new();
    void *rep = zmq_socket(ctx, ZMQ_REP);
    s_curve_client(rep, t);
    zmq_connect(rep, t->back);
    char buf[4096];
    while (true) {
        int n = zmq_recv(rep, buf, sizeof(buf), 0);
        if (n < 0)
            break;
        zmq_send(rep, buf, (size_t)n, 0);
    }
    _exit(0);
}

static int s_bench_echo(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)svc;
    (void)arg;
    int64_t n = 0;
    bus_val_map_get_int(bus_msg_body(req), "n", &n);
    bus_val_map_set_int(reply, "n", n);
    return 0;
}

static pid_t s_bus_worker(const bus_conn_cfg_t *cfg)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    execl("/proc/self/exe", "bench_bus", "--role-worker", cfg->req_endpoint, cfg->cert,
          cfg->server_cert, (char *)NULL);
    _exit(127);
}

static void s_bus_worker_run(const bus_conn_cfg_t *cfg)
{
    bus_service_t *svc = bus_service_new(cfg, "sales", NULL);
    if (!svc)
        _exit(1);
    bus_service_on(svc, "echo", s_bench_echo, NULL);
    while (true)
        if (bus_service_poll(svc, 1000) < 0)
            break;
    _exit(0);
}

/*  Round trips: fills mean and p99 in microseconds. */
static void s_reqrep(const s_topo_t *t, const s_roles_t *roles, double *mean, double *p99)
{
    bool libbus = roles != NULL;
    int64_t *lat = calloc((size_t)s_rtts, sizeof(*lat));
    int64_t total = 0;
    if (libbus) {
        pid_t worker = s_bus_worker(&roles->service);
        bus_client_t *client = bus_client_new(&roles->operator, "bench", NULL);
        bus_client_set_timeout(client, 2000);
        bus_client_set_retries(client, 10);
        for (int i = 0; i < 100; i++) { /* warm up; waits for registration */
            bus_val_t *body = bus_val_new_map();
            bus_msg_t *rep = bus_client_request(client, "sales", "echo", &body);
            bus_msg_destroy(&rep);
        }
        for (int i = 0; i < s_rtts; i++) {
            bus_val_t *body = bus_val_new_map();
            bus_val_map_set_int(body, "n", i);
            int64_t t0 = zclock_usecs();
            bus_msg_t *rep = bus_client_request(client, "sales", "echo", &body);
            lat[i] = zclock_usecs() - t0;
            total += lat[i];
            bus_msg_destroy(&rep);
        }
        bus_client_destroy(&client);
        kill(worker, SIGKILL);
        waitpid(worker, NULL, 0);
    } else {
        pid_t worker = s_raw_worker(t);
        void *ctx = zmq_ctx_new();
        void *req = zmq_socket(ctx, ZMQ_REQ);
        s_curve_client(req, t);
        zmq_connect(req, t->req);
        char buf[4096], msg[64];
        memset(msg, 'r', sizeof(msg));
        for (int i = 0; i < 100 + s_rtts; i++) {
            int64_t t0 = zclock_usecs();
            zmq_send(req, msg, sizeof(msg), 0);
            zmq_recv(req, buf, sizeof(buf), 0);
            if (i >= 100) {
                lat[i - 100] = zclock_usecs() - t0;
                total += lat[i - 100];
            }
        }
        zmq_close(req);
        zmq_ctx_term(ctx);
        kill(worker, SIGKILL);
        waitpid(worker, NULL, 0);
    }
    qsort(lat, (size_t)s_rtts, sizeof(*lat), s_cmp);
    *mean = (double)total / s_rtts;
    *p99 = (double)lat[(size_t)s_rtts * 99 / 100];
    free(lat);
}

static void s_topo(s_topo_t *t)
{
    snprintf(t->pub, sizeof(t->pub), "tcp://127.0.0.1:%d", s_port());
    snprintf(t->sub, sizeof(t->sub), "tcp://127.0.0.1:%d", s_port());
    snprintf(t->req, sizeof(t->req), "tcp://127.0.0.1:%d", s_port());
    snprintf(t->back, sizeof(t->back), "tcp://127.0.0.1:%d", s_port());
    zmq_curve_keypair(t->server_public, t->server_secret);
}

static pid_t s_busd(const s_topo_t *t)
{
    char cert[PATH_MAX], clients[PATH_MAX], busd[PATH_MAX];
    snprintf(cert, sizeof(cert), "%s/busd.cert_secret", s_tmp);
    snprintf(clients, sizeof(clients), "%s/clients", s_tmp);
    snprintf(busd, sizeof(busd), "%s/busd", s_bin);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(busd, "busd", "--pub-bind", t->pub, "--sub-bind", t->sub, "--req-bind", t->req,
              "--cert", cert, "--clients-dir", clients, "--log-level", "warn", "--hwm", "1000000",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    if (argc >= 8 && streq(argv[1], "--role-sub")) {
        bus_conn_cfg_t cfg;
        bus_conn_cfg_defaults(&cfg);
        cfg.hwm = S_BENCH_HWM;
        s_msgs = atoi(argv[4]);
        cfg.sub_endpoint = argv[5];
        cfg.cert = argv[6];
        cfg.server_cert = argv[7];
        s_subscriber_run(atoi(argv[2]), atoi(argv[3]), NULL, true, &cfg);
        return 0;
    }
    if (argc >= 5 && streq(argv[1], "--role-worker")) {
        bus_conn_cfg_t cfg;
        bus_conn_cfg_defaults(&cfg);
        cfg.req_endpoint = argv[2];
        cfg.cert = argv[3];
        cfg.server_cert = argv[4];
        s_bus_worker_run(&cfg);
        return 0;
    }
    if (argc > 1)
        s_msgs = atoi(argv[1]);
    if (argc > 2)
        s_rtts = atoi(argv[2]);
    zsys_handler_set(NULL);
    ssize_t n = readlink("/proc/self/exe", s_bin, sizeof(s_bin) - 1);
    s_bin[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(s_bin, '/');
    if (slash)
        *slash = '\0';
    snprintf(s_tmp, sizeof(s_tmp), "/tmp/posbus-bench-XXXXXX");
    if (!mkdtemp(s_tmp))
        return 1;
    bus_identity_t service, operator, consumer;
    bus_identity_set(&service, BUS_ROLE_SERVICE, "sales", NULL, NULL);
    bus_identity_set(&operator, BUS_ROLE_OPERATOR, "bench", NULL, NULL);
    bus_identity_set(&consumer, BUS_ROLE_CONSUMER, "bench", NULL, NULL);
    if (bus_keygen(s_tmp, NULL, false) != 0 || bus_keygen(s_tmp, &service, true) != 0 ||
        bus_keygen(s_tmp, &operator, true) != 0 || bus_keygen(s_tmp, &consumer, true) != 0)
        return 1;

    /* raw */
    s_topo_t raw;
    s_topo(&raw);
    pid_t proxy = s_raw_proxy(&raw, ZMQ_XSUB, raw.pub, ZMQ_XPUB, raw.sub);
    zclock_sleep(200);
    int64_t raw_got = 0, bus_got = 0;
    double raw_tput = s_pubsub(&raw, NULL, &raw_got);
    kill(proxy, SIGKILL);
    waitpid(proxy, NULL, 0);
    proxy = s_raw_proxy(&raw, ZMQ_ROUTER, raw.req, ZMQ_DEALER, raw.back);
    zclock_sleep(200);
    double raw_mean, raw_p99;
    s_reqrep(&raw, NULL, &raw_mean, &raw_p99);
    kill(proxy, SIGKILL);
    waitpid(proxy, NULL, 0);

    /* libbus + busd */
    s_topo_t lb;
    s_topo(&lb);
    pid_t busd = s_busd(&lb);
    char certs[3][PATH_MAX], server[PATH_MAX];
    snprintf(server, sizeof(server), "%s/busd.cert", s_tmp);
    s_roles_t roles;
    bus_conn_cfg_t *cfgs[] = {&roles.service, &roles.operator, & roles.consumer };
    const char *files[] = {"service-sales", "operator-bench", "consumer-bench"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(certs[i], sizeof(certs[i]), "%s/%s.cert_secret", s_tmp, files[i]);
        bus_conn_cfg_defaults(cfgs[i]);
        cfgs[i]->pub_endpoint = lb.pub;
        cfgs[i]->sub_endpoint = lb.sub;
        cfgs[i]->req_endpoint = lb.req;
        cfgs[i]->cert = certs[i];
        cfgs[i]->server_cert = server;
        cfgs[i]->hwm = S_BENCH_HWM;
    }
    zclock_sleep(300);
    double bus_tput = s_pubsub(&lb, &roles, &bus_got);
    double bus_mean, bus_p99;
    s_reqrep(&lb, &roles, &bus_mean, &bus_p99);
    kill(busd, SIGTERM);
    waitpid(busd, NULL, 0);

    printf("bus.pubsub.events: %d\n", s_msgs);
    printf("bus.pubsub.event_bytes: %d\n", S_EVENT_BYTES);
    printf("bus.pubsub.raw_msgs_per_s: %.0f\n", raw_tput);
    printf("bus.pubsub.raw_delivered: %" PRId64 "\n", raw_got);
    printf("bus.pubsub.libbus_msgs_per_s: %.0f\n", bus_tput);
    printf("bus.pubsub.libbus_delivered: %" PRId64 "\n", bus_got);
    printf("bus.pubsub.throughput_ratio: %.2f\n", raw_tput > 0 ? bus_tput / raw_tput : 0);
    printf("bus.reqrep.round_trips: %d\n", s_rtts);
    printf("bus.reqrep.raw_mean_us: %.1f\n", raw_mean);
    printf("bus.reqrep.raw_p99_us: %.1f\n", raw_p99);
    printf("bus.reqrep.libbus_mean_us: %.1f\n", bus_mean);
    printf("bus.reqrep.libbus_p99_us: %.1f\n", bus_p99);
    printf("bus.reqrep.latency_ratio: %.2f\n", raw_mean > 0 ? bus_mean / raw_mean : 0);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s_tmp);
    if (system(cmd) != 0)
        return 1;
    return 0;
}
