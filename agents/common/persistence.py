"""Saving and loading agents through hooks: one safetensors file, nothing pickled.

Persistence knows agents only through :class:`SavedAgent`, the hooks every agent has
(:class:`~agents.common.base.BaseAgent` implements them; an algorithm fills in the
``_persistent_*`` ones), and imports no agent class: loading builds the class the file
names, which every agent class registers here when it is defined.

The file (:mod:`agents.common.files`) holds every tensor (networks, target networks,
optimiser moments, the algorithm's own tensors such as the temperature, observation
statistics, and optionally the replay buffer and the rollout state) and one JSON
document: the format tag, the class, the constructor's arguments, the spaces, counters,
random-generator states and the system it was saved on.

Exact resume (``include_buffer=True``, or the separate training-state file of
``save_replay_buffer``) also needs the environments' state, which Gymnasium cannot
serialise in general: the driver keeps a log of every action batch sent since the
seeded reset, and loading replays it (:meth:`~agents.driver.driver.EnvDriver.resume`).
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from agents.common.files import (
    check_space,
    load_module,
    prefixed,
    read_document,
    resolve_save_path,
    space_to_json,
    unprefixed,
    write_document,
)
from agents.driver.driver import EnvDriver
from velora_ens.training.checkpoint import flatten_optimizer_state, unflatten_optimizer_state

__all__ = ["FORMAT", "TRAINING_STATE_FORMAT", "SavedAgent", "agent_class", "get_parameters",
           "load_agent", "load_training_state", "read_agent_file", "register_agent_class",
           "save_agent", "save_training_state", "set_parameters"]

FORMAT = "velora_ens.agent/1"
# the same layout, written before agents had a common base (NeuroFlow only)
_READABLE = (FORMAT, "velora_ens.neuroflow/1")
TRAINING_STATE_FORMAT = "velora_ens.training_state/1"
_AGENT_CLASSES: dict[str, type] = {}


class SavedAgent(Protocol):
    """What persistence reads and sets on an agent."""

    config: dict[str, Any]  # the constructor's arguments
    env_id: str | None
    observation_space: gym.Space
    action_space: gym.Space
    num_timesteps: int
    n_updates: int
    ep_info_buffer: Iterable[dict[str, float]]
    last_losses: dict[str, float]
    seed: int | None
    rng: np.random.Generator
    driver: EnvDriver
    policy: torch.nn.Module  # what acts; SB3's parameter name "policy"
    _unfinished_learn: dict[str, int] | None  # the learn call a resume finishes

    def _persistent_modules(self) -> dict[str, torch.nn.Module]: ...
    def _persistent_optimizers(self) -> dict[str, torch.optim.Optimizer]: ...
    def _persistent_tensors(self) -> dict[str, torch.Tensor]: ...
    def _load_persistent_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...
    def _persistent_counters(self) -> dict[str, Any]: ...
    def _load_persistent_counters(self, meta: dict[str, Any]) -> None: ...
    def _training_tensors(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]: ...
    def _restore_training_tensors(self, meta: dict[str, Any],
                                  tensors: dict[str, torch.Tensor], path: Any) -> None: ...
    def _rollout_tensors(self) -> dict[str, torch.Tensor]: ...
    def _restore_rollout_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


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


# ------------------------------------------------------------------------------ save
def _system_info() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("velora-ens", "torch", "numpy", "gymnasium", "stable-baselines3"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    return info


def _json_config(agent: SavedAgent) -> tuple[dict[str, Any], bool]:
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


def _model_part(agent: SavedAgent) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    config, lost_schedule = _json_config(agent)
    tensors = dict(agent._persistent_tensors())
    for name, module in agent._persistent_modules().items():
        tensors.update(prefixed(name, module.state_dict()))
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


def _training_part(agent: SavedAgent) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta, tensors = agent._training_tensors()
    meta = dict(meta)
    rollout = agent.driver.resume_state()
    meta["rollout_started"] = bool(rollout)
    if rollout:
        tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rollout.items()})
        tensors.update(agent._rollout_tensors())
    tensors["rng.torch"] = torch.get_rng_state()
    meta["unfinished_learn"] = agent._unfinished_learn
    meta["rng_numpy"] = agent.rng.bit_generator.state
    meta["rng_action_space"] = agent.action_space.np_random.bit_generator.state
    meta["num_timesteps"] = agent.num_timesteps
    return meta, tensors


def save_agent(agent: SavedAgent, path: str | os.PathLike, include_buffer: bool = False
               ) -> Path:
    """Write ``agent`` to ``path`` (see :func:`~agents.common.files.resolve_save_path`);
    returns the path."""
    path = resolve_save_path(path)
    meta, tensors = _model_part(agent)
    meta["include_buffer"] = bool(include_buffer)
    if include_buffer:
        train_meta, train_tensors = _training_part(agent)
        meta.update(train_meta)
        tensors.update(train_tensors)
    return write_document(path, meta, tensors)


def save_training_state(agent: SavedAgent, path: str | os.PathLike) -> Path:
    """Write only what an exact resume needs besides the model (SB3's
    ``save_replay_buffer``) to ``path`` (suffix added when it has none)."""
    path = resolve_save_path(path)
    meta, tensors = _training_part(agent)
    meta.update({"format": TRAINING_STATE_FORMAT, "class": type(agent).__name__})
    return write_document(path, meta, tensors)


# ------------------------------------------------------------------------------ load
def read_agent_file(path: str | os.PathLike, formats: tuple[str, ...] = _READABLE
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a saved agent, validated; never unpickles."""
    return read_document(path, formats)


