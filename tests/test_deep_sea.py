"""DeepSea: bsuite's solved criterion (numpy only) and the env (needs the ``deepsea`` extra)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.deep_sea import (
    INSTALL_HINT,
    FlattenGrid,
    deep_sea_beats_dithering,
    deep_sea_solved_episode,
    make_deep_sea,
    reached_treasure,
)


def _needs_extra() -> None:
    pytest.importorskip("bsuite")
    pytest.importorskip("shimmy")


# --- the solved criterion, without bsuite ---------------------------------------------------


def test_solved_episode_worked_example():
    # 20 bad episodes, then good ones: the fraction of bad ones is 20 / k, below 0.9 from
    # k = 23 (20 / 22 = 0.909, 20 / 23 = 0.870). bsuite's logger records episode 20 (still
    # 1.0) and then 25 (0.8), so bsuite reports 25.
    bad = [True] * 20 + [False] * 30
    assert deep_sea_solved_episode(bad, log_every=True) == 23
    assert deep_sea_solved_episode(bad) == 25
    assert deep_sea_solved_episode(bad, num_episodes=22, log_every=True) is None
    assert deep_sea_solved_episode(bad, num_episodes=24) is None  # 23, 24 are not logged
    assert deep_sea_solved_episode(bad, threshold=0.5, log_every=True) == 41  # 20/41 < 0.5
    assert deep_sea_solved_episode(np.array(bad, dtype=int)) == 25


def test_solved_episode_edge_cases():
    assert deep_sea_solved_episode([False, True, True]) == 1  # a good first episode: 0 < 0.9
    assert deep_sea_solved_episode([True] * 100) is None
    assert deep_sea_solved_episode([]) is None


def test_solved_episode_rejects_bad_input():
    with pytest.raises(ValueError, match="booleans"):
        deep_sea_solved_episode([0.99, 0.0])  # returns, not bad-episode flags
    with pytest.raises(ValueError, match="1-D"):
        deep_sea_solved_episode([[True]])
    with pytest.raises(ValueError, match="1.5"):
        deep_sea_solved_episode([True], threshold=1.5)
    with pytest.raises(ValueError, match="0"):
        deep_sea_solved_episode([True], num_episodes=0)


def test_beats_dithering_is_bsuite_score():
    assert deep_sea_beats_dithering(1123, size=10)  # < 2**10 + 100 = 1124
    assert not deep_sea_beats_dithering(1124, size=10)
    assert not deep_sea_beats_dithering(None, size=10)
    with pytest.raises(ValueError, match="size"):
        deep_sea_beats_dithering(3, size=0)


def test_reached_treasure_from_returns():
    size = 7
    assert reached_treasure(1.0 - size * 0.01 / size)  # 0.99: all "right", treasure
    assert not reached_treasure(0.0)  # always "left"
    assert not reached_treasure(-(size - 1) * 0.01 / size)  # all but the last "right"
    with pytest.raises(ValueError, match="unscaled_move_cost"):
        reached_treasure(0.0, unscaled_move_cost=1.0)
    with pytest.raises(ValueError, match="nan"):
        reached_treasure(float("nan"))


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # bsuite's pandas calls
def test_solved_episode_matches_bsuite_analysis(monkeypatch):
    pytest.importorskip("bsuite")
    pd = pytest.importorskip("pandas")
    analysis = pytest.importorskip("bsuite.experiments.deep_sea.analysis")
    from bsuite.utils.wrappers import _logarithmic_logging

    from envs.deep_sea import _bsuite_logged

    episodes = np.arange(1, 20_001)
    expected = [_logarithmic_logging(int(e)) for e in episodes]
    np.testing.assert_array_equal(_bsuite_logged(episodes), expected)

    # find_solution calls Series.append, removed in pandas 2; give it back for the test.
    if not hasattr(pd.Series, "append"):
        monkeypatch.setattr(pd.Series, "append", lambda s, o: pd.concat([s, o]), raising=False)
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(12):
        n = 12_000
        p_bad = np.clip(np.linspace(1.0, rng.uniform(0.7, 1.0), n), 0, 1)  # some never solve
        bad = rng.random(n) < p_bad
        bad[: rng.integers(0, 200)] = True
        for log_every in (True, False):
            rows = episodes[:n] if log_every else episodes[:n][_bsuite_logged(episodes[:n])]
            df = pd.DataFrame({"episode": rows, "size": 10,
                               "total_bad_episodes": np.cumsum(bad)[rows - 1]})
            sol = analysis.find_solution(df, merge=False).iloc[0]
            ours = deep_sea_solved_episode(bad, log_every=log_every)
            assert ours == (int(sol.episode) if sol.solved else None), (trial, log_every)
            outcomes.add((log_every, ours is None))
    assert len(outcomes) == 4  # solved and unsolved runs, with both logging schedules


# --- without the extra ------------------------------------------------------------------------


def test_missing_extra_is_a_clear_error(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("bsuite", "shimmy")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "bsuite", None)
    with pytest.raises(ModuleNotFoundError, match="deepsea") as info:
        make_deep_sea(size=5)
    assert INSTALL_HINT in str(info.value)
    with pytest.raises(ValueError, match="DeepSea-v0.*velora_ens\\[deepsea\\]"):
        envs.make_env("DeepSea-v0", size=5)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="0"):
        make_deep_sea(size=0)
    with pytest.raises(ValueError, match="human"):
        make_deep_sea(size=5, render_mode="human")
    with pytest.raises(ValueError, match="square 2-D Box"):
        FlattenGrid(gym.make("CartPole-v1"))


def test_importing_envs_loads_neither_bsuite_nor_torch():
    code = ("import sys, envs; print(sorted(m for m in ('bsuite', 'shimmy', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_deep_sea_id_is_registered():
    spec = gym.spec("DeepSea-v0")
    assert spec.entry_point == "envs.deep_sea:make_deep_sea"
    assert spec.kwargs == {"size": 20} and spec.max_episode_steps is None


# --- the env (needs the extra) -----------------------------------------------------------------


def test_gym_make_gives_a_flat_float32_grid():
    _needs_extra()
    env = gym.make("DeepSea-v0", size=5, seed=0)
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (25,), np.float32)
    assert env.action_space == gym.spaces.Discrete(2)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (25,) and obs[0] == 1.0 and obs.sum() == 1.0
    assert gym.make("DeepSea-v0").observation_space.shape == (400,)  # size 20 by default


def test_flattened_observation_is_the_grid_flattened():
    _needs_extra()
    import shimmy  # noqa: F401  (registers bsuite/deep_sea-v0)

    size = 6
    flat = gym.make("DeepSea-v0", size=size, seed=4)
    grid = gym.make("bsuite/deep_sea-v0", size=size, seed=4, mapping_seed=4)  # same task
    assert grid.observation_space.shape == (size, size)
    rng = np.random.default_rng(0)
    f, _ = flat.reset(seed=1)
    g, _ = grid.reset(seed=1)
    for _ in range(size):
        np.testing.assert_array_equal(f, g.reshape(-1))
        action = int(rng.integers(2))
        f, rf, *_ = flat.step(action)
        g, rg, *_ = grid.step(action)
        assert rf == rg
    np.testing.assert_array_equal(f, g.reshape(-1))
    assert not f.any()  # the last observation is all zeros


def test_an_episode_lasts_exactly_size_steps():
    _needs_extra()
    size = 7
    env = gym.make("DeepSea-v0", size=size, seed=0)
    env.action_space.seed(0)
    for episode in range(5):
        env.reset(seed=episode)
        for t in range(1, size + 1):
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            assert not truncated
            assert terminated == (t == size)
            if t < size:  # one-hot at row t
                assert obs.reshape(size, size)[t].sum() == 1.0 and obs.sum() == 1.0


def test_only_the_mapped_right_path_reaches_the_treasure():
    _needs_extra()
    size = 5
    env = gym.make("DeepSea-v0", size=size, seed=2)
    mapping = env.unwrapped._action_mapping  # action == mapping[row, col] moves right
    optimal = tuple(int(mapping[t, t]) for t in range(size))  # the diagonal
    found = []
    for actions in itertools.product((0, 1), repeat=size):
        env.reset()
        total, rewards = 0.0, []
        for a in actions:
            _, reward, terminated, _, _ = env.step(a)
            rewards.append(reward)
            total += reward
        assert terminated
        if reached_treasure(total):
            found.append(actions)
            assert total == pytest.approx(0.99)
            assert rewards[-1] == pytest.approx(1.0 - 0.01 / size)
    assert found == [optimal]
    # bsuite counts every other episode as bad.
    assert env.unwrapped.bsuite_info()["total_bad_episodes"] == 2**size - 1


def test_the_seed_fixes_the_action_mapping():
    _needs_extra()

    def mapping(**kw):
        return gym.make("DeepSea-v0", size=10, **kw).unwrapped._action_mapping

    np.testing.assert_array_equal(mapping(seed=3), mapping(seed=3))
    assert not np.array_equal(mapping(seed=3), mapping(seed=4))
    np.testing.assert_array_equal(mapping(seed=3, mapping_seed=42),
                                  mapping(seed=4, mapping_seed=42))


def test_vector_env_runs_and_records_episodes():
    _needs_extra()
    size = 4
    venv = envs.make_vec_env("DeepSea-v0", n_envs=2, seed=0, size=size)
    venv.reset()
    for _ in range(size):
        *_, terminated, truncated, info = venv.step(venv.action_space.sample())
    assert terminated.all() and not truncated.any()
    np.testing.assert_array_equal(info["episode"]["l"], [size, size])
    venv.close()
