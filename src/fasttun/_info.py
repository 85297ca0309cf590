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


# What a Wintun adapter is, in the same terms: layer 3 (no TAP), packets without a packet-information header,
# one session (one queue), no virtio-net header offload.
_WINTUN_FEATURES = {"tun": True, "tap": False, "napi": False, "napi_frags": False, "multi_queue": False,
                    "no_pi": True, "one_queue": False, "vnet_hdr": False, "tun_excl": False}


def features() -> dict[str, bool]:
    """The features of this platform's TUN driver, e.g. ``{"multi_queue": True, ...}``, the same keys everywhere.

    Linux: what the kernel reports (TUNGETFEATURES); raises TunNotFoundError when /dev/net/tun is missing.
    Windows: what a Wintun adapter offers (layer 3, no packet-information header, one queue, no offload),
    without loading wintun.dll. Other systems: {} (no TUN backend; ``fasttun.pair()`` works)."""
    if sys.platform.startswith("linux"):
        flags = _core.linux_features()
        return {name: bool(flags & bit) for name, bit in _LINUX_FLAGS.items()}
    if sys.platform == "win32":
        return dict(_WINTUN_FEATURES)
    return {}
