/* offload/ft_offload.c - virtio-net header, super-packet splitting and flow coalescing (see ft_offload.h).
 * Everything read from a packet is bounds-checked against its length before it is used: the kernel's
 * headers are hints, a caller's packets are arbitrary bytes. */
#include "offload/ft_offload.h"

#include <errno.h>
#include <string.h>

#define IPPROTO_TCP_ 6u
#define IPPROTO_UDP_ 17u
#define IPPROTO_ICMPV6_ 58u
#define IPPROTO_NONE6_ 59u

#define TCP_FIN 0x01u
#define TCP_SYN 0x02u
#define TCP_RST 0x04u
#define TCP_PSH 0x08u
#define TCP_ACK 0x10u
#define TCP_URG 0x20u
#define TCP_ECE 0x40u
#define TCP_CWR 0x80u

#define IP_MAX 65535u

/* ---- byte order ----------------------------------------------------------------------------------- */

static uint16_t get16(const uint8_t *p) { return (uint16_t)((unsigned)p[0] << 8 | p[1]); }

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void ft_vnet_hdr_decode(const uint8_t *p, ft_vnet_hdr *h)
{
    h->flags = p[0];
    h->gso_type = p[1];
    memcpy(&h->hdr_len, p + 2, 2);
    memcpy(&h->gso_size, p + 4, 2);
    memcpy(&h->csum_start, p + 6, 2);
    memcpy(&h->csum_offset, p + 8, 2);
}

void ft_vnet_hdr_encode(const ft_vnet_hdr *h, uint8_t *p)
{
    p[0] = h->flags;
    p[1] = h->gso_type;
    memcpy(p + 2, &h->hdr_len, 2);
    memcpy(p + 4, &h->gso_size, 2);
    memcpy(p + 6, &h->csum_start, 2);
    memcpy(p + 8, &h->csum_offset, 2);
}

int ft_vnet_check(const uint8_t *p, size_t len, const uint8_t *hdr, ft_err *e)
{
    ft_vnet_hdr h;
    ft_vnet_hdr_decode(hdr, &h);
    unsigned gso = h.gso_type & (unsigned)~FT_VNET_GSO_ECN;
    if (len == 0 || len > FT_MAX_SUPER_PACKET)
        return ft_fail(e, FT_EPACKET, EMSGSIZE, "super-packet of %zu bytes; 1..%u are allowed", len,
                       FT_MAX_SUPER_PACKET);
    unsigned version = p[0] >> 4;
    if ((version != 4 || len < 20) && (version != 6 || len < 40))
        return ft_fail(e, FT_EPACKET, EINVAL, "super-packet does not start with an IPv4 or IPv6 header");
    if (gso != FT_VNET_GSO_NONE && gso != FT_VNET_GSO_TCPV4 && gso != FT_VNET_GSO_TCPV6 && gso != FT_VNET_GSO_UDP_L4)
        return ft_fail(e, FT_EPACKET, EINVAL, "virtio-net GSO type %u is not TCPv4 (%u), TCPv6 (%u) or UDP (%u)", gso,
                       FT_VNET_GSO_TCPV4, FT_VNET_GSO_TCPV6, FT_VNET_GSO_UDP_L4);
    if (gso != FT_VNET_GSO_NONE && h.gso_size == 0)
        return ft_fail(e, FT_EPACKET, EINVAL, "virtio-net header asks for segmentation with a segment size of 0");
    if (gso != FT_VNET_GSO_NONE && (h.hdr_len == 0 || h.hdr_len > len))
        return ft_fail(e, FT_EPACKET, EINVAL,
                       "virtio-net header length %u must cover the packet's headers, within the %zu-byte packet",
                       h.hdr_len, len);
    if ((h.flags & FT_VNET_F_NEEDS_CSUM) && ((size_t)h.csum_start + h.csum_offset + 2 > len))
        return ft_fail(e, FT_EPACKET, EINVAL, "virtio-net checksum offsets %u+%u point past the %zu-byte packet",
                       h.csum_start, h.csum_offset, len);
    if (gso == FT_VNET_GSO_NONE && len > FT_MAX_PACKET)
        return ft_fail(e, FT_EPACKET, EMSGSIZE, "a packet without segmentation is at most %u bytes", FT_MAX_PACKET);
    return FT_OK;
}

/* ---- Internet checksum ---------------------------------------------------------------------------- */
/* The ones'-complement sum does not care about word order as long as it is consistent (RFC 1071), so we
 * add the data as host-order 32-bit halves of 64-bit loads into 64-bit accumulators (no carries lost for
 * gigabytes), fold, and swap the 16-bit result into network order on little-endian hosts. */

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static uint64_t sum_host_order(const uint8_t *p, size_t len)
{
    const uint64_t lo = 0xffffffffu;
    uint64_t a = 0, b = 0;
    while (len >= 32) {
        uint64_t w[4];
        memcpy(w, p, sizeof(w));
        a += (w[0] & lo) + (w[0] >> 32) + (w[1] & lo) + (w[1] >> 32);
        b += (w[2] & lo) + (w[2] >> 32) + (w[3] & lo) + (w[3] >> 32);
        p += 32;
        len -= 32;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof(w));
        a += (w & lo) + (w >> 32);
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        /* The tail keeps its position within an 8-byte lane, so odd bytes stay in the right half-word. */
        uint64_t w = 0;
        memcpy(&w, p, len);
        a += (w & lo) + (w >> 32);
    }
    return a + b;
}

static uint16_t fold32(uint32_t s)
{
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return (uint16_t)s;
}

uint16_t ft_csum_sum(const void *data, size_t len, uint16_t initial)
{
    uint64_t s = sum_host_order((const uint8_t *)data, len);
    while (s >> 32)
        s = (s & 0xffffffffu) + (s >> 32);
    uint16_t v = fold32((uint32_t)s);
    if (host_is_little_endian())
        v = (uint16_t)(v << 8 | v >> 8);
    return fold32((uint32_t)v + initial);
}

