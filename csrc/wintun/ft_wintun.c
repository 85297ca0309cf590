/* wintun/ft_wintun.c - a TUN device on a Wintun adapter: open or create the adapter, run one session
 * (its two rings are the device's one queue), receive and send through wintun.dll, close in the safe
 * order. Configuration hooks live in wintun/ft_wintun_config.c; loading the DLL in wintun/ft_wintun_loader.c. */
#ifdef _WIN32
#include "wintun/ft_wintun_internal.h"
#include "wintun/ft_wintun_config.h"
#include "offload/ft_offload.h"

#include <winsock2.h> /* before iphlpapi.h, which declares the netioapi calls only after it */
#include <ws2ipdef.h>
#include <iphlpapi.h> /* ConvertInterfaceLuidToGuid */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

/* After a crash an adapter of the same name can linger while Wintun removes it in the background:
 * creating is retried this often, this far apart, before we open the leftover instead. */
#define CREATE_RETRIES 3
#define CREATE_RETRY_MS 200

/* There is no "room in the send ring" event (the driver signals only its own side), so a sender waiting
 * for room waits on a timer that fires this soon and then retries. A waitable timer, high-resolution
 * where Windows has one (10 1803+), because Sleep(1) rounds up to the ~15.6 ms scheduler tick; a busy
 * driver takes packets off the ring continuously, so ~200 us keeps latency low without busy-waiting. */
#define ROOM_RETRY_100NS 2000

/* Wintun 0.14.1 can miss a wake-up of the read event (fixed after that release): a reader asleep on it
 * would stall until the next packet (a TCP retransmit, seconds). A wait on the read event therefore also
 * ends after a while and the reader looks at the ring again: 10 ms after a packet arrived (the race
 * happens while packets flow), doubling with every wait that follows up to 1 s, so a missed wake-up
 * costs milliseconds under traffic and an idle device one wake-up a second. */
#define READ_STALL_MIN_100NS 100000
#define READ_STALL_MAX_100NS 10000000

/* Wintun 0.14.1 can also corrupt its ring under parallel senders, which it reports as ERROR_INVALID_DATA.
 * The session is then ended and started again (the packets in the ring are lost, counted in rx_errors),
 * at most this many times per device before the device gives up with the error. */
#define MAX_RESTARTS 8

/* ring_capacity "auto" (FT_WINTUN_AUTO_RING): when the rings overflow the session is restarted with twice
 * the capacity, up to Wintun's 64 MiB, at most once per GROW_INTERVAL_MS (GetTickCount64: monotonic). Wintun
 * 0.14 tells nobody how full a ring is or what the driver dropped, so overflow is judged by what we see:
 *   - send: WintunAllocateSendPacket says ERROR_BUFFER_OVERFLOW (the ring is full; counted in tx_dropped_full
 *     or waited on, as the caller's on_full says);
 *   - receive: the reader took three quarters of a ring's worth of bytes before it found the ring empty (it
 *     woke to a ring that was nearly full), or twice a ring's worth without finding it empty at all (the
 *     driver fills it as fast as we drain it, so it has no room for a burst).
 * Bytes are counted as Wintun's ring stores them: a 4-byte size, the packet, aligned to 4. A restart loses
 * the packets in the rings at that moment (as the corrupt-ring restart does; TCP resends them). */
#define MAX_GROWS 9 /* 128 KiB -> 64 MiB */
#define GROW_INTERVAL_MS 2000
#define RING_RECORD(size) ((4u + (uint64_t)(size) + 3u) & ~(uint64_t)3u)

/* coalesce (FT_WINTUN_COALESCE): consecutive TCP segments of one flow are merged into one IP packet of up to
 * 64 KiB by the Linux coalescer (ft_offload_coalesce), whose units are a virtio-net header and an IP packet
 * whose TCP checksum holds only the pseudo-header sum: the header is dropped and the checksum finished here.
 * Windows' stack pays per packet, so fewer, bigger packets cost it less (only measurable on Windows). The
 * buffer takes one window of ordinary packets, or a single packet of the largest size. */
#define COALESCE_BUF (256u << 10)

#ifndef CREATE_WAITABLE_TIMER_MANUAL_RESET
#define CREATE_WAITABLE_TIMER_MANUAL_RESET 0x00000001
#endif
#ifndef CREATE_WAITABLE_TIMER_HIGH_RESOLUTION
#define CREATE_WAITABLE_TIMER_HIGH_RESOLUTION 0x00000002
#endif

