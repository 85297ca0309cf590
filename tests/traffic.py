"""Traffic the TUN tests send from real sockets."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def flooding(destination: str) -> Iterator[None]:
    """A thread sends sequence-numbered UDP to `destination` (64 destination ports, so flows spread over queues)
    for as long as the block runs, or until the route goes with the device; it is stopped and joined on the way
    out, also on failure."""
    stop = threading.Event()

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(2_000_000):
                if stop.is_set():
                    return
                try:
                    s.sendto(struct.pack("!I", i), (destination, 9000 + i % 64))
                except OSError:
                    return  # the route went with the device

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join(10)
    assert not sender.is_alive()
