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
* ``carry``:    ``h_t = h_in + g * (ff2 - h_in)`` (``ff1`` unused),

where ``ff1 = tanh(a_1)``, ``ff2 = tanh(a_2)``, ``g = sigmoid(a_a * dt_t + a_b)``.
The reference implementation of the same maths with ordinary autograd is
:meth:`velora_ens.models.lnn.cell.NCPLiquidCell.step` (its activation is
:func:`cfc_activate`); tests compare the two.

When the fused scan runs and when the plain loop does (:func:`fused_scan_serves`): the
scan is written for one dtype and for ordinary first-order autograd. :func:`cfc_scan` runs
the plain autograd loop instead (the same ops as ``NCPLiquidCell(fused=False)``, so the
same numbers) under ``torch.autocast`` or with inputs of different dtypes, inside
``torch.func`` transforms (``vmap``, ``grad``, ``jvp``, ...), under forward-mode AD, while
``torch.compile`` / ``torch.export`` / ``torch.jit.trace`` trace, and when ``dt`` requires
gradients. Double backward needs no decision in advance: a backward run with
``create_graph=True`` rebuilds the plain loop from the saved inputs and differentiates it
with autograd, so gradients of gradients are the plain loop's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd import forward_ad

from velora_ens.models.lnn.loop import unroll

__all__ = ["CfCScan", "cfc_activate", "cfc_scan", "fused_scan_serves", "grads_by_autograd",
           "needs_differentiable_backward", "reset_steps"]

_MODES = {"default": 0, "no_gate": 1, "carry": 2}
_MODE_NAMES = {code: name for name, code in _MODES.items()}