typedef struct wt_dev {
    const ft_wintun_api *api;
    WINTUN_ADAPTER_HANDLE adapter;
    /* Shared by every call into the session (receive, send, reading wait_event); exclusive to restart it. */
    SRWLOCK session_lock;
    WINTUN_SESSION_HANDLE session;
    HANDLE read_event;   /* owned by the session: never closed here */
    HANDLE wait_event;   /* ours: a duplicate of read_event, what waiters wait on */
    /* Duplicates of the events of ended sessions: a waiter may still hold one (its bounded wait ends it),
     * so they are closed only with the device. */
    HANDLE old_events[MAX_RESTARTS + MAX_GROWS];
    int nold;            /* entries of old_events */
    int restarts;
    unsigned generation; /* counts sessions, under session_lock */
    HANDLE room_timer;   /* ours: see ROOM_RETRY_100NS */
    HANDLE read_timer;   /* ours: see READ_STALL_MIN_100NS */
    ft_atomic_int stall_100ns; /* how long the next wait on the read event may last */
    NET_LUID luid;
    int created;         /* closing the adapter handle removes the adapter */
    uint32_t capacity;   /* of the current session: written under session_lock held exclusively */
    ft_atomic_int capacity_now; /* the same, for readers without the lock */
    int auto_ring;       /* FT_WINTUN_AUTO_RING, cleared when growing fails */
    ft_atomic_u64 last_grow_ms; /* GetTickCount64() of the last grow (or of the open, less the interval) */
    ft_atomic_int grows;
    /* coalesce: the buffer and tables one sender at a time uses (under co_lock, inside session_lock) */
    SRWLOCK co_lock;
    uint8_t *co_buf;
    ft_pkt co_units[FT_COALESCE_WINDOW];
    uint32_t co_segs[FT_COALESCE_WINDOW];
    ft_pkt co_in[FT_COALESCE_WINDOW];       /* remote_csum: a window of packets without their headers */
    uint8_t co_partial[FT_COALESCE_WINDOW]; /* ... and which of them had one */
    volatile LONG64 drained; /* (Interlocked*) ring bytes received since the reader last found the ring empty */
    /* Once the session is dead (ERROR_HANDLE_EOF, a corrupt ring) every call reports why, without
     * touching the DLL again: a reader ends instead of spinning on the error or flooding the log. */
    ft_atomic_int dead_claimed;
    ft_atomic_int dead_status;
    ft_err dead_err;     /* written by the claimant before dead_status is published */
} wt_dev;

static wt_dev *W(ft_device *d) { return d->impl; }
static void wt_close(ft_device *d);
/* The public accessors take any device: only a Wintun adapter's impl is a wt_dev (its close is wt_close). */
static int is_wintun(ft_device *d) { return d && d->ops && d->ops->close == wt_close; }
static int not_wintun(ft_device *d, ft_err *e)
{
    return ft_fail(e, FT_EINVAL, EINVAL, "%.60s is not a Wintun adapter (it is a %s device)", d ? d->name : "(null)",
                   d && d->ops ? d->ops->name : "closed");
}

static int with_oserr(ft_err *e, int status, DWORD oserr)
{
    if (e)
        e->oserr = (long)oserr;
    return status;
}

/* ---- a dead session --------------------------------------------------------------------------------- */

static int session_dead(wt_dev *w, ft_err *e)
{
    int status = ft_atomic_load(&w->dead_status);
    if (status != 0 && e)
        *e = w->dead_err;
    return status;
}

/* Records why the session died (the first reason wins) and reports it. */
static int mark_dead(wt_dev *w, ft_err *e, int status, int errnum, DWORD oserr, const char *msg)
{
    ft_fail(e, status, errnum, "%s", msg);
    with_oserr(e, status, oserr);
    if (ft_atomic_cas(&w->dead_claimed, 0, 1)) {
        ft_fail(&w->dead_err, status, errnum, "%s", msg);
        w->dead_err.oserr = (long)oserr;
        ft_atomic_store(&w->dead_status, status);
    }
    return status;
}

static int fail_eof(wt_dev *w, ft_err *e)
{
    return mark_dead(w, e, FT_EEOF, EPIPE, ERROR_HANDLE_EOF,
                     "the Wintun adapter is going away (ERROR_HANDLE_EOF): the session has ended; close the "
                     "device and open it again");
}

/* ---- receive ---------------------------------------------------------------------------------------- */

static int recv_error(wt_dev *w, DWORD err, ft_err *e)
{
    if (err == ERROR_HANDLE_EOF)
        return fail_eof(w, e);
    if (err == ERROR_INVALID_DATA)
        return mark_dead(w, e, FT_ECORRUPT, EIO, err,
                         "Wintun reports its receive ring corrupt (ERROR_INVALID_DATA): the session cannot go on; "
                         "close the device and open it again");
    return ft_fail_os(e, (long)err, "receiving from the Wintun session failed");
}

/* An IPv4 packet of at least its 20-byte header, or IPv6 of at least its 40-byte header. */
static int is_ip_packet(const BYTE *p, DWORD size)
{
    unsigned version = p[0] >> 4;
    return (version == 4 && size >= 20) || (version == 6 && size >= 40);
}

static int start_session(wt_dev *w, const char *name8, ft_err *e);

/* Ends the session and starts a new one, unless another thread has done so already (gen: the session the
 * caller saw). Two reasons:
 *   grow 0: the ring is corrupt; gives up, marking the device dead, after MAX_RESTARTS;
 *   grow 1: the rings overflow (auto capacity): the new session gets twice the capacity; if that fails the
 *           old capacity is tried again and auto growing stops. */
