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


def _autograd_forward(ens: CriticEnsemble, x: torch.Tensor, detach_params: bool
                      ) -> torch.Tensor:
    """The ensemble's layers through ordinary autograd (what StackedMLP replaces)."""
    h = x.unsqueeze(0).expand(ens.n_critics, -1, -1)
    n = len(ens.weights)
    for k in range(n):
        w, b = ens.weights[k], ens.biases[k]
        if detach_params:
            w, b = w.detach(), b.detach()
        if ens._masked:
            w = w * getattr(ens, f"mask{k}")
        h = torch.baddbmm(b, h, w)
        if k < n - 1:
            h = torch.relu(h)
    return h


@pytest.mark.parametrize("out", [1, 3])
@pytest.mark.parametrize("ncp", [None, 12])
@pytest.mark.parametrize("case", ["critic loss", "input grad too", "actor loss"])
def test_hand_written_backward_equals_autograd_bit_for_bit(out, ncp, case):
    torch.manual_seed(1)
    ens = CriticEnsemble(6, out, n_critics=3, hidden=(32, 16), ncp_neurons=ncp, seed=2)
    x0 = torch.randn(40, 6)
    target = torch.randn(3, 40, out)

    def grads(forward):
        ens.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(case != "critic loss")
        q = forward(x)
        if case == "actor loss":  # gradient through the minimum over the critics only
            loss = -q.min(0).values.mean()
        else:
            loss = 0.5 * ((q - target) ** 2).mean(1).sum()
        loss.backward()
        params = [None if p.grad is None else p.grad.clone() for p in ens.parameters()]
        return q.detach(), x.grad, params

    detach = case == "actor loss"
    ours = grads(lambda x: ens(x, detach_params=detach))
    reference = grads(lambda x: _autograd_forward(ens, x, detach))
    assert torch.equal(ours[0], reference[0])
    if case == "critic loss":
        assert ours[1] is None and reference[1] is None
    else:
        assert torch.equal(ours[1], reference[1]) and ours[1].abs().sum() > 0
    for g, r in zip(ours[2], reference[2], strict=True):
        assert (g is None) == (r is None) == detach
        assert detach or torch.equal(g, r)


def test_hand_written_backward_is_used_and_checked_by_gradcheck():
    from agents.neuroflow.critics import StackedMLP

    ens = CriticEnsemble(3, 1, n_critics=2, hidden=(5,)).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert "StackedMLP" in type(ens(x).grad_fn).__name__
    params = [p.detach().clone().requires_grad_(True) for pair in
              zip(ens.weights, ens.biases, strict=True) for p in pair]
    assert torch.autograd.gradcheck(
        lambda x, *ps: StackedMLP.apply(x.unsqueeze(0).expand(2, -1, -1), *ps), (x, *params))


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
