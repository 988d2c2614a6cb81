"""Training a population: runs that share a shape trained together, each of them its run.

``train_population(configs)`` trains R configs that differ only in ``echo_step``, ``seed`` and
``run_name`` through one :class:`~echo_rnn.kernels.population.PopulationRNN`: one kernel call, one
optimizer step and one held-out forward serve every member. Everything else is per member and
is what :func:`echo_rnn.engine.train.train` does for that config alone: its weights and data stream
(its own generator), its gradient clipping norm, its evaluations, solved step, checkpoints
(``train --resume`` continues them), run directory, TensorBoard events and ``summary.json``. A
member that is solved, runs out of steps or diverges is finished and leaves the population,
so it costs nothing afterwards; the others go on.

Exact: on CPU, with one thread, a member's curve and checkpoint equal ``train``'s for the same
config bit for bit where the population kernel's products round like the single-run kernel's
(the frontier shape: see :mod:`echo_rnn.kernels.population`), which is why only configs for
which the population computes what ``train`` computes may join (:func:`population_key`): the
fast kernel (``backend = "bptt"``), a fresh random batch per step, no CUDA graph, and not a
curriculum together with a learning-rate schedule (each member's rate would halve from the step
it reached its last k). A curriculum is each member's own (its k, its targets, its accuracy at
k); an lr schedule alone halves every member's rate at the same steps; SGD or Adam, fused or
not (:class:`~echo_rnn.kernels.population.PopulationAdam` gives the fused kernel each run's
rows alone).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from echo_rnn.config import TrainConfig
from echo_rnn.data import bits, echo_targets, make_echo_batch
from echo_rnn.devices import check_fits, cpu_threads, resolve_device, rnn_bytes
from echo_rnn.engine.backends import check_backend, training_backend
from echo_rnn.engine.curriculum import Curriculum
from echo_rnn.engine.members import Members, held_out
from echo_rnn.engine.train import (
    VAL_SEED_OFFSET,
    TrainingInterrupted,
    TrainResult,
    compare_due,
    gradient_flow,
    kernel_vs_autograd,
    run_state,
    write_outcome,
)
from echo_rnn.errors import ConfigError
from echo_rnn.kernels.population import (
    PopulationAdam,
    PopulationRNN,
    clip_grad_norms_,
    population_accuracy,
    population_grads,
    population_loss,
)
from echo_rnn.model import EchoRNN, make_optimizer, model_from_config, weights_digest
from echo_rnn.run.checkpoint import checkpoint_path, save_checkpoint
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


@dataclass
class _Member:
    """One run of the population: its config, directory, log, data stream and progress."""

    config: TrainConfig
    run_dir: Path
    log: RunLog
    gen: torch.Generator | None  # the torch kernel's training stream (compiled: a counter)
    val: tuple[torch.Tensor, torch.Tensor]  # (val_size, T) each
    curriculum: Curriculum
    home: HeldDir | None = None  # the run directory, held: checked before each write
    solved_step: int | None = None
    last_eval: dict | None = None
    last_train_loss: float | None = None
    last_grad_norm: float | None = None
    diverged: str | None = None


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
    c0 = configs[0]
    start = time.perf_counter()
    members: list[_Member] = []
    compiled = training_backend(c0, device) == "compiled"
    for c in configs:
        run_dir = create_run_dir(c)  # with its config.json, as train's
        # one writer: a `train --resume` of a member while the population trains is refused
        held.enter_context(DirLock(run_dir))
        home = held.enter_context(HeldDir(run_dir))
        if compiled:  # every stream the kernel's own, counter-based: nothing to hold
            gen, val = None, held_out(c)
        else:
            gen = torch.Generator(device=device).manual_seed(c.seed)
            val_gen = torch.Generator(device=device).manual_seed(c.seed + VAL_SEED_OFFSET)
            val = make_echo_batch(
                c.val_size, c.seq_len, c.echo_step, generator=val_gen, device=device
            )
        members.append(
            _Member(
                c,
                run_dir,
                RunLog(run_dir, c, main=True, verbose=False, resumed_at=None),
                gen,
                val,
                Curriculum.from_config(c),
                home,
            )
        )
    kernel = _CompiledKernel(configs) if compiled else _TorchKernel(configs, device)
    results: dict[int, TrainResult] = {}
    active = list(range(len(members)))  # indices into members of the runs still training
    for m in members:
        m.log.config_text()
    step = 0
    stacked = _Stacked.of(members, active, c0, device)
    moved = _evaluate(kernel, stacked, members, active, step, batch=False, start=start)
    _checkpoints(kernel, members, active, step, start)
    before = active
    active = _retire(kernel, members, active, step, start, results)
    if (moved or active is not before) and active:  # a k moved on, or members left
        stacked = _Stacked.of(members, active, c0, device)
        kernel.follow(members, active)
    if progress is not None:
        progress(step, len(active))
    pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []
    while active and step < c0.steps:
        losses, norms = kernel.step(stacked)  # (R,) each: each run's echo_loss, grad norm
        step += 1
        pending.append((step, losses, norms, kernel.lr))
        if c0.lr_halve_every and step % c0.lr_halve_every == 0:
            # train's schedule; without a curriculum it counts from step 0 in every member
            kernel.halve_lr()
        is_eval = step % c0.eval_every == 0 or step == c0.steps
        if is_eval or step % c0.log_every == 0:
            held_out_now = None if is_eval else kernel.metrics(stacked)[0]
            _log_points(members, active, pending, held_out_now)
            pending.clear()
        moved = False
        if is_eval:
            moved = _evaluate(kernel, stacked, members, active, step, batch=True, start=start)
            _checkpoints(kernel, members, active, step, start)
        before = active
        active = _retire(kernel, members, active, step, start, results)
        if (moved or active is not before) and active:  # a k moved on, or members left
            stacked = _Stacked.of(members, active, c0, device)
            kernel.follow(members, active)
        if progress is not None:
            progress(step, len(active))
        if active and stopping():
            # as train does: the steps since the last point go into the checkpoints, unlogged
            _checkpoints(kernel, members, active, step, start, _windows(pending), durable=True)
            _close(members)
            raise TrainingInterrupted(
                received[0] if received else signal.SIGTERM, step, members[active[0]].run_dir
            )
    _close(members)
    return [results[i] for i in range(len(members))]


class _TorchKernel:
    """A population trained by the torch kernel (``bptt``, any device): one
    :class:`~echo_rnn.kernels.population.PopulationRNN` and one optimizer for every member."""

    def __init__(self, configs: list[TrainConfig], device: torch.device) -> None:
        self.pop = PopulationRNN.from_models([model_from_config(c).to(device) for c in configs])
        self.optimizer = make_optimizer(configs[0], self.pop.parameters(), adam=PopulationAdam)
        self.config = configs[0]
        self.device = device
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(self, stacked: _Stacked) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        x, y = _batch(stacked)
        losses = population_grads(self.pop, x, y, c.truncate)  # (R,): each run's echo_loss
        norms = clip_grad_norms_(self.pop, c.grad_clip if c.grad_clip is not None else math.inf)
        self.optimizer.step()
        self.last = (x, y)
        return losses.detach(), norms

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def halve_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] /= 2

    def follow(self, members: list[_Member], active: list[int]) -> None:
        """The torch kernel reads each member's targets from the stacked tensors."""

    @torch.no_grad()
    def metrics(self, stacked: _Stacked):
        """Every active member's held-out loss, accuracy and accuracy at its curriculum's k,
        as train's evaluation computes them (one forward and a few ops for all, each run's
        ``echo_loss`` and ``bit_accuracy`` to the bit), and each one's first held-out
        prediction (R, T)."""
        y_hat = self.pop(stacked.val_x)
        accuracy = population_accuracy(y_hat, stacked.val_y, stacked.scored)
        at_k = (
            accuracy
            if stacked.now is stacked.scored  # every member at its last k
            else population_accuracy(y_hat, stacked.val_y_now, stacked.now)
        )
        values = torch.stack(
            [population_loss(y_hat, stacked.val_y), accuracy, at_k], dim=1
        ).tolist()  # one sync for all
        return _metric_rows(values), y_hat[:, 0]

    def finite(self) -> list[bool]:
        return (
            torch.stack(
                [torch.isfinite(p.detach().flatten(1)).all(1) for p in self.pop.parameters()]
            )
            .all(0)
            .tolist()
        )  # one sync

    def model(self, r: int) -> EchoRNN:
        """Run r as an EchoRNN, with its gradients: what the single run logs its pictures
        from."""
        model = self.pop.member(r)
        for name, p in model.named_parameters():
            grad = getattr(self.pop, name).grad
            p.grad = None if grad is None else grad[r].clone()  # none before the first step
        return model

    def kernel_vs_autograd(self, r: int, model: EchoRNN | None, truncate: int | None) -> float:
        """The fast kernel against autograd on member r's last batch (``model``: member r
        as :meth:`model` makes it, if the pictures made it already)."""
        model = model if model is not None else self.model(r)
        return kernel_vs_autograd(model, self.last[0][r], self.last[1][r], truncate)

    def snapshot(self) -> dict:
        return self.optimizer.state_dict()  # once for all members: each takes its rows

    def weights(self, r: int) -> dict[str, torch.Tensor]:
        return self.pop.member(r).state_dict()

    def saved(self, full: dict, r: int, member: _Member) -> tuple[dict, dict, torch.Tensor]:
        return self.weights(r), _optimizer_state(full, r), member.gen.get_state()

    def keep(self, full: dict, keep: list[int]) -> None:
        self.pop, self.optimizer = _without(self.pop, full, keep, self.config)


