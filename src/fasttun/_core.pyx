# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, embedsignature=True
"""Thin wrappers over the C core: devices, arenas, batches and reader threads.

Everything a user sees is re-exported and documented by the ``fasttun`` package; this module holds no
policy of its own beyond turning C status codes into Python exceptions."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_FORMAT
from cpython.buffer cimport PyBUF_ND, PyBUF_STRIDES
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Malloc, PyMem_Free, PyMem_RawMalloc, PyMem_RawFree
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.ref cimport Py_INCREF, Py_DECREF, PyObject
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stddef cimport wchar_t
from libc.string cimport memcmp, memcpy, memset

import errno as _errno
import numbers as _numbers
import os as _os
import time as _time
import weakref as _weakref

from fasttun import errors as _errors

MAX_PACKET = FT_MAX_PACKET
MIN_MTU = FT_MIN_MTU
DEFAULT_SPIN_US = FT_READER_DEFAULT_SPIN_US
DEFAULT_ADAPTIVE_PPS = FT_READER_DEFAULT_ADAPTIVE_PPS
MAX_SPIN_US = FT_READER_MAX_SPIN_US
PAIR_DEFAULT_CAPACITY = FT_PAIR_DEFAULT_CAPACITY
PAIR_DEFAULT_CAPACITY_BYTES = FT_PAIR_DEFAULT_CAPACITY_BYTES
LINUX_MAX_QUEUES = FT_LINUX_MAX_QUEUES
ALL_QUEUES = FT_ALL_QUEUES
WINTUN_DEFAULT_RING_CAPACITY = FT_WINTUN_DEFAULT_RING_CAPACITY
WINTUN_MIN_RING_CAPACITY = FT_WINTUN_MIN_RING_CAPACITY
WINTUN_MAX_RING_CAPACITY = FT_WINTUN_MAX_RING_CAPACITY
WINTUN_MAX_NAME = FT_WINTUN_MAX_NAME
POLICY_DROP = FT_FULL_DROP
POLICY_WAIT = FT_FULL_WAIT
POLICY_RAISE = FT_FULL_RAISE

cdef enum:
    # Blocking calls wait in slices this long so that Ctrl-C is seen within about this many milliseconds.
    SLICE_MS = 100
    # Packets per send_batch call described on the stack; larger calls allocate their tables.
    SMALL = 64


cdef object _message(ft_err *e):
    return e.msg.decode("utf-8", "replace")


cdef object _exception(ft_err *e):
    """The Python exception for a failed C call."""
    cdef int st = e.status
    msg = _message(e)
    if st == FT_EPACKET or st == FT_EINVAL:
        return ValueError(msg)
    if st == FT_ENOMEM:
        return MemoryError(msg)
    if st == FT_ECLOSED or st == FT_EEOF:
        return _errors.TunClosedError(e.errnum or _errno.EBADF, msg)
    if st == FT_EFULL:
        return _errors.TunFullError(_errno.ENOBUFS, msg)
    if st == FT_EUNSUPPORTED:
        return _errors.TunError(_errno.ENOSYS, msg)
    if st == FT_ECORRUPT:
        return _errors.TunError(e.errnum or _errno.EIO, msg)
    if st == FT_EREFUSED:
        return _errors.TunError(e.errnum or _errno.EINVAL, msg)
    return _errors.from_errno(e.errnum or _errno.EIO, msg, e.oserr)


cdef int _raise(ft_err *e) except -1:
    raise _exception(e)


cdef int _raise_sent(ft_err *e, uint32_t sent) except -1:
    """Raises the exception of a failed send, saying how many of its packets went."""
    exc = _exception(e)
    exc.sent = sent
    raise exc


cdef int _timeout_ms(object timeout) except -2:
    """None -> -1 (forever); seconds (>= 0) -> milliseconds."""
    if timeout is None:
        return -1
    cdef type kind = type(timeout)
    if kind is not float and kind is not int:  # the common cases first: the ABC check costs a microsecond
        if isinstance(timeout, bool) or not isinstance(timeout, _numbers.Real):
            raise TypeError(f"timeout must be None or a number of seconds, not {type(timeout).__name__}")
    t = float(timeout)
    if not (t >= 0.0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    if t > 2_000_000.0:
        raise ValueError(f"timeout {timeout!r} is too large; at most 2000000 seconds")
    return <int>(t * 1000.0 + 0.999)


def _timeout_check(timeout):
    """Raises ValueError for a timeout that is neither None nor a number of seconds >= 0."""
    _timeout_ms(timeout)


cdef int _get_buffer(object obj, Py_buffer *view, int flags, str what) except -1:
    """PyObject_GetBuffer with a TypeError that says what was expected."""
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, TypeError, ValueError):
        # ValueError: NumPy's answer for an array that is not contiguous
        raise TypeError(f"{what}, not {type(obj).__name__}") from None
    return 0


# ---- arenas and batches -------------------------------------------------------------------------------

cdef Py_ssize_t _index(object index, Py_ssize_t n, str what) except -1:
    """index (negative counts from the end) as a position in 0..n-1, else IndexError (also for huge ints)."""
    cdef Py_ssize_t i
    try:
        i = index
    except OverflowError:
        raise IndexError(f"{what} index {index} out of range for {n}") from None
    if i < 0:
        i += n
    if i < 0 or i >= n:
        raise IndexError(f"{what} index {index} out of range for {n}")
    return i


cdef class Arena:
    """One allocation holding packet bytes plus the offsets and lengths tables of a batch.

    It exports its bytes through the buffer protocol and counts the exports, so the owner can tell
    whether anybody still looks at it before reusing it."""

    cdef uint8_t *data
    cdef size_t cap
    cdef uint32_t *offsets
    cdef uint32_t *lengths
    cdef uint8_t *vnet
    cdef ft_endpoint *addrs
    cdef uint32_t max
    cdef Py_ssize_t exports
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
    cdef bint in_batch
    cdef uint64_t generation  # advanced when a reader's batch in it ends: its Packet objects expire

    def __cinit__(self, uint32_t max_packets, size_t cap):
        if max_packets < 1:
            raise ValueError("an arena holds at least one packet")
        self.cap = cap
        self.max = max_packets
        # Packet bytes first, then the tables (8-byte aligned): offsets, lengths, datagram addresses, vnet headers.
        cdef size_t tables = (<size_t>max_packets) * (4 * 2 + sizeof(ft_endpoint) + FT_VNET_HDR_SIZE)
        cdef size_t head = (self.cap + 7) & ~(<size_t>7)
        self.data = <uint8_t *>PyMem_RawMalloc(head + tables)
        if self.data == NULL:
            raise MemoryError(f"cannot allocate a {head + tables}-byte packet arena")
        self.offsets = <uint32_t *>(self.data + head)
        self.lengths = self.offsets + max_packets
        self.addrs = <ft_endpoint *>(self.lengths + max_packets)   # datagram sources (UDP endpoints)
        memset(self.addrs, 0, (<size_t>max_packets) * sizeof(ft_endpoint))
        self.vnet = <uint8_t *>(self.addrs + max_packets)   # virtio-net headers of super-packets
        self.exports = 0

    def __dealloc__(self):
        PyMem_RawFree(self.data)

    cdef void attach(self, ft_batch *b):
        b.data = self.data
        b.cap = self.cap
        b.offsets = self.offsets
        b.lengths = self.lengths
        b.vnet = self.vnet
        b.addrs = self.addrs
        b.max = self.max
        b.count = 0
        b.used = 0

    cdef bint idle(self):
        return self.exports == 0 and not self.in_batch

    def __getbuffer__(self, Py_buffer *buf, int flags):
        self.shape[0] = <Py_ssize_t>self.cap
        self.strides[0] = 1
        buf.buf = self.data
        buf.obj = self
        buf.len = <Py_ssize_t>self.cap
        buf.readonly = 0
        buf.itemsize = 1
        buf.format = <char *>b"B" if (flags & PyBUF_FORMAT) else NULL
        buf.ndim = 1
        buf.shape = self.shape if (flags & PyBUF_ND) else NULL
        buf.strides = self.strides if (flags & PyBUF_ND) else NULL
        buf.suboffsets = NULL
        buf.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buf):
        self.exports -= 1


cdef class _Table:
    """A table of an arena, read-only: the offsets or lengths of a batch (uint32, format 'I') or its virtio-net
    headers (bytes, format 'B')."""
    cdef Arena arena
    cdef void *ptr
    cdef Py_ssize_t itemsize
    cdef char *format
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *buf, int flags):
        buf.buf = self.ptr
        buf.obj = self
        buf.len = self.shape[0] * self.itemsize
        buf.readonly = 1
        buf.itemsize = self.itemsize
        buf.format = self.format if (flags & PyBUF_FORMAT) else NULL
        buf.ndim = 1
        self.strides[0] = self.itemsize
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL
        self.arena.exports += 1

    def __releasebuffer__(self, Py_buffer *buf):
        self.arena.exports -= 1


@cython.freelist(256)
cdef class Packet:
    """One packet of a batch, without a copy: a bytes-like object (buffer protocol, writable) that works wherever
    a memoryview of the packet would: ``len(p)``, ``p[i]``, ``p[a:b]`` (a memoryview), ``bytes(p)``, ``p == b"..."``,
    ``memoryview(p)``, ``struct.unpack_from``, ``socket.send``, NumPy.

    A packet of a reader's batch is valid during the callback only: afterwards every use raises ValueError, so
    it never shows memory the reader has reused. The check is one comparison with the arena's generation, which
    the reader advances when the callback returns; a buffer export taken during the call (a memoryview or NumPy
    array of it) pins the whole arena instead, and the reader reads on into a fresh one. A packet of a batch from
    ``recv_batch`` or ``make_batch`` keeps that batch alive and stays valid as long as it is held."""

    cdef Arena arena
    cdef object owner           # the Batch, for packets of batches that are not a reader's (None otherwise)
    cdef uint8_t *ptr
    cdef Py_ssize_t shape[1]
    cdef uint64_t generation

    def __init__(self):
        raise TypeError("Packet objects come from batches; they cannot be created directly")

    cdef inline int _check(self) except -1:
        if self.generation != self.arena.generation:
            raise ValueError(_EPHEMERAL_MSG)
        return 0

    def __len__(self):
        self._check()
        return self.shape[0]

    @property
    def nbytes(self):
        self._check()
        return self.shape[0]

    def __getitem__(self, index):
        cdef Py_ssize_t i
        self._check()
        if isinstance(index, slice):
            return memoryview(self)[index]
        i = _index(index, self.shape[0], "packet byte")
        return self.ptr[i]

    def __setitem__(self, index, value):
        cdef Py_ssize_t i
        self._check()
        if isinstance(index, slice):
            memoryview(self)[index] = value
            return
        i = _index(index, self.shape[0], "packet byte")
        if not 0 <= value <= 255:
            raise ValueError(f"a byte is 0..255, not {value!r}")
        self.ptr[i] = <uint8_t>value

    def __iter__(self):
        return iter(self.tobytes())

    def __bytes__(self):
        self._check()
        return PyBytes_FromStringAndSize(<char *>self.ptr, self.shape[0])

    def tobytes(self):
        """The packet as bytes (a copy that stays valid)."""
        self._check()
        return PyBytes_FromStringAndSize(<char *>self.ptr, self.shape[0])

    def hex(self, *args):
        return self.tobytes().hex(*args)

    def __eq__(self, other):
        cdef Py_buffer view
        self._check()
        try:
            PyObject_GetBuffer(other, &view, PyBUF_SIMPLE)
        except (TypeError, BufferError, ValueError):
            return NotImplemented
        try:
            return view.len == self.shape[0] and memcmp(view.buf, self.ptr, <size_t>self.shape[0]) == 0
        finally:
            PyBuffer_Release(&view)

    __hash__ = None  # writable, like a memoryview of writable memory

    def __repr__(self):
        if self.generation != self.arena.generation:
            return "<fasttun.Packet (expired)>"
        return f"<fasttun.Packet {self.shape[0]} bytes>"

    def __getbuffer__(self, Py_buffer *buf, int flags):
        self._check()
        buf.buf = self.ptr
        buf.obj = self
        buf.len = self.shape[0]
        buf.readonly = 0
        buf.itemsize = 1
        buf.format = <char *>b"B" if (flags & PyBUF_FORMAT) else NULL
        buf.ndim = 1
        buf.shape = self.shape
        buf.strides = _UNIT_STRIDE  # some consumers (pyo3's PyBuffer, so `cryptography`) insist on strides
        buf.suboffsets = NULL
        buf.internal = NULL
        self.arena.exports += 1

    def __releasebuffer__(self, Py_buffer *buf):
        self.arena.exports -= 1


cdef Py_ssize_t _UNIT_STRIDE[1]
_UNIT_STRIDE[0] = 1


@cython.freelist(8)
cdef class _BatchIterator:
    cdef Batch batch
    cdef uint32_t i

    def __iter__(self):
        return self

    def __next__(self):
        cdef Batch b = self.batch
        if not b.valid:
            raise ValueError(_EPHEMERAL_MSG)
        if self.i >= b.count:
            raise StopIteration
        self.i += 1
        return b._packet(self.i - 1)


cdef Arena _receive_arena(uint32_t max_packets, uint32_t max_packet):
    """An arena that a receive of up to max_packets packets of at most max_packet bytes can fill."""
    return Arena(max_packets, ft_batch_arena_size(max_packets, max_packet))


cdef _Table _table(Arena arena, void *ptr, Py_ssize_t n, Py_ssize_t itemsize=4):
    cdef _Table t = _Table.__new__(_Table)
    t.arena = arena
    t.ptr = ptr
    t.itemsize = itemsize
    t.format = <char *>b"I" if itemsize == 4 else <char *>b"B"
    t.shape[0] = n
    return t


_EPHEMERAL_MSG = ("this Batch was valid only during the reader callback; keep what you need inside the "
                  "callback with batch.copy() or bytes(batch[i])")


cdef class Batch:
    """Packets received together, laid out back to back in one buffer.

    ``len(batch)``, ``batch[i]`` and iteration give zero-copy memoryviews; ``buffer``, ``offsets`` and
    ``lengths`` expose the whole arena for NumPy (``numpy.frombuffer(batch.lengths, numpy.uint32)``).
    A batch handed to a reader callback is valid only during that call; a batch returned by
    ``recv_batch`` stays valid as long as you keep it."""

    cdef Arena arena
    cdef uint32_t count
    cdef size_t used
    cdef bint valid
    cdef bint ephemeral
    cdef readonly bint is_super  # super-packets with their virtio-net headers (offload_mode="super")
    cdef object base          # memoryview over the arena, made on first use
    cdef list views           # every view handed out (ephemeral batches only)

    def __init__(self):
        raise TypeError("Batch objects come from recv_batch() and readers; they cannot be created directly")

    def __dealloc__(self):
        if self.arena is not None and not self.ephemeral:
            self.arena.in_batch = False

    cdef inline int _check(self) except -1:
        if not self.valid:
            raise ValueError(_EPHEMERAL_MSG)
        return 0

    cdef object _track(self, object view):
        if self.ephemeral:
            self.views.append(view)
        return view

    cdef object _base(self):
        if self.base is None:
            self.base = memoryview(self.arena)
        return self.base

    cdef Packet _packet(self, uint32_t i):
        # One small object per packet, invalidated by the arena's generation: nothing to track or release.
        cdef Packet p = Packet.__new__(Packet)
        cdef Arena a = self.arena
        p.arena = a
        p.generation = a.generation
        if not self.ephemeral:
            p.owner = self
        p.ptr = a.data + a.offsets[i]
        p.shape[0] = a.lengths[i]
        return p

    def __len__(self):
        self._check()
        return self.count

    def __getitem__(self, index):
        self._check()
        if isinstance(index, slice):
            return [self._packet(i) for i in range(*index.indices(self.count))]
        cdef Py_ssize_t i = _index(index, self.count, "batch")
        return self._packet(<uint32_t>i)

    def __iter__(self):
        self._check()
        cdef _BatchIterator it = _BatchIterator.__new__(_BatchIterator)
        it.batch = self
        return it

    def __bool__(self):
        return self.valid and self.count > 0

    def __repr__(self):
        if not self.valid:
            return "<fasttun.Batch (expired)>"
        return f"<fasttun.Batch {self.count} packets, {self.used} bytes>"

    @property
    def nbytes(self):
        """Total bytes of all packets."""
        self._check()
        return self.used

    @property
    def buffer(self):
        """All packet bytes, back to back (a writable memoryview of ``nbytes`` bytes)."""
        self._check()
        return self._track(self._base()[:self.used])

    @property
    def offsets(self):
        """Where each packet starts in ``buffer`` (memoryview of uint32, format 'I')."""
        self._check()
        return self._track(memoryview(_table(self.arena, self.arena.offsets, self.count)))

    @property
    def lengths(self):
        """Each packet's length (memoryview of uint32, format 'I')."""
        self._check()
        return self._track(memoryview(_table(self.arena, self.arena.lengths, self.count)))

    def gso(self, index):
        """Segmentation metadata of super-packet ``index`` (offload_mode="super"): a tuple (flags, gso_type,
        hdr_len, gso_size, csum_start, csum_offset) as the kernel's virtio-net header gives it."""
        self._check()
        if not self.is_super:
            raise ValueError("only batches of super-packets (offload_mode='super') carry segmentation metadata")
        cdef Py_ssize_t i = _index(index, self.count, "batch")
        cdef const uint8_t *h = self.arena.vnet + i * FT_VNET_HDR_SIZE
        cdef uint16_t f[4]
        memcpy(f, h + 2, 8)
        return (h[0], h[1], f[0], f[1], f[2], f[3])

    @property
    def vnet_headers(self):
        """The virtio-net headers of a super-packet batch, 10 bytes per packet (host byte order)."""
        self._check()
        if not self.is_super:
            raise ValueError("only batches of super-packets (offload_mode='super') carry virtio-net headers")
        return self._track(memoryview(_table(self.arena, self.arena.vnet, self.count * FT_VNET_HDR_SIZE, 1)))

    def address(self, index):
        """Where datagram ``index`` of a batch from a UDP endpoint came from: (host, port) for IPv4,
        (host, port, 0, scope_id) for IPv6; None for packets of a device."""
        self._check()
        cdef Py_ssize_t i = _index(index, self.count, "batch")
        return _endpoint_tuple(&self.arena.addrs[i])

    def copy(self):
        """The packets as a list of ``bytes`` that stay valid after the callback."""
        self._check()
        cdef uint32_t i
        cdef list out = []
        for i in range(self.count):
            out.append(PyBytes_FromStringAndSize(<char *>self.arena.data + self.arena.offsets[i],
                                                 self.arena.lengths[i]))
        return out

    cdef bint _expire(self):
        """Ends an ephemeral batch: invalidates its packets and releases the views handed out. True if the arena
        is still exported (somebody made a NumPy array or a memoryview of a packet), so it must not be reused."""
        cdef bint pinned = False
        self.valid = False
        self.arena.generation += 1
        if self.views:
            for v in self.views:
                try:
                    v.release()
                except BufferError:
                    pinned = True
            self.views.clear()
        if self.base is not None:
            try:
                self.base.release()
            except BufferError:
                pinned = True
            self.base = None
        return pinned or self.arena.exports != 0


