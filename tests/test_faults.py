"""Faults while the device is in use: the interface deleted under a reader and under threads blocked in recv and
send, the namespace deleted under an open device, close() from another thread during every blocking call, and
callbacks that raise, stop, close or are slow under a flood.

Every blocking call must come back promptly (within PROMPT seconds) with TunClosedError or its documented
outcome; nothing may hang, and a test that would hang fails instead (bounded joins, daemon threads)."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fasttun
from fasttun import _netns
from conftest import require_root_environment
from packets import ipv4_udp, minimal_ipv4
import traffic

PROMPT = 2.0
LOCAL4, PEER4 = "10.204.0.1", "10.204.0.2"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TUN backend")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Blocked:
    """A call made in a thread of its own; what it returned or raised, and how long after `since` it ended."""

    def __init__(self, call: Callable[[], Any], name: str = "blocked") -> None:
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.cpu = 0.0
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        cpu = time.thread_time()
        try:
            self.result = self.call()
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            self.error = exc
        self.cpu = time.thread_time() - cpu
        self.ended_at = time.monotonic()

    def still_blocked_after(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return self.thread.is_alive()

    def outcome(self, since: float, timeout: float = PROMPT) -> BaseException | None:
        """Waits up to timeout for the call to end; fails the test if it did not, returns what it raised."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the call was still blocked {timeout} s later"
        assert self.ended_at is not None and self.ended_at - since < timeout
        return self.error


def recv_forever(tun: fasttun.Tun, how: str, into: list[bytes] | None = None) -> Callable[[], Any]:
    """A receive loop that only ends by raising (the kernel may hand over a packet or two of its own first);
    what it receives goes into `into`."""
    got = [] if into is None else into

    def loop() -> None:
        buf = bytearray(70000)
        while True:
            if how == "recv":
                p = tun.recv()
                if p is not None:
                    got.append(p)
            elif how == "recv_into":
                n = tun.recv_into(buf)
                got.append(bytes(buf[:n]))
            else:
                got.extend(bytes(p) for p in tun.recv_batch(64))
    return loop


# ---- fixtures ----


@pytest.fixture
def quiet_netns(netns: Any) -> Iterator[Any]:
    """The netns fixture with IPv6 off, so that the kernel sends no router solicitations into our devices."""
    for knob in ("all", "default"):
        with open(f"/proc/sys/net/ipv6/conf/{knob}/disable_ipv6", "w") as f:
            f.write("1")
    yield netns


def open_tun(name: str = "ftf0", **kw: Any) -> fasttun.Tun:
    kw.setdefault("addresses", [f"{LOCAL4}/24"])
    kw.setdefault("up", True)
    return fasttun.Tun(name, **kw)


