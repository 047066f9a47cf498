"""Exploration strategies (agents.neuroflow.exploration), each against a hand computation, and
their saving, resuming and option checks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents import NeuroFlow
from agents.common.distributions import Categoricals
from agents.neuroflow.exploration import (
    Disagreement,
    OptimisticActorCritic,
    ThompsonSampling,
    UCBSelection,
)
from agents.neuroflow.heads import CriticHead

SMALL = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
             critic_hidden=(32, 32))


class TableHead(CriticHead):
    """Fixed member values: ``table`` ``(N, B, out)`` whatever the input."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table, self.n_critics = table, table.shape[0]

    def forward(self, x, *, detach_params=False):
        return self.table


class QuadraticHead(CriticHead):
    """``Q_m(s, a) = -sum_j (a_j - c_mj)^2``, the action being the input's last columns."""

    def __init__(self, centres: torch.Tensor) -> None:
        super().__init__()
        self.centres, self.n_critics = centres, centres.shape[0]

    def forward(self, x, *, detach_params=False):
        a = x[:, -self.centres.shape[1]:]
        return -((a.unsqueeze(0) - self.centres.unsqueeze(1)) ** 2).sum(-1, keepdim=True)


def test_discrete_ucb_picks_the_argmax_of_mean_plus_lambda_std():
    table = torch.tensor([[[1.0, 0.0, 2.5], [0.0, 5.0, 0.0]],
                          [[1.0, 4.0, 2.5], [0.0, 5.0, 3.0]],
                          [[1.0, 2.0, 2.5], [0.0, 5.0, 6.0]]])  # (N=3, B=2, A=3)
    # a strategy gets its parts, not the agent
    actor = SimpleNamespace(discrete=True, choices=Categoricals((3,), single=True))
    for lam, expected in ((0.0, [2, 1]), (2.0, [1, 2])):
        ucb = UCBSelection(actor, TableHead(table), None, lam=lam)
        q = table.numpy()
        by_hand = (q.mean(0) + lam * q.std(0)).argmax(-1)  # numpy's std: the population one
        assert by_hand.tolist() == expected
        assert ucb.act(None, torch.zeros(2, 1)).tolist() == expected
    # MultiDiscrete([2, 1]): the same table read as two entries, each scored on its own
    actor = SimpleNamespace(discrete=True, choices=Categoricals((2, 1)))
    ucb = UCBSelection(actor, TableHead(table), None, lam=2.0)
    scores = table.mean(0) + 2.0 * table.std(0, unbiased=False)
    expected = torch.stack([scores[:, :2].argmax(-1), scores[:, 2:].argmax(-1)], -1)
    assert torch.equal(ucb.act(None, torch.zeros(2, 1)), expected)


def test_box_ucb_takes_the_best_scored_candidate():
    candidates = torch.tensor([[[0.1], [0.5]], [[-0.4], [0.9]], [[0.7], [-0.2]]])  # (k=3, n=2, 1)
    centres = torch.tensor([[0.6], [0.0]])
    actor = SimpleNamespace(act=lambda out, deterministic: candidates.reshape(-1, 1),
                            discrete=False)
    ucb = UCBSelection(actor, QuadraticHead(centres), None, lam=1.5, n_candidates=3)
    chosen = ucb.act(torch.zeros(2, 2), torch.zeros(2, 0))
    a = candidates.squeeze(-1).numpy()  # (k, n)
    q = -(a[None] - centres.numpy()[:, :, None]) ** 2  # (N, k, n)
    best = (q.mean(0) + 1.5 * q.std(0)).argmax(0)
    np.testing.assert_array_equal(chosen.squeeze(-1).numpy(), a[best, [0, 1]])


def test_oac_shifted_mean_matches_the_closed_form_on_a_quadratic_critic():
    centres = torch.tensor([[0.5, -0.3], [0.1, 0.4], [-0.2, 0.0]], dtype=torch.float64)
    beta, delta = 2.0, 0.7
    oac = OptimisticActorCritic(SimpleNamespace(discrete=False), QuadraticHead(centres),
                                beta=beta, delta=delta)
    mu = torch.tensor([[0.3, -0.2], [-0.6, 0.8]], dtype=torch.float64)
    std = torch.tensor([[0.5, 0.2], [0.3, 0.9]], dtype=torch.float64)
    shifted = oac.shifted_mean(mu, std, torch.zeros(2, 0, dtype=torch.float64))

    c = centres.numpy()
    for row in range(2):
        a = np.tanh(mu[row].numpy())
        q = -((a - c) ** 2).sum(1)  # (N,)
        dq = -2 * (a - c)  # (N, A): dQ_m / da
        mean_grad = dq.mean(0)
        q_std = q.std()  # population std, the heads' definition
        std_grad = ((q - q.mean())[:, None] * (dq - mean_grad)).mean(0) / q_std
        g = (mean_grad + beta * std_grad) * (1 - a ** 2)  # chain rule through tanh
        sigma = std[row].numpy() ** 2
        expected = mu[row].numpy() + math.sqrt(2 * delta) * sigma * g / np.sqrt(g @ (sigma * g))
        np.testing.assert_allclose(shifted[row].numpy(), expected, rtol=1e-9)


