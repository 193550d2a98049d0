/*  svc_main.h - what every back-office service's main() does first, in one place. */
#ifndef SVC_MAIN_H_INCLUDED
#define SVC_MAIN_H_INCLUDED

#include <bus/bus.h>
#include <bus/metrics.h>

/* Build the option table (own options + connection + Redis + logging + metrics, plus
   svc_consumer_opts for a service that follows the sales stream), load file, environment and
   flags, answer --help and --example-config, set up logging and signal handling. Returns the
   loaded configuration, or NULL when main should return *exit_code (0 after --help or
   --example-config, 2 after printing a configuration error). */
bus_config_t *svc_config_load(const char *program, const bus_opt_t *own, bool consumer, int argc,
                              char **argv, int *exit_code);

/* Options of services that follow the sales stream: consumer-name, batch, claim-idle-ms. */
extern const bus_opt_t svc_consumer_opts[];

/* Start the stream worker of a consumer service: group on stream, consumer named by
   --consumer-name or the instance id, batch and claim settings from the configuration. Also
   registers the read-only method "dead.list" ({after?, count?} -> bus_stream_dead_list of group,
   on a Redis connection of the main thread's own) and the stats counters stream_applied,
   stream_parked, stream_claimed and stream_errors, which svc_core_run refreshes from the worker.
   One consumer worker per process; call from the main thread, stop the worker after
   svc_core_run returns and before svc_core_stop. NULL after logging why. */
bus_stream_worker_t *svc_consumer_start(bus_config_t *config, bus_service_t *svc,
                                        bus_redis_t *wredis, const char *stream, const char *group,
                                        bus_stream_fn *fn, void *arg);

/* What every service holds: its configuration, connection settings, Redis connection(s),
   service instance and publisher(s). A consumer gets a second Redis connection and publisher
   for its stream worker thread (hiredis contexts and ZeroMQ sockets belong to one thread). */
typedef struct {
    bus_config_t *config;
    bus_conn_cfg_t conn;
    bus_redis_t *redis, *wredis; /* wredis: consumers only */
    bus_service_t *svc;
    bus_pub_t *pub, *wpub; /* wpub: consumers only */
    /* --metrics-listen: NULL when off. It already exposes the service's stats, method latencies
       and (consumers) the stream group's lag; a service adds its own gauges with
       bus_metrics_add_collector(core->metrics, fn, arg) (a no-op when off). */
    bus_metrics_t *metrics;
} svc_core_t;

/* Create everything from a loaded configuration (taken over: freed by svc_core_stop). Redis may
   still be down: it is connected lazily and reported in health. 0, or -1 after logging why. */
int svc_core_start(svc_core_t *core, bus_config_t *config, const char *program, bool consumer);
/* Serve requests until SIGTERM or SIGINT; tick (may be NULL) runs after every poll. */
void svc_core_run(svc_core_t *core, void (*tick)(void *arg), void *arg);
/* Say goodbye to busd and free everything, in reverse order. */
void svc_core_stop(svc_core_t *core);

#endif
