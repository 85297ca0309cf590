"""soak: sequence-numbered, checksummed packets streamed for a long time through a pair and through a real TUN
device into readers, then checked: nothing corrupt, duplicated or reordered within a stream, every missing
packet in a drop counter, and resident memory flat after the warm-up.

Two legs run at once for the measured seconds:

- pair: two sender threads push IPv4/UDP packets into one end of an in-memory pair (one stream with
  ``on_full="wait"``, one with ``"drop"``, the ring kept small so both policies act); a reader on the other end
  checks every packet. The pair loses nothing it accepted: what is missing must equal ``tx_dropped_full``.
- tun: a multi-queue TUN device in a namespace of its own (removed afterwards), a shallow kernel queue
  (``txqueuelen``) so that the kernel drops; UDP sockets inside the namespace send one stream each towards an
  address routed through the device; a reader (one thread per queue) checks every packet. What is missing must
  be in the device's drop counters (``rx_dropped_os`` and friends).

Each UDP payload carries a magic, the stream id, the packet's IP length, a sequence number and a CRC-32 of the
rest. It runs only when named (``fasttun bench soak --seconds N``): 30 s in CI, hours by hand."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
import sys
import threading
import time
import zlib
from typing import Optional, Union

import fasttun
from fasttun import _netns
from fasttun._bench.packets import checksum
from fasttun._bench.results import Sample
from fasttun._bench.scenario import Described, Settings, Variant
from fasttun._bench.system import namespace, netns_path
from fasttun._host import root_problem

PORT = 9000
MAGIC = b"FTSK"
HEAD = struct.Struct("!4sHHQ")      # magic, stream, IP total length, sequence number
HEAD_AT = 28                        # the UDP payload of an IPv4 header without options
CRC_AT = HEAD_AT + HEAD.size
BODY_AT = CRC_AT + 4
MIN_SIZE = BODY_AT
SIZES = (48, 64, 100, 180, 333, 576, 1000, 1280, 1500)
"""IP packet sizes, chosen by the sequence number (so they vary within every batch)."""
RSS_LIMIT = 1 << 20
"""How much resident memory may grow from the end of the warm-up to the end of the run."""
MAX_EXAMPLES = 10

PAIR_SRC, PAIR_DST = "10.203.0.1", "10.203.0.2"
TUN_ADDRESS, TUN_PEER = "10.203.1.1/24", "10.203.1.2"
TUN_NAME = "ftbsoak0"
TUN_QUEUES = 2
TUN_STREAMS = 4
TUN_TXQUEUELEN = 128

_NOISE = os.urandom(4096)


def size_of(seq: int) -> int:
    return SIZES[seq % len(SIZES)]


def payload(stream: int, seq: int, size: int) -> bytes:
    """The UDP payload of packet ``seq`` of ``stream`` for an IP packet of ``size`` bytes."""
    head = HEAD.pack(MAGIC, stream, size, seq)
    k = (seq * 7919) % 2048
    body = _NOISE[k:k + size - BODY_AT]
    return head + struct.pack("!I", zlib.crc32(body, zlib.crc32(head))) + body


class PacketMaker:
    """Whole IPv4/UDP packets for the pair leg (header checksums valid; headers cached per size)."""

    def __init__(self, stream: int) -> None:
        self.stream = stream
        self._headers: dict[int, bytes] = {}
        src = socket.inet_aton(PAIR_SRC)
        dst = socket.inet_aton(PAIR_DST)
        for size in SIZES:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 17, 0, src, dst)
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            udp = struct.pack("!HHHH", 42000 + stream, PORT, size - 20, 0)
            self._headers[size] = ip + udp

    def packet(self, seq: int) -> bytes:
        size = size_of(seq)
        return self._headers[size] + payload(self.stream, seq, size)


@dataclasses.dataclass
class StreamState:
    next_seq: int = 0
    """One past the highest sequence number seen."""
    received: int = 0


class Checker:
    """Checks every packet a leg's readers see: integrity, and order without duplicates within each stream.

    Thread-safe (readers of several queues share one); keeps a bounded amount of state whatever the run's
    length, so that it does not itself make memory grow."""

    def __init__(self, streams: int) -> None:
        self.streams = [StreamState() for _ in range(streams)]
        self.received = 0
        self.corrupt = 0
        self.duplicated = 0
        self.reordered = 0
        self.foreign = 0
        self.callbacks = 0
        self.examples: list[str] = []
        self._lock = threading.Lock()

    def _problem(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)

    def on_batch(self, batch: fasttun.Batch) -> None:
        with self._lock:
            self.callbacks += 1
            for p in batch:
                self.check(p)

    def check(self, p: Union[memoryview, fasttun.Packet]) -> None:
        n = len(p)
        if n < 28 or p[0] != 0x45 or p[9] != 17 or struct.unpack_from("!H", p, 22)[0] != PORT:
            self.foreign += 1       # not one of ours (the kernel's own traffic, should there be any)
            return
        if n < MIN_SIZE:
            self.corrupt += 1
            self._problem(f"a {n}-byte packet to port {PORT}, too short for the soak's payload")
            return
        magic, stream, size, seq = HEAD.unpack_from(p, HEAD_AT)
        (crc,) = struct.unpack_from("!I", p, CRC_AT)
        total, udp_len = struct.unpack_from("!H", p, 2)[0], struct.unpack_from("!H", p, 24)[0]
        if (magic != MAGIC or size != n or total != n or udp_len != n - 20 or stream >= len(self.streams)
                or size != size_of(seq) or zlib.crc32(p[BODY_AT:], zlib.crc32(p[HEAD_AT:CRC_AT])) != crc):
            self.corrupt += 1
            self._problem(f"corrupt packet: {n} bytes, IP length {total}, UDP length {udp_len}, magic {magic!r}, "
                          f"stream {stream}, size field {size}, seq {seq}")
            return
        st = self.streams[stream]
        if seq >= st.next_seq:
            st.next_seq = seq + 1
        elif seq == st.next_seq - 1:
            self.duplicated += 1
            self._problem(f"stream {stream}: seq {seq} twice in a row")
            return
        else:
            self.reordered += 1
            self._problem(f"stream {stream}: seq {seq} after {st.next_seq - 1}")
            return
        st.received += 1
        self.received += 1

    def problems(self) -> list[str]:
        out = []
        for what, count in (("corrupt", self.corrupt), ("duplicated", self.duplicated),
                            ("reordered", self.reordered)):
            if count:
                out.append(f"{count:,} {what}")
        return out


def rss_bytes() -> int:
    """This process's resident set size (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass
