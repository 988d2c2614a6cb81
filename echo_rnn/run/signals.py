"""SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session): turned into a request to
stop at a safe point (train, sweep), or into an exception that the command line turns into
one line and exit 130 / 143 / 129. Every handler is put back on the way out: no library call
leaves the process's handlers changed."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Iterator

# SIGHUP ends a run as SIGTERM does (it is how long runs usually die: the terminal or the
# ssh session closes). Not on Windows, which has no SIGHUP.
SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())
# The ones that end a command as an exception (SIGINT is KeyboardInterrupt already).
TERMINATING = tuple(s for s in SIGNALS if s != signal.SIGINT)


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised like KeyboardInterrupt is for SIGINT (so ``finally`` blocks
    run); ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def terminate_raises() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Terminated` instead of killing the
    process."""
    if not _in_main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERMINATING}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def stop_requests(
    on_signal: Callable[[int], None] | None = None, insist: bool = True
) -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM/SIGHUP into a request to stop: yields a list that holds the signal
    numbers received, and calls ``on_signal(signum)`` for each. With ``insist``, a second
    signal acts as it did before (the user insists: KeyboardInterrupt, Terminated, or
    death). Outside the main thread (where Python allows no handlers) the list stays empty."""
    received: list[int] = []
    if not _in_main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum, frame):
        if received and insist:
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        received.append(signum)
        if on_signal is not None:
            on_signal(signum)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def exit_status(signum: int) -> int:
    """The shell's status for death by ``signum``: 130 for SIGINT, 143 for SIGTERM, 129 for
    SIGHUP."""
    return 128 + int(signum)
