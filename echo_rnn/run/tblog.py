"""What a run writes to TensorBoard beyond scalars: pictures of weights and sequences, and
hparams written into the run's own directory."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

# Sizes for TensorBoard's image cards (about 300-450 px wide in the browser): an image is
# kept between these widths so it is neither shrunk into illegibility nor a speck on the card.
MIN_WIDTH, MAX_WIDTH = 300, 640
FONT_PX = 12  # reads at card size; PIL's built-in bitmap font (about 11 px) is the fallback
MATRIX_PX = 400  # the most pixels a weight matrix's longer side is drawn with
# TensorBoard's image cards show a picture at its own size up to their width and shrink a
# wider one: about 350 px in the Images dashboard, 335 to 370 in Time Series (1920 px
# window). A picture with text to read (the held-out sequence) stays this wide or less.
CARD_WIDTH = 330
_GRID = (160, 160, 160)
_CURVE = (31, 119, 180)
_ZERO = (230, 110, 0)  # zero gradient marks: orange, apart from the blue curve


@functools.lru_cache(maxsize=None)  # loading decodes a whole TrueType font: once a size
def _font(size: int = FONT_PX):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    """Width and height of ``text`` as drawn at (0, 0), offsets included, so that text placed
    with it ends where it is measured to end."""
    return _measured(text, font)


_PAD = 3


def _text(img, xy: tuple[float, float], text: str, fill, font) -> None:
    """``ImageDraw.Draw(img).text(xy, text, fill=fill, font=font)``, pixel for pixel, from a
    mask rendered once: a picture's labels are the same at every evaluation, and FreeType's
    rendering of them was half of a picture's cost."""
    from PIL import ImageDraw

    x, y = xy
    if x < 0 or y < 0:  # cut at the edge (no caller's is): PIL's own fonts differ in rounding
        ImageDraw.Draw(img).text(xy, text, fill=fill, font=font)
        return
    fx, fy = math.modf(x)[0], math.modf(y)[0]  # as PIL splits a position
    img.paste(fill, (int(x) - _PAD, int(y) - _PAD), _mask(text, font, fx, fy))


@functools.lru_cache(maxsize=4096)
def _mask(text: str, font, fx: float, fy: float):
    """``text`` drawn white on black at (fx, fy), fractions of a pixel, as PIL would draw it
    there, _PAD pixels in from each edge (a glyph's edge may reach out of its box): the alpha
    a label is pasted through."""
    from PIL import Image, ImageDraw

    w, h = _measured(text, font)
    mask = Image.new("L", (w + 2 * _PAD + 1, h + 2 * _PAD + 1), 0)
    ImageDraw.Draw(mask).text((_PAD + fx, _PAD + fy), text, fill=255, font=font)
    return mask


@functools.lru_cache(maxsize=4096)  # the same labels at every evaluation: lay each out once
def _measured(text: str, font) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return int(math.ceil(x1)), int(math.ceil(y1))


def axis_ticks(n: int, px_per_unit: float, min_gap_px: float) -> list[int]:
    """Tick values for an axis numbered 1..n whose consecutive units lie ``px_per_unit``
    pixels apart: always 1 and n (a reader wants where the axis starts and ends), and between
    them the multiples of a 1-2-5 step, the smallest step whose ticks lie ``min_gap_px`` or
    more apart, so that labels that wide never overlap; a multiple too close to 1 or n is
    left out rather than crowd them."""
    if n <= 1:
        return [1]
    step = 1
    while step * px_per_unit < min_gap_px:
        step = {1: 2, 2: 5, 5: 10}.get(int(str(step)[0]), 10) * 10 ** (len(str(step)) - 1)
    if (n - 1) * px_per_unit < min_gap_px:  # no room even for both ends: the start alone
        return [1]
    inner = [
        t
        for t in range(step, n, step)
        if (t - 1) * px_per_unit >= min_gap_px and (n - t) * px_per_unit >= min_gap_px
    ]
    return [1, *inner, n]


