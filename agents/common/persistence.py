"""Saving and loading agents: one safetensors file, nothing pickled.

Written against :class:`~agents.common.base.BaseAgent`'s hooks only: it imports no algorithm,
and loading builds the class recorded in the file (every agent class registers itself
here when it is defined).

The file holds every tensor (networks, target networks, optimiser moments, the
algorithm's own tensors such as the temperature, observation statistics, and optionally
the replay buffer and the rollout state) and, in the safetensors header's metadata, one
JSON document: the format tag, the class, the constructor's arguments, the spaces,
counters, random-generator states, the system it was saved on and a SHA-256 of the
tensors. It is written to a temporary file and moved into place (``os.replace``), so a
crash mid-write leaves the previous file intact. Loading parses JSON and raw tensor
bytes only: a pickle, a truncated file or edited tensors are refused with a clear error
and nothing in them is executed.

Exact resume (``include_buffer=True``, or the separate training-state file of
``save_replay_buffer``) also needs the environments' state, which Gymnasium cannot
serialise in general. The driver keeps a log of every action batch sent to the vector
env since the seeded reset; loading rebuilds the environments, resets them with the
same seed and replays the log, then checks that the observation it ends on is the
saved one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from velora_ens.training.checkpoint import (
    flatten_optimizer_state,
    state_dict_mismatch,
    unflatten_optimizer_state,
    write_file_atomic,
)

if TYPE_CHECKING:
    from agents.common.base import BaseAgent

__all__ = ["FORMAT", "TRAINING_STATE_FORMAT", "agent_class", "load_agent", "load_module",
           "load_training_state", "read_agent_file", "register_agent_class", "resolve_load_path",
           "resolve_save_path", "save_agent", "save_training_state", "space_from_json",
           "space_to_json", "write_document"]

FORMAT = "velora_ens.agent/1"
# the same layout, written before agents had a common base (NeuroFlow only)
_READABLE = (FORMAT, "velora_ens.neuroflow/1")
TRAINING_STATE_FORMAT = "velora_ens.training_state/1"
SUFFIX = ".safetensors"
_META_KEY = "velora_ens"
_AGENT_CLASSES: dict[str, type] = {}


# ------------------------------------------------------------------------------ classes
def register_agent_class(cls: type) -> None:
    """Record ``cls`` under its name, so files naming it can be loaded."""
    _AGENT_CLASSES[cls.__name__] = cls


def agent_class(name: str) -> type:
    """The agent class a file names."""
    if name not in _AGENT_CLASSES:
        raise ValueError(f"the file holds a {name!r} agent, an unknown class (known: "
                         f"{sorted(_AGENT_CLASSES)}); import the module that defines it")
    return _AGENT_CLASSES[name]


# ------------------------------------------------------------------------------ paths
def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def resolve_save_path(path: Any) -> Path:
    """SB3's rule: the suffix is appended when ``path`` has none."""
    path = _as_path(path)
    if path.is_dir() and path.suffix:
        raise ValueError(f"cannot save to {path}: it is a directory")
    return path.with_suffix(SUFFIX) if not path.suffix else path


def resolve_load_path(path: Any) -> Path:
    """The file ``save(path)`` wrote: ``path`` itself, else ``path`` with the suffix
    (SB3's ``load`` finds what ``save`` wrote); a clear error otherwise."""
    path = _as_path(path)
    if path.is_file():
        return path
    with_suffix = Path(f"{path}{SUFFIX}")
    if with_suffix.is_file():
        return with_suffix
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a saved agent: pass the .safetensors "
                         "file inside it")
    sibling = path.with_suffix(SUFFIX)
    if path.suffix and path.suffix != SUFFIX and sibling.is_file():
        raise FileNotFoundError(f"no saved agent at {path}; velora_ens saves agents as "
                                f"safetensors files: did you mean {sibling}?")
    raise FileNotFoundError(f"no saved agent at {path} (nor {with_suffix})")


