"""Put on PYTHONPATH, this makes a Linux interpreter's signal handling look like Windows' before the program
starts: the signal module without the POSIX calls Windows lacks (pthread_sigmask, sigwait, ...) and an asyncio
loop whose add_signal_handler raises NotImplementedError, as Windows' loops do. Programs that pass under it handle
Ctrl-C and SIGTERM the way Windows lets them (signal.signal on the main thread)."""

import asyncio
import signal

for _name in ("pthread_sigmask", "sigwait", "sigwaitinfo", "sigtimedwait", "pthread_kill", "sigpending",
              "siginterrupt", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGALRM", "SIG_BLOCK", "SIG_UNBLOCK",
              "SIG_SETMASK"):
    if hasattr(signal, _name):
        delattr(signal, _name)


def _no_signal_handlers(self, *args, **kwargs):
    raise NotImplementedError


asyncio.AbstractEventLoop.add_signal_handler = _no_signal_handlers  # type: ignore[method-assign]
asyncio.AbstractEventLoop.remove_signal_handler = _no_signal_handlers  # type: ignore[method-assign]
for _cls in vars(asyncio.unix_events).values():
    if isinstance(_cls, type) and "add_signal_handler" in vars(_cls):
        _cls.add_signal_handler = _no_signal_handlers
        _cls.remove_signal_handler = _no_signal_handlers
