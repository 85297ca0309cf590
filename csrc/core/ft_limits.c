/* core/ft_limits.c - the one message for a value out of its range (ft_limits.h). */
#include "core/ft_device.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

int ft_limit_refuse(const ft_limit *l, const char *value, ft_err *e)
{
    return ft_fail(e, FT_EINVAL, EINVAL, "%s %s is out of range; allowed: %s%" PRId64 "..%" PRId64 "%s", l->name,
                   value, l->pow2 ? "a power of two in " : "", l->low, l->high, l->unit);
}

int ft_limit_check(const ft_limit *l, int64_t v, ft_err *e)
{
    if (v >= l->low && v <= l->high && (!l->pow2 || (v & (v - 1)) == 0))
        return FT_OK;
    char text[24];
    snprintf(text, sizeof(text), "%" PRId64, v);
    return ft_limit_refuse(l, text, e);
}
