/* linux/ft_linux_tun.c - /dev/net/tun: open (named, kernel-chosen, attach, multi-queue, persist), read and
 * write whole IP packets, and link configuration through ioctl. Addresses go through rtnetlink
 * (ft_linux_netlink.c). No shell, no external program. */
#ifdef __linux__
#define _GNU_SOURCE
#include "linux/ft_linux.h"
#include "linux/ft_linux_netlink.h"
#include "offload/ft_offload.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>

/* Segments mode: one super-packet read from a queue, split into the caller's batch (see recv_segments). */
#define SEG_ARENA (256u << 10)
#define SEG_MAX 2048u

typedef struct seg_queue {
    uint8_t *raw;        /* FT_VNET_HDR_SIZE + FT_MAX_SUPER_PACKET bytes: what one read returns */
    size_t pending;      /* bytes of raw not yet split (0: none) */
    ft_batch seg;        /* the segments of a super-packet too big for the caller's batch */
    uint32_t next;       /* the first of them not yet delivered */
} seg_queue;

typedef struct linux_dev {
    int fds[FT_LINUX_MAX_QUEUES];
    unsigned ifindex;
    /* Configuration sockets opened with the device, in its network namespace: configuring works from any
     * namespace and never touches another interface that has the same index elsewhere. */
    int ctl_fd;                  /* AF_INET datagram socket for interface ioctls */
    int nl_fd;                   /* NETLINK_ROUTE */
    ft_mutex *nl_lock;           /* one netlink request at a time */
    int offload_mode;            /* FT_OFFLOAD_* */
    uint32_t offloads;           /* TUN_F_* the kernel accepted */
    uint32_t coalesce_allow;     /* FT_COALESCE_* matching them */
    seg_queue *segq;             /* [nqueues], segments mode only */
    ft_mutex *tx_lock;           /* guards the buffers below */
    uint8_t *tx_buf;             /* remote_csum without offload: one packet to complete the checksum of */
    /* offload: one window of packets coalesced into units written with writev, payloads where they are */
    uint8_t tx_hdr[FT_COALESCE_WINDOW * FT_COALESCE_HDR_MAX];
    ft_pkt tx_pieces[2 * FT_COALESCE_WINDOW];
    struct iovec tx_iov[2 * FT_COALESCE_WINDOW];
    ft_coalesce_unit tx_units[FT_COALESCE_WINDOW];
    ft_pkt tx_in[FT_COALESCE_WINDOW];       /* remote_csum: a window of packets without their headers */
    uint8_t tx_partial[FT_COALESCE_WINDOW]; /* ... and which of them had one */
    /* txqueuelen "auto": see auto_txqueuelen */
    int auto_txq;
    ft_atomic_int txq_busy;      /* one receiving thread checks at a time */
    ft_atomic_u64 txq_checked;   /* ft_now_ns of the last check */
    uint64_t txq_drops;          /* the kernel's drop counter then (valid once txq_checked is set) */
    ft_atomic_int txq_grows;
} linux_dev;

static linux_dev *L(ft_device *d) { return d->impl; }

/* ---- names and errors -------------------------------------------------------------------------------- */

static int check_name(const char *name, ft_err *e)
{
    size_t n = strlen(name);
    if (n >= IFNAMSIZ)
        return ft_fail(e, FT_EINVAL, EINVAL, "interface name '%s' is %zu bytes; at most %d are allowed", name, n,
                       IFNAMSIZ - 1);
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return ft_fail(e, FT_EINVAL, EINVAL, "interface name '%s' is not allowed", name);
    int percent_d = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= ' ' || c == '/' || c == ':' || c >= 0x7f)
            return ft_fail(e, FT_EINVAL, EINVAL,
                           "interface name '%s' has a forbidden character at byte %zu; printable ASCII without "
                           "spaces, '/' or ':' is allowed",
                           name, i);
        if (c == '%') {
            if (name[i + 1] != 'd' || percent_d++)
                return ft_fail(e, FT_EINVAL, EINVAL,
                               "interface name '%s': '%%' is only allowed once, as '%%d' (the kernel picks a number)",
                               name);
        }
    }
    return FT_OK;
}

static int explain_open_error(int err, const char *path, ft_err *e)
{
    if (err == ENOENT || err == ENXIO || err == ENODEV)
        return ft_fail(e, FT_ESYS, ENOENT,
                       "%s does not exist: load the tun module ('modprobe tun') or, in a container, pass the "
                       "device in (e.g. --device /dev/net/tun)",
                       path);
    if (err == EACCES || err == EPERM) {
        struct stat st;
        if (stat(path, &st) == 0 && (st.st_mode & 0006) != 0006 && st.st_uid != geteuid())
            return ft_fail(e, FT_ESYS, EACCES,
                           "no permission to open %s (mode %04o, owner uid %u): only its owner or root can; run as "
                           "root, or make it readable and writable by all (chmod 0666 %s, the usual setting); "
                           "creating a device then also needs CAP_NET_ADMIN",
                           path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, path);
        return ft_fail(e, FT_ESYS, EACCES, "no permission to open %s: run as root or with CAP_NET_ADMIN", path);
    }
    return ft_fail_os(e, err, "cannot open %s", path);
}

