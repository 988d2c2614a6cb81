"""The rubric: points per gradient, and the share of them a gradient keeps when it disagrees
with a mistake the catalogue names (:data:`DEFAULT_RUBRIC`, a TOML file's text; a course
gives its own with ``--rubric FILE.toml``, any key left out keeping the default's)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from echo_rnn.errors import ConfigError
from echo_rnn.mistakes import CATALOGUE

# The default, as a course would write it. Why these numbers: dJ/dU is the gradient BPTT is
# about (it alone needs the carry through time), so it weighs most; a mistake of a constant
# (scale: a sum where J takes a mean) trains the same direction and keeps most; the sign, or
# a transposed dU, are one-character fixes to a gradient computed right, and keep half; any
# other named mistake shows the learner wrote BPTT's structure, and keeps a quarter; a
# gradient wrong in a way the catalogue does not describe keeps nothing.
DEFAULT_RUBRIC = """\
# Points for each gradient that agrees with autograd's. A gradient the problem does not have
# (b without --bias, h0 without h0) is not counted; dh (dJ/dh_t per step) is optional to
# return, and scores only when given points here.
[points]
U = 4
V = 2
w = 2
b = 1
h0 = 1
dh = 0

# The share (0 to 1) of a gradient's points kept when it disagrees with a mistake the
# catalogue names, by the mistake's code (README: "Common BPTT mistakes"); "named" for a code
# not listed, "truncated" for truncated BPTT where full BPTT was asked. Two mistakes in one
# gradient keep the smaller share; a gradient the catalogue does not explain keeps 0.
[partial]
scale = 0.75
sign = 0.5
transposed = 0.5
truncated = 0.5
named = 0.25
"""

GRADIENTS = ("U", "V", "w", "b", "h0", "dh")


@dataclass(frozen=True)
class Rubric:
    """Points per gradient, and the share kept per named mistake (see DEFAULT_RUBRIC)."""

    points: dict[str, float]
    partial: dict[str, float]

    def counted(self, problem: Any) -> list[str]:
        """The gradients scored on ``problem``: U, V, w, b with a bias, h0 with an initial
        state, dh when it has points."""
        have = {
            "U",
            "V",
            "w",
            "b" if problem.bias else "",
            "h0" if problem.h0 else "",
            "dh" if self.points["dh"] > 0 else "",
        }
        return [g for g in GRADIENTS if g in have]

    def max_score(self, problem: Any) -> float:
        return sum(self.points[g] for g in self.counted(problem))

    def share(self, codes: list[str], truncated: bool) -> float:
        """The share of the points a gradient that disagrees keeps."""
        if truncated:
            return self.partial["truncated"]
        if not codes:
            return 0.0
        return min(self.partial.get(c, self.partial["named"]) for c in codes)

    def to_dict(self) -> dict[str, Any]:
        return {"points": dict(self.points), "partial": dict(self.partial)}


def _parse(data: dict[str, Any], where: str, base: Rubric | None) -> Rubric:
    known = {"points": GRADIENTS, "partial": (*CATALOGUE, "named", "truncated")}
    points = dict(base.points) if base else {}
    partial = dict(base.partial) if base else {}
    for table, value in data.items():
        if table not in known:
            raise ConfigError(
                "rubric", f"{where}: unknown table [{table}]; valid are [points] and [partial]"
            )
        if not isinstance(value, dict):
            raise ConfigError("rubric", f"{where}: {table} must be a table ([{table}])")
        for key, number in value.items():
            if key not in known[table]:
                raise ConfigError(
                    "rubric",
                    f"{where}: unknown key {key!r} in [{table}]; "
                    f"valid are {', '.join(known[table])}",
                )
            if (
                isinstance(number, bool)
                or not isinstance(number, (int, float))
                or not math.isfinite(number)
                or number < 0
                or (table == "partial" and number > 1)
            ):
                valid = (
                    "a number from 0 to 1"
                    if table == "partial"
                    else "a number of points, 0 or more"
                )
                raise ConfigError(
                    "rubric", f"{where}: [{table}] {key} must be {valid}, got {number!r}"
                )
            (points if table == "points" else partial)[key] = float(number)
    return Rubric(points, partial)


DEFAULT = _parse(tomllib.loads(DEFAULT_RUBRIC), "the default rubric", None)


def load_rubric(path: str | Path | None) -> Rubric:
    """The rubric of the TOML file ``path`` over the default's (the default when None).

    Raises:
        ConfigError("rubric", ...): no such file, not TOML, an unknown table or key, a value
            out of range; one line, naming the file and the key.
    """
    if path is None:
        return DEFAULT
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = "no such file" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        raise ConfigError("rubric", f"cannot read {path}: {why}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("rubric", f"{path} is not TOML: {exc}") from None
    return _parse(data, str(path), DEFAULT)
