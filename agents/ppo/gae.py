"""Generalised advantage estimation (GAE) as a pure function of a rollout's tensors.

Gymnasium semantics: only ``terminated`` stops bootstrapping; a truncated step still
bootstraps from the value of its real next observation.
"""

from __future__ import annotations

import torch

__all__ = ["gae_advantages"]


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
