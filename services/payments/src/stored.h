/*  stored.h - stored-value cards (canteen, campus, member cards) in the payments service
    (docs/payments.md "Stored-value cards") */
#ifndef PAYMENTS_STORED_H_INCLUDED
#define PAYMENTS_STORED_H_INCLUDED

#include <bus/bus.h>

/*  The option the card methods read from the service's configuration: "meals", the meal windows
    in local time ("name=HH:MM-HH:MM,..."). Its row is in payments.c's option table. */
#define PAYMENTS_MEALS_DEFAULT "breakfast=06:00-10:00,lunch=10:30-14:30,dinner=16:30-20:30"

/*  Register the card.* methods on svc, their scripts on redis (the main thread's connection,
    which the handlers use) and their counters in svc's stats, with the meal windows of config.
    One set of cards per process: the state is static, nothing to free. 0, or -1 after logging
    why (a malformed --meals, out of memory). */
int payments_stored_methods(bus_service_t *svc, bus_redis_t *redis, bus_config_t *config);

#endif
