"""``echo-rnn bench``: training steps of every backend timed against torch.nn.RNN
(echo_rnn/bench.py), or whole populations against single runs (``--population``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from echo_rnn.bench import (
    SHAPES,
    format_population,
    run_benchmark,
    scaling,
    time_adam,
    time_population,
)
from echo_rnn.cli import UsageError
from echo_rnn.cli.args import COUNT, arg_type, device, setting, shape
from echo_rnn.config import PRESETS, Bounds
from echo_rnn.console import strict_json
from echo_rnn.devices import DEVICE_HELP, check_fits, rnn_bytes
from echo_rnn.files import write_atomically

# Bench's bounds: an hour of timing per shape, a million timed or warm-up steps: far beyond
# a useful benchmark, and short of running for ever.
MAX_BENCH_S = 3600.0
MAX_BENCH_REPS = 10**6
# --population times the first steps of runs of this many: the frontier preset's, which
# echo_rnn.bench.time_population trains.
POPULATION_RUN_STEPS = PRESETS["frontier"]["steps"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time a training step of every backend against torch.nn.RNN",
        description=(
            "Time a full training step (forward, loss, backward; no optimizer) of "
            "EchoRNN(backend='autograd'), EchoRNN(backend='bptt'), the compiled kernel (on "
            "a CPU where it is built) and torch.nn.RNN + nn.Linear with the same weights, "
            "interleaved in one process after a warm-up; report medians, sequences per "
            "second, the ratio to nn.RNN and the bytes saved for backward, then the Adam "
            "step's time, fused and not. Gradients are compared with nn.RNN's first; a "
            "backend that disagrees is not reported. Built-in shapes: "
            + ", ".join(f"{k} (B={b}, T={t}, H={h})" for k, (b, t, h) in SHAPES.items())
            + "."
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn bench                           # every built-in shape, 1 thread\n"
            "  echo-rnn bench --shape batch --shape tiny=8,20,4 --threads 2\n"
            "  echo-rnn bench --output bench.json --markdown\n"
            "  echo-rnn bench --device cuda --cuda-graph"
        ),
    )
    p.add_argument(
        "--shape",
        type=shape(SHAPES),
        action="append",
        metavar="NAME[=B,T,H]",
        help="a shape to run (repeatable; default: all built-in shapes)",
    )
    p.add_argument(
        "--add-shape",
        type=shape(SHAPES),
        action="append",
        default=[],
        metavar="NAME=B,T,H",
        help="run this shape besides the selected ones",
    )
    p.add_argument(
        "--threads",
        type=setting("threads"),
        default=1,
        help="torch.set_num_threads for the whole run (default: 1)",
    )
    p.add_argument("--device", type=device, default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="capture each step in a CUDA graph and replay it (CUDA only)",
    )
    p.add_argument(
        "--min-reps",
        type=arg_type(int, Bounds(lo=1, hi=MAX_BENCH_REPS)),
        default=30,
        help="at least this many timed steps per backend and shape (default: 30)",
    )
    p.add_argument(
        "--budget",
        type=arg_type(float, Bounds(lo=0, lo_open=True, hi=MAX_BENCH_S)),
        default=2.0,
        metavar="SECONDS",
        help="keep timing each shape at least this long (default: 2.0)",
    )
    p.add_argument(
        "--warmup",
        type=arg_type(int, Bounds(lo=0, hi=MAX_BENCH_REPS)),
        default=5,
        help="untimed rounds first (default: 5)",
    )
    p.add_argument(
        "--seed", type=setting("seed"), default=0, help="seed of weights and data (default: 0)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--output",
        metavar="FILE.json",
        default=None,
        help="also write the results as JSON to this file",
    )
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    p.add_argument(
        "--population",
        type=COUNT,
        default=None,
        metavar="R",
        help="instead: time whole runs (data, evaluation, TensorBoard, checkpoints) "
        "at the frontier shape, a population of R against single runs, and "
        "report ms per run-step of each (see --bench-steps)",
    )
    p.add_argument(
        "--bench-steps",
        type=COUNT,
        default=2000,
        metavar="N",
        help=f"with --population: time the first N steps of each "
        f"{POPULATION_RUN_STEPS}-step frontier run, N below "
        f"{POPULATION_RUN_STEPS} (default: 2000)",
    )
    p.set_defaults(run=run)


def _output(args: argparse.Namespace) -> Path | None:
    """--output, checked before minutes of timing, not after."""
    if args.output is None:
        return None
    if not args.output.strip():
        raise UsageError(f"argument --output: must be a file name, got {args.output!r}")
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"argument --output: {out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise UsageError(f"argument --output: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"argument --output: directory {out.parent} is not writable")
    return out


def run(args: argparse.Namespace) -> int:
    if args.cuda_graph and args.device.type != "cuda":
        raise UsageError("argument --cuda-graph: needs --device cuda")
    shapes = dict(args.shape) if args.shape else dict(SHAPES)
    shapes.update(dict(args.add_shape))
    if args.markdown and args.json:
        raise UsageError("argument --markdown: not with --json (one format at a time)")
    out = _output(args)
    if args.population is not None:
        return _population(args, out)
    for name, (B, T, H) in shapes.items():
        reason = check_fits(
            3 * rnn_bytes(B, T, H), args.device, f"shape {name} (B={B}, T={T}, H={H})"
        )
        if reason:
            raise UsageError(f"argument --shape: too large: {reason}")
    report = run_benchmark(
        shapes,
        args.device,
        threads=args.threads,
        warmup=args.warmup,
        min_reps=args.min_reps,
        budget_s=args.budget,
        cuda_graph=args.cuda_graph,
        seed=args.seed,
        progress=(lambda s: print(f"timing {s} ...", file=sys.stderr, flush=True))
        if sys.stderr.isatty()
        else None,
    )
    adam = time_adam(6, args.device, threads=args.threads, seed=args.seed)
    data = {**report.to_dict(), "scaling_in_T": scaling(report), "adam_step_s": adam}
    print(strict_json(data) if args.json else report.format(adam, args.markdown))
    for line in report.refused:
        print(f"not reported: {line}", file=sys.stderr)
    if out is not None:
        text = (strict_json(data) + "\n").encode()
        try:
            write_atomically(out, lambda fh: fh.write(text))
        except OSError as exc:
            raise UsageError(
                f"argument --output: cannot write {out}: {exc.strerror or exc}"
            ) from None
    return 1 if report.refused else 0


def _population(args: argparse.Namespace, out: Path | None) -> int:
    """--population: whole frontier runs, a population against single ones."""
    if args.device.type != "cpu" or args.cuda_graph:
        raise UsageError("argument --population: times the CPU (without --device, --cuda-graph)")
    if args.bench_steps >= POPULATION_RUN_STEPS:
        raise UsageError(
            f"argument --bench-steps: must be below the runs' "
            f"{POPULATION_RUN_STEPS} steps, got {args.bench_steps}"
        )
    result = time_population(
        args.population, args.bench_steps, threads=args.threads, seed=args.seed
    )
    text = strict_json(result)
    print(text if args.json else format_population(result))
    if out is not None:
        write_atomically(out, lambda fh: fh.write(text.encode() + b"\n"))
    return 0
