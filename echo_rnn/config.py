"""Training configuration as data: the dataclass, its validation, presets, TOML files,
and the command-line flags derived from it."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from echo_rnn.devices import DEVICE_HELP, resolve_device
from echo_rnn.errors import ConfigError, shown
from echo_rnn.files import read_regular

# The largest seed torch.Generator.manual_seed takes without overflow.
MAX_SEED = 2**63 - 1
# Upper bounds far beyond any useful echo run; what fits in memory is checked separately
# (check_memory), and these stop absurd values before any arithmetic on them.
MAX_SIZE = 1_000_000
MAX_HIDDEN = 4096
MAX_STEPS = 10**9
MAX_THREADS = 1024


@dataclass(frozen=True)
class Bounds:
    """The valid range of a number: ``lo`` and ``hi`` (None: unbounded), open or closed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def describe(self, kind: type) -> str:
        """The phrase after "must be", as users read it: "a positive integer up to 4096"."""
        noun = "integer" if kind is int else "number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and (kind is float or lo != 1):
            lead = "" if kind is float else "an integer "
            opening, closing = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{lead}in {opening}{lo:g}, {hi}{closing}"
        if lo == 0 and self.lo_open or (kind is int and lo == 1):
            text = f"a positive {noun}"
        elif lo is not None:
            text = f"{'an' if kind is int else 'a'} {noun} >= {lo:g}"
        else:
            text = f"a{'n' if kind is int else ''} {noun}"
        if hi is not None:
            text += f" up to {hi}"
        return text


def _opt(
    help: str,
    group: str,
    kind: type,
    choices: tuple[str, ...] | None = None,
    optional: bool = False,
    bounds: Bounds | None = None,
    flag: bool = True,
) -> dict:
    return {
        "help": help,
        "group": group,
        "kind": kind,
        "choices": choices,
        "optional": optional,
        "bounds": bounds,
        "flag": flag,
    }


POSITIVE = Bounds(lo=0, lo_open=True)  # a positive, finite number
NON_NEGATIVE = Bounds(lo=0)  # a finite number >= 0
FRACTION = Bounds(lo=0, hi=1, lo_open=True)  # (0, 1]
SIZE = Bounds(lo=1, hi=MAX_SIZE)
COUNT = Bounds(lo=1, hi=MAX_STEPS)

