"""A checkpoint is checked to its last field before anything is built from it: the kind,
dtype, layout, device, shape and values of every tensor, and the agreement of the optimizer's
state and the curriculum with the run's config. Each problem is one bounded line naming the
field, exit 2 (issue 17)."""

import json
import shutil

import pytest
import torch

import echo_rnn.run.checkpoint as ckpt
from echo_rnn.engine.train import train
from echo_rnn.run.checkpoint import CheckpointError, load_checkpoint
from helpers import cli, run_main, small_config

# A message is one line of about a terminal's width, whatever the file holds.
MAX_LINE = 800


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished small Adam run (H = 4, T = 20, k = 2, lr 0.02)."""
    return train(
        small_config(tmp_path_factory.mktemp("run"), run_name="r", steps=10), verbose=False
    )


class Deep:
    """Where a list nested ``depth`` deep goes: torch.save cannot pickle one (it recurses),
    so the pickle's opcodes for it are written into the archive afterwards."""

    MARK = "<<nested list>>"

    def __init__(self, depth):
        self.depth = depth


def _crafted(tmp_path, run, change):
    """A copy of the run's directory whose checkpoint ``change`` altered; only its contents
    are wrong (the format and version are ours)."""
    import zipfile

    run_dir = tmp_path / "crafted"
    shutil.copytree(run.run_dir, run_dir)
    state = load_checkpoint(run_dir)
    change(state)
    deep = _take_deep(state)
    path = ckpt.checkpoint_path(run_dir)
    torch.save(state, path)
    if deep is not None:
        mark = Deep.MARK.encode()
        # protocol 2: d empty lists, the int 0, d appends -> [[...[0]...]]
        nested = b"]" * deep + b"K\x00" + b"a" * deep
        with zipfile.ZipFile(path) as zf:
            entries = [(i, zf.read(i)) for i in zf.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for info, data in entries:
                if info.filename.endswith("data.pkl"):
                    data = data.replace(b"X" + len(mark).to_bytes(4, "little") + mark, nested)
                zf.writestr(info, data)
    return run_dir


def _take_deep(obj):
    """Replace the one Deep in ``obj`` (nested dicts) by Deep.MARK; its depth, or None."""
    for key, value in obj.items():
        if isinstance(value, Deep):
            obj[key] = Deep.MARK
            return value.depth
        if isinstance(value, dict):
            found = _take_deep(value)
            if found is not None:
                return found
    return None


def _set(path, value):
    """Set ``state[a][b]...`` for the keys of ``path`` (a tuple); a callable value is called
    with the current one."""

    def change(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return change


def _nested(depth):
    return Deep(depth)


def _sgd_state(state):
    group = state["optimizer"]["param_groups"][0]
    state["optimizer"] = {
        "state": {},
        "param_groups": [
            {
                "lr": group["lr"],
                "momentum": 0,
                "dampening": 0,
                "weight_decay": 0,
                "nesterov": False,
                "maximize": False,
                "foreach": None,
                "differentiable": False,
                "fused": None,
                "params": group["params"],
            }
        ],
    }


def _quantized(shape):
    import warnings

    with warnings.catch_warnings():  # "quantized tensors are deprecated": still loadable
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.zeros(shape), 0.1, 0, torch.qint8)


ADAM = ("optimizer", "state", 0)
GROUP = ("optimizer", "param_groups", 0)

CASES = {
    # the optimizer's state against the model's parameters
    "exp_avg of U too small": (_set(ADAM + ("exp_avg",), torch.zeros(3, 3)), "exp_avg of U"),
    "exp_avg_sq of V wrong": (
        _set(("optimizer", "state", 1, "exp_avg_sq"), torch.zeros(4)),
        "exp_avg_sq of V",
    ),
    "exp_avg a string": (_set(ADAM + ("exp_avg",), "abc"), "exp_avg of U must be a tensor"),
    "exp_avg NaN": (
        _set(ADAM + ("exp_avg",), torch.full((4, 4), float("nan"))),
        "exp_avg of U holds NaN",
    ),
    "exp_avg float64": (
        _set(ADAM + ("exp_avg",), torch.zeros(4, 4, dtype=torch.float64)),
        "exp_avg of U must be a float32 tensor",
    ),
    "state of a 5th param": (_set(("optimizer", "state", 4), {}), "parameter id 4"),
    "state missing exp_avg": (
        lambda s: s["optimizer"]["state"][0].pop("exp_avg"),
        "state of U must hold",
    ),
    "param ids repeat": (_set(GROUP + ("params",), [0, 1, 1]), "param ids must be [0, 1, 2]"),
    "param ids as floats": (_set(GROUP + ("params",), [0.0, 1, 2]), "param ids"),
    "lr 1e-30": (_set(GROUP + ("lr",), 1e-30), "its config says lr = 0.02"),
    "lr a string": (_set(GROUP + ("lr",), "0.02"), "lr must be a finite number"),
    "lr a tensor": (_set(GROUP + ("lr",), torch.tensor(0.02)), "lr must be a finite number"),
    "betas": (_set(GROUP + ("betas",), (0.5, 0.999)), "betas"),
    "eps": (_set(GROUP + ("eps",), 1.0), "eps"),
    "weight decay": (_set(GROUP + ("weight_decay",), 0.1), "weight_decay"),
    "amsgrad": (_set(GROUP + ("amsgrad",), True), "amsgrad"),
    "unfused in a fused run": (_set(GROUP + ("fused",), None), "fused"),
    "sgd state in an adam run": (_sgd_state, "not adam's"),
    "optimizer step negative": (_set(ADAM + ("step",), torch.tensor(-1.0)), "step of U"),
    "optimizer step NaN": (_set(ADAM + ("step",), torch.tensor(float("nan"))), "step of U"),
    "optimizer step a string": (_set(ADAM + ("step",), "10"), "step of U must be a tensor"),
    "optimizer step nested": (_set(ADAM + ("step",), _nested(200_000)), "step of U"),
    "optimizer without param_groups": (
        lambda s: s["optimizer"].pop("param_groups"),
        "optimizer must hold state and param_groups",
    ),
    # the curriculum against the config
    "curriculum k far from echo_step": (_set(("curriculum", "k"), 19), "curriculum k must be 2"),
    "curriculum k = seq_len": (_set(("curriculum", "k"), 20), "curriculum k"),
    "curriculum k a string": (_set(("curriculum", "k"), "2"), "curriculum k"),
    "curriculum k_since ahead": (_set(("curriculum", "k_since"), 11), "k_since"),
    "curriculum unknown field": (_set(("curriculum", "x"), 1), "curriculum must hold"),
    # tensor kinds the weights cannot be
    "float8 weight": (
        _set(("model", "U"), lambda t: t.to(torch.float8_e4m3fn)),
        "weight U must be a float32 tensor",
    ),
    "float64 weight": (_set(("model", "U"), lambda t: t.double()), "float32"),
    "sparse COO weight": (_set(("model", "U"), lambda t: t.to_sparse()), "dense"),
    "sparse CSR weight": (_set(("model", "U"), lambda t: t.to_sparse_csr()), "dense"),
    "meta weight": (_set(("model", "U"), torch.empty(4, 4, device="meta")), "meta device"),
    "quantized weight": (_set(("model", "U"), lambda t: _quantized(t.shape)), "quantized"),
    "sparse exp_avg": (_set(ADAM + ("exp_avg",), torch.zeros(4, 4).to_sparse()), "dense"),
    "meta exp_avg_sq": (_set(ADAM + ("exp_avg_sq",), torch.empty(4, 4, device="meta")), "meta"),
    "rng on meta": (
        _set(("rng", "train"), torch.empty(5056, dtype=torch.uint8, device="meta")),
        "rng state",
    ),
    # shapes of values no message may print whole
    "step nested 200000 deep": (_set(("step",), _nested(200_000)), "step must be an integer"),
    "step a 1M-element list": (_set(("step",), list(range(10**6))), "step must be an integer"),
    "huge integer step": (_set(("step",), 10**600), "step must be an integer"),
    "config value nested": (_set(("config", "hidden_size"), _nested(200_000)), "hidden_size"),
    "config key not a string": (_set(("config", 7), 1), "unknown setting 7"),
    "config key twice": (_set(("config", "hidden-size"), 4), "hidden_size is set twice"),
    "window nested": (_set(("window",), _nested(200_000)), "its window"),
    "unknown field": (_set(("extra",), 1), "a field echo-rnn does not write: 'extra'"),
    "unknown progress field": (_set(("progress", "x"), 1), "its progress holds a field"),
    "negative wall time": (_set(("progress", "wall_time_s"), -5.0), "wall_time_s"),
    "last_eval nested": (
        _set(("progress", "last_eval"), {"a": _nested(200_000)}),
        "its last evaluation",
    ),
}


@pytest.mark.slow  # some 60 crafted checkpoints: the full suite runs them all
@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_field_is_refused_in_one_bounded_line(tmp_path, run, capsys, case):
    # Before: a segmentation fault or an abort (exp_avg of U (3, 3)), tracebacks of 20-111
    # lines (a string for exp_avg or lr, SGD state in an Adam run, float8, sparse, meta,
    # quantized tensors, k = seq_len), a RecursionError (a step nested 200000 deep), a
    # 7.9-million-character line (a 1M-element step), or silently accepted (exp_avg_sq of
    # the wrong shape, param ids [0, 1, 1], lr 1e-30, k = 19 in a run of k = 2).
    change, needle = CASES[case]
    run_dir = _crafted(tmp_path, run, change)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run_dir)
    message = str(info.value)
    assert needle in message and "\n" not in message and len(message) < MAX_LINE, message
    for command in (["train", "--resume", run_dir], ["predict", "--checkpoint", run_dir, "01"]):
        code, out, err = run_main(*command, capsys=capsys)
        assert code == 2 and out == "", (command, err)
        assert err.count("\n") == 1 and needle in err and len(err) < MAX_LINE + 100, err


