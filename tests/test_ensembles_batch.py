"""BatchEnsemble layers and transformation against explicit per-member computations
with weights ``W * (s r^T)``; the plain ensemble transformation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.ensembles import (
    BatchEnsembleConv2d,
    BatchEnsembleLinear,
    WithFeatures,
    batchensemble,
    ensemble,
    ensemble_outputs,
    fast_weight_param_groups,
)
from velora_ens.models import LiquidNCPNetwork


def member_weight(layer, i: int) -> torch.Tensor:
    """W_i = W * (s_i r_i^T) in the (out, in, ...) layout."""
    rank1 = torch.outer(layer.s[i], layer.r[i])
    return layer.weight * rank1.view(rank1.shape + (1,) * (layer.weight.dim() - 2))


def test_linear_equals_explicit_member_weights():
    layer = BatchEnsembleLinear(nn.Linear(6, 3), num_members=4)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(4 * 5, 6)
    y = layer(x)
    for i in range(4):
        rows = slice(5 * i, 5 * (i + 1))
        torch.testing.assert_close(y[rows], F.linear(x[rows], member_weight(layer, i),
                                                     layer.bias[i]))


def test_linear_accepts_extra_dimensions():
    layer = BatchEnsembleLinear(nn.Linear(6, 3), num_members=2)
    x = torch.randn(2 * 3, 7, 6)
    y = layer(x)
    assert y.shape == (6, 7, 3)
    torch.testing.assert_close(y[3:], F.linear(x[3:], member_weight(layer, 1), layer.bias[1]))


def test_conv2d_equals_explicit_member_weights():
    base = nn.Conv2d(3, 5, 3, padding=1, stride=2)
    layer = BatchEnsembleConv2d(base, num_members=3)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3 * 2, 3, 8, 8)
    y = layer(x)
    for i in range(3):
        rows = slice(2 * i, 2 * (i + 1))
        torch.testing.assert_close(
            y[rows], F.conv2d(x[rows], member_weight(layer, i), layer.bias[i], stride=2,
                              padding=1), atol=1e-5, rtol=1e-5)


def test_use_base_weights_and_inits():
    base = nn.Linear(400, 300)
    layer = BatchEnsembleLinear(base, num_members=4, use_base_weights=True)
    assert torch.equal(layer.weight, base.weight)
    assert torch.equal(layer.bias, base.bias.expand(4, -1))
    assert layer.r.mean().item() == pytest.approx(1.0, abs=0.03)
    assert layer.r.std().item() == pytest.approx(0.5, abs=0.03)
    assert layer.s.std().item() == pytest.approx(0.5, abs=0.05)
    signs = BatchEnsembleLinear(base, num_members=4, init="random_sign")
    assert set(signs.r.unique().tolist()) == {-1.0, 1.0}
    assert set(signs.s.unique().tolist()) == {-1.0, 1.0}
    fresh = BatchEnsembleLinear(base, num_members=2)
    assert not torch.equal(fresh.weight, base.weight) and bool((fresh.bias == 0).all())


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x.view(x.size(0), -1))


@pytest.mark.parametrize("train", [True, False])
def test_batchensemble_model_is_member_major_and_matches_explicit(train):
    base = MLP()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = batchensemble(base, num_members=3)
    model.train(train)
    assert type(model) is MLP
    assert isinstance(base.net[0], nn.Linear) and isinstance(model.net[0], BatchEnsembleLinear)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    x = torch.randn(5, 3, 4)
    y = model(x)
    assert y.shape == (3, 5, 3)
    l1, l2 = model.net[0], model.net[2]
    flat = x.view(5, -1)
    for i in range(3):
        h = F.relu(F.linear(flat, member_weight(l1, i), l1.bias[i]))
        torch.testing.assert_close(y[i], F.linear(h, member_weight(l2, i), l2.bias[i]))
    assert int(model.state_dict()["num_members"]) == 3


def test_batchensemble_of_a_conv_net_and_of_a_bare_layer():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    assert batchensemble(conv, 4)(torch.randn(2, 3, 8, 8)).shape == (4, 2, 2)
    assert batchensemble(nn.Linear(3, 2), 5)(torch.randn(7, 3)).shape == (5, 7, 2)


def test_batchensemble_head_on_a_liquid_network():
    net = LiquidNCPNetwork(4, 10, 6, seed=0)
    model = WithFeatures(net, batchensemble(nn.Sequential(nn.Linear(6, 8), nn.Tanh(),
                                                          nn.Linear(8, 1)), 4))
    y = model(torch.randn(5, 4))
    assert y.shape == (4, 5, 1)
    y.pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_members must be an integer >= 1, got 0"):
        batchensemble(MLP(), num_members=0)
    with pytest.raises(ValueError, match="init must be one of"):
        batchensemble(MLP(), 2, init="uniform")
    with pytest.raises(ValueError, match="r_std must be > 0"):
        BatchEnsembleLinear(nn.Linear(2, 2), 2, r_std=0.0)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        batchensemble(nn.ReLU(), 2)
    with pytest.raises(ValueError, match="3 \\* B"):
        BatchEnsembleLinear(nn.Linear(2, 2), 3)(torch.randn(4, 2))
    with pytest.raises(ValueError, match="num_members must be an integer >= 1"):
        ensemble(MLP(), 0)


def test_fast_weights_get_the_lower_learning_rate():
    model = batchensemble(MLP(), 2)
    groups = fast_weight_param_groups(model, lr=0.1, fast_weight_lr_multiplier=0.5)
    opt = torch.optim.SGD(groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(4, 12)).pow(2).sum().backward()
    opt.step()
    for name, p in model.named_parameters():
        fast = name.rsplit(".", 1)[-1] in ("r", "s", "bias")
        lr = 0.05 if fast else 0.1
        torch.testing.assert_close(p.detach(), before[name] - lr * p.grad)


def test_ensemble_copies_are_reinitialised_and_the_base_untouched():
    base = MLP()
    before = base.net[0].weight.clone()
    members = ensemble(base, num_members=3)
    assert isinstance(members, nn.ModuleList) and len(members) == 3
    assert all(type(m) is MLP for m in members)
    assert torch.equal(base.net[0].weight, before)
    weights = [m.net[0].weight for m in members] + [before]
    assert all(not torch.equal(a, b) for i, a in enumerate(weights) for b in weights[i + 1:])
    same = ensemble(base, 2, reset_params=False)
    assert torch.equal(same[1].net[0].weight, before)
    x = torch.randn(4, 12)
    out = ensemble_outputs(members, x)
    assert out.shape == (3, 4, 3)
    torch.testing.assert_close(out[1], members[1](x))


# --- convolutions: one kernel W * (s_i r_i^T) per member ---------------------------------
def rank1_reference(layer: BatchEnsembleConv2d, x: torch.Tensor) -> torch.Tensor:
    """The paper's vectorised form ``s * conv(x * r) + bias`` with member-major rows."""
    b = x.shape[0] // layer.num_members
    r = layer.r.repeat_interleave(b, 0)[:, :, None, None]
    s = layer.s.repeat_interleave(b, 0)[:, :, None, None]
    y = F.conv2d(x * r, layer.weight, None, **layer.conv_kwargs) * s
    if layer.bias is not None:
        y = y + layer.bias.repeat_interleave(b, 0)[:, :, None, None]
    return y


