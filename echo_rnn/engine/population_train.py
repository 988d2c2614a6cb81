"""Training a population: runs that share a shape trained together, each of them its run.

``train_population(configs)`` trains R configs that differ only in ``echo_step``, ``seed`` and
``run_name`` in the one loop (:func:`~echo_rnn.engine.loop.train_runs`) that trains a run alone,
through one stepper: the compiled kernel (:class:`~echo_rnn.engine.steppers.CompiledStepper`,
the CPU's default) or the torch population kernel
(:class:`~echo_rnn.engine.steppers.PopulationStepper`: ``--backend bptt``, or a GPU). One call
steps every member; everything else is each member's own, as for that config alone: its weights
and data stream, its gradient clipping norm, its evaluations, solved step, checkpoints (``train
--resume`` continues them), run directory, TensorBoard events and ``summary.json``. A member
that is solved, runs out of steps or diverges is finished and leaves the population, so it
costs nothing afterwards; the others go on.

Exact: with the compiled kernel a member's curve, checkpoint and final weights are its
``echo-rnn train`` run's bit for bit, whatever else trains beside it. With the torch kernel,
on CPU and one thread, they are where the population kernel's products round like the
single-run kernel's (the frontier shape: see :mod:`echo_rnn.kernels.population`). Only configs
that one step can serve may join (:func:`population_key`): backend auto, compiled or bptt, a
fresh random batch per step, no CUDA graph, and not a curriculum together with a learning-rate
schedule (each member's rate would halve from the step it reached its last k). A curriculum is
each member's own (its k, its targets, its accuracy at k); an lr schedule alone halves every
member's rate at the same steps; SGD or Adam, fused or not.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import torch

from echo_rnn.config import TrainConfig
from echo_rnn.devices import check_fits, cpu_threads, resolve_device, rnn_bytes
from echo_rnn.engine.backends import check_backend, training_backend
from echo_rnn.engine.loop import Clock, Run, train_runs
from echo_rnn.engine.outcome import TrainResult
from echo_rnn.engine.steppers import CompiledStepper, PopulationStepper
from echo_rnn.errors import ConfigError
from echo_rnn.run.locks import DirLock
from echo_rnn.run.rundir import HeldDir, StorageError, create_run_dir, storage_reason
from echo_rnn.run.runlog import RunLog
from echo_rnn.run.signals import stop_requests

# What members of one population may differ in; everything else of their configs is shared.
MEMBER_FIELDS = ("echo_step", "seed", "run_name")


def population_key(config: TrainConfig) -> tuple | None:
    """What a config shares with the members of its population (configs with equal keys
    train together), or None if it cannot join one and trains alone."""
    c = config
    # With both a curriculum and an lr schedule, each member's learning rate halves from the
    # step it reached its last k: one optimizer step could not serve them all.
    if (
        c.backend == "autograd"
        or c.schedule != "batch"
        or c.cuda_graph
        or (c.curriculum and c.lr_halve_every)
    ):
        return None
    return tuple(sorted((k, v) for k, v in c.to_dict().items() if k not in MEMBER_FIELDS))


def check_population_memory(configs: list[TrainConfig], device: torch.device) -> None:
    """Refuse, before anything is written, a population that cannot fit: R members cost R
    times one run (:func:`echo_rnn.devices.rnn_bytes`)."""
    c = configs[0]
    one = (
        rnn_bytes(c.batch_size, c.seq_len, c.hidden_size)
        + rnn_bytes(c.val_size, c.seq_len, c.hidden_size) // 2
    )
    reason = check_fits(
        one * len(configs),
        device,
        f"a population of {len(configs)} runs at B={c.batch_size}, "
        f"T={c.seq_len}, H={c.hidden_size}",
    )
    if reason:
        raise ConfigError("population", f"too large: {reason}; a smaller --population fits")


def train_population(
    configs: list[TrainConfig],
    *,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrainResult]:
    """Train ``configs`` (equal :func:`population_key`) as one population; their results, in
    order. Every config is validated and every run directory created before training.

    ``stop`` is polled after every step; once it returns True, or SIGINT/SIGTERM arrives,
    every member still training is checkpointed (``train --resume``, or the sweep re-run,
    continues it) and :class:`~echo_rnn.engine.train.TrainingInterrupted` is raised.

    ``progress``, if given, is called after every step with (step, members still training),
    and once at step 0: the sweep shows it (it should return at once)."""
    keys = {population_key(c) for c in configs}
    if None in keys or len(keys) != 1:
        raise ConfigError(
            "population",
            "members must share every setting but echo_step, seed "
            "and run_name, with backend auto, compiled or bptt, "
            "schedule batch, no CUDA graph, not both a curriculum "
            "and an lr schedule",
        )
    for c in configs:
        c.validate()
    device = resolve_device(configs[0].device)
    check_backend(configs[0], device)
    check_population_memory(configs, device)
    with cpu_threads(configs[0].threads), stop_requests() as received, ExitStack() as held:
        try:
            return _train_population(
                configs,
                device,
                lambda: bool(received) or bool(stop and stop()),
                received,
                held,
                progress,
            )
        except OSError as exc:  # a full disk: one line, as train says it; checkpoints stay
            raise StorageError(
                f"could not write the population's runs in {configs[0].logdir}: "
                f"{storage_reason(exc)}; each run keeps its last checkpoint"
            ) from None


def _train_population(
    configs: list[TrainConfig],
    device: torch.device,
    stopping: Callable[[], bool],
    received: list[int],
    held: ExitStack,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrainResult]:
    compiled = training_backend(configs[0], device) == "compiled"
    runs = []
    for c in configs:
        run_dir = create_run_dir(c)  # with its config.json, as train's
        # one writer: a `train --resume` of a member while the population trains is refused
        held.enter_context(DirLock(run_dir))
        home = held.enter_context(HeldDir(run_dir))
        log = RunLog(run_dir, c, main=True, verbose=False, resumed_at=None)
        runs.append(Run.new(c, run_dir, device, compiled, home, log=log))
    stepper = CompiledStepper(configs) if compiled else PopulationStepper(configs, device)
    return train_runs(
        runs, stepper, clock=Clock(), stopping=stopping, received=received, progress=progress
    )
