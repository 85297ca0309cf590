"""examples/udp_tunnel.py end to end: two namespaces joined by a veth, the tunnel running in each (a process
started inside it with ``ip netns exec``), a TCP transfer verified by hash and a ping (tests/icmp_ping.py) through
the tunnel, plain and encrypted; then datagrams nobody should accept are injected on the wire and must show up in
the counters."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import require_root_environment
from icmp_ping import Pinger, ping
from fasttun import _netns

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "udp_tunnel.py"
PORT = 5555
TRANSFER = 16 << 20


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Tunnel:
    """One side: its namespace, its process, what it printed."""

    def __init__(self, ns: str, proc: subprocess.Popen[str]) -> None:
        self.ns = ns
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.lines.get(timeout=0.2).strip() == "ready":
                    return
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        raise AssertionError(f"tunnel in {self.ns} did not start: {self.stderr()}")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> dict[str, object]:
        """SIGTERM; the tunnel must exit 0 and print its counters."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(line.startswith("counters ") for line in self.out):
            time.sleep(0.05)
        assert code == 0, self.stderr()
        line = next(line for line in self.out if line.startswith("counters "))
        return json.loads(line[len("counters "):])


@pytest.fixture
def link(tmp_path):
    """Two namespaces with a veth between them (10.200.0.1/24, 10.200.0.2/24); yields a function starting the
    tunnel in both, and cleans everything up however the test ends."""
    require_root_environment()
    tag = f"{os.getpid()}-{time.monotonic_ns() % 100000}"
    names = (f"ftu-a-{tag}", f"ftu-b-{tag}")
    procs: list[Tunnel] = []
    try:
        for ns in names:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", "ftuva", "netns", names[0], "type", "veth", "peer", "name", "ftuvb", "netns", names[1])
        for ns, dev, addr in ((names[0], "ftuva", "10.200.0.1/24"), (names[1], "ftuvb", "10.200.0.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

        def start(*extra: str, env: dict[str, str] | None = None,
                  b_extra: tuple[str, ...] | None = None) -> tuple[Tunnel, Tunnel]:
            """Both sides with the options extra, or the second with b_extra."""
            for ns, tun_addr, here, there, options in (
                    (names[0], "10.99.0.1/24", "10.200.0.1", "10.200.0.2", extra),
                    (names[1], "10.99.0.2/24", "10.200.0.2", "10.200.0.1", extra if b_extra is None else b_extra)):
                cmd = ["ip", "netns", "exec", ns, sys.executable, str(EXAMPLE), "--tun-addr", tun_addr,
                       "--bind", f"{here}:{PORT}", "--peer", f"{there}:{PORT}", *options]
                procs.append(Tunnel(ns, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                         text=True, env=env)))
            for t in procs[-2:]:
                t.wait_ready()
            return procs[-2], procs[-1]

        yield names, start
    finally:
        for t in procs:
            if t.proc.poll() is None:
                t.proc.kill()
                t.proc.wait(timeout=10)
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


def _ping(ns: str) -> None:
    assert ping("10.99.0.2", count=3, netns=ns) == 3, "echo requests through the tunnel went unanswered"


def _transfer(names: tuple[str, str]) -> None:
    """TCP from the first namespace to the second through the tunnel; the receiver's hash must match."""
    payload = os.urandom(TRANSFER)
    with _netns.entered(f"/run/netns/{names[1]}"):
        server = socket.create_server(("10.99.0.2", 7001))
    server.settimeout(20)
    received = hashlib.sha256()
    count = [0]

    def serve() -> None:
        conn, _ = server.accept()
        conn.settimeout(20)
        with conn:
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received.update(chunk)
                count[0] += len(chunk)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with _netns.entered(f"/run/netns/{names[0]}"):
            client = socket.create_connection(("10.99.0.2", 7001), timeout=20)
        with client:
            client.sendall(payload)
    finally:
        t.join(30)
        server.close()
    assert count[0] == TRANSFER
    assert received.hexdigest() == hashlib.sha256(payload).hexdigest()


class WireWatch:
    """Collects the first byte of every tunnel datagram (or GSO train) the second namespace receives off the veth
    while it runs: 0x1f is a packet behind a remote-checksum header, 0x45/0x6X a plain IP packet."""

    def __init__(self, names: tuple[str, str]) -> None:
        with _netns.entered(f"/run/netns/{names[1]}"):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
            self.sock.bind(("ftuvb", 0x0800))
        self.sock.settimeout(0.2)
        self.first: dict[int, int] = {}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                packet, (_, _, kind, _, _) = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            ihl = (packet[0] & 15) * 4
            if kind == socket.PACKET_HOST and packet[9] == 17 and len(packet) > ihl + 8 and \
                    struct.unpack_from("!H", packet, ihl + 2)[0] == PORT:
                byte = packet[ihl + 8]
                self.first[byte] = self.first.get(byte, 0) + 1

    def stop(self) -> dict[int, int]:
        self.running = False
        self.thread.join(5)
        self.sock.close()
        return self.first


def _capture_sealed_datagram(names: tuple[str, str]) -> bytes:
    """A datagram the first tunnel sent, as the second namespace received it off the veth while a ping runs
    (the UDP payload)."""
    with _netns.entered(f"/run/netns/{names[1]}"):
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        sniffer.bind(("ftuvb", 0x0800))
    sniffer.settimeout(0.5)
    pinger = Pinger("10.99.0.2", count=20, interval=0.1, netns=names[0])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                packet, (_, _, kind, _, _) = sniffer.recvfrom(65535)
            except TimeoutError:
                continue
            if kind != socket.PACKET_HOST or len(packet) < 28 or packet[9] != 17:
                continue
            total = struct.unpack_from("!H", packet, 2)[0]
            ihl = (packet[0] & 15) * 4
            dport, length = struct.unpack_from("!2xHH", packet, ihl)
            if dport == PORT and total == len(packet) and length == total - ihl:  # one datagram, not a GSO train
                return packet[ihl + 8:]
        raise AssertionError("no tunnel datagram seen on the veth")
    finally:
        pinger.close()
        sniffer.close()


def _inject(names: tuple[str, str], payload: bytes) -> None:
    """Sends payload as if the first tunnel had sent it (same addresses and ports), straight onto the wire."""
    udp = struct.pack("!HHHH", PORT, PORT, 8 + len(payload), 0)  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 0, 0, 64, 17, 0,
                     socket.inet_aton("10.200.0.1"), socket.inet_aton("10.200.0.2"))
    with _netns.entered(f"/run/netns/{names[0]}"):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        raw.sendto(ip + udp + payload, ("10.200.0.2", 0))


