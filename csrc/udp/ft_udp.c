/* udp/ft_udp.c - a UDP socket as a batch endpoint.
 *
 * Linux: receive with recvmmsg into a staging area owned by the endpoint, then datagrams are copied into the
 * caller's batch as room allows (a coalesced UDP_GRO read is split there using the segment size of its control
 * message). Send with sendmmsg straight from the caller's packets (iovecs, no copy); a run of equal-sized
 * datagrams to one destination goes out as one message with UDP_SEGMENT (the last may be shorter). Both
 * offloads are probed at open and given up per feature when the kernel refuses them.
 *
 * Windows: the per-datagram fallback, recvfrom/sendto in C straight into and out of the batch, with the socket
 * in event-select mode so that the reader waits on its event together with its stop event. (USO/URO, the
 * Windows segmentation offloads, are not used yet.)
 *
 * Everywhere: every datagram not delivered is counted. */
#ifdef __linux__
#define _GNU_SOURCE
#endif
#include "udp/ft_udp.h" /* elsewhere: only its stubs, so that every compiler checks them */
#include "udp/ft_udp_train.h"
#if defined(__linux__) || defined(_WIN32)

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
typedef SOCKET ft_sock;
typedef int socklen_t_;
#define sock_error() WSAGetLastError()
#else
#include <netinet/in.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
typedef int ft_sock;
typedef socklen_t socklen_t_;
#define sock_error() errno
#endif

#ifdef __linux__
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define STAGE_BYTES (1u << 20)   /* what one recvmmsg may fill */
#define RX_MAX_MSGS 64u
#define GRO_SLOT 65536u          /* a coalesced read is at most 64 KiB */
#define RX_CTRL 64u              /* room for the UDP_GRO control message (and a stray one) */
#define TX_MAX_MSGS 64u
#define TX_MAX_IOV 1024u         /* UIO_MAXIOV: iovecs of one sendmmsg call, over all its messages */
#define TX_CTRL CMSG_SPACE(sizeof(uint16_t))
#endif
#define ICMP_RETRIES 4           /* pending ICMP errors consumed per call before we give up on the call */
#define WIN_MAX_SENDS 64u        /* datagrams per send call of the Windows fallback (bounds the lock hold) */

typedef union udp_name {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} udp_name;

typedef struct udp_info_atomic {
    ft_atomic_u64 tx_calls, tx_messages, gso_messages, gso_fallbacks;
    ft_atomic_u64 rx_calls, rx_messages, gro_messages;
    ft_atomic_u64 rx_dropped_trunc, rx_icmp_errors, tx_unreachable;
} udp_info_atomic;

typedef struct udp_dev {
    ft_sock fd;
    int family;                  /* AF_INET or AF_INET6 */
    int connected;
    uint32_t max_payload;        /* the family's largest datagram */
    uint32_t max_datagram;       /* the largest we deliver */
    int gso_supported, gro_supported;
    ft_atomic_int gso;           /* cleared for good after EIO */
    ft_atomic_int gso_max_segment;
    int gro;
    udp_info_atomic info;
    ft_mutex *rx_lock;
    ft_mutex *tx_lock;
#ifdef _WIN32
    WSAEVENT ev;                 /* FD_READ | FD_WRITE of the socket (event-select mode) */
#else
    /* receive: messages staged by the last recvmmsg, handed out over as many receives as batches need */
    uint8_t *stage;
    uint32_t slot, nslots;
    struct mmsghdr *rx_msgs;
    struct iovec *rx_iov;
    udp_name *rx_names;
    uint8_t *rx_ctrl;            /* nslots * RX_CTRL */
    uint32_t got, cur, off;      /* messages staged, the one being delivered, bytes of it delivered */

    /* send: the message table one sendmmsg call is built in */
    struct mmsghdr tx_msgs[TX_MAX_MSGS];
    struct iovec tx_iov[TX_MAX_IOV];
    udp_name tx_names[TX_MAX_MSGS];
    uint32_t tx_segs[TX_MAX_MSGS];
    uint64_t tx_bytes[TX_MAX_MSGS];
    uint64_t tx_ctrl[TX_MAX_MSGS][(TX_CTRL + 7) / 8]; /* control messages, aligned as cmsghdr needs */
#endif
} udp_dev;

static udp_dev *U(ft_device *d) { return d->impl; }
static void udp_close(ft_device *d);
/* Ours: the only backend whose close is udp_close. */
static int is_udp(ft_device *d) { return d && d->ops && d->ops->close == udp_close; }

