/* fuzz_udp.c - libFuzzer target for the UDP endpoint's pure functions: the run grouping (udp/ft_udp_runs.h) and
 * the train splitter and its guard (udp/ft_udp_train.h), shared by Linux GSO/GRO and Windows USO/URO.
 *
 * Input: byte 0 flags (bit 0: short tails allowed), bytes 1-2 max_segments (big-endian, 0 read as 1), bytes 3-4
 * max_segment, bytes 5-7 max_total; then datagrams, 3 bytes each: a 2-byte big-endian length and a destination
 * (0..3; values >= 4 mean "one destination for all" for the whole input). The same bytes, read from the start,
 * also make one received unit: full, copied, seg and max as 4-byte big-endian numbers.
 * Invariants (abort() on violation, so libFuzzer reports a crash):
 *   - runs: every datagram is in exactly one run, in order; a run is 1..max_segments datagrams whose bytes are
 *     its total; more than one only when the first is 1..max_segment bytes, all later ones are non-empty, equal
 *     to the first but the last, which may be shorter only with short tails; the total is within max_total; one
 *     destination; and a run ends only where the next datagram could not join it;
 *   - trains: walking a unit visits each of its datagrams once, in order, each delivered only when whole in the
 *     buffer and at most max bytes; delivered + dropped is the number of datagrams; the guard flags a unit
 *     exactly when its segment size (given) is 0 or above the payload maximum, or (not given) its length is.
 * Build: clang -fsanitize=fuzzer,address,undefined -Icsrc tests/fuzz/fuzz_udp.c
 * Without libFuzzer: -DFT_FUZZ_STANDALONE gives a main that runs pseudo-random inputs (tests/test_udp_c.py). */
#include "udp/ft_udp.h"
#include "udp/ft_udp_runs.h"
#include "udp/ft_udp_train.h"

#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PKTS 512

static uint32_t be(const uint8_t *p, size_t n)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Whether pkts[k] could have joined the run pkts[0..k-1] of *total bytes. */
static int could_join(const ft_pkt *pkts, uint32_t k, const ft_endpoint *dsts, const ft_udp_run_limits *lim,
                      uint64_t total)
{
    uint64_t seg = pkts[0].len, len = pkts[k].len;
    if (seg == 0 || seg > lim->max_segment || k >= lim->max_segments)
        return 0;
    if (pkts[k - 1].len < seg) /* the run already ended with a shorter one */
        return 0;
    if (len == 0 || len > seg || (len < seg && !lim->short_tail) || total + len > lim->max_total)
        return 0;
    return !dsts || ft_udp_run_same_dst(&dsts[0], &dsts[k]);
}

static void check_runs(const uint8_t *data, size_t size)
{
    if (size < 8)
        return;
    ft_udp_run_limits lim = {.short_tail = data[0] & 1, .max_segments = be(data + 1, 2),
                             .max_segment = be(data + 3, 2), .max_total = be(data + 5, 3)};
    if (lim.max_segments == 0)
        lim.max_segments = 1;
    static const uint8_t bytes[65536];
    ft_pkt pkts[MAX_PKTS];
    ft_endpoint dsts[MAX_PKTS];
    uint32_t n = 0;
    int one_destination = 0;
    for (size_t off = 8; off + 3 <= size && n < MAX_PKTS; off += 3, n++) {
        pkts[n] = (ft_pkt){bytes, be(data + off, 2)};
        memset(&dsts[n], 0, sizeof(dsts[n]));
        uint8_t d = data[off + 2];
        one_destination |= d >= 4;
        dsts[n].family = d & 1 ? 6 : 4;
        dsts[n].port = 4000 + (d & 2);
    }
    if (n == 0)
        return;
    const ft_endpoint *per = one_destination ? NULL : dsts;
    uint32_t i = 0;
    while (i < n) {
        uint64_t total = 0, sum = 0;
        uint32_t k = ft_udp_run(pkts + i, n - i, per ? per + i : NULL, &lim, &total);
        REQUIRE(k >= 1 && k <= n - i && k <= lim.max_segments);
        for (uint32_t j = 0; j < k; j++)
            sum += pkts[i + j].len;
        REQUIRE(sum == total);
        if (k > 1) {
            size_t seg = pkts[i].len;
            REQUIRE(seg > 0 && seg <= lim.max_segment && total <= lim.max_total);
            for (uint32_t j = 1; j < k; j++) {
                size_t len = pkts[i + j].len;
                REQUIRE(len > 0 && len <= seg);
                REQUIRE(len == seg || (j == k - 1 && lim.short_tail));
                REQUIRE(!per || ft_udp_run_same_dst(&per[i], &per[i + j]));
            }
        }
        if (i + k < n)
            REQUIRE(!could_join(pkts + i, k, per ? per + i : NULL, &lim, total));
        i += k;
    }
    REQUIRE(i == n);
}