static int restart_session(ft_device *d, wt_dev *w, unsigned gen, const char *why, int grow, ft_err *e)
{
    char msg[220];
    AcquireSRWLockExclusive(&w->session_lock);
    int r = session_dead(w, e);
    if (r != 0 || w->generation != gen) {
        ReleaseSRWLockExclusive(&w->session_lock);
        return r;
    }
    ULONGLONG now = GetTickCount64();
    if (grow && (!w->auto_ring || w->capacity >= FT_WINTUN_MAX_RING_CAPACITY ||
                 now - (ULONGLONG)ft_atomic_load64(&w->last_grow_ms) < GROW_INTERVAL_MS ||
                 w->nold >= MAX_RESTARTS + MAX_GROWS)) {
        ReleaseSRWLockExclusive(&w->session_lock);
        return FT_OK;
    }
    if (!grow && w->restarts >= MAX_RESTARTS) {
        snprintf(msg, sizeof(msg), "%s, after %d session restarts: giving up; close the device and open it again",
                 why, w->restarts);
        r = mark_dead(w, e, FT_ECORRUPT, EIO, ERROR_INVALID_DATA, msg);
        ReleaseSRWLockExclusive(&w->session_lock);
        return r;
    }
    uint32_t old_capacity = w->capacity;
    w->api->EndSession(w->session);
    w->session = NULL;
    w->read_event = NULL;
    w->old_events[w->nold++] = w->wait_event;
    w->wait_event = NULL;
    w->generation++;
    ft_atomic_store(&w->stall_100ns, READ_STALL_MIN_100NS); /* look at the new ring soon */
    InterlockedExchange64(&w->drained, 0);
    if (grow) {
        w->capacity = old_capacity * 2;
        ft_atomic_store64(&w->last_grow_ms, now);
    } else {
        w->restarts++;
        ft_atomic_add64(&d->stats.rx_errors, 1);
    }
    ft_err start_err;
    r = start_session(w, d->name, &start_err);
    if (r != FT_OK && grow && !w->session) { /* no memory for the bigger rings, most likely: keep the old */
        snprintf(msg, sizeof(msg), "could not grow the Wintun rings of \"%.60s\" to %u bytes (%.80s); staying at %u "
                 "bytes", d->name, w->capacity, start_err.msg, old_capacity);
        w->capacity = old_capacity;
        w->auto_ring = 0;
        r = start_session(w, d->name, &start_err);
        if (r == FT_OK)
            ft_wintun_log_own(WINTUN_LOG_WARN, msg);
    }
    if (r != FT_OK) {
        snprintf(msg, sizeof(msg), "%s, and restarting the session failed: %s", why, start_err.msg);
        r = mark_dead(w, e, r, start_err.errnum ? start_err.errnum : EIO, (DWORD)start_err.oserr, msg);
    }
    int grown = grow && r == FT_OK && w->capacity > old_capacity;
    if (grown)
        (void)ft_atomic_add(&w->grows, 1);
    ft_atomic_store(&w->capacity_now, (int)w->capacity);
    int first = !grow && w->restarts == 1;
    ReleaseSRWLockExclusive(&w->session_lock);
    if (grown) { /* rare (at most MAX_GROWS per device): every one is logged */
        snprintf(msg, sizeof(msg), "%s on \"%.60s\": restarted the Wintun session with %u-byte rings (was %u; the "
                 "packets in the old rings are lost)", why, d->name, w->capacity, old_capacity);
        ft_wintun_log_own(WINTUN_LOG_INFO, msg);
    }
    if (r == FT_OK && first) { /* logged once per device; every restart is counted in rx_errors */
        snprintf(msg, sizeof(msg), "%s on \"%.60s\": restarted the Wintun session (the packets in its ring are "
                 "lost; restarts count in stats.rx_errors, at most %d)", why, d->name, MAX_RESTARTS);
        ft_wintun_log_own(WINTUN_LOG_WARN, msg);
    }
    return r;
}

/* Grows the rings if auto capacity is on and the last grow is long enough ago; the checks before the lock
 * are cheap and keep the common case (no auto, or at the limit) from taking it. A failure is the device's
 * death, which every later call reports: nothing to return here. */
static void maybe_grow(ft_device *d, wt_dev *w, unsigned gen, const char *why)
{
    if (!w->auto_ring || (uint32_t)ft_atomic_load(&w->capacity_now) >= FT_WINTUN_MAX_RING_CAPACITY ||
        GetTickCount64() - (ULONGLONG)ft_atomic_load64(&w->last_grow_ms) < GROW_INTERVAL_MS)
        return;
    ft_err ignored;
    restart_session(d, w, gen, why, 1, &ignored);
}

static int wt_recv(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    (void)q;
    wt_dev *w = W(d);
    int status = session_dead(w, e);
    if (status)
        return status;
    char corrupt[120];
    corrupt[0] = '\0';
    int r = FT_OK, n = 0;
    AcquireSRWLockShared(&w->session_lock);
    status = session_dead(w, e); /* again: a restart may have failed while we waited for the lock */
    if (status) {
        ReleaseSRWLockShared(&w->session_lock);
        return status;
    }
    unsigned gen = w->generation;
    uint64_t cap = w->capacity, ring_bytes = 0;
    int empty = 0;
    while (b->count < b->max && b->cap - b->used >= d->max_packet) {
        DWORD size = 0;
        BYTE *p = w->api->ReceivePacket(w->session, &size);
        if (!p) {
            DWORD err = GetLastError();
            if (err == ERROR_INVALID_DATA)
                snprintf(corrupt, sizeof(corrupt), "Wintun reports its receive ring corrupt (ERROR_INVALID_DATA)");
            else if (err != ERROR_NO_MORE_ITEMS)
                r = recv_error(w, err, e);
            else
                empty = 1;
            break;
        }
        if (size == 0 || size > WINTUN_MAX_IP_PACKET_SIZE) {
            /* Not released: with an impossible size the ring's bookkeeping cannot be trusted either. */
            snprintf(corrupt, sizeof(corrupt), "Wintun handed back a packet of %lu bytes (allowed: 1..%u): the "
                     "ring is corrupt", (unsigned long)size, (unsigned)WINTUN_MAX_IP_PACKET_SIZE);
            break;
        }
        if (!is_ip_packet(p, size)) {
            /* Windows hands Wintun IP packets only; anything else is counted and given back, never passed on. */
            w->api->ReleaseReceivePacket(w->session, p);
            ft_atomic_add64(&d->stats.rx_dropped_invalid, 1);
            ring_bytes += RING_RECORD(size);
            continue;
        }
        memcpy(b->data + b->used, p, size);
        w->api->ReleaseReceivePacket(w->session, p); /* at once: the driver needs the ring space back */
        b->offsets[b->count] = (uint32_t)b->used;
        b->lengths[b->count] = size;
        b->count++;
        b->used += size;
        ring_bytes += RING_RECORD(size);
        n++;
    }
    ReleaseSRWLockShared(&w->session_lock);
    if (w->auto_ring && !corrupt[0] && r == FT_OK) {
        if (empty) {
            uint64_t run = (uint64_t)InterlockedExchange64(&w->drained, 0) + ring_bytes;
            if (run >= cap / 4 * 3)
                maybe_grow(d, w, gen, "the Wintun receive ring was nearly full when the reader came to it");
        } else if (ring_bytes > 0 &&
                   (uint64_t)InterlockedExchangeAdd64(&w->drained, (LONG64)ring_bytes) + ring_bytes >= 2 * cap) {
            InterlockedExchange64(&w->drained, 0);
            maybe_grow(d, w, gen, "the reader never found the Wintun receive ring empty in twice its size");
        }
    }
    if (n > 0 && ft_atomic_load(&w->stall_100ns) != READ_STALL_MIN_100NS)
        ft_atomic_store(&w->stall_100ns, READ_STALL_MIN_100NS);
    if (corrupt[0])
        r = restart_session(d, w, gen, corrupt, 0, e); /* what was copied before stays good */
    if (n > 0)
        return n; /* a dead session reports itself again on the next call */
    return r != FT_OK ? r : FT_EAGAIN;
}

