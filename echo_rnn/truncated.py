r"""The two truncations of BPTT a learner's code may compute, as gradients to check it
against (``echo-rnn gradcheck --grads ... --truncate k [--truncation back]``):

- ``windows``: echo-rnn's own (:mod:`echo_rnn.truncation`): the steps that start a window,
  t = k+1, 2k+1, ..., carry nothing back into h_{t-1};
- ``back``: each output's gradient flows back at most k steps (transitions h_t -> h_{t-1}),
  as a well-known tutorial's ``bptt_truncate`` does: the loss of step s reaches the states
  h_s, ..., h_{s-k} and the steps s, ..., s-k (h_0 when s - k <= 0).

Same notation as :mod:`echo_rnn.kernels.reference`: row vectors, x (B, T, I), y (B, T),
dh (B, T, H), float64 tensors; the gradients of J = mean over the batch of
sum_t (yhat_t - y_t)^2 / (2T).
"""

from __future__ import annotations

import torch

from echo_rnn.kernels import reference
from echo_rnn.problem import TRUNCATIONS  # noqa: F401 - named here, where they are computed
from echo_rnn.truncation import starts_window


def _forward(x, y, U, V, w, b, h0):
    B, T, _ = x.shape
    y_hat, _, caches = reference.forward(x, U, V, w, b, h0)
    hs = torch.stack([c.h for c in caches], dim=1)  # (B, T, H): h_1..h_T
    first = h0 if h0 is not None else torch.zeros_like(hs[:, 0])
    prev = torch.cat([first[:, None], hs[:, :-1]], dim=1)  # (B, T, H): h_0..h_{T-1}
    return (y_hat - y) / (B * T), hs, prev


def windows(k: int, x, y, U, V, w, b=None, h0=None) -> dict[str, torch.Tensor]:
    """The gradients with windows of k steps: {"U", "V", "w", "b", "h0", "dh"}."""
    dy, hs, prev = _forward(x, y, U, V, w, b, h0)
    T = x.shape[1]
    dU, dV, db = torch.zeros_like(U), torch.zeros_like(V), torch.zeros_like(w)
    dh = torch.zeros_like(hs)
    carried = torch.zeros_like(hs[:, 0])
    for t in range(T, 0, -1):
        dh[:, t - 1] = dy[:, t - 1, None] * w + carried
        dz = dh[:, t - 1] * (1 - hs[:, t - 1] ** 2)
        dU += dz.T @ prev[:, t - 1]
        dV += dz.T @ x[:, t - 1]
        db += dz.sum(0)
        carried = torch.zeros_like(dz) if starts_window(t, k) else dz @ U
    dw = torch.einsum("bt,bth->h", dy, hs)
    return {"U": dU, "V": dV, "w": dw, "b": db, "h0": carried, "dh": dh}


def back(most: int, x, y, U, V, w, b=None, h0=None) -> list[dict[str, torch.Tensor]]:
    """The gradients when each output's gradient flows back at most k steps, for every k
    = 0..``most`` at once: element k of the list. One pass over the distance d = 0..most,
    all outputs together: D_d (B, T - d, H) is output s's gradient at state h_{s-d}."""
    dy, hs, prev = _forward(x, y, U, V, w, b, h0)
    T = x.shape[1]
    dU, dV, db = torch.zeros_like(U), torch.zeros_like(V), torch.zeros_like(w)
    dh, dh0 = torch.zeros_like(hs), torch.zeros_like(hs[:, 0])
    dw = torch.einsum("bt,bth->h", dy, hs)  # the output layer is never truncated
    D = dy[:, :, None] * w  # distance 0: output s at its own state
    carry = torch.zeros_like(hs)  # one step further back than D
    out = []
    for d in range(0, min(most, T) + 1):
        if d > 0:
            dh0 = dh0 + carry[:, 0]  # output d, d steps back, is at h_0
            D = carry[:, 1:]
        n = T - d  # outputs d+1..T, at states 1..T-d
        if n > 0:
            dh[:, :n] += D
            dz = D * (1 - hs[:, :n] ** 2)
            dU = dU + torch.einsum("bji,bjk->ik", dz, prev[:, :n])
            dV = dV + torch.einsum("bji,bjk->ik", dz, x[:, :n])
            db = db + dz.sum((0, 1))
            carry = dz @ U  # (B, n, H): one step further back
        else:
            carry = torch.zeros_like(hs[:, :1])
        out.append(
            {
                "U": dU.clone(),
                "V": dV.clone(),
                "w": dw,
                "b": db.clone(),
                "h0": dh0.clone(),
                "dh": dh.clone(),
            }
        )
    return out
