"""The reader's contracts hold with and without the pipeline (pipeline=0: one thread reads then calls back;
pipeline=N: a second thread reads ahead into up to N batches while the callback runs)."""

from __future__ import annotations

import threading
import time

import pytest

import fasttun
from packets import minimal_ipv4, seq_of
from threads import wait_until

DEPTHS = [0, 2, 4]


@pytest.mark.parametrize("pipeline", DEPTHS)
def test_every_packet_arrives_once_and_in_order(pipeline):
    a, b = fasttun.pair(capacity=256)
    seen: list[int] = []
    total = 20000

    def on_batch(batch):
        seen.extend(seq_of(p) for p in batch)
        if len(seen) % 7 == 0:
            time.sleep(0.0005)  # a slow callback now and then: read-ahead fills up and waits

    reader = b.start_reader(on_batch, batch_size=32, pipeline=pipeline)
    for start in range(0, total, 500):
        a.send_batch([minimal_ipv4(60, i) for i in range(start, start + 500)], on_full="wait", timeout=10)
    assert wait_until(lambda: len(seen) >= total)
    reader.stop()
    assert seen == list(range(total))
    s = reader.stats
    assert s.packets == total and s.undelivered == 0
    a.close()
    b.close()


@pytest.mark.parametrize("pipeline", DEPTHS)
def test_the_callback_always_runs_on_the_reader_thread_and_stop_is_prompt(pipeline):
    a, b = fasttun.pair()
    threads = set()
    reader = b.start_reader(lambda batch: threads.add(threading.get_ident()), pipeline=pipeline)
    for i in range(50):
        a.send(minimal_ipv4(60, i))
    # stats count a batch when it is read, before a pipelined reader hands it over: wait for the callback too
    assert wait_until(lambda: reader.stats.packets == 50 and threads)
    t0 = time.monotonic()
    assert reader.stop(timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert len(threads) == 1 and threading.get_ident() not in threads
    a.close()
    b.close()


@pytest.mark.parametrize("pipeline", [2, 4])
def test_a_raising_callback_stops_the_reader_and_counts_what_was_read_ahead(pipeline):
    a, b = fasttun.pair(capacity=4096)
    calls = []

    def on_batch(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise RuntimeError("boom")
        time.sleep(0.01)  # let the read-ahead fill up

    reader = b.start_reader(on_batch, batch_size=8, pipeline=pipeline)
    a.send_batch([minimal_ipv4(60, i) for i in range(1000)], on_full="wait", timeout=5)
    assert wait_until(lambda: not reader.running)
    with pytest.raises(RuntimeError, match="boom"):
        reader.stop()
    s = reader.stats
    delivered = sum(calls)
    left = 0
    while b.recv(timeout=0) is not None:
        left += 1
    # Nothing lost silently: delivered + read ahead and dropped (counted) + still queued == sent.
    assert delivered + s.undelivered + left == 1000
    assert s.packets == delivered + s.undelivered
    a.close()
    b.close()


@pytest.mark.parametrize("pipeline", [0, 2, 8])
@pytest.mark.parametrize("end", ["stop()", "close()", "raise"])
def test_no_callback_runs_after_the_callback_ends_the_reader(pipeline, end):
    # As without the pipeline: the batches read ahead are not delivered once the callback stopped the reader,
    # closed its device or raised; they are counted, and the rest stays in the device's queue.
    a, b = fasttun.pair(capacity=4096)
    calls = []
    ended = threading.Event()
    holder = {}

    def on_batch(batch):
        assert not ended.is_set(), "a callback ran after the reader was ended"
        calls.append(len(batch))
        if len(calls) == 3:
            ended.set()
            if end == "stop()":
                assert holder["reader"].stop() is False   # requested only: we are on the reader's thread
            elif end == "close()":
                b.close()
            else:
                raise RuntimeError("boom")
        time.sleep(0.01)  # let the read-ahead fill up

    holder["reader"] = reader = b.start_reader(on_batch, batch_size=8, pipeline=pipeline)
    a.send_batch([minimal_ipv4(60, i) for i in range(1000)], on_full="wait", timeout=5)
    assert wait_until(lambda: not reader.running)
    if end == "raise":
        with pytest.raises(RuntimeError, match="boom"):
            reader.stop()
    else:
        reader.stop()   # ended on purpose: nothing to raise
    assert len(calls) == 3
    s = reader.stats
    assert s.packets == sum(calls) + s.undelivered
    if pipeline == 0:
        assert s.undelivered == 0
    if end != "close()":
        left = 0
        while b.recv(timeout=0) is not None:
            left += 1
        assert sum(calls) + s.undelivered + left == 1000   # nothing lost silently
    a.close()
    b.close()


@pytest.mark.parametrize("pipeline", DEPTHS)
def test_stop_from_another_thread_loses_nothing_silently(pipeline):
    a, b = fasttun.pair(capacity=4096)
    delivered = [0]

    def on_batch(batch):
        delivered[0] += len(batch)
        time.sleep(0.002)

    reader = b.start_reader(on_batch, batch_size=8, pipeline=pipeline)
    a.send_batch([minimal_ipv4(60, i) for i in range(2000)], on_full="wait", timeout=5)
    assert wait_until(lambda: delivered[0] >= 40)
    assert reader.stop(timeout=5)
    after = delivered[0]
    time.sleep(0.05)
    assert delivered[0] == after   # no callback once stop() returned
    s = reader.stats
    left = 0
    while b.recv(timeout=0) is not None:
        left += 1
    assert s.packets == after + s.undelivered
    assert after + s.undelivered + left == 2000
    # what was read ahead (pipeline - 1 batches at most), and the batch whose thread was waiting for the GIL
    # when stop() asked: it is declined, not delivered after stop()
    assert s.undelivered <= max(pipeline, 1) * 8
    a.close()
    b.close()


@pytest.mark.parametrize("pipeline", DEPTHS)
def test_close_during_traffic_ends_the_reader_cleanly(pipeline):
    a, b = fasttun.pair(capacity=64)
    stop = threading.Event()

    def flood():
        i = 0
        while not stop.is_set():
            try:
                a.send(minimal_ipv4(60, i))
            except fasttun.TunClosedError:
                return
            i += 1

    sender = threading.Thread(target=flood)
    reader = b.start_reader(lambda batch: None, pipeline=pipeline)
    sender.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    b.close()
    assert time.monotonic() - t0 < 2.0
    assert not reader.running
    reader.stop()  # a device closed on purpose is a normal end: nothing raised
    stop.set()
    sender.join(5)
    a.close()


@pytest.mark.parametrize("pipeline", [2, 4])
def test_a_kept_buffer_pins_its_arena_and_later_batches_are_untouched(pipeline):
    numpy = pytest.importorskip("numpy")
    a, b = fasttun.pair()
    kept = []
    seen = []

    def on_batch(batch):
        for p in batch:
            seen.append(seq_of(p))
        if not kept:
            kept.append(numpy.frombuffer(batch[0], numpy.uint8))  # a buffer export that outlives the call

    reader = b.start_reader(on_batch, batch_size=1, pipeline=pipeline)
    for i in range(200):
        a.send(minimal_ipv4(60, i))
    assert wait_until(lambda: len(seen) == 200)
    reader.stop()
    assert seq_of(kept[0].tobytes()) == 0  # still the first packet: its arena was never reused
    assert seen == list(range(200))
    assert reader.stats.arena_swaps >= 1
    a.close()
    b.close()


def test_pipeline_depth_is_checked():
    a, b = fasttun.pair()
    for bad, exc in [(-1, ValueError), (9, ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="pipeline"):
            a.start_reader(lambda batch: None, pipeline=bad)
    a.close()
    b.close()


@pytest.mark.parametrize("pipeline", [0, 2])
def test_packets_expire_after_the_callback(pipeline):
    a, b = fasttun.pair()
    kept = []
    reader = b.start_reader(lambda batch: kept.extend(batch), pipeline=pipeline)
    a.send(minimal_ipv4(60, 5))
    assert wait_until(lambda: kept)
    reader.stop()
    with pytest.raises(ValueError, match="valid only during the reader callback"):
        kept[0][0]
    with pytest.raises(ValueError):
        memoryview(kept[0])
    with pytest.raises(ValueError):
        bytes(kept[0])
    a.close()
    b.close()


def test_packets_are_bytes_like_everywhere_a_memoryview_was():
    import socket
    import struct

    pkt = minimal_ipv4(60, 0x01020304)
    batch = fasttun.make_batch([pkt])
    p = batch[0]
    assert isinstance(p, fasttun.Packet)
    assert len(p) == 60 and p.nbytes == 60 and p[0] == 0x45 and p[-1] == 0
    assert bytes(p) == pkt and p.tobytes() == pkt and p == pkt and p != pkt[:-1]
    assert bytes(p[20:24]) == b"\x01\x02\x03\x04" and isinstance(p[20:24], memoryview)
    assert struct.unpack_from("!I", p, 20)[0] == 0x01020304
    assert memoryview(p).tobytes() == pkt and list(p)[:2] == [0x45, 0]
    assert p.hex() == pkt.hex()
    p[1] = 7
    assert batch.copy()[0][1] == 7  # zero-copy: the batch's own bytes
    with pytest.raises(IndexError):
        p[60]
    with pytest.raises(TypeError):
        hash(p)
    with pytest.raises(TypeError):
        fasttun.Packet()
    left, right = socket.socketpair()
    with left, right:
        left.send(p)
        assert right.recv(100)[:1] == b"\x45"
    numpy = pytest.importorskip("numpy")
    assert numpy.frombuffer(p, numpy.uint8)[0] == 0x45
    aead = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead")
    box = aead.ChaCha20Poly1305(bytes(32))  # pyo3's buffer extraction wants shape and strides filled in
    assert box.decrypt(bytes(12), box.encrypt(bytes(12), p, None), None) == bytes(p)


@pytest.mark.parametrize("pipeline", [2, 4])
@pytest.mark.parametrize("end", ["stop", "close"])
def test_stop_and_close_are_prompt_while_both_sides_spin(pipeline, end):
    # With the longest spin allowed (1 s) and spinning always on, the reading side spins on the empty device and
    # the delivering side on the empty hand-off: a stop or a close still ends both at once.
    a, b = fasttun.pair()
    got: list[int] = []
    reader = b.start_reader(lambda batch: got.append(len(batch)), pipeline=pipeline, spin_us=1_000_000,
                            adaptive=False)
    a.send_batch([minimal_ipv4(60, i) for i in range(100)])
    assert wait_until(lambda: sum(got) == 100)
    time.sleep(0.05)  # both sides are in their spins now
    t0 = time.monotonic()
    if end == "stop":
        assert reader.stop(timeout=5)
    else:
        b.close()
        assert wait_until(lambda: not reader.running, timeout=5)
        reader.stop()
    assert time.monotonic() - t0 < 0.5
    assert reader.stats.spins > 0
    a.close()
    b.close()


@pytest.mark.parametrize("pipeline", [2, 4])
def test_the_delivering_side_sleeps_once_the_reading_side_sleeps(pipeline):
    # While the reading thread is awake, the delivering one spins for its next batch (up to 2 ms, longer than
    # spin_us); once the reading thread sleeps on the empty device, so does the delivering one: an idle
    # pipelined reader costs no CPU even with spinning always on.
    a, b = fasttun.pair()
    got: list[int] = []
    reader = b.start_reader(lambda batch: got.append(len(batch)), pipeline=pipeline, spin_us=1000, adaptive=False)
    for _ in range(20):
        a.send_batch([minimal_ipv4(60, i) for i in range(64)])
    assert wait_until(lambda: sum(got) == 20 * 64)
    time.sleep(0.05)
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(0.5)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    assert cpu < 0.1 * wall, f"an idle pipelined reader used {cpu:.3f} s of CPU in {wall:.3f} s"
    a.send(minimal_ipv4(60, 1))  # and it still wakes for the next packet
    assert wait_until(lambda: sum(got) == 20 * 64 + 1)
    reader.stop()
    a.close()
    b.close()
