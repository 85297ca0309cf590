/* core/ft_device.c - what every backend shares: errors, packet validation, receive with a timeout, send with a
 * full-queue policy, and a close that wakes waiters and waits for calls in progress. */
#include "core/ft_device.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

int ft_fail(ft_err *e, int status, int errnum, const char *fmt, ...)
{
    if (e) {
        e->status = status;
        e->errnum = errnum;
        e->oserr = 0;
        e->index = -1;
        e->sent = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
    }
    return status;
}

int ft_fail_os(ft_err *e, long oserr, const char *fmt, ...)
{
    if (e) {
        char what[150], why[96];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        ft_oserror_string(oserr, why, sizeof(why));
        e->status = FT_ESYS;
        e->errnum = ft_errno_from_oserror(oserr);
        e->oserr = oserr;
        e->index = -1;
        e->sent = 0;
        snprintf(e->msg, sizeof(e->msg), "%s: %s", what, why);
    }
    return FT_ESYS;
}

size_t ft_batch_arena_size(uint32_t packets, uint32_t max_packet)
{
    /* Room for `packets` packets of a common Ethernet-sized MTU, plus one maximum-sized window so the last
     * read can never be truncated. Larger packets simply make a batch hold fewer. */
    return (size_t)packets * 2048u + max_packet;
}

/* ---- packets -------------------------------------------------------------------------------------- */

int ft_packet_check(const uint8_t *p, size_t len, uint32_t mtu, ft_err *e)
{
    if (len == 0)
        return ft_fail(e, FT_EPACKET, EINVAL, "packet is empty; an IPv4 or IPv6 packet of 20..%u bytes is allowed",
                       mtu);
    if (len > FT_MAX_PACKET)
        return ft_fail(e, FT_EPACKET, EMSGSIZE, "packet of %zu bytes is larger than the IP maximum of %u bytes",
                       len, FT_MAX_PACKET);
    if (len > mtu)
        return ft_fail(e, FT_EPACKET, EMSGSIZE, "packet of %zu bytes is larger than the device MTU of %u bytes",
                       len, mtu);
    unsigned version = p[0] >> 4;
    if (version == 4) {
        unsigned ihl = (p[0] & 0x0fu) * 4u;
        if (len < 20)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv4 packet of %zu bytes is shorter than the 20-byte IPv4 header", len);
        if (ihl < 20 || ihl > len)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv4 header length field says %u bytes; it must be 20..60 and within the %zu-byte packet",
                           ihl, len);
        unsigned total = ((unsigned)p[2] << 8) | p[3];
        if (total < ihl || total > len)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv4 total length field says %u bytes; it must be at least the %u-byte header and at "
                           "most the %zu bytes given",
                           total, ihl, len);
        return FT_OK;
    }
    if (version == 6) {
        if (len < 40)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv6 packet of %zu bytes is shorter than the 40-byte IPv6 header", len);
        size_t payload = ((size_t)p[4] << 8) | p[5];
        if (40 + payload > len)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv6 payload length field says %zu bytes; at most the %zu bytes after the 40-byte "
                           "header are allowed",
                           payload, len - 40);
        return FT_OK;
    }
    return ft_fail(e, FT_EPACKET, EINVAL,
                   "packet starts with IP version %u; only IPv4 (first byte 0x45..0x4f) and IPv6 (0x60..0x6f) are "
                   "allowed",
                   version);
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

int ft_device_init(ft_device *d, ft_err *e)
{
    d->close_event = ft_event_create();
    if (!d->close_event)
        return ft_fail_os(e, ft_last_oserror(), "could not create the close event");
    ft_atomic_store(&d->users, 0);
    ft_atomic_store(&d->closed, 0);
    if (d->max_packet == 0)
        d->max_packet = FT_MAX_PACKET;
    return FT_OK;
}

int ft_device_enter(ft_device *d, ft_err *e)
{
    (void)ft_atomic_add(&d->users, 1);
    if (ft_atomic_load(&d->closed)) {
        ft_device_leave(d);
        if (d->forked)
            return ft_fail(e, FT_ECLOSED, EBADF,
                           "the device was opened before fork(); a child process cannot use it (open a new one)");
        return ft_fail(e, FT_ECLOSED, EBADF, "the device is closed");
    }
    return FT_OK;
}

enum { NOT_RELEASED = 0, RELEASING = 1, RELEASED = 2 };