/* ---- addresses ------------------------------------------------------------------------------------------ */

static void endpoint_from_name(const udp_name *n, ft_endpoint *ep)
{
    memset(ep, 0, sizeof(*ep));
    if (n->sa.sa_family == AF_INET) {
        ep->family = 4;
        ep->port = ntohs(n->v4.sin_port);
        memcpy(ep->addr, &n->v4.sin_addr, 4);
    } else if (n->sa.sa_family == AF_INET6) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        ep->port = ntohs(n->v6.sin6_port);
        if (memcmp(&n->v6.sin6_addr, mapped, 12) == 0) { /* an IPv4 peer of a dual-stack socket */
            ep->family = 4;
            memcpy(ep->addr, (const uint8_t *)&n->v6.sin6_addr + 12, 4);
        } else {
            ep->family = 6;
            ep->scope_id = n->v6.sin6_scope_id;
            memcpy(ep->addr, &n->v6.sin6_addr, 16);
        }
    }
}

static socklen_t_ name_from_endpoint(int family, const ft_endpoint *ep, udp_name *n)
{
    memset(n, 0, sizeof(*n));
    if (family == AF_INET) {
        n->v4.sin_family = AF_INET;
        n->v4.sin_port = htons(ep->port);
        memcpy(&n->v4.sin_addr, ep->addr, 4);
        return (socklen_t_)sizeof(n->v4);
    }
    n->v6.sin6_family = AF_INET6;
    n->v6.sin6_port = htons(ep->port);
    if (ep->family == 4) {
        uint8_t *a = (uint8_t *)&n->v6.sin6_addr;
        a[10] = 0xff;
        a[11] = 0xff;
        memcpy(a + 12, ep->addr, 4);
    } else {
        n->v6.sin6_scope_id = ep->scope_id;
        memcpy(&n->v6.sin6_addr, ep->addr, 16);
    }
    return (socklen_t_)sizeof(n->v6);
}

#ifdef __linux__
static int same_endpoint(const ft_endpoint *a, const ft_endpoint *b)
{
    return a->family == b->family && a->port == b->port && a->scope_id == b->scope_id &&
           memcmp(a->addr, b->addr, a->family == 4 ? 4 : 16) == 0;
}
#endif

static int append(ft_batch *b, const uint8_t *p, uint32_t len, const udp_name *from)
{
    if (b->count >= b->max || b->cap - b->used < len)
        return 0;
    if (b->data + b->used != p)
        memcpy(b->data + b->used, p, len);
    if (b->addrs)
        endpoint_from_name(from, &b->addrs[b->count]);
    b->offsets[b->count] = (uint32_t)b->used;
    b->lengths[b->count] = len;
    b->count++;
    b->used += len;
    return 1;
}

/* ---- receive -------------------------------------------------------------------------------------------- */
#ifdef __linux__

/* Errors a UDP socket reports for an earlier datagram (from ICMP): the socket stays usable. */
static int is_icmp_error(int err)
{
    return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
           err == ENETDOWN || err == EPROTO || err == EMSGSIZE;
}

static int stage_read(ft_device *d, ft_err *e)
{
    udp_dev *u = U(d);
    for (int tries = 0;; tries++) {
        for (uint32_t i = 0; i < u->nslots; i++) {
            struct msghdr *h = &u->rx_msgs[i].msg_hdr;
            u->rx_iov[i].iov_base = u->stage + (size_t)i * u->slot;
            u->rx_iov[i].iov_len = u->slot;
            h->msg_name = &u->rx_names[i];
            h->msg_namelen = sizeof(udp_name);
            h->msg_iov = &u->rx_iov[i];
            h->msg_iovlen = 1;
            h->msg_control = u->gro ? u->rx_ctrl + (size_t)i * RX_CTRL : NULL;
            h->msg_controllen = u->gro ? RX_CTRL : 0;
            h->msg_flags = 0;
            u->rx_msgs[i].msg_len = 0;
        }
        /* MSG_TRUNC: each msg_len is the length the datagram (or train) had, also when its slot cut it short,
         * so that what was cut is counted datagram by datagram. */
        int r = recvmmsg(u->fd, u->rx_msgs, u->nslots, MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (r > 0) {
            u->got = (uint32_t)r;
            u->cur = 0;
            u->off = 0;
            ft_atomic_add64(&u->info.rx_calls, 1);
            ft_atomic_add64(&u->info.rx_messages, (uint64_t)r);
            return r;
        }
        if (r == 0)
            return FT_EAGAIN;
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return FT_EAGAIN;
        if (is_icmp_error(err) && tries < ICMP_RETRIES) {
            ft_atomic_add64(&u->info.rx_icmp_errors, 1);
            continue;
        }
        if (is_icmp_error(err))
            return FT_EAGAIN;
        if (err == EBADF || err == ENOTSOCK)
            return ft_fail(e, FT_EEOF, EPIPE, "UDP endpoint %s: its socket is gone", d->name);
        return ft_fail_os(e, err, "receiving on UDP endpoint %s failed", d->name);
    }
}

/* The coalesced segment size of staged message i, or 0 when it holds a single datagram. */
static uint32_t gro_segment(udp_dev *u, uint32_t i)
{
    struct msghdr *h = &u->rx_msgs[i].msg_hdr;
    if (!u->gro || h->msg_controllen == 0)
        return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int v;
            memcpy(&v, CMSG_DATA(c), sizeof(v));
            return v > 0 ? (uint32_t)v : 0;
        }
    }
    return 0;
}

