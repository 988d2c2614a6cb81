"""gradcheck's problem: the seeded model and batch that ``echo-rnn gradcheck`` checks a
backward pass on, one field per setting, and the tensors built from them (:class:`Problem`,
one type for the settings, the tensors and what checks computed on them once).

Every field is, with nothing else to write, a flag of ``echo-rnn gradcheck`` (``hidden_size``
is ``--hidden-size``, its help, bounds and default from the field's metadata), a keyword of
:func:`echo_rnn.learner.check_grads`, an entry of the report's header line
(``B=1 T=50 ...``) and of its ``--json`` ``"config"``; tests/test_learner.py holds all four
to the fields. Adding a setting is adding a field here, and using it where the problem is
built (:meth:`Problem._build`).

Imports nothing heavy at import (no torch): the command line builds its flags from it before
torch loads; the tensors are built, with torch, when first read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from echo_rnn.config import MAX_HIDDEN, MAX_SEED, NON_NEGATIVE, SIZE, Bounds, _opt, check_fields
from echo_rnn.errors import ConfigError, shown

# The seed of a learner's default problem: of seeds 0-19, the one on whose default problem
# the catalogue's variations stay furthest apart (echo_rnn.learner.separation). It is written
# here, not computed, so that the help text, the README's walkthrough (seed=7) and its
# "Telling them apart" paragraph cannot move under them; the mistakes.py docstring says how
# it is checked when a mistake is added.
DEFAULT_SEED = 7
# echo-rnn's own kernels are checked at seed 0 unless --seed says otherwise: their figures
# in the README were made so.
KERNEL_SEED = 0

# The truncations of BPTT a learner's gradient can be checked against (echo_rnn.truncated).
TRUNCATIONS = ("windows", "back")


def _setting(help: str, kind: type, symbol: str | None = None, **kw: Any) -> dict:
    """A field's metadata: config's (help, bounds, ...) in the group "problem", and the
    letter the report's header shows it as (the shape vocabulary's: B, T, H, I, k)."""
    return {**_opt(help, "problem", kind, **kw), "symbol": symbol}


@dataclass(frozen=True)
class Problem:
    """What a gradient check is made on; the notebook's problem by default: one sequence of
    T = 50 bits, H = 6, no bias, h_0 = 0, weights from N(0, 0.1^2), full BPTT.

    The fields are the settings; the tensors (``model``, ``x`` (B, T, I), ``y`` (B, T),
    ``h0`` (B, H) or None) are built from them when first read, in float64 on the CPU unless
    :meth:`on` says otherwise, and kept, as is whatever a check computes once per problem
    (:meth:`cached`: autograd's answer, the tolerances' floors, the catalogue's variations),
    so that a class of learners graded on one problem pays for them once. Two problems are
    equal when their settings are."""

    batch_size: int = field(
        default=1, metadata=_setting("B: sequences in the batch", int, "B", bounds=SIZE)
    )
    seq_len: int = field(
        default=50, metadata=_setting("T: steps per sequence", int, "T", bounds=SIZE)
    )
    hidden_size: int = field(
        default=6,
        metadata=_setting("H: hidden units", int, "H", bounds=Bounds(lo=1, hi=MAX_HIDDEN)),
    )
    input_size: int = field(
        default=1,
        metadata=_setting(
            "I: inputs per step; channel 0 carries the echo task, the others random bits",
            int,
            "I",
            bounds=Bounds(lo=1, hi=MAX_HIDDEN),
        ),
    )
    echo_step: int = field(
        default=2,
        metadata=_setting(
            "k: the target is the input delayed by k steps, below --seq-len",
            int,
            "k",
            bounds=Bounds(lo=0),
        ),
    )
    bias: bool = field(default=False, metadata=_setting("give the model the bias b", bool))
    h0: bool = field(
        default=False,
        metadata=_setting("start from a random initial state and check its gradient too", bool),
    )
    seed: int = field(
        default=DEFAULT_SEED,
        metadata=_setting(
            f"seed of the weights and the data (default: {DEFAULT_SEED} with --grads, the seed "
            f"that keeps the catalogue's mistakes furthest apart; {KERNEL_SEED} for echo-rnn's "
            "kernels)",
            int,
            bounds=Bounds(lo=0, hi=MAX_SEED),
        ),
    )
    init_std: float = field(
        default=0.1,
        metadata=_setting("parameters drawn from N(0, init_std^2)", float, bounds=NON_NEGATIVE),
    )
    truncate: int | None = field(
        default=None,
        metadata=_setting(
            "window length k of truncated BPTT ('none': full BPTT); with --grads, in the sense "
            "of --truncation",
            int,
            optional=True,
            bounds=SIZE,
        ),
    )
    truncation: str | None = field(
        default=None,
        metadata=_setting(
            "with --grads --truncate k: windows (echo-rnn's: windows of k steps) or back (each "
            "output's gradient flows back at most k steps, a tutorial's bptt_truncate) (default: "
            "windows, when --truncate is given)",
            str,
            choices=TRUNCATIONS,
            optional=True,
        ),
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.echo_step >= self.seq_len:
            raise ConfigError(
                "echo_step", f"must be in [0, seq_len) = [0, {self.seq_len}), got {self.echo_step}"
            )
        # one spelling per check: no truncation without truncate, windows by default
        truncation = None if self.truncate is None else (self.truncation or "windows")
        object.__setattr__(self, "truncation", truncation)
        object.__setattr__(self, "_target", ("float64", "cpu"))

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Problem:
        """From keywords (check_grads'), an unknown one named with the valid ones."""
        known = [f.name for f in fields(cls)]
        for key in settings:
            if key not in known:
                raise ConfigError(
                    "problem", f"unknown setting {shown(key)}; valid are {', '.join(known)}"
                )
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The header line's settings, every field that is set: "B=1 T=50 H=6 I=1 k=2
        bias=False h0=False seed=7 init_std=0.1" (and "truncate=4 truncation=back")."""
        return " ".join(
            f"{f.metadata['symbol'] or f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) is not None
        )

    # --- the tensors, built when first read ---------------------------------------------

    def on(self, dtype: Any = None, device: Any = None) -> Problem:
        """This problem with its tensors built in ``dtype`` on ``device`` (torch's, or their
        names; float64 on the CPU when left out)."""
        other = replace(self)
        target = (
            str(dtype).removeprefix("torch.") if dtype is not None else "float64",
            str(device) if device is not None else "cpu",
        )
        object.__setattr__(other, "_target", target)
        return other

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """What ``make()`` returns, computed once per problem and kept under ``key``: once
        for every equal problem (the same settings, dtype and device) in this process."""
        cache = self._cache
        if key not in cache:
            cache[key] = make()
        return cache[key]

    @property
    def _cache(self) -> dict[str, Any]:
        return _shared(tuple(getattr(self, f.name) for f in fields(self)) + self._target)

    def _build(self) -> tuple[Any, Any, Any, Any]:
        """The seeded model and echo batch: x (B, T, I), y (B, T), h0 (B, H) or None. Input
        channel 0 carries the echo task; further input channels are independent random bits.
        (``truncate`` is the check's, not the problem's: nothing here uses it.)"""
        import torch

        from echo_rnn.data import bits, make_echo_batch
        from echo_rnn.model import EchoRNN

        dtype, device = getattr(torch, self._target[0]), torch.device(self._target[1])
        gen = torch.Generator(device=device).manual_seed(self.seed)
        model = EchoRNN(
            self.hidden_size,
            self.input_size,
            bias=self.bias,
            init_std=self.init_std,
            generator=torch.Generator(),
        )  # redrawn below; spares the global RNG
        model.to(device=device, dtype=dtype)
        model.reset_parameters(generator=gen)
        x, y = make_echo_batch(
            self.batch_size, self.seq_len, self.echo_step, generator=gen, device=device, dtype=dtype
        )
        x = x.unsqueeze(-1)  # (B, T) -> (B, T, 1)
        if self.input_size > 1:
            extra = torch.rand(
                self.batch_size, self.seq_len, self.input_size - 1, generator=gen, device=device
            )
            x = torch.cat([x, bits(extra, dtype=dtype)], dim=-1)  # (B, T, I)
        h0 = (
            torch.randn(
                self.batch_size, self.hidden_size, generator=gen, device=device, dtype=dtype
            )
            * 0.5
            if self.h0
            else None
        )
        return model, x, y, h0

    def _tensors(self) -> tuple[Any, Any, Any, Any]:
        return self.cached(f"tensors:{self._target}", self._build)

    @property
    def model(self) -> Any:
        """The EchoRNN holding U, V, w, b."""
        return self._tensors()[0]

    @property
    def x(self) -> Any:
        return self._tensors()[1]

    @property
    def y(self) -> Any:
        return self._tensors()[2]

    @property
    def h0_state(self) -> Any:
        """h_0 (B, H), or None for zeros (``h0``, the field, says whether there is one)."""
        return self._tensors()[3]

    @property
    def B(self) -> int:
        return self.batch_size

    @property
    def T(self) -> int:
        return self.seq_len

    @property
    def I(self) -> int:  # the shape vocabulary's letter
        return self.input_size

    @property
    def H(self) -> int:
        return self.hidden_size

    @property
    def single(self) -> bool:
        """One sequence with one input: x and y are (T,), h0 (H,) and dh (T, H) in the
        learner's contract."""
        return self.B == 1 and self.I == 1

    def params(self) -> dict[str, Any]:
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every key a learner's function may return, in the contract."""
        B, T, H, I = self.B, self.T, self.H, self.I
        shapes = {"U": (H, H), "V": (H, I), "w": (H,)}
        if self.bias:
            shapes["b"] = (H,)
        shapes["h0"] = (H,) if self.single else (B, H)
        shapes["dh"] = (T, H) if self.single else (B, T, H)
        return shapes

    def kwargs(self, arrays: str = "numpy") -> dict[str, Any]:
        """A learner's function's keyword arguments: fresh copies, so that what it does to
        them cannot change the problem."""
        given = dict(self.params())
        given["x"] = self.x.reshape(self.T) if self.single else self.x
        given["y"] = self.y.reshape(self.T) if self.single else self.y
        if self.h0_state is not None:
            given["h0"] = self.h0_state.reshape(self.H) if self.single else self.h0_state
        if arrays == "torch":
            return {k: v.clone() for k, v in given.items()}
        return {k: v.numpy().copy() for k, v in given.items()}


# The name it had when it held the settings alone; code that imports it keeps working.
GradcheckProblem = Problem


# What checks compute from a problem's settings alone (its tensors, autograd's answer, the
# floors, the catalogue's variations and pairs), kept for the few problems used last and
# shared by every equal problem in this process: a course's class graded on one problem, or
# a notebook (or a test suite) checking many functions on the default problem, pays for
# them once.
_SHARED: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_SHARED_PROBLEMS = 4
_SHARED_LOCK = threading.Lock()


def _shared(key: tuple) -> dict[str, Any]:
    with _SHARED_LOCK:
        cache = _SHARED.get(key)
        if cache is None:
            cache = _SHARED[key] = {}
            while len(_SHARED) > _SHARED_PROBLEMS:
                _SHARED.popitem(last=False)
        else:
            _SHARED.move_to_end(key)
        return cache