class LegResult:
    name: str
    generated: int
    """Packets the senders handed over successfully (pair: to send_batch; tun: sendto() returned)."""
    checker: Checker
    dropped: int
    """What the drop counters say was lost (pair: tx_dropped_full; tun: the device's rx drop counters)."""
    drop_detail: str
    reader_packets: int
    exact: bool
    """The drop counters must equal what is missing (pair), not just cover it (tun: they may count others)."""
    error: Optional[str] = None

    @property
    def missing(self) -> int:
        return self.generated - self.checker.received

    def problems(self) -> list[str]:
        out = [f"{self.name}: {p}" for p in self.checker.problems()]
        if self.error:
            out.append(f"{self.name}: {self.error}")
        missing = self.missing
        if missing < 0:
            out.append(f"{self.name}: {-missing:,} more packets received than sent")
        elif (missing != self.dropped) if self.exact else (missing > self.dropped):
            out.append(f"{self.name}: {missing:,} packets missing but the drop counters say {self.dropped:,} "
                       f"({self.drop_detail})")
        counted = self.checker.received + self.checker.corrupt + self.checker.duplicated + \
            self.checker.reordered + self.checker.foreign
        if self.reader_packets != counted:
            out.append(f"{self.name}: reader.stats.packets is {self.reader_packets:,} but the callback saw "
                       f"{counted:,}")
        if self.generated == 0 or self.checker.received == 0:
            out.append(f"{self.name}: nothing went through ({self.generated} sent, {self.checker.received} "
                       f"received)")
        return out

    def summary(self) -> str:
        c = self.checker
        return (f"{self.name}: {self.generated:,} sent, {c.received:,} received in order and intact, "
                f"{self.missing:,} missing, {self.dropped:,} counted as dropped ({self.drop_detail}), "
                f"{c.corrupt} corrupt, {c.duplicated} duplicated, {c.reordered} reordered")


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.errors: list[str] = []