@pytest.mark.parametrize("groups, bias", [(1, True), (2, True), (2, False)])
def test_conv2d_values_and_gradients_match_the_rank1_form(groups, bias):
    torch.manual_seed(0)
    base = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=groups, bias=bias)
    layer = BatchEnsembleConv2d(base, num_members=3)
    if bias:
        with torch.no_grad():
            layer.bias.normal_()
    x = torch.randn(3 * 2, 4, 7, 7, requires_grad=True)
    g = torch.randn(3 * 2, 6, 7, 7)
    params = [x] + list(layer.parameters())
    grads = torch.autograd.grad((layer(x) * g).sum(), params)
    expected = torch.autograd.grad((rank1_reference(layer, x) * g).sum(), params)
    torch.testing.assert_close(layer(x), rank1_reference(layer, x), atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    if groups == 1:  # and each member is a plain conv with its own kernel
        for i in range(3):
            rows = slice(2 * i, 2 * (i + 1))
            torch.testing.assert_close(
                layer(x)[rows], F.conv2d(x[rows], member_weight(layer, i),
                                         layer.bias[i] if bias else None, padding=2,
                                         dilation=2), atol=1e-5, rtol=1e-5)


def test_conv2d_grouped_member_weights_scale_each_groups_own_input_channels():
    layer = BatchEnsembleConv2d(nn.Conv2d(4, 6, 1, groups=2), num_members=2)
    w = layer.member_weights()  # (E, C_out, C_in / groups, 1, 1)
    for i in range(2):
        for o in range(6):
            group_inputs = slice(0, 2) if o < 3 else slice(2, 4)
            torch.testing.assert_close(
                w[i, o, :, 0, 0], layer.weight[o, :, 0, 0] * layer.s[i, o] *
                layer.r[i, group_inputs])


def test_conv2d_keeps_channels_last_and_refuses_wrong_channels():
    layer = BatchEnsembleConv2d(nn.Conv2d(3, 5, 3, padding=1), num_members=2)
    x = torch.randn(4, 3, 6, 6)
    y = layer(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, layer(x))
    with pytest.raises(ValueError, match="expects 3 input channels, got 4"):
        layer(torch.randn(4, 4, 6, 6))
    with pytest.raises(ValueError, match="expects \\(E\\*B, C, H, W\\)"):
        layer(torch.randn(4, 3, 6))


# --- members_per_pass: the same function, member groups in separate passes --------------
class ConvNet(nn.Module):
    """Conv -> ReLU -> pool -> Linear, returning (logits, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x, scale: float = 1.0):
        h = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1) * scale
        return self.fc(h), h


@pytest.mark.parametrize("k", [1, 2, 3])
def test_members_per_pass_is_the_same_function_with_the_same_gradients(k):
    torch.manual_seed(0)
    tiled = batchensemble(ConvNet(), 4)
    passes = batchensemble(ConvNet(), 4, members_per_pass=k)
    passes.load_state_dict(tiled.state_dict())
    x = torch.randn(5, 3, 6, 6)
    (ya, ha), (yb, hb) = tiled(x, scale=2.0), passes(x, scale=2.0)
    assert ya.shape == yb.shape == (4, 5, 2) and hb.shape == (4, 5, 4)
    torch.testing.assert_close(yb, ya)
    torch.testing.assert_close(hb, ha)
    target = torch.randn(4, 5, 2)
    ga = torch.autograd.grad((ya * target).sum(), list(tiled.parameters()))
    gb = torch.autograd.grad((yb * target).sum(), list(passes.parameters()))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(b, a)
    assert all(m._active is None for m in passes.modules()
               if isinstance(m, (BatchEnsembleLinear, BatchEnsembleConv2d)))


def test_members_per_pass_copies_run_their_own_weights():
    import copy

    model = batchensemble(ConvNet(), 2, members_per_pass=1)
    twin = copy.deepcopy(model)
    x = torch.randn(3, 3, 6, 6)
    before = model(x)[0]
    with torch.no_grad():
        twin.fc.weight.mul_(2.0)
    torch.testing.assert_close(model(x)[0], before)
    assert not torch.allclose(twin(x)[0], before)


def test_members_per_pass_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="members_per_pass must be an integer >= 1, got 0"):
        batchensemble(ConvNet(), 2, members_per_pass=0)
    with pytest.raises(ValueError, match="members_per_pass must be in \\[1, num_members = 2\\]"):
        batchensemble(ConvNet(), 2, members_per_pass=3)
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="batch statistics of 1 \\(BatchNorm2d\\)"):
        batchensemble(bn, 4, members_per_pass=2)
    assert batchensemble(bn, 4, members_per_pass=4)(torch.randn(2, 3, 5, 5)).shape[:2] == (4, 2)

    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x).sum()

    model = batchensemble(Scalar(), 2, members_per_pass=1)
    with pytest.raises(ValueError, match="every output tensor must have"):
        model(torch.randn(4, 3))
    assert all(m._active is None for m in model.modules() if isinstance(m, BatchEnsembleLinear))
