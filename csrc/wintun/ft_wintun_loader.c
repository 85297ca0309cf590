/* wintun/ft_wintun_loader.c - finds and loads wintun.dll once per process, resolves its 14 exports, and forwards
 * its log messages (UTF-16) to a UTF-8 callback. The search is always restricted (an explicit absolute
 * path, or System32): letting the current directory or PATH pick the DLL would allow DLL planting. */
#ifdef _WIN32
#include "wintun/ft_wintun_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#if defined(_M_X64) || defined(__x86_64__)
#define PROCESS_ARCH "amd64"
#elif defined(_M_ARM64) || defined(__aarch64__)
#define PROCESS_ARCH "arm64"
#elif defined(_M_IX86) || defined(__i386__)
#define PROCESS_ARCH "x86"
#elif defined(_M_ARM) || defined(__arm__)
#define PROCESS_ARCH "arm"
#else
#define PROCESS_ARCH "this CPU's"
#endif

/* One loader per process. The lock serialises loading and logger registration; `ready` publishes the
 * table to readers that never take the lock. */
static SRWLOCK load_lock = SRWLOCK_INIT;
static ft_atomic_int ready;
static ft_wintun_api api;
static wchar_t *loaded_path; /* NULL when loaded from System32 */

static SRWLOCK logger_lock = SRWLOCK_INIT;
static ft_wintun_log_fn user_logger;

const ft_wintun_api *ft_wintun_get_api(void) { return ft_atomic_load(&ready) ? &api : NULL; }

int ft_wintun_loaded(void) { return ft_atomic_load(&ready) != 0; }

/* ---- messages --------------------------------------------------------------------------------------- */

/* ft_fail() leaves oserr at 0; these failures still carry the Windows error for callers that map it. */
static int with_oserr(ft_err *e, int status, DWORD oserr)
{
    if (e)
        e->oserr = (long)oserr;
    return status;
}

/* A path for an error message: UTF-8, shortened from the left so the file name stays visible. */
static void path_for_message(const wchar_t *path, char *out, size_t len)
{
    char full[1024];
    int n = WideCharToMultiByte(CP_UTF8, 0, path, -1, full, (int)sizeof(full), NULL, NULL);
    if (n <= 0) {
        snprintf(out, len, "(unprintable path)");
        return;
    }
    size_t l = strlen(full);
    if (l < len) {
        memcpy(out, full, l + 1);
        return;
    }
    size_t keep = len - 4; /* "..." + NUL */
    const char *tail = full + (l - keep);
    while ((*tail & 0xC0) == 0x80) /* do not start inside a UTF-8 sequence */
        tail++;
    snprintf(out, len, "...%s", tail);
}

static int is_absolute(const wchar_t *p)
{
    int drive = ((p[0] >= L'A' && p[0] <= L'Z') || (p[0] >= L'a' && p[0] <= L'z')) && p[1] == L':' &&
                (p[2] == L'\\' || p[2] == L'/');
    int unc = (p[0] == L'\\' || p[0] == L'/') && (p[1] == L'\\' || p[1] == L'/');
    return drive || unc;
}

/* The PE machine field of a DLL file, 0 when it is not a PE file (or unreadable). Read only to explain
 * ERROR_BAD_EXE_FORMAT precisely. */
static unsigned pe_machine(const wchar_t *path)
{
    HANDLE f = CreateFileW(path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE)
        return 0;
    unsigned machine = 0;
    unsigned char dos[64], pe[6];
    DWORD got = 0;
    if (ReadFile(f, dos, sizeof(dos), &got, NULL) && got == sizeof(dos) && dos[0] == 'M' && dos[1] == 'Z') {
        LONG at = (LONG)(dos[60] | (dos[61] << 8) | (dos[62] << 16) | ((DWORD)dos[63] << 24));
        if (SetFilePointer(f, at, NULL, FILE_BEGIN) != INVALID_SET_FILE_POINTER &&
            ReadFile(f, pe, sizeof(pe), &got, NULL) && got == sizeof(pe) && memcmp(pe, "PE\0\0", 4) == 0)
            machine = (unsigned)(pe[4] | (pe[5] << 8));
    }
    CloseHandle(f);
    return machine;
}

static const char *machine_name(unsigned machine)
{
    switch (machine) {
    case 0x8664: return "amd64";
    case 0xAA64: return "arm64";
    case 0x014C: return "x86";
    case 0x01C0:
    case 0x01C4: return "arm";
    default: return NULL;
    }
}

static int fail_bad_format(const wchar_t *path, const char *shown, ft_err *e)
{
    unsigned machine = pe_machine(path);
    const char *arch = machine_name(machine);
    int r;
    if (machine == 0)
        r = ft_fail(e, FT_ESYS, ENOEXEC,
                    "%s is not a Windows DLL; use the " PROCESS_ARCH " wintun.dll from the Wintun release", shown);
    else if (arch)
        r = ft_fail(e, FT_ESYS, ENOEXEC,
                    "%s is the %s build of wintun.dll, for another CPU architecture; this process is " PROCESS_ARCH
                    " and needs the " PROCESS_ARCH " wintun.dll",
                    shown, arch);
    else
        r = ft_fail(e, FT_ESYS, ENOEXEC,
                    "%s is a DLL for another CPU architecture (PE machine 0x%04x); this process is " PROCESS_ARCH
                    " and needs the " PROCESS_ARCH " wintun.dll",
                    shown, machine);
    return with_oserr(e, r, ERROR_BAD_EXE_FORMAT);
}

