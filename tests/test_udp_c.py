"""Builds the UDP endpoint backend's own C test (tests/c/test_udp.c) and runs it: natively under the sanitizers
(recvmmsg/sendmmsg, GSO/GRO), and cross-compiled with mingw-w64 under Wine (the Windows per-datagram fallback,
the reader waiting on the socket's event). Loopback sockets through the device interface, a reader thread,
close under it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
BUILD = ROOT / "tests" / ".build"
SOURCES = ["ft_device.c", "ft_reader.c", "ft_os_posix.c", "ft_backend_udp.c"]

WINDOWS_SOURCES = ["ft_device.c", "ft_reader.c", "ft_os_win32.c", "ft_backend_udp.c"]
MINGW = "x86_64-w64-mingw32-gcc"
IN_CI = bool(os.environ.get("CI"))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built and run from Linux")


def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have gcc")
        pytest.skip("gcc is not installed")
    return path


@pytest.mark.parametrize("sanitize", [["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                                      ["-fsanitize=thread"]], ids=["asan-ubsan", "tsan"])
def test_udp_backend_under_sanitizers(sanitize):
    BUILD.mkdir(parents=True, exist_ok=True)
    exe = BUILD / f"udp_{sanitize[0].split('=')[1].split(',')[0]}"
    cmd = [gcc(), "-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-fno-omit-frame-pointer", *sanitize,
           f"-I{CSRC}", *(str(CSRC / f) for f in SOURCES), str(ROOT / "tests" / "c" / "test_udp.c"), "-o", str(exe),
           "-lpthread"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1",
               TSAN_OPTIONS="halt_on_error=1")
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    m = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.M)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) > 50, result.stdout


def summary(output: str) -> tuple[int, int]:
    m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
    assert m, output
    return int(m.group(1)), int(m.group(2))


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
                    *(str(CSRC / f) for f in WINDOWS_SOURCES), str(ROOT / "tests" / "c" / "test_udp.c"), "-o",
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
    passed, failed = summary(result.stdout)
    assert result.returncode == 0 and failed == 0 and passed > 50, result.stdout + result.stderr
