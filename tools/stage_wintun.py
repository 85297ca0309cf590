"""Puts the official wintun.dll of one architecture, and Wintun's licence, into src/fasttun/ before a Windows wheel
is built (the GitHub workflow; tools/build_wheels.py takes the same files from PyPI, see tools/wintun_dll.py).

The release zip is downloaded from wintun.net and checked against its pinned SHA-256, and the DLL taken out of it
against the per-architecture SHA-256 both paths share; nothing else is trusted.
Usage: python tools/stage_wintun.py amd64|arm64|x86|arm"""

from __future__ import annotations

import hashlib
import io
import sys
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wintun_dll  # noqa: E402

VERSION = wintun_dll.VERSION
URL = f"https://www.wintun.net/builds/wintun-{VERSION}.zip"
SHA256 = "07c256185d6ee3652e09fa55c0b673e2624b565e02c4b9091c79ca7d2f24ef51"
ARCHES = tuple(wintun_dll.DLL_SHA256)


def main(arch: str) -> int:
    if arch not in ARCHES:
        print(f"architecture must be one of {', '.join(ARCHES)}", file=sys.stderr)
        return 2
    with urllib.request.urlopen(URL, timeout=60) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"{URL}: SHA-256 {digest} does not match the pinned {SHA256}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        dll = z.read(f"wintun/bin/{arch}/wintun.dll")
        licence = z.read("wintun/LICENSE.txt")
    try:
        wintun_dll.check_bytes(arch, dll, URL)
        wintun_dll.check_license(licence, URL)
    except wintun_dll.Unverified as exc:
        print(exc, file=sys.stderr)
        return 1
    target = Path(__file__).resolve().parent.parent / "src" / "fasttun"
    (target / "wintun.dll").write_bytes(dll)
    (target / wintun_dll.LICENSE_NAME).write_bytes(licence)
    print(f"staged wintun {VERSION} ({arch}, {len(dll)} bytes) and its licence in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
