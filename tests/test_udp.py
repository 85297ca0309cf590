"""fasttun.UdpEndpoint: a UDP socket with the batch API of a device (recvmmsg/sendmmsg, UDP GSO/GRO).

Most tests talk over loopback to plain ``socket`` sockets, which see exactly the datagrams on the wire; the
ones that change the loopback MTU run in a network namespace of their own."""

from __future__ import annotations

import os
import random
import socket
import struct
import sys
import time

import pytest

import fasttun
from threads import ended_by_close, wait_stopped

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UdpEndpoint is Linux-only")

OFFLOADS = fasttun.udp_offloads() if sys.platform.startswith("linux") else {"gso": False, "gro": False}


def need(feature: str) -> None:
    if not OFFLOADS[feature]:
        why = f"this kernel has no UDP {feature.upper()} (Linux 4.18+ for GSO, 5.0+ for GRO)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the UDP offload tests, but {why}")
        pytest.skip(why)


def datagrams(n: int, size: int, tag: int = 0) -> list[bytes]:
    """n distinct datagrams of `size` bytes: a tag and a sequence number, then filler."""
    return [struct.pack("!HI", tag, i) + bytes([i % 251]) * (size - 6) for i in range(n)]


def plain_socket(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:  # room for every datagram a test sends before it reads (root may exceed net.core.rmem_max)
        s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((host, 0))
    s.settimeout(2.0)
    return s


def receive_all(ep: fasttun.UdpEndpoint, count: int, deadline_s: float = 5.0) -> list[tuple[bytes, object]]:
    out: list[tuple[bytes, object]] = []
    deadline = time.monotonic() + deadline_s
    while len(out) < count and time.monotonic() < deadline:
        batch = ep.recv_batch(256, timeout=0.5)
        out.extend((bytes(p), batch.address(i)) for i, p in enumerate(batch))
    return out


@pytest.fixture
def connected_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    pa, pb = a.getsockname(), b.getsockname()
    a.close()
    b.close()
    eps = []

    def make(**options):
        x = fasttun.UdpEndpoint(bind=pa, peer=pb, rcvbuf=4 << 20, **options)
        y = fasttun.UdpEndpoint(bind=pb, peer=pa, rcvbuf=4 << 20, **options)
        eps.extend([x, y])
        return x, y

    yield make
    for ep in eps:
        ep.close()


# ---- sending ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
def test_a_batch_arrives_as_the_same_datagrams_in_order(gso):
    if gso:
        need("gso")
    peer = plain_socket()
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0), peer=peer.getsockname(), gso=gso) as ep:
        sent = datagrams(150, 1200) + [b"short tail"]
        assert ep.send_batch(sent) == len(sent)
        got = [peer.recv(65535) for _ in sent]
        assert got == sent
        s = ep.stats
        assert s.tx_packets == len(sent) and s.tx_bytes == sum(map(len, sent))
        if gso:  # runs of at most 64 equal datagrams (54 of 1200 bytes fit 64 KiB) per message
            assert 0 < s.gso_messages and s.tx_messages <= 4
            assert s.tx_calls == 1
        else:
            assert s.gso_messages == 0 and s.tx_messages == len(sent)
    peer.close()


def test_runs_break_at_size_changes_and_a_shorter_datagram_ends_a_run():
    need("gso")
    peer = plain_socket()
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0), peer=peer.getsockname()) as ep:
        sent = (datagrams(3, 1000) + [b"x" * 10] + datagrams(5, 700, tag=1) + datagrams(2, 900, tag=2)
                + [b""] + datagrams(70, 100, tag=3))
        assert ep.send_batch(sent) == len(sent)
        assert [peer.recv(65535) for _ in sent] == sent
        # 3x1000 + 10 | 5x700 | 2x900 | empty | 64x100 | 6x100
        assert ep.stats.tx_messages == 6
        assert ep.offloads["gso"] is True


def test_gso_and_gro_forced_off_are_reported_and_still_carry_everything(connected_pair):
    a, b = connected_pair(offload=False)
    assert a.offloads["gso"] is False and a.offloads["gro"] is False
    sent = datagrams(100, 1400)
    assert a.send_batch(sent) == 100
    got = receive_all(b, 100)
    assert [g[0] for g in got] == sent
    assert a.stats.tx_messages == 100 and a.stats.gso_messages == 0
    assert b.stats.gro_messages == 0 and b.stats.rx_messages == 100


