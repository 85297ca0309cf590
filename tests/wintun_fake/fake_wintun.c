/* fake_wintun.c - a wintun.dll of our own for tests under Wine (or Windows without the driver): the 14
 * Wintun 0.14 exports over two in-process rings per session, plus FakeWintun* exports that let a test
 * play the network (inject packets, read back what was sent) and the misbehaving driver (ring full,
 * ERROR_HANDLE_EOF, a corrupt ring, failing calls, a leftover adapter, no driver loaded).
 *
 * Rings hold records [size, span, state, magic | data] 16-byte aligned, like Wintun's: a received packet
 * stays in the ring until released (in any order), an allocated send slot is in send order. One lock
 * guards everything: this is a test double, not a fast path.
 *
 * Build it as wintun.dll; -DFAKE_OMIT_LUID_EXPORT builds one that lacks WintunGetAdapterLUID. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "fake_wintun.h"

#define EXPORT __declspec(dllexport)

#define RECORD_HEADER 16u
#define RECORD_MAGIC 0x46414B45u /* "FAKE" */
#define SLACK (RECORD_HEADER + 0x10000u + 64u) /* a record may run past the end, as in Wintun's rings */
#define MAX_ADAPTERS 16

enum { REC_READY = 1, REC_HANDED = 2, REC_RELEASED = 3, REC_ALLOCATED = 4 };

typedef struct record {
    DWORD size;  /* what the consumer is told */
    DWORD span;  /* bytes the record really takes */
    DWORD state;
    DWORD magic;
} record;

typedef struct ring {
    BYTE *buf;
    DWORD cap;
    DWORD head;    /* oldest byte still held */
    DWORD next;    /* receive ring: next record to hand out */
    DWORD tail;    /* where the next record goes */
    DWORD used;
    DWORD pending; /* receive ring: records not handed out yet */
} ring;

typedef struct adapter_rec {
    BOOL used;
    WCHAR name[128];
    NET_LUID luid;
    DWORD fail_creates;
    LONG handles;
    struct _TUN_SESSION *session;
} adapter_rec;

struct _WINTUN_ADAPTER {
    adapter_rec *rec;
    BOOL owner; /* created through this handle: closing it removes the adapter */
};

struct _TUN_SESSION {
    adapter_rec *rec;
    ring rx;      /* driver -> program */
    ring tx;      /* program -> driver */
    HANDLE event; /* auto-reset, signalled when packets arrive */
    BOOL terminated;
};

static SRWLOCK lock = SRWLOCK_INIT;
static adapter_rec adapters[MAX_ADAPTERS];
static struct _TUN_SESSION *active; /* the session injections go to: the latest started */
static fake_counters counters;
static struct {
    BOOL on;
    DWORD arg;
} faults[FAKE_FAULT_COUNT];
static LONG eof_countdown = -1, invalid_countdown = -1, invalid_once_countdown = -1;
static ULONG64 next_luid;
static DWORD luid_serial;
static WINTUN_LOGGER_CALLBACK volatile logger;

/* ---- logging ---------------------------------------------------------------------------------------- */

static void fake_log(WINTUN_LOGGER_LEVEL level, const WCHAR *fmt, ...)
{
    WINTUN_LOGGER_CALLBACK cb = logger;
    if (!cb)
        return;
    WCHAR msg[256];
    va_list ap;
    va_start(ap, fmt);
    _vsnwprintf(msg, 255, fmt, ap);
    va_end(ap);
    msg[255] = 0;
    FILETIME now;
    GetSystemTimeAsFileTime(&now);
    InterlockedIncrement(&counters.log_calls);
    cb(level, ((DWORD64)now.dwHighDateTime << 32) | now.dwLowDateTime, msg);
}

/* ---- rings ------------------------------------------------------------------------------------------ */

static BOOL ring_init(ring *r, DWORD cap)
{
    memset(r, 0, sizeof(*r));
    r->buf = calloc(1, (size_t)cap + SLACK);
    r->cap = cap;
    return r->buf != NULL;
}

