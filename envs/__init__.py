"""Gymnasium tasks and wrappers for velora_ens agents (no torch needed).

Importing this package registers the velocity-masked ids ``CartPoleNoVel-v1``,
``PendulumNoVel-v1``, ``MountainCarContinuousNoVel-v0`` and
``LunarLanderContinuousNoVel-v3`` (the last needs ``gymnasium[box2d]``).
"""

from envs.factory import make_env, make_vec_env
from envs.registration import NOVEL_IDS, register_envs
from envs.wrappers import VELOCITY_INDICES, MaskVelocityWrapper, ObservationNoiseWrapper

register_envs()

__all__ = [
    "NOVEL_IDS",
    "VELOCITY_INDICES",
    "MaskVelocityWrapper",
    "ObservationNoiseWrapper",
    "make_env",
    "make_vec_env",
    "register_envs",
]
