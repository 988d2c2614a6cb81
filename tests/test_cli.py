"""The ``echo-rnn`` command line: exit codes, output formats, usage errors."""

import json
from pathlib import Path

import pytest

import echo_rnn.compare as compare
from echo_rnn.cli import main
from helpers import cli, python

ROOT = Path(__file__).resolve().parents[1]


def test_gradcheck_notebook_shape_agrees_for_both_kernels(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line[:2] in ("U ", "V ", "w ")]
    assert [r[0] for r in rows] == ["U", "V", "w"] * 2  # the reference kernel's, the fast one's
    assert all(r[-1] == "yes" for r in rows)
    assert "reference kernel, vs autograd" in out and "fast kernel, vs autograd" in out
    assert "gradcheck on ReferenceFunction" in out and "gradcheck on BPTTFunction" in out
    assert out.count("finite differences, float64, full Jacobian, full BPTT): passed") == 2


@pytest.mark.parametrize("kernel", ["reference", "fast"])
def test_gradcheck_one_kernel(capsys, kernel):
    assert main(["gradcheck", "--kernel", kernel, "--json", "--seq-len", "9"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["kernels"]) == [kernel] and report["config"]["kernel"] == kernel


@pytest.mark.slow  # seconds of float64 gradients at a large shape
def test_gradcheck_json_for_the_large_shape(capsys):
    args = [
        "gradcheck",
        "--batch-size",
        "32",
        "--seq-len",
        "200",
        "--hidden-size",
        "64",
        "--input-size",
        "3",
        "--bias",
        "--h0",
        "--truncate",
        "25",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agrees"] is True
    assert report["config"]["truncate"] == 25
    assert {r["name"]: r["shape"] for r in report["rows"]} == {
        "U": [64, 64],
        "V": [64, 3],
        "w": [64],
        "b": [64],
        "h0": [32, 64],
    }
    assert all(r["max_rel_diff"] < 1e-10 for r in report["rows"])
    assert report["gradcheck"] == {"passed": True, "fast_mode": True, "message": "passed"}
    assert set(report["kernels"]) == {"reference", "fast"}
    assert all(k["agrees"] for k in report["kernels"].values())


def test_gradcheck_exits_1_when_a_gradient_disagrees(monkeypatch, capsys):
    real = compare.manual_grads

    def off_by_a_bit(*args, **kwargs):
        grads = real(*args, **kwargs)
        grads["w"] = grads["w"] * (1 + 1e-6)
        return grads

    monkeypatch.setattr(compare, "manual_grads", off_by_a_bit)
    assert main(["gradcheck", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["agrees"] is False
    assert [r["name"] for r in report["rows"] if not r["agrees"]] == ["w"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--hidden-size", "-1"], "argument --hidden-size: must be a positive integer"),
        (
            ["--seq-len", "abc"],
            "argument --seq-len: must be a positive integer up to 1000000, got 'abc'",
        ),
        (
            ["--seq-len", "1000000000000"],
            "argument --seq-len: must be a positive integer up to 1000000",
        ),
        (
            ["--hidden-size", "100000"],
            "argument --hidden-size: must be a positive integer up to 4096",
        ),
        (
            ["--hidden-size", "4096", "--batch-size", "100000", "--seq-len", "1000"],
            "argument --batch-size: too large: B=100000, T=1000, H=4096, I=1 would need about",
        ),
        (
            ["--seed", "99999999999999999999"],
            "argument --seed: must be an integer in [0, 9223372036854775807]",
        ),
        (["--see", "1"], "unrecognized arguments: --see"),  # no prefix matching
        (["--echo-step", "50"], "argument --echo-step: must be below --seq-len (50)"),
        (["--truncate", "0"], "argument --truncate: must be a positive integer"),
        (["--dtype", "float16"], "argument --dtype: invalid choice"),
        (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, needle, capsys):
    from helpers import run_main

    code, out, err = run_main("gradcheck", *args, capsys=capsys)
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""


def test_a_usage_error_in_a_real_process():
    proc = cli("gradcheck", "--hidden-size", "-1")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "echo-rnn gradcheck: error: argument --hidden-size: must be a positive "
        "integer up to 4096, got '-1' (see echo-rnn gradcheck --help)\n"
    )


def test_cuda_without_cuda_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = cli("gradcheck", "--device", "cuda")
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr


def test_script_is_the_same_command():
    proc = python(ROOT / "scripts" / "compare_grads.py", "--json", "--seq-len", "9")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["config"]["seq_len"] == 9


def test_help_explains():
    proc = cli("gradcheck", "--help")
    assert proc.returncode == 0
    assert "finite differences" in proc.stdout and "--truncate" in proc.stdout


def test_version():
    from echo_rnn import __version__

    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith(f"echo-rnn {__version__} (torch ")


def test_help_descriptions_are_wrapped():
    proc = cli("train", "--help")
    assert proc.returncode == 0
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100


def test_gpu_check_lists_every_cuda_path_and_refuses_without_cuda():
    import torch

    script = ROOT / "scripts" / "gpu_check.py"
    proc = python(script, "--print-commands", "--out", "o")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "-k cuda" in text and "bench --device cuda --output" in text
    assert "bench --device cuda --cuda-graph" in text
    assert text.count("train --device cuda --cuda-graph") == 2 and "--backend bptt" in text
    assert "sweep --device cuda" in text and "--population 8" in text
    if not torch.cuda.is_available():
        proc = python(script)
        assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