/* Plain sum of the n/2 big-endian 16-bit words at p (n even and small: headers and addresses), not folded; the
 * per-packet header sums are far too short for ft_csum_sum's wide loop to pay. */
static uint32_t sum_words(const uint8_t *p, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i < n; i += 2)
        s += get16(p + i);
    return s;
}

uint16_t ft_csum_pseudo(const uint8_t *ip, uint8_t proto, uint32_t l4_len)
{
    uint32_t s = (ip[0] >> 4) == 6 ? fold32(sum_words(ip + 8, 32)) : fold32(sum_words(ip + 12, 8));
    s += proto + (l4_len >> 16) + (l4_len & 0xffffu);
    return fold32(s);
}

/* The checksum a sender would store over [p, p+len) whose 16-bit field at `field` (even offset) is
 * treated as zero, with a pseudo-header sum `initial`. */
static uint16_t csum_skipping_field(const uint8_t *p, size_t len, size_t field, uint16_t initial)
{
    uint16_t s = ft_csum_sum(p, field, initial);
    s = ft_csum_sum(p + field + 2, len - field - 2, s);
    return (uint16_t)~s;
}

static uint16_t ipv4_header_csum(const uint8_t *ip)
{
    return (uint16_t)~fold32(sum_words(ip, 10) + sum_words(ip + 12, 8)); /* the field itself counted as zero */
}

int ft_offload_complete_csum(uint8_t *pkt, size_t len, uint32_t csum_start, uint32_t csum_offset, ft_err *e)
{
    if (!pkt || (size_t)csum_start + csum_offset + 2 > len || csum_start >= len)
        return ft_fail(e, FT_EPACKET, EINVAL,
                       "checksum field at csum_start %u + csum_offset %u does not lie within the %zu-byte packet",
                       (unsigned)csum_start, (unsigned)csum_offset, len);
    uint16_t c = (uint16_t)~ft_csum_sum(pkt + csum_start, len - csum_start, 0);
    put16(pkt + csum_start + csum_offset, c == 0 ? 0xffffu : c);
    return FT_OK;
}

/* ---- remote checksum ------------------------------------------------------------------------------ */

int ft_rcsum_layout(const uint8_t *ip, size_t len, uint16_t *csum_start, uint16_t *csum_offset)
{
    if (!ip || len < 20)
        return 0;
    size_t hl;
    uint8_t proto;
    if ((ip[0] >> 4) == 4) {
        hl = (size_t)(ip[0] & 0x0fu) * 4u;
        if (hl < 20 || (get16(ip + 6) & 0x3fffu) != 0)
            return 0;
        proto = ip[9];
    } else if ((ip[0] >> 4) == 6 && len >= 40) {
        hl = 40;
        proto = ip[6];
    } else {
        return 0;
    }
    size_t field = proto == IPPROTO_TCP_ ? 16u : proto == IPPROTO_UDP_ ? 6u : 0u;
    if (field == 0 || hl + field + 2 > len)
        return 0;
    *csum_start = (uint16_t)hl;
    *csum_offset = (uint16_t)field;
    return 1;
}

int ft_rcsum_decode(const uint8_t *p, size_t len, uint16_t *csum_start, uint16_t *csum_offset, ft_err *e)
{
    if (!p || len < FT_RCSUM_HDR_SIZE || p[0] != FT_RCSUM_MAGIC)
        return ft_fail(e, FT_EPACKET, EINVAL, "not a remote-checksum header (it starts with byte 0x%02x)",
                       FT_RCSUM_MAGIC);
    uint16_t start = 0, field = 0;
    if (!ft_rcsum_layout(p + FT_RCSUM_HDR_SIZE, len - FT_RCSUM_HDR_SIZE, &start, &field))
        return ft_fail(e, FT_EPACKET, EINVAL,
                       "a packet behind a remote-checksum header must be TCP or UDP over IPv4 (not a fragment) or "
                       "over IPv6 without extension headers, with its checksum field inside its %zu bytes",
                       len - FT_RCSUM_HDR_SIZE);
    if (p[1] != field || get16(p + 2) != start)
        return ft_fail(e, FT_EPACKET, EINVAL,
                       "remote-checksum header puts the checksum at %u + %u but the packet has it at %u + %u",
                       get16(p + 2), (unsigned)p[1], (unsigned)start, (unsigned)field);
    *csum_start = start;
    *csum_offset = field;
    return FT_OK;
}

int ft_rcsum_check(const uint8_t *p, size_t len, uint32_t mtu, int accept, ft_err *e)
{
    if (len == 0 || p[0] != FT_RCSUM_MAGIC)
        return ft_packet_check(p, len, mtu, e);
    if (!accept)
        return ft_fail(e, FT_EPACKET, EINVAL,
                       "packet starts with a remote-checksum header (byte 0x%02x), which only a device opened with "
                       "remote_csum=True takes; an IPv4 or IPv6 packet is allowed",
                       FT_RCSUM_MAGIC);
    uint16_t start, field;
    int r = ft_rcsum_decode(p, len, &start, &field, e);
    return r != FT_OK ? r : ft_packet_check(p + FT_RCSUM_HDR_SIZE, len - FT_RCSUM_HDR_SIZE, mtu, e);
}

int ft_rcsum_device_check(ft_device *d, const uint8_t *p, size_t len, ft_err *e)
{
    return ft_rcsum_check(p, len, (uint32_t)ft_atomic_load(&d->mtu), d->remote_csum, e);
}

size_t ft_rcsum_complete_into(const uint8_t *p, size_t len, uint8_t *out)
{
    uint16_t start = 0, field = 0;
    if (len <= FT_RCSUM_HDR_SIZE || ft_rcsum_decode(p, len, &start, &field, NULL) != FT_OK)
        return 0;
    len -= FT_RCSUM_HDR_SIZE;
    memcpy(out, p + FT_RCSUM_HDR_SIZE, len);
    ft_offload_complete_csum(out, len, start, field, NULL);
    return len;
}

