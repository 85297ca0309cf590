/* test_udp.c - the UDP endpoint backend (csrc/udp/ft_udp.c) through the device interface, over loopback:
 * runs both ways with and without GSO/GRO, a batch table smaller than a coalesced read, sources of an
 * unconnected endpoint, datagrams above max_datagram, bad input, a reader thread and close under it. */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include "core/ft_reader.h"
#include "udp/ft_udp.h"
#include "udp/ft_udp_runs.h"
#include "udp/ft_udp_train.h"
#include "check.h"
#ifdef _WIN32
#include "udp/ft_udp_internal.h" /* the Windows paths' switches, to force each fallback */
#endif

#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#define close_socket(fd) closesocket((SOCKET)(fd))
#define BUFFER_OPTION SO_RCVBUF
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#define close_socket(fd) close(fd)
#define BUFFER_OPTION SO_RCVBUFFORCE
#endif

/* A UDP socket on loopback (its descriptor as the int ft_udp_params takes). */
static int bound_socket(struct sockaddr_in *addr)
{
    int fd = (int)socket(AF_INET, SOCK_DGRAM, 0);
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, BUFFER_OPTION, (const char *)&size, sizeof(size));
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*addr);
    if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) != 0 || getsockname(fd, (struct sockaddr *)addr, &len))
        return -1;
    return fd;
}

static ft_device *open_endpoint(int fd, uint32_t max_datagram, int offload)
{
    ft_udp_params p = {.fd = fd, .max_datagram = max_datagram, .gso = offload, .gro = offload};
    ft_device *d = NULL;
    ft_err e;
    CHECK(ft_udp_open(&p, &d, &e) == FT_OK);
    return d;
}

/* Two UDP endpoints on 127.0.0.1, a connected to b (and b to a with both_ways), b delivering datagrams of at most
 * b_max bytes (0: the maximum); *aa is a's address. 0 unless both opened (a failed check says which did not). */
static int endpoint_pair(ft_device **a, ft_device **b, struct sockaddr_in *aa, uint32_t b_max, int offload,
                         int both_ways)
{
    struct sockaddr_in ab;
    int fa = bound_socket(aa), fb = bound_socket(&ab);
    CHECK(connect(fa, (struct sockaddr *)&ab, sizeof(ab)) == 0);
    if (both_ways)
        CHECK(connect(fb, (struct sockaddr *)aa, sizeof(*aa)) == 0);
    *a = open_endpoint(fa, 0, offload);
    *b = open_endpoint(fb, b_max, offload);
    return *a && *b;
}

typedef struct batch_mem {
    ft_batch b;
    uint8_t *data;
    uint32_t *offsets, *lengths;
    ft_endpoint *addrs;
} batch_mem;

static void batch_alloc(batch_mem *m, uint32_t max, size_t cap)
{
    memset(m, 0, sizeof(*m));
    m->data = malloc(cap);
    m->offsets = calloc(max, sizeof(uint32_t));
    m->lengths = calloc(max, sizeof(uint32_t));
    m->addrs = calloc(max, sizeof(ft_endpoint));
    m->b = (ft_batch){.data = m->data, .cap = cap, .offsets = m->offsets, .lengths = m->lengths, .max = max,
                      .addrs = m->addrs};
}

static void batch_free(batch_mem *m)
{
    free(m->data);
    free(m->offsets);
    free(m->lengths);
    free(m->addrs);
}

/* n datagrams of `size` bytes, each starting with its index. */
static uint8_t *make_datagrams(uint32_t n, uint32_t size, ft_pkt *pkts)
{
    uint8_t *buf = malloc((size_t)n * size);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = buf + (size_t)i * size;
        memset(p, (int)(i * 7 + 1), size);
        memcpy(p, &i, sizeof(i));
        pkts[i].data = p;
        pkts[i].len = size;
    }
    return buf;
}

