"""Forwards: start_reader(device) sends every batch to another device or UDP endpoint in C, without Python or
the GIL per batch. No privileges needed (pairs and UDP endpoints on 127.0.0.1)."""

from __future__ import annotations

import gc
import io
import logging
import os
import socket
import threading
import time

import pytest

import fasttun
from fasttun import pcap
from packets import minimal_ipv4, seq_of
from test_lifecycle import assert_ok, run_child

N = 5000


def drain(dev: fasttun.Tun, n: int, limit: float = 10.0) -> list[bytes]:
    """Up to n packets from dev, within limit seconds."""
    got: list[bytes] = []
    deadline = time.monotonic() + limit
    while len(got) < n and time.monotonic() < deadline:
        got.extend(bytes(p) for p in dev.recv_batch(256, timeout=0.2))
    return got


def where(ep: fasttun.UdpEndpoint) -> tuple[str, int]:
    """The endpoint's local address (its name is "udp:HOST:PORT")."""
    host, port = ep.name[len("udp:"):].rsplit(":", 1)
    return host, int(port)


def settle(pred, limit: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(pred())


@pytest.fixture
def chain():
    """a -> b, then c -> d: a reader on b forwarding into c makes d receive what a sends."""
    a, b = fasttun.pair(capacity=4096)
    c, d = fasttun.pair(capacity=4096)
    yield a, b, c, d
    for dev in (a, b, c, d):
        dev.close()


@pytest.fixture
def udp_into_pair():
    """A UDP endpoint on 127.0.0.1 (big receive buffer), a plain socket to send to it, and a pair c -> d: a reader
    on the endpoint forwarding into c makes d receive the datagrams."""
    c, d = fasttun.pair(capacity=4096)
    ep = fasttun.UdpEndpoint(bind=("127.0.0.1", 0), rcvbuf=4 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield ep, tx, c, d
    tx.close()
    for dev in (ep, c, d):
        dev.close()


@pytest.mark.parametrize("pipeline", [0, 2])
def test_a_forward_delivers_every_packet_in_order_without_python(chain, pipeline):
    a, b, c, d = chain
    reader = b.start_reader(c, 32, pipeline=pipeline)
    assert "forwarding to" in repr(reader)
    assert not any(q.diverted for q in reader._queues)   # the C path: no GIL per batch
    sent = 0
    for first in range(0, N, 100):
        sent += a.send_batch([minimal_ipv4(60 + (i % 900), i) for i in range(first, first + 100)], on_full="wait")
    got = drain(d, N)
    assert sent == N and [seq_of(p) for p in got] == list(range(N))
    assert all(len(p) == 60 + (seq_of(p) % 900) for p in got)
    assert reader.stop() is True
    stats = reader.stats
    assert stats.packets == N and stats.undelivered == 0
    assert c.stats.tx_packets == N and c.stats.tx_dropped_full == 0 and c.stats.tx_rejected == 0


def test_a_forward_into_a_full_sink_waits_stops_promptly_and_counts_what_it_dropped():
    a, b = fasttun.pair(capacity=1024)
    c, d = fasttun.pair(capacity=8, on_full="wait")   # nobody reads d: the forward waits for room
    try:
        reader = b.start_reader(c, 64)
        a.send_batch([minimal_ipv4(60, i) for i in range(200)], on_full="wait")
        assert settle(lambda: reader.stats.packets >= 64)
        time.sleep(0.1)
        assert reader.running
        start = time.monotonic()
        assert reader.stop(timeout=5) is True
        assert time.monotonic() - start < 1.0
        stats = reader.stats
        # nothing lost silently: what was read went, or was dropped and counted, or is counted undelivered
        assert stats.packets == c.stats.tx_packets + c.stats.tx_dropped_full + stats.undelivered
        assert c.stats.tx_packets == 8 and c.stats.tx_dropped_full > 0
    finally:
        for dev in (a, b, c, d):
            dev.close()


def test_a_forward_into_a_dropping_sink_never_waits():
    a, b = fasttun.pair(capacity=1024)
    c, d = fasttun.pair(capacity=8, on_full="drop")
    try:
        reader = b.start_reader(c, 64)
        a.send_batch([minimal_ipv4(60, i) for i in range(200)], on_full="wait")
        assert settle(lambda: reader.stats.packets == 200)
        assert settle(lambda: c.stats.tx_packets + c.stats.tx_dropped_full == 200)
        assert c.stats.tx_packets == 8
        assert [seq_of(p) for p in drain(d, 8)] == list(range(8))
        reader.stop()
    finally:
        for dev in (a, b, c, d):
            dev.close()


def test_datagrams_that_are_not_ip_packets_are_dropped_and_counted_by_the_sink_and_the_rest_go_in_order(
        udp_into_pair):
    ep, tx, c, d = udp_into_pair
    reader = ep.start_reader(c, 16)
    expected = []
    bad = 0
    for i in range(300):
        if i % 7 == 3:
            tx.sendto(b"\x11" * (20 + i % 50), where(ep))
            bad += 1
        else:
            tx.sendto(minimal_ipv4(40 + i, i), where(ep))
            expected.append(i)
        if i % 50 == 49:   # paced: loopback UDP has no flow control, and a loaded machine drops in the socket
            assert settle(lambda: reader.stats.packets == i + 1), reader.stats
    got = drain(d, len(expected))
    assert [seq_of(p) for p in got] == expected
    assert settle(lambda: c.stats.tx_rejected == bad)
    assert reader.running   # a refused packet costs that packet, never the forward
    reader.stop()


def test_a_device_forwards_into_a_connected_udp_endpoint_byte_for_byte():
    a, b = fasttun.pair()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    ep = fasttun.UdpEndpoint(bind=("127.0.0.1", 0), peer=rx.getsockname(), on_full="wait")
    try:
        reader = b.start_reader(ep, 64)
        packets = [minimal_ipv4(24 + 13 * i, i) for i in range(100)]
        a.send_batch(packets, on_full="wait")
        assert [rx.recv(2048) for _ in packets] == packets
        reader.stop()
        assert ep.stats.tx_packets == 100
    finally:
        rx.close()
        ep.close()
        a.close()
        b.close()


def test_what_cannot_be_a_sink_is_refused_with_what_is_allowed():
    a, b = fasttun.pair()
    unconnected = fasttun.UdpEndpoint(bind=("127.0.0.1", 0))
    closed_c, closed_d = fasttun.pair()
    closed_c.close()
    try:
        with pytest.raises(ValueError, match="not connected.*peer="):
            b.start_reader(unconnected)
        with pytest.raises(fasttun.TunClosedError):
            b.start_reader(closed_c)
        with pytest.raises(TypeError, match="callable, or a device or endpoint"):
            b.start_reader(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="batch_size"):
            b.start_reader(closed_d, 0)
        assert not b._readers   # nothing was left running
    finally:
        for dev in (a, b, unconnected, closed_d):
            dev.close()


def test_closing_the_sink_stops_the_forward_quietly_even_when_it_is_idle(chain, caplog):
    a, b, c, d = chain
    reader = b.start_reader(c, 64)
    with caplog.at_level(logging.DEBUG, logger="fasttun"):
        c.close()
        assert not reader.running            # close() stopped and joined it
    assert reader.stop() is True             # closed on purpose: no error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    a.send_batch([minimal_ipv4(60, i) for i in range(50)])
    assert len(b.recv_batch(64, timeout=1)) == 50   # nothing reads b any more: its packets wait there
    assert reader.stats.undelivered == 0


def test_a_sink_closed_under_a_batch_ends_the_forward_quietly_and_counts_what_it_could_not_send(caplog):
    a, b = fasttun.pair(capacity=1024)
    c, d = fasttun.pair(capacity=8, on_full="wait")   # full: the forward waits inside a batch
    try:
        reader = b.start_reader(c, 64)
        a.send_batch([minimal_ipv4(60, i) for i in range(64)], on_full="wait")
        assert settle(lambda: c.stats.tx_waits > 0)
        with caplog.at_level(logging.DEBUG, logger="fasttun"):
            c._dev.shutdown()      # as a finalizer closes: no stop request first, the forward finds it closed
            assert settle(lambda: not reader.running)
        assert reader.stop() is True   # the sink says closed (shut down on purpose, but not through close())...
    except fasttun.TunClosedError:
        pass                           # ...or, since its close() was not called, the forward's error
    finally:
        for dev in (a, b, c, d):
            dev.close()
    stats = reader.stats
    assert stats.packets == 64 and stats.undelivered == 64 - 8 - c.stats.tx_dropped_full
    assert any("forward from" in r.getMessage() for r in caplog.records)


def test_closing_the_sink_from_another_thread_under_a_flood_ends_the_forward_cleanly():
    for _ in range(5):
        a, b = fasttun.pair(capacity=4096)
        c, d = fasttun.pair(capacity=64, on_full="wait")
        reader = b.start_reader(c, 64)
        stop = threading.Event()

        def flood() -> None:
            packets = [minimal_ipv4(100, i) for i in range(64)]
            while not stop.is_set():
                try:
                    a.send_batch(packets, on_full="drop")
                except fasttun.TunClosedError:
                    return

        def reader_of_d() -> None:
            while not stop.is_set():
                try:
                    d.recv_batch(64, timeout=0.05)
                except fasttun.TunClosedError:
                    return

        threads = [threading.Thread(target=flood), threading.Thread(target=reader_of_d)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        threading.Thread(target=c.close).start()
        assert settle(lambda: not reader.running, 5)
        stop.set()
        for t in threads:
            t.join(5)
        assert reader.stop() is True
        stats = reader.stats
        assert stats.packets == c.stats.tx_packets + c.stats.tx_dropped_full + stats.undelivered
        for dev in (a, b, d):
            dev.close()


def test_a_capture_on_either_end_sees_the_forwarded_packets_and_the_fast_path_returns_without_it(chain):
    a, b, c, d = chain
    reader = b.start_reader(c, 64)
    q = reader._queues[0]
    rx_file, tx_file = io.BytesIO(), io.BytesIO()
    rx_writer, tx_writer = pcap.PcapWriter(rx_file), pcap.PcapWriter(tx_file)
    with pcap.tee(b, rx_writer, tx=False), pcap.tee(c, tx_writer, rx=False):
        assert q.diverted
        a.send_batch([minimal_ipv4(60, i) for i in range(100)], on_full="wait")
        assert [seq_of(p) for p in drain(d, 100)] == list(range(100))
        # the sink's capture sees a batch once it went: after d may have received it
        assert settle(lambda: tx_writer.packets == 100)
    assert not q.diverted
    a.send_batch([minimal_ipv4(60, i) for i in range(100, 110)], on_full="wait")
    assert [seq_of(p) for p in drain(d, 10)] == list(range(100, 110))
    reader.stop()
    assert rx_writer.packets == 100 and tx_writer.packets == 100   # what the tees saw, not what came after


def test_a_capture_on_the_sink_sees_only_what_went(udp_into_pair):
    ep, tx, c, d = udp_into_pair
    reader = ep.start_reader(c, 64)
    writer = pcap.PcapWriter(io.BytesIO())
    with pcap.tee(c, writer, rx=False):
        for i in range(40):
            tx.sendto(b"\x11" * 30 if i % 4 == 1 else minimal_ipv4(60, i), where(ep))
            if i % 20 == 19:
                assert settle(lambda: reader.stats.packets == i + 1), reader.stats
        assert len(drain(d, 30)) == 30
        assert settle(lambda: writer.packets == 30)
    assert settle(lambda: c.stats.tx_rejected == 10)
    assert writer.packets == 30
    reader.stop()


def test_forwards_dropped_without_close_or_stop_end_with_the_process():
    """Both ends and the reader dropped mid-flood, collected at once or at exit: no hang, no crash."""
    assert_ok(run_child('''
    for round_ in range(10):
        a, b = fasttun.pair(capacity=256)
        c, d = fasttun.pair(capacity=16)
        b.start_reader(c)            # the Reader is dropped at once
        d.start_reader(lambda batch: None)
        for i in range(200):
            a.send(minimal_ipv4(60, i))
        del b, c, d
        if round_ % 2:
            gc.collect()
        a.close()
    a, b = fasttun.pair()
    c, d = fasttun.pair(capacity=4, on_full="wait")
    b.start_reader(c)
    a.send_batch([minimal_ipv4() for _ in range(50)])   # the forward waits for room at exit
    print("OK")
    '''))


def test_gc_of_the_reader_object_on_its_own_keeps_the_forward_running(chain):
    a, b, c, d = chain
    b.start_reader(c, 16)
    gc.collect()
    a.send_batch([minimal_ipv4(60, i) for i in range(100)], on_full="wait")
    assert [seq_of(p) for p in drain(d, 100)] == list(range(100))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is for Linux and other POSIX systems; Windows has none")
def test_fork_while_forwarding_leaves_the_parent_forwarding_and_the_child_free_to_close():
    assert_ok(run_child('''
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)   # fork() of a process with threads: we mean it
    a, b = fasttun.pair(capacity=1024)
    c, d = fasttun.pair(capacity=1024)
    reader = b.start_reader(c)
    a.send_batch([minimal_ipv4(60, i) for i in range(10)], on_full="wait")
    assert settle(lambda: c.stats.tx_packets == 10)
    pid = os.fork()
    if pid == 0:   # the forward's thread is the parent's: the child's reader says stopped, closes never wait
        code = 0 if not reader.running and reader.stop(1.0) else 3
        for dev in (a, b, c, d):
            dev.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    a.send_batch([minimal_ipv4(60, i) for i in range(10, 20)], on_full="wait")
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 20 and time.monotonic() < deadline:
        got.extend(bytes(p) for p in d.recv_batch(64, timeout=0.2))
    assert len(got) == 20, len(got)
    reader.stop()
    print("OK")
    '''))


def test_captures_coming_and_going_under_a_flood_lose_nothing_and_a_close_midway_ends_cleanly(chain):
    a, b, c, d = chain
    reader = b.start_reader(c, 64)
    stop = threading.Event()
    got: list[int] = []

    def receive() -> None:
        while not stop.is_set():
            try:
                batch = d.recv_batch(256, timeout=0.2)
            except fasttun.TunClosedError:   # c was closed below and all it sent was read
                return
            got.extend(seq_of(p) for p in batch)

    receiver = threading.Thread(target=receive)
    receiver.start()
    try:
        for first in range(0, 3000, 100):
            a.send_batch([minimal_ipv4(60, i) for i in range(first, first + 100)], on_full="wait")
            if first % 200 == 0:
                with pcap.tee(c, pcap.PcapWriter(io.BytesIO()), rx=False):   # diverts through Python meanwhile
                    gc.collect()
        assert settle(lambda: len(got) == 3000, 10)
        assert got == list(range(3000))   # in order, nothing lost, whichever path each batch took
        assert not reader._queues[0].diverted
        # now close the sink while batches are diverted through Python (the GIL released while they are sent)
        tee = pcap.tee(b, pcap.PcapWriter(io.BytesIO()), tx=False)
        closer = threading.Timer(0.02, c.close)
        closer.start()
        for _ in range(20):
            a.send_batch([minimal_ipv4(60, 0)] * 64, on_full="drop")
        closer.join()
        assert settle(lambda: not reader.running)
        assert reader.stop() is True
        tee.remove()
        stats = reader.stats
        assert stats.packets == c.stats.tx_packets + c.stats.tx_dropped_full + stats.undelivered
    finally:
        stop.set()
        receiver.join(5)
