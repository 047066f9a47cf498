"""Bridges between Stable-Baselines3's ``VecEnv`` and Gymnasium's vector envs.

The agents step Gymnasium vector envs. SB3 users bring SB3 ``VecEnv``s
(``make_vec_env``, ``DummyVecEnv``, ``SubprocVecEnv``, ``VecNormalize``, ...) and expect
``model.get_env()`` to return one (``obs = vec_env.reset()``, four-tuple ``step``):

* :class:`GymnasiumFromSB3`: a Gymnasium vector env over an SB3 ``VecEnv``, in
  ``SAME_STEP`` autoreset mode (SB3 resets a finished copy within the step and returns
  its last observation as ``info["terminal_observation"]``, which becomes
  ``info["final_obs"]``; ``TimeLimit.truncated`` becomes ``truncated``).
* :class:`SB3FromGymnasium`: an SB3 ``VecEnv`` view of a Gymnasium vector env, with SB3's
  semantics in either autoreset mode (a finished copy is reset in the same ``step``; its
  last observation is in ``infos[i]["terminal_observation"]``).
* :func:`split_infos`: Gymnasium's dict-of-arrays ``info`` as SB3's list of dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

__all__ = ["GymnasiumFromSB3", "SB3FromGymnasium", "split_infos"]


def _item(value: Any, i: int) -> Any:
    """Copy ``i``'s entry of a vector info value (nested dicts keep their own masks)."""
    if not isinstance(value, dict):
        return value[i]
    out = {}
    for key, entry in value.items():
        mask = value.get("_" + key)
        if not key.startswith("_") and (mask is None or mask[i]):
            out[key] = _item(entry, i)
    return out