void ft_rcsum_strip(const ft_pkt *in, uint32_t n, ft_pkt *out, uint8_t *partial)
{
    for (uint32_t i = 0; i < n; i++) {
        int has = in[i].len > FT_RCSUM_HDR_SIZE && in[i].data[0] == FT_RCSUM_MAGIC;
        out[i].data = in[i].data + (has ? FT_RCSUM_HDR_SIZE : 0);
        out[i].len = in[i].len - (has ? FT_RCSUM_HDR_SIZE : 0);
        partial[i] = (uint8_t)has;
    }
}

static void rcsum_encode(uint8_t *o, uint16_t csum_start, uint16_t csum_offset)
{
    o[0] = FT_RCSUM_MAGIC;
    o[1] = (uint8_t)csum_offset;
    put16(o + 2, csum_start);
}

/* ---- split ---------------------------------------------------------------------------------------- */

static const char *gso_name(unsigned type)
{
    switch (type) {
    case FT_VNET_GSO_TCPV4: return "TCPV4";
    case FT_VNET_GSO_TCPV6: return "TCPV6";
    case FT_VNET_GSO_UDP_L4: return "UDP_L4";
    default: return "?";
    }
}

/* Room for npkts packets of `bytes` bytes in all at the end of out. */
static int batch_room(const ft_batch *out, uint64_t npkts, uint64_t bytes, ft_err *e)
{
    if (npkts <= out->max - out->count && bytes <= out->cap - out->used && out->used + bytes <= UINT32_MAX)
        return FT_OK;
    if (npkts > out->max || bytes > out->cap || bytes > UINT32_MAX)
        return ft_fail(e, FT_EPACKET, EMSGSIZE,
                       "super-packet splits into %llu packets of %llu bytes in all, more than even an empty batch "
                       "holds (%u packets, %zu bytes)",
                       (unsigned long long)npkts, (unsigned long long)bytes, out->max, out->cap);
    return ft_fail(e, FT_EAGAIN, EAGAIN,
                   "the batch has no room for the %llu packets (%llu bytes) of this super-packet; deliver it and "
                   "split again into an empty batch",
                   (unsigned long long)npkts, (unsigned long long)bytes);
}

static void batch_append(ft_batch *out, size_t len)
{
    out->offsets[out->count] = (uint32_t)out->used;
    out->lengths[out->count] = (uint32_t)len;
    out->count++;
    out->used += len;
}

static int split_plain(const ft_vnet_hdr *h, const uint8_t *ip, size_t len, uint32_t flags, ft_batch *out,
                       ft_err *e)
{
    int r = ft_packet_check(ip, len, FT_MAX_PACKET, e);
    if (r != FT_OK)
        return r;
    if (h->flags & FT_VNET_F_NEEDS_CSUM) {
        size_t ip_hl = (ip[0] >> 4) == 4 ? (size_t)(ip[0] & 0x0fu) * 4u : 40u;
        if (h->csum_start < ip_hl)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "csum_start %u points into the %zu-byte IP header; it must be where the transport "
                           "header starts",
                           (unsigned)h->csum_start, ip_hl);
        if ((size_t)h->csum_start + h->csum_offset + 2 > len)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "checksum field at csum_start %u + csum_offset %u does not lie within the %zu-byte packet",
                           (unsigned)h->csum_start, (unsigned)h->csum_offset, len);
    }
    uint16_t start = 0, field = 0;
    int keep = (flags & FT_SPLIT_RCSUM) && (h->flags & FT_VNET_F_NEEDS_CSUM) &&
               ft_rcsum_layout(ip, len, &start, &field) && start == h->csum_start && field == h->csum_offset;
    size_t extra = keep ? FT_RCSUM_HDR_SIZE : 0;
    r = batch_room(out, 1, len + extra, e);
    if (r != FT_OK)
        return r;
    uint8_t *o = out->data + out->used;
    if (keep)
        rcsum_encode(o, start, field);
    memcpy(o + extra, ip, len);
    if ((h->flags & FT_VNET_F_NEEDS_CSUM) && !keep)
        ft_offload_complete_csum(o, len, h->csum_start, h->csum_offset, NULL);
    batch_append(out, len + extra);
    return 1;
}

/* What split needs to know about a super-packet, all of it checked against the buffer. */
typedef struct gso_view {
    int v6;
    uint8_t proto;
    size_t ip_hl;   /* 20 or 40 */
    size_t l4_hl;   /* TCP data offset, or 8 */
} gso_view;

