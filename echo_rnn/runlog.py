"""Where a training run reports: TensorBoard (rank 0 only), one console line per
evaluation, and a progress bar on a terminal. The trainer hands it numbers; it decides
nothing about the run."""

from __future__ import annotations

import sys
from pathlib import Path
import torch
from tqdm import tqdm

from echo_rnn.tblog import FLOW_TAG, flow_rgb, heatmap_rgb, sequence_rgb, write_hparams


class _NullWriter:
    """What ranks other than 0 log to under torchrun: nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class RunLog:
    """TensorBoard events in ``run_dir``, the console and the progress bar of one run.

    Args:
        run_dir: the run's directory (TensorBoard's run).
        config: the run's TrainConfig.
        main: whether this process writes (rank 0 under torchrun).
        verbose: print a line per evaluation and show a progress bar (on a terminal).
        resumed_at: the step a resumed run continues from (None for a new run): events a
            crashed session logged after it are purged.
        wall_before: seconds earlier sessions of the run took (the console counts from 0).
    """

    def __init__(self, run_dir: Path, config, *, main: bool, verbose: bool,
                 resumed_at: int | None, wall_before: float = 0.0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.config, self.verbose, self.wall_before = config, verbose and main, wall_before
        self.run_dir = run_dir
        self.writer = (SummaryWriter(str(run_dir), purge_step=None if resumed_at is None
                                     else resumed_at + 1) if main else _NullWriter())
        self.bar = None
        self.start = resumed_at or 0

    # --- per step ---------------------------------------------------------------------

    def open_bar(self) -> None:
        self.bar = tqdm(total=self.config.steps, initial=self.start, unit="step",
                        file=sys.stderr, disable=not (self.verbose and sys.stderr.isatty()),
                        dynamic_ncols=True)

    def steps(self, rows: list[tuple[int, float, float, float]]) -> None:
        """(step, train loss, gradient norm, lr) of each step since the last call."""
        for s, loss, norm, lr in rows:
            self.writer.add_scalar("loss/train", loss, s)
            self.writer.add_scalar("grad/norm", norm, s)
            self.writer.add_scalar("lr", lr, s)
        if self.bar is not None:
            self.bar.update(len(rows))

    def progress(self, train_loss: float | None, val_accuracy: float | None) -> None:
        """The bar's figures: the latest train loss and the latest evaluation's accuracy."""
        if self.bar is not None and train_loss is not None:
            self.bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{val_accuracy or 0:.3f}")

    # --- per evaluation -----------------------------------------------------------------

    def config_text(self) -> None:
        self.writer.add_text("config", "\n".join(
            f"    {k} = {v!r}" for k, v in self.config.to_dict().items()), 0)

    def evaluation(self, step: int, metrics: dict[str, float], model: torch.nn.Module,
                   sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor], k: int,
                   train_loss: float | None, grad_norm: float | None, elapsed: float,
                   flow: torch.Tensor | None = None) -> None:
        """Everything an evaluation shows: held-out loss and accuracy, the weights (as
        histograms and pictures), one held-out sequence, the gradient flow through time
        (``flow``, ||dJ/dh_t|| for t = 1..T), the curriculum's k, and a console line."""
        c, w = self.config, self.writer
        w.add_scalar("loss/val", metrics["val_loss"], step)
        w.add_scalar("accuracy/val", metrics["val_accuracy"], step)
        for name, p in model.named_parameters():
            w.add_histogram(f"params/{name}", p, step)
            if p.grad is not None:
                w.add_histogram(f"grads/{name}", p.grad, step)
            w.add_image(f"weights/{name}", heatmap_rgb(p), step, dataformats="HWC")
        w.add_image("sequence/val0 (input, target, prediction)", sequence_rgb(*sample), step,
                    dataformats="HWC")
        if flow is not None:
            w.add_image(FLOW_TAG, flow_rgb(flow), step, dataformats="HWC")
        w.add_scalar("curriculum/k", k, step)
        if self.verbose:
            tl = "    -   " if train_loss is None else f"{train_loss:.5f}"
            gn = "   -  " if grad_norm is None else f"{grad_norm:.4f}"
            epoch = f"epoch {step // c.seq_len:>5d} | " if c.schedule == "notebook" else ""
            tqdm.write(
                f"step {step:>7d} | {epoch}train_loss {tl} | val_loss {metrics['val_loss']:.5f} | "
                f"val_acc {metrics['val_accuracy']:.4f} | grad_norm {gn} | "
                f"{self.wall_before + elapsed:7.1f}s", file=sys.stdout)
        self.progress(train_loss, metrics["val_accuracy"])

    def kernel_vs_autograd(self, step: int, diff: float) -> None:
        self.writer.add_scalar("grad/manual_vs_autograd", diff, step)

    def hparams(self, metrics: dict[str, float], step: int) -> None:
        write_hparams(self.writer, self.config.to_dict(), metrics, step, trial=self.run_dir.name)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Close the bar and the event writer; on a full disk the writer's last flush fails
        too, and that failure is already being reported."""
        if self.bar is not None:
            self.bar.close()
        try:
            self.writer.close()
        except OSError:
            pass
