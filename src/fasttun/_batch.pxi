# Arenas, batches and the packets in them. Included by _core.pyx.

# Declared here rather than cimported: cpython.long's PyLong_AsSsize_t raises OverflowError itself, and the fast
# index paths below turn an overflow into IndexError without the cost of an exception frame.
cdef extern from "Python.h":
    Py_ssize_t _long_as_ssize "PyLong_AsSsize_t"(object o)   # -1 with an error set on overflow: caller checks


cdef Py_ssize_t _index(object index, Py_ssize_t n, str what) except -1:
    """index (negative counts from the end) as a position in 0..n-1, else IndexError (also for huge ints)."""
    cdef Py_ssize_t i
    if PyLong_CheckExact(index):   # the common case, without an exception frame
        i = _long_as_ssize(index)
        if i == -1 and PyErr_Occurred():
            PyErr_Clear()
            raise IndexError(f"{what} index {index} out of range for {n}")
    else:
        try:
            i = index
        except OverflowError:
            raise IndexError(f"{what} index {index} out of range for {n}") from None
    if i < 0:
        i += n
    if i < 0 or i >= n:
        raise IndexError(f"{what} index {index} out of range for {n}")
    return i


cdef inline void _fill_buffer(Py_buffer *buf, void *ptr, Py_ssize_t count, Py_ssize_t itemsize, bint readonly,
                              char *fmt, Py_ssize_t *shape, Py_ssize_t *strides, int flags) noexcept:
    """The one-dimensional export every buffer of this module makes (the caller sets buf.obj and counts it)."""
    buf.buf = ptr
    buf.len = count * itemsize
    buf.readonly = readonly
    buf.itemsize = itemsize
    buf.format = fmt if (flags & PyBUF_FORMAT) else NULL
    buf.ndim = 1
    buf.shape = shape
    buf.strides = strides
    buf.suboffsets = NULL
    buf.internal = NULL


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
        buf.obj = self
        _fill_buffer(buf, self.data, <Py_ssize_t>self.cap, 1, 0, <char *>b"B",
                     self.shape if (flags & PyBUF_ND) else NULL, self.strides if (flags & PyBUF_ND) else NULL, flags)
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
        self.strides[0] = self.itemsize
        buf.obj = self
        _fill_buffer(buf, self.ptr, self.shape[0], self.itemsize, 1, self.format, self.shape, self.strides, flags)
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
        if PyLong_CheckExact(index):
            # The common p[0]: no exception frame; anything unusual (huge, out of range) takes the checked path.
            i = _long_as_ssize(index)
            if i < 0:
                if i == -1 and PyErr_Occurred():
                    PyErr_Clear()
                else:
                    i += self.shape[0]
            if 0 <= i < self.shape[0]:
                return self.ptr[i]
        elif isinstance(index, slice):
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
        buf.obj = self
        # strides always: some consumers (pyo3's PyBuffer, so `cryptography`) insist on them
        _fill_buffer(buf, self.ptr, self.shape[0], 1, 0, <char *>b"B", self.shape, _UNIT_STRIDE, flags)
        self.arena.exports += 1

    def __releasebuffer__(self, Py_buffer *buf):
        self.arena.exports -= 1


cdef Py_ssize_t _UNIT_STRIDE[1]
_UNIT_STRIDE[0] = 1


@cython.final
@cython.freelist(8)
cdef class _BatchIterator:
    # Hands out Packet objects, reusing one whose only reference is this iterator's own: nobody else can see it
    # change. In `for p in batch`, p still holds the last packet while the next is made, so the one before the
    # last is the candidate; a packet kept anywhere (a list, a buffer export, a variable) has more references and
    # is never touched again, so it keeps its generation and expires with its batch.
    cdef Batch batch
    cdef uint32_t i
    cdef Packet last            # returned by the previous call
    cdef Packet prev            # returned by the call before that: reused if nobody else holds it

    def __iter__(self):
        return self

    def __next__(self):
        cdef Packet p
        cdef uint32_t i = self.i
        if not self.batch.valid:
            raise ValueError(_EPHEMERAL_MSG)
        if i >= self.batch.count:
            raise StopIteration
        self.i = i + 1
        if _sole_reference(<PyObject *>self.prev):
            p = self.prev
            _refill(p, self.batch.arena, i)
            self.prev, self.last = self.last, p     # a swap of the two: no references change hands
        else:
            p = self.batch._packet(i)
            self.prev = self.last
            self.last = p
        return p


cdef inline bint _sole_reference(PyObject *o) noexcept:
    """True if the one reference to o is the caller's (a borrowed look at an attribute, no new reference taken)."""
    return _Py_REFCNT(o) == 1


cdef inline void _refill(Packet p, Arena a, uint32_t i) noexcept:
    """Points a Packet that nobody else holds at packet i of arena a, in the arena's current generation."""
    if p.arena is not a:
        p.arena = a
    p.generation = a.generation
    p.ptr = a.data + a.offsets[i]
    p.shape[0] = a.lengths[i]


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

    ``len(batch)``, ``batch[i]`` and iteration give zero-copy :class:`Packet` objects (bytes-like, usable where a
    memoryview of the packet would be); ``buffer``, ``offsets`` and
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
    # batch[i] of an ephemeral batch reuses a Packet that only this batch still holds (see _BatchIterator);
    # not for other batches, whose packets refer to the batch (that would be a reference cycle).
    cdef Packet spare_last
    cdef Packet spare_prev

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
        if not self.ephemeral:
            return self._packet(<uint32_t>i)
        cdef Packet p
        if _sole_reference(<PyObject *>self.spare_prev):
            p = self.spare_prev
            _refill(p, self.arena, <uint32_t>i)
        else:
            p = self._packet(<uint32_t>i)
        self.spare_prev = self.spare_last
        self.spare_last = p
        return p

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
    if n < 1 or n > FT_MAX_BATCH:
        raise ValueError(f"a batch holds 1..{FT_MAX_BATCH} packets, got {n}")
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
