"""Turning a device name from the user into a ``torch.device``, with errors that say why."""

from __future__ import annotations

import re

import torch

DEVICE_HELP = "auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N|mps`` to an available ``torch.device``.

    Raises:
        ValueError: for an unknown name or a device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device(name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' asked for, but MPS is not available here")
        return torch.device("mps")
    raise ValueError(f"unknown device {name!r}: valid are {DEVICE_HELP}")


DTYPES = {"float32": torch.float32, "float64": torch.float64}
