/*  svc_main.c - option loading shared by sales, inventory and reporting (not part of libbus: it
    prints usage and errors, which a library must not). */
#include <sys/socket.h>
#include "svc_main.h"

#define S_WORKER_BLOCK_MS 500
#define S_RETRY_MS        300 /* retry hint when Redis is down */
#define S_GROUP_MAX       128
#define S_LAG_SCAN_MAX    1000 /* entries counted one by one when Redis cannot say the lag */

/*  The one stream worker of a consumer process (inventory and reporting run one each), as the
    main thread sees it: its counters, copied into the service's stats by the main thread (the
    stats cells belong to it), and a Redis connection of the main thread's own for dead.list.
    The worker pointer is read only inside svc_core_run, before the service stops the worker. */
static struct {
    bus_stream_worker_t *worker;
    bus_redis_t *redis;
    char group[S_GROUP_MAX];
    char stream[S_GROUP_MAX];
    int64_t *c_applied, *c_parked, *c_claimed, *c_errors;
} s_consumer;

/*  Copy the worker's counters into the stats cells (main thread only). */
static void s_consumer_refresh(void)
{
    if (!s_consumer.worker)
        return;
    *s_consumer.c_applied = bus_stream_worker_applied(s_consumer.worker);
    *s_consumer.c_parked = bus_stream_worker_parked(s_consumer.worker);
    *s_consumer.c_claimed = bus_stream_worker_claimed(s_consumer.worker);
    *s_consumer.c_errors = bus_stream_worker_errors(s_consumer.worker);
}

static int s_stream_lag(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg);

/*  dead.list {after?: stream id, count?: 1..BUS_STREAM_DEAD_LIST_MAX}: the entries this
    consumer group parked, oldest first (read-only). */
static int s_dead_list(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    const bus_val_t *body = bus_msg_body(req);
    const bus_val_t *v = bus_val_map_get(body, "after");
    const char *after = v ? bus_val_get_str(v, NULL) : NULL;
    if (v && (!after || (*after && !bus_stream_id_valid(after))))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST,
                                 "after: a stream id such as 1700000000000-0");
    int64_t count = 100;
    v = bus_val_map_get(body, "count");
    if (v && (!bus_val_get_int(v, &count) || count < 1 || count > BUS_STREAM_DEAD_LIST_MAX))
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "count: an integer from 1 to %d",
                                 BUS_STREAM_DEAD_LIST_MAX);
    bus_val_t *list = s_consumer.redis ? bus_stream_dead_list(s_consumer.redis, s_consumer.group,
                                                              after, (int)count)
                                       : NULL;
    if (!list)
        return bus_service_unavailable(svc, S_RETRY_MS, "dead.list: storage unavailable, retry: %s",
                                       s_consumer.redis ? bus_redis_errstr(s_consumer.redis)
                                                        : "no connection");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < bus_val_size(list); i++) {
        bus_val_t *copy = bus_val_dup(bus_val_map_value(list, i));
        rc = copy ? bus_val_map_set(reply, bus_val_map_key(list, i), &copy) : -1;
    }
    bus_val_destroy(&list);
    if (rc != 0)
        return bus_service_error(svc, BUS_ERR_INTERNAL, "dead.list: out of memory");
    return 0;
}

const bus_opt_t svc_consumer_opts[] = {
    {"consumer-name", BUS_OPT_STR, NULL, 0, 0,
     "consumer name in the stream group (default: the instance id)"},
    {"batch", BUS_OPT_INT, "100", 1, 10000, "stream entries read and applied at once"},
    {"claim-idle-ms", BUS_OPT_INT, "5000", 100, 3600000,
     "take over entries another instance left unacknowledged this long"},
    {"gather-ms", BUS_OPT_INT, "10", 0, 1000,
     "after a small batch, let entries gather this long before the next read (throughput vs lag)"},
    {NULL, 0, NULL, 0, 0, NULL}};

