"""`fasttun demo`: a TUN device in a private network namespace whose pings are answered by Python.

Everything happens inside a namespace this process makes for itself (unshare), so no traffic can leave the
machine and nothing is left behind; the namespace and the device vanish when the demo ends."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import fasttun
from fasttun import _netns, icmp

NAME = "ftdemo0"
LOCAL4, PEER4 = "10.77.0.1/24", "10.77.0.2"
LOCAL6, PEER6 = "fd00:77::1/64", "fd00:77::2"


def _echo_request(ident: int, seq: int, v6: bool) -> bytes:
    payload = struct.pack("!d", time.perf_counter()) + bytes(range(48))
    kind = 128 if v6 else 8
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if v6:  # the kernel fills in the ICMPv6 checksum of raw sockets
        return header + payload
    return struct.pack("!BBHHH", kind, 0, icmp.checksum(header + payload), ident, seq) + payload


def _ping(address: str, count: int, interval: float, v6: bool) -> list[float]:
    """Round-trip times (ms) of `count` echo requests to address, through the kernel's raw ICMP socket."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    reply_type = 129 if v6 else 0
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        sock.settimeout(1.0)
        for seq in range(count):
            sent = time.perf_counter()
            sock.sendto(_echo_request(ident, seq, v6), (address, 0))
            deadline = sent + 1.0
            while time.perf_counter() < deadline:
                try:
                    data = sock.recv(2048)
                except socket.timeout:
                    break
                msg = data if v6 else data[(data[0] & 0x0F) * 4 :]
                if len(msg) >= 8 and msg[0] == reply_type and struct.unpack_from("!HH", msg, 4) == (ident, seq):
                    rtts.append((time.perf_counter() - sent) * 1000.0)
                    break
            time.sleep(interval)
    return rtts


def _summary(address: str, count: int, rtts: list[float]) -> str:
    if not rtts:
        return f"ping {address}: 0/{count} replies"
    return (f"ping {address}: {len(rtts)}/{count} replies, rtt min/median/max = "
            f"{min(rtts):.3f}/{statistics.median(rtts):.3f}/{max(rtts):.3f} ms")


def _ranged(kind: type, low: float, high: float, unit: str = "") -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}{unit}, not {text}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, on ``fasttun demo``'s parser (``run`` takes what it parsed)."""
    parser.add_argument("--count", type=_ranged(int, 1, 10000), default=20,
                        help="pings per address family, 1..10000 (default 20)")
    parser.add_argument("--interval", type=_ranged(float, 0, 10, " seconds"), default=0.02,
                        help="seconds between pings, 0..10 (default 0.02)")


def run(args: argparse.Namespace) -> int:
    if not sys.platform.startswith("linux"):
        print("fasttun demo runs on Linux (it needs network namespaces)", file=sys.stderr)
        return 2
    problem = _privilege_problem()
    if problem is not None:
        return _refuse(problem)
    try:
        return _run(args)
    except (PermissionError, fasttun.TunPermissionError, fasttun.TunNotFoundError) as exc:
        # Privileges the checks above could not see (a seccomp filter, a read-only /dev/net/tun): same advice.
        return _refuse(str(exc))


def _privilege_problem() -> str | None:
    """What this process lacks to run the demo (None if nothing): it makes a network namespace (CAP_SYS_ADMIN)
    and a TUN device in it (CAP_NET_ADMIN, /dev/net/tun)."""
    from fasttun._host import CAP_NET_ADMIN, CAP_SYS_ADMIN, has_cap

    missing = [name for cap, name in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"))
               if not has_cap(cap)]
    if missing:
        return f"this process lacks {' and '.join(missing)}"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist (load the tun module: modprobe tun)"
    return None


def _refuse(problem: str) -> int:
    from fasttun._info import privilege_hint

    print(f"fasttun demo needs root: it creates a network namespace (CAP_SYS_ADMIN) and a TUN device in it "
          f"(CAP_NET_ADMIN), but {problem}.\nRun it with sudo; in a container, give it --cap-add SYS_ADMIN "
          f"--cap-add NET_ADMIN --device /dev/net/tun.\n", file=sys.stderr)
    print("Your own programs need less (no namespace of their own).", privilege_hint(), file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    answered = [0]
    with _netns.private():
        with fasttun.Tun(NAME, addresses=[LOCAL4, LOCAL6], up=True) as tun:
            print(f"fasttun {fasttun.__version__} demo: {tun.name} (index {tun.index}, mtu {tun.mtu}) in a private "
                  f"network namespace with {LOCAL4} and {LOCAL6}")
            print(f"a Python callback on the reader thread answers pings for {PEER4} and {PEER6}")

            def on_batch(batch: fasttun.Batch) -> None:
                replies = icmp.echo_replies(batch)
                if replies is not None:
                    answered[0] += tun.send_batch(replies)

            with tun.start_reader(on_batch, batch_size=64) as reader:
                rtt4 = _ping(PEER4, args.count, args.interval, v6=False)
                rtt6 = _ping(PEER6, args.count, args.interval, v6=True)
                rstats = reader.stats
            print(_summary(PEER4, args.count, rtt4))
            print(_summary(PEER6, args.count, rtt6))
            s = tun.stats
            print(f"reader: {rstats.packets} packets in {rstats.batches} batches, {rstats.waits} sleeps, "
                  f"{answered[0]} replies sent")
            print(f"device: rx {s.rx_packets} packets / {s.rx_bytes} bytes, tx {s.tx_packets} packets / "
                  f"{s.tx_bytes} bytes, drops {s.drops}")
    ok = len(rtt4) == args.count and len(rtt6) == args.count
    print("demo OK" if ok else "demo FAILED: some pings got no reply")
    return 0 if ok else 1
