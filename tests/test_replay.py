"""The sequence replay buffer: consecutive steps, episode flags, ring wrap-around."""

from __future__ import annotations

import numpy as np
import pytest

from agents import SequenceReplayBuffer


def fill(buffer: SequenceReplayBuffer, n_steps: int, episode_lengths: list[int]) -> None:
    """Write streams whose obs is [global step, episode id]; episodes of given lengths."""
    for e in range(buffer.n_envs):
        length = episode_lengths[e]
        for step in range(n_steps):
            t_in_ep = step % length
            obs = np.array([step, step // length], np.float32)
            buffer.add(np.array([e]), obs[None], np.array([[t_in_ep]], np.float32),
                       np.array([float(e)]), (obs + [1, 0])[None],
                       np.array([float(t_in_ep == length - 1)]), np.array([float(t_in_ep == 0)]),
                       np.full((1, 3), step, np.float32))


def test_sequences_are_consecutive_steps_of_one_stream_and_flag_episode_starts():
    buf = SequenceReplayBuffer(capacity=50, n_envs=3, obs_dim=2, action_dim=1, state_dim=3)
    fill(buf, 120, [7, 5, 11])  # wraps the ring more than twice
    rng = np.random.default_rng(0)
    batch = buf.sample(400, 9, rng)
    obs = batch.obs.numpy()
    steps, episodes = obs[..., 0], obs[..., 1]
    # Consecutive steps, never across the ring's seam.
    np.testing.assert_array_equal(np.diff(steps, axis=1), 1)
    # Only the 50 newest steps of each stream survive the wrap-around.
    assert steps.min() >= 120 - 50 and steps.max() <= 119
    # The episode id changes exactly where an episode starts.
    changes = np.diff(episodes, axis=1) != 0
    np.testing.assert_array_equal(changes, batch.episode_start.numpy()[:, 1:] == 1)
    # Stream identity is kept (the reward column holds the stream index).
    rewards = batch.rewards.numpy()
    assert (rewards == rewards[:, :1]).all()
    # The stored state is the one written with the sequence's first step.
    np.testing.assert_array_equal(batch.start_state.numpy()[:, 0], steps[:, 0])


def test_sampling_is_uniform_over_windows():
    buf = SequenceReplayBuffer(capacity=100, n_envs=2, obs_dim=2, action_dim=1, state_dim=3)
    fill(buf, 10, [100, 100])  # stream 0 and 1 hold 10 steps each
    for _ in range(20):  # stream 1 gets 20 more steps
        buf.add(np.array([1]), np.zeros((1, 2)), np.zeros((1, 1)), np.array([1.0]),
                np.zeros((1, 2)), np.zeros(1), np.zeros(1), np.zeros((1, 3)))
    env, idx = buf.sample_indices(30000, 5, np.random.default_rng(1))
    # Windows of length 5: stream 0 has 6, stream 1 has 26.
    assert abs((env == 0).mean() - 6 / 32) < 0.01
    starts0 = idx[env == 0, 0]
    counts = np.bincount(starts0, minlength=6)
    assert counts.min() > 0.8 * counts.mean()


def test_sampling_too_early_is_refused():
    buf = SequenceReplayBuffer(capacity=10, n_envs=1, obs_dim=2, action_dim=1, state_dim=3)
    fill(buf, 3, [5])
    assert not buf.can_sample(4)
    with pytest.raises(ValueError, match="4 steps"):
        buf.sample(2, 4, np.random.default_rng(0))


@pytest.mark.parametrize("n_steps", [30, 75])  # before and after the ring wraps
def test_single_stream_shortcut_equals_the_general_index_computation(n_steps):
    """One stream skips the per-stream bookkeeping; it must draw the same windows as the
    general computation from the same random numbers, and sample every field intact."""
    buf = SequenceReplayBuffer(capacity=40, n_envs=1, obs_dim=2, action_dim=1, state_dim=3)
    fill(buf, n_steps, [6])
    env, idx = buf.sample_indices(64, 7, np.random.default_rng(5))
    size, pos = int(buf.sizes[0]), int(buf.pos[0])
    flat = np.random.default_rng(5).integers(0, size - 7 + 1, size=64)
    oldest = (pos - size) % buf.capacity
    np.testing.assert_array_equal(env, 0)
    np.testing.assert_array_equal(idx, (oldest + flat[:, None] + np.arange(7)) % buf.capacity)
    batch = buf.sample(64, 7, np.random.default_rng(5))
    for field in ("obs", "actions", "rewards", "next_obs", "terminated", "episode_start"):
        np.testing.assert_array_equal(getattr(batch, field).numpy(),
                                      getattr(buf, field)[0, idx], err_msg=field)
        assert getattr(batch, field).is_contiguous()
    np.testing.assert_array_equal(batch.start_state.numpy(), buf.states[0, idx[:, 0]])
