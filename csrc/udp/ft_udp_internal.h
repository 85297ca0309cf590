/* udp/ft_udp_internal.h - what the UDP endpoint's shared part (ft_udp.c) and its platform files (ft_udp_linux.c,
 * ft_udp_win.c) share: the endpoint's state and the calls each platform file provides. Not a public header. */
#ifndef FT_UDP_INTERNAL_H
#define FT_UDP_INTERNAL_H

#include "udp/ft_udp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
typedef SOCKET ft_sock;
typedef int socklen_t_;
#define FT_SOCK_INVALID INVALID_SOCKET
#else
#include <netinet/in.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
typedef int ft_sock;
typedef socklen_t socklen_t_;
#define FT_SOCK_INVALID (-1)
#endif

#define ICMP_RETRIES 4 /* pending ICMP errors consumed per call before we give up on the call */

typedef union udp_name {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} udp_name;

typedef struct udp_info_atomic { FT_UDP_COUNTERS(FT_COUNTER_ATOMIC_) } udp_info_atomic;

#ifdef _WIN32
#include <mswsock.h>
#define WIN_TX_MAX_BUFS FT_UDP_GSO_MAX_SEGMENTS

typedef struct udp_os {
    WSAEVENT ev;                 /* FD_READ | FD_WRITE of the socket (event-select mode) */
    LPFN_WSARECVMSG recvmsg;     /* WSARecvMsg, if the provider offers it */
    ft_atomic_int recvmsg_on;    /* 0: recvfrom (WSARecvMsg not offered, or refused) */
    ft_atomic_int sendmsg_on;    /* 0 after WSASendMsg was refused: sendto */
    /* URO: a coalesced unit is received here, then split into batches as room allows */
    uint8_t *unit;
    uint32_t unit_size;
    uint32_t got, off, seg;      /* the staged unit's bytes, those delivered, its segment size (0: single) */
    udp_name from;
    WSABUF tx_bufs[WIN_TX_MAX_BUFS];
} udp_os;
#else
#define RX_CTRL 64u              /* room for the UDP_GRO control message (and a stray one) */
#define TX_MAX_MSGS 64u
#define TX_MAX_IOV 1024u         /* UIO_MAXIOV: iovecs of one sendmmsg call, over all its messages */
#define TX_CTRL CMSG_SPACE(sizeof(uint16_t))

typedef struct udp_os {
    /* receive: messages staged by the last recvmmsg, handed out over as many receives as batches need */
    uint8_t *stage;
    uint32_t slot, nslots;
    struct mmsghdr *rx_msgs;
    struct iovec *rx_iov;
    udp_name *rx_names;
    uint8_t *rx_ctrl;            /* nslots * RX_CTRL */
    uint32_t got, cur, off;      /* messages staged, the one being delivered, bytes of it delivered */

    /* send: the message table one sendmmsg call is built in */
    struct mmsghdr tx_msgs[TX_MAX_MSGS];
    struct iovec tx_iov[TX_MAX_IOV];
    udp_name tx_names[TX_MAX_MSGS];
    uint32_t tx_segs[TX_MAX_MSGS];
    uint64_t tx_bytes[TX_MAX_MSGS];
    uint64_t tx_ctrl[TX_MAX_MSGS][(TX_CTRL + 7) / 8]; /* control messages, aligned as cmsghdr needs */
} udp_os;
#endif

typedef struct udp_dev {
    ft_sock fd;
    int family;                  /* AF_INET or AF_INET6 */
    int connected;
    uint32_t max_payload;        /* the family's largest datagram */
    uint32_t max_datagram;       /* the largest we deliver */
    int gso_supported, gro_supported;
    ft_atomic_int gso;           /* cleared for good after EIO */
    ft_atomic_int gso_max_segment;
    ft_atomic_int gro;           /* Windows: cleared for good after a malformed coalesced unit */
    uint32_t rcvbuf, sndbuf;     /* granted at open */
    udp_info_atomic info;
    ft_mutex *rx_lock;
    ft_mutex *tx_lock;
    udp_os os;                   /* the platform file's */
} udp_dev;

static inline udp_dev *U(ft_device *d) { return d->impl; }

/* ---- shared (ft_udp.c) ---- */
void ft_udp_endpoint_from_name(const udp_name *n, ft_endpoint *ep);
socklen_t_ ft_udp_name_from_endpoint(int family, const ft_endpoint *ep, udp_name *n);
/* Appends one datagram (copied unless it is already in place) and its source; 0 when the batch has no room. */
int ft_udp_append(ft_batch *b, const uint8_t *p, uint32_t len, const udp_name *from);

/* ---- each platform file's ---- */
/* Before anything else: the OS handles marked as not yet there (release tells them apart). */
void ft_udp_os_init(udp_dev *u);
/* The socket's family if it is a UDP socket, else 0. */
int ft_udp_os_family(ft_sock fd);
/* Offload probes, events and buffers (u->rcvbuf/sndbuf: what was granted); FT_OK or a failure. */
int ft_udp_os_setup(udp_dev *u, ft_sock fd, const ft_udp_params *p, ft_err *e);
/* Closes the socket (if u owns it) and frees what setup made. */
void ft_udp_os_release(udp_dev *u);
/* The backend's recv: up to the batch's room of datagrams, the device's convention. */
int ft_udp_os_recv(ft_device *d, ft_batch *b, ft_err *e);
/* One system call's worth (or a bounded loop's) of the datagrams: how many were consumed (sent, or dropped and
 * counted as unreachable) with what was sent in *sent and *bytes; FT_EFULL if the socket had no room for the
 * first; or a failure. Destinations: NULL (connected), one for all, or one per datagram from `offset`. */
int ft_udp_os_send_some(ft_device *d, const ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count,
                        uint32_t offset, uint32_t *sent, uint64_t *bytes, ft_err *e);
/* The handle a reader or a sender waits on, and whether it is polled for writing. */
ft_handle ft_udp_os_wait_handle(udp_dev *u, int dir, int *poll_out);

#endif
