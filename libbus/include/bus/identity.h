/*  =========================================================================
    bus/identity.h - who is on the other end: roles and names of enrolled keys

    Every key enrolled with busd carries a role and a name in its certificate
    metadata (czmq zcert "metadata" section), written by `posctl keygen` and
    `posctl node enroll`:
        role      service | register | operator | consumer
        name      service: the service name ("sales"); operator, consumer: a
                  person or tool ("alice", "bi-export"); register: "<store>.<register>"
        store     register only: the store id
        register  register only: the register id
    busd reads these from the enrolled certificates (never from a message),
    checks every message it forwards against the current list, and hands the
    caller's identity to the service with each request as one frame that no
    client can set (bus/proto.h). The frame is the text
        "<role> <name>"  or, for a register, "register <store>.<register> <store> <register>"
    Names and ids are checked here, so the frame always splits on spaces.

    BUS_ROLE_UNCHECKED marks a caller busd could not identify because it runs
    without identities (--insecure, or --unsafe-any-client-key): development
    only. Services let it through every role check and log that they do.

    Certificate files are named after the identity (bus_identity_file):
    "service-sales", "operator-alice", "consumer-bi", "register-S1-R01", each
    as DIR/<file>.cert, DIR/<file>.cert_secret and, when enrolled,
    DIR/clients/<file>.cert.
    =========================================================================
*/
#ifndef BUS_IDENTITY_H_INCLUDED
#define BUS_IDENTITY_H_INCLUDED

#include <czmq.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Roles are bits, so a method's allowed callers are one mask. */
typedef enum {
    BUS_ROLE_NONE = 0,
    BUS_ROLE_SERVICE = 1 << 0,
    BUS_ROLE_REGISTER = 1 << 1,
    BUS_ROLE_OPERATOR = 1 << 2,
    BUS_ROLE_CONSUMER = 1 << 3,
    BUS_ROLE_UNCHECKED = 1 << 4
} bus_role_t;

#define BUS_ROLES_ALL (BUS_ROLE_SERVICE | BUS_ROLE_REGISTER | BUS_ROLE_OPERATOR | BUS_ROLE_CONSUMER)

#define BUS_ID_NAME_MAX  64 /* bytes of a name: letters, digits, '_', '-', '.' */
#define BUS_ID_PART_MAX  16 /* bytes of a store or register id: letters, digits, '_' */
#define BUS_ID_FRAME_MAX (16 + 2 * BUS_ID_NAME_MAX)
#define BUS_ID_FILE_MAX  (16 + BUS_ID_NAME_MAX)

typedef struct {
    bus_role_t role;
    char name[BUS_ID_NAME_MAX + 1];
    char store[BUS_ID_PART_MAX + 1]; /* register only, else "" */
    char reg[BUS_ID_PART_MAX + 1];   /* register only, else "" */
} bus_identity_t;

/* "service", "register", "operator", "consumer", "unchecked"; "none" for anything else. */
const char *bus_role_name(bus_role_t role);
/* The role named by text (one of the four enrollable roles); BUS_ROLE_NONE otherwise. */
bus_role_t bus_role_parse(const char *text);

/* Is text a store or register id (1..BUS_ID_PART_MAX letters, digits or '_')? */
bool bus_identity_id_ok(const char *text);
/* Is text a name (1..BUS_ID_NAME_MAX letters, digits, '_', '-' or '.', not starting with '.')? */
bool bus_identity_name_ok(const char *text);

/* Fill id for role and name (service, operator, consumer) or for a register (name ignored, store
   and reg used). 0, or -1 (errno EINVAL) when a part is malformed. */
int bus_identity_set(bus_identity_t *id, bus_role_t role, const char *name, const char *store,
                     const char *reg);

/* Read the identity from a certificate's metadata. 0, or -1 with *err (a constant string) when
   the role is missing or unknown or a name or id is malformed or inconsistent. */
int bus_identity_from_cert(zcert_t *cert, bus_identity_t *id, const char **err);
/* Write id's metadata (role, name, store, register) into cert. */
void bus_identity_to_cert(const bus_identity_t *id, zcert_t *cert);

/* The frame text (see above) into out; returns its length, 0 when out is too small. */
size_t bus_identity_encode(const bus_identity_t *id, char *out, size_t size);
/* Parse a frame; 0, or -1 when it is malformed (id is then BUS_ROLE_NONE). */
int bus_identity_decode(const void *data, size_t len, bus_identity_t *id);

/* The base file name for id's certificates ("service-sales", "register-S1-R01"). */
void bus_identity_file(const bus_identity_t *id, char *out, size_t size);

/* Does id hold one of the roles in mask? BUS_ROLE_UNCHECKED passes every mask. */
bool bus_identity_may(const bus_identity_t *id, unsigned mask);

#ifdef __cplusplus
}
#endif
#endif
