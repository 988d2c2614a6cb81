"""Naming the mistake: a gradient that disagrees is matched against every variation of the
catalogue (:mod:`echo_rnn.mistakes`), alone and times a constant, and the records that
reproduce it to :data:`MATCH_REL` are named (:func:`diagnose`); where nothing does, dJ/dh_t
says at which step the learner's gradient departs (:func:`departure`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from echo_rnn.compare import autograd_grads, autograd_hidden_grads
from echo_rnn.mistakes import (
    CATALOGUE,
    CONSTANTS,
    PAIRS,
    VARIATIONS,
    Variation,
    named_factors,
    variation_grads,
)
from echo_rnn.problem import Problem

# A variation reproduces a gradient when, times the best constant, it is within this of it
# relative to the gradient's largest entry. A float64 backward pass in any summation order
# lands within rounding error of the variation it makes (~1e-16 of the scale, as a correct
# function's rows show), while two different variations stay DEFAULT_SEPARATION apart on
# the default problem: 1e-8 sits far from both.
MATCH_REL = 1e-8

# The default problem keeps the notebook's weights, N(0, 0.1^2): a learner checks the problem
# they wrote their code for. Small weights keep h_t small and tanh' = 1 - h_t^2 near 1, so
# the tanh' mistakes sit closest to each other and to the right gradient; of seeds 0-19,
# DEFAULT_SEED (7, echo_rnn/problem.py) keeps them furthest apart: every two variations of
# the catalogue differ on every gradient by DEFAULT_SEPARATION of its scale at least, after
# the best constant factor (`separation`; the closest pair is dJ/dh_t with tanh' at the
# previous step on the whole of it and on the step's own loss term only, 1.28e-3 apart),
# over 1e5 times MATCH_REL. How both are checked when a mistake is added:
# echo_rnn/mistakes.py's docstring.
DEFAULT_SEPARATION = 1.2e-3


@dataclass
class Diagnosis:
    """Why one gradient disagrees: the catalogue's codes that reproduce it (empty when none
    does), the constant factor when a record that reports one is among them (``scale``; its
    name when it is T, B, 2, their inverses or products), and a sentence and a fix per
    cause, each the record's (:mod:`echo_rnn.mistakes`)."""

    codes: list[str]
    says: list[str]
    fixes: list[str]
    factor: float | None = None
    factor_name: str | None = None
    # the codes of each variation that reproduces it: one, or two made together, which
    # stand or fall together (:func:`_prefer_shared`)
    ways: list[tuple[str, ...]] = field(default_factory=list)
    # whether a variation reproduces it as it is (times 1), not only times a constant or as
    # one number of another value: two mistakes made together that do are the better account
    exact: bool = False


def _best_constant(got: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """(c, r): the least-squares constant c for got ~ c * candidate (candidate not zero),
    and what is left, max |got - c * candidate| relative to max |got|."""
    c = (got * candidate).sum().item() / (candidate * candidate).sum().item()
    r = (got - c * candidate).abs().max().item() / max(got.abs().max().item(), 1e-300)
    return c, r


def _fit(got: torch.Tensor, candidate: torch.Tensor, rel: float = MATCH_REL) -> float | None:
    """The constant c with got = c * candidate to ``rel``, or None."""
    if not candidate.any() or not torch.isfinite(got).all():
        return None
    c, r = _best_constant(got, candidate)
    return None if c == 0.0 or r > rel else c


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = MATCH_REL) -> bool:
    return (a - b).abs().max().item() <= rel * max(b.abs().max().item(), 1e-300)


def _factor_name(c: float, factors: dict[float, str], rel: float = MATCH_REL) -> str | None:
    return next((n for v, n in factors.items() if abs(abs(c) / v - 1) <= rel), None)


def _flat(t: torch.Tensor) -> bool:
    """Every entry one value, not zero, in a tensor of more than one."""
    return t.numel() > 1 and bool(t.any()) and bool((t == t.flatten()[0]).all())


