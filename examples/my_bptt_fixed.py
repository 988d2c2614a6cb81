"""examples/my_bptt.py with its two mistakes fixed, each marked "fixed:" below:

    echo-rnn gradcheck --grads examples/my_bptt_fixed.py:bptt      # all gradients agree

The model: h_t = tanh(U h_{t-1} + V x_t), yhat_t = w . h_t, h_0 = 0, and the cost
J = sum_t (yhat_t - y_t)^2 / (2T). Column vectors, as on a blackboard.
"""

import numpy as np


def bptt(U, V, w, x, y):
    """Gradients of J for one sequence: x, y are (T,); U (H, H), V (H, 1), w (H,)."""
    T, H = len(x), len(w)
    h = np.zeros((T + 1, H))  # h[0] is h_0, h[t] is h_t
    yhat = np.zeros(T)
    for t in range(1, T + 1):
        h[t] = np.tanh(U @ h[t - 1] + V[:, 0] * x[t - 1])
        yhat[t - 1] = w @ h[t]

    dU, dV, dw = np.zeros_like(U), np.zeros_like(V), np.zeros_like(w)
    dh = np.zeros((T, H))  # dJ/dh_t, returned so that echo-rnn can show where it goes wrong
    dh_next = np.zeros(H)  # the gradient carried back from step t + 1
    for t in range(T, 0, -1):
        dyhat = (yhat[t - 1] - y[t - 1]) / T
        dw += dyhat * h[t]  # fixed: yhat_t = w . h_t, so h_t, not h_{t-1} (off-by-one)
        dh[t - 1] = dyhat * w + dh_next
        dz = dh[t - 1] * (1 - h[t] ** 2)
        dU += np.outer(dz, h[t - 1])
        dV[:, 0] += dz * x[t - 1]
        dh_next = U.T @ dz  # fixed: z_t = U h_{t-1} carries back through U^T (carry-transposed)
    return {"U": dU, "V": dV, "w": dw, "dh": dh}
