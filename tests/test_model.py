import pytest
import torch

from conftest import DEVICES
from echo_rnn.compare import TOLERANCES
from echo_rnn.model import EchoRNN, bit_accuracy, echo_loss, random_orthogonal, to_nn_rnn


def test_parameter_names_shapes_and_init():
    torch.manual_seed(0)
    m = EchoRNN(hidden_size=5, input_size=3, bias=True, init_std=0.1)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {"U": (5, 5), "V": (5, 3), "w": (5,), "b": (5,)}
    assert [n for n, _ in EchoRNN().named_parameters()] == ["U", "V", "w"]
    big = EchoRNN(hidden_size=200, init_std=0.1)
    assert 0.09 < big.U.std().item() < 0.11  # 40000 draws of N(0, 0.01)


def test_input_weights_can_have_their_own_scale():
    torch.manual_seed(0)
    m = EchoRNN(hidden_size=100, input_size=100, init_std=0.1, input_init_std=1.5)
    assert 1.45 < m.V.std().item() < 1.55 and 0.09 < m.U.std().item() < 0.11
    with pytest.raises(ValueError, match="input_init_std"):
        EchoRNN(input_init_std=-1.0)


@pytest.mark.parametrize("gain", [0.5, 1.2])
def test_orthogonal_recurrent_weights_have_every_singular_value_equal_to_the_gain(gain):
    m = EchoRNN(hidden_size=8, init_std=0.3, orthogonal_gain=gain)
    m.reset_parameters(generator=torch.Generator().manual_seed(3))
    U = m.U.detach().double()
    torch.testing.assert_close(
        U.t() @ U, gain**2 * torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-5
    )
    assert 0.1 < m.V.std().item() < 0.6  # the rest stays normal
    again = EchoRNN(hidden_size=8, init_std=0.3, orthogonal_gain=gain)
    again.reset_parameters(generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.U, m.U)  # reproducible from the seed
    with pytest.raises(ValueError, match="orthogonal_gain"):
        EchoRNN(orthogonal_gain=0.0)


