"""An in-memory data set of aligned tensors, checked once when it is built."""

from __future__ import annotations

import torch

__all__ = ["TensorDataset"]


class TensorDataset(torch.utils.data.Dataset):
    """Aligned tensors indexed along their first dimension (``dataset[i]`` is a tuple).

    Unlike ``torch.utils.data.TensorDataset`` it refuses bad data when it is built:
    tensors of different lengths, an empty data set, and NaN or infinite values in a
    floating-point tensor (the error names the tensor and the first bad row). The
    :class:`~velora_ens.training.Trainer` indexes whole batches at once
    (:meth:`batch`) and may keep the tensors on the GPU.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        for k, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"tensor {k} is a {type(t).__name__}, expected a torch.Tensor")
            if t.dim() == 0:
                raise ValueError(f"tensor {k} is a scalar; expected a first (sample) dimension")
        n = tensors[0].shape[0]
        for k, t in enumerate(tensors):
            if t.shape[0] != n:
                raise ValueError(f"all tensors must have the same length; tensor 0 has {n} rows, "
                                 f"tensor {k} has {t.shape[0]}")
        if n == 0:
            raise ValueError("TensorDataset is empty (0 rows)")
        for k, t in enumerate(tensors):
            if t.is_floating_point():
                bad = ~torch.isfinite(t.reshape(n, -1)).all(1)
                if bool(bad.any()):
                    row = int(bad.nonzero()[0])
                    raise ValueError(f"tensor {k} has NaN or infinite values (first in row "
                                     f"{row} of {n}); clean or drop those rows first")
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows ``index`` (a 1-D index tensor) of every tensor."""
        return tuple(t[index] for t in self.tensors)

    def to(self, device: torch.device | str) -> TensorDataset:
        """A copy with every tensor on ``device`` (no checks repeated)."""
        out = TensorDataset.__new__(TensorDataset)
        out.tensors = tuple(t.to(device) for t in self.tensors)
        return out

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)
