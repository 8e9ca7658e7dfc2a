"""Where models run, and each DDP rank's share of an evaluation.

`resolve_device` turns a device name (a user's `--device`, or the trainer's `accelerator`)
into a torch device. Under DDP every rank scores its `shard` of the lists and `gather`
brings the parts back together in their original order, so N devices score N times faster
and every rank ends with exactly what one process would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import distributed as dist

T = TypeVar("T")
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(name: str | torch.device) -> torch.device:
    """The device `name` means: "cpu"; "cuda" or "gpu" (Lightning's accelerator names) =
    this process's current CUDA device, which Lightning's DDP sets to the rank's own
    (cuda:<local_rank>); "cuda:N"; "auto" = CUDA where available, else the CPU."""
    if isinstance(name, torch.device):
        return name
    wanted = {"auto": "cuda" if torch.cuda.is_available() else "cpu", "gpu": "cuda"}.get(name, name)
    try:
        device = torch.device(wanted)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(f"device {name!r}: expected cpu, cuda, cuda:N, gpu, mps or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available here (use cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def world() -> tuple[int, int]:
    """(rank, number of ranks) in torch.distributed's default group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int | None = None, size: int | None = None) -> list[T]:
    """This rank's share of `items`: every size-th one from its rank on (round robin, so
    the shares differ by at most one item)."""
    if rank is None or size is None:
        rank, size = world()
    return list(items[rank::size])


def merge(parts: Sequence[Sequence[T]]) -> list[T]:
    """The inverse of `shard`: every rank's part, in rank order -> the items in their
    original order."""
    whole: list = [None] * sum(len(part) for part in parts)
    for rank, part in enumerate(parts):
        whole[rank :: len(parts)] = part
    return whole


def gather(part: Sequence[T]) -> list[T]:
    """Every rank's `shard` of a list, whole again and in order, on every rank. Collective:
    every rank of the group must call it, in the same order as the others."""
    _, size = world()
    if size == 1:
        return list(part)
    parts: list = [None] * size
    dist.all_gather_object(parts, list(part))
    return merge(parts)
