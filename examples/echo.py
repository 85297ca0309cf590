"""An ICMP/ICMPv6 echo responder on a TUN device: pings to any address behind the device are answered by Python.

    sudo python examples/echo.py --name ftecho0 --address 10.97.0.1/24 --address fd00:97::1/64
    # meanwhile:  ping 10.97.0.2   and   ping -6 fd00:97::2

The device's reader thread hands each batch of packets to a callback, which turns the echo requests among them
into replies (``fasttun.icmp.echo_replies``, one C call per batch) and sends them back with one
``send_batch``; other packets are counted and ignored. Runs until SIGINT or SIGTERM, then prints its
counters and exits 0. The asyncio version of the same job is examples/echo_async.py."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import fasttun
from fasttun import icmp

DEFAULT_ADDRESSES = ["10.97.0.1/24", "fd00:97::1/64"]


class Responder:
    """The reader callback: answers echo requests, counts the rest (echo_async.py uses replies_for())."""

    def __init__(self, tun: fasttun.Tun) -> None:
        self.tun = tun
        self.requests = 0
        self.replied = 0
        self.ignored = 0

    def replies_for(self, batch: fasttun.Batch) -> fasttun.Batch | None:
        """The replies to the batch's echo requests (one C call), the other packets counted; None if none."""
        replies = icmp.echo_replies(batch)
        answered = 0 if replies is None else len(replies)
        self.requests += answered
        self.ignored += len(batch) - answered
        return replies

    def __call__(self, batch: fasttun.Batch) -> None:
        replies = self.replies_for(batch)
        if replies is not None:
            self.replied += self.tun.send_batch(replies)

    def report(self) -> str:
        return f"echo requests {self.requests}, replies sent {self.replied}, other packets {self.ignored}"


def argument_parser(description: str | None = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="ftecho0", help="device name (default ftecho0)")
    parser.add_argument("--address", action="append", help=f"address/prefix of the device, repeatable "
                        f"(default {' and '.join(DEFAULT_ADDRESSES)})")
    parser.add_argument("--batch-size", type=int, default=64, help="packets per batch (default 64)")
    return parser


def open_device(args: argparse.Namespace, program: str) -> fasttun.Tun | None:
    """The device the arguments name, up with its addresses; None (the reason printed) if it cannot be opened."""
    try:
        return fasttun.Tun(args.name, addresses=args.address or DEFAULT_ADDRESSES, up=True)
    except (fasttun.TunError, ValueError) as exc:
        print(f"{program}: cannot open {args.name}: {exc}", file=sys.stderr)
        return None


def main(argv: list[str]) -> int:
    args = argument_parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    tun = open_device(args, "echo")
    if tun is None:
        return 2
    with tun:
        responder = Responder(tun)
        with tun.start_reader(responder, batch_size=args.batch_size):
            print(f"echo: answering pings behind {tun.name} ({', '.join(map(str, tun.addresses))}); "
                  f"stop with Ctrl-C", flush=True)
            while not stop.wait(0.5):   # Windows runs the signal handler only between waits
                pass
        print(f"echo: {responder.report()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
