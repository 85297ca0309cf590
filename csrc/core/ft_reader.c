/* core/ft_reader.c - the batching reader thread. */
#include "core/ft_reader.h"

#include <stdlib.h>
#include <string.h>
#include <errno.h>

#define RATE_WINDOW_NS 500000000u

typedef struct reader_stats_atomic { FT_READER_STATS_FIELDS(FT_COUNTER_ATOMIC_) } reader_stats_atomic;

typedef struct pipeline {
    uint32_t depth;          /* batches in flight (r->batch[0..depth-1]); 0 or 1: no pipeline */
    ft_mutex *lock;          /* guards the fields below */
    ft_event *ready;         /* a slot was filled (or reading ended) */
    ft_event *freed;         /* a slot was delivered */
    ft_thread *thread;       /* the reading thread */
    uint32_t head, tail;
    ft_atomic_int filled;    /* changed under the lock; read without it while spinning */
    ft_atomic_int read_done; /* likewise */
    ft_atomic_int hot;       /* the reading side's spin policy allows spinning (so may the delivering side) */
    ft_atomic_int asleep;    /* the reading thread sleeps on the device (its queue was empty) */
    int reader_waiting, deliverer_waiting;
    int read_end;            /* how reading ended: FILL_STOPPED or FILL_FAILED (r->error) */
} pipeline;

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
    ft_atomic_int joined;     /* the thread was joined (or detached): r->thread is gone */
    ft_atomic_int joining;    /* claimed by the one caller that joins; others wait for joined */
    ft_err error;
    reader_stats_atomic stats;
    pipeline pl;
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

/* When to spin: only while packets arrive at adaptive_pps or more (measured over half-second windows), or
 * from the moment a batch came back full (a backlog: packets arrive faster than one read each) until a
 * window ends below the rate. A burst shorter than a window is then served hot too. */
typedef struct spin_policy {
    uint64_t spin_ns;
    uint64_t window_start, window_packets;
    int hot;
} spin_policy;

static void spin_init(ft_reader *r, spin_policy *sp)
{
    sp->spin_ns = (uint64_t)r->cfg.spin_us * 1000u;
    sp->window_start = ft_now_ns();
    sp->window_packets = 0;
    sp->hot = !r->cfg.adaptive; /* without adaptation, always allowed to spin */
}

static void spin_count(ft_reader *r, spin_policy *sp, uint32_t packets, int full)
{
    if (!r->cfg.adaptive)
        return;
    if (full)
        sp->hot = 1;
    sp->window_packets += packets;
    uint64_t now = ft_now_ns(), elapsed = now - sp->window_start;
    if (elapsed >= RATE_WINDOW_NS) {
        sp->hot = sp->window_packets * 1000000000u / elapsed >= r->cfg.adaptive_pps;
        sp->window_start = now;
        sp->window_packets = 0;
    }
}

enum { FILL_STOPPED = 0, FILL_FAILED = -1 };

/* Fills b with what the device has, spinning briefly and then sleeping until at least one packet came.
 * Returns the packet count, FILL_STOPPED once a stop was requested, or FILL_FAILED with r->error set. */
static int fill(ft_reader *r, spin_policy *sp, ft_batch *b)
{
    ft_device *d = r->dev;
    ft_err e;
    memset(&e, 0, sizeof(e));
    while (!ft_atomic_load(&r->stop)) {
        if (ft_atomic_load(&d->closed)) {
            ft_fail(&r->error, FT_ECLOSED, EBADF, "the device was closed");
            return FILL_FAILED;
        }
        b->count = 0;
        b->used = 0;
        int got = d->ops->recv(d, r->queue, b, &e);
        if (got == FT_EAGAIN && sp->spin_ns > 0 && sp->hot) {
            uint64_t start = ft_now_ns(), polls = 0;
            do {
                polls++;
                ft_cpu_relax();
                got = d->ops->recv(d, r->queue, b, &e);
            } while (got == FT_EAGAIN && !ft_atomic_load(&r->stop) && ft_now_ns() - start < sp->spin_ns);
            ft_atomic_add64(&r->stats.spins, polls);
            ft_atomic_add64(&d->stats.spins, polls);
            if (got > 0)
                ft_atomic_add64(&r->stats.spin_hits, 1);
        }
        if (got == FT_EAGAIN) {
            ft_atomic_add64(&r->stats.waits, 1);
            ft_atomic_add64(&d->stats.waits, 1);
            ft_atomic_store(&r->pl.asleep, 1);
            int w = ft_device_wait(d, r->queue, FT_WAIT_READ, -1, r->wake, &e);
            ft_atomic_store(&r->pl.asleep, 0);
            if (w == FT_OK || w == FT_EWOKEN)
                continue;
            r->error = e;
            return FILL_FAILED;
        }
        if (got < 0) {
            if (got != FT_ECLOSED)
                ft_atomic_add64(&d->stats.rx_errors, 1);
            r->error = e;
            return FILL_FAILED;
        }
        count_batch(r, b);
        spin_count(r, sp, b->count, b->count >= b->max);
        return got;
    }
    return FILL_STOPPED;
}

