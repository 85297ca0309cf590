"""Windows: where wintun.dll comes from, the driver, and Wintun's log.

The DLL is loaded once per process, from an explicit path (``load_wintun(path)`` or the FASTTUN_WINTUN_DLL
environment variable), else the copy inside the fasttun package (the wheel ships it), else System32; never
from the current directory or PATH."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from fasttun import _core
from fasttun._tun import Address, FullPolicy, Tun, _open_mode
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


class WintunAdapter(Tun):
    """A Wintun adapter (Windows); ``fasttun.Tun(...)`` opens one on Windows."""

    def __init__(
        self,
        name: str,
        *,
        mtu: int | None = None,
        addresses: Iterable[Address] = (),
        open_existing: bool | None = None,
        up: bool = False,
        on_full: FullPolicy = "drop",
        send_timeout: float | None = None,
        tunnel_type: str = "fasttun",
        guid: uuid.UUID | str | None = None,
        ring_capacity: int | Literal["auto"] | None = None,
        coalesce: bool = False,
        remote_csum: bool = False,
    ) -> None:
        """Opens (or creates) a Wintun adapter.

        ``name`` is the adapter's name (required, at most 127 characters), ``tunnel_type`` its type, ``guid`` a
        fixed interface GUID (default: a UUIDv5 of ``tunnel_type`` and ``name``, the same every time),
        ``ring_capacity`` the session ring in bytes (a power of two, 128 KiB..64 MiB, default 4 MiB), or
        ``"auto"``: 4 MiB, doubled (session restarted, up to 64 MiB, at most once per 2 s) when the rings overflow
        (see :attr:`ring_grows`). ``coalesce=True`` merges consecutive TCP segments of one flow into one packet of
        up to 64 KiB before handing it to Wintun (Windows' stack pays per packet); a merged packet that finds the
        ring full is dropped and counted whatever ``on_full`` says. ``remote_csum=True`` takes, in ``send`` and
        ``send_batch``, packets whose TCP/UDP checksum a Linux fasttun device left partial behind a 4-byte header
        (see ``LinuxTun(remote_csum=True)``) and finishes their checksums before Wintun gets them, so a Windows end
        can be the peer of a Linux tunnel end that leaves them to the far end. The other options are
        :class:`Tun`'s."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if not name:
            raise ValueError("a Wintun adapter needs a name (1..127 characters)")
        if not isinstance(tunnel_type, str) or not tunnel_type:
            raise ValueError("tunnel_type must be a non-empty str")
        if guid is None:
            guid = adapter_guid(tunnel_type, name)  # stable: the same name reopens the same interface
        guid_bytes = (guid if isinstance(guid, uuid.UUID) else uuid.UUID(str(guid))).bytes_le
        if not isinstance(coalesce, bool):
            raise TypeError(f"coalesce must be True or False, not {coalesce!r}")
        auto = ring_capacity == "auto"
        capacity = _core.WINTUN_DEFAULT_RING_CAPACITY if ring_capacity is None or auto else ring_capacity
        if isinstance(capacity, str):
            raise ValueError(f"ring_capacity must be a number of bytes, None or 'auto', not {capacity!r}")
        mode = _open_mode(open_existing)

        def open_adapter() -> _core.Device:
            ensure_loaded()
            return _core.open_wintun(name, tunnel_type, guid_bytes, capacity, mode, mtu, auto, coalesce,
                                     bool(remote_csum))

        self._open(open_adapter, addresses, up, on_full, send_timeout)

    @property
    def luid(self) -> int:
        """The adapter's LUID (what the IP Helper API keys on)."""
        self._check_open()
        return int(self._dev.wintun_info()[0])

    @property
    def guid(self) -> uuid.UUID:
        """The adapter's interface GUID."""
        self._check_open()
        return uuid.UUID(bytes_le=self._dev.wintun_guid())

    @property
    def ring_capacity(self) -> int:
        """The size of the Wintun session ring in bytes (with ``ring_capacity="auto"``: now)."""
        self._check_open()
        return int(self._dev.wintun_info()[2])

    @property
    def ring_grows(self) -> int:
        """How many times ``ring_capacity="auto"`` doubled the ring (each a session restart)."""
        self._check_open()
        return int(self._dev.wintun_info()[3])

    @property
    def remote_csum(self) -> bool:
        """Whether the adapter takes packets behind a remote-checksum header (``remote_csum=True``)."""
        self._check_open()
        return bool(self._dev.remote_csum())

    def set_dns(self, servers: Iterable[str]) -> None:
        """The adapter's DNS servers (an empty list clears them)."""
        self._check_open()
        parsed = [ipaddress.ip_address(s) for s in servers]
        self._dev.wintun_set_dns([(a.version, a.packed) for a in parsed])
