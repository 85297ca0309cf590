/* test_wintun_backend.c - the Wintun backend, ft_device and ft_reader against our fake wintun.dll, run
 * under Wine (or Windows). Expects beside the exe: fake\wintun.dll, noexport\wintun.dll, garbage\wintun.dll
 * and, when an i686 compiler was there, x86\wintun.dll. Ends with "N passed, N failed". */
#include "pair/ft_pair.h"
#include "wintun/ft_wintun.h"
#include "core/ft_reader.h"
#include "wintun/ft_wintun_internal.h"

#include <winsock2.h> /* before iphlpapi.h, which declares the netioapi calls only after it */
#include <ws2ipdef.h>
#include <iphlpapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "fake_wintun.h"

#include "wintun_check.h"

#define SECTION(name) printf("== %s\n", name)
#define INFO(...) (printf("  info: "), printf(__VA_ARGS__), printf("\n"))

/* ---- the fake's extra exports ------------------------------------------------------------------------ */

static FAKE_RESET_FUNC *fake_reset;
static FAKE_SET_FAULT_FUNC *fake_fault;
static FAKE_GET_COUNTERS_FUNC *fake_get_counters;
static FAKE_INJECT_FUNC *fake_inject;
static FAKE_INJECT_BOGUS_FUNC *fake_inject_bogus;
static FAKE_READ_SENT_FUNC *fake_read_sent;
static FAKE_ADD_LEFTOVER_FUNC *fake_add_leftover;
static FAKE_SET_LUID_FUNC *fake_set_luid;
static FAKE_LOG_FUNC *fake_log;

typedef void (*any_fn)(void);

static int resolve_fake(void)
{
    HMODULE m = GetModuleHandleW(L"wintun.dll");
    if (!m)
        return 0;
#define GET(var, type, name) var = (type *)(any_fn)GetProcAddress(m, name)
    GET(fake_reset, FAKE_RESET_FUNC, "FakeWintunReset");
    GET(fake_fault, FAKE_SET_FAULT_FUNC, "FakeWintunSetFault");
    GET(fake_get_counters, FAKE_GET_COUNTERS_FUNC, "FakeWintunGetCounters");
    GET(fake_inject, FAKE_INJECT_FUNC, "FakeWintunInject");
    GET(fake_inject_bogus, FAKE_INJECT_BOGUS_FUNC, "FakeWintunInjectBogus");
    GET(fake_read_sent, FAKE_READ_SENT_FUNC, "FakeWintunReadSent");
    GET(fake_add_leftover, FAKE_ADD_LEFTOVER_FUNC, "FakeWintunAddLeftover");
    GET(fake_set_luid, FAKE_SET_LUID_FUNC, "FakeWintunSetLuid");
    GET(fake_log, FAKE_LOG_FUNC, "FakeWintunLog");
#undef GET
    return fake_reset && fake_fault && fake_get_counters && fake_inject && fake_inject_bogus && fake_read_sent &&
           fake_add_leftover && fake_set_luid && fake_log;
}

static fake_counters counters(void)
{
    fake_counters c;
    fake_get_counters(&c);
    return c;
}

/* ---- paths ------------------------------------------------------------------------------------------- */

static wchar_t exe_dir[MAX_PATH];

static void find_exe_dir(void)
{
    GetModuleFileNameW(NULL, exe_dir, MAX_PATH);
    wchar_t *slash = wcsrchr(exe_dir, L'\\');
    if (slash)
        *slash = 0;
}

static const wchar_t *path_in(const wchar_t *rel)
{
    static wchar_t buf[4][MAX_PATH];
    static int k;
    wchar_t *out = buf[k++ % 4];
    swprintf(out, MAX_PATH, L"%ls\\%ls", exe_dir, rel);
    return out;
}

static int file_exists(const wchar_t *p) { return GetFileAttributesW(p) != INVALID_FILE_ATTRIBUTES; }

/* A copy of the fake DLL whose PE header claims another machine (arm64): a wrong-architecture DLL that
 * needs no cross compiler. */