/* Releases the backend if the device is closed and nobody is inside it; whoever gets there first does it. */
static void release_if_idle(ft_device *d)
{
    if (ft_atomic_load(&d->users) == 0 && ft_atomic_load(&d->closed) &&
        ft_atomic_cas(&d->released, NOT_RELEASED, RELEASING)) {
        d->ops->close(d);
        /* Nobody waits on it any more: only users do, and a closed device takes none; the shutdown that set it
         * marked the device closed only afterwards. */
        ft_event_destroy(d->close_event);
        d->close_event = NULL;
        ft_atomic_store(&d->released, RELEASED);
    }
}

void ft_device_leave(ft_device *d)
{
    if (ft_atomic_add(&d->users, -1) == 0 && ft_atomic_load(&d->closed))
        release_if_idle(d);
}

void ft_device_shutdown(ft_device *d)
{
    if (!d)
        return;
    /* The event first, then the flag: the release (which needs the flag) destroys the event. A waiter woken in
     * between sees its close_event and ends as closed. */
    if (ft_atomic_cas(&d->closing, 0, 1)) {
        ft_event_set(d->close_event);
        ft_atomic_store(&d->closed, 1);
    }
    release_if_idle(d);
}

void ft_device_close(ft_device *d)
{
    if (!d)
        return;
    ft_device_shutdown(d);
    /* Every wait includes close_event, so calls in progress leave within one iteration; the last one out
     * releases the backend (or we do, below, if there was none). */
    while (ft_atomic_load(&d->users) > 0)
        ft_sleep_us(1000);
    release_if_idle(d);
    while (ft_atomic_load(&d->released) != RELEASED)
        ft_sleep_us(100); /* another thread is in the backend's close right now */
}

void ft_device_forget_after_fork(ft_device *d)
{
    if (!d)
        return;
    d->forked = 1;
    ft_atomic_store(&d->closing, 1);
    ft_atomic_store(&d->closed, 1);
    ft_atomic_store(&d->users, 0);
    if (ft_atomic_cas(&d->released, NOT_RELEASED, RELEASING)) {
        if (d->ops->forget)
            d->ops->forget(d);
        ft_event_destroy(d->close_event); /* the child's copy: none of its threads waits on it */
        d->close_event = NULL;
    }
    ft_atomic_store(&d->released, RELEASED);
}

void ft_device_free(ft_device *d)
{
    if (!d)
        return;
    ft_device_close(d);
    ft_event_destroy(d->close_event);
    free(d);
}

void ft_device_count_tx_drops(ft_device *d, uint64_t n) { ft_atomic_add64(&d->stats.tx_dropped_full, n); }

void ft_device_get_stats(ft_device *d, ft_stats *out)
{
    ft_stats_atomic *in = &d->stats;
    FT_STATS_FIELDS(FT_COUNTER_LOAD_)
}

/* ---- waiting -------------------------------------------------------------------------------------- */

static int remaining_ms(int timeout_ms, uint64_t deadline)
{
    if (timeout_ms < 0)
        return -1;
    uint64_t now = ft_now_ns();
    if (now >= deadline)
        return 0;
    return (int)((deadline - now + 999999u) / 1000000u);
}

int ft_device_wait(ft_device *d, int q, int dir, int timeout_ms, ft_event *wake, ft_err *e)
{
    ft_handle h[FT_WAIT_MAX];
    int poll_out = 0;
    int n = d->ops->wait_handles(d, q, dir, h, FT_WAIT_MAX - 2, &poll_out);
    if (n < 0) { /* no such queue, or (never expected) a backend that has nothing to wait on for it */
        if (ft_device_check_queue(d, q, e) != FT_OK)
            return FT_EINVAL;
        return ft_fail(e, FT_EINVAL, EINVAL, "queue %d of '%s' has nothing to wait on", q, d->name);
    }
    int close_at = n;
    h[n++] = ft_event_handle(d->close_event);
    int wake_at = -1;
    if (wake) {
        wake_at = n;
        h[n++] = ft_event_handle(wake);
    }
    long oserr = 0;
    int r = ft_wait_any(h, n, poll_out, timeout_ms, &oserr);
    if (d->ops->wait_done)
        d->ops->wait_done(d, q, dir);
    if (r == FT_WAIT_TIMEOUT)
        return FT_ETIMEDOUT;
    if (r == FT_WAIT_ERROR)
        return ft_fail_os(e, oserr, "waiting on the device failed");
    if (r == wake_at)
        return FT_EWOKEN;
    if (r == close_at || ft_atomic_load(&d->closed))
        return ft_fail(e, FT_ECLOSED, EBADF, "the device was closed");
    return FT_OK;
}

