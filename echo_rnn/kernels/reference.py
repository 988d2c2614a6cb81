r"""Backpropagation through time for the echo RNN, written to be read.

Shapes: B batch, T time, I input size, H hidden size. The notation is the package's (its
docstring, ``echo_rnn``): the math of one sequence in column vectors, steps t = 1..T, h_0 the
initial state (zeros unless given); the code holds the B sequences of a batch as the rows of
(B, H) tensors, so ``U h`` is written ``h @ U.T``. A Python list holds step t at index t - 1.

Forward, for t = 1..T (``step_forward``)::

    z_t    = U h_{t-1} + V x_t + b          (H,)    code: h_prev @ U.T + x_t @ V.T + b
    h_t    = tanh(z_t)                      (H,)
    yhat_t = w . h_t                        scalar  code: h @ w

Cost: J = (1/B) sum_b sum_t (yhat_t - y_t)^2 / (2T), so dJ/dyhat_t = (yhat_t - y_t) / (B T).

Backward, for t = T..1. The gradient reaching h_t has two sources::

    local_t   = w dJ/dyhat_t                (H,)  from step t's own loss, via the readout
    carried_t = U^T dJ/dz_{t+1}             (H,)  from the future, via h_{t+1}; 0 at t = T
    dJ/dh_t   = local_t + carried_t

and then, inside step t (``step_backward``), since tanh' = 1 - tanh^2::

    dJ/dz_t     = dJ/dh_t * (1 - h_t^2)     (H,)    elementwise
    dJ/dU      += dJ/dz_t h_{t-1}^T         (H, H)  code: dz.T @ h_prev, summed over the batch
    dJ/dV      += dJ/dz_t x_t^T             (H, I)  code: dz.T @ x_t
    dJ/db      += dJ/dz_t                   (H,)    code: dz.sum(0)
    dJ/dx_t     = V^T dJ/dz_t               (I,)    code: dz @ V
    dJ/dh_{t-1} = U^T dJ/dz_t               (H,)    code: dz @ U, the next step's carried term

and, for the readout, dJ/dw += h_t dJ/dyhat_t (code: h.T @ dy). dJ/dh_0 is the carried term
left at the end.

Truncated BPTT with window k (the rule: ``echo_rnn.truncation``): nothing is carried into
h_{t-1} from a step t that starts a window, t = k+1, 2k+1, ... (windows are steps 1..k,
k+1..2k, ...); h_0 keeps its gradient. This equals autograd on the same forward with the
state detached there.

The fast kernel in ``echo_rnn.kernels.bptt`` computes the same numbers with time-major buffers
and whole-sequence matrix products; this module is the one to read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from echo_rnn.truncation import starts_window


@dataclass
class StepCache:
    """What ``step_backward`` needs from ``step_forward``: the step's input x_t (B, I),
    the state it started from h_{t-1} (B, H), the state it made h_t (B, H), and U, V."""

    x: torch.Tensor
    h_prev: torch.Tensor
    h: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor


@dataclass
class StepGrads:
    """The gradients ``step_backward`` returns: dx_t (B, I), dh_{t-1} (B, H), and this
    step's shares of dU (H, H), dV (H, I), db (H,)."""

    x: torch.Tensor
    h_prev: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    b: torch.Tensor


@dataclass
class Grads:
    """dJ/d of every parameter (U, V, w, b), of the inputs x (B, T, I) and h_0 (B, H), and of
    every hidden state: h (B, T, H) holds dJ/dh_t = local_t + carried_t for t = 1..T (what
    ``echo-rnn gradcheck --per-step`` shows)."""

    U: torch.Tensor
    V: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    x: torch.Tensor
    h0: torch.Tensor
    h: torch.Tensor


def step_forward(
    x_t: torch.Tensor,
    h_prev: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, StepCache]:
    """One step: h_t = tanh(U h_{t-1} + V x_t + b), each row a sequence of the batch.

    Args:
        x_t: (B, I). h_prev: h_{t-1}, (B, H). U: (H, H). V: (H, I). b: (H,) or None.

    Returns:
        (h_t, cache): h_t is (B, H).
    """
    z = h_prev @ U.T + x_t @ V.T
    if b is not None:
        z = z + b
    h = torch.tanh(z)
    return h, StepCache(x=x_t, h_prev=h_prev, h=h, U=U, V=V)


def step_backward(dh: torch.Tensor, cache: StepCache) -> StepGrads:
    """Back through one step, given dJ/dh_t (B, H), both of its sources already added.

    Returns:
        dx_t (B, I), dh_{t-1} (B, H) and the step's dU (H, H), dV (H, I), db (H,).
    """
    dz = dh * (1 - cache.h**2)  # tanh'(z_t) = 1 - h_t^2
    return StepGrads(
        x=dz @ cache.V,
        h_prev=dz @ cache.U,
        U=dz.T @ cache.h_prev,  # sum over the batch of outer products dz_t h_{t-1}^T
        V=dz.T @ cache.x,
        b=dz.sum(0),
    )


def forward(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[StepCache]]:
    """The whole sequence, step by step.

    Args:
        x: (B, T, I). U, V, w, b: (H, H), (H, I), (H,), (H,) or None. h0: (B, H) or None.

    Returns:
        (y_hat, h_T, caches): y_hat is (B, T), h_T (B, H), caches[t - 1] is step t's.
    """
    B, T, _ = x.shape
    h = h0 if h0 is not None else x.new_zeros(B, U.shape[0])
    y_hat, caches = [], []
    for t in range(1, T + 1):
        h, cache = step_forward(x[:, t - 1], h, U, V, b)
        y_hat.append(h @ w)  # yhat_t = h_t w, (B,)
        caches.append(cache)
    return torch.stack(y_hat, dim=1), h, caches


def backward(
    dy_hat: torch.Tensor,
    caches: list[StepCache],
    w: torch.Tensor,
    truncate: int | None = None,
    dh_T: torch.Tensor | None = None,
) -> Grads:
    """Back through time.

    Args:
        dy_hat: dJ/dyhat, (B, T). caches: from ``forward``. w: (H,).
        truncate: the window k of truncated BPTT, or None for full BPTT.
        dh_T: dJ/dh_T (B, H) when the final state feeds something else too; else None.

    Returns:
        The gradients of every parameter, of x and h_0 (b's even if the forward had none),
        and of every hidden state h_1..h_T.
    """
    T = len(caches)
    U, V = caches[0].U, caches[0].V
    dU, dV, dw = torch.zeros_like(U), torch.zeros_like(V), torch.zeros_like(w)
    db = torch.zeros_like(w)
    dx, dh = [None] * T, [None] * T
    # beyond step T there is only what the caller did with h_T, usually nothing
    carried = dh_T if dh_T is not None else torch.zeros_like(caches[-1].h)
    for t in range(T, 0, -1):
        cache = caches[t - 1]
        local = dy_hat[:, t - 1, None] * w  # (B, 1) * (H,) -> (B, H): w dJ/dyhat_t, per row
        dh[t - 1] = local + carried  # dJ/dh_t = local_t + carried_t
        g = step_backward(dh[t - 1], cache)
        dU, dV, db = dU + g.U, dV + g.V, db + g.b
        dw = dw + cache.h.T @ dy_hat[:, t - 1]
        dx[t - 1] = g.x
        if starts_window(t, truncate):  # truncated BPTT: nothing carried into h_{t-1}
            carried = torch.zeros_like(g.h_prev)
        else:
            carried = g.h_prev
    return Grads(
        U=dU, V=dV, w=dw, b=db, x=torch.stack(dx, dim=1), h0=carried, h=torch.stack(dh, dim=1)
    )
