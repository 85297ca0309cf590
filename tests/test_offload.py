"""The virtio-net offload functions (csrc/offload/ft_offload.c): split super-packets, coalesce flows.

Three views of the same code:
  - its C tests (tests/c/test_offload.c) under AddressSanitizer and UBSan;
  - a bounded libFuzzer run of tests/fuzz/fuzz_offload.c over a seed corpus generated here;
  - split/coalesce driven through ctypes with packets built here by the standard library alone (struct and a
    checksum of our own), so the checks do not share code or assumptions with the C tests."""

from __future__ import annotations

import ctypes
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cbuild import CSRC, ROOT, SANITIZE_ASAN, build_and_run, build_libfuzzer, c_sources, compiler

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="native C builds run on Linux")


def sources() -> list[str]:
    return [str(p) for p in c_sources("linux", "core", "offload", "posix")]


# ---- packets, built independently of fasttun -----------------------------------------------------------

FT_EAGAIN, FT_EINVAL, FT_EPACKET = -1, -6, -9
TCP, UDP = 6, 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
SRC4, DST4 = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7])
SRC6, DST6 = bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000abc")


def ones_sum(data: bytes, start: int = 0) -> int:
    """Ones'-complement sum of 16-bit big-endian words, folded, not complemented."""
    if len(data) % 2:
        data += b"\0"
    total = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_sum(packet: bytes, proto: int, l4_len: int) -> int:
    if packet[0] >> 4 == 4:
        return ones_sum(packet[12:20] + struct.pack("!BBH", 0, proto, l4_len))
    return ones_sum(packet[8:40] + struct.pack("!IxxxB", l4_len, proto))


def l4_checksum_ok(packet: bytes) -> bool:
    hl, proto = (40, packet[6]) if packet[0] >> 4 == 6 else ((packet[0] & 15) * 4, packet[9])
    return ones_sum(packet[hl:], pseudo_sum(packet, proto, len(packet) - hl)) == 0xFFFF


def payload_bytes(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed + (i >> 9)) & 0xFF for i in range(n))


@dataclass(frozen=True)
class Spec:
    """One TCP segment / UDP datagram (or a super-packet, with partial=True)."""

    v6: bool = False
    proto: int = TCP
    payload: bytes = b""
    seq: int = 7_000_000
    ack: int = 0xA1B2C3D4
    flags: int = ACK
    window: int = 1000
    options: bytes = b""
    ident: int = 100
    sport: int = 50000
    dport: int = 443
    ttl: int = 63
    tos: int = 0
    partial: bool = False  # transport checksum field holds the pseudo-header sum (as with NEEDS_CSUM)


def build(s: Spec) -> bytes:
    if s.proto == TCP:
        assert len(s.options) % 4 == 0
        l4 = struct.pack("!HHIIBBHHH", s.sport, s.dport, s.seq & 0xFFFFFFFF, s.ack, (20 + len(s.options)) // 4 << 4,
                         s.flags, s.window, 0, 0) + s.options + s.payload
        field = 16
    else:
        l4 = struct.pack("!HHHH", s.sport, s.dport, 8 + len(s.payload), 0) + s.payload
        field = 6
    if s.v6:
        ip = struct.pack("!IHBB16s16s", 0x60000000 | s.tos << 20 | 0x12345, len(l4), s.proto, s.ttl, SRC6, DST6)
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, s.tos, 20 + len(l4), s.ident & 0xFFFF, 0x4000, s.ttl, s.proto, 0, SRC4,
                         DST4)
        ip = ip[:10] + struct.pack("!H", 0xFFFF - ones_sum(ip)) + ip[12:]
    partial = pseudo_sum(ip, s.proto, len(l4))
    if s.partial:
        value = partial
    else:
        value = 0xFFFF - ones_sum(l4, partial)
        if s.proto == UDP and value == 0:
            value = 0xFFFF
    l4 = l4[:field] + struct.pack("!H", value) + l4[field + 2:]
    return ip + l4


