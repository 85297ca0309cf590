/* posix/ft_posix_os.c - ft_os.h for Linux and other POSIX systems. */
#ifndef _WIN32
#define _GNU_SOURCE
#include "core/ft_os.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#include <sched.h>
#include <sys/syscall.h>
#ifndef SYS_close_range
#define SYS_close_range 436 /* Linux 5.9; one number on every architecture */
#endif
#endif

struct ft_event {
    int rfd; /* readable while set */
    int wfd; /* == rfd for an eventfd */
};

ft_event *ft_event_create(void)
{
    ft_event *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return NULL;
#ifdef __linux__
    ev->rfd = ev->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ev->rfd < 0) {
        free(ev);
        return NULL;
    }
#else
    int fds[2];
    if (pipe(fds) != 0) {
        free(ev);
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    ev->rfd = fds[0];
    ev->wfd = fds[1];
#endif
    return ev;
}

void ft_event_destroy(ft_event *ev)
{
    if (!ev)
        return;
    close(ev->rfd);
    if (ev->wfd != ev->rfd)
        close(ev->wfd);
    free(ev);
}

/* Callers keep their own flags so that the hot path never sets or resets an event needlessly; these
 * are plain syscalls. EAGAIN on write means the counter is already non-zero: the event is set. */
void ft_event_set(ft_event *ev)
{
#ifdef __linux__
    uint64_t one = 1;
    ssize_t r = write(ev->wfd, &one, sizeof(one));
#else
    char one = 1;
    ssize_t r = write(ev->wfd, &one, 1);
#endif
    (void)r;
}

void ft_event_reset(ft_event *ev)
{
    char buf[64];
    while (read(ev->rfd, buf, sizeof(buf)) > 0) {
    }
}

int ft_event_is_set(ft_event *ev)
{
    struct pollfd p = {ev->rfd, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

ft_handle ft_event_handle(ft_event *ev) { return ev->rfd; }

#ifdef __linux__
int ft_thread_private_fds(const ft_handle *keep, int n)
{
    if (n < 0 || n > FT_PRIVATE_FDS_MAX)
        return -1;
    unsigned int fds[FT_PRIVATE_FDS_MAX + 3] = {0, 1, 2};
    int m = 3;
    for (int i = 0; i < n; i++) {
        if (keep[i] < 0)
            return -1;
        fds[m++] = (unsigned int)keep[i];
    }
    for (int i = 1; i < m; i++) /* sort (insertion: a handful of numbers) */
        for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
            unsigned int t = fds[j];
            fds[j] = fds[j - 1];
            fds[j - 1] = t;
        }
    /* An empty range past any descriptor: 0 where close_range exists. Without it the copied table could not
     * be trimmed, and every file open now would stay open as long as this thread runs. */
    if (syscall(SYS_close_range, ~0u, ~0u, 0) != 0)
        return -1;
    if (unshare(CLONE_FILES) != 0)
        return -1;
    unsigned int next = 0;
    for (int i = 0; i < m; i++) {
        if (fds[i] > next)
            (void)syscall(SYS_close_range, next, fds[i] - 1, 0);
        next = fds[i] + 1;
    }
    (void)syscall(SYS_close_range, next, ~0u, 0);
    return 0;
}
#else
int ft_thread_private_fds(const ft_handle *keep, int n)
{
    (void)keep;
    (void)n;
    return -1;
}
#endif

int ft_wait_any(const ft_handle *handles, int n, int want_write_first, int timeout_ms, long *oserr)
{
    struct pollfd pfd[FT_WAIT_MAX];
    if (n <= 0 || n > FT_WAIT_MAX) {
        if (oserr)
            *oserr = EINVAL;
        return FT_WAIT_ERROR;
    }
    for (int i = 0; i < n; i++) {
        pfd[i].fd = handles[i];
        pfd[i].events = POLLIN;
        pfd[i].revents = 0;
    }
    if (want_write_first)
        pfd[0].events = POLLOUT;
    uint64_t deadline = timeout_ms > 0 ? ft_now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    for (;;) {
        int r = poll(pfd, (nfds_t)n, timeout_ms);
        if (r > 0)
            break;
        if (r == 0)
            return FT_WAIT_TIMEOUT;
        if (errno != EINTR) {
            if (oserr)
                *oserr = errno;
            return FT_WAIT_ERROR;
        }
        if (timeout_ms > 0) {
            uint64_t now = ft_now_ns();
            if (now >= deadline)
                return FT_WAIT_TIMEOUT;
            timeout_ms = (int)((deadline - now + 999999u) / 1000000u);
        }
    }
    /* Prefer the wake-up handles (the last ones) so stop and close win over more traffic. */
    for (int i = n - 1; i >= 0; i--)
        if (pfd[i].revents)
            return i;
    return 0;
}

struct ft_thread {
    pthread_t tid;
    ft_thread_fn fn;
    void *arg;
};

static void *thread_main(void *p)
{
    ft_thread *t = p;
    t->fn(t->arg);
    return NULL;
}

ft_thread *ft_thread_start(ft_thread_fn fn, void *arg, long *oserr)
{
    ft_thread *t = calloc(1, sizeof(*t));
    if (!t) {
        if (oserr)
            *oserr = ENOMEM;
        return NULL;
    }
    t->fn = fn;
    t->arg = arg;
    int r = pthread_create(&t->tid, NULL, thread_main, t);
    if (r != 0) {
        free(t);
        if (oserr)
            *oserr = r;
        return NULL;
    }
    return t;
}

void ft_thread_join(ft_thread *t)
{
    if (!t)
        return;
    pthread_join(t->tid, NULL);
    free(t);
}

void ft_thread_detach(ft_thread *t)
{
    if (!t)
        return;
    pthread_detach(t->tid);
    free(t);
}

int ft_thread_is_current(const ft_thread *t) { return t && pthread_equal(t->tid, pthread_self()); }

struct ft_mutex {
    pthread_mutex_t m;
};

ft_mutex *ft_mutex_create(void)
{
    ft_mutex *m = calloc(1, sizeof(*m));
    if (m && pthread_mutex_init(&m->m, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void ft_mutex_destroy(ft_mutex *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->m);
    free(m);
}

void ft_mutex_lock(ft_mutex *m) { pthread_mutex_lock(&m->m); }
void ft_mutex_unlock(ft_mutex *m) { pthread_mutex_unlock(&m->m); }

uint64_t ft_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void ft_sleep_us(uint32_t us)
{
    struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void ft_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

long ft_last_oserror(void) { return errno; }
int ft_errno_from_oserror(long oserr) { return (int)oserr; }

void ft_oserror_string(long oserr, char *buf, size_t len)
{
    if (len == 0)
        return;
    const char *s = strerror((int)oserr); /* glibc's table is immutable; fine across threads */
    strncpy(buf, s ? s : "unknown error", len - 1);
    buf[len - 1] = '\0';
}
#endif
