"""Every process accounted for (issue 17): workers that outlive a killed sweep, run
directories a kill leaves without a checkpoint, SIGHUP, a closed stdout, a full disk under
a sweep, --json everywhere, file modes and what the README promises. Each case failed once;
the comment says how."""

import errno
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

import echo_rnn.run.rundir as rundir_mod
import helpers
from echo_rnn.engine.train import train
from echo_rnn.run.checkpoint import checkpoint_path, load_checkpoint
from helpers import cli, run_main, scalar_series, small_config, small_flags

ROOT = Path(__file__).resolve().parent.parent
TINY_SWEEP = [
    "--seq-len",
    "8",
    "--val-size",
    "8",
    "--batch-size",
    "4",
    "--eval-every",
    "5",
    "--device",
    "cpu",
]


def _strict(text: str):
    def no_constants(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=no_constants)


# --- a sweep's parent killed outright -------------------------------------------------------


def _session(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # state, ppid, pgrp, session
            out.append(int(entry.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_kill_9_as_the_workers_start_leaves_no_process(tmp_path):
    # Before: the workers took their parent's pid only once they had loaded torch; killed
    # in those first seconds, the parent was already gone, the workers compared with their
    # new parent (init), and they and the resource tracker trained on for nobody.
    proc = cli(
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "s",
        "--echo-steps",
        "5-6",
        "--hidden-sizes",
        "3",
        "--seeds",
        "0-3",
        "--workers",
        "2",
        "--steps",
        "100000",
        *TINY_SWEEP,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    # the resource tracker first, then the workers: kill as soon as a worker exists
    while len([p for p in _session(proc.pid) if p != proc.pid]) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20  # a worker still loading torch notices once it has
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _session(proc.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


# --- a run directory is never a dead end ---------------------------------------------------


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path, capsys):
    # Before: SIGKILL (the out-of-memory killer) before the first checkpoint left a
    # directory that --resume refused and whose --run-name was taken.
    config = small_config(tmp_path, run_name="r", steps=20)
    run_dir = rundir_mod.create_run_dir(config)  # what a process killed at once leaves
    assert json.loads((run_dir / "config.json").read_text())["run_name"] == "r"
    (run_dir / "events.out.tfevents.1.host").write_bytes(b"torn")  # and a stray file
    code, _, err = run_main("train", "--resume", run_dir, capsys=capsys)
    assert code == 0, err
    assert "resuming r from step 0" in err
    assert load_checkpoint(run_dir)["step"] == 20
    assert not (run_dir / "events.out.tfevents.1.host").exists()
    whole = train(small_config(tmp_path, run_name="whole", steps=20), verbose=False)
    assert scalar_series(run_dir, "train loss") == scalar_series(whole.run_dir, "train loss")


def test_a_run_directory_appears_whole(tmp_path, monkeypatch):
    # Before: the directory existed, empty, from mkdir until config.json was written.
    seen = []
    real = os.rename

    def look(src, dst):
        seen.append(sorted(p.name for p in Path(src).iterdir()))
        return real(src, dst)

    monkeypatch.setattr(rundir_mod.os, "rename", look)
    run_dir = rundir_mod.create_run_dir(small_config(tmp_path, run_name="r"))
    assert seen == [["config.json"]] and (run_dir / "config.json").is_file()
    assert [p.name for p in run_dir.parent.iterdir()] == ["r"]  # no temp directory left


def test_sigkill_as_the_run_directory_appears_is_not_a_dead_end(tmp_path):
    flags = [*small_flags(tmp_path), "--steps", "100000", "--echo-step", "9"]
    proc = cli(
        "train", *flags, "--run-name", "r", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run = tmp_path / "runs" / "r"
    deadline = time.monotonic() + 60
    while not run.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    again = cli("train", "--resume", run, "--steps", "20")
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(run)["step"] == 20


# --- SIGHUP, bench ---------------------------------------------------------------------------


def test_sighup_ends_a_run_as_sigterm_does(tmp_path):
    # Before: a closed terminal's SIGHUP killed the run where it stood, without a checkpoint
    # of its last steps, and without a word.
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
    deadline = time.monotonic() + 60
    while not checkpoint_path(run).exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "stopped by SIGHUP" in err and "--resume" in err
    assert load_checkpoint(run)["step"] > 0


def test_bench_stopped_by_a_signal_says_one_line():
    # Before: "timing tiny ..." lines, then the stop: 2-3 lines for one event.
    proc = cli(
        "bench",
        "--shape",
        "tiny=8,20,4",
        "--shape",
        "small=8,20,6",
        "--budget",
        "20",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(6)  # torch loaded, timing under way
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["echo-rnn bench: stopped by SIGTERM; nothing was written"]
    assert out == ""


# --- a closed stdout -------------------------------------------------------------------------


def test_train_into_a_closed_pipe_trains_on(tmp_path):
    # Before: `echo-rnn train | head -2` stopped the run with "could not write the run ...
    # Broken pipe", though nothing was wrong with the run.
    proc = cli(
        "train",
        *small_flags(tmp_path),
        "--run-name",
        "r",
        "--steps",
        "400",
        "--echo-step",
        "9",
        "--eval-every",
        "5",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(2):
        assert proc.stdout.readline().startswith("step")
    proc.stdout.close()  # what `head -2` does after two lines
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err, err
    assert json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())["step"] == 400


def test_sweep_into_a_closed_pipe_finishes_the_sweep(tmp_path):
    # Before: `echo-rnn sweep ... | head -1` exited 0 with the sweep unfinished and no
    # results.csv.
    proc = cli(
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "s",
        "--echo-steps",
        "1-3",
        "--hidden-sizes",
        "2",
        "--seeds",
        "0",
        "--steps",
        "20",
        "--workers",
        "1",
        *TINY_SWEEP,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline()
    while line.startswith(("sweep: ", "  ")):  # the progress, on a slow machine
        line = proc.stdout.readline()
    assert re.match(r"k=[123] H=2 seed=0: ", line), line  # a point's line, whichever first
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert len((tmp_path / "runs" / "s" / "results.csv").read_text().splitlines()) == 4


# --- a full disk under a sweep ---------------------------------------------------------------


@pytest.mark.parametrize("population", ["1", "2"])
def test_a_full_disk_under_a_sweep_is_one_line(tmp_path, monkeypatch, capsys, population):
    # Before: 24-38 lines of traceback, where train says one line.
    import echo_rnn.engine.loop as loop_mod

    def full(path, state, durable=True):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop_mod, "save_checkpoint", full)
    code, out, err = run_main(
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "s",
        "--echo-steps",
        "1-2",
        "--hidden-sizes",
        "2",
        "--seeds",
        "0",
        "--steps",
        "10",
        "--workers",
        "1",
        "--population",
        population,
        "--backend",
        "bptt",
        "--no-fused",
        *TINY_SWEEP,
        capsys=capsys,
    )
    assert code == 1, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "the disk is full" in line, err
    assert line.startswith("echo-rnn sweep: error: could not write")


def test_a_full_disk_as_the_tables_are_written_is_one_line(tmp_path, monkeypatch, capsys):
    import echo_rnn.sweep as sweep_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sweep_mod, "write_results", full)
    code, _, err = run_main(
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
        "--workers",
        "1",
        *TINY_SWEEP,
        capsys=capsys,
    )
    assert code == 1 and len(err.strip().splitlines()) == 1 and "the disk is full" in err, err


def test_torch_saves_full_disk_is_the_oserror(tmp_path):
    # torch.save, the disk full mid-archive, raised a RuntimeError ("unexpected pos") over
    # the OSError: a traceback where one line belongs.
    from echo_rnn.files import write_atomically

    def full(fh):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    with pytest.raises(OSError) as info:
        write_atomically(tmp_path / "last.pt", full)
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 100 KiB tmpfs: a real full disk (skipped without mount rights)."""
    with helpers.tiny_disk(tmp_path, "100k") as where:
        yield where


def test_a_really_full_disk_under_a_sweep_of_two_workers_is_one_line(tiny_disk):
    proc = cli(
        "sweep",
        "--logdir",
        tiny_disk / "runs",
        "--name",
        "s",
        "--echo-steps",
        "8-9",
        "--hidden-sizes",
        "16",
        "--seeds",
        "0-1",
        "--steps",
        "5000",
        "--workers",
        "2",
        *TINY_SWEEP,
        "--seq-len",
        "20",
        "--eval-every",
        "50",
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "the disk is full" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- --json, modes, re-runs ------------------------------------------------------------------


def test_train_json_is_one_strict_object(tmp_path, capsys):
    code, out, err = run_main(
        "train", *small_flags(tmp_path), "--run-name", "r", "--json", capsys=capsys
    )
    assert code == 0, err
    result = _strict(out)
    assert result["run_dir"] == str(tmp_path / "runs" / "r") and result["step"] >= 10
    assert set(result) >= {"val_accuracy", "solved_step", "stopped", "wall_time_s"}


def test_sweep_json_is_one_strict_object(tmp_path, capsys):
    args = [
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "s",
        "--echo-steps",
        "1-2",
        "--hidden-sizes",
        "2",
        "--seeds",
        "0",
        "--steps",
        "10",
        "--workers",
        "1",
        *TINY_SWEEP,
        "--json",
    ]
    code, out, err = run_main(*args, capsys=capsys)
    assert code == 0, err
    outcome = _strict(out)
    assert (outcome["total"], outcome["done"], outcome["interrupted"]) == (2, 2, None)
    assert [r["echo_step"] for r in outcome["rows"]] == [1, 2]
    assert outcome["tables"][0].endswith("results.csv")
    assert "k=1 H=2 seed=0" in err  # the lines per point go to stderr


def test_json_has_no_nan():
    from echo_rnn.console import strict_json

    assert _strict(strict_json({"a": float("nan"), "b": [float("inf"), 1.5]})) == {
        "a": None,
        "b": [None, 1.5],
    }


def test_files_respect_the_umask(tmp_path):
    # Before: checkpoints and plots were 0600 whatever the umask (mkstemp's mode).
    from echo_rnn.files import write_atomically

    old = os.umask(0o022)
    try:
        run = train(small_config(tmp_path, run_name="r", steps=10), verbose=False)
        write_atomically(tmp_path / "plot.png", lambda fh: fh.write(b"png"))
        os.umask(0o077)
        write_atomically(tmp_path / "private.json", lambda fh: fh.write(b"{}"))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(checkpoint_path(run.run_dir)) == 0o644
    assert mode(tmp_path / "plot.png") == 0o644
    assert mode(run.run_dir) == 0o755
    assert mode(tmp_path / "private.json") == 0o600


def test_a_rerun_says_which_points_it_read_back(tmp_path, capsys):
    # Before: a re-run printed its finished points as if it had run them again.
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
        "--workers",
        "1",
        *TINY_SWEEP,
    ]
    code, out, err = run_main(*args, "--steps", "10", capsys=capsys)
    assert code == 0 and "read back" not in out, err
    code, out, err = run_main(*args, "--steps", "10", "--seeds", "0-1", capsys=capsys)
    assert code == 0, err
    lines = {l.split(":")[0]: l for l in out.splitlines() if l.startswith("k=")}
    assert "read back" in lines["k=1 H=2 seed=0"] and "read back" not in lines["k=1 H=2 seed=1"]


# --- the README ------------------------------------------------------------------------------

README = (ROOT / "README.md").read_text()
GRID = {"--echo-steps", "--hidden-sizes", "--seeds", "--steps", "--workers"}


def _sweep_commands():
    for m in re.finditer(r"echo-rnn sweep ((?:[^`\n]|\n(?!\n))+?)(?:`|\n\n|\n```)", README):
        words = m.group(1).replace("\\\n", " ").replace("\n", " ").split()
        if "..." in words:
            continue
        yield words


def test_the_readmes_sweeps_of_one_name_are_one_experiment():
    # Before: the frontier sweeps with and without bias, and the two `--name capacity`
    # sweeps, shared a name: the second of each pair was refused.
    settings: dict[str, set] = {}
    for words in _sweep_commands():
        name = words[words.index("--name") + 1] if "--name" in words else "sweep"
        fixed, i = [], 0
        while i < len(words):
            if words[i] in GRID or words[i] == "--name":
                i += 2
                continue
            fixed.append(words[i])
            i += 1
        settings.setdefault(name, set()).add(" ".join(sorted(fixed)))
    assert settings and all(len(v) == 1 for v in settings.values()), settings


def test_the_readme_sends_no_one_outside_the_clone():
    assert "../shared" not in README


def test_the_readmes_check_grads_example_runs(monkeypatch):
    # Before: check_grads(my_bptt, ..., bias=True, ...) raised with the README's own my_bptt.
    block = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "check_grads" in b)
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {})


def test_the_readme_does_not_promise_signals_at_any_moment():
    signals = README[README.index("- **Signals**") : README.index("- **Faults**")]
    assert "30 ms" in signals and "SIGHUP" in signals
