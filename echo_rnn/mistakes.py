r"""The catalogue of classic BPTT mistakes: one record per mistake (:class:`Mistake`: its
code, what it is, its fix, and how it is made), each made as a small, named variation of the
reference kernel (:mod:`echo_rnn.kernels.reference`), the wrong gradients a learner's backward pass
computes when it makes that mistake, or, for ``sign`` and ``scale``, as a constant the
right gradient (or a variation) is multiplied by. ``echo-rnn gradcheck --grads`` compares a
learner's gradient that disagrees with autograd's against every variation here, alone and
times a constant, and names the records that reproduce it (:func:`echo_rnn.learner.diagnose`
reads every sentence it prints from the record; it knows no code by name).

The package's notation (see ``echo_rnn``), as the reference kernel writes it: the math in
column vectors, the code on batches held as rows, steps t = 1..T, h_0 the initial state,
shapes in B, T, I, H. What the right kernel does, and what each variation changes::

    dJ/dh_t = local_t + carried_t       local_t = w dJ/dyhat_t     carried_t = U^T dJ/dz_{t+1}
    dJ/dz_t = dJ/dh_t * (1 - h_t^2)
    dU = sum_t dJ/dz_t h_{t-1}^T    dV = sum_t dJ/dz_t x_t^T    dw = sum_t h_t dJ/dyhat_t

A learner stores its states in arrays shifted by one from these (h of length T + 1 with h_0
first, or length T without it), so a step taken one off either lands on h_0 at the start or,
by Python's negative indexing, wraps around to h_T: both are variations.

How to add a mistake. Three places, and tests/test_mistakes.py fails, naming the code, while
any of them is missing:

1. its record in CATALOGUE below: ``_record(code, what, fix, way, ...)``, where each way is
   the keywords of a :class:`Variation` (a change to the backward pass: a field of Variation
   that :func:`variation_grads` applies; a new kind of change is a new field, added to
   ``_FIELDS`` too, so that two mistakes can be made together), with ``says``/``fix`` per
   gradient where the record's sentence would be vague; or ``constant=`` a
   :class:`Constant`, for a mistake that only multiplies the gradient. ``what`` and ``fix``
   are what the report prints (and the README's table); the fix is written for J's
   dJ/dyhat_t = (yhat_t - y_t) / (B T).
2. its row in the README's "Common BPTT mistakes" table, ``| `code` | what | fix |``, in
   the catalogue's order (the test prints the row to paste).
3. the mistake planted in learner code: ``learner_bptt`` and ``PLANTED`` in
   tests/test_learner.py, written as a learner would write it (for a constant: the
   ``error_factor`` its ``Constant.example`` says); the planted tests check it is named,
   alone, with ``sign`` and ``scale``, and with a bias and h_0.

The default seed. ``DEFAULT_SEED`` (7, echo_rnn/problem.py) is a written constant, not
computed, because the help text and the README's walkthrough print it: it was chosen as the
seed among 0-19 whose default problem keeps every two variations furthest apart
(:func:`echo_rnn.learner.separation`), and ``DEFAULT_SEPARATION`` (learner.py) is a floor
under that distance, far above the 1e-8 a match needs. A new mistake changes the
distances, so two tests of tests/test_learner.py re-measure them:
``test_the_default_problem_keeps_the_mistakes_apart`` (every two variations still
``DEFAULT_SEPARATION`` apart on seed 7; it names the closest pair) and
``test_the_default_seed_is_the_best_of_the_first_twenty``. When one fails, either make the
new variation tell itself apart, or move the constants on purpose, together with the README
(the walkthrough's block and "Telling them apart"; the tests that hold them,
``test_the_readme_walkthrough_is_what_the_command_prints`` and tests/test_mistakes.py's
``test_the_default_seed_is_printed_where_it_is_told``, say what they now print). Nothing
moves by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from echo_rnn.kernels import reference
from echo_rnn.layouts import orientation


@dataclass(frozen=True)
class Variation:
    """One way of making a catalogue mistake, as a change to the reference backward pass.

    ``says`` and ``fix`` map a gradient's name ("U", "V", "w", "b", "h0", "dh", or "*" for
    the rest) to what went wrong in it and how to put it right, in the learner's words; a
    name they leave out gets the record's ``what`` and ``fix``.
    """

    code: str
    says: dict[str, str] = field(default_factory=dict)
    fix: dict[str, str] = field(default_factory=dict)
    carry: str = "U"  # the matrix carrying dJ/dz_t back to h_{t-1}: "U", "U^T" or "none"
    tanh_at: int | None = 0  # the step tanh' is taken at, relative to t; None: no tanh'
    wrap: bool = False  # a step before the first is h_T / x_T (Python's [-1]), not h_0 / 0
    last_only: bool = False  # only step T's loss differentiated
    w_at: int = 0  # dw pairs dJ/dyhat_t with h_{t + w_at}
    U_at: int = -1  # dU pairs dJ/dz_t with h_{t + U_at}
    V_at: int = 0  # dV pairs dJ/dz_t with x_{t + V_at}
    after: str | None = None  # a change to the result: "transpose" or "inner-product"
    last_twice: bool = False  # step T's loss gradient added twice
    db_from_dh: bool = False  # db sums dJ/dh_t, not dJ/dz_t
    carry_tanh_at: int = 0  # the carried term's tanh' at h_{t + carry_tanh_at}
    local_at: int = 0  # dJ/dh_t takes dJ/dyhat_{t + local_at} w (wrapping at the first step)
    cache_at: int = 0  # step t reads the cache of step t + cache_at (wrapping at the first)
    own_tanh_at: int = 0  # not 0: the step's own term local_t takes tanh' at h_{t + own_tanh_at}
    carry_at: int = -1  # U^T dJ/dz_t is added to dJ/dh_{t + carry_at}
    parts: tuple = ()  # two mistakes made together: the variations this one combines
    wrapped: frozenset = frozenset()  # made together: the fields whose part wraps

    def wraps(self, name: str) -> bool:
        """Whether the lookup that field ``name`` shifts wraps to h_T / x_T before the first
        step: the ``wrap`` of the part that shifts it, when two mistakes are made together."""
        return name in self.wrapped if self.parts else self.wrap

    @property
    def codes(self) -> list[str]:
        """The catalogue's codes this variation makes: one, or two made together."""
        return [p.code for p in self.parts] if self.parts else [self.code]

    def sentences(self, name: str) -> list[tuple[str, str]]:
        """(what went wrong, how to fix it) per mistake made in gradient ``name``."""
        return [p.sentence(name) for p in self.parts] if self.parts else [self.sentence(name)]

    def sentence(self, name: str) -> tuple[str, str]:
        """(what went wrong in gradient ``name``, how to fix it)."""
        says = self.says.get(name, self.says.get("*", CATALOGUE[self.code].what))
        fix = self.fix.get(name, self.fix.get("*", CATALOGUE[self.code].fix))
        return says, fix


