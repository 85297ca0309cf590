"""What this platform's TUN driver offers."""

from __future__ import annotations

import sys

from fasttun import _core

# IFF_* flags of linux/if_tun.h that TUNGETFEATURES reports.
_LINUX_FLAGS = {
    "tun": 0x0001,
    "tap": 0x0002,
    "napi": 0x0010,
    "napi_frags": 0x0020,
    "multi_queue": 0x0100,
    "no_pi": 0x1000,
    "one_queue": 0x2000,
    "vnet_hdr": 0x4000,
    "tun_excl": 0x8000,
}


def features() -> dict[str, bool]:
    """The features of the kernel's TUN driver (Linux: from TUNGETFEATURES), e.g. ``{"multi_queue": True}``.

    Raises TunNotFoundError when /dev/net/tun is missing."""
    if not sys.platform.startswith("linux"):
        return {}
    flags = _core.linux_features()
    return {name: bool(flags & bit) for name, bit in _LINUX_FLAGS.items()}
