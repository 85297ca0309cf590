"""The Wintun backend through the Python API, against our fake wintun.dll (tests/wintun_fake/fake_wintun.c).

Windows only: on Linux tests/test_windows_python.py runs this module under Wine in the official Windows
CPython (tests/wine/winpy.py builds the extension and the fake DLLs and sets FASTTUN_TEST_FAKE_WINTUN_DIR).
The fake plays the driver: it takes what we send into its ring (read back here), hands over packets we inject,
and misbehaves on request (ring full, end-of-file, a corrupt ring, failing calls)."""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import fasttun
import struct

from conftest import under_wine
from packets import checksum, flow, ipv4_udp, merge, minimal_ipv4, seq_of, tcp_segment

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Windows only (on Linux: under Wine, see "
                                                                "tests/test_windows_python.py)")

FAKE_DIR = os.environ.get("FASTTUN_TEST_FAKE_WINTUN_DIR", "")
# fake_wintun.h: enum fake_fault
(SEND_FULL, RECV_EOF, RECV_INVALID_DATA, SEND_EOF, ALLOC_FAIL, SESSION_FAIL, CREATE_FAIL, OPEN_FAIL, DRIVER_NOT_LOADED,
 RECV_INVALID_DATA_ONCE, MISSED_WAKEUP, SESSION_FAIL_ABOVE) = range(12)
MAX_RESTARTS = 8  # wintun/ft_wintun.c
ERROR_ACCESS_DENIED = 5


class Counters(ctypes.Structure):
    _fields_ = [(name, ctypes.c_long) for name in (
        "adapters", "adapter_handles", "sessions", "creates", "opens", "create_calls", "receive_calls",
        "receive_errors", "alloc_calls", "injected", "received", "released", "sent", "read_back", "event_misuse",
        "log_calls")] + [("last_capacity", ctypes.c_ulong), ("last_tunnel_type", ctypes.c_wchar * 128),
                         ("last_requested_guid", ctypes.c_ubyte * 16), ("last_had_guid", ctypes.c_int)]