def cfc_activate(a: torch.Tensor, dt: torch.Tensor | None, mode: str,
                 h: torch.Tensor | None = None) -> torch.Tensor:
    """New state from the pre-activations ``a = [a_1 | a_2 | a_a | a_b]`` ``(B, 4H)``
    (``default``, ``no_gate`` or ``carry`` mode; ``carry`` also reads the state ``h`` the
    step started from, after any reset); the maths of the module docstring with ordinary
    autograd. :meth:`NCPLiquidCell.activate` and the plain loop of :func:`cfc_scan` both
    call it, so the two fallbacks compute the same numbers."""
    a1, a2, t_a, t_b = a.view(-1, 4, a.shape[-1] // 4).unbind(1)
    ff1, ff2 = torch.tanh(a1), torch.tanh(a2)
    gate = torch.sigmoid(t_a + t_b if dt is None else torch.addcmul(t_b, t_a, dt))
    if mode == "no_gate":
        return torch.addcmul(ff1, gate, ff2)
    if mode == "carry":
        if h is None:
            raise ValueError("mode 'carry' needs the state h the step starts from")
        ff1 = h
    if not gate.dtype == ff1.dtype == ff2.dtype:
        # Under autocast ``a`` is low precision and a float32 ``dt`` promotes the gate (and
        # carry's ``h`` may be float32); lerp wants one dtype: mix in the widest one, as
        # addcmul does above.
        wide = torch.promote_types(torch.promote_types(gate.dtype, ff1.dtype), ff2.dtype)
        ff1, ff2, gate = ff1.to(wide), ff2.to(wide), gate.to(wide)
    return torch.lerp(ff1, ff2, gate)  # ff1 * (1 - gate) + gate * ff2


def _plain_loop(
    u: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    dt: torch.Tensor | None,
    keep: torch.Tensor | None,
    mode: str,
) -> torch.Tensor:
    """States ``(L, B, H)`` by the step-by-step autograd loop (``fused=False``'s maths)."""
    def step(drive: tuple[torch.Tensor, ...], h: torch.Tensor,
             dt_t: torch.Tensor | None) -> torch.Tensor:
        return cfc_activate(torch.addmm(drive[0], h, w_hh), dt_t, mode, h)

    return unroll(step, (u,), h0, dt, keep, time_dim=0)[0]


def fused_scan_serves(
    u: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    dt: torch.Tensor | None,
    keep: torch.Tensor | None,
) -> bool:
    """Whether :class:`CfCScan` computes the right thing for these inputs here.

    It does not under ``torch.autocast`` on the inputs' device or with inputs of different
    dtypes (its loop writes into buffers of ``u``'s dtype and its backward multiplies
    matrices of the saved dtypes), inside ``torch.func`` transforms or under forward-mode
    AD (it defines neither ``vmap`` nor ``jvp`` rules), while ``torch.compile`` traces (the
    loop writes through ``out=`` views, which dynamo refuses) or ``torch.jit.trace``
    records (it branches on the resets in Python), or when ``dt`` requires gradients (the
    scan treats it as data). A few flag reads: no device synchronisation.
    """
    if (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch._C._are_functorch_transforms_active()):
        return False
    device = u.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return False
    given = [t for t in (dt, keep) if t is not None]
    if any(t.dtype != u.dtype for t in (w_hh, h0, *given)):
        return False
    if dt is not None and dt.requires_grad:
        return False
    return all(forward_ad.unpack_dual(t).tangent is None for t in (u, w_hh, h0, *given))


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
    h = h0
    for t in range(steps):
        if keep_t is not None and (resets is None or resets[t]):
            h = h * keep_t[t]
        h = cfc_step_into(torch.addmm(u_t[t], h, w_hh), None if dt_t is None else dt_t[t],
                          mode, f_t[t], ff1_t[t], ff2_t[t], g_t[t], s_t[t], h)
    return states, ffs, gates


def cfc_step_into(a: torch.Tensor, dt: torch.Tensor | None, mode: int, ff: torch.Tensor,
                  ff1: torch.Tensor, ff2: torch.Tensor, gate: torch.Tensor, out: torch.Tensor,
                  h: torch.Tensor | None = None) -> torch.Tensor:
    """One CfC activation of the fused loops (this scan's and mixed memory's), from the
    pre-activations ``a`` ``(B, 4H)``: the tanh heads into ``ff`` (``ff1``, ``ff2``: its
    halves), the time gate into ``gate`` and the new state into ``out``, which it returns
    (``carry`` mode also reads ``h``, the state the step starts from)."""
    hid = gate.shape[-1]
    a_ff, a_a, a_b = a.split_with_sizes([2 * hid, hid, hid], dim=1)
    torch.tanh(a_ff, out=ff)
    pre = a_a + a_b if dt is None else torch.addcmul(a_b, a_a, dt)
    g = torch.sigmoid(pre, out=gate)
    if mode == 0:
        return torch.lerp(ff1, ff2, g, out=out)
    if mode == 2:
        return torch.lerp(h, ff2, g, out=out)
    return torch.addcmul(ff1, g, ff2, out=out)


def cfc_coefficients(ffs: torch.Tensor, gates: torch.Tensor, dt: torch.Tensor | None,
                     mode: int, h_in: torch.Tensor | None = None) -> torch.Tensor:
    """``d h_t / d a_*`` of the CfC activation for every step at once, ``(L, B, 4, H)``,
    from the saved tanh heads ``ffs`` ``(L, B, 2H)`` and time gates ``(L, B, H)``
    (``carry`` mode: and the states ``h_in`` ``(L, B, H)`` the steps start from)."""
    steps, batch, hid = gates.shape
    ff1, ff2 = ffs[..., :hid], ffs[..., hid:]
    one_minus_g = 1.0 - gates
    dsig = gates * one_minus_g
    coef = ffs.new_empty(steps, batch, 4, hid)
    if mode == 0:
        torch.mul(one_minus_g, 1.0 - ff1 * ff1, out=coef[:, :, 0])
        torch.mul(gates, 1.0 - ff2 * ff2, out=coef[:, :, 1])
        dz = (ff2 - ff1) * dsig
    elif mode == 2:
        coef[:, :, 0] = 0.0
        torch.mul(gates, 1.0 - ff2 * ff2, out=coef[:, :, 1])
        dz = (ff2 - h_in) * dsig
    else:
        coef[:, :, 0] = 1.0 - ff1 * ff1
        torch.mul(gates, 1.0 - ff2 * ff2, out=coef[:, :, 1])
        dz = ff2 * dsig
    if dt is None:
        coef[:, :, 2] = dz
    else:
        torch.mul(dz, dt, out=coef[:, :, 2])
    coef[:, :, 3] = dz
    return coef


class CfCScan(torch.autograd.Function):
    """``states = CfCScan.apply(u, w_hh, h0, dt, keep, mode, resets)``; see the module
    docstring and :func:`_forward`.

    Gradients flow to ``u``, ``w_hh`` and ``h0``; ``dt`` and ``keep`` are treated as data.
    The hand-written backward is first-order; a backward with ``create_graph=True``
    (double backward, Hessians) differentiates the plain loop rebuilt from the saved
    inputs instead (:func:`grads_by_autograd`, also used for batched gradients),
    which is why ``u`` is saved too.
    All inputs must share one dtype and no autocast may be active (see
    :func:`fused_scan_serves`; :func:`cfc_scan` checks it).
    """

    @staticmethod
    def forward(ctx, u, w_hh, h0, dt, keep, mode, resets=None):  # type: ignore[override]
        states, ffs, gates = _forward(u, w_hh, h0, dt, keep, mode, resets)
        ctx.mode, ctx.resets = mode, resets
        ctx.save_for_backward(w_hh, h0, dt, keep, states, ffs, gates, u)
        return states

    @staticmethod
    def backward(ctx, grad_states):  # type: ignore[override]
        if needs_differentiable_backward(grad_states):
            w_hh, h0, dt, keep, *_, u = ctx.saved_tensors
            return grads_by_autograd(
                lambda: _plain_loop(u, w_hh, h0, dt, keep, _MODE_NAMES[ctx.mode]),
                (u, w_hh, h0), ctx.needs_input_grad, grad_states, 7)
        w_hh, h0, dt, keep, states, ffs, gates, _ = ctx.saved_tensors
        steps, batch, hid = states.shape
        h_prev = None  # the state each step starts from, after its reset
        if ctx.mode == 2 or ctx.needs_input_grad[1]:
            h_prev = torch.cat([h0.unsqueeze(0), states[:-1]], dim=0)
            if keep is not None:
                h_prev = h_prev * keep
        coef = cfc_coefficients(ffs, gates, dt, ctx.mode, h_prev)  # d h_t / d a_*
        carried = None if ctx.mode != 2 else (1.0 - gates).unbind(0)  # d h_t / d h_in, direct

        grad_a = torch.empty_like(coef)
        grad_u = grad_a.view(steps, batch, 4 * hid)
        w_hh_t = w_hh.t()
        carry = torch.zeros_like(h0)
        coef_t, ga_t, gu_t = coef.unbind(0), grad_a.unbind(0), grad_u.unbind(0)
        gs_t = grad_states.contiguous().unbind(0)
        keep_t = None if keep is None else keep.unbind(0)
        resets = ctx.resets
        for t in range(steps - 1, -1, -1):
            grad_h = gs_t[t] + carry
            torch.mul(coef_t[t], grad_h.unsqueeze(1), out=ga_t[t])
            carry = torch.mm(gu_t[t], w_hh_t)
            if carried is not None:
                carry = torch.addcmul(carry, grad_h, carried[t])
            if keep_t is not None and (resets is None or resets[t]):
                carry = carry * keep_t[t]

        grad_w = grad_h0 = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(h_prev.reshape(-1, hid).t(), grad_u.reshape(-1, 4 * hid))
        if ctx.needs_input_grad[2]:
            grad_h0 = carry
        return grad_u, grad_w, grad_h0, None, None, None, None


def needs_differentiable_backward(grad: torch.Tensor) -> bool:
    """Whether a fused scan's backward must be differentiable or batchable: under
    ``backward(create_graph=True)`` (gradients of gradients), inside ``torch.func``
    transforms, or for batched gradients (``autograd.grad(is_grads_batched=True)`` runs the
    backward under vmap). The hand-written backward passes write through ``out=`` views and
    are neither."""
    return (torch.is_grad_enabled() or torch._C._are_functorch_transforms_active()
            or torch._C._functorch.is_legacy_batchedtensor(grad))


def grads_by_autograd(
    rebuild: Callable[[], torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    needed: tuple[bool, ...],
    grad: torch.Tensor,
    n_args: int,
    first: int = 0,
) -> tuple[torch.Tensor | None, ...]:
    """A fused scan's differentiable backward: the gradients of ``rebuild()`` (the plain
    autograd loop, rebuilt from the saved ``inputs``, which keep their history) with
    respect to the ``inputs`` whose ``needed`` flag is set, placed from argument position
    ``first`` in the ``n_args`` gradients a ``backward`` returns. Differentiable again
    under ``create_graph=True`` and made of ops that ``vmap`` can batch."""
    wanted = [k for k in range(len(inputs)) if needed[k]]
    with torch.enable_grad():
        out = rebuild()
    grads = torch.autograd.grad(out, [inputs[k] for k in wanted], grad,
                                create_graph=torch.is_grad_enabled(), allow_unused=True)
    result: list[torch.Tensor | None] = [None] * n_args
    for k, g in zip(wanted, grads, strict=True):
        result[first + k] = g
    return tuple(result)


def reset_steps(keep: torch.Tensor | None) -> tuple[torch.Tensor | None, list[bool] | None]:
    """``keep`` and which steps reset some sample (time-major ``keep``), for a fused loop:
    one cheap read on a CPU (on an accelerator it would cost a synchronisation, so there
    every step applies its mask: ``None``). Most steps of RL sequences reset nothing, and
    multiplying by ones is then skipped; a ``keep`` of all ones is dropped."""
    if keep is None or keep.device.type != "cpu":
        return keep, None
    resets = (keep < 1).flatten(1).any(1).tolist()
    return (None, None) if not any(resets) else (keep, resets)


def cfc_scan(
    u: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    dt: torch.Tensor | None,
    keep: torch.Tensor | None,
    mode: str,
) -> torch.Tensor:
    """States ``(L, B, H)`` of the CfC recurrence over time-major ``u`` ``(L, B, 4H)``.

    Uses the fused :class:`CfCScan` when gradients are needed and its forward loop (which
    records nothing) otherwise; where the scan cannot serve (:func:`fused_scan_serves`:
    autocast, mixed dtypes, ``torch.func`` transforms, forward-mode AD, ``torch.compile``,
    ``dt`` requiring gradients) the plain autograd loop runs instead.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {tuple(_MODES)}, got {mode!r}")
    if not fused_scan_serves(u, w_hh, h0, dt, keep):
        return _plain_loop(u, w_hh, h0, dt, keep, mode)
    code = _MODES[mode]
    keep, resets = reset_steps(keep)
    if torch.is_grad_enabled() and (u.requires_grad or w_hh.requires_grad or h0.requires_grad):
        return CfCScan.apply(u, w_hh, h0, dt, keep, code, resets)
    return _forward(u, w_hh, h0, dt, keep, code, resets)[0]
