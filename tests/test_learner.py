"""Checking a learner's own BPTT (echo_rnn/learner.py, echo_rnn/mistakes.py and
``echo-rnn gradcheck --grads``).

The learner-style functions here are written the way a learner writes BPTT, in numpy with
column vectors and explicit loops, independently of the catalogue's torch variations: a
planted mistake is a line of learner code, and the test checks that the catalogue names it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from echo_rnn import learner
from echo_rnn.compare import autograd_hidden_grads
from echo_rnn.learner import (
    DEFAULT_SEPARATION,
    MATCH_REL,
    BadReturn,
    LearnerCodeError,
    check_grads,
    make_learner_problem,
    separation,
)
from echo_rnn.mistakes import CATALOGUE, CONSTANTS, VARIATIONS, named_factors
from helpers import run_main


def learner_bptt(mistake=None, error_factor=1.0, inner_scalar=False):
    """A learner's BPTT, column vectors, for one sequence or a batch, with ``mistake``
    planted (a catalogue code, or "code/variant") and the error dJ/dyhat_t multiplied by
    ``error_factor`` (-1: the sign mistake; T: a sum where J takes the mean)."""

    def bptt(U, V, w, x, y, b=None, h0=None):
        single = x.ndim == 1
        X = x.reshape(1, -1, 1) if single else x  # (B, T, I)
        Y = y.reshape(1, -1) if single else y
        B, T, _ = X.shape
        H = len(w)
        hs = np.zeros((B, T + 1, H))  # hs[:, 0] is h_0, hs[:, t] is h_t
        if h0 is not None:
            hs[:, 0] = h0.reshape(B, H)
        for t in range(1, T + 1):
            z = hs[:, t - 1] @ U.T + X[:, t - 1] @ V.T + (b if b is not None else 0)
            hs[:, t] = np.tanh(z)
        yhat = hs[:, 1:] @ w  # (B, T)

        dU, dV, dw, db = np.zeros_like(U), np.zeros_like(V), np.zeros_like(w), np.zeros(H)
        dh_all = np.zeros((B, T, H))
        dh_next = np.zeros((B, H))
        carried_to = {}  # step -> what was carried to it (carry-off-by-one)
        errs = (yhat - Y) / (B * T) * error_factor  # (B, T)
        if mistake == "last-step-only":
            errs[:, :-1] = 0
        for t in range(T, 0, -1):
            err = errs[:, t - 1]  # (B,)
            h_w = hs[:, t]
            if mistake == "off-by-one/w":
                h_w = hs[:, t - 1]
            dw += h_w.T @ err
            up = errs[:, t - 2] if mistake == "upstream-off-by-one" else err  # -1 wraps to T
            carried = dh_next
            if mistake == "carry-off-by-one":  # dh_next kept one index too far back
                carried = carried_to.pop(t, np.zeros((B, H)))
            own = up[:, None] * w[None, :]
            dh = own + carried
            if mistake == "last-step-twice" and t == T:
                dh = dh + err[:, None] * w[None, :]
            dh_all[:, t - 1] = dh
            s = (t - 1 if t > 1 else T) if mistake == "cache-off-by-one" else t  # caches[t-2]
            if mistake in ("no-tanh-derivative", "no-tanh-derivative+carry-transposed"):
                dz = dh
            elif mistake == "tanh-derivative-wrong-step/previous":
                dz = dh * (1 - hs[:, t - 1] ** 2)
            elif mistake == "tanh-derivative-wrong-step/wrapped":  # a list of h_1..h_T only
                states = hs[:, 1:]
                dz = dh * (1 - states[:, t - 2] ** 2)  # index -1 at t = 1: h_T
            elif mistake == "tanh-derivative-wrong-step/next":
                dz = dh * (1 - (hs[:, t + 1] if t < T else 0) ** 2)
            elif mistake == "local-tanh-derivative-wrong-step":
                dz = own * (1 - hs[:, t - 1] ** 2) + carried * (1 - hs[:, t] ** 2)
            else:
                dz = dh * (1 - hs[:, s] ** 2)
            h_prev = hs[:, t] if mistake == "off-by-one/U" else hs[:, s - 1]
            if mistake == "inner-product":
                dU += np.sum(dz * h_prev)  # a scalar into every entry
            elif mistake == "transposed":
                dU += h_prev.T @ dz
            else:
                dU += dz.T @ h_prev
            x_t = X[:, t - 2] if mistake == "off-by-one/V" else X[:, s - 1]  # -1 wraps to x_T
            dV += dz.T @ x_t
            db += (dh if mistake == "bias-skips-tanh-derivative" else dz).sum(0)
            if mistake == "no-carry":
                dh_next = np.zeros((B, H))
            elif mistake in ("carry-transposed", "no-tanh-derivative+carry-transposed"):
                dh_next = dz @ U.T
            elif mistake == "carry-tanh-derivative-wrong-step":
                dh_next = (dh * (1 - hs[:, t - 1] ** 2)) @ U
            else:
                dh_next = dz @ U
            carried_to[t - 2] = dh_next
        out = {"U": dU, "V": dV, "w": dw, "dh": dh_all[0] if single else dh_all}
        if inner_scalar:
            out["U"] = float(dU[0, 0])
        if b is not None:
            out["b"] = db
        if h0 is not None:
            out["h0"] = dh_next[0] if single else dh_next  # what step 1 carried back
        return out

    return bptt


PLANTED = [
    "inner-product",
    "transposed",
    "carry-transposed",
    "no-carry",
    "no-tanh-derivative",
    "tanh-derivative-wrong-step/previous",
    "tanh-derivative-wrong-step/wrapped",
    "tanh-derivative-wrong-step/next",
    "off-by-one/w",
    "off-by-one/U",
    "off-by-one/V",
    "last-step-only",
    "last-step-twice",
    "bias-skips-tanh-derivative",
    "carry-tanh-derivative-wrong-step",
    "upstream-off-by-one",
    "cache-off-by-one",
    "local-tanh-derivative-wrong-step",
    "carry-off-by-one",
]
BIAS_ONLY = {"bias-skips-tanh-derivative"}  # planted with --bias: it changes db alone


def test_every_code_of_the_catalogue_is_planted_here():
    constants = {m.code for m in CONSTANTS}  # planted by error_factor (test_mistakes.py)
    assert {m.split("/")[0] for m in PLANTED} | constants == set(CATALOGUE)
    assert {v.code for v in VARIATIONS} == set(CATALOGUE) - constants


def _codes(report):
    return {r.name: report.diagnoses[r.name].codes for r in report.rows if not r.agrees}


@pytest.mark.parametrize("mistake", PLANTED)
def test_a_planted_mistake_alone_is_named(mistake):
    code = mistake.split("/")[0]
    report = check_grads(learner_bptt(mistake), bias=mistake in BIAS_ONLY)
    codes = _codes(report)
    assert codes, "the planted mistake changed no gradient"
    assert all(c == [code] for c in codes.values()), codes


@pytest.mark.parametrize("mistake", PLANTED)
def test_a_planted_mistake_is_named_in_b_and_h0_too(mistake):
    code = mistake.split("/")[0]
    report = check_grads(learner_bptt(mistake), bias=True, h0=True, batch_size=2)
    codes = _codes(report)
    assert all(c == [code] for c in codes.values()), codes
    if code in ("carry-transposed", "no-carry", "no-tanh-derivative", "last-step-only"):
        assert {"b", "h0"} <= set(codes)  # h0's gradient is zero under no-carry: named too


@pytest.mark.parametrize(
    "factor,name",
    [
        (-1.0, None),
        (50.0, "T"),
        (-50.0, "T"),
        (2.0, "2"),
        (-0.5, "1/2"),
        (-100.0, "2T"),
        (1 / 50, "1/T"),
    ],
)
@pytest.mark.parametrize("mistake", PLANTED)
def test_a_planted_mistake_with_sign_and_scale_is_named(mistake, factor, name):
    code = mistake.split("/")[0]
    report = check_grads(learner_bptt(mistake, error_factor=factor), bias=mistake in BIAS_ONLY)
    expected = [code] + (["sign"] if factor < 0 else []) + (["scale"] if name else [])
    rows = {r.name: r for r in report.rows}
    for row_name, codes in _codes(report).items():
        d = report.diagnoses[row_name]
        # a gradient the mistake does not touch is off by the sign and the scale alone
        assert codes in (expected, expected[1:]), (row_name, codes)
        if name:
            assert d.factor_name == name and d.factor == pytest.approx(abs(factor), rel=1e-9)
    assert any(c == expected for c in _codes(report).values())
    assert not any(r.agrees for r in rows.values())


def test_the_notebooks_three_mistakes_are_named():
    """The notebook's backward: the error y - yhat for U and V, a scalar np.dot for dU, h_{t-1}
    in dw, each step's gradient summed over t without the 1/T (written here as a learner
    would, not copied)."""

    def notebook_style(U, V, w, x, y):
        T = len(x)
        good = learner_bptt(error_factor=-T)(U, V, w, x, y)
        bad_w = learner_bptt("off-by-one/w", error_factor=T)(U, V, w, x, y)
        inner = learner_bptt("inner-product", error_factor=-T)(U, V, w, x, y)
        return {"U": inner["U"][0, 0], "V": good["V"].ravel(), "w": bad_w["w"]}

    report = check_grads(notebook_style)
    codes = _codes(report)
    assert codes == {
        "U": ["inner-product", "sign", "scale"],
        "V": ["sign", "scale"],
        "w": ["off-by-one", "scale"],
    }
    assert all(report.diagnoses[n].factor_name == "T" for n in codes)
    assert any("differ only by dimensions of size 1" in n for n in report.notes)  # V (6,)


def test_a_correct_function_agrees_for_every_layout():
    for problem in (
        {},
        {"batch_size": 3, "input_size": 2, "bias": True, "h0": True},
        {"batch_size": 2},
        {"input_size": 3, "seq_len": 7},
    ):
        report = check_grads(learner_bptt(), **problem)
        assert report.agrees, (problem, report.format())
        assert {r.name for r in report.rows} >= {"U", "V", "w", "dh"}


@pytest.mark.slow  # every variation tried on random gradients
def test_random_numbers_get_no_diagnosis():
    rng = np.random.default_rng(1)

    def noise(U, V, w, x, y):
        return {
            "U": rng.normal(size=U.shape),
            "V": rng.normal(size=V.shape),
            "w": rng.normal(size=w.shape),
            "dh": rng.normal(size=(len(x), len(w))),
        }

    for _ in range(5):
        report = check_grads(noise)
        assert not report.agrees
        assert all(c == [] for c in _codes(report).values()), _codes(report)
        assert report.departure["step"] == 50  # counting back from T, it departs at once


def test_the_default_problem_keeps_the_mistakes_apart():
    worst, where = separation(make_learner_problem())
    assert worst >= DEFAULT_SEPARATION, where
    assert DEFAULT_SEPARATION > 1e4 * MATCH_REL


def test_named_factors():
    f = named_factors(B=4, T=50)
    assert f[50.0] == "T" and f[4.0] == "B" and f[2.0] == "2" and f[0.5] == "1/2"
    assert f[100.0] == "2T" and f[1 / 200] == "1/(BT)"
    assert "B" not in "".join(named_factors(B=1, T=50).values())  # B = 1 says nothing


def test_unexplained_row_with_dh_names_the_step_where_it_departs():
    """A mistake outside the catalogue (the carry doubled from step 30 back) is not named;
    the report names step 30 as the first, counting back from T, where dJ/dh_t departs."""

    def doubled_carry(U, V, w, x, y):
        right = learner_bptt()(U, V, w, x, y)
        T = len(x)
        hs = np.zeros((T + 1, len(w)))
        for t in range(1, T + 1):
            hs[t] = np.tanh(U @ hs[t - 1] + V[:, 0] * x[t - 1])
        dh = right["dh"].copy()
        dh[29] *= 2  # dJ/dh_30 wrong
        return {**right, "dh": dh, "U": right["U"] * (1 + np.eye(len(w)) * 1e-3)}

    report = check_grads(doubled_carry)
    assert set(report.unexplained) == {"U", "dh"}
    assert report.departure["step"] == 30
    p = make_learner_problem()
    right = autograd_hidden_grads(p.model, p.x, p.y)[0, 29]
    np.testing.assert_allclose(report.departure["autograd"], right.numpy(), rtol=1e-12)
    np.testing.assert_allclose(report.departure["yours"], 2 * right.numpy(), rtol=1e-9)
    text = report.format()
    assert "no mistake of the catalogue reproduces it" in text
    assert "first at t = 30, counting back from T = 50" in text


def test_dh_agreeing_points_past_dh():
    def bad_U_only(U, V, w, x, y):
        out = learner_bptt()(U, V, w, x, y)
        out["U"] = out["U"] + 1e-3 * np.arange(out["U"].size).reshape(out["U"].shape)
        return out

    report = check_grads(bad_U_only)
    assert report.unexplained == ["U"] and report.departure is None
    assert "agrees with autograd's at every step" in report.format()


def test_a_scalar_for_U_is_the_inner_product_whatever_its_value():
    report = check_grads(learner_bptt("inner-product", inner_scalar=True))
    assert report.diagnoses["U"].codes == ["inner-product"]

    def wrong_scalar(U, V, w, x, y):
        return {**learner_bptt()(U, V, w, x, y), "U": 0.123}

    def wrong_matrix(U, V, w, x, y):
        return {**learner_bptt()(U, V, w, x, y), "U": np.full((6, 6), 0.123)}

    for fn in (wrong_scalar, wrong_matrix):
        report = check_grads(fn)
        assert report.diagnoses["U"].codes == ["inner-product"]
        assert "look for a second mistake" in report.diagnoses["U"].says[0]


def test_arrays_torch_passes_float64_tensors():
    seen = {}

    def fn(U, V, w, x, y):
        seen.update({k: (type(v), v.dtype) for k, v in dict(U=U, V=V, w=w, x=x, y=y).items()})
        out = learner_bptt()(*(t.numpy() for t in (U, V, w, x, y)))
        return {k: torch.from_numpy(np.asarray(v)) for k, v in out.items()}

    assert check_grads(fn, arrays="torch").agrees
    assert all(t is torch.Tensor and d == torch.float64 for t, d in seen.values())
    check_grads(learner_bptt())
    with pytest.raises(ValueError, match="arrays"):
        check_grads(fn, arrays="jax")


def test_the_function_gets_the_documented_layout():
    seen = {}

    def fn(**kw):
        seen.update({k: v.shape for k, v in kw.items()})
        return learner_bptt()(**kw)

    check_grads(fn)
    assert seen == {"U": (6, 6), "V": (6, 1), "w": (6,), "x": (50,), "y": (50,)}
    check_grads(fn, batch_size=3, input_size=2, seq_len=9, bias=True, h0=True)
    assert seen == {
        "U": (6, 6),
        "V": (6, 2),
        "w": (6,),
        "x": (3, 9, 2),
        "y": (3, 9),
        "b": (6,),
        "h0": (3, 6),
    }


@pytest.mark.parametrize(
    "returned,needles",
    [
        (lambda g: [g["U"]], ["returned list, expected a dict"]),
        (lambda g: {"U": g["U"], "V": g["V"]}, ["key 'w' missing: expected dJ/dw of shape (6,)"]),
        (lambda g: {**g, "q": 1}, ["key 'q' is not expected"]),
        (lambda g: {**g, "b": g["w"]}, ["key 'b' is not expected (this problem has no b; --bias"]),
        (lambda g: {**g, "V": np.zeros(3)}, ["key 'V': expected shape (6, 1), got (3,)"]),
        (lambda g: {**g, "w": "abc"}, ["key 'w': expected an array of shape (6,), got str"]),
        (lambda g: {**g, "w": list(g["w"])}, ["got list (wrap it in np.array)"]),
        (
            lambda g: {**g, "dh": g["dh"].T},
            ["key 'dh': expected shape (50, 6), got (6, 50) (its transpose has the right shape)"],
        ),
        (lambda g: {**g, "w": g["w"].astype(complex)}, ["an array of complex128"]),
        (
            lambda g: {"V": np.zeros(2), "w": None},
            ["key 'U' missing", "key 'V': expected shape", "key 'w': expected an array"],
        ),
    ],
)
def test_a_bad_return_names_the_key_the_expected_shape_and_what_came_back(returned, needles):
    def fn(**kw):
        return returned(learner_bptt()(**kw))

    with pytest.raises(BadReturn) as info:
        check_grads(fn)
    for needle in needles:
        assert any(needle in line for line in info.value.problems), (needle, info.value.problems)


def test_singleton_dimensions_are_accepted_and_noted():
    def fn(**kw):
        g = learner_bptt()(**kw)
        return {**g, "V": g["V"][:, 0], "w": g["w"][:, None]}  # (6,) and (6, 1)

    report = check_grads(fn)
    assert report.agrees
    assert sorted(n.split()[0] for n in report.notes) == ["V", "w"]


def test_a_transposed_dV_with_one_input_is_named_not_accepted():
    """(1, H) where (H, 1) belongs has the right numbers but the wrong orientation: an
    update V -= lr * dV would broadcast to (H, H)."""

    def fn(**kw):
        g = learner_bptt()(**kw)
        return {**g, "V": g["V"].T}

    report = check_grads(fn)
    assert not report.agrees
    assert report.diagnoses["V"].codes == ["transposed"]
    assert "dV came back as (1, 6), the transpose of V's shape (6, 1)" in report.format()
    assert "np.outer(dz_t, x_t)" in report.format()


def test_an_exception_in_the_function_is_theirs():
    def fn(**kw):
        raise ZeroDivisionError("their bug")

    with pytest.raises(LearnerCodeError) as info:
        check_grads(fn)
    assert isinstance(info.value.error, ZeroDivisionError)


# --- the command line -------------------------------------------------------------------


EXAMPLE = "examples/my_bptt.py:bptt"
FIXED = "examples/my_bptt_fixed.py:bptt"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch):
    """The examples are named as the README names them, from the repository's root."""
    monkeypatch.chdir(ROOT)