@dataclass(frozen=True)
class Constant:
    """A mistake seen in the constant c that makes a gradient from the right one or from a
    variation (got = c * candidate): ``factor`` takes every such c found for one gradient
    (and the match tolerance) and returns the factor the mistake names, None when the c's
    do not show it; ``detail`` says, for that factor and its name (T, 2B, ...; None when it
    has none), what the report adds to the record's sentence. ``example``: a constant that
    makes it (the tests multiply a learner's error by it)."""

    example: float
    factor: Callable[[list[float], float], float | None]
    detail: Callable[[float, str | None], str] | None = None
    reported: bool = False  # the row's factor in the report ("factor 50 = T")


def _negative(cs: list[float], match: float) -> float | None:
    """-1 when every constant found is negative: an error taken as y - yhat."""
    return -1.0 if cs and all(c < 0 for c in cs) else None


def _common_size(cs: list[float], match: float) -> float | None:
    """The one size |c| != 1 every constant other than +-1 shares, told once; None when
    there is none or they differ."""
    sizes = [abs(c) for c in cs if abs(abs(c) - 1) > match]
    if sizes and max(sizes) <= min(sizes) * (1 + 2 * match):
        return round(sizes[0], 12)
    return None


def _size_detail(c: float, name: str | None) -> str:
    if name:
        return f"here it is {name} = {c:.6g} times too large: {factor_meaning(name)}"
    return f"here it is {c:.6g} times the right size"


