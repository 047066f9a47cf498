"""Scoring a regression :class:`~velora_ens.ensembles.Prediction`: accuracy, NLL,
interval coverage, quantile bands and Kendall's tau of each confidence measure."""

from __future__ import annotations

import torch

from velora_ens.ensembles import Prediction
from velora_ens.metrics import gaussian_interval, gaussian_nll, interval_coverage, kendall_tau, rmse

__all__ = ["confidence_taus", "mixture_quantiles", "regression_scores"]


def mixture_quantiles(pred: Prediction, levels: tuple[float, ...], num_samples: int = 4000,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantiles ``(len(levels), B, ...)`` of the prediction's mixture of member Gaussians
    (member weights included), estimated from ``num_samples`` draws per point."""
    means = pred.members  # (E, B, ...)
    var = pred.member_variances if pred.member_variances is not None else \
        torch.zeros_like(means)
    e, b = means.shape[:2]
    w = pred.weights if pred.weights is not None else means.new_full((b, e), 1.0 / e)
    idx = torch.multinomial(w.double(), num_samples, replacement=True, generator=generator)
    flat_m = means.transpose(0, 1).reshape(b, e, -1)  # (B, E, F)
    flat_v = var.transpose(0, 1).reshape(b, e, -1)
    gather = idx[..., None].expand(-1, -1, flat_m.shape[-1])
    mu, v = flat_m.gather(1, gather), flat_v.gather(1, gather)  # (B, S, F)
    noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
    draws = mu + v.sqrt() * noise
    q = torch.quantile(draws, torch.tensor(levels, dtype=draws.dtype), dim=1)  # (L, B, F)
    return q.reshape((len(levels),) + tuple(means.shape[1:]))


def regression_scores(mean: torch.Tensor, variance: torch.Tensor,
                      target: torch.Tensor) -> dict[str, float]:
    """RMSE, Gaussian NLL (with its constant) and the coverage of the central 90%
    Gaussian interval of the moment-matched prediction, all in the units given."""
    lo, hi = gaussian_interval(mean, variance, 0.9)
    return {"rmse": rmse(mean, target), "nll": gaussian_nll(mean, variance, target),
            "coverage90": interval_coverage(lo, hi, target)}


def confidence_taus(error: torch.Tensor, confidences: dict[str, torch.Tensor]
                    ) -> dict[str, float]:
    """``kendall_tau(error, -confidence)`` per measure: positive when a less confident
    prediction tends to have a larger error."""
    return {k: kendall_tau(error.reshape(-1), -c.reshape(-1)) for k, c in confidences.items()}