static int udp_recv(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    (void)q;
    udp_dev *u = U(d);
    int n = 0, r = FT_OK;
    ft_mutex_lock(u->rx_lock);
    while (b->count < b->max) {
        if (u->cur >= u->got) {
            r = stage_read(d, e);
            if (r <= 0)
                break;
        }
        const uint8_t *p = u->stage + (size_t)u->cur * u->slot;
        const udp_name *from = &u->rx_names[u->cur];
        uint32_t full = u->rx_msgs[u->cur].msg_len;
        ft_udp_train t = {.full = full, .copied = full < u->slot ? full : u->slot, .seg = gro_segment(u, u->cur),
                          .max = u->max_datagram};
        if (full == 0) { /* an empty datagram is a datagram */
            if (!append(b, p, 0, from))
                break;
            n++;
            u->cur++;
            continue;
        }
        if (u->off == 0 && ft_udp_train_coalesced(&t))
            ft_atomic_add64(&u->info.gro_messages, 1);
        int room = 1;
        while (u->off < full) {
            uint32_t cut = ft_udp_train_cut(&t, u->off);
            if (cut > 0) { /* the slot was too small for the rest of the unit */
                ft_atomic_add64(&u->info.rx_dropped_trunc, cut);
                ft_atomic_add64(&d->stats.rx_dropped_oversize, cut);
                u->off = full;
                break;
            }
            int deliver;
            uint32_t piece = ft_udp_train_piece(&t, u->off, &deliver);
            if (!deliver) { /* larger than max_datagram: this one only, its shorter tail may fit */
                ft_atomic_add64(&u->info.rx_dropped_trunc, 1);
                ft_atomic_add64(&d->stats.rx_dropped_oversize, 1);
            } else if (!append(b, p + u->off, piece, from)) {
                room = 0;
                break;
            } else {
                n++;
            }
            u->off += piece;
        }
        if (!room)
            break;
        u->cur++;
        u->off = 0;
    }
    ft_mutex_unlock(u->rx_lock);
    if (n > 0)
        return n;
    return r < 0 ? r : FT_EAGAIN;
}
#else
/* Windows: one recvfrom per datagram, straight into the batch. WSAEMSGSIZE says the datagram was larger than
 * what we asked for (the rest is gone): dropped and counted. WSAECONNRESET is an ICMP port unreachable for an
 * earlier datagram. */
