"""A run as it is kept: its directory (:mod:`~echo_rnn.run.rundir`, one writer at a time by
:mod:`~echo_rnn.run.locks`), its checkpoint (:mod:`~echo_rnn.run.checkpoint`), what it shows
(:mod:`~echo_rnn.run.runlog`, :mod:`~echo_rnn.run.events`, :mod:`~echo_rnn.run.tblog`), and how
a signal stops it (:mod:`~echo_rnn.run.signals`)."""
