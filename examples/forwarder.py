"""A packet forwarder between two TUN devices, in a few lines of Python.

Every packet the kernel routes into device A is read by A's reader thread and written into device B, where the
kernel receives it as if it had come off a wire; and the other way round. The whole forwarder is two readers
whose callbacks are ``other.send_batch(batch)``: fasttun reads and writes in C and Python pays per batch.

    # two namespaces, each with a device, addresses and a route to the other's subnet through its device:
    ip netns add left && ip netns add right
    python examples/forwarder.py fwa0 fwb0 --netns-a left --netns-b right \\
        --address-a 10.210.1.1/24 --route-a 10.210.2.0/24 \\
        --address-b 10.210.2.1/24 --route-b 10.210.1.0/24 --duration 30
    # meanwhile: ip netns exec right iperf3 -s   and   ip netns exec left iperf3 -c 10.210.2.1

With ``--offload segments`` or ``--offload super`` the devices are opened with the kernel's TUN offloads
(virtio-net header, checksum/TSO/USO): "segments" hands you ordinary packets (super-packets split in C),
"super" hands you the kernel's super-packets whole and writes them to the other device untouched. With
``--offload segments --remote-csum`` the checksums the kernel left partial stay so across the forwarder (each
such packet behind a 4-byte header, see ``Tun(remote_csum=True)``): no checksum is computed in user space.

With ``--in-c`` each reader is a *forward* (``a.start_reader(b)``): its batches go into the other device in C,
with no Python and no GIL per batch; the counters then come from the readers' and devices' stats.

As a module: ``forward(a, b)`` starts the two readers and returns a :class:`Forwarder` (``stop()``, ``report()``,
usable as a context manager); ``open_device()`` opens a device, in another network namespace if asked, with the
offload mode of your choice."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import fasttun

log = logging.getLogger("forwarder")

OFFLOAD_MODES = ("off", "segments", "super")


@contextlib.contextmanager
def _namespace(netns: str | None) -> Iterator[None]:
    if netns is None:
        yield
        return
    from fasttun import _netns

    path = netns if "/" in netns else f"/run/netns/{netns}"
    with _netns.entered(path):
        yield


def open_device(name: str | None, *, offload: str = "off", netns: str | None = None,
                addresses: Iterable[str] = (), routes: Iterable[str] = (), **options: Any) -> fasttun.Tun:
    """Opens a TUN device, up, with its addresses and routes through it.

    ``offload``: "off", "segments" or "super" (see the module's docstring). ``netns``: a namespace name (as in
    ``ip netns``) or path to create the device in; the device's fd keeps working from anywhere afterwards, but
    its configuration (addresses, routes, ``stats``'s OS counters) is done through rtnetlink of the calling
    thread's namespace, so do that inside :func:`inside` the same namespace. Other ``options`` go to
    ``fasttun.Tun`` (``mtu``, ``txqueuelen``, ...)."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, not {offload!r}")
    if offload != "off":
        options.update(offload=True, offload_mode=offload)
    with _namespace(netns):
        tun = fasttun.Tun(name, addresses=list(addresses), up=True, **options)
        try:
            for route in routes:
                tun.add_route(route)
        except BaseException:
            tun.close()
            raise
    return tun


inside = _namespace
"""``with inside("left"): ...`` runs the block in that network namespace (None: where we are)."""


@dataclasses.dataclass
class Direction:
    """What one direction of the forwarder did."""

    source: str
    destination: str
    batches: int = 0
    packets: int = 0
    """Packets read from the source."""
    sent: int = 0
    """Packets the destination took."""
    dropped: int = 0
    """Packets the destination could not take (its queue was full; also in its ``stats.tx_dropped_full``)."""
    rejected: int = 0
    """Packets the destination refused as invalid (e.g. larger than its MTU); also in ``stats.tx_rejected``."""
    largest: int = 0
    """The largest packet read (only with ``track_largest``): above the MTU only for offload "super"."""


