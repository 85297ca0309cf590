# cython: language_level=3
"""A bytes-like object whose buffer export runs Python code, for tests on every Python version.

Python 3.12+ lets a class define ``__buffer__`` (PEP 688); older versions cannot, so the tests that check what
fasttun does when a buffer export changes the world (a list shrinking under send_batch) use this instead."""

from cpython.buffer cimport PyBuffer_FillInfo


cdef class CallbackBuffer:
    """Exports ``data`` (bytes) read-only; ``callback()`` runs first, every time a buffer is requested."""

    cdef bytes data
    cdef object callback
    cdef readonly int calls

    def __init__(self, bytes data, callback):
        self.data = data
        self.callback = callback
        self.calls = 0

    def __getbuffer__(self, Py_buffer *view, int flags):
        self.calls += 1
        self.callback()
        PyBuffer_FillInfo(view, self, <char *>self.data, len(self.data), 1, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass


# ---- canaries: deliberate errors that prove a sanitized build really checks (never call them otherwise) ----

from libc.stdlib cimport malloc, free


def heap_overflow_canary(int size):
    """Writes one byte past a malloc'd block of ``size`` bytes: AddressSanitizer must stop the process."""
    cdef char *p = <char *>malloc(size)
    cdef volatile char *q = p
    q[size] = 1
    free(p)


def signed_overflow_canary(int value):
    """Adds 1 to ``value`` in C int arithmetic: with value == INT_MAX UndefinedBehaviorSanitizer must stop the
    process."""
    cdef volatile int v = value
    return v + 1
