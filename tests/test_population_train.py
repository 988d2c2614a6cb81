"""A population's members are their runs: the same curve, checkpoint and summary as
``train`` of the same config, bit for bit on CPU at the frontier shape; a member that is done
leaves the population; one that diverges stops alone."""

import json
import os
from dataclasses import replace

import pytest
import torch

import echo_rnn.engine.population_train as pt
import echo_rnn.engine.steppers as steppers
from echo_rnn.config import ConfigError, build_config
from echo_rnn.engine.members import Members
from echo_rnn.engine.population_train import population_key, train_population
from echo_rnn.engine.train import train
from echo_rnn.run.checkpoint import load_checkpoint
from helpers import events, scalar_series

SERIES = ("train loss", "val loss", "val accuracy", "grad norm", "kernel vs autograd")


def frontier(tmp_path, **overrides):
    """The frontier recipe (the capacity sweep's), shortened: the shape at which the
    population kernel rounds like the single-run one."""
    return build_config(
        "frontier",
        overrides={
            "hidden_size": 6,
            "bias": True,
            "steps": 300,
            "logdir": str(tmp_path),
            **overrides,
        },
    )


def members(base, *points):
    return [replace(base, echo_step=k, seed=s, run_name=f"k{k}-s{s}") for k, s in points]


def assert_same_run(got, want):
    """Two run directories hold the same run: curves, checkpoint, summary, hparams."""
    for name in SERIES:
        assert scalar_series(got, name) == scalar_series(want, name), name
    for name in ("lr", "curriculum k", "solved", "solved step"):
        assert _series_or_none(got, name) == _series_or_none(want, name), name
    a, b = load_checkpoint(got), load_checkpoint(want)
    assert a["step"] == b["step"]
    for key in ("model",):
        assert all(torch.equal(a[key][n], b[key][n]) for n in b[key])
    opt_a, opt_b = a["optimizer"], b["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert all(
        torch.equal(opt_a["state"][i][k], opt_b["state"][i][k])
        for i in opt_b["state"]
        for k in opt_b["state"][i]
    )
    assert torch.equal(a["rng"]["train"], b["rng"]["train"])
    assert (a["curriculum"], a["window"]) == (b["curriculum"], b["window"])
    assert a["progress"]["solved_step"] == b["progress"]["solved_step"]
    assert a["progress"]["last_eval"] == b["progress"]["last_eval"]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (got, want))
    for k in ("step", "train_loss", "val_loss", "val_accuracy", "solved_step", "stopped"):
        assert sa[k] == sb[k], k
    hp = [
        events(d).PluginTagToContent("hparams")["_hparams_/session_start_info"] for d in (got, want)
    ]
    assert hp[0] == hp[1]


def _series_or_none(run_dir, name):
    try:
        return scalar_series(run_dir, name)
    except KeyError:  # the run logs no such series
        return None


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("backend", ["compiled", pytest.param("bptt", marks=pytest.mark.slow)])
def test_each_member_is_its_run_bit_for_bit(tmp_path, monkeypatch, one_thread, backend):
    base = frontier(tmp_path, backend=backend)
    configs = members(base, (2, 0), (6, 1), (3, 2))  # two solve by step 200, one never
    sizes = []
    if backend == "bptt":
        real_grads = steppers.population_grads
        monkeypatch.setattr(
            steppers,
            "population_grads",
            lambda pop, x, y, truncate: sizes.append(y.shape[0]) or real_grads(pop, x, y, truncate),
        )
    else:
        real_step = Members.step
        monkeypatch.setattr(
            Members, "step", lambda self: sizes.append(self.runs) or real_step(self)
        )
    results = train_population(configs)
    assert [r.stopped for r in results] == ["solved", "steps", "solved"]
    # a member that is done leaves: from then on the population is smaller (here two
    # solved early, at an evaluation, and the last one trained on alone)
    assert sizes == [sum(r.step > j for r in results) for j in range(300)]
    assert sizes[0] == 3 and sizes[-1] == 1
    for c, got in zip(configs, results):
        want = train(replace(c, run_name="single-" + c.run_name), verbose=False)
        assert (got.step, got.solved_step) == (want.step, want.solved_step)
        assert_same_run(tmp_path / c.run_name, tmp_path / ("single-" + c.run_name))