def test_the_planted_example_names_both_mistakes_and_the_fix(capsys):
    code, out, _ = run_main("gradcheck", "--grads", EXAMPLE, capsys=capsys)
    assert code == 1
    assert "U, V and dh disagree: carry-transposed" in out
    assert "w disagrees: off-by-one" in out
    assert "fix: carry dJ/dh_{t-1} = U.T @ dz_t" in out
    assert "fix: dw += (yhat_t - y_t) / T * h_t" in out
    code, out, _ = run_main("gradcheck", "--grads", FIXED, capsys=capsys)
    assert code == 0 and out.strip().endswith("all gradients agree")


def test_json_carries_the_diagnosis_per_row(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))  # the function runs in a child
    f = tmp_path / "nb.py"
    f.write_text(
        "import numpy as np\n"
        "from test_learner import learner_bptt\n"
        "def grads(U, V, w, x, y):\n"
        "    return learner_bptt('no-carry', error_factor=-2.0)(U, V, w, x, y)\n"
    )
    code, out, _ = run_main("gradcheck", "--grads", f"{f}:grads", "--json", capsys=capsys)
    assert code == 1
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert rows["U"]["diagnosis"] == ["no-carry", "sign", "scale"]
    assert rows["U"]["factor"] == pytest.approx(2.0) and rows["U"]["factor_name"] == "2"
    assert rows["w"]["diagnosis"] == ["sign", "scale"]  # no-carry leaves dw alone
    code, out, _ = run_main("gradcheck", "--grads", f"{FIXED}", "--json", capsys=capsys)
    assert code == 0 and all(r["diagnosis"] == [] and r["agrees"] for r in json.loads(out)["rows"])


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("examples/my_bptt.py", "must be PATH.py:FUNCTION"),
        ("examples/nothere.py:bptt", "no such file: examples/nothere.py"),
        ("examples/my_bptt.py:nothere", "defines no function 'nothere' (it defines: bptt)"),
        ("examples/my_bptt.py:np", "'np' is not a function but module"),
        ("examples:bptt", "is a directory"),
    ],
)
def test_a_bad_spec_is_one_line_exit_2(spec, needle, capsys):
    code, out, err = run_main("gradcheck", "--grads", spec, capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith("echo-rnn gradcheck: error: argument --grads: ") and needle in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--truncation", "back"], "argument --truncation: only with --truncate k"),
        (["--dtype", "float32"], "argument --dtype: not with --grads"),
        (["--kernel", "fast"], "argument --kernel: not with --grads"),
    ],
)
def test_settings_grads_cannot_honour_are_refused(flags, needle, capsys):
    code, _, err = run_main("gradcheck", "--grads", FIXED, *flags, capsys=capsys)
    assert code == 2 and needle in err


