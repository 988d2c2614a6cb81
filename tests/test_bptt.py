"""The hand-written kernel against its witnesses: autograd, finite differences (gradcheck)."""

import itertools

import pytest
import torch

import echo_rnn.kernels.bptt as bptt
from conftest import DEVICES
from echo_rnn.compare import (
    KERNELS_REL_F64,
    SCALE_ATOL_F64,
    TOLERANCES,
    autograd_grads,
    autograd_hidden_grads,
    compare_grads,
    manual_grads,
    run_gradcheck,
)
from echo_rnn.kernels import reference
from echo_rnn.kernels.bptt import BPTTFunction
from echo_rnn.model import EchoRNN

# The tolerances, with their reasons, are the package's one table (echo_rnn/compare.py).
RTOL = TOLERANCES[torch.float64].rtol
ATOL_REL = SCALE_ATOL_F64


def assert_grad_close(ours, ref, name=""):
    atol = ATOL_REL * max(ref.abs().max().item(), 1e-300)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=atol, msg=lambda s: f"{name}: {s}")


# A covering set, not the full product (576 cases, which repeated the same structure at
# every size). The structure, T x truncation x h_0 x bias, decides which terms of the
# recurrence exist and which cross a window's start: it is run in full (48 cases). The sizes
# B x H x I only change shapes: each of their 12 combinations is met by every T once (the
# stride 5 is prime to 12, so 12 consecutive cases take all 12).
STRUCTURE = list(itertools.product([1, 2, 7, 50], [None, 1, 3], [False, True], [False, True]))
SIZES = list(itertools.product([1, 3], [1, 6, 16], [1, 3]))  # B, H, I
GRID = [
    (*SIZES[(i * 5) % len(SIZES)], T, tr, h0, bias) for i, (T, tr, h0, bias) in enumerate(STRUCTURE)
]
GRID = [(B, T, H, I, bias, h0, tr) for B, H, I, T, tr, h0, bias in GRID]
GRID_IDS = [
    f"B{b}-T{t}-H{h}-I{i}-bias{int(bi)}-h0{int(h0)}-tr{tr}" for b, t, h, i, bi, h0, tr in GRID
]


def _problem(B, T, H, I, bias, with_h0, seed=0, device="cpu"):
    """A float64 model with non-zero weights large enough that tanh is far from linear."""
    g = torch.Generator(device=device).manual_seed(seed)
    m = EchoRNN(H, I, bias=bias, init_std=0.5).to(device=device, dtype=torch.float64)
    m.reset_parameters(generator=g)
    kw = {"dtype": torch.float64, "device": device, "generator": g}
    x = torch.randn(B, T, I, **kw)
    y = torch.rand(B, T, **kw)
    h0 = torch.randn(B, H, **kw) if with_h0 else None
    return m, x, y, h0


@pytest.mark.parametrize("B, T, H, I, bias, with_h0, truncate", GRID, ids=GRID_IDS)
def test_both_kernels_equal_autograd_and_each_other(B, T, H, I, bias, with_h0, truncate):
    m, x, y, h0 = _problem(B, T, H, I, bias, with_h0)
    ref = autograd_grads(m, x, y, h0, truncate)
    got = {k: manual_grads(m, x, y, h0, truncate, kernel=k) for k in ("reference", "fast")}
    for kernel, ours in got.items():
        assert list(ours) == [n for n, _ in m.named_parameters()] + (["h0"] if with_h0 else [])
        for name in ref:
            assert_grad_close(ours[name], ref[name], f"{kernel} {name}")
    for name in ref:
        fast, reading = got["fast"][name], got["reference"][name]
        scale = max(reading.abs().max().item(), 1e-300)
        torch.testing.assert_close(
            fast,
            reading,
            rtol=KERNELS_REL_F64,
            atol=KERNELS_REL_F64 * scale,
            msg=lambda s, name=name: f"fast vs reference {name}: {s}",
        )


