/* pair/ft_pair.c - two connected in-process devices: a bounded ring each way, no privileges. */
#include "pair/ft_pair.h"

#include <stdlib.h>
#include <string.h>
#include <errno.h>

#define WRAP_MARK 0xffffffffu
#define MAX_ADDRS 64

static size_t record_size(size_t len) { return FT_PAIR_RECORD_SIZE(len); }

/* One direction: a byte ring of length-prefixed records; a record never wraps (a mark sends the reader
 * back to the start). Sleeper counts let a producer skip the wake-up syscall when nobody sleeps. */
typedef struct ring {
    uint8_t *buf;
    size_t size, head, tail, used; /* used counts wasted tail space too */
    uint32_t count, cap_packets;
    int readers_sleeping, writers_sleeping;
    ft_event *readable, *writable;
} ring;

typedef struct pair_shared {
    ft_mutex *lock;
    ring ring[2];        /* ring[i] is read by device i */
    ft_atomic_int refs;  /* devices still open */
    ft_atomic_int closed[2];
} pair_shared;

typedef struct mem_dev {
    pair_shared *s;
    int side;
    int up;
    uint32_t naddrs;
    ft_addr addrs[MAX_ADDRS];
} mem_dev;

static mem_dev *M(ft_device *d) { return d->impl; }

static int ring_init(ring *r, uint32_t packets, uint32_t bytes)
{
    r->size = bytes;
    r->cap_packets = packets;
    r->buf = malloc(bytes);
    r->readable = ft_event_create();
    r->writable = ft_event_create();
    return r->buf && r->readable && r->writable ? 0 : -1;
}

static void ring_free(ring *r)
{
    free(r->buf);
    ft_event_destroy(r->readable);
    ft_event_destroy(r->writable);
}

static int ring_push(ring *r, const uint8_t *p, size_t len)
{
    size_t need = record_size(len);
    if (r->count >= r->cap_packets)
        return 0;
    size_t waste = 0;
    if (r->tail + need > r->size) /* does not fit before the end: skip to the start */
        waste = r->size - r->tail;
    if (r->used + waste + need > r->size)
        return 0;
    if (waste) {
        if (waste >= 4) {
            uint32_t mark = WRAP_MARK;
            memcpy(r->buf + r->tail, &mark, 4);
        }
        r->used += waste;
        r->tail = 0;
    }
    uint32_t l = (uint32_t)len;
    memcpy(r->buf + r->tail, &l, 4);
    memcpy(r->buf + r->tail + 4, p, len);
    r->tail += need;
    if (r->tail == r->size)
        r->tail = 0;
    r->used += need;
    r->count++;
    return 1;
}

/* Pops one record into b; returns 0 when the ring is empty. */
static int ring_pop(ring *r, ft_batch *b)
{
    if (r->count == 0)
        return 0;
    if (r->size - r->head < 4) { /* too little room at the end for even a mark */
        r->used -= r->size - r->head;
        r->head = 0;
    }
    uint32_t l;
    memcpy(&l, r->buf + r->head, 4);
    if (l == WRAP_MARK) {
        r->used -= r->size - r->head;
        r->head = 0;
        memcpy(&l, r->buf, 4);
    }
    memcpy(b->data + b->used, r->buf + r->head + 4, l);
    b->offsets[b->count] = (uint32_t)b->used;
    b->lengths[b->count] = l;
    b->count++;
    b->used += l;
    size_t sz = record_size(l);
    r->head += sz;
    if (r->head == r->size)
        r->head = 0;
    r->used -= sz;
    r->count--;
    if (r->count == 0) { /* empty: start over at the beginning, no wasted space */
        r->head = r->tail = 0;
        r->used = 0;
    }
    return 1;
}