class _CompiledKernel:
    """A population trained by the compiled kernel (:class:`~echo_rnn.engine.members.Members`):
    each member's step, data and evaluation in C, its bits its own."""

    def __init__(self, configs: list[TrainConfig]) -> None:
        self.members = Members(configs)
        self.config = configs[0]
        self.device = torch.device("cpu")

    def step(self, stacked: _Stacked) -> tuple[torch.Tensor, torch.Tensor]:
        losses, norms, _ = self.members.step()  # a non-finite member is caught at its point
        return losses, norms

    @property
    def lr(self) -> float:
        return float(self.members.lr[0])

    def halve_lr(self) -> None:
        self.members.lr /= 2

    def follow(self, members: list[_Member], active: list[int]) -> None:
        """Each member trains on its curriculum's k now."""
        self.members.set_k([members[i].curriculum.k for i in active])

    def metrics(self, stacked: _Stacked):
        """Every active member's held-out loss, accuracy and accuracy at its curriculum's k,
        computed by the kernel (the same bits on any machine), and each one's first
        held-out prediction (R, T)."""
        ms = self.members
        now = () if stacked.now is stacked.scored else (stacked.val_y_now, stacked.k_now)
        values = torch.stack(
            ms.held_out_metrics(stacked.val_x, stacked.val_y, stacked.k_end, *now), 1
        )
        return _metric_rows(values.tolist()), _FirstPredictions(ms, stacked.val_x)

    def finite(self) -> list[bool]:
        return torch.isfinite(self.members.params).all(1).tolist()

    def model(self, r: int) -> EchoRNN:
        return self.members.model(r, with_grads=True)

    def kernel_vs_autograd(self, r: int, model: EchoRNN | None, truncate: int | None) -> float:
        """The compiled kernel (its float64 build) against autograd on member r's last
        batch, as train compares a run of its own (its own float64 copy of the member: the
        picture's ``model`` is not needed)."""
        model, x, y, grads = self.members.float64_pass(r)
        return kernel_vs_autograd(model, x, y, truncate, ours=grads)

    def snapshot(self) -> None:
        return None

    def weights(self, r: int) -> dict[str, torch.Tensor]:
        return self.members.model_state(r)

    def saved(self, full: None, r: int, member: _Member) -> tuple[dict, dict, torch.Tensor]:
        ms = self.members
        return self.weights(r), ms.optimizer_state(r), ms.rng_state(r)

    def keep(self, full: None, keep: list[int]) -> None:
        self.members.select(keep)


