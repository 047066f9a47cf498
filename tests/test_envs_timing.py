"""The IrregularTiming wrapper and the irregularly timed NoVel ids."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv, PendulumEnv

from envs import (
    DROPPED_KEY,
    ELAPSED_STEPS_KEY,
    ELAPSED_TIME_KEY,
    IRREGULAR_IDS,
    AppendElapsedTime,
    IrregularTiming,
    make_env,
)

# Chi-square critical values at significance 0.001, by degrees of freedom.
CHI2_CRITICAL = {2: 13.82, 3: 16.27}
NO_TORQUE = np.zeros(1, np.float32)  # a Pendulum action


class CountSteps(gym.Wrapper):
    """Count the simulator steps taken by the wrapped env."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return self.env.step(action)


def _pendulum(**kwargs) -> IrregularTiming:
    # The bare PendulumEnv never terminates nor truncates: every block runs in full.
    return IrregularTiming(PendulumEnv(), **kwargs)


def _elapsed_steps(env: gym.Env, n: int, seed: int) -> np.ndarray:
    env.reset(seed=seed)
    return np.array([env.step(NO_TORQUE)[4][ELAPSED_STEPS_KEY] for _ in range(n)])


def _chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())


def test_repeats_are_uniform_in_the_given_range():
    k = _elapsed_steps(_pendulum(min_repeat=2, max_repeat=5), 4000, seed=0)
    assert set(k) == {2, 3, 4, 5}
    counts = np.bincount(k, minlength=6)[2:]
    assert _chi_square(counts, np.full(4, 0.25)) < CHI2_CRITICAL[3]


def test_repeat_probabilities_set_the_distribution():
    p = np.array([0.6, 0.3, 0.1])
    env = _pendulum(min_repeat=2, max_repeat=4, repeat_probabilities=p)
    k = _elapsed_steps(env, 3000, seed=1)
    assert set(k) == {2, 3, 4}
    counts = np.bincount(k, minlength=5)[2:]
    assert _chi_square(counts, p) < CHI2_CRITICAL[2]
    assert _chi_square(counts, np.full(3, 1 / 3)) > 100  # and not the uniform one
    assert env.mean_elapsed_steps == pytest.approx(2 * 0.6 + 3 * 0.3 + 4 * 0.1)


def test_timings_are_seeded_independently_of_the_inner_env():
    a, b = _pendulum(), _pendulum()
    first = _elapsed_steps(a, 100, seed=7)
    np.testing.assert_array_equal(first, _elapsed_steps(b, 100, seed=7))
    assert not np.array_equal(first, _elapsed_steps(b, 100, seed=8))
    # The inner env's generator being drawn from does not move the timing stream.
    b.reset(seed=7)
    again = []
    for _ in range(100):
        b.unwrapped.np_random.random(3)
        again.append(b.step(NO_TORQUE)[4][ELAPSED_STEPS_KEY])
    np.testing.assert_array_equal(first, again)
    # reset() without a seed continues the stream, reproducibly.
    a.reset(seed=7)
    b.reset(seed=7)
    for env in (a, b):
        for _ in range(100):
            env.step(NO_TORQUE)
        env.reset()
    next_a = [a.step(NO_TORQUE)[4][ELAPSED_STEPS_KEY] for _ in range(100)]
    next_b = [b.step(NO_TORQUE)[4][ELAPSED_STEPS_KEY] for _ in range(100)]
    assert next_a == next_b and not np.array_equal(next_a, first)


def test_same_seed_gives_the_same_observations():
    a, b = make_env("PendulumNoVelIrregular-v1"), make_env("PendulumNoVelIrregular-v1")
    actions = np.random.default_rng(0).uniform(-2, 2, size=(30, 1)).astype(np.float32)
    runs = []
    for env in (a, b):
        obs, _ = env.reset(seed=3)
        trace = [obs]
        for action in actions:
            obs, reward, *_, info = env.step(action)
            trace.append(np.append(obs, [reward, info[ELAPSED_TIME_KEY]]))
        runs.append(np.concatenate(trace))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("base, dt, seed", [(PendulumEnv, 0.05, 0), (CartPoleEnv, 0.02, 1)])
def test_elapsed_times_sum_to_the_simulated_time(base, dt, seed):
    counter = CountSteps(gym.wrappers.TimeLimit(base(), 60))
    env = IrregularTiming(counter, 1, 6)
    assert env.time_unit == "s" and env.nominal_dt == dt
    env.action_space.seed(seed)
    total_time = total_steps = 0
    for episode in range(4):
        _, info = env.reset(seed=seed + episode)
        assert info[ELAPSED_TIME_KEY] == dt and info[ELAPSED_STEPS_KEY] == 0
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            assert isinstance(info[ELAPSED_TIME_KEY], float)
            assert isinstance(info[ELAPSED_STEPS_KEY], int)
            assert info[ELAPSED_TIME_KEY] == pytest.approx(info[ELAPSED_STEPS_KEY] * dt)
            total_time += info[ELAPSED_TIME_KEY]
            total_steps += info[ELAPSED_STEPS_KEY]
            done = terminated or truncated
    assert total_steps == counter.steps > 4
    assert total_time == pytest.approx(counter.steps * dt)


