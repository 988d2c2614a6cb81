"""Training: ``train(config) -> TrainResult``, importable; the CLI only builds the config.

The run's directory (created, opened for a resume, locked, cleaned up after an early stop)
is :mod:`echo_rnn.run.rundir`'s; what is logged, :mod:`echo_rnn.run.runlog`'s. Here: setup, then one
loop (:func:`_loop`), over a :class:`_Trainer` that holds the run's state and takes its steps.

Host syncs: per-step loss and gradient norm stay on the device and are read every
``log_every`` steps, with the held-out metrics measured there; nothing else waits for the
device.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from echo_rnn.compare import autograd_grads, manual_grads
from echo_rnn.config import ConfigError, TrainConfig
from echo_rnn.data import echo_targets, make_echo_batch
from echo_rnn.devices import cpu_threads, resolve_device
from echo_rnn.engine import distributed
from echo_rnn.engine.backends import check_backend, training_backend
from echo_rnn.engine.curriculum import Curriculum
from echo_rnn.engine.graphs import capture
from echo_rnn.engine.members import Members, held_out
from echo_rnn.flow import step_norms
from echo_rnn.model import (
    bit_accuracy,
    echo_loss,
    make_optimizer,
    model_from_config,
    weights_digest,
)
from echo_rnn.run import rundir
from echo_rnn.run.checkpoint import CheckpointError, checkpoint_path, save_checkpoint
from echo_rnn.run.rundir import Resumed
from echo_rnn.run.runlog import RunLog
from echo_rnn.run.signals import stop_requests

# The held-out set comes from its own generator, seeded apart from the training stream, so
# that it is the same set for a seed whatever the training does.
VAL_SEED_OFFSET = 1_000_003


@dataclass
class TrainResult:
    run_dir: str
    step: int
    train_loss: float | None
    val_loss: float
    val_accuracy: float
    solved_step: int | None
    wall_time_s: float
    device: str
    backend: str
    stopped: str  # "solved", "steps" or "diverged"
    # the final weights' fingerprint (echo_rnn.model.weights_digest): the same run gives
    # the same one on any machine with the compiled kernel
    weights_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self, config: TrainConfig) -> str:
        """The lines after the run: its verdict, where it is saved, how to view it."""

        def at(step: int) -> str:  # the notebook's schedule counts epochs of seq_len updates
            if config.schedule == "notebook":
                return f"step {step} (epoch {step // config.seq_len})"
            return f"step {step}"

        if self.solved_step is not None:
            verdict = f"solved at {at(self.solved_step)}"
        else:
            verdict = f"not solved after {self.step} steps" + (
                f" ({self.step // config.seq_len} epochs)" if config.schedule == "notebook" else ""
            )
        # the run's own parent, not config.logdir: a resumed run may have been moved since
        view = shlex.quote(str(Path(self.run_dir).parent))
        return (
            f"{verdict}: val_acc {self.val_accuracy:.4f}, val_loss {self.val_loss:.5f}, "
            f"{self.wall_time_s:.1f}s on {self.device} with the {self.backend} backend\n"
            f"weights sha256 {self.weights_sha256}\n"
            f"run saved in {self.run_dir}\n"
            f"view it: tensorboard --logdir {view}"
        )


def run_state(
    config: TrainConfig,
    *,
    step: int,
    model: dict,
    optimizer: dict,
    rng: torch.Tensor,
    curriculum: dict,
    window: list,
    solved_step: int | None,
    wall_time_s: float,
    last_eval: dict,
    train_loss: float | None,
) -> dict[str, Any]:
    """What a checkpoint holds of a run, train's or a population member's alike (the
    checkpoint adds the event files' sizes)."""
    return {
        "config": config.to_dict(),
        "step": step,
        "model": model,
        "optimizer": optimizer,
        "rng": {"train": rng},
        "curriculum": curriculum,
        "window": window,
        "progress": {
            "solved_step": solved_step,
            "wall_time_s": wall_time_s,
            "last_eval": last_eval,
            "train_loss": train_loss,
        },
    }


def write_outcome(result: TrainResult, log: RunLog) -> None:
    """summary.json and the hparams of a run that ended (train's or a population member's)."""
    (Path(result.run_dir) / "summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    log.finish(result.solved_step, result.step)
    log.flush()


# --- failure policy: how a run that cannot go on says so ----------------------------------


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the step finished and a checkpoint was written."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step}; checkpoint saved in {run_dir}"
            if step >= 0
            else f"stopped by {name} before the run started; nothing was written"
        )

    def __reduce__(self):  # crosses process boundaries in a sweep's worker pool
        return (type(self), (self.signum, self.step, self.run_dir))


def diverged_message(config: TrainConfig, run_dir: Path, step: int, what: float | str) -> str:
    """The one line for a run that diverged at ``step``: what became non-finite, what is kept,
    and which settings to try."""
    c = config
    ckpt = checkpoint_path(run_dir)
    remedy = f"lower --lr (now {c.lr:g})"
    remedy += (
        " or add --grad-clip 1.0"
        if c.grad_clip is None
        else f" or --grad-clip (now {c.grad_clip:g})"
    )
    if c.init_std > 1 or (c.input_init_std or 0) > 1:
        remedy += " or a smaller --init-std / --input-init-std"
    saved = (
        f"the last good checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint was saved yet"
    )
    what = f"loss became {what}" if isinstance(what, float) else f"{what}"
    return f"{what} at step {step}; stopped, {saved}; try {remedy}"


# --- the trainer: one run's state and its steps --------------------------------------------


class _Unlogged:
    """The steps not logged yet, (step, loss, grad norm, lr) each: this session's, their
    numbers still on the device (``pending``), after those a resumed checkpoint carried
    (``carried``, read off the device by the session that wrote it)."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []
        self.carried: list[tuple[int, float, float, float]] = []

    def window(self) -> list[list[float]]:
        """The pending steps, read off the device but kept: a checkpoint between points
        carries them."""
        if not self.pending:
            return []
        values = torch.stack([torch.stack([l, n]) for _, l, n, _ in self.pending]).tolist()
        return [[s, loss, norm, lr] for (s, _, _, lr), (loss, norm) in zip(self.pending, values)]

    def take(self, dist: distributed.Dist) -> list[tuple[int, float, float, float]]:
        """All of them, read off the device in one sync, and forgotten."""
        if not self.pending:
            rows, self.carried = self.carried, []
            return rows
        values = torch.stack([torch.stack([l, n]) for _, l, n, _ in self.pending])  # (n, 2)
        # Under torchrun each rank has the loss of its share; their mean is the global batch's.
        if dist.enabled:
            values = distributed.all_reduce_mean_(values)
        rows = self.carried + [
            (s, loss, norm, lr)
            for (s, _, _, lr), (loss, norm) in zip(self.pending, values.tolist())
        ]
        self.pending.clear()
        self.carried = []
        return rows


class _Trainer:
    """One run's state and its steps; :func:`train` drives it."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        device: torch.device,
        verbose: bool,
        dist: distributed.Dist,
    ):
        self.config, self.run_dir, self.device = config, run_dir, device
        self.dist = dist
        self.verbose = verbose and self.dist.is_main
        c = config
        # Under torchrun every rank draws the same global batch from the same stream and
        # trains on its own contiguous share: the data equal a single process's.
        share = c.batch_size // self.dist.world_size
        self.share = slice(self.dist.rank * share, (self.dist.rank + 1) * share)
        self.backend = training_backend(c, device, self.dist.enabled)
        # The compiled kernel trains a population of one: the model's parameters are views
        # of its row, which each step updates in place; its streams are counters.
        self.members = Members([c]) if self.backend == "compiled" else None
        self.model = (
            self.members.model(0, alias=True)
            if self.members is not None
            else model_from_config(c).to(device)
        )
        self.net = self.model
        if self.dist.enabled:  # averages the gradients of the ranks' shares
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = (
            make_optimizer(c, self.model.parameters()) if self.members is None else None
        )
        self.gen = (
            torch.Generator(device=device).manual_seed(c.seed) if self.members is None else None
        )
        if c.schedule == "notebook":  # one fixed training set, drawn first from the stream
            self.fixed = make_echo_batch(
                c.batch_size, c.seq_len, c.echo_step, generator=self.gen, device=device
            )
        if self.members is not None:
            self.val = held_out(c)
        else:
            val_gen = torch.Generator(device=device).manual_seed(c.seed + VAL_SEED_OFFSET)
            self.val = make_echo_batch(
                c.val_size, c.seq_len, c.echo_step, generator=val_gen, device=device
            )
        self.step = 0
        self.curriculum = Curriculum.from_config(c)
        self.solved_step: int | None = None
        self.saved_step: int | None = None  # the step of the last checkpoint written or read
        self.home: rundir.HeldDir | None = None  # the run directory, held (the main process)
        self._finite_at: int | None = None  # the step whose weights were last found finite
        self.wall_before = 0.0  # seconds spent in earlier sessions of this run
        self.unlogged = _Unlogged()
        self.last_train_loss: float | None = None
        self.last_grad_norm: float | None = None
        self.last_eval: dict[str, float] = {}
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- state ------------------------------------------------------------------------

    def state(self, elapsed: float) -> dict[str, Any]:
        ms = self.members
        return run_state(
            self.config,
            step=self.step,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict() if ms is None else ms.optimizer_state(0),
            rng=self.gen.get_state() if ms is None else ms.rng_state(0),
            curriculum=self.curriculum.state_dict(),
            window=self.unlogged.window(),
            solved_step=self.solved_step,
            wall_time_s=self.wall_before + elapsed,
            last_eval=self.last_eval,
            train_loss=self.last_train_loss,
        )

    def load(self, state: dict[str, Any], path: Path) -> None:
        try:
            self.model.load_state_dict(state["model"])
            if self.members is not None:
                self.members.load(0, state["model"], state["optimizer"], state["rng"]["train"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
                self.gen.set_state(state["rng"]["train"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path} does not fit its own config: {first}") from None
        self.step = self.saved_step = int(state["step"])
        self.curriculum.load_state_dict(state.get("curriculum", {}))
        self._follow()
        progress = state.get("progress", {})
        self.solved_step = progress.get("solved_step")
        self.wall_before = float(progress.get("wall_time_s", 0.0))
        self.last_eval = dict(progress.get("last_eval", {}))
        self.last_train_loss = progress.get("train_loss")
        self.unlogged.carried = [tuple(row) for row in state.get("window", [])]

    # --- one optimizer step -------------------------------------------------------------

    def _update(self, objective: torch.Tensor) -> torch.Tensor:
        """Backward, clip, optimizer step; returns the gradient norm. Grads are zeroed in
        place, not set to None, so that a CUDA graph finds the same buffers every replay."""
        self.optimizer.zero_grad(set_to_none=False)
        objective.backward()
        # The norm is wanted for logging even without clipping; an infinite bound clips nothing.
        c = self.config
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), c.grad_clip if c.grad_clip is not None else math.inf
        )
        try:
            self.optimizer.step()
        except RuntimeError as exc:  # an update too large for the dtype (--lr 1e38)
            if "overflow" not in str(exc):
                raise
            raise NonFiniteLoss(self.diverged(self.step + 1, "the update overflowed")) from None
        return norm.detach()

    def _batch_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on a batch; returns (loss, grad norm)."""
        loss = echo_loss(self.net(x, truncate=self.config.truncate)[0], y)
        return loss.detach(), self._update(loss)

    def _state_tensors(self) -> list[torch.Tensor]:
        opt = [
            t
            for st in self.optimizer.state.values()
            for t in st.values()
            if isinstance(t, torch.Tensor)
        ]
        return [p.detach() for p in self.model.parameters()] + opt

    def capture_graph(self) -> None:
        """Record one batch step as a CUDA graph over static input buffers."""
        c = self.config
        self.static_x = torch.zeros(c.batch_size, c.seq_len, device=self.device)
        self.static_y = torch.zeros_like(self.static_x)
        # Warm-up moves the weights and the optimizer state; put them back afterwards, so
        # the graph changes nothing about the run.
        before = {id(t): t.clone() for t in self._state_tensors()}

        @torch.no_grad()
        def restore() -> None:
            for t in self._state_tensors():
                if id(t) in before:
                    t.copy_(before[id(t)])
                else:  # created by the warm-up: a fresh Adam state is all zeros
                    t.zero_()

        self.graph = capture(
            lambda: self._batch_step(self.static_x, self.static_y),
            device=self.device,
            after_warmup=restore,
        )

    def train_step(self) -> None:
        c = self.config
        if self.members is not None:  # the compiled kernel: batch, pass and update in C
            loss, norm, _ = self.members.step()  # non-finite: caught at the next point
            self.step += 1
            self.batch = True
            self.unlogged.pending.append((self.step, loss[0], norm[0], float(self.members.lr[0])))
            self._schedule()
            return
        if c.schedule == "batch":
            x, y = make_echo_batch(
                c.batch_size, c.seq_len, self.curriculum.k, generator=self.gen, device=self.device
            )
            x, y = x[self.share], y[self.share]
            if c.cuda_graph:
                self.static_x.copy_(x)
                self.static_y.copy_(y)
                loss, norm = (t.clone() for t in self.graph.replay())  # replays overwrite them
            else:
                loss, norm = self._batch_step(x, y)
        else:
            # The notebook: forward over the whole sequence, back-propagate the error at step
            # t alone, update; t walks the sequence, one epoch per seq_len steps.
            x, y = self.fixed
            x, y = x[self.share], y[self.share]
            t = self.step % c.seq_len
            y_hat, _ = self.net(x, truncate=c.truncate)
            norm = self._update(0.5 * (y_hat[:, t] - y[:, t]).square().mean())
            loss = echo_loss(y_hat.detach(), y)  # the cost J the notebook printed
        self.batch = (x, y)
        self.step += 1
        self.unlogged.pending.append((self.step, loss, norm, self.optimizer.param_groups[0]["lr"]))
        self._schedule()

    def _schedule(self) -> None:
        """--lr-halve-every: halve the rate every N steps from reaching the last k."""
        c = self.config
        since = self.step - self.curriculum.since
        if c.lr_halve_every and self.curriculum.at_last and since % c.lr_halve_every == 0:
            if self.members is not None:
                self.members.lr /= 2
            else:
                for group in self.optimizer.param_groups:
                    group["lr"] /= 2

    # --- logging ------------------------------------------------------------------------

    def take_scalars(self) -> list[tuple[int, float, float, float]]:
        """The per-step (step, loss, grad norm, lr) not yet logged, read off the device in
        one sync; raises NonFiniteLoss at the first non-finite loss or norm."""
        if not self.unlogged.pending:
            return self.unlogged.take(self.dist)  # carried: checked when they were read
        rows = self.unlogged.take(self.dist)
        for s, loss, norm, _ in rows:
            if not (math.isfinite(loss) and math.isfinite(norm)):
                raise NonFiniteLoss(
                    self.diverged(
                        s, loss if not math.isfinite(loss) else f"gradient norm became {norm}"
                    )
                )
        self.last_train_loss, self.last_grad_norm = rows[-1][1], rows[-1][2]
        return rows

    def diverged(self, step: int, what: float | str) -> str:
        return diverged_message(self.config, self.run_dir, step, what)

    # --- evaluation and checkpoints ----------------------------------------------------

    def check_finite(self) -> None:
        """Raise NonFiniteLoss if a weight is NaN or infinite: such a model is never
        evaluated, logged or checkpointed (a histogram of it would fail, a checkpoint of it
        would not be a good one). One host sync per step at most: the evaluation and the
        checkpoint of a step share it."""
        if self._finite_at == self.step:
            return
        ok = torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()
        if not ok.item():
            raise NonFiniteLoss(self.diverged(self.step, "non-finite weights"))
        self._finite_at = self.step

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], torch.Tensor]:
        """Held-out loss, bit accuracy, and accuracy at the curriculum's current k; and the
        prediction (val_size, T). Logs nothing, changes nothing."""
        c = self.config
        self.check_finite()
        vx, vy = self.val
        k = self.curriculum.k
        if self.members is not None:  # the kernel's own evaluation: the same bits anywhere
            return self._evaluate_compiled(vx, vy, k)
        y_hat, _ = self.model(vx)
        # the prediction does not depend on k, only the targets do
        metrics = torch.stack(
            [
                echo_loss(y_hat, vy),
                bit_accuracy(y_hat, vy, c.echo_step),
                bit_accuracy(y_hat, echo_targets(vx, k), k),
            ]
        )
        if self.dist.enabled:  # rank 0's verdict, so that every rank stops at the same step
            torch.distributed.broadcast(metrics, src=0)
        val_loss, val_acc, acc_k = metrics.tolist()
        if not math.isfinite(val_loss):
            raise NonFiniteLoss(self.diverged(self.step, f"held-out loss {val_loss}"))
        return {"val_loss": val_loss, "val_accuracy": val_acc, "accuracy_at_k": acc_k}, y_hat

    def _evaluate_compiled(
        self, vx: torch.Tensor, vy: torch.Tensor, k: int
    ) -> tuple[dict[str, float], torch.Tensor]:
        ms, c = self.members, self.config
        now = () if k == c.echo_step else (echo_targets(vx, k)[None], torch.tensor([k]))
        val_loss, val_acc, acc_k = (
            v.item()
            for v in ms.held_out_metrics(vx[None], vy[None], torch.tensor([c.echo_step]), *now)
        )
        if not math.isfinite(val_loss):
            raise NonFiniteLoss(self.diverged(self.step, f"held-out loss {val_loss}"))
        # the first sequence's prediction is all an evaluation shows
        return (
            {"val_loss": val_loss, "val_accuracy": val_acc, "accuracy_at_k": acc_k},
            ms.predictions(0, vx[:1]),
        )

    def shown_model(self) -> torch.nn.Module:
        """The model as the pictures show it: with its last batch's gradients (the compiled
        kernel keeps none: they are computed again from the batch, drawn again)."""
        if self.members is not None and self.batch is not None:
            with torch.no_grad():
                grads = self.members.model(0, with_grads=True)
            for p, q in zip(self.model.parameters(), grads.parameters()):
                p.grad = q.grad
        return self.model

    def record(self, metrics: dict[str, float]) -> None:
        """What an evaluation decides: solved, and whether the curriculum moves on."""
        self.last_eval = {
            "step": self.step,
            "val_loss": metrics["val_loss"],
            "val_accuracy": metrics["val_accuracy"],
        }
        if metrics["val_accuracy"] >= self.config.target_accuracy and self.solved_step is None:
            self.solved_step = self.step
        self.curriculum.observe(self.step, metrics["accuracy_at_k"])
        self._follow()

    def _follow(self) -> None:
        """The compiled kernel draws the targets itself: at the curriculum's k."""
        if self.members is not None:
            self.members.k[0] = self.curriculum.k

    def compare_due(self) -> bool:
        last = self.solved_step == self.step or self.step >= self.config.steps
        return (
            self.batch is not None
            and self.dist.is_main
            and compare_due(self.config, self.step, last)
        )

    def kernel_vs_autograd(self) -> float:
        if self.members is not None:  # the kernel that trains, in its float64 build
            model, x, y, grads = self.members.float64_pass(0)
            return kernel_vs_autograd(model, x, y, self.config.truncate, ours=grads)
        return kernel_vs_autograd(self.model, *self.batch, self.config.truncate)

    def gradient_flow(self) -> torch.Tensor:
        return gradient_flow(self.model, *self.val)

    def checkpoint(self, elapsed: float, events: dict[str, int], durable: bool) -> None:
        """Save the state, with the event files' sizes (``events``); finite weights only,
        so that the last checkpoint is always a good one. Fsynced when ``durable`` (a run's
        last one)."""
        self.check_finite()
        if self.dist.is_main:
            self.home.check(self.step, self.saved_step)
            save_checkpoint(
                checkpoint_path(self.run_dir), {**self.state(elapsed), "events": events}, durable
            )
        self.saved_step = self.step


