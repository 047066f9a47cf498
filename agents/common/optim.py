"""Lean versions of the optimiser calls of an update: Adam's step, clearing and
clipping gradients; and the check that stops an update whose loss is not finite.

``torch.optim.Adam(fused=True).step()`` spends most of a small update's optimiser time
in Python: per-group bookkeeping, grouping tensors by device and dtype, one kernel
call per group. :func:`fused_adam_step` does the same arithmetic (Adam updates each
tensor on its own, so one kernel call over every group's tensors gives the same bits as
one call per group) with the optimiser's own state, so saving, loading and
``optimizer.step()`` keep working. Anything it does not cover falls back to
``optimizer.step()``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["NonFiniteTrainingError", "check_finite", "clip_grad_norm", "fused_adam_step",
           "zero_grad"]

# Group settings that must be the same for every group (and plain) for the fast path.
_SHARED = ("lr", "betas", "eps", "weight_decay")
_PLAIN = {"amsgrad": False, "maximize": False, "fused": True, "capturable": False,
          "differentiable": False, "decoupled_weight_decay": False}


def fused_adam_step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` in one fused kernel call (same result, bit for bit)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"fused_adam_step expects a torch.optim.Adam, got "
                         f"{type(optimizer).__name__}")
    batch = _fused_batch(optimizer)
    if batch is None:
        optimizer.step()
        return
    params, grads, exp_avgs, exp_avg_sqs, steps = batch
    if not params:
        return
    first = optimizer.param_groups[0]
    beta1, beta2 = first["betas"]
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                           lr=first["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=first["weight_decay"], eps=first["eps"],
                           maximize=False, grad_scale=None, found_inf=None)


def _fused_batch(optimizer: torch.optim.Optimizer) -> tuple[list[torch.Tensor], ...] | None:
    """Parameters with a gradient, their gradients, moments and step counts over every
    group, or ``None`` where the one-call step does not apply (another optimiser, groups
    with different settings, a first step before the state exists, unusual tensors)."""
    groups = optimizer.param_groups
    first = groups[0]
    if (type(optimizer) is not torch.optim.Adam or not hasattr(torch, "_fused_adam_")
            or getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None
            or not isinstance(first["lr"], float)):
        return None
    batch: tuple[list[torch.Tensor], ...] = ([], [], [], [], [])
    params, grads, exp_avgs, exp_avg_sqs, steps = batch
    state = optimizer.state
    device = dtype = None
    for group in groups:
        if not (all(group[k] == first[k] for k in _SHARED)
                and all(group.get(k) == v for k, v in _PLAIN.items())):
            return None
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            st = state.get(p)
            if (not st or grad.is_sparse or p.is_complex()
                    or (device is not None and (p.device != device or p.dtype != dtype))):
                return None
            device, dtype = p.device, p.dtype
            params.append(p)
            grads.append(grad)
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
    return batch


def zero_grad(params: list[torch.Tensor]) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` over a parameter list, without the
    optimiser's per-call overhead."""
    for p in params:
        p.grad = None


@torch.no_grad()
def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)`` for parameters on
    one device: the same operations in the same order (same result, bit for bit) without
    its per-call grouping; returns the total norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


class NonFiniteTrainingError(FloatingPointError):
    """A loss or gradient became NaN or infinite; the update was not applied."""


def check_finite(named_values: dict[str, float], step: int, update: int) -> None:
    """Raise :class:`NonFiniteTrainingError`, naming every NaN or infinite value, before
    update number ``update`` at environment step ``step`` is applied."""
    bad = ", ".join(f"{name}={value:g}" for name, value in named_values.items()
                    if not math.isfinite(value))
    if bad:
        raise NonFiniteTrainingError(
            f"training produced a non-finite {bad} at step {step} (update {update}); stopped "
            "before applying it, so the parameters and any saved checkpoint are from the "
            "last good update")
