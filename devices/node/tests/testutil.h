/*  The checks of devices/node's unit tests: the CHECK lines of libbus/tests/testutil.h (one
    "ok   what" or "FAIL (file:line) what" line per check, a closing "N passed, N failed") and
    the two helpers these tests use, so that the node tests do not reach into libbus. */
#ifndef NODE_TESTUTIL_H_INCLUDED
#define NODE_TESTUTIL_H_INCLUDED

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int t_passed, t_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            t_passed++;                                                                            \
            printf("ok   ");                                                                       \
        } else {                                                                                   \
            t_failed++;                                                                            \
            printf("FAIL (%s:%d) ", __FILE__, __LINE__);                                           \
        }                                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

#define CHECK_EQ(actual, expected, what)                                                           \
    do {                                                                                           \
        long long t_a_ = (long long)(actual), t_e_ = (long long)(expected);                        \
        CHECK(t_a_ == t_e_, "%s (expected %lld, got %lld)", what, t_e_, t_a_);                     \
    } while (0)

#define FINISH(name)                                                                               \
    (printf("%s: %d passed, %d failed\n", name, t_passed, t_failed), t_failed == 0 ? 0 : 1)

static inline void t_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*  Remove dir and everything in it (the test's temporary directory, at exit). */
static inline void t_remove_dir(const char *dir)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

#endif
