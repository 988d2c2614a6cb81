"""One writer at a time: a run directory, or a sweep, is held by one process.

The lock is ``DIR/.lock``, locked with ``flock`` and holding the holder's pid (so that the
process refused can say who holds it). The kernel releases a ``flock`` when its holder
dies, however it dies (``kill -9`` included): a lock file left behind by a dead process
blocks no one. The file itself stays; only the lock on it counts."""

from __future__ import annotations

import errno
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locking, as before locks existed
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class Busy(RuntimeError):
    """Another process holds the lock; the message names it and the lock file."""

    def __init__(self, what: str, directory: Path, pid: int | None) -> None:
        self.what, self.directory, self.pid = what, Path(directory), pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{what} {directory} is in use by {holder} (it holds "
            f"{self.directory / LOCK_NAME}); wait for it to end, or stop it, and "
            "try again"
        )

    def __reduce__(self):  # crosses processes: a sweep's workers, torchrun's ranks
        return (type(self), (self.what, self.directory, self.pid))


class DirLock:
    """An exclusive, non-blocking lock on ``directory`` (which must exist). ``release()``
    (or leaving the ``with`` block) gives it back; so does the process's death."""

    def __init__(self, directory: str | Path, what: str = "run") -> None:
        self.directory = Path(directory)
        self.fd: int | None = None
        if fcntl is None:
            return
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise Busy(what, self.directory, holder) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "DirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
