"""Device events on Windows (csrc/events/ft_events_win.c): its C test (tests/c/test_events_win.c) cross-compiled
with mingw-w64 and run under Wine. Wine registers the notifications but never calls them back (its
NotifyIpInterfaceChange is a stub, its NotifyUnicastIpAddressChange reports only the initial state), so the
test feeds the callbacks the rows the system would pass, from several threads, and checks the queue, its
overflow mark, the LUID filter, what is completed from GetIfEntry2, waiting and shutdown. The Python layer
over it runs in the Windows sub-suite (tests/test_events_windows.py through tests/test_windows_python.py).

Outside CI a missing tool skips with the install hint; in CI (CI set) it fails instead."""

from __future__ import annotations

import sys

import pytest

from cbuild import ROOT, build_and_run_wine, c_sources

WINDOWS_SOURCES = c_sources("win32", "core", "offload", "events", "windows")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built and run from Linux")


def test_windows_device_events_under_wine():
    passed, failed = build_and_run_wine([*WINDOWS_SOURCES, ROOT / "tests" / "c" / "test_events_win.c"],
                                        "test_events_win", libs=("-liphlpapi", "-lws2_32"))
    assert failed == 0 and passed >= 250