static void test_runs_both_ways(int offload, uint32_t table)
{
    struct sockaddr_in aa;
    ft_device *a, *b;
    if (!endpoint_pair(&a, &b, &aa, 0, offload, 1))
        return;
    enum { N = 150, SIZE = 1200 };
    ft_pkt pkts[N + 1];
    uint8_t *buf = make_datagrams(N, SIZE, pkts);
    pkts[N].data = (const uint8_t *)"tail";
    pkts[N].len = 4;
    ft_err e;
    CHECK(ft_udp_send(a, pkts, N + 1, NULL, 0, FT_FULL_WAIT, 1000, &e) == N + 1);
    ft_udp_info info;
    CHECK(ft_udp_get_info(a, &info) == FT_OK);
    CHECK(info.gso == offload || !info.gso_supported);
    CHECK(info.gso ? info.gso_messages > 0 && info.tx_messages < 10 : info.tx_messages == N + 1);

    batch_mem m;
    batch_alloc(&m, table, (size_t)table * 2048 + 65535);
    uint32_t got = 0;
    int order_ok = 1, sources_ok = 1;
    for (int tries = 0; got < N + 1 && tries < 1000; tries++) {
        int r = ft_device_recv(b, 0, &m.b, 1000, &e);
        if (r <= 0)
            break;
        CHECK((uint32_t)r <= table);
        for (int i = 0; i < r; i++, got++) {
            uint32_t idx;
            memcpy(&idx, m.b.data + m.b.offsets[i], sizeof(idx));
            if (got < N && (m.b.lengths[i] != SIZE || idx != got))
                order_ok = 0;
            if (got == N && (m.b.lengths[i] != 4 || memcmp(m.b.data + m.b.offsets[i], "tail", 4) != 0))
                order_ok = 0;
            if (m.addrs[i].family != 4 || m.addrs[i].port != ntohs(aa.sin_port))
                sources_ok = 0;
        }
    }
    CHECK(got == N + 1);
    CHECK(order_ok);
    CHECK(sources_ok);
    CHECK(ft_udp_get_info(b, &info) == FT_OK);
    CHECK(info.gro ? info.gro_messages > 0 : info.gro_messages == 0);
    ft_stats s;
    ft_device_get_stats(b, &s);
    CHECK(s.rx_packets == N + 1 && s.rx_bytes == (uint64_t)N * SIZE + 4);
    batch_free(&m);
    free(buf);
    ft_device_free(a);
    ft_device_free(b);
}

static void test_unconnected_sources_and_oversize(void)
{
    struct sockaddr_in as, ac;
    int fs = bound_socket(&as), fc = bound_socket(&ac);
    ft_device *server = open_endpoint(fs, 1000, 1);
    if (!server)
        return;
    uint8_t big[1001] = {0}, ok[1000] = {1};
    sendto(fc, (const char *)big, sizeof(big), 0, (struct sockaddr *)&as, sizeof(as));
    sendto(fc, (const char *)ok, sizeof(ok), 0, (struct sockaddr *)&as, sizeof(as));
    batch_mem m;
    batch_alloc(&m, 8, 8 * 2048 + 1000);
    ft_err e;
    int r = ft_device_recv(server, 0, &m.b, 1000, &e);
    CHECK(r == 1 && m.b.lengths[0] == 1000);
    CHECK(m.addrs[0].family == 4 && m.addrs[0].port == ntohs(ac.sin_port));
    ft_stats s;
    ft_device_get_stats(server, &s);
    CHECK(s.rx_dropped_oversize == 1);

    /* answer to the source, then refuse bad destinations and sizes without sending anything */
    ft_pkt reply = {(const uint8_t *)"pong", 4};
    CHECK(ft_udp_send(server, &reply, 1, &m.addrs[0], 1, FT_FULL_DROP, 0, &e) == 1);
    char back[8];
    CHECK(recv(fc, back, sizeof(back), 0) == 4 && memcmp(back, "pong", 4) == 0); /* fc blocks: it waits */
    CHECK(ft_udp_send(server, &reply, 1, NULL, 0, FT_FULL_DROP, 0, &e) == FT_EINVAL);
    ft_endpoint port0 = m.addrs[0];
    port0.port = 0;
    CHECK(ft_udp_send(server, &reply, 1, &port0, 1, FT_FULL_DROP, 0, &e) == FT_EINVAL && e.index == 0);
    static uint8_t huge[FT_UDP_MAX_PAYLOAD4 + 1];
    ft_pkt two[2] = {{(const uint8_t *)"ok", 2}, {huge, sizeof(huge)}};
    CHECK(ft_udp_send(server, two, 2, &m.addrs[0], 1, FT_FULL_DROP, 0, &e) == FT_EPACKET && e.index == 1);
    /* the generic send path carries datagrams too, without the IP check (connected endpoints only) */
    CHECK(ft_device_send(server, 0, &reply, 1, FT_FULL_DROP, 0, &e) == FT_EINVAL);
    batch_free(&m);
    close_socket(fc);
    ft_device_free(server);
}

static int count_batch(void *user, ft_batch *b)
{
    *(uint32_t *)user += b->count;
    return 0;
}

