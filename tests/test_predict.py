import json

import pytest

from echo_rnn.engine.train import train
from echo_rnn.predict import parse_bits
from helpers import cli, small_config


def test_parse_bits():
    assert parse_bits("01 1\n0").tolist() == [[0.0, 1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="got '2' at position 1"):
        parse_bits("0210")
    with pytest.raises(ValueError, match="at least one"):
        parse_bits("  ")


def test_trained_model_echoes_the_bits(tmp_path):
    run = train(
        small_config(
            tmp_path,
            run_name="p",
            steps=400,
            seq_len=30,
            hidden_size=6,
            batch_size=32,
            val_size=128,
        ),
        verbose=False,
    )
    assert run.val_accuracy == 1.0
    bits = "0110100111010001011100101101001"
    proc = cli("predict", "--checkpoint", run.run_dir, "--json", bits)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["echo"][2:] == bits[:-2] and out["expected"] == "00" + bits[:-2]
    assert len(out["output"]) == len(bits)
    proc = cli("predict", "--checkpoint", run.run_dir, "-", input=bits + "\n")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == f"input      {bits}"
    assert proc.stdout.splitlines()[1] == f"echo (k=2) 00{bits[:-2]}"


def test_invalid_bits_and_missing_checkpoint(tmp_path):
    run = train(small_config(tmp_path, run_name="p", steps=5), verbose=False)
    proc = cli("predict", "--checkpoint", run.run_dir, "01a1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "echo-rnn predict: error: argument BITS: must contain only 0 and 1, got 'a' at position 2"
    )
    proc = cli("predict", "--checkpoint", tmp_path / "nothing", "0101")
    assert proc.returncode == 2 and "argument --checkpoint: no such" in proc.stderr
