"""The fused mixed-memory scan (``velora_ens.models.lnn.mixed_scan``) against the plain
autograd loop it replaces (``MixedMemoryCell(..., fused=False)``) and finite differences:
values and gradients of every input with resets and per-step elapsed time, the
differentiable fallback (double backward; batched gradients are in
test_function_transforms.py) and the no-grad path."""

from __future__ import annotations

import pytest
import torch

from velora_ens.models import MixedMemoryCell, NCPLiquidCell
from velora_ens.models.lnn.mixed_scan import mixed_scan

F64 = torch.float64


def data(batch: int = 3, steps: int = 9, features: int = 5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, features, generator=g, dtype=F64)
    dt = torch.rand(batch, steps, generator=g, dtype=F64) + 0.3
    starts = torch.zeros(batch, steps)
    starts[1, min(3, steps - 1)] = starts[-1, steps // 2] = 1.0
    return x, dt, starts


@pytest.mark.parametrize("mode", ["default", "no_gate"])
@pytest.mark.parametrize("with_time", [False, True], ids=["dt=None", "dt"])
@pytest.mark.parametrize("with_resets", [False, True], ids=["no-resets", "resets"])
def test_fused_scan_equals_the_step_by_step_loop(mode, with_time, with_resets):
    torch.manual_seed(0)
    cell = MixedMemoryCell(NCPLiquidCell(5, 7, mode=mode)).double()
    x, dt, starts = data()
    dt, starts = (dt if with_time else None), (starts if with_resets else None)
    g = torch.Generator().manual_seed(1)
    w_seq, w_last = torch.randn(3, 9, 14, generator=g, dtype=F64), torch.randn(3, 14, generator=g,
                                                                             dtype=F64)
    results = []
    for fused in (True, False):
        xs = x.clone().requires_grad_(True)
        h0 = torch.linspace(-1, 1, 3 * 14, dtype=F64).view(3, 14).requires_grad_(True)
        y, last = cell(xs, h0, dt, starts, fused=fused)
        assert ("MixedScan" in type(y.grad_fn.next_functions[0][0]).__name__) == fused
        loss = (y * w_seq).sum() + (last * w_last).sum()
        results.append((y, last, torch.autograd.grad(loss, [xs, h0, *cell.parameters()])))
    (y, last, grads), (y_ref, last_ref, grads_ref) = results
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, last_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads_ref, strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def scan_inputs(mode_steps: int = 4):
    g = torch.Generator().manual_seed(2)
    L, B, H = mode_steps, 2, 3
    ul = torch.randn(L, B, 4 * H, generator=g, dtype=F64, requires_grad=True)
    w_lh = (0.5 * torch.randn(H, 4 * H, generator=g, dtype=F64)).requires_grad_(True)
    u = torch.randn(L, B, 4 * H, generator=g, dtype=F64, requires_grad=True)
    w_hh = (0.5 * torch.randn(H, 4 * H, generator=g, dtype=F64)).requires_grad_(True)
    state = torch.randn(B, 2 * H, generator=g, dtype=F64, requires_grad=True)
    dt = torch.rand(L, B, 1, generator=g, dtype=F64) + 0.5
    keep = torch.ones(L, B, 1, dtype=F64)
    keep[2, 1] = 0.0
    return (ul, w_lh, u, w_hh, state), dt, keep


@pytest.mark.parametrize("mode", ["default", "no_gate"])
def test_scan_gradients_pass_gradcheck_and_gradgradcheck(mode):
    """First derivatives (the hand-written backward) and second derivatives (the
    differentiable fallback) against finite differences, a reset included."""
    inputs, dt, keep = scan_inputs()

    def f(*args: torch.Tensor) -> torch.Tensor:
        return mixed_scan(*args, dt, keep, mode)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_without_gradients_the_forward_loop_gives_the_same_states():
    inputs, dt, keep = scan_inputs(6)
    with_grad = mixed_scan(*inputs, dt, keep, "default")
    with torch.no_grad():
        without = mixed_scan(*inputs, dt, keep, "default")
    assert without.grad_fn is None
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)


def test_an_unknown_mode_is_refused():
    inputs, dt, keep = scan_inputs()
    with pytest.raises(ValueError, match="mode must be one of .*'pure'"):
        mixed_scan(*inputs, dt, keep, "pure")
