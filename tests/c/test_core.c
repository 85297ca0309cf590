/* test_core.c - C tests of the core (validation, in-memory pair, device calls, reader thread), meant to run
 * under AddressSanitizer+UBSan and ThreadSanitizer. Prints "N passed, N failed" and exits non-zero on failure. */
#include "pair/ft_pair.h"
#include "core/ft_reader.h"
#include "core/ft_forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- helpers ------------------------------------------------------------------------------------------ */

static void make_packet(uint8_t *p, size_t len, uint32_t seq)
{
    memset(p, 0, len);
    p[0] = 0x45;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    memcpy(p + 20, &seq, sizeof(seq));
    for (size_t i = 24; i < len; i++)
        p[i] = (uint8_t)(seq + i);
}

static int packet_ok(const uint8_t *p, size_t len, uint32_t seq)
{
    uint32_t got;
    memcpy(&got, p + 20, sizeof(got));
    if (got != seq || p[0] != 0x45)
        return 0;
    for (size_t i = 24; i < len; i++)
        if (p[i] != (uint8_t)(seq + i))
            return 0;
    return 1;
}

static size_t size_for(uint32_t seq) { return 24 + (seq * 37u) % 1400u; }

typedef struct owned_batch {
    ft_batch b;
} owned_batch;

static void batch_init(owned_batch *ob, uint32_t max)
{
    memset(ob, 0, sizeof(*ob));
    ob->b.cap = ft_batch_arena_size(max, FT_MAX_PACKET);
    ob->b.data = malloc(ob->b.cap);
    ob->b.offsets = calloc(max, sizeof(uint32_t));
    ob->b.lengths = calloc(max, sizeof(uint32_t));
    ob->b.max = max;
}

static void batch_free(owned_batch *ob)
{
    free(ob->b.data);
    free(ob->b.offsets);
    free(ob->b.lengths);
}

static int send_seq(ft_device *d, uint32_t first, uint32_t n, int policy)
{
    static _Thread_local uint8_t buf[64][1500];
    ft_pkt pkts[64];
    ft_err e;
    int total = 0;
    while (n > 0) {
        uint32_t k = n < 64 ? n : 64;
        for (uint32_t i = 0; i < k; i++) {
            make_packet(buf[i], size_for(first + i), first + i);
            pkts[i].data = buf[i];
            pkts[i].len = size_for(first + i);
        }
        int r = ft_device_send(d, 0, pkts, k, policy, 5000, &e);
        if (r < 0)
            return r;
        total += r;
        first += k;
        n -= k;
    }
    return total;
}

/* ---- tests -------------------------------------------------------------------------------------------- */

static void test_packet_check(void)
{
    uint8_t p[100] = {0};
    ft_err e;
    p[0] = 0x45;
    p[3] = 20; /* total length */
    CHECK(ft_packet_check(p, 20, 1500, &e) == FT_OK);
    CHECK(ft_packet_check(p, 19, 1500, &e) == FT_EPACKET && strstr(e.msg, "20-byte"));
    CHECK(ft_packet_check(p, 0, 1500, &e) == FT_EPACKET && strstr(e.msg, "empty"));
    CHECK(ft_packet_check(p, 100, 99, &e) == FT_EPACKET && strstr(e.msg, "MTU of 99"));
    CHECK(ft_packet_check(p, 70000, 65535, &e) == FT_EPACKET && strstr(e.msg, "65535"));
    p[0] = 0x44; /* IHL 4: 16 bytes */
    CHECK(ft_packet_check(p, 40, 1500, &e) == FT_EPACKET && strstr(e.msg, "header length"));
    p[0] = 0x4f; /* IHL 15: 60 bytes, longer than the packet */
    CHECK(ft_packet_check(p, 40, 1500, &e) == FT_EPACKET);
    CHECK(ft_packet_check(p, 60, 1500, &e) == FT_EPACKET && strstr(e.msg, "total length field says 20"));
    p[3] = 60;
    CHECK(ft_packet_check(p, 60, 1500, &e) == FT_OK);
    p[3] = 61; /* claims more than was given */
    CHECK(ft_packet_check(p, 60, 1500, &e) == FT_EPACKET && strstr(e.msg, "at most the 60 bytes"));
    p[3] = 0; /* claims less than its header */
    CHECK(ft_packet_check(p, 60, 1500, &e) == FT_EPACKET && strstr(e.msg, "total length"));
    p[2] = 0;
    p[3] = 60;
    CHECK(ft_packet_check(p, 70, 1500, &e) == FT_OK); /* trailing bytes past the total length: trimmed by IP */
    p[0] = 0x60;
    p[4] = 0;
    p[5] = 1; /* payload length 1, none given */
    CHECK(ft_packet_check(p, 40, 1500, &e) == FT_EPACKET && strstr(e.msg, "payload length"));
    CHECK(ft_packet_check(p, 41, 1500, &e) == FT_OK);
    p[5] = 0;
    CHECK(ft_packet_check(p, 40, 1500, &e) == FT_OK);
    CHECK(ft_packet_check(p, 39, 1500, &e) == FT_EPACKET && strstr(e.msg, "40-byte"));
    p[0] = 0x50;
    CHECK(ft_packet_check(p, 40, 1500, &e) == FT_EPACKET && strstr(e.msg, "version 5"));
}