def _one_number_fits(name: str, shape: tuple[int, ...]) -> bool:
    """Whether an inner product can stand where gradient ``name`` (of ``shape``) belongs: a
    sum of outer products of two vectors of one length, as U's always is (dz_t, h_{t-1}) and
    V's is when I = H (dz_t, x_t)."""
    return (name == "U" or (name == "V" and shape[0] == shape[1])) and shape[0] > 1


@dataclass(frozen=True)
class Mistake:
    """One mistake: its code, what it is and its fix (the README's "Common BPTT mistakes"
    table prints them, the report says them), and how it is made: ``variations`` of the
    backward pass, or a ``constant``.

    ``one_number``: where the mistake makes one number stand for a whole gradient (the
    gradient's name and shape): a number returned there is accepted
    (:func:`echo_rnn.learner.check_return`), and a gradient whose entries are all one
    value there is this mistake whatever the value; ``unfitted`` is added to the sentence
    when no variation times a named constant reproduces that value. ``in_layout`` words it
    in the learner's layout; ``misoriented`` marks the one record a gradient returned in
    the transposed shape is (:func:`echo_rnn.learner.check_return` reads it back)."""

    code: str
    what: str
    fix: str
    variations: tuple[Variation, ...] = ()
    constant: Constant | None = None
    one_number: Callable[[str, tuple[int, ...]], bool] | None = None
    unfitted: str = ""
    # its sentences in a learner's own layout (echo_rnn.layouts): (layout, gradient, the
    # shape it came back in when that gave it away or None, the expected shape) -> (says, fix)
    in_layout: Callable[..., tuple[str, str]] | None = None
    misoriented: bool = False  # what a gradient returned in the other orientation is


def _record(code: str, what: str, fix: str, *ways: dict[str, Any], **special: Any) -> Mistake:
    """A record whose variations are ``ways``, the keywords of a :class:`Variation` each."""
    return Mistake(code, what, fix, tuple(Variation(code, **w) for w in ways), **special)


_PREV_WRAP = "at the first step it reads h_T, index -1 of an array that holds h_1..h_T without h_0"
_OFF_BY_ONE_FIX = {
    "w": "dw += (yhat_t - y_t) / T * h_t, the state the prediction was read from",
    "U": "dU += np.outer(dz_t, h_{t-1}), the state step t started from",
    "V": "dV += np.outer(dz_t, x_t), the input of the same step",
}


def _one_lookup_each(*ways: dict[str, Any]) -> list[dict[str, Any]]:
    """The ways of an index one off in the pairings of dw, dU and dV, each lookup on its
    own: a learner writes each pairing on its own line, so one can be off while the others
    are right (one wrong index wraps at the first step only when it reads before h_1 or x_1)."""
    apart: dict[tuple, dict[str, Any]] = {}
    for way in ways:
        for name in ("w_at", "U_at", "V_at"):
            value = way.get(name, getattr(Variation("", {}), name))
            if value == getattr(Variation("", {}), name):
                continue
            wrap = bool(way.get("wrap")) and value < 0
            one = {k: v for k, v in way.items() if k not in ("w_at", "U_at", "V_at", "wrap")}
            apart.setdefault((name, value, wrap), {**one, name: value, "wrap": wrap})
    return list(apart.values())


