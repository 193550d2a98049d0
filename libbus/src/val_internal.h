/*  Internal to libbus: operations on values that the public API does not offer. */
#ifndef BUS_VAL_INTERNAL_H_INCLUDED
#define BUS_VAL_INTERNAL_H_INCLUDED

#include "bus/val.h"

/* Remove key from map and return its value (caller owns); NULL if absent. */
bus_val_t *bus__val_map_take(bus_val_t *self, const char *key);

#endif
