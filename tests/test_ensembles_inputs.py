"""The heads take input as the networks do: numpy arrays and other float dtypes are
converted to the module's dtype; integers, empty batches, NaNs and wrong shapes are refused
with one message naming the expected shape and the one received; the member axis of a
Deep Ensemble is never guessed from a size that can coincide with the batch."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ensemble_experts import Expert
from torch import nn
from torch.nn import functional as F

from velora_ens.ensembles import (
    BatchEnsembleLinear,
    DeepEnsemble,
    DeepEnsembleClassifier,
    DelegatingMLPExperts,
    LiquidEnsembleLayer,
    WithFeatures,
    batchensemble,
    member_permutations,
)
from velora_ens.ensembles.moe import (
    GatingNetwork,
    IIDGaussianGroup,
    MixtureOfExperts,
    NeuralNetwork,
    StochasticModel,
)
from velora_ens.models import LiquidNCPNetwork


class PredictionOnly(Expert):
    """A wrong expert: one tensor instead of ``(prediction, delegation)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.y(x)


def _moe() -> StochasticModel:
    mix = MixtureOfExperts([NeuralNetwork(3, 1, width=8) for _ in range(3)], GatingNetwork(3, 3))
    return StochasticModel(mix, IIDGaussianGroup("all", mix.num_params()))


def _seeded(fn):
    def call(x):
        torch.manual_seed(3)
        return fn(x)
    return call


# name: (model, call(model) -> f(x) -> a tensor) for heads whose input is (B, 3) features
def _heads():
    deep = DeepEnsemble(3, 1, num_members=4, hidden_dim=8, depth=1)
    clf = DeepEnsembleClassifier(3, 3, num_members=4, hidden_dim=8, depth=1)
    liquid = LiquidEnsembleLayer(DelegatingMLPExperts(3, 1, 4, hidden=8))
    experts = LiquidEnsembleLayer([Expert() for _ in range(3)])
    moe = _moe()
    y = torch.randn(5, 1)
    return {
        "deep-predict": (lambda x: deep.predict(x).mean),
        "deep-loss": (lambda x: deep(x, y)),
        "deep-members": (lambda x: deep.member_outputs(x)[1]),
        "classifier": (lambda x: clf(x).probs),
        "classifier-loss": (lambda x: clf(x, torch.tensor([0, 1, 2, 0, 1]))),
        "liquid": liquid,
        "liquid-predict": (lambda x: liquid.predict(x).mean),
        "liquid-experts": experts,
        "moe": _seeded(moe),
        "moe-predict": _seeded(lambda x: moe.predict(x, num_samples=3).mean),
        "moe-surrogate": (lambda x: moe.surrogate_model(x, torch.ones(2, moe.num_params()))),
    }


HEADS = list(_heads())


# --- 3. the member axis ---------------------------------------------------------------
def test_a_batch_of_sequences_is_not_read_as_one_batch_per_member():
    model = WithFeatures(LiquidNCPNetwork(3, 12, 8, seed=0), DeepEnsemble(8, 1, num_members=4))
    with pytest.raises(ValueError, match=r"\(B, 8\), got \(4, 7, 8\).*per_member=True"):
        model.predict(torch.randn(4, 7, 3))
    with pytest.raises(ValueError, match=r"\(B, 8\), got \(5, 7, 8\)"):
        model.predict(torch.randn(5, 7, 3))
    with pytest.raises(ValueError, match="last_step"):
        model(torch.randn(4, 7, 3), torch.randn(4, 1))
    # a batch of 4 samples with 4 members is a batch: every member sees all of it
    assert model.predict(torch.randn(4, 3)).mean.shape == (4, 1)


@pytest.mark.parametrize("cls,target", [
    (DeepEnsemble, torch.randn(3, 4, 1)), (DeepEnsembleClassifier, torch.randint(0, 3, (3, 4)))])
def test_per_member_batches_need_the_keyword(cls, target):
    ens = cls(2, 1 if cls is DeepEnsemble else 3, num_members=3, hidden_dim=8, depth=1)
    x = torch.randn(3, 4, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 2\), got \(3, 4, 2\)"):
        ens(x, target)
    with pytest.raises(ValueError, match=r"\(B, 2\), got \(3, 4, 2\)"):
        ens.predict(x)
    assert ens(x, target, per_member=True).dim() == 0
    with pytest.raises(ValueError, match=r"per-member input of shape \(3, B, 2\), got \(4, 4, 2\)"):
        ens(torch.randn(4, 4, 2), target, per_member=True)
    with pytest.raises(ValueError, match=r"per-member input of shape \(3, B, 2\), got \(4, 2\)"):
        ens.member_outputs(torch.randn(4, 2), per_member=True) if cls is DeepEnsemble else \
            ens.member_logits(torch.randn(4, 2), per_member=True)