class _FirstPredictions:
    """Member r's prediction of its first held-out sequence, (T,), computed when a picture
    asks for it (an evaluation draws one at most PICTURES_PER_RUN times a run)."""

    def __init__(self, members: Members, val_x: torch.Tensor) -> None:
        self.members, self.val_x = members, val_x

    def __getitem__(self, r: int) -> torch.Tensor:
        return self.members.predictions(r, self.val_x[r, :1])[0]


def _metric_rows(values: list[list[float]]) -> list[dict[str, float]]:
    return [{"val_loss": l, "val_accuracy": a, "accuracy_at_k": ak} for l, a, ak in values]


def _close(members: list[_Member]) -> None:
    for m in members:
        m.log.close()


def _windows(pending) -> list[list[list[float]]]:
    """Per member, the steps since the last point as train's checkpoint keeps them:
    [step, loss, grad norm, lr] each."""
    if not pending:
        return []
    values = torch.stack([torch.stack([l, n], dim=1) for _, l, n, _ in pending]).tolist()
    return [
        [[s, *values[j][r], lr] for j, (s, _, _, lr) in enumerate(pending)]
        for r in range(len(values[0]))
    ]


@dataclass
class _Stacked:
    """What the active members' steps and evaluations read, stacked along R, made again only
    when members leave or a curriculum moves on, not at every step.

    Attributes:
        val_x, val_y: the held-out sets, ``(R, val_size, T)`` each, targets at the run's k.
        val_y_now: the held-out targets at each member's current curriculum k (``val_y``,
            and ``now`` is ``scored``, while every member is at its last k).
        generators: each member's training stream, in order (the torch kernel's).
        source: ``(R, B, T)``, index of x_{t-k} along T for the training targets at the
            current k (0 before k).
        now: ``(R, 1, T)``, t >= the current k: the positions whose target is an echo.
        scored: ``(R, 1, T)``, t >= the run's k: the positions its accuracy scores.
        k_now, k_end: ``(R,)`` int64, each member's current k and its run's k.
    """

    val_x: torch.Tensor
    val_y: torch.Tensor
    val_y_now: torch.Tensor
    generators: list[torch.Generator | None]
    source: torch.Tensor
    now: torch.Tensor
    scored: torch.Tensor
    k_now: torch.Tensor
    k_end: torch.Tensor

    @classmethod
    def of(
        cls, members: list[_Member], active: list[int], c0: TrainConfig, device: torch.device
    ) -> _Stacked:
        R, B, T = len(active), c0.batch_size, c0.seq_len
        k_now = [members[i].curriculum.k for i in active]
        k_end = [members[i].config.echo_step for i in active]
        t = torch.arange(T, device=device).view(1, 1, T)
        k = torch.tensor(k_now, device=device).view(R, 1, 1)
        val_y = torch.stack([members[i].val[1] for i in active])
        scored = t >= torch.tensor(k_end, device=device).view(R, 1, 1)
        at_end = k_now == k_end  # no curriculum, or every one at its last k: one set of targets
        return cls(
            val_x=torch.stack([members[i].val[0] for i in active]),
            val_y=val_y,
            val_y_now=val_y
            if at_end
            else torch.stack([echo_targets(members[i].val[0], kk) for i, kk in zip(active, k_now)]),
            generators=[members[i].gen for i in active],
            source=(t - k).clamp(min=0).expand(R, B, T).contiguous(),
            now=scored if at_end else t >= k,
            scored=scored,
            k_now=torch.tensor(k_now, dtype=torch.int64),
            k_end=torch.tensor(k_end, dtype=torch.int64),
        )


