"""Checkpoints: written atomically, read with ``weights_only=True``, refused with a reason."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from echo_rnn.errors import shown
from echo_rnn.files import read_regular, write_atomically
from echo_rnn.run.state import REQUIRED, is_int
from echo_rnn.run.state import problem as record_problem

FORMAT = "echo-rnn-checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST


def _kind(path: Path) -> str:
    """ "dir", "file" (a regular file), "other" (a device, a FIFO, a socket) or "missing";
    CheckpointError when the path cannot be looked at (permission denied)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the name
        return "missing"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def written_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint file of a run directory, or None when the run never wrote one (no
    ``checkpoints/``, or no ``last.pt`` in it: its process died before the first). Anything
    else there that is not a readable file (a dangling symlink, a symlink loop,
    ``checkpoints`` a file, ``last.pt`` a directory) is a damaged checkpoint, not a missing
    one: CheckpointError, so that a finished run is never started again over it."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    path = folder / LAST
    for where, want in ((folder, stat.S_ISDIR), (path, stat.S_ISREG)):
        try:
            os.lstat(where)  # the name itself: a symlink counts, whatever it points at
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"cannot read {where}: {exc.strerror or exc}") from None
        try:
            mode = os.stat(where).st_mode
        except OSError as exc:
            what = {errno.ELOOP: "a symlink loop", errno.ENOENT: "a symlink to nothing"}.get(
                exc.errno, exc.strerror or str(exc)
            )
            raise CheckpointError(
                f"{where} is damaged ({what}): the run wrote a checkpoint "
                "that cannot be read, so it is not started again"
            ) from None
        if not want(mode):
            kind = "a directory" if want is stat.S_ISDIR else "a regular file"
            raise CheckpointError(
                f"{where} is not {kind}: the run's checkpoint is damaged, "
                "so it is not started again"
            )
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file (a regular file: reading a device or a
    FIFO would not end)."""
    path = Path(path)
    kind = _kind(path)
    if kind == "dir":
        candidate = written_checkpoint(path)
        if candidate is None:
            raise CheckpointError(f"{path} is a directory without {CHECKPOINT_DIR}/{LAST}")
        return candidate
    if kind == "missing":
        raise CheckpointError(f"no such run directory or checkpoint file: {path}")
    if kind == "other":
        raise CheckpointError(
            f"{path} is not a regular file (a device, a FIFO or a socket), "
            "so not a checkpoint; it was not read"
        )
    return path


SUMMARY = "summary.json"
# What summary.json holds of a finished run (engine.outcome.write_outcome writes it).
SUMMARY_FIELDS = (
    "step",
    "solved_step",
    "val_accuracy",
    "val_loss",
    "wall_time_s",
    "stopped",
    "run_dir",
)
MAX_SUMMARY_BYTES = 2**20


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary.json of a finished run, checked: a JSON object with the fields a
    finished run writes. Raises CheckpointError naming the file and what is wrong."""
    path = Path(run_dir) / SUMMARY
    kind = _kind(path)
    if kind != "file":
        what = {"dir": "a directory", "other": "not a regular file", "missing": "missing"}[kind]
        raise CheckpointError(f"{path} is {what}; a finished run's summary.json is a JSON file")
    try:
        data = read_regular(path, MAX_SUMMARY_BYTES)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:  # its kind was checked above: it is too large
        data = None
    try:
        if data is None:
            raise ValueError(f"larger than {MAX_SUMMARY_BYTES} bytes")
        summary = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{path} is not JSON ({shown(str(exc))}); delete the run "
            "directory to run the point again"
        ) from None
    if not isinstance(summary, dict):
        raise CheckpointError(f"{path} is not a JSON object, got {shown(summary)}")
    missing = [k for k in SUMMARY_FIELDS if k not in summary]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}; delete the run directory to run the point again"
        )
    step, solved = summary["step"], summary["solved_step"]
    if not (
        is_int(step)
        and step >= 0
        and (solved is None or is_int(solved))
        and summary["stopped"] in ("solved", "steps", "diverged")
    ):
        raise CheckpointError(
            f"{path} does not hold a finished run's summary (step "
            f"{shown(step)}, solved_step {shown(solved)}, stopped "
            f"{shown(summary['stopped'])})"
        )
    return summary


def save_checkpoint(path: str | Path, state: dict[str, Any], durable: bool = True) -> None:
    """Write ``state`` to ``path`` atomically, fsynced unless not ``durable`` (see
    :func:`write_atomically`)."""
    path = Path(path)
    # checkpoints/ alone, never the run directory above it: a run whose directory was
    # deleted under it must not make a new one
    path.parent.mkdir(exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    write_atomically(path, lambda fh: torch.save(payload, fh), durable)


# Ours are kilobytes; the largest model the config allows (H = 4096) with Adam's state is
# about 200 MB. Nothing larger is read, and nothing that would inflate beyond it.
MAX_BYTES = 256 * 2**20


def _check_archive(path: Path) -> None:
    """Refuse, before unpickling, a file larger than MAX_BYTES or an archive whose entries
    are compressed (torch.save stores them uncompressed, so a compressed entry is not ours
    and could inflate far beyond its size: a zip bomb)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise CheckpointError(
            f"{path} is {size / 2**20:.0f} MiB; an echo-rnn checkpoint is at "
            f"most {MAX_BYTES // 2**20} MiB, so it was not read"
        )
    if not zipfile.is_zipfile(path):
        return  # torch.load tells a legacy checkpoint from garbage
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt): {exc}"
        ) from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise CheckpointError(
            f"{path} holds compressed entries, which torch.save never writes; it was not read"
        )
    if sum(i.file_size for i in infos) > MAX_BYTES:
        raise CheckpointError(
            f"{path} declares more than {MAX_BYTES // 2**20} MiB of contents; it was not read"
        )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU and check that it is one of ours before anything is
    built from it: its structure, its config's settings and sizes, and its weights' shapes
    (against the config) and values (finite).

    Raises:
        CheckpointError: missing, not a checkpoint, too large, truncated or corrupt, carrying
            pickled objects other than tensors and plain data (refused unread: nothing
            executes), or with contents that are not what echo-rnn writes.
    """
    path = resolve_checkpoint(path)
    try:
        _check_archive(path)
        # torch warns as it rebuilds a sparse or quantized tensor ("in beta state",
        # "deprecated"): lines about a file refused below in one line of its own
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except PermissionError as exc:  # say so, not "corrupt"
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # A reference to a class or function (a GLOBAL) is what lets a pickle run code.
        if "GLOBAL" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"refused {path}: it carries pickled Python objects beyond tensors and plain "
                "data, which could run code; it was not loaded"
            ) from None
        detail = next(
            (l.strip() for l in text.splitlines() if "Unsupported operand" in l),
            "not a pickle torch can read",
        )
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt?): {detail}") from None
    except Exception as exc:  # the unpickler fails on junk in many ways: IndexError, KeyError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt): {reason}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an echo-rnn checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}; this echo-rnn reads {VERSION}"
        )
    missing = set(REQUIRED) - set(state)
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(sorted(missing))}")
    problem = record_problem(state)
    if problem:
        raise CheckpointError(f"{path} is not a valid echo-rnn checkpoint: {problem}")
    return state
