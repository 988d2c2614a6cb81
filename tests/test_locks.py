"""One run, one writer (issue 17): a run directory and a sweep are held by one process at a
time; a second is refused in one line naming the holder (exit 1), and a lock left by a dead
process blocks no one."""

import os
import pickle
import subprocess
import time

import pytest

from echo_rnn.config import ConfigError
from echo_rnn.engine.train import train
from echo_rnn.run.checkpoint import checkpoint_path, load_checkpoint
from echo_rnn.run.locks import LOCK_NAME, Busy, DirLock
from helpers import cli, python, run_main, small_config, small_flags


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_second_resume_is_refused_naming_the_holder(tmp_path, capsys):
    # Before: two `train --resume runs/r` at once both trained in the directory.
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    with DirLock(run.run_dir):  # this process, as the first resume would
        code, out, err = run_main("train", "--resume", run.run_dir, "--steps", "20", capsys=capsys)
    line = _one_line(err)
    assert code == 1, err
    assert f"in use by process {os.getpid()}" in line and LOCK_NAME in line
    assert load_checkpoint(run.run_dir)["step"] == 10  # nothing was trained
    code, _, err = run_main("train", "--resume", run.run_dir, "--steps", "20", capsys=capsys)
    assert code == 0, err  # released: the next one goes ahead
    assert load_checkpoint(run.run_dir)["step"] == 20


def test_a_resume_while_the_run_trains_is_refused(tmp_path):
    # Before: a resume started while the run was still training trained in it too.
    proc = cli(
        "train",
        *small_flags(tmp_path),
        "--run-name",
        "r",
        "--steps",
        "100000",
        "--echo-step",
        "9",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run = tmp_path / "runs" / "r"
    try:
        deadline = time.monotonic() + 60
        while not checkpoint_path(run).exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        second = cli("train", "--resume", run, "--steps", "200000")
        assert second.returncode == 1, second.stderr
        assert f"in use by process {proc.pid}" in _one_line(second.stderr)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert proc.returncode == 143


def test_a_lock_left_by_a_dead_process_blocks_no_one(tmp_path, capsys):
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    # a process that takes the lock and dies holding it, as kill -9 leaves it
    dead = python(
        "-c",
        "import os, signal, sys; from echo_rnn.run.locks import DirLock; "
        "DirLock(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)",
        run.run_dir,
    )
    assert dead.returncode == -9, dead.stderr
    assert (tmp_path / "runs" / "r" / LOCK_NAME).read_text().strip().isdigit()  # its pid
    code, _, err = run_main("train", "--resume", run.run_dir, "--steps", "20", capsys=capsys)
    assert code == 0, err


def test_two_sweeps_of_one_name_at_once_are_refused(tmp_path, capsys):
    # Before: two identical sweeps of one --name at once both trained every point, and each
    # point's events held every step twice.
    sweep_dir = tmp_path / "runs" / "s"
    sweep_dir.mkdir(parents=True)
    args = [
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "s",
        "--echo-steps",
        "1",
        "--hidden-sizes",
        "2",
        "--seeds",
        "0",
        "--steps",
        "10",
        "--seq-len",
        "8",
        "--val-size",
        "8",
        "--batch-size",
        "4",
        "--eval-every",
        "5",
        "--workers",
        "1",
    ]
    with DirLock(sweep_dir, "sweep"):
        code, out, err = run_main(*args, capsys=capsys)
    assert code == 1, err
    line = _one_line(err)
    assert f"sweep {sweep_dir} is in use by process {os.getpid()}" in line
    assert sorted(p.name for p in sweep_dir.iterdir()) == [LOCK_NAME]  # nothing written
    code, out, err = run_main(*args, capsys=capsys)
    assert code == 0, err


def test_a_point_held_by_another_process_stops_the_sweep_in_one_line(tmp_path, capsys):
    args = [
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "s",
        "--echo-steps",
        "1",
        "--hidden-sizes",
        "2",
        "--seeds",
        "0",
        "--steps",
        "20",
        "--seq-len",
        "8",
        "--val-size",
        "8",
        "--batch-size",
        "4",
        "--eval-every",
        "5",
        "--workers",
        "1",
    ]
    code, _, err = run_main(*args, "--steps", "10", capsys=capsys)
    assert code == 0, err
    point = tmp_path / "runs" / "s" / "k1-H2-s0"
    with DirLock(point):  # a `train --resume` of the point, say
        code, _, err = run_main(*args, capsys=capsys)  # more steps: the point continues
    assert code == 1 and f"run {point} is in use by process {os.getpid()}" in _one_line(err)
    assert load_checkpoint(point)["step"] == 10


def test_refusals_cross_process_boundaries():
    # A worker's or a rank's refusal is pickled to the process that reports it.
    busy = pickle.loads(pickle.dumps(Busy("run", "runs/r", 42)))
    assert str(busy) == str(Busy("run", "runs/r", 42)) and busy.pid == 42
    err = pickle.loads(pickle.dumps(ConfigError("name", "taken")))
    assert (err.setting, err.detail) == ("name", "taken")


def test_a_lock_is_exclusive_and_given_back(tmp_path):
    with DirLock(tmp_path):
        with pytest.raises(Busy, match=f"in use by process {os.getpid()}"):
            DirLock(tmp_path)
    DirLock(tmp_path).release()
