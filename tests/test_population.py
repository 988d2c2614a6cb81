"""The population kernel against its witnesses: per member, the single-run fast kernel
(echo_rnn.kernels.bptt) and autograd on the member's own EchoRNN."""

import itertools

import pytest
import torch

from echo_rnn.compare import KERNELS_REL_F64, SCALE_ATOL_F64, TOLERANCES, autograd_grads
from echo_rnn.data import make_echo_batch
from echo_rnn.kernels import bptt
from echo_rnn.kernels.population import (
    PopulationRNN,
    clip_grad_norms_,
    population_accuracy,
    population_backward,
    population_forward,
    population_grads,
    population_loss,
)
from echo_rnn.model import EchoRNN, bit_accuracy, echo_loss

R = 3  # members per population: enough for a first, a middle and a last run

# test_bptt.py's covering set without h_0 (a population starts from zeros): the structure,
# T x truncation x bias, in full; each B x H x I combination met by every T once.
STRUCTURE = list(itertools.product([1, 2, 7, 50], [None, 1, 3], [False, True]))
SIZES = list(itertools.product([1, 3], [1, 6, 16], [1, 3]))  # B, H, I
GRID = [(*SIZES[(i * 5) % len(SIZES)], T, tr, bias) for i, (T, tr, bias) in enumerate(STRUCTURE)]
GRID = [(B, T, H, I, bias, tr) for B, H, I, T, tr, bias in GRID]
GRID_IDS = [f"B{b}-T{t}-H{h}-I{i}-bias{int(bi)}-tr{tr}" for b, t, h, i, bi, tr in GRID]


def _members(B, T, H, I, bias, dtype=torch.float64):
    """R float64 models from different seeds, each with its own data; with I == 1, each
    member echoes at its own step k (different targets), else random targets."""
    models, xs, ys = [], [], []
    for r in range(R):
        g = torch.Generator().manual_seed(10 + r)
        m = EchoRNN(H, I, bias=bias, init_std=0.5, backend="bptt", generator=g).to(dtype)
        if I == 1:
            x, y = make_echo_batch(B, T, r % T, generator=g, dtype=dtype)
            # noise on the bits, so that no input is exactly 0 and every product is exercised
            x = (x + 0.1 * torch.randn(B, T, generator=g, dtype=dtype)).view(B, T, 1)
        else:
            x = torch.randn(B, T, I, generator=g, dtype=dtype)
            y = torch.rand(B, T, generator=g, dtype=dtype)
        models.append(m)
        xs.append(x)
        ys.append(y)
    return models, torch.stack(xs), torch.stack(ys)  # x (R, B, T, I), y (R, B, T)


def _stacked(models):
    return {
        name: torch.stack([getattr(m, name).detach() for m in models])
        for name, _ in models[0].named_parameters()
    }


def _single_run_kernel(m, x, y, truncate):
    """The fast kernel's gradients of one member's echo cost, keyed like its parameters."""
    p = {name: t.detach() for name, t in m.named_parameters()}
    B, T, _ = x.shape
    y_hat, _, cache = bptt.bptt_forward(x, p["U"], p["V"], p["w"], p.get("b"))
    grads = bptt.bptt_backward((y_hat - y) / (B * T), cache, truncate=truncate, need_b="b" in p)
    return y_hat, {name: getattr(grads, name) for name in p}


def _assert_close(ours, ref, rel, name):
    scale = max(ref.abs().max().item(), 1e-300)
    torch.testing.assert_close(
        ours, ref, rtol=rel, atol=max(rel, SCALE_ATOL_F64) * scale, msg=lambda s: f"{name}: {s}"
    )


