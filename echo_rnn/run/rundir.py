"""A run directory's life: named, created whole, claimed by one writer, opened for a resume,
emptied or removed when a run stops before its first checkpoint, and the one line a storage
failure becomes.

A run lives in ``LOGDIR/RUN_NAME/``: ``config.json`` from the moment the directory exists,
TensorBoard event files, ``checkpoints/last.pt`` and, at the end, ``summary.json``; ``.lock``
while a process writes it (:class:`echo_rnn.run.locks.DirLock`).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from echo_rnn.config import RESUME_FLAGS, TrainConfig
from echo_rnn.devices import resolve_device
from echo_rnn.engine import distributed
from echo_rnn.engine.backends import training_backend
from echo_rnn.errors import ConfigError
from echo_rnn.files import read_regular
from echo_rnn.run.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    written_checkpoint,
)
from echo_rnn.run.locks import LOCK_NAME, Busy, DirLock

# --- storage errors ------------------------------------------------------------------------


class StorageError(RuntimeError):
    """Writing the run failed (disk full, file system gone read-only); the checkpoints
    already written stay as they were."""


def storage_reason(exc: OSError) -> str:
    """Why writing failed, in words: "the disk is full" for ENOSPC and EDQUOT."""
    return (
        "the disk is full"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT)
        else (exc.strerror or str(exc))
    )


def storage_error(
    exc: BaseException | None, saved_step: int | None, run_dir: Path
) -> StorageError | None:
    """A StorageError saying what could not be written and what is kept (the checkpoint of
    ``saved_step``, the last one written or read), for an OSError from writing the run;
    None for anything else."""
    if not isinstance(exc, OSError):
        return None
    reason = storage_reason(exc)
    ckpt = checkpoint_path(run_dir)
    kept = (
        f"the last good checkpoint is {ckpt} (step {saved_step})"
        if saved_step is not None and ckpt.exists()
        else "no checkpoint was written"
    )
    return StorageError(f"could not write the run in {run_dir}: {reason}; {kept}")


class RunDirGone(StorageError):
    """The run directory was deleted or moved while the run wrote it: the run stops rather
    than make a new one in its place, or write into two."""


class HeldDir:
    """A run directory held from the moment its run claims it: what its path named then
    (``st_dev``, ``st_ino``) and a descriptor that follows the directory wherever it goes.
    :meth:`check` comes before each checkpoint and summary, the writes that go by path:
    without it, a run whose directory was deleted made a new one holding only
    ``checkpoints/`` and ``summary.json`` (and said "run saved"), and one whose directory
    was renamed wrote its events under the new name and its checkpoints under the old."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # O_PATH (Linux): held without the right to list it, which nothing here needs
        flags = (
            getattr(os, "O_PATH", os.O_RDONLY)
            | getattr(os, "O_DIRECTORY", 0)
            | getattr(os, "O_CLOEXEC", 0)
        )
        self.fd: int | None = os.open(self.path, flags)
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)

    def check(self, step: int, saved_step: int | None) -> None:
        """RunDirGone, saying where the run is now and what it keeps, unless the path still
        names the directory the run started writing."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self.identity:
                return
        except OSError:
            pass
        stopped = f"stopped at step {step}, nothing more was written"
        now = self.where_now()
        # removed: its links are gone (/proc marks the name "(deleted)" besides)
        if os.fstat(self.fd).st_nlink == 0 or (now or "").endswith(" (deleted)"):
            raise RunDirGone(
                f"the run directory {self.path} was deleted while the run trained; {stopped}"
            )
        kept = f"; its checkpoint of step {saved_step} is there" if saved_step is not None else ""
        raise RunDirGone(
            f"the run directory {self.path} was moved or renamed while the run "
            f"trained{f' (it is now {now})' if now else ''}; {stopped}{kept}"
        )

    def where_now(self) -> str | None:
        """The directory's path now (Linux's /proc knows it), or None."""
        try:
            return os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            return None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> HeldDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def logdir_error(exc: OSError, where: Path | str) -> ConfigError:
    """The one line for a run or sweep directory that cannot be created under --logdir."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a file is in the way"
    else:
        reason = exc.strerror or str(exc)
    return ConfigError("logdir", f"cannot create {where}: {reason}")


