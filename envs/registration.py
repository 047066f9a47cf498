"""Gymnasium ids of the velocity-masked tasks, their irregular variants and bsuite's DeepSea."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym

from envs.timing import ELAPSED_TIME_KEY

__all__ = [
    "DEEP_SEA_ID",
    "IRREGULAR_IDS",
    "NOVEL_IDS",
    "make_novel",
    "make_novel_irregular",
    "register_envs",
]

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

# bsuite's DeepSea (needs the ``deepsea`` extra when made, not when registered).
DEEP_SEA_ID = "DeepSea-v0"


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
    """Register the NoVel, Irregular and DeepSea ids (idempotent).

    NoVel ids keep the base task's time limit; Irregular ids apply the base task's limit
    (Pendulum 200, CartPole 500) to agent steps, outside the timing wrapper. ``DeepSea-v0``
    (``size=20`` by default) has no time limit: its episodes end after exactly ``size`` steps.
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
    if DEEP_SEA_ID not in gym.registry:
        gym.register(id=DEEP_SEA_ID, entry_point="envs.deep_sea:make_deep_sea",
                     kwargs={"size": 20})
