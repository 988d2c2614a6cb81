"""Gradient flow through time: ||dJ/dh_t|| for every step t, how the gradient of the cost
fades as it is carried back from the end of the sequence. ``echo-rnn gradcheck --per-step``
prints it as a table, ``--plot`` draws it with matplotlib; a training run logs a light image
of it to TensorBoard at every evaluation (:func:`echo_rnn.tblog.flow_rgb`).

||dJ/dh_t|| is the Frobenius norm of dJ/dh_t (B, H) over the batch and the hidden units:
for one sequence, the length of the vector dJ/dh_t.
"""

from __future__ import annotations

import math
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
    header = ["t"] + [f"||dJ/dh_t|| {n}" if not n.endswith(" diff") else
                      f"||{n.removesuffix(' diff')} - autograd||" for n in names]
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
    return p


def plot_flow(path: str | Path, curves: dict[str, list[float]], title: str) -> None:
    """Draw ||dJ/dh_t|| against t (log scale) for each curve ({label: norms for t = 1..T})
    and write it to ``path`` atomically (its format from the suffix). Uses matplotlib's
    object API, not pyplot: no global figure state is left behind."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from echo_rnn.checkpoint import write_atomically

    fig = Figure(figsize=(7, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = [dict(lw=2.2, color="0.6"), dict(lw=1.2, color="C0", ls="--"),
              dict(lw=1.2, color="C3", ls=":")]
    for (label, norms), style in zip(curves.items(), styles * len(curves)):
        t = [i + 1 for i, v in enumerate(norms) if v > 0]  # log scale: zeros are not drawn
        ax.plot(t, [v for v in norms if v > 0], label=label, **style)
    ax.set_yscale("log")
    ax.set_xlabel("t (the cost's gradient enters at every step and flows back to t = 1)")
    ax.set_ylabel("||dJ/dh_t||")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fmt = Path(path).suffix.lower().lstrip(".")
    write_atomically(path, lambda fh: fig.savefig(fh, format=fmt))
