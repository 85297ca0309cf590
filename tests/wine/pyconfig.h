/* pyconfig.h for building an extension module for the official 64-bit Windows CPython 3.11 with mingw-w64
 * on Linux (tests/wine/). The rest of the headers are Debian's python3.11-dev (the same 3.11 ABI); only this
 * file is platform-specific. Written from the facts of that ABI: LLP64 (long is 32 bits), 16-bit wchar_t,
 * a shared python311.dll whose functions and data are imported with __declspec(dllimport), NT threads. */
#ifndef FT_WIN64_PYCONFIG_H
#define FT_WIN64_PYCONFIG_H

#if !defined(_WIN64) || !defined(__x86_64__)
#error "this pyconfig.h describes 64-bit (amd64) Windows CPython only"
#endif

#include <io.h>
#include <basetsd.h>

#define MS_WIN32 1
#define MS_WIN64 1
#define MS_WINDOWS 1
#define NT_THREADS 1
#define MS_COREDLL 1
#define Py_ENABLE_SHARED 1
#define HAVE_DECLSPEC_DLL 1
#define Py_WINVER 0x0602 /* Windows 8 */
#define Py_NTDDI 0x06020000

/* Sizes (LLP64). */
#define SIZEOF_SHORT 2
#define SIZEOF_INT 4
#define SIZEOF_LONG 4
#define SIZEOF_LONG_LONG 8
#define SIZEOF_VOID_P 8
#define SIZEOF_SIZE_T 8
#define SIZEOF_TIME_T 8
#define SIZEOF_OFF_T 4
#define SIZEOF_FPOS_T 8
#define SIZEOF_FLOAT 4
#define SIZEOF_DOUBLE 8
#define SIZEOF_LONG_DOUBLE 8 /* MSVC's long double is a double; never used across the ABI here */
#define SIZEOF_WCHAR_T 2
#define SIZEOF__BOOL 1
#define SIZEOF_HKEY 8
#define SIZEOF_PID_T SIZEOF_INT
#define ALIGNOF_SIZE_T 8
#define ALIGNOF_LONG 4
#define ALIGNOF_MAX_ALIGN_T 8

/* Py_ssize_t is a 64-bit integer, as in the MSVC build. */
typedef long long Py_ssize_t;
#define HAVE_PY_SSIZE_T 1
#define PY_SSIZE_T_MAX 9223372036854775807LL

#define PYLONG_BITS_IN_DIGIT 30
#define DOUBLE_IS_LITTLE_ENDIAN_IEEE754 1
#define HAVE_LONG_LONG 1
#define HAVE_UINTPTR_T 1
#define HAVE_INTPTR_T 1
#define HAVE_WCHAR_H 1
#define HAVE_STDARG_PROTOTYPES 1
#define HAVE_DYNAMIC_LOADING 1
#define HAVE_COPYSIGN 1
#define HAVE_ROUND 1
#define HAVE_HYPOT 1
#define HAVE_ERF 1
#define HAVE_ERFC 1
#define HAVE_LARGEFILE_SUPPORT 1
#define HAVE_SYS_STAT_H 1
#define HAVE_FCNTL_H 1
#define HAVE_PROCESS_H 1
#define HAVE_SIGNAL_H 1
#define HAVE_DIRECT_H 1
#define HAVE_IO_H 1
#define HAVE_STRFTIME 1
#define HAVE_PUTENV 1
#define HAVE_CLOCK 1
#define HAVE_FTIME 1
#define HAVE_GETPID 1
#define HAVE_STDDEF_H 1
#define HAVE_ZLIB_COPY 1
#define WITH_DOC_STRINGS 1
#define WITH_PYMALLOC 1
#define WORDS_LITTLEENDIAN 1
#define STDC_HEADERS 1
#define PLATFORM "win32"
#define Py_SOCKET_FD_CAN_BE_GE_FD_SETSIZE

#endif
