/* fake_wintun.h - the test-only side of our fake wintun.dll: faults it can be told to inject, the counters
 * it keeps, and the extra FakeWintun* exports a test resolves with GetProcAddress. */
#ifndef FAKE_WINTUN_H
#define FAKE_WINTUN_H

#include "wintun.h"

enum fake_fault {
    FAKE_SEND_FULL = 0,        /* WintunAllocateSendPacket: ERROR_BUFFER_OVERFLOW while on */
    FAKE_RECV_EOF,             /* WintunReceivePacket: after `arg` more packets the adapter terminates
                                * (ERROR_HANDLE_EOF from then on, for sends too) */
    FAKE_RECV_INVALID_DATA,    /* WintunReceivePacket: ERROR_INVALID_DATA after `arg` more packets */
    FAKE_SEND_EOF,             /* WintunAllocateSendPacket: the adapter terminates (ERROR_HANDLE_EOF) */
    FAKE_ALLOC_FAIL,           /* WintunAllocateSendPacket fails with error `arg` while on */
    FAKE_SESSION_FAIL,         /* WintunStartSession fails with error `arg` while on */
    FAKE_CREATE_FAIL,          /* WintunCreateAdapter fails with error `arg` while on */
    FAKE_OPEN_FAIL,            /* WintunOpenAdapter fails with error `arg` while on */
    FAKE_DRIVER_NOT_LOADED,    /* WintunGetRunningDriverVersion: 0 with ERROR_FILE_NOT_FOUND while on */
    FAKE_RECV_INVALID_DATA_ONCE, /* WintunReceivePacket: ERROR_INVALID_DATA once, after `arg` more packets
                                * (Wintun 0.14.1's ring race); a new session is healthy */
    FAKE_MISSED_WAKEUP,        /* FakeWintunInject does not signal the read event while on (0.14.1's race) */
    FAKE_SESSION_FAIL_ABOVE,   /* WintunStartSession with a capacity over `arg` fails (ERROR_NOT_ENOUGH_MEMORY) */
    FAKE_FAULT_COUNT
};

typedef struct fake_counters {
    LONG adapters;             /* adapters that exist (created, left over, ...) */
    LONG adapter_handles;      /* handles not yet closed */
    LONG sessions;             /* sessions not yet ended */
    LONG creates, opens;       /* successful calls */
    LONG create_calls;         /* all WintunCreateAdapter calls */
    LONG receive_calls;
    LONG receive_errors;       /* ReceivePacket calls that failed with something other than NO_MORE_ITEMS */
    LONG alloc_calls;
    LONG injected, received, released;
    LONG sent;                 /* packets handed to WintunSendPacket */
    LONG read_back;            /* sent packets the test took with FakeWintunReadSent */
    LONG event_misuse;         /* the read event was closed by someone else (the session's CloseHandle failed) */
    LONG log_calls;            /* messages passed to a registered logger */
    DWORD last_capacity;
    WCHAR last_tunnel_type[128];
    GUID last_requested_guid;
    BOOL last_had_guid;
} fake_counters;

/* Everything back to the start: no adapters, no faults, counters zero. Only with no handle open. */
typedef VOID(WINAPI FAKE_RESET_FUNC)(VOID);
typedef VOID(WINAPI FAKE_SET_FAULT_FUNC)(int fault, BOOL on, DWORD arg);
typedef VOID(WINAPI FAKE_GET_COUNTERS_FUNC)(fake_counters *out);
/* Packets "from the network" (at most 256 a call, from one thread at a time) into the active session's
 * receive ring; returns how many fit (the rest did not: the ring is full), or -1 without a session.
 * Signals the read event once. */
typedef LONG(WINAPI FAKE_INJECT_FUNC)(const BYTE *const *packets, const DWORD *sizes, DWORD n);
/* A record whose size field says `size` (0 or > 0xFFFF: impossible) to test the backend's check. */
typedef BOOL(WINAPI FAKE_INJECT_BOGUS_FUNC)(DWORD size);
/* Takes the oldest sent packet: its size, 0 if none is ready, -1 if buf is too small. */
typedef LONG(WINAPI FAKE_READ_SENT_FUNC)(BYTE *buf, DWORD cap);
/* An adapter left behind by a crash: it exists (can be opened) and makes the next `failing_creates`
 * creates of that name fail with ERROR_ALREADY_EXISTS before Wintun "cleans it up". */
typedef BOOL(WINAPI FAKE_ADD_LEFTOVER_FUNC)(LPCWSTR name, DWORD failing_creates);
/* The LUID the next adapters get (0: a made-up one). Lets config tests run against a real interface. */
typedef VOID(WINAPI FAKE_SET_LUID_FUNC)(ULONG64 luid);
/* Calls the registered logger, as Wintun does for its own events. */
typedef VOID(WINAPI FAKE_LOG_FUNC)(WINTUN_LOGGER_LEVEL level, LPCWSTR message);

#endif
