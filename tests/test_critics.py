"""The batched critic ensemble equals N separate MLPs."""

from __future__ import annotations

import pytest
import torch

from agents import CriticEnsemble, NeuroFlow


def per_member(ens: CriticEnsemble, x: torch.Tensor, i: int) -> torch.Tensor:
    h = x
    n = len(ens.weights)
    for k in range(n):
        w = ens.weights[k][i]
        if ens._masked:
            w = w * getattr(ens, f"mask{k}")[i]
        h = h @ w + ens.biases[k][i, 0]
        if k < n - 1:
            h = torch.relu(h)
    return h


@pytest.mark.parametrize("ncp", [None, 24])
def test_batched_critics_equal_separate_members(ncp):
    torch.manual_seed(0)
    ens = CriticEnsemble(7, 3, n_critics=4, hidden=(16, 8), ncp_neurons=ncp, seed=3)
    x = torch.randn(5, 7)
    q = ens(x)
    assert q.shape == (4, 5, 3)
    for i in range(4):
        torch.testing.assert_close(q[i], per_member(ens, x, i))
    # Per-member inputs (N, B, in) too.
    xs = torch.randn(4, 5, 7)
    q = ens(xs)
    for i in range(4):
        torch.testing.assert_close(q[i], per_member(ens, xs[i], i))
    mean, std = ens.mean_std(x)
    stacked = ens(x)
    torch.testing.assert_close(mean, stacked.mean(0))
    torch.testing.assert_close(std, stacked.std(0, unbiased=False))
    assert not torch.allclose(stacked[0], stacked[1])  # members differ


def test_ncp_critic_masked_weights_get_no_gradient():
    ens = CriticEnsemble(6, 1, n_critics=2, ncp_neurons=12, seed=0)
    ens(torch.randn(9, 6)).sum().backward()
    for k, w in enumerate(ens.weights):
        mask = getattr(ens, f"mask{k}")
        assert torch.all(w.grad[mask == 0] == 0)
        assert torch.any(w.grad[mask == 1] != 0)


def test_detach_params_blocks_weight_gradients_only():
    ens = CriticEnsemble(4, 1, n_critics=2, hidden=(8,))
    x = torch.randn(3, 4, requires_grad=True)
    ens(x, detach_params=True).sum().backward()
    assert all(w.grad is None for w in ens.weights)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_critics"):
        CriticEnsemble(4, 1, n_critics=0)
    ens = CriticEnsemble(4, 1, n_critics=2)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        ens(torch.randn(3, 5))


def test_async_vector_env_run():
    agent = NeuroFlow("CartPole-v1", n_envs=2, vectorization="async", seed=0, learning_starts=40,
                      batch_size=16, seq_len=4, burn_in=2, actor_neurons=8, critic_hidden=(16,))
    agent.learn(80)
    assert agent.num_timesteps >= 80 and agent.n_updates > 0
    agent.env.close()
