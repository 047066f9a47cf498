"""SB3 habits a new user brings, each of which failed before (issue: "One agent base ... and
Stable-Baselines3 drop-in conformance"): file names, SB3's callbacks and vector envs,
observation spaces, the SB3 accessors, and clear errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3.common.callbacks as sb3_callbacks
import torch
from gymnasium.vector import AutoresetMode
from rl_envs import CounterEnv
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import NeuroFlow, load_agent
from agents.driver.spaces import ObservationEncoder
from envs import make_vec_env
from velora_ens.bench.report import machine

_DATA = Path(__file__).parent / "data"
SMALL = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
             critic_hidden=(16, 16))


def small(env="CartPole-v1", **kw):
    return NeuroFlow(env, **{**SMALL, **kw})


def params(agent):
    return [t.clone() for m in (agent.actor, agent.critics, agent.critic_targets)
            for t in m.state_dict().values()]


# ------------------------------------------------------------------ file names
def test_save_and_load_find_the_same_file_with_or_without_a_suffix(tmp_path):
    agent = small()
    agent.learn(40)
    assert agent.save(tmp_path / "name") == tmp_path / "name.safetensors"
    assert NeuroFlow.load(tmp_path / "name").num_timesteps == 40  # SB3's load finds it
    assert NeuroFlow.load(str(tmp_path / "name.safetensors")).num_timesteps == 40
    # a foreign suffix is kept, as SB3 keeps it (the content is safetensors)
    assert agent.save(tmp_path / "other.zip") == tmp_path / "other.zip"
    assert NeuroFlow.load(tmp_path / "other.zip").num_timesteps == 40
    with pytest.raises(FileNotFoundError, match="did you mean .*name.safetensors"):
        NeuroFlow.load(tmp_path / "name.zip")
    with pytest.raises(ValueError, match="is a directory"):
        NeuroFlow.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no saved agent"):
        NeuroFlow.load(tmp_path / "missing")


def test_sb3_checkpoint_callback_gives_loadable_files_with_the_buffer(tmp_path):
    def run():
        return small("PendulumNoVel-v1")  # 200-step episodes: a call per transition

    uninterrupted = run()
    checkpoints = sb3_callbacks.CheckpointCallback(save_freq=60, save_path=str(tmp_path),
                                                   save_replay_buffer=True,
                                                   save_vecnormalize=True)
    uninterrupted.learn(60, callback=checkpoints)
    uninterrupted.learn(40)
    model = tmp_path / "rl_model_60_steps.zip"
    buffer = tmp_path / "rl_model_replay_buffer_60_steps.pkl"
    assert model.is_file() and buffer.is_file()

    resumed = NeuroFlow.load(model)
    assert len(resumed.replay_buffer) == 0
    resumed.load_replay_buffer(buffer)
    assert len(resumed.replay_buffer) == 60
    resumed.learn(40)
    for a, b in zip(params(resumed), params(uninterrupted), strict=True):
        assert torch.equal(a, b)
    assert resumed.last_losses == uninterrupted.last_losses


# the format-1 reference (tests/data/neuroflow_format1.*) was recorded on an AMD CPU; other
# CPUs' float kernels may round the last bit differently
_ON_RECORDING_CPU = "AMD" in machine()


def _digest_after_20_steps(agent) -> str:
    agent.learn(20)
    digest = hashlib.sha256()
    for module in (agent.actor, agent.critics, agent.critic_targets):
        for key, value in module.state_dict().items():
            if not key.endswith("wiring_seed"):  # stored since, beside the masks
                digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def test_the_format_written_before_the_agent_base_still_loads(tmp_path):
    ref = json.loads((_DATA / "neuroflow_format1.json").read_text())
    agent = load_agent(_DATA / "neuroflow_format1")  # the class comes from the file
    assert isinstance(agent, NeuroFlow) and agent.num_timesteps == ref["num_timesteps"]
    obs, state = np.array(ref["obs"], np.float32), None
    for t in range(len(obs)):
        action, state = agent.predict(obs[t], state, deterministic=True)
        assert action.tolist() == ref["actions"][t]
        want = np.array(ref["states"][t], np.float32)
        if _ON_RECORDING_CPU:
            np.testing.assert_array_equal(state, want)
        else:
            np.testing.assert_allclose(state, want, rtol=1e-6, atol=1e-7)
    # saved with its buffer: training continues exactly as the code that wrote it did
    # (on the recording CPU), and exactly as the same file re-saved in today's format
    # with its buffer does (on any CPU). The agents draw from torch's global generator,
    # which a load restores, so each agent trains before the next one is loaded.
    if _ON_RECORDING_CPU:  # after the predictions above
        assert _digest_after_20_steps(agent) == ref["after_20_more_steps_sha256"]
    load_agent(_DATA / "neuroflow_format1").save(tmp_path / "resaved", include_buffer=True)
    resaved = _digest_after_20_steps(load_agent(tmp_path / "resaved"))
    assert _digest_after_20_steps(load_agent(_DATA / "neuroflow_format1")) == resaved


# ------------------------------------------------------------------ callbacks
def test_callbacks_get_sb3_names_for_the_step():
    seen = []

    class Recorder(sb3_callbacks.BaseCallback):
        def _on_step(self):
            loc = self.locals
            seen.append({k: loc[k] for k in ("infos", "rewards", "dones", "new_obs", "actions")})
            return True

    agent = small("CartPole-v1", n_envs=2)
    agent.learn(120, callback=Recorder())
    for step in seen:
        assert step["rewards"].shape == step["dones"].shape == (2,)
        assert step["new_obs"].shape == (2, 4) and step["actions"].shape == (2,)
        assert isinstance(step["infos"], list) and len(step["infos"]) == 2
    ended = [(s, i) for s in seen for i in range(2) if s["dones"][i]]
    assert ended
    for step, i in ended:
        info = step["infos"][i]
        assert info["episode"]["l"] > 0 and "terminal_observation" in info
        assert info["TimeLimit.truncated"] is False  # CartPole terminated


def test_every_sb3_callback_runs(tmp_path, capsys):
    eval_env = gym.make("CartPole-v1")
    # stop after 3 episodes
    agent = small("CartPole-v1")
    agent.learn(10_000, callback=sb3_callbacks.StopTrainingOnMaxEpisodes(max_episodes=3))
    assert agent._episode_num == 3 and agent.num_timesteps < 10_000
    # stop at the first evaluation reaching a threshold every policy reaches
    stop = sb3_callbacks.StopTrainingOnRewardThreshold(reward_threshold=1.0)
    evaluate = sb3_callbacks.EvalCallback(eval_env, callback_on_new_best=stop, eval_freq=50,
                                          n_eval_episodes=2, verbose=0)
    agent = small("CartPole-v1").learn(10_000, callback=evaluate)
    assert agent.num_timesteps <= 50
    # stop once evaluations stop improving
    no_gain = sb3_callbacks.StopTrainingOnNoModelImprovement(max_no_improvement_evals=1,
                                                             min_evals=1)
    evaluate = sb3_callbacks.EvalCallback(eval_env, callback_after_eval=no_gain, eval_freq=30,
                                          n_eval_episodes=1, verbose=0)
    small("CartPole-v1").learn(3000, callback=evaluate)
    assert no_gain.n_calls >= 2
    # every N timesteps, logging every N timesteps, SB3's rich progress bar, lists
    every = sb3_callbacks.EveryNTimesteps(n_steps=25, callback=sb3_callbacks.CheckpointCallback(
        save_freq=1, save_path=str(tmp_path)))
    logs = sb3_callbacks.LogEveryNTimesteps(n_steps=40)
    calls = []
    convert = sb3_callbacks.ConvertCallback(lambda loc, glob: calls.append(1) or True)
    agent = small("CartPole-v1", verbose=1)
    agent.learn(100, callback=sb3_callbacks.CallbackList(
        [every, logs, sb3_callbacks.ProgressBarCallback(), convert]))
    assert len(list(tmp_path.glob("rl_model_*_steps.zip"))) == 4
    assert "total_timesteps" in capsys.readouterr().out  # the logger table was written
    assert len(calls) >= 100
    names = {n for n in dir(sb3_callbacks) if n.endswith("Callback") or n.startswith("Stop")
             or n.endswith("Timesteps")}
    exercised = {"StopTrainingOnMaxEpisodes", "StopTrainingOnRewardThreshold", "EvalCallback",
                 "StopTrainingOnNoModelImprovement", "EveryNTimesteps", "LogEveryNTimesteps",
                 "ProgressBarCallback", "CallbackList", "ConvertCallback", "CheckpointCallback",
                 "BaseCallback", "EventCallback"}
    assert names <= exercised, names - exercised


# ------------------------------------------------------------------ SB3 vector envs
@pytest.mark.parametrize("terminate", [True, False])
def test_sb3_vec_env_transitions_never_mix_episodes(terminate):
    venv = DummyVecEnv([lambda: Monitor(CounterEnv(5, terminate=terminate)) for _ in range(2)])
    agent = small(venv, learning_starts=10_000, buffer_size=3000)
    agent.learn(100)
    buf = agent.buffer
    assert agent.num_timesteps == 100 and len(buf) == 100  # SB3 resets within the step
    for e in range(2):
        n = buf.sizes[e]
        obs, nxt = buf.obs[e, :n], buf.next_obs[e, :n]
        np.testing.assert_array_equal(nxt[:, 0], obs[:, 0] + 1)
        np.testing.assert_array_equal(buf.episode_start[e, :n], obs[:, 0] == 0)
        last = nxt[:, 0] == 5
        # DummyVecEnv's TimeLimit.truncated becomes truncated: only terminations stop
        # bootstrapping
        np.testing.assert_array_equal(buf.terminated[e, :n], last if terminate else 0 * last)
    # Monitor's episode statistics: 50 steps per copy, episodes of 5 steps and reward 5
    assert [(e["l"], e["r"]) for e in agent.ep_info_buffer] == [(5, 5.0)] * 20


def test_sb3_make_vec_env_episode_statistics_and_exact_resume(tmp_path):
    def make():
        return small(sb3_make_vec_env("CartPole-v1", n_envs=2, seed=0))

    a = make()
    a.learn(80)
    assert a.ep_info_buffer and a.ep_info_buffer[0]["l"] > 0  # from SB3's Monitor
    path = a.save(tmp_path / "agent", include_buffer=True)
    a.learn(40)
    b = NeuroFlow.load(path, env=sb3_make_vec_env("CartPole-v1", n_envs=2))
    b.learn(40)  # (after a: the load restores torch's global random state)
    for x, y in zip(params(a), params(b), strict=True):
        assert torch.equal(x, y)


def test_same_step_autoreset_keeps_episode_statistics():
    venv = make_vec_env("CartPole-v1", 2, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    agent = small(venv)
    agent.learn(150)
    assert agent.ep_info_buffer, "SAME_STEP puts the statistics in final_info"
    assert all(e["l"] > 0 for e in agent.ep_info_buffer)


def test_get_env_is_an_sb3_vec_env_and_using_it_restarts_the_rollout():
    agent = small("CartPole-v1", seed=3)
    agent.learn(30)
    vec_env = agent.get_env()
    assert vec_env is agent.env and vec_env.num_envs == 1
    obs = vec_env.reset()
    obs, rewards, dones, infos = vec_env.step(np.array([0]))
    assert obs.shape == (1, 4) and isinstance(infos, list)
    assert agent.driver.obs is None  # the next learn call starts from a seeded reset
    agent.learn(10)
    assert agent.num_timesteps == 40 and len(agent.driver.action_log) == 10


# ------------------------------------------------------------------ observation spaces
class SpacesEnv(gym.Env):
    """Observations of ``space`` (sampled), rewards 1, episodes of 6 steps."""

    def __init__(self, space: gym.Space) -> None:
        self.observation_space, self.action_space = space, gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), 1.0, self.t >= 6, False, {}


SPACES = {
    "Discrete": gym.spaces.Discrete(4, start=2),
    "MultiDiscrete": gym.spaces.MultiDiscrete([2, 3]),
    "MultiBinary": gym.spaces.MultiBinary(3),
    "Dict": gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "room": gym.spaces.Discrete(3),
                             "keys": gym.spaces.MultiBinary(2)}),
    "Tuple": gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(0, 1, (3,)))),
}


def _sb3_features(space, obs):
    """SB3's preprocessing of a batch, flattened and concatenated as its extractors do."""
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_sb3_features(s, obs[k]) for k, s in space.spaces.items()], 1)
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate([_sb3_features(s, obs[i]) for i, s in enumerate(space.spaces)],
                              1)
    if isinstance(space, gym.spaces.Discrete):  # SB3 one-hots obs - start? it assumes 0..n-1
        obs = np.asarray(obs) - space.start
        space = gym.spaces.Discrete(space.n)
    tensor = preprocess_obs(torch.as_tensor(np.asarray(obs)), space)
    return tensor.reshape(len(obs), -1).numpy()


