"""Running a trained model from a checkpoint on a bit string."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from echo_rnn.checkpoint import CheckpointError, load_checkpoint
from echo_rnn.config import ConfigError, TrainConfig
from echo_rnn.model import EchoRNN, model_from_config


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[EchoRNN, TrainConfig]:
    """The model a checkpoint holds, in eval mode, with the config it was trained with."""
    state = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(state["config"], recorded=True)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path} has a config this echo-rnn cannot use: {exc}") from None
    model = model_from_config(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: its weights do not fit its config: {first}") from None
    return model.to(device).eval(), config


# The longest input predicted: the forward pass steps through time, about 20 us a bit on a
# CPU, so 100000 bits take about 2 s (and print a line each); the text read for them may
# hold whitespace besides (a few characters a bit), and no more is read.
MAX_BITS = 100_000
MAX_TEXT = 4 * MAX_BITS


def read_bits(stream) -> str:
    """At most MAX_TEXT characters of ``stream`` (stdin): ValueError if it holds more."""
    text = stream.read(MAX_TEXT + 1)
    if len(text) > MAX_TEXT:
        raise ValueError(f"must be at most {MAX_BITS} bits (and {MAX_TEXT} characters with "
                         "whitespace), got more")
    return text


def parse_bits(text: str) -> torch.Tensor:
    """``"0110"`` -> ``tensor([[0., 1., 1., 0.]])`` of shape (1, T); whitespace is ignored.

    Raises:
        ValueError: naming the first character that is not 0 or 1, or too many bits.
    """
    if len(text) > MAX_TEXT:
        raise ValueError(f"must be at most {MAX_BITS} bits, got {len(text)} characters")
    bits = "".join(text.split())
    if not bits:
        raise ValueError("must hold at least one 0 or 1, got nothing")
    bad = re.search(r"[^01]", bits)
    if bad:
        raise ValueError(f"must contain only 0 and 1, got {bad.group()!r} at position "
                         f"{bad.start()}")
    if len(bits) > MAX_BITS:
        raise ValueError(f"must be at most {MAX_BITS} bits, got {len(bits)}")
    return torch.tensor([[float(c) for c in bits]])


@torch.no_grad()
def predict(model: EchoRNN, x: torch.Tensor) -> torch.Tensor:
    """``y_hat`` (B, T) for bits ``x`` (B, T)."""
    x = x.to(device=model.U.device, dtype=model.U.dtype)
    return model(x)[0]
