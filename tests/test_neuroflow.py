"""NeuroFlow: liquid SAC for Box and Discrete actions with sequence replay."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from rl_envs import BadEnv, CounterEnv, CueEnv, MalformedEnv

from agents import NeuroFlow
from agents.neuroflow.targets import n_step_targets
from envs import make_vec_env


def small(env, **kw):
    defaults = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2,
                    actor_neurons=8, critic_hidden=(32, 32))
    defaults.update(kw)
    return NeuroFlow(env, **defaults)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_short_learning_run_updates_everything(env_id):
    agent = small(env_id)
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    critic_before = [p.detach().clone() for p in agent.critics.parameters()]
    target_before = [p.detach().clone() for p in agent.critic_targets.parameters()]
    alpha_before = agent.alpha
    agent.learn(200)
    assert agent.num_timesteps == 200
    assert agent.n_updates == 200 - 32 + 1
    assert all(math.isfinite(v) for v in agent.last_losses.values())
    for before, module in ((actor_before, agent.actor), (critic_before, agent.critics),
                           (target_before, agent.critic_targets)):
        assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))
    assert agent.alpha != alpha_before
    action, state = agent.predict(agent.observation_space.sample(), deterministic=True)
    assert agent.action_space.contains(np.asarray(action, dtype=agent.action_space.dtype))
    assert state.shape == (1, agent.actor.state_dim)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("terminate", [True, False])
def test_vector_env_transitions_never_mix_episodes(mode, terminate):
    venv = make_vec_env(lambda: CounterEnv(5, terminate=terminate), 3, autoreset_mode=mode)
    agent = small(venv, learning_starts=10_000, buffer_size=3000)
    agent.learn(150)
    buf = agent.buffer
    assert agent.num_timesteps == 150 and len(buf) == 150
    for e in range(3):
        n = buf.sizes[e]
        obs, nxt = buf.obs[e, :n], buf.next_obs[e, :n]
        # Every stored transition is a real one: the counter moves by one within an episode
        # (NEXT_STEP's reset step, which would jump back to 0, is never stored).
        np.testing.assert_array_equal(nxt[:, 0], obs[:, 0] + 1)
        np.testing.assert_array_equal(nxt[:, 1], obs[:, 1])
        np.testing.assert_array_equal(buf.episode_start[e, :n], obs[:, 0] == 0)
        last = nxt[:, 0] == 5
        # Only a real termination stops bootstrapping; a time-limit truncation does not.
        np.testing.assert_array_equal(buf.terminated[e, :n], last if terminate else 0 * last)
        # The actor state is reset when an episode starts, while acting.
        starts = buf.episode_start[e, :n] == 1
        assert np.all(buf.states[e, :n][starts] == 0)
        assert np.any(buf.states[e, :n][~starts] != 0)


def test_terminated_and_truncated_bootstrap_differently():
    agent = small("CartPole-v1")
    torch.manual_seed(1)
    n = 6
    next_obs = torch.randn(n, 4)
    state = torch.randn(n, agent.actor.state_dim)
    rewards = torch.arange(n, dtype=torch.float32)
    alpha = torch.tensor(0.3)
    terminal = agent.td_target(rewards, torch.ones(n), next_obs, state, alpha)
    cont = agent.td_target(rewards, torch.zeros(n), next_obs, state, alpha)
    torch.testing.assert_close(terminal, rewards)
    # Independent soft value of the successor for the discrete policy.
    with torch.no_grad():
        out, h = agent.actor.net(next_obs, state)
        probs = torch.softmax(out, -1)
        q = agent.critic_targets(torch.cat([next_obs, h], 1)).min(0).values
        v = (probs * (q - alpha * torch.log(probs))).sum(-1)
    torch.testing.assert_close(cont, rewards + agent.gamma * v)


def test_sac_discrete_target_entropy_is_positive_and_actor_loss_uses_all_actions():
    agent = small("CartPole-v1")
    assert agent.target_entropy == pytest.approx(0.89 * math.log(2))
    torch.manual_seed(2)
    out = torch.randn(5, 2, requires_grad=True)
    critic_in = torch.randn(5, 4 + agent.actor.state_dim)
    alpha = torch.tensor(0.7)
    loss, entropy = agent.actor_loss(out, critic_in, alpha)
    probs, log_probs = torch.softmax(out, -1), torch.log_softmax(out, -1)
    q = agent.critics(critic_in).min(0).values.detach()
    expected = (probs * (alpha * log_probs - q)).sum(-1).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(entropy, -(probs * log_probs).sum(-1).detach())
    # The gradient matches the full expectation's gradient (a sampled-action log-prob would not).
    (g,) = torch.autograd.grad(loss, out)
    (g_expected,) = torch.autograd.grad(expected, out)
    torch.testing.assert_close(g, g_expected)
    # Temperature moves towards the target: below-target entropy raises alpha.
    assert small("Pendulum-v1").target_entropy == -1.0


def test_continuous_log_prob_matches_the_change_of_variables():
    agent = small("Pendulum-v1")
    torch.manual_seed(3)
    out = torch.randn(4000, 2)
    torch.manual_seed(4)
    action, log_prob = agent.actor.sample_continuous(out)
    torch.manual_seed(4)
    mean, log_std = agent.actor.squashed_gaussian(out)
    base = torch.distributions.Normal(mean, log_std.exp())
    u = mean + log_std.exp() * torch.randn_like(mean)
    expected = base.log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2 + 1e-12).sum(-1)
    torch.testing.assert_close(action, torch.tanh(u))
    ok = (1 - torch.tanh(u).abs() > 1e-4).squeeze(-1)  # avoid the float32 saturation of tanh
    torch.testing.assert_close(log_prob[ok], expected[ok], rtol=1e-4, atol=1e-4)


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        agent = small("Pendulum-v1")
        agent.learn(120)
        runs.append((agent, dict(agent.last_losses)))
    (a, la), (b, lb) = runs
    assert la == lb
    for p, q in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(a.critics.parameters(), b.critics.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize(
    "obs_space, act_space, fragment",
    [
        (gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (2, 4, 4))}), gym.spaces.Discrete(2),
         "image"),
        (gym.spaces.Text(5), gym.spaces.Discrete(2), "Text"),
        (gym.spaces.Box(0, 255, (3, 8, 8), np.uint8), gym.spaces.Discrete(2), "image"),
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiDiscrete([[2, 3]]), "MultiDiscrete"),
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.Text(3), "Text"),
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-np.inf, np.inf, (1,)), "finite bounds"),
    ],
)
def test_unsupported_spaces_are_refused_by_name(obs_space, act_space, fragment):
    class Env(gym.Env):
        observation_space, action_space = obs_space, act_space

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    with pytest.raises(ValueError, match=fragment):
        NeuroFlow(Env())


def test_non_finite_observation_names_the_step():
    agent = small(BadEnv(bad_step=7))
    with pytest.raises(ValueError, match=r"on step 7 of its episode, returned a non-finite "
                                         r"observation"):
        agent.learn(50)
    # a vector env is not wrapped: the agent's own check names its step count
    venv = gym.vector.SyncVectorEnv([lambda: BadEnv(bad_step=7)])
    with pytest.raises(ValueError, match=r"non-finite observation at step 6"):
        small(venv).learn(50)


@pytest.mark.parametrize("mode,fragment", [
    ("shape", r"malformed observation: expected a numeric array of shape \(2,\)"),
    ("reward", r"malformed reward: expected one finite number, got 'one'"),
    ("flag", r"returned terminated=1; expected a bool"),
])
def test_malformed_environment_output_is_named(mode, fragment):
    with pytest.raises(ValueError, match=fragment):
        small(MalformedEnv(mode)).learn(20)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="seq_len"):
        NeuroFlow("CartPole-v1", seq_len=0)
    with pytest.raises(ValueError, match="n_step must be an integer >= 1, got 0"):
        NeuroFlow("CartPole-v1", n_step=0)
    with pytest.raises(ValueError, match="ent_coef"):
        NeuroFlow("CartPole-v1", ent_coef="sometimes")
    with pytest.raises(ValueError, match="NoSuchEnv"):
        NeuroFlow("NoSuchEnv-v0")
    agent = small("CartPole-v1")
    with pytest.raises(ValueError, match=r"\(4,\)"):
        agent.predict(np.zeros(3))


def evaluate(agent: NeuroFlow, env: gym.Env, episodes: int) -> float:
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=1000 + ep)
        state, done = None, False
        while not done:
            action, state = agent.predict(obs, state, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
    return total / episodes


@pytest.mark.slow
def test_learns_a_memory_task_that_needs_recurrence():
    """CueEnv: act on a cue seen two steps earlier. Chance is 0.5; memory gives 1."""
    agent = NeuroFlow(CueEnv(delay=2), seed=0, learning_starts=200, batch_size=64, seq_len=4,
                      burn_in=2, actor_neurons=16, learning_rate=1e-3)
    agent.learn(2000)
    assert evaluate(agent, CueEnv(delay=2), 100) >= 0.95


@pytest.mark.parametrize("trains_state", [False, True])
def test_critic_trains_state_controls_whether_critic_loss_reaches_the_actor(trains_state):
    agent = small("CartPole-v1", critic_trains_state=trains_state, learning_starts=10_000)
    agent.learn(100)  # fill the buffer, no updates yet
    agent.actor_loss = lambda out, critic_in, alpha: (0.0 * out.sum(), torch.zeros(out.shape[0]))
    before = [p.detach().clone() for p in agent.actor.net.command.parameters()]
    agent.train_step()
    changed = any(not torch.equal(b, p)
                  for b, p in zip(before, agent.actor.net.command.parameters(), strict=True))
    assert changed == trains_state
    # The motor layer only feeds the policy: the critic loss never reaches it.
    assert agent.actor.net.motor.weight.grad is None or not agent.actor.net.motor.weight.grad.any()


def test_shared_encoder_targets_read_a_soft_updated_copy_of_the_actor_network():
    agent = small("CartPole-v1", critic_trains_state=True, learning_starts=10_000, tau=0.25)
    plain = small("CartPole-v1", learning_starts=10_000)
    assert plain.actor_target is None
    target = agent.actor_target
    assert all(not p.requires_grad for p in target.parameters())
    agent.learn(100)
    before = [p.detach().clone() for p in target.parameters()]
    agent.train_step()
    # one soft update: target <- target + tau (online - target), after the online step
    for b, t, o in zip(before, target.parameters(), agent.actor.parameters(), strict=True):
        torch.testing.assert_close(t, b + 0.25 * (o - b))
    # the TD target's critic input comes from the target network, the policy from the
    # online one: changing the target network changes the target, nothing else does
    n = 4
    obs, state = torch.randn(n, agent.obs_dim), torch.randn(n, agent.actor.state_dim)
    crit = torch.randn(n, agent.actor.state_dim)
    args = (torch.ones(n), torch.zeros(n), obs, state, torch.tensor(0.1))
    t0 = agent.td_target(*args, critic_state=crit)
    _, next_crit = target(obs, crit)
    log_probs = torch.log_softmax(agent.actor(obs, state)[0], -1)
    probs = log_probs.exp()
    q = agent.critic_targets(torch.cat([obs, next_crit], 1)).min(0).values
    expected = 1.0 + agent.gamma * (probs * (q - 0.1 * log_probs)).sum(-1)
    torch.testing.assert_close(t0, expected)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.5)
    assert not torch.allclose(agent.td_target(*args, critic_state=crit), t0)


def test_target_q_reduction():
    agent = small("CartPole-v1", target_q="mean")
    q = torch.tensor([[[1.0, 4.0]], [[3.0, 0.0]]])
    torch.testing.assert_close(agent._reduce_target(q), torch.tensor([[2.0, 2.0]]))
    agent.target_q = "min"
    torch.testing.assert_close(agent._reduce_target(q), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="target_q"):
        small("CartPole-v1", target_q="max")


def test_own_critic_encoder_is_trained_by_the_critic_loss_only():
    agent = small("CartPole-v1", critic_encoder="own", learning_starts=10_000)
    agent.learn(100)  # fill the buffer, no updates yet
    h = agent.actor.state_dim
    # Replay keeps both states side by side, both reset where an episode starts.
    assert agent.buffer.states.shape[-1] == h + agent.critic_encoder.hidden_size
    starts = agent.buffer.episode_start[0, :100] == 1
    assert np.all(agent.buffer.states[0, :100][starts] == 0)
    assert np.any(agent.buffer.states[0, :100][~starts][:, h:] != 0)
    agent.actor_loss = lambda out, critic_in, alpha: (0.0 * out.sum(), torch.zeros(out.shape[0]))
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    encoder_before = [p.detach().clone() for p in agent.critic_encoder.command.parameters()]
    agent.train_step()
    assert all(torch.equal(b, p) for b, p in zip(actor_before, agent.actor.parameters(),
                                                 strict=True))
    assert any(not torch.equal(b, p) for b, p in zip(
        encoder_before, agent.critic_encoder.command.parameters(), strict=True))


def test_own_critic_encoder_target_uses_the_encoder_state():
    agent = small("CartPole-v1", critic_encoder="own")
    torch.manual_seed(5)
    n = 6
    next_obs, rewards, alpha = torch.randn(n, 4), torch.rand(n), torch.tensor(0.2)
    actor_state = torch.randn(n, agent.actor.state_dim)
    encoder_state = torch.randn(n, agent.critic_encoder.hidden_size)
    got = agent.td_target(rewards, torch.zeros(n), next_obs, actor_state, alpha,
                          critic_state=encoder_state)
    with torch.no_grad():
        out, _ = agent.actor.net(next_obs, actor_state)
        probs = torch.softmax(out, -1)
        _, e = agent.critic_encoder(next_obs, encoder_state)
        q = agent.critic_targets(torch.cat([next_obs, e], 1)).min(0).values
        v = (probs * (q - alpha * torch.log(probs))).sum(-1)
    torch.testing.assert_close(got, rewards + agent.gamma * v)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_short_learning_run_with_own_critic_encoder(env_id):
    agent = small(env_id, critic_encoder="own")
    before = [p.detach().clone() for p in agent.critic_encoder.parameters()]
    agent.learn(120)
    assert all(math.isfinite(v) for v in agent.last_losses.values())
    assert any(not torch.equal(b, p)
               for b, p in zip(before, agent.critic_encoder.parameters(), strict=True))
    _, state = agent.predict(np.zeros(agent.obs_dim, np.float32))
    assert state.shape == (1, agent.actor.state_dim)  # acting needs the actor only


def test_critic_encoder_options_are_checked():
    with pytest.raises(ValueError, match="critic_encoder"):
        small("CartPole-v1", critic_encoder="mlp")
    with pytest.raises(ValueError, match="critic_trains_state"):
        small("CartPole-v1", critic_encoder="own", critic_trains_state=True)


def test_learning_rate_schedule_follows_the_remaining_progress():
    calls = []

    def schedule(progress):
        calls.append(progress)
        return 1e-3 * progress

    agent = small("Pendulum-v1", learning_rate=schedule)
    assert calls == [1.0]  # the initial rate
    agent.learn(100)
    # SB3's convention: progress remaining goes from 1 to 0 over one learn() call and is
    # applied before the updates of each step.
    expected = [1.0 - t / 100 for t in range(32, 101)]
    np.testing.assert_allclose(calls[1:], expected)
    assert len(agent.optimizer.param_groups) == 3  # actor, critics, temperature
    for group in agent.optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * expected[-1])
    with pytest.raises(ValueError, match="learning_rate"):
        small("Pendulum-v1", learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"schedule returned nan"):
        small("Pendulum-v1", learning_rate=lambda p: float("nan"))


def test_function_callback_sees_every_step_and_can_stop_training():
    seen = []

    def callback(locals_, globals_):
        seen.append(locals_["self"].num_timesteps)
        return locals_["self"].num_timesteps < 40

    agent = small("CartPole-v1")
    agent.learn(100, callback=callback)
    # Called after every env step (a NEXT_STEP autoreset step adds no transition, so a
    # count can repeat); training stops at the first false return.
    assert sorted(set(seen)) == list(range(1, 41)) and seen[-1] == agent.num_timesteps == 40

    class NotACallback:
        pass

    with pytest.raises(ValueError, match="NotACallback"):
        agent.learn(10, callback=NotACallback())


def _n_step_reference(one_step, rewards, terminated, episode_start, n, gamma):
    """G_t by walking each step forward, one Python float at a time."""
    B, T = one_step.shape
    out = torch.zeros(B, T - n + 1, dtype=torch.float64)
    for b in range(B):
        for t in range(T - n + 1):
            total, disc = 0.0, 1.0
            for k in range(n):
                j = t + k
                ends = bool(terminated[b, j]) or (k < n - 1 and bool(episode_start[b, j + 1]))
                if ends or k == n - 1:
                    total += disc * float(one_step[b, j])
                    break
                total += disc * float(rewards[b, j])
                disc *= gamma
            out[b, t] = total
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_n_step_targets_stop_at_episode_ends(n):
    # Worked example, n = 3, gamma = 0.5 would give for t = 0 with r = 1, 2, 3 and no end:
    # 1 + 0.5 * 2 + 0.25 * one_step_2. Here random values with a terminal step (j = 2),
    # a truncation (a new episode starts at j = 5) and an episode start at j = 0.
    T = 8 + n - 1
    g = torch.Generator().manual_seed(n)
    one_step = torch.randn(2, T, generator=g)
    rewards = torch.randn(2, T, generator=g)
    terminated = torch.zeros(2, T)
    terminated[0, 2] = 1.0
    start = torch.zeros(2, T)
    start[0, 0] = start[0, 3] = start[1, 5] = 1.0
    got = n_step_targets(one_step, rewards, terminated, start, n, 0.9)
    ref = _n_step_reference(one_step, rewards, terminated, start, n, 0.9)
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-6)
    if n == 1:
        torch.testing.assert_close(got, one_step)


def test_n_step_worked_example():
    one_step = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    zeros = torch.zeros(1, 4)
    got = n_step_targets(one_step, rewards, zeros, zeros, 3, 0.5)
    torch.testing.assert_close(got, torch.tensor([[1 + 0.5 * 2 + 0.25 * 30.0,
                                                   2 + 0.5 * 3 + 0.25 * 40.0]]))
    # a terminal second step: G_0 = r_0 + gamma * one_step_1 (which holds no bootstrap)
    term = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    got = n_step_targets(one_step, rewards, term, zeros, 3, 0.5)
    assert got[0, 0].item() == pytest.approx(1 + 0.5 * 20.0)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPoleNoVel-v1"])
def test_short_learning_run_with_n_step_targets(env_id):
    agent = small(env_id, n_step=3, critic_trains_state=True)
    before = [p.detach().clone() for p in agent.critics.parameters()]
    agent.learn(120)
    assert agent.n_updates > 0
    assert all(not torch.equal(b, p) for b, p in zip(before, agent.critics.parameters(),
                                                     strict=True))
    assert all(np.isfinite(v) for v in agent.last_losses.values())
