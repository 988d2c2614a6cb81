r"""Learners' code as they write it: adapters that let ``check_grads`` and ``echo-rnn
gradcheck --grads`` call a BPTT function in its own layout, each one line in the learner's
file (README: "Your layout in one line").

The contract (:mod:`echo_rnn.learner`) is column vectors: ``U`` (H, H), ``V`` (H, I), ``w``
(H,), x (B, T, I) or (T,) for one sequence, gradients returned keyed like the parameters.
An adapter takes the learner's function and says how it differs::

    bptt = columns(my_bptt, U="Whh", V="Wxh", w="why")   # column vectors, other names
    bptt = rows(rnn_loss, U="Wh", V="Wx", w="Wy")         # h @ Wh: Wh = U^T, Wx = V^T
    bptt = batch_middle(rnn_bptt, U="Waa", V="Wax", w="Wya", dh="da")   # (n_x, m, T_x)
    bptt = loss_head(my_bptt, dy="yhat - y")              # gradients of sum (yhat - y)^2 / 2
    bptt = globals_of(lossFun, U="Whh", V="Wxh", w="Why", args=("x", "y", "h0"),
                      returns=("loss", "dWxh", "dWhh", "dWhy", "hs"))
    bptt = record_dh(rnn_loss, "rnn_step_backward")       # dJ/dh_t from the step function

Every adapter takes every option, and an adapter of an adapter keeps the inner one's options,
so ``rows(record_dh(f, "step_backward"), U="Wh", ...)`` is ``rows(f, record_dh=...,
U="Wh", ...)``. The names map the contract's keys (U, V, w, b, h0, x, y, dh) to the
learner's; a returned key may be the learner's name or it with a ``d`` in front ("Wh" or
"dWh"). Parameters are passed and returned in the learner's orientation; the checker turns
the gradients back with the :class:`Layout` it finds on the adapter, so that a gradient
returned in the other orientation is named as such in the learner's terms, with the fix.

The layouts, with what the learner's function is given and returns (shapes in B, T, I, H):

========  =============  ==========  ======  ======  ==========  ==========  ============
layout    U              V           w       b       h0          x           dh
========  =============  ==========  ======  ======  ==========  ==========  ============
columns   U (H, H)       V (H, I)    (H,)    (H,)    (B, H)*     (B, T, I)*  (B, T, H)*
rows      Wh = U^T       Wx = V^T    (H,)    (H,)    (B, H)      (B, T, I)   (B, T, H)
          (H, H)         (I, H)
batch-    Waa = U        Wax = V     (1, H)  (H, 1)  (H, B)      (I, B, T)   (H, B, T)
middle    (H, H)         (H, I)
========  =============  ==========  ======  ======  ==========  ==========  ============

(* as the contract: (H,), (T,) and (T, H) for one sequence with one input.) y is (B, T) in
rows, (1, B, T) in batch-middle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

KINDS = ("columns", "rows", "batch-middle")
KEYS = ("U", "V", "w", "b", "h0", "x", "y", "dh")
# The loss heads a learner's backward may start from, and the factor its gradients are then
# larger than those of J = sum_t (yhat_t - y_t)^2 / (2T), averaged over the batch.
LOSS_HEADS = {
    "(yhat - y) / (B T)": lambda B, T: 1.0,  # the contract's J
    "(yhat - y) / T": lambda B, T: float(B),  # summed over the batch
    "(yhat - y) / B": lambda B, T: float(T),  # summed over time
    "yhat - y": lambda B, T: float(B * T),  # sum of (yhat - y)^2 / 2 over batch and time
    "2 (yhat - y)": lambda B, T: 2.0 * B * T,  # sum of (yhat - y)^2
}
CONTRACT_HEAD = "(yhat - y) / (B T)"


@dataclass(frozen=True)
class Layout:
    """How a learner's function differs from the contract: its ``kind`` (one of
    :data:`KINDS`), its names for the contract's keys and its loss head ``dy`` (one of
    :data:`LOSS_HEADS`). Plain data: it travels from the sandbox's child as JSON."""

    kind: str = "columns"
    names: dict[str, str] = field(default_factory=dict)
    dy: str = CONTRACT_HEAD

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layout must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.dy not in LOSS_HEADS:
            raise ValueError(
                f"dy must be one of {', '.join(map(repr, LOSS_HEADS))}, got {self.dy!r}"
            )
        for k, v in self.names.items():
            if k not in KEYS or not isinstance(v, str) or not v.isidentifier():
                raise ValueError(
                    f"a name maps one of {', '.join(KEYS)} to an identifier, got {k}={v!r}"
                )

    def name(self, key: str) -> str:
        """The learner's name for contract key ``key``."""
        return self.names.get(key, key)

    def transposed(self, key: str) -> bool:
        """Whether the learner's parameter is the transpose of the contract's."""
        return self.kind == "rows" and key in ("U", "V")

    def scale(self, B: int, T: int) -> float:
        """How many times larger than J's the learner's gradients are (its loss head)."""
        return LOSS_HEADS[self.dy](B, T)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": dict(self.names), "dy": self.dy}

    @classmethod
    def from_json(cls, data: Any) -> Layout:
        """The layout a child wrote back; ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a layout")
        names = data.get("names", {})
        if not isinstance(names, dict):
            raise ValueError("not a layout")
        return cls(
            str(data.get("kind", ""))[:20],
            {str(k)[:20]: str(v)[:60] for k, v in list(names.items())[:10]},
            str(data.get("dy", ""))[:40],
        )

    # --- shapes and conversions (contract side: x (B, T, I), dh (B, T, H), h0 (B, H)) ---

    def shape(
        self,
        key: str,
        B: int,
        T: int,
        I: int,
        H: int,  # noqa: E741
        single: bool,
    ) -> tuple[int, ...]:
        """The shape of ``key`` in the learner's layout."""
        if self.kind == "columns":
            one = {"x": (T,), "y": (T,), "h0": (H,), "dh": (T, H)}
            full = {"x": (B, T, I), "y": (B, T), "h0": (B, H), "dh": (B, T, H)}
            shapes = {"U": (H, H), "V": (H, I), "w": (H,), "b": (H,), **(one if single else full)}
        elif self.kind == "rows":
            shapes = {
                "U": (H, H),
                "V": (I, H),
                "w": (H,),
                "b": (H,),
                "h0": (B, H),
                "x": (B, T, I),
                "y": (B, T),
                "dh": (B, T, H),
            }
        else:
            shapes = {
                "U": (H, H),
                "V": (H, I),
                "w": (1, H),
                "b": (H, 1),
                "h0": (H, B),
                "x": (I, B, T),
                "y": (1, B, T),
                "dh": (H, B, T),
            }
        return shapes[key]

    def to_learner(self, key: str, a: Any, single: bool) -> Any:
        """Contract value ``a`` of ``key`` (x (T,) or (B, T, I), ...) in the learner's layout."""
        if self.kind == "columns":
            return a
        if single and key in ("x", "y", "h0"):  # one sequence: the learner's code has B, I
            a = a.reshape({"x": (1, -1, 1), "y": (1, -1), "h0": (1, -1)}[key])
        if self.kind == "rows":
            return a.T if key in ("U", "V") else a
        if key == "x":
            return _permute(a, (2, 0, 1))  # (B, T, I) -> (I, B, T)
        if key == "y":
            return a.reshape(1, *a.shape)  # (B, T) -> (1, B, T)
        if key == "h0":
            return a.T  # (B, H) -> (H, B)
        if key == "w":
            return a.reshape(1, -1)
        if key == "b":
            return a.reshape(-1, 1)
        return a

    def to_contract(self, key: str, a: Any) -> Any:
        """A returned gradient of ``key`` in the learner's layout and shape, in the
        contract's full layout (h0 (B, H), dh (B, T, H)); numpy or torch."""
        if self.kind == "rows":
            return a.T if key in ("U", "V") else a
        if self.kind == "batch-middle":
            if key == "dh":
                return _permute(a, (1, 2, 0))  # (H, B, T) -> (B, T, H)
            if key == "h0":
                return a.T
            if key in ("w", "b"):
                return a.reshape(-1)
        return a