static int explain_setiff_error(int err, const char *name, const ft_linux_params *p, ft_err *e)
{
    switch (err) {
    case EPERM:
    case EACCES:
        return ft_fail(e, FT_ESYS, EPERM,
                       "creating or attaching TUN device '%s' needs CAP_NET_ADMIN: run as root, grant the "
                       "capability (setcap cap_net_admin+ep on the interpreter), or attach to a persistent device "
                       "owned by this user",
                       name);
    case EBUSY:
        return ft_fail(e, FT_ESYS, EBUSY,
                       "TUN device '%s' is already open (a single-queue device has one owner at a "
                       "time)",
                       name);
    case EINVAL:
        return ft_fail(e, FT_ESYS, EEXIST,
                       "'%s' exists but is not a TUN device with the requested flags (%s): pick another name or "
                       "open it the way it was created",
                       name, p->queues > 1 ? "multi-queue" : "single-queue");
    case ENOMEM:
    case ENFILE:
        return ft_fail_os(e, err, "the kernel refused to create TUN device '%s'", name);
    default:
        return ft_fail_os(e, err, "TUNSETIFF for '%s' failed", name);
    }
}

/* ---- ioctl helpers ----------------------------------------------------------------------------------- */

/* The current name of our interface: it may have been renamed since we opened it. */
static int current_ifreq(ft_device *d, struct ifreq *ifr, ft_err *e)
{
    memset(ifr, 0, sizeof(*ifr));
    ifr->ifr_ifindex = (int)L(d)->ifindex;
    if (ioctl(L(d)->ctl_fd, SIOCGIFNAME, ifr) != 0) {
        if (errno == ENODEV || errno == ENXIO)
            return ft_fail(e, FT_EEOF, EPIPE, "TUN device '%s' (interface %u) is gone (deleted)", d->name,
                           L(d)->ifindex);
        return ft_fail_os(e, errno, "interface %u ('%s') cannot be looked up", L(d)->ifindex, d->name);
    }
    snprintf(d->name, sizeof(d->name), "%s", ifr->ifr_name);
    return FT_OK;
}

static int if_ioctl(ft_device *d, unsigned long req, struct ifreq *ifr, const char *what, ft_err *e)
{
    if (ioctl(L(d)->ctl_fd, req, ifr) == 0)
        return FT_OK;
    int err = errno;
    if (err == EPERM || err == EACCES)
        return ft_fail(e, FT_ESYS, EPERM, "%s on '%s' needs CAP_NET_ADMIN (run as root)", what, d->name);
    return ft_fail_os(e, err, "%s on '%s' failed", what, d->name);
}

/* An interface ioctl that reads something, on the interface's current name. */
static int read_ifreq(ft_device *d, unsigned long req, struct ifreq *ifr, const char *what, ft_err *e)
{
    int r = current_ifreq(d, ifr, e);
    return r == FT_OK ? if_ioctl(d, req, ifr, what, e) : r;
}

/* An int an interface ioctl reads: the MTU and the queue length both live in the ifreq's int (ifr_ifru). */
static int read_if_int(ft_device *d, unsigned long req, const char *what, uint32_t *out, ft_err *e)
{
    struct ifreq ifr;
    int r = read_ifreq(d, req, &ifr, what, e);
    if (r == FT_OK)
        *out = (uint32_t)ifr.ifr_ifru.ifru_ivalue;
    return r;
}

static int lx_get_mtu(ft_device *d, uint32_t *mtu, ft_err *e)
{
    return read_if_int(d, SIOCGIFMTU, "reading the MTU", mtu, e);
}

static int lx_set_mtu(ft_device *d, uint32_t mtu, ft_err *e)
{
    struct ifreq ifr;
    int r = current_ifreq(d, &ifr, e);
    if (r != FT_OK)
        return r;
    ifr.ifr_mtu = (int)mtu;
    return if_ioctl(d, SIOCSIFMTU, &ifr, "setting the MTU", e);
}

static int lx_is_up(ft_device *d, int *up, ft_err *e)
{
    struct ifreq ifr;
    int r = read_ifreq(d, SIOCGIFFLAGS, &ifr, "reading the link flags", e);
    if (r == FT_OK)
        *up = (ifr.ifr_flags & IFF_UP) != 0;
    return r;
}

static void wait_all_usable(ft_device *d);

static int lx_set_up(ft_device *d, int up, ft_err *e)
{
    struct ifreq ifr;
    int r = read_ifreq(d, SIOCGIFFLAGS, &ifr, "reading the link flags", e);
    if (r != FT_OK)
        return r;
    if (up)
        ifr.ifr_flags |= IFF_UP;
    else
        ifr.ifr_flags &= ~IFF_UP;
    r = if_ioctl(d, SIOCSIFFLAGS, &ifr, up ? "bringing the link up" : "bringing the link down", e);
    if (r == FT_OK && up)
        wait_all_usable(d);
    return r;
}

static int lx_get_index(ft_device *d, uint32_t *index, ft_err *e)
{
    (void)e;
    *index = L(d)->ifindex;
    return FT_OK;
}

static int lx_get_txqueuelen(ft_device *d, uint32_t *len, ft_err *e)
{
    return read_if_int(d, SIOCGIFTXQLEN, "reading the transmit queue length", len, e);
}

