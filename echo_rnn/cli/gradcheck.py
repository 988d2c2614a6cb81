"""``echo-rnn gradcheck``: echo-rnn's kernels (echo_rnn/compare.py), or the learner's own
BPTT (``--grads``, echo_rnn/learner.py), against autograd. The problem's flags are
Problem's fields (echo_rnn/problem.py); each report prints itself."""

from __future__ import annotations

import argparse
import os
import sys

from echo_rnn.cli import Failed, UsageError
from echo_rnn.cli.args import device, memory_gib, timeout_s
from echo_rnn.compare import autograd_hidden_grads, gradcheck_report, manual_grads
from echo_rnn.config import add_field_flags, given_fields
from echo_rnn.console import strict_json
from echo_rnn.devices import DEVICE_HELP, DTYPES, check_fits, rnn_bytes
from echo_rnn.flow import check_plot_path, format_per_step, per_step, plot_flow
from echo_rnn.learner import BadReturn, check_file, departure, make_learner_problem
from echo_rnn.problem import KERNEL_SEED, Problem
from echo_rnn.run.rundir import storage_reason
from echo_rnn.sandbox import DEFAULT_TIMEOUT, LearnerFailed, show_output


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gradcheck",
        help="check BPTT gradients against autograd: echo-rnn's kernels, or your own (--grads)",
        description=(
            "Build a seeded model and echo batch, compute the gradients of the echo cost with "
            "the hand-written BPTT kernel and with autograd, and print one row per parameter. "
            "Then run torch.autograd.gradcheck (finite differences, float64) on the kernel's "
            "autograd Function. With --grads, check your own BPTT function instead: each "
            "gradient that disagrees is matched against a catalogue of classic BPTT mistakes, "
            'and the mistake and its fix are named (README: "Check your own BPTT"). '
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
    groups = {"problem": p.add_argument_group("problem"), "run": p.add_argument_group("run")}
    add_field_flags(groups, Problem)
    r = groups["run"]
    r.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="dtype of the comparison; gradcheck itself always uses float64 "
        "(default: float64, the only one with --grads)",
    )
    r.add_argument(
        "--device",
        type=device,
        default="cpu",
        help=f"{DEVICE_HELP} (default: cpu; --grads runs on the cpu)",
    )
    r.add_argument(
        "--kernel",
        choices=("both", "reference", "fast"),
        default=None,
        help="which hand-written kernel to check: reference (echo_rnn/kernels/reference.py, "
        "written to be read), fast (echo_rnn/kernels/bptt.py, what --backend bptt trains "
        "with) or both (default: both)",
    )
    r.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    y = p.add_argument_group("your own BPTT")
    y.add_argument(
        "--grads",
        metavar="PATH.py:FUNCTION",
        default=None,
        help="check this function instead of echo-rnn's kernels: it is called with "
        "U (H, H), V (H, I), w (H,), x, y (and b, h0 with --bias, --h0) and "
        "returns a dict of the gradients of J keyed like them, optionally with "
        "'dh', dJ/dh_t per step; x and y are (T,) when B = I = 1, else "
        "(B, T, I) and (B, T)",
    )
    y.add_argument(
        "--arrays",
        choices=("numpy", "torch"),
        default=None,
        help="what --grads passes: float64 numpy arrays or float64 torch tensors (default: numpy)",
    )
    y.add_argument(
        "--timeout",
        type=timeout_s,
        default=None,
        metavar="SECONDS",
        help="--grads runs your function in a process of its own and stops it "
        "after this many seconds (default: 60)",
    )
    y.add_argument(
        "--memory",
        type=memory_gib,
        default=None,
        metavar="GiB",
        help="the memory (address space) your function's process may use, in GiB; "
        "beyond it, it gets a MemoryError (default: 8; 0: no limit)",
    )
    f = p.add_argument_group("gradient flow through time")
    f.add_argument(
        "--per-step",
        action="store_true",
        help="print ||dJ/dh_t|| for every step t, from the kernel (or your 'dh') and "
        "from autograd, and the norm of their difference",
    )
    f.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="draw ||dJ/dh_t|| against t on a log scale into FILE (.png, .pdf or .svg)",
    )
    p.set_defaults(run=run)


