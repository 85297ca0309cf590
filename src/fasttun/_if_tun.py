"""The values of linux/if_tun.h that the Python side uses, written once. The TUN_F_* offload bits come from the C
core (csrc/linux/ft_linux.h, through _core.TUN_F); the IFF_* flags and ioctl numbers are only Python's (the C side
takes them from the system's linux/if_tun.h).

Plain numbers, so that this module imports on every platform: ``features()`` reports the same keys on Windows."""

from __future__ import annotations

from fasttun import _core

# ioctl requests (_IOW('T', 202, int) and _IOW('T', 208, unsigned int)).
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NAPI = 0x0010
IFF_NAPI_FRAGS = 0x0020
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_ONE_QUEUE = 0x2000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000

IFF_FLAGS = {
    "tun": IFF_TUN,
    "tap": IFF_TAP,
    "napi": IFF_NAPI,
    "napi_frags": IFF_NAPI_FRAGS,
    "multi_queue": IFF_MULTI_QUEUE,
    "no_pi": IFF_NO_PI,
    "one_queue": IFF_ONE_QUEUE,
    "vnet_hdr": IFF_VNET_HDR,
    "tun_excl": IFF_TUN_EXCL,
}
"""The IFF_* flags that TUNGETFEATURES reports, by the names ``fasttun.features()`` uses."""

TUN_F: dict[str, int] = _core.TUN_F
"""The TUN_F_* offload bits as TUNSETOFFLOAD accepts them, by the names ``Tun.offloads`` uses (USO4/USO6 only on
Linux 6.2+)."""