static int lx_set_txqueuelen(ft_device *d, uint32_t len, ft_err *e)
{
    if (ft_limit_check(&ft_limit_txqueuelen, len, e) != FT_OK)
        return FT_EINVAL;
    struct ifreq ifr;
    int r = current_ifreq(d, &ifr, e);
    if (r != FT_OK)
        return r;
    ifr.ifr_qlen = (int)len;
    r = ioctl(L(d)->ctl_fd, SIOCSIFTXQLEN, &ifr);
    int err = errno;
    if (r == 0)
        return FT_OK;
    /* The tun driver answers EPERM (not EINVAL) when it cannot resize the queues of an attached device, e.g. past
     * its ring limit of 2^19 entries; root gets that answer too, so don't blame privileges when we have them. */
    if (err == EPERM && geteuid() == 0)
        return ft_fail(e, FT_EINVAL, EINVAL,
                       "the kernel refused txqueuelen %u on '%s' (a TUN queue holds at most 524288 packets)", len,
                       d->name);
    if (err == EPERM || err == EACCES)
        return ft_fail(e, FT_ESYS, EPERM, "setting the transmit queue length on '%s' needs CAP_NET_ADMIN", d->name);
    return ft_fail_os(e, err, "setting the transmit queue length on '%s' failed", d->name);
}

#define ADDRESS_READY_MS 2000u

/* A netlink request about our interface. Asked about an index that is gone, netlink answers with an empty
 * list or ENODEV depending on the request: look the interface up first so that every call says "gone". */
#define NETLINK_CALL(expr)                  \
    do {                                    \
        struct ifreq ifr_;                  \
        int r_ = current_ifreq(d, &ifr_, e); \
        if (r_ != FT_OK)                    \
            return r_;                      \
        ft_mutex_lock(L(d)->nl_lock);       \
        r_ = (expr);                        \
        ft_mutex_unlock(L(d)->nl_lock);     \
        return r_;                          \
    } while (0)

static int is_link_local(const ft_addr *a) { return a->family == 6 && a->bytes[0] == 0xfe && (a->bytes[1] & 0xc0) == 0x80; }

/* IPv6 makes an address usable (its local route) a moment after it appears, in a kernel work queue: wait for
 * it, so that a socket bound to the address gets packets as soon as the call returns. */
static void wait_usable(ft_device *d, const ft_addr *a)
{
    ft_err ignored;
    int up = 0;
    if (a->family != 6 || is_link_local(a))
        return;
    if (lx_is_up(d, &up, &ignored) != FT_OK || !up)
        return;
    ft_mutex_lock(L(d)->nl_lock);
    ft_netlink_wait_local(L(d)->nl_fd, a, ADDRESS_READY_MS, &ignored);
    ft_mutex_unlock(L(d)->nl_lock);
}

static int lx_list_addresses(ft_device *d, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e)
{
    NETLINK_CALL(ft_netlink_list_addresses(L(d)->nl_fd, L(d)->ifindex, out, max, n, e));
}

static void wait_all_usable(ft_device *d)
{
    ft_addr addrs[64];
    uint32_t n = 0;
    ft_err ignored;
    if (lx_list_addresses(d, addrs, 64, &n, &ignored) == FT_OK)
        for (uint32_t i = 0; i < n && i < 64; i++)
            wait_usable(d, &addrs[i]);
}

static int address_call(ft_device *d, const ft_addr *a, int add, ft_err *e)
{
    NETLINK_CALL(ft_netlink_address(L(d)->nl_fd, L(d)->ifindex, d->name, a, add, e));
}

static int lx_address(ft_device *d, int add, const ft_addr *a, ft_err *e)
{
    int r = address_call(d, a, add, e);
    if (r == FT_OK && add)
        wait_usable(d, a);
    return r;
}

static int lx_route(ft_device *d, int add, const ft_route *r, ft_err *e)
{
    NETLINK_CALL(ft_netlink_route(L(d)->nl_fd, L(d)->ifindex, d->name, add, r, e));
}

static int lx_os_drops(ft_device *d, uint64_t *rx_dropped, uint64_t *tx_dropped, ft_err *e)
{
    NETLINK_CALL(ft_netlink_link_drops(L(d)->nl_fd, L(d)->ifindex, rx_dropped, tx_dropped, e));
}

/* ---- packets ----------------------------------------------------------------------------------------- */

/* One packet per system call, straight to the kernel. glibc's read()/write() are thread-cancellation points:
 * in a process with more than one thread (every Python program with a reader) each call also switches the
 * thread's cancellation state on and off with atomic operations: 35-50 ns per call measured here, about 5% of
 * a packet drained from a prefilled queue (~750 ns). Our threads are never cancelled, so the plain system call
 * does the same work without that. */
static ssize_t tun_read(int fd, void *buf, size_t len) { return (ssize_t)syscall(SYS_read, fd, buf, len); }
static ssize_t tun_write(int fd, const void *buf, size_t len) { return (ssize_t)syscall(SYS_write, fd, buf, len); }
static ssize_t tun_readv(int fd, const struct iovec *iov, int n) { return (ssize_t)syscall(SYS_readv, fd, iov, n); }
static ssize_t tun_writev(int fd, const struct iovec *iov, int n)
{
    return (ssize_t)syscall(SYS_writev, fd, iov, n);
}

static int read_error(ft_device *d, int err, ft_err *e)
{
    if (err == EBADFD || err == EBADF)
        return ft_fail(e, FT_EEOF, EPIPE, "TUN device '%s' is gone (detached or deleted)", d->name);
    return ft_fail_os(e, err, "reading from TUN device '%s' failed", d->name);
}

static int ip_version_ok(const uint8_t *p, size_t len)
{
    return len > 0 && ((p[0] >> 4) == 4 || (p[0] >> 4) == 6);
}

