"""Ensemble heads for uncertainty: Liquid Ensemble, BatchEnsemble, Deep Ensembles and a
stochastic mixture of experts (:mod:`velora_ens.ensembles.moe`), all reporting a
:class:`Prediction`."""

from velora_ens.ensembles import moe
from velora_ens.ensembles.batch import (
    BatchEnsembleConv2d,
    BatchEnsembleLinear,
    batchensemble,
    ensemble,
    ensemble_outputs,
    fast_weight_param_groups,
)
from velora_ens.ensembles.deep import (
    DeepEnsemble,
    DeepEnsembleClassifier,
    MemberOutput,
    gaussian_nll_loss,
    member_permutations,
)
from velora_ens.ensembles.features import WithFeatures
from velora_ens.ensembles.liquid import (
    DelegatingMLPExperts,
    LiquidEnsembleLayer,
    check_delegations,
    solve_delegation_many_sinks,
    solve_delegation_one_sink,
)
from velora_ens.ensembles.prediction import Prediction, categorical_entropy

__all__ = [
    "BatchEnsembleConv2d",
    "BatchEnsembleLinear",
    "DeepEnsemble",
    "DeepEnsembleClassifier",
    "DelegatingMLPExperts",
    "LiquidEnsembleLayer",
    "MemberOutput",
    "Prediction",
    "WithFeatures",
    "batchensemble",
    "categorical_entropy",
    "check_delegations",
    "ensemble",
    "ensemble_outputs",
    "fast_weight_param_groups",
    "gaussian_nll_loss",
    "member_permutations",
    "moe",
    "solve_delegation_many_sinks",
    "solve_delegation_one_sink",
]