class Fake:
    """The test's side of the fake DLL (its FakeWintun* exports), in the process that loaded it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dll = ctypes.WinDLL(path)  # the same module fasttun loaded: same state

    def reset(self) -> None:
        self.dll.FakeWintunReset()

    def fault(self, which: int, on: bool = True, arg: int = 0) -> None:
        self.dll.FakeWintunSetFault(which, int(on), arg)

    def counters(self) -> Counters:
        c = Counters()
        self.dll.FakeWintunGetCounters(ctypes.byref(c))
        return c

    def inject(self, packets: list[bytes]) -> int:
        total = 0
        for start in range(0, len(packets), 256):
            chunk = packets[start:start + 256]
            bufs = [ctypes.create_string_buffer(p, len(p)) for p in chunk]
            ptrs = (ctypes.c_void_p * len(chunk))(*[ctypes.addressof(b) for b in bufs])
            sizes = (ctypes.c_ulong * len(chunk))(*[len(p) for p in chunk])
            got = self.dll.FakeWintunInject(ptrs, sizes, len(chunk))
            assert got >= 0, "no active session to inject into"
            total += got
            if got < len(chunk):
                break
        return total

    def inject_bogus(self, size: int) -> bool:
        return bool(self.dll.FakeWintunInjectBogus(size))

    def read_sent(self, limit: int = 1_000_000) -> list[bytes]:
        out: list[bytes] = []
        buf = ctypes.create_string_buffer(65536)
        while len(out) < limit:
            n = self.dll.FakeWintunReadSent(buf, len(buf))
            assert n >= 0
            if n == 0:
                return out
            out.append(buf.raw[:n])
        return out

    def log(self, level: int, message: str) -> None:
        self.dll.FakeWintunLog(level, ctypes.c_wchar_p(message))

    def add_leftover(self, name: str, failing_creates: int) -> bool:
        return bool(self.dll.FakeWintunAddLeftover(ctypes.c_wchar_p(name), failing_creates))


@pytest.fixture(scope="module")
def fake() -> Fake:
    if not FAKE_DIR:
        pytest.skip("needs the fake wintun.dll: run through tests/test_windows_python.py (tests/wine/winpy.py)")
    path = os.path.join(FAKE_DIR, "fake", "wintun.dll")
    fasttun.load_wintun(path)
    return Fake(path)


_names = iter(range(1_000_000))


def new_name() -> str:
    return f"fasttun-py-{os.getpid()}-{next(_names)}"


@pytest.fixture
def driver(fake: Fake):
    """The fake, reset; afterwards nothing may be left: no adapter, handle or session."""
    fake.reset()
    yield fake
    c = fake.counters()
    fake.reset()
    assert (c.adapters, c.adapter_handles, c.sessions, c.event_misuse) == (0, 0, 0, 0)


@pytest.fixture
def tun(driver: Fake):
    dev = fasttun.Tun(new_name())
    yield dev
    dev.close()


def wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# ---- create, open, close ---------------------------------------------------------------------------------

def test_create_start_and_close_leave_nothing_behind(driver):
    guid = uuid.UUID("4a1d7c1e-36b5-4a0b-9c85-6a3c2b7f0d11")
    name = new_name()
    with fasttun.Tun(name, tunnel_type="MyVPN", guid=guid, ring_capacity=1 << 17) as tun:
        c = driver.counters()
        assert (c.adapters, c.sessions, c.creates) == (1, 1, 1)
        assert c.last_tunnel_type == "MyVPN" and c.last_capacity == 1 << 17
        assert c.last_had_guid and bytes(c.last_requested_guid) == guid.bytes_le
        assert tun.backend == "wintun" and tun.name == name
        assert tun.ring_capacity == 1 << 17 and tun.luid != 0
        assert "wintun" in repr(tun)
    assert tun.closed
    c = driver.counters()
    assert (c.adapters, c.adapter_handles, c.sessions) == (0, 0, 0)


def test_without_a_guid_the_same_name_gets_the_same_guid(driver):
    name = new_name()
    seen = []
    for tunnel_type, n in (("fasttun", name), ("fasttun", name.upper()), ("fasttun", name + "x"), ("Other", name)):
        with fasttun.Tun(n, tunnel_type=tunnel_type):
            c = driver.counters()
            assert c.last_had_guid
            seen.append(uuid.UUID(bytes_le=bytes(c.last_requested_guid)))
    assert seen[0] == seen[1]  # reopening the name (Windows ignores case) gives the same interface
    assert seen[0].version == 5
    assert len({seen[0], seen[2], seen[3]}) == 3  # another name or tunnel type: another GUID
    assert seen[0] == fasttun._wintun.adapter_guid("fasttun", name)


def test_a_device_dropped_without_close_releases_its_adapter(driver):
    tun = fasttun.Tun(new_name())
    tun.send(minimal_ipv4(60, 1))
    assert driver.counters().sessions == 1
    del tun
    gc.collect()
    c = driver.counters()
    assert (c.adapters, c.adapter_handles, c.sessions) == (0, 0, 0)


def test_open_existing_needs_an_adapter_and_a_free_session(driver):
    name = new_name()
    with pytest.raises(fasttun.TunNotFoundError, match="no Wintun adapter named"):
        fasttun.Tun(name, open_existing=True)
    with fasttun.Tun(name):
        # The adapter exists, but its one session is taken: the second handle must be released again.
        with pytest.raises(fasttun.TunError, match="session"):
            fasttun.Tun(name, open_existing=True)
        assert driver.counters().adapter_handles == 1
    assert driver.counters().adapters == 0


def test_failures_of_the_driver_are_explained_and_leave_nothing(driver):
    driver.fault(CREATE_FAIL, True, ERROR_ACCESS_DENIED)
    with pytest.raises(fasttun.TunPermissionError, match="elevation"):
        fasttun.Tun(new_name())
    driver.fault(CREATE_FAIL, False)
    driver.fault(SESSION_FAIL, True, 8)  # ERROR_NOT_ENOUGH_MEMORY
    with pytest.raises(fasttun.TunError, match="no memory for a 4194304-byte Wintun ring"):
        fasttun.Tun(new_name())
    driver.fault(SESSION_FAIL, False)
    c = driver.counters()
    assert (c.adapters, c.adapter_handles, c.sessions) == (0, 0, 0)


def test_a_leftover_adapter_of_a_dead_process_is_reused(driver):
    name = new_name()
    assert driver.add_leftover(name, 100)  # creating keeps failing with ERROR_ALREADY_EXISTS
    with fasttun.Tun(name) as tun:
        assert tun.name == name
        c = driver.counters()
        assert c.opens == 1 and c.sessions == 1
    driver.reset()  # the leftover stays (nobody owns it) until reset


def test_bad_arguments_are_refused_before_the_driver(driver):
    with pytest.raises(ValueError, match="name"):
        fasttun.Tun(None)
    with pytest.raises(ValueError, match="power of two"):
        fasttun.Tun(new_name(), ring_capacity=(1 << 17) + 1)
    with pytest.raises(ValueError, match="Linux"):
        fasttun.Tun(new_name(), queues=2)
    with pytest.raises(ValueError, match="Linux"):
        fasttun.Tun(new_name(), offload=True)
    assert driver.counters().create_calls == 0


def test_a_failure_after_the_adapter_is_open_closes_it(driver):
    if not under_wine():
        pytest.skip("needs an IP Helper call that fails: under Wine adding an address does")
    with pytest.raises(fasttun.TunError):
        fasttun.Tun(new_name(), addresses=["10.77.0.1/24"])
    c = driver.counters()
    assert c.creates == 1 and (c.adapters, c.adapter_handles, c.sessions) == (0, 0, 0)


def test_mtu_reads_back_what_the_device_enforces(tun):
    if not under_wine():
        pytest.skip("on Windows the adapter's real MTU is read through IP Helper")
    assert tun.mtu == 65535  # no MTU was given and IP Helper cannot tell: Wintun's limit
    tun.send(minimal_ipv4(9000, 1))


def test_ip_helper_calls_wine_lacks_fail_clearly_and_leave_the_device_usable(tun, driver):
    if not under_wine():
        pytest.skip("only Wine lacks these calls")
    with pytest.raises(fasttun.TunError, match="IpInterfaceEntry .*Wine"):
        tun.mtu = 1400
    with pytest.raises(fasttun.TunError, match="CreateUnicastIpAddressEntry|InitializeUnicastIpAddressEntry"):
        tun.add_address("10.78.0.1/24")
    assert tun.send(minimal_ipv4(60, 5)) == 1
    assert [seq_of(p) for p in driver.read_sent()] == [5]


# ---- sending -----------------------------------------------------------------------------------------

def test_sent_packets_reach_the_ring_intact_and_in_order(tun, driver):
    pkts = [minimal_ipv4(size, i) for i, size in enumerate([28, 60, 1500, 9000, 40, 65535])]
    assert tun.send(pkts[0]) == 1
    assert tun.send(bytearray(pkts[1])) == 1
    assert tun.send_batch(pkts[2:]) == 4
    assert tun.send_batch(fasttun.make_batch([pkts[0]])) == 1
    got = driver.read_sent()
    assert got == pkts + [pkts[0]]
    s = tun.stats
    assert s.tx_packets == 7 and s.tx_bytes == sum(map(len, pkts)) + len(pkts[0])


def test_bad_packets_never_reach_the_ring(tun, driver):
    with pytest.raises(ValueError):
        tun.send(b"\x00" * 40)                       # not IPv4/IPv6
    with pytest.raises(ValueError):
        tun.send(minimal_ipv4(60, 1)[:10])           # shorter than its header
    with pytest.raises(ValueError):
        tun.send_batch([minimal_ipv4(60, 1), b"\x60" + bytes(10), minimal_ipv4(60, 2)])  # one bad: none go
    with pytest.raises(TypeError):
        tun.send(12345)
    c = driver.counters()
    assert c.alloc_calls == 0 and c.sent == 0
    assert tun.stats.tx_rejected >= 3 and tun.stats.tx_packets == 0
    assert tun.send(minimal_ipv4(60, 3)) == 1  # still usable
    assert [seq_of(p) for p in driver.read_sent()] == [3]


def test_ring_full_drop_counts(tun, driver):
    driver.fault(SEND_FULL)
    assert tun.send(minimal_ipv4(60, 1)) == 0
    assert tun.send_batch([minimal_ipv4(60, i) for i in range(5)]) == 0
    assert tun.stats.tx_dropped_full == 6 and tun.stats.tx_packets == 0
    driver.fault(SEND_FULL, False)
    assert tun.send(minimal_ipv4(60, 7)) == 1


def test_ring_full_raise(tun, driver):
    driver.fault(SEND_FULL)
    with pytest.raises(fasttun.TunFullError) as info:
        tun.send_batch([minimal_ipv4(60, i) for i in range(3)], on_full="raise")
    assert info.value.sent == 0
    driver.fault(SEND_FULL, False)
    assert tun.send(minimal_ipv4(60, 1), on_full="raise") == 1


def test_ring_full_wait_times_out_then_counts(tun, driver):
    driver.fault(SEND_FULL)
    start = time.monotonic()
    assert tun.send(minimal_ipv4(60, 1), on_full="wait", timeout=0.3) == 0
    assert 0.25 <= time.monotonic() - start < 3
    assert tun.stats.tx_dropped_full == 1


def test_ring_full_wait_sends_once_there_is_room(tun, driver):
    driver.fault(SEND_FULL)
    timer = threading.Timer(0.2, driver.fault, (SEND_FULL, False))
    timer.start()
    try:
        assert tun.send(minimal_ipv4(60, 9), on_full="wait", timeout=5) == 1
    finally:
        timer.cancel()
    assert [seq_of(p) for p in driver.read_sent()] == [9]
    assert tun.stats.tx_waits >= 1


# ---- receiving ---------------------------------------------------------------------------------------

def test_recv_and_recv_batch_in_order(tun, driver):
    assert tun.recv(timeout=0.05) is None
    assert driver.inject([minimal_ipv4(60 + i, i) for i in range(10)]) == 10
    assert seq_of(tun.recv(timeout=1)) == 0
    buf = bytearray(2048)
    n = tun.recv_into(buf, timeout=1)
    assert n == 61 and seq_of(buf[:n]) == 1
    batch = tun.recv_batch(64, timeout=1)
    assert [seq_of(p) for p in batch] == list(range(2, 10))
    assert [len(p) for p in batch] == [60 + i for i in range(2, 10)]
    s = tun.stats
    assert s.rx_packets == 10
    c = driver.counters()
    assert c.released == c.received == 10  # every packet went back to the driver


@pytest.mark.parametrize("pipeline", [0, 2])
def test_reader_gets_everything_in_order(tun, driver, pipeline):
    got: list[int] = []
    with tun.start_reader(lambda b: got.extend(seq_of(p) for p in b), batch_size=64, pipeline=pipeline) as reader:
        sent = 0
        while sent < 3000:
            n = driver.inject([minimal_ipv4(60, i) for i in range(sent, min(sent + 200, 3000))])
            sent += n
            if n == 0:
                time.sleep(0.005)
        assert wait_for(lambda: len(got) >= 3000)
    assert got == list(range(3000))
    assert reader.stats.packets == 3000
    assert tun.stats.rx_packets == 3000


@pytest.mark.parametrize("end", ["stop()", "close()"])
def test_a_pipelined_reader_ends_at_once_from_its_callback(tun, driver, end):
    calls: list[int] = []
    holder = {}

    def on_batch(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            if end == "stop()":
                assert holder["reader"].stop() is False
            else:
                tun.close()
        time.sleep(0.01)

    holder["reader"] = reader = tun.start_reader(on_batch, batch_size=8, pipeline=4)
    driver.inject([minimal_ipv4(60, i) for i in range(200)])
    assert wait_for(lambda: not reader.running)
    reader.stop()
    assert len(calls) == 2
    s = reader.stats
    assert s.packets == sum(calls) + s.undelivered and s.undelivered <= 3 * 8


def test_oversize_and_non_ip_packets_from_the_driver_are_dropped_and_counted(tun, driver):
    driver.inject([b"\x00" * 40, minimal_ipv4(60, 1)])
    assert seq_of(tun.recv(timeout=1)) == 1
    assert tun.stats.rx_dropped_invalid == 1


@pytest.mark.parametrize("pipeline", [0, 2])
def test_end_of_file_mid_stream_ends_the_reader(tun, driver, pipeline):
    # With the pipeline too, what was read before the error is delivered.
    driver.fault(RECV_EOF, True, 5)
    got: list[int] = []
    reader = tun.start_reader(lambda b: got.extend(seq_of(p) for p in b), pipeline=pipeline)
    driver.inject([minimal_ipv4(60, i) for i in range(10)])
    assert wait_for(lambda: not reader.running)
    with pytest.raises(fasttun.TunClosedError, match="ERROR_HANDLE_EOF"):
        reader.join(1)
    assert got == list(range(5))
    with pytest.raises(fasttun.TunClosedError):
        tun.send(minimal_ipv4(60, 1))
    with pytest.raises(fasttun.TunClosedError):
        tun.recv(timeout=0.1)


def test_a_corrupt_ring_mid_stream_restarts_the_session_logged_once(tun, driver, caplog):
    caplog.set_level(logging.WARNING, logger="fasttun.wintun")
    driver.fault(RECV_INVALID_DATA_ONCE, True, 3)
    driver.inject([minimal_ipv4(60, i) for i in range(6)])
    assert [seq_of(tun.recv(timeout=1)) for _ in range(3)] == [0, 1, 2]
    assert tun.recv(timeout=0.2) is None  # the session was restarted: what its ring held is lost
    assert tun.stats.rx_errors == 1
    c = driver.counters()
    assert c.sessions == 1 and c.event_misuse == 0
    driver.inject([minimal_ipv4(60, i) for i in range(10, 13)])
    assert [seq_of(tun.recv(timeout=1)) for _ in range(3)] == [10, 11, 12]
    assert tun.send(minimal_ipv4(60, 20)) == 1  # sending goes to the new session
    assert [seq_of(p) for p in driver.read_sent()] == [20]
    driver.fault(RECV_INVALID_DATA_ONCE, True, 0)
    driver.inject([minimal_ipv4(60, 30)])
    assert tun.recv(timeout=0.2) is None
    assert tun.stats.rx_errors == 2
    restarts = [r for r in caplog.records if "restarted the Wintun session" in r.getMessage()]
    assert len(restarts) == 1 and restarts[0].levelno == logging.WARNING  # logged once, counted always
    assert "ERROR_INVALID_DATA" in restarts[0].getMessage()


@pytest.mark.parametrize("pipeline", [0, 2])
def test_a_reader_survives_a_corrupt_ring(tun, driver, pipeline):
    got: list[int] = []
    driver.fault(RECV_INVALID_DATA_ONCE, True, 5)
    with tun.start_reader(lambda b: got.extend(seq_of(p) for p in b), pipeline=pipeline) as reader:
        driver.inject([minimal_ipv4(60, i) for i in range(8)])
        assert wait_for(lambda: tun.stats.rx_errors == 1)
        driver.inject([minimal_ipv4(60, i) for i in range(100, 110)])
        assert wait_for(lambda: len(got) >= 15)
        assert reader.running
    assert got == list(range(5)) + list(range(100, 110))


def test_senders_keep_going_while_the_session_restarts(tun, driver):
    stop = threading.Event()
    errors: list[BaseException] = []
    sent = [0, 0]

    def sender(slot: int) -> None:
        pkt = minimal_ipv4(60, slot)
        while not stop.is_set():
            try:
                sent[slot] += tun.send_batch([pkt] * 16)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for k in range(1, 6):
            driver.fault(RECV_INVALID_DATA_ONCE, True, 0)
            driver.inject([minimal_ipv4(60, 99)])
            assert tun.recv(timeout=0.3) is None
            assert tun.stats.rx_errors == k
            driver.read_sent(limit=20000)  # the network takes some of what was sent: the ring gets room
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert all(n > 0 for n in sent)
    c = driver.counters()
    assert c.sessions == 1 and c.event_misuse == 0
    assert tun.stats.tx_packets == sent[0] + sent[1] == c.sent  # what the sends said went, went to a ring


def test_a_ring_that_stays_corrupt_gives_up_after_bounded_restarts(tun, driver):
    driver.fault(RECV_INVALID_DATA)
    driver.inject([minimal_ipv4(60, 1)])
    with pytest.raises(fasttun.TunError, match=f"after {MAX_RESTARTS} session restarts"):
        tun.recv(timeout=10)
    assert tun.stats.rx_errors == MAX_RESTARTS + 1  # every restart, and the failed receive that gave up
    with pytest.raises(fasttun.TunError, match="corrupt"):
        tun.send(minimal_ipv4(60, 2))  # the device stays dead, saying why


def test_a_restart_that_fails_leaves_the_device_dead_saying_why(tun, driver):
    driver.fault(RECV_INVALID_DATA_ONCE, True, 0)
    driver.fault(SESSION_FAIL, True, 8)  # ERROR_NOT_ENOUGH_MEMORY when the new session starts
    driver.inject([minimal_ipv4(60, 1)])
    with pytest.raises(fasttun.TunError, match="restarting the session failed: no memory"):
        tun.recv(timeout=1)
    with pytest.raises(fasttun.TunError, match="restarting the session failed"):
        tun.send(minimal_ipv4(60, 2))
    assert driver.counters().sessions == 0
    driver.fault(SESSION_FAIL, False)


def test_impossible_packet_size_restarts_the_session(tun, driver):
    driver.inject([minimal_ipv4(60, 1)])
    assert driver.inject_bogus(0x10000)
    assert seq_of(tun.recv(timeout=1)) == 1
    assert tun.recv(timeout=0.2) is None
    assert tun.stats.rx_errors == 1 and tun.stats.rx_packets == 1
    driver.inject([minimal_ipv4(60, 2)])
    assert seq_of(tun.recv(timeout=1)) == 2


# ---- ring_capacity="auto" ------------------------------------------------------------------------------

MiB = 1 << 20
GROW_INTERVAL = 2.0  # wintun/ft_wintun.c GROW_INTERVAL_MS


def fill_send_ring(tun: fasttun.Tun, first: int) -> int:
    """Sends 1400-byte packets (nobody takes them off the fake's ring) until some are dropped as ring full."""
    sent = first
    for _ in range(200):  # 64 MiB / 1400 bytes is ~48000 packets: 256 a call, ~190 calls at most
        dropped = tun.stats.tx_dropped_full
        sent += tun.send_batch([minimal_ipv4(1400, sent + i) for i in range(256)])
        if tun.stats.tx_dropped_full > dropped:
            return sent
    raise AssertionError("the send ring never filled")


def test_auto_ring_doubles_when_the_send_ring_overflows_at_most_once_per_interval(driver, caplog):
    caplog.set_level(logging.INFO, logger="fasttun.wintun")
    with fasttun.Tun(new_name(), ring_capacity="auto") as tun:
        assert (tun.ring_capacity, tun.ring_grows, driver.counters().last_capacity) == (4 * MiB, 0, 4 * MiB)
        seq = fill_send_ring(tun, 0)
        assert (tun.ring_capacity, tun.ring_grows) == (8 * MiB, 1)
        c = driver.counters()
        assert (c.last_capacity, c.sessions, c.event_misuse) == (8 * MiB, 1, 0)
        grown = [r for r in caplog.records if "8388608-byte rings" in r.getMessage()]
        assert len(grown) == 1 and "send ring was full" in grown[0].getMessage()
        start = time.monotonic()
        assert tun.send(minimal_ipv4(60, 999_999)) == 1  # the new session takes packets
        sent = [seq_of(p) for p in driver.read_sent()]  # the rest of the overflowing batch, then this one
        assert sent[-1] == 999_999 and sent[:-1] == list(range(sent[0], sent[0] + len(sent) - 1))
        seq = fill_send_ring(tun, seq)  # overflowing again right away: no second grow yet
        if time.monotonic() - start < GROW_INTERVAL * 0.9:
            assert (tun.ring_capacity, tun.ring_grows) == (8 * MiB, 1)
        time.sleep(max(0.0, GROW_INTERVAL + 0.1 - (time.monotonic() - start)))
        fill_send_ring(tun, seq)
        assert (tun.ring_capacity, tun.ring_grows, driver.counters().last_capacity) == (16 * MiB, 2, 16 * MiB)
        assert tun.stats.rx_errors == 0  # a grow is not an error


def test_a_grow_that_finds_no_memory_keeps_the_old_rings(driver, caplog):
    caplog.set_level(logging.INFO, logger="fasttun.wintun")
    driver.fault(SESSION_FAIL_ABOVE, True, 4 * MiB)
    with fasttun.Tun(new_name(), ring_capacity="auto") as tun:
        fill_send_ring(tun, 0)
        assert (tun.ring_capacity, tun.ring_grows) == (4 * MiB, 0)
        c = driver.counters()
        assert (c.last_capacity, c.sessions) == (4 * MiB, 1)
        warned = [r for r in caplog.records if "could not grow" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING and "8388608" in warned[0].getMessage()
        driver.read_sent()
        assert tun.send(minimal_ipv4(60, 5)) == 1 and [seq_of(p) for p in driver.read_sent()] == [5]
        assert tun.stats.rx_errors == 0


def test_a_reader_keeps_receiving_across_a_grow(driver):
    got: list[int] = []
    with fasttun.Tun(new_name(), ring_capacity="auto") as tun:
        with tun.start_reader(lambda b: got.extend(seq_of(p) for p in b)) as reader:
            driver.inject([minimal_ipv4(60, i) for i in range(10)])
            assert wait_for(lambda: len(got) == 10)
            fill_send_ring(tun, 0)  # the reader sleeps on the old session's event meanwhile
            assert tun.ring_grows == 1
            driver.inject([minimal_ipv4(60, i) for i in range(100, 110)])
            assert wait_for(lambda: len(got) == 20)
            assert reader.running
    assert got == list(range(10)) + list(range(100, 110))


def fill_receive_ring(driver: Fake) -> int:
    """Injects 1400-byte packets until the fake's receive ring is full; returns how many went in."""
    total = 0
    for _ in range(200):
        batch = [minimal_ipv4(1400, total + i) for i in range(256)]
        got = driver.inject(batch)
        total += got
        if got < len(batch):
            return total
    raise AssertionError("the receive ring never filled")


def drain(tun: fasttun.Tun) -> list[int]:
    got: list[int] = []
    for _ in range(1000):
        batch = tun.recv_batch(256, timeout=0.05)
        if not batch:
            return got
        got.extend(seq_of(p) for p in batch)
    return got


@pytest.mark.parametrize("auto", [True, False])
def test_auto_ring_doubles_when_the_reader_finds_the_receive_ring_full(driver, auto):
    with fasttun.Tun(new_name(), ring_capacity="auto" if auto else None) as tun:
        driver.inject([minimal_ipv4(1400, i) for i in range(100)])  # a little traffic: no grow
        assert drain(tun) == list(range(100)) and tun.ring_grows == 0
        n = fill_receive_ring(driver)  # the reader came late: the ring is full
        assert drain(tun) == list(range(n))  # everything in the ring is delivered before the restart
        want = (8 * MiB, 1) if auto else (4 * MiB, 0)
        assert (tun.ring_capacity, tun.ring_grows, driver.counters().last_capacity) == (*want[:2], want[0])
        driver.inject([minimal_ipv4(60, 7)])
        assert drain(tun) == [7]


def test_auto_ring_and_coalesce_arguments_are_checked(driver):
    with pytest.raises(ValueError, match="auto"):
        fasttun.Tun(new_name(), ring_capacity="big")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="coalesce"):
        fasttun.Tun(new_name(), coalesce="yes")  # type: ignore[arg-type]
    assert driver.counters().create_calls == 0


# ---- coalesce=True -------------------------------------------------------------------------------------
# Segments and their merge built by tests/packets.py, with the standard library, not by fasttun.

@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_coalesce_merges_consecutive_segments_of_a_flow(driver, v6):
    segs = flow(v6, 5001, 40, 1000)
    with fasttun.Tun(new_name(), coalesce=True) as tun:
        assert tun.send_batch(segs) == 40
        got = driver.read_sent()
        assert got == [merge(segs)]  # one packet: bytes, lengths and checksums as merged independently
        assert tun.stats.tx_packets == 40 and driver.counters().sent == 1
        assert tun.send(segs[0]) == 1 and driver.read_sent() == [segs[0]]  # one packet goes as it is
    with fasttun.Tun(new_name()) as tun:  # without coalesce every segment goes on its own
        assert tun.send_batch(segs) == 40 and driver.read_sent() == segs


def test_coalesce_keeps_flows_apart_and_under_64_kib(driver):
    a = flow(False, 6001, 100, 1200)  # 120000 payload bytes: more than one 64 KiB packet
    b = flow(False, 6002, 10, 500, seq0=9, ident0=7)
    udp = ipv4_udp("10.9.0.1", "10.9.0.2", 53, 53, b"q" * 100)
    bad = bytearray(tcp_segment(False, 6003, 1, b"x" * 800, 1))
    bad[-1] ^= 0xFF  # a wrong checksum: never merged, passed on as it is
    bad2 = tcp_segment(False, 6003, 801, b"y" * 800, 2)
    batch = [udp] + [p for pair in zip(a, b + [None] * 90) for p in pair if p is not None] + [bytes(bad), bad2]
    with fasttun.Tun(new_name(), coalesce=True) as tun:
        assert tun.send_batch(batch) == len(batch)
        got = driver.read_sent()
    assert all(len(p) <= 0xFFFF for p in got)
    assert udp in got and bytes(bad) in got and bad2 in got
    assert merge(b) in got

    def seq(p: bytes) -> int:
        return struct.unpack("!I", p[24:28])[0]

    of_a = sorted((p for p in got if p[20:22] == struct.pack("!H", 6001)), key=seq)
    assert len(of_a) >= 2 and len(got) == len(of_a) + 3 + 1  # a: a few packets; b, udp, bad, bad2: as said
    i = 0
    for p in of_a:  # each is the independent merge of the segments of a it covers
        count = (len(p) - 40) // 1200
        assert p == merge(a[i:i + count])
        i += count
    assert i == len(a)


def test_coalesce_counts_a_full_ring_per_packet(driver):
    segs = flow(False, 7001, 20, 1000)
    with fasttun.Tun(new_name(), coalesce=True) as tun:
        driver.fault(SEND_FULL)
        assert tun.send_batch(segs) == 20  # a coalesced unit that finds the ring full is dropped and counted
        assert tun.stats.tx_dropped_full == 20
        driver.fault(SEND_FULL, False)
        assert tun.send_batch(segs) == 20 and driver.read_sent() == [merge(segs)]


# ---- remote_csum=True: packets a Linux end left with a partial checksum, finished before Wintun ----------

RCSUM_MAGIC = 0x1F


def behind_rcsum_header(packet: bytes) -> bytes:
    """The TCP segment as a Linux device with remote_csum hands it over: its checksum field holding only the
    pseudo-header sum (computed here independently), behind the 4-byte header."""
    v6 = packet[0] >> 4 == 6
    hl = 40 if v6 else 20
    tcp_len = len(packet) - hl
    addrs = packet[8:40] if v6 else packet[12:20]
    pseudo = addrs + (struct.pack("!IxxxB", tcp_len, 6) if v6 else struct.pack("!xBH", 6, tcp_len))
    partial = ~checksum(pseudo) & 0xFFFF
    return bytes([RCSUM_MAGIC, 16, 0, hl]) + packet[:hl + 16] + struct.pack("!H", partial) + packet[hl + 18:]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_remote_csum_packets_reach_the_ring_with_their_checksums_finished(driver, v6):
    segs = flow(v6, 8001, 12, 700)
    partial = [behind_rcsum_header(p) for p in segs]
    with fasttun.Tun(new_name(), remote_csum=True) as tun:
        assert tun.remote_csum
        assert tun.send(partial[0]) == 1 and tun.send_batch(partial[1:]) == 11
        assert driver.read_sent() == segs   # each the full segment, checksum finished, header gone
        assert tun.send_batch(segs[:2]) == 2 and driver.read_sent() == segs[:2]   # complete ones as they are
    with fasttun.Tun(new_name(), coalesce=True, remote_csum=True) as tun:
        assert tun.send_batch(partial) == 12
        assert driver.read_sent() == [merge(segs)]   # merged without verifying, then finished as one
    with fasttun.Tun(new_name()) as tun:
        assert not tun.remote_csum
        with pytest.raises(ValueError, match="remote_csum=True"):
            tun.send(partial[0])
        bad = partial[0][:1] + bytes([6]) + partial[0][2:]
    with fasttun.Tun(new_name(), remote_csum=True) as tun:
        with pytest.raises(ValueError, match="remote-checksum header puts the checksum"):
            tun.send_batch([partial[0], bad])
        assert driver.read_sent() == [] and tun.stats.tx_rejected == 1


def test_a_missed_wakeup_costs_milliseconds(tun, driver):
    got: list[float] = []
    with tun.start_reader(lambda b: got.extend(time.monotonic() for _ in b)):
        driver.inject([minimal_ipv4(60, 0)])
        assert wait_for(lambda: len(got) == 1)
        driver.fault(MISSED_WAKEUP)  # the read event is not signalled for the next packet
        time.sleep(0.05)
        sent = time.monotonic()
        driver.inject([minimal_ipv4(60, 1)])
        assert wait_for(lambda: len(got) == 2, timeout=5)
    assert got[1] - sent < 0.5, f"the packet waited {got[1] - sent:.3f} s"


def test_close_wakes_a_blocked_recv(tun):
    errors: list[BaseException] = []

    def block() -> None:
        try:
            tun.recv()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    t = threading.Thread(target=block)
    t.start()
    time.sleep(0.2)
    tun.close()
    t.join(5)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], fasttun.TunClosedError)