# ------------------------------------------------------------------------------ spaces
def _bounds(values: np.ndarray) -> list:  # JSON has no infinities: write them as text
    return [v if np.isfinite(v) else str(v) for v in values.astype(np.float64).ravel()]


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON description of the spaces the agents accept."""
    if isinstance(space, gym.spaces.Discrete):
        out: dict[str, Any] = {"type": "Discrete", "n": int(space.n)}
        if int(space.start):
            out["start"] = int(space.start)
        return out
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "low": _bounds(space.low),
                "high": _bounds(space.high)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(),
                "start": np.broadcast_to(space.start, space.nvec.shape).tolist()}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(space.shape)}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise ValueError(f"cannot describe the space {space}")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """The space :func:`space_to_json` described (``float32`` for a ``Box``)."""
    kind = data["type"]
    if kind == "Discrete":
        return gym.spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "Box":
        shape = tuple(data["shape"])
        low = np.array([float(v) for v in data["low"]], np.float32).reshape(shape)
        high = np.array([float(v) for v in data["high"]], np.float32).reshape(shape)
        return gym.spaces.Box(low, high, shape, np.float32)
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(data["nvec"], start=data.get("start"))
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return gym.spaces.Dict({k: space_from_json(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return gym.spaces.Tuple([space_from_json(v) for v in data["spaces"]])
    raise ValueError(f"unknown space type {kind!r}")


def _check_space(path: Path, name: str, saved: dict[str, Any], space: gym.Space) -> None:
    if space_to_json(space) != saved:
        raise ValueError(f"{path}: the environment's {name} {space} does not match the saved "
                         f"agent's {space_from_json(saved)}")


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


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _system_info() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("velora-ens", "torch", "numpy", "gymnasium", "stable-baselines3"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    return info


def _json_config(agent: BaseAgent) -> tuple[dict[str, Any], bool]:
    """The constructor's arguments as JSON; a callable learning rate cannot be stored, so
    the rate in use is stored instead (``True`` is returned to say so)."""
    config = dict(agent.config)
    lost_schedule = callable(config.get("learning_rate"))
    if lost_schedule:
        optimizer = next(iter(agent._persistent_optimizers().values()))
        config["learning_rate"] = optimizer.param_groups[0]["lr"]
    for key, value in config.items():
        if isinstance(value, tuple):
            config[key] = list(value)
        elif isinstance(value, torch.device):
            config[key] = str(value)
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save the agent: a constructor argument is not JSON-able "
                         f"({exc})") from None
    return config, lost_schedule


def write_document(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` with ``meta`` (JSON, plus their SHA-256) as safetensors, atomically."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta["sha256"] = _digest(flat)
    blob = save(flat, metadata={_META_KEY: json.dumps(meta, sort_keys=True, allow_nan=False)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda p: p.write_bytes(blob))
    return path


# ------------------------------------------------------------------------------ save
def _model_part(agent: BaseAgent) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    config, lost_schedule = _json_config(agent)
    tensors = dict(agent._persistent_tensors())
    for name, module in agent._persistent_modules().items():
        tensors.update(_prefixed(name, module.state_dict()))
    optim_meta = {}
    for name, opt in agent._persistent_optimizers().items():
        flat, meta = flatten_optimizer_state(opt.state_dict(), prefix=f"optim.{name}")
        tensors.update(flat)
        optim_meta[name] = meta
    meta: dict[str, Any] = {
        "format": FORMAT,
        "class": type(agent).__name__,
        "env_id": agent.env_id,
        "config": config,
        "learning_rate_schedule_not_saved": lost_schedule,
        "observation_space": space_to_json(agent.observation_space),
        "action_space": space_to_json(agent.action_space),
        "num_timesteps": agent.num_timesteps,
        "n_updates": agent.n_updates,
        "ep_info_buffer": list(agent.ep_info_buffer),
        "last_losses": agent.last_losses,
        "optimizers": optim_meta,
        "system_info": _system_info(),
        **agent._persistent_counters(),
    }
    return meta, tensors


def _training_part(agent: BaseAgent) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta, tensors = agent._training_tensors()
    meta = dict(meta)
    driver = agent.driver
    started = driver.obs is not None
    meta["rollout_started"] = started
    if started:
        tensors["rollout.obs"] = torch.from_numpy(np.asarray(driver.obs))
        tensors["rollout.episode_start"] = torch.from_numpy(driver.episode_start)
        tensors["rollout.pending_reset"] = torch.from_numpy(driver.pending_reset)
        tensors["env.actions"] = torch.from_numpy(np.ascontiguousarray(
            driver.action_log.array()))
        tensors.update(agent._rollout_tensors())
    tensors["rng.torch"] = torch.get_rng_state()
    meta["rng_numpy"] = agent.rng.bit_generator.state
    meta["rng_action_space"] = agent.action_space.np_random.bit_generator.state
    meta["num_timesteps"] = agent.num_timesteps
    return meta, tensors


def save_agent(agent: BaseAgent, path: str | os.PathLike, include_buffer: bool = False
               ) -> Path:
    """Write ``agent`` to ``path`` (see :func:`resolve_save_path`); returns the path."""
    path = resolve_save_path(path)
    meta, tensors = _model_part(agent)
    meta["include_buffer"] = bool(include_buffer)
    if include_buffer:
        train_meta, train_tensors = _training_part(agent)
        meta.update(train_meta)
        tensors.update(train_tensors)
    return write_document(path, meta, tensors)


def save_training_state(agent: BaseAgent, path: str | os.PathLike) -> Path:
    """Write only what an exact resume needs besides the model (SB3's
    ``save_replay_buffer``) to ``path`` (suffix added when it has none)."""
    path = resolve_save_path(path)
    meta, tensors = _training_part(agent)
    meta.update({"format": TRAINING_STATE_FORMAT, "class": type(agent).__name__})
    return write_document(path, meta, tensors)


# ------------------------------------------------------------------------------ load
def read_agent_file(path: str | os.PathLike, formats: tuple[str, ...] = _READABLE
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a saved file, validated; never unpickles."""
    from safetensors import safe_open

    path = resolve_load_path(path)
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
    if meta.get("format") not in formats:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected "
                         f"{' or '.join(map(repr, formats))}")
    digest = _digest(tensors)
    if digest != meta.get("sha256"):
        raise ValueError(f"{path}: the tensors do not match the checksum written with them "
                         f"(sha256 {digest[:12]}..., expected {str(meta.get('sha256'))[:12]}...);"
                         " the file was modified or damaged")
    meta["path"] = str(path)
    return meta, tensors