def flood(count: int, size: int = 64, port: int = 9000) -> int:
    """Sends count sequence-numbered datagrams towards the device; returns how many sendto() accepted."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        pad = b"x" * (size - 4)
        for i in range(count):
            try:
                s.sendto(struct.pack("!I", i) + pad, (PEER4, port))
                sent += 1
            except BlockingIOError:
                time.sleep(0.0005)
    return sent


def our_udp(batch: fasttun.Batch) -> int:
    return sum(1 for p in batch if p[0] == 0x45 and p[9] == 17 and p[22:24] == b"\x23\x28")


# ---- close() from another thread during every blocking call ----


@pytest.mark.parametrize("how", ["recv", "recv_into", "recv_batch"])
def test_close_from_another_thread_wakes_a_blocked_receive_on_the_pair(how: str) -> None:
    a, b = fasttun.pair()
    with a, b:
        blocked = Blocked(recv_forever(b, how))
        assert blocked.still_blocked_after(0.3)
        start = time.monotonic()
        b.close()
        assert time.monotonic() - start < PROMPT
        assert isinstance(blocked.outcome(start), fasttun.TunClosedError)


@pytest.mark.parametrize("how", ["send", "send_batch"])
@pytest.mark.parametrize("closing", ["sender", "peer"])
def test_close_wakes_a_sender_waiting_on_a_full_pair(how: str, closing: str) -> None:
    a, b = fasttun.pair(capacity=8)
    with a, b:
        assert a.send_batch([minimal_ipv4(60, i) for i in range(8)]) == 8   # full now
        if how == "send":
            blocked = Blocked(lambda: a.send(minimal_ipv4(60, 99), on_full="wait"))
        else:
            blocked = Blocked(lambda: a.send_batch([minimal_ipv4(60, i) for i in range(4)], on_full="wait"))
        assert blocked.still_blocked_after(0.3)
        start = time.monotonic()
        (a if closing == "sender" else b).close()
        assert isinstance(blocked.outcome(start), fasttun.TunClosedError)


def test_a_sender_waiting_on_a_full_pair_sleeps_instead_of_spinning() -> None:
    a, b = fasttun.pair(capacity=8)
    with a, b:
        a.send_batch([minimal_ipv4(60, i) for i in range(8)])
        blocked = Blocked(lambda: a.send(minimal_ipv4(), on_full="wait", timeout=1.0))
        blocked.outcome(time.monotonic(), timeout=3.0)
        assert blocked.result == 0 and a.stats.tx_dropped_full == 1
        assert blocked.cpu < 0.2, f"the waiting sender used {blocked.cpu:.2f} s of CPU in 1 s"


def test_close_from_another_thread_ends_a_join_on_the_pair() -> None:
    a, b = fasttun.pair()
    with a, b:
        reader = b.start_reader(lambda batch: None)
        blocked = Blocked(lambda: reader.join())
        assert blocked.still_blocked_after(0.3)
        start = time.monotonic()
        b.close()
        assert blocked.outcome(start) is None and blocked.result is True   # closed on purpose: no error
        assert not reader.running


@linux_only
@pytest.mark.parametrize("how", ["recv", "recv_into", "recv_batch"])
def test_close_from_another_thread_wakes_a_blocked_receive_on_a_tun(quiet_netns: Any, how: str) -> None:
    tun = open_tun()
    try:
        blocked = Blocked(recv_forever(tun, how))
        assert blocked.still_blocked_after(0.3)
        start = time.monotonic()
        tun.close()
        assert time.monotonic() - start < PROMPT
        assert isinstance(blocked.outcome(start), fasttun.TunClosedError)
    finally:
        tun.close()


@linux_only
def test_close_from_another_thread_ends_a_join_on_a_tun(quiet_netns: Any) -> None:
    tun = open_tun(queues=2)
    try:
        reader = tun.start_reader(lambda batch: None)
        blocked = Blocked(lambda: reader.join())
        assert blocked.still_blocked_after(0.3)
        start = time.monotonic()
        tun.close()
        assert blocked.outcome(start) is None and blocked.result is True
    finally:
        tun.close()


# ---- the interface deleted under the device ----


@linux_only
def test_link_deleted_while_a_reader_runs_ends_it_with_tun_closed_error(quiet_netns: Any) -> None:
    tun = open_tun(queues=2)
    try:
        seen = [0]
        reader = tun.start_reader(lambda batch: seen.__setitem__(0, seen[0] + our_udp(batch)))
        flood(200)
        deadline = time.monotonic() + PROMPT
        while seen[0] < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen[0] == 200
        start = time.monotonic()
        quiet_netns.run("ip", "link", "del", tun.name)
        with pytest.raises(fasttun.TunClosedError, match="gone"):
            reader.join(timeout=PROMPT)
        assert time.monotonic() - start < PROMPT and not reader.running
        with pytest.raises(fasttun.TunClosedError):
            tun.recv(timeout=0.1)
        start = time.monotonic()
        tun.close()
        assert time.monotonic() - start < PROMPT
    finally:
        tun.close()


@linux_only
def test_link_deleted_wakes_a_thread_blocked_in_recv(quiet_netns: Any) -> None:
    tun = open_tun()
    try:
        blocked = Blocked(recv_forever(tun, "recv_batch"))
        assert blocked.still_blocked_after(0.3)
        start = time.monotonic()
        quiet_netns.run("ip", "link", "del", tun.name)
        assert isinstance(blocked.outcome(start), fasttun.TunClosedError)
    finally:
        tun.close()


@linux_only
def test_link_deleted_under_sending_threads_gives_them_tun_closed_error(quiet_netns: Any) -> None:
    # Sends that race with the deletion used to see EIO ("is the link up?"): eight rounds of two senders each
    # make it near certain that some send falls into that window.
    packet = ipv4_udp(PEER4, LOCAL4, 1, 7, b"payload")
    others: list[BaseException] = []
    for round_ in range(8):
        tun = open_tun(f"ftfs{round_}")
        try:
            def send_forever(t: fasttun.Tun = tun) -> None:
                while True:
                    try:
                        t.send(packet)
                        t.send_batch([packet] * 8)
                    except fasttun.TunClosedError:
                        raise
                    except fasttun.TunError as exc:
                        others.append(exc)

            senders = [Blocked(send_forever) for _ in range(2)]
            assert all(s.still_blocked_after(0.1) for s in senders)
            start = time.monotonic()
            quiet_netns.run("ip", "link", "del", tun.name)
            for s in senders:
                assert isinstance(s.outcome(start), fasttun.TunClosedError)
        finally:
            tun.close()
    assert others == []


@linux_only
def test_first_send_after_the_link_is_deleted_gives_tun_closed_error(quiet_netns: Any) -> None:
    tun = open_tun()
    packet = ipv4_udp(PEER4, LOCAL4, 1, 7, b"payload")
    try:
        assert tun.send(packet) == 1
        quiet_netns.run("ip", "link", "del", tun.name)
        with pytest.raises(fasttun.TunClosedError):
            tun.send(packet)
        with pytest.raises(fasttun.TunClosedError):
            tun.send_batch([packet])
    finally:
        tun.close()


@linux_only
def test_a_deleted_device_keeps_its_last_counters(quiet_netns: Any) -> None:
    tun = open_tun()
    try:
        assert tun.send(ipv4_udp(PEER4, LOCAL4, 1, 7, b"x")) == 1
        quiet_netns.run("ip", "link", "del", tun.name)
        stats = tun.stats
        assert stats.tx_packets == 1
    finally:
        tun.close()


DELETED_CALLS: dict[str, Callable[[fasttun.Tun], Any]] = {
    "mtu": lambda t: t.mtu,
    "set mtu": lambda t: setattr(t, "mtu", 1400),
    "is_up": lambda t: t.is_up,
    "addresses": lambda t: t.addresses,
    "txqueuelen": lambda t: t.txqueuelen,
    "up": lambda t: t.up(),
    "add_address": lambda t: t.add_address("10.204.9.1/24"),
    "add_route": lambda t: t.add_route("10.208.0.0/16"),
    "recv": lambda t: t.recv(timeout=0.1),
    "send_batch": lambda t: t.send_batch([ipv4_udp(PEER4, LOCAL4, 1, 7, b"x")]),
}


@linux_only
def test_a_deleted_device_behaves_as_closed(quiet_netns: Any) -> None:
    tun = open_tun()
    try:
        quiet_netns.run("ip", "link", "del", tun.name)
        wrong = {}
        for what, call in DELETED_CALLS.items():
            try:
                result = call(tun)
            except fasttun.TunClosedError:
                continue
            except Exception as exc:  # noqa: BLE001 - collected, so that one run names every offender
                wrong[what] = f"{type(exc).__name__}: {exc}"
            else:
                wrong[what] = f"returned {result!r}"
        assert wrong == {}, wrong
        assert tun.name == "ftf0"
        # A reader started now may refuse at once, or end at once: either way with TunClosedError.
        with pytest.raises(fasttun.TunClosedError):
            reader = tun.start_reader(lambda batch: None)
            reader.join(timeout=PROMPT)
    finally:
        tun.close()


# ---- the namespace deleted under an open device ----


@linux_only
def test_namespace_deleted_while_a_device_in_it_is_open() -> None:
    # The kernel keeps a namespace alive while a device's file is open in it, so the device goes on working
    # (here: the kernel still answers a ping through it); close() then wakes everything and releases both.
    require_root_environment()
    name = f"ftf-{os.getpid()}-gone"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    tun = None
    try:
        with _netns.entered(f"/run/netns/{name}"):
            with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
                f.write("1")
            tun = open_tun("ftgone0")
        got: list[bytes] = []
        reader = tun.start_reader(lambda batch: got.extend(bytes(p) for p in batch))
        blocked = Blocked(recv_forever(tun, "recv", into=got))   # takes some packets, the reader the rest
        subprocess.run(["ip", "netns", "del", name], check=True, capture_output=True, timeout=10)
        assert not os.path.exists(f"/run/netns/{name}")
        assert blocked.still_blocked_after(0.2) and reader.running
        echo = _icmp_echo_request(PEER4, LOCAL4)
        assert tun.send(echo) == 1
        deadline = time.monotonic() + PROMPT
        while not any(p[9] == 1 and p[20] == 0 for p in got) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(p[9] == 1 and p[20] == 0 for p in got), "no echo reply from the orphaned namespace"
        start = time.monotonic()
        tun.close()
        assert time.monotonic() - start < PROMPT
        assert isinstance(blocked.outcome(start), fasttun.TunClosedError)
        assert reader.join(timeout=PROMPT)
    finally:
        if tun is not None:
            tun.close()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _icmp_echo_request(src: str, dst: str) -> bytes:
    from fasttun.icmp import checksum

    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"soak-ping"
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0x4000, 64, 1, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


# ---- callbacks that raise, stop, close, or are slow, under a flood ----


class PairFlood:
    """A sender thread flooding one end of a pair with on_full="drop" until stopped; counts what it offered."""

    def __init__(self, a: fasttun.Tun) -> None:
        self.a = a
        self.offered = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.packets = [minimal_ipv4(60 + i % 200, i) for i in range(64)]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.a.send_batch(self.packets, on_full="drop")
                self.offered += len(self.packets)
        except fasttun.TunClosedError:
            pass
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def end(self) -> None:
        self.stop.set()
        self.thread.join(PROMPT)
        assert not self.thread.is_alive()


def test_callback_that_raises_under_a_flood_stops_the_reader_and_the_device_stays_usable() -> None:
    a, b = fasttun.pair(capacity=256)
    flood_ = PairFlood(a)
    try:
        def on_batch(batch: fasttun.Batch) -> None:
            raise ZeroDivisionError("callback failed")

        reader = b.start_reader(on_batch)
        start = time.monotonic()
        with pytest.raises(ZeroDivisionError, match="callback failed"):
            reader.join(timeout=PROMPT)
        assert time.monotonic() - start < PROMPT and not reader.running
        assert b.recv(timeout=1) is not None          # the device still works, the flood goes on
        seen = [0]
        with b.start_reader(lambda batch: seen.__setitem__(0, seen[0] + len(batch))):
            deadline = time.monotonic() + PROMPT
            while seen[0] < 1000 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert seen[0] >= 1000
    finally:
        flood_.end()
        a.close()
        b.close()
    assert flood_.error is None


def test_callback_that_calls_stop_under_a_flood() -> None:
    a, b = fasttun.pair(capacity=256)
    flood_ = PairFlood(a)
    try:
        calls = [0]
        returned: list[bool] = []
        holder: list[fasttun.Reader] = []

        def on_batch(batch: fasttun.Batch) -> None:
            calls[0] += 1
            if calls[0] == 5:
                returned.append(holder[0].stop())

        holder.append(b.start_reader(on_batch))
        reader = holder[0]
        assert reader.join(timeout=PROMPT)
        assert returned == [False]                     # from inside the callback stop() only asks
        assert calls[0] == 5 and not reader.running
        assert reader.stop() is True                   # and again from outside: already done
    finally:
        flood_.end()
        a.close()
        b.close()


def test_callback_that_closes_its_device_under_a_flood() -> None:
    a, b = fasttun.pair(capacity=256)
    flood_ = PairFlood(a)
    try:
        calls = [0]

        def on_batch(batch: fasttun.Batch) -> None:
            calls[0] += 1
            if calls[0] == 3:
                b.close()

        reader = b.start_reader(on_batch)
        assert reader.join(timeout=PROMPT)
        assert b.closed and calls[0] == 3
        flood_.thread.join(PROMPT)                     # the sender sees the peer gone and ends
        assert not flood_.thread.is_alive()
        with pytest.raises(fasttun.TunClosedError):
            a.send(minimal_ipv4())
    finally:
        flood_.end()
        a.close()
        b.close()
    assert flood_.error is None


def test_slow_callback_under_a_flood_on_the_pair_drops_are_counted_and_memory_is_flat() -> None:
    a, b = fasttun.pair(capacity=1024, capacity_bytes=1 << 20)
    received = [0]

    def on_batch(batch: fasttun.Batch) -> None:
        received[0] += len(batch)
        time.sleep(0.005)

    flood_ = PairFlood(a)
    try:
        with b.start_reader(on_batch, batch_size=64):
            time.sleep(1.0)
            warm = rss()
            time.sleep(2.0)
            grown = rss() - warm
            flood_.end()
            time.sleep(0.3)                            # let the reader drain what the pair holds
        deadline = time.monotonic() + PROMPT
        while time.monotonic() < deadline:             # what the reader left in the pair
            left = len(b.recv_batch(1024, timeout=0))
            if not left:
                break
            received[0] += left
        assert received[0] > 0
        dropped = a.stats.tx_dropped_full
        assert dropped > received[0]                   # the callback is far slower than the flood
        assert received[0] + dropped == flood_.offered  # every packet offered arrived or was counted
        assert grown < 1 << 20, f"RSS grew {grown / 1024:.0f} KiB in 2 s of flood"
    finally:
        flood_.end()
        a.close()
        b.close()


@linux_only
def test_slow_callback_under_a_flood_on_a_tun_drops_are_counted_and_memory_is_flat(quiet_netns: Any) -> None:
    tun = open_tun(txqueuelen=64)
    try:
        received = [0]

        def on_batch(batch: fasttun.Batch) -> None:
            received[0] += our_udp(batch)
            time.sleep(0.01)

        with tun.start_reader(on_batch, batch_size=16):
            before = tun.stats.rx_dropped_os
            sent = flood(2000)
            warm = rss()
            sent += flood(8000)
            grown = rss() - warm
            deadline = time.monotonic() + 5
            while received[0] + tun.stats.rx_dropped_os - before < sent and time.monotonic() < deadline:
                time.sleep(0.05)
        dropped = tun.stats.rx_dropped_os - before
        assert dropped > 0 and received[0] > 0
        assert received[0] + dropped == sent, (received[0], dropped, sent)
        assert grown < 1 << 20, f"RSS grew {grown / 1024:.0f} KiB during the flood"
    finally:
        tun.close()


@linux_only
def test_callback_that_raises_under_a_flood_on_a_tun(quiet_netns: Any) -> None:
    tun = open_tun()
    try:
        def on_batch(batch: fasttun.Batch) -> None:
            if our_udp(batch):
                raise RuntimeError("callback failed on a real device")

        reader = tun.start_reader(on_batch)
        Blocked(lambda: flood(5000))
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="real device"):
            reader.join(timeout=PROMPT + 1)
        assert time.monotonic() - start < PROMPT + 1
        assert tun.recv(timeout=1) is not None        # the device still works
    finally:
        tun.close()


@linux_only
@pytest.mark.parametrize("action", ["stop", "close"])
def test_callback_that_stops_or_closes_under_a_flood_on_a_tun(quiet_netns: Any, action: str) -> None:
    tun = open_tun(queues=2)
    try:
        holder: list[fasttun.Reader] = []
        calls = [0]

        def on_batch(batch: fasttun.Batch) -> None:
            calls[0] += 1
            if calls[0] == 3:
                if action == "stop":
                    holder[0].stop()
                else:
                    tun.close()

        holder.append(tun.start_reader(on_batch, batch_size=8))
        Blocked(lambda: flood(20000))
        start = time.monotonic()
        assert holder[0].join(timeout=PROMPT + 1)
        assert time.monotonic() - start < PROMPT + 1 and not holder[0].running
        # With two queues the other queue's thread may have been inside its own callback: a few more calls.
        assert 3 <= calls[0] <= 4
        if action == "close":
            assert tun.closed
            with pytest.raises(fasttun.TunClosedError):
                tun.recv(timeout=0)
        else:
            assert tun.recv(timeout=1) is not None   # stopping the reader leaves the device usable
    finally:
        tun.close()


# ---- a log handler that raises, on the reader's error path ----


class BrokenLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("the log handler is broken")


@linux_only
def test_a_callback_that_raises_ends_every_queue_even_when_logging_it_fails(quiet_netns: Any,
                                                                            monkeypatch: Any) -> None:
    # The reader's error hook logs the failure, then asks the other queues to stop: a handler that raises
    # while the line is written must not leave them delivering.
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    logger = logging.getLogger("fasttun")
    handler = BrokenLogHandler()
    logger.addHandler(handler)
    tun = open_tun(queues=4)
    try:
        raised = threading.Event()
        lock = threading.Lock()

        def on_batch(batch: fasttun.Batch) -> None:
            with lock:
                if raised.is_set():
                    return
                raised.set()
            raise ValueError("bad packet")

        reader = tun.start_reader(on_batch)
        with traffic.flooding(PEER4):
            assert raised.wait(PROMPT)
            with pytest.raises(ValueError, match="bad packet"):
                reader.join(timeout=PROMPT + 1)
        assert not reader.running
        assert any(isinstance(u.exc_value, RuntimeError) for u in unraisable)
    finally:
        logger.removeHandler(handler)
        tun.close()
