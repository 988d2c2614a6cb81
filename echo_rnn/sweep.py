"""Sweeps over echo step x hidden size x seed. Each grid point is an ordinary run directory
under ``LOGDIR/SWEEP_NAME/``. A finished point (one with ``summary.json``) is read back, not
run again, unless it ran out of steps unsolved and the sweep is re-run with more ``--steps``:
then it continues to the new budget. An interrupted point resumes from its checkpoint. Points
run in ``--workers`` local processes and, under ``torchrun``, are shared out over the ranks,
rank 0 gathering the results and writing the tables (:mod:`echo_rnn.tables`)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from echo_rnn.config import MAX_SEED, ConfigError, TrainConfig
from echo_rnn.engine import distributed
from echo_rnn.engine.population_train import population_key, train_population
from echo_rnn.engine.train import NonFiniteLoss, TrainingInterrupted, train
from echo_rnn.progress import REPORT_EVERY_S, Job, SweepProgress, Throttled
from echo_rnn.run.checkpoint import read_summary, written_checkpoint
from echo_rnn.run.locks import Busy, DirLock
from echo_rnn.run.rundir import logdir_error
from echo_rnn.run.signals import stop_requests
from echo_rnn.tables import results_markdown, summarize, write_results

# Far more than a machine runs in a day; stops a typo from building a grid of 10^8 configs.
MAX_POINTS = 100_000

# TensorBoard's Time Series dashboard scales a card to its points' 5th-95th percentile by
# default (a setting kept in the browser, out of our reach): in a sweep where most runs stay
# below 1, the solved runs' accuracy curves are cut at the top. Said where the sweep ends.
OUTLIERS_HINT = (
    "  (in its Time Series dashboard, untick Settings > 'Ignore outliers in chart scaling' "
    "to see the solved runs' accuracy reach 1)"
)


# A bound is a number, or H with an optional offset (H, H+1, H-2); a part is a bound or a
# range of two. Offsets only follow H, so "2-5" is a range and "H-1" a single value.
# ASCII digits only: \d and int() take Arabic-Indic and full-width digits too
_PART = re.compile(r"(\d+|H(?:[+-]\d+)?)(?:-(\d+|H(?:[+-]\d+)?))?", re.ASCII)


def parse_int_list(text: str, setting: str, H: int | None = None) -> list[int]:
    """``"1-8"``, ``"2,4,6"`` or ``"0-2,7"`` -> sorted distinct integers. With ``H`` given, a
    bound may be written relative to it: ``"1-H+1"`` is 1..H+1 for each hidden size."""

    def bound(tok: str) -> int:
        if tok.startswith("H"):
            if H is None:
                raise ValueError
            return H + int(tok[1:] or 0)
        return int(tok)

    out: set[int] = set()
    for part in text.split(","):
        m = _PART.fullmatch(part.strip())
        try:
            if m is None:
                raise ValueError
            lo = bound(m.group(1))
            hi = bound(m.group(2)) if m.group(2) else lo
            if lo > hi:
                raise ValueError
        except ValueError:
            raise ConfigError(
                setting, f"must be a list like 1-8, 2,4,6 or 1-H+1, got {text!r}"
            ) from None
        if hi > MAX_SEED:
            raise ConfigError(setting, f"values must be at most {MAX_SEED}, got {hi}")
        if hi - lo + 1 + len(out) > MAX_POINTS:  # checked before the range is built
            raise ConfigError(
                setting,
                f"at most {MAX_POINTS} values, got {hi - lo + 1 + len(out)} or more in {text!r}",
            )
        out.update(range(lo, hi + 1))
    return sorted(out)


def echo_steps_for(text: str, hidden_sizes: list[int]) -> dict[int, list[int]]:
    """The echo steps of ``--echo-steps`` for each hidden size (they may depend on H)."""
    return {H: parse_int_list(text, "echo_steps", H) for H in hidden_sizes}


def point_name(config: TrainConfig) -> str:
    return f"k{config.echo_step}-H{config.hidden_size}-s{config.seed}"


# The sweep's own flags for the settings its grid sets: an error names what the user typed.
GRID_FLAGS = {
    "echo_step": "echo_steps",
    "hidden_size": "hidden_sizes",
    "seed": "seeds",
    "run_name": "name",
}


def grid(
    base: TrainConfig, echo_steps: dict[int, list[int]], seeds: list[int], sweep_dir: Path
) -> list[TrainConfig]:
    """One config per (H, k, seed), k from ``echo_steps[H]``, each validated; raises
    ConfigError for a bad point (or too many), naming the sweep's flag."""
    total = sum(len(ks) for ks in echo_steps.values()) * len(seeds)
    if total > MAX_POINTS:
        raise ConfigError(
            "seeds", f"the grid has {total} points; a sweep runs at most {MAX_POINTS}"
        )
    configs = []
    for H, ks in echo_steps.items():
        for k in ks:
            for seed in seeds:
                c = replace(
                    base,
                    echo_step=k,
                    hidden_size=H,
                    seed=seed,
                    logdir=str(sweep_dir),
                    run_name=None,
                )
                c = replace(c, run_name=point_name(c))
                try:
                    c.validate()
                except ConfigError as exc:
                    own = GRID_FLAGS.get(exc.setting)
                    if own is None:
                        raise
                    raise ConfigError(own, f"{exc.detail} (at H={H}, k={k}, seed={seed})") from None
                configs.append(c)
    return configs


