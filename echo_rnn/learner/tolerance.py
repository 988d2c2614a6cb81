"""How close is close enough: each gradient's tolerance, from the rounding its sums make and
from how far echo-rnn's own two kernels land from autograd on the very problem
(:class:`Tolerances`), and a gradient judged with it (:func:`judge`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from echo_rnn.compare import GradRow, manual_grads
from echo_rnn.model import EchoRNN
from echo_rnn.problem import Problem

# When a learner's gradient agrees. Rounding error grows with the sums (B T H terms reach
# every entry of dU) and, where the recurrence is chaotic (weights of std 0.1 at H = 300 give
# U a spectral radius near 1.7), exponentially with T: at H = 300, T = 300 two correct float64
# implementations differ by 7e-3 of the gradient's scale. No formula in the sizes alone
# covers that, so the tolerance of each gradient, relative to its largest entry, is the
# larger of
# - ROUNDING_TERMS eps sqrt(B T H): the rounding of the sums, with a wide margin (correct
#   code measures 1e-16 to 1e-15 at eps = 2.2e-16 up to H = 150, T = 300);
# - NOISE_SAFETY times how far echo-rnn's own two kernels, run in the learner's precision,
#   land from autograd in float64 on this very problem (`noise_floor`): what rounding costs
#   here. Correct learner code measured within 2x of it at every size tried (H 6-300,
#   T 50-300, float64 and float32); 20x leaves a wide margin.
ROUNDING_TERMS = 16.0
NOISE_SAFETY = 20.0
# The precisions a learner's arrays can have, and the one their check is made at: float16 and
# bfloat16 are judged at float32's floor scaled by their eps.
PRECISIONS = ("float64", "float32", "float16", "bfloat16")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (inf where b is zero and a is not)."""
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item()
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def noise_floor(
    problem: Problem, right: dict[str, torch.Tensor], precision: str = "float64"
) -> dict[str, float]:
    """How far two correct implementations land from autograd on ``problem``: for every
    gradient, the larger relative difference (:func:`_rel`) of echo-rnn's reference and fast
    kernels, run in ``precision`` ("float64" or "float32"), from ``right`` (autograd's, in
    float64). Rounding alone makes this difference, and a chaotic recurrence amplifies it."""
    dtype = {"float64": torch.float64, "float32": torch.float32}[precision]
    m = problem.model
    model = EchoRNN(m.hidden_size, m.input_size, m.bias, m.init_std, generator=torch.Generator())
    model.to(dtype)
    model.load_state_dict(m.state_dict())  # cast into the model's dtype
    h0 = problem.h0_state.to(dtype) if problem.h0 else None
    floors: dict[str, float] = {}
    for kernel in ("reference", "fast"):
        got = manual_grads(
            model, problem.x.to(dtype), problem.y.to(dtype), h0, kernel=kernel, hidden=True
        )
        for name, r in right.items():
            d = _rel(got[name].to(torch.float64), r)
            floors[name] = max(floors.get(name, 0.0), d if math.isfinite(d) else 1.0)
    return floors


class Tolerances:
    """Each gradient's tolerance, relative to its largest entry, at each precision (see
    ROUNDING_TERMS and NOISE_SAFETY); the noise floors are measured when first asked for."""

    def __init__(self, problem: Problem, right: dict[str, torch.Tensor]) -> None:
        self.problem, self.right = problem, right
        self._floors: dict[str, dict[str, float]] = {}

    def floor(self, precision: str) -> dict[str, float]:
        base = "float64" if precision == "float64" else "float32"
        if base not in self._floors:  # once per problem: a class graded on it shares them
            self._floors[base] = self.problem.cached(
                f"noise floor:{base}", lambda: noise_floor(self.problem, self.right, base)
            )
        return self._floors[base]

    def __call__(self, name: str, precision: str) -> float:
        p = self.problem
        eps = torch.finfo(getattr(torch, precision)).eps
        floor = self.floor(precision)[name]
        if precision in ("float16", "bfloat16"):
            floor *= eps / torch.finfo(torch.float32).eps
        return max(ROUNDING_TERMS * eps * math.sqrt(p.B * p.T * p.H), NOISE_SAFETY * floor)


def _precision(dtype: str) -> str:
    """The precision a learner's array is judged at: its own when it is a float below
    float64, else float64 (integers, float64 and longer floats)."""
    return dtype if dtype in PRECISIONS else "float64"


@dataclass
class Judged:
    """One gradient's verdict: its row, the precision it agrees to ("float64", "float32",
    ...; None when it disagrees) and the tolerance it was judged with."""

    row: GradRow
    agrees_to: str | None
    tolerance: float


def judge(
    name: str, got: torch.Tensor, right: torch.Tensor, dtype: str, tolerances: Tolerances
) -> Judged:
    """Whether the learner's gradient ``got`` agrees with autograd's ``right``: to float64
    precision, or, when the learner computed in a lower precision (its array's dtype; or
    float64 arrays whose differences are float32's size, states kept in float32), to that
    precision. Relative to the gradient's largest entry, as :func:`departure` judges dh."""
    diff = (got - right).abs()
    max_abs = diff.max().item()
    max_rel = _rel(got, right)
    learner = _precision(dtype)
    tiers = ["float64"] + ([learner] if learner != "float64" else ["float32"])
    agrees_to = None
    for tier in tiers:
        tol = tolerances(name, tier)
        if max_rel <= tol:  # NaN compares False: it never agrees
            agrees_to = tier
            break
    row = GradRow(name, tuple(right.shape), max_abs, max_rel, agrees_to is not None)
    return Judged(row, agrees_to, tol)
