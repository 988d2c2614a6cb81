"""The report on a learner's gradients: the rows, the mistakes named with their fixes, the
notes, and where dJ/dh_t departs (:class:`LearnerReport`: ``format()`` for the terminal,
``to_dict()`` for --json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from echo_rnn.compare import GradRow
from echo_rnn.layouts import Layout
from echo_rnn.learner.diagnosis import Diagnosis
from echo_rnn.learner.tolerance import NOISE_SAFETY, PRECISIONS, Judged, Tolerances
from echo_rnn.learner.truncation import truncation_words
from echo_rnn.problem import Problem


@dataclass
class LearnerReport:
    """A learner's gradients against autograd's: the rows, a diagnosis per row that
    disagrees, notes on what was accepted, and where dJ/dh_t departs when nothing in the
    catalogue explains a row. ``agrees_to`` gives, per row, the precision it agrees to
    (None when it disagrees) and ``tolerances`` the tolerance it was judged with."""

    where: str
    rows: list[GradRow]
    diagnoses: dict[str, Diagnosis]
    notes: list[str]
    departure: dict[str, Any] | None
    problem: Problem  # what was checked, and against which truncation
    autograd_dh: torch.Tensor  # autograd's dJ/dh_t (B, T, H)
    dh: torch.Tensor | None = None  # the learner's dJ/dh_t (B, T, H), when returned
    agrees_to: dict[str, str | None] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    printed: str = ""  # what the learner's code printed (gradcheck --grads only)
    layout: Layout = field(default_factory=lambda: Layout())  # the learner's (names, shapes)
    truncation_found: dict[str, Any] | None = None  # what the code computes instead of BPTT
    arrays: str = "numpy"  # what the function was given

    @property
    def config(self) -> dict[str, Any]:
        """The check's settings as --json gives them: every field of the problem, and how
        the function was called (its arrays, its layout)."""
        return {**self.problem.to_dict(), "arrays": self.arrays, "layout": self.layout.kind}

    @property
    def returned_dh(self) -> bool:
        return self.dh is not None

    @property
    def agrees(self) -> bool:
        return all(r.agrees for r in self.rows)

    @property
    def precision(self) -> str | None:
        """The precision every row agrees to ("float64", or the lowest one a row needed);
        None when a row disagrees."""
        if not self.agrees:
            return None
        tiers = {self.agrees_to.get(r.name) or "float64" for r in self.rows}
        return next((p for p in reversed(PRECISIONS) if p in tiers), "float64")

    @property
    def unexplained(self) -> list[str]:
        return [r.name for r in self.rows if not r.agrees and not self.diagnoses[r.name].codes]

    def verdict(self) -> str:
        if not self.agrees and self.truncation_found is not None:
            f = self.truncation_found
            asked = "truncated BPTT as asked" if self.problem.truncate else "full BPTT"
            return (
                f"GRADIENTS DISAGREE with {asked}: yours are {truncation_words(f['kind'], f['k'])}"
            )
        if not self.agrees:
            return "GRADIENTS DISAGREE"
        if self.precision != "float64":
            return f"all gradients agree to {self.precision} precision"
        return "all gradients agree"

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = self.diagnoses.get(r.name, Diagnosis([], [], []))
            row = {
                **asdict(r),
                "learner_name": self.layout.name(r.name),
                "agrees_to": self.agrees_to.get(r.name),
                "tolerance": self.tolerances.get(r.name),
                "diagnosis": d.codes,
                "explanation": d.says,
                "fix": d.fixes,
            }
            if d.factor is not None:
                row["factor"], row["factor_name"] = d.factor, d.factor_name
            rows.append(row)
        out = {
            "grads": self.where,
            "config": self.config,
            "agrees": self.agrees,
            "precision": self.precision,
            "verdict": self.verdict(),
            "rows": rows,
            "notes": self.notes,
            "departure": self.departure,
            "truncation_found": self.truncation_found,
        }
        if self.printed:
            out["printed"] = self.printed
        return out

    def _table(self) -> str:
        header = ("name", "shape", "max abs diff", "max rel diff", "agrees")
        body = [
            (
                self.layout.name(r.name),
                str(r.shape),
                f"{r.max_abs_diff:.3e}",
                f"{r.max_rel_diff:.3e}",
                "NO"
                if not r.agrees
                else "yes"
                if self.agrees_to.get(r.name) in (None, "float64")
                else f"{self.agrees_to[r.name]}",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        return "\n".join(
            "  ".join(c.ljust(wd) for c, wd in zip(row, widths)).rstrip() for row in [header, *body]
        )

    def format(self) -> str:
        p = self.problem
        layout = f" layout={self.layout.kind}" if self.layout.kind != "columns" else ""
        lines = [
            f"echo-rnn gradcheck --grads {self.where}: {p.describe()}{layout}",
            "your gradients vs autograd's"
            + (f" ({truncation_words(p.truncation, p.truncate)}):" if p.truncate else ":"),
            self._table(),
        ]
        lines += [f"note: {n}" for n in self.notes]
        groups: dict[tuple, list[str]] = {}  # rows with the same diagnosis are told once
        for r in self.rows:
            if not r.agrees:
                d = self.diagnoses[r.name]
                key = (tuple(d.codes), d.factor, tuple(d.says), tuple(d.fixes))
                groups.setdefault(key, []).append(r.name)
        if self.truncation_found is not None:
            f = self.truncation_found
            flag = f"--truncate {f['k']}" + (" --truncation back" if f["kind"] == "back" else "")
            asked = truncation_words(p.truncation, p.truncate) if p.truncate else "full BPTT"
            lines.append(
                f"\nyour code computes {truncation_words(f['kind'], f['k'])}: every "
                f"gradient agrees with that, not with {asked}. If you meant to "
                f"truncate, check it as such with {flag} (check_grads(..., "
                f"truncate={f['k']}, truncation={f['kind']!r})); for full BPTT, "
                "carry the gradient back through every step."
            )
            groups = {}
        for (codes, factor, says_, fixes), names in groups.items():
            shown = [self.layout.name(n) for n in names]
            who = (
                f"{', '.join(shown[:-1])} and {shown[-1]} disagree"
                if len(shown) > 1
                else f"{shown[0]} disagrees"
            )
            if not codes and p.truncate:
                lines.append(
                    f"\n{who} with truncated BPTT (the catalogue of mistakes is "
                    "full BPTT's: run without --truncate to have them named)."
                )
                continue
            if not codes:
                lines.append(
                    f"\n{who}: no mistake of the catalogue reproduces it "
                    '(README: "Common BPTT mistakes").'
                )
                lines += [f"  {says}" for says in says_]
                continue
            d = self.diagnoses[names[0]]
            named = f" = {d.factor_name}" if d.factor_name else ""
            factor_ = f" (factor {factor:.6g}{named})" if factor is not None else ""
            lines.append(f"\n{who}: {', '.join(codes)}{factor_}")
            for says, fix in zip(says_, fixes):
                lines.append(f"  {says}.")
                lines.append(f"  fix: {fix}.")
        if self.unexplained and self.truncation_found is None:
            lines.append("")
            if not self.returned_dh:
                lines.append(
                    'return dJ/dh_t as "dh", (T, H), to see at which step your '
                    "gradient departs from autograd's."
                )
            elif self.departure is None:
                lines.append(
                    "your dJ/dh_t agrees with autograd's at every step: the mistake "
                    "is where dJ/dh_t becomes the parameter gradients (tanh' or the "
                    "outer products)."
                )
            else:
                dep = self.departure
                seq = f" of sequence {dep['sequence']}" if p.batch_size > 1 else ""
                lines.append(
                    f"dJ/dh_t{seq} departs from autograd's first at t = {dep['step']}, "
                    f"counting back from T = {p.seq_len}:"
                )
                lines.append(f"  yours    {_vector(dep['yours'])}")
                lines.append(f"  autograd {_vector(dep['autograd'])}")
                if dep.get("factor") is not None:
                    c = dep["factor"]
                    twice = (
                        " at t = T: the last step's loss gradient is counted twice"
                        if dep["step"] == p.seq_len and abs(c - 2) < 1e-6
                        else ""
                    )
                    lines.append(f"  yours is {c:.6g} times autograd's there{twice}")
        lines.append(self.verdict())
        return "\n".join(lines)

    __str__ = format


def _vector(values: list[float], most: int = 8) -> str:
    shown = ", ".join(f"{v:+.6e}" for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"


def _precision_notes(
    judged: dict[str, Judged], dtypes: dict[str, str], tolerances: Tolerances
) -> list[str]:
    """What the report says about precision: a lower one the code computes in, and a check
    made blunt by a recurrence that amplifies rounding."""
    notes = []
    low = {n: j.agrees_to for n, j in judged.items() if j.agrees_to not in (None, "float64")}
    if low:
        p = sorted(set(low.values()))[-1]
        returned = sorted({dtypes.get(n, "float64") for n in low})
        how = (
            f"it returned {', '.join(returned)} arrays"
            if returned != ["float64"]
            else f"its arrays are float64 but differ from autograd's by {p}'s rounding: "
            f"are states or products kept in {p}?"
        )
        notes.append(
            f"{', '.join(low)} agree to {p} precision, not to float64's: your code "
            f"computes in {p} ({how}); a mistake smaller than the tolerance "
            f"({max(j.tolerance for j in judged.values() if j.agrees_to):.1e} of the "
            "gradient's scale) cannot be seen"
        )
    blunt = {
        n: j.tolerance for n, j in judged.items() if j.agrees_to == "float64" and j.tolerance > 1e-6
    }
    if blunt:
        worst = max(blunt.values())
        notes.append(
            f"this problem amplifies rounding: two correct float64 implementations "
            f"differ by up to {worst / NOISE_SAFETY:.1e} of a gradient's scale here "
            f"(the recurrence is chaotic at these weights and length), so the check "
            f"only sees differences above {worst:.1e}; a smaller --init-std or "
            "--seq-len checks more sharply"
        )
    return notes