def test_plain_tunnel_carries_tcp_and_ping_and_drops_what_is_not_ip(link):
    names, start = link
    a, b = start()
    _ping(names[0])
    watch = WireWatch(names)
    _transfer(names)
    first = watch.stop()
    # the TCP data crossed with its checksums left partial (a 0x1f header), completed by the far end's kernel
    assert first.get(0x1F, 0) > 0, first
    _inject(names, b"this is not an IP packet")
    time.sleep(0.3)
    counters_a, counters_b = a.stop(), b.stop()
    assert counters_b["tunnel"]["not_ip"] == 1
    for c in (counters_a, counters_b):
        assert c["udp"]["rx_dropped_oversize"] == 0
    # the whole transfer crossed as datagrams: at least its bytes each way it went
    assert counters_a["udp"]["tx_bytes"] >= TRANSFER
    assert counters_b["tun"]["tx_bytes"] >= TRANSFER


@pytest.mark.parametrize("a_args, b_args, partial_on_the_wire", [
    ([], ["--offload", "off"], True),                    # the far end has no offload: it completes checksums in C
    (["--offload", "off"], [], False),                   # this end has none: its packets come complete
    (["--remote-csum", "off"], ["--offload", "off"], False),   # full checksums, as to a peer of another kind
], ids=["peer-offload-off", "own-offload-off", "remote-csum-off"])
def test_plain_tunnel_between_ends_with_different_offload(link, a_args, b_args, partial_on_the_wire):
    """A TCP transfer verified by hash between ends that differ in offload and in remote checksums; the far end's
    kernel verifies every checksum where it has no offload, so a checksum done wrong stops the transfer."""
    names, start = link
    a, b = start(*a_args, b_extra=tuple(b_args))
    _ping(names[0])
    watch = WireWatch(names)
    _transfer(names)
    first = watch.stop()
    assert (first.get(0x1F, 0) > 0) == partial_on_the_wire, first
    counters_a, counters_b = a.stop(), b.stop()
    for c in (counters_a, counters_b):
        assert c["tunnel"]["not_ip"] == 0 and c["tun"]["tx_errors"] == 0 and c["tun"]["tx_rejected"] == 0
    assert counters_b["tun"]["tx_bytes"] >= TRANSFER


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must run the encrypted tunnel, but cryptography is missing (it is in the [test] extra)")
        pytest.skip("cryptography is not installed (pip install cryptography; it is in the [test] extra)")


