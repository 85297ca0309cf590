"""Bad input, one table: every row names the exception and what its message must say (what was wrong and what
is allowed), checks that nothing was sent, and that the device still works afterwards.

Rows about packets and call arguments run on the in-memory pair (and the packet rows once more on a real TUN
device); rows that configure a device (names, MTU, addresses) need a real TUN device in a namespace of its own."""

from __future__ import annotations

import array
import re
import struct
import time

import pytest

import fasttun
from icmp_ping import ping

MTU = 1500


def ipv4(size: int, first: int = 0x45, total: int | None = None) -> bytes:
    head = struct.pack("!BBH", first, 0, size if total is None else total) + bytes(16)
    return (head + bytes(max(0, size - 20)))[:size]


def ipv6(size: int, payload: int | None = None) -> bytes:
    head = struct.pack("!IH", 0x60000000, size - 40 if payload is None else payload) + bytes(34)
    return (head + bytes(max(0, size - 40)))[:size]


GOOD = ipv4(60)


def row_ids(rows: list) -> list[str]:
    return [r.values[0] if hasattr(r, "marks") else r[0] for r in rows]


def numpy_noncontiguous():
    np = pytest.importorskip("numpy")
    return np.frombuffer(ipv4(120), dtype=np.uint8)[::2]


# (id, packet factory, exception, message regex)
PACKETS = [
    ("empty", lambda: b"", ValueError, r"packet is empty; an IPv4 or IPv6 packet of 20\.\.1500 bytes is allowed"),
    ("1 byte", lambda: b"\x45", ValueError, r"1 bytes is shorter than the 20-byte IPv4 header"),
    ("19 bytes", lambda: ipv4(19), ValueError, r"19 bytes is shorter than the 20-byte IPv4 header"),
    ("39 bytes IPv6", lambda: ipv6(39, 0), ValueError, r"39 bytes is shorter than the 40-byte IPv6 header"),
    ("65536 bytes", lambda: ipv4(65536, total=0xFFFF), ValueError,
     r"65536 bytes is larger than the IP maximum of 65535"),
    ("MTU+1", lambda: ipv4(MTU + 1), ValueError, r"1501 bytes is larger than the device MTU of 1500"),
    ("version 0", lambda: ipv4(60, 0x05), ValueError, r"IP version 0; only IPv4 .* and IPv6 .* are allowed"),
    ("version 5", lambda: ipv4(60, 0x55), ValueError, r"IP version 5; only IPv4 .* and IPv6 .* are allowed"),
    ("version 15", lambda: ipv4(60, 0xF5), ValueError, r"IP version 15; only IPv4 .* and IPv6 .* are allowed"),
    ("IHL 4", lambda: ipv4(60, 0x44), ValueError, r"header length field says 16 bytes; it must be 20\.\.60"),
    ("IHL 0", lambda: ipv4(60, 0x40), ValueError, r"header length field says 0 bytes; it must be 20\.\.60"),
    ("IHL past the packet", lambda: ipv4(40, 0x4F), ValueError, r"says 60 bytes; it must be 20\.\.60 and within"),
    pytest.param("IPv4 total length 0", lambda: ipv4(60, total=0), ValueError, r"length"),
    pytest.param("IPv4 total length 19", lambda: ipv4(60, total=19), ValueError, r"length"),
    pytest.param("IPv4 total length beyond the buffer", lambda: ipv4(60, total=61), ValueError, r"length"),
    pytest.param("IPv6 payload length beyond the buffer", lambda: ipv6(60, payload=21), ValueError,
                 r"length"),
    ("None", lambda: None, TypeError, r"a packet must be a contiguous bytes-like object.*not NoneType"),
    ("int", lambda: 60, TypeError, r"a packet must be a contiguous bytes-like object.*not int"),
    ("str", lambda: GOOD.decode("latin-1"), TypeError, r"a packet must be a contiguous bytes-like object.*not str"),
    ("list of ints", lambda: list(GOOD), TypeError, r"a packet must be a contiguous bytes-like object.*not list"),
    ("non-contiguous memoryview", lambda: memoryview(ipv4(120))[::2], TypeError,
     r"a packet must be a contiguous bytes-like object.*not memoryview"),
    pytest.param("non-contiguous numpy array", numpy_noncontiguous, TypeError,
                 r"a packet must be a contiguous bytes-like object.*not (numpy\.)?ndarray"),
]


