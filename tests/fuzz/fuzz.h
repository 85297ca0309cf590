/* tests/fuzz/fuzz.h - what the fuzz targets share: an invariant that aborts (libFuzzer and the sanitizers then
 * report the input) with where and what failed. */
#ifndef FT_FUZZ_H
#define FT_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
