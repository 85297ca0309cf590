"""Builds the UDP endpoint backend's own C test (tests/c/test_udp.c) and runs it: natively under the sanitizers
(recvmmsg/sendmmsg, GSO/GRO), and cross-compiled with mingw-w64 under Wine (WSARecvMsg/WSASendMsg, the offload
probes as Wine answers them, the URO path and guard and the recvfrom/sendto fallback forced, the reader waiting on
the socket's event). Loopback sockets through the device interface, a reader thread,
close under it."""

from __future__ import annotations

import sys

import pytest

from cbuild import ROOT, build_and_run, build_and_run_wine, c_sources, compiler

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
