"""The check, end to end: a learner's function called (in this process, or in a child
process of its own for a file), what it returned checked against the contract, each gradient
judged, the ones that disagree diagnosed, and the report made (:func:`compare_returned`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from echo_rnn.errors import ConfigError
from echo_rnn.learner.contract import (
    ARRAYS,
    ORDER,
    BadReturn,
    LearnerCodeError,
    Returned,
    _layout_of,
    _NotAMapping,
    _parse_spec,
    check_return,
    make_learner_problem,
)
from echo_rnn.learner.diagnosis import (
    Diagnosis,
    _always_changed,
    _autograd,
    _pairs_for,
    _prefer_shared,
    _refuted,
    _variations,
    departure,
    diagnose,
)
from echo_rnn.learner.report import LearnerReport, _precision_notes
from echo_rnn.learner.tolerance import Tolerances, _precision, judge
from echo_rnn.learner.truncation import _truncated, find_truncation, truncation_words
from echo_rnn.mistakes import CATALOGUE, CONSTANTS, MISORIENTED, VARIATIONS
from echo_rnn.problem import Problem
from echo_rnn.sandbox import DEFAULT_TIMEOUT, run_in_child


def compare_returned(
    returned: Returned, problem: Problem, where: str, arrays: str = "numpy"
) -> LearnerReport:
    """The report on what a learner's function returned, already checked
    (:func:`check_return`): each gradient judged (:func:`judge`), the ones that disagree
    diagnosed, and where dJ/dh_t departs. With the problem's ``truncate``, against truncated
    BPTT (its ``truncation``: "windows" or "back", :mod:`echo_rnn.truncated`); without it,
    when full BPTT disagrees but a truncation agrees, the report says which one the code
    computes."""
    layout = returned.layout
    truncate, truncation = problem.truncate, problem.truncation
    full = _autograd(problem)
    tolerances = Tolerances(problem, full)  # rounding is measured on full BPTT
    right = full if truncate is None else _truncated(problem, truncate, truncation)
    names = [k for k in ORDER if k in returned.grads]
    B, T, I, H = problem.B, problem.T, problem.I, problem.H
    shapes = {k: layout.shape(k, B, T, I, H, problem.single) for k in names}  # the learner's
    judged = {
        k: judge(k, returned.grads[k], right[k], returned.dtypes.get(k, "float64"), tolerances)
        for k in names
    }
    rows = [
        replace(
            judged[k].row,
            shape=shapes[k],
            agrees=judged[k].row.agrees and k not in returned.misoriented,
        )
        for k in names
    ]
    diagnoses: dict[str, Diagnosis] = {}
    second: dict[str, tuple[Any, float]] = {}  # name -> (gradient, tightest tolerance)
    inexact: dict[str, tuple[Any, float]] = {}  # one mistake times a constant fits

    def candidates(which: str, name: str) -> list:  # computed once per problem, when needed
        return _variations(problem, VARIATIONS) if which == "one" else _pairs_for(problem, name)

    found = None
    if any(not r.agrees for r in rows) and not returned.misoriented:
        found = find_truncation(
            returned.grads,
            problem,
            tolerances,
            {k: _precision(returned.dtypes.get(k, "float64")) for k in names},
        )
    for r in rows:
        if r.agrees:
            continue
        d = Diagnosis([], [], [])
        if r.name in returned.misoriented:
            m = MISORIENTED  # read from a shape that gave it away
            says, fix = m.in_layout(layout, r.name, returned.misoriented[r.name], shapes[r.name])
            d = Diagnosis([m.code], [says], [fix])
            if judged[r.name].row.agrees:
                diagnoses[r.name] = d
                continue
        if found is not None:
            d.says.append(
                f"your code computes {truncation_words(found['kind'], found['k'])}, not full BPTT"
            )
            diagnoses[r.name] = d
            continue
        if truncate is not None:  # the catalogue's variations are of full BPTT
            diagnoses[r.name] = d
            continue
        got = returned.grads[r.name]
        rels = [judged[r.name].tolerance]
        if _precision(returned.dtypes.get(r.name, "float64")) == "float64":
            # float64's rounding first (a row that disagrees was judged last at float32's):
            # two mistakes whose gradients differ from one's by less than float32's
            # rounding are told apart there; then float32's, for float64 arrays from code
            # that keeps its states in float32
            rels = [tolerances(r.name, "float64"), tolerances(r.name, "float32")]
        more = Diagnosis([], [], [])
        # one mistake, else two made together (not for zeros: two mistakes can cancel), at
        # the tightest tolerance first: two mistakes reproducing it to float64's rounding
        # are a better account than one to float32's
        for rel in rels:
            for which in ("one", "two") if bool(got.any()) else ("one",):
                more = diagnose(
                    r.name,
                    got,
                    right[r.name],
                    candidates(which, r.name),
                    problem.B,
                    problem.T,
                    rel=rel,
                )
                if more.codes:
                    break
            if more.codes:
                break
        if more.codes and not more.exact and got.any():
            inexact[r.name] = (got, rels[0])
        if not d.codes:  # looked at again with what the others name (_second_look)
            second[r.name] = (got, rels[0])
        _in_layout(more, layout, r.name, shapes[r.name])
        if d.codes:  # misoriented, and more: both told
            more = Diagnosis(
                d.codes + more.codes,
                d.says + more.says,
                d.fixes + more.fixes,
                more.factor,
                more.factor_name,
                more.ways,
            )
        diagnoses[r.name] = more
    for name, pair in _two_as_they_are(diagnoses, inexact, right, problem).items():
        diagnoses[name] = _in_layout(pair, layout, name, shapes[name])
    always = _always_changed(problem)
    for name, (got, rel) in second.items():
        better = _second_look(name, got, right[name], diagnoses, always, problem, rel)
        if better is not None:
            diagnoses[name] = _in_layout(better, layout, name, shapes[name])
    _prefer_shared(diagnoses, always)
    unexplained = any(not r.agrees and not diagnoses[r.name].codes for r in rows) and found is None
    dep = (
        departure(returned.grads["dh"], right["dh"], judged["dh"].tolerance)
        if unexplained and "dh" in returned.grads
        else None
    )
    notes = returned.notes + _precision_notes(judged, returned.dtypes, tolerances)
    return LearnerReport(
        where,
        rows,
        diagnoses,
        notes,
        dep,
        problem,
        right["dh"],
        returned.grads.get("dh"),
        arrays=arrays,
        agrees_to={k: j.agrees_to for k, j in judged.items()},
        tolerances={k: j.tolerance for k, j in judged.items()},
        layout=layout,
        truncation_found=found,
    )


def _two_as_they_are(
    diagnoses: dict[str, Diagnosis],
    inexact: dict[str, tuple[Any, float]],
    right: dict[str, Any],
    problem: Problem,
) -> dict[str, Diagnosis]:
    """The gradients one mistake reproduces only times a constant (or as one number of
    another value), ``inexact`` (name -> (gradient, tolerance)), that two mistakes made
    together reproduce as they are, with those two: last-step-only beside last-step-twice
    doubles dU, dV and dJ/dh_t but not dw, which one mistake times 2 cannot do. Not where the
    constant is the better account: every other gradient shows it (a sign or a scale of the
    error shows in every gradient), or one that two mistakes do not explain does."""
    constants = {m.code for m in CONSTANTS}
    exact: dict[str, Diagnosis] = {}
    for name, (got, rel) in inexact.items():
        d = diagnoses[name]
        shown = set(d.codes) & constants
        others = [o for n, o in diagnoses.items() if n != name and o.codes]
        if shown and all(shown <= set(o.codes) and _same_factor(o, d) for o in others):
            continue
        pairs = _pairs_for(problem, name)
        two = diagnose(name, got, right[name], pairs, problem.B, problem.T, rel=rel)
        if two.codes and two.exact:
            exact[name] = two
    return {
        name: pair
        for name, pair in exact.items()
        if not any(
            n not in exact and c in o.codes and _same_factor(o, diagnoses[name])
            for c in set(diagnoses[name].codes) & constants
            for n, o in diagnoses.items()
        )
    }


def _same_factor(a: Diagnosis, b: Diagnosis) -> bool:
    """Whether two gradients show one constant factor (or none), to rounding."""
    if a.factor is None or b.factor is None:
        return a.factor is None and b.factor is None
    return abs(a.factor / b.factor - 1) <= 1e-6


def _in_layout(d: Diagnosis, layout: Any, name: str, shape: tuple[int, ...]) -> Diagnosis:
    """``d`` with a record that words itself in the learner's layout so worded."""
    for i, code in enumerate(d.codes):
        if CATALOGUE[code].in_layout is not None:
            d.says[i], d.fixes[i] = CATALOGUE[code].in_layout(layout, name, None, shape)
    return d


