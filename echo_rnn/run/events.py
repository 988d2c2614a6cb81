"""TensorBoard event files that stay true across resumes: one file per directory, appended
to by every session of a run and cut back to the last checkpoint when the run resumes.

Why not ``torch.utils.tensorboard.SummaryWriter``: it opens a new file per session, named
``events.out.tfevents.SECONDS.HOST.PID.N``, and TensorBoard reads a directory's files in the
order their names sort. Two sessions started in the same second by one process sort
``...PID.10`` before ``...PID.9``, and pids sort as strings, so a resumed run could be read
out of order; and the steps a killed session logged after its last checkpoint were logged
again by the resume. Here the checkpoint records how long each event file was when it was
written (:meth:`EventFile.size`), and a resume truncates the file to that length before it
appends: every step is in the file exactly once, whatever the files' names or times.

Writes are synchronous (no writer thread): an error such as a full disk is raised in the
run itself, which reports it in one line. The summaries themselves are built by torch's
``torch.utils.tensorboard.summary`` functions.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from crc32c import crc32c
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary

# Our files end with this, so that a run directory's own file is told from anything else.
SUFFIX = ".echo-rnn"


def png(rgb: np.ndarray) -> bytes:
    """An ``(height, width, 3)`` uint8 picture as a PNG file: rows unfiltered, zlib's fastest
    level. Why not PIL: its encoder tries every PNG filter on every row, 0.7 ms for a
    300 x 140 picture at its fastest level, where this takes 0.15 ms and the file is about 5%
    larger (our pictures are flat colours, which zlib compresses well unfiltered); a
    population draws five pictures a run at each of its picture evaluations. Any PNG reader
    decodes it (tested against PIL's)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # byte 0 of a row: filter None
    rows[:, 1:] = rgb.reshape(height, 3 * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``. TensorBoard's own writer computes the CRC in
    pure Python, a fifth of a millisecond for a small picture: at a population's
    evaluations that was a tenth of the run; the crc32c package does it in C."""
    x = crc32c(data)
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """``data`` framed as a TFRecord: length, its CRC, the data, its CRC (little-endian)."""
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", _masked_crc(header))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


def event_file_in(directory: Path) -> Path | None:
    """The event file this module writes in ``directory``, if there is one."""
    found = sorted(directory.glob(f"events.out.tfevents.*{SUFFIX}"))
    return found[-1] if found else None


class EventFile:
    """The one event file of ``directory`` (created with it if there is none).

    Args:
        directory: a TensorBoard run: the run directory (a run recorded by an earlier
            version also had ``train``/``val``).
        truncate_to: a resume: the file's size when the checkpoint was written; what a killed
            session wrote after that is cut off before anything is appended.
        fresh: replace whatever event files the directory holds (a sweep's heatmap, redrawn
            on every run of the sweep, replaces the previous one instead of stacking).
    """

    def __init__(
        self, directory: Path, *, truncate_to: int | None = None, fresh: bool = False
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            for old in directory.glob("events.out.tfevents.*"):
                old.unlink()
        path = event_file_in(directory)
        new = path is None
        if new:
            path = directory / (
                f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}{SUFFIX}"
            )
        elif truncate_to is not None and path.stat().st_size > truncate_to:
            os.truncate(path, truncate_to)
        self.path = path
        self._fh = open(path, "ab")
        if new:
            self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def size(self) -> int:
        """Bytes written so far, all of them on their way to disk (flushed)."""
        self._fh.flush()
        return self._fh.tell()

    def _write(self, event: Event) -> None:
        self._fh.write(record(event.SerializeToString()))

    def summary(self, summary: Summary, step: int) -> None:
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.summary(Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]), step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An ``(height, width, 3)`` uint8 picture, stored as PNG (:func:`png`)."""
        height, width = rgb.shape[:2]
        picture = Summary.Image(
            height=height, width=width, colorspace=3, encoded_image_string=png(rgb)
        )
        self.summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        from torch.utils.tensorboard.summary import histogram

        # 30 equal bins: TensorBoard redraws them into its own; its exponential defaults are
        # 1500 edges, most of them empty at these sizes
        values = values.detach().cpu().numpy().astype(float)
        try:
            summary = histogram(tag, values, 30)
        except ValueError:  # too close together for 30 bins at their size (one weight of 1e30)
            lo, hi = np.nextafter(values.min(), -np.inf), np.nextafter(values.max(), np.inf)
            summary = histogram(tag, values, np.array([lo, hi]))
        self.summary(summary, step)

    def text(self, tag: str, text: str, step: int) -> None:
        from torch.utils.tensorboard.summary import text as text_summary

        self.summary(text_summary(tag, text), step)

    def purge_from(self, step: int) -> None:
        """Tell TensorBoard to drop the events at ``step`` and after that it read before
        this one: for a run recorded before event files were cut back on resume, whose
        older files may hold steps after its last checkpoint."""
        self._write(
            Event(wall_time=time.time(), step=step, session_log=SessionLog(status=SessionLog.START))
        )

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class NullEventFile:
    """What ranks other than 0 write under torchrun: nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: 0
