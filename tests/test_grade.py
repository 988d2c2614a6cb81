"""``echo-rnn grade`` (echo_rnn/grade/): a class made from the catalogue graded and every
planted mistake named, in every layout of examples/layouts/ and in every placement; hostile
submissions; the CSV, JSON and Gradescope files against their formats; bad input; the HTML
report in a real browser.

The classes are written by echo_rnn/grade/planted.py: one backward loop, as a learner
writes it, with the mistakes as lines of code, inside each example layout's own function."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from echo_rnn.grade.planted import (
    BATCHED,
    BIAS_ONLY,
    LAYOUTS,
    PLACEMENTS,
    UNDESCRIBED,
    layout_toml,
    pairs,
    source,
    student_name,
    write_class,
)
from echo_rnn.grade.rubric import DEFAULT, DEFAULT_RUBRIC
from echo_rnn.grade.submissions import notebook_source
from echo_rnn.layouts import adapter
from echo_rnn.learner import check_return, compare_returned
from echo_rnn.learner.diagnosis import hidden_behind
from echo_rnn.problem import Problem
from helpers import run_main

ROOT = Path(__file__).resolve().parents[1]
UNDESCRIBED_SAID = "wrong in a way the catalogue does not describe"
SINGLES = [m for m in PLACEMENTS if m not in BIAS_ONLY]


def grade_json(folder, function, *flags, capsys):
    code, out, err = run_main(
        "grade", folder, "--function", function, "--json", *flags, capsys=capsys
    )
    assert code == 0, err
    assert err == "", "--json shows no progress"
    return json.loads(out)


def by_student(result):
    return {s["student"]: s for s in result["submissions"]}


def named(sub):
    return {m["code"] for m in sub["mistakes"]}


def check_named(sub, planted):
    """Every planted mistake the catalogue describes is named (or said to be possibly
    hidden behind one that is, where no gradient tells them apart); one it does not
    describe makes the verdict say so."""
    described = {m.split("/")[0] for m in planted if m not in UNDESCRIBED}
    said = named(sub) | {h["code"] for h in sub.get("hidden", [])}
    assert described <= said, (planted, sub["status"], named(sub), sub["reason"])
    if any(m in UNDESCRIBED for m in planted):
        assert sub["status"] == "unexplained", (planted, sub)
        assert UNDESCRIBED_SAID in sub["reason"]
    elif planted:
        assert sub["status"] == "mistake", (planted, sub["status"], sub["reason"])
    else:
        assert sub["status"] == "agrees" and sub["score"] == sub["max_score"]


def grade_class(tmp_path, layout, classes, capsys, problem=None, workers=2):
    function, toml = write_class(tmp_path / layout, layout, classes, problem)
    result = grade_json(
        tmp_path / layout, function, "--layout", toml, "--workers", workers, capsys=capsys
    )
    return by_student(result)


# --- the catalogue, planted ------------------------------------------------------------


# The quick class: a placement of each kind (a constant, the tanh' mistakes on the whole
# dJ/dh_t, the carried term, the own term; the index one off in the upstream gradient, the
# cache, the carry), one pair, a mistake outside the catalogue, and a correct file.
QUICK = [
    [],
    ["sign"],
    ["tanh-derivative-wrong-step/previous"],
    ["carry-tanh-derivative-wrong-step"],
    ["local-tanh-derivative-wrong-step"],
    ["upstream-off-by-one"],
    ["cache-off-by-one"],
    ["carry-off-by-one"],
    ["transposed", "no-carry"],
    ["off-by-one/V", "cache-off-by-one"],
    [*UNDESCRIBED],
]


def test_a_small_class_names_each_placement(tmp_path, capsys):
    subs = grade_class(tmp_path, "rows", QUICK, capsys)
    assert len(subs) == len(QUICK)
    for planted in QUICK:
        check_named(subs[student_name(planted)], planted)
    # the three placements of tanh' at the wrong step, and of an index one off, are told apart
    for planted in QUICK[2:8]:
        assert named(subs[student_name(planted)]) == {planted[0].split("/")[0]}
    # x_{t-1} beside a cache read one step off changes nothing: the verdict says so
    hiding = subs[student_name(["off-by-one/V", "cache-off-by-one"])]
    assert named(hiding) == {"cache-off-by-one"}
    assert {"code": "off-by-one", "behind": "cache-off-by-one"} in hiding["hidden"]
    assert hiding["reason"].startswith("cache-off-by-one may hide ")
    assert "off-by-one" in hiding["reason"].split(":")[0].split("may hide ")[1].split(", ")
    outside = subs[student_name(UNDESCRIBED)]
    assert outside["status"] == "unexplained" and outside["departs_at"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_placement_is_named_in_every_layout(layout, tmp_path, capsys):
    classes = [[]] + [[m] for m in SINGLES]
    subs = grade_class(tmp_path, layout, classes, capsys)
    for planted in classes:
        check_named(subs[student_name(planted)], planted)


@pytest.mark.parametrize("layout", BATCHED)
def test_the_bias_mistake_is_named_where_a_layout_has_a_bias(layout, tmp_path, capsys):
    classes = [[], list(BIAS_ONLY), [*BIAS_ONLY, "sign"]]
    subs = grade_class(
        tmp_path, layout, classes, capsys, problem={"bias": True, "batch_size": 3, "input_size": 2}
    )
    for planted in classes:
        check_named(subs[student_name(planted)], planted)


def _gradients(layout, planted, problem):
    ns = {}
    exec(compile(source(layout, planted), "planted", "exec"), ns)
    return adapter(ns[LAYOUTS[layout][0]], LAYOUTS[layout][2])(**problem.kwargs())


def _same(a, b):
    """Every gradient of ``a`` is ``b``'s times one constant, to rounding."""
    for k in a:
        x, y = np.asarray(a[k], float), np.asarray(b[k], float)
        c = (x * y).sum() / max((y * y).sum(), 1e-300)
        if np.abs(x - c * y).max() > 1e-9 * max(np.abs(x).max(), 1e-300):
            return False
    return True


