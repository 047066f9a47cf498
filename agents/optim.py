"""A lean ``step`` for the agent's fused Adam.

``torch.optim.Adam(fused=True).step()`` spends most of a small update's optimiser time
in Python: per-group bookkeeping, grouping tensors by device and dtype, one kernel
call per group. :func:`fused_adam_step` does the same arithmetic (Adam updates each
tensor on its own, so one kernel call over every group's tensors gives the same bits as
one call per group) with the optimiser's own state, so saving, loading and
``optimizer.step()`` keep working. Anything it does not cover falls back to
``optimizer.step()``.
"""

from __future__ import annotations

import torch

__all__ = ["fused_adam_step", "zero_grad"]

# Group settings that must be the same for every group (and plain) for the fast path.
_SHARED = ("lr", "betas", "eps", "weight_decay")
_PLAIN = {"amsgrad": False, "maximize": False, "fused": True, "capturable": False,
          "differentiable": False, "decoupled_weight_decay": False}


def fused_adam_step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` in one fused kernel call (same result, bit for bit)."""
    groups = optimizer.param_groups
    first = groups[0]
    fast = (type(optimizer) is torch.optim.Adam and hasattr(torch, "_fused_adam_")
            and getattr(optimizer, "grad_scale", None) is None
            and getattr(optimizer, "found_inf", None) is None
            and isinstance(first["lr"], float))
    params: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    exp_avgs: list[torch.Tensor] = []
    exp_avg_sqs: list[torch.Tensor] = []
    steps: list[torch.Tensor] = []
    state = optimizer.state
    device = dtype = None
    for group in groups:
        if not fast:
            break
        fast = (all(group[k] == first[k] for k in _SHARED)
                and all(group.get(k) == v for k, v in _PLAIN.items()))
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            st = state.get(p)
            if (not st or grad.is_sparse or p.is_complex()
                    or (device is not None and (p.device != device or p.dtype != dtype))):
                fast = False  # first step (state not made yet) or an unusual tensor
                break
            device, dtype = p.device, p.dtype
            params.append(p)
            grads.append(grad)
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
    if not fast:
        optimizer.step()
        return
    if not params:
        return
    beta1, beta2 = first["betas"]
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                           lr=first["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=first["weight_decay"], eps=first["eps"],
                           maximize=False, grad_scale=None, found_inf=None)


def zero_grad(params: list[torch.Tensor]) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` over a parameter list, without the
    optimiser's per-call overhead."""
    for p in params:
        p.grad = None
