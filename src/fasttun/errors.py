"""fasttun's exceptions: one base class, a subclass wherever a caller would branch."""

from __future__ import annotations

import errno as _errno

__all__ = [
    "TunClosedError",
    "TunError",
    "TunExistsError",
    "TunFullError",
    "TunNotFoundError",
    "TunPermissionError",
    "WintunLoadError",
]


class TunError(OSError):
    """A TUN device operation failed. ``errno`` says why in POSIX terms; where the system's own error code
    differs from it (a Windows error code), ``winerror_code`` keeps that raw code (absent otherwise)."""


class TunPermissionError(TunError, PermissionError):
    """The process lacks the privilege: CAP_NET_ADMIN on Linux, elevation (Administrator) on Windows."""


class TunNotFoundError(TunError, FileNotFoundError):
    """Something the operation needs does not exist: /dev/net/tun, the device to attach to, wintun.dll."""


class TunExistsError(TunError, FileExistsError):
    """The name is taken: a device of that name exists or is in use, or the address is already there."""


class TunClosedError(TunError):
    """The device is closed, or went away (deleted, detached, adapter removed)."""


class TunFullError(TunError):
    """The device could not take more packets right now (send policy "raise"); ``sent`` tells how many of
    the packets went before it filled up."""

    sent: int = 0


class WintunLoadError(TunNotFoundError):
    """wintun.dll could not be loaded: missing, of the wrong architecture, or not Wintun 0.14+."""


_BY_ERRNO: dict[int, type[TunError]] = {
    _errno.EPERM: TunPermissionError,
    _errno.EACCES: TunPermissionError,
    _errno.ENOENT: TunNotFoundError,
    _errno.ENODEV: TunNotFoundError,
    _errno.ENXIO: TunNotFoundError,
    _errno.EEXIST: TunExistsError,
    _errno.EBUSY: TunExistsError,
    _errno.EBADF: TunClosedError,
    _errno.EPIPE: TunClosedError,
}


def from_errno(code: int, message: str, oserr: int = 0) -> TunError:
    """The most specific TunError for a POSIX errno value."""
    exc = _BY_ERRNO.get(code, TunError)(code, message)
    if oserr and oserr != code:
        exc.winerror_code = oserr  # type: ignore[attr-defined]
    return exc
