/*  =========================================================================
    bus/curve.h - CURVE keys and the allow-list of clients

    Key directory layout (created by bus_keygen and `posctl keygen`):
        DIR/<name>.cert          public certificate (czmq zcert text format)
        DIR/<name>.cert_secret   secret certificate, mode 0600
        DIR/clients/<name>.cert  public certificates allowed to connect to busd;
                                 enrolling a register = copying its public cert
                                 here, deleting the file revokes it
    busd runs czmq's zauth over DIR/clients: a ZAP handler that accepts the
    CURVE public keys found there and notices files added or removed (it
    re-reads the directory when it changes, within about a second).
    Authentication happens at the handshake, so revocation refuses every new
    connection; a connection already up stays until it reconnects.
    =========================================================================
*/
#ifndef BUS_CURVE_H_INCLUDED
#define BUS_CURVE_H_INCLUDED

#include <czmq.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_ZAP_DOMAIN "posbus"

/* Create DIR (mode 0700) and the key pair <name>; enrol also writes DIR/clients/<name>.cert.
   Refuses to overwrite an existing pair (-1, errno EEXIST). 0 ok, -1 with errno. */
int bus_keygen(const char *dir, const char *name, bool enrol);

/* tcp:// endpoints need CURVE; ipc:// and inproc:// do not. */
bool bus_endpoint_is_tcp(const char *endpoint);

typedef struct bus_auth bus_auth_t;

/* Start the ZAP handler allowing the CURVE keys in clients_dir (created if missing). */
bus_auth_t *bus_auth_new(const char *clients_dir);
void bus_auth_destroy(bus_auth_t **self_p);

/* Make sock a CURVE server with the secret certificate at path, ZAP domain BUS_ZAP_DOMAIN.
   -1 with errno on a missing or unreadable certificate. */
int bus_curve_server(zsock_t *sock, const char *secret_cert_path);
/* Make sock a CURVE client with its own secret certificate and the server's public one. */
int bus_curve_client(zsock_t *sock, const char *secret_cert_path,
                     const char *server_public_cert_path);

#ifdef __cplusplus
}
#endif
#endif
