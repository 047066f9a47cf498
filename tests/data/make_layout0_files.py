"""Writes the ``*_layout0`` reference files: agents and a policy saved by the code as it
was before the agents were laid out by algorithm (commit 84daec7), with what that code
predicted and how it continued training. ``tests/test_saved_files.py`` loads them with
today's code.

Run from a checkout of that commit (it was run once, on the CPU named in the JSON):

    python tests/data/make_layout0_files.py tests/data
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

import envs  # noqa: F401  (registers the NoVel ids)
from agents import LiquidPPO, NeuroFlow
from velora_ens.bench.report import machine

CONTINUE_STEPS = 32


def digest(agent) -> str:
    """SHA-256 of every saved network's tensors (the masks' wiring seeds left out)."""
    h = hashlib.sha256()
    for prefix, module in sorted(agent._persistent_modules().items()):
        for name, tensor in module.state_dict().items():
            if not name.endswith("wiring_seed"):
                h.update(f"{prefix}.{name}".encode())
                h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def predictions(model, obs: np.ndarray) -> tuple[list, list]:
    actions, states, state = [], [], None
    for t in range(len(obs)):
        action, state = model.predict(obs[t], state, deterministic=True)
        actions.append(np.asarray(action).tolist())
        states.append(state.tolist())
    return actions, states


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    reference: dict = {"cpu": machine().split(",")[0], "torch": torch.__version__,
                       "continue_steps": CONTINUE_STEPS}
    agents = {
        "neuroflow_layout0": NeuroFlow(
            "PendulumNoVel-v1", seed=1, actor_neurons=8, critic_hidden=(16, 16), n_critics=3,
            critic_encoder="own", normalize_observations=True, exploration="disagreement",
            exploration_kwargs={"n_models": 2, "hidden": (8,)}, learning_starts=20,
            batch_size=16, seq_len=4, burn_in=2, n_step=2, buffer_size=400),
        "ppo_layout0": LiquidPPO(
            "PendulumNoVel-v1", seed=1, n_envs=2, n_steps=16, batch_size=16, seq_len=8,
            n_epochs=2, actor_neurons=8, critic_neurons=8, actor_head=[8],
            actor_dense_recurrence=True, noise_hold_steps=2, normalize_observations=True,
            normalize_rewards=True),
    }
    for name, agent in agents.items():
        agent.learn(48)
        agent.save(out / name, include_buffer=True)
        obs = rng.normal(size=(5, 2, agent.obs_dim)).astype(np.float32)
        actions, states = predictions(agent, obs)
        agent.learn(CONTINUE_STEPS)
        reference[name] = {"class": type(agent).__name__, "num_timesteps": 48,
                           "obs": obs.tolist(), "actions": actions, "states": states,
                           "after_continue_sha256": digest(agent)}
        if name == "ppo_layout0":
            from agents import LiquidPolicy

            loaded = LiquidPPO.load(out / name)
            loaded.policy.save(out / "policy_layout0")
            policy = LiquidPolicy.load(out / "policy_layout0")
            actions, states = predictions(policy, obs)
            reference["policy_layout0"] = {"obs": obs.tolist(), "actions": actions,
                                           "states": states}
    (out / "layout0.json").write_text(json.dumps(reference))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
