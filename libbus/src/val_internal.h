/*  Internal to libbus: operations on values that the public API does not offer. */
#ifndef BUS_VAL_INTERNAL_H_INCLUDED
#define BUS_VAL_INTERNAL_H_INCLUDED

#include "bus/val.h"

/* Remove key from map and return its value (caller owns); NULL if absent. */
bus_val_t *bus__val_map_take(bus_val_t *self, const char *key);

/* SipHash of len bytes under a 128-bit key (two little-endian words), with c compression and d
   finalisation rounds. Maps hash their keys with c = 1, d = 3; exposed so tests can check the
   code against the published SipHash-2-4 vectors. */
uint64_t bus__val_siphash(const uint64_t key[2], const void *data, size_t len, int c, int d);

#endif
