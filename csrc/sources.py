"""The one list of the C core's sources: which parts (folders of csrc/) each platform compiles.

Every build reads it: setup.py, the C test drivers and the sanitized build in tests/, the Wine builds
(tests/wintun_fake/build_and_run.sh, tests/wine/winpy.py) and the MSVC step of .github/workflows/wheels.yml.
A part is a folder; every .c file in it is compiled. Headers are included as "part/file.h" with csrc/ (and
include/ for wintun.h) on the include path.

    python csrc/sources.py linux                  # every source for Linux, one per line
    python csrc/sources.py win32 --parts core udp # the sources of some parts only
    python csrc/sources.py --windows-paths win32  # with backslashes, for cl.exe
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Optional

CSRC = Path(__file__).resolve().parent

# core: the device interface (and how a named device is opened), the reader thread and the OS-layer contract.
# pair: the in-memory pair backend (every platform). icmp: the Internet checksum and echo replies. offload: virtio-net headers, splitting and coalescing. events: device events (rtnetlink on Linux, IP Helper
# notifications on Windows in ft_events_win.c, a stub elsewhere).
# posix / windows: the OS layer. linux: the TUN backend and rtnetlink configuration. wintun: the Wintun backend,
# its DLL loader and IP Helper configuration. udp: the UDP endpoint backend.
PLATFORMS = {
    "linux": ("core", "pair", "icmp", "offload", "events", "posix", "linux", "udp"),
    "win32": ("core", "pair", "icmp", "offload", "events", "windows", "wintun", "udp"),
    "posix": ("core", "pair", "icmp", "offload", "events", "posix"),
}


def platform_key(platform: str = sys.platform) -> str:
    """linux, win32, or posix (any other POSIX system: the pair and offload only)."""
    if platform == "win32":
        return "win32"
    if platform.startswith("linux"):
        return "linux"
    return "posix"


def parts(platform: str) -> tuple[str, ...]:
    return PLATFORMS[platform_key(platform)]


def sources(platform: str = sys.platform, only: Optional[Iterable[str]] = None) -> list[Path]:
    """The .c files the platform compiles, part by part; `only` restricts to some of its parts."""
    chosen = parts(platform)
    if only is not None:
        wanted = list(only)
        known = {p for ps in PLATFORMS.values() for p in ps}
        unknown = [p for p in wanted if p not in known]
        if unknown:
            raise ValueError(f"unknown parts {unknown}; the parts are folders of {CSRC}")
        chosen = tuple(p for p in chosen if p in wanted)
    return [f for part in chosen for f in sorted((CSRC / part).glob("*.c"))]


def main(argv: list[str]) -> int:
    windows_paths = "--windows-paths" in argv
    args = [a for a in argv if a != "--windows-paths"]
    only = None
    if "--parts" in args:
        i = args.index("--parts")
        only = args[i + 1:]
        args = args[:i]
    platform = args[0] if args else sys.platform
    root = CSRC.parent
    for f in sources(platform, only):
        rel = str(f.relative_to(root))
        print(rel.replace("/", "\\") if windows_paths else rel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