# ---- driver, logger, features --------------------------------------------------------------------------

def test_driver_version(driver):
    assert fasttun.wintun_driver_version() == (0, 14)
    driver.fault(DRIVER_NOT_LOADED)
    assert fasttun.wintun_driver_version() is None


def test_wintun_log_goes_to_logging_with_level_and_time(driver, caplog):
    caplog.set_level(logging.DEBUG, logger="fasttun.wintun")
    before = time.time()
    driver.log(1, "hello from the driver")  # WINTUN_LOG_WARN
    driver.log(2, "ünïcode error")           # WINTUN_LOG_ERR
    records = [r for r in caplog.records if r.name == "fasttun.wintun"]
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.WARNING, "hello from the driver"),
                                                              (logging.ERROR, "ünïcode error")]
    assert all(before - 5 <= r.created <= time.time() + 5 for r in records)


def test_features_say_what_wintun_offers():
    feats = fasttun.features()
    assert feats["tun"] and feats["no_pi"]
    assert not feats["tap"] and not feats["multi_queue"] and not feats["vnet_hdr"]


def test_relative_dll_path_is_refused():
    with pytest.raises(ValueError, match="absolute"):
        fasttun.load_wintun("wintun.dll")


# ---- loading wintun.dll (each case in a fresh process: a process loads the DLL once) ------------------

