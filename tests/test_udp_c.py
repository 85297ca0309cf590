"""Builds the UDP endpoint backend's own C test (tests/c/test_udp.c) and runs it: natively under the sanitizers
(recvmmsg/sendmmsg, GSO/GRO), and cross-compiled with mingw-w64 under Wine (the Windows per-datagram fallback,
the reader waiting on the socket's event). Loopback sockets through the device interface, a reader thread,
close under it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cbuild import BUILD, CSRC, IN_CI, ROOT, build_and_run, c_sources, compiler, passed_line

SOURCES = c_sources("linux", "core", "offload", "posix", "udp")
# the Windows build: the per-datagram fallback (Wine has no USO/URO)
WINDOWS_SOURCES = c_sources("win32", "core", "offload", "windows", "udp")
MINGW = "x86_64-w64-mingw32-gcc"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built and run from Linux")


@pytest.mark.parametrize("sanitize", [["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                                      ["-fsanitize=thread"]], ids=["asan-ubsan", "tsan"])
def test_udp_backend_under_sanitizers(sanitize):
    passed, failed = build_and_run(compiler("gcc"), sanitize, [*SOURCES, ROOT / "tests" / "c" / "test_udp.c"],
                                   f"udp_{sanitize[0].split('=')[1].split(',')[0]}", timeout=120)
    assert failed == 0 and passed > 50


def test_windows_fallback_under_wine():
    missing = [t for t in (MINGW, "wine", "wineboot") if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not found (apt-get install gcc-mingw-w64-x86-64 wine)"
        if IN_CI:
            pytest.fail(f"CI must run the Wine tests, but {why}")
        pytest.skip(why)
    out = BUILD / "wine"
    out.mkdir(parents=True, exist_ok=True)
    exe = out / "test_udp.exe"
    subprocess.run([MINGW, "-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", f"-I{CSRC}",
                    *map(str, WINDOWS_SOURCES), str(ROOT / "tests" / "c" / "test_udp.c"), "-o",
                    str(exe), "-lws2_32", "-static-libgcc"], check=True, capture_output=True, text=True)
    # the prefix tests/wintun_fake/build_and_run.sh uses (outside the tree), made on first use
    prefix = os.environ.get("FT_WINEPREFIX") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fasttun", "wineprefix")
    env = dict(os.environ, WINEPREFIX=prefix, WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    if not os.path.exists(os.path.join(prefix, "system.reg")):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run(["wineboot", "-i"], env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    result = subprocess.run(["wine", str(exe)], capture_output=True, text=True, timeout=180, env=env,
                            stdin=subprocess.DEVNULL)
    passed, failed = passed_line(result.stdout)
    assert result.returncode == 0 and failed == 0 and passed > 50, result.stdout + result.stderr
