"""torch.distributed plumbing: start from ``torchrun``'s environment, shard the data,
average metrics. On CPU the process group uses the gloo backend; on CUDA, NCCL."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_reduce_mean", "init_distributed", "shard_indices"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False  # whether this process created the group (and tears it down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def init_distributed(mode: str | bool, device_type: str) -> DistInfo:
    """Join (or start) the process group.

    ``mode``: ``"auto"`` uses torch.distributed when a group is already initialised or
    ``torchrun`` set ``WORLD_SIZE > 1``; ``True`` requires it; ``False`` never uses it.
    The backend is NCCL for CUDA devices and gloo otherwise."""
    if mode not in ("auto", True, False):
        raise ValueError(f"distributed must be 'auto', True or False, got {mode!r}")
    if mode is False:
        return DistInfo()
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        _env_int("LOCAL_RANK", dist.get_rank()))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        if mode is True:
            raise ValueError("distributed=True but no process group: launch with torchrun "
                             "(WORLD_SIZE > 1) or call torch.distributed.init_process_group")
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed support")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0),
                    started_here=True)


def shard_indices(global_batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices (equal shares)."""
    if not info.enabled:
        return global_batch
    per = global_batch.shape[0] // info.world_size
    return global_batch[info.rank * per: (info.rank + 1) * per]


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``value`` over the ranks (identity without a process group)."""
    if not info.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size
