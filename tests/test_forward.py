"""End to end through the Python forwarder of examples/forwarder.py: two network namespaces, "left" and "right",
each with a fasttun device and a route to the other's subnet through it; the forwarder moves every packet
one device reads into the other. Real sockets talk across it (TCP and UDP, IPv4 and IPv6), with offload off,
in its "segments" and "super" modes, and in "segments" with remote checksums (the checksums the kernel left
partial cross the forwarder partial, behind a 4-byte header, for the other device's kernel to finish); and with
forwards in C (``start_reader(device)``, no Python per batch) in the last two modes."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_root_environment
from fasttun import _netns

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TUN backend")]


def _load_forwarder():
    path = Path(__file__).resolve().parent.parent / "examples" / "forwarder.py"
    spec = importlib.util.spec_from_file_location("fasttun_example_forwarder", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


forwarder = _load_forwarder()

LEFT = {4: "10.210.1.1", 6: "fd00:210:1::1"}
RIGHT = {4: "10.210.2.1", 6: "fd00:210:2::1"}
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
TCP_BYTES = 50 * 2**20
UDP_COUNT, UDP_SIZE, UDP_RATE = 20_000, 1200, 40_000  # datagrams, bytes each, datagrams per second
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
_counter = itertools.count()

MODES = [
    pytest.param("off", id="offload-off"),
    pytest.param("segments", id="offload-segments"),
    pytest.param("segments-rcsum", id="offload-segments-remote-csum"),
    pytest.param("super", id="offload-super"),
    # forwards in C (start_reader(device)): no Python per batch
    pytest.param("segments-rcsum-c", id="offload-segments-remote-csum-in-c"),
    pytest.param("super-c", id="offload-super-in-c"),
]


@dataclasses.dataclass
class Link:
    """Two namespaces joined by the forwarder: left's device ``tun_l`` and right's device ``tun_r``."""

    mode: str
    left: str
    right: str
    tun_l: object
    tun_r: object
    fwd: object
    mtu_l: int
    mtu_r: int

    def inside(self, ns: str):
        return _netns.entered(f"/run/netns/{ns}")

    def sockets(self, version: int, kind: int) -> tuple[socket.socket, socket.socket]:
        """A socket of `kind` (SOCK_STREAM, SOCK_DGRAM) for the IP version in the right namespace, and one in the
        left."""
        with self.inside(self.right):
            right = socket.socket(FAMILY[version], kind)
        with self.inside(self.left):
            left = socket.socket(FAMILY[version], kind)
        return right, left

    def stats(self):
        """Both devices' stats (their OS counters come from rtnetlink, so each is read in its namespace)."""
        with self.inside(self.left):
            left = self.tun_l.stats
        with self.inside(self.right):
            right = self.tun_r.stats
        return left, right

    def udp_errors(self, ns: str) -> dict[str, int]:
        """The namespace's UDP and UDP6 error counters (receive buffer overflows and the like)."""
        out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/snmp6"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        counters: dict[str, int] = {}
        lines = out.splitlines()
        for head, values in zip(lines, lines[1:]):
            if head.startswith("Udp:") and values.startswith("Udp:") and head != values:
                counters.update({f"Udp{k}": int(v) for k, v in zip(head.split()[1:], values.split()[1:])})
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith("Udp6") and parts[1].isdigit():
                counters[parts[0]] = int(parts[1])
        return counters

    def describe(self) -> str:
        report = self.fwd.report()
        try:
            left, right = self.stats()
        except Exception as exc:  # noqa: BLE001 - only for a failure message
            left = right = f"(stats failed: {exc!r})"
        return (f"\nforwarder: {report}\nleft {self.tun_l}: {left}\nright {self.tun_r}: {right}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture(params=MODES)
def link(request) -> Iterator[Link]:
    require_root_environment()
    mode = request.param
    in_c = mode.endswith("-c")
    mode = mode.removesuffix("-c")
    tag = f"{os.getpid()}-{next(_counter)}"
    left, right = f"ftf-{tag}-l", f"ftf-{tag}-r"
    made: list[str] = []
    devices: list[object] = []
    fwd = None
    try:
        for ns in (left, right):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        options = {"offload": "segments", "remote_csum": True} if mode == "segments-rcsum" else {"offload": mode}
        tun_l = forwarder.open_device("fwl0", **options, netns=left, txqueuelen=10000,
                                      addresses=[f"{LEFT[4]}/24", f"{LEFT[6]}/64"],
                                      routes=["10.210.2.0/24", "fd00:210:2::/64"])
        devices.append(tun_l)
        tun_r = forwarder.open_device("fwr0", **options, netns=right, txqueuelen=10000,
                                      addresses=[f"{RIGHT[4]}/24", f"{RIGHT[6]}/64"],
                                      routes=["10.210.1.0/24", "fd00:210:1::/64"])
        devices.append(tun_r)
        # Configuration calls (mtu, offloads, stats' OS counters) name the device by its index in the calling
        # thread's namespace, so they are made inside the device's own.
        mtu = {}
        for ns, tun in ((left, tun_l), (right, tun_r)):
            with _netns.entered(f"/run/netns/{ns}"):
                mtu[ns] = tun.mtu
                if mode != "off":
                    assert tun.offload_mode == options["offload"]
                    offloads = tun.offloads
                    assert offloads.get("csum") and offloads.get("tso4") and offloads.get("tso6"), \
                        f"{tun.name}: {offloads}"
        fwd = forwarder.forward(tun_l, tun_r, batch_size=64, track_largest=not in_c, in_c=in_c)
        yield Link(mode, left, right, tun_l, tun_r, fwd, mtu[left], mtu[right])
        fwd.stop()  # raises what stopped a reader early, if anything did
    finally:
        if fwd is not None:
            try:
                fwd.stop()
            except Exception:  # noqa: BLE001 - the test's own failure (or the stop above) says more
                pass
        for tun in devices:
            tun.close()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


def _forwarder_lost_nothing_uncounted(link: Link) -> None:
    """Every packet a reader handed over was written into the other device, or counted as dropped there."""
    report = link.fwd.report()
    left, right = link.stats()
    for key, sender in (("a_to_b", right), ("b_to_a", left)):
        d = report[key]
        assert d["rejected"] == 0, link.describe()
        # send_batch's count is of the packets it was given (also when it coalesces them): what it did not take
        # is what the destination counted as dropped.
        assert d["packets"] - d["sent"] <= sender.tx_dropped_full, link.describe()
    for s in (left, right):
        assert s.tx_rejected == 0 and s.rx_dropped_invalid == 0 and s.rx_dropped_oversize == 0, link.describe()
        assert s.rx_errors == 0 and s.tx_errors == 0, link.describe()


def _mean_packet(link: Link, key: str) -> float:
    return link.fwd.report()[key]["mean_packet"]


# ---- TCP ----


@pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])
def test_tcp_transfer_arrives_intact(link: Link, version: int) -> None:
    payload = os.urandom(TCP_BYTES)
    expected = hashlib.sha256(payload).hexdigest()
    server, client = link.sockets(version, socket.SOCK_STREAM)
    with server, client:
        server.bind((RIGHT[version], 0))
        server.listen(1)
        server.settimeout(10)
        port = server.getsockname()[1]
        received = {"bytes": 0, "sha256": None, "end": None, "error": None}

        def serve() -> None:
            try:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(15)
                    digest = hashlib.sha256()
                    buf = bytearray(1 << 20)
                    view = memoryview(buf)
                    while True:
                        n = conn.recv_into(buf)
                        if n == 0:
                            break
                        digest.update(view[:n])
                        received["bytes"] += n
                    received["end"] = time.monotonic()
                    received["sha256"] = digest.hexdigest()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                received["error"] = exc

        thread = threading.Thread(target=serve, name="ftf-tcp-server", daemon=True)
        thread.start()
        client.settimeout(15)
        start = time.monotonic()
        client.connect((RIGHT[version], port))
        view = memoryview(payload)
        for offset in range(0, TCP_BYTES, 1 << 20):
            client.sendall(view[offset:offset + (1 << 20)])
        client.shutdown(socket.SHUT_WR)
        thread.join(30)
        assert not thread.is_alive(), f"the server still waits after 30 s: {received}{link.describe()}"
    assert received["error"] is None, f"{received['error']!r}{link.describe()}"
    assert received["bytes"] == TCP_BYTES, link.describe()
    assert received["sha256"] == expected, link.describe()
    seconds = received["end"] - start
    gbps = TCP_BYTES * 8 / seconds / 1e9
    print(f"\nTCP/IPv{version} offload {link.mode}: {TCP_BYTES / 2**20:.0f} MiB in {seconds:.2f} s = "
          f"{gbps:.2f} Gbit/s; mean packet left->right {_mean_packet(link, 'a_to_b'):.0f} bytes")
    _forwarder_lost_nothing_uncounted(link)
    _packet_sizes_fit_the_mode(link, super_expected=True)
    if link.mode == "super":  # and nearly all of them: a few small ones (SYN, FIN), the rest 64 KiB
        assert _mean_packet(link, "a_to_b") > 8 * link.mtu_l, link.describe()


