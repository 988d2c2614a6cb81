"""The one loop: every run trains as a member of a population, R >= 1. ``echo-rnn train`` is a
population of one, a sweep's group a population of many; both are :func:`train_runs` over
:class:`Run` objects and a stepper (:mod:`echo_rnn.engine.steppers`).

Each step: every active run's optimizer step; every ``log_every`` steps a point (the steps'
losses and gradient norms read off the device in one sync, the held-out metrics); every
``eval_every`` steps an evaluation (solved, the curriculum, the pictures, the kernel against
autograd), and at every ``checkpoint_every``-th a checkpoint. A run that is solved, runs
out of steps or diverges is finished (its last checkpoint, summary.json, hparams) and leaves
the population: it costs nothing afterwards. After any step, once a signal (or the sweep)
asks, every run still training is checkpointed and
:class:`~echo_rnn.engine.outcome.TrainingInterrupted` is raised.

Host syncs: per-step losses and gradient norms stay on the device and are read at points;
nothing else waits for the device.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch

from echo_rnn.config import TrainConfig
from echo_rnn.data import make_echo_batch
from echo_rnn.engine import distributed
from echo_rnn.engine.curriculum import Curriculum
from echo_rnn.engine.members import held_out
from echo_rnn.engine.outcome import TrainingInterrupted, TrainResult, write_outcome
from echo_rnn.engine.steppers import Overflow
from echo_rnn.engine.witness import compare_due, gradient_flow
from echo_rnn.model import weights_digest
from echo_rnn.run.checkpoint import checkpoint_path, save_checkpoint
from echo_rnn.run.rundir import HeldDir
from echo_rnn.run.runlog import RunLog
from echo_rnn.run.state import Progress, RunRecord

# The held-out set comes from its own generator, seeded apart from the training stream, so
# that it is the same set for a seed whatever the training does.
VAL_SEED_OFFSET = 1_000_003


def streams(
    config: TrainConfig, device: torch.device, compiled: bool
) -> tuple[torch.Generator | None, tuple[torch.Tensor, torch.Tensor]]:
    """A run's training stream and its held-out set, (val_size, T) each. The compiled
    kernel's streams are its own counters: nothing to hold but the held-out set it drew."""
    if compiled:
        return None, held_out(config)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    val_gen = torch.Generator(device=device).manual_seed(config.seed + VAL_SEED_OFFSET)
    c = config
    val = make_echo_batch(c.val_size, c.seq_len, c.echo_step, generator=val_gen, device=device)
    return gen, val


@dataclass
class Run:
    """One run's state: its config, directory, log, training stream, held-out set, curriculum
    and progress. What its checkpoint holds is a :class:`~echo_rnn.run.state.RunRecord` made
    from it (:func:`_checkpoint`) and read back into it (:meth:`resume`)."""

    config: TrainConfig
    run_dir: Path
    log: RunLog | None
    gen: torch.Generator | None  # the torch kernels' training stream (compiled: a counter)
    val: tuple[torch.Tensor, torch.Tensor]  # the held-out set, (val_size, T) each
    curriculum: Curriculum
    home: HeldDir | None = None  # the run directory, held: checked before each write
    main: bool = True  # writes its directory (under torchrun, rank 0 alone)
    progress: Progress = field(default_factory=Progress)
    wall_before: float = 0.0  # seconds spent in earlier sessions of this run
    grad_norm: float | None = None  # at the last point
    # the steps since the last point a resumed checkpoint carried: logged at the next point
    carried: list[tuple[int, float, float, float]] = field(default_factory=list)
    diverged: tuple[int, float | str] | None = None  # (step, what became non-finite)
    saved_step: int | None = None  # the step of the last checkpoint written or read

    @classmethod
    def new(
        cls,
        config: TrainConfig,
        run_dir: Path,
        device: torch.device,
        compiled: bool,
        home: HeldDir | None,
        main: bool = True,
        log: RunLog | None = None,
    ) -> Run:
        """A run at its start: its streams drawn (:func:`streams`), its curriculum at its
        first k."""
        gen, val = streams(config, device, compiled)
        return cls(config, run_dir, log, gen, val, Curriculum.from_config(config), home, main)

    def resume(self, record: RunRecord) -> None:
        """Take up where ``record`` (the run's checkpoint) left off; the stepper loads the
        weights, the optimizer and the stream."""
        self.curriculum.load_state_dict(record.curriculum)
        self.progress = record.progress
        self.wall_before = float(record.progress.wall_time_s or 0.0)
        self.carried = list(record.window)
        self.saved_step = record.step

    def over(self, step: int) -> bool:
        """Solved, diverged, or out of steps at ``step``: the run is finished."""
        return (
            self.progress.solved_step is not None
            or self.diverged is not None
            or step >= self.config.steps
        )