def diagnose(
    name: str,
    got: torch.Tensor,
    right: torch.Tensor,
    varied: list[tuple[Variation, dict[str, torch.Tensor]]],
    B: int,
    T: int,
    rel: float = MATCH_REL,
) -> Diagnosis:
    """Match gradient ``name`` (``got``; autograd's is ``right``) against every variation,
    alone and times a constant, to ``rel`` of its scale (MATCH_REL, or the row's tolerance
    when rounding allows more), and name the records of the catalogue that reproduce it:
    those whose variations fit, those whose ``constant`` the fitted constants show, and,
    when ``got`` is one value where a record makes one number (``one_number``), that record
    whatever the value. Every sentence is the record's."""
    match = max(rel, MATCH_REL)
    factors = named_factors(B, T)
    matches: list[tuple[Variation | None, float | None]] = []
    if got.abs().max().item() == 0:  # zero is every candidate times 0: only a mistake
        matches = [(v, 1.0) for v, g in varied if g[name].abs().max().item() == 0]  # giving 0
    else:
        for v, candidate in [(None, right)] + [(v, g[name]) for v, g in varied]:
            if v is not None and _close(candidate, right, match):
                continue  # this mistake does not touch this gradient
            c = _fit(got, candidate, match)
            if c is None or (v is None and abs(c - 1) <= match):
                continue
            if (
                _flat(candidate)
                and abs(abs(c) - 1) > match
                and _factor_name(c, factors, match) is None
            ):
                continue  # any constant fits a constant: only a named factor says something
            matches.append((v, c))
    shape = tuple(got.shape)
    one_number = [
        m for m in CATALOGUE.values() if m.one_number and m.one_number(name, shape) and _flat(got)
    ]
    unfitted = []
    if one_number:  # one value where the record makes one number: that record, whatever it is
        codes = {m.code for m in one_number}
        kept = [(v, c) for v, c in matches if v is not None and codes & set(v.codes)]
        unfitted = [m for m in one_number if not any(m.code in v.codes for v, _ in kept)]
        matches = kept + [(m.variations[0], None) for m in unfitted]
    d = Diagnosis(codes=[], says=[], fixes=[])
    d.exact = any(v is not None and c is not None and abs(c - 1) <= match for v, c in matches)
    for v, _ in matches:
        if v is None:
            continue
        d.ways.append(tuple(v.codes))
        for code, (says, fix) in zip(v.codes, v.sentences(name)):
            if code not in d.codes:
                d.codes.append(code)
                d.says.append(
                    says + (CATALOGUE[code].unfitted if CATALOGUE[code] in unfitted else "")
                )
                d.fixes.append(fix)
    found = [c for _, c in matches if c is not None]
    for m in CONSTANTS:  # the mistakes seen in the constants, in the catalogue's order
        factor = m.constant.factor(found, match)
        if factor is None:
            continue
        d.codes.append(m.code)
        named = _factor_name(factor, factors, match)
        d.says.append(
            m.what + (f"; {m.constant.detail(factor, named)}" if m.constant.detail else "")
        )
        d.fixes.append(m.fix)
        if m.constant.reported:
            d.factor, d.factor_name = factor, named
    if not d.codes and got.abs().max().item() == 0:
        d.says.append("it is zero everywhere: is it computed, and returned, at all?")
    return d


def _autograd(problem: Problem) -> dict[str, torch.Tensor]:
    """Autograd's answer on ``problem``: every gradient, and dJ/dh_t as "dh"."""

    def make() -> dict[str, torch.Tensor]:
        right = autograd_grads(problem.model, problem.x, problem.y, problem.h0_state)
        right["dh"] = autograd_hidden_grads(problem.model, problem.x, problem.y, problem.h0_state)
        return right

    return problem.cached("autograd", make)


def _variations(
    problem: Problem, variations: tuple[Variation, ...] = VARIATIONS
) -> list[tuple[Variation, dict[str, torch.Tensor]]]:
    """What every variation of the catalogue (or of ``variations``: PAIRS, two mistakes
    made together) gives on ``problem``."""
    p = problem.params()

    def make() -> list[tuple[Variation, dict[str, torch.Tensor]]]:
        return [
            (
                v,
                variation_grads(
                    v, problem.x, problem.y, p["U"], p["V"], p["w"], p.get("b"), problem.h0_state
                ),
            )
            for v in variations
        ]

    known = {id(VARIATIONS): "one", id(PAIRS): "pairs"}.get(id(variations))
    return problem.cached(f"variations:{known}", make) if known else make()


