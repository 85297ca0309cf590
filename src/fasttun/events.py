"""Device events: the link going up or down, its MTU changing, addresses added or removed, the device removed.

    from fasttun.events import DeviceEvents

    with DeviceEvents(tun) as events:
        for event in events.get(timeout=1.0):      # blocking (select), or events.poll() without blocking
            print(event.kind, event.mtu, event.address)

    async with DeviceEvents(tun) as events:
        async for event in events:                 # the event loop waits on the socket itself
            ...

Linux: a NETLINK_ROUTE socket subscribed to the kernel's link and IPv4/IPv6 address groups, opened in the
calling thread's network namespace (the device's). The kernel announces a link's whole state; the changes are
worked out here against the last state seen: ``"up"``, ``"down"``, ``"mtu"`` (``event.mtu`` is the new one),
``"address-added"``, ``"address-removed"`` (``event.address``), ``"removed"`` (the last event; the iterator then
ends), and ``"overflow"`` when the socket's buffer overflowed and notifications were lost (the state is read
again, so later events are right). Other systems raise TunError (ENOSYS)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import select
import socket
import time
from typing import Optional, Union

from fasttun import _core
from fasttun._tun import Interface, Tun

__all__ = ["DeviceEvent", "DeviceEvents"]

_IFF_UP = 0x1


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


class DeviceEvents:
    """The events of one device (a :class:`Tun`, an interface name or index) until :meth:`close`."""

    def __init__(self, device: Union[Tun, str, int]) -> None:
        if isinstance(device, Tun):
            index, name = device.index, device.name
        elif isinstance(device, str):
            index, name = socket.if_nametoindex(device), device
        elif isinstance(device, int) and not isinstance(device, bool) and device > 0:
            index, name = device, socket.if_indextoname(device)
        else:
            raise TypeError(f"DeviceEvents needs a Tun, an interface name or a positive index, not {device!r}")
        self.index = index
        self.name = name
        self._sock = _core.EventSocket(index)  # subscribed before the state is read: no change falls between
        self._up: Optional[bool] = None
        self._mtu: Optional[int] = None
        self._removed = False
        self._pending: list[DeviceEvent] = []
        self._state_from(device)

    def _state_from(self, device: Union[Tun, str, int]) -> None:
        if isinstance(device, Tun):
            self._up, self._mtu = device.is_up, device.mtu

    # ---- reading ----

    def fileno(self) -> int:
        return self._sock.fileno()

    def poll(self) -> list[DeviceEvent]:
        """The events that happened since the last call, without blocking."""
        out, self._pending = self._pending, []
        for kind, index, flags, mtu, family, raw, prefix, name in self._sock.read():
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
                address = ipaddress.ip_interface((ipaddress.ip_address(raw), prefix))
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
            select.select([self._sock.fileno()], [], [], left)

    # ---- asyncio ----

    def __aiter__(self) -> DeviceEvents:
        return self

    async def __anext__(self) -> DeviceEvent:
        while not self._pending:
            events = self.poll()
            if events:
                self._pending = events
                break
            if self._removed:
                raise StopAsyncIteration
            await self._readable()
        return self._pending.pop(0)

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()
        loop.add_reader(fd, _settle, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    # ---- lifetime ----

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DeviceEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> DeviceEvents:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
