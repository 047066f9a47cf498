"""The ensemble heads as regression models for the benchmarks.

Every model here follows the Trainer's contract (``model(x, y)`` is the loss) and has
``predict(x) -> Prediction`` whose members are Gaussians (mean and variance), so the
benchmarks score them all the same way. Hidden blocks are ``Linear -> RMSNorm -> SiLU``
like :class:`~velora_ens.ensembles.DeepEnsemble`'s members.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.ensembles import DeepEnsemble, DelegatingMLPExperts, LiquidEnsembleLayer
from velora_ens.ensembles import batchensemble as to_batchensemble
from velora_ens.ensembles.moe import (
    DeterministicGroup,
    GatingNetwork,
    IIDGaussianGroup,
    MixtureOfExperts,
    NeuralNetwork,
    PolynomialChaosExpansion,
    StochasticModel,
)
from velora_ens.ensembles.prediction import Prediction

__all__ = ["HEADS", "BatchEnsembleRegressor", "LiquidRegressor", "MoERegressor",
           "build_regressor", "gaussian_nll_mixture"]

HEADS = ("single", "deep", "batch", "liquid", "moe")
MIN_VAR = 1e-6


def _split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., 2)`` -> mean ``(..., 1)`` and variance ``softplus + 1e-6`` ``(..., 1)``."""
    return out[..., :1], F.softplus(out[..., 1:]) + MIN_VAR


