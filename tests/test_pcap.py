"""fasttun.pcap: capture files read back by tcpdump and scapy; a device teeing what it receives and sends."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import fasttun
from fasttun import aio, pcap
from conftest import IN_CI, require_root_environment
from packets import ipv4_udp, ipv6_udp, minimal_ipv4, seq_of

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


def test_a_packet_behind_a_remote_checksum_header_is_recorded_without_it():
    """A device opened with remote_csum=True hands out (and takes) some packets behind a 4-byte header: the
    capture holds the IP packet, as LINKTYPE_RAW says."""
    framed = bytes([0x1F, 6, 0, 20]) + SAMPLE[0]
    for packets in ([framed, SAMPLE[1]], fasttun.make_batch([framed, SAMPLE[1]])):
        buffer = io.BytesIO()
        with pcap.PcapWriter(buffer) as writer:
            writer.write_batch(packets, timestamp_ns=T0)
            data = buffer.getvalue()
        assert data[24 + 16:24 + 16 + len(SAMPLE[0])] == SAMPLE[0]
        assert len(data) == 24 + 2 * 16 + len(SAMPLE[0]) + len(SAMPLE[1])


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
        assert a._dev.tap is None and b._dev.tap is None  # no tee, no cost
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


def test_a_tee_sees_readers_started_before_it_and_stops_with_remove(tmp_path):
    # The capture is the device's, not a stand-in for it: a reader (or an asyncio stream) already running when
    # the tee is set is captured from then on, and nothing after remove() is.
    path = str(tmp_path / "late.pcapng")
    a, b = fasttun.pair()
    got: list[int] = []
    with b.start_reader(lambda batch: got.extend(seq_of(p) for p in batch)) as reader:
        a.send(minimal_ipv4(60, 0))                       # before the tee: not recorded
        while len(got) < 1:
            reader.join(0.01)
        with pcap.open(path) as writer:
            with pcap.tee(b, writer):
                a.send_batch([minimal_ipv4(60, i) for i in range(1, 4)])
                while len(got) < 4:
                    reader.join(0.01)
                with pytest.raises(ValueError, match="already has a tee"):
                    pcap.tee(b, writer)
            a.send(minimal_ipv4(60, 4))                   # after remove(): not recorded
            while len(got) < 5:
                reader.join(0.01)
    a.close()
    b.close()
    records = scapy_rdpcap()(path)
    assert [seq_of(bytes(r)) for r in records] == [1, 2, 3]
    assert all(r.direction == pcap.OUTBOUND for r in records)


def test_a_tap_that_raises_reaches_neither_senders_nor_readers(monkeypatch):
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    a, b = fasttun.pair()

    def broken(packets, direction):
        raise RuntimeError("a broken capture hook")

    a._set_tap(broken)
    b._set_tap(broken)
    got: list[int] = []
    assert a.send_batch([minimal_ipv4(60, i) for i in range(3)]) == 3
    assert seq_of(b.recv()) == 0
    with b.start_reader(lambda batch: got.extend(seq_of(p) for p in batch)) as reader:
        while len(got) < 2:
            reader.join(0.01)
    assert got == [1, 2] and len(unraisable) >= 3
    a.close()
    b.close()


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


# ---- a capture that fails (a full disk) never costs the data path -----------------------------------------


class FullDisk(io.RawIOBase):
    """A file object whose writes all fail as on a full disk (ENOSPC)."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def,override]
        raise OSError(errno.ENOSPC, "No space left on device")


def full_disk_writer(kind: str, fmt: str) -> pcap._Writer:
    """A writer whose file fills up: /dev/full given as a path (the writer's own buffered file: the header
    is buffered and the first large write fails), or a file object of the caller's that fails every write."""
    cls = pcap.PcapngWriter if fmt == "pcapng" else pcap.PcapWriter
    if kind == "path":
        return cls("/dev/full")
    return cls(io.BufferedWriter(FullDisk(), buffer_size=256))


def descriptors_to(path: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass
    return count


def capture_errors(caplog) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.getMessage() for r in caplog.records if r.name == "fasttun.pcap" and r.levelno == logging.ERROR]


KINDS = [pytest.param("path", "pcap", id="dev-full-pcap"), pytest.param("path", "pcapng", id="dev-full-pcapng"),
         pytest.param("file", "pcap", id="file-object-pcap")]


