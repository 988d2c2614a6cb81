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
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echo_rnn.compare import (GradRow, autograd_grads, autograd_hidden_grads, compare_grads,
                              format_rows, make_problem)
from echo_rnn.errors import ConfigError
from echo_rnn.model import EchoRNN
from echo_rnn.mistakes import VARIATIONS, Variation, factor_meaning, named_factors, variation_grads

# A variation reproduces a gradient when, times the best constant, it is within this of it
# relative to the gradient's largest entry. A float64 backward pass in any summation order
# lands within rounding error of the variation it makes (~1e-16 of the scale, as a correct
# function's rows show), while two different variations stay DEFAULT_SEPARATION apart on
# the default problem: 1e-8 sits far from both.
MATCH_REL = 1e-8

# The default problem keeps the notebook's weights, N(0, 0.1^2): a learner checks the problem
# they wrote their code for. Small weights keep h_t small and tanh' = 1 - h_t^2 near 1, so
# the tanh' mistakes sit closest to each other and to the right gradient; of seeds 0-19, 7
# keeps them furthest apart: every two variations of the catalogue differ on every gradient
# by 6.5e-3 of its scale at least, after the best constant factor (`separation`), 6.5e5
# times MATCH_REL. tests/test_learner.py checks DEFAULT_SEPARATION.
DEFAULT_SEED = 7
DEFAULT_SEPARATION = 5e-3

ORDER = ("U", "V", "w", "b", "h0", "dh")
ARRAYS = ("numpy", "torch")


class BadReturn(ValueError):
    """What the learner's function returned cannot be compared: one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    (B, T, I), y (B, T), U, V, w, b (or None), h0 (B, H) or None."""

    model: EchoRNN  # holds U, V, w, b
    x: torch.Tensor
    y: torch.Tensor
    h0: torch.Tensor | None
    echo_step: int
    seed: int

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


def make_learner_problem(*, hidden_size: int = 6, input_size: int = 1, batch_size: int = 1,
                         seq_len: int = 50, echo_step: int = 2, bias: bool = False,
                         h0: bool = False, seed: int = DEFAULT_SEED,
                         init_std: float = 0.1) -> Problem:
    """The notebook's problem by default: B=1, T=50, H=6, I=1, k=2, no bias, h_0 = 0, weights
    from N(0, 0.1^2) drawn from ``seed``; x holds fair coin flips and y_t = x_{t-k}."""
    if not 0 <= echo_step < seq_len:
        raise ConfigError("echo_step", f"must be in [0, seq_len) = [0, {seq_len}), got {echo_step}")
    model, x, y, h0_ = make_problem(
        hidden_size=hidden_size, input_size=input_size, batch_size=batch_size, seq_len=seq_len,
        echo_step=echo_step, bias=bias, h0=h0, dtype=torch.float64, device=torch.device("cpu"),
        seed=seed, init_std=init_std)
    x3 = x if x.dim() == 3 else x.unsqueeze(-1)  # (B, T) -> (B, T, 1)
    return Problem(model=model, x=x3, y=y, h0=h0_, echo_step=echo_step, seed=seed)


