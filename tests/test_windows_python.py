"""fasttun's Python layer on Windows CPython, under Wine: the extension cross-built for the official 64-bit
CPython 3.11 (tests/wine/winpy.py) and the Windows sub-suite run there: the pair, aio, packaging, the Wintun
backend through the Python API against our fake wintun.dll (tests/test_wintun_python.py), ``fasttun info`` and
``fasttun bench pair``, device events (tests/test_events_windows.py). The build is cached under tests/.build/winpy/.

Outside CI a missing tool skips with the install hint; in CI (CI set) it fails instead."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import IN_CI

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


@pytest.mark.parametrize("crt", ["msvcrt", "ucrt"])
def test_the_windows_sub_suite_passes_under_wine(crt: str) -> None:
    """msvcrt: mingw-w64's default C runtime; ucrt: the Universal CRT, which MSVC-built CPython itself uses."""
    if not sys.platform.startswith("linux"):
        pytest.skip("cross-builds for Windows and runs it under Wine on Linux")
    report = REPORT.with_name(f"report-{crt}.xml")
    report.unlink(missing_ok=True)
    winreport = "Z:" + str(report).replace("/", "\\")
    proc = winpy(*(["--ucrt"] if crt == "ucrt" else []), "pytest", f"--junitxml={winreport}")
    output = proc.stdout[-6000:] + ("\n--- stderr ---\n" + proc.stderr[-3000:] if proc.stderr.strip() else "")
    print(output)
    assert report.exists(), f"the Wine run wrote no report (exit {proc.returncode}):\n{output}"
    got = results(report)
    bad = {t: m for t, (o, m) in got.items() if o in ("failure", "error")}
    assert not bad, f"{len(bad)} failed under Wine: {sorted(bad)}\n{output}"
    assert proc.returncode == 0, output
    passed = [t for t, (o, _) in got.items() if o == "passed"]
    skipped = {t: m for t, (o, m) in got.items() if o == "skipped"}
    for test_id, message in skipped.items():
        assert any(reason in message for reason in ALLOWED_SKIPS), f"{test_id} skipped: {message}"
    # Every module of the sub-suite ran, and the Wintun tests in full: the loader, the CLI, the ring faults.
    # JUnit class names are "tests.test_aio" or, for test classes, "tests.test_aio.TestPairOnDefaultLoop".
    modules = {next(p for p in t.split("::")[0].split(".") if p.startswith("test_")) for t in passed}
    assert {"test_pair", "test_aio", "test_packaging", "test_wintun_python", "test_windows",
            "test_events_windows"} <= modules, modules
    wintun = [t for t in passed if "test_wintun_python" in t]
    for name in ("test_loader_errors_and_planted_dlls_are_never_loaded", "test_the_package_copy_of_the_dll_is_used",
                 "test_fasttun_info_on_windows", "test_fasttun_bench_pair_on_windows",
                 "test_end_of_file_mid_stream_ends_the_reader", "test_reader_gets_everything_in_order",
                 "test_ring_full_wait_sends_once_there_is_room", "test_a_failure_after_the_adapter_is_open_closes_it"):
        assert any(t.split("[")[0].endswith("::" + name) for t in wintun), f"{name} did not pass under Wine"
    assert len(passed) >= 60, f"only {len(passed)} passed"
