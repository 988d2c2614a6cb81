"""gradcheck's problem as data: the seeded model, batch and reference gradient that
``echo-rnn gradcheck`` checks a backward pass on, one field per setting.

Every field is, with nothing else to write, a flag of ``echo-rnn gradcheck`` (``hidden_size``
is ``--hidden-size``, its help, bounds and default from the field's metadata), a keyword of
:func:`echo_rnn.learner.check_grads`, an entry of the report's header line
(``B=1 T=50 ...``) and of its ``--json`` ``"config"``; tests/test_learner.py holds all four
to the fields. Adding a setting is adding a field here, and using it where the problem is
built (:func:`echo_rnn.compare.make_problem`).

Imports nothing heavy (no torch): the command line builds its flags from it before torch
loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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
class GradcheckProblem:
    """What a gradient check is made on; the notebook's problem by default: one sequence of
    T = 50 bits, H = 6, no bias, h_0 = 0, weights from N(0, 0.1^2), full BPTT."""

    batch_size: int = field(default=1, metadata=_setting(
        "B: sequences in the batch", int, "B", bounds=SIZE))
    seq_len: int = field(default=50, metadata=_setting(
        "T: steps per sequence", int, "T", bounds=SIZE))
    hidden_size: int = field(default=6, metadata=_setting(
        "H: hidden units", int, "H", bounds=Bounds(lo=1, hi=MAX_HIDDEN)))
    input_size: int = field(default=1, metadata=_setting(
        "I: inputs per step; channel 0 carries the echo task, the others random bits", int,
        "I", bounds=Bounds(lo=1, hi=MAX_HIDDEN)))
    echo_step: int = field(default=2, metadata=_setting(
        "k: the target is the input delayed by k steps, below --seq-len", int, "k",
        bounds=Bounds(lo=0)))
    bias: bool = field(default=False, metadata=_setting("give the model the bias b", bool))
    h0: bool = field(default=False, metadata=_setting(
        "start from a random initial state and check its gradient too", bool))
    seed: int = field(default=DEFAULT_SEED, metadata=_setting(
        f"seed of the weights and the data (default: {DEFAULT_SEED} with --grads, the seed "
        f"that keeps the catalogue's mistakes furthest apart; {KERNEL_SEED} for echo-rnn's "
        "kernels)", int, bounds=Bounds(lo=0, hi=MAX_SEED)))
    init_std: float = field(default=0.1, metadata=_setting(
        "parameters drawn from N(0, init_std^2)", float, bounds=NON_NEGATIVE))
    truncate: int | None = field(default=None, metadata=_setting(
        "window length k of truncated BPTT ('none': full BPTT); with --grads, in the sense "
        "of --truncation", int, optional=True, bounds=SIZE))
    truncation: str | None = field(default=None, metadata=_setting(
        "with --grads --truncate k: windows (echo-rnn's: windows of k steps) or back (each "
        "output's gradient flows back at most k steps, a tutorial's bptt_truncate) (default: "
        "windows, when --truncate is given)", str, choices=TRUNCATIONS, optional=True))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.echo_step >= self.seq_len:
            raise ConfigError("echo_step", f"must be in [0, seq_len) = [0, {self.seq_len}), "
                                           f"got {self.echo_step}")
        # one spelling per check: no truncation without truncate, windows by default
        truncation = None if self.truncate is None else (self.truncation or "windows")
        object.__setattr__(self, "truncation", truncation)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> GradcheckProblem:
        """From keywords (check_grads'), an unknown one named with the valid ones."""
        known = [f.name for f in fields(cls)]
        for key in settings:
            if key not in known:
                raise ConfigError("problem", f"unknown setting {shown(key)}; valid are "
                                             f"{', '.join(known)}")
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The header line's settings, every field that is set: "B=1 T=50 H=6 I=1 k=2
        bias=False h0=False seed=7 init_std=0.1" (and "truncate=4 truncation=back")."""
        return " ".join(f"{f.metadata['symbol'] or f.name}={getattr(self, f.name)}"
                        for f in fields(self) if getattr(self, f.name) is not None)
