"""Where a training run reports: TensorBoard (rank 0 only), one console line per
evaluation, and a progress bar on a terminal. The trainer hands it numbers; it decides
nothing about the run.

What TensorBoard shows of a run ``RUN`` (the README's TensorBoard section is this list): one
TensorBoard run, ``RUN`` itself, one event file, so that a sweep of 40 runs is 40 TensorBoard
runs (its Scalars dashboard selects none by default past 40), with

- scalars ``loss/train`` (the mean over the steps since the last point), ``loss/val`` and
  ``accuracy/val`` (held-out, measured at the point), a point every ``log_every`` steps; the
  Custom Scalars dashboard overlays ``loss/train`` and ``loss/val`` in one chart (LAYOUT);
- ``training/gradient norm`` (the largest of the steps since the last point),
  ``training/kernel vs autograd (rounding units)``, ``training/lr`` and
  ``training/curriculum k`` (at every point with a learning-rate schedule, at every
  evaluation with a curriculum or without a schedule: every run has both), and at its end
  ``solved`` (1 or 0) and ``solved_step`` (the step it was solved at; unsolved, the steps it
  ran): every run has every metric, so that the HParams parallel-coordinates view, which
  leaves out a run lacking any metric it shows, draws every run;
- histograms ``weights/*`` and ``training/dJ/d*``; images ``weights/* heatmap``,
  ``held-out sequence`` and ``training/gradient flow through time``; the config as text, and
  the hparams.

The scalars' names sort so that TensorBoard's HParams view, which shows the first five
metrics it sorts, shows held-out accuracy, training and held-out loss, solved and the solved
step. Histograms and images come at most PICTURES_PER_RUN times a run (and at its first and
last evaluation): TensorBoard keeps 10 images and 500 histograms per series anyway, and at
every evaluation a 40000-step run wrote tens of megabytes of them.

Runs recorded before this layout were three TensorBoard runs (``RUN``, ``RUN/train`` and
``RUN/val``, the losses and accuracy tagged ``loss`` and ``accuracy`` there). A resume of such
a run cuts ``train/`` and ``val/`` back to its checkpoint as it cuts ``RUN``'s own file and
writes nothing more into them: their curves end where the resume starts, and go on in
``RUN`` under the new tags.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from echo_rnn.run.events import EventFile, NullEventFile, event_file_in
from echo_rnn.run.tblog import (
    FLOW_TAG,
    custom_scalars_layout,
    flow_rgb,
    heatmap_rgb,
    hparams_summaries,
    sequence_rgb,
)

# The scalars' tags; the README and --help name them, and a test reads each back.
TRAIN_LOSS, VAL_LOSS, VAL_ACCURACY = "loss/train", "loss/val", "accuracy/val"
GRAD_NORM = "training/gradient norm"
KERNEL_VS_AUTOGRAD = "training/kernel vs autograd (rounding units)"
LR, CURRICULUM_K = "training/lr", "training/curriculum k"
SOLVED, SOLVED_STEP = "solved", "solved_step"
# The Custom Scalars dashboard's charts: title -> the tags it overlays (regular expressions).
LAYOUT = {
    "loss: training and held-out": [r"^loss/(train|val)$"],
    "held-out accuracy": [r"^accuracy/val$"],
}
# Where runs recorded before one TensorBoard run per run kept their losses and accuracy.
OLD_SUBRUNS = ("train", "val")
PICTURES_PER_RUN = 20


class RunLog:
    """TensorBoard events in ``run_dir``, the console and the progress bar of one run.

    Args:
        run_dir: the run's directory.
        config: the run's TrainConfig.
        main: whether this process writes (rank 0 under torchrun).
        verbose: print a line per evaluation and show a progress bar (on a terminal).
        resumed_at: the step a resumed run continues from (None for a new run).
        event_sizes: with ``resumed_at``, the event files' sizes the checkpoint recorded
            (:meth:`sizes`): what a killed session wrote after it is cut off. None for a run
            recorded before sizes were kept: its later events are purged instead.
        wall_before: seconds earlier sessions of the run took (the console counts from 0).
    """

    def __init__(
        self,
        run_dir: Path,
        config,
        *,
        main: bool,
        verbose: bool,
        resumed_at: int | None,
        event_sizes: dict[str, int] | None = None,
        wall_before: float = 0.0,
    ) -> None:
        self.config, self.verbose, self.wall_before = config, verbose and main, wall_before
        self.run_dir = run_dir
        self.run: EventFile | NullEventFile = NullEventFile()
        if main:
            cut = None if resumed_at is None or event_sizes is None else event_sizes.get("", 0)
            self.run = EventFile(run_dir, truncate_to=cut)
            if resumed_at is not None:
                _cut_back_old_layout(run_dir, resumed_at, event_sizes)
                if event_sizes is None:
                    self.run.purge_from(resumed_at + 1)
        self.bar = None
        self.start = resumed_at or 0

    def sizes(self) -> dict[str, int]:
        """Each event file's size, everything written so far flushed: what a checkpoint
        records, so that a resume from it starts the files where it left them."""
        return {"": self.run.size()}

    # --- per step ---------------------------------------------------------------------

    def open_bar(self) -> None:
        """A progress bar on a terminal, for a run that prints (none for a sweep's members:
        a disabled bar would still format its figures at every point)."""
        if not (self.verbose and sys.stderr.isatty()):
            return
        self.bar = tqdm(
            total=self.config.steps,
            initial=self.start,
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def steps(
        self, rows: list[tuple[int, float, float, float]], held_out: dict[str, float] | None
    ) -> None:
        """(step, train loss, gradient norm, lr) of each step since the last call, written
        as one point at the last of them; with the held-out metrics measured there."""
        if not rows:
            return
        step = rows[-1][0]
        self.run.scalar(TRAIN_LOSS, sum(r[1] for r in rows) / len(rows), step)
        self.run.scalar(GRAD_NORM, max(r[2] for r in rows), step)
        if self.config.lr_halve_every:
            self.run.scalar(LR, rows[-1][3], step)
        if held_out is not None:
            self._held_out(held_out, step)
        if self.bar is not None:
            self.bar.update(len(rows))

    def _held_out(self, metrics: dict[str, float], step: int) -> None:
        self.run.scalar(VAL_LOSS, metrics["val_loss"], step)
        self.run.scalar(VAL_ACCURACY, metrics["val_accuracy"], step)

    def progress(self, train_loss: float | None, val_accuracy: float | None) -> None:
        """The bar's figures: the latest train loss and the latest evaluation's accuracy."""
        if self.bar is not None and train_loss is not None:
            self.bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{val_accuracy or 0:.3f}")

    # --- per evaluation -----------------------------------------------------------------

    def config_text(self) -> None:
        """What a run writes once, at its start: the config as text, and the Custom Scalars
        layout (TensorBoard merges the runs' layouts, the same chart once)."""
        self.run.text(
            "config", "\n".join(f"    {k} = {v!r}" for k, v in self.config.to_dict().items()), 0
        )
        self.run.summary(custom_scalars_layout(LAYOUT), 0)

    def pictures_due(self, step: int, last: bool) -> bool:
        """Histograms and images at the first evaluation, at most PICTURES_PER_RUN times
        over the run's steps, and at the last."""
        c = self.config
        every = max(1, math.ceil(c.steps // c.eval_every / PICTURES_PER_RUN))
        return last or step == 0 or (step // c.eval_every) % every == 0

    def evaluation(
        self,
        step: int,
        metrics: dict[str, float],
        model: torch.nn.Module | None,
        sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        k: int,
        train_loss: float | None,
        grad_norm: float | None,
        elapsed: float,
        flow: torch.Tensor | None = None,
        last: bool = False,
    ) -> None:
        """Everything an evaluation shows: held-out loss and accuracy; when pictures are due,
        the weights and their gradients (histograms, and the weights as pictures), one
        held-out sequence and the gradient flow through time (``flow``, ||dJ/dh_t|| for
        t = 1..T); the curriculum's k; and a console line. ``model`` and ``flow`` are read
        only when :meth:`pictures_due` (callers may pass None otherwise)."""
        c = self.config
        self._held_out(metrics, step)
        if self.pictures_due(step, last):
            for name, p in model.named_parameters():
                self.run.histogram(f"weights/{name}", p, step)
                if p.grad is not None:
                    self.run.histogram(f"training/dJ/d{name}", p.grad, step)
                # a tag belongs to one plugin in a TensorBoard run: the picture needs its own
                self.run.image(f"weights/{name} heatmap", heatmap_rgb(p), step)
            self.run.image("held-out sequence", sequence_rgb(*sample), step)
            if flow is not None:
                self.run.image(FLOW_TAG, flow_rgb(flow), step)
        # constant ones too, at every evaluation: a metric a run lacks would leave it out
        # of the HParams parallel-coordinates view
        self.run.scalar(CURRICULUM_K, k, step)
        if not c.lr_halve_every:
            self.run.scalar(LR, c.lr, step)
        if self.verbose:
            tl = "    -   " if train_loss is None else f"{train_loss:.5f}"
            gn = "   -  " if grad_norm is None else f"{grad_norm:.4f}"
            epoch = f"epoch {step // c.seq_len:>5d} | " if c.schedule == "notebook" else ""
            tqdm.write(
                f"step {step:>7d} | {epoch}train_loss {tl} | val_loss {metrics['val_loss']:.5f} | "
                f"val_acc {metrics['val_accuracy']:.4f} | grad_norm {gn} | "
                f"{self.wall_before + elapsed:7.1f}s",
                file=sys.stdout,
            )
        self.progress(train_loss, metrics["val_accuracy"])

    def kernel_vs_autograd(self, step: int, rounding_units: float) -> None:
        self.run.scalar(KERNEL_VS_AUTOGRAD, rounding_units, step)

    def finish(self, solved_step: int | None, step: int) -> None:
        """The hparams, whether the run was solved (1 or 0) and ``solved_step``: the step it
        was solved at, or for a run never solved the steps it ran (a lower bound, told apart
        by ``solved`` = 0). Every run has both: the HParams parallel-coordinates view leaves
        out a run that lacks a metric it shows."""
        for summary in hparams_summaries(self.config.to_dict()):
            self.run.summary(summary, step)
        at = step if solved_step is None else solved_step
        self.run.scalar(SOLVED, 0.0 if solved_step is None else 1.0, at)
        self.run.scalar(SOLVED_STEP, at, at)

    def flush(self) -> None:
        self.run.flush()

    def close(self) -> None:
        """Close the bar and the event files; on a full disk their last flush fails too, and
        that failure is already being reported."""
        if self.bar is not None:
            self.bar.close()
        try:
            self.run.close()
        except OSError:
            pass


def _cut_back_old_layout(
    run_dir: Path, resumed_at: int, event_sizes: dict[str, int] | None
) -> None:
    """A run recorded as three TensorBoard runs, resumed: ``train/`` and ``val/`` cut back to
    the checkpoint (to the sizes it recorded; without them, TensorBoard told to drop what
    follows it) and written no more, so that no step shows twice."""
    for name in OLD_SUBRUNS:
        directory = run_dir / name
        path = event_file_in(directory) if directory.is_dir() else None
        if path is None:
            continue
        if event_sizes is None:
            old = EventFile(directory)
            old.purge_from(resumed_at + 1)
            old.close()
        elif name in event_sizes and path.stat().st_size > event_sizes[name]:
            os.truncate(path, event_sizes[name])
