"""Device events: the link going up or down, its MTU changing, addresses added or removed, the device removed.

    from fasttun.events import DeviceEvents

    with DeviceEvents(tun) as events:
        for event in events.get(timeout=1.0):      # blocking (in C), or events.poll() without blocking
            print(event.kind, event.mtu, event.address)

    async with DeviceEvents(tun) as events:
        async for event in events:                 # Linux: the event loop waits on the socket itself
            ...

The kinds: ``"up"``, ``"down"``, ``"mtu"`` (``event.mtu`` is the new one), ``"address-added"``,
``"address-removed"`` (``event.address``), ``"removed"`` (the last event; the iterator then ends), and
``"overflow"`` when notifications were lost (the state is read again, so later events are right). The changes
are worked out here against the last state seen.

Linux: a NETLINK_ROUTE socket subscribed to the kernel's link and IPv4/IPv6 address groups, opened in the
calling thread's network namespace (the device's). The kernel announces a link's whole state.

Windows: the IP Helper API's NotifyIpInterfaceChange (both families) and NotifyUnicastIpAddressChange, keyed by
the interface's LUID (a Wintun Tun's ``luid``; a name or index is converted). Their callbacks run on system
threads and only queue the notification in C (a bounded queue; when it fills up, the rest is dropped and one
``"overflow"`` follows what came before); the link's MTU and state are read when the events are taken.
There is no descriptor: ``fileno()`` raises, ``get()`` waits in C with the GIL released, and ``async for``
runs one waiter thread per DeviceEvents that blocks in C and hands what it read to the loop with one
``call_soon_threadsafe`` per wake-up; ``close()`` ends it at once. Under Wine (where the tests run) the system
never calls back (its NotifyIpInterfaceChange is a stub, its NotifyUnicastIpAddressChange reports only the
initial state), so there the queue is fed through a test-only hook; real notifications are Windows'.

Other systems raise TunError (ENOSYS)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import errno
import socket
import sys
import threading
import time
import weakref
from typing import Optional, Union

from fasttun import _core
from fasttun._tun import Interface, Tun
from fasttun._wintun import WintunAdapter
from fasttun.errors import TunError

__all__ = ["DeviceEvent", "DeviceEvents"]

_IFF_UP = 0x1
_WINDOWS = sys.platform == "win32"


@dataclasses.dataclass(frozen=True)
class DeviceEvent:
    kind: str
    """"up", "down", "mtu", "address-added", "address-removed", "removed" or "overflow"."""
    name: str
    index: int
    mtu: Optional[int] = None
    """The link's MTU after the change (kinds "mtu", "up", "down")."""
    address: Optional[Interface] = None
    """The address with its prefix (kinds "address-added", "address-removed")."""


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


RawEvent = tuple[int, int, int, int, int, bytes, int, str]


def _wait_in_thread(sock: _core.EventSocket, owner: weakref.ReferenceType[DeviceEvents]) -> None:
    """Windows: the waiter thread of one DeviceEvents. Blocks in C until notifications are queued, reads them
    and hands them over (one call_soon_threadsafe per wake-up, to the loop iterating now); ends when the socket
    is closed (close(), or the DeviceEvents was collected). Holds the DeviceEvents only weakly, and only while
    handing over, so dropping it ends the thread."""
    while True:
        try:
            if not sock.wait(None, interruptible=False):
                continue
            events = sock.read()
        except ValueError:  # closed
            return
        if not events:
            continue
        target = owner()
        if target is None:
            return
        target._hand_over(events)
        del target


def _deliver(owner: weakref.ReferenceType[DeviceEvents]) -> None:
    """On the loop: wakes the iterator waiting for what the waiter thread handed over."""
    target = owner()
    if target is not None and target._ready is not None:
        _settle(target._ready)