bus_stream_worker_t *svc_consumer_start(bus_config_t *config, bus_service_t *svc,
                                        bus_redis_t *wredis, const char *stream, const char *group,
                                        bus_stream_fn *fn, void *arg)
{
    const char *err = "";
    s_consumer.redis = bus_redis_new_from_config(config, &err);
    if (!s_consumer.redis) {
        bus_error("service.start", "no Redis connection for dead.list: %s", err);
        return NULL;
    }
    snprintf(s_consumer.group, sizeof(s_consumer.group), "%s", group);
    snprintf(s_consumer.stream, sizeof(s_consumer.stream), "%s", stream);
    bus_stats_t *stats = bus_service_stats(svc);
    s_consumer.c_applied = bus_stats_counter(stats, "stream_applied");
    s_consumer.c_parked = bus_stats_counter(stats, "stream_parked");
    s_consumer.c_claimed = bus_stats_counter(stats, "stream_claimed");
    s_consumer.c_errors = bus_stats_counter(stats, "stream_errors");
    if (!s_consumer.c_applied || !s_consumer.c_parked || !s_consumer.c_claimed ||
        !s_consumer.c_errors || bus_service_on_read(svc, "dead.list", s_dead_list, NULL) != 0 ||
        bus_service_on_read(svc, "stream.lag", s_stream_lag, NULL) != 0) {
        bus_error("service.start", "cannot register dead.list and stream.lag: out of memory");
        goto out_redis;
    }
    const char *consumer = bus_config_str(config, "consumer-name");
    bus_stream_worker_t *w = bus_stream_worker_start(
        wredis, stream, group, consumer ? consumer : bus_service_instance(svc),
        (int)bus_config_int(config, "batch"), S_WORKER_BLOCK_MS,
        (int)bus_config_int(config, "claim-idle-ms"), fn, arg);
    if (!w) {
        bus_error("service.start", "cannot start the stream worker");
        goto out_redis;
    }
    bus_stream_worker_set_gather(w, (int)bus_config_int(config, "gather-ms"));
    s_consumer.worker = w;
    return w;
out_redis:
    bus_redis_destroy(&s_consumer.redis);
    return NULL;
}

/*  Entries of the stream the group has not been handed yet, when XINFO GROUPS could not say
    (Redis 7.0 answers nil after deletions inside the stream): counted from the group's last
    delivered id, up to S_LAG_SCAN_MAX; -1 when there are more or Redis cannot be asked. */
static int64_t s_lag_counted(const char *last_delivered)
{
    char start[S_GROUP_MAX];
    snprintf(start, sizeof(start), "(%s", last_delivered);
    redisReply *r = bus_redis_command(s_consumer.redis, "XRANGE %s %s + COUNT %d",
                                      s_consumer.stream, start, S_LAG_SCAN_MAX);
    int64_t lag = r && r->type == REDIS_REPLY_ARRAY && r->elements < S_LAG_SCAN_MAX
                      ? (int64_t)r->elements
                      : -1;
    if (r)
        freeReplyObject(r);
    return lag;
}

/*  This consumer's group as XINFO GROUPS tells it on the main thread's own connection: lag
    (entries not yet delivered to the group; -1 unknown) and pending (delivered, not yet
    acknowledged; -1 unknown). 0, or -1 when Redis cannot be asked or has no such group. */
