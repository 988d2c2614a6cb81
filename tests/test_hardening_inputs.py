"""Every input is bounded before it is read or run: files are read only when they are
regular files of a bounded size, numbers only in ASCII and within bounds, names only in
UTF-8; each refusal is one line naming the flag or file, exit 2, nothing written (issue 17)."""

import io
import json
import os

import pytest

from helpers import cli, run_main, small_flags


def _one_line(code, err, needle):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err


# --- files ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom", "nested", "large"])
def test_a_config_that_is_not_a_small_regular_file_is_one_line(tmp_path, capsys, source):
    # Before: MemoryError tracebacks (/dev/zero, /dev/urandom), a 3002-line RecursionError
    # (arrays nested 1000 deep).
    path = source
    if source == "nested":
        path = tmp_path / "nested.toml"
        path.write_text("x = " + "[" * 1000 + "]" * 1000 + "\n")
    elif source == "large":
        path = tmp_path / "large.toml"
        path.write_text("# padding\n" * 200_000)
    code, _, err = run_main("train", "--config", path, capsys=capsys)
    _one_line(code, err, "argument --config:")


def test_a_config_from_a_fifo_does_not_hang(tmp_path):
    # Before: opening the FIFO waited for a writer for ever, even through Ctrl-C.
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    proc = cli("train", "--config", fifo, "--logdir", tmp_path / "runs", timeout=60)
    _one_line(proc.returncode, proc.stderr, "not a regular file")
    assert not (tmp_path / "runs").exists()


def test_predict_from_a_device_does_not_hang(tmp_path):
    # Before: `predict --checkpoint /dev/zero` read for ever.
    proc = cli("predict", "--checkpoint", "/dev/zero", "0101", timeout=60)
    _one_line(proc.returncode, proc.stderr, "not a regular file")


def test_predict_reads_a_bounded_input(capsys, monkeypatch):
    # Before: 10 MB of bits on stdin were all read and run (past 120 s).
    monkeypatch.setattr("sys.stdin", io.StringIO("01" * 5_000_000))
    code, _, err = run_main("predict", "--checkpoint", "nowhere", "-", capsys=capsys)
    _one_line(code, err, "argument BITS: must be at most 100000 bits")
    code, _, err = run_main("predict", "--checkpoint", "nowhere", "1" * 100_001, capsys=capsys)
    _one_line(code, err, "argument BITS: must be at most 100000 bits")


# --- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, flag",
    [
        (["bench", "--budget", "1e300"], "--budget"),
        (["bench", "--min-reps", str(10**12)], "--min-reps"),
        (["bench", "--warmup", str(10**15)], "--warmup"),
        (["bench", "--output", ""], "--output"),
        (["bench", "--min-reps", "٣"], "--min-reps"),  # Arabic-Indic 3
        (["train", "--seed", "٣"], "--seed"),
        (["train", "--hidden-size", "６"], "--hidden-size"),  # full-width 6
        (["gradcheck", "--seq-len", "٣"], "--seq-len"),
        (["sweep", "--echo-steps", "١-٣", "--hidden-sizes", "2"], "--echo-steps"),
        (
            ["sweep", "--echo-steps", "1", "--hidden-sizes", "2", "--workers", "3000000000"],
            "--workers",
        ),
    ],
)
def test_unbounded_or_non_ascii_numbers_are_refused(tmp_path, capsys, args, flag):
    # Before: bench ran for ever; --workers 3e9 was a traceback after writing sweep.json;
    # Arabic-Indic digits were read as numbers (exit 0); --output '' wrote nothing, exit 0.
    code, _, err = run_main(
        *args,
        "--logdir" if args[0] == "sweep" else "--seed",
        tmp_path / "runs" if args[0] == "sweep" else "0",
        capsys=capsys,
    )
    _one_line(code, err, f"argument {flag}:")
    assert not (tmp_path / "runs").exists()


