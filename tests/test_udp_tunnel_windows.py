"""examples/udp_tunnel.py on Windows end to end: two tunnel processes on Windows CPython, each on a fake Wintun
adapter (our wintun.dll, tests/wintun_fake), joined by UDP on 127.0.0.1. Packets fed into one adapter's receive
ring (as the OS would route them into it) must come out of the other adapter's send ring intact and in order,
both ways, plain, encrypted and on the asyncio variant; a packet that is not IP is fed too and must be dropped
and counted; a TCP flow comes out coalesced (the tunnel's default on Windows) into exactly the merges of its
consecutive segments; and each tunnel's ``counters {json}`` line (printed at exit, after SIGINT or SIGTERM raised in the
process) and the fake's own counters must account for every packet fed and received.

The fake keeps its rings in the process that loaded it, so each tunnel runs under tests/fake_adapter_end.py,
which plays the OS's side of its adapter on this test's commands. Packets are fed in rounds that the other end
must have delivered before the next round goes: UDP on loopback drops silently when a receive buffer is full, and
this test is about what the tunnel loses, not about the loopback.

Windows only: on Linux tests/test_windows_python.py runs it under Wine (tests/wine/winpy.py)."""

from __future__ import annotations

import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from packets import flow, ipv4_udp, ipv6_udp, merge, read_records, write_records

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Windows only (on Linux: under Wine, see "
                                                                "tests/test_windows_python.py)")

HERE = Path(__file__).resolve().parent
END = HERE / "fake_adapter_end.py"
FAKE_DIR = os.environ.get("FASTTUN_TEST_FAKE_WINTUN_DIR", "")
ROUNDS = 12
PER_ROUND = 48
MTU = 1400
NOT_IP = b"\x00" * 40


def free_udp_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def packets_for(side: int, round_: int) -> list[bytes]:
    """A round's packets from one side: IPv4 and IPv6 UDP, sizes from 28 bytes to the MTU, each carrying its
    side, round and index (so a packet out of place is seen), with correct checksums."""
    out = []
    for i in range(PER_ROUND):
        tag = struct.pack("!BHH", side, round_, i)
        size = (28, 60, 576, 1000, MTU, 333)[i % 6] + (i // 6) % 3
        if i % 4 == 3:
            payload = (tag * 400)[:max(0, min(size, MTU) - 48)]
            out.append(ipv6_udp("fd00:99::1", "fd00:99::2", 4000 + side, 5000 + i, payload))
        else:
            payload = (tag * 400)[:max(5, min(size, MTU) - 28)]
            out.append(ipv4_udp("10.99.0.1", "10.99.0.2", 4000 + side, 5000 + i, payload, ident=round_ * 100 + i))
    return out


class End:
    """One tunnel process under tests/fake_adapter_end.py: its commands and what it printed."""

    def __init__(self, name: str, args: list[str], tmp: Path) -> None:
        self.name = name
        self.drained = tmp / f"{name}-drained.bin"
        self.feed = tmp / f"{name}-feed.bin"
        env = dict(os.environ)
        env.pop("FASTTUN_WINTUN_DLL", None)  # the end loads the fake itself, by path
        self.proc = subprocess.Popen(
            [sys.executable, str(END), os.path.join(FAKE_DIR, "fake", "wintun.dll"), "--name", name, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, None), daemon=True).start()

    @staticmethod
    def _pump(stream, lines: list[str], q: queue.Queue[str] | None) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if q is not None:
                q.put(line.rstrip("\n"))

    def output(self) -> str:
        return f"--- {self.name} stdout:\n" + "\n".join(self.out) + f"\n--- {self.name} stderr:\n" + \
            "\n".join(self.err[-60:])

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {prefix!r} line within {timeout} s\n{self.output()}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    time.sleep(0.2)  # the pump may not have queued the last lines yet
                    if self.lines.empty():
                        raise AssertionError(f"{self.name} exited {self.proc.returncode} before {prefix!r}\n"
                                             f"{self.output()}") from None
                continue
            if line.startswith("end error"):
                raise AssertionError(f"{self.name}: {line}\n{self.output()}")
            if line.startswith(prefix):
                return line

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def feed_packets(self, packets: list[bytes]) -> None:
        write_records(self.feed, packets)
        self.command(f"feed {self.feed}")
        got = int(self.expect("end fed ", 60).split()[2])
        assert got == len(packets), f"{self.name}: only {got} of {len(packets)} fitted into the ring"

    def drain(self, count: int, seconds: float) -> int:
        self.command(f"drain {count} {seconds} {self.drained}")
        return int(self.expect("end drained ", seconds + 60).split()[2])

    def stop(self, sig: str) -> tuple[dict, dict]:
        """The tunnel's counters and the fake's, once the process exited 0."""
        self.command(f"stop {sig}")
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name} did not stop on {sig}\n{self.output()}") from None
        counters = self.expect("counters ", 10)
        fake = self.expect("end fake ", 10)
        assert code == 0, f"{self.name} exited {code}\n{self.output()}"
        return json.loads(counters[len("counters "):]), json.loads(fake[len("end fake "):])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def start_pair(tmp_path: Path, tag: str, extra: list[str]) -> tuple[End, End]:
    pa, pb = free_udp_ports(2)
    name = f"{os.getpid()}-{tag}"
    a = End(f"ftwa-{name}", ["--tun-addr", "10.99.0.1/24", "--bind", f"127.0.0.1:{pa}", "--peer",
                             f"127.0.0.1:{pb}", *extra], tmp_path)
    b = End(f"ftwb-{name}", ["--tun-addr", "10.99.0.2/24", "--bind", f"127.0.0.1:{pb}", "--peer",
                             f"127.0.0.1:{pa}", *extra], tmp_path)
    return a, b


