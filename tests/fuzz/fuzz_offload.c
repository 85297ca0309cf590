/* fuzz_offload.c - libFuzzer target for the offload functions (ft_offload.c).
 *
 * Every input is used twice:
 *   split:    the whole input is a read from the tun fd (virtio-net header + IP packet);
 *   coalesce: byte 0 holds the FT_COALESCE_* bits, then packets follow, each a 2-byte big-endian length and
 *             that many bytes (the last one cut short at the end of the input).
 * Invariants checked (abort() on violation, so libFuzzer reports a crash):
 *   - split leaves the batch untouched on failure; on success appends contiguous packets within the arena,
 *     each a valid IPv4/IPv6 packet; super-packet segments have correct lengths and checksums and their
 *     payloads put together are the super-packet's payload; coalescing the segments and splitting the
 *     result gives the same segments again;
 *   - coalesce writes only within out_buf/out[], its units account for every input packet, units of one
 *     packet are that packet behind an all-zero header, merged units split into their packets, and (unless
 *     checksums are trusted) splitting all units gives back exactly the input packets, in order per flow.
 * Build: clang -fsanitize=fuzzer,address,undefined -Icsrc csrc/offload/ft_offload.c csrc/core/ft_device.c
 *        csrc/posix/ft_posix_os.c tests/fuzz/fuzz_offload.c */
#include "offload/ft_offload.h"

#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEGS 8192
#define ARENA (6u << 20)
#define MAX_IN 300

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

/* A checksum of our own, one byte at a time. */
static uint32_t sum_bytes(uint64_t acc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc += (i & 1) ? p[i] : (uint64_t)p[i] << 8;
    while (acc > 0xffff)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint32_t)acc;
}

static int l4_checksum_ok(const uint8_t *ip, size_t len, size_t hl, uint8_t proto)
{
    uint64_t acc = (ip[0] >> 4) == 6 ? sum_bytes(0, ip + 8, 32) : sum_bytes(0, ip + 12, 8);
    acc += proto + ((len - hl) >> 16) + ((len - hl) & 0xffff);
    return sum_bytes(acc, ip + hl, len - hl) == 0xffff;
}

typedef struct batch {
    ft_batch b;
    uint32_t offsets[MAX_SEGS], lengths[MAX_SEGS];
} batch;

static batch first_split, second_split;
static uint8_t arena1[ARENA], arena2[ARENA], arena3[ARENA];

static void batch_setup(batch *t, uint8_t *arena, uint32_t max, size_t cap)
{
    t->b.data = arena;
    t->b.cap = cap;
    t->b.offsets = t->offsets;
    t->b.lengths = t->lengths;
    t->b.max = max;
    t->b.count = 0;
    t->b.used = 0;
}

/* Packets [from, count) of t are contiguous, inside the arena and accounted for in used. */
static void check_layout(const batch *t, uint32_t from, size_t used_before)
{
    size_t at = used_before;
    REQUIRE(t->b.count <= t->b.max && t->b.used <= t->b.cap);
    for (uint32_t i = from; i < t->b.count; i++) {
        REQUIRE(t->b.offsets[i] == at);
        at += t->b.lengths[i];
    }
    REQUIRE(at == t->b.used);
}

/* Segment i of a split super-packet: a well-formed packet whose checksums verify. Returns its header
 * length (IP + transport). */
static size_t check_segment(const uint8_t *p, size_t len, unsigned gso_type)
{
    ft_err e;
    REQUIRE(ft_packet_check(p, len, FT_MAX_PACKET + 40, &e) == FT_OK || len > FT_MAX_PACKET);
    size_t ip_hl;
    uint8_t proto;
    if ((p[0] >> 4) == 4) {
        REQUIRE(len >= 20 && p[0] == 0x45 && rd16(p + 2) == len && sum_bytes(0, p, 20) == 0xffff);
        ip_hl = 20;
        proto = p[9];
    } else {
        REQUIRE((p[0] >> 4) == 6 && len >= 40 && rd16(p + 4) + 40 == len);
        ip_hl = 40;
        proto = p[6];
    }
    REQUIRE(proto == (gso_type == FT_VNET_GSO_UDP_L4 ? 17 : 6));
    size_t l4_hl = proto == 6 ? (size_t)(p[ip_hl + 12] >> 4) * 4 : 8;
    REQUIRE(ip_hl + l4_hl <= len);
    if (proto == 17)
        REQUIRE(rd16(p + ip_hl + 4) == len - ip_hl && rd16(p + ip_hl + 6) != 0);
    REQUIRE(l4_checksum_ok(p, len, ip_hl, proto));
    return ip_hl + l4_hl;
}

/* a and b (len bytes) are the same packet, except that one may store a transport checksum of 0 as 0xffff (as a
 * checksum completed for NEEDS_CSUM does, like the kernel's) where the other has 0: the same in ones' complement. */
