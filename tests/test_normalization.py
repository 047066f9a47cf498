"""Running observation normalisation (SB3 VecNormalize's statistics) and its use in NeuroFlow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import NeuroFlow
from agents.common.normalization import ObservationNormalizer


def test_batched_updates_equal_the_statistics_of_all_rows():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) * [1, 10, 0.01] for n in (1, 7, 50, 4)]
    norm = ObservationNormalizer(3)
    for batch in batches:
        norm.update(batch)
    rows = np.concatenate(batches)
    # the prior (mean 0, var 1) is a pseudo-sample of weight 1e-4: weighted statistics
    n, w = len(rows), 1e-4
    mean = rows.sum(0) / (n + w)
    var = (((rows - mean) ** 2).sum(0) + w * (1.0 + mean**2)) / (n + w)
    np.testing.assert_allclose(norm.mean.numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(norm.var.numpy(), var, rtol=1e-10)
    assert float(norm.count) == pytest.approx(len(rows) + 1e-4)
    x = torch.as_tensor(rows[:5], dtype=torch.float32)
    expected = (rows[:5] - mean) / np.sqrt(var + 1e-8)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-3, atol=1e-4)


def test_outputs_are_clipped_and_bad_clip_is_refused():
    norm = ObservationNormalizer(2, clip=3.0)
    norm.update(np.array([[0.0, 0.0], [2.0, 2.0]]))  # mean 1, var 1 (nearly)
    out = norm(torch.tensor([[100.0, -100.0]]))
    torch.testing.assert_close(out, torch.tensor([[3.0, -3.0]]))
    with pytest.raises(ValueError, match="clip"):
        ObservationNormalizer(2, clip=0.0)


def test_neuroflow_acts_and_trains_on_normalised_observations():
    agent = NeuroFlow("Pendulum-v1", seed=0, normalize_observations=True, learning_starts=32,
                      batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
                      critic_hidden=(32, 32))
    agent.learn(64)
    norm = agent.obs_normalizer
    # every collected observation (the reset one and 64 steps) went into the statistics
    assert float(norm.count) == pytest.approx(65 + 1e-4)
    stored = agent.buffer.obs[0, :64]
    np.testing.assert_allclose(norm.mean.numpy(), np.concatenate(
        [stored, agent.buffer.next_obs[0, 63:64]]).mean(0), rtol=1e-5, atol=1e-6)
    # predict feeds the actor the normalised observation
    obs = np.array([0.5, -0.5, 4.0], dtype=np.float32)
    action, _ = agent.predict(obs, deterministic=True)
    with torch.no_grad():
        out, _ = agent.actor(norm(torch.as_tensor(obs[None])), None)
        raw_out, _ = agent.actor(torch.as_tensor(obs[None]), None)
    expected = agent.driver.actions.to_env(agent.actor.act(out, True).numpy())[0]
    np.testing.assert_allclose(action, expected, rtol=1e-6)
    raw_action = agent.driver.actions.to_env(agent.actor.act(raw_out, True).numpy())[0]
    assert not np.allclose(action, raw_action)


def test_reward_scaling_matches_sb3_vecnormalize():
    """The same discounted-return statistics and scaled rewards as SB3's VecNormalize
    (its RunningMeanStd, updated then applied, returns reset where an episode ends);
    copies left out of a step (reset rows) neither update nor get a reward."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    from agents.common.normalization import RewardNormalizer

    rng = np.random.default_rng(1)
    gamma, n_envs = 0.9, 3
    ours = RewardNormalizer(n_envs, gamma, clip=10.0)
    ret_rms, returns = RunningMeanStd(shape=()), np.zeros(n_envs)
    for t in range(60):
        rewards = rng.normal(-5.0, 3.0, n_envs)
        dones = rng.random(n_envs) < 0.1
        rows = np.arange(n_envs) if t % 7 else np.array([0, 2])  # copy 1 resets here
        returns[rows] = returns[rows] * gamma + rewards[rows]
        ret_rms.update(returns[rows])
        expected = np.clip(rewards[rows] / np.sqrt(ret_rms.var + 1e-8), -10, 10)
        returns[rows[dones[rows]]] = 0.0
        got = ours.scale(rewards, dones, rows)
        np.testing.assert_allclose(got[rows], expected, rtol=1e-5)
        assert np.all(got[np.setdiff1d(np.arange(n_envs), rows)] == 0)
    np.testing.assert_allclose(ours.returns.numpy(), returns, rtol=1e-12)