@pytest.mark.parametrize("kind, fmt", KINDS)
def test_sends_under_a_tee_on_a_full_disk_return_what_they_sent(caplog, kind, fmt):
    a, b = fasttun.pair(capacity=512)
    writer = full_disk_writer(kind, fmt)
    packets = [minimal_ipv4(200, i) for i in range(64)]  # 13 KiB of records: more than any buffer holds
    with pcap.tee(a, writer):
        assert a.send_batch(packets) == 64
        assert a.send(minimal_ipv4(60, 64)) == 1
        assert a.send_batch(fasttun.make_batch([minimal_ipv4(60, 65 + i) for i in range(3)])) == 3
    received = []
    while len(received) < 68:
        batch = b.recv_batch(64, timeout=1.0)
        assert batch, f"only {len(received)} of 68 packets crossed"
        received.extend(seq_of(p) for p in batch)
    assert received == list(range(68))
    assert isinstance(writer.error, OSError) and writer.error.errno == errno.ENOSPC
    assert writer.write_errors == 1 and writer.packets + writer.dropped == 68  # nothing lost silently
    assert len(capture_errors(caplog)) == 1 and "No space left" in capture_errors(caplog)[0]
    with pytest.raises(OSError, match="stopped at a write error"):
        writer.write(minimal_ipv4())  # a caller's own write is told
    with contextlib.suppress(OSError):
        writer.close()
    a.close()
    b.close()


@pytest.mark.parametrize("kind, fmt", KINDS)
def test_readers_and_receives_under_a_tee_on_a_full_disk_go_on(caplog, kind, fmt):
    a, b = fasttun.pair(capacity=512)
    writer = full_disk_writer(kind, fmt)
    got: list[int] = []
    with pcap.tee(b, writer):
        assert a.send_batch([minimal_ipv4(200, i) for i in range(3)]) == 3
        assert seq_of(b.recv(timeout=1.0)) == 0
        buf = bytearray(300)
        assert b.recv_into(buf, timeout=1.0) == 200 and seq_of(buf) == 1
        assert seq_of(b.recv_batch(8, timeout=1.0)[0]) == 2
        with b.start_reader(lambda batch: got.extend(seq_of(p) for p in batch), batch_size=16) as reader:
            for start in range(3, 203, 50):
                assert a.send_batch([minimal_ipv4(200, i) for i in range(start, start + 50)]) == 50
            deadline = time.monotonic() + 10
            while len(got) < 200 and time.monotonic() < deadline:
                assert not reader.join(0.01), "the reader stopped"
        assert reader.join(1.0)  # stopped by the with block, without an error to raise
    assert got == list(range(3, 203))
    assert isinstance(writer.error, OSError) and writer.error.errno == errno.ENOSPC
    assert writer.write_errors == 1 and writer.packets + writer.dropped == 203 and writer.dropped >= 1
    assert len(capture_errors(caplog)) == 1
    with contextlib.suppress(OSError):
        writer.close()
    a.close()
    b.close()


def test_a_send_that_raises_records_the_packets_that_went():
    a, b = fasttun.pair(capacity=4, on_full="raise")
    writer = pcap.PcapWriter(io.BytesIO())
    with pcap.tee(a, writer):
        with pytest.raises(fasttun.TunFullError) as info:
            a.send_batch([minimal_ipv4(60, i) for i in range(10)])
        assert info.value.sent == 4
        assert writer.packets == 4
        with pytest.raises(fasttun.TunFullError) as info:
            a.send(minimal_ipv4(60, 10))
        assert info.value.sent == 0 and writer.packets == 4
    a.close()
    b.close()


def test_a_log_handler_that_raises_does_not_reach_the_sender(monkeypatch):
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("the log handler is broken")

        def handle(self, record: logging.LogRecord) -> bool:  # as a handler with no handleError() does
            self.emit(record)
            return True

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    logger = logging.getLogger("fasttun.pcap")
    handler = Broken()
    logger.addHandler(handler)
    a, b = fasttun.pair()
    try:
        writer = full_disk_writer("file", "pcap")
        with pcap.tee(a, writer):
            assert a.send_batch([minimal_ipv4(200, i) for i in range(8)]) == 8
            assert a.send(minimal_ipv4()) == 1
    finally:
        logger.removeHandler(handler)
        a.close()
        b.close()
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, RuntimeError)
    assert writer.write_errors == 1 and writer.dropped == 9


def test_close_closes_the_file_even_when_its_last_flush_fails():
    before = descriptors_to("/dev/full")
    writer = pcap.PcapWriter("/dev/full")
    writer.write(minimal_ipv4())  # buffered: the disk is full only when the buffer goes out
    assert descriptors_to("/dev/full") == before + 1
    with pytest.raises(OSError) as info:
        writer.close()
    assert info.value.errno == errno.ENOSPC
    assert descriptors_to("/dev/full") == before and writer.closed
    writer.close()  # once is enough: nothing to raise twice

    with pytest.raises(OSError):
        with pcap.open("/dev/full", "pcapng") as writer:
            writer.write(minimal_ipv4())
    assert descriptors_to("/dev/full") == before


