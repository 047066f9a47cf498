"""SparseLinear: the (in, out) mask convention, masked weights, gradients and optimiser
steps, validation, and the no-grad weight cache."""

from __future__ import annotations

import pytest
import torch
from liquid_reference import random_signed_mask

from velora_ens.models.lnn import SparseLinear
from velora_ens.wiring import Wiring


def test_forward_matches_explicit_masked_matmul():
    mask = random_signed_mask(5, 3)
    layer = SparseLinear(5, 3, mask)
    with torch.no_grad():
        layer.weight.normal_()  # masked-out entries become non-zero in the raw weight
        layer.bias.normal_()
    x = torch.randn(7, 5)
    # weight[j, i] connects input i to output j iff mask[i, j] != 0 (polarity ignored)
    expected = torch.zeros(7, 3)
    for j in range(3):
        for i in range(5):
            if mask[i, j] != 0:
                expected[:, j] += x[:, i] * layer.weight[j, i]
        expected[:, j] += layer.bias[j]
    torch.testing.assert_close(layer(x), expected)
    eff = layer.masked_weight()
    assert tuple(eff.shape) == (3, 5)
    assert torch.equal(eff == 0, (mask.t() == 0) | (layer.weight == 0))
    # leading dimensions are supported like nn.Linear
    x3 = torch.randn(2, 4, 5)
    torch.testing.assert_close(layer(x3), torch.stack([layer(x3[0]), layer(x3[1])]))


def test_init_zeroes_masked_weights():
    masks, counts = Wiring(6, 12, 2, seed=1).data()
    layer = SparseLinear(6, counts.inter, masks.inter)
    off = masks.inter.t() == 0
    assert torch.equal(layer.weight[off], torch.zeros(int(off.sum())))
    assert (layer.weight[masks.inter.t() != 0] != 0).all()


@pytest.mark.parametrize("opt_name", ["adam", "adamw", "sgd_momentum"])
def test_masked_weights_zero_grad_and_stay_zero(opt_name):
    mask = random_signed_mask(6, 4, p_zero=0.5)
    layer = SparseLinear(6, 4, mask)
    off = mask.t() == 0
    assert off.any()
    opt = {
        "adam": lambda p: torch.optim.Adam(p, lr=0.1),
        "adamw": lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.5),
        "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    }[opt_name](layer.parameters())
    for _ in range(5):
        x = torch.randn(8, 6)
        loss = (layer(x) ** 2).sum() + layer(x).sum()
        opt.zero_grad()
        loss.backward()
        assert torch.equal(layer.weight.grad[off], torch.zeros(int(off.sum())))
        assert layer.weight.grad[~off].abs().sum() > 0
        opt.step()
        assert torch.equal(layer.masked_weight()[off], torch.zeros(int(off.sum())))
        # the raw masked entries started at zero and get zero gradient: they stay zero
        assert torch.equal(layer.weight.detach()[off], torch.zeros(int(off.sum())))


def test_raw_masked_entries_do_not_leak():
    """Even if the raw masked entries hold values (e.g. loaded), they have no effect
    and receive no gradient."""
    mask = random_signed_mask(6, 4, p_zero=0.5)
    layer = SparseLinear(6, 4, mask)
    off = mask.t() == 0
    x = torch.randn(3, 6)
    y0 = layer(x).detach()
    with torch.no_grad():
        layer.weight[off] = 5.0
    torch.testing.assert_close(layer(x), y0)
    layer(x).sum().backward()
    assert torch.equal(layer.weight.grad[off], torch.zeros(int(off.sum())))


@pytest.mark.parametrize(
    "mask,fragments",
    [
        (torch.ones(4, 5), ["(4, 5)", "(5, 4)"]),
        (torch.ones(5, 4) * 2, ["2"]),
        (torch.full((5, 4), 0.5), ["0.5"]),
    ],
)
def test_bad_mask_raises(mask, fragments):
    with pytest.raises(ValueError) as info:
        SparseLinear(5, 4, mask)
    for f in fragments:
        assert f in str(info.value)


def test_wrong_feature_count_raises():
    layer = SparseLinear(5, 4, torch.ones(5, 4))
    with pytest.raises(ValueError) as info:
        layer(torch.randn(2, 6))
    assert "5" in str(info.value) and "(2, 6)" in str(info.value)


def test_no_grad_cache_follows_optimizer_and_load_state_dict():
    mask = random_signed_mask(5, 3)
    layer = SparseLinear(5, 3, mask)
    x = torch.randn(4, 5)
    with torch.no_grad():
        y0 = layer(x)
    torch.testing.assert_close(y0, layer(x).detach())
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(x).sum().backward()
    opt.step()
    with torch.no_grad():
        y1 = layer(x)
    assert not torch.allclose(y1, y0)
    torch.testing.assert_close(y1, layer(x).detach())
    # load_state_dict restores the old weights and the cached product follows
    other = SparseLinear(5, 3, mask)
    with torch.no_grad():
        layer(x)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), other(x))


def test_no_grad_cache_follows_in_place_update_through_data():
    """Polyak/target-network updates are often written ``p.data.copy_(...)``; that
    does not bump the parameter's version counter, but the layer must still use the
    new weights under ``torch.no_grad``."""
    mask = random_signed_mask(5, 3)
    layer = SparseLinear(5, 3, mask)
    x = torch.randn(4, 5)
    with torch.no_grad():
        y0 = layer(x)
    layer.weight.data.mul_(2.0)
    layer.bias.data.zero_()
    expected = x @ (layer.weight.detach() * mask.t().abs()).t()
    with torch.no_grad():
        y1 = layer(x)
    assert not torch.allclose(y1, y0)
    torch.testing.assert_close(y1, expected)
