"""How a run ends: its result (:class:`TrainResult`, also its ``summary.json``), and the
ways it stops before its steps are done (a signal, a loss that became non-finite)."""

from __future__ import annotations

import json
import shlex
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from echo_rnn.config import TrainConfig
from echo_rnn.run.checkpoint import checkpoint_path
from echo_rnn.run.runlog import RunLog


@dataclass
class TrainResult:
    run_dir: str
    step: int
    train_loss: float | None
    val_loss: float
    val_accuracy: float
    solved_step: int | None
    wall_time_s: float
    device: str
    backend: str
    stopped: str  # "solved", "steps" or "diverged"
    # the final weights' fingerprint (echo_rnn.model.weights_digest): the same run gives
    # the same one on any machine with the compiled kernel
    weights_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self, config: TrainConfig) -> str:
        """The lines after the run: its verdict, where it is saved, how to view it."""

        def at(step: int) -> str:  # the notebook's schedule counts epochs of seq_len updates
            if config.schedule == "notebook":
                return f"step {step} (epoch {step // config.seq_len})"
            return f"step {step}"

        if self.solved_step is not None:
            verdict = f"solved at {at(self.solved_step)}"
        else:
            verdict = f"not solved after {self.step} steps" + (
                f" ({self.step // config.seq_len} epochs)" if config.schedule == "notebook" else ""
            )
        # the run's own parent, not config.logdir: a resumed run may have been moved since
        view = shlex.quote(str(Path(self.run_dir).parent))
        return (
            f"{verdict}: val_acc {self.val_accuracy:.4f}, val_loss {self.val_loss:.5f}, "
            f"{self.wall_time_s:.1f}s on {self.device} with the {self.backend} backend\n"
            f"weights sha256 {self.weights_sha256}\n"
            f"run saved in {self.run_dir}\n"
            f"view it: tensorboard --logdir {view}"
        )


def write_outcome(result: TrainResult, log: RunLog) -> None:
    """summary.json and the hparams of a run that ended (train's or a population member's)."""
    (Path(result.run_dir) / "summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    log.finish(result.solved_step, result.step)
    log.flush()


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the step finished and a checkpoint was written."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step}; checkpoint saved in {run_dir}"
            if step >= 0
            else f"stopped by {name} before the run started; nothing was written"
        )

    def __reduce__(self):  # crosses process boundaries in a sweep's worker pool
        return (type(self), (self.signum, self.step, self.run_dir))


def diverged_message(config: TrainConfig, run_dir: Path, step: int, what: float | str) -> str:
    """The one line for a run that diverged at ``step``: what became non-finite, what is kept,
    and which settings to try."""
    c = config
    ckpt = checkpoint_path(run_dir)
    remedy = f"lower --lr (now {c.lr:g})"
    remedy += (
        " or add --grad-clip 1.0"
        if c.grad_clip is None
        else f" or --grad-clip (now {c.grad_clip:g})"
    )
    if c.init_std > 1 or (c.input_init_std or 0) > 1:
        remedy += " or a smaller --init-std / --input-init-std"
    saved = (
        f"the last good checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint was saved yet"
    )
    what = f"loss became {what}" if isinstance(what, float) else f"{what}"
    return f"{what} at step {step}; stopped, {saved}; try {remedy}"
