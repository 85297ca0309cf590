"""rx and rx-live: receiving from a real TUN device.

rx: the device's queue is deepened (txqueuelen) and prefilled by the C sendmmsg sender, then drained: fasttun's
reader with a Python callback, and fasttun.aio's ``async for`` with the event loop driving the device, versus a
C loop of one read() per packet (the baseline) and python-pytun's read() in a Python loop. The rate is packets
drained / time from the start of draining to the last packet.

rx-live: the sender and the reader run at the same time for the measured seconds (default queue length); the
rate is packets received per second of sending, next to what was offered and what the kernel dropped."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from collections.abc import Callable
from typing import Optional

import fasttun
from fasttun import aio
from fasttun._bench import devices
from fasttun._bench.results import Sample
from fasttun._bench.scenario import Described, Settings, Variant, pytun_missing
from fasttun._bench.system import Child, cpu_pair, json_line, link_stats, namespace, netns_path, pinned, run

ADDRESS = "10.201.1.1/24"
TARGET = "10.201.1.2"   # behind the device: what the sender sends to is queued on it
IDLE = 0.3              # seconds without a packet that mean the queue is drained
LIVE_QUEUE = 10_000     # rx-live's txqueuelen: absorbs scheduling hiccups, not a sustained overload


PER_PACKET_BATCH = 64  # the API's default batch size, what most users run


class _Drain(devices.Counter):
    """A Counter for a reader in this process that wakes the waiting thread once every queued packet came.

    The C loop's harness sleeps in another process while it drains; polling the counter every few milliseconds
    from this process instead took the GIL from the reader's thread about 200 times per drain (ten times the
    reader's context switches, 3-10% of its CPU time per packet, measured with perf stat). The drain's clock is
    the same either way: from before start_reader() to the last callback."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.done = threading.Event()

    def on_batch(self, batch: fasttun.Batch) -> None:
        super().on_batch(batch)
        if self.packets >= self.expected:
            self.done.set()

    def wait(self, idle: float, deadline: float) -> None:
        devices.wait_drained(self, self.expected, idle, deadline, self.done)


_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")


def _touching(counter: _Drain) -> Callable[[fasttun.Batch], None]:
    """Looks at every packet's first byte, as most users' callbacks do."""
    def on_batch(batch: fasttun.Batch) -> None:
        for p in batch:
            p[0]
        counter.on_batch(batch)
    return on_batch


def _parsing(counter: _Drain) -> Callable[[fasttun.Batch], None]:
    """Parses every packet's IPv4 header with struct (about 300 ns a packet of Python)."""
    unpack = _IPV4_HEADER.unpack_from

    def on_batch(batch: fasttun.Batch) -> None:
        for p in batch:
            unpack(p)
        counter.on_batch(batch)
    return on_batch


def prefill_count(settings: Settings) -> int:
    if settings.smoke:
        return 20_000
    # The kernel cannot resize an attached TUN queue past 2**19 entries (a 4 MiB pointer ring).
    return int(min(500_000, max(100_000, settings.seconds * 250_000)))


class _RxBase(Described, needs_root=True, key="pps"):

    def __init__(self) -> None:
        self.ns = ""

    def _send(self, settings: Settings, count: int, seconds: float) -> dict[str, float]:
        sender = settings.baselines.path("ftb_sendmmsg")
        proc = run([str(sender), "-n", netns_path(self.ns), "-d", TARGET, "-s", str(settings.size),
                    "-c", str(count), "-t", str(seconds)], timeout=seconds + 30)
        return json_line(proc.stdout, "ftb_sendmmsg")

    def _sender_missing(self, settings: Settings) -> Optional[str]:
        why = settings.baselines.missing("ftb_sendmmsg")
        return None if why is None else f"the C sender is needed: {why}"


