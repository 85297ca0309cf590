/* offload/ft_offload.h - offload for a tun fd opened with IFF_VNET_HDR: the virtio-net header that precedes every
 * packet, splitting the TCP/UDP super-packets the kernel hands us into ordinary IP packets (software GSO),
 * and coalescing ordinary packets of one flow into super-packets the kernel segments for us (software GRO).
 * Pure functions: no I/O, no allocation, no global state; every input is treated as hostile. */
#ifndef FT_OFFLOAD_H
#define FT_OFFLOAD_H

#include "core/ft_device.h"

/* ---- the virtio-net header ------------------------------------------------------------------------ */
/* Its size, FT_VNET_HDR_SIZE, is in core/ft_device.h: batches carry a table of headers. */

#define FT_VNET_F_NEEDS_CSUM 0x01u   /* finish the checksum at csum_start + csum_offset */
#define FT_VNET_F_DATA_VALID 0x02u   /* the checksum was already verified (receive side hint) */

#define FT_VNET_GSO_NONE 0u
#define FT_VNET_GSO_TCPV4 1u
#define FT_VNET_GSO_UDP 3u           /* UFO (IP fragmentation): never enabled by us, refused */
#define FT_VNET_GSO_TCPV6 4u
#define FT_VNET_GSO_UDP_L4 5u        /* USO: UDP segmentation, Linux 6.2+ on tun */
#define FT_VNET_GSO_ECN 0x80u        /* TCP only: the flow uses ECN (CWR goes on the first segment) */

/* The 10-byte header in host byte order, as it travels on the fd (no padding on the wire). */
typedef struct ft_vnet_hdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;     /* a hint only: never trusted, header lengths are recomputed from the packet */
    uint16_t gso_size;    /* payload bytes per segment (TCP: the MSS; UDP_L4: datagram payload) */
    uint16_t csum_start;  /* offset of the transport header from the start of the IP packet */
    uint16_t csum_offset; /* offset of the checksum field from csum_start (TCP 16, UDP 6) */
} ft_vnet_hdr;

void ft_vnet_hdr_decode(const uint8_t *p, ft_vnet_hdr *h);  /* p: FT_VNET_HDR_SIZE readable bytes */
void ft_vnet_hdr_encode(const ft_vnet_hdr *h, uint8_t *p);  /* p: FT_VNET_HDR_SIZE writable bytes */

/* FT_OK if the super-packet p (len bytes) and its header hdr (FT_VNET_HDR_SIZE bytes) can be handed to the
 * kernel: an IPv4 or IPv6 start, a GSO type we enable (none, TCPv4, TCPv6, UDP_L4) with a segment size,
 * a header length within the packet, checksum offsets within it, and at most FT_MAX_PACKET bytes without
 * segmentation. Else FT_EPACKET saying what is wrong and what is allowed. */
int ft_vnet_check(const uint8_t *p, size_t len, const uint8_t *hdr, ft_err *e);

/* ---- Internet checksum ---------------------------------------------------------------------------- */
/* Ones'-complement sum of data read as big-endian 16-bit words (an odd last byte is padded with zero),
 * plus `initial`, folded to 16 bits and not complemented. The checksum to store is ~result. */
uint16_t ft_csum_sum(const void *data, size_t len, uint16_t initial);

/* Folded sum of the TCP/UDP pseudo-header of the IP packet at ip (IPv4: 20 readable bytes, IPv6: 40;
 * the version nibble decides) for transport protocol proto and a transport length of l4_len bytes. */
uint16_t ft_csum_pseudo(const uint8_t *ip, uint8_t proto, uint32_t l4_len);

/* Finishes a partial checksum the way the kernel does for NEEDS_CSUM: sums pkt[csum_start..len) (the field
 * already holding the pseudo-header sum) and stores the complement (0 stored as 0xffff) at
 * csum_start + csum_offset. FT_OK, or FT_EPACKET if the field does not lie within the len bytes. */
int ft_offload_complete_csum(uint8_t *pkt, size_t len, uint32_t csum_start, uint32_t csum_offset, ft_err *e);

/* ---- remote checksum: a partial checksum carried to the far end of a tunnel ------------------------- */
/* Between two fasttun devices (a tunnel, a forwarder) a TCP or UDP checksum nobody has computed yet need not be
 * computed in user space at all: the sending end leaves it partial, as the kernel handed it over (the field holds
 * the pseudo-header sum, NEEDS_CSUM), and puts these 4 bytes in front of the packet; the receiving end writes it
 * to its device with NEEDS_CSUM, and the kernel completes the checksum or, for local delivery, skips it. The
 * same idea as remote checksum offload in VXLAN and GUE.
 *   byte 0     FT_RCSUM_MAGIC: a version nibble of 1, which no IP packet has, so a receiver tells the two apart
 *   byte 1     csum_offset: 16 (TCP) or 6 (UDP)
 *   bytes 2-3  csum_start, big-endian: where the transport header starts (20..60 for IPv4, 40 for IPv6)
 * Only for IPv4 packets that are not fragments and IPv6 packets with TCP or UDP right after the fixed header. */