def _constructor_arguments(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "policy", "env")
            and p.kind is not inspect.Parameter.VAR_KEYWORD}


def load_module(path: Any, name: str, module: torch.nn.Module,
                state: dict[str, torch.Tensor], overrides: dict[str, Any]) -> None:
    """``module.load_state_dict(state)`` with one clear line when the file's networks do
    not fit (see :func:`~velora_ens.training.checkpoint.state_dict_mismatch`)."""
    problems = state_dict_mismatch(module, state)
    if problems is not None:
        hint = (f" (built with {overrides}: arguments that change the networks' shapes "
                "cannot be overridden when loading)" if overrides else "")
        raise ValueError(f"{path}: the saved {name} does not fit this agent: {problems}{hint}")
    module.load_state_dict(state)


def load_agent(cls: type[BaseAgent], path: str | os.PathLike, env: Any = None, *,
               device: Any = "auto", print_system_info: bool = False,
               **overrides: Any) -> BaseAgent:
    """Rebuild an agent saved by :func:`save_agent`; ``overrides`` replace constructor
    arguments (for example a learning-rate callable, which cannot be saved)."""
    from agents.common.base import BaseAgent

    meta, tensors = read_agent_file(path)
    path = Path(meta["path"])
    saved_cls = agent_class(meta["class"])
    if cls is BaseAgent:
        cls = saved_cls
    elif not issubclass(saved_cls, cls):
        raise ValueError(f"{path} holds a {meta['class']}, not a {cls.__name__}; load it with "
                         f"{meta['class']}.load or agents.load_agent")
    else:
        cls = saved_cls
    if print_system_info:
        saved = meta.get("system_info", {})
        print("== saved on ==\n" + "\n".join(f"{k}: {v}" for k, v in saved.items()))
        print("== this system ==\n" + "\n".join(f"{k}: {v}" for k, v in _system_info().items()))
    if env is None:
        env = meta["env_id"]
        if env is None:
            raise ValueError(f"{path} was trained on an environment instance, not an id; "
                             "pass env= to load it")
    arguments = _constructor_arguments(cls)
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} arguments {unknown}; expected some of "
                         f"{sorted(arguments)}")
    config = {k: v for k, v in meta["config"].items() if k in arguments}
    for key, value in config.items():  # JSON has lists where the constructor had tuples
        if isinstance(value, list) and isinstance(arguments[key].default, tuple):
            config[key] = tuple(value)
    if meta.get("learning_rate_schedule_not_saved") and "learning_rate" not in overrides:
        warnings.warn(f"{path} was trained with a learning-rate callable, which cannot be "
                      f"saved; it continues with the constant rate "
                      f"{config['learning_rate']:g} (pass learning_rate= to load to set one)",
                      stacklevel=3)
    config.update(overrides)
    if "device" in arguments:
        config["device"] = device
    agent = cls(env, **config)
    _check_space(path, "observation space", meta["observation_space"], agent.observation_space)
    _check_space(path, "action space", meta["action_space"], agent.action_space)

    agent._load_persistent_tensors(tensors)
    for name, module in agent._persistent_modules().items():
        load_module(path, name, module, _unprefixed(name, tensors), overrides)
    for name, opt in agent._persistent_optimizers().items():
        lr = opt.param_groups[0]["lr"]  # the constructor's (possibly overridden) rate
        opt.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizers"][name]))
        if "learning_rate" in overrides:
            for group in opt.param_groups:
                group["lr"] = lr
    agent.num_timesteps = int(meta["num_timesteps"])
    agent.n_updates = int(meta["n_updates"])
    agent._load_persistent_counters(meta)
    agent.ep_info_buffer.extend(meta["ep_info_buffer"])
    agent.last_losses = dict(meta["last_losses"])
    if meta["include_buffer"]:
        _restore_training_state(agent, meta, tensors, path)
    return agent


