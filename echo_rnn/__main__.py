import sys

from echo_rnn.cli import main

sys.exit(main())
