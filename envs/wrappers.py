"""Observation wrappers that turn fully observed tasks into harder ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["MaskVelocityWrapper", "ObservationNoiseWrapper"]

# Indices RL Zoo masks (rl_zoo3/wrappers.py: MaskVelocityWrapper).
VELOCITY_INDICES: dict[str, tuple[int, ...]] = {
    "CartPole-v1": (1, 3),
    "Pendulum-v1": (2,),
    "MountainCar-v0": (1,),
    "MountainCarContinuous-v0": (1,),
    "LunarLander-v3": (2, 3, 5),
    "LunarLanderContinuous-v3": (2, 3, 5),
}


def _box_observations(env: gym.Env, who: str) -> gym.spaces.Box:
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"{who} needs a 1-D Box observation space, got {space}")
    return space


class MaskVelocityWrapper(gym.ObservationWrapper):
    """Zero the velocity entries of the observation, making the task partially observed.

    Args:
        env: the environment.
        indices: entries to mask; by default those RL Zoo masks for ``env.spec.id``.
    """

    def __init__(self, env: gym.Env, indices: Sequence[int] | None = None) -> None:
        super().__init__(env)
        space = _box_observations(env, "MaskVelocityWrapper")
        if indices is None:
            env_id = env.spec.id if env.spec is not None else None
            if env_id not in VELOCITY_INDICES:
                raise ValueError(
                    f"MaskVelocityWrapper knows no velocity indices for {env_id!r}; pass indices= "
                    f"(known ids: {sorted(VELOCITY_INDICES)})"
                )
            indices = VELOCITY_INDICES[env_id]
        size = space.shape[0]
        bad = [i for i in indices if not 0 <= int(i) < size]
        if bad:
            raise ValueError(f"velocity indices {bad} are outside an observation of size {size}")
        self.indices = tuple(int(i) for i in indices)
        self.mask = np.ones(size, dtype=space.dtype)
        self.mask[list(self.indices)] = 0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation * self.mask


class ObservationNoiseWrapper(gym.ObservationWrapper):
    """Add Gaussian noise ``N(0, std^2)`` to every observation entry.

    The noise comes from the wrapper's own generator, seeded through ``reset(seed=...)``,
    so a seeded run stays reproducible.
    """

    def __init__(self, env: gym.Env, std: float = 0.1) -> None:
        super().__init__(env)
        _box_observations(env, "ObservationNoiseWrapper")
        if not np.isfinite(std) or std < 0:
            raise ValueError(f"noise std must be a finite number >= 0, got {std!r}")
        self.std = float(std)
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed + 1_000_003)
        return super().reset(seed=seed, options=options)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        noise = self._rng.normal(0.0, self.std, size=observation.shape)
        return (observation + noise).astype(observation.dtype)