static record *at(ring *r, DWORD pos) { return (record *)(r->buf + pos); }
static DWORD span_of(DWORD data_len) { return (RECORD_HEADER + data_len + 15u) & ~15u; }

/* Room for a record of data_len stored bytes, or NULL when the ring is full. */
static record *ring_reserve(ring *r, DWORD size, DWORD data_len, DWORD state)
{
    DWORD span = span_of(data_len);
    if (r->used + span > r->cap)
        return NULL;
    record *h = at(r, r->tail);
    h->size = size;
    h->span = span;
    h->state = state;
    h->magic = RECORD_MAGIC;
    r->tail = (r->tail + span) % r->cap;
    r->used += span;
    return h;
}

/* Gives back the space of released records at the head, oldest first. */
static void ring_reclaim(ring *r, DWORD done_state)
{
    while (r->used > 0 && at(r, r->head)->state == done_state) {
        DWORD span = at(r, r->head)->span;
        at(r, r->head)->magic = 0;
        r->used -= span;
        r->head = (r->head + span) % r->cap;
    }
}

static record *header_of(ring *r, const BYTE *packet)
{
    if (!packet || packet < r->buf + RECORD_HEADER || packet >= r->buf + r->cap + RECORD_HEADER)
        return NULL;
    record *h = (record *)(packet - RECORD_HEADER);
    return h->magic == RECORD_MAGIC ? h : NULL;
}

/* ---- adapters --------------------------------------------------------------------------------------- */

static adapter_rec *find_adapter(LPCWSTR name)
{
    for (int i = 0; i < MAX_ADAPTERS; i++)
        if (adapters[i].used && _wcsicmp(adapters[i].name, name) == 0)
            return &adapters[i];
    return NULL;
}

static adapter_rec *new_adapter(LPCWSTR name)
{
    for (int i = 0; i < MAX_ADAPTERS; i++) {
        adapter_rec *a = &adapters[i];
        if (a->used)
            continue;
        memset(a, 0, sizeof(*a));
        a->used = TRUE;
        wcsncpy(a->name, name, 127);
        if (next_luid) {
            a->luid.Value = next_luid;
        } else {
            a->luid.Info.IfType = 53; /* a made-up virtual interface no IP Helper call will find */
            a->luid.Info.NetLuidIndex = 0x7000 + ++luid_serial;
        }
        counters.adapters++;
        return a;
    }
    return NULL;
}

static void remove_adapter(adapter_rec *a)
{
    a->used = FALSE;
    counters.adapters--;
}

static WINTUN_ADAPTER_HANDLE new_handle(adapter_rec *a, BOOL owner)
{
    WINTUN_ADAPTER_HANDLE h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->rec = a;
    h->owner = owner;
    a->handles++;
    counters.adapter_handles++;
    return h;
}

static BOOL valid_name(LPCWSTR name) { return name && name[0] && wcslen(name) <= 127; }

static WINTUN_ADAPTER_HANDLE fail(DWORD err)
{
    SetLastError(err);
    return NULL;
}