def _permute(a: Any, dims: tuple[int, ...]) -> Any:
    return a.permute(*dims) if hasattr(a, "permute") else a.transpose(dims)


def _stack(arrays: list, axis: int) -> Any:
    if arrays and hasattr(arrays[0], "permute"):
        import torch

        return torch.stack(arrays, dim=axis)
    import numpy as np

    return np.stack(arrays, axis=axis)


class Adapted:
    """A learner's function with its layout: called with the contract's keyword arguments, it
    calls the learner's function in its own layout and returns its gradients keyed by the
    contract's keys, still in the learner's orientation (``echo_rnn_layout`` tells the
    checker how to turn them back)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        layout: Layout,
        *,
        params: str = "arguments",
        args: tuple[str, ...] | None = None,
        returns: tuple[str, ...] | None = None,
        record: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"an adapter takes the learner's function, got {type(fn).__name__}")
        if params not in ("arguments", "globals"):
            raise ValueError(f"params must be 'arguments' or 'globals', got {params!r}")
        self.fn, self.echo_rnn_layout = fn, layout
        self.params, self.args, self.returns, self.record = params, args, returns, record
        functools.update_wrapper(self, fn)

    def __call__(self, **given: Any) -> Any:
        layout = self.echo_rnn_layout
        single = given["x"].ndim == 1
        theirs = {layout.name(k): layout.to_learner(k, v, single) for k, v in given.items()}
        if self.params == "globals":
            return self._with_globals(theirs, given)
        return self._call(theirs)

    def _call(self, theirs: dict[str, Any]) -> Any:
        if self.args is not None:
            names = [self.echo_rnn_layout.name(a) for a in self.args]
            out = self._recording(lambda: self.fn(*[theirs.get(n) for n in names]))
        else:
            out = self._recording(lambda: self.fn(**theirs))
        return self._keyed(out)

    def _with_globals(self, theirs: dict[str, Any], given: dict[str, Any]) -> Any:
        """The parameters set as the learner's module globals for the call, and put back."""
        layout = self.echo_rnn_layout
        space = getattr(self.fn, "__globals__", None)
        if space is None:
            raise TypeError("globals_of needs a plain Python function")
        params = {layout.name(k) for k in ("U", "V", "w", "b") if k in given}
        missing = object()
        saved = {n: space.get(n, missing) for n in params}
        try:
            space.update({n: theirs[n] for n in params})
            rest = {n: v for n, v in theirs.items() if n not in params}
            if "h0" not in given and self.args and "h0" in self.args:  # h_0 = 0, given
                import numpy as np

                H = given["w"].shape[0]
                rest[layout.name("h0")] = np.zeros(
                    H if given["x"].ndim == 1 else (given["x"].shape[0], H)
                )
            return self._call(rest)
        finally:
            for n, v in saved.items():
                if v is missing:
                    space.pop(n, None)
                else:
                    space[n] = v

    def _recording(self, call: Callable[[], Any]) -> Any:
        """Call; with ``record``, the learner's step-backward function is wrapped for the
        call and what it is handed first (dJ/dh_t, one call per step from T down to 1) is
        kept as "dh"."""
        if self.record is None:
            return call()
        space = getattr(self.fn, "__globals__", None)
        step = space.get(self.record) if space is not None else None
        if not callable(step):
            raise NameError(
                f"record_dh: the module of {getattr(self.fn, '__name__', 'fn')} "
                f"has no function {self.record!r}"
            )
        seen: list[Any] = []

        @functools.wraps(step)
        def recorded(*a: Any, **kw: Any) -> Any:
            first = a[0] if a else next(iter(kw.values()))
            seen.append(first.copy() if hasattr(first, "copy") else first.clone())
            return step(*a, **kw)

        space[self.record] = recorded
        try:
            out = call()
        finally:
            space[self.record] = step
        if isinstance(out, Mapping) and seen:
            axis = -1 if self.echo_rnn_layout.kind == "batch-middle" else -2
            out = {**out, self.echo_rnn_layout.name("dh"): _stack(seen[::-1], axis)}
        return out

    def _keyed(self, out: Any) -> Any:
        """The learner's return keyed by the contract's keys: a tuple by ``returns``; the
        learner's name of a key, or it with a "d" in front, is the key."""
        layout = self.echo_rnn_layout
        if isinstance(out, (tuple, list)) and self.returns is not None:
            if len(out) != len(self.returns):
                return out  # reported as a tuple where a dict belongs
            out = dict(zip(self.returns, out))
        if not isinstance(out, Mapping):
            return out
        theirs = {}
        for key in ("U", "V", "w", "b", "h0", "dh"):
            n = layout.name(key)
            theirs[n] = theirs[f"d{n}"] = key
        keyed, ignored = {}, set(self.returns or ()) - set(theirs)
        for k, v in out.items():
            if k in ignored:
                continue  # a tuple entry the wrapper names but does not check (the loss)
            keyed[theirs.get(k, k) if isinstance(k, str) else k] = v
        return keyed


