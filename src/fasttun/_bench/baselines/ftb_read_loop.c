/* ftb_read_loop.c - the C floor for receiving: one read(2) per packet from an inherited TUN file descriptor,
 * poll(2) when the queue is empty. Stops after COUNT packets, after the queue stayed empty for IDLE_MS, or
 * after SECONDS (idleness counts only once a packet came). The clock runs from the first read to the last packet. Prints one JSON line. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: ftb_read_loop -f FD [-c COUNT] [-i IDLE_MS] [-t SECONDS] [-a CPU]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int cpu = -1;
    int fd = -1, idle_ms = 300, opt;
    long long count = -1;
    double seconds = 30.0;
    while ((opt = getopt(argc, argv, "f:c:i:t:a:")) != -1) {
        switch (opt) {
        case 'f': fd = atoi(optarg); break;
        case 'c': count = atoll(optarg); break;
        case 'i': idle_ms = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'a': cpu = atoi(optarg); break;
        default: usage();
        }
    }
    if (cpu >= 0) {
        /* Keep the sender and the reader on different CPUs: with wake-affine scheduling they would share one. */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0)
            perror("sched_setaffinity");
    }
    if (fd < 0 || idle_ms < 1)
        usage();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    static unsigned char buf[65536];
    long long packets = 0, bytes = 0, errors = 0;
    double t0 = now(), last = t0, deadline = t0 + seconds;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
            packets++;
            bytes += r;
            if (packets == count) {
                last = now();
                break;
            }
            continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            errors++;
            if (errors > 1000)
                break;
            continue;
        }
        last = now();
        if (last >= deadline)
            break;
        /* Before the first packet, wait for it as long as the deadline allows. */
        int wait_ms = packets > 0 ? idle_ms : (int)((deadline - last) * 1000.0) + 1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, wait_ms);
        if (ready == 0 && packets > 0)
            break; /* idle: the queue has been drained */
    }
    printf("{\"packets\": %lld, \"bytes\": %lld, \"errors\": %lld, \"seconds\": %.6f}\n", packets, bytes, errors,
           last - t0);
    return 0;
}
