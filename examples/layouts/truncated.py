"""Truncated BPTT as a well-known tutorial writes it: each output's gradient flows back at
most bptt_truncate steps. Column vectors, one sequence, the tutorial's names (U input to
hidden, W hidden to hidden, V hidden to output) and its loss head (delta_o = o - y):

    echo-rnn gradcheck --grads examples/layouts/truncated.py:check                # says so
    echo-rnn gradcheck --grads examples/layouts/truncated.py:check --truncate 4 --truncation back
"""

import numpy as np

bptt_truncate = 4


def bptt(U, V, W, x, y):
    """x, y: (T,); U (H, 1), V (H,), W (H, H). Returns [dLdU, dLdV, dLdW]."""
    T, H = len(x), W.shape[0]
    s = np.zeros((T + 1, H))  # s[-1] is the initial state, zeros
    o = np.zeros(T)
    for t in np.arange(T):
        s[t] = np.tanh(U[:, 0] * x[t] + W.dot(s[t - 1]))
        o[t] = V.dot(s[t])
    dLdU, dLdV, dLdW = np.zeros(U.shape), np.zeros(V.shape), np.zeros(W.shape)
    delta_o = o - y
    for t in np.arange(T)[::-1]:
        dLdV += delta_o[t] * s[t]
        delta_t = V * delta_o[t] * (1 - (s[t] ** 2))
        for bptt_step in np.arange(max(0, t - bptt_truncate), t + 1)[::-1]:
            dLdW += np.outer(delta_t, s[bptt_step - 1])
            dLdU[:, 0] += delta_t * x[bptt_step]
            delta_t = W.T.dot(delta_t) * (1 - s[bptt_step - 1] ** 2)
    return [dLdU, dLdV, dLdW]


# the wrapper: the tutorial's names, its list, its loss head
from echo_rnn.layouts import columns  # noqa: E402

check = columns(bptt, U="W", V="U", w="V", returns=("U", "V", "W"), dy="yhat - y")