@pytest.mark.parametrize("B, T, H, I, bias, with_h0, truncate", GRID, ids=GRID_IDS)
def test_function_equals_autograd_under_random_upstream(B, T, H, I, bias, with_h0, truncate):
    """Push random upstream gradients into both outputs, as llm.c does, and compare the
    gradients of every input: x, h0 and the parameters."""
    m, x, _, h0 = _problem(B, T, H, I, bias, with_h0, seed=1)
    g = torch.Generator().manual_seed(2)
    gy = torch.randn(B, T, dtype=torch.float64, generator=g)
    gh = torch.randn(B, H, dtype=torch.float64, generator=g)
    results = []
    for backend in ("autograd", "bptt"):
        m.backend = backend
        xs = x.clone().requires_grad_(True)
        h0s = h0.clone().requires_grad_(True) if with_h0 else None
        y_hat, h_n = m(xs, h0s, truncate=truncate)
        inputs = [xs] + ([h0s] if with_h0 else []) + list(m.parameters())
        results.append(torch.autograd.grad((y_hat * gy).sum() + (h_n * gh).sum(), inputs))
    for ref, ours in zip(*results):
        assert_grad_close(ours, ref)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("I", [1, 2])
def test_gradcheck_finite_differences(bias, with_h0, I):
    m, x, _, h0 = _problem(2, 5, 3, I, bias, with_h0)
    passed, fast, msg = run_gradcheck(m, x, h0, fast_mode=False)
    assert (passed, fast, msg) == (True, False, "passed")


def test_gradcheck_directly_on_the_function_with_only_h_n_used():
    m, x, _, h0 = _problem(2, 4, 3, 1, True, True)
    leaves = [t.clone().requires_grad_(True) for t in (x, h0, m.U, m.V, m.w, m.b)]
    # Only h_n feeds the loss: the backward must cope with an absent y_hat gradient.
    fn = lambda *a: BPTTFunction.apply(*a, None)[1]  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves)


def test_witnesses_catch_a_wrong_kernel(monkeypatch):
    """A kernel with the notebook's sign error must fail both autograd and gradcheck."""
    m, x, y, h0 = _problem(2, 6, 4, 1, False, False)
    real = bptt.bptt_backward

    def flipped(*args, **kwargs):
        grads = real(*args, **kwargs)
        grads.U = -grads.U
        return grads

    monkeypatch.setattr(bptt, "bptt_backward", flipped)
    rows = compare_grads(manual_grads(m, x, y, kernel="fast"), autograd_grads(m, x, y))
    assert [r.name for r in rows if not r.agrees] == ["U"]
    assert run_gradcheck(m, x, fast_mode=False)[0] is False
    assert run_gradcheck(m, x, fast_mode=True)[0] is False


def test_witnesses_catch_a_wrong_reference_step(monkeypatch):
    """The reference kernel with tanh' missing fails autograd and finite differences."""
    import echo_rnn.kernels.reference as reference

    m, x, y, h0 = _problem(2, 6, 4, 1, True, False)

    def no_tanh_derivative(dh, cache):
        return reference.StepGrads(
            x=dh @ cache.V,
            h_prev=dh @ cache.U,
            U=dh.T @ cache.h_prev,
            V=dh.T @ cache.x,
            b=dh.sum(0),
        )

    monkeypatch.setattr(reference, "step_backward", no_tanh_derivative)
    rows = compare_grads(manual_grads(m, x, y, kernel="reference"), autograd_grads(m, x, y))
    assert {r.name for r in rows if not r.agrees} == {"U", "V", "b"}  # w needs no tanh'
    assert run_gradcheck(m, x, kernel="reference", fast_mode=False)[0] is False


def test_truncate_at_or_beyond_T_is_full_bptt():
    m, x, y, _ = _problem(2, 7, 4, 1, True, False)
    full = manual_grads(m, x, y)
    for k in (7, 100):
        for name, g in manual_grads(m, x, y, truncate=k).items():
            torch.testing.assert_close(g, full[name], rtol=0, atol=0)
    # and truncation really cuts: with k=1 the U gradient differs
    assert not torch.allclose(manual_grads(m, x, y, truncate=1)["U"], full["U"])