class RxScenario(_RxBase, name="rx",
                 summary="TUN device, prefilled queue drained: reader with a Python callback vs a C read() loop"):

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        self.ns = stack.enter_context(namespace("rx"))
        self.count = prefill_count(settings)
        no_sender = self._sender_missing(settings)
        c_missing = no_sender or settings.baselines.missing("ftb_read_loop")
        return [
            Variant(f"fasttun reader, Python callback, batch {settings.batch}", lambda: self._fasttun(settings),
                    missing=no_sender),
            Variant(f"fasttun reader, for p in batch: p[0], batch {PER_PACKET_BATCH}",
                    lambda: self._fasttun(settings, PER_PACKET_BATCH, _touching), missing=no_sender),
            Variant(f"fasttun reader, for p in batch: p[0], batch {PER_PACKET_BATCH}, pipeline 2",
                    lambda: self._fasttun(settings, PER_PACKET_BATCH, _touching, pipeline=2), missing=no_sender),
            # Heavier per-packet Python (about 300 ns a packet): where overlapping it with the reads can pay.
            Variant(f"fasttun reader, IPv4 header parsed per packet, batch {PER_PACKET_BATCH}",
                    lambda: self._fasttun(settings, PER_PACKET_BATCH, _parsing), missing=no_sender),
            Variant(f"fasttun reader, IPv4 header parsed per packet, batch {PER_PACKET_BATCH}, pipeline 2",
                    lambda: self._fasttun(settings, PER_PACKET_BATCH, _parsing, pipeline=2), missing=no_sender),
            Variant(f"fasttun.aio.batches, event loop (no thread), batch {settings.batch}",
                    lambda: self._aio(settings), missing=no_sender),
            Variant("C loop, one read() per packet", lambda: self._c_loop(settings), baseline=True,
                    missing=c_missing),
            # The ceiling of any reader that reads on one CPU while another is busy (the pipelined rows): what
            # a second busy CPU costs the reading one on this machine, with no Python at all.
            Variant("C loop, one read() per packet, beside a busy thread", lambda: self._c_loop(settings, True),
                    missing=c_missing),
            Variant("python-pytun read() loop", lambda: self._pytun(settings),
                    missing=no_sender or pytun_missing()),
        ]

    def _prefill(self, settings: Settings) -> int:
        """Fills the device's queue; returns how many packets wait in it."""
        before = link_stats(self.ns, "ftbrx0")
        sent = int(self._send(settings, self.count, 60.0)["sent"])
        after = link_stats(self.ns, "ftbrx0")
        queued = sent - (after["tx_dropped"] - before["tx_dropped"])
        if queued <= 0:
            raise RuntimeError(f"the sender sent {sent} packets and none was queued on the device")
        return queued

    def _result(self, packets: int, nbytes: int, seconds: float, queued: int) -> Sample:
        if packets <= 0 or seconds <= 0:
            raise RuntimeError(f"drained {packets} of {queued} queued packets")
        return Sample(pps=packets / seconds, gbps=nbytes * 8 / seconds / 1e9,
                      extra={"drained_pct": 100.0 * packets / queued})

    def _fasttun(self, settings: Settings, batch: int = 0,
                 per_packet: Optional[Callable[[_Drain], Callable[[fasttun.Batch], None]]] = None,
                 pipeline: int = 0) -> Sample:
        with devices.fasttun_device(self.ns, "ftbrx0", ADDRESS, txqueuelen=self.count + 1024) as tun:
            queued = self._prefill(settings)
            counter = _Drain(queued)
            callback = per_packet(counter) if per_packet is not None else counter.on_batch
            t0 = time.perf_counter()
            with tun.start_reader(callback, batch_size=batch or settings.batch, pipeline=pipeline):
                counter.wait(IDLE, time.monotonic() + 60)
            return self._result(counter.packets, counter.bytes, counter.last - t0, queued)

    def _aio(self, settings: Settings) -> Sample:
        with devices.fasttun_device(self.ns, "ftbrx0", ADDRESS, txqueuelen=self.count + 1024) as tun:
            queued = self._prefill(settings)
            counter = devices.Counter()
            t0 = time.perf_counter()
            asyncio.run(_drain_async(tun, counter, queued, settings.batch))
            return self._result(counter.packets, counter.bytes, counter.last - t0, queued)

    def _c_loop(self, settings: Settings, beside_busy: bool = False) -> Sample:
        loop = settings.baselines.path("ftb_read_loop")
        with devices.fasttun_device(self.ns, "ftbrx0", ADDRESS, txqueuelen=self.count + 1024) as tun:
            queued = self._prefill(settings)
            fd = tun.fileno()
            busy = ["-b"] if beside_busy else []
            with Child([str(loop), "-f", str(fd), "-c", str(queued), "-i", str(int(IDLE * 1000)), "-t", "60",
                        *busy], pass_fds=(fd,)) as child:
                out, _ = child.finish(timeout=90)
            r = json_line(out, "ftb_read_loop")
            return self._result(int(r["packets"]), int(r["bytes"]), float(r["seconds"]), queued)

    def _pytun(self, settings: Settings) -> Sample:
        dev = devices.pytun_device(self.ns, "ftbrx0", ADDRESS, txqueuelen=self.count + 1024)
        try:
            queued = self._prefill(settings)
            t0 = time.perf_counter()
            c = devices.pytun_drain(dev, queued, IDLE, time.monotonic() + 60)
            return self._result(c.packets, c.bytes, c.last - t0, queued)
        finally:
            dev.close()


