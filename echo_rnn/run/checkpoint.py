"""Checkpoints: written atomically, read with ``weights_only=True``, refused with a reason."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
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
# What summary.json holds of a finished run (train.write_outcome writes it).
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
        _is_int(step)
        and step >= 0
        and (solved is None or _is_int(solved))
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


# What echo-rnn writes into a checkpoint, field by field; anything else is not ours.
FIELDS = {
    "format",
    "version",
    "config",
    "step",
    "model",
    "optimizer",
    "rng",
    "curriculum",
    "window",
    "progress",
    "events",
}
PROGRESS_FIELDS = {"solved_step", "wall_time_s", "last_eval", "train_loss"}
# A CPU generator's state is 5056 bytes, a CUDA one's 16; nothing larger is a generator's.
MAX_RNG_BYTES = 2**16
# The per-parameter state of each optimizer, as torch writes it.
OPTIMIZER_STATE = {"adam": {"step", "exp_avg", "exp_avg_sq"}, "sgd": {"momentum_buffer"}}
# What torch's optimizers assume for a hyperparameter a state_dict lacks (older torch wrote
# fewer): a missing key is compared as this value.
OPTIMIZER_DEFAULTS = {
    "foreach": None,
    "differentiable": False,
    "fused": None,
    "capturable": False,
    "maximize": False,
    "decoupled_weight_decay": False,
}


def _tensor_problem(
    name: str, t: Any, shape: tuple[int, ...] | None = None, dtype: torch.dtype = torch.float32
) -> str | None:
    """What makes ``t`` unfit to be the tensor ``name``: its kind (a plain, dense tensor in
    CPU memory, as torch.save writes one: not sparse, quantized, nested or on the meta
    device), its dtype, its shape and, floating point, its values (finite)."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        return f"{name} must be a tensor, got {shown(t)}"
    if t.layout != torch.strided or t.is_nested:
        return f"{name} must be a dense tensor, got layout {t.layout}"
    if t.is_quantized:
        return f"{name} must be a plain tensor, got a quantized one ({t.dtype})"
    if t.device.type != "cpu":
        return f"{name} must hold its values, got a tensor on the {t.device.type} device"
    if t.dtype != dtype:
        return f"{name} must be a {str(dtype).removeprefix('torch.')} tensor, got {t.dtype}"
    if shape is not None and tuple(t.shape) != shape:
        return f"{name} must have shape {shape}, got {tuple(t.shape)}"
    if t.is_floating_point() and not torch.isfinite(t).all():
        return f"{name} holds NaN or infinite values"
    return None


def _same(saved: Any, want: Any) -> bool:
    """A saved hyperparameter equals the config's: the same kind of value (a flag is not a
    number) and the same value."""
    if want is None or isinstance(want, bool):
        return saved is want
    if isinstance(want, (int, float)):
        return _is_number(saved) and saved == want
    if isinstance(want, tuple):
        return (
            isinstance(saved, (tuple, list))
            and len(saved) == len(want)
            and all(_same(a, b) for a, b in zip(saved, want))
        )
    return type(saved) is type(want) and saved == want


