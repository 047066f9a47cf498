"""SAC's losses for a liquid actor, as functions of the networks (no agent state): the
critics' values of the stored actions, the soft Bellman targets and the policy loss.

Box actions: a tanh-squashed Gaussian policy; Discrete actions: SAC-Discrete, which
takes expectations over the full probability vector instead of one sampled action.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from agents.common.actor import LiquidActor
from agents.neuroflow.heads import CriticHead
from agents.neuroflow.history import CriticHistory
from agents.neuroflow.targets import one_step_targets

__all__ = ["actor_loss", "critic_values", "soft_td_targets"]


def critic_values(critics: CriticHead, critic_in: torch.Tensor, actions: torch.Tensor,
                  discrete: bool) -> torch.Tensor:
    """Every member's value of the stored ``actions``, ``(N, n)``; ``critic_in`` is what
    the critics read besides the action ``(n, obs + history)``."""
    if discrete:
        return critics(critic_in).gather(2, actions.long().unsqueeze(0).expand(
            critics.n_critics, -1, -1)).squeeze(-1)
    return critics(torch.cat([critic_in, actions], 1)).squeeze(-1)


@torch.no_grad()
def soft_td_targets(actor: LiquidActor, critic_targets: CriticHead, history: CriticHistory,
                    rewards: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor,
                    state: torch.Tensor, alpha: torch.Tensor, gamma: float, *,
                    reduce: Callable[[torch.Tensor], torch.Tensor],
                    backup_weights: Callable[[torch.Tensor], torch.Tensor | None],
                    member_targets: bool = False, critic_state: torch.Tensor | None = None,
                    next_dt: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Soft Bellman targets ``r + gamma (1 - terminated) V(s')``, ``(n,)`` (``(N, n)``, one
    row per member, when ``reduce`` keeps the members), and the weights
    ``backup_weights`` gives these backups from the target members at the next step
    (``None``: all 1).

    ``state`` is the actor state after each step; one more actor step from it on the
    real next observation gives the policy at the successor (also after the last step
    of an episode, whose successor is not the next stored step). Only ``terminated``
    stops bootstrapping: a truncated step still bootstraps. ``critic_state``: the state
    the critics' history view holds after each step (the actor state by default).
    ``next_dt``: the time elapsed before each real next observation ``(n, 1)``.
    ``member_targets`` with Discrete actions: each member's soft-greedy value
    ``alpha logsumexp(Q'_k(s', .) / alpha)``, the value of acting with
    ``softmax(Q_k / alpha)`` as Thompson sampling does.
    """
    next_out, next_states = actor(next_obs, state, dt=next_dt)
    critic_state = state if critic_state is None else critic_state
    next_in = torch.cat([next_obs, history.next_states(next_obs, critic_state, next_states,
                                                       next_dt)], 1)
    if actor.discrete:
        q_next = critic_targets(next_in)  # (N, n, A)
    else:
        next_action, next_log_prob = actor.sample_continuous(next_out)
        q_next = critic_targets(torch.cat([next_in, next_action], 1))
    weights = backup_weights(q_next)
    q_next = reduce(q_next)
    if actor.discrete and member_targets:
        a = alpha.clamp_min(1e-8)
        v_next = a * torch.logsumexp(q_next / a, -1)
    elif actor.discrete:
        probs, log_probs = actor.categorical(next_out)
        v_next = (probs * (q_next - alpha * log_probs)).sum(-1)
    else:
        v_next = q_next.squeeze(-1) - alpha * next_log_prob
    return one_step_targets(rewards, terminated, v_next, gamma), weights


def actor_loss(actor: LiquidActor, critics: CriticHead, out: torch.Tensor,
               critic_in: torch.Tensor, alpha: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy loss and the policy's entropy estimate per sample, with the critics as fixed
    functions (no gradient reaches their weights).

    Box: ``E[alpha log pi(a|s) - min_i Q_i(s, a)]`` with a reparameterised ``a``.
    Discrete (SAC-Discrete): the expectation over **all** actions,
    ``sum_a pi(a|s) (alpha log pi(a|s) - min_i Q_i(s, a))``, with the full
    log-probability vector (not the log-probability of one sampled action).
    """
    if actor.discrete:
        probs, log_probs = actor.categorical(out)
        with torch.no_grad():
            q_pi = critics.reduce(critics(critic_in), "min")
        loss = (probs * (alpha * log_probs - q_pi)).sum(-1).mean()
        return loss, -(probs * log_probs).sum(-1).detach()
    action, log_prob = actor.sample_continuous(out)
    q_pi = critics.reduce(critics(torch.cat([critic_in, action], 1), detach_params=True),
                          "min").squeeze(-1)
    return (alpha * log_prob - q_pi).mean(), -log_prob.detach()
