"""Training a run: ``train(config) -> TrainResult``, importable; the CLI only builds the config.

A run alone is a population of one: here its directory is claimed (created, or opened for a
resume; locked), its :class:`~echo_rnn.engine.loop.Run` and stepper built and, on a resume,
read back from its checkpoint; then :func:`~echo_rnn.engine.loop.train_runs`, the loop every
run trains in, takes it to the end. What a run writes is :mod:`echo_rnn.run`'s.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import torch

from echo_rnn.config import ConfigError, TrainConfig
from echo_rnn.devices import cpu_threads, resolve_device
from echo_rnn.engine import distributed
from echo_rnn.engine.backends import check_backend, training_backend
from echo_rnn.engine.loop import Clock, Run, train_runs
from echo_rnn.engine.outcome import (
    NonFiniteLoss,
    TrainingInterrupted,
    TrainResult,
    diverged_message,
)
from echo_rnn.engine.steppers import CompiledStepper, ModelStepper, Overflow
from echo_rnn.run import rundir
from echo_rnn.run.checkpoint import checkpoint_path
from echo_rnn.run.rundir import Resumed
from echo_rnn.run.runlog import RunLog
from echo_rnn.run.signals import stop_requests
from echo_rnn.run.state import RunRecord

__all__ = ["NonFiniteLoss", "TrainResult", "TrainingInterrupted", "train"]


def train(
    config: TrainConfig,
    *,
    resume: str | Path | Resumed | None = None,
    verbose: bool = True,
    data_parallel: bool = True,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train an :class:`EchoRNN` on the echo task as ``config`` says.

    Args:
        config: the run's settings; validated first, before anything is written.
        resume: a run directory (or its ``checkpoints/last.pt``, or what
            :func:`~echo_rnn.run.rundir.open_run` read from one) to continue. ``config`` must
            equal the config the run was started with, except what ``config.RESUME_FREE``
            lists: ``steps``, and where the run is kept (``logdir``, ``run_name``: the run
            continues in the directory ``resume`` names).
        verbose: print one line per evaluation and a progress bar (when stderr is a terminal).
        data_parallel: under torchrun, train one model on all ranks with DDP; False trains
            in this process alone (as the sweep does with each of its points).
        stop: polled after every step; once it returns True the run stops as on SIGTERM
            (the sweep's workers learn of a signal to their parent this way).
        progress: called at the start and after every step with (step, runs still
            training: 1, then 0 once the run ended): the sweep shows it (it should return at
            once).

    Runs with ``torch.set_num_threads(config.threads)`` and restores the count afterwards.
    From the moment the run directory exists, SIGINT, SIGTERM and SIGHUP are held until the
    first checkpoint is written: an interrupted run always leaves a directory it can resume
    from, or none at all. A run killed outright before then (``kill -9``) leaves its
    ``config.json``, from which ``resume`` starts it again at step 0. The run directory is
    locked (``.lock``) while the run trains: one writer at a time.

    Raises:
        ConfigError, CheckpointError: before anything is written.
        NonFiniteLoss: the loss or the weights became NaN or infinite; the last good
            checkpoint stays.
        StorageError: the run could not be written (disk full); what was saved stays.
        TrainingInterrupted: SIGINT/SIGTERM/SIGHUP; a checkpoint was written after the
            current step.
        Busy: another process holds the run directory (trains or resumes it); nothing was
            written.
    """
    config.validate()
    with cpu_threads(config.threads), stop_requests() as received, ExitStack() as held:
        return _train(config, resume, verbose, data_parallel, received, stop, held, progress)


