"""Which kernel trains a run: ``auto`` is the compiled kernel on a CPU where it can train the
run and the bptt kernel elsewhere, ``compiled`` where it cannot is a usage error, and a
missing extension is one line, after which the torch kernel trains."""

import json

import pytest
import torch

from echo_rnn.config import ConfigError
from echo_rnn.engine import backends
from echo_rnn.engine.train import train
from echo_rnn.kernels import compiled
from helpers import run_main, small_config, small_flags

needs_kernel = pytest.mark.skipif(
    not compiled.AVAILABLE, reason=f"compiled kernel not built: {compiled.UNAVAILABLE_REASON}"
)
CPU = torch.device("cpu")


@needs_kernel
def test_auto_is_the_compiled_kernel_on_a_cpu_and_bptt_where_it_cannot_train(tmp_path):
    c = small_config(tmp_path)
    assert c.backend == "auto"
    assert backends.training_backend(c, CPU) == "compiled"
    notebook = small_config(tmp_path, schedule="notebook", batch_size=1)
    assert backends.training_backend(notebook, CPU) == "bptt"
    assert backends.training_backend(c, CPU, data_parallel=True) == "bptt"
    for name in ("bptt", "autograd", "compiled"):
        assert backends.training_backend(small_config(tmp_path, backend=name), CPU) == name
    result = train(c, verbose=False)
    assert result.backend == "compiled"
    assert (
        json.loads(
            (tmp_path / "runs" / result.run_dir.split("/")[-1] / "summary.json").read_text()
        )["backend"]
        == "compiled"
    )


@needs_kernel
def test_compiled_where_it_cannot_train_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(
        ConfigError,
        match="^backend: compiled cannot train this run: it trains --schedule batch only",
    ):
        train(
            small_config(tmp_path, backend="compiled", schedule="notebook", batch_size=1),
            verbose=False,
        )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    code, out, err = run_main(
        "train",
        *small_flags(tmp_path),
        "--backend",
        "compiled",
        "--schedule",
        "notebook",
        "--batch-size",
        "1",
        capsys=capsys,
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--backend" in err or "backend" in err


def test_without_the_extension_one_line_says_so_and_bptt_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compiled, "AVAILABLE", False)
    monkeypatch.setattr(compiled, "UNAVAILABLE_REASON", "the compiled kernel is not built (test)")
    monkeypatch.setattr(backends, "_said", set())
    c = small_config(tmp_path)
    assert backends.training_backend(c, CPU) == "bptt"
    assert backends.training_backend(c, CPU) == "bptt"
    err = capsys.readouterr().err
    assert err == (
        "echo-rnn: the compiled kernel is not built (test); the bptt kernel trains instead\n"
    )  # once per process, however many runs
    assert train(c, verbose=False).backend == "bptt"
    with pytest.raises(
        ConfigError,
        match="^backend: compiled cannot train this run: the compiled kernel is not built",
    ):
        train(small_config(tmp_path, backend="compiled", run_name="x"), verbose=False)
