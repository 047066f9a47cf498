"""Exponential moving average of a model's parameters."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """``ema = d * ema + (1 - d) * param`` after each update, with the warm-up
    ``d = min(decay, (1 + n) / (10 + n))`` (``n`` = updates so far) so that a short run is
    not dominated by the random initialisation. Buffers (e.g. batch-norm statistics) are
    copied. :attr:`model` is the averaged copy, in evaluation mode."""

    def __init__(self, model: nn.Module, decay: float = 0.995) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        ema_p = [p for p in self.model.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        floats = [(e, s) for e, s in zip(ema_p, src_p, strict=True) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [s for _, s in floats], 1.0 - d)
        for e, s in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(s)
        self.num_updates += 1