def _train(
    config: TrainConfig,
    resume,
    verbose: bool,
    data_parallel: bool,
    received: list[int],
    external_stop: Callable[[], bool] | None,
    held: ExitStack,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    d, device = _placement(config, data_parallel)
    run_dir, resumed = rundir.claim(config, resume, d, held)
    home = held.enter_context(rundir.HeldDir(run_dir)) if d.is_main else None
    if received:  # a signal before anything was written: leave nothing behind
        if (resumed is None or resumed.state is None) and d.is_main:
            rundir.discard(run_dir, fresh=resumed is None)
        raise TrainingInterrupted(received[0], -1, run_dir)
    saved = None
    if resumed is not None and resumed.state is not None:
        saved = RunRecord.from_state(resumed.state)
    run = None
    try:
        run, stepper = _start(config, run_dir, resumed, saved, device, verbose, d, home)
        clock = Clock()  # the run's time, not its setup's
        [result] = train_runs(
            [run],
            stepper,
            clock=clock,
            stopping=lambda: bool(received) or bool(external_stop and external_stop()),
            received=received,
            step=saved.step if saved is not None else 0,
            fresh=saved is None,
            progress=progress,
            dist=d,
        )
    except TrainingInterrupted:
        raise  # its checkpoint is written
    except BaseException as exc:
        if d.is_main and not isinstance(exc, rundir.RunDirGone):  # gone: not ours to clean
            # a failure before the first checkpoint leaves no run (a restarted one keeps its
            # config), one after it a run that resumes
            if saved is None and not checkpoint_path(run_dir).exists():
                rundir.discard(run_dir, fresh=resumed is None)
            else:
                rundir.remove_empty_event_files(run_dir)
        saved_step = run.saved_step if run else (saved.step if saved else None)
        error = rundir.storage_error(exc, saved_step, run_dir)
        if error is not None:
            raise error from None
        raise
    if run.diverged is not None:
        if d.is_main and saved is None and run.saved_step is None:
            rundir.discard(run_dir, fresh=resumed is None)  # not one good checkpoint
        raise NonFiniteLoss(diverged_message(config, run_dir, *run.diverged))
    return result


def _placement(config: TrainConfig, data_parallel: bool) -> tuple[distributed.Dist, torch.device]:
    """This process's share of the run (torchrun's rank, or the whole) and its device."""
    device = resolve_device(config.device)
    d = distributed.current() if data_parallel else distributed.Dist()
    if d.enabled:
        if config.batch_size % d.world_size:
            raise ConfigError(
                "batch_size",
                f"must be divisible by the {d.world_size} processes, got {config.batch_size}",
            )
        if config.cuda_graph:
            raise ConfigError("cuda_graph", "not supported under torchrun")
        if device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
    check_backend(config, device, d.enabled)
    return d, device


def _start(
    config: TrainConfig,
    run_dir: Path,
    resumed: Resumed | None,
    saved: RunRecord | None,
    device: torch.device,
    verbose: bool,
    d: distributed.Dist,
    home: rundir.HeldDir | None,
) -> tuple[Run, CompiledStepper | ModelStepper]:
    """The run and its stepper: the compiled kernel as a population of one where it trains
    the run, else a torch model and optimizer; read back from ``saved`` on a resume."""
    compiled = training_backend(config, device, d.enabled) == "compiled"
    run = Run.new(config, run_dir, device, compiled, home, d.is_main)
    stepper = CompiledStepper([config]) if compiled else ModelStepper(run, device, d)
    if saved is not None:
        stepper.load(saved, resumed.checkpoint)
        run.resume(saved)
    if verbose and d.is_main and resumed is not None:
        print(
            f"resuming {run_dir.name} from step {saved.step}"
            if saved is not None
            else f"resuming {run_dir.name} from step 0: it stopped before its first "
            "checkpoint, so it starts again with its recorded config",
            file=sys.stderr,
        )
    if config.cuda_graph:
        try:
            stepper.capture_graph()  # its warm-up steps
        except Overflow:
            step = (saved.step if saved is not None else 0) + 1
            raise NonFiniteLoss(
                diverged_message(config, run_dir, step, "the update overflowed")
            ) from None
    run.log = RunLog(
        run_dir,
        config,
        main=d.is_main,
        verbose=verbose,
        resumed_at=saved.step if saved is not None else None,
        event_sizes=saved.events if saved is not None else None,
        wall_before=run.wall_before,
    )
    return run, stepper
