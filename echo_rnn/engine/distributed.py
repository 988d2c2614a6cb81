"""Running under ``torchrun``: process-group setup and the few collectives the trainer and
the sweep need. Without torchrun's environment everything here is a no-op."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def init(device_name: str = "cpu") -> Dist:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); a no-op
    without torchrun or when already joined."""
    if dist.is_available() and dist.is_initialized():
        return current()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return Dist()
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    # DDP imports torch._dynamo on first use. Imported after the group exists, it keeps the
    # group alive past destroy_process_group (torch 2.13: the gloo worker threads survive),
    # and a worker still dropping a finished collective's tensors while the interpreter
    # shuts down aborts the process ("terminate called without an active exception").
    # Imported first, it lets shutdown() join those threads.
    importlib.import_module("torch._dynamo")
    dist.init_process_group("nccl" if cuda else "gloo")
    return current()


def current() -> Dist:
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def shutdown() -> None:
    """Leave the process group and join its threads, so that none outlives the interpreter."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean_(t: torch.Tensor) -> torch.Tensor:
    if current().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(current().world_size)
    return t


def all_reduce_max(value: float, device: torch.device) -> float:
    if not current().enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    d = current()
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size if d.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if current().enabled:
        dist.barrier()