def load_function(spec: str) -> tuple[Callable[..., Any], str]:
    """The function ``PATH.py:FUNCTION`` names, and a short name for it ("grads.py:bptt").

    Raises:
        ConfigError("grads", ...): no ``:``, no such file, or no such function.
        LearnerCodeError: the file raised while it was loaded (their traceback).
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise ConfigError("grads", f"must be PATH.py:FUNCTION (a file and the name of the "
                                   f"function in it), got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise ConfigError("grads", f"{what}: {path_text}")
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
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        listing = f" (it defines: {', '.join(defined)})" if defined else ""
        what = (f"{name!r} is not a function but {type(fn).__name__}" if fn is not None
                else f"defines no function {name!r}")
        raise ConfigError("grads", f"{path_text} {what}{listing}")
    return fn, where


# --- what came back -------------------------------------------------------------------


def _inner_product_fits(name: str, shape: tuple[int, ...]) -> bool:
    """Whether an inner product can stand where gradient ``name`` belongs: a sum of outer
    products of two vectors of one length, as U's always is (dz_t, h_{t-1}) and V's is
    when I = H (dz_t, x_t)."""
    return (name == "U" or (name == "V" and shape[0] == shape[1])) and shape[0] > 1


@dataclass
class Returned:
    """The learner's gradients, checked: float64 CPU tensors in this package's layout
    (h0 (B, H), dh (B, T, H); one number where U or V belongs spread over the matrix), and
    what was accepted with a note."""

    grads: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)


def _as_tensor(value: Any) -> torch.Tensor | str:
    """The value as a float64 CPU tensor, or what is wrong with its type."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            return f"a tensor of {value.dtype}"
        return value.detach().to("cpu", torch.float64)
    if isinstance(value, (np.ndarray, np.generic)) or (
            isinstance(value, (int, float)) and not isinstance(value, bool)):
        a = np.asarray(value)
        if a.dtype.kind not in "fiu":
            return f"an array of {a.dtype}"
        return torch.from_numpy(a.astype(np.float64))
    kind = type(value).__name__
    hint = " (wrap it in np.array)" if isinstance(value, (list, tuple)) else ""
    return f"{kind}{hint}"


def check_return(out: Any, problem: Problem) -> Returned:
    """Check the function's return against the contract and put it in this package's
    layout.

    A shape that differs from the expected one only by dimensions of size 1 is accepted
    with a note; one number where the matrix U (or a square V) belongs is accepted too (its
    diagnosis is ``inner-product``).

    Raises:
        BadReturn: every missing key, extra key, wrong type and wrong shape, each naming the
            key, what was expected and what came back.
    """
    shapes = problem.expected_shapes()
    required = list(problem.params())
    allowed = required + ["dh"] + (["h0"] if problem.h0 is not None else [])
    if not isinstance(out, Mapping):
        raise BadReturn([f"returned {type(out).__name__}, expected a dict of gradients with "
                         f"the keys {', '.join(required)} (and optionally {', '.join(allowed[len(required):])})"])
    problems, result = [], Returned(grads={})
    for key in required:
        if key not in out:
            problems.append(f"key {key!r} missing: expected dJ/d{key} of shape {shapes[key]}")
    for key in out:
        if key not in allowed:
            why = ""
            if key in ("b", "h0"):
                flag = "--bias" if key == "b" else "--h0"
                why = f" (this problem has no {key}; {flag} gives it one)"
            problems.append(f"key {key!r} is not expected{why}: the keys are "
                            f"{', '.join(allowed)}")
    for key in [k for k in ORDER if k in out and k in allowed]:
        value = _as_tensor(out[key])
        expected = shapes[key]
        if isinstance(value, str):
            problems.append(f"key {key!r}: expected an array of shape {expected}, got {value}")
            continue
        got = tuple(value.shape)
        if got == expected:
            pass
        elif value.numel() == 1 and _inner_product_fits(key, expected):
            value = value.reshape(()).expand(expected)  # its diagnosis: inner-product
        elif [n for n in got if n != 1] == [n for n in expected if n != 1]:
            result.notes.append(f"{key} came back with shape {got}, expected {expected}: "
                                "accepted, they differ only by dimensions of size 1")
            value = value.reshape(expected)
        else:
            hint = " (its transpose has the right shape)" if got == expected[::-1] else ""
            problems.append(f"key {key!r}: expected shape {expected}, got {got}{hint}")
            continue
        if not torch.isfinite(value).all():
            result.notes.append(f"{key} holds NaN or infinite values")
        result.grads[key] = value
    if problems:
        raise BadReturn(problems)
    B, T, H = problem.B, problem.T, problem.H
    if "h0" in result.grads:
        result.grads["h0"] = result.grads["h0"].reshape(B, H)
    if "dh" in result.grads:
        result.grads["dh"] = result.grads["dh"].reshape(B, T, H)
    return result


# --- the diagnosis --------------------------------------------------------------------


@dataclass
class Diagnosis:
    """Why one gradient disagrees: the catalogue's codes that reproduce it (empty when none
    does), the constant factor when ``scale`` is among them (its name when it is T, B, 2,
    their inverses or products), and a sentence and a fix per cause."""

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


