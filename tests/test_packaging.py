"""The package as shipped: the sdist can build the extension, and the stub describes the extension."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import fasttun
from fasttun import _core

ROOT = Path(__file__).resolve().parent.parent


def test_sdist_holds_everything_needed_to_build(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".build", "build", "dist", "*.so", "*.egg-info",
                                                              "_core.c", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=tree, check=True,
                   capture_output=True, text=True)
    (sdist,) = (tmp_path / "dist").glob("fasttun-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {"setup.py", "pyproject.toml", "README.md", "LICENSE", "src/fasttun/_core.pyx", "src/fasttun/_core.pxd",
              "src/fasttun/_core.pyi", "src/fasttun/py.typed", "csrc/ft_device.c", "csrc/ft_device.h",
              "csrc/ft_reader.c", "csrc/ft_backend_linux.c", "csrc/ft_os_win32.c", "src/fasttun/_udp.pxi",
              "csrc/ft_backend_udp.c", "csrc/ft_udp.h"}
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


def test_package_is_typed():
    assert (Path(fasttun.__file__).parent / "py.typed").exists()