cdef Batch _new_batch(Arena arena, uint32_t count, size_t used, bint ephemeral, bint is_super=False):
    cdef Batch b = Batch.__new__(Batch)
    b.arena = arena
    b.is_super = is_super
    b.count = count
    b.used = used
    b.valid = True
    b.ephemeral = ephemeral
    b.views = [] if ephemeral else None
    if not ephemeral:
        arena.in_batch = True
    return b


def make_batch(packets, gso=None):
    """A Batch holding copies of the given packets (bytes-like objects), e.g. to test code that takes
    batches, or to send a prepared set with send_batch. With ``gso`` (one (flags, gso_type, hdr_len,
    gso_size, csum_start, csum_offset) tuple per packet) it is a batch of super-packets for an offload device."""
    cdef list seq = list(packets)
    cdef uint32_t n = len(seq), i
    cdef uint16_t f[4]
    if n < 1 or n > 65536:
        raise ValueError(f"a batch holds 1..65536 packets, got {n}")
    cdef list meta = None if gso is None else [tuple(g) for g in gso]
    if meta is not None:
        if len(meta) != n:
            raise ValueError(f"gso needs one tuple per packet: {len(meta)} for {n} packets")
        for g in meta:
            if len(g) != 6 or not all(0 <= v <= (255 if k < 2 else 65535) for k, v in enumerate(g)):
                raise ValueError(f"gso tuple {g!r} must be (flags, gso_type, hdr_len, gso_size, csum_start, "
                                 f"csum_offset): two bytes then four 16-bit values")
    cdef list views = []
    cdef uint32_t limit = FT_MAX_PACKET if meta is None else FT_MAX_SUPER_PACKET
    cdef size_t total = 0
    for k, p in enumerate(seq):
        try:
            v = memoryview(p).cast("B")
        except (TypeError, ValueError):
            raise TypeError(f"packet {k}: a packet must be a contiguous bytes-like object, "
                            f"not {type(p).__name__}") from None
        if <size_t>v.nbytes > limit:
            raise ValueError(f"packet {k} of {v.nbytes} bytes is larger than {limit}")
        total += v.nbytes
        views.append(v)
    if total > 0xFFFFFFFF:
        raise ValueError(f"a batch holds at most 4 GiB of packets, got {total} bytes")
    # Exactly what the copies need (an empty packet still needs its slot in the tables).
    cdef Arena a = Arena(n, max(total, 1))
    cdef size_t used = 0
    cdef const uint8_t[::1] mv
    for i in range(n):
        mv = views[i]
        a.offsets[i] = <uint32_t>used
        a.lengths[i] = <uint32_t>mv.shape[0]
        if mv.shape[0]:
            memcpy(a.data + used, &mv[0], mv.shape[0])
        used += mv.shape[0]
        if meta is not None:
            g = meta[i]
            a.vnet[i * FT_VNET_HDR_SIZE] = <uint8_t>g[0]
            a.vnet[i * FT_VNET_HDR_SIZE + 1] = <uint8_t>g[1]
            f[0], f[1], f[2], f[3] = g[2], g[3], g[4], g[5]
            memcpy(a.vnet + i * FT_VNET_HDR_SIZE + 2, f, 8)
    return _new_batch(a, n, used, False, meta is not None)


