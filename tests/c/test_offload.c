/* test_offload.c - C tests of the virtio-net offload functions (ft_offload.c): splitting super-packets,
 * coalescing flows, and refusing malformed input. Packets are built here, with a deliberately simple
 * byte-at-a-time checksum, independently of the code under test. Meant to run under ASan+UBSan.
 * Prints "N passed, N failed" and exits non-zero on failure. */
#include "offload/ft_offload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define BIG 70000 /* larger than any packet we build, header included */

/* ---- independent reference: byte order, checksums --------------------------------------------------- */

static void be16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void be32(uint8_t *p, uint32_t v) { be16(p, v >> 16); be16(p + 2, v); }
static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t rd32(const uint8_t *p) { return rd16(p) << 16 | rd16(p + 2); }

/* Byte at a time: even offsets are high bytes, odd offsets low bytes. */
static uint64_t ref_add(uint64_t acc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc += (i % 2 == 0) ? (uint64_t)p[i] << 8 : p[i];
    return acc;
}

static uint32_t ref_fold(uint64_t acc)
{
    while (acc > 0xffff)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint32_t)acc;
}

static uint64_t ref_pseudo(const uint8_t *ip, uint8_t proto, uint32_t l4len)
{
    uint64_t acc = (ip[0] >> 4) == 6 ? ref_add(0, ip + 8, 32) : ref_add(0, ip + 12, 8);
    return acc + proto + (l4len >> 16) + (l4len & 0xffff);
}

static int ref_ipv4_header_ok(const uint8_t *ip) { return ref_fold(ref_add(0, ip, 20)) == 0xffff; }

/* The transport checksum of a packet without options/extension headers verifies. */
static int ref_l4_ok(const uint8_t *ip, size_t len)
{
    size_t hl = (ip[0] >> 4) == 6 ? 40 : (size_t)(ip[0] & 15) * 4;
    uint8_t proto = (ip[0] >> 4) == 6 ? ip[6] : ip[9];
    if (proto == 17 && rd16(ip + hl + 6) == 0)
        return 0; /* we always want a checksum */
    return ref_fold(ref_pseudo(ip, proto, (uint32_t)(len - hl)) + ref_add(0, ip + hl, len - hl)) == 0xffff;
}

static void ref_set_ipv4_csum(uint8_t *ip)
{
    size_t hl = (size_t)(ip[0] & 15) * 4;
    be16(ip + 10, 0);
    be16(ip + 10, ~ref_fold(ref_add(0, ip, hl)) & 0xffff);
}

/* Recomputes the transport checksum of a TCP/UDP packet whose transport header starts at l4off. */
static void ref_set_l4_csum(uint8_t *ip, size_t len, size_t l4off, uint8_t proto)
{
    size_t field = proto == 6 ? 16 : 6;
    be16(ip + l4off + field, 0);
    uint32_t c = ~ref_fold(ref_pseudo(ip, proto, (uint32_t)(len - l4off)) + ref_add(0, ip + l4off, len - l4off)) & 0xffff;
    if (proto == 17 && c == 0)
        c = 0xffff;
    be16(ip + l4off + field, c);
}

static uint8_t pattern(uint8_t seed, uint32_t i) { return (uint8_t)(i * 7u + seed + (i >> 8)); }

/* ---- packet builder --------------------------------------------------------------------------------- */

typedef struct pdesc {
    int v6, udp;
    uint8_t opt_len;      /* TCP option bytes (multiple of 4) */
    uint8_t flags;        /* TCP flags */
    uint32_t seq, ack;
    uint16_t id, window, sport;
    uint8_t ttl, tos;
    uint8_t seed;
    uint32_t pay_off, pay_len;
    int partial;          /* store the pseudo-header sum (as the kernel does with NEEDS_CSUM) */
    int ip_options;       /* IPv4: a 4-byte option (IHL 6) */
    int v6_hop_by_hop;    /* IPv6: an 8-byte hop-by-hop header before the transport header */
} pdesc;

static pdesc desc(int v6, int udp)
{
    pdesc d;
    memset(&d, 0, sizeof(d));
    d.v6 = v6;
    d.udp = udp;
    d.flags = 0x10; /* ACK */
    d.seq = 1000000;
    d.ack = 0x11223344;
    d.id = 4242;
    d.window = 501;
    d.sport = 40000;
    d.ttl = 64;
    d.tos = 0x10;
    d.seed = 3;
    return d;
}

static size_t l4_hl(const pdesc *d) { return d->udp ? 8 : 20u + d->opt_len; }
static size_t ip_hl(const pdesc *d) { return d->v6 ? 40u + (d->v6_hop_by_hop ? 8u : 0u) : (d->ip_options ? 24u : 20u); }

/* Writes the IP packet d describes at ip; returns its length. */
static size_t build_ip(const pdesc *d, uint8_t *ip)
{
    size_t ihl = ip_hl(d), thl = l4_hl(d), len = ihl + thl + d->pay_len;
    uint8_t proto = d->udp ? 17 : 6;
    memset(ip, 0, ihl + thl);
    if (d->v6) {
        ip[0] = 0x60 | (d->tos >> 4);
        ip[1] = (uint8_t)(d->tos << 4) | 0x0a;
        ip[2] = 0xbc;
        ip[3] = 0xde;
        be16(ip + 4, (uint32_t)(len - 40));
        ip[6] = d->v6_hop_by_hop ? 0 : proto;
        ip[7] = d->ttl;
        ip[8] = 0xfd;
        ip[23] = 1;
        ip[24] = 0xfd;
        ip[39] = 2;
        if (d->v6_hop_by_hop) {
            ip[40] = proto; /* next header; length 0 = 8 bytes; PadN fills the rest */
            ip[42] = 1;
            ip[43] = 4;
        }
    } else {
        ip[0] = (uint8_t)(0x40 | ihl / 4);
        ip[1] = d->tos;
        be16(ip + 2, (uint32_t)len);
        be16(ip + 4, d->id);
        ip[6] = 0x40; /* DF */
        ip[8] = d->ttl;
        ip[9] = proto;
        ip[12] = 10, ip[15] = 1;
        ip[16] = 10, ip[19] = 2;
        if (d->ip_options)
            ip[20] = 1, ip[21] = 1, ip[22] = 1, ip[23] = 0; /* NOP NOP NOP EOL */
        ref_set_ipv4_csum(ip);
    }
    uint8_t *l4 = ip + ihl;
    be16(l4, d->sport);
    be16(l4 + 2, d->udp ? 53 : 80);
    if (d->udp) {
        be16(l4 + 4, (uint32_t)(thl + d->pay_len));
    } else {
        be32(l4 + 4, d->seq);
        be32(l4 + 8, d->ack);
        l4[12] = (uint8_t)((thl / 4) << 4);
        l4[13] = d->flags;
        be16(l4 + 14, d->window);
        for (size_t i = 0; i + 4 <= d->opt_len; i += 4) { /* NOP NOP + a made-up 2-byte kind/len */
            l4[20 + i] = 1;
            l4[21 + i] = 1;
            l4[22 + i] = (uint8_t)(0xa0 + i);
            l4[23 + i] = (uint8_t)(d->seed + i);
        }
    }
    for (uint32_t i = 0; i < d->pay_len; i++)
        l4[thl + i] = pattern(d->seed, d->pay_off + i);
    if (d->partial) {
        be16(l4 + (d->udp ? 6 : 16), ref_fold(ref_pseudo(ip, proto, (uint32_t)(len - ihl))));
    } else {
        ref_set_l4_csum(ip, len, ihl, proto);
    }
    return len;
}

static void put_vnet(uint8_t *p, uint8_t flags, uint8_t type, uint16_t hdr_len, uint16_t gso, uint16_t cs,
                     uint16_t co)
{
    p[0] = flags;
    p[1] = type;
    memcpy(p + 2, &hdr_len, 2);
    memcpy(p + 4, &gso, 2);
    memcpy(p + 6, &cs, 2);
    memcpy(p + 8, &co, 2);
}

/* A super-packet as the kernel hands it to us: header + packet with a partial checksum. */
static size_t build_super(const pdesc *d, uint16_t gso, uint8_t *buf)
{
    pdesc s = *d;
    s.partial = 1;
    size_t len = build_ip(&s, buf + FT_VNET_HDR_SIZE);
    uint8_t type = d->udp ? 5 : (d->v6 ? 4 : 1);
    put_vnet(buf, 1, type, (uint16_t)(ip_hl(d) + l4_hl(d)), gso, (uint16_t)ip_hl(d), d->udp ? 6 : 16);
    return FT_VNET_HDR_SIZE + len;
}

/* Segment i of the super-packet d split at gso bytes, as it should come out. */
static size_t build_segment(const pdesc *d, uint16_t gso, uint32_t i, uint8_t *ip)
{
    pdesc s = *d;
    uint32_t nseg = (d->pay_len + gso - 1) / gso;
    s.pay_off = d->pay_off + i * gso;
    s.pay_len = d->pay_len - i * gso < gso ? d->pay_len - i * gso : gso;
    s.seq = d->seq + i * gso;
    s.id = (uint16_t)(d->id + i);
    if (i + 1 < nseg)
        s.flags &= (uint8_t)~0x09; /* FIN, PSH */
    if (i > 0)
        s.flags &= (uint8_t)~0x80; /* CWR */
    s.partial = 0;
    return build_ip(&s, ip);
}

/* ---- batches ---------------------------------------------------------------------------------------- */

#define GUARD 64

typedef struct tbatch {
    ft_batch b;
    size_t cap;
} tbatch;

