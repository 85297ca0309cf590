"""Lifecycles: devices and readers dropped without close()/stop() and collected on any thread (main, the reader
thread itself, another thread) release their threads and descriptors and never block; interpreter exit with
readers running is prompt; fork with readers running never hangs the child and leaves the parent unaffected;
use after close of every public method and property raises TunClosedError, and a second close is harmless.

Whatever could hang runs in a child process with a timeout, so that a hang fails the test instead of the suite.
Threads are counted in /proc/self/task (the C reader threads are not Python threads), descriptors in
/proc/self/fd."""

from __future__ import annotations

import contextlib
import inspect
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fasttun
from conftest import require_root_environment
from packets import minimal_ipv4

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, fork and Linux TUN")


TESTS = Path(__file__).resolve().parent

PRELUDE = '''
import gc, os, socket, sys, threading, time
sys.path.insert(0, {tests!r})
import fasttun
from packets import minimal_ipv4

KIND = {kind!r}

def fds():
    return len(os.listdir("/proc/self/fd"))

def tasks():
    return len(os.listdir("/proc/self/task"))

def settle(pred, limit=3.0):
    deadline = time.monotonic() + limit
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pred()

def make():
    """A device with something to make its reader's callback run: (device, poke, cleanup)."""
    if KIND == "pair":
        a, b = fasttun.pair()
        return b, lambda: a.send(minimal_ipv4()), a.close
    tun = fasttun.Tun(None, addresses=["10.205.0.1/24"], up=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return tun, lambda: s.sendto(b"poke", ("10.205.0.2", 9)), s.close
'''


