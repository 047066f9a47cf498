"""Metrics against direct (loop / brute-force / torch.distributions) computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from velora_ens import metrics


def brute_kendall_tau_b(x, y) -> float:
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        if x[i] == x[j] and y[i] == y[j]:
            continue
        if x[i] == x[j]:
            tx += 1
        elif y[i] == y[j]:
            ty += 1
        elif (x[i] - x[j]) * (y[i] - y[j]) > 0:
            c += 1
        else:
            d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))


@pytest.mark.parametrize("n, ties", [(2, False), (7, True), (64, True), (129, False)])
def test_kendall_tau_matches_brute_force(n, ties):
    rng = np.random.default_rng(n)
    x = rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n)
    y = (rng.integers(0, 4, n) + x) if ties else x + rng.normal(size=n)
    assert metrics.kendall_tau(x, y) == pytest.approx(brute_kendall_tau_b(x, y), abs=1e-12)


def test_kendall_tau_identities():
    x = torch.randn(300)
    assert metrics.kendall_tau(x, 2 * x + 1) == pytest.approx(1.0)
    assert metrics.kendall_tau(x, -x.exp()) == pytest.approx(-1.0)
    assert math.isnan(metrics.kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        metrics.kendall_tau([1, 2], [1, 2, 3])


def test_regression_metrics():
    mean, var, y = torch.randn(50, 2), torch.rand(50, 2) + 0.1, torch.randn(50, 2)
    assert metrics.rmse(mean, y) == pytest.approx(float(((mean - y) ** 2).mean().sqrt()),
                                                  rel=1e-6)
    logp = torch.distributions.Normal(mean.double(), var.double().sqrt()).log_prob(y.double())
    assert metrics.gaussian_nll(mean, var, y) == pytest.approx(float(-logp.mean()), rel=1e-9)
    with pytest.raises(ValueError, match="variance must be > 0"):
        metrics.gaussian_nll(mean, var - 5, y)
    with pytest.raises(ValueError, match="same shape"):
        metrics.rmse(mean, y[:3])


def test_interval_coverage_and_gaussian_interval():
    lo, hi = torch.zeros(4), torch.ones(4)
    assert metrics.interval_coverage(lo, hi, torch.tensor([0.0, 0.5, 1.0, 1.5])) == 0.75
    lower, upper = metrics.gaussian_interval(torch.zeros(1), torch.full((1,), 4.0), level=0.95)
    normal = torch.distributions.Normal(0.0, 2.0)
    assert float(normal.cdf(upper.float()) - normal.cdf(lower.float())) == pytest.approx(0.95,
                                                                                          abs=1e-6)


def test_classification_metrics_against_loops():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=200)
    labels = rng.integers(0, 4, 200)
    assert metrics.accuracy(probs, labels) == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert metrics.classification_nll(probs, labels) == pytest.approx(
        -np.mean(np.log(probs[np.arange(200), labels])))
    onehot = np.eye(4)[labels]
    assert metrics.brier_score(probs, labels) == pytest.approx(
        np.mean(((probs - onehot) ** 2).sum(1)))
    ece = 0.0
    conf, pred = probs.max(1), probs.argmax(1)
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        inside = (conf >= lo) & ((conf < hi) if b < 14 else (conf <= hi))
        if inside.any():
            ece += inside.mean() * abs((pred[inside] == labels[inside]).mean()
                                       - conf[inside].mean())
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-12)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\]"):
        metrics.accuracy(probs, labels + 4)


def test_perfectly_calibrated_one_hot_predictions():
    labels = torch.tensor([0, 2, 1, 1])
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    assert metrics.expected_calibration_error(onehot, labels) == 0.0
    assert metrics.brier_score(onehot, labels) == 0.0
    assert metrics.accuracy(onehot, labels) == 1.0
