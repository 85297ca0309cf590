"""A sender thread the in-process scenarios share: it keeps sending one prepared Batch until stopped."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol


class _Sends(Protocol):
    def send_batch(self, packets: Any, *, on_full: Any = ..., timeout: Any = ...) -> int: ...


class Sender:
    """Keeps sending ``batch`` through ``target`` (a device or a UDP endpoint) with ``on_full="wait"`` until
    stopped or ``deadline`` (time.monotonic()) passes; an error other than the target closing is kept in ``error``
    for the runner. A context manager: entering starts the thread, leaving stops it."""

    def __init__(self, target: _Sends, batch: Any, deadline: float, name: str) -> None:
        self.target = target
        self.batch = batch
        self.deadline = deadline
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        import fasttun

        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                self.target.send_batch(self.batch, on_full="wait", timeout=0.05)
        except fasttun.TunClosedError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the runner
            self.error = exc

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5.0)