# ---- devices ------------------------------------------------------------------------------------------

cdef class Device:
    """A device of the C core: a Linux TUN device, one end of an in-memory pair or a Wintun adapter."""

    cdef ft_device *dev
    cdef Arena spare          # reused by recv/recv_batch when nobody holds it any more
    cdef readonly str backend
    cdef readonly bint super_mode
    cdef object __weakref__

    def __dealloc__(self):
        if self.dev != NULL:
            with nogil:
                ft_device_free(self.dev)
            self.dev = NULL

    cdef int _adopt(self, ft_device *d) except -1:
        cdef int mode = 0
        self.dev = d
        self.backend = d.ops.name.decode()
        ft_linux_offloads(d, &mode)
        self.super_mode = mode == FT_OFFLOAD_SUPER
        _devices.add(self)
        return 0

    def offloads(self):
        """(mode, TUN_F_* bits): the offload mode (0 off, 1 segments, 2 super) and what the kernel accepted."""
        cdef int mode = 0
        cdef uint32_t bits = ft_linux_offloads(self.dev, &mode)
        return mode, bits

    @property
    def name(self):
        return self.dev.name.decode("utf-8", "replace")

    @property
    def queues(self):
        return self.dev.nqueues

    @property
    def max_packet(self):
        return self.dev.max_packet

    def close(self):
        """Closes the device: wakes every blocked call (they raise TunClosedError) and waits for them. On a
        reader thread (of any device) it only shuts the device down: waiting there could wait for itself."""
        if ft_reader_on_reader_thread():
            ft_device_shutdown(self.dev)
            return
        with nogil:
            ft_device_close(self.dev)

    def shutdown(self):
        """Marks the device closed and wakes every blocked call, without waiting for them; the device is
        released as soon as the last call in progress (a reader included) leaves. Safe in finalizers."""
        ft_device_shutdown(self.dev)

    # -- receiving --

    cdef Arena _arena(self, uint32_t max_packets):
        """An idle arena for a synchronous receive, marked busy (in_batch) so that no other thread takes it
        while this one waits without the GIL."""
        cdef Arena a = self.spare
        if a is None or not a.idle() or a.max < max_packets:
            a = _receive_arena(max_packets, self.dev.max_packet)
            self.spare = a
        a.in_batch = True
        return a

    cdef int _recv(self, int queue, ft_batch *b, object timeout) except -1:
        """Fills b; returns the packet count, or 0 when the timeout passed. Waits in slices so that
        signals (Ctrl-C) are handled promptly."""
        cdef int total_ms = _timeout_ms(timeout)
        cdef int slice_ms, r
        cdef ft_err e
        deadline = None if total_ms < 0 else _time.monotonic() + total_ms / 1000.0
        while True:
            if deadline is None:
                slice_ms = SLICE_MS
            else:
                left = deadline - _time.monotonic()
                slice_ms = 0 if left <= 0 else min(SLICE_MS, <int>(left * 1000.0 + 0.999))
            with nogil:
                r = ft_device_recv(self.dev, queue, b, slice_ms, NULL, &e)
            if r > 0:
                return r
            if r != FT_ETIMEDOUT:
                _raise(&e)
            PyErr_CheckSignals()
            if slice_ms == 0 or (deadline is not None and _time.monotonic() >= deadline):
                return 0

    def recv(self, int queue=FT_ALL_QUEUES, timeout=None):
        cdef ft_batch b
        cdef Arena a = self._arena(1)
        try:
            a.attach(&b)
            b.max = 1
            if self._recv(queue, &b, timeout) == 0:
                return None
            return PyBytes_FromStringAndSize(<char *>b.data + b.offsets[0], b.lengths[0])
        finally:
            a.in_batch = False

    def recv_into(self, buffer, int queue=FT_ALL_QUEUES, timeout=None):
        """Receives one packet into buffer; returns its length, 0 on timeout. A packet larger than the
        buffer is kept and returned by the next receive, and ValueError says how large it is."""
        cdef Py_buffer view
        cdef ft_batch b
        cdef Arena a
        _get_buffer(buffer, &view, PyBUF_SIMPLE | PyBUF_WRITABLE, "recv_into needs a writable contiguous buffer")
        try:
            a = self._arena(1)
            try:
                a.attach(&b)
                b.max = 1
                if self._recv(queue, &b, timeout) == 0:
                    return 0
                if b.lengths[0] > <size_t>view.len:
                    packet = PyBytes_FromStringAndSize(<char *>b.data + b.offsets[0], b.lengths[0])
                    raise _errors._TooSmall(packet, view.len)
                memcpy(view.buf, b.data + b.offsets[0], b.lengths[0])
                return b.lengths[0]
            finally:
                a.in_batch = False
        finally:
            PyBuffer_Release(&view)

    def recv_batch(self, uint32_t max_packets, int queue=FT_ALL_QUEUES, timeout=None):
        cdef ft_batch b
        cdef Arena a = self._arena(max_packets)
        a.attach(&b)
        b.max = max_packets
        cdef int n
        try:
            n = self._recv(queue, &b, timeout)
        except BaseException:
            a.in_batch = False
            raise
        # The batch owns the arena until the user drops it; then the next call may reuse it.
        return _new_batch(a, <uint32_t>n, b.used, False, self.super_mode)

    # -- sending --

    cdef int _send(self, int queue, ft_pkt *pkts, const uint8_t *hdrs, uint32_t n, int policy,
                   object timeout) except -1:
        """Sends n packets (super-packets with their headers when hdrs is set). Under the "wait" policy it waits
        in slices so that Ctrl-C is seen; every exception raised, KeyboardInterrupt included, carries
        ``sent``: how many of the packets went."""
        cdef int total_ms = _timeout_ms(timeout)
        cdef int slice_ms = total_ms
        cdef uint32_t done = 0, sent = 0
        cdef int r
        cdef ft_err e
        deadline = None if total_ms < 0 else _time.monotonic() + total_ms / 1000.0
        while True:
            if policy == FT_FULL_WAIT:
                if deadline is None:
                    slice_ms = SLICE_MS
                else:
                    left = deadline - _time.monotonic()
                    slice_ms = 0 if left <= 0 else min(SLICE_MS, <int>(left * 1000.0 + 0.999))
            with nogil:
                if hdrs != NULL:
                    r = ft_device_send_vnet(self.dev, queue, pkts + done, hdrs + <size_t>done * FT_VNET_HDR_SIZE,
                                            n - done, policy, slice_ms, NULL, &e)
                else:
                    r = ft_device_send(self.dev, queue, pkts + done, n - done, policy, slice_ms, NULL, &e)
            if r >= 0:
                return <int>(sent + <uint32_t>r)
            if r != FT_ETIMEDOUT:
                if r == FT_EPACKET or r == FT_EREFUSED:
                    e.index += done
                _raise_sent(&e, sent + e.sent)
            # Timed out waiting for room: resume after what went (and what the system refused).
            sent += e.sent
            done += <uint32_t>e.index
            try:
                PyErr_CheckSignals()
            except BaseException as exc:
                exc.sent = sent
                raise
            if slice_ms == 0 or (deadline is not None and _time.monotonic() >= deadline):
                ft_device_count_tx_drops(self.dev, n - done)
                return <int>sent

    def send(self, packet, int queue=0, int policy=FT_FULL_DROP, timeout=None):
        cdef Py_buffer view
        cdef ft_pkt pkt
        _get_buffer(packet, &view, PyBUF_SIMPLE, "a packet must be a contiguous bytes-like object")
        try:
            pkt.data = <const uint8_t *>view.buf
            pkt.len = <size_t>view.len
            return self._send(queue, &pkt, NULL, 1, policy, timeout)
        finally:
            PyBuffer_Release(&view)

    def send_batch(self, packets, int queue=0, int policy=FT_FULL_DROP, timeout=None):
        if isinstance(packets, Batch):
            return self._send_arena(<Batch>packets, queue, policy, timeout)
        # A tuple of our own: a packet's buffer export runs arbitrary code (PEP 688 __buffer__) that could
        # shrink or refill the caller's list under the loop below; the tuple also keeps every packet alive.
        cdef tuple seq = tuple(packets)
        cdef Py_ssize_t n = len(seq)
        if n == 0:
            return 0
        if n > 0x7fffffff:
            raise ValueError(f"at most 2147483647 packets per call, got {n}")
        cdef Py_buffer small_views[SMALL]
        cdef ft_pkt small_pkts[SMALL]
        cdef Py_buffer *views = small_views
        cdef ft_pkt *pkts = small_pkts
        cdef Py_ssize_t got = 0, i
        if n > SMALL:
            views = <Py_buffer *>PyMem_Malloc(n * sizeof(Py_buffer))
            pkts = <ft_pkt *>PyMem_Malloc(n * sizeof(ft_pkt))
            if views == NULL or pkts == NULL:
                PyMem_Free(views)
                PyMem_Free(pkts)
                raise MemoryError(f"cannot hold {n} packet references")
        try:
            for i in range(n):
                item = seq[i]
                _get_buffer(item, &views[i], PyBUF_SIMPLE,
                            f"packet {i}: a packet must be a contiguous bytes-like object (nothing was sent)")
                got += 1
                pkts[i].data = <const uint8_t *>views[i].buf
                pkts[i].len = <size_t>views[i].len
            return self._send(queue, pkts, NULL, <uint32_t>n, policy, timeout)
        finally:
            for i in range(got):
                PyBuffer_Release(&views[i])
            if views != small_views:
                PyMem_Free(views)
                PyMem_Free(pkts)

    cdef int _send_arena(self, Batch batch, int queue, int policy, object timeout) except -1:
        batch._check()
        cdef uint32_t n = batch.count, i
        if n == 0:
            return 0
        cdef ft_pkt small_pkts[SMALL]
        cdef ft_pkt *pkts = small_pkts
        if n > SMALL:
            pkts = <ft_pkt *>PyMem_Malloc(n * sizeof(ft_pkt))
            if pkts == NULL:
                raise MemoryError(f"cannot hold {n} packet references")
        cdef Arena a = batch.arena
        a.exports += 1   # the arena must not be recycled while the GIL is released
        try:
            for i in range(n):
                pkts[i].data = a.data + a.offsets[i]
                pkts[i].len = a.lengths[i]
            # Super-packets go out whole with their headers, to a device opened with offload.
            return self._send(queue, pkts, a.vnet if batch.is_super else NULL, n, policy, timeout)
        finally:
            a.exports -= 1
            if pkts != small_pkts:
                PyMem_Free(pkts)

    # -- readers --

    def start_reader(self, int queue, callback, uint32_t batch_size, uint32_t spin_us, bint adaptive,
                     uint32_t adaptive_pps, int pipeline=0):
        return QueueReader._start(self, queue, callback, batch_size, spin_us, adaptive, adaptive_pps, pipeline)

    # -- configuration --

    def get_mtu(self):
        cdef uint32_t v = 0
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_get_mtu(self.dev, &v, &e)
        if r != FT_OK:
            _raise(&e)
        return v

    def set_mtu(self, uint32_t mtu):
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_set_mtu(self.dev, mtu, &e)
        if r != FT_OK:
            _raise(&e)

    def set_up(self, bint up):
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_set_up(self.dev, up, &e)
        if r != FT_OK:
            _raise(&e)

    def is_up(self):
        cdef int up = 0
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_is_up(self.dev, &up, &e)
        if r != FT_OK:
            _raise(&e)
        return bool(up)

    def get_index(self):
        cdef uint32_t v = 0
        cdef ft_err e
        cdef int r = ft_device_get_index(self.dev, &v, &e)
        if r != FT_OK:
            _raise(&e)
        return v

    def get_txqueuelen(self):
        cdef uint32_t v = 0
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_get_txqueuelen(self.dev, &v, &e)
        if r != FT_OK:
            _raise(&e)
        return v

    def set_txqueuelen(self, uint32_t v):
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_set_txqueuelen(self.dev, v, &e)
        if r != FT_OK:
            _raise(&e)

    def address(self, int family, bytes packed, int prefix, bint add):
        cdef ft_addr a
        cdef ft_err e
        cdef int r
        memset(&a, 0, sizeof(a))
        if family not in (4, 6) or len(packed) != (4 if family == 4 else 16):
            raise ValueError("address must be 4 bytes (IPv4) or 16 bytes (IPv6)")
        if prefix < 0 or prefix > (32 if family == 4 else 128):
            raise ValueError(f"prefix length {prefix} is out of range for IPv{family}")
        a.family = family
        a.prefix = <uint8_t>prefix
        memcpy(a.bytes, <const char *>packed, len(packed))
        with nogil:
            r = ft_device_add_address(self.dev, &a, &e) if add else ft_device_del_address(self.dev, &a, &e)
        if r != FT_OK:
            _raise(&e)

    def list_addresses(self):
        cdef ft_addr buf[256]
        cdef uint32_t n = 0, i
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_list_addresses(self.dev, buf, 256, &n, &e)
        if r != FT_OK:
            _raise(&e)
        out = []
        for i in range(min(n, 256)):
            out.append((buf[i].family, (<char *>buf[i].bytes)[:4 if buf[i].family == 4 else 16], buf[i].prefix))
        return out

    def fileno(self, int queue=0):
        cdef ft_err e
        cdef int fd = ft_linux_fd(self.dev, queue, &e)
        if fd < 0:
            _raise(&e)
        return fd

    def set_persist(self, bint persist):
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_linux_set_persist(self.dev, persist, &e)
        if r != FT_OK:
            _raise(&e)

    def stats(self):
        cdef ft_stats s
        ft_device_get_stats(self.dev, &s)
        return s

    # -- Wintun --

    def wintun_info(self):
        """(luid, created, ring_capacity, ring_grows) of a Wintun device."""
        return (ft_wintun_luid(self.dev), bool(ft_wintun_created(self.dev)), ft_wintun_ring_capacity(self.dev),
                ft_wintun_ring_grows(self.dev))

    def wintun_guid(self):
        cdef uint8_t g[16]
        cdef ft_err e
        if ft_wintun_guid(self.dev, g, &e) != FT_OK:
            _raise(&e)
        return (<char *>g)[:16]

    def route(self, int family, bytes dest, int prefix, gateway, uint32_t metric, bint add):
        cdef ft_route rt
        cdef ft_err e
        cdef int r
        cdef int alen = 4 if family == 4 else 16
        memset(&rt, 0, sizeof(rt))
        if family not in (4, 6) or len(dest) != alen or (gateway is not None and len(gateway) != alen):
            raise ValueError("route addresses must be 4 bytes (IPv4) or 16 bytes (IPv6)")
        rt.family = family
        rt.prefix = <uint8_t>prefix
        rt.metric = metric
        memcpy(rt.dest, <const char *>dest, alen)
        if gateway is not None:
            rt.has_gateway = 1
            memcpy(rt.gateway, <const char *>gateway, alen)
        with nogil:
            r = ft_device_route(self.dev, add, &rt, &e)
        if r != FT_OK:
            _raise(&e)

    def wintun_set_dns(self, servers):
        cdef ft_addr buf[16]
        cdef ft_err e
        cdef uint32_t n = 0
        cdef int r
        for family, packed in servers:
            if n >= 16:
                raise ValueError("at most 16 DNS servers")
            memset(&buf[n], 0, sizeof(ft_addr))
            buf[n].family = family
            buf[n].prefix = 32 if family == 4 else 128
            memcpy(buf[n].bytes, <const char *>packed, len(packed))
            n += 1
        with nogil:
            r = ft_wintun_set_dns(self.dev, buf, n, &e)
        if r != FT_OK:
            _raise(&e)

    def os_drops(self):
        """(dropped before we could read them, dropped after we sent them) as the OS counts them, or
        (0, 0) where the backend has no such counters."""
        cdef uint64_t rx = 0, tx = 0
        cdef ft_err e
        cdef int r
        with nogil:
            r = ft_device_os_drops(self.dev, &rx, &tx, &e)
        if r == FT_EUNSUPPORTED:
            return 0, 0
        if r != FT_OK:
            _raise(&e)
        return rx, tx


