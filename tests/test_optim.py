"""The lean Adam step gives torch's ``Adam.step`` results bit for bit."""

from __future__ import annotations

import pytest
import torch

from agents.common.optim import clip_grad_norm, fused_adam_step, zero_grad


def _problem(seed: int) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """Parameters in three groups and the fixed data of a small least-squares loss."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=g))
              for shape in ((5, 3), (3,), (4, 4), (4,), ())]
    data = [torch.randn(7, 5, generator=g), torch.randn(7, 4, generator=g)]
    return params, data


def _loss(params: list[torch.Tensor], data: list[torch.Tensor], step: int) -> torch.Tensor:
    w1, b1, w2, b2, scale = params
    x, y = data
    hidden = torch.tanh(x @ w1 + b1)
    loss = ((hidden @ w1.t()[:, :4] @ w2 + b2 - y) ** 2).mean() + scale.exp() * 0.1
    if step % 3 == 2:  # leave w2 without a gradient on some steps (it must not move)
        loss = ((torch.tanh(x @ w1 + b1) - 0.5) ** 2).mean() + scale.exp() * 0.1
    return loss


def _train(step_fn, steps: int = 12, fused: bool = True, lrs=(1e-2, 1e-2, 1e-2)):
    params, data = _problem(0)
    opt = torch.optim.Adam([{"params": params[:2]}, {"params": params[2:4]},
                            {"params": params[4:]}], lr=1e-2, fused=fused)
    for group, lr in zip(opt.param_groups, lrs, strict=True):
        group["lr"] = lr
    for step in range(steps):
        zero_grad(params)
        _loss(params, data, step).backward()
        if step == 7:  # a learning-rate schedule changes every group's rate
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.5
        step_fn(opt)
    return params, opt


def _assert_same(a, b) -> None:
    (pa, oa), (pb, ob) = a, b
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y)
    for x, y in zip(pa, pb, strict=True):
        sa, sb = oa.state[x], ob.state[y]
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[key], sb[key]), key


def test_fused_adam_step_equals_adam_step_bit_for_bit():
    reference = _train(lambda opt: opt.step())
    ours = _train(fused_adam_step)
    _assert_same(reference, ours)
    # the parameters did move, and the one without a gradient on some steps kept its count
    start, _ = _problem(0)
    assert all(not torch.equal(p, q) for p, q in zip(start, reference[0], strict=True))
    assert float(ours[1].state[ours[0][2]]["step"]) == 8  # 12 steps, 4 without a gradient


def test_fused_adam_step_calls_one_kernel_for_all_groups(monkeypatch):
    calls = []
    original = torch._fused_adam_

    def counting(params, *args, **kwargs):
        calls.append(len(params))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", counting)
    _train(fused_adam_step, steps=3)
    # first step: optimizer.step() makes the state (one call per group); then one call
    # over every tensor that has a gradient (w2 and b2 have none on step 2)
    assert calls == [2, 2, 1, 5, 3]


@pytest.mark.parametrize("case", ["different rates", "not fused"])
def test_fused_adam_step_falls_back_where_it_does_not_apply(case):
    kwargs = ({"lrs": (1e-2, 5e-3, 1e-2)} if case == "different rates" else {"fused": False})
    reference = _train(lambda opt: opt.step(), **kwargs)
    ours = _train(fused_adam_step, **kwargs)
    _assert_same(reference, ours)


def test_zero_grad_clears_every_gradient():
    params, data = _problem(1)
    _loss(params, data, 0).backward()
    assert all(p.grad is not None for p in params)
    zero_grad(params)
    assert all(p.grad is None for p in params)


def test_fused_adam_step_refuses_what_is_not_an_optimiser():
    with pytest.raises(ValueError, match="expects a torch.optim.Adam, got list"):
        fused_adam_step([torch.nn.Parameter(torch.zeros(2))])


def test_gradient_clipping_matches_torch_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for scale in (0.01, 100.0):  # below and above max_norm
        ours = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((3, 4), (5,), (2, 2, 2))]
        ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        for a, b in zip(ours, ref, strict=True):
            a.grad = torch.randn(a.shape, generator=g) * scale
            b.grad = a.grad.clone()
        total = clip_grad_norm(ours, 10.0)
        expected = torch.nn.utils.clip_grad_norm_(ref, 10.0, foreach=True)
        assert torch.equal(total, expected)
        for a, b in zip(ours, ref, strict=True):
            assert torch.equal(a.grad, b.grad)
    nograd = [torch.nn.Parameter(torch.zeros(2))]
    assert clip_grad_norm(nograd, 1.0).item() == 0.0