/* Super-packet mode: each packet whole, its virtio-net header into the batch's header table. */
static int recv_super(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    int fd = L(d)->fds[q];
    int n = 0;
    if (!b->vnet)
        return ft_fail(e, FT_EINVAL, EINVAL, "a batch for super-packets needs a virtio-net header table");
    while (b->count < b->max && b->cap - b->used >= d->max_packet) {
        uint8_t *hdr = b->vnet + (size_t)b->count * FT_VNET_HDR_SIZE;
        struct iovec iov[2] = {{hdr, FT_VNET_HDR_SIZE}, {b->data + b->used, b->cap - b->used}};
        ssize_t r = tun_readv(fd, iov, 2);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || n > 0)
                break;
            return read_error(d, errno, e);
        }
        size_t len = r > FT_VNET_HDR_SIZE ? (size_t)r - FT_VNET_HDR_SIZE : 0;
        if (!ip_version_ok(b->data + b->used, len)) {
            ft_atomic_add64(&d->stats.rx_dropped_invalid, 1);
            continue;
        }
        b->offsets[b->count] = (uint32_t)b->used;
        b->lengths[b->count] = (uint32_t)len;
        b->count++;
        b->used += len;
        n++;
    }
    return n > 0 ? n : FT_EAGAIN;
}

/* Segments mode: read a super-packet and split it in C straight into the caller's batch. A super-packet whose
 * segments do not fit in what is left of the batch waits in raw for the next receive; one with more segments
 * than even an empty batch holds (a small batch size) is split into the queue's own arena instead and handed
 * out over as many receives as it takes. */
static int recv_segments(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    int fd = L(d)->fds[q];
    seg_queue *sq = &L(d)->segq[q];
    int n = 0;
    while (b->count < b->max) {
        if (sq->next < sq->seg.count) { /* the rest of a super-packet too big for one batch */
            uint32_t len = sq->seg.lengths[sq->next];
            if (b->cap - b->used < len)
                break;
            memcpy(b->data + b->used, sq->seg.data + sq->seg.offsets[sq->next], len);
            b->offsets[b->count] = (uint32_t)b->used;
            b->lengths[b->count] = len;
            b->count++;
            b->used += len;
            sq->next++;
            n++;
            continue;
        }
        if (sq->pending == 0) {
            ssize_t r = tun_read(fd, sq->raw, FT_VNET_HDR_SIZE + FT_MAX_SUPER_PACKET);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || n > 0)
                    break;
                return read_error(d, errno, e);
            }
            sq->pending = (size_t)r;
        }
        ft_err why;
        uint32_t flags = d->remote_csum ? FT_SPLIT_RCSUM : 0;
        int got = ft_offload_split_ex(sq->raw, sq->pending, flags, b, &why);
        if (got == FT_EAGAIN)
            break; /* the batch is full enough: the super-packet stays pending for the next receive */
        size_t len = sq->pending;
        sq->pending = 0;
        if (got > 0) {
            n += got;
            continue;
        }
        sq->seg.count = 0;
        sq->seg.used = 0;
        sq->next = 0;
        if (ft_offload_split_ex(sq->raw, len, flags, &sq->seg, &why) <= 0)
            ft_atomic_add64(&d->stats.rx_dropped_invalid, 1); /* malformed or hostile: counted, dropped */
    }
    return n > 0 ? n : FT_EAGAIN;
}

/* txqueuelen "auto" (ft_linux_params.auto_txqueuelen): the kernel queues packets for us in a queue of
 * txqueuelen packets per queue and drops (and counts) what does not fit. At most once per
 * AUTO_TXQ_INTERVAL_NS a receive reads that counter, and when it grew since the last look doubles txqueuelen,
 * up to AUTO_TXQ_MAX; the kernel resizes the queue at once. The check costs one clock read per batch; the
 * netlink request runs on one receiving thread, never on two at once. */
#define AUTO_TXQ_INTERVAL_NS (2000ull * 1000000ull)
#define AUTO_TXQ_MAX 65536u

static void auto_txqueuelen(ft_device *d)
{
    linux_dev *l = L(d);
    uint64_t now = ft_now_ns();
    uint64_t last = ft_atomic_load64(&l->txq_checked);
    if (last != 0 && now - last < AUTO_TXQ_INTERVAL_NS)
        return;
    if (!ft_atomic_cas(&l->txq_busy, 0, 1))
        return;
    ft_err ignored;
    uint64_t drops = 0, tx_drops = 0;
    if (lx_os_drops(d, &drops, &tx_drops, &ignored) == FT_OK) {
        uint32_t len = 0;
        if (last != 0 && drops > l->txq_drops && lx_get_txqueuelen(d, &len, &ignored) == FT_OK &&
            len < AUTO_TXQ_MAX) {
            uint32_t next = len < 64 ? 128 : len * 2;
            if (next > AUTO_TXQ_MAX)
                next = AUTO_TXQ_MAX;
            if (lx_set_txqueuelen(d, next, &ignored) == FT_OK)
                (void)ft_atomic_add(&l->txq_grows, 1);
        }
        l->txq_drops = drops;
    }
    ft_atomic_store64(&l->txq_checked, now ? now : 1);
    ft_atomic_store(&l->txq_busy, 0);
}