def good_packet_goes_through(a: fasttun.Tun, b: fasttun.Tun) -> None:
    assert a.send(GOOD) == 1
    assert b.recv(timeout=2) == GOOD


@pytest.mark.parametrize("name, make, exc, message", PACKETS, ids=row_ids(PACKETS))
@pytest.mark.parametrize("how", ["send", "send_batch"])
def test_bad_packet_on_the_pair(name, make, exc, message, how):
    a, b = fasttun.pair(mtu=65535 if name == "65536 bytes" else MTU)
    with a, b:
        packet = make()
        before = a.stats
        with pytest.raises(exc, match=message) as info:
            if how == "send":
                a.send(packet)
            else:
                a.send_batch([GOOD, packet, GOOD])
        if how == "send_batch":
            assert "packet 1" in str(info.value) and "nothing was sent" in str(info.value)
        after = a.stats
        assert after.tx_packets == before.tx_packets and after.tx_bytes == before.tx_bytes
        if exc is ValueError:
            assert after.tx_rejected == before.tx_rejected + 1
        assert b.recv(timeout=0) is None  # the peer received nothing
        good_packet_goes_through(a, b)


# ---- receiving into bad buffers ------------------------------------------------------------------------

def numpy_readonly():
    np = pytest.importorskip("numpy")
    arr = np.zeros(2000, dtype=np.uint8)
    arr.setflags(write=False)
    return arr


def numpy_noncontiguous_buffer():
    np = pytest.importorskip("numpy")
    return np.zeros(4000, dtype=np.uint8)[::2]


BUFFERS = [
    ("bytes", lambda: bytes(2000), TypeError, r"recv_into needs a writable contiguous buffer, not bytes"),
    ("read-only memoryview", lambda: memoryview(bytearray(2000)).toreadonly(), TypeError,
     r"recv_into needs a writable contiguous buffer, not memoryview"),
    ("non-contiguous memoryview", lambda: memoryview(bytearray(4000))[::2], TypeError,
     r"recv_into needs a writable contiguous buffer, not memoryview"),
    ("None", lambda: None, TypeError, r"recv_into needs a writable contiguous buffer, not NoneType"),
    ("str", lambda: " " * 2000, TypeError, r"recv_into needs a writable contiguous buffer, not str"),
    pytest.param("read-only numpy array", numpy_readonly, TypeError, r"recv_into needs a writable contiguous buffer"),
    pytest.param("non-contiguous numpy array", numpy_noncontiguous_buffer, TypeError,
                 r"recv_into needs a writable contiguous buffer"),
]


@pytest.mark.parametrize("name, make, exc, message", BUFFERS, ids=row_ids(BUFFERS))
def test_recv_into_a_bad_buffer_loses_nothing(ends, name, make, exc, message):
    a, b = ends
    assert a.send(GOOD) == 1
    with pytest.raises(exc, match=message):
        b.recv_into(make(), timeout=1)
    buf = array.array("B", bytes(2000))
    assert b.recv_into(buf, timeout=1) == len(GOOD) and bytes(buf[:len(GOOD)]) == GOOD  # still there, intact
    good_packet_goes_through(a, b)


# ---- call arguments on the pair: batch sizes, timeouts, policies -----------------------------------------

