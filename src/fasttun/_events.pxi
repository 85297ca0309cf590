# Device events (included by _core.pyx): a thin wrapper over csrc/events/ft_events.c. The policy (which change
# is which event, the async iterator) lives in fasttun/events.py.

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

    ctypedef struct ft_events:
        pass

    ft_events *ft_events_open(uint32_t ifindex, ft_err *e)
    int ft_events_fd(const ft_events *ev)
    int ft_events_read(ft_events *ev, ft_device_event *out, int max, ft_err *e)
    void ft_events_close(ft_events *ev)


EV_LINK = FT_EV_LINK
EV_LINK_REMOVED = FT_EV_LINK_REMOVED
EV_ADDR_ADDED = FT_EV_ADDR_ADDED
EV_ADDR_REMOVED = FT_EV_ADDR_REMOVED
EV_OVERFLOW = FT_EV_OVERFLOW

cdef enum:
    _EVENTS_PER_READ = 64


cdef class EventSocket:
    """rtnetlink notifications about one interface (0: all) of the calling thread's network namespace."""

    cdef ft_events *ev
    cdef ft_device_event out[_EVENTS_PER_READ]

    def __cinit__(self, uint32_t ifindex):
        cdef ft_err e
        self.ev = ft_events_open(ifindex, &e)
        if self.ev == NULL:
            _raise(&e)

    def __dealloc__(self):
        ft_events_close(self.ev)
        self.ev = NULL

    def fileno(self):
        if self.ev == NULL:
            raise ValueError("the event socket is closed")
        return ft_events_fd(self.ev)

    def read(self):
        """Pending notifications, decoded, without blocking: a list of (kind, ifindex, flags, mtu, family,
        address bytes, prefix, name)."""
        cdef ft_err e
        cdef int n, i
        cdef ft_device_event *x
        if self.ev == NULL:
            raise ValueError("the event socket is closed")
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

    def close(self):
        ft_events_close(self.ev)
        self.ev = NULL