class Forwarder:
    """Two readers: whatever ``a`` reads goes into ``b`` and whatever ``b`` reads goes into ``a``."""

    def __init__(self, a: fasttun.Tun, b: fasttun.Tun, batch_size: int = 64, *, track_largest: bool = False,
                 in_c: bool = False, **reader_options: Any) -> None:
        if in_c and track_largest:
            raise ValueError("track_largest needs the Python pumps: a forward in C never shows Python a packet")
        self.a, self.b = a, b
        self.in_c = in_c
        self.a_to_b = Direction(a.name, b.name)
        self.b_to_a = Direction(b.name, a.name)
        self.started = time.monotonic()
        self.stopped: float | None = None
        # Forwards in C: what the destinations took, refused and dropped is in their stats, counted from here.
        self._base = {id(t): t.stats for t in (a, b)} if in_c else {}
        pump_a: Any = b if in_c else self._pump(b, self.a_to_b, track_largest)
        pump_b: Any = a if in_c else self._pump(a, self.b_to_a, track_largest)
        self._readers = [a.start_reader(pump_a, batch_size, **reader_options)]
        try:
            self._readers.append(b.start_reader(pump_b, batch_size, **reader_options))
        except BaseException:
            self._readers[0].stop()
            raise

    @staticmethod
    def _pump(destination: fasttun.Tun, counts: Direction,
              track_largest: bool) -> Callable[[fasttun.Batch], None]:
        send_batch, send = destination.send_batch, destination.send

        def on_batch(batch: fasttun.Batch) -> None:
            try:
                sent = send_batch(batch)
            except ValueError:
                # One packet the destination refuses (send_batch validates all before sending any): send the
                # others one by one, so that one bad packet costs one packet and not the batch.
                sent = 0
                for packet in batch:
                    try:
                        sent += send(packet)
                    except ValueError as exc:
                        counts.rejected += 1
                        log.debug("%s refused a packet: %s", destination.name, exc)
            if track_largest:
                counts.largest = max(counts.largest, max(batch.lengths))
            counts.batches += 1
            counts.packets += len(batch)
            counts.sent += sent
            counts.dropped = counts.packets - counts.sent - counts.rejected

        return on_batch

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def readers(self) -> tuple[fasttun.Reader, fasttun.Reader]:
        """The reader of ``a`` and the reader of ``b`` (their ``stats`` count packets and bytes read)."""
        return self._readers[0], self._readers[1]

    @property
    def running(self) -> bool:
        return all(r.running for r in self._readers)

    def stop(self, timeout: float = 5.0) -> None:
        """Stops both readers; raises what ended one of them early (a callback's exception, a device error)."""
        if self.stopped is None:
            self.stopped = time.monotonic()
        errors = []
        for reader in self._readers:
            try:
                reader.stop(timeout)
            except Exception as exc:  # noqa: BLE001 - stop the other reader too, then raise
                errors.append(exc)
        if errors:
            raise errors[0]

    def report(self) -> dict[str, Any]:
        """Counters of both directions and readers, plus the elapsed time and the rate."""
        seconds = (self.stopped or time.monotonic()) - self.started
        ra, rb = self.readers
        out: dict[str, Any] = {"seconds": seconds}
        for key, direction, reader in (("a_to_b", self.a_to_b, ra), ("b_to_a", self.b_to_a, rb)):
            stats = reader.stats
            if self.in_c:
                self._count_from_stats(direction, stats, self.b if direction is self.a_to_b else self.a)
            out[key] = dict(dataclasses.asdict(direction), bytes=stats.bytes,
                            gbps=stats.bytes * 8 / seconds / 1e9 if seconds > 0 else 0.0,
                            pps=stats.packets / seconds if seconds > 0 else 0.0,
                            mean_batch=stats.packets / stats.batches if stats.batches else 0.0,
                            mean_packet=stats.bytes / stats.packets if stats.packets else 0.0)
        return out

    def _count_from_stats(self, direction: Direction, read: fasttun.ReaderStats, destination: fasttun.Tun) -> None:
        """A direction's counters, for forwards in C: from its reader's stats and its destination's."""
        now, base = destination.stats, self._base[id(destination)]
        direction.batches, direction.packets = read.batches, read.packets
        direction.rejected = now.tx_rejected - base.tx_rejected
        direction.dropped = now.tx_dropped_full - base.tx_dropped_full + read.undelivered
        direction.sent = read.packets - direction.rejected - direction.dropped


def forward(a: fasttun.Tun, b: fasttun.Tun, batch_size: int = 64, *, track_largest: bool = False,
            in_c: bool = False, **reader_options: Any) -> Forwarder:
    """Starts forwarding between ``a`` and ``b`` (both directions) until ``stop()``. ``track_largest``: record
    the largest packet of each direction (costs a little per batch). ``in_c``: forwards in C instead of Python
    callbacks (no Python per batch). ``reader_options`` go to ``Tun.start_reader`` (``spin_us``, ``adaptive``,
    ...)."""
    return Forwarder(a, b, batch_size, track_largest=track_largest, in_c=in_c, **reader_options)


