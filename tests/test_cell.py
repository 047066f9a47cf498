"""The closed-form (CfC) NCPLiquidCell: SPEC equations, per-sample elapsed time,
masks under optimisation, sequence vs step loop, fused vs reference BPTT, resets,
sign constraints, validation and the no-grad fast path."""

from __future__ import annotations

import pytest
import torch
from liquid_reference import (
    cfc_reference_sequence,
    cfc_reference_step,
    random_signed_mask,
    randomize_,
)

from velora_ens.models.lnn import NCPLiquidCell

MODES = ["default", "no_gate", "pure", "carry"]
F64 = torch.float64


def make_cell(mode, n_in=3, hid=4, *, dtype=F64, recurrent=True, sign_constrained=False,
              seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = random_signed_mask(n_in, hid, p_zero=0.4, generator=g)
    rec = random_signed_mask(hid, hid, p_zero=0.6, generator=g) if recurrent else None
    cell = NCPLiquidCell(n_in, hid, mask, recurrent_mask=rec, mode=mode,
                         sign_constrained=sign_constrained, dtype=dtype)
    randomize_(cell)
    return cell, mask, rec


# --------------------------------------------------------------------- equations (3)
def test_parameter_layout():
    cell, mask, rec = make_cell("default", 3, 4)
    assert tuple(cell.input_weight.shape) == (16, 3)
    assert tuple(cell.recurrent_weight.shape) == (16, 4)
    assert tuple(cell.bias.shape) == (16,)
    pure, _, _ = make_cell("pure", 3, 4)
    assert tuple(pure.input_weight.shape) == (4, 3)
    assert tuple(pure.recurrent_weight.shape) == (4, 4)
    assert tuple(pure.w_tau.shape) == (4,) and tuple(pure.A.shape) == (4,)
    fresh = NCPLiquidCell(3, 4, mode="pure")
    assert torch.equal(fresh.w_tau, torch.zeros(4)) and torch.equal(fresh.A, torch.ones(4))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_single_step_matches_spec_equations(mode, recurrent, grad):
    cell, mask, rec = make_cell(mode, recurrent=recurrent)
    with torch.no_grad():
        if mode == "pure":
            cell.A.uniform_(0.5, 1.5)
    x = torch.randn(5, 3, dtype=F64)
    h = torch.randn(5, 4, dtype=F64)
    dt = torch.tensor([[0.3], [1.7], [2.5], [0.0], [1.0]], dtype=F64)
    with torch.set_grad_enabled(grad):
        y, h_new = cell(x, h, dt)
        y1, _ = cell(x, h)  # default dt = 1
    with torch.no_grad():
        ref = cfc_reference_step(cell, mask, rec, x, h, dt)
        ref1 = cfc_reference_step(cell, mask, rec, x, h, None)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(h_new, ref)
    torch.testing.assert_close(y1, ref1)
    # dt really matters (the time gate / decay reads it)
    assert not torch.allclose(ref[:3], ref1[:3])


@pytest.mark.parametrize("mode", MODES)
def test_sequence_matches_spec_equations(mode):
    cell, mask, rec = make_cell(mode)
    B, L = 3, 5
    x = torch.randn(B, L, 3, dtype=F64)
    h = torch.randn(B, 4, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) * 2.0 + 0.1
    for fused in (True, False):
        ys, h_last = cell(x, h, dt, fused=fused)
        ref, ref_last = cfc_reference_sequence(cell, mask, rec, x, h, dt)
        torch.testing.assert_close(ys, ref)
        torch.testing.assert_close(h_last, ref_last)


def test_polarity_ignored_without_sign_constraint():
    """The cell uses |mask| as connectivity: flipping a synapse's sign changes nothing."""
    cell, mask, rec = make_cell("default")
    flipped = NCPLiquidCell(3, 4, -mask, recurrent_mask=-rec, dtype=F64)
    flipped.load_state_dict({k: v for k, v in cell.state_dict().items()
                             if k in dict(cell.named_parameters())}, strict=False)
    x, h = torch.randn(2, 3, dtype=F64), torch.randn(2, 4, dtype=F64)
    torch.testing.assert_close(cell(x, h)[0], flipped(x, h)[0])


def test_masks_apply_to_every_head():
    """Changing a masked-out weight of any head (time gates included) changes nothing;
    changing a kept one changes the output."""
    cell, mask, rec = make_cell("default")
    x, h = torch.randn(4, 3, dtype=F64), torch.randn(4, 4, dtype=F64)
    y0 = cell(x, h)[0].detach()
    hid = 4
    rec_keep = (rec.abs() + torch.eye(4, dtype=rec.dtype)).t() != 0
    for k in range(4):
        with torch.no_grad():
            cell.input_weight[k * hid:(k + 1) * hid][mask.t() == 0] += 3.0
            cell.recurrent_weight[k * hid:(k + 1) * hid][~rec_keep] += 3.0
        torch.testing.assert_close(cell(x, h)[0], y0)
    for k in range(4):
        with torch.no_grad():
            cell.input_weight[k * hid:(k + 1) * hid][mask.t() != 0] += 0.5
        y1 = cell(x, h)[0].detach()
        assert not torch.allclose(y1, y0), f"head {k} ignored"
        y0 = y1


def test_self_connections_always_present():
    """The recurrent mask is joined with the identity: a neuron sees its own state
    even when the wiring gives it no recurrent synapse."""
    rec = torch.zeros(4, 4, dtype=torch.int8)
    cell = NCPLiquidCell(3, 4, torch.ones(3, 4), recurrent_mask=rec, dtype=F64)
    randomize_(cell)
    x = torch.randn(1, 3, dtype=F64)
    h = torch.zeros(1, 4, dtype=F64)
    base = cell(x, h)[0].detach()
    h2 = h.clone()
    h2[0, 1] = 1.0
    changed = (cell(x, h2)[0].detach() - base).abs()[0] > 1e-12
    assert changed.tolist() == [False, True, False, False]


# ----------------------------------------------------------------------- dt (4)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", ["(B,1)", "(B,)"])
def test_dt_per_sample_when_batch_equals_hidden(mode, shape):
    hid = 4
    cell, mask, rec = make_cell(mode, 3, hid)
    B = hid  # the ncps bug: (B,) timespans line up with the hidden dimension
    x = torch.randn(B, 3, dtype=F64)
    h = torch.randn(B, hid, dtype=F64)
    dt = torch.tensor([0.1, 0.9, 2.0, 4.0], dtype=F64)
    dt_in = dt.unsqueeze(1) if shape == "(B,1)" else dt
    y, _ = cell(x, h, dt_in)
    for b in range(B):
        yb, _ = cell(x[b:b + 1], h[b:b + 1], dt[b:b + 1].unsqueeze(1))
        torch.testing.assert_close(y[b:b + 1], yb)
        yf, _ = cell(x[b:b + 1], h[b:b + 1], float(dt[b]))
        torch.testing.assert_close(y[b:b + 1], yf)
    ref = cfc_reference_step(cell, mask, rec, x, h, dt.unsqueeze(1))
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fused", [True, False])
def test_dt_per_sample_and_step_in_sequences(mode, fused):
    hid = 4
    cell, mask, rec = make_cell(mode, 3, hid)
    B, L = hid, 3
    x = torch.randn(B, L, 3, dtype=F64)
    h0 = torch.randn(B, hid, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) * 3.0
    ys, _ = cell(x, h0, dt, fused=fused)
    ys2, _ = cell(x, h0, dt.squeeze(-1), fused=fused)  # (B, L) is accepted too
    torch.testing.assert_close(ys, ys2)
    for b in range(B):
        h = h0[b:b + 1]
        for t in range(L):
            yt, h = cell(x[b:b + 1, t], h, dt[b:b + 1, t])
            torch.testing.assert_close(ys[b:b + 1, t], yt)
    # a (B, 1) dt for a sequence applies the same per-sample value at every step
    per_sample = torch.rand(B, 1, dtype=F64) + 0.5
    torch.testing.assert_close(cell(x, h0, per_sample, fused=fused)[0],
                               cell(x, h0, per_sample.unsqueeze(1).expand(B, L, 1),
                                    fused=fused)[0])


def test_default_dt_is_one():
    for mode in MODES:
        cell, _, _ = make_cell(mode)
        x = torch.randn(3, 2, 3, dtype=F64)
        h = torch.randn(3, 4, dtype=F64)
        a = cell(x, h)[0]
        torch.testing.assert_close(a, cell(x, h, 1.0)[0])
        torch.testing.assert_close(a, cell(x, h, torch.ones(3, 2, 1, dtype=F64))[0])


# --------------------------------------------------------- masks + optimisers (5)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opt_name", ["adam", "adamw"])
def test_masked_weights_zero_grad_and_stay_zero(mode, opt_name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    mask = random_signed_mask(4, 5, p_zero=0.5, generator=g)
    rec = random_signed_mask(5, 5, p_zero=0.7, generator=g)
    cell = NCPLiquidCell(4, 5, mask, recurrent_mask=rec, mode=mode)
    heads = cell.n_heads
    in_off = (mask.t() == 0).repeat(heads, 1)
    rec_keep = (rec.abs().t() + torch.eye(5, dtype=rec.dtype)) != 0
    rec_off = (~rec_keep).repeat(heads, 1)
    assert in_off.any() and rec_off.any()
    # masked-out raw entries start at zero
    assert (cell.input_weight.detach()[in_off] == 0).all()
    assert (cell.recurrent_weight.detach()[rec_off] == 0).all()
    opt = (torch.optim.Adam(cell.parameters(), lr=0.05) if opt_name == "adam"
           else torch.optim.AdamW(cell.parameters(), lr=0.05, weight_decay=0.3))
    for _ in range(5):
        x = torch.randn(6, 3, 4)
        dt = torch.rand(6, 3, 1) + 0.5
        ys, h = cell(x, torch.randn(6, 5), dt)
        loss = (ys ** 2).mean() + ys.sum() + h.sum()
        opt.zero_grad()
        loss.backward()
        assert (cell.input_weight.grad[in_off] == 0).all()
        assert (cell.recurrent_weight.grad[rec_off] == 0).all()
        assert cell.input_weight.grad[~in_off].abs().sum() > 0
        assert cell.recurrent_weight.grad[~rec_off].abs().sum() > 0
        opt.step()
        w_in = cell.effective_input_weight()
        w_rec = cell.effective_recurrent_weight()
        assert (w_in[in_off] == 0).all()
        assert (w_rec[rec_off] == 0).all()
        assert (cell.input_weight.detach()[in_off] == 0).all()
        assert (cell.recurrent_weight.detach()[rec_off] == 0).all()
    # every head's kept weights trained (non-zero gradient reached all heads); carry has
    # no ff1 head: its weights are all masked, stay zero and get no gradient
    for k in range(heads):
        rows = slice(k * 5, (k + 1) * 5)
        if mode == "carry" and k == 0:
            assert (cell.input_weight.detach()[rows] == 0).all()
            assert (cell.recurrent_weight.detach()[rows] == 0).all()
            assert (cell.input_weight.grad[rows] == 0).all()
            assert (cell.recurrent_weight.grad[rows] == 0).all()
            continue
        assert cell.input_weight.grad[rows][~in_off[:5]].abs().sum() > 0


# ------------------------------------------------- sequence vs steps, fused (6)
@pytest.mark.parametrize("mode", MODES)
def test_sequence_equals_step_loop_with_dt_and_resets(mode):
    cell, _, _ = make_cell(mode)
    B, L = 3, 6
    x = torch.randn(B, L, 3, dtype=F64)
    h0 = torch.randn(B, 4, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) * 2.0
    starts = torch.zeros(B, L, dtype=torch.bool)
    starts[0, 2] = starts[2, 0] = starts[1, 4] = starts[2, 5] = True
    for fused in (True, False):
        ys, h_last = cell(x, h0, dt, starts, fused=fused)
        h = h0
        for t in range(L):
            yt, h = cell(x[:, t], h, dt[:, t], starts[:, t])
            torch.testing.assert_close(ys[:, t], yt)
        torch.testing.assert_close(h_last, h)
        torch.testing.assert_close(h_last, ys[:, -1])


def _grads(cell, x, h0, dt, starts, fused):
    cell.zero_grad()
    x = x.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    ys, h_last = cell(x, h0, dt, starts, fused=fused)
    w = torch.linspace(-1, 1, ys.numel(), dtype=ys.dtype).reshape(ys.shape)
    loss = (ys * w).sum() + (h_last ** 2).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in cell.named_parameters()}
    grads["x"], grads["h0"] = x.grad, h0.grad
    return ys.detach(), grads


@pytest.mark.parametrize("mode", ["default", "no_gate", "carry"])
@pytest.mark.parametrize("with_dt", [True, False])
@pytest.mark.parametrize("with_resets", [True, False])
def test_fused_equals_reference_outputs_and_gradients(mode, with_dt, with_resets):
    cell, _, _ = make_cell(mode, 3, 5)
    B, L = 4, 7
    x = torch.randn(B, L, 3, dtype=F64)
    h0 = torch.randn(B, 5, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) * 2.0 if with_dt else None
    starts = None
    if with_resets:
        starts = torch.zeros(B, L)
        starts[1, 0] = starts[0, 3] = starts[3, 6] = 1.0
    y_f, g_f = _grads(cell, x, h0, dt, starts, True)
    y_r, g_r = _grads(cell, x, h0, dt, starts, False)
    torch.testing.assert_close(y_f, y_r, rtol=1e-12, atol=1e-12)
    assert set(g_f) == set(g_r) == {"input_weight", "recurrent_weight", "bias", "x", "h0"}
    for name in g_f:
        torch.testing.assert_close(g_f[name], g_r[name], rtol=1e-10, atol=1e-12, msg=name)
    if with_resets:
        # sample 1 is reset at step 0: its initial state gets no gradient
        assert (g_f["h0"][1] == 0).all()
        assert (g_f["h0"][0] != 0).any()


@pytest.mark.parametrize("starts_at", [[(0, 1), (3, 0)], []])
def test_scan_skipping_steps_without_resets_changes_no_bit(starts_at):
    """On a CPU the scan skips the mask at steps that reset nothing (multiplying by ones);
    outputs and gradients equal those of the scan that applies every step's mask."""
    from velora_ens.models.lnn.scan import CfCScan, cfc_scan

    g = torch.Generator().manual_seed(4)
    L, B, H = 6, 3, 5
    u = torch.randn(L, B, 4 * H, generator=g)
    w_hh = torch.randn(H, 4 * H, generator=g) * 0.5
    h0 = torch.randn(B, H, generator=g)
    keep = torch.ones(L, B, 1)
    for t, b in starts_at:
        keep[t, b] = 0.0

    def run(skipping):
        leaves = [x.clone().requires_grad_(True) for x in (u, w_hh, h0)]
        states = (cfc_scan(*leaves, None, keep, "default") if skipping
                  else CfCScan.apply(*leaves, None, keep, 0, None))  # every step's mask
        weights = torch.linspace(-1, 1, states.numel()).reshape(states.shape)
        (states * weights).sum().backward()
        return [states.detach()] + [x.grad for x in leaves]

    for ours, reference in zip(run(True), run(False), strict=True):
        assert torch.equal(ours, reference)
    if starts_at:  # the reset really cut the history: h0 of sample 1 gets no gradient
        assert (run(True)[3][1] == 0).all()


def test_fused_path_runs_custom_backward():
    """The fused path really is the hand-written scan (not the autograd loop)."""
    cell, _, _ = make_cell("default")
    ys, _ = cell(torch.randn(2, 3, 3, dtype=F64), torch.randn(2, 4, dtype=F64))
    assert "CfCScan" in type(ys.grad_fn).__name__ or any(
        "CfCScan" in type(f[0]).__name__ for f in ys.grad_fn.next_functions if f[0] is not None)


def test_gradient_with_respect_to_dt():
    """dt that requires grad gets the right gradient (checked by gradcheck)."""
    for mode in MODES:
        cell, _, _ = make_cell(mode, 2, 3)
        x = torch.randn(2, 3, 2, dtype=F64)
        h0 = torch.randn(2, 3, dtype=F64)
        dt = (torch.rand(2, 3, 1, dtype=F64) + 0.5).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda d, c=cell, x=x, h=h0: c(x, h, d)[0], (dt,))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_cell_sequence(mode):
    cell, _, _ = make_cell(mode, 2, 3)
    x = torch.randn(2, 4, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    dt = torch.rand(2, 4, 1, dtype=F64) + 0.2
    starts = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0]])
    names = [n for n, _ in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in cell.named_parameters())

    def fn(x, h0, *ps):
        values = dict(zip(names, ps, strict=True))
        out = torch.func.functional_call(cell, values, (x, h0, dt, starts))
        return out[0], out[1]

    assert torch.autograd.gradcheck(fn, (x, h0) + params)


