/* core/ft_device.h - a TUN device as the core sees it: one small backend interface (a table of functions) and
 * the few device-level operations built on it (receive with a timeout, validated send with a full-queue
 * policy, close that wakes every waiter). Backends: linux/ft_linux_tun.c, pair/ft_pair.c,
 * wintun/ft_wintun.c. Nothing here knows Python. */
#ifndef FT_DEVICE_H
#define FT_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "core/ft_os.h"
#include "core/ft_limits.h"

/* ---- status codes: 0 or a positive count is success, these are failures -------------------------- */
enum {
    FT_OK = 0,
    FT_EAGAIN = -1,      /* nothing to read / no room to write right now */
    FT_ETIMEDOUT = -2,   /* the timeout passed */
    FT_EWOKEN = -3,      /* a wake-up event fired (stop or close) */
    FT_ECLOSED = -4,     /* the device is closed or closing */
    FT_EFULL = -5,       /* the send queue is full (ring full, peer full) */
    FT_EINVAL = -6,      /* a bad argument: see ft_err.msg */
    FT_ESYS = -7,        /* an OS call failed: see ft_err.oserr */
    FT_ENOMEM = -8,
    FT_EPACKET = -9,     /* a packet failed validation: see ft_err.msg and ft_err.index */
    FT_EUNSUPPORTED = -10, /* the backend cannot do this */
    FT_EEOF = -11,       /* the device went away under us (Wintun ERROR_HANDLE_EOF, tun fd gone) */
    FT_ECORRUPT = -12,   /* the driver handed back something impossible (corrupt ring, bad size) */
    FT_EREFUSED = -13    /* the OS refused packets of a send one by one (the others went): see ft_err */
};

/* Details of a failure, filled by the function that failed. */
typedef struct ft_err {
    int status;      /* one of the codes above */
    int errnum;      /* a POSIX errno describing it (0 if none) */
    long oserr;      /* the raw OS error (errno or GetLastError()), 0 if none */
    /* Where in a batch a failed call stopped, else -1: the packet the failure is about (FT_EPACKET, FT_EREFUSED),
     * or, for a send that timed out or found the device full (FT_ETIMEDOUT, FT_EFULL), the first packet not yet
     * handled, where the caller resumes. Never a count: how many went is `sent`. */
    long index;
    uint32_t sent;   /* for a failed send: how many packets of the call went before it failed */
    char msg[256];   /* what went wrong and what is allowed */
} ft_err;

int ft_fail(ft_err *e, int status, int errnum, const char *fmt, ...) FT_PRINTF(4, 5);
/* FT_ESYS from an OS error code, with its description appended to the message. */
int ft_fail_os(ft_err *e, long oserr, const char *fmt, ...) FT_PRINTF(3, 4);

/* ---- batches -------------------------------------------------------------------------------------- */
/* Where a datagram came from or goes to (UDP endpoints); family 0 when there is none. */
typedef struct ft_endpoint {
    uint8_t family;      /* 0, 4 or 6 */
    uint8_t reserved;
    uint16_t port;       /* host order */
    uint32_t scope_id;   /* IPv6 zone (an interface index), else 0 */
    uint8_t addr[16];    /* network order; IPv4 uses the first 4 */
} ft_endpoint;

/* Packets laid out back to back in one arena with an offsets/lengths table. The memory belongs to whoever
 * made the batch (the Python layer, a test); the core only fills it. */
typedef struct ft_batch {
    uint8_t *data;
    size_t cap;          /* bytes in data */
    uint32_t *offsets;   /* [max] */
    uint32_t *lengths;   /* [max] */
    uint32_t max;        /* packets the tables hold */
    uint32_t count;      /* packets filled */
    size_t used;         /* bytes filled */
    uint8_t *vnet;       /* [max][FT_VNET_HDR_SIZE] virtio-net headers of super-packets, or NULL; a backend
                          * that delivers super-packets whole needs it and fills one per packet */
    ft_endpoint *addrs;  /* [max] each datagram's source, or NULL; only UDP endpoints fill it */
} ft_batch;

#define FT_VNET_HDR_SIZE 10
/* An IPv6 super-packet may exceed 65535 bytes by its 40-byte header (the payload length field is 16 bits). */
#define FT_MAX_SUPER_PACKET (65535u + 40u)