static int same_but_checksum_zero(const uint8_t *a, const uint8_t *b, size_t len)
{
    uint16_t start, field;
    if (!ft_rcsum_layout(a, len, &start, &field))
        return memcmp(a, b, len) == 0;
    size_t at = (size_t)start + field;
    uint32_t x = rd16(a + at), y = rd16(b + at);
    return memcmp(a, b, at) == 0 && memcmp(a + at + 2, b + at + 2, len - at - 2) == 0 &&
           (x == y || (x == 0xffff && y == 0) || (x == 0 && y == 0xffff));
}

/* Coalesces the n packets (partial: which have a partial checksum, or NULL) and splits every unit into `into`
 * (over arena), which then holds exactly n packets. */
static void merge_and_split_again(const ft_pkt *pkts, const uint8_t *partial, uint32_t n, batch *into, uint8_t *arena)
{
    static ft_pkt units[MAX_SEGS];
    static uint32_t segs[MAX_SEGS];
    static uint8_t out[ARENA];
    ft_err e;
    size_t bound = ft_offload_coalesce_bound(pkts, n);
    REQUIRE(bound <= sizeof(out));
    int u = ft_offload_coalesce_ex(pkts, partial, n, FT_COALESCE_TCP | FT_COALESCE_UDP, out, bound, units, segs, n,
                                   &e);
    REQUIRE(u > 0 && (uint32_t)u <= n);
    batch_setup(into, arena, MAX_SEGS, ARENA);
    for (int k = 0; k < u; k++)
        REQUIRE(ft_offload_split(units[k].data, units[k].len, &into->b, &e) == (int)segs[k]);
    REQUIRE(into->b.count == n);
}

static void fuzz_split(const uint8_t *data, size_t size)
{
    ft_err e;
    /* A batch that already holds something and has little room left: FT_EAGAIN must change nothing. */
    batch_setup(&first_split, arena1, 6, 5000);
    first_split.b.count = 2;
    first_split.b.used = 1000;
    int r = ft_offload_split(data, size, &first_split.b, &e);
    if (r < 0) {
        REQUIRE(r == FT_EAGAIN || r == FT_EPACKET);
        REQUIRE(first_split.b.count == 2 && first_split.b.used == 1000);
    } else {
        REQUIRE(r > 0 && first_split.b.count == 2 + (uint32_t)r);
        check_layout(&first_split, 2, 1000);
    }

    batch_setup(&first_split, arena1, MAX_SEGS, ARENA);
    r = ft_offload_split(data, size, &first_split.b, &e);
    if (r < 0) {
        REQUIRE(r == FT_EPACKET);
        REQUIRE(first_split.b.count == 0 && first_split.b.used == 0);
        REQUIRE(memchr(e.msg, '\0', sizeof(e.msg)) != NULL && e.msg[0] != '\0');
        return;
    }
    REQUIRE(r > 0 && (uint32_t)r == first_split.b.count);
    check_layout(&first_split, 0, 0);
    ft_vnet_hdr h;
    ft_vnet_hdr_decode(data, &h);
    unsigned type = h.gso_type & 0x7fu;
    const uint8_t *ip = data + FT_VNET_HDR_SIZE;
    size_t iplen = size - FT_VNET_HDR_SIZE;
    if (type == FT_VNET_GSO_NONE) {
        REQUIRE(r == 1 && first_split.b.lengths[0] == iplen);
        REQUIRE(ft_packet_check(arena1, iplen, FT_MAX_PACKET, &e) == FT_OK);
        if (!(h.flags & FT_VNET_F_NEEDS_CSUM)) {
            REQUIRE(memcmp(arena1, ip, iplen) == 0);
        } else {
            size_t field = (size_t)h.csum_start + h.csum_offset;
            REQUIRE(memcmp(arena1, ip, field) == 0 && memcmp(arena1 + field + 2, ip + field + 2, iplen - field - 2) == 0);
        }
        return;
    }
    /* Segments: valid, in order, their payloads together the super-packet's payload. */
    size_t super_hl = 0, pay_at = 0;
    for (uint32_t i = 0; i < first_split.b.count; i++) {
        const uint8_t *p = arena1 + first_split.b.offsets[i];
        size_t len = first_split.b.lengths[i];
        size_t hl = check_segment(p, len, type);
        if (i == 0)
            super_hl = hl;
        REQUIRE(hl == super_hl && len > hl);
        REQUIRE(i + 1 == first_split.b.count || len - hl == h.gso_size);
        REQUIRE(super_hl + pay_at + (len - hl) <= iplen);
        REQUIRE(memcmp(p + hl, ip + super_hl + pay_at, len - hl) == 0);
        pay_at += len - hl;
    }
    REQUIRE(super_hl + pay_at == iplen);

    /* Coalescing the segments and splitting again is the identity. */
    static ft_pkt pkts[MAX_SEGS];
    uint32_t n = first_split.b.count;
    for (uint32_t i = 0; i < n; i++)
        pkts[i].data = arena1 + first_split.b.offsets[i], pkts[i].len = first_split.b.lengths[i];
    merge_and_split_again(pkts, NULL, n, &second_split, arena2);
    for (uint32_t i = 0; i < n; i++)
        REQUIRE(second_split.b.lengths[i] == pkts[i].len &&
                memcmp(arena2 + second_split.b.offsets[i], pkts[i].data, pkts[i].len) == 0);

    /* Remote checksums: the same segments behind FT_RCSUM headers that the far end accepts, their checksums left
     * partial; merged there as partial and split again, they are the fully checksummed segments. */
    static batch third;
    static uint8_t partial[MAX_SEGS];
    batch_setup(&second_split, arena2, MAX_SEGS, ARENA);
    REQUIRE(ft_offload_split_ex(data, size, FT_SPLIT_RCSUM, &second_split.b, &e) == (int)n);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *p = arena2 + second_split.b.offsets[i];
        uint16_t start, field;
        REQUIRE(ft_rcsum_decode(p, second_split.b.lengths[i], &start, &field, &e) == FT_OK);
        REQUIRE(second_split.b.lengths[i] == first_split.b.lengths[i] + FT_RCSUM_HDR_SIZE);
        pkts[i].data = p + FT_RCSUM_HDR_SIZE, pkts[i].len = second_split.b.lengths[i] - FT_RCSUM_HDR_SIZE;
        partial[i] = 1;
    }
    merge_and_split_again(pkts, partial, n, &third, arena3);
    for (uint32_t i = 0; i < n; i++)
        REQUIRE(third.b.lengths[i] == first_split.b.lengths[i] &&
                same_but_checksum_zero(arena3 + third.b.offsets[i], arena1 + first_split.b.offsets[i],
                                       third.b.lengths[i]));
}

