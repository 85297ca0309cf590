"""The in-memory pair, Batch and Reader lifecycle: no privileges needed."""

from __future__ import annotations

import logging
import signal
import threading
import time

import pytest

import fasttun
from packets import minimal_ipv4, seq_of
from threads import ended_by_close


def test_send_and_recv_one_packet(ends):
    a, b = ends
    pkt = minimal_ipv4(100, 7)
    assert a.send(pkt) == 1
    assert b.recv(timeout=1) == pkt
    assert a.stats.tx_packets == 1 and a.stats.tx_bytes == 100
    assert b.stats.rx_packets == 1 and b.stats.rx_bytes == 100


def test_both_directions_are_independent(ends):
    a, b = ends
    a.send(minimal_ipv4(60, 1))
    b.send(minimal_ipv4(60, 2))
    assert seq_of(a.recv(timeout=1)) == 2
    assert seq_of(b.recv(timeout=1)) == 1


def test_recv_timeout_returns_none_promptly(ends):
    _, b = ends
    start = time.monotonic()
    assert b.recv(timeout=0.2) is None
    assert 0.15 <= time.monotonic() - start < 1.0
    assert b.recv(timeout=0) is None


def test_recv_into_and_too_small_buffer_keeps_the_packet(ends):
    a, b = ends
    a.send(minimal_ipv4(300, 1))
    buf = bytearray(2000)
    n = b.recv_into(buf, timeout=1)
    assert n == 300 and seq_of(buf[:n]) == 1
    a.send(minimal_ipv4(300, 2))
    small = bytearray(100)
    with pytest.raises(ValueError, match="300 bytes"):
        b.recv_into(small, timeout=1)
    n = b.recv_into(buf, timeout=1)  # the packet was kept, not lost
    assert n == 300 and seq_of(buf[:n]) == 2


def test_recv_into_needs_a_writable_buffer(ends):
    _, b = ends
    with pytest.raises(TypeError, match="writable"):
        b.recv_into(b"immutable", timeout=0)


def test_recv_batch_keeps_order_and_layout(ends):
    a, b = ends
    pkts = [minimal_ipv4(40 + i, i) for i in range(100)]
    assert a.send_batch(pkts) == 100
    batch = b.recv_batch(64, timeout=1)
    assert len(batch) == 64
    assert [seq_of(p) for p in batch] == list(range(64))
    assert list(batch.lengths) == [40 + i for i in range(64)]
    offsets = list(batch.offsets)
    assert offsets[0] == 0 and all(offsets[i + 1] == offsets[i] + 40 + i for i in range(63))
    assert batch.nbytes == sum(40 + i for i in range(64))
    assert bytes(batch.buffer) == b"".join(pkts[:64])
    rest = b.recv_batch(64, timeout=1)
    assert [seq_of(p) for p in rest] == list(range(64, 100))


def test_batch_indexing(ends):
    a, b = ends
    a.send_batch([minimal_ipv4(60, i) for i in range(5)])
    batch = b.recv_batch(8, timeout=1)
    assert seq_of(batch[-1]) == 4 and seq_of(batch[0]) == 0
    assert [seq_of(p) for p in batch[1:3]] == [1, 2]
    with pytest.raises(IndexError):
        batch[5]
    assert batch.copy() == [minimal_ipv4(60, i) for i in range(5)]
    assert "5 packets" in repr(batch)


def test_batch_returned_by_recv_batch_survives_later_receives(ends):
    a, b = ends
    a.send_batch([minimal_ipv4(60, i) for i in range(3)])
    first = b.recv_batch(3, timeout=1)
    a.send_batch([minimal_ipv4(60, 100 + i) for i in range(3)])
    second = b.recv_batch(3, timeout=1)
    assert [seq_of(p) for p in first] == [0, 1, 2]  # not overwritten by the second receive
    assert [seq_of(p) for p in second] == [100, 101, 102]


def test_empty_batch_on_timeout(ends):
    _, b = ends
    batch = b.recv_batch(8, timeout=0.05)
    assert len(batch) == 0 and not batch and list(batch) == []


