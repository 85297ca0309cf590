"""Builds the UDP endpoint backend's own C test (tests/c/test_udp.c) and runs it: natively under the sanitizers
(recvmmsg/sendmmsg, GSO/GRO), and cross-compiled with mingw-w64 under Wine (WSARecvMsg/WSASendMsg, the offload
probes as Wine answers them, the URO path and guard and the recvfrom/sendto fallback forced, the reader waiting on
the socket's event). Loopback sockets through the device interface, a reader thread,
close under it. And the pure functions' invariants (tests/fuzz/fuzz_udp.c) on random inputs, and under libFuzzer
where clang has it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from cbuild import ROOT, SANITIZE_ASAN, build_and_run, build_and_run_wine, build_libfuzzer, c_sources, compiler

SOURCES = c_sources("linux", "core", "offload", "posix", "udp")
# the Windows build: the message calls (Wine has no USO/URO; the test forces those paths)
WINDOWS_SOURCES = c_sources("win32", "core", "offload", "windows", "udp")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built and run from Linux")


@pytest.mark.parametrize("sanitize", [["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                                      ["-fsanitize=thread"]], ids=["asan-ubsan", "tsan"])
def test_udp_backend_under_sanitizers(sanitize):
    passed, failed = build_and_run(compiler("gcc"), sanitize, [*SOURCES, ROOT / "tests" / "c" / "test_udp.c"],
                                   f"udp_{sanitize[0].split('=')[1].split(',')[0]}", timeout=120)
    assert failed == 0 and passed > 50


def test_windows_fallback_under_wine():
    passed, failed = build_and_run_wine([*WINDOWS_SOURCES, ROOT / "tests" / "c" / "test_udp.c"], "test_udp")
    assert failed == 0 and passed > 50


FUZZ = ROOT / "tests" / "fuzz" / "fuzz_udp.c"
FUZZ_SECONDS = int(os.environ.get("FT_FUZZ_SECONDS", "20"))


def test_run_grouping_and_train_invariants_on_random_inputs(tmp_path):
    """tests/fuzz/fuzz_udp.c's invariants over 200,000 pseudo-random inputs, built by gcc under the sanitizers
    (its standalone driver: here even without clang)."""
    exe = tmp_path / "fuzz_udp"
    cmd = [compiler("gcc"), "-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", *SANITIZE_ASAN,
           "-DFT_FUZZ_STANDALONE", f"-I{ROOT / 'csrc'}", str(FUZZ), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    result = subprocess.run([str(exe), "200000"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "200000 inputs" in result.stdout, result.stdout + result.stderr[-3000:]


def test_fuzz_udp_for_a_bounded_time(tmp_path):
    exe = build_libfuzzer([FUZZ], tmp_path / "fuzz_udp")
    result = subprocess.run([str(exe), f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=1024", "-timeout=10",
                             "-max_len=2000", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/"],
                            capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", result.stderr)
    assert runs and int(runs.group(1)) > 1000, result.stderr[-4000:]
