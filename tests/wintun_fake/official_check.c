/* official_check.c - our loader and backend against the official wintun.dll, where no Wintun driver can
 * run (Wine, or Windows without elevation): the DLL loads, all 14 exports resolve, the driver is reported
 * as not loaded, and creating an adapter fails with a clear error instead of a crash.
 * usage: official_check.exe C:\absolute\path\to\wintun.dll */
#include "wintun/ft_wintun.h"
#include "wintun/ft_wintun_internal.h"

#include <stdio.h>
#include <string.h>

#include "wintun_check.h"

typedef void (*any_fn)(void);

static void print_log(int level, uint64_t ts, const char *msg)
{
    (void)ts;
    printf("  wintun log [%d]: %s\n", level, msg);
}

int wmain(int argc, wchar_t **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 2) {
        printf("usage: official_check.exe C:\\path\\to\\wintun.dll\n");
        return 2;
    }
    ft_err e;
    ft_wintun_set_logger(print_log);
    int r = ft_wintun_load(argv[1], &e);
    CHECK(r == FT_OK, "loading the official DLL: %d %s", r, e.msg);
    if (r != FT_OK) {
        printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }
    const ft_wintun_api *a = ft_wintun_get_api();
    const any_fn *slots = (const any_fn *)(const void *)a;
    int resolved = 0;
    for (int i = 0; i < FT_WINTUN_EXPORT_COUNT; i++)
        resolved += slots[i] != NULL;
    CHECK(resolved == 14, "%d of 14 exports resolved", resolved);
    printf("  all %d Wintun exports resolved\n", resolved);

    uint32_t version = 0;
    r = ft_wintun_driver_version(&version, &e);
    CHECK(r == FT_WINTUN_DRIVER_NOT_LOADED && version == 0, "driver version: %d %u %s", r, version, e.msg);
    printf("  driver version -> %d: %s\n", r, r == FT_OK ? "loaded" : e.msg);

    ft_wintun_params p;
    memset(&p, 0, sizeof(p));
    p.name = "fasttun-wine-check";
    ft_device *d = NULL;
    r = ft_wintun_open(&p, &d, &e);
    CHECK(r != FT_OK && d == NULL && e.msg[0], "creating an adapter cannot work without the driver: %d", r);
    printf("  create adapter -> status %d, errno %d, Windows error %ld: %s\n", r, e.errnum, e.oserr, e.msg);
    if (d)
        ft_device_free(d);

    ft_wintun_set_logger(NULL);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
