"""The unprivileged suite on the oldest and the newest CPython the machine offers (requires-python says 3.9+).

For each, a venv under tests/.build/ gets the package (built from a copy of the tree, so nothing is written into
the checkout) plus pytest, numpy, hypothesis and Cython, and runs the pair, asyncio, packaging, property and
bad-input tests there. Interpreters are looked for on PATH (python3.9 ... python3.14) and among pyenv's versions;
a missing one skips with a hint, and fails in CI."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tests" / ".build"
OLDEST, NEWEST = (3, 9), (3, 13)
SUITE = ["tests/test_pair.py", "tests/test_aio.py", "tests/test_packaging.py", "tests/test_properties.py",
         "tests/test_bad_inputs.py", "tests/test_hostile_callers.py", "tests/test_reader_pipeline.py",
         "tests/test_icmp.py"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the venvs are built on Linux")


def version_of(python: str) -> tuple[int, int] | None:
    try:
        r = subprocess.run([python, "-c", "import sys; print(sys.implementation.name, *sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = r.stdout.split()
    if r.returncode != 0 or len(parts) != 3 or parts[0] != "cpython":
        return None
    return int(parts[1]), int(parts[2])


def find_python(want: tuple[int, int]) -> str | None:
    """A CPython of that version: pythonX.Y on PATH if it runs (a pyenv shim may not), else pyenv's copy."""
    candidates = [shutil.which(f"python{want[0]}.{want[1]}")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(root, "versions", f"{want[0]}.{want[1]}.*", "bin",
                                                f"python{want[0]}.{want[1]}")), reverse=True)
    for c in candidates:
        if c and version_of(c) == want:
            return c
    return None


def clean_env() -> dict[str, str]:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(), **kw)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode})\n{r.stdout[-8000:]}\n{r.stderr[-8000:]}"
    return r


def venv_with_fasttun(python: str, tag: str) -> Path:
    venv = BUILD / f"venv-{tag}"
    tree = BUILD / f"tree-{tag}"
    if venv.exists():
        shutil.rmtree(venv)
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".build", "build", "dist", "*.so", "*.egg-info",
                                                              "_core.c", "__pycache__", ".pytest_cache", "tests",
                                                              "bench", ".hypothesis"))
    run([python, "-m", "venv", str(venv)], 120)
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", "setuptools>=77", "Cython>=3.0.8", "wheel", "pytest>=7", "numpy",
         "hypothesis>=6", "uvloop", "cryptography"], 300)
    run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(tree)], 300)
    return venv


def _missing(want: tuple[int, int]) -> str:
    return (f"no CPython {want[0]}.{want[1]} on PATH or in pyenv; install one "
            f"(pyenv install {want[0]}.{want[1]}, or apt-get install python{want[0]}.{want[1]}-venv)")


@pytest.fixture(scope="module")
def venvs() -> dict[tuple[int, int], Path | str]:
    """The venvs, built side by side (most of the time goes into compiling the extension, one core each).
    A version maps to its venv, or to why there is none."""
    from concurrent.futures import ThreadPoolExecutor

    found = {want: find_python(want) for want in (OLDEST, NEWEST) if sys.version_info[:2] != want}
    out: dict[tuple[int, int], Path | str] = {w: _missing(w) for w, p in found.items() if p is None}
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {w: pool.submit(venv_with_fasttun, p, f"py{w[0]}{w[1]}") for w, p in found.items() if p is not None}
        for w, job in jobs.items():
            try:
                out[w] = job.result()
            except AssertionError as exc:
                out[w] = f"building the venv failed: {exc}"
    return out


@pytest.mark.parametrize("want", [OLDEST, NEWEST], ids=lambda v: f"python{v[0]}.{v[1]}")
def test_unprivileged_suite_on(venvs, want):
    if sys.version_info[:2] == want:
        pytest.skip(f"this run is already on Python {want[0]}.{want[1]}")
    venv = venvs[want]
    if isinstance(venv, str):
        if venv.startswith("building"):
            pytest.fail(venv)
        if os.environ.get("CI"):
            pytest.fail(f"CI must test Python {want[0]}.{want[1]}: {venv}")
        pytest.skip(venv)
    py = str(venv / "bin" / "python")
    where = run([py, "-c", "import fasttun._core as c, sys; print(c.__file__); print(sys.version)"], 60, cwd=ROOT)
    assert where.stdout.startswith(str(venv)), where.stdout
    result = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITE, "-k", "not sdist"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env())
    summary = result.stdout[-6000:] + result.stderr[-4000:]
    assert result.returncode == 0, f"the suite failed on {where.stdout}\n{summary}"
    m = re.search(r"(\d+) passed", result.stdout)
    assert m and int(m.group(1)) > 100, summary
