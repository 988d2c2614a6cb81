"""The trainer: what it achieves, what it writes, and how it fails."""

import json
import math
import signal
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from conftest import requires_cuda
from echo_rnn.config import ConfigError, TrainConfig, build_config
from echo_rnn.engine.train import NonFiniteLoss, train
from echo_rnn.model import EchoRNN
from echo_rnn.run.checkpoint import CheckpointError, load_checkpoint
from helpers import cli, events, python, run_main, scalar_series, small_config, small_flags


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["autograd", "bptt"])
@pytest.mark.parametrize("seed", range(5))
def test_default_run_solves_within_500_steps(tmp_path, backend, seed):
    config = TrainConfig(seed=seed, backend=backend, device="cpu", logdir=str(tmp_path))
    assert config.steps == 500 and config.target_accuracy == 1.0  # the defaults are the claim
    result = train(config, verbose=False)
    assert result.val_accuracy == 1.0 and result.solved_step is not None
    assert result.solved_step <= 500 and result.stopped == "solved"


@pytest.mark.slow
def test_notebook_preset_reaches_full_accuracy(tmp_path):
    config = build_config(
        "notebook", overrides={"logdir": str(tmp_path), "backend": "bptt", "device": "cpu"}
    )
    assert (
        config.schedule,
        config.optimizer,
        config.lr,
        config.batch_size,
        config.seq_len,
        config.steps,
    ) == ("notebook", "sgd", 0.01, 1, 50, 50_000)
    result = train(config, verbose=False)
    assert result.val_accuracy == 1.0
    assert result.solved_step % 50 == 0  # evaluated once per epoch
    epochs = result.solved_step // 50
    assert epochs <= 1000


def test_same_seed_same_curve_bit_for_bit(tmp_path):
    a = train(small_config(tmp_path, run_name="a", target_accuracy=1.0), verbose=False)
    b = train(small_config(tmp_path, run_name="b", target_accuracy=1.0), verbose=False)
    c = train(small_config(tmp_path, run_name="c", seed=1), verbose=False)
    sa, sb = scalar_series(a.run_dir, "train loss"), scalar_series(b.run_dir, "train loss")
    assert sa == sb and [s for s, _ in sa] == list(range(5, a.step + 1, 5))
    assert sa != scalar_series(c.run_dir, "train loss")
    assert scalar_series(a.run_dir, "val loss") == scalar_series(b.run_dir, "val loss")


@pytest.mark.parametrize("backend", ["compiled", "autograd", "bptt"])
def test_resumed_curve_equals_uninterrupted(tmp_path, backend):
    full = train(small_config(tmp_path, run_name="full", steps=60, backend=backend), verbose=False)
    part = train(small_config(tmp_path, run_name="part", steps=30, backend=backend), verbose=False)
    assert part.step == 30
    resumed = train(
        small_config(tmp_path, run_name="part", steps=60, backend=backend),
        resume=part.run_dir,
        verbose=False,
    )
    assert resumed.step == 60 == full.step
    for tag in ("train loss", "grad norm", "val loss", "val accuracy"):
        got, want = scalar_series(resumed.run_dir, tag), scalar_series(full.run_dir, tag)
        assert got == want, tag
        steps = [s for s, _ in got]
        assert len(steps) == len(set(steps)), f"duplicate steps in {tag}"
    a = load_checkpoint(full.run_dir)["model"]
    b = load_checkpoint(resumed.run_dir)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(tmp_path):
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    with pytest.raises(CheckpointError, match=r"different config \(lr=0.02\)"):
        train(small_config(tmp_path, run_name="r", steps=20, lr=0.5), resume=run.run_dir)