static int mem_recv(ft_device *d, int q, ft_batch *b, ft_err *e)
{
    (void)q;
    mem_dev *m = M(d);
    pair_shared *s = m->s;
    ring *r = &s->ring[m->side];
    int n = 0;
    ft_mutex_lock(s->lock);
    while (b->count < b->max && b->cap - b->used >= d->max_packet && ring_pop(r, b))
        n++;
    /* A sleeping writer is woken once half the ring is free, not after every read: it then sends a run of
     * packets per wake-up instead of a few. Waiting never costs a packet: a writer whose wait times out tries
     * once more before it gives up. */
    if (n > 0 && r->writers_sleeping && 2 * r->count <= r->cap_packets && 2 * r->used <= r->size)
        ft_event_set(r->writable);
    ft_mutex_unlock(s->lock);
    if (n == 0 && ft_atomic_load(&s->closed[1 - m->side]))
        return ft_fail(e, FT_EEOF, EPIPE, "the other device of this pair is closed and everything it sent was read");
    return n > 0 ? n : FT_EAGAIN;
}

static int mem_send(ft_device *d, int q, const ft_pkt *pkts, uint32_t n, ft_err *e)
{
    (void)q;
    mem_dev *m = M(d);
    pair_shared *s = m->s;
    int peer = 1 - m->side;
    if (ft_atomic_load(&s->closed[peer]))
        return ft_fail(e, FT_EEOF, EPIPE, "the other device of this pair is closed");
    ring *r = &s->ring[peer];
    uint32_t i = 0;
    ft_mutex_lock(s->lock);
    while (i < n && ring_push(r, pkts[i].data, pkts[i].len))
        i++;
    if (i > 0 && r->readers_sleeping)
        ft_event_set(r->readable);
    ft_mutex_unlock(s->lock);
    return i > 0 ? (int)i : FT_EFULL;
}

static int mem_wait_handles(ft_device *d, int q, int dir, ft_handle *out, int max, int *poll_out)
{
    mem_dev *m = M(d);
    *poll_out = 0; /* both directions wait on events that become readable */
    pair_shared *s = m->s;
    if (max < 1 || (q != 0 && q != FT_ALL_QUEUES))
        return -1;
    ft_mutex_lock(s->lock);
    if (dir == FT_WAIT_READ) {
        ring *r = &s->ring[m->side];
        r->readers_sleeping++;
        if (r->count > 0 || ft_atomic_load(&s->closed[1 - m->side]))
            ft_event_set(r->readable);
        out[0] = ft_event_handle(r->readable);
    } else {
        ring *r = &s->ring[1 - m->side];
        r->writers_sleeping++;
        if (r->count < r->cap_packets && r->size - r->used >= 2 * record_size(d->max_packet))
            ft_event_set(r->writable);
        if (ft_atomic_load(&s->closed[1 - m->side]))
            ft_event_set(r->writable);
        out[0] = ft_event_handle(r->writable);
    }
    ft_mutex_unlock(s->lock);
    return 1;
}

static void mem_wait_done(ft_device *d, int q, int dir)
{
    (void)q;
    mem_dev *m = M(d);
    pair_shared *s = m->s;
    ft_mutex_lock(s->lock);
    if (dir == FT_WAIT_READ) {
        ring *r = &s->ring[m->side];
        if (--r->readers_sleeping == 0)
            ft_event_reset(r->readable);
    } else {
        ring *r = &s->ring[1 - m->side];
        if (--r->writers_sleeping == 0)
            ft_event_reset(r->writable);
    }
    ft_mutex_unlock(s->lock);
}

static void shared_release(pair_shared *s)
{
    if (ft_atomic_add(&s->refs, -1) != 0)
        return;
    ring_free(&s->ring[0]);
    ring_free(&s->ring[1]);
    ft_mutex_destroy(s->lock);
    free(s);
}

static void mem_close(ft_device *d)
{
    mem_dev *m = M(d);
    pair_shared *s = m->s;
    ft_mutex_lock(s->lock);
    ft_atomic_store(&s->closed[m->side], 1);
    /* Wake the peer's sleepers so they see that nothing more will come or go: its writers fill my ring,
     * its readers drain the other one. */
    ft_event_set(s->ring[m->side].writable);
    ft_event_set(s->ring[1 - m->side].readable);
    ft_mutex_unlock(s->lock);
    shared_release(s);
    free(m);
    d->impl = NULL;
}

static int mem_set_up(ft_device *d, int up, ft_err *e)
{
    (void)e;
    M(d)->up = up != 0;
    return FT_OK;
}

static int mem_is_up(ft_device *d, int *up, ft_err *e)
{
    (void)e;
    *up = M(d)->up;
    return FT_OK;
}