def test_time_is_counted_in_steps_without_a_time_step():
    env = IrregularTiming(gym.make("MountainCarContinuous-v0"), 3, 3)
    assert env.time_unit == "steps" and env.nominal_dt == 1.0
    env.reset(seed=0)
    info = env.step(NO_TORQUE)[4]
    assert info[ELAPSED_TIME_KEY] == 3.0 and info[ELAPSED_STEPS_KEY] == 3


@pytest.mark.parametrize("base", [PendulumEnv, CartPoleEnv])
def test_reward_and_observation_are_those_of_the_repeated_action(base):
    env, copy = IrregularTiming(base(), 1, 5), base()
    env.reset(seed=4)
    copy.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(40):
        action = (rng.uniform(-2, 2, size=1).astype(np.float32) if base is PendulumEnv
                  else int(rng.integers(2)))
        obs, reward, terminated, _, info = env.step(action)
        expected = 0.0
        for _ in range(info[ELAPSED_STEPS_KEY]):
            copy_obs, copy_reward, copy_terminated, *_ = copy.step(action)
            expected += float(copy_reward)
        np.testing.assert_array_equal(obs, copy_obs)
        assert reward == pytest.approx(expected) and terminated == copy_terminated
        if terminated:
            break


def test_a_block_stops_early_when_the_inner_env_terminates():
    copy = CartPoleEnv()
    copy.reset(seed=2)
    n = 1
    while not copy.step(1)[2]:
        n += 1
    assert n < 50
    env = IrregularTiming(CartPoleEnv(), 50, 50, drop_probability=0.5)
    env.reset(seed=2)
    _, reward, terminated, truncated, info = env.step(1)
    assert terminated and not truncated
    assert info[ELAPSED_STEPS_KEY] == n and info[DROPPED_KEY] == 0
    assert info[ELAPSED_TIME_KEY] == pytest.approx(n * 0.02) and reward == n


def test_a_block_stops_early_when_the_inner_env_truncates():
    env = IrregularTiming(gym.wrappers.TimeLimit(PendulumEnv(), 7), 5, 5)
    env.reset(seed=0)
    assert env.step(NO_TORQUE)[4][ELAPSED_STEPS_KEY] == 5
    *_, truncated, info = env.step(NO_TORQUE)
    assert truncated and info[ELAPSED_STEPS_KEY] == 2


def test_drops_lengthen_the_elapsed_time_by_one_over_one_minus_p():
    n = 3000
    plain = _elapsed_steps(_pendulum(), n, seed=5)
    env = _pendulum(drop_probability=0.5)
    assert env.mean_elapsed_steps == 5.0
    env.reset(seed=5)
    infos = [env.step(NO_TORQUE)[4] for _ in range(n)]
    k = np.array([info[ELAPSED_STEPS_KEY] for info in infos])
    dropped = np.array([info[DROPPED_KEY] for info in infos])
    assert abs(plain.mean() - 2.5) < 0.1 and plain.max() == 4
    assert abs(k.mean() - 5.0) < 0.4  # E[k] / (1 - p) = 2.5 / 0.5, ~4 standard errors
    assert abs(dropped.mean() - 1.0) < 0.15  # p / (1 - p)
    assert k.max() > 4
    # After one drop the agent sees two fresh blocks: their sum takes odd values too.
    assert set(k[dropped == 1]) == set(range(2, 9))


@pytest.mark.parametrize(
    "env_id, dt, masked, limit",
    [("PendulumNoVelIrregular-v1", 0.05, [2], 200),
     ("CartPoleNoVelIrregular-v1", 0.02, [1, 3], 500)],
)
def test_registered_ids_mask_velocities_and_carry_the_elapsed_time(env_id, dt, masked, limit):
    assert env_id in IRREGULAR_IDS and env_id in gym.registry
    env = gym.make(env_id)
    assert env.spec.max_episode_steps == limit
    assert env.get_wrapper_attr("nominal_dt") == dt
    assert env.get_wrapper_attr("time_unit") == "s"
    obs, info = env.reset(seed=0)
    assert info[ELAPSED_TIME_KEY] == dt
    np.testing.assert_array_equal(obs[masked], 0.0)
    env.action_space.seed(0)
    seen = set()
    for _ in range(20):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
        np.testing.assert_array_equal(obs[masked], 0.0)
        assert info[ELAPSED_TIME_KEY] == pytest.approx(info[ELAPSED_STEPS_KEY] * dt)
        seen.add(info[ELAPSED_STEPS_KEY])
    assert seen <= {1, 2, 3, 4} and len(seen) > 1