GROUPS = ("task", "model", "optimization", "evaluation", "run")
# --backend's choices; what each is and what auto picks: echo_rnn.engine.backends
BACKENDS = ("auto", "compiled", "bptt", "autograd")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Every field is a flag of ``echo-rnn train``
    (``hidden_size`` is ``--hidden-size``) and a key of a ``--config`` TOML file."""

    # --- task
    echo_step: int = field(
        default=2,
        metadata=_opt(
            "k: the target is the input delayed by k steps; 0 <= k < seq_len", "task", int
        ),
    )
    seq_len: int = field(
        default=50, metadata=_opt("T: bits per sequence", "task", int, bounds=SIZE)
    )
    # --- model
    hidden_size: int = field(
        default=6,
        metadata=_opt("H: hidden units", "model", int, bounds=Bounds(lo=1, hi=MAX_HIDDEN)),
    )
    bias: bool = field(default=False, metadata=_opt("give the RNN the bias b", "model", bool))
    init_std: float = field(
        default=0.1,
        metadata=_opt(
            "parameters drawn from N(0, init_std^2), as in the notebook",
            "model",
            float,
            bounds=NON_NEGATIVE,
        ),
    )
    input_init_std: float | None = field(
        default=None,
        metadata=_opt(
            "the input weights V drawn from N(0, input_init_std^2) instead ('none': init_std)",
            "model",
            float,
            optional=True,
            bounds=NON_NEGATIVE,
        ),
    )
    orthogonal_gain: float | None = field(
        default=None,
        metadata=_opt(
            "draw U as G times a random orthogonal matrix (every singular value G) instead of "
            "from N(0, init_std^2) ('none': normal)",
            "model",
            float,
            optional=True,
            bounds=POSITIVE,
        ),
    )
    backend: str = field(
        default="auto",
        metadata=_opt(
            "the kernel that trains: compiled (the whole step in C, the same bits on any CPU), "
            "bptt (the hand-written BPTT kernel in PyTorch ops, any device), autograd (PyTorch's "
            "autograd); auto: compiled on a CPU where it can train the run, else bptt",
            "model",
            str,
            BACKENDS,
        ),
    )
    # --- optimization
    optimizer: str = field(
        default="adam", metadata=_opt("optimizer", "optimization", str, ("sgd", "adam"))
    )
    fused: bool = field(
        default=True,
        metadata=_opt(
            "with the torch kernels (--backend bptt or autograd), Adam as torch's fused "
            "kernel: one kernel updates every parameter, about twice as fast per step at these "
            "sizes and the same update up to rounding (so a different curve than --no-fused; "
            "runs recorded before this option resume unfused). The compiled kernel takes its "
            "own step either way",
            "optimization",
            bool,
        ),
    )
    lr: float = field(
        default=0.02, metadata=_opt("learning rate", "optimization", float, bounds=POSITIVE)
    )
    grad_clip: float | None = field(
        default=None,
        metadata=_opt(
            "clip the global gradient norm to this value ('none': no clipping)",
            "optimization",
            float,
            optional=True,
            bounds=POSITIVE,
        ),
    )
    batch_size: int = field(
        default=32,
        metadata=_opt(
            "B: sequences per step (with --schedule notebook: the fixed training set)",
            "optimization",
            int,
            bounds=SIZE,
        ),
    )
    steps: int = field(
        default=500,
        metadata=_opt(
            "most optimizer steps; a resumed run (train --resume) or a re-run sweep may raise it",
            "optimization",
            int,
            bounds=COUNT,
        ),
    )
    truncate: int | None = field(
        default=None,
        metadata=_opt(
            "window length of truncated BPTT ('none': full BPTT)",
            "optimization",
            int,
            optional=True,
            bounds=SIZE,
        ),
    )
    curriculum: bool = field(
        default=False,
        metadata=_opt(
            "train on k = 1, 2, ... in turn, moving on once held-out accuracy at the current k "
            "reaches --curriculum-advance; --echo-step is the last k, and solved means solved "
            "there",
            "optimization",
            bool,
        ),
    )
    curriculum_advance: float = field(
        default=1.0,
        metadata=_opt(
            "held-out accuracy at the current k that moves the curriculum on, in (0, 1]",
            "optimization",
            float,
            bounds=FRACTION,
        ),
    )
    curriculum_patience: int | None = field(
        default=None,
        metadata=_opt(
            "move the curriculum on after N steps at a k even if it is not solved, so that one "
            "hard k cannot stall it ('none': wait)",
            "optimization",
            int,
            optional=True,
            bounds=COUNT,
        ),
    )
    lr_halve_every: int | None = field(
        default=None,
        metadata=_opt(
            "halve the learning rate every N steps, counted from reaching the last k with "
            "--curriculum ('none': constant)",
            "optimization",
            int,
            optional=True,
            bounds=COUNT,
        ),
    )
    schedule: str = field(
        default="batch",
        metadata=_opt(
            "batch: a fresh random batch per step; notebook: the notebook's schedule, one fixed "
            "training set, one update per time step t on the error at step t alone (an epoch is "
            "seq_len steps)",
            "optimization",
            str,
            ("batch", "notebook"),
        ),
    )
    # --- evaluation
    eval_every: int = field(
        default=25,
        metadata=_opt(
            "evaluate on the held-out set and log every N steps (checkpoints: --checkpoint-every)",
            "evaluation",
            int,
            bounds=COUNT,
        ),
    )
    val_size: int = field(
        default=256,
        metadata=_opt(
            "held-out sequences, drawn from a generator separate from training",
            "evaluation",
            int,
            bounds=SIZE,
        ),
    )
    target_accuracy: float = field(
        default=1.0,
        metadata=_opt(
            "stop once held-out bit accuracy reaches this, in (0, 1]; TensorBoard's 'solved' is "
            "then 1 and 'solved_step' the step, and for a run that never reaches it 0 and the "
            "steps it ran",
            "evaluation",
            float,
            bounds=FRACTION,
        ),
    )
    compare_every: int = field(
        default=10,
        metadata=_opt(
            "log 'training/kernel vs autograd (rounding units)' at each of the first 5 "
            "evaluations after step 0 (a short run's card gets enough points to be drawn: "
            "TensorBoard's Scalars dashboard scales a chart without its outermost points), "
            "then every N evaluations, and at the last (a comparison costs about 2 ms a run)",
            "evaluation",
            int,
            bounds=COUNT,
        ),
    )
    checkpoint_every: int = field(
        default=10,
        metadata=_opt(
            "write the run's checkpoint, checkpoints/last.pt, at every Nth evaluation, besides "
            "step 0, the end and a stop by a signal; a run killed outright (kill -9, a crash) "
            "resumes from it, at most N x --eval-every steps back, and trains them again to "
            "the same bits (a checkpoint costs about a millisecond: at every evaluation of the "
            "frontier preset it was a seventh of a sweep's time)",
            "evaluation",
            int,
            bounds=COUNT,
        ),
    )
    log_every: int = field(
        default=1,
        metadata=_opt(
            "a point on the curves every N steps: the training loss averaged over them, held-out "
            "loss and accuracy measured there (one host sync and one held-out forward per point; "
            "every step by default, so that a short run's held-out curve reaches what it reached "
            "under TensorBoard's smoothing)",
            "evaluation",
            int,
            bounds=COUNT,
        ),
    )
    # --- run
    device: str = field(default="auto", metadata=_opt(DEVICE_HELP, "run", str))
    threads: int = field(
        default=1,
        metadata=_opt(
            "CPU threads for this run's tensor operations (torch.set_num_threads, restored "
            "afterwards); the curve depends on it, so it is part of the run. 1 is fastest at "
            "these sizes",
            "run",
            int,
            bounds=Bounds(lo=1, hi=MAX_THREADS),
        ),
    )
    cuda_graph: bool = field(
        default=False,
        metadata=_opt(
            "capture the training step (forward, loss, backward, clipping, optimizer) in a CUDA "
            "graph and replay it: a time loop on a GPU is bound by kernel launches "
            "(CUDA and --schedule batch only)",
            "run",
            bool,
        ),
    )
    seed: int = field(
        default=0,
        metadata=_opt(
            "seed of the weights, the training data and the held-out set",
            "run",
            int,
            bounds=Bounds(lo=0, hi=MAX_SEED),
        ),
    )
    logdir: str = field(
        default="runs", metadata=_opt("directory that holds one directory per run", "run", str)
    )
    run_name: str | None = field(
        default=None,
        metadata=_opt(
            "name of this run's directory (default: task, backend, seed and time)",
            "run",
            str,
            optional=True,
        ),
    )
    preset: str | None = field(
        default=None,
        metadata=_opt(
            "the preset these settings started from: set by --preset, recorded for TensorBoard; "
            "it changes nothing by itself",
            "run",
            str,
            optional=True,
            flag=False,
        ),
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid setting. A config validated
        once and unchanged since is not checked again (the device and the memory included):
        a command validates each config once, however many layers it passes through."""
        if getattr(self, "_validated", None) == self._values():
            return
        self._check()
        self._validated = self._values()

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))

    def _check(self) -> None:
        check_fields(self)  # each field's kind, choices and bounds, as its metadata declares
        if self.echo_step < 0 or self.echo_step >= self.seq_len:
            raise ConfigError(
                "echo_step", f"must be in [0, seq_len) = [0, {self.seq_len}), got {self.echo_step}"
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(
                "preset", f"must be one of {', '.join(PRESETS)}, got {shown(self.preset)}"
            )
        if self.curriculum and self.schedule != "batch":
            raise ConfigError("curriculum", "needs --schedule batch")
        if self.run_name is not None:
            check_dir_name(self.run_name, "run_name")
        check_utf8(self.logdir, "logdir")
        try:
            device = resolve_device(self.device)
        except ValueError as exc:
            raise ConfigError("device", str(exc)) from None
        if self.cuda_graph and device.type != "cuda":
            raise ConfigError("cuda_graph", f"needs a CUDA device, got {self.device!r}")
        if self.cuda_graph and self.schedule != "batch":
            raise ConfigError(
                "cuda_graph",
                "needs --schedule batch (the notebook schedule "
                "changes the step's shape every step)",
            )
        check_memory(self, device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resume_changes(self, recorded: TrainConfig) -> list[str]:
        """The settings in which this config differs from ``recorded`` (a run's own) other
        than those a resume may change (RESUME_FREE): a resumed run or a re-run sweep must
        have none, since its curve must be the one it started."""
        mine, theirs = self.to_dict(), recorded.to_dict()
        return sorted(k for k in mine if k not in RESUME_FREE and theirs[k] != mine[k])

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "config", recorded: bool = False
    ) -> TrainConfig:
        """Build from a mapping of field names (dashes or underscores) to values. With
        ``recorded`` (a config a run saved), a setting added since takes the value that
        reproduces how that run was made (LEGACY), not today's default."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in LEGACY.items() if k not in data} if recorded else {}
        seen: dict[str, str] = {}
        for key, value in data.items():
            name = key.replace("-", "_") if isinstance(key, str) else None
            if name not in known:
                raise ConfigError(
                    source, f"unknown setting {shown(key)}; valid are {', '.join(sorted(known))}"
                )
            if name in seen:  # hidden-size and hidden_size: which one would win is a guess
                raise ConfigError(
                    source, f"{name} is set twice, as {seen[name]!r} and {key!r}; keep one"
                )
            seen[name] = key
            if (
                isinstance(value, str)
                and value.lower() == "none"
                and fields_by_name()[name].metadata["optional"]
            ):
                value = None
            values[name] = value
        return cls(**values)


# What `train --resume` may be given: how far the run goes and how often it checkpoints,
# neither of which changes the curve; as the flags' help and errors name them.
RESUME_OVERRIDES = ("steps", "checkpoint_every")
RESUME_FLAGS = " and ".join("--" + k.replace("_", "-") for k in RESUME_OVERRIDES)
# What a resumed run may change: where it is kept (a run directory can be moved), the
# preset's name (a label) and RESUME_OVERRIDES. Everything else decides the curve.
RESUME_FREE = ("logdir", "run_name", "preset", *RESUME_OVERRIDES)

# What a run recorded before a setting existed was made with: Adam unfused. (threads: the
# count those runs used was the environment's, unknown; they resume on 1.)
LEGACY: dict[str, Any] = {"fused": False}


def fields_by_name() -> dict[str, Any]:
    return {f.name: f for f in fields(TrainConfig)}


# A preset is a named set of settings applied before the config file and the flags.
PRESETS: dict[str, dict[str, Any]] = {
    # The notebook's experiment: one fixed 50-bit sequence, SGD at lr 0.01, at most 1000
    # epochs of one update per time step, evaluated once per epoch.
    "notebook": {
        "schedule": "notebook",
        "optimizer": "sgd",
        "lr": 0.01,
        "batch_size": 1,
        "seq_len": 50,
        "echo_step": 2,
        "hidden_size": 6,
        "bias": False,
        "steps": 1000 * 50,
        "eval_every": 50,
        "log_every": 50,
    },
    # The recipe that reaches k = H (see the README): train at k directly, from input weights
    # large enough (1.5) that inputs drive units into tanh's saturation, the nonlinearity a
    # linear-regime network lacks (for a linear RNN k = H is impossible); clipping against
    # the gradient spikes of long memories; a constant, moderate learning rate. A curriculum
    # over k is available (--curriculum) but hurts here: the shift register it builds for
    # k < H is the near-linear solution that cannot be extended to k = H.
    "frontier": {
        "init_std": 0.3,
        "input_init_std": 1.5,
        "optimizer": "adam",
        "lr": 0.005,
        "grad_clip": 1.0,
        "batch_size": 64,
        "eval_every": 100,
        "log_every": 50,
        "steps": 40000,
    },
}


# A config file is a few hundred bytes; nothing larger is read.
MAX_TOML_BYTES = 2**20


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = tomllib.loads(read_regular(path, MAX_TOML_BYTES).decode("utf-8"))
    except RecursionError:
        raise ConfigError(
            "config", f"{path} nests its tables or arrays too deeply for a config"
        ) from None
    except FileNotFoundError:
        raise ConfigError("config", f"no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError("config", f"{path} is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not UTF-8 text, so not a TOML file") from None
    except NotADirectoryError:
        raise ConfigError(
            "config", f"no such file: {path} (a part of the path is a file)"
        ) from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # not a regular file, too large
        raise ConfigError("config", f"{path} {exc}; a config is a small TOML file") from None
    if "train" in data and isinstance(data["train"], dict) and len(data) == 1:
        data = data["train"]  # a [train] table is accepted too
    return data


def build_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    exclude: tuple[str, ...] = (),
) -> TrainConfig:
    """Defaults, then the preset, then the TOML file, then the overrides (the flags). A
    setting the file gets wrong is named as the file's (``config``); the file may not set
    ``exclude`` (what the caller decides itself: a sweep's grid)."""
    values: dict[str, Any] = {}
    from_file: dict[str, Any] = {}
    for key, value in (load_toml(file) if file is not None else {}).items():
        name = key.replace("-", "_")
        if name in from_file:  # hidden-size and hidden_size: which one would win is a guess
            raise ConfigError(
                "config", f"{file} sets {name} twice (as {key!r} and another spelling); keep one"
            )
        if name in exclude:
            raise ConfigError(
                "config",
                f"{file} sets {name}, which the sweep decides "
                "(--echo-steps, --hidden-sizes, --seeds, and each "
                "point's run name); remove it from the file",
            )
        from_file[name] = value
    named = from_file.get("preset")
    if preset is not None and named is not None and named != preset:
        raise ConfigError(
            "preset",
            f"--preset {preset} and {file}'s preset = {shown(named)} disagree; give one of them",
        )
    if preset is None and isinstance(named, str):
        preset = named  # a file may name its preset
    if preset is not None:
        if preset not in PRESETS:
            where = "" if named is None else f" (in {file})"
            raise ConfigError(
                "preset", f"must be one of {', '.join(PRESETS)}, got {shown(preset)}{where}"
            )
        values.update(PRESETS[preset], preset=preset)
    values.update(from_file)
    values.update(overrides or {})
    try:
        config = TrainConfig.from_dict(values, source="config")
        config.validate()
    except ConfigError as exc:
        if exc.setting in from_file and exc.setting not in (overrides or {}):
            raise ConfigError("config", f"{file} sets {exc.setting}: {exc.detail}") from None
        raise
    return config


# --- command-line flags derived from the dataclass -------------------------------------


def _parser_for(f, check_bounds: bool = False) -> Any:
    """The argparse type of a TrainConfig field: its kind, 'none' where it is optional, and
    with ``check_bounds`` its declared bounds too, in the words validation uses."""
    m = f.metadata
    return arg_type(m["kind"], m["bounds"] if check_bounds else None, m["optional"])


def arg_type(kind: type, bounds: Bounds | None = None, optional: bool = False) -> Any:
    """An argparse type: a ``kind`` written in ASCII (int() would take Arabic-Indic or
    full-width digits too), within ``bounds`` when given, 'none' where ``optional``; its
    errors in the words validation uses."""
    if bounds is not None:
        what = bounds.describe(kind)
    else:
        what = {int: "an integer", float: "a number", str: "a string"}[kind]
    if optional:
        what += " or none"
    check_bounds = bounds is not None

    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            if kind is not str and not text.isascii():
                raise ValueError
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if check_bounds and bounds is not None and not bounds.holds(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


def bounded_arg(setting: str):
    """An argparse type for a flag of another command (gradcheck, bench) that takes the
    same values as the TrainConfig field ``setting``: its type and its declared bounds."""
    return _parser_for(fields_by_name()[setting], check_bounds=True)


def check_fields(obj: Any) -> None:
    """Raise :class:`ConfigError` naming the first field of the dataclass ``obj`` (declared
    with :func:`_opt`, as TrainConfig's are) whose value is not of its kind, not among its
    choices or outside its bounds; None passes where the field is optional."""
    for f in fields(obj):
        value, m = getattr(obj, f.name), f.metadata
        if value is None and m["optional"]:
            continue
        kind = m["kind"]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f.name, f"must be {kind.__name__}, got {shown(value)}")
        if m["choices"] and value not in m["choices"]:
            raise ConfigError(
                f.name, f"must be one of {', '.join(m['choices'])}, got {shown(value)}"
            )
        bounds = m["bounds"]
        if bounds is not None and not bounds.holds(value):
            what = bounds.describe(kind) + (" or none" if m["optional"] else "")
            raise ConfigError(f.name, f"must be {what}, got {shown(value)}")


def add_field_flags(
    groups: dict[str, Any], cls: type, exclude: tuple[str, ...] = (), check_bounds: bool = True
) -> None:
    """One flag per field of the dataclass ``cls`` (declared with :func:`_opt`), added to
    ``groups[its group]`` (argparse argument groups), typed and bounded by its metadata
    (without ``check_bounds`` the bounds are left to the dataclass's own validation), its
    help ending in its default; absent flags stay absent from the namespace
    (``argparse.SUPPRESS``), so that :func:`given_fields` returns only what was typed."""
    for f in fields(cls):
        m = f.metadata
        if f.name in exclude or not m["flag"]:
            continue
        default = f.default if f.default is not MISSING else None
        opt = "--" + f.name.replace("_", "-")
        help_ = m["help"]
        if "(default:" not in help_:
            help_ += f" (default: {'none' if default is None else default})"
        if m["kind"] is bool:
            groups[m["group"]].add_argument(
                opt, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_
            )
        else:
            groups[m["group"]].add_argument(
                opt,
                type=_parser_for(f, check_bounds=check_bounds),
                choices=m["choices"],
                default=argparse.SUPPRESS,
                metavar=None if m["choices"] else f.name.upper(),
                help=help_,
            )


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` that were given on the command line
    (:func:`add_field_flags`)."""
    names = {f.name for f in fields(cls) if f.metadata["flag"]}
    return {k: v for k, v in vars(args).items() if k in names}


def add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per :class:`TrainConfig` field (but ``exclude``), grouped; absent flags stay
    absent from the namespace (``argparse.SUPPRESS``) so that only what the user typed
    overrides. Bounds are checked by :meth:`TrainConfig.validate`, which also names a value
    that came from a config file."""
    groups = {g: parser.add_argument_group(g) for g in GROUPS}
    add_field_flags(groups, TrainConfig, exclude, check_bounds=False)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user gave on the command line."""
    return given_fields(args, TrainConfig)


# --- checks shared with the sweep ------------------------------------------------------

# NAME_MAX of the usual file systems: a longer directory name fails at mkdir.
MAX_NAME_BYTES = 255


def check_dir_name(name: str, setting: str) -> None:
    """A name for one directory: not empty, no path separator, not . or .., at most 255
    bytes. Raises ConfigError naming ``setting``."""
    shown = repr(name) if len(name) <= 60 else f"{name[:40]!r}... ({len(name)} characters)"
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise ConfigError(setting, f"must be a plain directory name, got {shown}")
    check_utf8(name, setting)
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ConfigError(
            setting, f"must be a directory name of at most {MAX_NAME_BYTES} bytes, got {shown}"
        )


def check_utf8(text: str, setting: str) -> None:
    """A name the run prints, records in JSON and shows in TensorBoard: UTF-8 text. Bytes
    that are not (a shell's $'\\xff') reach Python as surrogates, which none of them can
    write. Raises ConfigError naming ``setting``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(setting, f"must be UTF-8 text, got {ascii(text)[:80]}") from None


# The sizes that decide a run's memory, with the defaults they are compared with to name the
# one the user most likely raised.
_SIZE_FIELDS = ("batch_size", "seq_len", "val_size", "hidden_size")


def run_bytes(config: TrainConfig) -> int:
    """What a run of ``config`` allocates at most, beyond the interpreter and torch: a
    training step and an evaluation (which keeps no graph) of the held-out set."""
    from echo_rnn.devices import rnn_bytes

    c = config
    return (
        rnn_bytes(c.batch_size, c.seq_len, c.hidden_size)
        + rnn_bytes(c.val_size, c.seq_len, c.hidden_size) // 2
    )


def check_memory(config: TrainConfig, device) -> None:
    """Refuse, before anything is allocated or written, a run that cannot fit in memory."""
    from echo_rnn.devices import check_fits

    c = config
    need = run_bytes(c)
    reason = check_fits(
        need, device, f"B={c.batch_size}, T={c.seq_len}, H={c.hidden_size}, val_size={c.val_size}"
    )
    if reason:
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        culprit = max(_SIZE_FIELDS, key=lambda n: getattr(c, n) / defaults[n])
        raise ConfigError(culprit, f"too large: {reason}")