def forward_for(a: fasttun.Tun, b: fasttun.Tun, seconds: float | None, batch_size: int = 64,
                stop: threading.Event | None = None, in_c: bool = False) -> dict[str, Any]:
    """Forwards for ``seconds`` (None: until ``stop`` is set, or Ctrl-C) and returns :meth:`Forwarder.report`:
    what a benchmark calls around its traffic."""
    stop = stop or threading.Event()
    with forward(a, b, batch_size, in_c=in_c) as forwarder:
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while not stop.is_set() and forwarder.running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                stop.wait(0.2 if left is None else min(0.2, left))
        except KeyboardInterrupt:
            pass
    return forwarder.report()


def describe(direction: dict[str, Any]) -> str:
    """One line about one direction of a :meth:`Forwarder.report`."""
    d = direction
    return (f"{d['source']} -> {d['destination']}: {d['packets']} packets in {d['batches']} batches, "
            f"{d['sent']} sent, {d['dropped']} dropped (queue full), {d['rejected']} rejected; "
            f"{d['gbps']:.2f} Gbit/s, {d['pps']:.0f} packets/s, {d['mean_batch']:.1f} packets/batch, "
            f"{d['mean_packet']:.0f} bytes/packet")


def _device_stats(tun: fasttun.Tun, netns: str | None) -> str:
    with _namespace(netns):
        s = tun.stats
    return (f"{tun.name}: rx {s.rx_packets} packets / {s.rx_bytes} bytes, tx {s.tx_packets} packets / "
            f"{s.tx_bytes} bytes, drops {s.drops} (queue full {s.tx_dropped_full}, OS rx {s.rx_dropped_os}, "
            f"OS tx {s.tx_dropped_os}), rejected {s.tx_rejected}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward packets between two TUN devices with fasttun.")
    parser.add_argument("a", help="name of device A (created if missing)")
    parser.add_argument("b", help="name of device B (created if missing)")
    parser.add_argument("--offload", choices=OFFLOAD_MODES, default="off",
                        help="off: plain packets; segments: offload on, ordinary packets in Python; "
                             "super: offload on, super-packets forwarded whole (default: off)")
    parser.add_argument("--remote-csum", action="store_true",
                        help="with --offload segments: the checksums the kernel left partial cross the forwarder "
                             "partial (behind a 4-byte header) and the other device's kernel finishes them, so the "
                             "forwarder computes none")
    parser.add_argument("--batch", type=int, default=64, metavar="N", help="packets per batch (default 64)")
    parser.add_argument("--in-c", action="store_true",
                        help="forward in C (a.start_reader(b)): no Python per batch; the counters come from the "
                             "readers' and devices' stats")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--mtu", type=int, default=None, help="MTU of both devices")
    parser.add_argument("--txqueuelen", type=int, default=10000, help="kernel queue of both devices")
    for side in ("a", "b"):
        parser.add_argument(f"--netns-{side}", default=None, metavar="NS",
                            help=f"create device {side.upper()} in this network namespace (ip netns name)")
        parser.add_argument(f"--address-{side}", action="append", default=[], metavar="CIDR",
                            help=f"an address of device {side.upper()} (repeatable)")
        parser.add_argument(f"--route-{side}", action="append", default=[], metavar="CIDR",
                            help=f"a route through device {side.upper()} (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    options: dict[str, Any] = {"txqueuelen": args.txqueuelen}
    if args.remote_csum:
        if args.offload != "segments":
            parser.error("--remote-csum goes with --offload segments")
        options["remote_csum"] = True
    if args.mtu:
        options["mtu"] = args.mtu
    try:
        a = open_device(args.a, offload=args.offload, netns=args.netns_a, addresses=args.address_a,
                        routes=args.route_a, **options)
    except (NotImplementedError, fasttun.TunError, ValueError) as exc:
        parser.exit(1, f"forwarder: {exc}\n")
    try:
        try:
            b = open_device(args.b, offload=args.offload, netns=args.netns_b, addresses=args.address_b,
                            routes=args.route_b, **options)
        except (NotImplementedError, fasttun.TunError, ValueError) as exc:
            parser.exit(1, f"forwarder: {exc}\n")
        with b:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            print(f"forwarding {a.name} <-> {b.name} (offload {args.offload}, batch {args.batch})"
                  + ("" if args.duration else "; Ctrl-C stops"), flush=True)
            report = forward_for(a, b, args.duration, args.batch, stop, args.in_c)
            print(f"{report['seconds']:.1f} s")
            for key in ("a_to_b", "b_to_a"):
                print("  " + describe(report[key]))
            print("  " + _device_stats(a, args.netns_a))
            print("  " + _device_stats(b, args.netns_b))
    finally:
        a.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
