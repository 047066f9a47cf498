"""Critic heads: N critics over the ``(N, B, out)`` member shape, with one definition of
their disagreement (a :class:`~velora_ens.ensembles.Prediction`).

Four heads, chosen by ``critic_head`` (:func:`make_critic_head`):

* ``"deep"``: the vectorised deep ensemble (:class:`DeepCritics`, N independent MLPs in
  one batched call; today's critics, bit for bit);
* ``"batch"``: a BatchEnsemble critic (:class:`BatchCritics`): one shared MLP whose
  members differ by rank-1 fast weights (:func:`velora_ens.ensembles.batchensemble`);
* ``"liquid"``: a Liquid Ensemble critic (:class:`LiquidCritics`): experts that delegate
  to each other (:class:`velora_ens.ensembles.LiquidEnsembleLayer`); its value is the
  power-weighted mean and its delegation confidences are available as uncertainty;
* ``"moe"``: a Bayesian / stochastic critic (:class:`BayesianCritics`): the MLP's
  parameters are drawn afresh from a learned Gaussian for every member at every call
  (an :class:`velora_ens.ensembles.moe.IIDGaussianGroup`), trained with its KL term.

Every head takes ``(B, in)`` and returns the members' values ``(N, B, out)``; its
:meth:`~CriticHead.prediction` of them gives the mean and the epistemic spread
(variance of the member values around their, possibly weighted, mean).
:meth:`~CriticHead.loss` is the members' Bellman loss (with optional per-member,
per-sample weights: bootstrap masks, SUNRISE's weighted backups) plus whatever the head
adds. Options that fit every head: frozen randomised prior functions
(:class:`WithPrior`, Osband et al. 2018) and REDQ's random-subset targets
(``target_subset`` in :class:`HeadOptions`).

>>> head = make_critic_head("batch", 5, 1, n_critics=4)
>>> q = head(torch.randn(3, 5))            # (4, 3, 1)
>>> head.prediction(q).epistemic.shape     # variance over the 4 members
torch.Size([3, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from agents.neuroflow.critics import (
    CriticEnsemble,
    StackedMLP,
    _stacked_mlp,
    stacked_mlp_input_gradient,
)
from velora_ens._validation import check_int
from velora_ens.ensembles import DelegatingMLPExperts, LiquidEnsembleLayer, Prediction
from velora_ens.ensembles import batchensemble as _batchensemble
from velora_ens.ensembles.moe import IIDGaussianGroup

__all__ = ["HEADS", "BatchCritics", "BayesianCritics", "CriticHead", "DeepCritics",
           "HeadOptions", "LiquidCritics", "WithPrior", "bootstrap_masks", "loss_weights",
           "make_critic_head"]

#: the head names ``critic_head`` accepts
HEADS = ("deep", "batch", "liquid", "moe")

#: Liquid Ensemble confidences that can stand for the uncertainty (each in [0, 1],
#: 1 = confident), see :meth:`CriticHead.uncertainty`
CONFIDENCES = ("power_entropy", "delegation_entropy", "self_delegation")


class CriticHead(nn.Module):
    """What every head offers besides ``forward(x, detach_params=False) -> (N, B, out)``.

    The defaults are the deep ensemble's: uniform members, the minimum or the mean as
    the reduction, the members' squared Bellman errors as the loss.
    """

    kind = "deep"
    #: whether member ``k`` is the same function from call to call (Thompson sampling
    #: needs it; the Bayesian head draws new members at every call)
    fixed_members = True
    n_critics: int

    @property
    def n_members(self) -> int:
        return self.n_critics

    def reduce(self, q: torch.Tensor, how: str) -> torch.Tensor:
        """Combine member values ``(N, B, ...)``: ``"min"`` (clipped double-Q) or
        ``"mean"`` (the head's mean: power-weighted for the Liquid Ensemble)."""
        return q.min(0).values if how == "min" else q.mean(0)

    def member_weights(self, q: torch.Tensor) -> torch.Tensor | None:
        """Per-sample member weights ``(B, N)`` of the last call (``None``: uniform)."""
        return None

    def prediction(self, q: torch.Tensor) -> Prediction:
        """The members ``(N, B, out)`` as a :class:`Prediction`: its ``mean``, and its
        ``epistemic`` variance ``sum_m w_m (q_m - mean)^2`` (the one definition of the
        critics' disagreement; with two uniform members its square root is
        ``|q_1 - q_2| / 2``, OAC's sigma)."""
        return Prediction.from_gaussians(q, weights=self.member_weights(q))

    def uncertainty(self, q: torch.Tensor, kind: str = "epistemic") -> torch.Tensor:
        """A spread ``(B, out)`` of the members: the epistemic standard deviation, or
        (Liquid Ensemble) ``1 - confidence`` for one of :data:`CONFIDENCES`."""
        if kind != "epistemic":
            raise ValueError(f"uncertainty {kind!r} needs critic_head='liquid' (the "
                             f"{self.kind!r} head only has 'epistemic')")
        return _std(self.prediction(q).epistemic)

    def loss(self, q: torch.Tensor, target: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """``0.5 * sum_m mean_b w_mb (q_mb - y_b)^2`` for member values ``q`` ``(N, n)``
        and targets ``(n,)`` (one per member: ``(N, n)``); ``weights`` ``(N, n)`` or
        ``(n,)`` (``None``: all 1). Values ``(N, n, D)`` (one per action entry) share
        their sample's target and weight; the mean runs over the entries too."""
        err = F.mse_loss(q, per_sample(target, q).expand_as(q), reduction="none")
        if weights is not None:
            err = err * per_sample(weights, q)
        loss = 0.5 * err.mean(tuple(range(1, err.dim()))).sum()
        extra = self.regularizer()
        return loss if extra is None else loss + extra

    def regularizer(self) -> torch.Tensor | None:
        """A term the head adds to its loss (``None``: none)."""
        return None

    def optimism_gradient(self, x: torch.Tensor, beta: float,
                          uncertainty: str = "epistemic") -> torch.Tensor:
        """The gradient ``(B, in)`` of ``mean + beta * spread`` of the members' values
        (one output each) with respect to the input ``x`` ``(B, in)``, parameters held
        fixed: OAC's direction of optimism. Autograd here; the deep ensemble computes
        it without a graph."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            q = self(x, detach_params=True)
            score = self.prediction(q).mean + beta * self.uncertainty(q, uncertainty)
            (grad,) = torch.autograd.grad(score.sum(), x)
        return grad

    def call_detached(self, x: torch.Tensor) -> torch.Tensor:
        """The members' values with the head's parameters detached (gradients reach
        ``x`` only, as an actor loss or OAC's gradient needs)."""
        params = {k: v.detach() for k, v in self.named_parameters()}
        return functional_call(self, params, (x,))


class DeepCritics(CriticHead, CriticEnsemble):
    """The vectorised deep ensemble: :class:`~agents.neuroflow.critics.CriticEnsemble` as a head."""

    kind = "deep"

    def optimism_gradient(self, x: torch.Tensor, beta: float,
                          uncertainty: str = "epistemic") -> torch.Tensor:
        """:meth:`CriticHead.optimism_gradient` in closed form over the members: with
        uniform members, ``d(mean + beta std)/dq_m = (1 + beta (q_m - mean) / std) / N``
        (the deviations sum to zero), carried to the input by the members' own
        backward pass (the same operations autograd runs, without building a graph)."""
        if uncertainty != "epistemic" or self.out_features != 1:
            return super().optimism_gradient(x, beta, uncertainty)
        params = self.layer_params(detach=True)
        acts = _stacked_mlp(x.detach().unsqueeze(0).expand(self.n_critics, -1, -1), params)
        q = acts[-1]  # (N, B, 1)
        deviation = q - q.mean(0)
        variance = deviation.square().mean(0)
        # _std clamps the variance; where the clamp holds, the spread has no gradient
        slope = torch.where(variance >= 1e-12, beta / _std(variance), 0.0)
        grad = (1.0 + slope * deviation) / self.n_critics
        return stacked_mlp_input_gradient(acts[:-1], params[0::2], grad).sum(0)


class BatchCritics(CriticHead):
    """A BatchEnsemble critic: one MLP shared by ``n_critics`` members, member ``m``'s
    layer ``W (r_m s_m^T)`` plus its own bias (Wen et al. 2020); the fast weights start
    as random signs so that the members differ from the first update."""

    kind = "batch"

    def __init__(self, in_features: int, out_features: int, n_critics: int = 2,
                 hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.n_critics = check_int("n_critics", n_critics, 1)
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if k < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = _batchensemble(nn.Sequential(*layers), n_critics, init="random_sign")
        for m in self.net.modules():  # a fresh layer's bias, not zeros: members differ
            if hasattr(m, "bias") and m.bias is not None and m.bias.dim() == 2:
                bound = 1.0 / math.sqrt(m.in_features)
                with torch.no_grad():
                    m.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, *, detach_params: bool = False) -> torch.Tensor:
        _check_input(self, x)
        return self.call_detached(x) if detach_params else self.net(x)


class LiquidCritics(CriticHead):
    """A Liquid Ensemble critic: ``n_critics`` MLP experts, each with a delegation head;
    the value is the power-weighted mean ``sum_j p_j Q_j / N`` (Liquid Ensemble's
    delegation solved per sample), and its loss trains the experts on their own
    Bellman errors, the combination on its own, plus the layer's auxiliary loss.

    Its delegation confidences (``power_entropy``, ``delegation_entropy``,
    ``self_delegation``) can stand for the uncertainty of an exploration strategy
    (``uncertainty="power_entropy"``): ``1 - confidence``.
    """

    kind = "liquid"

    def __init__(self, in_features: int, out_features: int, n_critics: int = 2,
                 hidden: Sequence[int] = (256, 256), solver: str = "sink_one") -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.n_critics = check_int("n_critics", n_critics, 2)
        hidden = tuple(hidden) or (256,)
        experts = DelegatingMLPExperts(in_features, out_features, n_critics,
                                       hidden=hidden[0], depth=len(hidden))
        self.layer = LiquidEnsembleLayer(experts, solver=solver, check=False)

    def forward(self, x: torch.Tensor, *, detach_params: bool = False) -> torch.Tensor:
        _check_input(self, x)
        if detach_params:
            return self.call_detached(x)
        self.layer(x)  # solves the delegation; keeps ys, D and power
        return self.layer.last_ys.transpose(0, 1)

    def call_detached(self, x: torch.Tensor) -> torch.Tensor:
        params = {k: v.detach() for k, v in self.named_parameters()}
        functional_call(self.layer, {k[len("layer."):]: v for k, v in params.items()}, (x,))
        return self.layer.last_ys.transpose(0, 1)

    def member_weights(self, q: torch.Tensor) -> torch.Tensor | None:
        power = self.layer.last_power
        if power is None or power.shape[0] != q.shape[1]:
            raise RuntimeError("LiquidCritics: call the head on this batch first (the "
                               "member weights come from its last call)")
        return power / self.n_critics

    def reduce(self, q: torch.Tensor, how: str) -> torch.Tensor:
        if how == "min":
            return q.min(0).values
        w = self.member_weights(q).t().reshape(q.shape[:2] + (1,) * (q.dim() - 2))
        return (w.to(q.dtype) * q).sum(0)

    def prediction(self, q: torch.Tensor) -> Prediction:
        layer = self.layer
        conf = {name: getattr(layer, f"confidence_{name}")() for name in CONFIDENCES}
        return Prediction.from_gaussians(q, weights=self.member_weights(q), confidences=conf)

    def uncertainty(self, q: torch.Tensor, kind: str = "epistemic") -> torch.Tensor:
        if kind == "epistemic":
            return _std(self.prediction(q).epistemic)
        if kind not in CONFIDENCES:
            raise ValueError(f"uncertainty must be 'epistemic' or one of {CONFIDENCES}, "
                             f"got {kind!r}")
        conf = getattr(self.layer, f"confidence_{kind}")()
        return (1.0 - conf).reshape(-1, *([1] * (q.dim() - 2))).expand(q.shape[1:])

    def loss(self, q: torch.Tensor, target: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        members = super().loss(q, target, weights)
        combined = self.reduce(q, "mean")
        if target.dim() == 2:  # one target per member: their power-weighted mean
            target = self.reduce(target, "mean")
        target = per_sample(target, combined, batch_dims=1).expand_as(combined)
        return members + 0.5 * F.mse_loss(combined, target) + self.layer.auxiliary_loss()


class BayesianCritics(CriticHead):
    """A Bayesian (stochastic-parameter) critic: the MLP's parameter vector follows a
    learned diagonal Gaussian (:class:`~velora_ens.ensembles.moe.IIDGaussianGroup`, prior
    ``N(0, prior_std^2)``); every call draws ``n_critics`` parameter vectors, one per
    member, by reparameterisation, so the members' spread is the posterior's. Its loss
    adds ``kl_weight * KL(q || prior)``."""

    kind = "moe"
    fixed_members = False

    def __init__(self, in_features: int, out_features: int, n_critics: int = 2,
                 hidden: Sequence[int] = (256, 256), init_std: float = 0.01,
                 prior_std: float = 1.0, kl_weight: float = 1e-6) -> None:
        super().__init__()
        from velora_ens.ensembles.moe import IIDGaussianPrior

        self.in_features, self.out_features = in_features, out_features
        self.n_critics = check_int("n_critics", n_critics, 2)
        self.kl_weight = float(kl_weight)
        self.sizes = [in_features, *hidden, out_features]
        self.shapes = [s for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True)
                       for s in ((a, b), (1, b))]
        n = sum(math.prod(s) for s in self.shapes)
        self.group = IIDGaussianGroup("critic", n, IIDGaussianPrior(0.0, prior_std),
                                      init_std=init_std)
        init = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(a)
            init += [(torch.rand(a * b) * 2 - 1) * bound, (torch.rand(b) * 2 - 1) * bound]
        self.group.initialize_(torch.cat(init))

    def _params(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``(N, P)`` draws as stacked ``(N, in, out)`` weights and ``(N, 1, out)`` biases."""
        out, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            out.append(flat[:, start:start + size].reshape(flat.shape[0], *shape))
            start += size
        return out

    def forward(self, x: torch.Tensor, *, detach_params: bool = False) -> torch.Tensor:
        _check_input(self, x)
        draws = self.group.sample_parameters(self.n_critics)
        if detach_params:
            draws = draws.detach()
        params = self._params(draws)
        x = x.unsqueeze(0).expand(self.n_critics, -1, -1)
        if torch.is_grad_enabled():
            return StackedMLP.apply(x, *params)
        return _stacked_mlp(x, params)[-1]

    def regularizer(self) -> torch.Tensor:
        return self.kl_weight * self.group.distribution_loss()


class WithPrior(CriticHead):
    """A head plus a frozen randomised prior: ``Q_m = f_m + prior_scale * p_m``, with
    ``p`` a fixed random deep ensemble of the same shape that no loss trains (Osband et
    al. 2018: the prior keeps members apart where there is no data)."""

    def __init__(self, head: CriticHead, prior_scale: float,
                 hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.head, self.prior_scale = head, float(prior_scale)
        self.kind, self.fixed_members = head.kind, head.fixed_members
        self.n_critics = head.n_critics
        self.in_features, self.out_features = head.in_features, head.out_features
        self.prior = CriticEnsemble(head.in_features, head.out_features, head.n_critics,
                                    hidden)
        self.prior.requires_grad_(False)

    def forward(self, x: torch.Tensor, *, detach_params: bool = False) -> torch.Tensor:
        with torch.no_grad():
            prior = self.prior(x)
        return self.head(x, detach_params=detach_params) + self.prior_scale * prior

    def reduce(self, q: torch.Tensor, how: str) -> torch.Tensor:
        return self.head.reduce(q, how)

    def member_weights(self, q: torch.Tensor) -> torch.Tensor | None:
        return self.head.member_weights(q)

    def prediction(self, q: torch.Tensor) -> Prediction:
        return self.head.prediction(q)

    def uncertainty(self, q: torch.Tensor, kind: str = "epistemic") -> torch.Tensor:
        return self.head.uncertainty(q, kind)

    def loss(self, q: torch.Tensor, target: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.loss(q, target, weights)


def per_sample(values: torch.Tensor, q: torch.Tensor, batch_dims: int = 2) -> torch.Tensor:
    """Per-sample ``values`` given trailing axes of size 1 to line up with ``q``, whose
    first ``batch_dims`` axes are (members and) samples and the rest one value per
    action entry."""
    extra = q.dim() - batch_dims
    return values.reshape(*values.shape, *([1] * extra)) if extra > 0 else values


def _std(variance: torch.Tensor) -> torch.Tensor:
    """The standard deviation, with a finite gradient where the members agree exactly
    (OAC differentiates it)."""
    return variance.clamp_min(1e-12).sqrt()


def _check_input(head: CriticHead, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape[-1] != head.in_features:
        raise ValueError(f"{type(head).__name__} expected input (B, {head.in_features}), "
                         f"got {tuple(x.shape)}")


@dataclass(frozen=True)
class HeadOptions:
    """The options of ``critic_head_kwargs`` that every head shares.

    Attributes:
        prior_scale: scale of a frozen randomised prior per member (0: none).
        prior_hidden: the prior networks' hidden widths.
        bootstrap: probability that a transition trains a member (SUNRISE's and
            Bootstrapped DQN's masks, drawn once per transition and kept in replay; at
            least one member trains on every transition). 1: no masks.
        target_subset: REDQ: the targets use the minimum over a random subset of this
            many target critics (``None``: all of them, reduced by ``target_q``).
        head: the head's own keyword arguments (``solver`` for ``"liquid"``;
            ``init_std``, ``prior_std``, ``kl_weight`` for ``"moe"``).
    """

    prior_scale: float = 0.0
    prior_hidden: tuple[int, ...] = (64, 64)
    bootstrap: float = 1.0
    target_subset: int | None = None
    head: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, kind: str, kwargs: dict[str, Any] | None, n_critics: int) -> HeadOptions:
        """Check ``critic_head`` and its keyword arguments against ``n_critics``."""
        if kind not in HEADS:
            raise ValueError(f"critic_head must be one of {HEADS}, got {kind!r}")
        kwargs = dict(kwargs or {})
        own = {"deep": (), "batch": (), "liquid": ("solver",),
               "moe": ("init_std", "prior_std", "kl_weight")}[kind]
        shared = ("prior_scale", "prior_hidden", "bootstrap", "target_subset")
        unknown = sorted(set(kwargs) - set(own) - set(shared))
        if unknown:
            raise ValueError(f"critic_head_kwargs for critic_head={kind!r}: unknown "
                             f"{unknown}; expected some of {sorted(own + shared)}")
        options = cls(prior_scale=float(kwargs.pop("prior_scale", 0.0)),
                      prior_hidden=tuple(kwargs.pop("prior_hidden", (64, 64))),
                      bootstrap=float(kwargs.pop("bootstrap", 1.0)),
                      target_subset=kwargs.pop("target_subset", None),
                      head=tuple(sorted(kwargs.items())))
        if kind in ("liquid", "moe") and n_critics < 2:
            raise ValueError(f"critic_head={kind!r} needs n_critics >= 2, got {n_critics}")
        if not options.prior_scale >= 0:
            raise ValueError(f"prior_scale must be >= 0, got {options.prior_scale!r}")
        if not 0 < options.bootstrap <= 1:
            raise ValueError(f"bootstrap must be in (0, 1], got {options.bootstrap!r}")
        if options.bootstrap < 1 and n_critics < 2:
            raise ValueError(f"bootstrap masks need n_critics >= 2, got {n_critics}")
        if options.target_subset is not None:
            check_int("target_subset", options.target_subset, 1)
            if options.target_subset > n_critics:
                raise ValueError(f"target_subset={options.target_subset} must be at most "
                                 f"n_critics={n_critics}")
        if options.prior_scale > 0 and kind == "moe":
            raise ValueError("prior_scale is for heads with fixed members ('deep', 'batch', "
                             "'liquid'); the 'moe' head's prior is its prior_std")
        return options


def make_critic_head(kind: str, in_features: int, out_features: int, n_critics: int = 2,
                     hidden: Sequence[int] = (256, 256), *, ncp_neurons: int | None = None,
                     seed: int = 0, options: HeadOptions | None = None) -> CriticHead:
    """The head ``kind`` (one of :data:`HEADS`), with a prior when ``options`` ask."""
    options = options or HeadOptions()
    if ncp_neurons is not None and kind != "deep":
        raise ValueError(f"critic_ncp_neurons is for critic_head='deep', got {kind!r}")
    extra = dict(options.head)
    if kind == "deep":
        head: CriticHead = DeepCritics(in_features, out_features, n_critics, hidden,
                                       ncp_neurons=ncp_neurons, seed=seed)
    elif kind == "batch":
        head = BatchCritics(in_features, out_features, n_critics, hidden)
    elif kind == "liquid":
        head = LiquidCritics(in_features, out_features, n_critics, hidden, **extra)
    elif kind == "moe":
        head = BayesianCritics(in_features, out_features, n_critics, hidden, **extra)
    else:
        raise ValueError(f"critic_head must be one of {HEADS}, got {kind!r}")
    if options.prior_scale > 0:
        head = WithPrior(head, options.prior_scale, options.prior_hidden)
    return head


def bootstrap_masks(n: int, n_members: int, p: float, rng: np.random.Generator
                    ) -> np.ndarray:
    """``(n, n_members)`` masks ``m ~ Bernoulli(p)`` with at least one 1 per row (a row
    of zeros gets one member at random, as SUNRISE's rollouts do)."""
    masks = (rng.random((n, n_members)) < p).astype(np.float32)
    empty = np.flatnonzero(masks.sum(1) == 0)
    if empty.size:
        masks[empty, rng.integers(0, n_members, size=empty.size)] = 1.0
    return masks


def loss_weights(masks: torch.Tensor | None, weights: torch.Tensor | None, B: int, S: int
                 ) -> torch.Tensor | None:
    """Per-member, per-sample weights of the critic loss over ``B`` sequences of ``S``
    trained steps: the bootstrap ``masks`` kept in replay ``(B, >= S, N)`` as ``(N, B S)``,
    times an exploration strategy's backup ``weights`` of the ``B T`` target steps
    ``(B T,)``, ``T >= S`` (``None``: neither)."""
    if weights is not None and weights.numel() != B * S:
        weights = weights.reshape(B, -1)[:, :S].reshape(B * S)
    if masks is not None:
        masks = masks[:, :S].reshape(B * S, -1).t()
        weights = masks if weights is None else masks * weights
    return weights