static void test_reader_and_close_under_it(void)
{
    struct sockaddr_in aa;
    ft_device *a, *b;
    if (!endpoint_pair(&a, &b, &aa, 2048, 1, 0))
        return;
    CHECK(ft_device_send(a, 0, &(ft_pkt){(const uint8_t *)"not an IP packet", 16}, 1, FT_FULL_WAIT, 1000,
                         &(ft_err){0}) == 1);
    batch_mem m;
    batch_alloc(&m, 64, 64 * 2048 + 2048);
    uint32_t seen = 0;
    ft_reader_config cfg = {.batch_size = 64, .spin_us = 50};
    ft_err e;
    ft_reader *r = ft_reader_start(b, 0, &cfg, &m.b, count_batch, &seen, &e);
    CHECK(r != NULL);
    enum { N = 300 };
    ft_pkt pkts[N];
    uint8_t *buf = make_datagrams(N, 500, pkts);
    CHECK(ft_udp_send(a, pkts, N, NULL, 0, FT_FULL_WAIT, 1000, &e) == N);
    for (int i = 0; i < 2000 && ft_atomic_load(&((ft_device *)b)->stats.rx_packets) < N + 1; i++)
        ft_sleep_us(1000);
    ft_device_close(b); /* wakes the reader, which ends with FT_ECLOSED */
    CHECK(ft_reader_join(r, 5000) == FT_OK);
    ft_udp_info info;
    CHECK(ft_udp_get_info(b, &info) == FT_OK && info.rx_messages > 0); /* counters outlive the socket */
    CHECK(ft_udp_fd(b) == -1);
    CHECK(ft_udp_send(b, pkts, 1, &m.addrs[0], 1, FT_FULL_DROP, 0, &e) == FT_ECLOSED);
    CHECK(seen == N + 1);
    CHECK(ft_reader_state(r) == FT_READER_FAILED || ft_reader_state(r) == FT_READER_STOPPED);
    ft_reader_free(r);
    batch_free(&m);
    free(buf);
    ft_device_free(a);
    ft_device_free(b);
}

static void test_not_a_udp_socket(void)
{
    int fd = (int)socket(AF_INET, SOCK_STREAM, 0);
    ft_udp_params p = {.fd = fd};
    ft_device *d = NULL;
    ft_err e;
    CHECK(ft_udp_open(&p, &d, &e) == FT_EINVAL && d == NULL);
    close_socket(fd); /* still ours after a failed open */
    struct sockaddr_in a;
    fd = bound_socket(&a);
    p = (ft_udp_params){.fd = fd, .max_datagram = FT_UDP_MAX_PAYLOAD4 + 1};
    CHECK(ft_udp_open(&p, &d, &e) == FT_EINVAL);
    close_socket(fd);
}

/* Walks a unit as the receive paths do: the lengths delivered, and how many were dropped. */
static uint32_t split(const ft_udp_train *t, uint32_t *lens, uint32_t max_lens, uint32_t *dropped)
{
    uint32_t n = 0, off = 0;
    *dropped = 0;
    while (off < t->full) {
        uint32_t cut = ft_udp_train_cut(t, off);
        if (cut > 0) {
            *dropped += cut;
            break;
        }
        int deliver;
        uint32_t len = ft_udp_train_piece(t, off, &deliver);
        CHECK(len > 0);
        if (deliver && n < max_lens)
            lens[n++] = len;
        else if (!deliver)
            (*dropped)++;
        off += len;
    }
    return n;
}

/* The train splitter on synthetic units (no socket): each datagram that fits is delivered, each other one is
 * counted once, whatever else its train holds. */
