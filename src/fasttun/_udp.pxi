# ---- UDP endpoints (csrc/udp/ft_udp.c), included at the end of _core.pyx --------------------------------
# A UDP socket is one more backend of the C device interface: receiving, readers, batches and arenas are the
# Device code above; what differs is sending (destinations, no IP validation) and the offload report.

import socket as _socket

UDP_MAX_PAYLOAD4 = FT_UDP_MAX_PAYLOAD4
UDP_MAX_PAYLOAD6 = FT_UDP_MAX_PAYLOAD6
UDP_GSO_MAX_SEGMENTS = FT_UDP_GSO_MAX_SEGMENTS
UDP_BUF_MIN = FT_UDP_BUF_MIN
UDP_BUF_MAX = FT_UDP_BUF_MAX
UDP_WIN_DEFAULT_BUF = FT_UDP_WIN_DEFAULT_BUF


cdef object _endpoint_tuple(const ft_endpoint *ep):
    if ep.family == 4:
        return (_socket.inet_ntop(_socket.AF_INET, (<char *>ep.addr)[:4]), ep.port)
    if ep.family == 6:
        return (_socket.inet_ntop(_socket.AF_INET6, (<char *>ep.addr)[:16]), ep.port, 0, ep.scope_id)
    return None


cdef int _endpoint_from(object addr, ft_endpoint *ep) except -1:
    """A destination from (host, port) or, for IPv6, (host, port, flowinfo, scope_id); the host a numeric address,
    an IPv6 one with an optional %zone (an interface name or index)."""
    if not isinstance(addr, tuple) or len(addr) not in (2, 4):
        raise TypeError(f"a destination is a (host, port) tuple (IPv6 also (host, port, flowinfo, scope_id)), "
                        f"not {addr!r}")
    host = addr[0]
    port = addr[1]
    if not isinstance(host, str):
        raise TypeError(f"the destination host must be a str with a numeric address, not {type(host).__name__}")
    cdef uint16_t port_ = <uint16_t>_limited(port, &ft_limit_port)
    memset(ep, 0, sizeof(ft_endpoint))
    ep.port = port_
    cdef bytes packed
    try:
        packed = _socket.inet_pton(_socket.AF_INET, host)
    except (OSError, ValueError):
        pass
    else:
        if len(addr) == 4:
            raise ValueError(f"an IPv4 destination is (host, port); (host, port, flowinfo, scope_id) is for IPv6, "
                             f"not {addr!r}")
        ep.family = 4
        memcpy(ep.addr, <const char *>packed, 4)
        return 0
    name, percent, zone = host.partition("%")
    try:
        packed = _socket.inet_pton(_socket.AF_INET6, name)
    except (OSError, ValueError):
        raise ValueError(f"destination host {host!r} is not a numeric IPv4 or IPv6 address") from None
    ep.family = 6
    memcpy(ep.addr, <const char *>packed, 16)
    scope = _zone_index(zone, host) if percent else 0
    if len(addr) == 4:
        flowinfo, scope_id = addr[2], addr[3]
        if isinstance(flowinfo, bool) or not isinstance(flowinfo, int):
            raise TypeError(f"the IPv6 flowinfo must be an int, not {type(flowinfo).__name__}")
        if flowinfo != 0:
            raise ValueError(f"the IPv6 flowinfo of a destination must be 0 (flow labels are not sent), "
                             f"not {flowinfo}")
        if isinstance(scope_id, bool) or not isinstance(scope_id, int):
            raise TypeError(f"the IPv6 scope id must be an int, not {type(scope_id).__name__}")
        if not 0 <= scope_id <= 0xFFFFFFFF:
            raise ValueError(f"the IPv6 scope id {scope_id} is out of range; allowed: 0..4294967295")
        if percent and scope_id not in (0, scope):
            raise ValueError(f"destination {addr!r} names two zones: %{zone} and scope id {scope_id}")
        scope = scope or scope_id
    ep.scope_id = <uint32_t>scope
    return 0


