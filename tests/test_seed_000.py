# ruff: noqa
# (the seed snippets are kept verbatim, lint style included)
"""Seed 000 (Liquid Ensemble README quickstart): its code, ported with only the import
changed (``liquid.layers.liquid_ensemble_layer`` -> ``velora_ens.ensembles``), run on a
small regression batch with both solvers."""

from __future__ import annotations

import pytest
import torch

import torch
import torch.nn as nn
import torch.nn.functional as F
from velora_ens.ensembles import LiquidEnsembleLayer

class MLPExperts(nn.Module):
    def __init__(self, in_dim, out_dim, n_experts, hidden=64):
        super().__init__()
        self.predictor = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, out_dim)
        )
        self.router = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, n_experts), nn.Softmax(dim=-1)
        )

    def forward(self, x):
        y = self.predictor(x)
        d = self.router(x)
        return y, d


class CNNExperts(nn.Module):
    def __init__(self, in_channels, n_experts, out_dim=10):
        super().__init__()
        self.features = nn.Sequential(...)  # e.g. conv layers + pooling + flatten
        feat_dim = ...                      # match output of self.features
        self.predictor = nn.Linear(feat_dim, out_dim)
        self.router = nn.Sequential(
            nn.Linear(feat_dim, n_experts),
            nn.Softmax(dim=-1)
        )

    def forward(self, x):
        h = self.features(x)
        y = self.predictor(h)
        d = self.router(h)
        return y, d


class LiquidEnsembleModel(nn.Module):
    def __init__(self, experts, solver="sink_one"):
        super().__init__()
        self.le = LiquidEnsembleLayer(experts, solver=solver)

    def forward(self, x):
        return self.le(x)

    def loss(self, y_pred, y_true, aux_weight=1e-3):
        task_loss = F.mse_loss(y_pred, y_true)
        aux_loss = self.le.auxiliary_loss()
        return task_loss + aux_weight * aux_loss


# --- end of the seed's code; below, the README's usage, exercised ------------------------
@pytest.mark.parametrize("solver", ["sink_one", "sink_many"])
def test_seed_000_mlp_experts_train(solver):
    n_experts = 4
    experts = [MLPExperts(3, 1, n_experts, hidden=16) for _ in range(n_experts)]
    model = LiquidEnsembleModel(experts, solver=solver)
    model.le.load_distribution_lambda, model.le.specialization_lambda = 0.2, 0.15
    x = torch.randn(64, 3)
    y_true = x.sum(1, keepdim=True).sin()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        y_pred = model(x)
        loss = model.loss(y_pred, y_true)
        loss.backward()
        opt.step()
        losses.append(F.mse_loss(y_pred, y_true).item())
    assert y_pred.shape == (64, 1)
    # the delegation heads are trained (by the task loss and the live auxiliary loss)
    assert all(p.grad is not None for e in experts for p in e.router.parameters())
    assert model.le.last_power.shape == (64, n_experts)
    torch.testing.assert_close(model.le.last_power.sum(1), torch.full((64,), 4.0))
    assert losses[-1] < 0.3 * losses[0]


def test_seed_000_cnn_experts_with_the_placeholders_filled_in():
    # The README leaves the CNN's feature stack as "..."; fill it in and use the class.
    class FilledCNNExperts(CNNExperts):
        def __init__(self, in_channels, n_experts, out_dim=10):
            nn.Module.__init__(self)
            self.features = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(),
                                          nn.AdaptiveMaxPool2d(2), nn.Flatten())
            feat_dim = 16
            self.predictor = nn.Linear(feat_dim, out_dim)
            self.router = nn.Sequential(nn.Linear(feat_dim, n_experts), nn.Softmax(dim=-1))

    model = LiquidEnsembleModel([FilledCNNExperts(3, 3) for _ in range(3)], solver="sink_many")
    logits = model(torch.randn(5, 3, 8, 8))
    assert logits.shape == (5, 10)
    F.cross_entropy(logits, torch.randint(0, 10, (5,))).backward()


# --- the quickstart's load balancing acts with the default weights (issue 13) ------------
def test_seed_000_quickstart_auxiliary_term_is_live_with_the_defaults():
    torch.manual_seed(0)
    experts = [MLPExperts(3, 1, 4, hidden=16) for _ in range(4)]
    model = LiquidEnsembleModel(experts)  # default weights, as the quickstart builds it
    x = torch.randn(32, 3)
    y_pred = model(x)
    aux = 1e-3 * model.le.auxiliary_loss()  # the quickstart's aux term
    assert aux.item() != 0.0
    aux.backward()
    for e in experts:
        assert sum(float(p.grad.abs().sum()) for p in e.router.parameters()) > 0


def _speaker_entropy_after_training(seed, weights=None, steps=100):
    torch.manual_seed(seed)
    model = LiquidEnsembleModel([MLPExperts(3, 1, 4, hidden=16) for _ in range(4)])
    if weights is not None:
        model.le.load_distribution_lambda, model.le.specialization_lambda = weights
    x = torch.randn(128, 3)
    y_true = x.sum(1, keepdim=True).sin()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model.loss(model(x), y_true).backward()
        opt.step()
    with torch.no_grad():
        model(x)
    return model.le.speaker_entropy().item()  # 1 = every expert chairs equally often


def test_seed_000_quickstart_unchanged_balances_load_more_than_without_the_loss():
    off = [_speaker_entropy_after_training(s, weights=(0.0, 0.0)) for s in range(3)]
    on = [_speaker_entropy_after_training(s) for s in range(3)]
    assert all(b > a for a, b in zip(off, on))
    assert sum(on) / 3 > sum(off) / 3 + 0.05
