"""What this platform's TUN driver offers (``fasttun.features()``), and ``fasttun info``: what this machine offers
fasttun and what to do when something is missing, as text or as JSON (``facts()``).

It starts no process: everything is read directly (os.uname, /proc, /etc/os-release, the Windows version,
wintun.dll), not through platform.platform() (which runs ``uname -p``) or ctypes.util.find_library."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
from typing import Any, Optional

from fasttun import _core
from fasttun._host import CAP_NET_ADMIN, CAP_SYS_ADMIN, has_cap, root_problem, tool
from fasttun._if_tun import IFF_FLAGS
from fasttun._udp import udp_probe

# What a Wintun adapter is, in the same terms: layer 3 (no TAP), packets without a packet-information header,
# one session (one queue), no virtio-net header offload.
_WINTUN_FEATURES = {"tun": True, "tap": False, "napi": False, "napi_frags": False, "multi_queue": False,
                    "no_pi": True, "one_queue": False, "vnet_hdr": False, "tun_excl": False}

TOOLS = ("ip", "ping", "iperf3", "cc")
"""The programs the tests and ``fasttun bench`` use (the library itself starts none)."""


def features() -> dict[str, bool]:
    """The features of this platform's TUN driver, e.g. ``{"multi_queue": True, ...}``, the same keys everywhere.

    Linux: what the kernel reports (TUNGETFEATURES); raises TunNotFoundError when /dev/net/tun is missing.
    Windows: what a Wintun adapter offers (layer 3, no packet-information header, one queue, no offload),
    without loading wintun.dll. Other systems: {} (no TUN backend; ``fasttun.pair()`` works)."""
    if sys.platform.startswith("linux"):
        flags = _core.linux_features()
        return {name: bool(flags & bit) for name, bit in IFF_FLAGS.items()}
    if sys.platform == "win32":
        return dict(_WINTUN_FEATURES)
    return {}


def probe_offloads() -> dict[str, Optional[bool]]:
    """Which offloads the kernel accepts from a TUN device, read from a throwaway device that fasttun opens with
    offload in a private network namespace (so nothing of the host is touched). None when this process may not
    create devices."""
    names = {"tso": ("tso4", "tso6"), "uso": ("uso4", "uso6")}
    if not (has_cap(CAP_NET_ADMIN) and has_cap(CAP_SYS_ADMIN)) or not os.path.exists("/dev/net/tun"):
        return {k: None for k in names}
    from fasttun import _netns
    from fasttun._linux import LinuxTun

    with _netns.private(), LinuxTun(None, offload=True) as tun:
        accepted = tun.offloads
    return {name: all(accepted.get(bit, False) for bit in bits) for name, bits in names.items()}


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


def _wintun_facts() -> dict[str, Any]:
    """Where wintun.dll comes from and the running driver's version; loading the DLL creates nothing."""
    import fasttun
    from fasttun import _wintun

    out: dict[str, Any] = {"dll_loaded": False, "dll_source": None, "dll_error": None, "driver_running": None,
                           "driver_version": None, "driver_error": None}
    out["dll_source"] = (f"{_wintun.ENV_VAR}" if os.environ.get(_wintun.ENV_VAR)
                         else "the fasttun package" if _wintun._default_path() else "System32")
    try:
        _wintun.ensure_loaded()
    except (fasttun.TunError, ValueError) as exc:
        out["dll_error"] = str(exc)
        return out
    out["dll_loaded"] = True
    try:
        version = fasttun.wintun_driver_version()
    except fasttun.TunError as exc:
        out["driver_error"] = str(exc)
        return out
    out["driver_running"] = version is not None
    if version is not None:
        out["driver_version"] = f"{version[0]}.{version[1]}"
    return out


def _is_windows_admin() -> bool:
    import ctypes

    try:
        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return False


def facts() -> dict[str, Any]:
    """What ``fasttun info`` reports, as values ``json.dumps`` takes. Every key is present on every platform
    (None where a fact does not apply here); the keys are documented in docs/guides/cli.md (``fasttun info --json``)."""
    import fasttun

    linux = sys.platform.startswith("linux")
    out: dict[str, Any] = {
        "fasttun": fasttun.__version__,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform_text(),
        "sys_platform": sys.platform,
        "wine": wine_version(),
        "cpus": os.cpu_count(),
        "backend": "linux" if linux else "wintun" if sys.platform == "win32" else None,
        "tun_features": None,
        "tun_features_error": None,
        "offloads": None,
        "offloads_error": None,
        "wintun": None,
        "udp": None,
        "can_create_devices": False,
        "bench_root_problem": None,
        "tools": None,
        "python_pytun": None,
    }
    if linux:
        try:
            out["tun_features"] = features()
        except fasttun.TunError as exc:
            out["tun_features_error"] = str(exc)
        try:
            offloads = probe_offloads()
            udp = fasttun.udp_offloads()
            out["offloads"] = {"tso": offloads["tso"], "uso": offloads["uso"], "udp_gso": udp["gso"],
                               "udp_gro": udp["gro"]}
        except OSError as exc:
            out["offloads_error"] = str(exc)
        out["can_create_devices"] = has_cap(CAP_NET_ADMIN) and os.path.exists("/dev/net/tun")
    elif sys.platform == "win32":
        out["tun_features"] = features()
        out["wintun"] = _wintun_facts()
        out["udp"] = udp_probe()
        out["can_create_devices"] = _is_windows_admin()
    out["bench_root_problem"] = root_problem()
    if linux:
        out["tools"] = {t: tool(t) is not None for t in TOOLS}
        out["python_pytun"] = _version("python-pytun")
    return out