static int make_arm64_copy(const wchar_t *from, const wchar_t *dir, const wchar_t *to)
{
    CreateDirectoryW(dir, NULL);
    if (!CopyFileW(from, to, FALSE))
        return 0;
    HANDLE f = CreateFileW(to, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
    if (f == INVALID_HANDLE_VALUE)
        return 0;
    unsigned char dos[64];
    DWORD got = 0;
    int ok = ReadFile(f, dos, 64, &got, NULL) && got == 64;
    LONG at = (LONG)(dos[60] | dos[61] << 8 | dos[62] << 16 | (DWORD)dos[63] << 24);
    unsigned char arm64[2] = {0x64, 0xAA};
    ok = ok && SetFilePointer(f, at + 4, NULL, FILE_BEGIN) != INVALID_SET_FILE_POINTER &&
         WriteFile(f, arm64, 2, &got, NULL) && got == 2;
    CloseHandle(f);
    return ok;
}

/* ---- packets ----------------------------------------------------------------------------------------- */

/* An IPv4 packet of len bytes whose payload is derived from seq, so order and contents can be checked. */
static void make_packet(uint8_t *p, uint32_t seq, size_t len)
{
    memset(p, 0, 20);
    p[0] = 0x45;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    p[8] = 64;
    p[9] = 17;
    p[12] = 10, p[15] = 1, p[16] = 10, p[19] = 2;
    memcpy(p + 20, &seq, 4);
    for (size_t i = 24; i < len; i++)
        p[i] = (uint8_t)(seq * 31u + i);
}

static size_t packet_len(uint32_t seq) { return 40 + (seq * 7919u) % 1400u; }

/* The sequence number of a packet if its contents match it, else UINT32_MAX. */
static uint32_t packet_seq(const uint8_t *p, size_t len)
{
    uint32_t seq;
    if (len < 24 || p[0] != 0x45)
        return UINT32_MAX;
    memcpy(&seq, p + 20, 4);
    if (len != packet_len(seq))
        return UINT32_MAX;
    for (size_t i = 24; i < len; i++)
        if (p[i] != (uint8_t)(seq * 31u + i))
            return UINT32_MAX;
    return seq;
}

/* Injects packets first..first+n-1 (sizes from packet_len), waiting while the ring is full. */
static void inject_range(uint32_t first, uint32_t n)
{
    static uint8_t bufs[64][1500];
    const BYTE *ptrs[64];
    DWORD sizes[64];
    uint32_t seq = first, end = first + n;
    while (seq < end) {
        DWORD k = 0;
        for (; k < 64 && seq + k < end; k++) {
            sizes[k] = (DWORD)packet_len(seq + k);
            make_packet(bufs[k], seq + k, sizes[k]);
            ptrs[k] = bufs[k];
        }
        DWORD off = 0;
        while (off < k) {
            LONG got = fake_inject(ptrs + off, sizes + off, k - off);
            if (got < 0)
                return;
            if (got == 0)
                Sleep(0);
            off += (DWORD)got;
        }
        seq += k;
    }
}

typedef struct injector {
    uint32_t first, n;
    HANDLE thread;
} injector;

static DWORD WINAPI injector_main(LPVOID arg)
{
    injector *in = arg;
    inject_range(in->first, in->n);
    return 0;
}

static void injector_start(injector *in, uint32_t first, uint32_t n)
{
    in->first = first;
    in->n = n;
    in->thread = CreateThread(NULL, 0, injector_main, in, 0, NULL);
}

static void injector_join(injector *in)
{
    WaitForSingleObject(in->thread, INFINITE);
    CloseHandle(in->thread);
}

/* ---- batches and devices ----------------------------------------------------------------------------- */

typedef struct test_batch {
    ft_batch b;
    uint32_t offsets[512], lengths[512];
} test_batch;

static test_batch *batch_new(uint32_t max)
{
    test_batch *t = calloc(1, sizeof(*t));
    t->b.cap = ft_batch_arena_size(max, FT_MAX_PACKET);
    t->b.data = malloc(t->b.cap);
    t->b.offsets = t->offsets;
    t->b.lengths = t->lengths;
    t->b.max = max;
    return t;
}

static void batch_free(test_batch *t)
{
    free(t->b.data);
    free(t);
}

static ft_device *open_dev(const char *name, uint32_t capacity, ft_err *e)
{
    ft_wintun_params p;
    memset(&p, 0, sizeof(p));
    p.name = name;
    p.ring_capacity = capacity;
    ft_device *d = NULL;
    int r = ft_wintun_open(&p, &d, e);
    return r == FT_OK ? d : NULL;
}

static ft_wintun_info info_of(ft_device *d)
{
    ft_wintun_info i;
    ft_wintun_get_info(d, &i);
    return i;
}

/* open_dev for a test that needs the device: failing to open it is a failed check. */
static ft_device *open_checked(const char *name, uint32_t capacity, ft_err *e)
{
    ft_device *d = open_dev(name, capacity, e);
    CHECK(d != NULL, "open %s: %s", name, e->msg);
    return d;
}

static void check_released(const char *when)
{
    fake_counters c = counters();
    CHECK(c.sessions == 0 && c.adapter_handles == 0, "%s: %ld sessions and %ld adapter handles still open", when,
          c.sessions, c.adapter_handles);
    CHECK(c.event_misuse == 0, "%s: the session's read event was closed by someone else", when);
}

static double ms_since(uint64_t start) { return (double)(ft_now_ns() - start) / 1e6; }

/* ---- loader ------------------------------------------------------------------------------------------ */

static volatile LONG log_count;
static char last_log[1024];
static int last_level;
static uint64_t last_ts;

static void test_logger(int level, uint64_t ts, const char *msg)
{
    InterlockedIncrement(&log_count);
    last_level = level;
    last_ts = ts;
    snprintf(last_log, sizeof(last_log), "%s", msg);
}

static void test_loader_errors(void)
{
    SECTION("loader errors");
    ft_err e;
    CHECK(!ft_wintun_loaded() && ft_wintun_get_api() == NULL, "nothing should be loaded yet");

    uint32_t v = 1;
    int r = ft_wintun_driver_version(&v, &e);
    CHECK(r == FT_ESYS && v == 0 && strstr(e.msg, "not loaded"), "driver version before loading: %d %s", r, e.msg);

    r = ft_wintun_load(L"wintun.dll", &e);
    CHECK(r == FT_EINVAL && strstr(e.msg, "absolute"), "relative path: %d %s", r, e.msg);
    INFO("relative path -> %s", e.msg);

    r = ft_wintun_load(path_in(L"missing\\wintun.dll"), &e);
    CHECK(r == FT_ESYS && e.errnum == ENOENT && strstr(e.msg, "no wintun.dll at"), "missing DLL: %d %d %s", r,
          e.errnum, e.msg);
    INFO("missing -> %s", e.msg);

    r = ft_wintun_load(path_in(L"garbage\\wintun.dll"), &e);
    CHECK(r == FT_ESYS && e.errnum == ENOEXEC && strstr(e.msg, "not a Windows DLL"), "non-PE file: %d %d %s", r,
          e.errnum, e.msg);
    INFO("not a DLL -> %s (Windows error %ld)", e.msg, e.oserr);

    const wchar_t *x86 = path_in(L"x86\\wintun.dll");
    if (file_exists(x86)) {
        r = ft_wintun_load(x86, &e);
        CHECK(r == FT_ESYS && e.errnum == ENOEXEC && strstr(e.msg, "x86") && strstr(e.msg, "amd64"),
              "32-bit DLL: %d %d %s", r, e.errnum, e.msg);
        INFO("x86 DLL -> %s (Windows error %ld)", e.msg, e.oserr);
    } else {
        INFO("no i686 build of the fake (i686-w64-mingw32-gcc missing): 32-bit DLL case covered by arm64 copy only");
    }

    const wchar_t *arm_dir = path_in(L"arm64"), *arm = path_in(L"arm64\\wintun.dll");
    CHECK(make_arm64_copy(path_in(L"fake\\wintun.dll"), arm_dir, arm), "could not make the arm64-labelled copy");
    r = ft_wintun_load(arm, &e);
    CHECK(r == FT_ESYS && e.errnum == ENOEXEC && strstr(e.msg, "arm64") && strstr(e.msg, "needs the amd64"),
          "wrong-machine DLL: %d %d %s", r, e.errnum, e.msg);
    INFO("arm64 DLL -> %s (Windows error %ld)", e.msg, e.oserr);

    r = ft_wintun_load(path_in(L"noexport\\wintun.dll"), &e);
    CHECK(r == FT_ESYS && strstr(e.msg, "WintunGetAdapterLUID") && strstr(e.msg, "0.14"), "missing export: %d %s", r,
          e.msg);
    INFO("missing export -> %s", e.msg);

    ft_wintun_params p;
    memset(&p, 0, sizeof(p));
    p.name = "";
    ft_device *d = NULL;
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_EINVAL && !ft_wintun_loaded(), "arguments are checked before any DLL is loaded: %d %s", r, e.msg);
    p.name = "ft-sys32";
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_ESYS && d == NULL && e.errnum == ENOENT && strstr(e.msg, "System32"),
          "open without a loaded DLL (none in System32): %d %s", r, e.msg);
    INFO("System32 -> %s", e.msg);
    CHECK(!ft_wintun_loaded(), "failed loads must leave nothing loaded");
}

static void test_loader_success(void)
{
    SECTION("loader");
    ft_err e;
    ft_wintun_set_logger(test_logger); /* before loading: registered when the DLL arrives */
    const wchar_t *fake = path_in(L"fake\\wintun.dll");
    int r = ft_wintun_load(fake, &e);
    CHECK(r == FT_OK, "loading the fake: %d %s", r, e.msg);
    CHECK(ft_wintun_loaded(), "loaded() after a successful load");
    const ft_wintun_api *a = ft_wintun_get_api();
    int resolved = 0;
    if (a) {
        const any_fn *slots = (const any_fn *)(const void *)a;
        for (int i = 0; i < FT_WINTUN_EXPORT_COUNT; i++)
            resolved += slots[i] != NULL;
    }
    CHECK(resolved == FT_WINTUN_EXPORT_COUNT, "%d of 14 exports resolved", resolved);
    CHECK(resolve_fake(), "the fake's test exports");
    r = ft_wintun_load(fake, &e);
    CHECK(r == FT_OK, "loading the same path again is a no-op: %d %s", r, e.msg);
    r = ft_wintun_load(NULL, &e);
    CHECK(r == FT_OK, "loading with no path once loaded is a no-op: %d %s", r, e.msg);
    r = ft_wintun_load(path_in(L"noexport\\wintun.dll"), &e);
    CHECK(r == FT_EINVAL && strstr(e.msg, "already loaded"), "another path once loaded: %d %s", r, e.msg);
}

static void test_driver(void)
{
    SECTION("driver version and removal");
    ft_err e;
    uint32_t v = 0;
    int r = ft_wintun_driver_version(&v, &e);
    CHECK(r == FT_OK && v == 14, "version 0.14 expected: %d %u", r, v);
    fake_fault(FAKE_DRIVER_NOT_LOADED, TRUE, 0);
    v = 7;
    r = ft_wintun_driver_version(&v, &e);
    CHECK(r == FT_WINTUN_DRIVER_NOT_LOADED && v == 0 && e.status == FT_WINTUN_DRIVER_NOT_LOADED &&
              e.oserr == ERROR_FILE_NOT_FOUND && strstr(e.msg, "not loaded"),
          "driver not loaded: %d %u %s", r, v, e.msg);
    INFO("no driver -> %s", e.msg);
    fake_fault(FAKE_DRIVER_NOT_LOADED, FALSE, 0);
    r = ft_wintun_delete_driver(&e);
    CHECK(r == FT_OK, "delete driver with no adapters: %d %s", r, e.msg);
    ft_device *d = open_dev("ft-drv", 0, &e);
    r = ft_wintun_delete_driver(&e);
    CHECK(r == FT_ESYS && strstr(e.msg, "driver"), "delete driver while an adapter exists: %d %s", r, e.msg);
    ft_device_free(d);
}