EXPORT WINTUN_ADAPTER_HANDLE WINAPI WintunCreateAdapter(LPCWSTR Name, LPCWSTR TunnelType, const GUID *RequestedGUID)
{
    AcquireSRWLockExclusive(&lock);
    counters.create_calls++;
    WINTUN_ADAPTER_HANDLE h = NULL;
    DWORD err = ERROR_SUCCESS;
    adapter_rec *old = valid_name(Name) ? find_adapter(Name) : NULL;
    if (!valid_name(Name) || !valid_name(TunnelType)) {
        err = ERROR_INVALID_PARAMETER;
    } else if (faults[FAKE_CREATE_FAIL].on) {
        err = faults[FAKE_CREATE_FAIL].arg;
    } else if (old && old->fail_creates > 0) {
        old->fail_creates--;
        err = ERROR_ALREADY_EXISTS;
    } else if (old && old->handles > 0) {
        err = ERROR_ALREADY_EXISTS;
    } else {
        if (old) /* a leftover nobody holds: Wintun has cleaned it up by now */
            remove_adapter(old);
        adapter_rec *a = new_adapter(Name);
        h = a ? new_handle(a, TRUE) : NULL;
        if (!h) {
            if (a)
                remove_adapter(a);
            err = ERROR_NOT_ENOUGH_MEMORY;
        } else {
            counters.creates++;
            wcsncpy(counters.last_tunnel_type, TunnelType, 127);
            counters.last_had_guid = RequestedGUID != NULL;
            if (RequestedGUID)
                counters.last_requested_guid = *RequestedGUID;
        }
    }
    ReleaseSRWLockExclusive(&lock);
    if (h)
        fake_log(WINTUN_LOG_INFO, L"Created adapter %ls", Name);
    else
        fake_log(WINTUN_LOG_ERR, L"Failed to create adapter (error %lu)", err);
    return h ? h : fail(err);
}

EXPORT WINTUN_ADAPTER_HANDLE WINAPI WintunOpenAdapter(LPCWSTR Name)
{
    AcquireSRWLockExclusive(&lock);
    WINTUN_ADAPTER_HANDLE h = NULL;
    DWORD err = ERROR_SUCCESS;
    adapter_rec *a = valid_name(Name) ? find_adapter(Name) : NULL;
    if (faults[FAKE_OPEN_FAIL].on)
        err = faults[FAKE_OPEN_FAIL].arg;
    else if (!a)
        err = ERROR_NOT_FOUND;
    else if (!(h = new_handle(a, FALSE)))
        err = ERROR_NOT_ENOUGH_MEMORY;
    else
        counters.opens++;
    ReleaseSRWLockExclusive(&lock);
    return h ? h : fail(err);
}

EXPORT VOID WINAPI WintunCloseAdapter(WINTUN_ADAPTER_HANDLE Adapter)
{
    if (!Adapter)
        return;
    AcquireSRWLockExclusive(&lock);
    adapter_rec *a = Adapter->rec;
    a->handles--;
    counters.adapter_handles--;
    if (Adapter->owner)
        remove_adapter(a);
    ReleaseSRWLockExclusive(&lock);
    free(Adapter);
}

EXPORT BOOL WINAPI WintunDeleteDriver(VOID)
{
    AcquireSRWLockShared(&lock);
    LONG n = counters.adapters;
    ReleaseSRWLockShared(&lock);
    if (n > 0) {
        SetLastError(ERROR_GENERIC_COMMAND_FAILED);
        return FALSE;
    }
    return TRUE;
}

#ifndef FAKE_OMIT_LUID_EXPORT
EXPORT VOID WINAPI WintunGetAdapterLUID(WINTUN_ADAPTER_HANDLE Adapter, NET_LUID *Luid)
{
    *Luid = Adapter->rec->luid;
}
#endif

EXPORT DWORD WINAPI WintunGetRunningDriverVersion(VOID)
{
    if (faults[FAKE_DRIVER_NOT_LOADED].on) {
        SetLastError(ERROR_FILE_NOT_FOUND);
        return 0;
    }
    return (0u << 16) | 14u; /* 0.14 */
}

EXPORT VOID WINAPI WintunSetLogger(WINTUN_LOGGER_CALLBACK NewLogger) { logger = NewLogger; }

/* ---- sessions --------------------------------------------------------------------------------------- */

static void free_session(WINTUN_SESSION_HANDLE s)
{
    free(s->rx.buf);
    free(s->tx.buf);
    free(s);
}

