/*  =========================================================================
    bench_val - bus_val maps at the sizes stock lists and reports reach

    A map of n keys is built with bus_val_map_set_int and then every key is
    read back with bus_val_map_get_int, for n = 10k, 100k and 1M. Keys are
    formatted before the clock starts, so the figure is the map alone. Each
    size runs several times and the best run counts (the machine is shared).
    The cost per key should not grow with n: val.map.per_key_ratio_1m_10k
    (ns per key at 1M / ns per key at 10k) is near 1 when insert and lookup
    are constant time, and about 100 when they scan. The decode figure is a
    100k-entry map of the same keys read back from its MessagePack bytes,
    which includes the duplicate-key check.
    Every lookup is checked, so a broken map fails the run instead of
    reporting a fast wrong answer. Prints `name: value` lines.
    Arguments: bench_val [MAX_KEYS] (default 1000000; smaller skips sizes).
    =========================================================================
*/
#include <bus/val.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_KEY_MAX        24
#define S_DEFAULT_MAX    1000000
#define S_KEYS_PER_SIZE  2000000 /* keys handled per size: small sizes repeat more often */
#define S_MIN_RUNS       3
#define S_DECODE_KEYS    100000
#define S_DECODE_RUNS    5
#define S_DECODE_MAX_MIB 64

static const size_t s_sizes[] = {10000, 100000, 1000000};
static const char *const s_size_names[] = {"10k", "100k", "1m"};

static int64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*  n keys "sku-0".."sku-<n-1>" in one block, S_KEY_MAX bytes apart. NULL on allocation failure. */
static char *s_keys_new(size_t n)
{
    char *keys = malloc(n * S_KEY_MAX);
    for (size_t i = 0; keys && i < n; i++)
        snprintf(keys + i * S_KEY_MAX, S_KEY_MAX, "sku-%zu", i);
    return keys;
}

/*  Build a map of the first n keys (value = position), look every key up, and destroy it.
    Returns the nanoseconds of build plus lookups, or -1 if any set or lookup went wrong. */
static int64_t s_insert_lookup(const char *keys, size_t n)
{
    int64_t start = s_now_ns();
    bus_val_t *map = bus_val_new_map();
    size_t wrong = 0;
    for (size_t i = 0; map && i < n; i++)
        if (bus_val_map_set_int(map, keys + i * S_KEY_MAX, (int64_t)i) != 0)
            wrong++;
    for (size_t i = 0; map && i < n; i++) {
        int64_t v = -1;
        if (!bus_val_map_get_int(map, keys + i * S_KEY_MAX, &v) || v != (int64_t)i)
            wrong++;
    }
    int64_t elapsed = s_now_ns() - start;
    bool ok = map && bus_val_size(map) == n && wrong == 0;
    bus_val_destroy(&map);
    return ok ? elapsed : -1;
}

/*  Best time of decoding a 100k-entry map; sets *bytes to its encoded size. -1 on failure. */
static int64_t s_decode(const char *keys, size_t *bytes)
{
    bus_val_t *map = bus_val_new_map();
    for (size_t i = 0; map && i < S_DECODE_KEYS; i++)
        if (bus_val_map_set_int(map, keys + i * S_KEY_MAX, (int64_t)i) != 0)
            bus_val_destroy(&map);
    bus_buf_t buf = {0};
    if (!map || bus_val_encode(map, &buf) != 0) {
        bus_val_destroy(&map);
        bus_buf_free(&buf);
        return -1;
    }
    *bytes = buf.len;
    bus_limits_t limits = {.max_size = (size_t)S_DECODE_MAX_MIB * 1024 * 1024, .max_depth = 0};
    int64_t best = -1;
    for (int run = 0; run < S_DECODE_RUNS; run++) {
        bus_reject_t why;
        int64_t start = s_now_ns();
        bus_val_t *back = bus_val_decode(buf.data, buf.len, &limits, &why);
        int64_t elapsed = s_now_ns() - start;
        bool ok = back && bus_val_equal(back, map);
        bus_val_destroy(&back);
        if (!ok) {
            fprintf(stderr, "bench_val: decode failed: %s\n", bus_reject_name(why));
            best = -1;
            break;
        }
        if (best < 0 || elapsed < best)
            best = elapsed;
    }
    bus_buf_free(&buf);
    bus_val_destroy(&map);
    return best;
}

int main(int argc, char **argv)
{
    size_t max_keys = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : S_DEFAULT_MAX;
    size_t nsizes = sizeof(s_sizes) / sizeof(s_sizes[0]);
    size_t most = S_DECODE_KEYS;
    for (size_t s = 0; s < nsizes; s++)
        if (s_sizes[s] <= max_keys && s_sizes[s] > most)
            most = s_sizes[s];
    char *keys = s_keys_new(most);
    if (!keys) {
        fprintf(stderr, "bench_val: out of memory for %zu keys\n", most);
        return 1;
    }
    double ns_per_key[sizeof(s_sizes) / sizeof(s_sizes[0])] = {0};
    for (size_t s = 0; s < nsizes && s_sizes[s] <= max_keys; s++) {
        size_t n = s_sizes[s];
        int runs = (int)(S_KEYS_PER_SIZE / n);
        if (runs < S_MIN_RUNS)
            runs = S_MIN_RUNS;
        int64_t best = -1;
        for (int run = 0; run < runs; run++) {
            int64_t ns = s_insert_lookup(keys, n);
            if (ns < 0) {
                fprintf(stderr, "bench_val: a map of %zu keys lost or misplaced a key\n", n);
                free(keys);
                return 1;
            }
            if (best < 0 || ns < best)
                best = ns;
        }
        ns_per_key[s] = (double)best / (double)n;
        printf("val.map.insert_lookup_%s_ms: %.2f\n", s_size_names[s], (double)best / 1e6);
        printf("val.map.insert_lookup_%s_ns_per_key: %.1f\n", s_size_names[s], ns_per_key[s]);
    }
    if (ns_per_key[0] > 0 && ns_per_key[nsizes - 1] > 0)
        printf("val.map.per_key_ratio_1m_10k: %.2f\n", ns_per_key[nsizes - 1] / ns_per_key[0]);

    size_t bytes = 0;
    int64_t decode = s_decode(keys, &bytes);
    free(keys);
    if (decode < 0)
        return 1;
    printf("val.decode.map_100k_bytes: %zu\n", bytes);
    printf("val.decode.map_100k_ms: %.2f\n", (double)decode / 1e6);
    return 0;
}