def test_close_of_a_file_object_that_cannot_flush_raises_once_and_leaves_it_open():
    file = io.BufferedWriter(FullDisk(), buffer_size=4096)
    writer = pcap.PcapWriter(file)
    writer.write(minimal_ipv4())
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    writer.close()
    assert writer.closed and not file.closed  # the caller's file: the caller closes it
    with pytest.raises(ValueError, match="closed"):
        writer.write(minimal_ipv4())


def test_a_real_device_under_a_tee_on_a_full_disk_sends_and_reads_everything(netns, caplog):
    local, peer = "10.202.0.1", "10.202.0.2"
    with fasttun.Tun("ftpcap0", addresses=[f"{local}/24"], up=True) as tun, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local, 9100))
        sock.settimeout(2.0)
        writer = pcap.PcapWriter("/dev/full")
        got: list[bytes] = []
        with pcap.tee(tun, writer):
            incoming = [ipv4_udp(peer, local, 9200, 9100, b"in-%03d" % i + bytes(200)) for i in range(40)]
            assert tun.send_batch(incoming) == 40
            assert sorted(sock.recv(1000)[:6] for _ in range(40)) == [b"in-%03d" % i for i in range(40)]

            def on_batch(batch: fasttun.Batch) -> None:
                got.extend(bytes(p)[28:34] for p in batch if len(p) > 34 and p[9] == 17)

            with tun.start_reader(on_batch) as reader:
                for i in range(40):
                    sock.sendto(b"out%03d" % i + bytes(200), (peer, 9300))
                deadline = time.monotonic() + 10
                while len(got) < 40 and time.monotonic() < deadline:
                    assert not reader.join(0.01), "the reader stopped"
    assert sorted(got) == [b"out%03d" % i for i in range(40)]
    assert writer.write_errors == 1 and writer.packets + writer.dropped >= 80
    assert len(capture_errors(caplog)) == 1
    with contextlib.suppress(OSError):
        writer.close()


def test_an_asyncio_stream_under_a_tee_on_a_full_disk_goes_on(caplog):
    a, b = fasttun.pair(capacity=512)
    writer = full_disk_writer("file", "pcap")

    async def receive(count: int) -> list[int]:
        got: list[int] = []
        async for batch in aio.batches(b):
            got.extend(seq_of(p) for p in batch)
            if len(got) >= count:
                break
        return got

    with pcap.tee(b, writer):
        assert a.send_batch([minimal_ipv4(200, i) for i in range(100)]) == 100
        assert asyncio.run(asyncio.wait_for(receive(100), 10)) == list(range(100))
    assert writer.write_errors == 1 and writer.packets + writer.dropped == 100
    assert len(capture_errors(caplog)) == 1
    a.close()
    b.close()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs of the test's own (root only), unmounted afterwards however the test ends."""
    require_root_environment()
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "ftpcap", str(where)], check=True,
                   capture_output=True, timeout=10)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True, timeout=10)


def test_a_capture_filling_its_file_system_stops_and_counts_the_rest(small_tmpfs, caplog):
    a, b = fasttun.pair(capacity=64)
    path = str(small_tmpfs / "cap.pcapng")
    writer = pcap.open(path)
    received = 0
    with pcap.tee(a, writer):
        for start in range(0, 1000, 10):  # 1 MB of records into 64 KiB
            assert a.send_batch([minimal_ipv4(1000, i) for i in range(start, start + 10)]) == 10
            received += len(b.recv_batch(64, timeout=1.0))
    while received < 1000:
        batch = b.recv_batch(64, timeout=1.0)
        assert batch
        received += len(batch)
    assert writer.write_errors == 1 and isinstance(writer.error, OSError) and writer.error.errno == errno.ENOSPC
    assert writer.packets > 0 and writer.packets + writer.dropped == 1000
    assert len(capture_errors(caplog)) == 1
    with contextlib.suppress(OSError):
        writer.close()
    assert descriptors_to(path) == 0
    a.close()
    b.close()


def test_a_file_closed_under_its_writer_stops_the_capture_not_the_device(caplog):
    a, b = fasttun.pair()
    file = io.BytesIO()
    writer = pcap.PcapWriter(file)
    with pcap.tee(a, writer):
        assert a.send(minimal_ipv4(60, 0)) == 1
        file.close()  # the caller's file, closed behind the writer's back
        assert a.send_batch([minimal_ipv4(60, i) for i in range(1, 4)]) == 3
    assert [seq_of(p) for p in b.recv_batch(8, timeout=1.0)] == [0, 1, 2, 3]
    assert writer.packets == 1 and writer.write_errors == 1 and writer.dropped == 3
    assert isinstance(writer.error, ValueError) and len(capture_errors(caplog)) == 1
    a.close()
    b.close()
