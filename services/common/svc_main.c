/*  svc_main.c - option loading shared by sales, inventory and reporting (not part of libbus: it
    prints usage and errors, which a library must not). */
#include "svc_main.h"

#define S_WORKER_BLOCK_MS 500

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
    const char *consumer = bus_config_str(config, "consumer-name");
    bus_stream_worker_t *w = bus_stream_worker_start(
        wredis, stream, group, consumer ? consumer : bus_service_instance(svc),
        (int)bus_config_int(config, "batch"), S_WORKER_BLOCK_MS,
        (int)bus_config_int(config, "claim-idle-ms"), fn, arg);
    if (w)
        bus_stream_worker_set_gather(w, (int)bus_config_int(config, "gather-ms"));
    return w;
}

bus_config_t *svc_config_load(const char *program, const bus_opt_t *own, bool consumer, int argc,
                              char **argv, int *exit_code)
{
    *exit_code = 2;
    bus_config_t *config = bus_config_new(program, own);
    if (!config || bus_config_add(config, bus_conn_opts) ||
        bus_config_add(config, bus_redis_opts) || bus_config_add(config, bus_program_opts) ||
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
    if (bus_redis_connect(core->redis) != 0)
        bus_warn("service.redis", "not reachable yet, will retry: %s",
                 bus_redis_errstr(core->redis));
    bus_info("service.started", "%s instance=%s", program, bus_service_instance(core->svc));
    return 0;
}

void svc_core_run(svc_core_t *core, void (*tick)(void *arg), void *arg)
{
    while (!bus_program_stopping()) {
        bus_service_poll(core->svc, S_POLL_MS);
        if (tick)
            tick(arg);
    }
    bus_info("service.stopping", "instance=%s", bus_service_instance(core->svc));
}

void svc_core_stop(svc_core_t *core)
{
    bus_pub_destroy(&core->wpub);
    bus_pub_destroy(&core->pub);
    bus_service_destroy(&core->svc);
    bus_redis_destroy(&core->wredis);
    bus_redis_destroy(&core->redis);
    bus_config_destroy(&core->config);
}
