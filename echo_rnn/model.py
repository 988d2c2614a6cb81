"""The echo RNN as a ``torch.nn.Module``, its cost and its bit accuracy."""

from __future__ import annotations

import hashlib
import inspect

import torch
from torch import nn

from echo_rnn.kernels.bptt import BPTTFunction
from echo_rnn.truncation import starts_window

BACKENDS = ("autograd", "bptt")


class EchoRNN(nn.Module):
    """A vanilla tanh RNN with a linear readout: ``h_t = tanh(U h_{t-1} + V x_t [+ b])``,
    ``yhat_t = w . h_t``.

    Args:
        hidden_size: H.
        input_size: I.
        bias: add the bias ``b`` inside the tanh.
        init_std: every parameter is drawn from N(0, init_std^2), as in the notebook.
        input_init_std: the input weights V are drawn from N(0, input_init_std^2) instead
            (default: init_std).
        orthogonal_gain: U is drawn as this multiple of a random orthogonal matrix instead
            (every singular value equal to the gain; default: U is normal like the rest).
        generator: where the initial parameters are drawn from (default: the global RNG,
            as ``torch.nn`` layers do; pass one to leave the global RNG untouched).
        backend: ``"autograd"`` runs the recurrence as ordinary tensor ops and lets autograd
            differentiate it; ``"bptt"`` runs it through
            :class:`echo_rnn.kernels.bptt.BPTTFunction`, whose backward is the hand-written
            kernel. Both give the same outputs and gradients.

    Parameters: ``U`` (H, H), ``V`` (H, I), ``w`` (H,), and ``b`` (H,) when ``bias=True``.
    """

    def __init__(
        self,
        hidden_size: int = 6,
        input_size: int = 1,
        bias: bool = False,
        init_std: float = 0.1,
        backend: str = "autograd",
        input_init_std: float | None = None,
        orthogonal_gain: float | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("input_size", input_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {init_std!r}")
        if input_init_std is not None and not input_init_std >= 0:
            raise ValueError(f"input_init_std must be >= 0, got {input_init_std!r}")
        if orthogonal_gain is not None and not orthogonal_gain > 0:
            raise ValueError(f"orthogonal_gain must be > 0, got {orthogonal_gain!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.hidden_size = hidden_size
        self.input_size = input_size
        self.init_std = init_std
        self.input_init_std = init_std if input_init_std is None else input_init_std
        self.orthogonal_gain = orthogonal_gain
        self.backend = backend
        self.U = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.V = nn.Parameter(torch.empty(hidden_size, input_size))
        self.w = nn.Parameter(torch.empty(hidden_size))
        self.b = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.reset_parameters(generator)

    @property
    def bias(self) -> bool:
        return self.b is not None

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw every parameter from N(0, init_std^2) (V from N(0, input_init_std^2); U
        orthogonal times orthogonal_gain when that is set)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name == "U" and self.orthogonal_gain is not None:
                    p.copy_(self.orthogonal_gain * random_orthogonal(p, generator))
                    continue
                std = self.input_init_std if name == "V" else self.init_std
                p.normal_(0.0, std, generator=generator)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, input_size={self.input_size}, "
            f"bias={self.bias}, backend={self.backend!r}"
        )

    def check_inputs(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate ``x`` and ``h0`` and return ``x`` as ``(B, T, I)``.

        Raises:
            ValueError: naming the expected and the received shape or dtype.
        """
        H, I = self.hidden_size, self.input_size
        dtype, device = self.U.dtype, self.U.device
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a tensor, got {type(x).__name__}")
        if x.dim() == 2 and I == 1:
            x = x.unsqueeze(-1)  # (B, T) -> (B, T, 1)
        if x.dim() != 3 or x.shape[-1] != I or x.shape[0] == 0 or x.shape[1] == 0:
            expected = "(B, T) or (B, T, 1)" if I == 1 else f"(B, T, {I})"
            raise ValueError(f"x must have shape {expected} with B, T >= 1, got {tuple(x.shape)}")
        if x.dtype != dtype:
            raise ValueError(f"x must have the parameters' dtype {dtype}, got {x.dtype}")
        if x.device != device:
            raise ValueError(f"x must be on the parameters' device {device}, got {x.device}")
        if h0 is not None:
            B = x.shape[0]
            if not isinstance(h0, torch.Tensor) or tuple(h0.shape) != (B, H):
                got = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
                raise ValueError(f"h0 must have shape (B, H) = {(B, H)}, got {got}")
            if h0.dtype != dtype or h0.device != device:
                raise ValueError(
                    f"h0 must have dtype {dtype} on {device}, got {h0.dtype} on {h0.device}"
                )
        return x, h0

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None, *, truncate: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the recurrence.

        Args:
            x: ``(B, T)`` when ``input_size == 1``, or ``(B, T, I)``.
            h0: ``(B, H)``, or None for zeros.
            truncate: k for windowed truncated BPTT: the hidden state entering step t is
                detached whenever t is a positive multiple of k, so no gradient crosses a
                window boundary. The forward values are unchanged.

        Returns:
            ``(y_hat, h_n)``: ``(B, T)`` and ``(B, H)``.
        """
        x, h0 = self.check_inputs(x, h0)
        truncate = check_truncate(truncate)
        if self.backend == "bptt":
            return BPTTFunction.apply(x, h0, self.U, self.V, self.w, self.b, truncate)
        return self._forward_autograd(x, h0, truncate)

    def _forward_autograd(
        self, x: torch.Tensor, h0: torch.Tensor | None, truncate: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        # The input projection does not depend on h, so it is one matmul for all steps.
        pre = torch.matmul(x.transpose(0, 1), self.V.t())  # (T, B, H)
        if self.b is not None:
            pre = pre + self.b
        h = h0 if h0 is not None else x.new_zeros(B, self.hidden_size)
        Ut = self.U.t()
        hs = []
        # unbind, not pre[t]: the backward of T selects would build T full-size zero tensors
        # (quadratic in T); unbind's backward stacks the T slices once.
        for t, pre_t in enumerate(pre.unbind(0)):
            if starts_window(t + 1, truncate):  # t counts from 0 here: step t + 1
                h = h.detach()
            h = torch.tanh(torch.addmm(pre_t, h, Ut))  # (B, H)
            hs.append(h)
        y_hat = torch.matmul(torch.stack(hs, dim=1), self.w)  # (B, T, H) @ (H,) -> (B, T)
        return y_hat, h


def check_truncate(truncate: int | None) -> int | None:
    if truncate is None:
        return None
    if isinstance(truncate, bool) or not isinstance(truncate, int) or truncate <= 0:
        raise ValueError(f"truncate must be a positive integer or None, got {truncate!r}")
    return truncate


def _check_outputs(y_hat: torch.Tensor, y: torch.Tensor) -> None:
    if y_hat.shape != y.shape or y_hat.dim() != 2:
        raise ValueError(
            f"y_hat and y must both be (B, T), got {tuple(y_hat.shape)} and {tuple(y.shape)}"
        )


def echo_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The notebook's cost ``sum_t (yhat_t - y_t)^2 / (2T)``, averaged over the batch.

    Args:
        y_hat, y: ``(B, T)``.

    Returns:
        A 0-dim tensor.
    """
    _check_outputs(y_hat, y)
    B, T = y.shape
    # mean_b sum_t (.)^2 / (2T) == sum_{b,t} (.)^2 / (2TB): one fused op and one backward node.
    return torch.nn.functional.mse_loss(y_hat, y, reduction="sum") / (2 * T * B)


def bit_accuracy(y_hat: torch.Tensor, y: torch.Tensor, echo_step: int) -> torch.Tensor:
    """Fraction of positions ``t >= echo_step`` where ``(y_hat_t > 0.5) == y_t``.

    The first ``echo_step`` targets are padding zeros, not echoes, so they are not scored.
    Returns a 0-dim tensor on the inputs' device (no host sync; call ``.item()`` to read it).
    """
    _check_outputs(y_hat, y)
    if not 0 <= echo_step < y.shape[1]:
        raise ValueError(f"echo_step must be in [0, T) = [0, {y.shape[1]}), got {echo_step}")
    hits = (y_hat[:, echo_step:] > 0.5) == (y[:, echo_step:] > 0.5)
    return hits.float().mean()


def random_orthogonal(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random orthogonal matrix shaped, typed and placed like the square ``like``, uniform
    over the orthogonal group: Q of the QR of a Gaussian matrix, times the signs of R's
    diagonal (without them Q is biased; Mezzadri 2007)."""
    a = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))


def model_from_config(config, seed: int | None = None) -> EchoRNN:
    """The :class:`EchoRNN` a :class:`~echo_rnn.config.TrainConfig` describes (I = 1), drawn
    on the CPU from ``seed`` (default: the config's), so that a seed gives the same weights on
    every device; the global RNG is not touched."""
    gen = torch.Generator().manual_seed(config.seed if seed is None else seed)
    # the module computes with a torch kernel: autograd where the config says so, else the
    # hand-written one (what the compiled kernel's runs are drawn and compared with)
    backend = "autograd" if config.backend == "autograd" else "bptt"
    return EchoRNN(
        config.hidden_size,
        1,
        bias=config.bias,
        init_std=config.init_std,
        backend=backend,
        input_init_std=config.input_init_std,
        orthogonal_gain=config.orthogonal_gain,
        generator=gen,
    )


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """The first 16 hex digits of the SHA-256 of a model's weights (U, V, w, b as float32,
    C order, little-endian, in that order): two runs with the same digest ended with the
    same bits."""
    h = hashlib.sha256()
    for name in ("U", "V", "w", "b"):
        if name in state:
            t = state[name].detach().to("cpu", torch.float32).contiguous()
            h.update(t.numpy().astype("<f4").tobytes())
    return h.hexdigest()[:16]


def make_optimizer(
    config, params, adam: type[torch.optim.Adam] = torch.optim.Adam
) -> torch.optim.Optimizer:
    """The optimizer a :class:`~echo_rnn.config.TrainConfig` trains ``params`` with; what a
    checkpoint's optimizer state is checked against (echo_rnn.run.checkpoint). ``adam``: the
    Adam class to build (a population's, :class:`~echo_rnn.kernels.population.PopulationAdam`)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr)
    # fused: one kernel for the whole update instead of a dozen small ops per step (the
    # optimizer was a sixth of the step). capturable keeps Adam's step count on the device,
    # so that a CUDA graph can replay it.
    return adam(params, lr=config.lr, capturable=config.cuda_graph, fused=config.fused or None)


def optimizer_groups(config, count: int) -> list[dict]:
    """What ``make_optimizer(config, params).state_dict()["param_groups"]`` holds for
    ``count`` parameters, without building the optimizer: a torch optimizer's first
    construction in a process imports torch._dynamo (seconds), which a run of the compiled
    kernel, whose optimizer is in C, has no other reason to pay. The settings are the
    class's own defaults (its signature) with make_optimizer's choices over them."""
    cls = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
    group = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "params")
    }
    group["lr"] = config.lr
    if cls is torch.optim.Adam:
        group.update(capturable=config.cuda_graph, fused=config.fused or None)
    return [{**group, "params": list(range(count))}]


def to_nn_rnn(model: EchoRNN) -> tuple[nn.RNN, nn.Linear]:
    """``torch.nn.RNN(tanh, batch_first=True)`` and a bias-free ``nn.Linear(H, 1)`` readout
    holding ``model``'s weights (U -> weight_hh_l0, V -> weight_ih_l0, b -> bias_ih_l0 with
    bias_hh_l0 = 0, w -> the readout's row), on its device and in its dtype: the same
    function, computed by PyTorch's own RNN (cuDNN on a GPU)."""
    like = {"device": model.U.device, "dtype": model.U.dtype}
    rnn = nn.RNN(
        model.input_size,
        model.hidden_size,
        nonlinearity="tanh",
        bias=model.bias,
        batch_first=True,
        **like,
    )
    lin = nn.Linear(model.hidden_size, 1, bias=False, **like)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(model.U)
        rnn.weight_ih_l0.copy_(model.V)
        lin.weight.copy_(model.w.unsqueeze(0))
        if model.bias:
            rnn.bias_ih_l0.copy_(model.b)
            rnn.bias_hh_l0.zero_()
    return rnn, lin
