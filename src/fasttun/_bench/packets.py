"""The packets the scenarios send, and the Python side of the ICMP echo responder."""

from __future__ import annotations

import ipaddress
import struct


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def udp4(src: str, dst: str, size: int, dport: int = 9000, sport: int = 40000) -> bytes:
    """An IPv4/UDP packet of exactly ``size`` bytes (28..65535) with a valid header checksum and no UDP checksum."""
    if not 28 <= size <= 65535:
        raise ValueError(f"an IPv4/UDP packet is 28..65535 bytes, not {size}")
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    udp = struct.pack("!HHHH", sport, dport, size - 20, 0)
    return header + udp + bytes(size - 28)


def echo_reply(packet: memoryview) -> bytes | None:
    """The IPv4 ICMP echo reply for an echo request (addresses swapped, type 0, checksum patched per RFC 1624),
    or None for any other packet."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[ihl] != 8:
        return None
    reply = bytearray(packet)
    reply[12:16], reply[16:20] = packet[16:20], packet[12:16]
    reply[ihl] = 0
    total = ((reply[ihl + 2] << 8) | reply[ihl + 3]) + 0x0800
    total = (total & 0xFFFF) + (total >> 16)
    reply[ihl + 2] = total >> 8
    reply[ihl + 3] = total & 0xFF
    return bytes(reply)
