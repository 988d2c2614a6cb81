r"""Checking a learner's own BPTT: ``echo-rnn gradcheck --grads PATH.py:FUNCTION``, and
:func:`check_grads` for notebooks.

The contract. The learner's function is called with keyword arguments ``U`` (H, H), ``V``
(H, I), ``w`` (H,), ``x``, ``y``, and ``b`` (H,) / ``h0`` only when the problem has them,
as float64 numpy arrays (or float64 tensors with ``arrays="torch"``). ``x`` and ``y`` are
(T,) for a single sequence with one input (B = I = 1), else (B, T, I) and (B, T); ``h0`` is
(H,) for a single sequence, else (B, H). It returns a dict of the gradients of

    J = mean over the batch of sum_t (yhat_t - y_t)^2 / (2T)

keyed like the parameters (``U``, ``V``, ``w``, and ``b`` with a bias); it may add ``h0``
(dJ/dh_0) and ``dh``, dJ/dh_t per step, (T, H) or (B, T, H).

What comes back is checked before it is compared (:func:`check_return`), then compared with
autograd's gradients row by row (:func:`echo_rnn.compare.compare_grads`); a row that
disagrees is matched against the catalogue of classic mistakes (:mod:`echo_rnn.mistakes`),
each alone and times a constant, and the ones that reproduce it to :data:`MATCH_REL` are
named (:func:`diagnose`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echo_rnn import truncated
from echo_rnn.compare import (
    GradRow,
    autograd_grads,
    autograd_hidden_grads,
    make_problem,
    manual_grads,
)
from echo_rnn.errors import ConfigError
from echo_rnn.layouts import KEYS, Layout
from echo_rnn.mistakes import (
    CATALOGUE,
    CONSTANTS,
    MISORIENTED,
    PAIRS,
    VARIATIONS,
    Variation,
    accepts_one_number,
    named_factors,
    variation_grads,
)
from echo_rnn.model import EchoRNN
from echo_rnn.problem import DEFAULT_SEED, GradcheckProblem  # noqa: F401 (a learner's)
from echo_rnn.sandbox import DEFAULT_TIMEOUT, Opaque, no_function, run_in_child, to_array

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
# the best constant factor (`separation`; the closest pair is the right dU and tanh' at the
# previous step in the carried term only), over 1e5 times MATCH_REL. How both are checked
# when a mistake is added: echo_rnn/mistakes.py's docstring.
DEFAULT_SEPARATION = 1.5e-3

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

ORDER = ("U", "V", "w", "b", "h0", "dh")
ARRAYS = ("numpy", "torch")


class BadReturn(ValueError):
    """What the learner's function returned cannot be compared: one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.printed = ""  # what the learner's code printed (gradcheck --grads only)


class LearnerCodeError(Exception):
    """The learner's file or function raised: ``error`` is their exception, with their
    traceback."""

    def __init__(self, where: str, error: BaseException) -> None:
        super().__init__(f"{where} raised {type(error).__name__}: {error}")
        self.where, self.error = where, error


# --- the problem and the call ---------------------------------------------------------


@dataclass
class Problem:
    """The seeded problem a learner's function is called on, as float64 CPU tensors: x
    (B, T, I), y (B, T), U, V, w, b (or None), h0 (B, H) or None; built from ``spec``
    (:func:`make_learner_problem`)."""

    model: EchoRNN  # holds U, V, w, b
    x: torch.Tensor
    y: torch.Tensor
    h0: torch.Tensor | None
    spec: GradcheckProblem  # the settings it was built from, and the check's truncation

    @property
    def B(self) -> int:
        return self.x.shape[0]

    @property
    def T(self) -> int:
        return self.x.shape[1]

    @property
    def I(self) -> int:  # noqa: E743 - the shape vocabulary's letter
        return self.x.shape[2]

    @property
    def H(self) -> int:
        return self.model.hidden_size

    @property
    def single(self) -> bool:
        """One sequence with one input: x and y are (T,), h0 (H,) and dh (T, H)."""
        return self.B == 1 and self.I == 1

    def params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every key the function may return, in the learner's layout."""
        B, T, H = self.B, self.T, self.H
        shapes = {n: tuple(p.shape) for n, p in self.params().items()}
        shapes["h0"] = (H,) if self.single else (B, H)
        shapes["dh"] = (T, H) if self.single else (B, T, H)
        return shapes

    def kwargs(self, arrays: str = "numpy") -> dict[str, Any]:
        """The function's keyword arguments: fresh copies, so that what it does to them
        cannot change the problem."""
        given = dict(self.params())
        given["x"] = self.x.reshape(self.T) if self.single else self.x
        given["y"] = self.y.reshape(self.T) if self.single else self.y
        if self.h0 is not None:
            given["h0"] = self.h0.reshape(self.H) if self.single else self.h0
        if arrays == "torch":
            return {k: v.clone() for k, v in given.items()}
        return {k: v.numpy().copy() for k, v in given.items()}


