/* core/ft_limits.h - the ranges a caller's values must lie in, each defined once (by the part it belongs to, next
 * to its other constants) and reported in one form: "<name> <value> is out of range; allowed: <low>..<high>".
 * The C functions that take such a value check it with ft_limit_check; the Python layer checks a Python int
 * against the same limit before converting it to the C type (a value like -1 or 2**40 could not even be
 * passed), so a user gets the same words from every layer and platform. */
#ifndef FT_LIMITS_H
#define FT_LIMITS_H

#include <stdint.h>

struct ft_err;

typedef struct ft_limit {
    const char *name;   /* as the user writes it: "mtu", "batch_size" */
    int64_t low, high;
    const char *unit;   /* appended to the range: "" or " bytes", " packets" */
    int pow2;           /* 1: only powers of two in low..high */
} ft_limit;

/* FT_OK if low <= v <= high (and a power of two where the limit asks for one), else FT_EINVAL saying so. */
int ft_limit_check(const ft_limit *l, int64_t v, struct ft_err *e);
/* FT_EINVAL for a value the caller cannot even represent in 64 bits, given as its decimal text. */
int ft_limit_refuse(const ft_limit *l, const char *value, struct ft_err *e);

/* A limit, as each part declares its own in its header: static const ft_limit ft_limit_mtu = FT_LIMIT(...). */
#define FT_LIMIT(name, low, high, unit) {(name), (int64_t)(low), (int64_t)(high), (unit), 0}

#endif
