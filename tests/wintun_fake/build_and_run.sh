#!/usr/bin/env bash
# Builds the Windows (Wintun) backend of the C core with mingw-w64 and runs its tests under Wine.
#
#   build_and_run.sh                      the backend + ft_device + ft_reader against our fake wintun.dll
#   build_and_run.sh official DLL_PATH    the loader against an official wintun.dll (Linux path)
#
# Output goes to tests/.build/wine/ (git-ignored); Wine runs in a private prefix under tests/.build/.
# Exits non-zero when a build or a test fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/tests/.build/wine"
CC=${MINGW_CC:-x86_64-w64-mingw32-gcc}
CC32=${MINGW_CC32:-i686-w64-mingw32-gcc}

# -Werror: the Windows sources must build without a single warning.
CFLAGS=(-std=c11 -O2 -g -Wall -Wextra -Werror -I"$root/csrc" -I"$root/include" -I"$here")
# The sources from the one manifest (csrc/sources.py): the core, offload, the Windows OS layer and Wintun.
PY=${PYTHON:-python3}
mapfile -t CORE < <(cd "$root" && "$PY" csrc/sources.py win32 --parts core pair offload windows wintun | sed "s|^|$root/|")
LIBS=(-liphlpapi -lws2_32 -static-libgcc)

# Outside the source tree: a prefix links z: to /, and tools that walk the tree (setuptools) would follow it.
export WINEPREFIX="${FT_WINEPREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/fasttun/wineprefix}"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml=" # no Mono/Gecko install prompts in a fresh prefix

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing tool: $1" >&2; exit 3; }; }
need "$CC"
need wine

wine_prefix() {
    if [ ! -f "$WINEPREFIX/system.reg" ]; then
        echo "creating the Wine prefix $WINEPREFIX (first start takes a while)"
        mkdir -p "$WINEPREFIX"
        wineboot -i >/dev/null 2>&1 || true
        wineserver -w || true
    fi
}

# A Linux path as Wine sees it (Z: is the root file system).
winpath() { printf 'Z:%s' "$(printf '%s' "$1" | sed 's|/|\\|g')"; }

build_fakes() {
    mkdir -p "$out/fake" "$out/noexport" "$out/garbage"
    "$CC" "${CFLAGS[@]}" -shared -o "$out/fake/wintun.dll" "$here/fake_wintun.c" -Wl,--kill-at -static-libgcc
    "$CC" "${CFLAGS[@]}" -DFAKE_OMIT_LUID_EXPORT -shared -o "$out/noexport/wintun.dll" "$here/fake_wintun.c" \
        -Wl,--kill-at -static-libgcc
    printf 'this is not a DLL\n' > "$out/garbage/wintun.dll"
    rm -rf "$out/x86"
    if command -v "$CC32" >/dev/null 2>&1; then
        mkdir -p "$out/x86"
        "$CC32" "${CFLAGS[@]}" -shared -o "$out/x86/wintun.dll" "$here/fake_wintun.c" -Wl,--kill-at -static-libgcc
    else
        echo "note: $CC32 not found; the 32-bit DLL case uses a relabelled copy only (apt-get install gcc-mingw-w64-i686)"
    fi
}

run_fake_suite() {
    build_fakes
    "$CC" "${CFLAGS[@]}" -o "$out/test_wintun_backend.exe" "$here/test_wintun_backend.c" "${CORE[@]}" "${LIBS[@]}"
    wine_prefix
    # Wine's own messages go to stderr; the test's to stdout.
    wine "$out/test_wintun_backend.exe"
}

run_official() {
    local dll="$1"
    [ -f "$dll" ] || { echo "no such file: $dll" >&2; exit 2; }
    mkdir -p "$out/official"
    cp "$dll" "$out/official/wintun.dll"
    "$CC" "${CFLAGS[@]}" -municode -o "$out/official_check.exe" "$here/official_check.c" "${CORE[@]}" "${LIBS[@]}"
    wine_prefix
    wine "$out/official_check.exe" "$(winpath "$out/official/wintun.dll")"
}

case "${1:-}" in
    "") run_fake_suite ;;
    official) run_official "${2:?usage: build_and_run.sh official DLL_PATH}" ;;
    *) echo "usage: $0 [official DLL_PATH]" >&2; exit 2 ;;
esac