def _second_look(
    name: str,
    got: Any,
    right: Any,
    diagnoses: dict[str, Diagnosis],
    always: Callable[[str, str], set[str]],
    problem: Problem,
    rel: float,
) -> Diagnosis | None:
    """Gradient ``name`` diagnosed again with what the other gradients name, or None: one
    mistake that reproduces it, which another gradient shows is not made (:func:`_refuted`),
    gives way to two made together that reproduce it as well; a gradient that is zero, which
    no one mistake makes, is the pair of mistakes the others name when that pair makes it
    zero (two mistakes can cancel, so zero names only a pair one of whose mistakes the
    others name)."""
    d = diagnoses[name]
    if not got.any():
        if d.codes:
            return None
        named = {c for n, o in diagnoses.items() if n != name for c in o.codes}
        pairs = [(v, g) for v, g in _pairs_for(problem, name) if set(v.codes) & named]
    elif not d.ways or not all(
        any(_refuted(c, name, diagnoses, always) for c in w) for w in d.ways
    ):
        return None
    else:
        pairs = _pairs_for(problem, name)
    two = diagnose(name, got, right, pairs, problem.B, problem.T, rel=rel)
    standing = [w for w in two.ways if not any(_refuted(c, name, diagnoses, always) for c in w)]
    return two if two.codes and standing else None


