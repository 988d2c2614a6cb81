r"""Population training: R independent runs of the fast BPTT kernel, stacked and run as one.

A sweep trains many small runs (frontier: B = 64, T = 50, H = 6, I = 1). At that size every
op is a few microseconds of dispatch around a few hundred multiply-adds, so a run's time is
its op count. Runs that share H, I, B, T and bias differ only in their weights (seed) and
their data (seed and echo step k): stacked along a leading run dimension R, each op of the
kernel serves all R runs, and R runs cost one run's op count.

Shapes: R runs, B batch, T time, I input size, H hidden size. Every tensor of
:mod:`echo_rnn.kernels.bptt` gains a leading R::

    x      (R, B, T, I)     each run draws its own data
    U      (R, H, H)        V (R, H, I)    w (R, H)    b (R, H) or None
    y_hat  (R, B, T)
    hs     (T, R, B, H)     time-major: step t of every run is one contiguous (R, B, H) slab

The math is :mod:`echo_rnn.kernels.bptt`'s, run by run (and :mod:`echo_rnn.kernels.reference`
derives it, one step at a time): nothing mixes runs, so ``dJ_r / dU_r`` is the single-run
gradient of run r, and the gradient of ``sum_r J_r`` with respect to the stacked U is all R of
them at once. h_0 is zero. Truncated BPTT drops the carried term where ``bptt`` does,
identically in every run.

What is batched. The sequential loops do one op per step for all runs where ``bptt`` does
one per run: ``baddbmm_`` (R independent ``(B, H) x (H, H)`` products) where ``bptt`` makes
the same call on a batch of one, and the in-place tanh and tanh' multiply over the whole
(R, B, H) slab. The input projection
(I == 1: a broadcast outer product), tanh', dU and db are single ops over all runs.
Inside, ``baddbmm_`` still makes one BLAS call per run (about 1.5 us each at the frontier
shape, on one CPU thread), so R = 32 trains about 4x, not 32x, faster per run.

Bit for bit. Each member's numbers are the single-run kernel's exactly (float32, CPU, one
thread, the frontier shape; ``test_frontier_training_is_bit_identical_to_single_runs``),
because per member every product is the call ``bptt`` makes on the same layout: the loops'
``baddbmm_`` treats each batch entry alone (one BLAS ``addmm`` each once ``B H^2 >= 400``,
ATen's own loop below that, which ``bptt`` calls on a batch of one; at B = 1 ``bptt`` keeps
``addmm_`` and the population loops over runs, see
:func:`echo_rnn.kernels.bptt.runs_multiply_alone`); the one-column products (readout, dV, dw), which
BLAS computes as gemv and a ``bmm`` does not reproduce, are loops over runs: R small ops
each, about 7% of a step at R = 32, for training runs that reproduce single runs.

Training. :func:`population_grads` is the training pass without autograd (forward, every run's
loss, backward into ``.grad``; what ``population_loss(...).sum().backward()`` computes, bit for
bit, without recording a graph). :class:`PopulationAdam` is Adam whose fused update rounds each
run as alone; SGD and the unfused Adam are elementwise, so their stacked update already does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.optim.adam import adam as adam_update  # the functional form Adam.step calls

from echo_rnn.kernels.bptt import _Workspace, runs_multiply_alone
from echo_rnn.model import EchoRNN, check_truncate
from echo_rnn.truncation import starts_window


@dataclass
class PopulationCache:
    """What :func:`population_backward` needs from :func:`population_forward`.

    Attributes:
        x: the inputs as given, ``(R, B, T, I)`` (no copy).
        hs: hidden states h_1..h_T of every run, ``(T, R, B, H)``, time-major for the loops.
        hs_r: the same states run by run, ``(R, T*B, H)`` (:func:`_by_run`): the layout of the
            readout and of the weight gradients' products. Keeping both doubles the
            activations, and saves the backward two copies of them.
        U, V, w: the weights the forward used, ``(R, H, H)``, ``(R, H, I)``, ``(R, H)``.
    """

    x: torch.Tensor
    hs: torch.Tensor
    hs_r: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    w: torch.Tensor


@dataclass
class PopulationGrads:
    """Gradients from :func:`population_backward`, each with a leading R; None where not
    asked for."""

    U: torch.Tensor  # (R, H, H)
    V: torch.Tensor  # (R, H, I)
    w: torch.Tensor  # (R, H)
    b: torch.Tensor | None = None  # (R, H)
    x: torch.Tensor | None = None  # (R, B, T, I)


_workspace = _Workspace()  # bptt's scratch buffers, a set of our own: (T, R, B, H) each


def _addmm_run_by_run(out: torch.Tensor, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``out[r] += a[r] @ m[r]`` for every run r, in place, one ``addmm_`` a run."""
    for o, x, w in zip(out.unbind(0), a.unbind(0), m.unbind(0)):
        o.addmm_(x, w)
    return out


