/* events/ft_events.c - device events from rtnetlink's multicast groups: RTM_NEWLINK/RTM_DELLINK and
 * RTM_NEWADDR/RTM_DELADDR for one interface, each message checked against its own length fields before a field
 * is read. One datagram may hold several messages; what does not fit the caller's array is kept for the next
 * call, so nothing is dropped silently (an overflowing socket buffer is reported as FT_EV_OVERFLOW). */
#include "events/ft_events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <poll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>

#define EV_BUF 65536

struct ft_events {
    int fd;
    int wake;                /* an eventfd ft_events_shutdown makes readable, for ft_events_wait */
    atomic_int shut;
    uint32_t ifindex;
    uint64_t overflows;      /* ENOBUFS seen by ft_events_read */
    size_t len;              /* bytes of the datagram in buf */
    size_t pos;              /* where the next message starts */
    unsigned char buf[EV_BUF];
};

ft_events *ft_events_open(uint32_t ifindex, ft_err *e)
{
    ft_events *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for an event socket");
        return NULL;
    }
    ev->ifindex = ifindex;
    atomic_init(&ev->shut, 0);
    ev->wake = -1;
    ev->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
    if (ev->fd < 0) {
        ft_fail_os(e, errno, "cannot open a NETLINK_ROUTE socket for device events");
        goto fail_alloc;
    }
    int rcvbuf = 1 << 20;  /* bursts (many addresses at once) should fit; more is reported as an overflow */
    setsockopt(ev->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_nl local = {.nl_family = AF_NETLINK,
                                .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR};
    if (bind(ev->fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
        ft_fail_os(e, errno, "cannot subscribe to rtnetlink's link and address groups");
        goto fail_socket;
    }
    ev->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ev->wake < 0) {
        ft_fail_os(e, errno, "cannot create the wake-up eventfd of an event socket");
        goto fail_socket;
    }
    return ev;
fail_socket:
    close(ev->fd);
fail_alloc:
    free(ev);
    return NULL;
}

ft_events *ft_events_open_luid(uint64_t luid, ft_err *e)
{
    (void)luid;
    ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "an interface LUID names a Windows interface; on Linux give its index");
    return NULL;
}

int ft_events_fd(const ft_events *ev) { return ev->fd; }

int ft_events_wait(ft_events *ev, int timeout_ms, ft_err *e)
{
    struct pollfd fds[2] = {{.fd = ev->fd, .events = POLLIN}, {.fd = ev->wake, .events = POLLIN}};
    if (atomic_load(&ev->shut))
        return FT_ECLOSED;
    int r = poll(fds, 2, timeout_ms < 0 ? -1 : timeout_ms);
    if (atomic_load(&ev->shut))
        return FT_ECLOSED;
    if (r < 0)
        return errno == EINTR ? FT_ETIMEDOUT : ft_fail_os(e, errno, "waiting for device events failed");
    return r == 0 ? FT_ETIMEDOUT : 1;
}

void ft_events_shutdown(ft_events *ev)
{
    if (!ev || atomic_exchange(&ev->shut, 1))
        return;
    uint64_t one = 1;
    ssize_t w = write(ev->wake, &one, sizeof(one));
    (void)w; /* an eventfd that cannot take 1 is readable already */
}

uint64_t ft_events_dropped(ft_events *ev) { return ev->overflows; }

void ft_events_close(ft_events *ev)
{
    if (!ev)
        return;
    close(ev->fd);
    close(ev->wake);
    free(ev);
}

int ft_events_test_notify(ft_events *ev, int what, int type, uint64_t luid, uint32_t ifindex, const ft_addr *a,
                          uint32_t mtu, int connected, ft_err *e)
{
    (void)ev, (void)what, (void)type, (void)luid, (void)ifindex, (void)a, (void)mtu, (void)connected;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "notification callbacks are Windows'");
}

static void copy_name(ft_device_event *out, const struct rtattr *rta)
{
    size_t n = RTA_PAYLOAD(rta);
    if (n >= sizeof(out->name))
        n = sizeof(out->name) - 1;
    memcpy(out->name, RTA_DATA(rta), n);
    out->name[n] = '\0';
}

/* 1 if the message became an event in *out, 0 if it is not one of ours. */
static int decode_link(const struct nlmsghdr *h, uint32_t want, ft_device_event *out)
{
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
        return 0;
    const struct ifinfomsg *ifi = NLMSG_DATA(h);
    if (want && (uint32_t)ifi->ifi_index != want)
        return 0;
    memset(out, 0, sizeof(*out));
    out->kind = h->nlmsg_type == RTM_DELLINK ? FT_EV_LINK_REMOVED : FT_EV_LINK;
    out->ifindex = (uint32_t)ifi->ifi_index;
    out->flags = ifi->ifi_flags;
    int left = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
    for (const struct rtattr *rta = IFLA_RTA(ifi); RTA_OK(rta, left); rta = RTA_NEXT(rta, left)) {
        if (rta->rta_type == IFLA_MTU && RTA_PAYLOAD(rta) >= sizeof(uint32_t))
            memcpy(&out->mtu, RTA_DATA(rta), sizeof(uint32_t));
        else if (rta->rta_type == IFLA_IFNAME)
            copy_name(out, rta);
    }
    return 1;
}

