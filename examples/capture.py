"""Record what crosses a TUN device into a pcap or pcapng file (tcpdump, Wireshark and scapy read it).

    sudo python examples/capture.py --name ftcap0 --address 10.96.0.1/24 --write cap.pcapng --answer-pings
    # meanwhile: ping 10.96.0.2 ; afterwards: tcpdump -r cap.pcapng

A tee (``fasttun.pcap.tee``) makes the device write every packet it receives and every packet it sends into
the file, stamped with the time its batch arrived; pcapng also records the direction. With
``--answer-pings`` the reader answers echo requests, so replies appear in the capture too. Runs until SIGINT
or SIGTERM (or ``--count`` packets), then prints its counters and exits 0, or 1 if writing the file failed (a
full disk: the device went on, the capture stopped, and what it could not record is counted)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

import fasttun
from fasttun import icmp, pcap


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="ftcap0", help="device name (default ftcap0)")
    parser.add_argument("--address", action="append", help="address/prefix of the device, repeatable "
                        "(default 10.96.0.1/24)")
    parser.add_argument("--write", "-w", required=True, help="the capture file (.pcapng: pcapng, else pcap)")
    parser.add_argument("--answer-pings", action="store_true", help="reply to ICMP/ICMPv6 echo requests")
    parser.add_argument("--count", type=int, default=0, help="stop after this many received packets (0: never)")
    parser.add_argument("--snaplen", type=int, default=65535, help="bytes kept of each packet (default 65535)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.count < 0:
        print("capture: --count must be 0 or more", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        writer = pcap.open(args.write, snaplen=args.snaplen)
    except (OSError, ValueError) as exc:
        print(f"capture: cannot write {args.write}: {exc}", file=sys.stderr)
        return 2
    received = [0]
    try:
        tun = fasttun.Tun(args.name, addresses=args.address or ["10.96.0.1/24"], up=True)
    except (fasttun.TunError, ValueError) as exc:
        print(f"capture: cannot open {args.name}: {exc}", file=sys.stderr)
        with contextlib.suppress(OSError):
            writer.close()
        return 2
    with tun, pcap.tee(tun, writer):
        def on_batch(batch: fasttun.Batch) -> None:
            received[0] += len(batch)
            if args.answer_pings:
                replies = icmp.echo_replies(batch)
                if replies is not None:
                    tun.send_batch(replies)
            if args.count and received[0] >= args.count:
                stop.set()

        with tun.start_reader(on_batch):
            print(f"capture: recording {tun.name} into {args.write}; stop with Ctrl-C", flush=True)
            while not stop.wait(0.5):   # Windows runs the signal handler only between waits
                pass
        stats = tun.stats
    # A failed capture (a full disk) stopped itself and left the device running; it is reported here.
    error = writer.error
    try:
        writer.close()
    except OSError as exc:
        error = error or exc
    print(f"capture: {writer.packets} packets written ({received[0]} received, {stats.tx_packets} sent) "
          f"to {args.write}", flush=True)
    if error is not None:
        print(f"capture: writing {args.write} failed ({error}); {writer.dropped} packets not recorded",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
