"""The small objects NeuroFlow's update is made of, each against a worked example:
the critic loss's weights, the temperature, the target rules."""

from __future__ import annotations

import math

import pytest
import torch

from agents.neuroflow.heads import loss_weights, make_critic_head
from agents.neuroflow.targets import reduce_members
from agents.neuroflow.temperature import EntropyTemperature


def test_loss_weights_cut_the_target_steps_and_multiply_the_masks():
    B, S, N = 2, 2, 2  # 2 sequences of 3 target steps (T), the first 2 trained (S)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # (B T,), sequence-major
    masks = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]],
                          [[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]]])  # (B, T, N)
    got = loss_weights(masks, weights, B, S)
    # the trained steps are (b0, t0), (b0, t1), (b1, t0), (b1, t1): weights 1, 2, 4, 5
    expected = torch.tensor([[1.0, 0.0, 4.0, 0.0],    # member 0's masks
                             [0.0, 2.0, 4.0, 0.0]])   # member 1's
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(loss_weights(None, weights, B, S),
                               torch.tensor([1.0, 2.0, 4.0, 5.0]))
    assert loss_weights(None, None, B, S) is None
    assert loss_weights(masks, None, B, S).shape == (N, B * S)


def test_the_temperature_targets_and_its_gradient():
    box = EntropyTemperature("auto", "auto", 0.89, discrete=False, action_dim=3)
    assert box.learn and box.alpha == pytest.approx(1.0) and box.target_entropy == -3.0
    discrete = EntropyTemperature("auto_0.2", "auto", 0.5, discrete=True, action_dim=4)
    assert discrete.alpha == pytest.approx(0.2)
    assert discrete.target_entropy == pytest.approx(0.5 * math.log(4))
    entropy = torch.tensor([0.1, 0.5, 0.9])
    gap = discrete.set_gradient(entropy)
    # d/d(log_alpha) of log_alpha * mean(entropy - target) is that mean
    assert float(discrete.log_alpha.grad) == pytest.approx(0.5 - 0.5 * math.log(4))
    assert float(gap) == pytest.approx(0.5 - 0.5 * math.log(4))
    fixed = EntropyTemperature(0.05, -1.0, 0.89, discrete=False, action_dim=1)
    assert not fixed.learn and not fixed.log_alpha.requires_grad and fixed.target_entropy == -1
    for bad, match in (("autox", "ent_coef must be"), (0.0, "fixed ent_coef must be > 0")):
        with pytest.raises(ValueError, match=match):
            EntropyTemperature(bad, "auto", 0.89, discrete=False, action_dim=1)
    with pytest.raises(ValueError, match="target_entropy must be 'auto' or a number"):
        EntropyTemperature("auto", "high", 0.89, discrete=False, action_dim=1)


def test_the_target_rules_combine_the_members():
    head = make_critic_head("deep", 3, 1, n_critics=3)
    q = torch.tensor([[[1.0], [5.0]], [[3.0], [2.0]], [[2.0], [8.0]]])  # (N=3, B=2, 1)
    torch.testing.assert_close(reduce_members(q, "min", head), torch.tensor([[1.0], [2.0]]))
    torch.testing.assert_close(reduce_members(q, "mean", head), torch.tensor([[2.0], [5.0]]))
    assert reduce_members(q, "member", head) is q
    torch.manual_seed(0)
    subset = reduce_members(q, "min", head, subset=2)
    torch.manual_seed(0)
    members = torch.randperm(3)[:2]
    torch.testing.assert_close(subset, q[members].min(0).values)
