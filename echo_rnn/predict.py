"""Running a trained model from a checkpoint on a bit string."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from echo_rnn.config import ConfigError, TrainConfig
from echo_rnn.model import EchoRNN, model_from_config
from echo_rnn.run.checkpoint import CheckpointError, load_checkpoint


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
        raise ValueError(
            f"must be at most {MAX_BITS} bits (and {MAX_TEXT} characters with whitespace), got more"
        )
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
        raise ValueError(
            f"must contain only 0 and 1, got {bad.group()!r} at position {bad.start()}"
        )
    if len(bits) > MAX_BITS:
        raise ValueError(f"must be at most {MAX_BITS} bits, got {len(bits)}")
    return torch.tensor([[float(c) for c in bits]])


@torch.no_grad()
def predict(model: EchoRNN, x: torch.Tensor) -> torch.Tensor:
    """``y_hat`` (B, T) for bits ``x`` (B, T)."""
    x = x.to(device=model.U.device, dtype=model.U.dtype)
    return model(x)[0]


@dataclass
class Echo:
    """One sequence's prediction, as ``echo-rnn predict`` shows it: the input bits, the
    echo the model predicts (outputs above 0.5 read as 1), the echo it should predict, and
    the output at every step."""

    echo_step: int
    input: str
    echo: str
    expected: str
    output: list[float]

    @classmethod
    def of(cls, model: EchoRNN, x: torch.Tensor, echo_step: int) -> Echo:
        """The prediction for the first sequence of ``x`` (B, T)."""
        y_hat = predict(model, x)[0].cpu().tolist()
        bits_in = "".join(str(int(v)) for v in x[0].tolist())
        return cls(
            echo_step,
            bits_in,
            "".join("1" if v > 0.5 else "0" for v in y_hat),
            ("0" * echo_step + bits_in)[: len(bits_in)],
            y_hat,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"input      {self.input}",
            f"echo (k={self.echo_step}) {self.echo}",
            f"expected   {self.expected}",
            "   t  x  y_hat",
        ]
        # t = 1..T, as the README and the docstrings count time
        lines += [
            f"{t:>4d}  {xi}  {yi:+.4f}"
            for t, (xi, yi) in enumerate(zip(self.input, self.output), start=1)
        ]
        return "\n".join(lines)
