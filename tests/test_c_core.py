"""Builds the C core's own tests (tests/c/test_core.c) under the sanitizers and runs them natively."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cbuild import CSRC, ROOT, SANITIZE_ASAN, SANITIZE_TSAN, build_and_run, c_sources, compiler

CORE = c_sources("linux", "core", "pair", "offload", "posix")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="native C tests run on Linux")


def test_core_under_address_and_undefined_behaviour_sanitizers():
    passed, failed = build_and_run(compiler("gcc"), SANITIZE_ASAN, [*CORE, ROOT / "tests" / "c" / "test_core.c"],
                                   "core_asan")
    assert failed == 0 and passed > 100


def test_core_under_thread_sanitizer():
    passed, failed = build_and_run(compiler("gcc"), SANITIZE_TSAN, [*CORE, ROOT / "tests" / "c" / "test_core.c"],
                                   "core_tsan")
    assert failed == 0 and passed > 100


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_core_builds_without_warnings(cc):
    """Every Linux source of the manifest, pedantic C11."""
    path = compiler(cc)
    for f in c_sources("linux"):
        subprocess.run([path, "-std=c11", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                        "-Wno-gnu-zero-variadic-macro-arguments", f"-I{CSRC}", "-c", str(f), "-o", os.devnull],
                       check=True, capture_output=True, text=True)
