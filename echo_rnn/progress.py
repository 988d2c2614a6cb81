"""A sweep seen while it runs: for each population or point under way, its steps done and the
members still training; for the sweep, the points done and an estimate of the time left.

On a terminal, tqdm bars (one for the sweep, one per job under way); elsewhere (a file, a
pipe, a notebook's output) a few plain lines every :data:`LINE_EVERY_S` seconds, so that a
log holds the progress without a line per step. The trainers report through a callable
``(step, active)`` (:func:`~echo_rnn.engine.population_train.train_population`'s and
:func:`~echo_rnn.engine.train.train`'s ``progress``); a sweep's worker processes send theirs to the
parent, which alone prints (:mod:`echo_rnn.sweep`).

The time left assumes that every member trains to its last step (a solved one leaves
early), at the step rate each job has shown so far, and the jobs not started yet at the
median rate of those seen, shared over the workers: an estimate, said as one.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

# Plain lines: one block this often (seconds), the first after as long; a sweep shorter than
# this prints none.
LINE_EVERY_S = 10.0
# How often a trainer's report is passed on (a worker's to its parent) and the bars redrawn:
# often enough to watch, rarely enough to cost nothing next to a step.
REPORT_EVERY_S = 0.5
# The bars' room on a terminal that does not say its size (tqdm, told 0 rows, draws none).
UNSIZED = {"ncols": 80, "nrows": 24}


@dataclass
class Job:
    """One job of a sweep, as the progress display sees it: a population or a point alone."""

    label: str
    members: int
    steps: int  # the budget: its members' config.steps
    trains: bool = True  # False: read back, finished by an earlier run (costs no time)
    step: int | None = None  # the last step reported; None: not started
    active: int = 0  # members still training at that step
    done: bool = False
    first: tuple[float, int] | None = None  # (time, step) of the first report
    rate: float | None = None  # steps per second since the first report

    def report(self, now: float, step: int, active: int) -> None:
        if self.first is None:
            self.first = (now, step)
        elif now > self.first[0] and step > self.first[1]:
            self.rate = (step - self.first[1]) / (now - self.first[0])
        self.step, self.active = step, active

    @property
    def running(self) -> bool:
        return self.step is not None and not self.done

    def describe(self) -> str:
        """``step 1200 of 5000, 12 of 16 training`` (a point alone: no count)."""
        text = f"step {self.step} of {self.steps}"
        if self.members > 1:
            text += f", {self.active} of {self.members} training"
        return text


def format_seconds(s: float) -> str:
    """``45s``, ``4m10s``, ``2h05m``: a time left at the precision that matters."""
    s = max(0, round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def time_left(jobs: list[Job], workers: int) -> float | None:
    """Seconds until every job is done if every member trains to its last step, at the rates
    shown so far; None until one job has shown a rate. Running jobs go on at their own
    rate; the jobs not started share the workers, at the median rate seen."""
    rates = [j.rate for j in jobs if j.rate is not None]
    if not rates:
        return None
    typical = statistics.median(rates)
    running = [(j.steps - j.step) / (j.rate or typical) for j in jobs if j.running]
    waiting = [j.steps / typical for j in jobs if j.trains and j.step is None and not j.done]
    longest = max(running, default=0.0)
    return max(longest, (sum(running) + sum(waiting)) / max(1, workers))


def _sized(stream) -> bool:
    """Whether ``stream`` is a terminal that says how wide it is. One that says 0 columns (a
    pseudo-terminal nobody sized) would get no bars: :data:`UNSIZED` instead."""
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


class SweepProgress:
    """What a sweep shows while it runs, on ``stream``: ``mode`` ``"bars"`` (tqdm),
    ``"lines"`` (plain, every ``every`` seconds) or None (nothing: ``--json``). The sweep
    calls :meth:`update` with each report, :meth:`point_done` with each finished point,
    :meth:`job_done`, :meth:`tick` between them and :meth:`close` at the end;
    :meth:`write` prints a line of its own without breaking the bars."""

    def __init__(
        self,
        jobs: list[Job],
        points: int,
        workers: int,
        stream,
        mode: str | None,
        label: str = "",
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs, self.points, self.workers = jobs, points, workers
        self.stream, self.mode, self.label = stream, mode, label
        self.every = LINE_EVERY_S if every is None else every
        self.clock = clock
        self.done = self.solved = 0
        self.last_lines = clock()
        self.bar = None
        self.bars: dict[int, tqdm] = {}
        self.sized = mode == "bars" and _sized(stream)
        if mode == "bars":
            self.bar = tqdm(
                total=points,
                desc=f"{label}sweep",
                unit="point",
                file=stream,
                dynamic_ncols=self.sized,
                **self._size(),
                bar_format="{desc}: {n_fmt}/{total_fmt} points |{bar}| {elapsed}{postfix}",
            )
            self._sweep_postfix()

    def _size(self) -> dict[str, int]:
        return {} if self.sized else UNSIZED

    @classmethod
    def on(
        cls,
        stream,
        jobs: list[Job],
        points: int,
        workers: int,
        label: str = "",
        enabled: bool = True,
        bars: bool = True,
    ) -> SweepProgress:
        """Bars where ``stream`` is a terminal (and ``bars``), plain lines elsewhere, nothing
        if not ``enabled``."""
        isatty = getattr(stream, "isatty", None)
        terminal = bars and isatty is not None and isatty()
        mode = None if not enabled else "bars" if terminal else "lines"
        return cls(jobs, points, workers, stream, mode, label)

    def left(self) -> str:
        seconds = time_left(self.jobs, self.workers)
        if seconds is None:
            return "time left: measuring"
        return f"about {format_seconds(seconds)} left if no run solves early"

    def update(self, j: int, step: int, active: int) -> None:
        job = self.jobs[j]
        if job.done:
            return  # a report that arrived after its job's result
        job.report(self.clock(), step, active)
        if self.mode == "bars":
            bar = self.bars.get(j)
            if bar is None:
                bar = self.bars[j] = tqdm(
                    total=job.steps,
                    initial=step,
                    desc=f"{self.label}  {job.label}",
                    unit="step",
                    leave=False,
                    file=self.stream,
                    dynamic_ncols=self.sized,
                    **self._size(),
                    bar_format="{desc}: {n_fmt}/{total_fmt} steps{postfix} |{bar}|",
                )
            bar.n = step
            bar.set_postfix_str(
                f"{active} of {job.members} training" if job.members > 1 else "training",
                refresh=False,
            )
            bar.refresh()

    def point_done(self, solved: bool) -> None:
        self.done += 1
        self.solved += bool(solved)
        if self.bar is not None:
            self.bar.update(1)

    def job_done(self, j: int, step: int | None = None) -> None:
        """Job ``j`` ended, at ``step`` if known (its rows say): its rate is kept for the
        estimate of the jobs still to start."""
        job = self.jobs[j]
        if step is not None and job.first is not None and not job.done:
            job.report(self.clock(), step, 0)
        job.done = True
        bar = self.bars.pop(j, None)
        if bar is not None:
            bar.close()

    def tick(self) -> None:
        """The sweep's own figures: redrawn (bars) or, when due, a block of lines."""
        if self.mode == "bars":
            self._sweep_postfix()
        elif self.mode == "lines" and self.clock() - self.last_lines >= self.every:
            self.last_lines = self.clock()
            self._lines()

    def _sweep_postfix(self) -> None:
        self.bar.set_postfix_str(f"{self.solved} solved, {self.left()}")

    def _lines(self) -> None:
        running = [j for j in self.jobs if j.running]
        # a population's finished members are reported when it ends: counted apart till then
        finished = sum(j.members - j.active for j in running)
        now = f"{len(running)} running"
        if finished:
            now = f"{finished} more finished in the {len(running)} running"
        lines = [
            f"{self.label}sweep: {self.done} of {self.points} points done "
            f"({self.solved} solved), {now}, {self.left()}"
        ]
        lines += [f"{self.label}  {j.label}: {j.describe()}" for j in running]
        print("\n".join(lines), file=self.stream, flush=True)

    def write(self, line: str, file) -> None:
        """A line on ``file`` (the sweep's line per point), above the bars."""
        if self.mode == "bars":
            tqdm.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        if self.bar is not None:
            self.bar.close()


class Throttled:
    """A trainer's ``progress`` callable that passes a report on to ``send(step, active)``
    at most every ``every`` seconds, and at once when the members still training change
    (the first report, a member leaving, the last)."""

    def __init__(
        self,
        send: Callable[[int, int], None],
        every: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send, self.every, self.clock = send, every, clock
        self.last: float | None = None
        self.active: int | None = None

    def __call__(self, step: int, active: int) -> None:
        now = self.clock()
        if active != self.active or self.last is None or now - self.last >= self.every:
            self.last, self.active = now, active
            self.send(step, active)
