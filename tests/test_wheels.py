"""The release wheels and the sdist, built here by tools/build_wheels.py (tests/wheelhouse.py) and tested as users
install them: the manylinux wheel by pip into a fresh virtual environment, the unprivileged suite run there; the
sdist built from source by pip in another. The win_amd64 wheels run the Windows sub-suite under Wine
(tests/test_windows_python.py); win_arm64 cannot run here, so the checks of the build (machine type, exports,
imports, timestamps, the signed ARM64 wintun.dll) are its test.

Outside CI a missing tool skips with the install hint; in CI it fails."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import wheelhouse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import check_wheel  # noqa: E402
import pe_image  # noqa: E402
import wintun_dll  # noqa: E402

# The unprivileged modules the installed manylinux wheel runs (the root-only tests are deselected by marker).
LINUX_MODULES = ["tests/test_pair.py", "tests/test_packaging.py", "tests/test_bad_inputs.py",
                 "tests/test_reader_pipeline.py", "tests/test_udp.py", "tests/test_icmp.py"]


def pyenv_python(version: str) -> Path:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
    found = [p for p in found if p.parent.parent.name.replace(f"{version}.", "").isdigit()]
    if not found:
        wheelhouse.skip_or_fail(f"no CPython {version} to install the wheel into (pyenv install {version})")
    return found[-1]


def venv(tmp: Path, version: str) -> Path:
    """A fresh virtual environment of CPython `version`; returns its python."""
    env_dir = tmp / f"venv-{version}"
    subprocess.run([str(pyenv_python(version)), "-m", "venv", str(env_dir)], check=True, capture_output=True,
                   timeout=300)
    return env_dir / "bin" / "python"


def pip(python: Path, *args: str, timeout: float = 900) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 and ("Could not find a version" in proc.stderr or "NewConnectionError" in proc.stderr):
        wheelhouse.skip_or_fail(f"pip could not reach PyPI: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def clean_env() -> dict[str, str]:
    """The environment without what would make the venv's Python find the checkout's fasttun."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def test_the_build_gives_every_wheel_and_the_sdist_and_each_passes_its_checks():
    built = wheelhouse.build()
    names = {p.name for p in built}
    for version in wheelhouse.versions():
        tag = "cp" + version.replace(".", "")
        for platform in ("win_amd64", "win_arm64", "manylinux_2_17_x86_64.manylinux2014_x86_64"):
            assert f"fasttun-0.2.0-{tag}-{tag}-{platform}.whl" in names, names
    assert "fasttun-0.2.0.tar.gz" in names, names
    assert len(names) == 3 * len(wheelhouse.versions()) + 1, names
    for wheel in built:
        if wheel.suffix == ".whl":
            assert check_wheel.check(wheel) == [], wheel.name


def test_a_rebuild_gives_the_same_bytes(tmp_path):
    version = wheelhouse.versions()[-1]
    first = {p: wheelhouse.wheel(p, version) for p in ("win_amd64", "win_arm64", "manylinux_x86_64")}
    cmd = [sys.executable, str(wheelhouse.TOOL), "--out", str(tmp_path), "--python", version]
    for p in first:
        cmd += ["--platform", p]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for wheel in first.values():
        again = tmp_path / wheel.name
        # digests, not the bytes: pytest would diff two 600 KB byte strings element by element for minutes
        differs = [name for name, digest in members(again).items() if members(wheel).get(name) != digest]
        assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(wheel.read_bytes()).hexdigest(), \
            f"{wheel.name} differs on rebuild: {differs or 'in its zip layout'}"


def members(wheel: Path) -> dict[str, str]:
    """Each member's SHA-256, by name."""
    with zipfile.ZipFile(wheel) as z:
        return {info.filename: hashlib.sha256(z.read(info.filename)).hexdigest() for info in z.infolist()}


def rewrite(wheel: Path, out: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the wheel with some members' bytes replaced (RECORD left as it was)."""
    target = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, replace.get(info.filename, src.read(info.filename)))
    return target


