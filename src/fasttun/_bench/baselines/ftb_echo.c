/* ftb_echo.c - the C ICMP echo responder: reads packets from an inherited TUN file descriptor (one read(2)
 * each, poll(2) when there are none), turns IPv4 echo requests into replies and writes them back (one
 * write(2) each). Runs until its standard input closes. Prints one JSON line with its counts and CPU time. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ftb.h"

static void usage(void)
{
    fprintf(stderr, "usage: ftb_echo -f FD   (stops when standard input closes)\n");
    exit(2);
}

/* Echo request -> echo reply in place: swap the addresses (the IPv4 header checksum does not change) and
 * patch the ICMP checksum for the type change from 8 to 0 (RFC 1624). Returns 0 if p is no echo request. */
static int make_reply(uint8_t *p, size_t n)
{
    if (n < 28 || (p[0] >> 4) != 4 || p[9] != 1)
        return 0;
    size_t ihl = (size_t)(p[0] & 0x0f) * 4;
    if (ihl < 20 || n < ihl + 8 || p[ihl] != 8)
        return 0;
    uint8_t tmp[4];
    memcpy(tmp, p + 12, 4);
    memcpy(p + 12, p + 16, 4);
    memcpy(p + 16, tmp, 4);
    uint8_t *icmp = p + ihl;
    icmp[0] = 0;
    uint32_t sum = (uint32_t)(icmp[2] << 8 | icmp[3]) + 0x0800;
    sum = (sum & 0xffff) + (sum >> 16);
    icmp[2] = (uint8_t)(sum >> 8);
    icmp[3] = (uint8_t)sum;
    return 1;
}

int main(int argc, char **argv)
{
    int fd = -1, opt;
    while ((opt = getopt(argc, argv, "f:")) != -1) {
        if (opt == 'f')
            fd = atoi(optarg);
        else
            usage();
    }
    if (fd < 0)
        usage();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    static uint8_t buf[65536];
    long long packets = 0, replies = 0, errors = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            break;
        if (stdin_ended(p[1].revents))
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        for (;;) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno != EAGAIN && errno != EINTR)
                    errors++;
                break;
            }
            packets++;
            if (make_reply(buf, (size_t)r)) {
                if (write(fd, buf, (size_t)r) == r)
                    replies++;
                else
                    errors++;
            }
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"packets\": %lld, \"replies\": %lld, \"errors\": %lld, \"cpu_seconds\": %.6f}\n", packets, replies,
           errors, cpu);
    return 0;
}