def run_python(code: str, *, cwd: str | None = None, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "FASTTUN_WINTUN_DLL"}
    base.update(env or {})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=base, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


LOADER_CASES = r"""
import os, sys, fasttun
fake = sys.argv[1] if len(sys.argv) > 1 else None
d = os.environ["FASTTUN_TEST_FAKE_WINTUN_DIR"]
def fails(path, *what):
    try:
        fasttun.load_wintun(path)
    except fasttun.WintunLoadError as exc:
        msg = str(exc)
        assert all(w in msg for w in what), (path, msg)
        print("refused:", os.path.basename(os.path.dirname(path or "System32")), "|", msg)
    else:
        raise AssertionError(f"{path} loaded")
fails(os.path.join(d, "nowhere", "wintun.dll"), "no wintun.dll at")
fails(os.path.join(d, "garbage", "wintun.dll"), "not a Windows DLL")
fails(os.path.join(d, "noexport", "wintun.dll"), "lacks the export WintunGetAdapterLUID", "0.14")
if os.path.exists(os.path.join(d, "x86", "wintun.dll")):
    fails(os.path.join(d, "x86", "wintun.dll"), "x86 build", "amd64")
# planted in the current directory and on PATH: never loaded
assert os.path.exists("wintun.dll")
bundled = os.path.join(os.path.dirname(fasttun.__file__), "wintun.dll")
if os.path.exists(bundled):
    # an installed wheel: without configuration its own copy is loaded (and no planted one)
    import ctypes
    fasttun.load_wintun()
    k = ctypes.WinDLL("kernel32")
    k.GetModuleHandleW.restype = ctypes.c_void_p
    buf = ctypes.create_unicode_buffer(1024)
    k.GetModuleFileNameW(ctypes.c_void_p(k.GetModuleHandleW("wintun.dll")), buf, 1024)
    loaded = os.path.normcase(os.path.abspath(buf.value))
    assert loaded == os.path.normcase(os.path.abspath(bundled)), (loaded, bundled)
    print("loaded the bundled copy:", loaded)
    second = os.path.join(d, "fake", "wintun.dll")
else:
    fails(None, "not in System32")
    try:
        fasttun.Tun("planted")
    except fasttun.WintunLoadError as exc:
        assert "System32" in str(exc), exc
    else:
        raise AssertionError("a device opened with a planted DLL")
    fasttun.load_wintun(os.path.join(d, "fake", "wintun.dll"))
    assert fasttun.wintun_driver_version() == (0, 14)
    second = os.path.join(d, "noexport", "wintun.dll")
try:
    fasttun.load_wintun(second)
except ValueError as exc:
    assert "already loaded" in str(exc), exc
else:
    raise AssertionError("a second DLL was accepted")
print("LOADER OK")
"""


