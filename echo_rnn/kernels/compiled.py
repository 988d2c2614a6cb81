r"""The compiled CPU kernel's Python face: R echo RNNs (members) at once, forward, loss,
backward and a whole training step in C, each member's bits fixed by its own config and
inputs alone (not by R, its place among the members, the thread count, the CPU's vector
width or any BLAS). The C source, ``_compiled.c`` beside this file, says how; the math is
:mod:`echo_rnn.kernels.reference`'s.

Shapes: R members, B batch, T time, I input size, H hidden size. All tensors are CPU,
contiguous, and of one dtype, float32 or float64. A member's parameters flat, ``(P,)``, are
U (H*H, row-major), V (H*I), w (H) and, with a bias, b (H): :func:`param_count`,
:func:`flatten`, :func:`unflatten`.

Random numbers (:func:`init_params`, :func:`draw_bits`, :func:`train_step`'s batches) come
from a counter-based generator in integer arithmetic, so a seed gives the same weights and
data on every machine; ``tests/test_compiled.py`` re-implements it in pure Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

try:
    from echo_rnn.kernels import _compiled
except ImportError as exc:  # not built: the package still works without it
    _compiled = None
    AVAILABLE = False
    UNAVAILABLE_REASON: str | None = (
        f"echo_rnn.kernels._compiled is not built ({exc}); reinstall the package with a C "
        "compiler present (pip install -e .)"
    )
else:
    AVAILABLE = True
    UNAVAILABLE_REASON = None

STREAM_INIT, STREAM_TRAIN, STREAM_VAL = 0, 1, 2

# The kernel's float32 tanh is within this many float32 ulps of the exact (float64) tanh:
# 2.41 measured over every 7th float in [-1, 1] and a dense sweep of [-10, 10], 92% of them
# correctly rounded (tests/test_compiled.py::test_tanh_f32_ulps). Its float64 tanh is within
# TANH_F64_MAX_REL of torch.tanh, relative (3.5e-16 measured: 2 ulps).
TANH_F32_MAX_ULP = 3
TANH_F64_MAX_REL = 1e-15

_DTYPES = (torch.float32, torch.float64)
OPTIMIZERS = ("adam", "sgd")


class Pass(NamedTuple):
    """What :func:`forward_backward` returns: every member's loss J_r ``(R,)`` (float64),
    its output y_hat ``(R, B, T)``, the gradients of J_r: U ``(R, H, H)``, V ``(R, H, I)``,
    w ``(R, H)``, b ``(R, H)`` or None without a bias, h0 ``(R, B, H)`` (dJ/dh_0, None when no
    h0 was given), and dh ``(R, B, T, H)``: dJ/dh_t for t = 1..T (None unless asked for)."""

    loss: torch.Tensor
    y_hat: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor | None
    h0: torch.Tensor | None
    dh: torch.Tensor | None


class Optimizer(NamedTuple):
    """The update :func:`train_step` applies: ``kind`` "adam" or "sgd"; Adam with
    torch.optim.Adam's defaults (betas, eps) and no weight decay."""

    kind: str
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


def _require() -> None:
    if not AVAILABLE:
        raise RuntimeError(UNAVAILABLE_REASON)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_truncate(truncate) -> int:
    if truncate is None:
        return 0
    return _positive_int("truncate", truncate)


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _check_tensor(name: str, t, shape: tuple, dtype: torch.dtype) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {got}")
    if t.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if t.requires_grad:
        raise ValueError(f"{name} must not require grad (the kernel computes its own)")


def param_count(H: int, I: int, bias: bool) -> int:
    """P, the number of a member's parameters: U (H*H), V (H*I), w (H), b (H with bias)."""
    return H * H + H * I + H + (H if bias else 0)


