"""Checkpoints: atomic writes, refused pickles, clear errors for broken files."""

import os

import pytest
import torch

import echo_rnn.checkpoint as ckpt
from echo_rnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from echo_rnn.train import train
from helpers import cli, small_config


class Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def run(tmp_path):
    return train(small_config(tmp_path, run_name="r", steps=10), verbose=False)


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "version": 1, "config": {}, "step": 0,
                "model": Evil(marker)}, bad)
    with pytest.raises(CheckpointError, match="refused .* could run code"):
        load_checkpoint(bad)
    proc = cli("predict", "--checkpoint", bad, "0101")
    assert proc.returncode == 2 and "refused" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("train", "--resume", bad)
    assert proc.returncode == 2 and "refused" in proc.stderr
    assert not marker.exists()


def test_truncated_and_garbage_files(tmp_path, run):
    good = ckpt.checkpoint_path(run.run_dir).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="not an echo-rnn checkpoint"):
        load_checkpoint(plain)
    proc = cli("predict", "--checkpoint", cut, "0101")
    assert proc.returncode == 2 and "truncated or corrupt" in proc.stderr


def test_checkpoint_whose_weights_do_not_fit_its_config(tmp_path, run):
    state = load_checkpoint(run.run_dir)
    state["config"]["hidden_size"] = 9
    del state["format"], state["version"]
    bad = tmp_path / "misfit.pt"
    save_checkpoint(bad, state)
    proc = cli("predict", "--checkpoint", bad, "0101")
    assert proc.returncode == 2 and "do not fit its config: U has shape (4, 4)" in proc.stderr
    proc = cli("train", "--resume", bad)
    assert proc.returncode == 2 and "do not fit its config" in proc.stderr


def test_write_is_atomic(tmp_path, monkeypatch, run):
    path = ckpt.checkpoint_path(run.run_dir)
    before = path.read_bytes()

    def torn_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"config": {}, "step": 99, "model": {}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_resolve_accepts_run_dir_or_file(run):
    path = ckpt.checkpoint_path(run.run_dir)
    assert load_checkpoint(run.run_dir)["step"] == load_checkpoint(path)["step"] == 10
    with pytest.raises(CheckpointError, match="without checkpoints/last.pt"):
        load_checkpoint(path.parent)
