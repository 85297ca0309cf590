# Errors: C status codes to Python exceptions, timeouts, buffer access. Included by _core.pyx.

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


cdef tuple _names(const char *const *names, int n):
    return tuple(names[i].decode() for i in range(n))


# The counters' names as the C core lists them (the Python records are checked against these by the tests).
STATS_FIELDS = _names(ft_stats_names, FT_STATS_COUNT)
READER_STATS_FIELDS = _names(ft_reader_stats_names, FT_READER_STATS_COUNT)
UDP_COUNTERS = _names(ft_udp_counter_names, FT_UDP_COUNTER_COUNT)


cdef dict _counters(tuple names, const uint64_t *values):
    return {names[i]: values[i] for i in range(len(names))}


cdef object _int_type(object value, str what):
    """An int argument, checked before any C conversion (TypeError otherwise); its range is the caller's."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


cdef int64_t _limited(object value, const ft_limit *limit) except? -1:
    """A Python int converted for the C core once the core's own limit accepts it (csrc/core/ft_limits.h owns
    every range and its message): TypeError unless an int, else the core's ValueError. The limit is asked
    before the conversion because a value outside the C type (-1 for a uint32_t, 2**40) could not be passed."""
    cdef ft_err e
    cdef int r
    _int_type(value, limit.name.decode())
    if -0x8000000000000000 <= value <= 0x7fffffffffffffff:
        r = ft_limit_check(limit, <int64_t>value, &e)
    else:
        text = str(value).encode()
        r = ft_limit_refuse(limit, text, &e)
    if r != FT_OK:
        _raise(&e)
    return <int64_t>value


cdef const ft_limit *_limit_named(str name) except NULL:
    if name == "batch_size":
        return &ft_limit_batch_size
    if name == "spin_us":
        return &ft_limit_spin_us
    if name == "adaptive_pps":
        return &ft_limit_adaptive_pps
    if name == "pipeline":
        return &ft_limit_pipeline
    if name == "max_packets":
        return &ft_limit_max_packets
    raise KeyError(name)


def check_limit(str name, value):
    """Checks value against the C core's limit of that name (for fasttun.aio, which checks its arguments when
    called and passes them on later); returns it."""
    _limited(value, _limit_named(name))
    return value


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


cdef struct Deadline:
    # When a blocking call gives up: never (forever), or at `at` on the monotonic clock (ns).
    bint forever
    uint64_t at


cdef inline Deadline _deadline(int total_ms) noexcept:
    cdef Deadline d
    d.forever = total_ms < 0
    d.at = 0 if d.forever else ft_now_ns() + <uint64_t>total_ms * 1000000
    return d


cdef inline int _slice_ms(const Deadline *d) noexcept:
    """How long the next wait may block: SLICE_MS, less near the deadline, 0 once it passed. Blocking calls wait
    in slices so that signals (Ctrl-C) are handled between them."""
    if d.forever:
        return SLICE_MS
    cdef uint64_t now = ft_now_ns()
    if now >= d.at:
        return 0
    cdef uint64_t left_ms = (d.at - now + 999999) // 1000000
    return SLICE_MS if left_ms > SLICE_MS else <int>left_ms


cdef inline bint _expired(const Deadline *d, int slice_ms) noexcept:
    """After a wait of slice_ms timed out: is the whole timeout over?"""
    return slice_ms == 0 or (not d.forever and ft_now_ns() >= d.at)


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