@pytest.mark.parametrize("name", list(SPACES))
def test_observation_spaces_are_encoded_as_sb3_does_and_train(name, tmp_path):
    space = SPACES[name]
    space.seed(0)
    batch = [space.sample() for _ in range(5)]
    stacked = gym.vector.utils.concatenate(space, batch,
                                           gym.vector.utils.create_empty_array(space, 5))
    encoder = ObservationEncoder(space)
    np.testing.assert_array_equal(encoder.encode(stacked, batched=True),
                                  _sb3_features(space, stacked))

    agent = small(SpacesEnv(space))
    agent.learn(60)
    assert agent.n_updates > 0
    one, _ = agent.predict(batch[0], deterministic=True)
    many, _ = agent.predict(stacked, deterministic=True)
    assert np.ndim(one) == 0 and many.shape == (5,) and many[0] == one
    loaded = NeuroFlow.load(agent.save(tmp_path / "a"), env=SpacesEnv(space))
    assert loaded.predict(stacked, deterministic=True)[0].tolist() == many.tolist()


def test_observation_outside_a_discrete_space_is_named():
    agent = small(SpacesEnv(gym.spaces.Discrete(3)))
    with pytest.raises(ValueError, match=r"predict: observation \[7\] is outside Discrete\(3\)"):
        agent.predict(7)


