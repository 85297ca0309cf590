"""One end of examples/udp_tunnel.py on our fake wintun.dll, for tests/test_udp_tunnel_windows.py (Windows only;
under Wine in the Windows sub-suite).

    python tests/fake_adapter_end.py FAKE_WINTUN_DLL [udp_tunnel.py arguments...]

The fake DLL keeps its rings in the process that loaded it, so the test cannot reach an adapter of another
process; this script runs the example's ``main()`` on its main thread (its signal handling as it is) and plays
the rest of the system on a control thread, through the fake's FakeWintun* exports, on the test's commands
(one a line on stdin; every answer one line on stdout, starting with "end "):

    feed PATH               inject the packets of PATH into the adapter's receive ring ("from the OS"), in order,
                            waiting while the ring is full; answers "end fed N"
    drain N SECONDS PATH    take what the tunnel wrote into the adapter (the send ring), up to N packets or until
                            SECONDS pass, appended to PATH; answers "end drained K"
    stop SIGNAL             raise SIGINT or SIGTERM in this process: the tunnel stops as it would on Ctrl-C or a
                            termination request, prints its "counters {json}" line and returns

PATH holds packets as records of a 4-byte big-endian length and the bytes. At the end this script prints
"end fake {json}" (the fake's counters: injected, received, released, sent, read_back...) and exits with the
tunnel's status. End of stdin stops the tunnel too, and a watchdog ends the process after --deadline seconds.

The fake adapter has a made-up LUID no IP Helper call finds (and Wine has none of those calls), so the tunnel's
mtu, addresses and up are left out of the adapter's configuration here (said on stderr); the data path does not
depend on them."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable

import fasttun

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the embeddable CPython does not add the script's folder
from packets import read_records, write_records  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "udp_tunnel.py"
DEADLINE = 600.0
COUNTERS = ("adapters", "adapter_handles", "sessions", "creates", "opens", "create_calls", "receive_calls",
            "receive_errors", "alloc_calls", "injected", "received", "released", "sent", "read_back", "event_misuse",
            "log_calls")


class FakeCounters(ctypes.Structure):
    """fake_wintun.h's fake_counters."""

    _fields_ = [(name, ctypes.c_long) for name in COUNTERS] + [
        ("last_capacity", ctypes.c_ulong), ("last_tunnel_type", ctypes.c_wchar * 128),
        ("last_requested_guid", ctypes.c_ubyte * 16), ("last_had_guid", ctypes.c_int)]


class Driver:
    """The test's side of the fake DLL in this process (the same module fasttun loaded: the same rings)."""

    def __init__(self, path: str) -> None:
        self.dll: Any = getattr(ctypes, "WinDLL")(path)
        self.buf = ctypes.create_string_buffer(65536)

    def session(self, timeout: float) -> bool:
        """Waits for the adapter's session (an inject of nothing answers -1 without one)."""
        deadline = time.monotonic() + timeout
        while self.dll.FakeWintunInject(None, None, 0) < 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def inject(self, packets: list[bytes], timeout: float = 30.0) -> int:
        """All of them, in order, waiting while the ring is full; how many went in."""
        done = 0
        deadline = time.monotonic() + timeout
        while done < len(packets) and time.monotonic() < deadline:
            chunk = packets[done:done + 256]
            bufs = [ctypes.create_string_buffer(p, len(p)) for p in chunk]
            ptrs = (ctypes.c_void_p * len(chunk))(*[ctypes.addressof(b) for b in bufs])
            sizes = (ctypes.c_ulong * len(chunk))(*[len(p) for p in chunk])
            got = self.dll.FakeWintunInject(ptrs, sizes, len(chunk))
            if got < 0:
                raise RuntimeError("the adapter has no session")
            done += got
            if got < len(chunk):
                time.sleep(0.002)  # the ring is full: the tunnel's reader makes room
        return done

    def drain(self, limit: int, timeout: float) -> list[bytes]:
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < limit:
            n = self.dll.FakeWintunReadSent(self.buf, len(self.buf))
            if n < 0:
                raise RuntimeError("a sent packet larger than 64 KiB")
            if n > 0:
                out.append(self.buf.raw[:n])
            elif time.monotonic() > deadline:
                break
            else:
                time.sleep(0.001)
        return out

    def counters(self) -> dict[str, int]:
        c = FakeCounters()
        self.dll.FakeWintunGetCounters(ctypes.byref(c))
        return {name: int(getattr(c, name)) for name in COUNTERS}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")  # one write: the tunnel's own lines never cut into it
    sys.stdout.flush()


def control(driver: Driver) -> None:
    """The test's commands, until stop or the end of stdin."""
    for line in sys.stdin:
        try:
            if not command(driver, line):
                return
        except Exception as exc:  # noqa: BLE001 - the test reads it as a failure of its command
            say(f"end error {line.strip()!r}: {exc!r}")
    signal.raise_signal(signal.SIGTERM)  # the test went away


def command(driver: Driver, line: str) -> bool:
    """Carries out one command; False after stop."""
    words = line.split()
    if not words:
        return True
    if words[0] == "feed" and len(words) == 2:
        if not driver.session(30.0):
            say("end error no session")
        else:
            say(f"end fed {driver.inject(read_records(words[1]))}")
    elif words[0] == "drain" and len(words) == 4:
        got = driver.drain(int(words[1]), float(words[2]))
        write_records(words[3], got, "ab")
        say(f"end drained {len(got)}")
    elif words[0] == "stop" and len(words) == 2 and words[1] in ("SIGINT", "SIGTERM"):
        signal.raise_signal(getattr(signal, words[1]))
        return False
    else:
        say(f"end error unknown command {line.strip()!r}")
    return True


def open_adapter(name: str, **options: Any) -> fasttun.Tun:
    """fasttun.Tun for the example, without the IP Helper configuration the fake adapter cannot have."""
    left_out = {k: options.pop(k) for k in ("mtu", "addresses", "up") if k in options}
    print(f"fake_adapter_end: {name}: left out of the adapter's configuration (IP Helper): {left_out}",
          file=sys.stderr, flush=True)
    return fasttun.Tun(name, **options)


class _FasttunForExample(types.ModuleType):
    """fasttun as the example sees it: the same module, but Tun is open_adapter."""

    Tun: Callable[..., fasttun.Tun] = staticmethod(open_adapter)

    def __getattr__(self, name: str) -> Any:
        return getattr(fasttun, name)


def main(argv: list[str]) -> int:
    if sys.platform != "win32" or len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    dll = argv[0]
    fasttun.load_wintun(dll)
    driver = Driver(dll)
    spec = importlib.util.spec_from_file_location("udp_tunnel_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.fasttun = _FasttunForExample("fasttun")  # type: ignore[attr-defined]
    watchdog = threading.Timer(DEADLINE, lambda: os._exit(124))
    watchdog.daemon = True
    watchdog.start()
    threading.Thread(target=control, args=(driver,), name="fake-adapter-control", daemon=True).start()
    status = int(example.main(argv[1:]))
    say("end fake " + json.dumps(driver.counters()))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
