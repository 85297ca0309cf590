/* events/ft_events_win.c - device events on Windows: NotifyIpInterfaceChange (both families) and
 * NotifyUnicastIpAddressChange, resolved at run time from iphlpapi.dll (windows/ft_iphlp.h).
 *
 * The callbacks run on system threads (Wine: the address one once, synchronously, inside the registering
 * call). They do three things only: take the lock, append one ft_device_event to a fixed queue of
 * FT_EV_QUEUE entries inside ft_events (nothing allocates), and set the `ready` event. A full queue keeps
 * its last slot for one FT_EV_OVERFLOW mark, after the events that came before the loss; what arrives while
 * the mark is last is dropped (counted). The rows the system passes are documented as incomplete (enough to
 * query the interface), so ft_events_read, on the caller's thread, completes each link event with
 * GetIpInterfaceEntry (the MTU) and GetIfEntry2 (the operational state, and whether the interface still
 * exists after a MibDeleteInstance), falling back to what the row said where those fail.
 *
 * Shutdown takes the registration handles under the lock, sets `ready`, and cancels them with
 * CancelMibChangeNotify2 without holding the lock: that call waits for running callbacks, which take it.
 *
 * What Wine 8.0 does (probed with a program that registers for both and then changes addresses, the MTU and
 * the link state of an interface in its network namespace with `ip`): NotifyIpInterfaceChange is a stub that
 * returns NO_ERROR and a NULL handle and never calls back; NotifyUnicastIpAddressChange returns NO_ERROR and
 * a NULL handle and calls back only for the initial notification (Row NULL, on the calling thread, before it
 * returns); CancelMibChangeNotify2(NULL) returns NO_ERROR; GetIpInterfaceEntry, InitializeUnicastIpAddressEntry
 * and CreateUnicastIpAddressEntry are missing, GetIfEntry2 and GetUnicastIpAddressEntry exist. */
#ifdef _WIN32
#include "events/ft_events.h"
#include "windows/ft_iphlp.h"

#include <winsock2.h>
#include <ws2ipdef.h>
#include <iphlpapi.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef _MSC_VER
#pragma comment(lib, "iphlpapi.lib")
#endif

struct ft_events {
    uint64_t luid;           /* 0: every interface; never changes after open */
    SRWLOCK lock;            /* guards everything below */
    HANDLE ready;            /* manual reset: set while the queue holds something, and after shutdown */
    HANDLE iface_handle, addr_handle;
    int iface_registered, addr_registered; /* Wine registers with a NULL handle */
    int shut;
    unsigned head, count;
    uint64_t dropped;        /* notifications lost while the overflow mark was the last entry */
    ft_device_event queue[FT_EV_QUEUE];
};

/* ---- the callbacks' side: the queue --------------------------------------------------------------------- */

static void push(ft_events *ev, const ft_device_event *x)
{
    AcquireSRWLockExclusive(&ev->lock);
    if (!ev->shut) {
        if (ev->count < FT_EV_QUEUE) {
            ft_device_event *slot = &ev->queue[(ev->head + ev->count) % FT_EV_QUEUE];
            if (ev->count < FT_EV_QUEUE - 1) {
                *slot = *x;
            } else { /* the last free slot: the mark that something after it was lost */
                memset(slot, 0, sizeof(*slot));
                slot->kind = FT_EV_OVERFLOW;
                slot->luid = ev->luid;
                ev->dropped++;
            }
            ev->count++;
        } else {
            ev->dropped++;
        }
        SetEvent(ev->ready);
    }
    ReleaseSRWLockExclusive(&ev->lock);
}

static VOID WINAPI on_interface(PVOID ctx, PMIB_IPINTERFACE_ROW row, MIB_NOTIFICATION_TYPE type)
{
    ft_events *ev = ctx;
    if (!row || type == MibInitialNotification)
        return;
    if (ev->luid && row->InterfaceLuid.Value != ev->luid)
        return;
    ft_device_event x;
    memset(&x, 0, sizeof(x));
    x.kind = type == MibDeleteInstance ? FT_EV_LINK_REMOVED : FT_EV_LINK;
    x.ifindex = row->InterfaceIndex;
    x.luid = row->InterfaceLuid.Value;
    x.mtu = row->NlMtu;
    x.flags = row->Connected ? FT_EV_IFF_UP : 0;
    x.addr.family = row->Family == AF_INET6 ? 6 : 4; /* which IP interface of the adapter changed */
    push(ev, &x);
}