def run_child(code: str, kind: str = "pair", timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Runs code (after PRELUDE) in a fresh interpreter; fails the test if it does not end within timeout."""
    source = PRELUDE.format(tests=str(TESTS), kind=kind) + textwrap.dedent(code)
    try:
        return subprocess.run([sys.executable, "-X", "faulthandler", "-c", source], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    pytest.fail(f"the child process hung (killed after {timeout} s)\nstdout: {out}\nstderr: {err[-3000:]}")


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), \
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr[-3000:]}"


@pytest.fixture(params=["pair", "tun"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which device the child makes; for "tun" the test runs in a namespace the child inherits."""
    if request.param == "tun":
        if not sys.platform.startswith("linux"):
            pytest.skip("Linux TUN backend")
        require_root_environment()
        request.getfixturevalue("netns")
    return str(request.param)


# ---- dropped without close()/stop(), collected on any thread ----

DROP = '''
WHERE, PIPELINE = {where!r}, {pipeline!r}
ROUNDS = 20 if KIND == "pair" else 5
# One round first, so that what is allocated once per process (thread pools, logging) is in the baseline.
def round_():
    dev, poke, cleanup = make()
    holder = [dev]
    done = threading.Event()
    def on_batch(batch, holder=holder):
        if WHERE == "reader" and holder:
            holder.clear()          # the last reference from outside goes, here on the reader thread
            gc.collect()
            done.set()
    if WHERE != "no reader":
        dev.start_reader(on_batch, pipeline=PIPELINE)  # the Reader is dropped at once, never stopped
    del dev
    if WHERE in ("main", "no reader"):
        holder.clear()
        gc.collect()
    elif WHERE == "other":
        holder.clear()
        t = threading.Thread(target=gc.collect)
        t.start()
        t.join(5)
        assert not t.is_alive(), "gc.collect() on another thread blocked"
    elif WHERE == "another reader":
        # Collected on the reader thread of a different device (a pair that stays open meanwhile).
        ha, hb = fasttun.pair()
        collected = threading.Event()
        def collect(batch):
            if not collected.is_set():
                gc.collect()
                collected.set()
        helper = hb.start_reader(collect)
        holder.clear()
        while not collected.is_set():
            ha.send(minimal_ipv4())
            collected.wait(0.05)
        helper.stop(timeout=5)
        ha.close()
        hb.close()
    else:
        while not done.is_set():
            try:
                poke()
            except fasttun.TunClosedError:
                pass  # the callback's collection already closed the device (it sets done right after)
            done.wait(0.05)
    cleanup()
    gc.collect()

def links():
    return len(socket.if_nameindex())   # in this process's namespace: a dropped device must go away

round_()
settle(lambda: tasks() == 1)
base_fds, base_tasks, base_links = fds(), tasks(), links()
start = time.monotonic()
for _ in range(ROUNDS):
    round_()
settle(lambda: fds() <= base_fds and tasks() <= base_tasks and links() <= base_links)
print(f"{{ROUNDS}} rounds in {{time.monotonic() - start:.2f}} s; fds {{base_fds}} -> {{fds()}}, "
      f"threads {{base_tasks}} -> {{tasks()}}, links {{base_links}} -> {{links()}}, "
      f"python threads {{threading.active_count()}}")
assert fds() <= base_fds, "descriptors leaked"
assert tasks() <= base_tasks, "threads leaked"
assert links() <= base_links, "interfaces were left behind"
print("OK")
'''


@linux_only
@pytest.mark.parametrize("where", ["no reader", "main", "other", "reader", "another reader"])
def test_device_and_reader_dropped_without_close_release_everything(kind: str, where: str) -> None:
    assert_ok(run_child(DROP.format(where=where, pipeline=0), kind, timeout=15))


@linux_only
@pytest.mark.parametrize("where", ["main", "other", "reader", "another reader"])
def test_a_pipelined_reader_dropped_with_its_device_releases_both_threads(kind: str, where: str) -> None:
    # Two threads per reader: the one that reads ahead must end and be released too, whoever collects.
    assert_ok(run_child(DROP.format(where=where, pipeline=2), kind, timeout=15))


@linux_only
@pytest.mark.parametrize("pipeline", [0, 2])
def test_device_closed_but_reader_never_stopped_releases_everything(kind: str, pipeline: int) -> None:
    # The documented way to end a reader is stop() or closing the device; this pins the second.
    code = f'''
    def round_():
        dev, poke, cleanup = make()
        dev.start_reader(lambda batch: None, pipeline={pipeline})
        poke()
        dev.close()
        cleanup()
    round_()
    base_fds, base_tasks = fds(), tasks()
    for _ in range(10):
        round_()
    gc.collect()
    settle(lambda: fds() <= base_fds and tasks() <= base_tasks)
    print(f"fds {{base_fds}} -> {{fds()}}, threads {{base_tasks}} -> {{tasks()}}")
    assert fds() <= base_fds and tasks() <= base_tasks
    print("OK")
    '''
    assert_ok(run_child(code, kind))


# ---- interpreter exit with readers running ----

EXIT = '''
HOW, PIPELINE = {how!r}, {pipeline!r}
dev, poke, cleanup = make()
devices = [dev]
seen = [0]
def on_batch(batch):
    seen[0] += len(batch)
    time.sleep(0.002)
dev.start_reader(on_batch, pipeline=PIPELINE)
if KIND == "pair":
    a, b = fasttun.pair()
    devices.append(b)
    b.start_reader(on_batch, pipeline=PIPELINE)
    def flood():
        packets = [minimal_ipv4(60, i) for i in range(64)]
        try:
            while True:
                a.send_batch(packets, on_full="drop")
        except fasttun.TunError:
            pass
    threading.Thread(target=flood, daemon=True).start()
for _ in range(20):
    poke()
settle(lambda: seen[0] > 0)
assert seen[0] > 0
print("EXITING", time.monotonic(), flush=True)
print("OK", flush=True)
if HOW == "sys.exit":
    sys.exit(0)
'''


@linux_only
@pytest.mark.parametrize("how", ["fall off the end", "sys.exit"])
@pytest.mark.parametrize("pipeline", [0, 2])
def test_interpreter_exit_with_readers_running_is_prompt(kind: str, how: str, pipeline: int) -> None:
    proc = run_child(EXIT.format(how=how, pipeline=pipeline), kind, timeout=20)
    ended = time.monotonic()
    assert_ok(proc)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("EXITING"))
    took = ended - float(line.split()[1])
    assert took < 2.0, f"the interpreter took {took:.2f} s to exit with readers running"
    assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---- fork with readers running ----