static int lx_recv(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    if (L(d)->auto_txq)
        auto_txqueuelen(d);
    if (L(d)->offload_mode == FT_OFFLOAD_SUPER)
        return recv_super(d, q, b, e);
    if (L(d)->offload_mode == FT_OFFLOAD_SEGMENTS)
        return recv_segments(d, q, b, e);
    int fd = L(d)->fds[q];
    int n = 0;
    while (b->count < b->max && b->cap - b->used >= d->max_packet) {
        ssize_t r = tun_read(fd, b->data + b->used, b->cap - b->used);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            if (n > 0)
                break; /* deliver what we have; the error shows again on the next call */
            if (errno == EBADFD || errno == EBADF)
                return ft_fail(e, FT_EEOF, EPIPE, "TUN device '%s' is gone (detached or deleted)", d->name);
            return ft_fail_os(e, errno, "reading from TUN device '%s' failed", d->name);
        }
        uint8_t v = r > 0 ? (uint8_t)(b->data[b->used] >> 4) : 0;
        if (r == 0 || (v != 4 && v != 6)) { /* IFF_TUN|IFF_NO_PI only yields IP; count anything else */
            ft_atomic_add64(&d->stats.rx_dropped_invalid, 1);
            continue;
        }
        b->offsets[b->count] = (uint32_t)b->used;
        b->lengths[b->count] = (uint32_t)r;
        b->count++;
        b->used += (size_t)r;
        n++;
    }
    return n > 0 ? n : FT_EAGAIN;
}

/* The kernel refused one packet for what it is (the others of a batch may still go). */
static int refused_packet(int err) { return err == EINVAL || err == EMSGSIZE || err == EFAULT; }

/* Why writing to queue fd failed. EIO means the link is down, or it went away a moment ago: TUNGETIFF tells. */
static int write_error(ft_device *d, int fd, int err, ft_err *e)
{
    struct ifreq ifr;
    if (err == EIO && ioctl(fd, TUNGETIFF, &ifr) != 0 && (errno == EBADFD || errno == EBADF))
        err = EBADFD;
    if (err == EBADFD || err == EBADF)
        return ft_fail(e, FT_EEOF, EPIPE, "TUN device '%s' is gone (deleted or detached)", d->name);
    if (err == EIO)
        return ft_fail(e, FT_ESYS, EIO, "TUN device '%s' refused the packet because its link is down: call up()",
                       d->name);
    if (refused_packet(err)) {
        ft_fail_os(e, err, "TUN device '%s' refused the packet", d->name);
        e->status = FT_EREFUSED;
        return FT_EREFUSED;
    }
    return ft_fail_os(e, err, "writing to TUN device '%s' failed", d->name);
}

/* Offload devices: ordinary packets are merged per flow into super-packets (at most FT_COALESCE_WINDOW at a
 * time) and written with as few syscalls as that allows. Units the kernel refuses for lack of room are
 * dropped and counted; all n packets are then accounted for. */
static int send_coalesced(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_err *e)
{
    linux_dev *l = L(d);
    int fd = l->fds[q];
    uint32_t i = 0;
    int result = 0;
    ft_mutex_lock(l->tx_lock);
    while (i < n) {
        uint32_t k = n - i < FT_COALESCE_WINDOW ? n - i : FT_COALESCE_WINDOW;
        const ft_pkt *in = pkts + i;
        const uint8_t *partial = NULL;
        if (d->remote_csum) { /* packets behind an FT_RCSUM header (checked by ft_device_send) go in without it */
            ft_rcsum_strip(in, k, l->tx_in, l->tx_partial);
            in = l->tx_in;
            partial = l->tx_partial;
        }
        int units = ft_offload_coalesce_iov(in, partial, k, l->coalesce_allow, l->tx_hdr, sizeof(l->tx_hdr),
                                            l->tx_pieces, 2 * FT_COALESCE_WINDOW, l->tx_units, FT_COALESCE_WINDOW, e);
        if (units < 0) {
            result = i > 0 ? (int)i : units;
            goto out;
        }
        uint32_t pieces = units > 0 ? l->tx_units[units - 1].iov_first + l->tx_units[units - 1].iov_count : 0;
        for (uint32_t p = 0; p < pieces; p++) {
            l->tx_iov[p].iov_base = (void *)l->tx_pieces[p].data;
            l->tx_iov[p].iov_len = l->tx_pieces[p].len;
        }
        for (int u = 0; u < units; u++) {
            const ft_coalesce_unit *cu = &l->tx_units[u];
            ssize_t r;
            do
                r = tun_writev(fd, l->tx_iov + cu->iov_first, (int)cu->iov_count);
            while (r < 0 && errno == EINTR);
            if (r >= 0)
                continue;
            if (errno == EAGAIN || errno == ENOBUFS) {
                ft_atomic_add64(&d->stats.tx_dropped_full, cu->segs);
                continue;
            }
            if (i == 0 && u == 0 && !refused_packet(errno)) {
                result = write_error(d, fd, errno, e);
                goto out;
            }
            ft_atomic_add64(&d->stats.tx_errors, cu->segs); /* counted here: the loop above cannot skip a part of
                                                               a coalesced unit */
        }
        i += k;
    }
    result = (int)n;
out:
    ft_mutex_unlock(l->tx_lock);
    return result;
}

