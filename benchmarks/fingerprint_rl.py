"""A fingerprint of NeuroFlow's numerics: short seeded runs in several configurations,
each reduced to a SHA-256 of every parameter, target network, temperature and last loss.

A change meant to be a pure speed-up must leave every line the same: run this script on
the commit before it and on the commit after, on the same machine, and compare. Equal
fingerprints mean the learning benchmarks measured before the change still describe the
code after it.

    python benchmarks/fingerprint_rl.py                 # this checkout
    git worktree add /tmp/before <commit> && \\
        python benchmarks/fingerprint_rl.py --code /tmp/before   # an older one
    python benchmarks/fingerprint_rl.py --algo ppo      # LiquidPPO's numerics instead
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

# Each configuration exercises other paths of the update: Box and Discrete actions, the
# shared and the own encoder, n-step targets, normalisation, NCP critics, the LTC cell,
# several environment copies, burn-in, schedules, every critic head and every
# exploration strategy.
CONFIGS: dict[str, dict] = {
    "pendulum": {"env": "Pendulum-v1"},
    "pendulum-n3-shared": {"env": "Pendulum-v1", "n_step": 3, "critic_trains_state": True},
    "pendulum-novel-own-norm": {"env": "PendulumNoVel-v1", "critic_encoder": "own",
                                "normalize_observations": True, "n_envs": 2},
    "cartpole-novel-tuned": {"env": "CartPoleNoVel-v1", "n_step": 3,
                             "critic_trains_state": True, "learning_rate": "lin_1e-3",
                             "gamma": 0.98},
    "cartpole-ncp-critics": {"env": "CartPole-v1", "critic_ncp_neurons": 16, "n_critics": 3,
                             "target_q": "mean"},
    "pendulum-ltc": {"env": "Pendulum-v1", "cell": "ltc", "burn_in": 0, "seq_len": 4,
                     "batch_size": 64, "ent_coef": 0.1},
    "pendulum-novel-ltc-own": {"env": "PendulumNoVel-v1", "cell": "ltc", "burn_in": 3,
                               "seq_len": 4, "batch_size": 64, "critic_encoder": "own"},
    "cartpole-novel-3-envs": {"env": "CartPoleNoVel-v1", "n_envs": 3, "burn_in": 5,
                              "n_step": 2},
    # the critic heads and the exploration strategies
    "pendulum-oac-5": {"env": "Pendulum-v1", "n_critics": 5, "exploration": "oac"},
    "pendulum-batch-ucb-weighted": {"env": "Pendulum-v1", "critic_head": "batch",
                                    "n_critics": 3, "exploration": "ucb",
                                    "exploration_kwargs": {"weighted_backup": 10.0}},
    "cartpole-thompson-member": {"env": "CartPole-v1", "n_critics": 4,
                                 "exploration": "thompson", "target_q": "member",
                                 "critic_encoder": "none",
                                 "critic_head_kwargs": {"prior_scale": 1.0, "bootstrap": 0.5}},
    "mountaincar-disagreement": {"env": "MountainCarContinuous-v0",
                                 "exploration": "disagreement",
                                 "normalize_observations": True},
    "pendulum-liquid-redq": {"env": "Pendulum-v1", "critic_head": "liquid", "n_critics": 3,
                             "critic_head_kwargs": {"target_subset": 2}},
    "cartpole-moe-ucb": {"env": "CartPole-v1", "critic_head": "moe", "n_critics": 3,
                         "exploration": "ucb"},
    "pendulum-irregular-own": {"env": "PendulumNoVelIrregular-v1", "critic_encoder": "own",
                               "elapsed_time_key": "elapsed_time",
                               "elapsed_time_unit": 0.05, "n_envs": 2},
}

# LiquidPPO: whole columns and windows, both action kinds, the shared critic, the LTC
# cell, normalisation, schedules, target_kl, held exploration noise, gSDE with an actor
# head, and the elapsed time between observations.
PPO_CONFIGS: dict[str, dict] = {
    "ppo-cartpole-novel-tuned": {"env": "CartPoleNoVel-v1", "n_envs": 8, "n_steps": 32,
                                 "batch_size": 256, "n_epochs": 4, "gamma": 0.98,
                                 "gae_lambda": 0.8, "learning_rate": "lin_1e-3",
                                 "clip_range": "lin_0.2", "normalize_observations": True,
                                 "normalize_rewards": True},
    "ppo-pendulum-windows": {"env": "PendulumNoVel-v1", "n_envs": 2, "n_steps": 64,
                             "batch_size": 32, "seq_len": 16, "n_epochs": 3,
                             "normalize_observations": True, "normalize_rewards": True},
    "ppo-pendulum-shared-noise": {"env": "Pendulum-v1", "shared_critic": True,
                                  "noise_hold_steps": 4, "n_steps": 64, "batch_size": 32,
                                  "clip_range_vf": 1.0},
    "ppo-cartpole-ltc-kl": {"env": "CartPole-v1", "cell": "ltc", "n_steps": 64,
                            "batch_size": 64, "target_kl": 0.005, "ent_coef": 0.01},
    "ppo-pendulum-gsde-head": {"env": "Pendulum-v1", "use_sde": True, "sde_sample_freq": 8,
                               "n_steps": 64, "batch_size": 64, "actor_head": [16],
                               "actor_dense_recurrence": True},
    "ppo-irregular-windows": {"env": "CartPoleNoVelIrregular-v1", "n_envs": 2,
                              "n_steps": 64, "batch_size": 32, "seq_len": 16,
                              "elapsed_time_key": "elapsed_time",
                              "elapsed_time_unit": 0.02},
}


# the networks the configurations above were first fingerprinted with (LiquidPPO's defaults
# until they became wider and densely recurrent), so that their lines stay comparable with
# older commits; "ppo-cartpole-defaults" runs on today's defaults
SPARSE_NETWORKS = {"actor_neurons": 32, "critic_neurons": 32, "actor_dense_recurrence": False}
PPO_CONFIGS = {name: {**SPARSE_NETWORKS, **config} for name, config in PPO_CONFIGS.items()}
PPO_CONFIGS["ppo-cartpole-defaults"] = {"env": "CartPole-v1", "n_steps": 64, "batch_size": 64}


def ppo_fingerprint(agent) -> str:
    """SHA-256 over every saved tensor of a LiquidPPO agent and its last logged values."""
    import torch

    digest = hashlib.sha256()
    for prefix, module in agent._persistent_modules().items():
        for name, tensor in module.state_dict().items():
            digest.update(f"{prefix}.{name}".encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
    losses = [agent.last_losses[key] for key in sorted(agent.last_losses)]
    digest.update(torch.tensor(losses, dtype=torch.float64).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(agent, ignore: frozenset[str] = frozenset()) -> str:
    """SHA-256 over the bytes of every tensor that training changes, in a fixed order.

    Written against NeuroFlow's attributes only (not ``agents.common.persistence``), so that it
    runs unchanged on older checkouts.
    """
    import torch

    digest = hashlib.sha256()
    modules = {"actor": agent.actor, "critics": agent.critics,
               "critic_targets": agent.critic_targets}
    for name in ("actor_target", "critic_encoder", "obs_normalizer"):
        if getattr(agent, name, None) is not None:
            modules[name] = getattr(agent, name)
    for prefix, module in modules.items():
        for name, tensor in module.state_dict().items():
            if name.endswith("wiring_seed"):
                continue  # stored beside the masks since issue 13; the masks are hashed
            digest.update(f"{prefix}.{name}".encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
    digest.update(agent.log_alpha.detach().numpy().tobytes())
    losses = [agent.last_losses[key] for key in sorted(agent.last_losses) if key not in ignore]
    digest.update(torch.tensor(losses, dtype=torch.float64).numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=None,
                        help="a checkout whose agents/velora_ens/envs to run (default: the "
                             "installed ones)")
    parser.add_argument("--steps", type=int, default=300, help="environment steps per run")
    parser.add_argument("--algo", choices=("neuroflow", "ppo"), default="neuroflow",
                        help="which agent's numerics (default neuroflow; ppo runs 4x the "
                             "steps, a few rollouts per configuration)")
    parser.add_argument("--ignore-logs", default="",
                        help="comma-separated logged values to leave out of the digest (e.g. "
                             "critic_spread,q_epistemic to compare across the commit that "
                             "renamed and redefined the critics' disagreement)")
    args = parser.parse_args(argv)
    ignore = frozenset(filter(None, args.ignore_logs.split(",")))
    if args.code is not None:
        sys.path.insert(0, str(args.code.resolve()))
    import torch

    import envs  # noqa: F401  (registers the NoVel ids)
    from agents import NeuroFlow

    torch.set_num_threads(1)
    print(f"code: {Path(sys.modules['agents'].__file__).parent.parent}; torch "
          f"{torch.__version__}, 1 thread; {args.steps} steps per run, seed 3")
    if args.algo == "ppo":
        from agents import LiquidPPO

        for name, config in PPO_CONFIGS.items():
            config = dict(config)
            agent = LiquidPPO(config.pop("env"), seed=3, **config)
            agent.learn(4 * args.steps)
            print(f"{name:26s} {ppo_fingerprint(agent)}")
        return 0
    for name, config in CONFIGS.items():
        config = dict(config)
        agent = NeuroFlow(config.pop("env"), seed=3, learning_starts=100, **config)
        agent.learn(args.steps)
        print(f"{name:26s} {fingerprint(agent, ignore)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
