/* udp/ft_udp.c - a UDP socket as a batch endpoint: what every platform shares (addresses, checks, the send
 * loop, the backend table, open and the report). The system calls are in ft_udp_linux.c (recvmmsg/sendmmsg with
 * GRO/GSO) and ft_udp_win.c; a coalesced read is split by udp/ft_udp_train.h.
 *
 * Everywhere: every datagram not delivered is counted. */
#ifdef __linux__
#define _GNU_SOURCE
#endif
#include "udp/ft_udp.h" /* elsewhere: only its stubs, so that every compiler checks them */
#if defined(__linux__) || defined(_WIN32)
#include "udp/ft_udp_internal.h"

static void udp_close(ft_device *d);
/* Ours: the only backend whose close is udp_close. */
static int is_udp(ft_device *d) { return d && d->ops && d->ops->close == udp_close; }

/* ---- addresses ------------------------------------------------------------------------------------------ */

void ft_udp_endpoint_from_name(const udp_name *n, ft_endpoint *ep)
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

socklen_t_ ft_udp_name_from_endpoint(int family, const ft_endpoint *ep, udp_name *n)
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

int ft_udp_append(ft_batch *b, const uint8_t *p, uint32_t len, const udp_name *from)
{
    if (b->count >= b->max || b->cap - b->used < len)
        return 0;
    if (b->data + b->used != p)
        memcpy(b->data + b->used, p, len);
    if (b->addrs)
        ft_udp_endpoint_from_name(from, &b->addrs[b->count]);
    b->offsets[b->count] = (uint32_t)b->used;
    b->lengths[b->count] = len;
    b->count++;
    b->used += len;
    return 1;
}

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
    if (ft_limit_check(&ft_limit_port, ep->port, e) != FT_OK)
        return FT_EINVAL;
    return FT_OK;
}

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
    return ft_udp_os_send_some(d, pkts, n, NULL, 0, 0, &sent, &bytes, e);
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
    return ft_udp_os_send_some(d, pkts + done, n - done, c->to, c->to_count, done, sent, bytes, e);
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

static int udp_recv(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    (void)q;
    return ft_udp_os_recv(d, b, e);
}

static int udp_wait_handles(ft_device *d, int q, int dir, ft_handle *out, int max, int *poll_out)
{
    if ((q != 0 && q != FT_ALL_QUEUES) || max < 1)
        return -1;
    out[0] = ft_udp_os_wait_handle(U(d), dir, poll_out);
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
    ft_udp_os_release(u);
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

int ft_udp_open(const ft_udp_params *p, ft_device **out, ft_err *e)
{
    ft_sock fd = (ft_sock)p->fd;
    int domain = ft_udp_os_family(fd);
    if (!domain)
        return ft_fail(e, FT_EINVAL, EINVAL, "fd %d is not a UDP socket (AF_INET or AF_INET6, SOCK_DGRAM)", p->fd);
    uint32_t max_payload = domain == AF_INET ? FT_UDP_MAX_PAYLOAD4 : FT_UDP_MAX_PAYLOAD6;
    uint32_t max_datagram = p->max_datagram ? p->max_datagram : max_payload;
    if (ft_limit_check(ft_udp_max_datagram_limit(domain == AF_INET ? 4 : 6), max_datagram, e) != FT_OK ||
        (p->rcvbuf && ft_limit_check(&ft_limit_rcvbuf, p->rcvbuf, e) != FT_OK) ||
        (p->sndbuf && ft_limit_check(&ft_limit_sndbuf, p->sndbuf, e) != FT_OK))
        return FT_EINVAL;
    if (p->per_datagram != 0 && p->per_datagram != 1)
        return ft_fail(e, FT_EINVAL, EINVAL, "per_datagram %d is out of range; allowed: 0 or 1", p->per_datagram);
#ifndef _WIN32
    if (p->per_datagram)
        return ft_fail(e, FT_EUNSUPPORTED, ENOTSUP, "a per-datagram UDP endpoint is Windows' fallback path; Linux "
                       "always uses recvmmsg/sendmmsg");
#endif

    udp_block *block = calloc(1, sizeof(*block));
    if (!block)
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a UDP endpoint");
    ft_device *d = &block->d;
    udp_dev *u = &block->u;
    u->fd = FT_SOCK_INVALID;
    ft_udp_os_init(u);
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
                                       : ft_udp_os_setup(u, fd, p, e);
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
    o->gro = ft_atomic_load(&u->gro);
    o->max_datagram = u->max_datagram;
    o->gso_max_segment = (uint32_t)ft_atomic_load(&u->gso_max_segment);
    ft_udp_info *out = o;
    udp_info_atomic *in = &u->info;
    FT_UDP_COUNTERS(FT_COUNTER_LOAD_)
#ifdef _WIN32
    o->message_calls = ft_atomic_load(&u->os.recvmsg_on) && ft_atomic_load(&u->os.sendmsg_on);
#else
    o->message_calls = 1;
#endif
    o->rcvbuf = u->rcvbuf;
    o->sndbuf = u->sndbuf;
    return FT_OK;
}
#endif
