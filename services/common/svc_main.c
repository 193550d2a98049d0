/*  svc_main.c - option loading shared by sales, inventory and reporting (not part of libbus: it
    prints usage and errors, which a library must not). */
#include "svc_main.h"

bus_config_t *svc_config_load(const char *program, const bus_opt_t *own, int argc, char **argv,
                              int *exit_code)
{
    *exit_code = 2;
    bus_config_t *config = bus_config_new(program, own);
    if (!config || bus_config_add(config, bus_conn_opts) || bus_config_add(config, bus_redis_opts) ||
        bus_config_add(config, bus_program_opts)) {
        bus_config_destroy(&config);
        return NULL;
    }
    int rc = bus_config_load(config, argc, argv);
    if (rc == 1 || (rc == 0 && bus_config_bool(config, "example-config"))) {
        if (rc == 1) {
            printf("usage: %s [--config FILE] [options]\n", program);
            bus_config_usage(config, stdout);
        }
        else
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
