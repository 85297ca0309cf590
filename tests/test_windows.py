"""The Wintun backend on a real Windows machine (the GitHub Windows job). Creating an adapter needs elevation;
without it those tests skip with the reason. Under Linux, tests/test_wintun_wine.py covers the C backend, and
tests/test_windows_python.py runs this module under Wine (with our fake wintun.dll; the adapter tests skip)."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import time
import uuid

import pytest

import fasttun
from conftest import under_wine

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Windows only")


def is_admin() -> bool:
    try:
        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except OSError:
        return False


def test_relative_dll_path_is_refused():
    with pytest.raises(ValueError, match="absolute"):
        fasttun.load_wintun("wintun.dll")


def test_driver_version_is_reported_or_none():
    version = fasttun.wintun_driver_version()
    assert version is None or (isinstance(version, tuple) and version[0] >= 0)


def test_the_wheel_ships_its_dll():
    if os.environ.get("FASTTUN_EXPECT_BUNDLED_DLL") != "1":
        pytest.skip("only checked on an installed wheel")
    assert os.path.exists(os.path.join(os.path.dirname(fasttun.__file__), "wintun.dll"))


@pytest.fixture
def adapter():
    if under_wine():
        pytest.skip("Wine 8 lacks GetIpInterfaceEntry, SetIpInterfaceEntry and CreateUnicastIpAddressEntry (IP "
                    "Helper MTU, addresses, routes, DNS) and has no Wintun driver; a real Windows runner checks these")
    if not is_admin():
        pytest.skip("creating a Wintun adapter needs an elevated (Administrator) process")
    name = f"fasttun-test-{os.getpid()}"
    try:
        tun = fasttun.Tun(name, mtu=1420, guid=uuid.uuid4(), addresses=["10.203.0.1/24"], up=True)
    except fasttun.TunPermissionError as exc:
        pytest.skip(f"the runner does not allow adapters: {exc}")
    yield tun
    tun.close()


def test_adapter_properties(adapter):
    assert adapter.backend == "wintun"
    assert adapter.luid > 0 and adapter.index > 0
    assert isinstance(adapter.guid, uuid.UUID)
    assert adapter.mtu == 1420
    assert any(str(a) == "10.203.0.1/24" for a in adapter.addresses)


def udp_arrives_through_a_reader(adapter: fasttun.Tun, destination: str) -> None:
    """A UDP datagram sent to `destination`, an address behind the adapter, comes out of its reader (sent again
    every 0.1 s for up to 10 s)."""
    got: list[bytes] = []
    with adapter.start_reader(lambda batch: got.extend(bytes(p) for p in batch)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(p[9] == 17 and p[-5:] == b"hello" for p in got):
                s.sendto(b"hello", (destination, 9999))
                time.sleep(0.1)
    assert any(p[9] == 17 and p[-5:] == b"hello" for p in got)


def test_udp_from_a_socket_arrives_through_the_reader(adapter):
    udp_arrives_through_a_reader(adapter, "10.203.0.2")


def test_oversized_send_is_refused_before_the_ring(adapter):
    with pytest.raises(ValueError, match="MTU"):
        adapter.send(bytes([0x45]) + bytes(1500))
    assert adapter.stats.tx_rejected == 1


def test_auto_ring_and_coalesce_work_with_the_real_driver():
    """The real driver takes the options (the fake under Wine checks what they do; their speed only shows here,
    with `fasttun bench` on Windows)."""
    if under_wine():
        pytest.skip("Wine 8 lacks GetIpInterfaceEntry, SetIpInterfaceEntry and CreateUnicastIpAddressEntry (IP "
                    "Helper MTU, addresses, routes, DNS) and has no Wintun driver; a real Windows runner checks these")
    if not is_admin():
        pytest.skip("creating a Wintun adapter needs an elevated (Administrator) process")
    try:
        tun = fasttun.Tun(f"fasttun-auto-{os.getpid()}", guid=uuid.uuid4(), ring_capacity="auto", coalesce=True,
                          addresses=["10.204.0.1/24"], up=True)
    except fasttun.TunPermissionError as exc:
        pytest.skip(f"the runner does not allow adapters: {exc}")
    with tun:
        assert (tun.ring_capacity, tun.ring_grows) == (4 << 20, 0)
        udp_arrives_through_a_reader(tun, "10.204.0.2")


def test_udp_endpoint_batches_with_the_message_calls_and_large_buffers():
    """WSARecvMsg/WSASendMsg in use, 8 MiB buffers granted by default, USO/URO as the socket's probe found them
    (Wine 8 has neither), per-datagram destinations, and `fasttun info` saying the same."""
    with fasttun.UdpEndpoint(bind=("127.0.0.1", 0)) as rx1, fasttun.UdpEndpoint(bind=("127.0.0.1", 0)) as rx2, \
            fasttun.UdpEndpoint(bind=("127.0.0.1", 0)) as tx:
        o = tx.offloads
        assert o["message_calls"] and o["rcvbuf"] >= 8 << 20 and o["sndbuf"] >= 8 << 20, o
        if under_wine():
            assert not o["gso_supported"] and not o["gro_supported"], o
        assert fasttun.udp_offloads() == {"gso": o["gso_supported"], "gro": o["gro_supported"]}
        port1, port2 = int(rx1.name.rsplit(":", 1)[1]), int(rx2.name.rsplit(":", 1)[1])
        for i in range(6):
            assert tx.send_batch([bytes([i]) * 200] * 3, ("127.0.0.1", port1 if i % 2 == 0 else port2)) == 3
        got1, got2 = [], []
        deadline = time.monotonic() + 10
        while (len(got1) < 9 or len(got2) < 9) and time.monotonic() < deadline:
            for ep, got in ((rx1, got1), (rx2, got2)):
                got.extend(bytes(p) for p in ep.recv_batch(64, timeout=0.1))
        assert got1 == [bytes([i]) * 200 for i in (0, 2, 4) for _ in range(3)]
        assert got2 == [bytes([i]) * 200 for i in (1, 3, 5) for _ in range(3)]
        s = tx.stats
        assert s.tx_packets == 18 and s.message_fallbacks == 0
        assert s.gso_messages > 0 if o["gso"] else s.tx_messages == 18
    from fasttun._info import facts, text_lines
    row = dict(text_lines(facts()))["UDP USO/URO"]
    assert "WSARecvMsg/WSASendMsg" in row and "8.0/8.0 MiB" in row, row