static int parse_super(unsigned type, const uint8_t *ip, size_t len, gso_view *g, ft_err *e)
{
    int want_v6 = type == FT_VNET_GSO_TCPV6;
    uint8_t want_proto = type == FT_VNET_GSO_UDP_L4 ? IPPROTO_UDP_ : IPPROTO_TCP_;
    unsigned version = len > 0 ? ip[0] >> 4 : 0;
    if (version == 4) {
        if (len < 20)
            return ft_fail(e, FT_EPACKET, EINVAL, "super-packet of %zu bytes is shorter than an IPv4 header", len);
        if ((ip[0] & 0x0fu) != 5)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv4 super-packet has a %u-byte header; options are not supported (only 20 bytes)",
                           (ip[0] & 0x0fu) * 4u);
        if (get16(ip + 2) != len)
            return ft_fail(e, FT_EPACKET, EINVAL, "IPv4 total length says %u bytes but the super-packet has %zu",
                           get16(ip + 2), len);
        if (get16(ip + 6) & 0x3fffu)
            return ft_fail(e, FT_EPACKET, EINVAL, "IPv4 super-packet is a fragment (MF or fragment offset set)");
        g->v6 = 0;
        g->ip_hl = 20;
        g->proto = ip[9];
    } else if (version == 6) {
        if (len < 40)
            return ft_fail(e, FT_EPACKET, EINVAL, "super-packet of %zu bytes is shorter than an IPv6 header", len);
        if ((size_t)get16(ip + 4) + 40 != len)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv6 payload length says %u bytes but the super-packet carries %zu after its header",
                           get16(ip + 4), len - 40);
        g->v6 = 1;
        g->ip_hl = 40;
        g->proto = ip[6];
        if (g->proto != IPPROTO_TCP_ && g->proto != IPPROTO_UDP_)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "IPv6 super-packet has next header %u; extension headers are not supported (only TCP "
                           "or UDP directly after the IPv6 header)",
                           g->proto);
    } else {
        return ft_fail(e, FT_EPACKET, EINVAL, "super-packet starts with IP version %u; only 4 and 6 are allowed",
                       version);
    }
    if (type != FT_VNET_GSO_UDP_L4 && g->v6 != want_v6)
        return ft_fail(e, FT_EPACKET, EINVAL, "gso_type %s does not match an IPv%u packet", gso_name(type),
                       g->v6 ? 6u : 4u);
    if (g->proto != want_proto)
        return ft_fail(e, FT_EPACKET, EINVAL, "gso_type %s needs %s but the packet carries IP protocol %u",
                       gso_name(type), want_proto == IPPROTO_TCP_ ? "TCP" : "UDP", g->proto);
    if (want_proto == IPPROTO_TCP_) {
        if (len < g->ip_hl + 20)
            return ft_fail(e, FT_EPACKET, EINVAL, "super-packet of %zu bytes is too short for its TCP header", len);
        g->l4_hl = (size_t)(ip[g->ip_hl + 12] >> 4) * 4u;
        if (g->l4_hl < 20 || g->ip_hl + g->l4_hl > len)
            return ft_fail(e, FT_EPACKET, EINVAL,
                           "TCP data offset says a %zu-byte header; it must be 20..60 and within the %zu-byte packet",
                           g->l4_hl, len);
    } else {
        if (len < g->ip_hl + 8)
            return ft_fail(e, FT_EPACKET, EINVAL, "super-packet of %zu bytes is too short for its UDP header", len);
        g->l4_hl = 8;
    }
    return FT_OK;
}

static int split_super(const ft_vnet_hdr *h, unsigned type, const uint8_t *ip, size_t len, uint32_t flags,
                       ft_batch *out, ft_err *e)
{
    gso_view g;
    memset(&g, 0, sizeof(g));
    int r = parse_super(type, ip, len, &g, e);
    if (r != FT_OK)
        return r;
    if (h->gso_size == 0)
        return ft_fail(e, FT_EPACKET, EINVAL, "gso_size is 0 in a %s super-packet", gso_name(type));
    if (h->hdr_len > len)
        return ft_fail(e, FT_EPACKET, EINVAL, "hdr_len %u is beyond the %zu-byte super-packet",
                       (unsigned)h->hdr_len, len);
    if ((h->flags & FT_VNET_F_NEEDS_CSUM) && (size_t)h->csum_start + h->csum_offset + 2 > len)
        return ft_fail(e, FT_EPACKET, EINVAL,
                       "checksum field at csum_start %u + csum_offset %u does not lie within the %zu-byte packet",
                       (unsigned)h->csum_start, (unsigned)h->csum_offset, len);
    size_t hl = g.ip_hl + g.l4_hl;
    size_t payload = len - hl;
    if (payload == 0)
        return ft_fail(e, FT_EPACKET, EINVAL, "%s super-packet carries no payload", gso_name(type));
    size_t mss = h->gso_size;
    size_t nseg = (payload + mss - 1) / mss;
    int keep = (flags & FT_SPLIT_RCSUM) != 0; /* the segments' checksums stay partial behind an FT_RCSUM header */
    size_t extra = keep ? FT_RCSUM_HDR_SIZE : 0;
    r = batch_room(out, nseg, (uint64_t)nseg * (hl + extra) + payload, e);
    if (r != FT_OK)
        return r;

    const uint8_t *l4 = ip + g.ip_hl;
    int tcp = g.proto == IPPROTO_TCP_;
    uint32_t seq0 = tcp ? get32(l4 + 4) : 0;
    uint8_t flags0 = tcp ? l4[13] : 0;
    uint16_t id0 = g.v6 ? 0 : get16(ip + 4);
    size_t field = tcp ? 16 : 6;
    for (size_t i = 0, off = 0; i < nseg; i++, off += mss) {
        size_t chunk = payload - off < mss ? payload - off : mss;
        size_t seglen = hl + chunk;
        uint8_t *o = out->data + out->used + extra;
        uint8_t *th = o + g.ip_hl;
        if (keep)
            rcsum_encode(o - extra, (uint16_t)g.ip_hl, (uint16_t)field);
        memcpy(o, ip, hl);
        memcpy(o + hl, ip + hl + off, chunk);
        if (g.v6) {
            put16(o + 4, (uint32_t)(seglen - 40));
        } else {
            put16(o + 2, (uint32_t)seglen);
            put16(o + 4, (uint32_t)(id0 + i));
            put16(o + 10, ipv4_header_csum(o));
        }
        if (tcp) {
            uint8_t f = flags0;
            if (i + 1 < nseg)
                f &= (uint8_t)~(TCP_FIN | TCP_PSH);
            if (i > 0)
                f &= (uint8_t)~TCP_CWR;
            put32(th + 4, (uint32_t)(seq0 + off));
            th[13] = f;
        } else {
            put16(th + 4, (uint32_t)(8 + chunk));
        }
        size_t l4len = seglen - g.ip_hl;
        uint16_t pseudo = ft_csum_pseudo(o, g.proto, (uint32_t)l4len);
        if (keep) {
            put16(th + field, pseudo); /* partial, as the kernel would hand it over: the far end completes it */
        } else {
            uint16_t c = csum_skipping_field(th, l4len, field, pseudo);
            if (!tcp && c == 0)
                c = 0xffffu; /* zero means "no checksum" in UDP */
            put16(th + field, c);
        }
        batch_append(out, seglen + extra);
    }
    return (int)nseg;
}

