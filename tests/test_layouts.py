"""Learners' layouts (echo_rnn/layouts.py): each example file under examples/layouts/ is
written in a source's own style and wrapped in at most three lines; the tests check that the
correct file agrees, that a planted orientation mistake is named in the learner's terms,
that dJ/dh_t is recorded from layered code, and that truncated code is told as truncated."""

import runpy
from pathlib import Path

import numpy as np
import pytest

from echo_rnn.layouts import Layout, rows
from echo_rnn.learner import check_grads
from helpers import run_main

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ROOT / "examples" / "layouts"


def load(name: str) -> dict:
    return runpy.run_path(str(LAYOUTS / f"{name}.py"))


def wrapper_lines(name: str) -> int:
    """The lines after the file's "# the wrapper" comment: the adapter's import and call."""
    text = (LAYOUTS / f"{name}.py").read_text().split("# the wrapper", 1)[1]
    return len([line for line in text.splitlines()[1:] if line.strip()])


@pytest.mark.parametrize(
    "name,problem",
    [
        ("columns", {}),
        ("rows", {"batch_size": 3, "input_size": 2, "bias": True, "seq_len": 12}),
        ("rows", {}),
        ("batch_middle", {"batch_size": 3, "input_size": 2, "bias": True, "seq_len": 12}),
        ("batch_middle", {}),
        ("loss_head", {}),
        ("module_globals", {}),
        ("layered", {"batch_size": 2, "input_size": 2, "bias": True, "seq_len": 12}),
    ],
)
def test_each_layout_agrees_with_a_wrapper_of_at_most_three_lines(name, problem):
    assert wrapper_lines(name) <= 3
    report = check_grads(load(name)["check"], **problem)
    assert report.agrees, report.format()
    assert report.precision == "float64"


def test_module_globals_are_put_back_after_the_call():
    module = load("module_globals")
    before = module["Whh"].copy()
    check_grads(module["check"])
    assert np.array_equal(module["lossFun"].__globals__["Whh"], before)


def _rows_with(change):
    """The rows example with its returned gradients changed by ``change``."""
    fn = load("rows")["rnn_bptt"]

    def planted(**kw):
        return change(fn(**kw))

    return rows(planted, U="Wh", V="Wx", w="Wy")


def test_dWh_returned_as_dU_is_named_with_the_rows_fix():
    report = check_grads(_rows_with(lambda g: {**g, "Wh": g["Wh"].T}))
    assert not report.agrees
    assert report.diagnoses["U"].codes == ["transposed"], report.format()
    text = report.format()
    assert "dWh is the transpose of the right gradient" in text
    assert "h_prev.T @ dz" in text and "np.outer" not in text
    assert "Wh disagrees" in text


def test_dWx_in_the_orientation_of_V_is_named_even_with_one_input():
    """I = 1: (6, 1) where Wx's (1, 6) belongs holds the right numbers."""
    report = check_grads(_rows_with(lambda g: {**g, "Wx": g["Wx"].T}))
    assert not report.agrees
    assert report.diagnoses["V"].codes == ["transposed"]
    assert "dWx came back as (6, 1), the transpose of Wx's shape (1, 6)" in report.format()
    assert "x_t.T @ dz" in report.format()


def test_a_non_square_transpose_with_a_second_mistake_names_both():
    report = check_grads(_rows_with(lambda g: {**g, "Wx": -g["Wx"].T}), input_size=2)
    assert report.diagnoses["V"].codes == ["transposed", "sign"], report.format()


def test_batch_middle_dWya_in_the_wrong_orientation_is_named():
    fn = load("batch_middle")

    def planted(**kw):
        g = fn["rnn_bptt"](**kw)
        return {**g, "dWya": g["dWya"].T}

    from echo_rnn.layouts import batch_middle

    report = check_grads(batch_middle(planted, U="Waa", V="Wax", w="Wya", dh="da"))
    assert report.diagnoses["w"].codes == ["transposed"]
    assert "dWya came back as (6, 1), the transpose of Wya's shape (1, 6)" in report.format()


def test_layered_code_gets_its_dh_recorded_and_the_departure_is_told():
    """A mistake in the layered code's loss glue (dy read one step off) is outside the
    catalogue's step functions; the recorded dJ/dh_t says where it departs."""
    module = load("layered")
    report = check_grads(module["check"])
    assert report.returned_dh
    assert report.agrees
    # the recorded dh is what the step backward is handed: autograd's dJ/dh_t
    assert report.rows[-1].name == "dh" and report.rows[-1].max_rel_diff < 1e-12


