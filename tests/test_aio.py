"""fasttun.aio: batches in a coroutine, zero-copy, with the reader stopped when the loop ends."""

from __future__ import annotations

import asyncio

import pytest

import fasttun
from fasttun import aio
from packets import minimal_ipv4, seq_of


def test_async_for_receives_everything_in_order(ends):
    a, b = ends

    async def main() -> list[int]:
        seen: list[int] = []
        a.send_batch([minimal_ipv4(60, i) for i in range(3000)])
        async for batch in aio.batches(b, batch_size=64):
            seen.extend(seq_of(p) for p in batch)  # the views are valid for the whole body
            await asyncio.sleep(0)                 # ... also across awaits
            if len(seen) >= 3000:
                break
        return seen

    assert asyncio.run(main()) == list(range(3000))
    assert b.stats.rx_packets == 3000


def test_views_expire_when_the_next_batch_is_asked_for(ends):
    a, b = ends

    async def main() -> tuple[memoryview, fasttun.Batch]:
        a.send(minimal_ipv4(60, 1))
        async for batch in aio.batches(b):
            kept = (batch[0], batch)
            break
        return kept

    view, batch = asyncio.run(main())
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(ValueError):
        len(batch)


def test_closing_the_device_ends_the_loop(ends):
    a, b = ends

    async def main() -> int:
        count = 0
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, b.close)
        async for batch in aio.batches(b):
            count += len(batch)
        return count

    assert asyncio.run(asyncio.wait_for(main(), 5)) == 0
    assert b.closed


def test_the_reader_stops_when_the_consumer_leaves(ends):
    a, b = ends

    async def main() -> None:
        a.send_batch([minimal_ipv4(60, i) for i in range(10)])
        async for _ in aio.batches(b, batch_size=1):
            break

    asyncio.run(main())
    assert b._readers == []  # stopped and forgotten
    assert seq_of(b.recv(timeout=1)) == 1  # the rest is still on the device