int ft_offload_split(const uint8_t *pkt, size_t len, ft_batch *out, ft_err *e)
{
    return ft_offload_split_ex(pkt, len, 0, out, e);
}

int ft_offload_split_ex(const uint8_t *pkt, size_t len, uint32_t flags, ft_batch *out, ft_err *e)
{
    if (!pkt || !out || !out->data || !out->offsets || !out->lengths)
        return ft_fail(e, FT_EINVAL, EINVAL, "split needs a packet and a batch with its buffers");
    if (out->count > out->max || out->used > out->cap)
        return ft_fail(e, FT_EINVAL, EINVAL, "batch is inconsistent: %u of %u packets, %zu of %zu bytes used",
                       out->count, out->max, out->used, out->cap);
    if (len < FT_VNET_HDR_SIZE)
        return ft_fail(e, FT_EPACKET, EINVAL, "read of %zu bytes is shorter than the %d-byte virtio-net header",
                       len, FT_VNET_HDR_SIZE);
    ft_vnet_hdr h;
    ft_vnet_hdr_decode(pkt, &h);
    const uint8_t *ip = pkt + FT_VNET_HDR_SIZE;
    size_t iplen = len - FT_VNET_HDR_SIZE;
    unsigned type = h.gso_type & ~FT_VNET_GSO_ECN;
    int ecn = (h.gso_type & FT_VNET_GSO_ECN) != 0;
    if (ecn && type != FT_VNET_GSO_TCPV4 && type != FT_VNET_GSO_TCPV6)
        return ft_fail(e, FT_EPACKET, EINVAL, "gso_type 0x%02x: the ECN bit is only meaningful for TCP",
                       (unsigned)h.gso_type);
    switch (type) {
    case FT_VNET_GSO_NONE:
        return split_plain(&h, ip, iplen, flags, out, e);
    case FT_VNET_GSO_TCPV4:
    case FT_VNET_GSO_TCPV6:
    case FT_VNET_GSO_UDP_L4:
        return split_super(&h, type, ip, iplen, flags, out, e);
    case FT_VNET_GSO_UDP:
        return ft_fail(e, FT_EPACKET, EINVAL, "gso_type UDP (UFO, IP fragmentation) is not supported");
    default:
        return ft_fail(e, FT_EPACKET, EINVAL,
                       "unknown gso_type 0x%02x; NONE 0, TCPV4 1, TCPV6 4 and UDP_L4 5 are supported",
                       (unsigned)h.gso_type);
    }
}

/* ---- coalesce ------------------------------------------------------------------------------------- */

enum { KIND_PASS = 0, KIND_TCP = 1, KIND_UDP = 2 };
enum { FLOW_NONE = 0, FLOW_PORTS = 1, FLOW_ADDRS = 2 };

/* One input packet as coalescing sees it. */
typedef struct pkt_info {
    uint8_t kind;      /* KIND_TCP/KIND_UDP: may be merged; KIND_PASS: goes out unchanged */
    uint8_t flow;      /* FLOW_PORTS: addresses+protocol+ports known; FLOW_ADDRS: only addresses (a
                          fragment, IPv6 extension headers): it must not be overtaken by its flow's packets */
    uint8_t v6;
    uint8_t partial;   /* its transport checksum is partial (it came behind an FT_RCSUM header) */
    uint16_t ip_hl, hl;/* IP header bytes; IP + transport header bytes */
    uint32_t payload;
    uint32_t hash;
} pkt_info;

/* One output unit: a run of packets of one flow, or a packet passed through. */
typedef struct unit {
    uint16_t first, last;   /* window indices; members are linked through next[] */
    uint16_t count;
    uint8_t kind, open;     /* open: later packets of the flow may still join */
    uint16_t gso_size;      /* payload of the first member */
    uint32_t total;         /* IP packet length of the super-packet so far */
    uint32_t next_seq;      /* TCP: the sequence number the next member must have */
} unit;

typedef struct window {
    const ft_pkt *pkts;
    pkt_info info[FT_COALESCE_WINDOW];
    unit units[FT_COALESCE_WINDOW];
    uint16_t next[FT_COALESCE_WINDOW];
    uint16_t open[FT_COALESCE_WINDOW];  /* indices of open units */
    uint32_t nunits, nopen;
} window;

