"""Issue 8's promises under hostile conditions: thread counts, signals at any moment, full
disks, divergence, collisions. Each case here failed once; the comment says how."""

import errno
import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import echo_rnn.engine.loop as loop_mod
import echo_rnn.engine.steppers as steppers
import echo_rnn.engine.train as train_mod
import echo_rnn.run.rundir as rundir_mod
import echo_rnn.run.runlog as runlog_mod
import helpers
from echo_rnn.config import ConfigError
from echo_rnn.engine.train import train
from echo_rnn.run.checkpoint import checkpoint_path, load_checkpoint
from echo_rnn.run.rundir import StorageError
from helpers import cli, events, run_main, scalar_series, small_config, small_flags

# --- threads: the curve depends on the count, so the run sets it --------------------------


def test_curve_does_not_depend_on_the_environments_thread_count(tmp_path):
    # Before: a subprocess under OMP_NUM_THREADS=2 trained on 2 threads, and its curve
    # differed in the last bit from the same run on 1 thread.
    proc = cli(
        "train",
        *small_flags(tmp_path),
        "--run-name",
        "env2",
        "--hidden-size",
        "16",
        "--batch-size",
        "64",
        env={"OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    ours = train(
        small_config(tmp_path, run_name="here", hidden_size=16, batch_size=64), verbose=False
    )
    assert json.loads((tmp_path / "runs" / "env2" / "config.json").read_text())["threads"] == 1
    for tag in ("train loss", "val loss"):
        assert scalar_series(tmp_path / "runs" / "env2", tag) == scalar_series(ours.run_dir, tag)


def test_train_sets_its_threads_and_gives_them_back(tmp_path, monkeypatch):
    seen = []
    for stepper in (steppers.CompiledStepper, steppers.ModelStepper):  # whichever trains
        monkeypatch.setattr(
            stepper,
            "step",
            lambda self, step, real=stepper.step: (
                seen.append(torch.get_num_threads()),
                real(self, step),
            )[1],
        )
    before = torch.get_num_threads()
    rng = torch.random.get_rng_state()
    train(small_config(tmp_path, threads=2, steps=3), verbose=False)
    assert set(seen) == {2}
    assert torch.get_num_threads() == before
    assert torch.equal(torch.random.get_rng_state(), rng)  # the run draws from its own


# --- signals at every moment ---------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, sig):
    # Before: Ctrl-C while torch loaded gave a KeyboardInterrupt traceback, SIGTERM a silent
    # death by signal (-15), and either could leave a directory with config and events but
    # no checkpoint, which --resume and a re-run both refused.
    flags = [*small_flags(tmp_path), "--steps", "100000", "--echo-step", "9", "--seq-len", "40"]
    for i, delay in enumerate((0.4, 1.2, 2.8)):  # torch loading, then the run starting
        proc = cli(
            "train", *flags, "--run-name", f"r{i}", stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, (delay, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, (delay, err)
        run = tmp_path / "runs" / f"r{i}"
        assert not run.exists() or load_checkpoint(run)["step"] >= 0, delay


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_first_evaluation_leaves_a_resumable_run(tmp_path, monkeypatch, sig):
    real = loop_mod._evaluate

    def interrupted(stepper, runs, active, step, *args):
        if step == 0:
            os.kill(os.getpid(), sig)  # held until the first checkpoint is written
        return real(stepper, runs, active, step, *args)

    monkeypatch.setattr(loop_mod, "_evaluate", interrupted)
    with pytest.raises(train_mod.TrainingInterrupted) as info:
        train(small_config(tmp_path, run_name="r"), verbose=False)
    assert info.value.signum == sig and info.value.step == 0
    monkeypatch.setattr(loop_mod, "_evaluate", real)
    resumed = train(
        small_config(tmp_path, run_name="r", steps=20),
        resume=tmp_path / "runs" / "r",
        verbose=False,
    )
    whole = train(small_config(tmp_path, run_name="whole", steps=20), verbose=False)
    assert scalar_series(resumed.run_dir, "train loss") == scalar_series(
        whole.run_dir, "train loss"
    )


def test_a_signal_before_the_run_exists_writes_nothing(tmp_path):
    received = []

    def signal_during_setup(config):
        run_dir = real(config)
        os.kill(os.getpid(), signal.SIGTERM)  # held by train until it can act on it
        received.append(run_dir)
        return run_dir

    real = rundir_mod.create_run_dir
    rundir_mod.create_run_dir = signal_during_setup
    try:
        with pytest.raises(train_mod.TrainingInterrupted, match="before the run started"):
            train(small_config(tmp_path, run_name="x"), verbose=False)
    finally:
        rundir_mod.create_run_dir = real
    assert received and not received[0].exists()


# --- run directories -----------------------------------------------------------------------


def test_creating_a_run_directory_is_atomic(tmp_path, monkeypatch):
    # Before: two runs started in the same second shared one directory.
    monkeypatch.setattr(rundir_mod, "default_run_name", lambda config: "same")
    a = rundir_mod.create_run_dir(small_config(tmp_path))
    b = rundir_mod.create_run_dir(small_config(tmp_path))
    assert a != b and a.name == "same" and b.name == "same-1"
    rundir_mod.create_run_dir(small_config(tmp_path, run_name="mine"))
    with pytest.raises(ConfigError, match="already exists"):
        rundir_mod.create_run_dir(small_config(tmp_path, run_name="mine"))


def test_default_run_names_say_what_ran_first(tmp_path):
    name = rundir_mod.default_run_name(small_config(tmp_path, seed=3, backend="autograd"))
    assert name.startswith("k2-H4-autograd-s3-")
    # auto is named after the kernel it picked
    name = rundir_mod.default_run_name(small_config(tmp_path, seed=3, schedule="notebook"))
    assert name.startswith("k2-H4-bptt-s3-")


@pytest.mark.parametrize("case", ["logdir_is_a_file", "name_too_long", "unwritable"])
def test_file_system_errors_are_one_line(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    flags = small_flags(tmp_path)
    if case == "logdir_is_a_file":
        (tmp_path / "runs").write_text("not a directory")
        needle = "argument --logdir: cannot create " + str(tmp_path / "runs") + "/"
    elif case == "name_too_long":
        flags += ["--run-name", "n" * 300]
        needle = "argument --run-name: must be a directory name of at most 255 bytes"
    else:
        real = Path.mkdir

        def read_only(self, *a, **k):
            if self.parent == tmp_path / "runs":
                raise PermissionError(errno.EROFS, "Read-only file system", str(self))
            return real(self, *a, **k)

        monkeypatch.setattr(Path, "mkdir", read_only)
        needle = "argument --logdir: cannot create " + str(tmp_path / "runs") + "/"
    code, out, err = run_main("train", *flags, capsys=capsys)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1
    runs = tmp_path / "runs"
    assert not runs.is_dir() or list(runs.iterdir()) == []


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"\xff\xfe\x00bad", "is not UTF-8 text"),
        (None, "a part of the path is a file"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, capsys, content, needle):
    if content is None:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "c.toml"
    else:
        path = tmp_path / "c.toml"
        path.write_bytes(content)
    code, _, err = run_main("train", "--config", path, "--logdir", tmp_path / "runs", capsys=capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


# --- resume ----------------------------------------------------------------------------


def test_resuming_a_finished_run_logs_nothing_twice(tmp_path):
    run = train(small_config(tmp_path, run_name="r", steps=20), verbose=False)
    for _ in range(2):
        again = train(
            small_config(tmp_path, run_name="r", steps=20), resume=run.run_dir, verbose=False
        )
        assert again.step == 20
    acc = events(Path(run.run_dir))
    for tag in acc.Tags()["scalars"]:
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), (tag, steps)
    # the hparams were written again, once: the resumes cut them off with what came after
    # the last checkpoint
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    starts = [
        e
        for e in EventFileLoader(str(_event_file(Path(run.run_dir)))).Load()
        if any(v.tag == "_hparams_/session_start_info" for v in e.summary.value)
    ]
    assert len(starts) == 1


def _event_file(directory: Path) -> Path:
    (f,) = directory.glob("events.out.tfevents.*")
    return f


def test_kill_9_between_checkpoints_then_resume_shows_each_step_once(tmp_path):
    # Before: a resume opened a second event file, whose name could sort before the first
    # (same second, pid.10 < pid.9) so that TensorBoard read the run out of order, and the
    # steps the killed session logged after its last checkpoint were logged again.
    flags = [*small_flags(tmp_path), "--steps", "2000", "--eval-every", "1000", "--log-every", "1"]
    proc = cli(
        "train", *flags, "--run-name", "k", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run = tmp_path / "runs" / "k"
    try:
        deadline = time.monotonic() + 120
        # past the checkpoint at step 0, well into the stretch before the next one
        at_checkpoint = None
        while time.monotonic() < deadline:
            if at_checkpoint is None and (run / "checkpoints" / "last.pt").exists():
                at_checkpoint = load_checkpoint(run)["events"][""]
            if (
                at_checkpoint is not None
                and _event_file(run).stat().st_size > at_checkpoint + 40_000
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run logged nothing within 120 s")
    finally:
        proc.kill()
        proc.wait()
    assert load_checkpoint(run)["step"] == 0  # killed between checkpoints
    logged = max(s for s, _ in scalar_series(run, "train loss"))
    assert logged > 100  # steps logged after the checkpoint, now to be cut off
    again = cli("train", "--resume", run, "--steps", "2000")
    assert again.returncode == 0, again.stderr
    whole = cli("train", *flags, "--run-name", "whole")
    assert whole.returncode == 0, whole.stderr
    for name in ("train loss", "val loss", "val accuracy", "grad norm"):
        got, want = scalar_series(run, name), scalar_series(tmp_path / "runs" / "whole", name)
        assert got == want, name
    # one file, whatever sessions wrote it
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


def test_checkpoints_come_every_nth_evaluation_and_a_crash_resumes_the_same_curve(
    tmp_path, monkeypatch, capsys
):
    """--checkpoint-every 3 at --eval-every 10: checkpoints at step 0, every third evaluation
    and the end. A process that dies at step 50 (no signal: nothing is saved then) leaves step
    30's; resumed from it, the run logs each step once and its curves and weights are the
    uninterrupted run's."""
    saved = []
    real_save = loop_mod.save_checkpoint

    def spy(path, state, durable=True):
        saved.append(state["step"])
        real_save(path, state, durable)

    monkeypatch.setattr(loop_mod, "save_checkpoint", spy)
    config = small_config(tmp_path, steps=70, checkpoint_every=3)
    train(replace(config, run_name="whole"), verbose=False)
    assert saved == [0, 30, 60, 70]

    saved.clear()
    real_step = steppers.CompiledStepper.step

    def dies_at_50(self, step):
        if step == 50:
            raise MemoryError("the process dies here")
        return real_step(self, step)

    monkeypatch.setattr(steppers.CompiledStepper, "step", dies_at_50)
    with pytest.raises(MemoryError):
        train(replace(config, run_name="crashed"), verbose=False)
    run = tmp_path / "runs" / "crashed"
    assert saved == [0, 30] and load_checkpoint(run)["step"] == 30
    monkeypatch.setattr(steppers.CompiledStepper, "step", real_step)
    code, _, err = run_main("train", "--resume", run, capsys=capsys)
    assert code == 0, err
    whole = tmp_path / "runs" / "whole"
    for name in ("train loss", "val loss", "val accuracy", "grad norm"):
        assert scalar_series(run, name) == scalar_series(whole, name), name
    got, want = load_checkpoint(run)["model"], load_checkpoint(whole)["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_resume_from_a_loose_checkpoint_file_writes_nowhere(tmp_path, capsys):
    # Before: --resume x/my.pt wrote the run into the file's grandparent.
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    loose = tmp_path / "a" / "x" / "my.pt"
    loose.parent.mkdir(parents=True)
    loose.write_bytes(checkpoint_path(run.run_dir).read_bytes())
    code, _, err = run_main("train", "--resume", loose, "--steps", "20", capsys=capsys)
    assert code == 2 and "is not inside a run directory" in err, err
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == ["my.pt", "x"]


def test_a_resumed_run_says_so(tmp_path, capsys):
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    code, _, err = run_main("train", "--resume", run.run_dir, "--steps", "20", capsys=capsys)
    assert code == 0 and "resuming r from step 10" in err, err


# --- a full disk, divergence -------------------------------------------------------------


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = loop_mod.save_checkpoint
    calls = []

    def fills_up(path, state, durable=True):
        calls.append(state["step"])
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, state, durable)

    monkeypatch.setattr(loop_mod, "save_checkpoint", fills_up)
    code, _, err = run_main("train", *small_flags(tmp_path), "--run-name", "full", capsys=capsys)
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    ckpt = checkpoint_path(tmp_path / "runs" / "full")
    assert "the disk is full" in err and f"the last good checkpoint is {ckpt} (step 10)" in err
    assert load_checkpoint(ckpt)["step"] == 10


def test_resuming_on_a_full_disk_leaves_no_empty_event_file(tmp_path, monkeypatch):
    run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
    before = sorted(str(p.relative_to(run.run_dir)) for p in Path(run.run_dir).rglob("*"))
    import echo_rnn.run.runlog

    def full(directory, **kwargs):
        (Path(directory) / "events.out.tfevents.0.full").touch()  # created, then nothing fits
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(echo_rnn.run.runlog, "EventFile", full)
    with pytest.raises(
        StorageError, match=r"the disk is full; the last good checkpoint is .*\(step 10\)"
    ):
        train(small_config(tmp_path, run_name="r", steps=20), resume=run.run_dir, verbose=False)
    monkeypatch.undo()
    assert sorted(str(p.relative_to(run.run_dir)) for p in Path(run.run_dir).rglob("*")) == before


@pytest.mark.parametrize(
    "flags",
    [
        ["--optimizer", "sgd", "--lr", "1000", "--eval-every", "3"],
        ["--init-std", "1e30"],
        ["--lr", "1e38"],
        ["--optimizer", "sgd", "--lr", "1e38", "--eval-every", "1"],
    ],
)
def test_divergence_is_the_divergence_message(tmp_path, capsys, flags):
    # Before: the histogram logging failed first ("The histogram is empty"), or step 1
    # overflowed into a traceback.
    code, _, err = run_main(
        "train", *small_flags(tmp_path), "--run-name", "d", *flags, capsys=capsys
    )
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "stopped" in err and "--lr" in err
    ckpt = checkpoint_path(tmp_path / "runs" / "d")
    if ckpt.exists():  # a checkpoint, if any, is a good one
        state = load_checkpoint(ckpt)
        assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.fixture
def tiny_disk(tmp_path):
    """A 200 KiB tmpfs: a real full disk (skipped without mount rights)."""
    with helpers.tiny_disk(tmp_path, "200k") as where:
        yield where


def test_a_really_full_disk_is_one_line_then_and_on_resume(tiny_disk):
    # Before: 8 chained tracebacks (one from TensorBoard's writer thread), and a resume while
    # still full left a 0-byte events file.
    flags = [
        "--logdir",
        tiny_disk / "runs",
        "--run-name",
        "a",
        "--steps",
        "5000",
        "--echo-step",
        "9",
        "--hidden-size",
        "16",
        "--device",
        "cpu",
    ]
    for args in (flags, ["--resume", tiny_disk / "runs" / "a", "--steps", "6000"]):
        proc = cli("train", *args)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "the disk is full" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("echo-rnn train: error: could not")
        assert "the last good checkpoint is" in proc.stderr
    run = tiny_disk / "runs" / "a"
    assert all(f.stat().st_size > 0 for f in run.glob("events*"))
    assert load_checkpoint(run)["step"] > 0


def test_a_signal_while_a_resume_starts_keeps_the_steps_its_checkpoint_carried(
    tmp_path, monkeypatch
):
    # stopped between points, a run's checkpoint carries the steps since its last point; a
    # resume stopped again before its first step must carry them on, or the next point's
    # train loss averages fewer steps than the uninterrupted run's
    config = small_config(tmp_path, run_name="r", steps=12, log_every=4, eval_every=12)
    polls = []
    with pytest.raises(train_mod.TrainingInterrupted):
        train(config, verbose=False, stop=lambda: polls.append(1) or len(polls) >= 6)
    run_dir = tmp_path / "runs" / "r"
    assert load_checkpoint(run_dir)["step"] == 6 and len(load_checkpoint(run_dir)["window"]) == 2
    real = runlog_mod.RunLog.open_bar

    def signalled(self):
        os.kill(os.getpid(), signal.SIGTERM)  # held until train can act on it
        return real(self)

    monkeypatch.setattr(runlog_mod.RunLog, "open_bar", signalled)
    with pytest.raises(train_mod.TrainingInterrupted):
        train(config, resume=run_dir, verbose=False)
    monkeypatch.undo()
    assert len(load_checkpoint(run_dir)["window"]) == 2
    resumed = train(config, resume=run_dir, verbose=False)
    whole = train(replace(config, run_name="whole"), verbose=False)
    assert scalar_series(resumed.run_dir, "train loss") == scalar_series(
        whole.run_dir, "train loss"
    )