def _max_magnitude_pool(m: np.ndarray, f: int) -> np.ndarray:
    """``m`` (R, C) reduced to (ceil(R/f), ceil(C/f)), each entry the signed value of largest
    magnitude in its f x f block: a block average would cancel a sparse structure (a trained
    U's delay line: one large weight per row) into white, the largest magnitude keeps it.
    Done a band of blocks at a time, so the memory used is a few bands, not another R x C
    array (H = 4096 weights are logged at every evaluation)."""
    R, C = m.shape
    r, c = -(-R // f), -(-C // f)
    out = np.zeros((r, c), dtype=np.float64)
    band = max(1, (1 << 20) // max(C * f, 1))  # block rows per band: about 1M entries
    for b0 in range(0, r, band):
        b1 = min(r, b0 + band)
        chunk = np.asarray(m[b0 * f : b1 * f], dtype=np.float64)
        # zeros pad a ragged edge: they never win against a block's largest magnitude
        padded = np.zeros(((b1 - b0) * f, c * f))
        padded[: chunk.shape[0], :C] = chunk
        blocks = padded.reshape(b1 - b0, f, c, f)
        hi, lo = blocks.max(axis=(1, 3)), blocks.min(axis=(1, 3))
        out[b0:b1] = np.where(hi >= -lo, hi, lo)
    return out


def _largest_magnitude(m: np.ndarray) -> float:
    """max |m| a band of rows at a time (no |m| copy of a 4096 x 4096 matrix)."""
    big = 0.0
    step = max(1, (1 << 20) // max(m.shape[1], 1))
    for r0 in range(0, m.shape[0], step):
        band = m[r0 : r0 + step]
        big = max(big, float(band.max()), -float(band.min()))
    return big


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A CPU numpy view where possible: no float64 copy of a large weight matrix."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu")
        if values.dtype in (torch.bfloat16, torch.float16) or not values.is_floating_point():
            values = values.float()
        return values.numpy()
    return np.asarray(values)


def heatmap_rgb(matrix: torch.Tensor | np.ndarray, cell: int = 32) -> np.ndarray:
    """A diverging heatmap with its colour scale, as an ``(height, width, 3)`` uint8 image:
    white at 0, red for positive, blue for negative, scaled by the largest magnitude so that
    structure (the delay line in a trained U) shows whatever the weights' scale. Rows and
    columns are numbered 1..H as units are in the notes, a label on every unit when there is
    room and on every n-th when not (labels never overlap); the title says which axis is
    which; beside it a colour bar labelled +max, 0 and -max.

    ``cell`` is the largest cell side in pixels: a small matrix keeps square cells that size
    or smaller, a large one gets smaller cells so that its longer side fits ``MATRIX_PX``,
    and beyond one pixel a unit it is reduced, block by block, to the entry of largest
    magnitude before any picture is made: the image is bounded (about 300-640 px wide) and
    cheap to build whatever H is. Drawn with PIL, not matplotlib: it is logged at every
    evaluation and must stay light."""
    return _heatmap(matrix, cell)[0]


def _heatmap(
    matrix: torch.Tensor | np.ndarray, cell: int = 32
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """:func:`heatmap_rgb`'s image and where the matrix lies in it (x0, y0, x1, y1), for a
    test to find the cells."""
    from PIL import Image, ImageDraw

    m = _as_numpy(matrix)
    vector = m.ndim == 1
    if vector:
        m = m[None, :]  # (H,) -> (1, H): a row
    R, C = m.shape
    scale = (_largest_magnitude(m) if m.size else 0.0) or 1.0
    f = max(1, -(-max(R, C) // MATRIX_PX))  # units per pixel, the same along both axes
    small = _max_magnitude_pool(m, f) if f > 1 else np.asarray(m, dtype=np.float64)
    r, c = small.shape
    side = max(1, min(cell, MATRIX_PX // max(r, c)))  # square cells, as large as fit
    # a single row or column (w, b, V) is still drawn thick enough to see
    ch = side if r * side >= 12 else -(-12 // r)
    cw = side if c * side >= 12 else -(-12 // c)
    mat_w, mat_h = c * cw, r * ch

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font, small_font = _font(), _font(FONT_PX - 1)
    if vector or R == 1:
        title = [f"unit j = 1..{C}"]
    elif R == C:
        title = [f"rows: unit i = 1..{R}", f"columns: unit j = 1..{C}"]
    else:
        title = [f"rows: unit i = 1..{R}", f"columns: input j = 1..{C}"]
    if f > 1:
        title.append(f"each pixel: largest |w| of {f}x{f}")
    line_h = _text_size(probe, "Ag", font)[1] + 2
    label_w, label_h = _text_size(probe, str(max(R, C)), small_font)
    label_h = _text_size(probe, "0", small_font)[1]
    show_rows = not (vector or R == 1)
    left = 6 + (label_w + 4 if show_rows else 0)
    top = 4 + line_h * len(title) + label_h + 4
    bar_h = max(mat_h, 96)
    scale_labels = (f"+{scale:.3g}", "0", f"-{scale:.3g}")
    bar_x = left + mat_w + 12
    width = bar_x + 14 + max(_text_size(probe, s, small_font)[0] for s in scale_labels) + 6
    width = max(width, 8 + max(_text_size(probe, t, font)[0] for t in title))
    width = min(max(width, MIN_WIDTH), MAX_WIDTH)
    height = top + bar_h + 8

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for n, text in enumerate(title):
        _text(img, (6, 4 + n * line_h), text, fill="black", font=font)
    # nearest-neighbour upscaling of at most MATRIX_PX^2 pixels: the cells, never H*H*cell^2
    cells = Image.fromarray(_diverging(small / scale)).resize((mat_w, mat_h), Image.NEAREST)
    img.paste(cells, (left, top))
    draw.rectangle((left - 1, top - 1, left + mat_w, top + mat_h), outline=_GRID)
    tick_gap = label_w + 6
    for j in axis_ticks(C, mat_w / C, tick_gap):
        x = left + (j - 0.5) * mat_w / C
        tw = _text_size(probe, str(j), small_font)[0]
        tx = min(max(x - tw / 2, 2), width - tw - 2)
        _text(img, (tx, top - label_h - 3), str(j), fill="black", font=small_font)
        draw.line((x, top - 3, x, top - 1), fill=_GRID)
    if show_rows:
        for i in axis_ticks(R, mat_h / R, label_h + 2):
            y = top + (i - 0.5) * mat_h / R
            tw = _text_size(probe, str(i), small_font)[0]
            _text(img, (left - 4 - tw, y - label_h / 2 - 1), str(i), fill="black", font=small_font)

    ramp = _diverging(np.linspace(1, -1, bar_h)[:, None]).repeat(12, axis=1)  # +max on top
    img.paste(Image.fromarray(ramp), (bar_x, top))
    draw.rectangle((bar_x - 1, top - 1, bar_x + 12, top + bar_h), outline=_GRID)
    for text, y in zip(
        scale_labels, (top, top + bar_h / 2 - label_h / 2 - 1, top + bar_h - label_h - 2)
    ):
        _text(img, (bar_x + 16, y), text, fill="black", font=small_font)
    return np.asarray(img), (left, top, left + mat_w, top + mat_h)


def _diverging(v: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] -> uint8 RGB: blue, white, red."""
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


SEQUENCE_ROWS = ("input", "target", "prediction")


def _block_mean(rows: np.ndarray, f: int) -> np.ndarray:
    """(n, T) -> (n, ceil(T/f)): each column the mean of f steps (the last of fewer)."""
    n, T = rows.shape
    c = -(-T // f)
    sums = np.add.reduceat(rows, np.arange(0, T, f), axis=1)
    counts = np.diff(np.append(np.arange(0, T, f), T))
    return sums[:, :c] / counts


def sequence_rgb(x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor) -> np.ndarray:
    """One held-out sequence as three labelled rows of T cells (input, target, prediction),
    black = 1, white = 0, the prediction clipped to [0, 1] and so grey where it is between
    (a key below says so); the time axis numbered t = 1..T as in the notes, with ticks that
    never overlap. The picture is at most ``CARD_WIDTH`` pixels wide, so that TensorBoard
    shows it at its own size and its labels stay readable (it shrinks a wider picture into
    its card: at T = 50 a 477 px picture was drawn 370 px wide, its labels 8 px high): the
    time axis gets what the labels leave, a column per step as long as they fit, beyond
    that each column the mean of a block of steps (the image says how many); the key
    wraps to a second line where it does not fit on one."""
    from PIL import Image, ImageDraw

    rows = np.stack(
        [
            _as_numpy(x).astype(np.float64).reshape(-1),
            _as_numpy(y).astype(np.float64).reshape(-1),
            np.clip(_as_numpy(y_hat).astype(np.float64).reshape(-1), 0, 1),
        ]
    )
    T = rows.shape[1]

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font, small_font = _font(), _font(FONT_PX - 1)
    line_h = _text_size(probe, "Ag", font)[1] + 2
    left = 10 + max(_text_size(probe, s, font)[0] for s in SEQUENCE_ROWS)
    room = CARD_WIDTH - left - 10  # pixels for the time axis
    f = max(1, -(-T // room))
    if f > 1:
        rows = _block_mean(rows, f)
    cw = max(1, min(16, room // rows.shape[1]))  # cell width
    span = rows.shape[1] * cw  # pixels of the time axis; step t's cell is at (t-1)/f * cw
    ch, top = 16, 6
    width = min(max(left + span + 10, MIN_WIDTH), CARD_WIDTH)

    key = [
        ((0, 0, 0), "1"),
        ((255, 255, 255), "0"),
        ((140, 140, 140), "prediction between (clipped to [0, 1])"),
    ]
    key_lines: list[list[tuple[tuple[int, int, int], str, int]]] = [[]]
    kx = 4
    for colour, text in key:  # (colour, text, x) a line, a new line where one is full
        w = 18 + _text_size(probe, text, small_font)[0]
        if kx > 4 and kx + w > width - 4:
            key_lines.append([])
            kx = 4
        key_lines[-1].append((colour, text, kx))
        kx += w + 12
    note = f"each column: mean of {f} steps" if f > 1 else ""
    rows_bottom = top + 3 * (ch + 4)
    tick_y = rows_bottom + 4
    key_y = tick_y + line_h + 6
    height = key_y + line_h * len(key_lines) + (line_h if note else 0) + 6
    gray = ((1 - rows) * 255).round().astype(np.uint8)

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for i, label in enumerate(SEQUENCE_ROWS):
        y0 = top + i * (ch + 4)
        strip = Image.fromarray(gray[i][None, :]).resize((span, ch), Image.NEAREST)
        img.paste(strip.convert("RGB"), (left, y0))
        draw.rectangle((left - 1, y0 - 1, left + span, y0 + ch), outline=_GRID)
        _text(img, (4, y0 + 1), label, fill="black", font=font)

    px_per_step = span / T
    gap = _text_size(probe, str(T), small_font)[0] + 10
    _text(img, (4, tick_y), "time t", fill="black", font=font)
    for t in axis_ticks(T, px_per_step, gap):
        xt = left + (t - 0.5) * px_per_step
        tw = _text_size(probe, str(t), small_font)[0]
        tx = min(max(xt - tw / 2, left - 4), width - tw - 2)
        draw.line((xt, rows_bottom - 3, xt, rows_bottom + 1), fill="black")
        _text(img, (tx, tick_y), str(t), fill="black", font=small_font)

    for n, line in enumerate(key_lines):
        ky = key_y + n * line_h
        for colour, text, kx in line:
            draw.rectangle((kx, ky + 1, kx + 12, ky + 13), fill=colour, outline=(90, 90, 90))
            _text(img, (kx + 18, ky + 1), text, fill="black", font=small_font)
    if note:
        _text(img, (4, key_y + line_h * len(key_lines)), note, fill="black", font=small_font)
    return np.asarray(img)


FLOW_TAG = "training/gradient flow through time"


def _decade_label(d: int) -> str:
    return f"1e{d}"


def flow_rgb(norms: torch.Tensor | np.ndarray, width: int = 360, height: int = 150) -> np.ndarray:
    """||dJ/dh_t|| against t = 1..T on a log scale, as an ``(height, width, 3)`` uint8 image:
    the curve; a labelled log axis with a tick at every decade (every few, when they are
    many, so labels never overlap); t ticks along the bottom. A step whose norm is exactly 0
    has no place on a log scale and would vanish silently: it is marked with an orange
    triangle in a band of its own at the bottom edge (labelled 0 on the axis), and a note
    says how many there are. A T longer than the plot is wide is drawn as each pixel
    column's lowest and highest value. Drawn with PIL, not matplotlib: it is logged at every
    evaluation and must stay light (the plot a person reads, ``gradcheck --plot``, is
    matplotlib's: :func:`echo_rnn.flow.plot_flow`)."""
    from PIL import Image, ImageDraw

    v = _as_numpy(norms).astype(np.float64).reshape(-1)
    T = v.size
    positive = np.isfinite(v) & (v > 0)
    zero = v == 0
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small_font = _font(), _font(FONT_PX - 1)
    line_h = _text_size(draw, "Ag", font)[1] + 2
    label_h = _text_size(draw, "0", small_font)[1]

    title = "||dJ/dh_t|| over time (log scale)"
    note = ""
    if zero.any():
        n_zero = int(zero.sum())
        note = (
            f"= 0 at all {T} steps"
            if n_zero == T
            else f"= 0 at {n_zero} step{'s' if n_zero > 1 else ''}"
        )
    if positive.any():
        lo = math.floor(math.log10(v[positive].min()))
        hi = max(math.ceil(math.log10(v[positive].max())), lo + 1)
        decades = list(range(lo, hi + 1))
    else:  # nothing to place on a log scale: no decades to claim
        lo, hi, decades = 0, 1, []

    title_w = _text_size(draw, title, font)[0]
    note_w = 10 + _text_size(draw, note, small_font)[0] if note else 0
    two_lines = bool(note) and title_w + 16 + note_w > width - 8
    top = 4 + line_h * (2 if two_lines else 1) + 4
    bottom = height - label_h - 8
    # zeros get a band of their own under the log scale, so no curve is drawn over them
    log_bottom = bottom - (label_h + 8) if zero.any() else bottom
    need = 2 * (label_h + 3)  # two decade labels at least
    if log_bottom - top < need:
        raise ValueError(
            f"height {height} leaves {log_bottom - top} px for the plot at width {width}, "
            f"under the {need} its labels need; give a larger height"
        )
    ylabel = "||dJ/dh_t||"
    ylabel_w = _text_size(draw, ylabel, small_font)[1] + 2  # rotated: its height is its width
    tick_w = max(
        [_text_size(draw, _decade_label(d), small_font)[0] for d in decades]
        + [_text_size(draw, "0", small_font)[0]]
    )
    left = 2 + ylabel_w + 2 + tick_w + 4
    right = width - 8

    def triangle(x: float, y_base: float) -> list[tuple[float, float]]:
        return [(x - 3, y_base), (x + 3, y_base), (x, y_base - 6)]

    _text(img, (left, 4), title, fill="black", font=font)
    if note:
        nx, ny = (left, 4 + line_h) if two_lines else (width - 4 - note_w, 5)
        draw.polygon(triangle(nx + 3, ny + label_h + 1), fill=_ZERO)
        _text(img, (nx + 10, ny), note, fill=_ZERO, font=small_font)

    # y axis label, written upwards beside the decade labels
    tw, th = _text_size(draw, ylabel, small_font)
    label_img = Image.new("RGB", (tw, th + 1), "white")
    ImageDraw.Draw(label_img).text((0, 0), ylabel, fill="black", font=small_font)
    label_img = label_img.rotate(90, expand=True)
    img.paste(label_img, (2, int((top + bottom) / 2 - label_img.height / 2)))

    def y_of(log_value: np.ndarray | float):
        return log_bottom - (log_bottom - top) * (np.asarray(log_value) - lo) / (hi - lo)

    every = 1
    while decades and (log_bottom - top) / (hi - lo) * every < label_h + 3:
        every += 1
    for d in decades:
        if (d - lo) % every and d != hi:
            continue
        if (
            d == hi
            and (hi - lo) % every
            and (hi - lo) % every * (log_bottom - top) / (hi - lo) < label_h + 3
        ):
            continue  # the top decade would crowd the last one labelled
        y = float(y_of(d))
        if top < y < log_bottom:
            draw.line((left + 1, y, right - 1, y), fill=(228, 228, 228))
        draw.line((left - 3, y, left, y), fill="black")
        text = _decade_label(d)
        _text(
            img,
            (left - 5 - _text_size(draw, text, small_font)[0], y - label_h / 2 - 2),
            text,
            fill="black",
            font=small_font,
        )
    if zero.any():
        draw.line((left + 1, log_bottom + 3, right - 1, log_bottom + 3), fill=(228, 228, 228))
        _text(
            img,
            (left - 5 - _text_size(draw, "0", small_font)[0], bottom - 5 - label_h / 2 - 2),
            "0",
            fill=_ZERO,
            font=small_font,
        )
    draw.rectangle((left, top, right, bottom), outline=_GRID)

    span = right - left

    def x_of(t: np.ndarray | float):  # t = 1..T
        return left + span * (np.asarray(t, dtype=np.float64) - 1) / max(T - 1, 1)

    gap = _text_size(draw, str(T), small_font)[0] + 10
    draw.text(
        (left - 8 - _text_size(draw, "t", small_font)[0], bottom + 4),
        "t",
        fill="black",
        font=small_font,
    )
    for t in axis_ticks(T, span / max(T - 1, 1), gap):
        xt = float(x_of(t))
        text = str(t)
        w = _text_size(draw, text, small_font)[0]
        draw.line((xt, bottom, xt, bottom + 3), fill="black")
        _text(
            img,
            (min(max(xt - w / 2, left - 2), width - w - 2), bottom + 4),
            text,
            fill="black",
            font=small_font,
        )

    t_all = np.arange(1, T + 1)
    if zero.any():
        for xz in np.unique(np.round(x_of(t_all[zero])).astype(int)).tolist():  # one a column
            draw.polygon(triangle(xz, bottom - 2), fill=_ZERO)
    if not positive.any():
        return np.asarray(img)
    t_pos, log_pos = t_all[positive], np.log10(v[positive])
    if len(t_pos) == 1:
        x, y = float(x_of(t_pos[0])), float(y_of(log_pos[0]))
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=_CURVE)
    elif len(t_pos) <= 2 * span:
        draw.line(list(zip(x_of(t_pos).tolist(), y_of(log_pos).tolist())), fill=_CURVE, width=2)
    else:  # more steps than pixels: each column's range, not a million-point line
        col = np.round(x_of(t_pos)).astype(int)
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        low = y_of(np.minimum.reduceat(log_pos, starts)).tolist()
        high = y_of(np.maximum.reduceat(log_pos, starts)).tolist()
        points = []
        for x, a, b in zip(col[starts].tolist(), low, high):
            points += [(x, a), (x, b)]
        draw.line(points, fill=_CURVE, width=2)
    return np.asarray(img)


def custom_scalars_layout(charts: dict[str, list[str]], category: str = "echo-rnn"):
    """The Custom Scalars dashboard's layout: one chart per title, each overlaying the tags
    its regular expressions match, in every run. TensorBoard reads a layout from every run
    and merges them, a chart that is already there once."""
    from torch.utils.tensorboard.summary import custom_scalars

    return custom_scalars(
        {category: {title: ["Multiline", tags] for title, tags in charts.items()}}
    )


# Settings that say where a run is kept, not what it is: the trial's name (its path under
# TensorBoard's logdir) says that, and as columns they would differ between every run and
# crowd the swept settings out of the five HParams columns TensorBoard ticks by default.
NOT_HPARAMS = ("logdir", "run_name")


def hparams_summaries(config: dict[str, Any]) -> list:
    """The hparams of one run as TensorBoard's HParams plugin reads them: a session start,
    with every setting but NOT_HPARAMS and its type (torch's ``add_hparams`` records a bool
    as the number 0.0), and a session end.

    Two things are left out on purpose. The group name is empty, so TensorBoard names each
    trial after its run's path under the logdir: runs that share a directory name (the same
    point of two sweeps) stay two rows instead of one row averaging both. And no experiment
    summary is written: from those, TensorBoard takes the first it finds for the whole logdir,
    in that run's order; without one it computes the columns from all runs, the settings
    that differ between them first (its default view shows the first five), and the metrics
    from the runs' scalars (their last values)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(group_name="")
    for k, v in config.items():
        if k in NOT_HPARAMS:
            continue
        value = start.hparams[k]
        if isinstance(v, bool):
            value.bool_value = v
        elif isinstance(v, (int, float)):
            value.number_value = v
        else:  # None (an unset optional setting) is the word, so every run has every column
            value.string_value = "none" if v is None else str(v)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)

    def summary(tag: str, **data) -> Summary:
        content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
        return Summary(
            value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content))]
        )

    return [
        summary(metadata.SESSION_START_INFO_TAG, session_start_info=start),
        summary(metadata.SESSION_END_INFO_TAG, session_end_info=end),
    ]
