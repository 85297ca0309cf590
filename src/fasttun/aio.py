"""asyncio for fasttun devices: receive batches and send packets in coroutines, zero-copy, without blocking the loop.

For example::

    from fasttun import aio

    async with aio.batches(tun, batch_size=64) as stream:
        async for batch in stream:                     # views valid until the next iteration
            replies = icmp.echo_replies(batch)         # one Batch of replies, or None
            if replies is not None:
                await aio.send_batch(tun, replies)     # waits for room (policy "wait") without blocking

    batch = await aio.recv_batch(tun, 64, timeout=1.0)  # one batch (empty after the timeout), yours to keep

How the device is driven
    On Linux the event loop drives the device itself: while a coroutine waits for packets, each queue's file
    descriptor is registered with ``loop.add_reader``; when one is readable, ``recv_batch(timeout=0)`` takes what
    is queued. No thread and no timer is involved, and a batch is read only when a coroutine asks for one. (A
    stream keeps its registration between batches, saving two ``epoll_ctl`` calls per wait, until the first
    readiness nobody waits for or its end; a stream whose device always has packets lets the loop run other
    callbacks once every 8 batches, since its iteration then never suspends.) A
    sender that finds the device full (policy ``"wait"``) waits for it with ``loop.add_writer``. The same works
    on the default loop and on uvloop.

    The in-memory pair and Wintun (Windows) have no file descriptor: there a reader thread waits on the device
    (without the GIL and without a timeout), hands each batch to the loop with one ``call_soon_threadsafe`` and
    waits until the coroutine asks for the next batch before it reads again. A sender that finds a pair full
    waits in the loop's default executor.

How long a batch's views stay valid
    A batch yielded by ``async for`` is valid until you ask for the next one (the next iteration) or leave the
    loop; copy (``batch.copy()``, ``bytes(view)``) whatever you keep longer. Precisely: on Linux the batch is an
    ordinary ``recv_batch`` batch and stays valid as long as anything references it or one of its views. On the
    pair and on Windows the views are released at the next iteration (using one then raises ``ValueError``;
    memory is never reused under a view that still has a buffer export, e.g. a NumPy array, since the reader
    then moves on to a fresh arena). ``aio.recv_batch`` always returns a batch that is valid as long as you keep
    it.

    ``transport.sendto(view)`` needs no copy: asyncio's datagram transports send at once or buffer
    ``bytes(view)``, and uvloop's keep a buffer export until the datagram is sent. A stream transport's
    ``write(view)`` on Python 3.12+ keeps the memoryview object itself until it is sent: on the pair and on
    Windows pass ``bytes(view)`` there. The same holds for anything else that keeps the view object (a queue, a
    list, another task that runs after the next iteration).

Leaving the loop
    ``break``, ``return``, an exception or a cancellation ends the stream at once in CPython (when the stream
    object is dropped); ``async with`` or ``await stream.aclose()`` make that explicit. Packets not yet handed to
    the coroutine stay on the device, where ``tun.recv()`` gets them. (One exception, on the pair and on Windows:
    a batch the reader thread read for a wait that was then cancelled is copied and handed out first by the next
    ``aio`` call on the device, not by ``tun.recv()``.) ``tun.close()`` inside the body, from
    another task or from another thread ends the iteration cleanly; a device that goes away (``ip link del``, the
    other end of a pair closed) raises ``TunClosedError``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import functools
import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Any, Optional, Union

from fasttun import _core
from fasttun._core import Batch
from fasttun._linux import LinuxTun
from fasttun._tun import FullPolicy, Tun, _log
from fasttun.errors import TunClosedError, TunFullError

__all__ = ["BatchStream", "batches", "recv_batch", "send", "send_batch"]

log = logging.getLogger("fasttun")

Packets = Union[Iterable[Any], Batch]


def _loop_driven(tun: Tun) -> bool:
    """True where the device has file descriptors the event loop can wait on (a Linux TUN device's queues)."""
    return isinstance(tun, LinuxTun)


def _descriptors(tun: Tun) -> list[int]:
    """The descriptors of a loop-driven device's queues."""
    assert isinstance(tun, LinuxTun)
    return [tun.fileno(q) for q in range(tun.queues)]


def _closed_error(tun: Tun) -> TunClosedError:
    return TunClosedError(9, f"{tun.name} is closed")


# ---- what the event loop waits for on one device; closing the device wakes all of it ----------------------

_Key = tuple[asyncio.AbstractEventLoop, bool, tuple[int, ...]]


class _Watch:
    """The asyncio state of one device: its descriptors registered with event loops (one registration per
    loop, direction and set of descriptors, shared by every coroutine waiting on them), the thread feeds reading
    it, and packets a feed had read when its consumer left (handed out first by the next aio call)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiting: dict[_Key, set[asyncio.Future[bool]]] = {}
        self.threads: dict[asyncio.AbstractEventLoop, int] = {}
        self.feeds: weakref.WeakSet[_ThreadFeed] = weakref.WeakSet()
        self.pushback: collections.deque[Batch] = collections.deque()

    def add(self, key: _Key, future: asyncio.Future[bool]) -> None:  # the loop
        loop, writable, fds = key
        futures = self.waiting.get(key)
        if futures is None:
            add = loop.add_writer if writable else loop.add_reader
            for fd in fds:
                add(fd, self.ready, key)
            futures = self.waiting[key] = set()
            self.threads[loop] = threading.get_ident()
        futures.add(future)

    def discard(self, key: _Key, future: asyncio.Future[bool], linger: bool = False) -> None:  # the loop
        futures = self.waiting.get(key)
        if futures is None:
            return
        futures.discard(future)
        if not futures and not linger:
            self.unregister(key)

    def unregister(self, key: _Key) -> None:
        loop, writable, fds = key
        del self.waiting[key]
        if loop.is_closed():
            return
        remove = loop.remove_writer if writable else loop.remove_reader
        for fd in fds:
            remove(fd)

    def release(self, key: _Key) -> None:  # the loop: a lingering registration nobody waits on goes
        if key in self.waiting and not self.waiting[key]:
            self.unregister(key)

    def ready(self, key: _Key) -> None:  # the loop: a descriptor is ready
        futures = self.waiting.get(key)
        if not futures:
            # A registration left in place for the next wait (a stream between two batches): nobody waits
            # now, so stop watching instead of being woken again and again by a level-triggered descriptor.
            if futures is not None:
                self.unregister(key)
            return
        for future in futures:
            if not future.done():
                future.set_result(True)

    def closed_in(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:  # that loop
        # The descriptors leave the loop before the device releases them (their numbers can be reused).
        for key in [k for k in self.waiting if k[0] is loop]:
            futures = self.waiting[key]
            self.unregister(key)
            for future in futures:
                if not future.done():
                    future.set_exception(exc)

    def on_close(self) -> None:  # Tun.close() on any thread, before the device is released; never raises
        try:
            self.pushback.clear()
            exc = TunClosedError(9, f"{self.name} is closed")
            for feed in list(self.feeds):
                feed.close(keep=False)
            for loop in {k[0] for k in list(self.waiting)}:
                if self.threads.get(loop) == threading.get_ident():
                    self.closed_in(loop, exc)
                    continue
                try:
                    loop.call_soon_threadsafe(self.closed_in, loop, exc)
                except RuntimeError:  # that loop is closed: nobody waits in it any more
                    pass
        except BaseException:  # noqa: BLE001 - close() must go on whatever happens here
            _log(log, logging.ERROR, "fasttun.aio: waking the waiters of %s failed", self.name, exc_info=True)


_watches: weakref.WeakKeyDictionary[Tun, _Watch] = weakref.WeakKeyDictionary()
_watches_lock = threading.Lock()


def _watch(tun: Tun) -> _Watch:
    with _watches_lock:
        watch = _watches.get(tun)
        if watch is None:
            watch = _watches[tun] = _Watch(tun.name)
            tun._on_close(watch.on_close)  # the watch must not refer to tun (a weak key)
        return watch


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def _wait_fds(tun: Tun, fds: list[int], writable: bool, timeout: Optional[float],
                    future: Optional[asyncio.Future[bool]] = None, linger: bool = False) -> bool:
    """Waits until a descriptor is ready (True) or ``timeout`` seconds passed (False); TunClosedError if the
    device is closed meanwhile. ``future`` (of the running loop) lets the caller end the wait early. With
    ``linger`` the descriptors stay registered after the wait, for the next one (a stream of batches: two
    epoll_ctl calls less per wait); they go at the first readiness nobody waits for, or with release()."""
    loop = future.get_loop() if future is not None else asyncio.get_running_loop()
    if tun.closed:
        raise _closed_error(tun)
    watch = _watch(tun)
    key = (loop, writable, tuple(fds))
    if future is None:
        future = loop.create_future()
    watch.add(key, future)
    timer = None
    if timeout is not None:
        timer = loop.call_later(max(0.0, timeout), _settle, future, False)
    try:
        return await future
    finally:
        if timer is not None:
            timer.cancel()
        watch.discard(key, future, linger)


# ---- a reader thread handing batches to the loop (the pair, Wintun) -----------------------------------


class _ThreadFeed:
    """Reader threads (one per queue) that hand each batch to the event loop and wait, without the GIL and
    without a timeout, until the coroutine asks for the next one (only then may the batch's views expire)."""

    def __init__(self, tun: Tun, loop: asyncio.AbstractEventLoop, batch_size: int, spin_us: int, adaptive: bool,
                 adaptive_pps: int) -> None:
        self.loop = loop
        self.watch = _watch(tun)
        self.lock = threading.RLock()  # RLock: a GC run inside the callback may close a stream on this thread
        self.ready: collections.deque[tuple[Batch, threading.Event]] = collections.deque()
        self.held: Optional[threading.Event] = None
        self.waiter: Optional[asyncio.Future[None]] = None
        self.is_closed = False
        self.keep_unread = True  # a consumer that leaves keeps what was read for it; a closing device does not
        self.outcome: Optional[BaseException] = None
        self.ended = 0
        self.events: list[threading.Event] = []
        self.local = threading.local()
        if tun.closed:
            raise _closed_error(tun)
        self.queues: list[_core.QueueReader] = []
        self.watch.feeds.add(self)
        try:
            for q in range(tun.queues):
                # Batches read while the feed closes still reach on_batch, which keeps them for the next call.
                self.queues.append(tun._start_queue_reader(q, self.on_batch, batch_size, spin_us, adaptive,
                                                           adaptive_pps, deliver_after_stop=True))
        except BaseException:
            self.close(keep=False)
            raise
        # Only this thread joins the reader threads; it tells the loop when they end on their own.
        self.joiner = threading.Thread(target=self.join_readers, name=f"fasttun-aio-{tun.name}", daemon=True)
        self.joiner.start()
        _live_feeds.add(self)

    def event(self) -> threading.Event:
        go: Optional[threading.Event] = getattr(self.local, "go", None)
        if go is None:
            go = self.local.go = threading.Event()
            with self.lock:
                self.events.append(go)
                if self.is_closed:
                    go.set()
        return go

    def on_batch(self, batch: Batch) -> None:  # a reader thread, with the GIL
        go = self.event()
        with self.lock:
            if self.is_closed:
                # Read after the consumer left (it was waiting when it went): keep the packets for the next
                # aio call, unless the device is closing.
                if self.keep_unread and len(batch):
                    self.watch.pushback.append(_core.make_batch(batch))
                return
            self.ready.append((batch, go))
        try:
            self.loop.call_soon_threadsafe(self.wake)
        except RuntimeError:  # the loop is closed while the stream still exists: nobody will ask
            self.close(keep=True)
        go.wait()  # until the coroutine asks for the next batch, or the stream closes
        go.clear()

    def wake(self) -> None:  # the loop
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def join_readers(self) -> None:  # the joiner thread
        outcome: Optional[BaseException] = None
        for q in self.queues:
            q.join(None)
            outcome = outcome or q.exception or q.error()
        with self.lock:
            self.outcome = outcome
            self.ended = 1
        try:
            self.loop.call_soon_threadsafe(self.wake)
        except RuntimeError:
            pass
        _live_feeds.discard(self)

    def release(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            held.set()

    async def next(self, tun: Tun) -> Batch:
        """The next batch, or StopAsyncIteration when the stream or the device is closed."""
        self.release()  # the previous batch's views expire now and its reader reads on
        while True:
            if self.watch.pushback and not self.is_closed:  # read earlier than anything in ready
                return self.watch.pushback.popleft()
            with self.lock:
                if self.is_closed:
                    raise StopAsyncIteration
                if self.ready:
                    batch, self.held = self.ready.popleft()
                    return batch
                ended, outcome = self.ended, self.outcome
            if tun.closed or ended:
                self.close(keep=True)
                if outcome is not None and not (isinstance(outcome, TunClosedError) and tun.closed):
                    raise outcome
                raise StopAsyncIteration
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def close(self, keep: bool) -> None:
        """Ends the feed (any thread, never blocks). With ``keep``, batches read but not yet handed to the
        coroutine are copied for the next aio call on the device."""
        with self.lock:
            if self.is_closed:
                return
            self.is_closed = True
            self.keep_unread = keep
            unread, self.ready = list(self.ready), collections.deque()
            if keep:  # still valid: their reader threads wait for them below
                self.watch.pushback.extend(_core.make_batch(b) for b, _ in unread if len(b))
            for q in self.queues:
                q.request_stop()
            events = list(self.events)
        self.held = None
        for go in events:
            go.set()
        waiter = self.waiter
        if waiter is not None:
            try:
                self.loop.call_soon_threadsafe(self.wake)
            except RuntimeError:
                pass

    def wait_ended(self, timeout: float) -> bool:
        joiner = getattr(self, "joiner", None)
        if joiner is None or joiner is threading.current_thread():
            return True
        joiner.join(timeout)
        return not joiner.is_alive()


_live_feeds: weakref.WeakSet[_ThreadFeed] = weakref.WeakSet()


@atexit.register
def _end_feeds_at_exit() -> None:
    # Registered after fasttun._tun's handler, so it runs before it: no reader may wait for a loop that is gone.
    for feed in list(_live_feeds):
        feed.close(keep=False)
        feed.wait_ended(2.0)


# ---- the stream of batches ------------------------------------------------------------------------------


_FAIR_SHARE = 8
"""Batches a stream hands out in a row, without waiting, before it lets the loop run other callbacks once."""


class BatchStream:
    """An async iterator of a device's batches (see :func:`batches`); also an async context manager."""

    def __init__(self, tun: Tun, batch_size: int = 64, *, spin_us: Optional[int] = None, adaptive: bool = True,
                 adaptive_pps: Optional[int] = None) -> None:
        if not isinstance(tun, Tun):
            raise TypeError(f"batches() needs a fasttun.Tun, not {type(tun).__name__}")
        self._tun = tun
        # checked now against the C core's limits, used when the stream starts its reader
        self._size: int = _core.check_limit("batch_size", batch_size)
        self._spin: int = _core.check_limit("spin_us", _core.DEFAULT_SPIN_US if spin_us is None else spin_us)
        self._adaptive = bool(adaptive)
        self._pps: int = _core.check_limit("adaptive_pps",
                                           _core.DEFAULT_ADAPTIVE_PPS if adaptive_pps is None else adaptive_pps)
        self._driven = _loop_driven(tun)
        self._fds: Optional[list[int]] = None
        self._feed: Optional[_ThreadFeed] = None
        self._waiter: Optional[asyncio.Future[bool]] = None  # a pending wait on the descriptors
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # where the descriptors may still be registered
        self._streak = 0  # batches handed out since the loop last ran anything else
        self._closed = False

    def __repr__(self) -> str:
        how = "event loop" if self._driven else "reader thread"
        return f"<fasttun.aio.BatchStream on {self._tun.name!r} ({how}, {'closed' if self._closed else 'open'})>"

    def __aiter__(self) -> BatchStream:
        return self

    async def __aenter__(self) -> BatchStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Ends the stream (any thread, never blocks); a coroutine waiting in it gets StopAsyncIteration.
        Packets not yet handed out stay on the device."""
        self._closed = True
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close(keep=True)
        waiter = self._waiter
        if waiter is not None:
            try:
                waiter.get_loop().call_soon_threadsafe(_settle, waiter, False)
            except RuntimeError:  # its loop is closed
                pass
        self._release_fds()

    def _release_fds(self) -> None:
        """Takes the descriptors' lingering registration (see _wait_fds) off the loop, unless somebody waits."""
        loop, self._loop = self._loop, None
        if loop is None or self._fds is None:
            return
        watch = _watches.get(self._tun)
        if watch is None:
            return
        key = (loop, False, tuple(self._fds))
        try:
            if watch.threads.get(loop) == threading.get_ident():
                watch.release(key)
            else:
                loop.call_soon_threadsafe(watch.release, key)
        except RuntimeError:  # that loop is closed: nothing is registered there any more
            pass

    def __del__(self) -> None:
        if getattr(self, "_feed", None) is not None or getattr(self, "_loop", None) is not None:
            self.close()

    async def __anext__(self) -> Batch:
        if self._closed:
            raise StopAsyncIteration
        if self._driven:
            return await self._next_from_fds()
        feed = self._feed
        if feed is None:
            if self._tun.closed:
                self._closed = True
                raise StopAsyncIteration
            pushback = _watch(self._tun).pushback
            if pushback:
                return pushback.popleft()
            feed = self._feed = _ThreadFeed(self._tun, asyncio.get_running_loop(), self._size, self._spin,
                                            self._adaptive, self._pps)
        try:
            return await feed.next(self._tun)
        except StopAsyncIteration:
            self.close()
            raise

    async def _next_from_fds(self) -> Batch:
        tun = self._tun
        if self._streak >= _FAIR_SHARE:
            # A device that always has packets would otherwise never let the loop run anything else (the
            # iteration does not wait): one turn of the loop every few batches.
            self._streak = 0
            await asyncio.sleep(0)
        while True:
            if self._closed or tun.closed:
                self._closed = True
                raise StopAsyncIteration
            try:
                batch = tun.recv_batch(self._size, timeout=0)
                if batch:
                    self._streak += 1
                    return batch
                self._streak = 0
                if self._fds is None:
                    self._fds = _descriptors(tun)
                self._waiter = waiter = asyncio.get_running_loop().create_future()
                self._loop = waiter.get_loop()
                try:
                    await _wait_fds(tun, self._fds, False, None, waiter, linger=True)
                finally:
                    self._waiter = None
            except TunClosedError:
                if tun.closed:  # closed on purpose: the end of the stream
                    self._closed = True
                    raise StopAsyncIteration from None
                raise


def batches(tun: Tun, batch_size: int = 64, *, spin_us: Optional[int] = None, adaptive: bool = True,
            adaptive_pps: Optional[int] = None) -> BatchStream:
    """The device's packets as an async iterator of batches of up to ``batch_size`` packets, each valid until
    the next iteration (see the module's documentation). ``spin_us``, ``adaptive`` and ``adaptive_pps`` tune the
    reader thread where one is used (pair, Windows), as in :meth:`Tun.start_reader`."""
    return BatchStream(tun, batch_size, spin_us=spin_us, adaptive=adaptive, adaptive_pps=adaptive_pps)


# ---- one batch, and sending ------------------------------------------------------------------------------


async def recv_batch(tun: Tun, max_packets: int = 64, timeout: Optional[float] = None) -> Batch:
    """Up to ``max_packets`` packets (at least one, or an empty batch once ``timeout`` seconds passed). The batch
    is yours as long as you keep it. On the pair and on Windows a call that has to wait starts a reader thread
    for the wait and copies what it reads: for a stream of batches, :func:`batches` is the fast way."""
    _core.check_limit("max_packets", max_packets)
    _core._timeout_check(timeout)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    pushback = _watch(tun).pushback
    if pushback:
        return pushback.popleft()
    batch = tun.recv_batch(max_packets, timeout=0)
    if batch or deadline is not None and timeout == 0:
        return batch
    if not _loop_driven(tun):
        stream = BatchStream(tun, max_packets)
        try:
            got = await asyncio.wait_for(stream.__anext__(), timeout)
            return _core.make_batch(got) if got else got  # a copy: the stream's views end with it
        except asyncio.TimeoutError:
            return batch
        except StopAsyncIteration:
            raise _closed_error(tun) from None
        finally:
            stream.close()
    fds = _descriptors(tun)
    while True:
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return batch
        await _wait_fds(tun, fds, False, left)
        batch = tun.recv_batch(max_packets, timeout=0)
        if batch:
            return batch


async def send(tun: Tun, packet: Any, *, on_full: Optional[FullPolicy] = None,
               timeout: Optional[float] = None) -> int:
    """Sends one packet as :meth:`Tun.send` does; under the policy ``"wait"`` the coroutine (not the loop) waits
    for room, up to ``timeout`` seconds (default: the device's ``send_timeout``). Returns 1 if it went, 0 if it
    was dropped (and counted)."""
    return await send_batch(tun, [packet], on_full=on_full, timeout=timeout)


async def send_batch(tun: Tun, packets: Packets, *, on_full: Optional[FullPolicy] = None,
                     timeout: Optional[float] = None) -> int:
    """Sends packets as :meth:`Tun.send_batch` does (all validated first); under the policy ``"wait"`` the
    coroutine waits for room without blocking the loop (Linux: ``add_writer`` on the device; a pair: in the
    loop's default executor), up to ``timeout`` seconds (default: the device's ``send_timeout``), then drops and
    counts the rest. Returns how many were sent."""
    policy, limit = tun._send_settings(on_full, timeout)
    if policy != _core.POLICY_WAIT:
        return tun.send_batch(packets, on_full=on_full, timeout=timeout)
    _core._timeout_check(timeout)
    seq: Union[list[Any], Batch] = packets if isinstance(packets, (list, Batch)) else list(packets)
    loop = asyncio.get_running_loop()
    deadline = None if limit is None else loop.time() + limit
    sent = 0
    while True:
        rest = seq if sent == 0 else seq[sent:]
        try:
            return sent + tun.send_batch(rest, on_full="raise")
        except TunFullError as full:
            sent += full.sent
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return sent + tun.send_batch(seq[sent:], on_full="drop")  # what finds no room is counted
        if not _loop_driven(tun):
            run = functools.partial(tun.send_batch, seq[sent:], on_full="wait", timeout=left)
            return sent + await loop.run_in_executor(None, run)
        await _wait_fds(tun, _descriptors(tun)[:1], True, left)
