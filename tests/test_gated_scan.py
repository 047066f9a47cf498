"""The fused GRU and LSTM scans of the gated baselines (``velora_ens.models.gated_scan``)
against the step-by-step loop of torch's cells (``GatedNetwork.fused = False``) and finite
differences: values and gradients with resets and elapsed time, the differentiable
fallback (double backward) and the no-grad path."""

from __future__ import annotations

import pytest
import torch

from velora_ens.models import GatedNetwork
from velora_ens.models.gated_scan import gated_scan

F64 = torch.float64


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("with_time", [False, True], ids=["dt=None", "dt"])
@pytest.mark.parametrize("with_resets", [False, True], ids=["no-resets", "resets"])
def test_fused_scan_equals_torchs_cells_step_by_step(kind, with_time, with_resets):
    net = GatedNetwork(5, 7, 3, cell=kind, seed=0, dtype=F64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 5, generator=g, dtype=F64)
    dt = torch.rand(3, 9, generator=g, dtype=F64) + 0.5 if with_time else None
    starts = torch.zeros(3, 9)
    starts[1, 3] = starts[2, 6] = 1.0
    starts = starts if with_resets else None
    h0 = torch.randn(3, net.hidden_size, generator=g, dtype=F64)
    w_seq = torch.randn(3, 9, 3, generator=g, dtype=F64)
    w_last = torch.randn(3, net.hidden_size, generator=g, dtype=F64)
    results = []
    for fused in (True, False):
        net.fused = fused
        xs, hs = x.clone().requires_grad_(True), h0.clone().requires_grad_(True)
        y, last = net(xs, hs, dt=dt, episode_start=starts)
        loss = (y * w_seq).sum() + (last * w_last).sum()
        results.append((y, last, torch.autograd.grad(loss, [xs, hs, *net.parameters()]),
                        loss.grad_fn))
    (y, last, grads, _), (y_ref, last_ref, grads_ref, _) = results
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, last_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads_ref, strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_fused_scan_is_what_runs():
    net = GatedNetwork(2, 4, 1, cell="gru", seed=0)
    y, _ = net(torch.randn(2, 5, 2))
    graph, seen = [y.grad_fn], set()
    while graph:
        node = graph.pop()
        if node is not None and node not in seen:
            seen.add(node)
            graph += [n for n, _ in node.next_functions]
    assert any("GatedScan" in type(n).__name__ for n in seen)


def scan_inputs(kind: str):
    g = torch.Generator().manual_seed(1)
    L, B, H = 4, 2, 3
    gates = 3 if kind == "gru" else 4
    state = H if kind == "gru" else 2 * H
    ui = torch.randn(L, B, gates * H, generator=g, dtype=F64, requires_grad=True)
    w_hh = (0.5 * torch.randn(H, gates * H, generator=g, dtype=F64)).requires_grad_(True)
    b_hh = torch.randn(gates * H, generator=g, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, state, generator=g, dtype=F64, requires_grad=True)
    keep = torch.ones(L, B, 1, dtype=F64)
    keep[2, 1] = 0.0
    return (ui, w_hh, b_hh, h0), keep


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_scan_gradients_pass_gradcheck_and_gradgradcheck(kind):
    inputs, keep = scan_inputs(kind)

    def f(*args: torch.Tensor) -> torch.Tensor:
        return gated_scan(kind, *args, keep)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_without_gradients_the_forward_loop_gives_the_same_outputs(kind):
    inputs, keep = scan_inputs(kind)
    with_grad = gated_scan(kind, *inputs, keep)
    with torch.no_grad():
        without = gated_scan(kind, *inputs, keep)
    assert without.grad_fn is None
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)


def test_an_unknown_kind_is_refused():
    inputs, keep = scan_inputs("gru")
    with pytest.raises(ValueError, match="kind must be one of \\('gru', 'lstm'\\), got 'rnn'"):
        gated_scan("rnn", *inputs, keep)
