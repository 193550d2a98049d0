/*  =========================================================================
    conn.c - socket policy and CURVE client setup shared by every bus socket

    One place decides how a posbus socket behaves, so publishers, subscribers,
    clients and service instances cannot drift apart: ZMTP heartbeats for
    liveness, a bounded high-water mark, a non-zero linger so SIGTERM drains
    what was sent (czmq's default linger is 0), and CURVE on tcp://.
    =========================================================================
*/
#include "bus/conn.h"
#include "bus/curve.h"

#define S_DEFAULT_HEARTBEAT_MS         1000
#define S_DEFAULT_HEARTBEAT_TIMEOUT_MS 3000
#define S_DEFAULT_HWM                  100000
#define S_DEFAULT_LINGER_MS            2000
#define S_RECONNECT_IVL_MS             100
#define S_RECONNECT_IVL_MAX_MS         2000
/* Larger than any valid envelope (BUS_DEFAULT_MAX_SIZE) plus routing frames: a peer that sends
   more is disconnected by libzmq before the bytes are buffered. */
#define S_MAX_MSG_BYTES (4 * 1024 * 1024)

const bus_opt_t bus_conn_opts[] = {
    {"pub-endpoint", BUS_OPT_STR, BUS_DEFAULT_PUB_ENDPOINT, 0, 0,
     "busd endpoint where publishers connect (busd's XSUB)"},
    {"sub-endpoint", BUS_OPT_STR, BUS_DEFAULT_SUB_ENDPOINT, 0, 0,
     "busd endpoint where subscribers connect (busd's XPUB)"},
    {"req-endpoint", BUS_OPT_STR, BUS_DEFAULT_REQ_ENDPOINT, 0, 0,
     "busd endpoint for requests and service instances (busd's ROUTER)"},
    {"cert", BUS_OPT_STR, NULL, 0, 0, "this program's secret CURVE certificate file"},
    {"server-cert", BUS_OPT_STR, NULL, 0, 0, "busd's public CURVE certificate file"},
    {"insecure", BUS_OPT_BOOL, "false", 0, 0,
     "allow plaintext tcp:// to busd (development only; logs a warning)"},
    {"heartbeat-ms", BUS_OPT_INT, "1000", 50, 60000, "ZMTP heartbeat interval"},
    {"heartbeat-timeout-ms", BUS_OPT_INT, "3000", 100, 600000,
     "a silent peer is declared dead after this long"},
    {"hwm", BUS_OPT_INT, "100000", 100, 10000000, "socket high-water mark, messages"},
    {"linger-ms", BUS_OPT_INT, "2000", 0, 60000,
     "on shutdown, how long unsent messages may still be delivered"},
    {NULL, 0, NULL, 0, 0, NULL}};

void bus_conn_cfg_defaults(bus_conn_cfg_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->pub_endpoint = BUS_DEFAULT_PUB_ENDPOINT;
    cfg->sub_endpoint = BUS_DEFAULT_SUB_ENDPOINT;
    cfg->req_endpoint = BUS_DEFAULT_REQ_ENDPOINT;
}

void bus_conn_cfg_from_config(bus_conn_cfg_t *cfg, bus_config_t *config)
{
    bus_conn_cfg_defaults(cfg);
    cfg->pub_endpoint = bus_config_str(config, "pub-endpoint");
    cfg->sub_endpoint = bus_config_str(config, "sub-endpoint");
    cfg->req_endpoint = bus_config_str(config, "req-endpoint");
    cfg->cert = bus_config_str(config, "cert");
    cfg->server_cert = bus_config_str(config, "server-cert");
    cfg->insecure = bus_config_bool(config, "insecure");
    cfg->heartbeat_ms = (int)bus_config_int(config, "heartbeat-ms");
    cfg->heartbeat_timeout_ms = (int)bus_config_int(config, "heartbeat-timeout-ms");
    cfg->hwm = (int)bus_config_int(config, "hwm");
    cfg->linger_ms = (int)bus_config_int(config, "linger-ms");
}

static int s_or(int value, int dflt)
{
    return value > 0 ? value : dflt;
}

/*  Apply heartbeats, hwm, linger and reconnect policy to any bus socket, client or server side.
    Exposed to busd through the internal header. */
void bus__socket_policy(zsock_t *sock, const bus_conn_cfg_t *cfg)
{
    int hb = s_or(cfg->heartbeat_ms, S_DEFAULT_HEARTBEAT_MS);
    int hb_timeout = s_or(cfg->heartbeat_timeout_ms, S_DEFAULT_HEARTBEAT_TIMEOUT_MS);
    int hwm = s_or(cfg->hwm, S_DEFAULT_HWM);
    zsock_set_heartbeat_ivl(sock, hb);
    zsock_set_heartbeat_timeout(sock, hb_timeout);
    zsock_set_heartbeat_ttl(sock, hb_timeout);
    zsock_set_sndhwm(sock, hwm);
    zsock_set_rcvhwm(sock, hwm);
    zsock_set_linger(sock, cfg->linger_ms > 0 ? cfg->linger_ms : S_DEFAULT_LINGER_MS);
    zsock_set_reconnect_ivl(sock, S_RECONNECT_IVL_MS);
    zsock_set_reconnect_ivl_max(sock, S_RECONNECT_IVL_MAX_MS);
    zsock_set_maxmsgsize(sock, S_MAX_MSG_BYTES);
}

int bus_conn_connect(zsock_t *sock, const char *endpoint, const bus_conn_cfg_t *cfg,
                     const char **err)
{
    static const char *const no_endpoint = "no endpoint configured";
    static const char *const no_keys =
        "tcp:// and ipc:// endpoints need --cert and --server-cert (or --insecure for development)";
    static const char *const bad_keys = "cannot load CURVE certificates (--cert/--server-cert)";
    static const char *const bad_endpoint = "cannot connect: invalid endpoint";

    if (!endpoint || !*endpoint) {
        *err = no_endpoint;
        return -1;
    }
    bus__socket_policy(sock, cfg);
    bool curve = bus_endpoint_is_tcp(endpoint) || strncmp(endpoint, "ipc://", 6) == 0;
    if (curve && !cfg->insecure) {
        if (!cfg->cert || !cfg->server_cert) {
            *err = no_keys;
            return -1;
        }
        if (bus_curve_client(sock, cfg->cert, cfg->server_cert) != 0) {
            *err = bad_keys;
            return -1;
        }
    }
    if (zsock_connect(sock, "%s", endpoint) != 0) {
        *err = bad_endpoint;
        return -1;
    }
    return 0;
}