/* remote_csum without offload: a packet whose checksum the far end left partial is completed here, in a copy. */
static ssize_t write_completing(ft_device *d, int fd, const ft_pkt *p)
{
    linux_dev *l = L(d);
    if (!d->remote_csum || p->len == 0 || p->data[0] != FT_RCSUM_MAGIC)
        return tun_write(fd, p->data, p->len);
    ft_mutex_lock(l->tx_lock);
    size_t len = ft_rcsum_complete_into(p->data, p->len, l->tx_buf);
    ssize_t r = tun_write(fd, l->tx_buf, len);
    int err = errno;
    ft_mutex_unlock(l->tx_lock);
    errno = err;
    return r;
}

/* One write per packet, in order, until all went, the queue is full or a write fails: each behind its virtio-net
 * header from hdrs (super-packets), or, hdrs NULL, as it is (completed first if it came with a partial checksum). */
static int write_each(ft_device *d, int q, const ft_pkt *pkts, const uint8_t *hdrs, uint32_t n, ft_err *e)
{
    int fd = L(d)->fds[q];
    uint32_t i = 0;
    while (i < n) {
        ssize_t r;
        if (hdrs) {
            struct iovec iov[2] = {{(void *)(hdrs + (size_t)i * FT_VNET_HDR_SIZE), FT_VNET_HDR_SIZE},
                                   {(void *)pkts[i].data, pkts[i].len}};
            r = tun_writev(fd, iov, 2);
        } else {
            r = write_completing(d, fd, &pkts[i]);
        }
        if (r >= 0) {
            i++;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == ENOBUFS)
            return i > 0 ? (int)i : FT_EFULL;
        if (i > 0)
            return (int)i; /* the failure shows again, on its own, in the next call */
        return write_error(d, fd, errno, e);
    }
    return (int)i;
}

static int lx_send_vnet(ft_device *d, int q, const ft_pkt *pkts, const uint8_t *hdrs, uint32_t n, ft_err *e)
{
    if (L(d)->offload_mode == FT_OFFLOAD_OFF) /* a plain fd has no virtio-net header to carry */
        return ft_fail(e, FT_EUNSUPPORTED, ENOSYS,
                       "super-packets can only be sent to a device opened with offload (this one has none)");
    return write_each(d, q, pkts, hdrs, n, e);
}

static int lx_send(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_err *e)
{
    if (L(d)->offload_mode != FT_OFFLOAD_OFF)
        return send_coalesced(d, q, pkts, n, e);
    return write_each(d, q, pkts, NULL, n, e);
}

static int lx_wait_handles(ft_device *d, int q, int dir, ft_handle *out, int max, int *poll_out)
{
    linux_dev *l = L(d);
    *poll_out = dir == FT_WAIT_WRITE; /* a tun fd is writable when its queue has room */
    if (q == FT_ALL_QUEUES && dir == FT_WAIT_READ) {
        if (d->nqueues > max)
            return -1;
        for (int i = 0; i < d->nqueues; i++)
            out[i] = l->fds[i];
        return d->nqueues;
    }
    if (q == FT_ALL_QUEUES)
        q = 0;
    if (q < 0 || q >= d->nqueues || max < 1)
        return -1;
    out[0] = l->fds[q];
    return 1;
}

static void free_offload(linux_dev *l, int nqueues)
{
    if (l->segq) {
        for (int i = 0; i < nqueues; i++) {
            free(l->segq[i].raw);
            free(l->segq[i].seg.data);
            free(l->segq[i].seg.offsets);
            free(l->segq[i].seg.lengths);
        }
        free(l->segq);
    }
    free(l->tx_buf);
    ft_mutex_destroy(l->tx_lock);
}

static void close_config(linux_dev *l)
{
    if (l->ctl_fd >= 0)
        close(l->ctl_fd);
    if (l->nl_fd >= 0)
        close(l->nl_fd);
    ft_mutex_destroy(l->nl_lock);
}

static void lx_close(ft_device *d)
{
    linux_dev *l = L(d);
    for (int i = 0; i < d->nqueues; i++)
        if (l->fds[i] >= 0)
            close(l->fds[i]);
    close_config(l);
    free_offload(l, d->nqueues);
    free(l);
    d->impl = NULL;
}

/* In a fork child: close our copies of the descriptors (the parent keeps its own), leave locks and memory. */
static void lx_forget(ft_device *d)
{
    linux_dev *l = L(d);
    for (int i = 0; i < d->nqueues; i++)
        if (l->fds[i] >= 0)
            close(l->fds[i]);
    if (l->ctl_fd >= 0)
        close(l->ctl_fd);
    if (l->nl_fd >= 0)
        close(l->nl_fd);
}

/* recv reads fds[q] and, for txqueuelen "auto", talks to the kernel through nl_fd and ctl_fd. */
static int lx_receiver_fds(ft_device *d, int q, ft_handle *out, int max)
{
    linux_dev *l = L(d);
    if (q < 0 || q >= d->nqueues || max < 3)
        return 0;
    out[0] = l->fds[q];
    out[1] = l->nl_fd;
    out[2] = l->ctl_fd;
    return 3;
}

static const ft_backend_ops linux_ops = {
    .name = "linux",
    .recv = lx_recv,
    .send = lx_send,
    .check = ft_rcsum_device_check,
    .wait_handles = lx_wait_handles,
    .close = lx_close,
    .forget = lx_forget,
    .get_mtu = lx_get_mtu,
    .set_mtu = lx_set_mtu,
    .set_up = lx_set_up,
    .is_up = lx_is_up,
    .get_index = lx_get_index,
    .address = lx_address,
    .list_addresses = lx_list_addresses,
    .get_txqueuelen = lx_get_txqueuelen,
    .set_txqueuelen = lx_set_txqueuelen,
    .os_drops = lx_os_drops,
    .route = lx_route,
    .send_vnet = lx_send_vnet,
    .check_vnet = ft_vnet_check,
    .receiver_fds = lx_receiver_fds,
};

