"""The supervised trainer shared by every benchmark: :class:`Trainer` (CPU, GPU, several
GPUs or machines through torch.distributed), :class:`TensorDataset`, EMA and atomic
safetensors + JSON checkpoints."""

from velora_ens.training.allocator import retain_freed_cpu_memory
from velora_ens.training.checkpoint import load_checkpoint, save_checkpoint
from velora_ens.training.dataset import TensorDataset
from velora_ens.training.device import select_device
from velora_ens.training.distributed import DistInfo, init_distributed
from velora_ens.training.ema import EMA
from velora_ens.training.trainer import Trainer, TrainingDivergedError, lr_factor

__all__ = [
    "EMA",
    "DistInfo",
    "TensorDataset",
    "Trainer",
    "TrainingDivergedError",
    "init_distributed",
    "load_checkpoint",
    "lr_factor",
    "retain_freed_cpu_memory",
    "save_checkpoint",
    "select_device",
]
