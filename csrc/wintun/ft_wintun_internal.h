/* wintun/ft_wintun_internal.h - what the backend and the loader share (not part of the core's API): the table
 * of wintun.dll's exports the loader fills, and the logger. IP Helper configuration is apart, keyed by the
 * LUID, in wintun/ft_wintun_config.h. */
#ifndef FT_WINTUN_INTERNAL_H
#define FT_WINTUN_INTERNAL_H

#include "wintun/ft_wintun.h"

#include "wintun.h" /* include/ */

/* The 14 exports of Wintun 0.14, all resolved or the DLL is not considered loaded. */
typedef struct ft_wintun_api {
    WINTUN_CREATE_ADAPTER_FUNC *CreateAdapter;
    WINTUN_OPEN_ADAPTER_FUNC *OpenAdapter;
    WINTUN_CLOSE_ADAPTER_FUNC *CloseAdapter;
    WINTUN_DELETE_DRIVER_FUNC *DeleteDriver;
    WINTUN_GET_ADAPTER_LUID_FUNC *GetAdapterLUID;
    WINTUN_GET_RUNNING_DRIVER_VERSION_FUNC *GetRunningDriverVersion;
    WINTUN_SET_LOGGER_FUNC *SetLogger;
    WINTUN_START_SESSION_FUNC *StartSession;
    WINTUN_END_SESSION_FUNC *EndSession;
    WINTUN_GET_READ_WAIT_EVENT_FUNC *GetReadWaitEvent;
    WINTUN_RECEIVE_PACKET_FUNC *ReceivePacket;
    WINTUN_RELEASE_RECEIVE_PACKET_FUNC *ReleaseReceivePacket;
    WINTUN_ALLOCATE_SEND_PACKET_FUNC *AllocateSendPacket;
    WINTUN_SEND_PACKET_FUNC *SendPacket;
} ft_wintun_api;

#define FT_WINTUN_EXPORT_COUNT 14

/* The loaded table, or NULL before a successful ft_wintun_load. Once non-NULL it never changes: the DLL
 * stays loaded for the life of the process. */
const ft_wintun_api *ft_wintun_get_api(void);

/* A message of fasttun's own about Wintun (a session restart), through the same logger as Wintun's messages
 * (level: WINTUN_LOGGER_LEVEL). Does nothing without a logger. */
void ft_wintun_log_own(int level, const char *utf8_msg);


#endif