_stop = None  # a multiprocessing Event in workers: set once the sweep is told to stop
_reports = None  # a multiprocessing Queue in workers: their jobs' progress, to the parent
_busy = threading.Event()  # set in a worker while it runs a job

# How often a worker looks for its parent, and how long a worker whose parent died gives
# the point it is training to checkpoint before it exits.
PARENT_POLL_S = 0.2
ORPHAN_GRACE_S = 3.0


def _worker_init(stop, parent: int, reports=None) -> None:
    """Runs in each worker before its first job. ``parent`` is the sweep's pid, taken in the
    parent before the worker was started: a worker that starts after its parent died (the
    interpreter and torch take seconds to load) finds it gone at once. ``reports``: the
    queue the jobs' progress goes to."""
    global _stop, _reports
    _stop = stop
    _reports = reports
    if reports is not None:
        # a report still buffered when the worker exits is not worth waiting for
        reports.cancel_join_thread()
    # Ctrl-C and a closed terminal's SIGHUP reach every process of the terminal's group. A
    # worker between points has nothing to save and leaves stopping to the parent (a
    # KeyboardInterrupt there would break the pool); a worker inside a point handles it
    # itself (train's own handlers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (kill -9 leaves no chance to stop it) exits too, instead
    of training on for nobody and holding the output pipe open: the point it trains is
    asked to stop (it checkpoints after its step), and the worker exits once it has, or
    after ORPHAN_GRACE_S."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    if _stop is not None:
        _stop.set()
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while _busy.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(1)


def check_rerun(sweep_dir: Path, base: TrainConfig) -> None:
    """Refuse to re-run the sweep in ``sweep_dir`` with other settings than it was started
    with. Finished points are read back, not re-run, so other settings would put two
    experiments in one table. What a resumed run may change may change here too, except
    that ``steps`` may only be raised (unsolved points then continue); the grid may grow or
    shrink. Raises ConfigError; nothing is written."""
    spec = sweep_dir / "sweep.json"
    if not spec.exists():
        return
    try:
        recorded = TrainConfig.from_dict(json.loads(spec.read_text())["base"], recorded=True)
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            "name", f"{spec} is not a readable sweep record; choose another --name"
        ) from None
    diff = base.resume_changes(recorded)
    if base.steps < recorded.steps:
        diff.append("steps")
    if diff:
        old, new = recorded.to_dict(), base.to_dict()
        changes = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in diff)
        raise ConfigError(
            "name",
            f"the sweep in {sweep_dir} was run with other settings ({changes}); "
            "re-run it with the same settings (--steps may only be raised) or choose "
            "another --name",
        )


def _fresh(config: TrainConfig) -> bool:
    """A point with nothing saved yet (no summary, no checkpoint): it may join a population."""
    run_dir = Path(config.logdir) / config.run_name
    return not (run_dir / "summary.json").exists() and written_checkpoint(run_dir) is None


