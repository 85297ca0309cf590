"""Windows: where wintun.dll comes from, the driver, and Wintun's log.

The DLL is loaded once per process, from an explicit path (``load_wintun(path)`` or the FASTTUN_WINTUN_DLL
environment variable), else the copy inside the fasttun package (the wheel ships it), else System32; never
from the current directory or PATH."""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from pathlib import Path

from fasttun import _core
from fasttun.errors import TunError, WintunLoadError

ENV_VAR = "FASTTUN_WINTUN_DLL"
# The namespace of the adapter GUIDs fasttun derives (UUIDv5); fixed once, never to change: a changed GUID
# would make Windows see a new network (a new profile, a "#2" name) for the same adapter.
GUID_NAMESPACE = uuid.UUID("244175f7-7cee-4b64-a5b4-f1546e5e2fb9")
wintun_log = logging.getLogger("fasttun.wintun")
_lock = threading.Lock()
_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR}
# FILETIME counts 100 ns steps from 1601-01-01; Unix time starts 11644473600 s later.
_FILETIME_UNIX_OFFSET = 116444736000000000


def _forward_log(level: int, filetime: int, message: str) -> None:
    py_level = _LEVELS.get(level, logging.ERROR)
    if not wintun_log.isEnabledFor(py_level):
        return
    record = wintun_log.makeRecord(wintun_log.name, py_level, "wintun.dll", 0, message, (), None)
    created = (filetime - _FILETIME_UNIX_OFFSET) / 1e7
    if created > 0:
        record.created = created
        record.msecs = (created - int(created)) * 1000
    wintun_log.handle(record)


def _default_path() -> str | None:
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return explicit
    bundled = Path(__file__).resolve().parent / "wintun.dll"
    return str(bundled) if bundled.exists() else None


def load_wintun(path: str | os.PathLike[str] | None = None) -> None:
    """Loads wintun.dll now (otherwise the first Wintun device loads it). ``path``: an absolute path to the DLL;
    without it FASTTUN_WINTUN_DLL, then the package's own copy, then System32. Raises WintunLoadError saying
    what to do when the DLL is missing, of the wrong architecture or not Wintun 0.14+."""
    if sys.platform != "win32":
        raise TunError(38, "wintun.dll is loaded only on Windows")
    chosen = os.fspath(path) if path is not None else _default_path()
    if chosen is not None and not os.path.isabs(chosen):
        raise ValueError(f"the path to wintun.dll must be absolute (never searched in the current directory or "
                         f"PATH), got {chosen!r}")
    with _lock:
        _core.wintun_set_log_sink(_forward_log)
        try:
            _core.wintun_load(chosen)
        except TunError as exc:
            raise WintunLoadError(exc.errno, str(exc.strerror or exc)) from None


def ensure_loaded() -> None:
    if not _core.wintun_loaded():
        load_wintun()


def wintun_driver_version() -> tuple[int, int] | None:
    """(major, minor) of the running Wintun driver, or None when it is not loaded (no adapter exists yet)."""
    ensure_loaded()
    return _core.wintun_driver_version()


def delete_wintun_driver() -> None:
    """Removes the Wintun driver from the system when no adapter uses it (needs elevation)."""
    ensure_loaded()
    _core.wintun_delete_driver()


def adapter_guid(tunnel_type: str, name: str) -> uuid.UUID:
    """The GUID an adapter gets when none is given: a UUIDv5 of its tunnel type and name (the name compared
    without case, as Windows compares adapter names), so that reopening the same name gives the same
    interface and Windows keeps its network profile instead of piling up new ones."""
    return uuid.uuid5(GUID_NAMESPACE, f"{tunnel_type}\n{name.casefold()}")
