"""Irregular observation timing: the agent sees the task at random intervals.

:class:`IrregularTiming` repeats each agent action for a random number of simulator
steps (and optionally drops observations), so the time between two observations varies;
``info[ELAPSED_TIME_KEY]`` tells the agent how much time passed. :class:`AppendElapsedTime`
hands that time to agents that cannot take it as a separate input, as one more
observation feature.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["DROPPED_KEY", "ELAPSED_STEPS_KEY", "ELAPSED_TIME_KEY", "AppendElapsedTime",
           "IrregularTiming"]

#: Default info key of the time elapsed since the previous observation (a Python float).
ELAPSED_TIME_KEY = "elapsed_time"
#: Info key of the number of simulator steps behind the observation (a Python int).
ELAPSED_STEPS_KEY = "elapsed_steps"
#: Info key of the number of observations dropped during the step (a Python int).
DROPPED_KEY = "dropped_observations"

# Attributes of the unwrapped env holding its time step in seconds, tried in order
# (Pendulum, Acrobot and MuJoCo envs have ``dt``; CartPole has ``tau``).
_TIME_STEP_ATTRIBUTES = ("dt", "tau")
# Spawn key of the timing stream, so that it differs from the env's own SeedSequence(seed).
_TIMING_STREAM = 0x71AE


def _integer(value: Any, name: str, minimum: int, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer {expected}, got {value!r}")
    return int(value)


def _time_step(env: gym.Env) -> tuple[str, float]:
    """``(unit, nominal one-step time)`` of the unwrapped env: seconds if it has one."""
    for name in _TIME_STEP_ATTRIBUTES:
        value = getattr(env.unwrapped, name, None)
        if (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value) and value > 0):
            return "s", float(value)
    return "steps", 1.0


class IrregularTiming(gym.Wrapper):
    """Observe the task at irregular times, reporting the elapsed time in ``info``.

    Each ``step(action)`` applies ``action`` for a block of ``k`` simulator steps, ``k``
    drawn from the wrapper's own seeded generator, and returns the last observation, the
    sum of the ``k`` rewards, and the last step's ``terminated``, ``truncated`` and info.

    With ``drop_probability`` ``p``, after each block the observation is dropped with
    probability ``p``: the same action is then applied for another block of a freshly drawn
    ``k`` steps, and so on until an observation is kept. The number of blocks per agent
    step is geometric (mean ``1 / (1 - p)``), so the mean elapsed time is
    ``E[k] / (1 - p)`` nominal steps. A block stops early, and no further block follows,
    as soon as the inner env terminates or truncates; the elapsed time then counts only the
    simulator steps actually taken.

    Info keys (added to the inner env's info of the last simulator step):

    - ``info[time_key]`` (default :data:`ELAPSED_TIME_KEY`, ``"elapsed_time"``): a Python
      float, the time since the previous observation, ``elapsed_steps * nominal_dt``, in
      :attr:`time_unit`. At ``reset`` it is ``nominal_dt``: the first observation of an
      episode has no predecessor, and one nominal step is a neutral placeholder.
    - ``info["elapsed_steps"]`` (:data:`ELAPSED_STEPS_KEY`): a Python int, the number of
      simulator steps taken (``0`` at ``reset``).
    - ``info["dropped_observations"]`` (:data:`DROPPED_KEY`): a Python int, how many
      observations were dropped during the step (``0`` at ``reset``).

    Units: :attr:`nominal_dt` is the unwrapped env's time step in seconds where it has one
    (its ``dt`` attribute, e.g. Pendulum's 0.05 s, or else ``tau``, e.g. CartPole's 0.02 s)
    and :attr:`time_unit` is ``"s"``; otherwise the time is counted in simulator steps
    (``time_unit == "steps"``, ``nominal_dt == 1.0``).

    Seeding: ``reset(seed=s)`` seeds the wrapper's own ``np.random.Generator`` from ``s``
    (a stream distinct from, and independent of, the inner env's generator), so the same
    seed gives the same timings and, with the same actions, the same observations;
    ``reset()`` without a seed continues the stream. Before the first seeded reset the
    generator is seeded from OS entropy.

    Time limits: a ``TimeLimit`` inside this wrapper counts simulator steps and truncates
    the block where it falls. To limit agent steps instead, build the inner env without one
    (``gym.make(id, max_episode_steps=-1)``) and apply ``gym.wrappers.TimeLimit`` outside,
    as the registered ``*Irregular`` ids do.

    Args:
        env: the environment.
        min_repeat: smallest number of simulator steps per block (an integer >= 1).
        max_repeat: largest number of simulator steps per block (an integer >= min_repeat).
        repeat_probabilities: probabilities of ``k = min_repeat, ..., max_repeat`` (non-
            negative, summing to 1, ``max_repeat - min_repeat + 1`` of them); ``None``, the
            default, draws ``k`` uniformly from those integers.
        drop_probability: probability, in ``[0, 1)``, that the observation after a block is
            dropped (default 0: every block ends with an observation).
        time_key: info key of the elapsed time.

    Raises:
        ValueError: on an argument outside the ranges above, naming it and its value.
    """

    def __init__(
        self,
        env: gym.Env,
        min_repeat: int = 1,
        max_repeat: int = 4,
        *,
        repeat_probabilities: Sequence[float] | None = None,
        drop_probability: float = 0.0,
        time_key: str = ELAPSED_TIME_KEY,
    ) -> None:
        super().__init__(env)
        self.min_repeat = _integer(min_repeat, "min_repeat", 1, ">= 1")
        self.max_repeat = _integer(max_repeat, "max_repeat", self.min_repeat,
                                   f">= min_repeat (= {self.min_repeat})")
        self.repeat_probabilities = self._probabilities(repeat_probabilities)
        if (isinstance(drop_probability, bool) or not isinstance(drop_probability, numbers.Real)
                or not 0.0 <= drop_probability < 1.0):
            raise ValueError(f"drop_probability must be a number in [0, 1), got "
                             f"{drop_probability!r}")
        self.drop_probability = float(drop_probability)
        if not isinstance(time_key, str) or not time_key or time_key in (ELAPSED_STEPS_KEY,
                                                                          DROPPED_KEY):
            raise ValueError(f"time_key must be a non-empty string other than "
                             f"{ELAPSED_STEPS_KEY!r} and {DROPPED_KEY!r}, got {time_key!r}")
        self.time_key = time_key
        self.time_unit, self.nominal_dt = _time_step(env)
        self._repeats = np.arange(self.min_repeat, self.max_repeat + 1)
        self._rng = np.random.default_rng()

    def _probabilities(self, probabilities: Sequence[float] | None) -> tuple[float, ...] | None:
        if probabilities is None:
            return None
        size = self.max_repeat - self.min_repeat + 1
        try:
            values = np.asarray(probabilities, dtype=float)
        except (TypeError, ValueError):
            values = None
        if values is None or values.shape != (size,):
            raise ValueError(
                f"repeat_probabilities must be {size} numbers (for k = {self.min_repeat}.."
                f"{self.max_repeat}), got {probabilities!r}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"repeat_probabilities must be finite and >= 0, got "
                             f"{probabilities!r}")
        total = float(values.sum())
        if not math.isclose(total, 1.0, rel_tol=0.0, abs_tol=1e-6):
            raise ValueError(f"repeat_probabilities must sum to 1, got {probabilities!r} "
                             f"(sum {total!r})")
        return tuple(float(v) for v in values / total)

    @property
    def mean_elapsed_steps(self) -> float:
        """Expected simulator steps per agent step, ``E[k] / (1 - drop_probability)``."""
        if self.repeat_probabilities is None:
            mean_k = (self.min_repeat + self.max_repeat) / 2
        else:
            mean_k = float(np.dot(self._repeats, self.repeat_probabilities))
        return mean_k / (1.0 - self.drop_probability)

    def _draw_repeat(self) -> int:
        if self.repeat_probabilities is None:
            return int(self._rng.integers(self.min_repeat, self.max_repeat, endpoint=True))
        return int(self._rng.choice(self._repeats, p=self.repeat_probabilities))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng(
                np.random.SeedSequence(seed, spawn_key=(_TIMING_STREAM,)))
        info = dict(info)
        info[self.time_key] = self.nominal_dt
        info[ELAPSED_STEPS_KEY] = 0
        info[DROPPED_KEY] = 0
        return observation, info

    def step(self, action):
        total_reward = 0.0
        steps = dropped = 0
        while True:
            for _ in range(self._draw_repeat()):
                observation, reward, terminated, truncated, info = self.env.step(action)
                total_reward += float(reward)
                steps += 1
                if terminated or truncated:
                    break
            if terminated or truncated:
                break
            if self.drop_probability == 0.0 or self._rng.random() >= self.drop_probability:
                break
            dropped += 1
        info = dict(info)
        info[self.time_key] = steps * self.nominal_dt
        info[ELAPSED_STEPS_KEY] = steps
        info[DROPPED_KEY] = dropped
        return observation, total_reward, terminated, truncated, info


class AppendElapsedTime(gym.Wrapper):
    """Append the elapsed time ``info[time_key] / scale`` to the observation.

    For agents whose networks take no elapsed-time input (an MLP, an LSTM): the time since
    the previous observation, as reported by :class:`IrregularTiming` (or any env that
    puts it in ``info``), becomes one more observation entry, at ``reset`` (where
    :class:`IrregularTiming` reports ``nominal_dt``) and after every step. The
    observation space, a 1-D ``Box``, gets one more entry with bounds ``[0, inf)``; its
    dtype is the inner one promoted with float32 (float32 for the usual float32 ``Box``).
    ``info`` passes through unchanged.

    >>> import envs
    >>> env = AppendElapsedTime(envs.make_env("PendulumNoVelIrregular-v1"), scale=0.05)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, float(obs[-1])          # info["elapsed_time"] == 0.05 at reset
    ((4,), 1.0)

    Args:
        env: an environment with a 1-D ``Box`` observation space.
        time_key: the info key of the elapsed time (:data:`ELAPSED_TIME_KEY`).
        scale: divide the elapsed time by this (a finite number > 0), e.g. the task's
            nominal step so that a regular step reads 1.

    Raises:
        ValueError: on a non-``Box`` or non-1-D observation space, a bad ``time_key`` or
            ``scale``; at ``reset`` / ``step`` when ``info`` lacks ``time_key`` or holds a
            negative or non-finite value, naming the step (0 is the reset).
    """

    def __init__(self, env: gym.Env, time_key: str = ELAPSED_TIME_KEY,
                 scale: float = 1.0) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"AppendElapsedTime needs a 1-D Box observation space, got "
                             f"{space!r}")
        if not isinstance(time_key, str) or not time_key:
            raise ValueError(f"time_key must be a non-empty string, got {time_key!r}")
        if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
                or not math.isfinite(scale) or scale <= 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.time_key, self.scale = time_key, float(scale)
        dtype = np.promote_types(space.dtype, np.float32)
        self.observation_space = gym.spaces.Box(
            low=np.append(space.low, 0.0).astype(dtype),
            high=np.append(space.high, np.inf).astype(dtype), dtype=dtype)
        self._steps = 0  # agent steps since the last reset

    def _append(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        where = ("at reset (step 0)" if self._steps == 0
                 else f"at step {self._steps} since the last reset")
        if self.time_key not in info:
            raise ValueError(f"info has no {self.time_key!r} {where}; AppendElapsedTime reads "
                             "the time since the previous observation from there (wrap the "
                             "task in envs.IrregularTiming first, or pass time_key=)")
        value = info[self.time_key]
        try:
            elapsed = float(value)
        except (TypeError, ValueError):
            elapsed = math.nan
        if not math.isfinite(elapsed) or elapsed < 0:
            raise ValueError(f"info[{self.time_key!r}] is {value!r} {where}; expected a finite "
                             "number >= 0")
        feature = np.float32(elapsed / self.scale)
        return np.append(np.asarray(observation), feature).astype(
            self.observation_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        self._steps = 0
        return self._append(observation, info), info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        return self._append(observation, info), reward, terminated, truncated, info