class DeviceEvents:
    """The events of one device (a :class:`Tun`, an interface name or index) until :meth:`close`."""

    def __init__(self, device: Union[Tun, str, int]) -> None:
        luid = 0
        if isinstance(device, WintunAdapter):
            luid, name = device.luid, device.name
            try:
                index = device.index
            except TunError:  # not every LUID has an index (Wine's IP Helper knows no Wintun adapter)
                index = 0
        elif isinstance(device, Tun):
            index, name = device.index, device.name
        elif isinstance(device, str):
            index, name = socket.if_nametoindex(device), device
        elif isinstance(device, int) and not isinstance(device, bool) and device > 0:
            index, name = device, socket.if_indextoname(device)
        else:
            raise TypeError(f"DeviceEvents needs a Tun, an interface name or a positive index, not {device!r}")
        self.index = index
        self.name = name
        # subscribed before the state is read: no change falls between
        self._sock = _core.EventSocket(index, luid)
        self._up: Optional[bool] = None
        self._mtu: Optional[int] = None
        self._removed = False
        self._pending: list[DeviceEvent] = []
        # Windows: what the waiter thread read, not yet decoded (under _raw_lock); the loop iterating and the
        # future it waits on; the thread.
        self._raw: list[RawEvent] = []
        self._raw_lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ready: Optional[asyncio.Future[None]] = None
        self._waiter: Optional[threading.Thread] = None
        # Linux: the loop, descriptor and future of an async iteration waiting on the socket; set by close().
        self._watch: Optional[tuple[asyncio.AbstractEventLoop, int, asyncio.Future[None]]] = None
        self._closing = False
        # Dropped without close(): the notifications stop and a waiter thread ends (never joined here).
        self._finalizer = weakref.finalize(self, self._sock.close)
        self._state_from(device)

    def _state_from(self, device: Union[Tun, str, int]) -> None:
        if isinstance(device, Tun):
            try:
                self._up, self._mtu = device.is_up, device.mtu
            except TunError:
                if not _WINDOWS:
                    raise
                self._up = self._mtu = None  # Wine cannot say: the first link event sets the state

    @property
    def dropped(self) -> int:
        """Notifications lost so far (each loss is also an "overflow" event). Windows: how many were dropped
        from the full queue; Linux: how many times the kernel said its socket buffer overflowed."""
        return self._sock.dropped

    # ---- reading ----

    def fileno(self) -> int:
        if _WINDOWS:
            raise TunError(errno.ENOSYS, "on Windows device events come through callbacks, with no descriptor "
                                         "to wait on: use get() or async for")
        return self._sock.fileno()

    def poll(self) -> list[DeviceEvent]:
        """The events that happened since the last call, without blocking."""
        out, self._pending = self._pending, []
        with self._raw_lock:
            raw, self._raw = self._raw, []
        for kind, index, flags, mtu, family, packed, prefix, name in raw + self._sock.read():
            if name:
                self.name = name
            if kind == _core.EV_LINK:
                out.extend(self._link(bool(flags & _IFF_UP), mtu or None))
            elif kind == _core.EV_LINK_REMOVED:
                if not self._removed:
                    self._removed = True
                    out.append(DeviceEvent("removed", self.name, index))
            elif kind in (_core.EV_ADDR_ADDED, _core.EV_ADDR_REMOVED):
                what = "address-added" if kind == _core.EV_ADDR_ADDED else "address-removed"
                address = ipaddress.ip_interface((ipaddress.ip_address(packed), prefix))
                out.append(DeviceEvent(what, self.name, index, address=address))
            elif kind == _core.EV_OVERFLOW:
                self._up = self._mtu = None  # the next link message re-establishes the state without events
                out.append(DeviceEvent("overflow", self.name, index))
        return out

    def _link(self, up: bool, mtu: Optional[int]) -> list[DeviceEvent]:
        out = []
        if self._up is not None and up != self._up:
            out.append(DeviceEvent("up" if up else "down", self.name, self.index, mtu=mtu or self._mtu))
        if mtu is not None and self._mtu is not None and mtu != self._mtu:
            out.append(DeviceEvent("mtu", self.name, self.index, mtu=mtu))
        self._up = up
        if mtu is not None:
            self._mtu = mtu
        return out

    def get(self, timeout: Optional[float] = None) -> list[DeviceEvent]:
        """Waits up to ``timeout`` seconds (None: as long as it takes) for events; an empty list after the
        timeout or once the device was removed and its last event taken."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events = self.poll()
            if events or self._removed:
                return events
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            try:
                self._sock.wait(left)  # in C, the GIL released, in slices (Ctrl-C)
            except ValueError:
                return []  # closed by another thread while waiting

    # ---- asyncio ----

    def __aiter__(self) -> DeviceEvents:
        return self

    async def __anext__(self) -> DeviceEvent:
        if self._closing or not self._finalizer.alive:  # closed: nothing more, not even what was taken already
            raise StopAsyncIteration
        while not self._pending:
            events = self.poll()
            if events:
                self._pending = events
                break
            if self._removed:
                raise StopAsyncIteration
            if _WINDOWS:
                await self._delivered()
                if not self._finalizer.alive:
                    raise StopAsyncIteration
            else:
                await self._readable()
                if self._closing:
                    raise StopAsyncIteration
        return self._pending.pop(0)

    async def _delivered(self) -> None:
        """Windows: until the waiter thread hands something over (or close())."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        with self._raw_lock:
            self._loop = loop
            handed = bool(self._raw)  # between poll() and now
        if handed:
            _settle(self._ready)
        if self._waiter is None:
            self._waiter = threading.Thread(target=_wait_in_thread, args=(self._sock, weakref.ref(self)),
                                            name=f"fasttun-events-{self.name}", daemon=True)
            self._waiter.start()
        try:
            await self._ready
        finally:
            self._ready = None
            with self._raw_lock:
                self._loop = None

    def _hand_over(self, events: list[RawEvent]) -> None:
        """Windows, on the waiter thread: keeps what it read and wakes the loop iterating, if one is."""
        with self._raw_lock:
            self._raw.extend(events)
            loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(_deliver, weakref.ref(self))
            except RuntimeError:  # that loop is closed: the events wait for the next poll()
                pass

    async def _readable(self) -> None:
        """Linux: until the socket is readable (or close(), which unhooks it from the loop first)."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()
        loop.add_reader(fd, _settle, ready)
        self._watch = (loop, fd, ready)
        try:
            await ready
        finally:
            if self._watch is not None:
                self._watch = None
                loop.remove_reader(fd)

    def _unwatch(self) -> None:
        """Linux, in close(): takes the socket out of the loop waiting on it before the socket is closed (a
        closed descriptor would never become readable, and its number may be reused), on that loop's thread."""
        watch, self._watch = self._watch, None
        if watch is None:
            return
        loop, fd, ready = watch
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            loop.remove_reader(fd)
            _settle(ready)
            return
        unhooked = threading.Event()

        def unhook() -> None:
            loop.remove_reader(fd)
            _settle(ready)
            unhooked.set()

        try:
            loop.call_soon_threadsafe(unhook)
        except RuntimeError:  # that loop is closed: nothing waits on it any more
            return
        unhooked.wait(1.0)

    # ---- lifetime ----

    def close(self) -> None:
        """Stops the events; on Windows it ends a get() waiting in another thread and the waiter thread of
        ``async for`` (joined here briefly unless called from it)."""
        self._closing = True
        self._unwatch()
        self._finalizer()
        if self._ready is not None:
            _settle(self._ready)
        waiter = self._waiter
        if waiter is not None and waiter is not threading.current_thread():
            waiter.join(timeout=5.0)

    def __enter__(self) -> DeviceEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> DeviceEvents:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
