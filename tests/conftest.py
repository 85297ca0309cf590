"""Shared fixtures: network namespaces for the tests that need a real TUN device.

A test that asks for `netns` runs inside a namespace of its own: the fixture creates it with `ip netns add`,
moves the test's thread into it (setns), and always moves back and deletes it afterwards. Outside CI such
tests skip with the reason when the machine cannot run them; in CI (CI=true, where we are root) they fail."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

import fasttun
from fasttun import _netns

IN_CI = bool(os.environ.get("CI"))
_counter = itertools.count()


def _why_no_netns() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces and /dev/net/tun are Linux-only"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to create TUN devices and network namespaces"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (modprobe tun)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


def require_root_environment() -> None:
    why = _why_no_netns()
    if why is None:
        return
    if IN_CI:
        pytest.fail(f"CI must run the TUN tests, but: {why}")
    pytest.skip(why)


def under_wine() -> bool:
    """True when the tests run on Windows' CPython under Wine (ntdll has Wine's own export)."""
    import ctypes

    try:
        ctypes.WinDLL("ntdll").wine_get_version  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return False
    return True


def require_tool(tool: str, package: str) -> str:
    """The path of a command a test runs; without it the test skips with the install hint (fails in CI)."""
    path = shutil.which(tool)
    if path is None:
        why = f"{tool} is not installed (apt-get install {package})"
        if IN_CI:
            pytest.fail(f"CI must have {tool}: {why}")
        pytest.skip(why)
    return path


class Namespace:
    """A network namespace the current test thread is inside of."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *cmd: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Runs a command inside the namespace (children inherit the thread's namespace)."""
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    require_root_environment()
    name = f"ftt-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        with _netns.entered(f"/run/netns/{name}"):
            ns = Namespace(name)
            ns.run("ip", "link", "set", "lo", "up")
            yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def ends() -> Iterator[tuple[fasttun.Tun, fasttun.Tun]]:
    """Two connected in-memory devices, closed afterwards."""
    a, b = fasttun.pair()
    yield a, b
    a.close()
    b.close()