@pytest.mark.parametrize("B, T, H, I, bias, truncate", GRID, ids=GRID_IDS)
def test_every_member_equals_the_single_run_kernel_and_autograd(B, T, H, I, bias, truncate):
    models, x, y = _members(B, T, H, I, bias)
    P = _stacked(models)
    y_hat, cache = population_forward(x, P["U"], P["V"], P["w"], P.get("b"))
    grads = population_backward((y_hat - y) / (B * T), cache, truncate, need_b=bias)
    assert y_hat.shape == (R, B, T)
    for r, m in enumerate(models):
        single_y_hat, single = _single_run_kernel(m, x[r], y[r], truncate)
        # The same sums in the same order per member: equal up to float64 rounding.
        _assert_close(y_hat[r], single_y_hat, KERNELS_REL_F64, f"member {r} y_hat")
        ref = autograd_grads(m, x[r], y[r], truncate=truncate)
        for name in single:
            ours = getattr(grads, name)[r]
            _assert_close(ours, single[name], KERNELS_REL_F64, f"member {r} {name} vs bptt")
            _assert_close(
                ours, ref[name], TOLERANCES[torch.float64].rtol, f"member {r} {name} vs autograd"
            )
    # The members really differ, so a kernel that mixed runs up would fail above.
    assert not torch.allclose(grads.w[0], grads.w[1])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("truncate", [None, 3])
def test_function_fills_the_population_grads_with_the_single_run_kernels(bias, truncate):
    B, T, H, I = 4, 9, 5, 1
    models, x, y = _members(B, T, H, I, bias)
    pop = PopulationRNN.from_models(models)
    loss = population_loss(pop(x.squeeze(-1), truncate=truncate), y)
    assert loss.shape == (R,)
    loss.sum().backward()
    for r, m in enumerate(models):
        single_y_hat, single = _single_run_kernel(m, x[r], y[r], truncate)
        _assert_close(loss[r].detach(), echo_loss(single_y_hat, y[r]), KERNELS_REL_F64, f"J_{r}")
        for name, p in pop.named_parameters():
            _assert_close(p.grad[r], single[name], KERNELS_REL_F64, f"member {r} {name}.grad")


def test_input_gradient_equals_autograd_under_random_upstream():
    B, T, H, I = 3, 7, 4, 2
    models, x, _ = _members(B, T, H, I, bias=True)
    pop = PopulationRNN.from_models(models)
    gy = torch.randn(R, B, T, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    xs = x.clone().requires_grad_(True)
    (dx,) = torch.autograd.grad((pop(xs, truncate=3) * gy).sum(), xs)
    for r, m in enumerate(models):
        m.backend = "autograd"
        xr = x[r].clone().requires_grad_(True)
        (ref,) = torch.autograd.grad((m(xr, truncate=3)[0] * gy[r]).sum(), xr)
        _assert_close(dx[r], ref, TOLERANCES[torch.float64].rtol, f"member {r} x")


def test_from_models_and_member_round_trip_exactly():
    models, _, _ = _members(2, 5, 4, 1, bias=True)
    pop = PopulationRNN.from_models(models)
    assert pop.runs == R
    assert {n: tuple(p.shape) for n, p in pop.named_parameters()} == {
        "U": (R, 4, 4),
        "V": (R, 4, 1),
        "w": (R, 4),
        "b": (R, 4),
    }
    for r, m in enumerate(models):
        back = pop.member(r)
        for name, p in m.named_parameters():
            assert torch.equal(getattr(back, name), p), f"member {r} {name}"
    with pytest.raises(ValueError, match=r"models\[1\] has \(H, I, bias, dtype, device\)"):
        PopulationRNN.from_models([models[0], EchoRNN(3, 1, bias=True).double()])


def test_shapes_are_checked_with_their_names():
    models, x, _ = _members(2, 5, 4, 1, bias=False)
    P = _stacked(models)
    with pytest.raises(ValueError, match=r"U must have shape \(3, 4, 4\)"):
        population_forward(x, P["U"][:2], P["V"], P["w"])
    with pytest.raises(ValueError, match=r"x must have shape \(R, B, T\) or \(R, B, T, 1\)"):
        PopulationRNN.from_models(models)(x[:2])


def test_per_member_clipping_equals_clip_grad_norm_of_each_member():
    models, x, y = _members(4, 9, 5, 1, bias=True)
    pop = PopulationRNN.from_models(models)
    population_loss(pop(x), y).sum().backward()
    max_norm = 0.5 * min(
        torch.linalg.vector_norm(torch.cat([p.grad[r].flatten() for p in pop.parameters()])).item()
        for r in range(R)
    )  # every member is clipped
    for r, m in enumerate(models):
        for name, p in m.named_parameters():
            p.grad = getattr(pop, name).grad[r].clone()
    norms = clip_grad_norms_(pop, max_norm)
    for r, m in enumerate(models):
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm)
        assert torch.equal(norms[r], norm), f"member {r}: {norms[r].item()} vs {norm.item()}"
        for name, p in m.named_parameters():
            assert torch.equal(getattr(pop, name).grad[r], p.grad), f"member {r} {name}"


