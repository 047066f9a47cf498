"""A plain Liquid Ensemble expert for the heads' tests."""

from __future__ import annotations

import torch
from torch import nn


class Expert(nn.Module):
    """``(prediction, delegation)`` from 3 input features: a linear prediction and a
    softmax delegation over ``n`` experts."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.y = nn.Linear(3, 1)
        self.d = nn.Linear(3, n)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.y(x), torch.softmax(self.d(x), -1)
