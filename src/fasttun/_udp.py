"""A UDP socket with the batch API of a device: ``UdpEndpoint``.

It is one more backend of the C core, so receiving, readers, batches and statistics work as they do for a
:class:`~fasttun.Tun`. Linux: recvmmsg/sendmmsg with UDP GSO/GRO; Windows: WSARecvMsg/WSASendMsg with USO/URO
where the socket has them, recvfrom/sendto where the message calls are refused."""

from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from collections.abc import Iterable
from typing import Any, Union

from fasttun import _core
from fasttun._tun import BatchCallback, FullPolicy, Reader, _Endpoint, _log, _policy

log = logging.getLogger("fasttun")

Address = Union[tuple[str, int], tuple[str, int, int, int]]
"""(host, port), or for IPv6 (host, port, flowinfo, scope_id); hosts in send calls are numeric addresses."""


@dataclasses.dataclass(frozen=True)
class UdpStats:
    """Counters of a UDP endpoint since it was opened."""

    # Each field is a C counter of the same name: the device's (_core.STATS_FIELDS) or the endpoint's own
    # (FT_UDP_COUNTERS in csrc/udp/ft_udp.h, _core.UDP_COUNTERS); the tests check every name has its counter.

    rx_packets: int
    """Datagrams received (a coalesced GRO read counts as the datagrams it holds)."""
    rx_bytes: int
    rx_batches: int
    tx_packets: int
    tx_bytes: int
    tx_dropped_full: int
    """Datagrams dropped because the socket's send buffer was full (policy "drop", or "wait" timed out)."""
    tx_rejected: int
    """Datagrams refused by validation (too large, bad destination); nothing of their call was sent."""
    rx_dropped_oversize: int
    """Datagrams larger than ``max_datagram``: dropped, never truncated."""
    tx_unreachable: int
    """Datagrams dropped because the destination could not be reached (no route, firewall, ICMP)."""
    rx_icmp_errors: int
    """ICMP errors (port unreachable...) the socket reported for earlier datagrams; counted and passed over."""
    rx_errors: int
    tx_errors: int
    waits: int
    spins: int
    tx_waits: int
    tx_calls: int
    """sendmmsg calls."""
    tx_messages: int
    """Messages those calls carried; with GSO one message carries a run of datagrams."""
    gso_messages: int
    gso_fallbacks: int
    """Segmented messages the kernel refused; their datagrams were sent one per message."""
    rx_calls: int
    rx_messages: int
    gro_messages: int
    message_fallbacks: int = 0
    """Windows: refusals of WSARecvMsg/WSASendMsg after which the endpoint went on with recvfrom/sendto."""
    gro_malformed: int = 0
    """Windows: coalesced units (URO) whose segmentation looked wrong; dropped, and the first switched URO off for
    the socket (logged once)."""

    @property
    def drops(self) -> int:
        """All datagrams lost, whatever the cause."""
        return self.tx_dropped_full + self.rx_dropped_oversize + self.tx_unreachable


