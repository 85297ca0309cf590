"""forward: iperf3 TCP between two namespaces through a forwarder in this process. Namespace A (client) has
a TUN device and a route to B's subnet through it; namespace B (server) the same the other way. The forwarder
moves every packet read from one device into the other: fasttun (a reader per device whose callback is
send_batch into the other), a C per-packet loop (the baseline), python-pytun (two Python threads). fasttun runs
without offload (every TCP segment one packet, like the baselines) and with it: "segments" (super-packets split
for Python and coalesced again on send) and "super" (super-packets passed through whole). packets/s counts what
the forwarder moved: super-packets count once, so compare Gbit/s."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import select
import threading
import time
from typing import Any

from fasttun._bench import devices
from fasttun._bench.results import Sample
from fasttun._bench.scenario import Described, Settings, Variant, pytun_missing
from fasttun._bench.system import Child, ip, json_line, namespace, run
from fasttun._host import tool

A_ADDRESS, A_NET = "10.201.4.1/24", "10.201.4.0/24"
B_ADDRESS, B_NET = "10.201.5.1/24", "10.201.5.0/24"
SERVER = "10.201.5.1"
PORT = 5201


class ForwardScenario(
        Described, name="forward", needs_root=True, key="gbps",
        summary="iperf3 TCP across a forwarder between two namespaces: fasttun vs a C per-packet forwarder"):
    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        self.a = stack.enter_context(namespace("fa"))
        self.b = stack.enter_context(namespace("fb"))
        self.seconds = max(1, math.ceil(settings.seconds))
        no_iperf = None if tool("iperf3") else "iperf3 is not installed (apt install iperf3)"
        return [
            Variant(f"fasttun readers + send_batch, batch {settings.batch}", lambda: self._fasttun(settings),
                    missing=no_iperf),
            Variant(f"fasttun offload, segments (split + coalesce), batch {settings.batch}",
                    lambda: self._fasttun(settings, "segments"), missing=no_iperf),
            Variant(f"fasttun offload, segments with remote checksums (no checksum in user space), batch "
                    f"{settings.batch}", lambda: self._fasttun(settings, "segments", remote_csum=True),
                    missing=no_iperf),
            Variant(f"fasttun offload, super-packets passed through, batch {settings.batch}",
                    lambda: self._fasttun(settings, "super"), missing=no_iperf),
            Variant(f"fasttun forwards in C (start_reader(device)), segments with remote checksums, batch "
                    f"{settings.batch}", lambda: self._fasttun(settings, "segments", remote_csum=True, in_c=True),
                    missing=no_iperf),
            Variant(f"fasttun forwards in C (start_reader(device)), super-packets passed through, batch "
                    f"{settings.batch}", lambda: self._fasttun(settings, "super", in_c=True), missing=no_iperf),
            Variant("C per-packet forwarder, read() + write()", lambda: self._c(settings), baseline=True,
                    missing=no_iperf or settings.baselines.missing("ftb_forward")),
            Variant("python-pytun forwarder, read() + write() in 2 threads", lambda: self._pytun(settings),
                    missing=no_iperf or pytun_missing()),
        ]

    def _routes(self, dev_a: str, dev_b: str) -> None:
        ip("-n", self.a, "route", "add", B_NET, "dev", dev_a)
        ip("-n", self.b, "route", "add", A_NET, "dev", dev_b)

    def _iperf(self) -> dict[str, Any]:
        exe = tool("ip")
        assert exe is not None
        with Child([exe, "netns", "exec", self.b, "iperf3", "-s", "-1", "-B", SERVER, "-p", str(PORT),
                    "--forceflush"]) as server:
            deadline = time.monotonic() + 10
            while "listening" not in server.readline(timeout=max(0.1, deadline - time.monotonic())).lower():
                if time.monotonic() >= deadline or server.proc.poll() is not None:
                    raise RuntimeError("the iperf3 server did not start")
            proc = run([exe, "netns", "exec", self.a, "iperf3", "-c", SERVER, "-p", str(PORT), "-t",
                        str(self.seconds), "-J", "--connect-timeout", "3000"], timeout=self.seconds + 30,
                       check=False)
        result = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        if "error" in result or "end" not in result:
            raise RuntimeError(f"iperf3 failed: {result.get('error') or proc.stderr.strip()[-300:]}")
        end = result["end"]
        return {"bps": float(end["sum_received"]["bits_per_second"]),
                "seconds": float(end["sum_received"]["seconds"]),
                "retransmits": float(end["sum_sent"].get("retransmits", 0))}

    def _sample(self, forwarded: int, iperf: dict[str, Any]) -> Sample:
        if forwarded <= 0 or iperf["bps"] <= 0:
            raise RuntimeError(f"forwarded {forwarded} packets, iperf3 measured {iperf['bps']:.0f} bit/s")
        return Sample(pps=forwarded / iperf["seconds"], gbps=iperf["bps"] / 1e9,
                      extra={"retransmits": iperf["retransmits"]})

    def _fasttun(self, settings: Settings, offload: str | None = None, remote_csum: bool = False,
                 in_c: bool = False) -> Sample:
        """Two readers, each sending its batches into the other device: by a Python callback (send_batch), or
        with in_c as forwards (start_reader(device)), no Python per batch."""
        with devices.fasttun_device(self.a, "ftbfa0", A_ADDRESS, offload=offload, remote_csum=remote_csum) as ta, \
                devices.fasttun_device(self.b, "ftbfb0", B_ADDRESS, offload=offload, remote_csum=remote_csum) as tb:
            self._routes("ftbfa0", "ftbfb0")
            with ta.start_reader(tb if in_c else tb.send_batch, batch_size=settings.batch) as ra, \
                    tb.start_reader(ta if in_c else ta.send_batch, batch_size=settings.batch) as rb:
                iperf = self._iperf()
                forwarded = ra.stats.packets + rb.stats.packets
            return self._sample(forwarded, iperf)

    def _c(self, settings: Settings) -> Sample:
        forwarder = settings.baselines.path("ftb_forward")
        with devices.fasttun_device(self.a, "ftbfa0", A_ADDRESS) as ta, \
                devices.fasttun_device(self.b, "ftbfb0", B_ADDRESS) as tb:
            self._routes("ftbfa0", "ftbfb0")
            fa, fb = ta.fileno(), tb.fileno()
            with Child([str(forwarder), "-a", str(fa), "-b", str(fb)], pass_fds=(fa, fb), stdin=True) as child:
                if child.readline(timeout=10).strip() != "ready":
                    raise RuntimeError("the C forwarder did not start")
                iperf = self._iperf()
                out, _ = child.finish(timeout=10)
            return self._sample(int(json_line(out, "ftb_forward")["packets"]), iperf)

    def _pytun(self, settings: Settings) -> Sample:
        da = devices.pytun_device(self.a, "ftbfa1", A_ADDRESS)
        try:
            db = devices.pytun_device(self.b, "ftbfb1", B_ADDRESS)
            try:
                self._routes("ftbfa1", "ftbfb1")
                stop = threading.Event()
                counts = [0, 0]
                errors: list[BaseException] = []
                threads = [threading.Thread(target=_pytun_pump, args=(src, dst, stop, counts, i, errors),
                                            name=f"ftb-pytun-{i}", daemon=True)
                           for i, (src, dst) in enumerate(((da, db), (db, da)))]
                for t in threads:
                    t.start()
                try:
                    iperf = self._iperf()
                finally:
                    stop.set()
                    for t in threads:
                        t.join(5)
                if errors:
                    raise errors[0]
                return self._sample(sum(counts), iperf)
            finally:
                db.close()
        finally:
            da.close()


def _pytun_pump(src: Any, dst: Any, stop: threading.Event, counts: list[int], i: int,
                errors: list[BaseException]) -> None:
    """What a python-pytun user writes: read a packet, write it to the other device (the fds are
    non-blocking so that the loop can end; select waits when there is nothing)."""
    import pytun

    read, write = src.read, dst.write
    n = 0
    try:
        while not stop.is_set():
            try:
                write(read(devices.PYTUN_READ))
                n += 1
            except pytun.Error as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                select.select([src], [], [], 0.1)
    except BaseException as exc:  # noqa: BLE001 - handed to the scenario
        errors.append(exc)
    finally:
        counts[i] = n