def test_oac_acts_around_the_shifted_mean():
    agent = NeuroFlow("Pendulum-v1", n_critics=3, exploration="oac", **SMALL)
    oac = agent.exploration
    out = torch.randn(4, 2)
    critic_in = torch.randn(4, agent.critics.in_features - 1)
    mean, log_std = agent.actor.squashed_gaussian(out)
    torch.manual_seed(1)
    action = oac.act(out, critic_in)
    torch.manual_seed(1)
    shifted = oac.shifted_mean(mean, log_std.exp(), critic_in)
    torch.testing.assert_close(action, torch.tanh(shifted + log_std.exp() *
                                                  torch.randn_like(shifted)))


@pytest.mark.parametrize("env_id,steps", [("Pendulum-v1", 900), ("CartPole-v1", 400)])
def test_a_thompson_member_is_fixed_within_an_episode_and_redrawn_per_copy(env_id, steps):
    agent = NeuroFlow(env_id, n_critics=4, n_envs=2, exploration="thompson",
                      **{**SMALL, "learning_starts": 10})
    strategy = agent.exploration
    seen = []
    reset = strategy.reset

    def record(episode_start):
        reset(episode_start)
        seen.append((episode_start.copy(), strategy.members.copy()))

    strategy.reset = record
    agent.learn(steps)
    replay = np.random.default_rng(SMALL["seed"] + 17)
    members = np.zeros(2, np.int64)
    starts = 0
    for episode_start, drawn in seen:
        ids = np.flatnonzero(episode_start)
        if ids.size:  # the same draws, in the same order, from the strategy's generator
            members[ids] = replay.integers(0, 4, ids.size)
            starts += ids.size
        np.testing.assert_array_equal(drawn, members)  # unchanged between episode starts
    assert starts >= 4 and len({tuple(m) for _, m in seen}) > 1


def test_thompson_acts_with_the_drawn_member():
    table = torch.tensor([[[0.0, 30.0]], [[30.0, 0.0]]])  # member 0 prefers action 1
    actor = SimpleNamespace(discrete=True, choices=Categoricals((2,), single=True))
    thompson = ThompsonSampling(actor, TableHead(table), log_alpha=torch.tensor(0.0), n_envs=1,
                                agent_seed=0)
    thompson.members[:] = 0
    assert thompson.act(torch.zeros(1, 2), torch.zeros(1, 1)).tolist() == [1]
    thompson.members[:] = 1
    assert thompson.act(torch.zeros(1, 2), torch.zeros(1, 1)).tolist() == [0]


def test_the_disagreement_bonus_is_zero_when_the_models_agree_and_is_their_variance():
    agent = NeuroFlow("Pendulum-v1", exploration="disagreement",
                      exploration_kwargs={"scale": 2.0, "n_models": 3}, **SMALL)
    strategy = agent.exploration
    n, h = 5, agent.history.state_size
    obs, hist, actions = torch.randn(n, 3), torch.randn(n, h), torch.rand(n, 1)
    x = torch.cat([obs, hist, actions], 1)
    preds = strategy.models(x).detach().numpy()  # (K, n, obs)
    np.testing.assert_allclose(strategy.bonus(obs, hist, actions).numpy(),
                               preds.var(0).mean(-1), rtol=1e-5)
    rewards = torch.zeros(n)
    shaped, logs = strategy.rewards(rewards, obs, hist, actions, obs)
    torch.testing.assert_close(shaped, 2.0 * strategy.bonus(obs, hist, actions))
    assert logs["rollout/intrinsic_reward"] == pytest.approx(
        float(strategy.bonus(obs, hist, actions).mean()))
    with torch.no_grad():  # every model the same function: no disagreement
        for p in (*strategy.models.weights, *strategy.models.biases):
            p.copy_(p[:1].clone().expand_as(p))
    assert torch.count_nonzero(strategy.bonus(obs, hist, actions)) == 0


