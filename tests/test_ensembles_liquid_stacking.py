"""Liquid Ensemble over a list of experts of one structure: the stacked (one batched
call) forward and backward equal the experts called one by one; the experts keep their
parameters, state_dict keys and optimisers; anything the stacker does not understand
falls back to the loop; a changed attribute, copy or pickle stays correct."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.ensembles import LiquidEnsembleLayer


class SeedExpert(nn.Module):
    """The seed-000 quickstart's ``MLPExperts``."""

    def __init__(self, in_dim: int, out_dim: int, n_experts: int, hidden: int = 16) -> None:
        super().__init__()
        self.predictor = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(),
                                       nn.Linear(hidden, out_dim))
        self.router = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(),
                                    nn.Linear(hidden, n_experts), nn.Softmax(dim=-1))

    def forward(self, x):
        return self.predictor(x), self.router(x)


class FunctionalExpert(nn.Module):
    """Functions, methods, LayerNorm, a residual sum, softmax with a positive dim and a
    temperature attribute read in the forward."""

    def __init__(self, n: int, p: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Linear(5, 8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(p)
        self.head = nn.Linear(8, 3)
        self.route = nn.Linear(8, n)
        self.temperature = 1.0

    def forward(self, x):
        h = F.gelu(self.norm(self.body(x)))
        h = self.drop(h) + h.tanh() * 0.5
        return self.head(h), torch.softmax(self.route(h) / self.temperature, dim=1)


class ViewExpert(SeedExpert):
    def forward(self, x):
        y, d = super().forward(x)
        return y.view(x.shape[0], -1), d


class NormExpert(SeedExpert):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.predictor.insert(1, nn.BatchNorm1d(16))


def pair(make, n=4, **kw):
    """A stacked layer and an unstacked layer holding identical copies of the experts."""
    torch.manual_seed(0)
    experts = [make() for _ in range(n)]
    stacked = LiquidEnsembleLayer(experts, **kw)
    looped = LiquidEnsembleLayer(copy.deepcopy(experts), stack_experts=False, **kw)
    return stacked, looped


def assert_same_step(a: LiquidEnsembleLayer, b: LiquidEnsembleLayer, x: torch.Tensor) -> None:
    """Same output, auxiliary loss and gradient for every parameter."""
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    la = ya.pow(2).mean() + a.auxiliary_loss()
    lb = yb.pow(2).mean() + b.auxiliary_loss()
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    la.backward()
    lb.backward()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("solver", ["sink_one", "sink_many"])
def test_stacked_seed_experts_equal_the_loop(solver):
    a, b = pair(lambda: SeedExpert(3, 2, 4), solver=solver)
    assert a.stacking and a.stacking_reason == ""
    assert not b.stacking
    assert_same_step(a, b, torch.randn(32, 3))


def test_stacked_functions_methods_layernorm_and_residuals_equal_the_loop():
    a, b = pair(lambda: FunctionalExpert(3), n=3)
    assert a.stacking, a.stacking_reason
    assert_same_step(a, b, torch.randn(16, 5))


def test_eval_mode_dropout_and_a_changed_attribute_stay_equal_to_the_loop():
    a, b = pair(lambda: FunctionalExpert(3, p=0.5), n=3)
    a.eval(), b.eval()  # dropout off: deterministic
    x = torch.randn(8, 5)
    torch.testing.assert_close(a(x), b(x))
    for layer in (a, b):  # the trace baked temperature 1.0 in: a change must re-trace
        for e in layer.experts:
            e.temperature = 0.25
    torch.testing.assert_close(a(x), b(x))
    assert a.stacking
    a.experts[1].temperature = 2.0  # experts now differ: the loop, still right
    b.experts[1].temperature = 2.0
    torch.testing.assert_close(a(x), b(x))
    assert not a.stacking and "configuration" in a.stacking_reason


def test_training_mode_dropout_draws_independent_masks_per_expert():
    torch.manual_seed(0)
    layer = LiquidEnsembleLayer([FunctionalExpert(3, p=0.5) for _ in range(3)])
    layer.train()
    ys, _ = layer.expert_outputs(torch.ones(4, 5))
    layer.eval()
    ref, _ = layer.expert_outputs(torch.ones(4, 5))
    assert not torch.allclose(ys, ref)  # dropout acted in training mode
    assert not torch.allclose(ys[:, 0] - ref[:, 0], ys[:, 1] - ref[:, 1])


@pytest.mark.parametrize("make, reason", [
    (lambda i: SeedExpert(3, 2, 4, hidden=8 + i), "differ"),  # parameter shapes differ
    (lambda i: ViewExpert(3, 2, 4), "not stackable"),  # shape arithmetic
    (lambda i: NormExpert(3, 2, 4), "buffers"),  # BatchNorm statistics
])
def test_experts_that_cannot_be_stacked_run_in_a_loop(make, reason):
    torch.manual_seed(0)
    experts = [make(i) for i in range(4)]
    layer = LiquidEnsembleLayer(experts)
    assert not layer.stacking and reason in layer.stacking_reason
    x = torch.randn(8, 3)
    layer.eval()
    outs = [e(x) for e in experts]
    ys = torch.stack([o[0] for o in outs], 1)
    power = layer.solve(torch.stack([o[1] for o in outs], 1))
    torch.testing.assert_close(layer(x), (power[..., None] * ys).sum(1) / 4)


def test_a_hook_on_an_expert_switches_to_the_loop_so_it_runs():
    a, b = pair(lambda: SeedExpert(3, 2, 4))
    calls = []
    a.experts[2].router.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(8, 3)
    torch.testing.assert_close(a(x), b(x))
    assert calls and not a.stacking and "hooks" in a.stacking_reason


def test_replacing_an_expert_or_a_submodule_is_seen():
    a, b = pair(lambda: SeedExpert(3, 2, 4))
    x = torch.randn(8, 3)
    a(x)
    torch.manual_seed(1)
    new = SeedExpert(3, 2, 4)
    a.experts[1] = new
    b.experts[1] = copy.deepcopy(new)
    torch.testing.assert_close(a(x), b(x))
    a.experts[3].predictor[2] = nn.Linear(16, 2)
    b.experts[3].predictor[2] = copy.deepcopy(a.experts[3].predictor[2])
    torch.testing.assert_close(a(x), b(x))
    assert a.stacking  # still one structure: re-traced


def test_an_optimizer_over_layer_parameters_trains_the_experts_own_parameters():
    a, b = pair(lambda: SeedExpert(3, 2, 4))
    before = a.experts[0].predictor[0].weight.detach().clone()
    x, y = torch.randn(32, 3), torch.randn(32, 2)
    for layer in (a, b):
        opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            (F.mse_loss(layer(x), y) + layer.auxiliary_loss()).backward()
            opt.step()
    assert not torch.equal(a.experts[0].predictor[0].weight, before)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    # each expert is still a working module on its own
    torch.testing.assert_close(a.experts[2](x)[1], b.experts[2](x)[1], rtol=1e-4, atol=1e-5)


def test_state_dict_keys_are_the_experts_and_load_either_way():
    a, b = pair(lambda: SeedExpert(3, 2, 4))
    assert list(a.state_dict()) == list(b.state_dict())
    assert "experts.0.predictor.0.weight" in a.state_dict()
    torch.manual_seed(5)
    c = LiquidEnsembleLayer([SeedExpert(3, 2, 4) for _ in range(4)])
    c.load_state_dict(b.state_dict())
    x = torch.randn(4, 3)
    torch.testing.assert_close(c(x), b(x))


def test_a_deep_copy_uses_its_own_experts():
    a, _ = pair(lambda: SeedExpert(3, 2, 4))
    twin = copy.deepcopy(a)
    assert twin.stacking
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    x = torch.randn(6, 3)
    twin(x).sum().backward()
    assert all(p.grad is None for p in a.parameters())
    assert all(p.grad is not None for p in twin.parameters())
    loop = LiquidEnsembleLayer(list(twin.experts), stack_experts=False)
    torch.testing.assert_close(twin(x), loop(x))


def test_a_pickled_layer_is_stacked_again_and_equal():
    a, b = pair(lambda: SeedExpert(3, 2, 4))
    buf = io.BytesIO()
    torch.save(a, buf)
    buf.seek(0)
    c = torch.load(buf, weights_only=False)
    assert c.stacking
    x = torch.randn(5, 3)
    torch.testing.assert_close(c(x), b(x))


def test_sequence_delegations_are_refused_as_in_the_loop():
    a, _ = pair(lambda: SeedExpert(3, 2, 4))
    with pytest.raises(ValueError, match=r"delegations of shape \(2, 7, 4\), expected \(B, 4\)"):
        a(torch.randn(2, 7, 3))


def test_switching_train_and_eval_keeps_the_trace():
    a, b = pair(lambda: SeedExpert(3, 2, 4))
    stack = a._stack
    x = torch.randn(4, 3)
    for mode in (False, True, False):
        a.train(mode), b.train(mode)
        torch.testing.assert_close(a(x), b(x))
    assert a._stack is stack  # no re-trace for a mode switch
    a.experts[1].eval()  # one expert in another mode: the loop, still right
    b.experts[1].eval()
    a.train(True), b.train(True)
    a.experts[1].eval(), b.experts[1].eval()
    torch.testing.assert_close(a(x), b(x))
    assert not a.stacking
    a.experts[1].train(), b.experts[1].train()
    assert a.restack()
    torch.testing.assert_close(a(x), b(x))
