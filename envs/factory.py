"""Builders for single and vector environments with the wrappers our agents expect."""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from envs.registration import DEEP_SEA_ID, register_envs
from envs.wrappers import ObservationNoiseWrapper
from envs.wrapping import WrapperSpec, apply_wrappers, resolve_wrappers

__all__ = ["make_env", "make_vec_env"]


def make_env(
    env_id: str,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    wrapper: WrapperSpec = None,
    wrapper_kwargs: Mapping[str, Any] | None = None,
    observation_noise: float = 0.0,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """``gym.make`` with our ids registered, optional observation noise and wrappers.

    ``env_id`` may be Gymnasium's ``"module:EnvId"``, which imports ``module`` (where the
    id is registered) first. ``env_kwargs`` (and any other keyword) go to the env's
    constructor; ``render_mode`` is passed only when one is asked for, as ``gym.make``
    users do, since many constructors (most of POPGym's) take none. ``wrapper``: a class,
    callable or import path (or a list of them, or RL Zoo's ``{path: kwargs}``; see
    :mod:`envs.wrapping`), applied after the noise with ``wrapper_kwargs``.

    An unknown id, a module that cannot be imported, a missing optional dependency (e.g.
    box2d for ``LunarLander``), a render mode the env lacks, a bad wrapper and any error
    the env's constructor raises (e.g. a bad keyword) raise ``ValueError`` naming the id.
    """
    wrappers = resolve_wrappers(wrapper, wrapper_kwargs)  # a bad path fails before any work
    name = _registered_name(env_id)
    env = _build(env_id, name, render_mode, {**(env_kwargs or {}), **kwargs})
    # the wrappers go beneath gym.make's env checker: some (POPGym's) accept only the bare
    # env, and the checker then checks what the agent sees
    checked = bool(wrappers) and isinstance(env, gym.wrappers.PassiveEnvChecker)
    if checked:
        env = env.env
    if observation_noise:
        env = ObservationNoiseWrapper(env, observation_noise)
    env = apply_wrappers(env, wrappers)
    return gym.wrappers.PassiveEnvChecker(env) if checked else env


def _registered_name(env_id: str) -> str:
    """The registry name of ``env_id`` after importing its ``module:`` (clear errors)."""
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
        package = name.split("-")[0]
        if not module and package.isidentifier() and importlib.util.find_spec(package):
            hint += f"; did you mean {package + ':' + env_id!r} (which imports {package})?"
        raise ValueError(f"unknown environment id {env_id!r}{hint}; registered ids include "
                         f"{sorted(k for k in gym.registry if 'NoVel' in k) + [DEEP_SEA_ID]}"
                         " and Gymnasium's own"
                         " (an id registered by another package: 'package:EnvId')")
    return name


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line, without the kwargs ``gym.make`` appends (we name them)."""
    text = str(exc).split(" was raised from the environment creator")[0]
    return " ".join(f"{type(exc).__name__}: {text}".split())


def _build(env_id: str, name: str, render_mode: str | None, kwargs: dict[str, Any]
           ) -> gym.Env:
    """``gym.make(name, **kwargs)``, with ``render_mode`` only when asked for; what the
    constructor raises becomes one ``ValueError`` line naming the id."""
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        with warnings.catch_warnings():  # refused below, with the id and the mode
            warnings.filterwarnings("ignore", message=".*not in the possible render_modes")
            env = gym.make(name, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        raise ValueError(f"environment {env_id!r} needs an optional dependency: {exc}"
                         ) from None
    except Exception as exc:  # the env's own constructor: a bad keyword, a bad value
        if render_mode is not None and isinstance(exc, TypeError) \
                and "unexpected keyword argument 'render_mode'" in str(exc):
            raise _cannot_render(env_id, render_mode, "its constructor takes no render_mode"
                                 ) from None
        raise ValueError(f"environment {env_id!r} could not be built with "
                         f"{_shown(kwargs)}: {_one_line(exc)}") from None
    if render_mode is not None:
        modes = env.metadata.get("render_modes") or []
        if render_mode not in modes or env.render_mode != render_mode:
            env.close()
            raise _cannot_render(env_id, render_mode, f"its render modes are {list(modes)}")
    return env


def _shown(kwargs: Mapping[str, Any]) -> str:
    return f"keyword arguments {dict(kwargs)}" if kwargs else "no keyword arguments"


def _cannot_render(env_id: str, render_mode: str, why: str) -> ValueError:
    return ValueError(f"environment {env_id!r} cannot render in mode {render_mode!r} ({why})")


def make_vec_env(
    env_id: str | Callable[..., gym.Env],
    n_envs: int = 1,
    *,
    seed: int | None = None,
    vectorization: str = "sync",
    autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
    observation_noise: float = 0.0,
    env_kwargs: Mapping[str, Any] | None = None,
    wrapper_class: WrapperSpec = None,
    wrapper_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """``n_envs`` copies of a task as a Gymnasium vector env (``"sync"`` or ``"async"``).

    ``env_id`` is an id for :func:`make_env` or a function that builds the env (called
    with ``env_kwargs``, as SB3's ``make_vec_env`` does). ``env_kwargs``, ``wrapper_class``
    and ``wrapper_kwargs`` are SB3's names; the wrapper may also be an import path or a
    list (:mod:`envs.wrapping`). Each copy records episode statistics
    (``info["episode"]``) of the wrapped env, as the evaluation env sees it. With ``seed``
    the vector env is reset once with ``seed`` (copy ``i`` gets ``seed + i``) and its
    action space is seeded, so a run is reproducible.
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    if vectorization not in ("sync", "async"):
        raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    wrappers = resolve_wrappers(wrapper_class, wrapper_kwargs)
    env_kwargs = {**(env_kwargs or {}), **kwargs}

    def thunk() -> gym.Env:
        if callable(env_id):
            base = apply_wrappers(env_id(**env_kwargs), wrappers)
        else:
            base = make_env(env_id, env_kwargs=env_kwargs, wrapper=wrappers,
                            observation_noise=observation_noise)
        return gym.wrappers.RecordEpisodeStatistics(base)

    if not callable(env_id):  # fail fast, in this process, on a bad id, keyword or wrapper
        make_env(env_id, env_kwargs=env_kwargs, wrapper=wrappers).close()
    cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
    venv = cls([thunk for _ in range(n_envs)], autoreset_mode=autoreset_mode)
    if seed is not None:
        venv.reset(seed=seed)
        venv.action_space.seed(seed)
    return venv
