"""fasttun: fast TUN interfaces for Python packet pipelines.

A C reader thread waits on the device, gathers packets into batches in buffers allocated once, and hands each
batch to your Python callback as zero-copy views, so Python pays per batch, not per packet.

    with fasttun.Tun("ft0", mtu=1420, addresses=["10.7.0.1/24"], up=True) as tun:
        with tun.start_reader(lambda batch: print(len(batch), "packets")):
            ...

Linux uses /dev/net/tun; ``fasttun.pair()`` gives two connected in-memory devices for tests."""

from __future__ import annotations

from fasttun._core import MAX_PACKET, MIN_MTU, Batch, BatchBuilder, Packet, make_batch
from fasttun._tun import PairDevice, Reader, ReaderStats, Stats, Tun, pair
from fasttun._linux import LinuxTun
from fasttun._info import features
from fasttun._udp import UdpEndpoint, UdpStats, udp_offloads
from fasttun._wintun import WintunAdapter, delete_wintun_driver, load_wintun, wintun_driver_version
from fasttun.errors import (
    TunClosedError,
    TunError,
    TunExistsError,
    TunFullError,
    TunNotFoundError,
    TunPermissionError,
    WintunLoadError,
)

__version__ = "0.2.0"

__all__ = [
    "MAX_PACKET",
    "MIN_MTU",
    "Batch",
    "BatchBuilder",
    "LinuxTun",
    "Packet",
    "PairDevice",
    "Reader",
    "ReaderStats",
    "Stats",
    "Tun",
    "TunClosedError",
    "TunError",
    "TunExistsError",
    "TunFullError",
    "TunNotFoundError",
    "TunPermissionError",
    "UdpEndpoint",
    "UdpStats",
    "WintunAdapter",
    "WintunLoadError",
    "delete_wintun_driver",
    "features",
    "load_wintun",
    "make_batch",
    "pair",
    "udp_offloads",
    "wintun_driver_version",
    "__version__",
]