def _pairs_for(problem: Problem, name: str) -> list[tuple[Variation, dict[str, torch.Tensor]]]:
    """The pairs of mistakes made together (PAIRS) whose two mistakes each change gradient
    ``name``: where one of them leaves it alone, the pair gives what the other gives alone,
    which the single variations already try."""

    def make() -> list[tuple[Variation, dict[str, torch.Tensor]]]:
        right = _autograd(problem)
        touches = {
            id(v): not _close(g[name], right[name]) for v, g in _variations(problem) if name in g
        }
        return [
            (v, g)
            for v, g in _variations(problem, PAIRS)
            if all(touches.get(id(p), True) for p in v.parts)
        ]

    return problem.cached(f"pairs:{name}", make)


def separation(problem: Problem) -> tuple[float, str]:
    """How far apart the catalogue's variations are on ``problem``: the smallest relative
    residual, max |a - c b| / max |a| with the best constant c, over every gradient and every
    two candidates a, b of different mistakes (autograd's own gradient among them, as the
    candidate of ``sign`` and ``scale``), with where it occurs. A match is only unambiguous
    when this is far above MATCH_REL."""
    right, varied = _autograd(problem), _variations(problem)
    worst, where = float("inf"), ""
    for name in right:
        cands = [("right", right[name])] + [
            (v.code, g[name]) for v, g in varied if not _close(g[name], right[name])
        ]
        cands = [(code, c) for code, c in cands if c.abs().max() > 0]  # zero matches nothing
        for i, (code_a, a) in enumerate(cands):
            for code_b, b in cands[i + 1 :]:
                if code_a == code_b or (_close(a, b) and _close(b, a)):
                    continue  # the same gradient from two mistakes: told by the others
                for x, y in ((a, b), (b, a)):
                    r = _best_constant(x, y)[1]
                    if r < worst:
                        worst, where = r, f"{name}: {code_a} vs {code_b}"
    return worst, where


def departure(
    got: torch.Tensor, right: torch.Tensor, rel: float = MATCH_REL
) -> dict[str, Any] | None:
    """The first step, counting back from T, where the learner's dJ/dh_t (B, T, H) departs
    from autograd's by more than ``rel`` of its scale (the dh row's tolerance, so that the
    row and the steps never contradict each other), and both values there (the sequence
    where it departs most); None when it agrees at every step."""
    scale = right.abs().max().item()
    diff = (got - right).abs()
    T = right.shape[1]
    for t in range(T, 0, -1):
        step = diff[:, t - 1]
        if not (step <= rel * scale).all():
            b = int(step.amax(dim=1).argmax().item())
            out = {
                "step": t,
                "sequence": b,
                "yours": got[b, t - 1].tolist(),
                "autograd": right[b, t - 1].tolist(),
                "factor": None,
            }
            if right[:, t - 1].any():  # yours a constant times autograd's there?
                c = _fit(got[:, t - 1], right[:, t - 1], max(rel, MATCH_REL))
                out["factor"] = c
            return out
    return None


def _always_changed(problem: Problem) -> Callable[[str, str], set[str]]:
    """``changes(other, code)``: the gradients mistake ``code`` of the catalogue (made by
    variations) shows in on ``problem``, whichever way it is made: with ``other`` "", those
    every way of making it changes; else those it changes beside mistake ``other``, in every
    combination of their ways (beside another mistake it can change less: with no tanh' at
    all, a cache read one step off leaves dJ/dh_t alone). Each computed when first asked."""
    right = _autograd(problem)

    def changes(other: str, code: str) -> set[str]:
        def make() -> set[str]:
            out: set[str] | None = None
            if not other:
                varied = [(g, right) for v, g in _variations(problem) if v.code == code]
            else:
                singles = {id(v): g for v, g in _variations(problem)}
                made = [
                    v for v in PAIRS if sorted(p.code for p in v.parts) == sorted((other, code))
                ]
                varied = [
                    (g, singles[id(next(p for p in v.parts if p.code == other))])
                    for v, g in _variations(problem, tuple(made))
                ]
            for g, alone in varied:
                changed = {n for n in g if n in alone and not _close(g[n], alone[n])}
                out = changed if out is None else out & changed
            return out or set()

        return problem.cached(f"changes:{other}:{code}", make)

    return changes


