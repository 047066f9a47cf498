"""Masked (sparsely connected) linear layer and the mask helpers the cells share."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SparseLinear", "as_mask", "sparse_uniform_"]


def as_mask(
    mask: torch.Tensor | np.ndarray, shape: tuple[int, int], name: str = "mask"
) -> torch.Tensor:
    """Validate a signed adjacency mask of shape ``(in, out)``; return it as float32.

    Entries must be -1, 0 or +1 (polarity is kept; callers take ``abs`` for
    connectivity).
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array of shape {shape}, "
                         f"got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)}, expected (in, out) = {tuple(shape)}"
        )
    mask = mask.detach().to(torch.float32)
    bad = ~((mask == 0) | (mask == 1) | (mask == -1))
    if bool(bad.any()):
        raise ValueError(f"{name} entries must be -1, 0 or +1, found {mask[bad][0].item()!r}")
    return mask


@torch.no_grad()
def sparse_uniform_(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill ``weight`` (out, in) with U(-1/sqrt(k), 1/sqrt(k)), k the row's real fan-in,
    and zero the entries the 0/1 ``mask`` (out, in) leaves out.

    Scaling by the number of *existing* synapses (not ``in``) keeps the pre-activation
    variance of a sparse layer close to that of a dense ``nn.Linear``.
    """
    fan_in = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    weight.uniform_(-1.0, 1.0)
    weight.mul_(fan_in.rsqrt().to(weight.dtype)).mul_(mask.to(weight.dtype))
    return weight


class SparseLinear(nn.Module):
    """A linear layer whose connections follow a wiring mask.

    Args:
        in_features: input size.
        out_features: output size.
        mask: signed adjacency of shape ``(in_features, out_features)`` (as
            :meth:`velora_ens.wiring.Wiring.data` returns it); non-zero entries are
            synapses. Masked-out weights are zero, get zero gradient and stay zero.
        bias: add a learnable bias.

    ``forward`` accepts any number of leading dimensions, like ``nn.Linear``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: torch.Tensor | np.ndarray,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        signed = as_mask(mask, (self.in_features, self.out_features))
        factory = {"device": device, "dtype": dtype}
        polarity = signed.t().contiguous().to(device=device, dtype=torch.int8)
        self.register_buffer("polarity", polarity)
        self.register_buffer("mask", signed.abs().t().contiguous().to(device=device, dtype=dtype))
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        sparse_uniform_(self.weight, self.mask)
        if self.bias is not None:
            fan_in = self.mask.sum(dim=1).clamp_min(1.0)
            with torch.no_grad():
                self.bias.uniform_(-1.0, 1.0).mul_(fan_in.rsqrt().to(self.bias.dtype))

    def masked_weight(self) -> torch.Tensor:
        """The effective weight ``W * mask`` (out, in)."""
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear expected inputs with {self.in_features} features in the last "
                f"dimension, got shape {tuple(x.shape)}"
            )
        return F.linear(x, self.masked_weight(), self.bias)

    @property
    def n_synapses(self) -> int:
        return int(self.mask.count_nonzero())

    def extra_repr(self) -> str:
        total = self.in_features * self.out_features
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"synapses={self.n_synapses}/{total}, bias={self.bias is not None}")