/* ---- receive -------------------------------------------------------------------------------------- */

static int recv_some(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    if (q != FT_ALL_QUEUES)
        return d->ops->recv(d, q, b, e);
    /* Any queue: visit all of them, starting one further each call, so that one busy queue cannot hide
     * packets waiting on another. */
    int total = 0;
    int first = 0;
    if (d->nqueues > 1) { /* a hint for fairness: racing callers may start at the same queue */
        first = (int)(ft_atomic_load64(&d->next_queue) % (uint64_t)d->nqueues);
        ft_atomic_add64(&d->next_queue, 1);
    }
    for (int k = 0; k < d->nqueues; k++) {
        if (b->count >= b->max || b->cap - b->used < d->max_packet)
            break;
        int i = (first + k) % d->nqueues;
        int r = d->ops->recv(d, i, b, e);
        if (r > 0)
            total += r;
        else if (r != FT_EAGAIN)
            return total > 0 ? total : r;
    }
    return total > 0 ? total : FT_EAGAIN;
}

int ft_device_recv(ft_device *d, int q, ft_batch *b, int timeout_ms, ft_err *e)
{
    if (b->max == 0 || b->cap < d->max_packet)
        return ft_fail(e, FT_EINVAL, EINVAL, "batch of %u packets and %zu bytes cannot hold a %u-byte packet",
                       b->max, b->cap, d->max_packet);
    if (q != FT_ALL_QUEUES && ft_device_check_queue(d, q, e) != FT_OK)
        return FT_EINVAL;
    int r = ft_device_enter(d, e);
    if (r != FT_OK)
        return r;
    b->count = 0;
    b->used = 0;
    uint64_t deadline = timeout_ms > 0 ? ft_now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    for (;;) {
        r = recv_some(d, q, b, e);
        if (r > 0) {
            ft_atomic_add64(&d->stats.rx_packets, b->count);
            ft_atomic_add64(&d->stats.rx_bytes, b->used);
            ft_atomic_add64(&d->stats.rx_batches, 1);
            r = (int)b->count;
            break;
        }
        if (r != FT_EAGAIN) {
            if (r != FT_ECLOSED)
                ft_atomic_add64(&d->stats.rx_errors, 1);
            break;
        }
        int left = remaining_ms(timeout_ms, deadline);
        if (left == 0) {
            r = FT_ETIMEDOUT;
            break;
        }
        ft_atomic_add64(&d->stats.waits, 1);
        r = ft_device_wait(d, q, FT_WAIT_READ, left, NULL, e);
        if (r != FT_OK && r != FT_ETIMEDOUT)
            break;
    }
    ft_device_leave(d);
    return r;
}

/* ---- send ----------------------------------------------------------------------------------------- */

/* Packet i of n failed validation (e says why): count it, say which one, and that nothing was sent. */
int ft_device_reject(ft_device *d, uint32_t i, uint32_t n, const char *unit, ft_err *e)
{
    ft_atomic_add64(&d->stats.tx_rejected, 1);
    if (n > 1) {
        char m[200];
        snprintf(m, sizeof(m), "%.199s", e->msg);
        snprintf(e->msg, sizeof(e->msg), "%s %u of %u: %.199s (nothing was sent)", unit, i, n, m);
    }
    e->index = (long)i;
    return e->status;
}

