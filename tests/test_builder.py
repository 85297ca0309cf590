"""fasttun.BatchBuilder: packets built in place in one arena, handed out as a Batch that send_batch takes, and
never overwritten while a Batch of them is held. Checked against a plain list of bytes as the model."""

from __future__ import annotations

import gc
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fasttun
from packets import ipv4_udp, minimal_ipv4


def test_reserve_fills_in_place_and_append_copies():
    b = fasttun.BatchBuilder(max_packets=4, capacity=200)
    view = b.reserve(5, prefix=b"hdr")
    assert len(view) == 5
    view[:] = b"12345"
    b.append(b"plain")
    b.append(b"body", prefix=b"P:")
    assert len(b) == 3 and b.nbytes == 8 + 5 + 6 and b.room == 200 - 19
    batch = b.batch()
    assert batch.copy() == [b"hdr12345", b"plain", b"P:body"]
    assert [bytes(p) for p in batch] == batch.copy()


def test_a_batch_goes_through_send_batch_of_a_pair():
    a, peer = fasttun.pair()
    with a, peer:
        b = fasttun.BatchBuilder(max_packets=8, capacity=8 * 1500)
        sent = [ipv4_udp("10.0.0.1", "10.0.0.2", 1000 + i, 53, os.urandom(10 * i)) for i in range(8)]
        for p in sent:
            b.reserve(len(p))[:] = p
        assert a.send_batch(b.batch()) == 8
        got = peer.recv_batch(16, timeout=2)
        assert got.copy() == sent


def test_encrypt_into_a_reserved_view():
    crypto = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead")
    aead = crypto.ChaCha20Poly1305(os.urandom(32))
    b = fasttun.BatchBuilder(max_packets=16, capacity=16 * 1500)
    plain = [os.urandom(n) for n in (0, 1, 100, 1400)]
    for i, p in enumerate(plain):
        nonce = i.to_bytes(12, "big")
        aead.encrypt_into(nonce, p, None, b.reserve(len(p) + 16, nonce))
    for i, d in enumerate(b.batch()):
        d = bytes(d)
        assert d[:12] == i.to_bytes(12, "big")
        assert aead.decrypt(d[:12], d[12:], None) == plain[i]


def test_a_held_batch_is_never_overwritten_by_clear_and_reserve():
    b = fasttun.BatchBuilder(max_packets=2, capacity=64)
    b.append(b"first")
    held = b.batch()
    b.clear()
    assert b.arena_swaps == 1   # the held batch keeps its arena
    b.append(b"XXXXXXXXXX")
    b.reserve(3)[:] = b"YYY"
    assert held.copy() == [b"first"]
    assert b.batch().copy() == [b"XXXXXXXXXX", b"YYY"]


def test_a_held_packet_or_buffer_pins_the_arena_too():
    b = fasttun.BatchBuilder(max_packets=2, capacity=64)
    b.append(b"one")
    packet = b.batch()[0]            # the Batch itself is dropped, its packet is not
    b.clear()
    b.append(b"two")
    assert packet == b"one"
    b.clear()
    view = memoryview(b.batch().buffer) if len(b) else None
    b.append(b"three")
    view = b.batch().buffer          # a buffer of the arena, the Batch dropped
    swaps = b.arena_swaps
    b.clear()
    assert b.arena_swaps == swaps + 1
    b.append(b"four")
    assert bytes(view) == b"three"


def test_the_arena_is_reused_once_nothing_holds_it():
    b = fasttun.BatchBuilder(max_packets=4, capacity=64)
    for round_ in range(50):
        b.append(bytes([round_]) * 5)
        batch = b.batch()
        assert batch.copy() == [bytes([round_]) * 5]
        del batch
        b.clear()
    assert b.arena_swaps == 0


def test_views_from_reserve_expire_when_the_arena_is_reused():
    b = fasttun.BatchBuilder(max_packets=2, capacity=64)
    view = b.reserve(4)
    view[:] = b"abcd"
    b.clear()
    with pytest.raises(ValueError):
        view[:] = b"late"
    with pytest.raises(ValueError):
        len(view)
    b.append(b"new!")
    assert b.batch().copy() == [b"new!"]


