r"""Checking a learner's own BPTT: ``echo-rnn gradcheck --grads PATH.py:FUNCTION``,
:func:`check_grads` for notebooks, and ``echo-rnn grade`` for a class.

The learner's function is called with keyword arguments ``U`` (H, H), ``V`` (H, I), ``w``
(H,), ``x``, ``y``, and ``b`` (H,) / ``h0`` only when the problem has them, as float64 numpy
arrays (or float64 tensors with ``arrays="torch"``), and returns a dict of the gradients of
J (:mod:`~echo_rnn.learner.contract` has the whole contract).

One job per module, in the order a check runs:

- :mod:`~echo_rnn.learner.contract`: what the function is given and must return, and what
  it returned, checked and put in this package's layout (:func:`check_return`);
- :mod:`~echo_rnn.learner.tolerance`: how close is close enough, per gradient and precision
  (:class:`Tolerances`, :func:`judge`);
- :mod:`~echo_rnn.learner.diagnosis`: a row that disagrees matched against the catalogue of
  classic mistakes (:mod:`echo_rnn.mistakes`), each alone and times a constant, and the ones
  that reproduce it to :data:`MATCH_REL` named (:func:`diagnose`);
- :mod:`~echo_rnn.learner.truncation`: the truncation of BPTT the code computes instead, when
  one explains every gradient (:func:`find_truncation`);
- :mod:`~echo_rnn.learner.report`: the :class:`LearnerReport`;
- :mod:`~echo_rnn.learner.check`: all of it in order (:func:`compare_returned`), for a
  function in this process (:func:`check_grads`) or a file's in a child process
  (:func:`check_file`).

The problem they are all checked on is :class:`echo_rnn.problem.Problem`: the settings, the
tensors built from them, and what is computed once per problem (autograd's gradients, the
catalogue's variations, the noise floors), shared by every learner checked on it.
"""

from echo_rnn.learner.check import check_file, check_grads, compare_returned, report_for
from echo_rnn.learner.contract import (
    ARRAYS,
    ORDER,
    BadReturn,
    LearnerCodeError,
    Returned,
    check_return,
    load_function,
    make_learner_problem,
)
from echo_rnn.learner.diagnosis import (
    DEFAULT_SEPARATION,
    MATCH_REL,
    Diagnosis,
    _autograd,
    _variations,
    departure,
    diagnose,
    separation,
)
from echo_rnn.learner.report import LearnerReport
from echo_rnn.learner.tolerance import (
    NOISE_SAFETY,
    PRECISIONS,
    ROUNDING_TERMS,
    Judged,
    Tolerances,
    judge,
    noise_floor,
)
from echo_rnn.learner.truncation import SEARCH_WINDOWS, find_truncation, truncation_words
from echo_rnn.problem import DEFAULT_SEED, GradcheckProblem, Problem

__all__ = [
    "ARRAYS",
    "DEFAULT_SEED",
    "DEFAULT_SEPARATION",
    "MATCH_REL",
    "NOISE_SAFETY",
    "ORDER",
    "PRECISIONS",
    "ROUNDING_TERMS",
    "SEARCH_WINDOWS",
    "BadReturn",
    "Diagnosis",
    "GradcheckProblem",
    "Judged",
    "LearnerCodeError",
    "LearnerReport",
    "Problem",
    "Returned",
    "Tolerances",
    "_autograd",
    "_variations",
    "check_file",
    "check_grads",
    "check_return",
    "compare_returned",
    "departure",
    "diagnose",
    "find_truncation",
    "judge",
    "load_function",
    "make_learner_problem",
    "noise_floor",
    "report_for",
    "separation",
    "truncation_words",
]
