"""Tiny deterministic environments for the agent tests (not collected by pytest)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    """Observation ``[t, episode]``: ``t`` counts steps within the episode, ``episode``
    counts episodes. Ends after ``length`` steps, by termination or truncation.

    Every real transition has ``next_obs[0] == obs[0] + 1`` and the same episode number,
    which lets tests spot a transition that mixes two episodes.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 5, terminate: bool = True, discrete: bool = True) -> None:
        self.length, self.terminate = length, terminate
        self.observation_space = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)
        self.action_space = (gym.spaces.Discrete(2) if discrete
                             else gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
        self.t, self.episode = 0, -1

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.episode], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        end = self.t >= self.length
        return self._obs(), 1.0, end and self.terminate, end and not self.terminate, {}


class CueEnv(gym.Env):
    """A memory task: the first observation shows a cue (+1 or -1), later ones show 0.

    After ``delay`` blank steps the agent must pick the action matching the cue
    (Discrete(2): action 1 for +1) and gets reward 1 if right, else 0; the episode then
    terminates. A feed-forward policy cannot beat chance (0.5); a recurrent one can reach 1.
    """

    metadata = {"render_modes": []}

    def __init__(self, delay: int = 2) -> None:
        self.delay = delay
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t, self.cue = 0, 1.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.cue = 1.0 if self.np_random.random() < 0.5 else -1.0
        return np.array([self.cue, 0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t <= self.delay:
            return np.array([0.0, self.t / self.delay], dtype=np.float32), 0.0, False, False, {}
        reward = float((int(action) == 1) == (self.cue > 0))
        return np.array([0.0, 0.0], dtype=np.float32), reward, True, False, {}


class _ZerosEnv(gym.Env):
    """Observes ``[0, 0]`` forever and counts its steps in ``t``; subclasses break it."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}


class BadEnv(_ZerosEnv):
    """Returns a NaN observation on its ``bad_step``-th step."""

    def __init__(self, bad_step: int = 3) -> None:
        super().__init__()
        self.bad_step = bad_step

    def step(self, action):
        self.t += 1
        obs = np.zeros(2, np.float32)
        if self.t == self.bad_step:
            obs[1] = np.nan
        return obs, 0.0, False, False, {}


class MalformedEnv(_ZerosEnv):
    """Breaks the Gymnasium contract on its third step: ``mode`` ``"shape"`` returns a
    3-vector for a 2-vector space, ``"reward"`` a string reward, ``"flag"`` an int flag."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def step(self, action):
        self.t += 1
        obs, reward, terminated = np.zeros(2, np.float32), 0.0, False
        if self.t == 3:
            if self.mode == "shape":
                obs = np.zeros(3, np.float32)
            elif self.mode == "reward":
                reward = "one"
            else:
                terminated = 1
        return obs, reward, terminated, False, {}
