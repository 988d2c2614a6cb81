"""The training engine: which kernel trains (:mod:`~echo_rnn.engine.backends`), runs' state in
the compiled kernel's layout (:mod:`~echo_rnn.engine.members`), the loop of one run
(:mod:`~echo_rnn.engine.train`) and of a population (:mod:`~echo_rnn.engine.population_train`),
the curriculum, torchrun, CUDA graphs. What a run writes is :mod:`echo_rnn.run`'s."""