def _batch(stacked: _Stacked) -> tuple[torch.Tensor, torch.Tensor]:
    """Every active member's next training batch, (R, B, T) each: the draws are
    :func:`~echo_rnn.data.make_echo_batch`'s, from each member's own generator (one call a
    member), and the rest (the bits, the targets k steps behind) one op for all."""
    R, B, T = stacked.source.shape
    device = stacked.source.device
    u = torch.stack([torch.rand(B, T, generator=gen, device=device) for gen in stacked.generators])
    x = bits(u)  # make_echo_batch's p = 0.5, float32
    y = x.gather(2, stacked.source).mul_(stacked.now)  # y_t = x_{t-k}, zeros before k
    return x, y


def _checkpoints(kernel, members, active, step, start, windows=None, durable=False) -> None:
    full = kernel.snapshot()  # once for all members: each takes its rows
    for r, i in enumerate(active):
        if not members[i].diverged:
            _checkpoint(
                members[i], kernel, full, r, step, start, windows[r] if windows else [], durable
            )


def _retire(kernel, members, active, step, start, results) -> list[int]:
    """Finish the members that are done (solved, out of steps, diverged) and take them out
    of the population: from now on they cost nothing. Returns the active members that
    remain."""
    c0 = members[active[0]].config if active else None
    done = [
        r
        for r, i in enumerate(active)
        if members[i].diverged or members[i].solved_step is not None or step >= c0.steps
    ]
    if not done:
        return active
    full = kernel.snapshot()  # once: each leaving member's checkpoint and the rest
    for r in done:
        results[active[r]] = _finish(members[active[r]], kernel, full, r, step, start)
    keep = [r for r in range(len(active)) if r not in done]
    if keep:
        kernel.keep(full, keep)
    return [active[r] for r in keep]


