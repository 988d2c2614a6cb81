"""The ``echo-rnn`` command: one subcommand per job, each a thin face over the library.

The package's files are its parts: this one holds ``main``, the top-level parser and the
exit-code policy (below, in ``main``: one place); ``args`` the argument types, all built on
the config's bounds; and one module per command (``train``, ``sweep``, ``gradcheck``,
``grade``, ``predict``, ``bench``), each with ``add_parser(sub)``, its flags, and
``run(args)``, which calls the library and prints what its result objects format.

Exit status: 0 done; 1 the command ran and failed (gradients disagree, a NaN, a full disk,
a busy run); 2 a usage error: one line naming the argument and what is valid, no traceback;
128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).

This file imports nothing heavy (no torch): ``main`` installs its signal handling first, and
only then loads the commands (and torch with them), so that Ctrl-C or SIGTERM while torch
loads is one line, not a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from echo_rnn import __version__
from echo_rnn.console import reopen_closed_stdout, safe_stdout
from echo_rnn.errors import ConfigError
from echo_rnn.run.signals import Terminated, exit_status, stop_requests, terminate_raises

EXIT_USAGE = 2

# The command modules, in the order --help lists them; each is echo_rnn.cli.NAME.
COMMANDS = ("train", "sweep", "gradcheck", "grade", "predict", "bench")


class UsageError(Exception):
    """A bad argument found after parsing (e.g. two flags that contradict each other):
    "COMMAND: error: MESSAGE", exit 2."""


class Failed(Exception):
    """The command ran and could not finish (a NaN, a full disk, a busy run, a signal): its
    one line, "COMMAND: MESSAGE", and exit ``status`` (1, or 128 + N for signal N)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


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


def _torch_version() -> str:
    try:  # without importing torch, which takes a second
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def build_parser() -> Parser:
    """The whole command line. Loads every command module, and torch with them: call it
    with signals held (``main`` does)."""
    parser = Parser(
        prog="echo-rnn",
        description=(
            "A vanilla tanh RNN on the binary echo task, with hand-written backprop through "
            "time beside PyTorch's autograd."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"echo-rnn {__version__} (torch {_torch_version()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:  # here, not at the top: they import torch
        importlib.import_module(f"echo_rnn.cli.{name}").add_parser(sub)
    parser.commands = sub.choices  # each command's own parser, for its own errors
    return parser


def parse(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with an argument no command knows reported by that command's parser
    (``see echo-rnn train --help``): argparse leaves the leftovers to the top level, whose
    help lists commands, not the flag the user looked for."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _check_top_level(parser: Parser, argv: list[str]) -> None:
    """Before a command only --help and --version may come: a misspelt one (--versio) is
    named, not reported as a missing COMMAND."""
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        close = difflib.get_close_matches(argv[0], ["--help", "--version"], n=1)
        parser.error(
            f"unrecognized argument {argv[0]}" + (f" (did you mean {close[0]}?)" if close else "")
        )


def main(argv: Sequence[str] | None = None) -> int:
    command = "echo-rnn"
    # first, before any file is opened: one could take the closed stdout's descriptor
    stdout_closed = reopen_closed_stdout()

    def stopped(signum: int) -> int:
        kept = "nothing was written" if command == "echo-rnn bench" else "what was saved is kept"
        print(f"{command}: stopped by {signal.Signals(signum).name}; {kept}", file=sys.stderr)
        return exit_status(signum)

    try:
        # Signals wait while torch and the commands' modules load: an import cut in half
        # can leave a module broken (numpy without its functions), and the command fail
        # with an unrelated error. A second signal acts at once.
        with stop_requests() as held:
            parser = build_parser()
            _check_top_level(parser, sys.argv[1:] if argv is None else list(argv))
            args = parse(parser, argv)
            command = f"echo-rnn {args.command}"
        if stdout_closed:
            print(
                f"{command}: stdout is closed; what the command prints there is dropped, "
                "the command runs on",
                file=sys.stderr,
            )
        if held:
            return stopped(held[0])
        # While the command runs, SIGTERM and SIGHUP are exceptions as Ctrl-C is: a signal
        # outside a training loop ends in one line, not a traceback. A stdout closed by its
        # reader (`| head`) stops the printing, not the command.
        with terminate_raises(), safe_stdout():
            return args.run(args)
    except UsageError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Failed as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.status
    except ConfigError as exc:  # the library names the setting; here it becomes the flag
        print(f"{command}: error: {exc.for_cli()}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Terminated) as exc:
        return stopped(signal.SIGINT if isinstance(exc, KeyboardInterrupt) else exc.signum)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