# ---- constructors --------------------------------------------------------------------------------------

def open_pair(uint32_t mtu, uint32_t capacity, uint32_t capacity_bytes):
    cdef ft_device *a = NULL
    cdef ft_device *b = NULL
    cdef ft_err e
    if ft_memory_pair(mtu, capacity, capacity_bytes, &a, &b, &e) != FT_OK:
        _raise(&e)
    cdef Device da = Device.__new__(Device)
    cdef Device db = Device.__new__(Device)
    da._adopt(a)
    db._adopt(b)
    return da, db


def open_linux(name, int queues, int persist, bint must_exist, bint must_create, uint32_t mtu, dev_path=None,
               int offload=0):
    cdef ft_linux_params p
    cdef ft_device *d = NULL
    cdef ft_err e
    cdef int r
    bname = name.encode() if name else b""
    bpath = dev_path.encode() if dev_path else None
    if b"\0" in bname:
        raise ValueError(f"interface name {name!r} contains a NUL character; printable ASCII without spaces, "
                         f"'/' or ':' is allowed")
    memset(&p, 0, sizeof(p))
    p.name = bname
    p.queues = queues
    p.persist = persist
    p.must_exist = must_exist
    p.must_create = must_create
    p.mtu = mtu
    p.dev_path = NULL if bpath is None else <const char *>bpath
    p.offload = offload
    with nogil:
        r = ft_linux_open(&p, &d, &e)
    if r != FT_OK:
        _raise(&e)
    cdef Device dev = Device.__new__(Device)
    dev._adopt(d)
    return dev