def _hardness(config: TrainConfig) -> tuple[float, int]:
    """How long a point is likely to train, for ordering only: echoing k steps back with H
    units gets harder as k nears and passes H (k / H), and the points that never solve
    train every step."""
    return config.echo_step / config.hidden_size, config.echo_step


def plan(configs: list[TrainConfig], population: int) -> list[TrainConfig | list[TrainConfig]]:
    """The sweep's jobs: fresh points that can share a kernel (equal
    :func:`~echo_rnn.engine.population_train.population_key`) in populations of at most
    ``population``, first; every other point alone (read back, resumed, extended, or a config
    that cannot join a population).

    A population trains as long as its slowest member, so the points of a shape are grouped
    hardest first (largest k / H): the hard points, which may train every step, share one
    population, and the remainder holds the easy ones, which solve in a few hundred steps,
    rather than two populations each waiting on a hard point. The populations start
    hardest first too, so the long ones run side by side from the start instead of one
    of them starting last."""
    groups: dict[tuple, list[TrainConfig]] = {}
    alone: list[TrainConfig] = []
    for c in configs:
        key = population_key(c) if population > 1 and _fresh(c) else None
        if key is None:
            alone.append(c)
        else:
            groups.setdefault(key, []).append(c)
    chunks: list[list[TrainConfig]] = []
    for members in groups.values():
        members = sorted(members, key=_hardness, reverse=True)  # stable: seeds keep order
        chunks += [members[i : i + population] for i in range(0, len(members), population)]
    chunks.sort(key=lambda chunk: (_hardness(chunk[0]), len(chunk)), reverse=True)
    return [chunk if len(chunk) > 1 else chunk[0] for chunk in chunks] + alone


def share(jobs: list[TrainConfig | list[TrainConfig]], ranks: int) -> list[list[TrainConfig]]:
    """The points of each of ``ranks`` ranks: whole jobs (a population is never split over
    ranks), dealt largest first to the rank with the fewest points so far; deterministic, so
    every rank computes the same shares. Within a rank the jobs keep their order."""
    order = sorted(
        range(len(jobs)), key=lambda j: -(len(jobs[j]) if isinstance(jobs[j], list) else 1)
    )
    load, owner = [0] * ranks, {}
    for j in order:
        rank = min(range(ranks), key=lambda r: (load[r], r))
        owner[j] = rank
        load[rank] += len(jobs[j]) if isinstance(jobs[j], list) else 1
    return [
        [
            c
            for j, job in enumerate(jobs)
            if owner[j] == r
            for c in (job if isinstance(job, list) else [job])
        ]
        for r in range(ranks)
    ]


def _failing_stops_the_sweep():
    if _stop is not None:  # set here, before this worker can take the next point
        _stop.set()


def run_population(
    configs: list[TrainConfig], progress: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]] | None:
    """Train fresh points as one population; their rows, or None if the sweep is stopping.
    ``progress``: :func:`~echo_rnn.engine.population_train.train_population`'s."""
    _busy.set()
    try:
        return _run_population(configs, progress)
    finally:
        _busy.clear()


def _run_population(
    configs: list[TrainConfig], progress: Callable[[int, int], None] | None
) -> list[dict[str, Any]] | None:
    if _stop is not None and _stop.is_set():
        return None
    for c in configs:
        run_dir = Path(c.logdir) / c.run_name
        if run_dir.exists():
            shutil.rmtree(run_dir)  # died before its first checkpoint: nothing was saved
    try:
        train_population(
            configs, stop=_stop.is_set if _stop is not None else None, progress=progress
        )
    except Exception:
        _failing_stops_the_sweep()
        raise
    return [_row(c) for c in configs]


def needs_run(config: TrainConfig) -> bool:
    """Whether the point has training to do: it has no summary, or a re-run with a larger
    --steps continues it (it ran out of steps unsolved). Otherwise it is read back."""
    summary = Path(config.logdir) / config.run_name / "summary.json"
    if not summary.exists():
        return True
    done = read_summary(summary.parent)  # CheckpointError: one line, naming the file
    return done["stopped"] == "steps" and done["step"] < config.steps


def run_point(
    config: TrainConfig, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any] | None:
    """Run (or finish, or extend, or just read) one grid point; None if the sweep is
    stopping. ``progress``: :func:`~echo_rnn.engine.train.train`'s."""
    _busy.set()
    try:
        return _run_point(config, progress)
    finally:
        _busy.clear()