@pytest.mark.slow  # seconds: the quick tier stays under a minute
def test_random_orthogonal_is_not_biased_towards_a_positive_diagonal():
    # Q of a plain QR has a skewed diagonal; with R's signs folded in, each diagonal entry of a
    # uniform orthogonal matrix is symmetric about 0.
    like = torch.empty(4, 4, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    diag = torch.stack([torch.diagonal(random_orthogonal(like, g)) for _ in range(4000)])
    assert diag.mean().abs() < 0.03


def test_echo_loss_is_the_notebook_cost_for_one_sequence():
    yh = torch.tensor([[0.2, 0.9, -0.1, 0.5]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    notebook = sum((1 / (2 * 4)) * (a - b) ** 2 for a, b in zip(yh[0].tolist(), y[0].tolist()))
    assert echo_loss(yh, y).item() == pytest.approx(notebook, rel=1e-15)


def test_echo_loss_averages_over_the_batch():
    yh = torch.rand(3, 6, dtype=torch.float64)
    y = torch.rand(3, 6, dtype=torch.float64)
    per_seq = [echo_loss(yh[i : i + 1], y[i : i + 1]).item() for i in range(3)]
    assert echo_loss(yh, y).item() == pytest.approx(sum(per_seq) / 3, rel=1e-14)


def test_bit_accuracy_skips_the_first_k_positions():
    y = torch.tensor([[0.0, 0.0, 1.0, 0.0, 1.0]])
    yh = torch.tensor([[0.9, 0.9, 0.7, 0.6, 0.1]])  # right at t=2 only among t >= 2
    assert bit_accuracy(yh, y, 2).item() == pytest.approx(1 / 3)
    assert bit_accuracy(yh, y, 0).item() == pytest.approx(1 / 5)


def _nn_rnn_copy(m: EchoRNN):
    return to_nn_rnn(m)


@pytest.mark.parametrize("backend", ["autograd", "bptt"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("I", [1, 3])
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_torch_nn_rnn_outputs_and_gradients(backend, bias, I, with_h0):
    torch.manual_seed(0)
    B, T, H = 3, 11, 6
    m = EchoRNN(H, I, bias=bias, init_std=0.4, backend=backend).double()
    rnn, lin = _nn_rnn_copy(m)
    x = torch.randn(B, T, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64) if with_h0 else None
    y = torch.rand(B, T, dtype=torch.float64)

    y_hat, h_n = m(x, h0)
    out, h_ref = rnn(x, h0.unsqueeze(0) if with_h0 else None)
    y_ref = lin(out).squeeze(-1)
    torch.testing.assert_close(y_hat, y_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(h_n, h_ref[0], rtol=1e-12, atol=1e-14)

    echo_loss(y_hat, y).backward()
    echo_loss(y_ref, y).backward()
    pairs = [(m.U, rnn.weight_hh_l0), (m.V, rnn.weight_ih_l0), (m.w, lin.weight)]
    if bias:
        pairs.append((m.b, rnn.bias_ih_l0))
    for ours, theirs in pairs:
        tol = TOLERANCES[torch.float64]
        torch.testing.assert_close(
            ours.grad, theirs.grad.reshape(ours.shape), rtol=tol.rtol, atol=tol.atol
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"input_size": -2}, "input_size"),
        ({"backend": "jax"}, "backend must be one of autograd, bptt"),
        ({"init_std": -1.0}, "init_std"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EchoRNN(**kwargs)


@pytest.mark.parametrize("backend", ["autograd", "bptt"])
def test_bad_inputs_name_expected_and_received(backend):
    m = EchoRNN(hidden_size=4, input_size=2, backend=backend)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 2\).*got \(3, 5\)"):
        m(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"x must have shape .* got \(3, 5, 1\)"):
        m(torch.zeros(3, 5, 1))
    with pytest.raises(ValueError, match=r"x must have shape .* got \(3, 0, 2\)"):
        m(torch.zeros(3, 0, 2))
    with pytest.raises(ValueError, match=r"dtype torch.float32, got torch.float64"):
        m(torch.zeros(3, 5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\) = \(3, 4\), got \(3, 5\)"):
        m(torch.zeros(3, 5, 2), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="truncate"):
        m(torch.zeros(3, 5, 2), truncate=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backends_agree_on_device(device, dtype):
    torch.manual_seed(0)
    a = EchoRNN(8, bias=True, init_std=0.3).to(device=device, dtype=dtype)
    b = EchoRNN(8, bias=True, init_std=0.3, backend="bptt").to(device=device, dtype=dtype)
    b.load_state_dict(a.state_dict())
    x = (torch.rand(4, 30, device=device) < 0.5).to(dtype)
    y = torch.rand(4, 30, device=device, dtype=dtype)
    for m in (a, b):
        echo_loss(m(x)[0], y).backward()
    tol = {"rtol": TOLERANCES[dtype].rtol, "atol": TOLERANCES[dtype].atol}
    torch.testing.assert_close(a(x)[0], b(x)[0], **tol)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, **tol, msg=lambda s, n=n: f"{n}: {s}")


@pytest.mark.parametrize("setting", [{}, {"fused": False}, {"optimizer": "sgd"}])
def test_optimizer_groups_are_what_the_optimizer_writes(setting):
    # the compiled kernel's checkpoints write the torch optimizer's settings without
    # building one; a resume checks them against a real one (echo_rnn.run.checkpoint)
    from echo_rnn.config import TrainConfig
    from echo_rnn.model import make_optimizer, optimizer_groups

    config = TrainConfig(lr=0.003, **setting)
    params = [torch.zeros(2, requires_grad=True) for _ in range(4)]
    assert (
        optimizer_groups(config, 4) == make_optimizer(config, params).state_dict()["param_groups"]
    )