def test_the_checks_catch_a_wrong_dll_a_stale_record_a_timestamp_and_a_wrong_machine(tmp_path):
    amd64 = wheelhouse.wheel("win_amd64", wheelhouse.versions()[-1])
    arm64 = wheelhouse.wheel("win_arm64", wheelhouse.versions()[-1])
    with zipfile.ZipFile(amd64) as z:
        pyd_name = next(n for n in z.namelist() if n.endswith(".pyd"))
        pyd = z.read(pyd_name)
    with zipfile.ZipFile(arm64) as z:
        arm_dll = z.read("fasttun/wintun.dll")
        arm_pyd = z.read(next(n for n in z.namelist() if n.endswith(".pyd")))
    stamped = pe_image.Image(pyd)
    stamped.data[stamped.coff + 4:stamped.coff + 8] = b"\x01\x02\x03\x04"

    def problems(name: str, replace: dict[str, bytes]) -> str:
        d = tmp_path / name
        d.mkdir()
        return "\n".join(check_wheel.check(rewrite(amd64, d, replace)))

    # The arm64 DLL in an amd64 wheel: wrong bytes for the architecture, wrong machine, and RECORD is stale.
    found = problems("dll", {"fasttun/wintun.dll": arm_dll})
    assert "wintun.dll (amd64) has SHA-256" in found and "not an amd64 DLL" in found, found
    assert "RECORD's hash or size of fasttun/wintun.dll" in found, found
    found = problems("stamp", {pyd_name: bytes(stamped.data)})
    assert "timestamps not zeroed" in found and "coff" in found, found
    found = problems("machine", {pyd_name: arm_pyd})
    assert "expected 0x8664" in found, found
    assert check_wheel.check(amd64) == []


def test_the_official_dlls_are_wireguards_and_pinned():
    cache = wheelhouse_cache()
    for arch in ("amd64", "arm64"):
        dll, licence = wintun_dll.verified_dll(arch, cache)
        assert "WireGuard LLC" in wintun_dll.check_signature(dll)
        assert pe_image.MACHINES[pe_image.Image.read(dll).machine] == arch
        assert licence.read_bytes().startswith(b"Prebuilt Binaries License")


def wheelhouse_cache() -> Path:
    if shutil.which("osslsigncode") is None:
        wheelhouse.skip_or_fail("osslsigncode is not installed (apt-get install osslsigncode)")
    import windows_python

    return windows_python.cache_dir() / "downloads"


def test_the_manylinux_wheel_installed_by_pip_passes_the_unprivileged_suite(tmp_path):
    version = wheelhouse.versions()[-1]
    wheel = wheelhouse.wheel("manylinux_x86_64", version)
    python = venv(tmp_path, version)
    pip(python, str(wheel), "pytest", "numpy", "hypothesis")
    where = subprocess.run([str(python), "-c", "import fasttun, sys; print(fasttun.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=clean_env(), timeout=120)
    assert where.returncode == 0 and str(tmp_path / f"venv-{version}") in where.stdout, where.stdout + where.stderr
    env = {**clean_env(), "FASTTUN_WHEEL_UNDER_TEST": "1"}
    report = tmp_path / "report.xml"
    proc = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not root",
                           f"--junitxml={report}",
                           "--deselect", "tests/test_packaging.py::test_sdist_holds_everything_needed_to_build",
                           *LINUX_MODULES], cwd=ROOT, capture_output=True, text=True, env=env, timeout=1200,
                          stdin=subprocess.DEVNULL)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    cases = {f"{c.get('classname')}::{c.get('name')}": [child.tag for child in c]
             for c in ET.parse(report).getroot().iter("testcase")}
    passed = [t for t, children in cases.items() if not {"failure", "error", "skipped"} & set(children)]
    assert len(passed) >= 100, tail
    # the installed extension is the wheel's stripped one, and fasttun bench finds its C baselines in the package
    for name in ("test_the_installed_extension_is_stripped_exactly_when_it_comes_from_a_wheel_build",
                 "test_the_benchmark_baselines_ship_with_the_package"):
        assert any(t.endswith("::" + name) for t in passed), f"{name} did not pass:\n{tail}"


def test_the_sdist_builds_from_source_with_pip_in_a_fresh_venv(tmp_path):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        wheelhouse.skip_or_fail("no C compiler (apt-get install gcc)")
    (sdist,) = [p for p in wheelhouse.build() if p.name.endswith(".tar.gz")]
    python = venv(tmp_path, wheelhouse.versions()[0])
    pip(python, str(sdist), timeout=1800)
    code = ("import fasttun; a, b = fasttun.pair(); a.send(bytes.fromhex('4500001c000100004011f7d20a0000010a000002'"
            "'0001000200080000')); print(len(b.recv(timeout=1.0))); print(fasttun.__file__)")
    proc = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, env=clean_env(),
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == "28" and "site-packages" in proc.stdout, proc.stdout
