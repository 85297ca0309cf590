"""asyncio: receive batches from a TUN device in a coroutine, without copying them.

    async for batch in fasttun.aio.batches(tun, batch_size=64):
        for packet in batch:          # valid until the loop asks for the next batch
            ...
        tun.send_batch(replies)       # sending does not block (policy "drop"), call it directly

The device's reader thread hands each batch over to the event loop and waits until the loop asks for the next
one, so the batch's zero-copy views stay valid for the whole body of the ``async for`` and the reader never
runs ahead of the coroutine (the device's own queue absorbs bursts meanwhile)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Optional

from fasttun._core import Batch
from fasttun._tun import Reader, Tun

_POLL_S = 0.1  # how often a waiting reader thread checks that the consumer still exists


class _Handoff:
    """One batch at a time from the reader thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=1)
        self.consumed = threading.Event()
        self.closed = False

    def on_batch(self, batch: Batch) -> None:  # the reader thread
        if self.closed:
            return
        self.consumed.clear()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, batch)
        # Wait (without the GIL) until the coroutine asks for the next batch: only then may the views expire.
        while not self.consumed.wait(_POLL_S):
            if self.closed or self.loop.is_closed():
                return


async def batches(tun: Tun, batch_size: int = 64, *, spin_us: Optional[int] = None, adaptive: bool = True,
                  adaptive_pps: Optional[int] = None) -> AsyncIterator[Batch]:
    """Yields the device's packets batch by batch, each valid until the next iteration. Ending the loop (break,
    an exception, cancellation) stops the reader. Errors of the reader (the device was removed) are raised."""
    handoff = _Handoff(asyncio.get_running_loop())
    reader: Reader = tun.start_reader(handoff.on_batch, batch_size, spin_us=spin_us, adaptive=adaptive,
                                      adaptive_pps=adaptive_pps)
    try:
        while True:
            getter = asyncio.ensure_future(handoff.queue.get())
            while not getter.done():
                await asyncio.wait({getter}, timeout=_POLL_S)
                if not getter.done() and not reader.running:
                    getter.cancel()
                    reader.join(timeout=1.0)  # raises what ended the reader, if anything
                    return
            batch = getter.result()
            try:
                yield batch
            finally:
                handoff.consumed.set()
    finally:
        handoff.closed = True
        for queue in reader._queues:  # before the reader thread returns from on_batch: it must not read on
            queue.request_stop()
        handoff.consumed.set()
        await asyncio.get_running_loop().run_in_executor(None, reader.stop)
