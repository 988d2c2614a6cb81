"""A run's record: what its checkpoint holds, one typed record, every field checked beside its
declaration (as :class:`~echo_rnn.config.TrainConfig`'s bounds sit beside its fields).

:class:`RunRecord` is written by the engine (:meth:`RunRecord.to_state`, the table
``torch.save`` stores) and read back by :meth:`RunRecord.from_state` once :func:`problem` found
nothing wrong with the table. :class:`Progress` is how far the run got: a field added there is
saved, checked (by the ``check`` beside it) and read back with no other change.

Every check has the form ``check(value, seen) -> str | None``: what is wrong with ``value``,
in words, or None; ``seen`` holds what the fields before it established (the config, the step,
the weights' shapes), so a field is checked against the record it belongs to.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from echo_rnn.config import TrainConfig
from echo_rnn.errors import shown

# Far beyond what any run writes (a 40000-step run writes a few MB); a bound, so that a
# crafted size cannot ask for an absurd truncation.
MAX_EVENT_BYTES = 2**40


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    if group.get("params") != list(range(n)) or not all(is_int(i) for i in group["params"]):
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
        if not (is_int(pid) and 0 <= pid < n):
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
        if not (is_int(k) and lo <= k <= config.echo_step):
            allowed = (
                f"in [{lo}, {config.echo_step}] (--curriculum up to --echo-step)"
                if config.curriculum
                else f"{config.echo_step}, its echo_step (the run has no --curriculum)"
            )
            return f"its curriculum k must be {allowed}, got {shown(k)}"
    since = cur.get("k_since", 0)
    if not (is_int(since) and 0 <= since <= step):
        return f"its curriculum k_since must be a step in [0, {step}], got {shown(since)}"
    return None


@dataclass
class _Seen:
    """What the fields checked so far established, for the fields after them."""

    config: TrainConfig | None = None
    step: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _table(name: str, v: Any) -> str | None:
    return None if isinstance(v, dict) else f"its {name} is a {type(v).__name__}, not a table"


# --- how far a run got --------------------------------------------------------------------


def _solved_problem(solved: Any, seen: _Seen) -> str | None:
    if solved is not None and not (is_int(solved) and 0 <= solved <= seen.step):
        return f"its solved_step must be none or an integer in [0, step], got {shown(solved)}"
    return None


def _non_negative(name: str):
    def check(v: Any, seen: _Seen) -> str | None:
        if v is not None and not (_is_number(v) and v >= 0):
            return f"its {name} must be a finite number >= 0, got {shown(v)}"
        return None

    return check


def _last_eval_problem(last_eval: Any, seen: _Seen) -> str | None:
    if not (
        isinstance(last_eval, dict)
        and len(last_eval) <= 32
        and all(isinstance(k, str) and _is_number(v) for k, v in last_eval.items())
    ):
        return f"its last evaluation must be a table of finite numbers, got {shown(last_eval)}"
    return None


@dataclass
class Progress:
    """How far a run got, besides its step: what a resumed run and summary.json take up."""

    solved_step: int | None = field(default=None, metadata={"check": _solved_problem})
    # seconds the run has trained, over all its sessions
    wall_time_s: float = field(default=0.0, metadata={"check": _non_negative("wall_time_s")})
    # the last evaluation: its step, held-out loss and accuracy
    last_eval: dict[str, float] = field(
        default_factory=dict, metadata={"check": _last_eval_problem}
    )
    # the train loss at the last logged point
    train_loss: float | None = field(default=None, metadata={"check": _non_negative("train_loss")})


def _progress_problem(progress: Any, seen: _Seen) -> str | None:
    problem = _table("progress", progress)
    if problem:
        return problem
    names = [f.name for f in dataclasses.fields(Progress)]
    unknown = [k for k in progress if k not in names]
    if unknown:
        return f"its progress holds a field echo-rnn does not write: {shown(unknown[0])}"
    return _fields_problem(Progress, progress, seen)


def _fields_problem(record: type, table: dict[str, Any], seen: _Seen) -> str | None:
    """The first problem the checks beside ``record``'s fields find in ``table``, in the
    fields' order (a field ``table`` lacks keeps its default: not checked)."""
    for f in dataclasses.fields(record):
        if f.name in table:
            problem = f.metadata["check"](table[f.name], seen)
            if problem:
                return problem
    return None


# --- the record ---------------------------------------------------------------------------


def _config_problem(config: Any, seen: _Seen) -> str | None:
    from echo_rnn.errors import ConfigError

    if not isinstance(config, dict):
        return f"its config is a {type(config).__name__}, not a table of settings"
    try:
        seen.config = TrainConfig.from_dict(config, recorded=True)
        # where it was trained does not matter for reading it
        dataclasses.replace(seen.config, device="cpu", cuda_graph=False).validate()
    except (ConfigError, TypeError) as exc:
        return f"its config is not usable: {exc}"
    return None


def _step_problem(step: Any, seen: _Seen) -> str | None:
    from echo_rnn.config import MAX_STEPS

    if not is_int(step) or not 0 <= step <= MAX_STEPS:
        return f"step must be an integer in [0, {MAX_STEPS}], got {shown(step)}"
    seen.step = step
    return None


