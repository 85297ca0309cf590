"""Offload on a real TUN device: the kernel's TCP super-packets split for Python (segments mode), delivered
whole with their metadata (super mode), and bad virtio-net headers refused before they reach the kernel."""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time

import pytest

import fasttun

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux offload")

LOCAL, PEER = "10.204.0.1", "10.204.0.2"
RCSUM_MAGIC = 0x1F  # byte 0 of the remote-checksum header (remote_csum=True)


def open_offload(mode: str, name: str = "fto0", **kw) -> fasttun.Tun:
    return fasttun.Tun(name, mtu=1500, addresses=[f"{LOCAL}/24"], up=True, offload=True, offload_mode=mode, **kw)


def handshake_and_send(tun: fasttun.Tun, payload: bytes, batch_size: int = 64) -> list[bytes]:
    """A TCP peer emulated on the device: answers the SYN, then collects what the kernel sends."""
    from fasttun.icmp import checksum

    def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
        s, d = socket.inet_aton(src), socket.inet_aton(dst)
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
        csum = checksum(s + d + struct.pack("!BBH", 0, 6, len(hdr)) + hdr)
        hdr = hdr[:16] + struct.pack("!H", csum) + hdr[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(hdr), 1, 0x4000, 64, 6, 0, s, d)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        return ip + hdr

    received: list[bytes] = []
    state = {"peer_seq": 1000, "done": threading.Event()}

    def on_batch(batch):
        for i, p in enumerate(batch):
            raw = bytes(p)
            if raw[0] == RCSUM_MAGIC:  # remote_csum: (header, packet) kept apart for the test to look at
                received.append(raw)
                raw = raw[4:]
            if raw[0] >> 4 != 4 or raw[9] != 6:
                continue
            sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", raw, 20)
            flags = off_flags & 0xFF
            if flags & 0x02:  # SYN: answer SYN+ACK with a large window
                tun.send(tcp(PEER, LOCAL, dport, sport, state["peer_seq"], seq + 1, 0x12))
                continue
            if bytes(p)[0] != RCSUM_MAGIC:
                received.append(raw if not batch.is_super else raw + struct.pack("!6H", *batch.gso(i)))
            data_len = len(raw) - 20 - (off_flags >> 12) * 4
            if data_len:
                tun.send(tcp(PEER, LOCAL, dport, sport, state["peer_seq"] + 1, seq + data_len, 0x10))

    with tun.start_reader(on_batch, batch_size=batch_size):
        client = socket.socket()
        client.settimeout(5)
        client.connect((PEER, 7777))
        client.sendall(payload)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = sum(len(r) - 40 for r in received if len(r) > 40)
            if got >= len(payload):
                break
            time.sleep(0.01)
        client.close()
    return received


def test_offloads_are_reported(netns):
    with open_offload("segments") as tun:
        assert tun.offload_mode == "segments"
        offloads = tun.offloads
        assert offloads["csum"] and offloads["tso4"] and offloads["tso6"]
    with fasttun.Tun("fto1") as plain:
        assert plain.offloads == {} and plain.offload_mode is None


@pytest.mark.parametrize("queues,batch_size", [(1, 64), (2, 64), (1, 8), (1, 1)])
def test_segments_mode_hands_python_mtu_sized_packets(netns, queues, batch_size):
    """A super-packet is split straight into the reader's batch when its segments fit (64: up to 45 segments of
    a 64 KiB super-packet, the rest waiting for the next batch), and through the queue's own arena over several
    batches when they never can (8, 1)."""
    payload = bytes(range(256)) * 800  # 200 KiB: the kernel sends 64 KiB super-packets through TSO
    with open_offload("segments", queues=queues) as tun:
        assert tun.queues == queues and tun.offloads["tso4"]
        got = handshake_and_send(tun, payload, batch_size)
    data = [p for p in got if len(p) > 40]
    assert data, "no data segments arrived"
    assert max(len(p) for p in data) <= 1500  # split in C: never larger than the MTU
    segments = {struct.unpack_from("!I", p, 24)[0]: p[40:] for p in data}
    pos, stream = min(segments), bytearray()
    while pos in segments:  # the byte stream, in sequence order (retransmissions collapse)
        stream += segments[pos]
        pos += len(segments[pos])
    assert len(stream) >= len(payload) // 2 and bytes(stream) == payload[: len(stream)]
    from fasttun.icmp import checksum
    assert all(checksum(p[:20]) == 0 for p in data)  # every split segment has a correct IPv4 header checksum
    for p in data:  # ... and a complete TCP checksum (the kernel handed over a partial one)
        tcp_len = len(p) - 20
        assert checksum(p[12:20] + struct.pack("!BBH", 0, 6, tcp_len) + p[20:]) == 0