def test_run_directory_contents(tmp_path):
    result = train(small_config(tmp_path, run_name="x", target_accuracy=0.99), verbose=False)
    run = tmp_path / "runs" / "x"
    assert list((tmp_path / "runs").iterdir()) == [run]  # hparams wrote no stray run
    config = json.loads((run / "config.json").read_text())
    assert config == small_config(tmp_path, run_name="x", target_accuracy=0.99).to_dict()
    summary = json.loads((run / "summary.json").read_text())
    for key in (
        "step",
        "val_loss",
        "val_accuracy",
        "solved_step",
        "wall_time_s",
        "device",
        "backend",
    ):
        assert key in summary
    assert summary["step"] == result.step and summary["device"] == "cpu"
    assert summary["val_accuracy"] == result.val_accuracy
    assert load_checkpoint(run)["step"] == result.step


def test_tensorboard_contents(tmp_path):
    result = train(
        small_config(
            tmp_path,
            run_name="x",
            bias=True,
            steps=40,
            compare_every=1,
            target_accuracy=1.0,
            lr_halve_every=100,
        ),
        verbose=False,
    )
    run = Path(result.run_dir)
    # one TensorBoard run per run (three made 16 runs 48, past the 40 that TensorBoard's
    # Scalars dashboard selects by default): no train/ or val/ beside the checkpoints
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["checkpoints"]
    acc = events(run)
    tags = acc.Tags()
    # groups named once: losses under loss/, everything else about training under training/,
    # weights under weights/; every metric for every run, solved or not
    assert sorted(tags["scalars"]) == [
        "accuracy/val",
        "loss/train",
        "loss/val",
        "solved",
        "solved_step",
        "training/curriculum k",
        "training/gradient norm",
        "training/kernel vs autograd (rounding units)",
        "training/lr",
    ]
    assert result.solved_step is None
    # the Custom Scalars dashboard overlays training and held-out loss
    from tensorboard.plugins.custom_scalar import layout_pb2

    (layout,) = acc.Tensors("custom_scalars__config__")
    charts = {
        chart.title: list(chart.multiline.tag)
        for category in layout_pb2.Layout.FromString(layout.tensor_proto.string_val[0]).category
        for chart in category.chart
    }
    assert charts["loss: training and held-out"] == ["^loss/(train|val)$"]
    for name in ("U", "V", "w", "b"):
        assert f"weights/{name}" in tags["histograms"]
        assert f"training/dJ/d{name}" in tags["histograms"]
        assert f"weights/{name} heatmap" in tags["images"]
    assert {"held-out sequence", "training/gradient flow through time"} <= set(tags["images"])
    # TensorBoard files a tag under one plugin per run: a tag written as a histogram and as
    # an image showed only as the histogram
    kinds = [set(tags[kind]) for kind in ("scalars", "images", "histograms", "tensors")]
    assert all(not (a & b) for i, a in enumerate(kinds) for b in kinds[i + 1 :])
    assert any("config" in t for t in tags["tensors"])
    # hparams as sessions only: TensorBoard computes the columns over all runs
    assert set(acc.PluginTagToContent("hparams")) == {
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }
    # the fast kernel and autograd agree to rounding during a real run
    units = [v for _, v in scalar_series(run, "kernel vs autograd")]
    assert units and max(units) < 1000
    # held-out metrics at every point of the training curve (log_every), not only at the
    # evaluations (eval_every): the held-out curve is as fine as the training one
    assert [s for s, _ in scalar_series(run, "val accuracy")] == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert [s for s, _ in scalar_series(run, "train loss")] == [5, 10, 15, 20, 25, 30, 35, 40]


