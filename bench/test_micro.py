"""Micro-benchmarks of the pieces on fasttun's hot path (pytest-benchmark; no privileges needed):

    python -m pytest bench/ --benchmark-columns=median,iqr,ops --benchmark-sort=name

- batch hand-off: a reader thread delivering batches to a Python callback (per batch, and touching every packet
  of a reader's batch, `for p in batch` and `batch[i]`), and
  what a callback pays to look at the packets (Packet objects, struct.unpack_from, bytes(p), memoryview(p),
  lengths, copy);
- the ICMP echo responder's work per batch: echo_reply per packet against echo_replies per batch;
- send validation: send_batch of good packets (validated, then sent through an in-memory pair), of a batch
  whose last packet is bad (validated, nothing sent), and check_packet alone;
- a capture hook on the device (what pcap.tee attaches): a send and a receive without one and with one.

The numbers are per call of the benchmarked function; compare them within one run on one machine."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

import fasttun  # noqa: E402
from fasttun import _core  # noqa: E402
from fasttun._bench.packets import udp4  # noqa: E402

PACKET = udp4("10.201.0.1", "10.201.0.2", 64)
BAD = b"\x00" * 64   # version 0: refused by validation


def prefilled_pair(count: int) -> tuple[fasttun.Tun, fasttun.Tun]:
    a, b = fasttun.pair(capacity=max(count, 1), capacity_bytes=max(count * 96, 1 << 20))
    chunk = fasttun.make_batch([PACKET] * min(count, 4096))
    sent = 0
    while sent < count:
        sent += a.send_batch(chunk if count - sent >= len(chunk) else [PACKET] * (count - sent))
    return a, b


# ---- batch hand-off ---------------------------------------------------------------------------------------

def _bench_drain(benchmark: Any, batch_size: int, touch: Callable[[fasttun.Batch], Any] | None) -> None:
    """8192 queued packets drained by a reader in batches of batch_size, the callback `touch`ing each batch."""
    total = 8192

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        a, b = prefilled_pair(total)
        return (a, b), {}

    def drain(a: fasttun.Tun, b: fasttun.Tun) -> None:
        done = threading.Event()
        seen = [0]

        def on_batch(batch: fasttun.Batch) -> None:
            if touch is not None:
                touch(batch)
            seen[0] += len(batch)
            if seen[0] >= total:
                done.set()

        reader = b.start_reader(on_batch, batch_size=batch_size)
        assert done.wait(30)
        reader.stop()
        a.close()
        b.close()

    benchmark.pedantic(drain, setup=setup, rounds=15)
    benchmark.extra_info["batches"] = -(-total // batch_size)
    benchmark.extra_info["packets"] = total


@pytest.mark.parametrize("batch_size", [1, 64, 1024])
def test_reader_handoff(benchmark: Any, batch_size: int) -> None:
    """Reader thread -> GIL -> callback, for 8192 queued packets in batches of batch_size."""
    _bench_drain(benchmark, batch_size, None)


def _touch_every_packet(batch: fasttun.Batch) -> int:
    n = 0
    for p in batch:
        n += p[0]
    return n


def _index_every_packet(batch: fasttun.Batch) -> int:
    n = 0
    for i in range(len(batch)):
        n += batch[i][0]
    return n


@pytest.mark.parametrize(("batch_size", "touch"), [(64, _touch_every_packet), (1024, _touch_every_packet),
                                                   (1024, _index_every_packet)],
                         ids=["iterate-64", "iterate-1024", "index-1024"])
def test_reader_per_packet(benchmark: Any, batch_size: int, touch: Callable[[fasttun.Batch], int]) -> None:
    """Reader thread -> callback that looks at every packet (`for p in batch: p[0]`, or `batch[i][0]`), for
    8192 queued packets: the per-packet path of a reader's batches, whose Packet objects are reused."""
    _bench_drain(benchmark, batch_size, touch)


def _reader_batch(count: int, use: Callable[[fasttun.Batch], Any]) -> Callable[[], None]:
    """One batch of `count` packets taken from a reader callback (ephemeral, as users get it), then `use`d."""
    a, b = prefilled_pair(count)
    box: list[Any] = []
    got = threading.Event()

    def on_batch(batch: fasttun.Batch) -> None:
        box.append(batch.copy())
        got.set()
        b._readers[0].stop()  # one batch is all we need

    b.start_reader(on_batch, batch_size=count)
    got.wait(10)
    a.close()
    b.close()
    batch = fasttun.make_batch(box[0])
    return lambda: use(batch)


@pytest.mark.parametrize("count", [64, 1024])
def test_batch_iterate_views(benchmark: Any, count: int) -> None:
    """for p in batch: p[0] - one Packet object per packet."""
    def use(batch: fasttun.Batch) -> int:
        n = 0
        for p in batch:
            n += p[0]
        return n
    benchmark(_reader_batch(count, use))


