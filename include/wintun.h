/* wintun.h - the interface of wintun.dll (Wintun 0.14 and later), written for fasttun from the documented
 * API. Every export is declared as a function *type*, so the loader keeps pointers of type
 * `WINTUN_..._FUNC *` filled by GetProcAddress; nothing here links against the DLL. Only the 0.14 API is
 * described: the pool-based calls of 0.9-0.13 are deliberately absent. Usable from C and from Cython. */
#ifndef FASTTUN_WINTUN_H
#define FASTTUN_WINTUN_H

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <ifdef.h> /* NET_LUID */

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque handles: an adapter (a network interface) and a session (the packet rings on one adapter). */
typedef struct _WINTUN_ADAPTER *WINTUN_ADAPTER_HANDLE;
typedef struct _TUN_SESSION *WINTUN_SESSION_HANDLE;

/* A session's ring capacity in bytes: a power of two within these bounds. */
#define WINTUN_MIN_RING_CAPACITY 0x20000   /* 128 KiB */
#define WINTUN_MAX_RING_CAPACITY 0x4000000 /* 64 MiB */

/* The largest packet a ring carries; anything bigger kills the session (the driver stops serving it). */
#define WINTUN_MAX_IP_PACKET_SIZE 0xFFFF

typedef enum {
    WINTUN_LOG_INFO = 0,
    WINTUN_LOG_WARN = 1,
    WINTUN_LOG_ERR = 2
} WINTUN_LOGGER_LEVEL;

/* Timestamp: 100 ns units since 1601-01-01 UTC (a FILETIME). May be called from several threads at once. */
typedef VOID(CALLBACK *WINTUN_LOGGER_CALLBACK)(WINTUN_LOGGER_LEVEL Level, DWORD64 Timestamp, LPCWSTR Message);

/* ---- adapters -------------------------------------------------------------------------------------- */

/* Creates an adapter; Name is at most 127 WCHARs, RequestedGUID may be NULL. NULL on failure
 * (GetLastError: ERROR_ACCESS_DENIED without elevation, ...). */
typedef WINTUN_ADAPTER_HANDLE(WINAPI WINTUN_CREATE_ADAPTER_FUNC)(LPCWSTR Name, LPCWSTR TunnelType,
                                                                 const GUID *RequestedGUID);

/* Opens an existing adapter by name; NULL with ERROR_NOT_FOUND when there is none. */
typedef WINTUN_ADAPTER_HANDLE(WINAPI WINTUN_OPEN_ADAPTER_FUNC)(LPCWSTR Name);

/* Releases the handle; an adapter created through this handle is removed as well. NULL is allowed. */
typedef VOID(WINAPI WINTUN_CLOSE_ADAPTER_FUNC)(WINTUN_ADAPTER_HANDLE Adapter);

/* Removes the driver when no adapter uses it. */
typedef BOOL(WINAPI WINTUN_DELETE_DRIVER_FUNC)(VOID);

/* The adapter's LUID, the key of every IP Helper call. */
typedef VOID(WINAPI WINTUN_GET_ADAPTER_LUID_FUNC)(WINTUN_ADAPTER_HANDLE Adapter, NET_LUID *Luid);

/* (major << 16) | minor of the running driver; 0 with ERROR_FILE_NOT_FOUND when it is not loaded. */
typedef DWORD(WINAPI WINTUN_GET_RUNNING_DRIVER_VERSION_FUNC)(VOID);

/* Installs (or with NULL removes) the process-wide logger. */
typedef VOID(WINAPI WINTUN_SET_LOGGER_FUNC)(WINTUN_LOGGER_CALLBACK NewLogger);

/* ---- sessions -------------------------------------------------------------------------------------- */

/* Starts the one session an adapter may have. NULL on failure. */
typedef WINTUN_SESSION_HANDLE(WINAPI WINTUN_START_SESSION_FUNC)(WINTUN_ADAPTER_HANDLE Adapter, DWORD Capacity);

typedef VOID(WINAPI WINTUN_END_SESSION_FUNC)(WINTUN_SESSION_HANDLE Session);

/* An auto-reset event signalled when packets arrive. Owned by the session: never CloseHandle it. */
typedef HANDLE(WINAPI WINTUN_GET_READ_WAIT_EVENT_FUNC)(WINTUN_SESSION_HANDLE Session);

/* A pointer into the ring and its size, or NULL with ERROR_NO_MORE_ITEMS (empty, normal),
 * ERROR_HANDLE_EOF (adapter terminating: final) or ERROR_INVALID_DATA (ring corrupt: final). Thread-safe. */
typedef BYTE *(WINAPI WINTUN_RECEIVE_PACKET_FUNC)(WINTUN_SESSION_HANDLE Session, DWORD *PacketSize);

/* Gives the ring space of a received packet back; do it promptly. */
typedef VOID(WINAPI WINTUN_RELEASE_RECEIVE_PACKET_FUNC)(WINTUN_SESSION_HANDLE Session, const BYTE *Packet);

/* Reserves PacketSize bytes (not checked: keep it <= WINTUN_MAX_IP_PACKET_SIZE) in the send ring, or NULL
 * with ERROR_BUFFER_OVERFLOW (full: transient) or ERROR_HANDLE_EOF. Allocation order is send order. */
typedef BYTE *(WINAPI WINTUN_ALLOCATE_SEND_PACKET_FUNC)(WINTUN_SESSION_HANDLE Session, DWORD PacketSize);

/* Hands a filled allocation to the driver. */
typedef VOID(WINAPI WINTUN_SEND_PACKET_FUNC)(WINTUN_SESSION_HANDLE Session, const BYTE *Packet);

#ifdef __cplusplus
}
#endif

#endif
