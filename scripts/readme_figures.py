#!/usr/bin/env python3
"""Make every README figure that comes from training again, each by the README's own command.

Each figure runs ``python -m echo_rnn ...`` in a subprocess, exactly as the README prints
it (with ``--json`` where the script needs the numbers, and ``--logdir`` so that nothing
lands in the working directory), and prints the command, its wall time, the date, the
machine (and its load average, since a shared machine slows every timing) and what the
README shows: the console text, or the Markdown table.

    python scripts/readme_figures.py                       # every figure (~15 min on 2 quiet cores)
    python scripts/readme_figures.py --only frontier --only capacity
    python scripts/readme_figures.py --list                # the figures and their commands
    python scripts/readme_figures.py --only capacity --docs docs    # heatmaps into docs/
    python scripts/readme_figures.py --output figures.json # every result as JSON too

Sweeps go into a temporary directory (removed at the end) unless ``--logdir`` names one; a
sweep re-run in a ``--logdir`` that holds it reads its finished points back, so its wall time
is then only what was left to train.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

FRONTIER = ["--preset", "frontier", "--hidden-size", "6", "--echo-step", "6", "--bias"]
CURRICULUM = [
    "--curriculum",
    "--curriculum-advance",
    "1.0",
    "--curriculum-patience",
    "3000",
    "--steps",
    "30000",
]
# The model without bias, one sweep per variant of the frontier recipe (seeds 0-4, k = H = 6).
VARIANTS = {
    "normal U (the preset alone)": [],
    "--input-init-std 2.5": ["--input-init-std", "2.5"],
    "--lr 0.01": ["--lr", "0.01"],
    "--lr 0.002": ["--lr", "0.002"],
    "--batch-size 256": ["--batch-size", "256"],
    "--init-std 0.5": ["--init-std", "0.5"],
    "--init-std 0.5 --input-init-std 3": ["--init-std", "0.5", "--input-init-std", "3"],
    "--orthogonal-gain 0.8": ["--orthogonal-gain", "0.8"],
    "--orthogonal-gain 1.0": ["--orthogonal-gain", "1.0"],
    "--orthogonal-gain 1.2": ["--orthogonal-gain", "1.2"],
    "--orthogonal-gain 1.5": ["--orthogonal-gain", "1.5"],
    "--curriculum (advance 1.0, patience 3000, 30000 steps)": CURRICULUM,
}

# What the README says of a normal U's singular values: the engine's own draw (the compiled
# kernel's init_params, what `train` starts from), not torch's.
SINGULAR_VALUES = """\
import torch
from echo_rnn.config import TrainConfig, PRESETS
from echo_rnn.kernels import compiled
c = TrainConfig(**{**PRESETS["frontier"], "hidden_size": 6, "bias": False})
for seed in range(10):
    p = compiled.init_params(seed, 6, 1, False, c.init_std, c.input_init_std,
                             dtype=torch.float64)
    sv = torch.linalg.svdvals(compiled.unflatten(p, 6, 1, False)["U"])
    print(f"seed {seed}: {int((sv < 1).sum())} of 6 below 1:",
          " ".join(f"{v:.2f}" for v in sv.tolist()))