class Clock:
    """Seconds since the clock was made: the run's time, not its setup's."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


Pending = list[tuple[int, torch.Tensor, torch.Tensor, float]]  # (step, losses, norms, lr)


def train_runs(
    runs: list[Run],
    stepper,
    *,
    clock: Clock,
    stopping: Callable[[], bool],
    received: list[int],
    step: int = 0,
    fresh: bool = True,
    progress: Callable[[int, int], None] | None = None,
    dist: distributed.Dist | None = None,
) -> list[TrainResult]:
    """Train ``runs`` (one config but for their echo_step, seed and run_name) with
    ``stepper`` from ``step``; their results, in order. ``fresh``: new runs, evaluated and
    checkpointed at step 0 first (a resumed run goes on from its checkpoint's step).

    ``stopping`` is polled after every step; ``received`` holds the signal that asked, if
    any (one that arrived during start-up stops the runs before their first step).
    ``progress``, if given, is called with (step, runs still training) at the start and after
    every step (it should return at once). ``dist``: the torchrun process group of a run alone
    (every rank steps, stops and finishes together)."""
    dist = dist or distributed.Dist()
    c0 = runs[0].config
    results: dict[int, TrainResult] = {}
    active = list(range(len(runs)))
    try:
        for run in runs:
            run.log.open_bar()
        stepper.stack(runs, active)
        moved = False
        if fresh:
            for run in runs:
                run.log.config_text()
            moved = _point(stepper, runs, active, step, [], True, False, clock)
            _checkpoints(stepper, runs, active, step, clock, checked=True)
        elif any(
            runs[i].over(step) and runs[i].progress.last_eval.get("step") != step for i in active
        ):  # resumed with nothing left to do, its last evaluation before this step
            moved = _point(stepper, runs, active, step, [], True, False, clock)
        active = _settle(stepper, runs, active, step, moved, clock, results)
        if progress is not None:
            progress(step, len(active))
        pending: Pending = []
        if active and _agreed(bool(received), dist, stepper):  # a signal during start-up
            active = _stop(stepper, runs, active, step, clock, pending, received, results)
        while active and step < c0.steps:
            try:
                losses, norms = stepper.step(step)  # (R,) each: each run's loss, grad norm
            except Overflow:
                for i in active:
                    runs[i].diverged = (step + 1, "the update overflowed")
                active = _settle(stepper, runs, active, step, False, clock, results)
                break
            step += 1
            pending.append((step, losses, norms, stepper.lr))
            lead = runs[active[0]].curriculum  # a curriculum with a schedule trains alone
            since = step - lead.since
            if c0.lr_halve_every and lead.at_last and since % c0.lr_halve_every == 0:
                stepper.halve_lr()  # every N steps from reaching the last k
            is_eval = step % c0.eval_every == 0 or step == c0.steps
            stop = stopping()
            moved = False
            # Under torchrun every rank reads its points at the same steps (a collective),
            # and learns there whether any rank was signalled.
            if is_eval or step % c0.log_every == 0:
                moved = _point(stepper, runs, active, step, pending, is_eval, True, clock)
                pending = []
                stop = _agreed(stop, dist, stepper)
            elif dist.enabled:
                stop = False
            if is_eval:
                if stop or (step // c0.eval_every) % c0.checkpoint_every == 0:
                    _checkpoints(stepper, runs, active, step, clock, durable=stop, checked=True)
                else:  # no checkpoint due: still, a run whose directory went stops here
                    _check_homes(runs, active, step)
            active = _settle(stepper, runs, active, step, moved, clock, results)
            if progress is not None:
                progress(step, len(active))
            if active and stop:
                if is_eval:  # checkpointed above
                    _interrupted(runs, active, step, received)
                active = _stop(stepper, runs, active, step, clock, pending, received, results)
        return [results[i] for i in range(len(runs))]
    except OSError:
        _check_homes(runs, active, step)  # gone while a file was written: say that, not ENOENT
        raise
    finally:
        for run in runs:
            if run.log is not None:
                run.log.close()


def _check_homes(runs: list[Run], active: list[int], step: int) -> None:
    """RunDirGone for the first active run whose directory was deleted or moved (a run that
    writes nothing, under torchrun's other ranks, holds none)."""
    for i in active:
        if runs[i].home is not None:
            runs[i].home.check(step, runs[i].saved_step)


def _agreed(stop: bool, dist: distributed.Dist, stepper) -> bool:
    """Whether any process was asked to stop: under torchrun every rank stops, or none."""
    if dist.enabled:
        return distributed.all_reduce_max(float(stop), stepper.device) > 0
    return stop


def _interrupted(runs: list[Run], active: list[int], step: int, received: list[int]) -> NoReturn:
    raise TrainingInterrupted(
        received[0] if received else signal.SIGTERM, step, runs[active[0]].run_dir
    )


def _stop(stepper, runs, active, step, clock, pending: Pending, received, results) -> list[int]:
    """Asked to stop between points: every active run checkpointed with the steps since its
    last point, unlogged (a resumed run draws the same points as one never stopped), then
    TrainingInterrupted. Returns the runs left (none) if every one turned out finished."""
    windows = _rows(stepper, runs, active, pending)
    _checkpoints(stepper, runs, active, step, clock, windows, durable=True)
    active = _settle(stepper, runs, active, step, False, clock, results)
    if active:
        _interrupted(runs, active, step, received)
    return active


def _rows(stepper, runs: list[Run], active: list[int], pending: Pending) -> list[list]:
    """Per active run, the steps since its last point, (step, loss, grad norm, lr) each:
    what a resumed checkpoint carried, then the pending steps, read off the device in one
    sync."""
    values = []
    if pending:
        losses = torch.stack([torch.stack([l, n], dim=1) for _, l, n, _ in pending])  # (n, R, 2)
        values = stepper.read(losses).tolist()
    return [
        runs[i].carried + [(s, *values[j][r], lr) for j, (s, _, _, lr) in enumerate(pending)]
        for r, i in enumerate(active)
    ]


def _point(stepper, runs, active, step, pending: Pending, is_eval, batch, clock) -> bool:
    """A point on every active run's curves: the steps since the last one, and the held-out
    metrics; at an evaluation, what follows from them (:func:`_evaluate`). A run whose loss,
    gradient norm, weights or held-out loss is no longer finite is marked diverged. Returns
    whether a curriculum moved on."""
    rows = _rows(stepper, runs, active, pending)
    for r, i in enumerate(active):
        run = runs[i]
        new = rows[r][len(run.carried) :]  # the carried ones were checked when read
        bad = next((row for row in new if not all(map(math.isfinite, row[1:3]))), None)
        if bad is not None:
            what = bad[1] if not math.isfinite(bad[1]) else f"gradient norm became {bad[2]}"
            run.diverged = (bad[0], what)
            continue
        run.carried = []
        if rows[r]:
            run.progress.train_loss, run.grad_norm = rows[r][-1][1], rows[r][-1][2]
        if is_eval:
            run.log.steps(rows[r], None)  # the evaluation logs the held-out metrics
    finite = stepper.finite()
    for r, i in enumerate(active):
        if runs[i].diverged is None and not finite[r]:
            runs[i].diverged = (step, "non-finite weights")
    metrics, first = stepper.metrics()
    for r, i in enumerate(active):
        run = runs[i]
        if run.diverged is None and not math.isfinite(metrics[r]["val_loss"]):
            run.diverged = (step, f"held-out loss {metrics[r]['val_loss']}")
        if run.diverged is None and not is_eval:
            # held-out metrics at every point, so that the held-out curves are as fine as
            # the training ones
            run.log.steps(rows[r], metrics[r])
            run.log.progress(run.progress.train_loss, run.progress.last_eval.get("val_accuracy"))
    if not is_eval:
        return False
    return _evaluate(stepper, runs, active, step, metrics, first, batch, clock)


def _evaluate(stepper, runs, active, step, metrics, first, batch: bool, clock) -> bool:
    """What an evaluation decides and shows, run by run: the solved step, the curriculum,
    the pictures, the kernel against autograd. A run is made an EchoRNN, and its gradient
    flow computed, only when its pictures or its comparison are due. ``batch``: a training
    batch exists (a step was taken in this session). Returns whether a curriculum moved on
    (its training targets change)."""
    moved = False
    for r, i in enumerate(active):
        run, c = runs[i], runs[i].config
        if run.diverged is not None:
            continue
        p = run.progress
        p.last_eval = {
            "step": step,
            "val_loss": metrics[r]["val_loss"],
            "val_accuracy": metrics[r]["val_accuracy"],
        }
        if metrics[r]["val_accuracy"] >= c.target_accuracy and p.solved_step is None:
            p.solved_step = step
        k = run.curriculum.k
        run.curriculum.observe(step, metrics[r]["accuracy_at_k"])
        moved |= run.curriculum.k != k
        vx, vy = run.val
        last = p.solved_step is not None or step >= c.steps
        # the log reads the model when its pictures are due (a rank that writes nothing
        # too); the flow is computed only where they are drawn
        pictures = run.log.pictures_due(step, last)
        model = stepper.model_of(r) if pictures else None  # a comparison makes its own
        run.log.evaluation(
            step,
            metrics[r],
            model,
            (vx[0], vy[0], first[r] if pictures else None),
            run.curriculum.k,
            p.train_loss,
            run.grad_norm,
            clock(),
            flow=gradient_flow(model, vx, vy) if pictures and run.main else None,
            last=last,
        )
        if batch and run.main and compare_due(c, step, last):
            run.log.kernel_vs_autograd(step, stepper.kernel_vs_autograd(r, model, c.truncate))
        run.log.flush()
    return moved


def _checkpoints(
    stepper, runs, active, step, clock, windows=None, durable=False, checked=False
) -> None:
    """Every active run's checkpoint, of finite weights only, so that a run's last
    checkpoint is always a good one (``checked``: the point of this step found them
    finite already). Fsynced when ``durable`` (a run's last one)."""
    finite = [True] * len(active) if checked else stepper.finite()
    full = stepper.snapshot()  # once for all runs: each takes its rows
    for r, i in enumerate(active):
        run = runs[i]
        if run.diverged is None and not finite[r]:
            run.diverged = (step, "non-finite weights")
        if run.diverged is None:
            _checkpoint(run, stepper, full, r, step, clock, windows[r] if windows else [], durable)


def _checkpoint(run: Run, stepper, full, r, step, clock, window, durable) -> None:
    """The events up to now on their way to disk, then a checkpoint that records how far
    they reach (a resume from it cuts off what was logged after it)."""
    model, optimizer, rng = stepper.saved(full, r, run)
    run.progress.wall_time_s = run.wall_before + clock()
    record = RunRecord(
        config=run.config,
        step=step,
        model=model,
        optimizer=optimizer,
        rng=rng,
        curriculum=run.curriculum.state_dict(),
        progress=run.progress,
        window=window,
        events=run.log.sizes(),
    )
    if run.main:
        run.home.check(step, run.saved_step)
        save_checkpoint(checkpoint_path(run.run_dir), record.to_state(), durable)
    run.saved_step = step


def _settle(stepper, runs, active, step, moved, clock, results) -> list[int]:
    """Finish the runs that are done (solved, out of steps, diverged) and take them out of
    the population: from now on they cost nothing. The stepper reads the runs again when
    some left or a curriculum moved on. Returns the active runs that remain."""
    done = [r for r, i in enumerate(active) if runs[i].over(step)]
    if done:
        full = stepper.snapshot()  # once: each leaving run's checkpoint and the rest
        for r in done:
            results[active[r]] = _finish(runs[active[r]], stepper, full, r, step, clock)
        keep = [r for r in range(len(active)) if r not in done]
        if keep:
            stepper.keep(full, keep)
        active = [active[r] for r in keep]
    if (moved or done) and active:
        stepper.stack(runs, active)
    return active


def _finish(run: Run, stepper, full, r: int, step: int, clock) -> TrainResult:
    """The run's last checkpoint (none for a run that diverged: its last good one stays),
    summary.json and hparams. They come after the last checkpoint, so a resume (with nothing
    left to do, or more steps) cuts them off and writes them again: once, with the run's
    last settings."""
    weights = stepper.weights(r)
    if run.diverged is None:
        _checkpoint(run, stepper, full, r, step, clock, [], durable=True)
    p = run.progress
    result = TrainResult(
        run_dir=str(run.run_dir),
        step=step,
        train_loss=p.train_loss,
        val_loss=p.last_eval.get("val_loss", math.nan),
        val_accuracy=p.last_eval.get("val_accuracy", math.nan),
        solved_step=p.solved_step,
        wall_time_s=run.wall_before + clock(),
        device=str(stepper.device),
        backend=stepper.backend,
        stopped="diverged" if run.diverged else "solved" if p.solved_step is not None else "steps",
        weights_sha256=weights_digest(weights),
    )
    if run.main:
        run.home.check(step, run.saved_step)
        write_outcome(result, run.log)
    return result
