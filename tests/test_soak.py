"""The soak (`fasttun bench soak`): it runs end to end and passes, and its checker catches what it is there to
catch (corruption, duplicates, reordering, missing packets no counter explains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fasttun._bench import catalog, soak
from conftest import IN_CI, _why_no_netns

SECONDS = 30 if IN_CI else 6


def packet(stream: int, seq: int) -> bytearray:
    return bytearray(soak.PacketMaker(stream).packet(seq))


def test_soak_runs_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    argv = [sys.executable, "-m", "fasttun", "bench", "soak", "--seconds", str(SECONDS), "--json", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"soak: PASS after {SECONDS}." in proc.stdout, proc.stdout
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert row["scenario"] == "soak" and row["status"] == "ok", row
    extra = row["extra"]
    assert extra["soak_corrupt"] == 0 and extra["soak_out_of_order"] == 0
    assert extra["rss_growth_kib"] < 1024
    assert extra["pair_received"] > 1000
    if _why_no_netns() is None:
        assert extra["tun_received"] > 1000, proc.stdout
    elif IN_CI:
        pytest.fail(f"CI must run the soak's TUN leg, but: {_why_no_netns()}")
    else:
        assert "tun: skipped" in proc.stdout


def test_soak_is_not_in_the_default_list_and_the_help_says_so() -> None:
    assert "soak" not in catalog.expand([])
    assert catalog.expand(["soak"]) == ["soak"]
    proc = subprocess.run([sys.executable, "-m", "fasttun", "bench", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert "soak runs only when named" in " ".join(proc.stdout.split())


def test_soak_refuses_silly_lengths() -> None:
    proc = subprocess.run([sys.executable, "-m", "fasttun", "bench", "soak", "--seconds", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--seconds must be between" in proc.stderr


def test_checker_accepts_an_intact_stream_and_counts_gaps_as_missing() -> None:
    c = soak.Checker(2)
    for seq in (0, 1, 2, 5, 6):     # 3 and 4 were dropped somewhere
        c.check(memoryview(packet(1, seq)))
    c.check(memoryview(packet(0, 0)))
    assert (c.received, c.corrupt, c.duplicated, c.reordered) == (6, 0, 0, 0)
    leg = soak.LegResult("pair", 8, c, dropped=2, drop_detail="", reader_packets=6, exact=True)
    assert leg.missing == 2 and leg.problems() == []


@pytest.mark.parametrize("where", [0, 2, 9, 22, 24, soak.HEAD_AT, soak.HEAD_AT + 5, soak.CRC_AT, soak.BODY_AT, -1])
def test_checker_finds_a_flipped_byte(where: int) -> None:
    p = packet(0, 17)
    p[where] ^= 0x10
    c = soak.Checker(1)
    c.check(memoryview(p))
    # A flipped byte in the IP version/protocol/port makes it somebody else's packet, which is counted too.
    assert c.received == 0 and c.corrupt + c.foreign == 1
    if where not in (0, 9, 22):
        assert c.corrupt == 1 and c.examples


def test_checker_finds_a_truncated_packet() -> None:
    p = packet(0, 8)   # 1500 bytes (SIZES[8])
    c = soak.Checker(1)
    c.check(memoryview(p)[:-1])
    assert c.corrupt == 1


def test_checker_finds_duplicates_and_reordering() -> None:
    c = soak.Checker(1)
    for seq in (0, 1, 1, 3, 2, 4):
        c.check(memoryview(packet(0, seq)))
    assert (c.received, c.duplicated, c.reordered) == (4, 1, 1)
    assert len(c.examples) == 2


def test_missing_packets_no_counter_explains_fail_the_verdict() -> None:
    c = soak.Checker(1)
    for seq in range(10):
        c.check(memoryview(packet(0, seq)))
    exact = soak.LegResult("pair", 12, c, dropped=1, drop_detail="x", reader_packets=10, exact=True)
    assert any("2 packets missing" in p for p in exact.problems())
    covered = soak.LegResult("tun", 12, c, dropped=5, drop_detail="x", reader_packets=10, exact=False)
    assert covered.problems() == []
    lying_reader = soak.LegResult("tun", 10, c, dropped=0, drop_detail="x", reader_packets=11, exact=False)
    assert any("reader.stats.packets" in p for p in lying_reader.problems())


def test_the_checker_keeps_bounded_state() -> None:
    c = soak.Checker(1)
    p = packet(0, 0)
    for _ in range(100):
        c.check(memoryview(p))
    assert c.duplicated == 99 and len(c.examples) == soak.MAX_EXAMPLES


def test_rss_is_read_from_proc() -> None:
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("no /proc")
    before = soak.rss_bytes()
    import mmap
    block = mmap.mmap(-1, 8 << 20)  # fresh pages (a bytearray could reuse memory that is resident already)
    for offset in range(0, len(block), 4096):
        block[offset] = 1               # touch every page
    assert soak.rss_bytes() - before >= 7 << 20
    del block


SABOTAGE = '''
import sys
from fasttun._bench import soak

HOW = sys.argv[1]
kept = []
original = soak.Checker.on_batch

def on_batch(self, batch):
    if HOW == "leak":
        kept.append(bytearray(64 * 1024))       # grows without end, as a leak would
        return original(self, batch)
    if HOW == "corrupt":
        packets = [bytearray(p) for p in batch]
        packets[0][-1] ^= 0xFF                  # the last payload byte of the first packet of each batch
        with self._lock:
            for p in packets:
                self.check(memoryview(p))
        return None
    if HOW == "lose":
        with self._lock:
            for i, p in enumerate(batch):
                if i != 0:                      # the first packet of each batch vanishes, no counter knows
                    self.check(p)
        return None

soak.Checker.on_batch = on_batch
verdict = soak.soak(2.0, with_tun=False)
print(verdict.text())
sys.exit(0 if verdict.passed else 1)
'''


@pytest.mark.parametrize("how,says", [
    ("leak", "resident memory grew"),
    ("corrupt", "corrupt"),
    ("lose", "packets missing but the drop counters say"),
])
def test_the_soak_fails_when_something_goes_wrong(how: str, says: str) -> None:
    # The pair leg alone, with its checker sabotaged: each kind of fault must turn the verdict to FAIL.
    proc = subprocess.run([sys.executable, "-c", SABOTAGE, how], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "soak: FAIL" in proc.stdout and says in proc.stdout, proc.stdout
