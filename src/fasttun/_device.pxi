# Devices: the Device class over ft_device, and the pair and Linux constructors. Included by _core.pyx.

# Configuration calls of the C core come in three shapes; each is wrapped once.
ctypedef int (*_u32_getter)(ft_device *d, uint32_t *v, ft_err *e) noexcept nogil
ctypedef int (*_u32_setter)(ft_device *d, uint32_t v, ft_err *e) noexcept nogil
ctypedef int (*_flag_setter)(ft_device *d, int v, ft_err *e) noexcept nogil


cdef object _config_get(ft_device *d, _u32_getter fn):
    cdef uint32_t v = 0
    cdef ft_err e
    cdef int r
    with nogil:
        r = fn(d, &v, &e)
    if r != FT_OK:
        _raise(&e)
    return v


cdef int _config_set(ft_device *d, _u32_setter fn, uint32_t v) except -1:
    cdef ft_err e
    cdef int r
    with nogil:
        r = fn(d, v, &e)
    if r != FT_OK:
        _raise(&e)
    return 0


cdef int _config_flag(ft_device *d, _flag_setter fn, bint v) except -1:
    cdef ft_err e
    cdef int r
    with nogil:
        r = fn(d, v, &e)
    if r != FT_OK:
        _raise(&e)
    return 0


# Device.tap's directions: packets fasttun received from the device (the system sent them), and packets fasttun
# sent into it.
TAP_RECEIVED = 1
TAP_SENT = 2