def require_cryptography() -> None:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    except ImportError:
        pytest.importorskip("cryptography")  # the sub-suite's allowed skip where there is no wheel for Wine
        raise
    if not hasattr(ChaCha20Poly1305, "encrypt_into"):
        pytest.skip("could not import 'cryptography' with encrypt_into (45 or later)")


@pytest.mark.parametrize("mode", ["plain", "encrypted", "asyncio"])
def test_two_windows_tunnels_carry_every_packet_intact_and_in_order(mode: str, tmp_path: Path) -> None:
    if not FAKE_DIR:
        pytest.skip("needs the fake wintun.dll: run through tests/test_windows_python.py (tests/wine/winpy.py)")
    extra: list[str] = ["--mtu", str(MTU)]
    if mode == "encrypted":
        require_cryptography()
        key = tmp_path / "key"
        key.write_bytes(os.urandom(32))
        extra += ["--key-file", str(key)]
    if mode == "asyncio":
        extra += ["--asyncio"]
    a, b = start_pair(tmp_path, mode, extra)
    try:
        for end in (a, b):
            end.expect("ready", 120)
        fed: dict[str, list[bytes]] = {"a": [], "b": []}
        for r in range(ROUNDS):
            for side, (src, dst) in enumerate(((a, b), (b, a))):
                packets = packets_for(side, r)
                if r == ROUNDS // 2:  # not an IP packet: the sender's adapter side must drop and count it
                    src.feed_packets(packets[:5] + [NOT_IP] + packets[5:])
                else:
                    src.feed_packets(packets)
                fed["ab"[side]] += packets
            for side, dst in ((0, b), (1, a)):
                total = len(fed["ab"[side]])
                have = len(read_records(dst.drained))
                got = have + dst.drain(total - have, 20.0)
                assert got == total, f"round {r}: {dst.name} took {got} of {total} packets\n" \
                                     f"{a.output()}\n{b.output()}"
        counters_a, fake_a = a.stop("SIGINT")
        counters_b, fake_b = b.stop("SIGTERM")
    finally:
        a.kill()
        b.kill()

    # intact and in order: byte for byte what the other side fed
    for name, dst in (("a", b), ("b", a)):
        got = read_records(dst.drained)
        assert len(got) == len(fed[name])
        bad = [i for i, (x, y) in enumerate(zip(got, fed[name])) if x != y]
        assert not bad, f"{len(bad)} packets from {name} differ, the first at {bad[0]}"

    # every packet accounted for: the fakes, the devices, the sockets, the tunnels
    n = ROUNDS * PER_ROUND
    for counters, fake, name in ((counters_a, fake_a, "a"), (counters_b, fake_b, "b")):
        tun, udp, tunnel = counters["tun"], counters["udp"], counters["tunnel"]
        where = f"{name}: {json.dumps(counters)}\nfake {fake}"
        assert fake["injected"] == n + 1 and fake["received"] == n + 1 and fake["released"] == n + 1, where
        assert fake["sent"] == n and fake["read_back"] == n, where
        assert tun["rx_packets"] == n and tun["rx_dropped_invalid"] == 1, where  # the fed non-IP packet
        assert tun["tx_packets"] == n, where
        assert tunnel == {"not_ip": 0, "foreign": 0, "auth_failed": 0, "replayed": 0, "incomplete": 0}, where
        for key in ("tx_dropped_full", "tx_rejected", "rx_dropped_oversize", "rx_errors", "tx_errors",
                    "rx_dropped_os", "tx_dropped_os"):
            assert tun[key] == 0, (key, where)
        for key in ("tx_dropped_full", "tx_rejected", "rx_dropped_oversize", "tx_unreachable", "rx_errors",
                    "tx_errors", "message_fallbacks", "gro_malformed"):
            assert udp[key] == 0, (key, where)
        if mode != "encrypted":  # one datagram per packet; sealed, a train of packets shares datagrams
            assert udp["tx_packets"] == n and udp["rx_packets"] == n, where
        assert counters["udp_offloads"]["message_calls"], where  # WSARecvMsg/WSASendMsg, not the fallback
        assert counters["tun_offload"] == "coalesce", where
    # what one socket sent, the other received (none lost on the loopback in between)
    assert counters_a["udp"]["tx_packets"] == counters_b["udp"]["rx_packets"]
    assert counters_b["udp"]["tx_packets"] == counters_a["udp"]["rx_packets"]