/* ---- opening ----------------------------------------------------------------------------------------- */

static void expect_invalid(const ft_wintun_params *p, const char *needle, const char *what)
{
    ft_err e;
    ft_device *d = NULL;
    LONG before = counters().create_calls;
    int r = ft_wintun_open(p, &d, &e);
    CHECK(r == FT_EINVAL && d == NULL && strstr(e.msg, needle), "%s: %d %s", what, r, e.msg);
    CHECK(counters().create_calls == before, "%s: the DLL must not be called for a bad argument", what);
    INFO("%s -> %s", what, e.msg);
}

static void test_open_params(void)
{
    SECTION("open: parameter checks");
    static char long_name[129];
    memset(long_name, 'a', 128);
    const char *ring = "allowed: a power of two in 131072..67108864 bytes";
    const struct {
        ft_wintun_params p;
        const char *needle, *what;
    } rows[] = {
        {{.name = NULL}, "empty", "no name"},
        {{.name = ""}, "empty", "empty name"},
        {{.name = long_name}, "1..127", "128-character name"},
        {{.name = "bad\xff\xfe"}, "UTF-8", "invalid UTF-8 name"},
        {{.name = "ft-p", .ring_capacity = 0x30000}, "power of two", "ring capacity not a power of two"},
        {{.name = "ft-p", .ring_capacity = 0x10000}, ring, "ring capacity too small"},
        {{.name = "ft-p", .ring_capacity = 0x8000000}, ring, "ring capacity too large"},
        {{.name = "ft-p", .open_mode = 3}, "open mode 3", "open mode 3"},
        {{.name = "ft-p", .mtu = 20}, "mtu", "mtu 20"},
        {{.name = "ft-p", .mtu = 70000}, "mtu", "mtu 70000"},
        {{.name = "ft-p", .flags = 0x8}, "unknown bits", "flags 0x8"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        expect_invalid(&rows[i].p, rows[i].needle, rows[i].what);
}

static void test_open_create(void)
{
    SECTION("open: create, GUID, tunnel type, names");
    ft_err e;
    ft_wintun_params p;
    memset(&p, 0, sizeof(p));
    p.name = "t\xc3\xbcn0"; /* "tün0" */
    p.tunnel_type = "Test \xc3\xa9";
    static const uint8_t guid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    p.guid = guid;
    fake_set_luid(0x1234);
    ft_device *d = NULL;
    int r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_OK && d, "create: %d %s", r, e.msg);
    if (!d)
        return;
    fake_counters c = counters();
    CHECK(c.last_capacity == FT_WINTUN_DEFAULT_RING_CAPACITY, "default ring is 4 MiB, got %lu", c.last_capacity);
    CHECK(wcscmp(c.last_tunnel_type, L"Test \u00e9") == 0, "tunnel type converted from UTF-8");
    CHECK(c.last_had_guid && memcmp(&c.last_requested_guid, guid, 16) == 0, "GUID passed through");
    CHECK(d->nqueues == 1 && d->max_packet == 0xFFFF, "one queue, 64 KiB packets: %d %u", d->nqueues, d->max_packet);
    CHECK(strcmp(d->name, "t\xc3\xbcn0") == 0, "device name kept as UTF-8: %s", d->name);
    CHECK(info_of(d).created == 1, "created flag");
    CHECK(info_of(d).luid == 0x1234, "LUID from the adapter: %llx", (unsigned long long)info_of(d).luid);
    CHECK(info_of(d).ring_capacity == FT_WINTUN_DEFAULT_RING_CAPACITY, "ring capacity accessor");
    CHECK(ft_atomic_load(&d->mtu) == 0xFFFF, "MTU falls back to 65535 when the interface cannot be read: %d",
          ft_atomic_load(&d->mtu));
    CHECK(strcmp(d->ops->name, "wintun") == 0, "backend name");
    ft_device_free(d);
    fake_set_luid(0);
    CHECK(counters().adapters == 0, "closing a created adapter removes it");
    check_released("after create+close");

    memset(&p, 0, sizeof(p));
    p.name = "ft-mtu";
    p.mtu = 1400; /* needs IP Helper on a real interface: neither Wine nor a made-up LUID has one */
    d = NULL;
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r != FT_OK && d == NULL && e.msg[0], "an MTU that cannot be set fails the open: %d", r);
    INFO("open with mtu=1400 -> %s", e.msg);
    CHECK(counters().adapters == 0, "and the adapter it created is removed");
    check_released("after failed MTU");

    char name127[128];
    memset(name127, 'n', 127);
    name127[127] = 0;
    d = open_dev(name127, 0x20000, &e);
    CHECK(d != NULL, "127-character name is allowed: %s", e.msg);
    if (d) {
        CHECK(strlen(d->name) == 63, "long name cut to fit the device's name field: %zu", strlen(d->name));
        CHECK(counters().last_capacity == 0x20000, "ring capacity passed through");
        ft_device_free(d);
    }
    check_released("after 127-char name");
}

static void test_open_modes(void)
{
    SECTION("open: existing adapters, one session, access, leftovers, failures");
    ft_err e;
    ft_wintun_params p;
    memset(&p, 0, sizeof(p));
    ft_device *d = NULL, *d2 = NULL;

    p.name = "ft-none";
    p.open_mode = FT_OPEN_EXISTING;
    int r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_ESYS && e.errnum == ENOENT && strstr(e.msg, "no Wintun adapter named"), "open missing: %d %s", r,
          e.msg);

    p.open_mode = FT_OPEN_ANY;
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_OK && info_of(d).created == 1, "open-or-create creates: %d %s", r, e.msg);
    r = ft_wintun_open(&p, &d2, &e);
    CHECK(r == FT_ESYS && d2 == NULL && strstr(e.msg, "one session"), "second session on one adapter: %d %s", r,
          e.msg);
    INFO("second session -> %s", e.msg);
    CHECK(counters().adapter_handles == 1, "the failed second open released its handle");
    ft_device_free(d);
    d = NULL;
    check_released("after one-session test");

    CHECK(fake_add_leftover(L"ft-left0", 0), "leftover");
    p.name = "ft-left0";
    p.open_mode = FT_OPEN_EXISTING;
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_OK && info_of(d).created == 0, "open an existing adapter: %d %s", r, e.msg);
    ft_device_free(d);
    d = NULL;
    CHECK(counters().adapters == 1, "closing an opened adapter leaves it in place");
    fake_reset();

    p.open_mode = FT_OPEN_CREATE;
    p.name = "ft-denied";
    fake_fault(FAKE_CREATE_FAIL, TRUE, ERROR_ACCESS_DENIED);
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_ESYS && e.errnum == EACCES && strstr(e.msg, "administrator"), "access denied: %d %s", r, e.msg);
    INFO("access denied -> %s", e.msg);
    fake_reset();

    CHECK(fake_add_leftover(L"ft-left1", 2), "leftover failing twice");
    p.name = "ft-left1";
    uint64_t t0 = ft_now_ns();
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_OK && info_of(d).created == 1 && counters().create_calls == 3,
          "create succeeds on the third try: %d created=%d calls=%ld %s", r, d ? info_of(d).created : -1,
          counters().create_calls, e.msg);
    INFO("two leftover retries took %.0f ms", ms_since(t0));
    ft_device_free(d);
    d = NULL;
    fake_reset();

    CHECK(fake_add_leftover(L"ft-left2", 100), "leftover that never goes away");
    p.name = "ft-left2";
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_OK && info_of(d).created == 0 && counters().create_calls == 4,
          "falls back to opening the leftover: %d created=%d calls=%ld %s", r, d ? info_of(d).created : -1,
          counters().create_calls, e.msg);
    ft_device_free(d);
    d = NULL;
    fake_reset();

    p.name = "ft-nomem";
    fake_fault(FAKE_SESSION_FAIL, TRUE, ERROR_NOT_ENOUGH_MEMORY);
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_ESYS && e.errnum == ENOMEM && d == NULL, "session allocation failure: %d %d %s", r, e.errnum, e.msg);
    INFO("session allocation failure -> %s", e.msg);
    fake_fault(FAKE_SESSION_FAIL, FALSE, 0);
    CHECK(counters().adapters == 0, "a failed open removes the adapter it created");
    check_released("after failed session");

    p.name = "ft-sessdenied";
    fake_fault(FAKE_SESSION_FAIL, TRUE, ERROR_ACCESS_DENIED);
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_ESYS && e.errnum == EACCES && strstr(e.msg, "administrator"), "session access denied: %d %s", r,
          e.msg);
    fake_fault(FAKE_SESSION_FAIL, FALSE, 0);
    fake_reset();
}

