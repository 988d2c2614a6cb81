"""Installs from anything (issue 25): ``pip install .``, and the wheel and the sdist that
``python -m build`` makes, each into a fresh virtual environment, give a working ``echo-rnn``.

Before: ``[tool.setuptools] packages = ["echo_rnn"]`` left ``echo_rnn/cli/`` out of the wheel,
so every install but an editable one had an ``echo-rnn`` that could not import its entry point.

The build is isolated (``python -m build``'s default, what pip and PyPI's builders do): it gets
only what ``[build-system] requires`` names, so a build that needs anything undeclared fails
here. It needs an index for setuptools, as the fresh environments need one for the
dependencies: a machine that cannot install the package cannot test installing it. The
environments are made without ``--system-site-packages`` (which would hide a missing
dependency); torch is installed at the running interpreter's version, the one the suite tests
(a local file on the CI machines: no other build is downloaded).
"""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import echo_rnn

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]
# What a working tree may hold besides its sources: nothing of it goes into a build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "runs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    "*.so",
    "*.pyd",
    "*.pt",
)
INSTALL_TIMEOUT_S = 900  # torch alone is hundreds of MB to unpack on a busy 2-core machine
RUN_TIMEOUT_S = 300
TINY = [
    "--seq-len",
    "16",
    "--batch-size",
    "8",
    "--val-size",
    "32",
    "--eval-every",
    "10",
    "--steps",
    "20",
    "--device",
    "cpu",
]


def _packages(root: Path) -> set[str]:
    """The import names of echo_rnn's packages under ``root``, e.g. ``echo_rnn.cli``."""
    return {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "echo_rnn").rglob("__init__.py")
    }


def _extensions(root: Path) -> set[str]:
    """The modules the package compiles, as its build names them: each ``Extension("NAME",
    ...)`` of setup.py and each ``[[tool.setuptools.ext-modules]]`` of pyproject.toml. None
    is fine: then the wheel is pure Python."""
    names = set()
    if (root / "setup.py").exists():
        for node in ast.walk(ast.parse((root / "setup.py").read_text())):
            if isinstance(node, ast.Call) and "Extension" in (
                getattr(node.func, "id", None),
                getattr(node.func, "attr", None),
            ):
                names.add(
                    ast.literal_eval(
                        node.args[0]
                        if node.args
                        else next(k.value for k in node.keywords if k.arg == "name")
                    )
                )
    with open(root / "pyproject.toml", "rb") as fh:
        setuptools = tomllib.load(fh).get("tool", {}).get("setuptools", {})
    names.update(m["name"] for m in setuptools.get("ext-modules", []))
    return names


def _env(venv: Path | None = None) -> dict[str, str]:
    """A child's environment that sees only what the environment it runs in installed: no
    PYTHONPATH (the tests may run with the source tree on it), no user site-packages."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env.update(
        PYTHONNOUSERSITE="1",
        OMP_NUM_THREADS="1",
        PIP_NO_INPUT="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list, cwd: Path, env: dict, timeout: int = RUN_TIMEOUT_S):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-3000:]}"
    )
    return proc


def _sources(dest: Path) -> Path:
    """A copy of the project's sources, so that a build writes nothing into the working tree
    and sees none of its outputs (an in-place extension, an editable install's metadata)."""
    shutil.copytree(ROOT, dest, ignore=NOT_SOURCES)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The wheel and the sdist, as ``python -m build`` makes them (the wheel from the sdist)."""
    tmp = tmp_path_factory.mktemp("build")
    src = _sources(tmp / "src")
    _run(
        [sys.executable, "-m", "build", "--outdir", tmp / "dist", src],
        cwd=tmp,
        env=_env(),
        timeout=INSTALL_TIMEOUT_S,
    )
    wheels, sdists = list((tmp / "dist").glob("*.whl")), list((tmp / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list((tmp / "dist").iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "src": src}


def test_the_wheel_and_the_sdist_hold_every_package_and_source(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        in_wheel = set(whl.namelist())
    with tarfile.open(built["sdist"]) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        in_sdist = {n.removeprefix(top + "/") for n in sdist.getnames()}
    for package in _packages(ROOT):
        assert f"{package.replace('.', '/')}/__init__.py" in in_wheel, package
    sources = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "echo_rnn").rglob("*")
        if p.suffix in (".py", ".c", ".h")
    }
    assert sources <= in_sdist, sorted(sources - in_sdist)
    for module in _extensions(ROOT):  # compiled by the build: a binary in the wheel
        stem = module.replace(".", "/")
        assert any(n.startswith(stem + ".") and n.endswith((".so", ".pyd")) for n in in_wheel), (
            module,
            sorted(in_wheel),
        )


@pytest.mark.parametrize("what", ["pip install .", "wheel", "sdist"])
def test_a_fresh_environment_gets_a_working_echo_rnn(what, built, tmp_path):
    venv = tmp_path / "venv"
    try:
        _check_install(what, built, venv, tmp_path)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # a GB of torch: not kept with the tmp dirs


def _check_install(what, built, venv: Path, tmp_path: Path) -> None:
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=_env())
    env = _env(venv)
    python = venv / "bin" / "python"
    target = {
        "pip install .": _sources(tmp_path / "src") if what == "pip install ." else None,
        "wheel": built["wheel"],
        "sdist": built["sdist"],
    }[what]
    # --no-compile: no .pyc for torch's thousands of modules, half an install's CPU time (25 s
    # of user time against 11.6 s here); it hides nothing
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            f"torch=={torch.__version__}",
            target,
        ],
        cwd=tmp_path,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )

    work = tmp_path / "work"  # away from any source tree, which python would import first
    work.mkdir()
    extensions = sorted(_extensions(ROOT))
    probe = (
        "import importlib, json, echo_rnn; print(json.dumps({'package': echo_rnn.__file__, "
        f"'compiled': [importlib.import_module(m).__file__ for m in {extensions!r}]}}))"
    )
    found = json.loads(_run([python, "-c", probe], cwd=work, env=env).stdout)
    inside = [
        Path(f).resolve().is_relative_to(venv.resolve())
        for f in (found["package"], *found["compiled"])
    ]
    assert all(inside), found  # what the environment installed, not the sources
    assert all(f.endswith((".so", ".pyd")) for f in found["compiled"]), found

    echo_rnn_cmd = venv / "bin" / "echo-rnn"
    version = _run([echo_rnn_cmd, "--version"], cwd=work, env=env).stdout
    assert version.startswith(f"echo-rnn {echo_rnn.__version__} (torch "), version

    _run([echo_rnn_cmd, "train", "--logdir", "runs", "--run-name", "r", *TINY], cwd=work, env=env)
    summary = json.loads((work / "runs" / "r" / "summary.json").read_text())
    assert summary["step"] >= 10 and summary["stopped"] in ("solved", "steps"), summary

    check = _run(
        [echo_rnn_cmd, "gradcheck", "--seq-len", "8", "--hidden-size", "3"], cwd=work, env=env
    )
    assert "all gradients agree" in check.stdout, check.stdout

    # two worker processes: each imports echo_rnn afresh (spawn), from the environment
    _run(
        [
            echo_rnn_cmd,
            "sweep",
            "--logdir",
            "runs",
            "--name",
            "s",
            "--echo-steps",
            "1",
            "--hidden-sizes",
            "2",
            "--seeds",
            "0-1",
            "--workers",
            "2",
            "--population",
            "1",
            *TINY,
        ],
        cwd=work,
        env=env,
    )
    with open(work / "runs" / "s" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["seed"] for r in rows) == ["0", "1"], rows
