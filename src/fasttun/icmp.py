"""ICMP echo helpers: answer pings on a TUN device from Python (used by the demo, tests and benchmarks).

``echo_reply(packet)`` turns an ICMPv4/ICMPv6 echo request into its reply (addresses swapped, checksum
fixed) and returns None for anything else, so a responder is a few lines::

    def on_batch(batch):
        replies = [r for r in map(fasttun.icmp.echo_reply, batch) if r is not None]
        if replies:
            tun.send_batch(replies)
"""

from __future__ import annotations

import struct
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]

_ICMP = 1
_ICMPV6 = 58


def checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of data, folded to 16 bits."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def echo_reply(packet: Buffer) -> bytes | None:
    """The echo reply for an IPv4 ICMP or IPv6 ICMPv6 echo request; None for any other packet."""
    p = bytes(packet)
    if len(p) >= 28 and p[0] >> 4 == 4:
        ihl = (p[0] & 0x0F) * 4
        total = struct.unpack_from("!H", p, 2)[0]
        if p[9] != _ICMP or ihl < 20 or total > len(p) or total < ihl + 8 or p[ihl] != 8:
            return None
        icmp = bytearray(p[ihl:total])
        icmp[0] = 0  # echo reply
        icmp[2:4] = b"\0\0"
        icmp[2:4] = struct.pack("!H", checksum(icmp))
        header = bytearray(p[:ihl])
        header[12:16], header[16:20] = p[16:20], p[12:16]
        header[8] = 64  # a fresh TTL
        header[10:12] = b"\0\0"
        header[10:12] = struct.pack("!H", checksum(header))
        return bytes(header) + bytes(icmp)
    if len(p) >= 48 and p[0] >> 4 == 6:
        plen = struct.unpack_from("!H", p, 4)[0]
        if p[6] != _ICMPV6 or 40 + plen > len(p) or plen < 8 or p[40] != 128:
            return None
        src, dst = p[8:24], p[24:40]
        icmp = bytearray(p[40 : 40 + plen])
        icmp[0] = 129  # echo reply
        icmp[2:4] = b"\0\0"
        pseudo = dst + src + struct.pack("!I3xB", plen, _ICMPV6)
        icmp[2:4] = struct.pack("!H", checksum(pseudo + icmp))
        header = bytearray(p[:40])
        header[8:24], header[24:40] = dst, src
        header[7] = 64  # hop limit
        return bytes(header) + bytes(icmp)
    return None