def _constructor_arguments(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "policy", "env")
            and p.kind is not inspect.Parameter.VAR_KEYWORD}


# SB3's names of settings the agents take under another name
_SB3_NAMES = {"lr_schedule": "learning_rate"}


def _sb3_settings() -> set[str]:
    """The names of Stable-Baselines3's (and sb3-contrib's, where installed) algorithm
    settings: their constructors' arguments and the schedules they build from them."""
    import stable_baselines3 as sb3

    classes = [sb3.A2C, sb3.DDPG, sb3.DQN, sb3.PPO, sb3.SAC, sb3.TD3]
    try:
        import sb3_contrib

        classes += [getattr(sb3_contrib, n) for n in ("ARS", "CrossQ", "QRDQN", "RecurrentPPO",
                                                      "TQC", "TRPO") if hasattr(sb3_contrib, n)]
    except ImportError:
        pass
    names = {"lr_schedule", "exploration_schedule", "observation_space", "action_space",
             "policy_class"}
    for cls in classes:
        names |= set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env"}
    return names


def _custom_objects(custom_objects: dict[str, Any], arguments: dict[str, Any], agent: str,
                    path: Path) -> dict[str, Any]:
    """SB3's ``custom_objects`` as constructor arguments: a setting the agent has (by
    SB3's name; ``lr_schedule`` wins over ``learning_rate``, as it is what SB3 uses), SB3
    settings it has not ignored with a warning, anything else refused."""
    overrides: dict[str, Any] = {}
    ignored, unknown = [], []
    for key in sorted(custom_objects, key=lambda k: k in _SB3_NAMES):  # renamed ones last
        name = _SB3_NAMES.get(key, key)
        if name in arguments:
            overrides[name] = custom_objects[key]
        elif key in _sb3_settings():
            ignored.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{path}: custom_objects {unknown} are neither {agent} arguments nor "
                         f"Stable-Baselines3 settings; expected some of {sorted(arguments)}")
    if ignored:
        warnings.warn(f"custom_objects {ignored}: Stable-Baselines3 settings that {agent} "
                      "does not have, ignored", stacklevel=4)
    return overrides