# --- the run: setup, then one loop ---------------------------------------------------------


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
        progress: called after every step with (step, 1), the run still training: the
            sweep shows it (it should return at once).

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
    elapsed = _Clock()
    trainer, log = _start(config, run_dir, resumed, device, verbose, d, elapsed, home)
    return _loop(trainer, log, received, external_stop, elapsed, progress)


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


class _Clock:
    """Seconds since the run's clock was (re)started: the run's time, not its setup's."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def _start(
    config: TrainConfig,
    run_dir: Path,
    resumed: Resumed | None,
    device: torch.device,
    verbose: bool,
    d: distributed.Dist,
    elapsed: _Clock,
    home: rundir.HeldDir | None,
) -> tuple[_Trainer, RunLog]:
    """The trainer and its log, the run's state read back on a resume, or evaluated and
    checkpointed at step 0 for a new one. A failure here leaves a run directory that resumes,
    or none: a new run that wrote no checkpoint is removed (a restarted one keeps its config)."""
    saved = resumed.state if resumed is not None else None
    log = trainer = None
    try:
        trainer = _Trainer(config, run_dir, device, verbose, d)
        trainer.home = home
        elapsed.restart()  # the clock of the run, not of building it
        if saved is not None:
            trainer.load(saved, resumed.checkpoint)
            if trainer.verbose:
                print(f"resuming {run_dir.name} from step {trainer.step}", file=sys.stderr)
        elif resumed is not None and trainer.verbose:
            print(
                f"resuming {run_dir.name} from step 0: it stopped before its first "
                "checkpoint, so it starts again with its recorded config",
                file=sys.stderr,
            )
        if config.cuda_graph:
            trainer.capture_graph()
        log = RunLog(
            run_dir,
            config,
            main=d.is_main,
            verbose=verbose,
            resumed_at=trainer.step if saved is not None else None,
            event_sizes=saved.get("events") if saved is not None else None,
            wall_before=trainer.wall_before,
        )
        if saved is None:
            log.config_text()
            _evaluate(trainer, log, elapsed())
            _checkpoint(trainer, log, elapsed())
        return trainer, log
    except BaseException as exc:
        if log is not None:
            log.close()
        if d.is_main and not isinstance(exc, rundir.RunDirGone):  # gone: not ours to clean
            if saved is None and not checkpoint_path(run_dir).exists():
                rundir.discard(run_dir, fresh=resumed is None)
            else:
                rundir.remove_empty_event_files(run_dir)
        error = rundir.storage_error(exc, trainer.saved_step if trainer else None, run_dir)
        if error is not None:
            raise error from None
        raise


def _loop(
    trainer: _Trainer,
    log: RunLog,
    received: list[int],
    external_stop: Callable[[], bool] | None,
    elapsed: _Clock,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """The loop: a step, its scalars every log_every steps, an evaluation and a checkpoint
    every eval_every, and a stop after any step once a signal (or the sweep) asks."""
    config, d = trainer.config, trainer.dist
    log.open_bar()
    try:
        while trainer.step < config.steps and trainer.solved_step is None and not received:
            trainer.train_step()
            s = trainer.step
            if progress is not None:
                progress(s, 1)
            is_eval = s % config.eval_every == 0 or s == config.steps
            stop = bool(received) or (external_stop is not None and external_stop())
            # Under torchrun every rank flushes at the same steps (a collective), and
            # learns there whether any rank was signalled.
            if is_eval or s % config.log_every == 0:
                # held-out metrics at every point (an evaluation step logs its own below), so
                # that the held-out curves are as fine as the training ones
                log.steps(trainer.take_scalars(), None if is_eval else trainer.evaluate()[0])
                if d.enabled:
                    stop = distributed.all_reduce_max(float(stop), trainer.device) > 0
                log.progress(trainer.last_train_loss, trainer.last_eval.get("val_accuracy"))
            elif d.enabled:
                stop = False
            if is_eval:
                _evaluate(trainer, log, elapsed())
                _checkpoint(trainer, log, elapsed(), durable=stop)
            if stop:
                # an evaluation step was checkpointed just above; elsewhere, the steps since
                # the last point go into the checkpoint, unlogged, so that a resumed run
                # draws the same points as one never stopped
                if not is_eval:
                    _checkpoint(trainer, log, elapsed(), durable=True)
                raise TrainingInterrupted(
                    received[0] if received else signal.SIGTERM, s, trainer.run_dir
                )
        if received:  # arrived during start-up; the first checkpoint is written
            _checkpoint(trainer, log, elapsed(), durable=True)
            raise TrainingInterrupted(received[0], trainer.step, trainer.run_dir)
        if trainer.last_eval.get("step") != trainer.step:  # resumed with nothing left to do
            _evaluate(trainer, log, elapsed())
        _checkpoint(trainer, log, elapsed(), durable=True)
        stopped = "solved" if trainer.solved_step is not None else "steps"
        return _finish(trainer, log, stopped, elapsed())
    except NonFiniteLoss:
        _finish(trainer, log, "diverged", elapsed())
        raise
    except OSError as exc:
        if trainer.home is not None:  # gone while a file was written: say that, not ENOENT
            trainer.home.check(trainer.step, trainer.saved_step)
        raise rundir.storage_error(exc, trainer.saved_step, trainer.run_dir) from None
    finally:
        log.close()


def _evaluate(trainer: _Trainer, log: RunLog, elapsed: float) -> None:
    """Evaluate, let the run decide what follows from it, and show it."""
    metrics, y_hat = trainer.evaluate()
    trainer.record(metrics)
    vx, vy = trainer.val
    last = trainer.solved_step is not None or trainer.step >= trainer.config.steps
    # the flow is drawn with the pictures: computed only when they are due
    draw = trainer.dist.is_main and log.pictures_due(trainer.step, last)
    log.evaluation(
        trainer.step,
        metrics,
        trainer.shown_model() if draw else trainer.model,
        (vx[0], vy[0], y_hat[0]),
        trainer.curriculum.k,
        trainer.last_train_loss,
        trainer.last_grad_norm,
        elapsed,
        flow=trainer.gradient_flow() if draw else None,
        last=last,
    )
    if trainer.compare_due():
        log.kernel_vs_autograd(trainer.step, trainer.kernel_vs_autograd())


def _checkpoint(trainer: _Trainer, log: RunLog, elapsed: float, durable: bool = False) -> None:
    """The events up to now on their way to disk, then a checkpoint that records how far
    they reach (a resume from it cuts off what was logged after it)."""
    trainer.checkpoint(elapsed, events=log.sizes(), durable=durable)


def _finish(trainer: _Trainer, log: RunLog, stopped: str, elapsed: float) -> TrainResult:
    """Write summary.json and the hparams; return the result. They come after the last
    checkpoint, so a resume (with nothing left to do, or more steps) cuts them off and
    writes them again: once, with the run's last settings."""
    ev = trainer.last_eval
    result = TrainResult(
        run_dir=str(trainer.run_dir),
        step=trainer.step,
        train_loss=trainer.last_train_loss,
        val_loss=ev.get("val_loss", math.nan),
        val_accuracy=ev.get("val_accuracy", math.nan),
        solved_step=trainer.solved_step,
        wall_time_s=trainer.wall_before + elapsed,
        device=str(trainer.device),
        backend=trainer.backend,
        stopped=stopped,
        weights_sha256=weights_digest(trainer.model.state_dict()),
    )
    if trainer.dist.is_main:
        trainer.home.check(trainer.step, trainer.saved_step)
        write_outcome(result, log)
    return result