def test_arrays_without_grads_is_refused(capsys):
    code, _, err = run_main("gradcheck", "--arrays", "torch", capsys=capsys)
    assert code == 2 and "argument --arrays: only with --grads" in err


def test_a_bad_return_on_the_command_line_exits_1(tmp_path, capsys):
    f = tmp_path / "g.py"
    f.write_text("def g(U, V, w, x, y):\n    return {'U': U, 'V': V}\n")
    code, out, err = run_main("gradcheck", "--grads", f"{f}:g", capsys=capsys)
    assert code == 1 and out == ""
    assert "what g.py:g returned cannot be checked" in err and "key 'w' missing" in err
    assert "Traceback" not in err
    code, out, _ = run_main("gradcheck", "--grads", f"{f}:g", "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 1 and report["agrees"] is False and report["rows"] == []
    assert report["return_problems"] == ["key 'w' missing: expected dJ/dw of shape (6,)"]


def test_their_exception_shows_their_traceback_exit_1(tmp_path, capsys):
    f = tmp_path / "g.py"
    f.write_text(
        "def helper(U):\n    return U[99]\n\ndef g(U, V, w, x, y):\n    return helper(U)\n"
    )
    code, out, err = run_main("gradcheck", "--grads", f"{f}:g", capsys=capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert 'g.py", line 5, in g' in err and 'g.py", line 2, in helper' in err
    assert "IndexError" in err and "echo_rnn" not in err
    assert err.strip().endswith("g.py:g raised IndexError (the traceback above is your code's)")
    code, out, _ = run_main("gradcheck", "--grads", f"{f}:g", "--json", capsys=capsys)
    assert code == 1 and json.loads(out)["raised"].startswith("IndexError")


def test_an_error_while_loading_their_file_is_theirs_too(tmp_path, capsys):
    f = tmp_path / "g.py"
    f.write_text("import numpy as np\nx = 1 / 0\n")
    code, _, err = run_main("gradcheck", "--grads", f"{f}:g", capsys=capsys)
    assert code == 1 and 'g.py", line 2, in <module>' in err and "ZeroDivisionError" in err
    f.write_text("def g(:\n")
    code, _, err = run_main("gradcheck", "--grads", f"{f}:g", capsys=capsys)
    assert code == 1 and "SyntaxError" in err and "importlib" not in err


def test_loading_their_file_leaves_the_import_state_as_it_was(tmp_path, capsys):
    f = tmp_path / "g.py"
    f.write_text(
        "import helper_next_to_it\n"
        "def g(U, V, w, x, y):\n    return helper_next_to_it.grads(U, V, w, x, y)\n"
    )
    (tmp_path / "helper_next_to_it.py").write_text(
        "from test_learner import learner_bptt\ngrads = learner_bptt()\n"
    )
    path, modules = list(sys.path), set(sys.modules)
    try:
        fn, where = learner.load_function(f"{f}:g")
        assert where == "g.py:g" and check_grads(fn).agrees  # its neighbour imported
        assert sys.path == path
        assert "helper_next_to_it" in set(sys.modules) - modules
        assert not [m for m in sys.modules if m.startswith("_echo_rnn_learner")]
    finally:
        sys.modules.pop("helper_next_to_it", None)


# --- what the README promises -------------------------------------------------------------


README = ROOT / "README.md"


def test_the_readme_table_is_the_catalogue():
    text = README.read_text()
    section = text[text.index("### Common BPTT mistakes") :]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    rows = rows[: len(CATALOGUE)]
    assert rows == [f"| `{m.code}` | {m.what} | {m.fix} |" for m in CATALOGUE.values()]


def test_the_readme_walkthrough_is_what_the_command_prints(capsys):
    text = README.read_text()
    opening = "What the command prints:\n\n```\n"
    start = text.index(opening) + len(opening)
    block = text[start : text.index("```", start)]
    _, out, _ = run_main("gradcheck", "--grads", EXAMPLE, capsys=capsys)
    assert out == block
    fixed = Path(FIXED.split(":")[0]).read_text()
    assert "dw += dyhat * h[t]" in fixed and "dh_next = U.T @ dz" in fixed
    assert check_grads(learner.load_function(FIXED)[0]).agrees


@pytest.mark.slow  # twenty problems searched
def test_the_default_seed_is_the_best_of_the_first_twenty():
    seps = [separation(make_learner_problem(seed=s))[0] for s in range(20)]
    assert max(range(20), key=seps.__getitem__) == learner.DEFAULT_SEED


def test_the_readme_bad_return_example(tmp_path, capsys):
    f = tmp_path / "g.py"
    f.write_text(
        "import numpy as np\ndef g(U, V, w, x, y):\n    return {'U': U, 'V': np.zeros(3)}\n"
    )
    code, _, err = run_main("gradcheck", "--grads", f"{f}:g", capsys=capsys)
    text = README.read_text()
    start = text.index("echo-rnn gradcheck: what g.py:g returned cannot be checked:")
    assert code == 1 and err == text[start : text.index("```", start)]


@pytest.mark.slow  # a child process that imports torch
def test_arrays_torch_on_the_command_line(tmp_path, capsys):
    f = tmp_path / "t.py"
    f.write_text(
        "import torch\n"
        "def g(U, V, w, x, y):\n"
        "    assert isinstance(x, torch.Tensor) and x.dtype == torch.float64\n"
        "    U, V, w = (t.clone().requires_grad_(True) for t in (U, V, w))\n"
        "    h, J = torch.zeros(len(w), dtype=torch.float64), 0\n"
        "    for t in range(len(x)):\n"
        "        h = torch.tanh(U @ h + V[:, 0] * x[t])\n"
        "        J = J + (w @ h - y[t]) ** 2 / (2 * len(x))\n"
        "    J.backward()\n"
        "    return {'U': U.grad, 'V': V.grad, 'w': w.grad}\n"
    )
    code, out, err = run_main("gradcheck", "--grads", f"{f}:g", "--arrays", "torch", capsys=capsys)
    assert code == 0 and out.strip().endswith("all gradients agree"), err
    code, _, err = run_main("gradcheck", "--grads", f"{f}:g", capsys=capsys)  # numpy arrays
    assert code == 1 and "AssertionError" in err


def test_zeros_are_said_to_be_zero():
    def zeros(U, V, w, x, y):
        return {"U": np.zeros_like(U), "V": np.zeros_like(V), "w": np.zeros_like(w)}

    report = check_grads(zeros)
    assert all(c == [] for c in _codes(report).values())
    assert "U, V and w disagree: no mistake" in report.format()
    assert "it is zero everywhere" in report.format()


@pytest.mark.parametrize(
    "factor,codes,name",
    [
        (-1.0, ["sign"], None),
        (50.0, ["scale"], "T"),
        (-2.0, ["sign", "scale"], "2"),
        (0.37, ["scale"], None),
    ],
)
def test_sign_and_scale_alone(factor, codes, name):
    report = check_grads(learner_bptt(error_factor=factor))
    assert _codes(report) == {n: codes for n in ("U", "V", "w", "dh")}
    d = report.diagnoses["U"]
    assert d.factor_name == name
    if "scale" in codes:
        assert d.factor == pytest.approx(abs(factor), rel=1e-9)
    if factor == 0.37:
        assert "0.37 times the right size" in report.format()


# --- precision and size: a correct learner is never accused ---------------------------------


def _fixed_bptt():
    return learner.load_function(FIXED)[0]


def states_in_float32(mistake=None):
    """A textbook's layer: parameters float64, the states kept in a float32 array, the
    gradients returned float64 (numpy upcasts the products)."""

    def bptt(U, V, w, x, y):
        T, H = len(x), len(w)
        h = np.zeros((T + 1, H), dtype=np.float32)
        for t in range(1, T + 1):
            h[t] = np.tanh(U @ h[t - 1] + V[:, 0] * x[t - 1])
        yhat = h[1:] @ w
        dU, dV, dw = np.zeros_like(U), np.zeros_like(V), np.zeros_like(w)
        dh_all, dh_next = np.zeros((T, H)), np.zeros(H)
        for t in range(T, 0, -1):
            dyhat = (yhat[t - 1] - y[t - 1]) / T
            dw += dyhat * h[t]
            dh_all[t - 1] = dyhat * w + dh_next
            dz = dh_all[t - 1] * (1 - h[t] ** 2)
            dU += np.outer(dz, h[t - 1])
            dV[:, 0] += dz * x[t - 1]
            dh_next = U @ dz if mistake == "carry-transposed" else U.T @ dz
        return {"U": dU, "V": dV, "w": dw, "dh": dh_all}

    return bptt


def in_float32(mistake=None):
    """learner_bptt computing wholly in float32 and returning float32 arrays."""

    def bptt(U, V, w, x, y):
        g = learner_bptt(mistake)(*(a.astype(np.float32) for a in (U, V, w, x, y)))
        return {k: v.astype(np.float32) for k, v in g.items()}

    return bptt


@pytest.mark.parametrize(
    "fn,returned", [(in_float32(), "float32"), (states_in_float32(), "float64")]
)
def test_correct_float32_code_agrees_to_float32_precision(fn, returned):
    report = check_grads(fn)
    assert report.agrees and report.precision == "float32", report.format()
    assert set(report.agrees_to.values()) == {"float32"}
    text = report.format()
    assert text.endswith("all gradients agree to float32 precision")
    assert " NO" not in text and "disagree" not in text
    assert f"computes in float32 (it returned {returned}" in text or (
        returned == "float64" and "its arrays are float64 but differ" in text
    )
    d = report.to_dict()
    assert d["precision"] == "float32"
    assert d["verdict"] == "all gradients agree to float32 precision"
    # a float64 learner is still held to float64: the same numbers would not pass as float64
    assert all(r.max_rel_diff > report.tolerances[r.name] / 1e4 for r in report.rows)


@pytest.mark.parametrize(
    "fn", [in_float32("carry-transposed"), states_in_float32("carry-transposed")]
)
def test_a_float32_mistake_is_named_beyond_float32_precision(fn):
    report = check_grads(fn)
    assert not report.agrees
    assert _codes(report) == {
        "U": ["carry-transposed"],
        "V": ["carry-transposed"],
        "dh": ["carry-transposed"],
    }, report.format()
    assert report.format().endswith("GRADIENTS DISAGREE")


def test_no_report_contradicts_itself_on_dh():
    """dh's row and the per-step line say the same: a float32 dh that agrees to float32
    precision is not a departure, and the line that says "agrees at every step" only comes
    with a dh row that agrees."""

    def bad_U_in_float32(U, V, w, x, y):
        out = in_float32()(U, V, w, x, y)
        out["U"] = out["U"] + np.float32(1e-3) * np.arange(36, dtype=np.float32).reshape(6, 6)
        return out

    report = check_grads(bad_U_in_float32)
    rows = {r.name: r for r in report.rows}
    assert report.unexplained == ["U"] and rows["dh"].agrees and report.departure is None
    assert "agrees with autograd's at every step" in report.format()

    def bad_dh_in_float32(U, V, w, x, y):
        out = bad_U_in_float32(U, V, w, x, y)
        out["dh"][20] *= 1.01
        return out

    report = check_grads(bad_dh_in_float32)
    rows = {r.name: r for r in report.rows}
    assert not rows["dh"].agrees and report.departure["step"] == 21
    assert "agrees with autograd's at every step" not in report.format()


SIZES = [(300, 100), (250, 200), (300, 300)]  # where a fixed tolerance accused correct code


@pytest.mark.slow
@pytest.mark.parametrize("H,T", SIZES)
def test_a_correct_learner_is_never_accused_at_any_size(H, T, capsys):
    """The README's corrected example at the sizes of issue 16, on the command line (exit 0),
    and, at the largest (where the tolerance is widest), a planted mistake still named."""
    code, out, err = run_main(
        "gradcheck", "--grads", FIXED, "--hidden-size", H, "--seq-len", T, capsys=capsys
    )
    assert code == 0 and out.strip().endswith("all gradients agree"), out + err
    if (H, T) != max(SIZES, key=lambda s: s[0] * s[1]):
        return
    report = check_grads(learner_bptt("no-tanh-derivative"), hidden_size=H, seq_len=T)
    assert not report.agrees
    assert {r.name for r in report.rows if not r.agrees} >= {"U", "V", "dh"}


def test_the_tolerance_grows_with_the_problem_and_stays_sharp_where_it_can():
    """Small problems keep float64's sharpness (1e-13 of the scale); a chaotic one (H = 300,
    T = 100: std 0.1 gives U a spectral radius near 1.7) widens it to what rounding costs
    there, and says so."""
    small = check_grads(learner_bptt())
    assert small.agrees and max(small.tolerances.values()) < 1e-12
    p = make_learner_problem(hidden_size=120, seq_len=60)
    right = learner._autograd(p)
    tol = learner.Tolerances(p, right)
    assert tol("U", "float64") > small.tolerances["U"]
    assert tol("U", "float32") > 1e4 * tol("U", "float64")


def test_two_mistakes_in_one_gradient_are_named_together():
    report = check_grads(learner_bptt("no-tanh-derivative+carry-transposed"))
    codes = _codes(report)
    assert sorted(codes["U"]) == ["carry-transposed", "no-tanh-derivative"], codes
    assert "U, V and dh disagree: carry-transposed, no-tanh-derivative" in report.format()


def test_the_last_step_counted_twice_is_said():
    report = check_grads(learner_bptt("last-step-twice"))
    assert _codes(report)["U"] == ["last-step-twice"]
    assert "counted twice" in report.format()

    def twice_and_noise(U, V, w, x, y):  # outside the catalogue: the departure says it
        out = learner_bptt("last-step-twice")(U, V, w, x, y)
        out["U"] = out["U"] + 1e-3
        return out

    report = check_grads(twice_and_noise)
    assert report.departure["step"] == 50 and report.departure["factor"] == pytest.approx(2)
    assert (
        "yours is 2 times autograd's there at t = T: the last step's loss gradient is counted twice"
    ) in report.format()
