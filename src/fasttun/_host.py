"""What this host lets the process do, read directly (no process started): its capabilities, whether it can
create network namespaces and TUN devices, where a command is. Used by ``fasttun info``, the demo and the
benchmark harness."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Optional

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def effective_caps() -> int:
    """This process's effective capability mask (0 where /proc does not say)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def has_cap(cap: int) -> bool:
    return bool(effective_caps() >> cap & 1)


def tool(name: str) -> Optional[str]:
    """The path of a command, looked up in PATH and the sbin directories."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(name, path=path)


def root_problem() -> Optional[str]:
    """Why this process cannot create network namespaces and TUN devices (None if it can): what the demo and the
    benchmark's scenarios need."""
    if not sys.platform.startswith("linux"):
        return f"needs Linux network namespaces; this is {sys.platform}"
    missing = [name for cap, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
               if not has_cap(cap)]
    if missing:
        return (f"needs {' and '.join(missing)} to create network namespaces and TUN devices: "
                f"run it as root (sudo {sys.executable} -m fasttun ...)")
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist: load the tun module (modprobe tun) or pass the device into the container"
    if tool("ip") is None:
        return "needs the 'ip' command (iproute2) to create network namespaces"
    return None
