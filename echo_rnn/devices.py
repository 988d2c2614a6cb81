"""Turning a device name from the user into a ``torch.device``, with errors that say why."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def memory_bytes(device: torch.device) -> int:
    """The memory a run on ``device`` can use at most: the GPU's total memory, or on the CPU
    the machine's physical memory, capped by a cgroup limit where one is set (containers)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**29 else f"{nbytes / 2**20:.0f} MiB"


def rnn_bytes(B: int, T: int, H: int, I: int = 1, itemsize: int = 4) -> int:
    """A generous estimate of the memory one training step of the echo RNN needs: the
    autograd graph keeps about four (B, T, H) tensors, the gradient check on the same batch
    as many again, plus the inputs and the targets; and twelve copies of the weights: the
    weights, their gradients and Adam's two states, the kernel-vs-autograd check's second
    set of gradients and its float64 comparison, a checkpoint's serialized copy and the
    histograms' (measured: a run at H = 4096 grows by 10.5 weight-sized copies)."""
    return itemsize * (8 * B * T * H + 4 * B * T * (I + 1) + 12 * H * (H + I + 2))


def check_fits(need: int, device: torch.device, what: str) -> str | None:
    """None if ``need`` bytes fit on ``device``, else the reason in words, starting with
    ``what`` (the sizes that ask for it)."""
    have = memory_bytes(device)
    if need <= have:
        return None
    where = "this GPU has" if device.type == "cuda" else "this machine has"
    return f"{what} would need about {gib(need)} of memory; {where} {gib(have)}"


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` and put the caller's count back afterwards: the
    curve depends on the count, and a library call must not change the process's."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