/* ---- receiving --------------------------------------------------------------------------------------- */

typedef struct rx_check {
    uint32_t next;       /* next expected sequence number */
    volatile LONG got;   /* packets seen */
    LONG bad;            /* out of order or damaged */
    uint32_t max_batch;
} rx_check;

static void check_batch(rx_check *c, const ft_batch *b)
{
    for (uint32_t i = 0; i < b->count; i++) {
        uint32_t seq = packet_seq(b->data + b->offsets[i], b->lengths[i]);
        if (seq != c->next) {
            if (c->bad++ < 3)
                printf("  packet %lu: expected seq %u, got %u (%u bytes)\n", c->got, c->next, seq, b->lengths[i]);
        }
        c->next = seq + 1;
        InterlockedIncrement(&c->got);
    }
    if (b->count > c->max_batch)
        c->max_batch = b->count;
}

static int on_batch(void *user, ft_batch *b)
{
    check_batch(user, b);
    return 0;
}

static int wait_for(volatile LONG *v, LONG want, int timeout_ms)
{
    uint64_t start = ft_now_ns();
    while (*v < want) {
        if (ms_since(start) > timeout_ms)
            return 0;
        Sleep(1);
    }
    return 1;
}

static void test_recv_device(void)
{
    SECTION("receive: ft_device_recv, thousands of packets in order");
    ft_err e;
    ft_device *d = open_checked("ft-rx", 0x20000, &e); /* a small ring so the injector often finds it full */
    if (!d)
        return;
    test_batch *t = batch_new(64);
    uint64_t t0 = ft_now_ns();
    int r = ft_device_recv(d, 0, &t->b, 50, &e);
    double waited = ms_since(t0);
    CHECK(r == FT_ETIMEDOUT && waited >= 40 && waited < 1000, "empty ring times out after ~50 ms: %d %.1f ms", r,
          waited);

    const uint32_t N = 20000;
    injector in;
    injector_start(&in, 0, N);
    rx_check c = {0};
    uint32_t batches = 0;
    while (c.got < (LONG)N) {
        r = ft_device_recv(d, 0, &t->b, 2000, &e);
        if (r <= 0)
            break;
        batches++;
        check_batch(&c, &t->b);
    }
    injector_join(&in);
    CHECK(r > 0 && c.got == (LONG)N && c.bad == 0, "received %ld of %u, %ld bad, last r=%d %s", c.got, N, c.bad, r,
          r < 0 ? e.msg : "");
    CHECK(c.max_batch > 1, "batches of more than one packet (largest %u)", c.max_batch);
    INFO("%u packets in %u batches, largest %u", N, batches, c.max_batch);
    fake_counters fc = counters();
    CHECK(fc.released == fc.received, "every received packet released: %ld of %ld", fc.released, fc.received);
    ft_stats s;
    ft_device_get_stats(d, &s);
    CHECK(s.rx_packets == N && s.rx_batches == batches, "device stats: %llu packets %llu batches",
          (unsigned long long)s.rx_packets, (unsigned long long)s.rx_batches);
    batch_free(t);
    ft_device_free(d);
    check_released("after ft_device_recv test");
}

static ft_reader *start_reader(ft_device *d, test_batch *t, uint32_t spin_us, rx_check *c)
{
    ft_reader_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.batch_size = t->b.max;
    cfg.spin_us = spin_us;
    cfg.adaptive = 0;
    ft_err e;
    ft_reader *r = ft_reader_start(d, 0, &cfg, &t->b, on_batch, c, &e);
    if (!r)
        printf("  reader start failed: %s\n", e.msg);
    return r;
}

static double stop_and_join_ms(ft_reader *r)
{
    uint64_t t0 = ft_now_ns();
    ft_reader_request_stop(r);
    int j = ft_reader_join(r, 5000);
    double ms = ms_since(t0);
    return j == FT_OK ? ms : 1e9;
}

static void test_reader(void)
{
    SECTION("receive: the reader thread (order, sleeping when idle, waking, stopping)");
    ft_err e;
    ft_device *d = open_checked("ft-reader", 0x20000, &e);
    if (!d)
        return;
    test_batch *t = batch_new(64);
    rx_check c = {0};
    ft_reader *rd = start_reader(d, t, 50, &c);
    CHECK(rd != NULL, "reader started");
    if (!rd)
        goto out;
    const uint32_t N = 30000;
    injector in;
    injector_start(&in, 0, N);
    injector_join(&in);
    CHECK(wait_for(&c.got, N, 5000), "reader got %ld of %u", c.got, N);
    CHECK(c.bad == 0 && c.next == N, "in order and intact: %ld bad, next %u", c.bad, c.next);

    /* The read-stall guard wakes the reader 10 ms after the last packet, then ever further apart (1.27 s
     * after it the 8th time, then once a second): between 1.5 s and 1.8 s it sleeps undisturbed. */
    Sleep(1500);
    ft_reader_stats s1, s2;
    ft_reader_get_stats(rd, &s1);
    Sleep(300);
    ft_reader_get_stats(rd, &s2);
    CHECK(s2.spins == s1.spins, "no spinning while idle: spins %llu -> %llu", (unsigned long long)s1.spins,
          (unsigned long long)s2.spins);
    CHECK(s1.waits > 0, "the reader sleeps on the read event: %llu waits", (unsigned long long)s1.waits);
    CHECK(ft_reader_state(rd) == FT_READER_RUNNING, "still running while idle");

    uint64_t t0 = ft_now_ns();
    inject_range(N, 1);
    CHECK(wait_for(&c.got, N + 1, 1000), "an idle reader wakes for one packet");
    INFO("idle reader woke and delivered in %.2f ms", ms_since(t0));
    ft_reader_stats s3;
    ft_reader_get_stats(rd, &s3);
    CHECK(s3.waits > s2.waits, "it had been waiting: %llu -> %llu", (unsigned long long)s2.waits,
          (unsigned long long)s3.waits);
    INFO("reader: %llu batches, %llu full, largest %llu, %llu waits, %llu spins, %llu spin hits",
         (unsigned long long)s3.batches, (unsigned long long)s3.full_batches, (unsigned long long)s3.max_batch,
         (unsigned long long)s3.waits, (unsigned long long)s3.spins, (unsigned long long)s3.spin_hits);

    Sleep(20);
    double ms = stop_and_join_ms(rd);
    CHECK(ms < 100, "stop+join while waiting took %.2f ms", ms);
    CHECK(ft_reader_state(rd) == FT_READER_STOPPED, "stopped state: %d", ft_reader_state(rd));
    ft_reader_free(rd);

    rx_check c2 = {0};
    rd = start_reader(d, t, FT_READER_MAX_SPIN_US, &c2); /* spins up to 1 s on an empty ring */
    Sleep(50);
    ms = stop_and_join_ms(rd);
    ft_reader_stats s4;
    ft_reader_get_stats(rd, &s4);
    CHECK(ms < 100, "stop+join while spinning took %.2f ms", ms);
    /* one wait at most: the reader's last, which the stop request has already signalled */
    CHECK(s4.spins > 0 && s4.waits <= 1, "it was spinning: %llu spins, %llu waits", (unsigned long long)s4.spins,
          (unsigned long long)s4.waits);
    ft_reader_free(rd);

    rx_check c3 = {0};
    rd = start_reader(d, t, 50, &c3);
    Sleep(30);
    uint64_t t1 = ft_now_ns();
    ft_device_close(d); /* wakes the reader, waits for it to leave the device, then ends the session */
    double close_ms = ms_since(t1);
    CHECK(close_ms < 100, "closing under a waiting reader took %.2f ms", close_ms);
    CHECK(ft_reader_join(rd, 1000) == FT_OK, "reader ended after close");
    ft_err re;
    ft_reader_error(rd, &re);
    CHECK(ft_reader_state(rd) == FT_READER_FAILED && re.status == FT_ECLOSED, "reader saw the close: state %d %d %s",
          ft_reader_state(rd), re.status, re.msg);
    ft_reader_free(rd);
out:
    batch_free(t);
    ft_device_free(d);
    check_released("after reader test");
}