/* How a reader ends whose callback declined a batch: stopped, or failed because its device was closed. */
static int ended_without_callback(ft_reader *r)
{
    if (ft_atomic_load(&r->stop))
        return FT_READER_STOPPED;
    ft_fail(&r->error, FT_ECLOSED, EBADF, "the device was closed");
    return FT_READER_FAILED;
}

/* One thread: read a batch, hand it over, repeat. */
static void reader_loop(ft_reader *r)
{
    spin_policy sp;
    spin_init(r, &sp);
    for (;;) {
        int got = fill(r, &sp, r->batch);
        if (got == FILL_STOPPED) {
            finish(r, FT_READER_STOPPED);
            return;
        }
        if (got == FILL_FAILED) {
            finish(r, FT_READER_FAILED);
            return;
        }
        int rc = r->fn(r->user, r->batch);
        if (rc == FT_READER_DECLINED) {
            ft_atomic_add64(&r->stats.undelivered, r->batch->count);
            finish(r, ended_without_callback(r));
            return;
        }
        if (rc != 0) {
            finish(r, FT_READER_CALLBACK_STOPPED);
            return;
        }
    }
}

/* ---- pipelined: one thread reads into the next arena while the callback runs on the previous one --------- */

/* While packets flow fast (the spin policy says hot), a hand-off between the two threads can be a matter of
 * microseconds, less than waking a sleeping thread costs the thread that wakes it: on the development VM every
 * such wake was an inter-processor interrupt sent by the reading thread (7,800 in a drain of 500,000 packets at
 * batch 64, one per batch), and the pipelined reader drained a TUN queue at 0.88x the C loop against 0.94x with
 * the delivering side spinning through the whole batch (side by side, 9 rounds). So
 * the waiting side spins for the other before it sleeps, but only while that works:
 * - the delivering side waits for a batch while the reading thread is awake (reading, or spinning on an empty
 *   device for at most spin_us): the batch is coming, as fast as the kernel hands over packets. It stops as soon
 *   as the reading thread goes to sleep on the device, and after DELIVER_SPIN_MAX_NS at most;
 * - the reading side waits for a free arena for at most spin_us (a callback can take any time).
 * A spin that runs out stops that side spinning for the next SPIN_BACKOFF hand-offs, so a side that keeps
 * waiting longer than that leaves the CPU to others. With spin_us 0 neither side ever spins. */
#define SPIN_BACKOFF 64u
#define DELIVER_SPIN_MAX_NS 2000000u

typedef struct handoff {
    uint32_t skip;  /* hand-offs left before this side tries spinning again */
} handoff;

/* Returns when `filled` is no longer `busy` (or the time is up, or reading ended or a stop came); the caller
 * rechecks under the lock either way. */
static void pipeline_spin(ft_reader *r, handoff *h, int busy)
{
    pipeline *pl = &r->pl;
    int delivering = busy == 0;
    uint64_t spin_ns = (uint64_t)r->cfg.spin_us * 1000u;
    if (spin_ns == 0 || !ft_atomic_load(&pl->hot))
        return;
    if (delivering && spin_ns < DELIVER_SPIN_MAX_NS)
        spin_ns = DELIVER_SPIN_MAX_NS;
    if (h->skip > 0) {
        h->skip--;
        return;
    }
    uint64_t start = ft_now_ns();
    for (uint32_t n = 1;; n++) {
        if (ft_atomic_load(&pl->filled) != busy || ft_atomic_load(&pl->read_done) || ft_atomic_load(&r->stop) ||
            ft_atomic_load(&r->dev->closed))
            return;
        if (delivering && ft_atomic_load(&pl->asleep))
            return; /* no batch before the next packet: sleep until the reading thread has one */
        ft_cpu_relax();
        if (n % 64 == 0 && ft_now_ns() - start >= spin_ns) {
            h->skip = SPIN_BACKOFF;
            return;
        }
    }
}