# What an evaluation shows besides the metrics, for one model (train's, or a population
# member's: echo_rnn.engine.population_train uses these too).


# The kernel is compared with autograd at every one of a run's first evaluations: a short
# run's card gets enough points to be drawn (TensorBoard's Scalars dashboard scales a chart
# without its outermost points, and drew a card of two points empty), while a long run pays
# for a comparison (about 2 ms a run) only every compare_every evaluations after them.
COMPARE_FIRST = 5


def compare_due(config: TrainConfig, step: int, last: bool) -> bool:
    """The kernel is compared with autograd at each of the first COMPARE_FIRST evaluations
    that have a batch, then every compare_every evaluations, and at the last (``last``)."""
    evals_done = step // config.eval_every
    return evals_done <= COMPARE_FIRST or evals_done % config.compare_every == 0 or last


def kernel_vs_autograd(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    truncate: int | None,
    ours: dict[str, torch.Tensor] | None = None,
) -> float:
    """How far a kernel's gradients are from autograd's on a batch, in rounding units of the
    model's dtype: the largest difference over the largest gradient entry times epsilon.
    Rounding gives a few units, a wrong kernel thousands and more; a raw difference (1e-8)
    would read as 0 on TensorBoard's cards. The kernel is the fast torch kernel, or the one
    whose gradients ``ours`` holds (the compiled kernel's, compared in float64: its own tanh
    and order against autograd's differ by more than rounding after 50 float32 steps of a
    chaotic run, which says nothing about the gradients being right)."""
    if ours is None:
        ours = manual_grads(model, x, y, truncate=truncate, kernel="fast")
    ref = autograd_grads(model, x, y, truncate=truncate)
    diff = max((ours[n] - ref[n]).abs().max().item() for n in ref)
    scale = max(ref[n].abs().max().item() for n in ref)
    eps = torch.finfo(ref["U"].dtype).eps
    return diff / (eps * scale) if scale > 0 else (0.0 if diff == 0 else math.inf)


# The gradient flow is drawn from this many held-out sequences: the same ones at every
# evaluation, so that the curve changes only as the model does, at a fraction of an
# evaluation's cost.
FLOW_SEQUENCES = 32


def gradient_flow(model, vx: torch.Tensor, vy: torch.Tensor) -> torch.Tensor:
    """||dJ/dh_t|| for t = 1..T (T,), on the first held-out sequences, from the fast kernel
    (full BPTT; whatever the run's backend, the numbers are the same)."""
    n = FLOW_SEQUENCES
    return step_norms(manual_grads(model, vx[:n], vy[:n], kernel="fast", hidden=True)["dh"])