static void reader_until_end(ft_device *d, rx_check *c, ft_err *re, int *state)
{
    test_batch *t = batch_new(64);
    ft_reader *rd = start_reader(d, t, 50, c);
    uint64_t t0 = ft_now_ns();
    while (ft_reader_state(rd) == FT_READER_RUNNING && ms_since(t0) < 3000)
        Sleep(1);
    *state = ft_reader_state(rd);
    ft_reader_error(rd, re);
    ft_reader_request_stop(rd);
    ft_reader_join(rd, -1);
    ft_reader_free(rd);
    batch_free(t);
}

static void test_recv_faults(void)
{
    SECTION("receive: ERROR_HANDLE_EOF, ERROR_INVALID_DATA, impossible sizes");
    ft_err e, re;
    int state;

    ft_device *d = open_dev("ft-eof", 0, &e);
    fake_fault(FAKE_RECV_EOF, TRUE, 50);
    inject_range(0, 100);
    rx_check c = {0};
    reader_until_end(d, &c, &re, &state);
    CHECK(state == FT_READER_FAILED && re.status == FT_EEOF && strstr(re.msg, "ERROR_HANDLE_EOF"),
          "EOF ends the reader: state %d status %d %s", state, re.status, re.msg);
    CHECK(c.got == 50 && c.bad == 0, "the 50 packets before EOF were delivered: %ld", c.got);
    INFO("EOF -> %s", re.msg);
    LONG errs = counters().receive_errors;
    CHECK(errs <= 2, "no spinning on EOF: %ld failing receive calls", errs);
    test_batch *t = batch_new(8);
    int r = ft_device_recv(d, 0, &t->b, 1000, &e);
    CHECK(r == FT_EEOF, "receive after EOF reports it at once: %d", r);
    uint8_t pkt[100];
    make_packet(pkt, 1, sizeof(pkt));
    ft_pkt one = {pkt, sizeof(pkt)};
    LONG allocs = counters().alloc_calls;
    r = ft_device_send(d, 0, &one, 1, FT_FULL_DROP, 0, &e);
    CHECK(r == FT_EEOF && counters().alloc_calls == allocs, "send after EOF fails without calling Wintun: %d", r);
    CHECK(counters().receive_errors == errs, "the DLL is not asked again once the session is dead");
    fake_fault(FAKE_RECV_EOF, FALSE, 0);
    ft_device_free(d);
    check_released("after EOF");

    d = open_dev("ft-corrupt", 0, &e);
    fake_fault(FAKE_RECV_INVALID_DATA, TRUE, 10);
    inject_range(0, 20);
    rx_check c2 = {0};
    reader_until_end(d, &c2, &re, &state);
    CHECK(state == FT_READER_FAILED && re.status == FT_ECORRUPT && strstr(re.msg, "ERROR_INVALID_DATA"),
          "corrupt ring ends the reader: state %d status %d %s", state, re.status, re.msg);
    CHECK(c2.got == 10, "10 packets before the corruption: %ld", c2.got);
    CHECK(strstr(re.msg, "after 8 session restarts") != NULL, "it gave up after 8 restarts: %s", re.msg);
    CHECK(counters().receive_errors <= 8 + 2, "no spinning on a corrupt ring: %ld", counters().receive_errors);
    fake_fault(FAKE_RECV_INVALID_DATA, FALSE, 0);
    ft_device_free(d);

    static const DWORD bogus[2] = {0, 0x10000};
    for (int i = 0; i < 2; i++) {
        fake_reset();
        d = open_dev("ft-bogus", 0, &e);
        inject_range(0, 3);
        fake_inject_bogus(bogus[i]);
        r = ft_device_recv(d, 0, &t->b, 1000, &e);
        CHECK(r == 3, "the good packets before a bad size arrive first: %d", r);
        /* The size is never read: the session is restarted instead (counted), and the new one works. */
        r = ft_device_recv(d, 0, &t->b, 100, &e);
        ft_stats st;
        ft_device_get_stats(d, &st);
        CHECK(r == FT_ETIMEDOUT && st.rx_errors == 1, "size %lu restarts the session: %d, %llu restarts", bogus[i],
              r, (unsigned long long)st.rx_errors);
        CHECK(counters().sessions == 1, "one session after the restart: %ld", counters().sessions);
        inject_range(3, 2);
        r = ft_device_recv(d, 0, &t->b, 1000, &e);
        CHECK(r == 2, "the new session delivers: %d %s", r, e.msg);
        ft_device_free(d);
        check_released("after bogus size");
    }
    batch_free(t);
    fake_reset();
}

/* ---- sending ----------------------------------------------------------------------------------------- */

static int read_back_all(rx_check *c)
{
    static uint8_t buf[70000];
    int n = 0;
    LONG len;
    while ((len = fake_read_sent(buf, sizeof(buf))) > 0) {
        uint32_t seq = packet_seq(buf, (size_t)len);
        if (seq != c->next && c->bad++ < 3)
            printf("  sent packet %ld: expected seq %u, got %u\n", c->got, c->next, seq);
        c->next = seq + 1;
        c->got++;
        n++;
    }
    return n;
}

static ft_pkt *make_packets(uint32_t first, uint32_t n, uint8_t **arena)
{
    ft_pkt *pk = calloc(n, sizeof(*pk));
    *arena = malloc((size_t)n * 1500);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = *arena + (size_t)i * 1500;
        pk[i].len = packet_len(first + i);
        make_packet(p, first + i, pk[i].len);
        pk[i].data = p;
    }
    return pk;
}

