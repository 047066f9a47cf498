"""Builders for single and vector environments with the wrappers our agents expect."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from envs.registration import DEEP_SEA_ID, register_envs
from envs.wrappers import ObservationNoiseWrapper

__all__ = ["make_env", "make_vec_env"]


def make_env(
    env_id: str,
    *,
    observation_noise: float = 0.0,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """``gym.make`` with our ids registered and optional observation noise.

    ``env_id`` may be Gymnasium's ``"module:EnvId"``, which imports ``module`` (where the
    id is registered) first. An unknown id, a module that cannot be imported and a
    missing optional dependency (e.g. box2d for ``LunarLander``) raise ``ValueError``
    naming the id and what to do.
    """
    register_envs()
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"environment id {env_id!r}: cannot import {module!r} ({exc})"
                             ) from None
    if name not in gym.registry:
        try:  # Gymnasium's own words: "use Taxi-v4 instead", "did you mean ..."
            gym.spec(name)
            hint = ""
        except gym.error.Error as exc:
            hint = f" ({exc})"
        raise ValueError(f"unknown environment id {env_id!r}{hint}; registered ids include "
                         f"{sorted(k for k in gym.registry if 'NoVel' in k) + [DEEP_SEA_ID]}"
                         " and Gymnasium's own"
                         " (an id registered by another package: 'package:EnvId')")
    try:
        env = gym.make(name, render_mode=render_mode, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        raise ValueError(f"environment {env_id!r} needs an optional dependency: {exc}"
                         ) from None
    if observation_noise:
        env = ObservationNoiseWrapper(env, observation_noise)
    return env


def make_vec_env(
    env_id: str | Callable[[], gym.Env],
    n_envs: int = 1,
    *,
    seed: int | None = None,
    vectorization: str = "sync",
    autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
    observation_noise: float = 0.0,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """``n_envs`` copies of a task as a Gymnasium vector env (``"sync"`` or ``"async"``).

    Each copy records episode statistics (``info["episode"]``). With ``seed`` the vector
    env is reset once with ``seed`` (copy ``i`` gets ``seed + i``) and its action space is
    seeded, so a run is reproducible.
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    if vectorization not in ("sync", "async"):
        raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")

    def thunk() -> gym.Env:
        base = env_id() if callable(env_id) else make_env(
            env_id, observation_noise=observation_noise, **kwargs)
        return gym.wrappers.RecordEpisodeStatistics(base)

    if not callable(env_id):
        make_env(env_id, **kwargs).close()  # fail fast, in this process, on a bad id
    cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
    venv = cls([thunk for _ in range(n_envs)], autoreset_mode=autoreset_mode)
    if seed is not None:
        venv.reset(seed=seed)
        venv.action_space.seed(seed)
    return venv
