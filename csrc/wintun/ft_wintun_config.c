/* wintun/ft_wintun_config.c - configuring a Wintun adapter through the IP Helper API, keyed by the adapter's LUID:
 * MTU, index, link state, addresses, routes and DNS servers. No netsh, no PowerShell: plain calls that
 * return an error code we can explain. Nothing here knows the Wintun session or ft_device: the backend
 * (wintun/ft_wintun.c) passes the LUID and the name its messages use. */
#ifdef _WIN32
#include "wintun/ft_wintun_config.h"
#include "windows/ft_iphlp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#ifdef _MSC_VER
#pragma comment(lib, "iphlpapi.lib")
#pragma comment(lib, "ws2_32.lib")
#endif

#define IPV6_MIN_MTU 1280u

static int fail_missing(ft_err *e, const char *fn)
{
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS,
                   "this system's iphlpapi.dll has no %s (Windows Vista and later have it; Wine does not)", fn);
}

#define NEED(fn)                              \
    do {                                      \
        if (!ft_iphlp()->fn)                  \
            return fail_missing(e, #fn);      \
    } while (0)

static int fail_ip(ft_err *e, DWORD err, const char *what, const char *name)
{
    if (err == ERROR_ACCESS_DENIED)
        return ft_fail_os(e, (long)err, "%s on \"%.60s\" needs administrator elevation", what, name);
    return ft_fail_os(e, (long)err, "%s on \"%.60s\" failed", what, name);
}

/* The family has no IP interface on this adapter (IPv6 disabled, or not bound yet). */
static int family_absent(DWORD err) { return err == ERROR_NOT_FOUND || err == ERROR_FILE_NOT_FOUND; }

/* GetIpInterfaceEntry fills every field of the row, so it needs only the key; this also spares us
 * InitializeIpInterfaceEntry, which Wine lacks. */
static DWORD read_interface(NET_LUID luid, ADDRESS_FAMILY family, MIB_IPINTERFACE_ROW *row)
{
    memset(row, 0, sizeof(*row));
    row->Family = family;
    row->InterfaceLuid = luid;
    return ft_iphlp()->GetIpInterfaceEntry(row);
}

/* ---- MTU -------------------------------------------------------------------------------------------- */

int ft_wintun_cfg_get_mtu(NET_LUID luid, const char *name, uint32_t *mtu, ft_err *e)
{
    NEED(GetIpInterfaceEntry);
    static const ADDRESS_FAMILY families[] = {AF_INET, AF_INET6};
    for (int i = 0; i < 2; i++) {
        MIB_IPINTERFACE_ROW row;
        DWORD err = read_interface(luid, families[i], &row);
        if (err == NO_ERROR) {
            *mtu = row.NlMtu;
            return FT_OK;
        }
        if (!family_absent(err))
            return fail_ip(e, err, "reading the MTU", name);
    }
    return ft_fail(e, FT_ESYS, ENODEV, "\"%.60s\" has neither an IPv4 nor an IPv6 interface to read the MTU of",
                   name);
}

static int set_family_mtu(NET_LUID luid, const char *name, ADDRESS_FAMILY family, uint32_t mtu, int *done,
                          ft_err *e)
{
    MIB_IPINTERFACE_ROW row;
    DWORD err = read_interface(luid, family, &row);
    if (family_absent(err))
        return FT_OK;
    if (err != NO_ERROR)
        return fail_ip(e, err, "reading the MTU", name);
    row.NlMtu = mtu;
    if (family == AF_INET)
        row.SitePrefixLength = 0; /* SetIpInterfaceEntry rejects an IPv4 row that carries one */
    err = ft_iphlp()->SetIpInterfaceEntry(&row);
    if (err != NO_ERROR)
        return fail_ip(e, err, family == AF_INET ? "setting the IPv4 MTU" : "setting the IPv6 MTU", name);
    (*done)++;
    return FT_OK;
}

int ft_wintun_cfg_set_mtu(NET_LUID luid, const char *name, uint32_t mtu, ft_err *e)
{
    NEED(GetIpInterfaceEntry);
    NEED(SetIpInterfaceEntry);
    int done = 0;
    int r = set_family_mtu(luid, name, AF_INET, mtu, &done, e);
    /* IPv6 cannot run below 1280 bytes; Windows refuses such an MTU, so IPv6 keeps its own then. */
    if (r == FT_OK && mtu >= IPV6_MIN_MTU)
        r = set_family_mtu(luid, name, AF_INET6, mtu, &done, e);
    if (r == FT_OK && done == 0)
        return ft_fail(e, FT_ESYS, ENODEV, "\"%.60s\" has no IP interface to set the MTU on%s", name,
                       mtu < IPV6_MIN_MTU ? " (an MTU below 1280 applies to IPv4 only)" : "");
    return r;
}

/* ---- index and link state --------------------------------------------------------------------------- */

int ft_wintun_cfg_index(NET_LUID luid, const char *name, uint32_t *index, ft_err *e)
{
    NET_IFINDEX i = 0;
    DWORD err = ConvertInterfaceLuidToIndex(&luid, &i);
    if (err != NO_ERROR)
        return fail_ip(e, err, "reading the interface index", name);
    *index = i;
    return FT_OK;
}

int ft_wintun_cfg_is_up(NET_LUID luid, const char *name, int *up, ft_err *e)
{
    MIB_IF_ROW2 row;
    memset(&row, 0, sizeof(row));
    row.InterfaceLuid = luid;
    DWORD err = GetIfEntry2(&row);
    if (err != NO_ERROR)
        return fail_ip(e, err, "reading the link state", name);
    *up = row.OperStatus == IfOperStatusUp;
    return FT_OK;
}

/* What the IP Helper answered to adding or removing an address or a route (what: "address", "route"): FT_OK, the
 * refusals both share (already there; not there, with the POSIX errno `missing`), or the error of doing it. */
static int change_result(DWORD err, int add, const char *what, int missing, const char *name, ft_err *e)
{
    if (err == NO_ERROR)
        return FT_OK;
    if (add && err == ERROR_OBJECT_ALREADY_EXISTS) {
        ft_fail(e, FT_ESYS, EEXIST, "the %s is already on \"%.60s\"", what, name);
    } else if (!add && (err == ERROR_NOT_FOUND || err == ERROR_FILE_NOT_FOUND)) {
        ft_fail(e, FT_ESYS, missing, "there is no such %s on \"%.60s\"", what, name);
    } else {
        char doing[32];
        snprintf(doing, sizeof(doing), "%s the %s", add ? "adding" : "removing", what);
        return fail_ip(e, err, doing, name);
    }
    if (e)
        e->oserr = (long)err;
    return FT_ESYS;
}

/* ---- addresses -------------------------------------------------------------------------------------- */

static void to_sockaddr(int family, const uint8_t *bytes, SOCKADDR_INET *out)
{
    memset(out, 0, sizeof(*out));
    if (family == 4) {
        out->Ipv4.sin_family = AF_INET;
        if (bytes)
            memcpy(&out->Ipv4.sin_addr, bytes, 4);
    } else {
        out->Ipv6.sin6_family = AF_INET6;
        if (bytes)
            memcpy(&out->Ipv6.sin6_addr, bytes, 16);
    }
}

static void address_row(NET_LUID luid, const ft_addr *a, MIB_UNICASTIPADDRESS_ROW *row)
{
    ft_iphlp()->InitializeUnicastIpAddressEntry(row);
    row->InterfaceLuid = luid;
    to_sockaddr(a->family, a->bytes, &row->Address);
    row->OnLinkPrefixLength = a->prefix;
    row->DadState = IpDadStatePreferred; /* usable at once: a point-to-point link has no one to clash with */
}

int ft_wintun_cfg_address(NET_LUID luid, const char *name, int add, const ft_addr *a, ft_err *e)
{
    NEED(InitializeUnicastIpAddressEntry);
    if (add)
        NEED(CreateUnicastIpAddressEntry);
    else
        NEED(DeleteUnicastIpAddressEntry);
    MIB_UNICASTIPADDRESS_ROW row;
    address_row(luid, a, &row);
    DWORD err = add ? ft_iphlp()->CreateUnicastIpAddressEntry(&row) : ft_iphlp()->DeleteUnicastIpAddressEntry(&row);
    return change_result(err, add, "address", EADDRNOTAVAIL, name, e);
}

static void from_row(const MIB_UNICASTIPADDRESS_ROW *row, ft_addr *out)
{
    memset(out, 0, sizeof(*out));
    out->prefix = row->OnLinkPrefixLength;
    if (row->Address.si_family == AF_INET) {
        out->family = 4;
        memcpy(out->bytes, &row->Address.Ipv4.sin_addr, 4);
    } else {
        out->family = 6;
        memcpy(out->bytes, &row->Address.Ipv6.sin6_addr, 16);
    }
}

int ft_wintun_cfg_list_addresses(NET_LUID luid, const char *name, ft_addr *out, uint32_t max, uint32_t *n,
                                 ft_err *e)
{
    MIB_UNICASTIPADDRESS_TABLE *table = NULL;
    DWORD err = GetUnicastIpAddressTable(AF_UNSPEC, &table);
    if (err == ERROR_NOT_FOUND) { /* no addresses anywhere */
        *n = 0;
        return FT_OK;
    }
    if (err != NO_ERROR)
        return fail_ip(e, err, "listing addresses", name);
    uint32_t count = 0;
    for (ULONG i = 0; i < table->NumEntries; i++) {
        const MIB_UNICASTIPADDRESS_ROW *row = &table->Table[i];
        if (row->InterfaceLuid.Value != luid.Value)
            continue;
        if (row->Address.si_family != AF_INET && row->Address.si_family != AF_INET6)
            continue;
        if (count < max)
            from_row(row, &out[count]);
        count++;
    }
    FreeMibTable(table);
    *n = count; /* all of them, even beyond max, so the caller can ask again with more room */
    return FT_OK;
}

/* ---- routes ----------------------------------------------------------------------------------------- */

static int route_row(NET_LUID luid, const ft_route *r, MIB_IPFORWARD_ROW2 *row, ft_err *e)
{
    NEED(InitializeIpForwardEntry);
    ft_iphlp()->InitializeIpForwardEntry(row);
    row->InterfaceLuid = luid;
    to_sockaddr(r->family, r->dest, &row->DestinationPrefix.Prefix);
    row->DestinationPrefix.PrefixLength = r->prefix;
    to_sockaddr(r->family, r->has_gateway ? r->gateway : NULL, &row->NextHop); /* all zeros: on-link */
    row->Metric = r->metric;
    row->Protocol = MIB_IPPROTO_NETMGMT; /* a static route set by management, like `route add` */
    return FT_OK;
}

int ft_wintun_cfg_route(NET_LUID luid, const char *name, int add, const ft_route *route, ft_err *e)
{
    MIB_IPFORWARD_ROW2 row;
    int r = route_row(luid, route, &row, e);
    if (r != FT_OK)
        return r;
    if (add)
        NEED(CreateIpForwardEntry2);
    else
        NEED(DeleteIpForwardEntry2);
    DWORD err = add ? ft_iphlp()->CreateIpForwardEntry2(&row) : ft_iphlp()->DeleteIpForwardEntry2(&row);
    return change_result(err, add, "route", ESRCH, name, e);
}

/* ---- DNS -------------------------------------------------------------------------------------------- */

/* Text form of one server, appended to a comma-separated list. IPv6 is written in full (eight groups),
 * which every parser accepts. Returns 0 when it would not fit. */
static int append_server(wchar_t *list, size_t cap, const ft_addr *a)
{
    size_t used = wcslen(list);
    wchar_t one[48];
    if (a->family == 4) {
        swprintf(one, 48, L"%u.%u.%u.%u", a->bytes[0], a->bytes[1], a->bytes[2], a->bytes[3]);
    } else {
        const uint8_t *b = a->bytes;
        swprintf(one, 48, L"%x:%x:%x:%x:%x:%x:%x:%x", b[0] << 8 | b[1], b[2] << 8 | b[3], b[4] << 8 | b[5],
                 b[6] << 8 | b[7], b[8] << 8 | b[9], b[10] << 8 | b[11], b[12] << 8 | b[13], b[14] << 8 | b[15]);
    }
    size_t need = wcslen(one) + (used ? 1 : 0);
    if (used + need + 1 > cap)
        return 0;
    if (used)
        list[used++] = L',';
    memcpy(list + used, one, (wcslen(one) + 1) * sizeof(wchar_t));
    return 1;
}

#define MAX_DNS_SERVERS 16

static int set_family_dns(GUID guid, int family, const ft_addr *servers, uint32_t n, const char *name,
                          ft_err *e)
{
    wchar_t list[MAX_DNS_SERVERS * 48] = L"";
    for (uint32_t i = 0; i < n; i++)
        if (servers[i].family == family)
            append_server(list, sizeof(list) / sizeof(list[0]), &servers[i]);
    ft_dns_settings s;
    memset(&s, 0, sizeof(s));
    s.Version = FT_DNS_SETTINGS_VERSION1;
    s.Flags = FT_DNS_SETTING_NAMESERVER | (family == 6 ? FT_DNS_SETTING_IPV6 : 0);
    s.NameServer = list; /* empty: no static servers for this family */
    DWORD err = ft_iphlp()->SetInterfaceDnsSettings(guid, &s);
    if (err != NO_ERROR)
        return fail_ip(e, err, family == 4 ? "setting IPv4 DNS servers" : "setting IPv6 DNS servers", name);
    return FT_OK;
}

int ft_wintun_cfg_dns(NET_LUID luid, const char *name, const ft_addr *servers, uint32_t n, ft_err *e)
{
    if (n > MAX_DNS_SERVERS)
        return ft_fail(e, FT_EINVAL, EINVAL, "%u DNS servers given; at most %d are allowed", n, MAX_DNS_SERVERS);
    for (uint32_t i = 0; i < n; i++)
        if (servers[i].family != 4 && servers[i].family != 6)
            return ft_fail(e, FT_EINVAL, EAFNOSUPPORT, "DNS server %u has address family %d; use 4 or 6", i,
                           servers[i].family);
    if (!ft_iphlp()->SetInterfaceDnsSettings)
        return ft_fail(e, FT_EUNSUPPORTED, ENOSYS,
                       "setting DNS servers needs SetInterfaceDnsSettings, which this Windows lacks (it came with "
                       "Windows 10 version 2004); configure DNS another way, e.g. with netsh");
    GUID guid;
    DWORD err = ConvertInterfaceLuidToGuid(&luid, &guid);
    if (err != NO_ERROR)
        return fail_ip(e, err, "reading the interface GUID", name);
    int r = set_family_dns(guid, 4, servers, n, name, e);
    if (r == FT_OK)
        r = set_family_dns(guid, 6, servers, n, name, e);
    return r;
}

#endif
