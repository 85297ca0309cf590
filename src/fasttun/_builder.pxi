# ---- batch builders (pure Cython over an Arena), included at the end of _core.pyx ----------------------------
# A builder writes transformed packets (an encrypted datagram, an encapsulated packet) back to back into one
# arena allocated once, and hands them out as a Batch that send_batch takes: no Python object per packet
# beyond the writable Packet view that reserve() returns.

BUILDER_MAX_PACKET = 65535
BUILDER_MAX_PACKETS = FT_MAX_BATCH
BUILDER_MAX_CAPACITY = 1 << 31


cdef inline size_t _ip_length(const uint8_t *p, size_t room) noexcept nogil:
    """The length of the IPv4/IPv6 packet at p as its header gives it, or 0 unless a whole one lies in room; a
    packet behind a remote-checksum header (byte 0x1f, see LinuxTun(remote_csum=True)) counts with its 4 bytes
    (the device that takes it checks the header)."""
    cdef size_t n
    if room > FT_RCSUM_HDR_SIZE and p[0] == FT_RCSUM_MAGIC:
        n = _ip_length(p + FT_RCSUM_HDR_SIZE, room - FT_RCSUM_HDR_SIZE)
        return n + FT_RCSUM_HDR_SIZE if n else 0
    if room >= 20 and p[0] >> 4 == 4:
        n = (<size_t>p[2] << 8) | p[3]
        return n if 20 <= n <= room else 0
    if room >= 40 and p[0] >> 4 == 6:
        n = 40 + ((<size_t>p[4] << 8) | p[5])
        return n if n <= room else 0
    return 0


_SSIZE_MAX = PY_SSIZE_T_MAX


cdef object _int_arg(object value, str what, object low, object high):
    """An int argument in low..high for the builder's own limits (its values never reach the C core): TypeError
    unless an int, ValueError saying what is allowed, never OverflowError."""
    _int_type(value, what)
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range; allowed: {low}..{high}")
    return value