/* ---- send ------------------------------------------------------------------------------------------- */

static int send_error(wt_dev *w, DWORD err, ft_err *e)
{
    if (err == ERROR_BUFFER_OVERFLOW)
        return ft_fail(e, FT_EFULL, ENOBUFS, "the Wintun send ring is full");
    if (err == ERROR_HANDLE_EOF)
        return fail_eof(w, e);
    if (err == ERROR_NOT_ENOUGH_MEMORY || err == ERROR_OUTOFMEMORY)
        return ft_fail_os(e, (long)err, "Wintun could not allocate a send packet");
    return ft_fail_os(e, (long)err, "sending through the Wintun session failed");
}

static int send_locked(ft_device *d, wt_dev *w, const ft_pkt *pkts, uint32_t n, int *full, ft_err *e);
static int send_coalesced(ft_device *d, wt_dev *w, const ft_pkt *pkts, uint32_t n, int *full, ft_err *e);

static int wt_send(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_err *e)
{
    (void)q;
    wt_dev *w = W(d);
    int status = session_dead(w, e);
    if (status)
        return status;
    AcquireSRWLockShared(&w->session_lock);
    status = session_dead(w, e); /* again: a restart may have failed while we waited for the lock */
    unsigned gen = w->generation;
    int full = 0;
    int r = status ? status : w->co_buf && n > 1 ? send_coalesced(d, w, pkts, n, &full, e)
                                                   : send_locked(d, w, pkts, n, &full, e);
    ReleaseSRWLockShared(&w->session_lock);
    if (full)
        maybe_grow(d, w, gen, "the Wintun send ring was full");
    return r;
}

static int send_locked(ft_device *d, wt_dev *w, const ft_pkt *pkts, uint32_t n, int *full, ft_err *e)
{
    for (uint32_t i = 0; i < n; i++) {
        size_t len = pkts[i].len;
        /* ft_device_send validated already; this guard stays because one oversized allocation would make
         * the driver abandon the ring for good. */
        if (len == 0 || len > WINTUN_MAX_IP_PACKET_SIZE) {
            if (i > 0)
                return (int)i;
            return ft_fail(e, FT_EPACKET, EMSGSIZE, "a packet of %zu bytes cannot go through Wintun (allowed: 1..%u)",
                           len, (unsigned)WINTUN_MAX_IP_PACKET_SIZE);
        }
        /* behind an FT_RCSUM header (checked by ft_device_send): the ring gets the packet behind it */
        int behind = d->remote_csum && pkts[i].data[0] == FT_RCSUM_MAGIC && len > FT_RCSUM_HDR_SIZE;
        if (behind)
            len -= FT_RCSUM_HDR_SIZE;
        BYTE *slot = w->api->AllocateSendPacket(w->session, (DWORD)len);
        if (!slot) {
            DWORD err = GetLastError();
            *full = err == ERROR_BUFFER_OVERFLOW;
            int r = send_error(w, err, e);
            return i > 0 ? (int)i : r;
        }
        if (behind)
            ft_rcsum_complete_into(pkts[i].data, pkts[i].len, slot); /* the packet behind, checksum finished */
        else
            memcpy(slot, pkts[i].data, len);
        w->api->SendPacket(w->session, slot);
    }
    return (int)n;
}

/* One unit of ft_offload_coalesce (a virtio-net header, then an IP packet) as the IP packet Wintun takes:
 * the header is skipped and, for a merged packet, the TCP checksum finished. 0 for an impossible unit. */
static size_t unit_to_ip(ft_pkt *u)
{
    if (u->len <= FT_VNET_HDR_SIZE)
        return 0;
    ft_vnet_hdr h;
    ft_vnet_hdr_decode(u->data, &h);
    uint8_t *ip = (uint8_t *)u->data + FT_VNET_HDR_SIZE;
    size_t len = u->len - FT_VNET_HDR_SIZE;
    if ((h.flags & FT_VNET_F_NEEDS_CSUM) && ft_offload_complete_csum(ip, len, h.csum_start, h.csum_offset, NULL))
        return 0;
    u->data = ip;
    u->len = len;
    return len;
}

