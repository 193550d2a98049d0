/*  =========================================================================
    bus/stats.h - named counters

    Every program keeps its counters (messages in/out, rejections by reason,
    reconnects, errors) in one bus_stats_t and answers the built-in "stats"
    request with all of them. Hot paths look a counter up once and keep the
    pointer; the table never moves a counter once created.

    Threads: a table has one owner thread (the service's actor). Only the
    owner calls the functions that take a bus_stats_t; bus_stats_counter,
    bus_stats_add and bus_stats_set create counters, and creating is not
    thread-safe, so the owner creates every counter that another thread
    will touch before starting that thread, and hands it the pointer. Other
    threads then use only bus_stats_inc and bus_stats_load on such pointers.
    Every read and write of a value (get, to_val, add, set, inc, load) is
    atomic, so the owner may read or update a counter while workers
    increment it, and no increment is lost. Never write through a counter
    pointer with plain `*c += n` once another thread may use it.
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
   NULL only on allocation failure. Owner thread only. */
int64_t *bus_stats_counter(bus_stats_t *self, const char *name);
/* Add delta to a counter (created if needed), atomically. Owner thread only. */
void bus_stats_add(bus_stats_t *self, const char *name, int64_t delta);
/* Set a gauge (created if needed), atomically. Owner thread only. */
void bus_stats_set(bus_stats_t *self, const char *name, int64_t value);
/* Current value (an atomic load), 0 if absent. Owner thread only. */
int64_t bus_stats_get(bus_stats_t *self, const char *name);
/* A map {name: value} of every counter, in creation order (caller owns); each value is an atomic
   load, so the map is a consistent value per counter, not a snapshot across counters. Owner
   thread only. */
bus_val_t *bus_stats_to_val(bus_stats_t *self);
/* Add by to the counter (a pointer from bus_stats_counter) atomically, relaxed order. Safe from
   any thread while the table lives; does nothing if counter is NULL. */
void bus_stats_inc(int64_t *counter, int64_t by);
/* Read the counter atomically. Safe from any thread while the table lives; 0 if NULL. */
int64_t bus_stats_load(const int64_t *counter);

#ifdef __cplusplus
}
#endif
#endif
