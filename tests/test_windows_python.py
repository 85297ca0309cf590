"""fasttun's Python layer on Windows CPython, under Wine: the Windows sub-suite (the pair, aio, packaging, the
Wintun backend through the Python API against our fake wintun.dll (tests/test_wintun_python.py), ``fasttun info``
and ``fasttun bench pair``, device events (tests/test_events_windows.py), examples/udp_tunnel.py end to end on
fake adapters (tests/test_udp_tunnel_windows.py)) run on the release win_amd64 wheels of
tools/build_wheels.py (tests/wheelhouse.py), each installed by pip into the official embeddable CPython of its
version, with the wheel's own wintun.dll found without configuration; and once on the extension cross-built for
CPython 3.11 with mingw-w64's default C runtime (msvcrt.dll), the developer's quick loop (tests/wine/winpy.py).
CI installs the wheels of 3.9 and 3.13 (the oldest and the newest); FASTTUN_RELEASE_CHECK=1 all five.

Outside CI a missing tool skips with the install hint; in CI (CI set) it fails instead."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import IN_CI

import wheelhouse

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "wine" / "winpy.py"
REPORT = HERE / ".build" / "winpy" / "report.xml"

# The only reasons a test of the sub-suite may skip under Wine.
ALLOWED_SKIPS = ("uvloop does not run on Windows", "Wine 8 lacks", "only Wine lacks",
                 "on Windows the adapter's real MTU", "needs an IP Helper call",
                 "Linux", "only checked on an installed wheel",
                 "could not import 'cryptography")  # not in the Windows test environment (tests/wine)


def skip_or_fail(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI must run the Windows Python tests under Wine, but {why}")
    pytest.skip(why)


def winpy(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=HERE.parent)
    if proc.returncode in (3, 4):  # a tool is missing / a download from PyPI failed
        skip_or_fail(proc.stderr.strip().splitlines()[-1])
    return proc


def results(report: Path) -> dict[str, tuple[str, str]]:
    """test id -> (outcome, message) from pytest's JUnit XML."""
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message") or ""
                break
        out[test_id] = (outcome, message)
    return out


@pytest.mark.parametrize("run", ["staged-msvcrt", *(f"wheel-{v}" for v in wheelhouse.ALL_VERSIONS)])
def test_the_windows_sub_suite_passes_under_wine(run: str) -> None:
    """staged-msvcrt: the quick build against mingw-w64's default C runtime; wheel-3.X: the release wheel (linked
    against the Universal CRT, as MSVC-built CPython is) installed into the official CPython 3.X."""
    if not sys.platform.startswith("linux"):
        pytest.skip("cross-builds for Windows and runs it under Wine on Linux")
    version = run[len("wheel-"):] if run.startswith("wheel-") else None
    if version is not None and version not in wheelhouse.versions():
        pytest.skip("the wheels of 3.10 to 3.12 are installed by the release check (FASTTUN_RELEASE_CHECK=1)")
    report = REPORT.with_name(f"report-{run}.xml")
    report.unlink(missing_ok=True)
    winreport = "Z:" + str(report).replace("/", "\\")
    how = ["--wheel", str(wheelhouse.wheel("win_amd64", version))] if version else []
    proc = winpy(*how, "pytest", f"--junitxml={winreport}")
    output = proc.stdout[-6000:] + ("\n--- stderr ---\n" + proc.stderr[-3000:] if proc.stderr.strip() else "")
    print(output)
    assert report.exists(), f"the Wine run wrote no report (exit {proc.returncode}):\n{output}"
    got = results(report)
    bad = {t: m for t, (o, m) in got.items() if o in ("failure", "error")}
    assert not bad, f"{len(bad)} failed under Wine: {sorted(bad)}\n{output}"
    assert proc.returncode == 0, output
    passed = [t for t, (o, _) in got.items() if o == "passed"]
    skipped = {t: m for t, (o, m) in got.items() if o == "skipped"}
    # numpy < 2 has no cp313 wheel and numpy 2 crashes Wine 8 (tests/wine/requirements-win-3.13.txt)
    allowed = ALLOWED_SKIPS + (("could not import 'numpy'",) if version == "3.13" else ())
    for test_id, message in skipped.items():
        assert any(reason in message for reason in allowed), f"{test_id} skipped: {message}"
    # Every module of the sub-suite ran, and the Wintun tests in full: the loader, the CLI, the ring faults.
    # JUnit class names are "tests.test_aio" or, for test classes, "tests.test_aio.TestPairOnDefaultLoop".
    modules = {next(p for p in t.split("::")[0].split(".") if p.startswith("test_")) for t in passed}
    assert {"test_pair", "test_aio", "test_packaging", "test_wintun_python", "test_windows",
            "test_events_windows", "test_udp_tunnel_windows", "test_reader_forward"} <= modules, modules
    wintun = [t for t in passed if "test_wintun_python" in t]
    for name in ("test_loader_errors_and_planted_dlls_are_never_loaded", "test_the_package_copy_of_the_dll_is_used",
                 "test_fasttun_info_on_windows", "test_fasttun_bench_pair_on_windows",
                 "test_fasttun_bench_udp_on_windows",
                 "test_end_of_file_mid_stream_ends_the_reader", "test_reader_gets_everything_in_order",
                 "test_ring_full_wait_sends_once_there_is_room", "test_a_failure_after_the_adapter_is_open_closes_it"):
        assert any(t.split("[")[0].endswith("::" + name) for t in wintun), f"{name} did not pass under Wine"
    # The Windows tunnel end to end (two processes on fake adapters, joined by UDP); encrypted wherever the
    # sub-suite has cryptography (tests/wine/requirements-win*.txt: not 3.9).
    tunnel = {t.split("[")[1].rstrip("]") for t in passed if "test_two_windows_tunnels_carry_every_packet" in t}
    want = {"plain", "asyncio"} | ({"encrypted"} if version != "3.9" else set())
    assert want <= tunnel, f"the Windows tunnel end to end passed only for {sorted(tunnel)}"
    assert any(t.endswith("::test_a_windows_tunnel_writes_a_tcp_flow_coalesced") for t in passed), \
        "the Windows tunnel's coalesced TCP was not checked"
    assert len(passed) >= 60, f"only {len(passed)} passed"
    if version is not None:  # the installed wheel carries wintun.dll and loads it when nothing else is configured
        assert any(t.endswith("::test_the_wheel_ships_its_dll") for t in passed), "the wheel's DLL was not checked"
