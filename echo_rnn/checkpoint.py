"""Checkpoints: written atomically, read with ``weights_only=True``, refused with a reason."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

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


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, then put it in place: a crash leaves
    the old file or the new one, never a torn one (temp file in the same directory, fsync,
    ``os.replace``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (see :func:`write_atomically`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    write_atomically(path, lambda fh: torch.save(payload, fh))


# Ours are kilobytes; the largest model the config allows (H = 4096) with Adam's state is
# about 200 MB. Nothing larger is read, and nothing that would inflate beyond it.
MAX_BYTES = 256 * 2**20


def _check_archive(path: Path) -> None:
    """Refuse, before unpickling, a file larger than MAX_BYTES or an archive whose entries
    are compressed (torch.save stores them uncompressed, so a compressed entry is not ours
    and could inflate far beyond its size: a zip bomb)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise CheckpointError(f"{path} is {size / 2**20:.0f} MiB; an echo-rnn checkpoint is at "
                              f"most {MAX_BYTES // 2**20} MiB, so it was not read")
    if not zipfile.is_zipfile(path):
        return  # torch.load tells a legacy checkpoint from garbage
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt): "
                              f"{exc}") from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise CheckpointError(f"{path} holds compressed entries, which torch.save never writes; "
                              "it was not read")
    if sum(i.file_size for i in infos) > MAX_BYTES:
        raise CheckpointError(f"{path} declares more than {MAX_BYTES // 2**20} MiB of contents; "
                              "it was not read")


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
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
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
    except Exception as exc:  # the unpickler fails on junk in many ways: IndexError, KeyError, ...
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
    problem = _structure_problem(state)
    if problem:
        raise CheckpointError(f"{path} is not a valid echo-rnn checkpoint: {problem}")
    return state


# Far beyond what any run writes (a 40000-step run writes a few MB); a bound, so that a
# crafted size cannot ask for an absurd truncation.
MAX_EVENT_BYTES = 2**40


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _structure_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a loaded checkpoint's contents, in words; None if nothing."""
    from echo_rnn.config import MAX_STEPS, ConfigError, TrainConfig

    if not isinstance(state["config"], dict):
        return f"its config is a {type(state['config']).__name__}, not a table of settings"
    try:
        config = TrainConfig.from_dict(state["config"], recorded=True)
        # where it was trained does not matter for reading it
        dataclasses.replace(config, device="cpu", cuda_graph=False).validate()
    except (ConfigError, TypeError) as exc:
        return f"its config is not usable: {exc}"
    step = state["step"]
    if not _is_int(step) or not 0 <= step <= MAX_STEPS:
        return f"step must be an integer in [0, {MAX_STEPS}], got {step!r}"
    model = state["model"]
    H = config.hidden_size
    want = {"U": (H, H), "V": (H, 1), "w": (H,)} | ({"b": (H,)} if config.bias else {})
    if not isinstance(model, dict) or set(model) != set(want):
        got = sorted(model) if isinstance(model, dict) else type(model).__name__
        return f"its model must hold {', '.join(want)}, got {got}"
    for name, shape in want.items():
        t = model[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return f"its weight {name} is not a floating-point tensor"
        if tuple(t.shape) != shape:
            return (f"its weights do not fit its config: {name} has shape {tuple(t.shape)}, "
                    f"hidden_size = {H} needs {shape}")
        if not torch.isfinite(t).all():
            return f"its weight {name} holds NaN or infinite values"
    for key, kind in (("optimizer", dict), ("rng", dict), ("curriculum", dict),
                      ("progress", dict)):
        if key in state and not isinstance(state[key], kind):
            return f"its {key} is a {type(state[key]).__name__}, not a table"
    rng = state.get("rng", {}).get("train") if "rng" in state else None
    if "rng" in state and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
        return "its rng state is not a byte tensor"
    cur = state.get("curriculum", {})
    for key in ("k", "k_since"):
        if key in cur and not (_is_int(cur[key]) and 0 <= cur[key] <= max(step, config.seq_len)):
            return f"its curriculum {key} must be a small integer >= 0, got {cur[key]!r}"
    progress = state.get("progress", {})
    solved = progress.get("solved_step")
    if solved is not None and not (_is_int(solved) and 0 <= solved <= step):
        return f"its solved_step must be none or an integer in [0, step], got {solved!r}"
    for key in ("wall_time_s", "train_loss"):
        v = progress.get(key)
        if v is not None and not _is_number(v):
            return f"its {key} must be a finite number, got {v!r}"
    window = state.get("window", [])
    if not (isinstance(window, list) and len(window) <= config.log_every and all(
            isinstance(row, (list, tuple)) and len(row) == 4 and _is_int(row[0])
            and step - config.log_every < row[0] <= step
            and all(isinstance(v, float) for v in row[1:]) for row in window)):
        return ("its window (the steps since the last logged point) must be at most "
                f"log_every rows [step, loss, grad norm, lr], got {str(window)[:80]}")
    events = state.get("events", {})
    if not (isinstance(events, dict) and set(events) <= {"", "train", "val"}
            and all(_is_int(v) and 0 <= v <= MAX_EVENT_BYTES for v in events.values())):
        return ("its event-file sizes must be a table of byte counts for '', 'train' and "
                f"'val', got {str(events)[:80]}")
    last_eval = progress.get("last_eval", {})
    if not isinstance(last_eval, dict) or not all(_is_number(v) for v in last_eval.values()):
        return f"its last evaluation must be a table of finite numbers, got {last_eval!r}"
    return None
