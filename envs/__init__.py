"""Gymnasium tasks and wrappers for velora_ens agents (no torch needed).

Importing this package registers the velocity-masked ids ``CartPoleNoVel-v1``,
``PendulumNoVel-v1``, ``MountainCarContinuousNoVel-v0`` and
``LunarLanderContinuousNoVel-v3`` (the last needs ``gymnasium[box2d]``), and their
irregularly timed variants ``PendulumNoVelIrregular-v1`` and ``CartPoleNoVelIrregular-v1``:
:class:`IrregularTiming` repeats each action for a random number of simulator steps
(uniform in 1..4 by default) and reports the time since the previous observation in
``info[ELAPSED_TIME_KEY]`` (seconds of simulated time); :class:`AppendElapsedTime` appends
that time to the observation, for agents that take it as an input feature.

``DeepSea-v0`` is bsuite's deep-exploration task (``gym.make("DeepSea-v0", size=10,
seed=3)``, grid flattened by :class:`FlattenGrid`); making it needs the optional extra:
``pip install "velora_ens[deepsea]"``. :func:`deep_sea_solved_episode` is bsuite's
"solved" criterion, which needs only numpy.
"""

from envs.deep_sea import (
    FlattenGrid,
    deep_sea_beats_dithering,
    deep_sea_solved_episode,
    make_deep_sea,
    reached_treasure,
)
from envs.factory import make_env, make_vec_env
from envs.registration import DEEP_SEA_ID, IRREGULAR_IDS, NOVEL_IDS, register_envs
from envs.timing import (
    DROPPED_KEY,
    ELAPSED_STEPS_KEY,
    ELAPSED_TIME_KEY,
    AppendElapsedTime,
    IrregularTiming,
)
from envs.wrappers import VELOCITY_INDICES, MaskVelocityWrapper, ObservationNoiseWrapper

register_envs()

__all__ = [
    "DEEP_SEA_ID",
    "DROPPED_KEY",
    "ELAPSED_STEPS_KEY",
    "ELAPSED_TIME_KEY",
    "IRREGULAR_IDS",
    "NOVEL_IDS",
    "VELOCITY_INDICES",
    "AppendElapsedTime",
    "FlattenGrid",
    "IrregularTiming",
    "MaskVelocityWrapper",
    "ObservationNoiseWrapper",
    "deep_sea_beats_dithering",
    "deep_sea_solved_episode",
    "make_deep_sea",
    "make_env",
    "make_vec_env",
    "reached_treasure",
    "register_envs",
]
