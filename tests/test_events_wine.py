"""Device events on Windows (csrc/events/ft_events_win.c): its C test (tests/c/test_events_win.c) cross-compiled
with mingw-w64 and run under Wine. Wine registers the notifications but never calls them back (its
NotifyIpInterfaceChange is a stub, its NotifyUnicastIpAddressChange reports only the initial state), so the
test feeds the callbacks the rows the system would pass, from several threads, and checks the queue, its
overflow mark, the LUID filter, what is completed from GetIfEntry2, waiting and shutdown. The Python layer
over it runs in the Windows sub-suite (tests/test_events_windows.py through tests/test_windows_python.py).

Outside CI a missing tool skips with the install hint; in CI (CI set) it fails instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cbuild import BUILD, CSRC, IN_CI, ROOT, c_sources, passed_line

WINDOWS_SOURCES = c_sources("win32", "core", "offload", "events", "windows")
MINGW = "x86_64-w64-mingw32-gcc"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built and run from Linux")


def test_windows_device_events_under_wine():
    missing = [t for t in (MINGW, "wine", "wineboot") if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not found (apt-get install gcc-mingw-w64-x86-64 wine)"
        if IN_CI:
            pytest.fail(f"CI must run the Wine tests, but {why}")
        pytest.skip(why)
    out = BUILD / "wine"
    out.mkdir(parents=True, exist_ok=True)
    exe = out / "test_events_win.exe"
    built = subprocess.run([MINGW, "-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                            f"-I{CSRC}", *map(str, WINDOWS_SOURCES), str(ROOT / "tests" / "c" / "test_events_win.c"),
                            "-o", str(exe), "-liphlpapi", "-lws2_32", "-static-libgcc"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert built.returncode == 0, built.stdout + built.stderr
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
    assert result.returncode == 0 and failed == 0 and passed >= 250, result.stdout + result.stderr
