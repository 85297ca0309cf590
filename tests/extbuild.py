"""Builds fasttun's extension (and a small test helper extension) outside the source tree, with any C flags.

The sanitized suite (test_sanitized_extension.py) needs the extension built with ASan+UBSan into a directory of its
own, never over the in-place `src/fasttun/_core*.so`. The sources come from setup.py (read, not run), so a file
added there is built here too. A build is reused while its inputs (sources, flags, interpreter) are unchanged."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import cbuild

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tests" / ".build"
PACKAGE = ROOT / "src" / "fasttun"
HELPER = ROOT / "tests" / "ft_callback_buffer.pyx"

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]


def c_sources() -> list[Path]:
    """The C files setup.py compiles on Linux: csrc/sources.py's list."""
    return cbuild.c_sources("linux")


def _digest(paths: list[Path], flags: list[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p).encode())
        h.update(p.read_bytes())
    h.update(" ".join(flags).encode())
    h.update(sys.version.encode())
    h.update(sys.executable.encode())
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"build step failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")


def _cythonize(pyx: Path, out_c: Path, module: str) -> None:
    # --line-directives: sanitizer reports name lines of the .pyx, not of the generated C.
    _run([sys.executable, "-m", "cython", "-3", "--line-directives", "--module-name", module, "-I", str(ROOT / "src"),
          str(pyx), "-o", str(out_c)])


def _link(sources: list[Path], out: Path, flags: list[str]) -> None:
    """Compiles each source to an object next to `out` (two at a time: the generated C dominates), then links."""
    from concurrent.futures import ThreadPoolExecutor

    cc = os.environ.get("CC", "gcc")
    include = sysconfig.get_paths()["include"]
    objects = [out.parent / f"{out.name}.{i}.{src.stem}.o" for i, src in enumerate(sources)]

    def compile_one(src: Path, obj: Path) -> None:
        _run([cc, "-c", "-fPIC", "-g", "-O1", "-std=c11", "-fno-strict-aliasing", "-Wno-discarded-qualifiers",
              *flags, "-D_FILE_OFFSET_BITS=64", f"-I{include}", f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'include'}",
              str(src), "-o", str(obj)])

    with ThreadPoolExecutor(max_workers=2) as pool:
        for job in [pool.submit(compile_one, src, obj) for src, obj in zip(sources, objects)]:
            job.result()
    _run([cc, "-shared", *flags, *map(str, objects), "-o", str(out), "-lpthread"])
    for obj in objects:
        obj.unlink()


def build(name: str, flags: list[str]) -> Path:
    """Builds the package into tests/.build/NAME-<python>/pkg and returns that directory (for PYTHONPATH).

    pkg/fasttun is a copy of src/fasttun's Python files with the extension built with `flags`; pkg also holds
    ft_callback_buffer, a helper extension whose buffer export calls back into Python (built with the same
    flags)."""
    tag = f"{sys.implementation.cache_tag}"
    out = BUILD / f"{name}-{tag}"
    pkg = out / "pkg"
    inputs = [*c_sources(), *PACKAGE.glob("*.py*"), *PACKAGE.glob("*.pxd"), HELPER, Path(__file__)]
    digest = _digest(inputs, flags)
    stamp = out / "stamp"
    if stamp.exists() and stamp.read_text() == digest:
        return pkg
    if out.exists():
        shutil.rmtree(out)
    (pkg / "fasttun").mkdir(parents=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    core_c = out / "_core.c"
    _cythonize(PACKAGE / "_core.pyx", core_c, "fasttun._core")
    _link([core_c, *c_sources()], pkg / "fasttun" / f"_core{suffix}", flags)
    helper_c = out / "ft_callback_buffer.c"
    _cythonize(HELPER, helper_c, "ft_callback_buffer")
    _link([helper_c], pkg / f"ft_callback_buffer{suffix}", flags)
    shutil.copytree(PACKAGE, pkg / "fasttun", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__", "*.pyd"))
    stamp.write_text(digest)
    return pkg


def sanitizer_runtime() -> list[str]:
    """The ASan runtime to preload into a Python that is not built with it (it must come first)."""
    cc = os.environ.get("CC", "gcc")
    r = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=True)
    path = r.stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise RuntimeError(f"{cc} does not know where libasan.so is (got {path!r}); install libasan (gcc)")
    return [os.path.realpath(path)]


def build_helper(name: str, flags: list[str]) -> Path:
    """Builds only ft_callback_buffer into tests/.build/NAME-<python>/ and returns that directory (for sys.path)."""
    out = BUILD / f"{name}-{sys.implementation.cache_tag}"
    digest = _digest([HELPER, Path(__file__)], flags)
    stamp = out / "stamp"
    if stamp.exists() and stamp.read_text() == digest:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    helper_c = out / "ft_callback_buffer.c"
    _cythonize(HELPER, helper_c, "ft_callback_buffer")
    _link([helper_c], out / f"ft_callback_buffer{sysconfig.get_config_var('EXT_SUFFIX')}", flags)
    stamp.write_text(digest)
    return out
