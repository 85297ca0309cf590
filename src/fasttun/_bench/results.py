"""Measurements and their summaries: one Sample per run, one Row per scenario variant."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Optional

OK = "ok"
MISSING = "missing"    # the variant cannot run here: a baseline could not be built or found
SKIPPED = "skipped"    # the scenario needs something this process lacks (privileges)
FAILED = "failed"      # the variant ran and went wrong


@dataclasses.dataclass
class Sample:
    """What one run of one variant measured."""

    pps: float
    """Packets per second (the scenario says which packets)."""
    gbps: float
    """Gigabits per second of IP packets (forward: iperf3's TCP goodput)."""
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    """Scenario-specific numbers, e.g. p50_us, p99_us, idle_cpu_pct, drops."""

    def value(self, key: str) -> float:
        if key == "pps":
            return self.pps
        if key == "gbps":
            return self.gbps
        return self.extra[key]


@dataclasses.dataclass
class Row:
    """One variant of one scenario, summarised over its repeats."""

    scenario: str
    variant: str
    baseline: bool
    status: str = OK
    reason: str = ""
    key: str = "pps"
    """The number the ratio and the spread are computed on."""
    samples: list[Sample] = dataclasses.field(default_factory=list)
    ratio: Optional[float] = None
    """Median of ``key`` divided by the baseline's median of ``key``."""
    round_ratios: list[float] = dataclasses.field(default_factory=list)
    """``key`` divided by the baseline's in the same round, round by round (empty unless both ran every round).
    Variants alternate within a round, so a change of the machine's load between rounds cancels out here."""
    note: str = ""
    """What a reader of the numbers must know (the variant's note)."""

    def median(self, key: str) -> Optional[float]:
        values = [s.value(key) for s in self.samples if key in ("pps", "gbps") or key in s.extra]
        return statistics.median(values) if values else None

    @property
    def pps(self) -> Optional[float]:
        return self.median("pps")

    @property
    def gbps(self) -> Optional[float]:
        return self.median("gbps")

    @property
    def spread_pct(self) -> Optional[float]:
        """(max - min) / median of ``key`` over the repeats, in percent."""
        values = [s.value(self.key) for s in self.samples]
        if not values:
            return None
        mid = statistics.median(values)
        if mid == 0:
            return None
        return (max(values) - min(values)) / abs(mid) * 100.0

    def extras(self) -> dict[str, float]:
        """Medians of every scenario-specific number."""
        keys: list[str] = []
        for s in self.samples:
            keys.extend(k for k in s.extra if k not in keys)
        out: dict[str, float] = {}
        for k in keys:
            m = self.median(k)
            if m is not None:
                out[k] = m
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "variant": self.variant,
            "baseline": self.baseline,
            "status": self.status,
            "reason": self.reason,
            "note": self.note,
            "key": self.key,
            "pps": self.pps,
            "gbps": self.gbps,
            "ratio": self.ratio,
            "round_ratios": self.round_ratios,
            "spread_pct": self.spread_pct,
            "extra": self.extras(),
            "samples": [dataclasses.asdict(s) for s in self.samples],
        }


def fill_ratios(rows: list[Row]) -> None:
    """Sets each row's ratio against the baseline row of its scenario (when both have numbers)."""
    for row in rows:
        base = next((r for r in rows if r.scenario == row.scenario and r.baseline and r.status == OK), None)
        if base is None or row.status != OK:
            continue
        mine = row.median(row.key)
        theirs = base.median(row.key)
        if mine is not None and theirs:
            row.ratio = mine / theirs
        if row is not base and len(row.samples) == len(base.samples) > 1:
            pairs = [(a.value(row.key), b.value(row.key)) for a, b in zip(row.samples, base.samples)]
            if all(b for _, b in pairs):
                row.round_ratios = [a / b for a, b in pairs]