FORK = '''
ACTION, END, PIPELINE = {action!r}, {end!r}, {pipeline!r}
import warnings
warnings.simplefilter("ignore", DeprecationWarning)   # fork() of a process with threads: we mean it
dev, poke, cleanup = make()
seen = [0]
reader = dev.start_reader(lambda batch: seen.__setitem__(0, seen[0] + len(batch)), pipeline=PIPELINE)
poke()
settle(lambda: seen[0] > 0)
pid = os.fork()
if pid == 0:
    started = time.monotonic()
    try:
        if ACTION == "close":
            dev.close()
        elif ACTION == "use":
            # Documented: what the child inherited is closed in it; calls raise TunClosedError, stats stay.
            for name, call in (("recv", lambda: dev.recv(timeout=0.05)), ("send", lambda: dev.send(minimal_ipv4())),
                               ("recv_batch", lambda: dev.recv_batch(8, timeout=0.05))):
                try:
                    call()
                except fasttun.TunClosedError:
                    continue
                except BaseException as exc:
                    print(f"child: {{name}} raised {{type(exc).__name__}}: {{exc}}", flush=True)
                    os._exit(6)
                print(f"child: {{name}} worked on a device inherited through fork()", flush=True)
                os._exit(6)
            dev.stats
            assert not reader.running
        took = time.monotonic() - started
        if took > 1.0:
            print(f"child: {{ACTION}} took {{took:.2f}} s", flush=True)
            os._exit(4)
    except BaseException as exc:
        print("child raised", type(exc).__name__, exc, flush=True)
        os._exit(3)
    if END == "os._exit":
        os._exit(0)
    sys.exit(0)
start = time.monotonic()
status = None
while time.monotonic() - start < 4.0:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.01)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("the child hung and was killed", flush=True)
    sys.exit(5)
child_took = time.monotonic() - start
print(f"child ended with status {{status}} after {{child_took:.2f}} s", flush=True)
assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
assert child_took < 1.5, "the child's exit was held up"
# The parent is unaffected: its reader still runs and delivers, close is prompt.
assert reader.running
before = seen[0]
for _ in range(50):
    poke()
    if settle(lambda: seen[0] > before, 0.1):
        break
assert seen[0] > before, "the parent's reader stopped delivering after the fork"
t0 = time.monotonic()
dev.close()
cleanup()
assert time.monotonic() - t0 < 2.0
assert reader.join(2.0)
print("OK")
'''


@linux_only
@pytest.mark.parametrize("action,end,pipeline", [
    ("close", "os._exit", 0),
    ("close", "sys.exit", 0),
    ("use", "os._exit", 0),
    ("use", "sys.exit", 0),
    ("nothing", "os._exit", 0),
    ("nothing", "sys.exit", 0),
    # the pipeline's reading thread (on a TUN device, with a descriptor table of its own) exists only in the
    # parent: the child's copies close as without it
    ("close", "sys.exit", 2),
    ("use", "os._exit", 2),
])
def test_fork_with_a_reader_running(kind: str, action: str, end: str, pipeline: int) -> None:
    assert_ok(run_child(FORK.format(action=action, end=end, pipeline=pipeline), kind, timeout=25))


FORK_LIVES = '''
import signal
dev = fasttun.Tun("ftfork0", addresses=["10.205.2.1/24"], up=True, queues={queues})
reader = dev.start_reader(lambda batch: None, pipeline={pipeline})
pid = os.fork()
if pid == 0:
    time.sleep(5)                # alive, doing nothing, while the parent closes the device
    os._exit(0)
try:
    dev.close()
    gone = settle(lambda: "ftfork0" not in [n for _, n in socket.if_nameindex()], 1.0)
    print("device gone while the child lives:", gone, flush=True)
    assert gone, "the forked child's copies of the descriptors keep the device alive"
finally:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print("OK")
'''


@linux_only
@pytest.mark.parametrize("queues,pipeline", [(1, 0), (1, 2), (3, 4)])
def test_the_device_goes_away_when_the_parent_closes_it_while_a_forked_child_lives(netns: Any, queues: int,
                                                                                   pipeline: int) -> None:
    assert_ok(run_child(FORK_LIVES.format(queues=queues, pipeline=pipeline), "tun", timeout=20))


# ---- use after close, of every public member ----

