"""A point-to-point IP-over-UDP tunnel: a TUN device on one side, a UDP socket on the other, in C batches.

    # on host A (and the mirror image on host B: --tun-addr 10.99.0.2/24 --bind 10.200.0.2:5555 --peer ...1:5555)
    python examples/udp_tunnel.py --tun-addr 10.99.0.1/24 --bind 10.200.0.1:5555 --peer 10.200.0.2:5555
    # then: ping 10.99.0.2, iperf3 -c 10.99.0.2, ...

Every packet the kernel routes into the TUN device is read by the device's reader thread and sent as one UDP
datagram to the peer; every datagram from the peer is written into the TUN device. Without a key there is no
Python at all on the way: the two readers are forwards, ``tun.start_reader(endpoint)`` and
``endpoint.start_reader(tun)``, which send each batch to the other side in C (a datagram that is not an IP packet
is dropped and counted in the TUN device's ``tx_rejected``, reported as ``not_ip``). With
``--offload on`` (the default, where the kernel has it) the TUN device hands over the kernel's TCP super-packets
split into MTU-sized packets that lie back to back in one arena, the endpoint sends each run of them as one
``UDP_SEGMENT`` message, the peer receives them coalesced (``UDP_GRO``) and its TUN device takes them merged back
into super-packets.

With ``--key-file FILE`` (32 raw bytes, or 64 hex digits) the datagrams are sealed with ChaCha20-Poly1305, one
AEAD call per *train* instead of per packet (the per-call cost of ``cryptography``, 2-3 us, is what limits a
per-packet tunnel in Python). A train is a run of consecutive packets of one TUN batch (they lie back to back in
its arena: one slice), at most ``--train`` datagrams' worth (default 16), sealed as one message and cut into
datagrams:

    datagram = direction (1 byte) | index (1) | count (1) | zero (1) | counter (8, big-endian) | piece

The pieces are the train's ciphertext and tag cut every MTU + 16 bytes (so a lone MTU-sized packet is one
datagram of MTU + 28 bytes, as per-packet sealing would make it; small packets share a datagram). The header
of the train's first datagram (index 0) is the nonce and the associated data: the counter grows by one per
train and starts at the current time in nanoseconds (a restarted tunnel never reuses a nonce unless the clock
went back), the direction byte (0 or 1, from comparing the two UDP addresses) keeps the two ends' nonces apart
under one key, and count and counter are authenticated with the ciphertext, whose length the AEAD covers
itself. The receiver joins the pieces in index order (in C when the whole train is in one receive batch, as it
is with UDP GRO), opens the train, splits it back into its IP packets by their headers' lengths, and keeps a
sliding window of the last 1024 train counters. Replays, trains older than the window, tampered or foreign
datagrams (wrong key, wrong direction, too short) are dropped and counted, and so is every datagram of a train
that lost one of its datagrams or got them out of order (``incomplete``): a lost datagram costs its whole train
(``--train 1``: one datagram per train). Trains are made of what one TUN read returned: nothing waits for a
train to fill. There is no handshake: both ends share the key; use WireGuard where you need key exchange and
forward secrecy.

With ``--remote-csum on`` (the default) the TUN device is opened with ``remote_csum=True``: a TCP or UDP checksum
the kernel left for the offload to finish stays unfinished and the packet travels behind a 4-byte header (see
``LinuxTun``), plain or sealed with the train, for the far end's kernel to finish; so the datagrams and trains are
up to 4 bytes per packet longer. Both ends must agree; ``--remote-csum off`` for a peer that is another program.

With ``--asyncio`` both directions run on one asyncio event loop instead of two reader threads: the loop waits
on the TUN device's and the socket's descriptors (``loop.add_reader``, registered once) and drains each with
``recv_batch(timeout=0)``; ``--asyncio aio`` takes the TUN device's batches from ``fasttun.aio.batches``
instead (see ``fasttun bench tunnel`` and the README for how the two compare). Sends never wait there (a full
socket buffer drops and counts).

On Windows the same program runs on a Wintun adapter: ``--offload on`` (the default) has the adapter coalesce the
TCP segments of a flow into packets of up to 64 KiB before Wintun (``coalesce=True``), and ``--asyncio`` takes the
adapter's batches from ``fasttun.aio.batches`` (a Wintun adapter has no descriptor) on a selector event loop.

Runs until SIGINT (Ctrl-C) or SIGTERM, then prints its counters (one ``counters {json}`` line) and exits 0."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import signal
import struct
import sys
import threading
import time
from typing import Any, Callable, Union

import fasttun
from fasttun import aio

log = logging.getLogger("udp_tunnel")

HEADER = struct.Struct("!BBBxQ")   # direction, fragment index, fragment count, zero, counter
TAG = 16
OVERHEAD = HEADER.size + TAG       # of a datagram that is a whole train
WINDOW = 1024
TRAIN = 16                         # default: at most this many datagrams per train
BATCH = 128
WINDOWS = sys.platform == "win32"


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        value = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT (e.g. 10.200.0.1:5555)") from None
    if not sep or not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be 1..65535")
    return host, value


def read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 32:
        return data
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError(f"{path}: a key is 32 raw bytes or 64 hex digits")
    return key


class Counters:
    """What the tunnel itself dropped; everything else is in the device's and the endpoint's stats."""

    def __init__(self) -> None:
        self.not_ip = 0       # datagrams from the peer that were not an IP packet the TUN device takes
        self.foreign = 0      # too short for our format, or the wrong direction
        self.auth_failed = 0  # tampered, or sealed with another key
        self.replayed = 0     # seen before, or older than the window
        self.incomplete = 0   # datagrams of a train that lost one of its datagrams, or came out of order

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def deliver(tun: fasttun.Tun, packets: Any, counters: Counters) -> None:
    """Writes packets into the TUN device; one that is not an IP packet costs that packet, not the batch."""
    try:
        tun.send_batch(packets)  # every packet is checked before any is written
    except ValueError:
        for p in packets:
            try:
                tun.send(p)
            except ValueError:
                counters.not_ip += 1


class Sealer:
    """Seals the packets of one TUN batch as trains: consecutive packets, back to back as the batch holds them,
    sealed with one AEAD call (the per-call cost of ``cryptography`` is what limits a per-packet tunnel) and
    cut into datagrams of at most ``mtu + OVERHEAD`` bytes, written straight into the BatchBuilder the
    datagrams leave from."""

    def __init__(self, key: bytes, direction: int, mtu: int, train: int = TRAIN) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self.aead = ChaCha20Poly1305(key)
        self.direction = direction
        self.counter = time.time_ns()
        self.chunk = mtu + TAG                  # ciphertext bytes per datagram: one MTU packet and its tag fit
        self.budget = train * self.chunk - TAG  # plaintext bytes per train (a longer packet is a train alone)
        self.scratch = memoryview(bytearray(max(self.budget, 65535) + TAG))
        self.out = fasttun.BatchBuilder(max_packets=BATCH, capacity=BATCH * (mtu + OVERHEAD))

    def seal(self, batch: fasttun.Batch) -> fasttun.Batch:
        self.out.clear()
        budget = self.budget
        with batch.buffer as buf, batch.lengths as lengths:   # the packets lie back to back in buf
            start = pos = 0
            for n in lengths:
                if pos + n - start > budget and pos > start:
                    self._train(buf[start:pos])
                    start = pos
                pos += n
            if pos > start:
                self._train(buf[start:pos])
        return self.out.batch()

    def _train(self, plain: memoryview) -> None:
        self.counter = counter = self.counter + 1
        direction, chunk, out = self.direction, self.chunk, self.out
        size = len(plain) + TAG
        count = -(-size // chunk)
        nonce = HEADER.pack(direction, 0, count, counter)   # fragment 0's header: the nonce and the AD
        if count == 1:   # ciphertext and tag straight into the datagram, after its header
            self.aead.encrypt_into(nonce, plain, nonce, out.reserve(size, nonce))
            return
        with self.scratch[:size] as sealed:
            self.aead.encrypt_into(nonce, plain, nonce, sealed)
            out.append_split(sealed, chunk, nonce, 1)   # each piece after the header, byte 1: its index


class Opener:
    """Reassembles trains from datagrams in order, checks the replay window, opens each train with one AEAD call
    into a BatchBuilder and splits it back into its IP packets. Every datagram it drops is counted once."""

    def __init__(self, key: bytes, direction: int, mtu: int, counters: Counters, train: int = TRAIN) -> None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self.aead = ChaCha20Poly1305(key)
        self.invalid = InvalidTag
        self.direction = direction
        self.counters = counters
        self.top = 0        # the highest counter accepted
        self.seen = 0       # bit k: counter top - k was accepted
        self.chunk = mtu + TAG
        self.max_count = max(train, -(-(65535 + TAG) // self.chunk))
        # the ciphertext of the train being reassembled: its datagrams' payloads as packets, back to back
        self.asm = fasttun.BatchBuilder(max_packets=self.max_count, capacity=self.max_count * self.chunk)
        self.pending = 0    # datagrams of that train received so far (0: none under way)
        self.pending_counter = -1
        self.pending_count = 0
        # Room for a whole batch of datagrams and the train a previous batch began, split into IP packets of
        # at least 20 bytes each.
        capacity = (BATCH + self.max_count) * self.chunk
        self.out = fasttun.BatchBuilder(max_packets=capacity // 20, capacity=capacity)

    def _fresh(self, counter: int) -> bool:
        top = self.top
        return counter > top or (top - counter < WINDOW and not self.seen >> (top - counter) & 1)

    def _accept(self, counter: int) -> None:
        top = self.top
        if counter > top:
            shift = counter - top
            self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.top = counter
        else:
            self.seen |= 1 << (top - counter)

    def _open(self, nonce: bytes, sealed: Any, count: int, counter: int) -> None:
        out, c = self.out, self.counters
        try:
            self.aead.decrypt_into(nonce, sealed, nonce, out.reserve(len(sealed) - TAG))
        except self.invalid:
            out.pop()   # the reserved packet is not a packet
            c.auth_failed += count
            return
        self._accept(counter)
        try:
            out.split_ip()
        except ValueError:   # sealed by the peer, yet not IP packets: never for the TUN device
            out.pop()
            c.not_ip += count

    def open(self, batch: fasttun.Batch) -> fasttun.Batch:
        out, c, ours, chunk, asm, max_count = self.out, self.counters, self.direction, self.chunk, self.asm, \
            self.max_count
        unpack, pack, hsize, fresh, unseal = HEADER.unpack_from, HEADER.pack, HEADER.size, self._fresh, self._open
        joined = asm.append_joined
        pending, pending_counter, pending_count = self.pending, self.pending_counter, self.pending_count
        skip = 0
        out.clear()
        with batch.buffer as buf, batch.offsets as offsets, batch.lengths as lengths:
            for j, (here, n) in enumerate(zip(offsets, lengths)):
                if skip:   # joined with the train's first datagram already
                    skip -= 1
                    continue
                n -= hsize
                if n <= 0 or n > chunk:
                    c.foreign += 1
                    continue
                direction, index, count, counter = unpack(buf, here)
                if direction != ours or index >= count or count > max_count:
                    c.foreign += 1
                    continue
                if index == 0:
                    if pending:   # the train under way lost a datagram: what it had is dropped
                        c.incomplete += pending
                        pending = 0
                    if not fresh(counter):
                        c.replayed += 1
                        continue
                    header = pack(direction, 0, count, counter)
                    if count == 1:
                        if n > TAG:
                            unseal(header, buf[here + hsize:here + hsize + n], 1, counter)
                        else:
                            c.foreign += 1
                        continue
                    asm.clear()
                    if joined(batch, j, count, header, 1):   # the whole train in this batch, in order
                        skip = count - 1
                        self._open_train(header, count, counter)
                        continue
                    asm.append(buf[here + hsize:here + hsize + n])   # the rest comes later
                    pending, pending_counter, pending_count = 1, counter, count
                elif pending != index or counter != pending_counter or count != pending_count:
                    c.incomplete += 1   # out of order, or its train's first datagram was lost
                else:
                    asm.append(buf[here + hsize:here + hsize + n])
                    pending += 1
                    if pending == count:
                        pending = 0
                        self._open_train(pack(direction, 0, count, counter), count, counter)
        self.pending, self.pending_counter, self.pending_count = pending, pending_counter, pending_count
        return out.batch()

    def abandon(self) -> None:
        """Counts the datagrams of a train still under way as lost (at the end)."""
        self.counters.incomplete += self.pending
        self.pending = 0

    def _open_train(self, header: bytes, count: int, counter: int) -> None:
        sealed = self.asm.batch()
        if sealed.nbytes <= TAG:
            self.counters.foreign += count
            return
        with sealed.buffer as ciphertext:
            self._open(header, ciphertext, count, counter)


Callback = Callable[[fasttun.Batch], None]
# What a reader hands its batches to: a Python callback, or (plain tunnel) the device at the other side, which
# makes the reader a forward: its batches are sent there in C without Python or the GIL.
Sink = Union[Callable[[fasttun.Batch], None], fasttun.Tun, fasttun.UdpEndpoint]


def run_threads(tun: fasttun.Tun, endpoint: fasttun.UdpEndpoint, tun_to_udp: Sink, udp_to_tun: Sink,
                stop: threading.Event) -> int:
    """Both directions on reader threads (the fast default): each thread waits in C, without the GIL."""
    readers = [tun.start_reader(tun_to_udp, BATCH), endpoint.start_reader(udp_to_tun, BATCH)]
    print("ready", flush=True)
    failed = None
    while not stop.wait(0.2):
        if not all(r.running for r in readers):
            failed = "a reader ended"
            break
    status = 0
    for r in readers:
        try:
            r.stop(timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - report, then the other reader and the counters
            log.error("reader failed: %r", exc)
            status = 1
    if failed and status == 0:
        log.error("%s", failed)
        status = 1
    return status


async def tick() -> None:
    """Wakes the loop every 200 ms: Windows runs a Python signal handler only once the main thread is back in
    Python, and its select() is not interrupted by Ctrl-C."""
    while True:
        await asyncio.sleep(0.2)


async def run_asyncio(tun: fasttun.Tun, endpoint: fasttun.UdpEndpoint, tun_to_udp: Callback,
                      udp_to_tun: Callback, mode: str) -> int:
    """Both directions on the event loop, no thread. The UDP endpoint through ``loop.add_reader`` on its
    descriptor and ``recv_batch(timeout=0)``; the TUN device the same way (mode "fd", the fast one), or through
    ``fasttun.aio.batches`` (mode "aio"). The callbacks are the threaded variant's."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []
    ticker = None
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:   # Windows' loops: a plain handler, run on this thread between the loop's waits
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
            ticker = ticker or asyncio.create_task(tick())

    def drain(recv: Callable[..., fasttun.Batch], forward: Callback) -> Callable[[], None]:
        def readable() -> None:
            try:
                for _ in range(8):   # a bounded share of the loop, then the other direction's turn
                    batch = recv(BATCH, timeout=0)
                    if not batch:
                        return
                    forward(batch)
                    del batch        # the next receive reuses this batch's arena
            except Exception as exc:  # noqa: BLE001 - ends the tunnel with the error reported
                errors.append(exc)
                stop.set()
        return readable

    async def tun_side() -> None:
        try:
            async with aio.batches(tun, BATCH) as stream:
                async for batch in stream:
                    tun_to_udp(batch)
                    del batch   # lets the next receive reuse this batch's arena instead of allocating one
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            stop.set()

    fds = [endpoint.fileno()]
    loop.add_reader(fds[0], drain(endpoint.recv_batch, udp_to_tun))
    task = None
    if mode == "aio":
        task = asyncio.create_task(tun_side())
    else:
        fds.append(tun.fileno())
        loop.add_reader(fds[1], drain(tun.recv_batch, tun_to_udp))
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        for fd in fds:
            loop.remove_reader(fd)   # before the descriptors close
        for pending in (task, ticker):
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
    for exc in errors:
        log.error("tunnel failed: %r", exc)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A point-to-point IP-over-UDP tunnel on fasttun.")
    parser.add_argument("--tun-addr", required=True, help="the TUN device's address, e.g. 10.99.0.1/24")
    parser.add_argument("--bind", required=True, type=host_port, help="local UDP ADDRESS:PORT")
    parser.add_argument("--peer", required=True, type=host_port, help="the peer's UDP ADDRESS:PORT")
    parser.add_argument("--name", default="udptun0", help="TUN device name (default udptun0)")
    parser.add_argument("--mtu", type=int, default=1400, help="TUN MTU (default 1400)")
    parser.add_argument("--key-file", help="seal datagrams with ChaCha20-Poly1305 under this 32-byte key")
    parser.add_argument("--train", type=int, default=TRAIN, metavar="N",
                        help=f"with --key-file: seal up to N datagrams' worth of consecutive packets with one "
                             f"AEAD call (1..64, default {TRAIN}; 1: one packet per datagram)")
    parser.add_argument("--offload", choices=("on", "off"), default="on",
                        help="Linux: TUN TSO/USO segments and UDP GSO/GRO where the kernel has them; Windows: TCP "
                             "segments coalesced into packets of up to 64 KiB before Wintun (default on)")
    parser.add_argument("--remote-csum", choices=("on", "off"),
                        help="leave the TCP/UDP checksums the kernel left partial for the far end to finish "
                             "(Tun(remote_csum=True): a 4-byte header before such packets, sealed with them under "
                             "--key-file), so neither Linux end computes one; both ends must agree (default on; an "
                             "end without offload, and a Windows end, only take such packets and finish them)")
    parser.add_argument("--asyncio", nargs="?", const="aio" if WINDOWS else "fd", choices=("fd", "aio"),
                        help="run both directions on one asyncio event loop instead of two reader threads: "
                             "loop.add_reader on both descriptors (fd, the default on Linux), or fasttun.aio.batches "
                             "for the TUN device (aio; the only one on Windows, where a Wintun adapter has no "
                             "descriptor)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        ipaddress.ip_interface(args.tun_addr)
    except ValueError:
        parser.error(f"--tun-addr {args.tun_addr!r} is not ADDRESS/PREFIX")
    if not 576 <= args.mtu <= 65000:
        parser.error("--mtu must be 576..65000")
    if not 1 <= args.train <= 64:
        parser.error("--train must be 1..64")
    if WINDOWS and args.asyncio == "fd":
        parser.error("--asyncio fd needs the TUN device's descriptor, which a Wintun adapter has not: use "
                     "--asyncio aio")
    key = None
    if args.key_file:
        try:
            key = read_key(args.key_file)
            import cryptography  # noqa: F401
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        except ImportError:
            parser.error("--key-file needs the 'cryptography' package (pip install cryptography)")

    offload = args.offload == "on"
    # An end without offload (and a Windows end: Wintun has none) never leaves a checksum partial but still takes
    # packets whose checksum the far end left partial, so the two ends agree whatever their offload.
    remote_csum = args.remote_csum != "off"
    stop = threading.Event()
    if not args.asyncio:   # the asyncio variant gets them from its loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    tun_options: dict[str, Any] = dict(mtu=args.mtu, addresses=[args.tun_addr], up=True)
    if WINDOWS:
        tun = fasttun.Tun(args.name, coalesce=offload, remote_csum=remote_csum, **tun_options)
    else:
        tun_options.update(txqueuelen=10000)
        try:
            tun = fasttun.Tun(args.name, offload=offload, remote_csum=remote_csum, **tun_options)
        except (fasttun.TunError, TypeError, ValueError) as exc:
            if not offload:
                raise
            log.warning("TUN offload unavailable (%s); running without it", exc)
            tun = fasttun.Tun(args.name, remote_csum=remote_csum, **tun_options)
    rcsum = 4 if remote_csum else 0   # the remote-checksum header a packet may come behind
    overhead = (OVERHEAD if key else 0) + rcsum
    # On the event loop a send must never wait for room (it would stall the loop): a full socket buffer
    # drops, and counts, what does not fit, as the network itself would.
    endpoint = fasttun.UdpEndpoint(bind=args.bind, peer=args.peer, offload=offload,
                                   max_datagram=args.mtu + overhead, rcvbuf=8 << 20, sndbuf=8 << 20,
                                   on_full="drop" if args.asyncio else "wait")
    counters = Counters()
    ours = 0 if args.bind < args.peer else 1
    opener = None

    if key is None:
        send_out = endpoint.send_batch

        def tun_to_udp(batch: fasttun.Batch) -> None:
            send_out(batch)

        def udp_to_tun(batch: fasttun.Batch) -> None:
            deliver(tun, batch, counters)
    else:
        sealer = Sealer(key, ours, args.mtu + rcsum, args.train)
        opener = Opener(key, 1 - ours, args.mtu + rcsum, counters, args.train)

        def tun_to_udp(batch: fasttun.Batch) -> None:
            endpoint.send_batch(sealer.seal(batch))

        def udp_to_tun(batch: fasttun.Batch) -> None:
            packets = opener.open(batch)
            if len(packets):
                deliver(tun, packets, counters)

    log.info("tunnel %s %s <-> %s:%d (%s, %s, offload: tun %s, udp %s)", tun.name, args.tun_addr, *args.peer,
             ("ChaCha20-Poly1305" if key else "plain") + (", remote checksums" if remote_csum else ""),
             "asyncio" if args.asyncio else "reader threads",
             ("coalesce" if offload else "off") if WINDOWS else tun.offload_mode or "off",
             "gso+gro" if endpoint.offloads["gso"] and endpoint.offloads["gro"] else
             ("gso" if endpoint.offloads["gso"] else "gro" if endpoint.offloads["gro"] else "off"))
    if args.asyncio:
        if WINDOWS:   # loop.add_reader (the socket's side) needs a selector loop; Windows' default has none
            asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
        status = asyncio.run(run_asyncio(tun, endpoint, tun_to_udp, udp_to_tun, args.asyncio))
    else:
        if key is None:   # forwards: the TUN device's batches go to the endpoint and back in C
            status = run_threads(tun, endpoint, endpoint, tun, stop)
            counters.not_ip = tun.stats.tx_rejected   # what the TUN device refused of the peer's datagrams
        else:
            status = run_threads(tun, endpoint, tun_to_udp, udp_to_tun, stop)
    if opener is not None:
        opener.abandon()
    sections: dict[str, dict[str, Any]] = {"tunnel": counters.as_dict(), "udp": dataclasses.asdict(endpoint.stats),
                                           "tun": dataclasses.asdict(tun.stats)}
    tun_offload = ("coalesce" if offload else "off") if WINDOWS else tun.offload_mode or "off"
    report: dict[str, Any] = dict(sections, udp_offloads=endpoint.offloads, tun_offload=tun_offload)
    tun.close()
    endpoint.close()
    for section, values in sections.items():
        for name, value in values.items():
            if value:
                print(f"{section}.{name}: {value}")
    print("counters " + json.dumps(report, default=str), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
