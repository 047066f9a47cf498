"""Saving and loading NeuroFlow: round trips, exact resume, and files that must be refused."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import NeuroFlow
from agents.common.persistence import read_agent_file

SMALL = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
             critic_hidden=(32, 32))


def small(env="CartPoleNoVel-v1", **kw):
    return NeuroFlow(env, **{**SMALL, **kw})


def params(agent):
    mods = [agent.actor, agent.critics, agent.critic_targets]
    return [p.detach().clone() for m in mods for p in m.state_dict().values()]


def rollout(agent, env_id, steps=40):
    """Deterministic actions and recurrent states over one seeded episode."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=5)
    state, actions, states = None, [], []
    for _ in range(steps):
        action, state = agent.predict(obs, state, deterministic=True)
        actions.append(np.asarray(action))
        states.append(state.copy())
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return np.stack(actions), np.stack(states)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPoleNoVel-v1"])
def test_round_trip_gives_identical_actions_and_states(tmp_path, env_id):
    agent = small(env_id, critic_trains_state=True, normalize_observations=True)
    agent.learn(80)
    path = agent.save(tmp_path / "agent")
    assert path == tmp_path / "agent.safetensors"
    loaded = NeuroFlow.load(path)
    for a, b in zip(rollout(agent, env_id), rollout(loaded, env_id), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(params(agent), params(loaded), strict=True):
        assert torch.equal(a, b)
    assert loaded.num_timesteps == agent.num_timesteps == 80
    assert loaded.alpha == agent.alpha
    assert loaded.config == agent.config


@pytest.mark.parametrize("env_id,extra", [
    ("Pendulum-v1", {}),
    ("CartPoleNoVel-v1", {"critic_trains_state": True, "n_step": 2}),
    ("Pendulum-v1", {"critic_encoder": "own", "n_envs": 2, "normalize_observations": True}),
    ("CartPole-v1", {"buffer_size": 45}),  # the ring wraps around before the save
    ("CartPoleNoVel-v1", {"cell": "gru", "critic_encoder": "own"}),  # gated baselines
    ("Pendulum-v1", {"cell": "lstm", "n_envs": 2}),
    ("CartPoleNoVel-v1", {"actor_dense_recurrence": True, "actor_mixed_memory": True,
                          "actor_self_synapse_init": 0.5}),  # the memory options
    ("CartPoleNoVel-v1", {"actor_cfc_mode": "carry"}),  # the carried state
])
def test_resume_is_exact(tmp_path, env_id, extra):
    """Stop at step k, save with the buffer, load, continue: the same parameters, losses,
    replay contents and actions as the uninterrupted run with the same seed."""
    steps = 60  # learning starts at 32: both halves train, the first one acts randomly too
    uninterrupted = small(env_id, **extra)
    uninterrupted.learn(steps)
    uninterrupted.learn(steps)

    first = small(env_id, **extra)
    first.learn(steps)
    path = first.save(tmp_path / "ckpt.safetensors", include_buffer=True)
    del first
    torch.manual_seed(123)  # the loaded agent must not depend on the global generator
    np.random.seed(123)
    resumed = NeuroFlow.load(path)
    resumed.learn(steps)

    for a, b in zip(params(uninterrupted), params(resumed), strict=True):
        assert torch.equal(a, b)
    assert resumed.last_losses == uninterrupted.last_losses
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    assert resumed.n_updates == uninterrupted.n_updates
    np.testing.assert_array_equal(resumed.buffer.actions, uninterrupted.buffer.actions)
    np.testing.assert_array_equal(resumed.buffer.obs, uninterrupted.buffer.obs)
    np.testing.assert_array_equal(resumed.driver.action_log.array(),
                                  uninterrupted.driver.action_log.array())


def test_without_the_buffer_the_loaded_agent_starts_new_episodes(tmp_path):
    agent = small("CartPole-v1")
    agent.learn(50)
    loaded = NeuroFlow.load(agent.save(tmp_path / "a"))
    assert len(loaded.buffer) == 0 and loaded.driver.obs is None
    loaded.learn(40)
    assert loaded.num_timesteps == 90


def test_an_interrupted_write_leaves_the_previous_file_loadable(tmp_path, monkeypatch):
    agent = small("CartPole-v1")
    agent.learn(40)
    path = agent.save(tmp_path / "agent.safetensors")
    before = path.read_bytes()
    agent.learn(40)

    def crash(self, data):  # write half the bytes, then die
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(Path, "write_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        agent.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert NeuroFlow.load(path).num_timesteps == 40


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    bad = tmp_path / "agent.safetensors"
    bad.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        NeuroFlow.load(bad)
    assert not marker.exists()
    # the same payload saved as a torch checkpoint is refused the same way
    torch.save({"actor": payload}, bad)
    with pytest.raises(ValueError, match="not a saved velora_ens agent"):
        NeuroFlow.load(bad)
    assert not marker.exists()


def test_truncated_tampered_and_foreign_files_are_refused(tmp_path):
    agent = small("CartPole-v1")
    agent.learn(40)
    path = agent.save(tmp_path / "agent.safetensors")
    data = path.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated or another format"):
        NeuroFlow.load(truncated)

    tampered = tmp_path / "tampered.safetensors"
    changed = bytearray(data)
    changed[-3] ^= 0xFF  # inside the last tensor's bytes
    tampered.write_bytes(bytes(changed))
    with pytest.raises(ValueError, match="checksum"):
        NeuroFlow.load(tampered)

    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a saved velora_ens agent"):
        NeuroFlow.load(foreign)

    with pytest.raises(FileNotFoundError, match="no saved agent"):
        NeuroFlow.load(tmp_path / "missing.safetensors")


def test_the_json_description_is_readable_and_names_the_format(tmp_path):
    agent = small("CartPole-v1", learning_rate="lin_1e-3")
    meta, tensors = read_agent_file(agent.save(tmp_path / "a"))
    assert meta["format"] == "velora_ens.agent/1"
    assert meta["env_id"] == "CartPole-v1"
    assert meta["config"]["learning_rate"] == "lin_1e-3"
    assert json.loads(json.dumps(meta)) == meta
    assert "actor.net.cell.ff1.weight" in tensors or any(k.startswith("actor.") for k in tensors)


def test_env_instances_spaces_and_schedules(tmp_path):
    agent = small(gym.make("CartPole-v1"))
    path = agent.save(tmp_path / "inst")
    with pytest.raises(ValueError, match="pass env="):
        NeuroFlow.load(path)
    assert NeuroFlow.load(path, env=gym.make("CartPole-v1")).env_id is None
    with pytest.raises(ValueError, match="observation space"):
        NeuroFlow.load(path, env=gym.make("Acrobot-v1"))
    with pytest.raises(ValueError, match="unknown NeuroFlow arguments"):
        NeuroFlow.load(path, env=gym.make("CartPole-v1"), no_such_option=1)

    scheduled = small("CartPole-v1", learning_rate=lambda progress: 1e-3 * progress)
    path = scheduled.save(tmp_path / "sched")
    with pytest.warns(UserWarning, match="learning-rate callable"):
        loaded = NeuroFlow.load(path)
    assert loaded.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    loaded = NeuroFlow.load(path, learning_rate=5e-4)
    assert loaded.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_lin_learning_rate_strings():
    agent = small("CartPole-v1", learning_rate="lin_2e-3")
    assert agent.lr_schedule(0.5) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="'fast' is not a schedule"):
        small("CartPole-v1", learning_rate="fast")


def test_only_the_filled_part_of_the_buffer_is_written(tmp_path):
    agent = small("Pendulum-v1")  # buffer_size 1,000,000: about 100 MB if written whole
    agent.learn(60)
    path = agent.save(tmp_path / "a", include_buffer=True)
    assert path.stat().st_size < 2_000_000
    meta, _ = read_agent_file(path)
    assert meta["buffer_steps_stored"] == 60
    loaded = NeuroFlow.load(path)
    np.testing.assert_array_equal(loaded.buffer.obs, agent.buffer.obs)
    np.testing.assert_array_equal(loaded.buffer.states, agent.buffer.states)


def test_resume_is_exact_after_a_reset_num_timesteps_call(tmp_path):
    """``learn(reset_num_timesteps=True)`` resets the environments with the seed again:
    the action log must restart there, or replaying it on load rebuilds the wrong state."""
    uninterrupted = small("CartPole-v1")
    uninterrupted.learn(50)
    uninterrupted.learn(40, reset_num_timesteps=True)
    uninterrupted.learn(40)

    first = small("CartPole-v1")
    first.learn(50)
    first.learn(40, reset_num_timesteps=True)
    path = first.save(tmp_path / "ckpt", include_buffer=True)
    resumed = NeuroFlow.load(path)
    resumed.learn(40)
    for a, b in zip(params(uninterrupted), params(resumed), strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(resumed.buffer.actions, uninterrupted.buffer.actions)