static void check_train(const uint8_t *data, size_t size)
{
    if (size < 16)
        return;
    ft_udp_train t = {.full = be(data, 4), .copied = be(data + 4, 4), .seg = be(data + 8, 4),
                      .max = be(data + 12, 4)};
    if (t.copied > t.full)
        t.copied = t.full;
    if (t.full == 0)
        return;
    if (t.seg != 0 && t.full / t.seg > 100000) /* a bounded walk: at most about 100000 datagrams */
        t.seg = t.full / 100000 + 1;
    uint32_t seg = ft_udp_train_seg(&t);
    REQUIRE(seg >= 1 && seg <= t.full);
    uint64_t units = ((uint64_t)t.full + seg - 1) / seg, delivered = 0, dropped = 0, visited = 0;
    uint64_t off = 0;
    while (off < t.full) {
        uint32_t cut = ft_udp_train_cut(&t, (uint32_t)off);
        if (cut > 0) {
            REQUIRE(off + (t.full - off < seg ? t.full - off : seg) > t.copied);
            REQUIRE(cut == ((uint64_t)t.full - off + seg - 1) / seg);
            dropped += cut;
            break;
        }
        int deliver;
        uint32_t len = ft_udp_train_piece(&t, (uint32_t)off, &deliver);
        REQUIRE(len >= 1 && len <= seg && off + len <= t.full);
        REQUIRE(deliver == (len <= t.max && off + len <= t.copied));
        delivered += deliver;
        dropped += !deliver;
        off += len;
        REQUIRE(++visited <= units);
    }
    REQUIRE(delivered + dropped == units);
    REQUIRE(ft_udp_train_coalesced(&t) == (units > 1));
    uint32_t max_payload = data[15] & 1 ? FT_UDP_MAX_PAYLOAD6 : FT_UDP_MAX_PAYLOAD4;
    REQUIRE(ft_udp_train_malformed(&t, 1, max_payload) == (t.seg == 0 || t.seg > max_payload));
    REQUIRE(ft_udp_train_malformed(&t, 0, max_payload) == (t.full > max_payload));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_runs(data, size);
    check_train(data, size);
    return 0;
}

#ifdef FT_FUZZ_STANDALONE
/* Pseudo-random inputs (xorshift, fixed seed): lengths drawn near the limits so that every rule is hit. */
int main(int argc, char **argv)
{
    unsigned long rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    uint64_t x = 0x9E3779B97F4A7C15u;
    uint8_t in[8 + 3 * 200];
    for (unsigned long r = 0; r < rounds; r++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = 8 + 3 * (x % 200);
        uint16_t base = (uint16_t)(1 + (x >> 8) % 1500);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            in[i] = (uint8_t)x;
        }
        /* mostly runs of one size, some shorter, some longer, some empty, few destinations */
        for (size_t off = 8; off + 3 <= n; off += 3) {
            uint16_t len = in[off] % 8 == 0 ? (uint16_t)(base - in[off + 1] % base) : in[off] % 16 == 1 ? 0 : base;
            in[off] = (uint8_t)(len >> 8);
            in[off + 1] = (uint8_t)len;
            in[off + 2] = in[off + 2] % 16 == 0 ? in[off + 2] % 4 : (r % 7 == 0 ? 4 : 0);
        }
        if (r % 3 == 0) { /* small limits */
            in[1] = 0, in[2] = in[2] % 70;
            in[5] = 0;
        }
        LLVMFuzzerTestOneInput(in, n);
    }
    printf("%lu inputs\n", rounds);
    return 0;
}
#endif