static int decode_addr(const struct nlmsghdr *h, uint32_t want, ft_device_event *out)
{
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifaddrmsg)))
        return 0;
    const struct ifaddrmsg *ifa = NLMSG_DATA(h);
    if (want && ifa->ifa_index != want)
        return 0;
    size_t size = ifa->ifa_family == AF_INET ? 4 : ifa->ifa_family == AF_INET6 ? 16 : 0;
    if (size == 0)
        return 0;
    memset(out, 0, sizeof(*out));
    out->kind = h->nlmsg_type == RTM_DELADDR ? FT_EV_ADDR_REMOVED : FT_EV_ADDR_ADDED;
    out->ifindex = ifa->ifa_index;
    out->addr.family = size == 4 ? 4 : 6;
    out->addr.prefix = ifa->ifa_prefixlen;
    int have = 0;
    int left = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifa)));
    for (const struct rtattr *rta = IFA_RTA(ifa); RTA_OK(rta, left); rta = RTA_NEXT(rta, left)) {
        if (RTA_PAYLOAD(rta) < size)
            continue;
        /* IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on point-to-point links. */
        if (rta->rta_type == IFA_LOCAL || (rta->rta_type == IFA_ADDRESS && !have)) {
            memcpy(out->addr.bytes, RTA_DATA(rta), size);
            have = 1 + (rta->rta_type == IFA_LOCAL);
        }
    }
    return have != 0;
}

int ft_events_decode(const unsigned char *buf, size_t len, size_t *pos, uint32_t ifindex, ft_device_event *out,
                     int max)
{
    int n = 0;
    while (n < max && *pos < len) {
        const struct nlmsghdr *h = (const struct nlmsghdr *)(buf + *pos);
        size_t left = len - *pos;
        if (left < sizeof(*h) || (*pos & (NLMSG_ALIGNTO - 1)) || !NLMSG_OK(h, left)) {
            *pos = len;  /* a truncated or malformed tail: nothing more can be read from this datagram */
            break;
        }
        size_t step = NLMSG_ALIGN(h->nlmsg_len);
        *pos += step < left ? step : left;
        switch (h->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK:
            n += decode_link(h, ifindex, &out[n]);
            break;
        case RTM_NEWADDR:
        case RTM_DELADDR:
            n += decode_addr(h, ifindex, &out[n]);
            break;
        default:
            break;
        }
    }
    return n;
}

int ft_events_read(ft_events *ev, ft_device_event *out, int max, ft_err *e)
{
    int n = 0;
    if (max <= 0)
        return ft_fail(e, FT_EINVAL, EINVAL, "room for at least one event is needed, got %d", max);
    if (atomic_load(&ev->shut))
        return ft_fail(e, FT_ECLOSED, EBADF, "the event socket is shut down");
    while (n < max) {
        if (ev->pos >= ev->len) {
            ssize_t got = recv(ev->fd, ev->buf, sizeof(ev->buf), MSG_DONTWAIT);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    break;
                if (errno == ENOBUFS) {
                    ev->overflows++;
                    memset(&out[n], 0, sizeof(out[n]));
                    out[n].kind = FT_EV_OVERFLOW;
                    out[n].ifindex = ev->ifindex;
                    n++;
                    continue;
                }
                if (n > 0)
                    break;  /* the failure shows again on the next call */
                return ft_fail_os(e, errno, "reading device events failed");
            }
            ev->len = (size_t)got;
            ev->pos = 0;
        }
        n += ft_events_decode(ev->buf, ev->len, &ev->pos, ev->ifindex, out + n, max - n);
    }
    return n > 0 ? n : FT_EAGAIN;
}

#elif !defined(_WIN32) /* neither Linux nor Windows (events/ft_events_win.c) */

#define NO_EVENTS "device events come from rtnetlink on Linux and the IP Helper API on Windows; this system has neither"

ft_events *ft_events_open(uint32_t ifindex, ft_err *e)
{
    (void)ifindex;
    ft_fail(e, FT_EUNSUPPORTED, ENOSYS, NO_EVENTS);
    return NULL;
}

ft_events *ft_events_open_luid(uint64_t luid, ft_err *e)
{
    (void)luid;
    ft_fail(e, FT_EUNSUPPORTED, ENOSYS, NO_EVENTS);
    return NULL;
}

int ft_events_wait(ft_events *ev, int timeout_ms, ft_err *e)
{
    (void)ev, (void)timeout_ms;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, NO_EVENTS);
}

void ft_events_shutdown(ft_events *ev) { (void)ev; }

uint64_t ft_events_dropped(ft_events *ev)
{
    (void)ev;
    return 0;
}

int ft_events_test_notify(ft_events *ev, int what, int type, uint64_t luid, uint32_t ifindex, const ft_addr *a,
                          uint32_t mtu, int connected, ft_err *e)
{
    (void)ev, (void)what, (void)type, (void)luid, (void)ifindex, (void)a, (void)mtu, (void)connected;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, NO_EVENTS);
}

int ft_events_fd(const ft_events *ev)
{
    (void)ev;
    return -1;
}

int ft_events_read(ft_events *ev, ft_device_event *out, int max, ft_err *e)
{
    (void)ev;
    (void)out;
    (void)max;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, NO_EVENTS);
}

void ft_events_close(ft_events *ev) { (void)ev; }

int ft_events_decode(const unsigned char *buf, size_t len, size_t *pos, uint32_t ifindex, ft_device_event *out,
                     int max)
{
    (void)buf;
    (void)ifindex;
    (void)out;
    (void)max;
    *pos = len;
    return 0;
}

#endif
