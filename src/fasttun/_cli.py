"""The ``fasttun`` command: ``info``, ``bench`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Optional


def _global_options(dest_prefix: str) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (``fasttun -v demo``, ``fasttun demo -v``):
    the main parser and each subcommand's parser keep them under their own dest, and ``run`` adds them up."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("-v", "--verbose", dest=dest_prefix + "verbose", action="count", default=0,
                       help="log diagnostics to stderr (-vv: debug)")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fasttun", description="Fast TUN interfaces for Python: tools.",
                                     parents=[_global_options("")])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    after = [_global_options("sub_")]

    info = sub.add_parser("info", help="platform, backend, versions, kernel TUN features and privileges",
                          description="What this machine offers fasttun: platform, backend, versions, the TUN "
                                      "driver's features, offloads, privileges and the tools the benchmarks use.",
                          parents=after)
    info.add_argument("--json", action="store_true",
                      help="print the same facts as one JSON object (the keys are listed in docs/guides/cli.md)")

    from fasttun._bench.catalog import NAMES, ONLY_WHEN_NAMED

    bench = sub.add_parser(
        "bench",
        parents=after,
        help="measure fasttun next to its baselines on this machine",
        description="Measures fasttun next to its baselines (a C per-packet loop, python-pytun) in the same run, "
                    "alternating runs, and prints medians and spread. Scenarios: pair and udp (no privileges; udp: "
                    "UdpEndpoint on loopback, batched against one datagram per call), rx, tx, latency, forward, "
                    "tunnel (root: they create their own network namespaces and TUN devices, and always remove "
                    "them). soak runs only when named: for --seconds S (default 30; hours by hand) "
                    "it streams sequence-numbered, checksummed packets through a pair and a TUN device into "
                    "readers, then checks that nothing was corrupt, duplicated or reordered, that every missing "
                    "packet is in a drop counter and that resident memory stayed flat; it prints a verdict and "
                    "exits 1 on failure.")
    bench.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                       help=f"which to run (default: all of {', '.join(NAMES)}; rx includes rx-live); "
                            f"only when named: {', '.join(ONLY_WHEN_NAMED)}")
    bench.add_argument("--seconds", type=float, default=None, metavar="S",
                       help="length of one measured run (default 2; forward rounds up to whole seconds; soak: "
                            "default 30, up to a week)")
    bench.add_argument("--repeat", type=int, default=None, metavar="R", help="runs per variant (default 3; soak: 1)")
    bench.add_argument("--size", type=int, default=64, metavar="BYTES",
                       help="IP packet size for pair, rx and tx, datagram size for udp (default 64)")
    bench.add_argument("--batch", type=int, default=1024, metavar="N",
                       help="reader batch size, and packets per send_batch (default 1024)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    bench.add_argument("--smoke", action="store_true",
                       help="a short run that checks every scenario works (0.3 s, 1 repeat; not for numbers)")

    from fasttun import _demo

    demo = sub.add_parser("demo", help="a guided demonstration", description=_demo.__doc__, parents=after)
    _demo.add_arguments(demo)
    return parser


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    verbose = args.verbose + getattr(args, "sub_verbose", 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "info":
        from fasttun._info import print_info
        return print_info(as_json=args.json)
    if args.command == "bench":
        return _bench(args, argv)
    if args.command == "demo":
        from fasttun import _demo
        return _demo.run(args)
    _parser().print_help()
    return 2


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    # Turn SIGTERM into an exception so that every namespace, device and child process is cleaned up.
    raise KeyboardInterrupt(f"signal {signum}")


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    from fasttun._bench import catalog, report
    from fasttun._bench.results import FAILED, OK
    from fasttun._bench.runner import run_scenarios
    from fasttun._bench.scenario import Settings
    from fasttun._bench.system import Baselines

    soak_only = bool(args.scenarios) and all(n in catalog.ONLY_WHEN_NAMED for n in args.scenarios)
    default_seconds = 0.3 if args.smoke else 30.0 if soak_only else 2.0
    seconds = args.seconds if args.seconds is not None else default_seconds
    repeat = args.repeat if args.repeat is not None else (1 if args.smoke or soak_only else 3)
    longest = 7 * 86400 if soak_only else 600
    if not 0.05 <= seconds <= longest:
        print(f"fasttun bench: --seconds must be between 0.05 and {longest}"
              f"{' (a week)' if soak_only else ' (only soak runs longer)'}", file=sys.stderr)
        return 2
    if not 1 <= repeat <= 100:
        print("fasttun bench: --repeat must be between 1 and 100", file=sys.stderr)
        return 2
    if not 28 <= args.size <= 1500:
        print("fasttun bench: --size must be between 28 and 1500 bytes (an IPv4/UDP packet within the MTU)",
              file=sys.stderr)
        return 2
    from fasttun import _core
    try:
        _core.check_limit("batch_size", args.batch)  # the reader's limit, as the C core words it
    except ValueError as exc:
        print(f"fasttun bench: --batch: {exc}", file=sys.stderr)
        return 2
    unknown = [n for n in args.scenarios if n not in catalog.KNOWN]
    if unknown:
        print(f"fasttun bench: unknown scenario {unknown[0]!r}; known: {', '.join(catalog.KNOWN)}", file=sys.stderr)
        return 2
    names = catalog.expand(args.scenarios)
    settings = Settings(seconds=seconds, repeat=repeat, size=args.size, batch=args.batch, smoke=args.smoke,
                        baselines=Baselines())
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        rows = run_scenarios([catalog.make(n) for n in names], settings)
    except KeyboardInterrupt:
        print("fasttun bench: interrupted; namespaces and devices were removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report.table(rows))
    if args.json:
        report.write_json(args.json, report.document(rows, settings, argv))
    return 1 if any(r.status == FAILED for r in rows) or not any(r.status == OK for r in rows) else 0