def test_per_member_batches_equal_each_member_on_its_own_batch():
    ens = DeepEnsemble(2, 1, num_members=3, hidden_dim=8, depth=1,
                       use_adversarial_training=False)
    X, Y = torch.randn(12, 2), torch.randn(12, 1)
    idx = member_permutations(12, 3)[:, :4]
    mean, var = ens.member_outputs(X[idx], per_member=True)
    for i in range(3):
        m_i, v_i = ens.member_outputs(X[idx[i]])
        torch.testing.assert_close(mean[i], m_i[i])
        torch.testing.assert_close(var[i], v_i[i])
    expected = torch.stack([0.5 * (var[i].log() + (Y[idx[i]] - mean[i]).pow(2) / var[i]).mean()
                            for i in range(3)]).mean()
    torch.testing.assert_close(ens(X[idx], Y[idx], per_member=True), expected)


def test_delegating_experts_do_not_read_a_leading_size_as_the_experts():
    layer = LiquidEnsembleLayer(DelegatingMLPExperts(3, 1, 4, hidden=8))
    with pytest.raises(ValueError, match=r"DelegatingMLPExperts expected input of shape \(B, 3\)"
                                         r", got \(4, 5, 3\)"):
        layer(torch.randn(4, 5, 3))


# --- 4. dtypes, arrays, integers, empty batches ------------------------------------------
@pytest.mark.parametrize("name", HEADS)
def test_numpy_and_float64_inputs_give_the_float32_result(name):
    call = _heads()[name]
    x = torch.randn(5, 3, dtype=torch.float64)
    expected = call(x.float())
    assert expected.dtype == torch.float32
    lists = [] if name == "liquid-experts" else [x.tolist()]  # the experts decide a list's use
    for given in [x, x.numpy(), x.float().numpy(), *lists]:
        out = call(given)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in HEADS if n != "liquid-experts"])
def test_integer_inputs_are_refused(name):
    call = _heads()[name]  # (a list of experts gets them as given: see below)
    for x in (torch.randint(0, 3, (5, 3)), np.ones((5, 3), dtype=np.int64),
              torch.ones(5, 3, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"floating-point input of shape \(B, 3\), got "
                                             r"dtype \S+ \(shape \(5, 3\)\)"):
            call(x)


@pytest.mark.parametrize("name", HEADS)
def test_an_empty_batch_is_refused(name):
    call = _heads()[name]
    with pytest.raises(ValueError, match=r"empty batch of shape \(0, 3\)"):
        call(torch.randn(0, 3))


@pytest.mark.parametrize("name", [n for n in HEADS if n != "liquid-experts"])
def test_wrong_shapes_name_the_expected_and_the_received_shape(name):
    call = _heads()[name]
    for x in (torch.randn(5, 2), torch.randn(3), torch.randn(2, 5, 3)):
        with pytest.raises(ValueError, match=re.escape(f"(B, 3), got {tuple(x.shape)}")):
            call(x)


def test_not_an_array_is_refused():
    ens = DeepEnsemble(3, 1, num_members=2, hidden_dim=4, depth=1)
    with pytest.raises(ValueError, match=r"DeepEnsemble expected a tensor or array of shape "
                                         r"\(B, 3\), got str"):
        ens.predict("x")


def test_liquid_experts_receive_integer_inputs_as_given():
    class Embedded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e = nn.Embedding(10, 4)
            self.d = nn.Linear(4, 2)

        def forward(self, t):
            h = self.e(t).mean(1)
            return h.sum(-1, keepdim=True), torch.softmax(self.d(h), -1)

    layer = LiquidEnsembleLayer([Embedded(), Embedded()])
    tokens = torch.randint(0, 10, (5, 6))
    assert layer(tokens).shape == (5, 1)
    torch.testing.assert_close(layer(tokens.numpy()), layer(tokens))


def test_deep_ensemble_targets_are_converted():
    ens = DeepEnsemble(3, 1, num_members=2, hidden_dim=4, depth=1)
    x, y = torch.randn(5, 3), torch.randn(5, 1, dtype=torch.float64)
    expected = ens(x, y.float())
    for target in (y, y.numpy()):
        torch.testing.assert_close(ens(x, target), expected, rtol=0, atol=0)
    clf = DeepEnsembleClassifier(3, 3, num_members=2, hidden_dim=4, depth=1)
    t = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(clf(x, t.numpy()), clf(x, t), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"class indices .*got dtype torch.float32"):
        clf(x, t.float())


# --- BatchEnsemble ---------------------------------------------------------------------
def _batch_model(**kw):
    return batchensemble(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), 4, **kw)


