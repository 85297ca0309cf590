/* udp/ft_udp.h - a UDP socket as a batch endpoint: one more backend behind ft_device.h, so the reader, batches,
 * arenas and statistics are the same code as for a TUN device. Linux: recvmmsg/sendmmsg, UDP_SEGMENT (GSO)
 * on send and UDP_GRO on receive, each probed at open and dropped back to one datagram per message when the
 * kernel lacks or refuses it. Windows: WSARecvMsg/WSASendMsg, USO (UDP_SEND_MSG_SIZE) on send and URO
 * (UDP_RECV_MAX_COALESCED_SIZE) on receive, each probed at open and given up per feature when refused or, for URO,
 * when a coalesced unit looks wrong; recvfrom/sendto where the message calls are refused. Elsewhere the same
 * names exist and answer FT_EUNSUPPORTED. In this header "GSO"/"GRO" name the platform's offload: Linux
 * UDP_SEGMENT/UDP_GRO, Windows USO/URO. */
#ifndef FT_UDP_H
#define FT_UDP_H

#include "core/ft_device.h"

/* The largest UDP payload: 65535 minus the IPv4 header (20) and the UDP header (8); IPv6 has no IP header in
 * its 16-bit payload length, so 65535 - 8. */
#define FT_UDP_MAX_PAYLOAD4 65507u
#define FT_UDP_MAX_PAYLOAD6 65527u
/* Send-side segmentation limits of the kernel: datagrams per UDP_SEGMENT message (UDP_MAX_SEGMENTS). */
#define FT_UDP_GSO_MAX_SEGMENTS 64u
/* Socket buffer sizes a caller may ask for (ft_udp_params.rcvbuf/sndbuf), and the size Windows endpoints get
 * when the caller asks for none: Windows' default (64 KiB) is far too small for a tunnel, and it grants this
 * much without any system setting. */
#define FT_UDP_BUF_MIN 1024u
#define FT_UDP_BUF_MAX (1u << 30)
#define FT_UDP_WIN_DEFAULT_BUF (8u << 20)
static const ft_limit ft_limit_max_datagram4 = FT_LIMIT("max_datagram", 1, FT_UDP_MAX_PAYLOAD4, " bytes");
static const ft_limit ft_limit_max_datagram6 = FT_LIMIT("max_datagram", 1, FT_UDP_MAX_PAYLOAD6, " bytes");
static const ft_limit ft_limit_rcvbuf = FT_LIMIT("rcvbuf", FT_UDP_BUF_MIN, FT_UDP_BUF_MAX, " bytes");
static const ft_limit ft_limit_sndbuf = FT_LIMIT("sndbuf", FT_UDP_BUF_MIN, FT_UDP_BUF_MAX, " bytes");
/* max_datagram's limit for an endpoint of IP version 4 or 6. */
static inline const ft_limit *ft_udp_max_datagram_limit(int version)
{
    return version == 4 ? &ft_limit_max_datagram4 : &ft_limit_max_datagram6;
}
static const ft_limit ft_limit_max_datagrams = FT_LIMIT("max_datagrams", 1, FT_MAX_BATCH, "");
static const ft_limit ft_limit_port = FT_LIMIT("destination port", 1, 65535, "");

typedef struct ft_udp_params {
    int fd;                /* a UDP socket (Windows: a SOCKET), AF_INET or AF_INET6, bound (and connected or not);
                            * after a successful open the device owns it and closes it. Linux leaves its
                            * blocking mode alone; Windows puts it in event-select (non-blocking) mode. */
    uint32_t max_datagram; /* largest datagram delivered (1..the family's maximum payload; 0: that maximum);
                            * larger ones are dropped and counted, never truncated */
    int gso;               /* 1: segment runs of equal datagrams with UDP_SEGMENT where the kernel has it */
    int gro;               /* 1: let the kernel coalesce received datagrams (UDP_GRO) where it has it */
    uint32_t rcvbuf;       /* SO_RCVBUF/SO_SNDBUF to ask for (FT_UDP_BUF_MIN..FT_UDP_BUF_MAX; Linux tries the */
    uint32_t sndbuf;       /* FORCE variants first); 0: Linux leaves the socket's, Windows asks FT_UDP_WIN_DEFAULT_BUF */
    int per_datagram;      /* 0 or 1. 1: one datagram per system call, without offload: the path Windows falls back
                            * to (recvfrom/sendto), chosen at open instead of found, to measure what the message
                            * calls and USO/URO gain (fasttun bench udp). Linux has no such path: FT_EUNSUPPORTED. */
} ft_udp_params;

