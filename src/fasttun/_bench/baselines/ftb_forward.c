/* ftb_forward.c - the C per-packet forwarder: two inherited TUN file descriptors, every packet read from one
 * (one read(2) each) is written to the other (one write(2) each); poll(2) when both are empty. Runs until its
 * standard input closes. Prints one JSON line with its counts. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ftb.h"

/* Packets moved per descriptor before looking at the other one, so one direction cannot starve the other. */
#define BURST 64

static void usage(void)
{
    fprintf(stderr, "usage: ftb_forward -a FD -b FD   (stops when standard input closes)\n");
    exit(2);
}

static long long errors;

static long long move(int from, int to, unsigned char *buf, size_t cap)
{
    long long n = 0;
    while (n < BURST) {
        ssize_t r = read(from, buf, cap);
        if (r <= 0) {
            if (r < 0 && errno != EAGAIN && errno != EINTR)
                errors++;
            break;
        }
        if (write(to, buf, (size_t)r) != r)
            errors++;
        n++;
    }
    return n;
}

int main(int argc, char **argv)
{
    int a = -1, b = -1, opt;
    while ((opt = getopt(argc, argv, "a:b:")) != -1) {
        switch (opt) {
        case 'a': a = atoi(optarg); break;
        case 'b': b = atoi(optarg); break;
        default: usage();
        }
    }
    if (a < 0 || b < 0)
        usage();
    fcntl(a, F_SETFL, fcntl(a, F_GETFL) | O_NONBLOCK);
    fcntl(b, F_SETFL, fcntl(b, F_GETFL) | O_NONBLOCK);
    static unsigned char buf[65536];
    long long forwarded = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        long long moved = move(a, b, buf, sizeof buf) + move(b, a, buf, sizeof buf);
        forwarded += moved;
        if (moved > 0)
            continue;
        struct pollfd p[3] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        if (poll(p, 3, 1000) < 0 && errno != EINTR)
            break;
        if (stdin_ended(p[2].revents))
            break;
    }
    printf("{\"packets\": %lld, \"errors\": %lld}\n", forwarded, errors);
    return 0;
}
