"""``echo-rnn predict``: a trained model on the user's bits (echo_rnn/predict.py)."""

from __future__ import annotations

import argparse
import sys

from echo_rnn.cli import UsageError
from echo_rnn.cli.args import device
from echo_rnn.console import strict_json
from echo_rnn.devices import DEVICE_HELP
from echo_rnn.predict import Echo, load_model, parse_bits, read_bits
from echo_rnn.run.checkpoint import CheckpointError


def add_parser(sub) -> None:
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
    p.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="a run directory or a checkpoint file"
    )
    p.add_argument("--device", type=device, default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        x = parse_bits(read_bits(sys.stdin) if args.bits == "-" else args.bits)
    except ValueError as exc:
        raise UsageError(f"argument BITS: {exc}") from None
    try:
        model, config = load_model(args.checkpoint, args.device)
    except CheckpointError as exc:
        raise UsageError(f"argument --checkpoint: {exc}") from None
    echo = Echo.of(model, x, config.echo_step)
    print(strict_json(echo.to_dict()) if args.json else echo.format())
    return 0
