"""Gated recurrent baselines (torch's GRU and LSTM cells) with the liquid network's API.

The agents build their recurrent core through :func:`recurrent_network`; ``cell="gru"``
or ``"lstm"`` puts a gated cell where the liquid one would be, so that a benchmark can
tell what the liquid cell buys from what the algorithm buys. They are comparison
baselines: the liquid cells stay the default and the product.

A gated cell has no time constant, so the elapsed time ``dt`` is appended to its input
(``1`` where none is given: one network serves with and without time). Sequences run the
fused scan of :mod:`velora_ens.models.gated_scan` (``net.fused = False``: the step loop of
torch's cells, the reference it is tested against).

Example::

    >>> import torch
    >>> net = GatedNetwork(4, 32, 2, cell="gru", seed=0)
    >>> y, h = net(torch.randn(3, 10, 4))          # a sequence: y (3, 10, 2), h (3, 32)
    >>> y1, h1 = net(torch.randn(3, 4), h, dt=0.5)  # one step with elapsed time 0.5
    >>> tuple(y.shape), tuple(h1.shape)
    ((3, 10, 2), (3, 32))
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_int
from velora_ens.models.gated_scan import gated_scan
from velora_ens.models.lnn.inputs import cell_inputs
from velora_ens.models.lnn.loop import unroll

__all__ = ["GATED_CELLS", "GatedNetwork"]

GATED_CELLS = ("gru", "lstm")


class GatedNetwork(nn.Module):
    """``[x, dt] -> GRUCell or LSTMCell (n_neurons units) -> Linear(out_features)``.

    ``forward(x, h=None, *, dt=None, episode_start=None, return_states=False) -> (y, h)``
    as :class:`~velora_ens.models.LiquidNCPNetwork`: ``x`` is ``(B, F)`` or ``(B, L, F)``;
    an episode start zeroes the state before its step. The state is ``(B, n_neurons)``
    for the GRU and ``[h, c]``, ``(B, 2 n_neurons)``, for the LSTM. ``seed`` seeds the
    initial weights (``None``: torch's global generator).
    """

    def __init__(self, in_features: int, n_neurons: int, out_features: int, *,
                 cell: str = "gru", seed: int | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if cell not in GATED_CELLS:
            raise ValueError(f"cell must be one of {GATED_CELLS}, got {cell!r}")
        self.in_features = check_int("in_features", in_features, 1)
        self.n_neurons = check_int("n_neurons", n_neurons, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.cell_type, self.seed = cell, seed
        kw = {"device": device, "dtype": dtype}
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            kind = nn.GRUCell if cell == "gru" else nn.LSTMCell
            self.cell = kind(self.in_features + 1, self.n_neurons, **kw)
            self.motor = nn.Linear(self.n_neurons, self.out_features, **kw)
        # sequences run a fused scan (velora_ens.models.gated_scan); False: the step loop
        self.fused = True

    @property
    def hidden_size(self) -> int:
        """Size of the recurrent state (``[h, c]`` for the LSTM)."""
        return self.n_neurons * (2 if self.cell_type == "lstm" else 1)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """A zero state ``(batch_size, hidden_size)`` on the network's device and dtype."""
        return self.motor.weight.new_zeros(batch_size, self.hidden_size)

    def _step(self, drive: tuple[torch.Tensor, ...], state: torch.Tensor,
              dt: torch.Tensor | None) -> torch.Tensor:
        x = drive[0]
        time = x.new_ones(x.shape[0], 1) if dt is None else dt
        x = torch.cat([x, time], dim=-1)
        if self.cell_type == "gru":
            return self.cell(x, state)
        h, c = self.cell(x, tuple(state.split(self.n_neurons, dim=-1)))
        return torch.cat([h, c], dim=-1)

    @property
    def n_hidden(self) -> int:
        """``hidden_size``, under the name the cells' input checks read."""
        return self.hidden_size

    def _run(self, x, h, dt, episode_start, fused: bool | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        x, h, dt, keep, steps = cell_inputs(self, x, h, dt, episode_start, self.motor.weight)
        fused = self.fused if fused is None else fused
        if steps is None or not fused or torch.jit.is_tracing():
            return unroll(self._step, (x,), h, dt, keep, time_dim=None if steps is None else 1)
        time = x.new_ones(*x.shape[:2], 1) if dt is None else dt
        cell = self.cell
        ui = F.linear(torch.cat([x, time], dim=-1).transpose(0, 1), cell.weight_ih,
                      cell.bias_ih).contiguous()
        out = gated_scan(self.cell_type, ui, cell.weight_hh.t(), cell.bias_hh, h,
                         None if keep is None else keep.transpose(0, 1))
        return out.transpose(0, 1), out[-1]

    def motor_input(self, states: torch.Tensor) -> torch.Tensor:
        """What the read-out (``motor``) reads of states ``(..., hidden_size)``: the
        LSTM's ``h``."""
        return states[..., :self.n_neurons]

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, *,
                dt: torch.Tensor | float | None = None,
                episode_start: torch.Tensor | None = None,
                return_states: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One step or a sequence; with ``return_states`` the second output is the state
        after every step instead of the last one."""
        states, h_new = self._run(x, h, dt, episode_start)
        return self.motor(self.motor_input(states)), (states if return_states else h_new)

    def final_state(self, x: torch.Tensor, h: torch.Tensor | None = None, *,
                    dt: torch.Tensor | float | None = None,
                    episode_start: torch.Tensor | None = None) -> torch.Tensor:
        """The state after ``x`` without the read-out."""
        return self._run(x, h, dt, episode_start)[1]

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return {"in_features": self.in_features, "n_neurons": self.n_neurons,
                "out_features": self.out_features, "cell": self.cell_type, "seed": self.seed}