def unflatten(flat: torch.Tensor, H: int, I: int, bias: bool) -> dict[str, torch.Tensor]:
    """Views "U" (.., H, H), "V" (.., H, I), "w" (.., H) and, with a bias, "b" (.., H) of
    ``flat`` (P,) or (R, P)."""
    P = param_count(H, I, bias)
    if flat.dim() not in (1, 2) or flat.shape[-1] != P:
        raise ValueError(
            f"flat must have shape (P,) or (R, P) with P = {P} for H = {H}, "
            f"I = {I}, bias = {bias}, got {tuple(flat.shape)}"
        )
    lead = tuple(flat.shape[:-1])
    sizes = {"U": (H, H), "V": (H, I), "w": (H,)}
    if bias:
        sizes["b"] = (H,)
    out, at = {}, 0
    for name, shape in sizes.items():
        n = 1
        for s in shape:
            n *= s
        out[name] = flat[..., at : at + n].view(lead + shape)
        at += n
    return out


def flatten(
    U: torch.Tensor, V: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    """The inverse of :func:`unflatten`: (.., P) from U (.., H, H), V (.., H, I), w (.., H),
    b (.., H) or None."""
    lead = U.shape[:-2]
    parts = [U.reshape(lead + (-1,)), V.reshape(lead + (-1,)), w.reshape(lead + (-1,))]
    if b is not None:
        parts.append(b.reshape(lead + (-1,)))
    return torch.cat(parts, dim=-1)


def _int64(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must be an integer in [-2^63, 2^63), got {value!r}")
    return value


def init_params(
    seed: int,
    H: int,
    I: int,
    bias: bool,
    init_std: float,
    input_init_std: float | None = None,
    orthogonal_gain: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A member's initial parameters, flat ``(P,)``, from stream STREAM_INIT of ``seed``:
    U ~ N(0, init_std^2) or ``orthogonal_gain`` times a random orthogonal matrix (Q of a
    Gaussian matrix's QR with R's diagonal positive, as
    :func:`echo_rnn.model.random_orthogonal`), V ~ N(0, input_init_std^2) (default
    init_std), w and b ~ N(0, init_std^2); drawn in float64, then rounded to ``dtype``.
    Parameter n of the flat vector is drawn from counter n of the stream."""
    _require()
    _int64("seed", seed)
    _positive_int("H", H)
    _positive_int("I", I)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if not init_std >= 0:
        raise ValueError(f"init_std must be >= 0, got {init_std!r}")
    input_std = init_std if input_init_std is None else input_init_std
    if not input_std >= 0:
        raise ValueError(f"input_init_std must be >= 0, got {input_init_std!r}")
    if orthogonal_gain is not None and not orthogonal_gain > 0:
        raise ValueError(f"orthogonal_gain must be > 0, got {orthogonal_gain!r}")
    out = torch.empty(param_count(H, I, bias), dtype=torch.float64)
    _compiled.init_params(
        seed,
        H,
        I,
        int(bool(bias)),
        float(init_std),
        float(input_std),
        float(orthogonal_gain or 0.0),
        out.data_ptr(),
    )
    return out.to(dtype)


def draw_bits(
    seed: int,
    stream: int,
    counter: int,
    B: int,
    T: int,
    dtype: torch.dtype = torch.float32,
    I: int = 1,
) -> torch.Tensor:
    """Bernoulli(1/2) bits as 0.0 / 1.0, ``(B, T)`` (``(B, T, I)`` when I > 1): element
    n = (b T + t) I + i is bit 63 - n % 64 of word n // 64 of the generator at (seed, stream,
    counter).
    ``counter``: the training step (0, 1, 2, ...), or 0 for a held-out set."""
    _require()
    for name, value in (("seed", seed), ("stream", stream), ("counter", counter)):
        _int64(name, value)
    _positive_int("B", B)
    _positive_int("T", T)
    _positive_int("I", I)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    out = torch.empty((B, T, I) if I > 1 else (B, T), dtype=dtype)
    _compiled.draw_bits(int(dtype == torch.float64), seed, stream, counter, B, T, I, out.data_ptr())
    return out


def tanh(x: torch.Tensor) -> torch.Tensor:
    """The kernel's own tanh, elementwise (float32 or float64, CPU): what the recurrence
    uses, exposed for its accuracy tests."""
    _require()
    if x.dtype not in _DTYPES or x.device.type != "cpu":
        raise ValueError(f"x must be a float32 or float64 CPU tensor, got {x.dtype} on {x.device}")
    x = x.contiguous()
    out = torch.empty_like(x)
    _compiled.tanh(int(x.dtype == torch.float64), x.numel(), x.data_ptr(), out.data_ptr())
    return out


def _threads(threads) -> int:
    return _positive_int("threads", threads)


def _check_pass_inputs(x, U, V, w, b, h0):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (R, B, T, I), got {got}")
    dtype = x.dtype
    if dtype not in _DTYPES:
        raise ValueError(f"x must be float32 or float64, got {dtype}")
    R, B, T, I = x.shape
    if min(R, B, T, I) == 0:
        raise ValueError(f"x must have R, B, T, I >= 1, got {tuple(x.shape)}")
    if not isinstance(U, torch.Tensor) or U.dim() != 3:
        raise ValueError("U must have shape (R, H, H)")
    H = U.shape[-1]
    _check_tensor("x", x, (R, B, T, I), dtype)
    _check_tensor("U", U, (R, H, H), dtype)
    _check_tensor("V", V, (R, H, I), dtype)
    _check_tensor("w", w, (R, H), dtype)
    if b is not None:
        _check_tensor("b", b, (R, H), dtype)
    if h0 is not None:
        _check_tensor("h0", h0, (R, B, H), dtype)
    return R, B, T, I, H, dtype


def forward_backward(
    x: torch.Tensor,
    y: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    truncate: int | None = None,
    want_dh: bool = False,
    threads: int = 1,
) -> Pass:
    """Forward, loss and backward of R members: J_r = sum_{b,t} (yhat - y)^2 / (2 T B) (the
    echo cost, :func:`echo_rnn.model.echo_loss`) and its gradients.

    Args:
        x: ``(R, B, T, I)``. y: ``(R, B, T)``. U ``(R, H, H)``, V ``(R, H, I)``, w ``(R, H)``,
            b ``(R, H)`` or None. h0: ``(R, B, H)`` or None for zeros.
        truncate: None (full BPTT) or the window k >= 1 (:mod:`echo_rnn.truncation`).
        want_dh: also return dJ/dh_t for every step.
        threads: members are split over this many threads (the bits do not change).
    """
    _require()
    R, B, T, I, H, dtype = _check_pass_inputs(x, U, V, w, b, h0)
    _check_tensor("y", y, (R, B, T), dtype)
    k = _check_truncate(truncate)
    new = {"dtype": dtype}
    y_hat = torch.empty(R, B, T, **new)
    loss = torch.empty(R, dtype=torch.float64)
    dU, dV, dw = torch.empty(R, H, H, **new), torch.empty(R, H, I, **new), torch.empty(R, H, **new)
    db = torch.empty(R, H, **new) if b is not None else None
    dh0 = torch.empty(R, B, H, **new) if h0 is not None else None
    dh = torch.empty(R, B, T, H, **new) if want_dh else None
    _compiled.forward_backward(
        int(dtype == torch.float64),
        R,
        B,
        T,
        I,
        H,
        _ptr(x),
        _ptr(y),
        _ptr(U),
        _ptr(V),
        _ptr(w),
        _ptr(b),
        _ptr(h0),
        k,
        _ptr(y_hat),
        _ptr(loss),
        _ptr(dU),
        _ptr(dV),
        _ptr(dw),
        _ptr(db),
        _ptr(dh0),
        _ptr(dh),
        _threads(threads),
    )
    return Pass(loss, y_hat, dU, dV, dw, db, dh0, dh)


def forward(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    threads: int = 1,
) -> torch.Tensor:
    """y_hat ``(R, B, T)`` of R members; shapes as :func:`forward_backward`."""
    _require()
    R, B, T, I, H, dtype = _check_pass_inputs(x, U, V, w, b, h0)
    y_hat = torch.empty(R, B, T, dtype=dtype)
    _compiled.forward_backward(
        int(dtype == torch.float64),
        R,
        B,
        T,
        I,
        H,
        _ptr(x),
        0,
        _ptr(U),
        _ptr(V),
        _ptr(w),
        _ptr(b),
        _ptr(h0),
        0,
        _ptr(y_hat),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        _threads(threads),
    )
    return y_hat


def _check_int64(name: str, t, R: int) -> None:
    _check_tensor(name, t, (R,), torch.int64)


def evaluate(
    params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    echo_step: torch.Tensor,
    H: int,
    I: int,
    bias: bool,
    threads: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's held-out loss (:func:`echo_rnn.model.echo_loss`) and bit accuracy
    (:func:`echo_rnn.model.bit_accuracy` with its own echo step), from h_0 = 0.

    Args:
        params: ``(R, P)``. x: ``(R, N, T)`` or, shared by all members, ``(N, T)`` (with
            I > 1: ``(R, N, T, I)`` or ``(N, T, I)``). y: ``(R, N, T)``.
        echo_step: int64 ``(R,)``, each in [0, T) (checked in C: ValueError).

    Returns:
        ``(loss, accuracy)``, both float64 ``(R,)``; the loss summed in float64.
    """
    _require()
    _positive_int("H", H)
    _positive_int("I", I)
    P = param_count(H, I, bias)
    if not isinstance(params, torch.Tensor) or params.dim() != 2 or params.shape[1] != P:
        got = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"params must have shape (R, P) with P = {P}, got {got}")
    R = params.shape[0]
    dtype = params.dtype
    if dtype not in _DTYPES:
        raise ValueError(f"params must be float32 or float64, got {dtype}")
    _check_tensor("params", params, (R, P), dtype)
    if not isinstance(y, torch.Tensor) or y.dim() != 3:
        raise ValueError("y must have shape (R, N, T)")
    N, T = y.shape[1], y.shape[2]
    _check_tensor("y", y, (R, N, T), dtype)
    tail = (N, T) if I == 1 else (N, T, I)
    shared = isinstance(x, torch.Tensor) and x.dim() == len(tail)
    _check_tensor("x", x, tail if shared else (R,) + tail, dtype)
    _check_int64("echo_step", echo_step, R)
    loss = torch.empty(R, dtype=torch.float64)
    acc = torch.empty(R, dtype=torch.float64)
    _compiled.evaluate(
        int(dtype == torch.float64),
        R,
        N,
        T,
        I,
        H,
        int(bool(bias)),
        params.data_ptr(),
        int(shared),
        x.data_ptr(),
        y.data_ptr(),
        echo_step.data_ptr(),
        loss.data_ptr(),
        acc.data_ptr(),
        _threads(threads),
    )
    return loss, acc


def train_step(
    params: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    steps: torch.Tensor,
    lr: torch.Tensor,
    seeds: torch.Tensor,
    counters: torch.Tensor,
    echo_step: torch.Tensor,
    *,
    H: int,
    I: int,
    bias: bool,
    B: int,
    T: int,
    truncate: int | None,
    grad_clip: float | None,
    optimizer: str | Optimizer,
    threads: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training step of R members, all in C: per member r, draw the batch
    (x = :func:`draw_bits` (seeds[r], STREAM_TRAIN, counters[r], B, T, I); y = channel 0 of
    x delayed by echo_step[r], zeros first), forward, loss, backward as
    :func:`forward_backward` (h_0 = 0), the gradients' norm (squares summed in float64 in
    flat order), clipping as ``torch.nn.utils.clip_grad_norm_`` (coef = grad_clip /
    (norm + 1e-6), applied when below 1), and the update: SGD ``p -= lr g``, or Adam
    (``steps[r] += 1``; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), the powers by repeated
    squaring in float64). counters[r] += 1.

    The state lives in the caller's tensors, updated in place: params, m, v ``(R, P)`` (one
    dtype; m and v unused by SGD), steps, counters int64 ``(R,)``. lr float64 ``(R,)``;
    seeds, echo_step int64 ``(R,)``.

    Returns:
        ``(loss, norm, finite)``, ``(R,)`` each: the loss before the update (float64), the
        gradients' norm before clipping (float64), and whether the loss and every updated
        parameter are finite (bool).
    """
    return prepare_train_step(
        params,
        m,
        v,
        steps,
        lr,
        seeds,
        counters,
        echo_step,
        H=H,
        I=I,
        bias=bias,
        B=B,
        T=T,
        truncate=truncate,
        grad_clip=grad_clip,
        optimizer=optimizer,
        threads=threads,
    )()


def prepare_train_step(
    params: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    steps: torch.Tensor,
    lr: torch.Tensor,
    seeds: torch.Tensor,
    counters: torch.Tensor,
    echo_step: torch.Tensor,
    *,
    H: int,
    I: int,
    bias: bool,
    B: int,
    T: int,
    truncate: int | None,
    grad_clip: float | None,
    optimizer: str | Optimizer,
    threads: int = 1,
) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`train_step`'s arguments checked once: a call that takes the step, again and
    again, on the same tensors, updated in place between calls (their values may change,
    not their shapes or storage). The checks cost as much as a small member's step, which a
    run takes tens of thousands of times. The outputs are the same three tensors every call,
    overwritten: copy what must outlive the next step."""
    _require()
    for name, value in (("H", H), ("I", I), ("B", B), ("T", T)):
        _positive_int(name, value)
    P = param_count(H, I, bias)
    if not isinstance(params, torch.Tensor) or params.dim() != 2 or params.shape[1] != P:
        got = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"params must have shape (R, P) with P = {P}, got {got}")
    R = params.shape[0]
    dtype = params.dtype
    if dtype not in _DTYPES:
        raise ValueError(f"params must be float32 or float64, got {dtype}")
    for name, t in (("params", params), ("m", m), ("v", v)):
        _check_tensor(name, t, (R, P), dtype)
    for name, t in (
        ("steps", steps),
        ("seeds", seeds),
        ("counters", counters),
        ("echo_step", echo_step),
    ):
        _check_int64(name, t, R)
    _check_tensor("lr", lr, (R,), torch.float64)
    k = _check_truncate(truncate)
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip!r}")
    opt = optimizer if isinstance(optimizer, Optimizer) else Optimizer(optimizer)
    if opt.kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {opt.kind!r}")
    loss = torch.empty(R, dtype=torch.float64)
    norm = torch.empty(R, dtype=torch.float64)
    finite = torch.empty(R, dtype=torch.bool)
    args = (
        int(dtype == torch.float64),
        R,
        H,
        I,
        int(bool(bias)),
        B,
        T,
        k,
        -1.0 if grad_clip is None else float(grad_clip),
        float(opt.betas[0]),
        float(opt.betas[1]),
        float(opt.eps),
        int(opt.kind == "sgd"),
        params.data_ptr(),
        m.data_ptr(),
        v.data_ptr(),
        steps.data_ptr(),
        lr.data_ptr(),
        seeds.data_ptr(),
        counters.data_ptr(),
        echo_step.data_ptr(),
        loss.data_ptr(),
        norm.data_ptr(),
        finite.data_ptr(),
        _threads(threads),
    )
    kernel = _compiled.train_step

    def step() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kernel(*args)
        return loss, norm, finite

    return step
