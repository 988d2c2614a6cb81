"""``echo-rnn sweep``: a grid of ordinary training runs (echo_rnn/sweep.py), every point
checked before the first one trains; the outcome prints itself (SweepOutcome.format)."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from echo_rnn.cli import Failed
from echo_rnn.cli.args import COUNT, arg_type
from echo_rnn.cli.train import add_setup_flags
from echo_rnn.config import (
    MAX_THREADS,
    Bounds,
    add_config_flags,
    build_config,
    check_dir_name,
    config_overrides,
)
from echo_rnn.console import strict_json
from echo_rnn.engine import distributed
from echo_rnn.run.checkpoint import CheckpointError
from echo_rnn.run.locks import Busy
from echo_rnn.run.rundir import StorageError, storage_reason
from echo_rnn.sweep import check_rerun, echo_steps_for, grid, parse_int_list, run_sweep

# The settings the sweep decides for each point: no flag of their own.
SWEEP_GRID = ("echo_step", "hidden_size", "seed", "run_name")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train over a grid of echo step x hidden size x seed",
        description=(
            "Train one run per (echo step, hidden size, seed), each an ordinary run directory "
            "LOGDIR/NAME/kK-HH-sS, then write LOGDIR/NAME/results.csv (a row per run), "
            "results.md (per (k, H): solve rate over seeds, median steps to solve) and "
            "heatmap.png (a file; TensorBoard has every run's hparams: each run's metrics "
            "include 'solved', 1 or 0, and 'solved_step', the step it was solved at or, never "
            "solved, the steps it ran, so that the HParams view draws every run). Re-running "
            "the same "
            "command skips finished points and resumes interrupted ones; re-run with a larger "
            "--steps, it also continues the points that ran out of steps unsolved. Other "
            "changed settings are refused (a new --name starts a new sweep). Under torchrun (any "
            "--nnodes, --nproc-per-node) the ranks share the grid and rank 0 writes the tables."
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn sweep --echo-steps 1-H+1 --hidden-sizes 2,4,6,8 --seeds 0-4 "
            "--name capacity\n"
            "  echo-rnn sweep --echo-steps 1-3 --hidden-sizes 4 --seeds 0-2 --steps 300 "
            "--workers 2\n"
            "  torchrun --nnodes 2 --nproc-per-node 8 ... -m echo_rnn sweep --echo-steps 1-9 ..."
        ),
    )
    g = p.add_argument_group("grid")
    g.add_argument(
        "--echo-steps",
        required=True,
        metavar="LIST",
        help="echo steps k, e.g. 1-8 or 1,2,5; H stands for the hidden size, so "
        "1-H+1 runs k = 1..H+1 for each H",
    )
    g.add_argument(
        "--hidden-sizes", required=True, metavar="LIST", help="hidden sizes H, e.g. 2,4,6,8 or 2-8"
    )
    g.add_argument("--seeds", default="0-4", metavar="LIST", help="seeds (default: 0-4)")
    g.add_argument(
        "--name",
        default="sweep",
        help="the sweep's directory under --logdir "
        "(default: sweep); re-use it to finish an interrupted sweep",
    )
    # processes, each with its runs' threads: no more than a run may have threads
    g.add_argument(
        "--workers",
        type=arg_type(int, Bounds(lo=1, hi=MAX_THREADS)),
        default=None,
        help="local worker processes (default: the number of cores divided by --threads, "
        "and among torchrun's local ranks)",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help="print the outcome as one JSON object (the counts, and a row per point "
        "as in results.csv) instead of a line per point and the table",
    )
    g.add_argument(
        "--population",
        type=COUNT,
        default=32,
        metavar="N",
        help="train up to N fresh points that share a shape as one population: one "
        "kernel call a step for all, each point still its own run (the same curve "
        "as train, bit for bit: by construction with the compiled kernel). Points "
        "join when they train with --backend auto, compiled or bptt, --schedule "
        "batch, no --cuda-graph, and not --curriculum with --lr-halve-every "
        "(--preset frontier does); others train alone. 1: every point alone "
        "(default: 32)",
    )
    add_setup_flags(p)
    add_config_flags(p, exclude=SWEEP_GRID)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    hs = parse_int_list(args.hidden_sizes, "hidden_sizes")
    ks = echo_steps_for(args.echo_steps, hs)
    seeds = parse_int_list(args.seeds, "seeds")
    check_dir_name(args.name, "name")
    base = build_config(args.preset, args.config, config_overrides(args), exclude=SWEEP_GRID)
    grid(base, ks, seeds, Path(base.logdir) / args.name)  # every point valid, up front
    check_rerun(Path(base.logdir) / args.name, base)

    kept = "the finished points are kept"
    d = distributed.init("cpu")  # the sweep's own collectives are small: gloo
    try:
        outcome = run_sweep(
            base,
            ks,
            seeds,
            args.name,
            args.workers,
            args.population,
            out=sys.stderr if args.json else None,
            progress=not args.json,
        )
    except CheckpointError as exc:  # a point's checkpoint, damaged since it was written
        raise Failed(f"{exc}; {kept}") from None
    except (StorageError, Busy) as exc:  # a full disk under a point; another sweep or run
        raise Failed(f"error: {exc}; {kept}") from None
    except OSError as exc:  # writing the tables (a point's own writes are StorageErrors)
        raise Failed(
            f"error: could not write the sweep in {base.logdir}/{args.name}: "
            f"{storage_reason(exc)}; {kept}"
        ) from None
    except BrokenProcessPool:
        raise Failed(
            f"a worker process died (killed, or out of memory); {kept}: run the "
            "same command again to finish the rest"
        ) from None
    finally:
        distributed.shutdown()
    if not d.is_main:
        return 0 if outcome.interrupted is None else 128 + outcome.interrupted
    sweep_dir = f"{base.logdir}/{args.name}"
    if args.json:
        print(strict_json(outcome.to_dict(sweep_dir)))
    if outcome.interrupted is not None:
        raise Failed(outcome.stopped_line(), 128 + outcome.interrupted)
    if not args.json:
        print(outcome.format(sweep_dir, ks))
    return 0
