"""The package as shipped: the sdist can build the extension, and the stub describes the extension."""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import struct
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

import fasttun
from conftest import require_tool
from fasttun import _core

ROOT = Path(__file__).resolve().parent.parent


def test_sdist_holds_everything_needed_to_build(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".build", "build", "dist", "*.so", "*.egg-info",
                                                              "_core.c", "__pycache__", ".pytest_cache"))
    proc = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=tree,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"setup.py sdist failed:\n{proc.stdout}\n{proc.stderr}"
    (sdist,) = (tmp_path / "dist").glob("fasttun-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {"setup.py", "pyproject.toml", "README.md", "LICENSE", "src/fasttun/_core.pyx", "src/fasttun/_core.pxd",
              "src/fasttun/_core.pyi", "src/fasttun/py.typed"}
    # Every C source and header, and every Cython file, whatever is added later.
    needed |= {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.[ch]")}
    needed |= {str(p.relative_to(ROOT)) for p in (ROOT / "src" / "fasttun").glob("*.p[xy][dix]")}
    needed |= {"csrc/sources.py"}  # the manifest setup.py reads
    needed |= {str(p.relative_to(ROOT)) for p in (ROOT / "src" / "fasttun" / "_bench" / "baselines").glob("*.[ch]")}
    assert needed <= names, needed - names
    assert not any(n.endswith(".so") for n in names)


def test_stub_names_every_public_name_of_the_extension():
    stub = ast.parse((Path(fasttun.__file__).parent / "_core.pyi").read_text())
    declared = set()
    for node in stub.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
    public = {n for n in dir(_core) if not n.startswith("__") and n not in {"Arena"} | {"_timeout_check"}}
    public = {n for n in public if not n.startswith("_")}
    assert public <= declared | {"Arena"}, public - declared


def test_the_benchmark_baselines_ship_with_the_package(monkeypatch):
    """`fasttun bench` from a wheel compiles its C baselines from the package, not from a checkout."""
    from fasttun._bench import system

    monkeypatch.delenv("FASTTUN_BENCH_DIR", raising=False)
    src = system.bench_sources()
    assert src is not None and src.is_relative_to(Path(fasttun.__file__).parent)
    assert {f"{p}.c" for p in system.C_PROGRAMS} | {"ftb.h"} <= {p.name for p in src.glob("*.[ch]")}


def test_package_is_typed():
    assert (Path(fasttun.__file__).parent / "py.typed").exists()


def elf_sections(path: Path) -> set[str]:
    """The section names of an ELF file (32 or 64 bit, either byte order)."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", path
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    (shoff,) = struct.unpack_from(order + ("Q" if wide else "I"), data, 0x28 if wide else 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, 0x3A if wide else 0x2E)

    def section(i: int) -> tuple[int, int, int]:
        name, _, _, _, offset, size = struct.unpack_from(order + ("IIQQQQ" if wide else "IIIIII"), data,
                                                         shoff + i * shentsize)
        return name, offset, size

    _, names_at, names_size = section(shstrndx)
    names = data[names_at:names_at + names_size]
    return {names[n:names.index(b"\0", n)].decode() for n, _, _ in map(section, range(shnum))}


def wheel_ldflags() -> list[str]:
    """The LDFLAGS that [tool.cibuildwheel.linux] gives the wheel builds, with $LDFLAGS as empty."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+ (tomllib)")
    with open(ROOT / "pyproject.toml", "rb") as f:
        env = tomllib.load(f)["tool"]["cibuildwheel"]["linux"]["environment"]
    return shlex.split(env["LDFLAGS"].replace("$LDFLAGS", ""))


def test_linux_wheels_are_linked_without_debug_information(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the wheels' link flags are Linux's (ELF)")
    flags = wheel_ldflags()
    assert "-Wl,--strip-debug" in flags or "-s" in flags, flags
    # What those flags do to a shared object built with -g, as setuptools links the extension (flags appended).
    cc = require_tool("cc", "gcc")
    source = tmp_path / "probe.c"
    source.write_text("int ft_probe(int x) { return x + 1; }\n")
    for name, extra in (("plain.so", []), ("wheel.so", flags)):
        subprocess.run([cc, "-g", "-O2", "-fPIC", "-shared", str(source), "-o", str(tmp_path / name), *extra],
                       check=True, capture_output=True, timeout=60)
    assert ".debug_info" in elf_sections(tmp_path / "plain.so")
    stripped = elf_sections(tmp_path / "wheel.so")
    assert ".debug_info" not in stripped and ".dynsym" in stripped, stripped
    # Only the wheels: the build everyone else runs (setup.py, pip install -e .) keeps what gdb needs.
    assert "strip" not in (ROOT / "setup.py").read_text()


def test_the_installed_extension_is_stripped_exactly_when_it_comes_from_a_wheel_build():
    if not sys.platform.startswith("linux"):
        pytest.skip("the wheels' link flags are Linux's (ELF)")
    sections = elf_sections(Path(_core.__file__))
    # cibuildwheel's test step on the wheel it built, or tests/test_wheels.py on one of tools/build_wheels.py
    if os.environ.get("CIBUILDWHEEL") == "1" or os.environ.get("FASTTUN_WHEEL_UNDER_TEST") == "1":
        assert ".debug_info" not in sections
    elif "-g" in (sysconfig.get_config_var("CFLAGS") or "").split() and "strip" not in os.environ.get("LDFLAGS", ""):
        assert ".debug_info" in sections, "a local build lost its debug information"
    else:
        pytest.skip("this Python compiles without -g, so a local build has no debug information to keep")
