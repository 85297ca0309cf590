"""The reader's hot path on a real TUN device, counted in system calls under strace: draining a prefilled queue
costs one read() per packet and nothing per batch (no poll, ioctl, clock or lock call between batches).

A busy queue is where a reader spends its life; one extra system call per batch of 64 would cost more than the
Python callback. The reader thread is found by its id, which the callback reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import IN_CI, require_tool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TUN backend")

PACKETS = 12_800
BATCH = 64

CHILD = textwrap.dedent(f"""
    import json, socket, threading, fasttun
    PACKETS, BATCH = {PACKETS}, {BATCH}
    with fasttun.Tun("ftsys0", addresses=["10.201.4.1/24"], up=True, txqueuelen=PACKETS + 4096) as tun:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(PACKETS):   # queued on the device: nobody reads it yet
                s.sendto(i.to_bytes(4, "big"), ("10.201.4.2", 9000))
        seen = {{"packets": 0, "batches": 0, "tid": 0}}
        done = threading.Event()
        def on_batch(batch):
            seen["tid"] = seen["tid"] or threading.get_native_id()
            seen["packets"] += len(batch)
            seen["batches"] += 1
            if seen["packets"] >= PACKETS:
                done.set()
        with tun.start_reader(on_batch, batch_size=BATCH) as reader:
            ok = done.wait(60)
        print(json.dumps(dict(seen, ok=ok, rx=tun.stats.rx_packets)))
""")


def _strace(tmp_path):
    strace = require_tool("strace", "strace")
    trace = tmp_path / "trace.txt"
    proc = subprocess.run([strace, "-f", "-qq", "-o", str(trace), sys.executable, "-c", CHILD],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        if IN_CI:
            pytest.fail(f"CI must count the reader's system calls, but strace cannot trace here: {proc.stderr}")
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), trace.read_text().splitlines()


def test_draining_a_prefilled_queue_is_one_read_per_packet_and_nothing_per_batch(netns, tmp_path):
    seen, lines = _strace(tmp_path)
    assert seen["ok"] and seen["packets"] >= 12_800, seen
    tid = str(seen["tid"])
    calls = []
    for line in lines:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if pid != tid or rest.startswith(("+++", "---")):
            continue
        name = re.match(r"(?:<\.\.\. )?(\w+)", rest)
        assert name, line
        calls.append((name.group(1), rest))
    # strace splits a call another thread interrupted into "<unfinished ...>" and "<... read resumed> = N":
    # count it once, by the part with the result
    calls = [(n, r) for n, r in calls if not r.endswith("<unfinished ...>")]
    data_reads = [r for n, r in calls if n == "read" and re.search(r"= [1-9]\d*$", r)]
    others = [r for n, r in calls if not (n == "read" and re.search(r"= [1-9]\d*$", r))]
    # Every packet the callbacks saw came from one read() of its own (plus what the kernel sent by itself).
    assert len(data_reads) == seen["rx"] >= seen["packets"], (len(data_reads), seen)
    # Thread start and end, the GIL hand-over at the start and the end, the last empty read and the wait for
    # the stop: a few dozen calls in all, whatever the number of batches (200 here). One call per batch more
    # would add 200.
    summary = {}
    for n, _ in calls:
        summary[n] = summary.get(n, 0) + 1
    assert seen["batches"] >= PACKETS // BATCH
    assert len(others) < seen["batches"] // 2, f"{len(others)} calls besides the reads: {summary}"
