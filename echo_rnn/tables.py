"""A sweep's results as tables and a picture: ``results.csv`` (a row per run), ``results.md``
(per (k, H): solve rate over seeds and median steps to solve) and ``heatmap.png``, drawn with
matplotlib."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import numpy as np

RESULT_FIELDS = (
    "echo_step",
    "hidden_size",
    "seed",
    "solved",
    "solved_step",
    "val_accuracy",
    "val_loss",
    "step",
    "wall_time_s",
    "stopped",
    "run_dir",
)


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["echo_step"], r["hidden_size"]), []).append(r)
    return cells


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (k, H): seeds, solved, solve rate, median steps to solve (over solved seeds)."""
    out = []
    for (k, H), rs in sorted(_cells(rows).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        solved = [r["solved_step"] for r in rs if r["solved"]]
        out.append(
            {
                "echo_step": k,
                "hidden_size": H,
                "seeds": len(rs),
                "solved": len(solved),
                "solve_rate": len(solved) / len(rs),
                "median_steps_to_solve": statistics.median(solved) if solved else None,
            }
        )
    return out


def write_results(
    sweep_dir: Path, rows: list[dict[str, Any]], echo_steps: list[int], hidden_sizes: list[int]
) -> None:
    rows = sorted(rows, key=lambda r: (r["hidden_size"], r["echo_step"], r["seed"]))
    with open(sweep_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_FIELDS)
        w.writeheader()
        w.writerows({k: r[k] for k in RESULT_FIELDS} for r in rows)
    summary = summarize(rows)
    (sweep_dir / "results.md").write_text(results_markdown(summary, echo_steps, hidden_sizes))
    img = heatmap_image(summary, echo_steps, hidden_sizes)
    from PIL import Image

    # A file, not a TensorBoard run: a run of its own would count among the 40 that
    # TensorBoard's Scalars dashboard selects by default, so a sweep of 40 would open empty.
    Image.fromarray(img).save(sweep_dir / "heatmap.png")


def results_markdown(
    summary: list[dict[str, Any]], echo_steps: list[int], hidden_sizes: list[int]
) -> str:
    by = {(s["echo_step"], s["hidden_size"]): s for s in summary}
    lines = [
        "Solve rate over seeds (median steps to solve), rows H, columns k:",
        "",
        "| H \\ k | " + " | ".join(str(k) for k in echo_steps) + " |",
        "|---|" + "---|" * len(echo_steps),
    ]
    for H in hidden_sizes:
        cells = []
        for k in echo_steps:
            s = by.get((k, H))
            if s is None:
                cells.append("")
            else:
                median = s["median_steps_to_solve"]
                med = "" if median is None else f" ({median:g})"
                cells.append(f"{s['solved']}/{s['seeds']}{med}")
        lines.append(f"| {H} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| k | H | seeds | solved | solve rate | median steps to solve |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        med = "" if s["median_steps_to_solve"] is None else f"{s['median_steps_to_solve']:g}"
        lines.append(
            f"| {s['echo_step']} | {s['hidden_size']} | {s['seeds']} | {s['solved']} | "
            f"{s['solve_rate']:.2f} | {med} |"
        )
    return "\n".join(lines) + "\n"


_NOT_RUN_FACE = "#d9d9d9"  # the axes' colour, which shows where no cell was drawn
_NOT_RUN_HATCH = {"hatch": "//", "edgecolor": "#999999"}
# inches at dpi 110: about 400-640 px wide, the range a TensorBoard image card shows legibly
_FIG_W, _FIG_H, _DPI = (3.6, 5.8), (2.9, 5.6), 110


def heatmap_image(
    summary: list[dict[str, Any]], echo_steps: list[int], hidden_sizes: list[int]
) -> np.ndarray:
    """Solve rate over k (columns) and H (rows) as an RGB uint8 image drawn with matplotlib:
    each cell labelled "solved/seeds" and the median steps to solve (as room allows: a large
    grid's cells are too small for text, and drop it), a colour bar, named axes; a cell the
    sweep did not run is hatched grey, and a legend says so. The figure's size follows the
    grid but is bounded, so a large sweep still fits a TensorBoard card, and the layout is
    constrained so that the title, labels and legend are never cut. Uses matplotlib's object
    interface with the Agg canvas, so no global backend or pyplot state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    by = {(s["echo_step"], s["hidden_size"]): s for s in summary}
    nr, nc = len(hidden_sizes), len(echo_steps)
    rate = np.full((nr, nc), np.nan)
    for i, H in enumerate(hidden_sizes):
        for j, k in enumerate(echo_steps):
            if (k, H) in by:
                rate[i, j] = by[(k, H)]["solve_rate"]
    fig = Figure(
        figsize=(float(np.clip(2.4 + 0.6 * nc, *_FIG_W)), float(np.clip(2.0 + 0.45 * nr, *_FIG_H))),
        dpi=_DPI,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor(_NOT_RUN_FACE)  # cells not in the sweep
    im = ax.imshow(
        np.ma.masked_invalid(rate), cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower"
    )
    # a cell's size in points, roughly (the axes take about two thirds of the figure)
    cell_w = fig.get_figwidth() * 72 * 0.65 / max(nc, 1)
    cell_h = fig.get_figheight() * 72 * 0.6 / max(nr, 1)
    size = min(7.0, cell_w / 4.2, cell_h / 2.6)  # two lines of up to 5 characters
    one_line = size < 5
    if one_line:
        size = min(7.0, cell_w / 4.2, cell_h / 1.4)
    missing = False
    for i, H in enumerate(hidden_sizes):
        for j, k in enumerate(echo_steps):
            s = by.get((k, H))
            if s is None:
                ax.add_patch(_hatched_cell(j, i))
                missing = True
                continue
            if size < 4:  # too small to read: the colour says it
                continue
            med = s["median_steps_to_solve"]
            text = f"{s['solved']}/{s['seeds']}" + ("" if med is None or one_line else f"\n{med:g}")
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=size,
                color="black" if s["solve_rate"] > 0.6 else "white",
            )
    # no more tick labels than fit: every n-th when the grid is large
    every_x = max(1, int(np.ceil(nc * 26 / (fig.get_figwidth() * 72 * 0.65))))
    every_y = max(1, int(np.ceil(nr * 11 / (fig.get_figheight() * 72 * 0.6))))
    ax.set_xticks(range(0, nc, every_x), [str(k) for k in echo_steps][::every_x], fontsize=8)
    ax.set_yticks(range(0, nr, every_y), [str(H) for H in hidden_sizes][::every_y], fontsize=8)
    ax.set_xlabel("echo step k", fontsize=9)
    ax.set_ylabel("hidden size H", fontsize=9)
    title = (
        "seeds solved (median steps to solve)"
        if size >= 5
        else ("seeds solved" if size >= 4 else "solve rate")
    )
    ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    cbar.set_label("solve rate", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    ax.tick_params(labelsize=8)
    if missing:
        fig.legend(
            handles=[Patch(facecolor=_NOT_RUN_FACE, label="not run", **_NOT_RUN_HATCH)],
            loc="outside lower right",
            fontsize=8,
            frameon=False,
            handlelength=1.6,
            handleheight=1.2,
        )
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


def _hatched_cell(j: int, i: int):
    """The mark of a cell the sweep did not run, the same hatch as the legend's "not run"."""
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=0, **_NOT_RUN_HATCH)