def _fit(got: torch.Tensor, candidate: torch.Tensor) -> float | None:
    """The constant c with got = c * candidate to MATCH_REL, or None."""
    if not candidate.any() or not torch.isfinite(got).all():
        return None
    c, r = _best_constant(got, candidate)
    return None if c == 0.0 or r > MATCH_REL else c


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() <= MATCH_REL * max(b.abs().max().item(), 1e-300)


def _factor_name(c: float, factors: dict[float, str]) -> str | None:
    return next((n for v, n in factors.items() if abs(abs(c) / v - 1) <= MATCH_REL), None)


def diagnose(name: str, got: torch.Tensor, right: torch.Tensor,
             varied: list[tuple[Variation, dict[str, torch.Tensor]]], B: int, T: int,
             one_value: bool = False) -> Diagnosis:
    """Match gradient ``name`` (``got``; autograd's is ``right``) against every variation,
    alone and times a constant. ``one_value``: ``got`` is one number where a matrix
    belongs, which is the inner product whatever its value."""
    factors = named_factors(B, T)
    matches: list[tuple[Variation | None, float]] = []
    if got.abs().max().item() == 0:  # zero is every candidate times 0: only a mistake
        matches = [(v, 1.0) for v, g in varied if g[name].abs().max().item() == 0]  # giving 0
    else:
        for v, candidate in [(None, right)] + [(v, g[name]) for v, g in varied]:
            if v is not None and _close(candidate, right):
                continue  # this mistake does not touch this gradient
            c = _fit(got, candidate)
            if c is None or (v is None and abs(c - 1) <= MATCH_REL):
                continue
            one_value = candidate.numel() > 1 and bool((candidate == candidate.flatten()[0]).all())
            if one_value and abs(abs(c) - 1) > MATCH_REL and _factor_name(c, factors) is None:
                continue  # any constant fits a constant: only a named factor says something
            matches.append((v, c))
    if one_value:
        ip = [(v, c) for v, c in matches if v is not None and v.code == "inner-product"]
        matches = ip or [(next(v for v in VARIATIONS if v.code == "inner-product"), None)]
    d = Diagnosis(codes=[], says=[], fixes=[])
    for v, c in matches:
        if v is not None and v.code not in d.codes:
            says, fix = v.sentence(name)
            d.codes.append(v.code)
            d.says.append(says)
            d.fixes.append(fix)
    signs = {c < 0 for _, c in matches if c is not None}
    if signs == {True}:
        d.codes.append("sign")
        d.says.append("the sign is flipped: the error is taken as y - yhat, so an update "
                      "that subtracts this gradient climbs the loss")
        d.fixes.append("take the error as yhat - y")
    scales = {round(abs(c), 12) for _, c in matches if c is not None and abs(abs(c) - 1) > MATCH_REL}
    if len(scales) == 1:
        c = next(iter(scales))
        d.codes.append("scale")
        d.factor, d.factor_name = c, _factor_name(c, factors)
        if d.factor_name:
            d.says.append(f"it is {d.factor_name} = {c:.6g} times too large: "
                          f"{factor_meaning(d.factor_name)}")
            d.fixes.append(f"dJ/dyhat_t = (yhat_t - y_t) / (B T) = (yhat_t - y_t) / {B * T}")
        else:
            d.says.append(f"it is {c:.6g} times the right size")
            d.fixes.append("look for a constant: dJ/dyhat_t = (yhat_t - y_t) / (B T)")
    if not d.codes and got.abs().max().item() == 0:
        d.says.append("it is zero everywhere: is it computed, and returned, at all?")
    if one_value and matches[0][1] is None:
        d.says[0] += (" (its value is not that sum times 1, T, B, 2 or their inverses either: "
                      "look for a second mistake)")
    return d


def _autograd(problem: Problem) -> dict[str, torch.Tensor]:
    """Autograd's answer on ``problem``: every gradient, and dJ/dh_t as "dh"."""
    right = autograd_grads(problem.model, problem.x, problem.y, problem.h0)
    right["dh"] = autograd_hidden_grads(problem.model, problem.x, problem.y, problem.h0)
    return right


