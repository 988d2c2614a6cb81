"""Checkpoints: atomic writes, refused pickles, clear errors for broken files."""

import os

import pytest
import torch

import echo_rnn.run.checkpoint as ckpt
from echo_rnn.engine.train import train
from echo_rnn.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
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
    torch.save(
        {"format": ckpt.FORMAT, "version": 1, "config": {}, "step": 0, "model": Evil(marker)}, bad
    )
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


def _variant(tmp_path, run, change, name="bad.pt"):
    state = load_checkpoint(run.run_dir)
    change(state)
    path = tmp_path / name
    torch.save(state, path)  # with format and version: only the contents are wrong
    return path


def _set(key, value):
    def change(state):
        where, _, leaf = key.rpartition(".")
        target = state
        for part in filter(None, where.split(".")):
            target = target[part]
        target[leaf] = value

    return change


@pytest.mark.parametrize(
    "change, needle",
    [
        (_set("config", "a string"), "its config is a str"),
        (_set("step", "abc"), "step must be an integer"),
        (_set("step", -1), "step must be an integer"),
        (_set("progress", "x"), "its progress is a str"),
        (_set("progress.train_loss", float("nan")), "its train_loss must be a finite number"),
        (_set("model", [1, 2]), "its model must hold U, V, w"),
        (_set("config.hidden_size", -1), "hidden_size: must be a positive integer"),
        (_set("config.hidden_size", 10**6), "hidden_size: must be a positive integer up to 4096"),
        (_set("config.seed", 2**64), "seed: must be an integer in"),
        (
            _set("model.U", torch.full((4, 4), float("nan"))),
            "its weight U holds NaN or infinite values",
        ),
        (
            _set("model.w", torch.full((4,), float("inf"))),
            "its weight w holds NaN or infinite values",
        ),
        (_set("rng", {"train": "x"}), "its rng state is not a byte tensor"),
    ],
)
def test_malformed_contents_are_refused_before_anything_is_built(tmp_path, run, change, needle):
    # Before: these crashed (KeyError, TypeError, ...), tried to allocate terabytes, or were
    # accepted: NaN weights were predicted with (exit 0) and resumed as "solved".
    bad = _variant(tmp_path, run, change)
    with pytest.raises(CheckpointError, match="not a valid echo-rnn checkpoint") as info:
        load_checkpoint(bad)
    assert needle in str(info.value)
    proc = cli("predict", "--checkpoint", bad, "0101") if "NaN" in needle else None
    if proc is not None:
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["text", "symlink"])
def test_a_text_file_or_a_link_to_one_is_one_line(tmp_path, capsys, kind):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)
    path = text
    if kind == "symlink":
        path = tmp_path / "link.pt"
        path.symlink_to(text)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    from helpers import run_main

    code, _, err = run_main("predict", "--checkpoint", path, "0101", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_zip_bomb_is_refused_before_it_inflates(tmp_path, run):
    import zipfile

    good = ckpt.checkpoint_path(run.run_dir)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():  # the same checkpoint, its entries deflated
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
        # and one that would inflate to 300 MB from a few hundred kilobytes
        dst.writestr("archive/data/99", b"\0" * (300 * 2**20), compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2 * 2**20
    with pytest.raises(CheckpointError, match="compressed entries"):
        load_checkpoint(bomb)
    big = tmp_path / "big.pt"
    with open(big, "wb") as fh:
        fh.truncate(ckpt.MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(CheckpointError, match="at most 256 MiB"):
        load_checkpoint(big)
