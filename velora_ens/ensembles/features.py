"""Put any ensemble head on top of a feature extractor (e.g. a ``LiquidNCPNetwork``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WithFeatures"]


class WithFeatures(nn.Module):
    """``head(extractor(x), *args, **kwargs)``.

    A tuple output of the extractor contributes its first element (a
    ``LiquidNCPNetwork`` returns ``(y, h)``); with ``last_step=True`` a sequence of
    features ``(B, L, F)`` is reduced to its last step ``(B, F)``. Extra arguments go to
    the head, so ``WithFeatures(net, deep_ensemble)(x, y)`` is the head's loss and
    ``WithFeatures(net, moe)(x, num_samples=8)`` draws 8 samples. :meth:`predict`
    forwards to the head's ``predict``. Gradients reach the extractor.
    """

    def __init__(self, extractor: nn.Module, head: nn.Module, *, last_step: bool = False) -> None:
        super().__init__()
        self.extractor, self.head, self.last_step = extractor, head, bool(last_step)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.extractor(x)
        if isinstance(f, tuple):
            f = f[0]
        if self.last_step and f.dim() == 3:
            f = f[:, -1]
        return f

    def forward(self, x: torch.Tensor, *args, **kwargs):
        return self.head(self.features(x), *args, **kwargs)

    def predict(self, x: torch.Tensor, *args, **kwargs):
        if not hasattr(self.head, "predict"):
            raise AttributeError(f"{type(self.head).__name__} has no predict method")
        return self.head.predict(self.features(x), *args, **kwargs)