@pytest.mark.parametrize("count", [64, 1024])
def test_batch_unpack_headers(benchmark: Any, count: int) -> None:
    """struct.unpack_from on every packet's IPv4 header (the buffer protocol, per packet)."""
    header = struct.Struct("!BBHHHBBH4s4s")

    def use(batch: fasttun.Batch) -> int:
        n = 0
        for p in batch:
            n += header.unpack_from(p)[2]
        return n
    benchmark(_reader_batch(count, use))


@pytest.mark.parametrize("count", [64, 1024])
def test_batch_bytes_per_packet(benchmark: Any, count: int) -> None:
    """[bytes(p) for p in batch] - a copy of every packet, one at a time."""
    benchmark(_reader_batch(count, lambda batch: [bytes(p) for p in batch]))


@pytest.mark.parametrize("count", [64, 1024])
def test_batch_memoryview_per_packet(benchmark: Any, count: int) -> None:
    """memoryview(p) of every packet (a buffer export each, counted so the arena is never reused under it)."""
    def use(batch: fasttun.Batch) -> int:
        n = 0
        for p in batch:
            with memoryview(p) as v:
                n += v[0]
        return n
    benchmark(_reader_batch(count, use))


@pytest.mark.parametrize("count", [64, 1024])
def test_batch_sum_lengths(benchmark: Any, count: int) -> None:
    """sum(batch.lengths) - one pass over the lengths table."""
    benchmark(_reader_batch(count, lambda batch: sum(batch.lengths)))


@pytest.mark.parametrize("count", [64, 1024])
def test_batch_copy(benchmark: Any, count: int) -> None:
    """batch.copy() - one bytes object per packet."""
    benchmark(_reader_batch(count, lambda batch: batch.copy()))


def _echo_request(seq: int) -> bytes:
    """An ICMPv4 echo request with ping's default 56-byte payload (84 bytes)."""
    from fasttun.icmp import checksum
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + bytes(56)
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), seq, 0, 64, 1, 0,
                         bytes([10, 201, 3, 2]), bytes([10, 201, 3, 1]))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


@pytest.mark.parametrize("count", [1, 64])
@pytest.mark.parametrize("how", ["echo_reply per packet", "echo_replies per batch"])
def test_icmp_responder(benchmark: Any, count: int, how: str) -> None:
    """What an echo responder's callback pays for the replies of a batch of echo requests (sent through a pair,
    as a reader callback sends them with send_batch, and drained)."""
    from fasttun import icmp
    batch = fasttun.make_batch([_echo_request(i) for i in range(count)])
    a, b = fasttun.pair(capacity=1024, capacity_bytes=1 << 20)

    def per_packet() -> None:
        replies = [r for r in map(icmp.echo_reply, batch) if r is not None]
        if replies:
            a.send_batch(replies)
        b.recv_batch(count, timeout=0)

    def per_batch() -> None:
        replies = icmp.echo_replies(batch)
        if replies is not None:
            a.send_batch(replies)
        b.recv_batch(count, timeout=0)

    benchmark(per_packet if how.startswith("echo_reply ") else per_batch)
    assert a.stats.tx_packets > 0 and b.stats.rx_packets == a.stats.tx_packets
    a.close()
    b.close()


# ---- send validation ---------------------------------------------------------------------------------------

def test_check_packet(benchmark: Any) -> None:
    benchmark(_core.check_packet, PACKET)


@pytest.mark.parametrize(("kind", "tap"), [("list", False), ("Batch", False), ("Batch", True)],
                         ids=["list", "Batch", "Batch with a capture tap"])
def test_send_batch_64_through_pair(benchmark: Any, kind: str, tap: bool) -> None:
    """send_batch of 64 good packets (validated and copied into the pair), then drained with recv_batch; with a
    capture hook on both devices (what pcap.tee attaches, here one that does nothing): its cost, one Python call
    per batch and direction, against the one test per call it costs when absent."""
    a, b = fasttun.pair(capacity=1024, capacity_bytes=1 << 20)
    packets: Any = [PACKET] * 64 if kind == "list" else fasttun.make_batch([PACKET] * 64)
    if tap:
        a._set_tap(lambda packets, direction: None)
        b._set_tap(lambda packets, direction: None)

    def round_trip() -> None:
        a.send_batch(packets)
        b.recv_batch(64, timeout=0)

    benchmark(round_trip)
    a.close()
    b.close()


@pytest.mark.parametrize("kind", ["list", "Batch"])
def test_send_batch_64_refused(benchmark: Any, kind: str) -> None:
    """send_batch of 63 good packets and a bad last one: all validated, nothing sent, ValueError."""
    a, b = fasttun.pair()
    packets: Any = [PACKET] * 63 + [BAD]
    if kind == "Batch":
        packets = fasttun.make_batch(packets)

    def refused() -> None:
        try:
            a.send_batch(packets)
        except ValueError:
            return
        raise AssertionError("a bad packet was accepted")

    benchmark(refused)
    a.close()
    b.close()
