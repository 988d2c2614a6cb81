"""A run's record (echo_rnn/run/state.py): what a checkpoint holds is one typed record, each
field checked beside its declaration; what a run writes, reads back and validates are the
record's fields and nothing else."""

import dataclasses

import pytest
import torch

from echo_rnn.engine.train import train
from echo_rnn.run.checkpoint import load_checkpoint
from echo_rnn.run.state import FIELDS, HEADER, REQUIRED, Progress, RunRecord, problem
from helpers import small_config


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("state")
    run = train(small_config(tmp, steps=15, log_every=4, eval_every=10), verbose=False)
    return load_checkpoint(run.run_dir)


def test_every_field_has_its_check_beside_it():
    for record in (RunRecord, Progress):
        for f in dataclasses.fields(record):
            assert callable(f.metadata.get("check")), f"{record.__name__}.{f.name} has no check"
    assert set(REQUIRED) == {"config", "step", "model"}


def test_a_checkpoint_holds_the_record_s_fields_and_nothing_else(state):
    # what a run writes is the record: a field added to RunRecord or Progress is written,
    # and nothing is written that the record does not declare
    assert set(state) == set(FIELDS)
    assert set(state["progress"]) == {f.name for f in dataclasses.fields(Progress)}
    assert set(state) - set(HEADER) == {f.name for f in dataclasses.fields(RunRecord)}


def test_the_record_reads_back_what_it_wrote(state):
    record = RunRecord.from_state(state)
    assert isinstance(record.progress, Progress) and record.step == state["step"] == 15
    again = record.to_state()
    assert set(again) == set(state) - set(HEADER)
    for key in again:
        if key == "model":
            assert all(torch.equal(again[key][n], state[key][n]) for n in state[key])
        elif key == "rng":
            assert torch.equal(again[key]["train"], state[key]["train"])
        elif key not in ("optimizer",):
            assert again[key] == state[key], key
    assert problem({**again, "format": state["format"], "version": state["version"]}) is None


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("step", -1, "step must be an integer"),
        ("window", [[99, 0.1, 0.2, 0.02]], "its window"),  # a row past the record's step
        ("events", {"x": 3}, "event-file sizes"),
        ("curriculum", {"k": 99}, "curriculum k"),
        ("rng", {"train": torch.zeros(3)}, "rng state is not a byte tensor"),
    ],
)
def test_each_field_is_checked_against_the_fields_before_it(state, field, value, says):
    assert says in problem({**state, field: value})


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("solved_step", 16, "solved_step must be none or an integer in [0, step]"),
        ("wall_time_s", -1.0, "wall_time_s must be a finite number >= 0"),
        ("train_loss", float("nan"), "train_loss must be a finite number"),
        ("last_eval", {"step": "ten"}, "last evaluation must be a table of finite numbers"),
        ("best", 1.0, "progress holds a field echo-rnn does not write: 'best'"),
    ],
)
def test_progress_is_checked_field_by_field(state, key, value, says):
    assert says in problem({**state, "progress": {**state["progress"], key: value}})
