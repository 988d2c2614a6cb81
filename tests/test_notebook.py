"""examples/tutorial.ipynb, executed top to bottom as a learner would run it (nbclient, a real
IPython kernel): the three mistakes are named one fix at a time, training with the fixed
gradients solves the task, the gradient flow is drawn and TensorBoard opens inline."""

import json
import os
import signal
import sys
from pathlib import Path

import nbclient  # the test extra's: a missing install fails here, it is not skipped
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


def test_the_notebook_is_stored_without_outputs():
    # what the tests execute is what a learner opens: no stale outputs to contradict it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has outputs"


def _texts(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _tensorboards_under(path: Path) -> list[int]:
    """pids of live processes whose command line or working directory is under ``path``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if "tensorboard" in cmd and (str(path) in cmd or cwd.startswith(str(path))):
            pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (the kernel, gone) to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _execute(cwd: Path):
    """The notebook, executed top to bottom by a kernel working in ``cwd``; the
    TensorBoard its last cell starts is stopped."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    # The %tensorboard magic looks for a `tensorboard` program on PATH: the kernel gets this
    # interpreter's scripts first, as an activated environment has them, so the test passes
    # however pytest was started (`.venv/bin/python -m pytest` included)
    scripts = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    # nbclient handles SIGINT while it runs and, removing its handler, leaves Python's default
    # one, whatever was there before (SIG_IGN in a shell's background job): put it back
    sigint = signal.getsignal(signal.SIGINT)
    try:
        client.execute(env=env)  # raises CellExecutionError, with the cell, if any cell fails
    finally:
        signal.signal(signal.SIGINT, sigint)
        for pid in _tensorboards_under(cwd):  # the %tensorboard magic's server
            os.kill(pid, signal.SIGTERM)
    return nb


@pytest.mark.slow
def test_the_tutorial_runs_top_to_bottom_and_finds_each_mistake(tmp_path, monkeypatch):
    # Twice, as a learner reruns it, and from a directory that is neither the notebook's nor
    # the test's. Before: the second run stopped at the training cell ("run_name:
    # runs/tutorial already exists").
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for n in (1, 2):
        _check_outputs(_execute(work), work, n)
    assert list(elsewhere.iterdir()) == []


def _check_outputs(nb, work: Path, n: int) -> None:
    """What the ``n``-th execution in ``work`` printed and wrote."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    reports = [_texts(c) for c in code if "check_grads(" in c.source]
    assert len(reports) == 4
    # first all three, then one fewer after each fix, then agreement
    assert "inner-product, sign" in reports[0] and "off-by-one" in reports[0]
    assert "V and dh disagree: sign" in reports[0]
    assert "sign" not in reports[1] and "inner-product" in reports[1] and "off-by-one" in reports[1]
    assert "inner-product" not in reports[2] and "w disagrees: off-by-one" in reports[2]
    assert "all gradients agree" in reports[3] and "DISAGREE" not in reports[3]
    trained = next(_texts(c) for c in code if "held-out bit accuracy" in c.source)
    assert "held-out bit accuracy: (600, 1.0)" in trained
    flow = next(c for c in code if "semilogy" in c.source)
    assert any("image/png" in o.get("data", {}) for o in flow.outputs), "no gradient-flow plot"
    echo = next(_texts(c) for c in code if "train(TrainConfig" in c.source)
    assert "solved at step" in echo and "held-out accuracy 1.000" in echo
    run_dir = Path(echo.split("saved in ", 1)[1].strip())
    assert run_dir.parent == Path("runs") and len(list((work / "runs").iterdir())) == n
    summary = json.loads((work / run_dir / "summary.json").read_text())
    assert summary["solved_step"] is not None
    board = code[-1]
    html = "".join(o.get("data", {}).get("text/html", "") for o in board.outputs)
    assert "<iframe" in html, f"TensorBoard did not open inline: {board.outputs}"
    assert [p for p in _tensorboards_under(work) if _alive(p)] == [], "left running"
