"""Liquid neural networks: sparse layers, CfC and LTC cells, NCP networks."""

from velora_ens.models.lnn.cell import NCPLiquidCell
from velora_ens.models.lnn.ltc import LTCCell
from velora_ens.models.lnn.mixed import MixedMemoryCell
from velora_ens.models.lnn.ncp import LiquidNCPNetwork, NCPNetwork
from velora_ens.models.lnn.sparse import SparseLinear

__all__ = ["LTCCell", "LiquidNCPNetwork", "MixedMemoryCell", "NCPLiquidCell", "NCPNetwork",
           "SparseLinear"]
