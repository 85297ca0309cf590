"""Packet objects that batches reuse: iteration and batch[i] hand out a Packet again once nobody else holds it.

What users must never see: a packet they still hold changing under them (it keeps its own bytes until its batch
ends, then raises), a kept packet turning valid again in a later batch, or a buffer export of a packet reading
memory the reader reused. Each test holds packets in a way users do (a variable, a list, an iterator's step, a
memoryview, zip/map) and checks every packet's own sequence number."""

from __future__ import annotations

import gc
import threading

import pytest

import fasttun
from packets import minimal_ipv4, seq_of


def _seq(p: fasttun.Packet) -> int:
    return seq_of(bytes(p))


def _one_callback(ends, count, body, batch_size=None, **reader_args):
    """Sends `count` sequence-numbered packets, runs body(batch) in the first callback that sees them all."""
    a, b = ends
    a.send_batch([minimal_ipv4(60 + (i % 7), i) for i in range(count)])
    out = {}
    done = threading.Event()

    def on_batch(batch):
        if not done.is_set():
            out["result"] = body(batch)
            done.set()

    with b.start_reader(on_batch, batch_size=batch_size or count, **reader_args):
        assert done.wait(5)
    return out["result"]


def test_iteration_gives_each_packet_its_own_bytes_whoever_holds_what(ends):
    def body(batch):
        kept = []
        seen = []
        for i, p in enumerate(batch):
            seen.append(_seq(p))
            if i % 3 == 0:
                kept.append(p)          # held in a list while the iteration goes on
        held = list(batch)              # all of them at once
        it = iter(batch)
        first, second, third = next(it), next(it), next(it)   # three steps of one iterator, all held
        pairs = [(_seq(x), _seq(y)) for x, y in zip(batch, batch)]
        mapped = list(map(lambda p: p, batch))
        return (seen, [_seq(p) for p in kept], [_seq(p) for p in held],
                [_seq(first), _seq(second), _seq(third)], pairs, [_seq(p) for p in mapped], kept)

    seen, kept, held, three, pairs, mapped, kept_objs = _one_callback(ends, 40, body)
    assert seen == list(range(40))
    assert kept == list(range(0, 40, 3))
    assert held == list(range(40))
    assert three == [0, 1, 2]
    assert pairs == [(i, i) for i in range(40)]
    assert mapped == list(range(40))
    assert len({id(p) for p in kept_objs}) == len(kept_objs)
    for p in kept_objs:                 # kept past the callback: expired, never reading the reused arena
        with pytest.raises(ValueError, match="only during the reader callback"):
            p[0]
        with pytest.raises(ValueError):
            bytes(p)
        with pytest.raises(ValueError):
            memoryview(p)


def test_indexing_gives_each_packet_its_own_bytes_whoever_holds_what(ends):
    def body(batch):
        x, y, z = batch[0], batch[1], batch[2]          # three held at once
        walk = [_seq(batch[i]) for i in range(len(batch))]
        held = [batch[i] for i in range(len(batch))]
        again = batch[-1]
        return [_seq(x), _seq(y), _seq(z)], walk, [_seq(p) for p in held], _seq(again), x

    three, walk, held, last, x = _one_callback(ends, 30, body)
    assert three == [0, 1, 2]
    assert walk == list(range(30))
    assert held == list(range(30))
    assert last == 29
    with pytest.raises(ValueError, match="only during the reader callback"):
        len(x)


def test_a_kept_packet_stays_expired_while_later_batches_reuse_objects(ends):
    a, b = ends
    kept = []
    later = []
    done = threading.Event()
    calls = [0]

    def on_batch(batch):
        calls[0] += 1
        if calls[0] == 1:
            for p in batch:
                kept.append(p)
                break                   # an iterator left early, its packet kept
            kept.append(batch[1])
        else:
            for p in batch:             # objects reused in this batch must never be the kept ones
                later.append((id(p), _seq(p), any(p is k for k in kept)))
            for i in range(len(batch)):
                q = batch[i]
                later.append((id(q), _seq(q), any(q is k for k in kept)))
            if calls[0] >= 4:
                done.set()

    with b.start_reader(on_batch, batch_size=8):
        for round_ in range(4):
            a.send_batch([minimal_ipv4(60, 100 * round_ + i) for i in range(8)])
            deadline = 50
            while calls[0] <= round_ and deadline:
                threading.Event().wait(0.02)
                deadline -= 1
        assert done.wait(5)
    assert not any(is_kept for _, _, is_kept in later)
    assert sorted({s for _, s, _ in later}) == sorted(100 * r + i for r in range(1, 4) for i in range(8))
    for p in kept:
        with pytest.raises(ValueError, match="only during the reader callback"):
            p[0]
        assert repr(p) == "<fasttun.Packet (expired)>"


@pytest.mark.parametrize("pipeline", [0, 2])
def test_many_batches_through_reused_objects_keep_their_content(ends, pipeline):
    """Batch objects and their spare packets move between arenas (pipeline=2 alternates two): every packet is
    seen once, in order, with its own bytes."""
    a, b = ends
    total = 600
    seqs = []
    done = threading.Event()

    def on_batch(batch):
        for p in batch:
            seqs.append(_seq(p))
        if len(batch):
            assert _seq(batch[0]) == seqs[-len(batch)]
        if len(seqs) >= total:
            done.set()

    with b.start_reader(on_batch, batch_size=16, pipeline=pipeline):
        for start in range(0, total, 50):
            a.send_batch([minimal_ipv4(60, i) for i in range(start, start + 50)], on_full="wait", timeout=5)
        assert done.wait(10)
    assert seqs == list(range(total))


def test_memoryview_of_a_packet_keeps_its_bytes_and_the_arena(ends):
    a, b = ends
    views = []
    packets = []
    count = [0]
    done = threading.Event()

    def on_batch(batch):
        if not views:
            for p in batch:
                views.append(memoryview(p))     # the packet itself is dropped: only the export holds it
            for i in range(len(batch)):
                views.append(memoryview(batch[i]))
            packets.append(batch[0])
        count[0] += len(batch)
        if count[0] >= 64:
            done.set()

    with b.start_reader(on_batch, batch_size=8) as reader:
        a.send_batch([minimal_ipv4(60, i) for i in range(8)])
        threading.Event().wait(0.1)
        a.send_batch([minimal_ipv4(60, 1000 + i) for i in range(56)])
        assert done.wait(5)
    assert [seq_of(v) for v in views] == list(range(8)) * 2   # later batches went into a fresh arena
    assert reader.stats.arena_swaps >= 1
    with pytest.raises(ValueError):
        packets[0][0]                    # the packet object expired even though its arena is pinned
    for v in views:
        v.release()


def test_packets_of_a_kept_batch_stay_valid_and_keep_it_alive(ends):
    a, b = ends
    a.send_batch([minimal_ipv4(60, i) for i in range(10)])
    batch = b.recv_batch(10, timeout=1)
    assert [_seq(p) for p in batch] == list(range(10))
    held = [p for p in batch]
    x, y = batch[3], batch[4]
    it = iter(batch)
    del batch
    gc.collect()
    assert [_seq(p) for p in held] == list(range(10))
    assert (_seq(x), _seq(y)) == (3, 4)
    assert [_seq(p) for p in it] == list(range(10))


def test_an_iterator_kept_past_the_callback_raises(ends):
    def body(batch):
        it = iter(batch)
        next(it)
        return it

    it = _one_callback(ends, 5, body)
    with pytest.raises(ValueError, match="only during the reader callback"):
        next(it)