static int fail_load(const wchar_t *path, const wchar_t *tried, DWORD err, ft_err *e)
{
    char shown[160];
    path_for_message(tried, shown, sizeof(shown));
    if (err == ERROR_BAD_EXE_FORMAT)
        return fail_bad_format(tried, shown, e);
    int missing = err == ERROR_MOD_NOT_FOUND || err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND;
    if (missing && !path) {
        ft_fail(e, FT_ESYS, ENOENT,
                "wintun.dll is not in System32 and no path was given: pass the absolute path of the " PROCESS_ARCH
                " wintun.dll (fasttun.load_wintun(path)) or install Wintun");
    } else if (missing && GetFileAttributesW(path) == INVALID_FILE_ATTRIBUTES) {
        ft_fail(e, FT_ESYS, ENOENT, "no wintun.dll at %s: check the path, or pass the path of the " PROCESS_ARCH
                " wintun.dll from the Wintun release", shown);
    } else if (missing) {
        ft_fail(e, FT_ESYS, ENOENT, "%s exists but a DLL it depends on was not found in its folder or System32",
                shown);
    } else if (err == ERROR_INVALID_PARAMETER) {
        /* The LOAD_LIBRARY_SEARCH_* flags are unknown to Windows 7 without update KB2533623. */
        return ft_fail_os(e, (long)err, "could not load %s with a restricted DLL search (Windows 7 needs update "
                                        "KB2533623)", shown);
    } else {
        return ft_fail_os(e, (long)err, "could not load %s", shown);
    }
    return with_oserr(e, FT_ESYS, err);
}

/* ---- exports ---------------------------------------------------------------------------------------- */

/* GetProcAddress returns a generic function pointer; going through void (*)(void) is the conversion
 * compilers accept between function pointer types without a warning. */
typedef void (*any_fn)(void);

static any_fn find_export(HMODULE m, const char *name, const char **missing)
{
    any_fn f = (any_fn)GetProcAddress(m, name);
    if (!f && !*missing)
        *missing = name;
    return f;
}

static int resolve_exports(HMODULE m, ft_wintun_api *t, const wchar_t *path, ft_err *e)
{
    const char *missing = NULL;
#define RESOLVE_(name, type) t->name = (type *)find_export(m, "Wintun" #name, &missing);
    FT_WINTUN_EXPORTS(RESOLVE_)
#undef RESOLVE_
    if (!missing)
        return FT_OK;
    char shown[120];
    path_for_message(path ? path : L"System32\\wintun.dll", shown, sizeof(shown));
    ft_fail(e, FT_ESYS, ENOSYS,
            "%s lacks the export %s: it is not Wintun 0.14 or later (older releases have another API); use a "
            "current wintun.dll",
            shown, missing);
    return with_oserr(e, FT_ESYS, ERROR_PROC_NOT_FOUND);
}

/* ---- logger ----------------------------------------------------------------------------------------- */

static ft_wintun_log_fn current_logger(void)
{
    AcquireSRWLockShared(&logger_lock);
    ft_wintun_log_fn fn = user_logger;
    ReleaseSRWLockShared(&logger_lock);
    return fn;
}

/* What Wintun calls; converts the message and hands it on. The lock is not held during the user's call,
 * so a slow logger never blocks ft_wintun_set_logger. */
static VOID CALLBACK log_trampoline(WINTUN_LOGGER_LEVEL level, DWORD64 timestamp, LPCWSTR message)
{
    ft_wintun_log_fn fn = current_logger();
    if (!fn || !message)
        return;
    char small[512];
    char *text = small;
    int n = WideCharToMultiByte(CP_UTF8, 0, message, -1, small, (int)sizeof(small), NULL, NULL);
    if (n == 0 && GetLastError() == ERROR_INSUFFICIENT_BUFFER) {
        n = WideCharToMultiByte(CP_UTF8, 0, message, -1, NULL, 0, NULL, NULL);
        text = n > 0 ? malloc((size_t)n) : NULL;
        if (text)
            n = WideCharToMultiByte(CP_UTF8, 0, message, -1, text, n, NULL, NULL);
    }
    if (text && n > 0)
        fn((int)level, (uint64_t)timestamp, text);
    if (text != small)
        free(text);
}

void ft_wintun_log_own(int level, const char *utf8_msg)
{
    ft_wintun_log_fn fn = current_logger();
    if (!fn || !utf8_msg)
        return;
    FILETIME now;
    GetSystemTimeAsFileTime(&now);
    fn(level, ((uint64_t)now.dwHighDateTime << 32) | now.dwLowDateTime, utf8_msg);
}

