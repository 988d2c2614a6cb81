"""The kernels as the loop drives them: a stepper trains R runs (R = 1 for a run alone) and
answers the loop's questions about them, so that one loop (:mod:`echo_rnn.engine.loop`)
serves every kind of run.

- :class:`CompiledStepper`: R runs in the compiled kernel
  (:class:`~echo_rnn.engine.members.Members`), their batches, steps and evaluations in C: the
  CPU's default, the same bits anywhere.
- :class:`PopulationStepper`: R runs in the torch population kernel
  (:class:`~echo_rnn.kernels.population.PopulationRNN`): a sweep's group on a GPU, or on a CPU
  with ``--backend bptt``.
- :class:`ModelStepper`: one run as a torch model and optimizer: either torch backend
  (``autograd`` or ``bptt``), any device, the notebook's schedule, a CUDA graph, torchrun.

What a stepper answers (r: a run's place among the active ones):
    stack(runs, active)   the active runs changed, or a curriculum moved on: read them again
    step(step)            one optimizer step of every active run -> (R,) losses, (R,) grad norms
                          (left on the device); :class:`Overflow` if an update overflowed
    lr, halve_lr()        the learning rate, shared by the runs of one stepper
    read(values)          per-step values as every process agrees on them (torchrun: the mean)
    metrics()             each run's held-out loss, accuracy, accuracy at its current k, and
                          its first held-out prediction (``first[r]``, (T,))
    finite()              whether each run's weights are finite
    model_of(r)           run r as an EchoRNN with its last batch's gradients (the pictures)
    kernel_vs_autograd(r, model, truncate)   the training kernel against autograd
    snapshot(), weights(r), saved(full, r, run), keep(full, keep)   what a checkpoint takes,
                          and the runs that stay
"""

from __future__ import annotations

import math

import torch

from echo_rnn.config import TrainConfig
from echo_rnn.data import bits, echo_targets, make_echo_batch
from echo_rnn.engine import distributed
from echo_rnn.engine.backends import training_backend
from echo_rnn.engine.graphs import capture
from echo_rnn.engine.members import Members
from echo_rnn.engine.witness import kernel_vs_autograd
from echo_rnn.kernels.population import (
    PopulationAdam,
    PopulationRNN,
    clip_grad_norms_,
    population_accuracy,
    population_grads,
    population_loss,
)
from echo_rnn.model import EchoRNN, bit_accuracy, echo_loss, make_optimizer, model_from_config
from echo_rnn.run.checkpoint import CheckpointError
from echo_rnn.run.state import RunRecord


class Overflow(Exception):
    """An optimizer update too large for the dtype (``--lr 1e38``): the runs diverged."""


def _metric_rows(values: list[list[float]]) -> list[dict[str, float]]:
    return [{"val_loss": l, "val_accuracy": a, "accuracy_at_k": ak} for l, a, ak in values]


def _does_not_fit(path, exc: Exception) -> CheckpointError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CheckpointError(f"{path} does not fit its own config: {first}")


def _resumable(record: RunRecord, path) -> None:
    """A checkpoint a run resumes from holds its optimizer and its stream (one written by
    echo-rnn always does; the record's check accepts a table without them)."""
    for name in ("optimizer", "rng"):
        if getattr(record, name) is None:
            raise CheckpointError(f"{path} cannot be resumed: it holds no {name} state")


class _TorchOptimizer:
    """The learning rate and the update of a stepper that trains with a torch optimizer
    (``self.optimizer``)."""

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def halve_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] /= 2

    def _optimizer_step(self) -> None:
        try:
            self.optimizer.step()
        except RuntimeError as exc:  # an update too large for the dtype (--lr 1e38)
            if "overflow" not in str(exc):
                raise
            raise Overflow() from None


# --- one run: a torch model and its optimizer ---------------------------------------------


