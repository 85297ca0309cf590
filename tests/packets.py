"""Packets built independently of fasttun (standard library only), for the tests."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path


def checksum(data: bytes, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071), written here so that tests do not check fasttun against itself."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    udp_len = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, 17, 0, s, d)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def ipv6_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    udp_len = 8 + len(payload)
    pseudo = s + d + struct.pack("!I3xB", udp_len, 17)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return struct.pack("!IHBB16s16s", 0x60000000, udp_len, 17, 64, s, d) + udp


def udp_payload(packet: bytes | memoryview) -> bytes:
    """The UDP payload of an IPv4 or IPv6 UDP packet (no extension headers)."""
    p = bytes(packet)
    if p[0] >> 4 == 4:
        ihl = (p[0] & 0x0F) * 4
        assert p[9] == 17, "not UDP"
        return p[ihl + 8 :]
    assert p[6] == 17, "not UDP"
    return p[48:]


def minimal_ipv4(size: int = 60, seq: int = 0) -> bytes:
    """A syntactically valid IPv4 packet of `size` bytes carrying a sequence number (not routable)."""
    assert size >= 24
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 253, 0, bytes(4), bytes(4))
    return header + struct.pack("!I", seq) + bytes(size - 24)


def seq_of(packet: bytes | memoryview) -> int:
    return struct.unpack_from("!I", bytes(packet[20:24]))[0]


def icmp4_echo(src: str, dst: str, ident: int, seq: int, payload: bytes, request: bool = True) -> bytes:
    icmp = struct.pack("!BBHHH", 8 if request else 0, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, s, d)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


def icmp6_echo(src: str, dst: str, ident: int, seq: int, payload: bytes, request: bool = True) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    icmp = struct.pack("!BBHHH", 128 if request else 129, 0, 0, ident, seq) + payload
    pseudo = s + d + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 64, s, d) + icmp


# TCP segments of one flow, and the one segment coalescing makes of consecutive ones (Wintun's coalesce=True).
TCP_ACK, TCP_PSH = 0x10, 0x08


def tcp_segment(v6: bool, sport: int, seq: int, payload: bytes, ident: int = 0, flags: int = TCP_ACK) -> bytes:
    src, dst = ("fd00::1", "fd00::2") if v6 else ("10.9.0.1", "10.9.0.2")
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    tcp = struct.pack("!HHIIBBHHH", sport, 443, seq & 0xFFFFFFFF, 777, 5 << 4, flags, 5000, 0, 0) + payload
    pseudo = s + d + (struct.pack("!IxxxB", len(tcp), 6) if v6 else struct.pack("!xBH", 6, len(tcp)))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    if v6:
        return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + s + d + tcp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ident & 0xFFFF, 0x4000, 64, 6, 0, s, d)
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + tcp


def merge(segments: list[bytes]) -> bytes:
    """One segment carrying the payloads of consecutive segments: the first's headers, lengths and checksums
    recomputed, PSH from the last."""
    first = segments[0]
    v6 = first[0] >> 4 == 6
    ip_hl = 40 if v6 else 20
    payload = b"".join(seg[ip_hl + 20:] for seg in segments)
    flags = first[ip_hl + 13] | (segments[-1][ip_hl + 13] & TCP_PSH)
    sport, seq = struct.unpack("!HxxI", first[ip_hl:ip_hl + 8])
    ident = 0 if v6 else struct.unpack("!H", first[4:6])[0]
    return tcp_segment(v6, sport, seq, payload, ident, flags)


def flow(v6: bool, sport: int, n: int, size: int, seq0: int = 1000, ident0: int = 100) -> list[bytes]:
    return [tcp_segment(v6, sport, seq0 + i * size, bytes((i + j) & 0xFF for j in range(size)), ident0 + i,
                        TCP_ACK | (TCP_PSH if i == n - 1 else 0)) for i in range(n)]


RECORD_LENGTH = struct.Struct("!I")


def write_records(path: str | Path, packets: list[bytes], mode: str = "wb") -> None:
    """Packets to a file as records of a 4-byte big-endian length and the bytes (mode "ab" appends)."""
    with open(path, mode) as f:
        f.write(b"".join(RECORD_LENGTH.pack(len(p)) + p for p in packets))


def read_records(path: str | Path) -> list[bytes]:
    """The packets of a file of records (write_records); none if the file does not exist."""
    data = Path(path).read_bytes() if Path(path).exists() else b""
    out, pos = [], 0
    while pos < len(data):
        (n,) = RECORD_LENGTH.unpack_from(data, pos)
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out