/* The endpoint's own counters, beyond the device's (FT_STATS_FIELDS), defined once the same way. */
#define FT_UDP_COUNTERS(X)                                                                                 \
    X(tx_calls)          /* sendmmsg calls */                                                              \
    X(tx_messages)       /* messages they carried (a segmented message carries several datagrams) */       \
    X(gso_messages)      /* messages carrying more than one datagram */                                    \
    X(gso_fallbacks)     /* segmented messages the kernel refused, resent one datagram per message */      \
    X(rx_calls)          /* recvmmsg calls that returned datagrams */                                      \
    X(rx_messages)       /* messages they returned (a coalesced message holds several datagrams) */        \
    X(gro_messages)      /* messages holding more than one datagram */                                     \
    X(rx_dropped_trunc)  /* datagrams larger than max_datagram, dropped (also in rx_dropped_oversize) */    \
    X(rx_icmp_errors)    /* errors the socket reported from ICMP (ECONNREFUSED...), counted and passed */  \
    X(tx_unreachable)    /* datagrams dropped because the destination could not be reached */             \
    X(message_fallbacks) /* refusals of WSARecvMsg/WSASendMsg that made the endpoint fall back */          \
    X(gro_malformed)     /* coalesced units whose segmentation looked wrong (Windows URO): dropped, and the \
                          * first one switched the receive offload off for the socket */

enum { FT_UDP_COUNTER_COUNT = 0 FT_UDP_COUNTERS(FT_COUNTER_ONE_) };
static const char *const ft_udp_counter_names[FT_UDP_COUNTER_COUNT] = {FT_UDP_COUNTERS(FT_COUNTER_NAME_)};

/* What the endpoint uses and what its offload paths did. */
typedef struct ft_udp_info {
    int family;              /* 4 or 6 */
    int connected;
    int gso_supported;       /* the kernel offered UDP_SEGMENT at open */
    int gro_supported;       /* the kernel accepted UDP_GRO at open (or it was not asked for: see gro) */
    int gso;                 /* in use now (asked for, supported, not given up after a refusal) */
    int gro;
    uint32_t max_datagram;
    uint32_t gso_max_segment;/* segments above this size go out one datagram per message (learned from EINVAL) */
    int message_calls;           /* Windows: 1 while WSARecvMsg/WSASendMsg are used, 0 after a refusal made the
                                  * endpoint fall back to recvfrom/sendto; Linux: 1 (recvmmsg/sendmmsg) */
    uint32_t rcvbuf, sndbuf;     /* the socket buffers granted (getsockopt after open) */
    FT_COUNTER_MEMBERS(FT_UDP_COUNTERS, counters); /* counters[i] is named ft_udp_counter_names[i] */
} ft_udp_info;

#if defined(__linux__) || defined(_WIN32)
int ft_udp_open(const ft_udp_params *p, ft_device **out, ft_err *e);
/* The socket's fd, -1 if d is not an open UDP endpoint (closing or closed). */
int ft_udp_fd(ft_device *d);
/* FT_OK, or FT_EINVAL if d is not a UDP endpoint. The counters stay readable after close. */
int ft_udp_get_info(ft_device *d, ft_udp_info *out);
/* Sends n datagrams. to: NULL (the connected peer), one destination for all (to_count 1) or one per datagram
 * (to_count n). Every datagram and destination is checked first (nothing is sent if one is bad: FT_EPACKET or
 * FT_EINVAL with e->index). The full-queue policy and the return convention are those of ft_device_send. */
int ft_udp_send(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                int policy, int timeout_ms, ft_err *e);
#else
#include <errno.h>
#define FT_UDP_LINUX_ONLY_ "UDP batch endpoints are implemented on Linux and Windows only"
static inline int ft_udp_open(const ft_udp_params *p, ft_device **out, ft_err *e)
{
    (void)p;
    (void)out;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, FT_UDP_LINUX_ONLY_);
}
static inline int ft_udp_fd(ft_device *d)
{
    (void)d;
    return -1;
}
static inline int ft_udp_get_info(ft_device *d, ft_udp_info *out)
{
    (void)d;
    (void)out;
    return FT_EINVAL;
}
static inline int ft_udp_send(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to,
                              uint32_t to_count, int policy, int timeout_ms, ft_err *e)
{
    (void)d, (void)pkts, (void)n, (void)to, (void)to_count, (void)policy, (void)timeout_ms;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, FT_UDP_LINUX_ONLY_);
}
#endif

#endif
