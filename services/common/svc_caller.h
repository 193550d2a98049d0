/*  svc_caller.h - which register a register-method's caller is (devices and payments) */
#ifndef SVC_CALLER_H_INCLUDED
#define SVC_CALLER_H_INCLUDED

#include <bus/bus.h>

typedef struct {
    char store[BUS_ID_PART_MAX + 1];
    char reg[BUS_ID_PART_MAX + 1];
} svc_node_id_t;

/*  The register a register-method's caller is: the store and register of its certificate. A body
    that names a store or register must name the same ones (a register acts only as itself:
    refused before Redis is touched, counted in c_other_register). Without identities
    (development: busd --insecure) the body's store and register are taken. 0, or -1 after
    answering on svc (a bad request counted in c_bad). Counters may be NULL. */
int svc_caller_node(bus_service_t *svc, const bus_val_t *body, svc_node_id_t *node,
                        int64_t *c_bad, int64_t *c_other_register);

#endif