def load_training_state(agent: BaseAgent, path: str | os.PathLike) -> None:
    """Restore what :func:`save_training_state` wrote (SB3's ``load_replay_buffer``). If
    the agent's step count differs from the file's, only the algorithm's stored data
    (the replay buffer) is restored and training continues with new episodes."""
    meta, tensors = read_agent_file(path, formats=(TRAINING_STATE_FORMAT,))
    path = Path(meta["path"])
    if meta["class"] != type(agent).__name__:
        raise ValueError(f"{path} holds the training state of a {meta['class']}, not of a "
                         f"{type(agent).__name__}")
    if int(meta["num_timesteps"]) != agent.num_timesteps:
        warnings.warn(f"{path} was saved at step {meta['num_timesteps']}, the agent is at step "
                      f"{agent.num_timesteps}: only the replay data is restored and training "
                      "continues with new episodes", stacklevel=3)
        agent._restore_training_tensors(meta, tensors, path)
        agent.driver.end_rollout()
        return
    _restore_training_state(agent, meta, tensors, path)


def _restore_training_state(agent: BaseAgent, meta: dict[str, Any],
                            tensors: dict[str, torch.Tensor], path: Path) -> None:
    agent._restore_training_tensors(meta, tensors, path)
    agent.rng.bit_generator.state = meta["rng_numpy"]
    agent.action_space.np_random.bit_generator.state = meta["rng_action_space"]
    driver = agent.driver
    driver.end_rollout()
    if meta["rollout_started"]:
        actions = tensors["env.actions"].numpy()
        saved_obs = tensors["rollout.obs"].numpy()
        if agent.seed is None:
            warnings.warn(f"{path}: the agent was trained without a seed, so its "
                          "environments cannot be rebuilt; training resumes with new "
                          "episodes", stacklevel=4)
        else:
            obs = driver.replay(actions, agent.seed)
            if not np.array_equal(obs, saved_obs):
                raise ValueError(
                    f"{path}: replaying the saved actions did not bring the environment back "
                    "to the saved observation (is it deterministic for a seed?); load it "
                    "with a deterministic environment or save without include_buffer")
            driver.obs = obs
            driver.episode_start = tensors["rollout.episode_start"].numpy().copy()
            driver.pending_reset = tensors["rollout.pending_reset"].numpy().copy()
            agent._restore_rollout_tensors(tensors)
    torch.set_rng_state(tensors["rng.torch"])


# ------------------------------------------------------------------------------ parameters
def read_parameters(path: str | os.PathLike, groups: dict[str, Any],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, dict[str, Any]]:
    """The parameters of a saved agent file for the named ``groups`` (modules and
    optimisers, as :meth:`BaseAgent.get_parameters` names them)."""
    meta, tensors = read_agent_file(path)
    by_identity = {id(o): name for name, o in optimizers.items()}
    params: dict[str, dict[str, Any]] = {}
    for name, part in groups.items():
        if isinstance(part, torch.nn.Module):
            if name == "policy":  # its children are saved under their own names
                params[name] = {k: tensors[k] for k in part.state_dict() if k in tensors}
            else:
                params[name] = _unprefixed(name, tensors)
        else:
            saved = meta["optimizers"].get(by_identity[id(part)])
            if saved is not None:
                params[name] = unflatten_optimizer_state(tensors, saved)
    return params