@pytest.mark.parametrize("a_args, b_args", [([], ["--offload", "off"]), (["--remote-csum", "off"],) * 2],
                         ids=["peer-offload-off", "remote-csum-off"])
def test_encrypted_tunnel_between_ends_with_different_offload(link, tmp_path, a_args, b_args):
    """Remote checksums sealed with the trains: a hash-verified TCP transfer to an end that finishes them itself
    (no offload: its kernel verifies every checksum), and with them off at both ends."""
    _require_cryptography()
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    names, start = link
    a, b = start("--key-file", str(key), *a_args, b_extra=("--key-file", str(key), *b_args))
    _ping(names[0])
    _transfer(names)
    counters_a, counters_b = a.stop(), b.stop()
    for c in (counters_a, counters_b):
        assert not any(c["tunnel"].values()), c["tunnel"]
        assert c["tun"]["tx_errors"] == 0 and c["tun"]["tx_rejected"] == 0
    assert counters_b["tun"]["tx_bytes"] >= TRANSFER


@pytest.mark.parametrize("variant", [[], ["--asyncio"]], ids=["threads", "asyncio"])
def test_encrypted_tunnel_carries_tcp_and_ping_and_drops_replays_tampering_and_strangers(link, tmp_path, variant):
    _require_cryptography()
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    names, start = link
    a, b = start("--key-file", str(key), *variant)
    _ping(names[0])
    _transfer(names)
    sealed = _capture_sealed_datagram(names)
    _inject(names, sealed)                                      # a replay
    counter = struct.unpack_from("!Q", sealed, 4)[0]
    header_changed = sealed[:4] + struct.pack("!Q", counter + 10) + sealed[12:]
    _inject(names, header_changed)                              # tampered header: an unseen counter, same seal
    body_changed = bytearray(header_changed)
    body_changed[4:12] = struct.pack("!Q", counter + 11)
    body_changed[20] ^= 0x40
    _inject(names, bytes(body_changed))                         # tampered ciphertext
    _inject(names, b"short")                                    # not our format at all
    time.sleep(0.3)
    counters_a, counters_b = a.stop(), b.stop()
    tb = counters_b["tunnel"]
    assert tb["replayed"] >= 1 and tb["auth_failed"] >= 2 and tb["foreign"] >= 1
    assert counters_a["tunnel"] == {"not_ip": 0, "foreign": 0, "auth_failed": 0, "replayed": 0, "incomplete": 0}
    assert counters_b["tun"]["tx_bytes"] >= TRANSFER


@pytest.mark.parametrize("mode, offload", [("fd", "on"), ("fd", "off"), ("aio", "on")])
def test_asyncio_tunnel_carries_tcp_and_ping_and_drops_what_is_not_ip(link, mode, offload):
    """The same tunnel on one event loop (add_reader on both descriptors, or fasttun.aio for the TUN device)."""
    names, start = link
    a, b = start("--asyncio", mode, "--offload", offload)
    _ping(names[0])
    _transfer(names)
    _inject(names, b"this is not an IP packet either")
    time.sleep(0.3)
    counters_a, counters_b = a.stop(), b.stop()
    assert counters_b["tunnel"]["not_ip"] == 1
    assert counters_a["udp"]["tx_bytes"] >= TRANSFER
    assert counters_b["tun"]["tx_bytes"] >= TRANSFER


WINDOWS_SIGNALS = Path(__file__).resolve().parent / "windows_signals"


