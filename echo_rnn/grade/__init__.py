"""``echo-rnn grade``: a class's BPTT submissions checked, named and scored in one command.

- :mod:`~echo_rnn.grade.submissions`: the submissions as students hand them in (.py files,
  notebooks, a folder per student);
- :mod:`~echo_rnn.grade.rubric`: points per gradient, partial credit per named mistake;
- :mod:`~echo_rnn.grade.grader`: each submission run in its own child process, as
  ``gradcheck --grads`` runs one, and judged in the parent (:func:`grade`);
- :mod:`~echo_rnn.grade.reports`: the terminal table, CSV, JSON and Gradescope's
  ``results.json``;
- :mod:`~echo_rnn.grade.html`: the teacher's single-file HTML report;
- :mod:`~echo_rnn.grade.planted`: a class made from the catalogue of mistakes, every
  placement in every layout of examples/layouts/ (the tests', the benchmark's, a demo's).
"""