def test_registered_limit_counts_agent_steps_not_simulator_steps():
    env = make_env("PendulumNoVelIrregular-v1", drop_probability=0.3)
    env.reset(seed=0)
    agent_steps = simulator_steps = 0
    truncated = False
    while not truncated:
        *_, truncated, info = env.step(NO_TORQUE)
        agent_steps += 1
        simulator_steps += info[ELAPSED_STEPS_KEY]
    assert agent_steps == 200 and simulator_steps > 400  # no inner 200-step cut


def test_make_kwargs_pass_through_to_the_wrapper():
    env = gym.make("CartPoleNoVelIrregular-v1", min_repeat=3, max_repeat=3, time_key="dt_s")
    _, info = env.reset(seed=0)
    assert info["dt_s"] == 0.02 and ELAPSED_TIME_KEY not in info
    info = env.step(0)[4]
    assert info[ELAPSED_STEPS_KEY] == 3 and info["dt_s"] == pytest.approx(0.06)
    env = gym.make("PendulumNoVelIrregular-v1", max_repeat=2, repeat_probabilities=[0, 1],
                   g=3.0, max_episode_steps=5)
    assert env.unwrapped.g == 3.0 and env.spec.max_episode_steps == 5
    env.reset(seed=0)
    assert env.step(NO_TORQUE)[4][ELAPSED_STEPS_KEY] == 2
    with pytest.raises(ValueError, match="min_repeat.*0"):
        gym.make("CartPoleNoVelIrregular-v1", min_repeat=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_repeat": 0}, r"min_repeat must be an integer >= 1, got 0"),
        ({"min_repeat": 1.5}, r"min_repeat.*1\.5"),
        ({"min_repeat": True}, r"min_repeat.*True"),
        ({"min_repeat": 3, "max_repeat": 2}, r"max_repeat.*>= min_repeat \(= 3\), got 2"),
        ({"max_repeat": "4"}, r"max_repeat.*'4'"),
        ({"drop_probability": 1.0}, r"drop_probability.*\[0, 1\), got 1\.0"),
        ({"drop_probability": -0.1}, r"drop_probability.*-0\.1"),
        ({"drop_probability": float("nan")}, r"drop_probability.*nan"),
        ({"repeat_probabilities": [0.5, 0.3, 0.3, 0.1]}, r"sum to 1.*sum 1\.2"),
        ({"repeat_probabilities": [0.5, 0.5]}, r"4 numbers.*1\.\.4.*\[0\.5, 0\.5\]"),
        ({"repeat_probabilities": [1.5, -0.5, 0, 0]}, r">= 0.*-0\.5"),
        ({"time_key": ELAPSED_STEPS_KEY}, r"time_key.*'elapsed_steps'"),
    ],
)
def test_bad_arguments_are_value_errors_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IrregularTiming(PendulumEnv(), **kwargs)