ARGUMENTS = [
    ("recv_batch 0", lambda a, b: b.recv_batch(0, timeout=0), ValueError,
     r"max_packets 0 is out of range; allowed: 1\.\.65536"),
    ("recv_batch -1", lambda a, b: b.recv_batch(-1, timeout=0), ValueError,
     r"max_packets -1 is out of range; allowed: 1\.\.65536"),
    ("recv_batch huge", lambda a, b: b.recv_batch(2**40, timeout=0), ValueError,
     r"max_packets 1099511627776 is out of range; allowed: 1\.\.65536"),
    ("recv_batch float", lambda a, b: b.recv_batch(1.5, timeout=0), TypeError, r"max_packets must be an int"),
    ("reader batch 0", lambda a, b: b.start_reader(lambda batch: None, batch_size=0), ValueError,
     r"batch_size 0 is out of range; allowed: 1\.\.65536"),
    ("reader batch -1", lambda a, b: b.start_reader(lambda batch: None, batch_size=-1), ValueError,
     r"batch_size -1 is out of range; allowed: 1\.\.65536"),
    ("reader batch huge", lambda a, b: b.start_reader(lambda batch: None, batch_size=65537), ValueError,
     r"batch_size 65537 is out of range; allowed: 1\.\.65536"),
    ("reader not callable", lambda a, b: b.start_reader(None), TypeError, r"callback must be callable"),
    ("reader pipeline 9", lambda a, b: b.start_reader(len, pipeline=9), ValueError,
     r"pipeline 9 is out of range; allowed: 0\.\.8"),
    ("reader pipeline 2**31", lambda a, b: b.start_reader(len, pipeline=2**31), ValueError,
     r"pipeline 2147483648 is out of range; allowed: 0\.\.8"),
    ("reader pipeline -2**63-1", lambda a, b: b.start_reader(len, pipeline=-2**63 - 1), ValueError,
     r"pipeline -9223372036854775809 is out of range"),
    ("reader spin -1", lambda a, b: b.start_reader(lambda batch: None, spin_us=-1), ValueError,
     r"spin_us -1 is out of range"),
    ("recv timeout -1", lambda a, b: b.recv(timeout=-1), ValueError,
     r"timeout must be None or a number of seconds >= 0, got -1"),
    ("recv timeout NaN", lambda a, b: b.recv(timeout=float("nan")), ValueError,
     r"timeout must be None or a number of seconds >= 0, got nan"),
    ("recv timeout inf", lambda a, b: b.recv(timeout=float("inf")), ValueError,
     r"timeout inf is too large; at most 2000000 seconds"),
    ("recv_batch timeout -0.5", lambda a, b: b.recv_batch(8, timeout=-0.5), ValueError,
     r"timeout must be None or a number of seconds >= 0"),
    ("recv_into timeout NaN", lambda a, b: b.recv_into(bytearray(2000), timeout=float("nan")), ValueError,
     r"timeout must be None or a number of seconds >= 0"),
    ("send timeout -1", lambda a, b: a.send(GOOD, timeout=-1), ValueError,
     r"timeout must be None or a number of seconds >= 0"),
    ("send_batch timeout inf", lambda a, b: a.send_batch([GOOD], timeout=float("inf")), ValueError,
     r"timeout inf is too large"),
    pytest.param("recv timeout '1'", lambda a, b: b.recv(timeout="1"), (TypeError, ValueError), r"timeout"),
    ("send on_full", lambda a, b: a.send(GOOD, on_full="block"), ValueError,
     r"on_full must be one of 'drop', 'wait', 'raise', not 'block'"),
    ("send_batch None", lambda a, b: a.send_batch(None), TypeError, r"not iterable"),
    ("send_batch bytes", lambda a, b: a.send_batch(GOOD), TypeError,
     r"packet 0: a packet must be a contiguous bytes-like object \(nothing was sent\), not int"),
]


@pytest.mark.parametrize("name, call, exc, message", ARGUMENTS, ids=row_ids(ARGUMENTS))
def test_bad_argument_on_the_pair(ends, name, call, exc, message):
    a, b = ends
    assert a.send(GOOD) == 1  # a packet waiting: a bad receive must not take it
    before = a.stats
    with pytest.raises(exc, match=message):
        call(a, b)
    assert a.stats.tx_packets == before.tx_packets
    assert b.recv(timeout=1) == GOOD and b.recv(timeout=0) is None
    good_packet_goes_through(a, b)
    assert not b._readers, "a refused start_reader left a reader behind"


BUILDER_ARGUMENTS = [
    ("reserve 2**63", lambda b: b.reserve(2**63), ValueError,
     r"a packet of 9223372036854775808 bytes is larger than 65535"),
    ("reserve -2**64", lambda b: b.reserve(-2**64), ValueError, r"a packet cannot have -18446744073709551616 bytes"),
    ("reserve 1.0", lambda b: b.reserve(1.0), TypeError, r"n must be an int, not float"),
    ("reserve True", lambda b: b.reserve(True), TypeError, r"n must be an int, not bool"),
    ("append_split size 2**64", lambda b: b.append_split(b"abc", 2**64), ValueError,
     r"size 18446744073709551616 is out of range"),
    ("append_split size 0", lambda b: b.append_split(b"abc", 0), ValueError, r"size 0 is out of range"),
    ("append_split index_at 2**63", lambda b: b.append_split(b"abc", 1, b"h", 2**63), ValueError,
     r"index_at 9223372036854775808 is out of range"),
    ("append_split index_at -2", lambda b: b.append_split(b"abc", 1, b"h", -2), ValueError,
     r"index_at -2 is out of range"),
    ("append_joined index_at 2**63", lambda b: b.append_joined(fasttun.make_batch([b"hx"]), 0, 1, b"h", 2**63),
     ValueError, r"index_at 9223372036854775808 is out of range"),
    ("append_joined start '0'", lambda b: b.append_joined(fasttun.make_batch([b"hx"]), "0", 1, b"h"), TypeError,
     r"start must be an int, not str"),
]