static void test_train_splitting(void)
{
    uint32_t lens[64], dropped;
    /* a single datagram: delivered; too large; cut short by its buffer */
    ft_udp_train single = {.full = 900, .copied = 900, .seg = 0, .max = 1000};
    CHECK(split(&single, lens, 64, &dropped) == 1 && lens[0] == 900 && dropped == 0);
    CHECK(!ft_udp_train_coalesced(&single));
    single.full = single.copied = 1001;
    CHECK(split(&single, lens, 64, &dropped) == 0 && dropped == 1);
    ft_udp_train cut_single = {.full = 5000, .copied = 1000, .seg = 0, .max = 1000};
    CHECK(split(&cut_single, lens, 64, &dropped) == 0 && dropped == 1);
    /* [2000, 100] with max 1000: the large segment dropped, its tail delivered */
    ft_udp_train tail = {.full = 2100, .copied = 2100, .seg = 2000, .max = 1000};
    CHECK(ft_udp_train_coalesced(&tail));
    CHECK(split(&tail, lens, 64, &dropped) == 1 && lens[0] == 100 && dropped == 1);
    /* [1500 x 3, 700]: all fit */
    ft_udp_train fits = {.full = 5200, .copied = 5200, .seg = 1500, .max = 1500};
    CHECK(split(&fits, lens, 64, &dropped) == 4 && dropped == 0);
    CHECK(lens[0] == 1500 && lens[2] == 1500 && lens[3] == 700);
    /* a segment size that fits but a buffer cut short in the third segment: two delivered, two counted */
    ft_udp_train cut = {.full = 4000, .copied = 2500, .seg = 1000, .max = 1500};
    CHECK(split(&cut, lens, 64, &dropped) == 2 && dropped == 2);
    /* cut exactly at a segment boundary */
    cut.copied = 3000;
    CHECK(split(&cut, lens, 64, &dropped) == 3 && dropped == 1);
    /* a segment size reported larger than the unit: one datagram */
    ft_udp_train big_seg = {.full = 800, .copied = 800, .seg = 9000, .max = 1000};
    CHECK(split(&big_seg, lens, 64, &dropped) == 1 && lens[0] == 800 && dropped == 0);
    /* 64 one-byte segments, the largest count a kernel coalesces */
    ft_udp_train tiny = {.full = 64, .copied = 64, .seg = 1, .max = 1};
    CHECK(split(&tiny, lens, 64, &dropped) == 64 && dropped == 0);
    /* the largest unit, the lengths near UINT32_MAX arithmetic would wrap at */
    ft_udp_train huge = {.full = 0xFFFFFFFFu, .copied = 65536, .seg = 0x80000000u, .max = 65535};
    CHECK(split(&huge, lens, 64, &dropped) == 0 && dropped == 2);
    /* every combination of small lengths: delivered + dropped == datagrams in the unit, in order */
    for (uint32_t full = 1; full <= 40; full++)
        for (uint32_t seg = 0; seg <= 41; seg++)
            for (uint32_t copied = 0; copied <= full; copied++)
                for (uint32_t max = 1; max <= 12; max += 5) {
                    ft_udp_train t = {.full = full, .copied = copied, .seg = seg, .max = max};
                    uint32_t s = ft_udp_train_seg(&t), units = (full + s - 1) / s;
                    uint32_t n = split(&t, lens, 64, &dropped);
                    uint32_t expect = 0;
                    for (uint32_t off = 0; off < full; off += s) {
                        uint32_t len = full - off < s ? full - off : s;
                        expect += len <= max && off + len <= copied;
                    }
                    if (n + dropped != units || n != expect)
                        CHECK(0);
                }
}

/* The lengths of the runs ft_udp_run cuts pkts into. */
static uint32_t runs_of(const ft_pkt *pkts, uint32_t n, const ft_endpoint *dsts, const ft_udp_run_limits *lim,
                        uint32_t *runs, uint32_t max_runs)
{
    uint32_t i = 0, r = 0;
    while (i < n) {
        uint64_t total, sum = 0;
        uint32_t k = ft_udp_run(pkts + i, n - i, dsts ? dsts + i : NULL, lim, &total);
        CHECK(k >= 1 && k <= n - i);
        for (uint32_t j = 0; j < k; j++)
            sum += pkts[i + j].len;
        if (sum != total)
            CHECK(0);
        if (r < max_runs)
            runs[r++] = k;
        i += k;
    }
    return r;
}

static void set_lengths(ft_pkt *pkts, const uint32_t *lens, uint32_t n)
{
    static const uint8_t bytes[1] = {0};
    for (uint32_t i = 0; i < n; i++)
        pkts[i] = (ft_pkt){bytes, lens[i]};
}

/* The run grouping on synthetic sends (no socket): equal sizes to one destination form a run, a shorter one ends
 * it (or goes alone where short tails are not allowed), and every limit cuts where it says. */
