/*  =========================================================================
    stats.c - named counters

    Counters live in separately allocated nodes on a list kept in creation
    order, indexed by a hash; growing the table never moves a counter, so the
    pointers that hot paths keep stay valid for the table's whole life.

    Stream workers count on other threads through those pointers while the
    owner thread answers "stats", so every value is read and written with
    __atomic operations (relaxed: a counter orders nothing else, and each
    one is only ever exact on its own). The table itself (index and list)
    is touched by the owner thread alone, which is why creating a counter
    is not thread-safe.
    =========================================================================
*/
#include <czmq.h>
#include "bus/stats.h"

typedef struct s_counter {
    struct s_counter *next;
    int64_t value;
    char name[];
} s_counter_t;

struct bus_stats {
    zhashx_t *index; /* name -> s_counter_t (not owned) */
    s_counter_t *head, *tail;
};

bus_stats_t *bus_stats_new(void)
{
    bus_stats_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->index = zhashx_new();
    if (!self->index) {
        free(self);
        return NULL;
    }
    return self;
}

void bus_stats_destroy(bus_stats_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_stats_t *self = *self_p;
    zhashx_destroy(&self->index);
    for (s_counter_t *c = self->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(self);
    *self_p = NULL;
}

int64_t *bus_stats_counter(bus_stats_t *self, const char *name)
{
    s_counter_t *c = zhashx_lookup(self->index, name);
    if (c)
        return &c->value;
    size_t len = strlen(name);
    c = calloc(1, sizeof(*c) + len + 1);
    if (!c)
        return NULL;
    memcpy(c->name, name, len + 1);
    if (zhashx_insert(self->index, c->name, c) != 0) {
        free(c);
        return NULL;
    }
    if (self->tail)
        self->tail->next = c;
    else
        self->head = c;
    self->tail = c;
    return &c->value;
}

void bus_stats_inc(int64_t *counter, int64_t by)
{
    if (counter)
        __atomic_add_fetch(counter, by, __ATOMIC_RELAXED);
}

int64_t bus_stats_load(const int64_t *counter)
{
    return counter ? __atomic_load_n(counter, __ATOMIC_RELAXED) : 0;
}

void bus_stats_add(bus_stats_t *self, const char *name, int64_t delta)
{
    bus_stats_inc(bus_stats_counter(self, name), delta);
}

void bus_stats_set(bus_stats_t *self, const char *name, int64_t value)
{
    int64_t *c = bus_stats_counter(self, name);
    if (c)
        __atomic_store_n(c, value, __ATOMIC_RELAXED);
}

int64_t bus_stats_get(bus_stats_t *self, const char *name)
{
    s_counter_t *c = zhashx_lookup(self->index, name);
    return c ? bus_stats_load(&c->value) : 0;
}

bus_val_t *bus_stats_to_val(bus_stats_t *self)
{
    bus_val_t *map = bus_val_new_map();
    for (s_counter_t *c = self->head; c && map; c = c->next)
        if (bus_val_map_set_int(map, c->name, bus_stats_load(&c->value)) != 0)
            bus_val_destroy(&map);
    return map;
}
