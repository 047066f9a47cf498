"""The Prediction type: the uncertainty split against direct computations and identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from velora_ens.ensembles import Prediction


def test_regression_split_is_the_law_of_total_variance():
    means, vars_ = torch.randn(5, 8, 2), torch.rand(5, 8, 2) + 0.1
    w = torch.softmax(torch.randn(8, 5), -1)
    pred = Prediction.from_gaussians(means, vars_, weights=w)
    wm = w.t()[..., None]
    mu = (wm * means).sum(0)
    second = (wm * (vars_ + means ** 2)).sum(0)
    torch.testing.assert_close(pred.mean, mu)
    torch.testing.assert_close(pred.variance, second - mu ** 2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pred.total, pred.aleatoric + pred.epistemic)
    torch.testing.assert_close(pred.std, pred.total.sqrt())
    point = Prediction.from_gaussians(means)
    torch.testing.assert_close(point.total, means.var(0, unbiased=False))
    assert bool((point.aleatoric == 0).all())


def test_classification_split_matches_numpy_and_identities():
    logits = torch.randn(4, 6, 3, dtype=torch.float64)
    pred = Prediction.from_logits(logits)
    p = torch.softmax(logits, -1).numpy()
    mean = p.mean(0)
    h = -(mean * np.log(mean)).sum(-1)
    al = -(p * np.log(p)).sum(-1).mean(0)
    np.testing.assert_allclose(pred.probs.numpy(), mean)
    np.testing.assert_allclose(pred.entropy.numpy(), h)
    np.testing.assert_allclose(pred.aleatoric.numpy(), al)
    np.testing.assert_allclose(pred.mutual_information.numpy(), h - al, atol=1e-12)
    assert bool((pred.epistemic >= 0).all())
    same = Prediction.from_logits(logits[:1].expand(4, -1, -1))
    torch.testing.assert_close(same.epistemic, torch.zeros(6, dtype=torch.float64))


def test_views_are_refused_for_the_wrong_task():
    reg = Prediction.from_gaussians(torch.randn(2, 3, 1))
    clf = Prediction.from_logits(torch.randn(2, 3, 4))
    with pytest.raises(AttributeError, match="classification"):
        _ = reg.probs
    with pytest.raises(AttributeError, match="regression"):
        _ = clf.std
    with pytest.raises(ValueError, match=r"weights must have shape \(B, E\) = \(3, 2\)"):
        Prediction.from_gaussians(torch.randn(2, 3, 1), weights=torch.ones(2, 3))
    with pytest.raises(ValueError, match="variances have shape"):
        Prediction.from_gaussians(torch.randn(2, 3, 1), torch.ones(2, 3))
    assert clf.detach().num_members == 2