def test_every_run_has_every_metric(tmp_path):
    """Before: no training/lr without a schedule, no training/curriculum k without a
    curriculum, no solved_step for an unsolved run; TensorBoard's parallel-coordinates view
    leaves out a run that lacks a metric it shows (5 lines for 16 runs). Now the constant
    ones are logged at each evaluation, and an unsolved run's solved_step is the steps it
    ran, with solved = 0."""
    runs = {
        "plain": dict(steps=20),
        "curriculum": dict(steps=20, curriculum=True),
        "schedule": dict(steps=20, lr_halve_every=10),
        "solved": dict(steps=20, target_accuracy=0.5),
    }
    tags = {}
    for name, kw in runs.items():
        # the autograd kernel's streams: its "solved" run solves after its first steps (a
        # run solved at step 0, before any training, has no training curves to log)
        result = train(
            small_config(tmp_path, run_name=name, backend="autograd", **kw), verbose=False
        )
        tags[name] = set(events(result.run_dir).Tags()["scalars"])
    assert all(t == tags["plain"] for t in tags.values()), tags
    assert {"training/lr", "training/curriculum k", "solved", "solved_step"} <= tags["plain"]
    # constant: the run's lr and its k (the echo step), once an evaluation
    plain = Path(tmp_path / "runs" / "plain")
    assert scalar_series(plain, "lr") == [
        (0, pytest.approx(0.02)),
        (10, pytest.approx(0.02)),
        (20, pytest.approx(0.02)),
    ]
    assert {k for _, k in scalar_series(plain, "curriculum k")} == {2}


def test_hparams_are_typed_and_each_run_is_its_own_trial(tmp_path):
    from tensorboard.plugins.hparams import metadata

    result = train(
        small_config(tmp_path, run_name="k2-trial", bias=True, steps=20, target_accuracy=0.5),
        verbose=False,
    )
    content = events(result.run_dir).PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content["_hparams_/session_start_info"])
    # no group name: TensorBoard names the trial after the run's path under its logdir, so
    # the same point name in two sweeps is two trials, never one row averaging both
    assert start.group_name == ""
    # a bool is a bool (torch's add_hparams shows it as 0.0000), a string a string
    assert start.hparams["bias"].WhichOneof("kind") == "bool_value"
    assert start.hparams["bias"].bool_value
    assert start.hparams["optimizer"].string_value == "adam"
    assert start.hparams["hidden_size"].number_value == 4
    assert start.hparams["grad_clip"].string_value == "none"
    # where a run is kept is its name, not a setting: as columns they would differ between
    # every pair of runs and crowd the swept settings out of TensorBoard's default view
    assert "logdir" not in start.hparams and "run_name" not in start.hparams
    # solved 1 and the step it was solved at; an unsolved run: solved 0 and the steps it ran
    # (a cell left blank would leave the run out of the parallel-coordinates view)
    assert scalar_series(result.run_dir, "solved step") == [(result.solved_step,) * 2]
    assert scalar_series(result.run_dir, "solved") == [(result.solved_step, 1.0)]
    unsolved = train(small_config(tmp_path, run_name="u", steps=5), verbose=False)
    assert unsolved.solved_step is None
    assert scalar_series(unsolved.run_dir, "solved step") == [(5, 5.0)]
    assert scalar_series(unsolved.run_dir, "solved") == [(5, 0.0)]


def test_a_short_run_still_compares_the_kernel_with_autograd(tmp_path):
    # Before: grad/manual_vs_autograd every 4th evaluation only: none for a run solved
    # before step 100, one point for the default run.
    # Now at every one of the first 5 evaluations: TensorBoard's Scalars dashboard drew a
    # card of two points empty (it scales a chart to its points without the outermost ones)
    result = train(small_config(tmp_path, run_name="d", steps=30), verbose=False)
    steps = [s for s, _ in scalar_series(result.run_dir, "kernel vs autograd")]
    assert steps == [10, 20, 30]
    # then every compare_every evaluations (a comparison costs more than a hundred steps of
    # a small run), and at the last
    result = train(
        small_config(tmp_path, run_name="s", steps=155, compare_every=4, echo_step=9),
        verbose=False,
    )
    steps = [s for s, _ in scalar_series(result.run_dir, "kernel vs autograd")]
    assert steps == [10, 20, 30, 40, 50, 80, 120, 155]


