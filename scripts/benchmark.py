#!/usr/bin/env python3
"""Benchmark the backends against torch.nn.RNN: the same as ``echo-rnn bench``."""

import sys

from echo_rnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