def make_learner_problem(spec: GradcheckProblem | None = None, **settings: Any) -> Problem:
    """The problem of ``spec`` (or of ``GradcheckProblem(**settings)``, its fields as
    keywords), as float64 CPU tensors; the notebook's by default: B=1, T=50, H=6, I=1, k=2,
    no bias, h_0 = 0, weights from N(0, 0.1^2) drawn from seed DEFAULT_SEED; x holds fair
    coin flips and y_t = x_{t-k}."""
    spec = spec if spec is not None else GradcheckProblem.of(settings)
    model, x, y, h0 = make_problem(spec, dtype=torch.float64, device=torch.device("cpu"))
    x3 = x if x.dim() == 3 else x.unsqueeze(-1)  # (B, T) -> (B, T, 1)
    return Problem(model=model, x=x3, y=y, h0=h0, spec=spec)


def _parse_spec(spec: str) -> tuple[str, str]:
    """(the file as written, the function's name) of ``PATH.py:FUNCTION``, the file checked
    to exist.

    Raises:
        ConfigError("grads", ...): no ``:``, no such file, or a directory.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise ConfigError("grads", f"must be PATH.py:FUNCTION (a file and the name of the "
                                   f"function in it), got {spec!r}")
    path = Path(path_text)
    try:
        if not path.is_file():
            what = ("is a directory" if path.is_dir() else
                    "not a regular file" if path.exists() else "no such file")
            raise ConfigError("grads", f"{what}: {path_text}")
        # here, not in the child that imports it: a file we cannot read is a wrong argument,
        # not their code raising PermissionError
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as exc:
        raise ConfigError("grads", f"cannot read {path_text}: {exc.strerror or exc}") from None
    return path_text, name


def load_function(spec: str) -> tuple[Callable[..., Any], str]:
    """The function ``PATH.py:FUNCTION`` names, and a short name for it ("grads.py:bptt").

    Raises:
        ConfigError("grads", ...): no ``:``, no such file, or no such function.
        LearnerCodeError: the file raised while it was loaded (their traceback).
    """
    path_text, name = _parse_spec(spec)
    path = Path(path_text)
    where = f"{path.name}:{name}"
    module_name = f"_echo_rnn_learner_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError("grads", f"cannot load {path_text} as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(module_spec)
    # the file may import its neighbours, as it would when run as a script; the search path
    # is put back afterwards, and the module is not left in sys.modules
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # their code: their traceback
        raise LearnerCodeError(path.name, exc) from exc
    finally:
        sys.modules.pop(module_name, None)
        if str(path.resolve().parent) in sys.path:
            sys.path.remove(str(path.resolve().parent))
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError("grads", no_function(path_text, module, name, module_name))
    return fn, where


# --- what came back -------------------------------------------------------------------


@dataclass
class Returned:
    """The learner's gradients, checked: float64 CPU tensors in this package's layout
    (h0 (B, H), dh (B, T, H); one number where U or V belongs spread over the matrix), and
    what was accepted with a note."""

    grads: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)
    dtypes: dict[str, str] = field(default_factory=dict)  # what each array came back as
    layout: Layout = field(default_factory=lambda: Layout())
    misoriented: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the shape it had


def check_return(out: Any, problem: Problem, dtypes: dict[str, str] | None = None,
                 layout: Layout | None = None) -> Returned:
    """Check the function's return against the contract and put it in this package's
    layout. ``dtypes`` is given when ``out`` was already brought back as float64 arrays
    (or :class:`~echo_rnn.sandbox.Opaque` descriptions) by the sandbox: the dtype each array
    had; else every value is read here (:func:`echo_rnn.sandbox.to_array`). ``layout``: the
    learner's own (:mod:`echo_rnn.layouts`), whose names, shapes and orientation the
    gradients came back in; None for the contract's.

    A shape that differs from the expected one only by dimensions of size 1 is accepted
    with a note; one number where the matrix U (or a square V) belongs is accepted too (its
    diagnosis is the catalogue's mistake that makes one number there,
    :func:`echo_rnn.mistakes.accepts_one_number`). A parameter's gradient in the transposed
    shape ((1, H) where (H, 1) belongs) is read transposed and marked ``misoriented``: its
    row disagrees, named ``transposed`` with the layout's fix.

    Raises:
        BadReturn: every missing key, extra key, wrong type and wrong shape, each naming the
            key, what was expected and what came back.
    """
    layout = layout or Layout()
    B, T, I, H = problem.B, problem.T, problem.I, problem.H
    shapes = {k: layout.shape(k, B, T, I, H, problem.single)
              for k in ("U", "V", "w", "b", "h0", "dh")}
    name = layout.name
    required = list(problem.params())
    allowed = required + ["dh"] + (["h0"] if problem.h0 is not None else [])
    listing = ", ".join(name(k) for k in allowed)
    if not isinstance(out, Mapping):
        kind = out.kind if isinstance(out, _NotAMapping) else type(out).__name__
        raise BadReturn([f"returned {kind}, expected a dict of gradients with "
                         f"the keys {', '.join(name(k) for k in required)} (and optionally "
                         f"{', '.join(name(k) for k in allowed[len(required):])})"])
    problems, result = [], Returned(grads={}, layout=layout)
    for key in required:
        if key not in out:
            problems.append(f"key {name(key)!r} missing: expected dJ/d{name(key)} of shape "
                            f"{shapes[key]}")
    for key in out:
        if key not in allowed:
            why = ""
            if key in ("b", "h0"):
                flag = "--bias" if key == "b" else "--h0"
                why = f" (this problem has no {name(key)}; {flag} gives it one)"
            problems.append(f"key {name(key) if key in KEYS else key!r} is not expected{why}: "
                            f"the keys are {listing}")
    for key in [k for k in ORDER if k in out and k in allowed]:
        expected = shapes[key]
        if dtypes is None:
            value, dtype = to_array(out[key], expected)
        else:
            value, dtype = out[key], dtypes.get(key, "float64")
        if isinstance(value, Opaque) and value.shape is None:
            problems.append(f"key {name(key)!r}: expected an array of shape {expected}, "
                            f"got {value.what}")
            continue
        got = tuple(value.shape)
        orientable = key in ("U", "V", "w", "b") or (key == "h0" and len(expected) == 2)
        flipped = got == expected[::-1] and got != expected and orientable
        if isinstance(value, Opaque):  # a shape that cannot be right, never read
            hint = " (its transpose has the right shape)" if got == expected[::-1] else ""
            problems.append(f"key {name(key)!r}: expected shape {expected}, got {got}{hint}")
            continue
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
        result.dtypes[key] = dtype
        if got == expected:
            pass
        elif value.numel() == 1 and accepts_one_number(key, (H, H if key == "U" else I)):
            value = value.reshape(()).expand(expected)  # a mistake of the catalogue's
        elif flipped:  # the other orientation: read back, and named (its row disagrees)
            value = value.T.contiguous()
            result.misoriented[key] = got
        elif [n for n in got if n != 1] == [n for n in expected if n != 1]:
            result.notes.append(f"{name(key)} came back with shape {got}, expected "
                                f"{expected}: accepted, they differ only by dimensions of "
                                "size 1")
            value = value.reshape(expected)
        else:
            hint = " (its transpose has the right shape)" if got == expected[::-1] else ""
            problems.append(f"key {name(key)!r}: expected shape {expected}, got {got}{hint}")
            continue
        if not torch.isfinite(value).all():
            result.notes.append(f"{name(key)} holds NaN or infinite values")
        result.grads[key] = layout.to_contract(key, value)
    if problems:
        raise BadReturn(problems)
    if "h0" in result.grads:
        result.grads["h0"] = result.grads["h0"].reshape(B, H)
    if "dh" in result.grads:
        result.grads["dh"] = result.grads["dh"].reshape(B, T, H)
    scale = layout.scale(B, T)
    if scale != 1.0:
        result.grads = {k: v / scale for k, v in result.grads.items()}
        result.notes.append(f"your gradients start from dy = {layout.dy} (loss_head): "
                            f"divided by {scale:g} to compare them with J's, whose "
                            f"dJ/dyhat_t is (yhat_t - y_t) / (B T)")
    return result


# --- the diagnosis --------------------------------------------------------------------


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


def diagnose(name: str, got: torch.Tensor, right: torch.Tensor,
             varied: list[tuple[Variation, dict[str, torch.Tensor]]], B: int, T: int,
             rel: float = MATCH_REL) -> Diagnosis:
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
            if _flat(candidate) and abs(abs(c) - 1) > match and \
                    _factor_name(c, factors, match) is None:
                continue  # any constant fits a constant: only a named factor says something
            matches.append((v, c))
    shape = tuple(got.shape)
    one_number = [m for m in CATALOGUE.values()
                  if m.one_number and m.one_number(name, shape) and _flat(got)]
    unfitted = []
    if one_number:  # one value where the record makes one number: that record, whatever it is
        codes = {m.code for m in one_number}
        kept = [(v, c) for v, c in matches if v is not None and v.code in codes]
        unfitted = [m for m in one_number if not any(v.code == m.code for v, _ in kept)]
        matches = kept + [(m.variations[0], None) for m in unfitted]
    d = Diagnosis(codes=[], says=[], fixes=[])
    for v, c in matches:
        if v is None:
            continue
        for code, (says, fix) in zip(v.codes, v.sentences(name)):
            if code not in d.codes:
                d.codes.append(code)
                d.says.append(says + (CATALOGUE[code].unfitted
                                      if CATALOGUE[code] in unfitted else ""))
                d.fixes.append(fix)
    found = [c for _, c in matches if c is not None]
    for m in CONSTANTS:  # the mistakes seen in the constants, in the catalogue's order
        factor = m.constant.factor(found, match)
        if factor is None:
            continue
        d.codes.append(m.code)
        named = _factor_name(factor, factors, match)
        d.says.append(m.what + (f"; {m.constant.detail(factor, named)}"
                                if m.constant.detail else ""))
        d.fixes.append(m.fix)
        if m.constant.reported:
            d.factor, d.factor_name = factor, named
    if not d.codes and got.abs().max().item() == 0:
        d.says.append("it is zero everywhere: is it computed, and returned, at all?")
    return d


def _autograd(problem: Problem) -> dict[str, torch.Tensor]:
    """Autograd's answer on ``problem``: every gradient, and dJ/dh_t as "dh"."""
    right = autograd_grads(problem.model, problem.x, problem.y, problem.h0)
    right["dh"] = autograd_hidden_grads(problem.model, problem.x, problem.y, problem.h0)
    return right


