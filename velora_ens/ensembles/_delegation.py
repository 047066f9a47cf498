"""The single-sink delegation solve and the auxiliary loss, with hand-written backwards.

``power = (1 - eps) diag(D) * x + eps * sum(x) / N`` with ``x = M^{-1} 1`` and
``M = I - (1 - eps) offdiag(D)^T``. Autograd through ``torch.linalg.solve`` and the dozen
small ops around it costs more than the experts of a small ensemble; this function does
one batched LU factorisation and solve forward, one more solve and a few products
backward, and fuses the power-weighted mean of the predictions into the same node.
``M`` is strictly diagonally dominant by columns (each column of the flow sums to at
most ``1 - eps``), so it is always invertible, with ``||M^{-1}||_1 <= 1 / eps``.

The auxiliary loss ``lambda_spec * P - lambda_load * S`` (``P``: mean normalised entropy
of ``p_b / sum p_b``; ``S``: normalised entropy of ``sum_b softmax(p_b / T)``) is likewise one
node instead of about twenty: being a scalar, its gradient is computed with its value and
the backward only scales it. It works on ``p^T (N, B)`` so that every reduction over the
few experts runs along the outer axis (several times faster on CPU).

Both backwards are first order (``once_differentiable``): double backward raises.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["auxiliary_loss", "one_sink_combine", "one_sink_power"]


def _solve(D: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, ...]:
    """``(power, keep, LU, pivots, x)`` for ``D (B, N, N)``, no graph. Half-precision
    delegations (mixed precision) are solved in float32, for which LU has kernels; the
    power comes back in ``D``'s dtype, the saved factors stay float32."""
    dtype = D.dtype
    if torch.finfo(dtype).bits <= 16:
        D = D.float()
    n, c = D.shape[-1], 1.0 - epsilon
    keep = torch.diagonal(D, dim1=-2, dim2=-1)
    flow = D * -c  # M^T = I - c offdiag(D): [i, j] = delta_ij - c D_ij
    flow.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    lu, piv, _ = torch.linalg.lu_factor_ex(flow.transpose(-1, -2))  # M, column-major
    x = torch.linalg.lu_solve(lu, piv, D.new_ones(D.shape[:-1] + (1,))).squeeze(-1)
    power = torch.addcmul(x.sum(-1, keepdim=True), keep, x, value=c * n / epsilon)
    return power.mul_(epsilon / n).to(dtype), keep, lu, piv, x