def test_irregular_ids_do_not_import_torch():
    code = ("import sys, envs, gymnasium as gym; gym.make('CartPoleNoVelIrregular-v1')"
            ".reset(seed=0); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- AppendElapsedTime ----------------------------------------------------------------------
class RecordInfo(gym.Wrapper):
    """Keep the info of every reset and step of the wrapped env."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.infos: list[dict] = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.infos.append(dict(info))
        return obs, info

    def step(self, action):
        *out, info = self.env.step(action)
        self.infos.append(dict(info))
        return (*out, info)


class FixedInfo(gym.Wrapper):
    """Report ``info`` (a dict, or one per step from a list) at reset and every step."""

    def __init__(self, env: gym.Env, infos: list[dict]) -> None:
        super().__init__(env)
        self.infos, self.n = infos, 0

    def reset(self, **kwargs):
        obs, _ = self.env.reset(**kwargs)
        self.n = 0
        return obs, dict(self.infos[0])

    def step(self, action):
        *out, _ = self.env.step(action)
        self.n += 1
        return (*out, dict(self.infos[min(self.n, len(self.infos) - 1)]))


@pytest.mark.parametrize("env_id, dt", [("PendulumNoVelIrregular-v1", 0.05),
                                        ("CartPoleNoVelIrregular-v1", 0.02)])
def test_appended_time_is_the_inner_info_over_scale(env_id, dt):
    recorder = RecordInfo(make_env(env_id, drop_probability=0.2))
    env = AppendElapsedTime(recorder, scale=dt)
    plain = make_env(env_id, drop_probability=0.2)  # the same task, unwrapped, same seeds
    inner_space = plain.observation_space
    assert env.observation_space.shape == (inner_space.shape[0] + 1,)
    assert env.observation_space.dtype == np.float32
    env.action_space.seed(0)
    checked = 0
    for episode in range(3):
        obs, info = env.reset(seed=10 + episode)
        plain_obs, plain_info = plain.reset(seed=10 + episode)
        assert obs.dtype == np.float32 and obs in env.observation_space
        assert obs[-1] == np.float32(plain_info[ELAPSED_TIME_KEY] / dt) == np.float32(1.0)
        np.testing.assert_array_equal(obs[:-1], plain_obs)
        assert info == recorder.infos[-1] == plain_info  # info passes through unchanged
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            plain_obs, plain_reward, *_, plain_info = plain.step(action)
            expected = plain_info[ELAPSED_TIME_KEY] / dt
            assert obs[-1] == np.float32(expected)
            assert obs[-1] == np.float32(recorder.infos[-1][ELAPSED_TIME_KEY] / dt)
            assert obs[-1] == pytest.approx(plain_info[ELAPSED_STEPS_KEY])  # whole steps
            np.testing.assert_array_equal(obs[:-1], plain_obs)
            assert reward == plain_reward and obs in env.observation_space
            checked += 1
            done = terminated or truncated
    assert checked > 10


def test_appended_time_space_bounds_key_and_dtype():
    inner = gym.spaces.Box(low=np.array([-1.0, -2.0]), high=np.array([3.0, 4.0]),
                           dtype=np.float64)
    env = AppendElapsedTime(FixedInfo(PendulumEnv(), [{"t": 0.5}, {"t": 2.0}]), time_key="t",
                            scale=0.5)
    space = env.observation_space
    assert space.shape == (4,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low, [-1, -1, -8, 0])
    np.testing.assert_array_equal(space.high, [1, 1, 8, np.inf])
    assert env.reset(seed=0)[0][-1] == 1.0
    assert env.step(NO_TORQUE)[0][-1] == 4.0
    env.reset(seed=0)
    assert env.step(NO_TORQUE)[0][-1] == 4.0

    class Float64Obs(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = inner

        def observation(self, observation):
            return observation[:2].astype(np.float64)

    wide = AppendElapsedTime(FixedInfo(Float64Obs(PendulumEnv()), [{"elapsed_time": 0.1}]))
    assert wide.observation_space.dtype == np.float64
    np.testing.assert_array_equal(wide.observation_space.low, [-1, -2, 0])
    np.testing.assert_array_equal(wide.observation_space.high, [3, 4, np.inf])
    obs, _ = wide.reset(seed=0)
    assert obs.dtype == np.float64 and obs[-1] == np.float32(0.1)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3),
                                   gym.spaces.Box(0, 1, shape=(2, 3)),
                                   gym.spaces.Dict({"a": gym.spaces.Box(0, 1, shape=(2,))})])
def test_append_refuses_a_non_flat_box(space):
    class Spaced(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = space

    with pytest.raises(ValueError, match="needs a 1-D Box observation space, got"):
        AppendElapsedTime(Spaced(PendulumEnv()))


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": 0.0}, r"scale must be a finite number > 0, got 0\.0"),
    ({"scale": float("inf")}, r"scale.*inf"),
    ({"scale": True}, r"scale.*True"),
    ({"time_key": ""}, r"time_key must be a non-empty string, got ''"),
])
def test_append_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AppendElapsedTime(IrregularTiming(PendulumEnv()), **kwargs)


def test_append_names_the_step_when_info_lacks_the_key():
    env = AppendElapsedTime(PendulumEnv())
    with pytest.raises(ValueError, match=r"info has no 'elapsed_time' at reset \(step 0\)"):
        env.reset(seed=0)
    env = AppendElapsedTime(FixedInfo(PendulumEnv(), [{"elapsed_time": 0.05}] * 3 + [{}]))
    env.reset(seed=0)
    env.step(NO_TORQUE)
    env.step(NO_TORQUE)
    with pytest.raises(ValueError, match="info has no 'elapsed_time' at step 3 since the last "
                                         "reset.*IrregularTiming"):
        env.step(NO_TORQUE)
    env.reset(seed=1)  # the count restarts
    env.step(NO_TORQUE)
    for bad in (-0.1, float("nan"), "soon"):
        env = AppendElapsedTime(FixedInfo(PendulumEnv(), [{"elapsed_time": 1.0},
                                                          {"elapsed_time": bad}]))
        env.reset(seed=0)
        with pytest.raises(ValueError, match=rf"info\['elapsed_time'\] is {bad!r} at step 1 "
                                             "since the last reset; expected a finite number"):
            env.step(NO_TORQUE)
