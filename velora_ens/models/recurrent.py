"""One entry point for an agent's recurrent core: a liquid network or a gated baseline.

``recurrent_network(in, n_neurons, out, cell=...)`` builds a
:class:`~velora_ens.models.LiquidNCPNetwork` for ``cell="cfc"``/``"ltc"`` and a
:class:`~velora_ens.models.GatedNetwork` for ``"gru"``/``"lstm"``; both take the same
``forward(x, h, *, dt, episode_start, return_states)`` and offer ``hidden_size``,
``initial_state``, ``final_state`` and ``get_config``.
"""

from __future__ import annotations

from typing import Any

from velora_ens.models.gated import GATED_CELLS, GatedNetwork
from velora_ens.models.lnn import LiquidNCPNetwork

__all__ = ["CELLS", "RecurrentNetwork", "recurrent_network"]

CELLS = ("cfc", "ltc", *GATED_CELLS)
RecurrentNetwork = LiquidNCPNetwork | GatedNetwork


def recurrent_network(in_features: int, n_neurons: int, out_features: int, *,
                      cell: str = "cfc", seed: int | None = None,
                      **liquid_options: Any) -> RecurrentNetwork:
    """The recurrent core for ``cell``; ``liquid_options`` (``dense_recurrence``,
    ``mixed_memory``, ...) go to the liquid network and are refused for a gated cell when
    set."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if cell in GATED_CELLS:
        # ``0.0`` is a value set (``0.0 == False``, hence ``is``): only None and False are not
        chosen = sorted(k for k, v in liquid_options.items()
                        if v is not None and v is not False)
        if chosen:
            raise ValueError(f"{chosen} apply to the liquid cells ('cfc', 'ltc') only, not "
                             f"to cell={cell!r}")
        return GatedNetwork(in_features, n_neurons, out_features, cell=cell, seed=seed)
    return LiquidNCPNetwork(in_features, n_neurons, out_features, cell=cell, seed=seed,
                            **liquid_options)
