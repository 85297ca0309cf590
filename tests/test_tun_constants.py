"""The linux/if_tun.h values that the Python side writes once (fasttun._if_tun) agree with the system's header and
with the C core's TUN_F_* bits (csrc/linux/ft_linux.h, exported as _core.TUN_F), and are the ones features(),
Tun.offloads and ``fasttun info`` use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fasttun import _core, _if_tun, _info, _tun

ROOT = Path(__file__).resolve().parent.parent
HEADER = Path("/usr/include/linux/if_tun.h")


def defines(text: str, prefix: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2), 16)
            for m in re.finditer(rf"#define\s+{prefix}(\w+)\s+0x([0-9a-fA-F]+)u?\b", text)}


def test_the_values_are_the_kernels() -> None:
    if not HEADER.exists():
        pytest.skip(f"{HEADER} is missing (apt-get install linux-libc-dev)")
    text = HEADER.read_text()
    kernel = defines(text, "")
    ours = {n: v for n, v in vars(_if_tun).items() if n.startswith("IFF_") and isinstance(v, int)}
    ours.update({"TUN_F_" + n.upper(): v for n, v in _if_tun.TUN_F.items()})
    # Headers older than Linux 6.2 have no TUN_F_USO4/USO6; every other value must be there.
    assert set(ours) - set(kernel) <= {"TUN_F_USO4", "TUN_F_USO6"}, set(ours) - set(kernel)
    for name, value in ours.items():
        if name in kernel:
            assert kernel[name] == value, name
    # The ioctl numbers: _IOW('T', nr, 4 bytes) as the header declares them.
    for name in ("TUNSETIFF", "TUNSETOFFLOAD"):
        nr = int(re.search(rf"#define\s+{name}\s+_IOW\('T',\s*(\d+),", text).group(1))
        assert getattr(_if_tun, name) == (1 << 30) | (4 << 16) | (ord("T") << 8) | nr, name


def test_the_c_core_has_the_same_offload_bits() -> None:
    c_bits = defines((ROOT / "csrc" / "linux" / "ft_linux.h").read_text(), "FT_TUN_F_")
    assert c_bits == {name.upper(): bit for name, bit in _if_tun.TUN_F.items()}


def test_the_tables_name_each_constant_once() -> None:
    assert _if_tun.IFF_FLAGS == {n: getattr(_if_tun, "IFF_" + n.upper()) for n in _if_tun.IFF_FLAGS}
    assert _if_tun.TUN_F is _core.TUN_F
    assert _tun._TUN_F is _if_tun.TUN_F
    assert set(_info._WINTUN_FEATURES) == set(_if_tun.IFF_FLAGS)   # features() has the same keys everywhere