def test_super_mode_delivers_super_packets_with_metadata(netns):
    payload = bytes(200 * 1024)
    with open_offload("super") as tun:
        got = handshake_and_send(tun, payload)
    supers = [p for p in got if len(p) > 1500 + 12]
    assert supers, "the kernel sent no super-packet (TSO)"
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack("!6H", supers[0][-12:])
    assert gso_type & 0x7F == 1  # TCPv4
    assert 500 <= gso_size <= 1460
    assert csum_start == 20 and csum_offset == 16


def test_bad_virtio_headers_are_refused_before_the_kernel(netns):
    pkt = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, 0, 0, 64, 6, 0, bytes(4), bytes(4)) + bytes(40)
    with open_offload("super") as tun, fasttun.Tun("fto3") as plain:
        good = fasttun.make_batch([pkt], gso=[(0, 0, 0, 0, 0, 0)])
        assert good.is_super and good.gso(0) == (0, 0, 0, 0, 0, 0)
        assert tun.send_batch(good) == 1
        for bad, why in [((1, 0, 0, 0, 20, 60), "past the"),     # checksum field beyond the packet
                         ((0, 1, 40, 0, 20, 16), "segment size of 0"),
                         ((0, 3, 40, 1000, 20, 16), "GSO type 3"),
                         ((0, 1, 200, 1000, 20, 16), "header length 200")]:  # beyond the packet
            with pytest.raises(ValueError, match=why):
                tun.send_batch(fasttun.make_batch([pkt, pkt], gso=[(0, 0, 0, 0, 0, 0), bad]))
        assert tun.stats.tx_rejected == 4 and tun.stats.tx_packets == 1  # nothing of a bad batch was sent
        with pytest.raises(fasttun.TunError, match="offload"):
            plain.send_batch(good)  # a device without a virtio-net header cannot take super-packets


def test_a_super_packet_the_kernel_refuses_mid_batch_is_reported_and_the_rest_still_go(netns):
    # NEEDS_CSUM with the checksum starting at offset 0 passes our checks but not the kernel's (EINVAL).
    pkt = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, 0, 0, 64, 6, 0, bytes(4), bytes(4)) + bytes(40)
    plain_hdr = (0, 0, 0, 0, 0, 0)
    with open_offload("super") as tun:
        batch = fasttun.make_batch([pkt] * 4, gso=[plain_hdr, (1, 0, 0, 0, 0, 10), plain_hdr, plain_hdr])
        with pytest.raises(fasttun.TunError, match="packet 1") as info:
            tun.send_batch(batch)
        assert info.value.sent == 3  # the two good packets after the refused one went too
        s = tun.stats
        assert s.tx_packets == 3 and s.tx_errors == 1 and s.tx_dropped_full == 0


# ---- remote_csum: checksums the kernel left partial stay partial, for the far end's kernel to finish ----

def _fold(value: int) -> int:
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def _pseudo_sum(ip: bytes, proto: int, l4_len: int) -> int:
    """The folded (not complemented) TCP/UDP pseudo-header sum of an IPv4 packet: what a partial checksum holds."""
    from fasttun.icmp import checksum
    return ~checksum(ip[12:20] + struct.pack("!BBH", 0, proto, l4_len)) & 0xFFFF