def _report(layout, planted, problem):
    """What the grader reports on ``planted`` in ``layout``, made in this process: the
    function in its layout's adapter, judged and diagnosed as a child's return is."""
    ns = {}
    exec(compile(source(layout, planted), "planted", "exec"), ns)
    fn = adapter(ns[LAYOUTS[layout][0]], LAYOUTS[layout][2])
    returned = check_return(fn(**problem.kwargs()), problem, layout=fn.echo_rnn_layout)
    report = compare_returned(returned, problem, layout)
    codes = {c for r in report.rows if not r.agrees for c in report.diagnoses[r.name].codes}
    return report, codes, returned.grads


def _hidden(report, got):
    """What the grader says a named mistake may hide (Verdict.hidden), on ``got`` (the
    returned gradients in the contract's layout)."""
    named = [c for r in report.rows if not r.agrees for c in report.diagnoses[r.name].codes]
    return hidden_behind(named, got, report.problem)


def name_every_pair(layout):
    """Every pair of placements in ``layout``: both named, or, only where the pair's
    gradients are one placement's alone (``_same``), that one named and the other said to
    be possibly hidden behind it. Returns the counts, what broke the rule and the pairs
    where one hides the other."""
    problem = Problem().on("float64", "cpu")
    singles = {m: _report(layout, [m], problem)[2] for m in SINGLES}
    counts, wrong, hiding = {"named both": 0, "one hides the other": 0}, [], set()
    for pair in pairs(tuple(SINGLES)):
        report, codes, got = _report(layout, list(pair), problem)
        both = {m.split("/")[0] for m in pair}
        if both <= codes and not report.unexplained:
            counts["named both"] += 1
            if codes - both and (pair not in EITHER or codes - both != EITHER[pair]):
                wrong.append((pair, "names more", sorted(codes - both)))
            continue
        hidden = _hidden(report, got)
        shown = [m for m in pair if m.split("/")[0] in codes]
        if (
            len(shown) == 1
            and _same(got, singles[shown[0]])
            and hidden.get(next(m for m in pair if m not in shown).split("/")[0])
            == shown[0].split("/")[0]
        ):
            counts["one hides the other"] += 1
            hiding.add(pair)
            continue
        wrong.append((pair, sorted(codes), report.unexplained, hidden))
    return counts, wrong, hiding