/* Like send_locked, for a device with coalesce: the units of a window are sent one by one. Flows may be
 * reordered relative to each other, so a part of the batch is not a prefix of it: as on Linux with offload,
 * a unit that finds the ring full is dropped and counted (tx_dropped_full, per packet it carries) and a unit
 * that fails otherwise is counted in tx_errors; the call reports an error only when it sent nothing. */
static int send_coalesced(ft_device *d, wt_dev *w, const ft_pkt *pkts, uint32_t n, int *full, ft_err *e)
{
    int result = (int)n, sent_any = 0;
    AcquireSRWLockExclusive(&w->co_lock);
    for (uint32_t i = 0; i < n;) {
        uint32_t k = n - i < FT_COALESCE_WINDOW ? n - i : FT_COALESCE_WINDOW;
        while (k > 1 && ft_offload_coalesce_bound(pkts + i, k) > COALESCE_BUF)
            k /= 2;
        for (uint32_t j = 0; j < k; j++) /* what ft_device_send checked; the unit size below relies on it */
            if (pkts[i + j].len == 0 || pkts[i + j].len > WINTUN_MAX_IP_PACKET_SIZE) {
                k = j;
                break;
            }
        if (k == 0) { /* the packet at i is impossible: the plain path explains it */
            result = i > 0 ? (int)i : send_locked(d, w, pkts + i, 1, full, e);
            goto out;
        }
        const ft_pkt *in = pkts + i;
        const uint8_t *partial = NULL;
        if (d->remote_csum) { /* packets behind an FT_RCSUM header go in without it, their checksums finished below */
            ft_rcsum_strip(in, k, w->co_in, w->co_partial);
            in = w->co_in;
            partial = w->co_partial;
        }
        int units = ft_offload_coalesce_ex(in, partial, k, FT_COALESCE_TCP, w->co_buf, COALESCE_BUF, w->co_units,
                                           w->co_segs, FT_COALESCE_WINDOW, e);
        if (units < 0) {
            result = i > 0 ? (int)i : units;
            goto out;
        }
        for (int u = 0; u < units; u++) {
            size_t len = unit_to_ip(&w->co_units[u]);
            BYTE *slot = len ? w->api->AllocateSendPacket(w->session, (DWORD)len) : NULL;
            if (slot) {
                memcpy(slot, w->co_units[u].data, len);
                w->api->SendPacket(w->session, slot);
                sent_any = 1;
                continue;
            }
            DWORD err = len ? GetLastError() : ERROR_INVALID_DATA;
            if (err == ERROR_BUFFER_OVERFLOW) {
                *full = 1;
                ft_device_count_tx_drops(d, w->co_segs[u]);
                continue;
            }
            if (!sent_any && i == 0 && u == 0) {
                result = send_error(w, err, e);
                goto out;
            }
            ft_atomic_add64(&d->stats.tx_errors, w->co_segs[u]);
        }
        i += k;
    }
out:
    ReleaseSRWLockExclusive(&w->co_lock);
    return result;
}

/* ---- waiting ---------------------------------------------------------------------------------------- */

static void arm_timer(HANDLE timer, LONGLONG due_100ns)
{
    LARGE_INTEGER due;
    due.QuadPart = -due_100ns; /* negative: relative to now */
    /* Re-arming also resets a manual-reset timer to non-signalled. It cannot fail for a valid handle; if it
     * did, the waiter would still end at its timeout or on close. */
    SetWaitableTimer(timer, &due, 0, NULL, NULL, FALSE);
}

static void arm_room_timer(wt_dev *w, LONGLONG due_100ns) { arm_timer(w->room_timer, due_100ns); }

static int wt_wait_handles(ft_device *d, int q, int dir, ft_handle *out, int max, int *poll_out)
{
    wt_dev *w = W(d);
    *poll_out = 0; /* Windows handles are signalled, not polled */
    if (max < 1 || (q != 0 && q != FT_ALL_QUEUES))
        return -1;
    if (ft_atomic_load(&w->dead_status)) {
        /* The read event will never fire again: wake the waiter now so its next call reports why. */
        arm_room_timer(w, 0);
        out[0] = w->room_timer;
        return 1;
    }
    if (dir == FT_WAIT_READ) {
        AcquireSRWLockShared(&w->session_lock);
        out[0] = w->wait_event;
        ReleaseSRWLockShared(&w->session_lock);
        if (!out[0]) { /* a restart failed just now: the session is dead, let the next call say so */
            arm_room_timer(w, 0);
            out[0] = w->room_timer;
            return 1;
        }
        if (max < 2)
            return 1;
        int stall = ft_atomic_load(&w->stall_100ns);
        arm_timer(w->read_timer, stall);
        ft_atomic_store(&w->stall_100ns, stall >= READ_STALL_MAX_100NS / 2 ? READ_STALL_MAX_100NS : stall * 2);
        out[1] = w->read_timer;
        return 2;
    }
    arm_room_timer(w, ROOM_RETRY_100NS);
    out[0] = w->room_timer;
    return 1;
}

/* ---- lifecycle -------------------------------------------------------------------------------------- */

/* Frees what was acquired. ft_device_close guarantees that no reader or sender is inside the DLL any more,
 * which matters: ending a session under a thread still in WintunReceivePacket is a use-after-free. */
static void release(wt_dev *w)
{
    if (w->session)
        w->api->EndSession(w->session);
    if (w->adapter)
        w->api->CloseAdapter(w->adapter);
    if (w->wait_event)
        CloseHandle(w->wait_event);
    for (int i = 0; i < w->nold; i++)
        if (w->old_events[i])
            CloseHandle(w->old_events[i]);
    if (w->room_timer)
        CloseHandle(w->room_timer);
    if (w->read_timer)
        CloseHandle(w->read_timer);
    free(w->co_buf);
    free(w);
}