def _reporting(run, job, j: int):
    """In a worker: ``run(job)`` (:func:`run_point` or :func:`run_population`), its progress
    sent to the parent as (job index, step, members still training)."""
    send = None
    if _reports is not None:
        send = Throttled(lambda step, active: _reports.put((j, step, active)))
    return run(job, send)


def _run_point(
    config: TrainConfig, progress: Callable[[int, int], None] | None
) -> dict[str, Any] | None:
    run_dir = Path(config.logdir) / config.run_name
    if needs_run(config):
        if _stop is not None and _stop.is_set():
            return None
        # a damaged checkpoint is CheckpointError, not a run to start again over
        resume = run_dir if written_checkpoint(run_dir) is not None else None
        if resume is None and run_dir.exists():
            shutil.rmtree(run_dir)  # died before its first checkpoint: nothing was saved
        stop = _stop.is_set if _stop is not None else None
        try:
            train(
                config,
                resume=resume,
                verbose=False,
                data_parallel=False,
                stop=stop,
                progress=progress,
            )
        except NonFiniteLoss:
            pass  # a result like any other: the point diverged, summary.json says so
        except Exception:
            _failing_stops_the_sweep()
            raise
    return _row(config)


def _row(config: TrainConfig) -> dict[str, Any]:
    """A finished point's row of results.csv, from its summary.json."""
    done = read_summary(Path(config.logdir) / config.run_name)
    return {
        "echo_step": config.echo_step,
        "hidden_size": config.hidden_size,
        "seed": config.seed,
        "solved": done["solved_step"] is not None,
        **{
            k: done[k]
            for k in (
                "solved_step",
                "val_accuracy",
                "val_loss",
                "step",
                "wall_time_s",
                "stopped",
                "run_dir",
            )
        },
    }


@dataclass
class SweepOutcome:
    rows: list[dict[str, Any]]
    done: int
    total: int
    interrupted: int | None = None  # the signal number, if stopped by one

    TABLES = ("results.csv", "results.md", "heatmap.png")

    @property
    def solved(self) -> int:
        return sum(r["solved"] for r in self.rows)

    def to_dict(self, sweep_dir: str) -> dict[str, Any]:
        """``sweep --json``'s object: the counts, the tables (once every point finished) and
        a row per point as in results.csv."""
        return {
            "sweep_dir": sweep_dir,
            "total": self.total,
            "done": self.done,
            "solved": self.solved,
            "interrupted": (
                signal.Signals(self.interrupted).name if self.interrupted is not None else None
            ),
            "tables": (
                [f"{sweep_dir}/{f}" for f in self.TABLES] if self.done == self.total else []
            ),
            "rows": self.rows,
        }

    def format(self, sweep_dir: str, echo_steps: dict[int, list[int]]) -> str:
        """What a finished sweep prints: the counts, the per-(k, H) table of results.md, and
        how to view it (``echo_steps``: the k of each H, as :func:`echo_steps_for` gives)."""
        all_ks = sorted({k for ks in echo_steps.values() for k in ks})
        # results.md's table, without its title line
        table = results_markdown(summarize(self.rows), all_ks, list(echo_steps)).split("\n\n")[1]
        return (
            f"{self.total} runs, {self.solved} solved; tables in {sweep_dir}/results.md, "
            f"results.csv, heatmap.png\n{table}\n"
            f"view it: tensorboard --logdir {shlex.quote(sweep_dir)}\n{OUTLIERS_HINT}"
        )

    def stopped_line(self) -> str:
        """The one line for a sweep a signal stopped (``interrupted`` is set)."""
        name = signal.Signals(self.interrupted).name
        rest = (
            "the tables are written"
            if self.done == self.total
            else "run the same command again to finish the rest"
        )
        return f"stopped by {name}: {self.done} of {self.total} points finished and kept; {rest}"


def _verdict(row: dict[str, Any]) -> str:
    if row["solved"]:
        return f"solved at step {row['solved_step']}"
    if row["stopped"] == "diverged":
        return f"diverged at step {row['step']}"
    return f"not solved in {row['step']} steps, val_acc {row['val_accuracy']:.4f}"


