"""Real TUN devices inside a network namespace made for each test (see conftest.netns), real traffic."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import fasttun
from fasttun import _core, _netns, icmp
from icmp_ping import ping
from packets import ipv4_udp, ipv6_udp, udp_payload
from threads import ended_by_close
import traffic

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TUN backend")

LOCAL4, PEER4 = "10.201.0.1", "10.201.0.2"
LOCAL6, PEER6 = "fd00:201::1", "fd00:201::2"


def open_tun(name="ftt0", **kw) -> fasttun.Tun:
    kw.setdefault("addresses", [f"{LOCAL4}/24", f"{LOCAL6}/64"])
    kw.setdefault("up", True)
    kw.setdefault("txqueuelen", 20000)
    return fasttun.Tun(name, **kw)


def udp_flood(count: int, family=socket.AF_INET, dst=PEER4, port=9000, sport=0, size=32) -> None:
    """Sends `count` sequence-numbered datagrams towards the device from a real socket."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if sport:
            s.bind(("", sport))
        pad = b"x" * max(0, size - 4)
        for i in range(count):
            s.sendto(struct.pack("!I", i) + pad, (dst, port))


def flooding() -> contextlib.AbstractContextManager[None]:
    return traffic.flooding(PEER4)


def deep_sink(family=socket.AF_INET) -> socket.socket:
    """A UDP socket whose receive buffer holds every datagram a test sends at once."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: we are root
    return s


def seqs(packets) -> list[int]:
    out = []
    for p in packets:
        payload = udp_payload(p)
        out.append(struct.unpack_from("!I", payload)[0])
    return out


def is_udp_to(packet, port: int) -> bool:
    p = bytes(packet[:60])
    if p[0] >> 4 == 4:
        ihl = (p[0] & 0x0F) * 4
        return p[9] == 17 and struct.unpack_from("!H", p, ihl + 2)[0] == port
    return p[6] == 17 and struct.unpack_from("!H", p, 42)[0] == port


# ---- configuration ----


def test_device_properties_match_the_kernel(netns):
    with open_tun(mtu=1400) as tun:
        assert tun.backend == "linux" and tun.name == "ftt0"
        assert tun.index == socket.if_nametoindex("ftt0")
        assert tun.mtu == 1400
        assert "mtu 1400" in netns.run("ip", "link", "show", "ftt0").stdout
        tun.mtu = 1500
        assert "mtu 1500" in netns.run("ip", "link", "show", "ftt0").stdout
        assert tun.is_up and ",UP" in netns.run("ip", "link", "show", "ftt0").stdout
        tun.down()
        assert not tun.is_up
        tun.up()
        assert tun.txqueuelen == 20000
        tun.txqueuelen = 3000
        assert "qlen 3000" in netns.run("ip", "link", "show", "ftt0").stdout
        assert tun.fileno() > 2


def test_addresses_added_and_removed_through_rtnetlink(netns):
    with open_tun(addresses=[]) as tun:
        tun.add_address("10.201.5.1/24")
        tun.add_address("fd00:201:5::1/64")
        shown = netns.run("ip", "addr", "show", "ftt0").stdout
        assert "inet 10.201.5.1/24" in shown and "inet6 fd00:201:5::1/64" in shown
        assert {str(a) for a in tun.addresses} >= {"10.201.5.1/24", "fd00:201:5::1/64"}
        with pytest.raises(fasttun.TunExistsError, match="already"):
            tun.add_address("10.201.5.1/24")
        tun.remove_address("10.201.5.1/24")
        tun.remove_address("fd00:201:5::1/64")
        shown = netns.run("ip", "addr", "show", "ftt0").stdout
        assert "10.201.5.1" not in shown and "fd00:201:5::1" not in shown
        with pytest.raises(fasttun.TunError, match="not on"):
            tun.remove_address("10.201.5.1/24")
        with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
            tun.add_address("10.201.5.300/24")
        tun.mtu = 1000
        with pytest.raises(ValueError, match="1280"):
            tun.add_address("fd00:201:6::1/64")
        tun.add_address("10.201.7.1/24")  # the device is still usable after rejected input
        assert "10.201.7.1/24" in netns.run("ip", "addr", "show", "ftt0").stdout


def test_kernel_chosen_name(netns):
    with fasttun.Tun() as a, fasttun.Tun("fttq%d") as b:
        assert a.name.startswith("tun") and b.name.startswith("fttq")
        assert socket.if_nametoindex(a.name) and socket.if_nametoindex(b.name)


def test_name_errors(netns):
    with pytest.raises(ValueError, match="at most 15"):
        fasttun.Tun("a" * 16)
    with pytest.raises(ValueError, match="forbidden character"):
        fasttun.Tun("bad name")
    with pytest.raises(TypeError):
        fasttun.Tun(b"ftt0")
    for bad in ["ab\x00cd", "\x00", "ftt\x00"]:  # never truncated at the NUL into another name
        with pytest.raises(ValueError, match="NUL"):
            fasttun.Tun(bad)
    with pytest.raises(ValueError, match="forbidden character"):
        fasttun.Tun("fttä")
    with pytest.raises(TypeError, match="list of addresses"):
        fasttun.Tun("ftt0", addresses="10.1.0.1/24")
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(("ab", "tun"))]
    with open_tun():
        with pytest.raises(fasttun.TunExistsError, match="already open"):
            fasttun.Tun("ftt0")
        with pytest.raises(fasttun.TunExistsError, match="already exists"):
            fasttun.Tun("ftt0", open_existing=False)
    with pytest.raises(fasttun.TunNotFoundError, match="no interface named"):
        fasttun.Tun("ftt-missing", open_existing=True)
    with pytest.raises(fasttun.TunExistsError, match="not a TUN device"):
        fasttun.Tun("lo")


def test_missing_dev_net_tun_is_explained(netns):
    with pytest.raises(fasttun.TunNotFoundError, match="modprobe tun"):
        _core.open_linux("ftt0", 1, -1, _core.OPEN_ANY, None, "/nonexistent/tun")


def test_without_cap_net_admin_the_error_says_so(netns):
    code = (
        "import os, fasttun\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    fasttun.Tun('fttperm0')\n"
        "except fasttun.TunPermissionError as e:\n"
        "    print('PERM', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "PERM" in out.stdout and "CAP_NET_ADMIN" in out.stdout, out.stderr


def test_persist_and_attach(netns):
    with open_tun("fttp0", persist=True, addresses=[]):
        pass
    assert "fttp0" in netns.run("ip", "link", "show", "fttp0").stdout  # still there after close
    with fasttun.Tun("fttp0", open_existing=True) as again:
        assert again.name == "fttp0"
        again.set_persist(False)
    assert netns.run("ip", "link", "show", "fttp0", check=False).returncode != 0  # gone now


# ---- receiving real traffic ----


def test_udp_through_recv_in_order(netns):
    with open_tun() as tun:
        udp_flood(2000)
        got = []
        while len(got) < 2000:
            p = tun.recv(timeout=2)
            assert p is not None, f"only {len(got)} of 2000 datagrams arrived"
            if is_udp_to(p, 9000):
                got.append(p)
        assert seqs(got) == list(range(2000))
        assert all(udp_payload(p)[4:] == b"x" * 28 for p in got)


def test_udp_through_recv_batch_in_order(netns):
    with open_tun() as tun:
        udp_flood(5000)
        got = []
        batches = 0
        while len(got) < 5000:
            batch = tun.recv_batch(64, timeout=2)
            assert len(batch), f"only {len(got)} of 5000 datagrams arrived"
            batches += 1
            got.extend(bytes(p) for p in batch if is_udp_to(p, 9000))
        assert seqs(got) == list(range(5000))
        assert batches < 5000 / 4  # many packets per call


@pytest.mark.parametrize("pipeline", [0, 2])
def test_udp_through_the_reader_in_order_ipv4_and_ipv6(netns, pipeline):
    with open_tun() as tun:
        got4: list[bytes] = []
        got6: list[bytes] = []

        def on_batch(batch):
            for p in batch:
                if is_udp_to(p, 9000):
                    (got4 if p[0] >> 4 == 4 else got6).append(bytes(p))

        with tun.start_reader(on_batch, batch_size=64, pipeline=pipeline) as reader:
            udp_flood(10000)
            udp_flood(3000, socket.AF_INET6, PEER6)
            deadline = time.monotonic() + 10
            while (len(got4) < 10000 or len(got6) < 3000) and time.monotonic() < deadline:
                time.sleep(0.01)
        assert seqs(got4) == list(range(10000))
        assert seqs(got6) == list(range(3000))
        assert reader.stats.packets >= 13000
        assert tun.stats.rx_packets == reader.stats.packets


def test_send_batch_reaches_a_real_udp_socket(netns):
    with open_tun() as tun, deep_sink() as sink:
        sink.bind((LOCAL4, 7000))
        sink.settimeout(2)
        packets = [ipv4_udp(PEER4, LOCAL4, 5555, 7000, struct.pack("!I", i) + b"payload", ident=i)
                   for i in range(500)]
        assert tun.send_batch(packets) == 500
        got = [sink.recvfrom(2048) for _ in range(500)]
        assert [struct.unpack_from("!I", d)[0] for d, _ in got] == list(range(500))
        assert all(d[4:] == b"payload" and addr == (PEER4, 5555) for d, addr in got)
        assert tun.stats.tx_packets == 500


def test_send_reaches_a_real_udp_socket_over_ipv6(netns):
    with open_tun() as tun, deep_sink(socket.AF_INET6) as sink:
        sink.bind((LOCAL6, 7001))
        sink.settimeout(2)
        for i in range(200):
            assert tun.send(ipv6_udp(PEER6, LOCAL6, 5556, 7001, struct.pack("!I", i))) == 1
        got = []
        try:
            for _ in range(200):
                got.append(sink.recvfrom(2048))
        except socket.timeout:
            pytest.fail(f"{len(got)} of 200 arrived; {tun.stats}; "
                        f"{netns.run('ip', '-6', 'addr', 'show', 'dev', tun.name).stdout}"
                        f"{netns.run('ip', '-s', 'link', 'show', tun.name).stdout}"
                        f"{netns.run('nstat', '-az', check=False).stdout[-3000:]}")
        assert [struct.unpack_from("!I", d)[0] for d, _ in got] == list(range(200))
        assert got[0][1][:2] == (PEER6, 5556)


def test_rejected_sends_reach_nothing_and_the_device_still_works(netns):
    with open_tun(mtu=1400) as tun, deep_sink() as sink:
        sink.bind((LOCAL4, 7002))
        sink.settimeout(0.3)
        good = ipv4_udp(PEER4, LOCAL4, 1, 7002, b"ok")
        too_big = ipv4_udp(PEER4, LOCAL4, 1, 7002, b"x" * 1400)
        with pytest.raises(ValueError, match="MTU of 1400"):
            tun.send_batch([good, too_big])
        with pytest.raises(ValueError, match="IP version"):
            tun.send(b"\x00" * 40)
        with pytest.raises(socket.timeout):
            sink.recv(100)  # the good packet before the bad one was not sent either
        assert tun.send(good) == 1
        assert sink.recv(100) == b"ok"
        assert tun.stats.tx_rejected == 2


def test_python_icmp_responder_answers_ping(netns):
    with open_tun() as tun:
        def on_batch(batch):
            replies = [r for r in map(icmp.echo_reply, batch) if r is not None]
            if replies:
                tun.send_batch(replies)

        with tun.start_reader(on_batch):
            v4 = ping(PEER4, count=5, interval=0.05)
            v6 = ping(PEER6, count=5, interval=0.05)
    assert (v4, v6) == (5, 5)


@pytest.mark.parametrize("pipeline", [0, 2])
def test_multi_queue_spreads_flows_and_loses_nothing(netns, pipeline):
    with open_tun(queues=4) as tun:
        assert tun.queues == 4
        threads_seen: set[int] = set()
        got: dict[int, list[int]] = {}
        lock = threading.Lock()

        def on_batch(batch):
            with lock:
                threads_seen.add(threading.get_ident())
                for p in batch:
                    if is_udp_to(p, 9000):
                        raw = bytes(p)
                        sport = struct.unpack_from("!H", raw, 20)[0]
                        got.setdefault(sport, []).append(struct.unpack_from("!I", udp_payload(raw))[0])

        flows = range(20000, 20016)
        with tun.start_reader(on_batch, pipeline=pipeline) as reader:
            for sport in flows:
                udp_flood(500, sport=sport)
            deadline = time.monotonic() + 10
            while sum(map(len, got.values())) < 16 * 500 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert sorted(got) == list(flows)
        assert all(got[s] == list(range(500)) for s in flows)  # order kept within each flow
        assert len(threads_seen) >= 2  # flows were spread over queues
        assert reader.stats.packets >= 16 * 500


@pytest.mark.parametrize("pipeline", [0, 2])
def test_a_callback_that_raises_on_one_queue_ends_every_queue(netns, pipeline):
    # One exception ends the whole reader, not only the queue it came from: otherwise the other queues go on
    # delivering and join() waits for them while traffic lasts.
    with open_tun(queues=4) as tun:
        raised = threading.Event()
        late = [0]
        lock = threading.Lock()

        def on_batch(batch):
            with lock:
                if raised.is_set():
                    late[0] += 1
                    return
                raised.set()
            raise ValueError("bad packet")

        reader = tun.start_reader(on_batch, pipeline=pipeline)
        with flooding():
            assert raised.wait(5)
            with pytest.raises(ValueError, match="bad packet"):
                reader.join(5.0)
            assert not reader.running
            calls_after = late[0]
            time.sleep(0.1)
            assert late[0] == calls_after   # nothing runs any more


@contextlib.contextmanager
def rare_gil_switches() -> Iterator[None]:
    """A callback keeps the GIL until it returns or blocks: another queue's callback cannot start in the middle
    of one, so a test can tell a callback that started after stop() from one that was preempted."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(10.0)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("queues", [1, 4])