static int s_group_info(int64_t *lag, int64_t *pending)
{
    *lag = *pending = -1;
    if (!s_consumer.worker || !s_consumer.redis)
        return -1;
    int rc = -1;
    redisReply *r = bus_redis_command(s_consumer.redis, "XINFO GROUPS %s", s_consumer.stream);
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements && rc != 0; i++) {
        const redisReply *g = r->element[i];
        const char *name = NULL, *last = NULL;
        bool lag_known = false;
        int64_t l = -1, p = -1;
        for (size_t k = 0; g->type == REDIS_REPLY_ARRAY && k + 1 < g->elements; k += 2) {
            const redisReply *key = g->element[k], *val = g->element[k + 1];
            if (key->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(key->str, "name") == 0 && val->type == REDIS_REPLY_STRING)
                name = val->str;
            else if (strcmp(key->str, "last-delivered-id") == 0 && val->type == REDIS_REPLY_STRING)
                last = val->str;
            else if (strcmp(key->str, "pending") == 0 && val->type == REDIS_REPLY_INTEGER)
                p = val->integer;
            else if (strcmp(key->str, "lag") == 0 && val->type == REDIS_REPLY_INTEGER) {
                l = val->integer;
                lag_known = true;
            }
        }
        if (!name || strcmp(name, s_consumer.group) != 0)
            continue;
        *lag = !lag_known && last ? s_lag_counted(last) : l;
        *pending = p;
        rc = 0;
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

/*  Metrics collector of a consumer: its group's lag and pending entries (s_group_info).
    Nothing when Redis cannot be asked (the stats say why). */
static void s_consumer_metrics(bus_metrics_out_t *out, void *arg)
{
    (void)arg;
    int64_t lag, pending;
    if (s_group_info(&lag, &pending) != 0)
        return;
    const char *labels[] = {"stream", s_consumer.stream, "group", s_consumer.group, NULL};
    const char *lag_help = "stream entries not yet delivered to the consumer group";
    if (lag >= 0)
        bus_metrics_out_gauge(out, "stream_lag_entries", lag_help, labels, lag);
    else
        bus_metrics_out_gauge_nan(out, "stream_lag_entries", lag_help, labels);
    if (pending >= 0)
        bus_metrics_out_gauge(out, "stream_pending_entries",
                              "entries delivered to the group and not yet acknowledged", labels,
                              pending);
}

/*  stream.lag {}: this consumer group's lag and pending entries (read-only; posctl top shows
    them): {stream, group, lag, pending}, -1 where Redis could not say. */
static int s_stream_lag(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)req;
    (void)arg;
    int64_t lag, pending;
    if (s_group_info(&lag, &pending) != 0)
        return bus_service_unavailable(svc, S_RETRY_MS, "stream.lag: storage unavailable, retry");
    bus_val_map_set_str(reply, "stream", s_consumer.stream);
    bus_val_map_set_str(reply, "group", s_consumer.group);
    bus_val_map_set_int(reply, "lag", lag);
    bus_val_map_set_int(reply, "pending", pending);
    return 0;
}

/* Options every service has. */
static const bus_opt_t s_service_opts[] = {
    {"reply-cache-ttl-s", BUS_OPT_INT, "86400", 60, 2592000,
     "keep the reply to a state-changing request this long, for retries of it"},
    {"log-stdout", BUS_OPT_BOOL, "false", 0, 0,
     "write log lines to standard output instead of standard error"},
    {NULL, 0, NULL, 0, 0, NULL}};

bus_config_t *svc_config_load(const char *program, const bus_opt_t *own, bool consumer, int argc,
                              char **argv, int *exit_code)
{
    *exit_code = 2;
    bus_config_t *config = bus_config_new(program, own);
    if (!config || bus_config_add(config, bus_conn_opts) ||
        bus_config_add(config, bus_redis_opts) || bus_config_add(config, bus_program_opts) ||
        bus_config_add(config, s_service_opts) || bus_config_add(config, bus_metrics_opts) ||
        (consumer && bus_config_add(config, svc_consumer_opts))) {
        bus_config_destroy(&config);
        return NULL;
    }
    int rc = bus_config_load(config, argc, argv);
    if (rc == 1 || (rc == 0 && bus_config_bool(config, "example-config"))) {
        if (rc == 1) {
            printf("usage: %s [--config FILE] [options]\n", program);
            bus_config_usage(config, stdout);
        } else
            bus_config_write_example(config, stdout);
        *exit_code = 0;
        bus_config_destroy(&config);
        return NULL;
    }
    if (rc != 0 || bus_program_log_init(config, program) != 0) {
        fprintf(stderr, "%s: %s\n", program, rc ? bus_config_error(config) : "bad --log-level");
        bus_config_destroy(&config);
        return NULL;
    }
    const char *listen = bus_config_str(config, "metrics-listen");
    struct sockaddr_storage sa;
    unsigned sa_len;
    if (listen && *listen && bus_metrics_parse_listen(listen, &sa, &sa_len) != 0) {
        fprintf(stderr, "%s: metrics-listen: expected ADDRESS:PORT such as 127.0.0.1:9101\n",
                program);
        bus_config_destroy(&config);
        return NULL;
    }
    if (bus_config_bool(config, "log-stdout"))
        bus_log_set_stream(stdout);
    bus_program_signals();
    if (bus_config_bool(config, "insecure"))
        bus_warn("service.insecure", "plaintext tcp:// to busd (development only)");
    return config;
}