class PairLeg:
    name = "pair"

    def __init__(self, stop: _Stop) -> None:
        self.stop = stop
        self.a, self.b = fasttun.pair(capacity=512, capacity_bytes=256 * 1024)
        self.checker = Checker(2)
        self.generated = [0, 0]
        self.senders = [threading.Thread(target=self._send, args=(s, policy), name=f"ftb-soak-pair-{s}",
                                         daemon=True)
                        for s, policy in ((0, "wait"), (1, "drop"))]
        self.reader: Optional[fasttun.Reader] = None

    def start(self) -> None:
        self.reader = self.b.start_reader(self.checker.on_batch, batch_size=64)
        for t in self.senders:
            t.start()

    def _send(self, stream: int, policy: fasttun._tun.FullPolicy) -> None:
        maker = PacketMaker(stream)
        seq = 0
        try:
            while not self.stop.event.is_set():
                packets = [maker.packet(seq + i) for i in range(32)]
                sent = self.a.send_batch(packets, on_full=policy, timeout=0.02)
                seq += len(packets)
                self.generated[stream] = seq
                if sent < len(packets):
                    time.sleep(0.002)   # overload in bursts, not all the time: most packets should be checked
        except BaseException as exc:  # noqa: BLE001 - reported in the verdict
            self.stop.errors.append(f"pair sender {stream}: {type(exc).__name__}: {exc}")

    def finish(self) -> LegResult:
        for t in self.senders:
            t.join(10.0)
        error = "a sender did not stop within 10 s" if any(t.is_alive() for t in self.senders) else None
        assert self.reader is not None
        error = _end_reader(self.reader, self.checker) or error
        stats = self.a.stats
        rstats = self.reader.stats
        self.a.close()
        self.b.close()
        return LegResult(self.name, sum(self.generated), self.checker, stats.tx_dropped_full,
                         f"sender tx_dropped_full {stats.tx_dropped_full:,}", rstats.packets, exact=True,
                         error=error)


class TunLeg:
    name = "tun"

    def __init__(self, stop: _Stop, ns: str) -> None:
        self.stop = stop
        self.ns = ns
        self.checker = Checker(TUN_STREAMS)
        self.generated = 0
        self.send_errors = 0
        with _netns.entered(netns_path(ns)):
            self.tun = fasttun.LinuxTun(TUN_NAME, mtu=1500, queues=TUN_QUEUES, addresses=[TUN_ADDRESS], up=True,
                                        txqueuelen=TUN_TXQUEUELEN)
            self.sockets: list[socket.socket] = []
            try:
                for s in range(TUN_STREAMS):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self.sockets.append(sock)
                    sock.bind(("", 43000 + s))
            except BaseException:
                self._close()
                raise
        self.before = self.tun.stats
        self.sender = threading.Thread(target=self._send, name="ftb-soak-tun", daemon=True)
        self.reader: Optional[fasttun.Reader] = None

    def _close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.tun.close()

    def start(self) -> None:
        self.reader = self.tun.start_reader(self.checker.on_batch, batch_size=64)
        self.sender.start()

    def _send(self) -> None:
        seqs = [0] * TUN_STREAMS
        dest = (TUN_PEER, PORT)
        rounds = 0
        try:
            while not self.stop.event.is_set():
                # Mostly rounds of 32 with short pauses (the reader keeps up); every 64th round a burst of
                # 1024 that overflows the shallow kernel queue, so that drops happen and are accounted for.
                rounds += 1
                per_stream = 256 if rounds % 64 == 0 else 8
                for s, sock in enumerate(self.sockets):
                    for _ in range(per_stream):
                        seq = seqs[s]
                        try:
                            sock.sendto(payload(s, seq, size_of(seq)), dest)
                        except OSError:
                            self.send_errors += 1   # never sent, so never missing: the number is used again
                            continue
                        seqs[s] = seq + 1
                        self.generated += 1
                time.sleep(0.0005)
        except BaseException as exc:  # noqa: BLE001 - reported in the verdict
            self.stop.errors.append(f"tun sender: {type(exc).__name__}: {exc}")

    def finish(self) -> LegResult:
        self.sender.join(10.0)
        error = None if not self.sender.is_alive() else "the sender did not stop within 10 s"
        assert self.reader is not None
        error = _end_reader(self.reader, self.checker) or error
        after = self.tun.stats
        rstats = self.reader.stats
        self._close()
        os_drops = after.rx_dropped_os - self.before.rx_dropped_os
        invalid = after.rx_dropped_invalid - self.before.rx_dropped_invalid
        oversize = after.rx_dropped_oversize - self.before.rx_dropped_oversize
        detail = f"kernel queue {os_drops:,}, invalid {invalid:,}, oversize {oversize:,}"
        if self.send_errors:
            detail += f"; {self.send_errors:,} sendto() calls failed and were not counted as sent"
        return LegResult(self.name, self.generated, self.checker, os_drops + invalid + oversize, detail,
                         rstats.packets, exact=False, error=error)