def test_remote_csum_segments_come_behind_a_header_with_their_checksum_left_partial(netns):
    from fasttun.icmp import checksum
    payload = bytes(range(256)) * 800
    with open_offload("segments", remote_csum=True) as tun:
        assert tun.remote_csum
        got = handshake_and_send(tun, payload)
    framed = [p for p in got if p[0] == RCSUM_MAGIC]
    data = [p for p in framed if len(p) > 4 + 20 + (p[4 + 32] >> 4) * 4]   # those that carry TCP payload
    assert data, "no TCP data came behind a remote-checksum header"
    for p in data:
        header, ip = p[:4], p[4:]
        assert header == bytes([RCSUM_MAGIC, 16, 0, 20])          # TCP checksum field at 20 + 16
        assert len(ip) <= 1500 and checksum(ip[:20]) == 0       # MTU-sized, IPv4 header checksum complete
        tcp_len = len(ip) - 20
        assert struct.unpack_from("!H", ip, 36)[0] == _pseudo_sum(ip, 6, tcp_len)   # partial: no payload summed
    segments = {struct.unpack_from("!I", p, 4 + 24)[0]: p[4 + 20 + (p[4 + 32] >> 4) * 4:] for p in data}
    pos, stream = min(segments), bytearray()
    while pos in segments:
        stream += segments[pos]
        pos += len(segments[pos])
    assert len(stream) >= len(payload) // 2 and bytes(stream) == payload[: len(stream)]


def _udp_partial(payload: bytes, dport: int, corrupt: bool = False) -> bytes:
    """A UDP datagram PEER -> LOCAL behind a remote-checksum header, its checksum partial (or wrong)."""
    from fasttun.icmp import checksum
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 7, 0x4000, 64, 17, 0, socket.inet_aton(PEER),
                     socket.inet_aton(LOCAL))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    partial = _pseudo_sum(ip, 17, udp_len) ^ (0x0101 if corrupt else 0)
    return bytes([RCSUM_MAGIC, 6, 0, 20]) + ip + struct.pack("!HHHH", 40000, dport, udp_len, partial) + payload


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_a_remote_csum_device_has_its_kernel_or_itself_complete_what_came_partial(netns, offload):
    """With offload the packet goes to the kernel with NEEDS_CSUM; without, the device completes the checksum in
    C, and the kernel (which then verifies UDP checksums) delivers it only if that was done right."""
    kw = {"offload": True, "offload_mode": "segments"} if offload else {}
    with fasttun.Tun("fto4", mtu=1500, addresses=[f"{LOCAL}/24"], up=True, remote_csum=True, **kw) as tun:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.bind((LOCAL, 7788))
            sock.settimeout(2)
            sent = [os.urandom(n) for n in (1, 2, 100, 1001, 1400)]
            assert tun.send_batch([_udp_partial(p, 7788) for p in sent]) == len(sent)
            assert sorted(sock.recv(2000) for _ in sent) == sorted(sent)
            if not offload:   # a wrong partial sum completes into a wrong checksum: the kernel drops it
                tun.send(_udp_partial(b"corrupt", 7788, corrupt=True))
                sock.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    sock.recv(2000)
            assert tun.stats.tx_packets == len(sent) + (0 if offload else 1)


def test_remote_checksum_headers_are_checked_and_refused_where_not_asked_for(netns):
    good = _udp_partial(b"x" * 10, 7789)
    wrong_offset = good[:1] + bytes([16]) + good[2:]
    with fasttun.Tun("fto5", mtu=1500, addresses=[f"{LOCAL}/24"], up=True, remote_csum=True) as tun, \
            fasttun.Tun("fto6", mtu=1500, up=True) as plain:
        with pytest.raises(ValueError, match="has it at 20 \\+ 6"):
            tun.send(wrong_offset)
        with pytest.raises(ValueError, match="packet 1 of 2: .*total length"):   # the packet behind is checked
            tun.send_batch([good, good[:6] + struct.pack("!H", 9999) + good[8:]])
        assert not plain.remote_csum
        with pytest.raises(ValueError, match="remote_csum=True"):
            plain.send(good)
        assert tun.stats.tx_packets == 0 and plain.stats.tx_packets == 0
    with pytest.raises(ValueError, match="remote_csum needs offload_mode 'segments'"):
        fasttun.Tun("fto7", offload=True, offload_mode="super", remote_csum=True)