def test_frontier_training_is_bit_identical_to_single_runs():
    """At the frontier preset's shape, in float32 on one CPU thread, R population steps
    (unfused Adam, per-member clipping) reproduce R single runs bit for bit: every batched
    product is, per member, the BLAS call the single-run kernel makes. (Not so below
    B H^2 = 400, where ATen's baddbmm uses its own loop: see the module docstring.)"""
    B, T, H, steps = 64, 50, 6, 3

    def model(r):
        return EchoRNN(
            H,
            1,
            init_std=0.3,
            input_init_std=1.5,
            backend="bptt",
            generator=torch.Generator().manual_seed(r),
        )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        singles = [model(r) for r in range(R)]
        pop = PopulationRNN.from_models([model(r) for r in range(R)])
        opts = [torch.optim.Adam(m.parameters(), lr=0.005, fused=False) for m in singles]
        pop_opt = torch.optim.Adam(pop.parameters(), lr=0.005, fused=False)
        gens = [torch.Generator().manual_seed(100 + r) for r in range(R)]
        for _ in range(steps):
            batches = [make_echo_batch(B, T, 2 + r, generator=g) for r, g in enumerate(gens)]
            for m, opt, (x, y) in zip(singles, opts, batches):
                opt.zero_grad()
                echo_loss(m(x)[0], y).backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt.step()
            x, y = (torch.stack(t) for t in zip(*batches))
            pop_opt.zero_grad()
            population_loss(pop(x), y).sum().backward()
            clip_grad_norms_(pop, 1.0)
            pop_opt.step()
    finally:
        torch.set_num_threads(threads)
    for r, m in enumerate(singles):
        for name, p in m.named_parameters():
            diff = (getattr(pop, name)[r] - p).abs().max().item()
            assert diff == 0, f"member {r} {name}: max abs diff {diff:.3g} after {steps} steps"


@pytest.mark.parametrize(
    "B,H",
    [
        (8, 2),
        (8, 7),
        (32, 3),
        (64, 2),
        (64, 6),
        (32, 12),
        (1, 6),
        (1, 19),
        (1, 24),
        (2, 3),
        (4, 6),
        (2, 16),
    ],
)
def test_every_shape_rounds_like_the_single_run_kernel(B, H):
    # Below B H^2 = 400 ATen's baddbmm uses a loop of its own instead of BLAS: bptt makes the
    # same call on a batch of one there (B > 1), or the population loops over runs (B = 1).
    # Before: members were an ulp away from bptt's addmm (a 2-unit capacity sweep at B = 64).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(B * 100 + H)
        R, T = 3, 20
        x = (torch.rand(R, B, T, 1, generator=g) > 0.5).float()
        U, V = torch.randn(R, H, H, generator=g) * 0.4, torch.randn(R, H, 1, generator=g)
        w, b, dy = (
            torch.randn(R, H, generator=g),
            torch.randn(R, H, generator=g),
            torch.randn(R, B, T, generator=g),
        )
        y_hat, cache = population_forward(x, U, V, w, b)
        grads = population_backward(dy, cache, need_b=True)
        for r in range(R):
            y1, _, c1 = bptt.bptt_forward(x[r], U[r], V[r], w[r], b[r])
            g1 = bptt.bptt_backward(dy[r], c1, need_b=True)
            assert torch.equal(y_hat[r], y1), r
            for name in "UVwb":
                assert torch.equal(getattr(grads, name)[r], getattr(g1, name)), (r, name)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "bias,truncate,dtype",
    [(True, None, torch.float32), (False, 7, torch.float32), (True, None, torch.float64)],
)
def test_population_grads_is_the_autograd_pass_bit_for_bit(bias, truncate, dtype):
    # training takes this path: the same losses and .grad as population_loss(...).backward()
    R, B, T, H = 5, 16, 20, 6
    g = torch.Generator().manual_seed(11)
    models = [
        EchoRNN(H, 1, bias=bias, backend="bptt", generator=torch.Generator().manual_seed(r)).to(
            dtype
        )
        for r in range(R)
    ]
    x = (torch.rand(R, B, T, generator=g) < 0.5).to(dtype)
    y = torch.roll(x, 3, dims=2)
    auto, direct = PopulationRNN.from_models(models), PopulationRNN.from_models(models)
    want = population_loss(auto(x, truncate=truncate), y)
    want.sum().backward()
    got = population_grads(direct, x, y, truncate)
    assert torch.equal(got, want.detach())
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    for (name, p), q in zip(auto.named_parameters(), direct.parameters()):
        # the same bits, not only equal numbers (the sign of a zero included)
        assert torch.equal(q.grad.view(-1).view(bits), p.grad.view(-1).view(bits)), name


