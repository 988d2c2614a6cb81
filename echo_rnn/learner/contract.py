r"""The contract a learner's BPTT function keeps, and what it returned, checked.


The learner's function is called with keyword arguments ``U`` (H, H), ``V``
(H, I), ``w`` (H,), ``x``, ``y``, and ``b`` (H,) / ``h0`` only when the problem has them,
as float64 numpy arrays (or float64 tensors with ``arrays="torch"``). ``x`` and ``y`` are
(T,) for a single sequence with one input (B = I = 1), else (B, T, I) and (B, T); ``h0`` is
(H,) for a single sequence, else (B, H). It returns a dict of the gradients of

    J = mean over the batch of sum_t (yhat_t - y_t)^2 / (2T)

keyed like the parameters (``U``, ``V``, ``w``, and ``b`` with a bias); it may add ``h0``
(dJ/dh_0) and ``dh``, dJ/dh_t per step, (T, H) or (B, T, H).

:func:`check_return` checks what came back and puts it in this package's layout, so that the
rest of the check (:mod:`echo_rnn.learner.tolerance`, :mod:`echo_rnn.learner.diagnosis`)
reads one layout whatever the learner's (:mod:`echo_rnn.layouts`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echo_rnn.errors import ConfigError
from echo_rnn.layouts import KEYS, Layout
from echo_rnn.mistakes import accepts_one_number
from echo_rnn.problem import Problem
from echo_rnn.sandbox import Opaque, no_function, to_array

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


def make_learner_problem(spec: Problem | None = None, **settings: Any) -> Problem:
    """The problem ``spec`` (or ``Problem(**settings)``, its fields as keywords); the
    notebook's by default: B=1, T=50, H=6, I=1, k=2, no bias, h_0 = 0, weights from
    N(0, 0.1^2) drawn from seed DEFAULT_SEED; x holds fair coin flips and y_t = x_{t-k}. Its
    tensors are float64 on the CPU."""
    return (spec if spec is not None else Problem.of(settings)).on("float64", "cpu")


def _parse_spec(spec: str) -> tuple[str, str]:
    """(the file as written, the function's name) of ``PATH.py:FUNCTION``, the file checked
    to exist.

    Raises:
        ConfigError("grads", ...): no ``:``, no such file, or a directory.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise ConfigError(
            "grads",
            f"must be PATH.py:FUNCTION (a file and the name of the function in it), got {spec!r}",
        )
    path = Path(path_text)
    try:
        if not path.is_file():
            what = (
                "is a directory"
                if path.is_dir()
                else "not a regular file"
                if path.exists()
                else "no such file"
            )
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


def check_return(
    out: Any, problem: Problem, dtypes: dict[str, str] | None = None, layout: Layout | None = None
) -> Returned:
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
    shapes = {
        k: layout.shape(k, B, T, I, H, problem.single) for k in ("U", "V", "w", "b", "h0", "dh")
    }
    name = layout.name
    required = list(problem.params())
    allowed = required + ["dh"] + (["h0"] if problem.h0 else [])
    listing = ", ".join(name(k) for k in allowed)
    if not isinstance(out, Mapping):
        kind = out.kind if isinstance(out, _NotAMapping) else type(out).__name__
        raise BadReturn(
            [
                f"returned {kind}, expected a dict of gradients with "
                f"the keys {', '.join(name(k) for k in required)} (and optionally "
                f"{', '.join(name(k) for k in allowed[len(required) :])})"
            ]
        )
    problems, result = [], Returned(grads={}, layout=layout)
    for key in required:
        if key not in out:
            problems.append(
                f"key {name(key)!r} missing: expected dJ/d{name(key)} of shape {shapes[key]}"
            )
    for key in out:
        if key not in allowed:
            why = ""
            if key in ("b", "h0"):
                flag = "--bias" if key == "b" else "--h0"
                why = f" (this problem has no {name(key)}; {flag} gives it one)"
            problems.append(
                f"key {name(key) if key in KEYS else key!r} is not expected{why}: "
                f"the keys are {listing}"
            )
    for key in [k for k in ORDER if k in out and k in allowed]:
        expected = shapes[key]
        if dtypes is None:
            value, dtype = to_array(out[key], expected)
        else:
            value, dtype = out[key], dtypes.get(key, "float64")
        if isinstance(value, Opaque) and value.shape is None:
            problems.append(
                f"key {name(key)!r}: expected an array of shape {expected}, got {value.what}"
            )
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
            result.notes.append(
                f"{name(key)} came back with shape {got}, expected "
                f"{expected}: accepted, they differ only by dimensions of "
                "size 1"
            )
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
        result.notes.append(
            f"your gradients start from dy = {layout.dy} (loss_head): "
            f"divided by {scale:g} to compare them with J's, whose "
            f"dJ/dyhat_t is (yhat_t - y_t) / (B T)"
        )
    return result


class _NotAMapping:
    """Stands for what a function returned instead of a dict, named as its type."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _layout_of(fn: Any) -> Layout:
    layout = getattr(fn, "echo_rnn_layout", None)
    return layout if isinstance(layout, Layout) else Layout()
