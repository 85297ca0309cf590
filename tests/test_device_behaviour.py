"""What every device does, written once and run on every backend: an in-memory pair, a real Linux TUN device in a
namespace of the test's own (the kernel on the other side), and a Wintun adapter against the fake wintun.dll (under
Wine, through tests/test_windows_python.py). A backend's own tests (test_pair.py, test_linux_tun.py,
test_wintun_python.py) keep what only it does.

Each backend is a Link: the device under test, a way to make datagrams arrive at it (``inject``), the IP packet
that carries a datagram out through it (``outgoing``) and what the other side received (``received``). Datagrams
carry a sequence number, so order and loss are checked the same way whatever built the packets."""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import fasttun
from packets import ipv4_udp, udp_payload
from threads import wait_stopped
from test_wintun_python import driver, fake, new_name  # noqa: F401 - the Wintun link's fixtures

LOCAL4, PEER4 = "10.203.0.1", "10.203.0.2"
IN_PORT, OUT_PORT = 9100, 7100  # datagrams towards the device / from the device to a socket of ours


def payload(seq: int) -> bytes:
    return struct.pack("!I", seq) + b"behaviour"


def seq_of(packet: Any) -> int | None:
    """The sequence number of one of our datagrams (None for anything else the system sends, like IPv6 ND)."""
    p = bytes(packet)
    if len(p) < 28 or p[0] >> 4 != 4 or p[9] != 17:
        return None
    ihl = (p[0] & 0x0F) * 4
    if struct.unpack_from("!H", p, ihl + 2)[0] != IN_PORT:
        return None
    return int(struct.unpack_from("!I", udp_payload(p))[0])


def ours(packets: Any) -> list[int]:
    return [s for s in map(seq_of, packets) if s is not None]


class Link:
    dev: fasttun.Tun

    def inject(self, seqs: range) -> None:
        raise NotImplementedError

    def outgoing(self, seq: int) -> bytes:
        """A packet that, sent through the device, reaches our side as datagram `seq`."""
        return ipv4_udp(PEER4, LOCAL4, 5555, OUT_PORT, payload(seq), ident=seq)

    def received(self, count: int, timeout: float = 5.0) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        self.dev.close()


class PairLink(Link):
    def __init__(self) -> None:
        self.dev, self.peer = fasttun.pair()

    def inject(self, seqs: range) -> None:
        self.peer.send_batch([ipv4_udp(PEER4, LOCAL4, 5555, IN_PORT, payload(i), ident=i) for i in seqs])

    def received(self, count: int, timeout: float = 5.0) -> list[int]:
        got: list[int] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            batch = self.peer.recv_batch(256, timeout=0.2)
            got.extend(struct.unpack_from("!I", udp_payload(p))[0] for p in batch)
        return got

    def close(self) -> None:
        self.dev.close()
        self.peer.close()


class TunLink(Link):
    """The kernel is the other side: a socket of ours sends to PEER4 (routed into the device) and receives on
    LOCAL4 what the device sends."""

    def __init__(self) -> None:
        self.dev = fasttun.Tun("fttb0", addresses=[f"{LOCAL4}/24"], txqueuelen=20000)
        # no IPv6 on the link: the kernel would send router solicitations of its own into the device
        with open("/proc/sys/net/ipv6/conf/fttb0/disable_ipv6", "w") as f:
            f.write("1")
        self.dev.up()
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: we are root
        self.sink.bind((LOCAL4, OUT_PORT))

    def inject(self, seqs: range) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOCAL4, 5555))
            for i in seqs:
                s.sendto(payload(i), (PEER4, IN_PORT))

    def received(self, count: int, timeout: float = 5.0) -> list[int]:
        got: list[int] = []
        self.sink.settimeout(timeout)
        try:
            while len(got) < count:
                data, _ = self.sink.recvfrom(2048)
                got.append(struct.unpack_from("!I", data)[0])
        except socket.timeout:
            pass
        return got

    def close(self) -> None:
        self.dev.close()
        self.sink.close()


class WintunLink(Link):
    """The fake wintun.dll's ring is the other side (tests/wintun_fake)."""

    def __init__(self, the_fake: Any, name: str) -> None:
        self.fake = the_fake
        self.dev = fasttun.Tun(name)

    def inject(self, seqs: range) -> None:
        packets = [ipv4_udp(PEER4, LOCAL4, 5555, IN_PORT, payload(i), ident=i) for i in seqs]
        assert self.fake.inject(packets) == len(packets)

    def received(self, count: int, timeout: float = 5.0) -> list[int]:
        got: list[int] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            sent = self.fake.read_sent()
            got.extend(struct.unpack_from("!I", udp_payload(p))[0] for p in sent)
            if not sent:
                time.sleep(0.01)
        return got


@pytest.fixture(params=["pair", "tun", "wintun"])
def link(request: pytest.FixtureRequest) -> Iterator[Link]:
    made: Link
    if request.param == "pair":
        made = PairLink()
    elif request.param == "tun":
        if not sys.platform.startswith("linux"):
            pytest.skip("a real TUN device in a namespace: Linux only")
        request.getfixturevalue("netns")
        made = TunLink()
    else:
        if sys.platform != "win32":
            pytest.skip("Wintun runs under Windows (on Linux: under Wine, see tests/test_windows_python.py)")
        made = WintunLink(request.getfixturevalue("driver"), new_name())
    try:
        yield made
    finally:
        made.close()


# ---- receiving -------------------------------------------------------------------------------------------


