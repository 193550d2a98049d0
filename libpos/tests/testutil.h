/*  Shared by the libpos tests: one line per check, a closing "N passed, N failed" line. */
#ifndef POS_TESTUTIL_H_INCLUDED
#define POS_TESTUTIL_H_INCLUDED

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
