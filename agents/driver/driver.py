"""The environment driver: every agent steps its vector env through :class:`EnvDriver`.

It owns what an algorithm should not have to think about: building a Gymnasium vector
env from what the user passed (an id, an env, a Gymnasium or SB3 vector env), action
scaling, checking and encoding what the environment returns, both of Gymnasium's
autoreset modes, episode statistics, and the log of every action batch sent since the
seeded reset (replaying it rebuilds the environments for an exact resume).

Autoreset modes (Gymnasium 1.x):

* ``NEXT_STEP`` (the default): the step after an episode ends only resets that copy; its
  row is not a transition (``EnvStep.valid`` is false there) and the observation it
  returns starts the new episode.
* ``SAME_STEP``: a finished copy is reset within the step; its real last observation is
  ``info["final_obs"]``, which becomes ``EnvStep.real_next_obs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from agents.driver.env_checks import CheckedEnv
from agents.driver.sb3 import GymnasiumFromSB3, SB3FromGymnasium, split_infos
from agents.driver.spaces import ActionAdapter, ObservationEncoder
from envs import make_vec_env

__all__ = ["ActionLog", "EnvDriver", "EnvStep", "as_vector_env"]


class ActionLog:
    """A growable array of the action batches sent to a vector env, one row per step."""

    def __init__(self) -> None:
        self._data: np.ndarray | None = None
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch)
        if self._data is None:
            self._data = np.empty((1024, *batch.shape), batch.dtype)
        elif self._len == len(self._data):
            self._data = np.concatenate([self._data, np.empty_like(self._data)])
        self._data[self._len] = batch
        self._len += 1

    def array(self) -> np.ndarray:
        return np.zeros(0) if self._data is None else self._data[: self._len]

    @classmethod
    def from_array(cls, data: np.ndarray) -> ActionLog:
        log = cls()
        if len(data):
            log._data, log._len = np.array(data), len(data)
        return log


def _is_sb3_vec_env(env: Any) -> bool:
    from stable_baselines3.common.vec_env import VecEnv

    return isinstance(env, VecEnv)


def _records_episodes(env: gym.Env) -> bool:
    from stable_baselines3.common.monitor import Monitor

    while True:
        if isinstance(env, (Monitor, gym.wrappers.RecordEpisodeStatistics)):
            return True
        if not isinstance(env, gym.Wrapper):
            return False
        env = env.env


def as_vector_env(env: Any, n_envs: int, seed: int | None, vectorization: str
                  ) -> gym.vector.VectorEnv:
    """A Gymnasium vector env for ``env``: an id (``n_envs`` copies), a
    ``gymnasium.Env`` (one copy), a Gymnasium vector env (as is) or a Stable-Baselines3
    ``VecEnv`` (adapted by :class:`~agents.driver.sb3.GymnasiumFromSB3`)."""
    if isinstance(env, str):
        return make_vec_env(env, n_envs, seed=seed, vectorization=vectorization)
    if isinstance(env, gym.vector.VectorEnv) or _is_sb3_vec_env(env):
        if n_envs not in (1, env.num_envs):
            raise ValueError(f"n_envs={n_envs} does not match the vector env's "
                             f"{env.num_envs} copies (leave n_envs at its default)")
        return env if isinstance(env, gym.vector.VectorEnv) else GymnasiumFromSB3(env)
    if isinstance(env, gym.Env):
        if n_envs != 1:
            raise ValueError(f"a single gymnasium.Env instance gives one stream; got n_envs="
                             f"{n_envs} (pass an environment id or a vector env instead)")
        checked = CheckedEnv(env)
        # episode statistics in info["episode"], unless a wrapper already records them
        # (SB3's Monitor and Gymnasium's RecordEpisodeStatistics refuse to be stacked)
        if not _records_episodes(env):
            checked = gym.wrappers.RecordEpisodeStatistics(checked)
        return gym.vector.SyncVectorEnv([lambda: checked])
    raise ValueError(f"env must be an environment id, a gymnasium.Env, a Gymnasium vector env "
                     f"or a Stable-Baselines3 VecEnv, got {type(env).__name__}")


@dataclass
class EnvStep:
    """One step of every copy. Arrays are ``(n_envs, ...)``; observations are encoded
    (flat float vectors, see :class:`~agents.driver.spaces.ObservationEncoder`)."""

    obs: np.ndarray            # the observations acted on
    episode_start: np.ndarray  # whether each of them starts an episode
    actions: np.ndarray        # the policy's actions ([-1, 1] vectors or indices)
    env_actions: np.ndarray    # what the environment was sent
    rewards: np.ndarray
    next_obs: np.ndarray       # what the next step acts on (after any autoreset)
    real_next_obs: np.ndarray  # the true successor (the last observation where one ended)
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray          # rows that are transitions (not NEXT_STEP reset rows)
    info: dict[str, Any]       # Gymnasium's vector info
    raw_next_obs: Any          # next_obs as the environment returned it
    episodes: list[dict[str, float]]  # {"r", "l"} of the episodes that ended

    @property
    def dones(self) -> np.ndarray:
        return self.terminated | self.truncated

    @property
    def n_transitions(self) -> int:
        return int(self.valid.sum())

    @property
    def n_finished(self) -> int:
        """Episodes that ended at a transition of this step."""
        return int(self.dones[self.valid].sum())

    def sb3_infos(self) -> list[dict[str, Any]]:
        """The step's infos as SB3 gives them to callbacks: one dict per copy, with
        ``terminal_observation`` and ``TimeLimit.truncated`` where an episode ended."""
        infos = split_infos(self.info, len(self.dones))
        for i in np.flatnonzero(self.dones):
            infos[i]["terminal_observation"] = self.real_next_obs[i]
            infos[i]["TimeLimit.truncated"] = bool(self.truncated[i] and not self.terminated[i])
        return infos


class EnvDriver:
    """Steps ``env`` for an agent: see the module docstring.

    Args:
        env: what the user passed as the agent's environment (see :func:`as_vector_env`).
        n_envs: copies when ``env`` is an id (see :func:`as_vector_env`).
        seed: the seed of the first reset of a new vector env.
        vectorization: ``"sync"`` or ``"async"`` for a new vector env.
    """

    def __init__(self, env: Any, n_envs: int = 1, seed: int | None = None,
                 vectorization: str = "sync") -> None:
        self.user_env = env if _is_sb3_vec_env(env) else None
        self.env = as_vector_env(env, n_envs, seed, vectorization)
        self.n_envs = self.env.num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.autoreset_mode = self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("vector envs with autoreset disabled are not supported; use "
                             "AutoresetMode.NEXT_STEP (Gymnasium's default) or SAME_STEP")
        self.encoder = ObservationEncoder(self.observation_space)
        self.actions = ActionAdapter(self.action_space)
        self.obs_dim = self.encoder.dim
        self.obs: np.ndarray | None = None  # None: the next rollout starts with a reset
        self.episode_start = np.ones(self.n_envs, dtype=bool)
        self.pending_reset = np.zeros(self.n_envs, dtype=bool)
        self.action_log = ActionLog()
        self._view: SB3FromGymnasium | None = None

    def check_can_replace(self, other: EnvDriver) -> None:
        """A clear error unless this driver's spaces and number of copies are ``other``'s
        (an agent's ``set_env``: its networks, replay and state are built for those)."""
        for name, old, new in (("observation space", other.observation_space,
                                self.observation_space),
                               ("action space", other.action_space, self.action_space)):
            if old != new:
                raise ValueError(f"set_env: the new environment's {name} {new} differs from "
                                 f"the agent's {old}")
        if self.n_envs != other.n_envs:
            raise ValueError(f"set_env: the new environment has {self.n_envs} copies, the "
                             f"agent was built for {other.n_envs} (its replay and state hold "
                             "one stream per copy)")

    # ------------------------------------------------------------------ user views
    def sb3_env(self) -> Any:
        """The environment as an SB3 ``VecEnv``: the user's own if they passed one, else a
        view of the Gymnasium vector env; using it outside the driver ends the rollout."""
        if self.user_env is not None:
            return self.user_env
        if self._view is None:
            self._view = SB3FromGymnasium(self.env, on_use=self.end_rollout)
        return self._view

    def end_rollout(self) -> None:
        """Forget the current observations: the next rollout starts with a seeded reset."""
        self.obs = None

    # ------------------------------------------------------------------ stepping
    def reset(self, seed: int | None) -> np.ndarray:
        """Reset every copy (with ``seed``) and start a new action log."""
        raw, _ = self.env.reset(seed=seed)
        self.action_log = ActionLog()
        self.obs = self.observations(raw, step=0)
        self.episode_start = np.ones(self.n_envs, dtype=bool)
        self.pending_reset = np.zeros(self.n_envs, dtype=bool)
        return self.obs

    def step(self, actions: np.ndarray, step: int) -> EnvStep:
        """Send the policy's ``actions`` to every copy; ``step`` (the agent's timestep
        count) names the step in error messages."""
        env_actions = self.actions.to_env(actions)
        self.action_log.append(env_actions)
        raw, rewards, terminated, truncated, info = self.env.step(env_actions)
        next_obs = self.observations(raw, step)
        self._check_reward(rewards, step)
        valid = ~self.pending_reset
        dones = terminated | truncated
        real_next = next_obs
        if self.autoreset_mode == AutoresetMode.SAME_STEP and dones.any():
            real_next = next_obs.copy()
            for i in np.flatnonzero(dones):
                final = self.encoder.encode(info["final_obs"][i], batched=False)
                self._check_finite("final observation", final, step)
                real_next[i] = final
        result = EnvStep(obs=self.obs, episode_start=self.episode_start, actions=actions,
                         env_actions=env_actions, rewards=rewards, next_obs=next_obs,
                         real_next_obs=real_next, terminated=terminated, truncated=truncated,
                         valid=valid, info=info, raw_next_obs=raw,
                         episodes=self._episodes(info, dones))
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self.episode_start = self.pending_reset.copy()
            self.pending_reset = dones & valid
        else:
            self.episode_start = dones.copy()
        self.obs = next_obs
        return result

    # ------------------------------------------------------------------ exact resume
    #: the arrays :meth:`resume_state` gives and :meth:`resume` takes
    RESUME_KEYS = ("rollout.obs", "rollout.episode_start", "rollout.pending_reset",
                   "env.actions")

    def resume_state(self) -> dict[str, np.ndarray]:
        """What rebuilds the current rollout (``{}`` before one starts): the observations
        acted on next, the episode-start and pending-reset flags, and the action log."""
        if self.obs is None:
            return {}
        return dict(zip(self.RESUME_KEYS, (np.asarray(self.obs), self.episode_start,
                                           self.pending_reset, self.action_log.array()),
                        strict=True))

    def resume(self, state: dict[str, np.ndarray], seed: int | None) -> bool:
        """Rebuild the environments of a :meth:`resume_state`: reset with ``seed`` and
        step the logged actions again; returns whether they came back to the saved
        observations (if not, the driver starts a new rollout)."""
        actions = state["env.actions"]
        raw, _ = self.env.reset(seed=seed)
        for batch in actions:
            raw = self.env.step(batch)[0]
        obs = self.encoder.encode(raw, batched=True)
        if not np.array_equal(obs, state["rollout.obs"]):
            self.end_rollout()
            return False
        self.action_log = ActionLog.from_array(actions)
        self.obs = obs
        self.episode_start = state["rollout.episode_start"].copy()
        self.pending_reset = state["rollout.pending_reset"].copy()
        return True

    # ------------------------------------------------------------------ checks
    def observations(self, raw: Any, step: int) -> np.ndarray:
        """Check a batch of raw observations and encode it ``(n_envs, obs_dim)``."""
        if self.encoder.identity:
            expected = (self.n_envs, self.obs_dim)
            if not isinstance(raw, np.ndarray) or raw.shape != expected \
                    or not np.issubdtype(raw.dtype, np.number):
                got = (f"{type(raw).__name__} of shape {np.shape(raw)} and dtype "
                       f"{getattr(raw, 'dtype', None)}")
                raise ValueError(f"the environment returned a malformed observation at step "
                                 f"{step}: expected a numeric array of shape {expected} (the "
                                 f"observation space {self.observation_space} for "
                                 f"{self.n_envs} copies), got a {got}")
            obs = raw
        else:
            try:
                obs = self.encoder.encode(raw, batched=True)
            except ValueError as exc:
                raise ValueError(f"the environment returned a malformed observation at step "
                                 f"{step}: {exc}") from None
        self._check_finite("observation", obs, step)
        return obs

    def _check_reward(self, reward: Any, step: int) -> None:
        if not isinstance(reward, np.ndarray) or reward.shape != (self.n_envs,) \
                or not np.issubdtype(reward.dtype, np.number):
            raise ValueError(f"the environment returned a malformed reward at step {step}: "
                             f"expected {self.n_envs} numbers, got {reward!r}")
        self._check_finite("reward", reward, step)

    @staticmethod
    def _check_finite(name: str, value: np.ndarray, step: int) -> None:
        if not np.all(np.isfinite(value)):
            bad = np.argwhere(~np.isfinite(np.asarray(value, dtype=np.float64)))[0].tolist()
            raise ValueError(f"the environment returned a non-finite {name} at step {step} "
                             f"(entry {bad}): {value!r}")

    def _episodes(self, info: dict[str, Any], dones: np.ndarray) -> list[dict[str, float]]:
        """The return and length of every episode that ended (``RecordEpisodeStatistics``
        or SB3's ``Monitor``); in ``SAME_STEP`` mode they are in ``final_info``."""
        source = info
        if "episode" not in info and isinstance(info.get("final_info"), dict):
            source = info["final_info"]
        episode = source.get("episode")
        if episode is None:
            return []
        mask = source.get("_episode", dones)
        return [{"r": float(episode["r"][i]), "l": int(episode["l"][i])}
                for i in np.flatnonzero(mask)]

