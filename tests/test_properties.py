"""Property-based tests (hypothesis) of every entry point that takes sizes or buffers from Python.

Each property is checked against an independent model written here from the documented rules (not from the C
code): which packets a device accepts, what a batch holds, how a list indexes and slices. Examples are bounded so
the file runs in well under a minute; FASTTUN_HYPOTHESIS_EXAMPLES scales them for a longer hunt by hand."""

from __future__ import annotations

import array
import os
import re
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fasttun
from buffers import callback_buffer

SCALE = float(os.environ.get("FASTTUN_HYPOTHESIS_EXAMPLES", "1"))
MAX_PACKET = 65535
MAX_SUPER = 65535 + 40
MTUS = [68, 576, 1280, 1500, 9000, 65535]


def bounded(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


# ---- the model of the packet rules (README: 1..65535 bytes, at most the MTU, an IPv4/IPv6 header that fits) ----

def problem(p: bytes, mtu: int) -> str | None:
    """None if a device with this MTU must accept p, else a regex the error message must match."""
    n = len(p)
    if n == 0:
        return "empty"
    if n > MAX_PACKET:
        return "65535"
    if n > mtu:
        return f"MTU of {mtu}"
    version = p[0] >> 4
    if version == 4:
        ihl = (p[0] & 0x0F) * 4
        if n < 20:
            return "shorter than the 20-byte"
        if ihl < 20 or ihl > n:
            return "header length"
        total = int.from_bytes(p[2:4], "big")
        if total < ihl or total > n:
            return "total length"
        return None
    if version == 6:
        if n < 40:
            return "shorter than the 40-byte"
        if 40 + int.from_bytes(p[4:6], "big") > n:
            return "payload length"
        return None
    return "version"


def honest(p: bytes) -> bytes:
    """p with its IPv4 total length / IPv6 payload length saying the truth (where it has room for them)."""
    if p and p[0] >> 4 == 4 and len(p) >= 4:
        return p[:2] + struct.pack("!H", min(len(p), 0xFFFF)) + p[4:]
    if p and p[0] >> 4 == 6 and len(p) >= 40:
        return p[:4] + struct.pack("!H", min(len(p) - 40, 0xFFFF)) + p[6:]
    return p


FIRST_BYTES = st.one_of(st.sampled_from([0x45, 0x46, 0x4F, 0x44, 0x40, 0x60, 0x6F, 0x00, 0x50, 0xF0, 0x35]),
                        st.integers(0, 255))


@st.composite
def raw_packets(draw, mtu: int) -> bytes:
    """Arbitrary bytes with the sizes that matter: tiny, around the header sizes, around the MTU and the limit.
    Only the first bytes are drawn (hypothesis' buffer is small); the rest is a pattern."""
    n = draw(st.one_of(st.integers(0, 64), st.integers(max(0, mtu - 3), mtu + 3), st.integers(0, mtu + 8),
                       st.sampled_from([19, 20, 39, 40, 65535, 65536])))
    head = bytes([draw(FIRST_BYTES)]) + draw(st.binary(max_size=min(max(n - 1, 0), 63)))
    head = head[:n]
    return head + bytes((i * 7) & 0xFF for i in range(n - len(head)))


@pytest.fixture(scope="module")
def pairs():
    made = {mtu: fasttun.pair(mtu=mtu) for mtu in MTUS}
    yield made
    for a, b in made.values():
        a.close()
        b.close()


def clean(pairs, mtu: int) -> tuple[fasttun.Tun, fasttun.Tun]:
    """The pair for this MTU with nothing left queued by an earlier (possibly failed) example."""
    a, b = pairs[mtu]
    drain(a)
    drain(b)
    return a, b


def drain(b: fasttun.Tun) -> list[bytes]:
    out: list[bytes] = []
    while True:
        batch = b.recv_batch(256, timeout=0)
        if not batch:
            return out
        out.extend(batch.copy())


AS_BUFFER = st.sampled_from([bytes, bytearray, memoryview, lambda p: array.array("B", p)])


# ---- send / send_batch ------------------------------------------------------------------------------------

@bounded(300)
@given(mtu=st.sampled_from(MTUS), data=st.data(), wrap=AS_BUFFER)
def test_send_accepts_exactly_the_valid_packets_and_delivers_them_intact(pairs, mtu, data, wrap):
    a, b = clean(pairs, mtu)
    p = honest(data.draw(raw_packets(mtu)))
    why = problem(p, mtu)
    before = a.stats.tx_rejected
    if why is None:
        assert a.send(wrap(p)) == 1
        assert b.recv(timeout=1) == p
    else:
        with pytest.raises(ValueError, match=why):
            a.send(wrap(p))
        assert a.stats.tx_rejected == before + 1
    assert drain(b) == []


@bounded(200)
@given(mtu=st.sampled_from(MTUS), data=st.data())
def test_send_refuses_length_fields_that_lie(pairs, mtu, data):
    a, b = clean(pairs, mtu)
    p = data.draw(raw_packets(mtu))
    v4 = len(p) >= 20 and p[0] >> 4 == 4 and 20 <= (p[0] & 15) * 4 <= len(p)
    v6 = len(p) >= 40 and p[0] >> 4 == 6
    assume((v4 or v6) and len(p) <= mtu)
    lie = data.draw(st.sampled_from(["zero", "short", "long"]))
    if v4:
        ihl = (p[0] & 15) * 4
        if lie == "zero":
            total = 0
        elif lie == "short":
            total = data.draw(st.integers(0, ihl - 1))
        else:
            assume(len(p) < 0xFFFF)
            total = data.draw(st.integers(len(p) + 1, 0xFFFF))
        p = p[:2] + struct.pack("!H", total) + p[4:]
    else:
        assume(lie == "long" and len(p) - 40 < 0xFFFF)
        p = p[:4] + struct.pack("!H", data.draw(st.integers(len(p) - 40 + 1, 0xFFFF))) + p[6:]
    assert problem(p, mtu) is not None
    with pytest.raises(ValueError, match="length"):
        a.send(p)
    assert drain(b) == []


@bounded(200)
@given(mtu=st.sampled_from(MTUS), data=st.data(), wrap=AS_BUFFER)
def test_send_batch_sends_all_or_nothing(pairs, mtu, data, wrap):
    a, b = clean(pairs, mtu)
    packets = [honest(p) for p in data.draw(st.lists(raw_packets(mtu), max_size=12))]
    first_bad = next((i for i, p in enumerate(packets) if problem(p, mtu) is not None), None)
    before = a.stats.tx_rejected
    if first_bad is None:
        assert a.send_batch([wrap(p) for p in packets]) == len(packets)
        assert drain(b) == packets
        return
    why = problem(packets[first_bad], mtu)
    where = f"packet {first_bad} of {len(packets)}: " if len(packets) > 1 else ""
    with pytest.raises(ValueError, match=re.escape(where) + ".*" + why):
        a.send_batch([wrap(p) for p in packets])
    assert a.stats.tx_rejected == before + 1
    assert drain(b) == []
    assert a.send(packets[0] if first_bad else fasttun_ok()) == 1  # the device still works
    assert len(drain(b)) == 1


def fasttun_ok() -> bytes:
    return honest(bytes([0x45]) + bytes(59))


MUTATIONS = st.sampled_from(["clear", "delete_rest", "delete_one", "append", "insert", "replace", "extend", "none"])


@bounded(150)
@given(n=st.integers(1, 80), victim=st.data(), mutation=MUTATIONS)
def test_send_batch_with_the_list_changed_during_the_call(pairs, n, victim, mutation):
    """A buffer export that changes the list: send_batch must neither crash nor send what it never saw. It may
    refuse (ValueError/RuntimeError, nothing sent) or send the packets it took (the list before or after)."""
    a, b = clean(pairs, 1500)
    originals = [fasttun_ok()[:20] + struct.pack("!I", i) + bytes(36) for i in range(n)]
    originals = [honest(p) for p in originals]
    extra = honest(bytes([0x45]) + bytes(19) + b"EXTRA" + bytes(35))
    packets: list[object] = list(originals)
    k = victim.draw(st.integers(0, n - 1))

    def mutate() -> None:
        if mutation == "clear":
            packets.clear()
        elif mutation == "delete_rest":
            del packets[1:]
        elif mutation == "delete_one" and packets:
            del packets[-1]
        elif mutation == "append":
            packets.append(extra)
        elif mutation == "insert":
            packets.insert(0, extra)
        elif mutation == "replace":
            packets[-1] = extra
        elif mutation == "extend":
            packets.extend([extra] * 200)

    packets[k] = callback_buffer(originals[k], mutate)
    try:
        sent = a.send_batch(packets)
    except (ValueError, RuntimeError):
        sent = None
    got = drain(b)
    if sent is None:
        assert got == []
        return
    after = [p if isinstance(p, bytes) else originals[k] for p in packets]
    assert sent == len(got)
    assert got in (originals, after), "send_batch sent a list it was never given"


# ---- recv_into --------------------------------------------------------------------------------------------

BUFFER_KINDS = st.sampled_from(["bytearray", "memoryview", "array", "numpy"])


def writable(kind: str, size: int):
    if kind == "bytearray":
        return bytearray(b"\xAA" * size)
    if kind == "memoryview":
        return memoryview(bytearray(b"\xAA" * (size + 8)))[4:4 + size]
    if kind == "array":
        return array.array("B", b"\xAA" * size)
    np = pytest.importorskip("numpy")
    return np.full(size, 0xAA, dtype=np.uint8)


@bounded(200)
@given(size=st.one_of(st.integers(20, 200), st.integers(1400, 1500), st.sampled_from([20, 1500])),
       buf_size=st.one_of(st.integers(0, 300), st.integers(1390, 1510), st.just(70000)), kind=BUFFER_KINDS)
def test_recv_into_any_buffer_size(pairs, size, buf_size, kind):
    a, b = clean(pairs, 1500)
    p = honest(bytes([0x45]) + bytes(range(256)) * (size // 256) + bytes(size % 256))[:size]
    p = honest(p)
    assert a.send(p) == 1
    buf = writable(kind, buf_size)
    if buf_size >= size:
        assert b.recv_into(buf, timeout=1) == size
        raw = bytes(buf)
        assert raw[:size] == p and raw[size:] == b"\xAA" * (buf_size - size)
    else:
        with pytest.raises(ValueError, match=f"{size} bytes"):
            b.recv_into(buf, timeout=1)
        assert bytes(buf) == b"\xAA" * buf_size  # nothing written
        big = bytearray(2000)
        assert b.recv_into(big, timeout=1) == size and bytes(big[:size]) == p  # the packet was kept
    assert drain(b) == []


# ---- make_batch -------------------------------------------------------------------------------------------

def patterned(count: int, sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * sizes[i % len(sizes)] for i in range(count)]


def check_batch(batch, packets: list[bytes]) -> None:
    assert len(batch) == len(packets)
    assert list(batch.lengths) == [len(p) for p in packets]
    offsets = list(batch.offsets)
    assert offsets == [sum(len(p) for p in packets[:i]) for i in range(len(packets))] if len(packets) < 500 \
        else offsets[0] == 0 and all(offsets[i + 1] - offsets[i] == len(packets[i]) for i in range(len(packets) - 1))
    assert batch.nbytes == sum(map(len, packets))
    assert bytes(batch.buffer) == b"".join(packets)
    assert batch.copy() == packets


GSO = st.tuples(st.integers(0, 255), st.integers(0, 255), *[st.integers(0, 65535)] * 4)


@bounded(60)
@given(count=st.one_of(st.integers(1, 70), st.integers(1, 65536), st.sampled_from([1, 64, 65535, 65536])),
       sizes=st.lists(st.integers(0, 2048), min_size=1, max_size=4), with_gso=st.booleans(), data=st.data())
def test_make_batch_holds_copies_of_any_count_of_packets(count, sizes, with_gso, data):
    """Packets of up to 2,048 bytes: always within what the arena reserved per packet, even before defect 1."""
    budget = 8 << 20
    sizes = [min(s, budget // count) for s in sizes]
    packets = patterned(count, sizes)
    gso = None
    if with_gso:
        tuples = data.draw(st.lists(GSO, min_size=1, max_size=3))
        gso = [tuples[i % len(tuples)] for i in range(count)]
    batch = fasttun.make_batch(packets, gso=gso)
    check_batch(batch, packets)
    assert batch.is_super == with_gso
    if gso is not None:
        for i in {0, count - 1, count // 2}:
            assert batch.gso(i) == gso[i] and batch.gso(i - count) == gso[i]


@bounded(30)
@given(gso=st.lists(GSO, min_size=1, max_size=20))
def test_vnet_headers_hold_each_packets_gso_metadata(gso):
    batch = fasttun.make_batch([b"\x45" + bytes(19)] * len(gso), gso=gso)
    raw = bytes(batch.vnet_headers)
    assert len(raw) == 10 * len(gso)
    assert [struct.unpack_from("=BB4H", raw, 10 * i) for i in range(len(gso))] == gso


@bounded(40)
@given(count=st.integers(1, 1024), sizes=st.lists(st.integers(0, MAX_SUPER), min_size=1, max_size=4),
       with_gso=st.booleans())
def test_make_batch_of_packets_up_to_the_limits(count, sizes, with_gso):
    limit = MAX_SUPER if with_gso else MAX_PACKET
    sizes = [min(s, limit, (48 << 20) // count) for s in sizes]
    packets = patterned(count, sizes)
    batch = fasttun.make_batch(packets, gso=[(0, 0, 0, 0, 0, 0)] * count if with_gso else None)
    check_batch(batch, packets)


@bounded(60)
@given(extra=st.integers(1, 100), with_gso=st.booleans(), count=st.integers(0, 3))
def test_make_batch_refuses_packets_over_the_limit(extra, with_gso, count):
    limit = MAX_SUPER if with_gso else MAX_PACKET
    packets = [b"\x45" * 20] * count + [bytes(limit + extra)]
    gso = [(0, 0, 0, 0, 0, 0)] * len(packets) if with_gso else None
    with pytest.raises(ValueError, match=f"{limit + extra} bytes is larger than {limit}"):
        fasttun.make_batch(packets, gso=gso)


@bounded(80)
@given(count=st.integers(1, 5), bad=st.one_of(
    st.tuples(*[st.integers(0, 65535)] * 5),
    st.tuples(*[st.integers(0, 65535)] * 7),
    st.tuples(st.integers(256, 10**6), *[st.integers(0, 65535)] * 5),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(-10**6, -1), *[st.integers(0, 65535)] * 3),
    st.tuples(st.integers(0, 255), st.integers(0, 255), *[st.integers(0, 65535)] * 3, st.integers(65536, 10**9))))
def test_make_batch_refuses_malformed_gso_tuples(count, bad):
    packets = [b"\x45" + bytes(19)] * count
    gso = [(0, 0, 0, 0, 0, 0)] * (count - 1) + [bad]
    with pytest.raises(ValueError, match="gso tuple"):
        fasttun.make_batch(packets, gso=gso)
    with pytest.raises(ValueError, match="one tuple per packet"):
        fasttun.make_batch(packets, gso=[(0, 0, 0, 0, 0, 0)] * (count + 1))


def test_make_batch_refuses_no_packets_and_too_many():
    with pytest.raises(ValueError, match="1..65536 packets, got 0"):
        fasttun.make_batch([])
    with pytest.raises(ValueError, match="1..65536 packets, got 65537"):
        fasttun.make_batch([b""] * 65537)


# ---- Batch indexing and slicing against a list ----------------------------------------------------------

def outcome(f):
    try:
        return "ok", f()
    except (IndexError, ValueError, TypeError, OverflowError) as exc:
        return type(exc).__name__, None


INDEXES = st.one_of(st.integers(-80, 80), st.sampled_from([2**31, -(2**31) - 1, 2**63 - 1, -(2**63)]))
HUGE = [2**63, -(2**63) - 1, 10**30]
SLICE_PART = st.one_of(st.none(), st.integers(-80, 80), st.sampled_from([2**63, -(2**63) - 5, 10**30]))


@bounded(200)
@given(sizes=st.lists(st.integers(0, 100), min_size=1, max_size=40), index=INDEXES,
       part=st.tuples(SLICE_PART, SLICE_PART, st.one_of(st.none(), st.integers(-5, 5))), source=st.booleans())
def test_batch_indexes_and_slices_like_a_list(pairs, sizes, index, part, source):
    packets = patterned(len(sizes), sizes)
    if source:  # a batch from a device instead of make_batch
        a, b = clean(pairs, 1500)
        packets = [honest(bytes([0x45]) + bytes(19 + s)) for s in sizes]
        assert a.send_batch(packets) == len(packets)
        batch = b.recv_batch(64, timeout=1)
    else:
        batch = fasttun.make_batch(packets)
    model = list(packets)
    assert [bytes(p) for p in batch] == model
    kind, got = outcome(lambda: bytes(batch[index]))
    want_kind, want = outcome(lambda: model[index])
    assert kind == want_kind and got == want, (index, kind, want_kind)
    if kind != "ok":
        assert kind == "IndexError"
    s = slice(*part)
    kind, got = outcome(lambda: [bytes(p) for p in batch[s]])
    want_kind, want = outcome(lambda: model[s])
    assert (kind, got) == (want_kind, want), s
    for bad in (1.0, "0", None, b"\x00"):
        with pytest.raises(TypeError):
            batch[bad]


@pytest.mark.parametrize("index", HUGE)
def test_batch_index_beyond_ssize_t_is_an_index_error_as_for_a_list(index):
    batch = fasttun.make_batch([b"\x45" + bytes(19)])
    with pytest.raises(IndexError):
        [b"x"][index]
    with pytest.raises(IndexError):
        batch[index]


# ---- the offload paths reachable from Python: virtio-net headers checked before a super-packet is sent ----

@pytest.mark.root
def test_super_packets_with_any_header_are_refused_or_sent_and_the_device_still_works(netns):
    tun = fasttun.Tun("ftprop0", mtu=1500, addresses=["10.205.0.1/24"], up=True, offload=True,
                      offload_mode="super")
    peer = honest(bytes([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]) + bytes([10, 205, 0, 1, 10, 205, 0, 2])
                  + bytes(8))

    seen: set[str] = set()

    @bounded(150)
    @given(data=st.data(), gso=GSO)
    def one(data, gso):
        p = data.draw(raw_packets(MAX_SUPER))
        if not p or len(p) > MAX_SUPER:
            p = peer
        before = tun.stats
        try:
            sent = tun.send_batch(fasttun.make_batch([p], gso=[gso]))
        except ValueError as exc:
            assert re.search("super-packet|virtio-net|segment|GSO|bytes", str(exc)), exc
            assert tun.stats.tx_rejected == before.tx_rejected + 1
            assert tun.stats.tx_packets == before.tx_packets
            seen.add("refused")
        except OSError as exc:  # the kernel refused what our checks let through: an error, not a crash
            assert exc.errno is not None
            seen.add("kernel refused")
        else:
            assert sent in (0, 1)
            seen.add("sent")
        # the device still works: an ordinary packet (no segmentation) goes out
        assert tun.send_batch(fasttun.make_batch([peer], gso=[(0, 0, 0, 0, 0, 0)])) == 1

    try:
        one()
    finally:
        tun.close()
    assert {"refused", "sent"} <= seen, seen


@pytest.mark.root
def test_any_valid_packets_sent_to_a_coalescing_device_go_out(netns):
    """Segments mode coalesces ordinary packets per flow in C before they reach the kernel: arbitrary (valid)
    TCP and UDP packets must all be accepted and counted."""
    tun = fasttun.Tun("ftprop1", mtu=1500, addresses=["10.206.0.1/24"], up=True, offload=True,
                      offload_mode="segments")
    if not tun.offloads.get("tso4"):
        tun.close()
        pytest.skip("the kernel accepted no TCP offload on this device")

    @st.composite
    def transport(draw):
        proto = draw(st.sampled_from([6, 17]))
        payload = bytes([draw(st.integers(0, 255))]) * draw(st.integers(0, 1400))
        l4 = (struct.pack("!HHIIBBHHH", 1000, 2000, draw(st.integers(0, 2**32 - 1)), 0, 5 << 4,
                          draw(st.integers(0, 255)), 65535, draw(st.integers(0, 65535)), 0) if proto == 6
              else struct.pack("!HHHH", 1000, 2000, 8 + len(payload), draw(st.integers(0, 65535)))) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), draw(st.integers(0, 65535)), 0, 64, proto, 0,
                         bytes([10, 206, 0, 1]), bytes([10, 206, 0, 2]))
        return ip + l4

    @bounded(60)
    @given(packets=st.lists(transport(), min_size=1, max_size=40))
    def one(packets):
        before = tun.stats
        sent = tun.send_batch(packets)
        after = tun.stats
        assert sent + (after.tx_dropped_full - before.tx_dropped_full) == len(packets)
        assert after.tx_rejected == before.tx_rejected

    try:
        one()
    finally:
        tun.close()


def test_the_model_agrees_with_the_examples_in_the_readme():
    """The model itself: a test of the test, so a wrong model cannot make the properties vacuous."""
    assert problem(b"", 1500) == "empty"
    assert problem(honest(b"\x45" + bytes(19)), 1500) is None
    assert problem(honest(b"\x60" + bytes(39)), 1500) is None
    assert problem(b"\x45" + bytes(18), 1500) is not None
    assert problem(honest(b"\x46" + bytes(19)), 1500) == "header length"
    assert problem(honest(b"\x45" + bytes(1500)), 1500) is not None
    assert problem(b"\x45" + bytes(19), 1500) == "total length"  # total length 0


# ---- the pair as a bounded FIFO: any sequence of sends and receives against a model ---------------------

from collections import deque  # noqa: E402

from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: E402


def numbered(seq: int, size: int) -> bytes:
    return honest(bytes([0x45]) + bytes(19) + struct.pack("!I", seq) + bytes(size - 24))


class PairAgainstAQueue(RuleBasedStateMachine):
    """Sends (policy "drop"), receives of every kind, batches kept across later calls: the receiver sees exactly
    the model's queue, in order; a full queue drops and counts; a kept batch never changes under its owner."""

    @initialize(capacity=st.sampled_from([1, 3, 8, 64]))
    def open(self, capacity):
        self.a, self.b = fasttun.pair(mtu=1500, capacity=capacity, on_full="drop")
        self.capacity = capacity
        self.queue: deque[bytes] = deque()
        self.pending = False      # the head was taken off the device by a too-small recv_into and kept
        self.kept: list[tuple[object, list[bytes]]] = []
        self.seq = 0
        self.dropped = 0

    def teardown(self):
        if hasattr(self, "a"):
            self.a.close()
            self.b.close()

    def _room(self) -> int:
        return self.capacity - (len(self.queue) - (1 if self.pending else 0))

    def _next(self, size: int) -> bytes:
        self.seq += 1
        return numbered(self.seq, size)

    @rule(size=st.integers(24, 1500))
    def send(self, size):
        p = self._next(size)
        room = self._room()
        assert self.a.send(p) == (1 if room > 0 else 0)
        if room > 0:
            self.queue.append(p)
        else:
            self.dropped += 1

    @rule(sizes=st.lists(st.integers(24, 1500), max_size=70), as_batch=st.booleans())
    def send_batch(self, sizes, as_batch):
        packets = [self._next(s) for s in sizes]
        room = self._room()
        what = fasttun.make_batch(packets) if as_batch and packets else packets
        sent = self.a.send_batch(what)
        assert sent == min(len(packets), max(room, 0))
        self.queue.extend(packets[:sent])
        self.dropped += len(packets) - sent

    @rule()
    def recv(self):
        got = self.b.recv(timeout=0)
        assert got == (self.queue.popleft() if self.queue else None)
        self.pending = False if got is not None else self.pending

    @rule(size=st.integers(0, 1600))
    def recv_into(self, size):
        buf = bytearray(size)
        if not self.queue:
            assert self.b.recv_into(buf, timeout=0) == 0
            return
        head = self.queue[0]
        if len(head) > size:
            with pytest.raises(ValueError, match=f"{len(head)} bytes"):
                self.b.recv_into(buf, timeout=0)
            self.pending = True
            return
        assert self.b.recv_into(buf, timeout=0) == len(head) and bytes(buf[:len(head)]) == head
        self.queue.popleft()
        self.pending = False

    @rule(max_packets=st.integers(1, 100), keep=st.booleans())
    def recv_batch(self, max_packets, keep):
        batch = self.b.recv_batch(max_packets, timeout=0)
        take = 1 if self.pending else min(max_packets, len(self.queue))
        want = [self.queue.popleft() for _ in range(min(take, len(self.queue)))]
        self.pending = False
        assert batch.copy() == want
        if keep:
            self.kept.append((batch, want))

    @precondition(lambda self: self.kept)
    @rule(index=st.integers(0, 1000))
    def drop_a_kept_batch(self, index):
        del self.kept[index % len(self.kept)]

    @invariant()
    def kept_batches_never_change(self):
        for batch, want in getattr(self, "kept", []):
            assert batch.copy() == want and [bytes(p) for p in batch] == want

    @invariant()
    def drops_are_counted(self):
        if hasattr(self, "a"):
            assert self.a.stats.tx_dropped_full == self.dropped


TestPairAgainstAQueue = PairAgainstAQueue.TestCase
TestPairAgainstAQueue.settings = settings(max_examples=max(1, int(60 * SCALE)), stateful_step_count=30,
                                          deadline=None, database=None,
                                          suppress_health_check=[HealthCheck.too_slow])


# ---- readers: any batch size, any packet sizes, buffers kept past the callback ---------------------------

@bounded(40)
@given(batch_size=st.integers(1, 300), sizes=st.lists(st.integers(24, 1500), min_size=1, max_size=300),
       keep_every=st.integers(0, 4))
def test_reader_delivers_everything_in_order_and_what_a_callback_keeps_stays_intact(batch_size, sizes, keep_every):
    import threading
    import time

    np = pytest.importorskip("numpy")
    a, b = fasttun.pair()
    packets = [numbered(i, s) for i, s in enumerate(sizes)]
    got: list[bytes] = []
    views: list[memoryview] = []
    arrays: list[tuple[object, bytes]] = []
    done = threading.Event()

    def on_batch(batch):
        assert 1 <= len(batch) <= batch_size
        got.extend(batch.copy())
        if keep_every and len(got) % keep_every == 0:
            views.append(batch[0])                                       # a view: expires after the call
            arrays.append((np.frombuffer(batch[-1], dtype=np.uint8), bytes(batch[-1])))  # an export: pins
        if len(got) >= len(packets):
            done.set()

    with a, b:
        with b.start_reader(on_batch, batch_size=batch_size) as reader:
            assert a.send_batch(packets) == len(packets)
            deadline = time.monotonic() + 20
            while not done.is_set() and reader.running and time.monotonic() < deadline:
                done.wait(0.05)
        assert got == packets
        for view in views:
            with pytest.raises(ValueError):
                bytes(view)
        for array_, copy in arrays:
            assert array_.tobytes() == copy, "a kept NumPy array changed under its owner"
        if arrays:
            assert reader.stats.arena_swaps >= 1
