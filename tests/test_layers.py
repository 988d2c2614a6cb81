"""The package's layers, as the README's Layout section lists them: a module imports from its
own layer or the layers below, never from one above, and every module has a layer.

Imports are read from the source (ast), inside functions too: a function-level import is an
edge of the graph like any other, only a later one.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "echo_rnn"

# Lowest first. Why this order: what everything needs and that knows no math comes first;
# the kernels know only the math; the model wraps a kernel; verification checks kernels
# and models (and a learner's code) against each other; training uses a verified model
# (and verifies it as it trains); the tools run training and read what it wrote; the
# command line is the face of all of them.
LAYERS = {
    "base": [
        "__init__",
        "errors",
        "files",
        "devices",
        "data",
        "truncation",
        "config",
        "console",
        "engine.distributed",
        "engine.curriculum",
        "run.locks",
        "run.signals",
        "run.events",
        "run.tblog",
    ],
    "kernels": [
        "kernels",
        "kernels.reference",
        "kernels.bptt",
        "kernels.compiled",
        "engine.graphs",
    ],
    "model": ["model", "kernels.population", "engine.members"],
    "verify": [
        "problem",
        "compare",
        "mistakes",
        "learner",
        "sandbox",
        "layouts",
        "truncated",
        "flow",
    ],
    "train": [
        "engine",
        "engine.backends",
        "engine.witness",
        "engine.steppers",
        "engine.outcome",
        "engine.loop",
        "run.state",
        "run",
        "run.checkpoint",
        "run.rundir",
        "run.runlog",
        "engine.train",
        "engine.population_train",
    ],
    "tools": ["sweep", "progress", "tables", "bench", "predict", "grade"],
    "cli": ["cli", "__main__"],
}
RANK = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}
NAMES = list(LAYERS)


def _placed(dotted: str) -> str:
    """The layer list's name for a module by its dotted name below the package: the longest
    prefix the list names (``cli.train`` is ``cli``'s, ``engine.train`` its own)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in RANK:
            return name
    return dotted


def _top(path: Path) -> str:
    """The layer list's name for a file (``engine/train.py``: ``engine.train``; a folder's
    ``__init__.py``: the folder)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return _placed(".".join(parts))


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str, str]]:
    """(line, imported module's layer-list name, the import as written) for every import of
    the package in ``path`` (or in ``source``, as if it were that file), absolute or
    relative, at any depth."""
    package = ["echo_rnn", *path.relative_to(PACKAGE).parent.parts]
    found = []
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "echo_rnn":
                    found.append(
                        (
                            node.lineno,
                            _placed(".".join(parts[1:])) if len(parts) > 1 else "__init__",
                            f"import {alias.name}",
                        )
                    )
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            parts = base + (node.module.split(".") if node.module else [])
            if not parts or parts[0] != "echo_rnn":
                continue
            text = f"from {'.' * node.level}{node.module or ''} import " + ", ".join(
                a.name for a in node.names
            )
            for alias in node.names:  # from echo_rnn.x import y: y a module, or x's own
                where = PACKAGE.joinpath(*parts[1:], alias.name)
                is_module = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                inner = parts[1:] + [alias.name] if is_module else parts[1:]
                found.append((node.lineno, _placed(".".join(inner)) if inner else "__init__", text))
    return found


def test_every_module_has_a_layer():
    unplaced = sorted({_top(p) for p in _modules()} - set(RANK))
    assert not unplaced, (
        f"echo_rnn modules in no layer: {unplaced}; add each to LAYERS in "
        "tests/test_layers.py and to the README's Layout section"
    )


def test_the_layer_list_names_only_modules_that_exist():
    present = {_top(p) for p in _modules()}
    assert set(RANK) <= present, f"LAYERS names modules that do not exist: {set(RANK) - present}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path):
    here = _top(path)
    if here not in RANK:
        pytest.skip(f"{here} has no layer (test_every_module_has_a_layer fails for it)")
    wrong = []
    for line, imported, text in _imports(path):
        if imported not in RANK:
            wrong.append(f"{path.name}:{line}: {text} ({imported} is in no layer)")
        elif RANK[imported] > RANK[here]:
            wrong.append(
                f"{path.name}:{line}: {text} ({here} is in {NAMES[RANK[here]]}, "
                f"{imported} in {NAMES[RANK[imported]]}, above it)"
            )
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_the_checker_sees_every_form_of_import():
    # The test above is only as good as _imports: each form, at module level and inside a
    # function, must be found.
    found = {(m, t) for sub in (PACKAGE / "cli").glob("*.py") for _, m, t in _imports(sub)}
    assert ("__init__", "from echo_rnn import __version__") in found
    assert any(m == "engine.train" for m, _ in found)  # cli/train.py's imports
    assert any(m == "cli" for m, _ in found)  # the package's own modules (cli.args, ...)
    src = (
        "import echo_rnn.kernels.bptt\nfrom echo_rnn import model\n"
        "from echo_rnn.run import rundir\nfrom echo_rnn.engine.train import train\n"
        "def f():\n    from .config import TrainConfig\n"
    )
    fake = PACKAGE / "fake_for_test.py"  # read as source only; nothing is written
    assert [m for _, m, _ in _imports(fake, src)] == [
        "kernels.bptt",
        "model",
        "run.rundir",
        "engine.train",
        "config",
    ]