def _variations(problem: Problem) -> list[tuple[Variation, dict[str, torch.Tensor]]]:
    """What every variation of the catalogue gives on ``problem``."""
    p = problem.params()
    return [(v, variation_grads(v, problem.x, problem.y, p["U"], p["V"], p["w"], p.get("b"),
                                problem.h0)) for v in VARIATIONS]


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
                if code_a == code_b:
                    continue
                for x, y in ((a, b), (b, a)):
                    r = _best_constant(x, y)[1]
                    if r < worst:
                        worst, where = r, f"{name}: {code_a} vs {code_b}"
    return worst, where


def departure(got: torch.Tensor, right: torch.Tensor) -> dict[str, Any] | None:
    """The first step, counting back from T, where the learner's dJ/dh_t (B, T, H) departs
    from autograd's, and both values there (the sequence where it departs most); None
    when it agrees at every step."""
    scale = right.abs().max().item()
    diff = (got - right).abs()
    T = right.shape[1]
    for t in range(T, 0, -1):
        step = diff[:, t - 1]
        if not (step <= MATCH_REL * scale).all():
            b = int(step.amax(dim=1).argmax().item())
            return {"step": t, "sequence": b, "yours": got[b, t - 1].tolist(),
                    "autograd": right[b, t - 1].tolist()}
    return None


# --- the report -----------------------------------------------------------------------


@dataclass
class LearnerReport:
    """A learner's gradients against autograd's: the rows, a diagnosis per row that
    disagrees, notes on what was accepted, and where dJ/dh_t departs when nothing in the
    catalogue explains a row."""

    where: str
    rows: list[GradRow]
    diagnoses: dict[str, Diagnosis]
    notes: list[str]
    departure: dict[str, Any] | None
    config: dict[str, Any]
    autograd_dh: torch.Tensor  # autograd's dJ/dh_t (B, T, H)
    dh: torch.Tensor | None = None  # the learner's dJ/dh_t (B, T, H), when returned

    @property
    def returned_dh(self) -> bool:
        return self.dh is not None

    @property
    def agrees(self) -> bool:
        return all(r.agrees for r in self.rows)

    @property
    def unexplained(self) -> list[str]:
        return [r.name for r in self.rows if not r.agrees and not self.diagnoses[r.name].codes]

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = self.diagnoses.get(r.name, Diagnosis([], [], []))
            row = {**asdict(r), "diagnosis": d.codes, "explanation": d.says, "fix": d.fixes}
            if "scale" in d.codes:
                row["factor"], row["factor_name"] = d.factor, d.factor_name
            rows.append(row)
        return {"grads": self.where, "config": self.config, "agrees": self.agrees, "rows": rows,
                "notes": self.notes, "departure": self.departure}

    def format(self) -> str:
        c = self.config
        lines = [f"echo-rnn gradcheck --grads {self.where}: B={c['batch_size']} T={c['seq_len']} "
                 f"H={c['hidden_size']} I={c['input_size']} k={c['echo_step']} bias={c['bias']} "
                 f"h0={c['h0']} seed={c['seed']} init_std={c['init_std']}",
                 "your gradients vs autograd's:", format_rows(self.rows)]
        lines += [f"note: {n}" for n in self.notes]
        groups: dict[tuple, list[str]] = {}  # rows with the same diagnosis are told once
        for r in self.rows:
            if not r.agrees:
                d = self.diagnoses[r.name]
                near = not d.codes and r.max_rel_diff < 1e-4  # float32 arithmetic, likely
                key = (tuple(d.codes), d.factor, tuple(d.says), tuple(d.fixes), near)
                groups.setdefault(key, []).append(r.name)
        for (codes, factor, says_, fixes, near), names in groups.items():
            who = f"{', '.join(names[:-1])} and {names[-1]} disagree" if len(names) > 1 \
                else f"{names[0]} disagrees"
            if not codes:
                lines.append(f"\n{who}: no mistake of the catalogue reproduces it "
                             "(README: \"Common BPTT mistakes\").")
                if near:
                    lines.append("  it is close (max rel diff under 1e-4) but not to float64 "
                                 "precision: does your code compute in float32?")
                lines += [f"  {says}" for says in says_]
                continue
            d = self.diagnoses[names[0]]
            named = f" = {d.factor_name}" if d.factor_name else ""
            factor_ = f" (factor {factor:.6g}{named})" if factor is not None else ""
            lines.append(f"\n{who}: {', '.join(codes)}{factor_}")
            for says, fix in zip(says_, fixes):
                lines.append(f"  {says}.")
                lines.append(f"  fix: {fix}.")
        if self.unexplained:
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
                seq = f" of sequence {dep['sequence']}" if c["batch_size"] > 1 else ""
                lines.append(f"dJ/dh_t{seq} departs from autograd's first at t = {dep['step']}, "
                             f"counting back from T = {c['seq_len']}:")
                lines.append(f"  yours    {_vector(dep['yours'])}")
                lines.append(f"  autograd {_vector(dep['autograd'])}")
        lines.append("all gradients agree" if self.agrees else "GRADIENTS DISAGREE")
        return "\n".join(lines)

    __str__ = format