static int udp_recv(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    (void)q;
    udp_dev *u = U(d);
    int n = 0, icmp = 0, result = FT_EAGAIN;
    ft_mutex_lock(u->rx_lock);
    WSAResetEvent(u->ev); /* before trying: what arrives after the attempt sets it again */
    while (b->count < b->max && b->cap - b->used >= u->max_datagram) {
        udp_name from;
        int fl = (int)sizeof(from);
        int r = recvfrom(u->fd, (char *)b->data + b->used, (int)u->max_datagram, 0, &from.sa, &fl);
        if (r == SOCKET_ERROR) {
            int err = WSAGetLastError();
            if (err == WSAEWOULDBLOCK)
                break;
            if (err == WSAEMSGSIZE) {
                ft_atomic_add64(&u->info.rx_dropped_trunc, 1);
                ft_atomic_add64(&d->stats.rx_dropped_oversize, 1);
                continue;
            }
            if ((err == WSAECONNRESET || err == WSAENETRESET || err == WSAEHOSTUNREACH) && icmp++ < ICMP_RETRIES) {
                ft_atomic_add64(&u->info.rx_icmp_errors, 1);
                continue;
            }
            if (n > 0 || err == WSAECONNRESET || err == WSAENETRESET || err == WSAEHOSTUNREACH)
                break;
            if (err == WSAENOTSOCK || err == WSAESHUTDOWN)
                result = ft_fail(e, FT_EEOF, EPIPE, "UDP endpoint %s: its socket is gone", d->name);
            else
                result = ft_fail_os(e, err, "receiving on UDP endpoint %s failed", d->name);
            break;
        }
        ft_atomic_add64(&u->info.rx_calls, 1);
        ft_atomic_add64(&u->info.rx_messages, 1);
        append(b, b->data + b->used, (uint32_t)r, &from);
        n++;
    }
    ft_mutex_unlock(u->rx_lock);
    return n > 0 ? n : result;
}
#endif

/* ---- send ----------------------------------------------------------------------------------------------- */

static int udp_check(ft_device *d, const uint8_t *p, size_t len, ft_err *e)
{
    (void)p;
    udp_dev *u = U(d);
    if (len > u->max_payload)
        return ft_fail(e, FT_EPACKET, EMSGSIZE,
                       "datagram of %zu bytes is larger than the UDP maximum of %u bytes over IPv%d", len,
                       u->max_payload, u->family == AF_INET ? 4 : 6);
    return FT_OK;
}

static int check_endpoint(udp_dev *u, const ft_endpoint *ep, ft_err *e)
{
    if (ep->family != 4 && ep->family != 6)
        return ft_fail(e, FT_EINVAL, EINVAL, "destination family must be 4 or 6, not %u", ep->family);
    if (ep->family == 6 && u->family == AF_INET)
        return ft_fail(e, FT_EINVAL, EAFNOSUPPORT, "an IPv4 UDP endpoint cannot send to an IPv6 destination");
    if (ep->port == 0)
        return ft_fail(e, FT_EINVAL, EINVAL, "destination port 0 is not allowed; 1..65535 are");
    return FT_OK;
}

#ifdef __linux__
/* Builds the messages of one sendmmsg call from the first datagrams of pkts; returns how many messages. */
static uint32_t build_messages(udp_dev *u, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                               uint32_t offset)
{
    int gso = ft_atomic_load(&u->gso);
    uint32_t gso_max = (uint32_t)ft_atomic_load(&u->gso_max_segment);
    uint32_t i = 0, m = 0, v = 0;
    while (i < n && m < TX_MAX_MSGS && v < TX_MAX_IOV) {
        const ft_endpoint *dst = !to ? NULL : to_count == 1 ? to : to + offset + i;
        uint32_t seg = (uint32_t)pkts[i].len, k = 1;
        uint64_t total = seg;
        if (gso && seg > 0 && seg <= gso_max) {
            while (i + k < n && k < FT_UDP_GSO_MAX_SEGMENTS && v + k < TX_MAX_IOV) {
                uint32_t len = (uint32_t)pkts[i + k].len;
                if (len == 0 || len > seg || total + len > u->max_payload)
                    break;
                if (to_count > 1 && !same_endpoint(dst, to + offset + i + k))
                    break;
                total += len;
                k++;
                if (len < seg) /* a shorter datagram can only end a run */
                    break;
            }
        }
        struct msghdr *h = &u->tx_msgs[m].msg_hdr;
        memset(h, 0, sizeof(*h));
        if (dst) {
            h->msg_name = &u->tx_names[m];
            h->msg_namelen = name_from_endpoint(u->family, dst, &u->tx_names[m]);
        }
        for (uint32_t j = 0; j < k; j++) {
            u->tx_iov[v + j].iov_base = (void *)pkts[i + j].data;
            u->tx_iov[v + j].iov_len = pkts[i + j].len;
        }
        h->msg_iov = &u->tx_iov[v];
        h->msg_iovlen = k;
        if (k > 1) {
            h->msg_control = u->tx_ctrl[m];
            h->msg_controllen = TX_CTRL;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t s = (uint16_t)seg;
            memcpy(CMSG_DATA(c), &s, sizeof(s));
        }
        u->tx_segs[m] = k;
        u->tx_bytes[m] = total;
        v += k;
        i += k;
        m++;
    }
    return m;
}