def _end_reader(reader: fasttun.Reader, checker: Checker) -> Optional[str]:
    """Lets the reader take what is left, then stops it; what went wrong in it, if anything."""
    _drain(checker)
    try:
        reader.stop(timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - reported in the verdict
        return f"the reader raised {type(exc).__name__}: {exc}"
    return None


def _drain(checker: Checker, idle: float = 0.5, limit: float = 10.0) -> None:
    """Waits until the readers have seen nothing new for ``idle`` seconds (bounded by ``limit``)."""
    deadline = time.monotonic() + limit
    seen = -1
    changed = time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        count = checker.received + checker.corrupt + checker.duplicated + checker.reordered + checker.foreign
        if count != seen:
            seen, changed = count, now
        elif now - changed >= idle:
            return
        time.sleep(0.02)


@dataclasses.dataclass
class Verdict:
    passed: bool
    seconds: float
    legs: list[LegResult]
    rss_warm: int
    rss_end: int
    rss_max: int
    problems: list[str]
    skipped: list[str]

    def text(self) -> str:
        growth = self.rss_end - self.rss_warm
        lines = [f"soak: {'PASS' if self.passed else 'FAIL'} after {self.seconds:.1f} s"]
        lines += [f"  {leg.summary()}" for leg in self.legs]
        lines += [f"  {s}" for s in self.skipped]
        lines.append(f"  memory: RSS {self.rss_warm / 2**20:.1f} MiB after warm-up, {self.rss_end / 2**20:.1f} MiB "
                     f"at the end ({growth / 1024:+,.0f} KiB; limit +{RSS_LIMIT // 1024} KiB), "
                     f"peak {self.rss_max / 2**20:.1f} MiB")
        lines += [f"  problem: {p}" for p in self.problems]
        for leg in self.legs:
            lines += [f"  {leg.name} example: {e}" for e in leg.checker.examples]
        return "\n".join(lines)


def soak(seconds: float, with_tun: Optional[bool] = None) -> Verdict:
    """Runs both legs (the TUN leg only where this process may create namespaces) and judges them."""
    problem = root_problem()
    if with_tun is None:
        with_tun = problem is None
    skipped = [] if with_tun else [f"tun: skipped: {problem}"]
    warmup = min(5.0, seconds / 4)
    stop = _Stop()
    with contextlib.ExitStack() as stack:
        pair_leg = PairLeg(stop)
        stack.callback(pair_leg.b.close)
        stack.callback(pair_leg.a.close)
        legs: list[PairLeg | TunLeg] = [pair_leg]
        if with_tun:
            ns = stack.enter_context(namespace("soak"))
            tun_leg = TunLeg(stop, ns)
            stack.callback(tun_leg._close)
            legs.append(tun_leg)
        started = time.monotonic()
        try:
            for leg in legs:
                leg.start()
            time.sleep(warmup)
            rss_warm = rss_max = rss_bytes()
            end = started + seconds
            while not stop.errors:
                left = end - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(0.25, left))
                rss_max = max(rss_max, rss_bytes())
            rss_end = rss_bytes()
            rss_max = max(rss_max, rss_end)
        finally:
            stop.event.set()
        elapsed = time.monotonic() - started
        results = [leg.finish() for leg in legs]
    problems = list(stop.errors)
    for r in results:
        problems += r.problems()
    if rss_end - rss_warm >= RSS_LIMIT:
        problems.append(f"resident memory grew by {(rss_end - rss_warm) / 1024:,.0f} KiB after the warm-up "
                        f"(limit {RSS_LIMIT // 1024} KiB)")
    return Verdict(not problems, elapsed, results, rss_warm, rss_end, rss_max, problems, skipped)


# needs_root False: the pair leg runs anywhere; the TUN leg only with root (and says so when skipped)
class SoakScenario(
        Described, name="soak", needs_root=False, key="pps",
        summary="checksummed sequences through a pair and a TUN device for a long time: integrity, drops, memory"):
    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        return [Variant("pair + TUN, checksummed sequences, memory watched", lambda: self._run(settings))]

    def _run(self, settings: Settings) -> Sample:
        verdict = soak(settings.seconds)
        print(verdict.text(), file=sys.stdout, flush=True)
        if not verdict.passed:
            raise RuntimeError("soak FAILED: " + "; ".join(verdict.problems))
        received = sum(leg.checker.received for leg in verdict.legs)
        nbytes = received * sum(SIZES) / len(SIZES)
        extra = {
            "soak_missing": float(sum(leg.missing for leg in verdict.legs)),
            "soak_dropped": float(sum(leg.dropped for leg in verdict.legs)),
            "soak_corrupt": float(sum(leg.checker.corrupt for leg in verdict.legs)),
            "soak_out_of_order": float(sum(leg.checker.duplicated + leg.checker.reordered for leg in verdict.legs)),
            "rss_growth_kib": (verdict.rss_end - verdict.rss_warm) / 1024,
        }
        for leg in verdict.legs:
            extra[f"{leg.name}_received"] = float(leg.checker.received)
        return Sample(pps=received / verdict.seconds, gbps=nbytes * 8 / verdict.seconds / 1e9, extra=extra)
