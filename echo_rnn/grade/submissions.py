"""A class's submissions as students hand them in: a folder of ``.py`` files, of ``.ipynb``
notebooks, or of one folder per student (or one file, or one student's folder, for an
autograder that grades a submission at a time); a notebook's code cells become the Python
file that is run (:func:`notebook_source`).

Nothing here runs a student's code: the files are only listed and read."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from echo_rnn.errors import ConfigError

SUFFIXES = (".py", ".ipynb")
# A notebook larger than this is not read: a course's RNN assignment is kilobytes, with its
# outputs a few megabytes.
NOTEBOOK_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Submission:
    """One student's work: ``student``, the name every report uses (a file's stem, or the
    folder's name); ``code``, the .py or .ipynb file graded (None when the folder holds
    none, ``missing`` then says so); ``shown``, the file as the reports name it, relative to
    what was graded."""

    student: str
    code: Path | None
    shown: str
    missing: str = ""
    folder: Path | None = None  # the student's own folder, when they handed one in

    @property
    def notebook(self) -> bool:
        return self.code is not None and self.code.suffix == ".ipynb"


class NotebookError(ValueError):
    """A notebook that cannot be read: one line saying why."""


def find_submissions(root: str | Path, function: str) -> list[Submission]:
    """The submissions under ``root``, in the order of their names: each .py or .ipynb file
    in it, each folder in it (a student's; the file graded is the one that defines
    ``function``, :func:`pick`); ``root`` itself when it is one file.

    Raises:
        ConfigError("submissions", ...): no such file or folder, a file that is not .py or
            .ipynb, or a folder with no submission in it.
    """
    root = Path(root)
    if root.is_file():
        if root.suffix not in SUFFIXES:
            raise ConfigError(
                "submissions",
                f"must be a .py file, a .ipynb notebook or a folder of them, got {root}",
            )
        return [Submission(root.stem, root, root.name)]
    if not root.is_dir():
        raise ConfigError("submissions", f"no such file or folder: {root}")
    entries = sorted(
        (p for p in root.iterdir() if not p.name.startswith((".", "_"))), key=lambda p: p.name
    )
    files = [p for p in entries if p.is_file() and p.suffix in SUFFIXES]
    folders = [p for p in entries if p.is_dir()]
    if not files and not folders:
        raise ConfigError(
            "submissions", f"{root} holds no .py file, no .ipynb notebook and no folder of one"
        )
    if files and not folders and len(files) > 1 and _one_student(files, function):
        folders, files = [root], []  # one student's folder, their helpers beside the code
    stems = [p.stem for p in files]
    found = []
    for p in files:  # alice.py and alice.ipynb are two submissions, named by their files
        found.append(Submission(p.stem if stems.count(p.stem) == 1 else p.name, p, p.name))
    for folder in folders:
        code = pick(folder, function)
        name = folder.name if folder != root else root.resolve().name
        if code is None:
            found.append(
                Submission(
                    name,
                    None,
                    f"{folder.name}/",
                    f"{folder.name}/ holds no .py file and no .ipynb notebook",
                )
            )
        else:
            shown = str(code.relative_to(root)) if folder != root else code.name
            found.append(Submission(name, code, shown, folder=code.parent))
    return sorted(found, key=lambda s: s.student)


def _defines(path: Path, function: str) -> bool:
    """Whether the file's text defines ``function`` (read as text, never run)."""
    try:
        text = path.read_text(errors="replace")[:NOTEBOOK_MAX_BYTES]
    except OSError:
        return False
    f = re.escape(function)  # in a notebook's JSON a line starts after a quote
    return re.search(rf"\bdef\s+{f}\s*\(|(^|[\s\"]){f}\s*=[^=]", text, re.MULTILINE) is not None


def _one_student(files: list[Path], function: str) -> bool:
    """A folder of files where only one defines the function: one student's, not a class's."""
    return sum(_defines(p, function) for p in files) == 1


def pick(folder: Path, function: str) -> Path | None:
    """The file of a student's folder that is graded: the .py or .ipynb file (at the top of
    the folder, or one level down) that defines ``function``, the first by name when
    several do; else its only file, or the first .py."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        files = sorted(
            p
            for sub in folder.iterdir()
            if sub.is_dir() and not sub.name.startswith((".", "_"))
            for p in sub.iterdir()
            if p.is_file() and p.suffix in SUFFIXES
        )
    if not files:
        return None
    defining = [p for p in files if _defines(p, function)]
    if defining:
        return defining[0]
    py = [p for p in files if p.suffix == ".py"]
    return (py or files)[0]


def _is_magic(line: str) -> bool:
    """An IPython line that is not Python: a magic (%time), a shell line (!pip), help (x?)."""
    s = line.strip()
    return s.startswith(("%", "!")) or (
        s.endswith("?") and not s.startswith("#") and s.rstrip("?").replace(".", "").isidentifier()
    )


def notebook_source(path: Path) -> str:
    """The notebook's code cells, in order, as one Python file: a cell magic's cell (%%bash)
    and each line magic or shell line left out (a blank line in its place, so that a
    traceback's line numbers stay near the cell's).

    Raises:
        NotebookError: not a notebook (not JSON, no cells, too large).
    """
    try:
        if path.stat().st_size > NOTEBOOK_MAX_BYTES:
            raise NotebookError(f"{path.name} is larger than {NOTEBOOK_MAX_BYTES >> 20} MiB")
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        if isinstance(exc, NotebookError):
            raise
        raise NotebookError(
            f"{path.name} cannot be read as a notebook (it is not JSON: {type(exc).__name__})"
        ) from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        raise NotebookError(f"{path.name} cannot be read as a notebook (no list of cells)")
    parts = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        if text.lstrip().startswith("%%"):
            continue  # a cell magic: the whole cell is another language
        lines = ["" if _is_magic(line) else line for line in text.split("\n")]
        parts.append(f"# cell {i + 1}\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"
