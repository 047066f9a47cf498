"""The shared time loop (velora_ens.models.lnn.loop.unroll) and the two cells that run it:
values and gradients equal, bit for bit, to a loop written out here by hand, with
per-sample elapsed times and episode resets."""

from __future__ import annotations

import pytest
import torch
from liquid_reference import random_signed_mask, randomize_

from velora_ens.models.lnn import LTCCell, NCPLiquidCell
from velora_ens.models.lnn.loop import unroll

F64 = torch.float64
B, L, N_IN, HID = 3, 7, 4, 5


def _data(seed=0, *, steps=L):
    g = torch.Generator().manual_seed(seed)
    lead = (B,) if steps is None else (B, steps)
    x = torch.randn(*lead, N_IN, generator=g, dtype=F64)
    h0 = torch.randn(B, HID, generator=g, dtype=F64)
    dt = torch.rand(*lead, 1, generator=g, dtype=F64) * 2.0
    starts = torch.zeros(*lead, dtype=torch.bool)
    if steps is None:
        starts[1] = True
    else:
        starts[0, 0] = starts[1, 3] = starts[2, 6] = starts[0, 4] = True
    return x, h0, dt, starts


def _run(module, fn, x, h0, dt, starts):
    """Outputs of ``fn(x, h0, dt, starts) -> (y, h)`` and the gradients of a loss on both
    with respect to ``x``, ``h0``, ``dt`` and the parameters of ``module``."""
    x, h0, dt = (t.clone().requires_grad_(True) for t in (x, h0, dt))
    module.zero_grad()
    y, h = fn(x, h0, dt, starts)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    ((y * w).sum() + (h ** 2).sum()).backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    grads.update(x=x.grad, h0=h0.grad, dt=dt.grad)
    return y.detach(), h.detach(), grads


def _assert_bitwise_equal(ours, theirs):
    y, h, grads = ours
    y_ref, h_ref, grads_ref = theirs
    assert torch.equal(y, y_ref)
    assert torch.equal(h, h_ref)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert torch.equal(grads[name], grads_ref[name]), name


# ------------------------------------------------------------------ unroll itself
def _toy_step(drive, h, dt):
    a, b = drive
    out = torch.tanh(a + 0.5 * h) * b
    return out if dt is None else out * dt


@pytest.mark.parametrize("time_dim", [0, 1])
@pytest.mark.parametrize("with_dt", [True, False])
@pytest.mark.parametrize("with_keep", [True, False])
def test_unroll_matches_hand_loop(time_dim, with_dt, with_keep):
    g = torch.Generator().manual_seed(1)
    shape = (L, B, HID) if time_dim == 0 else (B, L, HID)
    a, b = torch.randn(*shape, generator=g, dtype=F64), torch.randn(*shape, generator=g, dtype=F64)
    dt = torch.rand(*shape[:2], 1, generator=g, dtype=F64) if with_dt else None
    keep = (torch.rand(*shape[:2], 1, generator=g) > 0.3).to(F64) if with_keep else None
    h0 = torch.randn(B, HID, generator=g, dtype=F64)
    states, last = unroll(_toy_step, (a, b), h0, dt, keep, time_dim=time_dim)
    assert tuple(states.shape) == shape
    h, out = h0, []
    for t in range(L):
        at, bt = a.select(time_dim, t), b.select(time_dim, t)
        if keep is not None:
            h = h * keep.select(time_dim, t)
        h = _toy_step((at, bt), h, None if dt is None else dt.select(time_dim, t))
        out.append(h)
    assert torch.equal(states, torch.stack(out, time_dim))
    assert torch.equal(last, h)
    assert torch.equal(last, states.select(time_dim, L - 1))


def test_unroll_one_step_resets_before_stepping():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(B, HID, generator=g), torch.randn(B, HID, generator=g)
    h0 = torch.randn(B, HID, generator=g)
    keep = torch.tensor([[1.0], [0.0], [1.0]])
    y, h = unroll(_toy_step, (a, b), h0, None, keep)
    assert y is h
    assert torch.equal(h, _toy_step((a, b), h0 * keep, None))
    assert torch.equal(h[1], _toy_step((a[1:2], b[1:2]), torch.zeros(1, HID), None)[0])


