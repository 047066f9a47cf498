"""Saving and loading agents: one safetensors file, nothing pickled.

The file holds every tensor (networks, target networks, optimiser moments, the
temperature, observation statistics, and optionally the replay buffer and the rollout
state) and, in the safetensors header's metadata, one JSON document: the format tag, the
constructor's arguments, the spaces, counters, random-generator states and a SHA-256 of
the tensors. It is written to a temporary file and moved into place (``os.replace``), so
a crash mid-write leaves the previous file intact. Loading parses JSON and raw tensor
bytes only: a pickle, a truncated file or edited tensors are refused with a clear error
and nothing in them is executed.

Exact resume (``include_buffer=True``) also needs the environments' state, which
Gymnasium cannot serialise in general. The agent keeps a log of every action batch it
sent to its vector env since the seeded reset; loading rebuilds the environments from
their id (or takes ``env=``), resets them with the same seed and replays the log, then
checks that the observation it ends on is the saved one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from velora_ens.training.checkpoint import (
    flatten_optimizer_state,
    unflatten_optimizer_state,
    write_file_atomic,
)

if TYPE_CHECKING:
    from agents.neuroflow import NeuroFlow

__all__ = ["FORMAT", "ActionLog", "load_agent", "read_agent_file", "save_agent"]

FORMAT = "velora_ens.neuroflow/1"
_META_KEY = "velora_ens"
_BUFFER_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "episode_start",
                  "states", "pos", "size")


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


# ------------------------------------------------------------------------------ helpers
def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _space_to_json(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    def bounds(values: np.ndarray) -> list:  # JSON has no infinities: write them as text
        return [v if np.isfinite(v) else str(v) for v in values.astype(np.float64).ravel()]

    return {"type": "Box", "shape": list(space.shape), "low": bounds(space.low),
            "high": bounds(space.high)}


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _modules(agent: NeuroFlow) -> dict[str, torch.nn.Module]:
    mods = {"actor": agent.actor, "critics": agent.critics,
            "critic_targets": agent.critic_targets}
    for name in ("actor_target", "critic_encoder", "obs_normalizer"):
        if getattr(agent, name) is not None:
            mods[name] = getattr(agent, name)
    return mods


def _optimizers(agent: NeuroFlow) -> dict[str, torch.optim.Optimizer]:
    return {"adam": agent.optimizer}


def _json_config(agent: NeuroFlow) -> tuple[dict[str, Any], bool]:
    """The constructor's arguments as JSON; a callable learning rate cannot be stored, so
    the rate in use is stored instead (``True`` is returned to say so)."""
    config = dict(agent.config)
    lost_schedule = callable(config.get("learning_rate"))
    if lost_schedule:
        config["learning_rate"] = agent.optimizer.param_groups[0]["lr"]
    for key, value in config.items():
        if isinstance(value, tuple):
            config[key] = list(value)
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save the agent: a constructor argument is not JSON-able "
                         f"({exc})") from None
    return config, lost_schedule


# ------------------------------------------------------------------------------ save
def save_agent(agent: NeuroFlow, path: str | os.PathLike, include_buffer: bool = False) -> Path:
    """Write ``agent`` to ``path`` (``.safetensors`` is appended when there is no
    suffix); returns the path written."""
    from safetensors.torch import save

    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".safetensors")
    config, lost_schedule = _json_config(agent)
    tensors: dict[str, torch.Tensor] = {"log_alpha": agent.log_alpha.detach().reshape(1)}
    for name, module in _modules(agent).items():
        tensors.update(_prefixed(name, module.state_dict()))
    optim_meta = {}
    for name, opt in _optimizers(agent).items():
        flat, meta = flatten_optimizer_state(opt.state_dict(), prefix=f"optim.{name}")
        tensors.update(flat)
        optim_meta[name] = meta
    meta: dict[str, Any] = {
        "format": FORMAT,
        "class": type(agent).__name__,
        "env_id": agent.env_id,
        "config": config,
        "learning_rate_schedule_not_saved": lost_schedule,
        "observation_space": _space_to_json(agent.observation_space),
        "action_space": _space_to_json(agent.action_space),
        "num_timesteps": agent.num_timesteps,
        "n_updates": agent.n_updates,
        "update_budget": agent._update_budget,
        "ep_info_buffer": list(agent.ep_info_buffer),
        "last_losses": agent.last_losses,
        "optimizers": optim_meta,
        "include_buffer": bool(include_buffer),
    }
    if include_buffer:
        buf = agent.buffer
        # before the rings wrap around, only their filled start is worth storing
        wrapped = bool((buf.size == buf.capacity).any() or (buf.pos != buf.size).any())
        stored = buf.capacity if wrapped else int(buf.size.max())
        meta["buffer_steps_stored"] = stored
        for field in _BUFFER_FIELDS:
            value = getattr(buf, field)
            if value.ndim >= 2:  # (n_envs, capacity, ...) arrays; pos and size are (n_envs,)
                value = value[:, :stored]
            tensors[f"buffer.{field}"] = torch.from_numpy(np.ascontiguousarray(value))
        started = agent._obs is not None
        meta["rollout_started"] = started
        if started:
            tensors["rollout.obs"] = torch.from_numpy(np.asarray(agent._obs))
            tensors["rollout.state"] = agent._state
            tensors["rollout.episode_start"] = torch.from_numpy(agent._episode_start)
            tensors["rollout.pending_reset"] = torch.from_numpy(agent._pending_reset)
            tensors["env.actions"] = torch.from_numpy(np.ascontiguousarray(
                agent._action_log.array()))
        tensors["rng.torch"] = torch.get_rng_state()
        meta["rng_numpy"] = agent.rng.bit_generator.state
        meta["rng_action_space"] = agent.action_space.np_random.bit_generator.state
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta["sha256"] = _digest(flat)
    text = json.dumps(meta, sort_keys=True, allow_nan=False)
    blob = save(flat, metadata={_META_KEY: text})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda p: p.write_bytes(blob))
    return path


# ------------------------------------------------------------------------------ load
def read_agent_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a saved agent, validated; never unpickles."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved agent at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a saved velora_ens agent: it is not a valid "
                         f"safetensors file (truncated or another format: {exc})") from None
    if _META_KEY not in header:
        raise ValueError(f"{path} is a safetensors file but not a saved velora_ens agent "
                         f"(no {_META_KEY!r} metadata)")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the agent description is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    digest = _digest(tensors)
    if digest != meta.get("sha256"):
        raise ValueError(f"{path}: the tensors do not match the checksum written with them "
                         f"(sha256 {digest[:12]}..., expected {str(meta.get('sha256'))[:12]}...);"
                         " the file was modified or damaged")
    return meta, tensors


def _check_space(name: str, saved: dict[str, Any], space: gym.Space) -> None:
    if _space_to_json(space) != saved:
        raise ValueError(f"the environment's {name} {space} does not match the saved agent's "
                         f"({saved})")


def load_agent(cls: type[NeuroFlow], path: str | os.PathLike, env: Any = None,
               **overrides: Any) -> NeuroFlow:
    """Rebuild an agent saved by :func:`save_agent`; ``overrides`` replace constructor
    arguments (for example a learning-rate callable, which cannot be saved)."""
    meta, tensors = read_agent_file(path)
    if meta["class"] != cls.__name__:
        raise ValueError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
    if env is None:
        env = meta["env_id"]
        if env is None:
            raise ValueError(f"{path} was trained on an environment instance, not an id; "
                             "pass env= to load it")
    config = dict(meta["config"])
    if isinstance(config.get("critic_hidden"), list):
        config["critic_hidden"] = tuple(config["critic_hidden"])
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown constructor arguments {sorted(unknown)}; expected some of "
                         f"{sorted(config)}")
    if meta.get("learning_rate_schedule_not_saved") and "learning_rate" not in overrides:
        warnings.warn(f"{path} was trained with a learning-rate callable, which cannot be "
                      f"saved; it continues with the constant rate "
                      f"{config['learning_rate']:g} (pass learning_rate= to load to set one)",
                      stacklevel=3)
    config.update(overrides)
    agent = cls(env, **config)
    _check_space("observation space", meta["observation_space"], agent.observation_space)
    _check_space("action space", meta["action_space"], agent.action_space)

    with torch.no_grad():
        agent.log_alpha.copy_(tensors["log_alpha"].reshape(()))
    for name, module in _modules(agent).items():
        module.load_state_dict(_unprefixed(name, tensors))
    for name, opt in _optimizers(agent).items():
        lr = opt.param_groups[0]["lr"]  # the constructor's (possibly overridden) rate
        opt.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizers"][name]))
        if "learning_rate" in overrides:
            for group in opt.param_groups:
                group["lr"] = lr
    agent.num_timesteps = int(meta["num_timesteps"])
    agent.n_updates = int(meta["n_updates"])
    agent._update_budget = float(meta["update_budget"])
    agent.ep_info_buffer.extend(meta["ep_info_buffer"])
    agent.last_losses = dict(meta["last_losses"])
    if meta["include_buffer"]:
        _restore_training_state(agent, meta, tensors, path)
    return agent


def _restore_training_state(agent: NeuroFlow, meta: dict[str, Any],
                            tensors: dict[str, torch.Tensor], path: Any) -> None:
    buf = agent.buffer
    for field in _BUFFER_FIELDS:
        value = tensors[f"buffer.{field}"].numpy()
        target = getattr(buf, field)
        if value.ndim >= 2:
            if value.shape[0] != target.shape[0] or value.shape[2:] != target.shape[2:] \
                    or value.shape[1] > target.shape[1]:
                raise ValueError(f"{path}: the saved replay buffer's {field} has shape "
                                 f"{value.shape}, which does not fit this agent's "
                                 f"{target.shape} (buffer_size or n_envs differ)")
            target[:, :value.shape[1]] = value
        elif value.shape != target.shape:
            raise ValueError(f"{path}: the saved replay buffer's {field} has shape "
                             f"{value.shape}, this agent's {target.shape} (n_envs differ)")
        else:
            target[...] = value
    agent.rng.bit_generator.state = meta["rng_numpy"]
    agent.action_space.np_random.bit_generator.state = meta["rng_action_space"]
    if meta["rollout_started"]:
        actions = tensors["env.actions"].numpy()
        saved_obs = tensors["rollout.obs"].numpy()
        if agent.seed is None:
            warnings.warn(f"{path}: the agent was trained without a seed, so its "
                          "environments cannot be rebuilt; training resumes with new "
                          "episodes", stacklevel=4)
        else:
            obs, _ = agent.env.reset(seed=agent.seed)
            for batch in actions:
                obs = agent.env.step(batch)[0]
            if not np.array_equal(obs, saved_obs):
                raise ValueError(
                    f"{path}: replaying the saved actions did not bring the environment back "
                    "to the saved observation (is it deterministic for a seed?); load it "
                    "with a deterministic environment or save without include_buffer")
            agent._obs = obs
            agent._state = tensors["rollout.state"].clone()
            agent._episode_start = tensors["rollout.episode_start"].numpy().copy()
            agent._pending_reset = tensors["rollout.pending_reset"].numpy().copy()
            agent._action_log = ActionLog.from_array(actions)
    torch.set_rng_state(tensors["rng.torch"])