@pytest.mark.parametrize("pipeline", [0, 2, 8])
def test_no_callback_starts_after_stop_from_a_callback_on_any_queue(netns, queues, pipeline):
    # The other queues' threads may have read a batch and be waiting for the GIL when the callback calls stop():
    # they must not call back once they get it. Their batches are counted as undelivered.
    for _ in range(3):
        with open_tun(queues=queues) as tun, rare_gil_switches():
            stopped = threading.Event()
            late: list[int] = []
            delivered = [0]
            holder = {}

            def on_batch(batch):
                if stopped.is_set():
                    late.append(len(batch))
                    return
                delivered[0] += len(batch)
                if holder["reader"].stats.batches >= 20:
                    assert holder["reader"].stop() is False   # requested only: we are on a reader thread
                    stopped.set()

            with flooding():
                holder["reader"] = reader = tun.start_reader(on_batch, 8, pipeline=pipeline)
                assert stopped.wait(10)
                assert reader.join(5)
            assert late == [], f"{len(late)} callbacks started after stop()"
            s = reader.stats
            assert s.packets == delivered[0] + s.undelivered


@pytest.mark.parametrize("pipeline", [0, 2])
def test_stopped_readers_kept_for_their_stats_hold_no_descriptors(netns, pipeline):
    # Each queue's thread has its events (two, four with the pipeline): a program that keeps its stopped readers
    # for their counters must not run out of descriptors.
    with open_tun(queues=4) as tun:
        before = len(os.listdir("/proc/self/fd"))
        kept = []
        with flooding():
            for _ in range(50):
                reader = tun.start_reader(len, 8, pipeline=pipeline)
                time.sleep(0.002)
                reader.stop()
                kept.append(reader)
        assert len(os.listdir("/proc/self/fd")) == before
        assert not any(r.running for r in kept)
        assert sum(r.stats.packets for r in kept) > 0
        assert all("stopped" in repr(r) and r.stop() and r.join() for r in kept)


