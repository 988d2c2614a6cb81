"""What ``echo-rnn grade`` writes: the terminal table, ``--csv``, ``--json`` and one
Gradescope ``results.json`` per submission (``--gradescope DIR``). Each is made from the
verdicts alone (:class:`~echo_rnn.grade.grader.Verdict`), and every file is written whole or
not at all (:func:`echo_rnn.files.write_atomically`)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from echo_rnn.console import strict_json
from echo_rnn.files import write_atomically
from echo_rnn.grade.grader import STATUSES, UNEXPLAINED, Verdict
from echo_rnn.grade.rubric import Rubric
from echo_rnn.problem import Problem

CSV_COLUMNS = (
    "student",
    "file",
    "status",
    "score",
    "max_score",
    "mistakes",
    "gradients",
    "fix",
    "reason",
)


def _score(x: float) -> str:
    return f"{x:g}"


def frequencies(verdicts: list[Verdict]) -> list[tuple[str, int]]:
    """How many students made each mistake (and how many are unexplained, did not run or
    returned what cannot be compared), most frequent first."""
    counts: Counter[str] = Counter()
    for v in verdicts:
        for m in v.mistakes:
            counts[m.code] += 1
        if v.status == "unexplained":
            counts[UNEXPLAINED] += 1
        elif v.status == "truncated":
            counts["truncated BPTT"] += 1
        elif v.status in ("failed", "bad-return"):
            counts["did not run" if v.status == "failed" else "bad return"] += 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def table(verdicts: list[Verdict]) -> str:
    """One row per student: score, status, what is wrong; then the class's counts."""
    header = ("student", "score", "status", "verdict")
    body = [
        (
            _one_line(v.student, 40),
            f"{_score(v.score)}/{_score(v.max_score)}",
            v.status,
            _one_line(v.summary, 100),
        )
        for v in verdicts
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(3)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths)), r[3]]).rstrip()
        for r in [header, *body]
    ]
    statuses = Counter(v.status for v in verdicts)
    lines.append("")
    lines.append(
        f"{len(verdicts)} graded: "
        + ", ".join(f"{statuses[s]} {s}" for s in STATUSES if statuses[s])
    )
    freq = [(c, n) for c, n in frequencies(verdicts)]
    if freq:
        lines.append("mistakes by frequency: " + ", ".join(f"{c} {n}" for c, n in freq))
    return "\n".join(lines)


def _one_line(text: str, most: int) -> str:
    """Their text (a message, a name) as one printable line: nothing it holds can move the
    cursor or pass for another row."""
    safe = "".join(c if c.isprintable() else " " for c in text.replace("\n", " "))
    return safe if len(safe) <= most else safe[: most - 3] + "..."


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading =, +, - or @ would be a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(verdicts: list[Verdict]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for v in verdicts:
        w.writerow(
            [
                _cell(v.student),
                _cell(v.shown),
                v.status,
                _score(v.score),
                _score(v.max_score),
                " ".join(m.code for m in v.mistakes),
                " ".join(sorted({g for m in v.mistakes for g in m.gradients})),
                _cell(" | ".join(m.fix for m in v.mistakes)),
                _cell(_one_line(v.reason, 2000)),
            ]
        )
    return out.getvalue()


def verdict_dict(v: Verdict) -> dict[str, Any]:
    out = {
        "student": v.student,
        "file": v.shown,
        "status": v.status,
        "summary": v.summary,
        "reason": v.reason,
        "score": v.score,
        "max_score": v.max_score,
        "mistakes": [
            {"code": m.code, "gradients": m.gradients, "says": m.says, "fix": m.fix}
            for m in v.mistakes
        ],
        "tests": v.tests,
        "hidden": [{"code": c, "behind": b} for c, b in v.hidden.items()],
        "departs_at": v.departs_at,
        "seconds": round(v.seconds, 3),
        "report": v.report.to_dict() if v.report is not None else None,
    }
    if v.printed:
        out["printed"] = v.printed
    if v.traceback:
        out["traceback"] = v.traceback
    return out


def to_json(
    verdicts: list[Verdict],
    function: str,
    problem: Problem,
    rubric: Rubric,
    options: dict[str, Any] | None,
) -> str:
    return strict_json(
        {
            "function": function,
            "problem": problem.to_dict(),
            "layout": options,
            "rubric": rubric.to_dict(),
            "max_score": rubric.max_score(problem),
            "statuses": {s: sum(v.status == s for v in verdicts) for s in STATUSES},
            "mistakes": dict(frequencies(verdicts)),
            "submissions": [verdict_dict(v) for v in verdicts],
        },
        name_nonfinite=True,
    )


def gradescope(v: Verdict) -> dict[str, Any]:
    """Gradescope's autograder results.json for one submission: score, output, and a test
    per gradient with name, score, max_score and output (their documented format)."""
    lines = [f"echo-rnn grade: {v.summary}"]
    for m in v.mistakes:
        lines += [f"{m.code} ({', '.join(m.gradients)}): {m.says}.", f"  fix: {m.fix}."]
    if v.reason and (v.status != "mistake" or v.hidden):  # what a named mistake may hide
        lines.append(v.reason)
    if v.traceback:
        lines.append(v.traceback.rstrip("\n"))
    if v.status == "unexplained" and v.departs_at is not None:
        lines.append(
            f"your dJ/dh_t departs from autograd's first at t = {v.departs_at}, "
            "counting back from T"
        )
    return {
        "score": v.score,
        "output": "\n".join(lines),
        "tests": [{**t, "visibility": "visible"} for t in v.tests],
    }


def write_text(path: str | Path, text: str) -> None:
    write_atomically(path, lambda fh: fh.write(text.encode("utf-8")))


def write_gradescope(directory: str | Path, verdicts: list[Verdict]) -> list[Path]:
    """DIR/results.json when there is one submission (an autograder grades one at a time:
    ``--gradescope /autograder/results``), else DIR/STUDENT/results.json for each."""
    directory = Path(directory)
    written = []
    taken: set[str] = set()
    for v in verdicts:
        name = _safe_name(v.student)
        while name in taken:  # "a b" and "a_b" are two students, two folders
            name += "_"
        taken.add(name)
        folder = directory if len(verdicts) == 1 else directory / name
        folder.mkdir(exist_ok=True)
        path = folder / "results.json"
        write_text(path, json.dumps(gradescope(v), indent=1) + "\n")
        written.append(path)
    return written


def _safe_name(name: str) -> str:
    """A folder name from a student's: their file or folder's own name, never a path."""
    safe = "".join(c if c.isalnum() or c in "-_.@+" else "_" for c in name)
    return safe if safe.strip(".") else f"_{safe}"