cdef class BatchBuilder:
    """Builds a Batch in a preallocated arena: ``reserve(n, prefix)`` appends a packet and returns a writable
    view of its ``n`` bytes after ``prefix`` to fill in place (e.g. ``aead.encrypt_into(..., view)``),
    ``append(data)`` copies one, ``batch()`` hands the packets out as a Batch, ``clear()`` starts again.

    A Batch handed out is never overwritten: while anybody holds it (or one of its packets, or a buffer of
    them), ``clear()`` moves the builder to a fresh arena instead of reusing this one. Views from ``reserve()``
    expire (ValueError on use) when ``clear()`` reuses the arena."""

    cdef Arena arena
    cdef uint32_t count
    cdef size_t used
    cdef uint32_t frozen        # the most packets of a Batch handed out since clear()
    cdef list handed            # the Batches handed out from this arena
    cdef list views             # (packet index, view) for what reserve() handed out since clear(), in order
    cdef readonly uint32_t max_packets
    cdef readonly size_t capacity
    cdef readonly uint64_t arena_swaps   # times clear() found a batch still held and took a fresh arena

    def __cinit__(self, max_packets=64, capacity=65536):
        if isinstance(max_packets, bool) or not isinstance(max_packets, int):
            raise TypeError(f"max_packets must be an int, not {type(max_packets).__name__}")
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if not 1 <= max_packets <= BUILDER_MAX_PACKETS:
            raise ValueError(f"max_packets {max_packets} is out of range; allowed: 1..{BUILDER_MAX_PACKETS}")
        if not 1 <= capacity <= BUILDER_MAX_CAPACITY:
            raise ValueError(f"capacity {capacity} is out of range; allowed: 1..{BUILDER_MAX_CAPACITY} bytes")
        self.max_packets = <uint32_t>max_packets
        self.capacity = <size_t>capacity
        self.arena = Arena(self.max_packets, self.capacity)
        self.handed = []
        self.views = []

    cdef bint _held(self):
        """True while a Batch handed out from this arena, one of its packets or a buffer of the arena is alive
        outside the builder."""
        cdef Batch b
        if self.arena.exports != 0:
            return True
        for b in self.handed:
            if Py_REFCNT(b) > 2:   # the list's reference and the loop variable's
                return True
        return False

    cdef uint8_t *_slot(self, Py_ssize_t n, Py_ssize_t extra) except NULL:
        """Room for one more packet of n + extra bytes, added to the tables; its first byte."""
        cdef Py_ssize_t total
        if n < 0:
            raise ValueError(f"a packet cannot have {n} bytes")
        total = n + extra
        if total > BUILDER_MAX_PACKET:
            raise ValueError(f"a packet of {total} bytes is larger than {BUILDER_MAX_PACKET}")
        if self.count >= self.max_packets:
            raise ValueError(f"the builder is full: it holds at most {self.max_packets} packets "
                             f"(call batch() and clear())")
        if <size_t>total > self.capacity - self.used:
            raise ValueError(f"a packet of {total} bytes does not fit: {self.capacity - self.used} of "
                             f"{self.capacity} bytes are left (call batch() and clear())")
        cdef Arena a = self.arena
        cdef uint8_t *p = a.data + self.used
        a.offsets[self.count] = <uint32_t>self.used
        a.lengths[self.count] = <uint32_t>total
        self.count += 1
        self.used += <size_t>total
        return p

    def reserve(self, n, prefix=None):
        """Appends a packet of ``len(prefix) + n`` bytes, the prefix (a header, a nonce) copied in front, and
        returns a writable Packet view of its last ``n`` bytes to fill in place. Until written they hold
        whatever the arena held: fill them, or take the packet back with ``pop()`` (e.g. when a decryption
        fails)."""
        cdef Py_buffer view
        cdef uint8_t *p
        cdef Packet out
        _int_type(n, "n")
        if n < 0:
            raise ValueError(f"a packet cannot have {n} bytes")
        if n > BUILDER_MAX_PACKET:
            raise ValueError(f"a packet of {n} bytes is larger than {BUILDER_MAX_PACKET}")
        if prefix is None:
            p = self._slot(n, 0)
        else:
            _get_buffer(prefix, &view, PyBUF_SIMPLE, "prefix must be a contiguous bytes-like object or None")
            try:
                p = self._slot(n, view.len)
                memcpy(p, view.buf, <size_t>view.len)
                p += view.len
            finally:
                PyBuffer_Release(&view)
        out = Packet.__new__(Packet)
        out.arena = self.arena
        out.generation = self.arena.generation
        out.ptr = p
        out.shape[0] = n
        self.views.append((self.count - 1, out))
        return out

    def append(self, data, prefix=None):
        """Appends a copy of ``data`` (a bytes-like object) as one packet, after ``prefix`` if given."""
        cdef Py_buffer view, head
        cdef uint8_t *p
        cdef Py_ssize_t hlen = 0
        _get_buffer(data, &view, PyBUF_SIMPLE, "a packet must be a contiguous bytes-like object")
        try:
            if prefix is None:
                p = self._slot(view.len, 0)
            else:
                _get_buffer(prefix, &head, PyBUF_SIMPLE, "prefix must be a contiguous bytes-like object or None")
                try:
                    hlen = head.len
                    p = self._slot(view.len, hlen)
                    memcpy(p, head.buf, <size_t>hlen)
                finally:
                    PyBuffer_Release(&head)
            memcpy(p + hlen, view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)

    def append_split(self, data, size, prefix=None, index_at=-1):
        """Appends ``data`` cut into packets of ``size`` bytes (the last one may be shorter), each after a copy
        of ``prefix``; with ``index_at``, byte ``index_at`` of each copy holds the piece's number (0, 1, ...,
        at most 256 pieces). Returns how many packets it appended (0 for empty data). Everything is checked
        first: ValueError and nothing changes."""
        cdef Py_buffer view, head
        cdef Py_ssize_t pieces, i, plen = 0, piece
        cdef Py_ssize_t size_ = _int_arg(size, "size", 1, _SSIZE_MAX)
        cdef Py_ssize_t index_at_ = _int_arg(index_at, "index_at", -1, _SSIZE_MAX)
        cdef uint8_t *p
        _get_buffer(data, &view, PyBUF_SIMPLE, "data must be a contiguous bytes-like object")
        head.buf = NULL
        head.len = 0
        try:
            if prefix is not None:
                _get_buffer(prefix, &head, PyBUF_SIMPLE, "prefix must be a contiguous bytes-like object or None")
            plen = head.len
            pieces = (view.len + size_ - 1) // size_
            if index_at_ >= plen or index_at_ < -1:
                raise ValueError(f"index_at {index_at_} is outside the {plen}-byte prefix (or -1 for none)")
            if index_at_ >= 0 and pieces > 256:
                raise ValueError(f"{pieces} pieces: a one-byte index numbers at most 256")
            if plen + min(size_, view.len) > BUILDER_MAX_PACKET:
                raise ValueError(f"a packet of {plen + min(size_, view.len)} bytes is larger than {BUILDER_MAX_PACKET}")
            if pieces > self.max_packets - self.count:
                raise ValueError(f"{pieces} packets do not fit: the builder holds {self.count} of at most "
                                 f"{self.max_packets}")
            if <size_t>(pieces * plen + view.len) > self.capacity - self.used:
                raise ValueError(f"{pieces * plen + view.len} bytes do not fit: {self.capacity - self.used} of "
                                 f"{self.capacity} bytes are left")
            for i in range(pieces):
                piece = min(size_, view.len - i * size_)
                p = self._slot(piece, plen)
                if plen:
                    memcpy(p, head.buf, <size_t>plen)
                    if index_at_ >= 0:
                        p[index_at_] = <uint8_t>i
                memcpy(p + plen, <uint8_t *>view.buf + i * size_, <size_t>piece)
            return pieces
        finally:
            if head.buf != NULL:
                PyBuffer_Release(&head)
            PyBuffer_Release(&view)

    def append_joined(self, Batch batch, start, count, prefix, index_at=-1):
        """If packets ``start`` .. ``start + count - 1`` of ``batch`` each begin with ``prefix`` (byte
        ``index_at`` of it, if given, holding the packet's number 0, 1, ... instead), appends what follows the
        prefix in each, joined, as one packet and returns True (fragments back into what was split); otherwise
        (or if it does not fit) returns False and changes nothing."""
        cdef Py_buffer head
        cdef Py_ssize_t i, plen, total = 0
        cdef uint8_t *p
        cdef uint8_t *src
        cdef uint32_t n
        cdef Arena a
        batch._check()
        _int_type(start, "start")   # any int: a range beyond the batch gives False
        _int_type(count, "count")
        cdef Py_ssize_t index_at_ = _int_arg(index_at, "index_at", -1, _SSIZE_MAX)
        if count < 1 or start < 0 or start > batch.count - count:
            return False
        cdef Py_ssize_t first = start, n_packets = count
        a = batch.arena
        _get_buffer(prefix, &head, PyBUF_SIMPLE, "prefix must be a contiguous bytes-like object")
        try:
            plen = head.len
            if index_at_ >= plen or index_at_ < -1:
                raise ValueError(f"index_at {index_at_} is outside the {plen}-byte prefix (or -1 for none)")
            for i in range(n_packets):
                n = a.lengths[first + i]
                src = a.data + a.offsets[first + i]
                if n < plen or (index_at_ >= 0 and src[index_at_] != <uint8_t>(i & 255)):
                    return False
                if index_at_ < 0:
                    if memcmp(src, head.buf, <size_t>plen) != 0:
                        return False
                elif memcmp(src, head.buf, <size_t>index_at_) != 0 or memcmp(
                        src + index_at_ + 1, <uint8_t *>head.buf + index_at_ + 1, <size_t>(plen - index_at_ - 1)) != 0:
                    return False
                total += n - plen
            if total > BUILDER_MAX_PACKET or self.count >= self.max_packets or \
                    <size_t>total > self.capacity - self.used:
                return False
            p = self._slot(total, 0)
            for i in range(n_packets):
                n = a.lengths[first + i]
                memcpy(p, a.data + a.offsets[first + i] + plen, n - plen)
                p += n - plen
            return True
        finally:
            PyBuffer_Release(&head)

    cdef uint32_t _frozen(self):
        """How many of the first packets belong to a Batch still held: pop() must not take them back."""
        cdef Batch b
        cdef uint32_t m = 0
        if self.arena.exports != 0:
            return self.frozen   # a buffer of some batch handed out: of which one is unknown
        for b in self.handed:
            if Py_REFCNT(b) > 2 and b.count > m:
                m = b.count
        return m

    def pop(self):
        """Takes the last packet back (one whose filling failed). A packet of a Batch still held cannot be.

        Views of it that ``reserve()`` returned expire (ValueError on use), so they cannot write into the next
        packet. While a buffer of the arena is exported (a memoryview, a NumPy array) its bytes are not reused
        before ``clear()``: the export may be of this packet."""
        cdef Packet v
        if self.count == 0:
            raise IndexError("pop from an empty builder")
        if self.count <= self._frozen():
            raise ValueError("the last packet belongs to a Batch handed out and still held; clear() instead")
        self.count -= 1
        while self.views:
            index, v = self.views[len(self.views) - 1]   # wraparound is off in this module
            if index < self.count:
                break
            v.generation = self.arena.generation - 1   # generations only grow: it never matches again
            self.views.pop()
        if self.arena.exports == 0:
            self.used = self.arena.offsets[self.count]

    def split_ip(self):
        """Splits the last packet into the IPv4/IPv6 packets it holds back to back, each as long as its header
        says (e.g. a decrypted tunnel datagram that carried several), and returns how many there are. A packet may
        come behind a remote-checksum header (``remote_csum=True``), which stays with it. If it is
        not a whole number of IP packets, or they would not fit in ``max_packets``, ValueError and nothing
        changes. A packet of a Batch still held cannot be split."""
        cdef uint32_t last, k = 0, i
        cdef size_t pos, end, start, length
        cdef uint8_t *p = self.arena.data
        if self.count == 0:
            raise IndexError("split_ip on an empty builder")
        if self.count <= self._frozen():
            raise ValueError("the last packet belongs to a Batch handed out and still held; clear() instead")
        last = self.count - 1
        start = self.arena.offsets[last]
        end = start + self.arena.lengths[last]
        pos = start
        while pos < end:
            length = _ip_length(p + pos, end - pos)
            if length == 0:
                raise ValueError(f"byte {pos - start} of the last packet does not start an IPv4/IPv6 packet "
                                 f"that ends within it")
            pos += length
            k += 1
        if k == 0:
            raise ValueError("the last packet is empty: it holds no IP packet")
        if k - 1 > self.max_packets - self.count:
            raise ValueError(f"the last packet holds {k} IP packets: more than the {self.max_packets} the "
                             f"builder holds")
        pos = start
        for i in range(k):
            length = _ip_length(p + pos, end - pos)
            self.arena.offsets[last + i] = <uint32_t>pos
            self.arena.lengths[last + i] = <uint32_t>length
            pos += length
        self.count = last + k
        # a view of the packet now covers all k: popping any of them expires it (see pop())
        for i in range(len(self.views) - 1, -1, -1):
            if self.views[i][0] != last:
                break
            self.views[i] = (last + k - 1, self.views[i][1])
        return k

    def batch(self):
        """The packets so far as a Batch (for send_batch). It stays valid, unchanged, as long as you hold it."""
        cdef Batch b = _new_batch(self.arena, self.count, self.used, False)
        if len(self.handed) >= 8:   # only the ones still held matter
            self.handed = [h for h in self.handed if Py_REFCNT(h) > 2]
        self.handed.append(b)
        if self.count > self.frozen:
            self.frozen = self.count
        return b

    def clear(self):
        """Empties the builder. Its arena is reused when no Batch of it is held any more; otherwise the held
        batches keep it and the builder takes a fresh one."""
        if self.count == 0 and not self.handed:
            return
        if self._held():
            self.arena = Arena(self.max_packets, self.capacity)
            self.arena_swaps += 1
        else:
            self.arena.generation += 1   # the views reserve() returned expire
        self.handed.clear()
        self.views.clear()
        self.count = 0
        self.used = 0
        self.frozen = 0

    def __len__(self):
        return self.count

    @property
    def nbytes(self):
        """Bytes of the arena the packets so far take (with the gap a pop() leaves while a buffer of the arena is
        exported: see pop())."""
        return self.used

    @property
    def room(self):
        """Bytes left in the arena."""
        return self.capacity - self.used

    def __repr__(self):
        return f"<fasttun.BatchBuilder {self.count}/{self.max_packets} packets, {self.used}/{self.capacity} bytes>"