cdef object _zone_index(str zone, str host):
    """The interface index an IPv6 %zone names: a decimal index (1..4294967295) or an interface's name."""
    if zone.isascii() and zone.isdigit():
        index = int(zone)
        if not 1 <= index <= 0xFFFFFFFF:
            raise ValueError(f"the zone of {host!r} is out of range: an interface index is 1..4294967295")
        return index
    if not zone:
        raise ValueError(f"{host!r} has an empty zone: after % comes an interface name or index")
    try:
        return _socket.if_nametoindex(zone)
    except (OSError, ValueError):
        raise ValueError(f"the zone of {host!r} names no interface of this host (give an existing interface's "
                         f"name or index)") from None


cdef class UdpDevice(Device):
    """A UDP socket as a device of the C core."""

    def fileno(self, int queue=0):
        cdef int fd = ft_udp_fd(self.dev)
        if fd < 0:
            raise _errors.TunClosedError(_errno.EBADF, "the UDP endpoint is closed")
        return fd

    def info(self):
        """What the endpoint uses, and its own counters (UDP_COUNTERS) by name."""
        cdef ft_udp_info i
        if ft_udp_get_info(self.dev, &i) != FT_OK:
            raise _errors.TunClosedError(_errno.EBADF, "the UDP endpoint is closed")
        info = _counters(UDP_COUNTERS, i.counters)
        info.update(family=i.family, connected=i.connected, gso_supported=i.gso_supported,
                    gro_supported=i.gro_supported, gso=i.gso, gro=i.gro, max_datagram=i.max_datagram,
                    gso_max_segment=i.gso_max_segment, message_calls=i.message_calls, rcvbuf=i.rcvbuf,
                    sndbuf=i.sndbuf)
        return info

    cdef int _udp_send(self, ft_pkt *pkts, uint32_t n, const ft_endpoint *to, uint32_t to_count, int policy,
                       object timeout) except -1:
        """ft_udp_send in slices (Ctrl-C is seen between them); returns the datagrams sent."""
        cdef int total_ms = _timeout_ms(timeout)
        cdef int slice_ms = total_ms
        cdef uint32_t sent = 0
        cdef int r
        cdef ft_err e
        cdef const ft_endpoint *dst
        cdef Deadline deadline = _deadline(total_ms)
        while True:
            if policy == FT_FULL_WAIT:
                slice_ms = _slice_ms(&deadline)
            dst = to if to_count <= 1 else to + sent
            with nogil:
                r = ft_udp_send(self.dev, pkts + sent, n - sent, dst, to_count if to_count <= 1 else n - sent,
                                policy, slice_ms, &e)
            if r >= 0:
                return <int>(sent + <uint32_t>r)
            if r != FT_ETIMEDOUT:
                if (r == FT_EPACKET or r == FT_EINVAL) and e.index >= 0:
                    e.index += sent
                _raise_sent(&e, sent + e.sent)
            sent += e.sent
            try:
                PyErr_CheckSignals()
            except BaseException as exc:
                exc.sent = sent
                raise
            if _expired(&deadline, slice_ms):
                ft_device_count_tx_drops(self.dev, n - sent)
                return <int>sent

    def send_to(self, packets, addr, int policy=FT_FULL_WAIT, timeout=None):
        """Sends datagrams (a Batch or an iterable of bytes-like objects) to addr, or with addr None to the
        connected peer, or (unconnected) to where each datagram of a Batch from a UDP endpoint came from."""
        cdef ft_endpoint one
        cdef const ft_endpoint *to = NULL
        cdef uint32_t to_count = 0
        cdef bint connected = self.info()["connected"]
        if addr is not None:
            _endpoint_from(addr, &one)
            to = &one
            to_count = 1
        if isinstance(packets, Batch):
            return self._send_batch_to(<Batch>packets, to, to_count, connected, policy, timeout)
        if to == NULL and not connected:
            raise ValueError("this UDP endpoint is not connected: give addr=(host, port)")
        # A tuple of our own: a buffer export may run code that changes the caller's list (see Device.send_batch).
        cdef tuple seq = tuple(packets)
        cdef Py_ssize_t n = len(seq)
        if n == 0:
            return 0
        if n > 0x7fffffff:
            raise ValueError(f"at most 2147483647 datagrams per call, got {n}")
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
                raise MemoryError(f"cannot hold {n} datagram references")
        try:
            for i in range(n):
                _get_buffer(seq[i], &views[got], PyBUF_SIMPLE,
                            f"datagram {i}: a datagram must be a contiguous bytes-like object (nothing was sent)")
                got += 1
                pkts[i].data = <const uint8_t *>views[i].buf
                pkts[i].len = <size_t>views[i].len
            return self._udp_send(pkts, <uint32_t>n, to, to_count, policy, timeout)
        finally:
            for i in range(got):
                PyBuffer_Release(&views[i])
            if views != small_views:
                PyMem_Free(views)
                PyMem_Free(pkts)

    cdef int _send_batch_to(self, Batch batch, const ft_endpoint *to, uint32_t to_count, bint connected,
                            int policy, object timeout) except -1:
        batch._check()
        if batch.is_super:
            raise ValueError("a batch of super-packets (offload_mode='super') cannot be sent as datagrams; "
                             "open the device with offload_mode='segments'")
        cdef uint32_t n = batch.count, i
        if n == 0:
            return 0
        cdef Arena a = batch.arena
        if to == NULL and not connected:
            for i in range(n):
                if a.addrs[i].family == 0:
                    raise ValueError("this UDP endpoint is not connected and the batch does not say where its "
                                     "datagrams came from: give addr=(host, port)")
            to = a.addrs
            to_count = n
        cdef ft_pkt small_pkts[SMALL]
        cdef ft_pkt *pkts = small_pkts
        if n > SMALL:
            pkts = <ft_pkt *>PyMem_Malloc(n * sizeof(ft_pkt))
            if pkts == NULL:
                raise MemoryError(f"cannot hold {n} datagram references")
        a.exports += 1   # the arena must not be recycled while the GIL is released
        try:
            for i in range(n):
                pkts[i].data = a.data + a.offsets[i]
                pkts[i].len = a.lengths[i]
            return self._udp_send(pkts, n, to, to_count, policy, timeout)
        finally:
            a.exports -= 1
            if pkts != small_pkts:
                PyMem_Free(pkts)


