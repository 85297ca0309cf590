/* ftb.h - what the C baselines share: a monotonic clock in seconds, pinning the process to one CPU, and the
 * end of input that tells a long-running baseline to stop. Included after the system headers, with _GNU_SOURCE
 * defined (for the CPU set). */
#ifndef FTB_H
#define FTB_H

#include <sched.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Keeps the process on `cpu` (none if negative): the sender and the reader on different CPUs, which
 * wake-affine scheduling would otherwise make share one. */
static inline void pin_to_cpu(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

/* The harness stops a long-running baseline by closing its stdin: true once poll(2) said stdin is readable
 * (revents) and it was at its end. */
static inline int stdin_ended(short revents)
{
    char junk[64];
    return revents && read(0, junk, sizeof junk) <= 0;
}

#endif
