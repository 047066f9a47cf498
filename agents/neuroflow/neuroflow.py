"""NeuroFlow: soft actor-critic with a liquid (recurrent) actor, trained on sequences.

One class for Box actions (SAC, tanh-squashed Gaussian) and Discrete actions
(SAC-Discrete: full probability vector, positive target entropy). The actor is a
:class:`~velora_ens.models.LiquidNCPNetwork`; the critics are a batched
:class:`~agents.neuroflow.critics.CriticEnsemble` (MLPs or NCP-wired MLPs) that read the
observation, the critics' view of the history (:mod:`agents.neuroflow.history`) and, for Box
actions, the action.

Recurrent training follows R2D2: the replay buffer keeps whole trajectories; an update
samples sequences of ``burn_in + seq_len`` steps starting from the actor state stored
when the first step was acted on, refreshes that state over the burn-in prefix without
gradients, and trains on the remaining ``seq_len`` steps with back-propagation through
time. The state is reset to zero wherever an episode starts, when acting and when
training. Targets bootstrap on ``terminated`` only (a time-limit truncation is not a
terminal state).

The plumbing (environments, ``learn``'s loop, ``predict``, saving, callbacks, logs) is
:class:`~agents.common.base.BaseAgent`'s; this module holds the algorithm: its networks, one
iteration of acting and updates, and the update itself (:meth:`NeuroFlow.train_step`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents.common.actor import LiquidActor
from agents.common.base import BaseAgent, NonFiniteTrainingError
from agents.common.optim import clip_grad_norm, fused_adam_step, zero_grad
from agents.common.policy import LiquidPolicy
from agents.driver.elapsed import ElapsedTime
from agents.neuroflow.exploration import make_exploration
from agents.neuroflow.heads import HeadOptions, bootstrap_masks, make_critic_head
from agents.neuroflow.history import make_history
from agents.neuroflow.replay import SequenceReplayBuffer
from agents.neuroflow.targets import n_step_targets, one_step_targets
from velora_ens._validation import check_int

__all__ = ["NeuroFlow", "NonFiniteTrainingError"]


def _updates_per_transition(utd_ratio: float, train_freq: Any, gradient_steps: int | None,
                            n_envs: int) -> float:
    """``utd_ratio``, or the rate SB3's ``train_freq`` and ``gradient_steps`` give."""
    if train_freq is None and gradient_steps is None:
        return float(utd_ratio)
    if utd_ratio != 1.0:
        raise ValueError("give utd_ratio or Stable-Baselines3's train_freq/gradient_steps, not "
                         f"both (got utd_ratio={utd_ratio!r})")
    if isinstance(train_freq, (tuple, list)):
        if len(train_freq) != 2 or train_freq[1] != "step":
            raise ValueError(f"train_freq must be an int or (n, 'step'), got {train_freq!r} "
                             "(NeuroFlow does not train per episode)")
        train_freq = train_freq[0]
    every = check_int("train_freq", 1 if train_freq is None else train_freq, 1) * n_envs
    steps = 1 if gradient_steps is None else gradient_steps
    if steps == -1:
        return 1.0
    return check_int("gradient_steps", steps, 1) / every