def test_batch_is_numpy_friendly(ends):
    np = pytest.importorskip("numpy")
    a, b = ends
    a.send_batch([minimal_ipv4(50 + i, i) for i in range(10)])
    batch = b.recv_batch(10, timeout=1)
    lengths = np.frombuffer(batch.lengths, dtype=np.uint32)
    offsets = np.frombuffer(batch.offsets, dtype=np.uint32)
    data = np.frombuffer(batch.buffer, dtype=np.uint8)
    assert lengths.tolist() == [50 + i for i in range(10)]
    assert data[offsets[3]] == 0x45
    data_writable = np.frombuffer(batch.buffer, dtype=np.uint8)
    assert data_writable.ctypes.data == data.ctypes.data  # the same memory: no copy


def test_batches_cannot_be_made_directly():
    with pytest.raises(TypeError):
        fasttun.Batch()


def test_make_batch_and_send_it(ends):
    a, b = ends
    batch = fasttun.make_batch([minimal_ipv4(64, i) for i in range(10)])
    assert len(batch) == 10
    assert a.send_batch(batch) == 10
    assert [seq_of(p) for p in b.recv_batch(16, timeout=1)] == list(range(10))


def test_a_received_batch_can_be_sent_on(ends):
    a, b = ends
    c, d = fasttun.pair()
    with c, d:
        a.send_batch([minimal_ipv4(64, i) for i in range(20)])
        assert c.send_batch(b.recv_batch(32, timeout=1)) == 20
        assert [seq_of(p) for p in d.recv_batch(32, timeout=1)] == list(range(20))


# ---- the reader ----


def test_reader_delivers_thousands_in_order(ends):
    a, b = ends
    seen: list[int] = []
    sizes: list[int] = []

    def on_batch(batch):
        sizes.append(len(batch))
        seen.extend(seq_of(p) for p in batch)

    total = 20000
    with b.start_reader(on_batch, batch_size=64) as reader:
        for start in range(0, total, 500):
            a.send_batch([minimal_ipv4(80, i) for i in range(start, start + 500)])
        deadline = time.monotonic() + 10
        while len(seen) < total and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == list(range(total))
    assert max(sizes) <= 64 and max(sizes) > 1  # really batched
    stats = reader.stats
    assert stats.packets == total and stats.batches == len(sizes)
    assert b.stats.rx_packets == total


def test_views_expire_after_the_callback(ends):
    a, b = ends
    kept = []
    done = threading.Event()

    def on_batch(batch):
        kept.append((batch, batch[0], batch.copy()))
        done.set()

    with b.start_reader(on_batch):
        a.send(minimal_ipv4(60, 42))
        assert done.wait(2)
    batch, view, copies = kept[0]
    with pytest.raises(ValueError, match="only during the reader callback"):
        len(batch)
    with pytest.raises(ValueError):
        bytes(view)  # a released memoryview: never reads reused or freed memory
    assert seq_of(copies[0]) == 42


def test_buffer_kept_past_the_callback_keeps_its_data(ends):
    np = pytest.importorskip("numpy")
    a, b = ends
    arrays = []
    got = threading.Event()
    count = [0]

    def on_batch(batch):
        if not arrays:
            arrays.append(np.frombuffer(batch[0], dtype=np.uint8))  # holds the arena past the call
        count[0] += len(batch)
        if count[0] >= 200:
            got.set()

    with b.start_reader(on_batch, batch_size=8) as reader:
        a.send(minimal_ipv4(60, 1))
        time.sleep(0.1)
        a.send_batch([minimal_ipv4(60, 1000 + i) for i in range(199)])
        assert got.wait(5)
    assert seq_of(arrays[0].tobytes()) == 1  # later batches went into a fresh arena
    assert reader.stats.arena_swaps >= 1


