"""Where a training run reports: TensorBoard (rank 0 only), one console line per
evaluation, and a progress bar on a terminal. The trainer hands it numbers; it decides
nothing about the run.

What TensorBoard shows of a run ``RUN`` (the README's TensorBoard section is this list):

- ``RUN/train`` and ``RUN/val``, two TensorBoard runs, each with a ``loss`` scalar, so that
  one card overlays training and held-out loss; ``RUN/val`` also has ``accuracy``. Training
  loss is the mean over the steps since the last point, held-out loss and accuracy are
  measured at the point; points come every ``log_every`` steps.
- ``RUN``: ``training/gradient norm`` (the largest of the steps since the last point),
  ``training/kernel vs autograd (rounding units)``, ``training/lr`` (only with a learning-rate
  schedule), ``training/curriculum k`` (only with ``--curriculum``), ``solved_step`` (one point,
  solved runs only), histograms ``weights/*`` and ``training/dJ/d*``, images ``weights/* heatmap``,
  ``held-out sequence`` and ``training/gradient flow through time``, the config as text, and
  the hparams.

The scalars' names sort so that TensorBoard's HParams view, which shows the first five
metrics it sorts, shows held-out accuracy, training and held-out loss, the solved step and
the gradient norm. Histograms and images come at most PICTURES_PER_RUN times a run (and at
its first and last evaluation): TensorBoard keeps 10 images and 500 histograms per series
anyway, and at every evaluation a 40000-step run wrote tens of megabytes of them.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from echo_rnn.events import EventFile, NullEventFile
from echo_rnn.tblog import FLOW_TAG, flow_rgb, heatmap_rgb, hparams_summaries, sequence_rgb

# The TensorBoard runs of one run: its directory, and the two that overlay the loss.
SUBRUNS = ("", "train", "val")
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

    def __init__(self, run_dir: Path, config, *, main: bool, verbose: bool,
                 resumed_at: int | None, event_sizes: dict[str, int] | None = None,
                 wall_before: float = 0.0) -> None:
        self.config, self.verbose, self.wall_before = config, verbose and main, wall_before
        self.run_dir = run_dir
        self.files: dict[str, EventFile | NullEventFile] = {}
        for name in SUBRUNS:
            if not main:
                self.files[name] = NullEventFile()
                continue
            cut = None if resumed_at is None or event_sizes is None else event_sizes.get(name, 0)
            self.files[name] = EventFile(run_dir / name if name else run_dir, truncate_to=cut)
        if main and resumed_at is not None and event_sizes is None:
            for f in self.files.values():
                f.purge_from(resumed_at + 1)
        self.run, self.train, self.val = (self.files[n] for n in SUBRUNS)
        self.bar = None
        self.start = resumed_at or 0

    def sizes(self) -> dict[str, int]:
        """Each event file's size, everything written so far flushed: what a checkpoint
        records, so that a resume from it starts the files where it left them."""
        return {name: f.size() for name, f in self.files.items()}

    # --- per step ---------------------------------------------------------------------

    def open_bar(self) -> None:
        self.bar = tqdm(total=self.config.steps, initial=self.start, unit="step",
                        file=sys.stderr, disable=not (self.verbose and sys.stderr.isatty()),
                        dynamic_ncols=True)

    def steps(self, rows: list[tuple[int, float, float, float]],
              held_out: dict[str, float] | None) -> None:
        """(step, train loss, gradient norm, lr) of each step since the last call, written
        as one point at the last of them; with the held-out metrics measured there."""
        if not rows:
            return
        step = rows[-1][0]
        self.train.scalar("loss", sum(r[1] for r in rows) / len(rows), step)
        self.run.scalar("training/gradient norm", max(r[2] for r in rows), step)
        if self.config.lr_halve_every:
            self.run.scalar("training/lr", rows[-1][3], step)
        if held_out is not None:
            self._held_out(held_out, step)
        if self.bar is not None:
            self.bar.update(len(rows))

    def _held_out(self, metrics: dict[str, float], step: int) -> None:
        self.val.scalar("loss", metrics["val_loss"], step)
        self.val.scalar("accuracy", metrics["val_accuracy"], step)

    def progress(self, train_loss: float | None, val_accuracy: float | None) -> None:
        """The bar's figures: the latest train loss and the latest evaluation's accuracy."""
        if self.bar is not None and train_loss is not None:
            self.bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{val_accuracy or 0:.3f}")

    # --- per evaluation -----------------------------------------------------------------

    def config_text(self) -> None:
        self.run.text("config", "\n".join(
            f"    {k} = {v!r}" for k, v in self.config.to_dict().items()), 0)

    def pictures_due(self, step: int, last: bool) -> bool:
        """Histograms and images at the first evaluation, at most PICTURES_PER_RUN times
        over the run's steps, and at the last."""
        c = self.config
        every = max(1, math.ceil(c.steps // c.eval_every / PICTURES_PER_RUN))
        return last or step == 0 or (step // c.eval_every) % every == 0

    def evaluation(self, step: int, metrics: dict[str, float], model: torch.nn.Module | None,
                   sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor], k: int,
                   train_loss: float | None, grad_norm: float | None, elapsed: float,
                   flow: torch.Tensor | None = None, last: bool = False) -> None:
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
        if c.curriculum:
            self.run.scalar("training/curriculum k", k, step)
        if self.verbose:
            tl = "    -   " if train_loss is None else f"{train_loss:.5f}"
            gn = "   -  " if grad_norm is None else f"{grad_norm:.4f}"
            epoch = f"epoch {step // c.seq_len:>5d} | " if c.schedule == "notebook" else ""
            tqdm.write(
                f"step {step:>7d} | {epoch}train_loss {tl} | val_loss {metrics['val_loss']:.5f} | "
                f"val_acc {metrics['val_accuracy']:.4f} | grad_norm {gn} | "
                f"{self.wall_before + elapsed:7.1f}s", file=sys.stdout)
        self.progress(train_loss, metrics["val_accuracy"])

    def kernel_vs_autograd(self, step: int, rounding_units: float) -> None:
        self.run.scalar("training/kernel vs autograd (rounding units)", rounding_units, step)

    def finish(self, solved_step: int | None, step: int) -> None:
        """The hparams, and the step the run was solved at (none: the HParams view leaves
        the cell blank rather than show a sentinel)."""
        for summary in hparams_summaries(self.config.to_dict()):
            self.run.summary(summary, step)
        if solved_step is not None:
            self.run.scalar("solved_step", solved_step, solved_step)

    def flush(self) -> None:
        for f in self.files.values():
            f.flush()

    def close(self) -> None:
        """Close the bar and the event files; on a full disk their last flush fails too, and
        that failure is already being reported."""
        if self.bar is not None:
            self.bar.close()
        for f in self.files.values():
            try:
                f.close()
            except OSError:
                pass