# --- a new run directory -------------------------------------------------------------------


def default_run_name(config: TrainConfig) -> str:
    """What the run is first, then when it started: TensorBoard lists runs by name, and a
    name cut short should still say which task, size, backend and seed it trained."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    # the kernel that trains it (auto resolved), so that the name says what ran
    backend = training_backend(config, resolve_device(config.device))
    return f"k{config.echo_step}-H{config.hidden_size}-{backend}-s{config.seed}-{stamp}"


def create_run_dir(config: TrainConfig) -> Path:
    """Create the run's directory atomically, with its ``config.json`` in it: the directory
    is made under a temporary name, the config written into it, and the whole renamed into
    place (which fails if the name is taken), so that two runs started at once never share
    one, and a run directory, however early its process dies (``kill -9``, the
    out-of-memory killer), always holds the config that ``--resume`` restarts it from. An
    explicit ``run_name`` that exists is refused, a default name gets a suffix."""
    logdir = Path(config.logdir)
    names = (
        [config.run_name]
        if config.run_name is not None
        else [default_run_name(config) + ("" if n == 0 else f"-{n}") for n in range(1000)]
    )
    tmp = None
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        tmp = logdir / f".{names[0][:60]}.{secrets.token_hex(4)}.partial"
        tmp.mkdir()  # mode 0777 less the umask, as a plain mkdir makes it
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        for name in names:
            run_dir = logdir / name
            if run_dir.exists() or run_dir.is_symlink():
                continue
            try:
                os.rename(tmp, run_dir)  # fails on a directory that is not empty: taken
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                continue
            tmp = None
            return run_dir
        if config.run_name is not None:
            run_dir = logdir / config.run_name
            raise ConfigError(
                "run_name",
                f"{run_dir} already exists; choose another "
                f"name, or continue it with --resume {run_dir}",
            )
        raise ConfigError("logdir", f"{logdir} holds too many runs named {names[0]}-N")
    except OSError as exc:
        raise logdir_error(exc, logdir / (config.run_name or "RUN")) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# --- a run directory to resume -------------------------------------------------------------


@dataclass
class Resumed:
    """A run to continue, read once: its directory, its checkpoint file, the state in it and
    the config it was started with. ``state`` is None for a run that died before its first
    checkpoint: it restarts from step 0 with its recorded config."""

    run_dir: Path
    checkpoint: Path
    state: dict[str, Any] | None
    config: TrainConfig


def open_run(resume: str | Path) -> Resumed:
    """Read the run that ``resume`` names (its directory, or the ``checkpoints/last.pt`` in
    it). A run directory without a checkpoint (its process died before the first one) is
    read from its ``config.json``, to start again from step 0. Raises CheckpointError
    naming the file and what is wrong."""
    path = Path(resume)
    if path.is_dir() and written_checkpoint(path) is None and (path / "config.json").exists():
        return Resumed(path, checkpoint_path(path), None, _recorded_config(path / "config.json"))
    state = load_checkpoint(resume)  # what it is comes first: refused, damaged, ...
    run_dir, ckpt_file = run_dir_of_checkpoint(resume)  # then where it is
    return Resumed(run_dir, ckpt_file, state, TrainConfig.from_dict(state["config"], recorded=True))


# A config.json is a few hundred bytes; nothing larger is read.
MAX_CONFIG_BYTES = 1 << 20


def _recorded_config(path: Path) -> TrainConfig:
    """The config a run recorded in ``path`` (its config.json), checked; CheckpointError
    naming the file otherwise."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(
                f"{path} is not a run's config.json (not a regular file of "
                f"at most {MAX_CONFIG_BYTES} bytes)"
            )
        text = read_regular(path, MAX_CONFIG_BYTES).decode("utf-8")
        config = TrainConfig.from_dict(json.loads(text), recorded=True)
        config.validate()
        return config
    except CheckpointError:
        raise
    except (
        OSError,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        AttributeError,
        RecursionError,
    ) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a usable run config, and the run has no "
            f"checkpoint to resume from: {first}"
        ) from None


