"""What the commands print, made safe to lose: a stdout closed under them (``echo-rnn train
| head -2``) stops the printing, not the work. And ``--json``'s one strict JSON object."""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator


class Console:
    """Stands in for ``sys.stdout``: writes pass through until the reader goes away
    (EPIPE); from then on they are dropped, and the stream's descriptor points at
    /dev/null, so that nothing later (a flush at exit) fails either. ``lost`` says whether
    that happened."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.lost = False

    def _gone(self) -> None:
        self.lost = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test's capture): dropping is enough

    def _guard(self, call, *args):
        if self.lost:
            return None
        try:
            return call(*args)
        except BrokenPipeError:
            self._gone()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._gone()
        return None

    def write(self, text: str) -> int:
        self._guard(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


def reopen_closed_stdout() -> bool:
    """A process started with its stdout closed (``echo-rnn train >&-``) gets /dev/null as
    descriptor 1 and ``sys.stdout`` over it; returns True when that was needed. Without it,
    the first file the command opens (a lock, an event file) would take descriptor 1, and
    anything written to stdout would land in it; and Python, with ``sys.stdout`` None, ends
    in a traceback and exit 120."""
    if sys.stdout is not None:
        return False
    try:
        os.fstat(1)
    except OSError:  # descriptor 1 is free: hold it with /dev/null
        fd = os.open(os.devnull, os.O_WRONLY)
        if fd != 1:
            os.dup2(fd, 1)
            os.close(fd)
        sys.stdout = open(1, "w", closefd=False)
    else:  # already taken by something else: not ours to write into
        sys.stdout = open(os.devnull, "w")
    return True


@contextmanager
def safe_stdout() -> Iterator[Console]:
    """``sys.stdout`` is a :class:`Console` inside, the stream it was outside."""
    before = sys.stdout
    console = Console(before)
    sys.stdout = console
    try:
        yield console
    finally:
        console.flush()
        sys.stdout = before


def _finite(obj: Any, named: bool) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        if not named:
            return None
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): _finite(v, named) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, named) for v in obj]
    return obj


def strict_json(obj: Any, name_nonfinite: bool = False) -> str:
    """``obj`` as strict JSON (RFC 8259): NaN and infinities, which JSON has no word for,
    become null, or with ``name_nonfinite`` the strings "NaN", "Infinity" and "-Infinity"
    (gradcheck's figures, where a learner's NaN is the finding, not a gap)."""
    return json.dumps(_finite(obj, name_nonfinite), indent=2, allow_nan=False)
