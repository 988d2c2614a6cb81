r"""Running a learner's function where it cannot touch the verdict: ``echo-rnn gradcheck
--grads PATH.py:FUNCTION`` imports the file and calls the function in a child process of its
own, and only plain float64 arrays come back.

Whatever the learner's code does (trains at import, loops, sleeps, calls ``sys.exit`` or
``os._exit``, crashes the interpreter, raises ``KeyboardInterrupt``, starts threads or
processes, changes directory, prints "all gradients agree", returns tensors that have no
values), the parent:

- waits at most ``timeout`` seconds, then kills the child's whole process group (its threads
  and the processes it started die with it);
- reads back only what the child wrote into a private directory: a JSON status (what
  happened, and at which stage: import, call or return) and an ``.npz`` of float64 arrays,
  loaded with ``allow_pickle=False`` and bounded in size before it is read; the arrays' keys,
  shapes and values are checked again by :func:`echo_rnn.learner.check_return`;
- keeps what the code printed (stdout and stderr, both captured from the child) apart from
  its own output, to show it labelled, line by line.

The verdict is computed in the parent, from the arrays, against autograd's gradients computed
there: nothing the child does can write it.

The conversion of what the function returned (:func:`to_array`) is shared with the in-process
:func:`echo_rnn.learner.check_grads`; it reads a value's type and shape before it touches its
numbers, so a meta, sparse, quantized or nested tensor, or a 10^6 x 10^6 broadcast view, is
described instead of materialised. This module imports numpy, not torch (the child imports
torch only when ``arrays="torch"`` or the learner's code did).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# np.load reads each array's header with ast.literal_eval, and CPython 3.11's AST
# constructor is not safe across threads ("AST constructor recursion depth mismatch", seen
# with `grade --workers 2` reading two children's results at once): one reader at a time.
_AST_LOCK = threading.Lock()

# The default --timeout: generous for a numpy loop over the largest problem --grads allows in
# reasonable time, short enough that a script training at import is stopped soon.
DEFAULT_TIMEOUT = 60.0
# The learner's process may map this much address space (RLIMIT_AS): a runaway allocation
# is a MemoryError in their code, not the machine's out-of-memory killer. torch alone maps
# about 1.5 GiB when it is imported; 8 GiB leaves the largest problem --grads checks room.
DEFAULT_MEMORY = 8 << 30
# What the learner's code printed is kept up to this many characters, its start and its end.
OUTPUT_KEPT = 4000
# The status the child writes is a few kilobytes; nothing larger is read.
STATUS_MAX_BYTES = 1 << 20
MAIN_ADVICE = (
    'put the script part of the file under `if __name__ == "__main__":`, so that '
    "importing it only defines the function"
)


@dataclass(frozen=True)
class Opaque:
    """A returned value not brought back as numbers: what it is, for the message, and its
    shape when it has one that cannot be right (so that it is not materialised)."""

    what: str
    shape: tuple[int, ...] | None = None


class LearnerFailed(Exception):
    """The learner's code did not return: it raised, exited, crashed or ran out of time.
    ``kind`` is one of "raised", "exited", "crashed", "timeout", "unreadable"; ``line`` is
    the one line that says so; ``traceback`` their traceback (text, their frames only) or "";
    ``output`` what their code printed."""

    def __init__(
        self, kind: str, line: str, traceback_text: str = "", output: str = "", error: str = ""
    ) -> None:
        super().__init__(line)
        self.kind, self.line, self.traceback, self.output = kind, line, traceback_text, output
        self.error = error  # "TypeName: message" when it raised


@dataclass
class ChildResult:
    """What came back from a function that returned: {key: float64 array or Opaque}, or
    ``not_mapping`` (the type it returned instead of a dict); the dtype each array had; and
    what the code printed."""

    values: dict[str, Any] | None
    not_mapping: str | None
    dtypes: dict[str, str] = field(default_factory=dict)
    output: str = ""
    layout: Any = None  # the learner's echo_rnn.layouts.Layout, when an adapter gave one


# --- what the function returned, as numbers ------------------------------------------


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_array(value: Any, expected: tuple[int, ...]) -> tuple[np.ndarray | Opaque, str]:
    """(value as a float64 numpy array, or an :class:`Opaque` saying why not; its dtype's
    name). A value whose number of elements is neither the expected shape's nor 1 comes back
    as ``Opaque(shape=...)`` without being read: the caller reports the shape."""
    try:
        return _to_array(value, expected)
    except Exception as exc:  # a value that breaks while it is read: described, not raised
        return Opaque(
            f"{type(value).__name__} that cannot be read as numbers ({type(exc).__name__})"
        ), ""


def _to_array(value: Any, expected: tuple[int, ...]) -> tuple[np.ndarray | Opaque, str]:
    allowed = {1, _numel(expected)}
    if _torch_tensor(value):
        import torch

        if value.is_nested:
            return Opaque(
                "a nested tensor (one list of tensors of different shapes); return a plain tensor"
            ), ""
        if value.layout != torch.strided:
            return Opaque(f"a sparse tensor ({value.layout}); return it dense, .to_dense()"), ""
        if value.is_quantized:
            return Opaque(f"a quantized tensor ({value.dtype}); return .dequantize()"), ""
        if value.is_meta:
            return Opaque("a meta tensor, which has a shape but no values"), ""
        if value.is_complex() or value.dtype == torch.bool:
            return Opaque(f"a tensor of {value.dtype}"), ""
        shape = tuple(int(n) for n in value.shape)
        if _numel(shape) not in allowed:
            return Opaque("a tensor", shape), ""
        dtype = str(value.dtype).removeprefix("torch.")
        t = value.detach().to("cpu", torch.float64)
        return np.array(t.numpy(), dtype=np.float64, copy=True).reshape(shape), dtype
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return Opaque(type(value).__name__), ""
    if isinstance(value, (int, float)):
        return np.array(float(value), dtype=np.float64), "float64"
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind not in "fiu":
            return Opaque(f"an array of {value.dtype}"), ""
        shape = tuple(int(n) for n in np.shape(value))
        if _numel(shape) not in allowed:
            return Opaque("an array", shape), ""
        return np.array(value, dtype=np.float64, copy=True).reshape(shape), value.dtype.name
    hint = " (wrap it in np.array)" if isinstance(value, (list, tuple)) else ""
    return Opaque(f"{type(value).__name__}{hint}"), ""


# --- the child ------------------------------------------------------------------------


def _stage(workdir: Path, stage: str) -> None:
    (workdir / "stage").write_text(stage)


def _their_traceback(exc: BaseException) -> str:
    """The traceback of their exception, without this module's frames nor importlib's."""
    here = str(Path(__file__).resolve())
    adapters = str(Path(__file__).resolve().with_name("layouts.py"))  # echo_rnn.layouts
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename not in (here, adapters) and not f.filename.startswith("<frozen")
    ]
    lines = (
        ["Traceback (most recent call last):\n"] + traceback.format_list(frames) if frames else []
    )
    try:
        lines += traceback.format_exception_only(type(exc), exc)
    except BaseException:  # noqa: BLE001 - their __str__ may raise anything
        lines.append(f"{type(exc).__name__}: (its message cannot be shown)\n")
    return "".join(lines)


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001
        text = "(its message cannot be shown)"
    return text[:500]


def _write_status(workdir: Path, status: dict[str, Any]) -> None:
    tmp = workdir / "status.json.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, workdir / "status.json")


def no_function(shown: str, module, name: str, module_name: str) -> str:
    """What to say when the learner's file ``shown`` (its ``module``, imported as
    ``module_name``) has no function ``name``: what ``name`` is instead, and the functions
    the file defines."""
    fn = getattr(module, name, None)
    defined = sorted(
        k
        for k, v in vars(module).items()
        if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module_name
    )
    listing = f" (it defines: {', '.join(defined)})" if defined else ""
    what = (
        f"{name!r} is not a function but {type(fn).__name__}"
        if fn is not None
        else f"defines no function {name!r}"
    )
    return f"{shown} {what}{listing}"


def _child(workdir: Path) -> None:
    """Import the learner's file, call its function on the problem, write what it returned
    as float64 arrays and a status; then end at once, whatever threads it left running."""
    request = json.loads((workdir / "request.json").read_text())
    if request.get("memory"):  # before anything of theirs runs: a MemoryError, not the OOM killer
        import resource

        limit = int(request["memory"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    path, name = Path(request["path"]), request["function"]
    with np.load(workdir / "problem.npz", allow_pickle=False) as data:
        kwargs = {k: data[k] for k in data.files}
    if request["arrays"] == "torch":
        import torch

        kwargs = {k: torch.from_numpy(v) for k, v in kwargs.items()}
    expected = {k: tuple(v) for k, v in request["shapes"].items()}

    import importlib.util

    _stage(workdir, "import")
    # the file may import its neighbours, as it would when run as a script (a notebook's
    # code, written out elsewhere, the notebook's)
    sys.path.insert(0, request.get("search_dir") or str(path.parent))
    stem = path.stem if path.stem.isidentifier() else "learner"
    try:
        spec = importlib.util.spec_from_file_location(stem, path)
        if spec is None or spec.loader is None:
            _write_status(
                workdir,
                {
                    "kind": "no-function",
                    "text": f"cannot load {request['shown']} as Python (is it a .py file?)",
                },
            )
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[stem] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - their code, whatever it raised
        _write_status(
            workdir,
            {
                "kind": "raised",
                "stage": "import",
                "type": type(exc).__name__,
                "message": _message(exc),
                "traceback": _their_traceback(exc),
                "code": _exit_code(exc),
            },
        )
        return
    fn = getattr(module, name, None)
    if not callable(fn):
        _write_status(
            workdir,
            {"kind": "no-function", "text": no_function(request["shown"], module, name, stem)},
        )
        return
    if request.get("adapter") is not None:  # the layout a teacher gave for the whole class
        from echo_rnn.layouts import adapter

        fn = adapter(fn, request["adapter"])
    _stage(workdir, "call")
    try:
        out = fn(**kwargs)
    except BaseException as exc:  # noqa: BLE001
        _write_status(
            workdir,
            {
                "kind": "raised",
                "stage": "call",
                "type": type(exc).__name__,
                "message": _message(exc),
                "traceback": _their_traceback(exc),
                "code": _exit_code(exc),
            },
        )
        return
    _stage(workdir, "return")
    status: dict[str, Any] = {"kind": "returned", "keys": {}, "dtypes": {}}
    try:
        layout = getattr(fn, "echo_rnn_layout", None)
        if type(layout).__module__ == "echo_rnn.layouts":
            status["layout"] = layout.to_json()
    except BaseException:  # noqa: BLE001 - their object; no layout then
        pass
    arrays: dict[str, np.ndarray] = {}
    if not isinstance(out, Mapping):
        status["not_mapping"] = type(out).__name__
    else:
        for i, key in enumerate(list(out.keys())[:50]):
            shown = key if type(key) is str else repr(key)[:40]
            if type(key) is not str or key not in expected:
                status["keys"][shown] = {"unexpected": True}
                continue
            value, dtype = to_array(out[key], expected[key])
            if isinstance(value, Opaque):
                status["keys"][key] = {
                    "what": value.what,
                    "shape": list(value.shape) if value.shape else None,
                }
            else:
                arrays[f"a{i}"] = value
                status["keys"][key] = {"array": f"a{i}"}
                status["dtypes"][key] = dtype
    with open(workdir / "result.npz", "wb") as fh:
        np.savez(fh, **arrays)
    _write_status(workdir, status)


def _exit_code(exc: BaseException) -> Any:
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if code is None or isinstance(code, int) else repr(code)[:100]
    return None


def _child_main(workdir: str) -> None:
    try:
        _child(Path(workdir))
    except BaseException as exc:  # noqa: BLE001 - the parent reads "no status"
        try:
            sys.__stderr__.write(f"echo-rnn's runner failed: {type(exc).__name__}: {exc}\n")
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(0)  # neither their threads nor their atexit handlers hold the verdict up


# --- the parent -----------------------------------------------------------------------


class _Output:
    """What the child prints, read on a thread: its first and last OUTPUT_KEPT characters."""

    def __init__(self, stream) -> None:
        self.head, self.tail, self.total = bytearray(), bytearray(), 0
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        try:
            while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
                self.total += len(chunk)
                room = OUTPUT_KEPT - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                self.tail = (self.tail + chunk)[-OUTPUT_KEPT:]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        self.thread.join(timeout=2.0)
        head = bytes(self.head).decode("utf-8", "replace")
        tail = bytes(self.tail).decode("utf-8", "replace")
        if self.total > len(self.head) + len(self.tail):
            skipped = self.total - len(self.head) - len(self.tail)
            return f"{head}\n[... {skipped} bytes not shown ...]\n{tail}"
        return head + tail


def show_output(text: str, who: str) -> str:
    """What the learner's code printed, as lines of our own: a heading, then each line
    behind ``  | ``, control characters shown as escapes (so that nothing it printed can
    pass for the command's own output, nor move the cursor over it)."""
    if not text.strip():
        return ""
    lines = []
    for line in text.rstrip("\n").split("\n"):
        safe = "".join(
            c
            if (c >= " " and c != "\x7f" and not "\x80" <= c <= "\x9f") or c == "\t"
            else c.encode("unicode_escape").decode("ascii")
            for c in line
        )
        lines.append(f"  | {safe}")
    return f"what {who} printed while it ran (not part of the check):\n" + "\n".join(lines)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(returncode: int) -> str:
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"signal {-returncode}"
    meaning = {
        signal.SIGSEGV: "segmentation fault",
        signal.SIGABRT: "abort",
        signal.SIGBUS: "bus error",
        signal.SIGFPE: "arithmetic error",
        signal.SIGKILL: "killed, perhaps for memory",
        signal.SIGILL: "illegal instruction",
    }.get(sig)
    return f"{sig.name} ({meaning})" if meaning else sig.name


def _read_status(workdir: Path) -> dict[str, Any] | None:
    path = workdir / "status.json"
    try:
        if path.stat().st_size > STATUS_MAX_BYTES:
            return None
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def run_in_child(
    path_text: str,
    function: str,
    kwargs: dict[str, np.ndarray],
    shapes: dict[str, tuple[int, ...]],
    arrays: str = "numpy",
    timeout: float = DEFAULT_TIMEOUT,
    memory: int | None = None,
    *,
    adapter: dict[str, Any] | None = None,
    search_dir: str | None = None,
    shown: str | None = None,
    stop: threading.Event | None = None,
) -> ChildResult:
    """Call ``function`` of the file ``path_text`` (as the user typed it) with ``kwargs`` in
    a child process and bring back what it returned (see the module docstring); ``shapes``
    is the expected shape of every key it may return; ``memory`` the child's address space
    in bytes (RLIMIT_AS; default :data:`DEFAULT_MEMORY`, 0 for no limit). ``adapter``: the
    options of a layout adapter (:func:`echo_rnn.layouts.adapter`) the child wraps the
    function in; ``search_dir``: where its imports are looked for (the file's folder by
    default); ``shown``: the file's name in messages (its own by default); ``stop``: when set
    (from another thread), the child is killed as if its time had run out.

    Raises:
        ConfigError("grads", ...): the file defines no such function (exit 2).
        LearnerFailed: it raised, exited, crashed, ran past ``timeout`` or wrote nothing that
            can be read.
    """
    from echo_rnn.errors import ConfigError

    path = Path(path_text)
    named = shown or path_text  # what the messages call the file
    shown = shown or path.name
    where = f"{shown}:{function}"
    with tempfile.TemporaryDirectory(prefix="echo-rnn-grads-") as tmp:
        workdir = Path(tmp)
        np.savez(workdir / "problem.npz", **kwargs)
        (workdir / "request.json").write_text(
            json.dumps(
                {
                    "path": str(path.resolve()),
                    "function": function,
                    "shown": named,
                    "arrays": arrays,
                    "shapes": {k: list(v) for k, v in shapes.items()},
                    "adapter": adapter,
                    "search_dir": search_dir,
                    "memory": DEFAULT_MEMORY if memory is None else int(memory),
                }
            )
        )
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "echo_rnn.sandbox", str(workdir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        output = _Output(proc.stdout)
        timed_out = False
        try:
            if stop is None:
                proc.wait(timeout=timeout)
            else:  # a caller on another thread may end it early (grade's Ctrl-C)
                while proc.poll() is None and not stop.is_set():
                    if time.monotonic() - start > timeout:
                        raise subprocess.TimeoutExpired(proc.args, timeout)
                    stop.wait(0.05)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # whatever happened here (Ctrl-C too), nothing of theirs outlives the call
            _kill_group(proc)
            proc.wait()
            printed = output.text()
            proc.stdout.close()
        elapsed = time.monotonic() - start
        status = None if timed_out else _read_status(workdir)
        try:
            stage = (workdir / "stage").read_text()[:20]
        except OSError:
            stage = ""
        if status is None:
            raise _no_status(
                where, shown, stage, timed_out, timeout, elapsed, proc.returncode, printed
            )
        kind = status.get("kind")
        if kind == "no-function":
            raise ConfigError("grads", str(status.get("text", ""))[:1000])
        if kind == "raised":
            raise _raised(status, where, shown, printed)
        if kind != "returned":
            raise LearnerFailed(
                "unreadable", f"{where}: what its process wrote back cannot be read", output=printed
            )
        return _returned(status, workdir, shapes, where, printed)


def _no_status(
    where: str,
    shown: str,
    stage: str,
    timed_out: bool,
    timeout: float,
    elapsed: float,
    returncode: int,
    printed: str,
) -> LearnerFailed:
    at_import = stage in ("", "import")
    who = shown if at_import else where
    if timed_out:
        if at_import:
            return LearnerFailed(
                "timeout",
                f"{shown} was still being imported after "
                f"{timeout:g} s (--timeout) and was stopped: does it train or "
                f"run a script at import? {MAIN_ADVICE}",
                output=printed,
            )
        return LearnerFailed(
            "timeout",
            f"{where} did not return within {timeout:g} s "
            "(--timeout) and was stopped: does it loop forever, or wait? "
            "A larger --timeout gives a slow function more time",
            output=printed,
        )
    if returncode is not None and returncode < 0:
        what = f"crashed with {_signal_name(returncode)}"
        line = f"{shown} {what} at import" if at_import else f"{where} {what} before it returned"
        return LearnerFailed(
            "crashed", f"{line}: its process died, no gradients came back", output=printed
        )
    if stage == "return":
        return LearnerFailed(
            "unreadable",
            f"{where} returned, but what it returned could not be brought back as arrays",
            output=printed,
        )
    line = (
        f"{who} ended its process with exit status {returncode} "
        f"{'at import' if at_import else 'instead of returning its gradients'} "
        "(os._exit?)"
    )
    if at_import:
        line += f": {MAIN_ADVICE}"
    return LearnerFailed("exited", line, output=printed)


def _raised(status: dict[str, Any], where: str, shown: str, printed: str) -> LearnerFailed:
    at_import = status.get("stage") == "import"
    kind, name = "raised", str(status.get("type", "an exception"))[:100]
    message = str(status.get("message", ""))[:500]
    tb = str(status.get("traceback", ""))[:20000]
    who = shown if at_import else where
    if name == "SystemExit":
        code = status.get("code")
        line = (
            f"{who} called sys.exit({'' if code is None else code}) "
            f"{'at import' if at_import else 'instead of returning its gradients'}"
        )
        if at_import:
            line += f": {MAIN_ADVICE}"
        return LearnerFailed("exited", line, output=printed, error=f"SystemExit: {message}")
    line = (
        f"{who} raised {name}{' at import' if at_import else ''} (the traceback above is "
        "your code's)"
    )
    if at_import and name not in ("SyntaxError", "IndentationError", "TabError"):
        line += f"; if it runs a script at import, {MAIN_ADVICE}"
    if name == "MemoryError":
        line += (
            "; it ran out of the memory its process may use (--memory, default "
            f"{DEFAULT_MEMORY >> 30} GiB)"
        )
    return LearnerFailed(kind, line, tb, printed, error=f"{name}: {message}")


def _returned(
    status: dict[str, Any],
    workdir: Path,
    shapes: dict[str, tuple[int, ...]],
    where: str,
    printed: str,
) -> ChildResult:
    if status.get("not_mapping") is not None:
        return ChildResult(None, str(status["not_mapping"])[:100], output=printed)
    bound = 4096 + sum(8 * _numel(s) + 512 for s in shapes.values())
    result = workdir / "result.npz"
    try:
        if result.stat().st_size > bound:
            raise ValueError("too large")
        values: dict[str, Any] = {}
        keys = status.get("keys", {})
        with _AST_LOCK, np.load(result, allow_pickle=False) as data:
            for key, record in list(keys.items())[:50]:
                if not isinstance(record, dict):
                    raise ValueError("bad record")
                if "array" in record:
                    a = data[str(record["array"])]
                    if (
                        a.dtype != np.float64
                        or key not in shapes
                        or a.size not in (1, _numel(shapes[key]))
                    ):
                        raise ValueError("bad array")
                    values[key] = a
                elif record.get("unexpected"):
                    values[str(key)[:60]] = Opaque("unexpected")
                else:
                    shape = record.get("shape")
                    values[key] = Opaque(
                        str(record.get("what", "?"))[:200],
                        tuple(int(n) for n in shape) if shape else None,
                    )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LearnerFailed(
            "unreadable",
            f"{where}: what its process wrote back cannot be read ({type(exc).__name__})",
            output=printed,
        ) from None
    dtypes = {str(k): str(v)[:20] for k, v in dict(status.get("dtypes", {})).items()}
    layout = None
    if "layout" in status:
        from echo_rnn.layouts import Layout

        try:
            layout = Layout.from_json(status["layout"])
        except ValueError as exc:
            raise LearnerFailed(
                "unreadable", f"{where}: its layout cannot be read ({exc})", output=printed
            ) from None
    return ChildResult(values, None, dtypes, printed, layout)


if __name__ == "__main__":
    _child_main(sys.argv[1])
