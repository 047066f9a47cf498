"""NeuroFlow: soft actor-critic with a liquid (recurrent) actor, trained on sequences.

One class for Box actions (SAC, tanh-squashed Gaussian) and Discrete actions
(SAC-Discrete: full probability vector, positive target entropy). The actor is a
:class:`~velora_ens.models.LiquidNCPNetwork`; the critics are a batched
:class:`~agents.critics.CriticEnsemble` (MLPs or NCP-wired MLPs) that read the
observation, the actor's recurrent state (detached: the critics' view of the history)
and, for Box actions, the action.

Recurrent training follows R2D2: the replay buffer keeps whole trajectories; an update
samples sequences of ``burn_in + seq_len`` steps starting from the actor state stored
when the first step was acted on, refreshes that state over the burn-in prefix without
gradients, and trains on the remaining ``seq_len`` steps with back-propagation through
time. The state is reset to zero wherever an episode starts, when acting and when
training. Targets bootstrap on ``terminated`` only (a time-limit truncation is not a
terminal state).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch.nn import functional as F

from agents.buffers import SequenceReplayBuffer
from agents.critics import CriticEnsemble
from agents.env_checks import CheckedEnv
from agents.normalization import ObservationNormalizer
from agents.optim import clip_grad_norm, fused_adam_step, zero_grad
from agents.persistence import ActionLog, load_agent, save_agent
from agents.policies import LiquidActor, check_spaces
from envs import make_vec_env
from velora_ens.models import LiquidNCPNetwork

__all__ = ["NeuroFlow", "NonFiniteTrainingError"]


class NonFiniteTrainingError(FloatingPointError):
    """A loss or gradient became NaN or infinite; the update was not applied."""


def linear_schedule(spec: str) -> Callable[[float], float]:
    """RL Zoo's ``"lin_<x>"``: ``x`` times the progress remaining (1 at the start of a
    ``learn`` call, 0 at its end)."""
    try:
        if not spec.startswith("lin_"):
            raise ValueError
        start = float(spec[4:])
    except ValueError:
        raise ValueError(f"learning_rate {spec!r} is not a schedule; expected 'lin_<number>', "
                         f"e.g. 'lin_1e-3', a number or a callable") from None
    if not start > 0:
        raise ValueError(f"learning_rate {spec!r}: the initial rate must be > 0")
    return lambda progress_remaining: progress_remaining * start


def _as_vector_env(env: Any, n_envs: int, seed: int | None, vectorization: str
                   ) -> gym.vector.VectorEnv:
    if isinstance(env, str):
        return make_vec_env(env, n_envs, seed=seed, vectorization=vectorization)
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if isinstance(env, gym.Env):
        if n_envs != 1:
            raise ValueError(f"a single gymnasium.Env instance gives one stream; got n_envs="
                             f"{n_envs} (pass an environment id or a vector env instead)")
        return gym.vector.SyncVectorEnv(
            [lambda: gym.wrappers.RecordEpisodeStatistics(CheckedEnv(env))])
    raise ValueError(f"env must be an environment id, a gymnasium.Env or a gymnasium vector "
                     f"env, got {type(env).__name__}")


class NeuroFlow:
    """Liquid soft actor-critic for Box and Discrete actions.

    Args:
        env: a Gymnasium id, a ``gymnasium.Env`` or a ``gymnasium.vector.VectorEnv``.
        actor_neurons: inter + command neurons of the actor's NCP wiring.
        cell: ``"cfc"`` (closed-form, default) or ``"ltc"``.
        critic_hidden: hidden widths of each MLP critic.
        critic_ncp_neurons: use NCP-wired critics with this many neurons instead.
        n_critics: critics in the ensemble head (targets use their minimum).
        learning_rate: Adam step size for actor, critics and temperature: a number,
            ``"lin_<x>"`` (RL Zoo's linear decay from ``x`` to 0 over each ``learn`` call), or
            (as in Stable-Baselines3) a schedule called with the progress remaining in
            the current ``learn`` call (1 at its start, 0 at its end).
        buffer_size: transitions kept in replay (split over the environment streams).
        learning_starts: transitions collected with random actions before learning.
        batch_size: transitions per update (``batch_size // seq_len`` sequences).
        seq_len: trained steps per sequence.
        burn_in: steps before them that only refresh the stored state.
        tau: soft target update rate.
        gamma: discount.
        utd_ratio: gradient updates per environment transition.
        ent_coef: ``"auto"`` (learned, initial value 1), ``"auto_<init>"`` or a fixed float.
        target_entropy: ``"auto"`` is ``-|A|`` for Box actions and
            ``target_entropy_scale * log |A|`` (positive) for Discrete ones.
        max_grad_norm: gradient-norm clip for actor and critics.
        critic_encoder: what summarises the history for the critics. ``"actor"``: the
            actor's liquid state (free: it is computed anyway). ``"own"``: a separate liquid
            network of ``actor_neurons`` neurons trained by the critic loss only, as Ni et
            al. (2022) recommend for partially observed tasks (a shared encoder lets the
            critic loss disturb the policy); it costs one more recurrent pass per update.
        critic_trains_state: with ``critic_encoder="actor"``, let the critic loss also
            train the actor's liquid network (a shared history encoder, as in SAC-AE). The
            TD targets then read the history through a slowly updated copy of that
            network (soft-updated with ``tau`` like the target critics, as SAC-AE and DrQ
            do with their encoder), so the critic does not chase a target its own
            updates keep moving.
        target_q: combine the target critics by ``"min"`` (clipped double-Q) or ``"mean"``.
        n_step: bootstrap after ``n_step`` rewards (R2D2's multi-step targets, without
            off-policy correction; the entropy bonus enters through the bootstrapped soft
            value only). A target never reaches past the end of its episode: a terminal
            step stops it, a truncated one bootstraps there. 1 is one-step SAC.
        normalize_observations: feed actor and critics observations normalised by a
            running mean and variance (Stable-Baselines3's ``VecNormalize``, clipped at
            10), updated from every observation collected; replay keeps raw ones.
        n_envs: environment copies when ``env`` is an id.
        vectorization: ``"sync"`` or ``"async"`` vector env when ``env`` is an id.
        seed: seeds torch, the replay sampling, the environments and their action spaces.
        tensorboard_log: folder for TensorBoard runs (one subfolder per run), with SB3's
            keys (``rollout/ep_rew_mean``, ``train/critic_loss``, ``time/fps``, ...) plus
            ``train/critic_spread``, the critics' disagreement.
        verbose: 1 prints SB3's log table every ``log_interval`` episodes.
    """

    def __init__(
        self,
        env: Any,
        *,
        actor_neurons: int = 32,
        cell: str = "cfc",
        critic_hidden: tuple[int, ...] = (128, 128),
        critic_ncp_neurons: int | None = None,
        n_critics: int = 2,
        learning_rate: float | str | Callable[[float], float] = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        seq_len: int = 8,
        burn_in: int = 8,
        tau: float = 0.005,
        gamma: float = 0.99,
        utd_ratio: float = 1.0,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        target_entropy_scale: float = 0.89,
        max_grad_norm: float = 10.0,
        critic_encoder: str = "actor",
        critic_trains_state: bool = False,
        target_q: str = "min",
        n_step: int = 1,
        normalize_observations: bool = False,
        n_envs: int = 1,
        vectorization: str = "sync",
        seed: int | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
    ) -> None:
        # the constructor's arguments (JSON-able ones) are what ``save`` records
        arguments = dict(locals())
        self.config: dict[str, Any] = {k: v for k, v in arguments.items()
                                       if k not in ("self", "env", "__class__")}
        self.env_id: str | None = env if isinstance(env, str) else None
        for name, value, low in (("seq_len", seq_len, 1), ("burn_in", burn_in, 0),
                                 ("batch_size", batch_size, 1), ("n_envs", n_envs, 1),
                                 ("n_critics", n_critics, 1), ("actor_neurons", actor_neurons, 2),
                                 ("n_step", n_step, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if batch_size < seq_len:
            raise ValueError(f"batch_size={batch_size} must be >= seq_len={seq_len}")
        if not utd_ratio > 0:
            raise ValueError(f"utd_ratio must be > 0, got {utd_ratio!r}")
        self.seed = seed
        if seed is not None:
            torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.env = _as_vector_env(env, n_envs, seed, vectorization)
        self.n_envs = self.env.num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        check_spaces(self.observation_space, self.action_space)
        self.autoreset_mode = self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("vector envs with autoreset disabled are not supported; use "
                             "AutoresetMode.NEXT_STEP (Gymnasium's default) or SAME_STEP")
        if seed is not None:
            self.action_space.seed(seed)
            self.env.action_space.seed(seed)

        self.obs_dim = int(self.observation_space.shape[0])
        self.obs_normalizer = (ObservationNormalizer(self.obs_dim) if normalize_observations
                               else None)
        self.actor = LiquidActor(self.obs_dim, self.action_space, actor_neurons, cell=cell,
                                 seed=seed)
        self.discrete = self.actor.discrete
        if critic_encoder not in ("actor", "own"):
            raise ValueError(f"critic_encoder must be 'actor' or 'own', got {critic_encoder!r}")
        if critic_encoder == "own" and critic_trains_state:
            raise ValueError("critic_trains_state applies to critic_encoder='actor' only; the "
                             "critics' own encoder is always trained by the critic loss")
        self.critic_encoder = (
            LiquidNCPNetwork(self.obs_dim, actor_neurons, 1, cell=cell,
                             seed=None if seed is None else seed + 2)
            if critic_encoder == "own" else None)
        self.critic_state_dim = (self.actor.state_dim if self.critic_encoder is None
                                 else self.critic_encoder.hidden_size)
        critic_in = self.obs_dim + self.critic_state_dim + (0 if self.discrete
                                                             else self.actor.action_dim)
        critic_out = self.actor.action_dim if self.discrete else 1
        critic_seed = 0 if seed is None else seed + 1
        self.critics = CriticEnsemble(critic_in, critic_out, n_critics, critic_hidden,
                                      ncp_neurons=critic_ncp_neurons, seed=critic_seed)
        self.critic_targets = CriticEnsemble(critic_in, critic_out, n_critics, critic_hidden,
                                             ncp_neurons=critic_ncp_neurons, seed=critic_seed)
        self.critic_targets.load_state_dict(self.critics.state_dict())
        self.critic_targets.requires_grad_(False)

        if isinstance(target_entropy, str):
            if target_entropy != "auto":
                raise ValueError(
                    f"target_entropy must be 'auto' or a number, got {target_entropy!r}")
            n = self.actor.action_dim
            target_entropy = target_entropy_scale * float(np.log(n)) if self.discrete else -float(n)
        self.target_entropy = float(target_entropy)
        self.learn_alpha, init_alpha = self._parse_ent_coef(ent_coef)
        self.log_alpha = torch.tensor(np.log(init_alpha), dtype=torch.float32,
                                      requires_grad=self.learn_alpha)

        # Fused Adam: one kernel for all tensors; the per-tensor loop costs more than the
        # arithmetic for networks this small.
        if isinstance(learning_rate, str):
            learning_rate = linear_schedule(learning_rate)
        if callable(learning_rate):
            self.lr_schedule: Callable[[float], float] | None = learning_rate
            learning_rate = self._scheduled_lr(1.0)
        elif isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                or not learning_rate > 0:
            raise ValueError(f"learning_rate must be a number > 0 or a schedule (a callable of "
                             f"the remaining progress), got {learning_rate!r}")
        else:
            self.lr_schedule = None
        # One optimiser, one parameter group per part (actor, critics, temperature): Adam
        # updates each tensor on its own, so this is three optimisers' arithmetic in one
        # ``step`` call (the per-call overhead is a visible share of a small update).
        groups = [{"params": list(self.actor.parameters())},
                  {"params": self._critic_parameters()}]
        if self.learn_alpha:
            groups.append({"params": [self.log_alpha]})
        self.optimizer = torch.optim.Adam(groups, lr=float(learning_rate), fused=True)

        self.seq_len, self.burn_in, self.n_step = seq_len, burn_in, n_step
        self.batch_size, self.learning_starts = batch_size, learning_starts
        self.tau, self.gamma, self.utd_ratio = tau, gamma, float(utd_ratio)
        self.max_grad_norm, self.verbose = max_grad_norm, verbose
        self.critic_trains_state = bool(critic_trains_state)
        # the target encoder of a shared (critic-trained) actor network
        self.actor_target: LiquidActor | None = None
        if self.critic_trains_state:
            self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        # parameter lists the update walks every step (load_state_dict copies into these
        # same tensors, so the lists stay valid)
        self._param_lists = {"actor": list(self.actor.parameters()),
                             "critic": self._critic_parameters(),
                             "critics": list(self.critics.parameters()),
                             "critic_targets": list(self.critic_targets.parameters()),
                             "optimized": [p for g in self.optimizer.param_groups
                                           for p in g["params"]]}
        if self.actor_target is not None:
            self._param_lists["actor_target"] = list(self.actor_target.parameters())
        if target_q not in ("min", "mean"):
            raise ValueError(f"target_q must be 'min' or 'mean', got {target_q!r}")
        self.target_q = target_q
        self.buffer = SequenceReplayBuffer(max(buffer_size // self.n_envs,
                                               seq_len + burn_in + n_step - 1),
                                           self.n_envs, self.obs_dim,
                                           1 if self.discrete else self.actor.action_dim,
                                           self._stored_state_dim)
        self.num_timesteps = 0
        self.n_updates = 0
        self.ep_info_buffer: deque[dict[str, float]] = deque(maxlen=100)
        self.last_losses: dict[str, float] = {}
        self.tensorboard_log = tensorboard_log
        self.logger: Any = None  # an SB3 Logger, made by the first ``learn`` call
        self._episode_num = 0
        self._train_sums: dict[str, float] = {}
        self._train_count = 0
        self._obs: np.ndarray | None = None
        # every action batch sent to the vector env since its seeded reset: replaying it
        # rebuilds the environments' state when an agent saved with its buffer is loaded
        self._action_log = ActionLog()
        self._update_budget = 0.0

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _parse_ent_coef(ent_coef: str | float) -> tuple[bool, float]:
        if isinstance(ent_coef, str):
            if ent_coef == "auto":
                return True, 1.0
            if ent_coef.startswith("auto_"):
                return True, float(ent_coef[5:])
            raise ValueError(
                f"ent_coef must be 'auto', 'auto_<init>' or a number, got {ent_coef!r}")
        if not ent_coef > 0:
            raise ValueError(f"a fixed ent_coef must be > 0, got {ent_coef!r}")
        return False, float(ent_coef)

    @property
    def _stored_state_dim(self) -> int:
        """Replay stores the actor state, then the critic encoder's (if it has one)."""
        own = 0 if self.critic_encoder is None else self.critic_encoder.hidden_size
        return self.actor.state_dim + own

    def _critic_parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.critics.parameters())
        if self.critic_encoder is not None:
            params += list(self.critic_encoder.parameters())
        return params

    def _scheduled_lr(self, progress_remaining: float) -> float:
        lr = self.lr_schedule(progress_remaining)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0:
            raise ValueError(f"the learning-rate schedule returned {lr!r} at progress "
                             f"remaining {progress_remaining:.3f}; expected a number >= 0")
        return float(lr)

    def _update_learning_rate(self, progress_remaining: float) -> None:
        lr = self._scheduled_lr(progress_remaining)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def _to_env_action(self, action: np.ndarray) -> np.ndarray:
        """Actor actions (``[-1, 1]`` or indices) to what the environment takes."""
        if self.discrete:
            return action.astype(np.int64)
        low, high = self.action_space.low, self.action_space.high
        return (low + 0.5 * (action + 1.0) * (high - low)).astype(self.action_space.dtype)

    def _from_env_action(self, action: np.ndarray) -> np.ndarray:
        if self.discrete:
            return action
        low, high = self.action_space.low, self.action_space.high
        return 2.0 * (action - low) / (high - low) - 1.0

    def _normalized(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.obs_normalizer is None else self.obs_normalizer(obs)

    def _check_observation(self, obs: Any) -> None:
        """A batch of observations must be finite numbers of the space's shape."""
        expected = (self.n_envs, self.obs_dim)
        if not isinstance(obs, np.ndarray) or obs.shape != expected \
                or not np.issubdtype(obs.dtype, np.number):
            got = (f"{type(obs).__name__} of shape {np.shape(obs)} and dtype "
                   f"{getattr(obs, 'dtype', None)}")
            raise ValueError(f"the environment returned a malformed observation at step "
                             f"{self.num_timesteps}: expected a numeric array of shape "
                             f"{expected} (the observation space {self.observation_space} for "
                             f"{self.n_envs} copies), got a {got}")
        self._check_finite("observation", obs)

    def _check_reward(self, reward: Any) -> None:
        if not isinstance(reward, np.ndarray) or reward.shape != (self.n_envs,) \
                or not np.issubdtype(reward.dtype, np.number):
            raise ValueError(f"the environment returned a malformed reward at step "
                             f"{self.num_timesteps}: expected {self.n_envs} numbers, got "
                             f"{reward!r}")
        self._check_finite("reward", reward)

    def _check_finite(self, name: str, value: np.ndarray) -> None:
        if not np.all(np.isfinite(value)):
            bad = np.argwhere(~np.isfinite(np.asarray(value, dtype=np.float64)))[0].tolist()
            raise ValueError(f"the environment returned a non-finite {name} at step "
                             f"{self.num_timesteps} (entry {bad}): {value!r}")

    # ------------------------------------------------------------------ learning
    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 4,
              tb_log_name: str = "NeuroFlow", reset_num_timesteps: bool = False,
              progress_bar: bool = False) -> NeuroFlow:
        """Collect ``total_timesteps`` transitions (summed over the environment copies)
        and train; returns ``self``.

        ``callback``: a Stable-Baselines3 callback (any ``BaseCallback``, see
        :mod:`agents.callbacks`), a list of them, or a function
        ``callback(locals, globals) -> bool``; called after every environment step and
        that step's updates, and a false return value stops training.
        ``log_interval``: write the logs (TensorBoard with SB3's keys when the agent has a
        ``tensorboard_log`` folder, and a table on stdout with ``verbose=1``) every this
        many finished episodes. ``tb_log_name``: the run folder's prefix; each agent's
        first ``learn`` call (and each one with ``reset_num_timesteps=True``) starts a new
        run folder. ``reset_num_timesteps``: start counting from 0 on new episodes, as
        SB3 does by default; NeuroFlow's default continues the previous call.
        ``progress_bar``: show a tqdm bar.
        """
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) \
                or total_timesteps < 1:
            raise ValueError(f"total_timesteps must be an integer >= 1, got {total_timesteps!r}")
        if isinstance(log_interval, bool) or not isinstance(log_interval, int) \
                or log_interval < 1:
            raise ValueError(f"log_interval must be an integer >= 1, got {log_interval!r}")
        from agents.callbacks import make_callback

        callback = make_callback(callback, progress_bar)
        if reset_num_timesteps:
            self.num_timesteps, self._episode_num, self._obs = 0, 0, None
            self.ep_info_buffer.clear()
        if self.logger is None or reset_num_timesteps:
            from stable_baselines3.common.utils import configure_logger

            self.logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, True)
        callback.init_callback(self)
        # Saturated gates and tiny Adam moments produce denormal floats, which the CPU
        # handles tens of times slower than normal ones; flush them to zero while training
        # (PyTorch's default, off, is restored on return).
        torch.set_flush_denormal(True)
        try:
            return self._learn(total_timesteps, callback, log_interval)
        finally:
            torch.set_flush_denormal(False)

    def get_env(self) -> gym.vector.VectorEnv:
        """The training environments (SB3's accessor, used by callbacks)."""
        return self.env

    def get_vec_normalize_env(self) -> None:
        """SB3's accessor; NeuroFlow normalises inside the agent, never with a VecNormalize."""
        return None

    def _learn(self, total_timesteps: int, callback: Any, log_interval: int) -> NeuroFlow:
        env, n = self.env, self.n_envs
        if self._obs is None:
            self._obs, _ = env.reset(seed=self.seed)
            self._action_log = ActionLog()  # the log replays from this seeded reset
            self._check_observation(self._obs)
            if self.obs_normalizer is not None:
                self.obs_normalizer.update(self._obs)
            self._state = torch.zeros(n, self._stored_state_dim)
            self._episode_start = np.ones(n, dtype=bool)
            self._pending_reset = np.zeros(n, dtype=bool)
        first_step = self.num_timesteps
        end = first_step + total_timesteps
        self._start_time = time.perf_counter()
        self._first_step = first_step
        min_stored = self.seq_len + self.burn_in + self.n_step - 1
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < end:
            callback.on_rollout_start()
            obs = self._obs
            with torch.no_grad():
                obs_t = self._normalized(torch.as_tensor(obs, dtype=torch.float32))
                state_before = self._state
                if self._episode_start.any():
                    keep = torch.as_tensor(~self._episode_start, dtype=torch.float32)
                    state_before = state_before * keep.unsqueeze(1)
                h = self.actor.state_dim
                out, actor_state = self.actor(obs_t, state_before[:, :h])
                if self.critic_encoder is None:
                    self._state = actor_state
                else:
                    _, encoder_state = self.critic_encoder(obs_t, state_before[:, h:])
                    self._state = torch.cat([actor_state, encoder_state], 1)
                if self.num_timesteps < self.learning_starts:
                    action = np.stack([self._from_env_action(np.asarray(self.action_space.sample()))
                                       for _ in range(n)])
                else:
                    action = self.actor.act(out, deterministic=False).numpy()
            env_action = self._to_env_action(action)
            self._action_log.append(env_action)
            next_obs, reward, terminated, truncated, info = env.step(env_action)
            self._check_observation(next_obs)
            self._check_reward(reward)
            if self.obs_normalizer is not None:
                self.obs_normalizer.update(next_obs)

            # Gymnasium NEXT_STEP autoreset: the step after an episode ended only resets that
            # copy (its action is ignored, reward 0); it is not a transition.
            valid = ~self._pending_reset
            real_next = next_obs
            done = terminated | truncated
            if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
                real_next = next_obs.copy()
                for i in np.flatnonzero(done):
                    real_next[i] = info["final_obs"][i]
            ids = np.flatnonzero(valid)
            self.buffer.add(ids, obs[ids], action[ids], reward[ids], real_next[ids],
                            terminated[ids], self._episode_start[ids],
                            state_before.numpy()[ids])
            self._record_episodes(info, done)
            if self.autoreset_mode == AutoresetMode.NEXT_STEP:
                self._episode_start = self._pending_reset.copy()
                self._pending_reset = done & valid
            else:
                self._episode_start = done.copy()
            self._obs = next_obs
            self.num_timesteps += int(valid.sum())

            if self.num_timesteps >= self.learning_starts and self.buffer.can_sample(min_stored):
                self._update_budget += self.utd_ratio * int(valid.sum())
                if self.lr_schedule is not None and self._update_budget >= 1.0:
                    self._update_learning_rate(
                        max(0.0, 1.0 - (self.num_timesteps - first_step) / total_timesteps))
                while self._update_budget >= 1.0:
                    self.train_step()
                    self._update_budget -= 1.0
            finished = int(done[valid].sum())
            if finished:
                before, self._episode_num = self._episode_num, self._episode_num + finished
                if self._episode_num // log_interval > before // log_interval:
                    self._dump_logs()
            callback.update_locals(locals())
            if not callback.on_step():
                break
            callback.on_rollout_end()
        callback.on_training_end()
        return self

    def _dump_logs(self) -> None:
        """Record SB3's keys and write them (TensorBoard, stdout with verbose=1)."""
        elapsed = max(time.perf_counter() - self._start_time, 1e-9)
        log = self.logger
        log.record("time/episodes", self._episode_num, exclude="tensorboard")
        log.record("time/fps", int((self.num_timesteps - self._first_step) / elapsed))
        log.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        log.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        if self.ep_info_buffer:
            log.record("rollout/ep_rew_mean", self.mean_episode_return())
            log.record("rollout/ep_len_mean",
                       float(np.mean([e["l"] for e in self.ep_info_buffer])))
        if self._train_count:
            for key, total in self._train_sums.items():
                log.record(f"train/{key}", total / self._train_count)
            log.record("train/learning_rate", self.optimizer.param_groups[0]["lr"])
            log.record("train/n_updates", self.n_updates, exclude="tensorboard")
        self._train_sums, self._train_count = {}, 0
        log.dump(step=self.num_timesteps)

    def _record_episodes(self, info: dict, done: np.ndarray) -> None:
        episode = info.get("episode")
        if episode is None:
            return
        mask = info.get("_episode", done)
        for i in np.flatnonzero(mask):
            self.ep_info_buffer.append({"r": float(episode["r"][i]), "l": int(episode["l"][i])})

    def mean_episode_return(self) -> float:
        """Mean return of the last (up to 100) finished training episodes."""
        if not self.ep_info_buffer:
            return float("nan")
        return float(np.mean([e["r"] for e in self.ep_info_buffer]))

    def train_step(self) -> dict[str, float]:
        """One gradient update of critics, actor and temperature on sampled sequences."""
        n_seq = max(self.batch_size // self.seq_len, 1)
        extra = self.n_step - 1  # steps after the trained ones that only feed targets
        b = self.buffer.sample(n_seq, self.burn_in + self.seq_len + extra, self.rng)
        burn = self.burn_in
        h = self.actor.state_dim
        if self.obs_normalizer is not None:
            b.obs, b.next_obs = self._normalized(b.obs), self._normalized(b.next_obs)
        out, states = self._unroll(self.actor, b.obs, b.episode_start, b.start_state[:, :h])
        B, T = out.shape[0], out.shape[1]  # T = seq_len + n_step - 1
        S = self.seq_len

        def flat(x: torch.Tensor, steps: int = T) -> torch.Tensor:
            """``(B, T, ...)`` -> ``(B * steps, ...)`` over the first ``steps`` steps."""
            x = x[:, :steps] if steps < x.shape[1] else x
            return x.reshape(B * steps, *x.shape[2:])

        rewards, terminated = flat(b.rewards[:, burn:]), flat(b.terminated[:, burn:])
        next_obs = flat(b.next_obs[:, burn:])
        alpha = self.log_alpha.exp().detach()
        if self.critic_encoder is None:
            if self.critic_trains_state:
                # The critic loss also shapes the liquid state it reads (a shared encoder, as
                # in SAC-AE/DrQ); the actor loss still sees the critics as fixed functions.
                # Targets read the history through the target copy of the network.
                with torch.no_grad():
                    _, target_states = self._unroll(self.actor_target, b.obs, b.episode_start,
                                                    b.start_state[:, :h])
                target = self.td_target(rewards, terminated, next_obs, flat(states).detach(),
                                        alpha, critic_state=flat(target_states))
                hist = flat(states, S)
            else:
                target = self.td_target(rewards, terminated, next_obs, flat(states).detach(),
                                        alpha)
                hist = flat(states, S).detach()
        else:
            _, enc = self._unroll(self.critic_encoder, b.obs, b.episode_start,
                                  b.start_state[:, h:])
            target = self.td_target(rewards, terminated, next_obs, flat(states).detach(), alpha,
                                    critic_state=flat(enc).detach())
            hist = flat(enc, S)
        if extra:
            target = self.n_step_target(target.reshape(B, T), b.rewards[:, burn:],
                                        b.terminated[:, burn:], b.episode_start[:, burn:]
                                        ).reshape(B * S)
        obs, out = flat(b.obs[:, burn:], S), flat(out, S)
        actions = flat(b.actions[:, burn:], S)

        critic_in = torch.cat([obs, hist], 1)
        if self.discrete:
            q = self.critics(critic_in).gather(2, actions.long().unsqueeze(0).expand(
                self.critics.n_critics, -1, -1)).squeeze(-1)
        else:
            q = self.critics(torch.cat([critic_in, actions], 1)).squeeze(-1)
        critic_loss = 0.5 * F.mse_loss(q, target.unsqueeze(0).expand_as(q), reduction="none"
                                       ).mean(1).sum()

        # The actor loss sees the critics as fixed functions (weights and state input
        # detached), so one backward pass of the summed losses gives the critics exactly
        # their loss's gradient and the actor its own (plus the critic loss's gradient
        # through the state when critic_trains_state is on).
        actor_in = critic_in if not hist.requires_grad else torch.cat([obs, hist.detach()], 1)
        actor_loss, entropy = self.actor_loss(out, actor_in, alpha)
        zero_grad(self._param_lists["optimized"])
        (critic_loss + actor_loss).backward()
        critic_norm = clip_grad_norm(self._param_lists["critic"], self.max_grad_norm)
        actor_norm = clip_grad_norm(self._param_lists["actor"], self.max_grad_norm)
        # one read of the four numbers (each .item() is a separate call into torch)
        checked = torch.stack([critic_loss.detach(), actor_loss.detach(), critic_norm,
                               actor_norm]).tolist()
        if not all(map(math.isfinite, checked)):
            names = ("critic_loss", "actor_loss", "critic gradient norm", "actor gradient norm")
            bad = ", ".join(f"{name}={value:g}" for name, value in zip(names, checked,
                                                                        strict=True)
                            if not math.isfinite(value))
            raise NonFiniteTrainingError(
                f"training produced a non-finite {bad} at step {self.num_timesteps} (update "
                f"{self.n_updates + 1}); stopped before applying it, so the parameters and any "
                "saved checkpoint are from the last good update")
        if self.learn_alpha:
            # loss = log_alpha * mean(entropy - target): its gradient is that mean, so no
            # autograd pass is needed. alpha grows while the policy is below its target.
            gap = (entropy - self.target_entropy).mean()
            self.log_alpha.grad = gap.reshape(()).clone()
        fused_adam_step(self.optimizer)

        losses = {"critic_loss": checked[0], "actor_loss": checked[1]}
        log_alpha = self.log_alpha.detach()
        names, values = ["ent_coef"], [log_alpha.exp()]
        if self.critics.n_critics > 1:
            names.append("critic_spread")
            values.append(q.detach().std(0).mean())
        if self.learn_alpha:
            names.append("ent_coef_loss")
            values.append(log_alpha * gap)
        losses.update(zip(names, torch.stack(values).tolist(), strict=True))
        lists = self._param_lists
        with torch.no_grad():
            torch._foreach_lerp_(lists["critic_targets"], lists["critics"], self.tau)
            if self.actor_target is not None:
                torch._foreach_lerp_(lists["actor_target"], lists["actor"], self.tau)
        self.n_updates += 1
        self.last_losses = losses
        for key, value in losses.items():
            self._train_sums[key] = self._train_sums.get(key, 0.0) + value
        self._train_count += 1
        return losses

    def n_step_target(self, one_step: torch.Tensor, rewards: torch.Tensor,
                      terminated: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        """Multi-step targets ``(B, T - n + 1)`` from one-step ones ``(B, T)``.

        ``one_step[:, j] = r_j + gamma (1 - terminated_j) V_j`` for each step ``j`` of the
        sequences. The target of step ``t`` sums ``gamma^k r_{t+k}`` up to ``n`` rewards,
        stopping early where the episode ends, and bootstraps with the one-step target of
        its last step: ``G_t = sum_{k<m-1} gamma^k r_{t+k} + gamma^(m-1) one_step_{t+m-1}``,
        with ``m`` the number of steps up to ``n`` before the episode ends (a terminal
        step ends it and so does the step before a new episode starts: a truncation, which
        still bootstraps inside ``one_step``).
        """
        n, steps = self.n_step, one_step.shape[1] - self.n_step + 1
        target = torch.zeros_like(one_step[:, :steps])
        alive = torch.ones_like(target)
        discount = 1.0
        for k in range(n):
            j = slice(k, k + steps)
            if k == n - 1:
                stop = torch.ones_like(target)
            else:  # the episode ends at this step: terminated, or a new one starts next
                stop = torch.maximum(terminated[:, j], episode_start[:, k + 1:k + 1 + steps])
            target = target + alive * discount * torch.where(
                stop.bool(), one_step[:, j], rewards[:, j])
            alive = alive * (1.0 - stop)
            discount *= self.gamma
        return target

    def _unroll(self, net: torch.nn.Module, obs: torch.Tensor, episode_start: torch.Tensor,
                state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Refresh ``state`` over the burn-in prefix without gradients, then run the
        trained steps; returns their outputs and states ``(B, seq_len, ...)``."""
        burn = self.burn_in
        if burn:
            with torch.no_grad():
                state = net.final_state(obs[:, :burn], state,
                                        episode_start=episode_start[:, :burn])
        return net(obs[:, burn:], state, episode_start=episode_start[:, burn:],
                   return_states=True)

    def _reduce_target(self, q: torch.Tensor) -> torch.Tensor:
        """Combine the target critics ``(N, B, out)``: the minimum (clipped double-Q) or
        the mean (less pessimistic; "Revisiting Discrete SAC" finds the minimum
        under-estimates with discrete actions)."""
        return q.min(0).values if self.target_q == "min" else q.mean(0)

    @torch.no_grad()
    def td_target(self, rewards: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor,
                  state: torch.Tensor, alpha: torch.Tensor,
                  critic_state: torch.Tensor | None = None) -> torch.Tensor:
        """Soft Bellman targets ``r + gamma (1 - terminated) V(s')``, ``(n,)``.

        ``state`` is the actor state after each step; one more actor step from it on the
        real next observation gives the policy at the successor (also after the last
        step of an episode, whose successor is not the next stored step). Only
        ``terminated`` stops bootstrapping: a truncated step still bootstraps.
        ``critic_state`` is the state the critics read after each step: the critic
        encoder's (own encoder) or the target actor network's (``critic_trains_state``).
        """
        next_out, next_states = self.actor(next_obs, state)
        if self.critic_encoder is not None:
            _, next_states = self.critic_encoder(next_obs, critic_state)
        elif critic_state is not None:
            _, next_states = self.actor_target(next_obs, critic_state)
        next_in = torch.cat([next_obs, next_states], 1)
        reduce = self._reduce_target
        if self.discrete:
            probs, log_probs = self.actor.categorical(next_out)
            q_next = reduce(self.critic_targets(next_in))
            v_next = (probs * (q_next - alpha * log_probs)).sum(-1)
        else:
            next_action, next_log_prob = self.actor.sample_continuous(next_out)
            q_next = reduce(self.critic_targets(torch.cat([next_in, next_action], 1)))
            v_next = q_next.squeeze(-1) - alpha * next_log_prob
        return rewards + self.gamma * (1.0 - terminated) * v_next

    def actor_loss(self, out: torch.Tensor, critic_in: torch.Tensor, alpha: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy loss and the policy's entropy estimate per sample.

        Box: ``E[alpha log pi(a|s) - min_i Q_i(s, a)]`` with a reparameterised ``a``.
        Discrete (SAC-Discrete): the expectation over **all** actions,
        ``sum_a pi(a|s) (alpha log pi(a|s) - min_i Q_i(s, a))``, with the full
        log-probability vector (not the log-probability of one sampled action).
        """
        if self.discrete:
            probs, log_probs = self.actor.categorical(out)
            with torch.no_grad():
                q_pi = self.critics(critic_in).min(0).values
            loss = (probs * (alpha * log_probs - q_pi)).sum(-1).mean()
            return loss, -(probs * log_probs).sum(-1).detach()
        action, log_prob = self.actor.sample_continuous(out)
        q_pi = self.critics(torch.cat([critic_in, action], 1), detach_params=True
                            ).min(0).values.squeeze(-1)
        return (alpha * log_prob - q_pi).mean(), -log_prob.detach()

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, include_buffer: bool = False) -> Path:
        """Write the agent to one safetensors file (``.safetensors`` is appended when
        ``path`` has no suffix) atomically; returns the path.

        ``include_buffer=True`` also stores the replay buffer, the rollout state, the
        random generators and the action log that rebuilds the environments, so that
        ``NeuroFlow.load(path).learn(n)`` continues exactly as the uninterrupted run would.
        """
        return save_agent(self, path, include_buffer)

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, **kwargs: Any) -> NeuroFlow:
        """An agent saved with :meth:`save`. ``env`` defaults to a new vector env of the
        saved id; ``kwargs`` replace constructor arguments. Never unpickles anything: a
        file that is not a saved agent, or one that was truncated or modified, raises
        ``ValueError``."""
        return load_agent(cls, path, env, **kwargs)

    # ------------------------------------------------------------------ acting
    def predict(self, observation: np.ndarray, state: np.ndarray | None = None,
                episode_start: np.ndarray | None = None, deterministic: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
        """Actions for one observation ``(obs_dim,)`` or a batch ``(n, obs_dim)``, and the
        next recurrent state ``(n, state_dim)``; the sb3-contrib RecurrentPPO contract, so
        ``stable_baselines3.common.evaluation.evaluate_policy`` works unchanged.

        ``state=None`` starts from zeros; ``episode_start[i]`` resets sample ``i`` first.
        """
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        if single:
            obs = obs[None]
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"expected an observation of shape ({self.obs_dim},) or "
                             f"(n, {self.obs_dim}), got {np.shape(observation)}")
        self._check_finite("observation", obs)
        with torch.no_grad():
            h = None if state is None else torch.as_tensor(np.asarray(state), dtype=torch.float32)
            if h is not None and episode_start is not None:
                keep = 1.0 - torch.as_tensor(np.asarray(episode_start), dtype=torch.float32)
                h = h * keep.reshape(-1, 1)
            out, h = self.actor(self._normalized(torch.as_tensor(obs)), h)
            action = self._to_env_action(self.actor.act(out, deterministic).numpy())
        return (action[0] if single else action), h.numpy()