/* One sendmmsg call's worth of the given datagrams. Returns how many datagrams were consumed (sent, or dropped
 * and counted as unreachable) with what was sent in *sent and *bytes; FT_EFULL if the socket had no room for the
 * first message; or a failure. */
static int send_some(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                     uint32_t offset, uint32_t *sent, uint64_t *bytes, ft_err *e)
{
    udp_dev *u = U(d);
    int icmp = 0;
    *sent = 0;
    *bytes = 0;
    ft_mutex_lock(u->tx_lock);
    int result;
    for (;;) {
        uint32_t m = build_messages(u, pkts, n, to, to_count, offset);
        int r = sendmmsg(u->fd, u->tx_msgs, m, MSG_DONTWAIT);
        if (r > 0) {
            uint32_t segs = 0;
            uint64_t b = 0;
            for (int j = 0; j < r; j++) {
                segs += u->tx_segs[j];
                b += u->tx_bytes[j];
                if (u->tx_segs[j] > 1)
                    ft_atomic_add64(&u->info.gso_messages, 1);
            }
            ft_atomic_add64(&u->info.tx_calls, 1);
            ft_atomic_add64(&u->info.tx_messages, (uint64_t)r);
            *sent = segs;
            *bytes = b;
            result = (int)segs;
            break;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
            result = FT_EFULL;
            break;
        }
        if (u->tx_segs[0] > 1 && (err == EIO || err == EINVAL || err == EMSGSIZE)) {
            /* The kernel would not segment this message: EIO means the route cannot (checksum offload
             * missing, IPsec) and is given up for good; EINVAL means a segment does not fit the path MTU. */
            ft_atomic_add64(&u->info.gso_fallbacks, 1);
            if (err == EIO)
                ft_atomic_store(&u->gso, 0);
            else
                ft_atomic_store(&u->gso_max_segment, (int)pkts[0].len - 1);
            continue;
        }
        if (err == ECONNREFUSED && icmp++ < ICMP_RETRIES) {
            /* an ICMP error for an earlier datagram; this one was not sent: try again */
            ft_atomic_add64(&u->info.rx_icmp_errors, 1);
            continue;
        }
        if (is_icmp_error(err) || err == EPERM || err == EACCES || err == EADDRNOTAVAIL || err == ENETUNREACH) {
            /* this message cannot go (no route, refused by a firewall, peer unreachable): drop it, counted */
            ft_atomic_add64(&u->info.tx_unreachable, u->tx_segs[0]);
            result = (int)u->tx_segs[0];
            break;
        }
        if (err == EBADF || err == ENOTSOCK) {
            result = ft_fail(e, FT_EEOF, EPIPE, "UDP endpoint %s: its socket is gone", d->name);
            break;
        }
        if (err == EDESTADDRREQ) {
            result = ft_fail(e, FT_EINVAL, EDESTADDRREQ,
                             "UDP endpoint %s is not connected: give a destination address", d->name);
            break;
        }
        result = ft_fail_os(e, err, "sending on UDP endpoint %s failed", d->name);
        break;
    }
    ft_mutex_unlock(u->tx_lock);
    return result;
}
#else
/* Windows: one sendto per datagram (at most WIN_MAX_SENDS per call); same return convention. */
static int send_some(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                     uint32_t offset, uint32_t *sent, uint64_t *bytes, ft_err *e)
{
    udp_dev *u = U(d);
    uint32_t i = 0;
    int icmp = 0, result = 0;
    *sent = 0;
    *bytes = 0;
    ft_mutex_lock(u->tx_lock);
    while (i < n && i < WIN_MAX_SENDS) {
        const ft_endpoint *dst = !to ? NULL : to_count == 1 ? to : to + offset + i;
        udp_name name;
        int nl = dst ? name_from_endpoint(u->family, dst, &name) : 0;
        int r = sendto(u->fd, (const char *)pkts[i].data, (int)pkts[i].len, 0, dst ? &name.sa : NULL, nl);
        ft_atomic_add64(&u->info.tx_calls, 1);
        if (r != SOCKET_ERROR) {
            ft_atomic_add64(&u->info.tx_messages, 1);
            (*sent)++;
            *bytes += pkts[i].len;
            i++;
            continue;
        }
        int err = WSAGetLastError();
        if (err == WSAEWOULDBLOCK || err == WSAENOBUFS) {
            result = i > 0 ? 0 : FT_EFULL;
            break;
        }
        if (err == WSAECONNRESET && icmp++ < ICMP_RETRIES) {
            ft_atomic_add64(&u->info.rx_icmp_errors, 1);
            continue;
        }
        if (err == WSAECONNRESET || err == WSAEHOSTUNREACH || err == WSAENETUNREACH || err == WSAEADDRNOTAVAIL ||
            err == WSAEACCES || err == WSAENETDOWN) {
            ft_atomic_add64(&u->info.tx_unreachable, 1);
            i++;
            continue;
        }
        if (i > 0)
            break;
        result = err == WSAENOTSOCK ? ft_fail(e, FT_EEOF, EPIPE, "UDP endpoint %s: its socket is gone", d->name)
                                    : ft_fail_os(e, err, "sending on UDP endpoint %s failed", d->name);
        break;
    }
    ft_mutex_unlock(u->tx_lock);
    if (result < 0)
        return result;
    return i > 0 ? (int)i : FT_EFULL;
}
#endif