def _problem(args: argparse.Namespace) -> Problem:
    """The problem the flags describe, after the combinations argparse cannot refuse; fills
    in the mode-dependent defaults of the other flags."""
    given = given_fields(args, Problem)
    defaults = Problem()
    k = given.get("echo_step", defaults.echo_step)
    T = given.get("seq_len", defaults.seq_len)
    if k >= T:
        raise UsageError(f"argument --echo-step: must be below --seq-len ({T}), got {k}")
    if args.grads is None:
        for flag, what in (
            ("arrays", "what your function is given"),
            ("timeout", "how long your function may run"),
            ("memory", "the memory your function's process may use"),
        ):
            if getattr(args, flag) is not None:
                raise UsageError(f"argument --{flag}: only with --grads ({what})")
        if "truncation" in given:
            raise UsageError(
                "argument --truncation: only with --grads (echo-rnn's kernels truncate in windows)"
            )
        args.dtype, args.kernel = args.dtype or "float64", args.kernel or "both"
        return Problem(**{"seed": KERNEL_SEED, **given})
    # --grads: the learner's function computes the gradient of J in float64 on
    # the CPU; the settings that say otherwise are refused rather than ignored
    if "truncation" in given and given.get("truncate") is None:
        raise UsageError("argument --truncation: only with --truncate k (how far back)")
    for flag, bad in (
        ("--kernel", args.kernel is not None),
        ("--dtype", args.dtype not in (None, "float64")),
        ("--device", str(args.device) != "cpu"),
    ):
        if bad:
            raise UsageError(
                f"argument {flag}: not with --grads, which checks your function's "
                "float64 gradients on the cpu"
            )
    args.arrays, args.dtype = args.arrays or "numpy", "float64"
    if args.timeout is None:
        args.timeout = DEFAULT_TIMEOUT
    return Problem(**given)


def run(args: argparse.Namespace) -> int:
    problem = _problem(args)
    if args.plot is not None:  # resolved now: nothing that runs later can move it
        args.plot = str(check_plot_path(args.plot).resolve())
    B, T, H, I = problem.batch_size, problem.seq_len, problem.hidden_size, problem.input_size
    # the comparison's two graphs, and gradcheck's float64 copies beside them (with --grads,
    # the catalogue's variations instead)
    reason = check_fits(
        3 * rnn_bytes(B, T, H, I, itemsize=8), args.device, f"B={B}, T={T}, H={H}, I={I}"
    )
    if reason:
        biggest = max(
            (("--batch-size", B), ("--seq-len", T / 50), ("--hidden-size", H / 6)),
            key=lambda kv: kv[1],
        )[0]
        raise UsageError(f"argument {biggest}: too large: {reason}")
    if args.grads is not None:
        return _learner(args, problem)
    built = problem.on(DTYPES[args.dtype], args.device)
    model, x, y, h0 = built.model, built.x, built.y, built.h0_state
    kernels = ("reference", "fast") if args.kernel == "both" else (args.kernel,)
    reports = [gradcheck_report(model, x, y, h0, problem.truncate, kernel=k) for k in kernels]
    agrees = all(r.agrees for r in reports)
    run_settings = {"dtype": args.dtype, "device": str(args.device)}
    flow = None
    if args.per_step or args.plot:
        flow = per_step(
            {k: manual_grads(model, x, y, h0, kernel=k, hidden=True)["dh"] for k in kernels},
            autograd_hidden_grads(model, x, y, h0),
        )
    if args.json:
        # "rows" and "gradcheck" are the last kernel's (the fast one's unless --kernel
        # reference), as before --kernel existed; "kernels" has each.
        out = {
            "config": {**problem.to_dict(), **run_settings, "kernel": args.kernel},
            **reports[-1].to_dict(),
            "agrees": agrees,
            "kernels": {r.kernel: r.to_dict() for r in reports},
        }
        if args.per_step:
            out["per_step"] = flow
        # --init-std 1e300: NaN in the rows, said as "NaN"
        print(strict_json(out, name_nonfinite=True))
        _show_flow(args, flow, problem.describe(), quiet=True)
        return 0 if agrees else 1
    print(
        f"echo-rnn gradcheck: {problem.describe()} "
        + " ".join(f"{k}={v}" for k, v in run_settings.items())
    )
    for report in reports:
        print(report.format())
    if problem.truncate is not None and flow is not None:
        print(f"(the gradient flow below is full BPTT's, not truncated at {problem.truncate})")
    _show_flow(args, flow, problem.describe())
    print("all gradients agree" if agrees else "GRADIENTS DISAGREE")
    return 0 if agrees else 1