@pytest.mark.slow  # seconds: the quick tier stays under a minute
@pytest.mark.parametrize(
    "setting",
    [
        {"fused": False},
        {"optimizer": "sgd", "lr": 0.05},
        {"lr_halve_every": 40},
        {
            "curriculum": True,
            "curriculum_advance": 0.9,
            "curriculum_patience": 40,
            "eval_every": 20,
            "log_every": 10,
        },
    ],
)
@pytest.mark.parametrize("backend", ["compiled", "bptt"])
def test_members_are_their_runs_with_any_optimizer_schedule_and_curriculum(
    tmp_path, one_thread, setting, backend
):
    # torch's fused Adam rounds an element by where it sits in its tensor: stacked, the
    # members' rows would round otherwise (the frontier's unfused Adam is the test above);
    # each member's curriculum moves its own k, at its own evaluations (points whose
    # curricula move apart: the two kernels draw different streams)
    base = frontier(tmp_path, steps=150, backend=backend, **setting)
    points = {"compiled": ((6, 3), (7, 4), (1, 2)), "bptt": ((6, 0), (7, 1), (1, 2))}[backend]
    configs = members(base, *points)
    results = train_population(configs)
    # k = 1 is solved early and leaves: the optimizer's state is carried over to the others
    assert results[2].stopped == "solved" and results[2].step < 150
    if "curriculum" in setting:  # the members' k moved on, each at its own pace
        ks = [[k for _, k in scalar_series(tmp_path / c.run_name, "curriculum k")] for c in configs]
        assert all(k[-1] > k[0] for k in ks[:2]) and ks[0] != ks[1]
    if "lr_halve_every" in setting:
        assert [v for _, v in scalar_series(tmp_path / configs[0].run_name, "lr")][
            -1
        ] == pytest.approx(
            0.005 / 8, rel=1e-6
        )  # halved at steps 40, 80 and 120 (logged as float32)
    for c, got in zip(configs, results):
        want = train(replace(c, run_name="single-" + c.run_name), verbose=False)
        assert (got.step, got.solved_step) == (want.step, want.solved_step)
        assert_same_run(tmp_path / c.run_name, tmp_path / ("single-" + c.run_name))


@pytest.mark.slow  # seconds: the quick tier stays under a minute
def test_population_adam_rounds_fused_updates_as_each_runs_own_adam():
    # the stacked fused update differs from the runs' own in a few elements; run by run it
    # does not (the row views in one call)
    torch.manual_seed(0)
    R, H = 7, 6
    singles = [
        [torch.randn(s, requires_grad=True) for s in ((H, H), (H, 1), (H,))] for _ in range(R)
    ]
    stacked = [torch.stack([s[i].detach() for s in singles]).requires_grad_() for i in range(3)]
    ours = steppers.PopulationAdam(
        [p.detach().clone().requires_grad_() for p in stacked], lr=0.005, fused=True
    )
    torchs = torch.optim.Adam(stacked, lr=0.005, fused=True)
    alone = [torch.optim.Adam(s, lr=0.005, fused=True) for s in singles]
    for _ in range(50):
        grads = [[torch.randn_like(p) for p in s] for s in singles]
        for s, g, opt in zip(singles, grads, alone):
            for p, gp in zip(s, g):
                p.grad = gp
            opt.step()
        for params in (ours.param_groups[0]["params"], stacked):
            for i, p in enumerate(params):
                p.grad = torch.stack([g[i] for g in grads])
        ours.step()
        torchs.step()
    want = [torch.stack([s[i].detach() for s in singles]) for i in range(3)]
    assert all(torch.equal(p.detach(), w) for p, w in zip(ours.param_groups[0]["params"], want))
    assert not all(torch.equal(p.detach(), w) for p, w in zip(stacked, want))  # why it exists
    steps = ours.state[ours.param_groups[0]["params"][0]]["step"]
    assert steps.shape == (R,) and steps.dtype == torch.float32 and steps.eq(50).all()


