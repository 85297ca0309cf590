"""The ``fasttun`` command as users type it: ``info`` and ``info --json``, the global options before and after the
command's name, and the demo's options."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fasttun
from conftest import require_root_environment

ROOT = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux")


def fasttun_cmd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fasttun", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def rows(text: str) -> dict[str, str]:
    """The key/value rows of ``fasttun info`` (a key, two or more spaces, the value)."""
    out = {}
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


@pytest.fixture(scope="module")
def info_json() -> dict:
    proc = fasttun_cmd("info", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)   # stdout is the JSON object and nothing else
    assert isinstance(doc, dict)
    return doc


def docs_json_section() -> str:
    text = (ROOT / "docs" / "guides" / "cli.md").read_text()
    start = text.index("`fasttun info --json`")
    end = text.find("\n#", start)
    return text[start:end if end != -1 else None]


def test_info_json_holds_the_facts_with_their_types(info_json: dict) -> None:
    doc = info_json
    assert doc["fasttun"] == fasttun.__version__
    assert doc["python"] == sys.version.split()[0]
    assert doc["sys_platform"] == sys.platform
    assert doc["cpus"] == os.cpu_count()
    assert isinstance(doc["can_create_devices"], bool)
    assert doc["bench_root_problem"] is None or isinstance(doc["bench_root_problem"], str)
    if LINUX:
        assert doc["backend"] == "linux" and doc["wintun"] is None
        if doc["tun_features_error"] is None:
            assert doc["tun_features"] == fasttun.features()
        else:
            assert doc["tun_features"] is None
        if doc["offloads_error"] is None:
            assert set(doc["offloads"]) == {"tso", "uso", "udp_gso", "udp_gro"}
            assert all(v is None or isinstance(v, bool) for v in doc["offloads"].values())
            assert (doc["offloads"]["udp_gso"], doc["offloads"]["udp_gro"]) == tuple(fasttun.udp_offloads().values())
        assert set(doc["tools"]) == {"ip", "ping", "iperf3", "cc"}
        assert all(isinstance(v, bool) for v in doc["tools"].values())


def test_info_json_says_what_the_text_says(info_json: dict) -> None:
    proc = fasttun_cmd("info")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = rows(proc.stdout)
    assert text["fasttun"] == info_json["fasttun"]
    assert text["platform"] == info_json["platform"]
    assert text["cpus"] == str(info_json["cpus"])
    assert text["create devices"].startswith("yes" if info_json["can_create_devices"] else "no")
    assert text["bench (root scenarios)"].startswith("yes" if info_json["bench_root_problem"] is None else "no")
    if LINUX:
        assert text["backend"] == "linux (/dev/net/tun)"
        feats = info_json["tun_features"]
        if feats is not None:
            assert text["tun driver"].split(", ") == [k for k, v in feats.items() if v]
            assert text["multi-queue"] == ("yes" if feats["multi_queue"] else "no")
        tools = dict(item.split() for item in text["tools"].split(", "))
        assert {k: v == "yes" for k, v in tools.items()} == info_json["tools"]


def test_the_docs_document_every_info_json_key(info_json: dict) -> None:
    documented = set(re.findall(r"`([a-z_0-9]+)`", docs_json_section()))
    keys = set(info_json)
    for nested in ("offloads", "tools"):
        if isinstance(info_json[nested], dict):
            keys |= set(info_json[nested])
    assert keys <= documented, keys - documented
    # Windows' nested keys are documented too, though this machine cannot show them.
    assert {"dll_loaded", "dll_source", "dll_error", "driver_running", "driver_version", "driver_error"} <= documented


@pytest.mark.parametrize("argv", [["-vv", "info"], ["info", "-vv"], ["-v", "info", "-v"], ["--verbose", "info", "-v"]],
                         ids=["before", "after", "both", "long"])
def test_global_options_work_before_and_after_the_command(argv: list[str]) -> None:
    if not LINUX:
        pytest.skip("the debug line counted on here is the UDP offload probe of Linux")
    proc = fasttun_cmd(*argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backend" in rows(proc.stdout)
    # Two -v in all: debug logging on stderr (info's UDP offload probe opens a socket and logs it).
    assert "DEBUG fasttun" in proc.stderr, proc.stderr
    quiet = fasttun_cmd("info")
    assert "DEBUG" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr


def test_one_v_is_info_not_debug() -> None:
    if not LINUX:
        pytest.skip("the debug line counted on here is the UDP offload probe of Linux")
    proc = fasttun_cmd("info", "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DEBUG" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("argv", [["-v", "demo", "--count", "0"], ["demo", "-v", "--count", "10001"],
                                  ["demo", "--interval", "11"], ["demo", "--count", "two"]])
def test_demo_options_are_checked_whatever_the_order(argv: list[str]) -> None:
    proc = fasttun_cmd(*argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    option = "--count" if "--count" in argv else "--interval"
    assert f"argument {option}" in proc.stderr, proc.stderr
    assert "1..10000" in proc.stderr or "0..10" in proc.stderr or "integer" in proc.stderr, proc.stderr


def test_demo_help_lists_its_options_and_the_global_ones() -> None:
    proc = fasttun_cmd("-v", "demo", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--count", "--interval", "--verbose"):
        assert option in proc.stdout, proc.stdout


def test_no_command_prints_the_usage() -> None:
    proc = fasttun_cmd("-v")
    assert proc.returncode == 2 and "usage: fasttun" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.root
@pytest.mark.parametrize("argv", [["-v", "demo", "--count", "3", "--interval", "0"],
                                  ["demo", "--count", "3", "-v", "--interval", "0"]], ids=["before", "after"])
def test_demo_runs_with_global_options_in_either_place(argv: list[str]) -> None:
    require_root_environment()
    proc = fasttun_cmd(*argv, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo OK" in proc.stdout
    # --count 3: three echo requests per address family, all answered.
    assert re.search(r"ping 10\.77\.0\.2: 3/3 replies", proc.stdout), proc.stdout
    assert re.search(r"ping fd00:77::2: 3/3 replies", proc.stdout), proc.stdout


def without_privileges(*argv: str) -> list[str]:
    """A command line that runs argv without CAP_NET_ADMIN and CAP_SYS_ADMIN: as root, setpriv drops them from
    the bounding set (root then lacks them after exec, as in a container without --cap-add); a user who is not
    root lacks them anyway."""
    if os.geteuid() != 0:
        return list(argv)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return [setpriv, "--bounding-set=-net_admin,-sys_admin", "--inh-caps=-net_admin,-sys_admin", *argv]


@pytest.mark.parametrize("argv", [["demo"], ["demo", "--count", "1", "-v"]], ids=["plain", "verbose"])
def test_demo_without_privileges_says_what_it_needs(argv: list[str]) -> None:
    if not LINUX:
        pytest.skip("the demo's privileges are Linux capabilities")
    proc = subprocess.run(without_privileges(sys.executable, "-m", "fasttun", *argv), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "fasttun demo needs root" in proc.stderr and "CAP_NET_ADMIN" in proc.stderr, proc.stderr
    # The same advice as fasttun info's.
    assert "setcap cap_net_admin+ep" in proc.stderr and "--device /dev/net/tun" in proc.stderr, proc.stderr
    assert "demo OK" not in proc.stdout


def test_the_library_info_and_demo_never_import_the_benchmark_harness():
    # Layers in one direction: only `fasttun bench` reaches the harness.
    code = ("import sys, fasttun, fasttun.aio, fasttun.pcap, fasttun.events, fasttun.icmp\n"
            "from fasttun import _info, _demo, _cli\n"
            "_info.facts()\n"
            "_demo._privilege_problem()\n"
            "assert not [m for m in sys.modules if m.startswith('fasttun._bench')], sorted(sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