def test_disagreement_trains_its_models_and_logs_the_bonus(tmp_path):
    agent = NeuroFlow("CartPole-v1", exploration="disagreement", tensorboard_log=str(tmp_path),
                      **SMALL)
    before = [p.detach().clone() for p in agent.exploration.models.parameters()]
    agent.learn(200, log_interval=1)
    after = list(agent.exploration.models.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert agent.last_losses["rollout/intrinsic_reward"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tmp_path.iterdir())))
    events.Reload()
    assert {"rollout/intrinsic_reward", "train/q_epistemic",
            "train/forward_model_loss"} <= set(events.Tags()["scalars"])


def test_the_none_strategy_acts_exactly_as_the_policy():
    agent = NeuroFlow("Pendulum-v1", **SMALL)
    out = torch.randn(3, 2)
    torch.manual_seed(2)
    a = agent.exploration.act(out, None)
    torch.manual_seed(2)
    torch.testing.assert_close(a, agent.actor.act(out, deterministic=False))


def params(agent):
    modules = agent._persistent_modules().values()
    return [t.detach().clone() for m in modules for t in m.state_dict().values()]


@pytest.mark.parametrize("env_id,extra", [
    ("Pendulum-v1", {"critic_head": "deep", "exploration": "thompson",
                     "critic_head_kwargs": {"prior_scale": 1.0, "bootstrap": 0.5}}),
    ("Pendulum-v1", {"critic_head": "batch", "exploration": "ucb",
                     "exploration_kwargs": {"weighted_backup": 20.0}}),
    ("Pendulum-v1", {"critic_head": "liquid", "exploration": "oac",
                     "exploration_kwargs": {"uncertainty": "power_entropy"}}),
    ("Pendulum-v1", {"critic_head": "moe", "exploration": "disagreement",
                     "critic_head_kwargs": {"target_subset": 2}}),
    ("CartPole-v1", {"critic_head": "liquid", "exploration": "thompson", "n_envs": 2,
                     "critic_head_kwargs": {"prior_scale": 2.0}}),
    ("CartPole-v1", {"critic_head": "batch", "exploration": "ucb"}),
])
def test_save_load_and_exact_resume_with_heads_and_strategies(tmp_path, env_id, extra):
    extra = {"n_critics": 3, **extra}
    uninterrupted = NeuroFlow(env_id, **SMALL, **extra)
    uninterrupted.learn(50)
    uninterrupted.learn(50)

    first = NeuroFlow(env_id, **SMALL, **extra)
    first.learn(50)
    path = first.save(tmp_path / "ckpt", include_buffer=True)
    del first
    torch.manual_seed(123)
    np.random.seed(123)
    resumed = NeuroFlow.load(path)
    assert resumed.config == uninterrupted.config
    resumed.learn(50)
    for a, b in zip(params(uninterrupted), params(resumed), strict=True):
        assert torch.equal(a, b)
    assert resumed.last_losses == uninterrupted.last_losses
    np.testing.assert_array_equal(resumed.buffer.actions, uninterrupted.buffer.actions)
    if isinstance(resumed.exploration, ThompsonSampling):
        np.testing.assert_array_equal(resumed.exploration.members,
                                      uninterrupted.exploration.members)
    if isinstance(resumed.exploration, Disagreement):
        assert resumed.exploration.optimizer.state_dict()["state"]


@pytest.mark.parametrize("env_id,kwargs,match", [
    ("Pendulum-v1", {"exploration": "bogus"}, "exploration must be one of"),
    ("Pendulum-v1", {"exploration": "ucb", "n_critics": 1}, "needs at least 2 critic members"),
    ("Pendulum-v1", {"exploration": "thompson", "critic_head": "moe"}, "fixed members"),
    ("CartPole-v1", {"exploration": "oac"}, "supports box actions, not this env's Discrete"),
    ("Pendulum-v1", {"exploration": "oac", "exploration_kwargs": {"betta": 1}},
     r"exploration_kwargs for exploration='oac': unknown option\(s\) \['betta'\]; expected "
     r"some of \['beta', 'delta', 'uncertainty'\]"),
    ("Pendulum-v1", {"exploration": "none", "exploration_kwargs": {"beta": 1}},
     "takes no options"),
    ("Pendulum-v1", {"exploration": "ucb", "exploration_kwargs": {"lam": -1}}, "lam must be"),
])
def test_unknown_or_inconsistent_exploration_options_are_named(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuroFlow(env_id, **{**SMALL, **kwargs})