@pytest.mark.parametrize("passes", [None, 2])
def test_batchensemble_names_a_wrong_feature_count_or_a_missing_batch_axis(passes):
    model = _batch_model(members_per_pass=passes)
    rows = 4 if passes is None else 2
    with pytest.raises(ValueError, match=rf"BatchEnsembleLinear expected input \(E\*B, \.\.\., 3\)"
                                         rf" .*got \({rows}\*5, 2\)"):
        model(torch.randn(5, 2))
    with pytest.raises(ValueError, match=rf"BatchEnsembleLinear expected input \(E\*B, \.\.\., 3\)"
                                         rf" .*got \({rows * 3},\)"):
        model(torch.randn(3))
    layer = BatchEnsembleLinear(nn.Linear(3, 2), num_members=4)
    with pytest.raises(ValueError, match=r"expected input \(E\*B, \.\.\., 3\) .*got \(4\*2, 5\)"):
        layer(torch.randn(8, 5))


@pytest.mark.parametrize("passes", [None, 2])
def test_batchensemble_converts_numpy_and_float64_inputs(passes):
    model = _batch_model(members_per_pass=passes)
    x = torch.randn(5, 3, dtype=torch.float64)
    expected = model(x.float())
    for given in (x, x.numpy(), x.float().numpy()):
        out = model(given)
        assert out.dtype == torch.float32 and out.shape == (4, 5, 1)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


# --- Liquid Ensemble: the experts' contract --------------------------------------------
@pytest.mark.parametrize("stack", [True, False])
def test_an_expert_returning_one_tensor_is_named(stack):
    layer = LiquidEnsembleLayer([PredictionOnly() for _ in range(3)], stack_experts=stack)
    with pytest.raises(ValueError, match=r"expert 0 returned a Tensor of shape \(5, 1\); each "
                                         r"expert must return \(prediction, delegation\)"):
        layer(torch.randn(5, 3))


def test_stacked_experts_returning_one_tensor_are_named():
    class Stacked(nn.Module):
        num_experts = 3

        def forward(self, x):
            return x.new_zeros(x.shape[0], 3, 1)

    with pytest.raises(ValueError, match=r"Stacked returned a Tensor of shape \(5, 3, 1\); .*"
                                         r"\(ys \(B, 3, \.\.\.\), D \(B, 3, 3\)\)"):
        LiquidEnsembleLayer(Stacked())(torch.randn(5, 3))


# --- NaNs in a Deep Ensemble (the Liquid Ensemble's check, same wording) --------------------
@pytest.mark.parametrize("cls", [DeepEnsemble, DeepEnsembleClassifier])
def test_a_nan_input_or_target_is_named(cls):
    regression = cls is DeepEnsemble
    ens = cls(3, 1 if regression else 3, num_members=2, hidden_dim=4, depth=1)
    x = torch.randn(5, 3)
    y = torch.randn(5, 1) if regression else torch.tensor([0, 1, 2, 0, 1])
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"the input x of \w+ is not finite: 1 of 15 entries"):
        ens(bad, y)
    with pytest.raises(ValueError, match=r"the input x of \w+ is not finite: 1 of 15 entries"):
        ens.predict(bad)
    if regression:
        y_bad = y.clone()
        y_bad[0, 0] = float("inf")
        with pytest.raises(ValueError, match=r"the target of DeepEnsemble is not finite: 1 of 5"):
            ens(x, y_bad)
    ens.check = False  # the opt-out: no device sync, no check
    assert not torch.isfinite(ens(bad, y))


def test_non_finite_parameters_name_the_member():
    ens = DeepEnsemble(3, 1, num_members=3, hidden_dim=4, depth=1)
    with torch.no_grad():
        ens.net.head.weight[1].fill_(float("nan"))
    with pytest.raises(ValueError, match=r"member\(s\) \[1\] .*finite input"):
        ens(torch.randn(5, 3), torch.randn(5, 1))


def test_float32_results_equal_an_independent_computation():
    # the checks change no number: member i of the vectorised net against its own layers
    ens = DeepEnsemble(3, 2, num_members=2, hidden_dim=4, depth=1,
                       use_adversarial_training=False)
    x, y = torch.randn(6, 3), torch.randn(6, 2)
    lin, norm, head = ens.net.body[0], ens.net.body[1], ens.net.head
    losses = []
    for i in range(2):
        h = x @ lin.weight[i] + lin.bias[i]
        h = F.silu(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight[i])
        mean, raw = (h @ head.weight[i] + head.bias[i]).split(2, -1)
        var = F.softplus(raw) + 1e-6
        losses.append(0.5 * (var.log() + (y - mean).pow(2) / var).mean())
    torch.testing.assert_close(ens(x, y), torch.stack(losses).mean())
