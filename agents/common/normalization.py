"""Running observation normalisation, as Stable-Baselines3's ``VecNormalize`` does it.

Replay keeps raw observations; they are normalised with the current statistics when
they are read (acting, training, ``predict``), so the statistics can keep improving
without rewriting the buffer. The statistics are module buffers: they travel with the
agent's ``state_dict``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["ObservationNormalizer", "RewardNormalizer"]


class ObservationNormalizer(nn.Module):
    """``clip((x - mean) / sqrt(var + eps), -clip, clip)`` with running mean and variance.

    The statistics start at mean 0, variance 1 and a pseudo-count of ``1e-4`` and merge
    each batch with Chan et al.'s parallel update (SB3's ``RunningMeanStd``).
    """

    def __init__(self, size: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip!r}")
        self.clip, self.eps = float(clip), float(eps)
        self.register_buffer("mean", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("var", torch.ones(size, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: np.ndarray | torch.Tensor) -> None:
        """Merge a batch ``(n, size)`` of raw observations into the statistics."""
        x = torch.as_tensor(np.asarray(batch), dtype=torch.float64,
                            device=self.mean.device).reshape(-1, self.mean.numel())
        n = x.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.var + self.eps).rsqrt().to(x.dtype)
        return ((x - self.mean.to(x.dtype)) * scale).clamp(-self.clip, self.clip)


class RewardNormalizer(nn.Module):
    """Stable-Baselines3's ``VecNormalize(norm_reward=True)``: rewards divided by the
    running standard deviation of the discounted return, clipped at ``clip``.

    Each environment copy keeps its discounted return ``R <- gamma R + r`` (reset where
    an episode ends); the variance of those returns (Chan et al.'s running update, as
    :class:`ObservationNormalizer`) scales the rewards, which are not centred. The
    statistics and the per-copy returns are buffers, so they travel with ``state_dict``.
    """

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8
                 ) -> None:
        super().__init__()
        self.gamma, self.clip, self.eps = float(gamma), float(clip), float(eps)
        self.stats = ObservationNormalizer(1, clip=clip, eps=eps)
        self.register_buffer("returns", torch.zeros(n_envs, dtype=torch.float64))

    @torch.no_grad()
    def scale(self, rewards: np.ndarray, dones: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The scaled rewards of the copies ``rows`` (the transitions of a step), after
        merging their returns into the statistics; ``dones`` end their returns."""
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64)[rows],
                            device=self.returns.device)
        ret = self.returns[rows] * self.gamma + r
        self.stats.update(ret.reshape(-1, 1))
        self.returns[rows] = ret * torch.as_tensor(~np.asarray(dones)[rows],
                                                   dtype=torch.float64,
                                                   device=self.returns.device)
        scale = (self.stats.var + self.eps).rsqrt()
        out = np.zeros(len(rewards), np.float32)
        out[rows] = (r * scale).clamp(-self.clip, self.clip).cpu().numpy()
        return out
