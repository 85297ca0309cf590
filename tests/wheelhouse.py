"""The release wheels the tests install: built once per test session by tools/build_wheels.py (which checks each
one as it builds it) into tests/.build/wheelhouse/.

Which ones: win_amd64, win_arm64 and manylinux_x86_64 for the oldest and the newest CPython (3.9, 3.13), and the
sdist; with FASTTUN_RELEASE_CHECK=1 every version (3.9 to 3.13), as a release needs. Outside CI a missing tool
skips with the install hint; in CI it fails."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / ".build" / "wheelhouse"
TOOL = ROOT / "tools" / "build_wheels.py"
PLATFORMS = ("win_amd64", "win_arm64", "manylinux_x86_64", "sdist")
ALL_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def release_check() -> bool:
    return os.environ.get("FASTTUN_RELEASE_CHECK") == "1"


def versions() -> tuple[str, ...]:
    return ALL_VERSIONS if release_check() else ("3.9", "3.13")


def skip_or_fail(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI must build and test the wheels, but {why}")
    pytest.skip(why)


@functools.lru_cache(maxsize=None)
def _build() -> tuple[int, str, str]:
    for old in OUT.glob("fasttun-*"):
        old.unlink()
    cmd = [sys.executable, str(TOOL), "--out", str(OUT)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    for v in versions():
        cmd += ["--python", v]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


def build() -> list[Path]:
    """Every wheel and the sdist of this session's build (building them on the first call)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the release wheels are built on Linux")
    code, out, err = _build()
    if code == 3:  # a tool is missing: the message says which and how to install it
        skip_or_fail(err.strip().splitlines()[-1])
    assert code == 0, f"tools/build_wheels.py exited {code}:\n{out}\n{err[-6000:]}"
    return sorted(OUT.glob("fasttun-*"))


def wheel(platform: str, version: str) -> Path:
    tag = "cp" + version.replace(".", "")
    system, arch = platform.split("_", 1)  # manylinux_x86_64: any manylinux tag of x86_64
    found = [w for w in build() if f"-{tag}-{tag}-{system}" in w.name and w.name.endswith(f"_{arch}.whl")]
    assert len(found) == 1, (platform, version, [w.name for w in build()])
    return found[0]
