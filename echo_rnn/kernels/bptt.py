r"""The fast hand-written BPTT kernel: what ``--backend bptt`` trains with. No autograd inside,
and nothing from the rest of the package but the truncation rule.

It computes exactly what :mod:`echo_rnn.kernels.reference` computes (read that module for the
math, one step at a time); this one is written for speed, and says below what each trick
buys. The notation is the package's (``echo_rnn``): the math of one sequence in column
vectors, steps t = 1..T; the code holds a batch as the rows of (B, H) tensors (``U h`` is
``h @ U.T``) and its time-major buffers count from 0 (``hs[t - 1]`` holds h_t).

Forward, for t = 1..T (h_0 is ``h0``, zeros when None)::

    z_t    = U h_{t-1} + V x_t + b          (H,)
    h_t    = tanh(z_t)                      (H,)
    yhat_t = w . h_t

Backward. Let ``g_t = dJ/dyhat_t`` be the upstream gradient; for the echo cost
``J = mean_b sum_t (yhat_t - y_t)^2 / (2T)`` it is ``(yhat_t - y_t) / (B T)``.
The total gradient reaching h_t has two parts::

    dJ/dh_t = w g_t                    (from step t's own loss, through the readout)
            + U^T dJ/dz_{t+1}          (carried back through time from step t+1)

and ``dJ/dz_t = dJ/dh_t * (1 - h_t^2)`` since tanh' = 1 - tanh^2. The recurrence starts at
``dJ/dh_T = w g_T + dJ/dh_n`` (``dJ/dh_n`` is the upstream gradient of the returned final
state, zero when unused). With ``delta_t = dJ/dz_t``, the gradients are sums over time (and
the batch) of per-step outer products, each one matrix product over all steps in the code::

    dJ/dU   = sum_t delta_t h_{t-1}^T     (H, H)
    dJ/dV   = sum_t delta_t x_t^T         (H, I)
    dJ/db   = sum_t delta_t               (H,)
    dJ/dw   = sum_t h_t g_t               (H,)
    dJ/dx_t = V^T delta_t                 (I,)
    dJ/dh_0 = U^T delta_1                 (H,)

Truncated BPTT with window k (the rule: :mod:`echo_rnn.truncation`, the one import from the
package): nothing is carried into h_{t-1} from a step t that starts a window, t = k+1,
2k+1, ...; h_0 is not detached. This equals autograd on the same forward with the hidden
state detached at each of those steps.

Cost. Only the recurrence is sequential. The forward loop does, per step, one
``(B, H) x (H, H)`` matmul-add into a preallocated buffer and one in-place tanh; the
backward loop one ``(B, H) x (H, H)`` matmul-add and one in-place multiply. The input
projection ``V x_t``, the readout, ``tanh'`` and all weight gradients are whole-sequence
matrix products outside the loops, so a step costs O(B H^2) and the pass O(T B H^2).
The forward keeps one activation tensor, the hidden states h_1..h_T (T, B, H), besides
references to x, h_0 and the weights that the caller holds anyway.

The loops' products are chosen with :mod:`echo_rnn.kernels.population` in mind, whose members must
round exactly like runs trained alone. A population multiplies with ``baddbmm_``, which
ATen computes as one BLAS ``addmm_`` per batch entry once a product has ``B H^2 >= 400``
multiply-adds (:data:`SMALL_PRODUCT`), and with a loop of its own, rounding differently,
below that. So the loops call ``addmm_`` on large products, and on small ones with B > 1
``baddbmm_`` on a batch of one (ATen's loop: no slower than BLAS there, and what a
population computes in one call); only B = 1, where BLAS's call is the cheaper one, keeps
``addmm_``, and a population of such runs multiplies run by run (:func:`runs_multiply_alone`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from echo_rnn.truncation import starts_window


@dataclass
class BPTTCache:
    """What the backward pass needs from the forward pass.

    Attributes:
        x: the inputs as given, ``(B, T, I)`` (the caller holds them anyway; no copy).
        h0: the initial state ``(B, H)``, or None for zeros.
        hs: hidden states h_1..h_T, time-major ``(T, B, H)``: the only activations kept.
        U, V, w: the weights the forward used.
    """

    x: torch.Tensor
    h0: torch.Tensor | None
    hs: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    w: torch.Tensor


@dataclass
class BPTTGrads:
    """Gradients from :func:`bptt_backward`; ``None`` where not asked for."""

    U: torch.Tensor
    V: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor | None = None
    x: torch.Tensor | None = None  # (B, T, I)
    h0: torch.Tensor | None = None  # (B, H)
    h: torch.Tensor | None = None  # (B, T, H): dJ/dh_t for t = 1..T


class _Workspace(threading.local):
    """The backward pass's scratch buffers, delta and tanh' (T, B, H) each, with their
    per-step views, kept between calls of the same shape, dtype and device.

    Training repeats one shape, and at small sizes allocating the buffers and slicing them
    into T views costs as much as the arithmetic. Nothing in them outlives a backward call
    (every returned gradient is a fresh tensor), so reuse is safe; per thread, so concurrent
    backward passes never share one. At most one set is kept.
    """

    key: tuple | None = None

    def get(self, like: torch.Tensor):
        key = (tuple(like.shape), like.dtype, like.device)
        if self.key != key:
            delta, dtanh = torch.empty_like(like), torch.empty_like(like)
            self.buffers = (delta, dtanh, delta.unbind(0), dtanh.unbind(0))
            self.key = key
        return self.buffers


_workspace = _Workspace()

# ATen's CPU baddbmm_ hands products of at least this many multiply-adds (B H^2) to BLAS, one
# addmm_ per batch entry; smaller ones it computes with a loop of its own (see the docstring).
SMALL_PRODUCT = 400


def batched_loops(B: int, H: int, device: torch.device) -> bool:
    """Whether the loops multiply with ``baddbmm_`` on batches of one (ATen's own loop, for
    small products with B > 1) rather than ``addmm_``."""
    return device.type == "cpu" and B * H * H < SMALL_PRODUCT and B > 1


def runs_multiply_alone(B: int, H: int, device: torch.device) -> bool:
    """Whether a population of runs of this shape must multiply run by run, with ``addmm_``,
    to round as this kernel's loops do: small products at B = 1, where the loops keep BLAS's
    ``addmm_``. Otherwise one ``baddbmm_`` for all runs rounds, run by run, as they do."""
    return device.type == "cpu" and B * H * H < SMALL_PRODUCT and B == 1


def _loop_products(slabs: torch.Tensor, M: torch.Tensor, views: tuple | None = None):
    """The per-step views of ``slabs`` (T, B, H), the weight and the multiply-add the loops
    use (:func:`batched_loops`): ``addmm_`` on (B, H) slabs (``views`` when given, the kept
    ``slabs.unbind(0)``), or ``baddbmm_`` on (1, B, H) slabs."""
    T, B, H = slabs.shape
    if not batched_loops(B, H, slabs.device):
        return views if views is not None else slabs.unbind(0), M, torch.Tensor.addmm_
    return slabs.view(T, 1, B, H).unbind(0), M.unsqueeze(0), torch.Tensor.baddbmm_


def workspace_buffers() -> tuple | None:
    """This thread's backward workspace (delta and tanh', with their views), or None before
    the first backward. A CUDA graph captured around ``bptt_backward`` writes into these
    buffers on every replay: its owner keeps a reference so they are never freed."""
    return getattr(_workspace, "buffers", None)


def bptt_forward(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, BPTTCache]:
    """Run the recurrence and record what :func:`bptt_backward` needs.

    Args:
        x: ``(B, T, I)``.
        U, V, w, b: ``(H, H)``, ``(H, I)``, ``(H,)``, ``(H,)`` or None.
        h0: ``(B, H)`` or None for zeros.

    Returns:
        ``(y_hat, h_n, cache)``: ``(B, T)``, ``(B, H)`` and a :class:`BPTTCache`.
    """
    B, T, I = x.shape
    H = U.shape[0]
    hs = x.new_empty(T, B, H)
    # Seed every h_t with its input projection V x_t (+ b), one matmul for the whole
    # sequence, then complete each in place as time advances.
    xt = x.transpose(0, 1).reshape(T * B, I)  # (T*B, I), time-major (a small copy)
    if I == 1:  # an outer product: broadcasting is far cheaper than a rank-1 matmul
        torch.mul(xt, V.t(), out=hs.view(T * B, H))
    else:
        torch.mm(xt, V.t(), out=hs.view(T * B, H))
    if b is not None:
        hs.add_(b)
    # BLAS takes a contiguous operand faster than a transposed view. The T step views are
    # made in one call: indexing hs[t] in the loop costs an op each.
    h, Ut, mac = _loop_products(hs, U.t().contiguous())
    if h0 is not None:
        mac(h[0], h0.view(h[0].shape), Ut)
    h[0].tanh_()  # h_1; with h_0 = 0 there is no U h_0 term
    for prev, cur in zip(h[:-1], h[1:]):
        mac(cur, prev, Ut).tanh_()  # h_t = tanh(V x_t + b + U h_{t-1})
    y_hat = torch.mv(hs.view(T * B, H), w).view(T, B).t()  # (B, T)
    return y_hat, hs[T - 1].clone(), BPTTCache(x=x, h0=h0, hs=hs, U=U, V=V, w=w)


def bptt_backward(
    dy_hat: torch.Tensor,
    cache: BPTTCache,
    dh_n: torch.Tensor | None = None,
    *,
    truncate: int | None = None,
    need_x: bool = False,
    need_h0: bool = False,
    need_b: bool = False,
    need_h: bool = False,
) -> BPTTGrads:
    """Walk time in reverse and return the gradients (see the module docstring).

    Args:
        dy_hat: ``dJ/dyhat``, ``(B, T)``.
        cache: from :func:`bptt_forward`.
        dh_n: ``dJ/dh_n``, ``(B, H)``, or None for zero.
        truncate: window length k of truncated BPTT, or None for full BPTT.
        need_x, need_h0, need_b: also compute these gradients.
        need_h: also return dJ/dh_t for every step (what the gradient flow plots show).
    """
    x, h0, hs, U, V, w = cache.x, cache.h0, cache.hs, cache.U, cache.V, cache.w
    T, B, H = hs.shape
    I = x.shape[-1]
    g = dy_hat.t().reshape(T * B, 1)  # (T*B, 1), time-major like hs
    delta, dtanh, d, dt = _workspace.get(hs)  # (T, B, H) twice, and their step views
    d, Um, mac = _loop_products(delta, U, d)  # delta's step views, as the loops multiply
    # delta starts as the gradient from each step's own loss, w g_t, and becomes dJ/dz_t.
    torch.mul(g, w.view(1, H), out=delta.view(T * B, H))  # outer product by broadcasting
    if dh_n is not None:
        d[T - 1].add_(dh_n)
    torch.addcmul(hs.new_ones(()), hs, hs, value=-1, out=dtanh)  # 1 - h_t^2, one pass
    d[T - 1].mul_(dt[T - 1])
    if truncate is None:
        for nxt, cur, dcur in zip(d[:0:-1], d[-2::-1], dt[-2::-1]):  # t = T-2 .. 0
            mac(cur, nxt, Um).mul_(dcur)  # (own + carried from t+1) * tanh'
    else:
        for t in range(T - 2, -1, -1):
            if not starts_window(t + 2, truncate):  # d[t + 1] is step t + 2's: carried unless cut
                mac(d[t], d[t + 1], Um)
            d[t].mul_(dt[t])

    # Weight gradients: sums over time and batch as single matrix products.
    delta2 = delta.view(T * B, H)  # (T*B, H)
    # dU as a batch of one: ATen's bmm treats each batch entry alike, so a population's dU
    # (echo_rnn.kernels.population) is this one, run by run, at every size (mm and bmm part at small
    # products, where bmm uses a loop of its own)
    dU = torch.bmm(
        delta[1:].view(1, (T - 1) * B, H).transpose(1, 2), hs[:-1].reshape(1, (T - 1) * B, H)
    )[0]
    if h0 is not None:
        dU.addmm_(delta[0].t(), h0)  # the first step's h_{t-1} is h_0
    xt = x.transpose(0, 1).reshape(T * B, I)  # (T*B, I), time-major like delta
    grads = BPTTGrads(U=dU, V=delta2.t() @ xt, w=hs.view(T * B, H).t() @ g.view(T * B))
    if need_b:
        grads.b = delta2.sum(0)
    if need_x:
        grads.x = (delta2 @ V).view(T, B, I).transpose(0, 1)  # (B, T, I)
    if need_h0:
        grads.h0 = delta[0] @ U
    if need_h:
        # dJ/dh_t = w g_t + U^T delta_{t+1}, rebuilt after the loop with one matmul rather
        # than kept in it: the loop overwrites dJ/dh_t with dJ/dz_t in place.
        dh = (g * w.view(1, H)).view(T, B, H)
        carried = (delta[1:].reshape((T - 1) * B, H) @ U).view(T - 1, B, H)
        if truncate is not None:  # carried[i] comes from step i + 2
            carried[[i for i in range(T - 1) if starts_window(i + 2, truncate)]] = 0
        dh[:-1] += carried
        if dh_n is not None:
            dh[T - 1] += dh_n
        grads.h = dh.transpose(0, 1)  # (B, T, H)
    return grads


class BPTTFunction(torch.autograd.Function):
    """The recurrence as an autograd Function whose backward is :func:`bptt_backward`.

    ``apply(x, h0, U, V, w, b, truncate) -> (y_hat, h_n)`` with ``x`` (B, T, I), ``h0``
    (B, H) or None, ``b`` (H,) or None. It is differentiable once: its backward is not
    itself recorded, so double backward raises.
    """

    @staticmethod
    def forward(ctx, x, h0, U, V, w, b, truncate):
        y_hat, h_n, cache = bptt_forward(x, U, V, w, b, h0)
        ctx.save_for_backward(x, h0, cache.hs, U, V, w)
        ctx.truncate = truncate
        ctx.has_h0 = h0 is not None
        ctx.has_b = b is not None
        return y_hat, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy_hat, dh_n):
        x, h0, hs, U, V, w = ctx.saved_tensors
        if dy_hat is None:  # only h_n was used downstream
            dy_hat = hs.new_zeros(hs.shape[1], hs.shape[0])
        need = ctx.needs_input_grad
        grads = bptt_backward(
            dy_hat,
            BPTTCache(x=x, h0=h0, hs=hs, U=U, V=V, w=w),
            dh_n,
            truncate=ctx.truncate,
            need_x=need[0],
            need_h0=ctx.has_h0 and need[1],
            need_b=ctx.has_b and need[5],
        )
        return grads.x, grads.h0, grads.U, grads.V, grads.w, grads.b, None
