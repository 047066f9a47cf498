"""A bank of independent linear layers evaluated in one batched matmul.

Deep-ensemble members and Liquid-Ensemble experts of the same architecture are stacked
along a leading member axis instead of being separate modules, so that one ``baddbmm``
replaces a Python loop over ``E`` small ``nn.Linear`` calls (forward and backward).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_int

__all__ = ["MemberLinear", "MemberRMSNorm", "softmax"]


def softmax(x: torch.Tensor, dim: int, *, log: bool = False,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.softmax`` (or ``F.log_softmax``) with the same values; over a short last axis
    (at most 16 entries, e.g. delegations over a few experts) it runs along a transposed
    view, where PyTorch's CPU kernel is several times faster than along the last axis."""
    fn = F.log_softmax if log else F.softmax
    if x.dim() >= 2 and dim in (-1, x.dim() - 1) and x.shape[-1] <= 16 and x.device.type == "cpu":
        return fn(x.transpose(-1, -2), dim=-2, dtype=dtype).transpose(-1, -2)
    return fn(x, dim=dim, dtype=dtype)


class MemberLinear(nn.Module):
    """``E`` independent ``Linear(in, out)`` layers: ``(E, B, in) -> (E, B, out)``.

    A ``(B, in)`` input is shared by every member (broadcast, not copied). Each member
    is initialised like ``nn.Linear`` (U(+-1/sqrt(in)) for weight and bias), so member
    ``e`` is distributed exactly as a freshly built ``nn.Linear``.
    """

    def __init__(self, num_members: int, in_features: int, out_features: int,
                 *, bias: bool = True) -> None:
        super().__init__()
        self.num_members = check_int("num_members", num_members, 1)
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        # (E, in, out): x @ weight is a plain batched matmul, no transpose needed.
        self.weight = nn.Parameter(torch.empty(self.num_members, self.in_features,
                                               self.out_features))
        self.bias = (nn.Parameter(torch.empty(self.num_members, 1, self.out_features))
                     if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_members, -1, -1)
        if x.dim() != 3 or x.shape[0] != self.num_members or x.shape[-1] != self.in_features:
            raise ValueError(
                f"MemberLinear expected (B, {self.in_features}) or "
                f"({self.num_members}, B, {self.in_features}), got {tuple(x.shape)}")
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return (f"num_members={self.num_members}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class MemberRMSNorm(nn.Module):
    """RMS normalisation of the last dimension with a per-member gain ``(E, 1, F)``."""

    def __init__(self, num_members: int, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(num_members, 1, features))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
