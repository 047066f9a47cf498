"""The envs package: NoVel ids, wrappers and the vector-env factory."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import MaskVelocityWrapper, ObservationNoiseWrapper, make_env, make_vec_env


@pytest.mark.parametrize(
    "novel_id, base_id, masked",
    [
        ("CartPoleNoVel-v1", "CartPole-v1", (1, 3)),
        ("PendulumNoVel-v1", "Pendulum-v1", (2,)),
        ("MountainCarContinuousNoVel-v0", "MountainCarContinuous-v0", (1,)),
    ],
)
def test_novel_ids_mask_exactly_the_velocity_entries(novel_id, base_id, masked):
    novel, base = make_env(novel_id), gym.make(base_id)
    obs_n, _ = novel.reset(seed=3)
    obs_b, _ = base.reset(seed=3)
    for _ in range(5):
        action = base.action_space.sample()
        obs_n, *_ = novel.step(action)
        obs_b, *_ = base.step(action)
    kept = [i for i in range(obs_b.shape[0]) if i not in masked]
    np.testing.assert_array_equal(obs_n[kept], obs_b[kept])
    np.testing.assert_array_equal(obs_n[list(masked)], 0.0)
    assert np.any(obs_b[list(masked)] != 0.0)  # the masked entries did carry information
    assert novel.spec.max_episode_steps == base.spec.max_episode_steps


def test_lunar_lander_novel_is_registered():
    assert "LunarLanderContinuousNoVel-v3" in gym.registry


def test_mask_velocity_wrapper_rejects_unknown_env_and_bad_indices():
    with pytest.raises(ValueError, match="Acrobot-v1"):
        MaskVelocityWrapper(gym.make("Acrobot-v1"))
    with pytest.raises(ValueError, match=r"\[7\]"):
        MaskVelocityWrapper(gym.make("CartPole-v1"), indices=[7])


def test_observation_noise_has_the_requested_std_and_is_seeded():
    env = ObservationNoiseWrapper(gym.make("CartPole-v1"), std=0.5)
    clean = gym.make("CartPole-v1")
    diffs = []
    for seed in range(200):
        noisy_obs, _ = env.reset(seed=seed)
        clean_obs, _ = clean.reset(seed=seed)
        diffs.append(noisy_obs - clean_obs)
    diffs = np.array(diffs)
    assert abs(diffs.std() - 0.5) < 0.05 and abs(diffs.mean()) < 0.05
    a, _ = env.reset(seed=11)
    b, _ = env.reset(seed=11)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="-1"):
        ObservationNoiseWrapper(gym.make("CartPole-v1"), std=-1)


def test_make_env_unknown_id_is_a_clear_error():
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make_env("NoSuchEnv-v0")


def test_make_vec_env_seeds_copies_and_records_episodes():
    a = make_vec_env("CartPoleNoVel-v1", 3, seed=5)
    b = make_vec_env("CartPoleNoVel-v1", 3, seed=5)
    obs_a, _ = a.reset(seed=5)
    obs_b, _ = b.reset(seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.allclose(obs_a[0], obs_a[1])  # each copy has its own seed
    seen = False
    for _ in range(200):
        *_, info = a.step(a.action_space.sample())
        seen |= "episode" in info
    assert seen
    with pytest.raises(ValueError, match="n_envs"):
        make_vec_env("CartPole-v1", 0)


def test_envs_package_does_not_import_torch():
    code = "import sys, envs; envs.make_env('CartPoleNoVel-v1'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert envs.NOVEL_IDS["PendulumNoVel-v1"] == "Pendulum-v1"
