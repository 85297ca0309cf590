"""Opening the scenarios' TUN devices inside their namespaces, with fasttun and with python-pytun, and
the consumer loops the scenarios share."""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import threading
import time
from typing import Any, Optional

import fasttun
from fasttun import _netns
from fasttun._bench.system import ip, netns_path

PYTUN_READ = 2048
"""What the python-pytun loops ask read() for: the MTU (1500) rounded up, as its users typically do."""


def fasttun_device(ns: str, name: str, address: str, txqueuelen: Optional[int] = None,
                   offload: Optional[str] = None, remote_csum: bool = False) -> fasttun.LinuxTun:
    """A fasttun device in namespace ns, with an address, up; offload: None, "segments" or "super";
    remote_csum: checksums left partial travel behind a header (for a forwarder between two such devices)."""
    with _netns.entered(netns_path(ns)):
        if offload is None:
            return fasttun.LinuxTun(name, mtu=1500, addresses=[address], up=True, txqueuelen=txqueuelen,
                                    remote_csum=remote_csum)
        return fasttun.LinuxTun(name, mtu=1500, addresses=[address], up=True, txqueuelen=txqueuelen, offload=True,
                                offload_mode="super" if offload == "super" else "segments", remote_csum=remote_csum)


def pytun_device(ns: str, name: str, address: str, txqueuelen: Optional[int] = None) -> Any:
    """A python-pytun device in namespace ns, configured with pytun's own API, non-blocking."""
    import fcntl  # Linux only: importing this module must work everywhere (fasttun bench pair on Windows)

    import pytun

    iface = ipaddress.ip_interface(address)
    with _netns.entered(netns_path(ns)):
        dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        try:
            dev.addr = str(iface.ip)
            dev.netmask = str(iface.netmask)
            dev.mtu = 1500
            dev.up()
        except BaseException:
            dev.close()
            raise
    if txqueuelen is not None:
        ip("-n", ns, "link", "set", "dev", name, "txqueuelen", str(txqueuelen))
    fd = dev.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    return dev


class Counter:
    """Packets and bytes a consumer has seen, and when it saw the last one."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.last = 0.0

    def on_batch(self, batch: fasttun.Batch) -> None:
        self.packets += len(batch)
        self.bytes += batch.nbytes
        self.last = time.perf_counter()


def wait_drained(counter: Counter, expected: int, idle: float, deadline: float,
                 done: Optional[threading.Event] = None) -> None:
    """Waits until the counter reaches expected, or saw nothing new for idle seconds (after the first packet),
    or the deadline (a time.monotonic() value) passes. With `done` (set by the consumer once it has everything)
    it sleeps on that event, checking idleness four times per idle period, instead of polling every 2 ms: a
    consumer in this process then keeps the GIL to itself."""
    seen = -1
    changed = time.monotonic()
    while counter.packets < expected:
        now = time.monotonic()
        if now >= deadline:
            return
        if counter.packets != seen:
            seen, changed = counter.packets, now
        elif seen > 0 and now - changed >= idle:
            return
        if done is None:
            time.sleep(0.002)
        elif done.wait(idle / 4):
            return


def pytun_drain(dev: Any, expected: int, idle: float, deadline: float) -> Counter:
    """python-pytun's read() in a Python loop until expected packets, idleness or the deadline."""
    import pytun

    c = Counter()
    read = dev.read
    while c.packets < expected:
        try:
            p = read(PYTUN_READ)
        except pytun.Error as exc:
            if exc.errno != errno.EAGAIN:
                raise
            c.last = time.perf_counter()
            wait = idle if c.packets else max(0.0, deadline - time.monotonic())
            if not select.select([dev], [], [], wait)[0] or time.monotonic() >= deadline:
                break
            continue
        c.packets += 1
        c.bytes += len(p)
    else:
        c.last = time.perf_counter()
    return c