# ---------------------------------------------------------------- resets (7)
@pytest.mark.parametrize("mode", MODES)
def test_reset_zeroes_exactly_flagged_samples_single_step(mode):
    cell, _, _ = make_cell(mode)
    B = 5
    x = torch.randn(B, 3, dtype=F64)
    h = torch.randn(B, 4, dtype=F64)
    flags = torch.tensor([True, False, True, False, False])
    for es in (flags, flags.to(F64), flags.long().unsqueeze(1)):
        y, _ = cell(x, h, None, es)
        torch.testing.assert_close(y[flags], cell(x[flags], torch.zeros(2, 4, dtype=F64))[0])
        torch.testing.assert_close(y[~flags], cell(x[~flags], h[~flags])[0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fused", [True, False])
def test_reset_in_sequences(mode, fused):
    cell, _, _ = make_cell(mode)
    B, L = 3, 6
    x = torch.randn(B, L, 3, dtype=F64)
    h0 = torch.randn(B, 4, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) + 0.5
    starts = torch.zeros(B, L, dtype=torch.bool)
    starts[0, 3] = True   # sample 0: new episode at t = 3
    starts[2, 0] = True   # sample 2: new episode at t = 0
    ys, _ = cell(x, h0, dt, starts, fused=fused)
    zero = torch.zeros(1, 4, dtype=F64)
    # sample 0: before t=3 from h0, from t=3 on from a zero state
    torch.testing.assert_close(ys[0:1, :3], cell(x[0:1, :3], h0[0:1], dt[0:1, :3])[0])
    torch.testing.assert_close(ys[0:1, 3:], cell(x[0:1, 3:], zero, dt[0:1, 3:])[0])
    # sample 1: never reset
    torch.testing.assert_close(ys[1:2], cell(x[1:2], h0[1:2], dt[1:2])[0])
    # sample 2: reset at the first step
    torch.testing.assert_close(ys[2:3], cell(x[2:3], zero, dt[2:3])[0])


# --------------------------------------------------------- sign constraint (10)
def test_sign_constrained_follows_polarity_after_training():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    mask = random_signed_mask(4, 6, p_zero=0.3, generator=g)
    cell = NCPLiquidCell(4, 6, mask, sign_constrained=True)
    pol = mask.t().to(torch.float32)
    hid = 6

    def check():
        w = cell.effective_input_weight().detach()
        for k in range(2):  # ff1, ff2 heads follow the synapse polarity
            wk = w[k * hid:(k + 1) * hid]
            assert (wk * pol >= 0).all()
            assert (wk[pol == 0] == 0).all()
        return w

    w0 = check()
    assert (w0[:hid][pol != 0] != 0).all()
    # equations: ff heads use |W| * polarity
    x, h = torch.randn(3, 4), torch.randn(3, 6)
    torch.testing.assert_close(cell(x, h)[0], cfc_reference_step(cell, mask, None, x, h))
    opt = torch.optim.Adam(cell.parameters(), lr=0.2)
    for _ in range(15):
        w = cell.effective_input_weight()
        # push every ff weight against its polarity, plus a task loss
        loss = (w[: 2 * hid] * pol.repeat(2, 1)).sum() * 10 + cell(x, h)[0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        check()
    # the raw weights did cross zero: the constraint, not luck, keeps the signs
    raw = cell.input_weight.detach()[: 2 * hid]
    assert (raw * pol.repeat(2, 1) < 0).any()
    torch.testing.assert_close(cell(x, h)[0], cfc_reference_step(cell, mask, None, x, h))


# ------------------------------------------------------------ validation (9)
@pytest.mark.parametrize(
    "call,fragments",
    [
        (lambda c: c(torch.randn(2, 5)), ["3", "(2, 5)"]),
        (lambda c: c(torch.randn(3)), ["(3,)", "rank 1"]),
        (lambda c: c(torch.randn(1, 2, 2, 3)), ["(1, 2, 2, 3)", "rank 4"]),
        (lambda c: c(torch.randn(2, 3), torch.randn(2, 5)), ["(2, 4)", "(2, 5)"]),
        (lambda c: c(torch.randn(2, 3), torch.randn(3, 4)), ["(2, 4)", "(3, 4)"]),
        (lambda c: c(torch.randn(2, 3), None, torch.ones(3, 1)), ["(3, 1)", "B=2"]),
        (lambda c: c(torch.randn(2, 3), None, torch.ones(2, 4)), ["(2, 4)", "B=2"]),
        (lambda c: c(torch.randn(2, 5, 3), None, torch.ones(2, 4, 1)), ["(2, 4, 1)", "L=5"]),
        (lambda c: c(torch.randn(2, 3), None, None, torch.zeros(3)), ["(3,)", "(2,)"]),
        (lambda c: c(torch.randn(2, 5, 3), None, None, torch.zeros(2, 4)), ["(2, 4)", "(2, 5)"]),
    ],
)
def test_bad_inputs_raise_value_error(call, fragments):
    cell = NCPLiquidCell(3, 4)
    with pytest.raises(ValueError) as info:
        call(cell)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


@pytest.mark.parametrize(
    "kwargs,fragments",
    [
        ({"mode": "fast"}, ["mode", "'fast'"]),
        ({"mask": torch.ones(4, 3)}, ["(4, 3)", "(3, 4)"]),
        ({"recurrent_mask": torch.ones(3, 3)}, ["recurrent_mask", "(3, 3)", "(4, 4)"]),
    ],
)
def test_bad_construction_raises(kwargs, fragments):
    with pytest.raises(ValueError) as info:
        NCPLiquidCell(3, 4, **kwargs)
    for f in fragments:
        assert f in str(info.value)


def test_negative_or_nonfinite_dt_rejected():
    cell = NCPLiquidCell(3, 4)
    for bad in (torch.tensor([[-1.0], [1.0]]), torch.tensor([[float("nan")], [1.0]])):
        with pytest.raises(ValueError, match="dt"):
            cell(torch.randn(2, 3), None, bad)


# ------------------------------------------------------------- fast path (11)
@pytest.mark.parametrize("mode", MODES)
def test_no_grad_single_step_equals_grad_path_and_tracks_updates(mode):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cell = NCPLiquidCell(3, 4, random_signed_mask(3, 4, generator=g),
                         recurrent_mask=random_signed_mask(4, 4, generator=g), mode=mode)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    dt = torch.tensor([[0.5], [2.0]])
    with torch.no_grad():
        a0 = cell(x, h)[0]
        a0_dt = cell(x, h, dt)[0]
    torch.testing.assert_close(a0, cell(x, h)[0].detach())
    torch.testing.assert_close(a0_dt, cell(x, h, dt)[0].detach())
    opt = torch.optim.Adam(cell.parameters(), lr=0.1)
    cell(x, h)[0].sum().backward()
    opt.step()
    with torch.no_grad():
        a1 = cell(x, h)[0]
    assert not torch.allclose(a1, a0)
    torch.testing.assert_close(a1, cell(x, h)[0].detach())
    with torch.inference_mode():
        a2 = cell(x, h)[0]
    torch.testing.assert_close(a2.clone(), a1)


# ------------------------------------------------- carry mode
def test_carry_mode_keeps_the_state_while_its_gate_is_shut_and_moves_it_when_open():
    """``carry``: ``h' = h (1 - g) + g ff2``. With the gate's bias at -40 (g = 4e-18) the
    state passes through any input unchanged (to float64 rounding); at +40 it becomes
    ``ff2 = tanh(W2 [x, h] + b2)``, computed here by hand. The default mode rewrites the
    state through tanh even with the gate shut (``h' = ff1``)."""
    torch.manual_seed(0)
    cell = NCPLiquidCell(3, 4, mode="carry").double()
    h0 = torch.randn(2, 4, dtype=F64)
    x = torch.randn(2, 6, 3, dtype=F64) * 3.0
    with torch.no_grad():
        cell.bias[8:] = -20.0  # a_a + a_b: the gate's pre-activation about -40
    ys, h = cell(x, h0)
    torch.testing.assert_close(ys, h0.unsqueeze(1).expand(2, 6, 4), rtol=0, atol=1e-15)
    with torch.no_grad():
        cell.bias[8:] = 20.0
    y1, _ = cell(x[:, 0], h0)
    w_in, w_rec = cell.effective_input_weight(), cell.effective_recurrent_weight()
    ff2 = torch.tanh(x[:, 0] @ w_in[4:8].t() + h0 @ w_rec[4:8].t() + cell.bias[4:8])
    torch.testing.assert_close(y1, ff2, rtol=0, atol=1e-15)
    default = NCPLiquidCell(3, 4).double()
    with torch.no_grad():
        default.bias[8:] = -20.0
    assert (default(x, h0)[0][:, -1] - h0).abs().max() > 0.1


def test_mixed_memory_refuses_a_carry_cell():
    from velora_ens.models.lnn.mixed import MixedMemoryCell

    with pytest.raises(ValueError, match="got mode 'carry'"):
        MixedMemoryCell(NCPLiquidCell(3, 4, mode="carry"))
