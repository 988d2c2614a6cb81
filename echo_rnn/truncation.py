"""Truncated BPTT's one rule, which every kernel and the model's autograd path follow.

Steps are numbered t = 1..T. With window k the windows are steps 1..k, k+1..2k, ...: a step
that starts a window after the first (t = k+1, 2k+1, ...) receives h_{t-1} detached, so
nothing is carried back from step t into h_{t-1}. h_0 keeps its gradient. This equals
autograd on the same forward with the state detached at those steps, and with k = 1 each
step learns from its own loss alone.
"""

from __future__ import annotations


def starts_window(t: int, k: int | None) -> bool:
    """Whether step t (1..T) starts a window of truncated BPTT with window k (None: full
    BPTT, one window), so that no gradient flows from it into h_{t-1}."""
    return k is not None and t > 1 and (t - 1) % k == 0