static void test_pair_order_and_wraparound(void)
{
    ft_device *a, *b;
    ft_err e;
    /* A small ring (in bytes) so records wrap around many times. */
    CHECK(ft_memory_pair(1500, 1000, 2 * (65536 + 8) + 4096, &a, &b, &e) == FT_OK);
    owned_batch ob;
    batch_init(&ob, 64);
    uint32_t next_send = 0, next_recv = 0, bad = 0;
    while (next_recv < 20000) {
        if (next_send < 20000) {
            int r = send_seq(a, next_send, 50, FT_FULL_DROP);
            CHECK(r >= 0);
            /* Drops happen when the ring is full: resend the dropped ones (the drop counter tells how many). */
            next_send += (uint32_t)(r > 0 ? r : 0);
        }
        int n = ft_device_recv(b, 0, &ob.b, 0, &e);
        if (n == FT_ETIMEDOUT)
            continue;
        CHECK(n > 0);
        for (int i = 0; i < n; i++, next_recv++) {
            if (ob.b.lengths[i] != size_for(next_recv) ||
                !packet_ok(ob.b.data + ob.b.offsets[i], ob.b.lengths[i], next_recv))
                bad++;
        }
    }
    CHECK(bad == 0);
    ft_stats s;
    ft_device_get_stats(b, &s);
    CHECK(s.rx_packets == 20000);
    batch_free(&ob);
    ft_device_free(a);
    ft_device_free(b);
}

