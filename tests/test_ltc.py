"""LTCCell: the fused semi-implicit Euler update (velora_ncps.md 2.3) with wiring masks
and polarities, per-sample dt, sequences, resets, positivity, gradients, validation."""

from __future__ import annotations

import pytest
import torch
from liquid_reference import ltc_reference_step, random_signed_mask
from torch.nn import functional as F

from velora_ens.models.lnn import LTCCell

F64 = torch.float64


def make_ltc(n_in=3, hid=4, *, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    mask = random_signed_mask(n_in, hid, p_zero=0.4, generator=g)
    rec = random_signed_mask(hid, hid, p_zero=0.5, generator=g)
    cell = LTCCell(n_in, hid, mask, recurrent_mask=rec, dtype=F64, **kw)
    with torch.no_grad():  # move away from the init so every parameter matters
        cell.input_w.uniform_(0.5, 1.5)
        cell.input_b.uniform_(-0.3, 0.3)
        cell.vleak.uniform_(-0.5, 0.5)
        cell.erev.add_(torch.randn_like(cell.erev) * 0.1)
        cell.sensory_erev.add_(torch.randn_like(cell.sensory_erev) * 0.1)
    return cell, mask, rec


def test_init_follows_ncps_ranges_and_polarity():
    torch.manual_seed(0)
    masks_g = torch.Generator().manual_seed(2)
    mask = random_signed_mask(5, 6, generator=masks_g)
    rec = random_signed_mask(6, 6, generator=masks_g)
    cell = LTCCell(5, 6, mask, recurrent_mask=rec)
    # reversal potentials start at the synapse polarity (the wiring's sign is kept)
    assert torch.equal(cell.sensory_erev.detach(), mask.float())
    assert torch.equal(cell.erev.detach(), rec.float())
    sp = F.softplus
    for p, lo, hi in ((sp(cell.gleak), 0.001, 1.0), (sp(cell.cm), 0.4, 0.6),
                      (sp(cell.w), 0.001, 1.0), (sp(cell.sensory_w), 0.001, 1.0),
                      (cell.sigma, 3.0, 8.0), (cell.sensory_sigma, 3.0, 8.0),
                      (cell.mu, 0.3, 0.8), (cell.sensory_mu, 0.3, 0.8),
                      (cell.vleak, -0.2, 0.2)):
        assert (p >= lo - 1e-5).all() and (p <= hi + 1e-5).all()


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("unfolds", [1, 6])
def test_single_step_matches_reference_equations(implicit, unfolds):
    cell, mask, rec = make_ltc(implicit_constraints=implicit, ode_unfolds=unfolds)
    x = torch.randn(5, 3, dtype=F64)
    v = torch.randn(5, 4, dtype=F64) * 0.5
    dt = torch.tensor([[0.2], [1.0], [1.5], [3.0], [0.7]], dtype=F64)
    y, v_new = cell(x, v, dt)
    with torch.no_grad():
        ref = ltc_reference_step(cell, mask, rec, x, v, dt)
        ref1 = ltc_reference_step(cell, mask, rec, x, v, None)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(v_new, ref)
    torch.testing.assert_close(cell(x, v)[0], ref1)
    torch.testing.assert_close(cell(x, v, 1.0)[0], ref1)
    assert not torch.allclose(ref, ref1)


@pytest.mark.parametrize("shape", ["(B,1)", "(B,)"])
def test_dt_per_sample_when_batch_equals_hidden(shape):
    cell, mask, rec = make_ltc(3, 4)
    x = torch.randn(4, 3, dtype=F64)
    v = torch.randn(4, 4, dtype=F64)
    dt = torch.tensor([0.1, 0.5, 2.0, 5.0], dtype=F64)
    y, _ = cell(x, v, dt.unsqueeze(1) if shape == "(B,1)" else dt)
    for b in range(4):
        torch.testing.assert_close(y[b:b + 1], cell(x[b:b + 1], v[b:b + 1], dt[b:b + 1, None])[0])


def test_sequence_equals_step_loop_with_dt_and_resets():
    cell, _, _ = make_ltc(3, 4)
    B, L = 4, 5
    x = torch.randn(B, L, 3, dtype=F64)
    v0 = torch.randn(B, 4, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) * 2 + 0.1
    starts = torch.zeros(B, L, dtype=torch.bool)
    starts[0, 2] = starts[3, 0] = True
    ys, v_last = cell(x, v0, dt, starts)
    assert tuple(ys.shape) == (B, L, 4)
    v = v0
    for t in range(L):
        yt, v = cell(x[:, t], v, dt[:, t], starts[:, t])
        torch.testing.assert_close(ys[:, t], yt)
    torch.testing.assert_close(v_last, v)
    # reset: sample 0 restarts from zero at t=2, sample 3 at t=0, others continue
    zero = torch.zeros(1, 4, dtype=F64)
    torch.testing.assert_close(ys[0:1, 2:], cell(x[0:1, 2:], zero, dt[0:1, 2:])[0])
    torch.testing.assert_close(ys[0:1, :2], cell(x[0:1, :2], v0[0:1], dt[0:1, :2])[0])
    torch.testing.assert_close(ys[3:4], cell(x[3:4], zero, dt[3:4])[0])
    torch.testing.assert_close(ys[1:3], cell(x[1:3], v0[1:3], dt[1:3])[0])


def test_reset_single_step():
    cell, _, _ = make_ltc(3, 4)
    x = torch.randn(4, 3, dtype=F64)
    v = torch.randn(4, 4, dtype=F64)
    flags = torch.tensor([0.0, 1.0, 1.0, 0.0])
    y, _ = cell(x, v, None, flags)
    f = flags.bool()
    torch.testing.assert_close(y[f], cell(x[f], torch.zeros(2, 4, dtype=F64))[0])
    torch.testing.assert_close(y[~f], cell(x[~f], v[~f])[0])


def test_dt_zero_leaves_state_unchanged():
    """dt = 0 is accepted by the input checks (non-negative); no time elapses, so the
    membrane potential must not move (and certainly not become NaN)."""
    cell, _, _ = make_ltc(3, 4)
    x = torch.randn(3, 3, dtype=F64)
    v = torch.randn(3, 4, dtype=F64)
    y, _ = cell(x, v, torch.zeros(3, 1, dtype=F64))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, v)


