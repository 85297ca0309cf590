"""The benchmark harness works end to end: `python -m fasttun bench --smoke` runs every scenario briefly and
every row comes back with positive, finite numbers or an explicit reason (missing, skipped). No timing is
asserted: the numbers of a smoke run mean nothing."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fasttun
from conftest import IN_CI
ROOT = Path(__file__).resolve().parent.parent
ALL = ["pair", "rx", "rx-live", "tx", "latency", "forward", "tunnel", "udp"]
NEEDS_ROOT = {"rx", "rx-live", "tx", "latency", "forward", "tunnel"}


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Runs the smoke bench; the JSON document gets the child's pid under "_pid" (its namespaces' names)."""
    out = tmp_path / "bench.json"
    # The installed fasttun (as the tests use it), with the C baselines of this checkout.
    env = dict(os.environ)
    env.pop("FASTTUN_BENCH_DIR", None)  # the baselines shipped in the package
    argv = [sys.executable, "-m", "fasttun", "bench", "--smoke", "--json", str(out), *args]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as child:
        try:
            stdout, stderr = child.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            child.terminate()   # the harness turns SIGTERM into a clean-up
            stdout, stderr = child.communicate(timeout=30)
            pytest.fail(f"the smoke bench took more than 240 s:\n{stderr}")
    proc = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
    assert out.exists(), f"no JSON written (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    doc = json.loads(out.read_text())
    doc["_pid"] = child.pid
    return proc, doc


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    return run_bench(tmp_path_factory.mktemp("bench"))


