"""A tiny task registered on import, for the ``module:EnvId`` tests (not collected by
pytest): ``gym.make("id_envs:NoRenderEnv-v0")`` imports this module first.

Its constructor takes no ``render_mode`` (as 33 of POPGym's 42 ids), so building it the
way ``gym.make``'s users do means passing ``render_mode`` only when one is asked for.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENV_ID = "NoRenderEnv-v0"


class NoRenderEnv(gym.Env):
    """Observation ``[t / length, target]``; reward 1 when the action equals ``target``;
    ends after ``length`` steps. ``length`` is the constructor's one keyword; ``built``
    records it for every env made, so the tests can see what reached the constructor."""

    metadata = {"render_modes": []}
    built: list[int] = []

    def __init__(self, length: int = 8) -> None:
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        self.length = length
        NoRenderEnv.built.append(length)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t, self.target = 0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / self.length, self.target], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.target = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.target)
        self.t += 1
        self.target = int(self.np_random.integers(2))
        return self._obs(), reward, self.t >= self.length, False, {}


class Marked(gym.Wrapper):
    """A wrapper that only marks the env with its keyword (``made`` records every mark)."""

    made: list[str] = []

    def __init__(self, env: gym.Env, mark: str = "marked") -> None:
        super().__init__(env)
        self.mark = mark
        Marked.made.append(mark)


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=NoRenderEnv)
