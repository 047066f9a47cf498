"""The single-sink delegation solve and the auxiliary loss, with hand-written backwards.

``power = (1 - eps) diag(D) * x + eps * sum(x) / N`` with ``x = M^{-1} 1`` and
``M = I - (1 - eps) offdiag(D)^T``. Autograd through ``torch.linalg.solve`` and the dozen
small ops around it costs more than the experts of a small ensemble; this function does
one batched LU factorisation and solve forward, one more solve and a few products
backward. ``M`` is strictly diagonally
dominant by columns (each column of the flow sums to at most ``1 - eps``), so it is
always invertible and well conditioned (``||M^{-1}||_1 <= 1 / eps``).

The auxiliary loss ``lambda_spec * P - lambda_load * S`` (``P``: mean normalised entropy
of ``p_b / sum p_b``; ``S``: normalised entropy of ``sum_b softmax(p_b / T)``) is likewise one
node instead of about fifteen; it works on ``p^T (N, B)`` so that every reduction over the
few experts runs along the outer axis.

Both backwards are first order (``once_differentiable``): double backward raises.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["auxiliary_loss", "one_sink_combine", "one_sink_power"]


def _solve(D: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, ...]:
    """``(power, keep, LU, pivots, x)`` for ``D (B, N, N)``, no graph."""
    n, c = D.shape[-1], 1.0 - epsilon
    keep = torch.diagonal(D, dim1=-2, dim2=-1)
    flow = D * -c  # M^T = I - c offdiag(D): [i, j] = delta_ij - c D_ij
    flow.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    lu, piv, _ = torch.linalg.lu_factor_ex(flow.transpose(-1, -2))  # M, column-major
    x = torch.linalg.lu_solve(lu, piv, D.new_ones(D.shape[:-1] + (1,))).squeeze(-1)
    power = torch.addcmul(x.sum(-1, keepdim=True), keep, x, value=c * n / epsilon)
    return power.mul_(epsilon / n), keep, lu, piv, x


def _solve_backward(grad: torch.Tensor, keep: torch.Tensor, lu: torch.Tensor,
                    piv: torch.Tensor, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The gradient with respect to ``D`` of ``sum(grad * power)``."""
    n, c = keep.shape[-1], 1.0 - epsilon
    g_x = torch.addcmul(grad.sum(-1, keepdim=True), keep, grad, value=c * n / epsilon)
    u = torch.linalg.lu_solve(lu, piv, g_x.unsqueeze(-1), adjoint=True)  # M^-T g_x * n/eps
    cx = x * c
    g_D = cx.unsqueeze(-1) * (u.transpose(-1, -2) * (epsilon / n))  # [i, j] = c x_i u_j
    g_D.diagonal(dim1=-2, dim2=-1).copy_(cx * grad)
    return g_D


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


def _xlogx(t: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(t, t)


class _AuxiliaryLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, power: torch.Tensor, spec: float, load: float,
                temperature: float) -> torch.Tensor:
        pt = power.t().contiguous()  # (N, B)
        n, b = pt.shape
        log_n = math.log(n)
        s = pt.sum(0)
        pi = pt / s
        entropy_p = -_xlogx(pi).sum() / (b * log_n)
        z = pt / temperature
        sig = torch.exp(z - z.amax(0))
        sig = sig / sig.sum(0)
        h = sig.sum(1)
        q = h / h.sum()
        entropy_s = -_xlogx(q).sum() / log_n
        ctx.save_for_backward(s, pi, sig, h, q)
        ctx.constants = (spec, load, temperature, log_n)
        return spec * entropy_p - load * entropy_s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        s, pi, sig, h, q = ctx.saved_tensors
        spec, load, temperature, log_n = ctx.constants
        tiny = torch.finfo(pi.dtype).tiny
        # P = -sum xlogx(pi) / (B log N), pi = p / s
        g_pi = (-(spec / (pi.shape[1] * log_n)) * grad) * (torch.log(pi.clamp_min(tiny)) + 1.0)
        g_p = (g_pi - (g_pi * pi).sum(0)) / s
        # S = -sum xlogx(q) / log N, q = h / sum h, h = sum_b softmax(p_b / T)
        g_q = ((load / log_n) * grad) * (torch.log(q.clamp_min(tiny)) + 1.0)
        g_h = ((g_q - (g_q * q).sum()) / h.sum()).unsqueeze(1)  # (N, 1), the same for all b
        g_p = g_p + sig * (g_h - (g_h * sig).sum(0)) / temperature
        return g_p.t(), None, None, None


def auxiliary_loss(power: torch.Tensor, specialization_lambda: float,
                   load_distribution_lambda: float, temperature: float) -> torch.Tensor:
    """``specialization_lambda * P - load_distribution_lambda * S`` for ``power (B, N)``."""
    return _AuxiliaryLoss.apply(power, float(specialization_lambda),
                                float(load_distribution_lambda), float(temperature))