def test_each_runs_loss_is_echo_loss_to_the_bit():
    # the population logs these as each run's training and held-out loss: they must be train's
    g = torch.Generator().manual_seed(3)
    for R, B, T in ((2, 64, 50), (32, 64, 50), (3, 8, 20), (4, 1, 7), (5, 256, 50), (3, 100, 13)):
        y_hat = torch.randn(R, T, B, generator=g).transpose(1, 2)  # T-major, as the kernel's
        y = (torch.rand(R, B, T, generator=g) > 0.5).float()
        want = torch.stack([echo_loss(y_hat[r], y[r]) for r in range(R)])
        assert torch.equal(population_loss(y_hat, y), want), (R, B, T)


def test_each_runs_accuracy_is_bit_accuracy_to_the_bit():
    # the held-out accuracy decides when a member is solved: it must be train's
    g = torch.Generator().manual_seed(4)
    for R, B, T in ((6, 256, 50), (3, 7, 13), (2, 1, 5)):
        ks = [int(k) for k in torch.randint(0, T, (R,), generator=g)]
        y_hat = torch.rand(R, B, T, generator=g)
        y = (torch.rand(R, B, T, generator=g) > 0.5).float()
        echoed = torch.arange(T).view(1, 1, T) >= torch.tensor(ks).view(R, 1, 1)
        want = torch.stack([bit_accuracy(y_hat[r], y[r], ks[r]) for r in range(R)])
        assert torch.equal(population_accuracy(y_hat, y, echoed), want), (R, B, T, ks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_population_step_captures_in_a_cuda_graph_and_replays_like_eager():
    """The population's training step (forward, per-run losses, backward, per-run clipping,
    Adam) is capturable: no host sync, no allocation outside the graph's pool. Replayed on
    new data it gives what the eager step gives."""
    R, B, T, H = 4, 16, 12, 6
    dev = torch.device("cuda")

    def make():
        pop = PopulationRNN.from_models(
            [
                EchoRNN(H, 1, bias=True, backend="bptt", generator=torch.Generator().manual_seed(r))
                for r in range(R)
            ]
        ).to(dev)
        return pop, torch.optim.Adam(pop.parameters(), lr=0.01, capturable=True)

    def step(pop, opt, x, y):  # the trainer's step (echo_rnn.engine.population_train)
        losses = population_grads(pop, x, y)
        norms = clip_grad_norms_(pop, 1.0)
        opt.step()
        return losses, norms

    g = torch.Generator(device=dev).manual_seed(0)
    data = [(torch.rand(R, B, T, generator=g, device=dev) < 0.5).float() for _ in range(4)]
    data = [(x, torch.roll(x, 2, dims=2)) for x in data]
    eager, eager_opt = make()
    want = [step(eager, eager_opt, x, y) for x, y in data]

    graphed, opt = make()
    sx, sy = data[0][0].clone(), data[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream: grads and Adam's state exist
        for _ in range(3):
            step(graphed, opt, sx, sy)
    torch.cuda.current_stream().wait_stream(side)
    start, _ = make()
    with torch.no_grad():  # then back to where the eager run started
        for p, q in zip(graphed.parameters(), start.parameters()):
            p.copy_(q)
        for s in opt.state.values():
            for v in s.values():
                v.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # records, runs nothing
        out = step(graphed, opt, sx, sy)
    for (x, y), (loss, norms) in zip(data, want):
        sx.copy_(x)
        sy.copy_(y)
        graph.replay()
        torch.testing.assert_close(out[0], loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[1], norms, rtol=1e-5, atol=1e-6)
    for p, q in zip(graphed.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