def _adapt(
    kind: str | None,
    fn: Callable[..., Any],
    *,
    dy: str | None = None,
    params: str | None = None,
    args: tuple[str, ...] | None = None,
    returns: tuple[str, ...] | None = None,
    record_dh: str | None = None,
    **names: str,
) -> Adapted:
    if isinstance(fn, Adapted):  # an adapter of an adapter: the inner one's options stay
        inner = fn
        layout = inner.echo_rnn_layout
        layout = replace(
            layout, kind=kind or layout.kind, names={**layout.names, **names}, dy=dy or layout.dy
        )
        return Adapted(
            inner.fn,
            layout,
            params=params or inner.params,
            args=args if args is not None else inner.args,
            returns=returns if returns is not None else inner.returns,
            record=record_dh or inner.record,
        )
    return Adapted(
        fn,
        Layout(kind or "columns", names, dy or CONTRACT_HEAD),
        params=params or "arguments",
        args=tuple(args) if args else None,
        returns=tuple(returns) if returns else None,
        record=record_dh,
    )


# What a layout file (``echo-rnn grade --layout``) may set: the adapters' keywords, and
# "kind" for the layout (one of KINDS) and "globals" for globals_of.
ADAPTER_OPTIONS = ("kind", "dy", "globals", "args", "returns", "record_dh", *KEYS)