def test_double_backward_raises_clearly():
    m, x, y, _ = _problem(2, 5, 3, 1, False, False)
    m.backend = "bptt"
    y_hat, _ = m(x)
    (gU,) = torch.autograd.grad(((y_hat - y) ** 2).sum(), m.U, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gU.sum().backward()


def test_manual_grads_rejects_wrong_target_shape():
    m, x, y, _ = _problem(2, 5, 3, 1, False, False)
    with pytest.raises(ValueError, match=r"y must have shape \(B, T\) = \(2, 5\), got \(2, 4\)"):
        manual_grads(m, x, y[:, :4])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("truncate", [None, 4])
def test_kernel_on_device(device, dtype, truncate):
    m, x, y, h0 = _problem(3, 20, 8, 2, True, True, device=device)
    m, x, y, h0 = m.to(dtype), x.to(dtype), y.to(dtype), h0.to(dtype)
    ref = autograd_grads(m, x, y, h0, truncate)
    for kernel in ("reference", "fast"):
        ours = manual_grads(m, x, y, h0, truncate, kernel=kernel)
        for name in ref:
            assert ours[name].device.type == device
            if dtype == torch.float64:
                assert_grad_close(ours[name], ref[name], f"{kernel} {name}")
            else:
                tol = TOLERANCES[torch.float32]
                torch.testing.assert_close(ours[name], ref[name], rtol=tol.rtol, atol=tol.atol)
        if dtype == torch.float64:
            assert run_gradcheck(m, x, h0, kernel=kernel, fast_mode=True)[0]


def _retained_dh(m, x, y, h0=None, truncate=None):
    """Autograd's dJ/dh_t, from a loop written here (not the package's forward): every h_t
    retains its gradient; with truncate, the state is detached where a window starts."""
    B, T, _ = x.shape
    h = h0 if h0 is not None else x.new_zeros(B, m.hidden_size)
    hs = []
    for t in range(T):
        if truncate is not None and t > 0 and t % truncate == 0:
            h = h.detach()
        pre = h @ m.U.T + x[:, t] @ m.V.T + (m.b if m.b is not None else 0)
        h = torch.tanh(pre)
        h.retain_grad()
        hs.append(h)
    y_hat = torch.stack([s @ m.w for s in hs], dim=1)
    ((y_hat - y) ** 2).sum(1).div(2 * T).mean().backward()
    return torch.stack([s.grad for s in hs], dim=1)


@pytest.mark.parametrize("B, T, H, I, bias, with_h0, truncate", GRID, ids=GRID_IDS)
def test_both_kernels_give_dJ_dh_t_of_every_step(B, T, H, I, bias, with_h0, truncate):
    m, x, y, h0 = _problem(B, T, H, I, bias, with_h0)
    retained = _retained_dh(m, x, y, h0, truncate)
    with torch.no_grad():
        p = dict(m.named_parameters())
        y_hat, _, caches = reference.forward(x, p["U"], p["V"], p["w"], p.get("b"), h0)
        dy = (y_hat - y) / (B * T)
        reading = reference.backward(dy, caches, p["w"], truncate).h
        _, _, cache = bptt.bptt_forward(x, p["U"], p["V"], p["w"], p.get("b"), h0)
        fast = bptt.bptt_backward(dy, cache, truncate=truncate, need_h=True).h
    assert reading.shape == fast.shape == (B, T, H)
    assert_grad_close(reading, retained, "reference dh")
    assert_grad_close(fast, retained, "fast dh")
    for kernel in ("reference", "fast"):
        helper = manual_grads(m, x, y, h0, truncate, kernel=kernel, hidden=True)["dh"]
        assert_grad_close(helper, retained, f"manual_grads {kernel} dh")
    if truncate is None:  # autograd's helper: full BPTT only
        assert_grad_close(autograd_hidden_grads(m, x, y, h0), retained, "autograd helper")


def test_dJ_dh_t_takes_the_final_states_upstream_gradient():
    m, x, y, h0 = _problem(2, 6, 3, 1, False, True)
    dh_n = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        p = dict(m.named_parameters())
        y_hat, _, caches = reference.forward(x, p["U"], p["V"], p["w"], None, h0)
        dy = (y_hat - y) / 12
        reading = reference.backward(dy, caches, p["w"], dh_T=dh_n).h
        _, _, cache = bptt.bptt_forward(x, p["U"], p["V"], p["w"], None, h0)
        fast = bptt.bptt_backward(dy, cache, dh_n, need_h=True).h
    torch.testing.assert_close(fast, reading, rtol=KERNELS_REL_F64, atol=1e-15)
    without = reference.backward(dy, caches, p["w"]).h
    torch.testing.assert_close(reading[:, -1] - without[:, -1], dh_n)
