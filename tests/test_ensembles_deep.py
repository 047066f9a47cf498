"""Deep Ensembles: vectorised members against per-member computations, mixture moments,
the Gaussian NLL, FGSM without parameter-gradient leaks, the classifier."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from velora_ens.ensembles import (
    DeepEnsemble,
    DeepEnsembleClassifier,
    Prediction,
    WithFeatures,
    member_permutations,
)
from velora_ens.models import LiquidNCPNetwork


def member_forward(net, i: int, x: torch.Tensor) -> torch.Tensor:
    """Member i of a vectorised MLP, computed layer by layer with its own weights."""
    h = x
    for layer in net.body:
        name = type(layer).__name__
        if name == "MemberLinear":
            h = h @ layer.weight[i] + layer.bias[i]
        elif name == "MemberRMSNorm":
            h = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.weight[i]
        else:
            h = F.silu(h)
    return h @ net.head.weight[i] + net.head.bias[i]


def member_gaussian(ens, i, x):
    mean, raw = member_forward(ens.net, i, x).split(ens.dim_out, -1)
    return mean, F.softplus(raw) + 1e-6


def nll(mean, var, y):
    return 0.5 * (var.log() + (y - mean).pow(2) / var).mean()


def test_vectorised_members_equal_per_member_computation():
    ens = DeepEnsemble(3, 2, num_members=4, hidden_dim=8, depth=2)
    x = torch.randn(6, 3)
    mean, var = ens.member_outputs(x)
    assert mean.shape == var.shape == (4, 6, 2)
    for i in range(4):
        m, v = member_gaussian(ens, i, x)
        torch.testing.assert_close(mean[i], m)
        torch.testing.assert_close(var[i], v)
    assert not torch.allclose(mean[0], mean[1])  # independently initialised


def test_mixture_moments_equal_the_formula():
    ens = DeepEnsemble(2, 1, num_members=5, hidden_dim=8, depth=1)
    x = torch.randn(9, 2)
    pred = ens(x)
    assert isinstance(pred, Prediction)
    members = ens.sample_predictions(x)
    mus = torch.stack([m.mean for m in members])
    vars_ = torch.stack([m.log_var.exp() for m in members])
    mu = mus.mean(0)
    torch.testing.assert_close(pred.mean, mu)
    torch.testing.assert_close(pred.variance, (vars_ + mus ** 2).mean(0) - mu ** 2,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pred.aleatoric, vars_.mean(0))
    torch.testing.assert_close(pred.epistemic, mus.var(0, unbiased=False), atol=1e-6, rtol=1e-4)


def test_clean_loss_is_the_mean_member_gaussian_nll():
    ens = DeepEnsemble(2, 1, num_members=3, hidden_dim=8, depth=1,
                       use_adversarial_training=False)
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    expected = torch.stack([nll(*member_gaussian(ens, i, x), y) for i in range(3)]).mean()
    torch.testing.assert_close(ens(x, y), expected)


def test_per_member_batches():
    ens = DeepEnsemble(2, 1, num_members=3, hidden_dim=8, depth=1,
                       use_adversarial_training=False)
    X, Y = torch.randn(12, 2), torch.randn(12, 1)
    perm = member_permutations(12, 3)
    assert all(sorted(p.tolist()) == list(range(12)) for p in perm)
    idx = perm[:, :4]
    expected = torch.stack([nll(*member_gaussian(ens, i, X[idx[i]]), Y[idx[i]])
                            for i in range(3)]).mean()
    torch.testing.assert_close(ens(X[idx], Y[idx], per_member=True), expected)


def test_fgsm_is_per_member_relative_and_leaks_no_parameter_gradient():
    ens = DeepEnsemble(3, 1, num_members=2, hidden_dim=8, depth=1, adversarial_eps=0.05)
    x = torch.randn(7, 3) * torch.tensor([1.0, 10.0, 0.1])
    y = torch.randn(7, 1)
    x_adv = ens.adversarial_input(x, y)
    assert all(p.grad is None for p in ens.parameters())
    scale = x.amax(0) - x.amin(0)
    for i in range(2):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nll(*member_gaussian(ens, i, xi), y), xi)
        torch.testing.assert_close(x_adv[i], x + 0.05 * scale * g.sign())
    # the training loss is 0.5 clean + 0.5 adversarial, and only its own gradient lands
    loss = ens(x, y)
    expected = torch.stack([0.5 * nll(*member_gaussian(ens, i, x), y)
                            + 0.5 * nll(*member_gaussian(ens, i, x_adv[i]), y)
                            for i in range(2)]).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    grads = [p.grad.clone() for p in ens.parameters()]
    ens.zero_grad()
    expected.backward()
    for a, b in zip(grads, (p.grad for p in ens.parameters()), strict=True):
        torch.testing.assert_close(a, b)


def test_feature_range_can_be_fixed_from_the_training_set():
    ens = DeepEnsemble(2, 1, num_members=2, hidden_dim=4, depth=1, adversarial_eps=0.1)
    X = torch.tensor([[0.0, -5.0], [4.0, 5.0]])
    ens.set_feature_range(X)
    torch.testing.assert_close(ens.feature_range, torch.tensor([4.0, 10.0]))
    x, y = torch.zeros(3, 2), torch.zeros(3, 1)
    step = (ens.adversarial_input(x, y) - x).abs()
    torch.testing.assert_close(step.amax(dim=(0, 1)), torch.tensor([0.4, 1.0]))


def test_classifier_loss_probs_and_uncertainty():
    clf = DeepEnsembleClassifier(4, 3, num_members=3, hidden_dim=8, depth=1)
    x, t = torch.randn(5, 4), torch.randint(0, 3, (5,))
    logits = torch.stack([member_forward(clf.net, i, x) for i in range(3)])
    expected = torch.stack([F.cross_entropy(logits[i], t) for i in range(3)]).mean()
    torch.testing.assert_close(clf(x, t), expected)
    pred = clf(x)
    probs = logits.softmax(-1)
    p = probs.mean(0)
    torch.testing.assert_close(pred.probs, p)
    h = -(p * p.log()).sum(-1)
    torch.testing.assert_close(pred.entropy, h)
    torch.testing.assert_close(pred.mutual_information,
                               h + (probs * probs.log()).sum(-1).mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pred.variance, p * (1 - p))
    assert len(clf.sample_predictions(x)) == 3


def test_deep_ensemble_on_a_liquid_network():
    net = LiquidNCPNetwork(4, 10, 6, seed=0)
    model = WithFeatures(net, DeepEnsemble(6, 1, num_members=3, hidden_dim=8, depth=1))
    loss = model(torch.randn(5, 4), torch.randn(5, 1))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    assert model.predict(torch.randn(5, 4)).mean.shape == (5, 1)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="num_members must be an integer >= 1, got 0"):
        DeepEnsemble(2, 1, num_members=0)
    ens = DeepEnsemble(2, 1, num_members=2, hidden_dim=4, depth=1)
    with pytest.raises(ValueError, match=r"\(B, 2\).*got \(3, 5\)"):
        ens(torch.randn(3, 5))
    with pytest.raises(ValueError, match="target must be"):
        ens(torch.randn(3, 2), torch.randn(4, 1))
    with pytest.raises(ValueError, match="adversarial_eps"):
        DeepEnsemble(2, adversarial_eps=-1.0)
