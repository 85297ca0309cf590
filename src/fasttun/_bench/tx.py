"""tx: sending into a real TUN device. The packets (IPv4/UDP) are addressed to a sink socket inside the
namespace that nobody reads (once its buffer is full the kernel drops them and counts it), so each write
runs the namespace's receive path and ends there. fasttun's send_batch from Python versus a C loop of one
write() per packet (the baseline) and python-pytun's write() in a Python loop."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import fasttun
from fasttun import _netns
from fasttun._bench import devices
from fasttun._bench.packets import udp4
from fasttun._bench.results import Sample
from fasttun._bench.scenario import Described, Settings, Variant, pytun_missing
from fasttun._bench.system import Child, json_line, namespace, netns_path, udp_counters

ADDRESS = "10.201.2.1/24"
LOCAL = "10.201.2.1"
PEER = "10.201.2.2"
PORT = 9000


class TxScenario(Described, name="tx", needs_root=True, key="pps",
                 summary="TUN device, packets/s written: send_batch vs a C write() loop"):

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        self.ns = stack.enter_context(namespace("tx"))
        with _netns.entered(netns_path(self.ns)):
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stack.callback(sink.close)
        sink.bind(("0.0.0.0", PORT))  # the namespace is ours; the device and its address come per run
        self.packet = udp4(PEER, LOCAL, settings.size, dport=PORT)
        return [
            Variant(f"fasttun send_batch(Batch of {settings.batch})", lambda: self._fasttun(settings, True)),
            Variant(f"fasttun send_batch(list of {settings.batch} bytes)", lambda: self._fasttun(settings, False)),
            Variant("C loop, one write() per packet", lambda: self._c_loop(settings), baseline=True,
                    missing=settings.baselines.missing("ftb_write_loop")),
            Variant("python-pytun write() loop", lambda: self._pytun(settings), missing=pytun_missing()),
        ]

    def _delivered(self) -> int:
        with _netns.entered(netns_path(self.ns)):
            c = udp_counters()
        return c["InDatagrams"] + c["RcvbufErrors"]

    def _measure(self, settings: Settings, send: Callable[[], tuple[int, float]]) -> Sample:
        before = self._delivered()
        sent, seconds = send()
        delivered = self._delivered() - before
        if sent <= 0 or seconds <= 0:
            raise RuntimeError(f"sent {sent} packets in {seconds:.3f} s")
        return Sample(pps=sent / seconds, gbps=sent * settings.size * 8 / seconds / 1e9,
                      extra={"delivered_pct": 100.0 * delivered / sent})

    def _fasttun(self, settings: Settings, prepared: bool) -> Sample:
        packets: Any = [self.packet] * settings.batch
        if prepared:
            packets = fasttun.make_batch(packets)
        with devices.fasttun_device(self.ns, "ftbtx0", ADDRESS) as tun:
            def send() -> tuple[int, float]:
                sent = 0
                send_batch = tun.send_batch
                t0 = time.perf_counter()
                end = t0 + settings.seconds
                now = t0
                while now < end:
                    sent += send_batch(packets)
                    now = time.perf_counter()
                return sent, now - t0
            return self._measure(settings, send)

    def _c_loop(self, settings: Settings) -> Sample:
        loop = settings.baselines.path("ftb_write_loop")
        with devices.fasttun_device(self.ns, "ftbtx0", ADDRESS) as tun:
            fd = tun.fileno()

            def send() -> tuple[int, float]:
                with Child([str(loop), "-f", str(fd), "-S", PEER, "-D", LOCAL, "-P", str(PORT),
                            "-s", str(settings.size), "-t", str(settings.seconds)], pass_fds=(fd,)) as child:
                    out, _ = child.finish(timeout=settings.seconds + 30)
                r = json_line(out, "ftb_write_loop")
                return int(r["packets"]), float(r["seconds"])
            return self._measure(settings, send)

    def _pytun(self, settings: Settings) -> Sample:
        dev = devices.pytun_device(self.ns, "ftbtx0", ADDRESS)
        try:
            def send() -> tuple[int, float]:
                sent = 0
                write = dev.write
                packet = self.packet
                t0 = time.perf_counter()
                end = t0 + settings.seconds
                now = t0
                while now < end:
                    for _ in range(256):
                        write(packet)
                    sent += 256
                    now = time.perf_counter()
                return sent, now - t0
            return self._measure(settings, send)
        finally:
            dev.close()