/* Bytes an arena needs so that a receive into it can hold `packets` typical packets and never truncate. */
size_t ft_batch_arena_size(uint32_t packets, uint32_t max_packet);

/* One packet to send. */
typedef struct ft_pkt {
    const uint8_t *data;
    size_t len;
} ft_pkt;

/* ---- statistics ----------------------------------------------------------------------------------- */
/* The device's counters, defined once: the struct, its atomic twin, the copy-out and the names the Python layer
 * builds its records from (ft_stats_names) all expand this list. A set of counters is read as a struct of named
 * uint64_t members or, by index, as `values` (values[i] is named ft_stats_names[i]). */
#define FT_STATS_FIELDS(X)                                                                                 \
    X(rx_packets) X(rx_bytes) X(rx_batches) X(tx_packets) X(tx_bytes)                                      \
    X(tx_dropped_full)     /* send queue full under the drop policy */                                     \
    X(tx_rejected)         /* refused by validation (never reached the device) */                          \
    X(rx_dropped_invalid)  /* the device handed back something that is not an IP packet */                 \
    X(rx_dropped_oversize) /* larger than the receive window (truncated by the OS) */                      \
    X(rx_errors) X(tx_errors)                                                                              \
    X(waits)               /* times a receiver slept on the device */                                      \
    X(spins)               /* empty polls while spinning */                                                \
    X(tx_waits)            /* times a sender waited for room */

#define FT_COUNTER_U64_(name) uint64_t name;
#define FT_COUNTER_ATOMIC_(name) ft_atomic_u64 name;
#define FT_COUNTER_ONE_(name) +1
#define FT_COUNTER_NAME_(name) #name,
#define FT_COUNTER_LOAD_(name) out->name = ft_atomic_load64(&in->name);
/* The members for the counters a list names, readable by name and, as the array `values`, by index. */
#define FT_COUNTER_MEMBERS(LIST, values)                                                                   \
    union {                                                                                                \
        struct { LIST(FT_COUNTER_U64_) };                                                                  \
        uint64_t values[0 LIST(FT_COUNTER_ONE_)];                                                          \
    }

enum { FT_STATS_COUNT = 0 FT_STATS_FIELDS(FT_COUNTER_ONE_) };
typedef struct ft_stats { FT_COUNTER_MEMBERS(FT_STATS_FIELDS, values); } ft_stats;
typedef struct ft_stats_atomic { FT_STATS_FIELDS(FT_COUNTER_ATOMIC_) } ft_stats_atomic;
static const char *const ft_stats_names[FT_STATS_COUNT] = {FT_STATS_FIELDS(FT_COUNTER_NAME_)};

/* ---- addresses ------------------------------------------------------------------------------------ */
typedef struct ft_addr {
    int family;          /* 4 or 6 */
    uint8_t prefix;      /* 0..32 or 0..128 */
    uint8_t bytes[16];   /* network order; IPv4 uses the first 4 */
} ft_addr;

/* A route through the device. */
typedef struct ft_route {
    int family;          /* 4 or 6 */
    uint8_t prefix;
    uint8_t dest[16];    /* network order */
    int has_gateway;
    uint8_t gateway[16];
    uint32_t metric;     /* 0: the system's default */
} ft_route;

/* ---- the backend interface ------------------------------------------------------------------------ */
typedef struct ft_device ft_device;

#define FT_ALL_QUEUES (-1)
#define FT_WAIT_READ 0
#define FT_WAIT_WRITE 1

