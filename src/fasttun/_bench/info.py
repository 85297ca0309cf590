"""``fasttun info``: what this machine offers fasttun, and what to do when something is missing.

It starts no process: everything is read directly (os.uname, /proc, /etc/os-release, the Windows version,
wintun.dll), not through platform.platform() (which runs ``uname -p``) or ctypes.util.find_library."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import struct
import sys
from typing import Any, Optional

import fasttun
from fasttun import _core
from fasttun._bench.system import CAP_NET_ADMIN, CAP_SYS_ADMIN, has_cap, root_problem, tool

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x20, 0x40


def probe_offloads() -> dict[str, Optional[bool]]:
    """Which TUNSETOFFLOAD flags the kernel accepts, tried on a throwaway device in a private network
    namespace (so nothing of the host is touched). None when this process may not create devices."""
    import fcntl  # Linux only

    names = {"tso": TUN_F_TSO4 | TUN_F_TSO6, "uso": TUN_F_USO4 | TUN_F_USO6}
    if not (has_cap(CAP_NET_ADMIN) and has_cap(CAP_SYS_ADMIN)) or not os.path.exists("/dev/net/tun"):
        return {k: None for k in names}
    from fasttun import _netns

    out: dict[str, Optional[bool]] = {}
    with _netns.private():
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
            for name, flags in names.items():
                try:
                    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | flags)
                    out[name] = True
                except OSError:
                    out[name] = False
        finally:
            os.close(fd)
    return out


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _yes(value: Optional[bool], unknown: str = "unknown") -> str:
    return unknown if value is None else "yes" if value else "no"


def wine_version() -> Optional[str]:
    """The Wine version when this Windows process runs under Wine, else None."""
    if sys.platform != "win32":
        return None
    import ctypes

    try:
        fn: Any = getattr(ctypes, "WinDLL")("ntdll").wine_get_version
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    value = fn()
    return value.decode("ascii", "replace") if isinstance(value, bytes) else None


def _os_release() -> Optional[str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        return line.split("=", 1)[1].strip().strip('"') or None
        except OSError:
            continue
    return None


def platform_text() -> str:
    """The system, its release and the machine, read without starting a process."""
    if sys.platform == "win32":
        v = sys.getwindowsversion()  # type: ignore[attr-defined]
        machine = os.environ.get("PROCESSOR_ARCHITECTURE", "unknown")
        text = f"Windows {v.major}.{v.minor}.{v.build} {machine}"
        wine = wine_version()
        return f"{text} (Wine {wine})" if wine else text
    if hasattr(os, "uname"):
        u = os.uname()
        text = f"{u.sysname} {u.release} {u.machine}"
        distro = _os_release() if sys.platform.startswith("linux") else None
        return f"{text} ({distro})" if distro else text
    return sys.platform


def _wintun_lines() -> list[tuple[str, str]]:
    """Where wintun.dll comes from and the running driver's version; loading the DLL creates nothing."""
    from fasttun import _wintun

    source = (f"{_wintun.ENV_VAR}" if os.environ.get(_wintun.ENV_VAR)
              else "the fasttun package" if _wintun._default_path() else "System32")
    try:
        _wintun.ensure_loaded()
    except (fasttun.TunError, ValueError) as exc:
        return [("wintun.dll", f"not loaded: {exc}"), ("wintun driver", "unknown (wintun.dll did not load)")]
    lines = [("wintun.dll", f"loaded (from {source})")]
    try:
        version = fasttun.wintun_driver_version()
    except fasttun.TunError as exc:
        lines.append(("wintun driver", f"unknown: {exc}"))
        return lines
    lines.append(("wintun driver", "not running (Windows loads it when the first adapter is created)"
                  if version is None else f"{version[0]}.{version[1]}"))
    return lines


def _is_windows_admin() -> bool:
    import ctypes

    try:
        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return False


def print_info() -> int:
    lines: list[tuple[str, str]] = [
        ("fasttun", fasttun.__version__),
        ("python", f"{sys.version.split()[0]} ({sys.executable})"),
        ("platform", platform_text()),
        ("cpus", str(os.cpu_count())),
    ]
    if sys.platform.startswith("linux"):
        lines.append(("backend", "linux (/dev/net/tun)"))
        lines.append(("wintun driver", "n/a (Linux)"))
        try:
            feats = fasttun.features()
            lines.append(("tun driver", ", ".join(k for k, v in feats.items() if v) or "none reported"))
            lines.append(("multi-queue", _yes(feats.get("multi_queue"))))
            lines.append(("vnet header", _yes(feats.get("vnet_hdr"))))
        except fasttun.TunError as exc:
            lines.append(("tun driver", f"unavailable: {exc}"))
        try:
            offloads = probe_offloads()
            why = "unknown (probing needs root)"
            lines.append(("TSO offload", _yes(offloads["tso"], why)))
            lines.append(("USO offload", _yes(offloads["uso"], why) + " (UDP segmentation, Linux 6.2+)"))
            udp = fasttun.udp_offloads()
            lines.append(("UDP GSO/GRO", f"gso {_yes(udp['gso'])}, gro {_yes(udp['gro'])} (fasttun.UdpEndpoint)"))
        except OSError as exc:
            lines.append(("offloads", f"probe failed: {exc}"))
        can_create = has_cap(CAP_NET_ADMIN) and os.path.exists("/dev/net/tun")
    elif sys.platform == "win32":
        lines.append(("backend", "wintun"))
        lines.extend(_wintun_lines())
        can_create = _is_windows_admin()
    else:
        lines.append(("backend", f"none for {sys.platform}; fasttun.pair() works everywhere"))
        can_create = False
    lines.append(("create devices", "yes" if can_create else
                  "no (needs an elevated process)" if sys.platform == "win32" else "no"))
    problem = root_problem()
    lines.append(("bench (root scenarios)", "yes" if problem is None else f"no: {problem}"))
    if sys.platform.startswith("linux"):
        lines.append(("tools", ", ".join(f"{t} {'yes' if tool(t) else 'MISSING'}"
                                         for t in ("ip", "ping", "iperf3", "cc"))))
        lines.append(("python-pytun", _version("python-pytun") or "not installed (optional bench baseline)"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    if not can_create and sys.platform.startswith("linux"):
        print()
        print("To create TUN devices, run as root (sudo), or give the interpreter CAP_NET_ADMIN:")
        print(f"  sudo setcap cap_net_admin+ep {os.path.realpath(sys.executable)}")
        print("In a container: --cap-add NET_ADMIN --device /dev/net/tun. Without privileges, fasttun.pair() and")
        print("'fasttun bench pair' still work.")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