def open_wintun(str name, str tunnel_type, guid, uint32_t ring_capacity, int open_existing, uint32_t mtu,
                bint auto_ring=False, bint coalesce=False):
    """open_existing: 0 create, 1 open an existing adapter, 2 open or create. auto_ring: start at
    ring_capacity and double it when the rings overflow; coalesce: merge TCP segments on send."""
    cdef ft_wintun_params p
    cdef ft_device *d = NULL
    cdef ft_err e
    cdef int r
    bname = name.encode("utf-8")
    btype = tunnel_type.encode("utf-8")
    if b"\0" in bname or b"\0" in btype:
        raise ValueError("an adapter name or tunnel type cannot contain a NUL character")
    cdef bytes bguid = guid
    memset(&p, 0, sizeof(p))
    p.name = bname
    p.tunnel_type = btype
    p.guid = NULL if bguid is None else <const uint8_t *><const char *>bguid
    p.ring_capacity = ring_capacity
    p.open_existing = open_existing
    p.mtu = mtu
    p.flags = (FT_WINTUN_AUTO_RING if auto_ring else 0) | (FT_WINTUN_COALESCE if coalesce else 0)
    with nogil:
        r = ft_wintun_open(&p, &d, &e)
    if r != FT_OK:
        _raise(&e)
    cdef Device dev = Device.__new__(Device)
    dev._adopt(d)
    return dev