def _ranged_int(value: object, what: str, low: int, high: int) -> int:
    """An int in low..high, for the parts of an address handed to the socket module (they never reach the C core,
    whose own limits _core checks)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range; allowed: {low}..{high}")
    return value


def _resolve(address: object, what: str, family: int = 0) -> tuple[int, Any]:
    """(family, sockaddr) for a (host, port) tuple; host may be a name, "" or "::" for any."""
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError(f"{what} must be a (host, port) tuple, not {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise TypeError(f"{what}: the host must be a str, not {type(host).__name__}")
    _ranged_int(port, f"{what} port", 0, 65535)
    try:
        infos = socket.getaddrinfo(host or None, port, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP,
                                   socket.AI_PASSIVE if not host else 0)
    except socket.gaierror as exc:
        raise ValueError(f"{what}: cannot resolve {host!r}: {exc}") from None
    fam, _, _, _, sockaddr = infos[0]
    if len(address) == 4:
        if fam != socket.AF_INET6:
            raise ValueError(f"{what}: an IPv4 address is (host, port); (host, port, flowinfo, scope_id) is for "
                             f"IPv6, not {address!r}")
        _ranged_int(address[2], f"{what} flowinfo", 0, 0xFFFFF)
        _ranged_int(address[3], f"{what} scope id", 0, 0xFFFFFFFF)
        scope = address[3] or (sockaddr[3] if len(sockaddr) == 4 else 0)  # a %zone in the host: its index
        return fam, (sockaddr[0], sockaddr[1], address[2], scope)
    return fam, sockaddr


class UdpEndpoint(_Endpoint):
    """A UDP socket that sends and receives batches of datagrams in C.

    ``UdpEndpoint(bind=("10.0.0.1", 5555), peer=("10.0.0.2", 5555))`` opens a socket bound to ``bind`` and,
    with ``peer``, connected to it; ``UdpEndpoint(sock=s)`` wraps an existing UDP ``socket.socket`` (it gets
    a duplicate of its descriptor: closing one leaves the other open, but both share the socket's options;
    on Windows the socket is switched to non-blocking event-select mode).

    ``offload`` (default True) uses UDP GSO to send a run of equal-sized datagrams to one destination as one
    message (at most 64 datagrams, 64 KiB) and UDP GRO to receive coalesced datagrams, where the kernel has
    them (Linux); ``gso``/``gro`` choose each one apart. ``max_datagram`` is the largest datagram received: larger ones
    are dropped and counted (``stats.rx_dropped_oversize``), never truncated; without GRO a smaller value
    lets one system call receive more datagrams. Datagrams are not IP packets: anything up to the UDP
    maximum (65507 bytes over IPv4, 65527 over IPv6) may be sent.

    ``rcvbuf``/``sndbuf`` are the socket buffers to ask for (bytes; on Linux root may exceed the system's limit);
    without them Linux keeps the socket's and Windows asks for 8 MiB each way (its default, 64 KiB, is far too
    small for a tunnel). ``offloads`` says what was granted. On Windows ``gso``/``gro`` are USO/URO.

    ``on_full`` is what a send does when the socket's buffer is full: "wait" (default; up to ``send_timeout``
    seconds, None: as long as it takes), "drop" (counted) or "raise" (TunFullError)."""

    _per_datagram = False
    """Internal (``fasttun bench udp``'s baseline, a subclass, sets it): on Windows, the recvfrom/sendto path an
    endpoint falls back to, taken from the start, without USO/URO; Linux has no such path (TunError)."""

    def __init__(
        self,
        bind: tuple[str, int] | None = None,
        peer: tuple[str, int] | None = None,
        *,
        sock: socket.socket | None = None,
        offload: bool = True,
        gso: bool | None = None,
        gro: bool | None = None,
        max_datagram: int | None = None,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        on_full: FullPolicy = "wait",
        send_timeout: float | None = None,
    ) -> None:
        self._closed = True
        self._policy = _policy(on_full)
        _core._timeout_check(send_timeout)
        self._send_timeout = send_timeout
        use_gso = bool(offload) if gso is None else bool(gso)
        use_gro = bool(offload) if gro is None else bool(gro)
        if sock is not None:
            if bind is not None or peer is not None:
                raise ValueError("give either sock= or bind=/peer=, not both")
            if not isinstance(sock, socket.socket):
                raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
            if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                raise ValueError("sock must be a UDP socket (AF_INET or AF_INET6, SOCK_DGRAM)")
            own = sock.dup()
        else:
            if bind is None and peer is None:
                raise ValueError("give bind=(host, port), peer=(host, port), or both (or sock=)")
            family = 0
            peer_addr = None
            if peer is not None:
                family, peer_addr = _resolve(peer, "peer")
                if peer_addr[1] == 0:
                    raise ValueError("peer port 0 is not allowed; 1..65535 are")
            bind_addr = None
            if bind is not None:
                family, bind_addr = _resolve(bind, "bind", family)
            own = socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            try:
                if bind_addr is not None:
                    own.bind(bind_addr)
                if peer_addr is not None:
                    own.connect(peer_addr)
            except BaseException:
                own.close()
                raise
        try:
            family = own.family
            dev = _core.open_udp(own.fileno(), family, max_datagram, use_gso, use_gro, rcvbuf, sndbuf,
                                 self._per_datagram)
        except BaseException:
            own.close()
            raise
        own.detach()  # the device owns the descriptor now
        self._dev: _core.UdpDevice = dev
        self._family = family
        self._init_lifecycle()
        self._malformed_logged = False
        self._close_hooks.append(self._log_malformed)
        info = dev.info()
        _log(log, logging.DEBUG, "opened %s: gso %s, gro %s, buffers %d/%d", dev.name, bool(info["gso"]),
             bool(info["gro"]), info["rcvbuf"], info["sndbuf"])

    def _log_malformed(self, info: dict[str, Any] | None = None) -> None:
        """The one log line for the receive offload switched off by a malformed unit (the C side counts it),
        written when stats or offloads are read, or at close."""
        if self._malformed_logged:
            return
        i = self._dev.info() if info is None else info
        if i["gro_malformed"]:
            self._malformed_logged = True
            _log(log, logging.WARNING, "%s: a coalesced receive (URO) looked wrong (a train without its segment "
                 "size); URO is off for this socket from now on", self._dev.name)

    # ---- lifecycle (context manager, close, finalizer: _Endpoint) ----

    def __repr__(self) -> str:
        return f"<fasttun.UdpEndpoint {self.name} ({'closed' if self._closed else 'open'})>"

    # ---- properties (name: _Endpoint's) ----

    @property
    def family(self) -> int:
        """socket.AF_INET or socket.AF_INET6."""
        return self._family

    def fileno(self) -> int:
        self._check_open()
        return int(self._dev.fileno())

    @property
    def offloads(self) -> dict[str, Any]:
        """What the endpoint uses: gso/gro in use now (Windows: USO/URO), gso_supported/gro_supported as probed
        at open, max_datagram, connected, message_calls (Windows: WSARecvMsg/WSASendMsg in use, False after a
        fallback to recvfrom/sendto; Linux: True), rcvbuf/sndbuf (the socket buffers granted, as the system
        reports them)."""
        i = self._dev.info()
        self._log_malformed(i)
        return {"gso": bool(i["gso"]), "gro": bool(i["gro"]), "gso_supported": bool(i["gso_supported"]),
                "gro_supported": bool(i["gro_supported"]), "max_datagram": int(i["max_datagram"]),
                "connected": bool(i["connected"]), "message_calls": bool(i["message_calls"]),
                "rcvbuf": int(i["rcvbuf"]), "sndbuf": int(i["sndbuf"])}

    @property
    def stats(self) -> UdpStats:
        i = self._dev.info()
        self._log_malformed(i)
        counters = {**self._dev.stats(), **i}  # the device's counters and the endpoint's own, by their C names
        return UdpStats(**{f.name: counters[f.name] for f in dataclasses.fields(UdpStats)})

    # ---- receiving ----

    def recv_batch(self, max_datagrams: int = 64, timeout: float | None = None) -> _core.Batch:
        """Up to ``max_datagrams`` datagrams as a Batch (empty after ``timeout`` seconds; None waits as long as
        it takes). ``batch.address(i)`` tells where datagram i came from."""
        self._check_open()
        return self._dev.recv_batch(max_datagrams, 0, timeout)

    def recv(self, timeout: float | None = None) -> tuple[bytes, Address] | None:
        """One datagram and where it came from, or None after ``timeout`` seconds."""
        batch = self.recv_batch(1, timeout)
        if not batch:
            return None
        source = batch.address(0)
        assert source is not None  # a UDP endpoint fills every datagram's source
        return bytes(batch[0]), source

    # ---- sending ----

    def send(self, datagram: Any, addr: Address | None = None, *, on_full: FullPolicy | None = None,
             timeout: float | None = None) -> int:
        """Sends one datagram to ``addr`` (or the connected peer); returns 1, or 0 if it was dropped."""
        return self.send_batch([datagram], addr, on_full=on_full, timeout=timeout)

    def send_batch(self, datagrams: Iterable[Any] | _core.Batch, addr: Address | None = None, *,
                   on_full: FullPolicy | None = None, timeout: float | None = None) -> int:
        """Sends datagrams (a Batch, a list or any iterable of bytes-like objects) to ``addr``, a numeric
        (host, port); without it to the connected peer, or, for an unconnected endpoint and a Batch received
        from one, each datagram back to where it came from. Every datagram is checked before any is sent.
        Returns how many were sent; the rest were dropped and counted."""
        self._check_open()
        return int(self._dev.send_to(datagrams, addr, *self._send_settings(on_full, timeout)))

    # ---- readers ----

    def start_reader(self, callback: BatchCallback | _Endpoint, batch_size: int = 64, *, spin_us: int | None = None,
                     adaptive: bool = True, adaptive_pps: int | None = None, pipeline: int = 0) -> Reader:
        """Starts a reader thread that calls ``callback(batch)`` with up to ``batch_size`` datagrams, exactly as
        :meth:`fasttun.Tun.start_reader` does; the batch's packets are valid only during the call. With a device
        (a TUN device, say) instead of a callback, the reader forwards every datagram to it in C as
        :meth:`fasttun.Tun.start_reader` describes: what is not an IP packet it takes is counted in its
        ``tx_rejected`` and dropped."""
        return self._start_readers(1, callback, batch_size, spin_us, adaptive, adaptive_pps, pipeline)


def udp_probe() -> dict[str, Any] | None:
    """The :attr:`UdpEndpoint.offloads` of a loopback endpoint opened with the defaults (what a socket gets here),
    or None where UDP endpoints are not implemented or the probe failed."""
    if not (sys.platform.startswith("linux") or sys.platform == "win32"):
        return None
    try:
        with UdpEndpoint(bind=("127.0.0.1", 0)) as ep:
            return ep.offloads
    except OSError:
        return None


def udp_offloads() -> dict[str, bool]:
    """Whether this system offers the UDP segmentation offloads, probed on a loopback socket: Linux UDP GSO
    (UDP_SEGMENT) and GRO (UDP_GRO); Windows USO (UDP_SEND_MSG_SIZE) and URO (UDP_RECV_MAX_COALESCED_SIZE)."""
    o = udp_probe()
    if o is None:
        return {"gso": False, "gro": False}
    return {"gso": o["gso_supported"], "gro": o["gro_supported"]}
