/*  test_stats - named counters keep stable pointers, list in creation order, and count exactly
    while worker threads increment them and the owner thread reads and adds */
#include <bus/stats.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include "testutil.h"

#define S_WORKERS         2
#define S_INCS_PER_WORKER 1000000

typedef struct {
    int64_t *counter;
    pthread_barrier_t *start;
    int finished; /* workers done, atomic: the owner loops on this, not on the count it checks */
} s_worker_arg_t;

static void *s_worker(void *arg_)
{
    s_worker_arg_t *arg = arg_;
    pthread_barrier_wait(arg->start);
    for (int i = 0; i < S_INCS_PER_WORKER; i++)
        bus_stats_inc(arg->counter, 1);
    __atomic_add_fetch(&arg->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/*  Start the workers on one counter, all released at once with the calling thread. */
static void s_start_workers(pthread_t *threads, s_worker_arg_t *arg, pthread_barrier_t *start,
                            int64_t *counter)
{
    pthread_barrier_init(start, NULL, S_WORKERS + 1);
    *arg = (s_worker_arg_t){.counter = counter, .start = start, .finished = 0};
    for (int i = 0; i < S_WORKERS; i++)
        pthread_create(&threads[i], NULL, s_worker, arg);
    pthread_barrier_wait(start);
}

static bool s_workers_running(s_worker_arg_t *arg)
{
    return __atomic_load_n(&arg->finished, __ATOMIC_ACQUIRE) < S_WORKERS;
}

static void s_join_workers(pthread_t *threads, pthread_barrier_t *start)
{
    for (int i = 0; i < S_WORKERS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(start);
}

/*  Workers increment while the owner reads by name and as a map: every read is a value some
    increment produced (between 0 and the total, never going back), and none is lost. */
static void s_test_reads_while_counting(void)
{
    const int64_t total = (int64_t)S_WORKERS * S_INCS_PER_WORKER;
    bus_stats_t *stats = bus_stats_new();
    int64_t *counter = bus_stats_counter(stats, "stream_applied");
    pthread_t threads[S_WORKERS];
    s_worker_arg_t arg;
    pthread_barrier_t start;
    s_start_workers(threads, &arg, &start, counter);
    int64_t last = 0, reads = 0, between = 0, backwards = 0, out_of_range = 0;
    while (s_workers_running(&arg)) {
        int64_t by_name = bus_stats_get(stats, "stream_applied");
        bus_val_t *map = bus_stats_to_val(stats);
        int64_t in_map = -1;
        bus_val_map_get_int(map, "stream_applied", &in_map);
        bus_val_destroy(&map);
        if (by_name < last || in_map < by_name)
            backwards++;
        if (by_name < 0 || in_map > total)
            out_of_range++;
        if (by_name > 0 && by_name < total)
            between++;
        last = in_map > last ? in_map : last;
        reads++;
    }
    s_join_workers(threads, &start);
    int64_t final = bus_stats_get(stats, "stream_applied");
    CHECK(final == total, "%d threads x %d bus_stats_inc: expected %lld, got %lld", S_WORKERS,
          S_INCS_PER_WORKER, (long long)total, (long long) final);
    CHECK(backwards == 0 && out_of_range == 0,
          "%lld reads during counting never went back (%lld) nor out of range (%lld)",
          (long long)reads, (long long)backwards, (long long)out_of_range);
    printf("     %lld of %lld reads saw a count in progress\n", (long long)between,
           (long long)reads);
    CHECK(bus_stats_load(counter) == total, "bus_stats_load agrees: %lld",
          (long long)bus_stats_load(counter));
    bus_stats_destroy(&stats);
}

/*  The owner adds to and sets other counters by name while workers increment: with a plain
    `*c += delta` in bus_stats_add, increments from the workers would be lost. */
static void s_test_owner_adds_while_counting(void)
{
    const int64_t total = (int64_t)S_WORKERS * S_INCS_PER_WORKER;
    bus_stats_t *stats = bus_stats_new();
    int64_t *counter = bus_stats_counter(stats, "errors");
    bus_stats_counter(stats, "gauge");
    pthread_t threads[S_WORKERS];
    s_worker_arg_t arg;
    pthread_barrier_t start;
    s_start_workers(threads, &arg, &start, counter);
    int64_t owner_adds = 0;
    while (s_workers_running(&arg)) {
        bus_stats_add(stats, "errors", 1);
        owner_adds++;
        bus_stats_set(stats, "gauge", owner_adds);
    }
    s_join_workers(threads, &start);
    int64_t final = bus_stats_get(stats, "errors");
    CHECK(final == total + owner_adds,
          "workers' %lld increments plus the owner's %lld adds: expected %lld, got %lld",
          (long long)total, (long long)owner_adds, (long long)(total + owner_adds),
          (long long) final);
    CHECK(bus_stats_get(stats, "gauge") == owner_adds, "gauge holds the last set: %lld",
          (long long)bus_stats_get(stats, "gauge"));
    bus_stats_destroy(&stats);
}

static void s_test_table(void)
{
    bus_stats_t *stats = bus_stats_new();
    int64_t *first = bus_stats_counter(stats, "requests");
    bus_stats_inc(first, 3);
    bus_stats_add(stats, "errors", 2);
    for (int i = 0; i < 10000; i++) {
        char name[32];
        snprintf(name, sizeof(name), "c%d", i);
        bus_stats_add(stats, name, i);
    }
    CHECK(bus_stats_counter(stats, "requests") == first, "pointer stable after 10,000 counters");
    bus_stats_inc(first, 1);
    CHECK(bus_stats_get(stats, "requests") == 4, "value through the kept pointer: %lld",
          (long long)bus_stats_get(stats, "requests"));
    CHECK(bus_stats_get(stats, "c9999") == 9999 && bus_stats_get(stats, "nope") == 0,
          "get returns values, 0 when absent");
    bus_stats_inc(NULL, 1);
    CHECK(bus_stats_load(NULL) == 0, "inc and load accept a NULL counter (a failed creation)");
    bus_stats_set(stats, "gauge", -7);
    bus_val_t *v = bus_stats_to_val(stats);
    int64_t g = 0;
    CHECK(bus_val_size(v) == 10003 && strcmp(bus_val_map_key(v, 0), "requests") == 0 &&
              bus_val_map_get_int(v, "gauge", &g) && g == -7,
          "to_val lists every counter in creation order");
    bus_val_destroy(&v);
    bus_stats_destroy(&stats);
    CHECK(stats == NULL, "destroy nulls the pointer");
}

int main(void)
{
    s_test_table();
    s_test_reads_while_counting();
    s_test_owner_adds_while_counting();
    return FINISH("test_stats");
}
