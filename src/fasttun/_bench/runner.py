"""Runs scenarios: variants alternate within each repeat (fasttun, baseline, fasttun, baseline, ...), every
run is reported on stderr as it ends, and each variant becomes one Row."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import TextIO

from fasttun._bench.progress import Plan
from fasttun._bench.results import FAILED, MISSING, OK, SKIPPED, Row, fill_ratios
from fasttun._bench.scenario import Scenario, Settings
from fasttun._bench.system import remove_stale_namespaces
from fasttun._host import root_problem

log = logging.getLogger("fasttun.bench")


def _fmt_rate(pps: float) -> str:
    return f"{pps / 1e6:.2f} Mpps" if pps >= 1e5 else f"{pps:,.0f} pps"


def run_scenarios(scenarios: list[Scenario], settings: Settings, progress: TextIO = sys.stderr) -> list[Row]:
    rows: list[Row] = []
    problem = root_problem()
    if problem is None and any(s.needs_root for s in scenarios):
        remove_stale_namespaces()
    plan = Plan([s.name for s in scenarios], [not (s.needs_root and problem is not None) for s in scenarios],
                settings.seconds, settings.repeat, progress)
    began, planned = time.monotonic(), plan.start()
    for index, scenario in enumerate(scenarios):
        if scenario.needs_root and problem is not None:
            print(f"{plan.label(index)}: skipped: {problem}", file=progress, flush=True)
            plan.skipped(index)
            rows.append(Row(scenario.name, "(all variants)", baseline=False, status=SKIPPED, reason=problem,
                            key=scenario.key))
            continue
        rows.extend(_run_one(scenario, settings, progress, plan, index))
    plan.done(time.monotonic() - began, planned)
    fill_ratios(rows)
    return rows


def _run_one(scenario: Scenario, settings: Settings, progress: TextIO, plan: Plan, index: int) -> list[Row]:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            variants = scenario.variants(settings, stack)
        except Exception as exc:  # noqa: BLE001 - reported as the scenario's failure, the others still run
            log.debug("setting up %s failed", scenario.name, exc_info=True)
            print(f"{plan.label(index)}: setup failed: {exc}", file=progress, flush=True)
            plan.setup_failed(index, time.monotonic() - started)
            return [Row(scenario.name, "(setup)", baseline=False, status=FAILED, reason=str(exc), key=scenario.key)]
        plan.setup_took(time.monotonic() - started)
        rows = [Row(scenario.name, v.name, baseline=v.baseline, key=scenario.key, note=v.note) for v in variants]
        for v, row in zip(variants, rows):
            if v.missing:
                row.status, row.reason = MISSING, v.missing
                print(f"{scenario.name}: {v.name}: missing: {v.missing}", file=progress, flush=True)
        plan.scenario(index, sum(1 for row in rows if row.status == OK))
        for r in range(settings.repeat):
            for v, row in zip(variants, rows):
                if row.status != OK:
                    continue
                print(f"{scenario.name} [{r + 1}/{settings.repeat}] {v.name} ...", end="", file=progress,
                      flush=True)
                run_began = time.monotonic()
                try:
                    sample = v.run()
                except KeyboardInterrupt:
                    print(" interrupted", file=progress, flush=True)
                    raise
                except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the others
                    log.debug("%s / %s failed", scenario.name, v.name, exc_info=True)
                    row.status, row.reason = FAILED, f"{type(exc).__name__}: {exc}"
                    print(f" failed: {row.reason}", file=progress, flush=True)
                    plan.run_took(index, time.monotonic() - run_began)
                    plan.variant_failed(index, settings.repeat - r - 1)
                    continue
                plan.run_took(index, time.monotonic() - run_began)
                row.samples.append(sample)
                detail = ""
                if "p50_us" in sample.extra:
                    detail = f", p50 {sample.extra['p50_us']:.0f} us"
                print(f" {_fmt_rate(sample.pps)}, {sample.gbps:.3f} Gbit/s{detail}", file=progress, flush=True)
    log.debug("%s took %.1f s", scenario.name, time.monotonic() - started)
    return rows
