"""fasttun.aio: batches and sends in coroutines, on the default event loop and on uvloop.

Written once as mixin classes and run on each loop (uvloop's own style). The pair tests exercise the reader
thread hand-off (no file descriptor); the Linux tests a real device driven by the loop itself."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, Callable

import pytest

import fasttun
from fasttun import aio
from packets import minimal_ipv4, seq_of, udp_payload
from conftest import IN_CI

try:
    import uvloop
except ImportError:  # Windows, or not installed
    uvloop = None

LOCAL4, PEER4 = "10.202.0.1", "10.202.0.2"


def _uvloop_or_skip() -> Callable[[], asyncio.AbstractEventLoop]:
    if sys.platform == "win32":
        pytest.skip("uvloop does not run on Windows (the default loop is tested there)")
    if uvloop is None:
        if IN_CI and sys.platform != "win32":
            pytest.fail("CI must run the asyncio tests on uvloop too: pip install uvloop")
        pytest.skip("uvloop is not installed (pip install uvloop)")
    return uvloop.new_event_loop


class Loop:
    """How a test class runs its coroutines; subclasses pick the event loop."""

    def new_loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(coro, timeout)

        loop = self.new_loop()
        try:
            return loop.run_until_complete(bounded())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


class DefaultLoop(Loop):
    def new_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()


class UVLoop(Loop):
    def new_loop(self) -> asyncio.AbstractEventLoop:
        return _uvloop_or_skip()()


def packets(n: int, start: int = 0) -> list[bytes]:
    return [minimal_ipv4(60, i) for i in range(start, start + n)]


def count_sleeps(loop: asyncio.AbstractEventLoop, sleeps: list[object]) -> None:
    """Records each time the default loop's selector is asked to sleep (a timeout other than 0)."""
    selector = loop._selector  # type: ignore[attr-defined]
    real = selector.select

    def counting(timeout=None):  # type: ignore[no-untyped-def]
        if timeout is None or timeout > 0.001:
            sleeps.append(timeout)
        return real(timeout)

    selector.select = counting


# ---- the in-memory pair: a reader thread hands batches to the loop ----------------------------------------


