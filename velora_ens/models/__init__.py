"""Networks of velora_ens; the liquid ones live in :mod:`velora_ens.models.lnn`."""

from velora_ens.models.lnn import (
    LiquidNCPNetwork,
    LTCCell,
    NCPLiquidCell,
    NCPNetwork,
    SparseLinear,
)

__all__ = ["LTCCell", "LiquidNCPNetwork", "NCPLiquidCell", "NCPNetwork", "SparseLinear"]