def gaussian_nll_mixture(means: torch.Tensor, variances: torch.Tensor, target: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian NLL (no constant) of ``target (B, 1)`` under the moment-matched mixture of
    the members' Gaussians ``(E, B, 1)`` with weights ``(B, E)`` (default uniform)."""
    w = (torch.full(means.shape[:2], 1.0 / means.shape[0], device=means.device,
                    dtype=means.dtype) if weights is None else weights.t())[..., None]
    mu = (w * means).sum(0)
    var = (w * (variances + means.pow(2))).sum(0) - mu.pow(2)
    var = var.clamp_min(MIN_VAR)
    return 0.5 * (var.log() + (target - mu).pow(2) / var).mean()


def _mlp(dim_in: int, dim_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = dim_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.RMSNorm(hidden, eps=1e-6), nn.SiLU()]
        width = hidden
    layers.append(nn.Linear(width, dim_out))
    return nn.Sequential(*layers)


class BatchEnsembleRegressor(nn.Module):
    """A Gaussian MLP turned into a BatchEnsemble of ``num_members``; each member is
    trained with its own Gaussian NLL on the (tiled) batch."""

    def __init__(self, dim_in: int, hidden: int = 100, depth: int = 2,
                 num_members: int = 4) -> None:
        super().__init__()
        self.net = to_batchensemble(_mlp(dim_in, 2, hidden, depth), num_members)

    def member_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _split(self.net(x))  # (E, B, 1) each

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is None:
            return self.predict(x)
        mean, var = self.member_outputs(x)
        return 0.5 * (var.log() + (y - mean).pow(2) / var).mean()

    def predict(self, x: torch.Tensor) -> Prediction:
        return Prediction.from_gaussians(*self.member_outputs(x))


class LiquidRegressor(nn.Module):
    """A Liquid Ensemble of ``num_experts`` delegating MLP experts, each predicting a
    Gaussian; trained with the NLL of the power-weighted mixture plus the layer's
    auxiliary loss. :meth:`predict` carries the four confidence measures (computed on
    the experts' means)."""

    def __init__(self, dim_in: int, hidden: int = 100, depth: int = 2, num_experts: int = 6,
                 solver: str = "sink_many", load_lambda: float = 0.2,
                 spec_lambda: float = 0.1, expert_loss: float = 0.0) -> None:
        super().__init__()
        self.expert_loss = float(expert_loss)
        experts = DelegatingMLPExperts(dim_in, 2, num_experts, hidden=hidden, depth=depth,
                                       delegation_hidden=max(hidden // 2, 8),
                                       activation=nn.SiLU)
        self.layer = LiquidEnsembleLayer(experts, load_distribution_lambda=load_lambda,
                                         specialization_lambda=spec_lambda, solver=solver,
                                         many_sinks_method="closed_form", check=False)

    def _parts(self, x: torch.Tensor):
        ys, D = self.layer.expert_outputs(x)  # (B, N, 2), (B, N, N)
        power = self.layer.solve(D)
        mean, var = _split(ys.transpose(0, 1))  # (N, B, 1)
        return ys, D, power, mean, var

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is None:
            return self.predict(x)
        _, _, power, mean, var = self._parts(x)
        w = power / self.layer.num_experts
        loss = gaussian_nll_mixture(mean, var, y, w) + self.layer.auxiliary_loss(power)
        if self.expert_loss > 0:  # every expert also fits the data on its own
            loss = loss + self.expert_loss * 0.5 * (var.log() + (y - mean).pow(2) / var).mean()
        return loss

    def predict(self, x: torch.Tensor) -> Prediction:
        ys, D, power, mean, var = self._parts(x)
        conf = self.layer.confidences(ys[..., :1], D, power)
        return Prediction.from_gaussians(mean, var, weights=power / self.layer.num_experts,
                                         confidences=conf)


class MoERegressor(nn.Module):
    """A stochastic mixture of experts with Gaussian (mean-field) parameters, trained by
    the evidence lower bound per data point: the expected Gaussian NLL over
    ``num_samples`` parameter draws plus ``KL / num_train``.

    ``expert="mlp"``: functional MLP experts predicting mean and variance (heteroscedastic);
    ``expert="pce"``: polynomial-chaos experts of ``degree`` for the mean with one learned
    noise variance (inputs in ``[-1, 1]``). ``balance > 0`` adds ``balance * (E sum_e u_e^2
    - 1 + H(g) / log E)``: a load-balancing term on the batch's mean gate weights ``u``
    (0 when the experts are used equally) and the mean normalised entropy of the gate
    (0 when one expert answers each input), so that the experts split the inputs instead
    of one expert taking everything early on. ``deterministic_gate``: the gate's weights
    are a MAP point estimate (prior ``gate_prior_std``) and only the experts are random.
    """

    def __init__(self, dim_in: int, num_train: int, *, num_experts: int = 4,
                 expert: str = "mlp", hidden: int = 64, depth: int = 1, degree: int = 5,
                 gate_width: int = 16, num_samples: int = 8, init_std: float = 0.02,
                 prior_std: float = 1.0, balance: float = 0.0,
                 deterministic_gate: bool = False, gate_prior_std: float | None = None) -> None:
        super().__init__()
        from velora_ens.ensembles.moe import IIDGaussianPrior

        if expert not in ("mlp", "pce"):
            raise ValueError(f"expert must be 'mlp' or 'pce', got {expert!r}")
        self.expert, self.num_train, self.num_samples = expert, int(num_train), int(num_samples)
        self.balance = float(balance)
        if expert == "mlp":
            experts = [NeuralNetwork(dim_in, 2, width=hidden, depth=depth, activation=F.silu)
                       for _ in range(num_experts)]
        else:
            experts = [PolynomialChaosExpansion(dim_in, 1, degree=degree)
                       for _ in range(num_experts)]
        gate = GatingNetwork(dim_in, num_experts, width=gate_width, depth=1,
                             activation=torch.tanh)
        surrogate = MixtureOfExperts(experts, gate)
        prior = IIDGaussianPrior(0.0, prior_std)
        groups = [IIDGaussianGroup(f"expert{k}", e.num_params(), prior, init_std=init_std)
                  for k, e in enumerate(experts)]
        gate_prior = IIDGaussianPrior(0.0, gate_prior_std or prior_std)
        groups.append(DeterministicGroup("gate", gate.num_params(), gate_prior)
                      if deterministic_gate else
                      IIDGaussianGroup("gate", gate.num_params(), gate_prior, init_std=init_std))
        self.model = StochasticModel(surrogate, groups)
        self.log_noise = nn.Parameter(torch.tensor(0.0)) if expert == "pce" else None

    def _draws(self, x: torch.Tensor, num_samples: int, params: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if params is None:
            params = self.model.sample_parameters(num_samples)
        out = self.model.surrogate_model(x, params)  # (S, B, out)
        if self.log_noise is None:
            return _split(out)
        return out, (2 * self.log_noise).exp().expand_as(out)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is None:
            return self.predict(x)
        params = self.model.sample_parameters(self.num_samples)
        mean, var = self._draws(x, self.num_samples, params)
        loss = 0.5 * (var.log() + (y - mean).pow(2) / var).mean()
        loss = loss + self.model.distribution_loss() / self.num_train
        if self.balance > 0:
            g = self.model.surrogate_model.get_gating_weights(x, params)  # (S, B, E)
            use = g.mean((0, 1))
            entropy = -(g * g.clamp_min(1e-12).log()).sum(-1).mean() / math.log(g.shape[-1])
            loss = loss + self.balance * (use.numel() * use.pow(2).sum() - 1.0 + entropy)
        return loss

    def predict(self, x: torch.Tensor, num_samples: int = 64) -> Prediction:
        mean, var = self._draws(x, num_samples)
        return Prediction.from_gaussians(mean, var)


def build_regressor(head: str, dim_in: int, num_train: int, *, hidden: int = 100,
                    depth: int = 2, members: int | None = None, **moe: object) -> nn.Module:
    """One of :data:`HEADS` for ``dim_in`` inputs: ``single`` (one Gaussian MLP),
    ``deep`` (Deep Ensemble, 5), ``batch`` (BatchEnsemble, 4), ``liquid`` (Liquid
    Ensemble, 6 experts), ``moe`` (stochastic MoE, 4 experts)."""
    if head == "single":
        return DeepEnsemble(dim_in, 1, num_members=1, hidden_dim=hidden, depth=depth,
                            use_adversarial_training=False)
    if head == "deep":
        return DeepEnsemble(dim_in, 1, num_members=members or 5, hidden_dim=hidden,
                            depth=depth, use_adversarial_training=False)
    if head == "batch":
        return BatchEnsembleRegressor(dim_in, hidden, depth, members or 4)
    if head == "liquid":
        return LiquidRegressor(dim_in, hidden, depth, members or 6)
    if head == "moe":
        return MoERegressor(dim_in, num_train, num_experts=members or 4, **moe)
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")