cdef extern from "Python.h":
    wchar_t *PyUnicode_AsWideCharString(object text, Py_ssize_t *size) except NULL


def wintun_load(path):
    """Loads wintun.dll from an absolute path, or from System32 when path is None."""
    cdef wchar_t *wide = NULL
    cdef ft_err e
    cdef int r
    if path is not None:
        wide = PyUnicode_AsWideCharString(str(path), NULL)
    try:
        r = ft_wintun_load(wide, &e)
    finally:
        if wide != NULL:
            PyMem_Free(wide)
    if r != FT_OK:
        _raise(&e)


def wintun_loaded():
    return bool(ft_wintun_loaded())


def wintun_driver_version():
    """(major, minor) of the running Wintun driver, or None when no driver is loaded."""
    cdef uint32_t v = 0
    cdef ft_err e
    cdef int r = ft_wintun_driver_version(&v, &e)
    if r == FT_WINTUN_DRIVER_NOT_LOADED:
        return None
    if r != FT_OK:
        _raise(&e)
    return (v >> 16, v & 0xFFFF)


def wintun_delete_driver():
    cdef ft_err e
    cdef int r
    with nogil:
        r = ft_wintun_delete_driver(&e)
    if r != FT_OK:
        _raise(&e)


_wintun_log_sink = None