#define FT_RCSUM_HDR_SIZE 4
#define FT_RCSUM_MAGIC 0x1fu

/* Where the transport checksum of the packet at ip starts and lies, if the packet may travel with a partial
 * checksum; 0 if it may not (not TCP/UDP, a fragment, extension headers, too short). */
int ft_rcsum_layout(const uint8_t *ip, size_t len, uint16_t *csum_start, uint16_t *csum_offset);

/* Checks the 4 bytes at p (a packet of len bytes that starts with FT_RCSUM_MAGIC) against the IP packet behind
 * them: FT_OK with its start and offset, or FT_EPACKET saying what is wrong. */
int ft_rcsum_decode(const uint8_t *p, size_t len, uint16_t *csum_start, uint16_t *csum_offset, ft_err *e);

/* A packet a device is asked to send, when the device may (accept != 0) or may not take packets behind an
 * FT_RCSUM header: an IP packet within mtu as ft_packet_check says, or, if accepted, a header that
 * ft_rcsum_decode accepts followed by such a packet. FT_OK or FT_EPACKET saying what is wrong; a header where
 * none is accepted is refused with a message naming remote_csum=True. */
int ft_rcsum_check(const uint8_t *p, size_t len, uint32_t mtu, int accept, ft_err *e);

/* The check op (ft_backend_ops.check) of a device that may take packets behind an FT_RCSUM header: ft_rcsum_check
 * within its MTU, accepting the header when it was opened with remote_csum (d->remote_csum). */
int ft_rcsum_device_check(ft_device *d, const uint8_t *p, size_t len, ft_err *e);

/* A packet behind a checked FT_RCSUM header, copied to out (at least len - FT_RCSUM_HDR_SIZE bytes) with its
 * checksum completed; returns its length. For a device that finishes checksums itself (no offload, Wintun). */
size_t ft_rcsum_complete_into(const uint8_t *p, size_t len, uint8_t *out);

/* out[i] = in[i] without its FT_RCSUM header if it has one (already checked), partial[i] = whether it had. */
void ft_rcsum_strip(const ft_pkt *in, uint32_t n, ft_pkt *out, uint8_t *partial);

/* ---- split: what a read from the fd gave us -> ordinary IP packets --------------------------------- */
#define FT_SPLIT_RCSUM 0x1u   /* leave TCP/UDP checksums partial behind an FT_RCSUM header (see above) */

/* pkt/len: a virtio-net header followed by one IP packet, exactly as read from the fd. Appends the
 * resulting ordinary IP packets to out the way a backend recv does (from out->used/out->count on, within
 * out->cap bytes and out->max packets; offsets, lengths, count and used updated):
 *   - gso_type NONE: the packet itself (it must pass ft_packet_check), its checksum finished if NEEDS_CSUM;
 *   - TCPV4/TCPV6: segments of gso_size payload bytes with IPv4 total length, id (+1 per segment) and header
 *     checksum or IPv6 payload length, sequence numbers advanced, FIN/PSH only on the last segment, CWR only
 *     on the first, and full TCP checksums;
 *   - UDP_L4: datagrams of gso_size payload bytes with UDP length and full checksums (IPv4 id +1 each).
 * Super-packets must be IPv4 without options (and not a fragment) or IPv6 without extension headers, with
 * length fields that agree with len. hdr_len is ignored beyond a bounds check; csum_start/csum_offset must
 * lie within the packet; gso_size must be non-zero.
 * Returns the number of packets appended, or:
 *   FT_EAGAIN   out is not empty and lacks room for all of them: nothing was appended; deliver out and call
 *               again with an empty batch;
 *   FT_EPACKET  malformed or hostile input, or more segments than even an empty `out` can hold (e->msg says
 *               which): nothing was appended; drop the packet;
 *   FT_EINVAL   a NULL argument or an inconsistent batch. */
int ft_offload_split(const uint8_t *pkt, size_t len, ft_batch *out, ft_err *e);

/* ft_offload_split with flags: FT_SPLIT_RCSUM leaves the checksums the kernel left partial as they are and puts
 * an FT_RCSUM header before each such packet (whose length then includes the header); a checksum that cannot
 * travel partial is completed as without the flag. */
int ft_offload_split_ex(const uint8_t *pkt, size_t len, uint32_t flags, ft_batch *out, ft_err *e);

