"""CUDA graphs: one capture for every step that replays, training's and the benchmark's.

A captured graph replays a whole step (forward, loss, backward, and in training the update)
in one launch; its inputs and outputs are fixed buffers that the caller fills and reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from echo_rnn.kernels.bptt import workspace_buffers


@dataclass
class Captured:
    """A step recorded as a CUDA graph. ``out`` is what the step returned while it was
    captured: each replay writes its new values into those same tensors."""

    graph: torch.cuda.CUDAGraph
    out: Any
    # The fast kernel's backward workspace, which the graph writes into on every replay: held
    # here so that it is never freed while the graph lives (None when no backward used it).
    keepalive: tuple | None

    def replay(self) -> Any:
        self.graph.replay()
        return self.out


def capture(
    step: Callable[[], Any],
    *,
    device: torch.device | None = None,
    warmup: int = 3,
    after_warmup: Callable[[], None] | None = None,
) -> Captured:
    """Run ``step`` ``warmup`` times on a side stream (CUDA graphs need their allocations
    made outside the capture), call ``after_warmup`` (to undo what the warm-up changed), then
    record one ``step`` as a graph."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    if after_warmup is not None:
        after_warmup()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return Captured(graph, out, workspace_buffers())
