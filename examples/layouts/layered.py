"""Layered code, as a well-known course writes its RNN: step functions with a cache, a
forward and a backward over time, row vectors (N, T, D) and h @ Wh:

    echo-rnn gradcheck --grads examples/layouts/layered.py:check --per-step

The backward never sees dJ/dh_t as one array: it is what rnn_step_backward is handed at
each step, which the wrapper records (record_dh) without changing the loop.
"""

import numpy as np


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """x (N, D), prev_h (N, H) -> next_h (N, H), cache."""
    next_h = np.tanh(prev_h @ Wh + x @ Wx + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """dnext_h (N, H), dJ/dh_t -> dx, dprev_h, dWx, dWh, db."""
    x, prev_h, Wx, Wh, next_h = cache
    dz = dnext_h * (1 - next_h ** 2)
    return dz @ Wx.T, dz @ Wh.T, x.T @ dz, prev_h.T @ dz, dz.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H) -> h (N, T, H), caches."""
    N, T, _ = x.shape
    h, caches, prev = np.zeros((N, T, h0.shape[1])), [], h0
    for t in range(T):
        prev, cache = rnn_step_forward(x[:, t], prev, Wx, Wh, b)
        h[:, t] = prev
        caches.append(cache)
    return h, caches


def rnn_backward(dh, caches):
    """dh (N, T, H), the gradient arriving from the loss at each step (not the one carried
    back across time) -> dx, dh0, dWx, dWh, db."""
    N, T, H = dh.shape
    x, _, Wx, Wh, _ = caches[0]
    dx, dWx, dWh, db = np.zeros((N, T, x.shape[1])), np.zeros_like(Wx), np.zeros_like(Wh), \
        np.zeros(H)
    dprev = np.zeros((N, H))
    for t in reversed(range(T)):
        dx[:, t], dprev, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dprev, caches[t])
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return dx, dprev, dWx, dWh, db


def loss(x, y, Wx, Wh, Wy, b=None):
    """The echo cost and its gradients: x (N, T, D), y (N, T), Wy (H,)."""
    N, T, _ = x.shape
    H = Wh.shape[0]
    h, caches = rnn_forward(x, np.zeros((N, H)), Wx, Wh, np.zeros(H) if b is None else b)
    yhat = h @ Wy
    dy = (yhat - y) / (N * T)
    _, _, dWx, dWh, db = rnn_backward(dy[:, :, None] * Wy, caches)
    grads = {"Wx": dWx, "Wh": dWh, "Wy": np.einsum("nt,nth->h", dy, h)}
    if b is not None:
        grads["b"] = db
    return grads


# the wrapper: row vectors, and dJ/dh_t recorded from rnn_step_backward
from echo_rnn.layouts import rows  # noqa: E402

check = rows(loss, U="Wh", V="Wx", w="Wy", record_dh="rnn_step_backward")