def test_recv_returns_what_arrives_in_order(link: Link) -> None:
    link.inject(range(300))
    got: list[int] = []
    while len(got) < 300:
        p = link.dev.recv(timeout=3)
        assert p is not None, f"only {len(got)} of 300 arrived"
        got.extend(ours([p]))
    assert got == list(range(300))


def test_recv_batch_gathers_many_per_call_in_order(link: Link) -> None:
    link.inject(range(2000))
    got: list[int] = []
    calls = 0
    while len(got) < 2000:
        batch = link.dev.recv_batch(64, timeout=3)
        assert len(batch), f"only {len(got)} of 2000 arrived"
        calls += 1
        got.extend(ours(batch))
    assert got == list(range(2000))
    assert calls < 2000 / 4


def test_the_reader_delivers_everything_in_order_and_counts_it(link: Link) -> None:
    got: list[int] = []
    done = threading.Event()

    def on_batch(batch: fasttun.Batch) -> None:
        got.extend(ours(batch))
        if len(got) >= 3000:
            done.set()

    with link.dev.start_reader(on_batch, batch_size=64) as reader:
        link.inject(range(3000))
        assert done.wait(10), f"only {len(got)} of 3000 arrived"
    assert got == list(range(3000))
    assert reader.stats.packets >= 3000 and link.dev.stats.rx_packets >= 3000


def test_recv_times_out_with_nothing_waiting(link: Link) -> None:
    t0 = time.monotonic()
    assert link.dev.recv(timeout=0.2) is None
    assert 0.15 <= time.monotonic() - t0 < 2.0
    assert len(link.dev.recv_batch(8, timeout=0)) == 0


def test_recv_into_a_small_buffer_keeps_the_packet_for_the_next_receive(link: Link) -> None:
    link.inject(range(1))
    small = bytearray(10)
    with pytest.raises(ValueError, match="kept for the next receive"):
        while True:  # the system may send something of its own first; ours is larger than 10 bytes anyway
            if link.dev.recv_into(small, timeout=3) == 0:
                pytest.fail("nothing arrived")
    kept = link.dev.recv(timeout=0)
    assert kept is not None and len(kept) > 10
    if seq_of(kept) is None:  # something of the system's was kept; ours follows
        kept = link.dev.recv(timeout=3)
    assert seq_of(kept) == 0


# ---- sending ---------------------------------------------------------------------------------------------


def test_send_batch_reaches_the_other_side_in_order_and_is_counted(link: Link) -> None:
    before = link.dev.stats.tx_packets
    assert link.dev.send_batch([link.outgoing(i) for i in range(500)]) == 500
    assert link.received(500) == list(range(500))
    assert link.dev.stats.tx_packets - before == 500


def test_a_bad_packet_stops_the_whole_batch_and_the_device_still_works(link: Link) -> None:
    good = [link.outgoing(i) for i in range(3)]
    with pytest.raises(ValueError, match="packet 1"):
        link.dev.send_batch([good[0], b"\x45not an ip packet", good[2]])
    assert link.received(1, timeout=0.3) == []  # nothing of that batch went
    assert link.dev.send(link.outgoing(7)) == 1
    assert link.received(1) == [7]


def test_a_received_batch_can_be_sent_on_as_it_is(link: Link) -> None:
    """The forwarder's pattern: what one call received goes out with one call, no copy in Python."""
    link.inject(range(100))
    got: list[int] = []
    while len(got) < 100:
        batch = link.dev.recv_batch(64, timeout=3)
        assert len(batch)
        got.extend(ours(batch))
    out = fasttun.make_batch([link.outgoing(i) for i in got])
    assert link.dev.send_batch(out) == 100
    assert link.received(100) == list(range(100))


# ---- lifecycle -------------------------------------------------------------------------------------------


def test_close_wakes_a_receive_blocked_in_another_thread(link: Link) -> None:
    outcome: list[BaseException | None] = []

    def blocked() -> None:
        try:
            link.dev.recv()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    link.dev.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 3
    assert isinstance(outcome[0], fasttun.TunClosedError)


def test_every_call_on_a_closed_device_says_closed(link: Link) -> None:
    link.dev.close()
    assert link.dev.closed
    calls = [lambda: link.dev.recv(timeout=0), lambda: link.dev.recv_batch(4, timeout=0),
             lambda: link.dev.recv_into(bytearray(2048), timeout=0), lambda: link.dev.send(link.outgoing(0)),
             lambda: link.dev.send_batch([link.outgoing(0)]), lambda: link.dev.start_reader(lambda b: None),
             lambda: link.dev.mtu]
    for call in calls:
        with pytest.raises(fasttun.TunClosedError):
            call()
    link.dev.close()  # twice is fine


def test_a_callback_that_raises_stops_its_reader_and_stop_raises_it(link: Link) -> None:
    def on_batch(batch: fasttun.Batch) -> None:
        raise KeyError("from the callback")

    reader = link.dev.start_reader(on_batch)
    link.inject(range(5))
    wait_stopped(reader)
    with pytest.raises(KeyError, match="from the callback"):
        reader.stop()
    assert link.dev.send(link.outgoing(1)) == 1  # the device outlives its reader
    assert link.received(1) == [1]


def test_a_device_dropped_without_close_releases_what_it_held(link: Link) -> None:
    reader = link.dev.start_reader(lambda batch: None)
    dev = link.dev
    del reader
    link.dev = None  # type: ignore[assignment]
    del dev
    import gc

    gc.collect()
    # nothing hangs, and the registry of running readers empties once the thread has left
    deadline = time.monotonic() + 5
    while fasttun._core.running_readers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not fasttun._core.running_readers()
    link.dev = _Closed()  # type: ignore[assignment]


class _Closed:
    def close(self) -> None:
        pass
