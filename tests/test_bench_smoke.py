"""The benchmark harness works end to end: `python -m fasttun bench --smoke` runs every scenario briefly and
every row comes back with positive, finite numbers or an explicit reason (missing, skipped). No timing is
asserted: the numbers of a smoke run mean nothing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALL = ["pair", "rx", "rx-live", "tx", "latency", "forward", "tunnel"]
NEEDS_ROOT = {"rx", "rx-live", "tx", "latency", "forward", "tunnel"}


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Runs the smoke bench; the JSON document gets the child's pid under "_pid" (its namespaces' names)."""
    out = tmp_path / "bench.json"
    # The installed fasttun (as the tests use it), with the C baselines of this checkout.
    env = dict(os.environ, FASTTUN_BENCH_DIR=str(ROOT / "bench"))
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


@pytest.mark.skipif(not is_root(), reason="the namespaced scenarios need root")
def test_as_root_the_root_scenarios_ran(smoke: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    _, doc = smoke
    for row in doc["rows"]:
        if row["scenario"] in NEEDS_ROOT:
            assert row["status"] != "skipped", row
            if row["baseline"]:
                assert row["status"] == "ok", row   # the C baselines build and run wherever the tests run


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