static void test_run_grouping(void)
{
    ft_pkt pkts[200];
    uint32_t runs[200];
    ft_udp_run_limits lim = {.max_segments = 64, .max_segment = 65507, .max_total = 65507, .short_tail = 1};
    /* [1200 x 3, 700, 1200]: the short one ends the first run */
    uint32_t a[] = {1200, 1200, 1200, 700, 1200};
    set_lengths(pkts, a, 5);
    CHECK(runs_of(pkts, 5, NULL, &lim, runs, 200) == 2 && runs[0] == 4 && runs[1] == 1);
    /* no short tails (Windows USO): the short one goes alone */
    lim.short_tail = 0;
    CHECK(runs_of(pkts, 5, NULL, &lim, runs, 200) == 3 && runs[0] == 3 && runs[1] == 1 && runs[2] == 1);
    lim.short_tail = 1;
    /* a larger one starts a new run; an empty datagram is never segmented */
    uint32_t b[] = {500, 500, 900, 900, 0, 0, 900};
    set_lengths(pkts, b, 7);
    CHECK(runs_of(pkts, 7, NULL, &lim, runs, 200) == 5 && runs[0] == 2 && runs[1] == 2 && runs[2] == 1 &&
          runs[3] == 1 && runs[4] == 1);
    /* 150 equal datagrams: runs of at most max_segments */
    for (uint32_t i = 0; i < 150; i++)
        pkts[i] = (ft_pkt){pkts[0].data, 100};
    CHECK(runs_of(pkts, 150, NULL, &lim, runs, 200) == 3 && runs[0] == 64 && runs[1] == 64 && runs[2] == 22);
    /* max_total: 1400-byte datagrams, 65507 bytes hold 46 of them */
    for (uint32_t i = 0; i < 150; i++)
        pkts[i].len = 1400;
    CHECK(runs_of(pkts, 150, NULL, &lim, runs, 200) == 4 && runs[0] == 46 && runs[3] == 150 - 3 * 46);
    /* segmentation off (max_segments 1), and a segment size above what the socket accepted */
    lim.max_segments = 1;
    CHECK(runs_of(pkts, 10, NULL, &lim, runs, 200) == 10);
    lim.max_segments = 64;
    lim.max_segment = 1399;
    CHECK(runs_of(pkts, 10, NULL, &lim, runs, 200) == 10);
    lim.max_segment = 1400;
    CHECK(runs_of(pkts, 10, NULL, &lim, runs, 200) == 1 && runs[0] == 10);
    /* per-datagram destinations: a run never crosses a change of destination (address, port, family, zone) */
    ft_endpoint d[6];
    memset(d, 0, sizeof(d));
    for (int i = 0; i < 6; i++) {
        d[i].family = 4;
        d[i].port = 5000;
        d[i].addr[0] = 10;
    }
    d[2].port = 5001;
    d[4].family = 6;
    d[5].family = 6;
    d[5].scope_id = 3;
    CHECK(runs_of(pkts, 6, d, &lim, runs, 200) == 5 && runs[0] == 2 && runs[1] == 1 && runs[2] == 1);
    d[3].port = 5001;
    CHECK(runs_of(pkts, 6, d, &lim, runs, 200) == 4 && runs[0] == 2 && runs[1] == 2);
    d[1].addr[3] = 1;
    CHECK(runs_of(pkts, 2, d, &lim, runs, 200) == 2);
    /* against a model, every sequence of lengths from {0, 1, 2, 3} up to 7 datagrams, with small limits */
    for (uint32_t n = 1; n <= 7; n++) {
        uint32_t combos = 1;
        for (uint32_t i = 0; i < n; i++)
            combos *= 4;
        for (uint32_t c = 0; c < combos; c++) {
            uint32_t lens[7], x = c;
            for (uint32_t i = 0; i < n; i++, x /= 4)
                lens[i] = x % 4;
            set_lengths(pkts, lens, n);
            for (int tail = 0; tail <= 1; tail++) {
                ft_udp_run_limits l = {.max_segments = 3, .max_segment = 2, .max_total = 7, .short_tail = tail};
                uint64_t total;
                uint32_t k = ft_udp_run(pkts, n, NULL, &l, &total), expect = 1;
                uint64_t sum = lens[0];
                if (lens[0] > 0 && lens[0] <= 2)
                    while (expect < n && expect < 3 && lens[expect] > 0 && sum + lens[expect] <= 7 &&
                           (lens[expect] == lens[0] || (tail && lens[expect] < lens[0]))) {
                        sum += lens[expect++];
                        if (lens[expect - 1] < lens[0])
                            break;
                    }
                if (k != expect || total != sum)
                    CHECK(0);
            }
        }
    }
}

