/* wintun/ft_wintun_internal.h - what the backend and the loader share (not part of the core's API): the table
 * of wintun.dll's exports the loader fills, and the logger. IP Helper configuration is apart, keyed by the
 * LUID, in wintun/ft_wintun_config.h. */
#ifndef FT_WINTUN_INTERNAL_H
#define FT_WINTUN_INTERNAL_H

#include "wintun/ft_wintun.h"

#include "wintun.h" /* include/ */

/* The 14 exports of Wintun 0.14, X(name without the "Wintun" prefix, its function type), listed once: the table
 * below and the loader that fills it expand this list. All resolve, or the DLL is not considered loaded. */
#define FT_WINTUN_EXPORTS(X)                                                                               \
    X(CreateAdapter, WINTUN_CREATE_ADAPTER_FUNC)                                                           \
    X(OpenAdapter, WINTUN_OPEN_ADAPTER_FUNC)                                                               \
    X(CloseAdapter, WINTUN_CLOSE_ADAPTER_FUNC)                                                             \
    X(DeleteDriver, WINTUN_DELETE_DRIVER_FUNC)                                                             \
    X(GetAdapterLUID, WINTUN_GET_ADAPTER_LUID_FUNC)                                                        \
    X(GetRunningDriverVersion, WINTUN_GET_RUNNING_DRIVER_VERSION_FUNC)                                     \
    X(SetLogger, WINTUN_SET_LOGGER_FUNC)                                                                   \
    X(StartSession, WINTUN_START_SESSION_FUNC)                                                             \
    X(EndSession, WINTUN_END_SESSION_FUNC)                                                                 \
    X(GetReadWaitEvent, WINTUN_GET_READ_WAIT_EVENT_FUNC)                                                   \
    X(ReceivePacket, WINTUN_RECEIVE_PACKET_FUNC)                                                           \
    X(ReleaseReceivePacket, WINTUN_RELEASE_RECEIVE_PACKET_FUNC)                                            \
    X(AllocateSendPacket, WINTUN_ALLOCATE_SEND_PACKET_FUNC)                                                \
    X(SendPacket, WINTUN_SEND_PACKET_FUNC)

#define FT_WINTUN_API_FIELD_(name, type) type *name;
typedef struct ft_wintun_api {
    FT_WINTUN_EXPORTS(FT_WINTUN_API_FIELD_)
} ft_wintun_api;

#define FT_WINTUN_ONE_(name, type) +1
enum { FT_WINTUN_EXPORT_COUNT = 0 FT_WINTUN_EXPORTS(FT_WINTUN_ONE_) };

/* The loaded table, or NULL before a successful ft_wintun_load. Once non-NULL it never changes: the DLL
 * stays loaded for the life of the process. */
const ft_wintun_api *ft_wintun_get_api(void);

/* A message of fasttun's own about Wintun (a session restart), through the same logger as Wintun's messages
 * (level: WINTUN_LOGGER_LEVEL). Does nothing without a logger. */
void ft_wintun_log_own(int level, const char *utf8_msg);


#endif
