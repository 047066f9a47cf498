"""NeuroFlow: soft actor-critic with a liquid (recurrent) actor, trained on sequences.

Box actions (SAC, tanh-squashed Gaussian) and Discrete ones (SAC-Discrete). The actor is
a :class:`~velora_ens.models.LiquidNCPNetwork`; the critics are an ensemble head
(:mod:`agents.neuroflow.heads`) reading the observation, the critics' view of the history
(:mod:`agents.neuroflow.history`) and, for Box actions, the action. Recurrent training
follows R2D2: replay keeps whole trajectories; an update samples sequences of ``burn_in +
seq_len`` steps from the actor state stored when the first was acted on, refreshes it
over the burn-in without gradients and trains on the rest through time. States reset
at episode starts; targets bootstrap on ``terminated`` only, not on truncations.

The plumbing is :class:`~agents.common.base.BaseAgent`'s and the variants are small
objects (head, history view, exploration, temperature); this module holds one acting
iteration and the update (:meth:`NeuroFlow.train_step`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from agents.common import persistence
from agents.common.actor import LiquidActor
from agents.common.base import BaseAgent, NonFiniteTrainingError
from agents.common.optim import clip_grad_norm, fused_adam_step, zero_grad
from agents.neuroflow.exploration import ExplorationSetup, make_exploration
from agents.neuroflow.heads import HeadOptions, bootstrap_masks, loss_weights, make_critic_head
from agents.neuroflow.history import make_history
from agents.neuroflow.losses import actor_loss, critic_values, soft_td_targets
from agents.neuroflow.replay import SequenceReplayBuffer, unroll_with_burn_in
from agents.neuroflow.targets import TARGET_RULES, n_step_targets, reduce_members
from agents.neuroflow.temperature import EntropyTemperature
from agents.neuroflow.update_rate import updates_per_transition
from velora_ens._validation import check_int

__all__ = ["NeuroFlow", "NonFiniteTrainingError"]


class NeuroFlow(BaseAgent):
    """Liquid soft actor-critic for Box, Discrete, MultiDiscrete and MultiBinary actions
    (the last two as a factorised SAC-Discrete, :mod:`agents.neuroflow.losses`).

    ``NeuroFlow(env, ...)``, or Stable-Baselines3's spelling ``NeuroFlow("MlpPolicy",
    env, ...)`` (the policy is always the liquid actor; SB3's default policy names are
    accepted so that SB3 scripts run unchanged).

    Args:
        env: see :class:`~agents.common.base.BaseAgent`, as for ``learning_rate``,
            ``normalize_observations`` (replay keeps raw observations), the elapsed time,
            ``n_envs``, ``vectorization``, ``seed``, ``device``, ``tensorboard_log``
            (with ``train/q_epistemic``, the critics' disagreement, and each exploration
            strategy's keys) and ``verbose``. Actions ``Box``, ``Discrete``,
            ``MultiDiscrete`` or ``MultiBinary``.
        actor_neurons: inter + command neurons of the actor's NCP wiring.
        actor_dense_recurrence: every command neuron of the actor's liquid network reads
            every other (``dense_recurrence`` of
            :class:`~velora_ens.models.LiquidNCPNetwork`).
        actor_mixed_memory: an LSTM memory cell beside the actor's liquid cell
            (``mixed_memory``; the state doubles).
        actor_self_synapse_init: CfC only: the actor's self-synapses start at this weight
            (``self_synapse_init``); the Memory section of the liquid-networks guide says
            what each option remembers.
        actor_cfc_mode: the mode of the actor's CfC cell: ``"default"``, or ``"carry"``,
            where the state is carried from step to step through the time gate instead
            of being rewritten through ``tanh`` (longer memory; the same guide).
        cell: ``"cfc"`` (closed-form, default) or ``"ltc"``; ``"gru"`` or ``"lstm"`` put
            torch's gated cell (``actor_neurons`` units, the elapsed time appended to its
            input) in the liquid network's place, a baseline for comparisons.
        critic_hidden: hidden widths of each MLP critic.
        critic_ncp_neurons: use NCP-wired critics with this many neurons instead.
        n_critics: critics in the ensemble head (targets use their minimum).
        critic_head: the critics' ensemble head (:mod:`agents.neuroflow.heads`): ``"deep"`` (N
            independent MLPs in one batched call, the default), ``"batch"``
            (BatchEnsemble), ``"liquid"`` (Liquid Ensemble: delegating experts,
            power-weighted value) or ``"moe"`` (Bayesian: parameters drawn per member).
        critic_head_kwargs: options of the head (:class:`agents.neuroflow.heads.HeadOptions`):
            ``prior_scale`` (frozen randomised priors), ``bootstrap`` (the probability
            that a transition trains a member; masks kept in replay), ``target_subset``
            (REDQ's random-subset minimum), and the head's own (``solver``; ``init_std``,
            ``prior_std``, ``kl_weight``).
        exploration: how the agent acts while collecting (:mod:`agents.neuroflow.exploration`):
            ``"none"`` (the policy), ``"oac"``, ``"ucb"``, ``"thompson"`` or
            ``"disagreement"``; ``predict`` always acts with the policy.
        exploration_kwargs: the strategy's options (e.g. ``{"beta": 4.66, "delta":
            23.53}`` for OAC, ``{"scale": 1.0}`` for disagreement).
        buffer_size: transitions kept in replay (split over the environment streams).
        learning_starts: transitions collected with random actions before learning.
        batch_size: transitions per update (``batch_size // seq_len`` sequences).
        seq_len: trained steps per sequence.
        burn_in: steps before them that only refresh the stored state.
        tau: soft target update rate.
        gamma: discount.
        utd_ratio: gradient updates per environment transition.
        train_freq: SB3's way to give the update rate (an int or ``(n, "step")``), with
            ``gradient_steps`` (``-1``: one per transition); converted to ``utd_ratio``
            (:mod:`agents.neuroflow.update_rate`). Give these or ``utd_ratio``, not both.
        gradient_steps: SB3's updates per ``train_freq`` steps.
        ent_coef: ``"auto"`` (learned, initial value 1), ``"auto_<init>"`` or a fixed float.
        target_entropy: ``"auto"`` is ``-|A|`` for Box actions and
            ``target_entropy_scale * log |A|`` (positive) for Discrete ones
            (:mod:`agents.neuroflow.temperature`).
        max_grad_norm: gradient-norm clip for actor and critics.
        critic_encoder: what summarises the history for the critics
            (:mod:`agents.neuroflow.history`): ``"actor"``, the actor's liquid state;
            ``"own"``, a liquid network of ``actor_neurons`` neurons trained by the critic
            loss only (Ni et al. 2022, for partially observed tasks); ``"none"``, the
            observation alone (fully observed tasks, as SB3's SAC).
        critic_trains_state: with ``critic_encoder="actor"``, the critic loss also trains
            the actor's liquid network (a shared encoder, as in SAC-AE); the targets read
            the history through a copy soft-updated with ``tau``.
        target_q: combine the target critics by ``"min"`` (clipped double-Q) or ``"mean"``,
            or ``"member"``: every member bootstraps from its own target member, as in
            Bootstrapped DQN (what Thompson sampling needs; see
            :func:`agents.neuroflow.losses.soft_td_targets`).
        n_step: bootstrap after ``n_step`` rewards, never past the end of an episode
            (R2D2's multi-step targets, :func:`agents.neuroflow.targets.n_step_targets`);
            1 is one-step SAC.
    """

    def __init__(
        self,
        policy: Any = None,
        env: Any = None,
        *,
        actor_neurons: int = 32,
        actor_dense_recurrence: bool = False,
        actor_mixed_memory: bool = False,
        actor_self_synapse_init: float | None = None,
        actor_cfc_mode: str = "default",
        cell: str = "cfc",
        critic_hidden: tuple[int, ...] = (128, 128),
        critic_ncp_neurons: int | None = None,
        n_critics: int = 2,
        critic_head: str = "deep",
        critic_head_kwargs: dict[str, Any] | None = None,
        exploration: str = "none",
        exploration_kwargs: dict[str, Any] | None = None,
        learning_rate: float | str | Callable[[float], float] = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        seq_len: int = 8,
        burn_in: int = 8,
        tau: float = 0.005,
        gamma: float = 0.99,
        utd_ratio: float = 1.0,
        train_freq: int | tuple[int, str] | None = None,
        gradient_steps: int | None = None,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        target_entropy_scale: float = 0.89,
        max_grad_norm: float = 10.0,
        critic_encoder: str = "actor",
        critic_trains_state: bool = False,
        target_q: str = "min",
        n_step: int = 1,
        normalize_observations: bool = False,
        elapsed_time_key: str | None = None,
        elapsed_time_unit: float = 1.0,
        n_envs: int = 1,
        vectorization: str = "sync",
        seed: int | None = None,
        device: torch.device | str = "auto",
        tensorboard_log: str | None = None,
        verbose: int = 0,
    ) -> None:
        config = dict(locals())  # the JSON-able arguments are what ``save`` records
        for name, value, low in (("seq_len", seq_len, 1), ("burn_in", burn_in, 0),
                                 ("batch_size", batch_size, 1), ("n_critics", n_critics, 1),
                                 ("actor_neurons", actor_neurons, 2), ("n_step", n_step, 1),
                                 ("buffer_size", buffer_size, 1),
                                 ("learning_starts", learning_starts, 0)):
            check_int(name, value, low)
        if batch_size < seq_len:
            raise ValueError(f"batch_size={batch_size} must be >= seq_len={seq_len}")
        if not utd_ratio > 0:
            raise ValueError(f"utd_ratio must be > 0, got {utd_ratio!r}")
        if target_q not in TARGET_RULES:
            raise ValueError(f"target_q must be 'min', 'mean' or 'member', got {target_q!r}")
        head_options = HeadOptions.parse(critic_head, critic_head_kwargs, n_critics)
        if target_q == "member" and head_options.target_subset is not None:
            raise ValueError("target_q='member' gives every member its own target; it "
                             "cannot be combined with critic_head_kwargs' target_subset "
                             f"({head_options.target_subset})")
        self._setup(config)
        self._set_actor(LiquidActor(self.obs_dim, self.action_space, actor_neurons, cell=cell,
                                    seed=seed, dense_recurrence=actor_dense_recurrence,
                                    mixed_memory=actor_mixed_memory,
                                    self_synapse_init=actor_self_synapse_init,
                                    cfc_mode=actor_cfc_mode))
        self.history = make_history(critic_encoder, critic_trains_state, self.actor,
                                    self.obs_dim, actor_neurons, cell, seed)
        for module in self.history.modules().values():
            module.to(self.device)
        critic_in = self.obs_dim + self.history.state_size + (0 if self.discrete
                                                              else self.actor.action_dim)
        # Discrete actions: one value per action of every entry (factorised SAC-Discrete,
        # agents.neuroflow.losses)
        critic_out = self.actor.choices.tables.n_outputs if self.discrete else 1
        self.head_options = head_options
        self.critics, self.critic_targets = (
            make_critic_head(critic_head, critic_in, critic_out, n_critics, critic_hidden,
                             ncp_neurons=critic_ncp_neurons,
                             seed=0 if seed is None else seed + 1, options=head_options
                             ).to(self.device) for _ in range(2))
        self.critic_targets.load_state_dict(self.critics.state_dict())
        self.critic_targets.requires_grad_(False)
        self.temperature = EntropyTemperature(ent_coef, target_entropy, target_entropy_scale,
                                              discrete=self.discrete,
                                              action_dim=self.actor.action_dim,
                                              max_entropy=(self.actor.choices.max_entropy
                                                           if self.discrete else None),
                                              device=self.device)
        self.log_alpha = self.temperature.log_alpha

        # One fused Adam, one parameter group per part (actor, critics, temperature): Adam
        # updates each tensor on its own, so this is three optimisers' arithmetic in one
        # ``step`` call (the per-call overhead is a visible share of a small update).
        groups = [{"params": list(self.actor.parameters())},
                  {"params": self._critic_parameters()}]
        if self.temperature.learn:
            groups.append({"params": [self.log_alpha]})
        self.optimizer = torch.optim.Adam(groups, lr=self.lr_schedule(1.0), fused=True)

        self.seq_len, self.burn_in, self.n_step = seq_len, burn_in, n_step
        self.batch_size, self.learning_starts = batch_size, learning_starts
        self.tau, self.gamma = tau, gamma
        self.utd_ratio = updates_per_transition(utd_ratio, train_freq, gradient_steps,
                                                self.n_envs)
        self.max_grad_norm, self.target_q = max_grad_norm, target_q
        # parameter lists the update walks every step (load_state_dict copies into these
        # same tensors, so the lists stay valid)
        self._param_lists = {"actor": list(self.actor.parameters()),
                             "critic": self._critic_parameters(),
                             "critics": list(self.critics.parameters()),
                             "critic_targets": list(self.critic_targets.parameters()),
                             "optimized": [p for g in self.optimizer.param_groups
                                           for p in g["params"]]}
        self._sequence_length = seq_len + burn_in + n_step - 1  # steps a sample reads
        self.buffer = SequenceReplayBuffer(max(buffer_size // self.n_envs,
                                               self._sequence_length),
                                           self.n_envs, self.obs_dim,
                                           (self.actor.choices.n_entries if self.discrete
                                            else self.actor.action_dim),
                                           self.actor.state_dim + self.history.stored_size,
                                           elapsed=self.elapsed is not None,
                                           mask_dim=(n_critics if head_options.bootstrap < 1
                                                     else 0))
        self._update_budget = 0.0
        self.exploration = make_exploration(exploration, exploration_kwargs, ExplorationSetup(
            actor=self.actor, critics=self.critics, critic_targets=self.critic_targets,
            log_alpha=self.log_alpha, action_space=self.action_space, obs_dim=self.obs_dim,
            history_size=self.history.state_size, n_envs=self.n_envs, device=self.device,
            seed=seed))
        self._state = torch.zeros(0)

    # ------------------------------------------------------------------ parts
    def _critic_parameters(self) -> list[torch.nn.Parameter]:
        """What the critic loss trains (a frozen prior is not among them)."""
        return ([p for p in self.critics.parameters() if p.requires_grad]
                + self.history.critic_parameters())

    @property
    def actor_target(self) -> LiquidActor | None:
        """The target copy of the actor network read by the targets
        (``critic_trains_state``), else ``None``."""
        return self.history.modules().get("actor_target")

    @property
    def critic_encoder(self) -> torch.nn.Module | None:
        """The critics' own liquid encoder (``critic_encoder="own"``), else ``None``."""
        return self.history.modules().get("critic_encoder")

    @property
    def alpha(self) -> float:
        return self.temperature.alpha

    @property
    def target_entropy(self) -> float:
        return self.temperature.target_entropy

    @property
    def replay_buffer(self) -> SequenceReplayBuffer:
        """SB3's name for the replay buffer (its ``CheckpointCallback`` looks for it)."""
        return self.buffer

    # ------------------------------------------------------------------ acting
    def _start_rollout(self, obs: np.ndarray) -> None:
        self._state = torch.zeros(self.n_envs, self.buffer.states.shape[-1], device=self.device)

    def _learn_iteration(self, callback: Any, first_step: int, total_timesteps: int,
                         log_interval: int) -> bool:
        """One environment step of every copy, stored in replay, and the updates it pays
        for (``utd_ratio`` per transition)."""
        callback.on_rollout_start()
        driver, h = self.driver, self.actor.state_dim
        with torch.no_grad():
            acting = self._act_prelude([self._state])
            state_before, = acting.states
            own = self.history.act(acting.obs, state_before[:, h:], acting.dt)
            self._state = (acting.actor_state if own is None
                           else torch.cat([acting.actor_state, own], 1))
            exploration = self.exploration
            exploration.reset(driver.episode_start)
            if self.num_timesteps < self.learning_starts:
                action = driver.actions.sample(self.n_envs)
            else:
                critic_in = (torch.cat([acting.obs, self.history.acting_view(
                    acting.actor_state, own)], 1) if exploration.reads_critics else None)
                action = exploration.act(acting.out, critic_in).cpu().numpy()
        step = self._env_step(action)
        ids = np.flatnonzero(step.valid)
        dt, real_dt = self._read_elapsed(step)
        extra = {} if self.elapsed is None else {"dt": dt[ids], "next_dt": real_dt[ids]}
        if self.buffer.mask_dim:
            extra["masks"] = bootstrap_masks(len(ids), self.buffer.mask_dim,
                                             self.head_options.bootstrap, self.rng)
        self.buffer.add(ids, step.obs[ids], action[ids], step.rewards[ids],
                        step.real_next_obs[ids], step.terminated[ids], step.episode_start[ids],
                        state_before.cpu().numpy()[ids], **extra)
        if self.num_timesteps >= self.learning_starts \
                and self.buffer.can_sample(self._sequence_length):
            self._update_budget += self.utd_ratio * step.n_transitions
            if not self.lr_schedule.constant and self._update_budget >= 1.0:
                self._update_learning_rate(first_step, total_timesteps)
            while self._update_budget >= 1.0:
                self.train_step()
                self._update_budget -= 1.0
        if not self._callback_step(callback, step, log_interval, replay_buffer=self.buffer,
                                   learning_starts=self.learning_starts):
            return False
        callback.on_rollout_end()
        return True

    # ------------------------------------------------------------------ the update
    def train_step(self) -> dict[str, float]:
        """One gradient update of critics, actor and temperature on sampled sequences:
        sample, history, targets, losses, step."""
        n_seq = max(self.batch_size // self.seq_len, 1)
        b = self.buffer.sample(n_seq, self._sequence_length, self.rng, device=self.device)
        if self.obs_normalizer is not None:
            b.obs, b.next_obs = self._normalized(b.obs), self._normalized(b.next_obs)
        burn, S, h = self.burn_in, self.seq_len, self.actor.state_dim

        unroll = functools.partial(unroll_with_burn_in, burn_in=burn, dt=b.dt)
        out, states = unroll(self.actor, b.obs, b.episode_start, b.start_state[:, :h])
        hist, target_hist = self.history.sequences(unroll, b.obs, b.episode_start,
                                                   b.start_state, states)
        B, T = out.shape[0], out.shape[1]  # T = seq_len + n_step - 1

        def flat(x: torch.Tensor, steps: int = T) -> torch.Tensor:
            """``(B, T, ...)`` -> ``(B * steps, ...)`` over the first ``steps`` steps."""
            x = x[:, :steps] if steps < x.shape[1] else x
            return x.reshape(B * steps, *x.shape[2:])

        alpha = self.log_alpha.exp().detach()
        # the exploration strategy's view of the steps: its bonus and its own models
        seen = (flat(b.obs[:, burn:]), flat(hist), flat(b.actions[:, burn:]),
                flat(b.next_obs[:, burn:]))
        rewards, reward_logs = self.exploration.rewards(flat(b.rewards[:, burn:]), *seen)
        explore_logs = {**self.exploration.update(*seen), **reward_logs}
        target, backup_weights = self._td_target(
            rewards, flat(b.terminated[:, burn:]), flat(b.next_obs[:, burn:]),
            flat(states).detach(), alpha, flat(target_hist),
            None if b.next_dt is None else flat(b.next_dt[:, burn:]))
        if self.n_step > 1:  # per-member targets (N, B T) are N more rows of sequences
            rows = target.numel() // (B * T)
            target = n_step_targets(target.reshape(rows * B, T),
                                    *(x[:, burn:].repeat(rows, 1) for x in (
                                        b.rewards, b.terminated, b.episode_start)),
                                    self.n_step, self.gamma).reshape(target.shape[:-1]
                                                                     + (B * S,))

        obs, out, hist = flat(b.obs[:, burn:], S), flat(out, S), flat(hist, S)
        critic_in = torch.cat([obs, hist], 1)
        q = critic_values(self.critics, critic_in, flat(b.actions[:, burn:], S),
                          self.actor.choices and self.actor.choices.tables)
        masks = None if b.masks is None else b.masks[:, burn:]
        critic_loss = self.critics.loss(q, target, loss_weights(masks, backup_weights, B, S))
        # the disagreement of this very call (a Liquid Ensemble's weights are its last call's)
        spread = (self.critics.uncertainty(q.detach().unsqueeze(-1)).mean()
                  if self.critics.n_critics > 1 else None)
        # The actor loss sees the critics as fixed functions (weights and history input
        # detached), so one backward pass of the summed losses gives the critics exactly
        # their loss's gradient and the actor its own (plus the critic loss's gradient
        # through a shared history encoder).
        actor_in = critic_in if not hist.requires_grad else torch.cat([obs, hist.detach()], 1)
        actor_loss, entropy = self.actor_loss(out, actor_in, alpha)
        return self._apply_update(critic_loss, actor_loss, entropy, spread, explore_logs)

    def _apply_update(self, critic_loss: torch.Tensor, actor_loss: torch.Tensor,
                      entropy: torch.Tensor, q_epistemic: torch.Tensor | None,
                      extra_logs: dict[str, float] | None = None) -> dict[str, float]:
        """Backward, clip, check, step the optimiser and the targets; the logged values."""
        zero_grad(self._param_lists["optimized"])
        (critic_loss + actor_loss).backward()
        critic_norm = clip_grad_norm(self._param_lists["critic"], self.max_grad_norm)
        actor_norm = clip_grad_norm(self._param_lists["actor"], self.max_grad_norm)
        # one read of the four numbers (each .item() is a separate call into torch)
        checked = torch.stack([critic_loss.detach(), actor_loss.detach(), critic_norm,
                               actor_norm]).tolist()
        self._check_losses(dict(zip(("critic_loss", "actor_loss", "critic gradient norm",
                                     "actor gradient norm"), checked, strict=True)))
        learn_alpha = self.temperature.learn
        if learn_alpha:
            gap = self.temperature.set_gradient(entropy)
        fused_adam_step(self.optimizer)

        losses = {"critic_loss": checked[0], "actor_loss": checked[1]}
        log_alpha = self.log_alpha.detach()
        names, values = ["ent_coef"], [log_alpha.exp()]
        if q_epistemic is not None:
            names.append("q_epistemic")
            values.append(q_epistemic)
        if learn_alpha:
            names.append("ent_coef_loss")
            values.append(log_alpha * gap)
        losses.update(zip(names, torch.stack(values).tolist(), strict=True))
        if extra_logs:
            losses.update(extra_logs)
        with torch.no_grad():
            lists = self._param_lists
            torch._foreach_lerp_(lists["critic_targets"], lists["critics"], self.tau)
            self.history.soft_update(self.tau)
        self._log_update(losses)
        return losses

    def _reduce_target(self, q: torch.Tensor) -> torch.Tensor:
        """Combine the target critics' members ``(N, B, out)`` as ``target_q`` and
        ``target_subset`` say (:func:`agents.neuroflow.targets.reduce_members`)."""
        return reduce_members(q, self.target_q, self.critic_targets,
                              self.head_options.target_subset)

    def _td_target(self, rewards: torch.Tensor, terminated: torch.Tensor,
                   next_obs: torch.Tensor, state: torch.Tensor, alpha: torch.Tensor,
                   critic_state: torch.Tensor | None = None,
                   next_dt: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The soft Bellman targets (``(N, n)`` with ``target_q="member"``) and the
        exploration strategy's weights of these backups
        (:func:`agents.neuroflow.losses.soft_td_targets`)."""
        return soft_td_targets(self.actor, self.critic_targets, self.history, rewards,
                               terminated, next_obs, state, alpha, self.gamma,
                               reduce=self._reduce_target,
                               backup_weights=self.exploration.backup_weights,
                               member_targets=self.target_q == "member",
                               critic_state=critic_state, next_dt=next_dt)

    def td_target(self, rewards: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor,
                  state: torch.Tensor, alpha: torch.Tensor,
                  critic_state: torch.Tensor | None = None,
                  next_dt: torch.Tensor | None = None) -> torch.Tensor:
        """Soft Bellman targets ``r + gamma (1 - terminated) V(s')`` of steps whose actor
        states are ``state``, ``(n,)`` (``(N, n)`` with ``target_q="member"``)."""
        return self._td_target(rewards, terminated, next_obs, state, alpha, critic_state,
                               next_dt)[0]

    def actor_loss(self, out: torch.Tensor, critic_in: torch.Tensor, alpha: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy loss and entropy per sample (:func:`agents.neuroflow.losses.actor_loss`)."""
        return actor_loss(self.actor, self.critics, out, critic_in, alpha)

    # ------------------------------------------------------------------ saving
    def _persistent_modules(self) -> dict[str, torch.nn.Module]:
        modules = {"actor": self.actor, "critics": self.critics,
                   "critic_targets": self.critic_targets, **self.history.modules(),
                   **self.exploration.modules()}
        if self.obs_normalizer is not None:
            modules["obs_normalizer"] = self.obs_normalizer
        return modules

    def _persistent_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer, **self.exploration.optimizers()}

    def _persistent_tensors(self) -> dict[str, torch.Tensor]:
        return {"log_alpha": self.log_alpha.detach().reshape(1)}

    def _load_persistent_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"].reshape(()))

    def _persistent_counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = {"update_budget": self._update_budget}
        exploration = self.exploration.counters()
        if exploration:
            counters["exploration"] = exploration
        return counters

    def _load_persistent_counters(self, meta: dict[str, Any]) -> None:
        self._update_budget = float(meta["update_budget"])
        if "exploration" in meta:
            self.exploration.load_counters(meta["exploration"])

    def _training_tensors(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return self.buffer.state_tensors()

    def _restore_training_tensors(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                                  path: Any) -> None:
        self.buffer.load_state_tensors(meta, tensors, path)

    def _rollout_tensors(self) -> dict[str, torch.Tensor]:
        return {**super()._rollout_tensors(), "rollout.state": self._state}

    def _restore_rollout_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super()._restore_rollout_tensors(tensors)
        self._state = tensors["rollout.state"].clone().to(self.device)

    def save_replay_buffer(self, path: Any) -> Any:
        """SB3's ``save_replay_buffer``: the replay buffer with the rollout, random states
        and action log (what :meth:`load_replay_buffer` needs to continue exactly), as a
        safetensors file at ``path`` (whatever its suffix; ``.safetensors`` is added when
        it has none)."""
        return persistence.save_training_state(self, path)

    def load_replay_buffer(self, path: Any, truncate_last_traj: bool = True) -> None:
        """SB3's ``load_replay_buffer``: restore what :meth:`save_replay_buffer` wrote
        (``truncate_last_traj`` is accepted for SB3's signature; trajectories are kept
        whole)."""
        persistence.load_training_state(self, path)
