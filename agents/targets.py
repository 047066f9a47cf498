"""Bootstrapped targets as pure functions of tensors (no agent state).

Gymnasium semantics throughout: only ``terminated`` stops bootstrapping; a truncated
step still bootstraps from the value of its real next observation.
"""

from __future__ import annotations

import torch

__all__ = ["gae_advantages", "n_step_targets", "one_step_targets"]


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


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
                   terminated: torch.Tensor, dones: torch.Tensor, valid: torch.Tensor,
                   gamma: float, gae_lambda: float) -> torch.Tensor:
    """Generalised advantage estimates ``(T, N)`` of a rollout stored time-major.

    ``next_values[t]`` is the value of step ``t``'s real successor: the next row's value
    inside an episode, the value of the final observation where the episode was
    truncated (read with the critic's state after step ``t``), anything where it
    terminated (it is multiplied by 0). ``dones`` (terminated or truncated) stop the
    recursion; rows that are not transitions (``valid`` false: Gymnasium's NEXT_STEP
    reset rows) get advantage 0 and follow a done row, so nothing reads them.

    ``delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t`` and
    ``A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}``.

    Worked example (one copy, ``gamma = 0.5``, ``lambda = 1``): rewards 1, 1 with values
    0, 0, the second step terminal, give ``A = (1.5, 1)``; truncated instead of terminal
    with ``next_values[1] = 2``, ``A = (2.5, 2)``.
    """
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[0])
    not_terminal, continues = 1.0 - terminated.float(), 1.0 - dones.float()
    for t in range(values.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * not_terminal[t] * next_values[t] - values[t]
        last = torch.where(valid[t], delta + gamma * gae_lambda * continues[t] * last,
                           torch.zeros_like(last))
        advantages[t] = last
    return advantages