def test_cli_end_to_end_and_summary_lines(tmp_path):
    proc = cli("train", *small_flags(tmp_path), "--run-name", "e2e", "--backend", "bptt")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    evals = [l for l in lines if l.startswith("step ")]
    assert len(evals) == 5 and all("val_acc" in l and "val_loss" in l for l in evals)
    assert f"tensorboard --logdir {tmp_path / 'runs'}" in lines[-1]
    assert (tmp_path / "runs" / "e2e" / "summary.json").is_file()


def test_script_and_config_file(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        f'hidden-size = 3\nlr = 0.05\nlogdir = "{tmp_path / "runs"}"\nsteps = 10\n'
        'seq_len = 12\nval_size = 8\ndevice = "cpu"\n'
    )
    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    proc = python(script, "--config", toml, "--lr", "0.01", "--run-name", "f")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "runs" / "f" / "config.json").read_text())
    assert (config["hidden_size"], config["lr"], config["steps"]) == (3, 0.01, 10)


def test_non_finite_loss_stops_keeps_checkpoint_exit_1(tmp_path):
    proc = cli(
        "train",
        *small_flags(tmp_path),
        "--run-name",
        "nan",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--steps",
        "100",
    )
    assert proc.returncode == 1
    msg = proc.stderr.strip().splitlines()[-1]
    assert "at step" in msg and "--lr" in msg and "--grad-clip" in msg
    assert "Traceback" not in proc.stderr
    state = load_checkpoint(tmp_path / "runs" / "nan")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    summary = json.loads((tmp_path / "runs" / "nan" / "summary.json").read_text())
    assert summary["stopped"] == "diverged"