/* The reading thread runs only the backend's receive path and the pipeline's events: where the backend can
 * name the descriptors that path uses, the thread keeps a descriptor table of its own with only those, and
 * its reads skip the file reference count a shared table costs on each (see ft_thread_private_fds). On the
 * development VM the C read() loop drained a queue at 0.94x of itself beside one idle thread, 0.99x with a
 * private table; here perf counted 35 samples in fdget_pos over two drains of 500,000 packets against 107
 * with the shared table (about 18 ns of a 650 ns packet). */
static void pipeline_private_fds(ft_reader *r)
{
    ft_device *d = r->dev;
    if (!d->ops->receiver_fds)
        return;
    ft_handle keep[FT_PRIVATE_FDS_MAX];
    int n = d->ops->receiver_fds(d, r->queue, keep, FT_PRIVATE_FDS_MAX - 4);
    if (n <= 0)
        return;
    keep[n++] = ft_event_handle(r->wake);
    keep[n++] = ft_event_handle(r->pl.ready);
    keep[n++] = ft_event_handle(r->pl.freed);
    keep[n++] = ft_event_handle(d->close_event);
    (void)ft_thread_private_fds(keep, n); /* without it, reads work as before */
}

/* The reading thread. Slots go round in order (tail: next to fill, head: next to deliver), so batches of a
 * queue keep their order; with every slot full it waits, and the device's own queue takes the back-pressure. */
static void pipeline_read(void *arg)
{
    ft_reader *r = arg;
    pipeline *pl = &r->pl;
    pipeline_private_fds(r);
    spin_policy sp;
    spin_init(r, &sp);
    handoff h = {0};
    for (;;) {
        if (ft_atomic_load(&pl->filled) == (int)pl->depth)
            pipeline_spin(r, &h, (int)pl->depth);
        ft_mutex_lock(pl->lock);
        if (ft_atomic_load(&pl->filled) == (int)pl->depth) {
            pl->reader_waiting = 1;
            ft_event_reset(pl->freed);
            ft_mutex_unlock(pl->lock);
            ft_handle h[3] = {ft_event_handle(pl->freed), ft_event_handle(r->wake),
                              ft_event_handle(r->dev->close_event)};
            long oserr = 0;
            ft_wait_any(h, 3, 0, -1, &oserr);
            ft_mutex_lock(pl->lock);
            pl->reader_waiting = 0;
            ft_mutex_unlock(pl->lock);
            if (ft_atomic_load(&r->stop) || ft_atomic_load(&r->dev->closed)) {
                if (!ft_atomic_load(&r->stop))
                    ft_fail(&r->error, FT_ECLOSED, EBADF, "the device was closed");
                pl->read_end = ft_atomic_load(&r->stop) ? FILL_STOPPED : FILL_FAILED;
                break;
            }
            continue;
        }
        ft_batch *b = &r->batch[pl->tail];
        ft_mutex_unlock(pl->lock);
        int got = fill(r, &sp, b);
        if (got <= 0) {
            pl->read_end = got;
            break;
        }
        if (ft_atomic_load(&pl->hot) != sp.hot)
            ft_atomic_store(&pl->hot, sp.hot);
        ft_mutex_lock(pl->lock);
        pl->tail = (pl->tail + 1) % pl->depth;
        (void)ft_atomic_add(&pl->filled, 1);
        if (pl->deliverer_waiting)
            ft_event_set(pl->ready);
        ft_mutex_unlock(pl->lock);
    }
    ft_mutex_lock(pl->lock);
    ft_atomic_store(&pl->read_done, 1);
    ft_event_set(pl->ready);
    ft_mutex_unlock(pl->lock);
}

