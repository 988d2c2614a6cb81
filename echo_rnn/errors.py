"""The error a bad setting raises; importing it costs nothing (no torch), so the command line
can catch it from the start."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid setting. ``setting`` names it (a TrainConfig field, or an argument of the
    command line such as ``config`` or ``seeds``) and ``detail`` says what is wrong and what
    is valid. ``str()`` is "setting: detail", as a library error; the command line shows
    :meth:`for_cli`, "argument --setting: detail"."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting}: {detail}")
        self.setting, self.detail = setting, detail

    def __reduce__(self):  # crosses processes: a sweep's workers, torchrun's ranks
        return (type(self), (self.setting, self.detail))

    def for_cli(self) -> str:
        return f"argument --{self.setting.replace('_', '-')}: {self.detail}"


# The most of a value an error message shows: a crafted file can hold a list nested 200000
# deep or a million elements long, and the message must stay one short line.
SHOWN_CHARS = 80


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, computed without recursing into
    deep containers or printing huge integers: safe on any value a file can hold."""
    import reprlib

    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor or an array
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 4, 4
    r.maxstring, r.maxother, r.maxlong = limit, limit, 40
    try:
        text = r.repr(value)
    except Exception:  # a value whose repr fails: say what it is
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
