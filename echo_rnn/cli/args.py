"""The command line's argument types: one family, every one built on the config's
:class:`~echo_rnn.config.Bounds` and :func:`~echo_rnn.config.arg_type`, so that a flag and
the setting it fills say "must be ..." in the same words.

A flag that fills a TrainConfig field takes that field's type (:func:`setting`); a flag of
its own declares its bounds here or beside its command, never its own parser. Each type
raises ``argparse.ArgumentTypeError``: argparse turns it into one line naming the flag.
"""

from __future__ import annotations

import argparse
from typing import Any

from echo_rnn.config import MAX_HIDDEN, MAX_SIZE, Bounds, arg_type, bounded_arg
from echo_rnn.devices import resolve_device

__all__ = [
    "COUNT",
    "MEMORY_GIB",
    "TIMEOUT_S",
    "arg_type",
    "device",
    "memory_gib",
    "quantity",
    "setting",
    "shape",
    "timeout_s",
]

# A count with no upper bound of its own (what it counts bounds it: a sweep's points, ...).
COUNT = arg_type(int, Bounds(lo=1))

# The same values as a TrainConfig field: ``setting("seed")`` for bench's --seed.
setting = bounded_arg


def quantity(unit: str, bounds: Bounds, note: str = ""):
    """A float in ``bounds``, its errors naming the unit: "must be a number of seconds in
    (0, 86400], got 'x'"."""
    what = f"a number of {unit} {bounds.describe(float)}{note}"
    parse_number = arg_type(float, bounds)

    def parse(text: str) -> float:
        try:
            return parse_number(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None

    parse.__name__ = what
    return parse


# gradcheck --grads: a day of a learner's function, and a TiB of address space, are beyond any
# check; the sandbox's own defaults are 60 s and 8 GiB.
TIMEOUT_S = Bounds(lo=0, lo_open=True, hi=86400)
MEMORY_GIB = Bounds(lo=0, hi=1 << 20)
# Python and numpy need about that much address space to start.
MIN_MEMORY_GIB = 0.5

timeout_s = quantity("seconds", TIMEOUT_S)
_memory = quantity("GiB", MEMORY_GIB, " (0: no limit)")


def memory_gib(text: str) -> float:
    """GiB of address space, 0 for no limit; at least MIN_MEMORY_GIB otherwise."""
    value = _memory(text)
    if 0 < value < MIN_MEMORY_GIB:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_MEMORY_GIB} GiB (Python and "
            f"numpy need that much to start), or 0 for no limit, "
            f"got {text!r}"
        )
    return value


memory_gib.__name__ = _memory.__name__


def device(text: str) -> Any:
    """A device name (``cpu``, ``cuda:1``, ...) as a ``torch.device`` this machine has."""
    try:
        return resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def shape(builtin: dict[str, tuple[int, int, int]]):
    """bench's ``NAME=B,T,H`` (a new shape) or ``NAME`` (one of ``builtin``); B and T within
    the config's sizes, H within its hidden sizes."""

    def parse(text: str) -> tuple[str, tuple[int, int, int]]:
        if "=" not in text:
            if text not in builtin:
                raise argparse.ArgumentTypeError(
                    f"unknown shape {text!r}: built-in are {', '.join(builtin)}, or give NAME=B,T,H"
                )
            return text, builtin[text]
        name, _, dims = text.partition("=")
        try:
            if not dims.isascii():
                raise ValueError
            B, T, H = (int(v) for v in dims.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be NAME=B,T,H with three integers, got {text!r}"
            ) from None
        if not name or min(B, T, H) <= 0:
            raise argparse.ArgumentTypeError(
                f"must be NAME=B,T,H with a name and B, T, H >= 1, got {text!r}"
            )
        if max(B, T) > MAX_SIZE or H > MAX_HIDDEN:
            raise argparse.ArgumentTypeError(
                f"must have B, T <= {MAX_SIZE} and H <= {MAX_HIDDEN}, got {text!r}"
            )
        return name, (B, T, H)

    parse.__name__ = "NAME[=B,T,H]"
    return parse
