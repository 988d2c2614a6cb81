"""``echo-rnn grade``: a class's BPTT functions checked, named and scored (echo_rnn/grade/);
the table, CSV, JSON, Gradescope files and HTML report are made by the library's reports."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from echo_rnn.cli import UsageError
from echo_rnn.cli.args import COUNT, memory_gib, timeout_s
from echo_rnn.sandbox import DEFAULT_TIMEOUT


def add_parser(sub) -> None:
    p = sub.add_parser(
        "grade",
        help="grade a class's own BPTT functions: each checked, the mistake named, a score",
        description=(
            "Run every submission's BPTT function in a process of its own, as gradcheck --grads "
            "runs one, compare its gradients with autograd's on one problem for the whole class, "
            "name the catalogue's mistake and its fix, and score it with a rubric. SUBMISSIONS "
            "is a folder of .py files, of .ipynb notebooks (their code cells, without magics or "
            "shell lines) or of one folder per student, or a single file. A submission that "
            "does not parse, define the function, or raises, exits or hangs gets a verdict with "
            "its reason. Prints a table (or, with --json, one JSON object); exit status 0 when "
            'every submission was graded, whatever the verdicts (README: "For teachers").'
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn grade submissions/ --function rnn_bptt --layout layout.toml "
            "--html report.html\n"
            "  echo-rnn grade submissions/ --function bptt --csv grades.csv --rubric rubric.toml\n"
            "  echo-rnn grade /autograder/submission --function bptt "
            "--gradescope /autograder/results"
        ),
    )
    p.add_argument(
        "submissions",
        metavar="SUBMISSIONS",
        help="a folder of .py files, .ipynb notebooks or one folder per student; or one file",
    )
    p.add_argument(
        "--function",
        required=True,
        metavar="NAME",
        help="the function every submission defines (its BPTT: called as "
        "gradcheck --grads calls one, through --layout's adapter)",
    )
    p.add_argument(
        "--layout",
        metavar="FILE.toml",
        default=None,
        help="the class's layout: a [layout] table of echo_rnn.layouts' adapter "
        'options (kind = "rows", U = "Wh", ...) and an optional [problem] '
        "table of gradcheck's settings (batch_size, bias, ...) (default: the "
        "contract's layout on gradcheck's default problem)",
    )
    p.add_argument(
        "--rubric",
        metavar="FILE.toml",
        default=None,
        help="points per gradient and partial credit per named mistake, over the "
        'default\'s (echo_rnn/grade/rubric.py, README: "For teachers")',
    )
    p.add_argument(
        "--workers",
        type=COUNT,
        default=None,
        metavar="N",
        help="submissions run at once (default: one per core)",
    )
    p.add_argument(
        "--timeout",
        type=timeout_s,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"each submission's time limit (default: {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--memory",
        type=memory_gib,
        default=None,
        metavar="GiB",
        help="each submission's address space, in GiB; beyond it, a MemoryError "
        "in its code (default: 8; 0: no limit)",
    )
    p.add_argument("--csv", metavar="FILE.csv", default=None, help="write a row per student")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (every verdict, its report and score) instead "
        "of the table, and no progress",
    )
    p.add_argument(
        "--gradescope",
        metavar="DIR",
        default=None,
        help="write Gradescope's results.json: DIR/results.json for one "
        "submission, DIR/STUDENT/results.json for a class",
    )
    p.add_argument(
        "--html",
        metavar="FILE.html",
        default=None,
        help="write the teacher's report: mistakes by frequency, a row per student "
        "with the fix and the gradient-flow plot; one file, no server",
    )
    p.set_defaults(run=run)


def _output_path(flag: str, value: str | None, suffix: str | None) -> Path | None:
    """An output file's path, checked before anything runs: its folder exists, it is not a
    folder; nothing is written until the class is graded."""
    if value is None:
        return None
    path = Path(value)
    if suffix is not None and path.suffix.lower() != suffix:
        raise UsageError(f"argument --{flag}: must end in {suffix}, got {value!r}")
    if path.is_dir():
        raise UsageError(f"argument --{flag}: is a directory: {value}")
    if not path.resolve().parent.is_dir():
        raise UsageError(f"argument --{flag}: no such directory: {path.parent}")
    return path.resolve()


def run(args: argparse.Namespace) -> int:
    from echo_rnn.grade.grader import grade, load_layout
    from echo_rnn.grade.rubric import load_rubric
    from echo_rnn.grade.submissions import find_submissions
    from echo_rnn.problem import Problem

    if not args.function.isidentifier():
        raise UsageError(f"argument --function: must be a Python name, got {args.function!r}")
    csv_path = _output_path("csv", args.csv, ".csv")
    html_path = _output_path("html", args.html, ".html")
    gradescope = None
    if args.gradescope is not None:
        gradescope = Path(args.gradescope)
        if gradescope.exists() and not gradescope.is_dir():
            raise UsageError(f"argument --gradescope: not a directory: {args.gradescope}")
        if not gradescope.resolve().parent.is_dir():
            raise UsageError(f"argument --gradescope: no such directory: {gradescope.parent}")
        gradescope = gradescope.resolve()
    options, settings = load_layout(args.layout)
    rubric = load_rubric(args.rubric)
    problem = Problem.of(settings).on("float64", "cpu")
    submissions = find_submissions(args.submissions, args.function)
    workers = args.workers or len(os.sched_getaffinity(0))
    memory = None if args.memory is None else int(args.memory * (1 << 30))

    progress, close = _progress(len(submissions), quiet=args.json)
    try:
        verdicts = grade(
            submissions,
            args.function,
            problem,
            rubric,
            options,
            workers,
            args.timeout,
            memory,
            progress,
        )
    finally:
        close()

    from echo_rnn.grade import reports

    if gradescope is not None:
        gradescope.mkdir(exist_ok=True)
        reports.write_gradescope(gradescope, verdicts)
    if csv_path is not None:
        reports.write_text(csv_path, reports.to_csv(verdicts))
    if html_path is not None:
        from echo_rnn.grade.html import page

        reports.write_text(html_path, page(verdicts, args.function, problem, rubric))
    if args.json:
        print(reports.to_json(verdicts, args.function, problem, rubric, options))
        return 0
    print(f"echo-rnn grade {args.function}: {problem.describe()}")
    print(reports.table(verdicts))
    for what, path in (("csv", csv_path), ("html", html_path), ("gradescope", gradescope)):
        if path is not None:
            print(f"{what}: {path}")
    return 0


def _progress(total: int, quiet: bool):
    """(progress(verdict, done, total), close()): a tqdm bar on a terminal, a line per
    submission otherwise, nothing when quiet."""
    if quiet:
        return None, lambda: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(
            total=total, unit="submission", desc="grading", file=sys.stderr, dynamic_ncols=True
        )

        def tick(v, done: int, n: int) -> None:
            bar.set_postfix_str(f"{v.student[:20]}: {v.status}", refresh=False)
            bar.update(1)

        return tick, bar.close

    def line(v, done: int, n: int) -> None:
        name = "".join(c if c.isprintable() else " " for c in v.student)[:60]
        print(f"echo-rnn grade: {done}/{n} {name}: {v.status}", file=sys.stderr, flush=True)

    return line, lambda: None
