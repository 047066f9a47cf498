"""Liquid networks under ``torch.autocast``: bfloat16 on the CPU (every CfC mode and LTC,
sequences and single steps, training and inference) against a float32 run of the same
network, the same on CUDA with float16 where a GPU is present, and the float32 path
still running the fused scan.

Tolerances: bfloat16 keeps 8 significant bits (relative rounding 2**-9 ~ 2e-3). Outputs
must match float32 to a relative error (norm of the difference over the norm) of 1e-2;
every parameter's gradient, back-propagated through 20 steps, to 5e-2. A path that
dropped a term, ignored ``dt`` or the resets, or cut the gradient is off by O(1).
"""

from __future__ import annotations

import pytest
import torch

from velora_ens.models import LiquidNCPNetwork

OUT_TOL, GRAD_TOL = 1e-2, 5e-2
CELLS = [("cfc", "default"), ("cfc", "no_gate"), ("cfc", "pure"), ("cfc", "carry"),
         ("ltc", "default")]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in float64 (Frobenius norms)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def run(net: LiquidNCPNetwork, x: torch.Tensor, kw: dict, amp_dtype: torch.dtype | None):
    """Forward (under autocast when ``amp_dtype``) and backward of a fixed weighted loss;
    returns the output, the last state and every parameter's gradient."""
    net.zero_grad(set_to_none=True)
    device = x.device.type
    with torch.autocast(device, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        y, h = net(x, **kw)
    weights = torch.linspace(-1.0, 1.0, y.numel(), device=x.device).reshape(y.shape)
    ((y.float() * weights).sum() + h.float().square().sum()).backward()
    return y, h, {n: p.grad.clone() for n, p in net.named_parameters()}


def inputs(device: str = "cpu", *, step: bool, resets: bool):
    g = torch.Generator().manual_seed(3)
    B, L = 8, 20
    x = torch.randn(B, L, 4, generator=g)
    dt = torch.rand(B, L, generator=g) + 0.2
    starts = torch.zeros(B, L)
    starts[1, 0] = starts[4, 7] = starts[6, 15] = 1.0
    if step:
        x, dt, starts = x[:, 0], dt[:, 0], starts[:, 0]
    kw = {"dt": dt.to(device), "episode_start": starts.to(device)} if resets else {}
    return x.to(device), kw


def check_against_float32(cell: str, mode: str, step: bool, resets: bool, device: str,
                          amp_dtype: torch.dtype) -> None:
    net = LiquidNCPNetwork(4, 12, 3, cell=cell, mode=mode, seed=0).to(device)
    x, kw = inputs(device, step=step, resets=resets)
    y32, h32, g32 = run(net, x, kw, None)
    y16, h16, g16 = run(net, x, kw, amp_dtype)
    assert y32.dtype == torch.float32
    assert y16.dtype == amp_dtype  # the motor layer's matmul really ran in low precision
    assert rel_err(y16, y32) < OUT_TOL
    assert rel_err(h16, h32) < OUT_TOL
    assert g16.keys() == g32.keys()
    for name, g in g32.items():
        assert g16[name].dtype == torch.float32  # gradients land in the parameters' dtype
        assert torch.isfinite(g16[name]).all(), name
        if g.abs().max() > 0:
            assert rel_err(g16[name], g) < GRAD_TOL, (name, rel_err(g16[name], g))
        else:
            assert torch.equal(g16[name], g), name  # masked-out weights stay untouched


def test_the_issue_reproduction_trains_under_bfloat16():
    """The report: a bfloat16-autocast sequence forward, then backward, raised
    ``expected m1 and m2 to have the same dtype`` inside the fused scan."""
    net = LiquidNCPNetwork(4, 12, 3, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = net(torch.randn(8, 20, 4))
    y.float().sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("cell, mode", CELLS)
@pytest.mark.parametrize("step", [False, True], ids=["sequence", "step"])
@pytest.mark.parametrize("resets", [False, True], ids=["plain", "dt-resets"])
def test_bfloat16_autocast_matches_float32_on_cpu(cell, mode, step, resets):
    check_against_float32(cell, mode, step, resets, "cpu", torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cell, mode", CELLS)
@pytest.mark.parametrize("step", [False, True], ids=["sequence", "step"])
def test_float16_autocast_matches_float32_on_cuda(cell, mode, step):
    check_against_float32(cell, mode, step, True, "cuda", torch.float16)


@pytest.mark.parametrize("cell, mode", CELLS)
def test_inference_under_autocast_matches_float32(cell, mode):
    """Without gradients: sequences (the scan's no-grad loop is skipped under autocast as
    well) and the lean single-step path (``x`` of one step with an explicit state)."""
    net = LiquidNCPNetwork(4, 12, 3, cell=cell, mode=mode, seed=1)
    x, kw = inputs(step=False, resets=True)
    h0 = torch.randn(8, net.hidden_size)
    with torch.no_grad():
        ref_seq = net(x, h0, **kw)
        ref_step = net(x[:, 0], h0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            seq = net(x, h0, **kw)
            one = net(x[:, 0], h0)
    for ours, ref in zip((*seq, *one), (*ref_seq, *ref_step), strict=True):
        assert rel_err(ours, ref) < OUT_TOL


def test_float32_sequences_still_take_the_fused_scan():
    """The plain float32 path is untouched: its graph holds the scan's node, and it runs
    the scan again once autocast is switched off inside an autocast region."""
    net = LiquidNCPNetwork(4, 12, 3, seed=0)
    x = torch.randn(2, 5, 4)

    def graph_names(y: torch.Tensor) -> set[str]:
        """Class names of every node of ``y``'s autograd graph."""
        seen, todo = {}, [y.grad_fn]
        while todo:
            fn = todo.pop()
            if fn is not None and id(fn) not in seen:
                seen[id(fn)] = type(fn).__name__
                todo.extend(f for f, _ in fn.next_functions)
        return set(seen.values())

    assert any("CfCScan" in n for n in graph_names(net(x)[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not any("CfCScan" in n for n in graph_names(net(x)[0]))
        with torch.autocast("cpu", enabled=False):
            assert any("CfCScan" in n for n in graph_names(net(x)[0]))
