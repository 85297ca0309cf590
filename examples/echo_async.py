"""The ICMP/ICMPv6 echo responder of examples/echo.py, in asyncio: ``async for`` over the device's batches.

    sudo python examples/echo_async.py --name ftecho0 --address 10.97.0.1/24 --address fd00:97::1/64 [--uvloop]
    # meanwhile:  ping 10.97.0.2   and   ping -6 fd00:97::2

On Linux the event loop itself waits on the device (no thread); replies go out with ``aio.send_batch``, which
waits for room in the coroutine, never in the loop. SIGINT or SIGTERM closes the stream, which ends the
``async for``; the program then prints its counters and exits 0."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import fasttun
from fasttun import aio

from echo import Responder, argument_parser, open_device  # echo.py's responder; its replies go out here


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's own loop")
    return parser.parse_args(argv)


async def serve(tun: fasttun.Tun, batch_size: int) -> Responder:
    loop = asyncio.get_running_loop()
    responder = Responder(tun)
    async with aio.batches(tun, batch_size=batch_size) as stream:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, stream.close)
            except NotImplementedError:  # Windows' loops: a plain handler, handed to the loop
                signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stream.close))
        print(f"echo_async: answering pings behind {tun.name} ({', '.join(map(str, tun.addresses))}) on "
              f"{type(loop).__module__}.{type(loop).__name__}; stop with Ctrl-C", flush=True)
        async for batch in stream:
            replies = responder.replies_for(batch)
            if replies is not None:
                responder.replied += await aio.send_batch(tun, replies)
    return responder


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    tun = open_device(args, "echo_async")
    if tun is None:
        return 2
    with tun:
        loop: asyncio.AbstractEventLoop
        if args.uvloop:
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        try:
            responder = loop.run_until_complete(serve(tun, args.batch_size))
        finally:
            loop.close()
    print(f"echo_async: {responder.report()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
