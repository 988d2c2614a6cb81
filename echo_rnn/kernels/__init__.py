"""The kernels: the math of the forward and backward pass, and nothing else.

- :mod:`~echo_rnn.kernels.reference`: written to be read (one step's functions, the
  derivation in their docstrings); the teaching kernel and a witness.
- :mod:`~echo_rnn.kernels.bptt`: the fast torch kernel (any device; CUDA runs on it).
- :mod:`~echo_rnn.kernels.population`: the torch kernel batched over R runs.
- :mod:`~echo_rnn.kernels.compiled`: the compiled CPU kernel (``_compiled.c``, built with the
  package), whose bits depend on nothing but a run's config.
"""