static void test_send(void)
{
    SECTION("send: order, validation before the ring");
    ft_err e;
    ft_device *d = open_checked("ft-tx", 0, &e);
    if (!d)
        return;
    const uint32_t N = 2000;
    uint8_t *arena;
    ft_pkt *pk = make_packets(0, N, &arena);
    int total = 0;
    for (uint32_t i = 0; i < N; i += 32) {
        int r = ft_device_send(d, 0, pk + i, N - i < 32 ? N - i : 32, FT_FULL_RAISE, 0, &e);
        if (r < 0) {
            printf("  send failed: %d %s\n", r, e.msg);
            break;
        }
        total += r;
    }
    rx_check c = {0};
    int back = read_back_all(&c);
    CHECK(total == (int)N && back == (int)N && c.bad == 0, "sent %d, read back %d of %u, %ld bad", total, back, N,
          c.bad);
    ft_stats s;
    ft_device_get_stats(d, &s);
    CHECK(s.tx_packets == N, "tx stats %llu", (unsigned long long)s.tx_packets);
    free(pk);
    free(arena);
    ft_device_free(d);
    fake_reset();

    d = open_dev("ft-tx-bad", 0, &e);
    ft_atomic_store(&d->mtu, 1400); /* the interface MTU cannot be set under Wine: set the cache directly */
    static uint8_t big[70000];
    make_packet(big, 1, 1500);
    ft_pkt over_mtu = {big, 1500};
    int r = ft_device_send(d, 0, &over_mtu, 1, FT_FULL_DROP, 0, &e);
    CHECK(r == FT_EPACKET && strstr(e.msg, "MTU"), "larger than the MTU: %d %s", r, e.msg);
    ft_pkt over_ip = {big, sizeof(big)};
    big[0] = 0x45;
    r = ft_device_send(d, 0, &over_ip, 1, FT_FULL_DROP, 0, &e);
    CHECK(r == FT_EPACKET, "larger than 65535: %d %s", r, e.msg);
    uint8_t junk[100] = {0};
    ft_pkt not_ip = {junk, sizeof(junk)};
    r = ft_device_send(d, 0, &not_ip, 1, FT_FULL_DROP, 0, &e);
    CHECK(r == FT_EPACKET && strstr(e.msg, "version"), "not IP: %d %s", r, e.msg);
    uint8_t good[60];
    make_packet(good, 5, sizeof(good));
    ft_pkt mixed[3] = {{good, sizeof(good)}, {junk, sizeof(junk)}, {good, sizeof(good)}};
    r = ft_device_send(d, 0, mixed, 3, FT_FULL_DROP, 0, &e);
    CHECK(r == FT_EPACKET && e.index == 1, "one bad packet in a batch: %d index %ld %s", r, e.index, e.msg);
    r = d->ops->send(d, 0, &over_ip, 1, &e); /* the backend's own guard, past ft_device_send's checks */
    CHECK(r == FT_EPACKET, "the backend refuses > 0xFFFF itself: %d %s", r, e.msg);
    fake_counters fc = counters();
    CHECK(fc.alloc_calls == 0 && fc.sent == 0, "nothing reached the ring: %ld allocations, %ld sent", fc.alloc_calls,
          fc.sent);
    ft_device_get_stats(d, &s);
    CHECK(s.tx_rejected == 4, "rejections counted: %llu", (unsigned long long)s.tx_rejected);
    ft_device_free(d);
    fake_reset();
}

typedef struct drainer {
    int delay_ms;
    HANDLE thread;
    rx_check c;
} drainer;

static DWORD WINAPI drainer_main(LPVOID arg)
{
    drainer *dr = arg;
    Sleep((DWORD)dr->delay_ms);
    read_back_all(&dr->c);
    return 0;
}

/* Sends single packets until the ring refuses one; returns how many fit. */
static int fill_ring(ft_device *d, uint32_t first)
{
    static uint8_t p[1500];
    int n = 0;
    ft_err e;
    for (;;) {
        size_t len = packet_len(first + (uint32_t)n);
        make_packet(p, first + (uint32_t)n, len);
        ft_pkt one = {p, len};
        if (ft_device_send(d, 0, &one, 1, FT_FULL_RAISE, 0, &e) != 1)
            return n;
        n++;
    }
}

/* ring_capacity auto from the smallest ring: a full send ring doubles it (the rate limit lets the first grow
 * through at once and holds the second back), then the device sends into the new session. */
static void test_auto_ring(void)
{
    SECTION("auto ring capacity: a full send ring doubles it, at most once per interval");
    fake_reset();
    ft_wintun_params p;
    memset(&p, 0, sizeof(p));
    p.name = "ft-auto";
    p.ring_capacity = FT_WINTUN_MIN_RING_CAPACITY;
    p.flags = FT_WINTUN_AUTO_RING;
    ft_device *d = NULL;
    ft_err e;
    int r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_OK, "open: %s", e.msg);
    if (r != FT_OK)
        return;
    CHECK(info_of(d).ring_capacity == FT_WINTUN_MIN_RING_CAPACITY && info_of(d).ring_grows == 0, "start: %u",
          info_of(d).ring_capacity);
    int n = fill_ring(d, 0);
    CHECK(n > 0 && info_of(d).ring_grows == 1 && info_of(d).ring_capacity == 2 * FT_WINTUN_MIN_RING_CAPACITY,
          "after %d packets: %u grows, %u bytes", n, info_of(d).ring_grows, info_of(d).ring_capacity);
    fake_counters c = counters();
    CHECK(c.last_capacity == 2 * FT_WINTUN_MIN_RING_CAPACITY && c.sessions == 1, "the fake's session: %lu bytes, %ld",
          (unsigned long)c.last_capacity, c.sessions);
    uint64_t start = ft_now_ns();
    int m = fill_ring(d, 100000); /* into the new session; full again at once: no second grow yet */
    CHECK(m > n && (ms_since(start) > 1500 || info_of(d).ring_grows == 1), "second fill: %d packets, %u grows", m,
          info_of(d).ring_grows);
    ft_stats st;
    ft_device_get_stats(d, &st);
    CHECK(st.rx_errors == 0, "a grow is not an error: %llu", (unsigned long long)st.rx_errors);
    ft_device_free(d);
    check_released("auto ring");

    /* A reader that never finds the receive ring empty (the network fills it as fast as it drains): after
     * twice the ring's size the rings double too. The test injects more than it takes each round. */
    p.name = "ft-auto-rx";
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r == FT_OK, "open: %s", e.msg);
    if (r != FT_OK)
        return;
    test_batch *t = batch_new(8);
    rx_check rc = {0};
    uint32_t seq = 0;
    for (int round = 0; round < 400 && info_of(d).ring_grows == 0; round++) {
        uint8_t bufs[16][1500];
        const BYTE *ptrs[16];
        DWORD sizes[16];
        for (int k = 0; k < 16; k++) {
            sizes[k] = (DWORD)packet_len(seq + (uint32_t)k);
            make_packet(bufs[k], seq + (uint32_t)k, sizes[k]);
            ptrs[k] = bufs[k];
        }
        LONG got = fake_inject(ptrs, sizes, 16);
        seq += got > 0 ? (uint32_t)got : 0;
        t->b.count = 0;
        t->b.used = 0;
        if (ft_device_recv(d, 0, &t->b, 100, &e) > 0)
            check_batch(&rc, &t->b);
    }
    CHECK(info_of(d).ring_grows == 1 && info_of(d).ring_capacity == 2 * FT_WINTUN_MIN_RING_CAPACITY,
          "a never-empty receive ring: %u grows after %ld packets", info_of(d).ring_grows, rc.got);
    CHECK((uint32_t)rc.got * 1444u >= 2 * FT_WINTUN_MIN_RING_CAPACITY && rc.bad == 0, /* a record: 4 + at most 1439, aligned */
          "about twice the ring's size was drained first, in order: %ld packets, %ld bad", rc.got, rc.bad);
    batch_free(t);
    ft_device_free(d);
    check_released("auto ring, receive side");
}