static void wt_close(ft_device *d)
{
    release(W(d));
    d->impl = NULL;
}

/* ---- configuration: IP Helper on the adapter's LUID (wintun/ft_wintun_config.c) --------------------- */

static NET_LUID luid_of(ft_device *d)
{
    NET_LUID none;
    none.Value = 0;
    return W(d) ? W(d)->luid : none;
}

/* When IP Helper cannot tell (the interface is not bound yet right after creation, or the system lacks the
 * call, as Wine does), the MTU the device enforces on sends is the answer: the one it was opened or last
 * set with. Only before that is known does the failure reach the caller. */
static int wt_get_mtu(ft_device *d, uint32_t *mtu, ft_err *e)
{
    ft_err why;
    int r = ft_wintun_cfg_get_mtu(luid_of(d), d->name, mtu, &why);
    if (r == FT_OK)
        return FT_OK;
    int cached = ft_atomic_load(&d->mtu);
    if (cached > 0) {
        *mtu = (uint32_t)cached;
        return FT_OK;
    }
    if (e)
        *e = why;
    return r;
}

static int wt_set_mtu(ft_device *d, uint32_t mtu, ft_err *e)
{
    return ft_wintun_cfg_set_mtu(luid_of(d), d->name, mtu, e);
}

static int wt_set_up(ft_device *d, int up, ft_err *e)
{
    /* Wintun brings the link up when a session starts and down when it ends; there is no switch. */
    if (up)
        return FT_OK;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS,
                   "a Wintun adapter is up while its session runs and cannot be taken down on its own; close the "
                   "device \"%.60s\" to take it down",
                   d->name);
}

static int wt_is_up(ft_device *d, int *up, ft_err *e) { return ft_wintun_cfg_is_up(luid_of(d), d->name, up, e); }

static int wt_get_index(ft_device *d, uint32_t *index, ft_err *e)
{
    return ft_wintun_cfg_index(luid_of(d), d->name, index, e);
}

static int wt_address(ft_device *d, int add, const ft_addr *a, ft_err *e)
{
    return ft_wintun_cfg_address(luid_of(d), d->name, add, a, e);
}

static int wt_list_addresses(ft_device *d, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e)
{
    return ft_wintun_cfg_list_addresses(luid_of(d), d->name, out, max, n, e);
}

static int wt_route(ft_device *d, int add, const ft_route *r, ft_err *e)
{
    return ft_wintun_cfg_route(luid_of(d), d->name, add, r, e);
}

int ft_wintun_set_dns(ft_device *d, const ft_addr *servers, uint32_t n, ft_err *e)
{
    if (!is_wintun(d))
        return not_wintun(d, e);
    int r = ft_device_enter(d, e);
    if (r != FT_OK)
        return r;
    r = ft_wintun_cfg_dns(luid_of(d), d->name, servers, n, e);
    ft_device_leave(d);
    return r;
}

static const ft_backend_ops wintun_ops = {
    .name = "wintun",
    .recv = wt_recv,
    .send = wt_send,
    .check = ft_rcsum_device_check,
    .wait_handles = wt_wait_handles,
    .close = wt_close,
    .get_mtu = wt_get_mtu,
    .set_mtu = wt_set_mtu,
    .set_up = wt_set_up,
    .is_up = wt_is_up,
    .get_index = wt_get_index,
    .address = wt_address,
    .list_addresses = wt_list_addresses,
    .route = wt_route,
};

/* ---- parameters ------------------------------------------------------------------------------------- */

/* UTF-8 to UTF-16 with a length check in UTF-16 units, which is how Windows limits adapter names. */
static int to_wide(const char *what, const char *s, wchar_t *out, int max_units, ft_err *e)
{
    if (!s || !s[0])
        return ft_fail(e, FT_EINVAL, EINVAL, "the %s is empty; give 1..%d characters", what, max_units);
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0)
        return ft_fail(e, FT_EINVAL, EINVAL, "the %s is not valid UTF-8", what);
    if (n - 1 > max_units)
        return ft_fail(e, FT_EINVAL, ENAMETOOLONG, "the %s is %d UTF-16 units long; Wintun allows 1..%d", what,
                       n - 1, max_units);
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, out, n);
    return FT_OK;
}

/* The adapter's name and tunnel type as Wintun takes them. */
typedef struct wide_names {
    wchar_t name[FT_WINTUN_MAX_NAME + 1];
    wchar_t type[FT_WINTUN_MAX_NAME + 1];
} wide_names;