/* TUNSETOFFLOAD with everything we can split and coalesce; USO only exists on Linux 6.2+, so try it first and
 * fall back without it. Returns the accepted TUN_F_* bits, 0 if even checksum offload was refused. */
static uint32_t enable_offloads(int fd)
{
    const uint32_t base = FT_TUN_F_CSUM | FT_TUN_F_TSO4 | FT_TUN_F_TSO6 | FT_TUN_F_TSO_ECN;
    const uint32_t tries[3] = {base | FT_TUN_F_USO4 | FT_TUN_F_USO6, base, FT_TUN_F_CSUM};
    for (int i = 0; i < 3; i++)
        if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)tries[i]) == 0)
            return tries[i];
    return 0;
}

static int setup_offload(ft_device *d, int mode, ft_err *e)
{
    linux_dev *l = L(d);
    l->offload_mode = mode;
    l->offloads = enable_offloads(l->fds[0]);
    if (!l->offloads)
        return ft_fail_os(e, errno, "TUNSETOFFLOAD on '%s' was refused", d->name);
    l->coalesce_allow = ((l->offloads & (FT_TUN_F_TSO4 | FT_TUN_F_TSO6)) ? FT_COALESCE_TCP : 0) |
                        ((l->offloads & (FT_TUN_F_USO4 | FT_TUN_F_USO6)) ? FT_COALESCE_UDP : 0);
    l->tx_lock = ft_mutex_create();
    if (!l->tx_lock)
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for the offload buffers");
    if (mode == FT_OFFLOAD_SUPER) {
        d->max_packet = FT_MAX_SUPER_PACKET;
        return FT_OK;
    }
    l->segq = calloc((size_t)d->nqueues, sizeof(seg_queue));
    if (!l->segq)
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for the offload buffers");
    for (int i = 0; i < d->nqueues; i++) {
        seg_queue *sq = &l->segq[i];
        sq->raw = malloc(FT_VNET_HDR_SIZE + FT_MAX_SUPER_PACKET);
        sq->seg.data = malloc(SEG_ARENA);
        sq->seg.offsets = calloc(SEG_MAX, sizeof(uint32_t));
        sq->seg.lengths = calloc(SEG_MAX, sizeof(uint32_t));
        sq->seg.cap = SEG_ARENA;
        sq->seg.max = SEG_MAX;
        if (!sq->raw || !sq->seg.data || !sq->seg.offsets || !sq->seg.lengths)
            return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for the offload buffers");
    }
    return FT_OK;
}

/* ---- open -------------------------------------------------------------------------------------------- */

static int open_queue(const char *path, struct ifreq *ifr, const ft_linux_params *p, int *fd_out, ft_err *e)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return explain_open_error(errno, path, e);
    char wanted[IFNAMSIZ];
    snprintf(wanted, sizeof(wanted), "%s", ifr->ifr_name[0] ? ifr->ifr_name : "(kernel-chosen)");
    if (ioctl(fd, TUNSETIFF, ifr) != 0) {
        int err = errno;
        close(fd);
        return explain_setiff_error(err, wanted, p, e);
    }
    *fd_out = fd;
    return FT_OK;
}

