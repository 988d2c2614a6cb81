"""What a run writes to TensorBoard beyond scalars: pictures of weights and sequences, and
hparams written into the run's own directory."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


def heatmap_rgb(matrix: torch.Tensor | np.ndarray, cell: int = 16) -> np.ndarray:
    """A diverging heatmap as an ``(rows*cell, cols*cell, 3)`` uint8 image: white at 0, red
    for positive, blue for negative, scaled by the largest magnitude so that structure (the
    delay line in a trained U) shows whatever the weights' scale."""
    m = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    if m.dim() == 1:
        m = m.unsqueeze(0)  # (H,) -> (1, H): a row
    scale = m.abs().max().item() or 1.0
    v = (m / scale).numpy()
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)  # (rows, cols, 3)
    rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    return rgb.repeat(cell, axis=0).repeat(cell, axis=1)


def sequence_rgb(x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor, cell: int = 8) -> np.ndarray:
    """One held-out sequence as three rows of T cells (input, target, prediction), black = 1,
    white = 0; the prediction is clipped to [0, 1]. A 1-pixel gap separates the rows."""
    rows = torch.stack([x, y, y_hat.clamp(0, 1)]).detach().to("cpu", torch.float64).numpy()
    gray = ((1 - rows) * 255).round().astype(np.uint8)  # (3, T)
    img = gray.repeat(cell, axis=0).repeat(cell, axis=1)  # (3*cell, T*cell)
    gap = np.full((1, img.shape[1]), 128, np.uint8)
    parts = [img[i * cell:(i + 1) * cell] for i in range(3)]
    img = np.concatenate([parts[0], gap, parts[1], gap, parts[2]])
    return np.repeat(img[:, :, None], 3, axis=2)


def write_hparams(
    writer: SummaryWriter, config: dict[str, Any], metrics: dict[str, float], step: int
) -> None:
    """hparams into the writer's own directory (``SummaryWriter.add_hparams`` would open a
    second run next to it)."""
    hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
    exp, ssi, sei = hparams(hp, {f"hparam/{k}": v for k, v in metrics.items()})
    fw = writer._get_file_writer()
    for summary in (exp, ssi, sei):
        fw.add_summary(summary)
    for k, v in metrics.items():
        writer.add_scalar(f"hparam/{k}", v, step)
