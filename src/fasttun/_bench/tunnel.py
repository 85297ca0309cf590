"""tunnel: iperf3 TCP through a point-to-point IP-over-UDP tunnel between two namespaces joined by a veth.

Each namespace runs one side of the tunnel as its own process (as two hosts would): examples/udp_tunnel.py
(fasttun: plain, the TUN device's reader forwarding to the UdpEndpoint and the endpoint's to the TUN device in C,
``start_reader(device)``; plain on one asyncio event loop instead, with Python callbacks; encrypted with
ChaCha20-Poly1305 (one AEAD call per train of packets, and one per datagram), and with offload off), the C
per-packet tunnel fasttun/_bench/baselines/ftb_udp_tunnel.c (one read+send and one recv+write per packet), a
python-pytun tunnel (two Python threads per side, one syscall per packet, what a pytun user writes), and the
kernel's own UDP tunnel (VXLAN over the same veth with the same MTU: the baseline, the anchor fasttun aims at).
Gbit/s is iperf3's TCP goodput; packets/s counts the datagrams that crossed.

Two CPU columns, steadier than the rate on a shared machine: ``tunnel CPU`` is the user plus system seconds of the
two tunnel processes per GB of goodput (the kernel's VXLAN has no process: its cost is all in the host column), and
``host CPU`` is the busy seconds of every CPU of the machine per GB (iperf3 and the kernel's network stack
included), the one figure comparable across every row.

``python -m fasttun._bench.tunnel pytun NAME MTU BIND_IP PORT PEER_IP PORT`` runs one python-pytun side."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from fasttun._bench.results import Sample
from fasttun._bench.scenario import Settings, Variant, pytun_missing
from fasttun._bench.system import Child, cpu_seconds_of, host_busy_seconds, ip, json_line, namespace, run
from fasttun._host import tool

UNDERLAY = ("10.201.6.1", "10.201.6.2")
OVERLAY = ("10.201.7.1", "10.201.7.2")
UDP_PORT = 5555
IPERF_PORT = 5202
MTU = 1400
DEVICE = "ftbtun0"
VXLAN = "ftbvx0"
VXLAN_ID = 42
VXLAN_PORT = 4789


def example_path() -> Optional[Path]:
    """examples/udp_tunnel.py of the source checkout fasttun runs from, or of the current directory (the
    examples are not part of the package)."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        path = root / "examples" / "udp_tunnel.py"
        if path.is_file():
            return path
    return None