def test_callback_exception_is_raised_by_stop_with_traceback(ends):
    a, b = ends

    class Boom(Exception):
        pass

    def on_batch(batch):
        raise Boom("bad packet")

    reader = b.start_reader(on_batch)
    a.send(minimal_ipv4())
    deadline = time.monotonic() + 5
    while reader.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not reader.running
    with pytest.raises(Boom, match="bad packet") as info:
        reader.stop()
    assert any(entry.name == "on_batch" for entry in info.traceback)
    reader.stop()  # raised once; a second stop is quiet
    a.send(minimal_ipv4(60, 5))  # the device still works
    assert seq_of(b.recv(timeout=1)) == 5


def join_a_reader_whose_callback_raises(ends, exc: BaseException) -> None:
    """Starts a reader on the second end whose callback raises exc, sends it a packet, and joins it."""
    a, b = ends

    def on_batch(batch):
        raise exc

    reader = b.start_reader(on_batch)
    a.send(minimal_ipv4())
    with pytest.raises(type(exc)):
        reader.join(timeout=5)


def test_a_raising_callback_is_logged_once_on_the_fasttun_logger(ends, caplog):
    _, b = ends
    caplog.set_level(logging.ERROR, logger="fasttun")
    join_a_reader_whose_callback_raises(ends, ValueError("bad packet"))
    errors = [r for r in caplog.records if r.name == "fasttun" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"reader on {b.name} queue 0 stopped" in errors[0].getMessage()
    assert "ValueError('bad packet')" in errors[0].getMessage()


def test_a_failing_log_handler_does_not_replace_the_callbacks_exception(ends, monkeypatch):
    # The log line is written by the reader thread after the callback raised; if writing it fails, that is
    # reported as unraisable and the callback's exception is still the one join() raises.
    from fasttun import _tun

    def broken(*args):
        raise OSError("log disk full")

    unraisable = []
    monkeypatch.setattr(_tun, "_callback_failed", broken)
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    join_a_reader_whose_callback_raises(ends, KeyError("x"))
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, OSError)


def test_join_raises_the_callback_exception(ends):
    join_a_reader_whose_callback_raises(ends, KeyError("x"))


def test_stop_from_inside_the_callback(ends):
    a, b = ends
    calls = [0]
    holder = {}

    def on_batch(batch):
        calls[0] += 1
        assert holder["reader"].stop() is False  # only requested: we are on the reader's thread

    holder["reader"] = reader = b.start_reader(on_batch, batch_size=1)
    a.send_batch([minimal_ipv4(60, i) for i in range(10)])
    assert reader.join(timeout=5)
    assert calls[0] == 1
    assert b.recv(timeout=1) is not None  # the rest is still waiting


def test_stop_is_prompt_while_the_reader_sleeps(ends):
    _, b = ends
    reader = b.start_reader(lambda batch: None)
    time.sleep(0.2)
    start = time.monotonic()
    assert reader.stop(timeout=2)
    assert time.monotonic() - start < 0.1
    assert not reader.running


def test_stop_is_prompt_while_the_reader_spins(ends):
    _, b = ends
    reader = b.start_reader(lambda batch: None, spin_us=500_000, adaptive=False)
    time.sleep(0.2)
    start = time.monotonic()
    assert reader.stop(timeout=2)
    assert time.monotonic() - start < 0.1
    assert reader.stats.spins > 0


def test_idle_adaptive_reader_sleeps_instead_of_spinning(ends):
    _, b = ends
    with b.start_reader(lambda batch: None) as reader:
        time.sleep(0.3)
        before = reader.stats.spins
        cpu = time.process_time()
        time.sleep(0.5)
        cpu = time.process_time() - cpu
        after = reader.stats.spins
    assert after == before  # nothing arrived: no spinning
    assert cpu < 0.25  # not burning a core


