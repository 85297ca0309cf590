/* wintun_check.h - what the Wintun test programs share: count checks and report a failure with its place and a
 * message (printf arguments); main prints the "N passed, N failed" line the Python side reads. */
#ifndef FT_WINTUN_CHECK_H
#define FT_WINTUN_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (cond) {                                                                 \
            passed++;                                                               \
        } else {                                                                    \
            failed++;                                                               \
            printf("  FAIL %s:%d: %s -- ", __FILE__, __LINE__, #cond);              \
            printf(__VA_ARGS__);                                                    \
            printf("\n");                                                           \
        }                                                                           \
    } while (0)

#endif