def _loop_product(slab: torch.Tensor):
    """The multiply-add of the time loops, ``mac(out, a, m)``: ``out[r] += a[r] @ m[r]`` for
    every run r of (R, B, H) slabs, rounded as ``bptt``'s loops round it; chosen once a pass,
    not at every step."""
    B, H = slab.shape[-2:]
    return _addmm_run_by_run if runs_multiply_alone(B, H, slab.device) else torch.Tensor.baddbmm_


def _by_run(a: torch.Tensor) -> torch.Tensor:
    """``(T, R, B, C)`` -> ``(R, T*B, C)``: each run's sequence, time-major as ``bptt`` lays it
    out (a copy). The weight gradients and the readout then make, per run, the same
    product on the same layout as the single-run kernel."""
    T, R, B, C = a.shape
    return a.transpose(0, 1).reshape(R, T * B, C)


def population_forward(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, PopulationCache]:
    """Run R recurrences at once, from h_0 = 0.

    Args:
        x: ``(R, B, T, I)``.
        U, V, w, b: ``(R, H, H)``, ``(R, H, I)``, ``(R, H)``, ``(R, H)`` or None.

    Returns:
        ``(y_hat, cache)``: ``(R, B, T)`` and a :class:`PopulationCache`.
    """
    _check_shapes(x, U, V, w, b)
    R, B, T, I = x.shape
    H = U.shape[-1]
    hs = x.new_empty(T, R, B, H)
    # Seed every h_t with V x_t (+ b) for all steps and runs at once; the loop completes them.
    xt = x.permute(2, 0, 1, 3)  # (T, R, B, I), a view
    if I == 1:  # an outer product: broadcasting is far cheaper than a rank-1 matmul
        torch.mul(xt, V.view(1, R, 1, H), out=hs)
    else:
        torch.matmul(xt, V.transpose(1, 2), out=hs)  # (T, R, B, I) @ (R, I, H)
    if b is not None:
        # b laid out as one step's (R, B, H) slab, added to all T at once: the same single
        # rounding per element as broadcasting (R, H), but over rows of R*B*H elements, not H
        hs.view(T, R * B * H).add_(b.view(R, 1, H).expand(R, B, H).reshape(1, R * B * H))
    Ut = U.transpose(1, 2).contiguous()  # (R, H, H): BLAS takes contiguous operands faster
    h = hs.unbind(0)  # T slabs (R, B, H) in one call
    mac = _loop_product(h[0])
    h[0].tanh_()  # h_1; with h_0 = 0 there is no U h_0 term
    for prev, cur in zip(h[:-1], h[1:]):
        mac(cur, prev, Ut).tanh_()  # h_t = tanh(V x_t + b + U h_{t-1}), every run
    # The readout is R matrix-vector products, a loop over runs rather than one bmm: bptt's
    # torch.mv is a BLAS gemv, and a one-column bmm sums in another order; the loop keeps
    # every run's y_hat, and so every gradient, bit-identical to the single-run kernel.
    hs_r = _by_run(hs)  # kept: the backward's dU and dw read it too
    y_hat = torch.stack([torch.mv(h, v) for h, v in zip(hs_r.unbind(0), w.unbind(0))])
    y_hat = y_hat.view(R, T, B).transpose(1, 2)  # (R, T*B) -> (R, B, T)
    return y_hat, PopulationCache(x=x, hs=hs, hs_r=hs_r, U=U, V=V, w=w)


