"""Builds the C core's own tests (tests/c/test_core.c) under the sanitizers and runs them natively."""

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
CORE = ["ft_device.c", "ft_reader.c", "ft_backend_memory.c", "ft_os_posix.c", "ft_offload.c", "ft_icmp.c"]
LINUX = ["ft_backend_linux.c", "ft_linux_netlink.c", "ft_linux_events.c", "ft_backend_udp.c"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="native C tests run on Linux")


def compiler(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {name}")
        pytest.skip(f"{name} is not installed")
    return path


def build_and_run(cc: str, sanitize: list[str], out: str) -> str:
    BUILD.mkdir(parents=True, exist_ok=True)
    exe = BUILD / out
    sources = [str(CSRC / f) for f in CORE] + [str(ROOT / "tests" / "c" / "test_core.c")]
    cmd = [cc, "-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-fno-omit-frame-pointer", *sanitize,
           f"-I{CSRC}", *sources, "-o", str(exe), "-lpthread"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1",
               TSAN_OPTIONS="halt_on_error=1")
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def passed_line(output: str) -> tuple[int, int]:
    m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def test_core_under_address_and_undefined_behaviour_sanitizers():
    out = build_and_run(compiler("gcc"), ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"], "core_asan")
    passed, failed = passed_line(out)
    assert failed == 0 and passed > 100


def test_core_under_thread_sanitizer():
    out = build_and_run(compiler("gcc"), ["-fsanitize=thread"], "core_tsan")
    passed, failed = passed_line(out)
    assert failed == 0 and passed > 100


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_core_builds_without_warnings(cc):
    path = compiler(cc)
    for f in CORE + LINUX:
        subprocess.run([path, "-std=c11", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                        "-Wno-gnu-zero-variadic-macro-arguments", f"-I{CSRC}", "-c", str(CSRC / f), "-o", os.devnull],
                       check=True, capture_output=True, text=True)
