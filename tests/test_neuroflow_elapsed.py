"""NeuroFlow with the elapsed time between observations fed to its liquid cells
(``elapsed_time_key``): what reaches the cells when acting, in replay and in training
(burn-in, the critics' own encoder, the TD targets' next step), resume, errors, and
``agents.evaluate_policy``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents import NeuroFlow, evaluate_policy
from agents.common.callbacks import EvalCallback
from agents.neuroflow.replay import unroll_with_burn_in

SMALL = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
             critic_hidden=(32, 32))
UNIT = 0.05  # Pendulum's nominal step (s)


def params(agent):
    mods = [agent.actor, agent.critics, agent.critic_targets, *agent.history.modules().values()]
    return [p.detach().clone() for m in mods for p in m.state_dict().values()]


class ReportedTimes(gym.Wrapper):
    """Records the elapsed time the env reports with every observation (reset included)."""

    def __init__(self, env):
        super().__init__(env)
        self.log = []

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.log.append(("reset", info["elapsed_time"]))
        return obs, info

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.log.append(("step", info["elapsed_time"]))
        return obs, r, term, trunc, info


def irregular(max_episode_steps=30, **kw):
    env = ReportedTimes(gym.make("PendulumNoVelIrregular-v1",
                                 max_episode_steps=max_episode_steps))
    return NeuroFlow(env, **{**SMALL, "elapsed_time_key": "elapsed_time",
                             "elapsed_time_unit": UNIT, **kw}), env


def test_replay_keeps_the_reported_elapsed_times():
    agent, env = irregular()
    agent.learn(70)
    n = 70
    dt, next_dt = agent.buffer.dt[0, :n, 0], agent.buffer.next_dt[0, :n, 0]
    start = agent.buffer.episode_start[0, :n].astype(bool)
    # the expected values, from the env's own reports: an observation's dt is what came
    # with it, except 1 (the cells' default) where an episode starts
    expected_dt, expected_next = [], []
    for kind, value in env.log:
        if kind == "reset":
            expected_dt.append(1.0)
        else:
            expected_next.append(value / UNIT)
            expected_dt.append(value / UNIT)
    expected_dt = np.array(expected_dt)
    # drop each episode's last step from the dt stream (it is no observation acted on)
    acted = [i for i, (kind, _) in enumerate(env.log)
             if not (kind == "step" and i + 1 < len(env.log) and env.log[i + 1][0] == "reset")]
    np.testing.assert_allclose(dt, expected_dt[acted][:n], rtol=1e-6)
    np.testing.assert_allclose(next_dt, np.array(expected_next)[:n], rtol=1e-6)
    assert start.sum() >= 2 and np.all(dt[start] == 1.0)
    assert len(np.unique(dt[~start])) >= 3  # irregular indeed


def test_acting_states_are_the_cells_direct_steps_on_the_stored_sequence():
    agent, _ = irregular(critic_encoder="own", learning_starts=1000)  # weights as acted
    agent.learn(50)
    buf, h, n = agent.buffer, agent.actor.state_dim, 49
    obs = torch.as_tensor(buf.obs[0, :n])
    dt = torch.as_tensor(buf.dt[0, :n])
    start = torch.as_tensor(buf.episode_start[0, :n]).bool()
    stored = torch.as_tensor(buf.states[0, :n + 1])
    with torch.no_grad():
        for t in range(n):
            before = stored[t] * (~start[t]).float()
            actor_next = agent.actor(obs[t:t + 1], before[None, :h], dt=dt[t:t + 1])[1]
            own_next = agent.critic_encoder(obs[t:t + 1], before[None, h:], dt=dt[t:t + 1])[1]
            if t + 1 < n and not start[t + 1]:
                torch.testing.assert_close(actor_next[0], stored[t + 1, :h])
                torch.testing.assert_close(own_next[0], stored[t + 1, h:])
        # and without dt the states would differ: the times matter
        plain = agent.actor(obs[5:6], stored[5:6, :h])[1]
        assert not torch.allclose(plain[0], stored[6, :h])


def test_training_feeds_the_sampled_elapsed_times_to_every_network():
    """The burn-in, the trained steps, the critics' own encoder and the TD targets' next
    step each receive the sampled sequence's elapsed times; the unroll equals a direct
    step-by-step call with resets at episode starts."""
    agent, _ = irregular(8, critic_encoder="own", learning_starts=1000)
    agent.learn(80)  # no update yet: the sample below is the one train_step draws
    rng_state = agent.rng.bit_generator.state
    n_seq = agent.batch_size // agent.seq_len
    b = agent.buffer.sample(n_seq, agent._sequence_length, agent.rng)
    agent.rng.bit_generator.state = rng_state
    burn = agent.burn_in

    calls = {"actor": [], "encoder": []}

    def spy(module, name):
        original = module.forward

        def forward(*args, **kw):
            calls[name].append(kw.get("dt"))
            return original(*args, **kw)

        module.forward = forward

    spy(agent.actor.net, "actor")
    spy(agent.critic_encoder, "encoder")
    agent.train_step()
    seen = [c for c in calls["actor"] if c is not None]
    assert all(c is not None for c in calls["actor"] + calls["encoder"])
    # trained steps (B, seq_len, 1), then the TD targets' next step (B * seq_len, 1)
    torch.testing.assert_close(seen[0], b.dt[:, burn:])
    torch.testing.assert_close(seen[1], b.next_dt[:, burn:].reshape(-1, 1))
    torch.testing.assert_close(calls["encoder"][-2], b.dt[:, burn:])
    torch.testing.assert_close(calls["encoder"][-1], b.next_dt[:, burn:].reshape(-1, 1))

    # the unroll, burn-in included, against a direct step-by-step computation
    with torch.no_grad():
        out, states = unroll_with_burn_in(agent.actor, b.obs, b.episode_start,
                                          b.start_state[:, :agent.actor.state_dim],
                                          agent.burn_in, dt=b.dt)
        state = b.start_state[:, :agent.actor.state_dim]
        direct = []
        for t in range(b.obs.shape[1]):
            state = state * (1 - b.episode_start[:, t:t + 1])
            _, state = agent.actor(b.obs[:, t], state, dt=b.dt[:, t])
            direct.append(state)
        torch.testing.assert_close(states, torch.stack(direct[burn:], 1))
    assert b.episode_start[:, 1:].any()  # some sequence crosses an episode start


@pytest.mark.parametrize("env_id,extra", [
    ("Pendulum-v1", {"critic_encoder": "own"}),
    ("CartPole-v1", {"critic_trains_state": True, "n_step": 2, "n_envs": 2}),
])
def test_a_constant_elapsed_time_of_one_unit_changes_nothing(env_id, extra):
    def make(**kw):
        env = (envs.IrregularTiming(gym.make(env_id), 1, 1) if extra.get("n_envs", 1) == 1
               else gym.make_vec(env_id, extra["n_envs"], vectorization_mode="sync",
                                 wrappers=[lambda e: envs.IrregularTiming(e, 1, 1)]))
        return NeuroFlow(env, **{**SMALL, **extra, **kw})

    nominal = envs.IrregularTiming(gym.make(env_id), 1, 1).nominal_dt
    plain = make()
    plain.learn(80)
    timed = make(elapsed_time_key="elapsed_time", elapsed_time_unit=nominal)
    timed.learn(80)
    assert np.all(timed.buffer.dt[:, :40] == 1.0) and np.all(timed.buffer.next_dt[:, :40] == 1.0)
    assert timed.n_updates == plain.n_updates > 0
    for a, b in zip(params(plain), params(timed), strict=True):
        assert torch.equal(a, b)
    assert timed.last_losses == plain.last_losses


def test_resume_is_exact_with_the_elapsed_time(tmp_path):
    def make():
        return NeuroFlow("PendulumNoVelIrregular-v1", **{
            **SMALL, "critic_encoder": "own", "n_envs": 2,
            "elapsed_time_key": "elapsed_time", "elapsed_time_unit": UNIT})

    uninterrupted = make()
    uninterrupted.learn(60)
    uninterrupted.learn(60)
    first = make()
    first.learn(60)
    path = first.save(tmp_path / "ckpt", include_buffer=True)
    del first
    torch.manual_seed(321)
    resumed = NeuroFlow.load(path)
    assert resumed.elapsed_time_key == "elapsed_time"
    resumed.learn(60)
    for a, b in zip(params(uninterrupted), params(resumed), strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(resumed.buffer.dt, uninterrupted.buffer.dt)
    np.testing.assert_array_equal(resumed.buffer.next_dt, uninterrupted.buffer.next_dt)
    assert resumed.last_losses == uninterrupted.last_losses


def test_elapsed_time_errors_name_the_step():
    with pytest.raises(ValueError, match=r"no 'elapsed_time' at step \d+"):
        NeuroFlow("Pendulum-v1", **SMALL, elapsed_time_key="elapsed_time").learn(16)

    class Bad(gym.Wrapper):
        def __init__(self, env, value):
            super().__init__(env)
            self.value, self.count = value, 0

        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            self.count += 1
            return obs, r, term, trunc, {
                **info, "elapsed_time": self.value if self.count == 5 else UNIT}

    for value, shown in ((-0.1, "-0.1"), (float("nan"), "nan"), (float("inf"), "inf")):
        agent = NeuroFlow(Bad(gym.make("Pendulum-v1"), value), **SMALL,
                          elapsed_time_key="elapsed_time", elapsed_time_unit=UNIT)
        with pytest.raises(ValueError, match=rf"elapsed time of {shown} .* at step 5 .*>= 0"):
            agent.learn(16)


def test_buffers_refuse_missing_or_unexpected_elapsed_times():
    from agents.neuroflow.replay import SequenceReplayBuffer

    timed = SequenceReplayBuffer(8, 1, 2, 1, 3, elapsed=True)
    plain = SequenceReplayBuffer(8, 1, 2, 1, 3)
    row = (np.zeros(1, np.int64), np.zeros((1, 2)), np.zeros((1, 1)), np.zeros(1),
           np.zeros((1, 2)), np.zeros(1), np.ones(1), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="keeps elapsed times"):
        timed.add(*row)
    with pytest.raises(ValueError, match="does not keep"):
        plain.add(*row, dt=np.ones(1), next_dt=np.ones(1))
    timed.add(*row, dt=np.full(1, 2.0), next_dt=np.full(1, 3.0))
    assert timed.dt[0, 0, 0] == 2.0 and timed.next_dt[0, 0, 0] == 3.0
    meta, tensors = plain.state_tensors()
    with pytest.raises(ValueError, match="no 'dt' .*without elapsed_time_key"):
        timed.load_state_tensors(meta, tensors, "file.safetensors")


def test_evaluate_policy_passes_the_elapsed_time_to_predict():
    agent, _ = irregular()
    agent.learn(40)

    def manual(seed):
        env = gym.make("PendulumNoVelIrregular-v1")
        obs, info = env.reset(seed=seed)
        state, start, total, done = None, np.ones(1, bool), 0.0, False
        while not done:
            action, state = agent.predict(obs, state, start, deterministic=True,
                                          elapsed_time=info["elapsed_time"])
            obs, r, term, trunc, info = env.step(action)
            total, start, done = total + r, np.zeros(1, bool), term or trunc
        return total

    returns, lengths = evaluate_policy(agent, gym.make("PendulumNoVelIrregular-v1"),
                                       n_eval_episodes=1, seed=7, return_episode_rewards=True)
    assert returns[0] == pytest.approx(manual(7), rel=1e-9) and lengths == [200]
    mean, std = evaluate_policy(agent, gym.make("PendulumNoVelIrregular-v1"), 2, seed=7)
    assert std > 0
    with pytest.raises(ValueError, match="info has no 'elapsed_time' at step 0 of episode 0"):
        evaluate_policy(agent, gym.make("PendulumNoVel-v1"), 1)
    with pytest.raises(TypeError, match="one gymnasium.Env"):
        evaluate_policy(agent, gym.make_vec("PendulumNoVel-v1", 2), 1)


def test_eval_callback_passes_the_elapsed_time(tmp_path):
    """Our EvalCallback hands predict the evaluation env's elapsed times: its returns are
    agents.evaluate_policy's on the same seeded episodes (and differ from a dt-free run)."""
    from stable_baselines3.common.evaluation import evaluate_policy as sb3_evaluate
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    agent, _ = irregular(learning_starts=10_000)  # no update: the policy stays fixed
    make = lambda: Monitor(gym.make("PendulumNoVelIrregular-v1"))  # noqa: E731
    eval_env = DummyVecEnv([make])
    eval_env.seed(7)
    callback = EvalCallback(eval_env, eval_freq=20, n_eval_episodes=2, log_path=str(tmp_path))
    agent.learn(20, callback=callback)
    ours, _ = evaluate_policy(agent, make(), 2, seed=7, return_episode_rewards=True)
    np.testing.assert_allclose(callback.evaluations_results[0], ours, rtol=1e-6)
    plain = DummyVecEnv([make])
    plain.seed(7)
    untimed, _ = sb3_evaluate(agent, plain, 2, return_episode_rewards=True)
    assert not np.allclose(untimed, ours)
    with pytest.raises(ValueError, match="evaluation env's info has no 'elapsed_time' at reset"):
        agent.learn(20, callback=EvalCallback(Monitor(gym.make("PendulumNoVel-v1")),
                                              eval_freq=5))