/* The backend's send hook (ft_device_send, connected endpoints): datagrams dropped as unreachable count as
 * accepted there, and in tx_unreachable. */
static int udp_send(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_err *e)
{
    (void)q;
    uint32_t sent;
    uint64_t bytes;
    if (!U(d)->connected)
        return ft_fail(e, FT_EINVAL, EDESTADDRREQ,
                       "UDP endpoint %s is not connected: give a destination address", d->name);
    return send_some(d, pkts, n, NULL, 0, 0, &sent, &bytes, e);
}

/* ft_device_send_loop's step for ft_udp_send: the destinations ride in ctx. */
typedef struct udp_send_ctx {
    const ft_endpoint *to;
    uint32_t to_count;
} udp_send_ctx;

static int udp_step(ft_device *d, int q, void *ctx, const ft_pkt *pkts, uint32_t done, uint32_t n, uint32_t *sent,
                    uint64_t *bytes, ft_err *e)
{
    (void)q;
    const udp_send_ctx *c = ctx;
    return send_some(d, pkts + done, n - done, c->to, c->to_count, done, sent, bytes, e);
}

int ft_udp_send(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                int policy, int timeout_ms, ft_err *e)
{
    if (!is_udp(d))
        return ft_fail(e, FT_EINVAL, EINVAL, "not a UDP endpoint");
    udp_dev *u = U(d);
    if (!to)
        to_count = 0;
    if (to && to_count != 1 && to_count != n)
        return ft_fail(e, FT_EINVAL, EINVAL, "%u destinations for %u datagrams; give one, or one per datagram",
                       to_count, n);
    if (!to && !u->connected)
        return ft_fail(e, FT_EINVAL, EDESTADDRREQ,
                       "UDP endpoint %s is not connected: give a destination address", d->name);
    for (uint32_t i = 0; i < to_count; i++)
        if (check_endpoint(u, &to[i], e) != FT_OK)
            return ft_device_reject(d, i, n, "datagram", e);
    for (uint32_t i = 0; i < n; i++)
        if (udp_check(d, pkts[i].data, pkts[i].len, e) != FT_OK)
            return ft_device_reject(d, i, n, "datagram", e);
    udp_send_ctx ctx = {to, to_count};
    return ft_device_send_loop(d, 0, pkts, n, udp_step, &ctx, policy, timeout_ms, "the socket's send buffer is full",
                               e);
}

/* ---- the rest of the backend ---------------------------------------------------------------------------- */

static int udp_wait_handles(ft_device *d, int q, int dir, ft_handle *out, int max, int *poll_out)
{
    if ((q != 0 && q != FT_ALL_QUEUES) || max < 1)
        return -1;
#ifdef _WIN32
    (void)dir;
    *poll_out = 0; /* the socket's event object is signalled */
    out[0] = U(d)->ev;
#else
    *poll_out = dir == FT_WAIT_WRITE; /* the socket is writable when its send buffer has room */
    out[0] = U(d)->fd;
#endif
    return 1;
}

/* The device and the endpoint in one allocation (ft_device_free frees it): the endpoint's counters stay
 * readable after close, like the device's. */
typedef struct udp_block {
    ft_device d; /* first: free(&block->d) frees the block */
    udp_dev u;
} udp_block;