static void tb_init(tbatch *t, uint32_t max, size_t cap)
{
    memset(t, 0, sizeof(*t));
    t->b.data = malloc(cap + GUARD);
    memset(t->b.data, 0xa5, cap + GUARD);
    t->b.cap = cap;
    t->b.offsets = calloc(max + 1, sizeof(uint32_t));
    t->b.lengths = calloc(max + 1, sizeof(uint32_t));
    t->b.offsets[max] = t->b.lengths[max] = 0xdeadbeef;
    t->b.max = max;
    t->cap = cap;
}

static int tb_guard_ok(const tbatch *t)
{
    for (size_t i = 0; i < GUARD; i++)
        if (t->b.data[t->cap + i] != 0xa5)
            return 0;
    return t->b.offsets[t->b.max] == 0xdeadbeef && t->b.lengths[t->b.max] == 0xdeadbeef;
}

static void tb_reset(tbatch *t) { t->b.count = 0, t->b.used = 0; }

static void tb_free(tbatch *t)
{
    free(t->b.data);
    free(t->b.offsets);
    free(t->b.lengths);
}

static const uint8_t *tb_pkt(const tbatch *t, uint32_t i) { return t->b.data + t->b.offsets[i]; }

/* Split into a fresh copy of exactly len bytes, so ASan sees any read past the end. */
static int split_exact(const uint8_t *pkt, size_t len, ft_batch *out, ft_err *e)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, pkt, len);
    int r = ft_offload_split(copy, len, out, e);
    free(copy);
    return r;
}

/* ---- tests: basics ---------------------------------------------------------------------------------- */

static void test_vnet_header_layout(void)
{
    ft_vnet_hdr h = {1, 0x81, 0x1234, 1448, 20, 16}, back;
    uint8_t raw[FT_VNET_HDR_SIZE], expect[FT_VNET_HDR_SIZE];
    ft_vnet_hdr_encode(&h, raw);
    put_vnet(expect, 1, 0x81, 0x1234, 1448, 20, 16);
    CHECK(memcmp(raw, expect, FT_VNET_HDR_SIZE) == 0);
    ft_vnet_hdr_decode(raw, &back);
    CHECK(back.flags == 1 && back.gso_type == 0x81 && back.hdr_len == 0x1234 && back.gso_size == 1448 &&
          back.csum_start == 20 && back.csum_offset == 16);
}

static void test_checksum_matches_reference(void)
{
    static uint8_t buf[2100];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131u + (i >> 3) * 7u);
    int bad = 0;
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len < 300; len++)
            for (uint32_t init = 0; init <= 0xffff; init += 0x7fff)
                if (ft_csum_sum(buf + off, len, (uint16_t)init) != ref_fold(ref_add(init, buf + off, len)) &&
                    !(len == 0 && init == 0)) /* 0 and 0xffff are both "zero"; only the all-zero sum may differ */
                    bad++;
    CHECK(bad == 0);
    CHECK(ft_csum_sum(buf, 2048, 0) == ref_fold(ref_add(0, buf, 2048)));
    memset(buf, 0xff, sizeof(buf));
    CHECK(ft_csum_sum(buf, sizeof(buf), 0) == 0xffff); /* all ones: no carry lost */
    /* A 64 KiB run of 0xff bytes stresses the accumulators. */
    uint8_t *big = malloc(65536);
    memset(big, 0xff, 65536);
    CHECK(ft_csum_sum(big, 65536, 0xffff) == 0xffff);
    for (size_t i = 0; i < 65536; i++)
        big[i] = (uint8_t)(i ^ (i >> 8));
    CHECK(ft_csum_sum(big, 65535, 0x1234) == ref_fold(ref_add(0x1234, big, 65535)));
    free(big);

    uint8_t ip[60];
    pdesc d = desc(0, 0);
    d.pay_len = 0;
    build_ip(&d, ip);
    CHECK(ft_csum_pseudo(ip, 6, 1234) == ref_fold(ref_pseudo(ip, 6, 1234)));
    d.v6 = 1;
    build_ip(&d, ip);
    CHECK(ft_csum_pseudo(ip, 17, 70000) == ref_fold(ref_pseudo(ip, 17, 70000)));
}

static void test_complete_csum(void)
{
    uint8_t ip[200];
    ft_err e;
    for (int v6 = 0; v6 < 2; v6++)
        for (int udp = 0; udp < 2; udp++) {
            pdesc d = desc(v6, udp);
            d.pay_len = 101;
            d.partial = 1;
            size_t len = build_ip(&d, ip);
            CHECK(!ref_l4_ok(ip, len));
            CHECK(ft_offload_complete_csum(ip, len, (uint32_t)ip_hl(&d), udp ? 6 : 16, &e) == FT_OK);
            CHECK(ref_l4_ok(ip, len));
        }
    CHECK(ft_offload_complete_csum(ip, 40, 30, 9, &e) == FT_EPACKET && strstr(e.msg, "csum_offset"));
    CHECK(ft_offload_complete_csum(ip, 40, 40, 0, &e) == FT_EPACKET);
}

/* ---- tests: split ----------------------------------------------------------------------------------- */

typedef struct split_case {
    const char *name;
    int v6, udp;
    uint32_t payload;
    uint16_t gso;
    uint8_t flags, opt_len;
    uint32_t seq;
    uint16_t id;
    int no_needs_csum;
    int ecn;
    int hdr_len_lie; /* -1: 0; 1: the whole first segment (as forwarded packets may say) */
} split_case;

static const split_case split_cases[] = {
    {"tcp4 max size, short last", 0, 0, 65535 - 40, 1448, 0x18, 0, 1000, 7, 0, 0, 0},
    {"tcp4 exact multiple, FIN+PSH", 0, 0, 1448 * 10, 1448, 0x19, 0, 5, 7, 0, 0, 0},
    {"tcp4 timestamps, CWR+ECE, ECN", 0, 0, 20000, 1436, 0xd8, 12, 77, 100, 0, 1, 0},
    {"tcp4 sequence wraps", 0, 0, 30000, 1448, 0x10, 0, 0xfffff000u, 1, 0, 0, 0},
    {"tcp4 id wraps", 0, 0, 30000, 1448, 0x10, 0, 1, 0xfffe, 0, 0, 0},
    {"tcp4 no NEEDS_CSUM", 0, 0, 9000, 1000, 0x10, 0, 1, 1, 1, 0, 0},
    {"tcp4 hdr_len lies (forwarded)", 0, 0, 9000, 1000, 0x10, 0, 1, 1, 0, 0, 1},
    {"tcp4 hdr_len 0", 0, 0, 9000, 1000, 0x10, 0, 1, 1, 0, 0, -1},
    {"tcp4 one segment", 0, 0, 500, 1448, 0x18, 0, 9, 9, 0, 0, 0},
    {"tcp4 gso 1", 0, 0, 100, 1, 0x18, 0, 9, 9, 0, 0, 0},
    {"tcp4 odd sizes", 0, 0, 7777, 333, 0x18, 4, 9, 9, 0, 0, 0},
    {"tcp6 max size", 1, 0, 65535 - 20, 1428, 0x18, 0, 123456, 0, 0, 0, 0},
    {"tcp6 options, CWR", 1, 0, 50000, 1400, 0x90, 12, 42, 0, 0, 1, 0},
    {"tcp6 one segment", 1, 0, 1000, 1440, 0x10, 0, 42, 0, 0, 0, 0},
    {"tcp6 60-byte header", 1, 0, 3000, 999, 0x10, 40, 42, 0, 0, 0, 0},
    {"udp4 short last", 0, 1, 1400 * 20 + 17, 1400, 0, 0, 0, 500, 0, 0, 0},
    {"udp4 exact", 0, 1, 1200 * 30, 1200, 0, 0, 0, 0xffff, 0, 0, 0},
    {"udp4 odd gso", 0, 1, 5001, 333, 0, 0, 0, 3, 0, 0, 0},
    {"udp6 large", 1, 1, 64000, 1232, 0, 0, 0, 0, 0, 0, 0},
    {"udp6 one datagram", 1, 1, 300, 1232, 0, 0, 0, 0, 0, 0, 0},
    {"udp6 no NEEDS_CSUM", 1, 1, 5000, 1000, 0, 0, 0, 0, 1, 0, 0},
};
#define NCASES (sizeof(split_cases) / sizeof(split_cases[0]))

static pdesc case_desc(const split_case *c)
{
    pdesc d = desc(c->v6, c->udp);
    d.pay_len = c->payload;
    d.flags = c->udp ? 0 : c->flags;
    d.opt_len = c->opt_len;
    d.seq = c->seq;
    d.id = c->id;
    d.seed = (uint8_t)(c->payload * 13u + c->gso);
    return d;
}

static size_t case_super(const split_case *c, uint8_t *buf)
{
    pdesc d = case_desc(c);
    size_t len = build_super(&d, c->gso, buf);
    if (c->no_needs_csum) {
        buf[0] = 0;
        uint8_t *l4 = buf + FT_VNET_HDR_SIZE + ip_hl(&d);
        be16(l4 + (c->udp ? 6 : 16), 0xbeef); /* whatever was there must not matter */
    }
    if (c->ecn)
        buf[1] |= 0x80;
    if (c->hdr_len_lie) {
        uint16_t lie = c->hdr_len_lie < 0 ? 0 : (uint16_t)(ip_hl(&d) + l4_hl(&d) + c->gso);
        memcpy(buf + 2, &lie, 2);
    }
    return len;
}

