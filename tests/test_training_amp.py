"""``Trainer(amp=True)`` on the CPU: bfloat16 autocast, the stand-in for the GPU's mixed
precision. Every ensemble head (through the benchmarks' regressors, which follow the
trainer's contract) and a liquid network on sequences train under it about as far as the
same run in float32 does, from the same initial weights and data order.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from velora_ens.bench.heads import HEADS, build_regressor
from velora_ens.ensembles import (
    DeepEnsemble,
    DeepEnsembleClassifier,
    DelegatingMLPExperts,
    LiquidEnsembleLayer,
)
from velora_ens.ensembles._liquid_checks import check_delegations
from velora_ens.models import LiquidNCPNetwork
from velora_ens.training import TensorDataset, Trainer


def regression_data(n: int = 128):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = torch.sin(2 * x[:, :1]) + 0.5 * x[:, 1:2] + 0.05 * torch.randn(n, 1, generator=g)
    return x, y


class LiquidSequenceRegressor(nn.Module):
    """``forward(x, dt, y)``: the MSE of a liquid network predicting, at every step, the
    running mean of the first input feature (it needs its state)."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.net = LiquidNCPNetwork(3, 12, 1, cell=cell, seed=0)

    def forward(self, x: torch.Tensor, dt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.net(x, dt=dt)[0].float() - y).square().mean()


def sequence_data(n: int = 64, steps: int = 10):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, steps, 3, generator=g)
    dt = torch.rand(n, steps, generator=g) + 0.5
    y = x[..., :1].cumsum(1) / torch.arange(1, steps + 1).reshape(1, steps, 1)
    return x, dt, y


def build(name: str, num_train: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A model whose ``forward(*batch)`` is the loss, and its data."""
    torch.manual_seed(0)
    x, y = regression_data(num_train)
    if name in HEADS:
        return build_regressor(name, 5, num_train, hidden=16, depth=1), (x, y)
    if name == "deep-adversarial":  # FGSM takes an input gradient inside the loss
        return DeepEnsemble(5, 1, num_members=3, hidden_dim=16, depth=1), (x, y)
    if name == "deep-classifier":
        labels = (y[:, 0] > 0).long() + (y[:, 0] > 1).long()
        return DeepEnsembleClassifier(5, 3, num_members=3, hidden_dim=16, depth=1), (x, labels)
    return LiquidSequenceRegressor(name.split("-")[1]), sequence_data()


def train(name: str, amp: bool, folder) -> tuple[float, float, list[tuple[bool, torch.dtype]]]:
    """Loss on all the data before and after 60 steps, and what each forward ran under."""
    model, data = build(name, 128)

    def full_loss() -> float:
        torch.manual_seed(1)  # the MoE's parameter draws
        return float(model(*data).detach())  # gradients on: FGSM needs the input's

    before = full_loss()
    seen: list[tuple[bool, torch.dtype]] = []
    hook = model.register_forward_pre_hook(lambda *_: seen.append(
        (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # amp=True on the CPU no longer warns
        trainer = Trainer(model, TensorDataset(*data), train_batch_size=32, train_lr=1e-2,
                          train_num_steps=60, ema_decay=None, amp=amp, results_folder=folder,
                          progress_bar=False, seed=0)
    assert trainer.amp_dtype is (torch.bfloat16 if amp else None) and trainer.scaler is None
    trainer.train()
    hook.remove()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return before, full_loss(), seen


@pytest.mark.parametrize("name", [*HEADS, "deep-adversarial", "deep-classifier",
                                  "liquid-cfc", "liquid-ltc"])
def test_amp_on_cpu_trains_like_float32(name, tmp_path):
    before, after32, seen32 = train(name, False, tmp_path / "f32")
    before16, after16, seen16 = train(name, True, tmp_path / "bf16")
    assert before16 == before
    assert seen16 and all(s == (True, torch.bfloat16) for s in seen16)  # under autocast
    assert seen32 and not any(enabled for enabled, _ in seen32)
    assert math.isfinite(after16)
    gain = before - after32
    assert gain > 0.05 * abs(before)  # the float32 run learns something ...
    assert abs((before - after16) - gain) < 0.1 * gain  # ... and the bfloat16 run as much


class LiquidEnsembleRegressor(nn.Module):
    """The Liquid Ensemble layer with its defaults (the one-sink solver, checks on):
    ``forward(x, y)`` is the MSE plus the layer's auxiliary loss."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = LiquidEnsembleLayer(DelegatingMLPExperts(5, 1, 4, hidden=16))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.layer(x).float() - y).square().mean() + self.layer.auxiliary_loss()


def test_amp_on_cpu_trains_the_liquid_ensemble_with_its_defaults(tmp_path):
    def run(amp: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        model, (x, y) = LiquidEnsembleRegressor(), regression_data(128)
        before = float(model(x, y).detach())
        Trainer(model, TensorDataset(x, y), train_batch_size=32, train_lr=1e-2,
                train_num_steps=60, ema_decay=None, amp=amp, results_folder=tmp_path / str(amp),
                progress_bar=False, seed=0).train()
        return before, float(model(x, y).detach())

    before, after32 = run(False)
    before16, after16 = run(True)
    gain = before - after32
    assert before16 == before and gain > 0.05 * abs(before)
    assert abs((before - after16) - gain) < 0.1 * gain


class FixedDelegation(nn.Module):
    """An expert whose delegation is ``softmax`` of fixed logits: in bfloat16 the four
    probabilities round to a row summing to ``1 - 2**-8``."""

    def __init__(self) -> None:
        super().__init__()
        self.predictor = nn.Linear(5, 1)
        self.router = nn.Linear(5, 4)
        with torch.no_grad():
            self.router.weight.zero_()
            self.router.bias.copy_(torch.tensor([0.7, 0.7, 0.4, -1.5]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictor(x), torch.softmax(self.router(x), -1)


def test_the_delegation_check_allows_half_precision_rounding_only_in_half_precision():
    x = regression_data(8)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        row = FixedDelegation()(x)[1][0]
        assert row.dtype == torch.bfloat16 and row.sum() == 1 - 2**-8  # the premise
        LiquidEnsembleLayer([FixedDelegation() for _ in range(4)], solver="sink_many")(x)
    off = torch.full((2, 4, 4), 0.25)
    off[:, :, 0] += 2e-3  # rows summing to 1.002: still refused in float32
    with pytest.raises(ValueError, match="summing to one within 0.001"):
        check_delegations(off, 4)
    check_delegations(off.bfloat16(), 4)  # within bfloat16's rounding


def test_the_one_sink_solver_runs_in_half_precision_as_in_float32():
    layer = LiquidEnsembleLayer(DelegatingMLPExperts(5, 1, 4, hidden=16), check=False)
    x = regression_data(32)[0]
    y32 = layer(x)
    power32 = layer.last_power.clone()
    (g32,) = torch.autograd.grad(y32.sum(), layer.experts.parameters().__next__())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = layer(x)
    assert y16.dtype == torch.bfloat16 and layer.last_power.dtype == torch.bfloat16
    (g16,) = torch.autograd.grad(y16.float().sum(), layer.experts.parameters().__next__())
    torch.testing.assert_close(layer.last_power.float(), power32, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y16.float(), y32, rtol=5e-2, atol=5e-2)
    assert (g16 - g32).norm() <= 5e-2 * g32.norm()