/* Releases the OS resources and buffers (not the block). */
static void release_udp(udp_dev *u)
{
    ft_mutex_destroy(u->rx_lock);
    ft_mutex_destroy(u->tx_lock);
    u->rx_lock = u->tx_lock = NULL;
#ifdef _WIN32
    if (u->fd != INVALID_SOCKET)
        closesocket(u->fd);
    if (u->ev != WSA_INVALID_EVENT)
        WSACloseEvent(u->ev);
    u->fd = INVALID_SOCKET;
    u->ev = WSA_INVALID_EVENT;
#else
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    free(u->stage);
    free(u->rx_msgs);
    free(u->rx_iov);
    free(u->rx_names);
    free(u->rx_ctrl);
    u->stage = NULL;
    u->rx_msgs = NULL;
    u->rx_iov = NULL;
    u->rx_names = NULL;
    u->rx_ctrl = NULL;
#endif
}

static void udp_close(ft_device *d) { release_udp(U(d)); }

static int udp_get_mtu(ft_device *d, uint32_t *mtu, ft_err *e)
{
    (void)e;
    *mtu = U(d)->max_payload;
    return FT_OK;
}

static const ft_backend_ops udp_ops = {
    .name = "udp",
    .recv = udp_recv,
    .send = udp_send,
    .wait_handles = udp_wait_handles,
    .close = udp_close,
    .get_mtu = udp_get_mtu,
    .check = udp_check,
};

/* ---- open ----------------------------------------------------------------------------------------------- */

static void describe(ft_sock fd, int family, char *out, size_t len)
{
    udp_name n;
    socklen_t_ nl = (socklen_t_)sizeof(n);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(fd, &n.sa, &nl) == 0) {
        if (family == AF_INET) {
            inet_ntop(AF_INET, &n.v4.sin_addr, host, sizeof(host));
            port = ntohs(n.v4.sin_port);
        } else {
            inet_ntop(AF_INET6, &n.v6.sin6_addr, host, sizeof(host));
            port = ntohs(n.v6.sin6_port);
        }
    }
    snprintf(out, len, family == AF_INET ? "udp:%s:%u" : "udp:[%s]:%u", host, port);
}

/* The socket's family if it is a UDP socket, else 0. */
static int udp_family(ft_sock fd)
{
    int type = 0;
    socklen_t_ l = (socklen_t_)sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, (char *)&type, &l) != 0 || type != SOCK_DGRAM)
        return 0;
#ifdef _WIN32
    WSAPROTOCOL_INFOW info;
    l = (socklen_t_)sizeof(info);
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &l) != 0 || info.iProtocol != IPPROTO_UDP)
        return 0;
    int domain = info.iAddressFamily;
#else
    int domain = 0, proto = 0;
    l = sizeof(int);
    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l);
    l = sizeof(int);
    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l);
    if (proto != IPPROTO_UDP)
        return 0;
#endif
    return domain == AF_INET || domain == AF_INET6 ? domain : 0;
}

/* Offload probes and buffers; FT_OK or FT_ENOMEM / FT_ESYS. */
static int setup_platform(udp_dev *u, ft_sock fd, const ft_udp_params *p, ft_err *e)
{
#ifdef _WIN32
    (void)p;
    u->gso_supported = u->gro_supported = 0; /* USO/URO: not used yet */
    u->ev = WSACreateEvent();
    if (u->ev == WSA_INVALID_EVENT)
        return ft_fail_os(e, WSAGetLastError(), "could not create the socket's event");
    if (WSAEventSelect(fd, u->ev, FD_READ | FD_WRITE) != 0) /* also makes the socket non-blocking */
        return ft_fail_os(e, WSAGetLastError(), "could not attach an event to the socket");
    return FT_OK;
#else
    int v = 0;
    socklen_t l = sizeof(v);
    u->gso_supported = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &v, &l) == 0;
    ft_atomic_store(&u->gso, p->gso && u->gso_supported);
    int on = p->gro ? 1 : 0;
    u->gro_supported = setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on)) == 0;
    u->gro = p->gro && u->gro_supported;
    u->slot = u->gro ? GRO_SLOT : u->max_datagram;
    u->nslots = STAGE_BYTES / u->slot;
    if (u->nslots > RX_MAX_MSGS)
        u->nslots = RX_MAX_MSGS;
    if (u->nslots < 1)
        u->nslots = 1;
    u->stage = malloc((size_t)u->nslots * u->slot);
    u->rx_msgs = calloc(u->nslots, sizeof(struct mmsghdr));
    u->rx_iov = calloc(u->nslots, sizeof(struct iovec));
    u->rx_names = calloc(u->nslots, sizeof(udp_name));
    u->rx_ctrl = calloc(u->nslots, RX_CTRL);
    if (!u->stage || !u->rx_msgs || !u->rx_iov || !u->rx_names || !u->rx_ctrl)
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a UDP endpoint's buffers");
    return FT_OK;