/* Every segment of case c in t (from index first) is exactly what build_segment says. */
static int segments_match(const split_case *c, const tbatch *t, uint32_t first)
{
    static uint8_t expect[BIG];
    pdesc d = case_desc(c);
    uint32_t nseg = (c->payload + c->gso - 1) / c->gso;
    if (t->b.count - first != nseg) {
        fprintf(stderr, "  %s: %u segments, expected %u\n", c->name, t->b.count - first, nseg);
        return 0;
    }
    for (uint32_t i = 0; i < nseg; i++) {
        size_t len = build_segment(&d, c->gso, i, expect);
        const uint8_t *got = tb_pkt(t, first + i);
        if (t->b.lengths[first + i] != len || memcmp(got, expect, len) != 0) {
            fprintf(stderr, "  %s: segment %u differs (length %u, expected %zu)\n", c->name, i,
                    t->b.lengths[first + i], len);
            return 0;
        }
        /* Belt and braces: the checksums verify with the reference code. */
        if ((!c->v6 && !ref_ipv4_header_ok(got)) || !ref_l4_ok(got, len)) {
            fprintf(stderr, "  %s: segment %u has a bad checksum\n", c->name, i);
            return 0;
        }
    }
    return 1;
}

static void test_split_cases(void)
{
    static uint8_t super[BIG];
    tbatch t;
    tb_init(&t, 70000, 8u << 20);
    for (size_t k = 0; k < NCASES; k++) {
        const split_case *c = &split_cases[k];
        size_t len = case_super(c, super);
        ft_err e;
        tb_reset(&t);
        /* Something already in the batch stays and the segments go after it. */
        memset(t.b.data, 0x11, 100);
        t.b.offsets[0] = 0, t.b.lengths[0] = 100, t.b.count = 1, t.b.used = 100;
        int r = split_exact(super, len, &t.b, &e);
        if (r < 0)
            fprintf(stderr, "  %s: %s\n", c->name, e.msg);
        CHECK(r == (int)((c->payload + c->gso - 1) / c->gso));
        CHECK(segments_match(c, &t, 1));
        CHECK(t.b.data[99] == 0x11 && t.b.offsets[1] == 100);
        size_t sum = 100;
        for (uint32_t i = 1; i < t.b.count; i++)
            sum += t.b.lengths[i];
        CHECK(sum == t.b.used);
        CHECK(tb_guard_ok(&t));
    }
    tb_free(&t);
}

static void test_split_plain_packets(void)
{
    uint8_t buf[2000], ip[2000];
    tbatch t;
    ft_err e;
    tb_init(&t, 8, 1 << 16);
    for (int v6 = 0; v6 < 2; v6++)
        for (int udp = 0; udp < 2; udp++) {
            pdesc d = desc(v6, udp);
            d.pay_len = 777;
            size_t len = build_ip(&d, ip);
            /* No offload asked: the packet as it is. */
            put_vnet(buf, 0, 0, 0, 0, 0, 0);
            memcpy(buf + 10, ip, len);
            tb_reset(&t);
            CHECK(split_exact(buf, len + 10, &t.b, &e) == 1);
            CHECK(t.b.lengths[0] == len && memcmp(tb_pkt(&t, 0), ip, len) == 0);
            /* NEEDS_CSUM: the partial sum is completed into the same packet. */
            d.partial = 1;
            build_ip(&d, buf + 10);
            put_vnet(buf, 1, 0, 0, 0, (uint16_t)ip_hl(&d), udp ? 6 : 16);
            tb_reset(&t);
            CHECK(split_exact(buf, len + 10, &t.b, &e) == 1);
            CHECK(t.b.lengths[0] == len && memcmp(tb_pkt(&t, 0), ip, len) == 0);
            CHECK(ref_l4_ok(tb_pkt(&t, 0), len));
        }
    /* An ICMP echo (nothing to do) passes as it is. */
    uint8_t icmp[28] = {0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 8, 0, 0xf7, 0xfe, 0, 1, 0, 0};
    put_vnet(buf, 0, 0, 0, 0, 0, 0);
    memcpy(buf + 10, icmp, 28);
    tb_reset(&t);
    CHECK(split_exact(buf, 38, &t.b, &e) == 1 && memcmp(tb_pkt(&t, 0), icmp, 28) == 0);
    CHECK(tb_guard_ok(&t));
    tb_free(&t);
}

static void test_split_room(void)
{
    static uint8_t super[BIG];
    pdesc d = desc(0, 0);
    d.pay_len = 1448 * 10;
    size_t len = build_super(&d, 1448, super);
    tbatch t;
    ft_err e;
    /* Exactly enough room: 10 packets of 1488 bytes. */
    tb_init(&t, 10, 14880);
    CHECK(split_exact(super, len, &t.b, &e) == 10 && t.b.used == 14880);
    CHECK(tb_guard_ok(&t));
    /* A batch with something in it and too few slots: FT_EAGAIN, nothing appended. */
    t.b.count = 1, t.b.used = 100;
    CHECK(split_exact(super, len, &t.b, &e) == FT_EAGAIN && strstr(e.msg, "deliver"));
    CHECK(t.b.count == 1 && t.b.used == 100);
    tb_free(&t);
    /* Enough slots, too few bytes left: FT_EAGAIN as well. */
    tb_init(&t, 64, 20000);
    t.b.count = 1, t.b.used = 6000;
    CHECK(split_exact(super, len, &t.b, &e) == FT_EAGAIN && t.b.count == 1 && t.b.used == 6000);
    tb_reset(&t);
    CHECK(split_exact(super, len, &t.b, &e) == 10);
    CHECK(tb_guard_ok(&t));
    tb_free(&t);
    /* Even an empty batch is too small: the packet can never be delivered, FT_EPACKET. */
    tb_init(&t, 9, 1 << 20);
    CHECK(split_exact(super, len, &t.b, &e) == FT_EPACKET && strstr(e.msg, "empty batch"));
    t.b.count = 3, t.b.used = 300;
    CHECK(split_exact(super, len, &t.b, &e) == FT_EPACKET && t.b.count == 3 && t.b.used == 300);
    tb_free(&t);
    /* Absurd segment counts: gso_size 1 over 64 KiB into a 128-packet batch. */
    d.pay_len = 65535 - 40;
    len = build_super(&d, 1, super);
    tb_init(&t, 128, 1 << 20);
    CHECK(split_exact(super, len, &t.b, &e) == FT_EPACKET && t.b.count == 0);
    CHECK(tb_guard_ok(&t));
    tb_free(&t);
    /* Bad arguments. */
    CHECK(ft_offload_split(NULL, 10, NULL, &e) == FT_EINVAL);
}

/* ---- tests: malformed input ------------------------------------------------------------------------- */

typedef struct bad_case {
    const char *name;
    int v6, udp;
    void (*mutate)(uint8_t *buf, size_t *len);
    const char *msg; /* a word the message must contain */
} bad_case;

static void m_len0(uint8_t *b, size_t *n) { (void)b, *n = 0; }
static void m_len9(uint8_t *b, size_t *n) { (void)b, *n = 9; }
static void m_len10(uint8_t *b, size_t *n) { (void)b, *n = 10; }
static void m_trunc_ip4(uint8_t *b, size_t *n) { (void)b, *n = 10 + 19; }
static void m_trunc_tcp(uint8_t *b, size_t *n) { be16(b + 12, 30), *n = 10 + 30; }
static void m_trunc_udp(uint8_t *b, size_t *n) { be16(b + 12, 24), *n = 10 + 24; }
static void m_trunc_ip6(uint8_t *b, size_t *n) { (void)b, *n = 10 + 39; }
static void m_trunc_tcp6(uint8_t *b, size_t *n) { be16(b + 14, 10), *n = 10 + 50; }
static void m_ihl6(uint8_t *b, size_t *n) { (void)n, b[10] = 0x46; }
static void m_ihl4(uint8_t *b, size_t *n) { (void)n, b[10] = 0x44; }
static void m_ihl15(uint8_t *b, size_t *n) { (void)n, b[10] = 0x4f; }
static void m_total_plus(uint8_t *b, size_t *n) { be16(b + 12, (uint32_t)(*n - 10 + 1)); }
static void m_total_minus(uint8_t *b, size_t *n) { be16(b + 12, (uint32_t)(*n - 10 - 1)); }
static void m_buffer_short(uint8_t *b, size_t *n) { (void)b, *n -= 1; }
static void m_frag_mf(uint8_t *b, size_t *n) { (void)n, b[16] |= 0x20; }
static void m_frag_off(uint8_t *b, size_t *n) { (void)n, b[17] = 1; }
static void m_v6_hbh(uint8_t *b, size_t *n) { (void)n, b[16] = 0; }
static void m_v6_frag(uint8_t *b, size_t *n) { (void)n, b[16] = 44; }
static void m_v6_plen(uint8_t *b, size_t *n) { be16(b + 14, (uint32_t)(*n - 50 + 1)); }
static void m_doff4(uint8_t *b, size_t *n) { (void)n, b[10 + 20 + 12] = 0x40; }
static void m_doff0(uint8_t *b, size_t *n) { (void)n, b[10 + 20 + 12] = 0x00; }
static void m_doff15_short(uint8_t *b, size_t *n) { b[10 + 20 + 12] = 0xf0, be16(b + 12, 20 + 50), *n = 10 + 70; }
static void m_gso0(uint8_t *b, size_t *n) { (void)n, memset(b + 4, 0, 2); }
static void m_cstart_past(uint8_t *b, size_t *n) { uint16_t v = (uint16_t)(*n - 10); memcpy(b + 6, &v, 2); }
static void m_coff_past(uint8_t *b, size_t *n) { uint16_t v = (uint16_t)(*n - 10 - 20 - 1); memcpy(b + 8, &v, 2); }
static void m_cmax(uint8_t *b, size_t *n) { (void)n, memset(b + 6, 0xff, 4); }
static void m_hdrlen_past(uint8_t *b, size_t *n) { uint16_t v = (uint16_t)(*n - 10 + 1); memcpy(b + 2, &v, 2); }
static void m_type_tcp6(uint8_t *b, size_t *n) { (void)n, b[1] = 4; }
static void m_type_tcp4(uint8_t *b, size_t *n) { (void)n, b[1] = 1; }
static void m_type_udpl4(uint8_t *b, size_t *n) { (void)n, b[1] = 5; }
static void m_type_ufo(uint8_t *b, size_t *n) { (void)n, b[1] = 3; }
static void m_type_7(uint8_t *b, size_t *n) { (void)n, b[1] = 7; }
static void m_type_ecn_udp(uint8_t *b, size_t *n) { (void)n, b[1] = 0x85; }
static void m_type_ecn_none(uint8_t *b, size_t *n) { (void)n, b[1] = 0x80, b[0] = 0; }
static void m_version5(uint8_t *b, size_t *n) { (void)n, b[10] = 0x55; }
static void m_no_payload(uint8_t *b, size_t *n) { be16(b + 12, 40), *n = 10 + 40; }
static void m_none_garbage(uint8_t *b, size_t *n) { (void)n, b[1] = 0, b[10] = 0x00; }
static void m_none_cstart_in_ip(uint8_t *b, size_t *n) { uint16_t v = 4; (void)n, b[1] = 0, memcpy(b + 6, &v, 2); }
static void m_none_coff_past(uint8_t *b, size_t *n) { uint16_t v = 0xfff0; (void)n, b[1] = 0, memcpy(b + 8, &v, 2); }