def test_gro_delivers_a_coalesced_read_as_separate_datagrams(connected_pair):
    need("gso")
    need("gro")
    a, b = connected_pair()
    sent = datagrams(64, 1000) + [b"end"]
    assert a.send_batch(sent) == len(sent)
    got = receive_all(b, len(sent))
    assert [g[0] for g in got] == sent
    assert {g[1] for g in got} == {(a.name.split(":")[1], int(a.name.split(":")[2]))}
    s = b.stats
    assert s.gro_messages >= 1 and s.rx_messages < len(sent)
    assert s.rx_packets == len(sent) and s.rx_bytes == sum(map(len, sent))


def test_a_small_batch_takes_a_coalesced_read_over_several_calls(connected_pair):
    need("gso")
    a, b = connected_pair()
    sent = datagrams(40, 500)
    a.send_batch(sent)
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 40 and time.monotonic() < deadline:
        batch = b.recv_batch(3, timeout=0.5)
        assert len(batch) <= 3
        got.extend(batch.copy())
    assert got == sent


def test_gso_refused_for_segments_above_the_path_mtu_falls_back_and_counts_it(netns):
    need("gso")
    netns.run("ip", "link", "set", "lo", "mtu", "1500")
    peer = plain_socket()
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0), peer=peer.getsockname()) as ep:
        big = datagrams(5, 3000)  # a 3000-byte segment cannot leave as one packet of a 1500-byte route
        assert ep.send_batch(big) == 5
        assert [peer.recv(65535) for _ in big] == big  # sent one per message, fragmented by IP
        s = ep.stats
        assert s.gso_fallbacks == 1 and s.tx_packets == 5
        small = datagrams(10, 1000, tag=1)  # still segmented: the limit is per segment size
        assert ep.send_batch(small) == 10
        assert [peer.recv(65535) for _ in small] == small
        assert ep.stats.gso_messages >= 1 and ep.offloads["gso"] is True
    peer.close()


def test_ipv6_both_ways():
    try:
        probe = plain_socket(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = probe.getsockname()[1]
    with fasttun.UdpEndpoint(bind=("::1", 0), peer=("::1", port)) as ep:
        assert ep.family == socket.AF_INET6
        sent = datagrams(30, 1300)
        assert ep.send_batch(sent) == 30
        assert [probe.recv(65535) for _ in sent] == sent
        for d in sent[:5]:
            probe.sendto(d, ("::1", int(ep.name.rsplit(":", 1)[1])))
        got = receive_all(ep, 5)
        assert [g[0] for g in got] == sent[:5]
        assert got[0][1][:2] == ("::1", port)
        # the largest IPv6 payload is 65527 bytes, 20 more than IPv4 allows
        assert ep.send(b"z" * 65527) == 1
        assert len(probe.recv(65535)) == 65527
    probe.close()


# ---- unconnected endpoints and addresses -------------------------------------------------------------------

def test_unconnected_endpoint_reports_sources_and_answers_each_one():
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0)) as server:
        port = int(server.name.rsplit(":", 1)[1])
        clients = [plain_socket() for _ in range(3)]
        for k, c in enumerate(clients):
            for d in datagrams(4, 200, tag=k):
                c.sendto(d, ("127.0.0.1", port))
        batch = None
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 12 and time.monotonic() < deadline:
            batch = server.recv_batch(64, timeout=0.5)
            got.extend((bytes(p), batch.address(i)) for i, p in enumerate(batch))
            if len(got) == 12:
                # echo: a batch from an unconnected endpoint goes back to where each datagram came from
                assert server.send_batch(batch) == len(batch)
        assert sorted(a for _, a in got) == sorted(c.getsockname() for c in clients for _ in range(4))
        for k, c in enumerate(clients):
            assert {d[:2] for d, a in got if a == c.getsockname()} == {struct.pack("!H", k)}
        # every datagram of the last batch came back to its sender
        echoed = {c.getsockname(): [] for c in clients}
        for c in clients:
            try:
                while True:
                    c.settimeout(0.3)
                    echoed[c.getsockname()].append(c.recv(65535))
            except TimeoutError:
                pass
        assert sum(map(len, echoed.values())) == len(batch)
        for addr, data in echoed.items():
            assert all(d in [g for g, a in got if a == addr] for d in data)
        for c in clients:
            c.close()