def _refuted(
    code: str,
    name: str,
    diagnoses: dict[str, Diagnosis],
    changes: Callable[[str, str], set[str]] | None,
) -> bool:
    """Whether another gradient than ``name``, explained without ``code``, shows the mistake
    is not made: made beside each way that explains that gradient, it would change it
    (``changes``, :func:`_always_changed`)."""
    if changes is None:
        return False

    def shows(n: str, way: tuple[str, ...]) -> bool:
        # beside two mistakes, what it changes beside each of them
        return bool(way) and all(n in changes(c, code) for c in way)

    return any(
        n != name
        and o.ways
        and code not in o.codes
        and n in changes("", code)
        and all(shows(n, w) for w in o.ways)
        for n, o in diagnoses.items()
    )


def _prefer_shared(
    diagnoses: dict[str, Diagnosis],
    always: Callable[[str, str], set[str]] | None = None,
) -> None:
    """Some mistakes give one gradient the same value (tanh' at the previous step, in the
    whole step or in the carried term only, give the same dJ/dh_t): where a gradient is
    explained in several ways, drop a way with a mistake that another gradient, explained
    without it, shows it is not made (every way of making it changes that gradient,
    ``always``: :func:`_always_changed`), then keep those whose codes the other gradients
    name too (on average over a way's codes: two mistakes made together stand or fall
    together, so that a gradient two mistakes made keeps both, and one a shared mistake
    explains alone does not gain a second)."""
    constant = {m.code for m in CONSTANTS}  # told beside any other: never dropped
    for name, d in diagnoses.items():
        ways = list(dict.fromkeys(tuple(c for c in w if c not in constant) for w in d.ways))
        ways = [w for w in ways if w]
        if len(ways) < 2:
            continue

        standing = [
            w for w in ways if not any(_refuted(c, name, diagnoses, always) for c in w)
        ] or ways

        def named_by(code: str, name: str = name) -> int:
            return sum(code in o.codes for n, o in diagnoses.items() if n != name)

        score = {w: sum(named_by(c) for c in w) / len(w) for w in standing}
        most = max(score.values())
        keep = {c for w in standing if score[w] == most for c in w} if most else None
        if keep is None:
            keep = {c for w in standing for c in w}
        dropped = {c for w in ways for c in w} - keep
        if dropped:
            kept = [i for i, c in enumerate(d.codes) if c not in dropped]
            says_fixes = [(d.says[i], d.fixes[i]) for i in range(len(d.says))]
            d.codes = [d.codes[i] for i in kept]
            d.says = [says_fixes[i][0] for i in kept if i < len(says_fixes)]
            d.fixes = [says_fixes[i][1] for i in kept if i < len(says_fixes)]
            d.ways = [w for w in d.ways if not set(w) & dropped]


def hidden_behind(
    named: list[str], got: dict[str, torch.Tensor], problem: Problem
) -> dict[str, str]:
    """The mistakes of the catalogue a named one may hide, ``{code: the named code}``: made
    beside a named mistake (by a way of making it that reproduces ``got`` wherever it
    changes a gradient), each changes none of the gradients ``got`` holds, though alone it
    changes one of them. No gradient can tell such a pair from the named mistake alone (a
    cache read one step off already reads tanh' and x_t from the step before, so tanh' or
    x_t taken one step back beside it change nothing), so the report says they may be there."""
    right, singles = _autograd(problem), {id(v): g for v, g in _variations(problem)}
    names = [n for n in got if n in right]

    def reproduces(v: Variation) -> bool:
        g = singles[id(v)]
        return all(_close(got[n], g[n]) for n in names if not _close(g[n], right[n]))

    out: dict[str, str] = {}
    for pair, g in _variations(problem, PAIRS):
        for a, b in (pair.parts, pair.parts[::-1]):
            if a.code not in named or b.code in named or b.code in out:
                continue
            alone, beside = singles[id(b)], singles[id(a)]
            if (
                any(not _close(alone[n], right[n]) for n in names)
                and all(_close(g[n], beside[n]) for n in names)
                and reproduces(a)
            ):
                out[b.code] = a.code
    return out
