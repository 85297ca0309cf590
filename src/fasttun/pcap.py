"""Capture files of what a device receives and sends: pcap and pcapng with LINKTYPE_RAW (bare IPv4/IPv6).

    from fasttun import pcap

    with pcap.open("capture.pcapng") as writer, pcap.tee(tun, writer):
        ...                                  # everything tun receives and sends is written, timestamped

    writer = pcap.PcapWriter("out.pcap")
    writer.write_batch(batch)                # one record per packet, all with the batch's time
    writer.write(packet, timestamp_ns=...)   # one packet

Both formats record nanosecond timestamps (pcap: the nanosecond magic 0xa1b23c4d; pcapng: if_tsresol 9);
pcapng also records each packet's direction as the system sees the interface (what fasttun receives from the
device was sent by the system: "outbound"; what fasttun sends arrives: "inbound"), as ``tcpdump -i tun0`` shows
it. tcpdump, Wireshark and scapy read both.

:func:`tee` makes a device write every packet it receives (``recv``, ``recv_into``, ``recv_batch``, the batches
of readers started afterwards, ``fasttun.aio``) and every packet it sends that went out (not those dropped) into a
writer. A device without a tee runs exactly the code it runs without this module: the tee sits in front of the
device object only while it is set. Writers are thread-safe (reader threads and senders may write at once).

A capture never costs the data path: when a tee's write fails (a full disk, say), the send still returns what
it sent and readers go on calling their callbacks. The failure is logged once (logger ``fasttun.pcap``), the
writer stops capturing (a file with a torn record must not grow), and what it could not record is counted in
:attr:`~PcapWriter.write_errors` and :attr:`~PcapWriter.dropped`, the exception kept in
:attr:`~PcapWriter.error`. A direct ``write``/``write_batch`` raises the error instead."""

from __future__ import annotations

import builtins
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any, BinaryIO, Optional, Union

from fasttun import _core
from fasttun._core import Batch
from fasttun._core import Packet as _Packet
from fasttun._tun import Tun, _log

__all__ = ["LINKTYPE_RAW", "PcapWriter", "PcapngWriter", "Tee", "open", "tee"]

log = logging.getLogger("fasttun.pcap")

LINKTYPE_RAW = 101
"""Raw IP: each record starts with an IPv4 or IPv6 header (what a TUN device carries)."""

INBOUND, OUTBOUND = 1, 2
_PCAP_NS_MAGIC = 0xA1B23C4D
_PCAP_HEADER = struct.Struct("=IHHiIII")  # magic, version 2.4, thiszone, sigfigs, snaplen, linktype
_PCAP_RECORD = struct.Struct("=IIII")     # seconds, nanoseconds, captured length, original length
_BLOCK_HEAD = struct.Struct("=II")
_EPB = struct.Struct("=IIIIIII")          # type 6, total length, interface, ts high, ts low, caplen, origlen
_EPB_FLAGS = struct.Struct("=HHIHH")      # option epb_flags (2), length 4, value; then opt_endofopt
_U32 = struct.Struct("=I")

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]
Packet = Union[bytes, bytearray, memoryview]


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


View = Union[memoryview, _Packet]  # what a record is written from: both have nbytes and slice to memoryviews


_RCSUM_MAGIC = 0x1F   # byte 0 of a remote-checksum header (LinuxTun(remote_csum=True)): not part of the IP packet


def _views(packets: Union[Batch, Iterable[Any]]) -> list[View]:
    """The packets as byte views; one behind a remote-checksum header is recorded without it (its TCP/UDP
    checksum shows as partial, as a capture of outgoing packets with checksum offload does)."""
    views: list[View] = list(packets) if isinstance(packets, Batch) else [memoryview(p).cast("B") for p in packets]
    for i, v in enumerate(views):
        if len(v) > 4 and v[0] == _RCSUM_MAGIC:
            views[i] = memoryview(v)[4:]
    return views


