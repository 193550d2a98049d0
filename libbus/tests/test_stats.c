/*  test_stats - named counters keep stable pointers and list in creation order */
#include <bus/stats.h>
#include <string.h>
#include "testutil.h"

int main(void)
{
    bus_stats_t *stats = bus_stats_new();
    int64_t *first = bus_stats_counter(stats, "requests");
    *first += 3;
    bus_stats_add(stats, "errors", 2);
    for (int i = 0; i < 10000; i++) {
        char name[32];
        snprintf(name, sizeof(name), "c%d", i);
        bus_stats_add(stats, name, i);
    }
    CHECK(bus_stats_counter(stats, "requests") == first, "pointer stable after 10,000 counters");
    (*first)++;
    CHECK(bus_stats_get(stats, "requests") == 4, "value through the kept pointer");
    CHECK(bus_stats_get(stats, "c9999") == 9999 && bus_stats_get(stats, "nope") == 0,
          "get returns values, 0 when absent");
    bus_stats_set(stats, "gauge", -7);
    bus_val_t *v = bus_stats_to_val(stats);
    int64_t g = 0;
    CHECK(bus_val_size(v) == 10003 && strcmp(bus_val_map_key(v, 0), "requests") == 0 &&
              bus_val_map_get_int(v, "gauge", &g) && g == -7,
          "to_val lists every counter in creation order");
    bus_val_destroy(&v);
    bus_stats_destroy(&stats);
    CHECK(stats == NULL, "destroy nulls the pointer");
    return FINISH("test_stats");
}
