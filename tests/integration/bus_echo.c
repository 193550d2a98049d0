/*  =========================================================================
    bus_echo - a small service used by the black-box tests

    Methods: "echo" (replies with the request body plus "instance"),
    "publish" (publishes body.count events on body.topic, numbered in
    body.n, spaced body.interval_ms apart), "sleep" (waits body.ms first).
    Built on libbus exactly as a real service is.
    =========================================================================
*/
#include <bus/bus.h>

#define S_PROGRAM "bus_echo"

static bus_pub_t *s_pub;

static int s_echo(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    bus_val_t *body = bus_msg_body(req);
    for (size_t i = 0; i < bus_val_size(body); i++) {
        bus_val_t *copy = bus_val_dup(bus_val_map_value(body, i));
        bus_val_map_set(reply, bus_val_map_key(body, i), &copy);
    }
    bus_val_map_set_str(reply, "instance", bus_service_instance(svc));
    return 0;
}

static int s_sleep(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    int64_t ms = 0;
    bus_val_map_get_int(bus_msg_body(req), "ms", &ms);
    zclock_sleep((int)ms);
    return s_echo(svc, req, reply, arg);
}

static int s_publish(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    (void)arg;
    bus_val_t *body = bus_msg_body(req);
    const char *topic = bus_val_map_get_str(body, "topic");
    int64_t count = 0, interval = 0;
    bus_val_map_get_int(body, "count", &count);
    bus_val_map_get_int(body, "interval_ms", &interval);
    if (!topic || count < 0)
        return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "publish needs topic and count");
    int64_t sent = 0;
    for (int64_t n = 0; n < count; n++) {
        bus_val_t *event = bus_val_new_map();
        bus_val_map_set_int(event, "n", n);
        bus_val_map_set_int(event, "total_fen", 1234 + n);
        bus_val_map_set_str(event, "store", "S001");
        if (bus_pub_publish(s_pub, topic, "test.event", &event) > 0)
            sent++;
        if (interval > 0)
            zclock_sleep((int)interval);
    }
    bus_val_map_set_int(reply, "sent", sent);
    return 0;
}

int main(int argc, char **argv)
{
    static const bus_opt_t opts[] = {
        {"name", BUS_OPT_STR, "echo", 0, 0, "service name to register"},
        {NULL, 0, NULL, 0, 0, NULL}};
    bus_config_t *config = bus_config_new(S_PROGRAM, opts);
    bus_config_add(config, bus_conn_opts);
    bus_config_add(config, bus_program_opts);
    bus_config_add(config, bus_redis_opts);
    if (bus_config_load(config, argc, argv) != 0) {
        fprintf(stderr, "bus_echo: %s\n", bus_config_error(config));
        return 2;
    }
    bus_program_log_init(config, S_PROGRAM);
    bus_program_signals();
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    const char *err = NULL;
    bus_service_t *svc = bus_service_new(&cfg, bus_config_str(config, "name"), &err);
    s_pub = svc ? bus_pub_new(&cfg, bus_service_instance(svc), &err) : NULL;
    if (!svc || !s_pub) {
        bus_error("echo.start", "cannot start: %s", err);
        return 1;
    }
    /* with --redis-port set, health reports Redis reachability like a real service */
    bus_redis_t *redis = NULL;
    if (strcmp(bus_config_source(config, "redis-port"), "default") != 0) {
        redis = bus_redis_new_from_config(config, &err);
        if (!redis) {
            bus_error("echo.redis", "cannot set up Redis: %s", err);
            return 1;
        }
        bus_service_watch_redis(svc, redis);
    }
    bus_service_on(svc, "echo", s_echo, NULL);
    bus_service_on(svc, "sleep", s_sleep, NULL);
    bus_service_on(svc, "publish", s_publish, NULL);
    bus_info("echo.started", "instance=%s", bus_service_instance(svc));
    while (!bus_program_stopping())
        bus_service_poll(svc, 200);
    bus_info("echo.stopping", "instance=%s", bus_service_instance(svc));
    bus_pub_destroy(&s_pub);
    bus_service_destroy(&svc);
    bus_redis_destroy(&redis);
    bus_config_destroy(&config);
    return 0;
}