/* ---- coalesce: ordinary IP packets -> what to write to the fd -------------------------------------- */
#define FT_COALESCE_TCP 0x1u          /* merge TCP segments (the device has TUN_F_TSO4/TSO6) */
#define FT_COALESCE_UDP 0x2u          /* merge UDP datagrams (the device has TUN_F_USO4/USO6) */
#define FT_COALESCE_TRUST_CSUM 0x4u   /* skip verifying the checksums of packets before merging them */

#define FT_COALESCE_WINDOW 128u       /* packets looked at together; flows never merge across windows */
#define FT_COALESCE_UDP_MAX_SEGS 64u  /* datagrams per UDP super-packet (the kernel's own GRO limit) */

/* Bytes of out_buf that ft_offload_coalesce always has enough with: the packets plus one header each.
 * SIZE_MAX if that overflows. */
size_t ft_offload_coalesce_bound(const ft_pkt *in, uint32_t n);

/* Turns the n packets in[] into units to write to the fd, each a virtio-net header followed by an IP
 * packet, laid out back to back in out_buf; out[i] points at unit i (len includes the header) and, if
 * out_segs is not NULL, out_segs[i] says how many of the input packets it carries.
 * Consecutive segments of one TCP flow (same addresses, ports, ack, window, options, IP TOS/TTL/flags,
 * consecutive IPv4 ids, contiguous sequence numbers, equal payload sizes but a shorter last one, PSH/FIN
 * only on the last, no SYN/RST/URG/CWR) become one TCPV4/TCPV6 super-packet of at most 65535 bytes; same-size
 * datagrams of one UDP flow (a shorter last one allowed) become one UDP_L4 super-packet. Super-packets carry
 * NEEDS_CSUM with the pseudo-header sum in the transport checksum field. Unless FT_COALESCE_TRUST_CSUM is
 * given, only packets whose IPv4 header and transport checksums are correct are merged, so splitting a
 * unit gives back exactly the packets that went in. Everything else goes out unchanged behind an all-zero
 * header. Packets of one flow keep their order; different flows may be reordered relative to each other.
 * Needs out_cap >= ft_offload_coalesce_bound(in, n) and out_max >= n. Returns the number of units, or
 * FT_EINVAL (bad arguments, buffers too small; nothing written). Never fails because of packet contents. */
int ft_offload_coalesce(const ft_pkt *in, uint32_t n, uint32_t allow, uint8_t *out_buf, size_t out_cap,
                        ft_pkt *out, uint32_t *out_segs, uint32_t out_max, ft_err *e);

/* ft_offload_coalesce where partial[i] != 0 says that packet i's transport checksum is partial (it came behind an
 * FT_RCSUM header, already checked with ft_rcsum_decode and removed): such a packet's transport checksum is not
 * verified (only its IPv4 header checksum is), and when it goes out alone its header carries NEEDS_CSUM so that
 * the kernel completes it. partial may be NULL (none is). */
int ft_offload_coalesce_ex(const ft_pkt *in, const uint8_t *partial, uint32_t n, uint32_t allow, uint8_t *out_buf,
                           size_t out_cap, ft_pkt *out, uint32_t *out_segs, uint32_t out_max, ft_err *e);

/* ---- coalesce without copying: what to write to the fd, as pieces for writev --------------------------- */
/* Header bytes of one unit at most: the virtio-net header and merged IP (20 or 40) and TCP (up to 60) headers. */
#define FT_COALESCE_HDR_MAX (FT_VNET_HDR_SIZE + 40u + 60u)

typedef struct ft_coalesce_unit {
    uint32_t iov_first; /* its pieces: iov[iov_first .. iov_first + iov_count) */
    uint32_t iov_count;
    uint32_t segs;      /* input packets it carries */
    size_t len;         /* bytes in all, header included */
} ft_coalesce_unit;

/* The units of ft_offload_coalesce_ex, not copied into one buffer but described as pieces: unit i is
 * units[i].iov_count pieces from iov[units[i].iov_first]: first its header bytes, built in hdr_buf (a virtio-net
 * header, and for a merged unit the merged IP and transport headers), then either the input packet itself or each
 * member's payload, pointing into the input packets (which must stay as they are until the units are written).
 * Needs hdr_cap >= n * FT_COALESCE_HDR_MAX, iov_cap >= 2 * n and units_max >= n. Returns the number of units or
 * FT_EINVAL (bad arguments; nothing described). */
int ft_offload_coalesce_iov(const ft_pkt *in, const uint8_t *partial, uint32_t n, uint32_t allow, uint8_t *hdr_buf,
                            size_t hdr_cap, ft_pkt *iov, uint32_t iov_cap, ft_coalesce_unit *units,
                            uint32_t units_max, ft_err *e);

#endif