cdef class Device:
    """A device of the C core: a Linux TUN device, one end of an in-memory pair or a Wintun adapter."""

    cdef ft_device *dev
    cdef Arena spare          # reused by recv/recv_batch when nobody holds it any more
    cdef bytes kept           # a packet recv_into could not fit: the next receive of any kind returns it
    cdef readonly str backend
    cdef readonly bint super_mode
    cdef const ft_limit *batch_limit   # of recv_batch's packet count: "max_packets", a UDP endpoint's "max_datagrams"
    # A capture hook (fasttun.pcap's tee): called as tap(packets, TAP_RECEIVED or TAP_SENT) with what every receive,
    # reader and send of this device moved, whichever started it and when; None costs one test per call or batch.
    # It must not keep the packets past the call; an exception from it goes to sys.unraisablehook, never to the
    # data path. Set with set_tap.
    cdef readonly object tap
    cdef object forwards      # the forwards (QueueReader with a sink) from or to this device, weakly
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
        self.batch_limit = &ft_limit_max_packets
        ft_linux_offloads(d, &mode)
        self.super_mode = mode == FT_OFFLOAD_SUPER
        _devices.add(self)
        return 0

    def set_tap(self, tap):
        """Attaches (or with None removes) the capture hook; forwards from or to this device then hand their
        batches to Python, where the hook sees them (and back to C without one)."""
        self.tap = tap
        if self.forwards is not None:
            for q in list(self.forwards):
                (<QueueReader>q)._update_divert()

    cdef object _forwards(self):
        if self.forwards is None:
            self.forwards = _weakref.WeakSet()
        return self.forwards

    def txqueuelen_grows(self):
        """How many times txqueuelen "auto" doubled the kernel's queue (0 for other devices)."""
        return ft_linux_txqueuelen_grows(self.dev)

    def remote_csum(self):
        """Whether the device takes packets whose checksum is partial behind a 4-byte header (remote_csum=True)."""
        return bool(self.dev.remote_csum)

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
        cdef Deadline deadline = _deadline(total_ms)
        while True:
            slice_ms = _slice_ms(&deadline)
            with nogil:
                r = ft_device_recv(self.dev, queue, b, slice_ms, &e)
            if r > 0:
                return r
            if r != FT_ETIMEDOUT:
                _raise(&e)
            PyErr_CheckSignals()
            if _expired(&deadline, slice_ms):
                return 0

    cdef bytes _take_kept(self):
        kept, self.kept = self.kept, None
        if self.tap is not None:
            self._tapped((kept,), TAP_RECEIVED)
        return kept

    cdef void _tapped(self, packets, int direction) noexcept:
        tap = self.tap
        if tap is not None:
            tap(packets, direction)

    def recv(self, int queue=FT_ALL_QUEUES, timeout=None):
        cdef ft_batch b
        if self.kept is not None:
            return self._take_kept()
        cdef Arena a = self._arena(1)
        try:
            a.attach(&b)
            b.max = 1
            if self._recv(queue, &b, timeout) == 0:
                return None
            packet = PyBytes_FromStringAndSize(<char *>b.data + b.offsets[0], b.lengths[0])
            if self.tap is not None:
                self._tapped((packet,), TAP_RECEIVED)
            return packet
        finally:
            a.in_batch = False

    def recv_into(self, buffer, int queue=FT_ALL_QUEUES, timeout=None):
        """Receives one packet into buffer; returns its length, 0 on timeout. A packet larger than the
        buffer is kept and returned by the next receive, and ValueError says how large it is."""
        cdef Py_buffer view
        cdef ft_batch b
        cdef Arena a
        cdef Py_ssize_t n
        _get_buffer(buffer, &view, PyBUF_SIMPLE | PyBUF_WRITABLE, "recv_into needs a writable contiguous buffer")
        try:
            if self.kept is None:
                a = self._arena(1)
                try:
                    a.attach(&b)
                    b.max = 1
                    if self._recv(queue, &b, timeout) == 0:
                        return 0
                    if b.lengths[0] <= <size_t>view.len:
                        memcpy(view.buf, b.data + b.offsets[0], b.lengths[0])
                        if self.tap is not None:
                            self._tapped((PyBytes_FromStringAndSize(<char *>view.buf, b.lengths[0]),), TAP_RECEIVED)
                        return b.lengths[0]
                    self.kept = PyBytes_FromStringAndSize(<char *>b.data + b.offsets[0], b.lengths[0])
                finally:
                    a.in_batch = False
            n = len(self.kept)
            if n > view.len:
                raise ValueError(f"the next packet is {n} bytes and the buffer only {view.len}; it is kept for the "
                                 f"next receive")
            memcpy(view.buf, PyBytes_AS_STRING(self.kept), <size_t>n)
            self._take_kept()
            return n
        finally:
            PyBuffer_Release(&view)

    def recv_batch(self, max_packets, int queue=FT_ALL_QUEUES, timeout=None):
        cdef ft_batch b
        cdef uint32_t max_ = <uint32_t>_limited(max_packets, self.batch_limit)
        if self.kept is not None:
            return make_batch([self._take_kept()])
        cdef Arena a = self._arena(max_)
        a.attach(&b)
        b.max = max_
        cdef int n
        try:
            n = self._recv(queue, &b, timeout)
        except BaseException:
            a.in_batch = False
            raise
        # The batch owns the arena until the user drops it; then the next call may reuse it.
        batch = _new_batch(a, <uint32_t>n, b.used, False, self.super_mode)
        if self.tap is not None and n > 0:
            self._tapped(batch, TAP_RECEIVED)
        return batch

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
        cdef Deadline deadline = _deadline(total_ms)
        while True:
            if policy == FT_FULL_WAIT:
                slice_ms = _slice_ms(&deadline)
            with nogil:
                if hdrs != NULL:
                    r = ft_device_send_vnet(self.dev, queue, pkts + done, hdrs + <size_t>done * FT_VNET_HDR_SIZE,
                                            n - done, policy, slice_ms, &e)
                else:
                    r = ft_device_send(self.dev, queue, pkts + done, n - done, policy, slice_ms, &e)
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
            if _expired(&deadline, slice_ms):
                ft_device_count_tx_drops(self.dev, n - done)
                return <int>sent

    def send(self, packet, int queue=0, int policy=FT_FULL_DROP, timeout=None):
        cdef Py_buffer view
        cdef ft_pkt pkt
        _get_buffer(packet, &view, PyBUF_SIMPLE, "a packet must be a contiguous bytes-like object")
        try:
            pkt.data = <const uint8_t *>view.buf
            pkt.len = <size_t>view.len
            try:
                sent = self._send(queue, &pkt, NULL, 1, policy, timeout)
            except BaseException as exc:   # it may have gone all the same: its .sent says so
                if self.tap is not None and getattr(exc, "sent", 0) == 1:
                    self._tapped((packet,), TAP_SENT)
                raise
            if self.tap is not None and sent:
                self._tapped((packet,), TAP_SENT)
            return sent
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
            try:
                sent = self._send(queue, pkts, NULL, <uint32_t>n, policy, timeout)
            except BaseException as exc:   # those that went before the error: its .sent
                if self.tap is not None:
                    self._tap_sent(seq, exc)
                raise
            if self.tap is not None and sent:
                self._tapped(seq[:sent], TAP_SENT)
            return sent
        finally:
            for i in range(got):
                PyBuffer_Release(&views[i])
            if views != small_views:
                PyMem_Free(views)
                PyMem_Free(pkts)

    cdef void _tap_sent(self, packets, BaseException exc) noexcept:
        went = getattr(exc, "sent", 0)
        if isinstance(went, int) and went > 0:
            self._tapped(packets[:went] if isinstance(packets, tuple) else [packets[i] for i in range(went)],
                         TAP_SENT)

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
            try:
                sent = self._send(queue, pkts, a.vnet if batch.is_super else NULL, n, policy, timeout)
            except BaseException as exc:   # those that went before the error: its .sent
                if self.tap is not None:
                    self._tap_sent(batch, exc)
                raise
            if self.tap is not None and sent:
                self._tapped(batch if <uint32_t>sent == n else [batch[k] for k in range(sent)], TAP_SENT)
            return sent
        finally:
            a.exports -= 1
            if pkts != small_pkts:
                PyMem_Free(pkts)

    # -- readers --

    def start_reader(self, int queue, callback, batch_size, spin_us, bint adaptive, adaptive_pps, pipeline=0,
                     on_error=None, bint deliver_after_stop=False, Device sink=None, int sink_policy=FT_FULL_DROP,
                     sink_timeout=None):
        """A reader thread on one queue; the numbers are checked against the C core's limits first. With a sink
        (a forward) the batches go to that device's queue (this queue modulo its queues) in C, sent under
        sink_policy with sink_timeout, and callback is not used."""
        cdef int sink_queue = 0
        cdef int timeout_ms = -1
        if sink is not None:
            if sink.dev == NULL:
                raise ValueError("the sink is not an open device")
            if isinstance(sink, UdpDevice) and not sink.info()["connected"]:
                raise ValueError(f"UDP endpoint {sink.name} is not connected: a forward sends to its peer, so open it "
                                 f"with peer=(host, port)")
            sink_queue = queue % sink.dev.nqueues
            timeout_ms = _timeout_ms(sink_timeout)
        return QueueReader._start(self, queue, callback, <uint32_t>_limited(batch_size, &ft_limit_batch_size),
                                  <uint32_t>_limited(spin_us, &ft_limit_spin_us), adaptive,
                                  <uint32_t>_limited(adaptive_pps, &ft_limit_adaptive_pps),
                                  <uint32_t>_limited(pipeline, &ft_limit_pipeline), on_error, deliver_after_stop,
                                  sink, sink_queue, sink_policy, timeout_ms)

    # -- configuration --

    def get_mtu(self):
        return _config_get(self.dev, ft_device_get_mtu)

    def set_mtu(self, mtu):
        _config_set(self.dev, ft_device_set_mtu, <uint32_t>_limited(mtu, &ft_limit_mtu))

    def set_up(self, bint up):
        _config_flag(self.dev, ft_device_set_up, up)

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
        return _config_get(self.dev, ft_device_get_index)

    def get_txqueuelen(self):
        return _config_get(self.dev, ft_device_get_txqueuelen)

    def set_txqueuelen(self, v):
        _config_set(self.dev, ft_device_set_txqueuelen, <uint32_t>_limited(v, &ft_limit_txqueuelen))

    def address(self, int family, bytes packed, int prefix, bint add):
        cdef ft_addr a
        cdef ft_err e
        cdef int r
        memset(&a, 0, sizeof(a))
        if family not in (4, 6) or len(packed) != (4 if family == 4 else 16):
            raise ValueError("address must be 4 bytes (IPv4) or 16 bytes (IPv6)")
        a.family = family
        a.prefix = <uint8_t>prefix
        memcpy(a.bytes, <const char *>packed, len(packed))
        with nogil:
            r = ft_device_address(self.dev, add, &a, &e)
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

    def fileno(self, queue=0):
        cdef ft_err e
        cdef ft_limit queues = ft_device_queue_limit(self.dev)
        cdef int fd = ft_linux_fd(self.dev, <int>_limited(queue, &queues), &e)
        if fd < 0:
            _raise(&e)
        return fd

    def set_persist(self, bint persist):
        _config_flag(self.dev, ft_linux_set_persist, persist)

    def stats(self):
        cdef ft_stats s
        ft_device_get_stats(self.dev, &s)
        return _counters(STATS_FIELDS, s.values)

    # -- Wintun --

    def wintun_info(self):
        """(luid, created, ring_capacity, ring_grows) of a Wintun device."""
        cdef ft_wintun_info i
        ft_wintun_get_info(self.dev, &i)
        return i.luid, bool(i.created), i.ring_capacity, i.ring_grows

    def wintun_guid(self):
        cdef uint8_t g[16]
        cdef ft_err e
        if ft_wintun_guid(self.dev, g, &e) != FT_OK:
            _raise(&e)
        return (<char *>g)[:16]

    def route(self, int family, bytes dest, uint8_t prefix, gateway, metric, bint add):
        cdef ft_route rt
        cdef ft_err e
        cdef int r
        cdef int alen = 4 if family == 4 else 16
        memset(&rt, 0, sizeof(rt))
        if family not in (4, 6) or len(dest) != alen or (gateway is not None and len(gateway) != alen):
            raise ValueError("route addresses must be 4 bytes (IPv4) or 16 bytes (IPv6)")
        rt.family = family
        rt.prefix = <uint8_t>prefix
        rt.metric = <uint32_t>_limited(metric, &ft_limit_metric)
        memcpy(rt.dest, <const char *>dest, alen)
        if gateway is not None:
            rt.has_gateway = 1
            memcpy(rt.gateway, <const char *>gateway, alen)
        with nogil:
            r = ft_device_route(self.dev, add, &rt, &e)
        if r != FT_OK:
            _raise(&e)

    def wintun_set_dns(self, servers):
        """servers: (4 or 6, packed address) pairs; how many an adapter takes is the C core's rule."""
        cdef list given = list(servers)
        cdef uint32_t n = <uint32_t>len(given), i
        cdef ft_err e
        cdef int r
        cdef ft_addr *buf = <ft_addr *>PyMem_Malloc((n or 1) * sizeof(ft_addr))
        if buf == NULL:
            raise MemoryError()
        try:
            memset(buf, 0, (n or 1) * sizeof(ft_addr))
            for i in range(n):
                family, packed = given[i]
                if len(packed) != (4 if family == 4 else 16):
                    raise ValueError("a DNS server address must be 4 bytes (IPv4) or 16 bytes (IPv6)")
                buf[i].family = family
                buf[i].prefix = 32 if family == 4 else 128
                memcpy(buf[i].bytes, <const char *>packed, len(packed))
            with nogil:
                r = ft_wintun_set_dns(self.dev, buf, n, &e)
            if r != FT_OK:
                _raise(&e)
        finally:
            PyMem_Free(buf)

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

