"""Value functions of an on-policy recurrent agent: what reads the history for the critic.

Two small objects with one interface, so the update has no branch on the choice:

* :class:`SeparateValue` (the default): a liquid network of its own, with its own state
  (the actor's and the critic's losses do not disturb each other);
* :class:`SharedValue`: a linear head on the actor's liquid state (fewer parameters; the
  value loss also trains the actor's network).

Each offers ``step`` (acting: one row), ``successor`` (the value of an observation that
follows a row: a truncated episode's final observation, or the observation after the
rollout), ``sequence`` (training: windows of rows) and ``states`` (its state after every
row of a sequence, to recompute the windows' start states with the current weights).
"""

from __future__ import annotations

import torch
from torch import nn

from agents.common.actor import LiquidActor
from velora_ens.models import recurrent_network

__all__ = ["SeparateValue", "SharedValue", "make_value"]


class SeparateValue:
    """A recurrent critic of its own (``LiquidNCPNetwork(obs_dim, n_neurons, 1)``, or the
    gated network of ``cell``) with its own state."""

    def __init__(self, obs_dim: int, n_neurons: int, cell: str, seed: int | None) -> None:
        self.net = recurrent_network(obs_dim, n_neurons, 1, cell=cell, seed=seed)

    @property
    def state_size(self) -> int:
        return self.net.hidden_size

    def modules(self) -> dict[str, nn.Module]:
        return {"critic": self.net}

    def step(self, obs: torch.Tensor, actor_state: torch.Tensor, state: torch.Tensor,
             dt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(n,)`` of one row and the critic state after it (``dt``: the
        elapsed time of each observation, ``(n, 1)``)."""
        out, state = self.net(obs, state, dt=dt)
        return out.squeeze(-1), state

    def successor(self, obs: torch.Tensor, actor_state: torch.Tensor, state: torch.Tensor,
                  dt: torch.Tensor | None = None) -> torch.Tensor:
        """Values of observations that follow a row, from the states after that row."""
        return self.net(obs, state, dt=dt)[0].squeeze(-1)

    def sequence(self, obs: torch.Tensor, episode_start: torch.Tensor,
                 actor_states: torch.Tensor, state: torch.Tensor,
                 dt: torch.Tensor | None = None) -> torch.Tensor:
        """Values ``(W, L)`` of windows ``(W, L, obs_dim)`` from their start states."""
        return self.net(obs, state, dt=dt, episode_start=episode_start)[0].squeeze(-1)

    def states(self, obs: torch.Tensor, episode_start: torch.Tensor, state: torch.Tensor,
               dt: torch.Tensor | None = None) -> torch.Tensor:
        """The state after every row ``(W, L, state_size)``."""
        return self.net(obs, state, dt=dt, episode_start=episode_start,
                        return_states=True)[1]


class SharedValue:
    """A linear value head on the actor's liquid state (no state of its own)."""

    def __init__(self, actor: LiquidActor, seed: int | None) -> None:
        self.actor = actor
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.head = nn.Linear(actor.state_dim, 1)

    state_size = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"value_head": self.head}

    def step(self, obs: torch.Tensor, actor_state: torch.Tensor, state: torch.Tensor,
             dt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(actor_state).squeeze(-1), state

    def successor(self, obs: torch.Tensor, actor_state: torch.Tensor, state: torch.Tensor,
                  dt: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.actor.final_state(obs, actor_state, dt=dt)).squeeze(-1)

    def sequence(self, obs: torch.Tensor, episode_start: torch.Tensor,
                 actor_states: torch.Tensor, state: torch.Tensor,
                 dt: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(actor_states).squeeze(-1)

    def states(self, obs: torch.Tensor, episode_start: torch.Tensor, state: torch.Tensor,
               dt: torch.Tensor | None = None) -> torch.Tensor:
        return state.new_zeros(*obs.shape[:2], 0)


def make_value(shared: bool, actor: LiquidActor, obs_dim: int, n_neurons: int, cell: str,
               seed: int | None) -> SeparateValue | SharedValue:
    """The value function ``shared_critic`` asks for."""
    return SharedValue(actor, seed) if shared else SeparateValue(obs_dim, n_neurons, cell, seed)