# The pairs where one mistake hides the other: the pair's gradients are the first's alone,
# on the default problem (its loss starts at step k + 1 and it has no h_0: tanh' of the
# first step's own term, and the carry out of step 1, reach no gradient returned).
HIDING = {
    ("tanh-derivative-wrong-step/previous", "carry-tanh-derivative-wrong-step"),
    ("tanh-derivative-wrong-step/wrapped", "carry-tanh-derivative-wrong-step"),
    ("tanh-derivative-wrong-step/wrapped", "cache-off-by-one"),
    ("local-tanh-derivative-wrong-step", "cache-off-by-one"),
    ("carry-tanh-derivative-wrong-step", "cache-off-by-one"),
    ("off-by-one/V", "cache-off-by-one"),
}


# The pairs named with a third mistake: with no carry, dJ/dh_t is the step's own term, so
# tanh' at the previous step on the whole of it and on the own term only are one mistake,
# and both are named.
_OWN = "local-tanh-derivative-wrong-step"
EITHER = {
    ("no-carry", "tanh-derivative-wrong-step/previous"): {_OWN},
    ("no-carry", "tanh-derivative-wrong-step/wrapped"): {_OWN},
    ("no-carry", _OWN): {"tanh-derivative-wrong-step"},
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_pair_is_named_in_every_layout(layout):
    counts, wrong, hiding = name_every_pair(layout)
    assert not wrong, f"pairs not named: {wrong}"
    print(f"{layout}: {counts}")  # the counts, for the report
    assert hiding == HIDING


@pytest.mark.slow
def test_a_class_of_every_pair_is_graded_and_named(tmp_path, capsys):
    """The whole ``echo-rnn grade`` path, for one layout: every pair named, or the named
    one said in the verdict to hide the other."""
    every = pairs(tuple(SINGLES))
    subs = grade_class(tmp_path, "rows", [list(p) for p in every], capsys)
    for pair in every:
        sub = subs[student_name(pair)]
        assert sub["status"] == "mistake", (pair, sub["status"], sub["reason"])
        said = named(sub) | {h["code"] for h in sub["hidden"]}
        assert {m.split("/")[0] for m in pair} <= said, (pair, sorted(named(sub)), sub["hidden"])
        if tuple(pair) in HIDING:
            shown, hidden = sorted((m.split("/")[0] for m in pair), key=named(sub).__contains__)[
                ::-1
            ]
            assert {"code": hidden, "behind": shown} in sub["hidden"], (pair, sub["hidden"])
            assert hidden in sub["reason"].split(f"{shown} may hide ")[1].split(":")[0].split(", ")


# --- submissions as handed in ---------------------------------------------------------


def _notebook(cells):
    return json.dumps(
        {
            "cells": [
                {"cell_type": t, "source": s, "metadata": {}, "outputs": []} for t, s in cells
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def test_a_notebook_is_its_code_cells_without_magics_or_shell_lines(tmp_path):
    nb = tmp_path / "alice.ipynb"
    nb.write_text(
        _notebook(
            [
                ("markdown", ["# my BPTT\n", "x = 1/0\n"]),
                ("code", ["%matplotlib inline\n", "!pip install numpy\n", "a = 1\n"]),
                ("code", "%%bash\necho hi\n"),
                ("code", ["np.zeros?\n", "b = a + 1\n"]),
            ]
        )
    )
    code = notebook_source(nb)
    compiled = {}
    exec(code, compiled)  # plain Python now
    assert compiled["b"] == 2
    for gone in ("%matplotlib", "!pip", "echo hi", "1/0", "np.zeros?"):
        assert gone not in code


def test_files_notebooks_and_folders_are_each_a_student(tmp_path, capsys):
    cls = tmp_path / "class"
    cls.mkdir()
    (cls / "alice.py").write_text(source("rows", ["no-carry"]))
    (cls / "bob.ipynb").write_text(
        _notebook(
            [
                ("code", ["%load_ext autoreload\n"]),
                ("code", source("rows", ["sign"]).splitlines(keepends=True)),
            ]
        )
    )
    (cls / "carol").mkdir()
    (cls / "carol" / "helpers.py").write_text("X = 1\n")
    (cls / "carol" / "rnn.py").write_text("from helpers import X\n" + source("rows", []))
    (cls / "dave").mkdir()  # handed in nothing
    (cls / "notes.txt").write_text("not a submission")
    layout = tmp_path / "layout.toml"
    layout.write_text(layout_toml("rows"))
    subs = by_student(grade_json(cls, "rnn_bptt", "--layout", layout, capsys=capsys))
    assert set(subs) == {"alice", "bob", "carol", "dave"}
    assert named(subs["alice"]) == {"no-carry"}
    assert named(subs["bob"]) == {"sign"} and subs["bob"]["file"] == "bob.ipynb"
    assert subs["carol"]["status"] == "agrees" and subs["carol"]["file"] == "carol/rnn.py"
    assert subs["dave"]["status"] == "failed" and "holds no .py file" in subs["dave"]["reason"]


# --- hostile submissions ----------------------------------------------------------------


HOSTILE = {
    "syntax": ("def rnn_bptt(:\n", "SyntaxError"),
    "raises": ("def rnn_bptt(**kw):\n    raise ValueError('my shapes')\n", "my shapes"),
    "exits": ("import sys\nsys.exit(3)\n", "sys.exit(3)"),
    "os_exit": ("import os\ndef rnn_bptt(**kw):\n    os._exit(0)\n", "exit status 0"),
    "crashes": (
        "import os, signal\ndef rnn_bptt(**kw):\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
        "SIGSEGV",
    ),
    "hangs": ("import time\ndef rnn_bptt(**kw):\n    time.sleep(600)\n", "did not return"),
    "nofunction": ("def bptt(**kw):\n    return {}\n", "defines no function 'rnn_bptt'"),
    "not_a_dict": ("def rnn_bptt(**kw):\n    return [1, 2]\n", "returned list"),
    "notebook": ("{this is not json", "cannot be read as a notebook"),
}


def test_hostile_submissions_are_verdicts_and_change_no_one_elses(tmp_path, capsys):
    cls = tmp_path / "class"
    cls.mkdir()
    for name, (text, _) in HOSTILE.items():
        (cls / f"{name}.{'ipynb' if name == 'notebook' else 'py'}").write_text(text)
    # one that prints a fake verdict and a fake JSON, and tries to overwrite a classmate
    (cls / "liar.py").write_text(
        "import pathlib, sys\n"
        f"pathlib.Path({str(cls / 'zed.py')!r}).write_text('def rnn_bptt(): pass')\n"
        'print(\'{"submissions": [], "score": 100}\')\n'
        "print('all gradients agree', file=sys.stderr)\n" + source("rows", ["no-carry"])
    )
    (cls / "zed.py").write_text(source("rows", []))
    layout = tmp_path / "layout.toml"
    layout.write_text(layout_toml("rows"))
    code, out, err = run_main(
        "grade",
        cls,
        "--function",
        "rnn_bptt",
        "--layout",
        layout,
        "--timeout",
        "3",
        "--workers",
        "2",
        "--json",
        capsys=capsys,
    )
    assert code == 0
    assert err == ""  # nothing they printed reaches the command's own streams
    subs = by_student(json.loads(out))  # what they printed is not in the JSON's stream
    for name, (_, needle) in HOSTILE.items():
        status = "bad-return" if name == "not_a_dict" else "failed"
        assert subs[name]["status"] == status, (name, subs[name])
        assert needle in subs[name]["reason"], (name, subs[name]["reason"])
        assert subs[name]["score"] == 0
    assert named(subs["liar"]) == {"no-carry"}
    assert subs["zed"]["status"] == "agrees"  # graded from the copy taken before any ran
    assert "all gradients agree" in subs["liar"]["printed"]
    assert subs["raises"]["traceback"].rstrip().endswith("ValueError: my shapes")


# --- the outputs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A small class graded once, with every output written: (folder, files)."""
    tmp = tmp_path_factory.mktemp("graded")
    cls = tmp / "class"
    classes = [
        [],
        ["no-carry"],
        ["sign", "off-by-one/w"],
        ["carry-off-by-one"],
        ["off-by-one/V", "cache-off-by-one"],
        [*UNDESCRIBED],
    ]
    function, layout = write_class(cls, "rows", classes)
    (cls / "=cmd.py").write_text("def rnn_bptt(:\n")  # a formula, were it not escaped
    (cls / "<img src=x onerror=window.__pwned=1>.py").write_text(source("rows", ["sign"]))
    from echo_rnn.cli import main

    out = tmp / "out"
    out.mkdir()
    code = main(
        [
            "grade",
            str(cls),
            "--function",
            function,
            "--layout",
            str(layout),
            "--csv",
            str(out / "grades.csv"),
            "--html",
            str(out / "report.html"),
            "--gradescope",
            str(out / "gs"),
            "--workers",
            "2",
        ]
    )
    assert code == 0
    return cls, out


def test_csv_has_a_row_per_student_and_no_formula(graded):
    cls, out = graded
    rows = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    assert list(rows[0]) == [
        "student",
        "file",
        "status",
        "score",
        "max_score",
        "mistakes",
        "gradients",
        "fix",
        "reason",
    ]
    assert len(rows) == len(list(cls.glob("*.py")))
    by = {r["student"]: r for r in rows}
    assert by["'=cmd"]["status"] == "failed"  # shown as text, not computed
    assert by["sign+off-by-one_w"]["mistakes"] == "sign off-by-one"
    assert float(by["correct"]["score"]) == float(by["correct"]["max_score"]) == 8


def test_gradescope_results_follow_their_format(graded):
    cls, out = graded
    files = sorted((out / "gs").glob("*/results.json"))
    assert len(files) == len(list(cls.glob("*.py")))
    for f in files:
        r = json.loads(f.read_text())
        assert isinstance(r["score"], (int, float)) and isinstance(r["output"], str)
        assert r["tests"], f
        for t in r["tests"]:
            assert {"name", "score", "max_score", "output"} <= set(t)
            assert 0 <= t["score"] <= t["max_score"]
        assert r["score"] == pytest.approx(sum(t["score"] for t in r["tests"]))
    nocarry = json.loads((out / "gs" / "no-carry" / "results.json").read_text())
    assert "no-carry" in nocarry["output"] and "fix:" in nocarry["output"]
    assert [t["name"] for t in nocarry["tests"]] == ["dJ/dWh", "dJ/dWx", "dJ/dWy"]
    hiding = json.loads((out / "gs" / "off-by-one_V+cache-off-by-one" / "results.json").read_text())
    assert "cache-off-by-one may hide " in hiding["output"]  # said, though not named


def test_one_submission_writes_gradescopes_own_path(tmp_path, capsys):
    f = tmp_path / "submission.py"
    f.write_text(source("columns", ["sign"]))
    layout = tmp_path / "layout.toml"
    layout.write_text(layout_toml("columns"))
    code, _, _ = run_main(
        "grade",
        f,
        "--function",
        "bptt",
        "--layout",
        layout,
        "--gradescope",
        tmp_path / "results",
        capsys=capsys,
    )
    assert code == 0
    r = json.loads((tmp_path / "results" / "results.json").read_text())
    assert r["score"] == 4.0  # half of 8, the default rubric's share for the sign


def test_json_says_what_the_rubric_gave(tmp_path, capsys):
    function, layout = write_class(tmp_path / "c", "rows", [["sign"], ["scale"]])
    rubric = tmp_path / "rubric.toml"
    rubric.write_text("[partial]\nsign = 1.0\n[points]\nU = 10\n")
    result = grade_json(
        tmp_path / "c", function, "--layout", layout, "--rubric", rubric, capsys=capsys
    )
    subs = by_student(result)
    assert result["max_score"] == 14  # U 10, V 2, w 2
    assert subs["sign"]["score"] == 14  # full credit for the sign, as this rubric says
    assert subs["scale"]["score"] == pytest.approx(14 * 0.75)  # the default's share


def test_the_default_rubric_is_the_documented_one():
    import tomllib

    data = tomllib.loads(DEFAULT_RUBRIC)
    assert DEFAULT.points == {k: float(v) for k, v in data["points"].items()}
    import textwrap

    readme = (ROOT / "README.md").read_text().split("## For teachers", 1)[1]
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = tomllib.loads(textwrap.dedent(block))
    assert shown == {t: {k: v for k, v in data[t].items()} for t in data}


def test_progress_is_a_line_per_submission_off_a_terminal(tmp_path, capsys):
    function, layout = write_class(tmp_path / "c", "rows", [[], ["sign"]])
    code, out, err = run_main(
        "grade", tmp_path / "c", "--function", function, "--layout", layout, capsys=capsys
    )
    assert code == 0
    lines = err.splitlines()  # in the order they finished
    assert [line.split(" ")[2] for line in lines] == ["1/2", "2/2"]
    assert sorted(line.split(" ", 3)[3] for line in lines) == ["correct: agrees", "sign: mistake"]
    assert "correct" in out and "2 graded: 1 agrees, 1 mistake" in out


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["MISSING", "--function", "f"], "argument --submissions: no such file or folder"),
        (["CLASS", "--function", "not a name"], "argument --function: must be a Python name"),
        (["CLASS", "--function", "f", "--workers", "0"], "argument --workers"),
        (["CLASS", "--function", "f", "--layout", "BADLAYOUT"], "unknown layout option 'Wh'"),
        (
            ["CLASS", "--function", "f", "--rubric", "BADRUBRIC"],
            "[partial] sign must be a number from 0 to 1",
        ),
        (["CLASS", "--function", "f", "--csv", "NODIR/g.csv"], "argument --csv: no such directory"),
        (["CLASS", "--function", "f", "--html", "OUT.txt"], "argument --html: must end in .html"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(flags, needle, tmp_path, capsys):
    cls = tmp_path / "class"
    write_class(cls, "rows", [[]])
    (tmp_path / "bad-layout.toml").write_text("[layout]\nWh = 'U'\n")
    (tmp_path / "bad-rubric.toml").write_text("[partial]\nsign = 2\n")
    subst = {
        "CLASS": str(cls),
        "MISSING": str(tmp_path / "missing"),
        "BADLAYOUT": str(tmp_path / "bad-layout.toml"),
        "BADRUBRIC": str(tmp_path / "bad-rubric.toml"),
        "NODIR/g.csv": str(tmp_path / "nodir" / "g.csv"),
        "OUT.txt": str(tmp_path / "out.txt"),
    }
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = run_main("grade", *[subst.get(f, f) for f in flags], capsys=capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# --- the HTML report, in a real browser ---------------------------------------------------


def test_the_html_report_opens_without_a_server(graded, tmp_path):
    from browser import chromium_missing, chromium_page, screenshot, screenshot_dir

    why = chromium_missing()
    if why:
        pytest.skip(why)
    pytest.importorskip("playwright")
    cls, out = graded
    report = out / "report.html"
    text = report.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched
    with chromium_page(viewport=(1400, 1000)) as page:
        page.goto(report.as_uri())
        rows = page.locator("#students tbody tr")
        assert rows.count() == len(list(cls.glob("*.py")))
        statuses = rows.evaluate_all("rs => rs.map(r => r.dataset.status)")
        assert statuses.count("agrees") == 1 and "unexplained" in statuses
        # the chart and the flow plots are drawn images, not broken ones
        widths = page.locator("img").evaluate_all("is => is.map(i => i.naturalWidth)")
        assert len(widths) >= 3 and all(w > 100 for w in widths), widths
        assert page.locator("img.chart").count() == 1
        nocarry = page.locator("tr", has_text="no-carry").first
        assert "walk t from T down to 1" in nocarry.inner_text()  # the fix
        assert nocarry.locator("img.flow").count() == 1  # its dJ/dh_t departs
        # a student's file name is text, not markup
        assert page.evaluate("() => window.__pwned") is None
        assert page.locator("tr", has_text="<img src=x").count() == 1
        shot = screenshot(page, screenshot_dir(tmp_path) / "grade_report.png")
    docs = ROOT / "docs" / "grade_report.png"
    shutil.copyfile(shot, docs)


def test_a_stopped_run_leaves_no_child_behind(tmp_path):
    # Ctrl-C (here: the progress callback raising it after the first verdict) ends the
    # children still running at once, not when their time runs out
    from echo_rnn.grade.grader import grade
    from echo_rnn.grade.submissions import find_submissions

    cls = tmp_path / "class"
    cls.mkdir()
    (cls / "a_quick.py").write_text("def f(**kw):\n    return {}\n")
    pid_file = tmp_path / "pid"
    (cls / "b_hangs.py").write_text(
        "import os, time, pathlib\n"
        "def f(**kw):\n"
        f"    pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(600)\n"
    )

    def interrupt(verdict, done, total):
        while not pid_file.exists():  # the hanging one is running
            import time

            time.sleep(0.05)
        raise KeyboardInterrupt

    import os
    import signal
    import threading

    fired = []

    def watchdog():  # without the stop, grade would wait out the 600 s: end it, and say so
        fired.append(True)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    timer = threading.Timer(60, watchdog)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            grade(
                find_submissions(cls, "f"),
                "f",
                Problem().on(),
                DEFAULT,
                workers=2,
                timeout=600,
                progress=interrupt,
            )
    finally:
        timer.cancel()
        timer.join()
    assert not fired, "the hanging child outlived the stopped run"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # gone: killed, and reaped


def test_names_that_collide_or_hold_control_characters(tmp_path, capsys):
    cls = tmp_path / "class"
    cls.mkdir()
    for name in ("a b.py", "a_b.py", "\x1b[2Jclear.py"):
        (cls / name).write_text(source("columns", ["sign"]))
    layout = tmp_path / "layout.toml"
    layout.write_text(layout_toml("columns"))
    code, out, err = run_main(
        "grade",
        cls,
        "--function",
        "bptt",
        "--layout",
        layout,
        "--gradescope",
        tmp_path / "gs",
        capsys=capsys,
    )
    assert code == 0
    assert "\x1b" not in out and "\x1b" not in err  # shown, never obeyed by the terminal
    results = sorted((tmp_path / "gs").glob("*/results.json"))
    assert len(results) == 3  # one each: "a b" and "a_b" do not share a folder


def test_every_subpackage_is_packaged():
    # an explicit package list leaves a subpackage out of the wheel silently (echo_rnn/cli
    # was); echo_rnn/learner and echo_rnn/grade are subpackages now
    import tomllib
    from setuptools import find_packages

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # what the build packages: setuptools' discovery with pyproject's own settings
    listed = set(find_packages(ROOT, include=found["packages"]["find"]["include"]))
    present = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "echo_rnn").rglob("__init__.py")
    }
    assert present <= listed, f"not packaged: {sorted(present - listed)}"


def test_the_child_does_not_import_torch(tmp_path, capsys):
    # a class of a hundred pays for numpy in each child, not for torch (a second or two)
    f = tmp_path / "spy.py"
    f.write_text(
        "import sys\ndef rnn_step_backward(dnext_h, cache):\n    pass\n"
        "def rnn_bptt(**kw):\n"
        "    raise RuntimeError('torch loaded: %s' % ('torch' in sys.modules))\n"
    )
    layout = tmp_path / "layout.toml"
    layout.write_text(layout_toml("layered"))  # the adapter with the most machinery
    result = grade_json(f, "rnn_bptt", "--layout", layout, capsys=capsys)
    assert result["submissions"][0]["reason"].endswith("torch loaded: False")
