"""Fused time loop of the mixed-memory CfC cell (an LSTM memory cell beside the CfC
cell, :class:`~velora_ens.models.lnn.mixed.MixedMemoryCell`) with a hand-written
backward pass: the same idea as :mod:`velora_ens.models.lnn.scan`, for the same reason
(on a CPU, autograd's bookkeeping of a step's small ops costs more than their maths).

Layout: time-major, ``(L, B, ...)``. ``ul`` holds the LSTM gates' input projection plus
both biases ``[i | f | g | o]`` (torch's order), ``u`` the CfC heads' ``[ff1 | ff2 |
time_a | time_b]``; ``w_lh`` is the LSTM's ``weight_hh.t()`` ``(H, 4H)`` and ``w_hh`` the
CfC's masked recurrent weight, transposed ``(H, 4H)``. One step, with the state
``[h, c]`` zeroed where an episode starts (``keep_t``):

    G    = ul_t + h @ w_lh          i, f, o = sigmoid(G_i, G_f, G_o), g = tanh(G_g)
    c'   = f c + i g                hl = o tanh(c')
    A    = u_t + hl @ w_hh          h' = the CfC's activation of A (see scan.py)

and the step's output is ``[h', c']``. The reference with ordinary autograd is
:class:`MixedMemoryCell`'s step-by-step loop (``fused=False``); tests compare the two.
"""

from __future__ import annotations

import torch
from torch import Tensor

from velora_ens.models.lnn.loop import unroll
from velora_ens.models.lnn.scan import (
    _MODE_NAMES,
    _MODES,
    cfc_activate,
    cfc_coefficients,
    cfc_step_into,
    fused_scan_serves,
    grads_by_autograd,
    needs_differentiable_backward,
    reset_steps,
)

__all__ = ["MixedScan", "mixed_scan"]