def _log_points(members, active, pending, held_out) -> None:
    """Each active member's point on the curves: its (step, loss, grad norm, lr) rows since
    the last point; a non-finite one ends that member as diverged."""
    values = torch.stack([torch.stack([l, n], dim=1) for _, l, n, _ in pending]).tolist()
    for r, i in enumerate(active):  # values[j][r]: step j's (loss, grad norm) of run r
        m = members[i]
        rows = [(s, *values[j][r], lr) for j, (s, _, _, lr) in enumerate(pending)]
        bad = next((row for row in rows if not all(map(math.isfinite, row[1:3]))), None)
        if bad is not None:
            m.diverged = f"loss became {bad[1]} at step {bad[0]}"
            continue
        m.last_train_loss, m.last_grad_norm = rows[-1][1], rows[-1][2]
        m.log.steps(rows, None if held_out is None else held_out[r])


def _evaluate(kernel, stacked, members, active, step, batch: bool, start) -> bool:
    """What an evaluation of train does, member by member: metrics, the solved step, the
    curriculum, the pictures, the kernel against autograd. A member is made an EchoRNN, and
    its gradient flow computed, only when its pictures or its comparison are due. Returns
    whether a member's curriculum moved on (its training targets change). ``batch``: a
    training batch exists (after the first step)."""
    metrics, first = kernel.metrics(stacked)
    finite = kernel.finite()
    moved = False
    for r, i in enumerate(active):
        m, c = members[i], members[i].config
        if m.diverged:
            continue
        if not finite[r]:
            m.diverged = f"non-finite weights at step {step}"
            continue
        # as train records an evaluation: last_eval, solved, then the curriculum
        m.last_eval = {
            "step": step,
            "val_loss": metrics[r]["val_loss"],
            "val_accuracy": metrics[r]["val_accuracy"],
        }
        if metrics[r]["val_accuracy"] >= c.target_accuracy and m.solved_step is None:
            m.solved_step = step
        k = m.curriculum.k
        m.curriculum.observe(step, metrics[r]["accuracy_at_k"])
        moved |= m.curriculum.k != k
        vx, vy = m.val
        last = m.solved_step is not None or step >= c.steps
        pictures = m.log.pictures_due(step, last)
        compare = batch and compare_due(c, step, last)
        model = kernel.model(r) if pictures else None  # a comparison makes its own
        m.log.evaluation(
            step,
            metrics[r],
            model,
            (vx[0], vy[0], first[r] if pictures else None),
            m.curriculum.k,
            m.last_train_loss,
            m.last_grad_norm,
            time.perf_counter() - start,
            flow=gradient_flow(model, vx, vy) if pictures else None,
            last=last,
        )
        if compare:
            m.log.kernel_vs_autograd(step, kernel.kernel_vs_autograd(r, model, c.truncate))
    for i in active:
        members[i].log.flush()
    return moved