@pytest.mark.parametrize("variant", [[], ["--asyncio", "aio"]], ids=["threads", "asyncio"])
def test_the_tunnel_ends_cleanly_with_the_signal_handling_windows_has(link, variant):
    # Windows has no pthread_sigmask/sigwait and its event loops no add_signal_handler: the example must stop on
    # SIGTERM (Ctrl-C there) with what Windows offers (tests/windows_signals makes this interpreter look so).
    names, start = link
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WINDOWS_SIGNALS), env.get("PYTHONPATH")]))
    a, b = start(*variant, env=env)
    _ping(names[0])
    for t in (a, b):
        counters = t.stop()
        assert counters["tunnel"] is not None


def test_bad_command_lines_exit_with_a_message():
    for args in (["--tun-addr", "10.99.0.1/24", "--bind", "nonsense", "--peer", "10.200.0.2:5555"],
                 ["--tun-addr", "x", "--bind", "10.200.0.1:5555", "--peer", "10.200.0.2:5555"]):
        r = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "error" in r.stderr


# ---- the encrypted wire format, without privileges: trains sealed and opened as the two ends do ----------


def _example() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("udp_tunnel_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ipv4(size: int, seq: int) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, seq & 0xFFFF, 0, 64, 17, 0, bytes(4), bytes(4))
    return head + struct.pack("!I", seq) + os.urandom(size - 24)


def _ipv6(size: int, seq: int) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, size - 40, 17, 64, bytes(16), bytes(16)) + struct.pack("!I", seq) + \
        os.urandom(size - 44)


class Ends:
    """A sealer and the peer's opener under one key, the datagrams between them as a list to lose, reorder,
    replay or tamper with."""

    def __init__(self, train: int, mtu: int = 1400) -> None:
        _require_cryptography()
        import fasttun

        self.fasttun = fasttun
        self.ex: object = _example()
        key = os.urandom(32)
        self.counters = self.ex.Counters()  # type: ignore[attr-defined]
        self.sealer = self.ex.Sealer(key, 1, mtu, train)  # type: ignore[attr-defined]
        self.opener = self.ex.Opener(key, 1, mtu, self.counters, train)  # type: ignore[attr-defined]
        self.mtu = mtu

    def seal(self, packets: list[bytes]) -> list[bytes]:
        return [bytes(d) for d in self.sealer.seal(self.fasttun.make_batch(packets))]

    def open(self, *batches: list[bytes]) -> list[bytes]:
        got: list[bytes] = []
        for datagrams in batches:
            got.extend(bytes(p) for p in self.opener.open(self.fasttun.make_batch(datagrams)))
        return got


@pytest.mark.parametrize("train", [1, 4, 16, 64])
def test_trains_carry_every_packet_in_order_in_datagrams_no_larger_than_before(train):
    ends = Ends(train)
    packets = [(_ipv4 if i % 3 else _ipv6)(size, i) for i, size in
               enumerate([1400, 1400, 52, 1400, 48, 576, 1400, 1400, 1400, 60, 1400] * 6)]
    datagrams = ends.seal(packets)
    assert max(len(d) for d in datagrams) <= ends.mtu + ends.ex.OVERHEAD  # type: ignore[attr-defined]
    assert len(datagrams) <= len(packets)
    # every train's datagrams but the last are full (what UDP GSO sends as one message)
    assert ends.open(datagrams) == packets
    assert ends.counters.as_dict() == {"not_ip": 0, "foreign": 0, "auth_failed": 0, "replayed": 0,
                                       "incomplete": 0}


def test_a_train_cut_across_two_receive_batches_still_opens():
    ends = Ends(16)
    packets = [_ipv4(1400, i) for i in range(40)]
    datagrams = ends.seal(packets)
    assert ends.open(datagrams[:7], datagrams[7:23], datagrams[23:]) == packets


