/* core/ft_forward.c - a reader whose sink is another device. */
#include "core/ft_forward.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* How long one wait for room lasts before the forward looks at its reader's stop flag again. */
#define WAIT_SLICE_MS 20

struct ft_forward {
    ft_device *to;
    int q;
    int super;
    int policy;       /* FT_FULL_DROP or FT_FULL_WAIT (nobody could catch FT_FULL_RAISE's error: it drops) */
    int timeout_ms;
    uint32_t max;
    ft_pkt *pkts;     /* [max] */
    uint32_t *went;   /* [max] when recording */
    uint32_t nwent;
    int record;
    ft_err error;
};

ft_forward *ft_forward_new(ft_device *to, int q, uint32_t max, int super, int policy, int timeout_ms, ft_err *e)
{
    if (ft_device_check_queue(to, q, e) != FT_OK || ft_limit_check(&ft_limit_batch_size, max, e) != FT_OK)
        return NULL;
    if (policy != FT_FULL_DROP && policy != FT_FULL_WAIT && policy != FT_FULL_RAISE) {
        ft_fail(e, FT_EINVAL, EINVAL, "unknown full-queue policy %d", policy);
        return NULL;
    }
    if (super && !to->ops->send_vnet) {
        ft_fail(e, FT_EINVAL, EINVAL,
                "%s cannot take super-packets (offload_mode='super'): only a TUN device opened with offload can; "
                "open the source with offload_mode='segments'",
                to->name);
        return NULL;
    }
    ft_forward *f = calloc(1, sizeof(*f));
    if (f) {
        f->pkts = calloc(max, sizeof(*f->pkts));
        f->went = calloc(max, sizeof(*f->went));
    }
    if (!f || !f->pkts || !f->went) {
        ft_forward_free(f);
        ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for a forward of %u packets", max);
        return NULL;
    }
    f->to = to;
    f->q = q;
    f->max = max;
    f->super = super;
    f->policy = policy == FT_FULL_WAIT ? FT_FULL_WAIT : FT_FULL_DROP;
    f->timeout_ms = timeout_ms;
    return f;
}

void ft_forward_free(ft_forward *f)
{
    if (!f)
        return;
    free(f->pkts);
    free(f->went);
    free(f);
}

void ft_forward_record(ft_forward *f, int on) { f->record = on; }

uint32_t ft_forward_went(const ft_forward *f, const uint32_t **indices)
{
    *indices = f->went;
    return f->nwent;
}

void ft_forward_error(const ft_forward *f, ft_err *out) { *out = f->error; }

/* Packets [from, to) went, but for `skip` (an index, or -1). */
static void went(ft_forward *f, uint32_t from, uint32_t to, long skip)
{
    if (!f->record)
        return;
    for (uint32_t i = from; i < to; i++)
        if ((long)i != skip)
            f->went[f->nwent++] = i;
}

static int send_range(ft_forward *f, const ft_batch *b, uint32_t from, uint32_t to, int timeout_ms, ft_err *e)
{
    if (f->super)
        return ft_device_send_vnet(f->to, f->q, f->pkts + from, b->vnet + (size_t)from * FT_VNET_HDR_SIZE, to - from,
                                   f->policy, timeout_ms, e);
    return ft_device_send(f->to, f->q, f->pkts + from, to - from, f->policy, timeout_ms, e);
}

int ft_forward_batch(void *user, ft_batch *b)
{
    ft_forward *f = user;
    ft_reader *r = ft_reader_current();
    uint32_t n = b->count;
    f->nwent = 0;
    if (n > f->max) { /* the reader's batch_size is the forward's max: only a misuse gets here, and loses nothing */
        ft_fail(&f->error, FT_EINVAL, EINVAL, "a batch of %u packets for a forward made for %u", n, f->max);
        if (r)
            ft_reader_count_undelivered(r, n);
        return 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        f->pkts[i].data = b->data + b->offsets[i];
        f->pkts[i].len = b->lengths[i];
    }
    uint64_t deadline = f->timeout_ms > 0 ? ft_now_ns() + (uint64_t)f->timeout_ms * 1000000u : 0;
    /* [done, end) goes in one call; a packet the sink refuses as invalid (counted there) ends the range before
     * it, and is skipped once the range went. */
    uint32_t done = 0, end = n;
    while (done < n) {
        if (done == end) {
            done++;
            end = n;
            continue;
        }
        int slice = 0;
        if (f->policy == FT_FULL_WAIT) {
            slice = WAIT_SLICE_MS;
            if (deadline) {
                uint64_t now = ft_now_ns();
                uint64_t left_ms = now >= deadline ? 0 : (deadline - now + 999999u) / 1000000u;
                if (left_ms < (uint64_t)slice)
                    slice = (int)left_ms;
            } else if (f->timeout_ms == 0) {
                slice = 0;
            }
        }
        ft_err e;
        int rc = send_range(f, b, done, end, slice, &e);
        if (rc >= 0) { /* what did not fit under FT_FULL_DROP was dropped and counted by the sink */
            went(f, done, done + (uint32_t)rc, -1);
            done = end;
            continue;
        }
        if (rc == FT_EPACKET && e.index >= 0 && (uint32_t)e.index < end - done) {
            end = done + (uint32_t)e.index;
            continue;
        }
        if (rc == FT_EREFUSED) { /* the OS refused one or more on its own: counted there, the rest went */
            went(f, done, end, e.index >= 0 ? (long)done + e.index : -1);
            done = end;
            continue;
        }
        if (rc == FT_ETIMEDOUT) { /* a slice of the wait for room ended: resume after what went */
            uint32_t resume = e.index >= 0 ? done + (uint32_t)e.index : done + e.sent;
            went(f, done, resume, -1);
            done = resume;
            int stopping = r && ft_reader_stopping(r);
            if (stopping || (f->timeout_ms >= 0 && (deadline == 0 || ft_now_ns() >= deadline))) {
                /* the wait is over: what is left of the range is dropped; the rest of the batch too if the
                 * reader is stopping (undelivered), else it is tried on its own (it may fit now) */
                ft_device_count_tx_drops(f->to, end - done);
                done = end;
                if (stopping && end < n) {
                    ft_reader_count_undelivered(r, n - end - 1);
                    break;
                }
            }
            continue;
        }
        /* The sink closed or failed: the forward ends. What went before the failure went; what it did not send
         * of this batch is undelivered (a packet the sink refused at `end` is counted there already). */
        uint32_t sent = e.sent < end - done ? e.sent : end - done;
        went(f, done, done + sent, -1);
        done += sent;
        f->error = e;
        if (r)
            ft_reader_count_undelivered(r, n - done - (end < n ? 1u : 0u));
        return 1;
    }
    return 0;
}
