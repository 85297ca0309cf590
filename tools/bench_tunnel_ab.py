"""Two builds of fasttun side by side in `fasttun bench tunnel`'s setup: the tunnel of each checkout, alternating.

    python tools/bench_tunnel_ab.py OLD_CHECKOUT NEW_CHECKOUT [--repeat 5] [--seconds 3] [--encrypted]

Each checkout is a fasttun source tree whose extension is built in place (``python setup.py build_ext
--inplace``); its ``examples/udp_tunnel.py`` runs with ``PYTHONPATH`` pointing at its ``src``. The runs alternate
(old, new, old, new, ...) in the bench's two namespaces, so a change of the machine's load hits both; it prints
each run, the medians of iperf3's Gbit/s and of the tunnel processes' CPU seconds per GB, and the median of the
ratios of each round's two runs. Root, iperf3 and a
fasttun importable by this interpreter (for the harness) are needed. For comparing a change, not for the
published tables: those come from ``fasttun bench tunnel``."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--encrypted", action="store_true", help="the ChaCha20-Poly1305 tunnel (--key-file)")
    args = parser.parse_args(argv)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    for name, root in trees.items():
        if not (root / "examples" / "udp_tunnel.py").is_file() or not list((root / "src" / "fasttun").glob("_core*")):
            parser.error(f"{name}: {root} is not a fasttun checkout with its extension built in place")

    from fasttun._bench.scenario import Settings
    from fasttun._bench.system import Baselines
    from fasttun._bench.tunnel import TunnelScenario

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with contextlib.ExitStack() as stack:
        scenario = TunnelScenario()
        scenario.variants(Settings(args.seconds, args.repeat, 64, 1024, False, Baselines()), stack)
        extra = ["--key-file", scenario.key_file] if args.encrypted else []
        for _ in range(args.repeat):
            for name, root in trees.items():
                scenario.example = root / "examples" / "udp_tunnel.py"
                os.environ["PYTHONPATH"] = str(root / "src")
                sample = scenario._fasttun(extra)
                cpu = sample.extra.get("tunnel_cpu_s_per_gb", float("nan"))
                results[name].append((sample.gbps, cpu))
                print(f"{name}: {sample.gbps:.2f} Gbit/s, tunnel CPU {cpu:.2f} s/GB", flush=True)
    for name, runs in results.items():
        print(f"median {name}: {statistics.median(g for g, _ in runs):.2f} Gbit/s, "
              f"tunnel CPU {statistics.median(c for _, c in runs):.2f} s/GB")
    # Each round's new run against the old run beside it: a change of the machine's load between rounds cancels out.
    pairs = list(zip(results["old"], results["new"]))
    rates = [n[0] / o[0] for o, n in pairs if o[0] > 0]
    cpus = [n[1] / o[1] for o, n in pairs if o[1] > 0 and math.isfinite(n[1] / o[1])]
    if rates and cpus:
        print(f"per round, new/old: rate {statistics.median(rates):.3f} (new ahead in {sum(r > 1 for r in rates)} "
              f"of {len(rates)}), CPU per GB {statistics.median(cpus):.3f} (new lower in {sum(c < 1 for c in cpus)} "
              f"of {len(cpus)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