static const bad_case bad_cases[] = {
    {"empty read", 0, 0, m_len0, "virtio-net header"},
    {"9 bytes", 0, 0, m_len9, "virtio-net header"},
    {"header only", 0, 0, m_len10, "version 0"},
    {"IPv4 shorter than its header", 0, 0, m_trunc_ip4, "shorter than an IPv4 header"},
    {"TCP header cut short", 0, 0, m_trunc_tcp, "too short for its TCP header"},
    {"UDP header cut short", 0, 1, m_trunc_udp, "too short for its UDP header"},
    {"IPv6 shorter than its header", 1, 0, m_trunc_ip6, "shorter than an IPv6 header"},
    {"IPv6 TCP header cut short", 1, 0, m_trunc_tcp6, "TCP header"},
    {"IPv4 options", 0, 0, m_ihl6, "options"},
    {"IPv4 IHL 4", 0, 0, m_ihl4, "options"},
    {"IPv4 IHL 15", 0, 0, m_ihl15, "options"},
    {"total length too big", 0, 0, m_total_plus, "total length"},
    {"total length too small", 0, 0, m_total_minus, "total length"},
    {"buffer shorter than total length", 0, 0, m_buffer_short, "total length"},
    {"IPv4 fragment (MF)", 0, 0, m_frag_mf, "fragment"},
    {"IPv4 fragment (offset)", 0, 0, m_frag_off, "fragment"},
    {"IPv6 hop-by-hop header", 1, 0, m_v6_hbh, "extension headers"},
    {"IPv6 fragment header", 1, 1, m_v6_frag, "extension headers"},
    {"IPv6 payload length lies", 1, 0, m_v6_plen, "payload length"},
    {"IPv6 buffer short", 1, 0, m_buffer_short, "payload length"},
    {"TCP data offset 4", 0, 0, m_doff4, "data offset"},
    {"TCP data offset 0", 0, 0, m_doff0, "data offset"},
    {"TCP data offset beyond packet", 0, 0, m_doff15_short, "data offset"},
    {"gso_size 0", 0, 0, m_gso0, "gso_size"},
    {"gso_size 0 udp", 1, 1, m_gso0, "gso_size"},
    {"csum_start past end", 0, 0, m_cstart_past, "csum_start"},
    {"csum_offset past end", 0, 0, m_coff_past, "csum_offset"},
    {"csum fields 0xffff", 1, 1, m_cmax, "csum_start"},
    {"hdr_len past end", 0, 0, m_hdrlen_past, "hdr_len"},
    {"TCPV6 on IPv4", 0, 0, m_type_tcp6, "TCPV6"},
    {"TCPV4 on IPv6", 1, 0, m_type_tcp4, "TCPV4"},
    {"TCPV4 on UDP", 0, 1, m_type_tcp4, "needs TCP"},
    {"UDP_L4 on TCP", 0, 0, m_type_udpl4, "needs UDP"},
    {"UFO", 0, 1, m_type_ufo, "UFO"},
    {"unknown gso_type", 0, 0, m_type_7, "unknown gso_type"},
    {"ECN on UDP_L4", 0, 1, m_type_ecn_udp, "ECN"},
    {"ECN on NONE", 0, 0, m_type_ecn_none, "ECN"},
    {"IP version 5", 0, 0, m_version5, "version 5"},
    {"no payload", 0, 0, m_no_payload, "no payload"},
    {"NONE, not IP", 0, 0, m_none_garbage, "version 0"},
    {"NONE, csum_start in IP header", 0, 0, m_none_cstart_in_ip, "IP header"},
    {"NONE, csum_offset past end", 0, 0, m_none_coff_past, "csum_offset"},
};

static void test_split_rejects_malformed(void)
{
    static uint8_t buf[BIG];
    tbatch t;
    tb_init(&t, 256, 1 << 20);
    for (size_t k = 0; k < sizeof(bad_cases) / sizeof(bad_cases[0]); k++) {
        const bad_case *c = &bad_cases[k];
        pdesc d = desc(c->v6, c->udp);
        d.pay_len = 5000;
        size_t len = build_super(&d, 1000, buf);
        c->mutate(buf, &len);
        ft_err e;
        memset(&e, 0, sizeof(e));
        t.b.count = 2, t.b.used = 10;
        int r = split_exact(buf, len, &t.b, &e);
        int ok = r == FT_EPACKET && strstr(e.msg, c->msg) != NULL && t.b.count == 2 && t.b.used == 10;
        if (!ok)
            fprintf(stderr, "  malformed case \"%s\": r=%d msg=\"%s\"\n", c->name, r, e.msg);
        CHECK(ok);
    }
    CHECK(tb_guard_ok(&t));
    tb_free(&t);
}

/* Random corruption of valid super-packets: anything may be refused, nothing may crash or overrun, and
 * whatever is accepted comes out as well-formed packets. */
static void test_split_survives_corruption(void)
{
    static uint8_t buf[BIG];
    tbatch t;
    tb_init(&t, 4096, 4u << 20);
    uint32_t rng = 12345, accepted = 0, bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        const split_case *c = &split_cases[iter % NCASES];
        pdesc d = case_desc(c);
        d.pay_len = d.pay_len % 3000 + 1;
        size_t len = build_super(&d, c->gso, buf);
        int flips = 1 + iter % 4;
        for (int f = 0; f < flips; f++) {
            rng = rng * 1103515245u + 12345u;
            size_t at = (rng >> 8) % (len < 80 ? len : 80);
            buf[at] ^= (uint8_t)(1u << ((rng >> 4) & 7));
        }
        if (iter % 7 == 0)
            len -= (rng >> 16) % len;
        ft_err e;
        tb_reset(&t);
        int r = split_exact(buf, len, &t.b, &e);
        if (r > 0) {
            accepted++;
            for (uint32_t i = 0; i < t.b.count; i++)
                if (ft_packet_check(tb_pkt(&t, i), t.b.lengths[i], FT_MAX_PACKET, &e) != FT_OK)
                    bad++;
        } else if (r != FT_EPACKET) {
            bad++;
        }
    }
    CHECK(bad == 0);
    CHECK(accepted > 100);
    CHECK(tb_guard_ok(&t));
    tb_free(&t);
}

/* ---- tests: coalesce -------------------------------------------------------------------------------- */

typedef struct coal {
    uint8_t *buf;
    size_t cap;
    ft_pkt out[4096];
    uint32_t segs[4096];
    int n;
} coal;

/* Coalesces in[0..n) into c (partial: which packets carry a partial checksum, or NULL) with a guard after the
 * buffer; returns the unit count, -100 if the guard was overwritten. */
static int run_coalesce_ex(coal *c, const ft_pkt *in, const uint8_t *partial, uint32_t n, uint32_t allow)
{
    ft_err e;
    c->cap = ft_offload_coalesce_bound(in, n);
    c->buf = realloc(c->buf, c->cap + GUARD);
    memset(c->buf + c->cap, 0x5a, GUARD);
    c->n = partial ? ft_offload_coalesce_ex(in, partial, n, allow, c->buf, c->cap, c->out, c->segs, 4096, &e)
                   : ft_offload_coalesce(in, n, allow, c->buf, c->cap, c->out, c->segs, 4096, &e);
    for (size_t i = 0; i < GUARD; i++)
        if (c->buf[c->cap + i] != 0x5a)
            return -100;
    if (c->n < 0)
        fprintf(stderr, "  coalesce: %s\n", e.msg);
    return c->n;
}

static int run_coalesce(coal *c, const ft_pkt *in, uint32_t n, uint32_t allow)
{
    return run_coalesce_ex(c, in, NULL, n, allow);
}

/* Splits every unit of c into t, in order. */
static int split_units(const coal *c, tbatch *t)
{
    tb_reset(t);
    for (int i = 0; i < c->n; i++) {
        ft_err e;
        int r = ft_offload_split(c->out[i].data, c->out[i].len, &t->b, &e);
        if (r != (int)c->segs[i]) {
            fprintf(stderr, "  unit %d: split gave %d (%s), expected %u packets\n", i, r, r < 0 ? e.msg : "",
                    c->segs[i]);
            return 0;
        }
    }
    return 1;
}

static int batches_equal(const tbatch *a, const tbatch *b)
{
    if (a->b.count != b->b.count)
        return 0;
    for (uint32_t i = 0; i < a->b.count; i++)
        if (a->b.lengths[i] != b->b.lengths[i] || memcmp(tb_pkt(a, i), tb_pkt(b, i), a->b.lengths[i]) != 0)
            return 0;
    return 1;
}

static uint32_t batch_as_pkts(const tbatch *t, ft_pkt *p)
{
    for (uint32_t i = 0; i < t->b.count; i++)
        p[i].data = tb_pkt(t, i), p[i].len = t->b.lengths[i];
    return t->b.count;
}

