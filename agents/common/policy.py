"""The acting policy, Stable-Baselines3's ``model.policy``: the liquid actor with what it
needs to act in an environment's spaces (observation encoding and statistics, action
scaling), ``predict`` with the sb3-contrib RecurrentPPO contract, and its own file; and
SB3's policy names, which the agents accept as their first argument.

A policy saved on its own is what a deployment needs, without the critics, optimisers
or replay:

>>> agent.policy.save("pendulum_policy")                 # doctest: +SKIP
>>> policy = LiquidPolicy.load("pendulum_policy")        # doctest: +SKIP
>>> action, state = policy.predict(obs, state, deterministic=True)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.common import files
from agents.common.actor import LiquidActor
from agents.common.normalization import ObservationNormalizer
from agents.driver.spaces import ActionAdapter, ObservationEncoder
from velora_ens.training.device import select_device

__all__ = ["POLICY_ALIASES", "LiquidPolicy", "resolve_env"]

POLICY_FORMAT = "velora_ens.policy/1"
# Stable-Baselines3's names of its default policies, accepted as the first argument (an
# agent's policy is its liquid actor; these names only say "the default one")
POLICY_ALIASES = ("MlpPolicy", "MultiInputPolicy")


def resolve_env(agent: str, policy: Any, env: Any,
                aliases: tuple[str, ...] = POLICY_ALIASES) -> Any:
    """SB3's ``Algo("MlpPolicy", env)`` or ours, ``Algo(env)``: the environment.
    ``aliases``: the policy names the agent accepts."""
    if env is None:
        if policy is None:
            raise ValueError(f"{agent} needs an environment: {agent}(env) or SB3's "
                             f"{agent}('MlpPolicy', env)")
        if isinstance(policy, str) and policy in aliases:
            raise ValueError(f"{agent}({policy!r}) needs an environment as well: "
                             f"{agent}({policy!r}, env)")
        return policy
    if policy is None or (isinstance(policy, str) and policy in aliases):
        return env
    raise ValueError(f"policy {policy!r} is not available: {agent}'s policy is its liquid "
                     f"network; pass one of {list(aliases)} (Stable-Baselines3's names, "
                     f"accepted for compatibility) or only the environment")


class LiquidPolicy(nn.Module):
    """The actor that acts, with the spaces it acts in.

    Args:
        actor: the liquid actor.
        observation_space: the environment's (single-copy) observation space.
        action_space: the environment's (single-copy) action space.
        obs_normalizer: the observation statistics the actor reads through, if any.
        elapsed_time_unit: the elapsed time the cells see as 1, for agents trained with
            the elapsed time between observations (``predict(..., elapsed_time=)``).
    """

    def __init__(self, actor: LiquidActor, observation_space: gym.Space,
                 action_space: gym.Space, obs_normalizer: ObservationNormalizer | None = None,
                 elapsed_time_unit: float | None = None) -> None:
        super().__init__()
        self.elapsed_time_unit = elapsed_time_unit
        self.actor = actor
        self.obs_normalizer = obs_normalizer
        self.observation_space, self.action_space = observation_space, action_space
        self.encoder = ObservationEncoder(observation_space)
        self.actions = ActionAdapter(action_space)

    @property
    def device(self) -> torch.device:
        return next(self.actor.parameters()).device

    @property
    def state_size(self) -> int:
        """Size of the recurrent state per observation."""
        return self.actor.state_dim

    def normalized(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.obs_normalizer is None else self.obs_normalizer(obs)

    def act(self, obs: torch.Tensor, state: torch.Tensor | None, deterministic: bool,
            dt: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """Policy-range actions (``[-1, 1]`` vectors or indices) and the next state for
        encoded, normalised observations ``(n, obs_dim)`` (``dt``: their elapsed times
        ``(n, 1)`` in the cells' units)."""
        out, state = self.actor(obs, state, dt=dt)
        return self.actor.act(out, deterministic, features=state).cpu().numpy(), state

    def predict(self, observation: Any, state: np.ndarray | None = None,
                episode_start: np.ndarray | None = None, deterministic: bool = False,
                elapsed_time: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Actions for one observation or a batch, and the next recurrent state
        ``(n, state_size)``: the sb3-contrib RecurrentPPO contract, so
        ``stable_baselines3.common.evaluation.evaluate_policy`` works unchanged.

        ``state=None`` starts from zeros; ``episode_start[i]`` resets sample ``i`` first.
        Observations are encoded as for training (see :mod:`agents.driver.spaces`).
        ``elapsed_time`` (optional): the time since each sample's previous observation,
        as the environment reports it (``info["elapsed_time"]`` of
        :class:`envs.IrregularTiming`), for agents trained with ``elapsed_time_key``; it
        is divided by their ``elapsed_time_unit``. Left out, the cells take their default
        of 1 (one nominal step).
        """
        encoder = self.encoder
        batched = encoder.is_batched(observation)
        try:
            obs = np.asarray(encoder.encode(observation, batched), dtype=np.float32)
        except ValueError as exc:
            raise ValueError(f"predict: {exc}") from None
        if not batched:
            obs = obs[None]
        if obs.ndim != 2 or obs.shape[1] != encoder.dim:
            raise ValueError(f"predict: expected an observation of shape ({encoder.dim},) or "
                             f"(n, {encoder.dim}), got {np.shape(observation)}")
        if not np.all(np.isfinite(obs)):
            bad = np.argwhere(~np.isfinite(obs))[0].tolist()[0 if batched else 1:]
            raise ValueError(f"predict got a non-finite observation (entry {bad}): "
                             f"{observation!r:.80}")
        device = self.device
        with torch.no_grad():
            h = None
            if state is not None:
                h = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=device)
                expected = (len(obs), self.state_size)
                if tuple(h.shape) != expected:
                    raise ValueError(f"predict: state has shape {tuple(h.shape)}, expected "
                                     f"{expected} (one state per observation)")
                if episode_start is not None:
                    keep = 1.0 - torch.as_tensor(np.asarray(episode_start),
                                                 dtype=torch.float32, device=device)
                    h = h * keep.reshape(-1, 1)
            dt = self._elapsed(elapsed_time, len(obs), device)
            actions, h = self.act(self.normalized(torch.as_tensor(obs, device=device)), h,
                                  deterministic, dt)
        action = self.actions.to_env(actions)
        return (action if batched else action[0]), h.cpu().numpy()

    def _elapsed(self, elapsed_time: Any, n: int, device: torch.device) -> torch.Tensor | None:
        if elapsed_time is None:
            return None
        dt = np.asarray(elapsed_time, dtype=np.float64).reshape(-1)
        if dt.size == 1:
            dt = np.repeat(dt, n)
        if dt.shape != (n,) or not np.all(np.isfinite(dt)) or np.any(dt < 0):
            raise ValueError(f"predict: elapsed_time must be one finite number >= 0 per "
                             f"observation ({n}), got {elapsed_time!r:.80}")
        dt = dt / (self.elapsed_time_unit or 1.0)
        return torch.as_tensor(dt, dtype=torch.float32, device=device).reshape(n, 1)

    # ------------------------------------------------------------------ its own file
    def save(self, path: str | os.PathLike) -> Path:
        """Write the policy alone (safetensors, atomically; ``.safetensors`` is appended
        when ``path`` has no suffix); returns the path."""
        meta = {"format": POLICY_FORMAT, "actor": self.actor.config,
                "observation_space": files.space_to_json(self.observation_space),
                "action_space": files.space_to_json(self.action_space),
                "normalizer": self.obs_normalizer is not None}
        if self.elapsed_time_unit is not None:
            meta["elapsed_time_unit"] = self.elapsed_time_unit
        tensors = {k: v for k, v in self.state_dict().items()}
        return files.write_document(files.resolve_save_path(path), meta, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "auto") -> LiquidPolicy:
        """A policy written by :meth:`save` (``path`` with or without its suffix); never
        unpickles anything."""
        meta, tensors = files.read_document(path, formats=(POLICY_FORMAT,))
        observation_space = files.space_from_json(meta["observation_space"])
        action_space = files.space_from_json(meta["action_space"])
        config = dict(meta["actor"])
        actor = LiquidActor(config.pop("obs_dim"), action_space, config.pop("n_neurons"),
                            **config)
        normalizer = ObservationNormalizer(actor.config["obs_dim"]) if meta["normalizer"] \
            else None
        policy = cls(actor, observation_space, action_space, normalizer,
                     meta.get("elapsed_time_unit"))
        files.load_module(meta["path"], "policy", policy, tensors, {})
        return policy.to(select_device(device, allow_mps=False))
