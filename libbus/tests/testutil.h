/*  Shared by the libbus unit tests: CHECK prints one line per check; FINISH prints the closing
    "N passed, N failed" line and gives the exit code. */
#ifndef BUS_TESTUTIL_H_INCLUDED
#define BUS_TESTUTIL_H_INCLUDED

#include <stdio.h>

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
    } while (0)

#define FINISH(name)                                                                               \
    (printf("%s: %d passed, %d failed\n", name, t_passed, t_failed), t_failed == 0 ? 0 : 1)

#endif