static int addr_equal(const ft_addr *a, const ft_addr *b)
{
    return a->family == b->family && a->prefix == b->prefix &&
           memcmp(a->bytes, b->bytes, a->family == 4 ? 4 : 16) == 0;
}

static int mem_address(ft_device *d, int add, const ft_addr *a, ft_err *e)
{
    mem_dev *m = M(d);
    if (!add) {
        for (uint32_t i = 0; i < m->naddrs; i++) {
            if (addr_equal(&m->addrs[i], a)) {
                m->addrs[i] = m->addrs[--m->naddrs];
                return FT_OK;
            }
        }
        return ft_fail(e, FT_ESYS, EADDRNOTAVAIL, "the address is not on the device");
    }
    for (uint32_t i = 0; i < m->naddrs; i++)
        if (addr_equal(&m->addrs[i], a))
            return ft_fail(e, FT_ESYS, EEXIST, "the address is already on the device");
    if (m->naddrs >= MAX_ADDRS)
        return ft_fail(e, FT_EINVAL, ENOSPC, "an in-memory device holds at most %d addresses", MAX_ADDRS);
    m->addrs[m->naddrs++] = *a;
    return FT_OK;
}

static int mem_list_addresses(ft_device *d, ft_addr *out, uint32_t max, uint32_t *n, ft_err *e)
{
    (void)e;
    mem_dev *m = M(d);
    uint32_t k = m->naddrs < max ? m->naddrs : max;
    memcpy(out, m->addrs, k * sizeof(ft_addr));
    *n = m->naddrs;
    return FT_OK;
}

static const ft_backend_ops memory_ops = {
    .name = "memory",
    .recv = mem_recv,
    .send = mem_send,
    .wait_handles = mem_wait_handles,
    .wait_done = mem_wait_done,
    .close = mem_close,
    .set_up = mem_set_up,
    .is_up = mem_is_up,
    .address = mem_address,
    .list_addresses = mem_list_addresses,
};

int ft_memory_pair(uint32_t mtu, uint32_t capacity, uint32_t capacity_bytes, ft_device **a, ft_device **b,
                   ft_err *e)
{
    if (ft_limit_check(&ft_limit_mtu, mtu, e) != FT_OK || ft_limit_check(&ft_limit_capacity, capacity, e) != FT_OK ||
        ft_limit_check(&ft_limit_capacity_bytes, capacity_bytes, e) != FT_OK)
        return FT_EINVAL;
    pair_shared *s = calloc(1, sizeof(*s));
    ft_device *dev[2] = {calloc(1, sizeof(ft_device)), calloc(1, sizeof(ft_device))};
    mem_dev *m[2] = {calloc(1, sizeof(mem_dev)), calloc(1, sizeof(mem_dev))};
    if (!s || !dev[0] || !dev[1] || !m[0] || !m[1])
        goto nomem;
    s->lock = ft_mutex_create();
    if (!s->lock || ring_init(&s->ring[0], capacity, capacity_bytes) || ring_init(&s->ring[1], capacity, capacity_bytes))
        goto nomem;
    ft_atomic_store(&s->refs, 2);
    for (int i = 0; i < 2; i++) {
        m[i]->s = s;
        m[i]->side = i;
        dev[i]->ops = &memory_ops;
        dev[i]->impl = m[i];
        dev[i]->nqueues = 1;
        dev[i]->max_packet = FT_MAX_PACKET;
        ft_atomic_store(&dev[i]->mtu, (int)mtu);
        strcpy(dev[i]->name, i == 0 ? "pair0" : "pair1");
        if (ft_device_init(dev[i], e) != FT_OK) {
            if (i == 1)
                ft_event_destroy(dev[0]->close_event);
            goto fail;
        }
    }
    *a = dev[0];
    *b = dev[1];
    return FT_OK;
nomem:
    ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for an in-memory pair");
fail:
    if (s) {
        ring_free(&s->ring[0]);
        ring_free(&s->ring[1]);
        ft_mutex_destroy(s->lock);
        free(s);
    }
    for (int i = 0; i < 2; i++) {
        free(dev[i]);
        free(m[i]);
    }
    return e ? e->status : FT_ENOMEM;
}