EXPORT WINTUN_SESSION_HANDLE WINAPI WintunStartSession(WINTUN_ADAPTER_HANDLE Adapter, DWORD Capacity)
{
    if (Capacity < WINTUN_MIN_RING_CAPACITY || Capacity > WINTUN_MAX_RING_CAPACITY || (Capacity & (Capacity - 1)))
        return (WINTUN_SESSION_HANDLE)fail(ERROR_INVALID_PARAMETER);
    AcquireSRWLockExclusive(&lock);
    WINTUN_SESSION_HANDLE s = NULL;
    DWORD err = ERROR_SUCCESS;
    if (faults[FAKE_SESSION_FAIL].on) {
        err = faults[FAKE_SESSION_FAIL].arg;
    } else if (faults[FAKE_SESSION_FAIL_ABOVE].on && Capacity > faults[FAKE_SESSION_FAIL_ABOVE].arg) {
        err = ERROR_NOT_ENOUGH_MEMORY;
    } else if (Adapter->rec->session) {
        err = ERROR_ALREADY_INITIALIZED; /* one session per adapter */
    } else {
        s = calloc(1, sizeof(*s));
        if (!s || !ring_init(&s->rx, Capacity) || !ring_init(&s->tx, Capacity) ||
            !(s->event = CreateEventW(NULL, FALSE, FALSE, NULL))) {
            if (s)
                free_session(s);
            s = NULL;
            err = ERROR_NOT_ENOUGH_MEMORY;
        } else {
            s->rec = Adapter->rec;
            Adapter->rec->session = s;
            active = s;
            counters.sessions++;
            counters.last_capacity = Capacity;
        }
    }
    ReleaseSRWLockExclusive(&lock);
    if (s)
        fake_log(WINTUN_LOG_INFO, L"Started session with a %lu-byte ring", Capacity);
    return s ? s : (WINTUN_SESSION_HANDLE)fail(err);
}

EXPORT VOID WINAPI WintunEndSession(WINTUN_SESSION_HANDLE Session)
{
    if (!Session)
        return;
    AcquireSRWLockExclusive(&lock);
    Session->rec->session = NULL;
    if (active == Session)
        active = NULL;
    counters.sessions--;
    if (!CloseHandle(Session->event)) /* it is ours: a program that closed it broke the contract */
        counters.event_misuse++;
    ReleaseSRWLockExclusive(&lock);
    free_session(Session);
}

EXPORT HANDLE WINAPI WintunGetReadWaitEvent(WINTUN_SESSION_HANDLE Session) { return Session->event; }

/* A countdown fault fires when it reaches zero; -1 is off. */
static BOOL countdown_fires(LONG *countdown)
{
    if (*countdown < 0)
        return FALSE;
    if (*countdown == 0)
        return TRUE;
    return FALSE;
}

static void countdown_step(LONG *countdown)
{
    if (*countdown > 0)
        (*countdown)--;
}

EXPORT BYTE *WINAPI WintunReceivePacket(WINTUN_SESSION_HANDLE Session, DWORD *PacketSize)
{
    AcquireSRWLockExclusive(&lock);
    counters.receive_calls++;
    ring *r = &Session->rx;
    BYTE *p = NULL;
    DWORD err = ERROR_NO_MORE_ITEMS;
    if (countdown_fires(&eof_countdown))
        Session->terminated = TRUE;
    if (Session->terminated) {
        err = ERROR_HANDLE_EOF;
    } else if (countdown_fires(&invalid_countdown)) {
        err = ERROR_INVALID_DATA;
    } else if (countdown_fires(&invalid_once_countdown)) {
        invalid_once_countdown = -1;
        err = ERROR_INVALID_DATA;
    } else if (r->pending > 0) {
        record *h = at(r, r->next);
        h->state = REC_HANDED;
        r->next = (r->next + h->span) % r->cap;
        r->pending--;
        *PacketSize = h->size;
        p = (BYTE *)h + RECORD_HEADER;
        counters.received++;
        countdown_step(&eof_countdown);
        countdown_step(&invalid_countdown);
        countdown_step(&invalid_once_countdown);
    }
    if (!p && err != ERROR_NO_MORE_ITEMS)
        counters.receive_errors++;
    ReleaseSRWLockExclusive(&lock);
    if (err == ERROR_HANDLE_EOF && counters.receive_errors == 1)
        fake_log(WINTUN_LOG_WARN, L"Adapter is terminating");
    if (!p)
        SetLastError(err);
    return p;
}

