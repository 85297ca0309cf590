"""Checks a built fasttun wheel as a user's pip and Python will see it; prints the problems, exit status 1 if any.

    python tools/check_wheel.py WHEEL...

Every wheel: the file name's tags and the WHEEL file agree, RECORD lists every file with its hash and size (and
nothing else), the extension is named for its CPython and platform. Windows: the extension's machine type
(llvm-readobj: binutils cannot read ARM64 PE), that it exports PyInit__core, imports only the DLLs expected
(python3X.dll, the Universal CRT's api-ms-win-crt-*, kernel32, iphlpapi, ws2_32) and carries no timestamp; the
bundled wintun.dll is the official one of the same architecture. manylinux: auditwheel accepts the wheel for its
platform tag and the extension exports PyInit__core."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pe_image  # noqa: E402
import wintun_dll  # noqa: E402

WINDOWS_MACHINE = {"win_amd64": ("amd64", "0x8664"), "win_arm64": ("arm64", "0xAA64")}
ALLOWED_IMPORTS = re.compile(r"^(python3\d+\.dll|api-ms-win-crt-[a-z0-9-]+\.dll|kernel32\.dll|iphlpapi\.dll|"
                             r"ws2_32\.dll)$")
NAME = re.compile(r"^fasttun-(?P<version>[^-]+)-(?P<py>cp3\d+)-(?P<abi>cp3\d+)-(?P<plat>[a-z0-9_.]+)\.whl$")


def readobj(path: Path, *flags: str) -> str:
    tool = shutil.which("llvm-readobj")
    if tool is None:
        raise FileNotFoundError("llvm-readobj is not installed (apt-get install llvm)")
    return subprocess.run([tool, *flags, str(path)], capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL, timeout=120).stdout


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def check_record(z: zipfile.ZipFile, info: str) -> list[str]:
    problems = []
    rows = {}
    for line in z.read(f"{info}/RECORD").decode().splitlines():
        name, digest, size = line.rsplit(",", 2)
        rows[name] = (digest, size)
    names = [n for n in z.namelist() if not n.endswith("/")]
    for name in names:
        if name == f"{info}/RECORD":
            if rows.get(name) != ("", ""):
                problems.append("RECORD lists itself with a hash")
            continue
        if name not in rows:
            problems.append(f"{name} is not in RECORD")
            continue
        data = z.read(name)
        if rows[name] != (record_hash(data), str(len(data))):
            problems.append(f"RECORD's hash or size of {name} is wrong")
    problems += [f"RECORD lists {n}, which the wheel lacks" for n in rows if n not in names]
    if len(set(names)) != len(names):
        problems.append("duplicate entries")
    return problems


def check_windows_extension(path: Path, plat: str, cp: str) -> list[str]:
    problems = []
    arch, machine = WINDOWS_MACHINE[plat]
    headers = readobj(path, "--file-headers")
    if f"({machine})" not in headers:
        found = re.search(r"Machine: (\S+ \(\S+\))", headers)
        problems.append(f"machine type {found.group(1) if found else '?'}, expected {machine}")
    exports = re.findall(r"Name: (\S+)", readobj(path, "--coff-exports"))
    if "PyInit__core" not in exports:
        problems.append(f"does not export PyInit__core (exports: {exports[:10]})")
    imports = [n.lower() for n in re.findall(r"Import \{\s*Name: (\S+)", readobj(path, "--coff-imports"))]
    unexpected = [n for n in imports if not ALLOWED_IMPORTS.match(n)]
    if unexpected:
        problems.append(f"imports unexpected DLLs {unexpected}")
    pydll = f"python{cp[2:]}.dll"
    if pydll not in imports or any(n.startswith("python3") and n != pydll for n in imports):
        problems.append(f"must import {pydll} (and no other python DLL): {imports}")
    if not any(n.startswith("api-ms-win-crt-") for n in imports) or "msvcrt.dll" in imports:
        problems.append(f"not linked against the Universal CRT: {imports}")
    stamps = {k: v for k, v in pe_image.Image.read(path).timestamps().items() if v}
    if stamps:
        problems.append(f"timestamps not zeroed: {stamps}")
    return problems


def check_bundled_dll(z: zipfile.ZipFile, plat: str) -> list[str]:
    arch, _ = WINDOWS_MACHINE[plat]
    try:
        dll = z.read("fasttun/wintun.dll")
        licence = z.read(f"fasttun/{wintun_dll.LICENSE_NAME}")
    except KeyError as exc:
        return [f"lacks {exc.args[0]}"]
    problems = []
    try:
        wintun_dll.check_bytes(arch, dll, "the bundled wintun.dll")
        wintun_dll.check_license(licence, "the bundled licence")
    except wintun_dll.Unverified as exc:
        problems.append(str(exc))
    if pe_image.MACHINES.get(pe_image.Image(dll).machine) != arch:
        problems.append(f"the bundled wintun.dll is not an {arch} DLL")
    return problems


def check_linux(wheel: Path, z: zipfile.ZipFile, ext: str, plat: str) -> list[str]:
    problems = []
    tool = shutil.which("auditwheel") or str(Path(sys.executable).parent / "auditwheel")
    proc = subprocess.run([tool, "show", str(wheel)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=300)
    policy = plat.split(".")[0]
    text = " ".join(proc.stdout.split())
    if proc.returncode != 0 or f'consistent with the following platform tag: "{policy}"' not in text:
        problems.append(f"auditwheel does not accept it as {policy}: {proc.stdout[-1500:]}{proc.stderr[-800:]}")
    with tempfile.TemporaryDirectory() as tmp:
        so = Path(tmp) / "ext.so"
        so.write_bytes(z.read(ext))
        if "PyInit__core" not in re.findall(r"Name: (\S+)", readobj(so, "--dyn-syms")):
            problems.append("the extension does not export PyInit__core")
        if "x86_64" in plat and "EM_X86_64" not in readobj(so, "--file-headers"):
            problems.append("the extension is not an x86-64 ELF object")
    return problems


def check(wheel: Path) -> list[str]:
    m = NAME.match(wheel.name)
    if not m:
        return [f"the file name is not a fasttun CPython wheel name: {wheel.name}"]
    version, py, abi, plat = m["version"], m["py"], m["abi"], m["plat"]
    problems = []
    if py != abi:
        problems.append(f"python tag {py} and ABI tag {abi} differ")
    info = f"fasttun-{version}.dist-info"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        wheel_file = z.read(f"{info}/WHEEL").decode()
        tags = set(re.findall(r"^Tag: (\S+)$", wheel_file, re.M))
        expected = {f"{py}-{abi}-{p}" for p in plat.split(".")}
        if tags != expected:
            problems.append(f"WHEEL's tags {sorted(tags)} are not the file name's {sorted(expected)}")
        if "Root-Is-Purelib: false" not in wheel_file:
            problems.append("WHEEL does not say Root-Is-Purelib: false")
        metadata = z.read(f"{info}/METADATA").decode()
        if f"\nVersion: {version}\n" not in metadata or "\nName: fasttun\n" not in metadata:
            problems.append("METADATA's name or version is not the file name's")
        problems += check_record(z, info)
        if len({zi.date_time for zi in z.infolist()}) != 1:
            problems.append("the entries' times differ (not a reproducible archive)")
        exts = [n for n in names if re.match(r"fasttun/_core\.[^/]*\.(pyd|so)$", n)]
        if plat.startswith("win_"):
            want = f"fasttun/_core.{py}-{plat}.pyd"
        else:
            want = f"fasttun/_core.cpython-{py[2:]}-{plat.split('.')[0].split('_', 3)[-1]}-linux-gnu.so"
        if exts != [want]:
            problems.append(f"extension modules {exts}, expected [{want}]")
            return problems
        for needed in ("fasttun/__init__.py", "fasttun/py.typed", "fasttun/_core.pyi"):
            if needed not in names:
                problems.append(f"lacks {needed}")
        if plat.startswith("win_"):
            with tempfile.TemporaryDirectory() as tmp:
                pyd = Path(tmp) / "ext.pyd"
                pyd.write_bytes(z.read(want))
                problems += check_windows_extension(pyd, plat, py)
            problems += check_bundled_dll(z, plat)
        else:
            if any(n.endswith(".dll") for n in names):
                problems.append("a Linux wheel carries a DLL")
            problems += check_linux(wheel, z, want, plat)
    return problems


def main(argv: list[str]) -> int:
    bad = 0
    for arg in argv:
        problems = check(Path(arg))
        print(f"{Path(arg).name}: {'OK' if not problems else ''}")
        for p in problems:
            print(f"  {p}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
