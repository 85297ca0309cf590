/* wintun/ft_wintun.h - how a Wintun adapter (wintun.dll) is opened and what only it has (LUID, GUID,
 * rings, DNS). Elsewhere the same names exist and only say no. */
#ifndef FT_WINTUN_H
#define FT_WINTUN_H

#include "core/ft_device.h"

#include <wchar.h>

#define FT_WINTUN_DEFAULT_RING_CAPACITY (4u << 20) /* 4 MiB */
#define FT_WINTUN_MIN_RING_CAPACITY 0x20000u       /* 128 KiB, Wintun's minimum */
#define FT_WINTUN_MAX_RING_CAPACITY 0x4000000u     /* 64 MiB, Wintun's maximum */
static const ft_limit ft_limit_ring_capacity = {"ring_capacity", FT_WINTUN_MIN_RING_CAPACITY,
                                                FT_WINTUN_MAX_RING_CAPACITY, " bytes (128 KiB..64 MiB)", 1};
#define FT_WINTUN_MAX_NAME 127                     /* UTF-16 units in an adapter name */
#define FT_WINTUN_DEFAULT_TUNNEL_TYPE "fasttun"

/* ft_wintun_driver_version's answer when no Wintun driver is running: a success without a version. */
#define FT_WINTUN_DRIVER_NOT_LOADED 1

/* How ft_wintun_open finds its adapter. */

typedef struct ft_wintun_params {
    const char *name;        /* UTF-8, 1..FT_WINTUN_MAX_NAME UTF-16 units */
    const char *tunnel_type; /* UTF-8; NULL or "" for FT_WINTUN_DEFAULT_TUNNEL_TYPE */
    const uint8_t *guid;     /* 16 bytes in GUID memory order (Python's uuid.bytes_le), or NULL */
    uint32_t ring_capacity;  /* bytes, a power of two in [MIN, MAX]; 0 for the default */
    int open_mode;           /* FT_OPEN_ANY, FT_OPEN_EXISTING or FT_OPEN_CREATE */
    uint32_t mtu;            /* set on the interface (both IP families); 0 keeps the interface's MTU */
    uint32_t flags;          /* FT_WINTUN_AUTO_RING, FT_WINTUN_COALESCE, FT_WINTUN_REMOTE_CSUM */
} ft_wintun_params;

/* What only an adapter has, as ft_wintun_get_info reads it. */
typedef struct ft_wintun_info {
    uint64_t luid;          /* what the IP Helper API keys on */
    int created;            /* 1 if this device created its adapter (closing it removes it), 0 if it opened one */
    uint32_t ring_capacity; /* of the current session: auto capacity changes it */
    uint32_t ring_grows;    /* times auto capacity doubled the rings */
} ft_wintun_info;

/* ft_wintun_params.flags */
#define FT_WINTUN_AUTO_RING 0x1u /* start at ring_capacity, double it (up to MAX) when the rings overflow */
#define FT_WINTUN_COALESCE 0x2u  /* merge consecutive TCP segments of a flow into one packet on send */
#define FT_WINTUN_REMOTE_CSUM 0x4u /* take packets behind an FT_RCSUM header (offload/ft_offload.h) on send and
                                    * finish their checksums: Wintun itself has no checksum offload */

/* Wintun's log messages, converted to UTF-8. level: 0 info, 1 warning, 2 error. */
typedef void (*ft_wintun_log_fn)(int level, uint64_t timestamp_100ns, const char *utf8_msg);

#ifdef _WIN32
/* Loads wintun.dll once per process (thread-safe). path_or_null: an absolute path to the DLL (its own
 * folder and System32 are searched for its dependencies), or NULL for System32 only. Never the current
 * directory or PATH. Loading again is a no-op, unless a different path is asked for (FT_EINVAL). */
int ft_wintun_load(const wchar_t *path_or_null, ft_err *e);
int ft_wintun_loaded(void);
/* (major << 16) | minor of the running driver: FT_OK; or FT_WINTUN_DRIVER_NOT_LOADED with *version = 0
 * and e saying so (e->status FT_WINTUN_DRIVER_NOT_LOADED); or a failure. */
int ft_wintun_driver_version(uint32_t *version, ft_err *e);
/* Removes the driver when no Wintun adapter uses it (needs administrator rights). */
int ft_wintun_delete_driver(ft_err *e);
/* The callback may run on any thread, several at once, and briefly after it was replaced; it must not
 * call ft_wintun_set_logger itself. NULL disables logging. Callable before the DLL is loaded. */
void ft_wintun_set_logger(ft_wintun_log_fn fn);

/* Opens a Wintun adapter and starts its session: one queue, max_packet 0xFFFF. Loads wintun.dll from
 * System32 if nothing was loaded yet. */
int ft_wintun_open(const ft_wintun_params *p, ft_device **out, ft_err *e);
/* The adapter's interface GUID, 16 bytes in GUID memory order. */
int ft_wintun_guid(ft_device *d, uint8_t guid[16], ft_err *e);
/* The adapter's plain values, readable until the device is closed (then all 0; all 0 for a device that is not a
 * Wintun adapter). */
void ft_wintun_get_info(ft_device *d, ft_wintun_info *out);

/* Replaces the adapter's DNS servers, both families (n = 0 clears them). Needs SetInterfaceDnsSettings
 * (Windows 10 2004 or later): FT_EUNSUPPORTED where it is absent. */
int ft_wintun_set_dns(ft_device *d, const ft_addr *servers, uint32_t n, ft_err *e);
#else
/* Elsewhere the same names exist so that one wrapper serves every platform; they only say no. */
#include <errno.h>
#include <string.h>
#define FT_WINTUN_ONLY_ "Wintun adapters exist only on Windows"
static inline int ft_wintun_load(const wchar_t *path_or_null, ft_err *e)
{
    (void)path_or_null;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, "wintun.dll can be loaded only on Windows");
}
static inline int ft_wintun_loaded(void) { return 0; }
static inline int ft_wintun_driver_version(uint32_t *version, ft_err *e)
{
    *version = 0;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, FT_WINTUN_ONLY_);
}
static inline int ft_wintun_delete_driver(ft_err *e) { return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, FT_WINTUN_ONLY_); }
static inline void ft_wintun_set_logger(ft_wintun_log_fn fn) { (void)fn; }
static inline int ft_wintun_open(const ft_wintun_params *p, ft_device **out, ft_err *e)
{
    (void)p;
    (void)out;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, FT_WINTUN_ONLY_);
}
static inline int ft_wintun_guid(ft_device *d, uint8_t guid[16], ft_err *e)
{
    (void)d;
    (void)guid;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, FT_WINTUN_ONLY_);
}
static inline void ft_wintun_get_info(ft_device *d, ft_wintun_info *out)
{
    (void)d;
    memset(out, 0, sizeof(*out));
}
static inline int ft_wintun_set_dns(ft_device *d, const ft_addr *servers, uint32_t n, ft_err *e)
{
    (void)d, (void)servers, (void)n;
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS, FT_WINTUN_ONLY_);
}
#endif

#endif
