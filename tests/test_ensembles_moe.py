"""Stochastic mixture of experts: surrogates against direct computations, parameter
groups' sampling and KL against closed forms, the parameter-count check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre
from torch import distributions as td
from torch import nn

from velora_ens.ensembles import Prediction, WithFeatures
from velora_ens.ensembles.moe import (
    DeterministicGroup,
    GatingNetwork,
    IIDGaussianGroup,
    IIDGaussianPrior,
    LowRankGaussianGroup,
    MixtureOfExperts,
    NeuralNetwork,
    PolynomialChaosExpansion,
    StochasticModel,
)
from velora_ens.models import LiquidNCPNetwork


def test_pce_basis_is_the_total_degree_legendre_basis():
    pce = PolynomialChaosExpansion(num_inputs=2, num_outputs=1, degree=3)
    assert pce.num_terms == math.comb(2 + 3, 3)
    x = torch.rand(20, 2, dtype=torch.float64) * 2 - 1
    basis = pce.basis(x).numpy()
    idx = pce.multi_indices.tolist()
    assert len({tuple(a) for a in idx}) == len(idx) and max(map(sum, idx)) == 3
    for k, (a, b) in enumerate(idx):
        pa = legendre.legval(x[:, 0].numpy(), [0] * a + [1])
        pb = legendre.legval(x[:, 1].numpy(), [0] * b + [1])
        np.testing.assert_allclose(basis[:, k], pa * pb, atol=1e-12)
    c = torch.randn(4, pce.num_params(), dtype=torch.float64)
    torch.testing.assert_close(pce(x, c), torch.einsum("bk,sk->sb", pce.basis(x), c)[..., None])


def test_functional_network_equals_linear_layers():
    nnet = NeuralNetwork(3, 2, width=5, depth=2, activation=torch.tanh)
    assert nnet.num_params() == (3 * 5 + 5) + (5 * 5 + 5) + (5 * 2 + 2)
    params = torch.randn(3, nnet.num_params())
    x = torch.randn(4, 3)
    out = nnet(x, params)
    for s in range(3):
        at, h = 0, x
        for k, (i, o) in enumerate([(3, 5), (5, 5), (5, 2)]):
            lin = nn.Linear(i, o)
            with torch.no_grad():
                lin.weight.copy_(params[s, at:at + i * o].view(i, o).t())
                lin.bias.copy_(params[s, at + i * o: at + i * o + o])
            at += i * o + o
            h = lin(h) if k == 2 else torch.tanh(lin(h))
        torch.testing.assert_close(out[s], h)


def test_mixture_of_experts_blends_experts_by_the_gate():
    experts = [PolynomialChaosExpansion(1, 2, degree=2), NeuralNetwork(1, 2, width=4)]
    gate = GatingNetwork(1, 2, width=3)
    moe = MixtureOfExperts(experts, gate)
    p = torch.randn(5, moe.num_params())
    x = torch.rand(6, 1)
    sizes = [experts[0].num_params(), experts[1].num_params(), gate.num_params()]
    pe0, pe1, pg = p.split(sizes, 1)
    g = gate(x, pg)
    assert g.shape == (5, 6, 2)
    torch.testing.assert_close(g.sum(-1), torch.ones(5, 6))
    f = torch.stack([experts[0](x, pe0), experts[1](x, pe1)], 1)
    torch.testing.assert_close(moe.get_expert_outputs(x, p), f)
    torch.testing.assert_close(moe.get_gating_weights(x, p), g)
    torch.testing.assert_close(moe(x, p), (g.permute(0, 2, 1)[..., None] * f).sum(1))


def test_parameter_count_mismatch_names_both_counts():
    moe = MixtureOfExperts([PolynomialChaosExpansion(1, 1, 3)] * 2, GatingNetwork(1, 2, width=4))
    with pytest.raises(ValueError, match=rf"hold 10 parameters .* has {moe.num_params()}"):
        StochasticModel(moe, [IIDGaussianGroup("a", 4), DeterministicGroup("b", 6)])
    with pytest.raises(ValueError, match="gate weighs 3 experts, but 2"):
        MixtureOfExperts([PolynomialChaosExpansion(1)] * 2, GatingNetwork(1, 3))


def test_samples_follow_the_group_order_and_reparameterisation():
    pce = PolynomialChaosExpansion(1, 1, degree=3)
    g1, g2 = DeterministicGroup("det", 1), IIDGaussianGroup("gauss", 3)
    model = StochasticModel(pce, [g1, g2])
    torch.manual_seed(7)
    s = model.sample_parameters(1000)
    torch.manual_seed(7)
    eps = torch.randn(1000, 3)
    assert s.shape == (1000, 4)
    assert bool((s[:, 0] == g1.params[0]).all())
    torch.testing.assert_close(s[:, 1:], g2.mean + g2.log_std.exp() * eps)
    s.sum().backward()
    assert g2.mean.grad is not None and g2.log_std.grad is not None


def test_iid_gaussian_kl_equals_its_closed_form():
    g = IIDGaussianGroup("w", 6, prior=IIDGaussianPrior(0.5, 2.0))
    with torch.no_grad():
        g.log_std.uniform_(-2, 1)
    mu, sd = g.mean.detach().double(), g.log_std.detach().exp().double()
    closed = (math.log(2.0) - sd.log() + (sd ** 2 + (mu - 0.5) ** 2) / (2 * 4.0) - 0.5).sum()
    assert g.distribution_loss().item() == pytest.approx(closed.item(), rel=1e-5)


def test_low_rank_gaussian_kl_equals_torch_full_covariance_kl():
    g = LowRankGaussianGroup("w", 7, rank=2, prior=IIDGaussianPrior(0.0, 1.5))
    with torch.no_grad():
        g.cov_factor.normal_()
    q = td.MultivariateNormal(g.mean.detach(), g.variational_distribution().covariance_matrix
                              .detach())
    p = td.MultivariateNormal(torch.zeros(7), 1.5 ** 2 * torch.eye(7))
    assert g.distribution_loss().item() == pytest.approx(td.kl_divergence(q, p).item(), rel=1e-4)
    assert g.sample_parameters(3).shape == (3, 7)


def test_deterministic_group_is_map():
    g = DeterministicGroup("w", 5)
    theta = g.params.detach()
    expected = 0.5 * (theta ** 2).sum() + 2.5 * math.log(2 * math.pi)
    assert g.distribution_loss().item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(RuntimeError, match="point estimate"):
        g.variational_distribution()


def test_groups_start_at_the_surrogates_fan_in_scaled_values():
    gate = GatingNetwork(1, 2, width=16)
    moe = MixtureOfExperts([PolynomialChaosExpansion(1, 1, 3)] * 2, gate)
    groups = [IIDGaussianGroup("experts", 8), DeterministicGroup("gate", gate.num_params())]
    torch.manual_seed(3)
    StochasticModel(moe, groups)
    torch.manual_seed(3)
    start = moe.initial_parameters()
    torch.testing.assert_close(groups[0].mean.detach(), start[:8])
    torch.testing.assert_close(groups[1].params.detach(), start[8:])
    hidden_out = groups[1].params.detach()[32:66]  # the gate's 16 -> 2 layer
    assert float(hidden_out.abs().max()) <= 1 / math.sqrt(16)


def test_predict_is_a_prediction_over_parameter_draws():
    model = StochasticModel(PolynomialChaosExpansion(1, 1, 2), IIDGaussianGroup("c", 3))
    x = torch.rand(4, 1)
    torch.manual_seed(0)
    pred = model.predict(x, num_samples=50, noise_variance=0.01)
    torch.manual_seed(0)
    ys = model(x, num_samples=50)
    assert isinstance(pred, Prediction) and pred.members.shape == (50, 4, 1)
    torch.testing.assert_close(pred.mean, ys.mean(0))
    torch.testing.assert_close(pred.epistemic, ys.var(0, unbiased=False))
    torch.testing.assert_close(pred.aleatoric, torch.full((4, 1), 0.01))


def test_stochastic_moe_on_a_liquid_network():
    net = LiquidNCPNetwork(4, 10, 2, seed=0)
    moe = MixtureOfExperts([NeuralNetwork(2, 1, width=4)] * 2, GatingNetwork(2, 2, width=4))
    model = StochasticModel(moe, IIDGaussianGroup("all", moe.num_params()))
    head = WithFeatures(net, model)
    y = head(torch.randn(5, 4), num_samples=3)
    assert y.shape == (3, 5, 1)
    (y.pow(2).mean() + 1e-3 * model.distribution_loss()).backward()
    assert all(p.grad is not None for p in net.parameters())
    conf = head.predict(torch.randn(5, 4), num_samples=4).confidences["gate_entropy"]
    assert conf.shape == (5,) and bool(((conf >= 0) & (conf <= 1)).all())


# --- experts of one structure in one call ----------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: NeuralNetwork(2, 3, width=5, depth=2, activation=torch.tanh),
    lambda: PolynomialChaosExpansion(2, 3, degree=2),
])
@pytest.mark.parametrize("group", [3, 2, 1])  # experts per call: all, a chunk of 2, one
def test_experts_folded_into_the_draw_axis_equal_each_expert_called_alone(make, group):
    torch.manual_seed(0)
    experts = [make().double() for _ in range(3)]
    gate = GatingNetwork(2, 3, width=4).double()
    moe = MixtureOfExperts(experts, gate)
    moe.joint_limit = 0  # networks would otherwise run side by side (tested below)
    assert moe.batched() and moe._joint_layers() is None
    x = torch.rand(6, 2, dtype=torch.float64) * 2 - 1
    p = torch.randn(4, moe.num_params(), dtype=torch.float64, requires_grad=True)
    moe.fold_limit = group * moe._widest(x, 4)
    sizes = [e.num_params() for e in experts] + [gate.num_params()]
    parts = p.split(sizes, 1)
    want = torch.stack([e(x, q) for e, q in zip(experts, parts, strict=False)], 1)
    torch.testing.assert_close(moe.get_expert_outputs(x, p), want)
    mixed = torch.einsum("sbe,sebo->sbo", gate(x, parts[-1]), want)
    got_grad = torch.autograd.grad(moe(x, p).pow(2).sum(), p)[0]
    want_grad = torch.autograd.grad(mixed.pow(2).sum(), p)[0]
    torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("depth,outputs", [(0, 1), (1, 1), (1, 3), (2, 2)])
def test_networks_side_by_side_equal_each_expert_called_alone(depth, outputs):
    # the side-by-side network (first layer wide, later ones block-diagonal) against each
    # expert on its own slice of the parameters: outputs, the mixture and its gradient
    torch.manual_seed(0)
    experts = [NeuralNetwork(2, outputs, width=5, depth=depth, activation=torch.tanh).double()
               for _ in range(3)]
    gate = GatingNetwork(2, 3, width=4).double()
    moe = MixtureOfExperts(experts, gate)
    assert moe._joint_layers() is not None
    x = torch.rand(6, 2, dtype=torch.float64) * 2 - 1
    p = torch.randn(4, moe.num_params(), dtype=torch.float64, requires_grad=True)
    parts = p.split([e.num_params() for e in experts] + [gate.num_params()], 1)
    want = torch.stack([e(x, q) for e, q in zip(experts, parts, strict=False)], 1)
    torch.testing.assert_close(moe.get_expert_outputs(x, p), want)
    mixed = torch.einsum("sbe,sebo->sbo", gate(x, parts[-1]), want)
    torch.testing.assert_close(moe(x, p), mixed)
    weights = torch.randn_like(mixed)
    got_grad = torch.autograd.grad((moe(x, p) * weights).sum(), p)[0]
    want_grad = torch.autograd.grad((mixed * weights).sum(), p)[0]
    torch.testing.assert_close(got_grad, want_grad)


def test_side_by_side_form_is_bounded_by_joint_limit():
    # block-diagonal layers waste E times their multiply-adds: off past joint_limit rows
    moe = MixtureOfExperts([NeuralNetwork(2, 1, width=8, depth=2) for _ in range(4)],
                           GatingNetwork(2, 4))
    assert moe._joint_layers() is not None  # 4 x 8 = 32 rows
    moe.joint_limit = 31
    assert moe._joint_layers() is None
    single = MixtureOfExperts([NeuralNetwork(2, 1)], GatingNetwork(2, 1))
    assert single._joint_layers() is None  # one expert: nothing to put side by side


def test_gate_is_the_softmax_of_its_network():
    gate = GatingNetwork(3, 5, width=4, depth=2).double()
    net = NeuralNetwork(3, 5, width=4, depth=2).double()
    p = torch.randn(2, gate.num_params(), dtype=torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(gate(x, p), torch.softmax(net(x, p), dim=-1))


def test_experts_of_different_structure_are_called_one_by_one():
    same = [NeuralNetwork(2, 1, width=4), NeuralNetwork(2, 1, width=4)]
    assert MixtureOfExperts(same, GatingNetwork(2, 2)).batched()
    for pair in ([NeuralNetwork(2, 1, width=4), NeuralNetwork(2, 1, width=5)],
                 [NeuralNetwork(2, 1, width=4), NeuralNetwork(2, 1, width=4,
                                                             activation=torch.tanh)],
                 [NeuralNetwork(2, 1, width=4), PolynomialChaosExpansion(2, 1, 2)]):
        assert not MixtureOfExperts(pair, GatingNetwork(2, 2)).batched()