def test_pop_takes_back_a_failed_packet_but_not_one_of_a_held_batch():
    b = fasttun.BatchBuilder(max_packets=4, capacity=64)
    b.append(b"keep")
    b.reserve(10)
    b.pop()
    assert len(b) == 1 and b.nbytes == 4
    held = b.batch()
    with pytest.raises(ValueError, match="still held"):
        b.pop()
    assert held.copy() == [b"keep"]
    del held
    gc.collect()
    b.pop()
    assert len(b) == 0
    with pytest.raises(IndexError):
        b.pop()


def test_pop_expires_the_views_of_the_packet_it_takes_back():
    # The README's pattern for a failed decryption: the view reserve() gave must not write into the next packet.
    b = fasttun.BatchBuilder(max_packets=8, capacity=256)
    kept = b.reserve(4)
    kept[:] = b"keep"
    v = b.reserve(10)
    b.pop()
    b.append(b"B" * 10)
    with pytest.raises(ValueError):
        v[:] = b"X" * 10
    with pytest.raises(ValueError):
        memoryview(v)
    assert "expired" in repr(v)
    kept[0] = ord("K")                      # the packet that stayed keeps a live view
    assert b.batch().copy() == [b"Keep", b"B" * 10]
    # a view of an earlier packet stays live when a later one, appended without a view, is popped
    b.clear()
    first = b.reserve(3)
    b.append(b"later")
    b.pop()
    first[:] = b"abc"
    assert b.batch().copy() == [b"abc"]


def test_a_view_of_a_packet_split_into_several_expires_with_the_first_of_them_popped():
    b = fasttun.BatchBuilder(max_packets=8, capacity=256)
    two = minimal_ipv4(28, 1) + minimal_ipv4(28, 2)
    view = b.reserve(len(two))
    view[:] = two
    assert b.split_ip() == 2
    b.pop()
    with pytest.raises(ValueError):
        view[:] = two
    assert b.batch().copy() == [minimal_ipv4(28, 1)]


def test_split_ip_keeps_a_remote_checksum_header_with_its_packet():
    """A decrypted train of a tunnel with remote checksums: packets, some behind the 4-byte header (0x1f)."""
    b = fasttun.BatchBuilder(max_packets=8, capacity=512)
    framed = bytes([0x1F, 16, 0, 20]) + minimal_ipv4(60, 2)
    b.append(minimal_ipv4(28, 1) + framed + minimal_ipv4(40, 3))
    assert b.split_ip() == 3
    assert b.batch().copy() == [minimal_ipv4(28, 1), framed, minimal_ipv4(40, 3)]
    for cut in (bytes([0x1F, 16, 0, 20]), framed[:-1], bytes([0x1F]) + framed[1:-1]):   # the packet is cut short
        b.clear()
        b.append(cut)
        with pytest.raises(ValueError, match="does not start an IPv4/IPv6 packet"):
            b.split_ip()


def test_pop_does_not_reuse_bytes_a_buffer_export_may_still_write():
    b = fasttun.BatchBuilder(max_packets=8, capacity=256)
    b.append(b"head")
    exported = memoryview(b.reserve(10))    # e.g. handed to a C library that keeps it
    b.pop()
    b.append(b"B" * 10)
    exported[:] = b"X" * 10
    assert b.batch().copy() == [b"head", b"B" * 10]
    exported.release()
    b.clear()                               # the gap goes with the arena's next use
    b.append(b"B" * 10)
    assert b.nbytes == 10


@pytest.mark.parametrize("max_packets, capacity", [(0, 10), (65537, 10), (-1, 10), (1, 0), (1, -5),
                                                   (1, (1 << 31) + 1)])
def test_hostile_sizes_are_refused(max_packets, capacity):
    with pytest.raises(ValueError, match="out of range"):
        fasttun.BatchBuilder(max_packets=max_packets, capacity=capacity)


def test_hostile_types_are_refused():
    with pytest.raises(TypeError):
        fasttun.BatchBuilder(max_packets=2.5)
    with pytest.raises(TypeError):
        fasttun.BatchBuilder(capacity=True)
    b = fasttun.BatchBuilder(2, 100)
    with pytest.raises(TypeError, match="bytes-like"):
        b.append("text")
    with pytest.raises(TypeError, match="prefix"):
        b.reserve(3, prefix=42)
    assert len(b) == 0


