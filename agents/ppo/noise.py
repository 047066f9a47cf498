"""LiquidPPO's exploration noise for Box actions: how each step's Gaussian draw is made.

Three small objects with one interface (:class:`FreshNoise` is the default):

* :class:`FreshNoise`: a fresh standard-normal draw every step (SB3's PPO);
* :class:`HeldNoise` (``noise_hold_steps=k``): each copy's draw is kept for ``k`` of its
  steps and redrawn at episode starts, for temporally correlated exploration; the
  log-probabilities stay the per-step Gaussian's;
* :class:`StateDependentNoise` (``use_sde=True``): gSDE (Raffin et al. 2022, SB3's
  ``use_sde`` with ``full_std=True``), the noise the actor's liquid state times a random
  matrix per copy, redrawn at the rollout's first step and every ``sde_sample_freq``
  steps of it.

Each has :meth:`~FreshNoise.start` (a new rollout), :meth:`~FreshNoise.sample` (the
step's actions and log-probabilities) and the tensors an exact resume needs.
"""

from __future__ import annotations

import torch

from agents.common.actor import LiquidActor

__all__ = ["FreshNoise", "HeldNoise", "StateDependentNoise", "make_noise"]


class FreshNoise:
    """A fresh draw every step (and the categorical's own for Discrete actions)."""

    def start(self, actor: LiquidActor, n_envs: int, device: torch.device) -> None:
        """Called when a rollout starts from a reset."""

    def sample(self, actor: LiquidActor, out: torch.Tensor, features: torch.Tensor,
               start: torch.Tensor, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions and log-probabilities for the actor's outputs ``out`` ``(n, ...)``;
        ``features``: its states after the step, ``start``: which copies start an
        episode, ``row``: the step's row in the rollout."""
        return actor.sample(out, None)

    def tensors(self) -> dict[str, torch.Tensor]:
        """What an exact resume needs (saved with the rollout)."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        pass


class HeldNoise(FreshNoise):
    """Each copy's standard-normal draw held for ``hold_steps`` of its steps."""

    def __init__(self, hold_steps: int) -> None:
        self.hold_steps = hold_steps
        self.noise = torch.zeros(0)  # the held draw per copy
        self.age = torch.zeros(0)    # steps since it was drawn

    def start(self, actor: LiquidActor, n_envs: int, device: torch.device) -> None:
        self.noise = torch.zeros(n_envs, actor.action_dim, device=device)
        self.age = torch.zeros(n_envs, dtype=torch.int64, device=device)

    def sample(self, actor: LiquidActor, out: torch.Tensor, features: torch.Tensor,
               start: torch.Tensor, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        redraw = start | (self.age % self.hold_steps == 0)
        if redraw.any():
            fresh = torch.randn_like(self.noise)
            self.noise = torch.where(redraw.unsqueeze(1), fresh, self.noise)
            self.age = torch.where(redraw, torch.zeros_like(self.age), self.age)
        self.age = self.age + 1
        return actor.sample(out, self.noise)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"rollout.noise": self.noise, "rollout.noise_age": self.age}

    def load_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        self.noise = tensors["rollout.noise"].clone().to(device)
        self.age = tensors["rollout.noise_age"].clone().to(device)


class StateDependentNoise(FreshNoise):
    """gSDE: exploration matrices per copy, drawn anew at the rollout's first row and
    every ``sample_freq`` rows of it (SB3's rule; -1 or 0: only at the first)."""

    def __init__(self, sample_freq: int) -> None:
        self.sample_freq = sample_freq
        self.matrices = torch.zeros(0)

    def start(self, actor: LiquidActor, n_envs: int, device: torch.device) -> None:
        self.matrices = torch.zeros(n_envs, *actor.log_std.shape, device=device)

    def sample(self, actor: LiquidActor, out: torch.Tensor, features: torch.Tensor,
               start: torch.Tensor, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        freq = self.sample_freq
        if row == 0 or (freq > 0 and row % freq == 0):
            self.matrices = actor.gsde_matrices(out.shape[0])
        return actor.sample(out, features=features, matrices=self.matrices)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"rollout.sde_matrices": self.matrices}

    def load_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        self.matrices = tensors["rollout.sde_matrices"].clone().to(device)


def make_noise(discrete: bool, noise_hold_steps: int, use_sde: bool, sde_sample_freq: int
               ) -> FreshNoise:
    """The noise LiquidPPO's options ask for (Discrete actions: the categorical's own)."""
    if use_sde:
        return StateDependentNoise(sde_sample_freq)
    if discrete or noise_hold_steps == 1:
        return FreshNoise()
    return HeldNoise(noise_hold_steps)
