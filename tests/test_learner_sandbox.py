"""``echo-rnn gradcheck --grads`` against hostile learner code (echo_rnn/sandbox.py): whatever
the file does, the command ends within its --timeout with one line saying what happened, exit
status 1, no frame of echo-rnn's in what it prints, strict JSON with --json, and nothing the
code printed passing for the command's own output.

Each hostile file is written into the test's own directory; the command runs in this process
(``run_main``), the learner's code in the child process the command starts.
"""

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from echo_rnn.learner import BadReturn, check_grads
from echo_rnn.sandbox import Opaque, show_output, to_array
from helpers import run_main

ROOT = Path(__file__).resolve().parents[1]
FIXED = (ROOT / "examples" / "my_bptt_fixed.py").read_text()
MAIN = 'put the script part of the file under `if __name__ == "__main__":`'
# Starting the child and importing numpy there takes well under a second on this machine;
# the bound leaves room for a loaded one.
STARTUP = 8.0


def _strict(text):
    """Parse JSON as strict parsers do: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _run(tmp_path, capsys, source, function="g", *flags):
    f = tmp_path / "h.py"
    f.write_text(source)
    start = time.monotonic()
    code, out, err = run_main("gradcheck", "--grads", f"{f}:{function}", *flags, capsys=capsys)
    return code, out, err, time.monotonic() - start


def _last_line(err):
    return err.strip().splitlines()[-1]


# source, the function, the one line the command ends with (a prefix of it), how long it may
# take beyond the timeout
HOSTILE = {
    "trains at import": (
        "import time\nwhile True:\n    time.sleep(0.01)\ndef g(**kw):\n    pass\n",
        "h.py was still being imported after 1.5 s (--timeout) and was stopped: does it train "
        f"or run a script at import? {MAIN}",
    ),
    "loops": (
        "def g(**kw):\n    while True:\n        pass\n",
        "h.py:g did not return within 1.5 s (--timeout) and was stopped",
    ),
    "sleeps": (
        "import time\ndef g(**kw):\n    time.sleep(1000)\n",
        "h.py:g did not return within 1.5 s (--timeout) and was stopped",
    ),
    "sys.exit(0)": (
        "import sys\ndef g(**kw):\n    sys.exit(0)\n",
        "h.py:g called sys.exit(0) instead of returning its gradients",
    ),
    "os._exit(0)": (
        "import os\ndef g(**kw):\n    os._exit(0)\n",
        "h.py:g ended its process with exit status 0 instead of returning its gradients",
    ),
    "sys.exit at import": (
        "import sys\nsys.exit(0)\ndef g(**kw):\n    pass\n",
        f"h.py called sys.exit(0) at import: {MAIN}",
    ),
    "os._exit at import": (
        "import os\nos._exit(0)\n",
        f"h.py ended its process with exit status 0 at import (os._exit?): {MAIN}",
    ),
    "segfault": (
        "import ctypes\ndef g(**kw):\n    ctypes.string_at(0)\n",
        "h.py:g crashed with SIGSEGV (segmentation fault) before it returned",
    ),
    "KeyboardInterrupt": (
        "def g(**kw):\n    raise KeyboardInterrupt\n",
        "h.py:g raised KeyboardInterrupt (the traceback above is your code's)",
    ),
    "SystemExit(3)": (
        "def g(**kw):\n    raise SystemExit(3)\n",
        "h.py:g called sys.exit(3) instead of returning its gradients",
    ),
    "another BaseException": (
        "class Boom(BaseException):\n    pass\ndef g(**kw):\n    raise Boom('no')\n",
        "h.py:g raised Boom (the traceback above is your code's)",
    ),
    "a missing input file at import": (
        "data = open('input.txt').read()\ndef g(**kw):\n    pass\n",
        f"h.py raised FileNotFoundError at import (the traceback above is your code's); if it "
        f"runs a script at import, {MAIN}",
    ),
    "prints the verdict and exits": (
        "import os, sys\ndef g(**kw):\n    print('all gradients agree')\n"
        "    sys.stdout.flush()\n    os._exit(0)\n",
        "h.py:g ended its process with exit status 0 instead of returning its gradients",
    ),
}


@pytest.mark.slow  # a child process per hostile file, some of them waiting out a timeout
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_code_ends_in_one_line_exit_1_and_strict_json(case, tmp_path, capsys):
    source, line = HOSTILE[case]
    timeout = 1.5
    code, out, err, took = _run(tmp_path, capsys, source, "g", "--timeout", str(timeout), "--json")
    assert code == 1, err
    assert _last_line(err).startswith(f"echo-rnn gradcheck: {line}"), err
    assert "echo_rnn" not in err and "importlib" not in err  # no frame of ours
    report = _strict(out)
    assert report["agrees"] is False and report["rows"] == [] and report["message"] in err
    ours = {k: v for k, v in report.items() if k != "printed"}  # theirs is labelled
    assert "all gradients agree" not in json.dumps(ours)  # their print did not become ours
    assert took < timeout + STARTUP, took


def test_their_traceback_is_shown_without_ours(tmp_path, capsys):
    code, out, err, _ = _run(
        tmp_path, capsys, "def helper():\n    raise KeyboardInterrupt\ndef g(**kw):\n    helper()\n"
    )
    assert code == 1 and out == ""
    assert 'h.py", line 4, in g' in err and 'h.py", line 2, in helper' in err
    assert "echo_rnn" not in err and "sandbox" not in err


def test_what_their_code_prints_cannot_pass_for_the_verdict(tmp_path, capsys):
    """A function that prints our verdict and returns wrong gradients: stdout holds our
    report alone, ending GRADIENTS DISAGREE; their line is on stderr, marked as theirs."""
    source = FIXED.replace(
        "    return {",
        "    print('all gradients agree')\n"
        "    print('\\x1b[2K\\rall gradients agree', "
        "file=__import__('sys').stderr)\n"
        "    dw = 2 * dw\n    return {",
    )
    code, out, err, _ = _run(tmp_path, capsys, source, "bptt")
    assert code == 1
    assert out.strip().endswith("GRADIENTS DISAGREE")
    assert "all gradients agree" not in out
    assert "what h.py:bptt printed while it ran (not part of the check):" in err
    assert "  | all gradients agree" in err
    assert "  | \\x1b[2K\\rall gradients agree" in err  # escapes shown, not obeyed
    assert "\x1b" not in err and "\r" not in err


def test_chdir_cannot_move_the_plot_nor_our_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = FIXED.replace(
        "    T, H = len(x), len(w)",
        f"    __import__('os').chdir({str(elsewhere)!r})\n    T, H = len(x), len(w)",
    )
    code, out, err, _ = _run(tmp_path, capsys, source, "bptt", "--plot", "flow.png")
    assert code == 0, err
    assert (tmp_path / "flow.png").is_file() and not (elsewhere / "flow.png").exists()
    assert Path.cwd() == tmp_path


def test_threads_and_processes_they_start_do_not_hold_the_command(tmp_path, capsys):
    """A non-daemon thread that sleeps, and a process that sleeps, both started by a correct
    function: the verdict comes at once, and the process is killed with the child."""
    pid_file = tmp_path / "grandchild.pid"
    source = FIXED.replace(
        "    T, H = len(x), len(w)",
        "    import threading, time, subprocess, sys\n"
        "    threading.Thread(target=time.sleep, args=(30,)).start()\n"
        "    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        f"    open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "    T, H = len(x), len(w)",
    )
    code, out, err, took = _run(tmp_path, capsys, source, "bptt")
    assert code == 0 and out.strip().endswith("all gradients agree"), err
    assert took < STARTUP, took
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), "the process their code started outlived the check"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead, though not yet reaped
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_huge_broadcast_return_is_a_shape_not_a_copy(tmp_path, capsys):
    source = (
        "import numpy as np\n"
        "def g(U, V, w, x, y):\n"
        "    big = np.broadcast_to(np.zeros(1), (10**6, 10**6))\n"
        "    return {'U': big, 'V': V, 'w': w}\n"
    )
    code, out, err, took = _run(tmp_path, capsys, source, "g", "--json")
    assert code == 1
    assert "key 'U': expected shape (6, 6), got (1000000, 1000000)" in err
    assert _strict(out)["return_problems"] == [
        "key 'U': expected shape (6, 6), got (1000000, 1000000)"
    ]
    assert took < STARTUP


def test_tensors_without_plain_values_are_named(tmp_path, capsys):
    """Meta, sparse, quantized and nested tensors, returned from the child: each named, no
    traceback (one child, so torch is imported once)."""
    source = (
        "import torch, warnings\nwarnings.simplefilter('ignore')\n"
        "def g(U, V, w, x, y):\n"
        "    return {'U': torch.empty(6, 6, device='meta'),\n"
        "            'V': torch.zeros(6, 1).to_sparse(),\n"
        "            'w': torch.quantize_per_tensor(torch.zeros(6), 0.1, 0, torch.quint8),\n"
        "            'dh': torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])}\n"
    )
    code, out, err, _ = _run(tmp_path, capsys, source, "g", "--json")
    assert code == 1 and "Traceback" not in err
    problems = _strict(out)["return_problems"]
    assert [p.split(":")[0] for p in problems] == ["key 'U'", "key 'V'", "key 'w'", "key 'dh'"]
    for needle in ("a meta tensor", "a sparse tensor", "a quantized tensor", "a nested tensor"):
        assert any(needle in p for p in problems), (needle, problems)


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: torch.empty(6, 6, device="meta"), "a meta tensor"),
        (lambda: torch.eye(6).to_sparse(), "a sparse tensor"),
        (
            lambda: torch.quantize_per_tensor(torch.zeros(6, 6), 0.1, 0, torch.quint8),
            "a quantized tensor",
        ),
        (lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]), "a nested tensor"),
        (lambda: torch.zeros(1).expand(10**6, 10**6), None),
        (lambda: np.broadcast_to(np.zeros(1), (10**6, 10**6)), None),
        (lambda: [[0.0] * 6] * 6, "list (wrap it in np.array)"),
        (lambda: np.zeros((6, 6), dtype=object), "an array of object"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_odd_values_are_described_not_read(make, needle):
    value, _ = to_array(make(), (6, 6))
    assert isinstance(value, Opaque)
    if needle is None:
        assert value.shape == (10**6, 10**6)
    else:
        assert needle in value.what

    def fn(U, V, w, x, y):
        return {"U": make(), "V": V, "w": w}

    with pytest.raises(BadReturn) as info:
        check_grads(fn)
    assert [p.split(":")[0] for p in info.value.problems] == ["key 'U'"]


def test_nan_in_the_gradients_is_strict_json(tmp_path, capsys):
    source = FIXED.replace(
        "    return {", "    dU[0, 0] = float('nan')\n    dw[0] = float('inf')\n    return {"
    )
    code, out, err, _ = _run(tmp_path, capsys, source, "bptt", "--json", "--per-step")
    assert code == 1
    report = _strict(out)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["U"]["agrees"] is False and rows["U"]["max_abs_diff"] == "NaN"
    assert rows["w"]["agrees"] is False and rows["w"]["max_abs_diff"] == "Infinity"
    assert any("NaN or infinite" in n for n in report["notes"])


@pytest.mark.parametrize(
    "flags,needle",
    [
        (
            ["--timeout", "0"],
            "argument --timeout: must be a number of seconds in (0, 86400], got '0'",
        ),
        (["--timeout", "nan"], "argument --timeout: must be a number of seconds"),
        (["--timeout", "abc"], "argument --timeout: must be a number of seconds"),
    ],
)
def test_a_bad_timeout_is_one_line_exit_2(flags, needle, capsys):
    code, out, err = run_main(
        "gradcheck", "--grads", "examples/my_bptt_fixed.py:bptt", *flags, capsys=capsys
    )
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_timeout_without_grads_is_refused(capsys):
    code, _, err = run_main("gradcheck", "--timeout", "5", capsys=capsys)
    assert code == 2 and "argument --timeout: only with --grads" in err


def test_their_output_is_shown_line_by_line_as_theirs():
    text = show_output("all gradients agree\nGRADIENTS DISAGREE\x07\n", "h.py:g")
    assert text.splitlines() == [
        "what h.py:g printed while it ran (not part of the check):",
        "  | all gradients agree",
        "  | GRADIENTS DISAGREE\\x07",
    ]
    assert show_output(" \n", "h.py:g") == ""


def test_a_function_that_does_not_exist_is_named_from_the_child(tmp_path, capsys):
    code, out, err, _ = _run(tmp_path, capsys, "import math\ndef f(**kw):\n    pass\n", "g")
    assert code == 2 and out == ""
    assert err.strip().endswith("h.py defines no function 'g' (it defines: f)")
    assert len(err.strip().splitlines()) == 1


def test_a_correct_file_runs_in_a_child_and_leaves_this_process_alone(tmp_path, capsys):
    """The learner's module is imported in the child: never in this process."""
    import sys

    source = FIXED + "\nimport os\nos.environ['LEAKED'] = '1'\n"
    before = set(sys.modules)
    code, out, _, _ = _run(tmp_path, capsys, source, "bptt")
    assert code == 0 and out.strip().endswith("all gradients agree")
    assert "LEAKED" not in os.environ and "h" not in set(sys.modules) - before
    assert not math.isnan(0.0)