static void test_round_trip_split_coalesce_split(void)
{
    static uint8_t super[BIG];
    static ft_pkt pkts[70000];
    tbatch first, again;
    coal c;
    memset(&c, 0, sizeof(c));
    tb_init(&first, 70000, 8u << 20);
    tb_init(&again, 70000, 8u << 20);
    for (size_t k = 0; k < NCASES; k++) {
        const split_case *sc = &split_cases[k];
        if (sc->gso < 100)
            continue; /* more segments than one coalesce window: covered below */
        size_t len = case_super(sc, super);
        ft_err e;
        tb_reset(&first);
        CHECK(split_exact(super, len, &first.b, &e) > 0);
        uint32_t n = batch_as_pkts(&first, pkts);
        CHECK(run_coalesce(&c, pkts, n, FT_COALESCE_TCP | FT_COALESCE_UDP) > 0);
        int cwr = !sc->udp && (sc->flags & 0x80);
        /* One unit (a CWR first segment is not merged: it goes alone ahead of the rest). */
        /* An IPv6 super-packet may exceed 65535 bytes; ours never do. */
        int too_long = len - FT_VNET_HDR_SIZE > 65535;
        int want_units = n == 1 ? 1 : 1 + cwr + too_long;
        if (want_units > 0 && c.n != want_units)
            fprintf(stderr, "  %s: %d units, expected %d\n", sc->name, c.n, want_units);
        CHECK(want_units < 0 || c.n == want_units);
        CHECK(split_units(&c, &again));
        CHECK(batches_equal(&first, &again));
        /* The unit is the super-packet the kernel would have given us (when the kernel's was honest). */
        if (c.n == 1 && n > 1 && !sc->no_needs_csum && !sc->ecn && !sc->hdr_len_lie) {
            CHECK(c.out[0].len == len && memcmp(c.out[0].data, super, len) == 0);
        }
        if (n == 1) {
            uint8_t zero[FT_VNET_HDR_SIZE] = {0};
            CHECK(c.segs[0] == 1 && memcmp(c.out[0].data, zero, FT_VNET_HDR_SIZE) == 0);
        }
    }
    /* A long run of one flow: windows of FT_COALESCE_WINDOW packets, super-packets of at most 65535 bytes. */
    for (int udp = 0; udp < 2; udp++) {
        pdesc d = desc(0, udp);
        tb_reset(&first);
        uint8_t *o = first.b.data;
        uint32_t nseg = 300;
        uint16_t mss = udp ? 1000 : 1448;
        for (uint32_t i = 0; i < nseg; i++) {
            pdesc s = d;
            s.pay_len = mss;
            s.pay_off = i * mss;
            s.seq = d.seq + i * mss;
            s.id = (uint16_t)(d.id + i);
            size_t len = build_ip(&s, o + first.b.used);
            first.b.offsets[i] = (uint32_t)first.b.used;
            first.b.lengths[i] = (uint32_t)len;
            first.b.used += len;
            first.b.count++;
        }
        uint32_t n = batch_as_pkts(&first, pkts);
        int units = run_coalesce(&c, pkts, n, FT_COALESCE_TCP | FT_COALESCE_UDP);
        CHECK(units > 1);
        int too_big = 0, too_many = 0;
        for (int i = 0; i < units; i++) {
            if (c.out[i].len - FT_VNET_HDR_SIZE > 65535)
                too_big++;
            if (c.segs[i] > (udp ? FT_COALESCE_UDP_MAX_SEGS : FT_COALESCE_WINDOW))
                too_many++;
        }
        CHECK(too_big == 0 && too_many == 0);
        /* TCP: 45 segments of 1448 fill 65200 bytes; windows of 128 -> 45,45,38 | 45,45,38 | 44. */
        if (!udp)
            CHECK(units == 7 && c.segs[0] == 45 && c.segs[2] == 38 && c.segs[6] == 44);
        else
            CHECK(units == 5 && c.segs[0] == 64 && c.segs[3] == 64 && c.segs[4] == 44); /* 128 | 128 | 44 */
        CHECK(split_units(&c, &again));
        CHECK(batches_equal(&first, &again));
    }
    free(c.buf);
    tb_free(&first);
    tb_free(&again);
}

/* Segments i..j of flow d (TCP or UDP) appended to t. */
static void add_segments(tbatch *t, const pdesc *d, uint16_t mss, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++) {
        size_t len = build_segment(d, mss, i, t->b.data + t->b.used);
        t->b.offsets[t->b.count] = (uint32_t)t->b.used;
        t->b.lengths[t->b.count] = (uint32_t)len;
        t->b.used += len;
        t->b.count++;
    }
}

static void add_packet(tbatch *t, const uint8_t *p, size_t len)
{
    memcpy(t->b.data + t->b.used, p, len);
    t->b.offsets[t->b.count] = (uint32_t)t->b.used;
    t->b.lengths[t->b.count] = (uint32_t)len;
    t->b.used += len;
    t->b.count++;
}

static int unit_is_packet(const coal *c, int u, const uint8_t *p, size_t len)
{
    static const uint8_t zero[FT_VNET_HDR_SIZE] = {0};
    return u < c->n && c->segs[u] == 1 && c->out[u].len == len + FT_VNET_HDR_SIZE &&
           memcmp(c->out[u].data, zero, FT_VNET_HDR_SIZE) == 0 &&
           memcmp(c->out[u].data + FT_VNET_HDR_SIZE, p, len) == 0;
}

static void test_coalesce_interleaved_flows_keep_order(void)
{
    tbatch in, got, expect;
    coal c;
    memset(&c, 0, sizeof(c));
    tb_init(&in, 256, 1 << 20);
    tb_init(&got, 256, 1 << 20);
    tb_init(&expect, 256, 1 << 20);
    pdesc a = desc(0, 0), b = desc(1, 0), u = desc(0, 1), a2 = desc(0, 0);
    a.pay_len = 1448 * 8;
    b.pay_len = 1400 * 8 - 100;
    b.seed = 9;
    u.pay_len = 1200 * 8 - 7;
    u.seed = 11;
    a2.pay_len = 1448 * 8;
    a2.sport = 40001; /* same addresses, another port: another flow */
    a2.seed = 13;
    for (uint32_t i = 0; i < 8; i++) {
        add_segments(&in, &a, 1448, i, i + 1);
        add_segments(&in, &b, 1400, i, i + 1);
        add_segments(&in, &u, 1200, i, i + 1);
        add_segments(&in, &a2, 1448, i, i + 1);
    }
    ft_pkt pkts[256];
    uint32_t n = batch_as_pkts(&in, pkts);
    CHECK(run_coalesce(&c, pkts, n, FT_COALESCE_TCP | FT_COALESCE_UDP) == 4);
    CHECK(c.segs[0] == 8 && c.segs[1] == 8 && c.segs[2] == 8 && c.segs[3] == 8);
    CHECK(split_units(&c, &got));
    /* Flow by flow, in the order the flows first appeared, each in its own order. */
    add_segments(&expect, &a, 1448, 0, 8);
    add_segments(&expect, &b, 1400, 0, 8);
    add_segments(&expect, &u, 1200, 0, 8);
    add_segments(&expect, &a2, 1448, 0, 8);
    CHECK(batches_equal(&got, &expect));
    /* UDP not allowed: its datagrams go out one by one, still in their order relative to each other. */
    CHECK(run_coalesce(&c, pkts, n, FT_COALESCE_TCP) == 3 + 8);
    CHECK(split_units(&c, &got));
    uint32_t next_u = 0, order_ok = 1;
    for (int i = 0; i < c.n; i++) {
        if (c.segs[i] != 1)
            continue;
        uint8_t seg[2000];
        size_t len = build_segment(&u, 1200, next_u++, seg);
        if (!unit_is_packet(&c, i, seg, len))
            order_ok = 0;
    }
    CHECK(order_ok && next_u == 8);
    /* Nothing allowed: every packet unchanged, in the input order. */
    CHECK(run_coalesce(&c, pkts, n, 0) == (int)n);
    int same = 1;
    for (uint32_t i = 0; i < n; i++)
        same &= unit_is_packet(&c, (int)i, pkts[i].data, pkts[i].len);
    CHECK(same);
    tb_free(&in);
    tb_free(&got);
    tb_free(&expect);
    free(c.buf);
}

/* A packet of the flow that cannot be merged splits the flow's run in two around it. */
static void test_coalesce_barriers(void)
{
    tbatch in;
    coal c;
    memset(&c, 0, sizeof(c));
    tb_init(&in, 64, 1 << 20);
    ft_pkt pkts[64];
    uint8_t odd[2000];
    for (int kind = 0; kind < 4; kind++) {
        pdesc d = desc(kind == 1 || kind == 3, kind >= 2);
        d.pay_len = 1000 * 4;
        tb_reset(&in);
        add_segments(&in, &d, 1000, 0, 2);
        pdesc o = d;
        o.pay_len = 10;
        size_t len;
        if (kind == 0) { /* an RST of the same flow */
            o.flags = 0x14;
            len = build_ip(&o, odd);
        } else if (kind == 1) { /* the same addresses behind a hop-by-hop header: the flow is unknown */
            o.v6_hop_by_hop = 1;
            len = build_ip(&o, odd);
        } else if (kind == 2) { /* an IPv4 fragment of the addresses: no ports */
            len = build_ip(&o, odd);
            odd[6] = 0x00, odd[7] = 0x10; /* offset 128 bytes */
            ref_set_ipv4_csum(odd);
        } else { /* a datagram of the flow with a bad checksum */
            len = build_ip(&o, odd);
            odd[len - 1] ^= 1;
        }
        add_packet(&in, odd, len);
        add_segments(&in, &d, 1000, 2, 4);
        uint32_t n = batch_as_pkts(&in, pkts);
        CHECK(run_coalesce(&c, pkts, n, FT_COALESCE_TCP | FT_COALESCE_UDP) == 3);
        CHECK(c.segs[0] == 2 && unit_is_packet(&c, 1, odd, len) && c.segs[2] == 2);
    }
    /* ICMP between segments is no barrier. */
    {
        pdesc d = desc(0, 0);
        d.pay_len = 1000 * 4;
        tb_reset(&in);
        add_segments(&in, &d, 1000, 0, 2);
        uint8_t icmp[28] = {0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 8, 0, 0xf7, 0xfe, 0, 1, 0, 0};
        add_packet(&in, icmp, 28);
        add_segments(&in, &d, 1000, 2, 4);
        uint32_t n = batch_as_pkts(&in, pkts);
        CHECK(run_coalesce(&c, pkts, n, FT_COALESCE_TCP) == 2);
        CHECK(c.segs[0] == 4 && unit_is_packet(&c, 1, icmp, 28));
    }
    tb_free(&in);
    free(c.buf);
}

