"""NeuroFlow's bootstrapped targets as functions of tensors (no agent state): how the
target critics' members are combined, one-step and n-step targets.

Gymnasium semantics throughout: only ``terminated`` stops bootstrapping; a truncated
step still bootstraps from the value of its real next observation.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["TARGET_RULES", "n_step_targets", "one_step_targets", "reduce_members"]

#: how ``target_q`` combines the target critics' members
TARGET_RULES = ("min", "mean", "member")


def reduce_members(q: torch.Tensor, rule: str, head: Any, subset: int | None = None
                   ) -> torch.Tensor:
    """Combine the target critics' member values ``q`` ``(N, B, out)``.

    ``rule``: ``"min"`` (clipped double-Q) or ``"mean"`` (less pessimistic; "Revisiting
    Discrete SAC" finds the minimum under-estimates with discrete actions), through the
    ``head``'s reduction (a Liquid Ensemble's mean is power-weighted); ``"member"``: ``q``
    unchanged, every member bootstraps from its own target member (Bootstrapped DQN).
    ``subset=M`` (REDQ): the minimum over ``M`` members drawn at random for this call.
    """
    if rule == "member":
        return q
    if subset is not None:
        members = torch.randperm(q.shape[0], device=q.device)[:subset]
        return q[members].min(0).values
    return head.reduce(q, rule)


def one_step_targets(rewards: torch.Tensor, terminated: torch.Tensor, next_values: torch.Tensor,
                     gamma: float) -> torch.Tensor:
    """``r + gamma (1 - terminated) V(s')``."""
    return rewards + gamma * (1.0 - terminated) * next_values


def n_step_targets(one_step: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
                   episode_start: torch.Tensor, n: int, gamma: float) -> torch.Tensor:
    """Multi-step targets ``(B, T - n + 1)`` from one-step ones ``(B, T)`` (R2D2's, without
    off-policy correction).

    ``one_step[:, j] = r_j + gamma (1 - terminated_j) V_j`` for each step ``j`` of the
    sequences. The target of step ``t`` sums ``gamma^k r_{t+k}`` up to ``n`` rewards,
    stopping early where the episode ends, and bootstraps with the one-step target of
    its last step: ``G_t = sum_{k<m-1} gamma^k r_{t+k} + gamma^(m-1) one_step_{t+m-1}``,
    with ``m`` the number of steps up to ``n`` before the episode ends (a terminal step
    ends it and so does the step before a new episode starts: a truncation, which still
    bootstraps inside ``one_step``).

    Worked example: ``n = 3``, ``gamma = 0.5``, rewards 1, 2, 3 and no episode end give
    ``G_0 = 1 + 0.5 * 2 + 0.25 * one_step_2``.
    """
    steps = one_step.shape[1] - n + 1
    target = torch.zeros_like(one_step[:, :steps])
    alive = torch.ones_like(target)
    discount = 1.0
    for k in range(n):
        j = slice(k, k + steps)
        if k == n - 1:
            stop = torch.ones_like(target)
        else:  # the episode ends at this step: terminated, or a new one starts next
            stop = torch.maximum(terminated[:, j], episode_start[:, k + 1:k + 1 + steps])
        target = target + alive * discount * torch.where(stop.bool(), one_step[:, j],
                                                         rewards[:, j])
        alive = alive * (1.0 - stop)
        discount *= gamma
    return target
