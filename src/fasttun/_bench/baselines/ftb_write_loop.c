/* ftb_write_loop.c - the C floor for sending: one write(2) per packet of a prepared IPv4/UDP packet to an
 * inherited TUN file descriptor, for COUNT packets or SECONDS. Prints one JSON line. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ftb.h"

static void usage(void)
{
    fprintf(stderr, "usage: ftb_write_loop -f FD -S SRC_IPV4 -D DST_IPV4 [-P PORT] [-s IP_PACKET_BYTES] [-c COUNT] "
                    "[-t SECONDS]\n");
    exit(2);
}

static uint16_t ip_checksum(const uint8_t *p, size_t n)
{
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

int main(int argc, char **argv)
{
    int fd = -1, port = 9000, size = 64, opt;
    const char *src = NULL, *dst = NULL;
    long long count = 100000000;
    double seconds = 10.0;
    while ((opt = getopt(argc, argv, "f:S:D:P:s:c:t:")) != -1) {
        switch (opt) {
        case 'f': fd = atoi(optarg); break;
        case 'S': src = optarg; break;
        case 'D': dst = optarg; break;
        case 'P': port = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 'c': count = atoll(optarg); break;
        case 't': seconds = atof(optarg); break;
        default: usage();
        }
    }
    if (fd < 0 || !src || !dst || size < 28 || size > 65535 || count < 1 || seconds <= 0)
        usage();
    static uint8_t pkt[65536];
    memset(pkt, 0, sizeof pkt);
    pkt[0] = 0x45;
    pkt[2] = (uint8_t)(size >> 8);
    pkt[3] = (uint8_t)size;
    pkt[8] = 64;
    pkt[9] = 17; /* UDP */
    if (inet_pton(AF_INET, src, pkt + 12) != 1 || inet_pton(AF_INET, dst, pkt + 16) != 1)
        usage();
    uint16_t c = ip_checksum(pkt, 20);
    pkt[10] = (uint8_t)(c >> 8);
    pkt[11] = (uint8_t)c;
    uint8_t *udp = pkt + 20;
    udp[0] = 40000 >> 8;
    udp[1] = 40000 & 0xff;
    udp[2] = (uint8_t)(port >> 8);
    udp[3] = (uint8_t)port;
    udp[4] = (uint8_t)((size - 20) >> 8);
    udp[5] = (uint8_t)(size - 20); /* checksum 0: none, allowed for UDP over IPv4 */
    long long sent = 0, errors = 0;
    double t0 = now(), deadline = t0 + seconds, t = t0;
    while (sent < count) {
        ssize_t r = write(fd, pkt, (size_t)size);
        if (r == size)
            sent++;
        else if (r < 0 && errno != EINTR && errno != EAGAIN)
            errors++;
        if ((sent & 63) == 0) {
            t = now();
            if (t >= deadline)
                break;
        }
    }
    t = now();
    printf("{\"packets\": %lld, \"bytes\": %lld, \"errors\": %lld, \"seconds\": %.6f}\n", sent,
           sent * (long long)size, errors, t - t0);
    return 0;
}