class PairTests(Loop):
    def test_async_for_receives_everything_in_order(self, ends):
        a, b = ends

        async def main() -> list[int]:
            seen: list[int] = []
            a.send_batch(packets(3000))
            async for batch in aio.batches(b, batch_size=64):
                seen.extend(seq_of(p) for p in batch)  # the views are valid for the whole body
                await asyncio.sleep(0)                 # ... also across awaits
                if len(seen) >= 3000:
                    break
            return seen

        assert self.run(main()) == list(range(3000))
        assert b.stats.rx_packets == 3000

    def test_views_expire_when_the_next_batch_is_asked_for(self, ends):
        a, b = ends

        async def main() -> None:
            a.send_batch(packets(2))
            async with aio.batches(b, batch_size=1) as stream:
                first = await stream.__anext__()
                view = first[0]
                assert seq_of(view) == 0
                second = await stream.__anext__()
                with pytest.raises(ValueError):
                    bytes(view)
                with pytest.raises(ValueError):
                    len(first)
                assert seq_of(second[0]) == 1

        self.run(main())

    def test_leaving_the_loop_leaves_the_other_packets_on_the_device(self, ends):
        a, b = ends

        async def main() -> list[int]:
            a.send_batch(packets(10))
            got = []
            async for batch in aio.batches(b, batch_size=1):
                got.extend(seq_of(p) for p in batch)
                break
            return got

        assert self.run(main()) == [0]
        assert [seq_of(b.recv(timeout=1)) for _ in range(9)] == list(range(1, 10))

    def test_the_reader_stops_when_the_consumer_leaves(self, ends):
        a, b = ends

        async def main() -> None:
            a.send_batch(packets(3))
            async for _ in aio.batches(b, batch_size=1):
                break

        self.run(main())
        a.send_batch(packets(5, start=3))  # nothing reads behind our back any more
        assert [seq_of(b.recv(timeout=1)) for _ in range(7)] == list(range(1, 8))
        assert b.recv(timeout=0) is None

    def test_closing_the_device_inside_the_loop_ends_it(self, ends):
        a, b = ends

        async def main() -> int:
            a.send_batch(packets(100))
            count = 0
            async for batch in aio.batches(b, batch_size=8):
                count += len(batch)
                b.close()
            return count

        assert self.run(main(), timeout=5) == 8
        assert b.closed

    def test_closing_from_another_task_ends_the_loop(self, ends):
        a, b = ends

        async def main() -> int:
            asyncio.get_running_loop().call_later(0.1, b.close)
            count = 0
            async for batch in aio.batches(b):
                count += len(batch)
            return count

        assert self.run(main(), timeout=5) == 0
        assert b.closed

    def test_closing_from_another_task_under_traffic_never_hangs(self):
        async def one_run() -> int:
            a, b = fasttun.pair(capacity=256)
            stop = asyncio.Event()

            async def produce() -> None:
                i = 0
                while not stop.is_set():
                    try:
                        await aio.send_batch(a, packets(64, start=i))
                    except fasttun.TunClosedError:
                        return
                    i += 64
                    await asyncio.sleep(0)

            async def close_soon() -> None:
                await asyncio.sleep(0.01)
                b.close()

            producer = asyncio.ensure_future(produce())
            closer = asyncio.ensure_future(close_soon())
            seen = 0
            async for batch in aio.batches(b, batch_size=32):
                seen += len(batch)
                await asyncio.sleep(0)
            stop.set()
            await asyncio.wait_for(producer, 2)
            await closer
            a.close()
            return seen

        async def runs() -> list[int]:
            return [await asyncio.wait_for(one_run(), 3) for _ in range(20)]

        seen = self.run(runs(), timeout=30)
        assert len(seen) == 20 and all(n >= 0 for n in seen)
        assert sum(seen) > 0

    def test_closing_from_another_thread_wakes_the_waiting_loop(self, ends):
        a, b = ends

        async def main() -> int:
            threading.Timer(0.1, b.close).start()
            count = 0
            async for batch in aio.batches(b):
                count += len(batch)
            return count

        assert self.run(main(), timeout=5) == 0

    def test_the_peer_closing_raises_after_the_last_packets(self, ends):
        a, b = ends

        async def main() -> list[int]:
            got: list[int] = []
            a.send_batch(packets(3))
            asyncio.get_running_loop().call_later(0.1, a.close)
            with pytest.raises(fasttun.TunClosedError):
                async for batch in aio.batches(b):
                    got.extend(seq_of(p) for p in batch)
            return got

        assert self.run(main(), timeout=5) == [0, 1, 2]

    def test_recv_batch_returns_a_batch_to_keep_or_an_empty_one_after_the_timeout(self, ends):
        a, b = ends

        async def main() -> None:
            empty = await aio.recv_batch(b, 8, timeout=0.05)
            assert len(empty) == 0
            asyncio.get_running_loop().call_later(0.05, a.send_batch, packets(3))
            batch = await aio.recv_batch(b, 8, timeout=5)
            await asyncio.sleep(0.05)
            assert [seq_of(p) for p in batch] == [0, 1, 2]  # still valid: it is ours

        self.run(main())

    def test_a_cancelled_wait_loses_nothing(self, ends):
        a, b = ends

        async def main() -> list[int]:
            stream = aio.batches(b, batch_size=4)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.__anext__(), 0.05)
            a.send_batch(packets(4))
            await asyncio.sleep(0.05)  # the reader reads them for the cancelled wait
            stream.close()
            batch = await aio.recv_batch(b, 4, timeout=1)
            return [seq_of(p) for p in batch]

        assert self.run(main()) == [0, 1, 2, 3]

    def test_send_batch_waits_for_room_without_blocking_the_loop(self):
        async def main() -> tuple[list[int], int]:
            a, b = fasttun.pair(capacity=16)
            ticks = 0
            got: list[int] = []

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            async def consume() -> None:
                async for batch in aio.batches(b, batch_size=16):
                    got.extend(seq_of(p) for p in batch)
                    await asyncio.sleep(0.005)
                    if len(got) >= 500:
                        return

            ticker = asyncio.ensure_future(tick())
            consumer = asyncio.ensure_future(consume())
            sent = await aio.send_batch(a, packets(500), timeout=10)
            await asyncio.wait_for(consumer, 5)
            ticker.cancel()
            assert sent == 500 and a.stats.tx_dropped_full == 0
            a.close()
            b.close()
            return got, ticks

        got, ticks = self.run(main())
        assert got == list(range(500))
        assert ticks > 10  # the loop kept running while the sender waited

    def test_bad_arguments_say_what_is_allowed(self, ends):
        a, b = ends
        with pytest.raises(ValueError, match="batch_size"):
            aio.batches(b, batch_size=0)
        with pytest.raises(TypeError, match="Tun"):
            aio.batches(object())  # type: ignore[arg-type]

        async def main() -> None:
            with pytest.raises(ValueError, match="max_packets"):
                await aio.recv_batch(b, 0)
            with pytest.raises(ValueError):
                await aio.send(a, b"\x45not a packet")

        self.run(main())


