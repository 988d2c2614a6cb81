"""The curriculum over the echo step: which k a run trains on now, and since which step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Curriculum:
    """With ``--curriculum`` a run trains on k = 1, 2, ... in turn and moves on once held-out
    accuracy at the current k reaches ``advance`` (or after ``patience`` steps at it);
    without, it trains on ``last`` (the run's echo step) from the start.

    ``since`` is the step at which training on the current k began: the lr schedule counts
    from reaching the last k.
    """

    last: int
    advance: float = 1.0
    patience: int | None = None
    k: int = 0
    since: int = 0

    @classmethod
    def from_config(cls, config) -> Curriculum:
        k = min(1, config.echo_step) if config.curriculum else config.echo_step
        return cls(config.echo_step, config.curriculum_advance, config.curriculum_patience, k)

    @property
    def at_last(self) -> bool:
        return self.k >= self.last

    def observe(self, step: int, accuracy_at_k: float) -> None:
        """An evaluation at ``step`` measured ``accuracy_at_k`` on the current k."""
        if self.at_last:
            return
        out_of_patience = self.patience is not None and step - self.since >= self.patience
        if accuracy_at_k >= self.advance or out_of_patience:
            self.k, self.since = self.k + 1, step

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "k_since": self.since}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k = int(state.get("k", self.k))
        self.since = int(state.get("k_since", 0))