def _vector(values: list[float], most: int = 8) -> str:
    shown = ", ".join(f"{v:+.6e}" for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"


def report_for(fn: Callable[..., Any], problem: Problem, where: str = "",
               arrays: str = "numpy") -> LearnerReport:
    """Call ``fn`` on ``problem`` and compare what it returns with autograd's gradients.

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
    returned = check_return(out, problem)
    right = _autograd(problem)
    names = [k for k in ORDER if k in returned.grads]
    shapes = problem.expected_shapes()  # the rows show the learner's layout, not ours
    rows = [replace(r, shape=shapes[r.name]) for r in
            compare_grads({k: returned.grads[k] for k in names}, {k: right[k] for k in names})]
    diagnoses: dict[str, Diagnosis] = {}
    varied = None
    for r in rows:
        if r.agrees:
            continue
        if varied is None:  # computed once, and only for a gradient that needs it
            varied = _variations(problem)
        got = returned.grads[r.name]
        one_value = (_inner_product_fits(r.name, tuple(got.shape)) and bool(got.any())
                     and bool((got == got.flatten()[0]).all()))
        diagnoses[r.name] = diagnose(r.name, got, right[r.name], varied, problem.B, problem.T,
                                     one_value)
    unexplained = any(not r.agrees and not diagnoses[r.name].codes for r in rows)
    dep = departure(returned.grads["dh"], right["dh"]) \
        if unexplained and "dh" in returned.grads else None
    config = {"batch_size": problem.B, "seq_len": problem.T, "hidden_size": problem.H,
              "input_size": problem.I, "echo_step": problem.echo_step,
              "bias": problem.model.b is not None, "h0": problem.h0 is not None,
              "seed": problem.seed, "init_std": problem.model.init_std, "arrays": arrays}
    return LearnerReport(where or getattr(fn, "__name__", "function"), rows, diagnoses,
                         returned.notes, dep, config, right["dh"], returned.grads.get("dh"))


def check_grads(fn: Callable[..., Any], *, arrays: str = "numpy", **problem: Any) -> LearnerReport:
    """Check a hand-written BPTT function against autograd, for notebooks: what
    ``echo-rnn gradcheck --grads`` prints, as a :class:`LearnerReport` (``print`` it, or read
    ``.agrees``, ``.rows``, ``.diagnoses``, ``.to_dict()``).

    Args:
        fn: called as ``fn(U=..., V=..., w=..., x=..., y=...)`` (see the module docstring).
        arrays: ``"numpy"`` (float64 arrays) or ``"torch"`` (float64 tensors).
        **problem: the problem's settings, as :func:`make_learner_problem` takes them
            (hidden_size, input_size, batch_size, seq_len, echo_step, bias, h0, seed,
            init_std); the notebook's problem by default.

    Raises:
        BadReturn: what ``fn`` returned breaks the contract (each problem on a line).
        LearnerCodeError: ``fn`` raised; ``.error`` is its exception.
    """
    return report_for(fn, make_learner_problem(**problem), arrays=arrays)
