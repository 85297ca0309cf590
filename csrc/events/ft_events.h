/* events/ft_events.h - device events from rtnetlink's multicast groups (link changes, removal, addresses).
 * Linux only; elsewhere ft_events_open fails with FT_EUNSUPPORTED. Nothing here knows Python. */
#ifndef FT_LINUX_EVENTS_H
#define FT_LINUX_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/ft_device.h"

enum {
    FT_EV_LINK = 1,          /* the link's state as the kernel announced it: flags (IFF_*) and mtu */
    FT_EV_LINK_REMOVED = 2,  /* the interface is gone */
    FT_EV_ADDR_ADDED = 3,
    FT_EV_ADDR_REMOVED = 4,
    FT_EV_OVERFLOW = 5       /* the socket's buffer overflowed: notifications were lost (state must be re-read) */
};

typedef struct ft_device_event {
    int kind;
    uint32_t ifindex;
    uint32_t flags;          /* FT_EV_LINK: IFF_* of the link */
    uint32_t mtu;            /* FT_EV_LINK: 0 if the kernel did not say */
    ft_addr addr;            /* address events */
    char name[16];           /* the interface name if the message carried one, else empty */
} ft_device_event;

typedef struct ft_events ft_events;

/* Subscribes to the link and IPv4/IPv6 address groups of the calling thread's network namespace, keeping only
 * notifications about interface `ifindex` (0: every interface). */
ft_events *ft_events_open(uint32_t ifindex, ft_err *e);
/* The socket to wait on for readability (poll, an event loop). */
int ft_events_fd(const ft_events *ev);
/* Decodes pending notifications into out[0..max) without blocking. Returns how many (> 0), FT_EAGAIN if none
 * is pending, or a failure. Notifications that do not fit stay for the next call. */
int ft_events_read(ft_events *ev, ft_device_event *out, int max, ft_err *e);
void ft_events_close(ft_events *ev);

/* Decodes the rtnetlink messages in buf[*pos..len) about interface `ifindex` (0: all) into out[0..max) and
 * advances *pos past each message it took (a malformed or truncated tail is skipped to len). Returns how many
 * events it wrote. A pure function: ft_events_read's parser, exposed for the tests. */
int ft_events_decode(const unsigned char *buf, size_t len, size_t *pos, uint32_t ifindex, ft_device_event *out,
                     int max);

#endif