def open_udp(int fd, int family, max_datagram=None, bint gso=True, bint gro=True, rcvbuf=None, sndbuf=None,
             bint per_datagram=False):
    """A UdpDevice owning the UDP socket fd of that family (on failure the fd stays the caller's). None: the
    family's maximum datagram; the platform's default buffers; per_datagram: Windows' recvfrom/sendto path from
    the start (ft_udp_params)."""
    cdef ft_udp_params p
    cdef ft_device *d = NULL
    cdef ft_err e
    cdef int r
    memset(&p, 0, sizeof(p))
    p.fd = fd
    if max_datagram is not None:
        p.max_datagram = <uint32_t>_limited(max_datagram,
                                            ft_udp_max_datagram_limit(4 if family == _socket.AF_INET else 6))
    p.gso = gso
    p.gro = gro
    p.rcvbuf = 0 if rcvbuf is None else <uint32_t>_limited(rcvbuf, &ft_limit_rcvbuf)
    p.sndbuf = 0 if sndbuf is None else <uint32_t>_limited(sndbuf, &ft_limit_sndbuf)
    p.per_datagram = per_datagram
    with nogil:
        r = ft_udp_open(&p, &d, &e)
    if r != FT_OK:
        _raise(&e)
    cdef UdpDevice dev = UdpDevice.__new__(UdpDevice)
    dev._adopt(d)
    dev.batch_limit = &ft_limit_max_datagrams
    return dev
