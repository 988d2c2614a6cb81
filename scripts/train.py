#!/usr/bin/env python3
"""Train the echo RNN: the same as ``echo-rnn train``."""

import sys

from echo_rnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