static uint32_t hash_bytes(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static int checksums_ok(const uint8_t *p, const pkt_info *pi, uint8_t proto)
{
    if (!pi->v6 && get16(p + 10) != ipv4_header_csum(p))
        return 0;
    const uint8_t *l4 = p + pi->ip_hl;
    size_t l4len = (size_t)pi->hl - pi->ip_hl + pi->payload;
    size_t field = proto == IPPROTO_TCP_ ? 16 : 6;
    uint16_t want = csum_skipping_field(l4, l4len, field, ft_csum_pseudo(p, proto, (uint32_t)l4len));
    if (proto == IPPROTO_UDP_ && want == 0)
        want = 0xffffu;
    return get16(l4 + field) == want; /* also refuses IPv4 UDP without a checksum (0) */
}

static void classify(const uint8_t *p, size_t len, uint32_t allow, int partial, pkt_info *pi)
{
    memset(pi, 0, sizeof(*pi));
    pi->partial = (uint8_t)(partial != 0);
    if (!p || len < 20)
        return;
    unsigned version = p[0] >> 4;
    size_t ip_hl;
    uint8_t proto;
    int length_ok;
    if (version == 4) {
        ip_hl = (size_t)(p[0] & 0x0fu) * 4u;
        proto = p[9];
        if (ip_hl < 20 || ip_hl > len || (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_))
            return;
        pi->flow = FLOW_ADDRS;
        if ((get16(p + 6) & 0x1fffu) != 0 || len < ip_hl + 4)
            return; /* a later fragment carries no ports */
        length_ok = ip_hl == 20 && get16(p + 2) == len && (p[6] & 0x20u) == 0;
    } else if (version == 6) {
        if (len < 40)
            return;
        ip_hl = 40;
        proto = p[6];
        if (proto == IPPROTO_ICMPV6_ || proto == IPPROTO_NONE6_)
            return;
        pi->flow = FLOW_ADDRS;
        pi->v6 = 1;
        if ((proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_) || len < ip_hl + 4)
            return; /* extension headers: we do not walk them, so we cannot tell the flow */
        length_ok = (size_t)get16(p + 4) + 40 == len;
    } else {
        return;
    }
    pi->flow = FLOW_PORTS;
    pi->ip_hl = (uint16_t)ip_hl;
    uint8_t key[2] = {(uint8_t)version, proto};
    uint32_t h = hash_bytes(2166136261u, key, 2);
    h = pi->v6 ? hash_bytes(h, p + 8, 32) : hash_bytes(h, p + 12, 8);
    pi->hash = hash_bytes(h, p + ip_hl, 4);
    if (!length_ok || len > IP_MAX)
        return;
    const uint8_t *l4 = p + ip_hl;
    if (proto == IPPROTO_TCP_) {
        if (!(allow & FT_COALESCE_TCP) || len < ip_hl + 20)
            return;
        size_t doff = (size_t)(l4[12] >> 4) * 4u;
        uint8_t f = l4[13];
        if (doff < 20 || ip_hl + doff >= len)
            return; /* bad header, or no payload (pure ACKs go out as they are) */
        if (!(f & TCP_ACK) || (f & (TCP_SYN | TCP_RST | TCP_URG | TCP_CWR)))
            return;
        pi->hl = (uint16_t)(ip_hl + doff);
    } else {
        if (!(allow & FT_COALESCE_UDP) || len <= ip_hl + 8 || get16(l4 + 4) != len - ip_hl)
            return;
        pi->hl = (uint16_t)(ip_hl + 8);
    }
    pi->payload = (uint32_t)(len - pi->hl);
    if (pi->partial) {
        if (!pi->v6 && get16(p + 10) != ipv4_header_csum(p))
            return; /* the transport checksum is the far end's to finish, the IPv4 header's is not */
    } else if (!(allow & FT_COALESCE_TRUST_CSUM) && !checksums_ok(p, pi, proto)) {
        return;
    }
    pi->kind = proto == IPPROTO_TCP_ ? KIND_TCP : KIND_UDP;
}

static int same_addresses(const uint8_t *a, const uint8_t *b, int v6)
{
    return v6 ? memcmp(a + 8, b + 8, 32) == 0 : memcmp(a + 12, b + 12, 8) == 0;
}

static int same_flow(const uint8_t *a, const pkt_info *ai, const uint8_t *b, const pkt_info *bi)
{
    if (ai->hash != bi->hash || ai->v6 != bi->v6 || (a[0] >> 4) != (b[0] >> 4))
        return 0;
    if ((ai->v6 ? a[6] != b[6] : a[9] != b[9]) || !same_addresses(a, b, ai->v6))
        return 0;
    return memcmp(a + ai->ip_hl, b + bi->ip_hl, 4) == 0;
}

/* May packet p (info pi) be appended to open unit u of the same flow? */
static int can_join(const window *w, const unit *u, const uint8_t *p, const pkt_info *pi)
{
    const uint8_t *f = w->pkts[u->first].data;
    const pkt_info *fi = &w->info[u->first];
    if (pi->kind != u->kind || pi->hl != fi->hl || pi->payload > u->gso_size || pi->payload == 0)
        return 0;
    if ((uint64_t)u->total + pi->payload > IP_MAX)
        return 0;
    if (u->kind == KIND_UDP && u->count >= FT_COALESCE_UDP_MAX_SEGS)
        return 0;
    if (pi->v6) {
        /* version, traffic class, flow label, next header, hop limit */
        if (memcmp(f, p, 4) != 0 || f[6] != p[6] || f[7] != p[7])
            return 0;
    } else {
        /* version/IHL, TOS, flags/fragment offset, TTL, protocol; ids counting up from the first */
        if (f[0] != p[0] || f[1] != p[1] || memcmp(f + 6, p + 6, 4) != 0)
            return 0;
        if (get16(p + 4) != (uint16_t)(get16(f + 4) + u->count))
            return 0;
    }
    if (u->kind == KIND_TCP) {
        const uint8_t *ft = f + fi->ip_hl, *pt = p + pi->ip_hl;
        if (get32(pt + 4) != u->next_seq)
            return 0;
        /* ack and data offset; flags but PSH/FIN; window; urgent pointer; options byte for byte */
        if (memcmp(ft + 8, pt + 8, 5) != 0 || (ft[13] & ~(TCP_PSH | TCP_FIN)) != (pt[13] & ~(TCP_PSH | TCP_FIN)))
            return 0;
        if (memcmp(ft + 14, pt + 14, 2) != 0 || memcmp(ft + 18, pt + 18, (size_t)fi->hl - fi->ip_hl - 18) != 0)
            return 0;
    }
    return 1;
}

static void close_unit(window *w, uint32_t slot)
{
    w->units[w->open[slot]].open = 0;
    w->open[slot] = w->open[--w->nopen];
}

static void group_window(window *w, uint32_t n)
{
    w->nunits = w->nopen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *p = w->pkts[i].data;
        const pkt_info *pi = &w->info[i];
        if (pi->flow == FLOW_PORTS) {
            for (uint32_t s = 0; s < w->nopen; s++) {
                unit *u = &w->units[w->open[s]];
                if (!same_flow(w->pkts[u->first].data, &w->info[u->first], p, pi))
                    continue;
                if (pi->kind != KIND_PASS && can_join(w, u, p, pi)) {
                    const uint8_t *t = p + pi->ip_hl;
                    w->next[u->last] = (uint16_t)i;
                    u->last = (uint16_t)i;
                    u->count++;
                    u->total += pi->payload;
                    u->next_seq += pi->payload;
                    if (pi->payload < u->gso_size || (u->kind == KIND_TCP && (t[13] & (TCP_PSH | TCP_FIN))))
                        close_unit(w, s);
                    goto next_packet;
                }
                close_unit(w, s); /* a later packet of this flow must not be merged ahead of p */
                break;
            }
        } else if (pi->flow == FLOW_ADDRS) {
            for (uint32_t s = 0; s < w->nopen;) {
                const unit *u = &w->units[w->open[s]];
                const uint8_t *f = w->pkts[u->first].data;
                if (w->info[u->first].v6 == pi->v6 && same_addresses(f, p, pi->v6))
                    close_unit(w, s);
                else
                    s++;
            }
        }
        {
            unit *u = &w->units[w->nunits];
            u->first = u->last = (uint16_t)i;
            u->count = 1;
            u->kind = pi->kind;
            u->gso_size = (uint16_t)(pi->kind != KIND_PASS ? pi->payload : 0);
            u->total = (uint32_t)w->pkts[i].len;
            u->next_seq = pi->kind == KIND_TCP ? get32(p + pi->ip_hl + 4) + pi->payload : 0;
            u->open = pi->kind != KIND_PASS &&
                      !(pi->kind == KIND_TCP && (p[pi->ip_hl + 13] & (TCP_PSH | TCP_FIN)));
            if (u->open)
                w->open[w->nopen++] = (uint16_t)w->nunits;
            w->nunits++;
        }
    next_packet:;
    }
}

