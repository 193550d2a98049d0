/*  =========================================================================
    bus/stats.h - named counters

    Every program keeps its counters (messages in/out, rejections by reason,
    reconnects, errors) in one bus_stats_t and answers the built-in "stats"
    request with all of them. Hot paths look a counter up once and keep the
    pointer; the table never moves a counter once created. Not thread-safe:
    one owner thread (an actor) per table.
    =========================================================================
*/
#ifndef BUS_STATS_H_INCLUDED
#define BUS_STATS_H_INCLUDED

#include "bus/val.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bus_stats bus_stats_t;

bus_stats_t *bus_stats_new(void);
void bus_stats_destroy(bus_stats_t **self_p);
/* Pointer to the counter called name, created at 0 on first use. Stable for the table's life.
   NULL only on allocation failure. */
int64_t *bus_stats_counter(bus_stats_t *self, const char *name);
/* Add delta to a counter (created if needed). */
void bus_stats_add(bus_stats_t *self, const char *name, int64_t delta);
/* Set a gauge. */
void bus_stats_set(bus_stats_t *self, const char *name, int64_t value);
/* Current value, 0 if absent. */
int64_t bus_stats_get(bus_stats_t *self, const char *name);
/* A map {name: value} of every counter, in creation order (caller owns). */
bus_val_t *bus_stats_to_val(bus_stats_t *self);

#ifdef __cplusplus
}
#endif
#endif