def _variations(problem: Problem, variations: tuple[Variation, ...] = VARIATIONS
                ) -> list[tuple[Variation, dict[str, torch.Tensor]]]:
    """What every variation of the catalogue (or of ``variations``: PAIRS, two mistakes
    made together) gives on ``problem``."""
    p = problem.params()
    return [(v, variation_grads(v, problem.x, problem.y, p["U"], p["V"], p["w"], p.get("b"),
                                problem.h0)) for v in variations]


def separation(problem: Problem) -> tuple[float, str]:
    """How far apart the catalogue's variations are on ``problem``: the smallest relative
    residual, max |a - c b| / max |a| with the best constant c, over every gradient and every
    two candidates a, b of different mistakes (autograd's own gradient among them, as the
    candidate of ``sign`` and ``scale``), with where it occurs. A match is only unambiguous
    when this is far above MATCH_REL."""
    right, varied = _autograd(problem), _variations(problem)
    worst, where = float("inf"), ""
    for name in right:
        cands = [("right", right[name])] + [(v.code, g[name]) for v, g in varied
                                            if not _close(g[name], right[name])]
        cands = [(code, c) for code, c in cands if c.abs().max() > 0]  # zero matches nothing
        for i, (code_a, a) in enumerate(cands):
            for code_b, b in cands[i + 1:]:
                if code_a == code_b or (_close(a, b) and _close(b, a)):
                    continue  # the same gradient from two mistakes: told by the others
                for x, y in ((a, b), (b, a)):
                    r = _best_constant(x, y)[1]
                    if r < worst:
                        worst, where = r, f"{name}: {code_a} vs {code_b}"
    return worst, where


