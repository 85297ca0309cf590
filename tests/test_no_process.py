"""The library and ``fasttun info`` start no process: configuration goes through system calls, and what
``info`` reports is read directly (os.uname, /proc, /etc/os-release), never through a helper program
(platform.platform() runs ``uname -p``, ctypes.util.find_library runs ldconfig or a compiler).

Checked twice: with every way Python starts a process patched to record and refuse, and, where strace exists,
by the kernel's count of execve calls (exactly one: the interpreter itself)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import IN_CI

# What users do: the CLI's info, the pair API end to end, features(); as root on Linux also a real device.
WORKLOAD = r"""
import io, contextlib, os, sys
import fasttun
from fasttun import _cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert _cli.run(["info"]) == 0
assert "backend" in out.getvalue(), out.getvalue()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert _cli.run(["info", "--json"]) == 0
assert '"backend"' in out.getvalue(), out.getvalue()
a, b = fasttun.pair()
pkt = bytes([0x45, 0, 0, 60]) + bytes(56)  # an IPv4 header whose total length is the 60 bytes given
assert a.send(pkt) == 1 and b.recv(timeout=1) == pkt
got = []
with b.start_reader(lambda batch: got.extend(bytes(p) for p in batch)):
    a.send_batch([pkt] * 10)
    import time
    deadline = time.monotonic() + 5
    while len(got) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
assert len(got) == 10
fasttun.make_batch([pkt, pkt]).copy()
a.close(); b.close()
try:
    fasttun.features()
except fasttun.TunError:
    pass
if sys.platform.startswith("linux") and os.geteuid() == 0 and os.path.exists("/dev/net/tun"):
    from fasttun import _netns
    with _netns.private():
        with fasttun.Tun("ftnoproc0", mtu=1400, addresses=["10.91.0.1/24"], up=True) as tun:
            tun.add_route("10.92.0.0/16")
            assert tun.mtu == 1400 and tun.is_up
print("WORKLOAD OK")
"""

GUARD = r"""
import os, subprocess
started = []
class Spawned(BaseException):
    pass
def refuse(name, first=0):
    def fn(*args, **kwargs):
        what = repr(args[first:first + 1])[:200]
        started.append((name, what))
        raise Spawned(f"{name} called with {what}")
    return fn
subprocess.Popen.__init__ = refuse("subprocess.Popen", 1)
for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen", "execv", "execve", "execvp",
             "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
             "startfile"):
    if hasattr(os, name):
        setattr(os, name, refuse("os." + name))
import atexit
@atexit.register
def report():
    if started:
        print("STARTED", started, flush=True)
        os._exit(3)
"""


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def test_info_and_the_pair_api_start_no_process_when_spawning_is_refused():
    proc = run([sys.executable, "-c", GUARD + WORKLOAD])
    assert proc.returncode == 0 and "WORKLOAD OK" in proc.stdout, proc.stdout + proc.stderr
    assert "STARTED" not in proc.stdout


def test_the_guard_notices_a_process():
    # The guard is not a test that cannot fail: platform.platform() does start one (uname -p) on Linux.
    if not sys.platform.startswith("linux"):
        pytest.skip("platform.platform() starts uname only on POSIX systems")
    proc = run([sys.executable, "-c", GUARD + "import platform; platform.platform()"])
    assert proc.returncode == 3 and "STARTED" in proc.stdout, proc.stdout + proc.stderr


def test_exactly_one_execve_under_strace(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("strace is Linux")
    strace = shutil.which("strace")
    if strace is None:
        if IN_CI:
            pytest.fail("CI must count execve calls, but strace is missing (apt-get install strace)")
        pytest.skip("strace not found (apt-get install strace)")
    trace = tmp_path / "trace.txt"
    proc = run([strace, "-f", "-qq", "-e", "trace=execve,execveat", "-o", str(trace), sys.executable, "-c", WORKLOAD])
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        if IN_CI:
            pytest.fail(f"CI must count execve calls, but strace cannot trace here: {proc.stderr.strip()}")
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0 and "WORKLOAD OK" in proc.stdout, proc.stdout + proc.stderr
    calls = [line for line in trace.read_text().splitlines() if "execve" in line and "resumed" not in line]
    assert len(calls) == 1, "\n".join(calls)
    assert os.path.basename(sys.executable) in calls[0] or sys.executable in calls[0], calls[0]