/* Two segments that must not be merged: the second differs from a proper next segment in one way. */
typedef struct pair_case {
    const char *name;
    int v6, udp;
    void (*second)(pdesc *d);       /* change the description of the second packet */
    void (*corrupt)(uint8_t *p, size_t len);  /* or its bytes, after building */
    void (*first)(pdesc *d);        /* or the first packet */
    uint32_t allow;
} pair_case;

static void s_syn(pdesc *d) { d->flags = 0x12; }
static void s_urg(pdesc *d) { d->flags = 0x30; }
static void s_cwr(pdesc *d) { d->flags = 0x90; }
static void s_ece(pdesc *d) { d->flags = 0x50; }
static void s_noack(pdesc *d) { d->flags = 0x00; }
static void s_ack(pdesc *d) { d->ack += 1; }
static void s_window(pdesc *d) { d->window += 1; }
static void s_ttl(pdesc *d) { d->ttl -= 1; }
static void s_tos(pdesc *d) { d->tos ^= 4; }
static void s_seq(pdesc *d) { d->seq += 1; }
static void s_id(pdesc *d) { d->id += 5; }
static void s_options(pdesc *d) { d->opt_len = 4; }
static void s_bigger(pdesc *d) { d->pay_len += 1; }
static void s_empty(pdesc *d) { d->pay_len = 0; }
static void f_empty(pdesc *d) { d->pay_len = 0; }
static void f_psh(pdesc *d) { d->flags |= 0x08; }
static void f_fin(pdesc *d) { d->flags |= 0x01; }
static void f_shorter(pdesc *d) { d->pay_len -= 1; }
static void both_ipopt(pdesc *d) { d->ip_options = 1; }
static void both_hbh(pdesc *d) { d->v6_hop_by_hop = 1; }
static void c_tcp_csum(uint8_t *p, size_t len) { (void)len, p[(p[0] >> 4) == 6 ? 56 : 36] ^= 1; }
static void c_udp_csum(uint8_t *p, size_t len) { (void)len, p[(p[0] >> 4) == 6 ? 46 : 26] ^= 1; }
static void c_ip_csum(uint8_t *p, size_t len) { (void)len, p[10] ^= 1; }
static void c_payload(uint8_t *p, size_t len) { p[len - 1] ^= 0x40; }
static void c_udp_nocsum(uint8_t *p, size_t len) { (void)len, p[26] = 0, p[27] = 0; }
static void c_udp_len(uint8_t *p, size_t len) { (void)len, p[25] ^= 1, ref_set_l4_csum(p, len, 20, 17); }
static void c_ipv4_mf(uint8_t *p, size_t len) { (void)len, p[6] |= 0x20, ref_set_ipv4_csum(p); }
static void c_ipv4_evil(uint8_t *p, size_t len) { (void)len, p[6] |= 0x80, ref_set_ipv4_csum(p); }
static void c_total_len(uint8_t *p, size_t len) { (void)len, be16(p + 2, rd16(p + 2) - 1), ref_set_ipv4_csum(p); }
static void c_v6_flow(uint8_t *p, size_t len) { (void)len, p[3] ^= 1; }
static void c_v6_plen(uint8_t *p, size_t len) { (void)len, be16(p + 4, rd16(p + 4) + 1); }
static void c_v6_dst(uint8_t *p, size_t len) { p[39] = 3, ref_set_l4_csum(p, len, 40, p[6]); }
static void c_port(uint8_t *p, size_t len) { p[21] ^= 1, ref_set_l4_csum(p, len, 20, p[9]); }

static const pair_case pair_cases[] = {
    {"SYN", 0, 0, s_syn, NULL, NULL, FT_COALESCE_TCP},
    {"URG", 0, 0, s_urg, NULL, NULL, FT_COALESCE_TCP},
    {"CWR", 0, 0, s_cwr, NULL, NULL, FT_COALESCE_TCP},
    {"ECE mismatch", 1, 0, s_ece, NULL, NULL, FT_COALESCE_TCP},
    {"no ACK", 0, 0, s_noack, NULL, NULL, FT_COALESCE_TCP},
    {"different ack", 0, 0, s_ack, NULL, NULL, FT_COALESCE_TCP},
    {"different window", 1, 0, s_window, NULL, NULL, FT_COALESCE_TCP},
    {"different TTL", 0, 0, s_ttl, NULL, NULL, FT_COALESCE_TCP},
    {"different hop limit", 1, 0, s_ttl, NULL, NULL, FT_COALESCE_TCP},
    {"different TOS", 0, 1, s_tos, NULL, NULL, FT_COALESCE_UDP},
    {"different traffic class", 1, 0, s_tos, NULL, NULL, FT_COALESCE_TCP},
    {"different flow label", 1, 1, NULL, c_v6_flow, NULL, FT_COALESCE_UDP},
    {"sequence gap", 0, 0, s_seq, NULL, NULL, FT_COALESCE_TCP},
    {"ids not consecutive", 0, 0, s_id, NULL, NULL, FT_COALESCE_TCP},
    {"ids not consecutive udp", 0, 1, s_id, NULL, NULL, FT_COALESCE_UDP},
    {"different options", 0, 0, s_options, NULL, NULL, FT_COALESCE_TCP},
    {"second bigger", 0, 0, s_bigger, NULL, NULL, FT_COALESCE_TCP},
    {"second bigger udp", 1, 1, s_bigger, NULL, NULL, FT_COALESCE_UDP},
    {"pure ACKs", 0, 0, s_empty, NULL, f_empty, FT_COALESCE_TCP},
    {"empty datagrams", 0, 1, s_empty, NULL, f_empty, FT_COALESCE_UDP},
    {"first has PSH", 0, 0, NULL, NULL, f_psh, FT_COALESCE_TCP},
    {"first has FIN", 1, 0, NULL, NULL, f_fin, FT_COALESCE_TCP},
    {"first shorter", 0, 0, NULL, NULL, f_shorter, FT_COALESCE_TCP},
    {"first shorter udp", 0, 1, NULL, NULL, f_shorter, FT_COALESCE_UDP},
    {"IPv4 options", 0, 0, both_ipopt, NULL, both_ipopt, FT_COALESCE_TCP},
    {"IPv6 extension headers", 1, 0, both_hbh, NULL, both_hbh, FT_COALESCE_TCP},
    {"IPv6 extension headers udp", 1, 1, both_hbh, NULL, both_hbh, FT_COALESCE_UDP},
    {"bad TCP checksum", 0, 0, NULL, c_tcp_csum, NULL, FT_COALESCE_TCP},
    {"bad TCP checksum v6", 1, 0, NULL, c_tcp_csum, NULL, FT_COALESCE_TCP},
    {"bad UDP checksum", 0, 1, NULL, c_udp_csum, NULL, FT_COALESCE_UDP},
    {"bad payload", 1, 1, NULL, c_payload, NULL, FT_COALESCE_UDP},
    {"bad IPv4 header checksum", 0, 0, NULL, c_ip_csum, NULL, FT_COALESCE_TCP},
    {"UDP without checksum", 0, 1, NULL, c_udp_nocsum, NULL, FT_COALESCE_UDP},
    {"UDP length lies", 0, 1, NULL, c_udp_len, NULL, FT_COALESCE_UDP},
    {"IPv4 MF", 0, 0, NULL, c_ipv4_mf, NULL, FT_COALESCE_TCP},
    {"IPv4 reserved flag differs", 0, 0, NULL, c_ipv4_evil, NULL, FT_COALESCE_TCP},
    {"IPv4 total length lies", 0, 0, NULL, c_total_len, NULL, FT_COALESCE_TCP},
    {"IPv6 payload length lies", 1, 0, NULL, c_v6_plen, NULL, FT_COALESCE_TCP},
    {"other destination", 1, 0, NULL, c_v6_dst, NULL, FT_COALESCE_TCP},
    {"other port", 0, 1, NULL, c_port, NULL, FT_COALESCE_UDP},
    {"TCP not allowed", 0, 0, NULL, NULL, NULL, FT_COALESCE_UDP},
    {"UDP not allowed", 1, 1, NULL, NULL, NULL, FT_COALESCE_TCP},
};

