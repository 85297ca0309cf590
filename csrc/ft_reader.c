/* ft_reader.c - the batching reader thread. */
#include "ft_reader.h"

#include <stdlib.h>
#include <string.h>
#include <errno.h>

#define RATE_WINDOW_NS 500000000u

typedef struct reader_stats_atomic {
    ft_atomic_u64 packets, bytes, batches, full_batches, waits, spins, spin_hits, max_batch;
} reader_stats_atomic;

struct ft_reader {
    ft_device *dev;
    int queue;
    ft_reader_config cfg;
    ft_batch *batch;
    ft_batch_fn fn;
    void *user;
    ft_thread *thread;
    ft_event *wake;       /* set by request_stop */
    ft_event *done;       /* set when the thread leaves its loop */
    ft_atomic_int stop;
    ft_atomic_int state;
    ft_atomic_int refs;   /* the owner's and the thread's: whoever lets go last frees the reader */
    int joined;
    ft_err error;
    reader_stats_atomic stats;
};

static void count_batch(ft_reader *r, const ft_batch *b)
{
    ft_device *d = r->dev;
    ft_atomic_add64(&r->stats.packets, b->count);
    ft_atomic_add64(&r->stats.bytes, b->used);
    ft_atomic_add64(&r->stats.batches, 1);
    if (b->count >= b->max || b->cap - b->used < d->max_packet)
        ft_atomic_add64(&r->stats.full_batches, 1);
    if (b->count > ft_atomic_load64(&r->stats.max_batch))
        ft_atomic_store64(&r->stats.max_batch, b->count);
    ft_atomic_add64(&d->stats.rx_packets, b->count);
    ft_atomic_add64(&d->stats.rx_bytes, b->used);
    ft_atomic_add64(&d->stats.rx_batches, 1);
}

static int finish(ft_reader *r, int state)
{
    ft_atomic_store(&r->state, state);
    return state;
}

static void reader_loop(ft_reader *r)
{
    ft_device *d = r->dev;
    ft_batch *b = r->batch;
    const uint64_t spin_ns = (uint64_t)r->cfg.spin_us * 1000u;
    uint64_t window_start = ft_now_ns(), window_packets = 0;
    int hot = !r->cfg.adaptive;   /* without adaptation, always allowed to spin */
    ft_err e;
    memset(&e, 0, sizeof(e));

    while (!ft_atomic_load(&r->stop)) {
        if (ft_atomic_load(&d->closed)) {
            ft_fail(&r->error, FT_ECLOSED, EBADF, "the device was closed");
            finish(r, FT_READER_FAILED);
            return;
        }
        b->count = 0;
        b->used = 0;
        int got = d->ops->recv(d, r->queue, b, &e);
        if (got == FT_EAGAIN && spin_ns > 0 && hot) {
            uint64_t start = ft_now_ns(), polls = 0;
            do {
                polls++;
                ft_cpu_relax();
                got = d->ops->recv(d, r->queue, b, &e);
            } while (got == FT_EAGAIN && !ft_atomic_load(&r->stop) && ft_now_ns() - start < spin_ns);
            ft_atomic_add64(&r->stats.spins, polls);
            ft_atomic_add64(&d->stats.spins, polls);
            if (got > 0)
                ft_atomic_add64(&r->stats.spin_hits, 1);
        }
        if (got == FT_EAGAIN) {
            ft_atomic_add64(&r->stats.waits, 1);
            ft_atomic_add64(&d->stats.waits, 1);
            int w = ft_device_wait(d, r->queue, FT_WAIT_READ, -1, r->wake, &e);
            if (w == FT_OK || w == FT_EWOKEN)
                continue;
            r->error = e;
            finish(r, FT_READER_FAILED);
            return;
        }
        if (got < 0) {
            if (got != FT_ECLOSED)
                ft_atomic_add64(&d->stats.rx_errors, 1);
            r->error = e;
            finish(r, FT_READER_FAILED);
            return;
        }
        count_batch(r, b);
        if (r->cfg.adaptive) {
            window_packets += b->count;
            uint64_t now = ft_now_ns(), elapsed = now - window_start;
            if (elapsed >= RATE_WINDOW_NS) {
                hot = window_packets * 1000000000u / elapsed >= r->cfg.adaptive_pps;
                window_start = now;
                window_packets = 0;
            }
        }
        if (r->fn(r->user, b) != 0) {
            finish(r, FT_READER_CALLBACK_STOPPED);
            return;
        }
    }
    finish(r, FT_READER_STOPPED);
}

static FT_THREAD_LOCAL int on_reader_thread;

int ft_reader_on_reader_thread(void) { return on_reader_thread; }

static void reader_unref(ft_reader *r)
{
    if (ft_atomic_add(&r->refs, -1) != 0)
        return;
    ft_event_destroy(r->wake);
    ft_event_destroy(r->done);
    free(r);
}

static void reader_main(void *arg)
{
    ft_reader *r = arg;
    on_reader_thread = 1;
    if (r->cfg.thread_start)
        r->cfg.thread_start(r->user);
    reader_loop(r);
    /* Leave the device first: thread_end may drop the last reference to whoever owns the device and the
     * reader, and their finalizers must not find this thread still counted as a user. */
    ft_device_leave(r->dev);
    if (r->cfg.thread_end)
        r->cfg.thread_end(r->user);
    ft_event_set(r->done);
    reader_unref(r);
}

