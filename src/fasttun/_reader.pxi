# Reader threads: the C thread calling back into Python, the registry of running readers. Included by _core.pyx.

# Declared here rather than cimported: Cython's cpython.pystate declares these without nogil, and the reader
# thread calls them without holding the GIL (that is what they are for).
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
    ft_forward *forward       # a forward's sink (NULL: a Python callback)
    ft_atomic_int divert      # a forward whose ends have a capture hook: batches go through Python to be seen


# Every reader whose thread has started and not yet ended, owned here: a thread must never run on a freed
# object, and at exit and after fork() we need them all. The thread removes its reader when it ends.
cdef set _running = set()
# Every open device, for fork(): the child's copies must forget the parent's readers and calls.
_devices = _weakref.WeakSet()


cdef int _on_batch(void *user, ft_batch *b) noexcept nogil:
    cdef ReaderGlue *g = <ReaderGlue *>user
    if g.forward != NULL and not g.divert:
        return ft_forward_batch(g.forward, b)   # device to device: no GIL, no Python
    with gil:
        return (<QueueReader>g.reader)._deliver(b)


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
        (<QueueReader>g.reader)._forward_ended()
        # The callback (and all it holds: devices in cycles, say) goes first, while nothing else runs: freeing the
        # reader below may release the GIL midway, and a collection on another thread must not find what the
        # callback held still reachable from a reader that is already out of the registry.
        (<QueueReader>g.reader).callback = None
        (<QueueReader>g.reader).on_error = None
        # This may free the reader (and g with it), even the device: nothing of theirs is touched afterwards.
        _running.discard(<object>g.reader)
    PyGILState_Release(state)


# A failure of on_error itself goes to sys.unraisablehook (Cython reports what escapes a noexcept function), so
# that the callback's exception stays the one stop()/join() raise again.
cdef void _report_callback_error(on_error, exc) noexcept:
    on_error(exc)


