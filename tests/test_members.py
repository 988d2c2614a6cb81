"""Members: R runs' state in the compiled kernel's layout. A run's stream position is a
counter that its checkpoint keeps as 8 bytes; its optimizer is written as torch's and read
back to continue the same bits; its model's parameters are its row; its last batch is drawn
again at the k it trained on."""

import pytest
import torch

from echo_rnn.config import TrainConfig
from echo_rnn.engine.members import Members, counter_of
from echo_rnn.kernels import compiled

pytestmark = pytest.mark.skipif(
    not compiled.AVAILABLE, reason=f"compiled kernel not built: {compiled.UNAVAILABLE_REASON}"
)


def configs(**overrides):
    base = dict(
        seq_len=20,
        echo_step=3,
        hidden_size=4,
        batch_size=8,
        bias=True,
        grad_clip=1.0,
        device="cpu",
        **overrides,
    )
    return [TrainConfig(**base, seed=s) for s in (0, 1, 2)]


def test_the_stream_position_is_eight_bytes_and_nothing_else():
    ms = Members(configs())
    for _ in range(3):
        ms.step()
    rng = ms.rng_state(1)
    assert rng.dtype == torch.uint8 and rng.shape == (8,) and counter_of(rng) == 3
    with pytest.raises(ValueError, match="8 bytes"):
        counter_of(torch.Generator().get_state())  # a torch kernel's run cannot be resumed here


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_member_written_and_read_back_continues_the_same_bits(optimizer):
    lr = 0.05 if optimizer == "sgd" else 0.02
    whole, part = (
        Members(configs(optimizer=optimizer, lr=lr)),
        Members(configs(optimizer=optimizer, lr=lr)),
    )
    for _ in range(5):
        whole.step()
        part.step()
    saved = [
        (part.model_state(r), part.optimizer_state(r), part.rng_state(r)) for r in range(part.runs)
    ]
    again = Members(configs(optimizer=optimizer, lr=lr))  # fresh: every row drawn anew
    for r, (model, opt, rng) in enumerate(saved):
        again.load(r, model, opt, rng)
    for _ in range(5):
        a, b = whole.step(), again.step()
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for name in ("params", "m", "v", "steps", "counters"):
        assert torch.equal(getattr(whole, name), getattr(again, name)), name


def test_the_aliased_model_is_the_members_row():
    ms = Members(configs())
    model = ms.model(1, alias=True)
    before = model.U.detach().clone()
    ms.step()
    assert not torch.equal(model.U.detach(), before)  # the step moved the model's weights
    assert torch.equal(model.U.detach(), ms.tensors(1)["U"])
    copy = ms.model(1)
    ms.step()
    assert not torch.equal(copy.U.detach(), ms.tensors(1)["U"])  # a copy stays as it was


def test_the_last_batch_is_drawn_again_at_the_k_it_trained_on():
    ms = Members(configs())
    ms.step()
    ms.set_k([5, 5, 5])  # a curriculum moved on after the step
    x, y = ms.last_batch(0)
    want = compiled.draw_bits(0, compiled.STREAM_TRAIN, 0, 8, 20)
    assert torch.equal(x, want)
    assert torch.equal(y[:, 3:], want[:, :-3]) and not y[:, :3].any()  # k = 3, not 5


def test_the_kernel_is_compared_with_autograd_in_float64(monkeypatch):
    # what a run's 'kernel vs autograd' card shows for the compiled kernel: rounding of
    # float64 (tens of units at most here), and a wrong gradient far beyond it
    from echo_rnn.engine.witness import kernel_vs_autograd

    ms = Members(configs())
    for _ in range(3):
        ms.step()
    model, x, y, grads = ms.float64_pass(2)
    assert model.U.dtype == x.dtype == grads["U"].dtype == torch.float64
    right = kernel_vs_autograd(model, x, y, None, ours=grads)
    assert right < 100
    grads["V"] = grads["V"] * 1.001
    assert kernel_vs_autograd(model, x, y, None, ours=grads) > 1e9
