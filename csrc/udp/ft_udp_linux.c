/* udp/ft_udp_linux.c - the UDP endpoint's system calls on Linux. Receive with recvmmsg into a staging area owned
 * by the endpoint, then datagrams are copied into the caller's batch as room allows (a coalesced UDP_GRO read is
 * split there by the segment size of its control message, udp/ft_udp_train.h). Send with sendmmsg straight from
 * the caller's packets (iovecs, no copy); a run of equal-sized datagrams to one destination goes out as one
 * message with UDP_SEGMENT (the last may be shorter; udp/ft_udp_runs.h). Both offloads are probed at open and given up per feature
 * when the kernel refuses them. */
#ifdef __linux__
#define _GNU_SOURCE
#include "udp/ft_udp_internal.h"
#include "udp/ft_udp_runs.h"
#include "udp/ft_udp_train.h"

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

void ft_udp_os_init(udp_dev *u) { (void)u; }

/* ---- receive -------------------------------------------------------------------------------------------- */

/* Errors a UDP socket reports for an earlier datagram (from ICMP): the socket stays usable. */
static int is_icmp_error(int err)
{
    return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
           err == ENETDOWN || err == EPROTO || err == EMSGSIZE;
}

static int stage_read(ft_device *d, ft_err *e)
{
    udp_dev *u = U(d);
    int gro = ft_atomic_load(&u->gro);
    for (int tries = 0;; tries++) {
        for (uint32_t i = 0; i < u->os.nslots; i++) {
            struct msghdr *h = &u->os.rx_msgs[i].msg_hdr;
            u->os.rx_iov[i].iov_base = u->os.stage + (size_t)i * u->os.slot;
            u->os.rx_iov[i].iov_len = u->os.slot;
            h->msg_name = &u->os.rx_names[i];
            h->msg_namelen = sizeof(udp_name);
            h->msg_iov = &u->os.rx_iov[i];
            h->msg_iovlen = 1;
            h->msg_control = gro ? u->os.rx_ctrl + (size_t)i * RX_CTRL : NULL;
            h->msg_controllen = gro ? RX_CTRL : 0;
            h->msg_flags = 0;
            u->os.rx_msgs[i].msg_len = 0;
        }
        /* MSG_TRUNC: each msg_len is the length the datagram (or train) had, also when its slot cut it short,
         * so that what was cut is counted datagram by datagram. */
        int r = recvmmsg(u->fd, u->os.rx_msgs, u->os.nslots, MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (r > 0) {
            u->os.got = (uint32_t)r;
            u->os.cur = 0;
            u->os.off = 0;
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
    struct msghdr *h = &u->os.rx_msgs[i].msg_hdr;
    if (!ft_atomic_load(&u->gro) || h->msg_controllen == 0)
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

int ft_udp_os_recv(ft_device *d, ft_batch *b, ft_err *e)
{
    udp_dev *u = U(d);
    int n = 0, r = FT_OK;
    ft_mutex_lock(u->rx_lock);
    while (b->count < b->max) {
        if (u->os.cur >= u->os.got) {
            r = stage_read(d, e);
            if (r <= 0)
                break;
        }
        const uint8_t *p = u->os.stage + (size_t)u->os.cur * u->os.slot;
        const udp_name *from = &u->os.rx_names[u->os.cur];
        uint32_t full = u->os.rx_msgs[u->os.cur].msg_len;
        ft_udp_train t = {.full = full, .copied = full < u->os.slot ? full : u->os.slot, .seg = gro_segment(u, u->os.cur),
                          .max = u->max_datagram};
        if (full == 0) { /* an empty datagram is a datagram */
            if (!ft_udp_append(b, p, 0, from))
                break;
            n++;
            u->os.cur++;
            continue;
        }
        if (u->os.off == 0 && ft_udp_train_coalesced(&t))
            ft_atomic_add64(&u->info.gro_messages, 1);
        int room = 1;
        while (u->os.off < full) {
            uint32_t cut = ft_udp_train_cut(&t, u->os.off);
            if (cut > 0) { /* the slot was too small for the rest of the unit */
                ft_atomic_add64(&u->info.rx_dropped_trunc, cut);
                ft_atomic_add64(&d->stats.rx_dropped_oversize, cut);
                u->os.off = full;
                break;
            }
            int deliver;
            uint32_t piece = ft_udp_train_piece(&t, u->os.off, &deliver);
            if (!deliver) { /* larger than max_datagram: this one only, its shorter tail may fit */
                ft_atomic_add64(&u->info.rx_dropped_trunc, 1);
                ft_atomic_add64(&d->stats.rx_dropped_oversize, 1);
            } else if (!ft_udp_append(b, p + u->os.off, piece, from)) {
                room = 0;
                break;
            } else {
                n++;
            }
            u->os.off += piece;
        }
        if (!room)
            break;
        u->os.cur++;
        u->os.off = 0;
    }
    ft_mutex_unlock(u->rx_lock);
    if (n > 0)
        return n;
    return r < 0 ? r : FT_EAGAIN;
}
/* ---- send ----------------------------------------------------------------------------------------------- */

/* Builds the messages of one sendmmsg call from the first datagrams of pkts; returns how many messages. */
static uint32_t build_messages(udp_dev *u, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                               uint32_t offset)
{
    int gso = ft_atomic_load(&u->gso);
    ft_udp_run_limits lim = {.max_segment = (uint32_t)ft_atomic_load(&u->gso_max_segment),
                             .max_total = u->max_payload, .short_tail = 1};
    uint32_t i = 0, m = 0, v = 0;
    while (i < n && m < TX_MAX_MSGS && v < TX_MAX_IOV) {
        const ft_endpoint *dst = !to ? NULL : to_count == 1 ? to : to + offset + i;
        uint32_t iov_room = TX_MAX_IOV - v;
        lim.max_segments = !gso ? 1 : iov_room < FT_UDP_GSO_MAX_SEGMENTS ? iov_room : FT_UDP_GSO_MAX_SEGMENTS;
        uint64_t total;
        uint32_t k = ft_udp_run(pkts + i, n - i, to_count > 1 ? dst : NULL, &lim, &total);
        uint32_t seg = (uint32_t)pkts[i].len;
        struct msghdr *h = &u->os.tx_msgs[m].msg_hdr;
        memset(h, 0, sizeof(*h));
        if (dst) {
            h->msg_name = &u->os.tx_names[m];
            h->msg_namelen = ft_udp_name_from_endpoint(u->family, dst, &u->os.tx_names[m]);
        }
        for (uint32_t j = 0; j < k; j++) {
            u->os.tx_iov[v + j].iov_base = (void *)pkts[i + j].data;
            u->os.tx_iov[v + j].iov_len = pkts[i + j].len;
        }
        h->msg_iov = &u->os.tx_iov[v];
        h->msg_iovlen = k;
        if (k > 1) {
            h->msg_control = u->os.tx_ctrl[m];
            h->msg_controllen = TX_CTRL;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t s = (uint16_t)seg;
            memcpy(CMSG_DATA(c), &s, sizeof(s));
        }
        u->os.tx_segs[m] = k;
        u->os.tx_bytes[m] = total;
        v += k;
        i += k;
        m++;
    }
    return m;
}

/* One sendmmsg call's worth of the given datagrams. Returns how many datagrams were consumed (sent, or dropped
 * and counted as unreachable) with what was sent in *sent and *bytes; FT_EFULL if the socket had no room for the
 * first message; or a failure. */
int ft_udp_os_send_some(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
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
        int r = sendmmsg(u->fd, u->os.tx_msgs, m, MSG_DONTWAIT);
        if (r > 0) {
            uint32_t segs = 0;
            uint64_t b = 0;
            for (int j = 0; j < r; j++) {
                segs += u->os.tx_segs[j];
                b += u->os.tx_bytes[j];
                if (u->os.tx_segs[j] > 1)
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
        if (u->os.tx_segs[0] > 1 && (err == EIO || err == EINVAL || err == EMSGSIZE)) {
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
            ft_atomic_add64(&u->info.tx_unreachable, u->os.tx_segs[0]);
            result = (int)u->os.tx_segs[0];
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

ft_handle ft_udp_os_wait_handle(udp_dev *u, int dir, int *poll_out)
{
    *poll_out = dir == FT_WAIT_WRITE; /* the socket is writable when its send buffer has room */
    return u->fd;
}

void ft_udp_os_release(udp_dev *u)
{
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    free(u->os.stage);
    free(u->os.rx_msgs);
    free(u->os.rx_iov);
    free(u->os.rx_names);
    free(u->os.rx_ctrl);
    u->os.stage = NULL;
    u->os.rx_msgs = NULL;
    u->os.rx_iov = NULL;
    u->os.rx_names = NULL;
    u->os.rx_ctrl = NULL;
}

int ft_udp_os_family(ft_sock fd)
{
    int type = 0;
    socklen_t_ l = (socklen_t_)sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, (char *)&type, &l) != 0 || type != SOCK_DGRAM)
        return 0;
    int domain = 0, proto = 0;
    l = sizeof(int);
    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l);
    l = sizeof(int);
    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l);
    if (proto != IPPROTO_UDP)
        return 0;
    return domain == AF_INET || domain == AF_INET6 ? domain : 0;
}

/* Asks for a socket buffer (root may exceed net.core.[rw]mem_max with the FORCE option) and returns the size the
 * kernel reports (twice what it grants for its bookkeeping, as Linux does). 0 asks for nothing. */
static uint32_t socket_buffer(ft_sock fd, int option, int force, uint32_t size)
{
    if (size != 0) {
        int v = (int)size;
        if (setsockopt(fd, SOL_SOCKET, force, &v, sizeof(v)) != 0)
            setsockopt(fd, SOL_SOCKET, option, &v, sizeof(v));
    }
    int got = 0;
    socklen_t l = sizeof(got);
    return getsockopt(fd, SOL_SOCKET, option, &got, &l) == 0 && got > 0 ? (uint32_t)got : 0;
}

int ft_udp_os_setup(udp_dev *u, ft_sock fd, const ft_udp_params *p, ft_err *e)
{
    u->rcvbuf = socket_buffer(fd, SO_RCVBUF, SO_RCVBUFFORCE, p->rcvbuf);
    u->sndbuf = socket_buffer(fd, SO_SNDBUF, SO_SNDBUFFORCE, p->sndbuf);
    int v = 0;
    socklen_t l = sizeof(v);
    u->gso_supported = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &v, &l) == 0;
    ft_atomic_store(&u->gso, p->gso && u->gso_supported);
    int on = p->gro ? 1 : 0;
    u->gro_supported = setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on)) == 0;
    ft_atomic_store(&u->gro, p->gro && u->gro_supported);
    u->os.slot = p->gro && u->gro_supported ? GRO_SLOT : u->max_datagram;
    u->os.nslots = STAGE_BYTES / u->os.slot;
    if (u->os.nslots > RX_MAX_MSGS)
        u->os.nslots = RX_MAX_MSGS;
    if (u->os.nslots < 1)
        u->os.nslots = 1;
    u->os.stage = malloc((size_t)u->os.nslots * u->os.slot);
    u->os.rx_msgs = calloc(u->os.nslots, sizeof(struct mmsghdr));
    u->os.rx_iov = calloc(u->os.nslots, sizeof(struct iovec));
    u->os.rx_names = calloc(u->os.nslots, sizeof(udp_name));
    u->os.rx_ctrl = calloc(u->os.nslots, RX_CTRL);
    if (!u->os.stage || !u->os.rx_msgs || !u->os.rx_iov || !u->os.rx_names || !u->os.rx_ctrl)
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a UDP endpoint's buffers");
    return FT_OK;
}

#else
typedef int ft_udp_linux_is_linux_only; /* ISO C wants a translation unit to declare something */
#endif