/* The guard against receive offloads that coalesce wrongly, on synthetic units. */
static void test_malformed_units(void)
{
    ft_udp_train t = {.full = 12000, .copied = 12000, .seg = 1200, .max = 1500};
    CHECK(!ft_udp_train_malformed(&t, 1, FT_UDP_MAX_PAYLOAD4));
    t.seg = 0; /* a coalesced unit without a segment size */
    CHECK(ft_udp_train_malformed(&t, 1, FT_UDP_MAX_PAYLOAD4));
    t.seg = FT_UDP_MAX_PAYLOAD4 + 1; /* a segment larger than any datagram */
    CHECK(ft_udp_train_malformed(&t, 1, FT_UDP_MAX_PAYLOAD4));
    CHECK(!ft_udp_train_malformed(&t, 1, FT_UDP_MAX_PAYLOAD6));
    /* no segment size: a datagram as long as one can be is one, a longer "datagram" is several */
    ft_udp_train single = {.full = FT_UDP_MAX_PAYLOAD4, .copied = FT_UDP_MAX_PAYLOAD4, .seg = 0, .max = 1500};
    CHECK(!ft_udp_train_malformed(&single, 0, FT_UDP_MAX_PAYLOAD4));
    single.full = single.copied = FT_UDP_MAX_PAYLOAD4 + 1;
    CHECK(ft_udp_train_malformed(&single, 0, FT_UDP_MAX_PAYLOAD4));
    CHECK(!ft_udp_train_malformed(&single, 0, FT_UDP_MAX_PAYLOAD6));
}

/* A UDP socket of the family on loopback, its address in *ss. */
static int bound_family_socket(int family, struct sockaddr_storage *ss)
{
    int fd = (int)socket(family, SOCK_DGRAM, 0);
    if (fd < 0)
        return -1;
    memset(ss, 0, sizeof(*ss));
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    }
    if (bind(fd, (struct sockaddr *)ss, len) != 0 || getsockname(fd, (struct sockaddr *)ss, &len) != 0) {
        close_socket(fd);
        return -1;
    }
    return fd;
}

static void endpoint_of(const struct sockaddr_storage *ss, ft_endpoint *ep)
{
    memset(ep, 0, sizeof(*ep));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        ep->family = 4;
        ep->port = ntohs(a->sin_port);
        memcpy(ep->addr, &a->sin_addr, 4);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        ep->family = 6;
        ep->port = ntohs(a->sin6_port);
        memcpy(ep->addr, &a->sin6_addr, 16);
    }
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Receives `count` datagrams of `size` bytes on d and checks that they carry the indexes `want` in order and
 * came from `port` over the family. */
static void expect_datagrams(ft_device *d, const uint32_t *want, uint32_t count, uint32_t size, uint8_t family,
                             uint16_t port)
{
    batch_mem m;
    batch_alloc(&m, 7, 7 * 2048 + 65535);
    uint32_t got = 0;
    int ok = 1;
    ft_err e;
    for (int tries = 0; got < count && tries < 100; tries++) {
        int r = ft_device_recv(d, 0, &m.b, 1000, &e);
        if (r <= 0)
            break;
        for (int i = 0; i < r; i++, got++) {
            uint32_t idx;
            memcpy(&idx, m.b.data + m.b.offsets[i], sizeof(idx));
            if (got >= count || idx != want[got] || m.b.lengths[i] != size || m.addrs[i].family != family ||
                m.addrs[i].port != port)
                ok = 0;
        }
    }
    CHECK(got == count);
    CHECK(ok);
    batch_free(&m);
}

/* An unconnected endpoint sending each datagram to its own destination, IPv4 and IPv6: runs to one destination
 * may be segmented, a change of destination always starts a new message, and each datagram arrives where it was
 * sent, from the sender's address. */
static void test_per_datagram_destinations(int family)
{
    struct sockaddr_storage ss, s1, s2;
    int fs = bound_family_socket(family, &ss), f1 = bound_family_socket(family, &s1),
        f2 = bound_family_socket(family, &s2);
    CHECK(fs >= 0 && f1 >= 0 && f2 >= 0);
    if (fs < 0 || f1 < 0 || f2 < 0)
        return;
    ft_device *s = open_endpoint(fs, 0, 1), *r1 = open_endpoint(f1, 0, 1), *r2 = open_endpoint(f2, 0, 1);
    if (!s || !r1 || !r2)
        return;
    enum { N = 10, SIZE = 300 };
    ft_pkt pkts[N];
    uint8_t *buf = make_datagrams(N, SIZE, pkts);
    ft_endpoint e1, e2, to[N];
    endpoint_of(&s1, &e1);
    endpoint_of(&s2, &e2);
    static const int second[N] = {0, 0, 0, 1, 1, 0, 0, 0, 0, 1};
    for (int i = 0; i < N; i++)
        to[i] = second[i] ? e2 : e1;
    ft_err e;
    CHECK(ft_udp_send(s, pkts, N, to, N, FT_FULL_WAIT, 1000, &e) == N);
    static const uint32_t want1[] = {0, 1, 2, 5, 6, 7, 8}, want2[] = {3, 4, 9};
    uint8_t fam = family == AF_INET ? 4 : 6;
    expect_datagrams(r1, want1, 7, SIZE, fam, port_of(&ss));
    expect_datagrams(r2, want2, 3, SIZE, fam, port_of(&ss));
    ft_udp_info info;
    CHECK(ft_udp_get_info(s, &info) == FT_OK);
    /* segmented: [0-2] [3-4] [5-8] [9]; one datagram per message: 10 */
    CHECK(info.gso ? info.tx_messages == 4 && info.gso_messages == 3 : info.tx_messages == N);
    free(buf);
    ft_device_free(s);
    ft_device_free(r1);
    ft_device_free(r2);
}

