"""The ``echo-rnn`` command: one subcommand per job, each a thin layer over the library.

Usage errors print one line naming the argument and what is valid, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from echo_rnn.devices import DEVICE_HELP, DTYPES, resolve_device

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument found after parsing (e.g. two flags that contradict each other)."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage + error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _typed(convert: Callable[[str], object], ok: Callable[[object], bool], what: str):
    def parse(text: str):
        try:
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
nonneg_float = _typed(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
unit_float = _typed(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def device_arg(text: str):
    try:
        return resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- gradcheck -------------------------------------------------------------------------


def add_gradcheck(sub) -> None:
    p = sub.add_parser(
        "gradcheck",
        help="compare the hand-written BPTT gradients with autograd and finite differences",
        description=(
            "Build a seeded model and echo batch, compute the gradients of the echo cost with "
            "the hand-written BPTT kernel and with autograd, and print one row per parameter. "
            "Then run torch.autograd.gradcheck (finite differences, float64) on the kernel's "
            "autograd Function. Exit status 0 when everything agrees, 1 when anything "
            "disagrees."
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn gradcheck                      # the notebook's shape, B=1 T=50 H=6\n"
            "  echo-rnn gradcheck --batch-size 32 --seq-len 200 --hidden-size 64 "
            "--input-size 3 --bias --h0 --truncate 25 --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("problem")
    g.add_argument("--hidden-size", type=positive_int, default=6, help="H (default: 6)")
    g.add_argument("--input-size", type=positive_int, default=1,
                   help="I; channel 0 carries the echo task, others random bits (default: 1)")
    g.add_argument("--batch-size", type=positive_int, default=1, help="B (default: 1)")
    g.add_argument("--seq-len", type=positive_int, default=50, help="T (default: 50)")
    g.add_argument("--echo-step", type=nonneg_int, default=2,
                   help="k, the delay, below --seq-len (default: 2)")
    g.add_argument("--bias", action="store_true", help="give the model the bias b")
    g.add_argument("--h0", action="store_true",
                   help="start from a random initial state and check its gradient too")
    g.add_argument("--truncate", type=positive_int, default=None,
                   help="window length k of truncated BPTT (default: full BPTT)")
    g.add_argument("--init-std", type=nonneg_float, default=0.1,
                   help="parameters drawn from N(0, init_std^2) (default: 0.1)")
    r = p.add_argument_group("run")
    r.add_argument("--dtype", choices=sorted(DTYPES), default="float64",
                   help="dtype of the comparison; gradcheck itself always uses float64 "
                        "(default: float64)")
    r.add_argument("--device", type=device_arg, default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    r.add_argument("--seed", type=nonneg_int, default=0, help="seed of weights and data (default: 0)")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_gradcheck)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from echo_rnn.compare import format_rows, gradcheck_report, make_problem

    if args.echo_step >= args.seq_len:
        raise UsageError(
            f"argument --echo-step: must be below --seq-len ({args.seq_len}), got {args.echo_step}"
        )
    dtype = DTYPES[args.dtype]
    model, x, y, h0 = make_problem(
        hidden_size=args.hidden_size, input_size=args.input_size, batch_size=args.batch_size,
        seq_len=args.seq_len, echo_step=args.echo_step, bias=args.bias, h0=args.h0,
        dtype=dtype, device=args.device, seed=args.seed, init_std=args.init_std,
    )
    report = gradcheck_report(model, x, y, h0, args.truncate)
    config = {
        "batch_size": args.batch_size, "seq_len": args.seq_len, "hidden_size": args.hidden_size,
        "input_size": args.input_size, "echo_step": args.echo_step, "bias": args.bias,
        "h0": args.h0, "truncate": args.truncate, "init_std": args.init_std,
        "dtype": args.dtype, "device": str(args.device), "seed": args.seed,
    }
    if args.json:
        print(json.dumps({"config": config, **report.to_dict()}, indent=2))
    else:
        print("echo-rnn gradcheck: " + " ".join(f"{k}={v}" for k, v in config.items()))
        print("hand-written BPTT vs autograd:")
        print(format_rows(report.rows))
        mode = "fast mode (random projections)" if report.gradcheck_fast_mode else "full Jacobian"
        print(
            f"torch.autograd.gradcheck on BPTTFunction (finite differences, float64, {mode}, "
            f"full BPTT): {report.gradcheck_message}"
        )
        print("all gradients agree" if report.agrees else "GRADIENTS DISAGREE")
    return 0 if report.agrees else 1


# --- entry point -------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog="echo-rnn",
        description=(
            "A vanilla tanh RNN on the binary echo task, with hand-written backprop through "
            "time beside PyTorch's autograd."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    add_gradcheck(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"echo-rnn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
