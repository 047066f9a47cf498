"""Checks on what a user's environment returns, with errors that say what was wrong.

Gymnasium's own checker only warns, and a vector env fails on a malformed observation
with a numpy broadcasting message. NeuroFlow wraps environment instances it is given in
:class:`CheckedEnv`, which names the environment, the step and the bad value.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from agents.driver.spaces import ObservationEncoder

__all__ = ["CheckedEnv"]


class CheckedEnv(gym.Wrapper):
    """Raise ``ValueError`` when ``reset`` or ``step`` returns an observation that is not
    a finite numeric array of the observation space's shape, a reward that is not one
    finite number, or ``terminated``/``truncated`` flags that are not booleans."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._steps = 0

    def _where(self) -> str:
        return f"{self.env}, on step {self._steps} of its episode,"

    def _check_obs(self, obs: Any) -> None:
        if not isinstance(self.observation_space, gym.spaces.Box):
            try:  # a discrete or composite space: it must encode (see agents.driver.spaces)
                ObservationEncoder(self.observation_space).encode(obs, batched=False)
            except ValueError as exc:
                raise ValueError(f"{self._where()} returned a malformed observation: {exc}"
                                 ) from None
            return
        shape = self.observation_space.shape
        arr = np.asarray(obs) if not isinstance(obs, dict) else None
        if arr is None or arr.shape != shape or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{self._where()} returned a malformed observation: expected a "
                             f"numeric array of shape {shape} ({self.observation_space}), got "
                             f"{type(obs).__name__} {np.shape(obs) if arr is not None else ''}"
                             f" {obs!r:.80}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{self._where()} returned a non-finite observation: {obs!r:.80}")

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self._steps = 0
        obs, info = self.env.reset(**kwargs)
        self._check_obs(obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, Any, Any, dict]:
        self._steps += 1
        result = self.env.step(action)
        if not isinstance(result, tuple) or len(result) != 5:
            raise ValueError(f"{self._where()}: step must return (obs, reward, terminated, "
                             f"truncated, info) as Gymnasium 1.x does, got {result!r:.80}")
        obs, reward, terminated, truncated, info = result
        self._check_obs(obs)
        if isinstance(reward, bool) or not isinstance(reward, (int, float, np.number)) \
                or np.ndim(reward) != 0 or not np.isfinite(reward):
            raise ValueError(f"{self._where()} returned a malformed reward: expected one finite "
                             f"number, got {reward!r:.80}")
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{self._where()} returned {name}={flag!r}; expected a bool")
        return obs, reward, terminated, truncated, info