def adapter(fn: Callable[..., Any], options: Mapping[str, Any]) -> Adapted:
    """``fn`` in the adapter that ``options`` describe, as a layout file gives them for a
    class: ``{"kind": "rows", "U": "Wh", ..., "dy": ..., "globals": true, "args": [...],
    "returns": [...], "record_dh": "step"}`` (every key optional; :data:`ADAPTER_OPTIONS`).

    Raises:
        ValueError: an option that is unknown or invalid, named with what is valid.
    """
    unknown = [k for k in options if k not in ADAPTER_OPTIONS]
    if unknown:
        raise ValueError(
            f"unknown layout option {unknown[0]!r}; valid are {', '.join(ADAPTER_OPTIONS)}"
        )
    o = dict(options)
    for key in ("args", "returns"):
        if key in o and (
            not isinstance(o[key], (list, tuple)) or not all(isinstance(a, str) for a in o[key])
        ):
            raise ValueError(f"{key} must be a list of names, got {o[key]!r}")
    for key in ("kind", "dy", "record_dh"):
        if key in o and not isinstance(o[key], str):
            raise ValueError(f"{key} must be a string, got {o[key]!r}")
    if "globals" in o and not isinstance(o["globals"], bool):
        raise ValueError(f"globals must be true or false, got {o['globals']!r}")
    kind = o.pop("kind", None)
    params = "globals" if o.pop("globals", False) else None
    return _adapt(kind, fn, params=params, **o)


def columns(fn: Callable[..., Any], **options: Any) -> Adapted:
    """Column vectors, as the contract, with the learner's own names (``U="Whh"``, ...)."""
    return _adapt("columns", fn, **options)


def rows(fn: Callable[..., Any], **options: Any) -> Adapted:
    """Row vectors, ``h_t = tanh(h_{t-1} @ Wh + x_t @ Wx + b)``, ``yhat_t = h_t @ Wy``:
    given and returning Wh = U^T (H, H), Wx = V^T (I, H), Wy = w (H,); x (B, T, I)."""
    return _adapt("rows", fn, **options)


def batch_middle(fn: Callable[..., Any], **options: Any) -> Adapted:
    """Column vectors with the batch in the middle, as a well-known course notebook:
    x (n_x, m, T_x) = (I, B, T), y (1, B, T), a0 (H, B), Wya (1, H), ba (H, 1), and dJ/da
    (H, B, T)."""
    return _adapt("batch-middle", fn, **options)


def loss_head(fn: Callable[..., Any], dy: str = "yhat - y", **options: Any) -> Adapted:
    """A backward that starts from its own loss head, ``dy`` (one of :data:`LOSS_HEADS`),
    rather than from J's dJ/dyhat_t = (yhat_t - y_t) / (B T): its gradients are checked
    divided by the factor that head makes them larger."""
    return _adapt(None, fn, dy=dy, **options)


