"""Networks of velora_ens; the liquid ones live in :mod:`velora_ens.models.lnn`, their
export for deployment in :mod:`velora_ens.models.export`."""

from velora_ens.models.export import InferenceGraph, export_onnx
from velora_ens.models.lnn import (
    LiquidNCPNetwork,
    LTCCell,
    NCPLiquidCell,
    NCPNetwork,
    SparseLinear,
)

__all__ = [
    "InferenceGraph",
    "LTCCell",
    "LiquidNCPNetwork",
    "NCPLiquidCell",
    "NCPNetwork",
    "SparseLinear",
    "export_onnx",
]