def load_agent(path: str | os.PathLike, env: Any = None, *, expected: type | None = None,
               device: Any = "auto", print_system_info: bool = False,
               custom_objects: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """Rebuild the agent saved by :func:`save_agent` at ``path``, of the class the file
    names (which must be ``expected`` or a subclass of it, when given); ``overrides``
    replace constructor arguments (for example a learning-rate callable, which cannot be
    saved), and so does SB3's ``custom_objects`` by SB3's names (``lr_schedule`` is the
    learning rate); SB3 settings the agent does not have are ignored with a warning that
    lists them, and other names are refused."""
    meta, tensors = read_agent_file(path)
    path = Path(meta["path"])
    cls = agent_class(meta["class"])
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(f"{path} holds a {meta['class']}, not a {expected.__name__}; load it "
                         f"with {meta['class']}.load or agents.load_agent")
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
    overrides = {**_custom_objects(custom_objects or {}, arguments, cls.__name__, path),
                 **overrides}
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
    check_space(path, "observation space", meta["observation_space"], agent.observation_space)
    check_space(path, "action space", meta["action_space"], agent.action_space)

    agent._load_persistent_tensors(tensors)
    for name, module in agent._persistent_modules().items():
        load_module(path, name, module, unprefixed(name, tensors), overrides)
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


def load_training_state(agent: SavedAgent, path: str | os.PathLike) -> None:
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


def _restore_training_state(agent: SavedAgent, meta: dict[str, Any],
                            tensors: dict[str, torch.Tensor], path: Path) -> None:
    agent._restore_training_tensors(meta, tensors, path)
    agent._unfinished_learn = meta.get("unfinished_learn")  # absent before 2026-12
    agent.rng.bit_generator.state = meta["rng_numpy"]
    agent.action_space.np_random.bit_generator.state = meta["rng_action_space"]
    driver = agent.driver
    driver.end_rollout()
    if meta["rollout_started"]:
        if agent.seed is None:
            warnings.warn(f"{path}: the agent was trained without a seed, so its "
                          "environments cannot be rebuilt; training resumes with new "
                          "episodes", stacklevel=4)
        else:
            state = {k: tensors[k].numpy() for k in EnvDriver.RESUME_KEYS}
            if not driver.resume(state, agent.seed):
                raise ValueError(
                    f"{path}: replaying the saved actions did not bring the environment back "
                    "to the saved observation (is it deterministic for a seed?); load it "
                    "with a deterministic environment or save without include_buffer")
            agent._restore_rollout_tensors(tensors)
    torch.set_rng_state(tensors["rng.torch"])


# ------------------------------------------------------------------------------ parameters
def _parameter_groups(agent: SavedAgent) -> dict[str, Any]:
    """SB3's names: ``"policy"`` (what acts), the other networks by name, and the
    optimiser(s) (``"policy.optimizer"`` when there is one)."""
    groups: dict[str, Any] = {"policy": agent.policy}
    inside = {id(m) for m in agent.policy.modules()}
    for name, module in agent._persistent_modules().items():
        if id(module) not in inside:
            groups[name] = module
    optimizers = agent._persistent_optimizers()
    for name, optimizer in optimizers.items():
        groups["policy.optimizer" if len(optimizers) == 1 else f"{name}.optimizer"] = optimizer
    return groups


def get_parameters(agent: SavedAgent) -> dict[str, dict[str, Any]]:
    """SB3's ``get_parameters``: every network's and optimiser's state dict, by name."""
    return {name: part.state_dict() for name, part in _parameter_groups(agent).items()}


def set_parameters(agent: SavedAgent, load_path_or_dict: str | os.PathLike | dict[str, Any],
                   exact_match: bool = True) -> None:
    """SB3's ``set_parameters``: load what :func:`get_parameters` returned, or the
    parameters of a saved agent file (``exact_match``: every part must be given)."""
    groups = _parameter_groups(agent)
    if isinstance(load_path_or_dict, dict):
        params = load_path_or_dict
    else:
        params = _read_parameters(load_path_or_dict, groups, agent._persistent_optimizers())
    unknown = sorted(set(params) - set(groups))
    if unknown:
        raise ValueError(f"set_parameters: unknown names {unknown}; expected some of "
                         f"{sorted(groups)}")
    missing = [name for name in groups if name not in params]
    if exact_match and missing:
        raise ValueError(f"set_parameters: {missing} missing (pass exact_match=False to "
                         "load only some)")
    for name, state in params.items():
        part = groups[name]
        if isinstance(part, torch.nn.Module):
            load_module("set_parameters", name, part, dict(state), {})
        else:
            part.load_state_dict(state)


def _read_parameters(path: str | os.PathLike, groups: dict[str, Any],
                     optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, dict[str, Any]]:
    """The parameters of a saved agent file for the named ``groups``."""
    meta, tensors = read_agent_file(path)
    by_identity = {id(o): name for name, o in optimizers.items()}
    params: dict[str, dict[str, Any]] = {}
    for name, part in groups.items():
        if isinstance(part, torch.nn.Module):
            if name == "policy":  # its children are saved under their own names
                params[name] = {k: tensors[k] for k in part.state_dict() if k in tensors}
            else:
                params[name] = unprefixed(name, tensors)
        else:
            saved = meta["optimizers"].get(by_identity[id(part)])
            if saved is not None:
                params[name] = unflatten_optimizer_state(tensors, saved)
    return params