def vnet(flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def super_packet(s: Spec, gso_size: int, ecn: bool = False) -> bytes:
    ip_hl = 40 if s.v6 else 20
    l4_hl = 20 + len(s.options) if s.proto == TCP else 8
    gso_type = 5 if s.proto == UDP else (4 if s.v6 else 1)
    header = vnet(1, gso_type | (0x80 if ecn else 0), ip_hl + l4_hl, gso_size, ip_hl, 16 if s.proto == TCP else 6)
    return header + build(replace(s, partial=True))


def expected_segments(s: Spec, gso_size: int) -> list[bytes]:
    """What splitting s at gso_size must give, built from scratch."""
    chunks = [s.payload[i:i + gso_size] for i in range(0, len(s.payload), gso_size)]
    out = []
    for i, chunk in enumerate(chunks):
        flags = s.flags
        if i + 1 < len(chunks):
            flags &= ~(FIN | PSH)
        if i > 0:
            flags &= ~CWR
        out.append(build(replace(s, payload=chunk, seq=s.seq + i * gso_size, ident=s.ident + i, flags=flags,
                                 partial=False)))
    return out


# ---- (a) the C tests under the sanitizers ----------------------------------------------------------------


def test_offload_c_tests_under_address_and_undefined_behaviour_sanitizers():
    passed, failed = build_and_run(compiler("gcc"), SANITIZE_ASAN,
                                   [*sources(), ROOT / "tests" / "c" / "test_offload.c"], "offload_asan")
    assert failed == 0 and passed > 300


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_offload_builds_without_warnings(cc):
    path = compiler(cc)
    subprocess.run([path, "-std=c11", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{CSRC}", "-c",
                    str(CSRC / "offload" / "ft_offload.c"), "-o", os.devnull],
                   check=True, capture_output=True, text=True)


# ---- (b) a bounded fuzz run --------------------------------------------------------------------------------

FUZZ_SECONDS = int(os.environ.get("FT_FUZZ_SECONDS", "20"))


def write_seed_corpus(directory: Path) -> int:
    """Split seeds (header + super-packet) and coalesce seeds (allow byte + length-prefixed packets)."""
    seeds: list[bytes] = []
    for v6 in (False, True):
        for proto in (TCP, UDP):
            for size, gso in ((3000, 500), (1000, 1448), (9000, 1400), (200, 7)):
                s = Spec(v6=v6, proto=proto, payload=payload_bytes(size, size), flags=ACK | PSH,
                         options=b"\x01\x01\x08\x0a" + bytes(8) if proto == TCP and size == 9000 else b"")
                seeds.append(super_packet(s, gso))
                segments = expected_segments(s, gso)[:40]
                for allow in (1, 2, 3, 7):
                    seeds.append(bytes([allow]) + b"".join(struct.pack("!H", len(p)) + p for p in segments))
    plain = build(Spec(proto=UDP, payload=b"hello"))
    seeds.append(vnet(0, 0, 0, 0, 0, 0) + plain)
    seeds.append(vnet(1, 0, 0, 0, 20, 6) + build(Spec(proto=UDP, payload=b"hello", partial=True)))
    big = Spec(payload=payload_bytes(65535 - 40, 1), flags=ACK | FIN)
    seeds.append(super_packet(big, 1448))
    a = expected_segments(Spec(payload=payload_bytes(4000, 2)), 1000)
    b = expected_segments(Spec(v6=True, payload=payload_bytes(4000, 3), sport=1), 1000)
    mixed = [p for pair in zip(a, b) for p in pair] + [build(Spec(flags=SYN))]
    seeds.append(bytes([3]) + b"".join(struct.pack("!H", len(p)) + p for p in mixed))
    for i, seed in enumerate(seeds):
        (directory / f"seed{i:03d}").write_bytes(seed)
    return len(seeds)


def test_fuzz_offload_for_a_bounded_time(tmp_path):
    exe = build_libfuzzer([*sources(), ROOT / "tests" / "fuzz" / "fuzz_offload.c"], tmp_path / "fuzz_offload",
                          ["-lpthread"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_seed_corpus(corpus)
    result = subprocess.run(
        [str(exe), str(corpus), f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=1024", "-timeout=10",
         "-max_len=70000", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    tail = result.stderr[-4000:]
    assert result.returncode == 0, tail
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", result.stderr)
    assert runs and int(runs.group(1)) > 1000, tail


# ---- (c) ctypes: split and coalesce with packets built here ----------------------------------------------


class Err(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("errnum", ctypes.c_int), ("oserr", ctypes.c_long),
                ("index", ctypes.c_long), ("sent", ctypes.c_uint32), ("msg", ctypes.c_char * 256)]


class Batch(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(ctypes.c_uint8)), ("cap", ctypes.c_size_t),
                ("offsets", ctypes.POINTER(ctypes.c_uint32)), ("lengths", ctypes.POINTER(ctypes.c_uint32)),
                ("max", ctypes.c_uint32), ("count", ctypes.c_uint32), ("used", ctypes.c_size_t)]


class Pkt(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class OffloadError(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(f"{status}: {msg}")
        self.status = status
        self.msg = msg


class Offload:
    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.lib.ft_offload_split.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Batch),
                                              ctypes.POINTER(Err)]
        self.lib.ft_offload_split.restype = ctypes.c_int
        self.lib.ft_offload_coalesce.argtypes = [ctypes.POINTER(Pkt), ctypes.c_uint32, ctypes.c_uint32,
                                                 ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(Pkt),
                                                 ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint32,
                                                 ctypes.POINTER(Err)]
        self.lib.ft_offload_coalesce.restype = ctypes.c_int

    def split(self, raw: bytes, max_packets: int = 70000, cap: int = 8 << 20) -> list[bytes]:
        data = (ctypes.c_uint8 * cap)()
        offsets = (ctypes.c_uint32 * max_packets)()
        lengths = (ctypes.c_uint32 * max_packets)()
        batch = Batch(data, cap, offsets, lengths, max_packets, 0, 0)
        err = Err()
        n = self.lib.ft_offload_split(raw, len(raw), ctypes.byref(batch), ctypes.byref(err))
        if n < 0:
            assert batch.count == 0 and batch.used == 0
            raise OffloadError(n, err.msg.decode())
        assert n == batch.count
        base = ctypes.addressof(data)
        return [ctypes.string_at(base + offsets[i], lengths[i]) for i in range(n)]

    def coalesce(self, packets: list[bytes], allow: int) -> list[tuple[bytes, bytes, int]]:
        """(header, packet, number of input packets) for each unit."""
        n = len(packets)
        keep = [ctypes.create_string_buffer(p, len(p)) for p in packets]
        pkts = (Pkt * max(n, 1))(*[Pkt(ctypes.addressof(k), len(p)) for k, p in zip(keep, packets)])
        cap = sum(len(p) + 10 for p in packets)
        out_buf = ctypes.create_string_buffer(cap)
        out = (Pkt * max(n, 1))()
        segs = (ctypes.c_uint32 * max(n, 1))()
        err = Err()
        r = self.lib.ft_offload_coalesce(pkts, n, allow, out_buf, cap, out, segs, n, ctypes.byref(err))
        if r < 0:
            raise OffloadError(r, err.msg.decode())
        units = [ctypes.string_at(out[i].data, out[i].len) for i in range(r)]
        return [(u[:10], u[10:], segs[i]) for i, u in enumerate(units)]


@pytest.fixture(scope="module")
def offload(tmp_path_factory) -> Offload:
    gcc = compiler("gcc")
    lib = tmp_path_factory.mktemp("offload") / "libftoffload.so"
    subprocess.run([gcc, "-std=c11", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", f"-I{CSRC}", *sources(),
                    "-o", str(lib), "-lpthread"], check=True, capture_output=True, text=True)
    return Offload(lib)


SPLIT_CASES = {
    "tcp4 full 64 KiB": (Spec(payload=payload_bytes(65535 - 40, 1), flags=ACK | PSH), 1448, False),
    "tcp4 FIN on the last only": (Spec(payload=payload_bytes(10 * 1000, 2), flags=ACK | FIN | PSH), 1000, False),
    "tcp4 CWR on the first only": (Spec(payload=payload_bytes(5000, 3), flags=ACK | CWR | ECE), 1200, True),
    "tcp4 timestamps": (Spec(payload=payload_bytes(7000, 4), options=b"\x01\x01\x08\x0a" + bytes(range(8))), 1388,
                        False),
    "tcp4 sequence and id wrap": (Spec(payload=payload_bytes(8000, 5), seq=0xFFFFFC00, ident=0xFFFF), 1448, False),
    "tcp6 large": (Spec(v6=True, payload=payload_bytes(60000, 6), tos=0xB8), 1440, False),
    "tcp6 one segment": (Spec(v6=True, payload=payload_bytes(100, 7)), 1440, False),
    "udp4": (Spec(proto=UDP, payload=payload_bytes(14000 + 3, 8)), 1400, False),
    "udp6": (Spec(v6=True, proto=UDP, payload=payload_bytes(40000, 9)), 1232, False),
    "udp4 tiny gso": (Spec(proto=UDP, payload=payload_bytes(300, 10)), 8, False),
}


@pytest.mark.parametrize("name", SPLIT_CASES)
def test_split_gives_the_segments_a_sender_would_have_sent(offload, name):
    spec, gso, ecn = SPLIT_CASES[name]
    got = offload.split(super_packet(spec, gso, ecn))
    want = expected_segments(spec, gso)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"segment {i}"
        # Independently of the builder: the fields a receiver looks at.
        v6 = g[0] >> 4 == 6
        hl = 40 if v6 else 20
        if v6:
            assert struct.unpack("!H", g[4:6])[0] == len(g) - 40
        else:
            total, ident = struct.unpack("!HH", g[2:6])
            assert total == len(g) and ident == (spec.ident + i) & 0xFFFF and ones_sum(g[:20]) == 0xFFFF
        if spec.proto == TCP:
            seq, flags = struct.unpack("!I", g[hl + 4:hl + 8])[0], g[hl + 13]
            assert seq == (spec.seq + i * gso) & 0xFFFFFFFF
            assert bool(flags & FIN) == bool(spec.flags & FIN and i == len(got) - 1)
            assert bool(flags & PSH) == bool(spec.flags & PSH and i == len(got) - 1)
            assert bool(flags & CWR) == bool(spec.flags & CWR and i == 0)
        else:
            assert struct.unpack("!H", g[hl + 4:hl + 6])[0] == len(g) - hl
        assert l4_checksum_ok(g)
    chunks = [spec.payload[i:i + gso] for i in range(0, len(spec.payload), gso)]
    assert b"".join(g[len(g) - len(c):] for g, c in zip(got, chunks)) == spec.payload


def test_split_finishes_a_partial_checksum_of_a_plain_packet(offload):
    partial = build(Spec(proto=UDP, payload=b"partial checksum", partial=True))
    assert not l4_checksum_ok(partial)
    (got,) = offload.split(vnet(1, 0, 0, 0, 20, 6) + partial)
    assert got == build(Spec(proto=UDP, payload=b"partial checksum")) and l4_checksum_ok(got)
    plain = build(Spec(v6=True, payload=b"as is"))
    assert offload.split(vnet(0, 0, 0, 0, 0, 0) + plain) == [plain]


def mutate(raw: bytes, at: int, value: bytes) -> bytes:
    return raw[:at] + value + raw[at + len(value):]


GOOD4 = super_packet(Spec(payload=payload_bytes(3000, 1)), 1000)
GOOD6 = super_packet(Spec(v6=True, proto=UDP, payload=payload_bytes(3000, 1)), 1000)
MALFORMED = {
    "shorter than the header": (GOOD4[:7], "virtio-net header"),
    "IPv4 options": (mutate(GOOD4, 10, b"\x46"), "options"),
    "IPv4 total length lies": (mutate(GOOD4, 12, struct.pack("!H", 3041)), "total length"),
    "truncated": (GOOD4[:-1], "total length"),
    "IPv6 hop-by-hop header": (mutate(GOOD6, 16, b"\x00"), "extension headers"),
    "IPv6 payload length lies": (mutate(GOOD6, 14, struct.pack("!H", 5)), "payload length"),
    "TCP data offset 3": (mutate(GOOD4, 42, b"\x30"), "data offset"),
    "gso_size 0": (mutate(GOOD4, 4, struct.pack("=H", 0)), "gso_size"),
    "csum_start past the end": (mutate(GOOD4, 6, struct.pack("=H", 60000)), "csum_start"),
    "hdr_len past the end": (mutate(GOOD4, 2, struct.pack("=H", 60000)), "hdr_len"),
    "TCPV4 on UDP": (mutate(GOOD6, 1, b"\x01"), "TCPV4"),
    "UDP_L4 on TCP": (mutate(GOOD4, 1, b"\x05"), "needs UDP"),
    "UFO": (mutate(GOOD6, 1, b"\x03"), "UFO"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_split_refuses_malformed_input(offload, name):
    raw, words = MALFORMED[name]
    with pytest.raises(OffloadError) as info:
        offload.split(raw)
    assert info.value.status == FT_EPACKET and words in info.value.msg


def test_split_into_a_batch_without_room(offload):
    with pytest.raises(OffloadError) as info:
        offload.split(GOOD4, max_packets=2)
    assert info.value.status == FT_EPACKET and "empty batch" in info.value.msg


def test_coalesce_builds_the_super_packet_the_kernel_expects(offload):
    for v6 in (False, True):
        for proto in (TCP, UDP):
            spec = Spec(v6=v6, proto=proto, payload=payload_bytes(9 * 1300 + 11, 21), flags=ACK | PSH)
            segments = expected_segments(spec, 1300)
            ((header, packet, count),) = offload.coalesce(segments, 3)
            assert count == 10
            flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack("=BBHHHH", header)
            hl = 40 if v6 else 20
            assert (flags, gso_size, csum_start) == (1, 1300, hl)
            assert gso_type == (5 if proto == UDP else 4 if v6 else 1)
            assert (hdr_len, csum_offset) == ((hl + 8, 6) if proto == UDP else (hl + 20, 16))
            assert packet == build(replace(spec, partial=True))
            assert offload.split(header + packet) == segments


def test_coalesce_keeps_each_flows_order_across_interleaving(offload):
    a = expected_segments(Spec(payload=payload_bytes(6000, 1)), 1000)
    b = expected_segments(Spec(v6=True, proto=UDP, payload=payload_bytes(6000, 2)), 1000)
    c = expected_segments(Spec(payload=payload_bytes(6000, 3), sport=50001), 1000)
    mixed = [p for triple in zip(a, b, c) for p in triple]
    units = offload.coalesce(mixed, 3)
    assert [n for _, _, n in units] == [6, 6, 6]
    assert [offload.split(h + p) for h, p, _ in units] == [a, b, c]


NOT_MERGED = {
    "SYN": lambda s: replace(s, flags=SYN | ACK),
    "RST": lambda s: replace(s, flags=RST | ACK),
    "different ack": lambda s: replace(s, ack=s.ack + 1),
    "different window": lambda s: replace(s, window=s.window + 1),
    "different TTL": lambda s: replace(s, ttl=s.ttl + 1),
    "sequence gap": lambda s: replace(s, seq=s.seq + 1),
    "ids not consecutive": lambda s: replace(s, ident=s.ident + 2),
    "different options": lambda s: replace(s, options=b"\x01\x01\x01\x01"),
    "larger than the first": lambda s: replace(s, payload=s.payload + b"x"),
}


@pytest.mark.parametrize("name", NOT_MERGED)
def test_coalesce_passes_packets_that_must_not_merge_unchanged(offload, name):
    first = Spec(payload=payload_bytes(1000, 1))
    second = NOT_MERGED[name](replace(first, payload=payload_bytes(1000, 2), seq=first.seq + 1000,
                                      ident=first.ident + 1))
    packets = [build(first), build(second)]
    assert offload.coalesce(packets, 3) == [(bytes(10), p, 1) for p in packets]
    # The control: the proper next segment does merge.
    proper = replace(first, payload=payload_bytes(1000, 2), seq=first.seq + 1000, ident=first.ident + 1)
    assert [n for _, _, n in offload.coalesce([build(first), build(proper)], 3)] == [2]


def test_coalesce_passes_other_traffic_unchanged(offload):
    icmp = (struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 1, 0, SRC4, DST4)
            + struct.pack("!BBHHH", 8, 0, 0xF7FE, 1, 0))
    body = build(Spec(v6=True, payload=b"y" * 100))
    hop_by_hop = body[:6] + b"\x00" + body[7:40] + bytes([TCP, 0, 1, 4, 0, 0, 0, 0]) + body[40:]
    hop_by_hop = hop_by_hop[:4] + struct.pack("!H", len(hop_by_hop) - 40) + hop_by_hop[6:]
    bad_checksum = bytearray(build(Spec(payload=b"z" * 100)))
    bad_checksum[-1] ^= 1
    packets = [icmp, icmp, hop_by_hop, hop_by_hop, bytes(bad_checksum), bytes(bad_checksum), b"", b"\x45"]
    assert offload.coalesce(packets, 3) == [(bytes(10), p, 1) for p in packets]


def test_coalesce_refuses_too_small_buffers(offload):
    lib = offload.lib
    packet = build(Spec(payload=b"q" * 50))
    keep = ctypes.create_string_buffer(packet, len(packet))
    pkts = (Pkt * 1)(Pkt(ctypes.addressof(keep), len(packet)))
    out = (Pkt * 1)()
    err = Err()
    buf = ctypes.create_string_buffer(len(packet) + 9)
    assert lib.ft_offload_coalesce(pkts, 1, 3, buf, len(packet) + 9, out, None, 1, ctypes.byref(err)) == FT_EINVAL
    assert b"output buffer" in err.msg
    buf = ctypes.create_string_buffer(len(packet) + 10)
    assert lib.ft_offload_coalesce(pkts, 1, 3, buf, len(packet) + 10, out, None, 1, ctypes.byref(err)) == 1
