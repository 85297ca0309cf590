"""fasttun.pcap: capture files read back by tcpdump and scapy; a device teeing what it receives and sends."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys

import pytest

import fasttun
from fasttun import _core, aio, pcap
from packets import ipv4_udp, ipv6_udp, minimal_ipv4, seq_of

IN_CI = bool(os.environ.get("CI"))
T0 = 1_700_000_000_123_456_789  # a timestamp with all nine digits used


def tcpdump() -> str:
    path = shutil.which("tcpdump")
    if path is None:
        if IN_CI:
            pytest.fail("CI must read the captures back with tcpdump (.ci/run installs it)")
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    return path


def scapy_rdpcap():  # type: ignore[no-untyped-def]
    try:
        import scapy.layers.inet  # noqa: F401 - registers IPv4 for LINKTYPE_RAW
        import scapy.layers.inet6  # noqa: F401 - and IPv6
        from scapy.utils import rdpcap
    except ImportError:
        if IN_CI:
            pytest.fail("CI must read the captures back with scapy (pip install '.[test]')")
        pytest.skip("scapy is not installed (pip install scapy)")
    return rdpcap


def read_with_tcpdump(path: str) -> list[str]:
    out = subprocess.run([tcpdump(), "-nn", "-tt", "--time-stamp-precision=nano", "-r", path],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.splitlines()


SAMPLE = [ipv4_udp("10.1.0.1", "10.1.0.2", 1000 + i, 9000, b"payload-%d" % i) for i in range(3)] + \
         [ipv6_udp("fd00:1::1", "fd00:1::2", 4000, 9001, b"six")]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_tcpdump_and_scapy_read_back_batches_and_single_packets(tmp_path, fmt):
    path = str(tmp_path / f"out.{fmt}")
    with pcap.open(path) as writer:
        writer.write_batch(fasttun.make_batch(SAMPLE), timestamp_ns=T0)
        writer.write(SAMPLE[0], timestamp_ns=T0 + 1)
    assert writer.packets == 5

    lines = read_with_tcpdump(path)
    assert len(lines) == 5
    assert lines[0].startswith("1700000000.123456789 IP 10.1.0.1.1000 > 10.1.0.2.9000: UDP, length 9")
    assert lines[3].startswith("1700000000.123456789 IP6 fd00:1::1.4000 > fd00:1::2.9001: UDP, length 3")
    assert lines[4].startswith("1700000000.123456790 IP 10.1.0.1.1000")

    records = scapy_rdpcap()(path)
    assert [bytes(r) for r in records] == SAMPLE + SAMPLE[:1]
    assert records[1]["IP"].sport == 1001 and records[3]["IPv6"].dst == "fd00:1::2"
    assert [int(r.time * 10**9) // 1000 for r in records] == [T0 // 1000] * 4 + [(T0 + 1) // 1000]


def test_snaplen_truncates_records_and_keeps_the_original_length(tmp_path):
    path = str(tmp_path / "short.pcap")
    big = ipv4_udp("10.1.0.1", "10.1.0.2", 1, 2, bytes(500))
    with pcap.PcapWriter(path, snaplen=100) as writer:
        writer.write(big)
    records = scapy_rdpcap()(path)
    assert bytes(records[0]) == big[:100] and records[0].wirelen == len(big)
    assert "length 500" in read_with_tcpdump(path)[0]


def test_pcapng_records_the_direction(tmp_path):
    path = str(tmp_path / "dir.pcapng")
    with pcap.PcapngWriter(path) as writer:
        writer.write(SAMPLE[0], direction=pcap.INBOUND)
        writer.write(SAMPLE[1], direction=pcap.OUTBOUND)
        writer.write(SAMPLE[2])
    records = scapy_rdpcap()(path)
    assert [getattr(r, "direction", None) for r in records] == [1, 2, None]


def test_a_writer_takes_an_open_binary_file():
    buffer = io.BytesIO()
    writer = pcap.PcapWriter(buffer)
    writer.write_batch(SAMPLE, timestamp_ns=T0)
    writer.flush()
    data = buffer.getvalue()
    assert data[:4] == (0xA1B23C4D).to_bytes(4, sys.byteorder) and len(data) == 24 + sum(16 + len(p) for p in SAMPLE)


def test_bad_arguments_say_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match="snaplen"):
        pcap.PcapWriter(str(tmp_path / "x"), snaplen=0)
    with pytest.raises(ValueError, match="format"):
        pcap.open(str(tmp_path / "x"), format="erf")
    with pcap.open(str(tmp_path / "y.pcapng")) as writer:
        with pytest.raises(ValueError, match="direction"):
            writer.write(SAMPLE[0], direction=3)
        with pytest.raises(ValueError, match="timestamp_ns"):
            writer.write(SAMPLE[0], timestamp_ns=-1)
        with pytest.raises(TypeError):
            writer.write(12)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="closed"):
        writer.write(SAMPLE[0])
    with pytest.raises(TypeError, match="Tun"):
        pcap.tee(object(), writer)  # type: ignore[arg-type]


def test_a_tee_records_what_a_device_receives_and_sends(tmp_path):
    path = str(tmp_path / "tee.pcapng")
    a, b = fasttun.pair(capacity=8, on_full="drop")
    with pcap.open(path) as writer:
        with pcap.tee(b, writer), pcap.tee(a, writer, rx=False):
            assert a.send_batch([minimal_ipv4(60, i) for i in range(10)]) == 8  # 2 dropped: not recorded
            assert seq_of(b.recv()) == 0
            assert seq_of(b.recv_batch(2)[1]) == 2
            buf = bytearray(100)
            assert b.recv_into(buf) == 60
            got = []
            with b.start_reader(lambda batch: got.extend(seq_of(p) for p in batch)) as reader:
                while len(got) < 4:
                    reader.join(0.01)

            async def one() -> int:
                a.send(minimal_ipv4(60, 10))
                async for batch in aio.batches(b):
                    return seq_of(batch[0])
                return -1

            assert asyncio.run(one()) == 10
        assert type(a._dev) is _core.Device and type(b._dev) is _core.Device  # no tee, no cost
        a.send(minimal_ipv4(60, 11))
        b.recv()
    a.close()
    b.close()
    records = scapy_rdpcap()(path)
    sent = [(seq_of(bytes(r)), r.direction) for r in records if r.direction == pcap.INBOUND]
    received = [(seq_of(bytes(r)), r.direction) for r in records if r.direction == pcap.OUTBOUND]
    assert [s for s, _ in sent] == list(range(8)) + [10]
    assert [s for s, _ in received] == list(range(8)) + [10]
    assert len(records) == 18


def test_a_closed_writer_does_not_stop_the_device(tmp_path):
    a, b = fasttun.pair()
    writer = pcap.open(str(tmp_path / "c.pcap"))
    with pcap.tee(b, writer):
        writer.close()
        got = []
        with b.start_reader(lambda batch: got.extend(batch.copy())) as reader:
            a.send(minimal_ipv4())
            while not got:
                reader.join(0.01)
    assert len(got) == 1
    a.close()
    b.close()


def test_readers_and_senders_writing_at_once_leave_every_record_whole(tmp_path):
    path = str(tmp_path / "busy.pcapng")
    a, b = fasttun.pair()
    got = []
    with pcap.open(path) as writer, pcap.tee(a, writer), pcap.tee(b, writer):
        with b.start_reader(lambda batch: got.extend(seq_of(p) for p in batch), batch_size=16) as reader:
            for start in range(0, 2000, 50):
                a.send_batch([minimal_ipv4(60 + start % 7, i) for i in range(start, start + 50)])
            while len(got) < 2000:
                reader.join(0.01)
    a.close()
    b.close()
    records = scapy_rdpcap()(path)
    assert len(records) == 4000 == writer.packets
    sent = [seq_of(bytes(r)) for r in records if r.direction == pcap.INBOUND]
    received = [seq_of(bytes(r)) for r in records if r.direction == pcap.OUTBOUND]
    assert sent == list(range(2000)) and received == list(range(2000))
