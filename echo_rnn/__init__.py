"""echo-rnn: a vanilla tanh RNN on the binary echo task, with hand-written BPTT beside autograd.

Shape vocabulary, used in every docstring of the package:

    B  batch size        T  sequence length (time)
    I  input size        H  hidden size

The notation, one for the whole project (code, docstrings and README): the math of one
sequence in column vectors, steps t = 1..T, h_0 given (zeros by default)::

    z_t = U h_{t-1} + V x_t [+ b]      U: (H, H), V: (H, I), b: (H,)
    h_t = tanh(z_t)
    yhat_t = w . h_t                    w: (H,)

and the cost J = ``sum_t (yhat_t - y_t)^2 / (2T)``, averaged over the batch. Code holds the B
sequences of a batch as the rows of (B, H) tensors, so ``U h_{t-1}`` is ``h_prev @ U.T`` and
a gradient ``U^T dJ/dz_t`` is ``dz @ U``. Truncated BPTT follows one rule
(``echo_rnn.truncation``); the mapping to ``torch.nn.RNN`` is ``echo_rnn.model.to_nn_rnn``'s.
"""

__all__ = [
    "EchoRNN",
    "TrainConfig",
    "train",
    "bit_accuracy",
    "check_grads",
    "echo_loss",
    "make_echo_batch",
    "manual_grads",
    "record_dh",
]
__version__ = "0.1.0"

# Imported on first use, not with the package: ``echo-rnn`` reaches its signal handling
# before torch (a second or two to import) is loaded.
_WHERE = {
    "EchoRNN": "model",
    "TrainConfig": "config",
    "train": "engine.train",
    "bit_accuracy": "model",
    "echo_loss": "model",
    "make_echo_batch": "data",
    "manual_grads": "compare",
    "check_grads": "learner",
    "record_dh": "layouts",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"echo_rnn.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'echo_rnn' has no attribute {name!r}")
