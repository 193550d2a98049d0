/*  Shared by the libpos tests: one line per check (CHECK_EQ prints expected and actual), a
    closing "N passed, N failed" line. */
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
        fflush(stdout); /* kept if a sanitizer aborts the test later */                            \
    } while (0)

/*  CHECK that two integers are equal, printing both either way. */
#define CHECK_EQ(actual, expected, what)                                                           \
    do {                                                                                           \
        long long t_a_ = (long long)(actual), t_e_ = (long long)(expected);                        \
        CHECK(t_a_ == t_e_, "%s (expected %lld, got %lld)", what, t_e_, t_a_);                     \
    } while (0)

#define FINISH(name)                                                                               \
    (printf("%s: %d passed, %d failed\n", name, t_passed, t_failed), t_failed == 0 ? 0 : 1)

#endif
