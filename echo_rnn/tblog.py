"""What a run writes to TensorBoard beyond scalars: pictures of weights and sequences, and
hparams written into the run's own directory."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def heatmap_rgb(matrix: torch.Tensor | np.ndarray, cell: int = 16) -> np.ndarray:
    """A diverging heatmap with its colour scale, as an ``(height, width, 3)`` uint8 image:
    white at 0, red for positive, blue for negative, scaled by the largest magnitude so that
    structure (the delay line in a trained U) shows whatever the weights' scale. Beside it a
    colour bar labelled +max, 0 and -max; the canvas is at least 200 x 64 px, so that a
    column (V, H x 1) or a row (w) is drawn as square cells, not stretched to fill a card.
    Drawn with PIL, not matplotlib: it is logged at every evaluation and must stay light."""
    from PIL import Image, ImageDraw

    m = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    if m.dim() == 1:
        m = m.unsqueeze(0)  # (H,) -> (1, H): a row
    scale = m.abs().max().item() or 1.0
    cells = _diverging((m / scale).numpy()).repeat(cell, axis=0).repeat(cell, axis=1)
    rows, cols = cells.shape[:2]
    bar_h = max(rows, 64)
    width, height = max(cols + 90, 200), bar_h + 8
    img = Image.new("RGB", (width, height), "white")
    img.paste(Image.fromarray(cells), (4, 4))
    ramp = _diverging(np.linspace(1, -1, bar_h)[:, None]).repeat(12, axis=1)  # +max on top
    x0 = cols + 12
    img.paste(Image.fromarray(ramp), (x0, 4))
    draw, font = ImageDraw.Draw(img), _font()
    draw.rectangle((x0 - 1, 3, x0 + 12, 4 + bar_h), outline=(128, 128, 128))
    for text, y in ((f"+{scale:.3g}", 4), ("0", 4 + bar_h // 2 - 5), (f"-{scale:.3g}", bar_h - 6)):
        draw.text((x0 + 16, y), text, fill="black", font=font)
    return np.asarray(img)


def _diverging(v: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] -> uint8 RGB: blue, white, red."""
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


SEQUENCE_ROWS = ("input", "target", "prediction")


def sequence_rgb(x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor) -> np.ndarray:
    """One held-out sequence as three labelled rows of T cells (input, target, prediction),
    black = 1, white = 0, the prediction clipped to [0, 1], and the time axis below."""
    from PIL import Image, ImageDraw

    rows = torch.stack([x, y, y_hat.clamp(0, 1)]).detach().to("cpu", torch.float64).numpy()
    T = rows.shape[1]
    cw = max(2, min(12, 900 // T))  # cell width: a long sequence stays on one screen
    ch, left, top = 14, 72, 4
    gray = ((1 - rows) * 255).round().astype(np.uint8)
    img = Image.new("RGB", (left + T * cw + 8, top + 3 * (ch + 3) + 16), "white")
    draw, font = ImageDraw.Draw(img), _font()
    for i, label in enumerate(SEQUENCE_ROWS):
        y0 = top + i * (ch + 3)
        strip = np.repeat(np.repeat(gray[i][None, :], ch, axis=0), cw, axis=1)
        img.paste(Image.fromarray(strip).convert("RGB"), (left, y0))
        draw.rectangle((left - 1, y0 - 1, left + T * cw, y0 + ch), outline=(160, 160, 160))
        draw.text((4, y0 + 1), label, fill="black", font=font)
    ty = top + 3 * (ch + 3) + 2
    draw.text((left, ty), "t = 0", fill="black", font=font)
    end = f"t = {T - 1}"
    draw.text((left + T * cw - 6 * len(end), ty), end, fill="black", font=font)
    return np.asarray(img)


FLOW_TAG = "gradient flow through time"


def flow_rgb(norms: torch.Tensor | np.ndarray, width: int = 360, height: int = 150) -> np.ndarray:
    """||dJ/dh_t|| against t = 1..T on a log scale, as an ``(height, width, 3)`` uint8 image:
    the curve, the decades it spans marked on the left, t = 1 and t = T below. Drawn with
    PIL, not matplotlib: it is logged at every evaluation and must stay light (the plot a
    person reads, ``gradcheck --plot``, is matplotlib's: :func:`echo_rnn.flow.plot_flow`)."""
    from PIL import Image, ImageDraw

    v = torch.as_tensor(norms).detach().to("cpu", torch.float64)
    T = v.numel()
    pos = v[v > 0]
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), _font()
    left, right, top, bottom = 48, width - 8, 16, height - 18
    draw.text((left, 2), "||dJ/dh_t|| (log scale)", fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    draw.text((left, bottom + 3), "t = 1", fill="black", font=font)
    end = f"t = {T}"
    draw.text((right - 6 * len(end), bottom + 3), end, fill="black", font=font)
    if pos.numel() == 0:
        return np.asarray(img)
    lo, hi = math.floor(pos.min().log10().item()), math.ceil(pos.max().log10().item())
    hi = max(hi, lo + 1)

    def xy(t: int, value: float) -> tuple[float, float]:  # t = 1..T, value > 0
        x = left + (right - left) * ((t - 1) / max(T - 1, 1))
        return x, bottom - (bottom - top) * (math.log10(value) - lo) / (hi - lo)

    for decade in (lo, hi):
        y = xy(1, 10.0 ** decade)[1]
        draw.text((2, y - 5), f"1e{decade}", fill="black", font=font)
    points = [xy(t + 1, val) for t, val in enumerate(v.tolist()) if val > 0]
    if len(points) == 1:
        draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2),
                     fill=(31, 119, 180))
    else:
        draw.line(points, fill=(31, 119, 180), width=2)
    return np.asarray(img)


# The settings that tell runs apart, first in TensorBoard's HParams table, in this order;
# the rest of the config follows in its own order.
HPARAMS_FIRST = ("echo_step", "hidden_size", "seq_len", "bias", "lr", "optimizer", "batch_size",
                 "seed", "backend", "preset", "curriculum", "orthogonal_gain", "input_init_std",
                 "init_std", "grad_clip", "truncate", "schedule", "steps")


def write_hparams(
    writer: SummaryWriter, config: dict[str, Any], metrics: dict[str, float], step: int,
    trial: str,
) -> None:
    """hparams into the writer's own directory (``SummaryWriter.add_hparams`` would open a
    second run next to it), with their types (torch's ``hparams`` records a bool as the
    number 0.0), the important settings first, and ``trial`` as the trial's name."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.compat.proto.summary_pb2 import Summary

    names = [k for k in HPARAMS_FIRST if k in config] + [k for k in config if k not in HPARAMS_FIRST]
    # None (an unset optional setting) is shown as the word, so every run has every column
    values = {k: ("none" if config[k] is None else config[k]) for k in names}
    values = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in values.items()}
    experiment = hp.hparams_config_pb(
        hparams=[hp.HParam(k) for k in names],
        metrics=[hp.Metric(f"hparam/{k}") for k in metrics])
    start = hp.hparams_pb(values, trial_id=trial)
    end_data = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS),
        version=metadata.PLUGIN_DATA_VERSION)
    end = Summary(value=[Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(end_data))])
    fw = writer._get_file_writer()
    for summary in (experiment, start, end):
        fw.add_summary(summary)
    for k, v in metrics.items():
        writer.add_scalar(f"hparam/{k}", v, step)
