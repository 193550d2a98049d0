/*  config.h - versioned register configuration per store (config.c), part of devices. */
#ifndef DEVICES_CONFIG_H_INCLUDED
#define DEVICES_CONFIG_H_INCLUDED

#include <bus/bus.h>

typedef struct devices_config devices_config_t;

/*  The configuration methods' state on the service's Redis connection and publisher (both stay
    the caller's), counting into stats; a used request id is remembered for req_ttl_s seconds.
    NULL when out of memory or a script cannot be registered. */
devices_config_t *devices_config_new(bus_redis_t *redis, bus_pub_t *pub, bus_stats_t *stats,
                                     int64_t req_ttl_s);
void devices_config_destroy(devices_config_t **self_p);

/*  Register config.get, config.set, cashier.add, cashier.disable, promo.add, promo.end and
    promo.list on svc. 0, or -1 when out of memory. */
int devices_config_methods(devices_config_t *self, bus_service_t *svc);

#endif
