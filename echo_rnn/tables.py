"""A sweep's results as tables and a picture: ``results.csv`` (a row per run), ``results.md``
(per (k, H): solve rate over seeds and median steps to solve) and ``heatmap.png``, drawn with
matplotlib."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import numpy as np

RESULT_FIELDS = ("echo_step", "hidden_size", "seed", "solved", "solved_step", "val_accuracy",
                 "val_loss", "step", "wall_time_s", "stopped", "run_dir")


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
        out.append({"echo_step": k, "hidden_size": H, "seeds": len(rs), "solved": len(solved),
                    "solve_rate": len(solved) / len(rs),
                    "median_steps_to_solve": statistics.median(solved) if solved else None})
    return out


def write_results(sweep_dir: Path, rows: list[dict[str, Any]], echo_steps: list[int],
                  hidden_sizes: list[int]) -> None:
    rows = sorted(rows, key=lambda r: (r["hidden_size"], r["echo_step"], r["seed"]))
    with open(sweep_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_FIELDS)
        w.writeheader()
        w.writerows({k: r[k] for k in RESULT_FIELDS} for r in rows)
    summary = summarize(rows)
    (sweep_dir / "results.md").write_text(results_markdown(summary, echo_steps, hidden_sizes))
    img = heatmap_image(summary, echo_steps, hidden_sizes)
    from PIL import Image

    Image.fromarray(img).save(sweep_dir / "heatmap.png")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(sweep_dir / "_sweep")) as writer:
        writer.add_image("solve_rate (rows H, columns k)", img, 0, dataformats="HWC")
        writer.add_text("results", (sweep_dir / "results.md").read_text(), 0)


def results_markdown(summary: list[dict[str, Any]], echo_steps: list[int],
                     hidden_sizes: list[int]) -> str:
    by = {(s["echo_step"], s["hidden_size"]): s for s in summary}
    lines = ["Solve rate over seeds (median steps to solve), rows H, columns k:", "",
             "| H \\ k | " + " | ".join(str(k) for k in echo_steps) + " |",
             "|---|" + "---|" * len(echo_steps)]
    for H in hidden_sizes:
        cells = []
        for k in echo_steps:
            s = by.get((k, H))
            if s is None:
                cells.append("")
            else:
                med = "" if s["median_steps_to_solve"] is None else f" ({s['median_steps_to_solve']:g})"
                cells.append(f"{s['solved']}/{s['seeds']}{med}")
        lines.append(f"| {H} | " + " | ".join(cells) + " |")
    lines += ["", "| k | H | seeds | solved | solve rate | median steps to solve |",
              "|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        med = "" if s["median_steps_to_solve"] is None else f"{s['median_steps_to_solve']:g}"
        lines.append(f"| {s['echo_step']} | {s['hidden_size']} | {s['seeds']} | {s['solved']} | "
                     f"{s['solve_rate']:.2f} | {med} |")
    return "\n".join(lines) + "\n"


def heatmap_image(summary: list[dict[str, Any]], echo_steps: list[int],
                  hidden_sizes: list[int]) -> np.ndarray:
    """Solve rate over k (columns) and H (rows) as an RGB uint8 image drawn with matplotlib:
    each cell labelled "solved/seeds" and the median steps to solve, a colour bar, named
    axes; a cell the sweep did not run is hatched grey. Uses matplotlib's object interface
    with the Agg canvas, so no global backend or pyplot state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by = {(s["echo_step"], s["hidden_size"]): s for s in summary}
    rate = np.full((len(hidden_sizes), len(echo_steps)), np.nan)
    for i, H in enumerate(hidden_sizes):
        for j, k in enumerate(echo_steps):
            if (k, H) in by:
                rate[i, j] = by[(k, H)]["solve_rate"]
    fig = Figure(figsize=(1.2 + 0.75 * len(echo_steps), 1.4 + 0.6 * len(hidden_sizes)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("#d9d9d9")  # cells not in the sweep
    im = ax.imshow(np.ma.masked_invalid(rate), cmap="viridis", vmin=0, vmax=1, aspect="auto",
                   origin="lower")
    for i, H in enumerate(hidden_sizes):
        for j, k in enumerate(echo_steps):
            s = by.get((k, H))
            if s is None:
                ax.add_patch(_hatched_cell(j, i))
                continue
            med = s["median_steps_to_solve"]
            text = f"{s['solved']}/{s['seeds']}" + ("" if med is None else f"\n{med:g}")
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="black" if s["solve_rate"] > 0.6 else "white")
    ax.set_xticks(range(len(echo_steps)), [str(k) for k in echo_steps])
    ax.set_yticks(range(len(hidden_sizes)), [str(H) for H in hidden_sizes])
    ax.set_xlabel("echo step k")
    ax.set_ylabel("hidden size H")
    ax.set_title("seeds solved (median steps to solve)", fontsize=9)
    fig.colorbar(im, ax=ax, label="solve rate", fraction=0.05, pad=0.03)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


def _hatched_cell(j: int, i: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="#999999",
                     linewidth=0)
