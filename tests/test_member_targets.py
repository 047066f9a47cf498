"""Per-member targets (``target_q="member"``), critics that read no history
(``critic_encoder="none"``) and the tuned exploration settings on the command line."""

from __future__ import annotations

import json

import pytest
import torch

from agents import NeuroFlow
from agents.common.hyperparams import TUNED_HYPERPARAMS
from agents.neuroflow.heads import make_critic_head
from agents.neuroflow.targets import n_step_targets
from velora_ens.cli import main

SMALL = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
             critic_hidden=(32, 32), n_critics=3)


def test_discrete_member_targets_are_each_members_soft_greedy_value():
    agent = NeuroFlow("CartPole-v1", target_q="member", critic_encoder="none",
                      ent_coef=0.3, **SMALL)
    n = 6
    next_obs, state = torch.randn(n, 4), torch.randn(n, agent.actor.state_dim)
    rewards, terminated = torch.randn(n), torch.tensor([0., 1., 0., 0., 1., 0.])
    alpha = torch.tensor(0.3)
    target = agent.td_target(rewards, terminated, next_obs, state, alpha)
    q_next = agent.critic_targets(next_obs).detach()  # (N, n, 2): obs only, no history
    manual = torch.stack([
        rewards + 0.99 * (1 - terminated) * 0.3 * torch.log(torch.exp(q_next[k] / 0.3).sum(-1))
        for k in range(3)])
    torch.testing.assert_close(target, manual)
    assert target.shape == (3, n)


def test_box_member_targets_use_each_target_member_at_the_actors_next_action():
    agent = NeuroFlow("Pendulum-v1", target_q="member", **SMALL)
    n = 5
    next_obs, state = torch.randn(n, 3), torch.randn(n, agent.actor.state_dim)
    rewards, terminated = torch.randn(n), torch.zeros(n)
    alpha = torch.tensor(0.2)
    torch.manual_seed(7)
    target = agent.td_target(rewards, terminated, next_obs, state, alpha)
    torch.manual_seed(7)
    with torch.no_grad():
        out, next_state = agent.actor(next_obs, state)
        action, log_prob = agent.actor.sample_continuous(out)
        q = agent.critic_targets(torch.cat([next_obs, next_state, action], 1)).squeeze(-1)
    torch.testing.assert_close(target, rewards + 0.99 * (q - 0.2 * log_prob))
    # the shared target is the minimum of the same values
    agent.target_q = "min"
    torch.manual_seed(7)
    shared = agent.td_target(rewards, terminated, next_obs, state, alpha)
    torch.testing.assert_close(shared, rewards + 0.99 * (q.min(0).values - 0.2 * log_prob))


def test_a_members_loss_reads_its_own_target_only():
    head = make_critic_head("deep", 4, 1, n_critics=3, hidden=(16,))
    q = head(torch.randn(8, 4)).squeeze(-1)
    target = torch.randn(3, 8)
    (grad,) = torch.autograd.grad(head.loss(q, target), q)
    # d loss / d q_k = (q_k - y_k) / n: member k sees y_k only
    torch.testing.assert_close(grad, (q - target).detach() / 8)


def test_the_liquid_heads_combined_loss_uses_the_power_weighted_member_targets():
    head = make_critic_head("liquid", 4, 1, n_critics=3, hidden=(16,))
    q = head(torch.randn(8, 4)).squeeze(-1)
    target = torch.randn(3, 8)
    w = head.member_weights(q).t()  # (N, B), sums to 1 over the members
    manual = (0.5 * (q - target).square().mean(1).sum()
              + 0.5 * ((w * q).sum(0) - (w * target).sum(0)).square().mean()
              + head.layer.auxiliary_loss())
    torch.testing.assert_close(head.loss(q, target), manual)


def test_member_targets_train_with_n_step_returns_and_bootstrap_masks():
    agent = NeuroFlow("CartPole-v1", target_q="member", n_step=3, exploration="thompson",
                      critic_head_kwargs={"prior_scale": 1.0, "bootstrap": 0.5}, **SMALL)
    agent.learn(120)
    assert all(torch.isfinite(p).all() for p in agent.critics.parameters())


def test_member_n_step_targets_are_the_per_member_n_step_targets():
    # the rows trick in NeuroFlow.train_step: N members' targets as N * B sequences
    B, T, N, n = 2, 5, 3, 3
    one_step = torch.randn(N, B * T)
    rewards, terminated = torch.randn(B, T), torch.zeros(B, T)
    terminated[0, 2] = 1
    starts = torch.zeros(B, T)
    starts[1, 3] = 1
    rows = one_step.reshape(N * B, T)
    together = n_step_targets(rows, rewards.repeat(N, 1), terminated.repeat(N, 1),
                              starts.repeat(N, 1), n, 0.9).reshape(N, -1)
    for k in range(N):
        torch.testing.assert_close(together[k], n_step_targets(
            one_step[k].reshape(B, T), rewards, terminated, starts, n, 0.9).reshape(-1))


def test_member_targets_exclude_redq_subsets():
    with pytest.raises(ValueError, match="target_q='member'.*target_subset"):
        NeuroFlow("Pendulum-v1", target_q="member", critic_head_kwargs={"target_subset": 2},
                  **SMALL)
    with pytest.raises(ValueError, match="target_q must be 'min', 'mean' or 'member'"):
        NeuroFlow("Pendulum-v1", target_q="max", **SMALL)


def test_critics_without_history_read_the_observation_only():
    agent = NeuroFlow("CartPole-v1", critic_encoder="none", exploration="thompson", **SMALL)
    assert agent.critics.in_features == 4  # CartPole's observation, no liquid state
    agent.learn(100)
    x = torch.randn(3, 4)
    assert agent.critics(x).shape == (3, 3, 2)
    with pytest.raises(ValueError, match="critic_trains_state applies"):
        NeuroFlow("CartPole-v1", critic_encoder="none", critic_trains_state=True, **SMALL)
    with pytest.raises(ValueError, match="'actor', 'own' or 'none'"):
        NeuroFlow("CartPole-v1", critic_encoder="mine", **SMALL)


def test_train_on_mountain_car_uses_the_tuned_exploration(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env", "MountainCarContinuous-v0", "--timesteps", "300",
                 "--no-progress", "--no-video", "--eval-episodes", "1",
                 "--eval-freq", "300"]) == 0
    saved = json.loads((tmp_path / "runs" / "MountainCarContinuous-v0_seed0_1"
                        / "config.json").read_text())
    assert saved["neuroflow"] == json.loads(json.dumps(
        TUNED_HYPERPARAMS["MountainCarContinuous-v0"]))
    assert saved["neuroflow"]["exploration"] == "disagreement"


def test_deep_sea_trains_from_the_command_line_without_a_video(tmp_path, capsys, monkeypatch):
    pytest.importorskip("bsuite")
    pytest.importorskip("shimmy")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env", "DeepSea-v0", "--timesteps", "200", "--no-progress",
                 "--eval-episodes", "1", "--eval-freq", "200"]) == 0
    out = capsys.readouterr().out
    assert "video         (none: DeepSea-v0 has no rgb_array rendering)" in out
    assert '"exploration": "thompson"' in out
    run = tmp_path / "runs" / "DeepSea-v0_seed0_1" / "final_model"
    assert main(["record", str(run), "--out", str(tmp_path / "v")]) == 2
    assert "DeepSea-v0 has no 'rgb_array' render mode" in capsys.readouterr().err