def test_reserve_beyond_what_fits_says_why_and_changes_nothing():
    b = fasttun.BatchBuilder(max_packets=2, capacity=100_000)
    with pytest.raises(ValueError, match="larger than 65535"):
        b.reserve(65536)
    with pytest.raises(ValueError, match="larger than 65535"):
        b.reserve(65530, prefix=b"123456")
    with pytest.raises(ValueError, match="cannot have -1 bytes"):
        b.reserve(-1)
    b.reserve(65535)
    with pytest.raises(ValueError, match="does not fit"):
        b.append(b"x" * 40000)
    b.append(b"x" * 30000)
    with pytest.raises(ValueError, match="full"):
        b.append(b"")
    assert len(b) == 2 and b.nbytes == 95535
    assert [len(p) for p in b.batch()] == [65535, 30000]


def test_an_empty_batch_sends_nothing():
    a, peer = fasttun.pair()
    with a, peer:
        assert a.send_batch(fasttun.BatchBuilder(1, 10).batch()) == 0


# ---- properties against a list model -------------------------------------------------------------------

operations = st.lists(st.one_of(
    st.tuples(st.just("append"), st.binary(max_size=300), st.binary(max_size=20)),
    st.tuples(st.just("reserve"), st.binary(max_size=300), st.binary(max_size=20)),
    st.tuples(st.just("pop")),
    st.tuples(st.just("batch"), st.booleans()),     # keep the batch or drop it
    st.tuples(st.just("clear")),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(max_packets=st.integers(1, 8), capacity=st.integers(1, 2000), ops=operations)
def test_the_builder_behaves_like_a_list_and_held_batches_never_change(max_packets, capacity, ops):
    b = fasttun.BatchBuilder(max_packets=max_packets, capacity=capacity)
    model: list[bytes] = []
    held: list[tuple[fasttun.Batch, list[bytes]]] = []
    frozen = 0   # packets of the model in a batch still held: pop() must refuse them
    views: list[tuple[int, object]] = []   # (packet index, the view reserve() gave): live until popped or cleared
    for op in ops:
        if op[0] in ("append", "reserve"):
            data, prefix = op[1], op[2]
            fits = len(model) < max_packets and sum(map(len, model)) + len(prefix) + len(data) <= capacity
            if not fits:
                with pytest.raises(ValueError):
                    if op[0] == "append":
                        b.append(data, prefix)
                    else:
                        b.reserve(len(data), prefix)
                continue
            if op[0] == "append":
                b.append(data, prefix)
            else:
                view = b.reserve(len(data), prefix)
                view[:] = data
                views.append((len(model), view))
            model.append(prefix + data)
        elif op[0] == "pop":
            if not model:
                with pytest.raises(IndexError):
                    b.pop()
            elif len(model) <= frozen:
                with pytest.raises(ValueError):
                    b.pop()
            else:
                b.pop()
                model.pop()
                for index, view in [v for v in views if v[0] >= len(model)]:
                    with pytest.raises(ValueError):
                        view[:] = b"X" * len(view)   # never into the packet that comes next
                views = [v for v in views if v[0] < len(model)]
        elif op[0] == "batch":
            batch = b.batch()
            assert batch.copy() == model
            if op[1]:
                held.append((batch, list(model)))
                frozen = max(frozen, len(model))
            del batch
        else:
            b.clear()
            model = []
            views = []
            frozen = 0
        for index, view in views:   # a live view shows its packet's bytes
            assert bytes(view) == model[index][len(model[index]) - len(view):]
        assert len(b) == len(model) and b.nbytes == sum(map(len, model))
        assert b.room == capacity - b.nbytes
        for batch, expected in held:
            assert batch.copy() == expected
    assert b.batch().copy() == model


def test_packets_are_buffers_that_strict_consumers_take():
    """cryptography's Rust bindings refuse a buffer without strides: a Packet (of any batch) must carry them,
    as input and as output of encrypt_into/decrypt_into."""
    batch = fasttun.make_batch([b"abcdefgh" * 4])
    assert memoryview(batch[0]).strides == (1,)
    crypto = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead")
    aead = crypto.ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    b = fasttun.BatchBuilder(2, 200)
    aead.encrypt_into(nonce, batch[0], None, b.reserve(32 + 16))
    sealed = b.batch()[0]
    assert aead.decrypt(nonce, bytes(sealed), None) == b"abcdefgh" * 4
    out = bytearray(32)
    aead.decrypt_into(nonce, sealed, None, out)
    assert out == b"abcdefgh" * 4
