#!/usr/bin/env python3
"""Time ``echo-rnn grade`` on a class of 100 submissions made from the catalogue
(echo_rnn/grade/planted.py), in the "rows" layout: 80 with one mistake (every placement of
every mistake, in turn), 10 correct, 4 notebooks (one mistake each), and 6 that do not run
to a return (a syntax error, an exception, sys.exit at import, no such function, a
notebook that is not JSON, one that sleeps past --timeout). The clock runs from the command's
start to its exit, with the table, CSV, JSON and HTML report all written:

    python scripts/bench_grade.py                   # --workers 2 --timeout 10
    python scripts/bench_grade.py --workers 1 --keep class/

The issue's target: under 2 minutes wall on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from echo_rnn.grade.planted import BIAS_ONLY, PLACEMENTS, layout_toml, source, student_name

LAYOUT = "rows"
FUNCTION = "rnn_bptt"


def notebook(code: str) -> str:
    """A notebook whose code cells hold ``code``, with a magic and a shell line as a student
    leaves them."""
    cells = [
        ["%matplotlib inline\n", "!pip install numpy\n", "import numpy as np\n"],
        code.splitlines(keepends=True),
    ]
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "source": c,
                    "metadata": {},
                    "outputs": [],
                    "execution_count": None,
                }
                for c in cells
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def write_class(folder: Path) -> int:
    placements = [m for m in PLACEMENTS if m not in BIAS_ONLY]
    n = 0
    for i in range(80):
        m = placements[i % len(placements)]
        (folder / f"s{i:02d}-{student_name([m])}.py").write_text(source(LAYOUT, [m]))
        n += 1
    for i in range(10):
        (folder / f"c{i:02d}-correct.py").write_text(source(LAYOUT, []))
        n += 1
    for i in range(4):
        m = placements[(3 * i + 1) % len(placements)]
        (folder / f"n{i:02d}-{student_name([m])}.ipynb").write_text(notebook(source(LAYOUT, [m])))
        n += 1
    hostile = {
        "h0-syntax.py": "def rnn_bptt(:\n",
        "h1-raises.py": "def rnn_bptt(**kw):\n    raise ValueError('shapes')\n",
        "h2-exits.py": "import sys\nsys.exit(1)\n",
        "h3-nofunction.py": "def bptt(**kw):\n    return {}\n",
        "h4-notjson.ipynb": "{not json",
        "h5-sleeps.py": "import time\ndef rnn_bptt(**kw):\n    time.sleep(3600)\n",
    }
    for name, text in hostile.items():
        (folder / name).write_text(text)
        n += 1
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument(
        "--keep",
        metavar="DIR",
        default=None,
        help="write the class and the reports here, and keep them",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        cls = root / "class"
        cls.mkdir(parents=True, exist_ok=True)
        n = write_class(cls)
        (root / "layout.toml").write_text(layout_toml(LAYOUT))
        cmd = [
            sys.executable,
            "-m",
            "echo_rnn",
            "grade",
            str(cls),
            "--function",
            FUNCTION,
            "--layout",
            str(root / "layout.toml"),
            "--workers",
            str(args.workers),
            "--timeout",
            str(args.timeout),
            "--csv",
            str(root / "grades.csv"),
            "--html",
            str(root / "report.html"),
            "--gradescope",
            str(root / "gradescope"),
        ]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            return proc.returncode
        print(next(line for line in proc.stdout.splitlines() if " graded: " in line))
        load = os.getloadavg()[0]
        print(
            f"graded {n} submissions in {wall:.1f} s wall with --workers {args.workers} "
            f"({os.cpu_count()} cores, load average {load:.1f} at the end)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