def population_backward(
    dy_hat: torch.Tensor,
    cache: PopulationCache,
    truncate: int | None = None,
    need_b: bool = False,
    need_x: bool = False,
) -> PopulationGrads:
    """Walk time in reverse for every run at once (the recurrence: :mod:`echo_rnn.kernels.bptt`).

    Args:
        dy_hat: ``dJ/dyhat`` of every run, ``(R, B, T)``.
        cache: from :func:`population_forward`.
        truncate: window length k of truncated BPTT for every run, or None for full BPTT.
        need_b, need_x: also compute these gradients.
    """
    x, hs, hs_r, U, V, w = cache.x, cache.hs, cache.hs_r, cache.U, cache.V, cache.w
    T, R, B, H = hs.shape
    if tuple(dy_hat.shape) != (R, B, T):
        raise ValueError(
            f"dy_hat must have shape (R, B, T) = {(R, B, T)}, got {tuple(dy_hat.shape)}"
        )
    g = dy_hat.permute(2, 0, 1).unsqueeze(-1)  # (T, R, B, 1), time-major like hs
    delta, dtanh, d, dt = _workspace.get(hs)  # (T, R, B, H) twice, and their per-step slabs
    mac = _loop_product(d[0])
    # delta starts as each step's own loss gradient w g_t and becomes dJ/dz_t.
    torch.mul(g, w.view(1, R, 1, H), out=delta)  # outer products by broadcasting
    torch.addcmul(hs.new_ones(()), hs, hs, value=-1, out=dtanh)  # 1 - h_t^2, one pass
    d[T - 1].mul_(dt[T - 1])
    for t in range(T - 2, -1, -1):
        if not starts_window(t + 2, truncate):  # d[t + 1] is step t + 2's: carried unless cut
            mac(d[t], d[t + 1], U)  # + U^T dJ/dz_{t+1}, every run
        d[t].mul_(dt[t])

    # Weight gradients: per run, sums over time and batch as single matrix products.
    delta_r = _by_run(delta)  # (R, T*B, H)
    # Steps 2..T of delta against 1..T-1 of h: run by run, row slices of the by-run layouts,
    # the same (T-1)*B-row matrices that bptt's dU multiplies.
    dU = torch.bmm(delta_r[:, B:].transpose(1, 2), hs_r[:, : (T - 1) * B])  # (R, H, H)
    # dV and dw have one column (I == 1): BLAS computes bptt's products as gemv, which a bmm
    # does not reproduce bit for bit, so these are a loop over runs, as the readout is.
    xt = x.transpose(1, 2).reshape(R, T * B, -1).unbind(0)  # R x (T*B, I), time-major
    g_r = _by_run(g).view(R, T * B).unbind(0)  # R x (T*B,)
    dV = torch.stack([dz.t() @ xr for dz, xr in zip(delta_r.unbind(0), xt)])  # (R, H, I)
    dw = torch.stack([h.t() @ gr for h, gr in zip(hs_r.unbind(0), g_r)])  # (R, H)
    grads = PopulationGrads(U=dU, V=dV, w=dw)
    if need_b:
        grads.b = torch.stack([d.sum(0) for d in delta_r.unbind(0)])  # (R, H), as bptt sums
    if need_x:
        grads.x = torch.bmm(delta_r, V).view(R, T, B, -1).transpose(1, 2)  # (R, B, T, I)
    return grads


def _check_shapes(x, U, V, w, b) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must have shape (R, B, T, I), got {tuple(x.shape)}")
    R, B, T, I = x.shape
    H = U.shape[-1] if U.dim() == 3 else None
    expected = {"U": (R, H, H), "V": (R, H, I), "w": (R, H)}
    got = {"U": U, "V": V, "w": w}
    if b is not None:
        expected["b"], got["b"] = (R, H), b
    for name, shape in expected.items():
        if tuple(got[name].shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} for x of shape (R, B, T, I) = "
                f"{tuple(x.shape)} and H = {H}, got {tuple(got[name].shape)}"
            )


class PopulationFunction(torch.autograd.Function):
    """The population recurrence as an autograd Function whose backward is
    :func:`population_backward`: ``apply(x, U, V, w, b, truncate) -> y_hat`` with shapes as in
    :func:`population_forward`. Differentiable once, like
    :class:`echo_rnn.kernels.bptt.BPTTFunction`.
    """

    @staticmethod
    def forward(ctx, x, U, V, w, b, truncate):
        y_hat, cache = population_forward(x, U, V, w, b)
        ctx.save_for_backward(x, cache.hs, cache.hs_r, U, V, w)
        ctx.truncate = truncate
        ctx.has_b = b is not None
        return y_hat

    @staticmethod
    @once_differentiable
    def backward(ctx, dy_hat):
        x, hs, hs_r, U, V, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        grads = population_backward(
            dy_hat,
            PopulationCache(x=x, hs=hs, hs_r=hs_r, U=U, V=V, w=w),
            ctx.truncate,
            need_b=ctx.has_b and need[4],
            need_x=need[0],
        )
        return grads.x, grads.U, grads.V, grads.w, grads.b, None


