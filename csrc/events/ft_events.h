/* events/ft_events.h - device events: link changes, removal, addresses added and removed, for one interface.
 * Linux: rtnetlink's multicast groups (events/ft_events.c), a socket to poll. Windows: the IP Helper API's
 * NotifyIpInterfaceChange and NotifyUnicastIpAddressChange (events/ft_events_win.c), whose callbacks run on
 * system threads and fill a bounded queue; there is no descriptor, ft_events_wait waits instead. Elsewhere
 * ft_events_open fails with FT_EUNSUPPORTED. Nothing here knows Python. */
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
    FT_EV_OVERFLOW = 5       /* the socket's buffer (Windows: the queue) overflowed: notifications were lost
                              * (state must be re-read) */
};

#define FT_EV_IFF_UP 0x1u    /* in flags: the link is up (Linux: IFF_UP; Windows: OperStatus is IfOperStatusUp) */
#define FT_EV_QUEUE 256      /* Windows: notifications held between two ft_events_read calls, the overflow mark
                              * included */

typedef struct ft_device_event {
    int kind;
    uint32_t ifindex;
    uint32_t flags;          /* FT_EV_LINK: IFF_* of the link */
    uint32_t mtu;            /* FT_EV_LINK: 0 if the kernel did not say */
    ft_addr addr;            /* address events */
    char name[16];           /* the interface name if the message carried one, else empty */
    uint64_t luid;           /* Windows: the interface's LUID; 0 on Linux */
} ft_device_event;

typedef struct ft_events ft_events;

/* Subscribes to the link and IPv4/IPv6 address groups of the calling thread's network namespace, keeping only
 * notifications about interface `ifindex` (0: every interface). */
ft_events *ft_events_open(uint32_t ifindex, ft_err *e);
/* Windows: the same for the interface with this LUID (0: every interface). Elsewhere FT_EUNSUPPORTED. */
ft_events *ft_events_open_luid(uint64_t luid, ft_err *e);
/* The socket to wait on for readability (poll, an event loop); -1 on Windows, which has none. */
int ft_events_fd(const ft_events *ev);
/* Waits up to timeout_ms (< 0: without end) until events may be pending. Returns 1 (call ft_events_read; it
 * may still find none that concern the caller), FT_ETIMEDOUT, FT_ECLOSED once ft_events_shutdown was called,
 * or a failure. Any number of threads may wait at once. */
int ft_events_wait(ft_events *ev, int timeout_ms, ft_err *e);
/* Stops the notifications and wakes every ft_events_wait, which then returns FT_ECLOSED; ft_events_read
 * returns FT_ECLOSED too. Any thread, any number of times. Windows: returns once no notification callback is
 * running any more (CancelMibChangeNotify2). Linux: the socket stays open until ft_events_close. */
void ft_events_shutdown(ft_events *ev);
/* Decodes pending notifications into out[0..max) without blocking. Returns how many (> 0), FT_EAGAIN if none
 * is pending, or a failure. Notifications that do not fit stay for the next call. */
int ft_events_read(ft_events *ev, ft_device_event *out, int max, ft_err *e);
/* Notifications lost so far. Windows: each one dropped from the full queue. Linux: each time the kernel said
 * the socket's buffer overflowed (how many it lost, it does not say). Not after ft_events_close. */
uint64_t ft_events_dropped(ft_events *ev);
/* Shuts down (as ft_events_shutdown) and frees. Once, when no other thread uses ev any more. */
void ft_events_close(ft_events *ev);

/* Decodes the rtnetlink messages in buf[*pos..len) about interface `ifindex` (0: all) into out[0..max) and
 * advances *pos past each message it took (a malformed or truncated tail is skipped to len). Returns how many
 * events it wrote. A pure function: ft_events_read's parser, exposed for the tests. */
int ft_events_decode(const unsigned char *buf, size_t len, size_t *pos, uint32_t ifindex, ft_device_event *out,
                     int max);

/* Test only: builds the row the system passes to the notification callback and calls that callback, as a
 * system thread would (Wine never calls it: its NotifyIpInterfaceChange is a stub and its
 * NotifyUnicastIpAddressChange only reports the initial notification). what: 0 an interface (MIB_IPINTERFACE_ROW:
 * family a->family, mtu, connected), 1 an address (MIB_UNICASTIPADDRESS_ROW: *a); type: MIB_NOTIFICATION_TYPE
 * (0 parameter, 1 add, 2 delete, 3 initial). FT_EUNSUPPORTED except on Windows. */
int ft_events_test_notify(ft_events *ev, int what, int type, uint64_t luid, uint32_t ifindex, const ft_addr *a,
                          uint32_t mtu, int connected, ft_err *e);

#endif