def _thread_fds() -> dict[int, set[int]]:
    """Each thread of this process and the descriptors its table holds."""
    tables: dict[int, set[int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            tables[int(tid)] = {int(fd) for fd in os.listdir(f"/proc/self/task/{tid}/fd")}
        except OSError:
            pass  # the thread ended meanwhile
    return tables


def test_a_pipelined_reading_thread_keeps_only_its_own_descriptors(netns):
    # The reading thread of a pipelined reader reads through a descriptor table of its own (Linux skips a
    # file reference count per read() there). It must hold nothing else: a pipe the program had open when the
    # reader started still reaches end-of-file when the program closes its write end, and a listening socket
    # closed by the program refuses connections at once.
    r, w = os.pipe()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        with open_tun(queues=2) as tun:
            got: list[int] = []
            with tun.start_reader(lambda batch: got.append(len(batch)), pipeline=2):
                udp_flood(100)
                deadline = time.monotonic() + 10
                while sum(got) < 100 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert sum(got) >= 100
                tables = _thread_fds()
                main = tables[threading.get_native_id()]
                private = [fds for fds in tables.values() if fds != main]
                assert len(private) == 2, f"expected one private table per queue's reading thread: {tables}"
                for fds in private:
                    assert r not in fds and w not in fds and listener.fileno() not in fds
                    assert {0, 1, 2} <= fds and len(fds) <= 3 + 7, fds  # stdio, the queue's fd, 2 sockets, 4 events
                    assert fds - {0, 1, 2} <= main  # nothing the program does not have open itself
                os.close(w)
                w = -1
                assert os.read(r, 1) == b""  # end-of-file: no other copy of the write end is open
                listener.close()
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                fresh_r, fresh_w = os.pipe()  # descriptors opened now are the program's as always
                os.write(fresh_w, b"x")
                assert os.read(fresh_r, 1) == b"x"
                os.close(fresh_r)
                os.close(fresh_w)
        assert not os.path.exists("/sys/class/net/ftt0")  # the device went away with its last descriptor
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        listener.close()


def test_stop_is_prompt_while_waiting_on_a_real_device(netns):
    with open_tun() as tun:
        reader = tun.start_reader(lambda batch: None)
        time.sleep(0.2)
        start = time.monotonic()
        assert reader.stop(timeout=2)
        assert time.monotonic() - start < 0.1


def test_closing_while_another_thread_blocks_in_recv(netns):
    tun = open_tun()

    def blocked():
        while True:  # the kernel may send a router solicitation or two first
            tun.recv()

    error, _ = ended_by_close(blocked, tun.close, settle=0.5, timeout=2)
    assert isinstance(error, fasttun.TunClosedError)


@pytest.mark.parametrize("pipeline", [0, 2])
def test_close_from_another_thread_during_a_flood_ends_the_reader_and_the_device(netns, pipeline):
    # A sender keeps the queue busy while the main thread closes the device: the reader (and with a pipeline
    # its reading thread, on a descriptor table of its own) ends at once and the interface goes with it.
    tun = open_tun(queues=2)
    got = [0]
    reader = tun.start_reader(lambda batch: got.__setitem__(0, got[0] + len(batch)), pipeline=pipeline)
    with flooding():
        deadline = time.monotonic() + 10
        while got[0] < 5000 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert got[0] >= 5000
        t0 = time.monotonic()
        tun.close()
        assert reader.join(2.0) and not reader.running
        assert time.monotonic() - t0 < 2.0
        assert not os.path.exists("/sys/class/net/ftt0")


@pytest.mark.parametrize("pipeline", [0, 2])
def test_an_interface_deleted_under_a_flood_ends_the_reader_with_nothing_read_lost(netns, pipeline):
    # `ip link del` while packets flow: the reader ends with "gone", promptly, and every packet it read before
    # that was delivered (a device error is not a stop: what was read ahead is still handed over).
    tun = open_tun()
    got = [0]

    def on_batch(batch):
        got[0] += len(batch)
        time.sleep(0.0005)  # a callback slower than the reads: with a pipeline, batches wait read ahead

    reader = tun.start_reader(on_batch, pipeline=pipeline)
    with flooding():
        deadline = time.monotonic() + 10
        while got[0] < 2000 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert got[0] >= 2000
        netns.run("ip", "link", "del", "ftt0")
        deadline = time.monotonic() + 5
        while reader.running and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not reader.running
    with pytest.raises(fasttun.TunClosedError, match="gone"):
        reader.join(1.0)
    s = reader.stats
    assert s.undelivered == 0 and s.packets == got[0]
    tun.close()


def test_kernel_drops_are_visible_not_silent(netns):
    # A shallow kernel queue and nobody reading: the kernel drops, and says so in the device's counters.
    with open_tun(txqueuelen=50) as tun:
        udp_flood(300)
        got = 0
        while tun.recv(timeout=0.2) is not None:
            got += 1
        stats = tun.stats
        assert got < 300 and stats.rx_dropped_os >= 300 - got - 5
        assert stats.drops >= stats.rx_dropped_os
        shown = json.loads(netns.run("ip", "-j", "-s", "link", "show", tun.name).stdout)
        assert shown[0]["stats64"]["tx"]["dropped"] == stats.rx_dropped_os  # the kernel's TX is our RX


def test_fd_is_usable_with_select(netns):
    import select

    with open_tun() as tun:
        assert select.select([tun.fileno()], [], [], 0.05)[0] == [] or tun.recv(timeout=0) is not None
        udp_flood(1)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if select.select([tun.fileno()], [], [], 0.1)[0] and tun.recv(timeout=0) is not None:
                break
        else:
            pytest.fail("the fd never became readable")


@pytest.mark.skipif(os.environ.get("FASTTUN_SKIP_SLOW") == "1", reason="slow")
def test_reader_keeps_up_with_a_fast_sender(netns):
    with open_tun() as tun:
        count = [0]

        def on_batch(batch):
            count[0] += len(batch)

        with tun.start_reader(on_batch) as reader:
            udp_flood(30000)
            deadline = time.monotonic() + 10
            while count[0] < 30000 and time.monotonic() < deadline:
                time.sleep(0.01)
        stats = reader.stats
        assert count[0] >= 30000
        assert stats.batches < stats.packets  # batching happened under load


def test_routes_through_rtnetlink(netns):
    with open_tun() as tun:
        tun.add_route("10.205.0.0/16")
        tun.add_route("fd00:205::/48")
        tun.add_route("10.206.0.0/16", via=PEER4, metric=7)
        routes = netns.run("ip", "route", "show").stdout + netns.run("ip", "-6", "route", "show").stdout
        assert "10.205.0.0/16 dev ftt0" in routes and "fd00:205::/48 dev ftt0" in routes
        assert f"10.206.0.0/16 via {PEER4} dev ftt0" in routes and "metric 7" in routes
        with pytest.raises(fasttun.TunExistsError, match="already exists"):
            tun.add_route("10.205.0.0/16")
        tun.remove_route("10.205.0.0/16")
        assert "10.205.0.0/16" not in netns.run("ip", "route", "show").stdout
        with pytest.raises(fasttun.TunError, match="no route"):
            tun.remove_route("10.205.0.0/16")
        with pytest.raises(ValueError, match="different IP versions"):
            tun.add_route("10.207.0.0/16", via=PEER6)
        with pytest.raises(ValueError, match="not a network"):
            tun.add_route("10.207.0.0/33")


def test_configuring_from_another_namespace_reaches_the_device(netns):
    # The device lives in the test's namespace; configure it from the machine's own namespace, where another
    # interface has the same index: only our device may change.
    with open_tun(mtu=1400) as tun:
        index = tun.index
        with _netns.private():
            with fasttun.Tun("other0", mtu=1500) as other:
                assert other.index == index  # the same index, another interface
                assert tun.mtu == 1400 and tun.name == "ftt0" and tun.index == index
                tun.mtu = 1300
                tun.add_address("10.201.9.1/24")
                assert other.mtu == 1500 and other.addresses == []
        assert "mtu 1300" in netns.run("ip", "link", "show", "ftt0").stdout
        assert "10.201.9.1/24" in netns.run("ip", "addr", "show", "ftt0").stdout


def test_a_deleted_interface_is_closed_for_every_call_and_keeps_its_counters(netns):
    tun = open_tun()
    pkt = ipv4_udp(LOCAL4, PEER4, 1000, 9000, b"x" * 20)
    assert tun.send(pkt) == 1
    netns.run("ip", "link", "del", "ftt0")
    with pytest.raises(fasttun.TunClosedError, match="gone"):
        tun.send(pkt)  # not "is the link up?" (EIO)
    for what in ("addresses", "mtu", "is_up", "txqueuelen"):
        with pytest.raises(fasttun.TunClosedError, match="gone"):
            getattr(tun, what)
    with pytest.raises(fasttun.TunClosedError):
        tun.recv(timeout=1)
    stats = tun.stats  # fasttun's counters outlive the interface
    assert stats.tx_packets == 1
    tun.close()
    assert tun.stats.tx_packets == 1


def test_a_link_that_is_down_says_so_on_send(netns):
    with open_tun(up=False) as tun:
        with pytest.raises(fasttun.TunError, match="link is down"):
            tun.send(ipv4_udp(LOCAL4, PEER4, 1000, 9000, b"x"))
        tun.up()
        assert tun.send(ipv4_udp(LOCAL4, PEER4, 1000, 9000, b"x")) == 1


def test_fileno_after_close_and_no_luid_on_linux(netns):
    tun = open_tun()
    assert isinstance(tun, fasttun.LinuxTun) and isinstance(tun, fasttun.Tun)
    assert tun.fileno() >= 0
    assert not hasattr(tun, "luid") and not hasattr(tun, "set_dns")   # what only a Wintun adapter has
    tun.close()
    with pytest.raises(fasttun.TunClosedError):
        tun.fileno()


def test_no_permission_on_a_private_dev_net_tun_says_what_works(netns):
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(dir="/tmp")  # pytest's tmp_path is private to root: nobody could not look inside
    os.chmod(folder, 0o755)
    node = os.path.join(folder, "tun")
    subprocess.run(["mknod", node, "c", "10", "200"], check=True)
    os.chmod(node, 0o600)
    code = (
        "import os, fasttun\n"
        "from fasttun import _core\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        f"    _core.open_linux('fttperm1', 1, -1, _core.OPEN_ANY, None, {str(node)!r})\n"
        "except fasttun.TunPermissionError as e:\n"
        "    print('PERM', e)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(folder)
    assert "PERM" in out.stdout, out.stdout + out.stderr
    assert "mode 0600" in out.stdout and "chmod 0666" in out.stdout, out.stdout


def test_txqueuelen_auto_doubles_the_queue_when_the_kernel_drops(netns):
    """A slow reader under a flood: with txqueuelen="auto" the kernel's drops make the queue grow (once per 2 s at
    most); with a fixed txqueuelen the same flood leaves it alone."""

    def flood_until(tun, done, seconds):
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            udp_flood(3000)
            time.sleep(0.2)

    def slow(batch):
        time.sleep(0.005)

    with open_tun("fttq0", txqueuelen="auto") as tun:
        start = tun.txqueuelen
        with tun.start_reader(slow, batch_size=16):
            flood_until(tun, lambda: tun.txqueuelen_grows >= 2, 12)
        assert tun.stats.rx_dropped_os > 0, "the flood was not fast enough to make the kernel drop"
        assert tun.txqueuelen_grows >= 1
        assert tun.txqueuelen == min(65536, start * 2 ** tun.txqueuelen_grows)

    with open_tun("fttq1", txqueuelen=500) as tun:
        with tun.start_reader(slow, batch_size=16):
            flood_until(tun, lambda: False, 2.5)
        assert tun.stats.rx_dropped_os > 0
        assert tun.txqueuelen == 500 and tun.txqueuelen_grows == 0


def test_txqueuelen_takes_a_number_or_auto(netns):
    with pytest.raises(ValueError, match="None or 'auto'"):
        fasttun.Tun("fttq2", txqueuelen="big")
    with fasttun.Tun("fttq2") as tun:
        assert tun.txqueuelen_grows == 0