def _packet_sizes_fit_the_mode(link: Link, super_expected: bool) -> None:
    if link.fwd.in_c:   # a forward in C shows Python no packet (the mean packet size still says what crossed)
        return
    largest = max(link.fwd.a_to_b.largest, link.fwd.b_to_a.largest)
    if link.mode == "super":
        if super_expected:  # the kernel's super-packets cross whole: far larger than the MTU allows
            assert largest > link.mtu_l, link.describe()
    else:  # without offload, and in "segments" mode, Python sees ordinary packets only (behind a 4-byte header
        # with remote checksums)
        assert largest <= link.mtu_l + (4 if link.mode == "segments-rcsum" else 0), link.describe()


# ---- UDP ----


def _datagram(seq: int) -> bytes:
    head = struct.pack("!I", seq)
    body = hashlib.sha256(head).digest() * (UDP_SIZE // 32 + 1)
    return head + body[:UDP_SIZE - 4]


UDP_SEGMENT = 103  # linux/udp.h: the socket option that makes one send many datagrams (UDP GSO)
GSO_SEGMENTS = 10


@pytest.mark.parametrize("gso", [False, True], ids=["datagrams", "udp-gso"])
@pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])
def test_udp_flow_arrives_intact_and_losses_are_counted(link: Link, version: int, gso: bool) -> None:
    """Sequence-numbered datagrams at a bounded rate, sent one by one, or GSO_SEGMENTS to a send with
    UDP_SEGMENT (the kernel hands such a send to an offload device as one super-packet where it can)."""
    sink, source = link.sockets(version, socket.SOCK_DGRAM)
    with sink, source:
        sink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        source.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
        if gso:
            source.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, UDP_SIZE)
        sink.bind((RIGHT[version], 0))
        sink.settimeout(0.5)
        destination = (RIGHT[version], sink.getsockname()[1])
        udp_before = link.udp_errors(link.right)

        seen: dict[int, int] = {}
        corrupt: list[tuple[int, int]] = []
        received_digest = hashlib.sha256()
        done_sending = threading.Event()
        outcome: dict[str, BaseException | None] = {"error": None}

        def receive() -> None:
            try:
                deadline = time.monotonic() + 30
                while len(seen) < UDP_COUNT and time.monotonic() < deadline:
                    try:
                        data = sink.recv(65536)
                    except socket.timeout:
                        if done_sending.is_set():
                            return  # half a second of silence after the last send: the rest is lost
                        continue
                    seq = struct.unpack_from("!I", data)[0] if len(data) >= 4 else -1
                    if not 0 <= seq < UDP_COUNT or data != _datagram(seq):
                        corrupt.append((seq, len(data)))
                        continue
                    seen[seq] = seen.get(seq, 0) + 1
                    received_digest.update(data)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                outcome["error"] = exc

        thread = threading.Thread(target=receive, name="ftf-udp-sink", daemon=True)
        thread.start()
        start = time.monotonic()
        burst = 100
        for first in range(0, UDP_COUNT, burst):
            # Paced: this burst may leave no earlier than its share of the time at UDP_RATE.
            delay = start + first / UDP_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if gso:
                for seq in range(first, min(first + burst, UDP_COUNT), GSO_SEGMENTS):
                    source.sendto(b"".join(map(_datagram, range(seq, min(seq + GSO_SEGMENTS, UDP_COUNT)))),
                                  destination)
            else:
                for seq in range(first, min(first + burst, UDP_COUNT)):
                    source.sendto(_datagram(seq), destination)
        done_sending.set()
        thread.join(35)
        assert not thread.is_alive(), link.describe()
    assert outcome["error"] is None, f"{outcome['error']!r}{link.describe()}"

    # Every datagram that arrived is intact, and arrived once.
    assert not corrupt, f"{len(corrupt)} corrupt datagrams, first {corrupt[:5]}{link.describe()}"
    assert all(count == 1 for count in seen.values()), \
        f"duplicates: {[s for s, c in seen.items() if c > 1][:10]}{link.describe()}"
    assert received_digest.hexdigest() == _digest_in_arrival_order_of(seen), link.describe()
    lost = UDP_COUNT - len(seen)

    # Losses are few, and each one is accounted for by a counter: the kernel's queue of the left device (we
    # did not read fast enough), the right device refusing a write, or the receiving socket's buffer.
    left, right = link.stats()
    udp_after = link.udp_errors(link.right)
    socket_drops = sum(udp_after.get(k, 0) - udp_before.get(k, 0)
                       for k in ("UdpRcvbufErrors", "UdpInErrors", "Udp6RcvbufErrors", "Udp6InErrors"))
    counted = left.rx_dropped_os + right.tx_dropped_full + right.tx_dropped_os + socket_drops
    print(f"\nUDP/IPv{version}{' GSO' if gso else ''} offload {link.mode}: {len(seen)}/{UDP_COUNT} datagrams in "
          f"{time.monotonic() - start:.2f} s, lost {lost}, counted drops {counted} "
          f"(left OS rx {left.rx_dropped_os}, right full {right.tx_dropped_full}, right OS tx "
          f"{right.tx_dropped_os}, socket {socket_drops}); largest packet left->right {link.fwd.a_to_b.largest}")
    # At most 1% lost; under the sanitized build (3-10x slower, and the forwarder can pause for its checks) a
    # quarter: that run is about memory safety, and even there every loss must be counted.
    limit = UDP_COUNT // 4 if os.environ.get("FASTTUN_SANITIZED_PKG") else UDP_COUNT // 100
    assert lost <= limit, f"lost {lost} of {UDP_COUNT}{link.describe()}"
    assert lost <= counted, f"lost {lost} datagrams, but the counters account for {counted}{link.describe()}"
    _forwarder_lost_nothing_uncounted(link)
    # A UDP_SEGMENT send crosses as one super-packet where the kernel offers USO (Linux 6.2+) to the device.
    with link.inside(link.left):
        uso = link.mode != "off" and bool(link.tun_l.offloads.get(f"uso{version}"))
    _packet_sizes_fit_the_mode(link, super_expected=gso and uso)


