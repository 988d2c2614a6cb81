"""What an evaluation shows besides its metrics, for one model (a run's, or a population
member's): the training kernel against autograd, and the gradient flow through time."""

from __future__ import annotations

import math

import torch

from echo_rnn.compare import autograd_grads, manual_grads
from echo_rnn.config import TrainConfig
from echo_rnn.flow import step_norms

# The kernel is compared with autograd at every one of a run's first evaluations: a short
# run's card gets enough points to be drawn (TensorBoard's Scalars dashboard scales a chart
# without its outermost points, and drew a card of two points empty), while a long run pays
# for a comparison (about 2 ms a run) only every compare_every evaluations after them.
COMPARE_FIRST = 5


def compare_due(config: TrainConfig, step: int, last: bool) -> bool:
    """The kernel is compared with autograd at each of the first COMPARE_FIRST evaluations
    that have a batch, then every compare_every evaluations, and at the last (``last``)."""
    evals_done = step // config.eval_every
    return evals_done <= COMPARE_FIRST or evals_done % config.compare_every == 0 or last


def kernel_vs_autograd(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    truncate: int | None,
    ours: dict[str, torch.Tensor] | None = None,
) -> float:
    """How far a kernel's gradients are from autograd's on a batch, in rounding units of the
    model's dtype: the largest difference over the largest gradient entry times epsilon.
    Rounding gives a few units, a wrong kernel thousands and more; a raw difference (1e-8)
    would read as 0 on TensorBoard's cards. The kernel is the fast torch kernel, or the one
    whose gradients ``ours`` holds (the compiled kernel's, compared in float64: its own tanh
    and order against autograd's differ by more than rounding after 50 float32 steps of a
    chaotic run, which says nothing about the gradients being right)."""
    if ours is None:
        ours = manual_grads(model, x, y, truncate=truncate, kernel="fast")
    ref = autograd_grads(model, x, y, truncate=truncate)
    diff = max((ours[n] - ref[n]).abs().max().item() for n in ref)
    scale = max(ref[n].abs().max().item() for n in ref)
    eps = torch.finfo(ref["U"].dtype).eps
    return diff / (eps * scale) if scale > 0 else (0.0 if diff == 0 else math.inf)


# The gradient flow is drawn from this many held-out sequences: the same ones at every
# evaluation, so that the curve changes only as the model does, at a fraction of an
# evaluation's cost.
FLOW_SEQUENCES = 32


def gradient_flow(model, vx: torch.Tensor, vy: torch.Tensor) -> torch.Tensor:
    """||dJ/dh_t|| for t = 1..T (T,), on the first held-out sequences, from the fast kernel
    (full BPTT; whatever the run's backend, the numbers are the same)."""
    n = FLOW_SEQUENCES
    return step_norms(manual_grads(model, vx[:n], vy[:n], kernel="fast", hidden=True)["dh"])
