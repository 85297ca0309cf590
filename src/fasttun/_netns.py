"""Linux network namespaces for the current thread, through setns(2)/unshare(2) (no external program).

Used by the demo, the benchmarks and the tests to keep their devices and traffic inside a namespace of their
own. A namespace applies per thread: threads and child processes started while inside inherit it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000

_libc = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        # The C library the interpreter already uses (dlopen(NULL)); ctypes.util.find_library would run
        # ldconfig or a compiler, and the library starts no process.
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def current_fd() -> int:
    """An fd for this thread's network namespace (close it when done)."""
    return os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def setns(fd: int) -> None:
    """Moves this thread into the network namespace that fd refers to."""
    _check(_c().setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")


@contextlib.contextmanager
def entered(path_or_fd: str | int) -> Iterator[None]:
    """Runs the body of the with-block in another network namespace (a path such as /run/netns/NAME, or an
    fd), then returns this thread to where it was, also on error."""
    home = current_fd()
    target = os.open(path_or_fd, os.O_RDONLY | os.O_CLOEXEC) if isinstance(path_or_fd, str) else path_or_fd
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)
        if isinstance(path_or_fd, str):
            os.close(target)


@contextlib.contextmanager
def private() -> Iterator[int]:
    """Runs the body in a new, empty network namespace of this thread's own (only a loopback device, down).
    Yields an fd of the new namespace; it disappears when the body ends and nothing else uses it."""
    home = current_fd()
    try:
        _check(_c().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET) (needs CAP_SYS_ADMIN, i.e. root)")
        mine = current_fd()
        try:
            yield mine
        finally:
            setns(home)
            os.close(mine)
    finally:
        os.close(home)
