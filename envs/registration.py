"""Gymnasium ids of the velocity-masked (partially observed) tasks and their irregular variants."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym

from envs.timing import ELAPSED_TIME_KEY

__all__ = ["IRREGULAR_IDS", "NOVEL_IDS", "make_novel", "make_novel_irregular", "register_envs"]

# Our id -> the fully observed id it masks.
NOVEL_IDS: dict[str, str] = {
    "CartPoleNoVel-v1": "CartPole-v1",
    "PendulumNoVel-v1": "Pendulum-v1",
    "MountainCarContinuousNoVel-v0": "MountainCarContinuous-v0",
    "LunarLanderContinuousNoVel-v3": "LunarLanderContinuous-v3",
}

# Our id -> the fully observed id it masks and observes at irregular times.
IRREGULAR_IDS: dict[str, str] = {
    "PendulumNoVelIrregular-v1": "Pendulum-v1",
    "CartPoleNoVelIrregular-v1": "CartPole-v1",
}


def make_novel(base_id: str, **kwargs) -> gym.Env:
    """Entry point of the NoVel ids: the base task with its velocities masked."""
    from envs.wrappers import VELOCITY_INDICES, MaskVelocityWrapper

    return MaskVelocityWrapper(gym.make(base_id, **kwargs), VELOCITY_INDICES[base_id])


def make_novel_irregular(
    base_id: str,
    min_repeat: int = 1,
    max_repeat: int = 4,
    repeat_probabilities: Sequence[float] | None = None,
    drop_probability: float = 0.0,
    time_key: str = ELAPSED_TIME_KEY,
    **kwargs,
) -> gym.Env:
    """Entry point of the Irregular ids: the NoVel task wrapped in ``IrregularTiming``.

    The base task is built without its own ``TimeLimit`` (which would count simulator
    steps); the registered ``max_episode_steps`` (the base task's) is applied by
    ``gym.make`` outside the wrapper, so it counts agent steps. The other keyword arguments
    go to the base task.
    """
    from envs.timing import IrregularTiming

    inner = make_novel(base_id, max_episode_steps=-1, **kwargs)
    return IrregularTiming(inner, min_repeat, max_repeat,
                           repeat_probabilities=repeat_probabilities,
                           drop_probability=drop_probability, time_key=time_key)


def register_envs() -> None:
    """Register the NoVel and Irregular ids (idempotent).

    NoVel ids keep the base task's time limit; Irregular ids apply the base task's limit
    (Pendulum 200, CartPole 500) to agent steps, outside the timing wrapper.
    """
    for env_id, base_id in NOVEL_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point="envs.registration:make_novel",
                     kwargs={"base_id": base_id})
    for env_id, base_id in IRREGULAR_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point="envs.registration:make_novel_irregular",
                     kwargs={"base_id": base_id},
                     max_episode_steps=gym.spec(base_id).max_episode_steps)