/* Describes unit u without copying a payload byte: its header bytes go to hdr (the virtio-net header, and for a
 * merged unit the merged IP and transport headers: at most FT_COALESCE_HDR_MAX), its pieces to iov, the header
 * first, then the packet itself or, merged, each member's payload. Returns the number of pieces. */
static uint32_t unit_pieces(const window *w, const unit *u, uint8_t *hdr, ft_pkt *iov)
{
    const ft_pkt *first = &w->pkts[u->first];
    iov[0].data = hdr;
    iov[0].len = FT_VNET_HDR_SIZE;
    if (u->kind == KIND_PASS || u->count == 1) {
        memset(hdr, 0, FT_VNET_HDR_SIZE);
        uint16_t start, field;
        if (w->info[u->first].partial && ft_rcsum_layout(first->data, first->len, &start, &field)) {
            ft_vnet_hdr h;
            memset(&h, 0, sizeof(h));
            h.flags = FT_VNET_F_NEEDS_CSUM; /* the kernel completes what the far end left partial */
            h.csum_start = start;
            h.csum_offset = field;
            ft_vnet_hdr_encode(&h, hdr);
        }
        if (first->len == 0)
            return 1;
        iov[1] = *first;
        return 2;
    }
    const pkt_info *fi = &w->info[u->first];
    int tcp = u->kind == KIND_TCP;
    ft_vnet_hdr h;
    h.flags = FT_VNET_F_NEEDS_CSUM;
    h.gso_type = (uint8_t)(tcp ? (fi->v6 ? FT_VNET_GSO_TCPV6 : FT_VNET_GSO_TCPV4) : FT_VNET_GSO_UDP_L4);
    h.hdr_len = fi->hl;
    h.gso_size = u->gso_size;
    h.csum_start = fi->ip_hl;
    h.csum_offset = tcp ? 16 : 6;
    ft_vnet_hdr_encode(&h, hdr);

    uint8_t *ip = hdr + FT_VNET_HDR_SIZE;
    memcpy(ip, first->data, fi->hl);
    iov[0].len += fi->hl;
    size_t pos = fi->hl;
    uint32_t k = 1;
    for (uint16_t m = u->first;; m = w->next[m]) {
        iov[k].data = w->pkts[m].data + fi->hl;
        iov[k].len = w->info[m].payload;
        k++;
        pos += w->info[m].payload;
        if (m == u->last)
            break;
    }
    uint8_t *l4 = ip + fi->ip_hl;
    uint32_t l4len = (uint32_t)(pos - fi->ip_hl);
    if (fi->v6) {
        put16(ip + 4, l4len);
    } else {
        put16(ip + 2, (uint32_t)pos);
        put16(ip + 10, ipv4_header_csum(ip));
    }
    uint8_t proto = tcp ? IPPROTO_TCP_ : IPPROTO_UDP_;
    if (tcp) {
        l4[13] = (uint8_t)(l4[13] | (w->pkts[u->last].data[fi->ip_hl + 13] & (TCP_PSH | TCP_FIN)));
        put16(l4 + 16, ft_csum_pseudo(ip, proto, l4len));
    } else {
        put16(l4 + 4, l4len);
        put16(l4 + 6, ft_csum_pseudo(ip, proto, l4len));
    }
    return k;
}

/* Writes unit u at o, contiguous; returns its length (header included). */
static size_t write_unit(const window *w, const unit *u, uint8_t *o)
{
    uint8_t hdr[FT_COALESCE_HDR_MAX];
    ft_pkt iov[FT_COALESCE_WINDOW + 1];
    uint32_t k = unit_pieces(w, u, hdr, iov);
    size_t pos = 0;
    for (uint32_t j = 0; j < k; j++) {
        memcpy(o + pos, iov[j].data, iov[j].len);
        pos += iov[j].len;
    }
    return pos;
}