/* The delivering thread (the reader's own, with the caller's thread hooks): hands filled slots to the callback
 * in order. A stop (requested anywhere, the callback included), the device's close and a callback that stops the
 * reader end the deliveries as they end the plain reader's: no callback after the one running, and what was read
 * ahead and not delivered is counted (stats.undelivered). After a device error it still delivers what was read
 * before it, as the plain reader would have. */
static void pipeline_deliver(ft_reader *r)
{
    pipeline *pl = &r->pl;
    int stopped_by_callback = 0, abandoned = 0;
    handoff h = {0};
    for (;;) {
        if (ft_atomic_load(&r->stop) || ft_atomic_load(&r->dev->closed)) {
            abandoned = 1; /* the reading thread sees the same and ends */
            break;
        }
        if (ft_atomic_load(&pl->filled) == 0)
            pipeline_spin(r, &h, 0);
        ft_mutex_lock(pl->lock);
        if (ft_atomic_load(&pl->filled) == 0) {
            if (ft_atomic_load(&pl->read_done)) {
                ft_mutex_unlock(pl->lock);
                break;
            }
            pl->deliverer_waiting = 1;
            ft_event_reset(pl->ready);
            ft_mutex_unlock(pl->lock);
            ft_handle h = ft_event_handle(pl->ready);
            long oserr = 0;
            ft_wait_any(&h, 1, 0, -1, &oserr);
            ft_mutex_lock(pl->lock);
            pl->deliverer_waiting = 0;
            ft_mutex_unlock(pl->lock);
            continue;
        }
        ft_batch *b = &r->batch[pl->head];
        ft_mutex_unlock(pl->lock);
        int rc = r->fn(r->user, b);
        if (rc == FT_READER_DECLINED) {
            abandoned = 1; /* the batch stays in its slot and is counted with the read-ahead below */
            break;
        }
        ft_mutex_lock(pl->lock);
        pl->head = (pl->head + 1) % pl->depth;
        (void)ft_atomic_add(&pl->filled, -1);
        if (pl->reader_waiting)
            ft_event_set(pl->freed);
        ft_mutex_unlock(pl->lock);
        if (rc != 0) {
            stopped_by_callback = 1;
            ft_reader_request_stop(r);
            break;
        }
    }
    ft_thread_join(pl->thread);
    pl->thread = NULL;
    if (stopped_by_callback || abandoned) {
        uint64_t lost = 0;
        for (uint32_t k = 0, i = pl->head; k < (uint32_t)ft_atomic_load(&pl->filled); k++, i = (i + 1) % pl->depth)
            lost += r->batch[i].count;
        ft_atomic_add64(&r->stats.undelivered, lost);
    }
    if (stopped_by_callback) {
        finish(r, FT_READER_CALLBACK_STOPPED);
    } else {
        finish(r, pl->read_end == FILL_FAILED ? FT_READER_FAILED : FT_READER_STOPPED);
    }
}

/* The reader whose callbacks this thread runs (NULL elsewhere): answers "am I on my reader's thread" without
 * touching r->thread, which a joining thread may be freeing at that moment. */
static FT_THREAD_LOCAL ft_reader *current_reader;

int ft_reader_on_reader_thread(void) { return current_reader != NULL; }

ft_reader *ft_reader_current(void) { return current_reader; }

void ft_reader_count_undelivered(ft_reader *r, uint64_t n) { ft_atomic_add64(&r->stats.undelivered, n); }

static void pipeline_free(pipeline *pl)
{
    ft_mutex_destroy(pl->lock);
    ft_event_destroy(pl->ready);
    ft_event_destroy(pl->freed);
}

static void reader_unref(ft_reader *r)
{
    if (ft_atomic_add(&r->refs, -1) != 0)
        return;
    pipeline_free(&r->pl);
    ft_event_destroy(r->wake);
    ft_event_destroy(r->done);
    free(r);
}

