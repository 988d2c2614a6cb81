"""Row vectors with h @ Wh, as most course code and every framework writes them:

    echo-rnn gradcheck --grads examples/layouts/rows.py:check --batch-size 4 --input-size 2 --bias

h_t = tanh(h_{t-1} @ Wh + x_t @ Wx + b), yhat_t = h_t @ Wy, for N sequences at once: the
states are the rows of (N, H) arrays. Wh = U^T, Wx = V^T (D, H) in the contract's notation.
"""

import numpy as np


def rnn_bptt(Wh, Wx, Wy, x, y, b=None):
    """x (N, T, D), y (N, T); Wh (H, H), Wx (D, H), Wy (H,), b (H,) or None."""
    N, T, D = x.shape
    H = Wh.shape[0]
    b_given, b = b is not None, np.zeros(H) if b is None else b
    h = np.zeros((N, T + 1, H))  # h[:, 0] is h_0
    for t in range(T):
        h[:, t + 1] = np.tanh(h[:, t] @ Wh + x[:, t] @ Wx + b)
    yhat = h[:, 1:] @ Wy  # (N, T)

    dWh, dWx, dWy, db = np.zeros_like(Wh), np.zeros_like(Wx), np.zeros_like(Wy), np.zeros(H)
    dh_all = np.zeros((N, T, H))
    dnext = np.zeros((N, H))
    dy = (yhat - y) / (N * T)
    for t in reversed(range(T)):
        dWy += h[:, t + 1].T @ dy[:, t]
        dh = dy[:, t, None] * Wy + dnext  # from the loss at t, and carried back from t + 1
        dh_all[:, t] = dh
        dz = dh * (1 - h[:, t + 1] ** 2)
        dWh += h[:, t].T @ dz
        dWx += x[:, t].T @ dz
        db += dz.sum(0)
        dnext = dz @ Wh.T
    grads = {"Wh": dWh, "Wx": dWx, "Wy": dWy, "dh": dh_all}
    if b_given:
        grads["b"] = db
    return grads


# the wrapper: Wh = U^T, Wx = V^T, passed and returned in this file's orientation
from echo_rnn.layouts import rows  # noqa: E402

check = rows(rnn_bptt, U="Wh", V="Wx", w="Wy")
