/*  svc_caller.c - which register a register-method's caller is (svc_caller.h) */
#include <stdio.h>
#include <string.h>

#include "svc_caller.h"

static int s_bad(bus_service_t *svc, int64_t *c_bad, const char *why)
{
    if (c_bad)
        bus_stats_inc(c_bad, 1);
    return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", why);
}

int svc_caller_node(bus_service_t *svc, const bus_val_t *body, svc_node_id_t *node,
                        int64_t *c_bad, int64_t *c_other_register)
{
    const bus_identity_t *me = bus_service_caller(svc);
    const bus_val_t *bs = bus_val_map_get(body, "store"), *br = bus_val_map_get(body, "register");
    const char *store = bs ? bus_val_get_str(bs, NULL) : NULL;
    const char *reg = br ? bus_val_get_str(br, NULL) : NULL;
    if ((bs && !bus_identity_id_ok(store)) || (br && !bus_identity_id_ok(reg)))
        return s_bad(svc, c_bad,
                     "store and register, if given, must be ids (letters, digits, '_')");
    if (me->role == BUS_ROLE_REGISTER) {
        if ((store && strcmp(store, me->store)) || (reg && strcmp(reg, me->reg))) {
            if (c_other_register)
                bus_stats_inc(c_other_register, 1);
            return bus_service_error(svc, BUS_ERR_FORBIDDEN,
                                     "register %s may speak only for itself, not %s/%s", me->name,
                                     store ? store : me->store, reg ? reg : me->reg);
        }
        snprintf(node->store, sizeof(node->store), "%s", me->store);
        snprintf(node->reg, sizeof(node->reg), "%s", me->reg);
        return 0;
    }
    if (me->role != BUS_ROLE_UNCHECKED) /* the method tables let only registers this far */
        return bus_service_error(svc, BUS_ERR_FORBIDDEN, "only a register's key may do this");
    if (!store || !reg)
        return s_bad(svc, c_bad, "without identities (development), store and register required");
    snprintf(node->store, sizeof(node->store), "%s", store);
    snprintf(node->reg, sizeof(node->reg), "%s", reg);
    return 0;
}
