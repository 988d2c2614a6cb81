"""Which kernel trains a run: ``--backend``'s choices and what ``auto`` picks.

- ``compiled``: the compiled CPU kernel (:mod:`echo_rnn.kernels.compiled`): the whole training
  step in one call, the same bits on any CPU. What ``auto`` picks on a CPU.
- ``bptt``: the hand-written BPTT kernel in PyTorch ops (:mod:`echo_rnn.kernels.bptt`): any device,
  the GPU path; what ``auto`` picks where the compiled kernel cannot train the run.
- ``autograd``: PyTorch's autograd on the same forward: the witness.
"""

from __future__ import annotations

import sys

import torch

from echo_rnn.errors import ConfigError
from echo_rnn.kernels import compiled

_said: set[str] = set()


def compiled_unfit(config, device: torch.device, data_parallel: bool = False) -> str | None:
    """Why the compiled kernel cannot train ``config`` on ``device`` (None: it can);
    ``data_parallel``: the run is one of torchrun's ranks."""
    if not compiled.AVAILABLE:
        return compiled.UNAVAILABLE_REASON
    if data_parallel:
        return "it trains in one process, and this run is split over torchrun's ranks"
    if device.type != "cpu":
        return f"it runs on the CPU, and this run is on {device}"
    if config.schedule != "batch":
        return "it trains --schedule batch only (the notebook's schedule is the torch kernels')"
    return None


def check_backend(config, device: torch.device, data_parallel: bool = False) -> None:
    """Refuse ``--backend compiled`` where it cannot train (a usage error, before anything
    is written)."""
    if config.backend == "compiled":
        reason = compiled_unfit(config, device, data_parallel)
        if reason:
            raise ConfigError(
                "backend",
                f"compiled cannot train this run: {reason}; --backend bptt or autograd can",
            )


def training_backend(config, device: torch.device, data_parallel: bool = False) -> str:
    """The kernel that trains ``config`` on ``device``: its ``--backend``, with ``auto``
    resolved (the compiled kernel where it can, else bptt; a run on a CPU that falls back
    because the extension is not built says so once, on stderr)."""
    if config.backend != "auto":
        return config.backend
    reason = compiled_unfit(config, device, data_parallel)
    if reason is None:
        return "compiled"
    if not compiled.AVAILABLE and reason not in _said:
        _said.add(reason)
        print(f"echo-rnn: {reason}; the bptt kernel trains instead", file=sys.stderr)
    return "bptt"


def torch_backend(config) -> str:
    """The torch kernel an :class:`~echo_rnn.model.EchoRNN` of ``config`` computes with
    (its pictures and comparisons when the compiled kernel trains it)."""
    return "autograd" if config.backend == "autograd" else "bptt"
