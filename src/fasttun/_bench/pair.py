"""pair: an in-memory pair, small packets into a Python batch callback that touches every packet, versus a
Python loop of per-packet recv(). No privileges needed.

A sender thread keeps the pair full with send_batch of one prepared Batch (the fast path); the rate is
measured over a window after a short warm-up, so it is the steady rate of the slower side."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import fasttun
from fasttun._bench.packets import udp4
from fasttun._bench.results import Sample
from fasttun._bench.sender import Sender
from fasttun._bench.scenario import Described, Settings, Variant

API_DEFAULT_BATCH = 64


class _Count:
    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0


class PairScenario(Described, name="pair", needs_root=False, key="pps",
                   summary="in-memory pair: packets/s into a Python callback vs a Python recv() loop"):

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        self._packet = udp4("10.201.0.1", "10.201.0.2", settings.size)
        out = [
            Variant(f"fasttun callback sum(batch.lengths), batch {settings.batch}",
                    lambda: self._callback(settings, settings.batch, _touch_lengths)),
        ]
        if settings.batch != API_DEFAULT_BATCH:
            out.append(Variant(f"fasttun callback sum(batch.lengths), batch {API_DEFAULT_BATCH}",
                               lambda: self._callback(settings, API_DEFAULT_BATCH, _touch_lengths)))
        out.append(Variant(f"fasttun callback for p in batch: p[0], batch {settings.batch}",
                           lambda: self._callback(settings, settings.batch, _touch_views)))
        if settings.batch != API_DEFAULT_BATCH:
            out.append(Variant(f"fasttun callback for p in batch: p[0], batch {API_DEFAULT_BATCH}",
                               lambda: self._callback(settings, API_DEFAULT_BATCH, _touch_views)))
        # The same loop over bytes copies: what a copy per packet costs instead of Packet objects (issue 12).
        out.append(Variant(f"fasttun callback for p in batch.copy(): p[0], batch {settings.batch}",
                           lambda: self._callback(settings, settings.batch, _touch_copies)))
        out += [
            Variant(f"fasttun callback for p in batch: p[0], batch {API_DEFAULT_BATCH}, pipeline 2",
                    lambda: self._callback(settings, API_DEFAULT_BATCH, _touch_views, pipeline=2)),
            Variant("fasttun recv() loop: p[0]", lambda: self._recv_loop(settings), baseline=True),
        ]
        return out

    def _open(self, settings: Settings) -> tuple[fasttun.Tun, fasttun.Tun, fasttun.Batch]:
        count = max(settings.batch, 1024)
        a, b = fasttun.pair(capacity=min(64 * count, 1 << 20),
                            capacity_bytes=min(max(64 * count * (settings.size + 16), 1 << 20), 1 << 30))
        return a, b, fasttun.make_batch([self._packet] * count)

    def _windows(self, settings: Settings) -> tuple[float, float]:
        warmup = min(0.2, settings.seconds / 4)
        return warmup, settings.seconds

    def _callback(self, settings: Settings, batch_size: int,
                  touch: Callable[[fasttun.Batch], int], pipeline: int = 0) -> Sample:
        a, b, prepared = self._open(settings)
        count = _Count()

        def on_batch(batch: fasttun.Batch) -> None:
            count.bytes += touch(batch)
            count.packets += len(batch)

        warmup, window = self._windows(settings)
        with a, b:
            with Sender(a, prepared, time.monotonic() + warmup + window + 5.0, "ftb-pair-sender") as sender:
                with b.start_reader(on_batch, batch_size=batch_size, pipeline=pipeline):
                    time.sleep(warmup)
                    p0, b0, t0 = count.packets, count.bytes, time.perf_counter()
                    time.sleep(window)
                    p1, b1, t1 = count.packets, count.bytes, time.perf_counter()
                    sender.stop.set()
            if sender.error is not None:
                raise sender.error
        return _sample(p1 - p0, b1 - b0, t1 - t0)

    def _recv_loop(self, settings: Settings) -> Sample:
        a, b, prepared = self._open(settings)
        warmup, window = self._windows(settings)
        packets = nbytes = 0
        with a, b:
            with Sender(a, prepared, time.monotonic() + warmup + window + 5.0, "ftb-pair-sender") as sender:
                start = time.perf_counter()
                t0 = start + warmup
                end = t0 + window
                measuring = False
                now = start
                while now < end:
                    for _ in range(256):
                        p = b.recv(timeout=0.5)
                        if p is None:
                            raise RuntimeError("the pair's sender stopped sending")
                        if measuring and p[0] >> 4 in (4, 6):
                            nbytes += len(p)
                            packets += 1
                    now = time.perf_counter()
                    if not measuring and now >= t0:
                        measuring, t0 = True, now
                sender.stop.set()
            if sender.error is not None:
                raise sender.error
        return _sample(packets, nbytes, now - t0)


def _touch_lengths(batch: fasttun.Batch) -> int:
    return sum(batch.lengths)


def _touch_views(batch: fasttun.Batch) -> int:
    for p in batch:
        p[0]
    return batch.nbytes


def _touch_copies(batch: fasttun.Batch) -> int:
    for p in batch.copy():
        p[0]
    return batch.nbytes


def _sample(packets: int, nbytes: int, seconds: float) -> Sample:
    if packets <= 0 or seconds <= 0:
        raise RuntimeError(f"no packets were received in {seconds:.3f} s")
    return Sample(pps=packets / seconds, gbps=nbytes * 8 / seconds / 1e9)
