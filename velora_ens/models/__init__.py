"""Networks of velora_ens; the liquid ones live in :mod:`velora_ens.models.lnn`, the gated
baselines in :mod:`velora_ens.models.gated`, their export for deployment in
:mod:`velora_ens.models.export`."""

from velora_ens.models.export import InferenceGraph, export_onnx
from velora_ens.models.gated import GatedNetwork
from velora_ens.models.lnn import (
    LiquidNCPNetwork,
    LTCCell,
    MixedMemoryCell,
    NCPLiquidCell,
    NCPNetwork,
    SparseLinear,
)
from velora_ens.models.recurrent import CELLS, recurrent_network

__all__ = [
    "CELLS",
    "GatedNetwork",
    "InferenceGraph",
    "LTCCell",
    "LiquidNCPNetwork",
    "MixedMemoryCell",
    "NCPLiquidCell",
    "NCPNetwork",
    "SparseLinear",
    "export_onnx",
    "recurrent_network",
]