def test_after_step_takes_a_truncated_copys_final_time_from_final_info():
    """Worked example of ElapsedTime.after_step: copy 1 was truncated and reset within the
    step (SAME_STEP), so it acts next on a fresh episode (dt 1) while its real next
    observation came 2.0 after the last one (info["final_info"])."""
    from agents.driver.elapsed import ElapsedTime

    reader = ElapsedTime("elapsed_time", unit=0.5, n_envs=3)
    info = {"elapsed_time": np.array([1.0, 0.5, 1.5]), "_elapsed_time": np.ones(3, bool),
            "final_info": {"elapsed_time": np.array([0.0, 2.0, 0.0]),
                           "_elapsed_time": np.array([False, True, False])}}
    start = np.array([False, True, False])
    acting, real = reader.after_step(info, start, True, 9, np.array([1]))
    np.testing.assert_array_equal(acting, [2.0, 1.0, 3.0])
    np.testing.assert_array_equal(real, [2.0, 4.0, 3.0])
    # NEXT_STEP: the final observation is the one returned, so both are the same
    acting, real = reader.after_step(info, np.zeros(3, bool), False, 9, np.array([1]))
    np.testing.assert_array_equal(acting, [2.0, 1.0, 3.0])
    np.testing.assert_array_equal(real, acting)
    with pytest.raises(ValueError, match=r"no 'elapsed_time' at step 9 \(copies \[1\]\)"):
        reader.after_step({**info, "final_info": {}}, start, True, 9, np.array([1]))