def as_merges(got: list[bytes], segments: list[bytes]) -> list[int]:
    """How many consecutive segments each packet of got merges (the packet must be exactly their merge: headers,
    lengths, checksums); AssertionError where one is not."""
    runs, i = [], 0
    for n, packet in enumerate(got):
        k = next((k for k in range(1, len(segments) - i + 1) if merge(segments[i:i + k]) == packet), 0)
        assert k, f"packet {n} ({len(packet)} bytes) is no merge of segments from {i} on"
        runs.append(k)
        i += k
    assert i == len(segments), f"only {i} of {len(segments)} segments arrived"
    return runs


def test_a_windows_tunnel_writes_a_tcp_flow_coalesced(tmp_path: Path) -> None:
    """On Windows the tunnel hands its adapter TCP coalesced (coalesce=True, --offload on, the default): what
    arrives is the flow's segments merged run by run, each merge exact, nothing lost or reordered, and the
    device counts segments."""
    if not FAKE_DIR:
        pytest.skip("needs the fake wintun.dll: run through tests/test_windows_python.py (tests/wine/winpy.py)")
    segments = flow(False, 7001, 40, 1000)
    a, b = start_pair(tmp_path, "tcp", ["--mtu", str(MTU)])
    try:
        for end in (a, b):
            end.expect("ready", 120)
        a.feed_packets(segments)
        b.drain(len(segments), 3.0)  # fewer packets than segments when merged: the rest of the time is waited out
        counters_a, _ = a.stop("SIGINT")
        counters_b, fake_b = b.stop("SIGINT")
    finally:
        a.kill()
        b.kill()
    got = read_records(b.drained)
    runs = as_merges(got, segments)
    assert fake_b["sent"] == fake_b["read_back"] == len(got), fake_b
    assert counters_a["udp"]["tx_packets"] == counters_b["udp"]["rx_packets"] == len(segments)
    assert counters_b["tun"]["tx_packets"] == len(segments) and counters_b["tun"]["tx_dropped_full"] == 0
    print(f"{len(segments)} segments arrived as {len(got)} packets: runs {runs}")