def _digest_in_arrival_order_of(seen: dict[int, int]) -> str:
    # dicts keep insertion order: the order the datagrams arrived in, which is the order they were hashed in.
    digest = hashlib.sha256()
    for seq in seen:
        digest.update(_datagram(seq))
    return digest.hexdigest()


# ---- the program ----

@pytest.mark.parametrize("in_c", [False, True], ids=["python", "in-c"])
def test_the_program_forwards_pings_between_namespaces_and_reports(in_c: bool) -> None:
    """examples/forwarder.py as a user runs it, pinged across for two seconds."""
    require_root_environment()
    tag = f"{os.getpid()}-{next(_counter)}"
    left, right = f"ftp-{tag}-l", f"ftp-{tag}-r"
    made: list[str] = []
    try:
        for ns in (left, right):
            _ip("netns", "add", ns)
            made.append(ns)
        cmd = [sys.executable, str(Path(forwarder.__file__)), "fpl0", "fpr0", "--netns-a", left, "--netns-b", right,
               "--address-a", "10.212.1.1/24", "--route-a", "10.212.2.0/24", "--address-b", "10.212.2.1/24",
               "--route-b", "10.212.1.0/24", "--duration", "4", *(["--in-c"] if in_c else [])]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("forwarding fpl0 <-> fpr0"), proc.stderr.read()  # type: ignore
            ping = subprocess.run(["ip", "netns", "exec", left, "ping", "-c", "5", "-i", "0.2", "-W", "2",
                                   "10.212.2.1"], capture_output=True, text=True, timeout=30)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert proc.returncode == 0, err
        assert " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
        lines = [x.strip() for x in out.splitlines()]
        a_to_b = next(x for x in lines if x.startswith("fpl0 -> fpr0:"))
        b_to_a = next(x for x in lines if x.startswith("fpr0 -> fpl0:"))
        # the echo requests crossed one way and the replies the other, every one sent on
        for line in (a_to_b, b_to_a):
            packets = int(line.split(": ")[1].split(" packets")[0])
            assert packets >= 5 and f"{packets} sent, 0 dropped (queue full), 0 rejected" in line, out
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)
