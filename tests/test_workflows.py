"""The GitHub workflows and the wheel configuration: linted, and listing the builds we intend."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {name} (.ci/run installs the dev extra: pip install '.[dev]')")
        pytest.skip(f"{name} is not installed (a maintainer's tool: pip install '.[dev]')")
    return path


def test_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    assert {"linux.yml", "wheels.yml"} <= names


def test_workflows_pass_actionlint():
    result = subprocess.run([tool("actionlint"), *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("platform,expected", [
    ("windows", {"cp311-win_amd64", "cp311-win_arm64", "cp313-win_amd64", "cp313-win_arm64"}),
    ("linux", {"cp311-manylinux_x86_64", "cp311-manylinux_aarch64"}),
])
def test_cibuildwheel_lists_the_intended_builds(platform, expected):
    # Run as a module of this interpreter: a cibuildwheel on PATH may belong to another environment.
    if importlib.util.find_spec("cibuildwheel") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have cibuildwheel (.ci/run installs the dev extra: pip install '.[dev]')")
        pytest.skip("cibuildwheel is not installed for this Python (a maintainer's tool: pip install '.[dev]')")
    result = subprocess.run([sys.executable, "-m", "cibuildwheel", "--print-build-identifiers", "--platform", platform],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ids = set(result.stdout.split())
    assert expected <= ids, expected - ids
    assert not any("win32" in i or "musllinux" in i for i in ids)
    assert not any(i.startswith("cp313t") for i in ids), "free-threaded builds are out of scope"


def test_windows_wheels_stage_a_checked_dll():
    text = (ROOT / "tools" / "stage_wintun.py").read_text()
    wheels = (ROOT / ".github" / "workflows" / "wheels.yml").read_text()
    assert "07c256185d6ee3652e09fa55c0b673e2624b565e02c4b9091c79ca7d2f24ef51" in text
    assert "stage_wintun.py ${{ matrix.wintun }}" in wheels


def test_the_cibuildwheel_release_path_agrees_with_the_local_build():
    """The GitHub release (cibuildwheel) and tools/build_wheels.py: the same CPython versions, platform tags and
    wintun.dll bytes."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+ (tomllib)")
    sys.path.insert(0, str(ROOT / "tools"))
    import build_wheels
    import wintun_dll

    with open(ROOT / "pyproject.toml", "rb") as f:
        cfg = tomllib.load(f)["tool"]["cibuildwheel"]
    assert cfg["build"].split() == [f"cp{v.replace('.', '')}-*" for v in build_wheels.VERSIONS]
    assert "t-" not in cfg["build"]  # free-threaded builds: not until there is an interpreter to test them on
    linux = cfg["linux"]
    assert linux["manylinux-x86_64-image"] == linux["manylinux-aarch64-image"] == "manylinux2014"
    assert build_wheels.Target("manylinux_x86_64", "3.9").platform_tag.startswith("manylinux_2_17_x86_64.")
    assert cfg["windows"]["archs"] == ["AMD64", "ARM64"]
    assert {"win_amd64", "win_arm64"} <= set(build_wheels.PLATFORMS)
    # The workflow stages the DLL from the release zip; stage_wintun.py holds it to the hashes the local build uses.
    stage = (ROOT / "tools" / "stage_wintun.py").read_text()
    assert "VERSION = wintun_dll.VERSION" in stage and "wintun_dll.check_bytes(arch, dll, URL)" in stage
    assert set(wintun_dll.DLL_SHA256) >= {"amd64", "arm64"}
