"""SAC's losses for a liquid actor, as functions of the networks (no agent state): the
critics' values of the stored actions, the soft Bellman targets and the policy loss.

Box actions: a tanh-squashed Gaussian policy; Discrete actions: SAC-Discrete, which
takes expectations over the full probability vector instead of one sampled action.

MultiDiscrete and MultiBinary actions: a factorised SAC-Discrete. The policy is a product
of independent categoricals, one per entry ``d`` (a bit is an entry of two values), and
the critics output one value set per entry, ``Q_d(s, a_d)``: the soft value of ``a_d``
with the other entries drawn from the policy. Each ``Q_d`` regresses on the same target
``r + gamma V(s')``, with ``V(s') = (1/D) sum_d E_{pi_d} Q_d(s', .) + alpha sum_d H_d(s')``
(every ``E_{pi_d} Q_d`` is the same expectation ``E_pi Q``; their mean lowers the
variance, and the joint entropy is the sum of the entries'). The policy loss
``sum_d sum_a pi_d(a) (alpha log pi_d(a) - Q_d(s, a))`` is the joint one
``E_pi[alpha log pi - Q]`` up to a constant in each entry's own parameters. With one entry
all of this is SAC-Discrete.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from agents.common.actor import LiquidActor
from agents.common.distributions import Categoricals
from agents.neuroflow.heads import CriticHead
from agents.neuroflow.history import CriticHistory
from agents.neuroflow.targets import one_step_targets

__all__ = ["actor_loss", "critic_values", "soft_greedy_values", "soft_td_targets"]


def critic_values(critics: CriticHead, critic_in: torch.Tensor, actions: torch.Tensor,
                  tables: Categoricals | None) -> torch.Tensor:
    """Every member's value of the stored ``actions``, ``(N, n)``; ``critic_in`` is what
    the critics read besides the action ``(n, obs + history)``. Discrete actions
    (``tables``: their value tables' layout): with ``D > 1`` entries ``(N, n, D)``, each
    entry's value of its own action (each regresses on the sample's target)."""
    if tables is not None:
        q = tables.gather(tables.split(critics(critic_in)),
                          actions.long().unsqueeze(0).expand(critics.n_critics, -1, -1))
        return q.squeeze(-1) if tables.n_entries == 1 else q
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
        q_next = critic_targets(next_in)  # (N, n, sum of the entries' sizes)
    else:
        next_action, next_log_prob = actor.sample_continuous(next_out)
        q_next = critic_targets(torch.cat([next_in, next_action], 1))
    weights = backup_weights(q_next)
    q_next = reduce(q_next)
    if actor.discrete and member_targets:
        v_next = soft_greedy_values(actor.choices.tables, q_next, alpha.clamp_min(1e-8))
    elif actor.discrete:
        tables, entries = actor.choices.tables, actor.choices.n_entries
        v_next = sum((log_probs.exp() * (q / entries - alpha * log_probs)).sum((-2, -1))
                     for q, log_probs in zip(tables.split(q_next),
                                             actor.choices.log_prob_tables(next_out),
                                             strict=True))
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
        with torch.no_grad():
            q_pi = actor.choices.tables.split(critics.reduce(critics(critic_in), "min"))
        loss = entropy = 0
        for q, log_probs in zip(q_pi, actor.choices.log_prob_tables(out), strict=True):
            probs = log_probs.exp()
            loss = loss + (probs * (alpha * log_probs - q)).sum((-2, -1))
            entropy = entropy - (probs * log_probs).sum((-2, -1))
        return loss.mean(), entropy.detach()
    action, log_prob = actor.sample_continuous(out)
    q_pi = critics.reduce(critics(torch.cat([critic_in, action], 1), detach_params=True),
                          "min").squeeze(-1)
    return (alpha * log_prob - q_pi).mean(), -log_prob.detach()


def soft_greedy_values(tables: Categoricals, q: torch.Tensor, alpha: torch.Tensor
                       ) -> torch.Tensor:
    """The soft value of acting with ``softmax(Q_d / alpha)`` in every entry, from value
    tables ``q`` ``(..., sum of sizes)``: ``alpha logsumexp(Q / alpha)`` with one entry;
    with ``D`` entries ``sum_d [alpha logsumexp(Q_d / alpha) - (1 - 1/D) E_{pi_d} Q_d]``
    (the entries' mean expected value plus the sum of their entropies)."""
    values = 0
    entries = tables.n_entries
    for group in tables.split(q):
        values = values + (alpha * torch.logsumexp(group / alpha, -1)).sum(-1)
        if entries > 1:
            probs = torch.softmax(group / alpha, -1)
            values = values - (1 - 1 / entries) * (probs * group).sum((-2, -1))
    return values
