"""A backward with its loss head fused in: it starts from dy = yhat - y, the gradient of
sum_t (yhat_t - y_t)^2 / 2, rather than from J's (yhat_t - y_t) / T:

    echo-rnn gradcheck --grads examples/layouts/loss_head.py:check
"""

import numpy as np


def bptt(U, V, w, x, y):
    """x, y: (T,); U (H, H), V (H, 1), w (H,)."""
    T, H = len(x), len(w)
    h = np.zeros((T + 1, H))
    for t in range(1, T + 1):
        h[t] = np.tanh(U @ h[t - 1] + V[:, 0] * x[t - 1])
    yhat = h[1:] @ w
    dy = yhat - y  # the loss head: no 1/T, the loss is a sum over the steps

    dU, dV, dw = np.zeros_like(U), np.zeros_like(V), np.zeros_like(w)
    dh_next = np.zeros(H)
    for t in range(T, 0, -1):
        dw += dy[t - 1] * h[t]
        dz = (dy[t - 1] * w + dh_next) * (1 - h[t] ** 2)
        dU += np.outer(dz, h[t - 1])
        dV[:, 0] += dz * x[t - 1]
        dh_next = U.T @ dz
    return {"U": dU, "V": dV, "w": dw}


# the wrapper: the gradients are of the sum, T times J's
from echo_rnn.layouts import loss_head  # noqa: E402

check = loss_head(bptt, dy="yhat - y")
