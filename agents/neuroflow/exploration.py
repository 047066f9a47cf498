"""Exploration strategies for NeuroFlow, behind one small interface.

A strategy decides how the agent acts while it collects experience (``predict`` keeps
acting with the policy, as in Stable-Baselines3), and may add an intrinsic reward to the
sampled rewards and weights to the Bellman backups. Chosen by ``exploration`` with
``exploration_kwargs``:

* ``"none"``: act with the policy (today's behaviour, bit for bit);
* ``"oac"``: Optimistic Actor-Critic (Ciosek et al. 2019), Box actions: shift the
  Gaussian's pre-tanh mean along the gradient of ``Q_UB = mean + beta * std`` of the
  critics, ``mu_E = mu + sqrt(2 delta) Sigma g / ||g||_Sigma``, and sample around it;
* ``"ucb"``: SUNRISE's UCB selection (Lee et al. 2021): Box: ``n_candidates`` actions
  from the policy, the one with the largest ``mean + lam * std`` is taken; Discrete: the
  action with the largest ``mean + lam * std`` of the Q-values. ``weighted_backup=T``
  adds SUNRISE's weighted Bellman backup ``w = sigmoid(-std_Q'(s', a') T) + 0.5``;
* ``"thompson"``: Bootstrapped-DQN-style Thompson sampling (Osband et al. 2016, 2018):
  one critic member drawn per episode and per environment copy, acting with it for the
  whole episode (Discrete: ``softmax(Q_k / alpha)``, the actor's temperature; Box: the
  policy's proposals scored by ``Q_k``). Pair it with ``critic_head_kwargs`` priors and
  bootstrap masks;
* ``"disagreement"``: Pathak et al. (2019): ``n_models`` forward models predict the next
  observation from the observation, the liquid state and the action; the intrinsic
  reward is ``scale`` times their variance (averaged over the observation's entries),
  added to the sampled rewards at every update.

Interface (:class:`Exploration`): :meth:`~Exploration.reset` at episode starts,
:meth:`~Exploration.act`, :meth:`~Exploration.rewards` (the intrinsic bonus),
:meth:`~Exploration.update`, :meth:`~Exploration.backup_weights`, and the state to save
(:meth:`~Exploration.modules`, :meth:`~Exploration.counters`).

A strategy is given what it needs, not the agent: the agent offers its parts in an
:class:`ExplorationSetup` (the actor that proposes actions, the critic members and their
targets, the temperature, sizes, device and seed), and each strategy's
:meth:`~Exploration.from_setup` keeps only those it reads.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from agents.common.actor import LiquidActor
from agents.neuroflow.critics import CriticEnsemble
from agents.neuroflow.heads import CriticHead
from velora_ens._validation import check_int

__all__ = ["STRATEGIES", "Disagreement", "Exploration", "ExplorationSetup", "NoExploration",
           "OptimisticActorCritic", "ThompsonSampling", "UCBSelection", "make_exploration"]


@dataclass(frozen=True)
class ExplorationSetup:
    """What NeuroFlow offers a strategy when it builds one; each strategy keeps only the
    parts it reads (see :meth:`Exploration.from_setup`)."""

    actor: LiquidActor            # the policy, which proposes actions
    critics: CriticHead           # the members whose disagreement drives exploration
    critic_targets: CriticHead    # their target copies (for weighted backups)
    log_alpha: torch.Tensor       # SAC's log-temperature, updated in place by training
    action_space: gym.Space       # the environment's (single-copy) action space
    obs_dim: int                  # encoded observation size
    history_size: int             # size of the critics' view of the history
    n_envs: int                   # environment copies
    device: torch.device
    seed: int | None


class Exploration:
    """Act with the policy; no bonus, no weights (the ``"none"`` strategy)."""

    name: ClassVar[str] = "none"
    #: critic members the strategy needs
    min_members: ClassVar[int] = 1
    #: action kinds it supports ("box", "discrete")
    action_kinds: ClassVar[tuple[str, ...]] = ("box", "discrete")
    #: whether :meth:`act` reads the critics (so the agent builds their input)
    reads_critics: ClassVar[bool] = False
    #: whether :meth:`backup_weights` wants the target critics' members
    weights_backups: ClassVar[bool] = False
    #: the critic members, kept by the strategies that read them (the helpers below)
    critics: CriticHead

    def __init__(self, actor: LiquidActor) -> None:
        self.actor = actor

    @classmethod
    def from_setup(cls, setup: ExplorationSetup, **options: Any) -> Exploration:
        """The strategy with ``options``, from the parts of ``setup`` it reads."""
        return cls(setup.actor, **options)

    # ------------------------------------------------------------------ acting
    def reset(self, episode_start: np.ndarray) -> None:
        """Called before every acting step with the copies whose episode starts."""

    def act(self, out: torch.Tensor, critic_in: torch.Tensor | None) -> torch.Tensor:
        """Policy-range actions for the actor's outputs ``out`` ``(n, ...)``;
        ``critic_in`` ``(n, obs + history)`` is what the critics read besides the action
        (``None`` unless :attr:`reads_critics`)."""
        return self.actor.act(out, deterministic=False)

    # ------------------------------------------------------------------ updates
    def rewards(self, rewards: torch.Tensor, obs: torch.Tensor, history: torch.Tensor,
                actions: torch.Tensor, next_obs: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """The rewards the critics learn from (``(n,)``; extrinsic plus any bonus) and
        values to log."""
        return rewards, {}

    def update(self, obs: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
               next_obs: torch.Tensor) -> dict[str, float]:
        """Train the strategy's own models on a sampled batch; values to log."""
        return {}

    def backup_weights(self, next_q: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weights ``(n,)`` of the Bellman backups from the target critics'
        members at the next step ``(N, n, out)`` (``None``: all 1)."""
        return None

    # ------------------------------------------------------------------ saving
    def modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def counters(self) -> dict[str, Any]:
        """JSON state for exact resume (drawn members, random generators)."""
        return {}

    def load_counters(self, meta: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ helpers
    def _candidates(self, out: torch.Tensor, critic_in: torch.Tensor, k: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` policy samples per row, ``(k, n, A)``, and every critic member's value
        of them ``(N, k n, 1)`` (candidate-major rows)."""
        n = out.shape[0]
        actions = self.actor.act(out.repeat(k, 1), deterministic=False)
        q = self.critics(torch.cat([critic_in.repeat(k, 1), actions], 1))
        return actions.reshape(k, n, -1), q

    def _spread(self, q: torch.Tensor, uncertainty: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and spread ``(B, out)`` of member values ``(N, B, out)`` from the head's
        last call on them, through its one definition
        (:meth:`agents.neuroflow.heads.CriticHead.prediction`)."""
        head = self.critics
        return head.prediction(q).mean, head.uncertainty(q, uncertainty)


NoExploration = Exploration


class OptimisticActorCritic(Exploration):
    """OAC: act with ``tanh N(mu_E, sigma)``, ``mu_E = mu + sqrt(2 delta) Sigma g /
    sqrt(g^T Sigma g)``, ``g`` the gradient of ``mean_Q + beta * std_Q`` at ``tanh(mu)``
    with respect to the pre-tanh mean ``mu`` (Box actions). Defaults: the paper's
    Humanoid settings (``beta=4.66``, ``delta=23.53``)."""

    name = "oac"
    min_members = 2
    action_kinds = ("box",)
    reads_critics = True

    def __init__(self, actor: LiquidActor, critics: CriticHead, beta: float = 4.66,
                 delta: float = 23.53, uncertainty: str = "epistemic") -> None:
        super().__init__(actor)
        self.critics = critics
        if not beta >= 0 or not delta >= 0:
            raise ValueError(f"oac: beta and delta must be >= 0, got {beta!r}, {delta!r}")
        self.beta, self.delta, self.uncertainty = float(beta), float(delta), uncertainty

    @classmethod
    def from_setup(cls, setup: ExplorationSetup, **options: Any) -> OptimisticActorCritic:
        return cls(setup.actor, setup.critics, **options)

    def shifted_mean(self, mean: torch.Tensor, std: torch.Tensor, critic_in: torch.Tensor
                     ) -> torch.Tensor:
        """``mu_E`` for pre-tanh means and standard deviations ``(n, A)``."""
        action = torch.tanh(mean.detach())
        grad = self.critics.optimism_gradient(torch.cat([critic_in, action], 1),
                                                    self.beta, self.uncertainty)
        g = grad[:, -action.shape[1]:] * (1 - action.square())  # through the tanh
        variance = std.square()
        norm = (g.square() * variance).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
        return mean + math.sqrt(2.0 * self.delta) * variance * g / norm

    def act(self, out: torch.Tensor, critic_in: torch.Tensor | None) -> torch.Tensor:
        mean, log_std = self.actor.squashed_gaussian(out)
        std = log_std.exp()
        shifted = self.shifted_mean(mean, std, critic_in)
        return torch.tanh(shifted + std * torch.randn_like(shifted))


class UCBSelection(Exploration):
    """SUNRISE's UCB: the action with the largest ``mean + lam * std`` of the critics
    among ``n_candidates`` policy samples (Box) or among all actions (Discrete);
    ``weighted_backup=T`` (SUNRISE: 20) weights each backup by
    ``sigmoid(-std_Q'(s', a') T) + 0.5``."""

    name = "ucb"
    min_members = 2
    reads_critics = True

    def __init__(self, actor: LiquidActor, critics: CriticHead, critic_targets: CriticHead,
                 lam: float = 1.0, n_candidates: int = 10, uncertainty: str = "epistemic",
                 weighted_backup: float | None = None) -> None:
        super().__init__(actor)
        self.critics, self.critic_targets = critics, critic_targets
        if not lam >= 0:
            raise ValueError(f"ucb: lam must be >= 0, got {lam!r}")
        self.lam, self.uncertainty = float(lam), uncertainty
        self.n_candidates = check_int("n_candidates", n_candidates, 1)
        if weighted_backup is not None and not weighted_backup > 0:
            raise ValueError(f"ucb: weighted_backup must be a temperature > 0 or None, "
                             f"got {weighted_backup!r}")
        self.temperature = weighted_backup
        self.weights_backups = weighted_backup is not None  # type: ignore[misc]

    @classmethod
    def from_setup(cls, setup: ExplorationSetup, **options: Any) -> UCBSelection:
        return cls(setup.actor, setup.critics, setup.critic_targets, **options)

    def scores(self, q: torch.Tensor) -> torch.Tensor:
        """``mean + lam * std`` over the members ``(N, B, out)`` -> ``(B, out)``."""
        mean, std = self._spread(q, self.uncertainty)
        return mean + self.lam * std

    def act(self, out: torch.Tensor, critic_in: torch.Tensor | None) -> torch.Tensor:
        if self.actor.discrete:
            # the best action of every entry: (n, A) -> (n,), (n, sum n_d) -> (n, D)
            return self.actor.choices.tables.mode(self.scores(self.critics(critic_in)))
        actions, q = self._candidates(out, critic_in, self.n_candidates)
        k, n = actions.shape[:2]
        best = self.scores(q).reshape(k, n).argmax(0)  # (n,)
        return actions[best, torch.arange(n)]

    def backup_weights(self, next_q: torch.Tensor) -> torch.Tensor | None:
        if self.temperature is None:
            return None
        std = self.critic_targets.uncertainty(next_q).reshape(next_q.shape[1], -1)
        return torch.sigmoid(-std.mean(-1) * self.temperature) + 0.5


class ThompsonSampling(Exploration):
    """One critic member per episode and environment copy, drawn uniformly at the
    episode's start; Discrete: ``a ~ softmax(Q_k(s, .) / alpha)``; Box: the best of
    ``n_candidates`` policy samples under ``Q_k``."""

    name = "thompson"
    min_members = 2
    reads_critics = True

    def __init__(self, actor: LiquidActor, critics: CriticHead, log_alpha: torch.Tensor,
                 n_envs: int, agent_seed: int | None, n_candidates: int = 10,
                 seed: int | None = None) -> None:
        super().__init__(actor)
        if not critics.fixed_members:
            raise ValueError(f"exploration='thompson' needs a head with fixed members "
                             f"('deep', 'batch', 'liquid'); critic_head="
                             f"{critics.kind!r} draws new members at every call "
                             "(use 'ucb' or 'oac' with it)")
        self.critics, self.log_alpha = critics, log_alpha
        self.n_candidates = check_int("n_candidates", n_candidates, 1)
        self.rng = np.random.default_rng(
            None if agent_seed is None and seed is None
            else (seed if seed is not None else agent_seed) + 17)
        self.members = np.zeros(n_envs, np.int64)

    @classmethod
    def from_setup(cls, setup: ExplorationSetup, **options: Any) -> ThompsonSampling:
        return cls(setup.actor, setup.critics, setup.log_alpha, setup.n_envs, setup.seed,
                   **options)

    def reset(self, episode_start: np.ndarray) -> None:
        ids = np.flatnonzero(episode_start)
        if ids.size:
            self.members[ids] = self.rng.integers(0, self.critics.n_members, ids.size)

    def act(self, out: torch.Tensor, critic_in: torch.Tensor | None) -> torch.Tensor:
        members = torch.as_tensor(self.members, device=out.device)
        rows = torch.arange(out.shape[0], device=out.device)
        if self.actor.discrete:
            q = self.critics(critic_in)[members, rows]  # (n, A): softmax per action entry
            return self.actor.choices.tables.sample(q / self.log_alpha.exp().clamp_min(1e-8))
        actions, q = self._candidates(out, critic_in, self.n_candidates)
        q = q.reshape(q.shape[0], *actions.shape[:2])  # (N, k, n)
        best = q[members, :, rows].argmax(-1)  # (n,)
        return actions[best, rows]

    def counters(self) -> dict[str, Any]:
        return {"members": self.members.tolist(), "rng": self.rng.bit_generator.state}

    def load_counters(self, meta: dict[str, Any]) -> None:
        self.members = np.asarray(meta["members"], np.int64)
        self.rng.bit_generator.state = meta["rng"]


class Disagreement(Exploration):
    """An intrinsic reward from the disagreement of ``n_models`` forward models
    (Pathak et al. 2019): ``r_int = scale * mean_d Var_k f_k(s, h, a)_d``, the models
    predicting the next (normalised) observation from the observation, the critics'
    history ``h`` (the liquid state) and the action. Each model trains on a random
    ``keep`` fraction of every batch (the paper's 0.8), with its own Adam."""

    name = "disagreement"

    def __init__(self, actor: LiquidActor, obs_dim: int, history_size: int,
                 device: torch.device, scale: float = 1.0, n_models: int = 5,
                 hidden: tuple[int, ...] = (64, 64), learning_rate: float = 1e-3,
                 keep: float = 0.8) -> None:
        super().__init__(actor)
        if not scale >= 0:
            raise ValueError(f"disagreement: scale must be >= 0, got {scale!r}")
        if not 0 < keep <= 1:
            raise ValueError(f"disagreement: keep must be in (0, 1], got {keep!r}")
        self.scale, self.keep = float(scale), float(keep)
        self.n_models = check_int("n_models", n_models, 2)
        in_features = obs_dim + history_size + (actor.choices.tables.n_outputs
                                                if actor.choices is not None
                                                else actor.action_dim)
        self.models = CriticEnsemble(in_features, obs_dim, self.n_models, tuple(hidden)
                                     ).to(device)
        self.optimizer = torch.optim.Adam(self.models.parameters(), lr=learning_rate)

    @classmethod
    def from_setup(cls, setup: ExplorationSetup, **options: Any) -> Disagreement:
        return cls(setup.actor, setup.obs_dim, setup.history_size, setup.device, **options)

    def _inputs(self, obs: torch.Tensor, history: torch.Tensor, actions: torch.Tensor
                ) -> torch.Tensor:
        if self.actor.choices is not None:  # one one-hot per action entry
            actions = self.actor.choices.one_hot(actions)
        return torch.cat([obs, history.detach(), actions], 1)

    def bonus(self, obs: torch.Tensor, history: torch.Tensor, actions: torch.Tensor
              ) -> torch.Tensor:
        """``mean_d Var_k f_k(s, h, a)_d`` per sample ``(n,)`` (0 when the models agree)."""
        with torch.no_grad():
            pred = self.models(self._inputs(obs, history, actions))
            return pred.var(0, unbiased=False).mean(-1)

    def rewards(self, rewards: torch.Tensor, obs: torch.Tensor, history: torch.Tensor,
                actions: torch.Tensor, next_obs: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, float]]:
        bonus = self.bonus(obs, history, actions)
        return rewards + self.scale * bonus, {"rollout/intrinsic_reward": float(bonus.mean())}

    def update(self, obs: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
               next_obs: torch.Tensor) -> dict[str, float]:
        pred = self.models(self._inputs(obs, history, actions))
        err = (pred - next_obs.unsqueeze(0)).square().mean(-1)  # (K, n)
        mask = (torch.rand(err.shape, device=err.device) < self.keep).float()
        loss = (err * mask).sum(1).div(mask.sum(1).clamp_min(1.0)).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"forward_model_loss": float(loss.detach())}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"exploration.models": self.models}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"exploration": self.optimizer}