/* Flow identity as coalescing promises to respect it: addresses, protocol and ports. */
static int flow_key(const uint8_t *p, size_t len, uint8_t key[40])
{
    memset(key, 0, 40);
    if (len >= 20 && (p[0] >> 4) == 4) {
        size_t hl = (size_t)(p[0] & 15) * 4;
        if (hl < 20 || len < hl + 4 || (p[9] != 6 && p[9] != 17) || (rd16(p + 6) & 0x1fff))
            return 0;
        key[0] = 4, key[1] = p[9];
        memcpy(key + 2, p + 12, 8);
        memcpy(key + 10, p + hl, 4);
        return 1;
    }
    if (len >= 44 && (p[0] >> 4) == 6 && (p[6] == 6 || p[6] == 17)) {
        key[0] = 6, key[1] = p[6];
        memcpy(key + 2, p + 8, 32);
        memcpy(key + 34, p + 40, 4);
        return 1;
    }
    return 0;
}

static void fuzz_coalesce(const uint8_t *data, size_t size)
{
    static ft_pkt in[MAX_IN];
    static uint8_t has_key[MAX_IN], keys[MAX_IN][40];
    static uint32_t origin[MAX_SEGS];
    static uint8_t used_in[MAX_IN];
    if (size < 1)
        return;
    uint32_t allow = data[0] & 7u;
    size_t at = 1;
    uint32_t n = 0;
    while (at + 2 <= size && n < MAX_IN) {
        size_t len = rd16(data + at);
        at += 2;
        if (len > size - at)
            len = size - at;
        in[n].data = data + at;
        in[n].len = len;
        n++;
        at += len;
    }
    if (n == 0)
        return;
    /* Exactly sized outputs, so the sanitizer catches any write past them. */
    size_t bound = ft_offload_coalesce_bound(in, n);
    uint8_t *out = malloc(bound);
    ft_pkt *units = malloc(n * sizeof(*units));
    uint32_t *segs = malloc(n * sizeof(*segs));
    ft_err e;
    int r = ft_offload_coalesce(in, n, allow, out, bound, units, segs, n, &e);
    REQUIRE(r > 0 && (uint32_t)r <= n);
    REQUIRE(ft_offload_coalesce(in, n, allow, out, bound - 1, units, segs, n, &e) == FT_EINVAL);
    r = ft_offload_coalesce(in, n, allow, out, bound, units, segs, n, &e);

    /* The same units as pieces for writev (headers built apart, payloads where they are), in exactly sized
     * tables: joined, they are the units above byte for byte. */
    {
        uint8_t *hdr = malloc((size_t)n * FT_COALESCE_HDR_MAX);
        ft_pkt *pieces = malloc(2 * (size_t)n * sizeof(*pieces));
        ft_coalesce_unit *cu = malloc(n * sizeof(*cu));
        REQUIRE(ft_offload_coalesce_iov(in, NULL, n, allow, hdr, (size_t)n * FT_COALESCE_HDR_MAX - 1, pieces, 2 * n,
                                        cu, n, &e) == FT_EINVAL);
        REQUIRE(ft_offload_coalesce_iov(in, NULL, n, allow, hdr, (size_t)n * FT_COALESCE_HDR_MAX, pieces, 2 * n, cu,
                                        n, &e) == r);
        for (int k = 0; k < r; k++) {
            REQUIRE(cu[k].segs == segs[k] && cu[k].len == units[k].len && cu[k].iov_count >= 1);
            REQUIRE(cu[k].iov_first + cu[k].iov_count <= 2 * n);
            size_t pos = 0;
            for (uint32_t j = 0; j < cu[k].iov_count; j++) {
                const ft_pkt *piece = &pieces[cu[k].iov_first + j];
                REQUIRE(pos + piece->len <= units[k].len && memcmp(units[k].data + pos, piece->data, piece->len) == 0);
                pos += piece->len;
            }
            REQUIRE(pos == units[k].len);
        }
        free(hdr);
        free(pieces);
        free(cu);
    }

    uint32_t total = 0;
    const uint8_t *expect_at = out;
    batch_setup(&second_split, arena2, MAX_SEGS, ARENA);
    for (int k = 0; k < r; k++) {
        REQUIRE(units[k].data == expect_at && units[k].len >= FT_VNET_HDR_SIZE);
        REQUIRE((size_t)(units[k].data - out) + units[k].len <= bound);
        expect_at += units[k].len;
        REQUIRE(segs[k] >= 1);
        total += segs[k];
        ft_vnet_hdr h;
        ft_vnet_hdr_decode(units[k].data, &h);
        const uint8_t *p = units[k].data + FT_VNET_HDR_SIZE;
        size_t len = units[k].len - FT_VNET_HDR_SIZE;
        if (segs[k] == 1) {
            static const uint8_t zero[FT_VNET_HDR_SIZE] = {0};
            REQUIRE(memcmp(units[k].data, zero, FT_VNET_HDR_SIZE) == 0);
            REQUIRE(second_split.b.count < MAX_SEGS && second_split.b.used + len <= ARENA);
            memcpy(arena2 + second_split.b.used, p, len);
            second_split.offsets[second_split.b.count] = (uint32_t)second_split.b.used;
            second_split.lengths[second_split.b.count++] = (uint32_t)len;
            second_split.b.used += len;
            continue;
        }
        REQUIRE(h.flags == FT_VNET_F_NEEDS_CSUM && len <= 65535);
        REQUIRE(h.gso_type == FT_VNET_GSO_TCPV4 || h.gso_type == FT_VNET_GSO_TCPV6 ||
                h.gso_type == FT_VNET_GSO_UDP_L4);
        REQUIRE((h.gso_type == FT_VNET_GSO_UDP_L4 ? allow & FT_COALESCE_UDP : allow & FT_COALESCE_TCP) != 0);
        REQUIRE(h.gso_type != FT_VNET_GSO_UDP_L4 || segs[k] <= FT_COALESCE_UDP_MAX_SEGS);
        REQUIRE(h.csum_start + h.csum_offset + 2u <= len && h.hdr_len < len);
        REQUIRE(ft_offload_split(units[k].data, units[k].len, &second_split.b, &e) == (int)segs[k]);
    }
    REQUIRE(total == n && (size_t)(expect_at - out) <= bound);
    REQUIRE(second_split.b.count == n);

    if (!(allow & FT_COALESCE_TRUST_CSUM)) {
        /* Every packet comes back byte for byte; packets of one flow in their input order. */
        memset(used_in, 0, n);
        for (uint32_t i = 0; i < n; i++) {
            const uint8_t *p = arena2 + second_split.offsets[i];
            uint32_t j;
            for (j = 0; j < n; j++)
                if (!used_in[j] && in[j].len == second_split.lengths[i] && memcmp(in[j].data, p, in[j].len) == 0)
                    break;
            REQUIRE(j < n);
            used_in[j] = 1;
            origin[i] = j;
        }
        for (uint32_t j = 0; j < n; j++)
            has_key[j] = (uint8_t)flow_key(in[j].data, in[j].len, keys[j]);
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t k = i + 1; k < n; k++) {
                uint32_t a = origin[i], b = origin[k];
                if (has_key[a] && has_key[b] && memcmp(keys[a], keys[b], 40) == 0)
                    REQUIRE(a < b);
            }
    }
    free(out);
    free(units);
    free(segs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_split(data, size);
    fuzz_coalesce(data, size);
    return 0;
}