def test_non_finite_loss_from_python_raises(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"at step \d+"):
        train(small_config(tmp_path, optimizer="sgd", lr=1e30, steps=100), verbose=False)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_checkpoints_and_resume_continues_the_same_curve(tmp_path, sig, code):
    proc = cli(
        "train",
        *small_flags(tmp_path),
        "--run-name",
        "sig",
        "--steps",
        "1000000",
        "--echo-step",
        "9",
        "--seq-len",
        "40",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for line in proc.stdout:  # wait for training to be under way
        if line.startswith("step      20"):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "checkpoint saved" in err and "--resume" in err and "Traceback" not in err
    run = tmp_path / "runs" / "sig"
    state = load_checkpoint(run)
    stopped_at = state["step"]
    assert stopped_at >= 20
    # the curves reach the last point (every log_every = 5 steps) before the step the signal
    # interrupted; the steps after it travel in the checkpoint, unlogged, so that the resumed
    # run draws the points an uninterrupted one draws
    last_point = scalar_series(run, "train loss")[-1][0]
    assert last_point == stopped_at - stopped_at % 5
    assert [row[0] for row in state["window"]] == list(range(last_point + 1, stopped_at + 1))
    target = stopped_at + 15
    res = cli("train", "--resume", run, "--steps", target)
    assert res.returncode == 0, res.stderr
    # k=9 with H=4 is not solved this early, so neither run stops before `target`
    ref = train(
        small_config(tmp_path, run_name="ref", steps=target, seq_len=40, echo_step=9), verbose=False
    )
    assert ref.solved_step is None and ref.step == target
    assert scalar_series(run, "train loss") == scalar_series(ref.run_dir, "train loss")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--hidden-size", "-3"], "argument --hidden-size: must be a positive integer"),
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
        (["--echo-step", "50"], "argument --echo-step: must be in [0, seq_len)"),
        (["--lr", "0"], "argument --lr: must be a positive number"),
        (["--lr", "-1"], "argument --lr: must be a positive number"),
        (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
        (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
        (["--config", "missing.toml"], "argument --config: no such file"),
        (["--resume", "no/such/run"], "argument --resume: no such run directory"),
        (["--steps", "ten"], "argument --steps: must be an integer, got 'ten'"),
        (["--target-accuracy", "1.5"], "argument --target-accuracy: must be in (0, 1]"),
        (["--grad-clip", "-1"], "argument --grad-clip: must be a positive number or none"),
    ],
)
def test_bad_flags_one_line_exit_2_no_run_dir(tmp_path, monkeypatch, capsys, flags, needle):
    monkeypatch.chdir(tmp_path)
    logdir = [] if "--resume" in flags else ["--logdir", tmp_path / "runs"]
    code, out, err = run_main("train", *logdir, *flags, capsys=capsys)
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_bad_flag_in_a_real_process(tmp_path):
    proc = cli("train", "--logdir", tmp_path / "runs", "--lr", "0", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "echo-rnn train: error: argument --lr: must be a positive number, got 0.0\n"
    )
    assert not (tmp_path / "runs").exists()


def test_malformed_config_file_and_cuda_without_cuda(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = [\n")
    proc = cli("train", "--config", bad, "--logdir", tmp_path / "runs")
    assert proc.returncode == 2 and "is not valid TOML" in proc.stderr
    bad.write_text("learning_rate = 0.1\n")
    proc = cli("train", "--config", bad, "--logdir", tmp_path / "runs")
    assert proc.returncode == 2 and "unknown setting 'learning_rate'" in proc.stderr
    if not torch.cuda.is_available():
        proc = cli("train", "--device", "cuda", "--logdir", tmp_path / "runs")
        assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_accepts_only_steps_and_the_checkpoint_cadence(tmp_path, capsys):
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    proc = cli("train", "--resume", run.run_dir, "--lr", "0.5")
    assert proc.returncode == 2
    assert "only --steps and --checkpoint-every may be given" in proc.stderr
    assert "got --lr" in proc.stderr
    # neither changes the curve: a resume may set both
    code, _, err = run_main(
        "train", "--resume", run.run_dir, "--steps", "30", "--checkpoint-every", "2", capsys=capsys
    )
    assert code == 0, err
    assert json.loads((Path(run.run_dir) / "summary.json").read_text())["step"] == 30


def test_resuming_a_moved_run_points_tensorboard_at_where_it_is_now(tmp_path, capsys):
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    moved = tmp_path / "elsewhere" / "r"
    moved.parent.mkdir()
    Path(run.run_dir).rename(moved)
    code, out, err = run_main("train", "--resume", moved, "--steps", "20", capsys=capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == f"view it: tensorboard --logdir {moved.parent}"
    assert max(s for s, _ in scalar_series(moved, "train loss")) == 20
    # through the API, the config may say where the run is now
    config = small_config(tmp_path, run_name="r", steps=30, logdir=str(moved.parent))
    assert train(config, resume=moved, verbose=False).step == 30


def test_existing_run_name_is_refused(tmp_path):
    train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    proc = cli("train", *small_flags(tmp_path), "--run-name", "r")
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_help_lists_every_config_field():
    proc = cli("train", "--help")
    assert proc.returncode == 0
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in proc.stdout
    assert "--resume" in proc.stdout and "--preset" in proc.stdout


@requires_cuda
@pytest.mark.parametrize("backend", ["autograd", "bptt"])
def test_trains_on_cuda(tmp_path, backend):
    result = train(TrainConfig(device="cuda", backend=backend, logdir=str(tmp_path)), verbose=False)
    assert result.device.startswith("cuda") and result.val_accuracy == 1.0
    assert math.isfinite(result.val_loss)


@requires_cuda
@pytest.mark.parametrize("backend", ["autograd", "bptt"])
def test_cuda_graph_training_follows_the_eager_curve(tmp_path, backend):
    kw = dict(device="cuda", backend=backend, steps=100, target_accuracy=1.0)
    eager = train(small_config(tmp_path, run_name="eager", **kw), verbose=False)
    graph = train(small_config(tmp_path, run_name="graph", cuda_graph=True, **kw), verbose=False)
    a = [v for _, v in scalar_series(eager.run_dir, "train loss")]
    b = [v for _, v in scalar_series(graph.run_dir, "train loss")]
    assert len(a) == len(b)
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-3, atol=1e-5)


def test_cuda_graph_needs_cuda_and_the_batch_schedule(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^cuda_graph: needs a CUDA device"):
            small_config(tmp_path, device="cpu", cuda_graph=True).validate()
    else:
        with pytest.raises(ConfigError, match="needs --schedule batch"):
            small_config(tmp_path, device="cuda", cuda_graph=True, schedule="notebook").validate()


@pytest.mark.slow
def test_curriculum_walks_k_up_to_the_echo_step(tmp_path):
    result = train(
        small_config(
            tmp_path,
            run_name="c",
            curriculum=True,
            echo_step=3,
            hidden_size=6,
            batch_size=32,
            steps=1500,
            lr=0.02,
            seq_len=30,
            val_size=128,
        ),
        verbose=False,
    )
    ks = [v for _, v in scalar_series(result.run_dir, "curriculum k")]
    assert ks[0] == 1 and ks[-1] == 3 and ks == sorted(ks)
    assert result.solved_step is not None  # solved means solved at k = 3
    acc = dict(scalar_series(result.run_dir, "val accuracy"))
    assert acc[result.solved_step] == 1.0


def test_lr_halves_on_schedule_and_resume_keeps_it(tmp_path):
    kw = dict(lr_halve_every=10, curriculum=True, echo_step=4, steps=60, eval_every=10)
    full = train(small_config(tmp_path, run_name="full", **kw), verbose=False)
    part = train(small_config(tmp_path, run_name="part", **{**kw, "steps": 30}), verbose=False)
    resumed = train(
        small_config(tmp_path, run_name="part", **kw), resume=part.run_dir, verbose=False
    )
    for tag in ("train loss", "lr", "curriculum k"):
        assert scalar_series(resumed.run_dir, tag) == scalar_series(full.run_dir, tag), tag


def test_lr_halving_without_curriculum(tmp_path):
    run = train(
        small_config(tmp_path, run_name="h", lr_halve_every=10, steps=30, echo_step=9),
        verbose=False,
    )
    lrs = dict(scalar_series(run.run_dir, "lr"))
    # the update of step s uses the rate logged at s; it halves after steps 10 and 20
    assert lrs[5] == lrs[10] == pytest.approx(0.02)
    assert lrs[15] == lrs[20] == pytest.approx(0.01)
    assert lrs[25] == pytest.approx(0.005)


def test_frontier_preset_is_the_documented_recipe():
    c = build_config("frontier", overrides={"echo_step": 6, "hidden_size": 6, "bias": True})
    assert (
        c.curriculum,
        c.init_std,
        c.input_init_std,
        c.grad_clip,
        c.lr,
        c.lr_halve_every,
        c.optimizer,
        c.batch_size,
        c.steps,
    ) == (False, 0.3, 1.5, 1.0, 0.005, None, "adam", 64, 40000)


def test_orthogonal_gain_reaches_the_model(tmp_path):
    # an SGD step of 1e-9 leaves U as it was drawn: 0.8 times an orthogonal matrix
    run = train(
        small_config(
            tmp_path, orthogonal_gain=0.8, optimizer="sgd", lr=1e-9, steps=1, eval_every=1
        ),
        verbose=False,
    )
    U = load_checkpoint(run.run_dir)["model"]["U"].double()
    torch.testing.assert_close(
        U.t() @ U, 0.64 * torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-5
    )


def test_curriculum_patience_moves_on_from_an_unsolved_k(tmp_path):
    # H=2 at 40 steps solves nothing, so only patience can move k: at steps 20 and 40
    run = train(
        small_config(
            tmp_path,
            run_name="p",
            curriculum=True,
            curriculum_patience=20,
            echo_step=3,
            hidden_size=2,
            steps=50,
            eval_every=10,
        ),
        verbose=False,
    )
    k = dict(scalar_series(run.run_dir, "curriculum k"))
    assert [k[s] for s in (0, 10, 20, 30, 40, 50)] == [1, 1, 2, 2, 3, 3]


def test_presets_say_what_they_change(tmp_path, capsys):
    code, out, err = run_main(
        "train",
        *small_flags(tmp_path),
        "--preset",
        "frontier",
        "--run-name",
        "f",
        "--steps",
        "2",
        "--eval-every",
        "1",
        capsys=capsys,
    )
    assert code == 0, err
    code, out, err = run_main(
        "train",
        *small_flags(tmp_path),
        "--preset",
        "notebook",
        "--run-name",
        "n",
        "--seq-len",
        "10",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--echo-step",
        "9",
        capsys=capsys,
    )
    assert code == 0, err
    assert "step      20 | epoch     2 |" in out
    assert "not solved after 20 steps (2 epochs)" in out


def test_the_progress_bar_shows_the_evaluation_just_made(tmp_path):
    # Before: the bar's accuracy was set before the evaluation, so it showed the one before.
    from echo_rnn.run.runlog import RunLog

    class Bar:
        def set_postfix(self, **kw):
            self.postfix = kw

    config = small_config(tmp_path)
    log = RunLog(tmp_path, config, main=False, verbose=False, resumed_at=None)
    log.bar = Bar()
    m = EchoRNN(4)
    x = torch.zeros(20)
    log.evaluation(10, {"val_loss": 0.1, "val_accuracy": 0.75}, m, (x, x, x), 2, 0.2, 0.3, 1.0)
    assert log.bar.postfix == {"loss": "0.2000", "acc": "0.750"}


def test_only_a_runs_last_checkpoint_is_fsynced(tmp_path, monkeypatch):
    # an fsync costs milliseconds, more than a hundred steps of a small run: the periodic
    # checkpoints are atomic (a killed process leaves the old one or the new one) but not
    # fsynced; the one a run ends with is
    import echo_rnn.engine.loop as loop_module
    from echo_rnn.engine.population_train import train_population

    seen = []
    real = loop_module.save_checkpoint  # the one loop writes every run's checkpoints
    monkeypatch.setattr(
        loop_module,
        "save_checkpoint",
        lambda path, state, durable: seen.append(durable) or real(path, state, durable),
    )
    train(small_config(tmp_path, steps=30), verbose=False)
    assert seen == [False, False, False, False, True]  # steps 0, 10, 20, 30; then the last
    seen.clear()
    train_population([small_config(tmp_path, steps=30, run_name="p")])
    assert seen == [False, False, False, False, True]  # 0, 10, 20, 30; the member's last


def test_a_run_alone_and_a_population_train_in_the_one_loop(tmp_path, monkeypatch):
    # one trainer: train is a population of one, through the same loop as a sweep's group,
    # whichever kernel steps it
    import echo_rnn.engine.loop as loop
    import echo_rnn.engine.population_train as population_module
    import echo_rnn.engine.train as train_module
    from echo_rnn.engine.population_train import train_population

    assert train_module.train_runs is loop.train_runs is population_module.train_runs
    seen = []

    def spy(runs, stepper, **kwargs):
        seen.append((len(runs), type(stepper).__name__))
        return loop.train_runs(runs, stepper, **kwargs)

    for module in (train_module, population_module):
        monkeypatch.setattr(module, "train_runs", spy)
    for backend in ("auto", "autograd", "bptt"):
        train(small_config(tmp_path, steps=5, backend=backend, run_name=backend), verbose=False)
    train_population([small_config(tmp_path, steps=5, run_name=f"p{s}", seed=s) for s in (0, 1)])
    assert seen == [
        (1, "CompiledStepper"),
        (1, "ModelStepper"),
        (1, "ModelStepper"),
        (2, "CompiledStepper"),
    ]
