"""The values of linux/if_tun.h that the Python side uses, written once (the C side has its own copy of the
TUN_F_* bits in csrc/ft_backends.h and takes the IFF_* flags from the system's linux/if_tun.h).

Plain numbers, so that this module imports on every platform: ``features()`` reports the same keys on Windows."""

from __future__ import annotations

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

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

TUN_F = {
    "csum": TUN_F_CSUM,
    "tso4": TUN_F_TSO4,
    "tso6": TUN_F_TSO6,
    "tso_ecn": TUN_F_TSO_ECN,
    "uso4": TUN_F_USO4,
    "uso6": TUN_F_USO6,
}
"""The TUN_F_* offload bits as TUNSETOFFLOAD accepts them, by the names ``Tun.offloads`` uses (USO4/USO6 only on
Linux 6.2+)."""
