"""NeuroFlow settings tuned per task: the benchmarks' settings (``benchmarks/bench_rl.py``
reads them from here) and ``velora-ens train``'s defaults for these ids. Other tasks use
NeuroFlow's defaults."""

from __future__ import annotations

from typing import Any

__all__ = ["TUNED_HYPERPARAMS"]

TUNED_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {"learning_rate": 1e-3},
    "PendulumNoVel-v1": {"learning_rate": 1e-3, "critic_encoder": "own"},
    # the critic loss trains the shared liquid state; 3-step targets; linear decay
    "CartPoleNoVel-v1": {"target_entropy_scale": 0.3, "learning_rate": "lin_1e-3",
                         "critic_trains_state": True, "n_step": 3, "gamma": 0.98},
}
