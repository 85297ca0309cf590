/* windows/ft_iphlp.h - the IP Helper calls fasttun looks up at run time instead of importing them: those that
 * not every Windows since Vista has (SetInterfaceDnsSettings needs Windows 10 2004) and those Wine lacks (where
 * an import would only fail at the call, as a crash). One table, resolved once from iphlpapi.dll; a NULL entry
 * is a call this system does not have, and its user says so by name. The calls every Windows since Vista and
 * Wine have (GetIfEntry2, ConvertInterface*) are imported as usual. */
#ifndef FT_IPHLP_H
#define FT_IPHLP_H
#ifdef _WIN32

#include <winsock2.h>
#include <ws2ipdef.h>
#include <iphlpapi.h>

/* SetInterfaceDnsSettings' settings structure, declared here because older SDKs and mingw-w64 lack it; the
 * layout is the documented version 1. */
typedef struct ft_dns_settings {
    ULONG Version;
    ULONG64 Flags;
    PWSTR Domain;
    PWSTR NameServer;
    PWSTR SearchList;
    ULONG RegistrationEnabled;
    ULONG RegisterAdapterName;
    ULONG EnableLLMNR;
    ULONG QueryAdapterName;
    PWSTR ProfileNameServer;
} ft_dns_settings;

#define FT_DNS_SETTINGS_VERSION1 1
#define FT_DNS_SETTING_IPV6 0x0001
#define FT_DNS_SETTING_NAMESERVER 0x0002

typedef struct ft_iphlp_fns {
    /* interfaces */
    DWORD(WINAPI *GetIpInterfaceEntry)(MIB_IPINTERFACE_ROW *row);
    DWORD(WINAPI *SetIpInterfaceEntry)(MIB_IPINTERFACE_ROW *row);
    /* addresses */
    VOID(WINAPI *InitializeUnicastIpAddressEntry)(MIB_UNICASTIPADDRESS_ROW *row);
    DWORD(WINAPI *GetUnicastIpAddressEntry)(MIB_UNICASTIPADDRESS_ROW *row);
    DWORD(WINAPI *CreateUnicastIpAddressEntry)(const MIB_UNICASTIPADDRESS_ROW *row);
    DWORD(WINAPI *DeleteUnicastIpAddressEntry)(const MIB_UNICASTIPADDRESS_ROW *row);
    /* routes */
    VOID(WINAPI *InitializeIpForwardEntry)(MIB_IPFORWARD_ROW2 *row);
    DWORD(WINAPI *CreateIpForwardEntry2)(const MIB_IPFORWARD_ROW2 *row);
    DWORD(WINAPI *DeleteIpForwardEntry2)(const MIB_IPFORWARD_ROW2 *row);
    /* DNS */
    DWORD(WINAPI *SetInterfaceDnsSettings)(GUID iface, const ft_dns_settings *settings);
    /* change notifications */
    DWORD(WINAPI *NotifyIpInterfaceChange)(ADDRESS_FAMILY family, PIPINTERFACE_CHANGE_CALLBACK cb, PVOID ctx,
                                           BOOLEAN initial, HANDLE *handle);
    DWORD(WINAPI *NotifyUnicastIpAddressChange)(ADDRESS_FAMILY family, PUNICAST_IPADDRESS_CHANGE_CALLBACK cb,
                                                PVOID ctx, BOOLEAN initial, HANDLE *handle);
    DWORD(WINAPI *CancelMibChangeNotify2)(HANDLE handle);
} ft_iphlp_fns;

/* The table, resolved on first use (thread-safe); never NULL itself. */
const ft_iphlp_fns *ft_iphlp(void);

#endif
#endif