#ifdef _WIN32
static int under_wine(void)
{
    HMODULE ntdll = GetModuleHandleA("ntdll.dll");
    return ntdll && GetProcAddress(ntdll, "wine_get_version") != NULL;
}

/* n connected datagrams of `size` from a to b, received in order. */
static void connected_round(ft_device *a, ft_device *b, uint32_t n, uint32_t size, uint16_t from_port)
{
    ft_pkt pkts[64];
    uint32_t want[64];
    uint8_t *buf = make_datagrams(n, size, pkts);
    for (uint32_t i = 0; i < n; i++)
        want[i] = i;
    ft_err e;
    CHECK(ft_udp_send(a, pkts, n, NULL, 0, FT_FULL_WAIT, 1000, &e) == (int)n);
    expect_datagrams(b, want, n, size, 4, from_port);
    free(buf);
}

/* The Windows paths as Winsock offers them: the message calls in use, the offloads as probed (exactly what Wine
 * has: WSARecvMsg and WSASendMsg, no UDP_SEND_MSG_SIZE or UDP_RECV_MAX_COALESCED_SIZE), large socket buffers,
 * the URO guard switching URO off on a unit that cannot be right, and the recvfrom/sendto fallback. */
static void test_windows_paths(void)
{
    struct sockaddr_in aa;
    ft_device *a, *b;
    if (!endpoint_pair(&a, &b, &aa, 0, 1, 0))
        return;
    ft_udp_info ia, ib;
    CHECK(ft_udp_get_info(a, &ia) == FT_OK && ft_udp_get_info(b, &ib) == FT_OK);
    CHECK(ia.message_calls == 1 && ib.message_calls == 1);
    CHECK(ia.rcvbuf >= FT_UDP_WIN_DEFAULT_BUF && ia.sndbuf >= FT_UDP_WIN_DEFAULT_BUF);
    if (under_wine())
        CHECK(!ia.gso_supported && !ia.gro_supported && !ia.gso && !ia.gro);
    else
        CHECK(ia.gso == ia.gso_supported && ia.gro == ia.gro_supported);
    uint16_t port_a = ntohs(aa.sin_port);
    connected_round(a, b, 20, 500, port_a);
    CHECK(ft_udp_get_info(a, &ia) == FT_OK && ft_udp_get_info(b, &ib) == FT_OK);
    CHECK(ia.gso ? ia.gso_messages > 0 : ia.tx_calls == 20 && ia.tx_messages == 20);
    CHECK(ib.gro || ib.rx_calls == 20);

    if (under_wine()) {
        /* Wine takes a UDP_SEND_MSG_SIZE control message and ignores it: a run leaves as one datagram. This is
         * why USO is used only where the probe found it. */
        ft_atomic_store(&U(a)->gso, 1);
        ft_pkt pkts[3];
        uint8_t *buf = make_datagrams(3, 100, pkts);
        ft_err e;
        CHECK(ft_udp_send(a, pkts, 3, NULL, 0, FT_FULL_WAIT, 1000, &e) == 3);
        uint32_t zero = 0;
        expect_datagrams(b, &zero, 1, 300, 4, port_a);
        CHECK(ft_udp_get_info(a, &ia) == FT_OK && ia.gso_messages == 1 && ia.gso_fallbacks == 0);
        ft_atomic_store(&U(a)->gso, 0);
        free(buf);

        /* URO's path with Wine's plain datagrams (no control message: single datagrams), a batch table smaller
         * than what waits; then a "single" longer than the largest payload (shrunk here to 400 bytes) is a train
         * without its segment size: dropped, counted, and URO off for good */
        U(b)->os.unit = malloc(256u << 10);
        U(b)->os.unit_size = 256u << 10;
        ft_atomic_store(&U(b)->gro, 1);
        connected_round(a, b, 20, 300, port_a);
        CHECK(ft_udp_get_info(b, &ib) == FT_OK && ib.gro && ib.gro_malformed == 0 && ib.gro_messages == 0);
        U(b)->max_payload = 400;
        ft_pkt big = {pkts[0].data, 0};
        uint8_t payload[500] = {0};
        big.data = payload;
        big.len = sizeof(payload);
        CHECK(ft_udp_send(a, &big, 1, NULL, 0, FT_FULL_WAIT, 1000, &e) == 1);
        connected_round(a, b, 5, 300, port_a); /* arrive after the malformed one, on the plain path */
        U(b)->max_payload = FT_UDP_MAX_PAYLOAD4;
        CHECK(ft_udp_get_info(b, &ib) == FT_OK && !ib.gro && ib.gro_malformed == 1);
        ft_stats s;
        ft_device_get_stats(b, &s);
        CHECK(s.rx_packets == 20 + 1 + 20 + 5);
    }

    /* the per-datagram fallback: recvfrom/sendto */
    ft_atomic_store(&U(a)->os.sendmsg_on, 0);
    ft_atomic_store(&U(b)->os.recvmsg_on, 0);
    CHECK(ft_udp_get_info(a, &ia) == FT_OK && ia.message_calls == 0);
    uint64_t calls_before = ia.tx_calls;
    connected_round(a, b, 20, 700, port_a);
    CHECK(ft_udp_get_info(a, &ia) == FT_OK && ia.tx_calls == calls_before + 20);
    ft_device_free(a);
    ft_device_free(b);
}
#endif

