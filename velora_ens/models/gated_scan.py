"""Fused time loops of torch's GRU and LSTM cells with hand-written backward passes, for
the gated baselines (:class:`~velora_ens.models.GatedNetwork`) with per-step resets.

The same idea as the CfC scan (:mod:`velora_ens.models.lnn.scan`): on a CPU, autograd's
bookkeeping of a step's small ops costs more than their maths, so the loop records
nothing and the backward pass runs a few tensor ops per step from coefficients computed
for the whole sequence at once. torch's own ``nn.GRU``/``nn.LSTM`` cannot serve here: they
cannot zero the state of some samples in the middle of a sequence, and the LSTM returns
its cell state ``c`` only after the last step.

Layout: time-major ``(L, B, ...)``; ``ui`` is the input part of the gates plus
``bias_ih`` (``x @ weight_ih.t() + bias_ih``, torch's gate order), ``w_hh`` is
``weight_hh.t()`` ``(H, G H)`` and ``b_hh`` is ``bias_hh``. Before each step the state is
multiplied by ``keep_t`` (zero where an episode starts). The maths are torch's cells':

* GRU: ``gh = h @ w_hh + b_hh``; ``r, z = sigmoid(ui_r + gh_r, ui_z + gh_z)``,
  ``n = tanh(ui_n + r gh_n)``, ``h' = (1 - z) n + z h``; the output is ``h'``.
* LSTM: ``G = ui + h @ w_hh + b_hh``; ``i, f, o = sigmoid``, ``g = tanh``;
  ``c' = f c + i g``, ``h' = o tanh(c')``; the state and the output are ``[h', c']``.

:func:`gated_scan` runs the fused loop where it can serve
(:func:`~velora_ens.models.lnn.scan.fused_scan_serves`) and the plain autograd loop of the
same maths elsewhere; tests compare both with torch's cells.
"""

from __future__ import annotations

import torch
from torch import Tensor

from velora_ens.models.lnn.loop import unroll
from velora_ens.models.lnn.mixed_scan import lstm_coefficients, lstm_gate_grads_into
from velora_ens.models.lnn.scan import (
    fused_scan_serves,
    grads_by_autograd,
    needs_differentiable_backward,
    reset_steps,
)

__all__ = ["GatedScan", "gated_scan"]

KINDS = ("gru", "lstm")


