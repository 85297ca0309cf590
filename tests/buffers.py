"""Bytes-like objects whose buffer export runs Python code (to change a list while fasttun walks it).

Python 3.12+ has ``__buffer__`` (PEP 688). Older versions use ft_callback_buffer, a tiny Cython extension of the
tests (tests/ft_callback_buffer.pyx): the sanitized run has it on its path; otherwise it is built on first use
into tests/.build/ (needs Cython and gcc: a test skips without them, and fails in CI)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


class PythonBuffer:
    """PEP 688: ``callback()`` runs each time a buffer is requested, then ``data`` is exported."""

    def __init__(self, data: bytes, callback: Callable[[], object]) -> None:
        self.data = data
        self.callback = callback
        self.calls = 0

    def __buffer__(self, flags: int) -> memoryview:
        self.calls += 1
        self.callback()
        return memoryview(self.data)


def _compiled() -> Any:
    try:
        import ft_callback_buffer
    except ImportError:
        import shutil

        import pytest

        import extbuild

        why = None
        if shutil.which(os.environ.get("CC", "gcc")) is None:
            why = "gcc is not installed (apt-get install gcc)"
        else:
            try:
                import Cython  # noqa: F401
            except ImportError:
                why = "Cython is not installed (pip install '.[test]')"
        if why:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run the buffer-callback tests, but {why}")
            pytest.skip(f"on Python < 3.12 a buffer export that runs Python code needs a helper extension: {why}")
        sys.path.insert(0, str(extbuild.build_helper("helper", [])))
        import ft_callback_buffer
    return ft_callback_buffer


def callback_buffer(data: bytes, callback: Callable[[], object]) -> Any:
    """An object exporting ``data`` whose export first calls ``callback()``."""
    if sys.version_info >= (3, 12):
        return PythonBuffer(data, callback)
    return _compiled().CallbackBuffer(data, callback)