PACKET = minimal_ipv4()
CALLS: dict[str, Callable[[fasttun.Tun], Any]] = {
    "add_address": lambda t: t.add_address("10.206.0.1/24"),
    "remove_address": lambda t: t.remove_address("10.206.0.1/24"),
    "add_route": lambda t: t.add_route("10.207.0.0/16"),
    "remove_route": lambda t: t.remove_route("10.207.0.0/16"),
    "up": lambda t: t.up(),
    "down": lambda t: t.down(),
    "fileno": lambda t: t.fileno(),
    "recv": lambda t: t.recv(timeout=0.1),
    "recv_into": lambda t: t.recv_into(bytearray(2048), timeout=0.1),
    "recv_batch": lambda t: t.recv_batch(8, timeout=0.1),
    "send": lambda t: t.send(PACKET),
    "send_batch": lambda t: t.send_batch([PACKET, PACKET]),
    "set_dns": lambda t: t.set_dns(["10.0.0.53"]),
    "set_persist": lambda t: t.set_persist(False),
    "start_reader": lambda t: t.start_reader(lambda batch: None),
}
SETTABLE = {"mtu": 1400, "txqueuelen": 100}
KEPT_AFTER_CLOSE = {"closed", "name", "backend", "queues", "stats"}
"""What a closed device still answers: facts it remembers, and its final counters."""
LIFECYCLE = {"close"}


