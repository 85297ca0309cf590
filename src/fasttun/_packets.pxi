# Packet helpers in C: ICMP echo replies, the Internet checksum, packet validation. Included by _core.pyx.

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


def icmp_echo_replies(Batch batch):
    """The echo replies to every IPv4 ICMP / IPv6 ICMPv6 echo request in batch, in order, built in C into one new
    Batch (valid as long as it is held, also after a reader's batch expired; send it with send_batch); None if
    the batch holds no echo request. Other packets are skipped. A reply is never longer than its request, so
    the new batch needs no more room than the requests."""
    batch._check()
    cdef Arena src = batch.arena
    cdef uint32_t n = batch.count, i, k = 0
    if n == 0:
        return None
    # A reply is never longer than its request: the requests' total size bounds the new arena.
    cdef Arena out = Arena(n, max(batch.used, 1))
    cdef size_t used = 0, got
    for i in range(n):
        got = ft_icmp_echo_reply(src.data + src.offsets[i], src.lengths[i], out.data + used, out.cap - used)
        if got:
            out.offsets[k] = <uint32_t>used
            out.lengths[k] = <uint32_t>got
            used += got
            k += 1
    if k == 0:
        return None
    return _new_batch(out, k, used, False)


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