@pytest.mark.parametrize("name, call, exc, message", BUILDER_ARGUMENTS, ids=row_ids(BUILDER_ARGUMENTS))
def test_bad_builder_argument_changes_nothing(name, call, exc, message):
    b = fasttun.BatchBuilder(max_packets=4, capacity=256)
    b.append(b"kept")
    with pytest.raises(exc, match=message):
        call(b)
    assert b.batch().copy() == [b"kept"]


def test_append_joined_beyond_the_batch_is_false_not_an_error():
    b = fasttun.BatchBuilder()
    batch = fasttun.make_batch([b"hx", b"hy"])
    for start, count in [(2**63, 1), (0, 2**63), (-2**63 - 1, 1), (1, 2), (0, 0)]:
        assert b.append_joined(batch, start, count, b"h") is False
    assert len(b) == 0 and b.append_joined(batch, 0, 2, b"h") is True and b.batch().copy() == [b"xy"]


PAIR_SETTINGS = [
    ("mtu 0", dict(mtu=0), ValueError, r"mtu 0 is out of range; allowed: 68\.\.65535"),
    ("mtu 67", dict(mtu=67), ValueError, r"mtu 67 is out of range; allowed: 68\.\.65535"),
    ("mtu 65536", dict(mtu=65536), ValueError, r"mtu 65536 is out of range; allowed: 68\.\.65535"),
    ("mtu -1", dict(mtu=-1), ValueError, r"mtu -1 is out of range; allowed: 68\.\.65535"),
    ("mtu str", dict(mtu="1500"), TypeError, r"mtu must be an int, not str"),
    ("capacity 0", dict(capacity=0), ValueError, r"capacity 0 is out of range; allowed: 1\.\.1048576"),
    ("capacity -1", dict(capacity=-1), ValueError, r"capacity -1 is out of range; allowed: 1\.\.1048576"),
    ("capacity huge", dict(capacity=2**40), ValueError, r"capacity 1099511627776 is out of range"),
    ("capacity_bytes small", dict(capacity_bytes=1000), ValueError,
     r"capacity_bytes 1000 is out of range; allowed: \d+\.\.1073741824"),
    ("capacity_bytes huge", dict(capacity_bytes=2**31), ValueError, r"capacity_bytes 2147483648 is out of range"),
    ("on_full", dict(on_full="bogus"), ValueError, r"on_full must be one of 'drop', 'wait', 'raise', not 'bogus'"),
    ("send_timeout -1", dict(send_timeout=-1), ValueError, r"timeout must be None or a number of seconds >= 0"),
    ("send_timeout NaN", dict(send_timeout=float("nan")), ValueError, r"timeout must be None or a number of seconds"),
    pytest.param("send_timeout '1'", dict(send_timeout="1"), (TypeError, ValueError), r"timeout"),
]


@pytest.mark.parametrize("name, kwargs, exc, message", PAIR_SETTINGS,
                         ids=row_ids(PAIR_SETTINGS))