class PopulationRNN(nn.Module):
    """R echo RNNs of one size as one module, trained by :class:`PopulationFunction`.

    Parameters: ``U`` (R, H, H), ``V`` (R, H, I), ``w`` (R, H), and ``b`` (R, H) with bias;
    row r of each is run r's :class:`~echo_rnn.model.EchoRNN` parameter of the same name.
    Build one with :meth:`from_models`; read run r back with :meth:`member`.
    """

    def __init__(
        self, runs: int, hidden_size: int, input_size: int = 1, bias: bool = False
    ) -> None:
        super().__init__()
        R, H, I = runs, hidden_size, input_size
        self.U = nn.Parameter(torch.zeros(R, H, H))
        self.V = nn.Parameter(torch.zeros(R, H, I))
        self.w = nn.Parameter(torch.zeros(R, H))
        self.b = nn.Parameter(torch.zeros(R, H)) if bias else None

    @classmethod
    def from_models(cls, models: list[EchoRNN]) -> PopulationRNN:
        """Stack single models (same H, I, bias, dtype and device) into a population, in
        order; the population is placed and typed like them."""
        if not models:
            raise ValueError("models must hold at least one EchoRNN, got none")
        first = models[0]
        like = (first.hidden_size, first.input_size, first.bias, first.U.dtype, first.U.device)
        for r, m in enumerate(models):
            mine = (m.hidden_size, m.input_size, m.bias, m.U.dtype, m.U.device)
            if mine != like:
                raise ValueError(
                    f"models[{r}] has (H, I, bias, dtype, device) = {mine}, "
                    f"models[0] has {like}: a population shares them"
                )
        pop = cls(len(models), first.hidden_size, first.input_size, first.bias)
        pop.to(dtype=first.U.dtype, device=first.U.device)
        with torch.no_grad():
            for name, p in pop.named_parameters():
                p.copy_(torch.stack([getattr(m, name) for m in models]))
        return pop

    @property
    def runs(self) -> int:
        return self.U.shape[0]

    def member(self, r: int, backend: str = "bptt") -> EchoRNN:
        """Run r as an :class:`~echo_rnn.model.EchoRNN` holding a copy of its parameters."""
        if not -self.runs <= r < self.runs:
            raise IndexError(f"r must be in [0, R) = [0, {self.runs}), got {r}")
        R, H, I = self.V.shape
        m = EchoRNN(
            H, I, bias=self.b is not None, backend=backend, generator=torch.Generator()
        )  # a throwaway draw: the weights are copied
        m.to(dtype=self.U.dtype, device=self.U.device)
        m.load_state_dict({name: p.detach()[r] for name, p in self.named_parameters()})
        return m

    def forward(self, x: torch.Tensor, *, truncate: int | None = None) -> torch.Tensor:
        """Args: x ``(R, B, T)`` when I == 1, or ``(R, B, T, I)``. Returns y_hat ``(R, B, T)``."""
        R, H, I = self.V.shape
        if x.dim() == 3 and I == 1:
            x = x.unsqueeze(-1)  # (R, B, T) -> (R, B, T, 1)
        if x.dim() != 4 or x.shape[0] != R or x.shape[-1] != I:
            expected = (
                f"(R, B, T) or (R, B, T, 1) with R = {R}"
                if I == 1
                else f"(R, B, T, {I}) with R = {R}"
            )
            raise ValueError(f"x must have shape {expected}, got {tuple(x.shape)}")
        if x.dtype != self.U.dtype or x.device != self.U.device:
            raise ValueError(
                f"x must have dtype {self.U.dtype} on {self.U.device}, got {x.dtype} on {x.device}"
            )
        return PopulationFunction.apply(x, self.U, self.V, self.w, self.b, check_truncate(truncate))


