"""Builds the UDP endpoint backend's own C test (tests/c/test_udp.c) under the sanitizers and runs it natively:
loopback sockets through the device interface, a reader thread, close under it."""

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

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the UDP backend is Linux-only")


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
