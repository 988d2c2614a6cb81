"""Parameters as module globals and a training script in the same file, as a famous
character-level RNN script is written (its script part under `if __name__ == "__main__":`,
so that importing the file only defines things):

    echo-rnn gradcheck --grads examples/layouts/module_globals.py:check
"""

import numpy as np

hidden_size = 6
Wxh = np.random.randn(hidden_size, 1) * 0.1  # input to hidden
Whh = np.random.randn(hidden_size, hidden_size) * 0.1  # hidden to hidden
Why = np.random.randn(hidden_size) * 0.1  # hidden to output


def lossFun(inputs, targets, hprev):
    """inputs, targets: sequences of T numbers; hprev (H,) the initial state. Returns the
    loss, the gradients of the parameters and the last hidden state."""
    T = len(inputs)
    hs, ys, loss = {-1: np.copy(hprev)}, {}, 0.0
    for t in range(T):
        hs[t] = np.tanh(Wxh[:, 0] * inputs[t] + Whh @ hs[t - 1])
        ys[t] = Why @ hs[t]
        loss += (ys[t] - targets[t]) ** 2 / (2 * T)
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(T)):
        dy = (ys[t] - targets[t]) / T
        dWhy += dy * hs[t]
        dh = Why * dy + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dWxh[:, 0] += dhraw * inputs[t]
        dWhh += np.outer(dhraw, hs[t - 1])
        dhnext = Whh.T @ dhraw
    return loss, dWxh, dWhh, dWhy, hs[T - 1]


if __name__ == "__main__":  # the script: train on echoes of random bits
    hprev = np.zeros(hidden_size)
    for n in range(2000):
        x = np.random.randint(0, 2, 50).astype(float)
        loss, dWxh, dWhh, dWhy, hprev = lossFun(x, np.r_[0, 0, x[:-2]], hprev)
        for p, d in ((Wxh, dWxh), (Whh, dWhh), (Why, dWhy)):
            p -= 0.1 * d
        if n % 200 == 0:
            print(n, loss)


# the wrapper: the globals are set to the problem's parameters for the call
from echo_rnn.layouts import globals_of  # noqa: E402

check = globals_of(lossFun, U="Whh", V="Wxh", w="Why", args=("x", "y", "h0"),
                   returns=("loss", "dWxh", "dWhh", "dWhy", "hlast"))