/* ft_device_send_loop inside the device: the caller entered it. */
static int send_loop(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_send_step step, void *ctx, int policy,
                     int timeout_ms, const char *full, ft_err *e)
{
    int r;
    uint64_t deadline = timeout_ms > 0 ? ft_now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    uint32_t done = 0, refused = 0, went = 0;
    long first_refused = -1;
    ft_err refusal;
    int result = 0;
    while (done < n) {
        uint32_t sent = 0;
        uint64_t bytes = 0;
        r = step(d, q, ctx, pkts, done, n, &sent, &bytes, e);
        if (r > 0) {
            ft_atomic_add64(&d->stats.tx_packets, sent);
            ft_atomic_add64(&d->stats.tx_bytes, bytes);
            went += (uint32_t)r; /* handled: sent, or dropped and counted by the step (UDP: unreachable) */
            done += (uint32_t)r;
            continue;
        }
        if (r == FT_EREFUSED) { /* this one packet: skip it, send the rest, report it at the end */
            ft_atomic_add64(&d->stats.tx_errors, 1);
            if (refused++ == 0) {
                first_refused = (long)done;
                refusal = *e;
            }
            done++;
            continue;
        }
        if (r == 0)
            r = FT_EFULL;
        if (r != FT_EFULL) {
            if (r != FT_ECLOSED && r != FT_EEOF)
                ft_atomic_add64(&d->stats.tx_errors, 1);
            result = r;
            break;
        }
        if (policy == FT_FULL_RAISE) {
            ft_fail(e, FT_EFULL, ENOBUFS, "%s; %u of %u were sent", full, went, n);
            result = FT_EFULL;
            break;
        }
        if (policy == FT_FULL_DROP) {
            ft_atomic_add64(&d->stats.tx_dropped_full, n - done);
            break;
        }
        int left = remaining_ms(timeout_ms, deadline);
        if (left == 0) { /* the caller decides: wait again, or drop with ft_device_count_tx_drops */
            result = FT_ETIMEDOUT;
            break;
        }
        ft_atomic_add64(&d->stats.tx_waits, 1);
        r = ft_device_wait(d, q, FT_WAIT_WRITE, left, NULL, e);
        if (r != FT_OK && r != FT_ETIMEDOUT) {
            result = r;
            break;
        }
    }
    if (result == 0 && refused > 0) {
        char why[200];
        snprintf(why, sizeof(why), "%.199s", refusal.msg);
        *e = refusal;
        snprintf(e->msg, sizeof(e->msg), "%u of %u packets refused by the system, the first is packet %ld: %.150s",
                 refused, n, first_refused, why);
        e->status = FT_EREFUSED;
        e->index = first_refused;
        result = FT_EREFUSED;
    }
    if (result < 0) {
        /* How many went before the failure; after a timeout or a full device, where the caller resumes. */
        e->sent = went;
        if (result == FT_ETIMEDOUT || result == FT_EFULL)
            e->index = (long)done;
        return result;
    }
    return (int)went;
}

int ft_device_send_loop(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_send_step step, void *ctx,
                        int policy, int timeout_ms, const char *full, ft_err *e)
{
    int r = ft_device_enter(d, e);
    if (r != FT_OK)
        return r;
    r = send_loop(d, q, pkts, n, step, ctx, policy, timeout_ms, full, e);
    ft_device_leave(d);
    return r;
}

/* The device's own step: the backend's send (or send_vnet with the headers in ctx). */
static int device_step(ft_device *d, int q, void *ctx, const ft_pkt *pkts, uint32_t done, uint32_t n, uint32_t *sent,
                       uint64_t *bytes, ft_err *e)
{
    const uint8_t *hdrs = ctx;
    int r = hdrs ? d->ops->send_vnet(d, q, pkts + done, hdrs + (size_t)done * FT_VNET_HDR_SIZE, n - done, e)
                 : d->ops->send(d, q, pkts + done, n - done, e);
    if (r > 0) {
        *sent = (uint32_t)r;
        for (uint32_t i = done; i < done + (uint32_t)r; i++)
            *bytes += pkts[i].len;
    }
    return r;
}

int ft_device_send(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, int policy, int timeout_ms, ft_err *e)
{
    if (ft_device_check_queue(d, q, e) != FT_OK)
        return FT_EINVAL;
    /* Entered once, for the checks and the sends: a closed device says so first, and a backend's check reads its
     * state, which a close on another thread must not release meanwhile. */
    int r = ft_device_enter(d, e);
    if (r != FT_OK)
        return r;
    uint32_t mtu = (uint32_t)ft_atomic_load(&d->mtu);
    for (uint32_t i = 0; i < n; i++) {
        int ok = d->ops->check ? d->ops->check(d, pkts[i].data, pkts[i].len, e)
                               : ft_packet_check(pkts[i].data, pkts[i].len, mtu, e);
        if (ok != FT_OK) {
            ft_device_leave(d);
            return ft_device_reject(d, i, n, "packet", e);
        }
    }
    r = send_loop(d, q, pkts, n, device_step, NULL, policy, timeout_ms, "the device's send queue is full", e);
    ft_device_leave(d);
    return r;
}

/* ---- configuration -------------------------------------------------------------------------------- */

/* Closed first, then supported: after close every call says the device is closed. */
#define CONFIG_CALL(hook, what, ...)                                                                       \
    do {                                                                                                   \
        int r_ = ft_device_enter(d, e);                                                                    \
        if (r_ != FT_OK)                                                                                   \
            return r_;                                                                                     \
        r_ = d->ops->hook ? d->ops->hook(d, __VA_ARGS__, e)                                                \
                          : ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "the %s backend cannot %s", d->ops->name, what); \
        ft_device_leave(d);                                                                                \
        return r_;                                                                                         \
    } while (0)

