/*  node_journal_tool - makes keys and journals for black-box tests and measures the journal

    node_journal_tool keygen KEY.pem PUB.pem       a private key (0600) and its public PEM
    node_journal_tool append FILE KEY STORE REG N [SIZE]
                                                   N sale records of SIZE bytes (default 200);
                                                   prints "seq FIRST..LAST" and any torn tail cut
    node_journal_tool bench FILE KEY N SIZE        N appends of SIZE bytes: append+fdatasync
                                                   latency p50/p99/max in microseconds, then
                                                   verify speed in records per second

    A test and measurement tool, not an operator's: posctl journal verify is the operator's. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/journal.h"

static double s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static node_journal_t *s_open(const char *file, const char *keyfile, const char *store,
                              const char *reg, node_key_t **key)
{
    *key = node_key_load(keyfile);
    if (!*key) {
        fprintf(stderr, "node_journal_tool: cannot load %s: %s\n", keyfile, strerror(errno));
        return NULL;
    }
    node_journal_status_t status;
    node_journal_t *journal = node_journal_open(file, *key, store, reg, &status);
    if (!journal)
        fprintf(stderr, "node_journal_tool: cannot open %s: %s (%s)\n", file, strerror(errno),
                status.reason);
    else if (status.torn_bytes > 0)
        printf("torn tail cut: %" PRIu64 " bytes at %" PRIu64 ": %s\n", status.torn_bytes,
               status.bad_offset, status.reason);
    return journal;
}

static int s_append(node_journal_t *journal, long n, size_t size)
{
    uint8_t *payload = malloc(size ? size : 1);
    if (!payload)
        return 1;
    int64_t first = 0, seq = 0;
    for (long i = 0; i < n; i++) {
        for (size_t b = 0; b < size; b++)
            payload[b] = (uint8_t)(b * 7 + (size_t)node_journal_last_seq(journal));
        seq = node_journal_append(journal, NODE_JOURNAL_SALE, payload, size,
                                  1700000000000LL + (int64_t)i);
        if (seq < 0) {
            fprintf(stderr, "node_journal_tool: %s\n", node_journal_errstr(journal));
            free(payload);
            return 1;
        }
        if (!first)
            first = seq;
    }
    free(payload);
    printf("seq %" PRId64 "..%" PRId64 "\n", first, seq);
    return 0;
}

static int s_bench(node_journal_t *journal, const char *file, const node_key_t *key, long n,
                   size_t size)
{
    double *lat = calloc((size_t)n, sizeof(*lat));
    uint8_t *payload = calloc(1, size ? size : 1);
    if (!lat || !payload)
        return 1;
    for (long i = 0; i < n; i++) {
        double start = s_now_us();
        if (node_journal_append(journal, NODE_JOURNAL_SALE, payload, size, 0) < 0) {
            fprintf(stderr, "node_journal_tool: %s\n", node_journal_errstr(journal));
            return 1;
        }
        lat[i] = s_now_us() - start;
    }
    qsort(lat, (size_t)n, sizeof(*lat), s_cmp_double);
    printf("append+fdatasync %zu-byte payload, %ld appends: p50 %.0f us, p99 %.0f us, max %.0f "
           "us\n",
           size, n, lat[n / 2], lat[(n * 99) / 100], lat[n - 1]);
    node_journal_status_t status;
    double start = s_now_us();
    int rc = node_journal_verify(file, key, &status);
    double secs = (s_now_us() - start) / 1e6;
    printf("verify: %s, %" PRIu64 " records in %.3f s: %.0f records/s\n", rc == 0 ? "ok" : "BAD",
           status.last_seq, secs, (double)status.last_seq / secs);
    free(lat);
    free(payload);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "keygen") == 0) {
        node_key_t *key = NULL;
        if (node_key_generate(argv[2]) != 0 || !(key = node_key_load(argv[2])) ||
            node_key_write_public(key, argv[3]) != 0) {
            fprintf(stderr, "node_journal_tool: keygen: %s\n", strerror(errno));
            node_key_destroy(&key);
            return 1;
        }
        printf("key %s\n", node_key_fingerprint(key));
        node_key_destroy(&key);
        return 0;
    }
    bool append = argc >= 7 && argc <= 8 && strcmp(argv[1], "append") == 0;
    bool bench = argc == 6 && strcmp(argv[1], "bench") == 0;
    if (!append && !bench) {
        fprintf(stderr, "usage: node_journal_tool keygen KEY.pem PUB.pem\n"
                        "       node_journal_tool append FILE KEY STORE REG N [SIZE]\n"
                        "       node_journal_tool bench FILE KEY N SIZE\n");
        return 2;
    }
    node_key_t *key = NULL;
    node_journal_t *journal =
        s_open(argv[2], argv[3], append ? argv[4] : "S1", append ? argv[5] : "R01", &key);
    int rc = 1;
    if (journal && append)
        rc = s_append(journal, atol(argv[6]), argc == 8 ? (size_t)atol(argv[7]) : 200);
    else if (journal)
        rc = s_bench(journal, argv[2], key, atol(argv[4]), (size_t)atol(argv[5]));
    node_journal_destroy(&journal);
    node_key_destroy(&key);
    return rc;
}
