"""Shared test helpers: small fast configs, reading runs back with TensorBoard's own reader."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from echo_rnn.config import TrainConfig

SMALL = dict(
    seq_len=20,
    echo_step=2,
    hidden_size=4,
    batch_size=8,
    steps=40,
    eval_every=10,
    val_size=32,
    log_every=5,
    device="cpu",
    # a checkpoint at every evaluation, as the tests of what happens at one assume (the
    # default cadence has tests of its own)
    checkpoint_every=1,
)


def small_config(tmp_path: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**SMALL, "logdir": str(tmp_path / "runs"), **overrides})


def small_flags(tmp_path: Path) -> list[str]:
    flags = []
    for k, v in {**SMALL, "logdir": str(tmp_path / "runs")}.items():
        flags += [f"--{k.replace('_', '-')}", str(v)]
    return flags


def events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


# Where a run writes each of its series (echo_rnn.run.runlog): (TensorBoard run under the run
# directory, tag).
SERIES = {
    "train loss": ("", "loss/train"),
    "val loss": ("", "loss/val"),
    "val accuracy": ("", "accuracy/val"),
    "grad norm": ("", "training/gradient norm"),
    "lr": ("", "training/lr"),
    "curriculum k": ("", "training/curriculum k"),
    "kernel vs autograd": ("", "training/kernel vs autograd (rounding units)"),
    "solved": ("", "solved"),
    "solved step": ("", "solved_step"),
}


def scalar_series(run_dir, name):
    """[(step, value)] of the series ``name`` (a key of SERIES) in a run directory."""
    sub, tag = SERIES[name]
    return [(e.step, e.value) for e in events(Path(run_dir) / sub).Scalars(tag)]


def run_main(*args, capsys):
    """The CLI in this process: (exit status, stdout, stderr); faster than a subprocess for
    checks that need no process of their own."""
    from echo_rnn.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def python(*args, cwd=None, env=None, input=None, timeout=300, **popen):
    """The one way the tests start a process: ``python ARGS``, run to the end (a
    CompletedProcess, text output captured, ``input`` on its stdin), or, given Popen's
    keywords (stdout=PIPE, ...), started and returned as a Popen. ``env`` adds to this
    process's environment.

    A process gets one OpenMP thread unless the environment or the test says otherwise: the
    suite runs two workers on two cores, and children at torch's default (a thread per core)
    each would oversubscribe them. Training is unaffected (a run pins its own threads,
    --threads); tests of thread-count independence pass their own OMP_NUM_THREADS."""
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=env, text=True, **popen)
    return subprocess.run(
        cmd, cwd=cwd, env=env, text=True, capture_output=True, input=input, timeout=timeout
    )


def cli(*args, **kwargs):
    """``echo-rnn ARGS`` in a subprocess (see :func:`python`)."""
    return python("-m", "echo_rnn", *args, **kwargs)


@contextlib.contextmanager
def tiny_disk(tmp_path, size: str):
    """A tmpfs of ``size`` (``"200k"``) under ``tmp_path``: a real full disk. Needs root and
    mount rights; the test is skipped without them."""
    where = tmp_path / "disk"
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:80]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
