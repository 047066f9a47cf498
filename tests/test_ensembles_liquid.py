"""Liquid Ensemble: solvers against the worked examples and independent re-derivations,
the layer's output, auxiliary loss, confidences and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from velora_ens.ensembles import (
    DelegatingMLPExperts,
    LiquidEnsembleLayer,
    Prediction,
    WithFeatures,
    check_delegations,
    solve_delegation_many_sinks,
    solve_delegation_one_sink,
)
from velora_ens.models import LiquidNCPNetwork

MAIN = [[.5, .5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # the reference's __main__
CHAIN = [[0, 1, 0], [0, 0, 1], [0, 0, 1]]  # 0 -> 1 -> 2, 2 keeps its vote
CYCLE = [[0, 1, 0], [1, 0, 0], [0, 0, 1]]  # 0 <-> 1, 2 keeps its vote


def d(rows) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64)


def random_delegations(b: int, n: int, temperature: float = 0.5) -> torch.Tensor:
    return torch.softmax(torch.randn(b, n, n, dtype=torch.float64) / temperature, dim=-1)


# --- worked examples: ensembles.md sections 1.2 and 1.3 ----------------------------------
@pytest.mark.parametrize("rows, expected", [
    (MAIN, [0.5062, 1.4913, 1.0012, 1.0012]),
    (CHAIN, [0.0199, 0.0199, 2.9603]),
    (CYCLE, [0.67, 0.67, 1.66]),
    ([[0.25] * 4] * 4, [1.0, 1.0, 1.0, 1.0]),
])
def test_sink_one_worked_examples(rows, expected):
    power, D = solve_delegation_one_sink(d(rows))
    np.testing.assert_allclose(power[0].numpy(), expected, atol=1e-3)
    assert torch.equal(D, d(rows))  # rows stay the delegation vectors


@pytest.mark.parametrize("rows, expected", [
    (MAIN, [0.5137, 1.4518, 1.0173, 1.0173]),
    (CHAIN, [0.0111, 0.0208, 2.9681]),
    (CYCLE, [0.0994, 0.0994, 2.8013]),
])
def test_sink_many_iterative_worked_examples(rows, expected):
    power, _ = solve_delegation_many_sinks(d(rows))
    np.testing.assert_allclose(power[0].numpy(), expected, atol=1e-3)


def test_sink_many_closed_form_worked_example_jax_constants():
    # ensembles.md 1.3: the JAX closed form with epsilon 1e-3 and penalty 0.95
    power, _ = solve_delegation_many_sinks(d(MAIN), 1e-3, 0.95, method="closed_form")
    np.testing.assert_allclose(power[0].numpy(), [0.5036, 1.4841, 1.0062, 1.0062], atol=1e-3)


# --- independent re-derivations -------------------------------------------------------
def reference_one_sink(D: np.ndarray, eps: float = 0.01) -> np.ndarray:
    """ensembles.md 1.2 step by step: (N+1)-node graph, columns = voters, pseudo-inverse."""
    n = D.shape[0]
    Dt = np.zeros((n + 1, n + 1))
    Dt[:n, :n] = (1 - eps) * D.T
    Dt[n, :n] = eps
    Dt[n, n] = 1.0
    A = Dt - np.diag(np.diag(Dt))
    x = np.linalg.pinv(np.eye(n + 1) - A) @ np.ones(n + 1)
    kept = x * np.diag(Dt)
    return kept[:n] + (kept[n] - 1.0) / n


def reference_many_sinks(D: np.ndarray, eps=0.01, lam=0.9, threshold=0.05) -> np.ndarray:
    """ensembles.md 1.3 step by step for one sample: the 2N x 2N diffusion."""
    n = D.shape[0]
    E = np.zeros((2 * n, 2 * n))
    E[:n, :n] = D - np.diag(np.diag(D))
    E[np.arange(n), n + np.arange(n)] = np.diag(D) + eps
    E[n:, n:] = np.eye(n)
    p = np.concatenate([np.ones(n), np.zeros(n)])
    acc = np.zeros(2 * n)
    for _ in range(1000):
        acc += p
        nxt = lam * E.T @ p
        if np.allclose(nxt, p, atol=threshold):
            break
        p = nxt
    return n * acc[n:] / acc[n:].sum()


def test_sink_one_matches_the_reference_construction_on_a_batch():
    D = random_delegations(16, 5)
    power, _ = solve_delegation_one_sink(D)
    for b in range(16):
        np.testing.assert_allclose(power[b].numpy(), reference_one_sink(D[b].numpy()),
                                   atol=1e-9)


def test_sink_many_batched_equals_each_sample_solved_alone():
    D = random_delegations(16, 6, temperature=0.3)
    power, _ = solve_delegation_many_sinks(D)
    for b in range(16):
        np.testing.assert_allclose(power[b].numpy(), reference_many_sinks(D[b].numpy()),
                                   atol=1e-9)


def test_sink_many_iteration_converges_to_its_closed_form():
    D = random_delegations(8, 5)
    it, _ = solve_delegation_many_sinks(D, threshold=1e-12)
    cf, _ = solve_delegation_many_sinks(D, method="closed_form")
    torch.testing.assert_close(it, cf, atol=1e-8, rtol=0)


@pytest.mark.parametrize("solver", ["one", "many", "many_cf"])
def test_power_is_non_negative_and_sums_to_n(solver):
    D = random_delegations(64, 8).float()
    if solver == "one":
        p, _ = solve_delegation_one_sink(D)
    else:
        p, _ = solve_delegation_many_sinks(D, method="closed_form" if solver == "many_cf"
                                           else "iterative")
    assert p.shape == (64, 8)
    assert bool((p >= -1e-6).all())
    torch.testing.assert_close(p.sum(-1), torch.full((64,), 8.0), atol=1e-4, rtol=0)


def test_solvers_are_static_methods_of_the_layer():
    D = random_delegations(2, 3)
    torch.testing.assert_close(LiquidEnsembleLayer.solve_delegation_one_sink(D)[0],
                               solve_delegation_one_sink(D)[0])
    torch.testing.assert_close(LiquidEnsembleLayer.solve_delegation_many_sinks(D)[0],
                               solve_delegation_many_sinks(D)[0])


# --- the layer -----------------------------------------------------------------------
class Expert(nn.Module):
    def __init__(self, n: int, out_shape: tuple[int, ...], in_dim: int = 5) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.predictor = nn.Linear(in_dim, math.prod(out_shape))
        self.router = nn.Sequential(nn.Linear(in_dim, 8), nn.ReLU(), nn.Linear(8, n),
                                    nn.Softmax(dim=-1))

    def forward(self, x):
        return self.predictor(x).view(x.shape[0], *self.out_shape), self.router(x)


@pytest.mark.parametrize("out_shape", [(1,), (10,), (3, 4)])
@pytest.mark.parametrize("solver", ["sink_one", "sink_many"])
def test_output_is_the_power_weighted_mean_for_any_prediction_shape(out_shape, solver):
    experts = [Expert(4, out_shape) for _ in range(4)]
    layer = LiquidEnsembleLayer(experts, solver=solver)
    x = torch.randn(7, 5)
    y = layer(x)
    outs = [e(x) for e in experts]
    D = torch.stack([o[1] for o in outs], 1)
    solve = solve_delegation_one_sink if solver == "sink_one" else solve_delegation_many_sinks
    power = solve(D)[0]
    expected = sum(power[:, j].view(-1, *[1] * len(out_shape)) * outs[j][0]
                   for j in range(4)) / 4
    assert y.shape == (7, *out_shape)
    torch.testing.assert_close(y, expected)


def test_auxiliary_loss_gradient_reaches_the_delegation_heads():
    experts = [Expert(3, (1,)) for _ in range(3)]
    layer = LiquidEnsembleLayer(experts, load_distribution_lambda=0.5,
                                specialization_lambda=0.3, solver="sink_many")
    layer(torch.randn(32, 5))
    aux = layer.auxiliary_loss()
    aux.backward()
    for e in experts:
        grads = [p.grad for p in e.router.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        assert all(p.grad is None for p in e.predictor.parameters())


def test_auxiliary_loss_equals_the_formula():
    layer = LiquidEnsembleLayer([Expert(4, (1,)) for _ in range(4)], 0.7, 0.2)
    layer(torch.randn(10, 5))
    p = layer.last_power.detach().numpy().astype(np.float64)

    def h(q):
        q = q / q.sum()
        return -(q * np.log(q)).sum()

    soft = np.exp(p / 0.1)
    soft /= soft.sum(1, keepdims=True)
    speaker = h(soft.sum(0)) / np.log(4)
    power_ent = np.mean([h(row) for row in p]) / np.log(4)
    assert layer.auxiliary_loss().item() == pytest.approx(0.2 * power_ent - 0.7 * speaker,
                                                          abs=1e-5)


def test_confidences_equal_their_definitions():
    layer = LiquidEnsembleLayer([Expert(3, (2,)) for _ in range(3)])
    layer(torch.randn(6, 5))
    ys, D, p = (t.detach().numpy().astype(np.float64)
                for t in (layer.last_ys, layer.last_D, layer.last_power))
    c = {k: v.detach().numpy() for k, v in layer.confidences().items()}
    for b in range(6):
        q = p[b] / p[b].sum()
        assert c["power_entropy"][b] == pytest.approx(1 + (q * np.log(q)).sum() / np.log(3),
                                                      abs=1e-5)
        ent = -(D[b] * np.log(D[b])).sum(1).mean() / np.log(3)
        assert c["delegation_entropy"][b] == pytest.approx(1 - ent, abs=1e-5)
        assert c["self_delegation"][b] == pytest.approx(np.trace(D[b]) / 3, abs=1e-6)
        std = ys[b].std(axis=0, ddof=1).mean()
        assert c["disagreement"][b] == pytest.approx(1 / (std + 1e-6), rel=1e-4)


def test_predict_weights_members_by_power():
    layer = LiquidEnsembleLayer([Expert(3, (4,)) for _ in range(3)])
    x = torch.randn(5, 5)
    pred = layer.predict(x, task="classification")
    assert isinstance(pred, Prediction)
    torch.testing.assert_close(pred.weights, layer.last_power / 3)
    probs = torch.softmax(layer.last_ys, -1)
    torch.testing.assert_close(pred.probs, (probs * pred.weights[..., None]).sum(1))
    reg = layer.predict(x)
    torch.testing.assert_close(reg.mean, layer(x))
    assert set(reg.confidences) == {"power_entropy", "delegation_entropy", "self_delegation",
                                    "disagreement"}


def test_stacked_experts_equal_their_per_expert_computation():
    bank = DelegatingMLPExperts(5, 2, num_experts=3, hidden=8)
    x = torch.randn(4, 5)
    ys, D = bank(x)
    assert ys.shape == (4, 3, 2) and D.shape == (4, 3, 3)
    for i in range(3):
        def lin(layer, h, i=i):
            return h @ layer.weight[i] + layer.bias[i]
        h = torch.relu(lin(bank.body[0], x))
        torch.testing.assert_close(ys[:, i], lin(bank.y_head, h))
        logits = lin(bank.d_head[2], torch.relu(lin(bank.d_head[0], h)))
        torch.testing.assert_close(D[:, i], torch.softmax(logits, -1))


def test_layer_on_top_of_a_liquid_network_trains_end_to_end():
    net = LiquidNCPNetwork(4, 10, 6, seed=0)
    model = WithFeatures(net, LiquidEnsembleLayer(DelegatingMLPExperts(6, 1, 4, hidden=16),
                                                  0.1, 0.1, solver="sink_many"),
                         last_step=True)
    x, target = torch.randn(8, 5, 4), torch.randn(8, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (model(x) - target).pow(2).mean() + model.head.auxiliary_loss()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in net.parameters())
    assert losses[-1] < 0.5 * losses[0]


# --- bad input -----------------------------------------------------------------------
def test_delegation_of_the_wrong_shape_is_refused():
    class Bad(Expert):
        def forward(self, x):
            y, dd = super().forward(x)
            return y, dd[:, :2]

    layer = LiquidEnsembleLayer([Bad(3, (1,)) for _ in range(3)])
    with pytest.raises(ValueError, match=r"shape \(5, 2\), expected \(B, 3\)"):
        layer(torch.randn(5, 5))


def test_delegation_not_summing_to_one_is_refused():
    class Bad(Expert):
        def forward(self, x):
            y, dd = super().forward(x)
            return y, 2 * dd

    with pytest.raises(ValueError, match="summing to one"):
        LiquidEnsembleLayer([Bad(3, (1,)) for _ in range(3)])(torch.randn(5, 5))


def test_bad_solver_and_epsilon_are_refused():
    with pytest.raises(ValueError, match="sink_one"):
        LiquidEnsembleLayer([Expert(2, (1,))] * 2, solver="sink_two")
    with pytest.raises(ValueError, match="epsilon"):
        solve_delegation_one_sink(random_delegations(1, 2), epsilon=0.0)
    with pytest.raises(ValueError, match="converge"):
        solve_delegation_many_sinks(random_delegations(1, 2), long_delegation_penalty=1.0)


# --- rough edges a new user hit (issue 13) ---------------------------------------------
def test_default_auxiliary_weights_are_the_tuned_ones_and_act():
    layer = LiquidEnsembleLayer([Expert(3, (1,)) for _ in range(3)])
    assert (layer.load_distribution_lambda, layer.specialization_lambda) == (0.7, 0.1)
    layer(torch.randn(16, 5))
    assert layer.auxiliary_loss().item() != 0.0


def test_auxiliary_loss_after_a_no_grad_forward_raises():
    layer = LiquidEnsembleLayer([Expert(3, (1,)) for _ in range(3)])
    x = torch.randn(8, 5)
    with torch.no_grad():
        layer(x)
        metric = layer.auxiliary_loss()  # as a metric, under no_grad: fine
    assert not metric.requires_grad
    with pytest.raises(RuntimeError, match="last forward ran without gradients"):
        layer.auxiliary_loss()
    layer.auxiliary_loss(power=layer.last_power)  # an explicit power is the caller's choice
    layer(x)
    assert layer.auxiliary_loss().requires_grad


def test_a_nan_in_the_input_is_named():
    layer = LiquidEnsembleLayer([Expert(3, (1,)) for _ in range(3)])
    x = torch.randn(8, 5)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"input x .* is not finite: 1 of 40 entries"):
        layer(x)


@pytest.mark.parametrize("part, name", [("predictor", "prediction"), ("router", "delegation")])
def test_a_non_finite_expert_output_names_the_expert(part, name):
    experts = [Expert(3, (1,)) for _ in range(3)]
    with torch.no_grad():
        layer_param = next(getattr(experts[1], part).parameters())
        layer_param[0, 0] = float("inf")
    x = torch.randn(8, 5).abs() + 0.1
    with pytest.raises(ValueError, match=f"expert 1's {name} is not finite"):
        LiquidEnsembleLayer(experts)(x)


def test_check_delegations_names_non_finite_entries():
    D = random_delegations(4, 3)
    D[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"not finite: 1 NaN/inf entries, from expert\(s\) \[2\]"):
        check_delegations(D)


# --- the hand-written gradients against autograd ---------------------------------------
def autograd_one_sink(D: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """solve_delegation_one_sink's formula, differentiated by autograd."""
    n = D.shape[-1]
    eye = torch.eye(n, dtype=D.dtype)
    x = torch.linalg.solve(eye - (1 - eps) * (D * (1 - eye)).transpose(-1, -2),
                           torch.ones(D.shape[:-1] + (1,), dtype=D.dtype)).squeeze(-1)
    return (1 - eps) * torch.diagonal(D, dim1=-2, dim2=-1) * x + eps * x.sum(-1, True) / n