def test_a_lost_or_reordered_datagram_costs_its_train_only_and_is_counted():
    ends = Ends(4)
    packets = [_ipv4(1400, i) for i in range(12)]   # three trains of four datagrams
    datagrams = ends.seal(packets)
    assert len(datagrams) == 12
    lost = datagrams[:2] + datagrams[3:]                          # the first train loses its third datagram
    assert ends.open(lost) == packets[4:]
    assert ends.counters.incomplete == 3                           # its three others, each counted once
    more = ends.seal([_ipv4(1400, i) for i in range(100, 104)])
    swapped = [more[0], more[2], more[1], more[3]]
    assert ends.open(swapped) == []
    ends.opener.abandon()                                          # the train under way counts as lost too
    assert ends.counters.incomplete == 3 + 4
    assert ends.counters.auth_failed == ends.counters.replayed == ends.counters.foreign == 0


def test_replayed_tampered_and_foreign_trains_are_dropped_and_counted():
    ends = Ends(8)
    packets = [_ipv4(1400, i) for i in range(8)] + [_ipv4(60, 99)]
    datagrams = ends.seal(packets)
    assert ends.open(datagrams) == packets
    assert ends.open(datagrams) == []                              # a replay of all of them
    trains = sum(1 for d in datagrams if d[1] == 0)
    assert ends.counters.replayed == trains
    assert ends.counters.incomplete == len(datagrams) - trains     # the replayed trains' other datagrams
    fresh = ends.seal([_ipv4(1400, i) for i in range(8)])
    tampered = [bytearray(d) for d in fresh]
    tampered[3][100] ^= 1
    assert ends.open([bytes(d) for d in tampered]) == []
    assert ends.counters.auth_failed == len(fresh)
    stranger = Ends(8).seal([_ipv4(1400, 0)])                      # another key, same format
    wrong_way = bytearray(ends.seal([_ipv4(100, 1)])[0])
    wrong_way[0] ^= 1                                              # the other direction's
    assert ends.open(stranger + [bytes(wrong_way), b"short", b"\x01" * 20]) == []
    assert ends.counters.auth_failed == len(fresh) + len(stranger)
    assert ends.counters.foreign == 3
    later = [_ipv4(500, 7)]
    assert ends.open(ends.seal(later)) == later                    # the tunnel goes on


def test_the_builder_splits_and_joins_fragments_and_ip_packets_checking_everything():
    import fasttun

    b = fasttun.BatchBuilder(max_packets=8, capacity=4096)
    assert b.append_split(bytes(range(10)), 4, b"H?Y", 1) == 3
    assert [bytes(p) for p in b.batch()] == [b"H\x00Y\x00\x01\x02\x03", b"H\x01Y\x04\x05\x06\x07", b"H\x02Y\x08\x09"]
    with pytest.raises(ValueError, match="do not fit"):
        b.append_split(bytes(100), 10)                             # 10 packets, 5 places left
    with pytest.raises(ValueError, match="index_at"):
        b.append_split(b"x", 1, b"ab", 2)
    assert len(b) == 3
    joined = fasttun.BatchBuilder(max_packets=2, capacity=64)
    frags = fasttun.make_batch([bytes(p) for p in b.batch()])
    assert not joined.append_joined(frags, 0, 3, b"H?Z", 1)        # another prefix
    assert not joined.append_joined(frags, 1, 2, b"H?Y", 1)        # numbered from 1, not 0
    assert not joined.append_joined(frags, 0, 4, b"H?Y", 1)        # past the batch's end
    assert len(joined) == 0
    assert joined.append_joined(frags, 0, 3, b"H?Y", 1)
    assert bytes(joined.batch()[0]) == bytes(range(10))

    ip = fasttun.BatchBuilder(max_packets=4, capacity=4096)
    ip.append(_ipv4(20 + 4 + 16, 1) + _ipv6(60, 2) + _ipv4(100, 3))
    assert ip.split_ip() == 3
    assert [len(p) for p in ip.batch()] == [40, 60, 100]
    ip.clear()
    ip.append(_ipv4(40, 1) + b"xx")                                # a tail that is no IP packet
    with pytest.raises(ValueError, match="does not start an IPv4/IPv6 packet"):
        ip.split_ip()
    assert [len(p) for p in ip.batch()] == [42]                    # unchanged
    ip.clear()
    ip.append(b"".join(_ipv4(40, i) for i in range(5)))            # five: more than the builder holds
    with pytest.raises(ValueError, match="more than the 4"):
        ip.split_ip()
