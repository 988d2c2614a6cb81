"""Gradient flow through time (echo_rnn/flow.py): ``gradcheck --per-step`` and ``--plot``, and
the TensorBoard image a training run logs at each evaluation."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bptt import _retained_dh

from echo_rnn.engine.train import train
from echo_rnn.flow import format_per_step, per_step, step_norms
from echo_rnn.problem import Problem
from echo_rnn.run.tblog import FLOW_TAG, flow_rgb
from helpers import events, run_main, small_config

PNG = b"\x89PNG\r\n\x1a\n"
EXAMPLE = f"{Path(__file__).resolve().parents[1] / 'examples' / 'my_bptt.py'}:bptt"


def _norms(dh):  # (B, T, H) -> (T,): written here, not the package's step_norms
    return [float(np.sqrt((dh[:, t] ** 2).sum())) for t in range(dh.shape[1])]


@pytest.mark.parametrize(
    "flags",
    [
        [],
        [
            "--batch-size",
            "3",
            "--input-size",
            "2",
            "--bias",
            "--h0",
            "--seq-len",
            "17",
            "--kernel",
            "fast",
        ],
    ],
)
def test_per_step_matches_autograds_retained_gradients(flags, capsys):
    code, out, _ = run_main("gradcheck", "--per-step", "--json", *flags, capsys=capsys)
    assert code == 0
    report = json.loads(out)
    c = report["config"]
    p = Problem(
        hidden_size=c["hidden_size"],
        input_size=c["input_size"],
        batch_size=c["batch_size"],
        seq_len=c["seq_len"],
        echo_step=c["echo_step"],
        bias=c["bias"],
        h0=c["h0"],
        seed=c["seed"],
        init_std=c["init_std"],
    ).on(torch.float64, torch.device("cpu"))
    model, x3, y, h0 = p.model, p.x, p.y, p.h0_state
    expected = _norms(_retained_dh(model, x3, y, h0).numpy())
    flow = report["per_step"]
    assert flow["t"] == list(range(1, c["seq_len"] + 1))
    np.testing.assert_allclose(flow["autograd"], expected, rtol=1e-12)
    kernels = ["reference", "fast"] if not flags else ["fast"]
    for k in kernels:
        np.testing.assert_allclose(flow[k], expected, rtol=1e-10)
        assert max(flow[f"{k} diff"]) < 1e-12 * max(expected)
    assert not any(k in flow for k in {"reference", "fast"} - set(kernels))


def test_per_step_of_a_learner_shows_its_own_dh_and_the_difference(capsys):
    code, out, _ = run_main("gradcheck", "--grads", EXAMPLE, "--per-step", "--json", capsys=capsys)
    assert code == 1
    flow = json.loads(out)["per_step"]
    assert flow["yours diff"][-1] == 0.0  # at t = T nothing is carried yet: both agree
    assert min(flow["yours diff"][:-1]) > 0  # the carry is transposed: every earlier step
    np.testing.assert_allclose(
        np.abs(np.subtract(flow["yours"], flow["autograd"])), 0, atol=max(flow["yours diff"])
    )  # |a|-|b| <= |a-b|


def test_per_step_table_is_compact_and_counts_back_from_T(capsys):
    code, out, _ = run_main("gradcheck", "--per-step", "--kernel", "reference", capsys=capsys)
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("t "))
    assert "||dJ/dh_t|| autograd" in lines[head] and "||reference - autograd||" in lines[head]
    assert lines[head + 1].split()[0] == "50" and lines[head + 50].split()[0] == "1"
    figures = {"t": list(range(1, 1001)), "autograd": [1.0] * 1000}
    table = format_per_step(figures)
    assert len(table.splitlines()) <= 62 and "one step in 17 of 1000 shown" in table
    assert table.splitlines()[1].split()[0] == "1000" and table.splitlines()[-2].split()[0] == "1"


def test_plot_writes_an_image(tmp_path, capsys):
    path = tmp_path / "flow.png"
    code, out, _ = run_main("gradcheck", "--plot", path, capsys=capsys)
    assert code == 0 and f"plot: {path}" in out
    assert path.read_bytes().startswith(PNG)
    code, _, _ = run_main(
        "gradcheck", "--grads", EXAMPLE, "--plot", tmp_path / "flow.svg", "--json", capsys=capsys
    )
    assert code == 1 and b"<svg" in (tmp_path / "flow.svg").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.png", "flow.svg"]  # no temp files


def test_the_plot_draws_the_difference_marks_zeros_and_the_departure(tmp_path):
    """What the learner needs to see: ||yours - autograd's|| as its own curve, its exact
    zeros on the log axis at a floor with their own marker, where it departs first, and a
    long title whole."""
    from echo_rnn.flow import plot_flow

    title = "gradient flow through time, " + "a_very_long_learner_file_name.py:bptt, " * 4
    fig = plot_flow(
        tmp_path / "f.png",
        {"autograd": [1e-2, 2e-2, 3e-2, 4e-2], "yours": [1e-2, 2e-2, 3.5e-2, 4e-2]},
        title,
        {"||yours - autograd||": [0.0, 0.0, 5e-3, 0.0]},
        departure=3,
    )
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    diff = lines["||yours - autograd||"]
    floor = 5e-4  # a tenth of the smallest value drawn (5e-3)
    assert list(diff.get_ydata()) == pytest.approx([floor, floor, 5e-3, floor])
    zero_key = [k for k in lines if k.startswith("exactly 0")]
    assert len(zero_key) == 1
    assert list(lines[zero_key[0]].get_xdata()) == [1, 2, 4]
    assert list(lines["yours departs first at t = 3"].get_xdata()) == [3, 3]
    shown = ax.get_title()
    assert shown.replace("\n", " ").split() == title.split()  # whole, wrapped
    assert max(len(line) for line in shown.split("\n")) <= 80
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "||yours - autograd||" in legend and zero_key[0] in legend


def test_the_learner_plot_marks_where_a_planted_mistake_departs(tmp_path, capsys, monkeypatch):
    import echo_rnn.cli.gradcheck as command  # the command draws with the name it imported
    import echo_rnn.flow as flow

    drawn = {}
    real = flow.plot_flow

    def spy(*a, **kw):
        drawn["fig"] = real(*a, **kw)
        return drawn["fig"]

    monkeypatch.setattr(command, "plot_flow", spy)
    code, _, _ = run_main(
        "gradcheck", "--grads", EXAMPLE, "--plot", tmp_path / "f.png", capsys=capsys
    )
    assert code == 1
    labels = [line.get_label() for line in drawn["fig"].axes[0].get_lines()]
    assert "||yours - autograd||" in labels
    assert "yours departs first at t = 49" in labels  # the carry is transposed from T - 1


@pytest.mark.parametrize(
    "target,needle",
    [
        ("nodir/flow.png", "no such directory"),
        ("flow.txt", "must end in .png, .pdf, .svg"),
        (".", "must end in"),
    ],
)
def test_a_bad_plot_path_is_refused_before_any_work(target, needle, tmp_path, capsys):
    code, out, err = run_main("gradcheck", "--plot", tmp_path / target, capsys=capsys)
    assert code == 2 and out == "" and "argument --plot: " in err and needle in err
    assert list(tmp_path.iterdir()) == []


def test_step_norms_and_per_step():
    dh = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    np.testing.assert_allclose(step_norms(dh).numpy(), _norms(dh.numpy()))
    figures = per_step({"mine": dh + 1}, dh)
    assert figures["mine diff"] == pytest.approx([np.sqrt(8)] * 3)


def test_flow_image_is_light_and_draws_the_curve():
    img = flow_rgb(torch.logspace(-6, -2, 200))
    assert img.dtype == np.uint8 and img.shape == (150, 360, 3)
    blue = (img[..., 2] > 150) & (img[..., 0] < 100)
    cols = np.nonzero(blue.any(axis=0))[0]
    assert cols.min() < 60 and cols.max() > 340  # the curve spans t = 1..T
    rows_left, rows_right = np.nonzero(blue[:, 50])[0], np.nonzero(blue[:, 350])[0]
    assert rows_left.mean() > rows_right.mean()  # rising to the right: lower on the left
    assert flow_rgb(torch.zeros(5)).shape == (150, 360, 3)  # nothing to draw on a log scale


def test_training_logs_the_gradient_flow_at_each_evaluation(tmp_path):
    result = train(small_config(tmp_path, run_name="flow", steps=30, eval_every=10), verbose=False)
    images = events(result.run_dir).Images(FLOW_TAG)
    assert [i.step for i in images] == [0, 10, 20, 30]
    assert all(i.encoded_image_string.startswith(PNG) for i in images)
    assert max(len(i.encoded_image_string) for i in images) < 20_000
    assert len({i.encoded_image_string for i in images}) > 1  # it changes as the model learns