class _Writer:
    """What both formats share: the file, a lock, counters and the context manager."""

    def __init__(self, file: PathOrFile, snaplen: int) -> None:
        if isinstance(snaplen, bool) or not isinstance(snaplen, int) or not 1 <= snaplen <= 0x40000:
            raise ValueError(f"snaplen must be an int 1..262144, not {snaplen!r}")
        self.snaplen = snaplen
        self._owns = not hasattr(file, "write")
        self._file: BinaryIO = builtins.open(file, "wb") if self._owns else file  # type: ignore[arg-type,assignment]
        self._name = str(getattr(self._file, "name", type(self._file).__name__))
        self._lock = threading.Lock()
        self.packets = 0
        """Records written."""
        self.write_errors = 0
        """Writes to the file that failed (the first one stops the capture)."""
        self.dropped = 0
        """Packets not recorded because of a write error: those of the failed write and every one a tee offered
        afterwards."""
        self.error: Optional[BaseException] = None
        """The first write error, or None; once set the writer records nothing more."""
        self.closed = False
        self._write(self._file_header())

    def _file_header(self) -> bytes:
        raise NotImplementedError

    def _records(self, views: list[View], timestamp_ns: int, direction: int) -> list[Any]:
        raise NotImplementedError

    def _write(self, data: Any) -> None:
        self._file.write(data)

    def write(self, packet: Packet, timestamp_ns: Optional[int] = None, direction: int = 0) -> None:
        """Writes one packet (a bytes-like object) stamped ``timestamp_ns`` (ns since the epoch; default: now).
        ``direction`` (pcapng only): :data:`INBOUND`, :data:`OUTBOUND` or 0 (unknown)."""
        self.write_batch([packet], timestamp_ns, direction)

    def write_batch(self, packets: Union[Batch, Iterable[Any]], timestamp_ns: Optional[int] = None,
                    direction: int = 0) -> None:
        """Writes every packet of a Batch (or of an iterable of bytes-like objects), all stamped with
        ``timestamp_ns`` (default: now), in one write call."""
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < 1 << 64:
            raise ValueError(f"timestamp_ns must be an int of nanoseconds since the epoch, not {ts!r}")
        if direction not in (0, INBOUND, OUTBOUND):
            raise ValueError(f"direction must be 0, INBOUND (1) or OUTBOUND (2), not {direction!r}")
        views = _views(packets)
        if not views:
            return
        parts = self._records(views, ts, direction)
        with self._lock:
            if self.closed:
                raise ValueError("the capture file is closed")
            if self.error is not None:
                raise OSError(f"the capture to {self._name} stopped at a write error: {self.error}")
            try:
                self._write(b"".join(parts))
            except Exception as e:
                self.write_errors += 1
                self.dropped += len(views)
                self.error = e
                raise
            self.packets += len(views)

    def _capture(self, packets: Union[Batch, list[Any]], direction: int) -> None:
        """What a tee writes: never raises (bar KeyboardInterrupt and the like). A failure is counted and
        logged once, and stops the capture; a writer closed meanwhile records nothing."""
        if self.closed:
            return
        if self.error is not None:
            with self._lock:
                self.dropped += len(packets)
            return
        try:
            self.write_batch(packets, None, direction)
        except Exception as e:
            with self._lock:
                if self.closed:  # by another thread meanwhile: the device goes on without its capture
                    return
                if self.error is not e:  # not the file's write (counted there)
                    self.dropped += len(packets)
                    if self.error is not None:  # another thread's write failed first, and said so
                        return
                    self.write_errors += 1  # building the records failed: the capture stops all the same
                    self.error = e
            self._report(e)

    def _report(self, error: BaseException) -> None:
        _log(log, logging.ERROR, "capture to %s stopped at a write error, %d packet(s) not recorded: %s",
             self._name, self.dropped, error)  # a log handler that raises does not reach the data path either

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        """Flushes and closes the file (one given as a path; one given as a file object is flushed, not closed).
        The file is closed even if the flush fails; that error is then raised, once: a second close() does
        nothing."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            error: Optional[BaseException] = None
            try:
                self._file.flush()
            except Exception as e:
                error = e
            if self._owns:
                try:
                    self._file.close()  # closes the descriptor even when its own flush fails again
                except Exception as e:
                    error = error or e
            if error is not None:
                raise error

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapWriter(_Writer):
    """A classic pcap file (version 2.4, nanosecond timestamps, LINKTYPE_RAW, native byte order)."""

    def __init__(self, file: PathOrFile, *, snaplen: int = 65535) -> None:
        super().__init__(file, snaplen)

    def _file_header(self) -> bytes:
        return _PCAP_HEADER.pack(_PCAP_NS_MAGIC, 2, 4, 0, 0, self.snaplen, LINKTYPE_RAW)

    def _records(self, views: list[View], timestamp_ns: int, direction: int) -> list[Any]:
        sec, nsec = divmod(timestamp_ns, 1_000_000_000)
        if sec > 0xFFFFFFFF:
            raise ValueError("a pcap timestamp ends in 2106; use pcapng")
        snap, pack = self.snaplen, _PCAP_RECORD.pack
        parts: list[Any] = []
        for v in views:
            n = v.nbytes
            cap = n if n <= snap else snap
            parts.append(pack(sec, nsec, cap, n))
            parts.append(v if cap == n else v[:cap])
        return parts


class PcapngWriter(_Writer):
    """A pcapng file: one section, one interface (LINKTYPE_RAW, if_tsresol 9 = nanoseconds), Enhanced Packet
    Blocks with the direction in epb_flags."""

    def __init__(self, file: PathOrFile, *, snaplen: int = 65535, interface: str = "fasttun") -> None:
        self._interface = interface.encode("utf-8")[:255]
        super().__init__(file, snaplen)

    def _file_header(self) -> bytes:
        shb_body = struct.pack("=IHHq", 0x1A2B3C4D, 1, 0, -1) + struct.pack("=HH", 0, 0)
        shb = _BLOCK_HEAD.pack(0x0A0D0D0A, 12 + len(shb_body)) + shb_body + struct.pack("=I", 12 + len(shb_body))
        name = self._interface
        opts = struct.pack("=HH", 2, len(name)) + name + bytes(_pad4(len(name)))  # if_name
        opts += struct.pack("=HHB3x", 9, 1, 9)                                      # if_tsresol: 10^-9
        opts += struct.pack("=HH", 0, 0)
        idb_body = struct.pack("=HHI", LINKTYPE_RAW, 0, self.snaplen) + opts
        idb = _BLOCK_HEAD.pack(1, 12 + len(idb_body)) + idb_body + struct.pack("=I", 12 + len(idb_body))
        return shb + idb

    def _records(self, views: list[View], timestamp_ns: int, direction: int) -> list[Any]:
        high, low = timestamp_ns >> 32, timestamp_ns & 0xFFFFFFFF
        snap = self.snaplen
        options = _EPB_FLAGS.pack(2, 4, direction, 0, 0) if direction else b""
        parts: list[Any] = []
        for v in views:
            n = v.nbytes
            cap = n if n <= snap else snap
            pad = _pad4(cap)
            total = 32 + cap + pad + len(options)
            parts.append(_EPB.pack(6, total, 0, high, low, cap, n))
            parts.append(v if cap == n else v[:cap])
            if pad:
                parts.append(bytes(pad))
            if options:
                parts.append(options)
            parts.append(_U32.pack(total))
        return parts


def open(file: PathOrFile, format: Optional[str] = None, *, snaplen: int = 65535) -> _Writer:  # noqa: A001
    """A writer for ``file``: pcapng if ``format == "pcapng"`` or the name ends in ``.pcapng``, else pcap."""
    if format is None:
        name = os.fspath(file) if not hasattr(file, "write") else getattr(file, "name", "")
        format = "pcapng" if str(name).endswith(".pcapng") else "pcap"
    if format == "pcapng":
        return PcapngWriter(file, snaplen=snaplen)
    if format == "pcap":
        return PcapWriter(file, snaplen=snaplen)
    raise ValueError(f"format must be 'pcap' or 'pcapng', not {format!r}")


# ---- a device teeing into a writer --------------------------------------------------------------------


class Tee:
    """A device writing what it receives and sends into a writer, until :meth:`remove` (or the end of a
    ``with`` block): every packet of its receives, sends and readers, whenever they started. A write error never
    reaches the device's callers: it stops the capture, is logged once and counted in the writer's
    ``write_errors`` and ``dropped`` (see the module's documentation)."""

    def __init__(self, tun: Tun, writer: _Writer, rx: bool, tx: bool) -> None:
        if not isinstance(tun, Tun):
            raise TypeError(f"tee() needs a fasttun.Tun, not {type(tun).__name__}")
        if not isinstance(writer, _Writer):
            raise TypeError(f"tee() needs a PcapWriter or PcapngWriter, not {type(writer).__name__}")
        self._tun = tun
        self._writer = writer
        self._rx = rx
        self._tx = tx
        tun._set_tap(self._record)

    def _record(self, packets: Any, direction: int) -> None:
        # Called by the device with what it moved; the writer never raises (a failed capture stops itself).
        if direction == _core.TAP_RECEIVED:
            if self._rx:   # fasttun received these from the device: the system sent them
                self._writer._capture(packets, OUTBOUND)
        elif self._tx:
            self._writer._capture(packets, INBOUND)

    def remove(self) -> None:
        self._tun._set_tap(None, self._record)

    def __enter__(self) -> Tee:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def tee(tun: Tun, writer: _Writer, *, rx: bool = True, tx: bool = True) -> Tee:
    """Makes ``tun`` write the packets it receives (``rx``) and sends (``tx``) into ``writer``."""
    return Tee(tun, writer, bool(rx), bool(tx))
