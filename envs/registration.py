"""Gymnasium ids of the velocity-masked (partially observed) tasks."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["NOVEL_IDS", "register_envs"]

# Our id -> the fully observed id it masks.
NOVEL_IDS: dict[str, str] = {
    "CartPoleNoVel-v1": "CartPole-v1",
    "PendulumNoVel-v1": "Pendulum-v1",
    "MountainCarContinuousNoVel-v0": "MountainCarContinuous-v0",
    "LunarLanderContinuousNoVel-v3": "LunarLanderContinuous-v3",
}


def make_novel(base_id: str, **kwargs) -> gym.Env:
    """Entry point of the NoVel ids: the base task with its velocities masked."""
    from envs.wrappers import VELOCITY_INDICES, MaskVelocityWrapper

    return MaskVelocityWrapper(gym.make(base_id, **kwargs), VELOCITY_INDICES[base_id])


def register_envs() -> None:
    """Register the NoVel ids (idempotent). Time limits come from the base task."""
    for env_id, base_id in NOVEL_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point="envs.registration:make_novel",
                     kwargs={"base_id": base_id})
