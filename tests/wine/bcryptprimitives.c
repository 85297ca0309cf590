/* bcryptprimitives.c - for the Wine runs of tests/wine/winpy.py only: Wine 8 has no bcryptprimitives.dll, which
 * programs built with Rust 1.78 or later import for ProcessPrng (the random numbers of Rust's standard library),
 * so such an extension (cryptography's _rust.pyd) does not load there. This DLL gives that one export from
 * BCryptGenRandom, which Wine has. winpy.py puts it beside python.exe (where Windows looks for an extension's
 * imports after the extension's own folder); a Windows install never gets it. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    if (!data && len)
        return FALSE;
    while (len > 0) {
        ULONG chunk = len > 0x40000000u ? 0x40000000u : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