def test_bad_pair_settings_make_no_pair(name, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        fasttun.pair(**kwargs)
    a, b = fasttun.pair()  # and the next one works
    with a, b:
        good_packet_goes_through(a, b)


# ---- configuring a real TUN device: names, MTU, addresses ------------------------------------------------

def links(ns) -> set[str]:
    out = ns.run("ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


FORBIDDEN = r"has a forbidden character at byte \d+; printable ASCII without spaces, '/' or ':' is allowed"
NAMES = [
    pytest.param("", ValueError, r"name", id="empty"),
    pytest.param("a" * 16, ValueError, r"is 16 bytes; at most 15 are allowed", id="too long"),
    pytest.param("\u00fc" * 8, ValueError, r"is 16 bytes; at most 15 are allowed", id="too long in UTF-8"),
    pytest.param("ft/0", ValueError, FORBIDDEN, id="slash"),
    pytest.param("ft 0", ValueError, FORBIDDEN, id="space"),
    pytest.param("ft:0", ValueError, FORBIDDEN, id="colon"),
    pytest.param("t\u00fcn0", ValueError, FORBIDDEN, id="non-ASCII"),
    pytest.param("..", ValueError, r"'\.\.' is not allowed", id="dot dot"),
    pytest.param("ab\x00cd", ValueError, r"NUL|forbidden", id="NUL"),
    pytest.param("\x00", ValueError, r"NUL|forbidden", id="only NUL"),
    pytest.param(b"ft0", TypeError, r"name must be a str or None, not bytes", id="bytes"),
]

SETTINGS = [
    pytest.param(dict(mtu=0), ValueError, r"mtu 0 is out of range; allowed: 68\.\.65535", id="mtu 0"),
    pytest.param(dict(mtu=67), ValueError, r"mtu 67 is out of range; allowed: 68\.\.65535", id="mtu 67"),
    pytest.param(dict(mtu=65536), ValueError, r"mtu 65536 is out of range; allowed: 68\.\.65535", id="mtu 65536"),
    pytest.param(dict(mtu=-1), ValueError, r"mtu -1 is out of range; allowed: 68\.\.65535", id="mtu -1"),
    pytest.param(dict(mtu=1279, addresses=["fd00:9::1/64"]), ValueError,
                 r"IPv6 address fd00:9::1/64 needs an MTU of at least 1280; the device has 1279", id="mtu 1279 IPv6"),
    pytest.param(dict(addresses=["10.9.0.300/24"]), ValueError,
                 r"'10\.9\.0\.300/24' is not an IPv4 or IPv6 address with an optional /prefix", id="bad octet"),
    pytest.param(dict(addresses=["10.9.0.1/33"]), ValueError, r"'10\.9\.0\.1/33' is not an IPv4 or IPv6 address",
                 id="prefix 33"),
    pytest.param(dict(addresses=["fd00:9::1/129"]), ValueError, r"'fd00:9::1/129' is not an IPv4 or IPv6 address",
                 id="prefix 129"),
    pytest.param(dict(addresses=["10.9.0.1/-1"]), ValueError, r"is not an IPv4 or IPv6 address", id="prefix -1"),
    pytest.param(dict(addresses=["nonsense"]), ValueError, r"'nonsense' is not an IPv4 or IPv6 address",
                 id="not an address"),
    pytest.param(dict(addresses=[""]), ValueError, r"'' is not an IPv4 or IPv6 address", id="empty address"),
    pytest.param(dict(addresses=[167772161]), TypeError, r"an address must be a str .* not int", id="int address"),
    pytest.param(dict(txqueuelen=-1), ValueError, r"txqueuelen -1 is out of range; allowed: 0\.\.2147483647",
                 id="txqueuelen -1"),
    pytest.param(dict(queues=0), ValueError, r"queues 0 is out of range; allowed: 1\.\.", id="queues 0"),
    pytest.param(dict(ring_capacity=1 << 20), ValueError, r"ring_capacity are Wintun \(Windows\) settings",
                 id="ring capacity on Linux"),
    pytest.param(dict(on_full="never"), ValueError, r"on_full must be one of", id="on_full"),
    pytest.param(dict(send_timeout=float("inf")), ValueError, r"timeout inf is too large", id="send_timeout inf"),
    pytest.param(dict(offload=True, offload_mode="fast"), ValueError, r"offload_mode must be 'segments' or 'super'",
                 id="offload mode"),
]


@pytest.mark.root
@pytest.mark.parametrize("name, exc, message", NAMES)
def test_bad_name_creates_nothing(netns, name, exc, message):
    existing = links(netns)
    with pytest.raises(exc, match=message):
        tun = fasttun.Tun(name)
        tun.close()  # (only reached when the name was wrongly accepted)
    assert links(netns) == existing
    with fasttun.Tun("ftbad0", mtu=1280) as tun:  # the next device works
        assert tun.name == "ftbad0" and tun.mtu == 1280


@pytest.mark.root
@pytest.mark.parametrize("kwargs, exc, message", SETTINGS)
def test_bad_setting_creates_nothing(netns, kwargs, exc, message):
    existing = links(netns)
    with pytest.raises(exc, match=message):
        fasttun.Tun("ftbad1", **kwargs).close()
    assert links(netns) == existing, "a refused Tun() left a device behind"
    with fasttun.Tun("ftbad1", addresses=["10.9.0.1/24"], up=True) as tun:
        assert tun.is_up


@pytest.mark.root
def test_addresses_given_as_one_str_are_refused_or_taken_whole(netns):
    """Either reading is fine (refuse a str, or take it as the one address); iterating its characters is not."""
    existing = links(netns)
    try:
        tun = fasttun.Tun("ftbad4", addresses="10.9.3.1/24")
    except (TypeError, ValueError) as exc:
        assert "addresses" in str(exc) and "str" in str(exc), exc
        assert links(netns) == existing
        return
    with tun:
        assert [str(a) for a in tun.addresses if a.version == 4] == ["10.9.3.1/24"]


@pytest.mark.root
def test_bad_settings_on_an_open_device_leave_it_working(netns):
    with fasttun.Tun("ftbad2", mtu=1400, addresses=["10.9.1.1/24", "fd00:9:1::1/64"], up=True) as tun:
        addresses = set(tun.addresses)
        for value, exc, message in [(0, ValueError, "mtu 0 is out of range"), (67, ValueError, "68..65535"),
                                    (65536, ValueError, "68..65535"), (-1, ValueError, "68..65535"),
                                    ("1400", TypeError, "mtu must be an int")]:
            with pytest.raises(exc, match=message):
                tun.mtu = value
            assert tun.mtu == 1400
        for address, exc, message in [("10.9.1.300/24", ValueError, "not an IPv4 or IPv6 address"),
                                      ("fd00::1/129", ValueError, "not an IPv4 or IPv6 address"),
                                      (None, TypeError, "an address must be a str")]:
            with pytest.raises(exc, match=message):
                tun.add_address(address)
        for dest, via in [("10.9.9.0/33", None), ("not a net", None), ("10.9.9.0/24", "fd00::1")]:
            with pytest.raises(ValueError):
                tun.add_route(dest, via)
        assert set(tun.addresses) == addresses
        for bad in [b"", ipv4(19), ipv4(1401), ipv4(60, 0x55)]:
            before = tun.stats
            with pytest.raises(ValueError):
                tun.send(bad)
            assert tun.stats.tx_rejected == before.tx_rejected + 1 and tun.stats.tx_packets == before.tx_packets
        # still works: a ping to an address behind the device comes out of it as an ICMP echo request
        ping("10.9.1.2", count=1, timeout=0.2)  # nobody answers; the request is what we want
        deadline = time.monotonic() + 3
        echo = False
        while not echo and time.monotonic() < deadline:
            echo = any(bytes(p)[:1] == b"\x45" and bytes(p)[9] == 1 for p in tun.recv_batch(64, timeout=0.5))
        assert echo, "the ping never came out of the device"
        assert tun.send(GOOD) == 1


@pytest.mark.root
def test_bad_packets_on_a_real_device_are_refused_and_counted(netns):
    rows = [p for p in PACKETS if not hasattr(p, "marks") and p[0] != "65536 bytes"]
    with fasttun.Tun("ftbad3", mtu=MTU, addresses=["10.9.2.1/24"], up=True) as tun:
        for name, make, exc, message in rows:
            before = tun.stats
            with pytest.raises(exc, match=message):
                tun.send(make())
            with pytest.raises(exc, match="packet 1 of 2: .*" + message if exc is ValueError else message):
                tun.send_batch([GOOD, make()])
            after = tun.stats
            assert after.tx_packets == before.tx_packets, name
            assert after.tx_rejected == before.tx_rejected + (2 if exc is ValueError else 0), name
        assert tun.send(GOOD) == 1 and tun.stats.tx_packets == 1


def test_the_table_builders_make_what_they_say():
    """The packets of the table are what their names say (a test of the test)."""
    assert len(ipv4(19)) == 19 and struct.unpack("!H", ipv4(60)[2:4])[0] == 60
    assert struct.unpack("!H", ipv4(60, total=61)[2:4])[0] == 61
    assert len(ipv6(60)) == 60 and struct.unpack("!H", ipv6(60)[4:6])[0] == 20
    assert ipv4(60, 0xF5)[0] >> 4 == 15 and ipv4(60, 0x44)[0] & 15 == 4


# ---- one owner per rule: the C core's limits, in the same words on every kind of device ------------------

# (id, call on an open device, the C core's message: exactly, with nothing added by another layer)
READER_LIMITS = [
    ("batch_size 0", lambda d: d.start_reader(len, batch_size=0), "batch_size 0 is out of range; allowed: 1..65536"),
    ("batch_size 2**70", lambda d: d.start_reader(len, batch_size=2**70),
     "batch_size 1180591620717411303424 is out of range; allowed: 1..65536"),
    ("spin_us", lambda d: d.start_reader(len, spin_us=1_000_001),
     "spin_us 1000001 is out of range; allowed: 0..1000000"),
    ("adaptive_pps", lambda d: d.start_reader(len, adaptive_pps=-1),
     "adaptive_pps -1 is out of range; allowed: 0..4294967295"),
    ("pipeline", lambda d: d.start_reader(len, pipeline=9),
     "pipeline 9 is out of range; allowed: 0..8 batches in flight"),
    ("pipeline -2**63-1", lambda d: d.start_reader(len, pipeline=-2**63 - 1),
     "pipeline -9223372036854775809 is out of range; allowed: 0..8 batches in flight"),
]


def one_of_each(netns) -> list:
    """An open pair end, Linux TUN device and UDP endpoint (each closed by the caller)."""
    a, b = fasttun.pair()
    b.close()
    return [a, fasttun.Tun("ftlim0"), fasttun.UdpEndpoint(bind=("127.0.0.1", 0))]


@pytest.mark.root
@pytest.mark.parametrize("name, call, message", READER_LIMITS, ids=row_ids(READER_LIMITS))
def test_a_limit_says_the_c_cores_words_on_every_device(netns, name, call, message):
    devices = one_of_each(netns)
    try:
        for dev in devices:
            with pytest.raises(ValueError) as info:
                call(dev)
            assert str(info.value) == message, type(dev).__name__
            assert not dev._readers
        for dev, what in zip(devices, ["max_packets", "max_packets", "max_datagrams"]):
            with pytest.raises(ValueError) as info:
                dev.recv_batch(65537, timeout=0)
            assert str(info.value) == f"{what} 65537 is out of range; allowed: 1..65536"
    finally:
        for dev in devices:
            dev.close()


@pytest.mark.root
def test_an_mtu_out_of_range_says_the_same_on_the_pair_and_a_tun_device(netns):
    for mtu in [67, 65536, -1, 2**64]:
        message = f"mtu {mtu} is out of range; allowed: 68..65535"
        for open_ in [lambda: fasttun.pair(mtu=mtu), lambda: fasttun.Tun("ftlim1", mtu=mtu)]:
            with pytest.raises(ValueError) as info:
                open_()
            assert str(info.value) == message
        with fasttun.Tun("ftlim1") as tun:
            with pytest.raises(ValueError) as info:
                tun.mtu = mtu
            assert str(info.value) == message
    assert "ftlim1" not in links(netns)


def test_the_python_layer_keeps_no_copy_of_the_c_cores_ranges():
    """The C core owns every range a value passed to it must lie in; the Python modules only convert types: none
    compares a value with one of the core's limits (a copy would drift, and give a second message). The one
    range helper left serves values that never reach the core (ports and scope ids for the socket module)."""
    from pathlib import Path

    limits = re.compile(r"MAX_BATCH|MAX_SPIN_US|MAX_PIPELINE|\bMIN_MTU|MAX_PACKET\b|PAIR_M(AX|IN)_CAPACITY|"
                        r"LINUX_MAX_QUEUES|RING_CAPACITY|UDP_BUF_M|UDP_MAX_PAYLOAD|2\*\*3[12]|2147483647|4294967295")
    compares = re.compile(r"<=?|>=?|\b_ranged_int\(")
    for module in sorted(Path(fasttun.__file__).parent.glob("*.py")):
        for number, line in enumerate(module.read_text(encoding="utf-8").splitlines(), 1):
            assert not (limits.search(line) and compares.search(line)), f"{module.name}:{number}: {line.strip()}"
    helpers = [p.name for p in Path(fasttun.__file__).parent.glob("*.py") if "def _ranged_int" in p.read_text()]
    assert helpers == ["_udp.py"]


@pytest.mark.root
def test_a_queue_that_is_not_there_is_the_devices_limit(netns):
    with fasttun.Tun("ftlim2", queues=2) as tun:
        for queue in [2, -1, 2**70]:
            with pytest.raises(ValueError) as info:
                tun.fileno(queue)
            assert str(info.value) == f"queue {queue} is out of range; allowed: 0..1"
        with pytest.raises(TypeError, match="queue must be an int, not str"):
            tun.fileno("0")  # type: ignore[arg-type]
        assert tun.fileno(1) >= 0