def test_env_ids_with_a_module_prefix_import_the_module(tmp_path, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent("""
        import gymnasium as gym
        gym.register("MyCartPole-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                     max_episode_steps=50)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    agent = small("my_tasks:MyCartPole-v0")
    agent.learn(40)
    assert agent.env_id == "my_tasks:MyCartPole-v0"
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        small("no_such_module:Task-v0")


# ------------------------------------------------------------------ SB3 accessors
def test_set_env_policy_device_and_float_timesteps():
    agent = small("CartPole-v1")
    agent.learn(2e1)  # SB3 allows learn(1e4)
    assert agent.num_timesteps == 20
    with pytest.raises(ValueError, match="total_timesteps must be an integer >= 1, got 10.5"):
        agent.learn(10.5)
    agent.set_env(gym.make("CartPole-v1"))
    agent.learn(20)
    assert agent.num_timesteps == 40 and agent.env_id is None
    with pytest.raises(ValueError, match=r"observation space Box\(.*\(3,\).* differs"):
        agent.set_env("Pendulum-v1")
    with pytest.raises(ValueError, match="2 copies, the agent was built for 1"):
        agent.set_env(make_vec_env("CartPole-v1", 2))
    assert isinstance(agent.policy, torch.nn.Module) and agent.device == torch.device("cpu")
    assert small(device="cpu").device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            small(device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        small(device="abacus")


def test_get_and_set_parameters_and_set_random_seed(tmp_path):
    a, b = small(seed=1), small(seed=2)
    a.learn(50)
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    assert not np.array_equal(a.predict(obs, deterministic=True)[1],
                              b.predict(obs, deterministic=True)[1])
    b.set_parameters(a.get_parameters())
    np.testing.assert_array_equal(a.predict(obs, deterministic=True)[1],
                                  b.predict(obs, deterministic=True)[1])
    assert set(a.get_parameters()) == {"policy", "critics", "critic_targets", "policy.optimizer"}
    c = small(seed=3)
    c.set_parameters(a.save(tmp_path / "a"))
    np.testing.assert_array_equal(a.predict(obs, deterministic=True)[1],
                                  c.predict(obs, deterministic=True)[1])
    with pytest.raises(ValueError, match=r"\['critics', 'critic_targets', 'policy.optimizer'\] "
                                         "missing"):
        c.set_parameters({"policy": a.get_parameters()["policy"]})
    c.set_parameters({"policy": a.get_parameters()["policy"]}, exact_match=False)
    with pytest.raises(ValueError, match="unknown names"):
        c.set_parameters({"actor_critic": {}}, exact_match=False)

    runs = []
    for _ in range(2):
        agent = small(seed=0)
        agent.set_random_seed(5)
        agent.learn(50)
        runs.append(params(agent))
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(runs[0], params(a), strict=True))


class StartOneEnv(gym.Env):
    """``Discrete(3, start=1)`` actions; an action outside the space is an error."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(3, start=1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        return np.full(2, 0.1 * int(action), np.float32), float(action == 3), self.t >= 5, False, {}


def test_discrete_actions_with_a_start_stay_in_the_space():
    agent = small(StartOneEnv())
    agent.learn(80)
    assert agent.n_updates > 0
    stored = agent.buffer.actions[0, :80, 0]
    assert set(np.unique(stored)) <= {0.0, 1.0, 2.0}  # the policy's indices
    actions = [agent.predict(np.zeros(2, np.float32))[0] for _ in range(30)]
    assert set(actions) <= {1, 2, 3} and len(set(actions)) > 1


# ------------------------------------------------------------------ clear errors
def test_predict_names_its_own_input():
    agent = small()
    with pytest.raises(ValueError, match=r"predict got a non-finite observation \(entry \[2\]\)"):
        agent.predict(np.array([0.0, 0.0, np.nan, 0.0], np.float32))
    with pytest.raises(ValueError, match=r"expected an observation of shape \(4,\)"):
        agent.predict(np.zeros(3))
    size = agent.policy.state_size
    with pytest.raises(ValueError, match=rf"state has shape \(1, {size + 1}\), expected "
                                         rf"\(1, {size}\)"):
        agent.predict(np.zeros(4), state=np.zeros((1, size + 1)))


def test_load_mistakes_are_one_clear_line(tmp_path):
    path = small("Pendulum-v1").save(tmp_path / "agent")
    with pytest.raises(ValueError) as err:
        NeuroFlow.load(path, actor_neurons=16)
    message = str(err.value)
    assert "\n" not in message and "actor_neurons" in message and "shape" in message
    with pytest.raises(ValueError) as err:
        NeuroFlow.load(path, env=gym.make("MountainCarContinuous-v0"))
    message = str(err.value)
    assert "\n" not in message
    assert "Box([-1.2  -0.07], [0.6  0.07], (2,), float32)" in message  # as Gymnasium prints
    assert "Box([-1. -1. -8.], [1. 1. 8.], (3,), float32)" in message
    with pytest.raises(ValueError, match=r"policy 'CnnPolicy' is not available"):
        NeuroFlow("CnnPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match=r"NeuroFlow\('MlpPolicy'\) needs an environment"):
        NeuroFlow("MlpPolicy")


def test_importing_velora_ens_loads_no_agent_or_env_module():
    code = ("import sys, velora_ens, velora_ens.models, velora_ens.ensembles, velora_ens.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('agents', 'envs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"



# ------------------------------------------------------------------ small pieces
def test_schedules_spellings_and_checks():
    from agents.common.schedules import as_schedule, progress_remaining

    lin = as_schedule("lin_1e-3", "learning_rate")
    assert (lin(1.0), lin(0.25), lin.constant) == (1e-3, 2.5e-4, False)
    const = as_schedule(3e-4, "learning_rate")
    assert (const(0.0), const.constant) == (3e-4, True)
    assert as_schedule(lambda p: 2 * p, "clip_range")(0.5) == 1.0
    for bad, fragment in ((0, "must be a number > 0"), ("fast", "not a schedule"),
                          ("lin_-1", "initial value must be > 0"), (True, "must be")):
        with pytest.raises(ValueError, match=fragment):
            as_schedule(bad, "learning_rate")
    with pytest.raises(ValueError, match=r"the clip_range schedule returned -1 at progress "
                                         r"remaining 0.500"):
        as_schedule(lambda p: -1, "clip_range")(0.5)
    assert progress_remaining(130, 100, 60) == pytest.approx(0.5)
    assert progress_remaining(200, 100, 60) == 0.0


@pytest.mark.parametrize("kwargs, rate", [
    ({"train_freq": 1, "gradient_steps": 2}, 1.0),  # 2 updates per step of 2 copies
    ({"train_freq": (4, "step")}, 1 / 8),            # 1 update every 4 steps of 2 copies
    ({"gradient_steps": -1}, 1.0),                   # one per transition collected
    ({}, 1.0),                                       # NeuroFlow's utd_ratio default
])
def test_sb3_train_freq_and_gradient_steps_give_the_update_rate(kwargs, rate):
    assert small(n_envs=2, **kwargs).utd_ratio == rate


def test_sb3_update_rate_mistakes_are_named():
    with pytest.raises(ValueError, match="utd_ratio or Stable-Baselines3's train_freq"):
        small(utd_ratio=2.0, gradient_steps=2)
    with pytest.raises(ValueError, match="does not train per episode"):
        small(train_freq=(1, "episode"))
    with pytest.raises(ValueError, match="gradient_steps must be an integer >= 1, got 0"):
        small(gradient_steps=0)


def test_a_replay_buffer_from_another_step_restores_the_data_only(tmp_path):
    agent = small(seed=0)
    agent.learn(50)
    path = agent.save_replay_buffer(tmp_path / "buffer")
    agent.learn(10)
    with pytest.warns(UserWarning, match="saved at step 50, the agent is at step 60"):
        agent.load_replay_buffer(path)
    assert len(agent.replay_buffer) == 50 and agent.driver.obs is None
    other = small("Pendulum-v1")
    with pytest.raises(ValueError, match="has format 'velora_ens.training_state/1'"):
        NeuroFlow.load(path)
    with pytest.raises(ValueError, match="replay buffer's obs has shape"):
        other.load_replay_buffer(path)


def test_a_saved_policy_is_refused_where_an_agent_is_expected(tmp_path):
    from agents import LiquidPolicy

    agent = small()
    path = agent.policy.save(tmp_path / "policy")
    assert path == tmp_path / "policy.safetensors"
    with pytest.raises(ValueError, match="expected 'velora_ens.agent/1'"):
        NeuroFlow.load(path)
    with pytest.raises(ValueError, match="expected 'velora_ens.policy/1'"):
        LiquidPolicy.load(agent.save(tmp_path / "agent"))
