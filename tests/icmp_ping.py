"""ICMP echo from the tests themselves, in place of iputils' ``ping`` (not installed everywhere): echo requests
through a raw socket (we are root) of a namespace, and the replies that answer them counted against a deadline.

    assert ping("10.99.0.2", count=3) == 3                 # from the namespace this thread is in
    assert ping("10.99.0.2", count=3, netns="ftu-a-1") == 3  # from a namespace made with ``ip netns add``

The socket is opened inside the namespace (a socket keeps the namespace it was created in), so the caller's
thread need not be there. Only replies carrying this call's identifier, sequence numbers and token count, so
other pings running at the same time (the kernel gives every raw ICMP socket a copy) are not mistaken for ours."""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import Optional

from fasttun import _netns

ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}


def _checksum(data: bytes) -> int:
    """RFC 1071, written here rather than taken from fasttun.icmp (which the tests check)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _request(family: int, ident: int, seq: int, token: bytes) -> bytes:
    payload = token + bytes(range(48))
    header = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, ident, seq)
    if family == socket.AF_INET6:  # the kernel computes the ICMPv6 checksum of raw sockets (pseudo-header)
        return header + payload
    return struct.pack("!BBHHH", ECHO_REQUEST[family], 0, _checksum(header + payload), ident, seq) + payload


def _open(family: int, netns: Optional[str]) -> socket.socket:
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    if netns is None:
        return socket.socket(family, socket.SOCK_RAW, proto)
    with _netns.entered(netns if netns.startswith("/") else f"/run/netns/{netns}"):
        return socket.socket(family, socket.SOCK_RAW, proto)


def ping(address: str, count: int = 3, interval: float = 0.2, timeout: float = 2.0, *,
         netns: Optional[str] = None, stop: Optional[threading.Event] = None) -> int:
    """Sends ``count`` echo requests to ``address`` (IPv4 or IPv6) ``interval`` seconds apart and returns how
    many of them were answered, waiting at most ``timeout`` seconds after the last one. ``netns``: a namespace
    name (``/run/netns/NAME``) or path to send from; default: this thread's. ``stop``: ends it early."""
    if not 1 <= count <= 0xFFFF:
        raise ValueError(f"count must be 1..65535, not {count}")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    ident = int.from_bytes(os.urandom(2), "big")
    token = os.urandom(8)
    answered: set[int] = set()
    with _open(family, netns) as sock:
        sock.setblocking(False)
        next_send = time.monotonic()
        deadline = None
        seq = 0
        while len(answered) < count and not (stop is not None and stop.is_set()):
            now = time.monotonic()
            if seq < count and now >= next_send:
                sock.sendto(_request(family, ident, seq, token), (address, 0))
                seq += 1
                next_send = now + interval
                if seq == count:
                    deadline = now + timeout
            if deadline is not None and now >= deadline:
                break
            wake = next_send if seq < count else deadline
            assert wake is not None
            ready, _, _ = select.select([sock], [], [], max(0.0, min(wake - now, 0.1)))
            if not ready:
                continue
            data = sock.recv(2048)
            message = data[(data[0] & 0x0F) * 4:] if family == socket.AF_INET else data
            if len(message) < 16 or message[0] != ECHO_REPLY[family] or message[8:16] != token:
                continue
            their_ident, their_seq = struct.unpack_from("!HH", message, 4)
            if their_ident == ident and their_seq < seq:
                answered.add(their_seq)
    return len(answered)


class Pinger:
    """``ping`` on a thread of its own, for traffic that must flow while the test looks elsewhere; ``close()``
    ends it early and returns how many were answered."""

    def __init__(self, address: str, count: int, interval: float, *, netns: Optional[str] = None) -> None:
        self._stop = threading.Event()
        self._outcome: list[object] = []

        def run() -> None:
            try:
                self._outcome.append(ping(address, count, interval, netns=netns, stop=self._stop))
            except BaseException as e:  # handed to close()
                self._outcome.append(e)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> int:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the pinger did not stop"
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, int)
        return outcome