/* Tells the DLL about the current logger. Called with load_lock held. */
static void register_logger(void)
{
    if (ft_atomic_load(&ready))
        api.SetLogger(current_logger() ? log_trampoline : NULL);
}

void ft_wintun_set_logger(ft_wintun_log_fn fn)
{
    AcquireSRWLockExclusive(&logger_lock);
    user_logger = fn;
    ReleaseSRWLockExclusive(&logger_lock);
    AcquireSRWLockExclusive(&load_lock);
    register_logger();
    ReleaseSRWLockExclusive(&load_lock);
}

/* ---- loading ---------------------------------------------------------------------------------------- */

static int same_path(const wchar_t *a, const wchar_t *b)
{
    if (!a || !b)
        return a == b;
    return CompareStringOrdinal(a, -1, b, -1, TRUE) == CSTR_EQUAL;
}

static int already_loaded(const wchar_t *path, ft_err *e)
{
    if (!path || same_path(path, loaded_path))
        return FT_OK;
    char want[120], have[120];
    path_for_message(path, want, sizeof(want));
    path_for_message(loaded_path ? loaded_path : L"System32\\wintun.dll", have, sizeof(have));
    return ft_fail(e, FT_EINVAL, EEXIST,
                   "wintun.dll is already loaded from %s; a process loads it once, so %s cannot be used", have, want);
}

static int load_locked(const wchar_t *path, ft_err *e)
{
    if (ft_atomic_load(&ready))
        return already_loaded(path, e);
    if (path && !is_absolute(path))
        return ft_fail(e, FT_EINVAL, EINVAL,
                       "the path to wintun.dll must be absolute (like C:\\...\\wintun.dll): a relative one would "
                       "let the current directory decide which DLL is loaded");
    const wchar_t *target = path ? path : L"wintun.dll";
    DWORD flags = path ? LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR | LOAD_LIBRARY_SEARCH_SYSTEM32
                       : LOAD_LIBRARY_SEARCH_SYSTEM32;
    HMODULE m = LoadLibraryExW(target, NULL, flags);
    if (!m)
        return fail_load(path, path ? path : L"System32\\wintun.dll", GetLastError(), e);
    ft_wintun_api t;
    if (resolve_exports(m, &t, path, e) != FT_OK) {
        FreeLibrary(m);
        return FT_ESYS;
    }
    if (path) {
        size_t n = wcslen(path) + 1;
        loaded_path = malloc(n * sizeof(wchar_t));
        if (!loaded_path) {
            FreeLibrary(m);
            return ft_fail(e, FT_ENOMEM, ENOMEM, "out of memory while loading wintun.dll");
        }
        memcpy(loaded_path, path, n * sizeof(wchar_t));
    }
    /* m is never freed: adapters, sessions and the logger may outlive any one caller. */
    api = t;
    ft_atomic_store(&ready, 1);
    register_logger();
    return FT_OK;
}

int ft_wintun_load(const wchar_t *path_or_null, ft_err *e)
{
    if (path_or_null && !path_or_null[0])
        path_or_null = NULL;
    AcquireSRWLockExclusive(&load_lock);
    int r = load_locked(path_or_null, e);
    ReleaseSRWLockExclusive(&load_lock);
    return r;
}

static int fail_not_loaded(ft_err *e)
{
    return ft_fail(e, FT_ESYS, ENOENT, "wintun.dll is not loaded yet: load it first (fasttun.load_wintun())");
}

/* ---- driver ----------------------------------------------------------------------------------------- */

int ft_wintun_driver_version(uint32_t *version, ft_err *e)
{
    *version = 0;
    const ft_wintun_api *a = ft_wintun_get_api();
    if (!a)
        return fail_not_loaded(e);
    SetLastError(ERROR_SUCCESS);
    DWORD v = a->GetRunningDriverVersion();
    if (v != 0) {
        *version = v;
        return FT_OK;
    }
    DWORD err = GetLastError();
    if (err == ERROR_FILE_NOT_FOUND) {
        ft_fail(e, FT_WINTUN_DRIVER_NOT_LOADED, ENOENT,
                "the Wintun driver is not loaded: Windows loads it when the first Wintun adapter is created");
        return with_oserr(e, FT_WINTUN_DRIVER_NOT_LOADED, err);
    }
    return ft_fail_os(e, (long)err, "could not ask wintun.dll for the running driver version");
}

int ft_wintun_delete_driver(ft_err *e)
{
    const ft_wintun_api *a = ft_wintun_get_api();
    if (!a)
        return fail_not_loaded(e);
    if (a->DeleteDriver())
        return FT_OK;
    DWORD err = GetLastError();
    if (err == ERROR_ACCESS_DENIED)
        return ft_fail_os(e, (long)err, "removing the Wintun driver needs administrator elevation");
    return ft_fail_os(e, (long)err, "could not remove the Wintun driver (it is removed only when no Wintun "
                                    "adapter exists)");
}
#endif