cdef void _wintun_log(int level, uint64_t timestamp, const char *msg) noexcept nogil:
    with gil:
        sink = _wintun_log_sink
        if sink is not None:
            try:
                sink(level, timestamp, msg.decode("utf-8", "replace"))
            except BaseException:
                pass  # a logging failure must never reach Wintun's thread


def wintun_set_log_sink(sink):
    """sink(level, filetime_100ns, message) receives Wintun's log lines from any thread; None stops it."""
    global _wintun_log_sink
    _wintun_log_sink = sink
    if sink is None:
        ft_wintun_set_logger(NULL)
    else:
        ft_wintun_set_logger(_wintun_log)


def linux_features():
    cdef uint32_t flags = 0
    cdef ft_err e
    if ft_linux_features(&flags, &e) != FT_OK:
        _raise(&e)
    return flags


def icmp_echo_reply(packet):
    """The echo reply (bytes) for an IPv4 ICMP or IPv6 ICMPv6 echo request; None for any other packet."""
    cdef Py_buffer view
    cdef size_t n
    _get_buffer(packet, &view, PyBUF_SIMPLE, "a packet must be a contiguous bytes-like object")
    try:
        if view.len < 28 or (((<const uint8_t *>view.buf)[0] >> 4) != 4 and ((<const uint8_t *>view.buf)[0] >> 4) != 6):
            return None
        reply = PyBytes_FromStringAndSize(NULL, view.len)
        n = ft_icmp_echo_reply(<const uint8_t *>view.buf, <size_t>view.len, <uint8_t *>PyBytes_AS_STRING(reply),
                               <size_t>view.len)
        if n == 0:
            return None
        return reply if n == <size_t>view.len else reply[:n]
    finally:
        PyBuffer_Release(&view)


def inet_checksum(data, uint32_t initial=0):
    """The Internet checksum (RFC 1071) of data, folded to 16 bits, starting from a partial sum `initial`."""
    cdef Py_buffer view
    _get_buffer(data, &view, PyBUF_SIMPLE, "data must be a contiguous bytes-like object")
    try:
        return ft_inet_checksum(<const uint8_t *>view.buf, <size_t>view.len, initial)
    finally:
        PyBuffer_Release(&view)


def check_packet(packet, uint32_t mtu=FT_MAX_PACKET):
    """Raises ValueError if packet is not an IPv4/IPv6 packet of an allowed size."""
    cdef Py_buffer view
    cdef ft_err e
    _get_buffer(packet, &view, PyBUF_SIMPLE, "a packet must be a contiguous bytes-like object")
    try:
        if ft_packet_check(<const uint8_t *>view.buf, <size_t>view.len, mtu, &e) != FT_OK:
            _raise(&e)
    finally:
        PyBuffer_Release(&view)


# ---- readers -------------------------------------------------------------------------------------------

cdef extern from "Python.h":
    ctypedef int PyGILState_STATE
    ctypedef struct PyThreadState:
        pass
    PyGILState_STATE PyGILState_Ensure() nogil
    void PyGILState_Release(PyGILState_STATE state) nogil
    PyThreadState *PyEval_SaveThread() nogil
    void PyEval_RestoreThread(PyThreadState *tstate) nogil


cdef struct ReaderGlue:
    PyObject *reader          # the QueueReader (kept alive by _running while the thread runs)
    PyGILState_STATE gil_state
    PyThreadState *tstate


# Every reader whose thread has started and not yet ended, owned here: a thread must never run on a freed
# object, and at exit and after fork() we need them all. The thread removes its reader when it ends.
cdef set _running = set()
# Every open device, for fork(): the child's copies must forget the parent's readers and calls.
_devices = _weakref.WeakSet()


cdef int _on_batch(void *user, ft_batch *b) noexcept nogil:
    with gil:
        return (<QueueReader>(<ReaderGlue *>user).reader)._deliver(b)


# The reader thread keeps one Python thread state for its whole life; without it every batch would create and
# destroy one inside `with gil` (several microseconds each).
cdef void _reader_thread_start(void *user) noexcept nogil:
    cdef ReaderGlue *g = <ReaderGlue *>user
    g.gil_state = PyGILState_Ensure()
    g.tstate = PyEval_SaveThread()


