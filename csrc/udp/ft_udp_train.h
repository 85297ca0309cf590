/* udp/ft_udp_train.h - the datagrams of one received UDP unit, as pure functions on its lengths: a coalesced
 * read (Linux UDP_GRO; Windows URO) holds a train of datagrams of `seg` bytes each but the last, which may be
 * shorter; a plain read holds one datagram. What the buffer holds whole and within the size limit is delivered;
 * every other datagram is dropped and counted once, on its own: a datagram too large does not take the
 * shorter tail of its train with it, and a buffer cut short loses only what it cut. */
#ifndef FT_UDP_TRAIN_H
#define FT_UDP_TRAIN_H

#include <stdint.h>

typedef struct ft_udp_train {
    uint32_t full;   /* bytes the unit had (the kernel's length, also when the buffer was too small for it) */
    uint32_t copied; /* bytes of it in the buffer: min(full, buffer size) */
    uint32_t seg;    /* segment size of a coalesced unit; 0 (or >= full) for a single datagram */
    uint32_t max;    /* largest datagram delivered */
} ft_udp_train;

/* The segment size to split by: a single datagram is one segment of the whole unit. */
static inline uint32_t ft_udp_train_seg(const ft_udp_train *t)
{
    return t->seg == 0 || t->seg >= t->full ? t->full : t->seg;
}

/* True when the unit is a train of more than one datagram. */
static inline int ft_udp_train_coalesced(const ft_udp_train *t) { return ft_udp_train_seg(t) < t->full; }

/* The datagram starting at `off` (< full, a multiple of the segment size): its length, and in *deliver 1 when it
 * is whole in the buffer and at most max bytes, 0 when it is to be dropped and counted. */
static inline uint32_t ft_udp_train_piece(const ft_udp_train *t, uint32_t off, int *deliver)
{
    uint32_t seg = ft_udp_train_seg(t);
    uint32_t len = t->full - off < seg ? t->full - off : seg;
    *deliver = len <= t->max && (uint64_t)off + len <= t->copied;
    return len;
}

/* The datagrams from `off` to the end that the buffer lost (it was cut short there): how many to count at once
 * instead of visiting each. 0 when the datagram at off is in the buffer whole. */
static inline uint32_t ft_udp_train_cut(const ft_udp_train *t, uint32_t off)
{
    uint32_t seg = ft_udp_train_seg(t);
    if (seg == 0 || (uint64_t)off + (t->full - off < seg ? t->full - off : seg) <= t->copied)
        return 0;
    return (uint32_t)(((uint64_t)t->full - off + seg - 1) / seg);
}

/* A unit whose segmentation cannot be right, from a receive offload that is not to be trusted any more (Windows URO
 * on some machines): a segment size reported as 0 or larger than the family's largest payload, or a unit given as a
 * single datagram (no segment size) that is longer than any datagram can be, i.e. several coalesced without
 * their segment size. has_seg: the unit came with its segment size. */
static inline int ft_udp_train_malformed(const ft_udp_train *t, int has_seg, uint32_t max_payload)
{
    if (has_seg)
        return t->seg == 0 || t->seg > max_payload;
    return t->full > max_payload;
}

#endif