def _finished_before(config: TrainConfig) -> bool:
    """A point that an earlier run of the sweep finished: read back, not run."""
    try:
        return not needs_run(config)
    except (OSError, ValueError, KeyError, TypeError):
        return False  # the worker that reads it says what is wrong


def _job_label(configs: list[TrainConfig]) -> str:
    """A job as the progress display names it: a point's run name, or a population's shape,
    size and echo steps (``H4 x16 (k 1-5)``)."""
    if len(configs) == 1:
        return configs[0].run_name
    ks = sorted({c.echo_step for c in configs})
    k = f"{ks[0]}-{ks[-1]}" if len(ks) > 1 else f"{ks[0]}"
    return f"H{configs[0].hidden_size} x{len(configs)} (k {k})"


def _run_local(
    configs: list[TrainConfig],
    workers: int,
    label: str,
    population: int = 1,
    out=None,
    progress: bool = True,
) -> SweepOutcome:
    """Run ``configs`` in ``workers`` processes (fresh points in populations of at most
    ``population``), with a line per point on ``out`` (default: stdout) and, with
    ``progress``, the jobs' progress on stdout (:mod:`echo_rnn.progress`); on
    SIGINT/SIGTERM/SIGHUP stop starting points, let running ones checkpoint, and return
    what finished."""
    rows: list[dict[str, Any]] = []
    read_back = {c.run_name for c in configs if _finished_before(c)}
    jobs = plan(configs, population)
    members = [job if isinstance(job, list) else [job] for job in jobs]
    shown = SweepProgress.on(
        sys.stdout,
        [
            Job(
                _job_label(m),
                len(m),
                m[0].steps,
                trains=not all(c.run_name in read_back for c in m),
            )
            for m in members
        ],
        len(configs),
        workers,
        label,
        enabled=progress,
        # under torchrun the ranks share a terminal, where their bars would overwrite
        bars=not distributed.current().enabled,
    )

    def record(done) -> int | None:
        """Record a job's rows; the step it ended at (None: it was stopping)."""
        done = [row for row in (done if isinstance(done, list) else [done]) if row is not None]
        for row in done:
            record_row(row)
        return max((row["step"] for row in done), default=None)

    def record_row(row):
        rows.append(row)
        shown.point_done(row["solved"])
        name = point_name(
            replace(
                configs[0],
                echo_step=row["echo_step"],
                hidden_size=row["hidden_size"],
                seed=row["seed"],
            )
        )
        earlier = " (read back: finished by an earlier run)" if name in read_back else ""
        shown.write(
            f"{label}k={row['echo_step']} H={row['hidden_size']} "
            f"seed={row['seed']}: {_verdict(row)}{earlier}",
            file=out if out is not None else sys.stdout,
        )

    def run(j: int):
        return run_population if isinstance(jobs[j], list) else run_point

    pool = None
    stop = None
    reports = None
    if workers > 1:
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        reports = ctx.Queue() if progress else None
        pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init, initargs=(stop, os.getpid(), reports)
        )

    # A signal stops the starting of points; a point that is training sees the event (or,
    # from a terminal, the signal itself), finishes its step and checkpoints.
    on_signal = (lambda signum: stop.set()) if stop is not None else None
    with stop_requests(on_signal, insist=False) as received:
        try:
            if pool is None:
                for j, job in enumerate(jobs):
                    if received:
                        break

                    def report(step, active, j=j):
                        shown.update(j, step, active)
                        shown.tick()

                    ended = None
                    try:
                        ended = record(run(j)(job, Throttled(report) if progress else None))
                    except TrainingInterrupted as exc:
                        received.append(exc.signum)
                    finally:
                        shown.job_done(j, ended)
                    shown.tick()
            else:
                futures = {pool.submit(_reporting, run(j), job, j): j for j, job in enumerate(jobs)}
                pending = set(futures)
                while pending:
                    # woken at least every REPORT_EVERY_S to show the reports that came in
                    finished, pending = wait(
                        pending, timeout=REPORT_EVERY_S, return_when=FIRST_COMPLETED
                    )
                    _show_reports(reports, shown)
                    for f in finished:
                        ended = None
                        try:
                            ended = record(f.result())
                        except TrainingInterrupted:
                            pass  # checkpointed; the next run of the sweep resumes it
                        except BrokenProcessPool:
                            if not received:  # not a signal: a worker was killed
                                raise
                            pending = set()  # a worker hit by the signal while starting
                        finally:
                            shown.job_done(futures[f], ended)
                    shown.tick()
        except BaseException:
            if stop is not None:
                stop.set()  # a point failed: start no more, let the running ones finish
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if reports is not None:
                reports.close()
            shown.close()
    return SweepOutcome(rows, len(rows), len(configs), received[0] if received else None)