int ft_device_get_mtu(ft_device *d, uint32_t *mtu, ft_err *e)
{
    int r = ft_device_enter(d, e);
    if (r != FT_OK)
        return r;
    if (!d->ops->get_mtu) {
        *mtu = (uint32_t)ft_atomic_load(&d->mtu);
        ft_device_leave(d);
        return FT_OK;
    }
    r = d->ops->get_mtu(d, mtu, e);
    if (r == FT_OK)
        ft_atomic_store(&d->mtu, (int)*mtu); /* someone may have changed it behind our back */
    ft_device_leave(d);
    return r;
}

int ft_device_set_mtu(ft_device *d, uint32_t mtu, ft_err *e)
{
    if (ft_limit_check(&ft_limit_mtu, mtu, e) != FT_OK)
        return FT_EINVAL;
    int r = ft_device_enter(d, e);
    if (r != FT_OK)
        return r;
    r = d->ops->set_mtu ? d->ops->set_mtu(d, mtu, e) : FT_OK;
    if (r == FT_OK)
        ft_atomic_store(&d->mtu, (int)mtu);
    ft_device_leave(d);
    return r;
}

int ft_device_set_up(ft_device *d, int up, ft_err *e) { CONFIG_CALL(set_up, "bring the link up or down", up); }
int ft_device_is_up(ft_device *d, int *up, ft_err *e) { CONFIG_CALL(is_up, "report the link state", up); }
int ft_device_get_index(ft_device *d, uint32_t *index, ft_err *e)
{
    CONFIG_CALL(get_index, "report an interface index", index);
}
int ft_addr_check(int family, unsigned prefix, ft_err *e)
{
    if (family != 4 && family != 6)
        return ft_fail(e, FT_EINVAL, EAFNOSUPPORT, "address family %d is not allowed; use 4 or 6", family);
    unsigned max = family == 4 ? 32u : 128u;
    if (prefix > max)
        return ft_fail(e, FT_EINVAL, EINVAL, "prefix length %u is out of range for IPv%d; allowed: 0..%u", prefix,
                       family, max);
    return FT_OK;
}

int ft_device_address(ft_device *d, int add, const ft_addr *a, ft_err *e)
{
    if (ft_addr_check(a->family, a->prefix, e) != FT_OK)
        return FT_EINVAL;
    CONFIG_CALL(address, add ? "add addresses" : "remove addresses", add, a);
}
int ft_device_list_addresses(ft_device *d, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e)
{
    CONFIG_CALL(list_addresses, "list addresses", out, max, n);
}
int ft_device_get_txqueuelen(ft_device *d, uint32_t *len, ft_err *e)
{
    CONFIG_CALL(get_txqueuelen, "report a transmit queue length", len);
}
int ft_device_set_txqueuelen(ft_device *d, uint32_t len, ft_err *e)
{
    CONFIG_CALL(set_txqueuelen, "set a transmit queue length", len);
}
int ft_device_os_drops(ft_device *d, uint64_t *rx_dropped, uint64_t *tx_dropped, ft_err *e)
{
    CONFIG_CALL(os_drops, "report the system's drop counters", rx_dropped, tx_dropped);
}

int ft_device_route(ft_device *d, int add, const ft_route *r, ft_err *e)
{
    if (ft_addr_check(r->family, r->prefix, e) != FT_OK)
        return FT_EINVAL;
    CONFIG_CALL(route, "manage routes", add, r);
}

/* What a super-packet's virtio-net header may say: checked so that a forwarded header cannot make the kernel
 * read past the packet (it validates too, but a clear error beats a silent drop). */
int ft_device_send_vnet(ft_device *d, int q, const ft_pkt *pkts, const uint8_t *hdrs, uint32_t n, int policy,
                        int timeout_ms, ft_err *e)
{
    if (!d->ops->send_vnet || !d->ops->check_vnet)
        return ft_fail(e, FT_EUNSUPPORTED, ENOSYS,
                       "super-packets can only be sent to a device opened with offload (this one has none)");
    if (ft_device_check_queue(d, q, e) != FT_OK)
        return FT_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        if (d->ops->check_vnet(pkts[i].data, pkts[i].len, hdrs + (size_t)i * FT_VNET_HDR_SIZE, e) != FT_OK)
            return ft_device_reject(d, i, n, "packet", e);
    }
    return ft_device_send_loop(d, q, pkts, n, device_step, (void *)hdrs, policy, timeout_ms,
                              "the device's send queue is full", e);
}