static VOID WINAPI on_address(PVOID ctx, PMIB_UNICASTIPADDRESS_ROW row, MIB_NOTIFICATION_TYPE type)
{
    ft_events *ev = ctx;
    if (!row || (type != MibAddInstance && type != MibDeleteInstance))
        return;
    if (ev->luid && row->InterfaceLuid.Value != ev->luid)
        return;
    ft_device_event x;
    memset(&x, 0, sizeof(x));
    if (row->Address.si_family == AF_INET) {
        x.addr.family = 4;
        memcpy(x.addr.bytes, &row->Address.Ipv4.sin_addr, 4);
    } else if (row->Address.si_family == AF_INET6) {
        x.addr.family = 6;
        memcpy(x.addr.bytes, &row->Address.Ipv6.sin6_addr, 16);
    } else {
        return;
    }
    x.kind = type == MibAddInstance ? FT_EV_ADDR_ADDED : FT_EV_ADDR_REMOVED;
    x.ifindex = row->InterfaceIndex;
    x.luid = row->InterfaceLuid.Value;
    x.addr.prefix = row->OnLinkPrefixLength;
    push(ev, &x);
}

/* ---- open, wait, shutdown, close ----------------------------------------------------------------------- */

static int missing(ft_err *e, const char *fn)
{
    return ft_fail(e, FT_EUNSUPPORTED, ENOSYS,
                   "device events need %s, which this system's iphlpapi.dll lacks (Windows Vista and later have it)",
                   fn);
}

static void cancel(HANDLE h, int registered)
{
    if (registered && h)
        ft_iphlp()->CancelMibChangeNotify2(h);
}

ft_events *ft_events_open_luid(uint64_t luid, ft_err *e)
{
    const ft_iphlp_fns *f = ft_iphlp();
    if (!f->NotifyIpInterfaceChange) {
        missing(e, "NotifyIpInterfaceChange");
        return NULL;
    }
    if (!f->NotifyUnicastIpAddressChange) {
        missing(e, "NotifyUnicastIpAddressChange");
        return NULL;
    }
    if (!f->CancelMibChangeNotify2) {
        missing(e, "CancelMibChangeNotify2");
        return NULL;
    }
    ft_events *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory for device events");
        return NULL;
    }
    ev->luid = luid;
    InitializeSRWLock(&ev->lock);
    ev->ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!ev->ready) {
        ft_fail_os(e, (long)GetLastError(), "cannot create the event that device events wait on");
        goto fail_alloc;
    }
    /* Without the lock: Wine calls the address callback inside the registering call. */
    DWORD err = f->NotifyIpInterfaceChange(AF_UNSPEC, on_interface, ev, FALSE, &ev->iface_handle);
    if (err != NO_ERROR) {
        ft_fail_os(e, (long)err, "NotifyIpInterfaceChange failed");
        goto fail_event;
    }
    ev->iface_registered = 1;
    err = f->NotifyUnicastIpAddressChange(AF_UNSPEC, on_address, ev, FALSE, &ev->addr_handle);
    if (err != NO_ERROR) {
        ft_fail_os(e, (long)err, "NotifyUnicastIpAddressChange failed");
        goto fail_iface;
    }
    ev->addr_registered = 1;
    return ev;
fail_iface:
    cancel(ev->iface_handle, ev->iface_registered);
fail_event:
    CloseHandle(ev->ready);
fail_alloc:
    free(ev);
    return NULL;
}

ft_events *ft_events_open(uint32_t ifindex, ft_err *e)
{
    NET_LUID luid;
    luid.Value = 0;
    if (ifindex) {
        DWORD err = ConvertInterfaceIndexToLuid(ifindex, &luid);
        if (err != NO_ERROR) {
            ft_fail_os(e, (long)err, "there is no interface with index %u", (unsigned)ifindex);
            return NULL;
        }
    }
    return ft_events_open_luid(luid.Value, e);
}

int ft_events_fd(const ft_events *ev)
{
    (void)ev;
    return -1;
}

