/* ftb_read_loop.c - the C floor for receiving: one read(2) per packet from an inherited TUN file descriptor,
 * poll(2) when the queue is empty. Stops after COUNT packets, after the queue stayed empty for IDLE_MS, or
 * after SECONDS (idleness counts only once a packet came). The clock runs from the first read to the last
 * packet. Prints one JSON line.
 *
 * -b: the same loop beside a second thread that spins for as long as it runs: the ceiling for a reader that
 * reads on one thread while another is busy (fasttun's pipelined reader with its callback). Like fasttun's
 * reading thread, the loop then keeps a descriptor table of its own and calls read(2) directly, not through
 * glibc's wrapper (which in a process with two threads switches cancellation state around each call); what
 * stays is the cost, on the machine at hand, of a second CPU being busy. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ftb.h"

static atomic_int busy_stop;

static void *busy(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&busy_stop, memory_order_relaxed)) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    return NULL;
}

static ssize_t plain_read(int fd, void *buf, size_t len) { return read(fd, buf, len); }
static ssize_t raw_read(int fd, void *buf, size_t len) { return (ssize_t)syscall(SYS_read, fd, buf, len); }

static void usage(void)
{
    fprintf(stderr, "usage: ftb_read_loop -f FD [-c COUNT] [-i IDLE_MS] [-t SECONDS] [-a CPU] [-b]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int cpu = -1;
    int fd = -1, idle_ms = 300, opt, beside_busy = 0;
    long long count = -1;
    double seconds = 30.0;
    while ((opt = getopt(argc, argv, "f:c:i:t:a:b")) != -1) {
        switch (opt) {
        case 'f': fd = atoi(optarg); break;
        case 'c': count = atoll(optarg); break;
        case 'i': idle_ms = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'a': cpu = atoi(optarg); break;
        case 'b': beside_busy = 1; break;
        default: usage();
        }
    }
    pin_to_cpu(cpu);
    if (fd < 0 || idle_ms < 1)
        usage();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    ssize_t (*read_one)(int, void *, size_t) = plain_read;
    pthread_t spinner;
    if (beside_busy) {
        if (pthread_create(&spinner, NULL, busy, NULL) != 0) {
            fprintf(stderr, "ftb_read_loop: pthread_create failed\n");
            return 1;
        }
        if (unshare(CLONE_FILES) != 0)
            perror("unshare(CLONE_FILES)");
        read_one = raw_read;
    }
    static unsigned char buf[65536];
    long long packets = 0, bytes = 0, errors = 0;
    double t0 = now(), last = t0, deadline = t0 + seconds;
    for (;;) {
        ssize_t r = read_one(fd, buf, sizeof buf);
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
    if (beside_busy) {
        atomic_store(&busy_stop, 1);
        pthread_join(spinner, NULL);
    }
    printf("{\"packets\": %lld, \"bytes\": %lld, \"errors\": %lld, \"seconds\": %.6f}\n", packets, bytes, errors,
           last - t0);
    return 0;
}
