"""Every ensemble head can be copied after a forward pass with gradients: ``copy.deepcopy``,
pickling, ``torch.optim.swa_utils.AveragedModel`` and the Trainer's EMA; the copy computes
the original's outputs and owns its parameters."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
from ensemble_experts import Expert
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel

from velora_ens.ensembles import (
    DeepEnsemble,
    DeepEnsembleClassifier,
    DelegatingMLPExperts,
    LiquidEnsembleLayer,
    WithFeatures,
    batchensemble,
)
from velora_ens.ensembles.moe import (
    GatingNetwork,
    IIDGaussianGroup,
    MixtureOfExperts,
    NeuralNetwork,
    StochasticModel,
)
from velora_ens.models import LiquidNCPNetwork
from velora_ens.training import TensorDataset, Trainer


def _moe() -> StochasticModel:
    mix = MixtureOfExperts([NeuralNetwork(3, 1, width=8) for _ in range(3)], GatingNetwork(3, 3))
    return StochasticModel(mix, IIDGaussianGroup("all", mix.num_params()))


def _seeded(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(7)  # the same parameter draws for the original and the copy
    return model(x, num_samples=4)


# name: (model, input, target, outputs(model, x) -> tensor, loss(model, x, target))
HEADS: dict[str, tuple[Callable[[], nn.Module], torch.Tensor, torch.Tensor, Callable,
                       Callable]] = {
    "deep": (lambda: DeepEnsemble(3, 1, num_members=3, hidden_dim=8, depth=1),
             torch.randn(6, 3), torch.randn(6, 1),
             lambda m, x: torch.cat([m.predict(x).mean, m.predict(x).variance]),
             lambda m, x, y: m(x, y)),
    "classifier": (lambda: DeepEnsembleClassifier(3, 4, num_members=3, hidden_dim=8, depth=1),
                   torch.randn(6, 3), torch.randint(0, 4, (6,)),
                   lambda m, x: m.predict(x).probs, lambda m, x, y: m(x, y)),
    "batch": (lambda: batchensemble(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)),
                                    4),
              torch.randn(6, 3), torch.randn(6, 1),
              lambda m, x: m(x), lambda m, x, y: F.mse_loss(m(x).mean(0), y)),
    "liquid": (lambda: LiquidEnsembleLayer(DelegatingMLPExperts(3, 1, 4, hidden=8)),
               torch.randn(6, 3), torch.randn(6, 1),
               lambda m, x: m(x), lambda m, x, y: F.mse_loss(m(x), y) + m.auxiliary_loss()),
    "liquid-experts": (lambda: LiquidEnsembleLayer([Expert(3) for _ in range(3)]),
                       torch.randn(6, 3), torch.randn(6, 1),
                       lambda m, x: m(x), lambda m, x, y: F.mse_loss(m(x), y)),
    "moe": (_moe, torch.randn(6, 3), torch.randn(6, 1), _seeded,
            lambda m, x, y: F.mse_loss(m(x, num_samples=2).mean(0), y)
            + 1e-3 * m.distribution_loss()),
    "features-liquid": (lambda: WithFeatures(LiquidNCPNetwork(3, 12, 8, seed=0),
                                             LiquidEnsembleLayer(DelegatingMLPExperts(8, 1, 4)),
                                             last_step=True),
                        torch.randn(6, 5, 3), torch.randn(6, 1),
                        lambda m, x: m(x), lambda m, x, y: F.mse_loss(m(x), y)),
    "features-deep": (lambda: WithFeatures(LiquidNCPNetwork(3, 12, 8, seed=0),
                                           DeepEnsemble(8, 1, num_members=3, hidden_dim=8),
                                           last_step=True),
                      torch.randn(6, 5, 3), torch.randn(6, 1),
                      lambda m, x: m.predict(x).mean, lambda m, x, y: m(x, y)),
}


def _after_a_forward(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The head after one forward pass with gradients (no backward: its graph is alive)."""
    make, x, y, _, loss = HEADS[name]
    model = make()
    assert loss(model, x, y).requires_grad
    return model, x, y


def _assert_same_function(a: nn.Module, b: nn.Module, name: str, x: torch.Tensor) -> None:
    outputs = HEADS[name][3]
    with torch.no_grad():
        torch.testing.assert_close(outputs(b, x), outputs(a, x), rtol=0, atol=0)


def _assert_own_parameters(original: nn.Module, twin: nn.Module) -> None:
    ids = {id(p) for p in original.parameters()}
    assert all(id(p) not in ids for p in twin.parameters())


@pytest.mark.parametrize("name", HEADS)
def test_deepcopy_after_a_forward_with_gradients(name):
    model, x, y = _after_a_forward(name)
    twin = copy.deepcopy(model)
    _assert_own_parameters(model, twin)
    _assert_same_function(model, twin, name, x)
    # the copy trains on its own: a step on it leaves the original as it was
    before = [p.detach().clone() for p in model.parameters()]
    HEADS[name][4](twin, x, y).backward()
    with torch.no_grad():
        for p in twin.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", HEADS)
def test_pickling_after_a_forward_with_gradients(name):
    model, x, _ = _after_a_forward(name)
    twin = pickle.loads(pickle.dumps(model))
    _assert_own_parameters(model, twin)
    _assert_same_function(model, twin, name, x)


@pytest.mark.parametrize("name", HEADS)
def test_averaged_model_after_a_forward_with_gradients(name):
    model, x, _ = _after_a_forward(name)
    averaged = AveragedModel(model)
    averaged.update_parameters(model)
    _assert_same_function(model, averaged.module, name, x)


@pytest.mark.parametrize("name", HEADS)
def test_trainer_ema_after_a_forward_with_gradients(name, tmp_path):
    model, x, y = _after_a_forward(name)
    loss = HEADS[name][4]
    trainer = Trainer(model, TensorDataset(x, y), train_batch_size=3, train_num_steps=2,
                      ema_decay=0.9, results_folder=tmp_path, save_every=0,
                      progress_bar=False, seed=0, loss_fn=lambda m, batch: loss(m, *batch))
    _assert_same_function(model, trainer.ema.model, name, x)
    trainer.train()
    assert trainer.ema.num_updates == 2


def test_liquid_copy_keeps_the_last_values_without_their_graph():
    layer = LiquidEnsembleLayer(DelegatingMLPExperts(3, 1, 4, hidden=8))
    layer(torch.randn(5, 3))
    twin = copy.deepcopy(layer)
    for name in ("power", "D", "ys"):
        original, copied = getattr(layer, f"last_{name}"), getattr(twin, f"last_{name}")
        assert original.grad_fn is not None and copied.grad_fn is None
        torch.testing.assert_close(copied, original.detach(), rtol=0, atol=0)
    for key, value in twin.confidences().items():
        torch.testing.assert_close(value, layer.confidences()[key].detach())
    # the original's live power still trains its delegation heads
    layer.auxiliary_loss().backward()
    assert layer.experts.d_head[0].weight.grad is not None
