/* windows/ft_win_os.c - ft_os.h for Windows (MSVC and mingw-w64). */
#ifdef _WIN32
#include "core/ft_os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

struct ft_event {
    HANDLE h; /* manual-reset event */
};

ft_event *ft_event_create(void)
{
    ft_event *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return NULL;
    ev->h = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!ev->h) {
        free(ev);
        return NULL;
    }
    return ev;
}

void ft_event_destroy(ft_event *ev)
{
    if (!ev)
        return;
    CloseHandle(ev->h);
    free(ev);
}

void ft_event_set(ft_event *ev) { SetEvent(ev->h); }
void ft_event_reset(ft_event *ev) { ResetEvent(ev->h); }
int ft_event_is_set(ft_event *ev) { return WaitForSingleObject(ev->h, 0) == WAIT_OBJECT_0; }
ft_handle ft_event_handle(ft_event *ev) { return ev->h; }

int ft_thread_private_fds(const ft_handle *keep, int n)
{
    (void)keep;
    (void)n;
    return -1; /* handles are not per thread on Windows */
}

int ft_wait_any(const ft_handle *handles, int n, int want_write_first, int timeout_ms, long *oserr)
{
    (void)want_write_first; /* Windows handles signal one kind of readiness */
    if (n <= 0 || n > FT_WAIT_MAX || n > MAXIMUM_WAIT_OBJECTS) {
        if (oserr)
            *oserr = ERROR_INVALID_PARAMETER;
        return FT_WAIT_ERROR;
    }
    /* Search from the end so that wake-up handles (placed last) win over more traffic. */
    HANDLE rev[MAXIMUM_WAIT_OBJECTS];
    for (int i = 0; i < n; i++)
        rev[i] = handles[n - 1 - i];
    DWORD r = WaitForMultipleObjects((DWORD)n, rev, FALSE, timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
    if (r == WAIT_TIMEOUT)
        return FT_WAIT_TIMEOUT;
    if (r < WAIT_OBJECT_0 + (DWORD)n)
        return n - 1 - (int)(r - WAIT_OBJECT_0);
    if (r >= WAIT_ABANDONED_0 && r < WAIT_ABANDONED_0 + (DWORD)n)
        return n - 1 - (int)(r - WAIT_ABANDONED_0);
    if (oserr)
        *oserr = (long)GetLastError();
    return FT_WAIT_ERROR;
}

struct ft_thread {
    HANDLE h;
    DWORD id;
    ft_thread_fn fn;
    void *arg;
};

static DWORD WINAPI thread_main(LPVOID p)
{
    ft_thread *t = p;
    t->fn(t->arg);
    return 0;
}

ft_thread *ft_thread_start(ft_thread_fn fn, void *arg, long *oserr)
{
    ft_thread *t = calloc(1, sizeof(*t));
    if (!t) {
        if (oserr)
            *oserr = ERROR_NOT_ENOUGH_MEMORY;
        return NULL;
    }
    t->fn = fn;
    t->arg = arg;
    t->h = CreateThread(NULL, 0, thread_main, t, 0, &t->id);
    if (!t->h) {
        if (oserr)
            *oserr = (long)GetLastError();
        free(t);
        return NULL;
    }
    return t;
}

void ft_thread_join(ft_thread *t)
{
    if (!t)
        return;
    WaitForSingleObject(t->h, INFINITE);
    CloseHandle(t->h);
    free(t);
}

void ft_thread_detach(ft_thread *t)
{
    if (!t)
        return;
    CloseHandle(t->h); /* the thread runs on; its handle is no longer needed */
    free(t);
}

int ft_thread_is_current(const ft_thread *t) { return t && t->id == GetCurrentThreadId(); }

struct ft_mutex {
    SRWLOCK lock;
};

ft_mutex *ft_mutex_create(void)
{
    ft_mutex *m = calloc(1, sizeof(*m));
    if (m)
        InitializeSRWLock(&m->lock);
    return m;
}

void ft_mutex_destroy(ft_mutex *m) { free(m); }
void ft_mutex_lock(ft_mutex *m) { AcquireSRWLockExclusive(&m->lock); }
void ft_mutex_unlock(ft_mutex *m) { ReleaseSRWLockExclusive(&m->lock); }

uint64_t ft_now_ns(void)
{
    static LARGE_INTEGER freq; /* benign race: every thread computes the same value */
    LARGE_INTEGER now;
    if (freq.QuadPart == 0)
        QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (uint64_t)((double)now.QuadPart * 1e9 / (double)freq.QuadPart);
}

void ft_sleep_us(uint32_t us)
{
    /* A waitable timer with high resolution where available; Sleep() rounds up to the tick. */
    HANDLE t = CreateWaitableTimerExW(NULL, NULL, 0x00000002 /* CREATE_WAITABLE_TIMER_HIGH_RESOLUTION */,
                                      TIMER_ALL_ACCESS);
    if (!t)
        t = CreateWaitableTimerW(NULL, TRUE, NULL);
    if (t) {
        LARGE_INTEGER due;
        due.QuadPart = -(LONGLONG)us * 10;
        if (SetWaitableTimer(t, &due, 0, NULL, NULL, FALSE))
            WaitForSingleObject(t, INFINITE);
        CloseHandle(t);
    } else {
        Sleep((us + 999) / 1000);
    }
}

void ft_cpu_relax(void) { YieldProcessor(); }

long ft_last_oserror(void) { return (long)GetLastError(); }

int ft_errno_from_oserror(long oserr)
{
    switch (oserr) {
    case ERROR_ACCESS_DENIED: return EACCES;
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_NOT_FOUND:
    case ERROR_MOD_NOT_FOUND:
    case ERROR_PROC_NOT_FOUND: return ENOENT;
    case ERROR_BAD_EXE_FORMAT: return ENOEXEC;
    case ERROR_ALREADY_EXISTS:
    case ERROR_OBJECT_ALREADY_EXISTS: return EEXIST;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY: return ENOMEM;
    case ERROR_INVALID_PARAMETER: return EINVAL;
    case ERROR_BUFFER_OVERFLOW: return ENOBUFS;
    case ERROR_HANDLE_EOF: return EPIPE;
    case ERROR_INVALID_DATA: return EIO;
    case ERROR_NOT_SUPPORTED: return ENOSYS;
    case ERROR_BUSY: return EBUSY;
    default: return EIO;
    }
}

void ft_oserror_string(long oserr, char *buf, size_t len)
{
    if (len == 0)
        return;
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, (DWORD)oserr, 0,
                             buf, (DWORD)len, NULL);
    if (n == 0) {
        snprintf(buf, len, "Windows error %ld", oserr);
        return;
    }
    while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
}
#endif
