"""Comparing the hand-written gradients with autograd's, and finite differences.

One helper, :func:`compare_grads`, returns rows (name, shape, max abs diff, max rel diff,
agrees); the tests assert on them and ``echo-rnn gradcheck`` prints them as a table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.autograd.gradcheck import GradcheckError

from echo_rnn.kernels import bptt, reference
from echo_rnn.kernels.bptt import BPTTFunction
from echo_rnn.model import EchoRNN, check_truncate, echo_loss


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


# float64 keeps ~16 digits; the kernel and autograd sum the same terms in different orders
# over at most a few thousand steps, which costs a few digits, so 1e-10 leaves a wide margin.
# float32 keeps ~7 digits; the same argument gives 1e-4.
TOLERANCES = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-12),
    torch.float32: Tolerance(rtol=1e-4, atol=1e-6),
}
# The rest of the table, each judged against the tensor's scale (max |reference|), since an
# entry that cancels to near zero carries the rounding error of the terms summed into it:
# - an absolute floor for the float64 comparisons above, for such entries;
SCALE_ATOL_F64 = 1e-12
# - the two kernels against each other in float64: the same sums, in a different order of a
#   few additions, so they agree far tighter than either with autograd;
KERNELS_REL_F64 = 1e-12
# - the benchmark's candidates against nn.RNN in float32 over up to 2000 steps, where ~1e-6
#   is seen: 1e-4 leaves a wide margin.
BENCH_REL_F32 = 1e-4


@dataclass(frozen=True)
class GradRow:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float  # max |a - b| / max |b|: the error relative to the tensor's scale
    agrees: bool


def compare_grads(
    test: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tol: Tolerance | None = None
) -> list[GradRow]:
    """One row per name in ``ref``; ``agrees`` is ``|test - ref| <= atol + rtol |ref|``
    elementwise (the rule of ``torch.testing.assert_close``)."""
    if set(test) != set(ref):
        raise ValueError(f"gradient names differ: {sorted(test)} vs {sorted(ref)}")
    rows = []
    for name, r in ref.items():
        t = test[name]
        tol_ = tol or TOLERANCES[r.dtype]
        if t.shape != r.shape:
            rows.append(GradRow(name, tuple(r.shape), float("inf"), float("inf"), False))
            continue
        diff = (t - r).abs()
        max_abs = diff.max().item()
        scale = r.abs().max().item()
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        agrees = bool((diff <= tol_.atol + tol_.rtol * r.abs()).all().item())
        rows.append(GradRow(name, tuple(r.shape), max_abs, max_rel, agrees))
    return rows


KERNELS = ("reference", "fast")


def manual_grads(
    model: EchoRNN,
    x: torch.Tensor,
    y: torch.Tensor,
    h0: torch.Tensor | None = None,
    truncate: int | None = None,
    kernel: str = "reference",
    hidden: bool = False,
) -> dict[str, torch.Tensor]:
    """Gradients of ``echo_loss(model(x, h0)[0], y)`` from a hand-written kernel.

    Args:
        model: an :class:`~echo_rnn.model.EchoRNN` (its backend does not matter).
        x: ``(B, T)`` or ``(B, T, I)``; y: ``(B, T)``.
        h0: ``(B, H)`` or None.
        truncate: window length of truncated BPTT, or None.
        kernel: ``"reference"`` (:mod:`echo_rnn.kernels.reference`, written to be read) or
            ``"fast"`` (:mod:`echo_rnn.kernels.bptt`, what ``--backend bptt`` trains with).
        hidden: also return dJ/dh_t for every step as ``"dh"``, ``(B, T, H)`` (the gradient
            flow through time).

    Returns:
        ``{name: grad}`` keyed like ``model.named_parameters()``, plus ``"h0"`` when ``h0``
        is given and ``"dh"`` with ``hidden``.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    x3, h0 = model.check_inputs(x, h0)
    truncate = check_truncate(truncate)
    B, T, _ = x3.shape
    if tuple(y.shape) != (B, T):
        raise ValueError(f"y must have shape (B, T) = {(B, T)}, got {tuple(y.shape)}")
    with torch.no_grad():
        params = {n: p.detach() for n, p in model.named_parameters()}
        U, V, w, b = params["U"], params["V"], params["w"], params.get("b")
        if kernel == "reference":
            y_hat, _, caches = reference.forward(x3, U, V, w, b, h0)
            grads = reference.backward((y_hat - y) / (B * T), caches, w, truncate)
        else:
            y_hat, _, cache = bptt.bptt_forward(x3, U, V, w, b, h0)
            grads = bptt.bptt_backward(
                (y_hat - y) / (B * T),
                cache,
                truncate=truncate,
                need_h0=h0 is not None,
                need_b=b is not None,
                need_h=hidden,
            )
    out = {name: getattr(grads, name) for name in params}
    if h0 is not None:
        out["h0"] = grads.h0
    if hidden:
        out["dh"] = grads.h
    return out


