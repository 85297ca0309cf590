"""What the harness needs from the machine: privileges, tools, network namespaces, link counters and the
C baselines (compiled from fasttun/_bench/baselines/*.c with the system compiler on first use)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from fasttun._host import tool

log = logging.getLogger("fasttun.bench")

NETNS_DIR = Path("/run/netns")
PREFIX = "ftb-"

C_PROGRAMS = ("ftb_sendmmsg", "ftb_read_loop", "ftb_write_loop", "ftb_echo", "ftb_forward")


# ---- commands -----------------------------------------------------------------------------------------

def run(args: list[str], timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs a command to its end, bounded in time; raises RuntimeError with its stderr if it fails."""
    log.debug("run: %s", " ".join(args))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = tool("ip")
    if exe is None:
        raise RuntimeError("the 'ip' command (iproute2) is missing")
    return run([exe, *args], check=check)


def json_line(text: str, what: str) -> dict[str, Any]:
    """The last JSON object line a C baseline printed."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    raise RuntimeError(f"{what} printed no result: {text.strip()[-300:]!r}")


class Child:
    """A background process that is always ended: terminated, then killed, on leaving the with-block."""

    def __init__(self, args: list[str], pass_fds: tuple[int, ...] = (), stdin: bool = False) -> None:
        log.debug("start: %s", " ".join(args))
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     pass_fds=pass_fds)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout: float) -> str:
        """One line of the child's stdout, waiting at most timeout seconds ('' if none came)."""
        assert self.proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0] if box else ""

    def finish(self, timeout: float) -> tuple[str, str]:
        """Closes its stdin (the signal to stop for our C programs) and collects its output."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.end()
            raise RuntimeError(f"{os.path.basename(self.args[0])} did not finish within {timeout:.0f} s") from None
        return out or "", err or ""

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def host_busy_seconds() -> float:
    """CPU seconds every CPU of the machine spent busy so far: everything in /proc/stat's cpu line but idle and
    iowait (guest time is already part of user time)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pid: int) -> float:
    """User plus system CPU time of a process so far (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return ticks / os.sysconf("SC_CLK_TCK")


# ---- network namespaces -------------------------------------------------------------------------------

def remove_stale_namespaces() -> None:
    """Deletes namespaces left by harness runs whose process is gone (a kill -9, a crash)."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.iterdir():
        m = re.fullmatch(rf"{PREFIX}(\d+)-.*", entry.name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            log.info("removing the namespace %s left by an earlier run", entry.name)
            ip("netns", "del", entry.name, check=False)


@contextlib.contextmanager
def namespace(tag: str) -> Iterator[str]:
    """A new network namespace named ftb-<pid>-<tag> with its loopback up and IPv6 off (so the kernel sends
    no router solicitations into our devices); deleted on the way out, also on error or Ctrl-C."""
    from fasttun import _netns

    name = f"{PREFIX}{os.getpid()}-{tag}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        with _netns.entered(str(NETNS_DIR / name)):
            for knob in ("all", "default"):
                with open(f"/proc/sys/net/ipv6/conf/{knob}/disable_ipv6", "w") as f:
                    f.write("1")
        yield name
    finally:
        ip("netns", "del", name, check=False)
        log.debug("deleted namespace %s", name)


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def link_stats(ns: str, dev: str) -> dict[str, int]:
    """The kernel's counters of a device: tx_packets, tx_dropped, rx_packets, rx_dropped."""
    out = ip("-n", ns, "-s", "-j", "link", "show", "dev", dev).stdout
    stats = json.loads(out)[0]["stats64"]
    return {"tx_packets": stats["tx"]["packets"], "tx_dropped": stats["tx"]["dropped"],
            "rx_packets": stats["rx"]["packets"], "rx_dropped": stats["rx"]["dropped"]}


def udp_counters() -> dict[str, int]:
    """This thread's namespace's UDP counters (InDatagrams, RcvbufErrors, ...) from /proc/thread-self/net/snmp."""
    with open("/proc/thread-self/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    names, values = lines[0][1:], lines[1][1:]
    return {n: int(v) for n, v in zip(names, values)}


# ---- C baselines --------------------------------------------------------------------------------------

def bench_sources() -> Optional[Path]:
    """The folder with the C baselines: $FASTTUN_BENCH_DIR, else the sources shipped in the package
    (fasttun/_bench/baselines/), so that `fasttun bench` works from an installed wheel too."""
    candidates = []
    if os.environ.get("FASTTUN_BENCH_DIR"):
        candidates.append(Path(os.environ["FASTTUN_BENCH_DIR"]))
    candidates.append(Path(__file__).resolve().parent / "baselines")
    for c in candidates:
        if (c / f"{C_PROGRAMS[0]}.c").is_file():
            return c
    return None


class Baselines:
    """Compiles the C baselines once per process (cached across runs in a temp dir of the user's) and
    tells why one is missing."""

    def __init__(self) -> None:
        self._built: dict[str, Path] = {}
        self._missing: dict[str, str] = {}
        self._lock = threading.Lock()

    def path(self, program: str) -> Path:
        """The program's binary; raises LookupError with the reason it is missing."""
        with self._lock:
            if program not in self._built and program not in self._missing:
                try:
                    self._built[program] = self._build(program)
                except LookupError as exc:
                    self._missing[program] = str(exc)
            if program in self._missing:
                raise LookupError(self._missing[program])
            return self._built[program]

    def missing(self, *programs: str) -> Optional[str]:
        """Why one of the programs cannot be had (None if all can)."""
        for p in programs:
            try:
                self.path(p)
            except LookupError as exc:
                return str(exc)
        return None

    @staticmethod
    def _cache_dir() -> Path:
        """Binaries go to a folder of this user's in the temp dir, never next to the sources (an installed
        package's folder is often read-only, and a checkout stays clean)."""
        tmp = Path(tempfile.gettempdir()) / f"fasttun-bench-{os.getuid()}"
        tmp.mkdir(mode=0o700, exist_ok=True)
        if tmp.stat().st_uid != os.getuid():
            raise LookupError(f"{tmp} belongs to another user; set TMPDIR to a folder of your own")
        return tmp

    def _build(self, program: str) -> Path:
        src_dir = bench_sources()
        if src_dir is None:
            raise LookupError("the C baseline sources (fasttun/_bench/baselines/*.c) are missing from this "
                              "installation; set FASTTUN_BENCH_DIR to a folder that has them")
        source = src_dir / f"{program}.c"
        if not source.is_file():
            raise LookupError(f"{source} not found")
        # one binary per source text, with the header the baselines share
        digest = hashlib.sha256(source.read_bytes() + (src_dir / "ftb.h").read_bytes()).hexdigest()[:16]
        binary = self._cache_dir() / f"{program}-{digest}"
        if binary.is_file():
            return binary
        cc = os.environ.get("CC") or tool("cc") or tool("gcc") or tool("clang")
        if cc is None:
            raise LookupError("no C compiler (cc, gcc or clang) to build the C baselines")
        tmp = binary.with_name(f"{program}.{os.getpid()}.tmp")
        proc = subprocess.run([*cc.split(), "-O2", "-Wall", "-pthread", "-o", str(tmp), str(source)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise LookupError(f"{program}.c did not compile: {proc.stderr.strip()[-300:]}")
        os.replace(tmp, binary)
        log.info("built %s", binary)
        return binary


# ---- CPU placement ------------------------------------------------------------------------------------

def cpu_pair() -> Optional[tuple[int, int]]:
    """Two CPUs this process may run on (consumer, producer), or None on a single-CPU machine."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return (cpus[0], cpus[-1]) if len(cpus) >= 2 else None


@contextlib.contextmanager
def pinned(cpu: Optional[int]) -> Iterator[None]:
    """Runs the body with this thread on one CPU (threads started meanwhile inherit it); None: unchanged.

    Live producer/consumer runs pin the two sides apart: with wake-affine scheduling the kernel would
    otherwise often put them on one CPU, and they would take turns instead of running at once."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
