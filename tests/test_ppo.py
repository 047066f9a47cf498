"""LiquidPPO: recurrent PPO with liquid networks on the shared agent base."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from rl_envs import CounterEnv, CueEnv
from stable_baselines3.common.evaluation import evaluate_policy

from agents import LiquidPolicy, LiquidPPO, load_agent
from agents.ppo.gae import gae_advantages
from envs import make_vec_env


def small(env, **kw):
    defaults = dict(seed=0, n_steps=16, batch_size=16, n_epochs=2, actor_neurons=8,
                    critic_neurons=8)
    defaults.update(kw)
    return LiquidPPO(env, **defaults)


def params(agent):
    return [p.detach().clone() for m in agent._persistent_modules().values()
            for p in m.state_dict().values()]


def stop_before_training(agent):
    """Replace ``train`` by a recorder of the rollout it would train on."""
    seen = []

    def record(clip_range):
        seen.append(clip_range)
        raise StopIteration

    agent.train = record
    return seen


def collect_one_rollout(agent):
    stop_before_training(agent)
    with pytest.raises(StopIteration):
        agent.learn(10 * agent.n_steps * agent.n_envs)
    assert agent.rollout.full
    return agent.rollout


# ------------------------------------------------------------------------------ GAE
def test_gae_matches_a_hand_computed_example():
    """One copy, gamma 0.5, lambda 0.5. Rows: 0, 1 (terminated), 2 (NEXT_STEP reset row),
    3, 4 (truncated, final observation worth 4), 5 (last row, bootstrapped from 2)."""
    g, lam = 0.5, 0.5
    rewards = torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0, 3.0]).unsqueeze(1)
    values = torch.tensor([0.5, 1.0, 9.0, 0.0, 2.0, 1.0]).unsqueeze(1)
    terminated = torch.tensor([0, 1, 0, 0, 0, 0], dtype=torch.bool).unsqueeze(1)
    dones = torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.bool).unsqueeze(1)
    valid = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool).unsqueeze(1)
    # the successor values: next row, or the truncated step's final observation (4), or
    # the value after the rollout (2); a terminal step's is ignored (put 100 there)
    next_values = torch.tensor([1.0, 100.0, 0.0, 2.0, 4.0, 2.0]).unsqueeze(1)
    adv = gae_advantages(rewards, values, next_values, terminated, dones, valid, g, lam)
    # by hand, backwards
    a5 = 3 + g * 2 - 1                       # 3.0
    a4 = 1 + g * 4 - 2                       # truncated: bootstraps, does not chain: 1.0
    a3 = (1 + g * 2 - 0) + g * lam * a4      # 2.0 + 0.25 = 2.25
    a2 = 0.0                                  # reset row: not a transition
    a1 = 2 - 1.0                              # terminal: 1.0
    a0 = (1 + g * 1.0 - 0.5) + g * lam * a1   # 1.0 + 0.25 = 1.25
    expected = torch.tensor([a0, a1, a2, a3, a4, a5]).unsqueeze(1)
    torch.testing.assert_close(adv, expected)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_rollout_bootstraps_truncations_from_the_final_observation(mode):
    """A truncated step's successor value is the critic's value of the real final
    observation with the critic state after that step; NEXT_STEP reset rows are marked."""
    venv = make_vec_env(lambda: CounterEnv(5, terminate=False), 2, autoreset_mode=mode)
    agent = small(venv, n_steps=16, batch_size=16)
    buf = collect_one_rollout(agent)
    truncated = buf.dones & buf.valid & ~buf.terminated
    assert truncated.sum() >= 4
    # replay the critic over each column from the rollout's start
    obs, start = buf.obs.transpose(0, 1), buf.episode_start.transpose(0, 1)
    states = agent.value.states(obs, start, buf.states[1][0])  # (n_envs, T, H) after each row
    for t, i in truncated.nonzero().tolist():
        final = torch.tensor([[5.0, obs[i, t, 1]]])  # CounterEnv's last observation
        expected = agent.value.net(final, states[i, t].unsqueeze(0))[0].item()
        assert buf.next_values[t, i].item() == pytest.approx(expected, abs=1e-5)
    if mode == AutoresetMode.NEXT_STEP:
        assert (~buf.valid).sum() > 0
        # a reset row follows every episode end, and the row after it starts an episode
        for t, i in (~buf.valid).nonzero().tolist():
            assert buf.dones[t - 1, i] and (t + 1 == buf.n_steps or buf.episode_start[t + 1, i])
    else:
        assert buf.valid.all()


# ------------------------------------------------------------------------------ windows
def test_recomputed_window_start_states_equal_the_rollout_states_before_any_update():
    agent = small("CartPole-v1", n_envs=2, n_steps=32, batch_size=16, seq_len=8)
    buf = collect_one_rollout(agent)
    assert buf.episode_start[1:].any()  # episodes end inside the rollout
    recomputed = agent.window_start_states()
    for stored, again in zip(buf.states, recomputed, strict=True):
        torch.testing.assert_close(again, buf.window_starts(stored, agent.seq_len),
                                   atol=1e-6, rtol=1e-5)


def test_windows_reset_the_state_at_every_episode_start():
    """Inside a training window, every row from an episode start on sees only its own
    episode: the outputs equal a fresh run from a zero state over those rows."""
    agent = small("CartPole-v1", n_envs=2, n_steps=64, batch_size=64, seq_len=32)
    buf = collect_one_rollout(agent)
    L = agent.seq_len
    win = {k: buf.windows(getattr(buf, k), L) for k in ("obs", "actions", "episode_start")}
    starts = [buf.window_starts(s, L) for s in buf.states]
    with torch.no_grad():
        log_prob, _, values = agent.window_outputs(win, starts)
    checked = 0
    for w, k in win["episode_start"][:, 1:].nonzero().tolist():
        k += 1
        fresh = {"obs": win["obs"][w:w + 1, k:], "actions": win["actions"][w:w + 1, k:],
                 "episode_start": torch.zeros(1, L - k, dtype=torch.bool)}
        zeros = [torch.zeros(1, s.shape[1]) for s in starts]
        with torch.no_grad():
            lp, _, v = agent.window_outputs(fresh, zeros)
        end = k + 1 + int(win["episode_start"][w, k + 1:].nonzero()[0]) \
            if win["episode_start"][w, k + 1:].any() else L
        torch.testing.assert_close(log_prob[w, k:end], lp[0, :end - k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(values[w, k:end], v[0, :end - k], atol=1e-5, rtol=1e-5)
        checked += 1
    assert checked >= 2


def test_clip_fraction_and_approx_kl_match_a_direct_computation():
    agent = small("CartPole-v1", n_envs=2, n_steps=16, batch_size=32, seq_len=16)
    buf = collect_one_rollout(agent)
    agent._finish_rollout()
    L = agent.seq_len
    names = ("obs", "actions", "log_probs", "advantages", "returns", "values", "valid",
             "episode_start")
    batch = {k: buf.windows(getattr(buf, k), L) for k in names}
    starts = [buf.window_starts(s, L) for s in buf.states]
    with torch.no_grad():
        log_prob = agent.window_outputs(batch, starts)[0]
    # pretend the rollout's policy had other log-probabilities: known ratios
    shift = torch.linspace(-0.4, 0.4, log_prob.numel()).reshape(log_prob.shape)
    batch["log_probs"] = log_prob + shift  # ratio = exp(-shift)
    logged = agent._minibatch_step(batch, starts, clip_range=0.2)
    valid = batch["valid"].numpy()
    ratio = np.exp(-shift.numpy())[valid]
    expected_kl = np.mean((ratio - 1) - np.log(ratio))
    expected_clip = np.mean(np.abs(ratio - 1) > 0.2)
    assert logged["approx_kl"] == pytest.approx(expected_kl, rel=1e-4)
    assert logged["clip_fraction"] == pytest.approx(expected_clip, abs=1e-6)
    assert 0 < expected_clip < 1


# ------------------------------------------------------------------------------ learning
@pytest.mark.parametrize("env_id,extra", [
    ("CartPole-v1", {}),
    ("Pendulum-v1", {"shared_critic": True, "normalize_observations": True,
                     "normalize_rewards": True}),
    ("CartPoleNoVel-v1", {"cell": "ltc", "n_envs": 2, "seq_len": 8, "target_kl": 0.01}),
])
def test_short_learning_run_per_action_kind(env_id, extra):
    agent = small(env_id, **extra)
    before = params(agent)
    agent.learn(4 * agent.n_steps * agent.n_envs)
    assert agent.num_timesteps >= 4 * agent.n_steps * agent.n_envs
    assert agent.n_updates >= 4
    keys = {"loss", "policy_gradient_loss", "value_loss", "entropy_loss", "approx_kl",
            "clip_fraction", "clip_range", "explained_variance"}
    assert keys <= set(agent.last_losses)
    assert ("std" in agent.last_losses) == (not agent.discrete)
    assert all(math.isfinite(v) for k, v in agent.last_losses.items()
               if k != "explained_variance")
    assert any(not torch.equal(a, b) for a, b in zip(before, params(agent), strict=True))
    mean, _ = evaluate_policy(agent, agent.get_env(), n_eval_episodes=2)
    assert math.isfinite(mean)


def test_the_value_loss_falls_on_a_fixed_rollout():
    """Training epochs on one rollout fit the critic to its returns."""
    agent = small("CartPole-v1", n_steps=64, batch_size=64, n_epochs=1, learning_rate=1e-2,
                  normalize_rewards=True)
    collect_one_rollout(agent)
    del agent.train  # the class's method again
    agent._finish_rollout()
    first = agent.train(0.2)["value_loss"]
    for _ in range(150):
        last = agent.train(0.2)["value_loss"]
    assert last < 0.5 * first


def evaluate_cue(agent, episodes):
    env = CueEnv(delay=2)
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        state, start, done = None, np.ones(1, bool), False
        while not done:
            action, state = agent.predict(obs, state, start, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            start = np.zeros(1, bool)
            done = terminated or truncated
    return total / episodes


@pytest.mark.slow
def test_learns_a_memory_task_that_needs_recurrence():
    """CueEnv: act on a cue seen two steps earlier. Chance is 0.5; memory gives 1."""
    agent = LiquidPPO(CueEnv(delay=2), seed=0, n_steps=128, batch_size=128, n_epochs=10,
                      actor_neurons=16, critic_neurons=16, learning_rate=3e-3, gamma=0.9)
    agent.learn(4000)  # solved by 1500 steps in a seed-0 run
    assert evaluate_cue(agent, 100) >= 0.95


def test_same_seed_same_run():
    a = small("CartPole-v1", seed=3)
    a.learn(100)
    b = small("CartPole-v1", seed=3)  # acting draws from torch's generator, as in SB3
    b.learn(100)
    for x, y in zip(params(a), params(b), strict=True):
        assert torch.equal(x, y)
    assert a.last_losses == b.last_losses
    c = small("CartPole-v1", seed=4)
    c.learn(100)
    assert any(not torch.equal(x, y) for x, y in zip(params(a), params(c), strict=True))


# ------------------------------------------------------------------------------ saving
@pytest.mark.parametrize("env_id,extra", [
    ("CartPole-v1", {"n_envs": 2}),
    ("Pendulum-v1", {"normalize_observations": True, "normalize_rewards": True,
                     "seq_len": 8, "shared_critic": True, "noise_hold_steps": 3}),
    ("PendulumNoVelIrregular-v1", {"elapsed_time_key": "elapsed_time",
                                   "elapsed_time_unit": 0.05, "seq_len": 8}),
    ("Pendulum-v1", {"use_sde": True, "sde_sample_freq": 3, "n_envs": 2, "seq_len": 8}),
    ("Pendulum-v1", {"use_sde": True, "log_std_init": -1.0}),
    ("PendulumNoVel-v1", {"actor_head": [16, 8], "actor_dense_recurrence": True,
                          "seq_len": 8}),
    ("CartPoleNoVel-v1", {"actor_mixed_memory": True, "actor_self_synapse_init": 0.5,
                          "seq_len": 8}),  # the memory options
    ("CartPoleNoVel-v1", {"cell": "lstm", "seq_len": 8}),  # gated baselines
    ("PendulumNoVelIrregular-v1", {"actor_cfc_mode": "carry", "seq_len": 8,
                                   "elapsed_time_key": "elapsed_time"}),  # carried state
    ("PendulumNoVelIrregular-v1", {"cell": "gru", "elapsed_time_key": "elapsed_time",
                                   "elapsed_time_unit": 0.05, "seq_len": 8}),
])
def test_resume_is_exact_mid_rollout(tmp_path, env_id, extra):
    """Stop in the middle of a rollout, save with the rollout, load, continue: the same
    parameters, losses and actions as the uninterrupted run."""
    steps = 40  # a rollout is 16 rows per copy: 40 steps stop inside one
    uninterrupted = small(env_id, **extra)
    uninterrupted.learn(steps)
    uninterrupted.learn(steps)

    first = small(env_id, **extra)
    first.learn(steps)
    assert 0 < first.rollout.pos < first.n_steps
    path = first.save(tmp_path / "ckpt", include_buffer=True)
    del first
    torch.manual_seed(99)
    np.random.seed(99)
    resumed = load_agent(path)
    assert isinstance(resumed, LiquidPPO)
    resumed.learn(steps)
    for a, b in zip(params(uninterrupted), params(resumed), strict=True):
        assert torch.equal(a, b)
    assert resumed.last_losses == uninterrupted.last_losses
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    np.testing.assert_array_equal(resumed.driver.action_log.array(),
                                  uninterrupted.driver.action_log.array())


def test_save_load_round_trip_and_the_policy_file(tmp_path):
    agent = small("Pendulum-v1")
    agent.learn(64)
    loaded = LiquidPPO.load(agent.save(tmp_path / "agent"))
    for a, b in zip(params(agent), params(loaded), strict=True):
        assert torch.equal(a, b)
    obs = np.array([[0.5, -0.5, 0.1], [1.0, 0.0, -2.0]], np.float32)
    expected, state = agent.predict(obs, deterministic=True)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)
    policy = LiquidPolicy.load(agent.policy.save(tmp_path / "policy"))
    action, state2 = policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, expected)
    np.testing.assert_array_equal(state2, state)
    assert np.all(np.abs(action) <= 2.0)  # clipped to Pendulum's bounds


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kw,match", [
    ({"batch_size": 64, "n_steps": 16}, "larger than the rollout"),
    ({"n_steps": 24, "seq_len": 16, "batch_size": 16}, "must divide n_steps"),
    ({"n_steps": 32, "seq_len": 16, "batch_size": 24}, "must divide batch_size"),
    ({"gamma": 1.5}, "gamma"),
    ({"n_epochs": 0}, "n_epochs"),
    ({"target_kl": -1.0}, "target_kl must be a finite number > 0, got -1.0"),
    ({"vf_coef": float("nan")}, "vf_coef must be a finite number >= 0"),
    ({"max_grad_norm": 0}, "max_grad_norm must be a finite number > 0"),
    ({"gae_lambda": True}, "gae_lambda"),
    ({"clip_range": "fast"}, "clip_range"),
    ({"cell": "rnn"}, r"cell must be one of \('cfc', 'ltc', 'gru', 'lstm'\), got 'rnn'"),
    ({"cell": "gru", "actor_dense_recurrence": True},
     r"\['dense_recurrence'\] apply to the liquid cells \('cfc', 'ltc'\) only"),
    ({"actor_self_synapse_init": 0.5, "cell": "ltc"}, "self_synapse_init applies to the CfC"),
    ({"actor_mixed_memory": 1}, "mixed_memory must be True or False, got 1"),
    ({"actor_cfc_mode": "carried"}, r"actor_cfc_mode\) must be one of .*got 'carried'"),
    ({"actor_cfc_mode": "carry", "cell": "ltc"}, "applies to cell='cfc', got cfc_mode='carry'"),
    ({"actor_cfc_mode": "carry", "actor_mixed_memory": True}, "got mode 'carry'"),
    ({"use_sde": True, "noise_hold_steps": 4}, "use_sde=True and noise_hold_steps=4"),
    ({"use_sde": True}, r"use_sde=True needs Box actions, got Discrete\(2\)"),
    ({"use_sde": 1}, "use_sde must be True or False, got 1"),
    ({"use_sde": True, "sde_sample_freq": -2}, "sde_sample_freq"),
    ({"actor_head": 64}, r"head_layers must be a sequence of layer widths, e.g. \(64,\), got 64"),
    ({"actor_head": [64, 0]}, r"head_layers\[1\] must be an integer >= 1, got 0"),
    ({"actor_dense_recurrence": 1}, "dense_recurrence must be True or False, got 1"),
])
def test_bad_options_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        small("CartPole-v1", **kw)


def test_unsupported_action_spaces_are_refused():
    class MultiDiscreteEnv(CounterEnv):
        def __init__(self):
            super().__init__()
            self.action_space = gym.spaces.MultiDiscrete([[2, 3]])

    with pytest.raises(ValueError, match="MultiDiscrete action space must be 1-D"):
        small(MultiDiscreteEnv())


def test_noise_hold_steps_keeps_the_exploration_noise_for_k_steps():
    agent = small("Pendulum-v1", noise_hold_steps=3)
    buf = collect_one_rollout(agent)
    with torch.no_grad():
        means = agent.actor(buf.obs.transpose(0, 1), buf.states[0][0],
                            episode_start=buf.episode_start.transpose(0, 1))[0][0]
    noise = (buf.actions[:, 0] - means) / agent.actor.log_std.exp()  # (n_steps, |A|)
    for t in range(buf.n_steps):
        if t % 3:
            torch.testing.assert_close(noise[t], noise[t - 1], atol=1e-4, rtol=1e-4)
        elif t:
            assert not torch.allclose(noise[t], noise[t - 1], atol=1e-3)
    # the stored log-probabilities are the per-step Gaussian's
    log_prob = agent.actor.log_prob_entropy(means, buf.actions[:, 0])[0]
    torch.testing.assert_close(log_prob, buf.log_probs[:, 0], atol=1e-5, rtol=1e-5)


def test_sb3_callbacks_see_rollouts_and_steps_with_sb3_names(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
    from stable_baselines3.common.monitor import Monitor

    class Count(BaseCallback):
        def __init__(self):
            super().__init__()
            self.starts = self.ends = self.steps = 0

        def _on_rollout_start(self):
            self.starts += 1

        def _on_rollout_end(self):
            self.ends += 1
            assert self.model.rollout.full  # before the update, as SB3's PPO

        def _on_step(self):
            self.steps += 1
            assert {"infos", "dones", "rewards", "new_obs", "actions",
                    "rollout_buffer"} <= set(self.locals)
            return True

    count = Count()
    agent = small("CartPole-v1", n_envs=2)
    eval_env = Monitor(gym.make("CartPole-v1"))
    callbacks = [count, EvalCallback(eval_env, eval_freq=20, n_eval_episodes=1,
                                     best_model_save_path=str(tmp_path)),
                 CheckpointCallback(40, str(tmp_path / "ckpt"))]
    agent.learn(4 * 16 * 2, callback=callbacks)
    assert count.steps >= 4 * 16 and count.ends == agent.n_updates // agent.n_epochs
    assert count.starts in (count.ends, count.ends + 1)
    assert (tmp_path / "best_model.safetensors").exists()
    assert load_agent(sorted((tmp_path / "ckpt").iterdir())[0]).num_timesteps > 0


# ------------------------------------------------------------------------------ elapsed time
def irregular_agent(**kw):
    return small("PendulumNoVelIrregular-v1", n_envs=2, elapsed_time_key="elapsed_time",
                 elapsed_time_unit=0.05, **kw)


def test_elapsed_times_reach_the_cells_unchanged_when_acting_and_training():
    agent = irregular_agent(seq_len=8)
    seen = []
    buf = agent.rollout
    original = agent._callback_step

    def record(callback, step, log_interval, **extra):
        seen.append(np.array([info.get("elapsed_time", np.nan) for info in
                              step.sb3_infos()]))
        return original(callback, step, log_interval, **extra)

    agent._callback_step = record
    collect_one_rollout(agent)
    # each row's dt is the elapsed time reported with its observation, / 0.05
    reported = np.stack(seen[:-1]) / 0.05
    np.testing.assert_allclose(buf.dt[1:, :, 0].numpy(), reported, rtol=1e-6)
    assert len(np.unique(buf.dt[1:].numpy().round(3))) >= 3  # irregular indeed
    # acting: the stored log-probabilities are the network's on the stored sequence
    obs, start, dt = (x.transpose(0, 1) for x in (buf.obs, buf.episode_start, buf.dt))
    with torch.no_grad():
        means = agent.actor.net(obs, buf.states[0][0], dt=dt, episode_start=start)[0]
        log_prob = agent.actor.log_prob_entropy(means, buf.actions.transpose(0, 1))[0]
        assert not torch.allclose(agent.actor.net(obs, buf.states[0][0],
                                                  episode_start=start)[0], means)
    torch.testing.assert_close(log_prob, buf.log_probs.transpose(0, 1), atol=1e-5, rtol=1e-5)
    # training: the windows carry the same dt into actor and critic
    L = agent.seq_len
    win = {k: buf.windows(getattr(buf, k), L) for k in ("obs", "actions", "episode_start", "dt")}
    starts = [buf.window_starts(s, L) for s in buf.states]
    with torch.no_grad():
        lp, _, values = agent.window_outputs(win, starts)
        direct = agent.value.net(win["obs"], starts[1], dt=win["dt"],
                                 episode_start=win["episode_start"])[0].squeeze(-1)
    torch.testing.assert_close(values, direct)
    torch.testing.assert_close(lp, buf.windows(buf.log_probs, L), atol=1e-5, rtol=1e-5)


def test_a_constant_elapsed_time_of_one_unit_changes_nothing():
    import envs

    def make(**kw):
        env = envs.IrregularTiming(gym.make("Pendulum-v1"), 1, 1)  # always 0.05 s
        return small(env, seq_len=8, **kw)

    plain = make()
    plain.learn(64)
    timed = make(elapsed_time_key="elapsed_time", elapsed_time_unit=0.05)
    timed.learn(64)
    assert timed.rollout.dt.eq(1.0).all()
    for a, b in zip(params(plain), params(timed), strict=True):
        assert torch.equal(a, b)


def test_elapsed_time_errors_name_the_step():
    with pytest.raises(ValueError, match=r"no 'elapsed_time' at step \d+"):
        small("Pendulum-v1", elapsed_time_key="elapsed_time").learn(16)

    class Negative(gym.Wrapper):
        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            return obs, r, term, trunc, {**info, "elapsed_time": -0.1}

    with pytest.raises(ValueError, match=r"elapsed time of -0.1 .* at step 1 .*>= 0"):
        small(Negative(gym.make("Pendulum-v1")), elapsed_time_key="elapsed_time").learn(16)
    with pytest.raises(ValueError, match="elapsed_time_unit"):
        small("Pendulum-v1", elapsed_time_key="elapsed_time", elapsed_time_unit=0.0)


def test_predict_takes_the_elapsed_time():
    agent = irregular_agent()
    obs = np.array([[0.5, -0.5, 0.0]], np.float32)
    action, _ = agent.predict(obs, deterministic=True, elapsed_time=0.1)
    with torch.no_grad():
        mean = agent.actor.net(torch.as_tensor(obs), None, dt=torch.tensor([[2.0]]))[0]
    expected = agent.policy.actions.to_env(mean.clamp(-1, 1).numpy())
    np.testing.assert_allclose(action, expected, rtol=1e-6)
    assert not np.allclose(agent.predict(obs, deterministic=True)[0], expected)
    with pytest.raises(ValueError, match="elapsed_time must be one finite number"):
        agent.predict(obs, elapsed_time=[0.1, 0.2])


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))])
def test_log_probabilities_and_entropies_match_torch_distributions(space):
    from agents import LiquidActor

    actor = LiquidActor(4, space, 8, seed=0, distribution="gaussian", log_std_init=-0.3)
    out = torch.randn(5, 3 if actor.discrete else 2)
    action, log_prob = actor.sample(out)
    lp, entropy = actor.log_prob_entropy(out, action)
    if actor.discrete:
        dist = torch.distributions.Categorical(logits=out)
    else:
        dist = torch.distributions.Independent(
            torch.distributions.Normal(out, actor.log_std.exp().expand_as(out)), 1)
    torch.testing.assert_close(lp, dist.log_prob(action))
    torch.testing.assert_close(log_prob, dist.log_prob(action))
    torch.testing.assert_close(entropy, dist.entropy())
    with pytest.raises(ValueError, match="distribution must be one of"):
        LiquidActor(4, space, 8, distribution="beta")


# ------------------------------------------------------------------------------ gSDE
def test_gsde_log_probabilities_match_torch_distributions():
    from agents import LiquidActor

    actor = LiquidActor(4, gym.spaces.Box(-1, 1, (2,)), 8, seed=0, distribution="gsde",
                        log_std_init=-0.5)
    with torch.no_grad():
        actor.log_std.add_(torch.linspace(-0.3, 0.3, actor.log_std.numel()).reshape(
            actor.log_std.shape))
    assert actor.log_std.shape == (actor.state_dim, 2)
    out, features = torch.randn(5, 2), torch.randn(5, actor.state_dim)
    matrices = actor.gsde_matrices(5)
    action, log_prob = actor.sample(out, features=features, matrices=matrices)
    # the noise is phi @ theta, one matrix per sample
    expected = out + torch.einsum("nh,nha->na", features, matrices)
    torch.testing.assert_close(action, expected)
    sigma = actor.log_std.exp()
    std = (features.square() @ sigma.square() + 1e-6).sqrt()
    dist = torch.distributions.Independent(torch.distributions.Normal(out, std), 1)
    lp, entropy = actor.log_prob_entropy(out, action, features)
    torch.testing.assert_close(lp, dist.log_prob(action))
    torch.testing.assert_close(log_prob, dist.log_prob(action))
    torch.testing.assert_close(entropy, dist.entropy())
    # the features are not trained through the exploration noise (SB3's learn_features=False)
    features.requires_grad_(True)
    actor.log_prob_entropy(out, action, features)[0].sum().backward()
    assert features.grad is None and actor.log_std.grad is not None
    # the matrices' entries are drawn from N(0, sigma^2)
    draws = actor.gsde_matrices(4000)
    torch.testing.assert_close(draws.std(0), sigma.detach(), rtol=0.05, atol=0.0)
    with pytest.raises(ValueError, match="needs the features"):
        actor.log_prob_entropy(out, action)
    with pytest.raises(ValueError, match="needs Box actions"):
        LiquidActor(4, gym.spaces.Discrete(3), 8, distribution="gsde")


@pytest.mark.parametrize("freq", [-1, 3])
def test_gsde_holds_its_matrices_for_sde_sample_freq_steps(freq):
    agent = small("Pendulum-v1", use_sde=True, sde_sample_freq=freq, n_envs=2)
    seen = []
    draw = agent.actor.gsde_matrices
    agent.actor.gsde_matrices = lambda n: seen.append(draw(n)) or seen[-1]
    buf = collect_one_rollout(agent)
    assert len(seen) == (1 if freq == -1 else math.ceil(agent.n_steps / freq))
    assert all(m.shape == (2, agent.actor.state_dim, 1) for m in seen)
    # every stored action is the mean plus the state after the step times the matrix that
    # was held at that step, and the stored log-probability is gSDE's
    with torch.no_grad():
        out, states = agent.actor(buf.obs.transpose(0, 1), buf.states[0][0],
                                  episode_start=buf.episode_start.transpose(0, 1),
                                  return_states=True)
        for t in range(agent.n_steps):
            held = seen[0 if freq == -1 else t // freq]
            noise = torch.einsum("nh,nha->na", states[:, t], held)
            torch.testing.assert_close(buf.actions[t], out[:, t] + noise, atol=1e-5,
                                       rtol=1e-5)
        log_prob = agent.actor.log_prob_entropy(out, buf.actions.transpose(0, 1),
                                                states)[0]
    torch.testing.assert_close(log_prob.transpose(0, 1), buf.log_probs, atol=1e-5, rtol=1e-5)


def test_gsde_first_minibatch_ratio_is_one_and_learning_runs(tmp_path):
    agent = small("Pendulum-v1", use_sde=True, sde_sample_freq=4, n_envs=2, seq_len=8)
    buf = collect_one_rollout(agent)
    L = agent.seq_len
    names = ("obs", "actions", "episode_start", "log_probs")
    batch = {k: buf.windows(getattr(buf, k), L) for k in names}
    starts = [buf.window_starts(s, L) for s in buf.states]
    with torch.no_grad():
        log_prob = agent.window_outputs(batch, starts)[0]
    torch.testing.assert_close(log_prob, batch["log_probs"], atol=1e-5, rtol=1e-5)

    agent = small("Pendulum-v1", use_sde=True, sde_sample_freq=4)
    before = agent.actor.log_std.detach().clone()
    agent.learn(4 * agent.n_steps)
    assert agent.n_updates >= 4 and not torch.equal(before, agent.actor.log_std.detach())
    assert math.isfinite(agent.last_losses["std"])
    # deterministic predictions are the mean; stochastic ones vary
    obs = np.zeros((3, 3), np.float32)
    a1, _ = agent.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a1, agent.predict(obs, deterministic=True)[0])
    assert not np.array_equal(agent.predict(obs)[0], agent.predict(obs)[0])
    # the policy file rebuilds the gSDE actor (its (state, action) log-std included)
    policy = LiquidPolicy.load(agent.policy.save(tmp_path / "policy"))
    assert policy.actor.gsde and policy.actor.log_std.shape == agent.actor.log_std.shape
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], a1)


def test_the_actor_head_reads_the_motor_neurons_through_relu_and_linear_layers():
    """``actor_head=(16, 8)``: 16 motor neurons, then ReLU, Linear(16, 8), ReLU,
    Linear(8, |A|), checked against the same maths written out with the weights."""
    agent = small("PendulumNoVel-v1", actor_neurons=16, actor_head=(16, 8),
                  actor_dense_recurrence=True)
    actor = agent.actor
    c = actor.net.hidden_size
    assert actor.net.out_features == 16
    assert bool(actor.net.command.recurrent_mask[:c].bool().all())
    x = torch.randn(3, 5, actor.config["obs_dim"])
    out, states = actor(x, return_states=True)
    motor = actor.net.motor
    m = states @ (motor.weight * motor.mask).t() + motor.bias
    (w1, b1), (w2, b2) = [(layer.weight, layer.bias) for layer in actor.head
                          if isinstance(layer, torch.nn.Linear)]
    expected = torch.relu(torch.relu(m) @ w1.t() + b1) @ w2.t() + b2
    torch.testing.assert_close(out, expected)
    assert out.shape == (3, 5, 1)
    plain = small("PendulumNoVel-v1", actor_neurons=16, actor_dense_recurrence=True).actor
    motor_params = (16 - 1) * (c + 1)  # the 15 extra motor neurons' weights and biases
    head_params = 16 * 8 + 8 + 8 * 1 + 1
    assert (sum(p.numel() for p in actor.parameters())
            == sum(p.numel() for p in plain.parameters()) + motor_params + head_params)
