"""Critic heads (agents.neuroflow.heads): the member shape, one definition of disagreement, priors,
bootstrap masks and REDQ subsets, each against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import NeuroFlow
from agents.neuroflow.heads import (
    HEADS,
    BatchCritics,
    BayesianCritics,
    CriticHead,
    DeepCritics,
    HeadOptions,
    LiquidCritics,
    WithPrior,
    bootstrap_masks,
    make_critic_head,
)

SMALL = dict(seed=0, learning_starts=32, batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
             critic_hidden=(32, 32))


@pytest.mark.parametrize("kind", HEADS)
def test_every_head_returns_members_and_their_prediction(kind):
    torch.manual_seed(0)
    head = make_critic_head(kind, 6, 2, n_critics=4, hidden=(16, 16))
    x = torch.randn(5, 6)
    q = head(x)
    assert q.shape == (4, 5, 2)
    pred = head.prediction(q)
    w = head.member_weights(q)
    w = torch.full((5, 4), 0.25) if w is None else w
    mean = (w.t().unsqueeze(-1) * q).sum(0)
    torch.testing.assert_close(pred.mean, mean)
    torch.testing.assert_close(pred.epistemic, (w.t().unsqueeze(-1) * (q - mean) ** 2).sum(0))
    torch.testing.assert_close(head.uncertainty(q), pred.epistemic.clamp_min(1e-12).sqrt())
    # the detached call gives the same values, with gradients reaching only the input
    x.requires_grad_(True)
    if head.fixed_members:
        torch.testing.assert_close(head(x, detach_params=True), q)
    head(x, detach_params=True).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in head.parameters())


def test_two_uniform_members_spread_is_oacs_half_difference():
    head = DeepCritics(3, 1, 2, (8,))
    q = head(torch.randn(7, 3))
    torch.testing.assert_close(head.uncertainty(q), (q[0] - q[1]).abs() / 2)


@pytest.mark.parametrize("ncp_neurons", [None, 12])
def test_the_deep_heads_optimism_gradient_equals_autograds(ncp_neurons):
    torch.manual_seed(0)
    head = DeepCritics(5, 1, 4, (16, 16), ncp_neurons=ncp_neurons).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    fast = head.optimism_gradient(x, beta=2.5)
    # the generic path: autograd through the members, the Prediction and the spread
    slow = CriticHead.optimism_gradient(head, x, beta=2.5)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    # by hand, from the members' own input gradients
    xs = x.clone().requires_grad_(True)
    q = head(xs).squeeze(-1)  # (N, B)
    dq = torch.stack([torch.autograd.grad(q[m].sum(), xs, retain_graph=True)[0]
                      for m in range(4)])  # (N, B, in)
    dev = (q - q.mean(0)).detach()
    by_hand = dq.mean(0) + 2.5 * (dev.unsqueeze(-1) * dq).mean(0) / dev.std(0, correction=0
                                                                              ).unsqueeze(-1)
    torch.testing.assert_close(fast, by_hand, rtol=1e-8, atol=1e-10)
    assert all(p.grad is None for p in head.parameters())


def test_agreeing_members_give_the_mean_gradient_only():
    head = DeepCritics(3, 1, 3, (8,))
    with torch.no_grad():
        for w in (*head.weights, *head.biases):
            w.copy_(w[:1].expand_as(w))  # three copies of one member: no spread
    x = torch.randn(4, 3)
    torch.testing.assert_close(head.optimism_gradient(x, beta=10.0),
                               head.optimism_gradient(x, beta=0.0))
    torch.testing.assert_close(head.optimism_gradient(x, beta=10.0),
                               CriticHead.optimism_gradient(head, x, beta=10.0))


def test_the_batch_head_shares_one_weight_and_differs_by_rank_one_factors():
    torch.manual_seed(0)
    head = BatchCritics(4, 1, 3, (8,))
    layer = head.net[0]
    x = torch.randn(5, 4)
    q = head(x)
    # member 1, first layer by hand: ((x * r_1) W^T) * s_1 + b_1, then relu, then layer 2
    hidden = torch.relu((x * layer.r[1]) @ layer.weight.t() * layer.s[1] + layer.bias[1])
    out = head.net[2]
    by_hand = (hidden * out.r[1]) @ out.weight.t() * out.s[1] + out.bias[1]
    torch.testing.assert_close(q[1], by_hand)
    assert not torch.allclose(q[0], q[1])
    n_shared = layer.weight.numel() + out.weight.numel()
    n_fast = sum(p.numel() for m in (layer, out) for p in m.fast_parameters())
    assert sum(p.numel() for p in head.parameters()) == n_shared + n_fast


def test_the_liquid_head_value_is_power_weighted_and_its_confidences_are_usable():
    torch.manual_seed(0)
    head = LiquidCritics(4, 1, 3, (8,))
    q = head(torch.randn(6, 4))
    power = head.layer.last_power
    torch.testing.assert_close(power.sum(-1), torch.full((6,), 3.0))
    torch.testing.assert_close(head.reduce(q, "mean"),
                               (power.t().unsqueeze(-1) * q).sum(0) / 3)
    assert set(head.prediction(q).confidences) >= {"power_entropy", "self_delegation"}
    u = head.uncertainty(q, "power_entropy")
    torch.testing.assert_close(u[:, 0], 1 - head.layer.confidence_power_entropy())
    with pytest.raises(ValueError, match="uncertainty must be"):
        head.uncertainty(q, "bogus")
    with pytest.raises(ValueError, match="needs critic_head='liquid'"):
        DeepCritics(4, 1, 2, (8,)).uncertainty(q, "power_entropy")


def test_the_bayesian_head_draws_new_members_at_every_call_and_adds_its_kl():
    torch.manual_seed(0)
    head = BayesianCritics(3, 1, 4, (8,), kl_weight=0.5)
    x = torch.randn(5, 3)
    assert not torch.equal(head(x), head(x))
    q = head(x).squeeze(-1)
    target = torch.zeros(5)
    plain = 0.5 * ((q - target) ** 2).mean(1).sum()
    torch.testing.assert_close(head.loss(q, target),
                               plain + 0.5 * head.group.distribution_loss())


def test_a_randomised_prior_is_added_and_receives_no_gradient():
    agent = NeuroFlow("Pendulum-v1", n_critics=3, critic_head_kwargs={"prior_scale": 3.0},
                      **SMALL)
    head = agent.critics
    assert isinstance(head, WithPrior)
    prior = [p.detach().clone() for p in head.prior.parameters()]
    x = torch.randn(4, head.in_features)
    torch.testing.assert_close(head(x), head.head(x) + 3.0 * head.prior(x))
    agent.learn(60)
    for before, p in zip(prior, head.prior.parameters(), strict=True):
        assert p.grad is None and torch.equal(before, p)
    assert all(p.grad is not None for p in head.head.parameters())
    for p in head.prior.parameters():
        assert not any(p is q for group in agent.optimizer.param_groups for q in group["params"])


def test_bootstrap_masks_have_a_member_per_row_and_the_right_rate():
    masks = bootstrap_masks(20000, 5, 0.3, np.random.default_rng(0))
    assert masks.min(1).min() >= 0 and (masks.sum(1) >= 1).all()
    # P(m = 1) = p + (1 - p)^N / N (an empty row gets one member at random)
    assert masks.mean() == pytest.approx(0.3 + 0.7 ** 5 / 5, abs=0.01)


def test_masked_members_get_no_loss_and_no_gradient():
    head = DeepCritics(3, 1, 3, (8,))
    q = head(torch.randn(6, 3)).squeeze(-1)
    target = torch.randn(6)
    masks = torch.tensor([[1.0] * 6, [0.0] * 6, [1, 0, 1, 0, 1, 0]])
    loss = head.loss(q, target, masks)
    by_hand = 0.5 * sum(float((masks[m] * (q[m].detach() - target) ** 2).mean()) for m in range(3))
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(head.weights[0].grad[1]) == 0
    assert torch.count_nonzero(head.weights[0].grad[0]) > 0


def test_the_agent_trains_a_member_only_on_its_own_transitions():
    agent = NeuroFlow("Pendulum-v1", n_critics=3, critic_head_kwargs={"bootstrap": 0.5},
                      **SMALL)
    agent.learn(50)
    assert agent.buffer.masks.shape[-1] == 3
    held = agent.buffer.masks[:, :int(agent.buffer.sizes[0])]
    assert set(np.unique(held)) <= {0.0, 1.0} and (held.sum(-1) >= 1).all()
    agent.buffer.masks[..., 1] = 0.0  # member 1 owns no transition
    agent.train_step()
    assert torch.count_nonzero(agent.critics.weights[0].grad[1]) == 0
    assert torch.count_nonzero(agent.critics.weights[0].grad[0]) > 0


def test_redq_targets_take_the_minimum_over_a_random_subset():
    agent = NeuroFlow("Pendulum-v1", n_critics=5, critic_head_kwargs={"target_subset": 2},
                      **SMALL)
    q = torch.arange(5.0).reshape(5, 1, 1) * torch.ones(5, 3, 1)
    torch.manual_seed(4)
    members = torch.randperm(5)[:2]
    torch.manual_seed(4)
    torch.testing.assert_close(agent._reduce_target(q), q[members].min(0).values)


@pytest.mark.parametrize("kind,kwargs,n,match", [
    ("bogus", {}, 2, "critic_head must be one of"),
    ("deep", {"solver": "sink_one"}, 2, r"unknown \['solver'\]"),
    ("liquid", {}, 1, "needs n_critics >= 2"),
    ("deep", {"bootstrap": 0.5}, 1, "bootstrap masks need n_critics >= 2"),
    ("deep", {"bootstrap": 0.0}, 2, r"bootstrap must be in \(0, 1\]"),
    ("deep", {"target_subset": 3}, 2, "at most n_critics=2"),
    ("moe", {"prior_scale": 1.0}, 2, "prior_scale is for heads with fixed members"),
])
def test_bad_head_options_are_named(kind, kwargs, n, match):
    with pytest.raises(ValueError, match=match):
        HeadOptions.parse(kind, kwargs, n)