# ------------------------------------------------------------------ the cells
def _cfc(mode):
    g = torch.Generator().manual_seed(3)
    cell = NCPLiquidCell(N_IN, HID, random_signed_mask(N_IN, HID, generator=g),
                         recurrent_mask=random_signed_mask(HID, HID, 0.6, generator=g),
                         mode=mode, dtype=F64)
    randomize_(cell)
    return cell


def _ltc():
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    return LTCCell(N_IN, HID, random_signed_mask(N_IN, HID, generator=g),
                   recurrent_mask=random_signed_mask(HID, HID, 0.6, generator=g),
                   ode_unfolds=3, dtype=F64)


def _keep(starts):
    return (starts == 0).to(F64).unsqueeze(-1)


def _cfc_hand_loop(cell):
    """The CfC cell's plain loop written out: time-major projection, reset, step."""
    def run(x, h, dt, starts):
        w_hh = cell.effective_recurrent_weight().t()
        u = cell.project_input(x.transpose(0, 1))
        dt_t, keep_t = dt.transpose(0, 1).unbind(0), _keep(starts).transpose(0, 1).unbind(0)
        out = []
        for t, u_t in enumerate(u.unbind(0)):
            h = h * keep_t[t]
            h = cell.step(u_t, h, w_hh, dt_t[t])
            out.append(h)
        states = torch.stack(out)
        return states.transpose(0, 1), states[-1]
    return run


def _ltc_hand_loop(cell):
    """The LTC cell's loop written out: sensory drive for every step, reset, step."""
    def run(x, v, dt, starts):
        num, den = cell.sensory_drive(x)
        num_t, den_t = num.unbind(1), den.unbind(1)
        dt_t, keep_t = dt.unbind(1), _keep(starts).unbind(1)
        out = []
        for t in range(x.shape[1]):
            v = v * keep_t[t]
            v = cell.step(num_t[t], den_t[t], v, dt_t[t])
            out.append(v)
        return torch.stack(out, dim=1), v
    return run


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure", "carry"])
def test_cfc_loop_equals_hand_loop_bit_for_bit(mode):
    cell = _cfc(mode)
    data = _data()

    def unfused(x, h, dt, starts):
        return cell(x, h, dt, starts, fused=False)
    _assert_bitwise_equal(_run(cell, unfused, *data), _run(cell, _cfc_hand_loop(cell), *data))


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure", "carry"])
def test_cfc_one_step_equals_hand_step_bit_for_bit(mode):
    cell = _cfc(mode)

    def hand(x, h, dt, starts):
        h = h * _keep(starts)
        h = cell.step(cell.project_input(x), h, cell.effective_recurrent_weight().t(), dt)
        return h, h
    data = _data(steps=None)
    _assert_bitwise_equal(_run(cell, cell, *data), _run(cell, hand, *data))


def test_ltc_loop_equals_hand_loop_bit_for_bit():
    cell = _ltc()
    data = _data()
    _assert_bitwise_equal(_run(cell, cell, *data), _run(cell, _ltc_hand_loop(cell), *data))


def test_ltc_one_step_equals_hand_step_bit_for_bit():
    cell = _ltc()

    def hand(x, v, dt, starts):
        num, den = cell.sensory_drive(x)
        v = cell.step(num, den, v * _keep(starts), dt)
        return v, v
    data = _data(steps=None)
    _assert_bitwise_equal(_run(cell, cell, *data), _run(cell, hand, *data))


def test_resets_cut_the_gradient_to_the_initial_state():
    """Sample 0 restarts at step 0 in ``_data``: its initial state gets no gradient, in
    both cells; the others do."""
    for cell in (_cfc("default"), _ltc()):
        _, _, grads = _run(cell, cell, *_data())
        assert (grads["h0"][0] == 0).all()
        assert (grads["h0"][1:] != 0).any()