static void test_coalesce_leaves_unmergeable_pairs_alone(void)
{
    coal c;
    memset(&c, 0, sizeof(c));
    uint8_t p1[3000], p2[3000];
    for (size_t k = 0; k < sizeof(pair_cases) / sizeof(pair_cases[0]); k++) {
        const pair_case *pc = &pair_cases[k];
        pdesc d = desc(pc->v6, pc->udp);
        d.pay_len = 1000;
        pdesc d1 = d, d2 = d;
        d2.pay_off = 1000;
        d2.seq = d.seq + 1000;
        d2.id = (uint16_t)(d.id + 1);
        if (pc->first)
            pc->first(&d1);
        if (pc->second)
            pc->second(&d2);
        size_t l1 = build_ip(&d1, p1), l2 = build_ip(&d2, p2);
        if (pc->corrupt)
            pc->corrupt(p2, l2);
        ft_pkt in[2] = {{p1, l1}, {p2, l2}};
        int n = run_coalesce(&c, in, 2, pc->allow);
        int ok = n == 2 && unit_is_packet(&c, 0, p1, l1) && unit_is_packet(&c, 1, p2, l2);
        if (!ok)
            fprintf(stderr, "  pair case \"%s\": %d units\n", pc->name, n);
        CHECK(ok);
    }
    /* The control: the same pair unchanged does merge, with TRUST_CSUM even a bad checksum does. */
    for (int v6 = 0; v6 < 2; v6++)
        for (int udp = 0; udp < 2; udp++) {
            pdesc d = desc(v6, udp);
            d.pay_len = 2000;
            size_t l1 = build_segment(&d, 1000, 0, p1), l2 = build_segment(&d, 1000, 1, p2);
            ft_pkt in[2] = {{p1, l1}, {p2, l2}};
            uint32_t allow = udp ? FT_COALESCE_UDP : FT_COALESCE_TCP;
            CHECK(run_coalesce(&c, in, 2, allow) == 1 && c.segs[0] == 2);
            c_payload(p2, l2);
            CHECK(run_coalesce(&c, in, 2, allow) == 2);
            CHECK(run_coalesce(&c, in, 2, allow | FT_COALESCE_TRUST_CSUM) == 1);
        }
    free(c.buf);
}

static void test_coalesce_header_fields(void)
{
    coal c;
    memset(&c, 0, sizeof(c));
    static uint8_t pk[8][1600];
    ft_pkt in[8];
    for (int v6 = 0; v6 < 2; v6++)
        for (int udp = 0; udp < 2; udp++) {
            pdesc d = desc(v6, udp);
            d.pay_len = 1300 * 7 + 55;
            d.opt_len = udp ? 0 : 12;
            d.flags = udp ? 0 : 0x18; /* PSH on the last */
            for (uint32_t i = 0; i < 8; i++)
                in[i].data = pk[i], in[i].len = build_segment(&d, 1300, i, pk[i]);
            CHECK(run_coalesce(&c, in, 8, FT_COALESCE_TCP | FT_COALESCE_UDP) == 1);
            ft_vnet_hdr h;
            ft_vnet_hdr_decode(c.out[0].data, &h);
            size_t ihl = v6 ? 40 : 20, thl = udp ? 8 : 32;
            CHECK(h.flags == FT_VNET_F_NEEDS_CSUM);
            CHECK(h.gso_type == (udp ? 5 : (v6 ? 4 : 1)));
            CHECK(h.hdr_len == ihl + thl && h.gso_size == 1300 && h.csum_start == ihl);
            CHECK(h.csum_offset == (udp ? 6 : 16));
            uint8_t *ip = (uint8_t *)c.out[0].data + FT_VNET_HDR_SIZE; /* our own buffer */
            size_t len = c.out[0].len - FT_VNET_HDR_SIZE;
            CHECK(len == ihl + thl + d.pay_len);
            if (v6)
                CHECK(rd16(ip + 4) == len - 40);
            else
                CHECK(rd16(ip + 2) == len && ref_ipv4_header_ok(ip) && rd16(ip + 4) == d.id);
            if (!udp)
                CHECK(ip[ihl + 13] == 0x18 && rd32(ip + ihl + 4) == d.seq);
            else
                CHECK(rd16(ip + ihl + 4) == len - ihl);
            /* The partial sum is the pseudo-header's; finishing it gives a valid checksum of the whole. */
            uint8_t proto = udp ? 17 : 6;
            CHECK(rd16(ip + ihl + h.csum_offset) == ref_fold(ref_pseudo(ip, proto, (uint32_t)(len - ihl))));
            ft_err e;
            CHECK(ft_offload_complete_csum(ip, len, h.csum_start, h.csum_offset, &e) == FT_OK);
            CHECK(ref_l4_ok(ip, len));
            /* Payload in order. */
            int pay_ok = 1;
            for (uint32_t i = 0; i < d.pay_len; i++)
                pay_ok &= ip[ihl + thl + i] == pattern(d.seed, i);
            CHECK(pay_ok);
        }
    free(c.buf);
}

static void test_coalesce_arguments(void)
{
    uint8_t p[200], buf[1000];
    ft_pkt out[4];
    uint32_t segs[4];
    pdesc d = desc(0, 0);
    d.pay_len = 100;
    ft_pkt in[3] = {{p, build_ip(&d, p)}, {p, 60}, {p, 0}};
    ft_err e;
    size_t bound = ft_offload_coalesce_bound(in, 3);
    CHECK(bound == 140 + 60 + 0 + 30);
    memset(buf, 0x77, sizeof(buf));
    CHECK(ft_offload_coalesce(in, 3, FT_COALESCE_TCP, buf, bound - 1, out, segs, 4, &e) == FT_EINVAL &&
          strstr(e.msg, "output buffer"));
    CHECK(ft_offload_coalesce(in, 3, FT_COALESCE_TCP, buf, bound, out, segs, 2, &e) == FT_EINVAL &&
          strstr(e.msg, "output table"));
    CHECK(buf[0] == 0x77);
    CHECK(ft_offload_coalesce(in, 3, FT_COALESCE_TCP, buf, bound, out, NULL, 3, &e) == 3);
    CHECK(buf[bound] == 0x77 && out[2].len == 10 && out[1].len == 70);
    CHECK(ft_offload_coalesce(in, 0, FT_COALESCE_TCP, NULL, 0, NULL, NULL, 0, &e) == 0);
    CHECK(ft_offload_coalesce(NULL, 2, FT_COALESCE_TCP, buf, bound, out, NULL, 3, &e) == FT_EINVAL);
    ft_pkt nodata = {NULL, 5};
    CHECK(ft_offload_coalesce(&nodata, 1, 0, buf, sizeof(buf), out, NULL, 3, &e) == FT_EINVAL);
}

/* Random packet soup: garbage, truncations, valid segments of a few flows. Splitting every unit must give
 * back exactly the input packets (as a multiset), and never touch memory it should not. */
static void test_coalesce_random_soup(void)
{
    static uint8_t store[64][1600];
    ft_pkt in[64];
    coal c;
    memset(&c, 0, sizeof(c));
    tbatch got;
    tb_init(&got, 4096, 1 << 20);
    uint32_t rng = 777, bad = 0;
    for (int iter = 0; iter < 400; iter++) {
        uint32_t n = 1 + iter % 64;
        pdesc flows[3] = {desc(0, 0), desc(1, 0), desc(0, 1)};
        uint32_t next[3] = {0, 0, 0};
        for (uint32_t i = 0; i < n; i++) {
            rng = rng * 1103515245u + 12345u;
            uint32_t r = rng >> 8;
            size_t len;
            if (r % 5 == 0) {
                len = r % 200;
                for (size_t j = 0; j < len; j++)
                    store[i][j] = (uint8_t)(r >> (j % 16)) ^ (uint8_t)j;
                if (len)
                    store[i][0] = (uint8_t)(0x40 + (r % 0x30));
            } else {
                uint32_t f = r % 3;
                flows[f].pay_len = 1000 * 64;
                len = build_segment(&flows[f], 1000, next[f]++, store[i]);
                if (r % 11 == 0)
                    len -= (r >> 4) % len; /* truncated */
                if (r % 13 == 0)
                    store[i][(r >> 3) % len] ^= 0x10;
            }
            in[i].data = store[i];
            in[i].len = len;
        }
        uint32_t allow = (uint32_t)(iter % 8);
        if (run_coalesce(&c, in, n, allow) < 0) {
            bad++;
            continue;
        }
        /* Split units back (units of one packet verbatim) and match them against the inputs. */
        tb_reset(&got);
        for (int u = 0; u < c.n; u++) {
            if (c.segs[u] == 1) {
                add_packet(&got, c.out[u].data + FT_VNET_HDR_SIZE, c.out[u].len - FT_VNET_HDR_SIZE);
                continue;
            }
            ft_err e;
            if (ft_offload_split(c.out[u].data, c.out[u].len, &got.b, &e) != (int)c.segs[u])
                bad++;
        }
        if (got.b.count != n) {
            bad++;
            continue;
        }
        char used[64] = {0};
        for (uint32_t i = 0; i < n; i++) {
            uint32_t j;
            for (j = 0; j < n; j++)
                if (!used[j] && in[j].len == got.b.lengths[i] && memcmp(in[j].data, tb_pkt(&got, i), in[j].len) == 0)
                    break;
            if (j == n && !(allow & FT_COALESCE_TRUST_CSUM))
                bad++;
            else if (j < n)
                used[j] = 1;
        }
    }
    CHECK(bad == 0);
    CHECK(tb_guard_ok(&got));
    tb_free(&got);
    free(c.buf);
}

/* A UDP checksum that computes to 0 must be sent as 0xffff (0 means "no checksum"), and such a datagram
 * still round-trips through coalescing. */
