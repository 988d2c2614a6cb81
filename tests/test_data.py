import pytest
import torch

from conftest import requires_cuda
from echo_rnn.data import bits, make_echo_batch


@pytest.mark.parametrize("k", [0, 1, 2, 7])
def test_target_is_input_delayed_with_leading_zeros(k):
    g = torch.Generator().manual_seed(0)
    x, y = make_echo_batch(4, 20, k, generator=g)
    assert x.shape == y.shape == (4, 20)
    torch.testing.assert_close(y[:, :k], torch.zeros(4, k), rtol=0, atol=0)
    torch.testing.assert_close(y[:, k:], x[:, : 20 - k], rtol=0, atol=0)


def test_bits_are_binary_and_roughly_fair():
    x, _ = make_echo_batch(64, 100, 2, generator=torch.Generator().manual_seed(0))
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert 0.45 < x.mean().item() < 0.55  # 6400 fair bits: 5 sigma is 0.03


@pytest.mark.parametrize("p, value", [(0.0, 0.0), (1.0, 1.0)])
def test_p_extremes(p, value):
    x, _ = make_echo_batch(3, 5, 1, p=p, generator=torch.Generator().manual_seed(0))
    assert (x == value).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bits_are_one_exactly_below_p_and_plus_zero_elsewhere(dtype):
    # a draw equal to p is not below it; every 0.0 is +0.0, as the bool tensor converted gives
    u = torch.tensor([0.0, 0.2499, 0.25, 0.2501, 0.5, 0.9999])
    x = bits(u, 0.25, dtype)
    assert x.dtype == dtype
    assert x.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert not torch.signbit(x).any()
    assert torch.equal(bits(u), torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]))  # p = 0.5


def test_same_generator_state_same_batch_and_dtype():
    a = make_echo_batch(3, 9, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    b = make_echo_batch(3, 9, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    c = make_echo_batch(3, 9, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert a[0].dtype == torch.float64
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0, 5, 1), {}, "batch_size"),
        ((2, 0, 0), {}, "seq_len"),
        ((2, 5, -1), {}, "echo_step"),
        ((2, 5, 5), {}, "echo_step must be below seq_len"),
        ((2, 5, 1), {"p": 1.5}, r"p must be in \[0, 1\]"),
        ((2, 5, 1), {"p": -0.1}, r"p must be in \[0, 1\]"),
        ((2, 5, 1), {"dtype": torch.int64}, "floating"),
        ((2, 5, 1), {"generator": torch.Generator(), "device": "meta"}, "generator is on cpu"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_echo_batch(*args, **kwargs)


@requires_cuda
def test_cuda_batch_with_cuda_generator():
    g = torch.Generator(device="cuda").manual_seed(0)
    x, y = make_echo_batch(4, 10, 2, generator=g)
    assert x.device.type == "cuda" and y.device.type == "cuda"
    torch.testing.assert_close(y[:, 2:], x[:, :8])
    with pytest.raises(ValueError, match="generator is on"):
        make_echo_batch(4, 10, 2, generator=torch.Generator(), device="cuda")