class NeuroFlow(BaseAgent):
    """Liquid soft actor-critic for Box and Discrete actions.

    ``NeuroFlow(env, ...)``, or Stable-Baselines3's spelling ``NeuroFlow("MlpPolicy",
    env, ...)`` (the policy is always the liquid actor; SB3's default policy names are
    accepted so that SB3 scripts run unchanged).

    Args:
        env: a Gymnasium id (``"module:EnvId"`` imports ``module`` first), a
            ``gymnasium.Env``, a Gymnasium vector env or a Stable-Baselines3 ``VecEnv``.
            Observations may be 1-D ``Box``, ``Discrete``, ``MultiDiscrete``,
            ``MultiBinary`` or ``Dict``/``Tuple`` of these (encoded as SB3 does, see
            :mod:`agents.driver.spaces`); actions ``Box`` or ``Discrete``.
        actor_neurons: inter + command neurons of the actor's NCP wiring.
        cell: ``"cfc"`` (closed-form, default) or ``"ltc"``.
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
        train_freq: Stable-Baselines3's way to give the update rate, accepted so that SB3
            scripts run unchanged: ``gradient_steps`` updates every ``train_freq`` steps of
            the vector env (an int or ``(n, "step")``; ``"episode"`` units are not
            supported). NeuroFlow spreads them over the steps, keeping the rate
            ``utd_ratio = gradient_steps / (train_freq * n_envs)``; give these or
            ``utd_ratio``, not both.
        gradient_steps: SB3's updates per ``train_freq`` steps (``-1``: one per transition
            collected; 1 when only ``train_freq`` is given).
        ent_coef: ``"auto"`` (learned, initial value 1), ``"auto_<init>"`` or a fixed float.
        target_entropy: ``"auto"`` is ``-|A|`` for Box actions and
            ``target_entropy_scale * log |A|`` (positive) for Discrete ones.
        max_grad_norm: gradient-norm clip for actor and critics.
        critic_encoder: what summarises the history for the critics. ``"actor"``: the
            actor's liquid state (free: it is computed anyway). ``"own"``: a separate liquid
            network of ``actor_neurons`` neurons trained by the critic loss only, as Ni et
            al. (2022) recommend for partially observed tasks (a shared encoder lets the
            critic loss disturb the policy); it costs one more recurrent pass per update.
            ``"none"``: the critics read the observation alone (fully observed tasks such
            as DeepSea, as SB3's SAC does).
        critic_trains_state: with ``critic_encoder="actor"``, let the critic loss also
            train the actor's liquid network (a shared history encoder, as in SAC-AE). The
            TD targets then read the history through a slowly updated copy of that
            network (soft-updated with ``tau`` like the target critics, as SAC-AE and DrQ
            do with their encoder), so the critic does not chase a target its own
            updates keep moving.
        target_q: combine the target critics by ``"min"`` (clipped double-Q) or ``"mean"``;
            or ``"member"``: every member bootstraps from its own target member, as in
            Bootstrapped DQN, so the members stay independent estimates (what Thompson
            sampling needs; a shared target makes them agree). With Discrete actions a
            member's next value is then its own soft-greedy value
            ``alpha logsumexp(Q'_k(s', .) / alpha)``, the value of acting with
            ``softmax(Q_k / alpha)`` as Thompson sampling does; with Box actions it is
            ``Q'_k`` at the actor's next action.
        n_step: bootstrap after ``n_step`` rewards (R2D2's multi-step targets, without
            off-policy correction; the entropy bonus enters through the bootstrapped soft
            value only). A target never reaches past the end of its episode: a terminal
            step stops it, a truncated one bootstraps there. 1 is one-step SAC.
        normalize_observations: feed actor and critics observations normalised by a
            running mean and variance (Stable-Baselines3's ``VecNormalize``, clipped at
            10), updated from every observation collected; replay keeps raw ones.
        elapsed_time_key: read the time elapsed since the previous observation from
            ``info[elapsed_time_key]`` at every step (``"elapsed_time"`` for
            :class:`envs.IrregularTiming`), keep it in replay beside the observation (and
            the real next observation's), and feed it to the liquid networks as ``dt``:
            when acting, in the burn-in, in training, in the critics' own history encoder
            and at the TD targets' next step. ``predict`` then takes it as
            ``elapsed_time=`` (and :func:`agents.evaluate_policy` passes it). ``None``
            (the default): every step is one unit of time. The discount stays per
            agent step.
        elapsed_time_unit: the elapsed time the cells see as 1 (their default ``dt``),
            e.g. the task's nominal step (0.05 s for Pendulum).
        n_envs: environment copies when ``env`` is an id.
        vectorization: ``"sync"`` or ``"async"`` vector env when ``env`` is an id.
        seed: seeds torch, the replay sampling, the environments and their action spaces.
        device: ``"auto"`` (CUDA where available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        tensorboard_log: folder for TensorBoard runs (one subfolder per run), with SB3's
            keys (``rollout/ep_rew_mean``, ``train/critic_loss``, ``time/fps``, ...) plus
            ``train/q_epistemic``, the critics' disagreement (the epistemic standard
            deviation of their values, :meth:`agents.neuroflow.heads.CriticHead.prediction`),
            and each exploration strategy's own keys.
        verbose: 1 prints SB3's log table every ``log_interval`` episodes.
    """

    def __init__(
        self,
        policy: Any = None,
        env: Any = None,
        *,
        actor_neurons: int = 32,
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
        if target_q not in ("min", "mean", "member"):
            raise ValueError(f"target_q must be 'min', 'mean' or 'member', got {target_q!r}")
        head_options = HeadOptions.parse(critic_head, critic_head_kwargs, n_critics)
        if target_q == "member" and head_options.target_subset is not None:
            raise ValueError("target_q='member' gives every member its own target; it "
                             "cannot be combined with critic_head_kwargs' target_subset "
                             f"({head_options.target_subset})")
        self._setup(config, policy=policy, env=env, seed=seed, n_envs=n_envs,
                    vectorization=vectorization, learning_rate=learning_rate,
                    normalize_observations=normalize_observations, device=device,
                    tensorboard_log=tensorboard_log, verbose=verbose)
        self.elapsed = (None if elapsed_time_key is None
                        else ElapsedTime(elapsed_time_key, elapsed_time_unit, self.n_envs))
        self._dt = np.ones(self.n_envs, np.float32)  # elapsed time of the current observations
        self.actor = LiquidActor(self.obs_dim, self.action_space, actor_neurons, cell=cell,
                                 seed=seed).to(self.device)
        self.discrete = self.actor.discrete
        self.policy = LiquidPolicy(self.actor, self.observation_space, self.action_space,
                                   self.obs_normalizer,
                                   None if elapsed_time_key is None else elapsed_time_unit)
        self.history = make_history(critic_encoder, critic_trains_state, self.actor,
                                    self.obs_dim, actor_neurons, cell, seed)
        for module in self.history.modules().values():
            module.to(self.device)
        critic_in = self.obs_dim + self.history.state_size + (0 if self.discrete
                                                              else self.actor.action_dim)
        critic_out = self.actor.action_dim if self.discrete else 1
        critic_seed = 0 if seed is None else seed + 1
        self.head_options = head_options
        self.critics = make_critic_head(critic_head, critic_in, critic_out, n_critics,
                                        critic_hidden, ncp_neurons=critic_ncp_neurons,
                                        seed=critic_seed, options=head_options
                                        ).to(self.device)
        self.critic_targets = make_critic_head(critic_head, critic_in, critic_out, n_critics,
                                               critic_hidden, ncp_neurons=critic_ncp_neurons,
                                               seed=critic_seed, options=head_options
                                               ).to(self.device)
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
                                      device=self.device, requires_grad=self.learn_alpha)

        # One fused Adam, one parameter group per part (actor, critics, temperature): Adam
        # updates each tensor on its own, so this is three optimisers' arithmetic in one
        # ``step`` call (the per-call overhead is a visible share of a small update).
        groups = [{"params": list(self.actor.parameters())},
                  {"params": self._critic_parameters()}]
        if self.learn_alpha:
            groups.append({"params": [self.log_alpha]})
        self.optimizer = torch.optim.Adam(groups, lr=self.lr_schedule(1.0), fused=True)

        self.seq_len, self.burn_in, self.n_step = seq_len, burn_in, n_step
        self.batch_size, self.learning_starts = batch_size, learning_starts
        self.tau, self.gamma = tau, gamma
        self.utd_ratio = _updates_per_transition(utd_ratio, train_freq, gradient_steps,
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
                                           1 if self.discrete else self.actor.action_dim,
                                           self.actor.state_dim + self.history.stored_size,
                                           elapsed=self.elapsed is not None,
                                           mask_dim=(n_critics if head_options.bootstrap < 1
                                                     else 0))
        self._update_budget = 0.0
        self._target_weights: torch.Tensor | None = None
        self.exploration = make_exploration(exploration, exploration_kwargs, self)
        self._state = torch.zeros(0)

    # ------------------------------------------------------------------ parts
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
        return float(self.log_alpha.detach().exp())

    @property
    def replay_buffer(self) -> SequenceReplayBuffer:
        """SB3's name for the replay buffer (its ``CheckpointCallback`` looks for it)."""
        return self.buffer

    # ------------------------------------------------------------------ acting
    def _start_rollout(self, obs: np.ndarray) -> None:
        self._state = torch.zeros(self.n_envs, self.buffer.states.shape[-1], device=self.device)
        self._dt = np.ones(self.n_envs, np.float32)

    def _learn_iteration(self, callback: Any, first_step: int, total_timesteps: int,
                         log_interval: int) -> bool:
        """One environment step of every copy, stored in replay, and the updates it pays
        for (``utd_ratio`` per transition)."""
        callback.on_rollout_start()
        driver, h = self.driver, self.actor.state_dim
        with torch.no_grad():
            obs_t = self._normalized(torch.as_tensor(driver.obs, dtype=torch.float32,
                                                     device=self.device))
            state_before = self._state
            if driver.episode_start.any():
                keep = torch.as_tensor(~driver.episode_start, dtype=torch.float32,
                                       device=self.device)
                state_before = state_before * keep.unsqueeze(1)
            dt = self._dt_tensor(self._dt)
            out, actor_state = self.actor(obs_t, state_before[:, :h], dt=dt)
            own = self.history.act(obs_t, state_before[:, h:], dt)
            self._state = actor_state if own is None else torch.cat([actor_state, own], 1)
            exploration = self.exploration
            exploration.reset(driver.episode_start)
            if self.num_timesteps < self.learning_starts:
                action = driver.actions.sample(self.n_envs)
            else:
                critic_in = (torch.cat([obs_t, self.history.acting_view(actor_state, own)], 1)
                             if exploration.reads_critics else None)
                action = exploration.act(out, critic_in).cpu().numpy()
        step = self._env_step(action)
        ids = np.flatnonzero(step.valid)
        elapsed = {}
        if self.elapsed is not None:
            truncated = np.flatnonzero(step.valid & step.truncated & ~step.terminated)
            next_dt, real_dt = self.elapsed.after_step(
                step.info, driver.episode_start,
                driver.autoreset_mode == AutoresetMode.SAME_STEP, self.num_timesteps,
                truncated)
            elapsed = {"dt": self._dt[ids], "next_dt": real_dt[ids]}
            self._dt = next_dt
        if self.buffer.mask_dim:
            elapsed["masks"] = bootstrap_masks(len(ids), self.buffer.mask_dim,
                                               self.head_options.bootstrap, self.rng)
        self.buffer.add(ids, step.obs[ids], action[ids], step.rewards[ids],
                        step.real_next_obs[ids], step.terminated[ids], step.episode_start[ids],
                        state_before.cpu().numpy()[ids], **elapsed)
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

        unroll = self._unroll if b.dt is None else functools.partial(self._unroll, dt=b.dt)
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
        rewards = self.exploration.rewards(flat(b.rewards[:, burn:]), *seen)
        explore_logs = self.exploration.update(*seen)
        target = self.td_target(rewards, flat(b.terminated[:, burn:]),
                                flat(b.next_obs[:, burn:]), flat(states).detach(), alpha,
                                critic_state=flat(target_hist),
                                next_dt=None if b.next_dt is None else flat(b.next_dt[:, burn:]))
        if self.n_step > 1:  # per-member targets (N, B T) are N more rows of sequences
            rows = target.numel() // (B * T)
            target = n_step_targets(target.reshape(rows * B, T),
                                    *(x[:, burn:].repeat(rows, 1) for x in (
                                        b.rewards, b.terminated, b.episode_start)),
                                    self.n_step, self.gamma).reshape(target.shape[:-1]
                                                                     + (B * S,))

        obs, out, hist = flat(b.obs[:, burn:], S), flat(out, S), flat(hist, S)
        critic_in = torch.cat([obs, hist], 1)
        q = self._q_values(critic_in, flat(b.actions[:, burn:], S))
        critic_loss = self.critics.loss(q, target, self._backup_weights(b, B, T, S))
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

    def _backup_weights(self, b: Any, B: int, T: int, S: int) -> torch.Tensor | None:
        """Per-member, per-sample weights of the critic loss: the bootstrap masks kept
        in replay ``(N, n)`` times the strategy's backup weights ``(n,)`` (``None``:
        neither)."""
        weights = self._target_weights
        if weights is not None and T != S:
            weights = weights.reshape(B, T)[:, :S].reshape(B * S)
        if b.masks is not None:
            masks = b.masks[:, self.burn_in:self.burn_in + S].reshape(B * S, -1).t()
            weights = masks if weights is None else masks * weights
        return weights

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
        if self.learn_alpha:
            # loss = log_alpha * mean(entropy - target): its gradient is that mean, so no
            # autograd pass is needed. alpha grows while the policy is below its target.
            gap = (entropy - self.target_entropy).mean()
            self.log_alpha.grad = gap.reshape(()).clone()
        fused_adam_step(self.optimizer)

        losses = {"critic_loss": checked[0], "actor_loss": checked[1]}
        log_alpha = self.log_alpha.detach()
        names, values = ["ent_coef"], [log_alpha.exp()]
        if q_epistemic is not None:
            names.append("q_epistemic")
            values.append(q_epistemic)
        if self.learn_alpha:
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

    def _q_values(self, critic_in: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Every critic's value of the stored actions, ``(N, n)``."""
        if self.discrete:
            return self.critics(critic_in).gather(2, actions.long().unsqueeze(0).expand(
                self.critics.n_critics, -1, -1)).squeeze(-1)
        return self.critics(torch.cat([critic_in, actions], 1)).squeeze(-1)

    def _unroll(self, net: torch.nn.Module, obs: torch.Tensor, episode_start: torch.Tensor,
                state: torch.Tensor, dt: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refresh ``state`` over the burn-in prefix without gradients, then run the
        trained steps; returns their outputs and states ``(B, seq_len, ...)``. ``dt``:
        the elapsed times of all the steps ``(B, burn_in + T, 1)`` (``None``: the
        cells' default)."""
        burn = self.burn_in
        if burn:
            with torch.no_grad():
                state = net.final_state(obs[:, :burn], state,
                                        episode_start=episode_start[:, :burn],
                                        dt=None if dt is None else dt[:, :burn])
        return net(obs[:, burn:], state, episode_start=episode_start[:, burn:],
                   return_states=True, dt=None if dt is None else dt[:, burn:])

    def _reduce_target(self, q: torch.Tensor) -> torch.Tensor:
        """Combine the target critics ``(N, B, out)``: the minimum (clipped double-Q) or
        the mean (less pessimistic; "Revisiting Discrete SAC" finds the minimum
        under-estimates with discrete actions); REDQ (``target_subset=M``): the minimum
        over ``M`` members drawn at random for this update; ``"member"``: unchanged."""
        self._target_weights = self.exploration.backup_weights(q)
        if self.target_q == "member":
            return q
        subset = self.head_options.target_subset
        if subset is not None:
            members = torch.randperm(q.shape[0], device=q.device)[:subset]
            return q[members].min(0).values
        return self.critic_targets.reduce(q, self.target_q)

    @torch.no_grad()
    def td_target(self, rewards: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor,
                  state: torch.Tensor, alpha: torch.Tensor,
                  critic_state: torch.Tensor | None = None,
                  next_dt: torch.Tensor | None = None) -> torch.Tensor:
        """Soft Bellman targets ``r + gamma (1 - terminated) V(s')``, ``(n,)`` (``(N, n)``,
        one row per member, with ``target_q="member"``).

        ``state`` is the actor state after each step; one more actor step from it on the
        real next observation gives the policy at the successor (also after the last
        step of an episode, whose successor is not the next stored step). Only
        ``terminated`` stops bootstrapping: a truncated step still bootstraps.
        ``critic_state`` is the state the critics' history view holds after each step
        (the actor state itself by default). ``next_dt``: the time elapsed before each
        real next observation ``(n, 1)`` (``None``: the cells' default).
        """
        next_out, next_states = self.actor(next_obs, state, dt=next_dt)
        critic_state = state if critic_state is None else critic_state
        next_in = torch.cat([next_obs, self.history.next_states(next_obs, critic_state,
                                                                next_states, next_dt)], 1)
        reduce = self._reduce_target
        if self.discrete and self.target_q == "member":  # each member's soft-greedy value
            q_next = reduce(self.critic_targets(next_in))  # (N, n, A)
            a = alpha.clamp_min(1e-8)
            v_next = a * torch.logsumexp(q_next / a, -1)
        elif self.discrete:
            probs, log_probs = self.actor.categorical(next_out)
            q_next = reduce(self.critic_targets(next_in))
            v_next = (probs * (q_next - alpha * log_probs)).sum(-1)
        else:
            next_action, next_log_prob = self.actor.sample_continuous(next_out)
            q_next = reduce(self.critic_targets(torch.cat([next_in, next_action], 1)))
            v_next = q_next.squeeze(-1) - alpha * next_log_prob
        return one_step_targets(rewards, terminated, v_next, self.gamma)

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
                q_pi = self.critics.reduce(self.critics(critic_in), "min")
            loss = (probs * (alpha * log_probs - q_pi)).sum(-1).mean()
            return loss, -(probs * log_probs).sum(-1).detach()
        action, log_prob = self.actor.sample_continuous(out)
        q_pi = self.critics.reduce(self.critics(torch.cat([critic_in, action], 1),
                                                detach_params=True), "min").squeeze(-1)
        return (alpha * log_prob - q_pi).mean(), -log_prob.detach()

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
        tensors = {"rollout.state": self._state}
        if self.elapsed is not None:
            tensors["rollout.dt"] = torch.from_numpy(self._dt.copy())
        return tensors

    def _restore_rollout_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self._state = tensors["rollout.state"].clone().to(self.device)
        if self.elapsed is not None:
            self._dt = tensors["rollout.dt"].numpy().copy()

    def save_replay_buffer(self, path: Any) -> Any:
        """SB3's ``save_replay_buffer``: the replay buffer with the rollout, random states
        and action log (what :meth:`load_replay_buffer` needs to continue exactly), as a
        safetensors file at ``path`` (whatever its suffix; ``.safetensors`` is added when
        it has none)."""
        from agents.common.persistence import save_training_state

        return save_training_state(self, path)

    def load_replay_buffer(self, path: Any, truncate_last_traj: bool = True) -> None:
        """SB3's ``load_replay_buffer``: restore what :meth:`save_replay_buffer` wrote
        (``truncate_last_traj`` is accepted for SB3's signature; trajectories are kept
        whole)."""
        from agents.common.persistence import load_training_state

        load_training_state(self, path)
