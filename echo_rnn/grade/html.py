"""The teacher's report: one HTML file that opens without a server (styles inline, images as
base64 PNGs): the class's mistakes by frequency (a matplotlib chart), then a row per
student with the score, the mistake named with its fix, and the gradient-flow plot
(``gradcheck --plot``'s curves, :func:`echo_rnn.flow.per_step`) where the student's
dJ/dh_t departs from autograd's.

Everything that comes from a student (names, messages, what their code printed) is
escaped: a file named ``<script>.py`` is text on the page."""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from echo_rnn.flow import per_step
from echo_rnn.grade.grader import STATUSES, Verdict
from echo_rnn.grade.reports import frequencies
from echo_rnn.grade.rubric import Rubric
from echo_rnn.problem import Problem

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.5em;margin-bottom:.2em} .sub{color:#555;margin-top:0}
table{border-collapse:collapse;width:100%;margin-top:1em}
th,td{border-bottom:1px solid #ddd;padding:.45em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}
td.score{white-space:nowrap;font-variant-numeric:tabular-nums}
.status{display:inline-block;padding:.1em .5em;border-radius:.8em;font-size:.85em}
.agrees{background:#d8f3dc}.mistake{background:#fff3bf}.truncated{background:#e7f5ff}
.unexplained{background:#ffd8a8}.bad-return,.failed{background:#ffc9c9}
code{background:#f6f6f6;padding:0 .2em} .fix{color:#2b6a2b} .why{color:#444}
img.flow{max-width:420px;display:block} img.chart{max-width:760px}
pre{white-space:pre-wrap;max-height:8em;overflow:auto;background:#fafafa;font-size:.8em}
"""


def _png(fig: Any, dpi: float | None = None) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def chart(verdicts: list[Verdict]) -> str | None:
    """The class's mistakes by frequency as a horizontal bar chart, base64 PNG; None when
    nobody made one."""
    freq = frequencies(verdicts)
    if not freq:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.9 + 0.32 * len(freq)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = [c for c, _ in freq][::-1]
    counts = [n for _, n in freq][::-1]
    ax.barh(labels, counts, color="C1")
    for y, n in enumerate(counts):
        ax.text(n, y, f" {n}", va="center", fontsize=8)
    ax.set_xlabel(f"students (of {len(verdicts)})")
    ax.set_title("the class's mistakes by frequency", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlim(0, max(counts) * 1.15)
    fig.tight_layout()
    return _png(fig)


def flow_plot(v: Verdict) -> str | None:
    """A thumbnail of the gradient-flow plot (what ``gradcheck --plot`` draws, lighter: the
    same curves on a log scale, without its key and minor grid, which cost a second a plot
    on a class of a hundred) of a student whose dJ/dh_t departs from autograd's, base64 PNG;
    None when it does not depart or was not returned."""
    r = v.report
    if r is None or r.dh is None or v.departs_at is None:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    flow = per_step({"yours": r.dh}, r.autograd_dh)
    series = {
        "autograd": flow["autograd"],
        "yours": flow["yours"],
        "|yours - autograd|": flow["yours diff"],
    }
    values = [x for ys in series.values() for x in ys if x > 0 and math.isfinite(x)]
    floor = min(values) / 10 if values else 1e-20  # a zero cannot sit on a log axis
    fig = Figure(figsize=(4.4, 2.3), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.13, 0.2, 0.84, 0.72))
    styles = (
        {"lw": 2.0, "color": "0.6"},
        {"lw": 1.1, "color": "C0", "ls": "--"},
        {"lw": 1.0, "color": "C3", "marker": ".", "ms": 2},
    )
    for (label, ys), style in zip(series.items(), styles):
        ax.plot(flow["t"], [y if y > 0 else floor for y in ys], label=label, **style)
    ax.axvline(v.departs_at, color="C3", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel(f"t (departs first at t = {v.departs_at})", fontsize=7)
    ax.set_ylabel("||dJ/dh_t||", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="lower left", frameon=False, ncol=3)
    return _png(fig)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _row(v: Verdict) -> str:
    if v.mistakes:
        what = "".join(
            f"<div><code>{_e(m.code)}</code> in {_e(', '.join(m.gradients))}: "
            f"<span class='why'>{_e(m.says)}</span></div>"
            for m in v.mistakes
        )
        fix = "".join(f"<div class='fix'>{_e(m.fix)}</div>" for m in v.mistakes)
    else:
        what, fix = "", ""
    if (v.status != "mistake" or v.hidden) and v.reason:  # what a named mistake may hide
        what += f"<div class='why'>{_e(v.reason)}</div>"
    if v.status == "agrees":
        what = "all gradients agree"
    if v.traceback:
        what += f"<details><summary>traceback</summary><pre>{_e(v.traceback)}</pre></details>"
    if v.printed:
        what += (
            f"<details><summary>what the code printed</summary><pre>{_e(v.printed)}</pre></details>"
        )
    png = flow_plot(v)
    plot = (
        f"<img class='flow' alt='gradient flow of {_e(v.student)}: departs at t = "
        f"{v.departs_at}' src='data:image/png;base64,{png}'>"
        if png
        else ""
    )
    return (
        f"<tr data-status='{_e(v.status)}'><td>{_e(v.student)}<br><small>{_e(v.shown)}"
        f"</small></td><td class='score'>{v.score:g} / {v.max_score:g}</td>"
        f"<td><span class='status {_e(v.status)}'>{_e(v.status)}</span></td>"
        f"<td>{what}</td><td>{fix}</td><td>{plot}</td></tr>"
    )


def page(verdicts: list[Verdict], function: str, problem: Problem, rubric: Rubric) -> str:
    """The whole report, one HTML document."""
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    mean = sum(v.score for v in verdicts) / len(verdicts) if verdicts else 0.0
    png = chart(verdicts)
    figure = (
        f"<img class='chart' alt='the class&#39;s mistakes by frequency' "
        f"src='data:image/png;base64,{png}'>"
        if png
        else "<p>No mistakes: every gradient of every submission agrees.</p>"
    )
    summary = ", ".join(f"{n} {_e(s)}" for s, n in counts.items() if n)
    rows = "\n".join(_row(v) for v in verdicts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>echo-rnn grade: {_e(function)}</title><style>{STYLE}</style></head>
<body>
<h1>echo-rnn grade: <code>{_e(function)}</code></h1>
<p class="sub">{len(verdicts)} submissions, checked against autograd on
{_e(problem.describe())}; mean score {mean:.2f} of {rubric.max_score(problem):g}.
{summary}.</p>
<h2>Mistakes by frequency</h2>
{figure}
<h2>Students</h2>
<table id="students">
<thead><tr><th>student</th><th>score</th><th>status</th><th>what is wrong</th><th>fix</th>
<th>gradient flow where it departs</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""
