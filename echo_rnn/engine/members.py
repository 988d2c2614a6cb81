"""R runs trained by the compiled kernel: their weights, optimizer state and data streams.

The compiled kernel (:mod:`echo_rnn.kernels.compiled`) keeps a member's parameters flat, one
row of ``params`` (R, P) per member, in the order U, V, w, b (P = H^2 + H I + H [+ H]), and
its Adam moments ``m``, ``v`` in the same layout. A member's numbers depend on nothing but
its own config: its weights come from its seed's init stream, its batches from its seed's
training stream at its step (a counter, not a generator state), its held-out set from its
seed's held-out stream, all drawn by the kernel's own generator; the arithmetic is the
kernel's, in a fixed order. So a run trained alone and the same run as any member of any
population are the same run, on any x86-64 CPU, by construction rather than by test.

What the rest of the package reads from a member (an :class:`~echo_rnn.model.EchoRNN` for
its pictures and predictions, a checkpoint's ``model`` and ``optimizer`` tables) is in
PyTorch's own formats: the model's parameters are views of the member's row, and the
optimizer table is what ``torch.optim.Adam`` (or SGD) over U, V, w, b writes, so a checkpoint
reads the same whichever kernel trained it.
"""

from __future__ import annotations

import torch

from echo_rnn.config import TrainConfig
from echo_rnn.data import echo_targets
from echo_rnn.engine.curriculum import Curriculum
from echo_rnn.kernels import compiled
from echo_rnn.model import EchoRNN, optimizer_groups

# The training data have one input channel: the bit that is echoed.
INPUT_SIZE = 1