def _show_reports(reports, shown: SweepProgress) -> None:
    """Pass on the (job, step, active) reports the workers sent since the last call."""
    while reports is not None:
        try:
            j, step, active = reports.get_nowait()
        except queue.Empty:
            return
        shown.update(j, step, active)


def run_sweep(
    base: TrainConfig,
    echo_steps: dict[int, list[int]],
    seeds: list[int],
    name: str,
    workers: int | None = None,
    population: int = 1,
    out=None,
    progress: bool = True,
) -> SweepOutcome:
    """Run the grid (this rank's share of it under torchrun); rank 0 writes the tables.
    ``echo_steps`` maps each hidden size to its echo steps; fresh points that can share a
    kernel train in populations of at most ``population`` (1: each alone); a line per
    point goes to ``out`` (default: stdout), and with ``progress`` the progress of the
    points under way to stdout (:mod:`echo_rnn.progress`: bars on a terminal, a few lines
    elsewhere). The sweep's directory is locked while it runs (one sweep of a name at a
    time): :class:`~echo_rnn.run.locks.Busy` otherwise."""
    with ExitStack() as held:
        return _run_sweep(base, echo_steps, seeds, name, workers, population, out, held, progress)


def _run_sweep(
    base, echo_steps, seeds, name, workers, population, out, held: ExitStack, progress: bool = True
) -> SweepOutcome:
    d = distributed.current()
    sweep_dir = Path(base.logdir) / name
    configs = grid(base, echo_steps, seeds, sweep_dir)
    if workers is None:  # the cores, shared by torchrun's local ranks and each run's threads
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        workers = max(1, (os.cpu_count() or 1) // (local * base.threads))
    error = None
    if d.is_main:
        spec = {
            "echo_steps": {str(H): ks for H, ks in echo_steps.items()},
            "seeds": seeds,
            "base": base.to_dict(),
            "points": len(configs),
        }
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(DirLock(sweep_dir, "sweep"))
            check_rerun(sweep_dir, base)  # again, now that no other sweep can write it
            (sweep_dir / "sweep.json").write_text(json.dumps(spec, indent=2) + "\n")
        except OSError as exc:
            error = logdir_error(exc, sweep_dir)
        except (Busy, ConfigError) as exc:
            error = exc
    if d.enabled:  # every rank learns whether the sweep goes ahead
        error = distributed.broadcast_object(error)
    if error is not None:
        raise error
    # Every rank plans the same jobs from the same files before any trains (the barrier),
    # and takes whole populations: its share of the points, replanned, groups them again.
    mine = share(plan(configs, population), d.world_size)[d.rank]
    distributed.barrier()
    label = f"[rank {d.rank}] " if d.enabled else ""
    outcome = _run_local(mine, workers, label, population, out=out, progress=progress)
    # Every rank reports how it ended, so that none waits for one that was interrupted.
    gathered = distributed.gather_objects((outcome.rows, outcome.interrupted))
    if not d.is_main:
        return outcome
    # the points' own order (as configs lists them), not the order they finished in
    place = {c.run_name: i for i, c in enumerate(configs)}
    rows = sorted(
        (r for part, _ in gathered for r in part),
        key=lambda r: place.get(Path(r["run_dir"]).name, len(place)),
    )
    interrupted = next((sig for _, sig in gathered if sig is not None), None)
    outcome = SweepOutcome(rows, len(rows), len(configs), interrupted)
    if len(rows) == len(configs):  # also when a signal came after the last point
        all_ks = sorted({k for ks in echo_steps.values() for k in ks})
        write_results(sweep_dir, rows, all_ks, list(echo_steps))
    return outcome