CATALOGUE = {
    m.code: m
    for m in (
        _record(
            "sign",
            "opposite sign: the error taken as y - yhat while the update subtracts "
            "the gradient, so training climbs the loss",
            "take the error as yhat - y: dJ/dyhat_t = (yhat_t - y_t) / (B T)",
            constant=Constant(-1.0, _negative),
        ),
        _record(
            "scale",
            "off by a constant factor: T (a sum over time where J takes the mean), "
            "B (a sum over the batch), 2 (the 1/2 of the cost forgotten) or their inverses",
            "dJ/dyhat_t = (yhat_t - y_t) / (B T): divide by T and by B once each, no factor 2",
            constant=Constant(50.0, _common_size, _size_detail, reported=True),
        ),
        _record(
            "inner-product",
            "a scalar, or a matrix with every entry equal, where the sum of "
            "outer products belongs (np.dot of two vectors is their inner product)",
            "accumulate the outer product: dU += np.outer(dz_t, h_{t-1}) "
            "(batched: dz_t.T @ h_{t-1})",
            dict(
                after="inner-product",
                says={
                    "*": "it is one number, or a matrix with every entry equal: the inner "
                    "product sum_t dz_t . h_{t-1} where the sum of outer products "
                    "dz_t h_{t-1}^T belongs",
                    "V": "it is one number, or a matrix with every entry equal: the inner "
                    "product sum_t dz_t . x_t where the sum of outer products dz_t x_t^T "
                    "belongs",
                },
                fix={
                    "V": "accumulate the outer product: dV += np.outer(dz_t, x_t) "
                    "(batched: dz_t.T @ x_t)"
                },
            ),
            one_number=_one_number_fits,
            unfitted=" (its value is not that sum times 1, T, B, 2 or their inverses either: "
            "look for a second mistake)",
        ),
        _record(
            "transposed",
            "the transpose of the right gradient (dU)",
            "dU += np.outer(dz_t, h_{t-1}), not np.outer(h_{t-1}, dz_t): row i is unit i's "
            "pre-activation",
            dict(
                after="transpose",
                says={
                    "*": "it is the transpose of the right gradient: np.outer(h_{t-1}, dz_t) where "
                    "np.outer(dz_t, h_{t-1}) belongs"
                },
            ),
            in_layout=orientation,
            misoriented=True,
        ),
        _record(
            "carry-transposed",
            "U where U^T belongs in the gradient carried back through time",
            "carry dJ/dh_{t-1} = U.T @ dz_t (column vectors), dz_t @ U (row vectors)",
            dict(
                carry="U^T",
                says={
                    "*": "the gradient carried back through time uses U where U^T belongs "
                    "(dh_{t-1} = U @ dz_t instead of U.T @ dz_t)"
                },
            ),
        ),
        _record(
            "no-carry",
            "no gradient carried through time: each step's own loss only (truncation at 1)",
            "walk t from T down to 1 and add the carried term U.T @ dz_{t+1} to dJ/dh_t before "
            "multiplying by tanh'",
            dict(
                carry="none",
                says={
                    "*": "no gradient is carried back through time: each step sees only its own "
                    "loss, as if truncated at 1 step"
                },
            ),
        ),
        _record(
            "no-tanh-derivative",
            "the factor tanh' = 1 - h_t^2 missing",
            "dz_t = dh_t * (1 - h_t**2), with h_t = tanh(z_t)",
            dict(
                tanh_at=None,
                says={
                    "*": "the tanh derivative is missing: dz_t = dh_t where "
                    "dz_t = dh_t * (1 - h_t^2) belongs"
                },
            ),
        ),
        _record(
            "tanh-derivative-wrong-step",
            "tanh' taken at the neighbouring step: "
            "1 - h_{t-1}^2 or 1 - h_{t+1}^2 where 1 - h_t^2 belongs",
            "use the state the step itself made: dz_t = dh_t * (1 - h_t**2)",
            dict(
                tanh_at=-1,
                says={
                    "*": "the tanh derivative is taken at the previous step, 1 - h_{t-1}^2, where "
                    "1 - h_t^2 belongs"
                },
            ),
            dict(
                tanh_at=-1,
                wrap=True,
                says={
                    "*": "the tanh derivative is taken at the previous step, 1 - h_{t-1}^2, where "
                    f"1 - h_t^2 belongs ({_PREV_WRAP})"
                },
            ),
            dict(
                tanh_at=1,
                says={
                    "*": "the tanh derivative is taken at the next step, 1 - h_{t+1}^2, where "
                    "1 - h_t^2 belongs"
                },
            ),
        ),
        _record(
            "off-by-one",
            "a step off in time: h_{t-1} where h_t belongs (dw), h_t where "
            "h_{t-1} belongs (dU), x_{t-1} or x_{t+1} where x_t belongs (dV)",
            "yhat_t = w . h_t pairs dJ/dyhat_t with h_t; z_t = U h_{t-1} + V x_t pairs "
            "dJ/dz_t with h_{t-1} and x_t",
            *_one_lookup_each(
                dict(
                    w_at=-1,
                    U_at=0,
                    V_at=-1,
                    fix=_OFF_BY_ONE_FIX,
                    says={
                        "w": "dw pairs the error at step t with h_{t-1}; "
                        "yhat_t = w . h_t needs h_t",
                        "U": "dU pairs dz_t with h_t; z_t = U h_{t-1} + V x_t needs h_{t-1}",
                        "V": "dV pairs dz_t with x_{t-1}; z_t = U h_{t-1} + V x_t needs x_t",
                    },
                ),
                dict(
                    w_at=-1,
                    U_at=0,
                    V_at=-1,
                    wrap=True,
                    fix=_OFF_BY_ONE_FIX,
                    says={
                        "w": f"dw pairs the error at step t with h_{{t-1}} ({_PREV_WRAP}); "
                        "yhat_t = w . h_t needs h_t",
                        "U": "dU pairs dz_t with h_t; z_t = U h_{t-1} + V x_t needs h_{t-1}",
                        "V": "dV pairs dz_t with x_{t-1} (at the first step x_T, index -1); "
                        "z_t = U h_{t-1} + V x_t needs x_t",
                    },
                ),
                dict(
                    w_at=1,
                    U_at=0,
                    V_at=1,
                    fix=_OFF_BY_ONE_FIX,
                    says={
                        "w": "dw pairs the error at step t with h_{t+1}; "
                        "yhat_t = w . h_t needs h_t",
                        "U": "dU pairs dz_t with h_t; z_t = U h_{t-1} + V x_t needs h_{t-1}",
                        "V": "dV pairs dz_t with x_{t+1}; z_t = U h_{t-1} + V x_t needs x_t",
                    },
                ),
            ),
        ),
        _record(
            "last-step-only",
            "only the last step's loss differentiated, as if J were (yhat_T - y_T)^2 / 2",
            "J sums every step's loss: add dJ/dyhat_t w to dJ/dh_t at every t, not only at T",
            dict(
                last_only=True,
                says={
                    "*": "only the last step's loss is differentiated; J sums the loss of every "
                    "step"
                },
            ),
        ),
        _record(
            "last-step-twice",
            "the last step's loss gradient counted twice: the carried "
            "gradient started at dJ/dyhat_T w, and dJ/dyhat_T w added again at t = T",
            "start the carried gradient at zero (dh_next = np.zeros(H)); each step adds its "
            "own dJ/dyhat_t w once",
            dict(
                last_twice=True,
                says={
                    "*": "the last step's loss gradient is counted twice: dJ/dh_T is "
                    "2 dJ/dyhat_T w (was the carried gradient started at dJ/dyhat_T w, then "
                    "added again?)"
                },
            ),
        ),
        _record(
            "bias-skips-tanh-derivative",
            "the bias gradient sums dJ/dh_t where it sums dJ/dz_t (db += dh_t)",
            "db += dz_t, with dz_t = dh_t * (1 - h_t**2): b enters before the tanh",
            dict(
                db_from_dh=True,
                says={
                    "b": "db sums dJ/dh_t where dJ/dz_t = dJ/dh_t * (1 - h_t^2) belongs: the bias "
                    "gradient skips tanh'"
                },
            ),
        ),
        _record(
            "carry-tanh-derivative-wrong-step",
            "tanh' at the wrong step in the carried term "
            "only: dJ/dh_{t-1} = U^T (dJ/dh_t * (1 - h_{t-1}^2)) where 1 - h_t^2 belongs",
            "carry the same dz_t the step used for dU: dJ/dh_{t-1} = U.T @ dz_t, "
            "dz_t = dh_t * (1 - h_t**2)",
            dict(
                carry_tanh_at=-1,
                says={
                    "*": "the carried term takes tanh' at the previous step: dJ/dh_{t-1} = "
                    "U^T (dJ/dh_t * (1 - h_{t-1}^2)) where 1 - h_t^2 belongs (the step's own "
                    "dz_t is right)"
                },
            ),
        ),
        _record(
            "upstream-off-by-one",
            "the gradient arriving from the loss read one step off: "
            "dJ/dyhat_{t-1} w added to dJ/dh_t (dh[:, t-1] in a loop over t; at the first "
            "step index -1, the last step's)",
            "add the upstream gradient of the same step: dh_t = dy[:, t] * w + carried",
            dict(
                local_at=-1,
                wrap=True,
                says={
                    "*": "dJ/dh_t takes the loss gradient of step t-1 (dh[:, t-1]; at the first "
                    "step index -1, step T's): the upstream gradient is read one step off"
                },
            ),
        ),
        _record(
            "cache-off-by-one",
            "the step's cache read one step off: step t's backward "
            "given the cache of step t-1 (caches[t-1]; at the first step index -1, the last "
            "step's)",
            "give step t's backward its own cache: step_backward(dh_t, caches[t])",
            dict(
                cache_at=-1,
                wrap=True,
                says={
                    "*": "step t's backward reads the cache of step t-1 (caches[t-1]; at the "
                    "first step index -1, step T's): tanh', h_{t-1} and x_t all come from "
                    "the wrong step"
                },
            ),
        ),
        _record(
            "local-tanh-derivative-wrong-step",
            "tanh' at the wrong step on the step's own loss term only: "
            "dJ/dz_t = (dJ/dyhat_t w) * (1 - h_{t-1}^2) + carried_t * (1 - h_t^2), where both "
            "terms take 1 - h_t^2",
            "add the two terms first and take tanh' once, at the step's own state: "
            "dz_t = (dy[:, t] * w + dh_next) * (1 - h_t**2)",
            dict(
                own_tanh_at=-1,
                says={
                    "*": "the step's own loss term takes tanh' at the previous step: dJ/dz_t = "
                    "(dJ/dyhat_t w) * (1 - h_{t-1}^2) + carried_t * (1 - h_t^2), where both "
                    "terms take 1 - h_t^2 (the carried term is right)"
                },
            ),
        ),
        _record(
            "carry-off-by-one",
            "the carried gradient added one step too far back: dJ/dh_t takes "
            "U^T dJ/dz_{t+2} where U^T dJ/dz_{t+1} belongs (dh_next stored at, or read from, "
            "an index one off)",
            "add what step t+1 carried back at step t, the very next step: "
            "dh_t = dy[:, t] * w + dh_next, with dh_next = U.T @ dz_{t+1}",
            dict(
                carry_at=-2,
                says={
                    "*": "the gradient carried back through time skips a step: dJ/dh_t takes "
                    "U^T dJ/dz_{t+2} where U^T dJ/dz_{t+1} belongs, and dJ/dh_{T-1} takes "
                    "nothing carried"
                },
            ),
        ),
    )
}

