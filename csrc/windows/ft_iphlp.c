/* windows/ft_iphlp.c - the run-time IP Helper table (see ft_iphlp.h). */
#ifdef _WIN32
#include "windows/ft_iphlp.h"

#include <string.h>

#ifdef _MSC_VER
#pragma comment(lib, "iphlpapi.lib")
#endif

static ft_iphlp_fns fns;
static INIT_ONCE fns_once = INIT_ONCE_STATIC_INIT;

typedef void (*any_fn)(void);

static any_fn lookup(HMODULE m, const char *name) { return m ? (any_fn)GetProcAddress(m, name) : NULL; }

/* Function pointers all have one representation on Windows; memcpy keeps that conversion out of the type
 * system's way. */
#define RESOLVE(m, field)                                    \
    do {                                                     \
        any_fn p_ = lookup(m, #field);                       \
        _Static_assert(sizeof(p_) == sizeof(fns.field), ""); \
        memcpy(&fns.field, &p_, sizeof(p_));                 \
    } while (0)

static BOOL CALLBACK resolve(INIT_ONCE *once, void *param, void **ctx)
{
    (void)once, (void)param, (void)ctx;
    /* Imported by whoever uses the table (GetIfEntry2, the conversions), so loaded already; loaded from the
     * system directory otherwise. */
    HMODULE m = GetModuleHandleW(L"iphlpapi.dll");
    if (!m)
        m = LoadLibraryExW(L"iphlpapi.dll", NULL, LOAD_LIBRARY_SEARCH_SYSTEM32);
    RESOLVE(m, GetIpInterfaceEntry);
    RESOLVE(m, SetIpInterfaceEntry);
    RESOLVE(m, InitializeUnicastIpAddressEntry);
    RESOLVE(m, GetUnicastIpAddressEntry);
    RESOLVE(m, CreateUnicastIpAddressEntry);
    RESOLVE(m, DeleteUnicastIpAddressEntry);
    RESOLVE(m, InitializeIpForwardEntry);
    RESOLVE(m, CreateIpForwardEntry2);
    RESOLVE(m, DeleteIpForwardEntry2);
    RESOLVE(m, SetInterfaceDnsSettings);
    RESOLVE(m, NotifyIpInterfaceChange);
    RESOLVE(m, NotifyUnicastIpAddressChange);
    RESOLVE(m, CancelMibChangeNotify2);
    return TRUE;
}

const ft_iphlp_fns *ft_iphlp(void)
{
    InitOnceExecuteOnce(&fns_once, resolve, NULL, NULL);
    return &fns;
}

#endif
