"""Synthetic data sets, each a deterministic function of its seed.

* :func:`two_regime`: ``y = sin(pi x) + sign(x) + eps``, ``x ~ U(-1, 1)``,
  ``eps ~ N(0, noise_std^2)`` (the stochastic-MoE notebook, seed 003).
* :func:`sine_1d`: ``y = sin(x) + 0.1 eps``, ``x ~ N(0, 1)`` (the Deep Ensembles README toy,
  seed 002).
* :func:`four_quadrants`: 2-D inputs in ``[-1, 1]^2``, three classes per quadrant cut
  from a different trigonometric field in each quadrant (the Liquid Ensemble study's
  synthetic task, where experts can specialise by region).
"""

from __future__ import annotations

import math

import torch

__all__ = ["QUADRANT_FIELDS", "four_quadrants", "quadrant_field", "sine_1d", "two_regime"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return n


def two_regime(n: int, noise_std: float = 0.05, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (n, 1), y (n, 1))`` with ``y = sin(pi x) + sign(x) + N(0, noise_std^2)``."""
    _check_n(n)
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    g = _gen(seed)
    x = 2 * torch.rand(n, 1, generator=g) - 1
    y = torch.sin(math.pi * x) + torch.sign(x) + noise_std * torch.randn(n, 1, generator=g)
    return x, y


def sine_1d(n: int, noise_std: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (n, 1), y (n, 1))`` with ``x ~ N(0, 1)`` and ``y = sin(x) + N(0, noise_std^2)``."""
    _check_n(n)
    g = _gen(seed)
    x = torch.randn(n, 1, generator=g)
    return x, x.sin() + noise_std * torch.randn(n, 1, generator=g)


# (frequency, phase) of the two inputs' terms in each quadrant
QUADRANT_FIELDS = (
    ((9.93, 4.52), (-0.82, 3.07)),   # upper left:  cos(.) + tanh(.)
    ((6.81, 4.54), (-0.98, -0.76)),  # upper right: sin(.) * tanh(.)
    ((5.07, 8.10), (0.13, -0.94)),   # lower right: sin(. + tanh(.))
    ((9.89, 6.87), (1.10, 0.14)),    # lower left:  tanh(cos(.) * sin(.))
)


def quadrant_field(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z (n,), quadrant (n,))``: the scalar field and the quadrant index (0 upper
    left, 1 upper right, 2 lower right, 3 lower left) of points ``x (n, 2)``."""
    a, b = x[:, 0], x[:, 1]
    upper, right = b > 0, a >= 0
    quad = torch.where(upper, torch.where(right, 1, 0), torch.where(right, 2, 3))
    cx = torch.where(right, a - 0.5, a + 0.5)
    cy = torch.where(upper, b - 0.5, b + 0.5)
    f = torch.tensor([[q[0][0], q[0][1]] for q in QUADRANT_FIELDS], dtype=x.dtype)[quad]
    p = torch.tensor([[q[1][0], q[1][1]] for q in QUADRANT_FIELDS], dtype=x.dtype)[quad]
    u, v = cx * f[:, 0] + p[:, 0], cy * f[:, 1] + p[:, 1]
    z = torch.stack([u.cos() + v.tanh(), u.sin() * v.tanh(), (u + v.tanh()).sin(),
                     (u.cos() * v.sin()).tanh()], 1).gather(1, quad[:, None]).squeeze(1)
    return z, quad


def _thresholds() -> torch.Tensor:
    """Per quadrant, the tertiles of the field over a fine grid: ``(4, 2)``."""
    grid = torch.linspace(-1 + 1 / 400, 1 - 1 / 400, 400, dtype=torch.float64)
    pts = torch.cartesian_prod(grid, grid)
    z, quad = quadrant_field(pts)
    qs = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    return torch.stack([torch.quantile(z[quad == k], qs) for k in range(4)])


_THRESHOLDS: torch.Tensor | None = None


def four_quadrants(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (n, 2) float32 in [-1, 1]^2, label (n,) int64 in {0, 1, 2})``: the label is the
    tertile (fixed thresholds, balanced over each quadrant) of the quadrant's field."""
    global _THRESHOLDS
    _check_n(n)
    if _THRESHOLDS is None:
        _THRESHOLDS = _thresholds()
    x = 2 * torch.rand(n, 2, generator=_gen(seed), dtype=torch.float64) - 1
    z, quad = quadrant_field(x)
    t = _THRESHOLDS[quad]
    label = (z > t[:, 0]).long() + (z > t[:, 1]).long()
    return x.float(), label