def test_a_layered_mistake_departs_at_the_step_it_is_made():
    module = load("layered")
    step = module["rnn_step_backward"]
    calls = []

    def wrong_step(dnext_h, cache):  # at one step (t = 41), the carried gradient is halved
        calls.append(1)
        dx, dprev, dWx, dWh, db = step(dnext_h, cache)
        return dx, dprev * (0.5 if len(calls) == 10 else 1), dWx, dWh, db

    module["loss"].__globals__["rnn_step_backward"] = wrong_step
    try:
        report = check_grads(module["check"])
    finally:
        module["loss"].__globals__["rnn_step_backward"] = step
    assert not report.agrees
    assert report.departure is not None and report.departure["step"] == 50 - 10, report.format()


def test_per_output_truncation_is_told_instead_of_a_mistake():
    report = check_grads(load("truncated")["check"])
    assert not report.agrees
    assert report.truncation_found == {"kind": "back", "k": 4}
    assert all(not d.codes for d in report.diagnoses.values())
    assert "bptt_truncate = 4" in report.verdict()
    assert check_grads(load("truncated")["check"], truncate=4, truncation="back").agrees
    assert not check_grads(load("truncated")["check"], truncate=3, truncation="back").agrees


def windowed(k):
    """A learner's column-vector BPTT that truncates in windows of k steps."""

    def bptt(U, V, w, x, y):
        T, H = len(x), len(w)
        h = np.zeros((T + 1, H))
        for t in range(1, T + 1):
            h[t] = np.tanh(U @ h[t - 1] + V[:, 0] * x[t - 1])
        yhat = h[1:] @ w
        dU, dV, dw, dh_next = np.zeros_like(U), np.zeros_like(V), np.zeros_like(w), np.zeros(H)
        for t in range(T, 0, -1):
            dy = (yhat[t - 1] - y[t - 1]) / T
            dw += dy * h[t]
            dz = (dy * w + dh_next) * (1 - h[t] ** 2)
            dU += np.outer(dz, h[t - 1])
            dV[:, 0] += dz * x[t - 1]
            dh_next = np.zeros(H) if (t - 1) % k == 0 else U.T @ dz  # a window starts at t
        return {"U": dU, "V": dV, "w": dw}

    return bptt


def test_windowed_truncation_is_told_and_checks_with_truncate():
    report = check_grads(windowed(7))
    assert report.truncation_found == {"kind": "windows", "k": 7}, report.format()
    assert check_grads(windowed(7), truncate=7).agrees
    assert not check_grads(windowed(7), truncate=6).agrees


def test_correct_full_bptt_is_not_told_truncated():
    report = check_grads(load("columns")["check"])
    assert report.agrees and report.truncation_found is None


def test_a_layout_from_the_child_is_validated():
    with pytest.raises(ValueError):
        Layout.from_json({"kind": "sideways"})
    with pytest.raises(ValueError):
        Layout.from_json({"kind": "rows", "names": {"U": "not a name"}})


@pytest.mark.parametrize(
    "spec,extra,needle",
    [
        (
            "rows.py:check",
            ["--batch-size", "2", "--input-size", "2", "--bias"],
            "all gradients agree",
        ),
        ("layered.py:check", ["--per-step"], "all gradients agree"),
        ("module_globals.py:check", [], "all gradients agree"),
        (
            "truncated.py:check",
            ["--truncate", "4", "--truncation", "back", "--per-step"],
            "all gradients agree",
        ),
    ],
)
def test_the_command_line_checks_each_layout_in_its_child(spec, extra, needle, capsys):
    code, out, err = run_main("gradcheck", "--grads", str(LAYOUTS / spec), *extra, capsys=capsys)
    assert code == 0, out + err
    assert needle in out
    if "--per-step" in extra:
        assert ("||yours - autograd||" in out) == ("layered" in spec)  # it returns dh
        # the figures are of the gradient checked, and the heading says which
        which = "truncated BPTT, k = 4, back" if "--truncate" in extra else "full BPTT"
        assert f"||dJ/dh_t|| per step ({which}):" in out


def test_the_command_line_names_a_misoriented_gradient(tmp_path, capsys):
    src = (LAYOUTS / "rows.py").read_text().replace('"Wx": dWx,', '"Wx": dWx.T,')
    (tmp_path / "wrong.py").write_text(src)
    code, out, err = run_main("gradcheck", "--grads", f"{tmp_path}/wrong.py:check", capsys=capsys)
    assert code == 1
    assert "dWx came back as (6, 1), the transpose of Wx's shape (1, 6)" in out


def test_memory_beyond_the_limit_is_a_memory_error_in_their_code(tmp_path, capsys):
    (tmp_path / "greedy.py").write_text(
        "import numpy as np\n"
        "def bptt(U, V, w, x, y):\n"
        "    big = np.ones((1 << 30) // 8 * 3)  # 3 GiB\n"
        "    return {}\n"
    )
    code, out, err = run_main(
        "gradcheck", "--grads", f"{tmp_path}/greedy.py:bptt", "--memory", "1", capsys=capsys
    )
    assert code == 1
    assert "raised MemoryError" in err and "--memory" in err
