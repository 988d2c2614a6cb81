"""File helpers: writing a file so that a crash never leaves it torn, and reading a regular
file no larger than a bound. The run, the plots, the tables and the config reader share them."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(
    path: str | Path, write: Callable[[BinaryIO], None], durable: bool = True
) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, then put it in place: a crash leaves
    the old file or the new one, never a torn one (temp file in the same directory, fsync,
    ``os.replace``). The file gets the mode a plain ``open`` would give it (0666 less the
    umask), not mkstemp's 0600.

    ``durable=False`` skips the fsync: a crash of the process still leaves the old file or
    the new one (the data are in the kernel's cache before the rename), but a crash of the
    machine may lose the newest file. Training's periodic checkpoints are written so (an
    fsync costs milliseconds, more than a hundred steps of a small run); a run's last
    checkpoint is durable."""
    path = Path(path)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666
            )
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save, its disk full mid-archive, raises the OSError and then, closing the
        # archive, a RuntimeError ("unexpected pos") over it: the OSError is what happened
        if isinstance(exc, RuntimeError) and isinstance(exc.__context__, OSError):
            raise exc.__context__ from None
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The contents of ``path``, a regular file of at most ``limit`` bytes: opened without
    blocking (a FIFO would wait for a writer) and checked before reading (a device such as
    /dev/zero never ends). OSError or ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            raise ValueError("is not a regular file (a device, a FIFO or a socket)")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is larger than {limit // 1024} KiB")
    return data
