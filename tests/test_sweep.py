"""Sweeps: the grid, the tables, skipping finished points, resuming, and torchrun."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from echo_rnn.config import ConfigError, build_config
from echo_rnn.sweep import echo_steps_for, grid, parse_int_list, plan, share
from helpers import cli, python, run_main, scalar_series

FIXED = [
    "--seq-len",
    "16",
    "--val-size",
    "32",
    "--batch-size",
    "8",
    "--eval-every",
    "10",
    "--device",
    "cpu",
]


def sweep(tmp_path, *args, name="s", steps=40, **popen):
    return cli(
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        name,
        "--steps",
        steps,
        *FIXED,
        *args,
        **popen,
    )


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_ranks_take_whole_populations_balanced_and_every_point_once():
    a = [f"a{i}" for i in range(32)]
    b = [f"b{i}" for i in range(13)]
    c = [f"c{i}" for i in range(3)]
    jobs = [a, b, c, "x", "y"]  # populations and points alone, as plan makes them
    shares = share(jobs, 2)
    assert shares == share(jobs, 2)  # every rank computes the same
    assert sorted(p for s in shares for p in s) == sorted(a + b + c + ["x", "y"])
    for s in shares:  # a population is never split over ranks
        for pop in (a, b, c):
            assert set(pop) <= set(s) or not set(pop) & set(s)
    assert sorted(map(len, shares)) == [18, 32]  # b, c, x, y against a
    assert share(jobs, 1) == [a + b + c + ["x", "y"]]
    assert [len(s) for s in share(["p", "q", "r"], 4)] == [1, 1, 1, 0]


def test_plan_groups_the_hard_points_together_and_starts_them_first(tmp_path):
    # the README's capacity grid: H = 6 has 35 points, H = 8 has 45, populations of 32
    base = build_config("frontier", overrides={"bias": True})
    ks = {H: list(range(1, H + 2)) for H in (2, 4, 6, 8)}
    jobs = plan(grid(base, ks, list(range(5)), tmp_path), 32)
    pops = [[(c.hidden_size, c.echo_step, c.seed) for c in job] for job in jobs]
    assert sorted(p for pop in pops for p in pop) == sorted(
        (H, k, s) for H in ks for k in ks[H] for s in range(5)
    )
    assert all(len({H for H, _, _ in pop}) == 1 for pop in pops)  # one shape a population
    # the points past k = H, which may train every step, all start in the first four jobs,
    # one population per H, and the remainders hold only easy points
    hard = {(H, k, s) for H in ks for k in ks[H] for s in range(5) if k > H}
    assert hard <= {p for pop in pops[:4] for p in pop}
    assert sorted(pop[0][0] for pop in pops[:4]) == [2, 4, 6, 8]
    assert [(pop[0][0], max(k for _, k, _ in pop), len(pop)) for pop in pops[4:]] == [
        (8, 3, 13),
        (6, 1, 3),
    ]
    assert pops[4][0] == (8, 3, 2)  # within a k, seeds keep their order


def test_parse_int_list():
    assert parse_int_list("1-3,7,2", "x") == [1, 2, 3, 7]
    for bad in ("a", "3-1", "1-", ""):
        with pytest.raises(ConfigError, match="^x: must be a list like 1-8"):
            parse_int_list(bad, "x")


def test_echo_steps_relative_to_the_hidden_size():
    assert echo_steps_for("1-H+1", [2, 4]) == {2: [1, 2, 3], 4: [1, 2, 3, 4, 5]}
    assert echo_steps_for("H-1-H,1", [3]) == {3: [1, 2, 3]}
    assert parse_int_list("2-5", "x") == [2, 3, 4, 5]
    with pytest.raises(ConfigError, match="^echo_steps: "):
        echo_steps_for("H+1-H", [3])  # an empty range
    with pytest.raises(ConfigError, match="^x: "):
        parse_int_list("1-H", "x")  # H means nothing without hidden sizes


def test_sweep_writes_runs_and_tables(tmp_path):
    proc = sweep(
        tmp_path, "--echo-steps", "1-2", "--hidden-sizes", "2,4", "--seeds", "0-1", "--workers", "2"
    )
    assert proc.returncode == 0, proc.stderr
    d = tmp_path / "runs" / "s"
    rows = read_csv(d / "results.csv")
    assert [(r["echo_step"], r["hidden_size"], r["seed"]) for r in rows] == [
        (k, H, s) for H in "24" for k in "12" for s in "01"
    ]
    for r in rows:  # each row is its run's summary
        run = d / f"k{r['echo_step']}-H{r['hidden_size']}-s{r['seed']}"
        assert len(list(run.glob("events*"))) == 1
        assert r["solved"] == str(bool(r["solved_step"]))
    md = (d / "results.md").read_text()
    for H in ("2", "4"):
        for k in ("1", "2"):
            n = sum(
                r["solved"] == "True" for r in rows if (r["echo_step"], r["hidden_size"]) == (k, H)
            )
            assert f"| {k} | {H} | 2 | {n} | {n / 2:.2f} |" in md
    img = Image.open(d / "heatmap.png")
    assert img.format == "PNG" and img.size[0] > 100
    assert "view it: tensorboard --logdir" in proc.stdout
    # the Time Series default that cuts solved curves, and the setting that shows them whole
    assert "untick Settings > 'Ignore outliers in chart scaling'" in proc.stdout


def test_interrupted_sweep_resumes_and_runs_nothing_twice(tmp_path):
    # one point at a time (a population would train them all at once)
    args = [
        "--echo-steps",
        "5-6",
        "--hidden-sizes",
        "3",
        "--seeds",
        "0-2",
        "--workers",
        "1",
        "--population",
        "1",
    ]
    proc = sweep(tmp_path, *args, steps=400, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first_done = proc.stdout.readline()  # one point finished; the next is under way
    while first_done.startswith(("sweep: ", "  ")):  # the progress, on a slow machine
        first_done = proc.stdout.readline()
    assert "k=5 H=3 seed=0" in first_done
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "run the same command again" in err
    d = tmp_path / "runs" / "s"
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in d.glob("*/summary.json")}
    assert 1 <= len(done_before) < 6 and not (d / "results.csv").exists()

    again = sweep(tmp_path, *args, steps=400)
    assert again.returncode == 0, again.stderr
    done_after = {p.parent.name: p.stat().st_mtime_ns for p in d.glob("*/summary.json")}
    assert len(done_after) == 6
    for name, mtime in done_before.items():
        assert done_after[name] == mtime, f"{name} was run again"
    assert len(read_csv(d / "results.csv")) == 6
    for run in d.glob("k*"):
        steps = [s for s, _ in scalar_series(run, "train loss")]
        assert steps == sorted(set(steps)), f"{run.name}: steps repeat or go back"
    # the interrupted-and-resumed point equals a run that was never interrupted
    ref = cli(
        "train",
        "--logdir",
        tmp_path / "ref",
        "--run-name",
        "r",
        "--steps",
        400,
        *FIXED,
        "--echo-step",
        5,
        "--hidden-size",
        3,
        "--seed",
        1,
    )
    assert ref.returncode == 0
    assert scalar_series(d / "k5-H3-s1", "train loss") == scalar_series(
        tmp_path / "ref" / "r", "train loss"
    )


def test_rerun_with_more_steps_continues_only_the_points_that_ran_out(tmp_path):
    args = ["--echo-steps", "1,5", "--hidden-sizes", "3", "--seeds", "0", "--workers", "1"]
    first = sweep(tmp_path, *args, steps=60)  # k = 1 solves at 40, k = 5 cannot
    assert first.returncode == 0, first.stderr
    d = tmp_path / "runs" / "s"
    rows = {r["echo_step"]: r for r in read_csv(d / "results.csv")}
    assert (rows["1"]["stopped"], rows["5"]["stopped"]) == ("solved", "steps")
    rows_before = rows
    # moved elsewhere first: where a sweep is kept is not one of its settings
    (tmp_path / "runs").rename(tmp_path / "moved")
    d = tmp_path / "moved" / "s"
    solved_at = (d / "k1-H3-s0" / "summary.json").stat().st_mtime_ns

    again = cli(
        "sweep", "--logdir", tmp_path / "moved", "--name", "s", "--steps", 100, *FIXED, *args
    )
    assert again.returncode == 0, again.stderr
    rows = {r["echo_step"]: r for r in read_csv(d / "results.csv")}
    assert rows["5"]["step"] == "100" and rows["1"]["step"] == rows_before["1"]["step"]
    assert (d / "k1-H3-s0" / "summary.json").stat().st_mtime_ns == solved_at, "solved point re-run"
    # the re-run redrew the heatmap in place of the first one; and it is a file, not a
    # TensorBoard run that would count among the 40 TensorBoard selects
    assert (d / "heatmap.png").stat().st_mtime_ns > solved_at
    assert not (d / "_sweep").exists() and not list(d.glob("events*"))
    # the extended point is the run it would have been with 100 steps from the start
    ref = cli(
        "train",
        "--logdir",
        tmp_path / "ref",
        "--run-name",
        "r",
        "--steps",
        100,
        *FIXED,
        "--echo-step",
        5,
        "--hidden-size",
        3,
        "--seed",
        0,
    )
    assert ref.returncode == 0, ref.stderr
    assert scalar_series(d / "k5-H3-s0", "train loss") == scalar_series(
        tmp_path / "ref" / "r", "train loss"
    )


def test_rerun_with_other_settings_is_refused(tmp_path, capsys):
    args = ["--echo-steps", "1", "--hidden-sizes", "2", "--seeds", "0", "--workers", "1"]
    assert sweep(tmp_path, *args, steps=10).returncode == 0
    d = tmp_path / "runs" / "s"
    files = lambda: {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    for extra, needle in [
        (["--steps", "10", "--lr", "0.5"], "(lr 0.02 -> 0.5)"),
        (["--steps", "5"], "(steps 10 -> 5)"),
    ]:
        code, _, err = run_main(
            "sweep",
            "--logdir",
            tmp_path / "runs",
            "--name",
            "s",
            *FIXED,
            *args,
            *extra,
            capsys=capsys,
        )
        assert code == 2 and needle in err and "choose another --name" in err, err
        assert len(err.strip().splitlines()) == 1
    assert files() == before
    (d / "sweep.json").write_text("{not json")
    code, _, err = run_main(
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "s",
        "--steps",
        10,
        *FIXED,
        *args,
        capsys=capsys,
    )
    assert code == 2 and "is not a readable sweep record" in err, err


def test_a_damaged_point_checkpoint_is_one_clear_line(tmp_path):
    args = ["--echo-steps", "5", "--hidden-sizes", "3", "--seeds", "0", "--workers", "1"]
    assert sweep(tmp_path, *args, steps=20).returncode == 0
    ckpt = tmp_path / "runs" / "s" / "k5-H3-s0" / "checkpoints" / "last.pt"
    ckpt.write_bytes(b"not a checkpoint")
    proc = sweep(tmp_path, *args, steps=40)  # the point ran out of steps: it would continue
    assert proc.returncode == 1, proc.stderr
    assert str(ckpt) in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_failing_point_starts_no_queued_point(tmp_path):
    args = ["--echo-steps", "5", "--hidden-sizes", "3", "--seeds", "0-3", "--workers", "2"]
    assert sweep(tmp_path, *args, steps=20).returncode == 0
    d = tmp_path / "runs" / "s"
    (d / "k5-H3-s0" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    proc = sweep(tmp_path, *args, steps=1000)  # seed 0 fails at once, seed 1 is under way
    assert proc.returncode == 1, proc.stderr
    steps = {
        p.parent.name: max(s for s, _ in scalar_series(p.parent, "train loss"))
        for p in d.glob("k*/summary.json")
    }
    assert steps["k5-H3-s2"] == steps["k5-H3-s3"] == 20, steps  # queued: never started


@pytest.mark.distributed
def test_torchrun_sweep_equals_single_process(tmp_path):
    # points that train in populations (one per H), each rank taking a whole one
    grid = [
        "--echo-steps",
        "1-2",
        "--hidden-sizes",
        "2,3",
        "--seeds",
        "0-1",
        "--workers",
        "1",
        "--backend",
        "bptt",
        "--optimizer",
        "sgd",
    ]
    one = sweep(tmp_path, *grid, name="one")
    assert one.returncode == 0, one.stderr
    two = python(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "echo_rnn",
        "sweep",
        "--logdir",
        tmp_path / "runs",
        "--name",
        "two",
        "--steps",
        "40",
        *FIXED,
        *grid,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    a = read_csv(tmp_path / "runs" / "one" / "results.csv")
    b = read_csv(tmp_path / "runs" / "two" / "results.csv")
    keep = ("echo_step", "hidden_size", "seed", "solved", "solved_step", "val_accuracy", "step")
    assert [{k: r[k] for k in keep} for r in a] == [{k: r[k] for k in keep} for r in b]
    assert len({(r["echo_step"], r["hidden_size"], r["seed"]) for r in b}) == len(b) == 8
    for run in (tmp_path / "runs" / "two").glob("k*"):
        assert len(list(run.glob("events*"))) == 1, f"{run.name} ran more than once"
    # the two ranks each ran their share: a whole population, one H each
    hidden = {
        rank: {
            line.split(" H=")[1].split()[0]
            for line in two.stdout.splitlines()
            if line.startswith(f"[rank {rank}] k=")
        }
        for rank in (0, 1)
    }
    assert len(hidden[0]) == len(hidden[1]) == 1 and hidden[0] != hidden[1], two.stdout
    assert (tmp_path / "runs" / "one" / "results.md").read_text() == (
        tmp_path / "runs" / "two" / "results.md"
    ).read_text()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--echo-steps", "x", "--hidden-sizes", "2"], "argument --echo-steps: must be a list"),
        (
            ["--echo-steps", "1-20", "--hidden-sizes", "2"],
            "argument --echo-steps: must be in [0, seq_len)",
        ),
        (
            ["--echo-steps", "1", "--hidden-sizes", "0"],
            "argument --hidden-sizes: must be a positive",
        ),
        (
            ["--echo-steps", "1", "--hidden-sizes", "100000"],
            "argument --hidden-sizes: must be a positive integer up to 4096",
        ),
        (["--echo-steps", "1", "--hidden-sizes", "2", "--lr", "-1"], "argument --lr"),
        # a prefix of --seeds is not taken for it
        (
            ["--echo-steps", "1", "--hidden-sizes", "2", "--seed", "3"],
            "unrecognized arguments: --seed",
        ),
        (
            ["--echo-steps", "1", "--hidden-sizes", "2", "--seeds", "9223372036854775808"],
            "argument --seeds: values must be at most 9223372036854775807",
        ),
        (
            ["--echo-steps", "1", "--hidden-sizes", "2", "--seeds", "0-100000000"],
            "argument --seeds: at most 100000 values",
        ),
        (
            [
                "--echo-steps",
                "1-10",
                "--hidden-sizes",
                "10-19",
                "--seeds",
                "0-9999",
                "--seq-len",
                "50",
            ],
            "argument --seeds: the grid has 1000000 points; a sweep runs at most 100000",
        ),
        (
            [
                "--echo-steps",
                "1",
                "--hidden-sizes",
                "2",
                "--batch-size",
                "1000000",
                "--seq-len",
                "100000",
            ],
            "argument --batch-size: too large",
        ),
        (
            ["--echo-steps", "1", "--hidden-sizes", "2", "--name", "n" * 300],
            "argument --name: must be a directory name of at most 255 bytes",
        ),
    ],
)
def test_bad_sweep_arguments(tmp_path, capsys, args, needle):
    code, _, err = run_main(
        "sweep", "--logdir", tmp_path / "runs", "--name", "s", *FIXED, *args, capsys=capsys
    )
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def _children(pid):
    """PIDs of the live processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    # Before: kill -9 of the sweep left its workers (and the resource tracker) training on
    # forever, holding the output pipe open.
    proc = sweep(
        tmp_path,
        "--echo-steps",
        "5-6",
        "--hidden-sizes",
        "3",
        "--seeds",
        "0-3",
        "--workers",
        "2",
        steps=100000,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list((tmp_path / "runs" / "s").glob("k*/checkpoints/last.pt")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    children = _children(proc.pid)
    assert len(children) >= 2  # the workers (and the resource tracker)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [c for c in children if _alive(c)]
    for c in left:
        os.kill(c, signal.SIGKILL)
    assert left == []


@pytest.mark.parametrize("delay", [1.0, 3.5])
def test_a_signal_as_the_pool_starts_is_the_usual_stop(tmp_path, delay):
    # Before: a signal in the first seconds gave BrokenProcessPool, 81 lines and exit 1.
    proc = sweep(
        tmp_path,
        "--echo-steps",
        "5-6",
        "--hidden-sizes",
        "3",
        "--seeds",
        "0-3",
        "--workers",
        "2",
        steps=100000,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "BrokenProcessPool" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_signal_after_the_last_point_still_writes_the_tables(tmp_path, monkeypatch):
    # Before: a SIGTERM after every point had finished skipped writing the tables.
    import echo_rnn.sweep as sweep_mod
    from echo_rnn.config import build_config

    real = sweep_mod._run_local

    def then_a_signal(*args, **kwargs):
        outcome = real(*args, **kwargs)
        outcome.interrupted = signal.SIGTERM
        return outcome

    monkeypatch.setattr(sweep_mod, "_run_local", then_a_signal)
    base = build_config(
        overrides={
            "logdir": str(tmp_path / "runs"),
            "steps": 10,
            "seq_len": 16,
            "val_size": 8,
            "batch_size": 4,
            "eval_every": 5,
            "device": "cpu",
        }
    )
    outcome = sweep_mod.run_sweep(base, {2: [1]}, [0, 1], "s", workers=1)
    assert outcome.interrupted == signal.SIGTERM and outcome.done == 2
    assert len(read_csv(tmp_path / "runs" / "s" / "results.csv")) == 2


def test_the_console_line_says_how_a_point_ended():
    from echo_rnn.sweep import _verdict

    row = {
        "solved": False,
        "solved_step": None,
        "stopped": "steps",
        "step": 300,
        "val_accuracy": 0.6721,
    }
    assert _verdict(row) == "not solved in 300 steps, val_acc 0.6721"
    assert _verdict({**row, "stopped": "diverged", "step": 12}) == "diverged at step 12"
    assert _verdict({**row, "solved": True, "solved_step": 40}) == "solved at step 40"


# --- populations: fresh points that share a shape train as one (issue 15) -------------------

POPULATION = [
    "--preset",
    "frontier",
    "--bias",
    "--hidden-sizes",
    "3",
    "--seeds",
    "0-1",
    "--eval-every",
    "100",
    "--workers",
    "1",
]
SAME = (
    "echo_step",
    "hidden_size",
    "seed",
    "solved",
    "solved_step",
    "val_accuracy",
    "val_loss",
    "step",
    "stopped",
)


def test_a_population_sweep_is_the_sweep_of_single_runs(tmp_path):
    args = [*POPULATION, "--echo-steps", "1-3", "--steps", "300"]
    together = cli("sweep", "--logdir", tmp_path, "--name", "pop", *args)
    alone = cli("sweep", "--logdir", tmp_path, "--name", "one", *args, "--population", "1")
    assert together.returncode == 0 and alone.returncode == 0, together.stderr + alone.stderr
    a, b = read_csv(tmp_path / "pop" / "results.csv"), read_csv(tmp_path / "one" / "results.csv")
    assert [{k: r[k] for k in SAME} for r in a] == [{k: r[k] for k in SAME} for r in b]
    assert {r["stopped"] for r in a} == {"solved", "steps"}  # some left early, some ran out
    for point in ("k1-H3-s0", "k3-H3-s1"):
        for name in ("train loss", "val accuracy", "grad norm"):
            assert scalar_series(tmp_path / "pop" / point, name) == scalar_series(
                tmp_path / "one" / point, name
            ), (point, name)


def test_an_interrupted_population_resumes_and_loses_nothing(tmp_path):
    # k = 4 > H = 3 is never solved: the members train every step, 20000 of them (seconds,
    # where 2000 ended within the half second before the signal once the engine got faster)
    args = [*POPULATION, "--echo-steps", "4", "--steps", "20000", "--log-every", "50"]
    proc = cli(
        "sweep",
        "--logdir",
        tmp_path,
        "--name",
        "s",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ckpt = tmp_path / "s" / "k4-H3-s1" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline:  # the members are training
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    stopped = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < stopped < 20000  # stopped mid-run, between checkpoints as likely as not
    again = cli("sweep", "--logdir", tmp_path, "--name", "s", *args)
    assert again.returncode == 0, again.stderr
    rows = read_csv(tmp_path / "s" / "results.csv")
    assert len(rows) == 2
    ref = cli(
        "train",
        "--logdir",
        tmp_path / "ref",
        "--run-name",
        "r",
        "--preset",
        "frontier",
        "--bias",
        "--hidden-size",
        "3",
        "--echo-step",
        "4",
        "--seed",
        "1",
        "--steps",
        "20000",
        "--eval-every",
        "100",
        "--log-every",
        "50",
    )
    assert ref.returncode == 0, ref.stderr
    for name in ("train loss", "val accuracy"):
        assert scalar_series(tmp_path / "s" / "k4-H3-s1", name) == scalar_series(
            tmp_path / "ref" / "r", name
        ), name


# --- a sweep seen as it runs (issue 25) --------------------------------------------------------

SHORT = [
    "--echo-steps",
    "1",
    "--hidden-sizes",
    "2",
    "--seeds",
    "0-1",
    "--steps",
    "20",
    "--population",
    "1",
    *FIXED,
]


def test_a_sweep_into_a_file_shows_its_progress_in_plain_lines(tmp_path, capsys, monkeypatch):
    import echo_rnn.progress as progress

    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # a block at every report
    code, out, err = run_main(
        "sweep", "--logdir", tmp_path, "--name", "s", "--workers", "1", *SHORT, capsys=capsys
    )
    assert code == 0, err
    lines = out.splitlines()
    for seed in (0, 1):  # each point under way, its steps: one block at its first report
        i = lines.index(f"  k1-H2-s{seed}: step 0 of 20")  # reported once it starts
        assert lines[i - 1].startswith(f"sweep: {seed} of 2 points done (")
        assert lines[i - 1].endswith(
            ", 1 running, time left: measuring" if seed == 0 else " left if no run solves early"
        ), lines[i - 1]
    assert "\r" not in out and "|" not in out.split("runs, ")[0]  # no bar in a file
    assert any(line.startswith("k=1 H=2 seed=1: ") for line in lines)


def test_a_sweep_under_json_shows_no_progress(tmp_path, capsys, monkeypatch):
    import echo_rnn.progress as progress

    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    code, out, err = run_main(
        "sweep",
        "--logdir",
        tmp_path,
        "--name",
        "s",
        "--workers",
        "1",
        "--json",
        *SHORT,
        capsys=capsys,
    )
    assert code == 0, err
    assert json.loads(out)["done"] == 2  # stdout is the one object
    assert sorted(line.split(":")[0] for line in err.splitlines()) == [
        "k=1 H=2 seed=0",
        "k=1 H=2 seed=1",
    ], err  # the lines per point, and nothing else


@pytest.mark.slow
def test_worker_processes_report_their_jobs_progress(tmp_path, capsys, monkeypatch):
    from echo_rnn.progress import SweepProgress

    seen = []
    real = SweepProgress.update

    def update(self, j, step, active):
        seen.append((self.jobs[j].label, step, active))
        real(self, j, step, active)

    monkeypatch.setattr(SweepProgress, "update", update)
    code, _, err = run_main(
        "sweep",
        "--logdir",
        tmp_path,
        "--name",
        "s",
        "--workers",
        "2",
        "--population",
        "2",
        "--backend",
        "bptt",
        "--echo-steps",
        "1,4",
        "--hidden-sizes",
        "2",
        "--seeds",
        "0",
        "--steps",
        "200",
        *FIXED,
        capsys=capsys,
    )
    assert code == 0, err
    # one population of the two points (k = 4 first, the harder), sent from its worker
    assert seen and {label for label, _, _ in seen} == {"H2 x2 (k 1-4)"}, seen
    assert seen[0][1:] == (0, 2)  # the first report at once: the step 0 evaluation
    assert all(0 <= step <= 200 and 0 <= active <= 2 for _, step, active in seen), seen


@pytest.mark.slow
@pytest.mark.parametrize("columns", [120, 0])  # 0: a terminal that does not say its size
def test_a_sweep_on_a_terminal_draws_bars(tmp_path, columns):
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(
        terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24 * bool(columns), columns, 0, 0)
    )
    proc = sweep(
        tmp_path,
        "--echo-steps",
        "1-2",
        "--hidden-sizes",
        "2",
        "--seeds",
        "0",
        "--workers",
        "1",
        "--population",
        "1",
        steps=300,
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the sweep ended
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    proc.stderr.close()
    text = drawn.decode()
    assert "sweep: 0/2 points |" in text and "sweep: 2/2 points |" in text, text
    assert "k1-H2-s0: " in text and "/300 steps, training |" in text, text
    assert "k=2 H=2 seed=0: " in text and "view it: tensorboard" in text, text
