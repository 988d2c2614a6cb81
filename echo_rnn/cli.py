"""The ``echo-rnn`` command: one subcommand per job, each a thin layer over the library.

Usage errors print one line naming the argument and what is valid, and exit with status 2.
This module imports nothing heavy at the top (no torch): ``main`` installs its signal
handling first, so that Ctrl-C or SIGTERM while torch loads is one line, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence

from echo_rnn.errors import ConfigError


EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument found after parsing (e.g. two flags that contradict each other)."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage + error, and no abbreviations: a
    prefix like ``--seed`` for the sweep's ``--seeds`` is an error, not a guess."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description wrapped to the terminal, the examples in the epilog kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _typed(convert: Callable[[str], object], ok: Callable[[object], bool], what: str):
    def parse(text: str):
        try:
            if not text.isascii():  # int() takes Arabic-Indic digits too: not a flag's
                raise ValueError
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _typed(int, lambda v: v > 0, "a positive integer")
nonneg_int = _typed(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _typed(float, lambda v: v > 0 and v != float("inf"), "a positive number")


def device_arg(text: str):
    from echo_rnn.devices import resolve_device

    try:
        return resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- gradcheck -------------------------------------------------------------------------


def add_gradcheck(sub) -> None:
    from echo_rnn.config import add_field_flags
    from echo_rnn.devices import DEVICE_HELP, DTYPES
    from echo_rnn.problem import GradcheckProblem

    p = sub.add_parser(
        "gradcheck",
        help="check BPTT gradients against autograd: echo-rnn's kernels, or your own (--grads)",
        description=(
            "Build a seeded model and echo batch, compute the gradients of the echo cost with "
            "the hand-written BPTT kernel and with autograd, and print one row per parameter. "
            "Then run torch.autograd.gradcheck (finite differences, float64) on the kernel's "
            "autograd Function. With --grads, check your own BPTT function instead: each "
            "gradient that disagrees is matched against a catalogue of classic BPTT mistakes, "
            "and the mistake and its fix are named (README: \"Check your own BPTT\"). "
            "Exit status 0 when everything agrees, 1 when anything disagrees."
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn gradcheck                      # the notebook's shape, B=1 T=50 H=6\n"
            "  echo-rnn gradcheck --batch-size 32 --seq-len 200 --hidden-size 64 "
            "--input-size 3 --bias --h0 --truncate 25 --json\n"
            "  echo-rnn gradcheck --grads examples/my_bptt.py:bptt    # your own BPTT\n"
            "  echo-rnn gradcheck --per-step --plot flow.png          # dJ/dh_t step by step"
        ),
    )
    # the problem's flags are GradcheckProblem's fields (echo_rnn/problem.py)
    groups = {"problem": p.add_argument_group("problem"), "run": p.add_argument_group("run")}
    add_field_flags(groups, GradcheckProblem)
    r = groups["run"]
    r.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="dtype of the comparison; gradcheck itself always uses float64 "
                        "(default: float64, the only one with --grads)")
    r.add_argument("--device", type=device_arg, default="cpu",
                   help=f"{DEVICE_HELP} (default: cpu; --grads runs on the cpu)")
    r.add_argument("--kernel", choices=("both", "reference", "fast"), default=None,
                   help="which hand-written kernel to check: reference (echo_rnn/reference.py, "
                        "written to be read), fast (echo_rnn/bptt.py, what --backend bptt trains "
                        "with) or both (default: both)")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    y = p.add_argument_group("your own BPTT")
    y.add_argument("--grads", metavar="PATH.py:FUNCTION", default=None,
                   help="check this function instead of echo-rnn's kernels: it is called with "
                        "U (H, H), V (H, I), w (H,), x, y (and b, h0 with --bias, --h0) and "
                        "returns a dict of the gradients of J keyed like them, optionally with "
                        "'dh', dJ/dh_t per step; x and y are (T,) when B = I = 1, else "
                        "(B, T, I) and (B, T)")
    y.add_argument("--arrays", choices=("numpy", "torch"), default=None,
                   help="what --grads passes: float64 numpy arrays or float64 torch tensors "
                        "(default: numpy)")
    y.add_argument("--timeout", type=_timeout_arg, default=None, metavar="SECONDS",
                   help="--grads runs your function in a process of its own and stops it "
                        "after this many seconds (default: 60)")
    y.add_argument("--memory", type=_memory_arg, default=None, metavar="GiB",
                   help="the memory (address space) your function's process may use, in GiB; "
                        "beyond it, it gets a MemoryError (default: 8; 0: no limit)")
    f = p.add_argument_group("gradient flow through time")
    f.add_argument("--per-step", action="store_true",
                   help="print ||dJ/dh_t|| for every step t, from the kernel (or your 'dh') and "
                        "from autograd, and the norm of their difference")
    f.add_argument("--plot", metavar="FILE.png", default=None,
                   help="draw ||dJ/dh_t|| against t on a log scale into FILE (.png, .pdf or .svg)")
    p.set_defaults(func=cmd_gradcheck)


def _timeout_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, 86400], "
                                         f"got {text!r}")
    return value


def _memory_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1 << 20:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number of GiB in [0, 1048576] (0: no "
                                         f"limit), got {text!r}")
    if 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"must be at least 0.5 GiB (Python and numpy need "
                                         f"that much to start), or 0 for no limit, got {text!r}")
    return value


def _gradcheck_problem(args: argparse.Namespace):
    """The problem the flags describe (a GradcheckProblem), after the combinations argparse
    cannot refuse; fills in the mode-dependent defaults of the other flags."""
    from echo_rnn.config import given_fields
    from echo_rnn.problem import KERNEL_SEED, GradcheckProblem

    given = given_fields(args, GradcheckProblem)
    defaults = GradcheckProblem()
    k = given.get("echo_step", defaults.echo_step)
    T = given.get("seq_len", defaults.seq_len)
    if k >= T:
        raise UsageError(f"argument --echo-step: must be below --seq-len ({T}), got {k}")
    if args.grads is None:
        for flag, what in (("arrays", "what your function is given"),
                           ("timeout", "how long your function may run"),
                           ("memory", "the memory your function's process may use")):
            if getattr(args, flag) is not None:
                raise UsageError(f"argument --{flag}: only with --grads ({what})")
        if "truncation" in given:
            raise UsageError("argument --truncation: only with --grads (echo-rnn's kernels "
                             "truncate in windows)")
        args.dtype, args.kernel = args.dtype or "float64", args.kernel or "both"
        return GradcheckProblem(**{"seed": KERNEL_SEED, **given})
    # --grads: the learner's function computes the gradient of J in float64 on
    # the CPU; the settings that say otherwise are refused rather than ignored
    if "truncation" in given and given.get("truncate") is None:
        raise UsageError("argument --truncation: only with --truncate k (how far back)")
    for flag, bad in (("--kernel", args.kernel is not None),
                      ("--dtype", args.dtype not in (None, "float64")),
                      ("--device", str(args.device) != "cpu")):
        if bad:
            raise UsageError(f"argument {flag}: not with --grads, which checks your function's "
                             "float64 gradients on the cpu")
    args.arrays, args.dtype = args.arrays or "numpy", "float64"
    if args.timeout is None:
        from echo_rnn.sandbox import DEFAULT_TIMEOUT

        args.timeout = DEFAULT_TIMEOUT
    return GradcheckProblem(**given)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from echo_rnn.compare import format_rows, gradcheck_report, make_problem
    from echo_rnn.devices import DTYPES, check_fits, rnn_bytes
    from echo_rnn.flow import check_plot_path

    problem = _gradcheck_problem(args)
    if args.plot is not None:  # resolved now: nothing that runs later can move it
        args.plot = str(check_plot_path(args.plot).resolve())
    dtype = DTYPES[args.dtype]
    B, T, H, I = problem.batch_size, problem.seq_len, problem.hidden_size, problem.input_size
    # the comparison's two graphs, and gradcheck's float64 copies beside them (with --grads,
    # the catalogue's variations instead)
    reason = check_fits(3 * rnn_bytes(B, T, H, I, itemsize=8), args.device,
                        f"B={B}, T={T}, H={H}, I={I}")
    if reason:
        biggest = max((("--batch-size", B), ("--seq-len", T / 50), ("--hidden-size", H / 6)),
                      key=lambda kv: kv[1])[0]
        raise UsageError(f"argument {biggest}: too large: {reason}")
    if args.grads is not None:
        return _gradcheck_learner(args, problem)
    model, x, y, h0 = make_problem(problem, dtype=dtype, device=args.device)
    kernels = ("reference", "fast") if args.kernel == "both" else (args.kernel,)
    reports = [gradcheck_report(model, x, y, h0, problem.truncate, kernel=k) for k in kernels]
    agrees = all(r.agrees for r in reports)
    run = {"dtype": args.dtype, "device": str(args.device)}
    flow, label = None, problem.describe()
    if args.per_step or args.plot:
        from echo_rnn.compare import autograd_hidden_grads, manual_grads
        from echo_rnn.flow import per_step

        flow = per_step({k: manual_grads(model, x, y, h0, kernel=k, hidden=True)["dh"]
                         for k in kernels}, autograd_hidden_grads(model, x, y, h0))
    if args.json:
        # "rows" and "gradcheck" are the last kernel's (the fast one's unless --kernel
        # reference), as before --kernel existed; "kernels" has each.
        out = {"config": {**problem.to_dict(), **run, "kernel": args.kernel},
               **reports[-1].to_dict(),
               "agrees": agrees, "kernels": {r.kernel: r.to_dict() for r in reports}}
        if args.per_step:
            out["per_step"] = flow
        print(_strict_json(out))  # --init-std 1e300: NaN in the rows, which JSON cannot say
        _show_flow(args, flow, label, quiet=True)
    else:
        print(f"echo-rnn gradcheck: {problem.describe()} "
              + " ".join(f"{k}={v}" for k, v in run.items()))
        function = {"reference": "ReferenceFunction", "fast": "BPTTFunction"}
        for report in reports:
            print(f"hand-written BPTT, {report.kernel} kernel, vs autograd:")
            print(format_rows(report.rows))
            mode = ("fast mode (random projections)" if report.gradcheck_fast_mode
                    else "full Jacobian")
            print(f"torch.autograd.gradcheck on {function[report.kernel]} (finite differences, "
                  f"float64, {mode}, full BPTT): {report.gradcheck_message}")
        if problem.truncate is not None and flow is not None:
            print(f"(the gradient flow below is full BPTT's, not truncated at "
                  f"{problem.truncate})")
        _show_flow(args, flow, label)
        print("all gradients agree" if agrees else "GRADIENTS DISAGREE")
    return 0 if agrees else 1


def _show_flow(args: argparse.Namespace, flow: dict | None, problem: str,
               quiet: bool = False, departure: int | None = None) -> None:
    """The --per-step table and the --plot file, when asked for."""
    from echo_rnn.flow import format_per_step, plot_flow

    if flow is None:
        return
    if args.per_step and not quiet:
        print("gradient flow through time, ||dJ/dh_t|| per step (full BPTT):")
        print(format_per_step(flow))
    if args.plot:
        curves = {n: v for n, v in flow.items() if n != "t" and not n.endswith(" diff")}
        diffs = {f"||{n.removesuffix(' diff')} - autograd||": v for n, v in flow.items()
                 if n.endswith(" diff")}
        plot_flow(args.plot, curves, f"gradient flow through time, {problem}", diffs,
                  departure)
        if not quiet:
            print(f"plot: {args.plot}")


def _gradcheck_learner(args: argparse.Namespace, spec) -> int:
    """--grads: the learner's function, run in a process of its own (echo_rnn.sandbox),
    against autograd, with the diagnosis. Whatever their code does, one line says what
    happened; what it printed is shown on stderr, marked as theirs."""
    from echo_rnn.learner import BadReturn, check_file, make_learner_problem
    from echo_rnn.sandbox import LearnerFailed, show_output

    problem = make_learner_problem(spec)  # spec: the GradcheckProblem of the flags
    where = args.grads.rpartition(":")
    where = f"{os.path.basename(where[0])}:{where[2]}"

    def printed(text: str) -> None:
        shown = show_output(text, where)
        if shown:
            print(shown, file=sys.stderr)

    try:
        report = check_file(args.grads, problem, arrays=args.arrays, timeout=args.timeout,
                            memory=None if args.memory is None else int(args.memory * (1 << 30)))
    except LearnerFailed as exc:
        printed(exc.output)
        if exc.traceback:
            sys.stderr.write(exc.traceback if exc.traceback.endswith("\n")
                             else exc.traceback + "\n")
        print(f"echo-rnn gradcheck: {exc.line}", file=sys.stderr)
        if args.json:  # a script still gets its one object, saying why there are no rows
            out = {"grads": where, "agrees": False, "rows": [], "failed": exc.kind,
                   "message": exc.line}
            if exc.error:
                out["raised"] = exc.error
            if exc.output:
                out["printed"] = exc.output
            print(_strict_json(out))
        return 1
    except BadReturn as exc:
        printed(exc.printed)
        print(f"echo-rnn gradcheck: what {where} returned cannot be checked:", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        if args.json:
            print(_strict_json({"grads": where, "agrees": False, "rows": [],
                                "return_problems": exc.problems}))
        return 1
    printed(report.printed)
    flow = None
    if args.per_step or args.plot:
        from echo_rnn.flow import per_step

        flow = per_step({"yours": report.dh} if report.dh is not None else {},
                        report.autograd_dh)
    if args.json:
        out = report.to_dict()
        if args.per_step:
            out["per_step"] = flow
        print(_strict_json(out))
    else:
        print(report.format())
        if flow is not None and report.dh is None:
            print("(your function returned no 'dh': the gradient flow is autograd's alone)")
    label = f"{where}, {spec.describe()}"
    departed = report.departure
    if departed is None and report.dh is not None:  # told or not, where yours departs
        from echo_rnn.learner import departure

        departed = departure(report.dh, report.autograd_dh, report.tolerances.get("dh", 1e-8))
    _show_flow(args, flow, label, quiet=args.json,
               departure=departed["step"] if departed else None)
    return 0 if report.agrees else 1


def _strict_json(obj) -> str:
    """JSON that every parser reads: NaN and infinities (a learner's gradient can hold them)
    become the strings "NaN", "Infinity" and "-Infinity"."""
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2, allow_nan=False)


# --- train -----------------------------------------------------------------------------


def _add_setup_args(p: argparse.ArgumentParser):
    """--config and --preset, shared by train and sweep; returns their group."""
    from echo_rnn.config import PRESETS

    s = p.add_argument_group("setup")
    s.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file of settings (keys as the flags, with _ or -); flags override it")
    s.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named set of settings: notebook = the notebook's own experiment "
                        "(one fixed 50-bit sequence, SGD lr 0.01, an update per time step, "
                        "at most 1000 epochs); frontier = the recipe for echoing as far back "
                        "as there are hidden units, k = H (input weights at std 1.5, clipping, "
                        "constant lr 0.005, 40000 steps; see the README)")
    return s


def add_train(sub) -> None:
    from echo_rnn.config import add_config_flags

    p = sub.add_parser(
        "train",
        help="train the echo RNN, logging curves to TensorBoard",
        description=(
            "Train the echo RNN on the echo task and log to TensorBoard under "
            "LOGDIR/RUN_NAME/ (events, config.json, checkpoints/last.pt, summary.json). "
            "Settings come from the defaults, then --preset, then --config FILE.toml, then "
            "the flags. Ctrl-C or SIGTERM finishes the step, saves a checkpoint and exits "
            "130 or 143; --resume continues from it."
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn train                           # k=2, T=50, H=6: solved in ~100 steps\n"
            "  echo-rnn train --backend bptt --seed 3\n"
            "  echo-rnn train --preset notebook         # the notebook's experiment, done right\n"
            "  echo-rnn train --resume runs/NAME --steps 2000\n"
            "  tensorboard --logdir runs"
        ),
    )
    s = _add_setup_args(p)
    s.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue a run (its directory or a checkpoint file) with the config it "
                        "was started with; only --steps may be given with it. A run that "
                        "stopped before its first checkpoint starts again from step 0")
    s.add_argument("--json", action="store_true",
                   help="print the result as one JSON object (the fields of TrainResult) "
                        "instead of a line per evaluation")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    import dataclasses

    from echo_rnn import distributed
    from echo_rnn.checkpoint import CheckpointError
    from echo_rnn.config import PRESETS, build_config, config_overrides
    from echo_rnn.console import strict_json
    from echo_rnn.locks import Busy
    from echo_rnn.train import NonFiniteLoss, StorageError, TrainingInterrupted, open_run, train

    overrides = config_overrides(args)
    if args.resume is not None:
        extra = sorted(set(overrides) - {"steps"})
        if extra or args.config or args.preset:
            given = [f"--{k.replace('_', '-')}" for k in extra]
            given += ["--config"] * bool(args.config) + ["--preset"] * bool(args.preset)
            raise UsageError(
                f"argument --resume: a resumed run keeps its config; only --steps may be "
                f"given with it, got {' '.join(given)}")
        try:
            resume = open_run(args.resume)  # read once, here; train continues from it
            config = dataclasses.replace(resume.config, **overrides)
            config.validate()
        except ConfigError as exc:
            if exc.setting in overrides:  # --steps 0: the flag is wrong, not the run
                raise
            raise UsageError(f"argument --resume: {exc}") from None
        except CheckpointError as exc:
            raise UsageError(f"argument --resume: {exc}") from None
        except OSError as exc:  # a run directory or checkpoints/ without read permission
            raise UsageError(f"argument --resume: cannot read {exc.filename or args.resume}: "
                             f"{exc.strerror or exc}") from None
    else:
        resume = None
        config = build_config(args.preset, args.config, overrides)

    d = distributed.init(config.device)  # joins torchrun's process group, if launched by it
    if args.preset and d.is_main and args.resume is None:
        preset_backend = PRESETS[args.preset].get("backend")
        if preset_backend and config.backend == preset_backend:
            print(f"--preset {args.preset}: trains with the {preset_backend} backend (the "
                  "hand-written kernel); --backend autograd to change it", file=sys.stderr)
    try:
        result = train(config, resume=resume, verbose=not args.json)
    except CheckpointError as exc:
        raise UsageError(f"argument --resume: {exc}") from None
    except (NonFiniteLoss, StorageError, Busy) as exc:
        print(f"echo-rnn train: error: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        hint = (f"; continue with: echo-rnn train --resume {shlex.quote(str(exc.run_dir))}"
                if exc.step >= 0 else "")
        print(f"echo-rnn train: {exc}{hint}", file=sys.stderr)
        return 128 + exc.signum
    finally:
        distributed.shutdown()
    if not d.is_main:
        return 0
    if args.json:
        print(strict_json(dataclasses.asdict(result)))
        return 0

    def at(step: int) -> str:  # the notebook's schedule counts epochs of seq_len updates
        if config.schedule == "notebook":
            return f"step {step} (epoch {step // config.seq_len})"
        return f"step {step}"

    if result.solved_step is not None:
        verdict = f"solved at {at(result.solved_step)}"
    else:
        verdict = f"not solved after {result.step} steps" + (
            f" ({result.step // config.seq_len} epochs)" if config.schedule == "notebook" else "")
    print(f"{verdict}: val_acc {result.val_accuracy:.4f}, val_loss {result.val_loss:.5f}, "
          f"{result.wall_time_s:.1f}s on {result.device} with the {result.backend} backend")
    print(f"run saved in {result.run_dir}")
    # the run's own parent, not config.logdir: a resumed run may have been moved since
    print(f"view it: tensorboard --logdir {shlex.quote(str(Path(result.run_dir).parent))}")
    return 0


# --- sweep -----------------------------------------------------------------------------

SWEEP_GRID = ("echo_step", "hidden_size", "seed", "run_name")


def add_sweep(sub) -> None:
    # --workers: processes, each with its runs' threads; no more than a run may have threads
    from echo_rnn.config import MAX_THREADS, Bounds, add_config_flags, arg_type

    p = sub.add_parser(
        "sweep",
        help="train over a grid of echo step x hidden size x seed",
        description=(
            "Train one run per (echo step, hidden size, seed), each an ordinary run directory "
            "LOGDIR/NAME/kK-HH-sS, then write LOGDIR/NAME/results.csv (a row per run), "
            "results.md (per (k, H): solve rate over seeds, median steps to solve) and "
            "heatmap.png (also in TensorBoard, with every run's hparams). Re-running the same "
            "command skips finished points and resumes interrupted ones; re-run with a larger "
            "--steps, it also continues the points that ran out of steps unsolved. Other "
            "changed settings are refused (a new --name starts a new sweep). Under torchrun (any "
            "--nnodes, --nproc-per-node) the ranks share the grid and rank 0 writes the tables."
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn sweep --echo-steps 1-H+1 --hidden-sizes 2,4,6,8 --seeds 0-4 --name capacity\n"
            "  echo-rnn sweep --echo-steps 1-3 --hidden-sizes 4 --seeds 0-2 --steps 300 --workers 2\n"
            "  torchrun --nnodes 2 --nproc-per-node 8 ... -m echo_rnn sweep --echo-steps 1-9 ..."
        ),
    )
    g = p.add_argument_group("grid")
    g.add_argument("--echo-steps", required=True, metavar="LIST",
                   help="echo steps k, e.g. 1-8 or 1,2,5; H stands for the hidden size, so "
                        "1-H+1 runs k = 1..H+1 for each H")
    g.add_argument("--hidden-sizes", required=True, metavar="LIST",
                   help="hidden sizes H, e.g. 2,4,6,8 or 2-8")
    g.add_argument("--seeds", default="0-4", metavar="LIST", help="seeds (default: 0-4)")
    g.add_argument("--name", default="sweep", help="the sweep's directory under --logdir "
                   "(default: sweep); re-use it to finish an interrupted sweep")
    g.add_argument("--workers", type=arg_type(int, Bounds(lo=1, hi=MAX_THREADS)), default=None,
                   help="local worker processes (default: the number of cores, divided among "
                        "torchrun's local ranks)")
    g.add_argument("--json", action="store_true",
                   help="print the outcome as one JSON object (the counts, and a row per point "
                        "as in results.csv) instead of a line per point and the table")
    g.add_argument("--population", type=positive_int, default=32, metavar="N",
                   help="train up to N fresh points that share a shape as one population: one "
                        "batched kernel for all, each point still its own run (the same curve "
                        "as train, bit for bit on CPU). Points join when they train with "
                        "--backend bptt, --schedule batch, no curriculum or lr schedule, SGD or "
                        "--no-fused Adam (--preset frontier does); others train alone. "
                        "1: every point alone (default: 32)")
    _add_setup_args(p)
    add_config_flags(p, exclude=SWEEP_GRID)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    import shlex
    from concurrent.futures.process import BrokenProcessPool
    from pathlib import Path

    from echo_rnn import distributed
    from echo_rnn.checkpoint import CheckpointError
    from echo_rnn.config import build_config, check_dir_name, config_overrides
    from echo_rnn.console import strict_json
    from echo_rnn.locks import Busy
    from echo_rnn.sweep import check_rerun, echo_steps_for, grid, parse_int_list, run_sweep
    from echo_rnn.train import StorageError, storage_reason
    from echo_rnn.tables import results_markdown, summarize

    hs = parse_int_list(args.hidden_sizes, "hidden_sizes")
    ks = echo_steps_for(args.echo_steps, hs)
    seeds = parse_int_list(args.seeds, "seeds")
    check_dir_name(args.name, "name")
    base = build_config(args.preset, args.config, config_overrides(args), exclude=SWEEP_GRID)
    grid(base, ks, seeds, Path(base.logdir) / args.name)  # every point valid, up front
    check_rerun(Path(base.logdir) / args.name, base)

    d = distributed.init("cpu")  # the sweep's own collectives are small: gloo
    try:
        outcome = run_sweep(base, ks, seeds, args.name, args.workers, args.population,
                            out=sys.stderr if args.json else None)
    except CheckpointError as exc:  # a point's checkpoint, damaged since it was written
        print(f"echo-rnn sweep: {exc}; the finished points are kept", file=sys.stderr)
        return 1
    except (StorageError, Busy) as exc:  # a full disk under a point; another sweep or run
        print(f"echo-rnn sweep: error: {exc}; the finished points are kept", file=sys.stderr)
        return 1
    except OSError as exc:  # writing the tables (a point's own writes are StorageErrors)
        print(f"echo-rnn sweep: error: could not write the sweep in {base.logdir}/{args.name}: "
              f"{storage_reason(exc)}; the finished points are kept", file=sys.stderr)
        return 1
    except BrokenProcessPool:
        print("echo-rnn sweep: a worker process died (killed, or out of memory); the finished "
              "points are kept: run the same command again to finish the rest", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    if not d.is_main:
        return 0 if outcome.interrupted is None else 128 + outcome.interrupted
    sweep_dir = f"{base.logdir}/{args.name}"
    if args.json:
        finished = outcome.done == outcome.total
        print(strict_json({
            "sweep_dir": sweep_dir, "total": outcome.total, "done": outcome.done,
            "solved": sum(r["solved"] for r in outcome.rows),
            "interrupted": (signal.Signals(outcome.interrupted).name
                            if outcome.interrupted is not None else None),
            "tables": ([f"{sweep_dir}/{f}" for f in ("results.csv", "results.md", "heatmap.png")]
                       if finished else []),
            "rows": outcome.rows}))
    if outcome.interrupted is not None:
        name = signal.Signals(outcome.interrupted).name
        rest = ("the tables are written" if outcome.done == outcome.total
                else "run the same command again to finish the rest")
        print(f"echo-rnn sweep: stopped by {name}: {outcome.done} of {outcome.total} points "
              f"finished and kept; {rest}", file=sys.stderr)
        return 128 + outcome.interrupted
    if args.json:
        return 0
    solved = sum(r["solved"] for r in outcome.rows)
    print(f"{outcome.total} runs, {solved} solved; tables in {sweep_dir}/results.md, "
          f"results.csv, heatmap.png")
    all_ks = sorted({k for kk in ks.values() for k in kk})
    print(results_markdown(summarize(outcome.rows), all_ks, list(ks)).split("\n\n")[1])
    print(f"view it: tensorboard --logdir {shlex.quote(sweep_dir)}")
    return 0


# --- predict ---------------------------------------------------------------------------


def add_predict(sub) -> None:
    from echo_rnn.devices import DEVICE_HELP

    p = sub.add_parser(
        "predict",
        help="run a trained model on a bit string",
        description=(
            "Run the model of a checkpoint on BITS (a string of 0 and 1, or - to read it from "
            "stdin) and print the input, the predicted echo and the output at every step."
        ),
        epilog="example:\n  echo-rnn predict --checkpoint runs/NAME 0110100111010",
    )
    p.add_argument("bits", metavar="BITS", help="the input bits, e.g. 0110100111, or - for stdin")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a run directory or a checkpoint file")
    p.add_argument("--device", type=device_arg, default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from echo_rnn.checkpoint import CheckpointError
    from echo_rnn.console import strict_json
    from echo_rnn.predict import load_model, parse_bits, predict, read_bits

    try:
        x = parse_bits(read_bits(sys.stdin) if args.bits == "-" else args.bits)
    except ValueError as exc:
        raise UsageError(f"argument BITS: {exc}") from None
    try:
        model, config = load_model(args.checkpoint, args.device)
    except CheckpointError as exc:
        raise UsageError(f"argument --checkpoint: {exc}") from None
    y_hat = predict(model, x)[0].cpu()
    bits_in = "".join(str(int(v)) for v in x[0].tolist())
    bits_out = "".join("1" if v > 0.5 else "0" for v in y_hat.tolist())
    k = config.echo_step
    if args.json:
        print(strict_json({"echo_step": k, "input": bits_in, "echo": bits_out,
                          "expected": ("0" * k + bits_in)[: len(bits_in)],
                          "output": y_hat.tolist()}))
        return 0
    print(f"input      {bits_in}")
    print(f"echo (k={k}) {bits_out}")
    print(f"expected   {('0' * k + bits_in)[: len(bits_in)]}")
    print("   t  x  y_hat")
    for t, (xi, yi) in enumerate(zip(bits_in, y_hat.tolist())):
        print(f"{t:>4d}  {xi}  {yi:+.4f}")
    return 0


# --- bench -----------------------------------------------------------------------------


def shape_arg(text: str) -> tuple[str, tuple[int, int, int]]:
    """``NAME=B,T,H`` (a new shape) or ``NAME`` (a built-in one)."""
    from echo_rnn.bench import SHAPES

    if "=" not in text:
        if text not in SHAPES:
            raise argparse.ArgumentTypeError(
                f"unknown shape {text!r}: built-in are {', '.join(SHAPES)}, or give NAME=B,T,H")
        return text, SHAPES[text]
    name, _, dims = text.partition("=")
    try:
        B, T, H = (int(v) for v in dims.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be NAME=B,T,H with three integers, got {text!r}") from None
    if not name or min(B, T, H) <= 0:
        raise argparse.ArgumentTypeError(f"must be NAME=B,T,H with a name and B, T, H >= 1, got {text!r}")
    from echo_rnn.config import MAX_HIDDEN, MAX_SIZE

    if max(B, T) > MAX_SIZE or H > MAX_HIDDEN:
        raise argparse.ArgumentTypeError(
            f"must have B, T <= {MAX_SIZE} and H <= {MAX_HIDDEN}, got {text!r}")
    return name, (B, T, H)


# Bench's bounds: an hour of timing per shape, a million timed or warm-up steps: far beyond
# a useful benchmark, and short of running for ever.
MAX_BENCH_S = 3600.0
MAX_BENCH_REPS = 10**6


def add_bench(sub) -> None:
    from echo_rnn.bench import SHAPES
    from echo_rnn.config import Bounds, arg_type, bounded_arg
    from echo_rnn.devices import DEVICE_HELP

    p = sub.add_parser(
        "bench",
        help="time a training step of both backends against torch.nn.RNN",
        description=(
            "Time a full training step (forward, loss, backward; no optimizer) of "
            "EchoRNN(backend='autograd'), EchoRNN(backend='bptt') and torch.nn.RNN + "
            "nn.Linear with the same weights, interleaved in one process after a warm-up; "
            "report medians, sequences per second, the ratio to nn.RNN and the bytes saved "
            "for backward. Gradients are compared with nn.RNN's first; a backend that "
            "disagrees is not reported. Built-in shapes: "
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
    p.add_argument("--shape", type=shape_arg, action="append", metavar="NAME[=B,T,H]",
                   help="a shape to run (repeatable; default: all built-in shapes)")
    p.add_argument("--add-shape", type=shape_arg, action="append", default=[],
                   metavar="NAME=B,T,H", help="run this shape besides the selected ones")
    p.add_argument("--threads", type=bounded_arg("threads"), default=1,
                   help="torch.set_num_threads for the whole run (default: 1)")
    p.add_argument("--device", type=device_arg, default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture each step in a CUDA graph and replay it (CUDA only)")
    p.add_argument("--min-reps", type=arg_type(int, Bounds(lo=1, hi=MAX_BENCH_REPS)), default=30,
                   help="at least this many timed steps per backend and shape (default: 30)")
    p.add_argument("--budget", type=arg_type(float, Bounds(lo=0, lo_open=True, hi=MAX_BENCH_S)),
                   default=2.0, metavar="SECONDS",
                   help="keep timing each shape at least this long (default: 2.0)")
    p.add_argument("--warmup", type=arg_type(int, Bounds(lo=0, hi=MAX_BENCH_REPS)), default=5,
                   help="untimed rounds first (default: 5)")
    p.add_argument("--seed", type=bounded_arg("seed"), default=0,
                   help="seed of weights and data (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--output", metavar="FILE.json", default=None,
                   help="also write the results as JSON to this file")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    p.add_argument("--population", type=positive_int, default=None, metavar="R",
                   help="instead: time whole runs (data, evaluation, TensorBoard, checkpoints) "
                        "at the frontier shape, a population of R against single runs, and "
                        "report ms per run-step of each (see --bench-steps)")
    p.add_argument("--bench-steps", type=positive_int, default=2000, metavar="N",
                   help="with --population: time the first N steps of each 40000-step "
                        "frontier run, N below 40000 (default: 2000)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from echo_rnn.bench import (SHAPES, format_markdown, format_scaling, format_table,
                                run_benchmark, scaling, time_adam)
    from echo_rnn.checkpoint import write_atomically
    from echo_rnn.console import strict_json
    from echo_rnn.devices import check_fits, rnn_bytes

    if args.cuda_graph and args.device.type != "cuda":
        raise UsageError("argument --cuda-graph: needs --device cuda")
    shapes = dict(args.shape) if args.shape else dict(SHAPES)
    shapes.update(dict(args.add_shape))
    if args.markdown and args.json:
        raise UsageError("argument --markdown: not with --json (one format at a time)")
    if args.output is not None and not args.output.strip():
        raise UsageError(f"argument --output: must be a file name, got {args.output!r}")
    out = Path(args.output) if args.output is not None else None
    if out is not None:  # checked before minutes of timing, not after
        if out.is_dir():
            raise UsageError(f"argument --output: {out} is a directory; give a file name")
        if not out.parent.is_dir():
            raise UsageError(f"argument --output: directory {out.parent} does not exist")
        if not os.access(out.parent, os.W_OK):
            raise UsageError(f"argument --output: directory {out.parent} is not writable")
    if args.population is not None:
        from echo_rnn.bench import format_population, time_population

        if args.device.type != "cpu" or args.cuda_graph:
            raise UsageError("argument --population: times the CPU (without --device, "
                             "--cuda-graph)")
        if args.bench_steps >= 40000:
            raise UsageError(f"argument --bench-steps: must be below the runs' 40000 steps, "
                             f"got {args.bench_steps}")
        result = time_population(args.population, args.bench_steps, threads=args.threads,
                                 seed=args.seed)
        text = strict_json(result)
        print(text if args.json else format_population(result))
        if out is not None:
            write_atomically(out, lambda fh: fh.write(text.encode() + b"\n"))
        return 0
    for name, (B, T, H) in shapes.items():
        reason = check_fits(3 * rnn_bytes(B, T, H), args.device, f"shape {name} (B={B}, T={T}, H={H})")
        if reason:
            raise UsageError(f"argument --shape: too large: {reason}")
    report = run_benchmark(
        shapes, args.device, threads=args.threads, warmup=args.warmup, min_reps=args.min_reps,
        budget_s=args.budget, cuda_graph=args.cuda_graph, seed=args.seed,
        progress=(lambda s: print(f"timing {s} ...", file=sys.stderr, flush=True))
        if sys.stderr.isatty() else None)
    adam = time_adam(6, args.device, threads=args.threads, seed=args.seed)
    data = {**report.to_dict(), "scaling_in_T": scaling(report), "adam_step_s": adam}
    if args.json:
        print(strict_json(data))
    else:
        print(f"echo-rnn bench: device={report.device} threads={report.threads} "
              f"torch={report.torch_version} cuda_graph={report.cuda_graph}; medians of "
              "interleaved steps (forward, loss, backward)")
        print(format_markdown(report) if args.markdown else format_table(report))
        scaling_line = format_scaling(report)
        if scaling_line:
            print(scaling_line)
        print(f"Adam step at H=6 (the trainer's optimizer): fused {adam['fused'] * 1e6:.1f} us, "
              f"unfused {adam['unfused'] * 1e6:.1f} us ({adam['unfused'] / adam['fused']:.2f}x)")
    for line in report.refused:
        print(f"not reported: {line}", file=sys.stderr)
    if out is not None:
        text = (strict_json(data) + "\n").encode()
        try:
            write_atomically(out, lambda fh: fh.write(text))
        except OSError as exc:
            raise UsageError(f"argument --output: cannot write {out}: "
                             f"{exc.strerror or exc}") from None
    return 1 if report.refused else 0


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:  # without importing torch, which takes a second
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def build_parser() -> Parser:
    parser = Parser(
        prog="echo-rnn",
        description=(
            "A vanilla tanh RNN on the binary echo task, with hand-written backprop through "
            "time beside PyTorch's autograd."
        ),
    )
    from echo_rnn import __version__

    parser.add_argument("--version", action="version",
                        version=f"echo-rnn {__version__} (torch {_torch_version()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    add_train(sub)
    add_sweep(sub)
    add_gradcheck(sub)
    add_predict(sub)
    add_bench(sub)
    return parser


def _check_top_level(parser: Parser, argv: list[str]) -> None:
    """Before a command only --help and --version may come: a misspelt one (--versio) is
    named, not reported as a missing COMMAND."""
    import difflib

    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        close = difflib.get_close_matches(argv[0], ["--help", "--version"], n=1)
        parser.error(f"unrecognized argument {argv[0]}"
                     + (f" (did you mean {close[0]}?)" if close else ""))


# What each command imports before it runs (torch among it): loaded while signals wait.
COMMAND_MODULES = {"train": "echo_rnn.train", "sweep": "echo_rnn.sweep",
                   "gradcheck": "echo_rnn.compare", "predict": "echo_rnn.predict",
                   "bench": "echo_rnn.bench"}


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    from echo_rnn.console import safe_stdout
    from echo_rnn.signals import Terminated, exit_status, stop_requests, terminate_raises

    command = "echo-rnn"

    def stopped(signum: int) -> int:
        kept = ("nothing was written" if command == "echo-rnn bench"
                else "what was saved is kept")
        print(f"{command}: stopped by {signal.Signals(signum).name}; {kept}", file=sys.stderr)
        return exit_status(signum)

    try:
        # Signals wait while torch and the command's modules load: an import cut in half
        # can leave a module broken (numpy without its functions), and the command fail
        # with an unrelated error. A second signal acts at once.
        with stop_requests() as held:
            parser = build_parser()
            _check_top_level(parser, sys.argv[1:] if argv is None else list(argv))
            args = parser.parse_args(argv)
            command = f"echo-rnn {args.command}"
            importlib.import_module(COMMAND_MODULES[args.command])
        if held:
            return stopped(held[0])
        # While the command runs, SIGTERM and SIGHUP are exceptions as Ctrl-C is: a signal
        # outside a training loop ends in one line, not a traceback. A stdout closed by its
        # reader (`| head`) stops the printing, not the command.
        with terminate_raises(), safe_stdout():
            return args.func(args)
    except UsageError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:  # the library names the setting; here it becomes the flag
        print(f"{command}: error: {exc.for_cli()}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Terminated) as exc:
        return stopped(signal.SIGINT if isinstance(exc, KeyboardInterrupt) else exc.signum)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