def _solve_backward(grad: torch.Tensor, keep: torch.Tensor, lu: torch.Tensor,
                    piv: torch.Tensor, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The gradient with respect to ``D`` of ``sum(grad * power)``, in ``grad``'s dtype
    (computed in the saved factors' dtype)."""
    dtype = grad.dtype
    grad = grad.to(keep.dtype)
    n, c = keep.shape[-1], 1.0 - epsilon
    g_x = torch.addcmul(grad.sum(-1, keepdim=True), keep, grad, value=c * n / epsilon)
    u = torch.linalg.lu_solve(lu, piv, g_x.unsqueeze(-1), adjoint=True)  # M^-T g_x * n/eps
    cx = x * c
    g_D = cx.unsqueeze(-1) * (u.transpose(-1, -2) * (epsilon / n))  # [i, j] = c x_i u_j
    g_D.diagonal(dim1=-2, dim2=-1).copy_(cx * grad)
    return g_D.to(dtype)


class _OneSinkPower(torch.autograd.Function):
    @staticmethod
    def forward(ctx, D: torch.Tensor, epsilon: float) -> torch.Tensor:
        power, *saved = _solve(D, epsilon)
        ctx.save_for_backward(*saved)
        ctx.epsilon = epsilon
        return power

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _solve_backward(grad, *ctx.saved_tensors, ctx.epsilon), None


class _OneSinkCombine(torch.autograd.Function):
    """``(y, power)``: the solve and the power-weighted mean ``sum_j p_j y_j / N``."""

    @staticmethod
    def forward(ctx, ys: torch.Tensor, D: torch.Tensor,
                epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        power, *saved = _solve(D, epsilon)
        n = D.shape[-1]
        w = (power * (1.0 / n)).reshape(power.shape + (1,) * (ys.dim() - 2))
        y = (ys * w).sum(1)
        ctx.save_for_backward(ys, w, *saved)
        ctx.epsilon = epsilon
        ctx.set_materialize_grads(False)
        return y, power

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y: torch.Tensor | None,
                 g_p: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        ys, w, *saved = ctx.saved_tensors
        n = saved[0].shape[-1]
        g_ys = None
        if g_y is not None:
            g_y = g_y.unsqueeze(1)
            if ctx.needs_input_grad[0]:
                g_ys = w * g_y
            g_w = ys * g_y
            if g_w.dim() > 2:
                g_w = g_w.sum(tuple(range(2, g_w.dim())))
            g_w = g_w * (1.0 / n)
            g_p = g_w if g_p is None else g_p + g_w
        g_D = None
        if g_p is not None and ctx.needs_input_grad[1]:
            g_D = _solve_backward(g_p, *saved, ctx.epsilon)
        return g_ys, g_D, None


def one_sink_power(D: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Power ``(..., N)`` of delegations ``D (..., N, N)`` (rows = delegation vectors)."""
    if D.dim() == 3:
        return _OneSinkPower.apply(D, epsilon)
    lead = D.shape[:-2]
    n = D.shape[-1]
    return _OneSinkPower.apply(D.reshape(-1, n, n), epsilon).reshape(*lead, n)


def one_sink_combine(ys: torch.Tensor, D: torch.Tensor,
                     epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_j p_j ys[:, j] / N, power)`` for ``ys (B, N, ...)``, ``D (B, N, N)``."""
    return _OneSinkCombine.apply(ys, D, epsilon)


class _AuxiliaryLoss(torch.autograd.Function):
    """The loss and, while the power needs a gradient, its gradient ``G`` (the loss is a
    scalar, so the backward is ``grad * G``: no second pass over the small tensors)."""

    @staticmethod
    def forward(ctx, power: torch.Tensor, spec: float, load: float,
                temperature: float) -> torch.Tensor:
        pt = power.t().contiguous()  # (N, B): reductions over the experts run outer
        n, b = pt.shape
        ca, cb = spec / (b * math.log(n)), load / math.log(n)
        tiny = torch.finfo(pt.dtype).tiny
        s = pt.sum(0)
        pi = pt / s
        log_pi = torch.log(pi.clamp_min(tiny))
        h_b = (pi * log_pi).sum(0).neg_()  # entropy of each sample's power share
        sig = torch.softmax(pt * (1.0 / temperature), 0)  # over the experts, per sample
        h = sig.sum(1)
        h_sum = h.sum()
        q = h / h_sum
        log_q = torch.log(q.clamp_min(tiny))
        h_s = (q * log_q).sum().neg_()  # entropy of the speakers' load
        if ctx.needs_input_grad[0]:
            # d(ca sum_b H_b)/dp = -ca (log pi + H_b) / s
            g = (log_pi + h_b).mul_(s.reciprocal().mul_(-ca))
            # d(-cb H_s)/dq = cb (log q + 1) -> dh = cb (log q + H_s) / sum h -> softmax
            g_h = ((log_q + h_s) * (cb / h_sum)).unsqueeze(1)
            g.addcmul_(sig, g_h - (g_h * sig).sum(0), value=1.0 / temperature)
            ctx.save_for_backward(g)
        return (h_b.sum() * ca).sub_(h_s, alpha=cb)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (g,) = ctx.saved_tensors
        return (g * grad).t(), None, None, None


def auxiliary_loss(power: torch.Tensor, specialization_lambda: float,
                   load_distribution_lambda: float, temperature: float) -> torch.Tensor:
    """``specialization_lambda * P - load_distribution_lambda * S`` for ``power (B, N)``."""
    return _AuxiliaryLoss.apply(power, float(specialization_lambda),
                                float(load_distribution_lambda), float(temperature))
