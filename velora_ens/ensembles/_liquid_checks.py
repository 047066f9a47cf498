"""Checks of the Liquid Ensemble's inputs and experts' outputs, with messages that say
what is wrong and where: delegations that are not probability vectors, and the source of a
NaN or inf (the input, or which expert's prediction or delegation)."""

from __future__ import annotations

import math

import torch

from velora_ens.ensembles._inputs import not_finite, refuse_not_finite

__all__ = ["check_delegations", "check_outputs", "tolerance"]


def tolerance(D: torch.Tensor, atol: float | None = None) -> float:
    """How far from one a row sum may be: ``atol``, by default 1e-3, or four units in the
    last place for half-precision delegations (a bfloat16 softmax row can sum to
    ``1 - 2**-8``, mixed precision's usual rounding)."""
    atol = 1e-3 if atol is None else atol
    if D.is_floating_point() and torch.finfo(D.dtype).bits <= 16:
        return max(atol, 4 * torch.finfo(D.dtype).eps)
    return atol


def check_delegations(D: torch.Tensor, num_experts: int | None = None,
                      atol: float | None = None) -> torch.Tensor:
    """Refuse a delegation tensor that is not ``(B, N, N)`` with probability-vector rows
    (row sums within :func:`tolerance` of one)."""
    if not isinstance(D, torch.Tensor) or D.dim() != 3 or D.shape[1] != D.shape[2]:
        shape = tuple(D.shape) if isinstance(D, torch.Tensor) else type(D).__name__
        raise ValueError(f"delegations must have shape (B, N, N) (row i = expert i's "
                         f"delegation vector), got {shape}")
    if num_experts is not None and D.shape[1] != num_experts:
        raise ValueError(f"delegations are over {D.shape[1]} experts, expected {num_experts} "
                         f"(shape {tuple(D.shape)})")
    atol = tolerance(D, atol)
    if not _delegations_ok(D, atol):
        _explain_bad_delegations(D, atol)
    return D


def _delegations_ok(D: torch.Tensor, atol: float) -> bool:
    """One device sync: rows sum to one within ``atol``, no entry below ``-atol``, and
    everything finite (a NaN fails every comparison)."""
    with torch.no_grad():
        ok = ((D.sum(-1) - 1.0).abs().amax() <= atol) & (D.amin() >= -atol)
        return bool(ok)


def _explain_bad_delegations(D: torch.Tensor, atol: float) -> None:
    with torch.no_grad():
        finite = torch.isfinite(D)
        if not bool(finite.all()):
            rows = (~finite).any(-1)  # (B, N)
            experts = rows.any(0).nonzero().flatten().tolist()
            raise ValueError(
                f"delegations are not finite: {int((~finite).sum())} NaN/inf entries, from "
                f"expert(s) {experts} on {int(rows.any(1).sum())} of {D.shape[0]} samples")
        sums = D.sum(-1)
        raise ValueError(
            "each expert's delegation must be a probability vector over the experts "
            f"(non-negative, summing to one within {atol:g}); found row sums in "
            f"[{sums.min().item():.4g}, {sums.max().item():.4g}] and minimum entry "
            f"{D.min().item():.4g}")


def check_outputs(x: torch.Tensor, ys: torch.Tensor, D: torch.Tensor) -> None:
    """One sync: delegations are probability vectors and predictions finite; else
    name the culprit: the input, an expert's prediction or its delegation."""
    with torch.no_grad():
        lo, hi = torch.aminmax(D.sum(-1))
        stats = [lo, hi, D.amin()]
        if ys.is_floating_point():  # the sum is NaN or inf if a prediction is
            total = ys.sum()
            stats.append(total if total.dtype == lo.dtype else total.to(lo.dtype))
        lo, hi, low, total = (torch.stack(stats).tolist() + [0.0])[:4]
        atol = tolerance(D)
        if 1.0 - atol <= lo and hi <= 1.0 + atol and low >= -atol and math.isfinite(total):
            return
        refuse_not_finite(x, "the input x of LiquidEnsembleLayer",
                          "the experts need finite inputs")
        for i in range(D.shape[1]):
            if ys.is_floating_point() and not bool(torch.isfinite(ys[:, i]).all()):
                raise ValueError(f"expert {i}'s prediction {not_finite(ys[:, i])}, with "
                                 "a finite input (are its parameters finite?)")
            if not bool(torch.isfinite(D[:, i]).all()):
                raise ValueError(f"expert {i}'s delegation {not_finite(D[:, i])}, with "
                                 "a finite input (are its parameters finite?)")
    check_delegations(D, D.shape[1])
