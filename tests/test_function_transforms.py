"""The CfC sequence path under what its fused scan cannot serve: double backward,
``torch.func`` transforms (vmap, grad, jvp), forward-mode AD and
``torch.compile(fullgraph=True)``. Each is compared with an independent computation:
the unfused loop (``fused=False``), per-sample runs, finite differences or eager mode.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import forward_ad
from torch.func import functional_call

from velora_ens.models import LiquidNCPNetwork
from velora_ens.models.lnn.scan import cfc_scan

F64 = torch.float64


def network(mode: str = "default", mixed_memory: bool = False) -> LiquidNCPNetwork:
    torch.manual_seed(0)  # the weights (the seed fixes only the wiring)
    return LiquidNCPNetwork(4, 12, 3, mode=mode, seed=0, dtype=F64, mixed_memory=mixed_memory)


def data(batch: int = 3, steps: int = 6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, 4, generator=g, dtype=F64)
    dt = torch.rand(batch, steps, generator=g, dtype=F64) + 0.3
    starts = torch.zeros(batch, steps)
    starts[1, 2] = 1.0
    return x, dt, starts


@pytest.mark.parametrize("mode", ["default", "no_gate", "carry"])
def test_double_backward_equals_the_unfused_loop(mode):
    """A gradient penalty (gradient of a gradient norm) through the fused scan; it used to
    raise "functions with out=... arguments don't support automatic differentiation"."""
    x, dt, starts = data()

    net = network(mode)

    def penalty_grads(fused: bool) -> list[torch.Tensor]:
        net.command.fused = fused
        net.zero_grad(set_to_none=True)
        xs = x.clone().requires_grad_(True)
        y, h = net(xs, dt=dt, episode_start=starts)
        params = [xs, *net.parameters()]
        first = torch.autograd.grad(y.square().sum() + h.sum(), params, create_graph=True)
        sum(g.square().sum() for g in first).backward()
        return [xs.grad] + [p.grad for p in net.parameters()]

    ours, reference = penalty_grads(True), penalty_grads(False)
    assert any(g.abs().max() > 0 for g in ours)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["default", "no_gate", "carry"])
def test_scan_second_derivatives_pass_gradgradcheck(mode):
    """The scan's gradients of gradients against finite differences, resets included."""
    g = torch.Generator().manual_seed(1)
    L, B, H = 4, 2, 3
    u = torch.randn(L, B, 4 * H, generator=g, dtype=F64, requires_grad=True)
    w_hh = (0.5 * torch.randn(H, 4 * H, generator=g, dtype=F64)).requires_grad_(True)
    h0 = torch.randn(B, H, generator=g, dtype=F64, requires_grad=True)
    dt = torch.rand(L, B, 1, generator=g, dtype=F64) + 0.5
    keep = torch.ones(L, B, 1, dtype=F64)
    keep[2, 1] = 0.0
    assert torch.autograd.gradgradcheck(
        lambda a, b, c: cfc_scan(a, b, c, dt, keep, mode), (u, w_hh, h0))


def test_first_order_gradients_do_not_change_with_create_graph():
    """``create_graph=True`` takes the differentiable backward; its first-order values
    equal the hand-written backward's."""
    x, dt, starts = data()
    net = network()
    plain = torch.autograd.grad(net(x, dt=dt, episode_start=starts)[0].sum(),
                                list(net.parameters()))
    graphed = torch.autograd.grad(net(x, dt=dt, episode_start=starts)[0].sum(),
                                  list(net.parameters()), create_graph=True)
    for a, b in zip(graphed, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mixed_memory", [False, True], ids=["cfc", "mixed-memory"])
def test_batched_gradients_equal_row_by_row_gradients(mixed_memory):
    """``jacobian(vectorize=True)`` runs the backward under vmap (``is_grads_batched``);
    the row-by-row Jacobian takes the hand-written backward once per output (the CfC
    scan's, or mixed memory's)."""
    net = network(mixed_memory=mixed_memory)
    x, dt, starts = data(batch=2, steps=4)

    def f(inp: torch.Tensor) -> torch.Tensor:
        return net(inp, dt=dt, episode_start=starts)[0]

    batched = torch.autograd.functional.jacobian(f, x, vectorize=True)
    rows = torch.autograd.functional.jacobian(f, x)
    torch.testing.assert_close(batched, rows, rtol=1e-12, atol=1e-12)


def test_vmap_of_grad_gives_per_sample_gradients():
    """``vmap(grad(loss))`` over sequences equals one backward per sample."""
    net = network()
    x, _, _ = data(batch=4)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        y, h = functional_call(net, p, (xi.unsqueeze(0),))
        return y.square().sum() + h.sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(x.shape[0]):
        net.zero_grad()
        y, h = net(x[i:i + 1])
        (y.square().sum() + h.sum()).backward()
        for name, p in net.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, rtol=1e-10, atol=1e-12)


def test_vmap_over_sequences_with_dt_equals_the_batched_call():
    net = network()
    x, dt, _ = data()
    with torch.no_grad():
        y_ref, h_ref = net(x, dt=dt)
    y, h = torch.func.vmap(lambda xi, di: net(xi.unsqueeze(0), dt=di.unsqueeze(0)))(x, dt)
    torch.testing.assert_close(y.squeeze(1), y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h.squeeze(1), h_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="finite, non-negative elapsed times"):
        torch.func.vmap(lambda xi, di: net(xi.unsqueeze(0), dt=di.unsqueeze(0)))(x, -dt)


def test_jvp_and_forward_ad_match_finite_differences():
    net = network()
    x, dt, starts = data()
    v = torch.randn_like(x)

    def f(inp: torch.Tensor) -> torch.Tensor:
        return net(inp, dt=dt, episode_start=starts)[0]

    eps = 1e-6
    with torch.no_grad():
        fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    _, tangent = torch.func.jvp(f, (x,), (v,))
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)
    with forward_ad.dual_level():
        out = f(forward_ad.make_dual(x, v))
        torch.testing.assert_close(forward_ad.unpack_dual(out).tangent, fd, rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("timed", [False, True], ids=["plain", "dt-resets"])
def test_compile_fullgraph_matches_eager(timed):
    """``torch.compile(fullgraph=True)`` used to stop at the scan ("non-contiguous out=
    tensor") and at the check of ``dt``'s values; the graph now holds the loop and checks
    ``dt`` when it runs. ``aot_eager``: dynamo and AOT autograd without a C++ compiler."""
    net = LiquidNCPNetwork(4, 12, 3, seed=0)
    x, dt, starts = (t.float() for t in data())
    kw = {"dt": dt, "episode_start": starts} if timed else {}
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    y_c, h_c = compiled(x, **kw)
    (y_c.square().sum() + h_c.sum()).backward()
    grads_c = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    y, h = net(x, **kw)
    (y.square().sum() + h.sum()).backward()
    torch.testing.assert_close(y_c, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_c, h, rtol=1e-5, atol=1e-6)
    for a, p in zip(grads_c, net.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    if timed:
        with pytest.raises(RuntimeError, match="finite, non-negative elapsed times"):
            compiled(x, dt=-dt, episode_start=starts)
