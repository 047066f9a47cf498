"""velora_ens: liquid neural networks (NCP-wired CfC and LTC cells) with ensemble heads."""

from velora_ens.wiring import Wiring

__version__ = "0.1.0"

__all__ = ["Wiring", "__version__"]
