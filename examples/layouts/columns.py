"""Column vectors for one sequence, as on a blackboard, with the learner's own names:

    echo-rnn gradcheck --grads examples/layouts/columns.py:check

h_t = tanh(Whh h_{t-1} + Wxh x_t), yhat_t = why . h_t, J = sum_t (yhat_t - y_t)^2 / (2T).
"""

import numpy as np


def bptt(Whh, Wxh, why, x, y):
    """x, y: (T,); Whh (H, H), Wxh (H, 1), why (H,). Returns the gradients and dJ/dh_t."""
    T, H = len(x), len(why)
    h = np.zeros((T + 1, H))  # h[0] is h_0
    for t in range(1, T + 1):
        h[t] = np.tanh(Whh @ h[t - 1] + Wxh[:, 0] * x[t - 1])
    yhat = h[1:] @ why

    dWhh, dWxh, dwhy = np.zeros_like(Whh), np.zeros_like(Wxh), np.zeros_like(why)
    dh = np.zeros((T, H))
    dh_next = np.zeros(H)
    for t in range(T, 0, -1):
        dy = (yhat[t - 1] - y[t - 1]) / T
        dwhy += dy * h[t]
        dh[t - 1] = dy * why + dh_next
        dz = dh[t - 1] * (1 - h[t] ** 2)
        dWhh += np.outer(dz, h[t - 1])
        dWxh[:, 0] += dz * x[t - 1]
        dh_next = Whh.T @ dz
    return {"dWhh": dWhh, "dWxh": dWxh, "dwhy": dwhy, "dh": dh}


# the wrapper: the contract's U, V, w are this file's Whh, Wxh, why
from echo_rnn.layouts import columns  # noqa: E402

check = columns(bptt, U="Whh", V="Wxh", w="why")
