"""examples/echo.py, examples/echo_async.py and examples/capture.py as users run them: a subprocess inside a network
namespace of the test's own (``ip netns exec``), sent echo requests by the test itself (tests/icmp_ping.py: no
ping needed), stopped with SIGINT or SIGTERM."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import IN_CI, require_tool
from icmp_ping import ping

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TUN backend")]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PEER4, PEER6 = "10.97.0.2", "fd00:97::2"


class Example:
    """An example running inside a namespace, stopped (and killed if it must be) when the test ends."""

    def __init__(self, namespace: str, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, str(EXAMPLES / script), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.banner = self._line(timeout=15.0)

    def _line(self, timeout: float) -> str:
        with selectors.DefaultSelector() as sel:
            assert self.proc.stdout is not None
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.proc.kill()
                pytest.fail(f"the example printed nothing in {timeout} s: {self.proc.communicate()}")
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()  # type: ignore[union-attr]
                pytest.fail(f"the example ended early: {self.proc.wait()} {err}")
            return line

    def stop(self, signum: int) -> tuple[int, str, str]:
        self.proc.send_signal(signum)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"the example did not end within 10 s of signal {signum}: {out} {err}")
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.mark.parametrize("script, options, signum", [
    pytest.param("echo.py", [], signal.SIGINT, id="echo-threads-SIGINT"),
    pytest.param("echo.py", [], signal.SIGTERM, id="echo-threads-SIGTERM"),
    pytest.param("echo_async.py", [], signal.SIGINT, id="echo-asyncio-SIGINT"),
    pytest.param("echo_async.py", ["--uvloop"], signal.SIGTERM, id="echo-uvloop-SIGTERM"),
])
def test_ping_and_ping6_get_answers(netns, script, options, signum):
    if "--uvloop" in options:
        pytest.importorskip("uvloop", reason="uvloop is not installed (pip install uvloop)")
    example = Example(netns.name, script, "--name", "ftecho0", *options)
    try:
        assert "answering pings behind ftecho0" in example.banner
        assert ping(PEER4, count=3) == 3
        assert ping(PEER6, count=3) == 3
        code, out, err = example.stop(signum)
    finally:
        example.kill()
    assert code == 0, err
    assert "echo requests 6, replies sent 6" in out
    assert "Traceback" not in err


def test_capture_records_pings_and_replies_for_tcpdump_and_scapy(netns, tmp_path):
    tcpdump = require_tool("tcpdump", "tcpdump")
    path = tmp_path / "cap.pcapng"
    example = Example(netns.name, "capture.py", "--name", "ftcap0", "--address", "10.96.0.1/24",
                      "--write", str(path), "--answer-pings")
    try:
        assert "recording ftcap0" in example.banner
        assert ping("10.96.0.2", count=3) == 3
        code, out, err = example.stop(signal.SIGINT)
    finally:
        example.kill()
    assert code == 0, err
    lines = subprocess.run([tcpdump, "-nn", "-r", str(path), "icmp"], capture_output=True, text=True, timeout=30,
                           check=True).stdout.splitlines()
    requests = [ln for ln in lines if "10.96.0.1 > 10.96.0.2: ICMP echo request" in ln]
    replies = [ln for ln in lines if "10.96.0.2 > 10.96.0.1: ICMP echo reply" in ln]
    assert len(requests) == 3 and len(replies) == 3, lines

    try:
        import scapy.layers.inet as inet
        from scapy.utils import rdpcap
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("scapy is not installed (pip install scapy)")

    icmp = [r for r in rdpcap(str(path)) if r.haslayer(inet.ICMP)]
    assert [(r[inet.ICMP].type, r.direction) for r in icmp] == [(8, 2), (0, 1)] * 3  # out of the host, back in
    stamps = [float(r.time) for r in icmp]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 60


def test_capture_on_a_full_disk_keeps_answering_and_says_what_it_lost(netns):
    example = Example(netns.name, "capture.py", "--name", "ftcap1", "--address", "10.95.0.1/24",
                      "--write", "/dev/full", "--answer-pings")
    try:
        assert "recording ftcap1" in example.banner
        assert ping("10.95.0.2", count=60, interval=0.01) == 60  # 120 records: more than the file's buffer
        code, out, err = example.stop(signal.SIGINT)
    finally:
        example.kill()
    assert code == 1, (out, err)
    assert "capture: writing /dev/full failed ([Errno 28] No space left on device)" in err, err
    assert "packets not recorded" in err and "Traceback" not in err, err
    counts = re.search(r"\((\d+) received, (\d+) sent\)", out)
    assert counts and int(counts[1]) >= 60 and int(counts[2]) == 60, out
