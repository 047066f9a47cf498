"""torch.distributed plumbing: start from ``torchrun``'s environment, shard the data,
average metrics. On CPU the process group uses the gloo backend; on CUDA, NCCL."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_gather_tensor", "all_reduce_mean", "all_reduce_sum",
           "broadcast_from_main", "close_distributed", "init_distributed", "shard_indices",
           "shard_range"]


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
    # torch warns when a process exits with its group alive; a script that never calls
    # Trainer.close() still ends cleanly.
    atexit.register(_destroy_if_initialized)
    return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0),
                    started_here=True)


def _destroy_if_initialized() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def close_distributed(info: DistInfo) -> None:
    """Tear the process group down if ``info`` says this process created it (a group the
    caller set up is left for the caller to close). The ranks meet at a barrier first, so
    that none tears its connections down while another still uses them."""
    if info.started_here and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_indices(global_batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices (equal shares)."""
    if not info.enabled:
        return global_batch
    per = global_batch.shape[0] // info.world_size
    return global_batch[info.rank * per: (info.rank + 1) * per]


def shard_range(n: int, info: DistInfo) -> range:
    """This rank's contiguous share of ``range(n)`` (shares differ by at most one row, and
    together cover every row once: for evaluation, where nothing may be dropped)."""
    if not info.enabled:
        return range(n)
    per, extra = divmod(n, info.world_size)
    start = info.rank * per + min(info.rank, extra)
    return range(start, start + per + (info.rank < extra))


def _comm_device(value: torch.Tensor) -> torch.device:
    # NCCL moves CUDA tensors only; gloo moves CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_tensor(value: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's ``value`` (same shape and dtype on all ranks), in rank order, on the
    CPU. A collective: every rank must call it."""
    if not info.enabled:
        return [value.detach().cpu().clone()]
    dev = _comm_device(value)
    mine = value.detach().to(dev)
    out = [torch.empty_like(mine) for _ in range(info.world_size)]
    dist.all_gather(out, mine)
    return [t.cpu() for t in out]


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``value`` over the ranks (identity without a process group)."""
    if not info.enabled:
        return value
    out = value.detach().to(_comm_device(value)).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(value.device)


def broadcast_from_main(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (through torch.distributed's object broadcast; the
    bytes come from our own processes, never from a file)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``value`` over the ranks (identity without a process group)."""
    if not info.enabled:
        return value
    return all_reduce_sum(value, info) / info.world_size
