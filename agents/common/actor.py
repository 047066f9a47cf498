"""The liquid actor and its action distributions (squashed Gaussian, categorical)."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from agents.common.distributions import discrete_actions
from velora_ens._validation import check_bool, check_int
from velora_ens.models import recurrent_network
from velora_ens.models.lnn.cell import CFC_MODES

__all__ = ["LiquidActor"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
DISTRIBUTIONS = ("squashed_gaussian", "gaussian", "gsde")
GSDE_EPSILON = 1e-6  # added to gSDE's variance, as Stable-Baselines3


class LiquidActor(nn.Module):
    """A :class:`LiquidNCPNetwork` whose outputs parametrise the policy (``cell="gru"`` or
    ``"lstm"``: a :class:`~velora_ens.models.GatedNetwork` of ``n_neurons`` units instead,
    a comparison baseline).

    * Box actions: ``2 |A|`` outputs, the mean and log-std of a Gaussian squashed by
      ``tanh`` into ``[-1, 1]`` (actions are stored and fed to critics in that range and
      rescaled to the environment's bounds only when stepping it);
    * Discrete actions: ``|A|`` logits; ``MultiDiscrete(nvec)``: ``sum(nvec)`` logits, one
      categorical per entry; ``MultiBinary(n)``: ``n`` logits, one Bernoulli per bit
      (:attr:`choices`, from :mod:`agents.common.distributions`).

    With ``distribution="gaussian"`` (on-policy agents, as Stable-Baselines3's PPO) Box
    actions are instead an unsquashed Gaussian: ``|A|`` outputs are the mean, the log-std
    is one learned parameter per action dimension (``log_std_init`` at the start), and
    actions are clipped to ``[-1, 1]`` only when sent to the environment.

    ``distribution="gsde"`` is that Gaussian with generalised state-dependent exploration
    (Raffin et al. 2022, Stable-Baselines3's ``use_sde`` with ``full_std=True``): the noise
    is ``phi @ theta``, ``phi`` the liquid state after the step (detached) and ``theta`` an
    ``(H, |A|)`` matrix drawn from ``N(0, exp(log_std)^2)`` and held for several steps
    (:meth:`gsde_matrices`), so the action's standard deviation is
    ``sqrt(phi^2 @ exp(log_std)^2 + 1e-6)`` per dimension; ``log_std`` is ``(H, |A|)``.

    ``head_layers=(64,)`` puts a small MLP between the liquid network and the policy
    outputs, as SB3's ``net_arch=dict(pi=[64])`` after RecurrentPPO's LSTM: the network
    gets ``head_layers[0]`` motor neurons, then ReLU and linear layers of the given widths
    and a linear output layer. ``dense_recurrence=True`` connects every command neuron to
    every other (:class:`~velora_ens.wiring.Wiring`). Together they are LiquidPPO's tuned
    actor on PendulumNoVel, where the policy must infer the angular velocity from
    positions (trials in ``benchmarks/README.md``). ``mixed_memory`` and
    ``self_synapse_init`` are :class:`~velora_ens.models.LiquidNCPNetwork`'s memory
    options (the Memory section of the liquid-networks guide), and so is ``cfc_mode``,
    its ``mode`` (``"carry"``: the CfC state carried through the time gate).

    >>> actor = LiquidActor(2, gym.spaces.Box(-1, 1, (1,)), 64, seed=0,
    ...                     distribution="gaussian", head_layers=(64,), dense_recurrence=True)
    >>> out, state = actor(torch.zeros(4, 2))
    >>> tuple(out.shape), tuple(state.shape)
    ((4, 1), (4, 25))
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, n_neurons: int = 32, *,
                 cell: str = "cfc", seed: int | None = None,
                 distribution: str = "squashed_gaussian", log_std_init: float = 0.0,
                 head_layers: tuple[int, ...] | list[int] = (),
                 dense_recurrence: bool = False, mixed_memory: bool = False,
                 self_synapse_init: float | None = None, cfc_mode: str = "default") -> None:
        super().__init__()
        if not isinstance(head_layers, (tuple, list)):
            raise ValueError(f"head_layers must be a sequence of layer widths, e.g. (64,), "
                             f"got {head_layers!r}")
        head_layers = tuple(check_int(f"head_layers[{i}]", w, 1)
                            for i, w in enumerate(head_layers))
        if cfc_mode not in CFC_MODES:
            raise ValueError(f"cfc_mode (the agents' actor_cfc_mode) must be one of "
                             f"{CFC_MODES}, got {cfc_mode!r}")
        if cfc_mode != "default" and cell != "cfc":
            raise ValueError(f"cfc_mode (the agents' actor_cfc_mode) applies to cell='cfc', "
                             f"got cfc_mode={cfc_mode!r} with cell={cell!r}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got "
                             f"{distribution!r}")
        #: the discrete actions' distribution (``None`` for Box actions)
        self.choices = discrete_actions(action_space)
        self.discrete = self.choices is not None
        self.action_dim = (self.choices.n_outputs if self.choices is not None
                           else int(action_space.shape[0]))
        if distribution == "gsde" and self.discrete:
            raise ValueError("distribution='gsde' (use_sde) needs Box actions, got "
                             f"{action_space}")
        self.gsde = distribution == "gsde"
        self.gaussian = distribution in ("gaussian", "gsde") and not self.discrete
        out = self.action_dim if self.discrete or self.gaussian else 2 * self.action_dim
        motor = head_layers[0] if head_layers else out
        self.net = recurrent_network(obs_dim, max(n_neurons, motor), motor, cell=cell,
                                     seed=seed, dense_recurrence=dense_recurrence,
                                     mixed_memory=check_bool("mixed_memory", mixed_memory),
                                     self_synapse_init=self_synapse_init,
                                     **({} if cfc_mode == "default" else {"mode": cfc_mode}))
        # motor neurons -> ReLU -> [Linear -> ReLU]... -> Linear to the outputs
        self.head = (None if not head_layers else nn.Sequential(*(
            layer for a, b in zip(head_layers, (*head_layers[1:], out), strict=True)
            for layer in (nn.ReLU(), nn.Linear(a, b)))))
        if self.gaussian:
            shape = ((self.net.hidden_size, self.action_dim) if self.gsde
                     else (self.action_dim,))
            self.log_std = nn.Parameter(torch.full(shape, float(log_std_init)))
        # what rebuilds this actor (with the action space)
        self.config = {"obs_dim": int(obs_dim), "n_neurons": int(n_neurons), "cell": cell,
                       "seed": seed}
        if distribution != "squashed_gaussian":
            self.config["distribution"] = distribution
        if head_layers:
            self.config["head_layers"] = list(head_layers)
        if dense_recurrence:
            self.config["dense_recurrence"] = True
        if mixed_memory:
            self.config["mixed_memory"] = True
        if self_synapse_init is not None:
            self.config["self_synapse_init"] = float(self_synapse_init)
        if cfc_mode != "default":
            self.config["cfc_mode"] = cfc_mode

    @property
    def state_dim(self) -> int:
        return self.net.hidden_size

    def forward(self, obs: torch.Tensor, state: torch.Tensor | None = None, *,
                episode_start: torch.Tensor | None = None,
                return_states: bool = False, dt: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out, states = self.net(obs, state, dt=dt, episode_start=episode_start,
                               return_states=return_states)
        return (out if self.head is None else self.head(out)), states

    def final_state(self, obs: torch.Tensor, state: torch.Tensor | None = None, *,
                    episode_start: torch.Tensor | None = None,
                    dt: torch.Tensor | None = None) -> torch.Tensor:
        """The state after ``obs`` without the policy outputs (see
        :meth:`~velora_ens.models.LiquidNCPNetwork.final_state`)."""
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

    # ---------------------------------------------------------- on-policy use
    def sample(self, out: torch.Tensor, noise: torch.Tensor | None = None,
               features: torch.Tensor | None = None, matrices: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A stochastic action (an index, or an unclipped Gaussian vector) and its
        log-probability, for on-policy agents (``distribution="gaussian"`` or ``"gsde"``
        for Box). ``noise``: the standard-normal draw of a Gaussian action (fresh by
        default). gSDE: ``features`` ``(n, H)``, the states after the step, and
        ``matrices`` ``(n, H, |A|)`` (:meth:`gsde_matrices`; fresh by default)."""
        if self.choices is not None:
            action = self.choices.sample(out)
            return action, self.choices.log_prob_entropy(out, action)[0]
        if not self.gaussian:
            raise ValueError("sample() needs distribution='gaussian' for Box actions")
        if self.gsde:
            if matrices is None:
                matrices = self.gsde_matrices(out.shape[0])
            action = out + torch.bmm(self._features(features).unsqueeze(1),
                                     matrices).squeeze(1)
            return action, self.log_prob_entropy(out, action, features)[0]
        if noise is None:
            noise = torch.randn_like(out)
        action = torch.addcmul(out, self.log_std.exp(), noise)
        return action, self.log_prob_entropy(out, action)[0]

    def gsde_matrices(self, n: int) -> torch.Tensor:
        """``n`` exploration matrices ``(n, H, |A|)`` of gSDE, drawn from
        ``N(0, exp(log_std)^2)`` (without gradient)."""
        with torch.no_grad():
            std = self.log_std.exp()
            return torch.randn((n, *std.shape), device=std.device, dtype=std.dtype) * std

    def _features(self, features: torch.Tensor | None) -> torch.Tensor:
        if features is None:
            raise ValueError("distribution='gsde' needs the features (the liquid states "
                             "after the step)")
        return features.detach()

    def gsde_std(self, features: torch.Tensor) -> torch.Tensor:
        """gSDE's per-dimension standard deviation ``sqrt(phi^2 @ exp(log_std)^2 + 1e-6)``
        for features ``(..., H)``."""
        variance = self._features(features).square() @ self.log_std.exp().square()
        return (variance + GSDE_EPSILON).sqrt()

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor,
                         features: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``actions`` and the entropy, per sample (categorical, or the
        diagonal Gaussian of ``distribution="gaussian"``; with ``"gsde"`` its standard
        deviation depends on ``features``, the states after each step)."""
        if self.choices is not None:
            return self.choices.log_prob_entropy(out, actions)
        if self.gsde:
            std = self.gsde_std(features)
            log_std = std.log()
            z = (actions - out) / std
            log_prob = (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
            return log_prob, entropy
        log_std = self.log_std.expand_as(out)
        z = (actions - out) * torch.exp(-log_std)
        log_prob = (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
        return log_prob, entropy

    # ---------------------------------------------------------- acting
    def act(self, out: torch.Tensor, deterministic: bool,
            features: torch.Tensor | None = None) -> torch.Tensor:
        """Actions from network outputs: ``[-1, 1]`` vectors or integer indices
        (``features``: gSDE's states after the step; a stochastic gSDE action draws a fresh
        exploration matrix)."""
        if self.choices is not None:
            return self.choices.mode(out) if deterministic else self.choices.sample(out)
        if self.gsde:
            action = out if deterministic else self.sample(out, features=features)[0]
            return action.clamp(-1.0, 1.0)
        if self.gaussian:
            action = out if deterministic else torch.addcmul(out, self.log_std.exp(),
                                                             torch.randn_like(out))
            return action.clamp(-1.0, 1.0)
        mean, log_std = self.squashed_gaussian(out)
        if deterministic:
            return torch.tanh(mean)
        return torch.tanh(torch.addcmul(mean, log_std.exp(), torch.randn_like(mean)))
