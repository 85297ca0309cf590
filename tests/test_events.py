"""fasttun.events: link up/down, MTU changes, addresses added and removed, the device removed, as the kernel's
rtnetlink groups announce them for a real device in a namespace of the test's own."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

import fasttun
from threads import ended_by_close
from fasttun.events import DeviceEvent, DeviceEvents
from test_aio import DefaultLoop, Loop, UVLoop
from cbuild import ROOT, SANITIZE_ASAN, build_and_run, c_sources, compiler

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="rtnetlink is Linux's")]


def test_the_decoder_under_address_and_undefined_behaviour_sanitizers():
    """csrc/events/ft_events.c's parser on well-formed, foreign, malformed and random messages (tests/c)."""
    sources = [*c_sources("linux", "core", "offload", "events", "posix"), ROOT / "tests" / "c" / "test_events.c"]
    passed, failed = build_and_run(compiler("gcc"), SANITIZE_ASAN, sources, "events_asan", timeout=120)
    assert failed == 0 and passed >= 25


def changes(events: list[DeviceEvent]) -> list[tuple[str, object]]:
    """What a test compares: the kind and its detail, without the kernel's own link-local IPv6 addresses."""
    out: list[tuple[str, object]] = []
    for e in events:
        if e.address is not None and e.address.is_link_local:
            continue
        out.append((e.kind, str(e.address) if e.address is not None else e.mtu))
    return out


def collect(events: DeviceEvents, until: int, timeout: float = 3.0) -> list[tuple[str, object]]:
    got: list[tuple[str, object]] = []
    while len(got) < until:
        batch = events.get(timeout)
        if not batch:
            break
        got.extend(changes(batch))
    return got


def test_each_change_of_the_device_is_one_event(netns):
    tun = fasttun.Tun("ftev0")
    try:
        with DeviceEvents(tun) as events:
            assert events.poll() == []
            tun.up()
            assert collect(events, 1) == [("up", 1500)]
            tun.mtu = 1400
            assert collect(events, 1) == [("mtu", 1400)]
            tun.add_address("10.205.0.1/24")
            tun.add_address("fd00:205::1/64")
            assert collect(events, 2) == [("address-added", "10.205.0.1/24"), ("address-added", "fd00:205::1/64")]
            tun.remove_address("10.205.0.1/24")
            assert collect(events, 1) == [("address-removed", "10.205.0.1/24")]
            tun.down()
            assert collect(events, 2) == [("down", 1400), ("address-removed", "fd00:205::1/64")]
            netns.run("ip", "link", "del", "ftev0")
            assert collect(events, 1) == [("removed", None)]
            assert events.get(0.05) == []  # nothing after the end
            assert events.dropped == 0
    finally:
        tun.close()


def test_other_devices_changes_are_not_reported(netns):
    with fasttun.Tun("ftev0") as mine, fasttun.Tun("ftev1") as other:
        with DeviceEvents(mine) as events:
            other.up()
            other.mtu = 1300
            other.add_address("10.206.0.1/24")
            mine.mtu = 1280
            assert collect(events, 1) == [("mtu", 1280)]
            assert events.get(0.1) == []


def test_a_device_is_named_by_tun_name_or_index(netns):
    with fasttun.Tun("ftev0") as tun:
        for device in (tun, "ftev0", tun.index):
            with DeviceEvents(device) as events:
                assert (events.name, events.index) == ("ftev0", tun.index)
    with pytest.raises(TypeError, match="positive index"):
        DeviceEvents(0)
    with pytest.raises(OSError):
        DeviceEvents("no-such-dev0")


def test_close_from_another_thread_ends_a_waiting_get(netns):
    # get() waits in C on the socket and on close: it returns at once instead of waiting out its timeout (or
    # forever, with timeout=None, on a descriptor number that may already be reused).
    with fasttun.Tun("ftev0") as tun:
        events = DeviceEvents(tun)
        got, seconds = ended_by_close(lambda: events.get(None), events.close)
        assert got == [] and seconds < 2.0


class AsyncEventTests(Loop):
    def test_async_for_sees_the_changes_and_ends_when_the_device_goes(self, netns):
        tun = fasttun.Tun("ftev0")

        async def main() -> list[tuple[str, object]]:
            loop = asyncio.get_running_loop()
            steps = [tun.up, lambda: setattr(tun, "mtu", 1420), lambda: tun.add_address("10.207.0.1/24"),
                     lambda: netns.run("ip", "link", "del", "ftev0")]
            for i, step in enumerate(steps):
                loop.call_later(0.05 * (i + 1), step)
            got: list[DeviceEvent] = []
            async with DeviceEvents(tun) as events:
                async for event in events:
                    got.append(event)
            return changes(got)

        try:
            got = self.run(main(), timeout=5)
        finally:
            tun.close()
        assert got[:3] == [("up", 1500), ("mtu", 1420), ("address-added", "10.207.0.1/24")]
        # Deleting a device that is up takes it down and its addresses away first; "removed" is the last event.
        assert sorted(got[3:-1]) == [("address-removed", "10.207.0.1/24"), ("down", 1420)]
        assert got[-1] == ("removed", None)

    def test_close_from_another_task_ends_async_for(self, netns):
        # The socket is taken out of the loop before it is closed: the iteration ends instead of waiting for a
        # descriptor that can no longer become readable.
        with fasttun.Tun("ftev0") as tun:
            async def main() -> list[DeviceEvent]:
                events = DeviceEvents(tun)
                asyncio.get_running_loop().call_later(0.1, events.close)
                return [event async for event in events]

            assert self.run(main(), timeout=5) == []

    def test_close_from_another_thread_ends_async_for(self, netns):
        with fasttun.Tun("ftev0") as tun:
            async def main() -> list[DeviceEvent]:
                events = DeviceEvents(tun)
                closer = threading.Timer(0.1, events.close)
                closer.start()
                try:
                    return [event async for event in events]
                finally:
                    closer.join()

            assert self.run(main(), timeout=5) == []


class TestEventsOnDefaultLoop(AsyncEventTests, DefaultLoop):
    pass


class TestEventsOnUvloop(AsyncEventTests, UVLoop):
    pass