static void test_full_policies(void)
{
    ft_device *a, *b;
    ft_err e;
    CHECK(ft_memory_pair(1500, 8, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_OK);
    CHECK(send_seq(a, 0, 20, FT_FULL_DROP) == 8);
    ft_stats s;
    ft_device_get_stats(a, &s);
    CHECK(s.tx_dropped_full == 12);
    uint8_t p[60];
    make_packet(p, 60, 99);
    ft_pkt pkt = {p, 60};
    CHECK(ft_device_send(a, 0, &pkt, 1, FT_FULL_RAISE, 0, &e) == FT_EFULL && e.sent == 0);
    uint64_t t0 = ft_now_ns();
    CHECK(ft_device_send(a, 0, &pkt, 1, FT_FULL_WAIT, 50, &e) == FT_ETIMEDOUT && e.index == 0);
    CHECK(ft_now_ns() - t0 >= 40000000u);
    /* Invalid packets are refused before anything is sent. */
    uint8_t bad[10] = {0x45};
    ft_pkt two[2] = {{p, 60}, {bad, 10}};
    CHECK(ft_device_send(b, 0, two, 2, FT_FULL_DROP, 0, &e) == FT_EPACKET && e.index == 1);
    CHECK(strstr(e.msg, "packet 1 of 2") != NULL);
    ft_device_free(a);
    ft_device_free(b);
}

typedef struct reader_ctx {
    uint32_t expect;
    uint32_t bad;
    uint32_t batches;
    uint32_t max_batch;
} reader_ctx;

static int on_batch(void *user, ft_batch *b)
{
    reader_ctx *c = user;
    c->batches++;
    if (b->count > c->max_batch)
        c->max_batch = b->count;
    for (uint32_t i = 0; i < b->count; i++, c->expect++)
        if (b->lengths[i] != size_for(c->expect) || !packet_ok(b->data + b->offsets[i], b->lengths[i], c->expect))
            c->bad++;
    return 0;
}

typedef struct sender_arg {
    ft_device *d;
    uint32_t count;
    int sent;
} sender_arg;

static void sender_main(void *p)
{
    sender_arg *s = p;
    s->sent = send_seq(s->d, 0, s->count, FT_FULL_WAIT);
}

/* Sends packets 0..n-1 into d from a thread of its own under the wait policy, and waits for it: how many went. */
static int send_on_thread(ft_device *d, uint32_t n)
{
    sender_arg sa = {d, n, 0};
    long oserr = 0;
    ft_thread *t = ft_thread_start(sender_main, &sa, &oserr);
    if (!t)
        return -1;
    ft_thread_join(t);
    return sa.sent;
}

static void test_reader_with_concurrent_sender(void)
{
    ft_device *a, *b;
    ft_err e;
    CHECK(ft_memory_pair(1500, 256, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_OK);
    owned_batch ob;
    batch_init(&ob, 64);
    reader_ctx ctx = {0};
    ft_reader_config cfg = {.batch_size = 64, .spin_us = 50, .adaptive = 1, .adaptive_pps = 1000};
    ft_reader *r = ft_reader_start(b, 0, &cfg, &ob.b, on_batch, &ctx, &e);
    CHECK(r != NULL);
    CHECK(send_on_thread(a, 100000) == 100000);
    uint64_t deadline = ft_now_ns() + 10000000000u;
    ft_reader_stats rs;
    do {
        ft_sleep_us(1000);
        ft_reader_get_stats(r, &rs);
    } while (rs.packets < 100000 && ft_now_ns() < deadline);
    ft_reader_request_stop(r);
    CHECK(ft_reader_join(r, 2000) == FT_OK);
    CHECK(ft_reader_state(r) == FT_READER_STOPPED);
    CHECK(ctx.expect == 100000);
    CHECK(ctx.bad == 0);
    CHECK(ctx.max_batch > 1 && ctx.max_batch <= 64);
    ft_reader_get_stats(r, &rs);
    CHECK(rs.packets == 100000 && rs.batches == ctx.batches);
    ft_reader_free(r);
    batch_free(&ob);
    ft_device_free(a);
    ft_device_free(b);
}

/* The pipelined reader: a second thread reads ahead into up to `depth` batches; order and counts must hold,
 * and a callback that stops the reader leaves what was read ahead counted as undelivered. */
static int slow_on_batch(void *user, ft_batch *b)
{
    reader_ctx *c = user;
    on_batch(user, b);
    if (c->batches % 16 == 0)
        ft_sleep_us(200);
    return c->expect >= 60000 && c->batches % 2 == 0 ? 1 : 0; /* stop somewhere past 60000 packets */
}

static void test_pipelined_reader(uint32_t depth)
{
    ft_device *a, *b;
    ft_err e;
    CHECK(ft_memory_pair(1500, 256, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_OK);
    owned_batch ob[8];
    ft_batch bs[8];
    for (uint32_t k = 0; k < depth; k++) {
        batch_init(&ob[k], 32);
        bs[k] = ob[k].b;
    }
    reader_ctx ctx = {0};
    ft_reader_config cfg = {.batch_size = 32, .spin_us = 20, .adaptive = 1, .adaptive_pps = 1000, .pipeline = depth};
    ft_reader *r = ft_reader_start(b, 0, &cfg, bs, slow_on_batch, &ctx, &e);
    CHECK(r != NULL);
    sender_arg sa = {a, 100000, 0};
    long oserr = 0;
    ft_thread *t = ft_thread_start(sender_main, &sa, &oserr);
    CHECK(ft_reader_join(r, 20000) == FT_OK); /* the callback stops it */
    ft_device_shutdown(a);                     /* the sender may be waiting for room: wake it */
    ft_thread_join(t);
    CHECK(ft_reader_state(r) == FT_READER_CALLBACK_STOPPED);
    CHECK(ctx.bad == 0);
    ft_reader_stats rs;
    ft_reader_get_stats(r, &rs);
    CHECK(ctx.expect >= 60000 && rs.packets == ctx.expect + rs.undelivered);
    CHECK(rs.batches >= ctx.batches && ctx.max_batch <= 32);
    ft_reader_free(r);
    for (uint32_t k = 0; k < depth; k++)
        batch_free(&ob[k]);
    ft_device_free(a);
    ft_device_free(b);
}

/* A stop requested from inside the callback (or a close of the device there) ends deliveries at once, with or
 * without the pipeline: no callback after that one, what was read ahead counted as undelivered. With `decline`
 * the callback that finds the stop requested (or the device closed) before it delivers declines its batch, as
 * the Python layer does when the stop came while it waited for the GIL: the reader then ends as stopped (or
 * failed on the close), not as stopped by the callback, and counts the batch with what was read ahead. */
typedef struct ending_ctx {
    reader_ctx base;
    ft_reader *reader;
    ft_device *dev;
    int close_device, decline;
    uint32_t calls, late, declined;
    ft_atomic_int sent; /* every packet is in the pair: closing it now loses none of the sends */
} ending_ctx;

static int ending_on_batch(void *user, ft_batch *b)
{
    ending_ctx *c = user;
    for (int waited = 0; !ft_atomic_load(&c->sent) && waited < 5000; waited++)
        ft_sleep_us(1000);
    if (c->calls >= 3)
        c->late++;
    c->calls++;
    if (c->calls == 3) {
        if (c->close_device)
            ft_device_shutdown(c->dev);
        else
            ft_reader_request_stop(c->reader);
    }
    if (c->decline && ft_reader_stopping(c->reader)) {
        c->declined += b->count;
        return FT_READER_DECLINED;
    }
    on_batch(&c->base, b);
    ft_sleep_us(2000); /* let the read-ahead fill up */
    return 0;
}

static void test_ending_from_the_callback(uint32_t depth, int close_device, int decline)
{
    ft_device *a, *b;
    ft_err e;
    CHECK(ft_memory_pair(1500, 256, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_OK);
    owned_batch ob[8];
    ft_batch bs[8];
    for (uint32_t k = 0; k < (depth ? depth : 1); k++) {
        batch_init(&ob[k], 16);
        bs[k] = ob[k].b;
    }
    ending_ctx ctx = {.dev = b, .close_device = close_device, .decline = decline};
    ft_reader_config cfg = {.batch_size = 16, .spin_us = 20, .adaptive = 1, .adaptive_pps = 1000, .pipeline = depth};
    ctx.reader = ft_reader_start(b, 0, &cfg, bs, ending_on_batch, &ctx, &e);
    CHECK(ctx.reader != NULL);
    CHECK(!ft_reader_stopping(ctx.reader) && !ft_reader_joined(ctx.reader));
    /* Sent after ctx.reader is set; within the pair's 256, and before the callback may close it. */
    CHECK(send_seq(a, 0, 200, FT_FULL_WAIT) == 200);
    ft_atomic_store(&ctx.sent, 1);
    CHECK(ft_reader_join(ctx.reader, 10000) == FT_OK);
    CHECK(ft_reader_joined(ctx.reader) && ft_reader_stopping(ctx.reader));
    CHECK(ctx.calls == 3 && ctx.late == 0 && ctx.base.bad == 0);
    CHECK(ft_reader_state(ctx.reader) == (close_device ? FT_READER_FAILED : FT_READER_STOPPED));
    ft_reader_stats rs;
    ft_reader_get_stats(ctx.reader, &rs);
    CHECK(rs.packets == ctx.base.expect + rs.undelivered);
    if (decline)
        CHECK(ctx.declined > 0 && rs.undelivered >= ctx.declined);
    else
        CHECK(rs.undelivered <= (uint64_t)(depth > 1 ? depth - 1 : 0) * 16);
    ft_reader_free(ctx.reader);
    for (uint32_t k = 0; k < (depth ? depth : 1); k++)
        batch_free(&ob[k]);
    ft_device_free(a);
    ft_device_free(b);
}

static int never_called(void *user, ft_batch *b)
{
    (void)b;
    (*(int *)user)++;
    return 0;
}

static void test_stop_is_prompt(int spin_us, int adaptive)
{
    ft_device *a, *b;
    ft_err e;
    CHECK(ft_memory_pair(1500, 16, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_OK);
    owned_batch ob;
    batch_init(&ob, 8);
    int calls = 0;
    ft_reader_config cfg = {.batch_size = 8, .spin_us = (uint32_t)spin_us, .adaptive = adaptive, .adaptive_pps = 1000};
    ft_reader *r = ft_reader_start(b, 0, &cfg, &ob.b, never_called, &calls, &e);
    CHECK(r != NULL);
    ft_sleep_us(100000);
    uint64_t t0 = ft_now_ns();
    ft_reader_request_stop(r);
    CHECK(ft_reader_join(r, 1000) == FT_OK);
    CHECK(ft_now_ns() - t0 < 50000000u);
    ft_reader_stats rs;
    ft_reader_get_stats(r, &rs);
    if (spin_us > 0 && !adaptive)
        CHECK(rs.spins > 0);
    else
        CHECK(rs.spins == 0 && rs.waits >= 1);
    CHECK(calls == 0);
    ft_reader_free(r);
    batch_free(&ob);
    ft_device_free(a);
    ft_device_free(b);
}

typedef struct blocked_arg {
    ft_device *d;
    int result;
} blocked_arg;

static void blocked_main(void *p)
{
    blocked_arg *a = p;
    owned_batch ob;
    batch_init(&ob, 4);
    ft_err e;
    a->result = ft_device_recv(a->d, 0, &ob.b, -1, &e);
    batch_free(&ob);
}

static void test_close_wakes_blocked_recv_and_reader(void)
{
    ft_device *a, *b;
    ft_err e;
    CHECK(ft_memory_pair(1500, 16, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_OK);
    blocked_arg ba = {b, 0};
    long oserr;
    ft_thread *t = ft_thread_start(blocked_main, &ba, &oserr);
    owned_batch ob;
    batch_init(&ob, 8);
    int calls = 0;
    ft_reader_config cfg = {.batch_size = 8};
    ft_reader *r = ft_reader_start(b, 0, &cfg, &ob.b, never_called, &calls, &e);
    ft_sleep_us(100000);
    uint64_t t0 = ft_now_ns();
    ft_device_close(b);
    ft_thread_join(t);
    CHECK(ft_now_ns() - t0 < 100000000u);
    CHECK(ba.result == FT_ECLOSED);
    CHECK(ft_reader_join(r, 1000) == FT_OK);
    CHECK(ft_reader_state(r) == FT_READER_FAILED);
    ft_err why;
    ft_reader_error(r, &why);
    CHECK(why.status == FT_ECLOSED);
    CHECK(ft_device_recv(b, 0, &ob.b, 0, &e) == FT_ECLOSED);
    ft_reader_free(r);
    batch_free(&ob);
    /* The other end sees the close: what it sends has nowhere to go. */
    CHECK(send_seq(a, 0, 1, FT_FULL_DROP) == FT_EEOF);
    ft_device_free(a);
    ft_device_free(b);
}

static void test_argument_checks(void)
{
    ft_device *a, *b;
    ft_err e;
    CHECK(ft_memory_pair(10, 16, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_EINVAL);
    CHECK(ft_memory_pair(1500, 0, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_EINVAL);
    CHECK(ft_memory_pair(1500, 16, 1000, &a, &b, &e) == FT_EINVAL && strstr(e.msg, "capacity_bytes"));
    CHECK(ft_memory_pair(1500, 16, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e) == FT_OK);
    owned_batch ob;
    batch_init(&ob, 8);
    ft_reader_config cfg = {.batch_size = 9};
    int calls = 0;
    CHECK(ft_reader_start(b, 0, &cfg, &ob.b, never_called, &calls, &e) == NULL && e.status == FT_EINVAL);
    cfg.batch_size = 8;
    CHECK(ft_reader_start(b, 1, &cfg, &ob.b, never_called, &calls, &e) == NULL && strstr(e.msg, "queue 1"));
    CHECK(ft_device_set_mtu(a, 50, &e) == FT_EINVAL);
    CHECK(ft_device_set_mtu(a, 9000, &e) == FT_OK);
    uint32_t mtu = 0;
    CHECK(ft_device_get_mtu(a, &mtu, &e) == FT_OK && mtu == 9000);
    uint32_t idx;
    CHECK(ft_device_get_index(a, &idx, &e) == FT_EUNSUPPORTED);
    batch_free(&ob);
    ft_device_free(a);
    ft_device_free(b);
}

/* ---- a thread's private descriptor table ---------------------------------------------------------- */

#ifdef __linux__
#include <fcntl.h>
#include <unistd.h>

typedef struct private_fds_case {
    int keep_r, keep_w, other_r, other_w;
    int rc, kept_works, other_open, main_closed_seen;
} private_fds_case;

static void private_fds_thread(void *arg)
{
    private_fds_case *c = arg;
    ft_handle keep[2] = {c->keep_r, c->keep_w};
    c->rc = ft_thread_private_fds(keep, 2);
    char x = 'k';
    c->kept_works = write(c->keep_w, &x, 1) == 1 && read(c->keep_r, &x, 1) == 1 && x == 'k';
    c->other_open = fcntl(c->other_r, F_GETFD) >= 0 || fcntl(c->other_w, F_GETFD) >= 0;
}

static void test_private_fds(void)
{
    int keep[2], other[2];
    CHECK(pipe(keep) == 0 && pipe(other) == 0);
    private_fds_case c = {keep[0], keep[1], other[0], other[1], -2, 0, 1, 0};
    long oserr = 0;
    ft_thread *t = ft_thread_start(private_fds_thread, &c, &oserr);
    CHECK(t != NULL);
    if (t)
        ft_thread_join(t);
    CHECK(c.rc == 0);            /* Linux 5.9+ without a seccomp filter, as on the development VM */
    CHECK(c.kept_works);         /* what it kept works in the thread */
    CHECK(!c.other_open);        /* the rest is gone from its table */
    /* and nothing changed for the process: both pipes still work here, and a closed write end gives EOF */
    char x = 'o';
    CHECK(write(other[1], &x, 1) == 1 && read(other[0], &x, 1) == 1 && x == 'o');
    close(other[1]);
    CHECK(read(other[0], &x, 1) == 0);
    close(other[0]);
    close(keep[0]);
    close(keep[1]);
    ft_handle too_many[FT_PRIVATE_FDS_MAX + 1] = {0};
    CHECK(ft_thread_private_fds(too_many, FT_PRIVATE_FDS_MAX + 1) == -1);
    ft_handle bad[1] = {-1};
    CHECK(ft_thread_private_fds(bad, 1) == -1);
}
#else
static void test_private_fds(void) {}
#endif


/* ---- forwards (core/ft_forward.h): a reader whose sink is another device ---------------------------------- */

/* Waits up to 10 s for the reader's packet count to reach n. */
static void wait_read(ft_reader *r, uint64_t n)
{
    ft_reader_stats rs;
    uint64_t deadline = ft_now_ns() + 10000000000u;
    do {
        ft_sleep_us(500);
        ft_reader_get_stats(r, &rs);
    } while (rs.packets < n && ft_now_ns() < deadline);
}

/* The devices of a forward under test: a -> b (capacity 256), a reader on b forwards into c, c -> d (capacity
 * cd_capacity): what a sends reaches d. With a policy, the forward and its reader on b (batches of 64). */
typedef struct fwd_chain {
    ft_device *a, *b, *c, *d;
    owned_batch ob;
    ft_forward *f;
    ft_reader *r;
} fwd_chain;

static void chain_open(fwd_chain *ch, uint32_t cd_capacity)
{
    ft_err e;
    memset(ch, 0, sizeof(*ch));
    CHECK(ft_memory_pair(1500, 256, FT_PAIR_DEFAULT_CAPACITY_BYTES, &ch->a, &ch->b, &e) == FT_OK);
    CHECK(ft_memory_pair(1500, cd_capacity, FT_PAIR_DEFAULT_CAPACITY_BYTES, &ch->c, &ch->d, &e) == FT_OK);
}

static void chain_start(fwd_chain *ch, uint32_t cd_capacity, int policy, int timeout_ms)
{
    ft_err e;
    chain_open(ch, cd_capacity);
    batch_init(&ch->ob, 64);
    ch->f = ft_forward_new(ch->c, 0, 64, 0, policy, timeout_ms, &e);
    CHECK(ch->f != NULL);
    ft_reader_config cfg = {.batch_size = 64};
    ch->r = ft_reader_start(ch->b, 0, &cfg, &ch->ob.b, ft_forward_batch, ch->f, &e);
    CHECK(ch->r != NULL);
}

/* Nothing lost silently: every packet the reader read went, was dropped and counted by c, or is undelivered. */
static void chain_accounted(const fwd_chain *ch, ft_reader_stats *rs, ft_stats *cs)
{
    ft_reader_get_stats(ch->r, rs);
    ft_device_get_stats(ch->c, cs);
    CHECK(rs->packets == cs->tx_packets + cs->tx_dropped_full + rs->undelivered);
}

static void chain_free(fwd_chain *ch)
{
    ft_reader_free(ch->r);
    ft_forward_free(ch->f);
    if (ch->ob.b.data)
        batch_free(&ch->ob);
    ft_device_free(ch->a);
    ft_device_free(ch->b);
    ft_device_free(ch->c);
    ft_device_free(ch->d);
}

/* a -> b, forwarded by a reader on b into c -> d: d receives every packet, in order, with a concurrent sender
 * and a sink that makes the forward wait for room (capacity 16 against batches of up to 64). */
static void test_forward_delivers_in_order(uint32_t depth)
{
    fwd_chain ch;
    ft_err e;
    chain_open(&ch, 16);
    owned_batch ob[8];
    uint32_t n_batches = depth < 2 ? 1 : depth;
    for (uint32_t k = 0; k < n_batches; k++)
        batch_init(&ob[k], 64);
    ft_batch bs[8];
    for (uint32_t k = 0; k < n_batches; k++)
        bs[k] = ob[k].b;
    ch.f = ft_forward_new(ch.c, 0, 64, 0, FT_FULL_WAIT, -1, &e);
    CHECK(ch.f != NULL);
    ft_reader_config cfg = {.batch_size = 64, .spin_us = 20, .pipeline = depth};
    ch.r = ft_reader_start(ch.b, 0, &cfg, bs, ft_forward_batch, ch.f, &e);
    CHECK(ch.r != NULL);
    /* d's side: a reader that checks every packet */
    owned_batch rb;
    batch_init(&rb, 64);
    reader_ctx ctx = {0};
    ft_reader_config rcfg = {.batch_size = 64, .spin_us = 20};
    ft_reader *rd = ft_reader_start(ch.d, 0, &rcfg, &rb.b, on_batch, &ctx, &e);
    CHECK(rd != NULL);
    CHECK(send_on_thread(ch.a, 50000) == 50000);
    wait_read(rd, 50000);
    ft_reader_request_stop(ch.r);
    ft_reader_request_stop(rd);
    CHECK(ft_reader_join(ch.r, 2000) == FT_OK && ft_reader_join(rd, 2000) == FT_OK);
    CHECK(ft_reader_state(ch.r) == FT_READER_STOPPED);
    CHECK(ctx.expect == 50000 && ctx.bad == 0);
    ft_reader_stats rs;
    ft_stats cs;
    chain_accounted(&ch, &rs, &cs);
    CHECK(cs.tx_packets == 50000 && cs.tx_dropped_full == 0 && cs.tx_rejected == 0);
    ft_reader_free(rd);
    batch_free(&rb);
    for (uint32_t k = 0; k < n_batches; k++)
        batch_free(&ob[k]);
    chain_free(&ch);
}

/* A hand-made batch with packets the sink refuses: each is skipped and counted there, the rest go in order. */
static void test_forward_skips_invalid_packets(void)
{
    ft_device *c, *d;
    ft_err e;
    CHECK(ft_memory_pair(1500, 64, FT_PAIR_DEFAULT_CAPACITY_BYTES, &c, &d, &e) == FT_OK);
    owned_batch ob;
    batch_init(&ob, 8);
    /* valid 0, bad, valid 1, bad, bad, valid 2, bad (last) */
    const int kinds[7] = {1, 0, 1, 0, 0, 1, 0};
    uint32_t seq = 0;
    for (int i = 0; i < 7; i++) {
        uint8_t *p = ob.b.data + ob.b.used;
        size_t len = kinds[i] ? size_for(seq) : 30;
        if (kinds[i])
            make_packet(p, len, seq++);
        else
            memset(p, 0x11, len); /* IP version 1 */
        ob.b.offsets[i] = (uint32_t)ob.b.used;
        ob.b.lengths[i] = (uint32_t)len;
        ob.b.used += len;
    }
    ob.b.count = 7;
    ft_forward *f = ft_forward_new(c, 0, 8, 0, FT_FULL_DROP, 0, &e);
    CHECK(f != NULL);
    ft_forward_record(f, 1);
    CHECK(ft_forward_batch(f, &ob.b) == 0);
    const uint32_t *went;
    CHECK(ft_forward_went(f, &went) == 3 && went[0] == 0 && went[1] == 2 && went[2] == 5);
    ft_stats cs;
    ft_device_get_stats(c, &cs);
    CHECK(cs.tx_packets == 3 && cs.tx_rejected == 4);
    owned_batch got;
    batch_init(&got, 8);
    CHECK(ft_device_recv(d, 0, &got.b, 0, &e) == 3);
    for (uint32_t i = 0; i < 3; i++)
        CHECK(packet_ok(got.b.data + got.b.offsets[i], got.b.lengths[i], i));
    /* Every packet bad: nothing goes, all counted. */
    for (uint32_t i = 0; i < 7; i++)
        if (kinds[i])
            memset(ob.b.data + ob.b.offsets[i], 0x11, 1);
    CHECK(ft_forward_batch(f, &ob.b) == 0);
    CHECK(ft_forward_went(f, &went) == 0);
    ft_device_get_stats(c, &cs);
    CHECK(cs.tx_packets == 3 && cs.tx_rejected == 11);
    ft_forward_free(f);
    batch_free(&ob);
    batch_free(&got);
    ft_device_free(c);
    ft_device_free(d);
}

/* A sink that never makes room: under "wait" the forward stops promptly when asked, dropping and counting what
 * waited; under "drop" it never waits; with a timeout it waits that long, then drops. */
static void test_forward_full_sink(int policy, int timeout_ms)
{
    fwd_chain ch;
    chain_start(&ch, 8, policy, timeout_ms);
    CHECK(send_seq(ch.a, 0, 100, FT_FULL_WAIT) == 100);
    if (policy == FT_FULL_WAIT && timeout_ms < 0)
        ft_sleep_us(100000); /* the forward is waiting for room now */
    else
        wait_read(ch.r, 100);
    uint64_t t0 = ft_now_ns();
    ft_reader_request_stop(ch.r);
    CHECK(ft_reader_join(ch.r, 2000) == FT_OK);
    CHECK(ft_now_ns() - t0 < 500000000u); /* promptly, even while waiting for room */
    ft_reader_stats rs;
    ft_stats cs;
    chain_accounted(&ch, &rs, &cs);
    CHECK(cs.tx_packets == 8);
    if (policy == FT_FULL_DROP || timeout_ms >= 0)
        CHECK(rs.packets == 100 && cs.tx_dropped_full == 92);
    chain_free(&ch);
}

/* A sink closed under the forward ends the reader (its batch function stopped it), says why, and counts what
 * it could not send; a sink closed while the forward waits for room wakes it. */
static void test_forward_sink_closed(int while_waiting)
{
    fwd_chain ch;
    chain_start(&ch, 8, FT_FULL_WAIT, -1);
    if (while_waiting == 2) { /* inside the forward's first wait for room, the call that sent the first 8 */
        CHECK(send_seq(ch.a, 0, 40, FT_FULL_WAIT) == 40);
        wait_read(ch.r, 40);
        ft_device_close(ch.c);
    } else if (while_waiting) {
        CHECK(send_seq(ch.a, 0, 40, FT_FULL_WAIT) == 40);
        ft_sleep_us(100000);
        ft_device_close(ch.c);
    } else {
        ft_device_close(ch.c);
        CHECK(send_seq(ch.a, 0, 40, FT_FULL_WAIT) == 40);
    }
    CHECK(ft_reader_join(ch.r, 2000) == FT_OK);
    CHECK(ft_reader_state(ch.r) == FT_READER_CALLBACK_STOPPED);
    ft_err why;
    ft_forward_error(ch.f, &why);
    CHECK(why.status == FT_ECLOSED);
    ft_reader_stats rs;
    ft_stats cs;
    chain_accounted(&ch, &rs, &cs);
    CHECK(rs.undelivered > 0);
    if (while_waiting)
        CHECK(cs.tx_packets == 8 && rs.undelivered == 32);
    chain_free(&ch);
}

static void test_forward_argument_checks(void)
{
    ft_device *c, *d;
    ft_err e;
    CHECK(ft_memory_pair(1500, 8, FT_PAIR_DEFAULT_CAPACITY_BYTES, &c, &d, &e) == FT_OK);
    CHECK(ft_forward_new(c, 1, 64, 0, FT_FULL_DROP, 0, &e) == NULL && e.status == FT_EINVAL);
    CHECK(ft_forward_new(c, 0, 0, 0, FT_FULL_DROP, 0, &e) == NULL && strstr(e.msg, "batch_size") != NULL);
    CHECK(ft_forward_new(c, 0, 64, 0, 7, 0, &e) == NULL && strstr(e.msg, "policy") != NULL);
    /* a batch larger than the forward was made for is refused, not cut short */
    ft_forward *small = ft_forward_new(c, 0, 2, 0, FT_FULL_DROP, 0, &e);
    CHECK(small != NULL);
    owned_batch three;
    batch_init(&three, 3);
    for (uint32_t i = 0; i < 3; i++) {
        make_packet(three.b.data + three.b.used, 40, i);
        three.b.offsets[i] = (uint32_t)three.b.used;
        three.b.lengths[i] = 40;
        three.b.used += 40;
    }
    three.b.count = 3;
    ft_err why;
    CHECK(ft_forward_batch(small, &three.b) == 1);
    ft_forward_error(small, &why);
    CHECK(why.status == FT_EINVAL && strstr(why.msg, "3 packets") != NULL);
    ft_stats cs;
    ft_device_get_stats(c, &cs);
    CHECK(cs.tx_packets == 0);
    ft_forward_free(small);
    batch_free(&three);
    /* super-packets need a sink with offload: a pair has none */
    CHECK(ft_forward_new(c, 0, 64, 1, FT_FULL_DROP, 0, &e) == NULL && strstr(e.msg, "super-packets") != NULL);
    ft_device_free(c);
    ft_device_free(d);
}

int main(void)
{
    test_packet_check();
    test_pair_order_and_wraparound();
    test_full_policies();
    test_reader_with_concurrent_sender();
    test_pipelined_reader(2);
    test_pipelined_reader(5);
    const uint32_t depths[] = {0, 2, 8};
    for (int k = 0; k < 3; k++) {
        for (int decline = 0; decline < 2; decline++) {
            test_ending_from_the_callback(depths[k], 0, decline);
            test_ending_from_the_callback(depths[k], 1, decline);
        }
    }
    test_stop_is_prompt(0, 0);
    test_stop_is_prompt(500000, 0);
    test_stop_is_prompt(500000, 1);
    test_close_wakes_blocked_recv_and_reader();
    test_argument_checks();
    test_private_fds();
    test_forward_delivers_in_order(0);
    test_forward_delivers_in_order(2);
    test_forward_skips_invalid_packets();
    test_forward_full_sink(FT_FULL_WAIT, -1);
    test_forward_full_sink(FT_FULL_WAIT, 50);
    test_forward_full_sink(FT_FULL_DROP, 0);
    test_forward_sink_closed(0);
    test_forward_sink_closed(1);
    test_forward_sink_closed(2);
    test_forward_argument_checks();
    return check_summary();
}
