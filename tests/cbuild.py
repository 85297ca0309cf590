"""What the C test drivers share: the source manifest, the compiler lookup, one build-and-run under sanitizers,
one cross-build-and-run under Wine, one libFuzzer build, and the "N passed, M failed" line tests/c/check.h
prints."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import pytest

from conftest import IN_CI, require_tool

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
BUILD = ROOT / "tests" / ".build"
SANITIZE_ASAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
SANITIZE_TSAN = ["-fsanitize=thread"]
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1",
                 "TSAN_OPTIONS": "halt_on_error=1"}

_MANIFEST = runpy.run_path(str(CSRC / "sources.py"))


def c_sources(platform: str, *parts: str) -> list[Path]:
    """The .c files of csrc/sources.py for a platform (linux, win32), optionally only some of its parts."""
    return list(_MANIFEST["sources"](platform, list(parts) or None))


def compiler(name: str) -> str:
    """The compiler's path; skips with the install hint where it is missing, fails in CI."""
    return require_tool(name, name)


def passed_line(output: str) -> tuple[int, int]:
    m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def build_and_run(cc: str, sanitize: Sequence[str], sources: Sequence[Path], out: str, timeout: float = 300,
                  libs: Sequence[str] = ("-lpthread",)) -> tuple[int, int]:
    """Builds the test program under the sanitizers, runs it and returns its (passed, failed) counts."""
    BUILD.mkdir(parents=True, exist_ok=True)
    exe = BUILD / out
    cmd = [cc, "-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-fno-omit-frame-pointer", *sanitize,
           f"-I{CSRC}", *map(str, sources), "-o", str(exe), *libs]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, " ".join(cmd) + "\n" + built.stdout + built.stderr
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, **SANITIZER_ENV))
    assert result.returncode == 0, result.stdout + result.stderr
    return passed_line(result.stdout)


MINGW = "x86_64-w64-mingw32-gcc"


def wine_env() -> dict[str, str]:
    """The environment for running under Wine, in the prefix tests/wintun_fake/build_and_run.sh uses (outside
    the tree), made on first use."""
    prefix = os.environ.get("FT_WINEPREFIX") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fasttun", "wineprefix")
    env = dict(os.environ, WINEPREFIX=prefix, WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    if not os.path.exists(os.path.join(prefix, "system.reg")):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run(["wineboot", "-i"], env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    return env


def build_and_run_wine(sources: Sequence[Path], out: str, libs: Sequence[str] = ("-lws2_32",),
                       timeout: float = 180) -> tuple[int, int]:
    """Cross-compiles a C test program with mingw-w64 (pedantic C11, warnings are errors), runs it under Wine
    and returns its (passed, failed) counts. Without mingw-w64 or Wine the test skips with the install hint,
    and fails in CI (CI set), which must run the Wine tests."""

    missing = [t for t in (MINGW, "wine", "wineboot") if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not found (apt-get install gcc-mingw-w64-x86-64 wine)"
        if IN_CI:
            pytest.fail(f"CI must run the Wine tests, but {why}")
        pytest.skip(why)
    (BUILD / "wine").mkdir(parents=True, exist_ok=True)
    exe = BUILD / "wine" / f"{out}.exe"
    built = subprocess.run([MINGW, "-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                            f"-I{CSRC}", *map(str, sources), "-o", str(exe), *libs, "-static-libgcc"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert built.returncode == 0, built.stdout + built.stderr
    result = subprocess.run(["wine", str(exe)], capture_output=True, text=True, timeout=timeout, env=wine_env(),
                            stdin=subprocess.DEVNULL)
    passed, failed = passed_line(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    return passed, failed


def build_libfuzzer(sources: Sequence[Path], exe: Path, libs: Sequence[str] = ()) -> Path:
    """A libFuzzer target built with clang under ASan/UBSan; without clang or its fuzzer runtime the test skips
    with the install hint (fails in CI)."""
    clang = shutil.which("clang")
    why = None
    if clang is None:
        why = "clang is not installed"
    else:
        built = subprocess.run([clang, "-std=c11", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                                "-fno-sanitize-recover=all", f"-I{CSRC}", *map(str, sources), "-o", str(exe), *libs],
                               capture_output=True, text=True)
        if built.returncode != 0:
            why = "clang cannot build a libFuzzer target (install libclang-rt-dev): " + built.stderr[-500:]
    if why:
        if IN_CI:
            pytest.fail(f"CI must run the fuzzer, but {why}")
        pytest.skip(why)
    return exe
