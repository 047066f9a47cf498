"""One result type for every ensemble head: :class:`Prediction`.

A head's members (ensemble members, experts, parameter draws) each predict a Gaussian
(regression) or a categorical distribution (classification); the ensemble predicts their
mixture, with per-sample member weights ``w`` (uniform, or Liquid-Ensemble power / N).
The uncertainty of the mixture is split into

* regression (variance): total ``sum_m w_m (var_m + mu_m^2) - mu^2`` = aleatoric
  ``sum_m w_m var_m`` + epistemic ``sum_m w_m (mu_m - mu)^2``;
* classification (entropy, nats): total ``H(sum_m w_m p_m)`` = aleatoric
  ``sum_m w_m H(p_m)`` + epistemic (the mutual information between the label and the
  member), which is >= 0 because entropy is concave.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

__all__ = ["Prediction", "categorical_entropy"]


def categorical_entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy in nats of the categorical distributions along ``dim`` (0 log 0 = 0)."""
    return -torch.special.xlogy(probs, probs).sum(dim)


def _weights(weights: torch.Tensor | None, members: torch.Tensor) -> torch.Tensor:
    """Member weights ``(B, E)`` (or ``None``: uniform) as ``(E, B, 1, ...)`` for broadcasting."""
    e, b = members.shape[0], members.shape[1]
    if weights is None:
        return members.new_full((e, b) + (1,) * (members.dim() - 2), 1.0 / e)
    if tuple(weights.shape) != (b, e):
        raise ValueError(f"weights must have shape (B, E) = {(b, e)}, got {tuple(weights.shape)}")
    return weights.t().reshape((e, b) + (1,) * (members.dim() - 2)).to(members.dtype)


@dataclass
class Prediction:
    """An ensemble prediction with its uncertainty split.

    Attributes:
        task: ``"regression"`` or ``"classification"``.
        mean: the mixture mean ``(B, ...)``; for classification the class probabilities
            ``(B, C)`` (also :attr:`probs`).
        members: the members' means or probabilities ``(E, B, ...)``.
        total: total uncertainty (variance ``(B, ...)`` for regression, entropy ``(B,)``
            in nats for classification).
        aleatoric: the part the members themselves predict (mean member variance / mean
            member entropy).
        epistemic: the part that comes from member disagreement (variance of the member
            means / mutual information).
        member_variances: the members' predicted variances ``(E, B, ...)`` (regression
            heads that predict one), else ``None``.
        weights: per-sample member weights ``(B, E)`` summing to one, ``None`` = uniform.
        confidences: head-specific confidence scores ``(B,)``, higher = more confident
            (e.g. the Liquid Ensemble's ``power_entropy``, ``self_delegation``).
    """

    task: str
    mean: torch.Tensor
    members: torch.Tensor
    total: torch.Tensor
    aleatoric: torch.Tensor
    epistemic: torch.Tensor
    member_variances: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    confidences: dict[str, torch.Tensor] = field(default_factory=dict)

    # --- constructors ---------------------------------------------------------------
    @classmethod
    def from_gaussians(
        cls,
        means: torch.Tensor,
        variances: torch.Tensor | None = None,
        *,
        weights: torch.Tensor | None = None,
        confidences: dict[str, torch.Tensor] | None = None,
    ) -> Prediction:
        """Mixture of the members' Gaussians ``N(means[m], variances[m])``, each
        ``(E, B, ...)``; ``variances=None`` means point predictions (aleatoric 0)."""
        if means.dim() < 2:
            raise ValueError(f"means must be (E, B, ...), got shape {tuple(means.shape)}")
        if variances is not None and variances.shape != means.shape:
            raise ValueError(f"variances have shape {tuple(variances.shape)}, expected the "
                             f"means' shape {tuple(means.shape)}")
        w = _weights(weights, means)
        mean = (w * means).sum(0)
        epistemic = (w * (means - mean).pow(2)).sum(0)
        aleatoric = (w * variances).sum(0) if variances is not None else torch.zeros_like(mean)
        return cls("regression", mean, means, aleatoric + epistemic, aleatoric, epistemic,
                   member_variances=variances, weights=weights,
                   confidences=dict(confidences or {}))

    @classmethod
    def from_probs(
        cls,
        probs: torch.Tensor,
        *,
        weights: torch.Tensor | None = None,
        confidences: dict[str, torch.Tensor] | None = None,
    ) -> Prediction:
        """Mixture of the members' categorical distributions ``probs`` ``(E, B, C)``."""
        if probs.dim() != 3:
            raise ValueError(f"probs must be (E, B, C), got shape {tuple(probs.shape)}")
        w = _weights(weights, probs)
        mean = (w * probs).sum(0)
        total = categorical_entropy(mean)
        aleatoric = (w.squeeze(-1) * categorical_entropy(probs)).sum(0)
        epistemic = (total - aleatoric).clamp_min(0.0)
        return cls("classification", mean, probs, total, aleatoric, epistemic,
                   weights=weights, confidences=dict(confidences or {}))

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> Prediction:
        """Like :meth:`from_probs` from the members' logits ``(E, B, C)``."""
        return cls.from_probs(F.softmax(logits, dim=-1), **kwargs)

    # --- views ----------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return self.members.shape[0]

    @property
    def probs(self) -> torch.Tensor:
        """Class probabilities ``(B, C)`` (classification only)."""
        if self.task != "classification":
            raise AttributeError("probs is defined for classification predictions; this is a "
                                 "regression prediction (use .mean)")
        return self.mean

    @property
    def variance(self) -> torch.Tensor:
        """Predictive variance. Regression: the mixture's variance (= :attr:`total`).
        Classification: the variance ``p (1 - p)`` of each class's one-hot indicator,
        ``(B, C)`` (the entropy is :attr:`entropy`)."""
        if self.task == "regression":
            return self.total
        return self.mean * (1.0 - self.mean)

    @property
    def std(self) -> torch.Tensor:
        """Regression: the mixture's standard deviation."""
        if self.task != "regression":
            raise AttributeError("std is defined for regression predictions")
        return self.total.sqrt()

    @property
    def entropy(self) -> torch.Tensor:
        """Classification: predictive entropy ``H(p)`` in nats (= :attr:`total`)."""
        if self.task != "classification":
            raise AttributeError("entropy is defined for classification predictions")
        return self.total

    @property
    def mutual_information(self) -> torch.Tensor:
        """Classification: mutual information between label and member (= :attr:`epistemic`)."""
        if self.task != "classification":
            raise AttributeError("mutual_information is defined for classification predictions")
        return self.epistemic

    def detach(self) -> Prediction:
        """A copy with every tensor detached from the autograd graph."""
        def d(t):
            return None if t is None else t.detach()
        return Prediction(self.task, d(self.mean), d(self.members), d(self.total),
                          d(self.aleatoric), d(self.epistemic), d(self.member_variances),
                          d(self.weights), {k: v.detach() for k, v in self.confidences.items()})