"""


@dataclass
class Run:
    """One command of a figure: its argv after ``echo-rnn`` (or ``-c CODE``, or a script of
    this repository, ``scripts/NAME.py ...``: Python run by the same interpreter), and what
    it gave."""

    args: list[str]
    json: bool = False  # the command prints one JSON object, parsed into ``result``
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system CPU of the command and every process it waited for
    started: str = ""
    load: float = 0.0
    stdout: str = ""
    result: Any = None

    def shown(self) -> str:
        """The command as the README writes it (without the script's own --logdir)."""
        args = list(self.args)
        if args[0] == "-c":
            return "python -c " + shlex.quote(args[1])
        if args[0].endswith(".py"):
            return "python " + shlex.join(args)
        if "--logdir" in args:
            i = args.index("--logdir")
            del args[i : i + 2]
        return "echo-rnn " + shlex.join(args)


@dataclass
class Figure:
    name: str
    what: str
    commands: Callable[[str], list[Run]]  # the logdir -> the runs, in order
    render: Callable[[list[Run]], str]  # the finished runs -> what the README shows
    heatmap: str | None = None  # docs/ file the sweep's heatmap.png becomes (--docs)
    runs: list[Run] = field(default_factory=list)


def sweep(
    logdir: str,
    name: str,
    *flags: str,
    echo_steps: str = "6",
    hidden_sizes: str = "6",
    seeds: str = "0-4",
) -> list[str]:
    return [
        "sweep",
        "--preset",
        "frontier",
        *flags,
        "--echo-steps",
        echo_steps,
        "--hidden-sizes",
        hidden_sizes,
        "--seeds",
        seeds,
        "--name",
        name,
        "--logdir",
        logdir,
        "--json",
    ]


def seeds_line(rows: list[dict]) -> str:
    """Per seed: the step it solved at, or its final held-out accuracy."""
    parts = []
    for r in sorted(rows, key=lambda r: (r["hidden_size"], r["echo_step"], r["seed"])):
        got = (
            f"solved at {r['solved_step']}"
            if r["solved"]
            else f"unsolved, val_acc {r['val_accuracy']:.3f} at step {r['step']}"
        )
        parts.append(f"seed {r['seed']}: {got}")
    solved = sum(r["solved"] for r in rows)
    return f"{solved} of {len(rows)} solved; " + "; ".join(parts)


def solved_cell(rows: list[dict]) -> str:
    steps = sorted(r["solved_step"] for r in rows if r["solved"])
    cell = f"{len(steps)} of {len(rows)}"
    return cell + (f" (steps {', '.join(map(str, steps))})" if steps else "")


def sweep_table(run: Run) -> str:
    """results.md's table, as the sweep wrote it (without its title line)."""
    md = Path(run.result["sweep_dir"], "results.md").read_text()
    return md.split("\n\n")[1].strip()


def events_bytes(run_dir: str) -> int:
    return sum(p.stat().st_size for p in Path(run_dir).rglob("events.out.tfevents.*"))


def figures() -> list[Figure]:
    def console(runs: list[Run]) -> str:
        return runs[0].stdout.rstrip()

    def frontier(runs: list[Run]) -> str:
        # the README's block: the last progress line, the verdict and the weights' hash
        lines = runs[0].stdout.splitlines()
        end = next(i for i, line in enumerate(lines) if line.startswith(("solved", "stopped")))
        return "\n".join([f"$ {runs[0].shown()}", "...", *lines[end - 1 : end + 2]])

    def sweeps(runs: list[Run]) -> str:
        return "\n".join(f"{r.shown()}:\n  {seeds_line(r.result['rows'])}" for r in runs)

    def variants(runs: list[Run]) -> str:
        lines = ["| without bias, seeds 0-4, k = H = 6 | solved |", "|---|---|"]
        lines += [
            f"| {label} | {solved_cell(r.result['rows'])} |" for label, r in zip(VARIANTS, runs)
        ]
        return "\n".join(lines)

    def table(runs: list[Run]) -> str:
        return sweep_table(runs[0])

    def events(runs: list[Run]) -> str:
        r = runs[0].result
        n = events_bytes(r["run_dir"])
        return (
            f"{r['step']} steps (stopped: {r['stopped']}), events {n:,} bytes "
            f"({n / 1e6:.1f} MB) under {Path(r['run_dir']).name}"
        )

    return [
        Figure(
            "train",
            "the `echo-rnn train` console example (First minutes, Training)",
            lambda d: [Run(["train"])],
            console,
        ),
        Figure(
            "notebook",
            "`--preset notebook`, seed 0: its solved step and epoch",
            lambda d: [Run(["train", "--preset", "notebook", "--logdir", d])],
            lambda runs: "\n".join(
                line
                for line in runs[0].stdout.splitlines()
                if line.startswith(("solved", "stopped", "weights"))
            ),
        ),
        Figure(
            "frontier",
            "the frontier command: solved step and final weights' hash",
            lambda d: [Run(["train", *FRONTIER, "--logdir", d])],
            frontier,
        ),
        Figure(
            "frontier-bias",
            "k = H = 6 with bias, seeds 0-4",
            lambda d: [Run(sweep(d, "frontier-bias", "--bias"), json=True)],
            sweeps,
        ),
        Figure(
            "frontier-no-bias",
            "k = H = 6 without bias, seeds 0-9: a normal U (the "
            "preset alone) and --orthogonal-gain 1.2, each then continued to 80000 steps",
            lambda d: [
                Run(sweep(d, name, "--no-bias", *flags, *steps, seeds="0-9"), json=True)
                for name, flags in (
                    ("frontier-no-bias-normal", []),
                    ("frontier-no-bias", ["--orthogonal-gain", "1.2"]),
                )
                for steps in ([], ["--steps", "80000"])
            ],
            sweeps,
        ),
        Figure(
            "variants",
            "the variants table without bias (seeds 0-4, k = H = 6)",
            lambda d: [
                Run(sweep(d, f"variant-{i}", "--no-bias", *flags), json=True)
                for i, flags in enumerate(VARIANTS.values())
            ],
            variants,
        ),
        Figure(
            "recipe",
            "the recipe's alternatives, seeds 0-9: with bias an orthogonal U, a "
            "curriculum; the curriculum without bias; with bias small input weights, and "
            "the rate halved every 2000 steps (the preset alone with bias is "
            "the capacity10 sweep's k = H = 6)",
            lambda d: [
                Run(
                    sweep(
                        d,
                        "bias-orthogonal",
                        "--bias",
                        "--orthogonal-gain",
                        "1.2",
                        "--steps",
                        "30000",
                        seeds="0-9",
                    ),
                    json=True,
                ),
                Run(sweep(d, "bias-curriculum", "--bias", *CURRICULUM, seeds="0-9"), json=True),
                Run(
                    sweep(d, "no-bias-curriculum", "--no-bias", *CURRICULUM, seeds="0-9"), json=True
                ),
                Run(
                    sweep(d, "bias-small-input", "--bias", "--input-init-std", "0.3", seeds="0-9"),
                    json=True,
                ),
                Run(
                    sweep(d, "bias-lr-halving", "--bias", "--lr-halve-every", "2000", seeds="0-9"),
                    json=True,
                ),
            ],
            sweeps,
        ),
        Figure(
            "capacity-curriculum",
            "the capacity sweep with a curriculum, k = H and H+1 at H = 6, 8 (with bias)",
            lambda d: [
                Run(
                    sweep(
                        d,
                        "capacity-curriculum",
                        "--bias",
                        *CURRICULUM,
                        echo_steps="H-H+1",
                        hidden_sizes="6,8",
                    ),
                    json=True,
                )
            ],
            sweeps,
        ),
        Figure(
            "capacity",
            "the capacity table and heatmap (seeds 0-4, H = 2-8)",
            lambda d: [
                Run(
                    sweep(d, "capacity", "--bias", echo_steps="1-H+1", hidden_sizes="2,4,6,8"),
                    json=True,
                )
            ],
            table,
            heatmap="capacity_heatmap.png",
        ),
        Figure(
            "capacity10",
            "the ten-seed capacity table and heatmap (480 runs, H = 2-12)",
            lambda d: [
                Run(
                    sweep(
                        d,
                        "capacity10",
                        "--bias",
                        echo_steps="1-H+1",
                        hidden_sizes="2,4,6,8,10,12",
                        seeds="0-9",
                    ),
                    json=True,
                )
            ],
            table,
            heatmap="capacity10_heatmap.png",
        ),
        Figure(
            "init",
            "the singular values of U as the engine draws it without bias "
            "(--preset frontier: N(0, 0.3^2)), seeds 0-9",
            lambda d: [Run(["-c", SINGULAR_VALUES])],
            lambda runs: runs[0].stdout.rstrip(),
        ),
        Figure(
            "events",
            "the events a 40000-step run writes (k = 7, H = 6, with bias)",
            lambda d: [
                Run(
                    [
                        "train",
                        "--preset",
                        "frontier",
                        "--hidden-size",
                        "6",
                        "--echo-step",
                        "7",
                        "--bias",
                        "--logdir",
                        d,
                        "--json",
                    ],
                    json=True,
                )
            ],
            events,
        ),
        Figure(
            "bench",
            "the benchmark table (`echo-rnn bench --budget 3 --markdown`)",
            lambda d: [Run(["bench", "--budget", "3", "--markdown"])],
            lambda runs: runs[0].stdout.rstrip(),
        ),
        Figure(
            "population",
            "whole runs: a population of 32 against single runs",
            lambda d: [Run(["bench", "--population", "32", "--bench-steps", "2000"])],
            lambda runs: runs[0].stdout.rstrip(),
        ),
        Figure(
            "kernel",
            "where a population's run-step goes: the compiled kernel's training "
            "step and evaluation alone, against the torch population's",
            lambda d: [Run(["scripts/bench_kernel.py"])],
            lambda runs: runs[0].stdout.rstrip(),
        ),
    ]


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def execute(run: Run, cwd: Path, env: dict[str, str]) -> None:
    run.started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    run.load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if run.args[0] == "-c":
        argv = run.args
    elif run.args[0].endswith(".py"):
        argv = [str(REPO / run.args[0]), *run.args[1:]]
    else:
        argv = ["-m", "echo_rnn", *run.args]
    p = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    run.wall_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds do not grow with the machine's load as wall time does: on a shared machine
    # they say what the command itself cost
    run.cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run.stdout = p.stdout
    if p.returncode != 0:
        raise SystemExit(
            f"readme_figures: `{run.shown()}` exited {p.returncode}:\n{p.stderr.strip()[-2000:]}"
        )
    if run.json:
        run.result = json.loads(p.stdout)


def wall(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def parse(argv: list[str], names: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Make every README figure that comes from training again, each by the "
        "README's own command. Figures: " + ", ".join(names) + "."
    )
    p.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="FIGURE",
        help="make only this figure (repeatable; one of: " + ", ".join(names) + ")",
    )
    p.add_argument("--list", action="store_true", help="list the figures and their commands")
    p.add_argument(
        "--logdir",
        type=Path,
        default=None,
        help="where runs and sweeps go (default: a temporary directory, removed)",
    )
    p.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="copy each sweep's heatmap.png to this folder under the README's name",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write every figure's runs and results to this JSON file",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    figs = figures()
    args = parse(sys.argv[1:] if argv is None else argv, [f.name for f in figs])
    if args.only:
        # in the order asked, so that the figure wanted first is made first
        by_name = {f.name: f for f in figs}
        figs = [by_name[n] for n in dict.fromkeys(args.only)]
    if args.list:
        for f in figs:
            print(f"{f.name}: {f.what}")
            for r in f.commands("LOGDIR"):
                print(f"  {r.shown()}")
        return 0
    if args.docs is not None and not args.docs.is_dir():
        print(f"readme_figures: argument --docs: {args.docs} is not a directory", file=sys.stderr)
        return 2
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    tmp = None
    if args.logdir is None:
        tmp = tempfile.mkdtemp(prefix="readme-figures-")
        logdir = Path(tmp)
    else:
        logdir = args.logdir.resolve()
        logdir.mkdir(parents=True, exist_ok=True)
    print(f"# README figures, {machine()}\n")
    try:
        for f in figs:
            f.runs = f.commands(str(logdir / "runs"))
            for r in f.runs:
                execute(r, logdir, env)
            print(f"## {f.name}: {f.what}")
            for r in f.runs:
                print(
                    f"$ {r.shown()}\n  wall {wall(r.wall_s)} (CPU {wall(r.cpu_s)}), "
                    f"started {r.started}, "
                    f"load average {r.load:.1f} on {os.cpu_count()} cores"
                )
            print(f"\n{f.render(f.runs)}\n", flush=True)
            if f.heatmap and args.docs is not None:
                shutil.copyfile(
                    Path(f.runs[0].result["sweep_dir"], "heatmap.png"), args.docs / f.heatmap
                )
            if args.output is not None:
                # rewritten after each figure, so that an interrupted run keeps what it made
                args.output.write_text(
                    json.dumps(
                        {
                            "machine": machine(),
                            "figures": [
                                {
                                    "name": g.name,
                                    "what": g.what,
                                    "shown": g.render(g.runs),
                                    "runs": [
                                        {
                                            "command": r.shown(),
                                            "wall_s": r.wall_s,
                                            "cpu_s": r.cpu_s,
                                            "started": r.started,
                                            "load": r.load,
                                            "stdout": r.stdout,
                                            "result": r.result,
                                        }
                                        for r in g.runs
                                    ],
                                }
                                for g in figs
                                if g.runs and all(r.started for r in g.runs)
                            ],
                        },
                        indent=1,
                    )
                    + "\n"
                )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