def test_a_crash_in_torch_optim_never_happens(tmp_path, run):
    # Before: `train --resume` died with signal 11 or 6 inside torch.optim: the check must
    # come before the state is loaded into the optimizer (a process of its own, so that a
    # crash fails this test rather than killing the suite).
    run_dir = _crafted(tmp_path, run, _set(ADAM + ("exp_avg",), torch.zeros(3, 3)))
    proc = cli("train", "--resume", run_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "exp_avg of U must have shape (4, 4)" in proc.stderr


def test_checkpoints_of_every_kind_of_run_still_pass(tmp_path):
    # The checks accept what echo-rnn writes: SGD, a curriculum part-way, a halved lr, bias.
    for name, extra in {
        "sgd": dict(optimizer="sgd", lr=0.1, bias=True),
        "curriculum": dict(
            curriculum=True, echo_step=3, curriculum_patience=5, lr_halve_every=3, steps=30
        ),
        "unfused": dict(fused=False, grad_clip=1.0),
    }.items():
        result = train(
            small_config(tmp_path, run_name=name, **{"steps": 12, **extra}), verbose=False
        )
        state = load_checkpoint(result.run_dir)
        if name == "curriculum":
            assert state["optimizer"]["param_groups"][0]["lr"] < 0.02  # halved on the way
        resumed = train(
            small_config(tmp_path, run_name=name, **{**extra, "steps": 40}),
            resume=result.run_dir,
            verbose=False,
        )
        assert resumed.step >= result.step


@pytest.mark.parametrize("steps", ["0", "1000000001"])
def test_resume_with_steps_out_of_bounds_names_steps(run, capsys, steps):
    # Before: "argument --resume: steps: must be ...", naming the wrong flag.
    code, _, err = run_main("train", "--resume", run.run_dir, "--steps", steps, capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    assert "argument --steps: must be a positive integer up to 1000000000" in err, err


def _unreadable(monkeypatch, where):
    """Make ``where`` unreadable for this process as chmod 000 would (the tests may run as
    root, which chmod does not stop)."""
    import os

    real_stat, real_open = os.stat, open
    where = str(where)

    def inside(path):
        try:
            text = os.fsdecode(path)
        except TypeError:
            return False
        return text.startswith(where + "/")

    def stat(path, *a, **k):
        if not isinstance(path, int) and inside(path):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_stat(path, *a, **k)

    def open_(path, *a, **k):
        if not isinstance(path, int) and inside(path):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr("builtins.open", open_)


@pytest.mark.parametrize("what", ["run directory", "checkpoints"])
def test_an_unreadable_run_directory_is_one_line(tmp_path, run, capsys, monkeypatch, what):
    # Before: a PermissionError traceback from Path.is_file.
    run_dir = tmp_path / "locked"
    shutil.copytree(run.run_dir, run_dir)
    _unreadable(monkeypatch, run_dir if what == "run directory" else run_dir / "checkpoints")
    with pytest.raises(CheckpointError, match="Permission denied"):
        load_checkpoint(run_dir)
    for command in (["predict", "--checkpoint", run_dir, "01"], ["train", "--resume", run_dir]):
        code, _, err = run_main(*command, capsys=capsys)
        assert code == 2 and err.count("\n") == 1 and "Permission denied" in err, err


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda p: p.write_text("{not json"), "not JSON"),
        (lambda p: p.write_text(json.dumps({"step": 10})), "lacks"),
        (lambda p: p.write_text("[1, 2]"), "not a JSON object"),
        (lambda p: (p.unlink(), p.mkdir()), "directory"),
    ],
)
def test_a_damaged_summary_is_one_line(tmp_path, damage, needle):
    # Before: JSONDecodeError, KeyError or IsADirectoryError tracebacks from the sweep,
    # which reads a finished point back from its summary.json.
    from echo_rnn.run.checkpoint import read_summary

    result = train(small_config(tmp_path, run_name="p", steps=5), verbose=False)
    summary = tmp_path / "runs" / "p" / "summary.json"
    assert read_summary(result.run_dir)["step"] == 5
    damage(summary)
    with pytest.raises(CheckpointError) as info:
        read_summary(result.run_dir)
    message = str(info.value)
    assert needle in message and "summary.json" in message and "\n" not in message, message


