"""The public device API: Tun, pair(), Reader and the statistics records."""

from __future__ import annotations

import atexit
import dataclasses
import errno
import functools
import ipaddress
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

from fasttun import _core, _if_tun
from fasttun.errors import TunClosedError, TunError

log = logging.getLogger("fasttun")


class _Unraisable:
    """What sys.unraisablehook takes (the fields of the interpreter's own UnraisableHookArgs)."""

    def __init__(self, exc_info: Any, message: str) -> None:
        self.exc_type, self.exc_value, self.exc_traceback = exc_info
        self.err_msg: str | None = message
        self.object: object = None


def _log(logger: logging.Logger, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
    """``logger.log`` that never raises: a log handler that fails (the logging module leaves an exception of
    emit() to the handler) is reported to sys.unraisablehook, and the library's own work (opening, starting a
    reader, closing, a capture on the data path) goes on as if it had logged."""
    try:
        logger.log(level, msg, *args, exc_info=exc_info)
    except Exception:
        sys.unraisablehook(_Unraisable(sys.exc_info(), f"fasttun: a log handler of {logger.name!r} failed"))


Address = Union[str, ipaddress.IPv4Interface, ipaddress.IPv6Interface, ipaddress.IPv4Address, ipaddress.IPv6Address]
Interface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
FullPolicy = Literal["drop", "wait", "raise"]
OffloadMode = Literal["segments", "super"]
# TUN_F_* bits of linux/if_tun.h, as TUNSETOFFLOAD accepted them.
_TUN_F = _if_tun.TUN_F
BatchCallback = Callable[[_core.Batch], Any]

_POLICIES = {"drop": _core.POLICY_DROP, "wait": _core.POLICY_WAIT, "raise": _core.POLICY_RAISE}
MAX_BATCH = _core.MAX_BATCH
IPV6_MIN_MTU = 1280


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters of a device since it was opened."""

    # The fields before rx_dropped_os are the C core's device counters (FT_STATS_FIELDS in csrc/core/ft_device.h,
    # _core.STATS_FIELDS), in their order: a counter added there is added here, and the tests check both agree.

    rx_packets: int
    rx_bytes: int
    rx_batches: int
    tx_packets: int
    tx_bytes: int
    tx_dropped_full: int
    """Packets dropped because the device's queue was full (send policy "drop", or "wait" timed out)."""
    tx_rejected: int
    """Packets refused by validation; they never reached the device."""
    rx_dropped_invalid: int
    """Packets the device handed back that were not IPv4/IPv6."""
    rx_dropped_oversize: int
    rx_errors: int
    tx_errors: int
    waits: int
    """Times a receiver slept on the device."""
    spins: int
    """Empty polls while a reader spun before sleeping."""
    tx_waits: int
    rx_dropped_os: int = 0
    """Packets the OS dropped before we could read them (Linux: the device's queue, ``txqueuelen``, was full)."""
    tx_dropped_os: int = 0
    """Packets we sent that the OS dropped afterwards."""

    @property
    def drops(self) -> int:
        """All packets lost, whatever the cause."""
        return (self.tx_dropped_full + self.rx_dropped_invalid + self.rx_dropped_oversize + self.rx_dropped_os
                + self.tx_dropped_os)


@dataclasses.dataclass(frozen=True)
class ReaderStats:
    """Counters of one reader (summed over its queues)."""

    # The C core's reader counters (FT_READER_STATS_FIELDS, _core.READER_STATS_FIELDS) in their order, then the
    # arenas the Python layer swapped.

    packets: int
    bytes: int
    batches: int
    full_batches: int
    waits: int
    spins: int
    spin_hits: int
    max_batch: int
    undelivered: int
    """Packets read and dropped, not delivered, because the reader was stopped (by stop() from anywhere, the
    callback included, or by the callback raising) or its device closed: read ahead by a pipeline, or read by a
    queue's thread that was waiting for the GIL when the stop came."""
    arena_swaps: int
    """Times a callback kept a buffer into the arena, so the reader moved on to a fresh one."""


def _policy(on_full: str) -> int:
    try:
        return _POLICIES[on_full]
    except (KeyError, TypeError):
        raise ValueError(f"on_full must be one of 'drop', 'wait', 'raise', not {on_full!r}") from None


def _interface(address: Address) -> Interface:
    if isinstance(address, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return address
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_interface(address)
    if not isinstance(address, str):
        raise TypeError(f"an address must be a str like '10.0.0.1/24' or an ipaddress object, "
                        f"not {type(address).__name__}")
    try:
        return ipaddress.ip_interface(address.strip())
    except ValueError:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address with an optional /prefix "
                         f"(e.g. '10.0.0.1/24' or 'fd00::1/64')") from None


@atexit.register
def _stop_readers_at_exit() -> None:
    # A reader thread must not call into an interpreter that is shutting down. Readers dropped without stop()
    # are stopped here too: the registry is the C layer's, not a list of the Reader objects still alive.
    readers = _core.running_readers()
    for q in readers:
        q.request_stop()
    for q in readers:
        try:
            q.join(2.0)
        except BaseException:  # noqa: BLE001 - at exit nothing can be raised to anybody
            _log(log, logging.DEBUG, "reader raised while stopping at exit", exc_info=True)


class Reader:
    """Reader threads (one per queue) that hand batches of packets to a callback.

    The callback gets a :class:`Batch` whose packets are valid only during the call. A callback that raises
    stops the reader (the threads of every queue); :meth:`stop` and :meth:`join` raise that exception again,
    traceback included."""

    def __init__(self, tun: _Endpoint, queues: list[_core.QueueReader], sink: _Endpoint | None = None) -> None:
        self._tun = tun
        self._queues = queues
        self._sink = sink
        self._reported = False

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        to = f" forwarding to {self._sink.name!r}" if self._sink is not None else ""
        return f"<fasttun.Reader on {self._tun.name!r}{to}, {len(self._queues)} queue(s), {state}>"

    @property
    def running(self) -> bool:
        """True while any of the reader threads is still reading."""
        return any(q.state == _core.READER_RUNNING for q in self._queues)

    @property
    def stats(self) -> ReaderStats:
        per = [q.stats() for q in self._queues]
        total = {k: sum(s[k] for s in per) for k in per[0] if k != "max_batch"}
        return ReaderStats(max_batch=max(s["max_batch"] for s in per),
                           arena_swaps=sum(q.arena_swaps for q in self._queues), **total)

    def _request_stop(self) -> None:
        for q in self._queues:
            q.request_stop()

    def _on_own_thread(self) -> bool:
        """True on one of this reader's threads (in its callback), where waiting for it would wait for itself."""
        return any(q.is_current_thread() for q in self._queues)

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stops the reader threads and waits up to ``timeout`` seconds for them (None: as long as it takes).

        Returns True once every thread has ended; False if one is still inside a slow callback. No callback
        starts on any queue once the stop was asked for. Raises the callback's exception, or the device error
        that ended the reader. Called from inside the callback, it only asks for the stop (the reader ends when
        the callback returns) and returns False. Once the threads have ended, their descriptors and arenas are
        given back: the Reader keeps only its stats."""
        self._request_stop()
        if self._on_own_thread():
            return False
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the reader threads to end on their own (callback raised, device closed), without asking
        them to stop. Raises as :meth:`stop` does. Returns False if they still run after ``timeout``."""
        if self._on_own_thread():
            raise RuntimeError("join() called from the reader's own callback would wait forever")
        done = all(q.join(timeout) for q in self._queues)
        if done:
            self._tun._forget_reader(self)
            if self._sink is not None:
                self._sink._forget_reader(self)
            self._raise_outcome()
        return done

    def _raise_outcome(self) -> None:
        if self._reported:
            return
        self._reported = True
        for q in self._queues:
            if q.exception is None:
                continue
            if isinstance(q.exception, TunClosedError) and self._sink is not None and self._sink.closed:
                continue  # a forward whose sink was closed on purpose: a normal end
            raise q.exception
        for q in self._queues:
            err = q.error()
            if err is None:
                continue
            if isinstance(err, TunClosedError) and self._tun.closed:
                continue  # the device was closed on purpose: a normal end
            raise err


class _Endpoint:
    """What a device (Tun) and a UDP endpoint share: the readers they started, the context manager, close()
    that stops the readers before releasing, and a finalizer that never waits. Subclasses set ``_dev``."""

    _dev: Any
    _closed: bool
    _readers: list[Reader]
    _lock: threading.Lock
    _close_hooks: list[Callable[[], None]]
    _policy: int
    _send_timeout: float | None

    def _init_lifecycle(self) -> None:
        self._closed = False
        self._readers = []
        self._lock = threading.Lock()
        # run by close() once readers are asked to stop, before the release (fasttun.aio wakes its waiters)
        self._close_hooks = []

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A finalizer never waits: it may run on the reader's own thread (the garbage collector runs wherever
        # objects are allocated), and waiting there would wait for itself. The readers stop and the device is
        # released by the last of them to leave it.
        if getattr(self, "_closed", True) is False:
            self._closed = True
            for reader in self._readers:
                reader._request_stop()
            self._dev.shutdown()

    @property
    def name(self) -> str:
        """The interface's name; a UDP endpoint's is "udp:HOST:PORT", its local address."""
        return str(self._dev.name)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stops the readers, wakes blocked calls in other threads (they raise TunClosedError) and releases the
        device; a TUN device we created and did not make persistent disappears. Called on a reader thread (from
        a callback), it does not wait: the device is released once the callback returns and its reader has
        stopped."""
        if self._closed:
            return
        self._closed = True
        readers = list(self._readers)
        for reader in readers:
            reader._request_stop()
        for hook in list(self._close_hooks):  # never raise
            hook()
        if _core.on_reader_thread():  # a callback's: waiting here could wait for itself
            self._dev.shutdown()
            _log(log, logging.DEBUG, "closing %s once the readers using it have left", self.name)
            return
        self._dev.close()
        for reader in readers:
            try:
                reader.stop(timeout=5.0)
            except Exception:  # noqa: BLE001 - the callback's error was logged when it happened
                _log(log, logging.DEBUG, "reader on %s ended with an error while closing", self.name, exc_info=True)
        _log(log, logging.DEBUG, "closed %s", self.name)

    def _set_tap(self, tap: Callable[[Any, int], None] | None, current: object = None) -> None:
        """Attaches a capture hook to the device (see _core.Device.tap), or with None detaches ``current`` (if it
        is still the one attached). One hook at a time."""
        if tap is None:
            if self._dev.tap is not None and self._dev.tap == current:
                self._dev.set_tap(None)
            return
        if self._dev.tap is not None:
            raise ValueError(f"{self.name} already has a tee; remove it first")
        self._dev.set_tap(tap)

    # ---- the interface fasttun's own extensions (aio, pcap) use; not user API ----

    def _on_close(self, hook: Callable[[], None]) -> None:
        """Runs ``hook`` when close() has asked the readers to stop, before the release (it must not raise)."""
        self._close_hooks.append(hook)

    def _send_settings(self, on_full: FullPolicy | None, timeout: float | None) -> tuple[int, float | None]:
        """The send policy and timeout a send with these arguments uses (None: the device's own)."""
        return (self._policy if on_full is None else _policy(on_full),
                self._send_timeout if timeout is None else timeout)

    def _start_queue_reader(self, queue: int, callback: BatchCallback, batch_size: int, spin_us: int,
                            adaptive: bool, adaptive_pps: int, deliver_after_stop: bool) -> _core.QueueReader:
        """One queue's reader thread, without a Reader around it; with ``deliver_after_stop`` a batch read while
        a stop is requested still reaches the callback (fasttun.aio keeps it for the next call)."""
        reader: _core.QueueReader = self._dev.start_reader(queue, callback, batch_size, spin_us, adaptive,
                                                           adaptive_pps, 0, None, deliver_after_stop)
        return reader

    def _forget_reader(self, reader: Reader) -> None:
        with self._lock:
            if reader in self._readers:
                self._readers.remove(reader)

    def _check_open(self) -> None:
        """For members that answer from state kept here: after close() they say closed, as the device would."""
        if self._closed:
            raise TunClosedError(errno.EBADF, f"{self.name} is closed")

    def _start_readers(self, queues: int, callback: BatchCallback | _Endpoint, batch_size: int, spin_us: int | None,
                       adaptive: bool, adaptive_pps: int | None, pipeline: int) -> Reader:
        """One reader thread per queue, for every kind of endpoint (the numbers' limits are the C core's). A
        device or endpoint as the callback makes it a forward: batches go to it in C."""
        sink = callback if isinstance(callback, _Endpoint) else None
        if sink is None and not callable(callback):
            raise TypeError(f"callback must be callable, or a device or endpoint to forward to, not "
                            f"{type(callback).__name__}")
        spin = _core.DEFAULT_SPIN_US if spin_us is None else spin_us
        pps = _core.DEFAULT_ADAPTIVE_PPS if adaptive_pps is None else adaptive_pps
        for name, value in (("batch_size", batch_size), ("spin_us", spin), ("adaptive_pps", pps),
                            ("pipeline", pipeline)):
            _core.check_limit(name, value)  # all of them before the first queue's thread starts
        self._check_open()
        forward: dict[str, Any] = {}
        if sink is not None:
            sink._check_open()
            policy, timeout = sink._send_settings(None, None)
            forward = dict(sink=sink._dev, sink_policy=policy, sink_timeout=timeout)
        started: list[_core.QueueReader] = []
        try:
            for q in range(queues):
                # The hook sees `started` grow: a callback that raises on one queue stops every queue's thread.
                failed = (functools.partial(_forward_failed, self.name, sink, q, started) if sink is not None else
                          functools.partial(_callback_failed, self.name, q, started))
                started.append(self._dev.start_reader(q, callback, batch_size, spin, bool(adaptive), pps, pipeline,
                                                      failed, **forward))
        except BaseException:
            for qr in started:
                qr.request_stop()
                qr.join(None)
            raise
        reader = Reader(self, started, sink)
        for end in (self,) if sink is None or sink is self else (self, sink):
            with end._lock:   # closing either end stops a forward
                end._readers.append(reader)
        _log(log, logging.DEBUG, "reader started on %s: %d queue(s), batch %d, spin %d us%s", self.name, len(started),
             batch_size, spin, f", forwarding to {sink.name}" if sink is not None else "")
        return reader


_E = TypeVar("_E", bound=_Endpoint)
_T = TypeVar("_T", bound="Tun")


# The options each platform's device takes beyond the shared ones, with their defaults: given to another
# platform's device at anything but the default, they are refused with what they belong to.
LINUX_OPTIONS = {"queues": 1, "persist": None, "txqueuelen": None, "offload": False, "offload_mode": "segments"}
WINTUN_OPTIONS = {"tunnel_type": "fasttun", "guid": None, "ring_capacity": None, "coalesce": False}


class _TunMeta(type):
    """``Tun(...)`` opens the platform's device: a :class:`LinuxTun` on Linux, a :class:`WintunAdapter` on
    Windows. The other platform's options are refused there unless left at their defaults."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Tun:
            chosen = _platform_class(kwargs)
            foreign = _foreign_options()
            return chosen(*args, **{k: v for k, v in kwargs.items() if k not in foreign})
        return super().__call__(*args, **kwargs)


def _foreign_options() -> dict[str, Any]:
    return WINTUN_OPTIONS if sys.platform.startswith("linux") else LINUX_OPTIONS


def _platform_class(kwargs: dict[str, Any]) -> type[Tun]:
    def given(options: dict[str, Any]) -> list[str]:
        return [k for k, default in options.items() if k in kwargs and kwargs[k] != default]

    if sys.platform.startswith("linux"):
        if given(WINTUN_OPTIONS):
            raise ValueError("tunnel_type, guid, coalesce and ring_capacity are Wintun (Windows) settings "
                             "(on Linux, offload=True coalesces on send)")
        from fasttun._linux import LinuxTun
        return LinuxTun
    if sys.platform == "win32":
        linux = given(LINUX_OPTIONS)
        if "offload" in linux or "offload_mode" in linux:
            raise ValueError("offload (virtio-net header, GSO/GRO) is a Linux TUN feature")
        if kwargs.get("txqueuelen") == "auto":
            raise ValueError("txqueuelen is a Linux setting; on Windows, ring_capacity='auto' grows the rings")
        if linux:
            raise ValueError("queues, persist and txqueuelen are Linux settings; a Wintun adapter has one session")
        from fasttun._wintun import WintunAdapter
        return WintunAdapter
    raise TunError(38, f"fasttun has no TUN backend for {sys.platform} yet; use fasttun.pair() for an "
                       f"in-memory device")


class Tun(_Endpoint, metaclass=_TunMeta):
    """A layer-3 device: whole IPv4/IPv6 packets in and out. What every kind of device has: receives, sends,
    reader threads, counters, and the interface's configuration (where the device is an interface).

    ``Tun(name, ...)`` opens the platform's device: a :class:`LinuxTun` (``/dev/net/tun``) on Linux, a
    :class:`WintunAdapter` on Windows, each with the options and members only it has; :func:`pair` gives two
    connected in-memory devices (:class:`PairDevice`). The shared options: ``mtu``, ``addresses``, ``up``,
    ``open_existing`` (``None`` opens or creates, ``True`` only attaches to an existing device, ``False`` only
    creates a new one), and ``on_full`` with ``send_timeout``: what send does when the device cannot take a
    packet: ``"drop"`` (counted in ``stats.tx_dropped_full``), ``"wait"`` up to ``send_timeout`` seconds, or
    ``"raise"`` :class:`TunFullError`. Use a device as a context manager, or call :meth:`close`."""

    _dev: _core.Device

    if TYPE_CHECKING:  # what _TunMeta passes on to the platform's class
        def __init__(self, name: str | None = None, **options: Any) -> None: ...

    def _open(self, dev_factory: Callable[[], _core.Device], addresses: Iterable[Address], up: bool,
              on_full: FullPolicy, send_timeout: float | None) -> None:
        """What every platform's constructor does around opening its device: the shared options checked first,
        then the device opened (the factory passes the platform's options, the mtu among them, to the C core,
        which checks them), addressed and brought up, or closed again on any failure."""
        if isinstance(addresses, (str, bytes)):
            raise TypeError("addresses must be a list of addresses like ['10.0.0.1/24'], "
                            f"not one {type(addresses).__name__}")
        ifaces = [_interface(a) for a in addresses]
        self._policy = _policy(on_full)
        self._send_timeout = send_timeout
        _core._timeout_check(send_timeout)
        dev = dev_factory()
        self._setup(dev)
        try:
            for iface in ifaces:
                self.add_address(iface)
            if up:
                self.up()
            _log(log, logging.DEBUG, "opened %s (%d queue(s), mtu %d)", self.name, dev.queues, dev.get_mtu())
        except BaseException:
            self.close()
            raise

    @classmethod
    def _wrap(cls: type[_T], dev: _core.Device, on_full: FullPolicy, send_timeout: float | None) -> _T:
        self = cls.__new__(cls)
        self._policy = _policy(on_full)
        self._send_timeout = send_timeout
        self._setup(dev)
        return self

    def _setup(self, dev: _core.Device) -> None:
        self._dev = dev
        self._init_lifecycle()
        self._os_drops = (0, 0)  # the last OS drop counters read, for stats once the interface is gone

    # ---- lifecycle: the context manager, close() and the finalizer are _Endpoint's ----

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<fasttun.{type(self).__name__} {self.name!r} ({self._dev.backend}, {state})>"

    # ---- properties and configuration ----

    @property
    def backend(self) -> str:
        """"linux", "memory" or "wintun"."""
        return self._dev.backend

    @property
    def queues(self) -> int:
        return self._dev.queues

    @property
    def index(self) -> int:
        """The interface index (as ``if_nametoindex``)."""
        return self._dev.get_index()

    @property
    def mtu(self) -> int:
        return self._dev.get_mtu()

    @mtu.setter
    def mtu(self, value: int) -> None:
        had_ipv6 = any(a.version == 6 and not a.is_link_local for a in self._safe_addresses())
        self._dev.set_mtu(value)
        if had_ipv6 and value < IPV6_MIN_MTU:
            _log(log, logging.WARNING, "mtu %d on %s is below 1280, the IPv6 minimum: the kernel removes its IPv6 "
                 "addresses", value, self.name)

    def add_route(self, destination: str, via: str | None = None, metric: int = 0) -> None:
        """Routes ``destination`` (e.g. "10.8.0.0/16" or "fd00::/8") through the device, optionally via a
        gateway; ``metric`` 0 lets the system choose (rtnetlink on Linux, the IP Helper API on Windows)."""
        self._route(destination, via, metric, True)

    def remove_route(self, destination: str, via: str | None = None, metric: int = 0) -> None:
        self._route(destination, via, metric, False)

    def _route(self, destination: str, via: str | None, metric: int, add: bool) -> None:
        try:
            net = ipaddress.ip_network(destination, strict=False)
        except (TypeError, ValueError):
            raise ValueError(f"{destination!r} is not a network like '10.8.0.0/16' or 'fd00::/8'") from None
        hop = None
        if via is not None:
            gateway = ipaddress.ip_address(via)
            if gateway.version != net.version:
                raise ValueError(f"gateway {via} and destination {destination} are of different IP versions")
            hop = gateway.packed
        self._dev.route(net.version, net.network_address.packed, net.prefixlen, hop, metric, add)

    @property
    def is_up(self) -> bool:
        return self._dev.is_up()

    def up(self) -> None:
        """Brings the link up."""
        self._dev.set_up(True)

    def down(self) -> None:
        """Brings the link down."""
        self._dev.set_up(False)

    @property
    def addresses(self) -> list[Interface]:
        """The device's IPv4 and IPv6 addresses with their prefixes (as the system reports them, including
        link-local ones it added itself)."""
        return [ipaddress.ip_interface((ipaddress.ip_address(raw), prefix))
                for _family, raw, prefix in self._dev.list_addresses()]

    def _safe_addresses(self) -> list[Interface]:
        try:
            return self.addresses
        except TunError:
            return []

    def add_address(self, address: Address) -> None:
        """Adds an address like ``"10.0.0.1/24"`` or ``"fd00::1/64"`` (no prefix: a host address)."""
        iface = _interface(address)
        if iface.version == 6 and self.mtu < IPV6_MIN_MTU:
            raise ValueError(f"IPv6 address {iface} needs an MTU of at least 1280; the device has {self.mtu}")
        self._dev.address(iface.version, iface.ip.packed, iface.network.prefixlen, True)

    def remove_address(self, address: Address) -> None:
        iface = _interface(address)
        self._dev.address(iface.version, iface.ip.packed, iface.network.prefixlen, False)

    @property
    def stats(self) -> Stats:
        """fasttun's counters plus the OS's drop counters for the device (one netlink query on Linux). They stay
        readable after close() and after the interface is deleted (the OS counters as last read)."""
        if not self._closed:
            try:
                self._os_drops = self._dev.os_drops()
            except TunClosedError:
                pass  # deleted or detached: keep what we last read
        rx_os, tx_os = self._os_drops
        return Stats(rx_dropped_os=rx_os, tx_dropped_os=tx_os, **self._dev.stats())

    # ---- receiving ----

    def recv(self, timeout: float | None = None) -> bytes | None:
        """One packet as bytes, or None when ``timeout`` seconds pass first (None: wait as long as it takes)."""
        self._check_open()
        return self._dev.recv(_core.ALL_QUEUES, timeout)

    def recv_into(self, buffer: Any, timeout: float | None = None) -> int:
        """Receives one packet into a writable buffer; returns its length (0 on timeout). If the packet does not
        fit, ValueError says how large it is and the device keeps the packet for the next receive."""
        self._check_open()
        return self._dev.recv_into(buffer, _core.ALL_QUEUES, timeout)

    def recv_batch(self, max_packets: int = 64, timeout: float | None = None) -> _core.Batch:
        """Up to ``max_packets`` packets that are waiting (at least one unless ``timeout`` passes, then an empty
        batch). The batch stays valid as long as you keep it."""
        self._check_open()
        return self._dev.recv_batch(max_packets, _core.ALL_QUEUES, timeout)

    # ---- sending ----

    def send(self, packet: Any, *, on_full: FullPolicy | None = None, timeout: float | None = None) -> int:
        """Sends one IPv4/IPv6 packet (any contiguous bytes-like object). Returns 1 if it went, 0 if it was
        dropped because the device was full (and counted). A packet that is not IPv4/IPv6, shorter than its
        header or longer than the MTU raises ValueError and nothing is sent."""
        return self._dev.send(packet, 0, *self._send_settings(on_full, timeout))

    def send_batch(self, packets: Iterable[Any] | _core.Batch, *, on_full: FullPolicy | None = None,
                   timeout: float | None = None) -> int:
        """Sends many packets in one call (a list of bytes-like objects, any iterable of them, or a Batch).
        Every packet is validated before any is sent. Returns how many were sent; the rest were dropped and
        counted (policy "drop", or "wait" after ``timeout``)."""
        return self._dev.send_batch(packets, 0, *self._send_settings(on_full, timeout))

    # ---- readers ----

    def start_reader(
        self,
        callback: BatchCallback | _Endpoint,
        batch_size: int = 64,
        *,
        spin_us: int | None = None,
        adaptive: bool = True,
        adaptive_pps: int | None = None,
        pipeline: int = 0,
    ) -> Reader:
        """Starts reader threads (one per queue) that call ``callback(batch)`` with up to ``batch_size`` packets.

        Each thread spins up to ``spin_us`` microseconds on an empty queue before it sleeps (0: never spin);
        with ``adaptive`` it spins only while packets arrive at ``adaptive_pps`` packets/s or more, so an idle
        device costs no CPU. The callback runs with the GIL; the batch's packets are valid only during the call.
        With several queues the callback is called from several threads, one at a time; if it raises on one,
        every queue's thread ends.

        ``pipeline``: batches in flight per queue. 0 (default): one thread reads a batch, then calls back. 2..8: a
        second thread reads the next batch while the callback runs on the previous one, so the kernel's work and
        Python's overlap on a machine with cores to spare; batches keep their order, and when every batch is in
        flight the device's own queue absorbs the back-pressure (its drops are counted as usual). While the
        reader is hot, the callback's thread spins for its next batch as long as the reading thread is awake (at
        most 2 ms) and the reading thread for a free batch up to ``spin_us``; ``spin_us=0`` never spins.

        ``callback`` may instead be another device or a connected :class:`UdpEndpoint`: the reader is then a
        *forward*, and every batch is sent to that device in C as its ``send_batch`` would send it (its ``on_full``
        and ``send_timeout``), without Python or the GIL. What it cannot take is counted in its stats, never lost
        silently: packets it refuses as invalid (``tx_rejected``, and the rest of the batch still goes), a full
        queue's drops (``tx_dropped_full``, under "drop" and "raise"; under "wait" the forward waits for room, and
        a stop ends the wait). Closing the sink stops the forward, as closing its own device does (a batch it
        still held counts in the reader's ``undelivered``); :meth:`Reader.stop` raises only if the sink failed
        otherwise. A capture (:func:`fasttun.pcap.tee`) on either end sees the forwarded packets: while one is
        attached, batches pass through Python for it.
        Super-packets (``offload_mode="super"``) can be forwarded only to a TUN device opened with offload."""
        return self._start_readers(self.queues, callback, batch_size, spin_us, adaptive, adaptive_pps, pipeline)


class PairDevice(Tun):
    """One end of an in-memory pair (:func:`pair`): the shared device API, no interface and no privileges."""


def _open_mode(open_existing: bool | None) -> int:
    """open_existing as the C core's one open mode (the same on every backend)."""
    if open_existing is None:
        return _core.OPEN_ANY
    if open_existing is True:
        return _core.OPEN_EXISTING
    if open_existing is False:
        return _core.OPEN_CREATE
    raise TypeError(f"open_existing must be True, False or None, not {open_existing!r}")


def _callback_failed(name: str, queue: int, queues: list[_core.QueueReader], exc: BaseException) -> None:
    """Called on a reader thread when the callback raised: that queue's thread ends, and so do the others of
    the same reader (one exception ends the reader, as stop() and join() report it)."""
    for q in queues:
        q.request_stop()
    _log(log, logging.ERROR, "reader on %s queue %d stopped: its callback raised %r (raised again by stop()/join())",
         name, queue, exc)


def _forward_failed(name: str, sink: _Endpoint, queue: int, queues: list[_core.QueueReader],
                    exc: BaseException) -> None:
    """Called on a forward's thread when its sink closed or failed: every queue's thread ends."""
    for q in queues:
        q.request_stop()
    closed = isinstance(exc, TunClosedError) and sink.closed
    _log(log, logging.DEBUG if closed else logging.ERROR, "forward from %s queue %d to %s stopped: %s%s", name, queue,
         sink.name, exc, "" if closed else " (raised again by stop()/join())")


def pair(
    *,
    mtu: int = 1500,
    capacity: int = _core.PAIR_DEFAULT_CAPACITY,
    capacity_bytes: int = _core.PAIR_DEFAULT_CAPACITY_BYTES,
    on_full: FullPolicy = "wait",
    send_timeout: float | None = None,
) -> tuple[PairDevice, PairDevice]:
    """Two connected in-memory devices: what one sends, the other receives. No privileges needed.

    Each direction holds at most ``capacity`` packets and ``capacity_bytes`` bytes. Unlike a real device a
    full pair makes senders wait by default (``on_full="wait"``), so pipelines under test lose nothing.
    When one end is closed, the other reads what is left and then gets TunClosedError."""
    _core._timeout_check(send_timeout)
    a, b = _core.open_pair(mtu, capacity, capacity_bytes)
    return PairDevice._wrap(a, on_full, send_timeout), PairDevice._wrap(b, on_full, send_timeout)