int ft_linux_open(const ft_linux_params *p, ft_device **out, ft_err *e)
{
    const char *path = p->dev_path ? p->dev_path : "/dev/net/tun";
    const char *name = p->name ? p->name : "";
    if (ft_limit_check(&ft_limit_queues, p->queues, e) != FT_OK ||
        (p->mtu && ft_limit_check(&ft_limit_mtu, p->mtu, e) != FT_OK))
        return FT_EINVAL;
    if (p->offload < FT_OFFLOAD_OFF || p->offload > FT_OFFLOAD_SUPER)
        return ft_fail(e, FT_EINVAL, EINVAL, "offload mode %d is not off (0), segments (1) or super-packets (2)",
                       p->offload);
    if (p->remote_csum && p->offload == FT_OFFLOAD_SUPER)
        return ft_fail(e, FT_EINVAL, EINVAL,
                       "remote_csum needs offload_mode 'segments' or no offload: super-packets carry their "
                       "checksum state in their own headers");
    if (check_name(name, e) != FT_OK)
        return e->status;
    int fixed_name = name[0] && !strchr(name, '%');
    if (p->open_mode < FT_OPEN_CREATE || p->open_mode > FT_OPEN_ANY)
        return ft_fail(e, FT_EINVAL, EINVAL, "open mode %d is not allowed: 0 creates, 1 attaches, 2 does either",
                       p->open_mode);
    if (p->open_mode != FT_OPEN_ANY && !fixed_name)
        return ft_fail(e, FT_EINVAL, EINVAL, "attaching or exclusive creation needs a fixed interface name");
    if (fixed_name) {
        unsigned existing = if_nametoindex(name);
        if (p->open_mode == FT_OPEN_EXISTING && !existing)
            return ft_fail(e, FT_ESYS, ENODEV,
                           "no interface named '%s' exists to attach to (create it with persist=True first)", name);
        if (p->open_mode == FT_OPEN_CREATE && existing)
            return ft_fail(e, FT_ESYS, EEXIST, "an interface named '%s' already exists", name);
    }

    ft_device *d = calloc(1, sizeof(*d));
    linux_dev *l = calloc(1, sizeof(*l));
    if (!d || !l) {
        free(d);
        free(l);
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a TUN device");
    }
    for (int i = 0; i < FT_LINUX_MAX_QUEUES; i++)
        l->fds[i] = -1;
    l->ctl_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    l->nl_fd = ft_netlink_open(e);
    l->nl_lock = ft_mutex_create();
    if (l->ctl_fd < 0 || l->nl_fd < 0 || !l->nl_lock) {
        int err = errno;
        close_config(l);
        free(d);
        free(l);
        return ft_fail_os(e, err, "cannot open the configuration sockets");
    }
    d->ops = &linux_ops;
    d->impl = l;
    d->max_packet = FT_MAX_PACKET;
    l->auto_txq = p->auto_txqueuelen != 0;

    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (p->queues > 1 ? IFF_MULTI_QUEUE : 0) | (p->offload ? IFF_VNET_HDR : 0);
    int r = FT_OK;
    for (int i = 0; i < p->queues && r == FT_OK; i++) {
        r = open_queue(path, &ifr, p, &l->fds[i], e); /* the kernel wrote the real name back into ifr */
        if (r == FT_OK)
            d->nqueues = i + 1;
    }
    if (r != FT_OK)
        goto fail;
    snprintf(d->name, sizeof(d->name), "%s", ifr.ifr_name);
    l->ifindex = if_nametoindex(ifr.ifr_name);
    if (!l->ifindex) {
        r = ft_fail_os(e, errno, "TUN device '%s' vanished right after it was opened", ifr.ifr_name);
        goto fail;
    }
    if (p->persist >= 0 && ioctl(l->fds[0], TUNSETPERSIST, (unsigned long)(p->persist ? 1 : 0)) != 0) {
        r = ft_fail_os(e, errno, "TUNSETPERSIST on '%s' failed", d->name);
        goto fail;
    }
    d->remote_csum = p->remote_csum != 0;
    if (p->offload && (r = setup_offload(d, p->offload, e)) != FT_OK)
        goto fail;
    if (!p->offload && d->remote_csum) { /* room to complete one packet's checksum in */
        l->tx_lock = ft_mutex_create();
        l->tx_buf = malloc(FT_MAX_PACKET);
        if (!l->tx_lock || !l->tx_buf) {
            r = ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for the remote-checksum buffer");
            goto fail;
        }
    }
    r = ft_device_init(d, e);
    if (r != FT_OK)
        goto fail;
    uint32_t mtu = 0;
    r = p->mtu ? lx_set_mtu(d, p->mtu, e) : FT_OK;
    if (r == FT_OK)
        r = lx_get_mtu(d, &mtu, e);
    if (r != FT_OK) {
        ft_event_destroy(d->close_event);
        goto fail;
    }
    ft_atomic_store(&d->mtu, (int)mtu);
    *out = d;
    return FT_OK;
fail:
    for (int i = 0; i < d->nqueues; i++)
        close(l->fds[i]);
    close_config(l);
    free_offload(l, d->nqueues);
    free(l);
    free(d);
    return r;
}

static int is_linux(ft_device *d) { return d->ops == &linux_ops; }

int ft_linux_txqueuelen_grows(ft_device *d) { return is_linux(d) && L(d) ? ft_atomic_load(&L(d)->txq_grows) : 0; }

uint32_t ft_linux_offloads(ft_device *d, int *mode)
{
    *mode = FT_OFFLOAD_OFF;
    if (!is_linux(d) || ft_device_enter(d, NULL) != FT_OK)
        return 0;
    *mode = L(d)->offload_mode;
    uint32_t bits = L(d)->offloads;
    ft_device_leave(d);
    return bits;
}

int ft_linux_fd(ft_device *d, int q, ft_err *e)
{
    int r = ft_device_enter(d, e); /* closed first: after close, every call says so */
    if (r != FT_OK)
        return r;
    if (!is_linux(d))
        r = ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "the %s backend has no file descriptors", d->ops->name);
    else if (ft_device_check_queue(d, q, e) != FT_OK)
        r = FT_EINVAL;
    else
        r = L(d)->fds[q];
    ft_device_leave(d);
    return r;
}

int ft_linux_set_persist(ft_device *d, int persist, ft_err *e)
{
    int r = ft_device_enter(d, e); /* closed first */
    if (r != FT_OK)
        return r;
    if (!is_linux(d)) {
        ft_device_leave(d);
        return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "persist is a property of Linux TUN devices");
    }
    if (ioctl(L(d)->fds[0], TUNSETPERSIST, (unsigned long)(persist ? 1 : 0)) != 0)
        r = errno == EPERM ? ft_fail(e, FT_ESYS, EPERM, "changing persist on '%s' needs CAP_NET_ADMIN", d->name)
                           : ft_fail_os(e, errno, "TUNSETPERSIST on '%s' failed", d->name);
    ft_device_leave(d);
    return r;
}

int ft_linux_features(uint32_t *flags, ft_err *e)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return explain_open_error(errno, "/dev/net/tun", e);
    unsigned int f = 0;
    int r = ioctl(fd, TUNGETFEATURES, &f);
    int err = errno;
    close(fd);
    if (r != 0)
        return ft_fail_os(e, err, "TUNGETFEATURES failed");
    *flags = f;
    return FT_OK;
}
#endif