def check_resume_config(config: TrainConfig, resumed: Resumed) -> None:
    """Refuse a config that differs from the run's own in more than ``RESUME_FREE``."""
    diff = config.resume_changes(resumed.config)
    if diff:
        theirs = resumed.config.to_dict()
        raise CheckpointError(
            f"{resumed.checkpoint} was made with a different config "
            f"({', '.join(f'{k}={theirs[k]!r}' for k in diff)}); a resumed run keeps the "
            f"config it was started with, only {RESUME_FLAGS} may change"
        )


def run_dir_of_checkpoint(resume: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint file) of what ``--resume`` names: a run directory or the
    ``checkpoints/last.pt`` inside one. A loose checkpoint file elsewhere is refused: the
    resumed run would have to be written somewhere the user did not name."""
    path = Path(resume)
    if path.is_dir():
        return path, checkpoint_path(path)
    if not path.exists():
        raise CheckpointError(f"no such run directory or checkpoint file: {path}")
    run_dir = path.parent.parent
    if path.parent.name != CHECKPOINT_DIR or not (run_dir / "config.json").is_file():
        raise CheckpointError(
            f"{path} is not inside a run directory (RUN/{CHECKPOINT_DIR}/last.pt with "
            "RUN/config.json); a resumed run is written into its own run directory, so resume "
            "from that directory"
        )
    return run_dir, path


# --- one writer ----------------------------------------------------------------------------


def claim(
    config: TrainConfig, resume: str | Path | Resumed | None, d: distributed.Dist, held: ExitStack
) -> tuple[Path, Resumed | None]:
    """The run directory this process writes, locked in ``held`` by rank 0 (one writer at a
    time: a second resume, or one while the run trains, is refused with Busy): the one
    ``resume`` names, checked against ``config``, or a new one. Returns it and what was read
    to resume (None for a new run). Under torchrun every rank learns the directory, or the
    error that there is none."""
    if resume is None:
        run_dir, error = None, None
        if d.is_main:
            try:
                run_dir = create_run_dir(config)
                held.enter_context(DirLock(run_dir))
            except (ConfigError, Busy) as exc:
                error = exc
        if d.enabled:
            run_dir, error = distributed.broadcast_object((run_dir, error))
        if error is not None:
            raise error
        return run_dir, None
    resumed = resume if isinstance(resume, Resumed) else open_run(resume)
    check_resume_config(config, resumed)
    error = None
    if d.is_main:
        try:
            held.enter_context(DirLock(resumed.run_dir))
        except Busy as exc:
            error = exc
    if d.enabled:
        error = distributed.broadcast_object(error)
    if error is not None:
        raise error
    if resumed.state is None and d.is_main:  # died before its first checkpoint: start again
        clear_run_dir(resumed.run_dir)
    return resumed.run_dir, resumed


# --- what a run that stops early leaves ----------------------------------------------------


def discard(run_dir: Path, fresh: bool) -> None:
    """A run stopped before its first checkpoint: a directory made for it goes, whole; a
    run restarted from its config keeps the config, to start again from."""
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        clear_run_dir(run_dir)


def clear_run_dir(run_dir: Path) -> None:
    """Empty a run directory that holds no checkpoint, but for its config and lock: what a
    process that died before its first checkpoint left (events of step 0, temp files)."""
    for p in run_dir.iterdir():
        if p.name in ("config.json", LOCK_NAME):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def remove_empty_event_files(run_dir: Path) -> None:
    """Event files that hold nothing (a run stopped before its writer flushed): TensorBoard
    would list them as runs without data."""
    for f in run_dir.rglob("events.out.tfevents.*"):
        try:
            if f.stat().st_size == 0:
                f.unlink()
        except OSError:
            pass