async def _drain_async(tun: fasttun.Tun, counter: devices.Counter, expected: int, batch_size: int) -> None:
    """Counts batches from ``async for`` until ``expected`` packets, or IDLE seconds without one."""
    async with aio.batches(tun, batch_size=batch_size) as stream:
        while counter.packets < expected:
            try:
                batch = await asyncio.wait_for(stream.__anext__(), IDLE)
            except (asyncio.TimeoutError, StopAsyncIteration):
                return
            counter.on_batch(batch)


class RxLiveScenario(_RxBase, name="rx-live",
                     summary="TUN device, sender and reader at once: packets/s received and kernel drops"):

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        self.ns = stack.enter_context(namespace("rxl"))
        no_sender = self._sender_missing(settings)
        return [
            Variant(f"fasttun reader, Python callback, batch {settings.batch}", lambda: self._fasttun(settings),
                    missing=no_sender),
            Variant("C loop, one read() per packet", lambda: self._c_loop(settings), baseline=True,
                    missing=no_sender or settings.baselines.missing("ftb_read_loop")),
            Variant("python-pytun read() loop", lambda: self._pytun(settings),
                    missing=no_sender or pytun_missing()),
        ]

    def _blast(self, settings: Settings) -> Child:
        sender = settings.baselines.path("ftb_sendmmsg")
        cpus = cpu_pair()
        pin = [] if cpus is None else ["-a", str(cpus[1])]
        return Child([str(sender), "-n", netns_path(self.ns), "-d", TARGET, "-s", str(settings.size),
                      "-c", str(10**15), "-t", str(settings.seconds), *pin])

    @staticmethod
    def _reader_cpu() -> Optional[int]:
        cpus = cpu_pair()
        return None if cpus is None else cpus[0]

    def _result(self, received: int, nbytes: int, sender: Child, before: dict[str, int]) -> Sample:
        out, _ = sender.finish(timeout=30.0)
        sent = json_line(out, "ftb_sendmmsg")
        seconds = float(sent["seconds"])
        drops = link_stats(self.ns, "ftbrx0")["tx_dropped"] - before["tx_dropped"]
        if received <= 0 or seconds <= 0:
            raise RuntimeError(f"received {received} packets")
        offered = float(sent["sent"])
        return Sample(pps=received / seconds, gbps=nbytes * 8 / seconds / 1e9,
                      extra={"offered_pps": offered / seconds, "kernel_drops": float(drops),
                             "drop_pct": 100.0 * drops / offered if offered else 0.0})

    def _fasttun(self, settings: Settings) -> Sample:
        with devices.fasttun_device(self.ns, "ftbrx0", ADDRESS, txqueuelen=LIVE_QUEUE) as tun:
            before = link_stats(self.ns, "ftbrx0")
            counter = devices.Counter()
            with pinned(self._reader_cpu()):
                reader = tun.start_reader(counter.on_batch, batch_size=settings.batch)
            with reader, self._blast(settings) as sender:
                sender.proc.wait(timeout=settings.seconds + 30)
                devices.wait_drained(counter, 1 << 62, IDLE, time.monotonic() + 10)
                return self._result(counter.packets, counter.bytes, sender, before)

    def _c_loop(self, settings: Settings) -> Sample:
        loop = settings.baselines.path("ftb_read_loop")
        with devices.fasttun_device(self.ns, "ftbrx0", ADDRESS, txqueuelen=LIVE_QUEUE) as tun:
            before = link_stats(self.ns, "ftbrx0")
            fd = tun.fileno()
            cpu = self._reader_cpu()
            pin = [] if cpu is None else ["-a", str(cpu)]
            with Child([str(loop), "-f", str(fd), "-i", str(int(IDLE * 1000)), "-t", str(settings.seconds + 20),
                        *pin], pass_fds=(fd,)) as reader:
                with self._blast(settings) as sender:
                    out, _ = reader.finish(timeout=settings.seconds + 30)
                    r = json_line(out, "ftb_read_loop")
                    return self._result(int(r["packets"]), int(r["bytes"]), sender, before)

    def _pytun(self, settings: Settings) -> Sample:
        dev = devices.pytun_device(self.ns, "ftbrx0", ADDRESS, txqueuelen=LIVE_QUEUE)
        try:
            before = link_stats(self.ns, "ftbrx0")
            with self._blast(settings) as sender, pinned(self._reader_cpu()):
                c = devices.pytun_drain(dev, 1 << 62, IDLE, time.monotonic() + settings.seconds + 20)
                return self._result(c.packets, c.bytes, sender, before)
        finally:
            dev.close()