/* Everything is checked before wintun.dll is touched, so a bad argument is reported as such. */
static int check_params(const ft_wintun_params *p, uint32_t *capacity, wide_names *names, ft_err *e)
{
    if (!p)
        return ft_fail(e, FT_EINVAL, EINVAL, "no parameters given");
    const char *type8 = p->tunnel_type && p->tunnel_type[0] ? p->tunnel_type : FT_WINTUN_DEFAULT_TUNNEL_TYPE;
    if (to_wide("adapter name", p->name, names->name, FT_WINTUN_MAX_NAME, e) != FT_OK ||
        to_wide("tunnel type", type8, names->type, FT_WINTUN_MAX_NAME, e) != FT_OK)
        return FT_EINVAL;
    uint32_t c = p->ring_capacity ? p->ring_capacity : FT_WINTUN_DEFAULT_RING_CAPACITY;
    if (ft_limit_check(&ft_limit_ring_capacity, c, e) != FT_OK)
        return FT_EINVAL;
    if (p->open_mode < FT_OPEN_CREATE || p->open_mode > FT_OPEN_ANY)
        return ft_fail(e, FT_EINVAL, EINVAL,
                       "open mode %d is not allowed: 0 creates, 1 opens an existing adapter, 2 opens or creates",
                       p->open_mode);
    if (p->flags & ~(FT_WINTUN_AUTO_RING | FT_WINTUN_COALESCE | FT_WINTUN_REMOTE_CSUM))
        return ft_fail(e, FT_EINVAL, EINVAL,
                       "flags 0x%x has unknown bits; allowed: 0x%x (auto ring), 0x%x (coalesce), 0x%x (remote checksums)",
                       p->flags, FT_WINTUN_AUTO_RING, FT_WINTUN_COALESCE, FT_WINTUN_REMOTE_CSUM);
    if (p->mtu != 0 && ft_limit_check(&ft_limit_mtu, p->mtu, e) != FT_OK) /* 0 keeps the adapter's */
        return FT_EINVAL;
    *capacity = c;
    return FT_OK;
}

/* ---- the adapter ------------------------------------------------------------------------------------ */

/* what: "creating", "opening", "starting a session on". ft_fail_os keeps 150 characters of this part,
 * hence the short name. */
static int fail_adapter(DWORD err, const char *what, const char *name, ft_err *e)
{
    if (err == ERROR_ACCESS_DENIED)
        return ft_fail_os(e, (long)err,
                          "%s Wintun adapter \"%.40s\" needs administrator elevation: run Python as Administrator "
                          "(or LocalSystem)",
                          what, name);
    return ft_fail_os(e, (long)err, "%s Wintun adapter \"%.40s\" failed", what, name);
}

static int is_leftover_error(DWORD err)
{
    return err == ERROR_ALREADY_EXISTS || err == ERROR_OBJECT_ALREADY_EXISTS || err == ERROR_DUP_NAME;
}

static int is_not_found(DWORD err)
{
    return err == ERROR_NOT_FOUND || err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND;
}

static int open_adapter(wt_dev *w, const wchar_t *name, const char *name8, ft_err *e)
{
    w->adapter = w->api->OpenAdapter(name);
    if (w->adapter)
        return FT_OK;
    DWORD err = GetLastError();
    if (is_not_found(err)) {
        ft_fail(e, FT_ESYS, ENOENT, "there is no Wintun adapter named \"%.60s\" to open", name8);
        return with_oserr(e, FT_ESYS, err);
    }
    return fail_adapter(err, "opening", name8, e);
}

static int create_adapter(wt_dev *w, const wchar_t *name, const wchar_t *type, const GUID *guid,
                          const char *name8, ft_err *e)
{
    DWORD err = ERROR_SUCCESS;
    for (int attempt = 0; attempt <= CREATE_RETRIES; attempt++) {
        if (attempt > 0)
            Sleep(CREATE_RETRY_MS);
        w->adapter = w->api->CreateAdapter(name, type, guid);
        if (w->adapter) {
            w->created = 1;
            return FT_OK;
        }
        err = GetLastError();
        if (!is_leftover_error(err))
            return fail_adapter(err, "creating", name8, e);
    }
    /* Still there: most likely left over by a process that crashed; use it rather than fail. */
    w->adapter = w->api->OpenAdapter(name);
    if (w->adapter)
        return FT_OK;
    return fail_adapter(err, "creating", name8, e);
}

static int get_adapter(wt_dev *w, const ft_wintun_params *p, const wchar_t *name, const wchar_t *type,
                       ft_err *e)
{
    GUID guid;
    if (p->guid)
        memcpy(&guid, p->guid, sizeof(guid));
    const GUID *want = p->guid ? &guid : NULL;
    if (p->open_mode == FT_OPEN_EXISTING)
        return open_adapter(w, name, p->name, e);
    if (p->open_mode == FT_OPEN_ANY) {
        w->adapter = w->api->OpenAdapter(name);
        if (w->adapter)
            return FT_OK;
        DWORD err = GetLastError();
        if (!is_not_found(err))
            return fail_adapter(err, "opening", p->name, e);
    }
    return create_adapter(w, name, type, want, p->name, e);
}

static int start_session(wt_dev *w, const char *name8, ft_err *e)
{
    w->session = w->api->StartSession(w->adapter, w->capacity);
    if (!w->session) {
        DWORD err = GetLastError();
        if (err == ERROR_ACCESS_DENIED)
            return fail_adapter(err, "starting a session on", name8, e);
        if (err == ERROR_NOT_ENOUGH_MEMORY || err == ERROR_OUTOFMEMORY)
            return ft_fail_os(e, (long)err, "no memory for a %u-byte Wintun ring on \"%.40s\"", w->capacity, name8);
        return ft_fail_os(e, (long)err,
                          "could not start a session on \"%.40s\" (an adapter has one session at a time: is another "
                          "device or program using it?)",
                          name8);
    }
    w->read_event = w->api->GetReadWaitEvent(w->session);
    if (!w->read_event)
        return ft_fail_os(e, (long)GetLastError(), "Wintun gave no read-wait event for \"%.40s\"", name8);
    HANDLE self = GetCurrentProcess();
    if (!DuplicateHandle(self, w->read_event, self, &w->wait_event, 0, FALSE, DUPLICATE_SAME_ACCESS))
        return ft_fail_os(e, (long)GetLastError(), "could not duplicate the read-wait event of \"%.40s\"", name8);
    return FT_OK;
}