def autograd_grads(
    model: EchoRNN,
    x: torch.Tensor,
    y: torch.Tensor,
    h0: torch.Tensor | None = None,
    truncate: int | None = None,
) -> dict[str, torch.Tensor]:
    """The gradients :func:`manual_grads` computes, from autograd on the
    ``"autograd"`` backend, keyed the same way."""
    # A fresh module, not a deepcopy: the model may carry DDP's gradient hooks, which must
    # not fire for this side computation. Its throwaway generator spares the global RNG.
    ref = EchoRNN(
        model.hidden_size,
        model.input_size,
        model.bias,
        model.init_std,
        backend="autograd",
        generator=torch.Generator(),
    )
    ref.to(device=model.U.device, dtype=model.U.dtype)
    ref.load_state_dict(model.state_dict())
    h0_ = h0.detach().clone().requires_grad_(True) if h0 is not None else None
    loss = echo_loss(ref(x, h0_, truncate=truncate)[0], y)
    names = [n for n, _ in ref.named_parameters()]
    inputs = [p for _, p in ref.named_parameters()] + ([h0_] if h0_ is not None else [])
    grads = torch.autograd.grad(loss, inputs)
    return dict(zip(names + (["h0"] if h0_ is not None else []), grads))


def autograd_hidden_grads(
    model: EchoRNN,
    x: torch.Tensor,
    y: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Autograd's dJ/dh_t for every step, ``(B, T, H)``: the recurrence run as plain tensor
    operations (the reference forward), each h_t's gradient retained, one backward pass.
    Full BPTT; nothing of the model's is changed (its parameters are detached copies)."""
    x3, h0 = model.check_inputs(x, h0)
    with torch.enable_grad():
        U, V, w = (p.detach().requires_grad_(True) for p in (model.U, model.V, model.w))
        b = model.b.detach() if model.b is not None else None
        y_hat, _, caches = reference.forward(x3, U, V, w, b, h0)
        for c in caches:
            c.h.retain_grad()
        echo_loss(y_hat, y).backward()
    return torch.stack([c.h.grad for c in caches], dim=1)


class ReferenceFunction(torch.autograd.Function):
    """The reference kernel as an autograd Function, so that finite differences can witness
    it as they do the fast one: ``apply(x, h0, U, V, w, b) -> (y_hat, h_T)``."""

    @staticmethod
    def forward(ctx, x, h0, U, V, w, b):
        y_hat, h_T, caches = reference.forward(x, U, V, w, b, h0)
        ctx.caches, ctx.w, ctx.has_h0, ctx.has_b = caches, w, h0 is not None, b is not None
        return y_hat, h_T

    @staticmethod
    def backward(ctx, dy_hat, dh_T):
        if dy_hat is None:
            dy_hat = torch.zeros(
                ctx.caches[0].h.shape[0], len(ctx.caches), dtype=ctx.w.dtype, device=ctx.w.device
            )
        g = reference.backward(dy_hat, ctx.caches, ctx.w, dh_T=dh_T)
        return (g.x, g.h0 if ctx.has_h0 else None, g.U, g.V, g.w, g.b if ctx.has_b else None)


def run_gradcheck(
    model: EchoRNN,
    x: torch.Tensor,
    h0: torch.Tensor | None = None,
    fast_mode: bool | None = None,
    kernel: str = "fast",
) -> tuple[bool, bool, str]:
    """``torch.autograd.gradcheck`` (finite differences, float64) on the kernel's autograd
    Function (:class:`BPTTFunction` for ``"fast"``, :class:`ReferenceFunction` for
    ``"reference"``) over x, h0 and every parameter, with full BPTT.

    Truncated BPTT is deliberately not the derivative of the forward, so finite differences
    can only witness the untruncated kernel; truncation is checked against autograd on a
    forward with detached states instead.

    ``fast_mode=None`` uses the full Jacobian for small problems and gradcheck's fast mode
    (random projections of the Jacobian) above a few thousand elements, where the full one
    would take minutes.

    Returns:
        ``(passed, fast_mode, message)``.
    """
    x3, h0 = model.check_inputs(x, h0)
    f64 = {"dtype": torch.float64, "device": x3.device}
    leaves = [x3.detach().to(**f64).requires_grad_(True)]
    leaves.append(h0.detach().to(**f64).requires_grad_(True) if h0 is not None else None)
    for name in ("U", "V", "w", "b"):
        p = getattr(model, name)
        leaves.append(p.detach().to(**f64).requires_grad_(True) if p is not None else None)
    numel = sum(t.numel() for t in leaves if t is not None)
    if fast_mode is None:
        fast_mode = numel * x3.shape[1] > 20_000

    def fn(x_, h0_, U, V, w, b):
        if kernel == "reference":
            return ReferenceFunction.apply(x_, h0_, U, V, w, b)
        return BPTTFunction.apply(x_, h0_, U, V, w, b, None)

    try:
        ok = torch.autograd.gradcheck(fn, tuple(leaves), fast_mode=fast_mode, raise_exception=True)
        return bool(ok), fast_mode, "passed"
    except GradcheckError as exc:
        return False, fast_mode, str(exc).strip().splitlines()[0]


@dataclass
class GradcheckReport:
    """One kernel's check: its rows against autograd, and finite differences on it."""

    rows: list[GradRow]
    gradcheck_passed: bool
    gradcheck_fast_mode: bool
    gradcheck_message: str
    kernel: str = "fast"

    @property
    def agrees(self) -> bool:
        return self.gradcheck_passed and all(r.agrees for r in self.rows)

    def format(self) -> str:
        """The rows as a table under a line naming the kernel, then the finite-difference
        verdict."""
        function = {"reference": "ReferenceFunction", "fast": "BPTTFunction"}[self.kernel]
        mode = "fast mode (random projections)" if self.gradcheck_fast_mode else "full Jacobian"
        return (
            f"hand-written BPTT, {self.kernel} kernel, vs autograd:\n"
            f"{format_rows(self.rows)}\n"
            f"torch.autograd.gradcheck on {function} (finite differences, float64, "
            f"{mode}, full BPTT): {self.gradcheck_message}"
        )

    def to_dict(self) -> dict:
        return {
            "agrees": self.agrees,
            "rows": [asdict(r) for r in self.rows],
            "gradcheck": {
                "passed": self.gradcheck_passed,
                "fast_mode": self.gradcheck_fast_mode,
                "message": self.gradcheck_message,
            },
        }


def gradcheck_report(
    model: EchoRNN,
    x: torch.Tensor,
    y: torch.Tensor,
    h0: torch.Tensor | None = None,
    truncate: int | None = None,
    kernel: str = "fast",
) -> GradcheckReport:
    """One kernel vs autograd rows, plus finite differences on the kernel's Function."""
    rows = compare_grads(
        manual_grads(model, x, y, h0, truncate, kernel=kernel),
        autograd_grads(model, x, y, h0, truncate),
    )
    passed, fast, message = run_gradcheck(model, x, h0, kernel=kernel)
    return GradcheckReport(rows, passed, fast, message, kernel)


def format_rows(rows: list[GradRow]) -> str:
    """An aligned table, one row per gradient."""
    header = ("name", "shape", "max abs diff", "max rel diff", "agrees")
    body = [
        (
            r.name,
            str(r.shape),
            f"{r.max_abs_diff:.3e}",
            f"{r.max_rel_diff:.3e}",
            "yes" if r.agrees else "NO",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(wd) for c, wd in zip(row, widths)).rstrip() for row in [header, *body]
    ]
    return "\n".join(lines)
