/*  commands.h - device commands routed to a register's device (commands.c), part of devices. */
#ifndef DEVICES_COMMANDS_H_INCLUDED
#define DEVICES_COMMANDS_H_INCLUDED

#include <bus/bus.h>

typedef struct devices_commands devices_commands_t;

/*  The device-command methods' state on the service's Redis connection and publisher (both stay
    the caller's), counting into stats. NULL when out of memory or a script cannot be
    registered. */
devices_commands_t *devices_commands_new(bus_redis_t *redis, bus_pub_t *pub, bus_stats_t *stats);
void devices_commands_destroy(devices_commands_t **self_p);

/*  Register device.command, device.pending and device.result on svc. 0, or -1 when out of
    memory. */
int devices_commands_methods(devices_commands_t *self, bus_service_t *svc);

#endif