def departure(got: torch.Tensor, right: torch.Tensor,
              rel: float = MATCH_REL) -> dict[str, Any] | None:
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
            out = {"step": t, "sequence": b, "yours": got[b, t - 1].tolist(),
                   "autograd": right[b, t - 1].tolist(), "factor": None}
            if right[:, t - 1].any():  # yours a constant times autograd's there?
                c = _fit(got[:, t - 1], right[:, t - 1], max(rel, MATCH_REL))
                out["factor"] = c
            return out
    return None


# --- how close is close enough ---------------------------------------------------------


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (inf where b is zero and a is not)."""
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item()
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def noise_floor(problem: Problem, right: dict[str, torch.Tensor],
                precision: str = "float64") -> dict[str, float]:
    """How far two correct implementations land from autograd on ``problem``: for every
    gradient, the larger relative difference (:func:`_rel`) of echo-rnn's reference and fast
    kernels, run in ``precision`` ("float64" or "float32"), from ``right`` (autograd's, in
    float64). Rounding alone makes this difference, and a chaotic recurrence amplifies it."""
    dtype = {"float64": torch.float64, "float32": torch.float32}[precision]
    m = problem.model
    model = EchoRNN(m.hidden_size, m.input_size, m.bias, m.init_std, generator=torch.Generator())
    model.to(dtype)
    model.load_state_dict(m.state_dict())  # cast into the model's dtype
    h0 = problem.h0.to(dtype) if problem.h0 is not None else None
    floors: dict[str, float] = {}
    for kernel in ("reference", "fast"):
        got = manual_grads(model, problem.x.to(dtype), problem.y.to(dtype), h0, kernel=kernel,
                           hidden=True)
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
        if base not in self._floors:
            self._floors[base] = noise_floor(self.problem, self.right, base)
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


def judge(name: str, got: torch.Tensor, right: torch.Tensor, dtype: str,
          tolerances: Tolerances) -> Judged:
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


# --- the report -----------------------------------------------------------------------


@dataclass
class LearnerReport:
    """A learner's gradients against autograd's: the rows, a diagnosis per row that
    disagrees, notes on what was accepted, and where dJ/dh_t departs when nothing in the
    catalogue explains a row. ``agrees_to`` gives, per row, the precision it agrees to
    (None when it disagrees) and ``tolerances`` the tolerance it was judged with."""

    where: str
    rows: list[GradRow]
    diagnoses: dict[str, Diagnosis]
    notes: list[str]
    departure: dict[str, Any] | None
    problem: GradcheckProblem  # what was checked, and against which truncation
    autograd_dh: torch.Tensor  # autograd's dJ/dh_t (B, T, H)
    dh: torch.Tensor | None = None  # the learner's dJ/dh_t (B, T, H), when returned
    agrees_to: dict[str, str | None] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    printed: str = ""  # what the learner's code printed (gradcheck --grads only)
    layout: Layout = field(default_factory=lambda: Layout())  # the learner's (names, shapes)
    truncation_found: dict[str, Any] | None = None  # what the code computes instead of BPTT
    arrays: str = "numpy"  # what the function was given

    @property
    def config(self) -> dict[str, Any]:
        """The check's settings as --json gives them: every field of the problem, and how
        the function was called (its arrays, its layout)."""
        return {**self.problem.to_dict(), "arrays": self.arrays, "layout": self.layout.kind}

    @property
    def returned_dh(self) -> bool:
        return self.dh is not None

    @property
    def agrees(self) -> bool:
        return all(r.agrees for r in self.rows)

    @property
    def precision(self) -> str | None:
        """The precision every row agrees to ("float64", or the lowest one a row needed);
        None when a row disagrees."""
        if not self.agrees:
            return None
        tiers = {self.agrees_to.get(r.name) or "float64" for r in self.rows}
        return next((p for p in reversed(PRECISIONS) if p in tiers), "float64")

    @property
    def unexplained(self) -> list[str]:
        return [r.name for r in self.rows if not r.agrees and not self.diagnoses[r.name].codes]

    def verdict(self) -> str:
        if not self.agrees and self.truncation_found is not None:
            f = self.truncation_found
            asked = "truncated BPTT as asked" if self.problem.truncate else "full BPTT"
            return (f"GRADIENTS DISAGREE with {asked}: yours are "
                    f"{truncation_words(f['kind'], f['k'])}")
        if not self.agrees:
            return "GRADIENTS DISAGREE"
        if self.precision != "float64":
            return f"all gradients agree to {self.precision} precision"
        return "all gradients agree"

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = self.diagnoses.get(r.name, Diagnosis([], [], []))
            row = {**asdict(r), "learner_name": self.layout.name(r.name),
                   "agrees_to": self.agrees_to.get(r.name),
                   "tolerance": self.tolerances.get(r.name),
                   "diagnosis": d.codes, "explanation": d.says, "fix": d.fixes}
            if d.factor is not None:
                row["factor"], row["factor_name"] = d.factor, d.factor_name
            rows.append(row)
        out = {"grads": self.where, "config": self.config, "agrees": self.agrees,
               "precision": self.precision, "verdict": self.verdict(), "rows": rows,
               "notes": self.notes, "departure": self.departure,
               "truncation_found": self.truncation_found}
        if self.printed:
            out["printed"] = self.printed
        return out

    def _table(self) -> str:
        header = ("name", "shape", "max abs diff", "max rel diff", "agrees")
        body = [(self.layout.name(r.name), str(r.shape), f"{r.max_abs_diff:.3e}", f"{r.max_rel_diff:.3e}",
                 "NO" if not r.agrees else
                 "yes" if self.agrees_to.get(r.name) in (None, "float64") else
                 f"{self.agrees_to[r.name]}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(wd) for c, wd in zip(row, widths)).rstrip()
                         for row in [header, *body])

    def format(self) -> str:
        p = self.problem
        layout = f" layout={self.layout.kind}" if self.layout.kind != "columns" else ""
        lines = [f"echo-rnn gradcheck --grads {self.where}: {p.describe()}{layout}",
                 "your gradients vs autograd's" + (
                     f" ({truncation_words(p.truncation, p.truncate)}):"
                     if p.truncate else ":"), self._table()]
        lines += [f"note: {n}" for n in self.notes]
        groups: dict[tuple, list[str]] = {}  # rows with the same diagnosis are told once
        for r in self.rows:
            if not r.agrees:
                d = self.diagnoses[r.name]
                key = (tuple(d.codes), d.factor, tuple(d.says), tuple(d.fixes))
                groups.setdefault(key, []).append(r.name)
        if self.truncation_found is not None:
            f = self.truncation_found
            flag = f"--truncate {f['k']}" + (" --truncation back" if f["kind"] == "back" else "")
            asked = (truncation_words(p.truncation, p.truncate) if p.truncate
                     else "full BPTT")
            lines.append(f"\nyour code computes {truncation_words(f['kind'], f['k'])}: every "
                         f"gradient agrees with that, not with {asked}. If you meant to "
                         f"truncate, check it as such with {flag} (check_grads(..., "
                         f"truncate={f['k']}, truncation={f['kind']!r})); for full BPTT, "
                         "carry the gradient back through every step.")
            groups = {}
        for (codes, factor, says_, fixes), names in groups.items():
            shown = [self.layout.name(n) for n in names]
            who = f"{', '.join(shown[:-1])} and {shown[-1]} disagree" if len(shown) > 1 \
                else f"{shown[0]} disagrees"
            if not codes and p.truncate:
                lines.append(f"\n{who} with truncated BPTT (the catalogue of mistakes is "
                             "full BPTT's: run without --truncate to have them named).")
                continue
            if not codes:
                lines.append(f"\n{who}: no mistake of the catalogue reproduces it "
                             "(README: \"Common BPTT mistakes\").")
                lines += [f"  {says}" for says in says_]
                continue
            d = self.diagnoses[names[0]]
            named = f" = {d.factor_name}" if d.factor_name else ""
            factor_ = f" (factor {factor:.6g}{named})" if factor is not None else ""
            lines.append(f"\n{who}: {', '.join(codes)}{factor_}")
            for says, fix in zip(says_, fixes):
                lines.append(f"  {says}.")
                lines.append(f"  fix: {fix}.")
        if self.unexplained and self.truncation_found is None:
            lines.append("")
            if not self.returned_dh:
                lines.append("return dJ/dh_t as \"dh\", (T, H), to see at which step your "
                             "gradient departs from autograd's.")
            elif self.departure is None:
                lines.append("your dJ/dh_t agrees with autograd's at every step: the mistake "
                             "is where dJ/dh_t becomes the parameter gradients (tanh' or the "
                             "outer products).")
            else:
                dep = self.departure
                seq = f" of sequence {dep['sequence']}" if p.batch_size > 1 else ""
                lines.append(f"dJ/dh_t{seq} departs from autograd's first at t = {dep['step']}, "
                             f"counting back from T = {p.seq_len}:")
                lines.append(f"  yours    {_vector(dep['yours'])}")
                lines.append(f"  autograd {_vector(dep['autograd'])}")
                if dep.get("factor") is not None:
                    c = dep["factor"]
                    twice = (" at t = T: the last step's loss gradient is counted twice"
                             if dep["step"] == p.seq_len and abs(c - 2) < 1e-6 else "")
                    lines.append(f"  yours is {c:.6g} times autograd's there{twice}")
        lines.append(self.verdict())
        return "\n".join(lines)

    __str__ = format


def _vector(values: list[float], most: int = 8) -> str:
    shown = ", ".join(f"{v:+.6e}" for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"


def _precision_notes(judged: dict[str, Judged], dtypes: dict[str, str],
                     tolerances: Tolerances) -> list[str]:
    """What the report says about precision: a lower one the code computes in, and a check
    made blunt by a recurrence that amplifies rounding."""
    notes = []
    low = {n: j.agrees_to for n, j in judged.items() if j.agrees_to not in (None, "float64")}
    if low:
        p = sorted(set(low.values()))[-1]
        returned = sorted({dtypes.get(n, "float64") for n in low})
        how = (f"it returned {', '.join(returned)} arrays" if returned != ["float64"] else
               f"its arrays are float64 but differ from autograd's by {p}'s rounding: "
               f"are states or products kept in {p}?")
        notes.append(f"{', '.join(low)} agree to {p} precision, not to float64's: your code "
                     f"computes in {p} ({how}); a mistake smaller than the tolerance "
                     f"({max(j.tolerance for j in judged.values() if j.agrees_to):.1e} of the "
                     "gradient's scale) cannot be seen")
    blunt = {n: j.tolerance for n, j in judged.items()
             if j.agrees_to == "float64" and j.tolerance > 1e-6}
    if blunt:
        worst = max(blunt.values())
        notes.append(f"this problem amplifies rounding: two correct float64 implementations "
                     f"differ by up to {worst / NOISE_SAFETY:.1e} of a gradient's scale here "
                     f"(the recurrence is chaotic at these weights and length), so the check "
                     f"only sees differences above {worst:.1e}; a smaller --init-std or "
                     "--seq-len checks more sharply")
    return notes


def _prefer_shared(diagnoses: dict[str, Diagnosis]) -> None:
    """Some mistakes give one gradient the same value (tanh' at the previous step, in the
    whole step or in the carried term only, give the same dJ/dh_t): where a gradient is
    explained by several, keep those that the other gradients name too."""
    for name, d in diagnoses.items():
        constant = {m.code for m in CONSTANTS}  # told beside any other: never dropped
        alternatives = [c for c in d.codes if c not in constant]
        if len(alternatives) < 2:
            continue
        named_by = {c: sum(c in o.codes for n, o in diagnoses.items() if n != name)
                    for c in alternatives}
        most = max(named_by.values())
        keep = [c for c in alternatives if most and named_by[c] == most]
        if keep and keep != alternatives:
            kept = [i for i, c in enumerate(d.codes) if c in keep or c in constant]
            says_fixes = [(d.says[i], d.fixes[i]) for i in range(len(d.says))]
            d.codes = [d.codes[i] for i in kept]
            d.says = [says_fixes[i][0] for i in kept if i < len(says_fixes)]
            d.fixes = [says_fixes[i][1] for i in kept if i < len(says_fixes)]


def _truncated(problem: Problem, k: int, kind: str) -> dict[str, torch.Tensor]:
    """The gradients of ``problem`` truncated at ``k`` (:mod:`echo_rnn.truncated`)."""
    p = problem.params()
    args = (problem.x, problem.y, p["U"], p["V"], p["w"], p.get("b"), problem.h0)
    return truncated.windows(k, *args) if kind == "windows" else truncated.back(k, *args)[k]


# The truncations tried when full BPTT disagrees: windows of 2 to this many steps (each a
# pass over T), and every k of "at most k steps back" (one pass for all).
SEARCH_WINDOWS = 64


def find_truncation(grads: dict[str, torch.Tensor], problem: Problem,
                    tolerances: Tolerances, precisions: dict[str, str]
                    ) -> dict[str, Any] | None:
    """The truncation of BPTT every returned gradient agrees with, when one does:
    {"kind": "back" or "windows", "k": ...}. "back" with k >= 1 and windows with k >= 2 (a
    window of 1, or 0 steps back, is the catalogue's ``no-carry``)."""
    p = problem.params()
    args = (problem.x, problem.y, p["U"], p["V"], p["w"], p.get("b"), problem.h0)

    def fits(right: dict[str, torch.Tensor]) -> bool:
        return all(_rel(g, right[n]) <= tolerances(n, precisions.get(n, "float64"))
                   for n, g in grads.items())

    T = problem.T
    for k, right in enumerate(truncated.back(T - 1, *args)):
        if k >= 1 and fits(right):
            return {"kind": "back", "k": k}
    for k in range(2, min(T - 1, SEARCH_WINDOWS) + 1):
        if fits(truncated.windows(k, *args)):
            return {"kind": "windows", "k": k}
    return None


def truncation_words(kind: str, k: int) -> str:
    if kind == "back":
        return (f"truncated BPTT with each output's gradient flowing back at most {k} "
                f"step{'s' if k != 1 else ''} (a tutorial's bptt_truncate = {k})")
    return f"truncated BPTT in windows of {k} steps (echo-rnn's --truncate {k})"


def compare_returned(returned: Returned, problem: Problem, where: str,
                     arrays: str = "numpy") -> LearnerReport:
    """The report on what a learner's function returned, already checked
    (:func:`check_return`): each gradient judged (:func:`judge`), the ones that disagree
    diagnosed, and where dJ/dh_t departs. With the problem's ``truncate``, against truncated
    BPTT (its ``truncation``: "windows" or "back", :mod:`echo_rnn.truncated`); without it,
    when full BPTT disagrees but a truncation agrees, the report says which one the code
    computes."""
    layout = returned.layout
    truncate, truncation = problem.spec.truncate, problem.spec.truncation
    full = _autograd(problem)
    tolerances = Tolerances(problem, full)  # rounding is measured on full BPTT
    right = full if truncate is None else _truncated(problem, truncate, truncation)
    names = [k for k in ORDER if k in returned.grads]
    B, T, I, H = problem.B, problem.T, problem.I, problem.H
    shapes = {k: layout.shape(k, B, T, I, H, problem.single) for k in names}  # the learner's
    judged = {k: judge(k, returned.grads[k], right[k], returned.dtypes.get(k, "float64"),
                       tolerances) for k in names}
    rows = [replace(judged[k].row, shape=shapes[k],
                    agrees=judged[k].row.agrees and k not in returned.misoriented)
            for k in names]
    diagnoses: dict[str, Diagnosis] = {}
    varied: dict[str, list] = {}  # computed once, and only for a gradient that needs it

    def candidates(which: str) -> list:
        if which not in varied:
            varied[which] = _variations(problem, VARIATIONS if which == "one" else PAIRS)
        return varied[which]

    found = None
    if any(not r.agrees for r in rows) and not returned.misoriented:
        found = find_truncation(returned.grads, problem, tolerances,
                                {k: _precision(returned.dtypes.get(k, "float64"))
                                 for k in names})
    for r in rows:
        if r.agrees:
            continue
        d = Diagnosis([], [], [])
        if r.name in returned.misoriented:
            m = MISORIENTED  # read from a shape that gave it away
            says, fix = m.in_layout(layout, r.name, returned.misoriented[r.name],
                                    shapes[r.name])
            d = Diagnosis([m.code], [says], [fix])
            if judged[r.name].row.agrees:
                diagnoses[r.name] = d
                continue
        if found is not None:
            d.says.append(f"your code computes {truncation_words(found['kind'], found['k'])}, "
                          "not full BPTT")
            diagnoses[r.name] = d
            continue
        if truncate is not None:  # the catalogue's variations are of full BPTT
            diagnoses[r.name] = d
            continue
        got = returned.grads[r.name]
        rels = [judged[r.name].tolerance]
        if _precision(returned.dtypes.get(r.name, "float64")) == "float64":
            # float64 arrays from code that keeps its states in float32 make the mistake
            # to float32's rounding only
            rels.append(tolerances(r.name, "float32"))
        more = Diagnosis([], [], [])
        # one mistake, else two made together (not for zeros: two mistakes can cancel)
        for which in ("one", "two") if bool(got.any()) else ("one",):
            for rel in rels:
                more = diagnose(r.name, got, right[r.name], candidates(which), problem.B,
                                problem.T, rel=rel)
                if more.codes:
                    break
            if more.codes:
                break
        for i, code in enumerate(more.codes):  # a record told in the learner's layout
            if CATALOGUE[code].in_layout is not None:
                more.says[i], more.fixes[i] = CATALOGUE[code].in_layout(
                    layout, r.name, None, shapes[r.name])
        if d.codes:  # misoriented, and more: both told
            more = Diagnosis(d.codes + more.codes, d.says + more.says, d.fixes + more.fixes,
                             more.factor, more.factor_name)
        diagnoses[r.name] = more
    _prefer_shared(diagnoses)
    unexplained = any(not r.agrees and not diagnoses[r.name].codes for r in rows) \
        and found is None
    dep = departure(returned.grads["dh"], right["dh"], judged["dh"].tolerance) \
        if unexplained and "dh" in returned.grads else None
    notes = returned.notes + _precision_notes(judged, returned.dtypes, tolerances)
    return LearnerReport(where, rows, diagnoses, notes, dep, problem.spec, right["dh"],
                         returned.grads.get("dh"), arrays=arrays,
                         agrees_to={k: j.agrees_to for k, j in judged.items()},
                         tolerances={k: j.tolerance for k, j in judged.items()},
                         layout=layout, truncation_found=found)


def _layout_of(fn: Any) -> Layout:
    layout = getattr(fn, "echo_rnn_layout", None)
    return layout if isinstance(layout, Layout) else Layout()


def report_for(fn: Callable[..., Any], problem: Problem, where: str = "",
               arrays: str = "numpy") -> LearnerReport:
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
    return compare_returned(check_return(out, problem, layout=_layout_of(fn)), problem,
                            where or getattr(fn, "__name__", "function"), arrays)


def check_file(spec: str, problem: Problem, arrays: str = "numpy",
               timeout: float = DEFAULT_TIMEOUT, memory: int | None = None) -> LearnerReport:
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
    got = run_in_child(path_text, name, problem.kwargs("numpy"), problem.expected_shapes(),
                       arrays=arrays, timeout=timeout, memory=memory)
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


class _NotAMapping:
    """Stands for what a function returned instead of a dict, named as its type."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


def check_grads(fn: Callable[..., Any], *, arrays: str = "numpy",
                **settings: Any) -> LearnerReport:
    """Check a hand-written BPTT function against autograd, for notebooks: what
    ``echo-rnn gradcheck --grads`` prints, as a :class:`LearnerReport` (``print`` it, or read
    ``.agrees``, ``.rows``, ``.diagnoses``, ``.to_dict()``). The function runs in this
    process (the command line runs a file's function in a child process instead).

    Args:
        fn: called as ``fn(U=..., V=..., w=..., x=..., y=...)`` (see the module docstring).
        arrays: ``"numpy"`` (float64 arrays) or ``"torch"`` (float64 tensors).
        **settings: the fields of :class:`~echo_rnn.problem.GradcheckProblem`
            (``hidden_size``, ``batch_size``, ``bias``, ``seed``, ...; ``truncate=k`` checks
            against truncated BPTT, in the sense of ``truncation``: "windows", echo-rnn's
            windows of k steps, or "back", each output's gradient flowing back at most k
            steps, a tutorial's bptt_truncate); the notebook's problem by default.

    Raises:
        ConfigError: a setting that is unknown or invalid.
        BadReturn: what ``fn`` returned breaks the contract (each problem on a line).
        LearnerCodeError: ``fn`` raised; ``.error`` is its exception.
    """
    return report_for(fn, make_learner_problem(GradcheckProblem.of(settings)), arrays=arrays)