static void test_send_full(void)
{
    SECTION("send: full ring under the drop, raise and wait policies");
    ft_err e;
    ft_device *d = open_dev("ft-full", 0x20000, &e);
    if (!d) {
        CHECK(0, "open: %s", e.msg);
        return;
    }
    uint8_t *arena;
    ft_pkt *pk = make_packets(0, 10, &arena);
    fake_fault(FAKE_SEND_FULL, TRUE, 0);
    int r = ft_device_send(d, 0, pk, 10, FT_FULL_DROP, 0, &e);
    ft_stats s;
    ft_device_get_stats(d, &s);
    CHECK(r == 0 && s.tx_dropped_full == 10, "drop policy: %d sent, %llu dropped", r,
          (unsigned long long)s.tx_dropped_full);
    r = ft_device_send(d, 0, pk, 10, FT_FULL_RAISE, 0, &e);
    CHECK(r == FT_EFULL && e.sent == 0, "raise policy: %d sent %u %s", r, e.sent, e.msg);
    fake_fault(FAKE_SEND_FULL, FALSE, 0);
    CHECK(counters().sent == 0, "nothing sent while full");

    int fit = fill_ring(d, 0);
    CHECK(fit > 100 && fit < 400, "a 128 KiB ring takes about 170 packets of 40..1439 bytes: %d", fit);
    drainer dr = {30, NULL, {0}};
    dr.thread = CreateThread(NULL, 0, drainer_main, &dr, 0, NULL);
    free(pk);
    free(arena);
    pk = make_packets((uint32_t)fit, 10, &arena);
    uint64_t t0 = ft_now_ns();
    r = ft_device_send(d, 0, pk, 10, FT_FULL_WAIT, 2000, &e);
    double ms = ms_since(t0);
    WaitForSingleObject(dr.thread, INFINITE);
    CloseHandle(dr.thread);
    ft_device_get_stats(d, &s);
    CHECK(r == 10 && ms >= 20 && ms < 1000, "wait policy waits for room, then sends: %d in %.1f ms %s", r, ms,
          r < 0 ? e.msg : "");
    CHECK(s.tx_waits > 0, "tx waits counted: %llu", (unsigned long long)s.tx_waits);
    INFO("waited %.1f ms for room with %llu timer waits", ms, (unsigned long long)s.tx_waits);
    rx_check rest = dr.c;
    read_back_all(&rest);
    CHECK(rest.got == fit + 10 && rest.bad == 0, "all %d packets arrive in order: %ld, %ld bad", fit + 10, rest.got,
          rest.bad);

    fit = fill_ring(d, 0);
    uint64_t waits_before = s.tx_waits;
    t0 = ft_now_ns();
    r = ft_device_send(d, 0, pk, 10, FT_FULL_WAIT, 50, &e);
    ms = ms_since(t0);
    ft_device_get_stats(d, &s);
    CHECK(r == FT_ETIMEDOUT && e.index == 0 && ms >= 45 && ms < 1000, "wait policy times out: %d index %ld %.1f ms",
          r, e.index, ms);
    INFO("50 ms wait on a full ring: %llu timer waits (fewer than 50 means a coarse timer)",
         (unsigned long long)(s.tx_waits - waits_before));
    ft_device_count_tx_drops(d, 10);
    read_back_all(&rest);

    fake_fault(FAKE_ALLOC_FAIL, TRUE, ERROR_NOT_ENOUGH_MEMORY);
    r = ft_device_send(d, 0, pk, 1, FT_FULL_DROP, 0, &e);
    CHECK(r == FT_ESYS && e.errnum == ENOMEM, "allocation failure: %d %d %s", r, e.errnum, e.msg);
    fake_fault(FAKE_ALLOC_FAIL, FALSE, 0);
    r = ft_device_send(d, 0, pk, 1, FT_FULL_DROP, 0, &e);
    CHECK(r == 1, "a failed allocation is not fatal: %d %s", r, e.msg);

    fake_fault(FAKE_SEND_EOF, TRUE, 0);
    r = ft_device_send(d, 0, pk, 3, FT_FULL_DROP, 0, &e);
    CHECK(r == FT_EEOF && strstr(e.msg, "ERROR_HANDLE_EOF"), "EOF on send: %d %s", r, e.msg);
    fake_fault(FAKE_SEND_EOF, FALSE, 0);
    test_batch *t = batch_new(8);
    r = ft_device_recv(d, 0, &t->b, 1000, &e);
    CHECK(r == FT_EEOF, "the session is dead for receiving too: %d", r);
    uint64_t w0 = ft_now_ns();
    r = ft_device_wait(d, 0, FT_WAIT_READ, 1000, NULL, &e);
    CHECK(r == FT_OK && ms_since(w0) < 100, "a wait on a dead session returns at once: %d", r);
    batch_free(t);
    free(pk);
    free(arena);
    ft_device_free(d);
    check_released("after full-ring test");
    fake_reset();
}

/* ---- logger ------------------------------------------------------------------------------------------ */

static DWORD WINAPI log_thread(LPVOID arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++)
        fake_log(WINTUN_LOG_INFO, L"from a thread");
    return 0;
}

static void test_logger_forwarding(void)
{
    SECTION("logger");
    LONG before = log_count;
    fake_log(WINTUN_LOG_WARN, L"caf\u00e9 \u2603");
    CHECK(log_count == before + 1, "one message forwarded");
    CHECK(strcmp(last_log, "caf\xc3\xa9 \xe2\x98\x83") == 0, "converted to UTF-8: %s", last_log);
    CHECK(last_level == 1, "level warn = 1: %d", last_level);
    CHECK(last_ts > 132223104000000000ull, "FILETIME timestamp (after 2020): %llu", (unsigned long long)last_ts);

    wchar_t longmsg[251];
    for (int i = 0; i < 250; i++)
        longmsg[i] = L'\u2603';
    longmsg[250] = 0;
    fake_log(WINTUN_LOG_ERR, longmsg);
    CHECK(strlen(last_log) == 750 && last_level == 2, "a long message (750 UTF-8 bytes) intact: %zu",
          strlen(last_log));

    ft_err e;
    before = log_count;
    ft_device *d = open_dev("ft-log", 0, &e);
    CHECK(log_count > before && strstr(last_log, "session"), "Wintun's own events are forwarded: %s", last_log);
    ft_device_free(d);

    HANDLE th[4];
    before = log_count;
    for (int i = 0; i < 4; i++)
        th[i] = CreateThread(NULL, 0, log_thread, NULL, 0, NULL);
    WaitForMultipleObjects(4, th, TRUE, INFINITE);
    for (int i = 0; i < 4; i++)
        CloseHandle(th[i]);
    CHECK(log_count == before + 800, "messages from 4 threads at once: %ld", log_count - before);

    ft_wintun_set_logger(NULL);
    before = log_count;
    fake_log(WINTUN_LOG_INFO, L"nobody listens");
    CHECK(log_count == before, "NULL disables the logger");
    ft_wintun_set_logger(test_logger);
    fake_log(WINTUN_LOG_INFO, L"back");
    CHECK(log_count == before + 1 && strcmp(last_log, "back") == 0, "and it can be set again");
    ft_wintun_set_logger(NULL);
    fake_reset();
}

/* ---- configuration ----------------------------------------------------------------------------------- */

static int find_loopback(NET_LUID *luid, NET_IFINDEX *index)
{
    MIB_IF_TABLE2 *table = NULL;
    if (GetIfTable2(&table) != NO_ERROR)
        return 0;
    int found = 0;
    for (ULONG i = 0; i < table->NumEntries && !found; i++) {
        if (table->Table[i].Type == IF_TYPE_SOFTWARE_LOOPBACK) {
            *luid = table->Table[i].InterfaceLuid;
            *index = table->Table[i].InterfaceIndex;
            found = 1;
        }
    }
    FreeMibTable(table);
    return found;
}

/* The Wintun accessors are public C functions that take any device: given another backend's (the in-memory pair),
 * they refuse it instead of reading its state as an adapter's. */
static void test_accessors_check_the_backend(void)
{
    SECTION("Wintun accessors given another backend's device");
    ft_device *a = NULL, *b = NULL;
    ft_err e;
    int r = ft_memory_pair(1500, 16, FT_PAIR_DEFAULT_CAPACITY_BYTES, &a, &b, &e);
    CHECK(r == FT_OK, "pair: %d", r);
    if (r != FT_OK)
        return;
    ft_addr dns;
    memset(&dns, 0, sizeof(dns));
    dns.family = 4;
    dns.bytes[0] = 10;
    r = ft_wintun_set_dns(a, &dns, 1, &e);
    CHECK(r == FT_EINVAL && strstr(e.msg, "not a Wintun adapter"), "set_dns on a pair: %d %s", r, e.msg);
    uint8_t guid[16];
    r = ft_wintun_guid(a, guid, &e);
    CHECK(r == FT_EINVAL && strstr(e.msg, "not a Wintun adapter"), "guid of a pair: %d %s", r, e.msg);
    CHECK(info_of(a).luid == 0 && info_of(a).created == 0, "luid/created of a pair");
    CHECK(info_of(a).ring_capacity == 0 && info_of(a).ring_grows == 0, "ring of a pair");
    ft_device_free(a);
    ft_device_free(b);
}