static int is_shut(ft_events *ev)
{
    AcquireSRWLockShared(&ev->lock);
    int shut = ev->shut;
    ReleaseSRWLockShared(&ev->lock);
    return shut;
}

int ft_events_wait(ft_events *ev, int timeout_ms, ft_err *e)
{
    if (is_shut(ev))
        return FT_ECLOSED;
    DWORD r = WaitForSingleObject(ev->ready, timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
    if (is_shut(ev))
        return FT_ECLOSED;
    if (r == WAIT_OBJECT_0)
        return 1;
    if (r == WAIT_TIMEOUT)
        return FT_ETIMEDOUT;
    return ft_fail_os(e, (long)GetLastError(), "waiting for device events failed");
}

void ft_events_shutdown(ft_events *ev)
{
    if (!ev)
        return;
    AcquireSRWLockExclusive(&ev->lock);
    HANDLE iface = ev->iface_handle, addr = ev->addr_handle;
    int iface_registered = ev->iface_registered, addr_registered = ev->addr_registered;
    ev->iface_registered = ev->addr_registered = 0;
    ev->shut = 1;
    SetEvent(ev->ready);
    ReleaseSRWLockExclusive(&ev->lock);
    /* Not under the lock: each waits for its running callbacks, which take it. */
    cancel(iface, iface_registered);
    cancel(addr, addr_registered);
}

uint64_t ft_events_dropped(ft_events *ev)
{
    AcquireSRWLockShared(&ev->lock);
    uint64_t n = ev->dropped;
    ReleaseSRWLockShared(&ev->lock);
    return n;
}

void ft_events_close(ft_events *ev)
{
    if (!ev)
        return;
    ft_events_shutdown(ev);
    CloseHandle(ev->ready);
    free(ev);
}

/* ---- reading: the caller's thread completes what the rows left out ------------------------------------- */

static int interface_exists(uint64_t luid, MIB_IF_ROW2 *row)
{
    memset(row, 0, sizeof(*row));
    row->InterfaceLuid.Value = luid;
    return GetIfEntry2(row) == NO_ERROR;
}

/* The link's MTU (of the IP interface of the family that changed) and state now, where the system can say. */
static void complete_link(ft_device_event *x)
{
    const ft_iphlp_fns *f = ft_iphlp();
    if (f->GetIpInterfaceEntry) {
        MIB_IPINTERFACE_ROW row;
        memset(&row, 0, sizeof(row));
        row.Family = x->addr.family == 6 ? AF_INET6 : AF_INET;
        row.InterfaceLuid.Value = x->luid;
        if (f->GetIpInterfaceEntry(&row) == NO_ERROR) {
            x->mtu = row.NlMtu;
            x->flags = row.Connected ? FT_EV_IFF_UP : 0;
        }
    }
    MIB_IF_ROW2 ifrow;
    if (interface_exists(x->luid, &ifrow))
        x->flags = ifrow.OperStatus == IfOperStatusUp ? FT_EV_IFF_UP : 0;
}

static void complete_address(ft_device_event *x)
{
    unsigned max = x->addr.family == 4 ? 32u : 128u;
    if (x->addr.prefix <= max)
        return;
    const ft_iphlp_fns *f = ft_iphlp();
    if (x->kind == FT_EV_ADDR_ADDED && f->GetUnicastIpAddressEntry) {
        MIB_UNICASTIPADDRESS_ROW row;
        memset(&row, 0, sizeof(row));
        row.InterfaceLuid.Value = x->luid;
        if (x->addr.family == 4) {
            row.Address.Ipv4.sin_family = AF_INET;
            memcpy(&row.Address.Ipv4.sin_addr, x->addr.bytes, 4);
        } else {
            row.Address.Ipv6.sin6_family = AF_INET6;
            memcpy(&row.Address.Ipv6.sin6_addr, x->addr.bytes, 16);
        }
        if (f->GetUnicastIpAddressEntry(&row) == NO_ERROR && row.OnLinkPrefixLength <= max) {
            x->addr.prefix = row.OnLinkPrefixLength;
            return;
        }
    }
    x->addr.prefix = (uint8_t)max; /* the row had none and the address cannot be asked about any more */
}

static void complete(ft_device_event *x)
{
    MIB_IF_ROW2 ifrow;
    switch (x->kind) {
    case FT_EV_LINK:
        complete_link(x);
        break;
    case FT_EV_LINK_REMOVED:
        /* One family's IP interface went (IPv6 unbound, say) while the adapter stays: a link change. */
        if (interface_exists(x->luid, &ifrow)) {
            x->kind = FT_EV_LINK;
            complete_link(x);
        }
        x->addr.family = 0;
        break;
    case FT_EV_ADDR_ADDED:
    case FT_EV_ADDR_REMOVED:
        complete_address(x);
        break;
    default:
        break;
    }
    if (x->kind == FT_EV_LINK)
        x->addr.family = 0;
}

int ft_events_read(ft_events *ev, ft_device_event *out, int max, ft_err *e)
{
    if (max <= 0)
        return ft_fail(e, FT_EINVAL, EINVAL, "room for at least one event is needed, got %d", max);
    AcquireSRWLockExclusive(&ev->lock);
    if (ev->shut) {
        ReleaseSRWLockExclusive(&ev->lock);
        return ft_fail(e, FT_ECLOSED, EBADF, "device events are shut down");
    }
    int n = 0;
    while (n < max && ev->count > 0) {
        out[n++] = ev->queue[ev->head];
        ev->head = (ev->head + 1) % FT_EV_QUEUE;
        ev->count--;
    }
    if (ev->count == 0)
        ResetEvent(ev->ready);
    ReleaseSRWLockExclusive(&ev->lock);
    for (int i = 0; i < n; i++)
        complete(&out[i]);
    return n > 0 ? n : FT_EAGAIN;
}

int ft_events_decode(const unsigned char *buf, size_t len, size_t *pos, uint32_t ifindex, ft_device_event *out,
                     int max)
{
    (void)buf, (void)ifindex, (void)out, (void)max;
    *pos = len; /* rtnetlink messages: Linux's */
    return 0;
}

int ft_events_test_notify(ft_events *ev, int what, int type, uint64_t luid, uint32_t ifindex, const ft_addr *a,
                          uint32_t mtu, int connected, ft_err *e)
{
    if (what != 0 && what != 1)
        return ft_fail(e, FT_EINVAL, EINVAL, "what must be 0 (interface) or 1 (address), got %d", what);
    if (type < MibParameterNotification || type > MibInitialNotification)
        return ft_fail(e, FT_EINVAL, EINVAL, "type must be a MIB_NOTIFICATION_TYPE (0..3), got %d", type);
    if (a && a->family != 4 && a->family != 6)
        return ft_fail(e, FT_EINVAL, EAFNOSUPPORT, "address family %d is not allowed; use 4 or 6", a->family);
    if (what == 1 && !a)
        return ft_fail(e, FT_EINVAL, EINVAL, "an address notification needs an address");
    if (what == 0) {
        MIB_IPINTERFACE_ROW row;
        memset(&row, 0, sizeof(row));
        row.Family = a && a->family == 6 ? AF_INET6 : AF_INET;
        row.InterfaceLuid.Value = luid;
        row.InterfaceIndex = ifindex;
        row.NlMtu = mtu;
        row.Connected = connected ? TRUE : FALSE;
        on_interface(ev, &row, (MIB_NOTIFICATION_TYPE)type);
        return FT_OK;
    }
    MIB_UNICASTIPADDRESS_ROW row;
    memset(&row, 0, sizeof(row));
    if (a->family == 4) {
        row.Address.Ipv4.sin_family = AF_INET;
        memcpy(&row.Address.Ipv4.sin_addr, a->bytes, 4);
    } else {
        row.Address.Ipv6.sin6_family = AF_INET6;
        memcpy(&row.Address.Ipv6.sin6_addr, a->bytes, 16);
    }
    row.InterfaceLuid.Value = luid;
    row.InterfaceIndex = ifindex;
    row.OnLinkPrefixLength = a->prefix;
    on_address(ev, &row, (MIB_NOTIFICATION_TYPE)type);
    return FT_OK;
}

#else
typedef int ft_events_win_is_windows_only; /* ISO C wants a translation unit to declare something */
#endif