def test_send_batch_to_an_explicit_address_and_a_device_batch_needs_one():
    peer = plain_socket()
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0)) as ep:
        assert ep.send_batch([b"one", b"two"], peer.getsockname()) == 2
        assert [peer.recv(100), peer.recv(100)] == [b"one", b"two"]
        with pytest.raises(ValueError, match="not connected"):
            ep.send_batch([b"nowhere"])
        device_batch = fasttun.make_batch([b"\x45" + bytes(19)])
        assert device_batch.address(0) is None
        with pytest.raises(ValueError, match="not connected"):
            ep.send_batch(device_batch)  # a batch without sources
        assert ep.send(b"still usable", peer.getsockname()) == 1
        assert peer.recv(100) == b"still usable"
    peer.close()


def test_a_dual_stack_endpoint_reports_ipv4_peers_as_ipv4_and_answers_them():
    try:
        server = fasttun.UdpEndpoint(bind=("::", 0))
    except OSError:
        pytest.skip("no IPv6 here")
    with server:
        port = int(server.name.rsplit(":", 1)[1])
        client = plain_socket()
        client.sendto(b"over ipv4", ("127.0.0.1", port))
        batch = server.recv_batch(4, timeout=2)
        assert batch.copy() == [b"over ipv4"] and batch.address(0) == client.getsockname()
        assert server.send_batch(batch) == 1
        assert client.recvfrom(100) == (b"over ipv4", ("127.0.0.1", port))
        client.close()


# ---- what is dropped, and bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_datagrams_larger_than_max_datagram_are_dropped_and_counted(gro):
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0), max_datagram=1000, gro=gro) as ep:
        s = plain_socket()
        target = ("127.0.0.1", int(ep.name.rsplit(":", 1)[1]))
        s.sendto(b"a" * 1001, target)
        s.sendto(b"b" * 1000, target)
        s.sendto(b"c" * 5000, target)
        s.sendto(b"", target)
        got = receive_all(ep, 2)
        assert [g[0] for g in got] == [b"b" * 1000, b""]  # never a truncated one
        assert ep.recv_batch(8, timeout=0.2).nbytes == 0
        assert ep.stats.rx_dropped_oversize == 2 and ep.stats.drops == 2
        s.close()


