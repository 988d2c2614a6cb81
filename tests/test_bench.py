"""The benchmark's checks (not its timings): gradient agreement and saved-bytes accounting."""

import json

import pytest
import torch

import echo_rnn.kernels.bptt as bptt
from echo_rnn.bench import make_candidates, run_benchmark, saved_bytes
from echo_rnn.kernels import compiled
from helpers import cli

F32 = 4  # bytes


def test_saved_bytes_counts_distinct_unheld_storages():
    a = torch.randn(100, requires_grad=True)
    b = torch.randn(100, requires_grad=True)
    assert saved_bytes(lambda: (a * b).sum(), [a, b]) == 0  # held by the caller
    assert saved_bytes(lambda: (a * b).sum(), []) == 2 * 100 * F32

    def twice():
        c = a * 2  # an intermediate, saved by both factors of c * c: counted once
        return (c * c).sum()

    assert saved_bytes(twice, [a]) == 100 * F32


@pytest.mark.parametrize("B, T, H", [(3, 40, 5), (32, 200, 16)])
def test_bptt_saves_only_the_hidden_states(B, T, H):
    cands, inputs = make_candidates(B, T, H, torch.device("cpu"))
    mem = {c.name: saved_bytes(c.forward_loss, c.params + inputs) for c in cands}
    # h_1..h_T, and y_hat, which the loss saves for every candidate alike
    assert mem["bptt"] == T * B * H * F32 + T * B * F32
    # the memory targets: no more than nn.RNN, at most half of the autograd backend
    assert mem["bptt"] <= mem["nn.RNN"]
    assert mem["bptt"] <= mem["autograd"] / 2


# the compiled kernel's pass is a candidate on a CPU where the extension is built
COMPILED = {"compiled"} if compiled.AVAILABLE else set()


def test_candidates_share_weights_and_agree():
    report = run_benchmark(
        {"tiny": (4, 12, 5)}, torch.device("cpu"), min_reps=3, budget_s=0, warmup=1
    )
    assert report.refused == []
    rows = {r.backend: r for r in report.rows}
    assert set(rows) == {"nn.RNN", "autograd", "bptt"} | COMPILED
    assert rows["nn.RNN"].ratio_to_nn_rnn == 1.0
    assert all(r.grad_max_rel_diff < 1e-5 and r.reps >= 3 for r in rows.values())


def test_a_backend_whose_gradients_disagree_is_not_reported(monkeypatch):
    real = bptt.bptt_backward

    def off(*args, **kwargs):
        grads = real(*args, **kwargs)
        grads.U = grads.U * 1.01
        return grads

    monkeypatch.setattr(bptt, "bptt_backward", off)
    report = run_benchmark(
        {"tiny": (4, 12, 5)}, torch.device("cpu"), min_reps=2, budget_s=0, warmup=0
    )
    assert report.refused == ["tiny/bptt: gradients disagree with nn.RNN"]
    assert {r.backend for r in report.rows} == {"nn.RNN", "autograd"} | COMPILED


def test_bench_cli_json_output_and_markdown(tmp_path):
    out = tmp_path / "b.json"
    quick = ["--shape", "t=2,8,3", "--min-reps", "3", "--budget", "0.01", "--warmup", "1"]
    proc = cli("bench", *quick, "--output", out, "--markdown")
    assert proc.returncode == 0, proc.stderr
    assert "| t | 2 | 8 | 3 | bptt |" in proc.stdout
    # pasted into Markdown, the lines after the table are paragraphs, not rows of it
    blocks = proc.stdout.strip().split("\n\n")
    assert [b.startswith("|") for b in blocks] == [False, True, False], blocks  # ..., Adam
    assert all(line.startswith("|") for line in blocks[1].splitlines()), blocks[1]
    data = json.loads(out.read_text())
    assert data["threads"] == 1 and len(data["rows"]) == 3 + len(COMPILED)
    # --json prints, as gradcheck --json and predict --json do
    proc = cli("bench", *quick, "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["rows"]) == 3 + len(COMPILED)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--shape", "nope"], "unknown shape 'nope'"),
        (["--output", "."], "argument --output: . is a directory"),
        (
            ["--output", "no/such/dir/b.json"],
            "argument --output: directory no/such/dir does not exist",
        ),
        (["--shape", "big=10000000,10,4"], "must have B, T <= 1000000"),
        (["--shape", "big=1000000,100000,64"], "argument --shape: too large: shape big"),
        (
            ["--seed", "9223372036854775808"],
            "argument --seed: must be an integer in [0, 9223372036854775807]",
        ),
        (["--json", "--markdown"], "argument --markdown: not with --json"),
    ],
)
def test_bench_usage_errors_before_any_timing(tmp_path, monkeypatch, capsys, args, needle):
    from helpers import run_main

    monkeypatch.chdir(tmp_path)
    code, out, err = run_main("bench", *args, capsys=capsys)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "timing" not in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_benchmark_leaves_threads_and_rng_as_they_were():
    before_threads, before_rng = torch.get_num_threads(), torch.random.get_rng_state()
    run_benchmark(
        {"tiny": (2, 6, 3)},
        torch.device("cpu"),
        threads=before_threads + 1,
        min_reps=1,
        budget_s=0,
        warmup=0,
    )
    assert torch.get_num_threads() == before_threads
    assert torch.equal(torch.random.get_rng_state(), before_rng)


def test_bench_population_times_a_population_against_single_runs(capsys):
    from helpers import run_main

    code, out, err = run_main(
        "bench", "--population", "2", "--bench-steps", "3", "--json", capsys=capsys
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["runs"] == 2 and report["steps"] == 3 and report["run_steps"] == 40000
    assert report["shape"] == {"B": 64, "T": 50, "H": 6}  # the frontier shape
    for key in ("ms_per_run_step_population", "ms_per_run_step_single"):
        assert report[key] > 0
    assert report["speedup"] == pytest.approx(
        report["ms_per_run_step_single"] / report["ms_per_run_step_population"]
    )
    code, _, err = run_main("bench", "--population", "2", "--device", "meta", capsys=capsys)
    assert code == 2 and "--device" in err
    code, _, err = run_main("bench", "--population", "2", "--bench-steps", "40000", capsys=capsys)
    assert code == 2 and "--bench-steps" in err and "40000" in err
