"""What ``fasttun bench`` says about time on stderr: the planned total before the first run, and as each scenario
starts, how long it and everything after it should take. It only prints; the runner times a run from outside
``Variant.run``, so nothing here is inside a measurement."""

from __future__ import annotations

import math
from typing import TextIO

EXPECTED_VARIANTS = {"pair": 7, "rx": 9, "rx-live": 3, "tx": 4, "latency": 3, "forward": 8, "tunnel": 9, "udp": 2,
                     "soak": 1}
"""How many variants each scenario measures with the default --batch, for the plan printed before anything is set
up (a scenario's real variants are counted once it is set up; tests/test_bench_smoke.py compares the two)."""

RUN_OVERHEAD_S = 0.3
"""A first guess at what one run takes beyond --seconds (starting readers, processes, iperf3); replaced by the
average of the runs so far as soon as one has ended."""
SETUP_S = 1.0
"""A first guess at setting up one scenario (namespaces, devices, building a C baseline), likewise replaced."""


def duration(seconds: float) -> str:
    """"8 s", "2 min 05 s", "1 h 02 min"."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Plan:
    """The scenarios that will run (skipped ones are not counted) and what their runs took so far."""

    def __init__(self, names: list[str], runnable: list[bool], seconds: float, repeat: int, out: TextIO) -> None:
        self.names = names
        self.seconds = seconds
        self.repeat = repeat
        self.out = out
        self.runs = [EXPECTED_VARIANTS.get(n, 1) * repeat if ok else 0 for n, ok in zip(names, runnable)]
        self.setups = [ok for ok in runnable]
        self.run_count = 0
        self.run_total = 0.0
        self.setup_count = 0
        self.setup_total = 0.0

    def _per_run(self) -> float:
        return self.run_total / self.run_count if self.run_count else self.seconds + RUN_OVERHEAD_S

    def _per_setup(self) -> float:
        return self.setup_total / self.setup_count if self.setup_count else SETUP_S

    def left(self, first: int) -> float:
        """What scenarios first.. should still take (from the start of scenario first's runs)."""
        later = range(first + 1, len(self.names))
        return (sum(self.runs[first:]) * self._per_run()
                + sum(1 for i in later if self.setups[i]) * self._per_setup())

    def start(self) -> float:
        """Prints the plan; returns the estimate of the whole run."""
        total = self.left(0) + (self._per_setup() if self.setups and self.setups[0] else 0.0)
        count = sum(1 for ok in self.setups if ok)
        if count == 0:
            print(f"fasttun bench: none of {', '.join(self.names)} can run here", file=self.out, flush=True)
            return 0.0
        variants = sum(self.runs) // self.repeat
        print(f"fasttun bench: {count} scenario{'s' if count != 1 else ''}, about {variants} variants x "
              f"{self.repeat} run{'s' if self.repeat != 1 else ''} of {self.seconds:g} s: ~{duration(total)} "
              "in all (estimated)", file=self.out, flush=True)
        return total

    def label(self, index: int) -> str:
        return f"[{index + 1}/{len(self.names)}] {self.names[index]}"

    def skipped(self, index: int) -> None:
        self.runs[index] = 0
        self.setups[index] = False

    def setup_failed(self, index: int, took: float) -> None:
        self.setup_took(took)
        self.skipped(index)

    def setup_took(self, took: float) -> None:
        self.setup_count += 1
        self.setup_total += took

    def scenario(self, index: int, variants: int) -> None:
        """Scenario index is set up with this many variants that can run: prints what it and the rest take."""
        self.runs[index] = variants * self.repeat
        this = self.runs[index] * self._per_run()
        print(f"{self.label(index)}: {variants} variant{'s' if variants != 1 else ''} x {self.repeat} "
              f"run{'s' if self.repeat != 1 else ''}, ~{duration(this)}; ~{duration(self.left(index))} left in all",
              file=self.out, flush=True)

    def run_took(self, index: int, took: float) -> None:
        self.run_count += 1
        self.run_total += took
        self.runs[index] = max(0, self.runs[index] - 1)

    def variant_failed(self, index: int, runs_not_done: int) -> None:
        self.runs[index] = max(0, self.runs[index] - runs_not_done)

    def done(self, took: float, planned: float) -> None:
        plan = f" (planned ~{duration(planned)})" if planned > 0 else ""
        print(f"fasttun bench: done in {duration(took)}{plan}", file=self.out, flush=True)
