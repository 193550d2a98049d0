/*  =========================================================================
    recon.h - what reconciliation (对账) needs from the payments service

    A provider's statement lists a day's trades by the provider's day
    (Beijing time), so the intents are indexed by that day too
    (payday:{S}:<day>, written when an intent is created). posctl payments
    reconcile reads the statement, lists the intents of the day and its
    neighbours with payment.list, compares, and keeps the day's result with
    payment.recon.put; payment.recon.get answers it (for the Z report).
    =========================================================================
*/
#ifndef PAY_RECON_H_INCLUDED
#define PAY_RECON_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include <bus/bus.h>

/*  The provider's day (Beijing time, UTC+8) of ms since the epoch: "YYYY-MM-DD". */
void pay_recon_day(int64_t ms, char *out, size_t size);

/*  Register payment.list, payment.recon.put and payment.recon.get on svc; a kept result expires
    after day_ttl_s (0: never), like the day index. 0 or -1. */
int pay_recon_methods(bus_service_t *svc, bus_redis_t *redis, bus_stats_t *stats,
                      int64_t day_ttl_s);

#endif
