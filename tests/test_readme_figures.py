"""The README's figures are the engine's: its frontier command, trained here, gives the solved
step and final weights the README prints; and every figure the README cites is one that
``scripts/readme_figures.py`` makes."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from echo_rnn.kernels import compiled
from helpers import run_main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT = ROOT / "scripts" / "readme_figures.py"
FRONTIER = "echo-rnn train --preset frontier --hidden-size 6 --echo-step 6 --bias"


def readme_console(command: str) -> str:
    """The console block the README shows for ``$ command`` (what follows that line)."""
    found = re.search(
        r"```\n\$ " + re.escape(command) + r"\n(.*?)```", README.read_text(), re.DOTALL
    )
    assert found, f"README.md has no console block starting with `$ {command}`"
    return found.group(1)


def readme_frontier() -> tuple[int, str]:
    """(solved step, weights_sha256) as the README prints them for FRONTIER."""
    block = readme_console(FRONTIER)
    solved = re.search(r"^solved at step (\d+):", block, re.MULTILINE)
    digest = re.search(r"^weights sha256 ([0-9a-f]{16})$", block, re.MULTILINE)
    assert solved and digest, f"README's `$ {FRONTIER}` block lacks its solved step or hash"
    return int(solved.group(1)), digest.group(1)


@pytest.mark.slow
@pytest.mark.skipif(not compiled.AVAILABLE, reason=compiled.UNAVAILABLE_REASON or "")
def test_the_readme_frontier_command_gives_the_readme_solved_step_and_weights(tmp_path, capsys):
    step, digest = readme_frontier()
    code, out, err = run_main(*FRONTIER.split()[1:], "--logdir", tmp_path, "--json", capsys=capsys)
    assert code == 0, err
    result = json.loads(out)
    # the README's figures are the compiled kernel's: another backend would round otherwise
    assert result["backend"] == "compiled"
    summary = json.loads(Path(result["run_dir"], "summary.json").read_text())
    got = (result["solved_step"], result["weights_sha256"])
    assert got == (step, digest), f"trained {got}, README prints {(step, digest)}"
    assert (summary["solved_step"], summary["weights_sha256"]) == got


def load_script():
    spec = importlib.util.spec_from_file_location("readme_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the class is made; no trace is left behind
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_script_makes_every_figure_the_readme_cites_and_the_readme_cites_each(capsys):
    script = load_script()
    with pytest.raises(SystemExit) as done:
        script.main(["--help"])
    assert done.value.code == 0
    helped = capsys.readouterr().out
    names = [f.name for f in script.figures()]
    cited = set(re.findall(r"readme_figures\.py\s+--only\s+([\w-]+)", README.read_text()))
    assert set(names) == cited, (
        f"made but not cited: {sorted(set(names) - cited)}; "
        f"cited but not made: {sorted(cited - set(names))}"
    )
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", helped), f"--help does not name {name}"
    # the kinds of figure the README holds that training made (issue 24), each a figure
    kinds = {
        "train",
        "frontier",
        "frontier-bias",
        "frontier-no-bias",
        "variants",
        "capacity",
        "capacity10",
        "bench",
        "population",
    }
    assert kinds <= set(names), f"no figure for {sorted(kinds - set(names))}"


def test_the_script_refuses_an_unknown_figure_in_one_line(capsys):
    script = load_script()
    with pytest.raises(SystemExit) as done:
        script.main(["--only", "no-such-figure"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--only" in err and "capacity" in err