def population_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every run's echo cost J_r = mean_b sum_t (yhat_t - y_t)^2 / (2T), ``(R,)``, from
    ``y_hat`` and ``y`` ``(R, B, T)``. Minimise ``.sum()``: run r's gradient is dJ_r alone.

    Its backward computes dJ/dyhat as :func:`echo_rnn.model.echo_loss`'s does (the same
    ``mse_loss`` backward on the same scale), so the upstream gradients agree bit for bit."""
    if y_hat.shape != y.shape or y_hat.dim() != 3:
        raise ValueError(
            f"y_hat and y must both be (R, B, T), got {tuple(y_hat.shape)} and {tuple(y.shape)}"
        )
    _, B, T = y.shape
    sq = nn.functional.mse_loss(y_hat, y, reduction="none")
    return sq.sum((1, 2)) / (2 * T * B)


def population_accuracy(y_hat: torch.Tensor, y: torch.Tensor, echoed: torch.Tensor) -> torch.Tensor:
    """Every run's :func:`~echo_rnn.model.bit_accuracy`, ``(R,)``, to the bit: the same count
    of hits over the same number of scored positions (those with ``t >= k``), divided once.

    Args:
        y_hat, y: ``(R, B, T)``.
        echoed: ``(R, 1, T)`` booleans, ``t >= k_r``: the positions run r scores.
    """
    hits = (((y_hat > 0.5) == (y > 0.5)) & echoed).sum((1, 2))
    scored = echoed.sum((1, 2)) * y.shape[1]
    return hits.to(y.dtype) / scored.to(y.dtype)


@torch.no_grad()
def population_grads(
    pop: PopulationRNN, x: torch.Tensor, y: torch.Tensor, truncate: int | None = None
) -> torch.Tensor:
    """One training pass without autograd: forward, every run's loss
    (:func:`population_loss`), and the gradients of their sum, put in ``pop``'s ``.grad``
    (replacing what was there). Returns the losses, ``(R,)``.

    What ``population_loss(pop(x), y).sum().backward()`` computes, bit for bit (tested), for
    less: no graph is recorded or walked, and the gradients are not copied into ``.grad``.
    The upstream gradient is formed as autograd forms it: the sum's and the division's
    backward give each run the scalar ``1 / (2 T B)``, and ``mse_loss``'s backward computes
    ``2 (yhat - y)`` times it, in that order.

    Args:
        x: ``(R, B, T)`` (I == 1) or ``(R, B, T, I)``; y: ``(R, B, T)``.
    """
    x = x.unsqueeze(-1) if x.dim() == 3 else x
    y_hat, cache = population_forward(x, pop.U, pop.V, pop.w, pop.b)
    losses = population_loss(y_hat, y)
    _, B, T = y.shape
    scale = torch.ones((), dtype=y_hat.dtype, device=y_hat.device) / (2 * T * B)
    dy_hat = torch.sub(y_hat, y).mul_(2).mul_(scale)
    grads = population_backward(dy_hat, cache, truncate, need_b=pop.b is not None)
    for name, p in pop.named_parameters():  # U, V, w and, with a bias, b
        p.grad = getattr(grads, name)
    return losses


class PopulationAdam(torch.optim.Adam):
    """``torch.optim.Adam`` over a population's stacked parameters, each run's update rounded
    as its run's own optimizer rounds it.

    The unfused update is elementwise, so over the stacked tensors every element rounds as it
    would alone: that is Adam's own step. The fused kernel's rounding depends on where an
    element sits in its tensor (vectorized body or scalar tail), so a run's rows, one
    element among R times more, would round differently stacked; here each run's rows go to
    the fused kernel as tensors of their own (views, in one call), with a step count per run
    (``state["step"]`` is ``(R,)``: row r is what run r's optimizer holds). Constructed and
    configured as ``torch.optim.Adam``, whose ``param_groups`` it keeps.
    """

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("PopulationAdam.step takes no closure")
        (group,) = self.param_groups  # a population's parameters form one group
        if not group["fused"]:
            return super().step()
        if group["amsgrad"]:
            raise ValueError("PopulationAdam's fused update does not keep amsgrad's state")
        rows: dict[str, list[torch.Tensor]] = {"p": [], "g": [], "m": [], "v": [], "step": []}
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:  # as Adam starts a fused parameter, one count per run
                state["step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key, t in (
                ("p", p),
                ("g", p.grad),
                ("m", state["exp_avg"]),
                ("v", state["exp_avg_sq"]),
                ("step", state["step"]),
            ):
                rows[key] += t.unbind(0)
        options = {k: group[k] for k in ("lr", "weight_decay", "eps", "maximize", "amsgrad")}
        if "decoupled_weight_decay" in group:  # AdamW's switch, in torch releases that have it
            options["decoupled_weight_decay"] = group["decoupled_weight_decay"]
        adam_update(
            rows["p"],
            rows["g"],
            rows["m"],
            rows["v"],
            [],
            rows["step"],
            fused=True,
            capturable=group["capturable"],
            beta1=group["betas"][0],
            beta2=group["betas"][1],
            **options,
        )
        return None


@torch.no_grad()
def clip_grad_norms_(module: PopulationRNN, max_norm: float) -> torch.Tensor:
    """Per run, what ``torch.nn.utils.clip_grad_norm_`` does to one run's parameters: scale
    run r's gradients by ``min(1, max_norm / (||g_r|| + 1e-6))``, where ``||g_r||`` is the
    2-norm of all of run r's gradients together. Returns the norms before clipping, ``(R,)``.

    The order is torch's: each tensor's norm, then the norm of those norms."""
    grads = [p.grad for p in module.parameters()]
    R = module.runs
    per_tensor = torch.stack(
        [torch.linalg.vector_norm(g.view(R, -1), dim=1) for g in grads], dim=1
    )  # (R, number of parameters)
    total = torch.linalg.vector_norm(per_tensor, dim=1)  # (R,)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view((R,) + (1,) * (g.dim() - 1)))
    return total
