"""Gradient flow through time: ||dJ/dh_t|| for every step t, how the gradient of the cost
fades as it is carried back from the end of the sequence. ``echo-rnn gradcheck --per-step``
prints it as a table, ``--plot`` draws it with matplotlib; a training run logs a light image
of it to TensorBoard at every evaluation (:func:`echo_rnn.run.tblog.flow_rgb`).

||dJ/dh_t|| is the Frobenius norm of dJ/dh_t (B, H) over the batch and the hidden units:
for one sequence, the length of the vector dJ/dh_t.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from echo_rnn.errors import ConfigError

PLOT_FORMATS = (".png", ".pdf", ".svg")


def step_norms(dh: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (T,): ||dJ/dh_t|| for t = 1..T, in float64 on the CPU."""
    return dh.detach().to("cpu", torch.float64).norm(dim=(0, 2))


def per_step(hidden: dict[str, torch.Tensor], autograd: torch.Tensor) -> dict[str, list[float]]:
    """The per-step figures: ``t``, ``autograd`` (||dJ/dh_t||), and for every other source in
    ``hidden`` ({name: dJ/dh (B, T, H)}) its norms and ``<name> diff``, ||its dJ/dh_t -
    autograd's|| (the norm of the difference, which is 0 only when the vectors agree)."""
    out = {"t": list(range(1, autograd.shape[1] + 1)), "autograd": step_norms(autograd).tolist()}
    for name, dh in hidden.items():
        out[name] = step_norms(dh).tolist()
        out[f"{name} diff"] = step_norms(dh.to(autograd) - autograd).tolist()
    return out


def format_per_step(figures: dict[str, list[float]], most: int = 60) -> str:
    """A compact table of :func:`per_step`'s figures, newest step first; above ``most`` steps,
    every k-th step (and the first and the last), as the note under it says."""
    T = len(figures["t"])
    every = max(1, math.ceil(T / most))
    steps = sorted({T, 1, *range(T, 0, -every)}, reverse=True)
    names = [n for n in figures if n != "t"]
    header = ["t"] + [
        f"||dJ/dh_t|| {n}"
        if not n.endswith(" diff")
        else f"||{n.removesuffix(' diff')} - autograd||"
        for n in names
    ]
    body = [[str(t)] + [f"{figures[n][t - 1]:.3e}" for n in names] for t in steps]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *body]]
    if every > 1:
        lines.append(f"(one step in {every} of {T} shown, and t = 1; --json has them all)")
    return "\n".join(lines)


def check_plot_path(path: str | Path) -> Path:
    """The path ``--plot`` names, checked before any work: a known format, a directory that
    exists, not a directory itself.

    Raises:
        ConfigError("plot", ...).
    """
    p = Path(path)
    if p.suffix.lower() not in PLOT_FORMATS:
        raise ConfigError("plot", f"must end in {', '.join(PLOT_FORMATS)}, got {str(path)!r}")
    if p.is_dir():
        raise ConfigError("plot", f"is a directory: {path}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError("plot", f"no such directory: {parent}")
    try:  # a trial file, as the plot will be written (os.access says yes to root, not to /proc)
        import tempfile

        fd, trial = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(trial)
    except OSError as exc:
        raise ConfigError("plot", f"cannot write in {parent}: {exc.strerror or exc}") from None
    return p


def plot_flow(
    path: str | Path,
    curves: dict[str, list[float]],
    title: str,
    differences: dict[str, list[float]] | None = None,
    departure: int | None = None,
):
    """Draw ||dJ/dh_t|| against t (log scale) for each curve ({label: norms for t = 1..T}),
    and each of ``differences`` ({label: ||yours - autograd's|| per step}) as a curve of its
    own, and write it to ``path`` atomically (its format from the suffix). A zero cannot sit
    on a log axis: zeros are drawn at a floor below the smallest value, with a marker of
    their own named in the key. ``departure``: the first step, counting back from T, where
    yours departs from autograd's, marked by a vertical line. A long title is wrapped, not
    cut. Uses matplotlib's object API, not pyplot: no global figure state is left behind.
    Returns the matplotlib Figure."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from echo_rnn.files import write_atomically

    differences = differences or {}
    title_lines = textwrap.wrap(title, width=80) or [""]
    fig = Figure(figsize=(7.5, 4.0 + 0.2 * (len(title_lines) - 1)), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = [
        v
        for series in (*curves.values(), *differences.values())
        for v in series
        if v > 0 and math.isfinite(v)
    ]
    floor = min(values) / 10 if values else 1e-20
    styles = [
        dict(lw=2.2, color="0.6"),
        dict(lw=1.2, color="C0", ls="--"),
        dict(lw=1.2, color="C2", ls=":"),
    ]
    zero_drawn = False

    def draw(label: str, series: list[float], style: dict) -> None:
        nonlocal zero_drawn
        t = list(range(1, len(series) + 1))
        ax.plot(t, [v if v > 0 else floor for v in series], label=label, **style)
        zeros = [i + 1 for i, v in enumerate(series) if v == 0]
        if zeros:
            ax.plot(
                zeros,
                [floor] * len(zeros),
                ls="none",
                marker="v",
                ms=5,
                mfc="white",
                color=style.get("color", "k"),
                label=None if zero_drawn else f"exactly 0 (drawn at {floor:.0e})",
            )
            zero_drawn = True

    for (label, norms), style in zip(curves.items(), styles * len(curves)):
        draw(label, norms, style)
    for (label, diff), color in zip(differences.items(), ["C3", "C1", "C4"] * len(differences)):
        draw(label, diff, dict(lw=1.4, color=color, marker=".", ms=3))
    if departure is not None:
        ax.axvline(
            departure, color="C3", lw=1, ls="--", label=f"yours departs first at t = {departure}"
        )
    ax.set_yscale("log")
    ax.set_xlabel("t (the cost's gradient enters at every step and flows back to t = 1)")
    ax.set_ylabel("||dJ/dh_t||")
    ax.set_title("\n".join(title_lines), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fmt = Path(path).suffix.lower().lstrip(".")
    write_atomically(path, lambda fh: fig.savefig(fh, format=fmt))
    return fig  # what was drawn, for a test to read