typedef struct ft_backend_ops {
    const char *name;
    /* Append packets from queue q to b without blocking until b is full (count == max, or fewer than
     * max_packet bytes left) or the queue is empty. Returns packets appended (> 0), FT_EAGAIN if none
     * were waiting, or a failure. Packets appended before a failure are kept and counted: the failure
     * is then reported by the next call. */
    int (*recv)(ft_device *d, int q, ft_batch *b, ft_err *e);
    /* Send up to n already validated packets through queue q without blocking. Returns how many were
     * accepted (0..n); FT_EFULL if the first did not fit; or a failure. */
    int (*send)(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_err *e);
    /* Collect the handles to wait on for readiness of queue q (or all queues) in the given direction.
     * Returns how many were written (at most max). *poll_out says whether handle 0 signals room by being
     * writable (a tun fd) rather than readable (an event). A backend that needs a "going to sleep"
     * handshake (a ring that only signals sleepers) does it here and undoes it in wait_done. */
    int (*wait_handles)(ft_device *d, int q, int dir, ft_handle *out, int max, int *poll_out);
    void (*wait_done)(ft_device *d, int q, int dir);  /* optional */
    void (*close)(ft_device *d);   /* release OS resources; called once, with no user left */
    /* Optional: in a child after fork(), close the descriptors the child inherited without touching locks
     * or memory that threads of the parent may have been using. The device is unusable afterwards. */
    void (*forget)(ft_device *d);
    /* Configuration; NULL where a backend has no such thing (FT_EUNSUPPORTED). */
    int (*get_mtu)(ft_device *d, uint32_t *mtu, ft_err *e);
    int (*set_mtu)(ft_device *d, uint32_t mtu, ft_err *e);
    int (*set_up)(ft_device *d, int up, ft_err *e);
    int (*is_up)(ft_device *d, int *up, ft_err *e);
    int (*get_index)(ft_device *d, uint32_t *index, ft_err *e);
    int (*address)(ft_device *d, int add, const ft_addr *a, ft_err *e);   /* add (1) or remove (0), like route */
    int (*list_addresses)(ft_device *d, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e);
    int (*get_txqueuelen)(ft_device *d, uint32_t *len, ft_err *e);
    int (*set_txqueuelen)(ft_device *d, uint32_t len, ft_err *e);
    /* Drops the OS counted on its side: packets it could not queue for us, packets of ours it dropped. */
    int (*os_drops)(ft_device *d, uint64_t *rx_dropped, uint64_t *tx_dropped, ft_err *e);
    int (*route)(ft_device *d, int add, const ft_route *r, ft_err *e);
    /* Send n packets each with its virtio-net header (hdrs: n * FT_VNET_HDR_SIZE bytes), already validated.
     * Same return convention as send. NULL where the device has no offload. */
    int (*send_vnet)(ft_device *d, int q, const ft_pkt *pkts, const uint8_t *hdrs, uint32_t n, ft_err *e);
    /* With send_vnet: whether one super-packet and its virtio-net header may be sent (FT_OK or FT_EPACKET). */
    int (*check_vnet)(const uint8_t *p, size_t len, const uint8_t *hdr, ft_err *e);
    /* Validates one packet for ft_device_send (FT_OK or FT_EPACKET); NULL: ft_packet_check, an IP packet
     * within the MTU. A UDP endpoint carries datagrams, which are not IP packets. */
    int (*check)(ft_device *d, const uint8_t *p, size_t len, ft_err *e);
    /* Optional (POSIX): every descriptor a thread that only receives from queue q uses (recv, wait_handles and
     * what recv may call); returns how many were written, at most max. Such a thread may then take a private
     * descriptor table holding only these (see ft_thread_private_fds). */
    int (*receiver_fds)(ft_device *d, int q, ft_handle *out, int max);
} ft_backend_ops;

/* Policy when the device cannot take a packet right now. */
enum { FT_FULL_DROP = 0, FT_FULL_WAIT = 1, FT_FULL_RAISE = 2 };

struct ft_device {
    const ft_backend_ops *ops;
    void *impl;                 /* the backend's own state */
    int nqueues;
    uint32_t max_packet;        /* largest packet recv can produce; arenas leave this much room */
    ft_atomic_int mtu;          /* cached; sends above it are refused */
    ft_atomic_int users;        /* calls in progress (see ft_device_enter) */
    ft_atomic_int closing;      /* claimed by the one shutdown that sets close_event, before closed */
    ft_atomic_int closed;
    ft_atomic_int released;     /* the backend's resources are gone (0 no, 1 going, 2 gone) */
    int forked;                 /* this is a fork child's copy (see ft_device_forget_after_fork) */
    int remote_csum;            /* packets may come and go behind an FT_RCSUM header (offload/ft_offload.h): set
                                 * by the backend at open, checked by ft_rcsum_device_check */
    ft_atomic_u64 next_queue;   /* where a receive from any queue starts */
    ft_event *close_event;      /* set by ft_device_close: wakes every waiter; destroyed (NULL) with the
                                 * backend's resources, so a closed device kept alive holds no descriptor */
    ft_stats_atomic stats;
    char name[64];              /* interface name as UTF-8 */
};