@pytest.mark.parametrize("backend", ["compiled", "bptt"])
def test_a_diverging_member_stops_alone(tmp_path, monkeypatch, one_thread, backend):
    base = frontier(tmp_path, steps=100, backend=backend)
    configs = members(base, (4, 0), (4, 1))
    calls = []
    if backend == "bptt":
        real_clip = steppers.clip_grad_norms_

        def clip(pop, max_norm):  # member 1's gradient turns to NaN at the 5th step
            calls.append(1)
            if len(calls) == 5:
                pop.U.grad[1] = float("nan")
            return real_clip(pop, max_norm)

        monkeypatch.setattr(steppers, "clip_grad_norms_", clip)
    else:
        real_step = Members.step

        def step(self):  # member 1's weights turn to NaN before the 5th step
            calls.append(1)
            if len(calls) == 5:
                self.params[1, 0] = float("nan")
            return real_step(self)

        monkeypatch.setattr(Members, "step", step)
    healthy, diverged = train_population(configs)
    assert diverged.stopped == "diverged" and healthy.stopped == "steps"
    assert json.loads((tmp_path / "k4-s1" / "summary.json").read_text())["stopped"] == "diverged"
    monkeypatch.undo()
    train(replace(configs[0], run_name="single"), verbose=False)
    assert_same_run(tmp_path / "k4-s0", tmp_path / "single")


@pytest.mark.parametrize(
    "setting", [{}, {"curriculum": True, "curriculum_patience": 50, "fused": True}]
)
def test_train_resumes_a_member(tmp_path, one_thread, setting):
    # with a curriculum the checkpoint carries the member's k and since which step
    base = frontier(tmp_path, steps=200, **setting)
    (member,) = train_population(members(base, (6, 3)))
    longer = replace(base, echo_step=6, seed=3, steps=300)
    resumed = train(replace(longer, run_name="k6-s3"), resume=member.run_dir, verbose=False)
    # the same two sessions as single runs (a run that ended at 200 compared the kernel with
    # autograd at its last step, which an uninterrupted 300-step run does not)
    alone = train(replace(base, echo_step=6, seed=3, run_name="alone"), verbose=False)
    alone = train(replace(longer, run_name="alone"), resume=alone.run_dir, verbose=False)
    assert resumed.step == alone.step == 300
    assert_same_run(tmp_path / "k6-s3", tmp_path / "alone")


def test_who_may_join_a_population(tmp_path):
    base = frontier(tmp_path)
    assert population_key(base) == population_key(replace(base, echo_step=5, seed=9))
    assert population_key(base) != population_key(replace(base, lr=0.01))
    assert population_key(base) != population_key(replace(base, backend="bptt"))
    for change in (
        {"backend": "autograd"},
        {"curriculum": True, "lr_halve_every": 100},
        {"cuda_graph": True},
        {"schedule": "notebook", "batch_size": 1},
    ):
        assert population_key(replace(base, **change)) is None, change
    for change in (
        {"fused": True},
        {"optimizer": "sgd", "lr": 0.05},
        {"curriculum": True},
        {"lr_halve_every": 100},
    ):  # these may join
        assert population_key(replace(base, **change)) is not None, change
    with pytest.raises(ConfigError, match="^population: members must share"):
        train_population([base, replace(base, lr=0.01, run_name="other")])


def test_a_population_that_cannot_fit_is_refused_before_anything_is_written(tmp_path):
    base = frontier(tmp_path, hidden_size=256, batch_size=1000, seq_len=100)  # 1 GB: fits alone
    with pytest.raises(ConfigError, match="population: too large"):
        pt.check_population_memory([base] * 64, torch.device("cpu"))
    assert not any(tmp_path.iterdir())


def test_each_member_is_locked_while_its_population_trains(tmp_path, one_thread):
    # Before: the sweep's lock covered the population, but `train --resume` of a member's
    # directory while the population trained in it was not refused: two writers.
    from echo_rnn.engine.train import TrainingInterrupted
    from echo_rnn.run.locks import Busy, DirLock

    base = frontier(tmp_path, steps=50)
    configs = [replace(base, seed=s, run_name=f"s{s}") for s in range(2)]
    seen = []

    def try_the_members() -> bool:  # polled after the first step: the population is training
        for c in configs:
            try:
                DirLock(tmp_path / c.run_name).release()
                seen.append("free")
            except Busy as exc:
                seen.append(exc.pid)
        return True

    with pytest.raises(TrainingInterrupted):
        train_population(configs, stop=try_the_members)
    assert seen == [os.getpid(), os.getpid()]
    for c in configs:  # given back once the population stops
        DirLock(tmp_path / c.run_name).release()