def _optimizer_state(full: dict, r: int) -> dict:
    """Run r's share of the population's optimizer (``full``, its ``state_dict()``), as
    ``state_dict()`` of an optimizer over one EchoRNN's parameters (U, V, w, b in that
    order) would hold it."""
    state = {
        idx: {
            k: (
                v[r].clone()
                if torch.is_tensor(v) and v.dim() > 0
                else (v.clone() if torch.is_tensor(v) else v)
            )
            for k, v in s.items()
        }
        for idx, s in full["state"].items()
    }
    return {"state": state, "param_groups": full["param_groups"]}


def _checkpoint(
    m: _Member,
    kernel,
    full,
    r: int,
    step: int,
    start: float,
    window: list | None = None,
    durable: bool = False,
) -> None:
    model, optimizer, rng = kernel.saved(full, r, m)
    state = run_state(
        m.config,
        step=step,
        model=model,
        optimizer=optimizer,
        rng=rng,
        curriculum=m.curriculum.state_dict(),
        window=window or [],
        solved_step=m.solved_step,
        wall_time_s=time.perf_counter() - start,
        last_eval=m.last_eval or {},
        train_loss=m.last_train_loss,
    )
    m.home.check(step, None)
    save_checkpoint(checkpoint_path(m.run_dir), {**state, "events": m.log.sizes()}, durable)


def _finish(m: _Member, kernel, full, r: int, step: int, start: float) -> TrainResult:
    """The member's last checkpoint, summary.json and hparams, as train ends a run
    (``full``: the kernel's :meth:`snapshot`)."""
    weights = kernel.weights(r)
    if not m.diverged:
        _checkpoint(m, kernel, full, r, step, start, durable=True)
    ev = m.last_eval or {}
    stopped = "diverged" if m.diverged else "solved" if m.solved_step is not None else "steps"
    result = TrainResult(
        run_dir=str(m.run_dir),
        step=step,
        train_loss=m.last_train_loss,
        val_loss=ev.get("val_loss", math.nan),
        val_accuracy=ev.get("val_accuracy", math.nan),
        solved_step=m.solved_step,
        wall_time_s=time.perf_counter() - start,
        device=str(kernel.device),
        backend=training_backend(m.config, kernel.device),
        stopped=stopped,
        weights_sha256=weights_digest(weights),
    )
    m.home.check(step, None)
    write_outcome(result, m.log)
    return result


def _without(pop: PopulationRNN, old: dict, keep: list[int], config: TrainConfig):
    """The population of the members ``keep`` (their rows), with a new optimizer holding
    their rows of ``old`` (the population optimizer's ``state_dict()``)."""
    idx = torch.tensor(keep, device=pop.U.device)
    smaller = PopulationRNN(len(keep), pop.U.shape[-1], pop.V.shape[-1], pop.b is not None)
    smaller.to(dtype=pop.U.dtype, device=pop.U.device)
    with torch.no_grad():
        for p, q in zip(pop.parameters(), smaller.parameters()):
            q.copy_(p.index_select(0, idx))
            q.grad = p.grad.index_select(0, idx) if p.grad is not None else None
    new_opt = make_optimizer(config, smaller.parameters(), adam=PopulationAdam)
    state = {
        pid: {
            k: (v.index_select(0, idx) if torch.is_tensor(v) and v.dim() > 0 else v)
            for k, v in s.items()
        }
        for pid, s in old["state"].items()
    }
    new_opt.load_state_dict({"state": state, "param_groups": old["param_groups"]})
    return smaller, new_opt
