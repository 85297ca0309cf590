/* ft_backends.h - how each backend is opened. Each returns a device ready for ft_device.h calls. */
#ifndef FT_BACKENDS_H
#define FT_BACKENDS_H

#include "ft_device.h"

/* ---- in-memory pair (every platform) --------------------------------------------------------------- */
#define FT_PAIR_DEFAULT_CAPACITY 4096u              /* packets each direction holds */
#define FT_PAIR_DEFAULT_CAPACITY_BYTES (4u << 20)   /* bytes each direction holds */
#define FT_PAIR_MAX_CAPACITY (1u << 20)
#define FT_PAIR_MAX_CAPACITY_BYTES (1u << 30)

/* Two connected devices: what one sends the other receives. Each direction holds at most `capacity`
 * packets and `capacity_bytes` bytes. */
int ft_memory_pair(uint32_t mtu, uint32_t capacity, uint32_t capacity_bytes, ft_device **a, ft_device **b,
                   ft_err *e);

/* ---- Linux /dev/net/tun ------------------------------------------------------------------------------ */
#define FT_LINUX_MAX_QUEUES 256

typedef struct ft_linux_params {
    const char *name;    /* NULL or "" lets the kernel choose; may contain one %d */
    int queues;          /* 1..FT_LINUX_MAX_QUEUES; > 1 opens a multi-queue device */
    int persist;         /* -1 leave as is, 0 clear, 1 set */
    int must_exist;      /* fail with ENODEV unless the device already exists (attach to a persistent one) */
    int must_create;     /* fail with EEXIST if a device of that name already exists */
    uint32_t mtu;        /* 0 keeps the current MTU */
    const char *dev_path;/* NULL for /dev/net/tun (tests point it elsewhere) */
} ft_linux_params;

int ft_linux_open(const ft_linux_params *p, ft_device **out, ft_err *e);
/* The fd of queue q, for fileno(); -1 if q is out of range. */
int ft_linux_fd(ft_device *d, int q);
/* TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports. */
int ft_linux_features(uint32_t *flags, ft_err *e);
/* Set or clear IFF_PERSIST on an open device. */
int ft_linux_set_persist(ft_device *d, int persist, ft_err *e);

#endif