def _gru_step(ui: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step with ordinary autograd (torch's ``GRUCell`` maths)."""
    ui_r, ui_z, ui_n = ui.chunk(3, dim=-1)
    gh_r, gh_z, gh_n = torch.addmm(b_hh, h, w_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(ui_r + gh_r), torch.sigmoid(ui_z + gh_z)
    n = torch.tanh(ui_n + r * gh_n)
    return torch.lerp(n, h, z)


def _lstm_step(ui: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """One LSTM step on ``[h, c]`` with ordinary autograd (torch's ``LSTMCell`` maths)."""
    h, c = state.chunk(2, dim=-1)
    i, f, g, o = (ui + torch.addmm(b_hh, h, w_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.cat([torch.sigmoid(o) * torch.tanh(c), c], dim=-1)


def _plain_loop(kind: str, ui: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor,
                keep: Tensor | None) -> Tensor:
    """Every step's output ``(L, B, S)`` by the autograd loop (the reference maths)."""
    cell = _gru_step if kind == "gru" else _lstm_step
    return unroll(lambda drive, h, _dt: cell(drive[0], h, w_hh, b_hh), (ui,), h0, None, keep,
                  time_dim=0)[0]


def _gru_forward(ui: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor, keep: Tensor | None,
                 resets: list[bool] | None) -> tuple[Tensor, ...]:
    """GRU loop: outputs ``(L, B, H)``, the gates ``[r, z, n]`` ``(L, B, 3H)`` and the
    hidden part of ``n``'s pre-activation, ``gh_n`` ``(L, B, H)``."""
    steps, batch, three_h = ui.shape
    hid = three_h // 3
    out = ui.new_empty(steps, batch, hid)
    gates = ui.new_empty(steps, batch, three_h)
    gh_n = ui.new_empty(steps, batch, hid)
    ui_t, out_t, gates_t, ghn_t = ui.unbind(0), out.unbind(0), gates.unbind(0), gh_n.unbind(0)
    keep_t = None if keep is None else keep.unbind(0)
    h = h0
    for t in range(steps):
        if keep_t is not None and (resets is None or resets[t]):
            h = h * keep_t[t]
        gh, step_gates, ui_step = torch.addmm(b_hh, h, w_hh), gates_t[t], ui_t[t]
        rz = torch.sigmoid(torch.add(ui_step[:, :2 * hid], gh[:, :2 * hid]),
                           out=step_gates[:, :2 * hid])
        r, z = rz.split(hid, dim=1)
        ghn_t[t].copy_(gh[:, 2 * hid:])
        n = torch.tanh(torch.addcmul(ui_step[:, 2 * hid:], r, ghn_t[t]),
                       out=step_gates[:, 2 * hid:])
        h = torch.lerp(n, h, z, out=out_t[t])
    return out, gates, gh_n


def _lstm_forward(ui: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor, keep: Tensor | None,
                  resets: list[bool] | None) -> tuple[Tensor, ...]:
    """LSTM loop: outputs ``[h, c]`` ``(L, B, 2H)``, the gate activations ``(L, B, 4H)``
    and ``tanh(c)``."""
    steps, batch, four_h = ui.shape
    hid = four_h // 4
    out = ui.new_empty(steps, batch, 2 * hid)
    acts = ui.new_empty(steps, batch, four_h)
    tanh_c = ui.new_empty(steps, batch, hid)
    ui_t, act_t, tc_t = ui.unbind(0), acts.unbind(0), tanh_c.unbind(0)
    h_t, c_t = out[..., :hid].unbind(0), out[..., hid:].unbind(0)
    keep_t = None if keep is None else keep.unbind(0)
    h, c = h0.split(hid, dim=-1)
    for t in range(steps):
        if keep_t is not None and (resets is None or resets[t]):
            h, c = h * keep_t[t], c * keep_t[t]
        act, pre = act_t[t], torch.addmm(b_hh, h, w_hh).add_(ui_t[t])
        torch.sigmoid(pre, out=act)
        torch.tanh(pre[:, 2 * hid:3 * hid], out=act[:, 2 * hid:3 * hid])
        i, f, g, o = act.split(hid, dim=1)
        c = torch.addcmul(f * c, i, g, out=c_t[t])
        h = torch.mul(o, torch.tanh(c, out=tc_t[t]), out=h_t[t])
    return out, acts, tanh_c


def _gru_backward(grad_out: Tensor, w_hh: Tensor, h0: Tensor, keep: Tensor | None,
                  resets: list[bool] | None, out: Tensor, gates: Tensor, gh_n: Tensor
                  ) -> tuple[Tensor, ...]:
    """Gradients of the GRU loop: ``d ui`` ``(L, B, 3H)``, that of ``gh = h @ w_hh + b_hh``
    (``d ui`` with its ``n`` part times ``r``), the carry into ``h0`` and the inputs
    ``h``."""
    steps, batch, hid = out.shape
    r, z, n = gates.split(hid, dim=-1)
    h_in = torch.cat([h0.unsqueeze(0), out[:-1]], dim=0)
    if keep is not None:
        h_in = h_in * keep
    d_n = (1.0 - z) * (1.0 - n * n)                        # d h' / d (n's pre-activation)
    to_ui = torch.stack([d_n * gh_n * r * (1.0 - r),       # d h' / d ui, (L, B, 3, H)
                         (h_in - n) * z * (1.0 - z), d_n], dim=2)
    to_gh = to_ui.clone()                                   # d h' / d gh
    to_gh[:, :, 2] *= r
    grad_ui = torch.empty_like(to_ui)
    grad_gh = torch.empty_like(to_gh)
    w_t = w_hh.t()
    carry = torch.zeros_like(h0)
    g_t = grad_out.contiguous().unbind(0)
    ui_c, gh_c, gui, ggh = to_ui.unbind(0), to_gh.unbind(0), grad_ui.unbind(0), grad_gh.unbind(0)
    z_t = z.unbind(0)
    keep_t = None if keep is None else keep.unbind(0)
    for t in range(steps - 1, -1, -1):
        dh = (g_t[t] + carry).unsqueeze(1)
        torch.mul(ui_c[t], dh, out=gui[t])
        torch.mul(gh_c[t], dh, out=ggh[t])
        carry = torch.addmm(dh.squeeze(1) * z_t[t], ggh[t].view(batch, 3 * hid), w_t)
        if keep_t is not None and (resets is None or resets[t]):
            carry = carry * keep_t[t]
    return grad_ui.view(steps, batch, 3 * hid), grad_gh.view(steps, batch, 3 * hid), carry, \
        h_in


def _lstm_backward(grad_out: Tensor, w_hh: Tensor, h0: Tensor, keep: Tensor | None,
                   resets: list[bool] | None, out: Tensor, acts: Tensor, tanh_c: Tensor
                   ) -> tuple[Tensor, ...]:
    """Gradients of the LSTM loop: ``d G`` ``(L, B, 4H)`` (that of ``ui`` and of
    ``h @ w_hh + b_hh`` alike), the carry into ``[h0, c0]`` and the inputs ``h``."""
    steps, batch, two_h = out.shape
    hid = two_h // 2
    h_out, c_out = out[..., :hid], out[..., hid:]
    h0_h, h0_c = h0.split(hid, dim=-1)
    c_in = torch.cat([h0_c.unsqueeze(0), c_out[:-1]], dim=0)
    h_in = torch.cat([h0_h.unsqueeze(0), h_out[:-1]], dim=0)
    if keep is not None:
        c_in, h_in = c_in * keep, h_in * keep
    to_c, to_o, to_ifg, f = lstm_coefficients(acts, tanh_c, c_in)
    grad_gates = to_ifg.new_empty(steps, batch, 4, hid)
    grad_flat = grad_gates.view(steps, batch, 4 * hid)
    w_t = w_hh.t()
    carry_h, carry_c = torch.zeros_like(h0_h), torch.zeros_like(h0_c)
    grad_out = grad_out.contiguous()
    gh_t, gc_t = grad_out[..., :hid].unbind(0), grad_out[..., hid:].unbind(0)
    gg_t, gf_t = grad_gates.unbind(0), grad_flat.unbind(0)
    to_c_t, to_o_t, to_ifg_t, f_t = to_c.unbind(0), to_o.unbind(0), to_ifg.unbind(0), \
        f.unbind(0)
    keep_t = None if keep is None else keep.unbind(0)
    for t in range(steps - 1, -1, -1):
        d_h = gh_t[t] + carry_h
        d_c = lstm_gate_grads_into(d_h, gc_t[t] + carry_c, to_c_t[t], to_o_t[t], to_ifg_t[t],
                                   gg_t[t])
        carry_c = d_c * f_t[t]
        carry_h = torch.mm(gf_t[t], w_t)
        if keep_t is not None and (resets is None or resets[t]):
            carry_h, carry_c = carry_h * keep_t[t], carry_c * keep_t[t]
    return grad_flat, grad_flat, torch.cat([carry_h, carry_c], dim=-1), h_in


_FORWARD = {"gru": _gru_forward, "lstm": _lstm_forward}
_BACKWARD = {"gru": _gru_backward, "lstm": _lstm_backward}


class GatedScan(torch.autograd.Function):
    """``out = GatedScan.apply(kind, ui, w_hh, b_hh, h0, keep, resets)``; see the module
    docstring. Gradients flow to ``ui``, ``w_hh``, ``b_hh`` and ``h0``; ``keep`` is data.
    The hand-written backward is first order; a backward that must itself be
    differentiable (or batched) differentiates the plain loop instead."""

    @staticmethod
    def forward(ctx, kind, ui, w_hh, b_hh, h0, keep, resets=None):  # type: ignore[override]
        out, *saved = _FORWARD[kind](ui, w_hh, b_hh, h0, keep, resets)
        ctx.kind, ctx.resets = kind, resets
        ctx.save_for_backward(ui, w_hh, b_hh, h0, keep, out, *saved)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        ui, w_hh, b_hh, h0, keep, out, *saved = ctx.saved_tensors
        need = ctx.needs_input_grad
        if needs_differentiable_backward(grad_out):
            return grads_by_autograd(lambda: _plain_loop(ctx.kind, ui, w_hh, b_hh, h0, keep),
                                     (ui, w_hh, b_hh, h0), need[1:5], grad_out, 7, first=1)
        grad_ui, grad_gh, grad_h0, h_in = _BACKWARD[ctx.kind](grad_out, w_hh, h0, keep,
                                                              ctx.resets, out, *saved)
        width = grad_gh.shape[-1]
        grad_w = (torch.mm(h_in.reshape(-1, h_in.shape[-1]).t(), grad_gh.reshape(-1, width))
                  if need[2] else None)
        grad_b = grad_gh.reshape(-1, width).sum(0) if need[3] else None
        return (None, grad_ui if need[1] else None, grad_w, grad_b,
                grad_h0 if need[4] else None, None, None)


def gated_scan(kind: str, ui: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor,
               keep: Tensor | None) -> Tensor:
    """Every step's output ``(L, B, S)`` of torch's GRU (``S = H``) or LSTM cell
    (``S = 2H``, ``[h, c]``) over time-major ``ui`` from the state ``h0`` ``(B, S)``.

    The fused :class:`GatedScan` when gradients are needed, its forward loop (which
    records nothing) otherwise, and the plain autograd loop where a fused scan cannot
    serve (:func:`~velora_ens.models.lnn.scan.fused_scan_serves`: autocast, mixed dtypes,
    ``torch.func`` transforms, forward-mode AD, ``torch.compile``, tracing).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not (fused_scan_serves(ui, w_hh, h0, None, keep)
            and fused_scan_serves(ui, b_hh.unsqueeze(0), h0, None, keep)):
        return _plain_loop(kind, ui, w_hh, b_hh, h0, keep)
    keep, resets = reset_steps(keep)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (ui, w_hh, b_hh, h0)):
        return GatedScan.apply(kind, ui, w_hh, b_hh, h0, keep, resets)
    return _FORWARD[kind](ui, w_hh, b_hh, h0, keep, resets)[0]