class TestPairOnDefaultLoop(PairTests, DefaultLoop):
    def test_waiting_does_not_wake_the_loop(self, ends):
        a, b = ends
        sleeps: list[object] = []

        async def main() -> None:
            count_sleeps(asyncio.get_running_loop(), sleeps)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(aio.batches(b).__anext__(), 0.6)

        self.run(main())
        assert len(sleeps) <= 2, sleeps  # one wake-up per 100 ms would be 6 or more


class TestPairOnUvloop(PairTests, UVLoop):
    pass


# ---- Linux: the event loop drives a real device -----------------------------------------------------------


@pytest.fixture
def quiet_netns(netns):
    """A namespace whose new devices get no IPv6 (the kernel's own solicitations would be traffic too)."""
    with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:  # this thread's namespace's
        f.write("1")
    return netns


def open_tun(**kw: Any) -> fasttun.Tun:
    return fasttun.Tun("ftaio0", addresses=[f"{LOCAL4}/24"], up=True, txqueuelen=10000, **kw)


def flood(count: int, port: int = 9100) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(struct.pack("!I", i), (PEER4, port))


def flood_from_ports(count: int, port: int = 9100) -> None:
    """Two source ports, so that a multi-queue device spreads the flows over its queues."""
    for sport in (40001, 40002):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("", sport))
            for i in range(count // 2):
                s.sendto(struct.pack("!I", i), (PEER4, port))


def udp_seqs(batch: fasttun.Batch, port: int = 9100) -> list[int]:
    out = []
    for p in batch:
        if p[0] >> 4 == 4 and p[9] == 17 and struct.unpack_from("!H", bytes(p[22:24]))[0] == port:
            out.append(struct.unpack_from("!I", udp_payload(p))[0])
    return out


class LinuxTests(Loop):
    def test_the_loop_reads_the_device_without_a_thread(self, quiet_netns):
        with open_tun() as tun:
            async def main() -> list[int]:
                got: list[int] = []
                loop = asyncio.get_running_loop()
                loop.call_later(0.05, flood, 2000)
                stream = aio.batches(tun, batch_size=256)
                async for batch in stream:
                    assert stream._feed is None and tun._readers == []  # no reader thread
                    got.extend(udp_seqs(batch))
                    if len(got) >= 2000:
                        break
                return got

            assert self.run(main()) == list(range(2000))

    def test_a_stream_that_never_waits_still_lets_other_tasks_run(self, quiet_netns):
        with open_tun() as tun:
            async def main() -> tuple[list[int], list[int]]:
                turns = [0]
                seen: list[int] = []   # how often the other task had run, at each batch

                async def other() -> None:
                    while True:
                        turns[0] += 1
                        await asyncio.sleep(0)

                flood(400)   # queued before the loop reads: every batch is there at once
                task = asyncio.create_task(other())
                await asyncio.sleep(0)
                got: list[int] = []
                async for batch in aio.batches(tun, batch_size=4):
                    seen.append(turns[0])
                    got.extend(udp_seqs(batch))
                    if len(got) >= 400:
                        break
                task.cancel()
                return got, seen

            got, seen = self.run(main())
            assert got == list(range(400))
            assert len(seen) >= 100
            assert seen[-1] - seen[0] >= len(seen) // 16, seen   # without it: no turn before the device is empty

    def test_leaving_the_loop_leaves_the_other_packets_on_the_device(self, quiet_netns):
        with open_tun() as tun:
            async def main() -> list[int]:
                flood(10)
                async for batch in aio.batches(tun, batch_size=1):
                    return udp_seqs(batch)
                return []

            first = self.run(main())
            rest = [udp_seqs(fasttun.make_batch([tun.recv(timeout=1)])) for _ in range(10 - len(first))]
            assert first + [s for r in rest for s in r] == list(range(10))

    def test_closing_inside_the_loop_from_another_task_or_thread_ends_it(self, quiet_netns):
        async def inside(tun: fasttun.Tun) -> None:
            flood(5)
            async for _ in aio.batches(tun):
                tun.close()

        async def other_task(tun: fasttun.Tun) -> None:
            asyncio.get_running_loop().call_later(0.05, tun.close)
            async for _ in aio.batches(tun):
                pass

        async def other_thread(tun: fasttun.Tun) -> None:
            threading.Timer(0.05, tun.close).start()
            async for _ in aio.batches(tun):
                pass

        for how in (inside, other_task, other_thread):
            tun = open_tun()
            self.run(how(tun), timeout=5)
            assert tun.closed, how.__name__
            self.run(asyncio.sleep(0))  # the loop is still usable afterwards

    def test_a_multiqueue_device_delivers_every_flow(self, quiet_netns):
        with open_tun(queues=2) as tun:
            async def main() -> list[int]:
                got: list[int] = []
                asyncio.get_running_loop().call_later(0.05, flood_from_ports, 400)
                async for batch in aio.batches(tun, batch_size=64):
                    got.extend(udp_seqs(batch))
                    if len(got) >= 400:
                        break
                return sorted(got)

            assert self.run(main()) == sorted(list(range(200)) * 2)

    def test_a_removed_device_raises(self, quiet_netns):
        tun = open_tun()
        try:
            async def main() -> None:
                asyncio.get_running_loop().call_later(0.05, quiet_netns.run, "ip", "link", "del", "ftaio0")
                with pytest.raises(fasttun.TunError):
                    async for _ in aio.batches(tun):
                        pass

            self.run(main(), timeout=5)
        finally:
            tun.close()

    def test_closing_from_another_task_under_traffic_never_hangs(self, quiet_netns):
        def blast(stop: threading.Event) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                while not stop.is_set():
                    try:
                        s.sendto(b"x" * 64, (PEER4, 9100))
                    except OSError:  # the device (and its route) went away
                        time.sleep(0.001)

        async def one_run() -> int:
            tun = open_tun()
            asyncio.get_running_loop().call_later(0.01, tun.close)
            seen = 0
            async for batch in aio.batches(tun, batch_size=32):
                seen += len(batch)
                await asyncio.sleep(0)
            return seen

        async def runs() -> list[int]:
            return [await asyncio.wait_for(one_run(), 3) for _ in range(20)]

        stop = threading.Event()
        sender = threading.Thread(target=blast, args=(stop,))
        sender.start()
        try:
            seen = self.run(runs(), timeout=30)
        finally:
            stop.set()
            sender.join(5)
        assert len(seen) == 20 and sum(seen) > 0

    def test_recv_batch_and_send_batch(self, quiet_netns):
        with open_tun() as tun:
            async def main() -> tuple[int, list[int]]:
                assert len(await aio.recv_batch(tun, timeout=0.05)) == 0
                asyncio.get_running_loop().call_later(0.05, flood, 3)
                got: list[int] = []
                while len(got) < 3:
                    got.extend(udp_seqs(await aio.recv_batch(tun, 64, timeout=5)))
                echo = [minimal_ipv4(60, i) for i in range(100)]
                return await aio.send_batch(tun, echo, on_full="wait", timeout=5), got

            sent, got = self.run(main())
            assert (sent, got) == (100, [0, 1, 2])
            assert tun.stats.tx_packets == 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TUN backend")
class TestLinuxOnDefaultLoop(LinuxTests, DefaultLoop):
    def test_waiting_does_not_wake_the_loop(self, quiet_netns):
        sleeps: list[object] = []
        with open_tun() as tun:
            async def main() -> list[int]:
                count_sleeps(asyncio.get_running_loop(), sleeps)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(aio.batches(tun).__anext__(), 0.6)
                asyncio.get_running_loop().call_later(0.05, flood, 1)
                return udp_seqs(await aio.recv_batch(tun, timeout=5))

            assert self.run(main()) == [0]
        assert len(sleeps) <= 4, sleeps  # one wake-up per 100 ms would be 6 or more in the first wait alone

    def test_a_stream_leaves_the_loop_watching_nothing_when_it_ends(self, quiet_netns):
        with open_tun() as tun:
            async def main() -> tuple[list[int], bool]:
                loop = asyncio.get_running_loop()
                watched = loop._selector.get_map  # type: ignore[attr-defined]
                got: list[int] = []
                loop.call_later(0.05, flood, 1)
                async for batch in aio.batches(tun):   # waits first: the descriptor is registered
                    got.extend(udp_seqs(batch))
                    loop.call_later(0.05, flood, 1)
                    if len(got) >= 2:
                        break
                await asyncio.sleep(0)
                return got, tun.fileno() in watched()

            got, still_watched = self.run(main())
            assert got == [0, 0] and not still_watched


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TUN backend")
class TestLinuxOnUvloop(LinuxTests, UVLoop):
    pass
