"""Calls the tests block on another thread, and readers they wait for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def ended_by_close(call: Callable[[], Any], close: Callable[[], Any], settle: float = 0.2,
                   timeout: float = 5.0) -> tuple[Any, float]:
    """Runs call() on a thread, calls close() once the call had `settle` seconds to block, and returns how the call
    ended (the exception it raised, else what it returned) and how many seconds after the close. Fails unless it
    ended within `timeout` seconds."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        outcome.append(time.monotonic())

    t = threading.Thread(target=run)
    t.start()
    time.sleep(settle)
    closed = time.monotonic()
    close()
    t.join(timeout)
    assert not t.is_alive(), f"the call was still blocked {timeout} s after the close"
    return outcome[0], outcome[1] - closed


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Whether predicate() came true within `timeout` seconds (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def wait_stopped(reader: Any, timeout: float = 5.0) -> None:
    """Waits for a reader to stop on its own (its callback raised, its device closed); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while reader.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not reader.running
