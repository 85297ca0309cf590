/* linux/ft_linux.h - how a Linux /dev/net/tun device is opened and what only it has (queues'
 * descriptors, features, persist, offloads). Elsewhere the same names exist and only say no. */
#ifndef FT_LINUX_H
#define FT_LINUX_H

#include "core/ft_device.h"

#define FT_LINUX_MAX_QUEUES 256
static const ft_limit ft_limit_queues = FT_LIMIT("queues", 1, FT_LINUX_MAX_QUEUES, "");
static const ft_limit ft_limit_txqueuelen = FT_LIMIT("txqueuelen", 0, INT32_MAX, " packets");

typedef struct ft_linux_params {
    const char *name;    /* NULL or "" lets the kernel choose; may contain one %d */
    int queues;          /* 1..FT_LINUX_MAX_QUEUES; > 1 opens a multi-queue device */
    int persist;         /* -1 leave as is, 0 clear, 1 set */
    int open_mode;       /* FT_OPEN_ANY, FT_OPEN_EXISTING (attach to a persistent device: ENODEV if there is
                          * none) or FT_OPEN_CREATE (EEXIST if a device of that name exists) */
    uint32_t mtu;        /* 0 keeps the current MTU */
    const char *dev_path;/* NULL for /dev/net/tun (tests point it elsewhere) */
    int offload;         /* FT_OFFLOAD_OFF, _SEGMENTS (split on read, coalesce on write) or _SUPER (whole) */
    int auto_txqueuelen; /* double txqueuelen (up to 65536) when the kernel drops packets it could not queue */
    int remote_csum;     /* packets may carry a partial checksum behind an FT_RCSUM header (offload/ft_offload.h):
                          * segments mode hands them out that way, and every mode but super takes them */
} ft_linux_params;

enum { FT_OFFLOAD_OFF = 0, FT_OFFLOAD_SEGMENTS = 1, FT_OFFLOAD_SUPER = 2 };
/* TUN_F_* bits that TUNSETOFFLOAD accepted (USO4/USO6 only on Linux 6.2+). */
#define FT_TUN_F_CSUM 0x01u
#define FT_TUN_F_TSO4 0x02u
#define FT_TUN_F_TSO6 0x04u
#define FT_TUN_F_TSO_ECN 0x08u
#define FT_TUN_F_USO4 0x20u
#define FT_TUN_F_USO6 0x40u

#ifdef __linux__
int ft_linux_open(const ft_linux_params *p, ft_device **out, ft_err *e);
/* The fd of queue q, for fileno(); or a failure (not a Linux device, no such queue, closed). */
int ft_linux_fd(ft_device *d, int q, ft_err *e);
/* TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports. */
int ft_linux_features(uint32_t *flags, ft_err *e);
/* Set or clear IFF_PERSIST on an open device. */
int ft_linux_set_persist(ft_device *d, int persist, ft_err *e);
/* The TUN_F_* offloads enabled on the device (0 without offload) and its offload mode. */
uint32_t ft_linux_offloads(ft_device *d, int *mode);
/* How many times txqueuelen "auto" doubled the queue (0 for other devices). */
int ft_linux_txqueuelen_grows(ft_device *d);
#else
/* Elsewhere the same names exist so that one wrapper serves every platform; they only say no. */
#include <errno.h>
static inline int ft_linux_open(const ft_linux_params *p, ft_device **out, ft_err *e)
{
    (void)p;
    (void)out;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "/dev/net/tun devices exist only on Linux");
}
static inline int ft_linux_fd(ft_device *d, int q, ft_err *e)
{
    (void)q;
    int r = ft_device_enter(d, e); /* closed first: after close, every call says so */
    if (r != FT_OK)
        return r;
    ft_device_leave(d);
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "the %s backend has no file descriptors", d->ops->name);
}
static inline int ft_linux_features(uint32_t *flags, ft_err *e)
{
    *flags = 0;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "TUN features are a Linux notion");
}
static inline int ft_linux_set_persist(ft_device *d, int persist, ft_err *e)
{
    (void)persist;
    int r = ft_device_enter(d, e); /* closed first */
    if (r != FT_OK)
        return r;
    ft_device_leave(d);
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "persist is a property of Linux TUN devices");
}
static inline uint32_t ft_linux_offloads(ft_device *d, int *mode)
{
    (void)d;
    *mode = 0;
    return 0;
}
static inline int ft_linux_txqueuelen_grows(ft_device *d)
{
    (void)d;
    return 0;
}
#endif

#endif