cdef void _reader_thread_end(void *user) noexcept nogil:
    cdef ReaderGlue *g = <ReaderGlue *>user
    cdef PyGILState_STATE state = g.gil_state
    PyEval_RestoreThread(g.tstate)
    with gil:  # held already; this only tells Cython so
        # This may free the reader (and g with it), even the device: nothing of theirs is touched afterwards.
        _running.discard(<object>g.reader)
    PyGILState_Release(state)


def _after_fork_in_child():
    """The child of a fork() has none of the parent's reader threads: forget them and every call in progress,
    so that nothing in the child waits for them (close() returns, every use raises TunClosedError)."""
    cdef QueueReader q
    cdef Device d
    for q in list(_running):
        if q.reader != NULL:
            ft_reader_forget_after_fork(q.reader)
    _running.clear()
    for d in list(_devices):
        if d.dev != NULL:
            ft_device_forget_after_fork(d.dev)


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


def running_readers():
    """The readers whose threads are running (for the exit handler)."""
    return list(_running)


def on_reader_thread():
    """True on a reader thread of any device: code there must not wait for a device to close."""
    return bool(ft_reader_on_reader_thread())


cdef class QueueReader:
    """One reader thread on one queue of a device."""

    cdef ft_reader *reader
    cdef ft_batch bs[FT_READER_MAX_PIPELINE]   # one per batch in flight
    cdef list arenas                            # the Arena behind each of bs
    cdef uint32_t batch_size
    cdef Device device
    cdef Batch batch
    cdef object callback
    cdef readonly int queue
    cdef readonly object exception
    cdef readonly uint64_t arena_swaps
    cdef ReaderGlue glue

    @staticmethod
    cdef QueueReader _start(Device device, int queue, callback, uint32_t batch_size, uint32_t spin_us,
                            bint adaptive, uint32_t adaptive_pps, int pipeline):
        cdef QueueReader q = QueueReader.__new__(QueueReader)
        cdef ft_reader_config cfg
        cdef ft_err e
        if batch_size < 1 or batch_size > 65536:
            raise ValueError(f"batch_size {batch_size} is out of range; allowed: 1..65536")
        if pipeline < 0 or pipeline > FT_READER_MAX_PIPELINE:
            raise ValueError(f"pipeline {pipeline} is out of range; allowed: 0..{FT_READER_MAX_PIPELINE}")
        q.device = device
        q.queue = queue
        q.callback = callback
        q.batch_size = batch_size
        q.arenas = [_receive_arena(batch_size, device.dev.max_packet) for _ in range(max(pipeline, 1))]
        for k in range(len(q.arenas)):
            (<Arena>q.arenas[k]).attach(&q.bs[k])
        cfg.batch_size = batch_size
        cfg.pipeline = <uint32_t>pipeline
        cfg.spin_us = spin_us
        cfg.adaptive = adaptive
        cfg.adaptive_pps = adaptive_pps
        cfg.thread_start = _reader_thread_start
        cfg.thread_end = _reader_thread_end
        # The thread refers to q without owning a Python reference: _running owns one until the thread ends.
        _running.add(q)
        q.glue.reader = <PyObject *>q
        q.reader = ft_reader_start(device.dev, queue, &cfg, q.bs, _on_batch, &q.glue, &e)
        if q.reader == NULL:
            _running.discard(q)
            _raise(&e)
        return q

    def __dealloc__(self):
        # Runs once the thread has ended (or on the thread itself, at its very end): never waits for long.
        if self.reader != NULL:
            with nogil:
                ft_reader_free(self.reader)
            self.reader = NULL

    cdef int _deliver(self, ft_batch *b):
        cdef Py_ssize_t slot = b - self.bs
        cdef Arena arena = <Arena>self.arenas[slot]
        cdef Batch batch = self.batch
        if batch is None or batch.valid:
            batch = _new_batch(arena, b.count, b.used, True, self.device.super_mode)
        else:
            batch.arena = arena
            batch.count = b.count
            batch.used = b.used
            batch.valid = True
        self.batch = None
        cdef int stop = 0
        try:
            self.callback(batch)
        except BaseException as exc:
            self.exception = exc
            stop = 1
        if batch._expire():
            # Somebody still holds a buffer into this arena: leave it to them and read into a new one.
            arena = _receive_arena(arena.max, self.device.dev.max_packet)
            self.arenas[slot] = arena
            arena.attach(b)
            b.max = self.batch_size
            self.arena_swaps += 1
            batch.arena = arena
        # Reuse the Batch object next time unless the callback kept a reference to it.
        if _refcount(batch) == 1:
            self.batch = batch
        return stop

    def request_stop(self):
        if self.reader != NULL:
            ft_reader_request_stop(self.reader)

    def join(self, timeout=None):
        """Waits for the thread to end; True once it has. Handles Ctrl-C between slices."""
        cdef int r
        cdef int slice_ms
        if self.reader == NULL:
            return True
        if ft_reader_is_current_thread(self.reader):
            raise RuntimeError("a reader cannot wait for itself: call stop() from another thread, or return "
                               "from the callback after requesting the stop")
        total = _timeout_ms(timeout)
        deadline = None if total < 0 else _time.monotonic() + total / 1000.0
        while True:
            if deadline is None:
                slice_ms = SLICE_MS
            else:
                left = deadline - _time.monotonic()
                slice_ms = 0 if left <= 0 else min(SLICE_MS, <int>(left * 1000.0 + 0.999))
            with nogil:
                r = ft_reader_join(self.reader, slice_ms)
            if r == FT_OK:
                return True
            PyErr_CheckSignals()
            if slice_ms == 0 or (deadline is not None and _time.monotonic() >= deadline):
                return False

    @property
    def state(self):
        return ft_reader_state(self.reader) if self.reader != NULL else FT_READER_STOPPED

    def error(self):
        """The exception for a reader that ended because of the device (None otherwise)."""
        cdef ft_err e
        if self.reader == NULL or ft_reader_state(self.reader) != FT_READER_FAILED:
            return None
        ft_reader_error(self.reader, &e)
        return _exception(&e)

    def stats(self):
        cdef ft_reader_stats s
        ft_reader_get_stats(self.reader, &s)
        return s

    def is_current_thread(self):
        return self.reader != NULL and ft_reader_is_current_thread(self.reader)


cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT(object o)


cdef inline Py_ssize_t _refcount(object o):
    return Py_REFCNT(o)


READER_RUNNING = FT_READER_RUNNING
READER_STOPPED = FT_READER_STOPPED
READER_CALLBACK_STOPPED = FT_READER_CALLBACK_STOPPED
READER_FAILED = FT_READER_FAILED


# ---- device events (Linux rtnetlink) -------------------------------------------------------------------
include "_events.pxi"

# ---- UDP endpoints -------------------------------------------------------------------------------------
include "_udp.pxi"

# ---- batch builders ------------------------------------------------------------------------------------
include "_builder.pxi"
