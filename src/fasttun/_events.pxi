# Device events (included by _core.pyx): a thin wrapper over csrc/events/ (rtnetlink on Linux, the IP Helper
# notifications on Windows). The policy (which change is which event, the async iterator) lives in
# fasttun/events.py.

cdef extern from "events/ft_events.h" nogil:
    enum:
        FT_EV_LINK
        FT_EV_LINK_REMOVED
        FT_EV_ADDR_ADDED
        FT_EV_ADDR_REMOVED
        FT_EV_OVERFLOW

    ctypedef struct ft_device_event:
        int kind
        uint32_t ifindex
        uint32_t flags
        uint32_t mtu
        ft_addr addr
        char name[16]
        uint64_t luid

    ctypedef struct ft_events:
        pass

    ft_events *ft_events_open(uint32_t ifindex, ft_err *e)
    ft_events *ft_events_open_luid(uint64_t luid, ft_err *e)
    int ft_events_fd(const ft_events *ev)
    int ft_events_wait(ft_events *ev, int timeout_ms, ft_err *e)
    void ft_events_shutdown(ft_events *ev)
    uint64_t ft_events_dropped(ft_events *ev)
    int ft_events_read(ft_events *ev, ft_device_event *out, int max, ft_err *e)
    void ft_events_close(ft_events *ev)
    int ft_events_test_notify(ft_events *ev, int what, int type, uint64_t luid, uint32_t ifindex, const ft_addr *a,
                              uint32_t mtu, int connected, ft_err *e)


EV_LINK = FT_EV_LINK
EV_LINK_REMOVED = FT_EV_LINK_REMOVED
EV_ADDR_ADDED = FT_EV_ADDR_ADDED
EV_ADDR_REMOVED = FT_EV_ADDR_REMOVED
EV_OVERFLOW = FT_EV_OVERFLOW

cdef enum:
    _EVENTS_PER_READ = 64


cdef class EventSocket:
    """Notifications about one interface (0: all): on Linux from rtnetlink in the calling thread's network
    namespace, on Windows from the IP Helper API (by ``luid`` when given, else by index). close() from any
    thread ends every wait() at once; the C side is freed when the last waiter has left."""

    cdef ft_events *ev
    cdef int users          # threads inside wait(), counted under the GIL
    cdef bint closed
    cdef uint64_t dropped_at_close
    cdef ft_device_event out[_EVENTS_PER_READ]

    def __cinit__(self, uint32_t ifindex, uint64_t luid=0):
        cdef ft_err e
        if luid:
            self.ev = ft_events_open_luid(luid, &e)
        else:
            self.ev = ft_events_open(ifindex, &e)
        if self.ev == NULL:
            _raise(&e)

    def __dealloc__(self):
        ft_events_close(self.ev)  # no waiter is left: each holds a reference
        self.ev = NULL

    cdef int _check(self) except -1:
        if self.closed or self.ev == NULL:
            raise ValueError("the event socket is closed")
        return 0

    @property
    def dropped(self):
        """Notifications lost so far (see ft_events_dropped); after close() the count at close."""
        if self.closed or self.ev == NULL:
            return self.dropped_at_close
        return ft_events_dropped(self.ev)

    def fileno(self):
        self._check()
        return ft_events_fd(self.ev)

    def wait(self, timeout=None, bint interruptible=True):
        """Waits with the GIL released up to ``timeout`` seconds (None: without end) until events may be
        pending: True, or False after the timeout. Interruptible: in slices of 100 ms with signals handled in
        between (Ctrl-C); otherwise in one wait. ValueError once closed, also when close() ends the wait."""
        cdef ft_err e
        cdef int r, ms
        cdef Deadline deadline = _deadline(_timeout_ms(timeout))
        self._check()
        self.users += 1
        try:
            while True:
                ms = _slice_ms(&deadline) if interruptible or not deadline.forever else -1
                with nogil:
                    r = ft_events_wait(self.ev, ms, &e)
                if r == 1:
                    return True
                if r == FT_ECLOSED:
                    raise ValueError("the event socket is closed")
                if r != FT_ETIMEDOUT:
                    _raise(&e)
                if interruptible:
                    PyErr_CheckSignals()
                if _expired(&deadline, ms):
                    return False
        finally:
            self.users -= 1
            if self.closed and self.users == 0 and self.ev != NULL:
                ft_events_close(self.ev)
                self.ev = NULL

    def read(self):
        """Pending notifications, decoded, without blocking: a list of (kind, ifindex, flags, mtu, family,
        address bytes, prefix, name)."""
        cdef ft_err e
        cdef int n, i
        cdef ft_device_event *x
        self._check()
        n = ft_events_read(self.ev, self.out, _EVENTS_PER_READ, &e)
        if n == FT_EAGAIN:
            return []
        if n < 0:
            _raise(&e)
        events = []
        for i in range(n):
            x = &self.out[i]
            size = 4 if x.addr.family == 4 else 16
            events.append((x.kind, x.ifindex, x.flags, x.mtu, x.addr.family,
                           PyBytes_FromStringAndSize(<char *>x.addr.bytes, size) if x.addr.family else b"",
                           x.addr.prefix, x.name.decode("utf-8", "replace")))
        return events

    def _test_notify(self, int what, int type, uint64_t luid, uint32_t ifindex, int family=0,
                     bytes address=b"", int prefix=0, uint32_t mtu=0, bint connected=False):
        """Test only (Windows): calls the notification callback with the row the system would pass; what 0 is an
        interface row (of family 4 or 6), 1 an address row; type is a MIB_NOTIFICATION_TYPE."""
        cdef ft_err e
        cdef ft_addr a
        self._check()
        memset(&a, 0, sizeof(a))
        if family:
            if len(address) != (4 if family == 4 else 16) or not 0 <= prefix <= 255:
                raise ValueError("the address must have 4 (family 4) or 16 bytes, the prefix 0..255")
            a.family = family
            a.prefix = <uint8_t>prefix
            memcpy(a.bytes, <char *>address, len(address))
        if ft_events_test_notify(self.ev, what, type, luid, ifindex, &a if family else NULL, mtu, connected,
                                 &e) != FT_OK:
            _raise(&e)

    def close(self):
        """Stops the notifications (Windows: once no callback runs any more) and wakes every wait()."""
        if self.closed:
            return
        self.closed = True
        if self.ev != NULL:
            ft_events_shutdown(self.ev)
            self.dropped_at_close = ft_events_dropped(self.ev)
            if self.users == 0:
                ft_events_close(self.ev)
                self.ev = NULL