static HANDLE new_timer(void)
{
    HANDLE t = CreateWaitableTimerExW(NULL, NULL,
                                      CREATE_WAITABLE_TIMER_MANUAL_RESET | CREATE_WAITABLE_TIMER_HIGH_RESOLUTION,
                                      TIMER_ALL_ACCESS);
    if (!t) /* before Windows 10 1803: an ordinary timer, coarser but still no busy wait */
        t = CreateWaitableTimerExW(NULL, NULL, CREATE_WAITABLE_TIMER_MANUAL_RESET, TIMER_ALL_ACCESS);
    return t;
}

static int make_timers(wt_dev *w, ft_err *e)
{
    w->room_timer = new_timer();
    if (!w->room_timer)
        return ft_fail_os(e, (long)GetLastError(), "could not create the send-retry timer");
    w->read_timer = new_timer();
    if (!w->read_timer)
        return ft_fail_os(e, (long)GetLastError(), "could not create the read-stall timer");
    return FT_OK;
}

/* The device name is UTF-8 in 64 bytes: cut at a character boundary when the adapter's name is longer. */
static void copy_name(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && (src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* With mtu 0 the interface keeps its MTU; if it cannot be read yet, Wintun's own limit stands in. */
static int apply_mtu(ft_device *d, uint32_t mtu, ft_err *e)
{
    if (mtu != 0) {
        int r = wt_set_mtu(d, mtu, e);
        if (r != FT_OK)
            return r;
        ft_atomic_store(&d->mtu, (int)mtu);
        return FT_OK;
    }
    uint32_t current = 0;
    ft_err ignored;
    if (wt_get_mtu(d, &current, &ignored) != FT_OK || current < FT_MIN_MTU ||
        current > WINTUN_MAX_IP_PACKET_SIZE)
        current = WINTUN_MAX_IP_PACKET_SIZE;
    ft_atomic_store(&d->mtu, (int)current);
    return FT_OK;
}

static int open_parts(wt_dev *w, const ft_wintun_params *p, const wide_names *names, ft_err *e)
{
    int r = get_adapter(w, p, names->name, names->type, e);
    if (r == FT_OK)
        r = start_session(w, p->name, e);
    if (r == FT_OK)
        r = make_timers(w, e);
    if (r == FT_OK)
        w->api->GetAdapterLUID(w->adapter, &w->luid);
    return r;
}

int ft_wintun_open(const ft_wintun_params *p, ft_device **out, ft_err *e)
{
    *out = NULL;
    uint32_t capacity = 0;
    wide_names names;
    int r = check_params(p, &capacity, &names, e);
    if (r != FT_OK)
        return r;
    if (!ft_wintun_loaded()) {
        r = ft_wintun_load(NULL, e);
        if (r != FT_OK)
            return r;
    }
    wt_dev *w = calloc(1, sizeof(*w));
    ft_device *d = calloc(1, sizeof(*d));
    if (!w || !d) {
        free(w);
        free(d);
        return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a Wintun device");
    }
    w->api = ft_wintun_get_api();
    w->capacity = capacity;
    w->capacity_now = (LONG)capacity;
    w->auto_ring = (p->flags & FT_WINTUN_AUTO_RING) != 0;
    d->remote_csum = (p->flags & FT_WINTUN_REMOTE_CSUM) != 0;
    InitializeSRWLock(&w->co_lock);
    if (p->flags & FT_WINTUN_COALESCE) {
        w->co_buf = malloc(COALESCE_BUF);
        if (!w->co_buf) {
            free(w);
            free(d);
            return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for the coalescing buffer of a Wintun device");
        }
    }
    w->last_grow_ms = (LONG64)(GetTickCount64() - GROW_INTERVAL_MS); /* the first overflow may grow at once */
    w->stall_100ns = READ_STALL_MIN_100NS;
    r = open_parts(w, p, &names, e);
    if (r != FT_OK) {
        release(w);
        free(d);
        return r;
    }
    d->ops = &wintun_ops;
    d->impl = w;
    d->nqueues = 1;
    d->max_packet = WINTUN_MAX_IP_PACKET_SIZE;
    copy_name(d->name, sizeof(d->name), p->name);
    r = ft_device_init(d, e);
    if (r == FT_OK)
        r = apply_mtu(d, p->mtu, e);
    if (r != FT_OK) {
        if (d->close_event)
            ft_device_free(d); /* runs wt_close */
        else {
            release(w);
            free(d);
        }
        return r;
    }
    *out = d;
    return FT_OK;
}

/* ---- accessors -------------------------------------------------------------------------------------- */

void ft_wintun_get_info(ft_device *d, ft_wintun_info *out)
{
    memset(out, 0, sizeof(*out));
    if (!is_wintun(d) || !W(d))
        return;
    out->luid = W(d)->luid.Value;
    out->created = W(d)->created;
    out->ring_capacity = (uint32_t)ft_atomic_load(&W(d)->capacity_now);
    out->ring_grows = (uint32_t)ft_atomic_load(&W(d)->grows);
}

int ft_wintun_guid(ft_device *d, uint8_t guid[16], ft_err *e)
{
    if (!is_wintun(d))
        return not_wintun(d, e);
    int r = ft_device_enter(d, e);
    if (r != FT_OK)
        return r;
    GUID g;
    NET_LUID luid = W(d)->luid;
    DWORD err = ConvertInterfaceLuidToGuid(&luid, &g);
    ft_device_leave(d);
    if (err != NO_ERROR)
        return ft_fail_os(e, (long)err, "could not read the interface GUID of \"%.60s\"", d->name);
    memcpy(guid, &g, 16);
    return FT_OK;
}
#endif
