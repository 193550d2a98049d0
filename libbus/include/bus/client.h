/*  =========================================================================
    bus/client.h - requests to named services through busd

    A request names a service ("sales") and busd hands it to one of the
    registered instances; "sales@<instance>" targets one instance. Each
    request carries a correlation id; a reply to an earlier, timed-out
    attempt is recognised and dropped. A timed-out attempt is resent with
    the same correlation id and the same envelope id, so a service that
    keys its work on an idempotency key sees a repeat, never a new request.
    Retries back off; when no instance is registered the caller gets
    BUS_CLIENT_NO_SERVICE after the retries, not a hang. An "unavailable"
    error reply (the service cannot reach its storage, or an earlier attempt
    of the same request is still running) is retried like a timeout, after
    the service's "retry_ms" hint; BUS_CLIENT_UNAVAILABLE if it persists.

    One client per thread; it is not thread-safe.
    =========================================================================
*/
#ifndef BUS_CLIENT_H_INCLUDED
#define BUS_CLIENT_H_INCLUDED

#include "bus/conn.h"
#include "bus/msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BUS_CLIENT_OK = 0,
    BUS_CLIENT_TIMEOUT,     /* no reply after every attempt */
    BUS_CLIENT_NO_SERVICE,  /* busd knows no instance of the service */
    BUS_CLIENT_REMOTE,      /* the service answered with an error reply */
    BUS_CLIENT_UNAVAILABLE, /* the service answered "unavailable" (e.g. Redis down) every time */
    BUS_CLIENT_INVALID,     /* bad arguments (service name, body) */
    BUS_CLIENT_IO           /* socket failure or interrupted */
} bus_client_err_t;

#define BUS_CLIENT_DEFAULT_TIMEOUT_MS 3000
#define BUS_CLIENT_DEFAULT_RETRIES    2

typedef struct bus_client bus_client_t;

/* A client connected to cfg->req_endpoint; src names it in request envelopes. */
bus_client_t *bus_client_new(const bus_conn_cfg_t *cfg, const char *src, const char **err);
void bus_client_destroy(bus_client_t **self_p);

/* Per-attempt timeout and number of resends after the first attempt. */
void bus_client_set_timeout(bus_client_t *self, int timeout_ms);
void bus_client_set_retries(bus_client_t *self, int retries);

/* Send method with *body_p (a map, taken and nulled; NULL = empty) to service and wait for the
   reply. Returns the reply envelope (type "reply"; caller destroys) or NULL with
   bus_client_errcode/errstr set. An "error" reply gives NULL with BUS_CLIENT_REMOTE (or
   BUS_CLIENT_NO_SERVICE, BUS_CLIENT_UNAVAILABLE after the retries) and its code in
   bus_client_remote_code. */
bus_msg_t *bus_client_request(bus_client_t *self, const char *service, const char *method,
                              bus_val_t **body_p);

/* Pipelining: several requests in flight on one client. bus_client_send sends method with
   *body_p (taken) to service without waiting and gives its correlation id in *corr; 0, or -1 with
   errcode. bus_client_recv waits up to timeout_ms for the reply to any of the n ids in corrs and
   sets *which to its index: the reply envelope, or NULL with errcode TIMEOUT or IO (*which -1),
   or REMOTE, UNAVAILABLE, NO_SERVICE for an error reply (*which set, remote_code too). No
   resends here: the caller decides. Replies to other ids are counted stale and dropped.
   Requests to one service instance ("sales@<instance>") are answered in the order sent; to a
   service name, instances may answer in any order. */
int bus_client_send(bus_client_t *self, const char *service, const char *method, bus_val_t **body_p,
                    uint64_t *corr);
bus_msg_t *bus_client_recv(bus_client_t *self, const char *service, const uint64_t *corrs, int n,
                           int timeout_ms, int *which);
bus_client_err_t bus_client_errcode(bus_client_t *self);
const char *bus_client_errstr(bus_client_t *self);
const char *bus_client_remote_code(bus_client_t *self); /* "" unless BUS_CLIENT_REMOTE */
uint64_t bus_client_stale_replies(bus_client_t *self);  /* late replies dropped */
zsock_t *bus_client_sock(bus_client_t *self);

#ifdef __cplusplus
}
#endif
#endif
