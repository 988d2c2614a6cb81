#!/usr/bin/env python3
"""Compare hand-written BPTT gradients with autograd: the same as ``echo-rnn gradcheck``."""

import sys

from echo_rnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["gradcheck", *sys.argv[1:]]))