def test_sink_one_gradient_equals_autograd_and_passes_gradcheck():
    logits = torch.randn(6, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, dtype=torch.float64)
    g1 = torch.autograd.grad((solve_delegation_one_sink(torch.softmax(logits, -1))[0] * w).sum(),
                             logits)[0]
    g2 = torch.autograd.grad((autograd_one_sink(torch.softmax(logits, -1)) * w).sum(), logits)[0]
    torch.testing.assert_close(g1, g2)
    assert torch.autograd.gradcheck(
        lambda t: solve_delegation_one_sink(torch.softmax(t, -1), 0.2)[0], (logits,))


def test_layer_output_power_and_auxiliary_gradients_equal_autograd():
    torch.manual_seed(0)
    experts = [Expert(4, (2, 3), in_dim=5).double() for _ in range(4)]
    layer = LiquidEnsembleLayer(experts, 0.7, 0.1)
    x = torch.randn(9, 5, dtype=torch.float64)
    loss = layer(x).pow(2).sum() + layer.auxiliary_loss()
    got = torch.autograd.grad(loss, list(layer.parameters()))
    outs = [e(x) for e in experts]
    ys, D = torch.stack([o[0] for o in outs], 1), torch.stack([o[1] for o in outs], 1)
    p = autograd_one_sink(D)
    y = (p[:, :, None, None] * ys).sum(1) / 4
    ref = y.pow(2).sum() + 0.1 * layer.power_entropy(p) - 0.7 * layer.speaker_entropy(p, 0.1)
    want = torch.autograd.grad(ref, list(layer.parameters()))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
