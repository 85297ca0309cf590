"""ICMP echo helpers: answer pings on a TUN device from Python (used by the demo, tests and benchmarks).

``echo_reply(packet)`` turns an ICMPv4/ICMPv6 echo request into its reply (addresses swapped, checksum
fixed) and returns None for anything else, so a responder is a few lines::

    def on_batch(batch):
        replies = [r for r in map(fasttun.icmp.echo_reply, batch) if r is not None]
        if replies:
            tun.send_batch(replies)
"""

from __future__ import annotations

from typing import Union

from fasttun import _core
from fasttun._core import Packet

Buffer = Union[bytes, bytearray, memoryview, Packet]


def checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of data, folded to 16 bits; ``initial`` adds a partial sum (a
    pseudo-header's, say). In C."""
    return _core.inet_checksum(data, initial)


echo_reply = _core.icmp_echo_reply
"""echo_reply(packet) -> bytes | None: the echo reply for an IPv4 ICMP or IPv6 ICMPv6 echo request (addresses
swapped, TTL/hop limit 64, checksums recomputed), None for any other packet. In C: one call, one bytes object."""