def test_a_burst_that_fills_a_batch_makes_the_adaptive_reader_spin_at_once(ends):
    # A full batch means packets queue faster than they are read: the reader spins on the next empty queue
    # without waiting for a half-second rate window to end (a burst of 0.3 s used to be served cold).
    a, b = ends
    got: list[int] = []
    with b.start_reader(lambda batch: got.append(len(batch)), batch_size=8, spin_us=2000) as reader:
        time.sleep(0.05)
        assert reader.stats.spins == 0
        a.send_batch([minimal_ipv4(60, i) for i in range(64)])
        deadline = time.monotonic() + 5
        while sum(got) < 64 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)
        assert sum(got) == 64 and max(got) == 8
        assert reader.stats.spins > 0


def test_closing_the_device_stops_its_readers(ends):
    _, b = ends
    reader = b.start_reader(lambda batch: None)
    b.close()
    assert not reader.running
    reader.stop()  # closing on purpose is not an error


def test_closing_from_inside_the_callback(ends):
    a, b = ends
    closed = threading.Event()

    def on_batch(batch):
        b.close()
        closed.set()

    reader = b.start_reader(on_batch)
    a.send(minimal_ipv4())
    assert closed.wait(2)
    assert reader.join(timeout=2)
    assert b.closed
    with pytest.raises(fasttun.TunClosedError):
        b.recv(timeout=0)