/* The queues a call may name, 0..nqueues-1, as a limit of this device (the one message for a queue that is not
 * there, also for the Python layer's queue arguments). */
static inline ft_limit ft_device_queue_limit(const ft_device *d)
{
    ft_limit l = FT_LIMIT("queue", 0, d->nqueues - 1, "");
    return l;
}
static inline int ft_device_check_queue(const ft_device *d, int q, ft_err *e)
{
    if (q >= 0 && q < d->nqueues)
        return FT_OK;
    ft_limit l = ft_device_queue_limit(d);
    return ft_limit_check(&l, q, e);
}

/* How a named device is opened, on every backend that has names: create it or open the existing one (ANY),
 * only open an existing one (EXISTING), or only create a new one (CREATE). */
enum { FT_OPEN_CREATE = 0, FT_OPEN_EXISTING = 1, FT_OPEN_ANY = 2 };

/* Called by a backend's open function once impl, ops and nqueues are filled. Returns FT_OK or FT_ENOMEM. */
int ft_device_init(ft_device *d, ft_err *e);

/* Every operation that touches the backend runs between enter and leave; close waits for them. */
int ft_device_enter(ft_device *d, ft_err *e); /* FT_ECLOSED once closing */
void ft_device_leave(ft_device *d);

/* Receive into b (b->count/used are reset first): waits up to timeout_ms (negative: forever, 0: poll)
 * for the first packet. Returns the number of packets, FT_ETIMEDOUT, FT_ECLOSED or a failure. (A thread that
 * must also wake on an event of its own, like the reader's stop, waits with ft_device_wait first.) */
int ft_device_recv(ft_device *d, int q, ft_batch *b, int timeout_ms, ft_err *e);

/* Wait until queue q (or all) is ready in the given direction. Returns FT_OK (ready), FT_ETIMEDOUT,
 * FT_EWOKEN, FT_ECLOSED or a failure. */
int ft_device_wait(ft_device *d, int q, int dir, int timeout_ms, ft_event *wake, ft_err *e);

/* Validate all n packets first (nothing is sent if one is bad: FT_EPACKET with e->index), then send them
 * on queue q. Under FT_FULL_DROP packets that find the queue full are dropped and counted; under
 * FT_FULL_WAIT the sender waits up to timeout_ms (negative: forever) for room and returns FT_ETIMEDOUT
 * after that, e->sent telling how many went and e->index where to resume (the caller may wait again, or
 * drop the rest and count them with ft_device_count_tx_drops); under FT_FULL_RAISE it returns FT_EFULL at
 * once, the same way. Returns the number of packets sent or a failure. */
int ft_device_send(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, int policy, int timeout_ms, ft_err *e);
/* Every failure of a send sets e->sent. A packet the OS refuses on its own (the backend fails with FT_EREFUSED
 * for it) is skipped and counted in tx_errors, and the rest still go; the call then fails with FT_EREFUSED,
 * e->index naming the first refused packet and e->sent how many went. */

/* Marks the device closed and wakes every waiter; new calls fail with FT_ECLOSED. Does not wait: the backend
 * is released by whichever call in progress leaves last (at once if there is none). Finalizers use this. */
void ft_device_shutdown(ft_device *d);
/* Shuts the device down, waits for calls in progress (readers included) to leave, then releases the
 * backend. Safe to call twice and from several threads. Does not free d. Never call it from a thread that
 * is itself inside a call on d (a reader's callback): that would wait for itself; use shutdown there. */
void ft_device_close(ft_device *d);
/* Frees a device that nothing uses any more (no call in progress, no reader): closes it first. */
void ft_device_free(ft_device *d);
/* In the child of a fork(): the calls and readers counted as users live only in the parent. Marks the device
 * closed and released without waiting for them, and closes the child's copies of its descriptors. */
void ft_device_forget_after_fork(ft_device *d);

