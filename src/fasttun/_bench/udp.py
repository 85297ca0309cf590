"""udp: datagrams per second through :class:`fasttun.UdpEndpoint` on loopback (127.0.0.1), one endpoint sending to
another in this process, batched against one datagram per system call. No privileges needed.

A sender thread keeps ``send_batch`` going with one prepared batch of ``--batch`` datagrams of ``--size`` bytes
(waiting when the socket is full); the receiver's reader counts what arrives. The rate is the receiver's over a
window after a short warm-up; what the loopback dropped in between is the loss, and each row also says how many
datagrams a send call and a receive call carried (stats.tx_calls and rx_calls).

Windows: the batched path (WSASendMsg/WSARecvMsg, with USO/URO where the socket grants them) against the
per-datagram path every endpoint falls back to (sendto/recvfrom), the baseline. Under Wine it runs as a smoke test
only, and its rows say so: Wine has no USO/URO and its Winsock is not Windows', so the numbers say nothing about a
Windows machine. Linux has no per-datagram path (recvmmsg/sendmmsg always): there the scenario compares UDP GSO/GRO
against the same calls without offload (one datagram per message), the baseline."""

from __future__ import annotations

import contextlib
import sys
import time

import fasttun
from fasttun._bench.results import Sample
from fasttun._bench.sender import Sender
from fasttun._bench.scenario import Settings, Variant
from fasttun._info import wine_version

WINDOWS = sys.platform == "win32"
BUFFER = 8 << 20
FIRST = 5.0
"""Seconds the first datagram may take to arrive."""


class _PerDatagramEndpoint(fasttun.UdpEndpoint):
    """Windows' fallback path from the start: sendto/recvfrom, one datagram per call, no USO/URO."""

    _per_datagram = True


def _open(offload: bool, per_datagram: bool) -> tuple[fasttun.UdpEndpoint, fasttun.UdpEndpoint]:
    """A receiver on an ephemeral loopback port and a sender connected to it."""
    cls = _PerDatagramEndpoint if per_datagram else fasttun.UdpEndpoint
    rx = cls(bind=("127.0.0.1", 0), offload=offload, rcvbuf=BUFFER, sndbuf=BUFFER)
    try:
        port = int(rx.name.rsplit(":", 1)[1])
        tx = cls(bind=("127.0.0.1", 0), peer=("127.0.0.1", port), offload=offload, rcvbuf=BUFFER, sndbuf=BUFFER)
    except BaseException:
        rx.close()
        raise
    return tx, rx


def _granted(offload: bool, per_datagram: bool) -> tuple[bool, bool]:
    """(gso, gro) as a sender and a receiver opened this way get them here."""
    tx, rx = _open(offload, per_datagram)
    with tx, rx:
        return bool(tx.offloads["gso"]), bool(rx.offloads["gro"])


def _offload_text(gso: bool, gro: bool, send: str, receive: str) -> str:
    return f"{send}{' + ' + ('USO' if WINDOWS else 'GSO') if gso else ''} / " \
           f"{receive}{' + ' + ('URO' if WINDOWS else 'GRO') if gro else ''}"


class UdpScenario:
    name = "udp"
    needs_root = False
    key = "pps"
    summary = "UdpEndpoint on loopback: datagrams/s batched (Windows: message calls, USO/URO) vs one per call"

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        payload = bytes(range(256)) * (settings.size // 256 + 1)
        self._batch = fasttun.make_batch([payload[:settings.size]] * settings.batch)
        wine = wine_version() if WINDOWS else None
        note = (f"under Wine {wine}: a smoke test only, not a measurement (no USO/URO; Wine's Winsock is not "
                f"Windows')" if wine else "")
        if WINDOWS:
            gso, gro = _granted(True, False)
            return [
                Variant(f"batched: {_offload_text(gso, gro, 'WSASendMsg', 'WSARecvMsg')}",
                        lambda: self._run(settings, True, False), note=note),
                Variant("per-datagram: sendto / recvfrom", lambda: self._run(settings, False, True), baseline=True,
                        note=note),
            ]
        gso, gro = _granted(True, False)
        return [
            Variant(f"batched: {_offload_text(gso, gro, 'sendmmsg', 'recvmmsg')}"
                    f"{'' if gso or gro else ' (the kernel grants no GSO/GRO)'}",
                    lambda: self._run(settings, True, False)),
            Variant("one datagram per message: sendmmsg / recvmmsg, no GSO/GRO",
                    lambda: self._run(settings, False, False), baseline=True),
        ]

    def _run(self, settings: Settings, offload: bool, per_datagram: bool) -> Sample:
        tx, rx = _open(offload, per_datagram)
        counted = [0, 0]  # datagrams, bytes

        def on_batch(batch: fasttun.Batch) -> None:
            counted[0] += len(batch)
            counted[1] += batch.nbytes

        warmup = min(0.2, settings.seconds / 4)
        try:
            deadline = time.monotonic() + FIRST + warmup + settings.seconds + 5.0
            with Sender(tx, self._batch, deadline, "ftb-udp-sender") as sender:
                with rx.start_reader(on_batch, batch_size=settings.batch):
                    first = time.monotonic() + FIRST
                    while counted[0] == 0 and time.monotonic() < first and sender.error is None:
                        time.sleep(0.005)  # the warm-up starts with the first datagram (Wine is slow to start)
                    time.sleep(warmup)
                    before = (counted[0], counted[1], tx.stats.tx_packets, time.perf_counter())
                    time.sleep(settings.seconds)
                    after = (counted[0], counted[1], tx.stats.tx_packets, time.perf_counter())
                    sender.stop.set()
            if sender.error is not None:
                raise sender.error
            # Calls per datagram over the whole run, once the sender and the reader have stopped: the call counters
            # move per call, the datagram counters per batch, so only at rest do they agree.
            totals = (tx.stats, rx.stats)
        finally:
            tx.close()
            rx.close()
        return _sample(before, after, *totals)


def _sample(before: tuple[int, int, int, float], after: tuple[int, int, int, float], tx: fasttun.UdpStats,
            rx: fasttun.UdpStats) -> Sample:
    datagrams, nbytes, sent = after[0] - before[0], after[1] - before[1], after[2] - before[2]
    seconds = after[3] - before[3]
    if datagrams <= 0 or seconds <= 0:
        raise RuntimeError(f"no datagram arrived in {seconds:.3f} s")
    extra = {
        "loss_pct": max(0.0, 100.0 * (sent - datagrams) / sent) if sent > 0 else 0.0,
        "datagrams_per_send_call": tx.tx_packets / tx.tx_calls if tx.tx_calls > 0 else 0.0,
        "datagrams_per_receive_call": rx.rx_packets / rx.rx_calls if rx.rx_calls > 0 else 0.0,
    }
    return Sample(pps=datagrams / seconds, gbps=nbytes * 8 / seconds / 1e9, extra=extra)