class TunnelScenario:
    name = "tunnel"
    needs_root = True
    key = "gbps"
    summary = ("iperf3 TCP through an IP-over-UDP tunnel between two namespaces: fasttun vs the kernel's VXLAN "
               "and a C per-packet tunnel")

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        self.ns = (stack.enter_context(namespace("ta")), stack.enter_context(namespace("tb")))
        ip("link", "add", "ftbtva", "netns", self.ns[0], "type", "veth", "peer", "name", "ftbtvb", "netns",
           self.ns[1])
        for ns, dev, addr in zip(self.ns, ("ftbtva", "ftbtvb"), UNDERLAY):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        self.seconds = max(1, math.ceil(settings.seconds))
        keydir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ftb-key-"))
        self.key_file = os.path.join(keydir, "key")
        with open(self.key_file, "wb") as f:
            f.write(os.urandom(32))
        no_iperf = None if tool("iperf3") else "iperf3 is not installed (apt install iperf3)"
        example = example_path()
        no_example = None if example else "examples/udp_tunnel.py not found (run from a fasttun source checkout)"
        no_crypto = None
        try:
            import cryptography  # noqa: F401
        except ImportError:
            no_crypto = "cryptography is not installed (pip install cryptography)"
        self.example = example
        self.baselines = settings.baselines
        return [
            Variant("fasttun tunnel (TUN segments + UDP GSO/GRO, forwards in C), plain", lambda: self._fasttun([]),
                    missing=no_iperf or no_example),
            Variant("kernel VXLAN (in-kernel UDP tunnel, same veth and MTU)", self._vxlan, baseline=True,
                    missing=no_iperf),
            Variant("fasttun tunnel on asyncio (add_reader on both fds), plain",
                    lambda: self._fasttun(["--asyncio"]), missing=no_iperf or no_example),
            Variant("fasttun tunnel on asyncio (fasttun.aio.batches for the TUN), plain",
                    lambda: self._fasttun(["--asyncio", "aio"]), missing=no_iperf or no_example),
            Variant("fasttun tunnel, ChaCha20-Poly1305 in Python (one AEAD call per train)",
                    lambda: self._fasttun(["--key-file", self.key_file]), missing=no_iperf or no_example or no_crypto),
            Variant("fasttun tunnel, ChaCha20-Poly1305 in Python, --train 1 (a call per datagram)",
                    lambda: self._fasttun(["--key-file", self.key_file, "--train", "1"]),
                    missing=no_iperf or no_example or no_crypto),
            Variant("fasttun tunnel, plain, offload off", lambda: self._fasttun(["--offload", "off"]),
                    missing=no_iperf or no_example),
            Variant("C per-packet tunnel, read()+send() / recv()+write()", self._c,
                    missing=no_iperf or settings.baselines.missing("ftb_udp_tunnel")),
            Variant("python-pytun tunnel, read()+send() / recv()+write() in 2 threads", self._pytun,
                    missing=no_iperf or pytun_missing()),
        ]

    # ---- the sides ----

    def _side_args(self, i: int) -> tuple[str, str, str]:
        return OVERLAY[i], UNDERLAY[i], UNDERLAY[1 - i]

    def _fasttun(self, extra: list[str]) -> Sample:
        assert self.example is not None
        exe = tool("ip")
        assert exe is not None
        procs = []
        try:
            for i in range(2):
                overlay, here, there = self._side_args(i)
                cmd = [exe, "netns", "exec", self.ns[i], sys.executable, str(self.example), "--tun-addr",
                       f"{overlay}/24", "--bind", f"{here}:{UDP_PORT}", "--peer", f"{there}:{UDP_PORT}",
                       "--name", DEVICE, "--mtu", str(MTU), *extra]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for p in procs:
                if _readline(p, 20).strip() != "ready":
                    raise RuntimeError(f"the fasttun tunnel did not start: {_stderr(p)}")
            iperf = self._iperf([p.pid for p in procs])
            counters = []
            for p in procs:
                p.send_signal(signal.SIGTERM)
                out, err = p.communicate(timeout=20)
                if p.returncode != 0:
                    raise RuntimeError(f"the fasttun tunnel failed: {err.strip()[-300:]}")
                line = next((x for x in out.splitlines() if x.startswith("counters ")), None)
                if line is None:
                    raise RuntimeError("the fasttun tunnel printed no counters")
                counters.append(json.loads(line[len("counters "):]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=5)
        crossed = sum(c["udp"]["rx_packets"] for c in counters)
        lost = sum(sum(c["tunnel"].values()) + c["udp"]["rx_dropped_oversize"] + c["udp"]["tx_dropped_full"]
                   for c in counters)
        numbers = {"tunnel_drops": float(lost)}
        # How often the readers of both ends went to sleep (each sleep ends in a wake-up): the cost a user-space
        # tunnel adds per batch. 0 for the asyncio variants, whose loop waits instead of fasttun's readers.
        sleeps = sum(c["udp"]["waits"] + c["tun"]["waits"] for c in counters)
        if sleeps > 0 and iperf["seconds"] > 0:
            numbers["reader_sleeps_per_s"] = sleeps / iperf["seconds"]
        return self._sample(crossed, iperf, numbers)

    def _vxlan(self) -> Sample:
        """The kernel's own UDP tunnel between the same two addresses of the veth: no process, no copy to user
        space; packets/s counts what the VXLAN devices received."""
        try:
            for i in range(2):
                overlay, here, there = self._side_args(i)
                ip("-n", self.ns[i], "link", "add", VXLAN, "type", "vxlan", "id", str(VXLAN_ID), "local", here,
                   "remote", there, "dstport", str(VXLAN_PORT), "dev", ("ftbtva", "ftbtvb")[i])
                ip("-n", self.ns[i], "link", "set", VXLAN, "mtu", str(MTU))
                ip("-n", self.ns[i], "addr", "add", f"{overlay}/24", "dev", VXLAN)
                ip("-n", self.ns[i], "link", "set", VXLAN, "up")
            iperf = self._iperf([])
            crossed = sum(_rx_packets(ns, VXLAN) for ns in self.ns)
        finally:
            for ns in self.ns:
                ip("-n", ns, "link", "del", VXLAN, check=False)
        return self._sample(crossed, iperf, {})

    def _c(self) -> Sample:
        binary = self.baselines.path("ftb_udp_tunnel")
        return self._children([[str(binary), DEVICE, str(MTU), self._side_args(i)[1], str(UDP_PORT),
                                self._side_args(i)[2], str(UDP_PORT)] for i in range(2)], "ftb_udp_tunnel",
                              ("to_tun",))

    def _pytun(self) -> Sample:
        return self._children([[sys.executable, "-m", "fasttun._bench.tunnel", "pytun", DEVICE, str(MTU),
                                self._side_args(i)[1], str(UDP_PORT), self._side_args(i)[2], str(UDP_PORT)]
                               for i in range(2)], "pytun tunnel", ("to_tun",))

    def _children(self, cmds: list[list[str]], what: str, count_keys: tuple[str, ...]) -> Sample:
        """Two sides that create their TUN device, print "ready", and stop with one JSON line when stdin closes;
        the harness gives the devices their addresses."""
        exe = tool("ip")
        assert exe is not None
        with Child([exe, "netns", "exec", self.ns[0], *cmds[0]], stdin=True) as a, \
                Child([exe, "netns", "exec", self.ns[1], *cmds[1]], stdin=True) as b:
            for child in (a, b):
                if child.readline(timeout=15).strip() != "ready":
                    raise RuntimeError(f"the {what} did not start: {child.proc.stderr.read() if child.proc.poll() is not None else ''}")  # type: ignore[union-attr]  # noqa: E501
            for i in range(2):
                ip("-n", self.ns[i], "addr", "add", f"{OVERLAY[i]}/24", "dev", DEVICE)
                ip("-n", self.ns[i], "link", "set", DEVICE, "up")
            iperf = self._iperf([a.pid, b.pid])
            outs = [child.finish(timeout=10)[0] for child in (a, b)]
        crossed = sum(int(json_line(o, what)[k]) for o in outs for k in count_keys)
        return self._sample(crossed, iperf, {})

    # ---- measuring ----

    def _iperf(self, tunnel_pids: list[int]) -> dict[str, Any]:
        """One iperf3 run through the tunnel, with the CPU the tunnel processes (tunnel_pids) and the whole
        machine spent meanwhile."""
        exe = tool("ip")
        assert exe is not None
        with Child([exe, "netns", "exec", self.ns[1], "iperf3", "-s", "-1", "-B", OVERLAY[1], "-p",
                    str(IPERF_PORT), "--forceflush"]) as server:
            deadline = time.monotonic() + 10
            while "listening" not in server.readline(timeout=max(0.1, deadline - time.monotonic())).lower():
                if time.monotonic() >= deadline or server.proc.poll() is not None:
                    raise RuntimeError("the iperf3 server did not start")
            tunnel_cpu = sum(cpu_seconds_of(pid) for pid in tunnel_pids)
            host_cpu = host_busy_seconds()
            proc = run([exe, "netns", "exec", self.ns[0], "iperf3", "-c", OVERLAY[1], "-p", str(IPERF_PORT),
                        "-t", str(self.seconds), "-J", "--connect-timeout", "5000"], timeout=self.seconds + 30,
                       check=False)
            host_cpu = host_busy_seconds() - host_cpu
            tunnel_cpu = sum(cpu_seconds_of(pid) for pid in tunnel_pids) - tunnel_cpu
        result = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        if "error" in result or "end" not in result:
            raise RuntimeError(f"iperf3 failed: {result.get('error') or proc.stderr.strip()[-300:]}")
        end = result["end"]
        gigabytes = float(end["sum_received"]["bytes"]) / 1e9
        cpu = {"host_cpu_s_per_gb": host_cpu / gigabytes} if gigabytes > 0 else {}
        if tunnel_pids and gigabytes > 0:
            cpu["tunnel_cpu_s_per_gb"] = tunnel_cpu / gigabytes
        return {"bps": float(end["sum_received"]["bits_per_second"]),
                "seconds": float(end["sum_received"]["seconds"]),
                "retransmits": float(end["sum_sent"].get("retransmits", 0)), "cpu": cpu}

    @staticmethod
    def _sample(crossed: int, iperf: dict[str, Any], extra: dict[str, float]) -> Sample:
        if crossed <= 0 or iperf["bps"] <= 0:
            raise RuntimeError(f"{crossed} datagrams crossed, iperf3 measured {iperf['bps']:.0f} bit/s")
        return Sample(pps=crossed / iperf["seconds"], gbps=iperf["bps"] / 1e9,
                      extra={"retransmits": iperf["retransmits"], **iperf["cpu"], **extra})


def _rx_packets(ns: str, device: str) -> int:
    """Packets the device in namespace ns received (its link counter)."""
    links = json.loads(ip("-n", ns, "-s", "-j", "link", "show", "dev", device).stdout)
    return int(links[0]["stats64"]["rx"]["packets"])


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    return box[0] if box else ""


def _stderr(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)
    return (proc.stderr.read() if proc.stderr else "").strip()[-300:]


# ---- one python-pytun side (run as a module in its namespace) --------------------------------------------

def _pytun_side(argv: list[str]) -> int:
    import pytun

    name, mtu, here, here_port, there, there_port = argv
    dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    dev.mtu = int(mtu)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (33, 32):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE: the same buffers the other tunnels get
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
    sock.bind((here, int(here_port)))
    sock.connect((there, int(there_port)))
    counts = {"to_udp": 0, "to_tun": 0, "errors": 0}

    def tun_to_udp() -> None:
        read, send = dev.read, sock.send
        while True:
            try:
                send(read(2048))
                counts["to_udp"] += 1
            except OSError:
                counts["errors"] += 1

    def udp_to_tun() -> None:
        recv, write = sock.recv, dev.write
        while True:
            try:
                write(recv(65535))
                counts["to_tun"] += 1
            except (OSError, pytun.Error):
                counts["errors"] += 1

    for fn in (tun_to_udp, udp_to_tun):
        threading.Thread(target=fn, daemon=True).start()
    print("ready", flush=True)
    for _ in sys.stdin:
        pass
    print(json.dumps(counts), flush=True)
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "pytun":
        sys.exit(_pytun_side(sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
