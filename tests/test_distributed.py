"""Data-parallel training under torchrun (2 CPU ranks, gloo) against one process."""

import textwrap
from pathlib import Path

import pytest
import torch

from echo_rnn.model import EchoRNN
from echo_rnn.run.checkpoint import load_checkpoint
from helpers import cli, python, scalar_series, small_flags

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="torch.distributed is not available"
    ),
]


def torchrun(*args, cwd=None, program=("-m", "echo_rnn")):
    """2 CPU ranks of ``program`` (the CLI unless a script is given) with ``args``."""
    return python(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        *program,
        *args,
        cwd=cwd,
    )


@pytest.mark.parametrize("backend", ["autograd", "bptt"])
def test_two_ranks_take_the_gradient_of_the_whole_batch(tmp_path, backend):
    # One SGD step with lr 1 moves the weights by exactly minus the gradient.
    flags = [
        *small_flags(tmp_path),
        "--optimizer",
        "sgd",
        "--lr",
        "1",
        "--steps",
        "1",
        "--eval-every",
        "1",
        "--backend",
        backend,
    ]
    ddp = torchrun("train", *flags, "--run-name", "ddp")
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one = cli("train", *flags, "--run-name", "one")
    assert one.returncode == 0, one.stderr
    runs = tmp_path / "runs"
    a, b = load_checkpoint(runs / "ddp")["model"], load_checkpoint(runs / "one")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    # the step really moved the weights, so the comparison has something to compare
    m = EchoRNN(4)
    m.reset_parameters(generator=torch.Generator().manual_seed(0))
    assert (m.U.detach() - b["U"]).abs().max() > 1e-4
    # the logged loss is the global batch's
    ((step_a, loss_a),) = scalar_series(runs / "ddp", "train loss")
    ((step_b, loss_b),) = scalar_series(runs / "one", "train loss")
    assert step_a == step_b == 1 and loss_a == pytest.approx(loss_b, rel=1e-6)


def test_ddp_resume_continues_the_same_curve(tmp_path):
    # the torch kernel, which trains under torchrun (auto picks it there), for both
    flags = [*small_flags(tmp_path), "--echo-step", "9", "--backend", "bptt"]
    first = torchrun("train", *flags, "--run-name", "d", "--steps", "20")
    assert first.returncode == 0, first.stderr[-2000:]
    runs = tmp_path / "runs"
    # rank 0 alone wrote: one event file, the run's one TensorBoard run
    assert sorted(
        str(p.relative_to(runs / "d")).split(".")[0] for p in (runs / "d").rglob("events*")
    ) == ["events"]
    again = torchrun("train", "--resume", runs / "d", "--steps", "40")
    assert again.returncode == 0, again.stderr[-2000:]
    one = cli("train", *flags, "--run-name", "one", "--steps", "40")
    assert one.returncode == 0
    got, want = scalar_series(runs / "d", "train loss"), scalar_series(runs / "one", "train loss")
    assert [s for s, _ in got] == list(range(5, 41, 5))  # no duplicate steps after the resume
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5)


THREADS_AROUND_TRAIN = textwrap.dedent("""
    import os, sys, threading
    from pathlib import Path
    from echo_rnn.cli import main

    def threads():  # native threads only: tqdm's monitor is a Python thread, and harmless
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    # The intra-op (OpenMP) pool starts its workers at the first parallel op and keeps them:
    # start it here, so that only the process group's threads can make a difference (with
    # OMP_NUM_THREADS=2 a rank's first 2-thread op would otherwise count as a leak).
    import torch
    (torch.ones(1 << 20) * 2).sum()
    before = threads()
    code = main(sys.argv[1:])
    # a file per rank: the ranks share one stdout, where their lines can interleave
    rank = os.environ["RANK"]
    Path(__file__).with_name(f"rank{rank}.txt").write_text(
        f"exit {code}, threads {before} -> {threads()}")
""")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_ddp_train_leaves_no_process_group_threads_behind(tmp_path):
    # A gloo worker thread that outlives the process group can still be dropping a finished
    # collective's tensors when the interpreter shuts down, which aborts the rank (SIGABRT,
    # "terminate called without an active exception", seen in CI at random). Training under
    # torchrun must hand back every thread it started before the process exits.
    script = tmp_path / "count_threads.py"
    script.write_text(THREADS_AROUND_TRAIN)
    proc = torchrun("train", *small_flags(tmp_path), "--steps", "10", program=[script])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rank in (0, 1):
        line = (tmp_path / f"rank{rank}.txt").read_text()
        assert line.startswith("exit 0, "), line
        counts = line.split("threads ")[1].split(" -> ")
        assert counts[0] == counts[1], f"rank {rank}: {line}"


def test_batch_must_split_evenly(tmp_path):
    proc = torchrun("train", *small_flags(tmp_path), "--batch-size", "7")
    assert proc.returncode != 0
    assert "--batch-size: must be divisible by the 2 processes, got 7" in proc.stderr
    assert not (tmp_path / "runs").exists()