static void test_udp_checksum_zero_is_sent_as_ffff(void)
{
    static uint8_t super[4000];
    uint8_t seg[2000];
    pdesc d = desc(0, 1);
    d.pay_len = 200;
    size_t len = build_super(&d, 100, super);
    /* Adjust the last payload word of segment 0 so that its checksum comes out as zero. */
    size_t n0 = build_segment(&d, 100, 0, seg);
    be16(seg + 26, 0);
    uint32_t s = ref_fold(ref_pseudo(seg, 17, (uint32_t)(n0 - 20)) + ref_add(0, seg + 20, n0 - 20));
    uint8_t *word = super + FT_VNET_HDR_SIZE + 28 + 98;
    be16(word, ref_fold(rd16(word) + (0xffff - s)));
    tbatch t, again;
    coal c;
    memset(&c, 0, sizeof(c));
    tb_init(&t, 8, 1 << 16);
    tb_init(&again, 8, 1 << 16);
    ft_err e;
    CHECK(split_exact(super, len, &t.b, &e) == 2);
    CHECK(rd16(tb_pkt(&t, 0) + 26) == 0xffff && ref_l4_ok(tb_pkt(&t, 0), t.b.lengths[0]));
    ft_pkt pk[2];
    CHECK(run_coalesce(&c, pk, batch_as_pkts(&t, pk), FT_COALESCE_UDP) == 1);
    CHECK(split_units(&c, &again) && batches_equal(&t, &again));
    tb_free(&t);
    tb_free(&again);
    free(c.buf);
}

/* ---- tests: remote checksum ------------------------------------------------------------------------- */

/* A packet behind an FT_RCSUM header: header fields right, checksum field partial (the pseudo-header sum of the
 * packet), every other byte what the fully checksummed packet `expect` has. */
static int rcsum_packet_ok(const uint8_t *got, size_t got_len, const uint8_t *expect, size_t len)
{
    if (got_len != len + FT_RCSUM_HDR_SIZE || got[0] != FT_RCSUM_MAGIC)
        return 0;
    const uint8_t *ip = got + FT_RCSUM_HDR_SIZE;
    size_t hl = (ip[0] >> 4) == 6 ? 40 : (size_t)(ip[0] & 15) * 4;
    uint8_t proto = (ip[0] >> 4) == 6 ? ip[6] : ip[9];
    size_t field = proto == 6 ? 16 : 6;
    if (got[1] != field || rd16(got + 2) != hl)
        return 0;
    if (memcmp(ip, expect, hl + field) != 0 || memcmp(ip + hl + field + 2, expect + hl + field + 2,
                                                      len - hl - field - 2) != 0)
        return 0;
    if (rd16(ip + hl + field) != ref_fold(ref_pseudo(ip, proto, (uint32_t)(len - hl))))
        return 0;
    uint8_t done[BIG];
    memcpy(done, ip, len);
    ft_err e;
    return ft_offload_complete_csum(done, len, (uint32_t)hl, (uint32_t)field, &e) == FT_OK && ref_l4_ok(done, len);
}

static void test_remote_csum(void)
{
    static uint8_t super[BIG], expect[BIG];
    static ft_pkt pkts[70000];
    static uint8_t partial[70000];
    tbatch t, back;
    coal c;
    memset(&c, 0, sizeof(c));
    tb_init(&t, 70000, 8u << 20);
    tb_init(&back, 70000, 8u << 20);
    for (size_t k = 0; k < NCASES; k++) {
        const split_case *sc = &split_cases[k];
        size_t len = case_super(sc, super);
        pdesc d = case_desc(sc);
        uint32_t nseg = (sc->payload + sc->gso - 1) / sc->gso;
        ft_err e;
        tb_reset(&t);
        CHECK(ft_offload_split_ex(super, len, FT_SPLIT_RCSUM, &t.b, &e) == (int)nseg);
        /* Each segment comes behind the header with its checksum left partial, whatever the super-packet's
         * checksum field held: the far end completes it. */
        int all_ok = 1;
        for (uint32_t i = 0; i < t.b.count; i++) {
            size_t elen = build_segment(&d, sc->gso, i, expect);
            all_ok &= rcsum_packet_ok(tb_pkt(&t, i), t.b.lengths[i], expect, elen);
        }
        if (!all_ok)
            fprintf(stderr, "  %s: a segment behind a remote-checksum header is wrong\n", sc->name);
        CHECK(all_ok);
        CHECK(tb_guard_ok(&t));
        /* The far end: headers checked and removed, packets merged without verifying their partial checksums;
         * splitting what it would write gives back exactly the fully checksummed segments. */
        for (uint32_t i = 0; i < t.b.count; i++) {
            uint16_t start, field;
            CHECK(ft_rcsum_decode(tb_pkt(&t, i), t.b.lengths[i], &start, &field, &e) == FT_OK);
            pkts[i].data = tb_pkt(&t, i) + FT_RCSUM_HDR_SIZE;
            pkts[i].len = t.b.lengths[i] - FT_RCSUM_HDR_SIZE;
            partial[i] = 1;
        }
        CHECK(run_coalesce_ex(&c, pkts, partial, t.b.count, FT_COALESCE_TCP | FT_COALESCE_UDP) >= 1);
        CHECK(split_units(&c, &back));
        int same = back.b.count == nseg;
        for (uint32_t i = 0; same && i < nseg; i++) {
            size_t elen = build_segment(&d, sc->gso, i, expect);
            same = back.b.lengths[i] == elen && memcmp(tb_pkt(&back, i), expect, elen) == 0;
        }
        if (!same)
            fprintf(stderr, "  %s: merged partial segments do not split back into the segments\n", sc->name);
        CHECK(same);
        /* Without the flag the same packets are not merged: their checksums do not verify. */
        CHECK(run_coalesce(&c, pkts, t.b.count, FT_COALESCE_TCP | FT_COALESCE_UDP) == (int)t.b.count);
    }

    /* A lone packet with a partial checksum goes out behind NEEDS_CSUM at its checksum field. */
    for (int v6 = 0; v6 < 2; v6++)
        for (int udp = 0; udp < 2; udp++) {
            pdesc d = desc(v6, udp);
            d.pay_len = 300;
            d.partial = 1;
            uint8_t ip[2000];
            size_t len = build_ip(&d, ip);
            ft_pkt one = {ip, len};
            uint8_t yes = 1;
            ft_err e;
            CHECK(run_coalesce_ex(&c, &one, &yes, 1, FT_COALESCE_TCP) == 1);
            ft_vnet_hdr h;
            ft_vnet_hdr_decode(c.out[0].data, &h);
            CHECK(h.flags == FT_VNET_F_NEEDS_CSUM && h.gso_type == FT_VNET_GSO_NONE &&
                  h.csum_start == ip_hl(&d) && h.csum_offset == (udp ? 6 : 16));
            CHECK(memcmp(c.out[0].data + FT_VNET_HDR_SIZE, ip, len) == 0);
            /* and the same packet split the way the kernel hands it over, behind the header */
            uint8_t buf[2100];
            put_vnet(buf, 1, 0, 0, 0, (uint16_t)ip_hl(&d), udp ? 6 : 16);
            memcpy(buf + FT_VNET_HDR_SIZE, ip, len);
            d.partial = 0;
            build_ip(&d, expect);
            tb_reset(&t);
            CHECK(ft_offload_split_ex(buf, len + FT_VNET_HDR_SIZE, FT_SPLIT_RCSUM, &t.b, &e) == 1);
            CHECK(rcsum_packet_ok(tb_pkt(&t, 0), t.b.lengths[0], expect, len));
        }

    /* What a receiver refuses behind the header. */
    {
        pdesc d = desc(0, 0);
        d.pay_len = 100;
        uint8_t p[300];
        size_t len = build_ip(&d, p + 4) + 4;
        p[0] = FT_RCSUM_MAGIC, p[1] = 16, p[2] = 0, p[3] = 20;
        uint16_t start, field;
        ft_err e;
        CHECK(ft_rcsum_decode(p, len, &start, &field, &e) == FT_OK && start == 20 && field == 16);
        p[1] = 6;
        CHECK(ft_rcsum_decode(p, len, &start, &field, &e) == FT_EPACKET && strstr(e.msg, "has it at 20 + 16"));
        p[1] = 16, p[3] = 24;
        CHECK(ft_rcsum_decode(p, len, &start, &field, &e) == FT_EPACKET);
        p[3] = 20, p[0] = 0x1e;
        CHECK(ft_rcsum_decode(p, len, &start, &field, &e) == FT_EPACKET && strstr(e.msg, "not a remote-checksum"));
        p[0] = FT_RCSUM_MAGIC;
        CHECK(ft_rcsum_decode(p, 4 + 20 + 17, &start, &field, &e) == FT_EPACKET);  /* field past the end */
        CHECK(ft_rcsum_decode(p, 3, &start, &field, &e) == FT_EPACKET);
        p[4 + 9] = 1;                                                                  /* ICMP */
        CHECK(ft_rcsum_decode(p, len, &start, &field, &e) == FT_EPACKET && strstr(e.msg, "TCP or UDP"));
        p[4 + 9] = 6, p[4 + 6] |= 0x20;                                                /* a fragment (MF) */
        CHECK(ft_rcsum_decode(p, len, &start, &field, &e) == FT_EPACKET);
        pdesc d6 = desc(1, 1);
        d6.pay_len = 50;
        d6.v6_hop_by_hop = 1;                                                          /* extension header */
        len = build_ip(&d6, p + 4) + 4;
        p[0] = FT_RCSUM_MAGIC, p[1] = 6, p[2] = 0, p[3] = 40;
        CHECK(ft_rcsum_decode(p, len, &start, &field, &e) == FT_EPACKET);
    }
    free(c.buf);
    tb_free(&t);
    tb_free(&back);
}

int main(void)
{
    test_vnet_header_layout();
    test_checksum_matches_reference();
    test_complete_csum();
    test_split_cases();
    test_split_plain_packets();
    test_split_room();
    test_split_rejects_malformed();
    test_split_survives_corruption();
    test_round_trip_split_coalesce_split();
    test_coalesce_interleaved_flows_keep_order();
    test_coalesce_barriers();
    test_coalesce_leaves_unmergeable_pairs_alone();
    test_coalesce_header_fields();
    test_coalesce_arguments();
    test_coalesce_random_soup();
    test_udp_checksum_zero_is_sent_as_ffff();
    test_remote_csum();
    return check_summary();
}