def held_out(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A compiled run's held-out set, ``(val_size, T)`` each: its seed's held-out stream, the
    same on any machine; targets at the run's echo step."""
    c = config
    x = compiled.draw_bits(c.seed, compiled.STREAM_VAL, 0, c.val_size, c.seq_len)
    return x, echo_targets(x, c.echo_step)


def initial_params(config: TrainConfig) -> torch.Tensor:
    """A compiled run's initial parameters (P,), from its seed's init stream."""
    c = config
    return compiled.init_params(
        c.seed, c.hidden_size, INPUT_SIZE, c.bias, c.init_std, c.input_init_std, c.orthogonal_gain
    )


def _counter_bytes(counter: int) -> torch.Tensor:
    """A compiled run's data stream position as a checkpoint's rng state (8 bytes, little
    endian): the stream is counter-based, so its state is the number of batches drawn."""
    return torch.tensor(list(int(counter).to_bytes(8, "little")), dtype=torch.uint8)


def counter_of(rng: torch.Tensor) -> int:
    """The inverse of :func:`_counter_bytes`; a ValueError for a state of another kind."""
    if rng.dtype != torch.uint8 or rng.shape != (8,):
        raise ValueError(
            f"a compiled run's rng state is 8 bytes, got {tuple(rng.shape)} {rng.dtype}"
        )
    return int.from_bytes(bytes(rng.tolist()), "little")


class Members:
    """The state of R runs of one shape (hidden size, bias, batch size, sequence length,
    optimizer, truncation, clipping) that the compiled kernel trains together.

    Attributes, one row or entry per member:
        params, m, v: ``(R, P)`` float32: weights, Adam's first and second moments.
        steps: ``(R,)`` int64, Adam's step count (the run's step, less those before a
            resume of an SGD run: SGD keeps none).
        lr: ``(R,)`` float64, each member's current learning rate.
        seeds, counters: ``(R,)`` int64, each member's data stream and its position.
        k: ``(R,)`` int64, the echo step each member trains on now (its curriculum's).
        trained_k: ``(R,)`` int64, the echo step of each member's last batch.
    """

    def __init__(self, configs: list[TrainConfig]) -> None:
        c = configs[0]
        self.config = c
        self.H, self.bias = c.hidden_size, c.bias
        self.params = torch.stack([initial_params(cfg) for cfg in configs])
        self.m = torch.zeros_like(self.params)
        self.v = torch.zeros_like(self.params)
        R = len(configs)
        self.steps = torch.zeros(R, dtype=torch.int64)
        self.lr = torch.full((R,), c.lr, dtype=torch.float64)
        self.seeds = torch.tensor([cfg.seed for cfg in configs], dtype=torch.int64)
        self.counters = torch.zeros(R, dtype=torch.int64)
        # each trains on its curriculum's first k (its echo step without a curriculum)
        self.k = torch.tensor([Curriculum.from_config(cfg).k for cfg in configs], dtype=torch.int64)
        self.trained_k = self.k.clone()
        self._step = None  # compiled.prepare_train_step's call, made at the first step

    @property
    def runs(self) -> int:
        return self.params.shape[0]

    def step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training step of every member, in one call: each draws its batch, computes its
        loss and gradients, clips and updates. Returns (loss, gradient norm before clipping,
        finite), ``(R,)`` each."""
        c = self.config
        if self._step is None:  # checked once, then called on the same tensors
            self._step = compiled.prepare_train_step(
                self.params,
                self.m,
                self.v,
                self.steps,
                self.lr,
                self.seeds,
                self.counters,
                self.k,
                H=self.H,
                I=INPUT_SIZE,
                bias=self.bias,
                B=c.batch_size,
                T=c.seq_len,
                truncate=c.truncate,
                grad_clip=c.grad_clip,
                optimizer=c.optimizer,
                threads=c.threads,
            )
        self.trained_k.copy_(self.k)  # the k of the last batch, for last_batch
        loss, norm, finite = self._step()  # overwritten by the next step: copies kept
        return loss.clone(), norm.clone(), finite.clone()

    def set_k(self, ks: list[int]) -> None:
        """Each member trains on ``ks[r]`` from the next step (its curriculum's k)."""
        self.k.copy_(torch.tensor(ks, dtype=torch.int64))

    def select(self, keep: list[int]) -> None:
        """Keep the members ``keep`` (their rows, in that order): the others leave."""
        idx = torch.tensor(keep, dtype=torch.int64)
        for name in ("params", "m", "v", "steps", "lr", "seeds", "counters", "k", "trained_k"):
            setattr(self, name, getattr(self, name).index_select(0, idx))
        self._step = None  # new tensors: the step is prepared again

    # --- what the rest of the package reads --------------------------------------------

    def tensors(self, r: int) -> dict[str, torch.Tensor]:
        """Member r's U, V, w (and b): views of its row."""
        return compiled.unflatten(self.params[r], self.H, INPUT_SIZE, self.bias)

    def model(self, r: int, with_grads: bool = False, alias: bool = False) -> EchoRNN:
        """Member r as an EchoRNN (the bptt backend: the pictures' and the comparison's
        torch kernel) holding a copy of its weights, or with ``alias`` its weights
        themselves (parameters that are views of its row, which every step updates in
        place); with ``with_grads`` the gradients of its last batch, computed again by the
        kernel, as ``.grad``."""
        c = self.config
        model = EchoRNN(
            self.H,
            INPUT_SIZE,
            bias=self.bias,
            init_std=c.init_std,
            backend="bptt",
            input_init_std=c.input_init_std,
            orthogonal_gain=c.orthogonal_gain,
            generator=torch.Generator().manual_seed(0),
        )
        for name, t in self.tensors(r).items():
            if alias:
                setattr(model, name, torch.nn.Parameter(t))
            else:
                with torch.no_grad():
                    getattr(model, name).copy_(t)
        if with_grads and int(self.counters[r]) > 0:
            x, y = self.last_batch(r)
            t = self.tensors(r)
            grads = compiled.forward_backward(
                x[None, :, :, None],
                y[None],
                t["U"][None],
                t["V"][None],
                t["w"][None],
                t["b"][None] if self.bias else None,
                truncate=c.truncate,
            )
            for name in t:
                getattr(model, name).grad = getattr(grads, name)[0].clone()
        return model

    def float64_pass(self, r: int) -> tuple[EchoRNN, torch.Tensor, torch.Tensor, dict]:
        """Member r's weights and last batch in float64, as an EchoRNN, x and y, and the
        gradients the kernel's float64 build computes of them: what is compared with
        autograd (float64 on both sides, so that a difference is the math's, not rounding
        that 50 chaotic float32 steps grow)."""
        model = self.model(r).double()
        x, y = (t.double() for t in self.last_batch(r))
        t = {n: p.detach()[None] for n, p in model.named_parameters()}
        grads = compiled.forward_backward(
            x[None, :, :, None],
            y[None],
            t["U"],
            t["V"],
            t["w"],
            t.get("b"),
            truncate=self.config.truncate,
        )
        return model, x, y, {n: getattr(grads, n)[0] for n in t}

    def last_batch(self, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member r's last training batch, ``(B, T)`` each, drawn again from its stream
        (the weights have moved since: the gradients of it are at the current weights)."""
        c = self.config
        x = compiled.draw_bits(
            int(self.seeds[r]),
            compiled.STREAM_TRAIN,
            int(self.counters[r]) - 1,
            c.batch_size,
            c.seq_len,
        )
        return x, echo_targets(x, int(self.trained_k[r]))

    def model_state(self, r: int) -> dict[str, torch.Tensor]:
        """Member r's weights as ``EchoRNN.state_dict()`` holds them."""
        return {name: t.clone() for name, t in self.tensors(r).items()}

    def optimizer_state(self, r: int) -> dict:
        """Member r's optimizer as ``torch.optim.Adam`` (or SGD) over U, V, w (, b) writes
        its ``state_dict()``: what a checkpoint holds whichever kernel trained the run."""
        c = self.config
        names = list(self.tensors(r))
        groups = optimizer_groups(c, len(names))
        groups[0]["lr"] = float(self.lr[r])
        if c.optimizer == "sgd":
            return {"state": {}, "param_groups": groups}
        m = compiled.unflatten(self.m[r], self.H, INPUT_SIZE, self.bias)
        v = compiled.unflatten(self.v[r], self.H, INPUT_SIZE, self.bias)
        step = torch.tensor(float(self.steps[r]))
        state = (
            {
                i: {"step": step.clone(), "exp_avg": m[n].clone(), "exp_avg_sq": v[n].clone()}
                for i, n in enumerate(names)
            }
            if int(self.steps[r]) > 0
            else {}
        )
        return {"state": state, "param_groups": groups}

    def rng_state(self, r: int) -> torch.Tensor:
        return _counter_bytes(int(self.counters[r]))

    def load(self, r: int, model: dict, optimizer: dict, rng: torch.Tensor) -> None:
        """Member r from a checkpoint's ``model``, ``optimizer`` and ``rng`` tables (checked
        against the run's config by :mod:`echo_rnn.run.checkpoint` before they get here)."""
        names = list(self.tensors(r))
        self.params[r] = compiled.flatten(*(model[n].to(torch.float32) for n in names))
        self.lr[r] = float(optimizer["param_groups"][0]["lr"])
        state = optimizer.get("state", {})
        if self.config.optimizer == "adam" and state:
            self.m[r] = compiled.flatten(*(state[i]["exp_avg"] for i in range(len(names))))
            self.v[r] = compiled.flatten(*(state[i]["exp_avg_sq"] for i in range(len(names))))
            self.steps[r] = int(float(state[0]["step"]))  # Adam's bias correction goes on
        self.counters[r] = counter_of(rng)

    # --- held-out evaluation -----------------------------------------------------------

    def evaluate(
        self, val_x: torch.Tensor, val_y: torch.Tensor, scored_from: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's held-out loss and bit accuracy, ``(R,)`` float64 each, computed by
        the kernel in a fixed order (the same bits on any machine). ``val_x``, ``val_y``:
        ``(R, N, T)``; ``scored_from``: ``(R,)``, the first step scored (the echo step)."""
        return compiled.evaluate(
            self.params, val_x, val_y, scored_from, self.H, INPUT_SIZE, self.bias
        )

    def held_out_metrics(
        self,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        k_end: torch.Tensor,
        val_y_now: torch.Tensor | None = None,
        k_now: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each member's held-out loss and accuracy at its run's echo step ``k_end``, and its
        accuracy at its curriculum's current ``k_now`` on targets ``val_y_now`` (the same
        accuracy, not measured again, when those are not given: every member at its last
        k). ``(R,)`` float64 each."""
        loss, accuracy = self.evaluate(val_x, val_y, k_end)
        at_k = accuracy if val_y_now is None else self.evaluate(val_x, val_y_now, k_now)[1]
        return loss, accuracy, at_k

    def predictions(self, r: int, x: torch.Tensor) -> torch.Tensor:
        """Member r's outputs on ``x`` (N, T): (N, T), the kernel's forward."""
        t = self.tensors(r)
        return compiled.forward(
            x[None, :, :, None],
            t["U"][None],
            t["V"][None],
            t["w"][None],
            t["b"][None] if self.bias else None,
        )[0]