class ModelStepper(_TorchOptimizer):
    """One run (``run``) trained by a torch model and optimizer on ``device``; under torchrun
    (``dist``) every rank draws the same global batch from the same stream and trains on its
    own contiguous share, DDP averaging the gradients: the data equal a single process's."""

    def __init__(self, run, device: torch.device, dist: distributed.Dist) -> None:
        c = run.config
        self.run, self.config, self.device, self.dist = run, c, device, dist
        self.backend = training_backend(c, device, dist.enabled)
        share = c.batch_size // dist.world_size
        self.share = slice(dist.rank * share, (dist.rank + 1) * share)
        self.model = model_from_config(c).to(device)
        self.net = self.model
        if dist.enabled:  # averages the gradients of the ranks' shares
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = make_optimizer(c, self.model.parameters())
        if c.schedule == "notebook":  # one fixed training set, drawn first from the stream
            self.fixed = make_echo_batch(
                c.batch_size, c.seq_len, c.echo_step, generator=run.gen, device=device
            )
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def load(self, record: RunRecord, path) -> None:
        _resumable(record, path)
        try:
            self.model.load_state_dict(record.model)
            self.optimizer.load_state_dict(record.optimizer)
            self.run.gen.set_state(record.rng)
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
            raise _does_not_fit(path, exc) from None

    def stack(self, runs, active: list[int]) -> None:
        """One run: it reads its own state at every step."""

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
        self._optimizer_step()
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

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, run = self.config, self.run
        if c.schedule == "batch":
            x, y = make_echo_batch(
                c.batch_size, c.seq_len, run.curriculum.k, generator=run.gen, device=self.device
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
            t = step % c.seq_len
            y_hat, _ = self.net(x, truncate=c.truncate)
            norm = self._update(0.5 * (y_hat[:, t] - y[:, t]).square().mean())
            loss = echo_loss(y_hat.detach(), y)  # the cost J the notebook printed
        self.batch = (x, y)
        return loss.reshape(1), norm.reshape(1)

    def read(self, values: torch.Tensor) -> torch.Tensor:
        # Under torchrun each rank has the loss of its share; their mean is the global batch's.
        return distributed.all_reduce_mean_(values) if self.dist.enabled else values

    # --- what the loop asks ---------------------------------------------------------------

    @torch.no_grad()
    def metrics(self):
        c, run = self.config, self.run
        vx, vy = run.val
        k = run.curriculum.k
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
        return _metric_rows([metrics.tolist()]), y_hat  # first[0]: the first sequence's

    def finite(self) -> list[bool]:
        params = self.model.parameters()
        return [bool(torch.stack([p.detach().isfinite().all() for p in params]).all().item())]

    def model_of(self, r: int) -> EchoRNN:
        return self.model  # with its last batch's gradients

    def kernel_vs_autograd(self, r: int, model: EchoRNN | None, truncate: int | None) -> float:
        return kernel_vs_autograd(self.model, *self.batch, truncate)

    def snapshot(self) -> None:
        return None

    def weights(self, r: int) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def saved(self, full: None, r: int, run) -> tuple[dict, dict, torch.Tensor]:
        return self.model.state_dict(), self.optimizer.state_dict(), run.gen.get_state()

    def keep(self, full: None, keep: list[int]) -> None:
        """A run alone leaves only when it is done."""


# --- R runs in the torch population kernel ------------------------------------------------


class PopulationStepper(_TorchOptimizer):
    """A population trained by the torch kernel (``bptt``, any device): one
    :class:`~echo_rnn.kernels.population.PopulationRNN` and one optimizer for every run."""

    def __init__(self, configs: list[TrainConfig], device: torch.device) -> None:
        self.pop = PopulationRNN.from_models([model_from_config(c).to(device) for c in configs])
        self.optimizer = make_optimizer(configs[0], self.pop.parameters(), adam=PopulationAdam)
        self.config = configs[0]
        self.device = device
        self.backend = training_backend(configs[0], device)
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def stack(self, runs, active: list[int]) -> None:
        self.stacked = Stacked.of(runs, active, self.config, self.device)

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        x, y = _batch(self.stacked)
        losses = population_grads(self.pop, x, y, c.truncate)  # (R,): each run's echo_loss
        norms = clip_grad_norms_(self.pop, c.grad_clip if c.grad_clip is not None else math.inf)
        self._optimizer_step()
        self.last = (x, y)
        return losses.detach(), norms

    def read(self, values: torch.Tensor) -> torch.Tensor:
        return values

    @torch.no_grad()
    def metrics(self):
        """Every active run's held-out loss, accuracy and accuracy at its curriculum's k, as
        a run alone computes them (one forward and a few ops for all, each run's
        ``echo_loss`` and ``bit_accuracy`` to the bit), and each one's first held-out
        prediction (R, T)."""
        s = self.stacked
        y_hat = self.pop(s.val_x)
        accuracy = population_accuracy(y_hat, s.val_y, s.scored)
        at_k = (
            accuracy
            if s.now is s.scored  # every run at its last k
            else population_accuracy(y_hat, s.val_y_now, s.now)
        )
        values = torch.stack(
            [population_loss(y_hat, s.val_y), accuracy, at_k], dim=1
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

    def model_of(self, r: int) -> EchoRNN:
        """Run r as an EchoRNN, with its gradients: what a run alone logs its pictures from."""
        model = self.pop.member(r)
        for name, p in model.named_parameters():
            grad = getattr(self.pop, name).grad
            p.grad = None if grad is None else grad[r].clone()  # none before the first step
        return model

    def kernel_vs_autograd(self, r: int, model: EchoRNN | None, truncate: int | None) -> float:
        """The fast kernel against autograd on run r's last batch (``model``: run r as
        :meth:`model_of` makes it, if the pictures made it already)."""
        model = model if model is not None else self.model_of(r)
        return kernel_vs_autograd(model, self.last[0][r], self.last[1][r], truncate)

    def snapshot(self) -> dict:
        return self.optimizer.state_dict()  # once for all runs: each takes its rows

    def weights(self, r: int) -> dict[str, torch.Tensor]:
        return self.pop.member(r).state_dict()

    def saved(self, full: dict, r: int, run) -> tuple[dict, dict, torch.Tensor]:
        return self.weights(r), _optimizer_state(full, r), run.gen.get_state()

    def keep(self, full: dict, keep: list[int]) -> None:
        self.pop, self.optimizer = _without(self.pop, full, keep, self.config)


# --- R runs in the compiled kernel --------------------------------------------------------


class CompiledStepper:
    """Runs trained by the compiled kernel (:class:`~echo_rnn.engine.members.Members`): each
    run's step, data and evaluation in C, its bits its own whatever else trains beside it."""

    def __init__(self, configs: list[TrainConfig]) -> None:
        self.members = Members(configs)
        self.config = configs[0]
        self.device = torch.device("cpu")
        self.backend = "compiled"

    def load(self, record: RunRecord, path) -> None:
        """A run alone, resumed: its row from the checkpoint."""
        _resumable(record, path)
        try:
            self.members.load(0, record.model, record.optimizer, record.rng)
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
            raise _does_not_fit(path, exc) from None

    def stack(self, runs, active: list[int]) -> None:
        """Each run trains on its curriculum's k now; the held-out sets stacked."""
        self.members.set_k([runs[i].curriculum.k for i in active])
        self.stacked = Stacked.of(runs, active, self.config, self.device)

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        losses, norms, _ = self.members.step()  # a non-finite run is caught at its point
        return losses, norms

    @property
    def lr(self) -> float:
        return float(self.members.lr[0])

    def halve_lr(self) -> None:
        self.members.lr /= 2

    def read(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def metrics(self):
        """Every active run's held-out loss, accuracy and accuracy at its curriculum's k,
        computed by the kernel (the same bits on any machine), and each one's first
        held-out prediction (R, T), computed when a picture asks for it."""
        s, ms = self.stacked, self.members
        now = () if s.now is s.scored else (s.val_y_now, s.k_now)
        values = torch.stack(ms.held_out_metrics(s.val_x, s.val_y, s.k_end, *now), 1)
        return _metric_rows(values.tolist()), _FirstPredictions(ms, s.val_x)

    def finite(self) -> list[bool]:
        return torch.isfinite(self.members.params).all(1).tolist()

    def model_of(self, r: int) -> EchoRNN:
        return self.members.model(r, with_grads=True)

    def kernel_vs_autograd(self, r: int, model: EchoRNN | None, truncate: int | None) -> float:
        """The compiled kernel (its float64 build) against autograd on run r's last batch:
        its own tanh and order against autograd's differ by more than rounding after 50
        float32 steps of a chaotic run, which says nothing about the gradients (its own
        float64 copy of the run: the picture's ``model`` is not needed)."""
        model, x, y, grads = self.members.float64_pass(r)
        return kernel_vs_autograd(model, x, y, truncate, ours=grads)

    def snapshot(self) -> None:
        return None

    def weights(self, r: int) -> dict[str, torch.Tensor]:
        return self.members.model_state(r)

    def saved(self, full: None, r: int, run) -> tuple[dict, dict, torch.Tensor]:
        ms = self.members
        return self.weights(r), ms.optimizer_state(r), ms.rng_state(r)

    def keep(self, full: None, keep: list[int]) -> None:
        self.members.select(keep)


class _FirstPredictions:
    """Run r's prediction of its first held-out sequence, (T,), computed when a picture asks
    for it (an evaluation draws one at most PICTURES_PER_RUN times a run)."""

    def __init__(self, members: Members, val_x: torch.Tensor) -> None:
        self.members, self.val_x = members, val_x

    def __getitem__(self, r: int) -> torch.Tensor:
        return self.members.predictions(r, self.val_x[r, :1])[0]


# --- what a population's steps and evaluations read ---------------------------------------


class Stacked:
    """What the active runs' steps and evaluations read, stacked along R, made again only
    when runs leave or a curriculum moves on, not at every step.

    Attributes:
        val_x, val_y: the held-out sets, ``(R, val_size, T)`` each, targets at the run's k.
        val_y_now: the held-out targets at each run's current curriculum k (``val_y``,
            and ``now`` is ``scored``, while every run is at its last k).
        generators: each run's training stream, in order (the torch kernel's).
        source: ``(R, B, T)``, index of x_{t-k} along T for the training targets at the
            current k (0 before k).
        now: ``(R, 1, T)``, t >= the current k: the positions whose target is an echo.
        scored: ``(R, 1, T)``, t >= the run's k: the positions its accuracy scores.
        k_now, k_end: ``(R,)`` int64, each run's current k and its run's k.
    """

    @classmethod
    def of(cls, runs, active: list[int], c0: TrainConfig, device: torch.device) -> Stacked:
        s = cls()
        R, B, T = len(active), c0.batch_size, c0.seq_len
        k_now = [runs[i].curriculum.k for i in active]
        k_end = [runs[i].config.echo_step for i in active]
        t = torch.arange(T, device=device).view(1, 1, T)
        k = torch.tensor(k_now, device=device).view(R, 1, 1)
        s.val_x = torch.stack([runs[i].val[0] for i in active])
        s.val_y = torch.stack([runs[i].val[1] for i in active])
        s.scored = t >= torch.tensor(k_end, device=device).view(R, 1, 1)
        at_end = k_now == k_end  # no curriculum, or every one at its last k: one set of targets
        s.val_y_now = (
            s.val_y
            if at_end
            else torch.stack([echo_targets(runs[i].val[0], kk) for i, kk in zip(active, k_now)])
        )
        s.generators = [runs[i].gen for i in active]
        s.source = (t - k).clamp(min=0).expand(R, B, T).contiguous()
        s.now = s.scored if at_end else t >= k
        s.k_now = torch.tensor(k_now, dtype=torch.int64)
        s.k_end = torch.tensor(k_end, dtype=torch.int64)
        return s


def _batch(stacked: Stacked) -> tuple[torch.Tensor, torch.Tensor]:
    """Every active run's next training batch, (R, B, T) each: the draws are
    :func:`~echo_rnn.data.make_echo_batch`'s, from each run's own generator (one call a
    run), and the rest (the bits, the targets k steps behind) one op for all."""
    R, B, T = stacked.source.shape
    device = stacked.source.device
    u = torch.stack([torch.rand(B, T, generator=gen, device=device) for gen in stacked.generators])
    x = bits(u)  # make_echo_batch's p = 0.5, float32
    y = x.gather(2, stacked.source).mul_(stacked.now)  # y_t = x_{t-k}, zeros before k
    return x, y


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


def _without(pop: PopulationRNN, old: dict, keep: list[int], config: TrainConfig):
    """The population of the runs ``keep`` (their rows), with a new optimizer holding
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
