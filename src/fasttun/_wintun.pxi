# Wintun: opening adapters, loading the DLL, the driver version and its log. Included by _core.pyx.

def open_wintun(str name, str tunnel_type, guid, ring_capacity, int open_mode, mtu=None, bint auto_ring=False,
                bint coalesce=False, bint remote_csum=False):
    """open_mode: OPEN_CREATE, OPEN_EXISTING or OPEN_ANY; mtu None keeps the adapter's. auto_ring: start at
    ring_capacity and double it when the rings overflow; coalesce: merge TCP segments on send; remote_csum: take
    packets behind a remote-checksum header and finish their checksums."""
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
    p.ring_capacity = <uint32_t>_limited(ring_capacity, &ft_limit_ring_capacity)
    p.open_mode = open_mode
    p.mtu = 0 if mtu is None else <uint32_t>_limited(mtu, &ft_limit_mtu)
    p.flags = ((FT_WINTUN_AUTO_RING if auto_ring else 0) | (FT_WINTUN_COALESCE if coalesce else 0) |
               (FT_WINTUN_REMOTE_CSUM if remote_csum else 0))
    with nogil:
        r = ft_wintun_open(&p, &d, &e)
    if r != FT_OK:
        _raise(&e)
    cdef Device dev = Device.__new__(Device)
    dev._adopt(d)
    return dev


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