def _lr_problem(lr: Any, config, step: int) -> str | None:
    """The optimizer's lr is the config's, or with --lr-halve-every the config's halved at
    most once per lr_halve_every steps (halving a float is exact)."""
    if not _is_number(lr):
        return f"its optimizer's lr must be a finite number, got {shown(lr)}"
    rates = [config.lr]
    if config.lr_halve_every:
        for _ in range(min(step // config.lr_halve_every, 1100)):  # 2^-1100: below any float
            rates.append(rates[-1] / 2)
    if lr not in rates:
        return f"its optimizer's lr is {shown(lr)}, but its config says lr = {config.lr}" + (
            f" (halved every {config.lr_halve_every} steps)" if config.lr_halve_every else ""
        )
    return None


def _optimizer_problem(
    opt: Any, config, step: int, shapes: dict[str, tuple[int, ...]]
) -> str | None:
    """Whether ``opt`` is the state_dict of the optimizer ``config`` trains with (kind and
    hyperparameters) over the model's parameters (ids 0..n-1, in the order U, V, w, b, each
    state tensor of its parameter's shape): checked here because torch.optim loads what it
    is given and a wrong shape can crash the process (a segmentation fault) at its next step."""
    from echo_rnn.config import MAX_STEPS
    from echo_rnn.model import make_optimizer

    if set(opt) != {"state", "param_groups"}:
        return f"its optimizer must hold state and param_groups, got {shown(sorted(map(str, opt)))}"
    groups, state = opt["param_groups"], opt["state"]
    n = len(shapes)
    expected = make_optimizer(config, [torch.zeros(1, requires_grad=True) for _ in range(n)])
    want = expected.state_dict()["param_groups"][0]
    kind = config.optimizer
    if not (
        isinstance(groups, list)
        and len(groups) == 1
        and isinstance(groups[0], dict)
        and all(isinstance(k, str) for k in groups[0])
    ):
        return f"its optimizer's param_groups must be a list of one table, got {shown(groups)}"
    group = groups[0]
    extra = sorted(set(group) - set(want))
    if extra:
        other = next((o for o in ("adam", "sgd") if o != kind), "")
        whose = f" ({other}'s?)" if other else ""
        return (
            f"its optimizer state is not {kind}'s, which its config says: its settings "
            f"include {shown(', '.join(extra))}{whose}"
        )
    if group.get("params") != list(range(n)) or not all(_is_int(i) for i in group["params"]):
        return (
            f"its optimizer's param ids must be {list(range(n))} "
            f"(U, V, w{', b' * config.bias}), "
            f"got {shown(group.get('params'))}"
        )
    problem = _lr_problem(group.get("lr"), config, step)
    if problem:
        return problem
    for key, value in want.items():
        if key in ("params", "lr"):
            continue
        if key not in group and key not in OPTIMIZER_DEFAULTS:
            return f"its optimizer's settings lack {key}"
        saved = group.get(key, OPTIMIZER_DEFAULTS.get(key))
        if not _same(saved, value):
            return (
                f"its optimizer's {key} is {shown(saved)}, but its config trains with "
                f"{key} = {value!r}"
            )
    if not isinstance(state, dict):
        return f"its optimizer's state must be a table, got {shown(state)}"
    allowed = OPTIMIZER_STATE[kind]
    names = list(shapes)
    for pid, entry in state.items():
        if not (_is_int(pid) and 0 <= pid < n):
            return f"its optimizer's state has parameter id {shown(pid)}; valid are 0..{n - 1}"
        name = names[pid]
        if (
            not isinstance(entry, dict)
            or not set(entry) <= allowed
            or (kind == "adam" and set(entry) != allowed)
        ):
            got = sorted(map(str, entry)) if isinstance(entry, dict) else entry
            return (
                f"its optimizer's state of {name} must hold {', '.join(sorted(allowed))} "
                f"({kind}), got {shown(got)}"
            )
        for key, value in entry.items():
            what = f"its optimizer's {key} of {name}"
            if key == "step":
                problem = _tensor_problem(what, value, ())
                if problem is None and not 0 <= float(value) <= MAX_STEPS:
                    problem = f"{what} must be a number in [0, {MAX_STEPS}], got {float(value)}"
            elif key == "momentum_buffer" and value is None:
                problem = None
            else:
                problem = _tensor_problem(what, value, shapes[name])
            if problem:
                return problem
    return None


def _curriculum_problem(cur: Any, config, step: int) -> str | None:
    """The curriculum's k is one the config allows: the echo step itself without
    --curriculum; 1 (0 when k = 0) up to it with one. k_since is a step already taken."""
    if not set(cur) <= {"k", "k_since"}:
        return f"its curriculum must hold k and k_since, got {shown(sorted(map(str, cur)))}"
    k = cur.get("k", None)
    if k is not None:
        lo = min(1, config.echo_step) if config.curriculum else config.echo_step
        if not (_is_int(k) and lo <= k <= config.echo_step):
            allowed = (
                f"in [{lo}, {config.echo_step}] (--curriculum up to --echo-step)"
                if config.curriculum
                else f"{config.echo_step}, its echo_step (the run has no --curriculum)"
            )
            return f"its curriculum k must be {allowed}, got {shown(k)}"
    since = cur.get("k_since", 0)
    if not (_is_int(since) and 0 <= since <= step):
        return f"its curriculum k_since must be a step in [0, {step}], got {shown(since)}"
    return None


def _structure_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a loaded checkpoint's contents, in words; None if nothing. Every
    field is checked: its kind, and its agreement with the checkpoint's config and model."""
    from echo_rnn.config import MAX_STEPS, ConfigError, TrainConfig

    unknown = [k for k in state if k not in FIELDS]
    if unknown:
        return f"it holds a field echo-rnn does not write: {shown(unknown[0])}"
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
        return f"step must be an integer in [0, {MAX_STEPS}], got {shown(step)}"
    model = state["model"]
    H = config.hidden_size
    want = {"U": (H, H), "V": (H, 1), "w": (H,)} | ({"b": (H,)} if config.bias else {})
    if not isinstance(model, dict) or set(model) != set(want):
        got = sorted(map(str, model)) if isinstance(model, dict) else type(model).__name__
        return f"its model must hold {', '.join(want)}, got {shown(got)}"
    for name, shape in want.items():
        t = model[name]
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_quantized):
            return f"its weight {name} is not a floating-point tensor"
        if tuple(t.shape) != shape:
            return (
                f"its weights do not fit its config: {name} has shape {tuple(t.shape)}, "
                f"hidden_size = {H} needs {shape}"
            )
        problem = _tensor_problem(f"its weight {name}", t, shape)
        if problem:
            return problem
    for key in ("optimizer", "rng", "curriculum", "progress"):
        if key in state and not isinstance(state[key], dict):
            return f"its {key} is a {type(state[key]).__name__}, not a table"
    if "optimizer" in state:
        problem = _optimizer_problem(state["optimizer"], config, step, want)
        if problem:
            return problem
    if "rng" in state:
        rng = state["rng"]
        if set(rng) != {"train"}:
            return f"its rng must hold train, got {shown(sorted(map(str, rng)))}"
        problem = _tensor_problem("its rng state", rng["train"], dtype=torch.uint8)
        if problem or rng["train"].dim() != 1 or rng["train"].numel() > MAX_RNG_BYTES:
            return "its rng state is not a byte tensor" + (f" ({problem})" if problem else "")
    problem = _curriculum_problem(state.get("curriculum", {}), config, step)
    if problem:
        return problem
    progress = state.get("progress", {})
    unknown = [k for k in progress if k not in PROGRESS_FIELDS]
    if unknown:
        return f"its progress holds a field echo-rnn does not write: {shown(unknown[0])}"
    solved = progress.get("solved_step")
    if solved is not None and not (_is_int(solved) and 0 <= solved <= step):
        return f"its solved_step must be none or an integer in [0, step], got {shown(solved)}"
    for key in ("wall_time_s", "train_loss"):
        v = progress.get(key)
        if v is not None and not (_is_number(v) and v >= 0):
            return f"its {key} must be a finite number >= 0, got {shown(v)}"
    window = state.get("window", [])
    if not (
        isinstance(window, list)
        and len(window) <= config.log_every
        and all(
            isinstance(row, (list, tuple))
            and len(row) == 4
            and _is_int(row[0])
            and step - config.log_every < row[0] <= step
            and all(isinstance(v, float) for v in row[1:])
            for row in window
        )
    ):
        return (
            "its window (the steps since the last logged point) must be at most "
            f"log_every rows [step, loss, grad norm, lr], got {shown(window)}"
        )
    events = state.get("events", {})
    if not (
        isinstance(events, dict)
        and set(events) <= {"", "train", "val"}
        and all(_is_int(v) and 0 <= v <= MAX_EVENT_BYTES for v in events.values())
    ):
        return (
            "its event-file sizes must be a table of byte counts for '', 'train' and "
            f"'val', got {shown(events)}"
        )
    last_eval = progress.get("last_eval", {})
    if not (
        isinstance(last_eval, dict)
        and len(last_eval) <= 32
        and all(isinstance(k, str) and _is_number(v) for k, v in last_eval.items())
    ):
        return f"its last evaluation must be a table of finite numbers, got {shown(last_eval)}"
    return None