#endif
}

int ft_udp_open(const ft_udp_params *p, ft_device **out, ft_err *e)
{
    ft_sock fd = (ft_sock)p->fd;
    int domain = udp_family(fd);
    if (!domain)
        return ft_fail(e, FT_EINVAL, EINVAL, "fd %d is not a UDP socket (AF_INET or AF_INET6, SOCK_DGRAM)", p->fd);
    uint32_t max_payload = domain == AF_INET ? FT_UDP_MAX_PAYLOAD4 : FT_UDP_MAX_PAYLOAD6;
    uint32_t max_datagram = p->max_datagram ? p->max_datagram : max_payload;
    if (max_datagram > max_payload)
        return ft_fail(e, FT_EINVAL, EINVAL, "max_datagram %u is out of range; allowed: 1..%u", p->max_datagram,
                       max_payload);

    udp_block *block = calloc(1, sizeof(*block));
    if (!block)
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a UDP endpoint");
    ft_device *d = &block->d;
    udp_dev *u = &block->u;
#ifdef _WIN32
    u->fd = INVALID_SOCKET;
    u->ev = WSA_INVALID_EVENT;
#else
    u->fd = -1;
#endif
    u->family = domain;
    u->max_payload = max_payload;
    u->max_datagram = max_datagram;
    udp_name peer;
    socklen_t_ pl = (socklen_t_)sizeof(peer);
    u->connected = getpeername(fd, &peer.sa, &pl) == 0;
    ft_atomic_store(&u->gso_max_segment, (int)max_payload);
    u->rx_lock = ft_mutex_create();
    u->tx_lock = ft_mutex_create();
    int r = !u->rx_lock || !u->tx_lock ? ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a UDP endpoint")
                                       : setup_platform(u, fd, p, e);
    if (r == FT_OK) {
        d->ops = &udp_ops;
        d->impl = u;
        d->nqueues = 1;
        d->max_packet = max_datagram;
        describe(fd, domain, d->name, sizeof(d->name));
        r = ft_device_init(d, e);
    }
    if (r != FT_OK) {
        release_udp(u); /* the fd is not u's yet: it stays the caller's */
        free(block);
        return r;
    }
    ft_atomic_store(&d->mtu, (int)max_payload);
    u->fd = fd; /* owned from here on: closed with the device */
    *out = d;
    return FT_OK;
}

int ft_udp_fd(ft_device *d)
{
    if (!is_udp(d) || ft_atomic_load(&d->closed))
        return -1;
    return (int)U(d)->fd;
}

int ft_udp_get_info(ft_device *d, ft_udp_info *o)
{
    if (!is_udp(d))
        return FT_EINVAL;
    udp_dev *u = U(d);
    memset(o, 0, sizeof(*o));
    o->family = u->family == AF_INET ? 4 : 6;
    o->connected = u->connected;
    o->gso_supported = u->gso_supported;
    o->gro_supported = u->gro_supported;
    o->gso = ft_atomic_load(&u->gso);
    o->gro = u->gro;
    o->max_datagram = u->max_datagram;
    o->gso_max_segment = (uint32_t)ft_atomic_load(&u->gso_max_segment);
    o->tx_calls = ft_atomic_load64(&u->info.tx_calls);
    o->tx_messages = ft_atomic_load64(&u->info.tx_messages);
    o->gso_messages = ft_atomic_load64(&u->info.gso_messages);
    o->gso_fallbacks = ft_atomic_load64(&u->info.gso_fallbacks);
    o->rx_calls = ft_atomic_load64(&u->info.rx_calls);
    o->rx_messages = ft_atomic_load64(&u->info.rx_messages);
    o->gro_messages = ft_atomic_load64(&u->info.gro_messages);
    o->rx_dropped_trunc = ft_atomic_load64(&u->info.rx_dropped_trunc);
    o->rx_icmp_errors = ft_atomic_load64(&u->info.rx_icmp_errors);
    o->tx_unreachable = ft_atomic_load64(&u->info.tx_unreachable);
    return FT_OK;
}
#endif
