"""The rx scenario's drain wait for fasttun's reader: it ends as soon as every queued packet came (woken by the
callback, not by polling the counter from the reader's process) or after the idle time without packets."""

from __future__ import annotations

import time

import fasttun
from fasttun._bench.rx import _Drain, _touching
from packets import ipv4_udp


def _drain(expected: int, sent: int, touch: bool, idle: float) -> tuple[_Drain, float]:
    a, b = fasttun.pair()
    with a, b:
        drain = _Drain(expected)
        callback = _touching(drain) if touch else drain.on_batch
        with b.start_reader(callback, batch_size=64):
            a.send_batch([ipv4_udp("10.1.0.1", "10.1.0.2", 1000 + i % 100, 9, b"x" * 20) for i in range(sent)])
            t0 = time.monotonic()
            drain.wait(idle, t0 + 30)
            return drain, time.monotonic() - t0


def test_the_wait_ends_when_the_last_expected_packet_came():
    for touch in (False, True):
        drain, waited = _drain(5000, 5000, touch, idle=20.0)
        assert drain.packets == 5000 and drain.done.is_set()
        assert drain.bytes == 5000 * 48
        assert waited < 10.0  # woken by the callback, long before the idle time


def test_the_wait_ends_after_the_idle_time_when_packets_are_missing():
    drain, waited = _drain(5000 + 1, 5000, touch=True, idle=0.3)
    assert drain.packets == 5000 and not drain.done.is_set()
    assert 0.3 <= waited < 10.0