def test_every_scenario_reports_sane_numbers_or_a_reason(smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    proc, doc = smoke
    rows = doc["rows"]
    assert {r["scenario"] for r in rows} == set(ALL), proc.stderr
    for row in rows:
        where = f"{row['scenario']} / {row['variant']}"
        if row["status"] == "ok":
            assert row["samples"], where
            for s in row["samples"]:
                numbers = [s["pps"], s["gbps"], *s["extra"].values()]
                assert all(math.isfinite(x) for x in numbers), (where, s)
                assert s["pps"] > 0 and s["gbps"] > 0, (where, s)
        else:
            assert row["status"] in ("missing", "skipped"), (where, row["status"], row["reason"], proc.stderr)
            assert row["reason"], where
    assert proc.returncode == 0, proc.stderr


def test_table_names_every_scenario(smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    proc, _ = smoke
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["scenario", "variant", "packets/s", "Gbit/s", "ratio", "spread"]
    for name in ALL:
        assert any(line.startswith(name + " ") for line in lines), name


def test_pair_needs_no_privileges_and_has_a_baseline(smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    _, doc = smoke
    pair = [r for r in doc["rows"] if r["scenario"] == "pair"]
    assert all(r["status"] == "ok" for r in pair)
    base = [r for r in pair if r["baseline"]]
    assert len(base) == 1 and base[0]["ratio"] == pytest.approx(1.0)


def test_udp_needs_no_privileges_and_compares_with_its_baseline(
        smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    # On Linux: recvmmsg/sendmmsg with GSO/GRO against the same calls without offload (no per-datagram path here;
    # the Windows variants are checked under Wine, tests/test_wintun_python.py)
    _, doc = smoke
    udp = [r for r in doc["rows"] if r["scenario"] == "udp"]
    assert [r["status"] for r in udp] == ["ok", "ok"], udp
    batched, base = udp
    assert batched["variant"].startswith("batched: sendmmsg") and not batched["baseline"], udp
    assert base["baseline"] and "no GSO/GRO" in base["variant"] and base["ratio"] == pytest.approx(1.0), udp
    assert batched["ratio"] > 0 and all(r["note"] == "" for r in udp), udp
    for r in udp:
        assert r["extra"]["datagrams_per_send_call"] >= 1 and r["extra"]["datagrams_per_receive_call"] >= 1, r
        assert 0 <= r["extra"]["loss_pct"] <= 100, r


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's answer")
def test_udp_refuses_the_per_datagram_path_on_linux() -> None:
    from fasttun._bench.udp import _PerDatagramEndpoint

    with pytest.raises(fasttun.TunError, match="Windows' fallback path"):
        _PerDatagramEndpoint(bind=("127.0.0.1", 0))


def missing_tool(row: dict) -> bool:
    """A row that could not run because a command it drives (ping, iperf3) is not installed."""
    return row["status"] == "missing" and "is not installed" in row["reason"]


@pytest.mark.skipif(not is_root(), reason="the namespaced scenarios need root")
def test_as_root_the_root_scenarios_ran(smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    _, doc = smoke
    without_tools = set()
    for row in doc["rows"]:
        if row["scenario"] in NEEDS_ROOT:
            assert row["status"] != "skipped", row
            if row["baseline"] and missing_tool(row):
                without_tools.add(row["reason"])
            elif row["baseline"]:
                assert row["status"] == "ok", row   # the C baselines build and run wherever the tests run
    plain = [r for r in doc["rows"] if r["scenario"] == "tunnel" and "forwards in C" in r["variant"]]
    assert len(plain) == 1, [r["variant"] for r in doc["rows"] if r["scenario"] == "tunnel"]
    if plain[0]["status"] == "ok":  # its readers slept while iperf3 ran: the figure is there and counted
        assert all(s["extra"]["reader_sleeps_per_s"] > 0 for s in plain[0]["samples"]), plain[0]
    else:
        without_tools.add(plain[0]["reason"])
    if without_tools:  # the rest was checked; these baselines wait for their tool
        why = "; ".join(sorted(without_tools))
        if IN_CI:
            pytest.fail(f"CI must run every baseline, but {why}")
        pytest.skip(why)


@pytest.mark.skipif(is_root(), reason="checks what an unprivileged user sees")
def test_without_root_the_root_scenarios_are_skipped_with_a_reason(
        smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    _, doc = smoke
    for row in doc["rows"]:
        if row["scenario"] in NEEDS_ROOT:
            assert row["status"] == "skipped" and "root" in row["reason"], row


@pytest.mark.skipif(not is_root(), reason="the namespaces are only created as root")
def test_no_namespace_is_left_behind(smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    netns = Path("/run/netns")
    left = [p.name for p in netns.iterdir()] if netns.is_dir() else []
    mine = [n for n in left if n.startswith(f"ftb-{smoke[1]['_pid']}-")]
    assert mine == []


def test_unknown_scenario_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fasttun", "bench", "nonsense"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown scenario 'nonsense'" in proc.stderr


def test_progress_gives_the_plan_then_each_scenario_with_the_time_left(
        smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    proc, _ = smoke
    lines = proc.stderr.splitlines()
    duration = r"(\d+ s|\d+ min \d\d s|\d+ h \d\d min)"
    runnable = ALL if is_root() else [n for n in ALL if n not in NEEDS_ROOT]
    plan = re.fullmatch(rf"fasttun bench: (\d+) scenarios?, about (\d+) variants x 1 run of 0\.3 s: ~{duration} "
                        r"in all \(estimated\)", lines[0])
    assert plan, lines[0]
    assert int(plan.group(1)) == len(runnable)
    # One header per scenario, in order, before that scenario's first run; skipped ones say why.
    headers = [i for i, line in enumerate(lines) if re.match(r"\[\d+/\d+\] ", line)]
    assert [lines[i].split()[:2] for i in headers] == [[f"[{k + 1}/{len(ALL)}]", f"{n}:"] for k, n in
                                                       enumerate(ALL)], proc.stderr
    for k, (i, name) in enumerate(zip(headers, ALL)):
        if name in runnable:
            assert re.fullmatch(rf"\[{k + 1}/{len(ALL)}\] {re.escape(name)}: \d+ variants? x 1 run, ~{duration}; "
                                rf"~{duration} left in all", lines[i]), lines[i]
            runs = [j for j, line in enumerate(lines) if line.startswith(f"{name} [1/1] ")]
            if f"{name}: 0 variants " in lines[i]:  # every variant said what it misses, before the header
                assert not runs and any(re.match(rf"{re.escape(name)}: .*: missing: ", ln) for ln in lines[:i]), \
                    (name, proc.stderr)
                continue
            assert runs and runs[0] > i, (name, proc.stderr)
        else:
            assert "skipped" in lines[i], lines[i]
    assert re.fullmatch(rf"fasttun bench: done in {duration} \(planned ~{duration}\)", lines[-1]), lines[-1]


def test_the_plan_expects_the_variants_the_scenarios_have(
        smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    # The plan before the first run counts variants from a table (setting a scenario up is what tells the real
    # number): it must match what the scenarios measure with the default --batch.
    from fasttun._bench.progress import EXPECTED_VARIANTS

    _, doc = smoke
    assert set(EXPECTED_VARIANTS) == set(ALL) | {"soak"}
    for name in ALL:
        rows = [r for r in doc["rows"] if r["scenario"] == name]
        if any(r["status"] == "skipped" or r["variant"] == "(setup)" for r in rows):
            continue
        assert len(rows) == EXPECTED_VARIANTS[name], (name, [r["variant"] for r in rows])


def test_ratios_pair_the_runs_of_each_round() -> None:
    from fasttun._bench.report import details
    from fasttun._bench.results import Row, Sample, fill_ratios

    def row(name: str, gbps: list[float], baseline: bool = False) -> Row:
        return Row("tunnel", name, baseline, key="gbps", samples=[Sample(pps=1.0, gbps=g) for g in gbps])

    # the load halves in round 2: by the medians 0.67x, round by round the variant is at 0.8x or better
    base = row("kernel", [10.0, 5.0, 9.0], baseline=True)
    mine = row("fasttun", [8.0, 4.5, 6.0])
    short = row("fasttun, one run failed", [8.0, 4.5])
    fill_ratios([mine, base, short])
    assert mine.ratio == pytest.approx(6.0 / 9.0)
    assert mine.round_ratios == pytest.approx([0.8, 0.9, 6.0 / 9.0])
    assert details(mine).startswith("per round 0.80x (0.67-0.90)")
    assert short.round_ratios == [] and "per round" not in details(short)  # runs no longer paired
    assert base.round_ratios == [] and details(base).startswith("baseline")
    assert mine.to_json()["round_ratios"] == pytest.approx([0.8, 0.9, 6.0 / 9.0])
