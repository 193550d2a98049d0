/*  =========================================================================
    bus/service.h - a service instance answering requests through busd

    A service registers with busd under its name by sending heartbeats (the
    first heartbeat is the registration, so an instance re-registers by
    itself after busd restarts). Any number of instances of one name share
    the requests; busd drops an instance that stops heartbeating. Handlers
    are registered per method, each with the roles that may call it (busd
    hands over the caller's identity with every request, bus/identity.h);
    "health" and "stats" are built in and open to every role.

    The instance is driven by its owner's loop: either bus_service_poll(),
    or poll bus_service_sock() together with other sockets and call
    bus_service_handle() when it is readable and bus_service_tick() at least
    every heartbeat interval.
    =========================================================================
*/
#ifndef BUS_SERVICE_H_INCLUDED
#define BUS_SERVICE_H_INCLUDED

#include "bus/conn.h"
#include "bus/identity.h"
#include "bus/msg.h"
#include "bus/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bus_service bus_service_t;

/* A handler fills reply (an empty map) and returns 0, or calls bus_service_error() and returns
   -1. req is borrowed for the call. */
typedef int(bus_handler_fn)(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg);
/* Adds service-specific keys to the health reply (e.g. "redis": true); returns whether the
   instance is healthy. */
typedef bool(bus_health_fn)(bus_service_t *svc, bus_val_t *health, void *arg);

/* A new instance of service name connected to cfg->req_endpoint. The instance id is
   "<name>-<host>-<pid>-<4 hex>". NULL with *err on failure. */
bus_service_t *bus_service_new(const bus_conn_cfg_t *cfg, const char *name, const char **err);
/* Says goodbye to busd (so it stops routing here at once) and closes. */
void bus_service_destroy(bus_service_t **self_p);

/* What a method does, which decides how retries are handled (see bus_service_on*). */
typedef enum {
    BUS_METHOD_CHANGE = 0, /* state-changing: once per request id through the reply cache */
    BUS_METHOD_READ,       /* read-only: never cached */
    BUS_METHOD_IDEMPOTENT  /* state-changing, exactly once by itself */
} bus_method_kind_t;

/* One row of a service's method table: name, handler, kind and the roles (bus_role_t bits) that
   may call it. A table ends with a row whose name is NULL. */
typedef struct {
    const char *name;
    bus_handler_fn *fn;
    bus_method_kind_t kind;
    unsigned roles;
} bus_method_t;

/* Who may call a method registered without a table: reads are open to every role; changes to
   operators and services. */
#define BUS_METHOD_CHANGE_ROLES (BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE)

/* Register every method of table, each handler called with arg. 0, or -1 on a malformed row or
   out of memory. A caller whose role is not in a method's roles is answered "forbidden"
   (counted as "forbidden") before anything else happens. */
int bus_service_methods(bus_service_t *self, const bus_method_t *table, void *arg);
/* The identity of the caller of the request being handled (valid inside a handler; role
   BUS_ROLE_NONE outside one). Trust it: busd wrote it from the caller's enrolled certificate. */
const bus_identity_t *bus_service_caller(bus_service_t *self);
/* May the caller act for store (and register, unless NULL)? Operators, services and unchecked
   callers may act for any; a register only for its own store and register. */
bool bus_service_caller_is(bus_service_t *self, const char *store, const char *reg);

/* Register the handler of a state-changing method. With a reply cache (bus_service_set_reply_cache)
   it runs at most once per request id and caller: a retried request (same envelope id, from the
   same caller's key, to any instance, before or after a restart) gets the first reply again. */
int bus_service_on(bus_service_t *self, const char *method, bus_handler_fn *fn, void *arg);
/* Register the handler of a read-only method: it changes nothing, so it is never cached and may
   run for every attempt. */
int bus_service_on_read(bus_service_t *self, const char *method, bus_handler_fn *fn, void *arg);
/* Register the handler of a state-changing method that is exactly once by itself: its one
   atomic write is keyed on a domain id and remembers bus_msg_id(req), so it answers a retry of
   the same request with the first reply (and another request for the same thing as a
   duplicate). The reply cache is skipped: on the hottest path (sale.upload) that saves two Redis
   round trips and a kept reply per request. */
int bus_service_on_idempotent(bus_service_t *self, const char *method, bus_handler_fn *fn,
                              void *arg);
void bus_service_set_health(bus_service_t *self, bus_health_fn *fn, void *arg);
/* Report Redis reachability in health: adds "redis": bool (a PING per health request) and the
   instance is unhealthy while Redis is unreachable. redis stays owned by the caller. */
struct bus_redis;
void bus_service_watch_redis(bus_service_t *self, struct bus_redis *redis);

/* Keep the first reply of every state-changing request (methods registered with bus_service_on)
   in redis for ttl_s seconds (0 = default, one day), keyed by the request envelope's id, so that a
   retried request is answered with that reply instead of running again, by whichever instance
   receives it. redis stays owned by the caller and must be used on this thread only. Request ids
   of state-changing requests must then be letters, digits, '-' and '_' (bus_msg_new's are).
   0, or -1 if the cache script cannot be registered. */
int bus_service_set_reply_cache(bus_service_t *self, struct bus_redis *redis, int ttl_s);

/* For handlers: set the error reply (code, message) and return -1. */
int bus_service_error(bus_service_t *self, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* For handlers, on a failure that passes by itself (Redis down or refusing writes): an error
   reply with code BUS_ERR_UNAVAILABLE and "retry_ms" (when to try again); clients retry it like
   a timeout. Nothing of the request was done, or it was done idempotently: the retry is safe.
   Returns -1. */
int bus_service_unavailable(bus_service_t *self, int retry_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answer a Redis call that did not succeed, for a handler to return: no reply (connection lost,
   or reconnecting in backoff) or an error reply that passes by itself (OOM, MISCONF, READONLY,
   LOADING...) is "unavailable" with retry_ms (nothing was written, the client resends); any
   other error reply is a bug on this side and "internal". Logs it, frees r (may be NULL) and
   returns -1. what names the call in the log and the message. */
struct redisReply;
int bus_service_redis_failed(bus_service_t *self, struct bus_redis *redis, struct redisReply *r,
                             int retry_ms, const char *what);

/* Handle requests and heartbeats for up to timeout_ms (returns after the first batch of
   requests handled, or at the timeout). Returns the number of requests handled, -1 when
   interrupted (SIGINT/SIGTERM through czmq, or the context is terminating). */
int bus_service_poll(bus_service_t *self, int timeout_ms);
/* Handle every request waiting now (non-blocking); returns how many, -1 on interruption. */
int bus_service_handle(bus_service_t *self);
/* Send a heartbeat if one is due. */
void bus_service_tick(bus_service_t *self);

zsock_t *bus_service_sock(bus_service_t *self);
const char *bus_service_name(bus_service_t *self);
const char *bus_service_instance(bus_service_t *self);
bus_stats_t *bus_service_stats(bus_service_t *self);
/* A bus_metrics_fn (bus/metrics.h; arg is the service): its stats counters, the codec's
   accepted and rejected messages, uptime, and a request_duration_seconds histogram per method.
   Owner thread only, like every other call here. */
struct bus_metrics_out;
/* Which of the service's stats are levels (gauges on the metrics page) rather than counts:
   names is a static NULL-terminated list, or NULL (the default: every stat is a counter). */
void bus_service_set_gauges(bus_service_t *self, const char *const *names);
void bus_service_metrics(struct bus_metrics_out *out, void *arg);

#ifdef __cplusplus
}
#endif
#endif