def test_masked_synapses_get_no_gradient():
    cell, mask, rec = make_ltc(3, 4)
    x = torch.randn(2, 3, 3, dtype=F64)
    ys, _ = cell(x, torch.randn(2, 4, dtype=F64))
    ys.sum().backward()
    s_off, r_off = mask == 0, rec == 0
    for name in ("sensory_w", "sensory_sigma", "sensory_mu", "sensory_erev"):
        assert (getattr(cell, name).grad[s_off] == 0).all(), name
        assert getattr(cell, name).grad[~s_off].abs().sum() > 0, name
    for name in ("w", "sigma", "mu", "erev"):
        assert (getattr(cell, name).grad[r_off] == 0).all(), name
        assert getattr(cell, name).grad[~r_off].abs().sum() > 0, name


def test_positive_parameters_stay_positive_under_large_steps():
    torch.manual_seed(0)
    cell = LTCCell(3, 5)  # float32, fully connected, softplus constraints by default
    opt = torch.optim.Adam(cell.parameters(), lr=1.0)
    x = torch.randn(8, 4, 3)
    positives = ("w", "sensory_w", "cm", "gleak")
    for _ in range(6):
        ys, _ = cell(x, torch.randn(8, 5))
        # drive every positive quantity downwards (towards negative raw values)
        loss = ys.pow(2).sum() + sum(F.softplus(getattr(cell, n)).sum() for n in positives) * 10
        opt.zero_grad()
        loss.backward()
        opt.step()
        for n in positives:
            assert (cell._positive(getattr(cell, n)) > 0).all(), n
            assert (F.softplus(getattr(cell, n)) > 0).all(), n
    # the raw values did go negative: positivity comes from the softplus
    assert any((getattr(cell, n) < 0).any() for n in positives)
    ys, _ = cell(x)
    assert torch.isfinite(ys).all()


def test_explicit_constraints_clip_at_zero():
    torch.manual_seed(0)
    cell = LTCCell(3, 4, implicit_constraints=False)
    with torch.no_grad():
        cell.w.fill_(-1.0)
        cell.cm.fill_(-0.5)
    cell.apply_weight_constraints()
    assert (cell.w >= 0).all() and (cell.cm >= 0).all()
    assert (cell.gleak >= 0).all() and (cell.sensory_w >= 0).all()


def test_gradcheck_ltc_sequence():
    cell, _, _ = make_ltc(2, 3, ode_unfolds=3)
    x = torch.randn(2, 3, 2, dtype=F64, requires_grad=True)
    v0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    dt = (torch.rand(2, 3, 1, dtype=F64) + 0.3).requires_grad_(True)
    starts = torch.tensor([[0, 1, 0], [0, 0, 0]])
    assert torch.autograd.gradcheck(lambda a, b, c: cell(a, b, c, starts), (x, v0, dt))


@pytest.mark.parametrize(
    "call,fragments",
    [
        (lambda c: c(torch.randn(2, 4)), ["3", "(2, 4)"]),
        (lambda c: c(torch.randn(3)), ["(3,)", "rank 1"]),
        (lambda c: c(torch.randn(1, 1, 2, 3)), ["rank 4"]),
        (lambda c: c(torch.randn(2, 3), torch.randn(2, 3)), ["(2, 4)", "(2, 3)"]),
        (lambda c: c(torch.randn(2, 3), None, torch.ones(2, 2)), ["(2, 2)"]),
        (lambda c: c(torch.randn(2, 3), None, None, torch.ones(2, 2)), ["(2, 2)", "(2,)"]),
    ],
)
def test_bad_inputs_raise_value_error(call, fragments):
    cell = LTCCell(3, 4)
    with pytest.raises(ValueError) as info:
        call(cell)
    for f in fragments:
        assert f in str(info.value), str(info.value)


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="ode_unfolds.*0"):
        LTCCell(3, 4, ode_unfolds=0)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        LTCCell(3, 4, torch.ones(4, 3))
