"""How many gradient updates NeuroFlow pays for per environment transition.

NeuroFlow spreads its updates over the steps at a rate ``utd_ratio`` (updates per
transition). Stable-Baselines3 scripts give the rate as ``train_freq`` and
``gradient_steps`` instead; they are accepted and converted:
``utd_ratio = gradient_steps / (train_freq * n_envs)``.

>>> updates_per_transition(1.0, train_freq=4, gradient_steps=2, n_envs=1)
0.5
"""

from __future__ import annotations

from typing import Any

from velora_ens._validation import check_int

__all__ = ["updates_per_transition"]


def updates_per_transition(utd_ratio: float, train_freq: Any, gradient_steps: int | None,
                           n_envs: int) -> float:
    """``utd_ratio``, or the rate SB3's ``train_freq`` and ``gradient_steps`` give."""
    if train_freq is None and gradient_steps is None:
        return float(utd_ratio)
    if utd_ratio != 1.0:
        raise ValueError("give utd_ratio or Stable-Baselines3's train_freq/gradient_steps, not "
                         f"both (got utd_ratio={utd_ratio!r})")
    if isinstance(train_freq, (tuple, list)):
        if len(train_freq) != 2 or train_freq[1] != "step":
            raise ValueError(f"train_freq must be an int or (n, 'step'), got {train_freq!r} "
                             "(NeuroFlow does not train per episode)")
        train_freq = train_freq[0]
    every = check_int("train_freq", 1 if train_freq is None else train_freq, 1) * n_envs
    steps = 1 if gradient_steps is None else gradient_steps
    if steps == -1:
        return 1.0
    return check_int("gradient_steps", steps, 1) / every