#define S_POLL_MS 500

int svc_core_start(svc_core_t *core, bus_config_t *config, const char *program, bool consumer)
{
    memset(core, 0, sizeof(*core));
    core->config = config;
    bus_conn_cfg_from_config(&core->conn, config);
    const char *err = "";
    core->redis = bus_redis_new_from_config(config, &err);
    if (core->redis && consumer)
        core->wredis = bus_redis_new_from_config(config, &err);
    if (core->redis && (core->wredis || !consumer))
        core->svc = bus_service_new(&core->conn, bus_config_str(config, "service-name"), &err);
    if (core->svc)
        core->pub = bus_pub_new(&core->conn, bus_service_instance(core->svc), &err);
    if (core->pub && consumer)
        core->wpub = bus_pub_new(&core->conn, bus_service_instance(core->svc), &err);
    if (!core->pub || (consumer && !core->wpub)) {
        bus_error("service.start", "%s cannot start: %s", program, err);
        svc_core_stop(core);
        return -1;
    }
    bus_service_watch_redis(core->svc, core->redis);
    /* every state-changing method runs once per request id, whichever instance gets a retry */
    if (bus_service_set_reply_cache(core->svc, core->redis,
                                    (int)bus_config_int(config, "reply-cache-ttl-s")) != 0) {
        bus_error("service.start", "%s cannot set up its reply cache", program);
        svc_core_stop(core);
        return -1;
    }
    core->metrics = bus_metrics_new_from_config(config, program, &err);
    if (!core->metrics && err) {
        bus_error("service.start", "%s cannot serve metrics: %s", program, err);
        svc_core_stop(core);
        return -1;
    }
    if (bus_metrics_add_collector(core->metrics, bus_service_metrics, core->svc) != 0 ||
        (consumer && bus_metrics_add_collector(core->metrics, s_consumer_metrics, NULL) != 0)) {
        bus_error("service.start", "%s cannot register its metrics", program);
        svc_core_stop(core);
        return -1;
    }
    if (core->metrics)
        bus_info("service.metrics", "serving http://%s/metrics (port %d)",
                 bus_config_str(config, "metrics-listen"), bus_metrics_port(core->metrics));
    if (bus_redis_connect(core->redis) != 0)
        bus_warn("service.redis", "not reachable yet, will retry: %s",
                 bus_redis_errstr(core->redis));
    bus_info("service.started", "%s instance=%s", program, bus_service_instance(core->svc));
    return 0;
}

void svc_core_run(svc_core_t *core, void (*tick)(void *arg), void *arg)
{
    while (!bus_program_stopping()) {
        s_consumer_refresh();
        bus_service_poll(core->svc, S_POLL_MS);
        if (tick)
            tick(arg);
        bus_metrics_tick(core->metrics);
    }
    s_consumer_refresh();
    if (s_consumer.worker)
        bus_info("service.stream",
                 "applied=%" PRId64 " parked=%" PRId64 " claimed=%" PRId64 " errors=%" PRId64,
                 *s_consumer.c_applied, *s_consumer.c_parked, *s_consumer.c_claimed,
                 *s_consumer.c_errors);
    s_consumer.worker = NULL; /* the service stops it next */
    bus_info("service.stopping", "instance=%s", bus_service_instance(core->svc));
}

void svc_core_stop(svc_core_t *core)
{
    bus_metrics_destroy(&core->metrics); /* first: its collectors use what follows */
    s_consumer.worker = NULL;
    bus_redis_destroy(&s_consumer.redis);
    bus_pub_destroy(&core->wpub);
    bus_pub_destroy(&core->pub);
    bus_service_destroy(&core->svc);
    bus_redis_destroy(&core->wredis);
    bus_redis_destroy(&core->redis);
    bus_config_destroy(&core->config);
}
