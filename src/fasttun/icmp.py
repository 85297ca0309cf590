"""ICMP echo helpers: answer pings on a TUN device from Python (used by the demo, tests and benchmarks).

``echo_reply(packet)`` turns an ICMPv4/ICMPv6 echo request into its reply (addresses swapped, checksum
fixed) and returns None for anything else. ``echo_replies(batch)`` does it for a whole batch in one C call
and returns the replies as one Batch (or None), so a responder is a few lines and pays no Python per packet::

    def on_batch(batch):
        replies = fasttun.icmp.echo_replies(batch)
        if replies is not None:
            tun.send_batch(replies)
"""

from __future__ import annotations

from typing import Union

from fasttun import _core
from fasttun._core import Packet

__all__ = ["checksum", "echo_replies", "echo_reply"]

Buffer = Union[bytes, bytearray, memoryview, Packet]


def checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of data, folded to 16 bits; ``initial`` adds a partial sum (a
    pseudo-header's, say). In C."""
    return _core.inet_checksum(data, initial)


echo_reply = _core.icmp_echo_reply
"""echo_reply(packet) -> bytes | None: the echo reply for an IPv4 ICMP or IPv6 ICMPv6 echo request (addresses
swapped, TTL/hop limit 64, checksums recomputed), None for any other packet. In C: one call, one bytes object."""

echo_replies = _core.icmp_echo_replies
"""echo_replies(batch) -> Batch | None: the echo replies to every echo request in the batch, in order, built in C
into one new Batch that stays valid as long as it is held (send it with ``send_batch``); None if the batch holds
no echo request. Other packets are skipped. On the development VM a one-packet responder callback took 0.64 us
with it against 1.21 us with ``echo_reply`` per packet, a list and ``send_batch`` of the list."""