# Every way of making a mistake of the catalogue: what a gradient is compared with.
VARIATIONS = tuple(v for m in CATALOGUE.values() for v in m.variations)
# The mistakes seen in a constant factor rather than a changed backward pass.
CONSTANTS = tuple(m for m in CATALOGUE.values() if m.constant is not None)
# The mistake a gradient returned in the transposed shape is.
(MISORIENTED,) = (m for m in CATALOGUE.values() if m.misoriented)


def accepts_one_number(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a mistake of the catalogue makes one number where gradient ``name`` of
    ``shape`` belongs (a learner's function may return it there)."""
    return any(m.one_number(name, shape) for m in CATALOGUE.values() if m.one_number)


# Two mistakes in one gradient: pairs of variations that change different parts of the
# backward pass, tried when no single variation reproduces a gradient.
_DEFAULTS = Variation("", {})
_FIELDS = (
    "carry",
    "tanh_at",
    "last_only",
    "w_at",
    "U_at",
    "V_at",
    "after",
    "last_twice",
    "db_from_dh",
    "carry_tanh_at",
    "local_at",
    "cache_at",
    "own_tanh_at",
    "carry_at",
)


def _combine(a: Variation, b: Variation) -> Variation | None:
    """The variation making both ``a`` and ``b``, or None when they change the same part or
    the second changes nothing the first left. Each part keeps its own ``wrap`` for the
    lookups it shifts; a lookup one of them writes out (tanh', h_{t-1}, x_t) is read where
    it says, beside a cache read one step off (:func:`variation_grads`)."""
    changed: dict[str, Any] = {}
    wrapped = set()
    for v in (a, b):
        for f in _FIELDS:
            if getattr(v, f) != getattr(_DEFAULTS, f):
                if f in changed:
                    return None
                changed[f] = getattr(v, f)
                if v.wrap:
                    wrapped.add(f)
    if "own_tanh_at" in changed and "tanh_at" in changed:
        return None  # both write the step's tanh'
    no_tanh = changed.get("tanh_at", 0) is None
    no_carry = changed.get("carry") == "none"
    if ("db_from_dh" in changed and no_tanh) or (
        ("carry_tanh_at" in changed or "carry_at" in changed) and no_carry
    ):
        return None  # the second changes nothing the first left
    return Variation(
        f"{a.code}+{b.code}",
        {},
        wrap=a.wrap or b.wrap,
        parts=(a, b),
        wrapped=frozenset(wrapped),
        **changed,
    )


PAIRS = tuple(
    c
    for i, a in enumerate(VARIATIONS)
    for b in VARIATIONS[i + 1 :]
    if a.code != b.code and (c := _combine(a, b)) is not None
)


def variation_grads(
    v: Variation,
    x: torch.Tensor,
    y: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The gradients of the echo cost that the reference backward pass gives when it makes
    mistake ``v``.

    Step t's backward reads tanh', h_{t-1} and x_t from step s's cache (s = t, or
    t + cache_at); a lookup a mistake shifts is written out by the learner, so it is read
    at t plus its shift whatever cache the step reads.

    Args:
        x: (B, T, I). y: (B, T). U, V, w, b: (H, H), (H, I), (H,), (H,) or None.
        h0: (B, H) or None for zeros.

    Returns:
        ``{"U", "V", "w", "b", "h0", "dh"}``: (H, H), (H, I), (H,), (H,), (B, H) and
        dJ/dh_t (B, T, H), as the mistaken kernel computes them.
    """
    B, T, _ = x.shape
    y_hat, _, caches = reference.forward(x, U, V, w, b, h0)
    dy_hat = (y_hat - y) / (B * T)
    if v.last_only:
        dy_hat = torch.cat([torch.zeros_like(dy_hat[:, :-1]), dy_hat[:, -1:]], dim=1)
    hs = [h0 if h0 is not None else torch.zeros_like(caches[0].h)] + [c.h for c in caches]
    zeros = torch.zeros_like(hs[0])

    # A lookup the mistake shifts reads h_T / x_T before the first step when it wraps; the
    # lookups it leaves alone read h_0 as the right kernel does.
    def h_at(t: int, wraps: bool = False) -> torch.Tensor:  # h_t, t = 0..T; beyond T zeros
        if t > T:
            return zeros
        return hs[T] if (t == 0 and wraps) else hs[t]

    def x_at(t: int, wraps: bool = False) -> torch.Tensor:  # x_t, t = 1..T; outside zeros
        if t == 0 and wraps:
            return x[:, T - 1]
        return x[:, t - 1] if 1 <= t <= T else torch.zeros_like(x[:, 0])

    def local(t: int) -> torch.Tensor:  # dJ/dyhat_t w; before the first step: step T's
        if t < 1:  # (wrap) or nothing
            return dy_hat[:, T - 1, None] * w if v.wraps("local_at") else zeros
        return dy_hat[:, t - 1, None] * w

    def tanh_prime(h: torch.Tensor) -> torch.Tensor:
        return 1 - h**2

    dU, dV, dw, db = (torch.zeros_like(p) for p in (U, V, w, w))
    dh = [None] * T
    arriving: dict[int, torch.Tensor] = {}  # step -> the carried term sent to it
    sent = zeros  # the last carried term computed: step 1's is dJ/dh_0
    for t in range(T, 0, -1):
        own = local(t + v.local_at)
        carried = arriving.pop(t, zeros)
        if v.last_twice and t == T:
            carried = carried + local(T)  # the carried gradient started at dJ/dyhat_T w
        dh[t - 1] = own + carried  # local_t + carried_t
        s = t + v.cache_at  # the step whose cache step t's backward reads
        if s < 1:
            s += T  # caches[-1]
        step_tanh = hs[s] if v.tanh_at in (0, None) else h_at(t + v.tanh_at, v.wraps("tanh_at"))
        if v.tanh_at is None:
            dz = dh[t - 1]
        elif v.own_tanh_at:
            own_tanh = h_at(t + v.own_tanh_at, v.wraps("own_tanh_at"))
            dz = own * tanh_prime(own_tanh) + carried * tanh_prime(step_tanh)
        else:
            dz = dh[t - 1] * tanh_prime(step_tanh)
        h_prev = hs[s - 1] if v.U_at == -1 else h_at(t + v.U_at, v.wraps("U_at"))
        x_t = x_at(s) if v.V_at == 0 else x_at(t + v.V_at, v.wraps("V_at"))
        dU = dU + dz.T @ h_prev
        dV = dV + dz.T @ x_t
        db = db + (dh[t - 1] if v.db_from_dh else dz).sum(0)
        dw = dw + h_at(t + v.w_at, v.wraps("w_at")).T @ dy_hat[:, t - 1]
        carried_dz = (
            dz if v.carry_tanh_at == 0 else dh[t - 1] * tanh_prime(h_at(t + v.carry_tanh_at))
        )
        sent = {"U": carried_dz @ U, "U^T": carried_dz @ U.T, "none": zeros}[v.carry]
        arriving[t + v.carry_at] = sent
    grads = {"U": dU, "V": dV, "w": dw, "b": db, "h0": sent, "dh": torch.stack(dh, dim=1)}
    if v.after == "transpose":
        grads["U"] = dU.T
        if V.shape[0] == V.shape[1]:
            grads["V"] = dV.T
    elif v.after == "inner-product":
        grads["U"] = torch.full_like(dU, dU.trace().item())  # sum_t dz_t . h_{t-1}
        if V.shape[0] == V.shape[1]:
            grads["V"] = torch.full_like(dV, dV.trace().item())
    return grads


def named_factors(B: int, T: int) -> dict[float, str]:
    """The constant factors ``scale`` names, {value: name}: T, B, 2, their inverses and
    products (a sum over time and a forgotten 1/2 at once is 2T), the simplest name first
    when two coincide (B = 1, or T = 2)."""
    names: dict[float, str] = {}
    terms = []
    for a in (0, 1, -1):
        for bb in (0, 1, -1):
            for c in (0, 1, -1):
                if (a, bb, c) != (0, 0, 0):
                    terms.append((abs(a) + abs(bb) + abs(c), a, bb, c))
    for _, a, bb, c in sorted(terms):
        value = float(T) ** a * float(B) ** bb * 2.0**c
        up = "".join(s for s, e in (("2", c), ("B", bb), ("T", a)) if e == 1)
        down = "".join(s for s, e in (("2", c), ("B", bb), ("T", a)) if e == -1)
        name = (up or "1") + (f"/{down}" if len(down) == 1 else f"/({down})" if down else "")
        if value != 1.0 and not any(abs(value / k - 1) < 1e-12 for k in names):
            names[value] = name
    return names


def factor_meaning(name: str) -> str:
    """What a named factor says about the code that made it."""
    up, _, down = name.partition("/")
    down = down.strip("()")
    said = []
    for symbol, missing, extra in (
        (
            "T",
            "the 1/T of the mean over time missing (a sum over t)",
            "divided by T once too often",
        ),
        (
            "B",
            "the 1/B of the mean over the batch missing (a sum over sequences)",
            "divided by B once too often",
        ),
        (
            "2",
            "the 1/2 of the cost forgotten (d/dyhat of (yhat - y)^2 is 2 (yhat - y), "
            "of (yhat - y)^2 / 2 it is yhat - y)",
            "halved once too often",
        ),
    ):
        if symbol in up:
            said.append(missing)
        if symbol in down:
            said.append(extra)
    return "; ".join(said)
