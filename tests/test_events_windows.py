"""fasttun.events on Windows, through the Python API, on a Wintun device of our fake wintun.dll.

Windows only: on Linux tests/test_windows_python.py runs this module under Wine in the official Windows CPython
(tests/wine/winpy.py). Wine registers NotifyIpInterfaceChange / NotifyUnicastIpAddressChange but never calls
them back, and its IP Helper knows no Wintun adapter, so the notifications are fed to the very callbacks the
system calls through EventSocket._test_notify (test only), with the rows Windows passes. What this shows:
LUID filtering, the decoding into DeviceEvent kinds, the bounded queue's "overflow", get() waiting in C and
woken by a notification or by close() on another thread, async for through its waiter thread and its end on
close() or "removed", and a DeviceEvents dropped without close(). Real notifications need real Windows."""

from __future__ import annotations

import _thread
import asyncio
import gc
import ipaddress
import os
import sys
import threading
import time

import pytest

import fasttun
from fasttun import _core
from fasttun.events import DeviceEvent, DeviceEvents
from threads import wait_until

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Windows only (on Linux: under Wine, see "
                                                                "tests/test_windows_python.py)")

PARAM, ADD, DELETE, INITIAL = range(4)  # MIB_NOTIFICATION_TYPE
QUEUE = 256  # FT_EV_QUEUE in csrc/events/ft_events.h
OTHER_LUID = 0x0123456700000042


@pytest.fixture
def tun():
    if not os.environ.get("FASTTUN_TEST_FAKE_WINTUN_DIR"):
        pytest.skip("needs the fake wintun.dll: run through tests/test_windows_python.py (tests/wine/winpy.py)")
    dev = fasttun.Tun(f"fasttun-ev-{os.getpid()}")
    yield dev
    dev.close()


def link(events: DeviceEvents, mtu: int, up: bool, luid: int = 0, family: int = 4) -> None:
    addr = b"\0" * (4 if family == 4 else 16)
    events._sock._test_notify(0, PARAM, luid or events_luid(events), 0, family, addr, 0, mtu, up)


def address(events: DeviceEvents, kind: int, text: str, luid: int = 0) -> None:
    iface = ipaddress.ip_interface(text)
    events._sock._test_notify(1, kind, luid or events_luid(events), 0, iface.version, iface.ip.packed,
                              iface.network.prefixlen)


_luids: dict[int, int] = {}


def events_luid(events: DeviceEvents) -> int:
    return _luids[id(events)]


def open_events(tun: fasttun.Tun) -> DeviceEvents:
    events = DeviceEvents(tun)
    _luids[id(events)] = tun.luid
    return events


def kinds(events: list[DeviceEvent]) -> list[tuple[str, object]]:
    return [(e.kind, str(e.address) if e.address is not None else e.mtu) for e in events]


def waiter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fasttun-events-")]


def test_open_and_close_cycles_and_no_descriptor(tun):
    for _ in range(50):
        with open_events(tun) as events:
            assert events.poll() == []
            assert events.name == tun.name
    events = open_events(tun)
    with pytest.raises(fasttun.TunError, match="no descriptor"):
        events.fileno()
    events.close()
    events.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        events.poll()


def test_each_notification_is_one_event_of_this_device_only(tun):
    with open_events(tun) as events:
        link(events, 1400, True)        # Wine cannot tell the state at open: the first link row sets it
        link(events, 1300, True)
        link(events, 1300, False)
        link(events, 1280, True, luid=OTHER_LUID)  # another interface's
        address(events, ADD, "10.78.0.1/24")
        address(events, ADD, "10.79.0.1/24", luid=OTHER_LUID)
        address(events, PARAM, "10.78.0.1/24")    # a DAD state change: no event
        address(events, ADD, "fd00:78::1/64")
        address(events, DELETE, "10.78.0.1/24")
        link(events, 1300, True, family=6)
        assert kinds(events.get(1.0)) == [("mtu", 1300), ("down", 1300), ("address-added", "10.78.0.1/24"),
                                          ("address-added", "fd00:78::1/64"),
                                          ("address-removed", "10.78.0.1/24"), ("up", 1300)]
        assert events.get(0.05) == []
        events._sock._test_notify(0, DELETE, tun.luid, 0, 4, b"\0" * 4)  # GetIfEntry2 knows no such adapter
        events._sock._test_notify(0, DELETE, tun.luid, 0, 6, b"\0" * 16)
        assert kinds(events.get(1.0)) == [("removed", None)]
        t0 = time.monotonic()
        assert events.get(10.0) == []  # after the end, at once
        assert time.monotonic() - t0 < 5.0


def test_a_full_queue_drops_and_says_overflow_once(tun):
    with open_events(tun) as events:
        for i in range(QUEUE + 50):
            address(events, ADD, f"10.80.{i // 256}.{i % 256}/32")
        got: list[DeviceEvent] = []
        while True:  # poll() takes up to 64 at a time
            more = events.poll()
            if not more:
                break
            got.extend(more)
        assert [e.kind for e in got] == ["address-added"] * (QUEUE - 1) + ["overflow"]
        assert [str(e.address) for e in got[:3]] == ["10.80.0.0/32", "10.80.0.1/32", "10.80.0.2/32"]
        assert events.dropped == QUEUE + 50 - (QUEUE - 1)  # counted: every one that is not in `got`
        address(events, ADD, "10.81.0.1/24")  # after the overflow, events flow again
        assert kinds(events.poll()) == [("address-added", "10.81.0.1/24")]
    assert events.dropped == 51  # still readable after close


