"""LiquidPPO: recurrent proximal policy optimisation with a liquid policy.

The actor is a :class:`~velora_ens.models.LiquidNCPNetwork` (CfC by default, LTC as an
option) with a categorical head (Discrete actions) or a Gaussian one (Box actions: the
mean from the network, a learned state-independent log-std, actions clipped to the
bounds when sent, as Stable-Baselines3's PPO); the critic is a liquid network of its own
by default (:mod:`agents.ppo.values`).

A rollout of ``n_steps`` rows per environment copy is stored with the recurrent states
the networks had before each row (:class:`~agents.ppo.rollout.RolloutBuffer`).
Training cuts it into windows of ``seq_len`` consecutive rows of one copy (whole columns
by default) and re-runs the networks over each window from its start state, with the
states reset inside the networks wherever an episode starts: no padding, no masks over
padded steps, and no stale states. Before every epoch after the first, the windows'
start states are recomputed over the whole rollout with the current weights (CleanRL's
``ppo_atari_lstm.py`` re-runs whole columns from the rollout's start; windows keep
minibatches small when the rollout is long).

Targets: GAE(lambda) that bootstraps a truncated episode from the value of its final
observation, read with the critic's state after the last step (a time limit is not a
terminal state); Gymnasium's NEXT_STEP reset rows are not transitions and are masked out.

The plumbing (environments, ``learn``'s loop, ``predict``, saving, callbacks, logs) is
:class:`~agents.common.base.BaseAgent`'s; this module holds the rollout and the update
(:meth:`LiquidPPO.train`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.common.actor import LiquidActor
from agents.common.base import BaseAgent
from agents.common.normalization import RewardNormalizer
from agents.common.optim import clip_grad_norm, fused_adam_step, zero_grad
from agents.common.policy import POLICY_ALIASES
from agents.common.schedules import as_schedule, progress_remaining
from agents.ppo.gae import gae_advantages
from agents.ppo.noise import make_noise
from agents.ppo.rollout import RolloutBuffer
from agents.ppo.values import make_value
from velora_ens._validation import check_bool, check_int, check_number
from velora_ens.models.gated import GATED_CELLS

__all__ = ["LiquidPPO"]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / count


class LiquidPPO(BaseAgent):
    """Recurrent PPO with liquid networks, for Box, Discrete, MultiDiscrete and MultiBinary
    actions (a Gaussian; one categorical per entry; one Bernoulli per bit: SB3's
    distributions).

    ``LiquidPPO(env, ...)``, or Stable-Baselines3's spelling ``LiquidPPO("MlpPolicy",
    env, ...)``; sb3-contrib's ``"MlpLstmPolicy"`` and ``"MultiInputLstmPolicy"`` are
    accepted too (LiquidPPO's liquid actor is the recurrent policy they ask for). The
    argument names and defaults follow sb3-contrib's ``RecurrentPPO``.

    Args:
        env: see :class:`~agents.common.base.BaseAgent`, as for ``learning_rate``,
            ``normalize_observations`` (the rollout stores observations normalised as
            acted on), the elapsed time, ``n_envs``, ``vectorization``, ``seed``,
            ``device``, ``tensorboard_log`` (with SB3 PPO's keys: ``train/approx_kl``,
            ``train/clip_fraction``, ``train/explained_variance``, ...) and ``verbose``.
            Actions ``Box``, ``Discrete``, ``MultiDiscrete`` or ``MultiBinary``.
        actor_neurons: inter + command neurons of the actor's NCP wiring.
        critic_neurons: the same for the critic's own network.
        actor_head: widths of an MLP between the actor's liquid network and the policy
            outputs (its first width is the number of motor neurons; ReLU between layers),
            as SB3's ``net_arch=dict(pi=[64])`` after RecurrentPPO's LSTM. ``()``
            (default): the motor neurons are the outputs.
        actor_dense_recurrence: all-to-all recurrent synapses between the actor's command
            neurons instead of the NCP's sparse ones (:class:`velora_ens.wiring.Wiring`).
            ``None`` (default): on for the liquid cells, which then remember about twice
            as far back at the same parameter count (the Memory section of the
            liquid-networks guide; POPGym trials in ``benchmarks/README.md``), off for the
            gated ones, which have no wiring. ``False``: the NCP's sparse recurrence.
        actor_mixed_memory: an LSTM memory cell beside the actor's liquid cell
            (:class:`~velora_ens.models.lnn.mixed.MixedMemoryCell`; the state doubles).
        actor_self_synapse_init: CfC only: the actor's command neurons' synapses onto
            themselves start at this weight (``None``: the uniform draw); see the Memory
            section of the liquid-networks guide.
        actor_cfc_mode: the mode of the actor's CfC cell
            (:class:`~velora_ens.models.lnn.cell.NCPLiquidCell`): ``"default"``, or
            ``"carry"``, where the state is carried from step to step through the time
            gate instead of being rewritten through ``tanh`` (longer memory: the Memory
            section of the liquid-networks guide).
        cell: ``"cfc"`` (closed-form, default) or ``"ltc"``; ``"gru"`` or ``"lstm"`` put
            torch's gated cell (``actor_neurons`` units, the elapsed time appended to its
            input) in the liquid network's place, a baseline for comparisons.
        shared_critic: a linear value head on the actor's liquid state instead of a
            separate liquid critic.
        n_steps: rows collected per environment copy before each update.
        batch_size: rows per minibatch (``batch_size // seq_len`` windows).
        n_epochs: passes over the rollout per update.
        seq_len: rows per training window; it must divide ``n_steps`` and
            ``batch_size``. ``None``: ``min(n_steps, batch_size)`` (whole columns when a
            minibatch holds one).
        gamma: discount.
        gae_lambda: GAE's lambda.
        clip_range: PPO's ratio clip: a number, ``"lin_<x>"`` or a schedule.
        clip_range_vf: clip the value prediction's change around the rollout's (``None``:
            no clipping; note it is in return units).
        normalize_advantage: normalise the advantages per minibatch.
        ent_coef: entropy bonus weight.
        vf_coef: value loss weight.
        max_grad_norm: gradient-norm clip over all parameters.
        target_kl: stop an update's epochs early when a minibatch's approximate KL
            divergence exceeds ``1.5 * target_kl`` (SB3's rule); ``None``: never.
        log_std_init: initial log-std of the Gaussian (Box actions).
        noise_hold_steps: Box actions: draw the Gaussian's standard-normal noise every this
            many steps of each copy (and at episode starts) and keep it in between, for
            temporally correlated exploration (the role of SB3's gSDE with
            ``sde_sample_freq``); the log-probabilities stay the per-step Gaussian's. 1
            (default): a fresh draw every step.
        use_sde: Box actions: generalised state-dependent exploration (gSDE, SB3's
            ``use_sde`` with ``full_std=True``): the noise is the actor's liquid state
            after the step times a held random matrix, so the action's standard deviation
            depends on the state (``LiquidActor``'s ``distribution="gsde"``; ``log_std``
            becomes a ``(state, action)`` matrix started at ``log_std_init``).
        sde_sample_freq: with ``use_sde``, draw new exploration matrices (one per copy)
            every this many steps of the rollout; -1 (default) or 0: only at the start of
            each rollout (as SB3).
        normalize_rewards: divide rewards by the running standard deviation of the
            discounted return (``VecNormalize(norm_reward=True)``, clipped at 10). With
            both, RL Zoo's ``normalize: true``.
    >>> agent = LiquidPPO("CartPoleNoVel-v1", n_envs=8, n_steps=32, batch_size=256,
    ...                   seed=0)                                     # doctest: +SKIP
    >>> agent.learn(100_000)                                          # doctest: +SKIP
    """

    policy_aliases = (*POLICY_ALIASES, "MlpLstmPolicy", "MultiInputLstmPolicy")

    def __init__(
        self,
        policy: Any = None,
        env: Any = None,
        *,
        actor_neurons: int = 128,
        critic_neurons: int = 64,
        actor_head: tuple[int, ...] | list[int] = (),
        actor_dense_recurrence: bool | None = None,
        actor_mixed_memory: bool = False,
        actor_self_synapse_init: float | None = None,
        actor_cfc_mode: str = "default",
        cell: str = "cfc",
        shared_critic: bool = False,
        learning_rate: float | str | Callable[[float], float] = 3e-4,
        n_steps: int = 128,
        batch_size: int = 128,
        n_epochs: int = 10,
        seq_len: int | None = None,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | str | Callable[[float], float] = 0.2,
        clip_range_vf: float | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        log_std_init: float = 0.0,
        noise_hold_steps: int = 1,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        elapsed_time_key: str | None = None,
        elapsed_time_unit: float = 1.0,
        normalize_observations: bool = False,
        normalize_rewards: bool = False,
        n_envs: int = 1,
        vectorization: str = "sync",
        seed: int | None = None,
        device: torch.device | str = "auto",
        tensorboard_log: str | None = None,
        verbose: int = 0,
    ) -> None:
        config = dict(locals())  # the JSON-able arguments are what ``save`` records
        for name, value, low in (("actor_neurons", actor_neurons, 2),
                                 ("critic_neurons", critic_neurons, 2),
                                 ("n_steps", n_steps, 1), ("batch_size", batch_size, 1),
                                 ("n_epochs", n_epochs, 1),
                                 ("noise_hold_steps", noise_hold_steps, 1)):
            check_int(name, value, low)
        check_int("sde_sample_freq", sde_sample_freq, -1)
        check_bool("use_sde", use_sde)
        if use_sde and noise_hold_steps != 1:
            raise ValueError(f"use_sde=True and noise_hold_steps={noise_hold_steps} are two "
                             "ways of correlating the exploration noise in time; choose one "
                             "(sde_sample_freq sets how long gSDE holds its matrices)")
        seq_len = min(n_steps, batch_size) if seq_len is None else check_int("seq_len",
                                                                             seq_len, 1)
        if n_steps % seq_len:
            raise ValueError(f"seq_len={seq_len} must divide n_steps={n_steps} (windows "
                             "tile each copy's rollout)")
        if batch_size % seq_len:
            raise ValueError(f"seq_len={seq_len} must divide batch_size={batch_size} "
                             "(a minibatch is whole windows)")
        self.gamma = check_number("gamma", gamma, 0.0, 1.0)
        self.gae_lambda = check_number("gae_lambda", gae_lambda, 0.0, 1.0)
        self.ent_coef = check_number("ent_coef", ent_coef, 0.0)
        self.vf_coef = check_number("vf_coef", vf_coef, 0.0)
        self.max_grad_norm = check_number("max_grad_norm", max_grad_norm, 0.0, strict=True)
        self.clip_range_vf, self.target_kl = (
            None if value is None else check_number(name, value, 0.0, strict=True)
            for name, value in (("clip_range_vf", clip_range_vf), ("target_kl", target_kl)))
        self._setup(config)
        rollout_rows = n_steps * self.n_envs
        if batch_size > rollout_rows:
            raise ValueError(f"batch_size={batch_size} is larger than the rollout "
                             f"(n_steps * n_envs = {n_steps} * {self.n_envs} = "
                             f"{rollout_rows} rows)")
        self.clip_range = as_schedule(clip_range, "clip_range")
        self.n_steps, self.batch_size, self.n_epochs = n_steps, batch_size, n_epochs
        self.seq_len = seq_len
        self.normalize_advantage = normalize_advantage
        if use_sde and not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError(f"use_sde=True needs Box actions, got {self.action_space}")
        if actor_dense_recurrence is None:  # on wherever there is a wiring to make dense
            actor_dense_recurrence = cell not in GATED_CELLS
        self._set_actor(LiquidActor(self.obs_dim, self.action_space, actor_neurons, cell=cell,
                                    seed=seed, distribution="gsde" if use_sde else "gaussian",
                                    log_std_init=log_std_init, head_layers=actor_head,
                                    dense_recurrence=actor_dense_recurrence,
                                    mixed_memory=actor_mixed_memory,
                                    self_synapse_init=actor_self_synapse_init,
                                    cfc_mode=actor_cfc_mode))
        self.noise = make_noise(self.discrete, noise_hold_steps, use_sde, sde_sample_freq)
        self.value = make_value(shared_critic, self.actor, self.obs_dim, critic_neurons, cell,
                                0 if seed is None else seed + 1)
        for module in self.value.modules().values():
            module.to(self.device)
        self.reward_normalizer = (RewardNormalizer(self.n_envs, self.gamma).to(self.device)
                                  if normalize_rewards else None)
        self._params = list(self.actor.parameters()) + [
            p for m in self.value.modules().values() for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self._params, lr=self.lr_schedule(1.0), eps=1e-5,
                                          fused=True)
        action_shape = (self.actor.choices.action_shape if self.actor.choices is not None
                        else (self.actor.action_dim,))
        self.rollout = RolloutBuffer(n_steps, self.n_envs, self.obs_dim, action_shape,
                                     (self.actor.state_dim, self.value.state_size),
                                     self.device)
        self._states: list[torch.Tensor] = []

    # ------------------------------------------------------------------ collection
    def _start_rollout(self, obs: np.ndarray) -> None:
        self._states = [torch.zeros(self.n_envs, size, device=self.device)
                        for size in (self.actor.state_dim, self.value.state_size)]
        self.rollout.reset()
        self.noise.start(self.actor, self.n_envs, self.device)

    def _learn_iteration(self, callback: Any, first_step: int, total_timesteps: int,
                         log_interval: int) -> bool:
        """One step of every copy into the rollout; when it is full, the update."""
        if self.rollout.full:  # a callback stopped training (or saved) before its update
            self._update(callback, first_step, total_timesteps)
        if self.rollout.pos == 0:
            callback.on_rollout_start()
        device = self.device
        with torch.no_grad():
            acting = self._act_prelude(self._states)
            obs, start, dt, next_actor = acting.obs, acting.start, acting.dt, acting.actor_state
            actor_state, critic_state = acting.states
            value, next_critic = self.value.step(obs, next_actor, critic_state, dt)
            action, log_prob = self.noise.sample(self.actor, acting.out, next_actor, start,
                                                 self.rollout.pos)
        sent = action if self.discrete else action.clamp(-1.0, 1.0)
        step = self._env_step(sent.cpu().numpy())
        rows = np.flatnonzero(step.valid)
        rewards = (step.rewards.astype(np.float32) if self.reward_normalizer is None
                   else self.reward_normalizer.scale(step.rewards, step.dones, rows))
        tensor = lambda x: torch.as_tensor(x, device=device)  # noqa: E731
        row = {"obs": obs, "actions": action, "rewards": tensor(rewards),
               "episode_start": start, "valid": tensor(step.valid),
               "terminated": tensor(step.terminated), "dones": tensor(step.dones),
               "values": value, "log_probs": log_prob}
        if dt is not None:
            row["dt"] = dt
        truncated = step.valid & step.truncated & ~step.terminated
        _, real_dt = self._read_elapsed(step)
        if truncated.any():  # bootstrap from the final observation, the states after the row
            idx = np.flatnonzero(truncated)
            final_dt = self._dt_tensor(real_dt[idx])
            with torch.no_grad():
                final = self._normalized(torch.as_tensor(step.real_next_obs[idx],
                                                         dtype=torch.float32, device=device))
                bootstrap = torch.zeros(self.n_envs, device=device)
                bootstrap[idx] = self.value.successor(final, next_actor[idx], next_critic[idx],
                                                      final_dt)
            row["next_values"] = bootstrap
        self.rollout.add(row, [actor_state, critic_state])
        self._states = [next_actor, next_critic]
        if not self._callback_step(callback, step, log_interval, rollout_buffer=self.rollout,
                                   n_steps=self.rollout.pos):
            return False
        if self.rollout.full:
            self._update(callback, first_step, total_timesteps)
        return True

    def _update(self, callback: Any, first_step: int, total_timesteps: int) -> None:
        """The full rollout's advantages, then the update at this point of the schedules."""
        callback.on_rollout_end()
        self._finish_rollout()
        progress = progress_remaining(self.num_timesteps, first_step, total_timesteps)
        if not self.lr_schedule.constant:
            self._update_learning_rate(first_step, total_timesteps)
        self.train(self.clip_range(progress))
        self.rollout.reset()

    def _finish_rollout(self) -> None:
        """Advantages and returns of the full rollout (GAE with the rollout's values)."""
        buf = self.rollout
        with torch.no_grad():
            obs = self._normalized(torch.as_tensor(self.driver.obs, dtype=torch.float32,
                                                   device=self.device))
            last = self.value.successor(obs, *self._states, self._dt_tensor(self._dt))
        next_values = torch.where(buf.dones, buf.next_values,
                                  torch.cat([buf.values[1:], last.unsqueeze(0)]))
        buf.advantages = gae_advantages(buf.rewards, buf.values, next_values, buf.terminated,
                                        buf.dones, buf.valid, self.gamma, self.gae_lambda)
        buf.returns = buf.advantages + buf.values

    # ------------------------------------------------------------------ the update
    def window_start_states(self) -> list[torch.Tensor]:
        """The actor's and critic's states at the start of every training window,
        recomputed over the whole rollout with the current weights (zero where a window
        starts an episode): ``[(n_windows, actor_state), (n_windows, critic_state)]``."""
        buf, L = self.rollout, self.seq_len
        obs, start = buf.obs.transpose(0, 1), buf.episode_start.transpose(0, 1)
        dt = None if self.elapsed is None else buf.dt.transpose(0, 1)
        first = [s[0] for s in buf.states]
        with torch.no_grad():
            actor_states = self.actor(obs, first[0], episode_start=start, dt=dt,
                                      return_states=True)[1]
            critic_states = self.value.states(obs, start, first[1], dt)
        keep = (~buf.window_starts(buf.episode_start, L)).float().unsqueeze(1)
        starts = []
        for states, h0 in ((actor_states, first[0]), (critic_states, first[1])):
            before = torch.cat([h0.unsqueeze(1), states[:, :-1]], 1)  # state before each row
            starts.append(buf.window_starts(before.transpose(0, 1), L) * keep)
        return starts

    def train(self, clip_range: float) -> dict[str, float]:
        """``n_epochs`` passes of minibatch updates over the rollout; returns the logged
        means (SB3 PPO's ``train/`` keys)."""
        buf, L = self.rollout, self.seq_len
        names = ["obs", "actions", "log_probs", "advantages", "returns", "values", "valid",
                 "episode_start"] + ([] if self.elapsed is None else ["dt"])
        win = {name: buf.windows(getattr(buf, name), L) for name in names}
        starts = [buf.window_starts(s, L) for s in buf.states]
        n_windows, per_batch = win["obs"].shape[0], self.batch_size // L
        logs: dict[str, list[float]] = {}
        epochs = 0
        for epoch in range(self.n_epochs):
            if epoch and L < self.n_steps:
                starts = self.window_start_states()
            stop = False
            for idx in torch.from_numpy(self.rng.permutation(n_windows)).split(per_batch):
                batch = {k: v[idx.to(v.device)] for k, v in win.items()}
                values = self._minibatch_step(batch, [s[idx] for s in starts], clip_range)
                for key, value in values.items():
                    logs.setdefault(key, []).append(value)
                if self.target_kl is not None and values["approx_kl"] > 1.5 * self.target_kl:
                    stop = True
                    break
            epochs += 1
            if stop:
                break
        means = {k: float(np.mean(v)) for k, v in logs.items()}
        means["loss"] = logs["loss"][-1]
        means["clip_range"] = clip_range
        means["explained_variance"] = self._explained_variance()
        if not self.discrete:
            means["std"] = float(self.actor.log_std.detach().exp().mean())
        self._log_update(means)
        self.n_updates += epochs - 1  # SB3 counts epochs
        return means

    def window_outputs(self, b: dict[str, torch.Tensor], starts: list[torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities of the stored actions, entropies and values ``(W, L)`` of
        windows ``b`` (``obs``, ``actions``, ``episode_start`` and, with
        ``elapsed_time_key``, ``dt``), run from their start states; the networks reset
        their states at every episode start inside."""
        dt = b.get("dt")
        out, actor_states = self.actor(b["obs"], starts[0], episode_start=b["episode_start"],
                                       dt=dt, return_states=True)
        values = self.value.sequence(b["obs"], b["episode_start"], actor_states, starts[1],
                                     dt)
        log_prob, entropy = self.actor.log_prob_entropy(out, b["actions"], actor_states)
        return log_prob, entropy, values

    def _minibatch_step(self, b: dict[str, torch.Tensor], starts: list[torch.Tensor],
                        clip_range: float) -> dict[str, float]:
        """One gradient step on a minibatch of windows: forward from the windows' start
        states, clipped surrogate, value and entropy losses, step."""
        log_prob, entropy, values = self.window_outputs(b, starts)
        mask = b["valid"].float()
        count = mask.sum().clamp(min=1.0)
        advantages = b["advantages"]
        if self.normalize_advantage and count > 1:
            mean = _masked_mean(advantages, mask, count)
            std = (_masked_mean((advantages - mean).square(), mask, count)
                   * count / (count - 1)).sqrt()
            advantages = (advantages - mean) / (std + 1e-8)
        log_ratio = log_prob - b["log_probs"]
        ratio = log_ratio.exp()
        surrogate = torch.min(advantages * ratio,
                              advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
        policy_loss = -_masked_mean(surrogate, mask, count)
        if self.clip_range_vf is not None:
            values = b["values"] + (values - b["values"]).clamp(-self.clip_range_vf,
                                                                self.clip_range_vf)
        value_loss = _masked_mean((b["returns"] - values).square(), mask, count)
        entropy_loss = -_masked_mean(entropy, mask, count)
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

        zero_grad(self._params)
        loss.backward()
        grad_norm = clip_grad_norm(self._params, self.max_grad_norm)
        with torch.no_grad():
            approx_kl = _masked_mean((ratio - 1) - log_ratio, mask, count)
            clip_fraction = _masked_mean(((ratio - 1).abs() > clip_range).float(), mask, count)
        checked = torch.stack([loss.detach(), policy_loss.detach(), value_loss.detach(),
                               entropy_loss.detach(), approx_kl, clip_fraction,
                               grad_norm]).tolist()
        self._check_losses({"loss": checked[0], "gradient norm": checked[6]})
        fused_adam_step(self.optimizer)
        return dict(zip(("loss", "policy_gradient_loss", "value_loss", "entropy_loss",
                         "approx_kl", "clip_fraction"), checked[:6], strict=True))

    def _explained_variance(self) -> float:
        """``1 - Var(returns - values) / Var(returns)`` over the rollout's transitions."""
        buf = self.rollout
        valid = buf.valid
        returns, values = buf.returns[valid], buf.values[valid]
        var = returns.var(unbiased=False) if returns.numel() > 1 else returns.new_zeros(())
        if not var > 0:
            return float("nan")
        return float(1 - (returns - values).var(unbiased=False) / var)

    # ------------------------------------------------------------------ saving
    def _persistent_modules(self) -> dict[str, torch.nn.Module]:
        modules = {"actor": self.actor, **self.value.modules()}
        if self.obs_normalizer is not None:
            modules["obs_normalizer"] = self.obs_normalizer
        if self.reward_normalizer is not None:
            modules["reward_normalizer"] = self.reward_normalizer
        return modules

    def _persistent_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def _training_tensors(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return self.rollout.state_tensors()

    def _restore_training_tensors(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                                  path: Any) -> None:
        self.rollout.load_state_tensors(meta, tensors, path)

    def _rollout_tensors(self) -> dict[str, torch.Tensor]:
        return {**super()._rollout_tensors(), "rollout.actor_state": self._states[0],
                "rollout.critic_state": self._states[1], **self.noise.tensors()}

    def _restore_rollout_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super()._restore_rollout_tensors(tensors)
        self._states = [tensors[f"rollout.{name}_state"].clone().to(self.device)
                        for name in ("actor", "critic")]
        self.noise.load_tensors(tensors, self.device)