STRATEGIES: dict[str, type[Exploration]] = {
    cls.name: cls for cls in (Exploration, OptimisticActorCritic, UCBSelection,
                              ThompsonSampling, Disagreement)}


def make_exploration(name: str, kwargs: dict[str, Any] | None, setup: ExplorationSetup
                     ) -> Exploration:
    """The strategy ``name`` with its keyword arguments, checked against the actor's
    action space and the critic head."""
    if name not in STRATEGIES:
        raise ValueError(f"exploration must be one of {sorted(STRATEGIES)}, got {name!r}")
    cls = STRATEGIES[name]
    kind = "discrete" if setup.actor.discrete else "box"
    if kind not in cls.action_kinds:
        raise ValueError(f"exploration={name!r} supports {' and '.join(cls.action_kinds)} "
                         f"actions, not this env's {setup.action_space}")
    n = setup.critics.n_members
    if n < cls.min_members:
        raise ValueError(f"exploration={name!r} needs at least {cls.min_members} critic "
                         f"members to measure their disagreement, got n_critics={n}")
    kwargs = dict(kwargs or {})
    # the options are the constructor's arguments with defaults (the parts have none)
    allowed = sorted(k for k, p in inspect.signature(cls.__init__).parameters.items()
                     if p.default is not inspect.Parameter.empty)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        if not allowed:
            raise ValueError(f"exploration={name!r} takes no options, got {sorted(kwargs)}")
        raise ValueError(f"exploration_kwargs for exploration={name!r}: unknown option(s) "
                         f"{unknown}; expected some of {allowed}")
    try:
        return cls.from_setup(setup, **kwargs)
    except TypeError as exc:
        raise ValueError(f"exploration_kwargs for exploration={name!r}: {exc}") from None