def _wintun_lines(w: dict[str, Any]) -> list[tuple[str, str]]:
    if not w["dll_loaded"]:
        return [("wintun.dll", f"not loaded: {w['dll_error']}"),
                ("wintun driver", "unknown (wintun.dll did not load)")]
    lines = [("wintun.dll", f"loaded (from {w['dll_source']})")]
    if w["driver_error"] is not None:
        lines.append(("wintun driver", f"unknown: {w['driver_error']}"))
    elif not w["driver_running"]:
        lines.append(("wintun driver", "not running (Windows loads it when the first adapter is created)"))
    else:
        lines.append(("wintun driver", w["driver_version"]))
    return lines


def _windows_udp_line(u: dict[str, Any] | None) -> str:
    if u is None:
        return "unknown (a loopback UDP endpoint could not be opened)"
    calls = "WSARecvMsg/WSASendMsg" if u["message_calls"] else "recvfrom/sendto"
    return (f"uso {_yes(u['gso_supported'])}, uro {_yes(u['gro_supported'])}, {calls}, buffers "
            f"{u['rcvbuf'] / (1 << 20):.1f}/{u['sndbuf'] / (1 << 20):.1f} MiB (fasttun.UdpEndpoint)")


def text_lines(f: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows ``fasttun info`` prints for the facts f."""
    lines: list[tuple[str, str]] = [
        ("fasttun", f["fasttun"]),
        ("python", f"{f['python']} ({f['python_executable']})"),
        ("platform", f["platform"]),
        ("cpus", str(f["cpus"])),
    ]
    if f["backend"] == "linux":
        lines.append(("backend", "linux (/dev/net/tun)"))
        lines.append(("wintun driver", "n/a (Linux)"))
        feats = f["tun_features"]
        if feats is None:
            lines.append(("tun driver", f"unavailable: {f['tun_features_error']}"))
        else:
            lines.append(("tun driver", ", ".join(k for k, v in feats.items() if v) or "none reported"))
            lines.append(("multi-queue", _yes(feats.get("multi_queue"))))
            lines.append(("vnet header", _yes(feats.get("vnet_hdr"))))
        offloads = f["offloads"]
        if offloads is None:
            lines.append(("offloads", f"probe failed: {f['offloads_error']}"))
        else:
            why = "unknown (probing needs root)"
            lines.append(("TSO offload", _yes(offloads["tso"], why)))
            lines.append(("USO offload", _yes(offloads["uso"], why) + " (UDP segmentation, Linux 6.2+)"))
            lines.append(("UDP GSO/GRO", f"gso {_yes(offloads['udp_gso'])}, gro {_yes(offloads['udp_gro'])} "
                                         "(fasttun.UdpEndpoint)"))
    elif f["backend"] == "wintun":
        lines.append(("backend", "wintun"))
        lines.extend(_wintun_lines(f["wintun"]))
        lines.append(("UDP USO/URO", _windows_udp_line(f["udp"])))
    else:
        lines.append(("backend", f"none for {f['sys_platform']}; fasttun.pair() works everywhere"))
    lines.append(("create devices", "yes" if f["can_create_devices"] else
                  "no (needs an elevated process)" if f["backend"] == "wintun" else "no"))
    problem = f["bench_root_problem"]
    lines.append(("bench (root scenarios)", "yes" if problem is None else f"no: {problem}"))
    if f["tools"] is not None:
        lines.append(("tools", ", ".join(f"{t} {'yes' if ok else 'MISSING'}" for t, ok in f["tools"].items())))
    if f["backend"] == "linux":
        lines.append(("python-pytun", f["python_pytun"] or "not installed (optional bench baseline)"))
    return lines


def privilege_hint() -> str:
    """How to get the privileges that creating TUN devices needs on Linux (printed by ``fasttun info`` and
    ``fasttun demo``)."""
    return ("To create TUN devices, run as root (sudo), or give the interpreter CAP_NET_ADMIN:\n"
            f"  sudo setcap cap_net_admin+ep {os.path.realpath(sys.executable)}\n"
            "In a container: --cap-add NET_ADMIN --device /dev/net/tun. Without privileges, fasttun.pair() and\n"
            "'fasttun bench pair' still work.")


def print_info(as_json: bool = False) -> int:
    """``fasttun info`` (``as_json``: ``fasttun info --json``, one JSON object on stdout)."""
    f = facts()
    if as_json:
        print(json.dumps(f, indent=2))
    else:
        lines = text_lines(f)
        width = max(len(k) for k, _ in lines)
        for key, value in lines:
            print(f"{key.ljust(width)}  {value}")
        if not f["can_create_devices"] and f["backend"] == "linux":
            print()
            print(privilege_hint())
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
