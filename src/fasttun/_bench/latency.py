"""latency: ping round trips through an ICMP echo responder on a TUN device. ping runs in the namespace and
pings an address behind the device; the responder reads each echo request and writes the reply back.
fasttun's reader with a Python responder (default adaptive spin, and spinning always) versus the same
responder in C (poll, then one read() and one write() per packet; the baseline). After the pings, the
responder idles with the device up and its CPU use is measured (process CPU time / wall time).

On a machine with two CPUs or more, the responder (the reader thread, or the C process) runs on one and ping
with this harness on another, in every variant: ping busy-waits between its pings at this interval and took a
whole CPU, so where the scheduler put the responder (next to ping, or on the idle CPU) moved p50 by tens of
microseconds from run to run."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import time
from typing import Optional

import fasttun
from fasttun._bench import devices
from fasttun.icmp import echo_replies
from fasttun._bench.results import Sample
from fasttun._bench.scenario import Described, Settings, Variant
from fasttun._bench.system import Child, cpu_pair, cpu_seconds_of, namespace, pinned, run
from fasttun._host import tool

ADDRESS = "10.201.3.1/24"
TARGET = "10.201.3.2"
INTERVAL = 0.005        # seconds between pings (root may go below ping's 2 ms floor for users; we need not)
PING_BYTES = 56         # ping's default payload: 84-byte IP packets
SPIN_US = 50


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class LatencyScenario(Described, name="latency", needs_root=True, key="p50_us",
                      summary="ping RTT through a Python echo responder vs a C one, and CPU use while idle"):

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        self.ns = stack.enter_context(namespace("lat"))
        no_ping = None if tool("ping") else "ping is not installed (apt install iputils-ping)"
        self.count = 20 if settings.smoke else int(min(5000, max(50, settings.seconds / INTERVAL)))
        self.idle = 0.3 if settings.smoke else min(2.0, max(0.5, settings.seconds / 2))
        return [
            Variant("fasttun reader, Python responder (adaptive spin)",
                    lambda: self._fasttun(settings, adaptive=True), missing=no_ping),
            Variant(f"fasttun reader, Python responder (spin {SPIN_US} us always)",
                    lambda: self._fasttun(settings, adaptive=False), missing=no_ping),
            Variant("C responder, poll + read() + write()", lambda: self._c(settings), baseline=True,
                    missing=no_ping or settings.baselines.missing("ftb_echo")),
        ]

    def _ping(self) -> tuple[list[float], float, float]:
        """RTTs in microseconds, loss in percent, and how long the pings took."""
        exe = tool("ip")
        assert exe is not None
        cpus = cpu_pair()
        t0 = time.perf_counter()
        with pinned(None if cpus is None else cpus[1]):
            proc = run([exe, "netns", "exec", self.ns, "ping", "-n", "-i", str(INTERVAL), "-c", str(self.count),
                        "-W", "1", "-s", str(PING_BYTES), TARGET],
                       timeout=self.count * INTERVAL + 30, check=False)
        seconds = time.perf_counter() - t0
        rtts = [float(m) * 1000.0 for m in re.findall(r"time=([\d.]+) ms", proc.stdout)]
        loss = re.search(r"([\d.]+)% packet loss", proc.stdout)
        if not rtts:
            raise RuntimeError(f"ping got no reply: {(proc.stdout + proc.stderr).strip()[-300:]}")
        return rtts, float(loss.group(1)) if loss else 100.0, seconds

    @staticmethod
    def _responder_cpu() -> contextlib.AbstractContextManager[None]:
        """The responder (a thread started or a process spawned in the body) on the first CPU, ping elsewhere."""
        cpus = cpu_pair()
        return pinned(None if cpus is None else cpus[0])

    def _sample(self, rtts: list[float], loss: float, seconds: float, idle_cpu: float) -> Sample:
        pps = len(rtts) / seconds
        return Sample(pps=pps, gbps=pps * (PING_BYTES + 28) * 8 / 1e9,
                      extra={"p50_us": statistics.median(rtts), "p99_us": percentile(rtts, 99),
                             "loss_pct": loss, "idle_cpu_pct": idle_cpu})

    def _idle_cpu(self, pid: Optional[int]) -> float:
        """Percent of one CPU used while nothing arrives (this process, or another by pid)."""
        def cpu() -> float:
            if pid is None:
                t = os.times()
                return t.user + t.system
            return cpu_seconds_of(pid)
        time.sleep(0.05)  # let the last reply's spin end
        c0, t0 = cpu(), time.perf_counter()
        time.sleep(self.idle)
        return 100.0 * (cpu() - c0) / (time.perf_counter() - t0)

    def _fasttun(self, settings: Settings, adaptive: bool) -> Sample:
        with devices.fasttun_device(self.ns, "ftblat0", ADDRESS) as tun:
            def on_batch(batch: fasttun.Batch) -> None:
                replies = echo_replies(batch)
                if replies is not None:
                    tun.send_batch(replies)

            with self._responder_cpu(), \
                    tun.start_reader(on_batch, batch_size=settings.batch, spin_us=SPIN_US, adaptive=adaptive):
                rtts, loss, seconds = self._ping()
                idle = self._idle_cpu(None)
            return self._sample(rtts, loss, seconds, idle)

    def _c(self, settings: Settings) -> Sample:
        responder = settings.baselines.path("ftb_echo")
        with devices.fasttun_device(self.ns, "ftblat0", ADDRESS) as tun:
            fd = tun.fileno()
            with self._responder_cpu(), Child([str(responder), "-f", str(fd)], pass_fds=(fd,), stdin=True) as child:
                if child.readline(timeout=10).strip() != "ready":
                    raise RuntimeError("the C responder did not start")
                rtts, loss, seconds = self._ping()
                idle = self._idle_cpu(child.pid)
                child.finish(timeout=10)
            return self._sample(rtts, loss, seconds, idle)