/* The packet's record moves from state `from` to `to` if it is one of the ring's in that state (a packet the
 * caller got from it and has not given back); 1 if it did. Under the lock. */
static int hand_back(ring *r, const BYTE *packet, DWORD from, DWORD to)
{
    record *h = header_of(r, packet);
    if (!h || h->state != from)
        return 0;
    h->state = to;
    return 1;
}

EXPORT VOID WINAPI WintunReleaseReceivePacket(WINTUN_SESSION_HANDLE Session, const BYTE *Packet)
{
    AcquireSRWLockExclusive(&lock);
    if (hand_back(&Session->rx, Packet, REC_HANDED, REC_RELEASED)) {
        counters.released++;
        ring_reclaim(&Session->rx, REC_RELEASED);
    }
    ReleaseSRWLockExclusive(&lock);
}

EXPORT BYTE *WINAPI WintunAllocateSendPacket(WINTUN_SESSION_HANDLE Session, DWORD PacketSize)
{
    AcquireSRWLockExclusive(&lock);
    counters.alloc_calls++;
    BYTE *p = NULL;
    DWORD err = ERROR_SUCCESS;
    if (faults[FAKE_SEND_EOF].on)
        Session->terminated = TRUE;
    if (Session->terminated) {
        err = ERROR_HANDLE_EOF;
    } else if (PacketSize > WINTUN_MAX_IP_PACKET_SIZE) {
        Session->terminated = TRUE; /* what the real driver does: it stops serving the ring */
        err = ERROR_HANDLE_EOF;
    } else if (faults[FAKE_ALLOC_FAIL].on) {
        err = faults[FAKE_ALLOC_FAIL].arg;
    } else if (faults[FAKE_SEND_FULL].on) {
        err = ERROR_BUFFER_OVERFLOW;
    } else {
        record *h = ring_reserve(&Session->tx, PacketSize, PacketSize, REC_ALLOCATED);
        if (h)
            p = (BYTE *)h + RECORD_HEADER;
        else
            err = ERROR_BUFFER_OVERFLOW;
    }
    ReleaseSRWLockExclusive(&lock);
    if (!p)
        SetLastError(err);
    return p;
}

EXPORT VOID WINAPI WintunSendPacket(WINTUN_SESSION_HANDLE Session, const BYTE *Packet)
{
    AcquireSRWLockExclusive(&lock);
    if (hand_back(&Session->tx, Packet, REC_ALLOCATED, REC_READY))
        counters.sent++;
    ReleaseSRWLockExclusive(&lock);
}

/* ---- the test's side -------------------------------------------------------------------------------- */

EXPORT VOID WINAPI FakeWintunReset(VOID)
{
    AcquireSRWLockExclusive(&lock);
    for (int i = 0; i < MAX_ADAPTERS; i++)
        if (adapters[i].handles == 0)
            adapters[i].used = FALSE;
    memset(&counters, 0, sizeof(counters));
    for (int i = 0; i < MAX_ADAPTERS; i++)
        if (adapters[i].used)
            counters.adapters++;
    memset(faults, 0, sizeof(faults));
    eof_countdown = invalid_countdown = invalid_once_countdown = -1;
    next_luid = 0;
    ReleaseSRWLockExclusive(&lock);
}

EXPORT VOID WINAPI FakeWintunSetFault(int fault, BOOL on, DWORD arg)
{
    if (fault < 0 || fault >= FAKE_FAULT_COUNT)
        return;
    AcquireSRWLockExclusive(&lock);
    faults[fault].on = on;
    faults[fault].arg = arg;
    if (fault == FAKE_RECV_EOF)
        eof_countdown = on ? (LONG)arg : -1;
    if (fault == FAKE_RECV_INVALID_DATA)
        invalid_countdown = on ? (LONG)arg : -1;
    if (fault == FAKE_RECV_INVALID_DATA_ONCE)
        invalid_once_countdown = on ? (LONG)arg : -1;
    ReleaseSRWLockExclusive(&lock);
}

