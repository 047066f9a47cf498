"""Independent reference implementations used by the tests.

These functions re-derive the maths of SPEC.md ("Liquid cells") and velora_ncps.md
sections 2.2-2.3 from the raw parameters and the *original* wiring masks, without
using any helper (buffer, effective weight, step function) of the library. They are
deliberately written step by step, with explicit ``z = cat([x, h])``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_signed_mask(n_src: int, n_dst: int, p_zero: float = 0.4, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """A signed (source, destination) mask with entries in {-1, 0, +1}, int8; every
    destination keeps at least one synapse."""
    r = torch.rand(n_src, n_dst, generator=generator)
    sign = torch.where(torch.rand(n_src, n_dst, generator=generator) < 0.5, -1, 1)
    mask = torch.where(r < p_zero, 0, sign)
    for j in range(n_dst):
        if not mask[:, j].any():
            mask[j % n_src, j] = 1
    return mask.to(torch.int8)


def randomize_(module: torch.nn.Module, scale: float = 0.7) -> None:
    """Overwrite every parameter (masked-out entries included) with N(0, scale^2)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)


def cfc_head_weights(cell, mask: torch.Tensor | None, recurrent_mask: torch.Tensor | None):
    """Per-head joint weights ``W_k`` of shape (H, in + H) acting on ``z = [x, h]``.

    ``mask`` is the signed (in, H) wiring mask, ``recurrent_mask`` the signed (H, H)
    one; ``None`` means dense. Polarity is ignored (|mask|) unless the cell is
    sign-constrained, where ff1/ff2 input weights become ``|W| * polarity``.
    The recurrent connectivity is the recurrent mask joined with the identity.
    """
    n_in, hid = cell.in_features, cell.n_hidden
    dtype = cell.input_weight.dtype
    signed = (torch.ones(n_in, hid) if mask is None else mask.to(torch.float64)).to(dtype)
    m_in = signed.abs().t()  # (H, in): weight[dst, src] exists iff mask[src, dst] != 0
    if recurrent_mask is None:
        m_rec = torch.ones(hid, hid, dtype=dtype)
    else:
        m_rec = recurrent_mask.to(dtype).abs().t().clone()
        m_rec[torch.arange(hid), torch.arange(hid)] = 1.0
    heads = 1 if cell.mode == "pure" else 4
    weights, biases = [], []
    for k in range(heads):
        w_in = cell.input_weight[k * hid:(k + 1) * hid]
        if getattr(cell, "sign_constrained", False) and k < 2:
            w_in = w_in.abs() * signed.t()
        w_in = w_in * m_in
        w_rec = cell.recurrent_weight[k * hid:(k + 1) * hid] * m_rec
        weights.append(torch.cat([w_in, w_rec], dim=1))
        biases.append(cell.bias[k * hid:(k + 1) * hid])
    return weights, biases


def cfc_reference_step(cell, mask, recurrent_mask, x, h, dt=None):
    """One CfC step by the SPEC equations; ``dt`` is ``None`` (= 1) or (B, 1)."""
    weights, biases = cfc_head_weights(cell, mask, recurrent_mask)
    z = torch.cat([x, h], dim=1)
    pre = [z @ w.t() + b for w, b in zip(weights, biases, strict=True)]
    ts = torch.ones(x.shape[0], 1, dtype=x.dtype) if dt is None else dt
    if cell.mode == "pure":
        f = pre[0]
        return -cell.A * torch.exp(-ts * (cell.w_tau.abs() + f.abs())) * f + cell.A
    ff1 = torch.tanh(pre[0])
    ff2 = torch.tanh(pre[1])
    gate = torch.sigmoid(pre[2] * ts + pre[3])
    if cell.mode == "no_gate":
        return ff1 + gate * ff2
    if cell.mode == "carry":  # the state in place of ff1
        return h * (1.0 - gate) + gate * ff2
    return ff1 * (1.0 - gate) + gate * ff2


def cfc_reference_sequence(cell, mask, recurrent_mask, x, h, dt=None, episode_start=None):
    """Loop of :func:`cfc_reference_step` over ``x (B, L, F)``; dt (B, L, 1),
    episode_start (B, L) (truthy resets the state to zero before the step)."""
    out = []
    for t in range(x.shape[1]):
        if episode_start is not None:
            h = h * (episode_start[:, t] == 0).to(h.dtype).unsqueeze(1)
        h = cfc_reference_step(cell, mask, recurrent_mask, x[:, t], h,
                               None if dt is None else dt[:, t])
        out.append(h)
    return torch.stack(out, dim=1), h


def ltc_reference_step(cell, mask, recurrent_mask, x, v, dt=None):
    """One LTC step (velora_ncps.md 2.3, fused semi-implicit Euler, K unfolds) from the
    raw parameters, the signed wiring masks and softplus positivity."""
    pos = F.softplus if cell.implicit_constraints else (lambda t: t)
    dtype = cell.vleak.dtype
    s_adj = mask.to(dtype).abs()
    r_adj = recurrent_mask.to(dtype).abs()
    K = cell.ode_unfolds
    xi = x * cell.input_w + cell.input_b  # (B, in)
    B, n_in = x.shape
    hid = cell.n_hidden
    num_s = torch.zeros(B, hid, dtype=dtype)
    den_s = torch.zeros(B, hid, dtype=dtype)
    for i in range(n_in):
        s = (pos(cell.sensory_w[i]) * torch.sigmoid(cell.sensory_sigma[i]
             * (xi[:, i:i + 1] - cell.sensory_mu[i])) * s_adj[i])
        num_s = num_s + s * cell.sensory_erev[i]
        den_s = den_s + s
    elapsed = torch.ones(B, 1, dtype=dtype) if dt is None else dt
    cm_t = pos(cell.cm) / (elapsed / K)
    gleak = pos(cell.gleak)
    for _ in range(K):
        num = cm_t * v + gleak * cell.vleak + num_s
        den = cm_t + gleak + den_s
        for i in range(hid):
            act = torch.sigmoid(cell.sigma[i] * (v[:, i:i + 1] - cell.mu[i]))
            a = pos(cell.w[i]) * act * r_adj[i]
            num = num + a * cell.erev[i]
            den = den + a
        v = num / (den + cell.epsilon)
    return v