static void reader_main(void *arg)
{
    ft_reader *r = arg;
    current_reader = r;
    if (r->cfg.thread_start)
        r->cfg.thread_start(r->user);
    if (r->pl.depth > 1) {
        long oserr = 0;
        r->pl.thread = ft_thread_start(pipeline_read, r, &oserr);
        if (r->pl.thread) {
            pipeline_deliver(r);
        } else {
            ft_fail_os(&r->error, oserr, "could not start the reader's reading thread");
            finish(r, FT_READER_FAILED);
        }
    } else {
        reader_loop(r);
    }
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
    uint32_t depth = cfg->pipeline < 2 ? 1 : cfg->pipeline;
    if (ft_device_check_queue(d, q, e) != FT_OK || ft_limit_check(&ft_limit_pipeline, cfg->pipeline, e) != FT_OK ||
        ft_limit_check(&ft_limit_batch_size, cfg->batch_size, e) != FT_OK ||
        ft_limit_check(&ft_limit_spin_us, cfg->spin_us, e) != FT_OK)
        return NULL;
    for (uint32_t k = 0; k < depth; k++) {
        if (cfg->batch_size > b[k].max) {
            ft_fail(e, FT_EINVAL, EINVAL, "batch_size %u does not fit an arena table of %u packets", cfg->batch_size,
                    b[k].max);
            return NULL;
        }
        if (b[k].cap < d->max_packet) {
            ft_fail(e, FT_EINVAL, EINVAL, "an arena of %zu bytes cannot hold a %u-byte packet", b[k].cap,
                    d->max_packet);
            return NULL;
        }
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
    for (uint32_t k = 0; k < depth; k++)
        b[k].max = cfg->batch_size;
    r->wake = ft_event_create();
    r->done = ft_event_create();
    if (!r->wake || !r->done) {
        ft_fail_os(e, ft_last_oserror(), "could not create the reader's events");
        goto fail;
    }
    if (depth > 1) {
        r->pl.depth = depth;
        r->pl.lock = ft_mutex_create();
        r->pl.ready = ft_event_create();
        r->pl.freed = ft_event_create();
        if (!r->pl.lock || !r->pl.ready || !r->pl.freed) {
            ft_fail_os(e, ft_last_oserror(), "could not create the reader's pipeline");
            goto fail;
        }
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
    pipeline_free(&r->pl);
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

int ft_reader_stopping(ft_reader *r) { return ft_atomic_load(&r->stop) || ft_atomic_load(&r->dev->closed); }

int ft_reader_joined(ft_reader *r) { return ft_atomic_load(&r->joined); }

int ft_reader_join(ft_reader *r, int timeout_ms)
{
    if (ft_atomic_load(&r->joined))
        return FT_OK;
    if (current_reader == r)
        return FT_EINVAL;
    ft_handle h = ft_event_handle(r->done);
    long oserr = 0;
    int w = ft_wait_any(&h, 1, 0, timeout_ms, &oserr);
    if (w != 0)
        return FT_ETIMEDOUT;
    /* Several threads may get here at once (close() and stop() together): one joins, the others wait for it;
     * the thread has ended its work already, so that is short. */
    if (ft_atomic_cas(&r->joining, 0, 1)) {
        ft_thread_join(r->thread);
        r->thread = NULL;
        ft_atomic_store(&r->joined, 1);
    }
    while (!ft_atomic_load(&r->joined))
        ft_sleep_us(100);
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

void ft_reader_get_stats(ft_reader *r, ft_reader_stats *out)
{
    reader_stats_atomic *in = &r->stats;
    FT_READER_STATS_FIELDS(FT_COUNTER_LOAD_)
}

int ft_reader_is_current_thread(ft_reader *r) { return current_reader == r; }

void ft_reader_free(ft_reader *r)
{
    if (!r)
        return;
    if (!ft_atomic_load(&r->joined)) {
        ft_reader_request_stop(r);
        if (current_reader == r) {
            /* Freed from its own thread (its owner's finalizer ran in a callback or at its end): never wait
             * for ourselves; the thread finishes on its own and lets go of the reader last. */
            ft_thread_detach(r->thread);
            r->thread = NULL;
            ft_atomic_store(&r->joined, 1);
        } else {
            ft_reader_join(r, -1);
        }
    }
    reader_unref(r);
}

void ft_reader_forget_after_fork(ft_reader *r)
{
    if (!r || ft_atomic_load(&r->joined))
        return;
    /* The thread exists only in the parent: nothing to join, and its reference is gone with it. */
    r->thread = NULL; /* its small bookkeeping block stays allocated in the child */
    ft_atomic_store(&r->joined, 1);
    ft_atomic_cas(&r->state, FT_READER_RUNNING, FT_READER_STOPPED);
    (void)ft_atomic_add(&r->refs, -1);
}
