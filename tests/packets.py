"""Packets built independently of fasttun (standard library only), for the tests."""

from __future__ import annotations

import ipaddress
import struct


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
