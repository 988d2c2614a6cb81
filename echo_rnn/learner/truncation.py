"""Truncated BPTT where full BPTT was asked for: when a learner's gradients disagree, the
truncations that would explain all of them are tried (:func:`find_truncation`), so that the
report says "your code computes truncated BPTT in windows of 8 steps" rather than a mistake."""

from __future__ import annotations

from typing import Any

import torch

from echo_rnn import truncated
from echo_rnn.learner.tolerance import Tolerances, _rel
from echo_rnn.problem import Problem


def _truncated(problem: Problem, k: int, kind: str) -> dict[str, torch.Tensor]:
    """The gradients of ``problem`` truncated at ``k`` (:mod:`echo_rnn.truncated`)."""
    return _windows(problem, k) if kind == "windows" else _back(problem)[k]


def _args(problem: Problem) -> tuple:
    p = problem.params()
    return (problem.x, problem.y, p["U"], p["V"], p["w"], p.get("b"), problem.h0_state)


def _back(problem: Problem) -> list[dict[str, torch.Tensor]]:
    """Every k of "at most k steps back", k = 0..T-1 (one pass for all), once per problem."""
    return problem.cached("truncated:back", lambda: truncated.back(problem.T - 1, *_args(problem)))


def _windows(problem: Problem, k: int) -> dict[str, torch.Tensor]:
    return problem.cached(f"truncated:windows:{k}", lambda: truncated.windows(k, *_args(problem)))


# The truncations tried when full BPTT disagrees: windows of 2 to this many steps (each a
# pass over T), and every k of "at most k steps back" (one pass for all).
SEARCH_WINDOWS = 64


def find_truncation(
    grads: dict[str, torch.Tensor],
    problem: Problem,
    tolerances: Tolerances,
    precisions: dict[str, str],
) -> dict[str, Any] | None:
    """The truncation of BPTT every returned gradient agrees with, when one does:
    {"kind": "back" or "windows", "k": ...}. "back" with k >= 1 and windows with k >= 2 (a
    window of 1, or 0 steps back, is the catalogue's ``no-carry``)."""

    def fits(right: dict[str, torch.Tensor]) -> bool:
        return all(
            _rel(g, right[n]) <= tolerances(n, precisions.get(n, "float64"))
            for n, g in grads.items()
        )

    T = problem.T
    for k, right in enumerate(_back(problem)):
        if k >= 1 and fits(right):
            return {"kind": "back", "k": k}
    for k in range(2, min(T - 1, SEARCH_WINDOWS) + 1):
        if fits(_windows(problem, k)):
            return {"kind": "windows", "k": k}
    return None


def truncation_words(kind: str, k: int) -> str:
    if kind == "back":
        return (
            f"truncated BPTT with each output's gradient flowing back at most {k} "
            f"step{'s' if k != 1 else ''} (a tutorial's bptt_truncate = {k})"
        )
    return f"truncated BPTT in windows of {k} steps (echo-rnn's --truncate {k})"