def test_get_is_woken_by_a_notification_from_another_thread(tun):
    with open_events(tun) as events:
        timer = threading.Timer(0.1, address, (events, ADD, "10.82.0.1/24"))
        timer.start()
        try:
            assert kinds(events.get(30.0)) == [("address-added", "10.82.0.1/24")]
        finally:
            timer.join()


def test_ctrl_c_interrupts_a_waiting_get(tun):
    with open_events(tun) as events:
        timer = threading.Timer(0.2, _thread.interrupt_main)  # as SIGINT: the flag the C wait's slices check
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            events.get(30.0)
        assert time.monotonic() - t0 < 10.0
        timer.join()
        address(events, ADD, "10.88.0.1/24")  # still usable
        assert kinds(events.get(1.0)) == [("address-added", "10.88.0.1/24")]


def test_close_on_another_thread_ends_a_waiting_get(tun):
    events = open_events(tun)
    result: list[object] = []
    waiting = threading.Thread(target=lambda: result.append(events.get(60.0)))
    waiting.start()
    time.sleep(0.2)
    assert waiting.is_alive()
    t0 = time.monotonic()
    events.close()
    waiting.join(10.0)
    assert not waiting.is_alive() and result == [[]]
    assert time.monotonic() - t0 < 5.0


def run(coro, timeout: float = 10.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_async_for_gets_the_events_and_ends_with_removed(tun):
    async def main() -> list[tuple[str, object]]:
        loop = asyncio.get_running_loop()
        got: list[DeviceEvent] = []
        async with open_events(tun) as events:
            steps = [lambda: link(events, 1400, True), lambda: link(events, 1420, True),
                     lambda: address(events, ADD, "10.83.0.1/24"),
                     lambda: events._sock._test_notify(0, DELETE, tun.luid, 0, 4, b"\0" * 4)]
            for i, step in enumerate(steps):
                loop.call_later(0.05 * (i + 1), step)
            async for event in events:
                got.append(event)
        return kinds(got)

    assert run(main()) == [("mtu", 1420), ("address-added", "10.83.0.1/24"), ("removed", None)]
    assert wait_until(lambda: not waiter_threads())


def test_async_for_stops_when_closed_and_the_waiter_thread_ends(tun):
    async def main() -> list[tuple[str, object]]:
        loop = asyncio.get_running_loop()
        got: list[DeviceEvent] = []
        events = open_events(tun)
        loop.call_later(0.05, lambda: address(events, ADD, "10.84.0.1/24"))
        async for event in events:
            got.append(event)
            assert len(waiter_threads()) == 1
            loop.call_later(0.05, events.close)  # from the loop, while the iterator waits again
        return kinds(got)

    assert run(main()) == [("address-added", "10.84.0.1/24")]
    assert wait_until(lambda: not waiter_threads())


def test_close_inside_the_async_for_body(tun):
    async def main() -> int:
        loop = asyncio.get_running_loop()
        events = open_events(tun)
        loop.call_later(0.05, lambda: [address(events, ADD, f"10.85.0.{i}/24") for i in range(1, 4)])
        n = 0
        async for _ in events:
            n += 1
            events.close()
        return n

    assert run(main()) == 1
    assert wait_until(lambda: not waiter_threads())


def test_one_device_events_iterated_by_two_loops_one_after_the_other(tun):
    async def first(events: DeviceEvents) -> list[tuple[str, object]]:
        asyncio.get_running_loop().call_later(0.05, lambda: address(events, ADD, "10.87.0.1/24"))
        return kinds([await events.__anext__()])

    async def second(events: DeviceEvents) -> list[tuple[str, object]]:
        await asyncio.sleep(0)
        return kinds([await events.__anext__(), await events.__anext__()])

    with open_events(tun) as events:
        assert run(first(events)) == [("address-added", "10.87.0.1/24")]
        # between the loops: the waiter thread keeps what it reads for the next one
        address(events, ADD, "10.87.0.2/24")
        assert wait_until(lambda: bool(events._raw))
        threading.Timer(0.2, address, (events, ADD, "10.87.0.3/24")).start()
        assert run(second(events)) == [("address-added", "10.87.0.2/24"), ("address-added", "10.87.0.3/24")]
        assert len(waiter_threads()) == 1
    assert wait_until(lambda: not waiter_threads())


def test_a_dropped_device_events_ends_its_waiter_thread(tun):
    async def main() -> None:
        events = open_events(tun)
        task = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.1)
        assert len(waiter_threads()) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del events, task
        gc.collect()

    run(main())
    assert wait_until(lambda: not waiter_threads())
    # and the device is fine afterwards
    with open_events(tun) as events:
        address(events, ADD, "10.86.0.1/24")
        assert kinds(events.poll()) == [("address-added", "10.86.0.1/24")]


def test_the_test_hook_checks_its_arguments(tun):
    with open_events(tun) as events:
        with pytest.raises(ValueError, match="4 .*16 bytes"):
            events._sock._test_notify(1, ADD, tun.luid, 0, 4, b"\0" * 16, 24)
        with pytest.raises(ValueError, match="MIB_NOTIFICATION_TYPE"):
            events._sock._test_notify(1, 9, tun.luid, 0, 4, b"\0" * 4, 24)
        assert events.poll() == []
    assert _core.EV_OVERFLOW == 5