def split_infos(info: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's vector ``info`` (arrays with ``_key`` masks) as one dict per copy.

    The final step's info of a ``SAME_STEP`` autoreset (``final_info``) is merged into its
    copy's dict, so ``infos[i]["episode"]`` is there on the step an episode ends, as with
    SB3's ``Monitor``."""
    infos: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get("_" + key)
        for i in range(n):
            if mask is None or mask[i]:
                infos[i][key] = _item(value, i)
    for entry in infos:
        final = entry.pop("final_info", None)
        if isinstance(final, dict):
            for key, value in final.items():
                entry.setdefault(key, value)
    return infos


class GymnasiumFromSB3(gym.vector.VectorEnv):
    """A Gymnasium vector env (``SAME_STEP`` autoreset) over an SB3 ``VecEnv``."""

    def __init__(self, venv: VecEnv) -> None:
        self.venv = venv
        self.num_envs = venv.num_envs
        self.single_observation_space = venv.observation_space
        self.single_action_space = venv.action_space
        self.observation_space = batch_space(venv.observation_space, self.num_envs)
        self.action_space = batch_space(venv.action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self.render_mode = getattr(venv, "render_mode", None)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.venv.seed(seed)  # SB3: copy i gets seed + i at the next reset, as Gymnasium
        if options is not None:
            self.venv.set_options(options)
        return self.venv.reset(), {}

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[str, Any]]:
        obs, rewards, dones, infos = self.venv.step(actions)
        dones = np.asarray(dones, dtype=bool)
        truncated = dones & np.array([bool(i.get("TimeLimit.truncated", False)) for i in infos])
        info: dict[str, Any] = {}
        if dones.any():
            final = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(dones):
                final[i] = infos[i].get("terminal_observation")
            info["final_obs"], info["_final_obs"] = final, dones.copy()
        episodes = [i for i, entry in enumerate(infos) if "episode" in entry]
        if episodes:
            mask = np.zeros(self.num_envs, bool)
            mask[episodes] = True
            stats = {k: np.zeros(self.num_envs) for k in ("r", "l", "t")}
            for i in episodes:
                for k in stats:
                    stats[k][i] = infos[i]["episode"].get(k, 0.0)
            info["episode"], info["_episode"] = stats, mask
        return obs, np.asarray(rewards), dones & ~truncated, truncated, info

    def render(self) -> Any:
        return self.venv.get_images()

    def close(self, **kwargs: Any) -> None:
        self.venv.close()


class SB3FromGymnasium(DummyVecEnv):
    """An SB3 ``VecEnv`` over a Gymnasium vector env (what ``agent.get_env()`` returns).

    It steps the same environments the agent trains on, as SB3's ``model.get_env()``
    does: stepping or resetting it outside ``learn`` calls ``on_use`` (the agent then
    starts new episodes at its next ``learn`` call). ``env_is_wrapped(Monitor)`` is true
    for copies that record episode statistics with Gymnasium's
    ``RecordEpisodeStatistics``, which fills ``info["episode"]`` as ``Monitor`` does.

    It is a ``DummyVecEnv`` for SB3's type checks (``EvalCallback`` warns when the
    training and evaluation envs differ in type) and, like one, has ``envs`` (the copies,
    for a synchronous vector env); every method is its own.
    """

    def __init__(self, env: gym.vector.VectorEnv,
                 on_use: Callable[[], None] | None = None) -> None:
        self.env = env
        self.on_use = on_use
        self._actions: np.ndarray | None = None
        VecEnv.__init__(self, env.num_envs, env.single_observation_space,
                        env.single_action_space)

    @property
    def envs(self) -> list[gym.Env]:  # type: ignore[override]
        envs = getattr(self.env, "envs", None)
        if envs is None:
            raise AttributeError("the copies of an asynchronous vector env live in other "
                                 "processes; use get_attr/env_method")
        return list(envs)

    def render(self, mode: str | None = None) -> np.ndarray | None:
        return VecEnv.render(self, mode)

    def _used(self) -> None:
        if self.on_use is not None:
            self.on_use()

    def reset(self) -> Any:
        self._used()
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        options = self._options[0] if any(self._options) else None
        obs, info = self.env.reset(seed=seeds, options=options)
        self.reset_infos = split_infos(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        self._used()
        obs, rewards, terminated, truncated, info = self.env.step(self._actions)
        dones = np.asarray(terminated) | np.asarray(truncated)
        infos = split_infos(info, self.num_envs)
        if dones.any():
            if self.env.metadata.get("autoreset_mode") == AutoresetMode.SAME_STEP:
                final = info["final_obs"]
            else:  # NEXT_STEP: reset the finished copies now, as SB3 does
                final = [_copy(obs, i) for i in range(self.num_envs)]
                obs, reset_info = self.env.reset(options={"reset_mask": dones.copy()})
                for i, entry in enumerate(split_infos(reset_info, self.num_envs)):
                    if dones[i]:
                        self.reset_infos[i] = entry
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.env.call("render"))

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        values = self.env.get_attr(attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        current = list(self.env.get_attr(attr_name))
        for i in self._get_indices(indices):
            current[i] = value
        self.env.set_attr(attr_name, current)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        values = self.env.call(method_name, *method_args, **method_kwargs)
        return [values[i] for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None
                       ) -> list[bool]:
        envs = getattr(self.env, "envs", None)
        if envs is None:  # an AsyncVectorEnv: its copies live in other processes
            return [False for _ in self._get_indices(indices)]
        classes = (wrapper_class, gym.wrappers.RecordEpisodeStatistics) \
            if wrapper_class is Monitor else (wrapper_class,)
        return [_is_wrapped(envs[i], classes) for i in self._get_indices(indices)]


def _copy(obs: Any, i: int) -> Any:
    if isinstance(obs, dict):
        return {k: _copy(v, i) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_copy(v, i) for v in obs)
    return np.array(obs[i])


def _is_wrapped(env: gym.Env, classes: tuple[type, ...]) -> bool:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, classes):
            return True
        env = env.env
    return isinstance(env, classes)
