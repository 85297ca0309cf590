"""Puts the official wintun.dll of one architecture into src/fasttun/ before a Windows wheel is built.

The release zip is downloaded from wintun.net and checked against its pinned SHA-256; nothing else is trusted.
Usage: python tools/stage_wintun.py amd64|arm64|x86|arm"""

from __future__ import annotations

import hashlib
import io
import sys
import urllib.request
import zipfile
from pathlib import Path

VERSION = "0.14.1"
URL = f"https://www.wintun.net/builds/wintun-{VERSION}.zip"
SHA256 = "07c256185d6ee3652e09fa55c0b673e2624b565e02c4b9091c79ca7d2f24ef51"
ARCHES = ("amd64", "arm64", "x86", "arm")


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
    target = Path(__file__).resolve().parent.parent / "src" / "fasttun" / "wintun.dll"
    target.write_bytes(dll)
    print(f"staged wintun {VERSION} ({arch}, {len(dll)} bytes) at {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
