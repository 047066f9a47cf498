"""The liquid actor and its action distributions (squashed Gaussian, categorical)."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.models import LiquidNCPNetwork

__all__ = ["LiquidActor"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
DISTRIBUTIONS = ("squashed_gaussian", "gaussian")


class LiquidActor(nn.Module):
    """A :class:`LiquidNCPNetwork` whose outputs parametrise the policy.

    * Box actions: ``2 |A|`` outputs, the mean and log-std of a Gaussian squashed by
      ``tanh`` into ``[-1, 1]`` (actions are stored and fed to critics in that range and
      rescaled to the environment's bounds only when stepping it);
    * Discrete actions: ``|A|`` logits.

    With ``distribution="gaussian"`` (on-policy agents, as Stable-Baselines3's PPO) Box
    actions are instead an unsquashed Gaussian: ``|A|`` outputs are the mean, the log-std
    is one learned parameter per action dimension (``log_std_init`` at the start), and
    actions are clipped to ``[-1, 1]`` only when sent to the environment.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, n_neurons: int = 32, *,
                 cell: str = "cfc", seed: int | None = None,
                 distribution: str = "squashed_gaussian", log_std_init: float = 0.0) -> None:
        super().__init__()
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got "
                             f"{distribution!r}")
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_dim = int(action_space.n) if self.discrete else int(action_space.shape[0])
        self.gaussian = distribution == "gaussian" and not self.discrete
        out = self.action_dim if self.discrete or self.gaussian else 2 * self.action_dim
        self.net = LiquidNCPNetwork(obs_dim, max(n_neurons, out), out, cell=cell, seed=seed)
        if self.gaussian:
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(log_std_init)))
        # what rebuilds this actor (with the action space)
        self.config = {"obs_dim": int(obs_dim), "n_neurons": int(n_neurons), "cell": cell,
                       "seed": seed}
        if distribution != "squashed_gaussian":
            self.config["distribution"] = distribution

    @property
    def state_dim(self) -> int:
        return self.net.hidden_size

    def forward(self, obs: torch.Tensor, state: torch.Tensor | None = None, *,
                episode_start: torch.Tensor | None = None,
                return_states: bool = False, dt: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(obs, state, dt=dt, episode_start=episode_start,
                        return_states=return_states)

    def final_state(self, obs: torch.Tensor, state: torch.Tensor | None = None, *,
                    episode_start: torch.Tensor | None = None,
                    dt: torch.Tensor | None = None) -> torch.Tensor:
        """The state after ``obs`` without the policy outputs (see
        :meth:`LiquidNCPNetwork.final_state`)."""
        return self.net.final_state(obs, state, dt=dt, episode_start=episode_start)

    # ---------------------------------------------------------- Box actions
    def squashed_gaussian(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = out.chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample_continuous(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action in ``[-1, 1]`` and its log-probability (tanh-corrected)."""
        mean, log_std = self.squashed_gaussian(out)
        std = log_std.exp()
        noise = torch.randn_like(mean)
        u = mean + std * noise
        # log N(u; mean, std) - log|d tanh(u)/du|, the latter written stably.
        log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

    # ---------------------------------------------------------- Discrete actions
    @staticmethod
    def categorical(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and log-probabilities of every action."""
        log_probs = F.log_softmax(out, dim=-1)
        return log_probs.exp(), log_probs

    # ---------------------------------------------------------- on-policy use
    def sample(self, out: torch.Tensor, noise: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A stochastic action (an index, or an unclipped Gaussian vector) and its
        log-probability, for on-policy agents (``distribution="gaussian"`` for Box).
        ``noise``: the standard-normal draw of a Gaussian action (fresh by default)."""
        if self.discrete:
            action = torch.multinomial(F.softmax(out, -1), 1).squeeze(-1)
            return action, self.log_prob_entropy(out, action)[0]
        if not self.gaussian:
            raise ValueError("sample() needs distribution='gaussian' for Box actions")
        if noise is None:
            noise = torch.randn_like(out)
        action = torch.addcmul(out, self.log_std.exp(), noise)
        return action, self.log_prob_entropy(out, action)[0]

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``actions`` and the entropy, per sample (categorical, or the
        diagonal Gaussian of ``distribution="gaussian"``)."""
        if self.discrete:
            log_probs = F.log_softmax(out, -1)
            log_prob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            return log_prob, -(log_probs.exp() * log_probs).sum(-1)
        log_std = self.log_std.expand_as(out)
        z = (actions - out) * torch.exp(-log_std)
        log_prob = (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
        return log_prob, entropy

    # ---------------------------------------------------------- acting
    def act(self, out: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions from network outputs: ``[-1, 1]`` vectors or integer indices."""
        if self.discrete:
            if deterministic:
                return out.argmax(-1)
            return torch.multinomial(F.softmax(out, -1), 1).squeeze(-1)
        if self.gaussian:
            action = out if deterministic else torch.addcmul(out, self.log_std.exp(),
                                                             torch.randn_like(out))
            return action.clamp(-1.0, 1.0)
        mean, log_std = self.squashed_gaussian(out)
        if deterministic:
            return torch.tanh(mean)
        return torch.tanh(torch.addcmul(mean, log_std.exp(), torch.randn_like(mean)))