def report_for(
    fn: Callable[..., Any], problem: Problem, where: str = "", arrays: str = "numpy"
) -> LearnerReport:
    """Call ``fn`` on ``problem``, in this process, and compare what it returns with
    autograd's gradients (truncated as the problem says, see :func:`compare_returned`).

    Raises:
        LearnerCodeError: ``fn`` raised (their exception, with their traceback).
        BadReturn: what it returned breaks the contract.
    """
    if arrays not in ARRAYS:
        raise ConfigError("arrays", f"must be one of {', '.join(ARRAYS)}, got {arrays!r}")
    try:
        out = fn(**problem.kwargs(arrays))
    except Exception as exc:
        raise LearnerCodeError(where or getattr(fn, "__name__", "the function"), exc) from exc
    return compare_returned(
        check_return(out, problem, layout=_layout_of(fn)),
        problem,
        where or getattr(fn, "__name__", "function"),
        arrays,
    )


def check_file(
    spec: str,
    problem: Problem,
    arrays: str = "numpy",
    timeout: float = DEFAULT_TIMEOUT,
    memory: int | None = None,
) -> LearnerReport:
    """``echo-rnn gradcheck --grads PATH.py:FUNCTION``: the function run in a child process
    of its own (:mod:`echo_rnn.sandbox`), at most ``timeout`` seconds, and what it returned
    compared as :func:`report_for` does.

    Raises:
        ConfigError("grads", ...): a bad spec, no such file or no such function.
        LearnerFailed: their code raised, exited, crashed or ran out of time (one line).
        BadReturn: what it returned breaks the contract.
    """
    if arrays not in ARRAYS:
        raise ConfigError("arrays", f"must be one of {', '.join(ARRAYS)}, got {arrays!r}")
    path_text, name = _parse_spec(spec)
    got = run_in_child(
        path_text,
        name,
        problem.kwargs("numpy"),
        problem.expected_shapes(),
        arrays=arrays,
        timeout=timeout,
        memory=memory,
    )
    where = f"{Path(path_text).name}:{name}"
    out = got.values if got.values is not None else _NotAMapping(got.not_mapping or "?")
    try:
        returned = check_return(out, problem, dtypes=got.dtypes, layout=got.layout)
    except BadReturn as exc:
        exc.printed = got.output
        raise
    report = compare_returned(returned, problem, where, arrays)
    report.printed = got.output
    return report


def check_grads(fn: Callable[..., Any], *, arrays: str = "numpy", **settings: Any) -> LearnerReport:
    """Check a hand-written BPTT function against autograd, for notebooks: what
    ``echo-rnn gradcheck --grads`` prints, as a :class:`LearnerReport` (``print`` it, or read
    ``.agrees``, ``.rows``, ``.diagnoses``, ``.to_dict()``). The function runs in this
    process (the command line runs a file's function in a child process instead).

    Args:
        fn: called as ``fn(U=..., V=..., w=..., x=..., y=...)`` (see the module docstring).
        arrays: ``"numpy"`` (float64 arrays) or ``"torch"`` (float64 tensors).
        **settings: the fields of :class:`~echo_rnn.problem.Problem`
            (``hidden_size``, ``batch_size``, ``bias``, ``seed``, ...; ``truncate=k`` checks
            against truncated BPTT, in the sense of ``truncation``: "windows", echo-rnn's
            windows of k steps, or "back", each output's gradient flowing back at most k
            steps, a tutorial's bptt_truncate); the notebook's problem by default.

    Raises:
        ConfigError: a setting that is unknown or invalid.
        BadReturn: what ``fn`` returned breaks the contract (each problem on a line).
        LearnerCodeError: ``fn`` raised; ``.error`` is its exception.
    """
    return report_for(fn, make_learner_problem(Problem.of(settings)), arrays=arrays)
