/*  =========================================================================
    bus/conn.h - how a program reaches busd

    Every program talks to the bus through three busd endpoints: one where
    publishers connect (busd's XSUB), one where subscribers connect (busd's
    XPUB) and one where clients and service instances connect for requests
    (busd's ROUTER). A bus_conn_cfg_t carries those endpoints, the CURVE
    keys and the socket policy; bus_conn_opts is the shared option table
    that every program adds to its own, so the same names work everywhere.

    Liveness uses ZMTP heartbeats (ZMQ_HEARTBEAT_*), not TCP keepalive: a
    busd that vanished without a FIN (power loss, network cut) is noticed
    within heartbeat_timeout_ms and the socket reconnects by itself.

    tcp:// and ipc:// endpoints always use CURVE unless insecure is set
    (development only; callers log a warning): the key a peer authenticates
    with is its identity on the bus (bus/identity.h), so a plaintext peer
    would have none. inproc:// stays plaintext (one process).
    =========================================================================
*/
#ifndef BUS_CONN_H_INCLUDED
#define BUS_CONN_H_INCLUDED

#include <czmq.h>
#include "bus/config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_DEFAULT_PUB_ENDPOINT "tcp://127.0.0.1:5560"
#define BUS_DEFAULT_SUB_ENDPOINT "tcp://127.0.0.1:5561"
#define BUS_DEFAULT_REQ_ENDPOINT "tcp://127.0.0.1:5562"

typedef struct bus_conn_cfg {
    const char *pub_endpoint; /* busd XSUB: publishers connect here */
    const char *sub_endpoint; /* busd XPUB: subscribers connect here */
    const char *req_endpoint; /* busd ROUTER: clients and service instances */
    const char *cert;         /* own secret certificate file (CURVE client) */
    const char *server_cert;  /* busd's public certificate file */
    bool insecure;            /* plaintext tcp:// allowed (development only) */
    int heartbeat_ms;         /* ZMTP heartbeat interval; 0 = default 1000 */
    int heartbeat_timeout_ms; /* peer declared dead after; 0 = default 3000 */
    int hwm;                  /* send/receive high-water mark, messages; 0 = default 100000 */
    int linger_ms;            /* on close, how long unsent messages may take; 0 = default 2000 */
} bus_conn_cfg_t;

/* Shared options: pub-endpoint, sub-endpoint, req-endpoint, cert, server-cert, insecure,
   heartbeat-ms, heartbeat-timeout-ms, hwm, linger-ms. Add with bus_config_add(). */
extern const bus_opt_t bus_conn_opts[];

/* Fill cfg from a loaded configuration that includes bus_conn_opts. The strings stay owned by
   config, which must outlive cfg. */
void bus_conn_cfg_from_config(bus_conn_cfg_t *cfg, bus_config_t *config);

/* Defaults for everything (endpoints as above, no keys, not insecure). */
void bus_conn_cfg_defaults(bus_conn_cfg_t *cfg);

/* Apply socket policy (heartbeats, hwm, linger, reconnect interval) and, for tcp://, the CURVE
   client keys; then connect. Returns 0, or -1 with a reason in err (static or errstr buffer). */
int bus_conn_connect(zsock_t *sock, const char *endpoint, const bus_conn_cfg_t *cfg,
                     const char **err);

/* Internal to posbus (busd uses it for its bound sockets): heartbeats, hwm, linger, reconnect,
   and a 4 MiB limit per message part (a peer sending more is disconnected). */
void bus__socket_policy(zsock_t *sock, const bus_conn_cfg_t *cfg);

#ifdef __cplusplus
}
#endif
#endif