# --- names and places -------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--run-name", "--logdir"])
def test_a_name_that_is_not_utf8_is_one_line(tmp_path, capsys, flag):
    # What a shell passes for $'\xff': a surrogate. Before: a UnicodeEncodeError traceback.
    name = os.fsdecode(b"r\xff")
    value = name if flag == "--run-name" else str(tmp_path / name)
    args = [a for a in small_flags(tmp_path)]
    if flag == "--logdir":
        i = args.index("--logdir")
        del args[i : i + 2]
    code, _, err = run_main("train", *args, flag, value, capsys=capsys)
    _one_line(code, err, f"argument {flag}: must be UTF-8 text")
    assert not any(tmp_path.iterdir())


def test_a_plot_where_nothing_can_be_written_is_one_line(capsys):
    # Before: a traceback from the write, after the work.
    code, _, err = run_main(
        "gradcheck", "--seq-len", "5", "--plot", "/proc/flow.png", capsys=capsys
    )
    _one_line(code, err, "argument --plot: cannot write in /proc")


# --- TOML -------------------------------------------------------------------------------


def test_a_setting_twice_in_one_file_is_refused(tmp_path, capsys):
    # Before: both accepted, one silently won.
    path = tmp_path / "c.toml"
    path.write_text("hidden-size = 4\nhidden_size = 8\n")
    code, _, err = run_main("train", "--config", path, capsys=capsys)
    _one_line(code, err, "argument --config:")
    assert "hidden_size twice" in err


def test_a_files_preset_against_the_flags_is_refused(tmp_path, capsys):
    # Before: the notebook's settings were recorded as preset "frontier".
    path = tmp_path / "c.toml"
    path.write_text('preset = "frontier"\n')
    code, _, err = run_main("train", "--config", path, "--preset", "notebook", capsys=capsys)
    _one_line(code, err, "argument --preset:")
    assert "frontier" in err and "notebook" in err


def test_a_files_preset_is_the_one_applied(tmp_path):
    from echo_rnn.config import PRESETS, build_config

    path = tmp_path / "c.toml"
    path.write_text('preset = "frontier"\n')
    config = build_config(None, path)
    assert config.preset == "frontier" and config.lr == PRESETS["frontier"]["lr"]
    assert build_config("frontier", path).preset == "frontier"


def test_a_bad_value_in_a_file_names_the_file(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("hidden_size = -1\n")
    code, _, err = run_main("train", "--config", path, capsys=capsys)
    _one_line(code, err, f"argument --config: {path} sets hidden_size: must be a positive")


@pytest.mark.parametrize("key", ["hidden_size", "echo-step", "seed", "run_name"])
def test_a_sweeps_grid_in_its_file_is_refused(tmp_path, capsys, key):
    # Before: silently ignored (the grid's flags won).
    path = tmp_path / "c.toml"
    path.write_text(f"{key} = {json.dumps('x' if key == 'run_name' else 3)}\n")
    code, _, err = run_main(
        "sweep",
        "--echo-steps",
        "1",
        "--hidden-sizes",
        "2",
        "--config",
        path,
        "--logdir",
        tmp_path / "runs",
        capsys=capsys,
    )
    _one_line(code, err, "argument --config:")
    assert key.replace("-", "_") in err and not (tmp_path / "runs").exists()


# --- what a new user hit ----------------------------------------------------------------


def test_train_help_says_each_default_once(capsys):
    code, out, _ = run_main("train", "--help", capsys=capsys)
    out = " ".join(out.split())  # as wrapped at any terminal width
    assert code == 0 and "--run-name RUN_NAME name of this run's directory" in out
    assert "(default: task, backend, seed and time) (default" not in out
    assert "(default: none) (default: none)" not in out


def test_json_output_is_strict(capsys):
    # Before: `gradcheck --init-std 1e300 --json` printed NaN, which JSON does not have.
    code, out, _ = run_main(
        "gradcheck", "--seq-len", "5", "--init-std", "1e300", "--json", capsys=capsys
    )

    def refuse(word):
        raise ValueError(f"not strict JSON: {word}")

    json.loads(out, parse_constant=refuse)


def test_a_misspelt_top_level_flag_is_named(capsys):
    # Before: "the following arguments are required: COMMAND".
    code, _, err = run_main("--versio", capsys=capsys)
    _one_line(code, err, "--versio")
    assert "did you mean --version" in err
