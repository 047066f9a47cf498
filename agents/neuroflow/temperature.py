"""SAC's entropy temperature ``alpha``: fixed, or learned so that the policy's entropy
tracks a target.

``ent_coef``: ``"auto"`` (learned, starting at 1), ``"auto_<init>"`` (learned, starting at
``init``) or a fixed number > 0. ``target_entropy``: ``"auto"`` is ``-|A|`` for Box
actions and ``target_entropy_scale * log |A|`` (positive) for Discrete ones (SAC-Discrete;
with several entries, the scale times the uniform policy's entropy ``sum_d log n_d``), or
a number.

>>> t = EntropyTemperature("auto_0.5", "auto", 0.89, discrete=False, action_dim=2)
>>> round(t.alpha, 6), t.target_entropy, t.learn
(0.5, -2.0, True)
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["EntropyTemperature"]


def _parse_ent_coef(ent_coef: str | float) -> tuple[bool, float]:
    """Whether the temperature is learned, and its initial value."""
    if isinstance(ent_coef, str):
        if ent_coef == "auto":
            return True, 1.0
        if ent_coef.startswith("auto_"):
            return True, float(ent_coef[5:])
        raise ValueError(
            f"ent_coef must be 'auto', 'auto_<init>' or a number, got {ent_coef!r}")
    if not ent_coef > 0:
        raise ValueError(f"a fixed ent_coef must be > 0, got {ent_coef!r}")
    return False, float(ent_coef)


class EntropyTemperature:
    """``log_alpha`` (a scalar tensor the optimiser steps when it is learned), the target
    entropy, and the gradient of the temperature's loss."""

    def __init__(self, ent_coef: str | float, target_entropy: str | float,
                 target_entropy_scale: float, *, discrete: bool, action_dim: int,
                 max_entropy: float | None = None, device: torch.device | str = "cpu") -> None:
        if isinstance(target_entropy, str):
            if target_entropy != "auto":
                raise ValueError(
                    f"target_entropy must be 'auto' or a number, got {target_entropy!r}")
            n = action_dim
            if discrete:
                top = float(np.log(n)) if max_entropy is None else float(max_entropy)
                target_entropy = target_entropy_scale * top
            else:
                target_entropy = -float(n)
        self.target_entropy = float(target_entropy)
        self.learn, init_alpha = _parse_ent_coef(ent_coef)
        self.log_alpha = torch.tensor(np.log(init_alpha), dtype=torch.float32, device=device,
                                      requires_grad=self.learn)

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def set_gradient(self, entropy: torch.Tensor) -> torch.Tensor:
        """Set ``log_alpha.grad`` for the loss ``log_alpha * mean(entropy - target)``: that
        mean, so no autograd pass is needed (alpha grows while the policy's entropy is
        below its target). Returns the mean."""
        gap = (entropy - self.target_entropy).mean()
        self.log_alpha.grad = gap.reshape(()).clone()
        return gap