/* per_datagram: 0 or 1; on Windows the recvfrom/sendto path from the start, without USO/URO, one call per datagram;
 * Linux has no such path and says so. */
static void test_per_datagram_option(void)
{
    struct sockaddr_in aa, ab;
    int fa = bound_socket(&aa), fb = bound_socket(&ab);
    ft_device *a = NULL;
    ft_err e;
    ft_udp_params p = {.fd = fa, .gso = 1, .gro = 1, .per_datagram = 2};
    CHECK(ft_udp_open(&p, &a, &e) == FT_EINVAL && a == NULL);
    p.per_datagram = -1;
    CHECK(ft_udp_open(&p, &a, &e) == FT_EINVAL && a == NULL);
    p.per_datagram = 1;
#ifdef _WIN32
    CHECK(connect(fa, (struct sockaddr *)&ab, sizeof(ab)) == 0);
    CHECK(ft_udp_open(&p, &a, &e) == FT_OK);
    p.fd = fb;
    ft_device *b = NULL;
    CHECK(ft_udp_open(&p, &b, &e) == FT_OK);
    if (!a || !b)
        return;
    ft_udp_info ia, ib;
    CHECK(ft_udp_get_info(a, &ia) == FT_OK && ft_udp_get_info(b, &ib) == FT_OK);
    CHECK(ia.message_calls == 0 && ib.message_calls == 0 && !ia.gso && !ia.gro && !ib.gso && !ib.gro);
    CHECK(ia.message_fallbacks == 0); /* chosen, not fallen back to */
    connected_round(a, b, 20, 700, ntohs(aa.sin_port));
    CHECK(ft_udp_get_info(a, &ia) == FT_OK && ft_udp_get_info(b, &ib) == FT_OK);
    CHECK(ia.tx_calls == 20 && ia.tx_messages == 20 && ib.rx_calls == 20 && ib.gro_messages == 0);
    ft_device_free(a);
    ft_device_free(b);
#else
    CHECK(ft_udp_open(&p, &a, &e) == FT_EUNSUPPORTED && a == NULL);
    CHECK(strstr(e.msg, "Windows") != NULL);
    close_socket(fa); /* still ours after a failed open */
    close_socket(fb);
#endif
}

int main(void)
{
#ifdef _WIN32
    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        return 2;
#endif
    test_train_splitting();
    test_run_grouping();
    test_malformed_units();
    test_runs_both_ways(1, 256);
    test_runs_both_ways(1, 7); /* a coalesced read spread over many receives */
    test_runs_both_ways(0, 64);
    test_unconnected_sources_and_oversize();
    test_reader_and_close_under_it();
    test_not_a_udp_socket();
    test_per_datagram_destinations(AF_INET);
    test_per_datagram_destinations(AF_INET6);
    test_per_datagram_option();
#ifdef _WIN32
    test_windows_paths();
#endif
    return check_summary();
}
