"""fasttun.icmp: the echo replies responders are built on (in C), against packets built independently."""

from __future__ import annotations

import os
import random
import time

import pytest

import fasttun
from fasttun import icmp
from packets import checksum, icmp4_echo, icmp6_echo, minimal_ipv4


@pytest.mark.parametrize("size", [0, 1, 56, 1400])
def test_ipv4_echo_reply_is_the_reply_a_host_would_send(size):
    payload = os.urandom(size)
    request = icmp4_echo("10.0.0.1", "10.0.0.2", 0x1234, 7, payload)
    reply = icmp.echo_reply(request)
    assert reply is not None
    expected = icmp4_echo("10.0.0.2", "10.0.0.1", 0x1234, 7, payload, request=False)
    # Identical but for the IP id and header checksum we copy from the request: compare field by field.
    assert reply[20:] == expected[20:]                       # ICMP: type 0, same id/seq/payload, valid checksum
    assert reply[12:16] == request[16:20] and reply[16:20] == request[12:16]
    assert reply[8] == 64 and checksum(reply[:20]) == 0     # header checksum verifies


@pytest.mark.parametrize("size", [0, 56, 1232])
def test_ipv6_echo_reply_is_the_reply_a_host_would_send(size):
    payload = os.urandom(size)
    request = icmp6_echo("fd00::1", "fd00::2", 99, 3, payload)
    assert icmp.echo_reply(request) == icmp6_echo("fd00::2", "fd00::1", 99, 3, payload, request=False)


def test_works_on_every_kind_of_buffer_and_on_batch_packets():
    request = icmp4_echo("10.0.0.1", "10.0.0.2", 1, 1, b"abc")
    want = icmp.echo_reply(request)
    for buf in (bytearray(request), memoryview(request), fasttun.make_batch([request])[0]):
        assert icmp.echo_reply(buf) == want


@pytest.mark.parametrize("packet", [
    b"", b"\x45", minimal_ipv4(60, 1),                                   # not ICMP
    icmp4_echo("10.0.0.1", "10.0.0.2", 1, 1, b"x", request=False),      # a reply, not a request
    icmp4_echo("10.0.0.1", "10.0.0.2", 1, 1, b"xyz")[:-1],              # total length beyond the buffer
    icmp6_echo("fd00::1", "fd00::2", 1, 1, b"x", request=False),
    icmp6_echo("fd00::1", "fd00::2", 1, 1, b"xyz")[:-2],                 # payload length beyond the buffer
    bytes([0x4F]) + icmp4_echo("10.0.0.1", "10.0.0.2", 1, 1, b"x")[1:],  # IHL says 60 bytes of header
])
def test_anything_else_gets_none(packet):
    assert icmp.echo_reply(packet) is None


def test_random_bytes_never_crash_and_replies_always_verify():
    rng = random.Random(1)
    seeds = [icmp4_echo("10.0.0.1", "10.0.0.2", 1, 1, b"p" * 20), icmp6_echo("fd00::1", "fd00::2", 1, 1, b"p" * 20)]
    for _ in range(20000):
        p = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            p[rng.randrange(len(p))] = rng.randrange(256)
        if rng.random() < 0.2:
            del p[rng.randrange(len(p) + 1):]
        reply = icmp.echo_reply(bytes(p))
        if reply is not None:
            assert len(reply) <= len(p)
            if reply[0] >> 4 == 4:
                assert checksum(reply[: (reply[0] & 15) * 4]) == 0


def test_checksum_matches_an_independent_one():
    rng = random.Random(2)
    for n in (0, 1, 2, 3, 20, 1499, 65535):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert icmp.checksum(data) == checksum(data)
        assert icmp.checksum(data, 0x1234) == checksum(data, 0x1234)
    with pytest.raises(TypeError, match="bytes-like"):
        icmp.checksum("text")


def _mixed_packets(rng: random.Random, n: int) -> list[bytes]:
    kinds = [
        lambda i: icmp4_echo("10.0.0.1", "10.0.0.2", i, i, os.urandom(rng.randrange(0, 100))),
        lambda i: icmp6_echo("fd00::1", "fd00::2", i, i, os.urandom(rng.randrange(0, 100))),
        lambda i: minimal_ipv4(60, i),
        lambda i: icmp4_echo("10.0.0.1", "10.0.0.2", i, i, b"reply", request=False),
        lambda i: icmp4_echo("10.0.0.1", "10.0.0.2", i, i, b"short")[:-1],
        lambda i: icmp4_echo("10.0.0.1", "10.0.0.2", i, i, b"trailer") + b"\0" * rng.randrange(1, 9),
    ]
    return [rng.choice(kinds)(i) for i in range(n)]


def test_echo_replies_of_a_batch_are_the_per_packet_replies_in_order():
    rng = random.Random(7)
    for n in (1, 2, 17, 300):
        packets = _mixed_packets(rng, n)
        want = [r for r in map(icmp.echo_reply, packets) if r is not None]
        got = icmp.echo_replies(fasttun.make_batch(packets))
        if not want:
            assert got is None
            continue
        assert got is not None and [bytes(p) for p in got] == want
        assert list(got.lengths) == [len(r) for r in want]


def test_echo_replies_is_none_without_requests_and_checks_its_argument():
    assert icmp.echo_replies(fasttun.make_batch([minimal_ipv4(60, 1), b"\x45" * 30])) is None
    with pytest.raises(TypeError):
        icmp.echo_replies([icmp4_echo("10.0.0.1", "10.0.0.2", 1, 1, b"x")])  # type: ignore[arg-type]


def test_echo_replies_outlive_the_readers_batch_and_an_expired_batch_is_refused():
    a, b = fasttun.pair()
    kept: list[object] = []
    with a, b:
        requests = [icmp4_echo("10.0.0.1", "10.0.0.2", i, i, b"p" * i) for i in range(10)]

        def on_batch(batch):
            kept.append((batch, icmp.echo_replies(batch)))

        with b.start_reader(on_batch, batch_size=64):
            a.send_batch(requests)
            deadline = time.monotonic() + 5
            while sum(len(r) for _, r in kept if r is not None) < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
        replies = [bytes(p) for _, r in kept if r is not None for p in r]
        assert replies == [icmp.echo_reply(r) for r in requests]
        source = kept[0][0]
        with pytest.raises(ValueError):
            icmp.echo_replies(source)  # the reader's batch expired with its callback


def test_echo_replies_survive_random_corruption_like_echo_reply():
    rng = random.Random(3)
    seeds = [icmp4_echo("10.0.0.1", "10.0.0.2", 1, 1, b"p" * 20), icmp6_echo("fd00::1", "fd00::2", 1, 1, b"p" * 20)]
    for _ in range(300):
        packets = []
        for _ in range(rng.randrange(1, 20)):
            p = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(0, 3)):
                p[rng.randrange(len(p))] = rng.randrange(256)
            packets.append(bytes(p))
        want = [r for r in map(icmp.echo_reply, packets) if r is not None]
        got = icmp.echo_replies(fasttun.make_batch(packets))
        assert (got is None and not want) or [bytes(p) for p in got] == want
