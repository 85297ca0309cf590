"""The Linux TUN device (``/dev/net/tun``): what only it has beyond the shared device API of :class:`Tun`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from fasttun import _core, _if_tun
from fasttun._tun import Address, FullPolicy, OffloadMode, Tun, _open_mode

_OFFLOAD_MODES = {"segments": _core.OFFLOAD_SEGMENTS, "super": _core.OFFLOAD_SUPER}


class LinuxTun(Tun):
    """A Linux TUN device (``/dev/net/tun``); ``fasttun.Tun(...)`` opens one on Linux."""

    def __init__(
        self,
        name: str | None = None,
        *,
        mtu: int | None = None,
        addresses: Iterable[Address] = (),
        queues: int = 1,
        persist: bool | None = None,
        open_existing: bool | None = None,
        up: bool = False,
        txqueuelen: int | Literal["auto"] | None = None,
        on_full: FullPolicy = "drop",
        send_timeout: float | None = None,
        offload: bool = False,
        offload_mode: OffloadMode = "segments",
        remote_csum: bool = False,
    ) -> None:
        """Opens (or creates) a TUN device.

        ``name``: the interface name (at most 15 bytes; ``None`` or a name with ``%d`` lets the kernel choose).
        ``persist``: ``True`` keeps the device after close, ``False`` makes it go away with the last close,
        ``None`` leaves the flag as it is. ``queues``: with more than one, a multi-queue device with one file
        descriptor per queue (one reader thread each). ``txqueuelen``: the kernel's queue of packets waiting to be
        read, in packets per queue; ``"auto"`` keeps the default and doubles it (up to 65536, at most once per
        2 s) whenever the kernel counts packets it had to drop because the queue was full (see
        :attr:`txqueuelen_grows`); the check rides on the receives, so it needs a reader or receive calls.

        Offload: ``offload=True`` opens the device with a virtio-net header and lets the kernel hand over and
        accept TCP (and, on Linux 6.2+, UDP) super-packets of up to 64 KiB. In ``offload_mode="segments"``
        (default) they are split in C into ordinary packets before Python sees them, and ordinary packets you send
        are coalesced per flow into super-packets; in ``"super"`` they are delivered whole (``batch.is_super``,
        ``batch.gso(i)``) and a batch of them can be sent on to another offload device untouched.

        ``remote_csum=True`` is for tunnels and forwarders whose far end is another fasttun device opened with it:
        a TCP or UDP checksum the kernel left for the offload to finish stays unfinished, as in VXLAN's remote
        checksum offload. In segments mode such a packet comes behind a 4-byte header (byte 0 is 0x1f, which no IP
        packet starts with; byte 1 the checksum field's offset in the transport header, 16 for TCP or 6 for UDP;
        bytes 2-3 big-endian, where the transport header starts) and its checksum field holds only the
        pseudo-header sum; the device at the far end takes such packets (in any mode but ``"super"``) and has its
        kernel complete the checksum, or, without offload, completes it itself. Neither end then computes a
        checksum over the payload. Inspecting packets in Python sees the header; a device without
        ``remote_csum`` refuses them. The other options are :class:`Tun`'s."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if name == "":
            raise ValueError("the name is empty; give one, or None (or a name with %d) to let the system choose")
        auto_txq = txqueuelen == "auto"
        if isinstance(txqueuelen, str) and not auto_txq:
            raise ValueError(f"txqueuelen must be a number of packets, None or 'auto', not {txqueuelen!r}")
        queue_len = None if isinstance(txqueuelen, str) else txqueuelen
        if offload_mode not in _OFFLOAD_MODES:
            raise ValueError(f"offload_mode must be 'segments' or 'super', not {offload_mode!r}")
        persist_flag = -1 if persist is None else int(bool(persist))
        mode = _open_mode(open_existing)

        def open_device() -> _core.Device:
            return _core.open_linux(name, queues, persist_flag, mode, mtu, None,
                                    _OFFLOAD_MODES[offload_mode] if offload else 0, auto_txq, bool(remote_csum),
                                    queue_len)

        self._open(open_device, addresses, up, on_full, send_timeout)

    @property
    def offloads(self) -> dict[str, bool]:
        """The offloads the kernel accepted (csum, tso4, tso6, tso_ecn, uso4, uso6); empty without offload."""
        self._check_open()
        mode, bits = self._dev.offloads()
        return {name: bool(bits & bit) for name, bit in _if_tun.TUN_F.items()} if mode else {}

    @property
    def offload_mode(self) -> str | None:
        """"segments", "super", or None without offload."""
        self._check_open()
        mode = self._dev.offloads()[0]
        return {_core.OFFLOAD_SEGMENTS: "segments", _core.OFFLOAD_SUPER: "super"}.get(mode)

    @property
    def remote_csum(self) -> bool:
        """Whether packets may carry a partial checksum behind a 4-byte header (see ``remote_csum=True``)."""
        self._check_open()
        return bool(self._dev.remote_csum())

    @property
    def txqueuelen(self) -> int:
        """The kernel's queue of packets waiting to be read (raise it to absorb bursts)."""
        return self._dev.get_txqueuelen()

    @txqueuelen.setter
    def txqueuelen(self, value: int) -> None:
        self._dev.set_txqueuelen(value)

    @property
    def txqueuelen_grows(self) -> int:
        """With ``txqueuelen="auto"``: how many times the queue was doubled because the kernel dropped packets
        (0 otherwise)."""
        self._check_open()
        return int(self._dev.txqueuelen_grows())

    def set_persist(self, persist: bool) -> None:
        """Keep the device after the last close (True) or not (False)."""
        self._dev.set_persist(bool(persist))

    def fileno(self, queue: int = 0) -> int:
        """The file descriptor of a queue (for select/poll/asyncio readiness)."""
        return self._dev.fileno(queue)
