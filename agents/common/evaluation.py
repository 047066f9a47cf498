"""Evaluate a policy on episodes of one environment, passing the elapsed time along.

Stable-Baselines3's ``evaluate_policy`` calls ``model.predict(obs, state, episode_start,
deterministic)``: it cannot hand a policy the time since the previous observation. This
one does the same evaluation on a single Gymnasium env and, for an agent trained with
``elapsed_time_key``, reads ``info[elapsed_time_key]`` after every reset and step and
passes it as ``predict(..., elapsed_time=)``. Any other model with SB3's recurrent
``predict`` (an SB3 or sb3-contrib model, a :class:`~agents.common.policy.LiquidPolicy`) is
evaluated as SB3 would.

>>> import gymnasium as gym, envs
>>> from agents import NeuroFlow, evaluate_policy
>>> model = NeuroFlow("PendulumNoVelIrregular-v1", elapsed_time_key="elapsed_time",
...                   elapsed_time_unit=0.05, seed=0)
>>> mean, std = evaluate_policy(model, gym.make("PendulumNoVelIrregular-v1"),
...                             n_eval_episodes=2, seed=0)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from velora_ens._validation import check_int

__all__ = ["elapsed_time_kwargs", "evaluate_policy"]


def elapsed_time_kwargs(model: Any, info: dict[str, Any], episode: int, step: int
                        ) -> dict[str, float]:
    """``{"elapsed_time": info[key]}`` for a model built with ``elapsed_time_key=key``
    (``{}`` for any other model): the extra argument its ``predict`` takes at ``step`` of
    ``episode`` (named in the error when ``info`` lacks the key)."""
    key = getattr(model, "elapsed_time_key", None)
    if key is None:
        return {}
    if key not in info:
        raise ValueError(f"the environment's info has no {key!r} at step {step} of episode "
                         f"{episode}; the model reads the time since the previous "
                         f"observation from there (elapsed_time_key={key!r}): wrap the "
                         "environment in envs.IrregularTiming as for training")
    return {"elapsed_time": float(info[key])}


def evaluate_policy(model: Any, env: gym.Env, n_eval_episodes: int = 10,
                    deterministic: bool = True, return_episode_rewards: bool = False,
                    seed: int | None = None
                    ) -> tuple[float, float] | tuple[list[float], list[int]]:
    """Run ``n_eval_episodes`` episodes one after another and return the mean and standard
    deviation of their returns (or, with ``return_episode_rewards``, the returns and the
    lengths), as Stable-Baselines3's ``evaluate_policy``.

    Args:
        model: anything with SB3's ``predict(obs, state, episode_start, deterministic)``;
            if it has an ``elapsed_time_key`` (an agent built with that option), the
            elapsed time from ``info`` is passed to ``predict`` too.
        env: one Gymnasium environment (not a vector env).
        n_eval_episodes: episodes to run.
        deterministic: act with the policy's mode instead of sampling.
        return_episode_rewards: return the per-episode returns and lengths.
        seed: seeds the first reset (later resets continue its stream); ``None``: unseeded.
    """
    check_int("n_eval_episodes", n_eval_episodes, 1)
    if not isinstance(env, gym.Env):
        raise TypeError(f"evaluate_policy expects one gymnasium.Env, got {type(env).__name__} "
                        "(for a vector env use stable_baselines3.common.evaluation."
                        "evaluate_policy)")
    returns: list[float] = []
    lengths: list[int] = []
    for episode in range(n_eval_episodes):
        obs, info = env.reset(seed=seed if episode == 0 else None)
        state, start = None, np.ones(1, dtype=bool)
        total, length, done = 0.0, 0, False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start,
                                          deterministic=deterministic,
                                          **elapsed_time_kwargs(model, info, episode, length))
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            length += 1
            start = np.zeros(1, dtype=bool)
            done = bool(terminated or truncated)
        returns.append(total)
        lengths.append(length)
    if return_episode_rewards:
        return returns, lengths
    return float(np.mean(returns)), float(np.std(returns))
