"""gradcheck's problem as data (echo_rnn/problem.py): every field of GradcheckProblem is a
flag of ``echo-rnn gradcheck``, in its --help, in the report's header line and in its --json
"config", and reaches the problem that is built. Each test walks the fields, so a field
added to the dataclass that one of these places forgets fails here, named."""

import json
from dataclasses import fields

import pytest

from echo_rnn import problem as problem_module
from echo_rnn.errors import ConfigError
from echo_rnn.learner import check_grads
from echo_rnn.problem import KERNEL_SEED, GradcheckProblem, Problem
from helpers import run_main

FIELDS = [f.name for f in fields(GradcheckProblem)]
# A learner's function that returns zeros of every expected shape, whatever the problem:
# its report shows the header and the config whether or not the gradients agree.
ZEROS = (
    "import numpy as np\n"
    "def g(U, V, w, x, y, b=None, h0=None):\n"
    "    out = {'U': np.zeros_like(U), 'V': np.zeros_like(V), 'w': np.zeros_like(w)}\n"
    "    if b is not None:\n        out['b'] = np.zeros_like(b)\n"
    "    if h0 is not None:\n        out['h0'] = np.zeros_like(h0)\n"
    "    return out\n"
)


def _other(f):
    """A valid value of field ``f`` other than its default, from its metadata alone."""
    m, default = f.metadata, f.default
    if m["choices"]:
        return next(c for c in reversed(m["choices"]) if c != default)
    if m["kind"] is bool:
        return not default
    if m["kind"] is int:
        return 3 if default is None else default + 1
    return 2 * default


OTHER = {f.name: _other(f) for f in fields(GradcheckProblem)}


def _flags(values):
    out = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        out += (
            [flag]
            if value is True
            else [f"--no-{flag[2:]}"]
            if value is False
            else [flag, str(value)]
        )
    return out


@pytest.fixture
def changed(tmp_path, capsys):
    """``gradcheck --grads`` with every field at a value other than its default: (the text
    report, the --json object)."""
    f = tmp_path / "z.py"
    f.write_text(ZEROS)
    args = ["gradcheck", "--grads", f"{f}:g", *_flags(OTHER)]
    code, text, err = run_main(*args, capsys=capsys)
    assert code == 1, err  # zeros disagree; what matters is what the report says
    code, out, err = run_main(*args, "--json", capsys=capsys)
    assert code == 1, err
    return text, json.loads(out)


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_is_a_flag_in_the_help(name, capsys):
    code, out, _ = run_main("gradcheck", "--help", capsys=capsys)
    assert code == 0
    assert "--" + name.replace("_", "-") in out.split(), (
        f"{name}: a field of GradcheckProblem without its flag in gradcheck --help"
    )


@pytest.mark.slow  # a gradcheck per field: the full suite's guard, not the quick tier's
@pytest.mark.parametrize("name", FIELDS)
def test_every_field_reaches_the_json_config(name, changed):
    _, report = changed
    assert report["config"][name] == OTHER[name], f"{name}: not in --json's config as given"


@pytest.mark.slow  # a gradcheck per field: the full suite's guard, not the quick tier's
@pytest.mark.parametrize("name", FIELDS)
def test_every_field_is_in_the_header(name, changed):
    text, _ = changed
    header = text.splitlines()[0]
    f = next(f for f in fields(GradcheckProblem) if f.name == name)
    shown = f"{f.metadata['symbol'] or name}={OTHER[name]}"
    assert shown in header.split(), f"{name}: {shown} missing from {header!r}"


@pytest.mark.slow  # a gradcheck per field: the full suite's guard, not the quick tier's
@pytest.mark.parametrize("name", FIELDS)
def test_every_field_reaches_the_kernel_check_config(name, capsys):
    given = {k: v for k, v in OTHER.items() if k != "truncation"}  # --grads only
    code, out, err = run_main(
        "gradcheck", "--json", "--kernel", "reference", *_flags(given), capsys=capsys
    )
    assert code == 0, err
    config = json.loads(out)["config"]
    expected = {**given, "truncation": "windows"}  # echo-rnn's kernels truncate in windows
    assert config[name] == expected[name]


def test_the_seed_defaults_to_the_mode(capsys):
    code, out, _ = run_main("gradcheck", "--json", "--seq-len", "5", capsys=capsys)
    assert code == 0 and json.loads(out)["config"]["seed"] == KERNEL_SEED
    assert GradcheckProblem().seed != KERNEL_SEED  # --grads: the learner's default


def test_check_grads_takes_every_field_and_names_an_unknown_one():
    zeros = {}
    exec(ZEROS, zeros)
    report = check_grads(zeros["g"], **OTHER)
    assert {n: report.config[n] for n in FIELDS} == OTHER
    with pytest.raises(ConfigError, match="unknown setting 'hidden'; valid are batch_size"):
        check_grads(zeros["g"], hidden=3)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"echo_step": 50}, "echo_step: must be in [0, seq_len) = [0, 50), got 50"),
        ({"hidden_size": 0}, "hidden_size: must be a positive integer up to 4096, got 0"),
        ({"truncation": "sideways", "truncate": 3}, "truncation: must be one of windows, back"),
        ({"bias": 1}, "bias: must be bool, got 1"),
    ],
)
def test_a_bad_setting_is_named(settings, message):
    with pytest.raises(ConfigError) as info:
        GradcheckProblem(**settings)
    assert str(info.value).startswith(message)


def test_truncation_is_spelled_one_way():
    assert GradcheckProblem().truncation is None
    assert GradcheckProblem(truncate=4).truncation == "windows"
    assert GradcheckProblem(truncation="back").truncation is None  # nothing to truncate
    assert (
        GradcheckProblem(truncate=4, truncation="back")
        .describe()
        .endswith("truncate=4 truncation=back")
    )


def test_equal_problems_compute_what_a_check_needs_once():
    # check_grads builds its problem afresh at every call: what a check computes from the
    # settings alone is kept for the problems used last, so a notebook or a class checking
    # many functions on one problem pays for it once
    calls = []

    def make():
        calls.append(1)
        return len(calls)

    key = "test:shared"
    a, b = Problem(seed=11), Problem(seed=11)
    assert a.cached(key, make) == b.cached(key, make) == 1
    assert Problem(seed=12).cached(key, make) == 2  # other settings: their own
    assert Problem(seed=11).on("float32").cached(key, make) == 3  # another dtype: its own
    for seed in range(100, 100 + problem_module._SHARED_PROBLEMS):  # the oldest is let go
        Problem(seed=seed).cached(key, make)
    assert Problem(seed=11).cached(key, make) > 3