/* Sends super-packets with their virtio-net headers (as a reader in super-packet mode delivers them) to a
 * device opened with offload. Each is checked first (IPv4/IPv6, at most FT_MAX_SUPER_PACKET bytes, a header
 * whose GSO type, header length, segment size and checksum offsets fit the packet); nothing is sent if one is
 * bad. Otherwise as ft_device_send. */
int ft_device_send_vnet(ft_device *d, int q, const ft_pkt *pkts, const uint8_t *hdrs, uint32_t n, int policy,
                        int timeout_ms, ft_err *e);

void ft_device_get_stats(ft_device *d, ft_stats *out);
void ft_device_count_tx_drops(ft_device *d, uint64_t n);

/* ---- for a backend with a send call of its own (the UDP endpoint's ft_udp_send) -------------------------- */
/* One attempt: hand over what fits of pkts[done..n) and return how many were handled (> 0; *sent of them went,
 * *bytes long; the rest were dropped and counted by the step), FT_EREFUSED for the one packet at done (skipped,
 * reported at the end), 0 or FT_EFULL when nothing fitted, or a failure. */
typedef int (*ft_send_step)(ft_device *d, int q, void *ctx, const ft_pkt *pkts, uint32_t done, uint32_t n,
                            uint32_t *sent, uint64_t *bytes, ft_err *e);
/* ft_device_send's loop around a step: the full-queue policy (waiting on queue q, dropping and counting, or
 * FT_EFULL whose message starts with `full`), the counters, e->sent and e->index. Enters the device itself. */
int ft_device_send_loop(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_send_step step, void *ctx,
                        int policy, int timeout_ms, const char *full, ft_err *e);
/* A packet (or "datagram": the unit) i of n that failed validation in *e: counted in tx_rejected and named in
 * the message. Returns e->status. */
int ft_device_reject(ft_device *d, uint32_t i, uint32_t n, const char *unit, ft_err *e);

/* Configuration wrappers: enter/leave plus FT_EUNSUPPORTED where the backend has no hook. */
int ft_device_get_mtu(ft_device *d, uint32_t *mtu, ft_err *e);
int ft_device_set_mtu(ft_device *d, uint32_t mtu, ft_err *e);
int ft_device_set_up(ft_device *d, int up, ft_err *e);
int ft_device_is_up(ft_device *d, int *up, ft_err *e);
int ft_device_get_index(ft_device *d, uint32_t *index, ft_err *e);
/* Addresses and routes are checked here for every backend (family 4 or 6, a prefix within it: ft_addr_check). */
int ft_device_address(ft_device *d, int add, const ft_addr *a, ft_err *e); /* add (1) or remove (0) */
int ft_addr_check(int family, unsigned prefix, ft_err *e);
int ft_device_list_addresses(ft_device *d, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e);
int ft_device_get_txqueuelen(ft_device *d, uint32_t *len, ft_err *e);
int ft_device_set_txqueuelen(ft_device *d, uint32_t len, ft_err *e);
int ft_device_route(ft_device *d, int add, const ft_route *r, ft_err *e);
int ft_device_os_drops(ft_device *d, uint64_t *rx_dropped, uint64_t *tx_dropped, ft_err *e);

/* ---- packets -------------------------------------------------------------------------------------- */
#define FT_MAX_PACKET 65535u
/* The most packets one batch (an arena, a send_batch call, a reader's batch) holds. */
#define FT_MAX_BATCH 65536u
#define FT_MIN_MTU 68u     /* IPv4's minimum; IPv6 needs 1280 (checked where addresses are added) */

/* What every backend takes: an MTU, packets per receive, a route's metric. */
static const ft_limit ft_limit_mtu = FT_LIMIT("mtu", FT_MIN_MTU, FT_MAX_PACKET, "");
static const ft_limit ft_limit_max_packets = FT_LIMIT("max_packets", 1, FT_MAX_BATCH, "");
static const ft_limit ft_limit_metric = FT_LIMIT("metric", 0, UINT32_MAX, "");

/* FT_OK if p looks like an IPv4 or IPv6 packet the device accepts (version nibble, minimum header length,
 * IPv4 IHL, at most mtu bytes), else FT_EPACKET with a message naming what is wrong and what is allowed. */
int ft_packet_check(const uint8_t *p, size_t len, uint32_t mtu, ft_err *e);

#endif