EXPORT VOID WINAPI FakeWintunGetCounters(fake_counters *out)
{
    AcquireSRWLockShared(&lock);
    *out = counters;
    ReleaseSRWLockShared(&lock);
}

/* Reserves under the lock, copies outside it, publishes under it again: the receiver is not held up for
 * the copy. Records reserved but not yet published sit after every published one, so with one injecting
 * thread at a time (the tests' case) the order stays right. */
EXPORT LONG WINAPI FakeWintunInject(const BYTE *const *packets, const DWORD *sizes, DWORD n)
{
    record *slots[256];
    if (n > 256)
        n = 256;
    AcquireSRWLockExclusive(&lock);
    struct _TUN_SESSION *s = active;
    DWORD k = 0;
    if (s)
        for (; k < n; k++)
            if (!(slots[k] = ring_reserve(&s->rx, sizes[k], sizes[k], REC_ALLOCATED)))
                break;
    ReleaseSRWLockExclusive(&lock);
    if (!s)
        return -1;
    for (DWORD i = 0; i < k; i++)
        memcpy((BYTE *)slots[i] + RECORD_HEADER, packets[i], sizes[i]);
    AcquireSRWLockExclusive(&lock);
    for (DWORD i = 0; i < k; i++)
        slots[i]->state = REC_READY;
    s->rx.pending += k;
    counters.injected += (LONG)k;
    if (k > 0 && !faults[FAKE_MISSED_WAKEUP].on)
        SetEvent(s->event);
    ReleaseSRWLockExclusive(&lock);
    return (LONG)k;
}

EXPORT BOOL WINAPI FakeWintunInjectBogus(DWORD size)
{
    AcquireSRWLockExclusive(&lock);
    BOOL ok = FALSE;
    if (active) {
        record *h = ring_reserve(&active->rx, size, 16, REC_READY); /* claims `size`, stores 16 bytes */
        if (h) {
            active->rx.pending++;
            SetEvent(active->event);
            ok = TRUE;
        }
    }
    ReleaseSRWLockExclusive(&lock);
    return ok;
}

EXPORT LONG WINAPI FakeWintunReadSent(BYTE *buf, DWORD cap)
{
    AcquireSRWLockExclusive(&lock);
    LONG got = 0;
    ring *r = active ? &active->tx : NULL;
    if (r && r->used > 0 && at(r, r->head)->state == REC_READY) {
        record *h = at(r, r->head);
        if (h->size > cap) {
            got = -1;
        } else {
            memcpy(buf, (BYTE *)h + RECORD_HEADER, h->size);
            got = (LONG)h->size;
            h->state = REC_RELEASED;
            ring_reclaim(r, REC_RELEASED);
            counters.read_back++;
        }
    }
    ReleaseSRWLockExclusive(&lock);
    return got;
}

EXPORT BOOL WINAPI FakeWintunAddLeftover(LPCWSTR name, DWORD failing_creates)
{
    AcquireSRWLockExclusive(&lock);
    adapter_rec *a = valid_name(name) && !find_adapter(name) ? new_adapter(name) : NULL;
    if (a)
        a->fail_creates = failing_creates;
    ReleaseSRWLockExclusive(&lock);
    return a != NULL;
}

EXPORT VOID WINAPI FakeWintunSetLuid(ULONG64 luid)
{
    AcquireSRWLockExclusive(&lock);
    next_luid = luid;
    ReleaseSRWLockExclusive(&lock);
}

EXPORT VOID WINAPI FakeWintunLog(WINTUN_LOGGER_LEVEL level, LPCWSTR message) { fake_log(level, L"%ls", message); }