def test_loader_errors_and_planted_dlls_are_never_loaded(tmp_path):
    if not FAKE_DIR:
        pytest.skip("needs the fake wintun.dlls (tests/wine/winpy.py)")
    planted_cwd = tmp_path / "cwd"
    planted_path = tmp_path / "onpath"
    for d in (planted_cwd, planted_path):
        d.mkdir()
        shutil.copyfile(os.path.join(FAKE_DIR, "fake", "wintun.dll"), d / "wintun.dll")
    env = {"PATH": f"{planted_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = run_python(LOADER_CASES, cwd=str(planted_cwd), env=env)
    assert proc.returncode == 0 and "LOADER OK" in proc.stdout, proc.stdout + proc.stderr
    if os.environ.get("FASTTUN_EXPECT_BUNDLED_DLL") == "1":  # an installed wheel: its own DLL was the default
        assert "loaded the bundled copy" in proc.stdout, proc.stdout


def test_the_package_copy_of_the_dll_is_used(tmp_path):
    if not FAKE_DIR:
        pytest.skip("needs the fake wintun.dll (tests/wine/winpy.py)")
    pkg = tmp_path / "fasttun"
    shutil.copytree(Path(fasttun.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(os.path.join(FAKE_DIR, "fake", "wintun.dll"), pkg / "wintun.dll")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import ctypes, fasttun; "
            "assert fasttun.__file__.startswith(sys.argv[1]), fasttun.__file__; "
            "fasttun.load_wintun(); print(fasttun.wintun_driver_version()); "
            "k = ctypes.WinDLL('kernel32'); k.GetModuleHandleW.restype = ctypes.c_void_p; "
            "buf = ctypes.create_unicode_buffer(1024); "
            "k.GetModuleFileNameW(ctypes.c_void_p(k.GetModuleHandleW('wintun.dll')), buf, 1024); print(buf.value)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                          env={k: v for k, v in os.environ.items() if k != "FASTTUN_WINTUN_DLL"},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "(0, 14)"
    assert Path(lines[1]).resolve() == (pkg / "wintun.dll").resolve()


# ---- the command line ----------------------------------------------------------------------------------

def fake_env() -> dict[str, str]:
    return {"FASTTUN_WINTUN_DLL": os.path.join(FAKE_DIR, "fake", "wintun.dll")} if FAKE_DIR else {}


def test_fasttun_info_on_windows():
    proc = run_python("import sys; from fasttun.__main__ import main; sys.exit(main(['info']))", env=fake_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = dict(line.split(None, 1) if "  " in line else (line, "") for line in proc.stdout.splitlines())
    out = proc.stdout
    assert "backend" in rows and rows["backend"].strip() == "wintun", out
    assert "Windows" in out
    if FAKE_DIR:
        assert "wintun driver" in out and "0.14" in out, out
    if under_wine():
        assert "(Wine " in out, out


def test_fasttun_info_json_on_windows():
    proc = run_python("import sys; from fasttun.__main__ import main; sys.exit(main(['info', '--json']))",
                      env=fake_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["backend"] == "wintun" and doc["sys_platform"] == "win32", doc
    assert doc["tun_features"]["tun"] and not doc["tun_features"]["tap"], doc
    assert doc["offloads"] is None and doc["tools"] is None, doc
    if FAKE_DIR:
        assert doc["wintun"]["dll_loaded"] and doc["wintun"]["driver_version"] == "0.14", doc
    assert (doc["wine"] is not None) == under_wine(), doc


def test_fasttun_bench_pair_on_windows():
    proc = run_python("import sys; from fasttun.__main__ import main; "
                      "sys.exit(main(['bench', 'pair', '--smoke', '--seconds', '0.1']))", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("pair ")]
    assert len(rows) >= 2 and any("baseline" in r for r in rows), proc.stdout


def test_fasttun_bench_udp_on_windows(tmp_path):
    """The Windows socket path's scenario: batched (WSASendMsg/WSARecvMsg, USO/URO where granted) against the
    per-datagram path (sendto/recvfrom) as the baseline; under Wine a smoke test only, and the rows say so."""
    out = tmp_path / "udp.json"
    # Batches of 64: under Wine a reader's batch of the default 1024 datagrams takes longer to fill than a window
    proc = run_python("import sys; from fasttun.__main__ import main; sys.exit(main(['bench', 'udp', '--smoke', "
                      f"'--seconds', '0.2', '--batch', '64', '--json', {str(out)!r}]))", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    batched, per_datagram = rows
    assert batched["variant"].startswith("batched: WSASendMsg") and not batched["baseline"], rows
    assert per_datagram["variant"] == "per-datagram: sendto / recvfrom" and per_datagram["baseline"], rows
    assert batched["ratio"] > 0 and per_datagram["ratio"] == pytest.approx(1.0), rows
    # one datagram per call on the per-datagram path (the counters are read a moment apart: roughly); the batched
    # path's calls carry at least about one each
    assert per_datagram["extra"]["datagrams_per_send_call"] == pytest.approx(1.0, rel=0.1), rows
    assert per_datagram["extra"]["datagrams_per_receive_call"] == pytest.approx(1.0, rel=0.1), rows
    assert batched["extra"]["datagrams_per_send_call"] >= 0.9, rows
    table = [line for line in proc.stdout.splitlines() if line.startswith("udp ")]
    assert len(table) == 2, proc.stdout
    if under_wine():
        assert all("a smoke test only" in r["note"] and "Wine" in r["note"] for r in rows), rows
        assert all("a smoke test only" in line for line in table), proc.stdout
    else:
        assert all(r["note"] == "" for r in rows), rows