def offload_pair(family: int, max_datagram: int) -> tuple[fasttun.UdpEndpoint, fasttun.UdpEndpoint]:
    """A sender with GSO and a receiver with GRO and a smaller max_datagram, connected over loopback."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    rx = fasttun.UdpEndpoint(bind=(host, 0), max_datagram=max_datagram, rcvbuf=8 << 20)
    port = int(rx.name.rsplit(":", 1)[1])
    tx = fasttun.UdpEndpoint(bind=(host, 0), peer=(host, port))
    return tx, rx


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_a_train_of_oversize_segments_still_delivers_its_tail_that_fits(family):
    # One GSO message [2000, 100] arrives as one GRO train of 2000-byte segments: only the 2000 is too large.
    need("gso")
    need("gro")
    tx, rx = offload_pair(family, 1000)
    with tx, rx:
        assert tx.send_batch([b"a" * 2000, b"b" * 100]) == 2
        assert tx.stats.gso_messages == 1
        assert [g[0] for g in receive_all(rx, 1)] == [b"b" * 100]
        assert rx.recv_batch(8, timeout=0.2).nbytes == 0
        assert rx.stats.rx_dropped_oversize == 1 and rx.stats.rx_packets == 1


def mixed_runs(rng: random.Random, count: int) -> list[bytes]:
    """Runs of equal sizes (1 to 8,000 bytes), some ending in a shorter datagram, each datagram distinct."""
    out: list[bytes] = []
    while len(out) < count:
        size = rng.choice([rng.randint(1, 200), rng.randint(1000, 1600), rng.randint(1400, 8000)])
        for _ in range(rng.randint(1, 12)):
            out.append(bytes([len(out) % 256]) * size)
        if rng.random() < 0.5:
            out.append(bytes([len(out) % 256]) * rng.randint(1, size))
    return out[:count]


@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_every_datagram_that_fits_arrives_once_in_order_and_only_the_others_are_counted(family, gro):
    need("gso")
    if gro:
        need("gro")
    rng = random.Random(20 + family + gro)
    for _ in range(3):
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
        rx = fasttun.UdpEndpoint(bind=(host, 0), max_datagram=1500, rcvbuf=8 << 20, gro=gro)
        tx = fasttun.UdpEndpoint(bind=(host, 0), peer=(host, int(rx.name.rsplit(":", 1)[1])))
        with tx, rx:
            sent = mixed_runs(rng, 300)
            for k in range(0, len(sent), 50):
                assert tx.send_batch(sent[k:k + 50]) == len(sent[k:k + 50])
            fits = [d for d in sent if len(d) <= 1500]
            got = [g[0] for g in receive_all(rx, len(fits))]
            assert rx.recv_batch(64, timeout=0.2).nbytes == 0
            assert len(got) == len(fits) and got == fits
            assert rx.stats.rx_dropped_oversize == len(sent) - len(fits)
            if gro:
                assert rx.stats.gro_messages > 0   # trains did arrive coalesced


def test_bad_input_is_refused_whole_and_leaves_the_endpoint_usable():
    peer = plain_socket()
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0), peer=peer.getsockname()) as ep:
        with pytest.raises(TypeError, match="datagram 1"):
            ep.send_batch([b"ok", "not bytes"])
        with pytest.raises(TypeError):
            ep.send_batch([b"ok", 5])
        with pytest.raises(ValueError, match="65508 bytes is larger than the UDP maximum of 65507"):
            ep.send_batch([b"ok", b"x" * 65508])
        with pytest.raises(TypeError, match="destination"):
            ep.send(b"x", "127.0.0.1:9")
        with pytest.raises(ValueError, match="port 0"):
            ep.send(b"x", ("127.0.0.1", 0))
        with pytest.raises(ValueError, match="numeric"):
            ep.send(b"x", ("localhost", 9))
        with pytest.raises(ValueError, match="IPv6"):
            ep.send(b"x", ("::1", 9))
        with pytest.raises(ValueError, match="on_full"):
            ep.send(b"x", on_full="later")
        # the core counts what it refused (the oversize datagram, the IPv6 destination); the rest never got there
        assert ep.stats.tx_rejected == 2 and ep.stats.tx_packets == 0
        assert ep.send(b"x" * 65507) == 1  # the largest IPv4 datagram goes
        assert ep.send_batch([b"after", bytearray(b"all"), memoryview(b"that")]) == 3
        assert [len(peer.recv(65535)), peer.recv(99), peer.recv(99), peer.recv(99)] == [65507, b"after", b"all",
                                                                                        b"that"]
    peer.close()


DESTINATIONS = [
    (("fe80::1%99999999999999", 5000), ValueError, r"zone of 'fe80::1%99999999999999' is out of range"),
    (("fe80::1%4294967296", 5000), ValueError, r"an interface index is 1\.\.4294967295"),
    (("fe80::1%nosuchif0", 5000), ValueError, r"zone of 'fe80::1%nosuchif0' names no interface"),
    (("fe80::1%", 5000), ValueError, r"empty zone"),
    (("fe80::1%lo\x00", 5000), ValueError, r"names no interface"),
    (("fe80::1%lo", 5000, 0, 7), ValueError, r"names two zones"),
    (("fe80::1", 5000, 1, 0), ValueError, r"flowinfo of a destination must be 0"),
    (("fe80::1", 5000, "x", 0), TypeError, r"flowinfo must be an int, not str"),
    (("fe80::1", 5000, 0, None), TypeError, r"scope id must be an int, not NoneType"),
    (("fe80::1", 5000, 0, 2**32), ValueError, r"scope id 4294967296 is out of range"),
    (("fe80::1", 5000, 0, -1), ValueError, r"scope id -1 is out of range"),
    (("127.0.0.1", 5000, 0, 0), ValueError, r"an IPv4 destination is \(host, port\)"),
    (("127.0.0.1", 5000, "junk", None), ValueError, r"an IPv4 destination is \(host, port\)"),
    (("::1", 2**70), ValueError, r"destination port 1180591620717411303424 is out of range"),
    (("::1", 0), ValueError, r"destination port 0 is out of range"),
    (("not-an-address", 5000), ValueError, r"is not a numeric IPv4 or IPv6 address"),
]


@pytest.mark.parametrize("to, exc, message", DESTINATIONS, ids=[repr(d[0]) for d in DESTINATIONS])
def test_a_bad_destination_is_refused_with_what_is_allowed(to, exc, message):
    peer = plain_socket(socket.AF_INET6, "::1")
    with fasttun.UdpEndpoint(bind=("::", 0)) as ep:
        with pytest.raises(exc, match=message):
            ep.send_batch([b"x"], to)
        assert ep.stats.tx_packets == 0
        assert ep.send_batch([b"fine"], peer.getsockname()) == 1   # still usable
        assert peer.recv(100) == b"fine"
    peer.close()


def test_a_destination_zone_by_name_or_index_or_scope_id_reaches_the_same_interface():
    lo = socket.if_nametoindex("lo")
    peer = plain_socket(socket.AF_INET6, "::1")
    port = peer.getsockname()[1]
    with fasttun.UdpEndpoint(bind=("::", 0)) as ep:
        for to in [("::1", port), ("::1", port, 0, 0), (f"::1%{lo}", port), ("::1%lo", port, 0, lo)]:
            assert ep.send_batch([b"z"], to) == 1
            assert peer.recv(10) == b"z"
    peer.close()


@pytest.mark.parametrize("peer, exc, message", [
    (("127.0.0.1", 5000, 0, 0), ValueError, r"peer: an IPv4 address is \(host, port\)"),
    (("::1", 5000, "x", 0), TypeError, r"peer flowinfo must be an int"),
    (("::1", 5000, 0, 2**40), ValueError, r"peer scope id 1099511627776 is out of range"),
    (("fe80::1%nosuchif0", 5000), ValueError, r"peer: cannot resolve"),
])
def test_a_bad_bind_or_peer_address_opens_nothing(peer, exc, message):
    with pytest.raises(exc, match=message):
        fasttun.UdpEndpoint(bind=("::", 0) if ":" in peer[0] else ("0.0.0.0", 0), peer=peer)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="bind="):
        fasttun.UdpEndpoint()
    with pytest.raises(TypeError, match="tuple"):
        fasttun.UdpEndpoint(bind="127.0.0.1:5555")
    with pytest.raises(ValueError, match="max_datagram 70000 is out of range"):
        fasttun.UdpEndpoint(bind=("127.0.0.1", 0), max_datagram=70000)
    tcp = socket.socket()
    with pytest.raises(ValueError, match="UDP socket"):
        fasttun.UdpEndpoint(sock=tcp)
    tcp.close()


def test_an_unreachable_peer_is_counted_not_raised():
    closed = plain_socket()
    dead = closed.getsockname()
    closed.close()  # nobody listens there: the kernel answers with ICMP port unreachable
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0), peer=dead) as ep:
        for _ in range(5):
            assert ep.send_batch(datagrams(3, 100)) == 3
            assert not ep.recv_batch(4, timeout=0.05)
        assert ep.stats.rx_icmp_errors >= 1
        assert ep.stats.tx_packets == 15


# ---- lifecycle --------------------------------------------------------------------------------------------

def test_close_from_another_thread_wakes_a_blocked_receive():
    ep = fasttun.UdpEndpoint(bind=("127.0.0.1", 0))
    outcome, seconds = ended_by_close(lambda: ep.recv_batch(8, timeout=None), ep.close)
    assert isinstance(outcome, fasttun.TunClosedError)
    assert seconds < 2
    with pytest.raises(fasttun.TunClosedError):
        ep.send(b"x", ("127.0.0.1", 9))
    with pytest.raises(fasttun.TunClosedError):
        ep.fileno()
    ep.close()  # twice is fine


def test_wrapping_a_socket_leaves_the_callers_socket_open():
    peer = plain_socket()
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.bind(("127.0.0.1", 0))
    mine.connect(peer.getsockname())
    with fasttun.UdpEndpoint(sock=mine) as ep:
        assert ep.fileno() != mine.fileno()
        assert ep.offloads["connected"] is True
        assert ep.send_batch([b"via endpoint"]) == 1
    mine.send(b"via socket")  # still open after the endpoint closed
    assert [peer.recv(99), peer.recv(99)] == [b"via endpoint", b"via socket"]
    mine.close()
    peer.close()


def test_a_reader_on_the_endpoint_gets_every_datagram_in_batches(connected_pair):
    a, b = connected_pair()
    seen: list[bytes] = []
    sources = set()
    sizes = []

    def on_batch(batch):
        sizes.append(len(batch))
        seen.extend(batch.copy())
        sources.update(batch.address(i) for i in range(len(batch)))

    sent = datagrams(500, 800)
    with b.start_reader(on_batch, batch_size=64) as reader:
        for k in range(0, 500, 100):
            assert a.send_batch(sent[k:k + 100]) == 100
        deadline = time.monotonic() + 5
        while len(seen) < 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reader.running
    assert seen == sent
    assert max(sizes) > 1 and max(sizes) <= 64
    assert sources == {("127.0.0.1", int(a.name.rsplit(":", 1)[1]))}
    assert b.stats.rx_packets == 500


def test_a_reader_ends_cleanly_when_the_endpoint_closes():
    ep = fasttun.UdpEndpoint(bind=("127.0.0.1", 0))
    reader = ep.start_reader(lambda batch: None)
    ep.close()
    assert reader.stop(timeout=5) is True
    assert not reader.running


def test_an_endpoint_dropped_without_close_releases_its_socket():
    import gc

    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        ep = fasttun.UdpEndpoint(bind=("127.0.0.1", 0))
        ep.recv_batch(4, timeout=0)
        del ep
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_callback_that_raises_stops_the_reader_and_stop_raises_it(connected_pair):
    a, b = connected_pair()

    def on_batch(batch):
        raise RuntimeError("boom")

    reader = b.start_reader(on_batch)
    a.send(b"trigger")
    wait_stopped(reader)
    with pytest.raises(RuntimeError, match="boom"):
        reader.stop()
    assert b.send(b"still usable") == 1


def test_ipv6_link_local_destinations_take_a_zone():
    try:
        probe = plain_socket(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with fasttun.UdpEndpoint(bind=("::1", 0)) as ep:
        port = probe.getsockname()[1]
        assert ep.send(b"zone by index", (f"::1%{socket.if_nametoindex('lo')}", port)) == 1
        assert ep.send(b"zone by name", ("::1%lo", port)) == 1
        assert ep.send(b"scope in the tuple", ("::1", port, 0, 0)) == 1
        assert [probe.recv(99) for _ in range(3)] == [b"zone by index", b"zone by name", b"scope in the tuple"]
        with pytest.raises(ValueError, match="scope id"):
            ep.send(b"x", ("::1", port, 0, -1))
    probe.close()


def test_stats_stay_readable_after_close(connected_pair):
    a, b = connected_pair()
    assert a.send_batch(datagrams(10, 100)) == 10
    assert len(receive_all(b, 10)) == 10
    a.close()
    b.close()
    assert a.stats.tx_packets == 10 and b.stats.rx_packets == 10
    assert a.offloads["connected"] is True
    with pytest.raises(fasttun.TunClosedError):
        b.recv_batch(4, timeout=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's buffer rule (Windows: tests/test_windows.py)")
def test_socket_buffers_are_asked_for_in_c_and_reported():
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0)) as plain, \
            fasttun.UdpEndpoint(bind=("127.0.0.1", 0), rcvbuf=3 << 20, sndbuf=1 << 20) as sized:
        o = sized.offloads
        # Linux reports twice what it grants (its bookkeeping); root may exceed net.core.[rw]mem_max
        assert o["rcvbuf"] >= 3 << 20 and o["sndbuf"] >= 1 << 20, o
        assert plain.offloads["rcvbuf"] < o["rcvbuf"]  # without sizes the socket keeps the system's default
        assert o["message_calls"] is True
        assert sized.stats.message_fallbacks == 0 and sized.stats.gro_malformed == 0
    for bad in (1023, (1 << 30) + 1):
        with pytest.raises(ValueError, match="rcvbuf"):
            fasttun.UdpEndpoint(bind=("127.0.0.1", 0), rcvbuf=bad)