def globals_of(fn: Callable[..., Any], **options: Any) -> Adapted:
    """Parameters as module globals: the learner's names (``U="Whh"``, ...) are set in the
    function's module for the call and put back afterwards; ``args`` lists, in order, the
    contract's keys its positional arguments take ("x", "y", "h0"), ``returns`` the names of
    a returned tuple's entries."""
    return _adapt(None, fn, params="globals", **options)


def record_dh(fn: Callable[..., Any], step: str = "rnn_step_backward", **options: Any) -> Adapted:
    """Layered code: while ``fn`` runs, its module's function ``step`` (the step backward,
    ``step(dnext_h, cache)``) is wrapped to keep what it is handed first, dJ/dh_t, one call
    per step from T down to 1; it is returned as "dh", so that the report can say where the
    learner's gradient departs from autograd's. Nothing in ``fn``'s loop changes."""
    return _adapt(None, fn, record_dh=step, **options)


# What each layout's gradient of a parameter is, to name one returned in the other
# orientation: {kind: {key: the right accumulation, in the layout's own code}}.
_RIGHT = {
    "columns": {
        "U": "d{U} += np.outer(dz_t, h_{{t-1}}) (batched: dz.T @ h_prev), (H, H): "
        "row i is unit i's pre-activation",
        "V": "d{V} += np.outer(dz_t, x_t) (batched: dz.T @ x_t), (H, I), {V}'s shape",
        "w": "d{w} += (yhat_t - y_t) / T * h_t, (H,), {w}'s shape",
        "b": "d{b} += dz_t, (H,)",
        "h0": "d{h0} = U.T @ dz_1, {h0}'s shape",
    },
    "rows": {
        "U": "d{U} += h_prev.T @ dz, (H, H): with h_t = tanh(h_{{t-1}} @ {U} + ...), "
        "row i of d{U} is unit i of h_{{t-1}}; return it untransposed, rows() "
        "turns it into dU itself",
        "V": "d{V} += x_t.T @ dz, (I, H), {V}'s shape: return it untransposed, rows() "
        "turns it into dV itself",
        "w": "d{w} += h_t.T @ dyhat_t, (H,), {w}'s shape",
        "b": "d{b} += dz.sum(0), (H,)",
        "h0": "d{h0} = dz_1 @ {U}.T, (B, H), {h0}'s shape",
    },
    "batch-middle": {
        "U": "d{U} += dz_t @ a_prev.T, (n_a, n_a)",
        "V": "d{V} += dz_t @ x_t.T, (n_a, n_x), {V}'s shape",
        "w": "d{w} += dy_t @ a_t.T, (n_y, n_a) = (1, H), {w}'s shape",
        "b": "d{b} += dz_t.sum(axis=1, keepdims=True), (n_a, 1), {b}'s shape",
        "h0": "d{h0} = {U}.T @ dz_1, (n_a, m), {h0}'s shape",
    },
}


def orientation(
    layout: Layout, key: str, got: tuple[int, ...] | None, expected: tuple[int, ...]
) -> tuple[str, str]:
    """(what went wrong, the fix) for the gradient of ``key`` returned in the other
    orientation, in the learner's terms: ``got`` its shape when that gave it away (not
    square), None when only its values did."""
    n = layout.name(key)
    names = {k: layout.name(k) for k in ("U", "V", "w", "b", "h0")}
    if got is not None:
        says = f"d{n} came back as {got}, the transpose of {n}'s shape {expected}"
    else:
        says = f"d{n} is the transpose of the right gradient"
    if layout.kind == "rows" and key in ("U", "V"):
        col = "U" if key == "U" else "V"
        says += (
            f": the orientation of the column-vector {col} = {n}^T, where the "
            f"gradient of {n} itself belongs (rows layout: {n} is used as "
            f"{'h @ ' + n if key == 'U' else 'x @ ' + n})"
        )
    elif got is not None:
        says += (
            ": an update "
            f"{n} -= lr * d{n} would broadcast to "
            f"{tuple(max(a, b) for a, b in zip(got, expected))} instead of failing"
        )
    fix = _RIGHT[layout.kind][key].format(**names)
    return says, fix