def _model_problem(model: Any, seen: _Seen) -> str | None:
    H = seen.config.hidden_size
    want = {"U": (H, H), "V": (H, 1), "w": (H,)} | ({"b": (H,)} if seen.config.bias else {})
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
    seen.shapes = want
    return None


def _optimizer_field_problem(opt: Any, seen: _Seen) -> str | None:
    return _table("optimizer", opt) or _optimizer_problem(opt, seen.config, seen.step, seen.shapes)


def _rng_problem(rng: Any, seen: _Seen) -> str | None:
    problem = _table("rng", rng)
    if problem:
        return problem
    if set(rng) != {"train"}:
        return f"its rng must hold train, got {shown(sorted(map(str, rng)))}"
    problem = _tensor_problem("its rng state", rng["train"], dtype=torch.uint8)
    if problem or rng["train"].dim() != 1 or rng["train"].numel() > MAX_RNG_BYTES:
        return "its rng state is not a byte tensor" + (f" ({problem})" if problem else "")
    return None


def _curriculum_field_problem(cur: Any, seen: _Seen) -> str | None:
    return _table("curriculum", cur) or _curriculum_problem(cur, seen.config, seen.step)


def _window_problem(window: Any, seen: _Seen) -> str | None:
    c, step = seen.config, seen.step
    if not (
        isinstance(window, list)
        and len(window) <= c.log_every
        and all(
            isinstance(row, (list, tuple))
            and len(row) == 4
            and is_int(row[0])
            and step - c.log_every < row[0] <= step
            and all(isinstance(v, float) for v in row[1:])
            for row in window
        )
    ):
        return (
            "its window (the steps since the last logged point) must be at most "
            f"log_every rows [step, loss, grad norm, lr], got {shown(window)}"
        )
    return None


def _events_problem(events: Any, seen: _Seen) -> str | None:
    if not (
        isinstance(events, dict)
        and set(events) <= {"", "train", "val"}
        and all(is_int(v) and 0 <= v <= MAX_EVENT_BYTES for v in events.values())
    ):
        return (
            "its event-file sizes must be a table of byte counts for '', 'train' and "
            f"'val', got {shown(events)}"
        )
    return None


@dataclass
class RunRecord:
    """What a checkpoint holds of a run, train's or a population member's alike: all a
    resumed run needs to go on as if never stopped. Fields are checked in this order, each
    against those before it."""

    config: TrainConfig = field(metadata={"check": _config_problem, "required": True})
    step: int = field(metadata={"check": _step_problem, "required": True})
    # U, V, w (and b), as the EchoRNN's state_dict holds them
    model: dict[str, torch.Tensor] = field(metadata={"check": _model_problem, "required": True})
    # the optimizer's state_dict, over the model's parameters in the order U, V, w, b
    optimizer: dict | None = field(default=None, metadata={"check": _optimizer_field_problem})
    # the training stream's position: a torch generator's state, or the compiled kernel's
    # 8-byte counter (stored under "train")
    rng: torch.Tensor | None = field(default=None, metadata={"check": _rng_problem})
    curriculum: dict = field(default_factory=dict, metadata={"check": _curriculum_field_problem})
    progress: Progress = field(default_factory=Progress, metadata={"check": _progress_problem})
    # the steps since the last logged point, [step, loss, grad norm, lr] each: a resumed run
    # logs them at its next point, as a run never stopped would
    window: list = field(default_factory=list, metadata={"check": _window_problem})
    # the event files' sizes when the checkpoint was written: a resume cuts them back to it
    events: dict[str, int] | None = field(default=None, metadata={"check": _events_problem})

    def to_state(self) -> dict[str, Any]:
        """The table a checkpoint stores: plain data and tensors only."""
        state = {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model,
            "optimizer": self.optimizer,
            "rng": {"train": self.rng},
            "curriculum": self.curriculum,
            "window": [list(row) for row in self.window],
            # field by field: asdict would deep-copy what torch.save copies as it pickles
            "progress": {
                f.name: getattr(self.progress, f.name) for f in dataclasses.fields(Progress)
            },
            "events": self.events,
        }
        return {k: v for k, v in state.items() if v is not None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunRecord:
        """The record of a table :func:`problem` passed (a loaded checkpoint)."""
        rng = state.get("rng")
        return cls(
            config=TrainConfig.from_dict(state["config"], recorded=True),
            step=int(state["step"]),
            model=state["model"],
            optimizer=state.get("optimizer"),
            rng=None if rng is None else rng["train"],
            curriculum=dict(state.get("curriculum", {})),
            progress=Progress(**state.get("progress", {})),
            window=[tuple(row) for row in state.get("window", [])],
            events=state.get("events"),
        )


# What a checkpoint's table may hold: its header, and the record's fields.
HEADER = ("format", "version")
FIELDS = (*HEADER, *(f.name for f in dataclasses.fields(RunRecord)))
REQUIRED = tuple(f.name for f in dataclasses.fields(RunRecord) if f.metadata.get("required"))


def problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a loaded checkpoint's table, in words; None if nothing. Every
    field is checked by the check beside it in :class:`RunRecord`: its kind, and its agreement
    with the config, the step and the weights before it. The header and the required fields
    are the loader's to check first."""
    unknown = [k for k in state if k not in FIELDS]
    if unknown:
        return f"it holds a field echo-rnn does not write: {shown(unknown[0])}"
    return _fields_problem(RunRecord, state, _Seen())