def _plain_loop(ul: Tensor, w_lh: Tensor, u: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor,
                dt: Tensor | None, keep: Tensor | None, mode: str) -> Tensor:
    """``[h, c]`` of every step ``(L, B, 2H)`` by the autograd loop (the reference maths)."""
    hid = h0.shape[-1]

    def step(drive: tuple[torch.Tensor, ...], state: torch.Tensor,
             dt_t: torch.Tensor | None) -> torch.Tensor:
        h, c = state.split(hid, dim=-1)
        i, f, g, o = torch.addmm(drive[0], h, w_lh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_lstm = torch.sigmoid(o) * torch.tanh(c)
        return torch.cat([cfc_activate(torch.addmm(drive[1], h_lstm, w_hh), dt_t, mode), c],
                         dim=-1)

    return unroll(step, (ul, u), torch.cat([h0, c0], dim=-1), dt, keep, time_dim=0)[0]


def _forward(ul: Tensor, w_lh: Tensor, u: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor,
             dt: Tensor | None, keep: Tensor | None, mode: int,
             resets: list[bool] | None = None) -> tuple[Tensor, ...]:
    """Run the loop; return the outputs ``(L, B, 2H)`` (``[h, c]``) and what the backward
    pass reads: the LSTM's gate activations ``(L, B, 4H)``, ``tanh(c)``, the LSTM's output
    ``hl``, the CfC's tanh heads ``(L, B, 2H)`` and its time gate."""
    steps, batch, four_h = u.shape
    hid = four_h // 4
    out = u.new_empty(steps, batch, 2 * hid)
    acts = u.new_empty(steps, batch, 4 * hid)
    tanh_c = u.new_empty(steps, batch, hid)
    h_lstm = u.new_empty(steps, batch, hid)
    ffs = u.new_empty(steps, batch, 2 * hid)
    gates = u.new_empty(steps, batch, hid)
    ul_t, u_t = ul.unbind(0), u.unbind(0)
    h_t, c_t = out[..., :hid].unbind(0), out[..., hid:].unbind(0)
    act_t, tc_t, hl_t = acts.unbind(0), tanh_c.unbind(0), h_lstm.unbind(0)
    ff_t, gate_t = ffs.unbind(0), gates.unbind(0)
    ff1_t, ff2_t = ffs[..., :hid].unbind(0), ffs[..., hid:].unbind(0)
    dt_t = None if dt is None else dt.unbind(0)
    keep_t = None if keep is None else keep.unbind(0)
    h, c = h0, c0
    for t in range(steps):
        if keep_t is not None and (resets is None or resets[t]):
            h, c = h * keep_t[t], c * keep_t[t]
        act, pre_gates = act_t[t], torch.addmm(ul_t[t], h, w_lh)
        torch.sigmoid(pre_gates, out=act)
        torch.tanh(pre_gates[:, 2 * hid:3 * hid], out=act[:, 2 * hid:3 * hid])
        i, f, g, o = act.split(hid, dim=1)
        c = torch.addcmul(f * c, i, g, out=c_t[t])
        hl = torch.mul(o, torch.tanh(c, out=tc_t[t]), out=hl_t[t])
        h = cfc_step_into(torch.addmm(u_t[t], hl, w_hh), None if dt_t is None else dt_t[t],
                          mode, ff_t[t], ff1_t[t], ff2_t[t], gate_t[t], h_t[t])
    return out, acts, tanh_c, h_lstm, ffs, gates


def lstm_coefficients(acts: Tensor, tanh_c: Tensor, c_in: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What an LSTM step's backward multiplies by, for every step at once, from its gate
    activations ``[i, f, g, o]`` ``(L, B, 4H)``, ``tanh(c')`` and the cell state it read:
    ``d h' / d c'``, ``d h' / d G_o``, ``d c' / d [G_i, G_f, G_g]`` ``(L, B, 3, H)`` and
    ``f`` (``d c' / d c``). Shared by this scan and the gated baselines' LSTM scan."""
    i, f, g, o = acts.split(acts.shape[-1] // 4, dim=-1)
    to_ifg = torch.stack([g * i * (1.0 - i), c_in * f * (1.0 - f), i * (1.0 - g * g)], dim=2)
    return o * (1.0 - tanh_c * tanh_c), tanh_c * o * (1.0 - o), to_ifg, f


def lstm_gate_grads_into(d_h: Tensor, d_c_out: Tensor, to_c: Tensor, to_o: Tensor,
                         to_ifg: Tensor, out: Tensor) -> Tensor:
    """One step of an LSTM's backward pass: the gradient of its gates into ``out``
    ``(B, 4, H)`` from that of its output ``h'`` and of ``c'`` from outside the step
    (``d_c_out``); returns the whole gradient of ``c'``."""
    d_c = torch.addcmul(d_c_out, d_h, to_c)
    torch.mul(to_ifg, d_c.unsqueeze(1), out=out[:, :3])
    torch.mul(d_h, to_o, out=out[:, 3])
    return d_c


class MixedScan(torch.autograd.Function):
    """``out = MixedScan.apply(ul, w_lh, u, w_hh, h0, c0, dt, keep, mode, resets)``; see the
    module docstring and :func:`_forward`.

    Gradients flow to ``ul``, ``w_lh``, ``u``, ``w_hh``, ``h0`` and ``c0``; ``dt`` and
    ``keep`` are data. As :class:`~velora_ens.models.lnn.scan.CfCScan`, the hand-written
    backward is first order, and a backward that must itself be differentiable (or
    batched) differentiates the plain loop rebuilt from the saved inputs instead.
    """

    @staticmethod
    def forward(ctx, ul, w_lh, u, w_hh, h0, c0, dt, keep, mode, resets=None):  # type: ignore[override]
        out, acts, tanh_c, h_lstm, ffs, gates = _forward(ul, w_lh, u, w_hh, h0, c0, dt, keep,
                                                         mode, resets)
        ctx.mode, ctx.resets = mode, resets
        ctx.save_for_backward(ul, w_lh, u, w_hh, h0, c0, dt, keep, out, acts, tanh_c, h_lstm,
                              ffs, gates)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if needs_differentiable_backward(grad_out):
            ul, w_lh, u, w_hh, h0, c0, dt, keep = ctx.saved_tensors[:8]
            return grads_by_autograd(
                lambda: _plain_loop(ul, w_lh, u, w_hh, h0, c0, dt, keep, _MODE_NAMES[ctx.mode]),
                (ul, w_lh, u, w_hh, h0, c0), ctx.needs_input_grad, grad_out, 10)
        (_, w_lh, _, w_hh, h0, c0, dt, keep, out, acts, tanh_c, h_lstm, ffs,
         gates) = ctx.saved_tensors
        steps, batch, two_h = out.shape
        hid = two_h // 2
        states, cells = out[..., :hid], out[..., hid:]
        coef = cfc_coefficients(ffs, gates, dt, ctx.mode)  # the CfC part, (L, B, 4, H)
        # The LSTM part: what the loop multiplies by, for every step at once.
        c_in = torch.cat([c0.unsqueeze(0), cells[:-1]], dim=0)
        h_in = torch.cat([h0.unsqueeze(0), states[:-1]], dim=0)
        if keep is not None:
            c_in, h_in = c_in * keep, h_in * keep
        to_c, to_o, to_ifg, f = lstm_coefficients(acts, tanh_c, c_in)

        grad_a = torch.empty_like(coef)                 # d loss / d A, (L, B, 4, H)
        grad_u = grad_a.view(steps, batch, 4 * hid)
        grad_gates = torch.empty_like(coef)             # d loss / d G, (L, B, 4, H)
        grad_ul = grad_gates.view(steps, batch, 4 * hid)
        w_hh_t, w_lh_t = w_hh.t(), w_lh.t()
        carry_h, carry_c = torch.zeros_like(h0), torch.zeros_like(c0)
        grad_out = grad_out.contiguous()
        gh_t, gc_t = grad_out[..., :hid].unbind(0), grad_out[..., hid:].unbind(0)
        coef_t, ga_t, gu_t = coef.unbind(0), grad_a.unbind(0), grad_u.unbind(0)
        gg_t, gul_t = grad_gates.unbind(0), grad_ul.unbind(0)
        to_c_t, to_o_t, to_ifg_t, f_t = to_c.unbind(0), to_o.unbind(0), to_ifg.unbind(0), \
            f.unbind(0)
        keep_t = None if keep is None else keep.unbind(0)
        resets = ctx.resets
        for t in range(steps - 1, -1, -1):
            torch.mul(coef_t[t], (gh_t[t] + carry_h).unsqueeze(1), out=ga_t[t])
            d_hl = torch.mm(gu_t[t], w_hh_t)
            d_c = lstm_gate_grads_into(d_hl, gc_t[t] + carry_c, to_c_t[t], to_o_t[t],
                                       to_ifg_t[t], gg_t[t])
            carry_c = d_c * f_t[t]
            carry_h = torch.mm(gul_t[t], w_lh_t)
            if keep_t is not None and (resets is None or resets[t]):
                carry_h, carry_c = carry_h * keep_t[t], carry_c * keep_t[t]

        need = ctx.needs_input_grad
        grad_w_lh = (torch.mm(h_in.reshape(-1, hid).t(), grad_ul.reshape(-1, 4 * hid))
                     if need[1] else None)
        grad_w_hh = (torch.mm(h_lstm.reshape(-1, hid).t(), grad_u.reshape(-1, 4 * hid))
                     if need[3] else None)
        return (grad_ul if need[0] else None, grad_w_lh, grad_u if need[2] else None,
                grad_w_hh, carry_h if need[4] else None, carry_c if need[5] else None,
                None, None, None, None)


def mixed_scan(
    ul: torch.Tensor,
    w_lh: torch.Tensor,
    u: torch.Tensor,
    w_hh: torch.Tensor,
    state: torch.Tensor,
    dt: torch.Tensor | None,
    keep: torch.Tensor | None,
    mode: str,
) -> torch.Tensor:
    """``[h, c]`` of every step ``(L, B, 2H)`` of the mixed-memory CfC recurrence over
    time-major ``ul`` and ``u`` ``(L, B, 4H)`` from ``state = [h, c]`` ``(B, 2H)``.

    The fused :class:`MixedScan` when gradients are needed, its forward loop (which records
    nothing) otherwise, and the plain autograd loop where a fused scan cannot serve
    (:func:`~velora_ens.models.lnn.scan.fused_scan_serves`).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {tuple(_MODES)}, got {mode!r}")
    h0, c0 = state.split(state.shape[-1] // 2, dim=-1)
    if not (fused_scan_serves(u, w_hh, state, dt, keep)
            and fused_scan_serves(ul, w_lh, state, dt, keep)):
        return _plain_loop(ul, w_lh, u, w_hh, h0, c0, dt, keep, mode)
    keep, resets = reset_steps(keep)
    code = _MODES[mode]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (ul, w_lh, u, w_hh, state)):
        return MixedScan.apply(ul, w_lh, u, w_hh, h0, c0, dt, keep, code, resets)
    return _forward(ul, w_lh, u, w_hh, h0, c0, dt, keep, code, resets)[0]