ft_reader *ft_reader_start(ft_device *d, int q, const ft_reader_config *cfg, ft_batch *b, ft_batch_fn fn,
                           void *user, ft_err *e)
{
    if (q < 0 || q >= d->nqueues) {
        ft_fail(e, FT_EINVAL, EINVAL, "queue %d does not exist (the device has %d)", q, d->nqueues);
        return NULL;
    }
    if (cfg->batch_size == 0 || cfg->batch_size > b->max) {
        ft_fail(e, FT_EINVAL, EINVAL, "batch_size %u is out of range; allowed: 1..%u", cfg->batch_size, b->max);
        return NULL;
    }
    if (b->cap < d->max_packet) {
        ft_fail(e, FT_EINVAL, EINVAL, "an arena of %zu bytes cannot hold a %u-byte packet", b->cap, d->max_packet);
        return NULL;
    }
    if (cfg->spin_us > FT_READER_MAX_SPIN_US) {
        ft_fail(e, FT_EINVAL, EINVAL, "spin_us %u is out of range; allowed: 0..%u", cfg->spin_us,
                FT_READER_MAX_SPIN_US);
        return NULL;
    }
    ft_reader *r = calloc(1, sizeof(*r));
    if (!r) {
        ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a reader");
        return NULL;
    }
    r->dev = d;
    r->queue = q;
    r->cfg = *cfg;
    r->batch = b;
    r->fn = fn;
    r->user = user;
    ft_atomic_store(&r->refs, 2);
    b->max = cfg->batch_size;
    r->wake = ft_event_create();
    r->done = ft_event_create();
    if (!r->wake || !r->done) {
        ft_fail_os(e, ft_last_oserror(), "could not create the reader's events");
        goto fail;
    }
    /* The reader holds the device open for its whole life; close() wakes it through close_event. */
    if (ft_device_enter(d, e) != FT_OK)
        goto fail;
    long oserr = 0;
    r->thread = ft_thread_start(reader_main, r, &oserr);
    if (!r->thread) {
        ft_device_leave(d);
        ft_fail_os(e, oserr, "could not start the reader thread");
        goto fail;
    }
    return r;
fail:
    ft_event_destroy(r->wake);
    ft_event_destroy(r->done);
    free(r);
    return NULL;
}

void ft_reader_request_stop(ft_reader *r)
{
    ft_atomic_store(&r->stop, 1);
    ft_event_set(r->wake);
}

int ft_reader_join(ft_reader *r, int timeout_ms)
{
    if (r->joined)
        return FT_OK;
    if (ft_thread_is_current(r->thread))
        return FT_EINVAL;
    ft_handle h = ft_event_handle(r->done);
    long oserr = 0;
    int w = ft_wait_any(&h, 1, 0, timeout_ms, &oserr);
    if (w != 0)
        return FT_ETIMEDOUT;
    ft_thread_join(r->thread);
    r->thread = NULL;
    r->joined = 1;
    return FT_OK;
}

int ft_reader_state(ft_reader *r) { return ft_atomic_load(&r->state); }

void ft_reader_error(ft_reader *r, ft_err *out)
{
    if (ft_atomic_load(&r->state) == FT_READER_FAILED)
        *out = r->error;
    else
        memset(out, 0, sizeof(*out));
}

void ft_reader_get_stats(ft_reader *r, ft_reader_stats *o)
{
    o->packets = ft_atomic_load64(&r->stats.packets);
    o->bytes = ft_atomic_load64(&r->stats.bytes);
    o->batches = ft_atomic_load64(&r->stats.batches);
    o->full_batches = ft_atomic_load64(&r->stats.full_batches);
    o->waits = ft_atomic_load64(&r->stats.waits);
    o->spins = ft_atomic_load64(&r->stats.spins);
    o->spin_hits = ft_atomic_load64(&r->stats.spin_hits);
    o->max_batch = ft_atomic_load64(&r->stats.max_batch);
}

int ft_reader_is_current_thread(ft_reader *r) { return r->thread && ft_thread_is_current(r->thread); }

void ft_reader_free(ft_reader *r)
{
    if (!r)
        return;
    if (!r->joined) {
        ft_reader_request_stop(r);
        if (ft_thread_is_current(r->thread)) {
            /* Freed from its own thread (its owner's finalizer ran in a callback or at its end): never wait
             * for ourselves; the thread finishes on its own and lets go of the reader last. */
            ft_thread_detach(r->thread);
            r->thread = NULL;
            r->joined = 1;
        } else {
            ft_reader_join(r, -1);
        }
    }
    reader_unref(r);
}

void ft_reader_forget_after_fork(ft_reader *r)
{
    if (!r || r->joined)
        return;
    /* The thread exists only in the parent: nothing to join, and its reference is gone with it. */
    r->thread = NULL; /* its small bookkeeping block stays allocated in the child */
    r->joined = 1;
    ft_atomic_cas(&r->state, FT_READER_RUNNING, FT_READER_STOPPED);
    (void)ft_atomic_add(&r->refs, -1);
}
