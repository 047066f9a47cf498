"""The critics' view of the history: what summarises the past for the critics.

A recurrent actor-critic's critics need a summary of the history as well as the
observation (the task is partially observed). Three choices, one small interface, so
that an update reads the same whatever the choice:

* :class:`ActorStateHistory`: the actor's liquid state, detached (free: it is computed
  anyway);
* :class:`SharedEncoderHistory`: the actor's liquid state, which the critic loss trains
  too (a shared encoder, as in SAC-AE/DrQ); targets read the history through a slowly
  updated copy of the actor network, so the critic does not chase a target its own
  updates keep moving;
* :class:`OwnEncoderHistory`: a separate liquid network trained by the critic loss only
  (Ni et al., 2022, for partially observed tasks); its state is stored in replay after
  the actor's;
* :class:`NoHistory`: none, the critics read the observation alone (fully observed
  tasks such as DeepSea, as SB3's SAC does).

Interface: :meth:`~CriticHistory.sequences` gives, for sampled sequences, the states the
critics are trained on and those their targets read; :meth:`~CriticHistory.next_states`
steps the targets' history to the real next observation; :meth:`~CriticHistory.act`
keeps its own state while acting; :meth:`~CriticHistory.soft_update` moves target copies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from agents.common.actor import LiquidActor
from velora_ens.models import recurrent_network
from velora_ens.models.recurrent import RecurrentNetwork

__all__ = ["ActorStateHistory", "CriticHistory", "NoHistory", "OwnEncoderHistory",
           "SharedEncoderHistory", "make_history"]

# (network, observations, episode starts, start state) -> (outputs, states), (B, T, ...);
# the sequences' elapsed times, if any, are bound into it
Unroll = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor],
                  tuple[torch.Tensor, torch.Tensor]]


class CriticHistory:
    """The interface; its methods give the default view, the actor's state detached."""

    #: extra recurrent state stored in replay per step, after the actor's
    stored_size = 0

    def __init__(self, actor: LiquidActor) -> None:
        self.actor = actor

    @property
    def state_size(self) -> int:
        """Size of the history input the critics read."""
        return self.actor.state_dim

    def modules(self) -> dict[str, nn.Module]:
        """Networks to save besides the actor and critics."""
        return {}

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the critic loss besides the critics'."""
        return []

    def act(self, obs: torch.Tensor, state: torch.Tensor, dt: torch.Tensor | None = None
            ) -> torch.Tensor | None:
        """The view's own next state when acting (``None``: it has none); ``dt``: the
        observations' elapsed times (``None``: the cells' default)."""
        return None

    def acting_view(self, actor_state: torch.Tensor, own: torch.Tensor | None) -> torch.Tensor:
        """What the critics read besides the observation while acting, from the actor's
        new state and the view's own (from :meth:`act`)."""
        return actor_state if own is None else own

    def sequences(self, unroll: Unroll, obs: torch.Tensor, episode_start: torch.Tensor,
                  start_state: torch.Tensor, actor_states: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """States the critics are trained on and states their targets read, ``(B, T, H)``,
        for sequences whose actor states are ``actor_states``; ``start_state`` is the
        state stored in replay before each sequence (the actor's, then the view's own).
        ``unroll`` carries the sequences' elapsed times, if any."""
        detached = actor_states.detach()
        return detached, detached

    def next_states(self, next_obs: torch.Tensor, target_states: torch.Tensor,
                    actor_next_states: torch.Tensor, dt: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """The targets' history after the real next observation (flattened rows), which
        came ``dt`` after the previous one (``None``: the cells' default)."""
        return actor_next_states

    def soft_update(self, tau: float) -> None:
        """Move target copies towards the trained networks."""


class ActorStateHistory(CriticHistory):
    """The actor's liquid state, detached (the base class's behaviour, named)."""


class NoHistory(CriticHistory):
    """No history: the critics read the observation only (a zero-width history)."""

    @property
    def state_size(self) -> int:
        return 0

    def acting_view(self, actor_state: torch.Tensor, own: torch.Tensor | None) -> torch.Tensor:
        return actor_state[:, :0]

    def sequences(self, unroll: Unroll, obs: torch.Tensor, episode_start: torch.Tensor,
                  start_state: torch.Tensor, actor_states: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        empty = actor_states[..., :0].detach()
        return empty, empty

    def next_states(self, next_obs: torch.Tensor, target_states: torch.Tensor,
                    actor_next_states: torch.Tensor, dt: torch.Tensor | None = None
                    ) -> torch.Tensor:
        return actor_next_states[..., :0]


class SharedEncoderHistory(CriticHistory):
    """The actor's state trained by the critic loss too; targets read a target copy of the
    actor network, soft-updated with the critics' ``tau``."""

    def __init__(self, actor: LiquidActor) -> None:
        super().__init__(actor)
        self.target = copy.deepcopy(actor).requires_grad_(False)
        self._actor_params = list(actor.parameters())
        self._target_params = list(self.target.parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {"actor_target": self.target}

    def sequences(self, unroll: Unroll, obs: torch.Tensor, episode_start: torch.Tensor,
                  start_state: torch.Tensor, actor_states: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            _, target_states = unroll(self.target, obs, episode_start,
                                      start_state[:, :self.actor.state_dim])
        return actor_states, target_states

    def next_states(self, next_obs: torch.Tensor, target_states: torch.Tensor,
                    actor_next_states: torch.Tensor, dt: torch.Tensor | None = None
                    ) -> torch.Tensor:
        return self.target(next_obs, target_states, dt=dt)[1]

    @torch.no_grad()
    def soft_update(self, tau: float) -> None:
        torch._foreach_lerp_(self._target_params, self._actor_params, tau)


class OwnEncoderHistory(CriticHistory):
    """A separate liquid network of its own, trained by the critic loss only."""

    def __init__(self, actor: LiquidActor, encoder: RecurrentNetwork) -> None:
        super().__init__(actor)
        self.encoder = encoder
        self.stored_size = encoder.hidden_size

    @property
    def state_size(self) -> int:
        return self.encoder.hidden_size

    def modules(self) -> dict[str, nn.Module]:
        return {"critic_encoder": self.encoder}

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def act(self, obs: torch.Tensor, state: torch.Tensor, dt: torch.Tensor | None = None
            ) -> torch.Tensor | None:
        return self.encoder(obs, state, dt=dt)[1]

    def sequences(self, unroll: Unroll, obs: torch.Tensor, episode_start: torch.Tensor,
                  start_state: torch.Tensor, actor_states: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        _, states = unroll(self.encoder, obs, episode_start,
                           start_state[:, self.actor.state_dim:])
        return states, states.detach()

    def next_states(self, next_obs: torch.Tensor, target_states: torch.Tensor,
                    actor_next_states: torch.Tensor, dt: torch.Tensor | None = None
                    ) -> torch.Tensor:
        return self.encoder(next_obs, target_states, dt=dt)[1]


def make_history(critic_encoder: str, critic_trains_state: bool, actor: LiquidActor,
                 obs_dim: int, n_neurons: int, cell: str, seed: int | None) -> CriticHistory:
    """The view NeuroFlow's options ``critic_encoder`` and ``critic_trains_state`` ask for."""
    if critic_encoder not in ("actor", "own", "none"):
        raise ValueError(f"critic_encoder must be 'actor', 'own' or 'none', got "
                         f"{critic_encoder!r}")
    if critic_encoder == "none":
        if critic_trains_state:
            raise ValueError("critic_trains_state applies to critic_encoder='actor' only; "
                             "with critic_encoder='none' the critics read no history")
        return NoHistory(actor)
    if critic_encoder == "own":
        if critic_trains_state:
            raise ValueError("critic_trains_state applies to critic_encoder='actor' only; the "
                             "critics' own encoder is always trained by the critic loss")
        encoder = recurrent_network(obs_dim, n_neurons, 1, cell=cell,
                                    seed=None if seed is None else seed + 2)
        return OwnEncoderHistory(actor, encoder)
    return SharedEncoderHistory(actor) if critic_trains_state else ActorStateHistory(actor)