def test_reader_argument_checks(ends):
    _, b = ends
    with pytest.raises(TypeError, match="callable"):
        b.start_reader("not callable")
    with pytest.raises(ValueError, match="batch_size 0 is out of range"):
        b.start_reader(lambda batch: None, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        b.start_reader(lambda batch: None, batch_size=70000)
    with pytest.raises(ValueError, match="spin_us"):
        b.start_reader(lambda batch: None, spin_us=-1)
    with pytest.raises(TypeError):
        b.start_reader(lambda batch: None, batch_size=1.5)


# ---- blocking calls, close and Ctrl-C ----


def test_close_wakes_a_blocked_recv_in_another_thread():
    a, b = fasttun.pair()
    error, seconds = ended_by_close(b.recv, b.close, timeout=2)
    assert seconds < 1.0
    assert isinstance(error, fasttun.TunClosedError)
    with pytest.raises(fasttun.TunClosedError):
        b.recv(timeout=0)
    a.close()


def test_peer_close_gives_eof_after_draining():
    a, b = fasttun.pair()
    a.send(minimal_ipv4(60, 9))
    a.close()
    assert seq_of(b.recv(timeout=1)) == 9
    with pytest.raises(fasttun.TunClosedError, match="other device"):
        b.recv(timeout=1)
    with pytest.raises(fasttun.TunClosedError):
        b.send(minimal_ipv4())
    b.close()


def test_ctrl_c_interrupts_a_blocking_recv(ends):
    _, b = ends
    timer = threading.Timer(0.2, lambda: signal.raise_signal(signal.SIGINT))  # portable, unlike os.kill
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        b.recv()
    assert time.monotonic() - start < 0.2 + 0.3
    timer.cancel()


# ---- send policies when the peer is full ----


def test_drop_policy_counts_drops():
    a, b = fasttun.pair(capacity=10, on_full="drop")
    with a, b:
        assert a.send_batch([minimal_ipv4(60, i) for i in range(25)]) == 10
        assert a.send(minimal_ipv4()) == 0
        assert a.stats.tx_dropped_full == 16
        assert a.stats.drops == 16
        assert len(b.recv_batch(64, timeout=1)) == 10


def test_raise_policy_says_how_many_went():
    a, b = fasttun.pair(capacity=10)
    with a, b:
        with pytest.raises(fasttun.TunFullError) as info:
            a.send_batch([minimal_ipv4(60, i) for i in range(25)], on_full="raise")
        assert info.value.sent == 10
        assert a.stats.tx_dropped_full == 0


def test_wait_policy_times_out_then_drops_and_counts():
    a, b = fasttun.pair(capacity=10)
    with a, b:
        start = time.monotonic()
        assert a.send_batch([minimal_ipv4(60, i) for i in range(12)], timeout=0.2) == 10
        assert 0.15 < time.monotonic() - start < 1.0
        assert a.stats.tx_dropped_full == 2


def test_wait_policy_waits_for_a_reader():
    a, b = fasttun.pair(capacity=16)
    seen: list[int] = []
    with a, b:
        with b.start_reader(lambda batch: seen.extend(seq_of(p) for p in batch)):
            assert a.send_batch([minimal_ipv4(60, i) for i in range(5000)], timeout=10) == 5000
            deadline = time.monotonic() + 5
            while len(seen) < 5000 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert seen == list(range(5000))
        assert a.stats.tx_dropped_full == 0 and a.stats.tx_waits > 0


def test_a_waiting_sender_is_woken_once_half_the_ring_is_free():
    # A sender blocked on a full pair sleeps until half the ring is free, then sends a run: with a reader taking
    # four packets at a time that is about one wait per 32 packets, not one per read (the wake-up and the
    # context switch per read cost more than the packets did). Nothing waits longer than that: the reader
    # never sleeps with the ring full.
    a, b = fasttun.pair(capacity=64)
    total = 6400
    got: list[int] = []
    with a, b:
        def read() -> None:
            deadline = time.monotonic() + 30
            while len(got) < total and time.monotonic() < deadline:
                got.extend(seq_of(p) for p in b.recv_batch(4, timeout=1.0))

        t = threading.Thread(target=read)
        t.start()
        assert a.send_batch([minimal_ipv4(60, i) for i in range(total)], on_full="wait", timeout=30) == total
        t.join(30)
        assert got == list(range(total))
        assert a.stats.tx_dropped_full == 0
        # 6400 / 32 = 200 runs; a wake-up per read would be up to 1600 waits.
        assert 0 < a.stats.tx_waits <= 2 * total // 32, a.stats.tx_waits


def test_a_waiting_sender_finds_room_the_reader_left_short_of_half():
    # The reader takes one packet from a full ring of 8 and stops: no wake-up comes (7 of 8 still queued), but
    # the sender tries again at the end of its 100 ms wait slice, and the packet goes long before its timeout.
    a, b = fasttun.pair(capacity=8)
    with a, b:
        assert a.send_batch([minimal_ipv4(60, i) for i in range(8)]) == 8
        result: list[object] = []

        def send() -> None:
            start = time.monotonic()
            result.append(a.send(minimal_ipv4(60, 8), on_full="wait", timeout=5.0))
            result.append(time.monotonic() - start)

        t = threading.Thread(target=send)
        t.start()
        time.sleep(0.05)
        assert seq_of(b.recv(timeout=1.0)) == 0
        t.join(5.0)
        assert result[0] == 1 and result[1] < 1.0, result
        assert [seq_of(b.recv(timeout=1.0)) for _ in range(8)] == list(range(1, 9))
        assert a.stats.tx_dropped_full == 0


def test_the_stats_records_are_the_c_cores_counters():
    """Each counter is defined once in C (an X-macro list per record); the Python records carry the same names in
    the same order, so a counter added in C and not here (or the reverse) fails this test."""
    import dataclasses

    from fasttun import _core
    from fasttun._tun import ReaderStats, Stats
    from fasttun._udp import UdpStats

    def names(record: type) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(record))

    assert names(Stats) == _core.STATS_FIELDS + ("rx_dropped_os", "tx_dropped_os")
    assert names(ReaderStats) == _core.READER_STATS_FIELDS + ("arena_swaps",)
    udp = set(names(UdpStats))
    assert udp <= set(_core.STATS_FIELDS) | set(_core.UDP_COUNTERS)
    # what the endpoint leaves out: IP validation (datagrams are not IP packets), a finer count of an oversize drop
    assert set(_core.UDP_COUNTERS) - udp == {"rx_dropped_trunc"}
    assert set(_core.STATS_FIELDS) - udp == {"rx_dropped_invalid"}
    a, b = fasttun.pair()
    with a, b:
        assert a.send(minimal_ipv4()) == 1 and b.recv(timeout=1)
        assert (a.stats.tx_packets, b.stats.rx_packets) == (1, 1)
