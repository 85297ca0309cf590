/* core/ft_os.h - the few operating-system primitives the core needs: a wakeable event, waiting on several
 * handles at once, a thread, a mutex, a monotonic clock and relaxed atomic counters.
 * Implemented once per platform: posix/ft_posix_os.c and windows/ft_win_os.c. */
#ifndef FT_OS_H
#define FT_OS_H

/* mingw: C99 printf family (for %zu); every .c file includes a project header before any system one. */
#if defined(__MINGW32__) && !defined(__USE_MINGW_ANSI_STDIO)
#define __USE_MINGW_ANSI_STDIO 1
#endif

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
typedef HANDLE ft_handle;             /* something WaitForMultipleObjects can wait on */
#define FT_INVALID_HANDLE NULL
#else
typedef int ft_handle;                /* a file descriptor poll() can wait on */
#define FT_INVALID_HANDLE (-1)
#endif

/* printf-style checking; mingw builds use its C99 stdio (__USE_MINGW_ANSI_STDIO) so %zu works there. */
#if defined(__MINGW32__)
#define FT_PRINTF(fmt, args) __attribute__((format(gnu_printf, fmt, args)))
#elif defined(__GNUC__)
#define FT_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define FT_PRINTF(fmt, args)
#endif

/* ---- atomics -------------------------------------------------------------------------------------- */
/* Counters and flags shared between the reader thread and callers. MSVC's C mode lacks <stdatomic.h>
 * before VS 2022 17.5, so we fall back to the Interlocked family there. */
#if defined(_MSC_VER) && !defined(__clang__)
typedef volatile LONG64 ft_atomic_u64;
typedef volatile LONG ft_atomic_int;
#define ft_atomic_load64(p) ((uint64_t)InterlockedOr64((p), 0))
#define ft_atomic_add64(p, v) ((void)InterlockedExchangeAdd64((p), (LONG64)(v)))
#define ft_atomic_store64(p, v) ((void)InterlockedExchange64((p), (LONG64)(v)))
#define ft_atomic_load(p) ((int)InterlockedOr((p), 0))
#define ft_atomic_store(p, v) ((void)InterlockedExchange((p), (LONG)(v)))
#define ft_atomic_add(p, v) ((int)InterlockedExchangeAdd((p), (LONG)(v)) + (int)(v))
#define ft_atomic_cas(p, expected, desired) \
    (InterlockedCompareExchange((p), (LONG)(desired), (LONG)(expected)) == (LONG)(expected))
#else
#include <stdatomic.h>
typedef _Atomic uint64_t ft_atomic_u64;
typedef _Atomic int ft_atomic_int;
#define ft_atomic_load64(p) atomic_load_explicit((p), memory_order_relaxed)
#define ft_atomic_add64(p, v) ((void)atomic_fetch_add_explicit((p), (uint64_t)(v), memory_order_relaxed))
#define ft_atomic_store64(p, v) atomic_store_explicit((p), (uint64_t)(v), memory_order_relaxed)
/* Flags and use counts are sequentially consistent: closing relies on "I counted myself in, then saw
 * closed" and "I set closed, then saw the count" never both missing each other. */
#define ft_atomic_load(p) atomic_load((p))
#define ft_atomic_store(p, v) atomic_store((p), (v))
#define ft_atomic_add(p, v) (atomic_fetch_add((p), (v)) + (v))
static inline int ft_atomic_cas_impl(ft_atomic_int *p, int expected, int desired)
{
    return atomic_compare_exchange_strong(p, &expected, desired);
}
#define ft_atomic_cas(p, expected, desired) ft_atomic_cas_impl((p), (expected), (desired))
#endif

/* ---- events --------------------------------------------------------------------------------------- */
/* A manual-reset event that can be waited on together with device handles (eventfd or a pipe on POSIX,
 * an event object on Windows). Setting it is async-signal-safe on POSIX. */
typedef struct ft_event ft_event;

ft_event *ft_event_create(void);
void ft_event_destroy(ft_event *ev);
void ft_event_set(ft_event *ev);
void ft_event_reset(ft_event *ev);
int ft_event_is_set(ft_event *ev);
ft_handle ft_event_handle(ft_event *ev);

/* Linux: gives the calling thread a descriptor table of its own that holds only `keep` (n at most
 * FT_PRIVATE_FDS_MAX; events' handles are their only descriptors there) and stdin/out/err. Linux takes a
 * reference on the file in every read() and write() of a process whose threads share their descriptor table
 * and skips it for a table of one thread's own. Nothing else of the process changes: descriptors others open
 * or close later are theirs, and the copies this thread held of all but `keep` are closed at once, so no file
 * stays open because of it. Returns 0, or -1 and changes nothing where the kernel lacks close_range (before
 * 5.9) or refuses unshare (a seccomp filter), and on other systems. */
#define FT_PRIVATE_FDS_MAX 16
int ft_thread_private_fds(const ft_handle *keep, int n);

/* Wait until one of the handles is ready for reading (POSIX: POLLIN; Windows: signalled).
 * Returns the index of a ready handle, FT_WAIT_TIMEOUT after timeout_ms (negative = forever), or
 * FT_WAIT_ERROR with the OS error in *oserr. POSIX callers may ask for POLLOUT on handle 0 with
 * want_write. At most FT_WAIT_MAX handles. */
#define FT_WAIT_MAX 64
#define FT_WAIT_TIMEOUT (-1)
#define FT_WAIT_ERROR (-2)
int ft_wait_any(const ft_handle *handles, int n, int want_write_first, int timeout_ms, long *oserr);

/* ---- threads and locks ---------------------------------------------------------------------------- */
typedef struct ft_thread ft_thread;
typedef void (*ft_thread_fn)(void *arg);

/* Returns NULL on failure with the OS error in *oserr. */
ft_thread *ft_thread_start(ft_thread_fn fn, void *arg, long *oserr);
void ft_thread_join(ft_thread *t); /* joins and frees */
void ft_thread_detach(ft_thread *t); /* lets the thread end on its own, and frees t (callable from the thread) */
int ft_thread_is_current(const ft_thread *t);

#if defined(_MSC_VER) && !defined(__clang__)
#define FT_THREAD_LOCAL __declspec(thread)
#else
#define FT_THREAD_LOCAL _Thread_local
#endif

typedef struct ft_mutex ft_mutex;
ft_mutex *ft_mutex_create(void);
void ft_mutex_destroy(ft_mutex *m);
void ft_mutex_lock(ft_mutex *m);
void ft_mutex_unlock(ft_mutex *m);

/* ---- time ----------------------------------------------------------------------------------------- */
uint64_t ft_now_ns(void);          /* monotonic */
void ft_sleep_us(uint32_t us);
void ft_cpu_relax(void);           /* a pause hint inside spin loops */

/* The last OS error of this thread (errno or GetLastError()). */
long ft_last_oserror(void);
/* Portable errno value for an OS error code (identity on POSIX). */
int ft_errno_from_oserror(long oserr);
/* Writes a short description of an OS error into buf. */
void ft_oserror_string(long oserr, char *buf, size_t len);

#endif