static void test_config(void)
{
    SECTION("configuration through IP Helper");
    ft_err e;
    ft_device *d = open_dev("ft-cfg", 0, &e); /* a made-up LUID: every IP Helper call must fail cleanly */
    if (!d) {
        CHECK(0, "open: %s", e.msg);
        return;
    }
    uint32_t index = 0, mtu = 0;
    int up = -1;
    int r = ft_device_get_index(d, &index, &e);
    CHECK(r == FT_ESYS && e.msg[0], "index of an unknown LUID: %d", r);
    INFO("index (unknown LUID) -> %s", e.msg);
    r = ft_device_get_mtu(d, &mtu, &e);
    /* IP Helper cannot tell: the MTU the device enforces (Wintun's limit, as none was given) stands in. */
    CHECK(r == FT_OK && mtu == WINTUN_MAX_IP_PACKET_SIZE, "MTU of an unknown LUID is the cached one: %d %u", r, mtu);
    r = ft_device_set_mtu(d, 1400, &e);
    CHECK(r != FT_OK, "setting the MTU of an unknown LUID fails: %d", r);
    INFO("set MTU (unknown LUID) -> %s", e.msg);
    r = ft_device_set_up(d, 1, &e);
    CHECK(r == FT_OK, "up is a no-op: %d %s", r, e.msg);
    r = ft_device_set_up(d, 0, &e);
    CHECK(r == FT_EUNSUPPORTED && strstr(e.msg, "session"), "down is unsupported: %d %s", r, e.msg);
    ft_addr a;
    memset(&a, 0, sizeof(a));
    a.family = 5;
    r = ft_device_address(d, 1, &a, &e);
    CHECK(r == FT_EINVAL, "family 5: %d %s", r, e.msg);
    a.family = 4;
    a.prefix = 33;
    r = ft_device_address(d, 1, &a, &e);
    CHECK(r == FT_EINVAL && strstr(e.msg, "0..32"), "prefix 33: %d %s", r, e.msg);
    a.prefix = 24;
    a.bytes[0] = 10, a.bytes[1] = 9, a.bytes[3] = 1;
    r = ft_device_address(d, 1, &a, &e);
    CHECK(r == FT_ESYS || r == FT_EUNSUPPORTED, "address on an unknown LUID fails cleanly: %d", r);
    INFO("add address (unknown LUID) -> %s", e.msg);
    ft_route route;
    memset(&route, 0, sizeof(route));
    route.family = 4;
    route.dest[0] = 10, route.dest[1] = 99;
    route.prefix = 16;
    route.has_gateway = 1;
    route.gateway[0] = 10, route.gateway[1] = 9, route.gateway[3] = 2;
    r = ft_device_route(d, 1, &route, &e);
    CHECK(r == FT_ESYS || r == FT_EUNSUPPORTED, "route on an unknown LUID fails cleanly: %d", r);
    INFO("add route (unknown LUID) -> %s", e.msg);
    route.prefix = 40;
    route.has_gateway = 0;
    r = ft_device_route(d, 1, &route, &e);
    CHECK(r == FT_EINVAL, "route prefix 40: %d %s", r, e.msg);
    r = ft_wintun_set_dns(d, &a, 1, &e);
    CHECK(r == FT_EUNSUPPORTED || r == FT_ESYS, "DNS: %d", r);
    INFO("set DNS -> %d %s", r, e.msg);
    ft_device_free(d);

    NET_LUID lo;
    NET_IFINDEX lo_index = 0;
    if (!find_loopback(&lo, &lo_index)) {
        INFO("no loopback interface found through GetIfTable2: skipping the real-interface checks");
        return;
    }
    fake_set_luid(lo.Value); /* the fake adapter claims the loopback's LUID: real IP Helper answers */
    d = open_dev("ft-lo", 0, &e);
    fake_set_luid(0);
    r = ft_device_get_index(d, &index, &e);
    CHECK(r == FT_OK && index == lo_index, "index of the loopback: %d %u (want %lu) %s", r, index, lo_index, e.msg);
    uint8_t guid[16];
    r = ft_wintun_guid(d, guid, &e);
    CHECK(r == FT_OK, "GUID from the LUID: %d %s", r, e.msg);
    r = ft_device_get_mtu(d, &mtu, &e);
    INFO("loopback MTU -> %d %u %s", r, mtu, r ? e.msg : "");
    r = ft_device_is_up(d, &up, &e);
    CHECK(r == FT_OK, "link state of the loopback: %d %s", r, e.msg);
    INFO("loopback up -> %d", up);
    ft_addr list[16];
    uint32_t n = 0;
    r = ft_device_list_addresses(d, list, 16, &n, &e);
    CHECK(r == FT_OK, "list addresses: %d %s", r, e.msg);
    int has_127 = 0;
    for (uint32_t i = 0; i < n && i < 16; i++)
        has_127 |= list[i].family == 4 && list[i].bytes[0] == 127;
    INFO("loopback has %u addresses%s", n, has_127 ? ", 127.x among them" : "");
    ft_device_free(d);
    fake_reset();
}

/* ---- throughput -------------------------------------------------------------------------------------- */

typedef struct pump {
    volatile LONG stop;
    uint32_t size;
    LONG64 injected;
} pump;

static DWORD WINAPI pump_main(LPVOID arg)
{
    pump *p = arg;
    static uint8_t pkt[1500];
    make_packet(pkt, 0, p->size);
    const BYTE *ptrs[256];
    DWORD sizes[256];
    for (int i = 0; i < 256; i++) {
        ptrs[i] = pkt;
        sizes[i] = p->size;
    }
    while (!p->stop) {
        LONG got = fake_inject(ptrs, sizes, 256);
        if (got <= 0)
            SwitchToThread();
        else
            p->injected += got;
    }
    return 0;
}

static int count_only(void *user, ft_batch *b)
{
    *(volatile LONG64 *)user += b->count;
    return 0;
}

static void measure(uint32_t size)
{
    ft_err e;
    ft_device *d = open_dev("ft-bench", 0, &e);
    if (!d)
        return;
    test_batch *t = batch_new(256);
    volatile LONG64 got = 0;
    ft_reader_config cfg = {.batch_size = 256, .spin_us = FT_READER_DEFAULT_SPIN_US};
    ft_reader *rd = ft_reader_start(d, 0, &cfg, &t->b, count_only, (void *)&got, &e);
    pump p = {0, size, 0};
    HANDLE th = CreateThread(NULL, 0, pump_main, &p, 0, NULL);
    Sleep(200); /* warm up */
    LONG64 start_count = got;
    uint64_t t0 = ft_now_ns();
    Sleep(1000);
    LONG64 n = got - start_count;
    double secs = (double)(ft_now_ns() - t0) / 1e9;
    p.stop = 1;
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    ft_reader_stats s;
    ft_reader_get_stats(rd, &s);
    ft_reader_free(rd);
    printf("  throughput: the reader sustained %.0f packets/s of %u bytes (%.0f MB/s) against the fake DLL; "
           "%llu batches, largest %llu\n",
           (double)n / secs, size, (double)n * size / secs / 1e6, (unsigned long long)s.batches,
           (unsigned long long)s.max_batch);
    batch_free(t);
    ft_device_free(d);
    fake_reset();
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    find_exe_dir();
    test_loader_errors();
    test_loader_success();
    if (!fake_reset) {
        printf("the fake DLL could not be loaded: nothing more to test\n");
        printf("%d passed, %d failed\n", passed, failed + 1);
        return 1;
    }
    fake_reset();
    test_driver();
    test_open_params();
    test_open_create();
    test_open_modes();
    test_recv_device();
    test_reader();
    test_recv_faults();
    test_send();
    test_send_full();
    test_auto_ring();
    test_logger_forwarding();
    test_config();
    test_accessors_check_the_backend();
    SECTION("throughput (indication only, never asserted)");
    measure(64);
    measure(1400);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
