"""The packets the scenarios send (the latency responder uses the library's own fasttun.icmp.echo_replies)."""

from __future__ import annotations

import ipaddress
import struct

from fasttun.icmp import checksum

__all__ = ["checksum", "udp4"]


def udp4(src: str, dst: str, size: int, dport: int = 9000, sport: int = 40000) -> bytes:
    """An IPv4/UDP packet of exactly ``size`` bytes (28..65535) with a valid header checksum and no UDP checksum."""
    if not 28 <= size <= 65535:
        raise ValueError(f"an IPv4/UDP packet is 28..65535 bytes, not {size}")
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    udp = struct.pack("!HHHH", sport, dport, size - 20, 0)
    return header + udp + bytes(size - 28)