def _after_fork_in_child():
    """The child of a fork() has none of the parent's reader threads: forget them and every call in progress,
    so that nothing in the child waits for them (close() returns, every use raises TunClosedError)."""
    cdef QueueReader q
    cdef Device d
    for q in list(_running):
        if q.reader != NULL:
            ft_reader_forget_after_fork(q.reader)
            q.busy = 0     # the threads that were joining it are the parent's
            q._release()   # the child's copies of its events
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
    cdef object on_error                        # called with the callback's exception (logs it, stops the other queues)
    cdef readonly int queue
    cdef readonly object exception
    cdef readonly uint64_t arena_swaps
    cdef ReaderGlue glue
    # A batch whose thread got the GIL after a stop was requested goes to the callback all the same (fasttun.aio
    # keeps such batches for its next call) instead of being declined and counted as undelivered.
    cdef bint deliver_after_stop
    # Calls inside the C reader without the GIL (join): the reader is released only when none is left.
    cdef int busy
    # What stays once the ended thread's reader is released (join): its counters, state and error.
    cdef ft_reader_stats final_stats
    cdef int final_state
    cdef object final_error
    # A forward (Device.start_reader with a sink): batches go to the sink's device in C (core/ft_forward.h).
    cdef ft_forward *forward
    cdef readonly Device sink
    cdef object __weakref__

    @staticmethod
    cdef QueueReader _start(Device device, int queue, callback, uint32_t batch_size, uint32_t spin_us,
                            bint adaptive, uint32_t adaptive_pps, uint32_t pipeline, on_error, bint deliver_after_stop,
                            Device sink=None, int sink_queue=0, int sink_policy=FT_FULL_DROP, int sink_timeout_ms=-1):
        """The numbers were checked against the C core's limits (Device.start_reader): the arenas can be sized.
        With a sink, every batch is sent to it in C (a forward) instead of being handed to a callback."""
        cdef QueueReader q = QueueReader.__new__(QueueReader)
        cdef ft_reader_config cfg
        cdef ft_err e
        q.device = device
        q.queue = queue
        q.callback = callback
        q.on_error = on_error
        q.deliver_after_stop = deliver_after_stop
        q.final_state = FT_READER_STOPPED
        q.batch_size = batch_size
        if sink is not None:
            q.forward = ft_forward_new(sink.dev, sink_queue, batch_size, device.super_mode, sink_policy,
                                       sink_timeout_ms, &e)
            if q.forward == NULL:
                _raise(&e)
            q.sink = sink
            q.glue.forward = q.forward
            device._forwards().add(q)
            sink._forwards().add(q)
            q._update_divert()
        q.arenas = [_receive_arena(batch_size, device.dev.max_packet) for _ in range(max(pipeline, 1u))]
        for k in range(len(q.arenas)):
            (<Arena>q.arenas[k]).attach(&q.bs[k])
        cfg.batch_size = batch_size
        cfg.pipeline = pipeline
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
        ft_forward_free(self.forward)   # the thread that used it has ended
        self.forward = NULL

    cdef void _update_divert(self) noexcept:
        """A forward whose source or sink has a capture hook hands its batches to Python, where the hooks see
        them; without one it never takes the GIL."""
        if self.forward != NULL:
            self.glue.divert = self.device.tap is not None or self.sink.tap is not None

    @property
    def diverted(self):
        """A forward's batches go through Python (a capture hook is attached at one of its ends)."""
        return self.forward != NULL and bool(self.glue.divert)

    cdef void _forward_ended(self) noexcept:
        # On the reader's thread as it ends, with the GIL: a forward that its sink ended reports why, as a
        # callback's exception would be.
        if self.forward != NULL and self.exception is None and self.reader != NULL and \
                ft_reader_state(self.reader) == FT_READER_CALLBACK_STOPPED:
            self._forward_ended_now()

    cdef int _forward_seen(self, Batch batch, ft_batch *b):
        """A forward's batch with capture hooks on: sent in C as always, seen by the hooks around it."""
        cdef int rc
        cdef const uint32_t *went
        cdef uint32_t nwent, k
        ft_forward_record(self.forward, 1)
        with nogil:
            rc = ft_forward_batch(self.forward, b)
        nwent = ft_forward_went(self.forward, &went)
        ft_forward_record(self.forward, 0)
        if self.sink.tap is not None and nwent > 0:
            self.sink._tapped(batch if nwent == batch.count else [batch[went[k]] for k in range(nwent)], TAP_SENT)
        if rc != 0:
            self._forward_ended_now()
        return rc

    cdef void _forward_ended_now(self) noexcept:
        cdef ft_err e
        ft_forward_error(self.forward, &e)
        self.exception = _exception(&e)
        if self.on_error is not None:
            _report_callback_error(self.on_error, self.exception)

    cdef int _deliver(self, ft_batch *b):
        # The stop may have come while this thread waited for the GIL (from another queue's callback, say): no
        # callback starts after stop() or close() returned; the batch is counted as undelivered.
        if not self.deliver_after_stop and self.reader != NULL and ft_reader_stopping(self.reader):
            return FT_READER_DECLINED
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
        if self.device.tap is not None:
            self.device._tapped(batch, TAP_RECEIVED)
        cdef int stop = 0
        # The user's callback is called directly: a Python wrapper around it (for the log line below) was one
        # more Python frame per batch, about 5% of the reader's CPU per wake-up on a slow host (90 -> 85 us).
        if self.forward != NULL:
            stop = self._forward_seen(batch, b)
        else:
            try:
                self.callback(batch)
            except BaseException as exc:
                self.exception = exc
                stop = 1
                if self.on_error is not None:
                    _report_callback_error(self.on_error, exc)
        if batch._expire():
            # Somebody still holds a buffer into this arena: leave it to them and read into a new one.
            arena = _receive_arena(arena.max, self.device.dev.max_packet)
            self.arenas[slot] = arena
            arena.attach(b)
            b.max = self.batch_size
            self.arena_swaps += 1
            batch.arena = arena
        # Reuse the Batch object next time unless the callback kept a reference to it.
        if Py_REFCNT(batch) == 1:
            self.batch = batch
        return stop

    def request_stop(self):
        if self.reader != NULL:
            ft_reader_request_stop(self.reader)

    def join(self, timeout=None):
        """Waits for the thread to end; True once it has, and then its OS resources (events, arenas) are
        released: only the counters, the state and the error stay. Handles Ctrl-C between slices."""
        cdef int r
        cdef int slice_ms
        if self.reader == NULL:
            return True
        if ft_reader_is_current_thread(self.reader):
            raise RuntimeError("a reader cannot wait for itself: call stop() from another thread, or return "
                               "from the callback after requesting the stop")
        cdef Deadline deadline = _deadline(_timeout_ms(timeout))
        cdef ft_reader *reader = self.reader
        while True:
            slice_ms = _slice_ms(&deadline)
            self.busy += 1
            with nogil:
                r = ft_reader_join(reader, slice_ms)
            self.busy -= 1
            if r == FT_OK:
                self._release()
                return True
            PyErr_CheckSignals()
            if _expired(&deadline, slice_ms):
                return False

    cdef _release(self):
        # With the GIL, once the thread was joined and no other caller is inside the C reader: what a kept
        # Reader holds afterwards is plain memory, so thousands of stopped readers cost no descriptors.
        if self.reader == NULL or self.busy > 0 or not ft_reader_joined(self.reader):
            return
        ft_reader_get_stats(self.reader, &self.final_stats)
        self.final_state = ft_reader_state(self.reader)
        self.final_error = self._error()
        ft_reader_free(self.reader)   # joined: never waits
        self.reader = NULL
        self.arenas = None            # batches the callback kept hold their own arena
        self.batch = None
        ft_forward_free(self.forward)
        self.forward = NULL
        self.glue.forward = NULL

    @property
    def state(self):
        return ft_reader_state(self.reader) if self.reader != NULL else self.final_state

    cdef _error(self):
        cdef ft_err e
        if ft_reader_state(self.reader) != FT_READER_FAILED:
            return None
        ft_reader_error(self.reader, &e)
        return _exception(&e)

    def error(self):
        """The exception for a reader that ended because of the device (None otherwise)."""
        return self._error() if self.reader != NULL else self.final_error

    def stats(self):
        cdef ft_reader_stats s
        if self.reader == NULL:
            return _counters(READER_STATS_FIELDS, self.final_stats.values)
        ft_reader_get_stats(self.reader, &s)
        return _counters(READER_STATS_FIELDS, s.values)

    def is_current_thread(self):
        return self.reader != NULL and ft_reader_is_current_thread(self.reader)


READER_RUNNING = FT_READER_RUNNING
READER_STOPPED = FT_READER_STOPPED
READER_CALLBACK_STOPPED = FT_READER_CALLBACK_STOPPED
READER_FAILED = FT_READER_FAILED
