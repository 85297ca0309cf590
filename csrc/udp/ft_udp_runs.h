/* udp/ft_udp_runs.h - which consecutive datagrams of a send go out as one segmented message (Linux UDP_SEGMENT;
 * Windows USO, UDP_SEND_MSG_SIZE), as a pure function on their lengths and destinations: a run is datagrams of
 * the first one's size to one destination; a shorter one may only end it (where the platform allows a short last
 * segment at all); at most max_segments of them and max_total bytes; a first datagram larger than the segment
 * size the socket was seen to accept goes alone. The send paths build their messages from the runs. */
#ifndef FT_UDP_RUNS_H
#define FT_UDP_RUNS_H

#include "core/ft_device.h"

#include <stdint.h>
#include <string.h>

typedef struct ft_udp_run_limits {
    uint32_t max_segments; /* datagrams per message (1: no segmentation) */
    uint32_t max_segment;  /* largest segment size to segment (learned from refusals) */
    uint64_t max_total;    /* bytes per message: the family's largest payload */
    int short_tail;        /* 1: the last datagram of a run may be shorter than the others */
} ft_udp_run_limits;

static inline int ft_udp_run_same_dst(const ft_endpoint *a, const ft_endpoint *b)
{
    return a->family == b->family && a->port == b->port && a->scope_id == b->scope_id &&
           memcmp(a->addr, b->addr, a->family == 4 ? 4 : 16) == 0;
}

/* The run that starts at pkts[0] (n >= 1): how many datagrams it takes (>= 1) and their bytes in *total.
 * dsts: each datagram's destination (dsts[i] for pkts[i]), or NULL when they all go to one. */
static inline uint32_t ft_udp_run(const ft_pkt *pkts, uint32_t n, const ft_endpoint *dsts,
                                  const ft_udp_run_limits *lim, uint64_t *total)
{
    uint64_t seg = pkts[0].len;
    uint32_t k = 1;
    *total = seg;
    if (seg == 0 || seg > lim->max_segment)
        return 1;
    while (k < n && k < lim->max_segments) {
        uint64_t len = pkts[k].len;
        if (len == 0 || len > seg || (len < seg && !lim->short_tail) || *total + len > lim->max_total)
            break;
        if (dsts && !ft_udp_run_same_dst(&dsts[0], &dsts[k]))
            break;
        *total += len;
        k++;
        if (len < seg) /* a shorter datagram can only end a run */
            break;
    }
    return k;
}

#endif
