"""Checkpoints: written atomically, read with ``weights_only=True``, refused with a reason."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "echo-rnn-checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        candidate = checkpoint_path(path)
        if not candidate.is_file():
            raise CheckpointError(f"{path} is a directory without {CHECKPOINT_DIR}/{LAST}")
        return candidate
    if not path.exists():
        raise CheckpointError(f"no such run directory or checkpoint file: {path}")
    return path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new one,
    never a torn one (temp file in the same directory, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU.

    Raises:
        CheckpointError: missing, not a checkpoint, truncated or corrupt, or carrying pickled
            objects other than tensors and plain data (refused unread: nothing executes).
    """
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # A reference to a class or function (a GLOBAL) is what lets a pickle run code.
        if "GLOBAL" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"refused {path}: it carries pickled Python objects beyond tensors and plain "
                "data, which could run code; it was not loaded"
            ) from None
        detail = next((l.strip() for l in text.splitlines() if "Unsupported operand" in l),
                      "not a pickle torch can read")
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt?): {detail}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt): {reason}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an echo-rnn checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}; this echo-rnn reads {VERSION}")
    missing = {"config", "step", "model"} - set(state)
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(sorted(missing))}")
    return state
