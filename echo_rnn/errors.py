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

    def for_cli(self) -> str:
        return f"argument --{self.setting.replace('_', '-')}: {self.detail}"
