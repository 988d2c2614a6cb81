"""The catalogue of mistakes (echo_rnn/mistakes.py) as records: every place a mistake touches
(its record, its README row, its planted learner code, the default seed) is checked per code,
so that a mistake added without one of them fails here by name. The docstring of
echo_rnn/mistakes.py says how to add one; these tests hold it to that."""

from pathlib import Path

import pytest
import torch
from test_learner import PLANTED, learner_bptt

from echo_rnn.cli import build_parser
from echo_rnn.learner import DEFAULT_SEPARATION, check_grads, make_learner_problem
from echo_rnn.mistakes import CATALOGUE, Variation, variation_grads
from echo_rnn.problem import DEFAULT_SEED

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
CODES = list(CATALOGUE)


def _readme_rows() -> list[str]:
    section = README[README.index("### Common BPTT mistakes") :]
    return [line for line in section.splitlines() if line.startswith("| `")]


def _row(m) -> str:
    return f"| `{m.code}` | {m.what} | {m.fix} |"


@pytest.mark.parametrize("code", CODES)
def test_each_record_is_whole(code):
    m = CATALOGUE[code]
    assert m.what.strip() and m.fix.strip(), f"{code}: give it what it is and its fix"
    assert bool(m.variations) != (m.constant is not None), (
        f"{code}: made either by variations of the backward pass or by a constant, one of them"
    )
    assert all(v.code == code for v in m.variations)
    assert m.unfitted == "" or m.one_number is not None, f"{code}: unfitted needs one_number"


@pytest.mark.parametrize("code", CODES)
def test_each_record_has_its_readme_row(code):
    rows = _readme_rows()
    assert _row(CATALOGUE[code]) in rows, (
        f"README's 'Common BPTT mistakes' table lacks (or words differently) the row:\n"
        f"{_row(CATALOGUE[code])}"
    )
    assert rows.index(_row(CATALOGUE[code])) == CODES.index(code), (
        f"{code}: the README's rows go in the catalogue's order"
    )


def test_the_readme_table_has_no_row_the_catalogue_lacks():
    assert _readme_rows()[: len(CODES)] == [_row(m) for m in CATALOGUE.values()]


@pytest.mark.parametrize("code", CODES)
def test_each_record_is_planted_in_learner_code(code):
    m = CATALOGUE[code]
    if m.constant is None:
        assert code in {p.split("/")[0] for p in PLANTED}, (
            f"{code}: plant it in tests/test_learner.py (learner_bptt and PLANTED)"
        )
        return
    # a constant is planted by multiplying a correct learner's error by its example
    report = check_grads(learner_bptt(error_factor=m.constant.example))
    named = [report.diagnoses[r.name].codes for r in report.rows if not r.agrees]
    assert named and all(code in codes for codes in named), (code, named)


def _problem():
    return make_learner_problem(bias=True, h0=True, batch_size=2)  # every gradient there


@pytest.mark.parametrize("code", CODES)
def test_each_way_of_making_it_differs_from_the_right_gradient(code):
    m = CATALOGUE[code]
    if m.constant is not None:
        c = m.constant.example
        assert c != 1 and m.constant.factor([c], 1e-8) is not None, (
            f"{code}: its example constant must be one its own test recognises"
        )
        return
    p = _problem()
    params = p.params()
    right = variation_grads(
        Variation(""), p.x, p.y, params["U"], params["V"], params["w"], params.get("b"), p.h0_state
    )
    for v in m.variations:
        got = variation_grads(
            v, p.x, p.y, params["U"], params["V"], params["w"], params.get("b"), p.h0_state
        )
        differs = [n for n in right if not torch.allclose(got[n], right[n], rtol=1e-9, atol=0)]
        assert differs, f"{code}: a variation that changes no gradient ({v})"


def test_the_unchanged_variation_is_the_right_gradient():
    """What the test above compares with: a Variation that changes nothing is autograd's."""
    from echo_rnn.compare import autograd_grads

    p = _problem()
    params = p.params()
    none = variation_grads(
        Variation(""), p.x, p.y, params["U"], params["V"], params["w"], params.get("b"), p.h0_state
    )
    auto = autograd_grads(p.model, p.x, p.y, p.h0_state)
    for n, g in auto.items():
        torch.testing.assert_close(none[n], g, rtol=1e-12, atol=1e-15)


def test_the_default_seed_is_printed_where_it_is_told():
    """DEFAULT_SEED is written, not computed: the help and the README print it, and a change
    must reach all three (mistakes.py's docstring)."""
    assert f"seed={DEFAULT_SEED} init_std" in README  # the walkthrough's header line
    assert f"The default seed, {DEFAULT_SEED}, is the one among 0-19" in README
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = sub.choices["gradcheck"].format_help()
    assert f"default: {DEFAULT_SEED} with --grads" in " ".join(help_text.split())
    at_least = f"{DEFAULT_SEPARATION:.0e}".replace("e-0", "e-")  # 1.5e-3 -> "2e-3"
    assert f"differ by at least {at_least} of the gradient's scale" in README


# Two mistakes whose lines meet: a part that wraps beside one that does not, a lookup
# written out beside a cache read one step off, no tanh' beside the carried term's own,
# the carry sent too far back beside tanh' on the own term, two mistakes that zero dU.
MEETING = [
    ("tanh-derivative-wrong-step/previous", "cache-off-by-one"),
    ("tanh-derivative-wrong-step/previous", "off-by-one/V"),
    ("no-tanh-derivative", "carry-tanh-derivative-wrong-step"),
    ("no-tanh-derivative", "upstream-off-by-one"),
    ("local-tanh-derivative-wrong-step", "carry-off-by-one"),
    ("last-step-only", "upstream-off-by-one"),
    ("off-by-one/U", "cache-off-by-one"),
]


@pytest.mark.parametrize("pair", MEETING, ids="+".join)
def test_two_mistakes_made_together_are_what_code_making_both_computes(pair):
    """A pair of the catalogue (PAIRS) reproduces, to rounding, the gradients of learner
    code with both mistakes planted (echo_rnn/grade/planted.py), on a batch with a bias;
    and it differs from each mistake alone, so it is the pair that is named."""
    from echo_rnn.grade.planted import LAYOUTS, source
    from echo_rnn.layouts import adapter
    from echo_rnn.learner import check_return
    from echo_rnn.mistakes import PAIRS

    p = make_learner_problem(batch_size=2, bias=True)
    params = p.params()

    def planted(mistakes):
        ns = {}
        exec(compile(source("rows", list(mistakes)), "planted", "exec"), ns)
        fn = adapter(ns[LAYOUTS["rows"][0]], LAYOUTS["rows"][2])
        return check_return(fn(**p.kwargs()), p, layout=fn.echo_rnn_layout).grads

    got = planted(pair)
    codes = {m.split("/")[0] for m in pair}
    made = [
        variation_grads(
            v, p.x, p.y, params["U"], params["V"], params["w"], params.get("b"), p.h0_state
        )
        for v in PAIRS
        if set(v.codes) == codes
    ]
    fits = [
        g
        for g in made
        if all(torch.allclose(got[n], g[n], rtol=0, atol=1e-12 * g[n].abs().max()) for n in got)
    ]
    assert fits, f"no pair of {sorted(codes)} computes what code making both computes"
    for m in pair:
        alone = planted([m])
        assert any(not torch.allclose(got[n], alone[n], rtol=1e-9, atol=0) for n in got), m
