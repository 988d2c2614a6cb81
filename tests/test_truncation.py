"""Truncated BPTT's one rule: what it says, and that no module writes it again."""

import re
from pathlib import Path

from echo_rnn.truncation import starts_window

PACKAGE = Path(__file__).resolve().parents[1] / "echo_rnn"


def test_windows_are_steps_1_to_k_then_k_plus_1_to_2k():
    assert [t for t in range(1, 11) if starts_window(t, 3)] == [4, 7, 10]
    assert [t for t in range(1, 5) if starts_window(t, 1)] == [2, 3, 4]  # each step alone
    assert not any(starts_window(t, None) for t in range(1, 100))  # full BPTT: one window
    assert not starts_window(1, 1)  # h_0 keeps its gradient


def test_no_module_writes_the_window_test_again():
    # every kernel and the model call starts_window; a second spelling of the rule
    # ("(t + 1) % k != 0" here, "t % k == 0" there) is how two kernels drift apart
    pattern = re.compile(r"%\s*(truncate|k)\b")
    found = [
        f"{p.name}:{n}"
        for p in sorted(PACKAGE.glob("*.py"))
        if p.name != "truncation.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line.split("#")[0])
    ]
    assert found == [], f"the window test written outside echo_rnn/truncation.py: {found}"
