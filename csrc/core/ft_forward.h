/* core/ft_forward.h - a reader whose sink is another device: every batch read from one device is sent to another
 * in C, as ft_device_send (ft_device_send_vnet for super-packets) sends it, with no callback and no lock of the
 * caller's language. A device-to-device path (a TUN device to a UDP endpoint and back, one TUN device to another)
 * then costs the kernel's work and nothing per batch besides.
 *
 * What the sink cannot take is counted there, never lost silently: a packet it refuses as invalid (tx_rejected),
 * one the OS refuses (tx_errors), what a full queue drops under FT_FULL_DROP or FT_FULL_RAISE, what is still
 * waiting for room when the wait's time is up or the reader is asked to stop (tx_dropped_full). A sink that closed
 * or failed ends the reader (its batch function returns non-zero; ft_forward_error says why). */
#ifndef FT_FORWARD_H
#define FT_FORWARD_H

#include "core/ft_reader.h"

typedef struct ft_forward ft_forward;

/* A sink on queue q of `to` for batches of up to max packets. policy is the sink's full-queue policy; under
 * FT_FULL_WAIT a batch waits up to timeout_ms (negative: as long as it takes) for room, and stops waiting when
 * the reader is asked to stop. super: the batches hold super-packets with their virtio-net headers, for a
 * device opened with offload. The caller keeps `to` open or closed but not freed while the forward exists. */
ft_forward *ft_forward_new(ft_device *to, int q, uint32_t max, int super, int policy, int timeout_ms, ft_err *e);
void ft_forward_free(ft_forward *f);

/* The reader's batch function (an ft_batch_fn; user is the ft_forward). Runs on the reader's thread. */
int ft_forward_batch(void *user, ft_batch *b);

/* Optional: record which packets of each batch went (for a capture hook that wants to see them). Off: nothing
 * is recorded. Read with ft_forward_went after ft_forward_batch, on the same thread. */
void ft_forward_record(ft_forward *f, int on);
/* The indices of the last batch's packets that went, in order; returns how many. */
uint32_t ft_forward_went(const ft_forward *f, const uint32_t **indices);

/* After ft_forward_batch returned non-zero: why the forward ended. */
void ft_forward_error(const ft_forward *f, ft_err *out);

#endif
