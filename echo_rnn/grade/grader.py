"""Grading a class: each submission run in a child process of its own, exactly as
``echo-rnn gradcheck --grads`` runs one (:func:`echo_rnn.sandbox.run_in_child`: its time and
memory limits, its output kept apart), several at once; what came back judged here, in the
parent, on one problem shared by the whole class (autograd's gradients, the noise floors and
the catalogue's variations computed once), and scored with the rubric.

A submission that does not parse, does not define the function, raises, exits, crashes,
hangs or returns what cannot be compared is a :class:`Verdict` with a reason, never a stop
of the run."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from echo_rnn.errors import ConfigError
from echo_rnn.grade.rubric import Rubric
from echo_rnn.grade.submissions import NotebookError, Submission, notebook_source
from echo_rnn.layouts import adapter as make_adapter
from echo_rnn.learner import BadReturn, LearnerReport, check_return, compare_returned, departure
from echo_rnn.learner.contract import _NotAMapping
from echo_rnn.learner.diagnosis import hidden_behind
from echo_rnn.problem import Problem
from echo_rnn.sandbox import DEFAULT_TIMEOUT, LearnerFailed, run_in_child

# What a verdict can be, best first.
STATUSES = {
    "agrees": "every gradient agrees with autograd's",
    "mistake": "a gradient disagrees, and the catalogue names the mistake",
    "truncated": "the code computes truncated BPTT where full BPTT was asked",
    "unexplained": "a gradient is wrong in a way the catalogue does not describe",
    "bad-return": "what the function returned cannot be compared",
    "failed": "the code did not run to a return: it did not parse, define the function, "
    "or it raised, exited, crashed or ran out of time",
}
UNEXPLAINED = "wrong in a way the catalogue does not describe"


@dataclass
class Mistake:
    """A mistake named in a submission: its code, the gradients it shows in, what went
    wrong and its fix (the catalogue's sentences, in the learner's layout)."""

    code: str
    gradients: list[str]
    says: str
    fix: str


@dataclass
class Verdict:
    """One student's result: ``status`` (a key of :data:`STATUSES`), ``reason`` (one line
    when it did not run or is not explained), the mistakes named, the score and the tests
    it is made of (per gradient: name, score, max_score, output), and the full report when
    the gradients came back."""

    student: str
    shown: str
    status: str
    reason: str = ""
    mistakes: list[Mistake] = field(default_factory=list)
    score: float = 0.0
    max_score: float = 0.0
    tests: list[dict[str, Any]] = field(default_factory=list)
    report: LearnerReport | None = None
    printed: str = ""
    seconds: float = 0.0
    departs_at: int | None = None  # the first step, from T, where its dJ/dh_t departs
    # mistakes a named one may hide (code -> the named code): beside it they change none
    # of the gradients returned (:func:`echo_rnn.learner.diagnosis.hidden_behind`)
    hidden: dict[str, str] = field(default_factory=dict)
    traceback: str = ""  # their traceback, when their code raised

    @property
    def summary(self) -> str:
        """One line: what the teacher reads first."""
        if self.status == "agrees":
            return "all gradients agree"
        if self.status == "mistake":
            return ", ".join(m.code for m in self.mistakes)
        if self.status == "truncated":
            return self.reason
        if self.status == "unexplained":
            named = ", ".join(m.code for m in self.mistakes)
            return f"{UNEXPLAINED}" + (f" (and {named})" if named else "")
        return self.reason


def load_layout(path: str | Path | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the adapter options of the file's [layout] table, or None; the settings of its
    [problem] table): the layout a teacher writes once for the class, e.g.::

        [layout]            # the options of echo_rnn.layouts' adapters
        kind = "rows"       # columns (default), rows or batch-middle
        U = "Wh"
        V = "Wx"
        w = "Wy"
        [problem]           # optional: gradcheck's problem settings (the default's otherwise)
        batch_size = 4
        bias = true

    Raises:
        ConfigError("layout", ...): no such file, not TOML, an unknown table, option or
            setting, named.
    """
    if path is None:
        return None, {}
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("layout", f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("layout", f"cannot read {path}: {type(exc).__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("layout", f"{path} is not TOML: {exc}") from None
    unknown = [k for k in data if k not in ("layout", "problem")]
    if unknown:
        raise ConfigError(
            "layout",
            f"{path}: unknown table or key {unknown[0]!r}; valid are [layout] and [problem]",
        )
    options = data.get("layout")
    settings = data.get("problem", {})
    if options is not None and not isinstance(options, dict) or not isinstance(settings, dict):
        raise ConfigError("layout", f"{path}: [layout] and [problem] must be tables")
    if options is not None:
        try:
            make_adapter(lambda **kw: None, options)  # checked here, used in each child
        except (ValueError, TypeError) as exc:
            raise ConfigError("layout", f"{path}: {exc}") from None
    try:
        Problem.of(settings)
    except ConfigError as exc:
        raise ConfigError("layout", f"{path}: [problem] {exc}") from None
    return options, settings


def _tests(
    report: LearnerReport | None, problem: Problem, rubric: Rubric, failure: str = ""
) -> list[dict[str, Any]]:
    """A test per gradient the rubric counts, Gradescope's fields: name, score, max_score,
    output."""
    tests = []
    rows = {r.name: r for r in report.rows} if report is not None else {}
    for g in rubric.counted(problem):
        top = rubric.points[g]
        name = f"dJ/d{report.layout.name(g) if report else g}" if g != "dh" else "dJ/dh_t"
        row = rows.get(g)
        if report is None:
            score, output = 0.0, f"not checked: {failure}"
        elif row is None:
            score, output = 0.0, "not returned"
        elif row.agrees:
            score, output = top, "agrees with autograd's"
        else:
            d = report.diagnoses.get(g)
            codes = d.codes if d else []
            truncated = report.truncation_found is not None
            score = top * rubric.share(codes, truncated)
            if truncated:
                output = f"disagrees: {report.verdict()}"
            elif codes:
                output = "disagrees: " + "; ".join(
                    f"{c}: {s}. Fix: {f}." for c, s, f in zip(codes, d.says, d.fixes)
                )
            else:
                output = f"disagrees: {UNEXPLAINED}"
        tests.append({"name": name, "score": round(score, 6), "max_score": top, "output": output})
    return tests


def _mistakes(report: LearnerReport) -> list[Mistake]:
    found: dict[str, Mistake] = {}
    for r in report.rows:
        d = report.diagnoses.get(r.name)
        if r.agrees or d is None:
            continue
        for code, says, fix in zip(d.codes, d.says, d.fixes):
            m = found.setdefault(code, Mistake(code, [], says, fix))
            m.gradients.append(report.layout.name(r.name))
    return list(found.values())


def verdict_of(
    sub: Submission,
    got: Any,
    problem: Problem,
    rubric: Rubric,
    function: str = "function",
    seconds: float = 0.0,
) -> Verdict:
    """The verdict on what one submission's child brought back: a ChildResult, or the
    exception that says why nothing came back (LearnerFailed, ConfigError, NotebookError)."""
    top = rubric.max_score(problem)
    if isinstance(got, BaseException):
        reason, printed, tb = str(got), "", ""
        if isinstance(got, LearnerFailed):
            # gradcheck --grads prints their traceback above its line; here it is kept
            # beside the verdict, and the line says what was raised
            reason = got.line.replace(" (the traceback above is your code's)", "")
            if got.error and got.kind == "raised":
                reason = f"{reason}: {got.error.split(': ', 1)[-1]}"
            printed, tb = got.output, got.traceback
        elif isinstance(got, ConfigError):
            reason = got.detail
        return Verdict(
            sub.student,
            sub.shown,
            "failed",
            reason,
            max_score=top,
            tests=_tests(None, problem, rubric, reason),
            printed=printed,
            seconds=seconds,
            traceback=tb,
        )
    out = got.values if got.values is not None else _NotAMapping(got.not_mapping or "?")
    try:
        returned = check_return(out, problem, dtypes=got.dtypes, layout=got.layout)
    except BadReturn as exc:
        reason = "what it returned cannot be compared: " + "; ".join(exc.problems)
        return Verdict(
            sub.student,
            sub.shown,
            "bad-return",
            reason,
            max_score=top,
            tests=_tests(None, problem, rubric, reason),
            printed=got.output,
            seconds=seconds,
        )
    report = compare_returned(returned, problem, f"{sub.shown}:{function}")
    report.printed = got.output
    tests = _tests(report, problem, rubric)
    v = Verdict(
        sub.student,
        sub.shown,
        "agrees",
        mistakes=_mistakes(report),
        score=round(sum(t["score"] for t in tests), 6),
        max_score=top,
        tests=tests,
        report=report,
        printed=got.output,
        seconds=seconds,
    )
    if report.dh is not None:
        dep = departure(report.dh, report.autograd_dh, report.tolerances.get("dh", 1e-8))
        v.departs_at = dep["step"] if dep else None
    if report.agrees:
        return v
    if report.truncation_found is not None:
        v.status, v.reason = "truncated", report.verdict().split(": ", 1)[-1]
    elif report.unexplained:
        v.status = "unexplained"
        shown = [report.layout.name(n) for n in report.unexplained]
        where = (
            f"; its dJ/dh_t departs from autograd's at t = {v.departs_at}"
            if v.departs_at is not None and "dh" in report.unexplained
            else ""
        )
        v.reason = f"{', '.join(shown)} {UNEXPLAINED}{where}"
    else:
        v.status = "mistake"
        named = [m.code for m in v.mistakes]
        v.hidden = hidden_behind(named, returned.grads, problem)
        if v.hidden:
            v.reason = "; ".join(
                f"{shown} may hide {', '.join(c for c, b in v.hidden.items() if b == shown)}: "
                f"made beside {shown}, "
                f"{'it changes' if list(v.hidden.values()).count(shown) == 1 else 'they change'}"
                " none of the gradients returned"
                for shown in dict.fromkeys(v.hidden.values())
            )
    return v


def _snapshot(i: int, sub: Submission, scratch: Path) -> tuple[Path, Path] | BaseException:
    """(the file to run, where its imports are looked for): a private copy of the
    submission's code, taken before any child runs, so that a submission that writes over a
    classmate's file (or its own, to change what is graded) changes nothing graded: a .py
    file alone, a student's folder's .py files beside it, a notebook's code cells written
    out as Python. Or the exception that says why there is nothing to run."""
    if sub.code is None:
        return ConfigError("submissions", sub.missing)
    here = scratch / str(i)
    here.mkdir()
    try:
        if sub.notebook:
            text = notebook_source(sub.code)
        else:
            text = sub.code.read_bytes().decode("utf-8", "replace")
        if sub.folder is not None:  # their own modules, importable as when they ran it
            for other in sub.folder.glob("*.py"):
                if other != sub.code and other.is_file():
                    (here / other.name).write_bytes(other.read_bytes())
    except NotebookError as exc:
        return exc
    except OSError as exc:
        return ConfigError("submissions", f"{sub.shown} cannot be read: {exc.strerror}")
    path = here / f"{sub.code.stem}.py"  # its own name: their traceback names it
    path.write_text(text)
    return path, here


def _run_one(
    sub: Submission,
    copy: tuple[Path, Path] | BaseException,
    function: str,
    problem: Problem,
    kwargs: dict[str, Any],
    options: dict[str, Any] | None,
    timeout: float,
    memory: int | None,
    stop: threading.Event,
) -> Any:
    """What one submission's child brings back, or the exception that says why not."""
    if isinstance(copy, BaseException):
        return copy
    if stop.is_set():
        return LearnerFailed("stopped", "not run: grading was stopped")
    path, search_dir = copy
    try:
        return run_in_child(
            str(path),
            function,
            kwargs,
            problem.expected_shapes(),
            timeout=timeout,
            memory=memory,
            adapter=options,
            search_dir=str(search_dir),
            shown=sub.code.name,
            stop=stop,
        )
    except (LearnerFailed, ConfigError) as exc:
        return exc


def grade(
    submissions: list[Submission],
    function: str,
    problem: Problem,
    rubric: Rubric,
    options: dict[str, Any] | None = None,
    workers: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int | None = None,
    progress: Callable[[Verdict, int, int], None] | None = None,
) -> list[Verdict]:
    """Every submission's verdict, in the order given: ``workers`` children at once, each
    its own process (``timeout`` seconds, ``memory`` bytes of address space), the problem's
    checks computed once for all; ``progress(verdict, done, total)`` after each."""
    kwargs = problem.kwargs("numpy")
    verdicts: dict[int, Verdict] = {}
    stop = threading.Event()
    with (
        tempfile.TemporaryDirectory(prefix="echo-rnn-grade-") as tmp,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
    ):
        scratch = Path(tmp)
        copies = [_snapshot(i, sub, scratch) for i, sub in enumerate(submissions)]
        started: dict[Any, tuple[int, float]] = {}
        for i, sub in enumerate(submissions):
            future = pool.submit(
                _timed,
                _run_one,
                sub,
                copies[i],
                function,
                problem,
                kwargs,
                options,
                timeout,
                memory,
                stop,
            )
            started[future] = (i, 0.0)
        try:
            for future in as_completed(started):
                i, _ = started[future]
                got, seconds = future.result()
                verdicts[i] = verdict_of(submissions[i], got, problem, rubric, function, seconds)
                if progress is not None:
                    progress(verdicts[i], len(verdicts), len(submissions))
        except BaseException:  # Ctrl-C, or a report that failed: no child outlives the run
            stop.set()
            for future in started:
                future.cancel()
            raise
    return [verdicts[i] for i in range(len(submissions))]


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    return fn(*args), time.monotonic() - start
