/*  =========================================================================
    bus/curve.h - CURVE keys and the allow-list of clients

    Key directory layout (created by bus_keygen and `posctl keygen`,
    `posctl node enroll`; default DIR is "keys"):
        DIR/busd.cert            busd's public certificate: every client needs it
        DIR/busd.cert_secret     busd's secret certificate (mode 0600); no role
        DIR/<file>.cert          a client's public certificate (czmq zcert text)
        DIR/<file>.cert_secret   its secret certificate, mode 0600: the only
                                 file that client needs besides busd.cert
        DIR/clients/<file>.cert  public certificates allowed to connect to busd;
                                 enrolling = copying the public cert here,
                                 deleting it revokes (the key pair stays)
    <file> is bus_identity_file(id): "<role>-<name>" ("service-sales",
    "operator-alice", "consumer-bi") or "register-<store>-<register>".
    Every client certificate carries its identity in the zcert "metadata"
    section (role, name, and store and register for a register; see
    bus/identity.h), plus created-by = "posbus" and created = the UTC time
    it was made ("2026-11-25T12:34:56Z"). Roles:
        service   a back-office service, named by the service it registers
        register  a till, named "<store>.<register>"
        operator  a person or tool at the command line (posctl)
        consumer  a program that follows events or reads reports (BI, exports)
    busd is the ZAP handler itself: it reads DIR/clients into a table of
    identities (re-read within a second of the directory changing), admits
    at the handshake exactly the keys in it, and checks every message
    against the current table, so a key removed from DIR/clients is refused
    on connections already open too.
    =========================================================================
*/
#ifndef BUS_CURVE_H_INCLUDED
#define BUS_CURVE_H_INCLUDED

#include <czmq.h>
#include "bus/identity.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_ZAP_DOMAIN "posbus"

/* Create DIR and DIR/clients (mode 0700) and the key pair of id, with id's metadata; NULL id is
   busd's own pair (DIR/busd.cert*, no role, never enrolled). enrol also writes
   DIR/clients/<file>.cert. Refuses to overwrite an existing pair (errno EEXIST) and a malformed
   id or one of a role no certificate holds (EINVAL). 0 ok, -1 with errno. */
int bus_keygen(const char *dir, const bus_identity_t *id, bool enrol);

/* Enrol id's existing key again: copy DIR/<file>.cert into DIR/clients/ (replacing what is
   there). 0 ok, -1 with errno: ENOENT when there is no key pair, EINVAL when id is malformed or
   the certificate does not carry id. */
int bus_enrol(const char *dir, const bus_identity_t *id);

/* Revoke id: remove DIR/clients/<file>.cert; the key pair stays. 0 ok, -1 with errno: ENOENT
   when it is not enrolled, EINVAL when id is malformed. */
int bus_revoke(const char *dir, const bus_identity_t *id);

/* Is endpoint tcp://? (tcp:// and ipc:// use CURVE, bus/conn.h) */
bool bus_endpoint_is_tcp(const char *endpoint);

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
