"""The batch in the middle, (n_x, m, T_x), as a well-known course notebook lays it out:

    echo-rnn gradcheck --grads examples/layouts/batch_middle.py:check --batch-size 3 --bias

a<t> = tanh(Waa a<t-1> + Wax x<t> + ba), yhat<t> = Wya a<t>; each of the m examples is a
column of (n_a, m) arrays.
"""

import numpy as np


def rnn_bptt(Waa, Wax, Wya, x, y, ba=None):
    """x (n_x, m, T_x), y (1, m, T_x); Waa (n_a, n_a), Wax (n_a, n_x), Wya (1, n_a),
    ba (n_a, 1) or None. Returns the gradients and da (n_a, m, T_x), dJ/da<t>."""
    n_x, m, T_x = x.shape
    n_a = Waa.shape[0]
    ba_given, ba = ba is not None, np.zeros((n_a, 1)) if ba is None else ba
    a = np.zeros((n_a, m, T_x + 1))  # a[:, :, 0] is a<0>
    for t in range(T_x):
        a[:, :, t + 1] = np.tanh(Waa @ a[:, :, t] + Wax @ x[:, :, t] + ba)
    yhat = np.einsum("ya,amt->ymt", Wya, a[:, :, 1:])  # (1, m, T_x)

    dWaa, dWax, dWya, dba = (np.zeros_like(p) for p in (Waa, Wax, Wya, ba))
    da = np.zeros((n_a, m, T_x))
    da_next = np.zeros((n_a, m))
    dy = (yhat - y) / (m * T_x)
    for t in reversed(range(T_x)):
        dWya += dy[:, :, t] @ a[:, :, t + 1].T
        da[:, :, t] = Wya.T @ dy[:, :, t] + da_next
        dz = da[:, :, t] * (1 - a[:, :, t + 1] ** 2)
        dWaa += dz @ a[:, :, t].T
        dWax += dz @ x[:, :, t].T
        dba += dz.sum(axis=1, keepdims=True)
        da_next = Waa.T @ dz
    grads = {"dWaa": dWaa, "dWax": dWax, "dWya": dWya, "da": da}
    if ba_given:
        grads["dba"] = dba
    return grads


# the wrapper: the notebook's names, and its layout
from echo_rnn.layouts import batch_middle  # noqa: E402

check = batch_middle(rnn_bptt, U="Waa", V="Wax", w="Wya", b="ba", dh="da")