def public(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_"))


def is_property(cls: type, name: str) -> bool:
    return isinstance(inspect.getattr_static(cls, name), property)


DEVICE_CLASSES = (fasttun.Tun, fasttun.LinuxTun, fasttun.WintunAdapter, fasttun.PairDevice)


def test_every_public_member_of_tun_is_covered_here() -> None:
    # A new method or property of any kind of device must be added to a table above, so that its use after
    # close is tested.
    for cls in DEVICE_CLASSES:
        for name in public(cls):
            if is_property(cls, name):
                continue
            assert name in CALLS or name in LIFECYCLE, f"{cls.__name__}.{name} is not in this file's tables"
    assert public(fasttun.Reader) == ["join", "running", "stats", "stop"], "a new Reader member: add it below"


def call_bounded(fn: Callable[[], Any], limit: float = 2.0) -> Any:
    """Calls fn in a thread; fails the test if it is still running after limit seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"the call was still running after {limit} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextlib.contextmanager
def opened(kind: str) -> Iterator[fasttun.Tun]:
    """A device of the kind (the kind fixture's): one end of a pair, or a TUN device in the test's namespace."""
    if kind == "pair":
        a, b = fasttun.pair()
        with a:
            yield b
    else:
        yield fasttun.Tun("ftlc0", addresses=["10.205.1.1/24"], up=True)


KIND_CLASS = {"pair": fasttun.PairDevice, "tun": fasttun.LinuxTun}


def after_close_cases() -> list[Any]:
    cases = []
    for kind_, cls in KIND_CLASS.items():
        names = [n for n in public(cls) if n not in KEPT_AFTER_CLOSE | LIFECYCLE]
        names += [f"set {n}" for n in SETTABLE if hasattr(cls, n)]
        for name in names:
            cases.append(pytest.param(kind_, name, id=f"{kind_}-{name}"))
    return cases


@pytest.mark.parametrize("kind,name", after_close_cases(), indirect=["kind"])
def test_use_after_close_raises_tun_closed_error(kind: str, name: str) -> None:
    with opened(kind) as dev:
        dev.close()
        with pytest.raises(fasttun.TunClosedError):
            if name.startswith("set "):
                prop = name[4:]
                call_bounded(lambda: setattr(dev, prop, SETTABLE[prop]))
            elif is_property(KIND_CLASS[kind], name):
                call_bounded(lambda: getattr(dev, name))
            else:
                call_bounded(lambda: CALLS[name](dev))


def test_a_closed_device_keeps_its_facts_and_a_second_close_is_harmless(kind: str) -> None:
    with opened(kind) as dev:
        name, backend = dev.name, dev.backend
        if kind == "pair":
            dev.send(PACKET)
        dev.close()
        call_bounded(dev.close)                   # harmless, like closing a file twice
        with dev:                                 # and so is leaving a with-block after close()
            pass
        assert dev.closed and dev.name == name and dev.backend == backend and dev.queues == 1
        assert isinstance(dev.stats, fasttun.Stats)
        assert "closed" in repr(dev)


@pytest.mark.parametrize("ending", ["stop", "device closed", "peer closed", "callback raised"])
def test_a_stopped_reader_answers_every_member_and_stops_again_harmlessly(ending: str) -> None:
    a, b = fasttun.pair()
    with a, b:
        def on_batch(batch: fasttun.Batch) -> None:
            if ending == "callback raised":
                raise KeyError("from the callback")

        reader = b.start_reader(on_batch)
        a.send(PACKET)
        if ending == "stop":
            assert reader.stop(timeout=2)
        elif ending == "device closed":
            b.close()
        elif ending == "peer closed":
            a.close()
        if ending in ("peer closed", "callback raised"):
            with pytest.raises((fasttun.TunClosedError, KeyError)):
                reader.join(timeout=2)
        # The outcome is reported once; afterwards every member answers without raising or blocking.
        assert call_bounded(reader.stop) is True
        assert call_bounded(reader.join) is True
        assert call_bounded(lambda: reader.running) is False
        assert isinstance(call_bounded(lambda: reader.stats), fasttun.ReaderStats)
        assert "stopped" in repr(reader)


# ---- what a stopped reader or a closed object kept alive still holds ----

def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _stopped_reader(ending: str, pipeline: int) -> list[object]:
    a, b = fasttun.pair()

    def on_batch(batch: fasttun.Batch) -> None:
        if ending == "callback raised":
            raise KeyError("from the callback")

    got = threading.Event()
    reader = b.start_reader(lambda batch: (got.set(), on_batch(batch)), pipeline=pipeline)
    a.send(PACKET)
    assert got.wait(5)
    if ending == "stop":
        assert reader.stop(timeout=2)
    else:
        with pytest.raises(KeyError):
            reader.join(timeout=2)
    return [reader, a, b]


@linux_only
@pytest.mark.parametrize("pipeline", [0, 2])
@pytest.mark.parametrize("ending", ["stop", "callback raised"])
def test_a_stopped_reader_kept_for_its_stats_holds_no_descriptor(ending: str, pipeline: int) -> None:
    # stop()/join() release the thread's events and arenas; only the counters, state and outcome stay.
    kept = [_stopped_reader(ending, pipeline)]   # the first round allocates what a process allocates once
    before = _fds()
    pair = fasttun.pair()
    open_pair = _fds() - before                  # the devices are still open: what a pair holds
    for _ in range(20):
        kept.append(_stopped_reader(ending, pipeline))
    assert _fds() - before <= 21 * open_pair     # the readers hold nothing
    pair[0].close()
    pair[1].close()
    for reader, a, b in kept:
        assert reader.stats.packets == 1 and not reader.running and reader.stop() is True
        a.close()
        b.close()
    assert _fds() < before


def _closed(kind: str) -> object:
    if kind == "pair":
        a, b = fasttun.pair()
        reader = b.start_reader(len)
        a.close()
        b.close()
        return (a, b, reader)
    if kind == "udp":
        u = fasttun.UdpEndpoint(bind=("127.0.0.1", 0))
        reader = u.start_reader(len, pipeline=2)
        u.close()
        return (u, reader)
    if kind == "aio":
        import asyncio
        from fasttun import aio

        async def one_batch() -> tuple[object, ...]:
            a, b = fasttun.pair()
            a.send(PACKET)
            async for _batch in aio.batches(b):
                break
            a.close()
            b.close()
            return (a, b)
        return asyncio.run(one_batch())
    raise AssertionError(kind)


@linux_only
@pytest.mark.parametrize("kind", ["pair", "udp", "aio"])
def test_a_closed_object_kept_alive_holds_no_descriptor(kind: str) -> None:
    # close() gives back every descriptor at once (a device kept its close event until it was collected).
    kept = [_closed(kind)]
    before = _fds()
    for _ in range(20):
        kept.append(_closed(kind))
    # fasttun.aio's feed joins its reader threads on a thread of its own, right after the stream closed
    deadline = time.monotonic() + 5
    while _fds() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _fds() <= before
