"""Fused time loop of the closed-form (CfC) cell with a hand-written backward pass.

Autograd records every small op of every time step, and on a CPU that bookkeeping,
not the arithmetic, dominates a liquid network's training step. :class:`CfCScan` runs
the loop without recording anything and back-propagates through time with a few
tensor ops per step, from quantities it vectorises over the whole sequence.

Layout: all tensors are time-major, ``(L, B, ...)``; ``u`` already holds the input
projection plus bias of the four heads ``[ff1 | ff2 | time_a | time_b]``, so one
step is ``a = u_t + h_in @ w_hh``, with ``h_in = h_{t-1} * keep_t`` and

* ``default``:  ``h_t = ff1 + g * (ff2 - ff1)``,
* ``no_gate``:  ``h_t = ff1 + g * ff2``,

where ``ff1 = tanh(a_1)``, ``ff2 = tanh(a_2)``, ``g = sigmoid(a_a * dt_t + a_b)``.
The reference implementation of the same maths with ordinary autograd is
:meth:`velora_ens.models.lnn.cell.NCPLiquidCell.step`; tests compare the two.
"""

from __future__ import annotations

import torch

__all__ = ["CfCScan", "cfc_scan"]

_MODES = {"default": 0, "no_gate": 1}


def _forward(
    u: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    dt: torch.Tensor | None,
    keep: torch.Tensor | None,
    mode: int,
    resets: list[bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the loop; return states ``(L, B, H)``, tanh heads ``(L, B, 2H)``, gates.

    ``resets[t]`` says whether step ``t`` resets any sample (``None``: assume it may);
    a step that resets none skips the multiplication by a mask of ones.
    """
    steps, batch, four_h = u.shape
    hid = four_h // 4
    states = u.new_empty(steps, batch, hid)
    ffs = u.new_empty(steps, batch, 2 * hid)
    gates = u.new_empty(steps, batch, hid)
    # Views for every step, made once (indexing inside the loop costs more than the maths).
    u_t, s_t, f_t, g_t = u.unbind(0), states.unbind(0), ffs.unbind(0), gates.unbind(0)
    ff1_t, ff2_t = ffs[..., :hid].unbind(0), ffs[..., hid:].unbind(0)
    dt_t = None if dt is None else dt.unbind(0)
    keep_t = None if keep is None else keep.unbind(0)
    sizes = [2 * hid, hid, hid]
    h = h0
    for t in range(steps):
        if keep_t is not None and (resets is None or resets[t]):
            h = h * keep_t[t]
        a_ff, a_a, a_b = torch.addmm(u_t[t], h, w_hh).split_with_sizes(sizes, dim=1)
        torch.tanh(a_ff, out=f_t[t])
        pre = a_a + a_b if dt_t is None else torch.addcmul(a_b, a_a, dt_t[t])
        g = torch.sigmoid(pre, out=g_t[t])
        if mode == 0:
            h = torch.lerp(ff1_t[t], ff2_t[t], g, out=s_t[t])
        else:
            h = torch.addcmul(ff1_t[t], g, ff2_t[t], out=s_t[t])
    return states, ffs, gates


class CfCScan(torch.autograd.Function):
    """``states = CfCScan.apply(u, w_hh, h0, dt, keep, mode, resets)``; see the module
    docstring and :func:`_forward`.

    Gradients flow to ``u``, ``w_hh`` and ``h0``; ``dt`` and ``keep`` are treated as data.
    First-order only (no double backward).
    """

    @staticmethod
    def forward(ctx, u, w_hh, h0, dt, keep, mode, resets=None):  # type: ignore[override]
        states, ffs, gates = _forward(u, w_hh, h0, dt, keep, mode, resets)
        ctx.mode, ctx.resets = mode, resets
        ctx.save_for_backward(w_hh, h0, dt, keep, states, ffs, gates)
        return states

    @staticmethod
    def backward(ctx, grad_states):  # type: ignore[override]
        w_hh, h0, dt, keep, states, ffs, gates = ctx.saved_tensors
        steps, batch, hid = states.shape
        ff1, ff2 = ffs[..., :hid], ffs[..., hid:]
        one_minus_g = 1.0 - gates
        dsig = gates * one_minus_g
        # d h_t / d a_* for every step at once, stacked as (L, B, 4, H).
        coef = ffs.new_empty(steps, batch, 4, hid)
        if ctx.mode == 0:
            torch.mul(one_minus_g, 1.0 - ff1 * ff1, out=coef[:, :, 0])
            torch.mul(gates, 1.0 - ff2 * ff2, out=coef[:, :, 1])
            dz = (ff2 - ff1) * dsig
        else:
            coef[:, :, 0] = 1.0 - ff1 * ff1
            torch.mul(gates, 1.0 - ff2 * ff2, out=coef[:, :, 1])
            dz = ff2 * dsig
        if dt is None:
            coef[:, :, 2] = dz
        else:
            torch.mul(dz, dt, out=coef[:, :, 2])
        coef[:, :, 3] = dz

        grad_a = torch.empty_like(coef)
        grad_u = grad_a.view(steps, batch, 4 * hid)
        w_hh_t = w_hh.t()
        carry = torch.zeros_like(h0)
        coef_t, ga_t, gu_t = coef.unbind(0), grad_a.unbind(0), grad_u.unbind(0)
        gs_t = grad_states.contiguous().unbind(0)
        keep_t = None if keep is None else keep.unbind(0)
        resets = ctx.resets
        for t in range(steps - 1, -1, -1):
            torch.mul(coef_t[t], (gs_t[t] + carry).unsqueeze(1), out=ga_t[t])
            carry = torch.mm(gu_t[t], w_hh_t)
            if keep_t is not None and (resets is None or resets[t]):
                carry = carry * keep_t[t]

        grad_w = grad_h0 = None
        if ctx.needs_input_grad[1]:
            h_prev = torch.cat([h0.unsqueeze(0), states[:-1]], dim=0)
            if keep is not None:
                h_prev = h_prev * keep
            grad_w = torch.mm(h_prev.reshape(-1, hid).t(), grad_u.reshape(-1, 4 * hid))
        if ctx.needs_input_grad[2]:
            grad_h0 = carry
        return grad_u, grad_w, grad_h0, None, None, None, None


def cfc_scan(
    u: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    dt: torch.Tensor | None,
    keep: torch.Tensor | None,
    mode: str,
) -> torch.Tensor:
    """States ``(L, B, H)`` of the CfC recurrence over time-major ``u`` ``(L, B, 4H)``.

    Uses the fused :class:`CfCScan` when gradients are needed and the plain loop
    (which records nothing) otherwise.
    """
    code = _MODES[mode]
    resets = None
    if keep is not None and keep.device.type == "cpu":
        # Which steps reset some sample (one cheap read on a CPU; on an accelerator it
        # would cost a synchronisation, so every step applies its mask there). Most
        # steps of RL sequences reset nothing; multiplying by ones is then skipped.
        resets = (keep < 1).flatten(1).any(1).tolist()
        if not any(resets):
            keep, resets = None, None
    if torch.is_grad_enabled() and (u.requires_grad or w_hh.requires_grad or h0.requires_grad):
        return CfCScan.apply(u, w_hh, h0, dt, keep, code, resets)
    return _forward(u, w_hh, h0, dt, keep, code, resets)[0]