size_t ft_offload_coalesce_bound(const ft_pkt *in, uint32_t n)
{
    size_t need = 0;
    for (uint32_t i = 0; in && i < n; i++) {
        size_t add = in[i].len + FT_VNET_HDR_SIZE;
        if (add < in[i].len || need + add < need)
            return SIZE_MAX;
        need += add;
    }
    return need;
}

/* Groups the packets window by window and hands each unit to sink, in order. */
static void each_unit(const ft_pkt *in, const uint8_t *partial, uint32_t n, uint32_t allow,
                      void (*sink)(void *ctx, const window *w, const unit *u), void *ctx)
{
    window w;
    for (uint32_t base = 0; base < n; base += FT_COALESCE_WINDOW) {
        uint32_t k = n - base < FT_COALESCE_WINDOW ? n - base : FT_COALESCE_WINDOW;
        w.pkts = in + base;
        for (uint32_t i = 0; i < k; i++)
            classify(w.pkts[i].data, w.pkts[i].len, allow, partial && partial[base + i], &w.info[i]);
        group_window(&w, k);
        for (uint32_t u = 0; u < w.nunits; u++)
            sink(ctx, &w, &w.units[u]);
    }
}

typedef struct buf_sink { /* units copied back to back into one buffer */
    uint8_t *buf;
    size_t used;
    ft_pkt *out;
    uint32_t *segs;
    uint32_t nout;
} buf_sink;

static void add_unit(void *ctx, const window *w, const unit *u)
{
    buf_sink *s = ctx;
    size_t len = write_unit(w, u, s->buf + s->used);
    s->out[s->nout].data = s->buf + s->used;
    s->out[s->nout].len = len;
    if (s->segs)
        s->segs[s->nout] = u->count;
    s->nout++;
    s->used += len;
}

typedef struct iov_sink { /* units as pieces: headers built in hdr, payloads where they are */
    uint8_t *hdr;
    size_t hdr_used;
    ft_pkt *iov;
    uint32_t pieces;
    ft_coalesce_unit *units;
    uint32_t nout;
} iov_sink;

static void add_pieces(void *ctx, const window *w, const unit *u)
{
    iov_sink *s = ctx;
    uint32_t got = unit_pieces(w, u, s->hdr + s->hdr_used, s->iov + s->pieces);
    ft_coalesce_unit *cu = &s->units[s->nout++];
    cu->iov_first = s->pieces;
    cu->iov_count = got;
    cu->segs = u->count;
    cu->len = 0;
    for (uint32_t j = 0; j < got; j++)
        cu->len += s->iov[s->pieces + j].len;
    s->hdr_used += s->iov[s->pieces].len;
    s->pieces += got;
}

static int check_coalesce_input(const ft_pkt *in, uint32_t n, int have_outputs, uint32_t units_max, ft_err *e)
{
    if (!in || !have_outputs)
        return ft_fail(e, FT_EINVAL, EINVAL, "coalesce needs packets, an output buffer and an output table");
    if (n > INT32_MAX)
        return ft_fail(e, FT_EINVAL, EINVAL, "%u packets is too many for one call", n);
    for (uint32_t i = 0; i < n; i++)
        if (!in[i].data && in[i].len)
            return ft_fail(e, FT_EINVAL, EINVAL, "packet %u has no data but a length of %zu", i, in[i].len);
    if (units_max < n)
        return ft_fail(e, FT_EINVAL, EINVAL, "the output table holds %u units; %u packets need up to %u", units_max,
                       n, n);
    return FT_OK;
}

int ft_offload_coalesce_iov(const ft_pkt *in, const uint8_t *partial, uint32_t n, uint32_t allow, uint8_t *hdr_buf,
                            size_t hdr_cap, ft_pkt *iov, uint32_t iov_cap, ft_coalesce_unit *units,
                            uint32_t units_max, ft_err *e)
{
    if (n == 0)
        return 0;
    int r = check_coalesce_input(in, n, hdr_buf != NULL && iov != NULL && units != NULL, units_max, e);
    if (r != FT_OK)
        return r;
    if (hdr_cap / FT_COALESCE_HDR_MAX < n || iov_cap / 2 < n)
        return ft_fail(e, FT_EINVAL, EINVAL,
                       "%u packets need up to %llu header bytes and %llu pieces; got room for %zu and %u", n,
                       (unsigned long long)n * FT_COALESCE_HDR_MAX, 2ull * n, hdr_cap, iov_cap);
    iov_sink sink = {hdr_buf, 0, iov, 0, units, 0};
    each_unit(in, partial, n, allow, add_pieces, &sink);
    return (int)sink.nout;
}

int ft_offload_coalesce(const ft_pkt *in, uint32_t n, uint32_t allow, uint8_t *out_buf, size_t out_cap,
                        ft_pkt *out, uint32_t *out_segs, uint32_t out_max, ft_err *e)
{
    return ft_offload_coalesce_ex(in, NULL, n, allow, out_buf, out_cap, out, out_segs, out_max, e);
}

int ft_offload_coalesce_ex(const ft_pkt *in, const uint8_t *partial, uint32_t n, uint32_t allow, uint8_t *out_buf,
                           size_t out_cap, ft_pkt *out, uint32_t *out_segs, uint32_t out_max, ft_err *e)
{
    if (n == 0)
        return 0;
    int r = check_coalesce_input(in, n, out_buf != NULL && out != NULL, out_max, e);
    if (r != FT_OK)
        return r;
    size_t need = ft_offload_coalesce_bound(in, n);
    if (out_cap < need)
        return ft_fail(e, FT_EINVAL, EINVAL,
                       "the output buffer has %zu bytes; %u packets need up to %zu (their bytes plus %d each)",
                       out_cap, n, need, FT_VNET_HDR_SIZE);

    buf_sink sink = {out_buf, 0, out, out_segs, 0};
    each_unit(in, partial, n, allow, add_unit, &sink);
    return (int)sink.nout;
}