def open_pair(mtu, capacity, capacity_bytes):
    cdef ft_device *a = NULL
    cdef ft_device *b = NULL
    cdef ft_err e
    if ft_memory_pair(<uint32_t>_limited(mtu, &ft_limit_mtu), <uint32_t>_limited(capacity, &ft_limit_capacity),
                      <uint32_t>_limited(capacity_bytes, &ft_limit_capacity_bytes), &a, &b, &e) != FT_OK:
        _raise(&e)
    cdef Device da = Device.__new__(Device)
    cdef Device db = Device.__new__(Device)
    da._adopt(a)
    db._adopt(b)
    return da, db


def open_linux(name, queues, int persist, int open_mode, mtu=None, dev_path=None, int offload=0,
               bint auto_txqueuelen=False, bint remote_csum=False, txqueuelen=None):
    """mtu None keeps the device's; txqueuelen (None: the kernel's) is checked before the device is opened and
    set once it is."""
    cdef ft_linux_params p
    cdef ft_device *d = NULL
    cdef ft_err e
    cdef int r
    cdef int queues_ = <int>_limited(queues, &ft_limit_queues)
    cdef uint32_t mtu_ = 0 if mtu is None else <uint32_t>_limited(mtu, &ft_limit_mtu)
    if txqueuelen is not None:
        _limited(txqueuelen, &ft_limit_txqueuelen)
    bname = name.encode() if name else b""
    bpath = dev_path.encode() if dev_path else None
    if b"\0" in bname:
        raise ValueError(f"interface name {name!r} contains a NUL character; printable ASCII without spaces, "
                         f"'/' or ':' is allowed")
    memset(&p, 0, sizeof(p))
    p.name = bname
    p.queues = queues_
    p.persist = persist
    p.open_mode = open_mode
    p.mtu = mtu_
    p.dev_path = NULL if bpath is None else <const char *>bpath
    p.offload = offload
    p.auto_txqueuelen = auto_txqueuelen
    p.remote_csum = remote_csum
    with nogil:
        r = ft_linux_open(&p, &d, &e)
    if r != FT_OK:
        _raise(&e)
    cdef Device dev = Device.__new__(Device)
    dev._adopt(d)
    if txqueuelen is not None:
        try:
            dev.set_txqueuelen(txqueuelen)
        except BaseException:
            dev.close()
            raise
    return dev


def linux_features():
    cdef uint32_t flags = 0
    cdef ft_err e
    if ft_linux_features(&flags, &e) != FT_OK:
        _raise(&e)
    return flags
