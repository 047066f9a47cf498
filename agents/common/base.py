"""The base every agent shares: Stable-Baselines3's user API over an
:class:`~agents.driver.driver.EnvDriver`.

The base owns the plumbing: construction (environment, seed, spaces, normalisation,
schedules, elapsed time, device, the actor and its policy), ``learn``'s loop with
callbacks and logs, the start of every acting step (:meth:`BaseAgent._act_prelude`) and
the elapsed time read after it, ``predict``, ``save``/``load``, environments, parameters
and seeds. An algorithm declares what it has by filling in a few hooks:
:meth:`~BaseAgent._learn_iteration` (one iteration of collection and updates),
:meth:`~BaseAgent._start_rollout`, and what it saves (the ``_persistent_*`` hooks and
their ``_load_`` counterparts, ``_training_tensors`` and ``_rollout_tensors`` for an
exact resume; :class:`agents.common.persistence.SavedAgent` lists them).
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents.common import persistence
from agents.common.actor import LiquidActor
from agents.common.callbacks import make_callback
from agents.common.logs import TrainingLog
from agents.common.normalization import ObservationNormalizer
from agents.common.optim import NonFiniteTrainingError, check_finite
from agents.common.policy import POLICY_ALIASES, LiquidPolicy, resolve_env
from agents.common.schedules import as_schedule, progress_remaining
from agents.driver.driver import EnvDriver, EnvStep
from agents.driver.elapsed import ElapsedTime
from velora_ens._validation import check_int
from velora_ens.training.device import select_device

__all__ = ["ActingStep", "BaseAgent", "NonFiniteTrainingError"]

@dataclass
class ActingStep:
    """The start of one acting step of every copy (:meth:`BaseAgent._act_prelude`)."""

    obs: torch.Tensor                # encoded, normalised observations (n, obs_dim)
    start: torch.Tensor              # (n,) bool: whether each starts an episode
    dt: torch.Tensor | None          # their elapsed times (n, 1), None without the key
    states: list[torch.Tensor]       # the recurrent states before the step (reset)
    out: torch.Tensor                # the actor's outputs
    actor_state: torch.Tensor        # the actor's state after the step


class BaseAgent:
    """Plumbing shared by every agent (see the module docstring).

    Subclasses call :meth:`_setup` first in their constructor, with ``locals()`` of
    their ``__init__`` as ``config`` (the JSON-able arguments ``save`` records).

    Arguments every agent takes (each agent's own are in its class):

    - ``env``: a Gymnasium id (``"module:EnvId"`` imports ``module`` first), a
      ``gymnasium.Env``, a Gymnasium vector env or a Stable-Baselines3 ``VecEnv``.
      Observations may be 1-D ``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary``
      or ``Dict``/``Tuple`` of these (encoded as SB3 does, :mod:`agents.driver.spaces`).
      SB3's spelling ``Algo("MlpPolicy", env)`` works too: the policy is always the
      liquid actor, and SB3's default policy names are accepted.
    - ``learning_rate``: Adam's step size: a number, ``"lin_<x>"`` (RL Zoo's linear
      decay from ``x`` to 0 over each ``learn`` call) or, as in SB3, a schedule called
      with the progress remaining in the call (1 at its start, 0 at its end).
    - ``normalize_observations``: normalise observations by a running mean and variance
      (SB3's ``VecNormalize``, clipped at 10), updated from every observation collected.
    - ``elapsed_time_key``: read the time elapsed since the previous observation from
      ``info[elapsed_time_key]`` at every step (``"elapsed_time"`` for
      :class:`envs.IrregularTiming`), store it beside the observation and feed it to
      every liquid network as ``dt``; ``predict`` then takes it as ``elapsed_time=``
      (and :func:`agents.evaluate_policy` passes it). ``None`` (default): every step is
      one unit of time. The discount stays per agent step.
    - ``elapsed_time_unit``: the elapsed time the cells see as 1 (their default ``dt``),
      e.g. the task's nominal step (0.05 s for Pendulum).
    - ``n_envs``, ``vectorization``: copies and ``"sync"``/``"async"`` for an id's env.
    - ``seed``: seeds torch, the agent's sampling, the environments and action spaces.
    - ``device``: ``"auto"`` (CUDA where available, else the CPU), ``"cpu"``, ``"cuda"``
      or ``"cuda:N"`` (:func:`velora_ens.training.select_device`).
    - ``tensorboard_log``: folder for TensorBoard runs (one subfolder per run), with
      SB3's keys (``rollout/ep_rew_mean``, ``time/fps``, ``train/...``).
    - ``verbose``: 1 prints SB3's log table every ``log_interval`` episodes.
    """

    #: Stable-Baselines3's policy names the agent accepts as its first argument
    policy_aliases: tuple[str, ...] = POLICY_ALIASES

    @property
    def elapsed_time_key(self) -> str | None:
        """The ``info`` key the agent reads the elapsed time from, or ``None``."""
        return None if self.elapsed is None else self.elapsed.key

    def _dt_tensor(self, dt: np.ndarray) -> torch.Tensor | None:
        """Elapsed times ``(n,)`` as the cells take them, ``(n, 1)``; ``None`` without
        ``elapsed_time_key`` (the cells' default, and their fast path)."""
        if self.elapsed is None:
            return None
        return torch.as_tensor(dt, device=self.device).reshape(-1, 1)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        persistence.register_agent_class(cls)

    # ------------------------------------------------------------------ construction
    def _setup(self, config: dict[str, Any]) -> None:
        """Everything the arguments every agent takes set up (the class docstring lists
        them), read from ``config``, the ``locals()`` of the algorithm's ``__init__``."""
        policy, env, seed, n_envs = (config[k] for k in ("policy", "env", "seed", "n_envs"))
        name = type(self).__name__
        self.config: dict[str, Any] = {k: v for k, v in config.items()
                                       if k not in ("self", "env", "policy", "__class__")}
        env = resolve_env(name, policy, env, self.policy_aliases)
        check_int("n_envs", n_envs, 1)
        if seed is not None:
            seed = check_int("seed", seed, 0)
        self.env_id = env if isinstance(env, str) else None
        self.seed = seed
        if seed is not None:
            torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.driver = EnvDriver(env, n_envs, seed, config["vectorization"])
        self.n_envs, self.obs_dim = self.driver.n_envs, self.driver.obs_dim
        self.observation_space = self.driver.observation_space
        self.action_space = self.driver.action_space
        if seed is not None:
            self.action_space.seed(seed)
            self.driver.env.action_space.seed(seed)
        self.device = select_device(config["device"], allow_mps=False)
        self.obs_normalizer = (ObservationNormalizer(self.obs_dim).to(self.device)
                               if config["normalize_observations"] else None)
        self.lr_schedule = as_schedule(config["learning_rate"], "learning_rate")
        key = config["elapsed_time_key"]
        self.elapsed = (None if key is None
                        else ElapsedTime(key, config["elapsed_time_unit"], self.n_envs))
        self._dt = np.ones(self.n_envs, np.float32)  # elapsed time of the current observations
        self.tensorboard_log, self.verbose = config["tensorboard_log"], config["verbose"]
        self._log = TrainingLog()  # SB3's logger and the updates' running sums
        #: the learn call in progress or stopped early: its first step and length, which
        #: its schedules follow (see ``learn``)
        self._unfinished_learn: dict[str, int] | None = None
        self.num_timesteps = 0
        self.n_updates = 0
        self.ep_info_buffer: deque[dict[str, float]] = deque(maxlen=100)
        self.last_losses: dict[str, float] = {}
        self._episode_num = 0

    # ------------------------------------------------------------------ hooks
    def _learn_iteration(self, callback: Any, first_step: int, total_timesteps: int,
                         log_interval: int) -> bool:
        raise NotImplementedError

    def _start_rollout(self, obs: np.ndarray) -> None:
        """Called after the seeded reset that starts a rollout (``obs`` encoded)."""

    def _persistent_modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def _persistent_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _persistent_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_persistent_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def _persistent_counters(self) -> dict[str, Any]:
        return {}

    def _load_persistent_counters(self, meta: dict[str, Any]) -> None:
        pass

    def _training_tensors(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What an exact resume needs besides the rollout: JSON and tensors."""
        return {}, {}

    def _restore_training_tensors(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                                  path: Any) -> None:
        pass

    def _rollout_tensors(self) -> dict[str, torch.Tensor]:
        """What a started rollout needs for an exact resume: the elapsed time of the
        current observations here; an algorithm adds its own (the recurrent states)."""
        if self.elapsed is None:
            return {}
        return {"rollout.dt": torch.from_numpy(self._dt.copy())}

    def _restore_rollout_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "rollout.dt" in tensors:  # written by every LiquidPPO before 2026-12
            self._dt = tensors["rollout.dt"].numpy().copy()

    # ------------------------------------------------------------------ helpers
    def _set_actor(self, actor: LiquidActor) -> None:
        """The liquid actor the algorithm trains, and the policy that acts with it."""
        self.actor = actor.to(self.device)
        self.discrete = actor.discrete
        self.policy = LiquidPolicy(actor, self.observation_space, self.action_space,
                                   self.obs_normalizer,
                                   None if self.elapsed is None else self.elapsed.unit)

    def _normalized(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.obs_normalizer is None else self.obs_normalizer(obs)

    def _act_prelude(self, states: list[torch.Tensor]) -> ActingStep:
        """The start of every acting step (call it without gradients): the current
        observations normalised, the recurrent ``states`` zeroed where an episode starts,
        the observations' elapsed times, and one actor step from the first
        ``actor.state_dim`` columns of ``states[0]``."""
        driver, device = self.driver, self.device
        obs = self._normalized(torch.as_tensor(driver.obs, dtype=torch.float32, device=device))
        start = torch.as_tensor(driver.episode_start, device=device)
        if driver.episode_start.any():
            keep = (~start).float().unsqueeze(1)
            states = [state * keep for state in states]
        dt = self._dt_tensor(self._dt)
        out, actor_state = self.actor(obs, states[0][:, :self.actor.state_dim], dt=dt)
        return ActingStep(obs, start, dt, list(states), out, actor_state)

    def _read_elapsed(self, step: EnvStep) -> tuple[np.ndarray, np.ndarray]:
        """After an environment step: the elapsed times ``(n_envs,)`` of the observations
        just acted on and of each copy's real next observation (the successor a target
        bootstraps from, :meth:`agents.driver.elapsed.ElapsedTime.after_step`); keeps
        those of the observations the next step acts on. Without ``elapsed_time_key``,
        ones."""
        acted = self._dt
        if self.elapsed is None:
            return acted, acted
        truncated = np.flatnonzero(step.valid & step.truncated & ~step.terminated)
        self._dt, real = self.elapsed.after_step(
            step.info, self.driver.episode_start,
            self.driver.autoreset_mode == AutoresetMode.SAME_STEP, self.num_timesteps,
            truncated)
        return acted, real

    def _update_learning_rate(self, first_step: int, total_timesteps: int) -> None:
        """Set every optimiser's rate from the schedule (SB3's progress remaining)."""
        lr = self.lr_schedule(progress_remaining(self.num_timesteps, first_step,
                                                 total_timesteps))
        for optimizer in self._persistent_optimizers().values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _check_losses(self, named_values: dict[str, float]) -> None:
        """Raise :class:`NonFiniteTrainingError` if any value is NaN or infinite."""
        check_finite(named_values, self.num_timesteps, self.n_updates + 1)

    def _log_update(self, losses: dict[str, float]) -> None:
        self.n_updates += 1
        self.last_losses = losses
        self._log.add(losses)

    # ------------------------------------------------------------------ learning
    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 4,
              tb_log_name: str | None = None, reset_num_timesteps: bool = False,
              progress_bar: bool = False) -> BaseAgent:
        """Collect ``total_timesteps`` transitions (summed over the environment copies)
        and train; returns ``self``.

        ``callback``: a Stable-Baselines3 callback (any ``BaseCallback``, see
        :mod:`agents.common.callbacks`), a list of them, or a function
        ``callback(locals, globals) -> bool``; called after every environment step and
        that step's updates with SB3's names in ``locals`` (``infos``, ``rewards``,
        ``dones``, ``new_obs``, ``actions``, ...), and a false return value stops
        training. ``log_interval``: write the logs (TensorBoard with SB3's keys when the
        agent has a ``tensorboard_log`` folder, and a table on stdout with ``verbose=1``)
        every this many finished episodes. ``tb_log_name``: the run folder's prefix (the
        class name by default); each agent's first ``learn`` call (and each one with
        ``reset_num_timesteps=True``) starts a new run folder. ``reset_num_timesteps``:
        start counting from 0 on new episodes, as SB3 does by default; our default
        continues the previous call. ``progress_bar``: show a tqdm bar. A call that ends
        where an earlier one stopped early (a callback, an interruption) would have ended
        finishes that call: its schedules continue (also after a load with the buffer).
        """
        if isinstance(total_timesteps, float) and total_timesteps.is_integer():
            total_timesteps = int(total_timesteps)  # SB3 allows learn(1e4)
        total_timesteps = check_int("total_timesteps", total_timesteps, 1)
        log_interval = check_int("log_interval", log_interval, 1)
        callback = make_callback(callback, progress_bar)
        if reset_num_timesteps:
            self.num_timesteps, self._episode_num = 0, 0
            self.driver.end_rollout()
            self.ep_info_buffer.clear()
        first_step = self.num_timesteps
        end = first_step + total_timesteps
        # an earlier call that stopped early (a callback, an interruption) is finished by
        # the call that ends where it would have: its schedules continue as they were
        span = self._unfinished_learn
        finishes = (span is not None and not reset_num_timesteps
                    and span["first_step"] + span["total_timesteps"] == end)
        if not finishes:
            span = {"first_step": first_step, "total_timesteps": total_timesteps}
        self._log.start(self.verbose, self.tensorboard_log, tb_log_name or type(self).__name__,
                        reset_num_timesteps, continue_run=finishes)
        callback.init_callback(self)
        # Saturated gates and tiny Adam moments produce denormal floats, which the CPU
        # handles tens of times slower than normal ones; flush them to zero while training
        # (PyTorch's default, off, is restored on return).
        torch.set_flush_denormal(True)
        try:
            if self.driver.obs is None:
                obs = self.driver.reset(self.seed)
                if self.obs_normalizer is not None:
                    self.obs_normalizer.update(obs)
                self._dt = np.ones(self.n_envs, np.float32)
                self._start_rollout(obs)
            self._start_time, self._first_step = time.perf_counter(), first_step
            callback.on_training_start(
                {"self": self, "total_timesteps": end, "callback": callback,
                 "log_interval": log_interval, "tb_log_name": tb_log_name,
                 "reset_num_timesteps": reset_num_timesteps, "progress_bar": progress_bar},
                globals())
            self._unfinished_learn = span  # until it ends (saved with a buffer)
            while self.num_timesteps < end:
                if not self._learn_iteration(callback, span["first_step"],
                                             span["total_timesteps"], log_interval):
                    break
            if self.num_timesteps >= end:
                self._unfinished_learn = None
            callback.on_training_end()
        finally:
            torch.set_flush_denormal(False)
        return self

    def _env_step(self, actions: np.ndarray) -> EnvStep:
        """Step every copy with the policy's ``actions``: counts the transitions, keeps
        the episode statistics and updates the observation statistics."""
        step = self.driver.step(actions, self.num_timesteps)
        if self.obs_normalizer is not None:
            self.obs_normalizer.update(step.next_obs)
        self.ep_info_buffer.extend(step.episodes)
        self.num_timesteps += step.n_transitions
        return step

    def _callback_step(self, callback: Any, step: EnvStep, log_interval: int,
                       **extra: Any) -> bool:
        """After a step and its updates: the logs every ``log_interval`` episodes, then
        the callbacks' ``on_step`` with SB3's names; returns whether to go on."""
        finished = step.n_finished
        if finished:
            before, self._episode_num = self._episode_num, self._episode_num + finished
            if self._episode_num // log_interval > before // log_interval:
                self._dump_logs()
        callback.update_locals({
            "self": self, "callback": callback, "env": self.get_env(),
            "actions": step.env_actions, "buffer_actions": step.actions,
            "new_obs": step.raw_next_obs, "rewards": step.rewards, "dones": step.dones,
            "infos": step.sb3_infos(), "log_interval": log_interval, **extra})
        return bool(callback.on_step())

    def _dump_logs(self) -> None:
        optimizer = next(iter(self._persistent_optimizers().values()))
        self._log.write(episodes=self._episode_num, timesteps=self.num_timesteps,
                        first_step=self._first_step, start_time=self._start_time,
                        ep_info=self.ep_info_buffer, n_updates=self.n_updates,
                        learning_rate=optimizer.param_groups[0]["lr"])

    def dump_logs(self) -> None:
        """Write the logs now (SB3's ``dump_logs``, used by its ``LogEveryNTimesteps``)."""
        self._dump_logs()

    @property
    def logger(self) -> Any:
        """SB3's ``model.logger``: the Logger ``learn`` writes to (``None`` before)."""
        return self._log.logger

    @logger.setter
    def logger(self, logger: Any) -> None:
        self.set_logger(logger)

    def set_logger(self, logger: Any) -> None:
        """SB3's ``set_logger``: write the logs to ``logger`` (e.g. ``configure(folder,
        ["csv", "tensorboard"])``), kept by every later ``learn`` call until replaced."""
        self._log.set_logger(logger)

    def get_logger(self) -> Any:
        """The Logger the agent writes to (SB3's ``model.logger``)."""
        return self._log.logger

    def mean_episode_return(self) -> float:
        """Mean return of the last (up to 100) finished training episodes."""
        if not self.ep_info_buffer:
            return float("nan")
        return float(np.mean([e["r"] for e in self.ep_info_buffer]))

    # ------------------------------------------------------------------ acting
    def predict(self, observation: Any, state: np.ndarray | None = None,
                episode_start: np.ndarray | None = None, deterministic: bool = False,
                elapsed_time: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Actions for one observation or a batch, and the next recurrent state
        ``(n, state_size)``: the sb3-contrib RecurrentPPO contract, so
        ``stable_baselines3.common.evaluation.evaluate_policy`` works unchanged
        (:meth:`agents.common.policy.LiquidPolicy.predict`: observation checks and encoding,
        episode-start resets, then the policy's step). ``elapsed_time`` (optional): the
        time since each observation's predecessor, for agents trained with
        ``elapsed_time_key``."""
        return self.policy.predict(observation, state, episode_start, deterministic,
                                   elapsed_time)

    # ------------------------------------------------------------------ environments
    def get_env(self) -> Any:
        """The training environments as a Stable-Baselines3 ``VecEnv`` (the one passed in,
        or a view of the Gymnasium vector env). Stepping it outside ``learn`` steps the
        training copies, so the next ``learn`` call starts new episodes."""
        return self.driver.sb3_env()

    @property
    def env(self) -> Any:
        """SB3's ``model.env``: the same as :meth:`get_env`."""
        return self.get_env()

    @property
    def vector_env(self) -> gym.vector.VectorEnv:
        """The Gymnasium vector env the agent steps."""
        return self.driver.env

    def get_vec_normalize_env(self) -> Any:
        """SB3's ``VecNormalize`` wrapper of a ``VecEnv`` passed in, else ``None`` (the
        agents normalise observations inside, with ``normalize_observations``)."""
        from stable_baselines3.common.vec_env import unwrap_vec_normalize

        user = self.driver.user_env
        return None if user is None else unwrap_vec_normalize(user)

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """Train on ``env`` from now on (an id, an env, a Gymnasium or SB3 vector env with
        the same spaces and number of copies); the next ``learn`` call starts new
        episodes (``force_reset`` is accepted for SB3's signature)."""
        driver = EnvDriver(env, self.n_envs if isinstance(env, str) else 1, None,
                           self.config.get("vectorization", "sync"))
        driver.check_can_replace(self.driver)
        if self.seed is not None:
            driver.env.action_space.seed(self.seed)
        self.driver = driver
        self.env_id = env if isinstance(env, str) else None

    # ------------------------------------------------------------------ seeds, parameters
    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed Python, NumPy, torch, the agent's generator, the action space and the next
        environment reset (SB3's ``set_random_seed``); the next ``learn`` call starts new
        episodes from that reset."""
        if seed is None:
            return
        seed = check_int("seed", seed, 0)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.action_space.seed(seed)
        self.driver.env.action_space.seed(seed)
        self.driver.end_rollout()

    def get_parameters(self) -> dict[str, dict[str, Any]]:
        """SB3's ``get_parameters``: the state dict of every network and optimiser, by name
        (``"policy"``, ``"critics"``, ..., ``"policy.optimizer"``)."""
        return persistence.get_parameters(self)

    def set_parameters(self, load_path_or_dict: str | os.PathLike | dict[str, dict[str, Any]],
                       exact_match: bool = True, device: torch.device | str = "auto") -> None:
        """SB3's ``set_parameters``: load what :meth:`get_parameters` returned, or the
        parameters of a saved agent file. ``exact_match`` requires every part to be
        given; shapes must match (``device`` is accepted for SB3's signature: the
        tensors go to the agent's device)."""
        persistence.set_parameters(self, load_path_or_dict, exact_match)

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, include_buffer: bool = False) -> Path:
        """Write the agent to one safetensors file atomically; returns the path.

        As in SB3, ``.safetensors`` is appended when ``path`` has no suffix and a path
        with a suffix is used as given (the content is safetensors whatever the name).
        ``include_buffer=True`` also stores what ``load(path).learn(n)`` needs to continue
        exactly as the uninterrupted run would (replay buffer, rollout, random generators,
        the action log that rebuilds the environments)."""
        return persistence.save_agent(self, path, include_buffer)

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: torch.device | str = "auto",
             custom_objects: dict[str, Any] | None = None, print_system_info: bool = False,
             **kwargs: Any) -> BaseAgent:
        """An agent saved with :meth:`save` (``path`` with or without its
        ``.safetensors`` suffix, as SB3 finds what it saved). ``env`` defaults to a new
        vector env of the saved id; ``kwargs`` replace constructor arguments that do not
        change the networks' shapes, and so does SB3's ``custom_objects`` by SB3's names
        (``lr_schedule`` is ``learning_rate``; SB3 settings the agent does not have are
        ignored with a warning, see :func:`agents.common.persistence.load_agent`). Never
        unpickles anything: a file that is not a saved agent, or one that was truncated or
        modified, raises ``ValueError``. Called on :class:`BaseAgent`, it builds the class
        recorded in the file."""
        return persistence.load_agent(path, env, expected=None if cls is BaseAgent else cls,
                                      device=device, print_system_info=print_system_info,
                                      custom_objects=custom_objects, **kwargs)
