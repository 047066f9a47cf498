"""Settings tuned per task: the benchmarks' settings (``benchmarks/bench_rl.py`` and
``benchmarks/bench_ppo.py`` read them from here) and ``velora-ens train``'s defaults for
these ids. Other tasks use the agent's defaults."""

from __future__ import annotations

from typing import Any

__all__ = ["TUNED_HYPERPARAMS", "TUNED_PPO_HYPERPARAMS", "tuned_hyperparams"]

TUNED_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {"learning_rate": 1e-3},
    "PendulumNoVel-v1": {"learning_rate": 1e-3, "critic_encoder": "own"},
    # the critic loss trains the shared liquid state; 3-step targets; linear decay
    "CartPoleNoVel-v1": {"target_entropy_scale": 0.3, "learning_rate": "lin_1e-3",
                         "critic_trains_state": True, "n_step": 3, "gamma": 0.98},
    # sparse reward: the forward models' disagreement as an intrinsic reward; on normalised
    # observations their variance is about 1e-4 where they have been trained, hence the
    # scale (trials: benchmarks/README.md)
    "MountainCarContinuous-v0": {"learning_starts": 1000, "normalize_observations": True,
                                 "exploration": "disagreement",
                                 "exploration_kwargs": {"scale": 3000.0}},
    # deep exploration: Thompson sampling over 10 critics with randomised priors, each
    # bootstrapping from its own target member, critics that read the observation only (a
    # fully observed task), a temperature so small that acting with a member is greedy,
    # and fast target updates (tau 0.25, about bsuite's Bootstrapped DQN's copy every 4
    # updates) (trials: benchmarks/README.md)
    "DeepSea-v0": {"n_critics": 10, "critic_hidden": (64, 64), "exploration": "thompson",
                   "critic_head_kwargs": {"prior_scale": 5.0}, "target_q": "member",
                   "critic_encoder": "none", "ent_coef": 1e-4, "batch_size": 128,
                   "learning_rate": 1e-3, "utd_ratio": 0.25, "tau": 0.25},
}

# LiquidPPO: RL Zoo's ppo_lstm.yml settings for these ids (n_envs included), with its
# ``normalize: true`` as observation and reward normalisation
TUNED_PPO_HYPERPARAMS: dict[str, dict[str, Any]] = {
    # RL Zoo's settings with 64-neuron networks, 30 epochs, target_kl 0.02 and an entropy
    # bonus of 0.01 (5 seeds, 100k steps, screened against RL Zoo's settings unchanged:
    # final 489.2 against 334.4, 475 reached after 18k steps against 25k;
    # benchmarks/README.md)
    "CartPoleNoVel-v1": {"n_envs": 8, "n_steps": 32, "batch_size": 256, "n_epochs": 30,
                         "gamma": 0.98, "gae_lambda": 0.8, "learning_rate": "lin_1e-3",
                         "clip_range": "lin_0.2", "ent_coef": 0.01, "target_kl": 0.02,
                         "actor_neurons": 64, "critic_neurons": 64,
                         "actor_dense_recurrence": False,  # tuned on the sparse NCP wiring
                         "normalize_observations": True, "normalize_rewards": True},
    # RL Zoo's rollout, discount and normalisation; an actor whose 64 motor neurons feed a
    # ReLU and a linear layer (RecurrentPPO's pi=[64] head) over all-to-all recurrent command
    # neurons, 20 epochs at RL Zoo's step size decaying linearly, noise held for 4 steps (in
    # gSDE's place); 64-neuron networks. Trials: benchmarks/README.md
    "PendulumNoVel-v1": {"n_envs": 4, "n_steps": 1024, "batch_size": 128, "seq_len": 32,
                         "n_epochs": 20, "gamma": 0.9, "gae_lambda": 0.95,
                         "learning_rate": "lin_1e-3", "noise_hold_steps": 4,
                         "actor_neurons": 64, "critic_neurons": 64, "actor_head": [64],
                         "actor_dense_recurrence": True,
                         "normalize_observations": True, "normalize_rewards": True},
}


def tuned_hyperparams(agent: str, env_id: str) -> dict[str, Any]:
    """A copy of the tuned settings of ``agent`` (a class name) for ``env_id``, or ``{}``."""
    table = TUNED_PPO_HYPERPARAMS if agent == "LiquidPPO" else TUNED_HYPERPARAMS
    return dict(table.get(env_id, {}))