def test_a_sweep_point_with_a_damaged_summary_is_one_line(tmp_path):
    # The sweep reads a finished point back from its summary.json (to skip it, or for its
    # row); cmd_sweep prints the CheckpointError in one line. Before: a JSONDecodeError.
    from echo_rnn.sweep import _row, needs_run

    config = small_config(tmp_path, run_name="k2-H4-s0", steps=5)
    train(config, verbose=False)
    (tmp_path / "runs" / "k2-H4-s0" / "summary.json").write_text("{not json")
    for read in (needs_run, _row):
        with pytest.raises(CheckpointError, match="summary.json is not JSON"):
            read(config)


@pytest.mark.parametrize("backend", ["compiled", "bptt"])
@pytest.mark.parametrize("missing", ["optimizer", "rng"])
def test_a_checkpoint_without_its_optimizer_or_stream_is_refused_on_resume(
    tmp_path, capsys, backend, missing
):
    # the record's check accepts a table without them (predict needs neither); a resume
    # says so in one line instead of a traceback from loading None
    run = train(small_config(tmp_path, run_name="r", steps=10, backend=backend), verbose=False)
    path = ckpt.checkpoint_path(run.run_dir)
    state = load_checkpoint(path)
    del state[missing]
    torch.save(state, path)
    code, out, err = run_main("train", "--resume", run.run_dir, "--steps", "20", capsys=capsys)
    assert code == 2 and "Traceback" not in err, err
    assert err.count("\n") == 1 and f"holds no {missing} state" in err
