# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, embedsignature=True
"""Thin wrappers over the C core: devices, arenas, batches and reader threads.

Everything a user sees is re-exported and documented by the ``fasttun`` package; this module holds no
policy of its own beyond turning C status codes into Python exceptions."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_FORMAT
from cpython.buffer cimport PyBUF_ND, PyBUF_STRIDES
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals, PyErr_Clear, PyErr_Occurred
from cpython.long cimport PyLong_CheckExact
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.mem cimport PyMem_Malloc, PyMem_Free, PyMem_RawMalloc, PyMem_RawFree
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_REFCNT, PyObject, _Py_REFCNT
from cpython.unicode cimport PyUnicode_AsWideCharString
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stddef cimport wchar_t
from libc.string cimport memcmp, memcpy, memset

import errno as _errno
import numbers as _numbers
import os as _os
import time as _time
import weakref as _weakref

from fasttun import errors as _errors

MAX_PACKET = FT_MAX_PACKET
MAX_BATCH = FT_MAX_BATCH
# The TUN_F_* offload bits (linux/if_tun.h) by the names Tun.offloads uses; defined once, in linux/ft_linux.h.
TUN_F = {"csum": FT_TUN_F_CSUM, "tso4": FT_TUN_F_TSO4, "tso6": FT_TUN_F_TSO6, "tso_ecn": FT_TUN_F_TSO_ECN,
         "uso4": FT_TUN_F_USO4, "uso6": FT_TUN_F_USO6}
MIN_MTU = FT_MIN_MTU
DEFAULT_SPIN_US = FT_READER_DEFAULT_SPIN_US
DEFAULT_ADAPTIVE_PPS = FT_READER_DEFAULT_ADAPTIVE_PPS
MAX_SPIN_US = FT_READER_MAX_SPIN_US
MAX_PIPELINE = FT_READER_MAX_PIPELINE
PAIR_DEFAULT_CAPACITY = FT_PAIR_DEFAULT_CAPACITY
PAIR_DEFAULT_CAPACITY_BYTES = FT_PAIR_DEFAULT_CAPACITY_BYTES
PAIR_MAX_CAPACITY = FT_PAIR_MAX_CAPACITY
PAIR_MIN_CAPACITY_BYTES = FT_PAIR_MIN_CAPACITY_BYTES
PAIR_MAX_CAPACITY_BYTES = FT_PAIR_MAX_CAPACITY_BYTES
LINUX_MAX_QUEUES = FT_LINUX_MAX_QUEUES
ALL_QUEUES = FT_ALL_QUEUES
WINTUN_DEFAULT_RING_CAPACITY = FT_WINTUN_DEFAULT_RING_CAPACITY
WINTUN_MIN_RING_CAPACITY = FT_WINTUN_MIN_RING_CAPACITY
WINTUN_MAX_RING_CAPACITY = FT_WINTUN_MAX_RING_CAPACITY
WINTUN_MAX_NAME = FT_WINTUN_MAX_NAME
OPEN_CREATE = FT_OPEN_CREATE
OPEN_EXISTING = FT_OPEN_EXISTING
OPEN_ANY = FT_OPEN_ANY
OFFLOAD_SEGMENTS = FT_OFFLOAD_SEGMENTS
OFFLOAD_SUPER = FT_OFFLOAD_SUPER
POLICY_DROP = FT_FULL_DROP
POLICY_WAIT = FT_FULL_WAIT
POLICY_RAISE = FT_FULL_RAISE

cdef enum:
    # Blocking calls wait in slices this long so that Ctrl-C is seen within about this many milliseconds.
    SLICE_MS = 100
    # Packets per send_batch call described on the stack; larger calls allocate their tables.
    SMALL = 64


# ---- errors -------------------------------------------------------------------------------------------
include "_errors.pxi"

# ---- arenas and batches -------------------------------------------------------------------------------
include "_batch.pxi"

# ---- devices ------------------------------------------------------------------------------------------
include "_device.pxi"

# ---- Wintun -------------------------------------------------------------------------------------------
include "_wintun.pxi"

# ---- packet helpers -----------------------------------------------------------------------------------
include "_packets.pxi"

# ---- readers ------------------------------------------------------------------------------------------
include "_reader.pxi"

# ---- device events (Linux rtnetlink) -------------------------------------------------------------------
include "_events.pxi"

# ---- UDP endpoints -------------------------------------------------------------------------------------
include "_udp.pxi"

# ---- batch builders ------------------------------------------------------------------------------------
include "_builder.pxi"