def _show_flow(
    args: argparse.Namespace,
    flow: dict | None,
    label: str,
    quiet: bool = False,
    departed_at: int | None = None,
    bptt: str = "full BPTT",
) -> None:
    """The --per-step table and the --plot file, when asked for; ``bptt`` says which
    gradient the figures are of."""
    if flow is None:
        return
    if args.per_step and not quiet:
        print(f"gradient flow through time, ||dJ/dh_t|| per step ({bptt}):")
        print(format_per_step(flow))
    if args.plot:
        curves = {n: v for n, v in flow.items() if n != "t" and not n.endswith(" diff")}
        diffs = {
            f"||{n.removesuffix(' diff')} - autograd||": v
            for n, v in flow.items()
            if n.endswith(" diff")
        }
        try:
            plot_flow(args.plot, curves, f"gradient flow through time, {label}", diffs, departed_at)
        except OSError as exc:  # a full disk: one line, as train says it
            raise Failed(
                f"error: could not write the plot {args.plot}: {storage_reason(exc)}"
            ) from None
        if not quiet:
            print(f"plot: {args.plot}")


def _learner(args: argparse.Namespace, spec: Problem) -> int:
    """--grads: the learner's function, run in a process of its own (echo_rnn.sandbox),
    against autograd, with the diagnosis. Whatever their code does, one line says what
    happened; what it printed is shown on stderr, marked as theirs."""
    problem = make_learner_problem(spec)
    path, _, function = args.grads.rpartition(":")
    where = f"{os.path.basename(path)}:{function}"

    def printed(text: str) -> None:
        shown = show_output(text, where)
        if shown:
            print(shown, file=sys.stderr)

    try:
        report = check_file(
            args.grads,
            problem,
            arrays=args.arrays,
            timeout=args.timeout,
            memory=None if args.memory is None else int(args.memory * (1 << 30)),
        )
    except LearnerFailed as exc:
        printed(exc.output)
        if exc.traceback:
            sys.stderr.write(
                exc.traceback if exc.traceback.endswith("\n") else exc.traceback + "\n"
            )
        print(f"echo-rnn gradcheck: {exc.line}", file=sys.stderr)
        if args.json:  # a script still gets its one object, saying why there are no rows
            out = {
                "grads": where,
                "agrees": False,
                "rows": [],
                "failed": exc.kind,
                "message": exc.line,
            }
            if exc.error:
                out["raised"] = exc.error
            if exc.output:
                out["printed"] = exc.output
            print(strict_json(out, name_nonfinite=True))
        return 1
    except BadReturn as exc:
        printed(exc.printed)
        print(f"echo-rnn gradcheck: what {where} returned cannot be checked:", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        if args.json:
            print(
                strict_json(
                    {"grads": where, "agrees": False, "rows": [], "return_problems": exc.problems},
                    name_nonfinite=True,
                )
            )
        return 1
    printed(report.printed)
    flow = None
    if args.per_step or args.plot:
        flow = per_step({"yours": report.dh} if report.dh is not None else {}, report.autograd_dh)
    if args.json:
        out = report.to_dict()
        if args.per_step:
            out["per_step"] = flow
        print(strict_json(out, name_nonfinite=True))
    else:
        print(report.format())
        if flow is not None and report.dh is None:
            print("(your function returned no 'dh': the gradient flow is autograd's alone)")
    departed = report.departure
    if departed is None and report.dh is not None:  # told or not, where yours departs
        departed = departure(report.dh, report.autograd_dh, report.tolerances.get("dh", 1e-8))
    truncated = (
        f"truncated BPTT, k = {spec.truncate}, {spec.truncation or 'windows'}"
        if spec.truncate is not None
        else "full BPTT"
    )
    _show_flow(
        args,
        flow,
        f"{where}, {spec.describe()}",
        quiet=args.json,
        departed_at=departed["step"] if departed else None,
        bptt=truncated,
    )
    return 0 if report.agrees else 1
