/* core/ft_reader.h - the batching reader thread: spin briefly, then wait on the device; fill a batch of up to N
 * packets into a preallocated arena; hand the batch to a callback; repeat until stopped. It talks only to
 * the backend interface in ft_device.h. */
#ifndef FT_READER_H
#define FT_READER_H

#include "core/ft_device.h"

typedef struct ft_reader_config {
    uint32_t batch_size;   /* packets per batch, 1..batch->max */
    uint32_t spin_us;      /* how long to poll an empty queue before sleeping; 0 = never spin */
    int adaptive;          /* spin only while the measured rate is at least adaptive_pps */
    uint32_t adaptive_pps; /* packets per second, measured over half-second windows */
    /* Batches in flight (0 or 1: one thread reads and calls back in turn). With 2..FT_READER_MAX_PIPELINE a second
     * thread reads into the next batch while the callback runs on the previous one, so the kernel's work and the
     * callback's overlap; the batch passed to ft_reader_start is then an array of that many. Order is kept. */
    uint32_t pipeline;
    /* Optional, called on the reader thread with the callback's user pointer: before the first batch and after
     * the last (e.g. to give the thread a lasting Python thread state instead of one per batch). */
    void (*thread_start)(void *user);
    void (*thread_end)(void *user);
} ft_reader_config;

#define FT_READER_DEFAULT_SPIN_US 20u
#define FT_READER_DEFAULT_ADAPTIVE_PPS 100000u
#define FT_READER_MAX_SPIN_US 1000000u
#define FT_READER_MAX_PIPELINE 8u
static const ft_limit ft_limit_batch_size = FT_LIMIT("batch_size", 1, FT_MAX_BATCH, "");
static const ft_limit ft_limit_spin_us = FT_LIMIT("spin_us", 0, FT_READER_MAX_SPIN_US, "");
static const ft_limit ft_limit_pipeline = FT_LIMIT("pipeline", 0, FT_READER_MAX_PIPELINE, " batches in flight");
static const ft_limit ft_limit_adaptive_pps = FT_LIMIT("adaptive_pps", 0, UINT32_MAX, "");

/* The callback: return 0 to go on, FT_READER_DECLINED when it did not deliver the batch because it found a
 * stop requested or the device closed (ft_reader_stopping: a wrapper that has to wait for a lock, such as
 * Python's, checks once it holds it; the batch is counted in stats.undelivered), anything else to stop the
 * reader. It may replace b->data, b->offsets and b->lengths (with the same capacities) before it returns, e.g.
 * when the old arena is still in use. It always runs on the reader's own thread (the one
 * ft_reader_is_current_thread names). */
typedef int (*ft_batch_fn)(void *user, ft_batch *b);
#define FT_READER_DECLINED 2

/* A reader's counters, defined once (see FT_STATS_FIELDS in ft_device.h). */
#define FT_READER_STATS_FIELDS(X)                                                                          \
    X(packets) X(bytes) X(batches)                                                                         \
    X(full_batches) /* batches that hit batch_size or the arena's end */                                   \
    X(waits)        /* sleeps on the device */                                                             \
    X(spins)        /* empty polls while spinning */                                                       \
    X(spin_hits)    /* times spinning found a packet and saved a sleep */                                  \
    X(max_batch)    /* largest batch seen */                                                               \
    X(undelivered)  /* read, then dropped: the reader was stopped (the callback too) or its device closed   \
                     * while the batch was read ahead (pipeline) or waited for its callback (declined), or \
                     * a forward's sink closed or the forward was stopped mid-batch (core/ft_forward.h) */

enum { FT_READER_STATS_COUNT = 0 FT_READER_STATS_FIELDS(FT_COUNTER_ONE_) };
typedef struct ft_reader_stats { FT_COUNTER_MEMBERS(FT_READER_STATS_FIELDS, values); } ft_reader_stats;
static const char *const ft_reader_stats_names[FT_READER_STATS_COUNT] = {
    FT_READER_STATS_FIELDS(FT_COUNTER_NAME_)};

/* How a reader ended. */
enum { FT_READER_RUNNING = 0, FT_READER_STOPPED = 1, FT_READER_CALLBACK_STOPPED = 2, FT_READER_FAILED = 3 };

typedef struct ft_reader ft_reader;

/* Starts a reader on queue q of d. The batch's memory is the caller's and must outlive the reader. */
ft_reader *ft_reader_start(ft_device *d, int q, const ft_reader_config *cfg, ft_batch *b, ft_batch_fn fn,
                           void *user, ft_err *e);
/* Asks the reader to stop and wakes it if it sleeps; callable from any thread, the callback included. */
void ft_reader_request_stop(ft_reader *r);
/* True once a stop was requested or the device closed: no batch is to be delivered any more. */
int ft_reader_stopping(ft_reader *r);
/* True once the reader's thread has ended and was joined (ft_reader_free then never waits). */
int ft_reader_joined(ft_reader *r);
/* Waits up to timeout_ms (negative: forever) for the reader thread to end. FT_OK once it has ended (and been
 * joined), FT_ETIMEDOUT otherwise, FT_EINVAL when called from the reader's own thread. */
int ft_reader_join(ft_reader *r, int timeout_ms);
int ft_reader_state(ft_reader *r);
/* After the reader ended with FT_READER_FAILED: why. */
void ft_reader_error(ft_reader *r, ft_err *out);
void ft_reader_get_stats(ft_reader *r, ft_reader_stats *out);
int ft_reader_is_current_thread(ft_reader *r);
/* Frees the reader: requests a stop and joins first if needed, except on the reader's own thread, which is
 * detached instead and frees what is left when it ends. */
void ft_reader_free(ft_reader *r);
/* In the child of a fork(): the reader's thread exists only in the parent; mark it stopped and joined. */
void ft_reader_forget_after_fork(ft_reader *r);
/* True on a reader thread (of any device): code there must never wait for a device to close. */
int ft_reader_on_reader_thread(void);
/* The reader whose callback this thread runs, or NULL (for a callback that wants its reader's stop flag). */
ft_reader *ft_reader_current(void);
/* For a callback that delivered part of a batch and dropped the rest (its sink closed, the reader is stopping):
 * counts them in stats.undelivered. */
void ft_reader_count_undelivered(ft_reader *r, uint64_t n);

#endif
